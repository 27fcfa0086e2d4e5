//! Chunks built by the host from a span chunker's byte ranges
//! (`weft:plugin/chunk-spans`).
//!
//! A chunker whose chunks are verbatim pieces of the text only has to say
//! where they are. Building them here, from the document the host already
//! holds, moves the per-chunk work out of the sandbox: the guest allocates
//! nothing per chunk and nothing but offsets crosses back, where a `chunk`
//! plugin allocates, and the host lifts, seven strings per chunk (id, doc id,
//! text, two per metadata entry). The chunks are exactly those a `chunk`
//! plugin copying the same ranges would return (`tests/chunker_parity.rs`).

use super::bindings::span_chunker::exports::weft::plugin::chunk_spans::Span;
use super::bindings::types::{Chunk, Document, Meta};
use super::failure::{output_over_cap, Failure, FailureKind};
use crate::manifest::Limits;

/// The chunks of `doc` at `spans`, or why there are none: an id that cannot
/// name chunks (`invalid-input`), a span that is not a non-empty range of the
/// text on character boundaries (`bad-output`), or more output than the
/// stage's limits allow (`output-too-large`, checked before anything is
/// built, so a hostile plugin cannot make the host allocate its way out of
/// memory with a million copies of a long text).
pub fn chunks_from_spans(
    doc: &Document,
    spans: &[Span],
    limits: &Limits,
) -> Result<Vec<Chunk>, Failure> {
    check_id(&doc.id)?;
    let text = doc.text.as_str();
    for (n, s) in spans.iter().enumerate() {
        let (start, end) = (s.start as usize, s.end as usize);
        if start >= end || end > text.len() {
            return Err(bad_span(
                doc,
                n,
                s,
                &format!("not a non-empty range of its {} bytes", text.len()),
            ));
        }
        if !text.is_char_boundary(start) || !text.is_char_boundary(end) {
            return Err(bad_span(doc, n, s, "cuts a UTF-8 character"));
        }
    }
    let metadata = chunk_metadata(doc);
    let meta_bytes: u64 = metadata
        .iter()
        .map(|m| (m.key.len() + m.value.len()) as u64)
        .sum();
    // Every id is `<doc id>#<n>`: at most 11 bytes longer than the doc id.
    let per_chunk = meta_bytes + doc.id.len() as u64 + 11;
    let size = spans.iter().fold(0u64, |sum, s| {
        sum.saturating_add(u64::from(s.end - s.start) + per_chunk)
    });
    if let Some(f) = output_over_cap(limits, spans.len(), size) {
        return Err(f);
    }
    let mut chunks = Vec::with_capacity(spans.len());
    let mut metadata = Some(metadata);
    for (n, s) in spans.iter().enumerate() {
        let seq = u32::try_from(n).map_err(|_| {
            Failure::new(
                FailureKind::OutputTooLarge,
                format!("document {:?} has more than {} chunks", doc.id, u32::MAX),
            )
        })?;
        // The last chunk takes the metadata built for the document.
        let metadata = if n + 1 == spans.len() {
            metadata.take().unwrap_or_default()
        } else {
            metadata.clone().unwrap_or_default()
        };
        chunks.push(Chunk {
            id: chunk_id(&doc.id, seq),
            doc_id: doc.id.clone(),
            seq,
            text: text[s.start as usize..s.end as usize].to_string(),
            metadata,
        });
    }
    Ok(chunks)
}

/// The document's metadata with its title as the `title` entry (the
/// document field replaces any `title` entries), so search filters and
/// prompts can use it: what the reference chunker does.
fn chunk_metadata(doc: &Document) -> Vec<Meta> {
    let mut meta: Vec<Meta> = doc
        .metadata
        .iter()
        .filter(|m| doc.title.is_none() || m.key != "title")
        .cloned()
        .collect();
    if let Some(t) = &doc.title {
        meta.push(Meta {
            key: "title".to_string(),
            value: t.clone(),
        });
    }
    meta
}

/// Chunk ids are `<doc id>#<n>`, so a doc id must be non-empty and free of
/// `#`, or two documents' chunks could share an id. The messages are the
/// reference chunker's, word for word (the parity test compares them).
fn check_id(id: &str) -> Result<(), Failure> {
    let invalid = |m: String| Failure::new(FailureKind::InvalidInput, m);
    if id.is_empty() {
        return Err(invalid("document id is empty".to_string()));
    }
    if id.contains('#') {
        return Err(invalid(format!(
            "document id {id:?} contains '#', which separates the document id from the chunk number in chunk ids"
        )));
    }
    Ok(())
}

fn chunk_id(id: &str, seq: u32) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(id.len() + 11);
    s.push_str(id);
    s.push('#');
    // Writing to a String cannot fail.
    let _ = write!(s, "{seq}");
    s
}

fn bad_span(doc: &Document, n: usize, s: &Span, why: &str) -> Failure {
    Failure::new(
        FailureKind::BadOutput,
        format!(
            "span {n} ({}..{}) of document {:?} is {why}",
            s.start, s.end, doc.id
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, title: Option<&str>, text: &str) -> Document {
        Document {
            id: id.into(),
            title: title.map(Into::into),
            text: text.into(),
            metadata: vec![
                Meta {
                    key: "kind".into(),
                    value: "policy".into(),
                },
                Meta {
                    key: "title".into(),
                    value: "old".into(),
                },
            ],
        }
    }

    fn span(start: u32, end: u32) -> Span {
        Span { start, end }
    }

    #[test]
    fn chunks_are_the_ranges_with_ids_seqs_and_the_titled_metadata() {
        let d = doc("d-1", Some("Bags"), "One two. Three four.");
        let cs = chunks_from_spans(&d, &[span(0, 8), span(4, 20)], &Limits::default()).unwrap();
        let got: Vec<(&str, &str, u32, &str)> = cs
            .iter()
            .map(|c| (c.id.as_str(), c.doc_id.as_str(), c.seq, c.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("d-1#0", "d-1", 0, "One two."),
                ("d-1#1", "d-1", 1, "two. Three four.")
            ]
        );
        let meta: Vec<(&str, &str)> = cs[1]
            .metadata
            .iter()
            .map(|m| (m.key.as_str(), m.value.as_str()))
            .collect();
        assert_eq!(meta, [("kind", "policy"), ("title", "Bags")]);
        // Without a title the document's own `title` entry stays.
        let cs =
            chunks_from_spans(&doc("d", None, "x"), &[span(0, 1)], &Limits::default()).unwrap();
        assert_eq!(cs[0].metadata[1].value, "old");
        assert_eq!(chunk_id("d", u32::MAX), format!("d#{}", u32::MAX));
    }

    #[test]
    fn bad_spans_fail_the_document_naming_the_span() {
        let d = doc("d", None, "héllo wörld");
        for (s, why) in [
            (span(3, 3), "non-empty range"),
            (span(5, 2), "non-empty range"),
            (span(0, 99), "of its 13 bytes"),
            (span(0, 2), "cuts a UTF-8 character"),
            (span(2, 6), "cuts a UTF-8 character"),
        ] {
            let f = chunks_from_spans(&d, &[span(0, 1), s], &Limits::default()).unwrap_err();
            assert_eq!(f.kind, FailureKind::BadOutput, "{f}");
            assert!(
                f.message.contains("span 1") && f.message.contains(why),
                "{f}"
            );
        }
    }

    #[test]
    fn output_past_the_limits_is_refused_before_it_is_built() {
        let d = doc("d", None, &"x".repeat(1 << 20));
        let limits = Limits {
            max_output_bytes: 4 << 20,
            max_outputs: 1_000_000,
            ..Limits::default()
        };
        // Four copies of a 1 MiB text plus ids and metadata pass 4 MiB.
        let many = [span(0, 1 << 20); 4];
        let f = chunks_from_spans(&d, &many, &limits).unwrap_err();
        assert_eq!(f.kind, FailureKind::OutputTooLarge, "{f}");
        let counted = Limits {
            max_outputs: 3,
            ..limits
        };
        let f = chunks_from_spans(&d, &[span(0, 1); 4], &counted).unwrap_err();
        assert!(f.message.contains("max_outputs"), "{f}");
        assert_eq!(
            chunks_from_spans(&d, &many[..3], &limits).map(|c| c.len()),
            Ok(3)
        );
    }

    #[test]
    fn ids_that_cannot_name_chunks_are_invalid_input() {
        for id in ["", "a#b"] {
            let f = chunks_from_spans(&doc(id, None, "x"), &[], &Limits::default()).unwrap_err();
            assert_eq!(f.kind, FailureKind::InvalidInput, "{f}");
        }
    }
}

//! A chunker that splits documents into overlapping chunks of bounded size,
//! cutting at paragraph breaks first, then sentence ends, then between words,
//! and inside a word only when one word is longer than a whole chunk.
//!
//! Configuration (all optional):
//! - `unit`: `"chars"` (default) or `"tokens"` (whitespace-separated words).
//! - `max_chars` (800) and `overlap` (100): chunk size and overlap in characters.
//! - `max_tokens` (200) and `overlap_tokens` (20): the same in words.
//!
//! The splitting itself ([`chunk_text`], [`chunk_spans`]) is plain Rust so it
//! is unit-tested and benchmarked natively; only the thin binding to the WIT
//! world is compiled for wasm: the `span-chunker` world, so the component
//! returns byte ranges and the host builds the chunks from its copy of the
//! document.

pub mod config;
pub mod split;

pub use config::Settings;
pub use split::{chunk_spans, chunk_spans_into, chunk_text, ChunkConfig, Scratch, Unit};

/// One chunk of a document, independent of the WIT bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocChunk {
    /// `<doc id>#<seq>`, stable across replays so the index overwrites.
    pub id: String,
    pub seq: u32,
    pub text: String,
    pub metadata: Vec<(String, String)>,
}

/// Splits one document. The chunks carry the document's metadata plus its
/// `title` (which replaces a `title` metadata entry, the document field being
/// the authoritative one), so search filters and prompts can use it.
///
/// An id that is empty or contains `#` is rejected: chunk ids are
/// `<doc id>#<n>`, and a `#` in the doc id would make them ambiguous.
pub fn chunk_document(
    id: &str,
    title: Option<&str>,
    text: &str,
    metadata: &[(String, String)],
    cfg: &ChunkConfig,
) -> Result<Vec<DocChunk>, String> {
    check_id(id)?;
    let mut meta: Vec<(String, String)> = metadata
        .iter()
        .filter(|(k, _)| title.is_none() || k != "title")
        .cloned()
        .collect();
    if let Some(t) = title {
        meta.push(("title".to_string(), t.to_string()));
    }
    let texts = chunk_text(text, cfg);
    let last = texts.len().saturating_sub(1);
    let mut meta = Some(meta);
    texts
        .into_iter()
        .enumerate()
        .map(|(n, text)| {
            let seq = chunk_seq(id, n)?;
            // The last chunk takes the metadata built for the document.
            let metadata = if n == last {
                meta.take().unwrap_or_default()
            } else {
                meta.clone().unwrap_or_default()
            };
            Ok(DocChunk {
                id: chunk_id(id, seq),
                seq,
                text,
                metadata,
            })
        })
        .collect()
}

/// Rejects an id that is empty or contains `#` (see [`chunk_document`]).
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("document id is empty".to_string());
    }
    if id.contains('#') {
        return Err(format!(
            "document id {id:?} contains '#', which separates the document id from the chunk number in chunk ids"
        ));
    }
    Ok(())
}

/// The `seq` of the `n`th chunk of document `id`.
fn chunk_seq(id: &str, n: usize) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("document {id:?} has more than {} chunks", u32::MAX))
}

/// `<doc id>#<seq>`, allocated once at its final size (`format!` guesses the
/// capacity and may grow the string).
fn chunk_id(id: &str, seq: u32) -> String {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut n = seq;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut s = String::with_capacity(id.len() + 1 + digits.len() - at);
    s.push_str(id);
    s.push('#');
    for &d in &digits[at..] {
        s.push(char::from(d));
    }
    s
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "span-chunker" });

    use crate::{Scratch, Settings};
    use exports::weft::plugin::chunk_spans::{Guest, Span};
    use std::cell::RefCell;
    use std::ops::Range;
    use std::sync::OnceLock;
    use weft::plugin::log::{log, Level};
    use weft::plugin::types::{ErrorKind, PluginError};

    struct TextChunker;

    /// The config cannot change during an instance's life, so it is read and
    /// validated once; its warnings are logged once.
    fn settings() -> &'static Result<Settings, String> {
        static SETTINGS: OnceLock<Result<Settings, String>> = OnceLock::new();
        SETTINGS.get_or_init(|| {
            let s = Settings::from_entries(&weft::plugin::config::entries());
            match &s {
                Ok(s) => s.warnings.iter().for_each(|w| log(Level::Warn, w)),
                Err(e) => log(Level::Error, e),
            }
            s
        })
    }

    thread_local! {
        /// Splitting buffers reused across documents and calls (the guest
        /// is single-threaded; `thread_local!` is just a safe static here).
        static SCRATCH: RefCell<(Scratch, Vec<Range<usize>>)> = RefCell::default();
    }

    /// The byte ranges [`crate::chunk_spans`] gives. The host makes them
    /// into chunks exactly as [`crate::chunk_document`] does (ids, doc id
    /// checks, title in the metadata; the host's tests compare the two),
    /// so nothing is allocated per chunk here and only offsets go back.
    fn spans_of(text: &str, settings: &Settings) -> Vec<Span> {
        SCRATCH.with_borrow_mut(|(scratch, spans)| {
            crate::chunk_spans_into(text, &settings.chunk, scratch, spans);
            // Texts come through a 32-bit linear memory, so offsets fit.
            spans
                .iter()
                .map(|r| Span {
                    start: r.start as u32,
                    end: r.end as u32,
                })
                .collect()
        })
    }

    impl Guest for TextChunker {
        fn spans(texts: Vec<String>) -> Vec<Result<Vec<Span>, PluginError>> {
            match settings() {
                Ok(s) => texts.iter().map(|t| Ok(spans_of(t, s))).collect(),
                Err(e) => texts
                    .iter()
                    .map(|_| {
                        Err(PluginError {
                            kind: ErrorKind::Config,
                            message: e.clone(),
                        })
                    })
                    .collect(),
            }
        }
    }

    export!(TextChunker);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ids_and_seqs_are_stable() {
        let text = "One. Two. Three. Four. Five. Six. Seven. Eight.";
        let cfg = ChunkConfig::chars(12, 0);
        let a = chunk_document("doc-1", None, text, &[], &cfg).unwrap();
        let b = chunk_document("doc-1", None, text, &[], &cfg).unwrap();
        assert_eq!(a, b);
        assert!(a.len() > 2);
        for (n, c) in a.iter().enumerate() {
            assert_eq!(c.id, format!("doc-1#{n}"));
            assert_eq!(c.seq as usize, n);
        }
    }

    #[test]
    fn metadata_is_carried_and_title_added() {
        let cfg = ChunkConfig::chars(800, 100);
        let m = meta(&[("kind", "policy"), ("title", "old")]);
        let c = chunk_document("d", Some("Baggage"), "Some text.", &m, &cfg).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].text, "Some text.");
        assert_eq!(
            c[0].metadata,
            meta(&[("kind", "policy"), ("title", "Baggage")])
        );
        let c = chunk_document("d", None, "Some text.", &m, &cfg).unwrap();
        assert_eq!(c[0].metadata, m);
    }

    #[test]
    fn empty_text_gives_no_chunks() {
        let cfg = ChunkConfig::chars(800, 100);
        assert_eq!(chunk_document("d", Some("T"), "  ", &[], &cfg), Ok(vec![]));
    }

    #[test]
    fn chunk_ids_are_id_hash_seq() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u32::MAX] {
            let id = chunk_id("doc-é", n);
            assert_eq!(id, format!("doc-é#{n}"));
            assert_eq!(id.capacity(), id.len(), "allocated at its final size");
        }
    }

    #[test]
    fn bad_ids_are_rejected() {
        let cfg = ChunkConfig::chars(800, 100);
        assert!(chunk_document("a#b", None, "x", &[], &cfg)
            .unwrap_err()
            .contains('#'));
        assert!(chunk_document("", None, "x", &[], &cfg).is_err());
    }
}

//! {{name}}: a weft `chunker` stage, a WebAssembly component for world
//! `chunker` of wit/weft.wit.
//!
//! It makes one chunk per paragraph (runs of lines separated by blank lines),
//! with ids `<doc id>#<n>` and `seq = n` from 0, so a replay overwrites rather
//! than duplicates. Each chunk carries its document's metadata. A document
//! whose id contains `#` or whose text is blank is an invalid input.
//!
//! The logic is plain Rust, unit-tested natively with `cargo test`; the
//! bindings are in `component`, compiled only for wasm.

/// The paragraphs of `text`: runs of non-blank lines, trimmed.
pub fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines().chain([""]) {
        if !line.trim().is_empty() {
            current.push(line);
        } else if !current.is_empty() {
            out.push(current.join("\n").trim().to_string());
            current.clear();
        }
    }
    out
}

/// The chunks of one document as `(id, seq, text)`, or why it cannot be split.
pub fn split(doc_id: &str, text: &str) -> Result<Vec<(String, u32, String)>, String> {
    if doc_id.is_empty() {
        return Err("document id is empty".to_string());
    }
    if doc_id.contains('#') {
        return Err(format!(
            "document id `{doc_id}` contains `#`, which separates the document id from the chunk number in chunk ids"
        ));
    }
    let paragraphs = paragraphs(text);
    if paragraphs.is_empty() {
        return Err(format!("document `{doc_id}` has no text"));
    }
    Ok((0u32..)
        .zip(paragraphs)
        .map(|(n, p)| (format!("{doc_id}#{n}"), n, p))
        .collect())
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "wit", world: "chunker" });

    use exports::weft::plugin::chunk::Guest;
    use weft::plugin::types::{Chunk, Document, ErrorKind, PluginError};

    struct Plugin;

    impl Guest for Plugin {
        /// One result per document, in order; a bad document fails alone.
        fn split(docs: Vec<Document>) -> Vec<Result<Vec<Chunk>, PluginError>> {
            docs.into_iter()
                .map(|doc| {
                    let chunks =
                        crate::split(&doc.id, &doc.text).map_err(|message| PluginError {
                            kind: ErrorKind::InvalidInput,
                            message,
                        })?;
                    Ok(chunks
                        .into_iter()
                        .map(|(id, seq, text)| Chunk {
                            id,
                            doc_id: doc.id.clone(),
                            seq,
                            text,
                            metadata: doc.metadata.clone(),
                        })
                        .collect())
                })
                .collect()
        }
    }

    export!(Plugin);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_chunk_per_paragraph() {
        let chunks = split("d", "One.\nStill one.\n\n  \nTwo.\r\n\r\nThree.\n").unwrap();
        assert_eq!(
            chunks,
            vec![
                ("d#0".to_string(), 0, "One.\nStill one.".to_string()),
                ("d#1".to_string(), 1, "Two.".to_string()),
                ("d#2".to_string(), 2, "Three.".to_string()),
            ]
        );
    }

    #[test]
    fn bad_documents_are_refused() {
        assert!(split("a#b", "text").is_err());
        assert!(split("", "text").is_err());
        assert!(split("d", " \n\n ").is_err());
    }
}

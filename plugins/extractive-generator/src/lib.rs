//! An offline generator: answers with the sentences of the retrieved hits
//! that best match the question, with citation markers. No model, no network:
//! it is the default generator of the examples, and a floor that a real
//! model should beat.
//!
//! Configuration (optional):
//! - `max_sentences` (2): how many sentences the answer may quote.
//! - `one_source` (false): quote only the hit of the best sentence (for
//!   pipelines whose hits can be near-identical notes about different
//!   things, e.g. flights without a metadata filter).
//!
//! The chat messages are ignored: this generator reads the hits directly.

pub mod extract;

pub use extract::{
    extract_answer, extract_answer_from, split_sentences, Extract, Source, NO_CONTEXT_ANSWER,
};

/// Default number of quoted sentences: one answers most factual questions,
/// a second often carries the condition or exception that goes with it.
pub const DEFAULT_MAX_SENTENCES: usize = 2;
/// More would stop being an answer and become a copy of the context.
pub const MAX_MAX_SENTENCES: usize = 20;

/// The parsed configuration, plus warnings worth logging once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub max_sentences: usize,
    pub one_source: bool,
    pub warnings: Vec<String>,
}

impl Settings {
    /// Parses `entries` (key, value) as given by `config::entries()`.
    pub fn from_entries(entries: &[(String, String)]) -> Result<Settings, String> {
        let mut s = Settings {
            max_sentences: DEFAULT_MAX_SENTENCES,
            one_source: false,
            warnings: Vec::new(),
        };
        for (key, value) in entries {
            match key.as_str() {
                "max_sentences" => {
                    s.max_sentences = value
                        .trim()
                        .trim_matches('"')
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_MAX_SENTENCES).contains(n))
                        .ok_or_else(|| {
                            format!(
                                "config `max_sentences` must be an integer from 1 to {MAX_MAX_SENTENCES}, not {value:?}"
                            )
                        })?;
                }
                "one_source" => {
                    s.one_source = match value.trim().trim_matches('"') {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(format!(
                                "config `one_source` must be true or false, not {value:?}"
                            ))
                        }
                    }
                }
                _ => s
                    .warnings
                    .push(format!("unknown config key `{key}` is ignored")),
            }
        }
        Ok(s)
    }
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "generator" });

    use crate::{Settings, Source};
    use exports::weft::plugin::generate::Guest;
    use std::sync::OnceLock;
    use weft::plugin::log::{log, Level};
    use weft::plugin::types::{Answer, Citation, ErrorKind, Hit, Message, PluginError, Question};

    struct ExtractiveGenerator;

    /// Read and validated once per instance (the config cannot change).
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

    impl Guest for ExtractiveGenerator {
        fn generate(
            question: Question,
            _messages: Vec<Message>,
            hits: Vec<Hit>,
        ) -> Result<Answer, PluginError> {
            let s = settings().as_ref().map_err(|e| PluginError {
                kind: ErrorKind::Config,
                message: e.clone(),
            })?;
            let sources: Vec<Source<'_>> = hits
                .iter()
                .map(|h| Source {
                    text: &h.text,
                    score: h.score,
                    title: h
                        .metadata
                        .iter()
                        .find(|m| m.key == "title")
                        .map(|m| m.value.as_str()),
                })
                .collect();
            let e =
                crate::extract_answer_from(&question.text, &sources, s.max_sentences, s.one_source);
            let citations = e
                .cited
                .iter()
                .filter_map(|&i| hits.get(i))
                .map(|h| Citation {
                    chunk_id: h.chunk_id.clone(),
                    doc_id: h.doc_id.clone(),
                    score: h.score,
                })
                .collect();
            Ok(Answer {
                text: e.text,
                citations,
            })
        }
    }

    export!(ExtractiveGenerator);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config() {
        assert_eq!(Settings::from_entries(&[]).unwrap().max_sentences, 2);
        let s = Settings::from_entries(&[("max_sentences".into(), "3".into())]).unwrap();
        assert_eq!(s.max_sentences, 3);
        let s = Settings::from_entries(&[("one_source".into(), "true".into())]).unwrap();
        assert!(s.one_source);
        assert!(Settings::from_entries(&[("one_source".into(), "yes".into())]).is_err());
        for bad in ["0", "21", "two"] {
            assert!(Settings::from_entries(&[("max_sentences".into(), bad.into())]).is_err());
        }
    }
}

//! {{name}}: a weft `generator` stage, a WebAssembly component for world
//! `generator` of wit/weft.wit.
//!
//! No model: it answers with the text of the best hit (the highest score),
//! cited as `[n]`, its position in the hits as numbered by prompt builders,
//! and one citation of that hit. Without hits it says it does not know. A real
//! generator would send the prompt builder's `messages` to a model (over
//! `wasi:http`, with `grants.outbound_hosts` in the manifest).
//!
//! The logic is plain Rust, unit-tested natively with `cargo test`; the
//! bindings are in `component`, compiled only for wasm.

/// The answer when there is nothing to answer from.
pub const NO_ANSWER: &str = "I don't know: no context was retrieved for this question.";

/// The position of the best hit (the highest score; the first of equals).
pub fn best(scores: &[f32]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, s) in scores.iter().enumerate() {
        if best.is_none_or(|b| *s > scores[b]) {
            best = Some(i);
        }
    }
    best
}

/// The answer text quoting the hit at position `index`.
pub fn answer_text(hit_text: &str, index: usize) -> String {
    format!("{} [{}]", hit_text.trim(), index + 1)
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "wit", world: "generator" });

    use exports::weft::plugin::generate::Guest;
    use weft::plugin::types::{Answer, Citation, Hit, Message, PluginError, Question};

    struct Plugin;

    impl Guest for Plugin {
        fn generate(
            _question: Question,
            _messages: Vec<Message>,
            hits: Vec<Hit>,
        ) -> Result<Answer, PluginError> {
            let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
            let Some(i) = crate::best(&scores) else {
                return Ok(Answer {
                    text: crate::NO_ANSWER.to_string(),
                    citations: Vec::new(),
                });
            };
            let hit = &hits[i];
            Ok(Answer {
                text: crate::answer_text(&hit.text, i),
                citations: vec![Citation {
                    chunk_id: hit.chunk_id.clone(),
                    doc_id: hit.doc_id.clone(),
                    score: hit.score,
                }],
            })
        }
    }

    export!(Plugin);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_the_best_hit() {
        assert_eq!(best(&[0.2, 0.9, 0.9, 0.1]), Some(1));
        assert_eq!(best(&[]), None);
        assert_eq!(
            answer_text(" Bags cost 60 EUR. ", 1),
            "Bags cost 60 EUR. [2]"
        );
    }
}

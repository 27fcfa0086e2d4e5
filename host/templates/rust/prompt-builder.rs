//! {{name}}: a weft `prompt-builder` stage, a WebAssembly component for world
//! `prompt-builder` of wit/weft.wit.
//!
//! It turns a question and its hits into two chat messages: a system message,
//! and a user message with the hits as numbered context (`[1] (doc <id>)
//! <text>`, the convention generators parse citations back from) followed by
//! the question. An empty question is an invalid input.
//!
//! Configuration (optional), in pipeline.toml: `system`, the system message.
//!
//! The logic is plain Rust, unit-tested natively with `cargo test`; the
//! bindings are in `component`, compiled only for wasm.

/// The system message when the config sets none.
pub const DEFAULT_SYSTEM: &str = "Answer the question using only the numbered context passages. \
Cite each passage you use by its number in square brackets, like [1]. \
If the context does not contain the answer, say that you don't know.";

/// The context when there are no hits, so the model knows retrieval found nothing.
pub const NO_CONTEXT: &str = "(no context was found)";

/// The user message for `question` and its hits, given as `(doc id, text)`.
pub fn user_message(question: &str, hits: &[(&str, &str)]) -> Result<String, String> {
    let question = question.trim();
    if question.is_empty() {
        return Err("the question's text is empty".to_string());
    }
    let context = if hits.is_empty() {
        NO_CONTEXT.to_string()
    } else {
        hits.iter()
            .enumerate()
            .map(|(i, (doc, text))| format!("[{}] (doc {doc}) {}", i + 1, text.trim()))
            .collect::<Vec<_>>()
            .join("\n\n")
    };
    Ok(format!("Context:\n{context}\n\nQuestion: {question}"))
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "wit", world: "prompt-builder" });

    use exports::weft::plugin::prompt::Guest;
    use std::sync::OnceLock;
    use weft::plugin::types::{ErrorKind, Hit, Message, PluginError, Question, Role};

    /// The system message, read on the first call: the config cannot change
    /// during an instance's life.
    fn system() -> &'static str {
        static SYSTEM: OnceLock<String> = OnceLock::new();
        SYSTEM.get_or_init(|| {
            weft::plugin::config::get("system").unwrap_or_else(|| crate::DEFAULT_SYSTEM.to_string())
        })
    }

    struct Plugin;

    impl Guest for Plugin {
        fn build(question: Question, hits: Vec<Hit>) -> Result<Vec<Message>, PluginError> {
            let passages: Vec<(&str, &str)> = hits
                .iter()
                .map(|h| (h.doc_id.as_str(), h.text.as_str()))
                .collect();
            let user =
                crate::user_message(&question.text, &passages).map_err(|message| PluginError {
                    kind: ErrorKind::InvalidInput,
                    message,
                })?;
            Ok(vec![
                Message {
                    role: Role::System,
                    content: system().to_string(),
                },
                Message {
                    role: Role::User,
                    content: user,
                },
            ])
        }
    }

    export!(Plugin);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_context_then_the_question() {
        let m = user_message(
            " Can I bring skis? ",
            &[("a", "Skis fly free. "), ("b", "Bags cost 60 EUR.")],
        );
        assert_eq!(
            m.unwrap(),
            "Context:\n[1] (doc a) Skis fly free.\n\n[2] (doc b) Bags cost 60 EUR.\n\nQuestion: Can I bring skis?"
        );
        assert!(user_message("Why?", &[]).unwrap().contains(NO_CONTEXT));
        assert!(user_message("  ", &[]).is_err());
    }
}

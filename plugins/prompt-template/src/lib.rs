//! A prompt builder: turns a question and its retrieved hits into a system
//! message and a user message for a chat model.
//!
//! Configuration (all optional):
//! - `system`: the system message (default: answer only from the numbered
//!   context and cite sources as `[n]`). May contain the placeholders too.
//! - `template`: the user message, with placeholders `{question}` and
//!   `{context}` (default `"Context:\n{context}\n\nQuestion: {question}"`).
//! - `max_context_chars` (6000): budget for the rendered context.
//!
//! The context lists the hits as `[1] (doc <doc-id>) <text>`, in hit order,
//! so `[n]` in an answer refers to the n-th hit.

pub mod config;
pub mod template;

pub use config::Settings;
pub use template::{build_prompt, fill, render_context, Passage, PromptConfig};

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "prompt-builder" });

    use crate::{Passage, Settings};
    use exports::weft::plugin::prompt::Guest;
    use std::sync::OnceLock;
    use weft::plugin::log::{log, Level};
    use weft::plugin::types::{ErrorKind, Hit, Message, PluginError, Question, Role};

    struct PromptTemplate;

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

    impl Guest for PromptTemplate {
        fn build(question: Question, hits: Vec<Hit>) -> Result<Vec<Message>, PluginError> {
            let s = settings().as_ref().map_err(|e| PluginError {
                kind: ErrorKind::Config,
                message: e.clone(),
            })?;
            let passages: Vec<Passage<'_>> = hits
                .iter()
                .map(|h| Passage {
                    doc_id: &h.doc_id,
                    text: &h.text,
                })
                .collect();
            let (system, user) = crate::build_prompt(&question.text, &passages, &s.prompt)
                .map_err(|message| PluginError {
                    kind: ErrorKind::InvalidInput,
                    message,
                })?;
            Ok(vec![
                Message {
                    role: Role::System,
                    content: system,
                },
                Message {
                    role: Role::User,
                    content: user,
                },
            ])
        }
    }

    export!(PromptTemplate);
}

//! A generator that calls an OpenAI-compatible chat completions API (OpenAI,
//! vLLM, llama.cpp, Ollama, ...) through `wasi:http/outgoing-handler`, so the
//! host checks the destination against the stage's `grants.outbound_hosts`.
//!
//! Configuration (all optional):
//! - `base_url` (`https://api.openai.com/v1`): the API root; the request goes
//!   to `{base_url}/chat/completions`.
//! - `model` (`gpt-4o-mini`).
//! - `api_key_env` (`OPENAI_API_KEY`): the environment variable holding the
//!   API key, sent as a bearer token when set. The stage must be granted it
//!   (`grants.env`); local servers usually need none.
//! - `timeout_ms`: connect / first-byte / between-bytes timeout.
//! - `temperature`, `max_tokens`: passed to the API when set.
//! - `stream` (false): ask for a streamed completion (server-sent events)
//!   and hand each piece to the host as it arrives (`deltas.emit`), so the
//!   answer streams to `<answers topic>.deltas` while the model writes it.
//!
//! The messages come from the prompt builder; `[n]` markers in the answer
//! become citations of the n-th hit. Errors: HTTP 429/5xx and network
//! failures are transient, 401/403/404 and a destination the stage is not
//! granted are config errors, other 4xx are invalid input.

pub mod chat;
pub mod config;
pub mod streamed;
#[cfg(target_arch = "wasm32")]
use openai_client::transport;
pub use openai_client::{endpoint, failure};

pub use chat::{cited_hits, parse_response, request_body, ChatMessage};
pub use config::Settings;
pub use failure::{Failure, FailureKind};

/// The `Authorization` header for `key`, if there is one: an unset or empty
/// variable means "no key" rather than an empty bearer token.
pub fn auth_header(key: Option<String>) -> Vec<(String, Vec<u8>)> {
    match key {
        Some(k) if !k.trim().is_empty() => vec![(
            "authorization".to_string(),
            format!("Bearer {}", k.trim()).into_bytes(),
        )],
        _ => Vec::new(),
    }
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "generator" });

    use crate::{ChatMessage, Failure, FailureKind, Settings};
    use exports::weft::plugin::generate::Guest;
    use std::sync::OnceLock;
    use weft::plugin::log::{log, Level};
    use weft::plugin::types::{
        Answer, Citation, ErrorKind, Hit, Message, PluginError, Question, Role,
    };

    struct OpenAiGenerator;

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

    fn to_plugin_error(f: Failure) -> PluginError {
        PluginError {
            kind: match f.kind {
                FailureKind::InvalidInput => ErrorKind::InvalidInput,
                FailureKind::Config => ErrorKind::Config,
                FailureKind::Transient => ErrorKind::Transient,
                FailureKind::Internal => ErrorKind::Internal,
            },
            message: f.message,
        }
    }

    /// Calls the API and returns the answer text.
    fn complete(question: Question, messages: Vec<Message>) -> Result<String, Failure> {
        let s = settings()
            .as_ref()
            .map_err(|e| Failure::config(e.clone()))?;
        let mut chat: Vec<ChatMessage> = messages
            .into_iter()
            .map(|m| ChatMessage {
                role: match m.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                },
                content: m.content,
            })
            .collect();
        if chat.is_empty() {
            // No prompt builder ran: ask the bare question.
            if question.text.trim().is_empty() {
                return Err(Failure::invalid_input(
                    "question text is empty and there are no messages",
                ));
            }
            chat.push(ChatMessage {
                role: "user",
                content: question.text,
            });
        }
        let body = crate::request_body(&s.model, &chat, s.temperature, s.max_tokens, s.stream);
        let ep = s.base_url.endpoint("/chat/completions");
        let headers = crate::auth_header(std::env::var(&s.api_key_env).ok());
        if s.stream {
            let mut completion = crate::streamed::StreamedCompletion::default();
            let mut emitting = true;
            let mut on_chunk = |bytes: &[u8]| {
                let piece = completion.push(bytes);
                // Once the host refuses a piece (its bounds), the rest
                // arrives whole with the answer.
                if emitting && !piece.is_empty() {
                    emitting = weft::plugin::deltas::emit(&piece).is_ok();
                }
            };
            let resp = crate::transport::post_json_streaming(
                &ep,
                &headers,
                &body,
                s.timeout_ms,
                Some(&mut on_chunk),
            )?;
            if !(200..300).contains(&resp.status) {
                return Err(crate::failure::classify_status(
                    resp.status,
                    &resp.body,
                    &ep.url(),
                ));
            }
            return completion.finish();
        }
        let resp = crate::transport::post_json(&ep, &headers, &body, s.timeout_ms)?;
        if !(200..300).contains(&resp.status) {
            return Err(crate::failure::classify_status(
                resp.status,
                &resp.body,
                &ep.url(),
            ));
        }
        crate::parse_response(&resp.body)
    }

    impl Guest for OpenAiGenerator {
        fn generate(
            question: Question,
            messages: Vec<Message>,
            hits: Vec<Hit>,
        ) -> Result<Answer, PluginError> {
            let text = complete(question, messages).map_err(to_plugin_error)?;
            let citations = crate::cited_hits(&text, hits.len())
                .into_iter()
                .filter_map(|i| hits.get(i))
                .map(|h| Citation {
                    chunk_id: h.chunk_id.clone(),
                    doc_id: h.doc_id.clone(),
                    score: h.score,
                })
                .collect();
            Ok(Answer { text, citations })
        }
    }

    export!(OpenAiGenerator);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_header_only_with_a_key() {
        assert!(auth_header(None).is_empty());
        assert!(auth_header(Some("  ".into())).is_empty());
        assert_eq!(
            auth_header(Some("sk-abc\n".into())),
            vec![("authorization".to_string(), b"Bearer sk-abc".to_vec())]
        );
    }
}

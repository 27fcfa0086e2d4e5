//! An embedder that calls an OpenAI-compatible embeddings API (OpenAI, vLLM,
//! llama.cpp, Ollama, text-embeddings-inference, ...) through
//! `wasi:http/outgoing-handler`, so the host checks the destination against
//! the stage's `grants.outbound_hosts`.
//!
//! Configuration (all optional):
//! - `base_url` (`https://api.openai.com/v1`): requests go to `{base_url}/embeddings`.
//! - `model` (`text-embedding-3-small`).
//! - `api_key_env` (`OPENAI_API_KEY`): the environment variable holding the
//!   API key, sent as a bearer token when set; the stage must be granted it
//!   (`grants.env`).
//! - `timeout_ms`: connect / first-byte / between-bytes timeout.
//! - `dimension` (1536): the vector length, reported by `dimension()` and
//!   checked on every response.
//! - `send_dimensions` (false): also send `"dimensions"` to the API, for
//!   models that can shorten their vectors.
//! - `max_batch` (128): texts per request; larger batches are split.
//!
//! Errors: HTTP 429/5xx and network failures are transient, 401/403/404, a
//! dimension mismatch and a destination the stage is not granted are config
//! errors, other 4xx and empty texts are invalid input.

pub mod config;
pub mod embeddings;
#[cfg(target_arch = "wasm32")]
use openai_client::transport;
pub use openai_client::{endpoint, failure};

pub use config::Settings;
pub use embeddings::{check_texts, parse_response, request_body};
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
    wit_bindgen::generate!({ path: "../../wit", world: "embedder" });

    use crate::{Failure, FailureKind, Settings};
    use exports::weft::plugin::embed::Guest;
    use std::sync::OnceLock;
    use weft::plugin::log::{log, Level};
    use weft::plugin::types::{ErrorKind, PluginError};

    struct OpenAiEmbedder;

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

    fn embed_all(texts: &[String]) -> Result<Vec<Vec<f32>>, Failure> {
        let s = settings()
            .as_ref()
            .map_err(|e| Failure::config(e.clone()))?;
        crate::check_texts(texts)?;
        let ep = s.base_url.endpoint("/embeddings");
        let headers = crate::auth_header(std::env::var(&s.api_key_env).ok());
        let dimensions = s.send_dimensions.then_some(s.dimension);
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(s.max_batch) {
            let body = crate::request_body(&s.model, batch, dimensions);
            let resp = crate::transport::post_json(&ep, &headers, &body, s.timeout_ms)?;
            if !(200..300).contains(&resp.status) {
                return Err(crate::failure::classify_status(
                    resp.status,
                    &resp.body,
                    &ep.url(),
                ));
            }
            out.extend(crate::parse_response(&resp.body, batch.len(), s.dimension)?);
        }
        Ok(out)
    }

    impl Guest for OpenAiEmbedder {
        /// With a bad config there is no meaningful dimension; 0 cannot match
        /// any vector, and `embed` reports the actual problem.
        fn dimension() -> u32 {
            settings().as_ref().map_or(0, |s| s.dimension)
        }

        fn embed(texts: Vec<String>) -> Result<Vec<Vec<f32>>, PluginError> {
            embed_all(&texts).map_err(to_plugin_error)
        }
    }

    export!(OpenAiEmbedder);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_header_only_with_a_key() {
        assert!(auth_header(None).is_empty());
        assert_eq!(
            auth_header(Some("sk-abc".into())),
            vec![("authorization".to_string(), b"Bearer sk-abc".to_vec())]
        );
    }
}

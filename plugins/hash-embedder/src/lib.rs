//! An offline, deterministic embedder based on feature hashing: no model, no
//! network, the same vector for the same text everywhere. It is the default
//! embedder of the examples and benchmarks, and a baseline for real models.
//!
//! Configuration (all optional):
//! - `dimension` (384): the vector length.
//! - `sublinear_tf` (true): weight repeated features by `1 + ln(count)`.
//! - `stopwords` (`"english"`): down-weight English function words; `"none"`
//!   treats every word alike.
//!
//! The embedding function ([`embed_text`]) is plain Rust, unit-tested and
//! benchmarked natively; only the binding to the WIT world is wasm-only.

pub mod config;
pub mod hashing;

pub use config::Settings;
pub use hashing::{embed_text, EmbedConfig};

/// Embeds a batch; the batch fails as a whole, naming the first bad text.
pub fn embed_batch(texts: &[String], cfg: &EmbedConfig) -> Result<Vec<Vec<f32>>, String> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| embed_text(t, cfg).map_err(|e| format!("text {i} of the batch: {e}")))
        .collect()
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "embedder" });

    use crate::Settings;
    use exports::weft::plugin::embed::Guest;
    use std::sync::OnceLock;
    use weft::plugin::log::{log, Level};
    use weft::plugin::types::{ErrorKind, PluginError};

    struct HashEmbedder;

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

    impl Guest for HashEmbedder {
        /// With a bad config there is no meaningful dimension; 0 cannot match
        /// any vector, and `embed` reports the actual problem.
        fn dimension() -> u32 {
            match settings() {
                Ok(s) => u32::try_from(s.embed.dimension).unwrap_or(0),
                Err(_) => 0,
            }
        }

        fn embed(texts: Vec<String>) -> Result<Vec<Vec<f32>>, PluginError> {
            let s = settings().as_ref().map_err(|e| PluginError {
                kind: ErrorKind::Config,
                message: e.clone(),
            })?;
            crate::embed_batch(&texts, &s.embed).map_err(|message| PluginError {
                kind: ErrorKind::InvalidInput,
                message,
            })
        }
    }

    export!(HashEmbedder);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_is_ordered_and_fails_as_a_whole() {
        let cfg = EmbedConfig::default();
        let texts = vec!["one".to_string(), "two".to_string()];
        let v = embed_batch(&texts, &cfg).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], embed_text("one", &cfg).unwrap());
        assert_eq!(v[1], embed_text("two", &cfg).unwrap());
        let bad = vec!["one".to_string(), " ".to_string()];
        assert!(embed_batch(&bad, &cfg).unwrap_err().starts_with("text 1"));
        assert_eq!(embed_batch(&[], &cfg), Ok(vec![]));
    }
}

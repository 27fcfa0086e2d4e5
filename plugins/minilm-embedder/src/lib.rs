//! A semantic embedder: sentence-transformers' all-MiniLM-L6-v2 run entirely
//! inside the component (WordPiece tokenisation from `tokenizer.json`, the
//! BERT encoder from `model.safetensors`, attention-masked mean pooling, L2
//! normalisation), so a pipeline gets real semantic vectors with no service
//! to run and no authority but one read-only directory.
//!
//! Configuration (all optional):
//! - `model_dir` (`/models/all-MiniLM-L6-v2`): the *guest* path of the
//!   directory holding `config.json`, `tokenizer.json` and
//!   `model.safetensors`; the manifest grants it with `grants.files`.
//! - `max_tokens` (256, at most 512): tokens per text including `[CLS]` and
//!   `[SEP]`; longer texts are truncated, as sentence-transformers does.
//! - `max_batch` (32): texts per forward pass.
//! - `max_batch_tokens` (512, 16 to 65,536): padded tokens per forward pass
//!   (texts x the longest of them). A call's texts are sorted by length and
//!   cut into passes within both bounds, so padding stays small and long
//!   texts go in smaller passes; a text longer than the budget goes alone.
//!   It bounds the activations, which is what decides the instance's
//!   memory: wasm linear memory never shrinks, so the largest pass stays
//!   paid for. A pass holds ~12 KiB per padded token plus ~240 bytes per
//!   position of its longest text (the attention scores), measured 74 KiB
//!   per token for 256-token texts; 512 tokens keep a pass under ~36 MiB,
//!   which with the 91 MB of weights fits `limits.memory_mb = 192`
//!   (`config::DEFAULT_MAX_BATCH_TOKENS`).
//!
//! The model is loaded once per instance, on the first `embed` call (the
//! host reuses instances, so that is once per stage unless an instance is
//! replaced after a trap). A missing or damaged model file fails the call as
//! a `config` error naming the file and the setup command.
//!
//! Empty and whitespace-only texts are embedded, not refused: like
//! sentence-transformers, they become the encoding of `[CLS] [SEP]`, one
//! fixed unit vector (the fixture checks it against the reference). A
//! vector is never NaN: pooling refuses a zero or non-finite norm.

pub mod config;
pub mod model;

pub use config::Settings;
pub use model::{LoadError, MiniLm, PassLimits, DIMENSION};

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "embedder" });

    use crate::{MiniLm, Settings};
    use exports::weft::plugin::embed::Guest;
    use std::sync::OnceLock;
    use weft::plugin::log::{log, Level};
    use weft::plugin::types::{ErrorKind, PluginError};

    struct MiniLmEmbedder;

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

    /// The model, loaded on first use. A failure is kept too: the files do
    /// not change under a running instance, and re-reading 90 MB of a
    /// damaged file on every call would only slow the dead-lettering down.
    fn model(s: &Settings) -> &'static Result<MiniLm, String> {
        static MODEL: OnceLock<Result<MiniLm, String>> = OnceLock::new();
        MODEL.get_or_init(|| {
            let m = MiniLm::load(&s.model_dir, s.max_tokens, s.pass_limits())
                .map_err(|e| e.to_string());
            match &m {
                Ok(_) => log(
                    Level::Info,
                    &format!("loaded all-MiniLM-L6-v2 from {}", s.model_dir.display()),
                ),
                Err(e) => log(Level::Error, e),
            }
            m
        })
    }

    fn config_error(message: &str) -> PluginError {
        PluginError {
            kind: ErrorKind::Config,
            message: message.to_string(),
        }
    }

    impl Guest for MiniLmEmbedder {
        /// Fixed by the model; answering it does not load the model.
        fn dimension() -> u32 {
            crate::DIMENSION as u32
        }

        fn embed(texts: Vec<String>) -> Result<Vec<Vec<f32>>, PluginError> {
            let s = settings().as_ref().map_err(|e| config_error(e))?;
            if texts.is_empty() {
                return Ok(Vec::new());
            }
            let m = model(s).as_ref().map_err(|e| config_error(e))?;
            m.embed(&texts).map_err(|message| PluginError {
                kind: ErrorKind::Internal,
                message,
            })
        }
    }

    export!(MiniLmEmbedder);
}

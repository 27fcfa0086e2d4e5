//! What the OpenAI-compatible plugins (`openai-generator`,
//! `openai-embedder`) share: endpoint parsing, the wasi:http transport and
//! the mapping of HTTP outcomes to weft error kinds (429/5xx are transient,
//! a denied host is a configuration error, ...).

pub mod endpoint;
pub mod failure;
#[cfg(target_arch = "wasm32")]
pub mod transport;

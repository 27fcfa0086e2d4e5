//! weft: a WebAssembly plugin runtime for streaming retrieval-augmented generation.
//!
//! Modules, one job each:
//! - [`manifest`]: pipeline manifests (TOML) with located errors;
//! - [`policy`]: the operator's ceiling on what manifests may grant;
//! - [`plugin`]: wasmtime engine, compile cache, sandboxed stage instances;
//! - [`record`]: the items that flow between stages and their JSON forms;
//! - [`pipeline`]: runs items through the stages, isolating failures;
//! - [`local`]: the file-to-file runner used by `weft run --input`;
//! - [`stream`]: Kafka sources and sinks, and the managed local broker;
//! - [`index`]: the per-tenant vector index (LMDB via heed, arroy trees).

pub mod index;
pub mod local;
pub mod manifest;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod policy;
pub mod record;
pub mod stream;

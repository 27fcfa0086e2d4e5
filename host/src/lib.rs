//! weft: a WebAssembly plugin runtime for streaming retrieval-augmented generation.
//!
//! Layers, each using only the ones above it in this list (checked by
//! `tests/layers.rs`; the README's Layout section has the rule):
//! 1. [`manifest`] and [`policy`]: pipeline manifests (TOML) with located
//!    errors, and the operator's ceiling on what they may grant;
//!    [`metrics`]: counters and histograms any layer may update;
//! 2. [`runtime`]: wasmtime engine, compile cache, sandboxed stage instances,
//!    limits and grants; owns the WIT types and the [`runtime::IndexSearch`]
//!    trait a retriever searches through;
//! 3. [`record`] and [`pipeline`]: the items that flow between stages, and
//!    running them through the stages with failures isolated; the
//!    [`pipeline::DocumentSink`] and [`pipeline::Indexes`] traits;
//!    [`table`]: the tenants' tables (latest value per key of a topic) in
//!    LMDB, which [`stream`] keeps up to date;
//! 4. [`index`] (the per-tenant vector index: LMDB via heed, arroy trees; it
//!    implements the traits above in a small adapter) and [`stream`] (Kafka
//!    sources and sinks, the managed local broker, and the JSON Lines file
//!    runner of `weft run --input`);
//! 5. [`service`]: run, dev, scenarios, evaluation, checks and index tools
//!    as library functions with typed results;
//!
//! and the `weft` binary's `cli` on top: argument parsing and printing.

pub mod index;
pub mod manifest;
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod policy;
pub mod record;
pub mod runtime;
pub mod service;
pub mod stream;
pub mod table;

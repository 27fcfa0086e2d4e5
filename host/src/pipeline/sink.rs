//! What a pipeline writes to and searches in, as traits: the index layer
//! (above this one) implements them, so the pipeline never names it.

use super::{BatchOutcome, DeadLetter};
use crate::runtime::IndexSearch;
use std::collections::HashMap;
use std::sync::Arc;

/// A failure of the store behind a sink or a search handle (a full disk, a
/// corrupt file): the batch must not be committed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl SinkError {
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SinkError {
        SinkError(e.into())
    }
}

/// What a sink did with one batch.
#[derive(Debug, Default)]
pub struct SinkReport {
    pub docs_upserted: u64,
    pub docs_deleted: u64,
    pub chunks_added: u64,
    pub chunks_removed: u64,
    /// Milliseconds from each record's timestamp to the commit that made it
    /// durable in the sink (records without a timestamp are left out).
    pub freshness_ms: Vec<f64>,
    /// Records that could not be written, as dead letters.
    pub dead: Vec<DeadLetter>,
}

/// The host-side end of a pipeline that stores documents (the index sink).
pub trait DocumentSink: Send + Sync {
    /// Writes a batch's outputs. `Err` only when the store itself failed
    /// (nothing of the batch may then be committed); per-record problems
    /// come back as dead letters in the report.
    fn write(&self, outcome: &BatchOutcome) -> Result<SinkReport, SinkError>;

    /// Vectors the sink already holds for the chunks of `doc_id` that this
    /// pipeline's embedder made, by chunk id with their text, so unchanged
    /// chunks of a new version are not embedded again.
    fn reusable_vectors(
        &self,
        doc_id: &str,
    ) -> Result<HashMap<String, (String, Vec<f32>)>, SinkError>;

    /// Where the sink writes, for people (a path).
    fn describe(&self) -> String;
}

/// The embedder whose vectors a document sink stores: a description (shown
/// by `weft index stats`, used to embed queries the same way) and a
/// fingerprint (component digest + config) stored with every vector.
#[derive(Debug, Clone)]
pub struct EmbeddingModel {
    pub description: serde_json::Value,
    pub fingerprint: Option<String>,
}

/// The indexes a process can open for its pipelines, scoped by tenant.
pub trait Indexes {
    /// A search handle on the tenant's index `name`, for a retriever stage.
    fn searcher(&self, tenant: &str, name: &str) -> Result<Arc<dyn IndexSearch>, SinkError>;

    /// The tenant's index `name` as a pipeline's sink, recording `model`.
    fn sink(
        &self,
        tenant: &str,
        name: &str,
        model: &EmbeddingModel,
    ) -> Result<Arc<dyn DocumentSink>, SinkError>;
}

//! Runs batches of items through a pipeline's stages.
//!
//! The rules that make a pipeline safe to feed garbage:
//! - every stage call is a batch; a trap or limit breach in a batch recycles
//!   the instance and replays the batch one item at a time, so only the
//!   culprit fails;
//! - a `transient` plugin error is retried with backoff before it fails;
//! - a failed item becomes a [`DeadLetter`] carrying the stage, the kind of
//!   failure, a message and the original record; it never stops the batch.

mod sink;

pub use sink::{DocumentSink, EmbeddingModel, Indexes, SinkError, SinkReport};

use crate::manifest::{Format, Manifest, StageKind};
use crate::record::{
    decode_chunk, decode_document, decode_question, looks_like_chunk, EmbeddedChunk, Item, Payload,
    QuestionState,
};
use crate::runtime::bindings::types;
use crate::runtime::freshness;
use crate::runtime::{
    output_over_cap, DeltaSink, DeltaSlot, Failure, FailureKind, OnStale, ReadRequirement, Runtime,
    StagePlugin, StageShared, TableLookup, TableSlot, TenantAccount,
};
use backon::{BackoffBuilder, ExponentialBuilder};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a manifest could not be made into a runnable pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}: no index directory is open")]
    NoIndexes(String),
    #[error("{at}: opening the index: {source}")]
    Index {
        at: String,
        #[source]
        source: SinkError,
    },
    #[error("{at}: {source:#}")]
    Stage {
        at: String,
        #[source]
        source: anyhow::Error,
    },
}

/// A record that could not be processed, with the reason.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub item: Item,
    pub stage: String,
    pub failure: Failure,
}

/// What one batch produced.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub outputs: Vec<Item>,
    pub dead: Vec<DeadLetter>,
}

impl BatchOutcome {
    /// Drops the outputs of every source record that `dead` dead-letters
    /// (a sink refused it after the stages), so it is counted and written
    /// once, as a dead letter.
    pub fn drop_outputs_of(&mut self, dead: &[DeadLetter]) {
        if dead.is_empty() {
            return;
        }
        let key = |it: &Item| {
            (
                it.origin.topic.clone(),
                it.origin.partition,
                it.origin.offset,
            )
        };
        let refused: std::collections::HashSet<_> = dead.iter().map(|d| key(&d.item)).collect();
        self.outputs.retain(|it| !refused.contains(&key(it)));
    }
}

/// How many times a transient failure is retried, and the first backoff.
pub const TRANSIENT_RETRIES: u32 = 3;
pub const TRANSIENT_BACKOFF: Duration = Duration::from_millis(100);

/// A manifest made runnable: one prepared plugin per stage.
pub struct Pipeline {
    pub manifest: Manifest,
    pub stages: Vec<StagePlugin>,
    /// The tenant's index the `[sink] index` names, opened as a sink.
    pub sink: Option<Arc<dyn DocumentSink>>,
    embed_dims: Vec<Option<u32>>,
    /// The tables its stages look up, shared with each stage.
    tables: TableSlot,
    /// Where its generator's answer pieces go, shared with each stage.
    deltas: DeltaSlot,
    /// Per stage, the instances beyond the first (`parallelism - 1`): each
    /// batch is split between them and `stages[i]`, on as many threads.
    replicas: Vec<Vec<StagePlugin>>,
}

/// Fingerprint of an embedder stage: the same component (by the digest the
/// compile cache computed) with the same config makes the same vectors.
fn embedder_fingerprint(plugin: &StagePlugin, stage: &crate::manifest::Stage) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(plugin.digest.as_bytes());
    for (k, v) in &stage.config {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([1]);
    }
    hex::encode(&h.finalize()[..12])
}

/// What produced an index's vectors: the last embedder before the sink. It
/// is recorded in the index so a query can be embedded the same way.
fn embedding_model(manifest: &Manifest) -> serde_json::Value {
    match manifest
        .stages
        .iter()
        .rev()
        .find(|s| s.kind == StageKind::Embedder)
    {
        Some(s) => serde_json::json!({
            "plugin": s.plugin.display().to_string(),
            "config": s.config,
            "stage": s.name,
            "manifest": std::fs::canonicalize(&manifest.file)
                .unwrap_or_else(|_| manifest.file.clone())
                .display()
                .to_string(),
        }),
        None => serde_json::Value::Null,
    }
}

impl Pipeline {
    /// Prepares every stage (compile, link, type-check). Fails with the stage
    /// and plugin named if any cannot be prepared. Retriever stages get the
    /// tenant's index they name, opened from `indexes`.
    /// Its stages are charged to no tenant-wide quota: see
    /// [`Pipeline::for_tenant`].
    pub fn new(
        runtime: &Runtime,
        manifest: Manifest,
        indexes: Option<&dyn Indexes>,
    ) -> Result<Pipeline, PipelineError> {
        let account = Arc::new(TenantAccount::unlimited(&manifest.tenant));
        Pipeline::for_tenant(runtime, manifest, indexes, account)
    }

    /// Like [`Pipeline::new`], with every stage charged to `account`, the
    /// tenant's (shared with its other pipelines): their memory, instances
    /// and state count against its quotas together, and their calls wait in
    /// the runtime's worker pool with its weight.
    pub fn for_tenant(
        runtime: &Runtime,
        manifest: Manifest,
        indexes: Option<&dyn Indexes>,
        account: Arc<TenantAccount>,
    ) -> Result<Pipeline, PipelineError> {
        let mut stages = Vec::new();
        let mut replicas = Vec::new();
        let tables = TableSlot::default();
        let deltas = DeltaSlot::default();
        for s in &manifest.stages {
            let mut shared = StageShared::new(&manifest.tenant, &manifest.name, s)
                .with_account(account.clone())
                .with_tables(tables.clone())
                .with_deltas(deltas.clone());
            if let Some(name) = &s.index {
                let at = || format!("{}: index `{name}`", s.location);
                let registry = indexes.ok_or_else(|| PipelineError::NoIndexes(at()))?;
                let index = registry
                    .searcher(&manifest.tenant, name)
                    .map_err(|source| PipelineError::Index { at: at(), source })?;
                shared = shared.with_index(index);
            }
            // One `StageShared` for all of a stage's instances: they share
            // its state, log budget and account.
            let shared = Arc::new(shared);
            let prepare = || {
                runtime
                    .prepare(s, shared.clone())
                    .map_err(|source| PipelineError::Stage {
                        at: s.location.to_string(),
                        source,
                    })
            };
            stages.push(prepare()?);
            replicas.push(
                (1..s.parallelism)
                    .map(|_| prepare())
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        let last_embedder = manifest
            .stages
            .iter()
            .rposition(|s| s.kind == StageKind::Embedder);
        let sink = match &manifest.sink_index {
            None => None,
            Some(name) => {
                let at = || format!("{}: [sink] index `{name}`", manifest.file.display());
                let registry = indexes.ok_or_else(|| PipelineError::NoIndexes(at()))?;
                let model = EmbeddingModel {
                    description: embedding_model(&manifest),
                    fingerprint: last_embedder
                        .map(|i| embedder_fingerprint(&stages[i], &manifest.stages[i])),
                };
                let sink = registry
                    .sink(&manifest.tenant, name, &model)
                    .map_err(|source| PipelineError::Index { at: at(), source })?;
                Some(sink)
            }
        };
        let embed_dims = vec![None; stages.len()];
        Ok(Pipeline {
            manifest,
            stages,
            sink,
            embed_dims,
            tables,
            deltas,
            replicas,
        })
    }

    /// Decodes source records per the manifest's `format`.
    fn decode_source(&self, items: Vec<Item>, out: &mut BatchOutcome) -> Vec<Item> {
        let format = self.manifest.format;
        let mut next = Vec::with_capacity(items.len());
        for mut item in items {
            let Payload::Raw(value) = &item.payload else {
                next.push(item);
                continue;
            };
            let decoded = match (format, value) {
                (Format::Record, _) => Ok(None),
                (Format::Document, None) => match item.key.as_deref().map(std::str::from_utf8) {
                    Some(Ok(id)) => Ok(Some(Payload::Delete(id.to_string()))),
                    _ => Err("a tombstone needs a UTF-8 key naming the document".to_string()),
                },
                (Format::Document, Some(v)) => decode_document(item.key.as_deref(), v)
                    .map(|d| Some(Payload::Document(d)))
                    .map_err(|e| e.0),
                (Format::Question, None) => Err("a question cannot be a tombstone".to_string()),
                (Format::Question, Some(v)) => decode_question(item.key.as_deref(), v)
                    .map(|q| Some(Payload::Question(q)))
                    .map_err(|e| e.0),
            };
            match decoded {
                Ok(Some(p)) => {
                    item.payload = p;
                    next.push(item);
                }
                Ok(None) => next.push(item),
                Err(message) => out.dead.push(DeadLetter {
                    item,
                    stage: "source".into(),
                    failure: Failure::new(FailureKind::BadRecord, message),
                }),
            }
        }
        next
    }

    /// Runs one batch through every stage. Never fails as a whole: every
    /// input ends up in `outputs` (possibly as several items) or in `dead`.
    /// Gives the stages the pipeline's tables (once; a second call is
    /// ignored and returns `false`).
    pub fn attach_tables(&self, tables: Arc<dyn TableLookup>) -> bool {
        self.tables.set(tables).is_ok()
    }

    /// Gives the generator stages where to send answer pieces (once; a
    /// second call is ignored and returns `false`). Without one, pieces are
    /// bounded and dropped.
    pub fn attach_deltas(&self, sink: Arc<dyn DeltaSink>) -> bool {
        self.deltas.set(sink).is_ok()
    }

    pub fn process(&mut self, batch: Vec<Item>) -> BatchOutcome {
        // Every table update produced before this batch was read is applied
        // before its first record is looked at (a customer's new booking is
        // visible to their next question); a table that cannot catch up in
        // time is reported and the batch runs on what the table has.
        if let Some(t) = self.tables.get() {
            if let Err(e) = t.catch_up() {
                tracing::warn!(pipeline = %self.manifest.name, "{e}");
            }
        }
        let mut out = BatchOutcome::default();
        let mut items = self.decode_source(batch, &mut out);
        for i in 0..self.stages.len() {
            if items.is_empty() {
                break;
            }
            let t0 = Instant::now();
            let n = items.len();
            // Only the embedder whose vectors the index sink stores may
            // reuse them.
            let last_embedder = self
                .stages
                .iter()
                .rposition(|s| s.kind == StageKind::Embedder);
            let reuse = match &self.sink {
                Some(sink) if last_embedder == Some(i) => Some(sink.as_ref()),
                _ => None,
            };
            let replicas = &mut self.replicas[i];
            if replicas.is_empty() || items.len() < 2 {
                items = run_stage(
                    &mut self.stages[i],
                    &mut self.embed_dims[i],
                    items,
                    reuse,
                    &mut out.dead,
                );
            } else {
                items = run_parallel(
                    &mut self.stages[i],
                    replicas,
                    &mut self.embed_dims[i],
                    items,
                    reuse,
                    &mut out.dead,
                );
            }
            let name = self.stages[i].name.clone();
            let kind = self.stages[i].kind;
            if kind == StageKind::Transform && self.manifest.format == Format::Question {
                items = questions_again(&name, items, &mut out.dead);
            }
            // Batch stages charge each question an equal share of the batch time.
            let share = t0.elapsed().as_secs_f64() * 1000.0 / n.max(1) as f64;
            if matches!(kind, StageKind::Embedder | StageKind::Transform) {
                for it in &mut items {
                    if let Payload::Question(q) = &mut it.payload {
                        q.timings.push((name.clone(), share));
                    }
                }
            }
        }
        if self.manifest.format == Format::Question {
            let stages = self.stage_provenance();
            for it in &mut items {
                if let Payload::Question(q) = &mut it.payload {
                    if q.answer.is_some() {
                        q.provenance = Some(answer_provenance(&stages, q));
                    }
                }
            }
        }
        out.outputs = items;
        out
    }

    /// Each stage's name, kind, component (file name and SHA-256 of its
    /// bytes, as loaded) and a hash of its config: with these an answer says
    /// exactly which code and settings made it.
    fn stage_provenance(&self) -> serde_json::Value {
        let stages: Vec<serde_json::Value> = self
            .stages
            .iter()
            .zip(&self.manifest.stages)
            .map(|(p, s)| {
                serde_json::json!({
                    "stage": s.name,
                    "kind": s.kind.as_str(),
                    "plugin": s.plugin.file_name().map(|f| f.to_string_lossy().into_owned()),
                    "digest": p.digest,
                    "config": config_hash(&s.config),
                    "index": s.index,
                })
            })
            .collect();
        serde_json::Value::Array(stages)
    }
}

/// A short SHA-256 of a stage's config (sorted keys).
fn config_hash(config: &std::collections::BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in config {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([1]);
    }
    hex::encode(&h.finalize()[..12])
}

/// Metadata key under which an index reports where a chunk's document
/// version came from (`topic/partition@offset`), when it knows.
pub const SOURCE_META: &str = "_source";

/// The provenance of an answered question: the stages, and for each cited
/// chunk its document, a SHA-256 of the text the prompt was given, and the
/// document version's source when the index reports it.
fn answer_provenance(
    stages: &serde_json::Value,
    q: &crate::record::QuestionState,
) -> serde_json::Value {
    use sha2::{Digest, Sha256};
    let cited: Vec<serde_json::Value> = q
        .answer
        .iter()
        .flat_map(|a| a.citations.iter())
        .map(|c| {
            let hit = q.hits.iter().find(|h| h.chunk_id == c.chunk_id);
            let text_sha256 = hit.map(|h| hex::encode(&Sha256::digest(h.text.as_bytes())[..16]));
            let source = hit.and_then(|h| {
                h.metadata
                    .iter()
                    .find(|m| m.key == SOURCE_META)
                    .map(|m| m.value.clone())
            });
            serde_json::json!({
                "chunk_id": c.chunk_id,
                "doc_id": c.doc_id,
                "text_sha256": text_sha256,
                "source": source,
            })
        })
        .collect();
    serde_json::json!({"stages": stages, "cited": cited})
}

/// Runs one stage's plugin over `items`.
fn run_stage(
    p: &mut StagePlugin,
    dim: &mut Option<u32>,
    items: Vec<Item>,
    reuse: Option<&dyn DocumentSink>,
    dl: &mut Vec<DeadLetter>,
) -> Vec<Item> {
    match p.kind {
        StageKind::Chunker => run_chunker(p, items, dl),
        StageKind::Embedder => run_embedder(p, dim, items, reuse, dl),
        StageKind::Retriever | StageKind::PromptBuilder | StageKind::Generator => {
            run_per_question(p, items, dl)
        }
        StageKind::Transform => run_transform(p, items, dl),
    }
}

/// Splits `items` into contiguous parts, one per instance (`first` and
/// `replicas`), runs them on as many threads, and joins the outputs and
/// dead letters back in input order. The replicas' call counts are added
/// to `first`'s, so a stage reports one set of figures.
fn run_parallel(
    first: &mut StagePlugin,
    replicas: &mut [StagePlugin],
    dim: &mut Option<u32>,
    items: Vec<Item>,
    reuse: Option<&dyn DocumentSink>,
    dl: &mut Vec<DeadLetter>,
) -> Vec<Item> {
    let n = (replicas.len() + 1).min(items.len());
    let per = items.len().div_ceil(n);
    let mut parts: Vec<Vec<Item>> = Vec::with_capacity(n);
    let mut rest = items;
    while !rest.is_empty() {
        let tail = rest.split_off(per.min(rest.len()));
        parts.push(std::mem::replace(&mut rest, tail));
    }
    for r in replicas.iter_mut() {
        first.absorb(r);
    }
    let known = *dim;
    let results: Vec<(Vec<Item>, Vec<DeadLetter>, Option<u32>)> = std::thread::scope(|scope| {
        let plugins = std::iter::once(&mut *first).chain(replicas.iter_mut());
        let handles: Vec<_> = parts
            .into_iter()
            .zip(plugins)
            .map(|(part, p)| {
                scope.spawn(move || {
                    let mut d = known;
                    let mut dead = Vec::new();
                    let out = run_stage(p, &mut d, part, reuse, &mut dead);
                    (out, dead, d)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                // A panic in our own stage code is a bug; surface it.
                Err(e) => std::panic::resume_unwind(e),
            })
            .collect()
    });
    let mut out = Vec::new();
    for (items, dead, d) in results {
        out.extend(items);
        dl.extend(dead);
        if dim.is_none() {
            *dim = d;
        }
    }
    for r in replicas.iter_mut() {
        first.absorb(r);
    }
    out
}

/// In a question pipeline, what a transform returns must be a question
/// again: decoded right away, so the next stages (and the timings) see it.
fn questions_again(stage: &str, items: Vec<Item>, dead: &mut Vec<DeadLetter>) -> Vec<Item> {
    let mut out = Vec::with_capacity(items.len());
    for mut item in items {
        let decoded = match &item.payload {
            Payload::Raw(Some(v)) => decode_question(item.key.as_deref(), v).map_err(|e| e.0),
            Payload::Raw(None) => Err("a tombstone".to_string()),
            _ => {
                out.push(item);
                continue;
            }
        };
        match decoded {
            Ok(q) => {
                item.payload = Payload::Question(q);
                out.push(item);
            }
            Err(m) => dead.push(DeadLetter {
                item,
                stage: stage.to_string(),
                failure: Failure::new(
                    FailureKind::BadOutput,
                    format!("the transform's output is not a question: {m}"),
                ),
            }),
        }
    }
    out
}

/// Calls `call` on the whole batch; if the call itself fails (trap, limit),
/// replays the items one by one so only the culprit fails. Items failing with
/// a transient error are retried with exponential backoff.
fn isolate<I, O>(
    p: &mut StagePlugin,
    inputs: &[I],
    mut call: impl FnMut(&mut StagePlugin, &[I]) -> Result<Vec<Result<O, Failure>>, Failure>,
) -> Vec<Result<O, Failure>> {
    let mut results: Vec<Result<O, Failure>> = if inputs.len() == 1 {
        vec![call_one(p, &inputs[0], &mut call)]
    } else {
        match call(p, inputs) {
            Ok(rs) if rs.len() == inputs.len() => rs,
            Ok(rs) => {
                // Which result belongs to which input is unknown, so none is
                // trusted: each input is replayed alone, as after a trap,
                // and only one that still gets a wrong count fails.
                tracing::warn!(
                    stage = %p.name,
                    "returned {} results for {} inputs; replaying them one by one",
                    rs.len(),
                    inputs.len()
                );
                inputs.iter().map(|i| call_one(p, i, &mut call)).collect()
            }
            Err(f) => {
                tracing::debug!(stage = %p.name, "batch of {} failed ({f}); isolating", inputs.len());
                inputs.iter().map(|i| call_one(p, i, &mut call)).collect()
            }
        }
    };
    // Only the inputs that failed transiently are retried, so the loop is
    // ours; the delays (0.1 s, x4 each time) come from backon.
    let delays = ExponentialBuilder::default()
        .with_min_delay(TRANSIENT_BACKOFF)
        .with_factor(4.0)
        .with_max_times(TRANSIENT_RETRIES as usize)
        .build();
    for delay in delays {
        let retry: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Err(f) if f.kind == FailureKind::Transient))
            .map(|(i, _)| i)
            .collect();
        if retry.is_empty() {
            break;
        }
        p.metrics().retried(retry.len() as u64);
        std::thread::sleep(delay);
        for i in retry {
            results[i] = call_one(p, &inputs[i], &mut call);
        }
    }
    for r in results.iter_mut() {
        if let Err(f) = r {
            if f.kind == FailureKind::Transient {
                f.message = format!("{} (after {TRANSIENT_RETRIES} retries)", f.message);
            }
        }
    }
    results
}

/// Calls a batch function with a single input.
fn call_one<I, O>(
    p: &mut StagePlugin,
    i: &I,
    call: &mut impl FnMut(&mut StagePlugin, &[I]) -> Result<Vec<Result<O, Failure>>, Failure>,
) -> Result<O, Failure> {
    match call(p, std::slice::from_ref(i)) {
        Ok(mut rs) if rs.len() == 1 => rs
            .pop()
            .unwrap_or_else(|| Err(Failure::new(FailureKind::BadOutput, "no result returned"))),
        Ok(rs) => Err(Failure::new(
            FailureKind::BadOutput,
            format!("returned {} results for 1 input", rs.len()),
        )),
        Err(f) => Err(f),
    }
}

fn text_size(s: &str) -> u64 {
    s.len() as u64
}

fn meta_size(m: &[types::Meta]) -> u64 {
    m.iter().map(|m| (m.key.len() + m.value.len()) as u64).sum()
}

fn dead(dead: &mut Vec<DeadLetter>, p: &StagePlugin, item: Item, failure: Failure) {
    tracing::debug!(stage = %p.name, origin = ?item.origin.offset, "dead letter: {failure}");
    dead.push(DeadLetter {
        item,
        stage: p.name.clone(),
        failure,
    });
}

fn run_chunker(p: &mut StagePlugin, items: Vec<Item>, dl: &mut Vec<DeadLetter>) -> Vec<Item> {
    let mut out = Vec::new();
    let mut todo: Vec<(Item, types::Document)> = Vec::new();
    for item in items {
        let doc = match &item.payload {
            Payload::Document(d) => Ok(d.clone()),
            Payload::Raw(Some(v)) => decode_document(item.key.as_deref(), v).map_err(|e| e.0),
            Payload::Delete(_) => {
                out.push(item);
                continue;
            }
            Payload::Raw(None) => match item.key.as_deref().map(std::str::from_utf8) {
                Some(Ok(id)) => {
                    let id = id.to_string();
                    let mut item = item;
                    item.payload = Payload::Delete(id);
                    out.push(item);
                    continue;
                }
                _ => Err("a tombstone needs a UTF-8 key naming the document".to_string()),
            },
            _ => Err("a chunker takes documents".to_string()),
        };
        match doc {
            Ok(d) => todo.push((item, d)),
            Err(m) => dead(dl, p, item, Failure::new(FailureKind::BadRecord, m)),
        }
    }
    if todo.is_empty() {
        return out;
    }
    let docs: Vec<types::Document> = todo.iter().map(|(_, d)| d.clone()).collect();
    let results = isolate(p, &docs, |p, slice| p.chunk(slice));
    for ((item, doc), r) in todo.into_iter().zip(results) {
        match r {
            Ok(chunks) => {
                let size: u64 = chunks
                    .iter()
                    .map(|c| text_size(&c.text) + text_size(&c.id) + meta_size(&c.metadata))
                    .sum();
                if let Some(f) = output_over_cap(&p.limits, chunks.len(), size) {
                    dead(dl, p, item, f);
                    continue;
                }
                if let Some(bad) = chunks.iter().find(|c| c.doc_id != doc.id) {
                    let msg = format!(
                        "chunk `{}` names doc `{}` but came from doc `{}`",
                        bad.id, bad.doc_id, doc.id
                    );
                    dead(dl, p, item, Failure::new(FailureKind::BadOutput, msg));
                    continue;
                }
                if chunks.is_empty() {
                    // A version with nothing to index replaces the old
                    // version's chunks with none: downstream, a deletion.
                    let mut item = item;
                    item.key = Some(doc.id.clone().into_bytes());
                    item.payload = Payload::Delete(doc.id);
                    out.push(item);
                    continue;
                }
                for c in chunks {
                    out.push(Item {
                        key: Some(c.id.clone().into_bytes()),
                        headers: item.headers.clone(),
                        timestamp: item.timestamp,
                        origin: item.origin.clone(),
                        payload: Payload::Chunk(EmbeddedChunk {
                            chunk: c,
                            vector: None,
                        }),
                    });
                }
            }
            Err(f) => dead(dl, p, item, f),
        }
    }
    out
}

fn check_vector(v: &[f32], dim: Option<u32>) -> Result<(), Failure> {
    if let Some(d) = dim {
        if v.len() != d as usize {
            return Err(Failure::new(
                FailureKind::BadOutput,
                format!(
                    "vector has dimension {} but the embedder declared {d}",
                    v.len()
                ),
            ));
        }
    }
    if v.is_empty() || v.iter().any(|x| !x.is_finite()) {
        return Err(Failure::new(
            FailureKind::BadOutput,
            "vector is empty or has a non-finite value",
        ));
    }
    // Cosine similarity divides by the norm: a zero or denormal norm makes
    // every score 1.0 or NaN, and components near f32::MAX overflow the
    // squares. The norm is computed in f64 so the check itself cannot
    // overflow.
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let squares_fit = v.iter().all(|x| x.abs() < 1e18);
    if !(norm.is_normal() && norm as f32 > f32::MIN_POSITIVE && squares_fit) {
        return Err(Failure::new(
            FailureKind::BadOutput,
            format!("vector norm {norm:e} cannot be scored by cosine similarity (zero, denormal or overflowing)"),
        ));
    }
    Ok(())
}

/// Vectors already in the index for chunks whose text has not changed, by
/// chunk id (looked up once per document of the batch).
fn reusable(
    sink: &dyn DocumentSink,
    items: &[(Item, String)],
) -> std::collections::HashMap<String, Vec<f32>> {
    // Keyed by chunk id + text: only an identical text may reuse a vector.
    let mut out = std::collections::HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for (item, _) in items {
        let Payload::Chunk(c) = &item.payload else {
            continue;
        };
        if seen.insert(c.chunk.doc_id.clone()) {
            match sink.reusable_vectors(&c.chunk.doc_id) {
                Ok(stored) => {
                    for (chunk_id, (t, v)) in stored {
                        out.insert(format!("{chunk_id}\u{0}{t}"), v);
                    }
                }
                // Not fatal: the chunk is simply embedded again.
                Err(e) => tracing::warn!("looking up stored vectors: {e}"),
            }
        }
    }
    out
}

fn run_embedder(
    p: &mut StagePlugin,
    dim: &mut Option<u32>,
    items: Vec<Item>,
    reuse: Option<&dyn DocumentSink>,
    dl: &mut Vec<DeadLetter>,
) -> Vec<Item> {
    if dim.is_none() {
        match p.dimension() {
            Ok(d) => *dim = Some(d),
            Err(f) => {
                for item in items {
                    dead(dl, p, item, f.clone());
                }
                return Vec::new();
            }
        }
    }
    let mut out = Vec::new();
    let mut todo: Vec<(Item, String)> = Vec::new();
    for mut item in items {
        if let Payload::Raw(Some(v)) = &item.payload {
            let decoded = if looks_like_chunk(v) {
                decode_chunk(v).map(Payload::Chunk)
            } else {
                decode_question(item.key.as_deref(), v).map(Payload::Question)
            };
            match decoded {
                Ok(pl) => item.payload = pl,
                Err(e) => {
                    dead(dl, p, item, Failure::new(FailureKind::BadRecord, e.0));
                    continue;
                }
            }
        }
        let text = match &item.payload {
            Payload::Chunk(c) => c.chunk.text.clone(),
            Payload::Question(q) => q.question.text.clone(),
            Payload::Delete(_) => {
                out.push(item);
                continue;
            }
            _ => {
                let f = Failure::new(
                    FailureKind::BadRecord,
                    "an embedder takes chunks or questions",
                );
                dead(dl, p, item, f);
                continue;
            }
        };
        todo.push((item, text));
    }
    // Vectors the index already holds for unchanged chunk texts; the rest
    // goes to the plugin. Items keep their order either way.
    let mut known: Vec<Option<Vec<f32>>> = vec![None; todo.len()];
    if let Some(sink) = reuse {
        let stored = reusable(sink, &todo);
        for ((item, text), slot) in todo.iter().zip(known.iter_mut()) {
            if let Payload::Chunk(c) = &item.payload {
                *slot = stored
                    .get(&format!("{}\u{0}{text}", c.chunk.id))
                    .filter(|v| Some(v.len() as u32) == *dim)
                    .cloned();
            }
        }
        p.stats.reused += known.iter().filter(|k| k.is_some()).count() as u64;
    }
    let texts: Vec<String> = todo
        .iter()
        .zip(&known)
        .filter(|(_, k)| k.is_none())
        .map(|((_, t), _)| t.clone())
        .collect();
    let d = *dim;
    let mut results = if texts.is_empty() {
        Vec::new()
    } else {
        isolate(p, &texts, |p, slice| match p.embed(slice)? {
            Ok(vs) => Ok(vs.into_iter().map(Ok).collect()),
            // The batch is all-or-nothing: isolate the bad text by replaying singly.
            Err(e) if slice.len() > 1 => Err(Failure::from(e)),
            Err(e) => Ok(vec![Err(Failure::from(e))]),
        })
    }
    .into_iter();
    for ((mut item, _), k) in todo.into_iter().zip(known) {
        let r = match k {
            Some(v) => Ok(v),
            None => match results.next() {
                Some(r) => r.and_then(|v| {
                    check_vector(&v, d)?;
                    if let Some(f) = output_over_cap(&p.limits, 1, v.len() as u64 * 4) {
                        return Err(f);
                    }
                    Ok(v)
                }),
                None => Err(Failure::new(
                    FailureKind::Internal,
                    "missing embedding result",
                )),
            },
        };
        match r {
            Ok(v) => {
                match &mut item.payload {
                    Payload::Chunk(c) => c.vector = Some(v),
                    Payload::Question(q) => q.vector = Some(v),
                    _ => {}
                }
                out.push(item);
            }
            Err(f) => dead(dl, p, item, f),
        }
    }
    out
}

/// Retriever, prompt builder and generator: one call per question, each
/// isolated by construction.
fn run_per_question(p: &mut StagePlugin, items: Vec<Item>, dl: &mut Vec<DeadLetter>) -> Vec<Item> {
    let mut out = Vec::new();
    for mut item in items {
        if let Payload::Raw(Some(v)) = &item.payload {
            match decode_question(item.key.as_deref(), v) {
                Ok(q) => item.payload = Payload::Question(q),
                Err(e) => {
                    dead(dl, p, item, Failure::new(FailureKind::BadRecord, e.0));
                    continue;
                }
            }
        }
        if !matches!(item.payload, Payload::Question(_)) {
            let f = Failure::new(
                FailureKind::BadRecord,
                format!("a {} takes questions", p.kind),
            );
            dead(dl, p, item, f);
            continue;
        }
        let on_stale = match read_requirement(p, &item.headers) {
            Ok(r) => r,
            Err(f) => {
                dead(dl, p, item, f);
                continue;
            }
        };
        let Payload::Question(q) = &mut item.payload else {
            continue;
        };
        let t0 = Instant::now();
        let r = run_question_stage(p, q, item.timestamp).and_then(|()| record_read(p, q, on_stale));
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if p.kind == StageKind::Generator {
            // The answer stream ends with the question's fate: its answer
            // as accepted, or why it is dead-lettered.
            match (&r, &q.answer) {
                (Ok(()), Some(a)) => p.finish_stream(Ok(&a.text)),
                (Err(f), _) => p.finish_stream(Err(&f.to_string())),
                (Ok(()), None) => p.finish_stream(Err("no answer")),
            }
        }
        match r {
            Ok(()) => {
                q.timings.push((p.name.clone(), ms));
                out.push(item);
            }
            Err(f) => dead(dl, p, item, f),
        }
    }
    out
}

/// For a retriever: sets the question's read-your-writes requirement (its
/// `weft.min-offsets` header, waited for up to the stage's
/// `min_offsets_timeout_ms`) on the plugin, and returns what to do if it
/// times out (`on_stale`). Other stages: nothing.
fn read_requirement(
    p: &mut StagePlugin,
    headers: &[(String, Vec<u8>)],
) -> Result<Option<OnStale>, Failure> {
    if p.kind != StageKind::Retriever {
        return Ok(None);
    }
    let bad = |m: String| Failure::new(FailureKind::BadRecord, m);
    let need = match headers
        .iter()
        .rev()
        .find(|(k, _)| k == freshness::MIN_OFFSETS_HEADER)
    {
        Some((_, v)) => freshness::parse_min_offsets(v).map_err(|e| bad(e.to_string()))?,
        None => {
            p.set_read_after(None);
            return Ok(None);
        }
    };
    let wait = match p.config_value(freshness::TIMEOUT_KEY) {
        None => freshness::DEFAULT_WAIT,
        Some(v) => {
            Duration::from_millis(v.trim().trim_matches('"').parse::<u64>().map_err(|_| {
                Failure::new(
                    FailureKind::Config,
                    format!(
                        "config `{}` must be milliseconds, not {v:?}",
                        freshness::TIMEOUT_KEY
                    ),
                )
            })?)
        }
    };
    let on_stale = match p
        .config_value(freshness::ON_STALE_KEY)
        .map(|v| v.trim().trim_matches('"'))
    {
        None | Some("flag") => OnStale::Flag,
        Some("dead-letter") => OnStale::DeadLetter,
        Some(v) => {
            return Err(Failure::new(
                FailureKind::Config,
                format!(
                    "config `{}` must be \"flag\" or \"dead-letter\", not {v:?}",
                    freshness::ON_STALE_KEY
                ),
            ))
        }
    };
    p.set_read_after(Some(ReadRequirement { need, wait }));
    Ok(Some(on_stale))
}

/// After a retriever call: puts what its index search read at on the
/// question (the answer's `index_read`), and dead-letters a question whose
/// requirement timed out when the stage says `on_stale = "dead-letter"`.
fn record_read(
    p: &mut StagePlugin,
    q: &mut QuestionState,
    on_stale: Option<OnStale>,
) -> Result<(), Failure> {
    if p.kind != StageKind::Retriever {
        return Ok(());
    }
    p.set_read_after(None);
    let Some(read) = p.take_last_read() else {
        return Ok(());
    };
    if read.stale && on_stale == Some(OnStale::DeadLetter) {
        return Err(Failure::new(
            FailureKind::Stale,
            format!(
                "stale: the index had not applied {} within {} ms (it had {}); on_stale = \"dead-letter\"",
                freshness::offsets_json(&read.required),
                read.waited.as_millis(),
                freshness::offsets_json(&read.watermarks)
            ),
        ));
    }
    let mut o = serde_json::Map::new();
    o.insert(
        "watermarks".into(),
        freshness::offsets_json(&read.watermarks),
    );
    if !read.required.is_empty() {
        o.insert("required".into(), freshness::offsets_json(&read.required));
        o.insert("stale".into(), serde_json::Value::Bool(read.stale));
        o.insert(
            "waited_ms".into(),
            serde_json::json!((read.waited.as_secs_f64() * 1e4).round() / 10.0),
        );
    }
    q.index_read = Some(serde_json::Value::Object(o));
    Ok(())
}

fn run_question_stage(
    p: &mut StagePlugin,
    q: &mut QuestionState,
    origin_ms: Option<i64>,
) -> Result<(), Failure> {
    let one = std::slice::from_ref(&*q);
    match p.kind {
        StageKind::Retriever => {
            let Some(vector) = q.vector.clone() else {
                return Err(Failure::new(
                    FailureKind::BadRecord,
                    "the question has no vector: put an embedder before the retriever",
                ));
            };
            let mut r = isolate(p, one, |p, s| {
                Ok(vec![p
                    .retrieve(&s[0].question, &vector)?
                    .map_err(Failure::from)])
            });
            let hits = r.pop().unwrap_or_else(|| Err(missing()))?;
            let size: u64 = hits
                .iter()
                .map(|h| text_size(&h.text) + meta_size(&h.metadata))
                .sum();
            if let Some(f) = output_over_cap(&p.limits, hits.len(), size) {
                return Err(f);
            }
            q.hits = hits;
        }
        StageKind::PromptBuilder => {
            let mut r = isolate(p, one, |p, s| {
                Ok(vec![p
                    .build_prompt(&s[0].question, &s[0].hits)?
                    .map_err(Failure::from)])
            });
            let msgs = r.pop().unwrap_or_else(|| Err(missing()))?;
            let size: u64 = msgs.iter().map(|m| text_size(&m.content)).sum();
            if let Some(f) = output_over_cap(&p.limits, msgs.len(), size) {
                return Err(f);
            }
            q.messages = msgs;
        }
        StageKind::Generator => {
            let mut r = isolate(p, one, |p, s| {
                Ok(vec![p
                    .generate(&s[0].question, &s[0].messages, &s[0].hits, origin_ms)?
                    .map_err(Failure::from)])
            });
            let answer = r.pop().unwrap_or_else(|| Err(missing()))?;
            if let Some(f) = output_over_cap(&p.limits, 1, text_size(&answer.text)) {
                return Err(f);
            }
            q.answer = Some(answer);
        }
        other => {
            return Err(Failure::new(
                FailureKind::Internal,
                format!("{other} is not a question stage"),
            ))
        }
    }
    Ok(())
}

fn missing() -> Failure {
    Failure::new(FailureKind::BadOutput, "no result returned")
}

fn run_transform(p: &mut StagePlugin, items: Vec<Item>, dl: &mut Vec<DeadLetter>) -> Vec<Item> {
    let records: Vec<types::Record> = items
        .iter()
        .map(|it| types::Record {
            key: it.key.clone(),
            value: it.payload.to_value_bytes(),
            headers: it
                .headers
                .iter()
                .map(|(k, v)| types::Header {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        })
        .collect();
    let results = isolate(p, &records, |p, slice| {
        p.transform(slice)
            .map(|rs| rs.into_iter().map(|r| r.map_err(Failure::from)).collect())
    });
    let mut out = Vec::new();
    for (item, r) in items.into_iter().zip(results) {
        match r {
            Ok(recs) => {
                let size: u64 = recs
                    .iter()
                    .map(|r| {
                        (r.key.as_ref().map_or(0, Vec::len)
                            + r.value.as_ref().map_or(0, Vec::len)
                            + r.headers
                                .iter()
                                .map(|h| h.key.len() + h.value.len())
                                .sum::<usize>()) as u64
                    })
                    .sum();
                if let Some(f) = output_over_cap(&p.limits, recs.len(), size) {
                    dead(dl, p, item, f);
                    continue;
                }
                for r in recs {
                    out.push(Item {
                        key: r.key,
                        headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
                        timestamp: item.timestamp,
                        origin: item.origin.clone(),
                        payload: Payload::Raw(r.value),
                    });
                }
            }
            Err(f) => dead(dl, p, item, f),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_that_cosine_cannot_score_are_refused() {
        assert!(check_vector(&[0.6, 0.8], Some(2)).is_ok());
        for bad in [
            vec![0.0, 0.0],
            vec![f32::from_bits(1), 0.0],
            vec![f32::MAX, 1.0],
            vec![f32::NAN, 1.0],
            vec![],
        ] {
            let e = check_vector(&bad, None).expect_err("refused");
            assert_eq!(e.kind, FailureKind::BadOutput, "{bad:?}: {e}");
        }
        assert!(check_vector(&[1.0], Some(2)).is_err(), "wrong dimension");
    }
}

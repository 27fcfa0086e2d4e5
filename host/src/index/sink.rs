//! The index sink: turns a processed batch into document operations, applies
//! them in one transaction, and says which records could not be indexed.
//!
//! One source record (a document version or a tombstone) becomes exactly one
//! operation, so a new version replaces *all* chunks of the old one. A
//! document is indexed whole or not at all: if any of its chunks failed in a
//! stage (and went to the dead-letter topic with the original record), the
//! index keeps the previous version rather than a partial new one.
//!
//! The tenant's index quota (documents, bytes) is checked once per batch,
//! before it is applied: upserts over it become `quota-exceeded` dead
//! letters, while deletes always go through (they free what the quota
//! counts). The byte figure is LMDB's pages in use before the batch, so an
//! index can go past `max_index_mb` by at most one batch.

use super::{ChunkIn, DocOp, IndexError, IndexQuota, VectorIndex};
use crate::pipeline::{BatchOutcome, DeadLetter, DocumentSink, SinkError, SinkReport};
use crate::record::{Item, Payload};
use crate::runtime::{Failure, FailureKind};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a source record sits: (topic, partition, offset).
type OriginKey = (String, i32, i64);

fn origin_key(it: &Item) -> OriginKey {
    (
        it.origin.topic.clone(),
        it.origin.partition,
        it.origin.offset,
    )
}

/// The name dead letters of the sink carry as their stage.
pub const SINK_STAGE: &str = "index-sink";

fn sink_dead(item: &Item, kind: FailureKind, message: String) -> DeadLetter {
    DeadLetter {
        item: item.clone(),
        stage: SINK_STAGE.to_string(),
        failure: Failure::new(kind, message),
    }
}

/// Groups a batch's outputs into one operation per source record.
fn plan(
    outcome: &BatchOutcome,
    model: Option<&str>,
    dead: &mut Vec<DeadLetter>,
) -> Vec<(DocOp, Item)> {
    let failed: HashSet<OriginKey> = outcome.dead.iter().map(|d| origin_key(&d.item)).collect();
    let mut groups: BTreeMap<OriginKey, (Option<DocOp>, Item, Option<String>)> = BTreeMap::new();
    for it in &outcome.outputs {
        let key = origin_key(it);
        if failed.contains(&key) {
            continue;
        }
        let entry = groups
            .entry(key)
            .or_insert_with(|| (None, it.clone(), None));
        if entry.2.is_some() {
            continue;
        }
        let problem = match (&it.payload, &mut entry.0) {
            (Payload::Delete(id), slot @ None) => {
                *slot = Some(DocOp::Delete { doc_id: id.clone() });
                None
            }
            (Payload::Chunk(c), slot) => match &c.vector {
                None => Some(
                    "a chunk without a vector reached the index sink; put an embedder stage before it"
                        .to_string(),
                ),
                Some(v) => {
                    let chunk = ChunkIn {
                        chunk_id: c.chunk.id.clone(),
                        text: c.chunk.text.clone(),
                        metadata: c
                            .chunk
                            .metadata
                            .iter()
                            .map(|m| (m.key.clone(), m.value.clone()))
                            .collect(),
                        vector: v.clone(),
                        model: model.map(str::to_string),
                        source: Some(format!(
                            "{}/{}@{}",
                            it.origin.topic, it.origin.partition, it.origin.offset
                        )),
                    };
                    match slot {
                        None => {
                            *slot = Some(DocOp::Upsert {
                                doc_id: c.chunk.doc_id.clone(),
                                chunks: vec![chunk],
                            });
                            None
                        }
                        Some(DocOp::Upsert { doc_id, chunks }) if *doc_id == c.chunk.doc_id => {
                            chunks.push(chunk);
                            None
                        }
                        Some(_) => Some(format!(
                            "one record produced chunks of several documents (`{}` and others); the index sink needs one document per record",
                            c.chunk.doc_id
                        )),
                    }
                }
            },
            (Payload::Delete(_), Some(_)) => {
                Some("one record produced both a deletion and chunks".to_string())
            }
            (Payload::Document(_), _) | (Payload::Raw(_), _) => Some(
                "the index sink takes embedded chunks or tombstones, got a document; add a chunker and an embedder"
                    .to_string(),
            ),
            (Payload::Question(_), _) => {
                Some("the index sink takes embedded chunks, got a question".to_string())
            }
        };
        if let Some(p) = problem {
            entry.2 = Some(p);
        }
    }
    let mut ops = Vec::with_capacity(groups.len());
    for (_, (op, item, problem)) in groups {
        match (op, problem) {
            (_, Some(p)) => dead.push(sink_dead(&item, FailureKind::BadRecord, p)),
            (Some(op), None) => ops.push((op, item)),
            (None, None) => {}
        }
    }
    ops
}

/// The highest source offset per (topic, partition) among the batch's
/// records (outputs and dead letters): the index's watermark after this
/// batch. It says the index has *processed* every record up to it: a
/// version that was dead-lettered (the index kept the previous one) counts
/// as processed, since it will never be applied; its dead letter says why.
/// A batch's last record that produced nothing at all moves no watermark
/// until a later batch does.
fn watermarks(outcome: &BatchOutcome) -> Vec<(String, i32, i64)> {
    let mut high: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let items = outcome
        .outputs
        .iter()
        .chain(outcome.dead.iter().map(|d| &d.item));
    for it in items {
        // Only Kafka topics (`weft run --input` gives the input file's path
        // and line; a path in every answer's watermarks would say nothing a
        // question could require).
        let kafka_name = it
            .origin
            .topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if it.origin.topic.is_empty() || !kafka_name || it.origin.offset < 0 {
            continue;
        }
        let e = high
            .entry((it.origin.topic.clone(), it.origin.partition))
            .or_insert(it.origin.offset);
        *e = (*e).max(it.origin.offset);
    }
    high.into_iter().map(|((t, p), o)| (t, p, o)).collect()
}

/// A tenant's index as a pipeline's sink, with the fingerprint of the
/// embedder whose vectors it stores.
pub struct IndexSink {
    pub index: Arc<VectorIndex>,
    pub model: Option<String>,
    /// The tenant's index quota, checked per batch.
    pub quota: IndexQuota,
}

impl DocumentSink for IndexSink {
    fn write(&self, outcome: &BatchOutcome) -> Result<SinkReport, SinkError> {
        write_within(&self.index, outcome, self.model.as_deref(), &self.quota)
            .map_err(SinkError::new)
    }

    fn reusable_vectors(
        &self,
        doc_id: &str,
    ) -> Result<HashMap<String, (String, Vec<f32>)>, SinkError> {
        match &self.model {
            Some(m) => self
                .index
                .reusable_vectors(doc_id, m)
                .map_err(SinkError::new),
            None => Ok(HashMap::new()),
        }
    }

    fn describe(&self) -> String {
        self.index.dir().display().to_string()
    }
}

/// Writes a batch's outputs to `index`. Returns an error only when the index
/// itself failed (the batch must then not be committed); per-record
/// problems come back as dead letters. `model` fingerprints the embedder
/// that made the vectors.
pub fn write(
    index: &VectorIndex,
    outcome: &BatchOutcome,
    model: Option<&str>,
) -> Result<SinkReport, IndexError> {
    write_within(index, outcome, model, &IndexQuota::unlimited())
}

/// Keeps the upserts `quota` allows, dead-lettering the others. New
/// documents are admitted in order while the index has room for them;
/// versions of documents it holds add none. All upserts are refused once
/// the index's pages reach `max_bytes`.
fn admit(
    index: &VectorIndex,
    planned: Vec<(DocOp, Item)>,
    quota: &IndexQuota,
    dead: &mut Vec<DeadLetter>,
) -> Result<Vec<(DocOp, Item)>, IndexError> {
    let upserts = planned
        .iter()
        .filter(|(op, _)| matches!(op, DocOp::Upsert { .. }))
        .count() as u64;
    if upserts == 0 {
        return Ok(planned);
    }
    let usage = index.usage()?;
    let full = usage.bytes >= quota.max_bytes;
    let near = usage.documents.saturating_add(upserts) > quota.max_documents;
    if !full && !near {
        return Ok(planned);
    }
    // Only near the document limit is it worth asking which are new.
    let existing = if near && !full {
        index.existing_docs(planned.iter().filter_map(|(op, _)| match op {
            DocOp::Upsert { doc_id, .. } => Some(doc_id.as_str()),
            DocOp::Delete { .. } => None,
        }))?
    } else {
        HashSet::new()
    };
    let mut documents = usage.documents;
    let mut kept = Vec::with_capacity(planned.len());
    for (op, item) in planned {
        let refusal = match &op {
            DocOp::Delete { .. } => None,
            DocOp::Upsert { .. } if full => Some(format!(
                "index `{}` holds {} bytes, at its quota of {} MiB ({}); only deletes are accepted",
                index.dir().display(),
                usage.bytes,
                quota.max_bytes >> 20,
                quota.bytes_rule
            )),
            DocOp::Upsert { doc_id, .. } if existing.contains(doc_id) => None,
            DocOp::Upsert { doc_id, .. } if documents >= quota.max_documents => Some(format!(
                "index `{}` holds {documents} documents, its quota ({}); new document `{doc_id}` refused",
                index.dir().display(),
                quota.documents_rule
            )),
            DocOp::Upsert { .. } => {
                documents += 1;
                None
            }
        };
        match refusal {
            Some(reason) => dead.push(sink_dead(&item, FailureKind::QuotaExceeded, reason)),
            None => kept.push((op, item)),
        }
    }
    Ok(kept)
}

/// [`write`] within the tenant's index quota.
pub fn write_within(
    index: &VectorIndex,
    outcome: &BatchOutcome,
    model: Option<&str>,
    quota: &IndexQuota,
) -> Result<SinkReport, IndexError> {
    let mut res = SinkReport::default();
    let marks = watermarks(outcome);
    let planned = plan(outcome, model, &mut res.dead);
    let planned = admit(index, planned, quota, &mut res.dead)?;
    if planned.is_empty() {
        if !marks.is_empty() {
            index.apply_at(&[], &marks)?;
        }
        return Ok(res);
    }
    let ops: Vec<DocOp> = planned.iter().map(|(op, _)| op.clone()).collect();
    let report = index.apply_at(&ops, &marks)?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0);
    let rejected: HashSet<usize> = report.rejected.iter().map(|(i, _)| *i).collect();
    for (i, reason) in &report.rejected {
        let item = &planned[*i].1;
        res.dead
            .push(sink_dead(item, FailureKind::BadOutput, reason.clone()));
    }
    for (i, (_, item)) in planned.iter().enumerate() {
        if rejected.contains(&i) {
            continue;
        }
        if let Some(ts) = item.timestamp.filter(|t| *t > 0) {
            res.freshness_ms.push((now_ms - ts as f64).max(0.0));
        }
    }
    res.docs_upserted = report.applied.docs_upserted;
    res.docs_deleted = report.applied.docs_deleted;
    res.chunks_added = report.applied.items_added;
    res.chunks_removed = report.applied.items_removed;
    Ok(res)
}

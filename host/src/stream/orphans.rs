//! Chunk keys a topic sink has produced for each document, kept durably
//! (LMDB, one small environment per pipeline), so that a new version with
//! fewer chunks, or a document tombstone, also tombstones the chunk keys it
//! no longer has. Without it a compacted chunks topic keeps the old
//! `<doc>#<n>` values forever, and stores fed from it (the way users feed
//! vector-store sink connectors) serve deleted text.
//!
//! Order within a batch keeps this crash-safe: the tombstones are computed
//! from the stored keys, produced with the batch's outputs, the new keys are
//! stored only after the broker acknowledged everything, and only then are
//! the offsets committed. A crash before the store write replays and sends
//! the same tombstones again (idempotent); a crash after it replays with
//! nothing left to tombstone.

use super::{Result, StreamError};
use crate::record::{Item, Payload};
use heed::types::{SerdeJson, Str};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Address space of one pipeline's environment (a sparse file: only what
/// is written takes disk).
const MAP_SIZE: usize = 1 << 30;

/// The stored chunk keys of one pipeline's documents.
pub struct ChunkKeys {
    env: Env,
    db: Database<'static, Str, SerdeJson<Vec<String>>>,
}

/// What one batch changes: tombstones to produce, keys to store after.
#[derive(Debug, Default)]
pub struct Plan {
    /// `(key, timestamp)` of each chunk key to tombstone.
    pub tombstones: Vec<(Vec<u8>, Option<i64>)>,
    /// Document -> its keys now (`None`: the document is gone).
    updates: BTreeMap<String, Option<Vec<String>>>,
}

type OriginKey = (String, i32, i64);

fn origin(it: &Item) -> OriginKey {
    (
        it.origin.topic.clone(),
        it.origin.partition,
        it.origin.offset,
    )
}

impl ChunkKeys {
    pub fn open(dir: &Path) -> Result<ChunkKeys> {
        let io = |e| StreamError::io(format!("creating {}", dir.display()), e);
        std::fs::create_dir_all(dir).map_err(io)?;
        let lmdb =
            |e: heed::Error| StreamError::Broker(format!("chunk-key store {}: {e}", dir.display()));
        // SAFETY: the environment is opened once per pipeline of this
        // process, and no other code maps this directory.
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(MAP_SIZE)
                .max_dbs(1)
                .open(dir)
        }
        .map_err(lmdb)?;
        let w = env.write_txn().map_err(lmdb)?;
        let db = env
            .create_databases_and_commit(w, |dbo, w| -> heed::Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit(
                    dbo.create_database(w, Some("chunk-keys"))?,
                ))
            })
            .map_err(lmdb)?
            .unwrap_commit();
        Ok(ChunkKeys { env, db })
    }

    fn err(&self, e: heed::Error) -> StreamError {
        StreamError::Broker(format!(
            "chunk-key store {}: {e}",
            self.env.path().display()
        ))
    }

    /// The tombstones a batch needs, from its outputs (in source order).
    /// Source records that were dead-lettered in any part (`failed`) change
    /// nothing: their document keeps its previous version.
    pub fn plan(&self, outputs: &[Item], failed: &HashSet<OriginKey>) -> Result<Plan> {
        // Each source record's document and its new keys.
        let mut per_record: BTreeMap<OriginKey, (String, Vec<String>, Option<i64>)> =
            BTreeMap::new();
        for it in outputs {
            let o = origin(it);
            if failed.contains(&o) {
                continue;
            }
            let (doc, key) = match &it.payload {
                Payload::Chunk(c) => (
                    c.chunk.doc_id.clone(),
                    it.key
                        .as_deref()
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                ),
                Payload::Delete(doc) => (doc.clone(), None),
                _ => continue,
            };
            let e = per_record
                .entry(o)
                .or_insert_with(|| (doc, Vec::new(), it.timestamp));
            if let Some(k) = key {
                e.1.push(k);
            }
        }
        let mut plan = Plan::default();
        let r = self.env.read_txn().map_err(|e| self.err(e))?;
        for (doc, keys, ts) in per_record.into_values() {
            let old: Vec<String> = match plan.updates.get(&doc) {
                Some(v) => v.clone().unwrap_or_default(),
                None => self
                    .db
                    .get(&r, &doc)
                    .map_err(|e| self.err(e))?
                    .unwrap_or_default(),
            };
            let now: HashSet<&String> = keys.iter().collect();
            for k in old.iter().filter(|k| !now.contains(k)) {
                plan.tombstones.push((k.clone().into_bytes(), ts));
            }
            plan.updates.insert(doc, (!keys.is_empty()).then_some(keys));
        }
        Ok(plan)
    }

    /// Stores the keys of a batch whose outputs the broker acknowledged.
    pub fn record(&self, plan: Plan) -> Result<()> {
        if plan.updates.is_empty() {
            return Ok(());
        }
        let mut w = self.env.write_txn().map_err(|e| self.err(e))?;
        for (doc, keys) in plan.updates {
            match keys {
                Some(k) => self.db.put(&mut w, &doc, &k),
                None => self.db.delete(&mut w, &doc).map(|_| ()),
            }
            .map_err(|e| self.err(e))?;
        }
        w.commit().map_err(|e| self.err(e))
    }
}

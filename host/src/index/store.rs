//! The document store: chunk text, metadata and vectors by item id, the
//! chunks of every document, metadata filter bitmaps, and the *pending* list
//! of items the approximate (arroy) index has not caught up with yet.
//!
//! It lives in its own LMDB environment, apart from the arroy trees, so that
//! the stream's small, frequent writes never wait behind a long index build
//! (LMDB has one writer per environment).
//!
//! Item ids are `u32` (arroy's item id type), allocated from a counter and
//! never reused: an id still inside the arroy trees must not come back as a
//! different chunk before the next build removes it.

use super::keyword::{self, PostingChanges};
use super::lmdb::Lmdb;
use super::{ChunkIn, DocOp, IndexError};
use heed::byteorder::BE;
use heed::types::{Bytes, DecodeIgnore, SerdeJson, Str, U32};
use heed::{CommitOrAbort, Database, RoTxn, RwTxn};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

type Id = U32<BE>;

/// What the approximate index still has to learn about an item.
pub const PENDING_ADD: u8 = 1;
pub const PENDING_DEL: u8 = 2;

/// Metadata keys and values longer than this are not filterable (LMDB keys
/// are at most 511 bytes).
const MAX_FILTER_KEY: usize = 400;

/// A stored chunk, without its vector (kept apart, as raw f32s).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub chunk_id: String,
    pub doc_id: String,
    pub text: String,
    pub metadata: Vec<(String, String)>,
    /// Digest of text + metadata + vector: an unchanged chunk of a new
    /// document version keeps its item, so the index does no work for it.
    pub digest: String,
    /// Fingerprint of the embedder (component + config) that made the
    /// vector: a new version's unchanged chunk text reuses the vector only
    /// when the same embedder would make it.
    #[serde(default)]
    pub model: Option<String>,
    /// The document version's origin (see `ChunkIn::source`); not part of
    /// the digest, so an unchanged chunk of a new version keeps its item
    /// and only this is rewritten.
    #[serde(default)]
    pub source: Option<String>,
}

pub struct Store {
    pub lmdb: Lmdb,
    chunks: Database<'static, Id, SerdeJson<ChunkRecord>>,
    pub(super) vectors: Database<'static, Id, Bytes>,
    docs: Database<'static, Str, SerdeJson<Vec<u32>>>,
    /// Item -> `PENDING_ADD` followed by an int8 sketch of its vector
    /// (see `exact::sketch`; empty in indexes written before sketches), or
    /// `PENDING_DEL`.
    pub(super) pending: Database<'static, Id, Bytes>,
    filters: Database<'static, Str, Bytes>,
    meta: Database<'static, Str, Bytes>,
    /// Keyword postings, `keyword::block_key(term, block)` -> the postings
    /// of that block's items (see `keyword`). `None` only in an
    /// index written before the keyword side and opened read-only (the
    /// writer adds the table and fills it at open); it then has no
    /// keyword hits.
    postings: Option<Database<'static, Str, Bytes>>,
}

/// Meta key set once the postings hold every live chunk (one list per
/// term, the layout before blocks). Still written with the blocks: an
/// older binary that opens this index then skips its own backfill, which
/// would add lists in its layout and count the corpus totals twice.
const KEYWORD_READY: &str = "keyword";
/// Meta key set once the postings hold every live chunk in blocks; an
/// index without it is re-indexed at the writer's open.
const KEYWORD_BLOCKS: &str = "keyword-blocks";
/// Meta keys of the keyword corpus totals.
const KW_DOCS: &str = "kw_docs";
const KW_TOKENS: &str = "kw_tokens";
/// Prefix of the meta keys holding the applied-offset watermarks.
const WATERMARK: &str = "wm\u{0}";

/// What one applied batch changed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Applied {
    pub docs_upserted: u64,
    pub docs_deleted: u64,
    pub items_added: u64,
    pub items_removed: u64,
    pub items_unchanged: u64,
}

/// Items one `apply` added and removed.
#[derive(Debug, Default)]
pub struct Changes {
    pub added: Vec<(u32, Vec<f32>)>,
    pub removed: Vec<u32>,
    /// The keyword postings the same operations change.
    pub postings: PostingChanges,
}

/// The pending list at one moment, as the builder consumes it.
#[derive(Debug, Default)]
pub struct PendingSnapshot {
    pub adds: Vec<(u32, Vec<f32>)>,
    pub dels: Vec<u32>,
}

/// Bytes of a database's pages.
pub fn page_bytes(s: &heed::DatabaseStat) -> u64 {
    (s.branch_pages + s.leaf_pages + s.overflow_pages) as u64 * u64::from(s.page_size)
}

pub fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn bytes_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Puts a new item's record (chunk, vector, pending entry), which has the
/// highest id so far (ids only grow), with `MDB_APPEND`: LMDB then fills
/// pages instead of splitting them in half. Measured on 384-d vectors
/// (1.5 KB, two to a page): a plain put of ascending keys left one vector
/// per 4 KB page, 2.7x the vector's size. A key that is not the highest
/// (not expected) falls back to a plain put.
fn put_last<'a, T: heed::BytesEncode<'a> + 'static>(
    db: &Database<'static, Id, T>,
    wtxn: &mut RwTxn,
    id: &'a u32,
    value: &'a T::EItem,
) -> heed::Result<()> {
    match db.put_with_flags(wtxn, heed::PutFlags::APPEND, id, value) {
        Err(heed::Error::Mdb(heed::MdbError::KeyExist)) => db.put(wtxn, id, value),
        r => r,
    }
}

fn filter_key(k: &str, v: &str) -> Option<String> {
    (k.len() + v.len() < MAX_FILTER_KEY).then(|| format!("{k}\u{0}{v}"))
}

fn digest(c: &ChunkIn) -> String {
    let mut h = Sha256::new();
    h.update(c.chunk_id.as_bytes());
    h.update([0]);
    h.update(c.text.as_bytes());
    for (k, v) in &c.metadata {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([1]);
        h.update(v.as_bytes());
    }
    h.update([2]);
    h.update(vector_bytes(&c.vector));
    hex::encode(&h.finalize()[..12])
}

impl Store {
    pub fn open(dir: &Path, create: bool, initial_map: usize) -> Result<Store, IndexError> {
        let lmdb = Lmdb::open(dir, 8, create, initial_map)?;
        let path = lmdb.path.clone();
        let make = |e: heed::Error| IndexError::lmdb(&path, "opening databases", e);
        let dbs = if create {
            let wtxn = lmdb.env.write_txn().map_err(make)?;
            let created = lmdb
                .env
                .create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
                    Ok(CommitOrAbort::<_, ()>::Commit((
                        dbo.create_database(wtxn, Some("chunks"))?,
                        dbo.create_database(wtxn, Some("vectors"))?,
                        dbo.create_database(wtxn, Some("docs"))?,
                        dbo.create_database(wtxn, Some("pending"))?,
                        dbo.create_database(wtxn, Some("filters"))?,
                        dbo.create_database(wtxn, Some("meta"))?,
                        dbo.create_database(wtxn, Some("postings"))?,
                    )))
                })
                .map_err(make)?
                .unwrap_commit();
            let (a, b, c, d, e, f, g) = created;
            (a, b, c, d, e, f, Some(g))
        } else {
            let rtxn = lmdb.env.read_txn().map_err(make)?;
            let opened = lmdb
                .env
                .open_databases_and_commit(rtxn, |dbo, rtxn| -> heed::Result<_> {
                    Ok(CommitOrAbort::<_, ()>::Commit((
                        dbo.open_database(rtxn, Some("chunks"))?,
                        dbo.open_database(rtxn, Some("vectors"))?,
                        dbo.open_database(rtxn, Some("docs"))?,
                        dbo.open_database(rtxn, Some("pending"))?,
                        dbo.open_database(rtxn, Some("filters"))?,
                        dbo.open_database(rtxn, Some("meta"))?,
                        dbo.open_database(rtxn, Some("postings"))?,
                    )))
                })
                .map_err(make)?
                .unwrap_commit();
            match opened {
                (Some(a), Some(b), Some(c), Some(d), Some(e), Some(f), g) => (a, b, c, d, e, f, g),
                _ => {
                    return Err(IndexError::Corrupt {
                        path: dir.into(),
                        why: "missing databases".into(),
                    })
                }
            }
        };
        let (chunks, vectors, docs, pending, filters, meta, postings) = dbs;
        Ok(Store {
            lmdb,
            chunks,
            vectors,
            docs,
            pending,
            filters,
            meta,
            postings,
        })
    }

    fn err(&self, what: &'static str) -> impl Fn(heed::Error) -> IndexError + '_ {
        move |e| IndexError::lmdb(&self.lmdb.path, what, e)
    }

    fn meta_u32(&self, txn: &RoTxn, key: &str) -> Result<Option<u32>, IndexError> {
        Ok(self
            .meta
            .get(txn, key)
            .map_err(self.err("reading meta"))?
            .and_then(|b| b.try_into().ok().map(u32::from_be_bytes)))
    }

    pub fn dimension(&self, txn: &RoTxn) -> Result<Option<u32>, IndexError> {
        self.meta_u32(txn, "dimension")
    }

    pub fn meta_json(&self, txn: &RoTxn, key: &str) -> Result<Option<String>, IndexError> {
        Ok(self
            .meta
            .get(txn, key)
            .map_err(self.err("reading meta"))?
            .map(|b| String::from_utf8_lossy(b).into_owned()))
    }

    pub fn set_meta(&self, wtxn: &mut RwTxn, key: &str, value: &[u8]) -> Result<(), IndexError> {
        self.meta
            .put(wtxn, key, value)
            .map_err(self.err("writing meta"))
    }

    /// Applies document operations in order, in the caller's transaction.
    /// Operations must already be validated (dimension, finite vectors).
    /// The items added (with their vectors) and removed are pushed to
    /// `changes`, for the in-memory copy of pending vectors.
    pub fn apply(
        &self,
        wtxn: &mut RwTxn,
        ops: &[DocOp],
        changes: &mut Changes,
    ) -> Result<Applied, IndexError> {
        let mut applied = Applied::default();
        let mut next_id = self.meta_u32(wtxn, "next_id")?.unwrap_or(0);
        for op in ops {
            let doc_id = op.doc_id();
            let old: Vec<u32> = self
                .docs
                .get(wtxn, doc_id)
                .map_err(self.err("reading docs"))?
                .unwrap_or_default();
            match op {
                DocOp::Delete { .. } => {
                    for id in &old {
                        self.remove_item(wtxn, *id, &mut changes.postings)?;
                        changes.removed.push(*id);
                        applied.items_removed += 1;
                    }
                    if !old.is_empty() {
                        self.docs
                            .delete(wtxn, doc_id)
                            .map_err(self.err("deleting a doc"))?;
                    }
                    applied.docs_deleted += 1;
                }
                DocOp::Upsert { chunks, .. } => {
                    // Old items by digest, so unchanged chunks keep their item.
                    let mut keep: HashMap<String, u32> = HashMap::new();
                    for id in &old {
                        if let Some(r) = self.chunks.get(wtxn, id).map_err(self.err("reading"))? {
                            keep.insert(r.digest, *id);
                        }
                    }
                    let mut items = Vec::with_capacity(chunks.len());
                    for c in chunks {
                        let d = digest(c);
                        if let Some(id) = keep.remove(&d) {
                            // Same content, new version: only its origin moves.
                            if let Some(mut r) =
                                self.chunks.get(wtxn, &id).map_err(self.err("reading"))?
                            {
                                if r.source != c.source {
                                    r.source = c.source.clone();
                                    self.chunks
                                        .put(wtxn, &id, &r)
                                        .map_err(self.err("writing a chunk"))?;
                                }
                            }
                            items.push(id);
                            applied.items_unchanged += 1;
                            continue;
                        }
                        let id = next_id;
                        next_id = next_id
                            .checked_add(1)
                            .ok_or_else(|| IndexError::Full(self.lmdb.path.clone()))?;
                        self.add_item(wtxn, id, doc_id, c, d)?;
                        changes.postings.added(id, &c.text);
                        changes.added.push((id, c.vector.clone()));
                        items.push(id);
                        applied.items_added += 1;
                    }
                    for id in keep.into_values() {
                        self.remove_item(wtxn, id, &mut changes.postings)?;
                        changes.removed.push(id);
                        applied.items_removed += 1;
                    }
                    self.docs
                        .put(wtxn, doc_id, &items)
                        .map_err(self.err("writing docs"))?;
                    applied.docs_upserted += 1;
                }
            }
        }
        self.meta
            .put(wtxn, "next_id", &next_id.to_be_bytes())
            .map_err(self.err("writing meta"))?;
        self.write_postings(wtxn, &changes.postings)?;
        Ok(applied)
    }

    /// Applies a batch's posting changes, rewriting each touched block of
    /// each term once, and the corpus totals BM25 needs.
    pub fn write_postings(
        &self,
        wtxn: &mut RwTxn,
        changes: &PostingChanges,
    ) -> Result<(), IndexError> {
        let Some(db) = self.postings else {
            return Ok(());
        };
        let e = self.err("writing postings");
        for (term, block) in changes.blocks() {
            let key = keyword::block_key(&term, block);
            let merged = {
                let old = db.get(wtxn, &key).map_err(&e)?.unwrap_or(&[]);
                changes.merge(&term, block, old)
            };
            if merged.is_empty() {
                db.delete(wtxn, &key).map_err(&e)?;
            } else {
                db.put(wtxn, &key, &keyword::encode(&merged)).map_err(&e)?;
            }
        }
        if changes.docs_delta != 0 || changes.tokens_delta != 0 {
            let (docs, tokens) = self.keyword_totals(wtxn)?;
            let add = |a: u64, d: i64| a.saturating_add_signed(d);
            self.set_meta(wtxn, KW_DOCS, &add(docs, changes.docs_delta).to_be_bytes())?;
            self.set_meta(
                wtxn,
                KW_TOKENS,
                &add(tokens, changes.tokens_delta).to_be_bytes(),
            )?;
        }
        Ok(())
    }

    fn meta_u64(&self, txn: &RoTxn, key: &str) -> Result<Option<u64>, IndexError> {
        Ok(self
            .meta
            .get(txn, key)
            .map_err(self.err("reading meta"))?
            .and_then(|b| b.try_into().ok().map(u64::from_be_bytes)))
    }

    /// (chunks with at least one token, tokens in them).
    pub fn keyword_totals(&self, txn: &RoTxn) -> Result<(u64, u64), IndexError> {
        Ok((
            self.meta_u64(txn, KW_DOCS)?.unwrap_or(0),
            self.meta_u64(txn, KW_TOKENS)?.unwrap_or(0),
        ))
    }

    /// Fills the postings from every live chunk if this index was written
    /// before the keyword side existed, or before its postings were kept in
    /// blocks (once; writer only): the old lists and totals are dropped and
    /// everything is indexed anew. Returns how many chunks it indexed.
    pub fn backfill_postings(&self, wtxn: &mut RwTxn) -> Result<u64, IndexError> {
        let Some(db) = self.postings else {
            return Ok(0);
        };
        let layout = keyword::BLOCK_ITEMS.to_string();
        if self
            .meta
            .get(wtxn, KEYWORD_BLOCKS)
            .map_err(self.err("reading meta"))?
            == Some(layout.as_bytes())
        {
            return Ok(0);
        }
        db.clear(wtxn).map_err(self.err("clearing postings"))?;
        self.set_meta(wtxn, KW_DOCS, &0u64.to_be_bytes())?;
        self.set_meta(wtxn, KW_TOKENS, &0u64.to_be_bytes())?;
        let mut changes = PostingChanges::default();
        let mut n = 0;
        {
            let e = self.err("listing chunks");
            for r in self.chunks.iter(wtxn).map_err(&e)? {
                let (id, c) = r.map_err(&e)?;
                changes.added(id, &c.text);
                n += 1;
            }
        }
        self.write_postings(wtxn, &changes)?;
        self.set_meta(wtxn, KEYWORD_READY, b"1")?;
        self.set_meta(wtxn, KEYWORD_BLOCKS, layout.as_bytes())?;
        Ok(n)
    }

    /// Every postings key (tests: the layout on disk).
    #[cfg(test)]
    pub(super) fn postings_keys(&self, txn: &RoTxn) -> Vec<String> {
        let Some(db) = self.postings else {
            return Vec::new();
        };
        db.iter(txn)
            .expect("postings")
            .map(|r| r.expect("posting").0.to_string())
            .collect()
    }

    /// Rewrites the postings as an older version wrote them (tests): `None`,
    /// one list per term under the bare term, with no layout marker;
    /// `Some(items)`, blocks of `items` item ids with the marker those
    /// versions wrote (`1`, for blocks of 4,096).
    #[cfg(test)]
    pub(super) fn rewrite_in_old_layout(&self, wtxn: &mut RwTxn, blocks_of: Option<u32>) {
        let db = self.postings.expect("postings");
        let mut lists: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
        for r in db.iter(wtxn).expect("postings") {
            let (key, bytes) = r.expect("posting");
            let term = key.split('\u{0}').next().unwrap_or(key);
            for p in keyword::decode(bytes) {
                let key = match blocks_of {
                    None => term.to_string(),
                    Some(b) => keyword::block_key(term, p.item / b),
                };
                lists
                    .entry(key)
                    .or_default()
                    .extend_from_slice(&keyword::encode(&[p]));
            }
        }
        db.clear(wtxn).expect("clear");
        for (key, bytes) in lists {
            db.put(wtxn, &key, &bytes).expect("put");
        }
        match blocks_of {
            None => self
                .meta
                .delete(wtxn, KEYWORD_BLOCKS)
                .map(drop)
                .expect("meta"),
            Some(_) => self.set_meta(wtxn, KEYWORD_BLOCKS, b"1").expect("meta"),
        }
    }

    /// BM25 scores of the chunks matching any term of `text`, restricted
    /// to `allowed` if given, best first, at most `k`. Exhaustive over the
    /// query terms' postings: the answer is exact, not approximate.
    pub fn keyword_search(
        &self,
        txn: &RoTxn,
        text: &str,
        k: usize,
        allowed: Option<&RoaringBitmap>,
    ) -> Result<Vec<(f32, u32)>, IndexError> {
        let Some(db) = self.postings else {
            return Ok(Vec::new());
        };
        let (n, tokens) = self.keyword_totals(txn)?;
        if n == 0 || k == 0 {
            return Ok(Vec::new());
        }
        let avgdl = tokens as f32 / n as f32;
        let e = self.err("reading postings");
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for term in keyword::query_terms(text) {
            let mut blocks: Vec<&[u8]> = Vec::new();
            for r in db
                .prefix_iter(txn, &keyword::block_prefix(&term))
                .map_err(&e)?
            {
                blocks.push(r.map_err(&e)?.1);
            }
            let df = blocks.iter().map(|b| (b.len() / 8) as u64).sum();
            if df == 0 {
                continue;
            }
            let idf = keyword::idf(n, df);
            for p in blocks.iter().flat_map(|b| keyword::decode(b)) {
                if allowed.is_some_and(|a| !a.contains(p.item)) {
                    continue;
                }
                *scores.entry(p.item).or_insert(0.0) +=
                    keyword::term_score(idf, p.tf, p.len, avgdl);
            }
        }
        // Best score first, ties to the older item: a total order, so equal
        // BM25 scores (common with short templated chunks) rank the same
        // way every time, whatever the hash map's order.
        let mut all: Vec<(f32, u32)> = scores.into_iter().map(|(id, s)| (s, id)).collect();
        let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if all.len() > k {
            all.select_nth_unstable_by(k - 1, order);
            all.truncate(k);
        }
        all.sort_unstable_by(order);
        Ok(all)
    }

    /// Raises the applied-offset watermark of each (topic, partition) to
    /// `offset` (never lowers it: a replay after a crash re-applies older
    /// offsets), in the caller's transaction, so it commits with the data.
    pub fn raise_watermarks(
        &self,
        wtxn: &mut RwTxn,
        marks: &[(String, i32, i64)],
    ) -> Result<(), IndexError> {
        for (topic, partition, offset) in marks {
            let key = format!("{WATERMARK}{topic}\u{0}{partition}");
            let old = self
                .meta
                .get(wtxn, &key)
                .map_err(self.err("reading a watermark"))?
                .and_then(|b| b.try_into().ok().map(i64::from_be_bytes));
            if old.is_none_or(|o| o < *offset) {
                self.set_meta(wtxn, &key, &offset.to_be_bytes())?;
            }
        }
        Ok(())
    }

    /// Every (topic, partition) -> highest applied source offset.
    pub fn watermarks(&self, txn: &RoTxn) -> Result<BTreeMap<(String, i32), i64>, IndexError> {
        let e = self.err("reading watermarks");
        let mut out = BTreeMap::new();
        for r in self.meta.prefix_iter(txn, WATERMARK).map_err(&e)? {
            let (key, value) = r.map_err(&e)?;
            let Some(rest) = key.strip_prefix(WATERMARK) else {
                continue;
            };
            let Some((topic, partition)) = rest.rsplit_once('\u{0}') else {
                continue;
            };
            let (Ok(partition), Ok(bytes)) = (partition.parse::<i32>(), <[u8; 8]>::try_from(value))
            else {
                continue;
            };
            out.insert((topic.to_string(), partition), i64::from_be_bytes(bytes));
        }
        Ok(out)
    }

    fn add_item(
        &self,
        wtxn: &mut RwTxn,
        id: u32,
        doc_id: &str,
        c: &ChunkIn,
        digest: String,
    ) -> Result<(), IndexError> {
        let rec = ChunkRecord {
            chunk_id: c.chunk_id.clone(),
            doc_id: doc_id.to_string(),
            text: c.text.clone(),
            metadata: c.metadata.clone(),
            digest,
            model: c.model.clone(),
            source: c.source.clone(),
        };
        let e = self.err("writing a chunk");
        put_last(&self.chunks, wtxn, &id, &rec).map_err(&e)?;
        put_last(&self.vectors, wtxn, &id, &vector_bytes(&c.vector)[..]).map_err(&e)?;
        let mut pending = Vec::with_capacity(1 + super::exact::sketch_len(c.vector.len()));
        pending.push(PENDING_ADD);
        pending.extend(super::exact::sketch(&c.vector));
        put_last(&self.pending, wtxn, &id, &pending[..]).map_err(&e)?;
        for (k, v) in &c.metadata {
            if let Some(key) = filter_key(k, v) {
                self.update_filter(wtxn, &key, |b| {
                    b.insert(id);
                })?;
            }
        }
        Ok(())
    }

    fn remove_item(
        &self,
        wtxn: &mut RwTxn,
        id: u32,
        postings: &mut PostingChanges,
    ) -> Result<(), IndexError> {
        let e = self.err("removing a chunk");
        let rec = self.chunks.get(wtxn, &id).map_err(&e)?;
        self.chunks.delete(wtxn, &id).map_err(&e)?;
        self.vectors.delete(wtxn, &id).map_err(&e)?;
        match self.pending_op(wtxn, id)? {
            // Never reached the approximate index: nothing to undo there.
            Some(PENDING_ADD) => {
                self.pending.delete(wtxn, &id).map_err(&e)?;
            }
            _ => self.pending.put(wtxn, &id, &[PENDING_DEL]).map_err(&e)?,
        }
        if let Some(rec) = rec {
            postings.removed(id, &rec.text);
            for (k, v) in &rec.metadata {
                if let Some(key) = filter_key(k, v) {
                    self.update_filter(wtxn, &key, |b| {
                        b.remove(id);
                    })?;
                }
            }
        }
        Ok(())
    }

    fn update_filter(
        &self,
        wtxn: &mut RwTxn,
        key: &str,
        f: impl FnOnce(&mut RoaringBitmap),
    ) -> Result<(), IndexError> {
        let e = self.err("updating a filter");
        let mut b = match self.filters.get(wtxn, key).map_err(&e)? {
            Some(bytes) => {
                RoaringBitmap::deserialize_from(bytes).map_err(|x| IndexError::Corrupt {
                    path: self.lmdb.path.clone(),
                    why: x.to_string(),
                })?
            }
            None => RoaringBitmap::new(),
        };
        f(&mut b);
        if b.is_empty() {
            self.filters.delete(wtxn, key).map_err(&e)?;
        } else {
            let mut out = Vec::with_capacity(b.serialized_size());
            b.serialize_into(&mut out)
                .map_err(|x| IndexError::Corrupt {
                    path: self.lmdb.path.clone(),
                    why: x.to_string(),
                })?;
            self.filters.put(wtxn, key, &out).map_err(&e)?;
        }
        Ok(())
    }

    /// Items matching every `key = value` pair (an empty filter is `None`:
    /// everything).
    pub fn filter(
        &self,
        txn: &RoTxn,
        filter: &[(String, String)],
    ) -> Result<Option<RoaringBitmap>, IndexError> {
        let mut acc: Option<RoaringBitmap> = None;
        for (k, v) in filter {
            let b = match filter_key(k, v) {
                Some(key) => match self.filters.get(txn, &key).map_err(self.err("filter"))? {
                    Some(bytes) => {
                        RoaringBitmap::deserialize_from(bytes).map_err(|x| IndexError::Corrupt {
                            path: self.lmdb.path.clone(),
                            why: x.to_string(),
                        })?
                    }
                    None => RoaringBitmap::new(),
                },
                None => RoaringBitmap::new(),
            };
            acc = Some(match acc {
                Some(a) => a & b,
                None => b,
            });
        }
        Ok(acc)
    }

    /// Pending adds and deletes. Every search of the pending delta reads
    /// this whole list (tens of thousands of entries after a bulk load), so
    /// the bitmaps are built in key order in one append each, not by
    /// per-id inserts.
    pub fn pending(&self, txn: &RoTxn) -> Result<(RoaringBitmap, RoaringBitmap), IndexError> {
        self.walk_pending(txn, |_, _| {})
    }

    /// [`Store::pending`], calling `f(id, sketch)` for every pending
    /// addition on the way (the sketch is empty for items written before
    /// sketches existed): one pass over the list serves the search.
    pub fn walk_pending(
        &self,
        txn: &RoTxn,
        mut f: impl FnMut(u32, &[u8]),
    ) -> Result<(RoaringBitmap, RoaringBitmap), IndexError> {
        // Ids are collected and appended at the end: `RoaringBitmap::push`
        // looks for a container's maximum on every call, which was a
        // quarter of a search with 80k pending; `append` does not.
        let mut adds = Vec::new();
        let mut dels = Vec::new();
        for r in self
            .pending
            .iter(txn)
            .map_err(self.err("reading pending"))?
        {
            let (id, value) = r.map_err(self.err("reading pending"))?;
            match value.split_first() {
                Some((&PENDING_ADD, sketch)) => {
                    adds.push(id);
                    f(id, sketch);
                }
                _ => dels.push(id),
            }
        }
        // Keys come sorted, so both lists are ascending.
        let sorted = |ids: Vec<u32>| {
            RoaringBitmap::from_sorted_iter(ids.iter().copied())
                .unwrap_or_else(|_| ids.into_iter().collect())
        };
        Ok((sorted(adds), sorted(dels)))
    }

    /// `PENDING_ADD`, `PENDING_DEL` or nothing, for one item.
    fn pending_op(&self, txn: &RoTxn, id: u32) -> Result<Option<u8>, IndexError> {
        Ok(self
            .pending
            .get(txn, &id)
            .map_err(self.err("reading pending"))?
            .and_then(|v| v.first().copied()))
    }

    pub fn pending_len(&self, txn: &RoTxn) -> Result<u64, IndexError> {
        self.pending.len(txn).map_err(self.err("counting pending"))
    }

    /// At most `max_adds` of the oldest pending additions (a bounded build
    /// finishes sooner, so the trees catch up step by step after a bulk
    /// load), and every pending deletion.
    pub fn snapshot(&self, txn: &RoTxn, max_adds: usize) -> Result<PendingSnapshot, IndexError> {
        let (adds, dels) = self.pending(txn)?;
        let mut snap = PendingSnapshot {
            adds: Vec::with_capacity((adds.len() as usize).min(max_adds)),
            dels: dels.iter().collect(),
        };
        for id in adds.iter().take(max_adds) {
            if let Some(v) = self.vector(txn, id)? {
                snap.adds.push((id, v));
            }
        }
        Ok(snap)
    }

    /// After a build that took in `snap`: those items are no longer
    /// pending, except adds deleted meanwhile, which the trees now hold and
    /// the next build must remove.
    ///
    /// Whether an add was deleted during the build is decided by the store
    /// itself (is the chunk still live?), never by its pending entry being
    /// gone: an entry also disappears when another build already finished
    /// the same items, and reading that as "deleted" marked live chunks for
    /// removal from the trees (the lost-items bug of `weft index build`,
    /// whose bounded builds raced the background builder). Decided this
    /// way, finishing the same snapshot twice changes nothing.
    pub fn finish_build(&self, wtxn: &mut RwTxn, snap: &PendingSnapshot) -> Result<(), IndexError> {
        let e = self.err("finishing a build");
        for (id, _) in &snap.adds {
            let live = self.is_live(wtxn, *id)?;
            match (live, self.pending_op(wtxn, *id)?) {
                // The trees hold the vector now; the store keeps no second
                // copy (the exact scans read it from the trees).
                (true, Some(PENDING_ADD)) => {
                    self.pending.delete(wtxn, id).map_err(&e)?;
                    self.vectors.delete(wtxn, id).map_err(&e)?;
                }
                // Settled already (a build of the same items finished first).
                (true, _) => {}
                (false, Some(PENDING_DEL)) => {}
                // Deleted while the build ran: the trees hold it now.
                (false, _) => self.pending.put(wtxn, id, &[PENDING_DEL]).map_err(&e)?,
            }
        }
        for id in &snap.dels {
            if self.pending_op(wtxn, *id)? == Some(PENDING_DEL) && !self.is_live(wtxn, *id)? {
                self.pending.delete(wtxn, id).map_err(&e)?;
            }
        }
        Ok(())
    }

    /// Whether item `id` holds a live chunk (ids are never reused, so a
    /// removed item never comes back).
    pub fn is_live(&self, txn: &RoTxn, id: u32) -> Result<bool, IndexError> {
        Ok(self
            .chunks
            .remap_data_type::<DecodeIgnore>()
            .get(txn, &id)
            .map_err(self.err("reading a chunk"))?
            .is_some())
    }

    /// Every live item id.
    pub fn live_ids(&self, txn: &RoTxn) -> Result<RoaringBitmap, IndexError> {
        let e = self.err("listing chunks");
        let mut out = RoaringBitmap::new();
        for r in self
            .chunks
            .remap_data_type::<DecodeIgnore>()
            .iter(txn)
            .map_err(&e)?
        {
            out.insert(r.map_err(&e)?.0);
        }
        Ok(out)
    }

    /// Brings the pending list in line with what the trees hold
    /// (`in_trees`), so that afterwards every live item is in the trees or
    /// pending addition and every dead one in the trees is pending
    /// deletion. Needed at open after a crash between a build and its
    /// bookkeeping (items the trees hold but the store does not), and to
    /// repair indexes damaged by the lost-items bug (live items neither in
    /// the trees nor pending, or pending deletion). Returns (items marked
    /// for removal from the trees, live items marked for addition).
    pub fn reconcile(
        &self,
        wtxn: &mut RwTxn,
        in_trees: &RoaringBitmap,
    ) -> Result<(u64, u64), IndexError> {
        let e = self.err("reconciling");
        let live = self.live_ids(wtxn)?;
        let (adds, dels) = self.pending(wtxn)?;
        let (mut ghosts, mut lost) = (0, 0);
        for id in in_trees - &live {
            if !dels.contains(id) {
                self.pending.put(wtxn, &id, &[PENDING_DEL]).map_err(&e)?;
                ghosts += 1;
            }
        }
        // A pending addition the store no longer holds has nothing to add.
        for id in &adds - &live {
            self.pending.delete(wtxn, &id).map_err(&e)?;
        }
        for id in &live & &dels {
            if in_trees.contains(id) {
                self.pending.delete(wtxn, &id).map_err(&e)?;
            } else {
                self.pending.put(wtxn, &id, &[PENDING_ADD]).map_err(&e)?;
                lost += 1;
            }
        }
        // Live, not in the trees, not pending: search would never find it.
        for id in &(&live - in_trees) - &(&adds | &dels) {
            self.pending.put(wtxn, &id, &[PENDING_ADD]).map_err(&e)?;
            lost += 1;
        }
        // Live, in the trees and pending addition: built before a crash; the
        // next build re-adds it, harmless.
        Ok((ghosts, lost))
    }

    /// Drops the store's copy of vectors the trees hold (indexes written
    /// before built vectors lived in the trees only); returns how many.
    pub fn drop_built_vectors(
        &self,
        wtxn: &mut RwTxn,
        in_trees: &RoaringBitmap,
    ) -> Result<u64, IndexError> {
        let e = self.err("dropping built vectors");
        let (adds, _) = self.pending(wtxn)?;
        let mut stored = RoaringBitmap::new();
        for r in self
            .vectors
            .remap_data_type::<DecodeIgnore>()
            .iter(wtxn)
            .map_err(&e)?
        {
            stored.insert(r.map_err(&e)?.0);
        }
        let drop = &(&stored & in_trees) - &adds;
        for id in &drop {
            self.vectors.delete(wtxn, &id).map_err(&e)?;
        }
        Ok(drop.len())
    }

    /// Pending additions and deletions, counted.
    pub fn pending_counts(&self, txn: &RoTxn) -> Result<(u64, u64), IndexError> {
        let (adds, dels) = self.pending(txn)?;
        Ok((adds.len(), dels.len()))
    }

    /// Calls `f(id, vector bytes)` for every id of `ids` whose vector the
    /// store holds (the pending additions; built ones are in the trees).
    /// Pending additions
    /// are the newest ids, so one cursor over that key range reads them in
    /// order instead of a B-tree lookup each; a small sparse set is looked
    /// up one by one.
    pub fn scan_vectors(
        &self,
        txn: &RoTxn,
        ids: &RoaringBitmap,
        mut f: impl FnMut(u32, &[u8]),
    ) -> Result<(), IndexError> {
        let (Some(lo), Some(hi)) = (ids.min(), ids.max()) else {
            return Ok(());
        };
        let e = self.err("scanning vectors");
        // The store holds only pending vectors (built ones are in the
        // trees): when they are fewer than the ids asked for, one pass over
        // them beats a lookup per id, most of which would miss.
        let held = self.vectors.len(txn).map_err(&e)?;
        if held < ids.len() {
            for r in self.vectors.iter(txn).map_err(&e)? {
                let (id, b) = r.map_err(&e)?;
                if ids.contains(id) {
                    f(id, b);
                }
            }
            return Ok(());
        }
        let span = u64::from(hi - lo) + 1;
        if ids.len() * 6 < span {
            for id in ids {
                if let Some(b) = self.vectors.get(txn, &id).map_err(&e)? {
                    f(id, b);
                }
            }
            return Ok(());
        }
        for r in self.vectors.range(txn, &(lo..=hi)).map_err(&e)? {
            let (id, b) = r.map_err(&e)?;
            if ids.contains(id) {
                f(id, b);
            }
        }
        Ok(())
    }

    pub fn vector(&self, txn: &RoTxn, id: u32) -> Result<Option<Vec<f32>>, IndexError> {
        Ok(self
            .vectors
            .get(txn, &id)
            .map_err(self.err("reading a vector"))?
            .map(bytes_vector))
    }

    pub fn chunk(&self, txn: &RoTxn, id: u32) -> Result<Option<ChunkRecord>, IndexError> {
        self.chunks
            .get(txn, &id)
            .map_err(self.err("reading a chunk"))
    }

    /// The chunks of one document, in chunk order.
    pub fn doc_chunks(&self, txn: &RoTxn, doc_id: &str) -> Result<Vec<ChunkRecord>, IndexError> {
        Ok(self
            .doc_items(txn, doc_id)?
            .into_iter()
            .map(|(_, c)| c)
            .collect())
    }

    /// The items of one document with their chunks, in chunk order.
    pub fn doc_items(
        &self,
        txn: &RoTxn,
        doc_id: &str,
    ) -> Result<Vec<(u32, ChunkRecord)>, IndexError> {
        let ids = self
            .docs
            .get(txn, doc_id)
            .map_err(self.err("reading docs"))?
            .unwrap_or_default();
        let mut out = Vec::new();
        for id in ids {
            if let Some(c) = self.chunk(txn, id)? {
                out.push((id, c));
            }
        }
        Ok(out)
    }

    pub fn counts(&self, txn: &RoTxn) -> Result<(u64, u64), IndexError> {
        let e = self.err("counting");
        Ok((
            self.docs.len(txn).map_err(&e)?,
            self.chunks
                .remap_data_type::<DecodeIgnore>()
                .len(txn)
                .map_err(&e)?,
        ))
    }

    /// Whether the document `doc_id` is in the index.
    pub fn has_doc(&self, txn: &RoTxn, doc_id: &str) -> Result<bool, IndexError> {
        Ok(self
            .docs
            .remap_data_type::<DecodeIgnore>()
            .get(txn, doc_id)
            .map_err(self.err("reading a document"))?
            .is_some())
    }

    /// Bytes of the pages that hold data (the file keeps its high-water
    /// mark: LMDB reuses freed pages but never shrinks the file).
    pub fn live_bytes(&self, txn: &RoTxn) -> Result<u64, IndexError> {
        let e = self.err("reading page counts");
        let stats = [
            self.chunks.stat(txn).map_err(&e)?,
            self.vectors.stat(txn).map_err(&e)?,
            self.docs.stat(txn).map_err(&e)?,
            self.pending.stat(txn).map_err(&e)?,
            self.filters.stat(txn).map_err(&e)?,
            self.meta.stat(txn).map_err(&e)?,
        ];
        let postings = match self.postings {
            Some(db) => page_bytes(&db.stat(txn).map_err(&e)?),
            None => 0,
        };
        Ok(stats.iter().map(page_bytes).sum::<u64>() + postings)
    }

    /// Every document id, in order (for tests and `weft index stats`).
    pub fn doc_ids(&self, txn: &RoTxn) -> Result<Vec<String>, IndexError> {
        let e = self.err("listing docs");
        let mut out = Vec::new();
        for r in self
            .docs
            .remap_data_type::<DecodeIgnore>()
            .iter(txn)
            .map_err(&e)?
        {
            out.push(r.map_err(&e)?.0.to_string());
        }
        Ok(out)
    }
}

//! The vector index: LMDB (heed) + arroy, one per tenant and name.
//!
//! Shape (near-real-time search, as in Lucene):
//! - the **store** environment holds every live chunk (text, metadata,
//!   vector), the chunks of each document, metadata filter bitmaps and a
//!   *pending* list; the stream writes here, one small transaction per batch,
//!   and a chunk is searchable as soon as that transaction commits;
//! - the **trees** environment holds arroy's approximate index, rebuilt by a
//!   background thread in larger batches (a build over 100k vectors takes
//!   seconds, far too slow to do per batch);
//! - a search merges an exact scan of the pending adds with an arroy search
//!   that masks pending deletes (arroy's `candidates`), so what the stream
//!   wrote is visible before the trees know about it.
//!
//! Crash safety comes from LMDB's atomic commits plus idempotent
//! bookkeeping: a build applies a snapshot of the pending list to the trees
//! in one transaction, then clears those entries in the store in another; a
//! crash between the two only makes the next build redo work, and items the
//! trees hold but the store does not are found at open and masked.

mod adapter;
mod ann;
mod exact;
mod hot;
pub mod keyword;
mod lmdb;
mod registry;
pub mod sink;
mod store;
#[cfg(test)]
mod tests;

use ann::Ann;
use exact::{Scored, TopK};
pub use registry::{IndexQuota, IndexRegistry, ReadOnlyIndex, Searcher};
use roaring::RoaringBitmap;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use store::Store;
pub use store::{Applied, ChunkRecord};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index {}: {what}: {source}", .path.display())]
    Lmdb {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: heed::Error,
    },
    #[error("index {}: {source}", .path.display())]
    Arroy {
        path: PathBuf,
        #[source]
        source: arroy::Error,
    },
    #[error("no index at {} (nothing has been written to it yet)", .0.display())]
    Missing(PathBuf),
    #[error("index {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("index {} is damaged: {why}", .path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("index {} has used up its 2^32 item ids; rebuild it from the topic", .0.display())]
    Full(PathBuf),
    #[error("index {} is open for writing by another process (lock {})", .0.display(), .0.join("writer.lock").display())]
    Locked(PathBuf),
    /// A tenant-wide index quota of the operator's policy.
    #[error("{0}")]
    Quota(String),
    #[error("query vector has {got} dimensions; the index {} holds {want}-dimensional vectors", .path.display())]
    Dimension {
        path: PathBuf,
        got: usize,
        want: u32,
    },
}

impl IndexError {
    fn lmdb(path: &Path, what: &'static str, source: heed::Error) -> IndexError {
        IndexError::Lmdb {
            path: path.to_path_buf(),
            what,
            source,
        }
    }

    fn is_map_full(&self) -> bool {
        matches!(
            self,
            IndexError::Lmdb {
                source: heed::Error::Mdb(heed::MdbError::MapFull),
                ..
            } | IndexError::Arroy {
                source: arroy::Error::Heed(heed::Error::Mdb(heed::MdbError::MapFull)),
                ..
            }
        )
    }
}

/// One embedded chunk to index.
#[derive(Debug, Clone)]
pub struct ChunkIn {
    pub chunk_id: String,
    pub text: String,
    pub metadata: Vec<(String, String)>,
    pub vector: Vec<f32>,
    /// Fingerprint of the embedder that made `vector` (see
    /// [`VectorIndex::reusable_vectors`]).
    pub model: Option<String>,
    /// Where the document version came from (`topic/partition@offset`), so
    /// an answer can say which version of a document it cites; returned in
    /// a hit's metadata under [`SOURCE_META`].
    pub source: Option<String>,
}

/// The metadata key under which a hit carries its chunk's [`ChunkIn::source`].
pub const SOURCE_META: &str = "_source";

/// A change to one document: its full new set of chunks, or its deletion.
#[derive(Debug, Clone)]
pub enum DocOp {
    Upsert {
        doc_id: String,
        chunks: Vec<ChunkIn>,
    },
    Delete {
        doc_id: String,
    },
}

impl DocOp {
    pub fn doc_id(&self) -> &str {
        match self {
            DocOp::Upsert { doc_id, .. } | DocOp::Delete { doc_id } => doc_id,
        }
    }
}

/// When the background builder folds pending items into the trees.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Build once this many items are pending (exact search over the
    /// pending items stays around a millisecond up to a few thousand).
    pub max_pending: u64,
    /// Build when writes have paused this long and something is pending.
    pub idle_build: Duration,
    /// Build at least this often while anything is pending, even under a
    /// steady trickle of writes.
    pub max_age: Duration,
    /// Threads a build may use (the rest of the machine serves the stream).
    pub build_threads: usize,
    /// Starting LMDB map size per environment; it doubles whenever full.
    pub initial_map: usize,
    /// At most this many pending additions go into one build, so after a
    /// bulk load the trees catch up in steps (and the exact scan of pending
    /// items shrinks steadily) instead of in one build of minutes.
    pub max_build: usize,
    /// How many more tree nodes a search visits than arroy's default
    /// (k x trees). Measured at 100k x 384 on clustered vectors: recall@10
    /// 0.89 at 1 (466 queries/s), 0.96 at 2 (219/s), 0.997 at 5 (145/s).
    pub oversampling: usize,
    /// Pending vectors the writing process keeps in memory for the exact
    /// scan (0 = none; the rest is read from LMDB).
    pub hot_vectors: usize,
    /// A filtered search whose filter keeps fewer than this share of the
    /// live chunks scores every match exactly from the store and the trees'
    /// item records itself instead of through arroy (0 = never, above 1 =
    /// always). Off by default: measured at 100k x 384 (bench section 3),
    /// it was no faster than arroy, which already scores every candidate
    /// exactly under 50 % of the items; both read each vector from LMDB,
    /// and a faster path needs a contiguous vector layout.
    pub exact_filter_below: f64,
    /// Number of arroy trees. `None` lets arroy pick, which it does by
    /// building trees until they hold about one node per item (~140 trees
    /// at 100k x 384; each split node stores a full normal vector, so the
    /// trees take more disk than the vectors), and keeps that count from
    /// 32 trees on. Fewer trees are smaller and faster to build; search
    /// then visits `k x trees x oversampling` leaves' items.
    pub trees: Option<usize>,
    /// Most items in one leaf of a tree (arroy's default: the dimension).
    pub split_after: Option<usize>,
    /// Rank pending additions this process does not hold in memory by
    /// their int8 sketch and score only the best few exactly (false: read
    /// and score every one in full, the slower way before sketches).
    pub pending_sketches: bool,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            max_pending: 2000,
            idle_build: Duration::from_millis(500),
            max_age: Duration::from_secs(10),
            build_threads: 1,
            initial_map: lmdb::INITIAL_MAP,
            max_build: 10_000,
            oversampling: 2,
            hot_vectors: hot::DEFAULT_CAP,
            exact_filter_below: 0.0,
            trees: None,
            split_after: None,
            pending_sketches: true,
        }
    }
}

/// What a batch of operations did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub applied: Applied,
    /// Operations refused, by position in the input, with the reason.
    pub rejected: Vec<(usize, String)>,
}

/// Which side of the index answers a [`Query`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Nearest vectors (cosine), the index's original search.
    #[default]
    Vector,
    /// BM25 over the chunks' words (exact term matches: identifiers,
    /// names, codes that an embedding blurs).
    Keyword,
    /// Both lists fused by weighted reciprocal rank.
    Hybrid,
}

/// The reciprocal-rank-fusion constant of the original RRF paper
/// (Cormack et al., 2009), used unless a query says otherwise.
pub const DEFAULT_RRF_K: f32 = 60.0;

/// A search in one of the three modes. `vector` is unused by keyword mode
/// (it may be empty there) and `text` by vector mode.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub mode: SearchMode,
    pub vector: &'a [f32],
    pub text: &'a str,
    pub k: usize,
    pub filter: &'a [(String, String)],
    /// RRF constant: a hit at rank r (from 1) of a side scores
    /// `weight / (rrf_k + r)`. Larger flattens the rank curve.
    pub rrf_k: f32,
    pub vector_weight: f32,
    pub keyword_weight: f32,
}

impl<'a> Query<'a> {
    /// A query in `mode` with the default fusion (k = 60, equal weights).
    pub fn new(
        mode: SearchMode,
        vector: &'a [f32],
        text: &'a str,
        k: usize,
        filter: &'a [(String, String)],
    ) -> Query<'a> {
        Query {
            mode,
            vector,
            text,
            k,
            filter,
            rrf_k: DEFAULT_RRF_K,
            vector_weight: 1.0,
            keyword_weight: 1.0,
        }
    }
}

/// Fuses ranked lists by weighted reciprocal rank: an id's score is the sum
/// over the lists that hold it of `weight / (rrf_k + rank)`, rank from 1.
/// Ties keep the order of first appearance (the first list's order first),
/// so the result is deterministic. Public so tests can check a hybrid
/// search against the fusion of the two single-mode searches.
pub fn rrf_fuse<T: Clone + Eq + std::hash::Hash>(
    lists: &[(&[T], f32)],
    rrf_k: f32,
    k: usize,
) -> Vec<(T, f32)> {
    let mut order: Vec<T> = Vec::new();
    let mut score: HashMap<T, f32> = HashMap::new();
    for (list, weight) in lists {
        for (rank, id) in list.iter().enumerate() {
            let s = weight / (rrf_k + rank as f32 + 1.0);
            match score.get_mut(id) {
                Some(v) => *v += s,
                None => {
                    order.push(id.clone());
                    score.insert(id.clone(), s);
                }
            }
        }
    }
    let mut out: Vec<(T, f32)> = order
        .into_iter()
        .map(|id| {
            let s = score.get(&id).copied().unwrap_or(0.0);
            (id, s)
        })
        .collect();
    // Stable: equal scores keep first-appearance order.
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out.truncate(k);
    out
}

/// One search result.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    pub chunk_id: String,
    pub doc_id: String,
    /// Vector mode: cosine similarity; keyword mode: BM25 score; hybrid:
    /// the fused reciprocal-rank score. Higher is better in every mode, but
    /// the scales differ, so compare scores only within one mode.
    pub score: f32,
    pub text: String,
    pub metadata: Vec<(String, String)>,
}

/// What [`VectorIndex::wait_for`] found.
#[derive(Debug, Clone)]
pub struct Waited {
    /// Whether every required offset was applied.
    pub met: bool,
    /// The watermarks read last: (topic, partition) -> highest applied offset.
    pub watermarks: BTreeMap<(String, i32), i64>,
}

/// How the store, the pending list and the trees relate
/// ([`VectorIndex::audit`]). In a correct index the four id lists are
/// empty: every live chunk is in the trees or pending addition (so search
/// finds it), and every dead item the trees still hold is pending deletion
/// (so search masks it).
#[derive(Debug, Clone, Serialize)]
pub struct IndexAudit {
    pub live: u64,
    pub in_trees: u64,
    pub pending_adds: u64,
    pub pending_deletes: u64,
    /// Live, not in the trees, not pending addition: unsearchable.
    pub lost: Vec<u32>,
    /// Live but pending deletion: masked from search.
    pub live_pending_delete: Vec<u32>,
    /// Pending addition without a live chunk.
    pub dead_pending_add: Vec<u32>,
    /// In the trees, not live, not pending deletion: returned by nothing
    /// (a hit needs its chunk) but never cleaned up.
    pub ghosts: Vec<u32>,
}

impl IndexAudit {
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.live_pending_delete.is_empty()
            && self.dead_pending_add.is_empty()
            && self.ghosts.is_empty()
    }
}

/// Figures for `weft index stats`.
#[derive(Debug, Clone, Serialize)]
pub struct IndexStats {
    pub path: String,
    pub dimension: Option<u32>,
    pub documents: u64,
    pub chunks: u64,
    /// Pending additions plus pending deletions.
    pub pending: u64,
    pub pending_adds: u64,
    pub pending_deletes: u64,
    /// Pending vectors held in memory by this process (the writer).
    pub pending_in_memory: usize,
    pub in_trees: u64,
    pub trees: usize,
    pub store_bytes: u64,
    pub trees_bytes: u64,
    /// Bytes of pages holding data; the files above keep their high-water
    /// mark (after a bulk load, the pending vectors' pages stay in the
    /// store file, free for later writes).
    pub store_live_bytes: u64,
    pub trees_live_bytes: u64,
    pub map_bytes: usize,
    pub builds: u64,
    pub last_build_ms: Option<f64>,
    pub model: Option<serde_json::Value>,
}

struct Core {
    dir: PathBuf,
    store: Store,
    ann: Ann,
    pool: rayon::ThreadPool,
    opts: IndexOptions,
    /// In-memory copies of pending vectors (writer process only).
    hot: hot::HotVectors,
    /// Held for a whole build. Builds must not overlap: two would fold the
    /// same snapshot (`weft index build` runs `build_now` while the
    /// background builder is also due), doing the work twice.
    build_lock: Mutex<()>,
    /// `IndexOptions::exact_filter_below`, as f64 bits (benchmarks change it
    /// on an open index to compare both paths on the same data).
    exact_filter_below: AtomicU64,
    /// Woken by writes; the builder waits on it.
    wake: (Mutex<BuilderClock>, Condvar),
    /// Notified after every committed apply, for [`VectorIndex::wait_for`].
    applied: (Mutex<()>, Condvar),
    stop: AtomicBool,
}

#[derive(Default)]
struct BuilderClock {
    last_write: Option<Instant>,
    first_pending: Option<Instant>,
    builds: u64,
    last_build: Option<Duration>,
}

/// A tenant's named index. Cheap to share (`Arc`); dropping the last handle
/// stops its builder.
pub struct VectorIndex {
    core: Arc<Core>,
    builder: Option<std::thread::JoinHandle<()>>,
    _lock: Option<std::fs::File>,
}

impl VectorIndex {
    /// Opens the index in `dir` for writing (creating it), takes the
    /// per-index writer lock and starts the background builder.
    pub fn open(dir: &Path, opts: IndexOptions) -> Result<VectorIndex, IndexError> {
        std::fs::create_dir_all(dir).map_err(|e| IndexError::Io {
            path: dir.into(),
            source: e,
        })?;
        let lock_path = dir.join("writer.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| IndexError::Io {
                path: lock_path.clone(),
                source: e,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(IndexError::Locked(dir.into())),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(IndexError::Io {
                    path: lock_path,
                    source: e,
                })
            }
        }
        let core = Arc::new(Core::open(dir, opts, true)?);
        // Items the trees hold but the store lost track of (a crash between
        // a build and its bookkeeping) are masked and removed next build;
        // live items neither in the trees nor pending (left by the
        // lost-items bug of earlier versions) become pending again.
        let in_trees = core.ann.item_ids()?;
        let (ghosts, lost) = core
            .store
            .lmdb
            .write(|w| core.store.reconcile(w, &in_trees))?;
        if ghosts > 0 {
            tracing::info!(index = %dir.display(), "{ghosts} stale item(s) in the trees will be removed");
        }
        if lost > 0 {
            tracing::warn!(index = %dir.display(), "{lost} live item(s) were missing from the trees and the pending list; they are pending again");
        }
        let backfilled = core.store.lmdb.write(|w| core.store.backfill_postings(w))?;
        if backfilled > 0 {
            tracing::info!(index = %dir.display(), "indexed the words of {backfilled} chunk(s) written before the keyword side or its blocks");
        }
        let dropped = core
            .store
            .lmdb
            .write(|w| core.store.drop_built_vectors(w, &in_trees))?;
        if dropped > 0 {
            tracing::info!(index = %dir.display(), "dropped the store's second copy of {dropped} built vector(s)");
        }
        let pending = core.store.lmdb.read(|r| core.store.pending_len(r))?;
        if pending > 0 {
            let mut c = core.wake.0.lock().unwrap_or_else(|p| p.into_inner());
            c.first_pending = Some(Instant::now());
        }
        let c2 = core.clone();
        let builder = std::thread::Builder::new()
            .name("weft-index-builder".into())
            .spawn(move || c2.builder_loop())
            .map_err(|e| IndexError::Io {
                path: dir.into(),
                source: e,
            })?;
        Ok(VectorIndex {
            core,
            builder: Some(builder),
            _lock: Some(lock),
        })
    }

    /// Opens an existing index to read while another process may write it
    /// (`weft index search/stats`). No builder runs.
    pub fn open_read_only(dir: &Path) -> Result<VectorIndex, IndexError> {
        Self::open_read_only_with(dir, IndexOptions::default())
    }

    /// [`VectorIndex::open_read_only`] with search options (benchmarks).
    pub fn open_read_only_with(dir: &Path, opts: IndexOptions) -> Result<VectorIndex, IndexError> {
        let core = Arc::new(Core::open(dir, opts, false)?);
        Ok(VectorIndex {
            core,
            builder: None,
            _lock: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.core.dir
    }

    /// Applies document operations in one transaction: when this returns,
    /// the changes are durable and searchable. Invalid operations (vectors
    /// of the wrong dimension, non-finite or zero) are refused one by one.
    pub fn apply(&self, ops: &[DocOp]) -> Result<ApplyReport, IndexError> {
        self.apply_at(ops, &[])
    }

    /// [`VectorIndex::apply`], raising the watermark of each source
    /// (topic, partition, highest offset of the batch) in the same
    /// transaction: when a reader sees the watermark at offset `o`, it sees
    /// every document version up to `o` (read-your-writes, see
    /// [`VectorIndex::wait_for`]).
    pub fn apply_at(
        &self,
        ops: &[DocOp],
        marks: &[(String, i32, i64)],
    ) -> Result<ApplyReport, IndexError> {
        let store = &self.core.store;
        let mut report = ApplyReport::default();
        let mut changes = store::Changes::default();
        let applied = store.lmdb.write(|wtxn| {
            changes = store::Changes::default();
            let mut dim = store.dimension(wtxn)?;
            let mut ok = Vec::with_capacity(ops.len());
            report.rejected.clear();
            for (i, op) in ops.iter().enumerate() {
                match validate(op, &mut dim) {
                    Ok(()) => ok.push(op.clone()),
                    Err(m) => report.rejected.push((i, m)),
                }
            }
            if let Some(d) = dim {
                store.set_meta(wtxn, "dimension", &d.to_be_bytes())?;
            }
            let applied = store.apply(wtxn, &ok, &mut changes)?;
            store.raise_watermarks(wtxn, marks)?;
            Ok(applied)
        })?;
        {
            // Under the lock the waiters read under (see `wait_for`).
            let _g = self
                .core
                .applied
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.core.applied.1.notify_all();
        }
        // After the commit: a search that sees the new snapshot finds these
        // in memory; one that does not, reads LMDB (see `hot`).
        self.core
            .hot
            .insert(changes.added.iter().map(|(id, v)| (*id, &v[..])));
        self.core.hot.remove(changes.removed.iter().copied());
        report.applied = applied;
        if applied.items_added + applied.items_removed > 0 {
            let (m, cv) = &self.core.wake;
            let mut c = m.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            c.last_write = Some(now);
            c.first_pending.get_or_insert(now);
            cv.notify_one();
        }
        Ok(report)
    }

    /// Highest applied source offset per (topic, partition).
    pub fn watermarks(&self) -> Result<BTreeMap<(String, i32), i64>, IndexError> {
        let s = &self.core.store;
        s.lmdb.read(|r| s.watermarks(r))
    }

    /// Waits until the index has applied every (topic, partition, offset)
    /// of `need` (its watermark there is at least that offset) or until
    /// `deadline`, whichever comes first, and returns the watermarks it saw
    /// last with whether they meet `need`. A write in this process wakes
    /// the wait at once; an index another process writes is polled every
    /// few milliseconds (LMDB has no cross-process notification).
    pub fn wait_for(
        &self,
        need: &[(String, i32, i64)],
        deadline: Instant,
    ) -> Result<Waited, IndexError> {
        let poll = Duration::from_millis(if self.builder.is_some() { 50 } else { 5 });
        loop {
            // Read under the lock a writer notifies after it commits, so a
            // commit between this read and the wait cannot be missed.
            let (m, cv) = &self.core.applied;
            let guard = m.lock().unwrap_or_else(|p| p.into_inner());
            let marks = self.watermarks()?;
            let met = need
                .iter()
                .all(|(t, p, o)| marks.get(&(t.clone(), *p)).is_some_and(|have| have >= o));
            let now = Instant::now();
            if met || now >= deadline {
                return Ok(Waited {
                    met,
                    watermarks: marks,
                });
            }
            let wait = (deadline - now).min(poll);
            drop(cv.wait_timeout(guard, wait));
        }
    }

    /// Records which embedder produced the vectors, so people can query the
    /// index with the same model (`weft index search`).
    pub fn set_model(&self, model: &serde_json::Value) -> Result<(), IndexError> {
        let bytes = model.to_string().into_bytes();
        let store = &self.core.store;
        let same = store.lmdb.read(|r| store.meta_json(r, "model"))?;
        if same.as_deref().map(str::as_bytes) == Some(&bytes[..]) {
            return Ok(());
        }
        store.lmdb.write(|w| store.set_meta(w, "model", &bytes))
    }

    pub fn model(&self) -> Result<Option<serde_json::Value>, IndexError> {
        let store = &self.core.store;
        Ok(store
            .lmdb
            .read(|r| store.meta_json(r, "model"))?
            .and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// The `k` chunks most similar to `vector` among those matching every
    /// `key = value` in `filter`.
    pub fn search(
        &self,
        vector: &[f32],
        k: usize,
        filter: &[(String, String)],
    ) -> Result<Vec<SearchHit>, IndexError> {
        self.core.search(vector, k, filter)
    }

    /// The `k` chunks whose words best match `text` by BM25, among those
    /// matching every `key = value` in `filter`.
    pub fn keyword_search(
        &self,
        text: &str,
        k: usize,
        filter: &[(String, String)],
    ) -> Result<Vec<SearchHit>, IndexError> {
        let store = &self.core.store;
        store.lmdb.read(|r| {
            let allowed = store.filter(r, filter)?;
            let top = store.keyword_search(r, text, k, allowed.as_ref())?;
            let mut hits = Vec::with_capacity(top.len());
            for (score, id) in top {
                if let Some(c) = store.chunk(r, id)? {
                    hits.push(hit(c, score));
                }
            }
            Ok(hits)
        })
    }

    /// A search in any [`SearchMode`]. Hybrid asks each side for the `k`
    /// best and fuses the two lists by weighted reciprocal rank
    /// ([`rrf_fuse`]): ranks, not scores, because cosine and BM25 live on
    /// scales that no fixed weighting reconciles across queries. Filters
    /// apply to both sides, before ranking.
    pub fn query(&self, q: &Query) -> Result<Vec<SearchHit>, IndexError> {
        match q.mode {
            SearchMode::Vector => self.search(q.vector, q.k, q.filter),
            SearchMode::Keyword => self.keyword_search(q.text, q.k, q.filter),
            SearchMode::Hybrid => {
                let by_vector = self.search(q.vector, q.k, q.filter)?;
                let by_words = self.keyword_search(q.text, q.k, q.filter)?;
                let ids =
                    |h: &[SearchHit]| h.iter().map(|h| h.chunk_id.clone()).collect::<Vec<_>>();
                let (v, w) = (ids(&by_vector), ids(&by_words));
                let fused = rrf_fuse(
                    &[(&v[..], q.vector_weight), (&w[..], q.keyword_weight)],
                    q.rrf_k,
                    q.k,
                );
                let mut by_id: HashMap<String, SearchHit> = by_vector
                    .into_iter()
                    .chain(by_words)
                    .map(|h| (h.chunk_id.clone(), h))
                    .collect();
                Ok(fused
                    .into_iter()
                    .filter_map(|(id, score)| {
                        by_id.remove(&id).map(|mut h| {
                            h.score = score;
                            h
                        })
                    })
                    .collect())
            }
        }
    }

    /// Changes [`IndexOptions::exact_filter_below`] on the open index
    /// (benchmarks compare the exact and the tree path on the same data).
    pub fn set_exact_filter_below(&self, share: f64) {
        self.core
            .exact_filter_below
            .store(share.to_bits(), Ordering::Relaxed);
    }

    /// Checks that the store's live items, the pending list and the trees
    /// agree (see [`IndexAudit`]). Waits for a running build, so it sees a
    /// settled state; reads everything, so it is for tests and `weft index`.
    pub fn audit(&self) -> Result<IndexAudit, IndexError> {
        let c = &self.core;
        let _settled = c.build_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (live, (adds, dels)) = c
            .store
            .lmdb
            .read(|r| Ok((c.store.live_ids(r)?, c.store.pending(r)?)))?;
        let trees = c.ann.item_ids()?;
        let ids = |b: RoaringBitmap| b.iter().collect::<Vec<u32>>();
        Ok(IndexAudit {
            live: live.len(),
            in_trees: trees.len(),
            pending_adds: adds.len(),
            pending_deletes: dels.len(),
            lost: ids(&(&live - &trees) - &adds),
            live_pending_delete: ids(&live & &dels),
            dead_pending_add: ids(&adds - &live),
            ghosts: ids(&(&trees - &live) - &dels),
        })
    }

    /// Folds everything pending into the trees now (tests, benchmarks,
    /// `weft index build`).
    pub fn build_now(&self) -> Result<(), IndexError> {
        self.build_now_with(|_| {})
    }

    /// [`VectorIndex::build_now`], calling `progress` with the additions
    /// folded so far after each bounded build (for progress displays).
    pub fn build_now_with(&self, mut progress: impl FnMut(usize)) -> Result<(), IndexError> {
        // Builds are bounded by `max_build` additions; a full slice means
        // there may be more.
        let mut done = 0;
        loop {
            let n = self.core.build()?;
            done += n;
            progress(done);
            if n < self.core.opts.max_build {
                return Ok(());
            }
        }
    }

    pub fn stats(&self) -> Result<IndexStats, IndexError> {
        let c = &self.core;
        let (dimension, (documents, chunks), (pending_adds, pending_deletes), store_live) =
            c.store.lmdb.read(|r| {
                Ok((
                    c.store.dimension(r)?,
                    c.store.counts(r)?,
                    c.store.pending_counts(r)?,
                    c.store.live_bytes(r)?,
                ))
            })?;
        let pending = pending_adds + pending_deletes;
        let (in_trees, trees) = c.ann.stats()?;
        let clock = c.wake.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(IndexStats {
            path: c.dir.display().to_string(),
            dimension,
            documents,
            chunks,
            pending,
            pending_adds,
            pending_deletes,
            pending_in_memory: c.hot.count(),
            in_trees,
            trees,
            store_bytes: c.store.lmdb.file_bytes(),
            trees_bytes: c.ann.lmdb.file_bytes(),
            store_live_bytes: store_live,
            trees_live_bytes: c.ann.live_bytes()?,
            map_bytes: c.store.lmdb.map_bytes() + c.ann.lmdb.map_bytes(),
            builds: clock.builds,
            last_build_ms: clock.last_build.map(|d| d.as_secs_f64() * 1000.0),
            model: self.model().ok().flatten(),
        })
    }

    /// Documents and bytes of live pages (store and trees): what a
    /// tenant's index quota is checked against. Cheap (LMDB's own counts
    /// of entries and pages, no scan), so the sink asks once per batch.
    pub fn usage(&self) -> Result<IndexUsage, IndexError> {
        let c = &self.core;
        let ((documents, _), store_bytes) = c
            .store
            .lmdb
            .read(|r| Ok((c.store.counts(r)?, c.store.live_bytes(r)?)))?;
        Ok(IndexUsage {
            documents,
            bytes: store_bytes + c.ann.live_bytes()?,
        })
    }

    /// Which of `doc_ids` the index holds now, in one read transaction.
    pub fn existing_docs<'a>(
        &self,
        doc_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<std::collections::HashSet<String>, IndexError> {
        let s = &self.core.store;
        let ids: Vec<&str> = doc_ids.into_iter().collect();
        s.lmdb.read(|r| {
            let mut found = std::collections::HashSet::new();
            for &id in &ids {
                if s.has_doc(r, id)? {
                    found.insert(id.to_string());
                }
            }
            Ok(found)
        })
    }

    /// The stored chunks of one document (tests, debugging).
    pub fn doc_chunks(&self, doc_id: &str) -> Result<Vec<ChunkRecord>, IndexError> {
        let s = &self.core.store;
        s.lmdb.read(|r| s.doc_chunks(r, doc_id))
    }

    /// The stored vectors of a document's chunks that embedder `model`
    /// made, by chunk id with their text: a new version of the document
    /// whose chunk has the same text needs no new embedding (with a paid
    /// embedding API, most of an edited document's cost).
    pub fn reusable_vectors(
        &self,
        doc_id: &str,
        model: &str,
    ) -> Result<HashMap<String, (String, Vec<f32>)>, IndexError> {
        let (s, ann) = (&self.core.store, &self.core.ann);
        s.lmdb.read(|r| {
            let mut out = HashMap::new();
            let mut built = HashMap::new();
            for (id, c) in s.doc_items(r, doc_id)? {
                if c.model.as_deref() != Some(model) {
                    continue;
                }
                match s.vector(r, id)? {
                    Some(v) => {
                        out.insert(c.chunk_id, (c.text, v));
                    }
                    None => {
                        built.insert(id, (c.chunk_id, c.text));
                    }
                }
            }
            if !built.is_empty() {
                let ids: RoaringBitmap = built.keys().copied().collect();
                let dim = s.dimension(r)?.unwrap_or(0) as usize;
                ann.lmdb.read(|ar| {
                    ann.scan_items(ar, dim, &ids, |id, bytes| {
                        if let Some((chunk_id, text)) = built.remove(&id) {
                            out.insert(chunk_id, (text, store::bytes_vector(bytes)));
                        }
                    })
                })?;
            }
            Ok(out)
        })
    }

    pub fn doc_ids(&self) -> Result<Vec<String>, IndexError> {
        let s = &self.core.store;
        s.lmdb.read(|r| s.doc_ids(r))
    }
}

impl Drop for VectorIndex {
    fn drop(&mut self) {
        if let Some(h) = self.builder.take() {
            self.core.stop.store(true, Ordering::SeqCst);
            self.core.wake.1.notify_all();
            let _ = h.join();
        }
    }
}

fn validate(op: &DocOp, dim: &mut Option<u32>) -> Result<(), String> {
    let DocOp::Upsert { chunks, .. } = op else {
        return Ok(());
    };
    for c in chunks {
        let n = c.vector.len() as u32;
        if n == 0 {
            return Err(format!("chunk `{}` has no vector", c.chunk_id));
        }
        match *dim {
            Some(d) if d != n => {
                return Err(format!(
                "chunk `{}` has a {n}-dimensional vector; this index holds {d}-dimensional vectors",
                c.chunk_id
            ))
            }
            Some(_) => {}
            None => *dim = Some(n),
        }
        if c.vector.iter().any(|x| !x.is_finite()) {
            return Err(format!("chunk `{}` has a non-finite vector", c.chunk_id));
        }
        if c.vector.iter().all(|x| *x == 0.0) {
            return Err(format!(
                "chunk `{}` has an all-zero vector (no direction to compare)",
                c.chunk_id
            ));
        }
    }
    Ok(())
}

fn hit(c: ChunkRecord, score: f32) -> SearchHit {
    let mut metadata = c.metadata;
    if let Some(s) = c.source {
        metadata.push((SOURCE_META.to_string(), s));
    }
    SearchHit {
        chunk_id: c.chunk_id,
        doc_id: c.doc_id,
        score,
        text: c.text,
        metadata,
    }
}

/// How many pending additions ranked by their sketch are scored exactly
/// for a top `k`: the sketch moves a cosine by ~1e-3, so the true top k is
/// inside a few times k; 40 more covers ties among near-duplicates.
fn rerank(k: usize) -> usize {
    4 * k + 40
}

impl Core {
    fn open(dir: &Path, opts: IndexOptions, create: bool) -> Result<Core, IndexError> {
        let exact_filter_below = opts.exact_filter_below;
        let store = Store::open(&dir.join("store"), create, opts.initial_map)?;
        let ann = Ann::open(&dir.join("trees"), create, opts.initial_map)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.build_threads.max(1))
            .thread_name(|i| format!("weft-index-build-{i}"))
            .build()
            .map_err(|e| IndexError::Io {
                path: dir.into(),
                source: std::io::Error::other(e),
            })?;
        Ok(Core {
            dir: dir.to_path_buf(),
            store,
            ann,
            pool,
            hot: hot::HotVectors::new(opts.hot_vectors),
            opts,
            build_lock: Mutex::new(()),
            exact_filter_below: AtomicU64::new(exact_filter_below.to_bits()),
            wake: (Mutex::new(BuilderClock::default()), Condvar::new()),
            applied: (Mutex::new(()), Condvar::new()),
            stop: AtomicBool::new(false),
        })
    }

    fn search(
        &self,
        vector: &[f32],
        k: usize,
        filter: &[(String, String)],
    ) -> Result<Vec<SearchHit>, IndexError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let store = &self.store;
        store.lmdb.read(|srtxn| {
            let Some(dim) = store.dimension(srtxn)? else {
                // Nothing written yet.
                return Ok(Vec::new());
            };
            if vector.len() != dim as usize {
                return Err(IndexError::Dimension {
                    path: self.dir.clone(),
                    got: vector.len(),
                    want: dim,
                });
            }
            let qnorm = hot::dot(vector, vector).sqrt();
            let mut top = TopK::new(k);
            let allowed = store.filter(srtxn, filter)?;
            let small = match &allowed {
                Some(a) => {
                    let live = store.counts(srtxn)?.1;
                    (a.len() as f64) < self.exact_filter_below() * live as f64
                }
                None => false,
            };
            match &allowed {
                // Filter bitmaps hold exactly the live matching items
                // (pending or built), so scoring them all is the exact
                // answer, without the trees.
                Some(a) if small => self.score_exact(srtxn, vector, qnorm, a, &mut top)?,
                _ => self.search_merged(srtxn, vector, qnorm, allowed.as_ref(), &mut top)?,
            }
            let mut hits = Vec::with_capacity(k);
            for Scored(score, id) in top.into_sorted() {
                // A chunk deleted since the trees' snapshot has no record.
                if let Some(c) = store.chunk(srtxn, id)? {
                    hits.push(hit(c, score));
                }
            }
            Ok(hits)
        })
    }

    /// Scores every item of `ids` exactly: from memory where this process
    /// holds the vector, else from the store.
    fn score_exact(
        &self,
        srtxn: &heed::RoTxn,
        vector: &[f32],
        qnorm: f32,
        ids: &RoaringBitmap,
        top: &mut TopK,
    ) -> Result<(), IndexError> {
        let mut rest = self.hot.score(vector, qnorm, ids, |s, id| top.push(s, id));
        let mut found = RoaringBitmap::new();
        self.store.scan_vectors(srtxn, &rest, |id, bytes| {
            top.push(exact::cosine_bytes(vector, qnorm, bytes), id);
            found.insert(id);
        })?;
        rest -= found;
        if rest.is_empty() {
            return Ok(());
        }
        // Built: the vector is in the trees. Their transaction starts after
        // the store's, so it holds every item the store saw as built; one
        // deleted since is simply absent.
        self.ann.lmdb.read(|artxn| {
            self.ann
                .scan_items(artxn, vector.len(), &rest, |id, bytes| {
                    top.push(exact::cosine_bytes(vector, qnorm, bytes), id);
                })
        })
    }

    /// The pending additions scored exactly, merged with an arroy search
    /// of the trees that masks what is pending (deleted, or re-added).
    fn search_merged(
        &self,
        srtxn: &heed::RoTxn,
        vector: &[f32],
        qnorm: f32,
        allowed: Option<&RoaringBitmap>,
        top: &mut TopK,
    ) -> Result<(), IndexError> {
        let k = top.k();
        // Pending additions: ranked by their int8 sketch, read with the
        // pending list itself, and only the best `rerank` scored exactly,
        // from memory where this process holds the vector (the writer) or
        // else read in full. After a bulk load tens of thousands are
        // pending: the sketch pass reads a quarter of the bytes, no vector
        // page at all, and scores in integers. The writer ranks by sketch
        // too: its vectors sit one allocation each in a hash map, and
        // scoring them all in full (the way before) was slower than a
        // reader's sketch pass (44 vs 24 ms p99 at 80k pending).
        let sq = exact::SketchQuery::new(vector, qnorm);
        let mut approx = TopK::new(rerank(k));
        let mut full = RoaringBitmap::new();
        let (delta, dels) = self.store.walk_pending(srtxn, |id, sketch| {
            if allowed.is_some_and(|a| !a.contains(id)) {
                return;
            }
            match sq.cosine(sketch) {
                Some(s) if self.opts.pending_sketches => approx.push(s, id),
                _ => {
                    full.insert(id);
                }
            }
        })?;
        for Scored(_, id) in approx.into_sorted() {
            full.insert(id);
        }
        let rest = self
            .hot
            .score(vector, qnorm, &full, |s, id| top.push(s, id));
        self.store.scan_vectors(srtxn, &rest, |id, bytes| {
            top.push(exact::cosine_bytes(vector, qnorm, bytes), id);
        })?;
        let from_trees = self.ann.lmdb.read(|artxn| {
            let Some(reader) = self.ann.reader(artxn)? else {
                return Ok(Vec::new());
            };
            let mut masked = dels.clone();
            masked |= &delta;
            let candidates = match allowed {
                Some(a) => Some(a - &masked),
                None if (reader.item_ids() & &masked).is_empty() => None,
                None => Some(reader.item_ids() - &masked),
            };
            let mut q = reader.nns(k);
            if let Some(o) = std::num::NonZeroUsize::new(self.opts.oversampling) {
                q.oversampling(o);
            }
            if let Some(c) = &candidates {
                q.candidates(c);
            }
            q.by_vector(artxn, vector).map_err(|e| IndexError::Arroy {
                path: self.ann.lmdb.path.clone(),
                source: e,
            })
        })?;
        for (id, distance) in from_trees {
            // arroy's cosine distance is (1 - cos) / 2.
            top.push(1.0 - 2.0 * distance, id);
        }
        Ok(())
    }

    fn exact_filter_below(&self) -> f64 {
        f64::from_bits(self.exact_filter_below.load(Ordering::Relaxed))
    }

    /// One bounded build; returns how many additions it folded in.
    fn build(&self) -> Result<usize, IndexError> {
        let _one = self.build_lock.lock().unwrap_or_else(|p| p.into_inner());
        let t0 = Instant::now();
        let (snap, dim) = self.store.lmdb.read(|r| {
            Ok((
                self.store.snapshot(r, self.opts.max_build)?,
                self.store.dimension(r)?,
            ))
        })?;
        let Some(dim) = dim else {
            return Ok(0);
        };
        if snap.adds.is_empty() && snap.dels.is_empty() {
            return Ok(0);
        }
        let shape = ann::TreeShape {
            trees: self.opts.trees,
            split_after: self.opts.split_after,
        };
        self.ann
            .build(dim as usize, &snap, &shape, &self.pool, &self.stop)?;
        self.store
            .lmdb
            .write(|w| self.store.finish_build(w, &snap))?;
        self.hot.remove(snap.adds.iter().map(|(id, _)| *id));
        let took = t0.elapsed();
        let mut c = self.wake.0.lock().unwrap_or_else(|p| p.into_inner());
        c.builds += 1;
        c.last_build = Some(took);
        tracing::debug!(
            index = %self.dir.display(),
            "built: +{} -{} in {took:?}", snap.adds.len(), snap.dels.len()
        );
        Ok(snap.adds.len())
    }

    /// Waits for writes and folds pending items into the trees per
    /// [`IndexOptions`]. Errors are logged and retried later: the store
    /// keeps everything pending, so searches stay complete meanwhile.
    fn builder_loop(&self) {
        let tick = Duration::from_millis(100);
        loop {
            let due = {
                let (m, cv) = &self.wake;
                let c = m.lock().unwrap_or_else(|p| p.into_inner());
                let (c, _) = cv.wait_timeout(c, tick).unwrap_or_else(|p| p.into_inner());
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                match c.first_pending {
                    None => false,
                    Some(first) => {
                        let idle = c
                            .last_write
                            .is_none_or(|w| w.elapsed() >= self.opts.idle_build);
                        idle || first.elapsed() >= self.opts.max_age
                    }
                }
            };
            let many = || {
                self.store
                    .lmdb
                    .read(|r| self.store.pending_len(r))
                    .map(|n| n >= self.opts.max_pending)
                    .unwrap_or(false)
            };
            if !due && !many() {
                continue;
            }
            {
                let mut c = self.wake.0.lock().unwrap_or_else(|p| p.into_inner());
                c.first_pending = None;
            }
            if let Err(e) = self.build() {
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                tracing::warn!("index build failed (will retry): {e}");
                let mut c = self.wake.0.lock().unwrap_or_else(|p| p.into_inner());
                c.first_pending.get_or_insert(Instant::now());
                drop(c);
                std::thread::sleep(Duration::from_secs(1));
            } else {
                // Writes that landed during the build are pending again.
                let left = self
                    .store
                    .lmdb
                    .read(|r| self.store.pending_len(r))
                    .unwrap_or(0);
                if left > 0 {
                    let mut c = self.wake.0.lock().unwrap_or_else(|p| p.into_inner());
                    c.first_pending.get_or_insert(Instant::now());
                }
            }
        }
    }
}

/// What an index holds, as its quota counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexUsage {
    pub documents: u64,
    /// Bytes of the LMDB pages in use in the store and the trees.
    pub bytes: u64,
}

/// Where a tenant's index lives under a data directory.
pub fn index_dir(data_dir: &Path, tenant: &str, name: &str) -> PathBuf {
    data_dir.join("index").join(tenant).join(name)
}

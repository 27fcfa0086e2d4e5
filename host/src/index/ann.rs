//! The approximate nearest-neighbour trees (arroy), in their own LMDB
//! environment. Only the background builder writes here; a build runs in
//! one write transaction, so a crash leaves the previous trees intact and
//! readers keep searching the previous snapshot while a build runs.
//!
//! Two layouts (see [`Layout`]): full-precision cosine trees that hold the
//! only copy of a built vector, or binary-quantised cosine trees (1 bit per
//! component) that only propose candidates, re-scored exactly from the
//! store's f32 copy.

use super::lmdb::Lmdb;
use super::store::PendingSnapshot;
use super::IndexError;
use arroy::distances::{BinaryQuantizedCosine, Cosine};
use arroy::{Distance, Reader, Writer};
use heed::byteorder::BE;
use heed::types::{Bytes, U64};
use heed::{CommitOrAbort, RoTxn};
use rand10::SeedableRng;
use roaring::RoaringBitmap;
use std::path::Path;

pub type ArroyDb = arroy::Database<'static, Cosine>;
type BinaryDb = arroy::Database<'static, BinaryQuantizedCosine>;

/// How an index keeps its vectors; fixed when its first vector is written
/// (store meta `layout`), so an index never mixes the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// arroy cosine trees over the f32 vectors; the trees' item records are
    /// the only copy of a built vector. Indexes written before layouts
    /// existed (no `layout` meta) are this. Measured at 100k x 384: the
    /// split nodes each store a full 1.5 KB normal, so the trees take
    /// about 3x the raw vectors.
    Float,
    /// arroy binary-quantised cosine trees (48 bytes per 384-d item and
    /// split normal) that propose `k x rescore` candidates, which are then
    /// scored exactly from the store's one f32 copy of every vector.
    Binary,
}

impl Layout {
    /// The store meta value (absent = [`Layout::Float`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Float => "float",
            Layout::Binary => "binary",
        }
    }

    pub fn parse(s: &[u8]) -> Option<Layout> {
        match s {
            b"float" => Some(Layout::Float),
            b"binary" => Some(Layout::Binary),
            _ => None,
        }
    }
}

/// arroy can hold several indexes in one database; we use one.
const ARROY_INDEX: u16 = 0;

/// arroy 0.9's key of item `id` (its `KeyCodec`: index u16 BE, mode u8
/// (3 = item), id u32 BE, one padding byte), as a big-endian u64.
fn item_key(id: u32) -> u64 {
    (u64::from(ARROY_INDEX) << 48) | (3 << 40) | (u64::from(id) << 8)
}

/// arroy 0.9's tag of an item record (`Node::Leaf`).
const LEAF_TAG: u8 = 0;

/// From this many trees on, builds keep the tree count (see `build`).
const KEEP_TREES_FROM: usize = 32;

/// How arroy shapes its forest (see `IndexOptions::trees`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TreeShape {
    pub trees: Option<usize>,
    pub split_after: Option<usize>,
}

/// What [`Ann::nearest`] asks the trees for.
#[derive(Debug, Clone, Copy)]
pub struct Nearest {
    /// The caller's top k.
    pub k: usize,
    /// How many to return (k, or k x rescore in the binary layout).
    pub count: usize,
    /// See `IndexOptions::oversampling`.
    pub oversampling: usize,
}

pub struct Ann {
    pub lmdb: Lmdb,
    db: ArroyDb,
    /// The same database read as binary-quantised trees.
    binary: BinaryDb,
}

impl Ann {
    pub fn open(dir: &Path, create: bool, initial_map: usize) -> Result<Ann, IndexError> {
        let lmdb = Lmdb::open(dir, 2, create, initial_map)?;
        let path = lmdb.path.clone();
        let make = |e: heed::Error| IndexError::lmdb(&path, "opening the trees", e);
        let db = if create {
            let wtxn = lmdb.env.write_txn().map_err(make)?;
            lmdb.env
                .create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
                    dbo.create_database(wtxn, Some("arroy"))
                        .map(CommitOrAbort::<_, ()>::Commit)
                })
                .map_err(make)?
                .unwrap_commit()
        } else {
            let rtxn = lmdb.env.read_txn().map_err(make)?;
            lmdb.env
                .open_databases_and_commit(rtxn, |dbo, rtxn| -> heed::Result<_> {
                    dbo.open_database(rtxn, Some("arroy"))
                        .map(CommitOrAbort::<_, ()>::Commit)
                })
                .map_err(make)?
                .unwrap_commit()
                .ok_or_else(|| IndexError::Corrupt {
                    path: dir.into(),
                    why: "missing trees".into(),
                })?
        };
        let binary = db.remap_data_type();
        Ok(Ann { lmdb, db, binary })
    }

    fn arroy_err(&self) -> impl Fn(arroy::Error) -> IndexError + '_ {
        |source| IndexError::Arroy {
            path: self.lmdb.path.clone(),
            source,
        }
    }

    /// The reader over the last build, or `None` before the first build.
    fn reader<'t, D: Distance>(
        &self,
        rtxn: &'t RoTxn,
        db: arroy::Database<'static, D>,
    ) -> Result<Option<Reader<'t, D>>, IndexError> {
        match Reader::open(rtxn, ARROY_INDEX, db) {
            Ok(r) => Ok(Some(r)),
            Err(arroy::Error::MissingMetadata(_)) => Ok(None),
            Err(e) => Err(self.arroy_err()(e)),
        }
    }

    /// Items the last build put in the trees. Read through arroy's
    /// metadata, which is the same for both layouts.
    pub fn item_ids(&self, layout: Layout) -> Result<RoaringBitmap, IndexError> {
        self.lmdb.read(|rtxn| {
            Ok(match layout {
                Layout::Float => self.reader(rtxn, self.db)?.map(|r| r.item_ids().clone()),
                Layout::Binary => self
                    .reader(rtxn, self.binary)?
                    .map(|r| r.item_ids().clone()),
            }
            .unwrap_or_default())
        })
    }

    /// Items the trees hold in `rtxn`'s snapshot; `None` before the first
    /// build.
    pub fn built_ids(
        &self,
        rtxn: &RoTxn,
        layout: Layout,
    ) -> Result<Option<RoaringBitmap>, IndexError> {
        Ok(match layout {
            Layout::Float => self.reader(rtxn, self.db)?.map(|r| r.item_ids().clone()),
            Layout::Binary => self
                .reader(rtxn, self.binary)?
                .map(|r| r.item_ids().clone()),
        })
    }

    /// The `q.count` nearest items of the trees to `vector` among
    /// `candidates`, as (id, cosine similarity). In the binary layout the
    /// similarity is the quantised one: only good for choosing what to
    /// score exactly.
    pub fn nearest(
        &self,
        rtxn: &RoTxn,
        layout: Layout,
        vector: &[f32],
        q: Nearest,
        candidates: Option<&RoaringBitmap>,
    ) -> Result<Vec<(u32, f32)>, IndexError> {
        fn run<D: Distance>(
            ann: &Ann,
            rtxn: &RoTxn,
            db: arroy::Database<'static, D>,
            vector: &[f32],
            n: Nearest,
            candidates: Option<&RoaringBitmap>,
        ) -> Result<Vec<(u32, f32)>, IndexError> {
            let Some(reader) = ann.reader(rtxn, db)? else {
                return Ok(Vec::new());
            };
            let mut q = reader.nns(n.count);
            // arroy's default visits `count x trees` leaf items, which
            // would grow with the re-score depth; the visit is sized by the
            // k asked for instead, so both layouts read as many tree items.
            // (arroy multiplies it by the oversampling).
            let visit = n.k.max(1) * reader.n_trees().max(1);
            if let Some(v) = std::num::NonZeroUsize::new(visit.max(n.count)) {
                q.search_k(v);
            }
            if let Some(o) = std::num::NonZeroUsize::new(n.oversampling) {
                q.oversampling(o);
            }
            if let Some(c) = candidates {
                q.candidates(c);
            }
            let found = q.by_vector(rtxn, vector).map_err(ann.arroy_err())?;
            // Both cosine distances are (1 - cos) / 2.
            Ok(found
                .into_iter()
                .map(|(id, d)| (id, 1.0 - 2.0 * d))
                .collect())
        }
        match layout {
            Layout::Float => run(self, rtxn, self.db, vector, q, candidates),
            Layout::Binary => run(self, rtxn, self.binary, vector, q, candidates),
        }
    }

    /// Applies a pending snapshot and rebuilds the trees, in one
    /// transaction. `threads` bounds the build's CPU use.
    pub fn build(
        &self,
        layout: Layout,
        dimension: usize,
        snap: &PendingSnapshot,
        shape: &TreeShape,
        pool: &rayon::ThreadPool,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<(), IndexError> {
        // Room for the new vectors and their share of tree nodes, so a build
        // is not thrown away half-way by a full map.
        self.lmdb
            .reserve(snap.adds.len() * (dimension * 4 + 64) * 3 + (16 << 20))?;
        // arroy picks a tree count by itself, and its pick swings between
        // builds (measured at 100k items: 126 -> 113 -> 122 trees, the last
        // step costing 5 s to add 10 items). Once the forest is sizeable its
        // count is kept, so an incremental build only updates trees.
        let trees = self.stats(layout)?.1;
        match layout {
            Layout::Float => self.build_with(self.db, trees, dimension, snap, shape, pool, cancel),
            Layout::Binary => {
                self.build_with(self.binary, trees, dimension, snap, shape, pool, cancel)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn build_with<D: Distance>(
        &self,
        db: arroy::Database<'static, D>,
        trees: usize,
        dimension: usize,
        snap: &PendingSnapshot,
        shape: &TreeShape,
        pool: &rayon::ThreadPool,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<(), IndexError> {
        let writer = Writer::<D>::new(db, ARROY_INDEX, dimension);
        let arroy_err = self.arroy_err();
        self.lmdb.write(|wtxn| {
            for (id, v) in &snap.adds {
                writer.add_item(wtxn, *id, v).map_err(&arroy_err)?;
            }
            for id in &snap.dels {
                writer.del_item(wtxn, *id).map_err(&arroy_err)?;
            }
            // A fixed seed keeps builds reproducible; quality does not
            // depend on it.
            let mut rng = rand10::rngs::StdRng::seed_from_u64(42);
            let mut builder = writer.builder(&mut rng);
            // Shutting down abandons a build (its transaction aborts, the
            // items stay pending) instead of waiting seconds for it.
            builder.cancel(|| cancel.load(std::sync::atomic::Ordering::Relaxed));
            match shape.trees {
                Some(n) => {
                    builder.n_trees(n.max(1));
                }
                None if trees >= KEEP_TREES_FROM => {
                    builder.n_trees(trees);
                }
                None => {}
            }
            if let Some(s) = shape.split_after {
                builder.split_after(s.max(2));
            }
            pool.install(|| builder.build(wtxn)).map_err(&arroy_err)
        })
    }

    /// Calls `f(id, vector bytes)` for every id of `ids` the trees hold,
    /// reading arroy's item records in place. The store keeps no copy of a
    /// built vector (it would double the disk), so the exact filtered scan
    /// and vector reuse read them here. The layout is arroy 0.9's (tag 0,
    /// the f32 norm, the f32 components in native byte order; checked
    /// against `Reader::item_vector` by a test); a record of another shape
    /// is an error, not a wrong score. A sparse set is looked up one by
    /// one, a dense one read with one cursor over its key range.
    pub fn scan_items(
        &self,
        rtxn: &RoTxn,
        dim: usize,
        ids: &RoaringBitmap,
        mut f: impl FnMut(u32, &[u8]),
    ) -> Result<(), IndexError> {
        let (Some(lo), Some(hi)) = (ids.min(), ids.max()) else {
            return Ok(());
        };
        // The 8-byte key read as a big-endian u64 sorts the same way.
        let raw = self.db.remap_types::<U64<BE>, Bytes>();
        let e = |x: heed::Error| IndexError::lmdb(&self.lmdb.path, "reading tree items", x);
        let want = 5 + 4 * dim;
        let mut emit = |id: u32, v: &[u8]| -> Result<(), IndexError> {
            match v.split_first() {
                Some((&LEAF_TAG, rest)) if v.len() == want => {
                    f(id, &rest[4..]);
                    Ok(())
                }
                _ => Err(IndexError::Corrupt {
                    path: self.lmdb.path.clone(),
                    why: format!("tree item {id} is not an arroy 0.9 leaf of {dim} dimensions"),
                }),
            }
        };
        // Measured at 100k x 384: a lookup costs ~0.6 µs, a cursor step
        // over an item not asked for ~0.1 µs, so the cursor wins from
        // about one id in six of the span.
        let span = u64::from(hi - lo) + 1;
        if ids.len() * 6 < span {
            for id in ids {
                if let Some(v) = raw.get(rtxn, &item_key(id)).map_err(e)? {
                    emit(id, v)?;
                }
            }
            return Ok(());
        }
        for r in raw.range(rtxn, &(item_key(lo)..=item_key(hi))).map_err(e)? {
            let (k, v) = r.map_err(e)?;
            let id = (k >> 8) as u32;
            if ids.contains(id) {
                emit(id, v)?;
            }
        }
        Ok(())
    }

    /// arroy's own reading of a float-layout item (tests check
    /// `scan_items` against it).
    #[cfg(test)]
    pub(super) fn float_item(&self, rtxn: &RoTxn, id: u32) -> Result<Option<Vec<f32>>, IndexError> {
        match self.reader(rtxn, self.db)? {
            Some(r) => r.item_vector(rtxn, id).map_err(self.arroy_err()),
            None => Ok(None),
        }
    }

    /// Bytes of the pages that hold the trees and items (see
    /// `Store::live_bytes`).
    pub fn live_bytes(&self) -> Result<u64, IndexError> {
        self.lmdb.read(|rtxn| {
            let s = self
                .db
                .stat(rtxn)
                .map_err(|e| IndexError::lmdb(&self.lmdb.path, "reading page counts", e))?;
            Ok(super::store::page_bytes(&s))
        })
    }

    /// (items, trees) of the last build.
    pub fn stats(&self, layout: Layout) -> Result<(u64, usize), IndexError> {
        self.lmdb.read(|rtxn| {
            Ok(match layout {
                Layout::Float => self
                    .reader(rtxn, self.db)?
                    .map(|r| (r.n_items(), r.n_trees())),
                Layout::Binary => self
                    .reader(rtxn, self.binary)?
                    .map(|r| (r.n_items(), r.n_trees())),
            }
            .unwrap_or((0, 0)))
        })
    }
}

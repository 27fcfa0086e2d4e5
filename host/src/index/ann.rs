//! The approximate nearest-neighbour trees (arroy, cosine), in their own
//! LMDB environment. Only the background builder writes here; a build runs
//! in one write transaction, so a crash leaves the previous trees intact and
//! readers keep searching the previous snapshot while a build runs.

use super::lmdb::Lmdb;
use super::store::PendingSnapshot;
use super::IndexError;
use arroy::distances::Cosine;
use arroy::{Reader, Writer};
use heed::byteorder::BE;
use heed::types::{Bytes, U64};
use heed::{CommitOrAbort, RoTxn};
use rand10::SeedableRng;
use roaring::RoaringBitmap;
use std::path::Path;

pub type ArroyDb = arroy::Database<'static, Cosine>;

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

pub struct Ann {
    pub lmdb: Lmdb,
    db: ArroyDb,
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
        Ok(Ann { lmdb, db })
    }

    /// The reader over the last build, or `None` before the first build.
    pub fn reader<'t>(&self, rtxn: &'t RoTxn) -> Result<Option<Reader<'t, Cosine>>, IndexError> {
        match Reader::open(rtxn, ARROY_INDEX, self.db) {
            Ok(r) => Ok(Some(r)),
            Err(arroy::Error::MissingMetadata(_)) => Ok(None),
            Err(e) => Err(IndexError::Arroy {
                path: self.lmdb.path.clone(),
                source: e,
            }),
        }
    }

    pub fn item_ids(&self) -> Result<RoaringBitmap, IndexError> {
        self.lmdb.read(|rtxn| {
            Ok(self
                .reader(rtxn)?
                .map(|r| r.item_ids().clone())
                .unwrap_or_default())
        })
    }

    /// Applies a pending snapshot and rebuilds the trees, in one
    /// transaction. `threads` bounds the build's CPU use.
    pub fn build(
        &self,
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
        let trees = self.stats()?.1;
        let writer = Writer::<Cosine>::new(self.db, ARROY_INDEX, dimension);
        let path = self.lmdb.path.clone();
        let arroy_err = |e: arroy::Error| IndexError::Arroy {
            path: path.clone(),
            source: e,
        };
        let e = |x: heed::Error| IndexError::lmdb(&self.lmdb.path, "reading tree items", x);
        self.lmdb.write(|wtxn| {
            // New items (ids only grow) are appended (`MDB_APPEND`): LMDB
            // then fills pages instead of splitting them in half. A 384-d
            // item record (1.5 KB) fits two to a 4 KB page, and plain puts
            // of ascending keys left one per page: measured at 100k x 384,
            // the items took 2.7x the raw vectors, most of the trees' disk.
            // Item keys sort last in the database (mode 3), so the last key
            // is the highest item.
            let mut last = self
                .db
                .remap_types::<U64<BE>, heed::types::DecodeIgnore>()
                .last(wtxn)
                .map_err(e)?
                .map(|(k, _)| k)
                .filter(|k| k >> 40 == (u64::from(ARROY_INDEX) << 8) | 3)
                .map(|k| (k >> 8) as u32);
            for (id, v) in &snap.adds {
                if last.is_none_or(|l| *id > l) {
                    writer.append_item(wtxn, *id, v).map_err(arroy_err)?;
                    last = Some(*id);
                } else {
                    writer.add_item(wtxn, *id, v).map_err(arroy_err)?;
                }
            }
            for id in &snap.dels {
                writer.del_item(wtxn, *id).map_err(arroy_err)?;
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
            pool.install(|| builder.build(wtxn)).map_err(arroy_err)
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

    pub fn stats(&self) -> Result<(u64, usize), IndexError> {
        self.lmdb.read(|rtxn| {
            Ok(match self.reader(rtxn)? {
                Some(r) => (r.n_items(), r.n_trees()),
                None => (0, 0),
            })
        })
    }
}

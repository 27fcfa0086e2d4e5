//! One LMDB environment with a map that grows by itself.
//!
//! LMDB needs a maximum map size up front, and resizing is only allowed while
//! no transaction of this process is open. Every transaction therefore runs
//! under a shared gate; when a write fails with `MDB_MAP_FULL` the writer
//! takes the gate exclusively (waiting for readers to finish), doubles the
//! map and runs the whole transaction again. Operators never size anything.

use super::IndexError;
use heed::{Env, EnvOpenOptions, RoTxn, RwTxn};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Map size of a new environment. The map is virtual address space, not
/// disk: the file only grows with the data.
pub const INITIAL_MAP: usize = 256 << 20;

pub struct Lmdb {
    pub env: Env,
    pub path: PathBuf,
    gate: RwLock<()>,
}

impl Lmdb {
    /// Opens (creating if `create`) the environment in directory `path`.
    pub fn open(
        path: &Path,
        max_dbs: u32,
        create: bool,
        initial_map: usize,
    ) -> Result<Lmdb, IndexError> {
        if create {
            std::fs::create_dir_all(path).map_err(|e| IndexError::Io {
                path: path.to_path_buf(),
                source: e,
            })?;
        } else if !path.join("data.mdb").exists() {
            return Err(IndexError::Missing(path.to_path_buf()));
        }
        let page = page_size();
        let existing = std::fs::metadata(path.join("data.mdb"))
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let map = round_up((existing * 2).max(initial_map), page);
        // SAFETY: heed requires that the same environment is not opened twice
        // in one process (it checks and errors) and that the files are not
        // modified by non-LMDB code; the index directory is ours alone.
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(map)
                .max_dbs(max_dbs)
                .open(path)
        }
        .map_err(|e| IndexError::lmdb(path, "opening", e))?;
        Ok(Lmdb {
            env,
            path: path.to_path_buf(),
            gate: RwLock::new(()),
        })
    }

    /// Runs `f` in a read transaction.
    pub fn read<R>(
        &self,
        mut f: impl FnMut(&RoTxn) -> Result<R, IndexError>,
    ) -> Result<R, IndexError> {
        loop {
            let attempt = {
                let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
                match self.env.read_txn() {
                    Ok(rtxn) => Ok(f(&rtxn)),
                    Err(e) => Err(e),
                }
            };
            match attempt {
                Ok(r) => return r,
                // Another process grew the map; adopt its size and retry.
                Err(heed::Error::Mdb(heed::MdbError::MapResized)) => self.resize(0)?,
                Err(e) => return Err(IndexError::lmdb(&self.path, "reading", e)),
            }
        }
    }

    /// Runs `f` in a write transaction and commits it; on a full map, grows
    /// the map and runs `f` again from the start (the failed transaction was
    /// aborted, so nothing of it is visible).
    pub fn write<R>(
        &self,
        mut f: impl FnMut(&mut RwTxn) -> Result<R, IndexError>,
    ) -> Result<R, IndexError> {
        loop {
            let attempt: Result<R, IndexError> = {
                let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
                let mut wtxn = self
                    .env
                    .write_txn()
                    .map_err(|e| IndexError::lmdb(&self.path, "starting a write", e))?;
                match f(&mut wtxn) {
                    Ok(r) => wtxn
                        .commit()
                        .map(|()| r)
                        .map_err(|e| IndexError::lmdb(&self.path, "committing", e)),
                    Err(e) => Err(e),
                }
            };
            match attempt {
                Err(e) if e.is_map_full() => {
                    let size = self.env.info().map_size;
                    tracing::info!(path = %self.path.display(), "index map full at {} MiB; growing", size >> 20);
                    self.resize(size.saturating_mul(2))?;
                }
                other => return other,
            }
        }
    }

    /// Makes sure the map has room for `extra` more bytes than the data
    /// holds now, so a long transaction (an index build) is not redone.
    pub fn reserve(&self, extra: usize) -> Result<(), IndexError> {
        let used = self.used_bytes();
        let map = self.env.info().map_size;
        let want = used.saturating_add(extra).saturating_mul(2);
        if want > map {
            self.resize(want)?;
        }
        Ok(())
    }

    fn resize(&self, size: usize) -> Result<(), IndexError> {
        let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let size = if size == 0 {
            0
        } else {
            round_up(size, page_size())
        };
        // SAFETY: the exclusive gate guarantees no transaction of this
        // process is open, which is what mdb_env_set_mapsize requires.
        unsafe { self.env.resize(size) }.map_err(|e| IndexError::lmdb(&self.path, "resizing", e))
    }

    /// Bytes of pages in use (the data file can be larger after deletes,
    /// LMDB reuses its free pages).
    pub fn used_bytes(&self) -> usize {
        let info = self.env.info();
        (info.last_page_number + 1) * page_size()
    }

    pub fn map_bytes(&self) -> usize {
        self.env.info().map_size
    }

    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(self.path.join("data.mdb"))
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

fn page_size() -> usize {
    page_size::get()
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

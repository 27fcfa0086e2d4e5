//! Tables: the latest value per key of a tenant's (compacted) topic, kept in
//! one LMDB environment per tenant, so a plugin can join a record with what
//! the company knows (a customer's profile for a question) without a call to
//! another service.
//!
//! This module only stores: [`crate::stream::table`] follows the topics and
//! applies their records here. Each apply writes the rows *and* the next
//! offset to read per partition in one transaction, so after a crash or a
//! restart the table reopens exactly where it was and the follower resumes
//! after the last applied record: nothing is applied twice out of order or
//! lost, and the table never has to be rebuilt from the beginning.
//!
//! Layout: `<data dir>/table/<tenant>/` holds the tenant's environment, with
//! three databases per table: `rows.<name>` (key -> value), `next.<name>`
//! (partition -> next offset) and `topic.<name>` (the topic the rows came
//! from; a table pointed at another topic starts empty).

use heed::types::{Bytes, Str};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why a table could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("table store {}: {what}: {source}", .path.display())]
    Lmdb {
        path: PathBuf,
        what: String,
        #[source]
        source: heed::Error,
    },
    #[error("table store {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The tenant's table store is at its size limit (`max_table_mb`).
    #[error("table `{table}` of tenant `{tenant}` is full: the tenant's tables reached {limit_mb} MiB ({rule}); the update waits until space is freed or the limit raised")]
    Full {
        tenant: String,
        table: String,
        limit_mb: u64,
        rule: String,
    },
}

impl TableError {
    fn lmdb(path: &Path, what: impl Into<String>, source: heed::Error) -> TableError {
        TableError::Lmdb {
            path: path.to_path_buf(),
            what: what.into(),
            source,
        }
    }
}

/// One record to apply: `value = None` is a tombstone (deletes the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// The next offset to read per partition after `records` (partition,
/// offset) were read.
pub fn offsets_after(records: impl IntoIterator<Item = (i32, i64)>) -> BTreeMap<i32, i64> {
    let mut after = BTreeMap::new();
    for (p, o) in records {
        let e = after.entry(p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    after
}

type Rows = Database<'static, Str, Bytes>;

/// The tables of one tenant, in one LMDB environment.
pub struct TableStore {
    tenant: String,
    env: Env,
    path: PathBuf,
    limit_mb: u64,
    rule: String,
    /// Database handles, opened once per table.
    dbs: Mutex<HashMap<String, (Rows, Rows, Rows)>>,
}

/// Tables per tenant environment (LMDB needs the count at open time).
const MAX_TABLES: u32 = 64;

impl TableStore {
    /// Opens (or creates) the tenant's store at `dir`, at most `limit_mb`
    /// MiB on disk (`rule` names the policy line, for the message when full).
    pub fn open(
        dir: &Path,
        tenant: &str,
        limit_mb: u64,
        rule: &str,
    ) -> Result<TableStore, TableError> {
        std::fs::create_dir_all(dir).map_err(|source| TableError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        // The map size is the hard limit of the files: LMDB refuses a write
        // past it with MDB_MAP_FULL, which becomes `TableError::Full`.
        let map = usize::try_from(limit_mb.max(1).saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        // SAFETY: the directory is weft's alone and opened once per process
        // (the registry keeps one store per tenant).
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(map)
                .max_dbs(MAX_TABLES * 3)
                .open(dir)
        }
        .map_err(|e| TableError::lmdb(dir, "opening", e))?;
        Ok(TableStore {
            tenant: tenant.to_string(),
            env,
            path: dir.to_path_buf(),
            limit_mb,
            rule: rule.to_string(),
            dbs: Mutex::new(HashMap::new()),
        })
    }

    /// The databases of `table`, created on first use.
    fn dbs(&self, table: &str) -> Result<(Rows, Rows, Rows), TableError> {
        let mut dbs = self.dbs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = dbs.get(table) {
            return Ok(*d);
        }
        let w = self
            .env
            .write_txn()
            .map_err(|e| TableError::lmdb(&self.path, "starting a transaction", e))?;
        let d = self
            .env
            .create_databases_and_commit(w, |dbo, w| -> heed::Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit((
                    dbo.create_database(w, Some(&format!("rows.{table}")))?,
                    dbo.create_database(w, Some(&format!("next.{table}")))?,
                    dbo.create_database(w, Some(&format!("topic.{table}")))?,
                )))
            })
            .map_err(|e| TableError::lmdb(&self.path, format!("opening table `{table}`"), e))?
            .unwrap_commit();
        dbs.insert(table.to_string(), d);
        Ok(d)
    }

    /// Binds `table` to `topic`: a table that held another topic's rows is
    /// emptied (its offsets mean nothing for the new topic).
    pub fn bind(&self, table: &str, topic: &str) -> Result<(), TableError> {
        let (rows, next, topics) = self.dbs(table)?;
        let mut w = self
            .env
            .write_txn()
            .map_err(|e| TableError::lmdb(&self.path, "starting a transaction", e))?;
        let current = topics
            .get(&w, "topic")
            .map_err(|e| TableError::lmdb(&self.path, "reading", e))?
            .map(<[u8]>::to_vec);
        if current.as_deref() != Some(topic.as_bytes()) {
            if current.is_some() {
                tracing::warn!(tenant = %self.tenant, "table `{table}` now follows {topic}: emptied, it is read again from the beginning");
            }
            for db in [rows, next] {
                db.clear(&mut w)
                    .map_err(|e| TableError::lmdb(&self.path, "clearing", e))?;
            }
            topics
                .put(&mut w, "topic", topic.as_bytes())
                .map_err(|e| TableError::lmdb(&self.path, "writing", e))?;
        }
        w.commit()
            .map_err(|e| TableError::lmdb(&self.path, "committing", e))
    }

    /// The value of `key`, if present.
    pub fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, TableError> {
        let (rows, _, _) = self.dbs(table)?;
        let r = self
            .env
            .read_txn()
            .map_err(|e| TableError::lmdb(&self.path, "starting a read", e))?;
        Ok(rows
            .get(&r, key)
            .map_err(|e| TableError::lmdb(&self.path, format!("reading table `{table}`"), e))?
            .map(<[u8]>::to_vec))
    }

    /// Applies `changes` (in topic order) and `next` (the next offset to
    /// read per partition, which also covers records that changed nothing)
    /// in one transaction: all of it is durable, or none.
    pub fn apply(
        &self,
        table: &str,
        changes: &[Change],
        next_offsets: &BTreeMap<i32, i64>,
    ) -> Result<(), TableError> {
        let (rows, next, _) = self.dbs(table)?;
        let mut w = self
            .env
            .write_txn()
            .map_err(|e| TableError::lmdb(&self.path, "starting a transaction", e))?;
        let full = |e: heed::Error| match e {
            heed::Error::Mdb(heed::MdbError::MapFull) => TableError::Full {
                tenant: self.tenant.clone(),
                table: table.to_string(),
                limit_mb: self.limit_mb,
                rule: self.rule.clone(),
            },
            e => TableError::lmdb(&self.path, format!("writing table `{table}`"), e),
        };
        for c in changes {
            match &c.value {
                Some(v) => rows.put(&mut w, &c.key, v).map_err(full)?,
                None => {
                    rows.delete(&mut w, &c.key).map_err(full)?;
                }
            }
        }
        for (p, o) in next_offsets {
            next.put(&mut w, &p.to_string(), &o.to_le_bytes())
                .map_err(full)?;
        }
        w.commit().map_err(full)
    }

    /// The next offset to read per partition (partitions never applied are
    /// absent: read them from the beginning).
    pub fn next_offsets(&self, table: &str) -> Result<BTreeMap<i32, i64>, TableError> {
        let (_, next, _) = self.dbs(table)?;
        let r = self
            .env
            .read_txn()
            .map_err(|e| TableError::lmdb(&self.path, "starting a read", e))?;
        let mut out = BTreeMap::new();
        for kv in next
            .iter(&r)
            .map_err(|e| TableError::lmdb(&self.path, "reading offsets", e))?
        {
            let (p, o) = kv.map_err(|e| TableError::lmdb(&self.path, "reading offsets", e))?;
            let (Ok(p), Ok(o)) = (p.parse::<i32>(), <[u8; 8]>::try_from(o)) else {
                continue;
            };
            out.insert(p, i64::from_le_bytes(o));
        }
        Ok(out)
    }

    /// How many keys `table` holds.
    pub fn len(&self, table: &str) -> Result<u64, TableError> {
        let (rows, _, _) = self.dbs(table)?;
        let r = self
            .env
            .read_txn()
            .map_err(|e| TableError::lmdb(&self.path, "starting a read", e))?;
        rows.len(&r)
            .map_err(|e| TableError::lmdb(&self.path, "counting", e))
    }
}

/// The tenants' table stores of one process, each opened once.
pub struct TableRegistry {
    data_dir: PathBuf,
    stores: Mutex<HashMap<String, Arc<TableStore>>>,
}

impl TableRegistry {
    pub fn new(data_dir: &Path) -> TableRegistry {
        TableRegistry {
            data_dir: data_dir.to_path_buf(),
            stores: Mutex::new(HashMap::new()),
        }
    }

    /// `tenant`'s store, opened on first use with `limit_mb` (`rule` names
    /// where the limit comes from).
    pub fn store(
        &self,
        tenant: &str,
        limit_mb: u64,
        rule: &str,
    ) -> Result<Arc<TableStore>, TableError> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = stores.get(tenant) {
            return Ok(s.clone());
        }
        let dir = self.data_dir.join("table").join(tenant);
        let s = Arc::new(TableStore::open(&dir, tenant, limit_mb, rule)?);
        stores.insert(tenant.to_string(), s.clone());
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(k: &str, v: Option<&str>) -> Change {
        Change {
            key: k.into(),
            value: v.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn last_value_wins_a_tombstone_deletes_and_offsets_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = TableStore::open(dir.path(), "t", 16, "test").unwrap();
            s.bind("customers", "t.customers").unwrap();
            s.apply(
                "customers",
                &[
                    change("a", Some("1")),
                    change("b", Some("2")),
                    change("a", Some("3")),
                    change("b", None),
                ],
                &offsets_after([(0, 0), (1, 0), (0, 1), (1, 1)]),
            )
            .unwrap();
        }
        let s = TableStore::open(dir.path(), "t", 16, "test").unwrap();
        s.bind("customers", "t.customers").unwrap();
        assert_eq!(s.get("customers", "a").unwrap(), Some(b"3".to_vec()));
        assert_eq!(s.get("customers", "b").unwrap(), None);
        assert_eq!(s.len("customers").unwrap(), 1);
        assert_eq!(
            s.next_offsets("customers").unwrap(),
            BTreeMap::from([(0, 2), (1, 2)])
        );
        // Pointed at another topic: emptied, read again from the start.
        s.bind("customers", "t.people").unwrap();
        assert_eq!(s.get("customers", "a").unwrap(), None);
        assert!(s.next_offsets("customers").unwrap().is_empty());
    }

    #[test]
    fn a_full_store_refuses_the_write_and_says_which_limit() {
        let dir = tempfile::tempdir().unwrap();
        let s = TableStore::open(dir.path(), "t", 1, "policy.toml:3:1 max_table_mb = 1").unwrap();
        s.bind("big", "t.big").unwrap();
        let value = vec![7u8; 64 << 10];
        let mut err = None;
        for i in 0..64 {
            if let Err(e) = s.apply(
                "big",
                &[Change {
                    key: format!("k{i}"),
                    value: Some(value.clone()),
                }],
                &offsets_after([(0, i)]),
            ) {
                err = Some(e);
                break;
            }
        }
        let e = err.expect("64 values of 64 KiB cannot fit in 1 MiB");
        assert!(matches!(e, TableError::Full { .. }), "{e}");
        assert!(e.to_string().contains("max_table_mb = 1"), "{e}");
        // What was applied before stays readable.
        assert_eq!(s.get("big", "k0").unwrap().map(|v| v.len()), Some(64 << 10));
    }
}

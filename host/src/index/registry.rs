//! The open indexes of one process, and read-only views of indexes another
//! process writes.

use super::{index_dir, IndexError, IndexOptions, VectorIndex};
use crate::policy::Policy;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A tenant's index quota: how many indexes it may write, and how big one
/// may grow. Each limit carries the policy rule it comes from, for the
/// messages that refuse writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexQuota {
    pub max_indexes: u64,
    pub max_documents: u64,
    pub max_bytes: u64,
    pub indexes_rule: String,
    pub documents_rule: String,
    pub bytes_rule: String,
}

impl IndexQuota {
    /// No limits (the default of a registry nobody gave a policy).
    pub fn unlimited() -> IndexQuota {
        IndexQuota {
            max_indexes: u64::MAX,
            max_documents: u64::MAX,
            max_bytes: u64::MAX,
            indexes_rule: "no quota".into(),
            documents_rule: "no quota".into(),
            bytes_rule: "no quota".into(),
        }
    }

    /// The index quotas of `policy` (`max_indexes`, `max_index_documents`,
    /// `max_index_mb`).
    pub fn from_policy(policy: &Policy) -> IndexQuota {
        IndexQuota {
            max_indexes: policy.max_indexes,
            max_documents: policy.max_index_documents,
            max_bytes: policy.max_index_mb.saturating_mul(1 << 20),
            indexes_rule: policy.rule("max_indexes"),
            documents_rule: policy.rule("max_index_documents"),
            bytes_rule: policy.rule("max_index_mb"),
        }
    }
}

/// The open indexes of one process, so pipelines sharing an index (the
/// ingest and query paths of one tenant) share one handle and one builder.
///
/// An index is opened for writing (with its writer lock and builder) only
/// if a pipeline of this process writes it ([`IndexRegistry::will_write`]);
/// a process that only searches opens it read-only, so query processes can
/// scale out beside the one process that ingests.
pub struct IndexRegistry {
    data_dir: PathBuf,
    opts: IndexOptions,
    writers: Mutex<HashSet<(String, String)>>,
    open: Mutex<HashMap<(String, String), Arc<VectorIndex>>>,
    readers: Mutex<HashMap<(String, String), Arc<ReadOnlyIndex>>>,
    /// Per tenant; tenants not listed have `default_quota`.
    quotas: Mutex<HashMap<String, IndexQuota>>,
    default_quota: Mutex<IndexQuota>,
}

/// An index handle for searching: the writer's own, or a read-only view.
pub enum Searcher {
    Writer(Arc<VectorIndex>),
    Reader(Arc<ReadOnlyIndex>),
}

impl IndexRegistry {
    pub fn new(data_dir: &Path, opts: IndexOptions) -> IndexRegistry {
        IndexRegistry {
            data_dir: data_dir.to_path_buf(),
            opts,
            writers: Mutex::new(HashSet::new()),
            open: Mutex::new(HashMap::new()),
            readers: Mutex::new(HashMap::new()),
            quotas: Mutex::new(HashMap::new()),
            default_quota: Mutex::new(IndexQuota::unlimited()),
        }
    }

    /// Sets `tenant`'s index quota, for indexes opened from now on.
    pub fn set_quota(&self, tenant: &str, quota: IndexQuota) {
        self.quotas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_string(), quota);
    }

    /// Sets the quota of every tenant without one of its own.
    pub fn set_default_quota(&self, quota: IndexQuota) {
        *self.default_quota.lock().unwrap_or_else(|p| p.into_inner()) = quota;
    }

    /// `tenant`'s index quota.
    pub fn quota(&self, tenant: &str) -> IndexQuota {
        match self
            .quotas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
        {
            Some(q) => q.clone(),
            None => self
                .default_quota
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Refuses to open `name` for writing if it would be more than the
    /// tenant's `max_indexes`: counting the indexes it has on disk and those
    /// this process has open, an index not among them is a new one.
    fn check_index_count(
        &self,
        open: &HashMap<(String, String), Arc<VectorIndex>>,
        tenant: &str,
        name: &str,
    ) -> Result<(), IndexError> {
        let quota = self.quota(tenant);
        let mut names: HashSet<String> = open
            .keys()
            .filter(|(t, _)| t == tenant)
            .map(|(_, n)| n.clone())
            .collect();
        let tenant_dir = self.data_dir.join("index").join(tenant);
        if let Ok(entries) = std::fs::read_dir(&tenant_dir) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    names.insert(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        if names.contains(name) || (names.len() as u64) < quota.max_indexes {
            return Ok(());
        }
        Err(IndexError::Quota(format!(
            "tenant `{tenant}` already has {} indexes, its maximum ({}); index `{name}` was not created",
            names.len(),
            quota.indexes_rule
        )))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Declares that a pipeline of this process writes the index, so
    /// searches in this process share the writer's handle. Call it for every
    /// manifest before building pipelines.
    pub fn will_write(&self, tenant: &str, name: &str) {
        self.writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((tenant.to_string(), name.to_string()));
    }

    /// The tenant's index `name` for writing, opened (and created) on first
    /// use. A tenant can only ever name its own indexes: the tenant is part
    /// of the path and names cannot contain separators (checked by the
    /// manifest).
    pub fn open(&self, tenant: &str, name: &str) -> Result<Arc<VectorIndex>, IndexError> {
        self.will_write(tenant, name);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.to_string(), name.to_string());
        if let Some(i) = open.get(&key) {
            return Ok(i.clone());
        }
        self.check_index_count(&open, tenant, name)?;
        let i = Arc::new(VectorIndex::open(
            &index_dir(&self.data_dir, tenant, name),
            self.opts.clone(),
        )?);
        open.insert(key, i.clone());
        Ok(i)
    }

    /// The tenant's index `name` for searching: the writer's handle if this
    /// process writes it, else a read-only view that opens once the index
    /// exists (searching an index nobody has written yet finds nothing).
    pub fn searcher(&self, tenant: &str, name: &str) -> Result<Searcher, IndexError> {
        let key = (tenant.to_string(), name.to_string());
        let writes = self
            .writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key);
        if writes {
            return Ok(Searcher::Writer(self.open(tenant, name)?));
        }
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        let r = readers
            .entry(key)
            .or_insert_with(|| {
                Arc::new(ReadOnlyIndex {
                    dir: index_dir(&self.data_dir, tenant, name),
                    index: Mutex::new(None),
                    warned: AtomicBool::new(false),
                })
            })
            .clone();
        Ok(Searcher::Reader(r))
    }
}

/// A read-only view of an index another process writes, opened on first
/// search (and retried until the index exists).
pub struct ReadOnlyIndex {
    dir: PathBuf,
    index: Mutex<Option<Arc<VectorIndex>>>,
    /// Said once: searching an index nobody wrote is usually a wrong
    /// `--data-dir` or index name.
    warned: AtomicBool,
}

impl ReadOnlyIndex {
    /// The index, opened now if it exists; `None` while nobody has written it.
    pub fn index(&self) -> Result<Option<Arc<VectorIndex>>, IndexError> {
        let mut slot = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ix) = &*slot {
            return Ok(Some(ix.clone()));
        }
        match VectorIndex::open_read_only(&self.dir) {
            Ok(ix) => {
                let ix = Arc::new(ix);
                *slot = Some(ix.clone());
                Ok(Some(ix))
            }
            Err(IndexError::Missing(_)) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "index {} does not exist (yet): searches find nothing until a pipeline writes it; check --data-dir and the index name",
                        self.dir.display()
                    );
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

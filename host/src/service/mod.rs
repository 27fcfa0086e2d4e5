//! The service layer: what the `weft` commands do, as library functions
//! with typed results, so tests, benches and other hosts drive them
//! in-process and the CLI only parses arguments and prints.
//!
//! - [`Host`]: a runtime, the operator's policy and the index registry of
//!   one process; turns manifests into checked, runnable pipelines;
//! - [`run`]: pipelines between Kafka topics or over a JSON Lines file;
//! - [`check`]: every problem of a manifest, for `weft check`;
//! - [`scenario`] and [`eval`]: a scenario directory (manifests, data files,
//!   questions with gold documents) run end to end and scored;
//! - [`indexes`]: looking into tenants' indexes (`weft index`);
//! - [`dev`]: one pipeline fed from a file through a local broker;
//! - [`exporter`] and [`admin`]: the `--metrics` endpoint (Prometheus) and
//!   the `--admin` JSON API of a running process, over [`http`];
//!   [`console`]: the web console the admin server serves at `/`.

pub mod admin;
pub mod check;
pub mod console;
pub mod dev;
pub mod eval;
pub mod exporter;
pub mod http;
pub mod indexes;
pub mod run;
pub mod scenario;
pub mod serve;
pub mod tenants;

use crate::index::{IndexError, IndexOptions, IndexQuota, IndexRegistry};
use crate::manifest::Manifest;
use crate::metrics::{IndexFigures, Metrics};
use crate::pipeline::{Pipeline, PipelineError};
use crate::policy::Policy;
use crate::runtime::{Runtime, TenantAccount};
use crate::stream::broker::LocalBroker;
use crate::stream::table::{Followers, PipelineTables};
use crate::stream::StreamError;
use crate::table::TableRegistry;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why a service call failed. Every variant names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A manifest is malformed or exceeds the policy: one `file:line:col:
    /// message` line per problem.
    #[error("{}", .0.join("\n"))]
    Manifest(Vec<String>),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The Wasm runtime could not start (engine, compile cache).
    #[error("starting the Wasm runtime: {0:#}")]
    Runtime(#[source] anyhow::Error),
    /// The broker, a topic or a running pipeline failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A run did not complete: a pipeline stopped early or a step timed out.
    #[error("{0}")]
    Run(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// An input file (documents, questions, a scenario) is not what it must be.
    #[error("{0}")]
    Input(String),
    /// A named tenant, pipeline or record is not there.
    #[error("{0}")]
    NotFound(String),
}

impl ServiceError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> ServiceError {
        ServiceError::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// The broker to use: `brokers` if given, else a local one started in `dir`
/// and kept running as long as the returned handle lives. `announce` hears
/// `None` before a local broker starts and `Some(address)` once it listens.
fn broker_or_local(
    brokers: Option<String>,
    dir: &Path,
    mut announce: impl FnMut(Option<&str>),
) -> Result<(Option<LocalBroker>, String)> {
    match brokers {
        Some(b) => Ok((None, b)),
        None => {
            announce(None);
            let b = LocalBroker::start(dir)?;
            let addr = b.address();
            announce(Some(&addr));
            Ok((Some(b), addr))
        }
    }
}

/// One process's plugin host: the Wasm runtime, the operator's policy and
/// the tenants' indexes under one data directory.
pub struct Host {
    pub runtime: Runtime,
    /// Indexes (`index/`) and what topic sinks keep across restarts (`sink/`).
    pub data_dir: PathBuf,
    pub policy: Policy,
    pub indexes: Arc<IndexRegistry>,
    /// The tenants' tables (`table/`).
    pub tables: TableRegistry,
    /// Keeps tables up to date from their topics once the broker is known
    /// ([`Host::follow_tables`]); until then pipelines read tables as stored.
    followers: Mutex<Option<Arc<Followers>>>,
    /// One account per tenant, shared by all its pipelines in this process.
    accounts: Mutex<HashMap<String, Arc<TenantAccount>>>,
    /// What this process exports on `--metrics`; every pipeline the
    /// service runs counts into it.
    pub metrics: Metrics,
    /// `(tenant, index)` of every index a pipeline of this process writes:
    /// the indexes whose figures a scrape reports.
    written: Arc<Mutex<BTreeSet<(String, String)>>>,
}

/// Renders a host's metrics for a scrape: the series pipelines push, and
/// the figures of the indexes this process writes, read at scrape time
/// (one LMDB read transaction per index).
#[derive(Clone)]
pub struct Scraper {
    metrics: Metrics,
    indexes: Arc<IndexRegistry>,
    written: Arc<Mutex<BTreeSet<(String, String)>>>,
}

impl Scraper {
    /// The Prometheus text of everything, now.
    pub fn scrape(&self) -> String {
        let written: Vec<(String, String)> = self
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        for (tenant, name) in written {
            let stats = self.indexes.open(&tenant, &name).and_then(|i| i.stats());
            match stats {
                Ok(s) => self.metrics.set_index(
                    &tenant,
                    &name,
                    IndexFigures {
                        documents: s.documents,
                        chunks: s.chunks,
                        pending: s.pending,
                        bytes: s.store_live_bytes + s.trees_live_bytes,
                    },
                ),
                Err(e) => tracing::warn!("metrics: index {tenant}/{name}: {e}"),
            }
        }
        self.metrics.encode()
    }
}

impl Host {
    /// `cache_dir`: the compiled-component cache (default
    /// `$WEFT_CACHE_DIR` or `~/.cache/weft`); `data_dir`: where indexes live.
    pub fn new(cache_dir: Option<PathBuf>, policy: Policy, data_dir: &Path) -> Result<Host> {
        Ok(Host {
            runtime: Runtime::new(cache_dir).map_err(ServiceError::Runtime)?,
            data_dir: data_dir.to_path_buf(),
            policy,
            indexes: Arc::new(IndexRegistry::new(data_dir, IndexOptions::default())),
            tables: TableRegistry::new(data_dir),
            followers: Mutex::new(None),
            accounts: Mutex::new(HashMap::new()),
            metrics: Metrics::new(),
            written: Arc::new(Mutex::new(BTreeSet::new())),
        })
    }

    /// Follows the tables of the pipelines prepared from now on from the
    /// topics on `brokers` (one follower per tenant table in this process).
    pub fn follow_tables(&self, brokers: &str) {
        let mut f = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(Arc::new(Followers::new(brokers)));
        }
    }

    /// Stops following tables (their stores stay as they are).
    pub fn stop_tables(&self) {
        if let Some(f) = self
            .followers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            f.stop_all();
        }
    }

    /// Declares that a pipeline of this process writes `tenant`'s index
    /// `name` (searches share the writer's handle; scrapes report it).
    pub fn will_write(&self, tenant: &str, name: &str) {
        self.indexes.will_write(tenant, name);
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((tenant.to_string(), name.to_string()));
    }

    /// What renders this host's metrics, for an exporter thread.
    pub fn scraper(&self) -> Scraper {
        Scraper {
            metrics: self.metrics.clone(),
            indexes: self.indexes.clone(),
            written: self.written.clone(),
        }
    }

    /// Loads a manifest and checks it against the policy.
    pub fn load(&self, path: &Path) -> Result<Manifest> {
        check::load_checked(&self.policy, path)
    }

    /// Loads, checks and prepares the pipelines of `manifests`, declaring
    /// first every index one of them writes, so that searches in this
    /// process share the writer's handle.
    pub fn pipelines(&self, manifests: &[PathBuf]) -> Result<Vec<Pipeline>> {
        let loaded = manifests
            .iter()
            .map(|m| self.load(m))
            .collect::<Result<Vec<_>>>()?;
        for m in &loaded {
            if let Some(i) = &m.sink_index {
                self.will_write(&m.tenant, i);
            }
        }
        loaded.into_iter().map(|m| self.pipeline(m)).collect()
    }

    /// `tenant`'s run-time account under `policy`, made on first use and
    /// then shared, so the tenant's quotas hold across its pipelines; a
    /// changed policy (a reload) applies to the account already there.
    pub fn account(&self, tenant: &str, policy: &Policy) -> Arc<TenantAccount> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        let account = accounts
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(TenantAccount::from_policy(tenant, policy)))
            .clone();
        account.apply(policy);
        account
    }

    /// Prepares one loaded manifest under the process's policy.
    pub fn pipeline(&self, manifest: Manifest) -> Result<Pipeline> {
        self.pipeline_for(manifest, &self.policy)
    }

    /// Prepares one loaded manifest of a tenant governed by `policy`
    /// (`weft serve` has one per tenant), charged to the tenant's account
    /// and index quota.
    pub fn pipeline_for(&self, manifest: Manifest, policy: &Policy) -> Result<Pipeline> {
        self.indexes
            .set_quota(&manifest.tenant, IndexQuota::from_policy(policy));
        let account = self.account(&manifest.tenant, policy);
        let mut p = Pipeline::for_tenant(
            &self.runtime,
            manifest,
            Some(self.indexes.as_ref()),
            account,
        )?;
        // Each stage is instantiated now, under its limits: a component
        // whose exports have the contract's names but not its types (which
        // wasmtime checks only at instantiation) is refused here, located,
        // instead of failing every record. Other start-up failures (a limit,
        // a trap in its start code) stay per record, as dead letters naming
        // the limit, and are only logged here. The instance is kept for the
        // first batch.
        let mut problems = Vec::new();
        for (plugin, stage) in p.stages.iter_mut().zip(&p.manifest.stages) {
            match plugin.warm_up() {
                Ok(()) => {}
                Err(f) if f.kind == crate::runtime::FailureKind::Config => {
                    problems.push(format!("{}: the plugin cannot start: {f}", stage.location))
                }
                Err(f) => tracing::warn!("{}: the plugin cannot start yet: {f}", stage.location),
            }
        }
        if !problems.is_empty() {
            return Err(ServiceError::Manifest(problems));
        }
        if !p.manifest.tables.is_empty() {
            let m = &p.manifest;
            let store = self
                .tables
                .store(&m.tenant, policy.max_table_mb, &policy.rule("max_table_mb"))
                .map_err(|e| ServiceError::Run(format!("{}: {e}", m.file.display())))?;
            let followers = self
                .followers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let tables =
                PipelineTables::new(&m.tenant, &m.name, &m.tables, store, followers.as_deref())?;
            p.attach_tables(Arc::new(tables));
        }
        Ok(p)
    }
}

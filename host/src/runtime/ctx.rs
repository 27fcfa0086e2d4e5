//! The per-instance host state (`Store<StageCtx>`) and the host side of the
//! weft interfaces: log, config, state, index and table.

use super::bindings::imports::weft::plugin::{config, deltas, index, log, state, table};
use super::bindings::types::{Hit, Meta};
use super::deltas::{DeltaSlot, DeltaStream};
use super::freshness::Offsets;
use super::http::OutboundPolicy;
use super::limits::Budget;
use super::logs::{loggable, LogBudget};
use super::state::{PendingWrites, StateMap};
use super::tenant::TenantAccount;
use crate::manifest::Stage;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// One result of an index search, in the runtime's own terms (the WIT
/// `hit` is made from it at the guest boundary), so an index implementation
/// never depends on the generated bindings.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexHit {
    pub chunk_id: String,
    pub doc_id: String,
    /// Cosine similarity, a finite number in [-1, 1].
    pub score: f32,
    pub text: String,
    pub metadata: Vec<(String, String)>,
}

/// Why an index search failed; the message reaches the plugin as its
/// `index.search` error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SearchError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl SearchError {
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SearchError {
        SearchError(e.into())
    }
}

/// Vector search the host offers retriever stages, scoped to one tenant's
/// index. Implemented by the index layer (an adapter there), so the runtime
/// points at no layer above it.
pub trait IndexSearch: Send + Sync {
    fn search(
        &self,
        vector: &[f32],
        k: u32,
        filter: &[(String, String)],
    ) -> Result<Vec<IndexHit>, SearchError>;

    /// A search in any mode (`index.query`). The default serves vector mode
    /// through [`IndexSearch::search`] and refuses the others, so an index
    /// without a keyword side says so instead of answering wrongly.
    /// Waits until the index has applied every (topic, partition, offset)
    /// of `need`, or until `deadline`; returns whether it had, and the
    /// watermarks it read last (read-your-writes). The default, for an
    /// index that keeps no watermarks, meets only an empty requirement.
    fn wait_for(
        &self,
        need: &[(String, i32, i64)],
        deadline: std::time::Instant,
    ) -> Result<(bool, Offsets), SearchError> {
        let _ = deadline;
        Ok((need.is_empty(), Vec::new()))
    }

    fn query(&self, q: &IndexQuery) -> Result<Vec<IndexHit>, SearchError> {
        match q.mode {
            IndexMode::Vector => self.search(&q.vector, q.k, &q.filter),
            other => Err(SearchError::new(format!(
                "this index has no {other:?} search"
            ))),
        }
    }
}

/// Retrieval mode of an [`IndexQuery`] (the WIT `search-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexMode {
    Vector,
    Keyword,
    Hybrid,
}

/// A search request in the runtime's own terms (the WIT `search-request`).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexQuery {
    pub mode: IndexMode,
    pub vector: Vec<f32>,
    pub text: String,
    pub k: u32,
    pub filter: Vec<(String, String)>,
    /// Reciprocal-rank-fusion constant; not finite or <= 0 means the default.
    pub rrf_k: f32,
    pub vector_weight: f32,
    pub keyword_weight: f32,
}

/// Read access to the tables a pipeline declares (`[[table]]`), scoped to
/// its tenant and to the declared names. Implemented by the layer that keeps
/// tables up to date from their topics, so the runtime points at no layer
/// above it.
pub trait TableLookup: Send + Sync {
    /// The current value of `key` in table `name`; an undeclared name is an
    /// error naming the declared ones.
    fn get(&self, name: &str, key: &str) -> Result<Option<Vec<u8>>, SearchError>;

    /// Waits (each table at most its `wait_ms`) until every table has
    /// applied what its topic held when this was called, so a batch sees
    /// every update produced before it was read. `Err` says which table lags
    /// and by how much.
    fn catch_up(&self) -> Result<(), SearchError>;
}

/// The tables of a pipeline, attached once it knows its broker (a pipeline
/// that is only checked has none, and a lookup then says so). One slot is
/// shared by every stage of the pipeline.
pub type TableSlot = Arc<std::sync::OnceLock<Arc<dyn TableLookup>>>;

/// Longest key a plugin may look up (a table key is an id, not a document).
pub const MAX_TABLE_KEY: usize = 1024;

/// What every instance of one stage shares: identity, config, grants, state.
/// Instances come and go (a trap recycles one); this outlives them.
pub struct StageShared {
    pub tenant: String,
    pub pipeline: String,
    pub stage: Stage,
    pub state: Mutex<StateMap>,
    pub index: Option<Arc<dyn IndexSearch>>,
    /// The pipeline's declared tables (empty slot: none attached).
    pub tables: TableSlot,
    /// Where a generator's answer pieces go (empty slot: bounded, dropped).
    pub deltas: DeltaSlot,
    /// How much this stage may still log, and how much it could not.
    pub logs: LogBudget,
    /// The tenant's account: memory, instances and state of all its stages
    /// count there, and its weight orders its calls in the worker pool.
    pub account: Arc<TenantAccount>,
}

impl StageShared {
    pub fn new(tenant: &str, pipeline: &str, stage: &Stage) -> StageShared {
        StageShared {
            tenant: tenant.to_string(),
            pipeline: pipeline.to_string(),
            stage: stage.clone(),
            state: Mutex::new(StateMap::default()),
            index: None,
            tables: TableSlot::default(),
            deltas: DeltaSlot::default(),
            logs: LogBudget::default(),
            account: Arc::new(TenantAccount::unlimited(tenant)),
        }
    }

    /// Charges this stage to `account` (its tenant's) instead of an
    /// unlimited one.
    pub fn with_account(mut self, account: Arc<TenantAccount>) -> StageShared {
        self.account = account;
        self
    }

    pub fn with_index(mut self, index: Arc<dyn IndexSearch>) -> StageShared {
        self.index = Some(index);
        self
    }

    /// Shares the pipeline's table slot.
    pub fn with_tables(mut self, tables: TableSlot) -> StageShared {
        self.tables = tables;
        self
    }

    /// Shares the pipeline's answer-piece sink slot.
    pub fn with_deltas(mut self, deltas: DeltaSlot) -> StageShared {
        self.deltas = deltas;
        self
    }
}

/// The last few KiB a guest wrote to stderr (a Rust panic message lands
/// there), kept so a trap's dead-letter reason can say what the plugin said.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<Vec<u8>>>);

const STDERR_TAIL: usize = 4096;

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(bytes);
            if b.len() > STDERR_TAIL {
                let cut = b.len() - STDERR_TAIL;
                b.drain(..cut);
            }
        }
    }

    /// The last thing the guest said: the last non-empty line, or for a Rust
    /// panic the `panicked at <file:line>` line and its message, without the
    /// `note: run with RUST_BACKTRACE` boilerplate.
    pub fn last_line(&self) -> Option<String> {
        let b = self.0.lock().ok()?;
        let s = String::from_utf8_lossy(&b);
        let lines: Vec<&str> = s
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("note: run with"))
            .collect();
        let last = *lines.last()?;
        match lines.len().checked_sub(2).map(|i| lines[i]) {
            Some(prev) if prev.contains("panicked at") => Some(format!("{prev} {last}")),
            _ => Some(last.to_string()),
        }
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Host state of one live instance.
pub struct StageCtx {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: OutboundPolicy,
    table: ResourceTable,
    pub limits: Budget,
    pub shared: Arc<StageShared>,
    pub stderr: StderrTail,
    /// State writes of the call in progress (`None` = delete). They reach the
    /// shared state only when the call returns normally, so a call that traps
    /// and is replayed does not apply its side effects twice.
    pending: PendingWrites,
    /// When the call in progress must end: blocking host calls (WASI
    /// `poll`, `pollable.block`, so sleeps) are cut there, since an epoch
    /// deadline cannot interrupt a guest blocked inside the host.
    pub call_deadline: Option<std::time::Instant>,
    /// The read-your-writes requirement of the question being retrieved
    /// (set by the host around a retriever call).
    pub read_after: Option<super::freshness::ReadRequirement>,
    /// What the call's first index search read at (taken by the host
    /// after the call, for the answer).
    pub read_at: Option<super::freshness::ReadAt>,
    /// The answer stream of the generator call in progress (set by the
    /// host around it; `emit` without one is refused).
    pub stream: Option<DeltaStream>,
}

impl StageCtx {
    /// A context with exactly the stage's grants: no env, args, files or
    /// sockets unless listed; stdout discarded; stderr kept as a short tail.
    pub fn new(shared: Arc<StageShared>) -> StageCtx {
        let stage = &shared.stage;
        let stderr = StderrTail::default();
        let mut b = WasiCtxBuilder::new();
        b.stderr(stderr.clone());
        for name in &stage.grants.env {
            if let Ok(v) = std::env::var(name) {
                b.env(name, v);
            }
        }
        for (host, guest) in &stage.grants.files {
            if let Err(e) = b.preopened_dir(host, guest, wasmtime_wasi::FsPerms::ReadOnly) {
                tracing::warn!(stage = %stage.name, "cannot preopen {}: {e:#}", host.display());
            }
        }
        b.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let limits = Budget::for_tenant(stage.limits.memory_bytes, shared.account.clone());
        StageCtx {
            wasi: b.build(),
            http: WasiHttpCtx::new(),
            outbound: OutboundPolicy::new(stage),
            table: ResourceTable::new(),
            limits,
            stderr,
            shared,
            pending: PendingWrites::default(),
            call_deadline: None,
            read_after: None,
            read_at: None,
            stream: None,
        }
    }

    /// Applies the state writes of a call that returned normally, or
    /// discards them all if they would take the tenant over its state
    /// quota (another stage of the tenant may have committed since the
    /// plugin's `set` was checked); the call then fails with that reason.
    pub fn commit_state(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        match self.shared.state.lock() {
            Ok(mut st) => st
                .commit(pending, &self.shared.account)
                .map_err(|e| e.to_string()),
            Err(_) => Err("state store poisoned".to_string()),
        }
    }
}

impl StageCtx {
    /// The instance's resource table (pollables, streams).
    pub fn resource_table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for StageCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StageCtx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl super::bindings::types::Host for StageCtx {}

impl log::Host for StageCtx {
    fn log(&mut self, level: log::Level, message: String) {
        let s = &self.shared;
        // The tags open the line (span fields are printed before the
        // message), so the first `tenant=` of a line is always the real
        // one, whatever the message says; the rate-limit warning is tagged too.
        let span = tracing::info_span!("plugin", tenant = %s.tenant, pipeline = %s.pipeline, stage = %s.stage.name);
        let _in_span = span.enter();
        if !s.logs.admit() {
            return;
        }
        // One line, at most LOG_MAX_CHARS, control characters escaped: a
        // plugin cannot forge a host log line with an embedded newline.
        let message = loggable(&message);
        match level {
            log::Level::Trace => {
                tracing::trace!(tenant = %s.tenant, pipeline = %s.pipeline, stage = %s.stage.name, "plugin: {message}")
            }
            log::Level::Debug => {
                tracing::debug!(tenant = %s.tenant, pipeline = %s.pipeline, stage = %s.stage.name, "plugin: {message}")
            }
            log::Level::Info => {
                tracing::info!(tenant = %s.tenant, pipeline = %s.pipeline, stage = %s.stage.name, "plugin: {message}")
            }
            log::Level::Warn => {
                tracing::warn!(tenant = %s.tenant, pipeline = %s.pipeline, stage = %s.stage.name, "plugin: {message}")
            }
            log::Level::Error => {
                tracing::error!(tenant = %s.tenant, pipeline = %s.pipeline, stage = %s.stage.name, "plugin: {message}")
            }
        }
    }
}

impl config::Host for StageCtx {
    fn get(&mut self, key: String) -> Option<String> {
        self.shared.stage.config.get(&key).cloned()
    }

    fn entries(&mut self) -> Vec<(String, String)> {
        self.shared
            .stage
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl state::Host for StageCtx {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        if let Some(v) = self.pending.get(&key) {
            return v.clone();
        }
        self.shared.state.lock().ok()?.get(&key).cloned()
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let st = self
            .shared
            .state
            .lock()
            .map_err(|_| "state store poisoned".to_string())?;
        self.pending.set(&st, &self.shared.account, key, value)
    }

    fn delete(&mut self, key: String) {
        if let Ok(st) = self.shared.state.lock() {
            self.pending.delete(&st, key);
        }
    }
}

fn to_wit(hits: Vec<IndexHit>) -> Vec<Hit> {
    hits.into_iter()
        .map(|h| Hit {
            chunk_id: h.chunk_id,
            doc_id: h.doc_id,
            score: h.score,
            text: h.text,
            metadata: h
                .metadata
                .into_iter()
                .map(|(key, value)| Meta { key, value })
                .collect(),
        })
        .collect()
}

impl StageCtx {
    fn attached_index(&self) -> Result<Arc<dyn IndexSearch>, String> {
        self.shared.index.clone().ok_or_else(|| {
            format!(
                "pipeline `{}` has no index attached (tenant `{}`)",
                self.shared.pipeline, self.shared.tenant
            )
        })
    }
}

impl StageCtx {
    /// Before the call's first index search: waits for the question's
    /// read-your-writes requirement (bounded by its wait and by the call's
    /// deadline, less a tenth of the stage's timeout left for the plugin to
    /// finish), and records the watermarks the search reads at. Later
    /// searches of the same call read at least as new a state (watermarks
    /// only rise), so only the first one waits.
    fn before_search(&mut self, index: &dyn IndexSearch) -> Result<(), String> {
        if self.read_at.is_some() {
            return Ok(());
        }
        let t0 = std::time::Instant::now();
        let (need, wait) = match &self.read_after {
            Some(r) => (r.need.clone(), r.wait),
            None => (Vec::new(), std::time::Duration::ZERO),
        };
        let mut deadline = t0 + wait;
        if let Some(d) = self.call_deadline {
            let reserve =
                std::time::Duration::from_millis(self.shared.stage.limits.timeout_ms / 10);
            deadline = deadline.min(d.checked_sub(reserve).unwrap_or(t0));
        }
        let (met, watermarks) = index.wait_for(&need, deadline).map_err(|e| e.to_string())?;
        self.read_at = Some(super::freshness::ReadAt {
            watermarks,
            stale: !met,
            required: need,
            waited: t0.elapsed(),
        });
        Ok(())
    }
}

impl index::Host for StageCtx {
    fn search(&mut self, vector: Vec<f32>, k: u32, filter: Vec<Meta>) -> Result<Vec<Hit>, String> {
        let index = self.attached_index()?;
        self.before_search(index.as_ref())?;
        let filter: Vec<(String, String)> = filter.into_iter().map(|m| (m.key, m.value)).collect();
        let hits = index
            .search(&vector, k.min(1000), &filter)
            .map_err(|e| e.to_string())?;
        Ok(to_wit(hits))
    }

    fn query(&mut self, req: index::SearchRequest) -> Result<Vec<Hit>, String> {
        let index = self.attached_index()?;
        self.before_search(index.as_ref())?;
        let weight = |w: f32, name: &str| {
            if w.is_finite() && w >= 0.0 {
                Ok(w)
            } else {
                Err(format!("`{name}` must be a finite number >= 0, not {w}"))
            }
        };
        let q = IndexQuery {
            mode: match req.mode {
                index::SearchMode::Vector => IndexMode::Vector,
                index::SearchMode::Keyword => IndexMode::Keyword,
                index::SearchMode::Hybrid => IndexMode::Hybrid,
            },
            vector: req.vector,
            text: req.text,
            k: req.k.min(1000),
            filter: req.filter.into_iter().map(|m| (m.key, m.value)).collect(),
            rrf_k: req.rrf_k,
            vector_weight: weight(req.vector_weight, "vector-weight")?,
            keyword_weight: weight(req.keyword_weight, "keyword-weight")?,
        };
        let hits = index.query(&q).map_err(|e| e.to_string())?;
        Ok(to_wit(hits))
    }
}

impl table::Host for StageCtx {
    fn get(&mut self, name: String, key: String) -> Result<Option<Vec<u8>>, String> {
        if key.len() > MAX_TABLE_KEY {
            return Err(format!(
                "table key of {} bytes is longer than the {MAX_TABLE_KEY}-byte limit",
                key.len()
            ));
        }
        let Some(tables) = self.shared.tables.get() else {
            return Err(format!(
                "pipeline `{}` (tenant `{}`) has no tables attached: declare them with [[table]] and run it against a broker",
                self.shared.pipeline, self.shared.tenant
            ));
        };
        tables.get(&name, &key).map_err(|e| e.to_string())
    }
}

impl deltas::Host for StageCtx {
    fn emit(&mut self, text: String) -> Result<(), String> {
        match &mut self.stream {
            Some(s) => s.emit(text),
            None => {
                Err("no answer is being generated (emit is for generators, inside generate)".into())
            }
        }
    }
}

//! The sandbox: one wasmtime engine per process, components compiled once
//! (and cached on disk by content hash), pre-linked per stage, and instances
//! reused across calls until one traps or breaks a limit.

pub mod bindings;
mod blocking;
mod cache;
mod ctx;
pub mod deltas;
mod failure;
pub mod fair;
pub mod freshness;
mod http;
pub mod limits;
pub mod logs;
mod spans;
pub mod state;
pub mod tenant;

pub use cache::CompileCache;
pub use ctx::{
    IndexHit, IndexMode, IndexQuery, IndexSearch, SearchError, StageCtx, StageShared, TableLookup,
    TableSlot, MAX_TABLE_KEY,
};
pub use deltas::{Delta, DeltaSink, DeltaSlot, DeltaStream};
pub use failure::{output_over_cap, Failure, FailureKind};
pub use fair::{FairScheduler, Permit};
pub use freshness::{OnStale, ReadAt, ReadRequirement};
pub use tenant::TenantAccount;

use crate::manifest::{display_path, Stage, StageKind};
use anyhow::{anyhow, Context};
use bindings::types;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine, Store};

/// How often the epoch advances; a stage's timeout is counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How a stage's CPU per call is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuMeter {
    /// Wall-clock deadline in epoch ticks (the default: cheapest on our
    /// plugins, see `cargo bench --bench runtime`).
    #[default]
    Epoch,
    /// Deterministic fuel: `timeout_ms * FUEL_PER_MS` units per call.
    Fuel,
}

/// Fuel units granted per millisecond of `timeout_ms` in [`CpuMeter::Fuel`]
/// mode (roughly one wasm instruction each).
pub const FUEL_PER_MS: u64 = 1_000_000;

/// How the engine allocates an instance's linear memories, tables and
/// metadata. An instance is created when a stage warms up and again after
/// every trap (the failed instance is dropped, see [`StagePlugin::recycle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InstanceAllocator {
    /// wasmtime's default: each instance maps its memory when created and
    /// unmaps it when dropped. No process-wide cap on live instances.
    #[default]
    OnDemand,
    /// wasmtime's pooling allocator: address space for [`POOL_INSTANCES`]
    /// instances is reserved up front and slots are reused, so creating an
    /// instance makes no mmap/munmap calls. Measured in `cargo bench --bench
    /// boundary`; not the default (see [`Runtime::with_allocator`]).
    Pooling,
}

/// Live instances the pooling allocator has room for: one per stage (each
/// stage keeps one instance), so this caps the stages of one process.
pub const POOL_INSTANCES: u32 = 1000;

/// The process-wide Wasm engine, the compile cache and the plugin workers.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    meter: CpuMeter,
    cache: CompileCache,
    /// Every plugin call of every stage prepared by this runtime holds one
    /// of its permits (one per core by default, see [`Runtime::with_workers`]).
    scheduler: Arc<FairScheduler>,
    _ticker: Arc<EpochTicker>,
}

struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Builds the engine. Component-model concurrency is off: none of our worlds
    /// use async, and it triples the cost of a call. CPU is bounded by epochs
    /// (a background thread ticks every [`EPOCH_TICK`]), which cost less than
    /// fuel on call-heavy guests; see the bench for the measurement.
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Runtime> {
        Runtime::with_meter(cache_dir, CpuMeter::Epoch)
    }

    /// Like [`Runtime::new`] with a chosen CPU meter.
    pub fn with_meter(cache_dir: Option<PathBuf>, meter: CpuMeter) -> anyhow::Result<Runtime> {
        Runtime::with_allocator(cache_dir, meter, InstanceAllocator::OnDemand)
    }

    /// Like [`Runtime::with_meter`] with a chosen instance allocator.
    ///
    /// Pooling keeps every limit: `memory_mb` is still enforced per store by
    /// the store limiter (a pooled slot is only address space, sized for the
    /// 4 GiB a 32-bit memory can reach, so no plugin is refused for asking
    /// for less than its stage allows). What it adds is a process-wide cap:
    /// at most [`POOL_INSTANCES`] live stage instances, and per component at
    /// most 8 core instances, 2 memories and 8 tables of 20,000 elements
    /// (what Rust, C, Python and JavaScript plugins need with room to spare);
    /// a component past those fails to instantiate.
    pub fn with_allocator(
        cache_dir: Option<PathBuf>,
        meter: CpuMeter,
        allocator: InstanceAllocator,
    ) -> anyhow::Result<Runtime> {
        let mut config = Config::new();
        config.profiler(profiler_from_env()?);
        if allocator == InstanceAllocator::Pooling {
            let mut pool = wasmtime::PoolingAllocationConfig::new();
            pool.total_component_instances(POOL_INSTANCES)
                .total_core_instances(POOL_INSTANCES * 8)
                .total_memories(POOL_INSTANCES * 2)
                .total_tables(POOL_INSTANCES * 8)
                .max_core_instances_per_component(8)
                .max_memories_per_component(2)
                .max_tables_per_component(8)
                .table_elements(20_000);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        config.wasm_component_model(true);
        config.concurrency_support(false);
        config.epoch_interruption(meter == CpuMeter::Epoch);
        config.consume_fuel(meter == CpuMeter::Fuel);
        config.max_wasm_stack(1 << 20);
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("creating the wasm engine")?;
        let stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("weft-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .context("starting the epoch thread")?;
        }
        let cache_dir = cache_dir.unwrap_or_else(CompileCache::default_dir);
        Ok(Runtime {
            meter,
            cache: CompileCache::new(cache_dir, &engine),
            engine,
            scheduler: Arc::new(FairScheduler::per_core()),
            _ticker: Arc::new(EpochTicker { stop }),
        })
    }

    /// This runtime with a fair pool of `workers` plugin calls at once
    /// (at least one), for stages prepared from now on. The default is one
    /// per core: more would only make the tenants' calls share the cores
    /// by the OS's rules instead of by their weights.
    pub fn with_workers(mut self, workers: usize) -> Runtime {
        self.scheduler = Arc::new(FairScheduler::new(workers));
        self
    }

    /// The fair worker pool plugin calls wait in.
    pub fn scheduler(&self) -> &Arc<FairScheduler> {
        &self.scheduler
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn cache(&self) -> &CompileCache {
        &self.cache
    }

    /// Loads (from cache, or compiles and caches) the component at `path`.
    /// The compiled component and the SHA-256 (hex) of its file.
    pub fn load_component(&self, path: &Path) -> anyhow::Result<(Component, String)> {
        self.cache.load(&self.engine, path)
    }

    /// Compiles, links and type-checks a stage's component against the world
    /// its kind requires, without running any of its code.
    pub fn prepare(&self, stage: &Stage, shared: Arc<StageShared>) -> anyhow::Result<StagePlugin> {
        let (component, digest) = self
            .load_component(&stage.plugin)
            .with_context(|| format!("loading plugin {}", display_path(&stage.plugin)))?;
        check_exports(&self.engine, &component, stage)?;
        check_imports(&self.engine, &component, stage)?;
        let linker = self.linker(stage.kind, !stage.grants.outbound_hosts.is_empty())?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "linking plugin {} for stage `{}`",
                    display_path(&stage.plugin),
                    stage.name
                )
            })?;
        let typed = TypedPre::new(stage.kind, pre).with_context(|| {
            format!(
                "plugin {} does not implement the `{}` world that a {} stage requires",
                display_path(&stage.plugin),
                stage.kind.world(),
                stage.kind
            )
        })?;
        let ticks = (stage.limits.timeout_ms / EPOCH_TICK.as_millis() as u64).max(1) + 1;
        Ok(StagePlugin {
            name: stage.name.clone(),
            kind: stage.kind,
            digest,
            limits: stage.limits,
            engine: self.engine.clone(),
            typed,
            live: None,
            shared,
            scheduler: self.scheduler.clone(),
            deadline_ticks: ticks,
            stats: StageStats::default(),
            metrics: Arc::new(crate::metrics::StageMetrics::default()),
            _ticker: self._ticker.clone(),
            meter: self.meter,
            read_after: None,
            last_read: None,
            stream: None,
        })
    }

    /// A linker with WASI (no authority until the context grants some), the
    /// weft host interfaces the kind may use, and wasi:http only when the stage
    /// has an outbound grant, so an ungranted plugin fails at link time.
    fn linker(&self, kind: StageKind, http: bool) -> anyhow::Result<Linker<StageCtx>> {
        use bindings::imports::weft::plugin as host;
        let mut linker = Linker::<StageCtx>::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        blocking::add_deadlines(&mut linker)
            .map_err(anyhow::Error::from)
            .context("bounding WASI's blocking calls")?;
        if http {
            wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)
                .map_err(anyhow::Error::from)
                .context("linking wasi:http")?;
        }
        host::log::add_to_linker::<_, HasSelf<StageCtx>>(&mut linker, |s| s)?;
        host::config::add_to_linker::<_, HasSelf<StageCtx>>(&mut linker, |s| s)?;
        host::state::add_to_linker::<_, HasSelf<StageCtx>>(&mut linker, |s| s)?;
        if kind == StageKind::Retriever {
            host::index::add_to_linker::<_, HasSelf<StageCtx>>(&mut linker, |s| s)?;
        }
        // Always linked: a lookup answers only for the tables the pipeline
        // declares (none: every lookup is an error), so a component built
        // against a world that imports `table` loads in any pipeline.
        host::table::add_to_linker::<_, HasSelf<StageCtx>>(&mut linker, |s| s)?;
        if kind == StageKind::Generator {
            host::deltas::add_to_linker::<_, HasSelf<StageCtx>>(&mut linker, |s| s)?;
        }
        Ok(linker)
    }
}

/// The WIT package version this host implements; plugins built against any
/// 0.1.x contract load.
pub const CONTRACT_VERSION: &str = "0.1.0";

fn export_names(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(n, _)| n.to_string())
        .collect()
}

fn import_names(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(n, _)| n.to_string())
        .collect()
}

/// A clear message when the component exports the wrong stage kind.
fn check_exports(engine: &Engine, component: &Component, stage: &Stage) -> anyhow::Result<()> {
    let want = stage.kind.export_interface();
    let exports = export_names(engine, component);
    if exports.iter().any(|e| {
        stage
            .kind
            .export_interfaces()
            .iter()
            .any(|i| e.starts_with(&format!("{i}@0.1.")))
    }) {
        return Ok(());
    }
    let found: Vec<&str> = exports
        .iter()
        .filter(|e| e.starts_with("weft:plugin/"))
        .map(String::as_str)
        .collect();
    let kinds: Vec<&str> = StageKind::ALL
        .iter()
        .filter(|k| {
            found.iter().any(|e| {
                k.export_interfaces()
                    .iter()
                    .any(|i| e.starts_with(&format!("{i}@")))
            })
        })
        .map(|k| k.as_str())
        .collect();
    Err(anyhow!(
        "plugin {} is not a {} (it must export `{want}@{CONTRACT_VERSION}`, world `{}`); it exports {}{}",
        display_path(&stage.plugin),
        stage.kind,
        stage.kind.world(),
        if exports.is_empty() {
            "nothing".to_string()
        } else {
            exports.join(", ")
        },
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" (so it is a {} plugin)", kinds.join("/"))
        }
    ))
}

/// A clear message when the component needs a capability the stage lacks.
fn check_imports(engine: &Engine, component: &Component, stage: &Stage) -> anyhow::Result<()> {
    for name in import_names(engine, component) {
        if name.starts_with("wasi:http/") && stage.grants.outbound_hosts.is_empty() {
            return Err(anyhow!(
                "plugin {} imports `{name}` but stage `{}` has no `grants.outbound_hosts`: outbound HTTP is denied",
                display_path(&stage.plugin),
                stage.name
            ));
        }
        if name.starts_with("weft:plugin/index") && stage.kind != StageKind::Retriever {
            return Err(anyhow!(
                "plugin {} imports `{name}`, which only retriever stages may use (stage `{}` is a {})",
                display_path(&stage.plugin),
                stage.name,
                stage.kind
            ));
        }
        if name.starts_with("weft:plugin/deltas") && stage.kind != StageKind::Generator {
            return Err(anyhow!(
                "plugin {} imports `{name}`, which only generator stages may use (stage `{}` is a {})",
                display_path(&stage.plugin),
                stage.name,
                stage.kind
            ));
        }
    }
    Ok(())
}

/// `WEFT_PROFILER=perfmap` (or `jitdump`) makes the plugins' compiled
/// functions visible to Linux `perf` by name (`perf record -k mono`, then
/// `perf inject --jit` for `jitdump`), so a plugin author can see where a
/// component spends its time; unset, nothing is recorded.
fn profiler_from_env() -> anyhow::Result<wasmtime::ProfilingStrategy> {
    match std::env::var("WEFT_PROFILER").as_deref() {
        Err(_) | Ok("") | Ok("none") => Ok(wasmtime::ProfilingStrategy::None),
        Ok("perfmap") => Ok(wasmtime::ProfilingStrategy::PerfMap),
        Ok("jitdump") => Ok(wasmtime::ProfilingStrategy::JitDump),
        Ok(other) => Err(anyhow!(
            "WEFT_PROFILER={other:?}: expected perfmap, jitdump or none"
        )),
    }
}

/// A pre-linked component, typed by its world.
enum TypedPre {
    Chunker(bindings::chunker::ChunkerPre<StageCtx>),
    SpanChunker(bindings::span_chunker::SpanChunkerPre<StageCtx>),
    Embedder(bindings::embedder::EmbedderPre<StageCtx>),
    Retriever(bindings::retriever::RetrieverPre<StageCtx>),
    PromptBuilder(bindings::prompt_builder::PromptBuilderPre<StageCtx>),
    Generator(bindings::generator::GeneratorPre<StageCtx>),
    Transform(bindings::transformer::TransformerPre<StageCtx>),
}

impl TypedPre {
    fn new(kind: StageKind, pre: InstancePre<StageCtx>) -> anyhow::Result<TypedPre> {
        Ok(match kind {
            // Either chunker world; a component exporting neither gets the
            // `chunk` world's error, the one most chunkers implement.
            StageKind::Chunker => match bindings::span_chunker::SpanChunkerPre::new(pre.clone()) {
                Ok(p) => TypedPre::SpanChunker(p),
                Err(_) => TypedPre::Chunker(bindings::chunker::ChunkerPre::new(pre)?),
            },
            StageKind::Embedder => TypedPre::Embedder(bindings::embedder::EmbedderPre::new(pre)?),
            StageKind::Retriever => {
                TypedPre::Retriever(bindings::retriever::RetrieverPre::new(pre)?)
            }
            StageKind::PromptBuilder => {
                TypedPre::PromptBuilder(bindings::prompt_builder::PromptBuilderPre::new(pre)?)
            }
            StageKind::Generator => {
                TypedPre::Generator(bindings::generator::GeneratorPre::new(pre)?)
            }
            StageKind::Transform => {
                TypedPre::Transform(bindings::transformer::TransformerPre::new(pre)?)
            }
        })
    }

    fn instantiate(&self, store: &mut Store<StageCtx>) -> wasmtime::Result<Bindings> {
        Ok(match self {
            TypedPre::Chunker(p) => Bindings::Chunker(p.instantiate(store)?),
            TypedPre::SpanChunker(p) => Bindings::SpanChunker(p.instantiate(store)?),
            TypedPre::Embedder(p) => Bindings::Embedder(p.instantiate(store)?),
            TypedPre::Retriever(p) => Bindings::Retriever(p.instantiate(store)?),
            TypedPre::PromptBuilder(p) => Bindings::PromptBuilder(p.instantiate(store)?),
            TypedPre::Generator(p) => Bindings::Generator(p.instantiate(store)?),
            TypedPre::Transform(p) => Bindings::Transform(p.instantiate(store)?),
        })
    }
}

/// A live instance's typed exports.
pub enum Bindings {
    Chunker(bindings::chunker::Chunker),
    SpanChunker(bindings::span_chunker::SpanChunker),
    Embedder(bindings::embedder::Embedder),
    Retriever(bindings::retriever::Retriever),
    PromptBuilder(bindings::prompt_builder::PromptBuilder),
    Generator(bindings::generator::Generator),
    Transform(bindings::transformer::Transformer),
}

struct Live {
    store: Store<StageCtx>,
    bindings: Bindings,
    /// Counts this instance against the tenant's `max_instances` while it lives.
    _slot: tenant::InstanceSlot,
}

/// Counters a stage keeps about its plugin, for summaries and metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct StageStats {
    pub calls: u64,
    /// Embeddings taken from the index instead of computed (unchanged
    /// chunks of a new document version).
    pub reused: u64,
    pub instantiations: u64,
    pub failures: u64,
    pub busy: Duration,
    pub instantiate_time: Duration,
}

/// One stage's plugin: the pre-linked component and, when warm, a live instance.
pub struct StagePlugin {
    pub name: String,
    pub kind: StageKind,
    /// SHA-256 (hex) of the component file.
    pub digest: String,
    pub limits: crate::manifest::Limits,
    engine: Engine,
    typed: TypedPre,
    live: Option<Live>,
    shared: Arc<StageShared>,
    scheduler: Arc<FairScheduler>,
    deadline_ticks: u64,
    pub stats: StageStats,
    /// Keeps the epoch thread alive while this stage can run: without ticks a
    /// runaway plugin would never be interrupted.
    _ticker: Arc<EpochTicker>,
    meter: CpuMeter,
    /// Exported series of this stage (calls, latency, recycles, memory);
    /// counts into nothing until a host attaches its own.
    metrics: Arc<crate::metrics::StageMetrics>,
    /// Read-your-writes requirement for the next calls' index searches.
    read_after: Option<ReadRequirement>,
    /// What the last call's index search read at.
    last_read: Option<ReadAt>,
    /// The answer stream of the next generator call (moved into the
    /// instance's context for the call), then of the last answered one,
    /// until the pipeline ends it.
    stream: Option<DeltaStream>,
}

pub type PluginResult<T> = Result<T, types::PluginError>;

impl StagePlugin {
    /// Log lines this stage's plugin tried to write past its rate limit.
    pub fn logs_dropped(&self) -> u64 {
        self.shared.logs.dropped()
    }

    /// Entries and bytes (keys + values) of this stage's committed state.
    pub fn state_size(&self) -> (usize, usize) {
        self.shared
            .state
            .lock()
            .map(|s| (s.len(), s.bytes()))
            .unwrap_or_default()
    }
}

impl StagePlugin {
    /// Counts this stage's calls, latencies, recycles and memory into
    /// `metrics` from now on (a host exporting metrics attaches them to
    /// every version of a pipeline it runs).
    pub fn set_metrics(&mut self, metrics: Arc<crate::metrics::StageMetrics>) {
        self.metrics = metrics;
    }

    pub fn metrics(&self) -> &crate::metrics::StageMetrics {
        &self.metrics
    }

    /// Makes `replica` (another instance of this stage) report to this
    /// stage's series, and moves its counters into this stage's, so a stage
    /// with `parallelism` reports one set of figures.
    pub fn absorb(&mut self, replica: &mut StagePlugin) {
        replica.metrics = self.metrics.clone();
        let r = std::mem::take(&mut replica.stats);
        let s = &mut self.stats;
        s.calls += r.calls;
        s.reused += r.reused;
        s.instantiations += r.instantiations;
        s.failures += r.failures;
        s.busy += r.busy;
        s.instantiate_time += r.instantiate_time;
    }

    /// Sets the read-your-writes requirement of the next calls (a
    /// retriever's question); `None` clears it.
    pub fn set_read_after(&mut self, r: Option<ReadRequirement>) {
        self.read_after = r;
    }

    /// What the last call's first index search read at (watermarks,
    /// whether the requirement was met), if it searched.
    pub fn take_last_read(&mut self) -> Option<ReadAt> {
        self.last_read.take()
    }

    /// A config value of the stage (the host reads a few of a retriever's
    /// keys itself: read-your-writes wait and policy).
    pub fn config_value(&self, key: &str) -> Option<&str> {
        self.shared.stage.config.get(key).map(String::as_str)
    }
}

impl StagePlugin {
    /// The tenant's account this stage is charged to.
    pub fn account(&self) -> &Arc<TenantAccount> {
        &self.shared.account
    }
}

impl StagePlugin {
    /// The live instance, created now if there is none. Callers hold a
    /// worker permit: instantiating runs the plugin's start code.
    fn live(&mut self) -> Result<&mut Live, Failure> {
        if self.live.is_none() {
            let t0 = Instant::now();
            let slot = self.shared.account.start_instance().map_err(|e| {
                self.stats.failures += 1;
                Failure::new(
                    FailureKind::QuotaExceeded,
                    format!("instantiating stage `{}`: {e}", self.name),
                )
            })?;
            let mut store = Store::new(&self.engine, StageCtx::new(self.shared.clone()));
            store.limiter(|ctx| &mut ctx.limits);
            match self.meter {
                CpuMeter::Epoch => {
                    store.epoch_deadline_trap();
                    store.set_epoch_deadline(self.deadline_ticks);
                }
                CpuMeter::Fuel => store
                    .set_fuel(self.limits.timeout_ms.saturating_mul(FUEL_PER_MS))
                    .map_err(|e| Failure::new(FailureKind::Internal, format!("{e}")))?,
            }
            // Under the same deadline as a call: a start function that
            // never returns fails here, counted, instead of hanging.
            store.data_mut().call_deadline =
                Some(Instant::now() + Duration::from_millis(self.limits.timeout_ms));
            let bindings = match self.typed.instantiate(&mut store) {
                Ok(b) => b,
                Err(e) => {
                    self.stats.failures += 1;
                    return Err(Failure::from_wasm(
                        e,
                        "instantiating the plugin",
                        &self.limits,
                    ));
                }
            };
            self.stats.instantiations += 1;
            self.stats.instantiate_time += t0.elapsed();
            self.live = Some(Live {
                store,
                bindings,
                _slot: slot,
            });
        }
        // `live` was filled just above when it was empty.
        self.live
            .as_mut()
            .ok_or_else(|| Failure::new(FailureKind::Internal, "no live instance"))
    }

    /// Drops the live instance (after a trap or a broken limit); the next call
    /// gets a fresh one from the pre-linked component.
    pub fn recycle(&mut self) {
        if self.live.take().is_some() {
            self.metrics.recycled();
        }
    }

    /// Runs one export call under the stage's limits. A trap or limit breach
    /// recycles the instance and comes back as a [`Failure`].
    fn call<R>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Store<StageCtx>, &Bindings) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        let ticks = self.deadline_ticks;
        let limits = self.limits;
        let _permit = self.scheduler.acquire(&self.shared.account);
        let t0 = Instant::now();
        let meter = self.meter;
        let read_after = self.read_after.clone();
        let mut stream = self.stream.take();
        if let Err(e) = self.live() {
            // Kept, so the question's failure still ends its stream.
            self.stream = stream;
            return Err(e);
        }
        let live = self.live()?;
        match meter {
            CpuMeter::Epoch => live.store.set_epoch_deadline(ticks),
            CpuMeter::Fuel => live
                .store
                .set_fuel(limits.timeout_ms.saturating_mul(FUEL_PER_MS))
                .map_err(|e| Failure::new(FailureKind::Internal, format!("{e}")))?,
        }
        live.store.data_mut().call_deadline = Some(t0 + Duration::from_millis(limits.timeout_ms));
        live.store.data_mut().read_after = read_after;
        live.store.data_mut().read_at = None;
        live.store.data_mut().stream = stream.take();
        let result = f(&mut live.store, &live.bindings);
        let read_at = live.store.data_mut().read_at.take();
        stream = live.store.data_mut().stream.take();
        let memory = live.store.data().limits.used();
        self.last_read = read_at;
        self.stream = stream;
        let took = t0.elapsed();
        self.stats.calls += 1;
        self.stats.busy += took;
        self.metrics.call(took, memory);
        match result {
            Ok(r) => {
                let committed = match self.live.as_mut() {
                    Some(l) => l.store.data_mut().commit_state(),
                    None => Ok(()),
                };
                match committed {
                    Ok(()) => Ok(r),
                    Err(reason) => {
                        self.stats.failures += 1;
                        Err(Failure::new(
                            FailureKind::QuotaExceeded,
                            format!("{what}: its state writes were discarded: {reason}"),
                        ))
                    }
                }
            }
            Err(e) => {
                self.stats.failures += 1;
                let said = self
                    .live
                    .as_ref()
                    .and_then(|l| l.store.data().stderr.last_line());
                self.recycle();
                Err(Failure::from_wasm(e, what, &limits).with_guest_said(said))
            }
        }
    }

    fn wrong_kind(&self) -> Failure {
        Failure::new(
            FailureKind::Internal,
            format!(
                "stage `{}` is a {}, not called as one",
                self.name, self.kind
            ),
        )
    }

    /// Warms the instance up (and fails early if it cannot be instantiated).
    pub fn warm_up(&mut self) -> Result<(), Failure> {
        let _permit = self.scheduler.acquire(&self.shared.account);
        self.live().map(|_| ())
    }

    /// Instantiates the plugin and makes one call that needs no data: an
    /// empty batch for chunkers and transforms, `dimension()` for embedders
    /// (per-question kinds are only instantiated). A reload runs this before
    /// swapping a new version in, so a component that traps on its first
    /// call is refused instead of dead-lettering the stream.
    pub fn smoke_call(&mut self) -> Result<(), Failure> {
        self.warm_up()?;
        match self.kind {
            StageKind::Chunker => self.chunk(&[]).map(drop),
            StageKind::Embedder => self.dimension().map(drop),
            StageKind::Transform => self.transform(&[]).map(drop),
            _ => Ok(()),
        }
    }

    /// Chunks each document, one result per document, in order. A span
    /// chunker's ranges are made into chunks here (`runtime/spans.rs`).
    pub fn chunk(
        &mut self,
        docs: &[types::Document],
    ) -> Result<Vec<Result<Vec<types::Chunk>, Failure>>, Failure> {
        match self.typed {
            TypedPre::Chunker(_) => {
                let results = self.call("chunk", |store, b| match b {
                    Bindings::Chunker(c) => c.weft_plugin_chunk().call_split(store, docs),
                    _ => Err(wasmtime::format_err!("not a chunker")),
                })?;
                Ok(results
                    .into_iter()
                    .map(|r| r.map_err(Failure::from))
                    .collect())
            }
            TypedPre::SpanChunker(_) => {
                let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
                let results = self.call("chunk", |store, b| match b {
                    Bindings::SpanChunker(c) => {
                        c.weft_plugin_chunk_spans().call_spans(store, &texts)
                    }
                    _ => Err(wasmtime::format_err!("not a span chunker")),
                })?;
                if results.len() != docs.len() {
                    // Results that cannot be paired with the documents are
                    // passed on with their count, so the caller replays each
                    // document alone, as for a `chunk` plugin.
                    return Ok(results.into_iter().map(|_| Ok(Vec::new())).collect());
                }
                Ok(docs
                    .iter()
                    .zip(results)
                    .map(|(d, r)| spans::chunks_from_spans(d, &r?, &self.limits))
                    .collect())
            }
            _ => Err(self.wrong_kind()),
        }
    }

    pub fn dimension(&mut self) -> Result<u32, Failure> {
        if !matches!(self.typed, TypedPre::Embedder(_)) {
            return Err(self.wrong_kind());
        }
        self.call("dimension", |store, b| match b {
            Bindings::Embedder(e) => e.weft_plugin_embed().call_dimension(store),
            _ => Err(wasmtime::format_err!("not an embedder")),
        })
    }

    pub fn embed(&mut self, texts: &[String]) -> Result<PluginResult<Vec<Vec<f32>>>, Failure> {
        if !matches!(self.typed, TypedPre::Embedder(_)) {
            return Err(self.wrong_kind());
        }
        self.call("embed", |store, b| match b {
            Bindings::Embedder(e) => e.weft_plugin_embed().call_embed(store, texts),
            _ => Err(wasmtime::format_err!("not an embedder")),
        })
    }

    pub fn retrieve(
        &mut self,
        q: &types::Question,
        vector: &[f32],
    ) -> Result<PluginResult<Vec<types::Hit>>, Failure> {
        if !matches!(self.typed, TypedPre::Retriever(_)) {
            return Err(self.wrong_kind());
        }
        self.call("retrieve", |store, b| match b {
            Bindings::Retriever(r) => r.weft_plugin_retrieve().call_retrieve(store, q, vector),
            _ => Err(wasmtime::format_err!("not a retriever")),
        })
    }

    pub fn build_prompt(
        &mut self,
        q: &types::Question,
        hits: &[types::Hit],
    ) -> Result<PluginResult<Vec<types::Message>>, Failure> {
        if !matches!(self.typed, TypedPre::PromptBuilder(_)) {
            return Err(self.wrong_kind());
        }
        self.call("build", |store, b| match b {
            Bindings::PromptBuilder(p) => p.weft_plugin_prompt().call_build(store, q, hits),
            _ => Err(wasmtime::format_err!("not a prompt builder")),
        })
    }

    /// Answers `q`. The pieces the plugin emits on the way go to the
    /// pipeline's delta sink as a new stream (an earlier attempt's stream,
    /// left unfinished, is abandoned: readers drop it when they see the new
    /// stream's piece 0). The pipeline ends the stream with
    /// [`StagePlugin::finish_stream`] once it knows the question's fate.
    /// `origin_ms`: the question record's timestamp.
    pub fn generate(
        &mut self,
        q: &types::Question,
        messages: &[types::Message],
        hits: &[types::Hit],
        origin_ms: Option<i64>,
    ) -> Result<PluginResult<types::Answer>, Failure> {
        if !matches!(self.typed, TypedPre::Generator(_)) {
            return Err(self.wrong_kind());
        }
        self.stream = Some(DeltaStream::new(
            &q.id,
            origin_ms,
            self.shared.deltas.get().cloned(),
            self.limits.max_outputs,
            self.limits.max_output_bytes,
        ));
        self.call("generate", |store, b| match b {
            Bindings::Generator(g) => g
                .weft_plugin_generate()
                .call_generate(store, q, messages, hits),
            _ => Err(wasmtime::format_err!("not a generator")),
        })
    }

    /// Ends the stream of the last generator call, if it is still open:
    /// with the accepted answer's text, or with why the question failed.
    pub fn finish_stream(&mut self, outcome: Result<&str, &str>) {
        if let Some(s) = self.stream.take() {
            match outcome {
                Ok(answer) => s.finish_answer(answer),
                Err(reason) => s.finish_error(reason),
            }
        }
    }

    pub fn transform(
        &mut self,
        records: &[types::Record],
    ) -> Result<Vec<PluginResult<Vec<types::Record>>>, Failure> {
        if !matches!(self.typed, TypedPre::Transform(_)) {
            return Err(self.wrong_kind());
        }
        self.call("transform", |store, b| match b {
            Bindings::Transform(t) => t.weft_plugin_transform().call_transform(store, records),
            _ => Err(wasmtime::format_err!("not a transform")),
        })
    }
}

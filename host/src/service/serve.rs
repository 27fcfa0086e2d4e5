//! `weft serve`: one long-running process hosting every tenant's pipelines
//! from a tenants directory (see [`super::tenants`]), reloading what changed
//! without losing or duplicating records.
//!
//! A reload (on SIGHUP, on a file change when watching, or by calling
//! [`Server::reload`]) re-reads the tree and checks every manifest as `weft
//! check --tenants` does (which also instantiates each stage once). Then:
//! - a new manifest starts;
//! - a changed one (manifest text, its tenant's policy or a plugin file)
//!   with the same topics, group and sink is swapped in at the next batch
//!   boundary, after the batch in flight is committed; one whose topics or
//!   sink changed is stopped (drained, committed) and started again;
//! - a manifest that no longer passes its checks is refused and reported,
//!   and the version already running keeps running;
//! - a deleted manifest's pipeline is stopped.
//!
//! Several `weft serve` processes given the same tenants directory and
//! brokers share the work: each pipeline's consumer group
//! (`weft.<tenant>.<pipeline>`) spreads its topic's partitions over them.

use super::run::{topics_of, PipelineStatus};
use super::tenants::{check_tenant, scan};
use super::{Host, Result, ServiceError};
use crate::manifest::{display_path, Manifest};
use crate::policy::Policy;
use crate::stream::assign::Assignment;
use crate::stream::circuit::CircuitPolicy;
use crate::stream::kafka::{self, Control, Counters, KafkaOptions};
use crate::stream::StreamError;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `<tenants>/<tenant>/{policy.toml,pipelines/*.toml}`.
    pub tenants: PathBuf,
    pub brokers: String,
    /// Partitions of the topics weft creates when they are missing.
    pub partitions: i32,
    /// Group membership, or a static share of each source's partitions.
    pub assign: Assignment,
    /// When pipelines pause themselves; each tenant's
    /// `max_dead_letters_per_sec` is added from its policy.
    pub circuit: CircuitPolicy,
    /// How long [`Server::stop`] waits for the batches in flight.
    pub grace: Duration,
}

impl ServeOptions {
    /// `weft serve`'s defaults: 3 partitions, a circuit that opens after
    /// 100 plugin failures in a row, 30 s of grace to stop.
    pub fn new(tenants: impl Into<PathBuf>, brokers: impl Into<String>) -> ServeOptions {
        ServeOptions {
            tenants: tenants.into(),
            brokers: brokers.into(),
            partitions: 3,
            assign: Assignment::Group,
            circuit: CircuitPolicy::default(),
            grace: Duration::from_secs(30),
        }
    }
}

/// A pipeline the server hosts.
struct Running {
    file: PathBuf,
    /// What the running version was made from (manifest, policy, plugins).
    fingerprint: String,
    /// Topics, group and sink: what a swap in place may not change.
    identity: String,
    counters: Arc<Counters>,
    swap: mpsc::UnboundedSender<crate::pipeline::Pipeline>,
    stop: watch::Sender<bool>,
    /// An operator's pause (see [`Server::pause`]).
    hold: watch::Sender<bool>,
    /// Topics and format, for the admin API.
    topics: PipelineTopics,
    /// (when, consumed, produced, dead letters), one per status call at
    /// most every second, for the last minute: the rates.
    samples: VecDeque<(Instant, u64, u64, u64)>,
    task: Option<
        tokio::task::JoinHandle<std::result::Result<crate::pipeline::Pipeline, StreamError>>,
    >,
    /// How the pipeline's task ended, once it has: `stopped` when asked
    /// to, otherwise `failed: <why>`.
    ended: Option<String>,
}

/// What a reload did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// `tenant/pipeline` of each pipeline started.
    pub started: Vec<String>,
    /// Swapped in place to a new version at a batch boundary.
    pub swapped: Vec<String>,
    /// Stopped and started again (its topics or sink changed).
    pub restarted: Vec<String>,
    /// Stopped because its manifest is gone.
    pub stopped: Vec<String>,
    /// Every problem found, one `file:line:col: message` line each; the
    /// manifests concerned did not start, or keep their running version.
    pub refused: Vec<String>,
}

impl ReloadReport {
    pub fn changed(&self) -> bool {
        !(self.started.is_empty()
            && self.swapped.is_empty()
            && self.restarted.is_empty()
            && self.stopped.is_empty())
    }
}

/// The topics of a hosted pipeline, and what its source carries.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineTopics {
    pub source: String,
    pub sink: Option<String>,
    pub dead_letters: String,
    pub index: Option<String>,
    /// `document`, `question` or `raw`.
    pub format: String,
    /// Where the generator's answers stream, piece by piece.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deltas: Option<String>,
}

impl PipelineTopics {
    /// The topics `m` reads and writes.
    pub(crate) fn of(m: &Manifest) -> PipelineTopics {
        PipelineTopics {
            source: m.source_topic.clone(),
            sink: m.sink_topic.clone(),
            dead_letters: m.dead_letter_topic.clone(),
            index: m.sink_index.clone(),
            format: format!("{:?}", m.format).to_lowercase(),
            deltas: m.deltas_topic(),
        }
    }
}

/// What a hosted pipeline is doing, as one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    Running,
    /// Paused by an operator ([`Server::pause`]).
    Paused,
    /// Its circuit is open: it paused itself after failing.
    CircuitOpen,
    /// It holds no partition while its group has lag.
    Stalled,
    Stopped,
    Failed,
}

/// Records per second over the last 10 s or so (since the previous
/// status taken at least a second before, and within a minute).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Rates {
    pub consumed_per_sec: f64,
    pub produced_per_sec: f64,
    pub dead_letters_per_sec: f64,
}

/// One hosted pipeline's state and figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServedPipeline {
    pub tenant: String,
    pub file: String,
    /// `running`, `paused: <why>` (circuit open, or `paused: by an
    /// operator`), `stalled: <why>` (no partitions while the group has
    /// lag), `stopped` or `failed: <why>`.
    pub state: String,
    /// The state as one word, and its reason apart.
    pub condition: Condition,
    pub reason: Option<String>,
    /// New versions swapped in since it started.
    pub reloads: u64,
    pub rates: Rates,
    /// The group's lag over all source partitions, once looked at.
    pub lag: Option<i64>,
    /// Per partition: `[partition, lag]`.
    pub lag_by_partition: Vec<(i32, i64)>,
    pub last_error: Option<kafka::LastError>,
    pub topics: PipelineTopics,
    #[serde(flatten)]
    pub figures: PipelineStatus,
}

/// Everything the server hosts, and what its last reload refused.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServeStatus {
    pub pipelines: Vec<ServedPipeline>,
    pub refused: Vec<String>,
}

/// The multi-tenant host. Dropping it without [`Server::stop`] aborts the
/// pipelines without draining them (their last batch is replayed).
pub struct Server {
    rt: tokio::runtime::Runtime,
    host: Host,
    opts: ServeOptions,
    running: Mutex<BTreeMap<(String, String), Running>>,
    refused: Mutex<Vec<String>>,
    /// One reload at a time.
    reloading: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data here (plain
    // maps and vectors updated in single statements), so go on with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// SHA-256 of what a pipeline version is made of: its manifest text, its
/// tenant's policy text and every plugin file it loads.
fn fingerprint(m: &Manifest, policy_file: &Path) -> String {
    let mut h = Sha256::new();
    for f in std::iter::once(m.file.as_path())
        .chain(std::iter::once(policy_file))
        .chain(m.stages.iter().map(|s| s.plugin.as_path()))
    {
        h.update(f.as_os_str().as_encoded_bytes());
        h.update(std::fs::read(f).unwrap_or_default());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// A finished pipeline task's outcome, as its state.
fn ended(
    joined: std::result::Result<
        std::result::Result<crate::pipeline::Pipeline, StreamError>,
        tokio::task::JoinError,
    >,
) -> String {
    match joined {
        Ok(Ok(_)) => "stopped".to_string(),
        Ok(Err(e)) => format!("failed: {e}"),
        Err(e) => format!("failed: the pipeline task panicked: {e}"),
    }
}

fn not_hosted(tenant: &str, pipeline: &str) -> ServiceError {
    ServiceError::NotFound(format!(
        "no pipeline `{pipeline}` of tenant `{tenant}` is hosted here"
    ))
}

/// Adds a sample (at most one a second, kept for a minute) and returns
/// the rates since the oldest sample of the last 10 s (or the newest
/// older one).
fn rates(samples: &mut VecDeque<(Instant, u64, u64, u64)>, f: &PipelineStatus) -> Rates {
    let now = Instant::now();
    if samples
        .back()
        .is_none_or(|s| now.duration_since(s.0) >= Duration::from_secs(1))
    {
        samples.push_back((now, f.consumed, f.produced, f.dead_letters));
    }
    while samples
        .front()
        .is_some_and(|s| now.duration_since(s.0) > Duration::from_secs(60))
    {
        samples.pop_front();
    }
    let base = samples
        .iter()
        .find(|s| now.duration_since(s.0) <= Duration::from_secs(10))
        .or(samples.front());
    match base {
        Some(b) if now.duration_since(b.0) >= Duration::from_millis(500) => {
            let dt = now.duration_since(b.0).as_secs_f64();
            Rates {
                consumed_per_sec: f.consumed.saturating_sub(b.1) as f64 / dt,
                produced_per_sec: f.produced.saturating_sub(b.2) as f64 / dt,
                dead_letters_per_sec: f.dead_letters.saturating_sub(b.3) as f64 / dt,
            }
        }
        _ => Rates::default(),
    }
}

/// One pipeline's entry in a status: its condition from how its task ended
/// (`ended`) and its counters, its rates from `samples`. Shared by
/// [`Server::status`] and `weft dev`'s watched scenario, so the admin API
/// and the console read both alike.
pub(crate) fn served_pipeline(
    tenant: &str,
    name: &str,
    file: &Path,
    c: &Counters,
    topics: &PipelineTopics,
    samples: &mut VecDeque<(Instant, u64, u64, u64)>,
    ended: Option<&str>,
) -> ServedPipeline {
    let held = c.held.load(std::sync::atomic::Ordering::Relaxed);
    let (condition, reason) = match (ended, held, c.circuit_open(), c.stalled()) {
        (Some("stopped"), _, _, _) => (Condition::Stopped, None),
        (Some(e), _, _, _) => (
            Condition::Failed,
            Some(e.trim_start_matches("failed: ").to_string()),
        ),
        (None, true, _, _) => (Condition::Paused, Some("by an operator".to_string())),
        (None, false, Some(why), _) => (Condition::CircuitOpen, Some(why)),
        (None, false, None, Some(why)) => (Condition::Stalled, Some(why)),
        (None, false, None, None) => (Condition::Running, None),
    };
    let state = match (condition, &reason) {
        (Condition::Running, _) => "running".to_string(),
        (Condition::Stopped, _) => "stopped".to_string(),
        (Condition::Failed, Some(why)) => format!("failed: {why}"),
        (Condition::CircuitOpen | Condition::Paused, Some(why)) => format!("paused: {why}"),
        (Condition::Stalled, Some(why)) => format!("stalled: {why}"),
        (c, _) => format!("{c:?}").to_lowercase(),
    };
    let figures = PipelineStatus::of(name, c);
    let rates = rates(samples, &figures);
    ServedPipeline {
        tenant: tenant.to_string(),
        file: display_path(file),
        state,
        condition,
        reason,
        reloads: c.reloads.load(std::sync::atomic::Ordering::Relaxed),
        rates,
        lag: c.total_lag(),
        lag_by_partition: c
            .lag
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .unwrap_or_default(),
        last_error: c.last_error(),
        topics: topics.clone(),
        figures,
    }
}

fn identity(m: &Manifest) -> String {
    format!(
        "{} -> {:?} + {:?}, dead letters {}, {:?}",
        m.source_topic, m.sink_topic, m.sink_index, m.dead_letter_topic, m.format
    )
}

impl Server {
    /// Starts hosting `opts.tenants`: every manifest that passes its checks
    /// runs; the others are reported in [`Server::status`]. Fails only if
    /// the tree cannot be read or the broker is unreachable.
    pub fn start(host: Host, opts: ServeOptions) -> Result<(Server, ReloadReport)> {
        let rt =
            tokio::runtime::Runtime::new().map_err(|e| ServiceError::io("starting tokio", e))?;
        host.follow_tables(&opts.brokers);
        let server = Server {
            rt,
            host,
            opts,
            running: Mutex::new(BTreeMap::new()),
            refused: Mutex::new(Vec::new()),
            reloading: Mutex::new(()),
        };
        let report = server.reload()?;
        Ok((server, report))
    }

    /// Re-reads the tenants directory and applies what changed (see the
    /// module's documentation). Never stops a healthy pipeline because
    /// another manifest is broken.
    pub fn reload(&self) -> Result<ReloadReport> {
        self.reload_forcing(None)
    }

    /// [`Server::reload`]; `force` gets a new version even if unchanged.
    fn reload_forcing(&self, force: Option<(String, String)>) -> Result<ReloadReport> {
        let _one = lock(&self.reloading);
        let mut report = ReloadReport::default();
        let tenants = scan(&self.opts.tenants)?;
        let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
        // Files whose current version checked out (under whatever name).
        let mut good_files: BTreeSet<PathBuf> = BTreeSet::new();
        let mut present: BTreeSet<PathBuf> = BTreeSet::new();
        for t in &tenants {
            present.extend(t.manifests.iter().cloned());
            // Each manifest's fingerprint once per reload (it reads the
            // plugin files, tens of MB for a model plugin).
            let fps = std::cell::RefCell::new(BTreeMap::<PathBuf, String>::new());
            let fp_of = |m: &Manifest| {
                fps.borrow_mut()
                    .entry(m.file.clone())
                    .or_insert_with(|| fingerprint(m, &t.policy_file()))
                    .clone()
            };
            // A running, healthy version with the same fingerprint passed
            // every check when it started.
            let running_as_is = |m: &Manifest| {
                let fp = fp_of(m);
                lock(&self.running)
                    .get(&(t.name.clone(), m.name.clone()))
                    .is_some_and(|r| {
                        r.ended.is_none()
                            && r.task.as_ref().is_some_and(|t| !t.is_finished())
                            && r.fingerprint == fp
                    })
            };
            let check = check_tenant(&self.host.runtime, t, &running_as_is);
            report.refused.extend(check.problems);
            let Ok(policy) = &t.policy else { continue };
            for c in check.ok {
                let m = c.manifest;
                let key = (t.name.clone(), m.name.clone());
                good_files.insert(m.file.clone());
                wanted.insert(key.clone());
                let label = format!("{}/{}", key.0, key.1);
                let fp = fp_of(&m);
                let current = {
                    let running = lock(&self.running);
                    running.get(&key).map(|r| {
                        // Ended on its own (failed): started again below.
                        let ended =
                            r.ended.is_some() || r.task.as_ref().is_none_or(|t| t.is_finished());
                        (r.fingerprint.clone(), r.identity.clone(), ended)
                    })
                };
                let outcome = match current {
                    Some((f, _, false)) if f == fp && force.as_ref() != Some(&key) => continue,
                    Some((_, id, false)) if id == identity(&m) => {
                        self.swap(&key, m, policy, fp).map(|()| &mut report.swapped)
                    }
                    Some(_) => {
                        self.stop_one(&key);
                        self.start_one(t.name.clone(), m, policy, fp)
                            .map(|()| &mut report.restarted)
                    }
                    None => self
                        .start_one(t.name.clone(), m, policy, fp)
                        .map(|()| &mut report.started),
                };
                match outcome {
                    Ok(list) => list.push(label),
                    Err(e) => report.refused.push(format!("{label}: {e}")),
                }
            }
        }
        // A pipeline whose file is gone, or now holds another pipeline, stops;
        // one whose file is still there but broken keeps running.
        let gone: Vec<(String, String)> = lock(&self.running)
            .iter()
            .filter(|(k, r)| {
                !wanted.contains(*k) && (!present.contains(&r.file) || good_files.contains(&r.file))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.stop_one(&key);
            report.stopped.push(format!("{}/{}", key.0, key.1));
        }
        *lock(&self.refused) = report.refused.clone();
        for r in &report.refused {
            tracing::warn!("refused: {r}");
        }
        Ok(report)
    }

    fn kafka_options(&self) -> KafkaOptions {
        KafkaOptions {
            instance_id: None,
            assign: self.opts.assign,
            brokers: self.opts.brokers.clone(),
            group: None,
            idle_exit: None,
            state_dir: Some(self.host.data_dir.join("sink")),
        }
    }

    fn start_one(&self, tenant: String, m: Manifest, policy: &Policy, fp: String) -> Result<()> {
        let topics = topics_of(&[&m], self.opts.partitions);
        self.rt
            .block_on(kafka::ensure_topics(&self.opts.brokers, &topics))?;
        if let Some(i) = &m.sink_index {
            self.host.will_write(&m.tenant, i);
        }
        let key = (tenant.clone(), m.name.clone());
        let file = m.file.clone();
        let id = identity(&m);
        let topics = PipelineTopics::of(&m);
        let metrics = self.host.metrics.pipeline(&tenant, &m.name);
        let pipeline = self.host.pipeline_for(m, policy)?;
        let counters = Arc::new(Counters::with_metrics(metrics));
        let (stop, stop_rx) = watch::channel(false);
        let (hold, hold_rx) = watch::channel(false);
        let (swap, swap_rx) = mpsc::unbounded_channel();
        let control = Control {
            swap: Some(swap_rx),
            circuit: CircuitPolicy {
                max_dead_letters_per_sec: policy.max_dead_letters_per_sec,
                ..self.opts.circuit.clone()
            },
            hold: Some(hold_rx),
        };
        let task = self.rt.spawn(kafka::run_with(
            pipeline,
            self.kafka_options(),
            counters.clone(),
            stop_rx,
            control,
        ));
        lock(&self.running).insert(
            key,
            Running {
                file,
                fingerprint: fp,
                identity: id,
                counters,
                swap,
                stop,
                hold,
                topics,
                samples: VecDeque::new(),
                task: Some(task),
                ended: None,
            },
        );
        Ok(())
    }

    /// Pauses `tenant/pipeline`: the batch in flight is finished and
    /// committed, then its partitions stay paused (the group keeps the
    /// member, so no rebalance) until [`Server::resume`]. A reload keeps
    /// the pause; a restart (topics changed) or a new process does not.
    pub fn pause(&self, tenant: &str, pipeline: &str) -> Result<()> {
        self.set_hold(tenant, pipeline, true)
    }

    /// Resumes a paused pipeline (an open circuit stays open).
    pub fn resume(&self, tenant: &str, pipeline: &str) -> Result<()> {
        self.set_hold(tenant, pipeline, false)
    }

    fn set_hold(&self, tenant: &str, pipeline: &str, hold: bool) -> Result<()> {
        let running = lock(&self.running);
        let r = running
            .get(&(tenant.to_string(), pipeline.to_string()))
            .ok_or_else(|| not_hosted(tenant, pipeline))?;
        r.hold.send_replace(hold);
        Ok(())
    }

    /// The topics of `tenant/pipeline`, if it is hosted.
    pub fn topics(&self, tenant: &str, pipeline: &str) -> Option<PipelineTopics> {
        lock(&self.running)
            .get(&(tenant.to_string(), pipeline.to_string()))
            .map(|r| r.topics.clone())
    }

    /// The brokers the pipelines run against.
    pub fn brokers(&self) -> &str {
        &self.opts.brokers
    }

    /// Reloads the tree (as [`Server::reload`]) and makes sure
    /// `tenant/pipeline` gets a new version even if none of its files
    /// changed: its plugins are instantiated afresh and its circuit is
    /// closed, at the next batch boundary.
    pub fn reload_pipeline(&self, tenant: &str, pipeline: &str) -> Result<ReloadReport> {
        if self.topics(tenant, pipeline).is_none() {
            return Err(not_hosted(tenant, pipeline));
        }
        self.reload_forcing(Some((tenant.to_string(), pipeline.to_string())))
    }

    fn swap(&self, key: &(String, String), m: Manifest, policy: &Policy, fp: String) -> Result<()> {
        let pipeline = self.host.pipeline_for(m, policy)?;
        let mut running = lock(&self.running);
        let r = running
            .get_mut(key)
            .ok_or_else(|| ServiceError::Run(format!("{}/{} is not running", key.0, key.1)))?;
        r.swap
            .send(pipeline)
            .map_err(|_| ServiceError::Run(format!("{}/{} has stopped", key.0, key.1)))?;
        r.fingerprint = fp;
        Ok(())
    }

    /// Stops one pipeline: its batch in flight is finished and committed.
    fn stop_one(&self, key: &(String, String)) {
        let Some(mut r) = lock(&self.running).remove(key) else {
            return;
        };
        let _ = r.stop.send(true);
        if let Some(t) = r.task.take() {
            if let Ok(Err(e)) = self.rt.block_on(t) {
                tracing::warn!(pipeline = %key.1, tenant = %key.0, "stopped with an error: {e}");
            }
        }
    }

    /// Every hosted pipeline's state and figures, and what the last reload
    /// refused.
    pub fn status(&self) -> ServeStatus {
        let mut running = lock(&self.running);
        let mut out = Vec::new();
        for ((tenant, name), r) in running.iter_mut() {
            if r.task.as_ref().is_some_and(|t| t.is_finished()) {
                if let Some(t) = r.task.take() {
                    r.ended = Some(ended(self.rt.block_on(t)));
                }
            }
            out.push(served_pipeline(
                tenant,
                name,
                &r.file,
                &r.counters,
                &r.topics,
                &mut r.samples,
                r.ended.as_deref(),
            ));
        }
        ServeStatus {
            pipelines: out,
            refused: lock(&self.refused).clone(),
        }
    }

    /// Stops every pipeline: each finishes and commits its batch in flight,
    /// within `opts.grace` all together. A pipeline stuck in a plugin call
    /// past that (a plugin blocked in a host call) is abandoned without
    /// committing, so its batch is replayed by whoever runs it next; the
    /// status says so. Returns the final status.
    pub fn stop(self) -> ServeStatus {
        let last = self.stop_all();
        // Threads still inside a plugin call are not waited for.
        let Server { rt, .. } = self;
        rt.shutdown_timeout(Duration::from_millis(200));
        last
    }

    /// [`Server::stop`] through a shared reference (a server shared with
    /// the admin API): every pipeline stops as there; the runtime stays
    /// until the server is dropped. Returns the final status.
    pub fn stop_all(&self) -> ServeStatus {
        let deadline = tokio::time::Instant::now() + self.opts.grace;
        {
            let mut running = lock(&self.running);
            for r in running.values() {
                let _ = r.stop.send(true);
            }
            for r in running.values_mut() {
                let Some(t) = r.task.take() else { continue };
                r.ended = Some(
                    match self.rt.block_on(async { tokio::time::timeout_at(deadline, t).await }) {
                        Ok(joined) => ended(joined),
                        Err(_) => format!(
                            "failed: its batch in flight did not finish within the {:?} grace period; abandoned uncommitted (it is replayed from the last commit)",
                            self.opts.grace
                        ),
                    },
                );
            }
        }
        self.status()
    }

    /// Runs until Ctrl-C or SIGTERM, reloading on SIGHUP and, if `watch`,
    /// when a file under the tenants directory changes (debounced by
    /// 500 ms); reports progress every `progress_every`. Returns after the
    /// pipelines stopped, with their final status.
    pub fn serve_until_signal(
        self,
        watch: bool,
        progress_every: Duration,
        on_event: impl Fn(ServeEvent<'_>),
    ) -> Result<ServeStatus> {
        let last = self.run_until_signal(watch, progress_every, on_event)?;
        // Already stopped: this only lets the runtime go without waiting
        // for threads stuck in a plugin call.
        self.stop();
        Ok(last)
    }

    /// [`Server::serve_until_signal`] through a shared reference (a server
    /// shared with the admin API): the pipelines are stopped at the end
    /// ([`Server::stop_all`]), the runtime stays until the server is dropped.
    pub fn run_until_signal(
        &self,
        watch: bool,
        progress_every: Duration,
        on_event: impl Fn(ServeEvent<'_>),
    ) -> Result<ServeStatus> {
        let (changed_tx, mut changed_rx) = mpsc::unbounded_channel::<()>();
        let _watcher = if watch {
            Some(watch_tree(&self.opts.tenants, changed_tx)?)
        } else {
            None
        };
        // The waiting happens in short `block_on`s, so that a reload (which
        // blocks on the runtime itself) runs outside of one.
        let handle = self.rt.handle().clone();
        let _in_runtime = handle.enter();
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| ServiceError::io("listening for SIGHUP", e))?;
        let mut stop = Box::pin(super::run::shutdown_signal());
        let mut tick = tokio::time::interval(progress_every);
        tick.reset();
        loop {
            let wake = handle.block_on(async {
                #[cfg(unix)]
                let hup_recv = hup.recv();
                #[cfg(not(unix))]
                let hup_recv = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = &mut stop => None,
                    _ = hup_recv => Some(Some("SIGHUP")),
                    Some(()) = changed_rx.recv() => {
                        // Let a burst of writes (an editor's save, a copy) settle.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        while changed_rx.try_recv().is_ok() {}
                        Some(Some("a file changed"))
                    }
                    _ = tick.tick() => Some(None),
                }
            });
            match wake {
                None => break,
                Some(None) => on_event(ServeEvent::Progress(&self.status())),
                Some(Some(why)) => match self.reload() {
                    Ok(r) => on_event(ServeEvent::Reloaded(why, &r)),
                    Err(e) => on_event(ServeEvent::ReloadFailed(why, &e)),
                },
            }
        }
        on_event(ServeEvent::Stopping);
        Ok(self.stop_all())
    }
}

/// What [`Server::serve_until_signal`] reports.
pub enum ServeEvent<'a> {
    Progress(&'a ServeStatus),
    /// A reload ran: what triggered it, and what it did.
    Reloaded(&'static str, &'a ReloadReport),
    ReloadFailed(&'static str, &'a ServiceError),
    /// A signal arrived: the batches in flight are being finished and committed.
    Stopping,
}

/// Watches `root` recursively; every event sends a unit on `tx`.
fn watch_tree(root: &Path, tx: mpsc::UnboundedSender<()>) -> Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut w = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        if e.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })
    .map_err(|e| ServiceError::Run(format!("watching {}: {e}", display_path(root))))?;
    w.watch(root, notify::RecursiveMode::Recursive)
        .map_err(|e| ServiceError::Run(format!("watching {}: {e}", display_path(root))))?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watcher_hears_a_manifest_edit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sub = dir.path().join("t/pipelines");
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join("p.toml"), "a").expect("write");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _w = watch_tree(dir.path(), tx).expect("watch");
        std::fs::write(sub.join("p.toml"), "b").expect("write");
        let rt = tokio::runtime::Runtime::new().expect("tokio");
        let heard =
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), rx.recv()).await });
        assert_eq!(heard.ok().flatten(), Some(()));
    }
}

//! `cargo bench -p weft --bench tenancy`: does a light tenant keep its
//! throughput and latency while another tenant misbehaves? (issue 10 §3)
//!
//! Everything goes through the real multi-tenant host: a
//! `weft::service::serve::Server` in this process, with a tenants directory
//! the bench writes to a temp dir, against one local tansu broker, with the
//! circuit breaker at `weft serve`'s defaults. The broker stores into
//! sqlite (durable, as `weft dev` runs it); `WEFT_BENCH_BROKER=memory` runs
//! it on tansu's in-memory storage instead, to tell what the host shares
//! from what the broker's storage shares.
//!
//! Tenant `b` runs one light pipeline (the Rust redaction transform, `b.in`
//! -> `b.out`, the manifest defaults: batches of up to 256 records or
//! 20 ms) fed at `WEFT_BENCH_RATE` (200) JSON records/s for
//! `WEFT_BENCH_SECS` (15) s per case. Its latency is the record's Kafka
//! CreateTime (set when the bench produces it) to its arrival on `b.out`
//! (`follow_topic`'s arrival time); its throughput is the records delivered
//! over the time from the first record produced to the last one arriving.
//!
//! Cases, in one run, each with the same feed of `b`:
//! - solo: tenant `a` runs nothing (measured first, and again last to show
//!   the drift of the machine over the run);
//! - cpu: `a` runs `WEFT_BENCH_A_PIPELINES` (2, one per plugin worker)
//!   pipelines of the hostile fixture in `spin-ms` mode, one record per call,
//!   each call burning 0.9x the stage's `timeout_ms` (`WEFT_BENCH_A_TIMEOUT_MS`,
//!   100), from a backlog;
//! - memory: the same pipelines in `touch-mb` mode: each call writes 56 MiB
//!   of a 64 MiB linear memory;
//! - crash (run after the flood): the same pipelines in `panic` mode (every record traps, default
//!   batches) over a backlog of `WEFT_BENCH_CRASH_BACKLOG` (20000) records, started 2 s into `b`'s window so the crash loop overlaps it;
//!   the breaker (100 plugin failures in a row, 30 s first pause) opens;
//! - flood: `a` runs `b`'s light pipeline, fed at 10x `b`'s rate.
//!
//! Tenants have the same `cpu_weight` (1). Per case the bench prints what
//! the fair worker pool saw of each tenant (`Runtime::scheduler().usage`)
//! and where the machine's CPU went (the broker process, librdkafka
//! threads, the host's tokio threads which also run the plugin calls, the
//! bench's own clients), so a miss can be attributed.

mod support;

use anyhow::{bail, Context};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{env_or, ms, ratio, Latencies, LoadMeter};
use tokio::sync::mpsc::UnboundedReceiver;
use weft::policy::Policy;
use weft::runtime::fair::TenantUsage;
use weft::runtime::FairScheduler;
use weft::service::serve::{ServeOptions, ServeStatus, Server};
use weft::service::Host;
use weft::stream::assign::Assignment;
use weft::stream::broker::{LocalBroker, Storage};
use weft::stream::circuit::CircuitPolicy;
use weft::stream::kafka::{self, chrono_ms, ReadRecord};

/// The light tenant, whose figures the bench is about.
const B: &str = "b";
/// The noisy tenant.
const A: &str = "a";
/// `weft serve`'s default for `--circuit-failures` and `--circuit-pause-secs`.
const CIRCUIT_FAILURES: u64 = 100;
const CIRCUIT_PAUSE: Duration = Duration::from_secs(30);
/// `a`'s memory hog: MiB written per call, and the stage's memory limit.
const TOUCH_MB: u64 = 56;
const A_MEMORY_MB: u64 = 64;
/// How long a new pipeline may take to join its group and consume.
const JOIN_WAIT: Duration = Duration::from_secs(90);
/// How long after the feed ends the bench waits for `b`'s stragglers.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// Same for every tenant: the operator gives both the same share.
const POLICY: &str = "cpu_weight = 1\nmax_instances = 16\n";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    Solo,
    Cpu,
    Memory,
    Crash,
    Flood,
    SoloAgain,
    /// Diagnostic, only with `WEFT_BENCH_CASES=join`: `a` starts pipelines
    /// that do nothing (a no-op plugin, an empty topic) 2 s into `b`'s
    /// window, to see what new consumer groups alone cost `b`.
    Join,
}

impl Case {
    /// The crash loop runs last but one: in the runs so far it left `b`'s
    /// pipeline stalled for the rest of the run (see the README), and the
    /// solo run after it shows whether `b` recovered.
    const ALL: [Case; 6] = [
        Case::Solo,
        Case::Cpu,
        Case::Memory,
        Case::Flood,
        Case::Crash,
        Case::SoloAgain,
    ];

    fn slug(self) -> &'static str {
        match self {
            Case::Solo => "solo",
            Case::Cpu => "cpu",
            Case::Memory => "memory",
            Case::Crash => "crash",
            Case::Flood => "flood",
            Case::SoloAgain => "solo2",
            Case::Join => "join",
        }
    }

    fn what_a_runs(self, cfg: &Config) -> String {
        let n = cfg.a_pipelines;
        match self {
            Case::Solo => "nothing".into(),
            Case::SoloAgain => "nothing (solo again, at the end)".into(),
            Case::Cpu => format!(
                "(a) {n} pipelines, each call spins {} ms of a {} ms timeout",
                cfg.spin_ms(),
                cfg.a_timeout_ms
            ),
            Case::Memory => format!(
                "(b) {n} pipelines, each call writes {TOUCH_MB} MiB of a {A_MEMORY_MB} MiB memory"
            ),
            Case::Crash => format!("(c) {n} pipelines, every record traps (breaker on)"),
            Case::Join => format!("{n} idle no-op pipelines joining their groups"),
            Case::Flood => format!(
                "(d) the same light pipeline at {} records/s (10x)",
                cfg.rate * 10
            ),
        }
    }

    fn a_is_idle(self) -> bool {
        // (Join is not idle: it starts pipelines.)
        matches!(self, Case::Solo | Case::SoloAgain)
    }
}

struct Config {
    rate: u64,
    secs: u64,
    a_pipelines: usize,
    a_timeout_ms: u64,
    /// Records waiting for the crash case's pipelines.
    crash_backlog: u64,
}

impl Config {
    fn spin_ms(&self) -> u64 {
        self.a_timeout_ms * 9 / 10
    }
}

/// A JSON event with an e-mail address and a card number for the
/// redaction transform to mask (~250 bytes).
fn event(i: u64) -> Vec<u8> {
    format!(
        r#"{{"id":{i},"kind":"payment","user":"customer{i}@example.com","note":"paid with card 4111 1111 1111 1111 at gate B{}","amount":{}.{:02},"currency":"EUR","channel":"web","region":"eu-west"}}"#,
        i % 40,
        i % 500,
        i % 100
    )
    .into_bytes()
}

/// A tenant directory with its policy.
fn tenant(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("pipelines"))
        .with_context(|| format!("creating {}", dir.display()))?;
    // The bench's plugins are the repository's built ones, outside the
    // tenant's directory: the operator allows that directory.
    let plugins = support::repo().join("target/plugins");
    let policy = format!(
        "{POLICY}allowed_plugin_dirs = [{:?}]\n",
        plugins.display().to_string()
    );
    std::fs::write(dir.join("policy.toml"), policy).context("writing a policy")?;
    Ok(dir)
}

/// A one-stage transform pipeline manifest; `batch` is extra `[batch]`
/// text (empty for the defaults).
fn manifest(name: &str, from: &str, to: &str, plugin: &Path, limits: &str, batch: &str) -> String {
    format!(
        "name = \"{name}\"\n[source]\ntopic = \"{from}\"\n{batch}\
         [[stage]]\nname = \"t\"\nkind = \"transform\"\nplugin = \"{}\"\nlimits = {{ {limits} }}\n\
         [sink]\ntopic = \"{to}\"\n",
        plugin.display()
    )
}

fn plugin(file: &str) -> PathBuf {
    support::repo().join("target/plugins").join(file)
}

fn light(name: &str, from: &str, to: &str) -> String {
    manifest(
        name,
        from,
        to,
        &plugin("rust_redact_transform.wasm"),
        "memory_mb = 32, timeout_ms = 1000",
        "",
    )
}

/// `a`'s manifests for a case: (file name, text).
fn a_manifests(case: Case, cfg: &Config) -> Vec<(String, String)> {
    let hostile = plugin("hostile.wasm");
    let one_per_call = "[batch]\nmax_records = 1\n";
    let many = |prefix: &str, limits: &str, batch: &str| {
        (1..=cfg.a_pipelines)
            .map(|i| {
                let name = format!("{prefix}-{i}");
                let text = manifest(
                    &name,
                    &format!("{prefix}-in"),
                    &format!("{prefix}-out"),
                    &hostile,
                    limits,
                    batch,
                );
                (format!("{name}.toml"), text)
            })
            .collect()
    };
    match case {
        Case::Solo | Case::SoloAgain => Vec::new(),
        Case::Cpu => many(
            "spin",
            &format!("memory_mb = 32, timeout_ms = {}", cfg.a_timeout_ms),
            one_per_call,
        ),
        Case::Memory => many(
            "mem",
            &format!("memory_mb = {A_MEMORY_MB}, timeout_ms = 5000"),
            one_per_call,
        ),
        Case::Crash => many("crash", "memory_mb = 32, timeout_ms = 1000", ""),
        Case::Join => (1..=cfg.a_pipelines)
            .map(|i| {
                let name = format!("join-{i}");
                let text = manifest(
                    &name,
                    "join-in",
                    "join-out",
                    &plugin("noop_transform.wasm"),
                    "memory_mb = 32, timeout_ms = 1000",
                    "",
                );
                (format!("{name}.toml"), text)
            })
            .collect(),
        Case::Flood => vec![("flood.toml".into(), light("flood", "flood-in", "flood-out"))],
    }
}

/// `a`'s input topic for a case, and the backlog put there before `a`
/// starts (every `a` pipeline of the case reads all of it, in its own group).
fn a_backlog(case: Case, cfg: &Config) -> Option<(String, Vec<u8>, u64)> {
    // Enough to keep each pipeline busy for the whole case and then some.
    let busy_secs = cfg.secs + 60;
    match case {
        Case::Cpu => Some((
            "spin-in".into(),
            format!("spin-ms:{}", cfg.spin_ms()).into_bytes(),
            busy_secs * 1000 / cfg.spin_ms().max(1),
        )),
        Case::Memory => Some((
            "mem-in".into(),
            format!("touch-mb:{TOUCH_MB}").into_bytes(),
            busy_secs * 200,
        )),
        Case::Crash => Some(("crash-in".into(), b"panic".to_vec(), cfg.crash_backlog)),
        _ => None,
    }
}

/// CPU time of the machine, this process's threads by kind, and the broker.
#[derive(Clone, Default)]
struct Cpu {
    machine_busy: u64,
    machine_total: u64,
    process: u64,
    /// Jiffies per thread kind (threads alive at the time of the sample).
    threads: BTreeMap<&'static str, u64>,
    broker: u64,
}

/// `utime + stime` from a `/proc/.../stat` line.
fn stat_jiffies(stat: &str) -> Option<(String, u64)> {
    let (head, after) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let f: Vec<&str> = after.split_whitespace().collect();
    let u: u64 = f.get(11)?.parse().ok()?;
    let s: u64 = f.get(12)?.parse().ok()?;
    Some((comm, u + s))
}

fn thread_kind(comm: &str) -> &'static str {
    if comm.starts_with("rdk:") {
        "librdkafka threads (all clients)"
    } else if comm.starts_with("tokio-runtime") {
        "host's tokio threads (incl. plugin calls)"
    } else if comm.starts_with("bench-client") {
        "bench's feeders and reader"
    } else {
        "other threads of this process"
    }
}

/// The broker's pid: this process's child running tansu.
fn broker_pid() -> Option<u32> {
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((head, after)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = after.split_whitespace().nth(1);
        if ppid == Some(me.as_str()) && head.contains("tansu") {
            return name.parse().ok();
        }
    }
    None
}

fn sample_cpu(broker: Option<u32>) -> Cpu {
    let mut c = Cpu::default();
    if let Some(line) = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
    {
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        c.machine_total = total;
        c.machine_busy = total.saturating_sub(idle);
    }
    if let Some((_, j)) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_jiffies(&s))
    {
        c.process = j;
    }
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Some((comm, j)) = std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|s| stat_jiffies(&s))
            {
                *c.threads.entry(thread_kind(&comm)).or_default() += j;
            }
        }
    }
    if let Some(pid) = broker {
        if let Some((_, j)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| stat_jiffies(&s))
        {
            c.broker = j;
        }
    }
    c
}

/// Where the CPU went between two samples, in cores (2.0 = both cores).
fn cpu_report(a: &Cpu, b: &Cpu) -> Vec<(String, f64)> {
    let total = b.machine_total.saturating_sub(a.machine_total) as f64;
    if total <= 0.0 {
        return Vec::new();
    }
    let cores = support::cores() as f64;
    let c = |j: u64| j as f64 / total * cores;
    let mut out = vec![
        (
            "machine".to_string(),
            c(b.machine_busy.saturating_sub(a.machine_busy)),
        ),
        (
            "tansu broker".to_string(),
            c(b.broker.saturating_sub(a.broker)),
        ),
        (
            "this process".to_string(),
            c(b.process.saturating_sub(a.process)),
        ),
    ];
    let mut kinds: Vec<&'static str> = b.threads.keys().copied().collect();
    kinds.extend(a.threads.keys().copied());
    kinds.sort_unstable();
    kinds.dedup();
    for k in kinds {
        let before = a.threads.get(k).copied().unwrap_or(0);
        let after = b.threads.get(k).copied().unwrap_or(0);
        out.push((format!("  {k}"), c(after.saturating_sub(before))));
    }
    out
}

/// What one case measured.
struct Outcome {
    case: Case,
    sent: u64,
    delivered: u64,
    rate: f64,
    lat: Latencies,
    /// `a`'s records consumed / produced / dead-lettered during `b`'s window,
    /// and consumed over the whole case.
    a_window: (u64, u64, u64),
    a_total: (u64, u64, u64),
    /// Each `a` pipeline's state at the end of the window.
    a_states: Vec<String>,
    usage: [(TenantUsage, TenantUsage); 2],
    /// `b`'s worst latency per second of its feed, ms.
    worst: Vec<i64>,
    cpu: Vec<(String, f64)>,
    window: Duration,
    /// The flood's records actually queued per second (case d).
    flood_rate: Option<f64>,
}

/// Sums the figures of tenant `t`'s pipelines (consumed, produced, dead letters).
fn figures(s: &ServeStatus, t: &str) -> (u64, u64, u64) {
    s.pipelines
        .iter()
        .filter(|p| p.tenant == t)
        .fold((0, 0, 0), |acc, p| {
            (
                acc.0 + p.figures.consumed,
                acc.1 + p.figures.produced,
                acc.2 + p.figures.dead_letters,
            )
        })
}

fn minus(a: (u64, u64, u64), b: (u64, u64, u64)) -> (u64, u64, u64) {
    (
        a.0.saturating_sub(b.0),
        a.1.saturating_sub(b.1),
        a.2.saturating_sub(b.2),
    )
}

/// A paced producer: `rate` records/s (re-read every 10 ms tick, so it
/// can go from a trickle to the flood) until `stop`, not waiting for
/// acknowledgements (a flood does not care); counts what it queued.
async fn flood(
    producer: FutureProducer,
    topic: String,
    rate: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let tick = Duration::from_millis(10);
    let mut next = tokio::time::Instant::now();
    let mut i: u64 = 0;
    // Records owed, in hundredths, so rates that are not multiples of 100 work.
    let mut owed: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        next += tick;
        tokio::time::sleep_until(next).await;
        owed += rate.load(Ordering::Relaxed);
        while owed >= 100 {
            owed -= 100;
            let key = format!("f{i}");
            let value = event(i);
            let rec = FutureRecord::to(&topic)
                .key(&key)
                .payload(&value)
                .timestamp(chrono_ms());
            if producer.send_result(rec).is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            i += 1;
        }
    }
}

/// What `b`'s feed saw.
struct Fed {
    sent: u64,
    delivered: u64,
    /// ms since the epoch.
    first_send: i64,
    last_arrival: i64,
    lat: Latencies,
    /// The worst latency (ms) of the records produced in each second.
    worst: Vec<i64>,
    /// The reader, for the next case.
    rx: UnboundedReceiver<(ReadRecord, i64)>,
}

/// `b`'s feed for one case: `rate` records/s for `secs` s, keys
/// `<case>-<i>`, CreateTime now; then waits for every record on `b.out`.
/// Returns (sent, delivered, first send, latencies) and the reader back.
async fn feed_and_collect(
    brokers: String,
    case: &'static str,
    rate: u64,
    secs: u64,
    mut rx: UnboundedReceiver<(ReadRecord, i64)>,
) -> anyhow::Result<Fed> {
    let producer = kafka::producer(&brokers).context("b's producer")?;
    let total = rate * secs;
    let prefix = format!("{case}-");
    let topic = format!("{B}.in");
    let first_send = chrono_ms();
    let sender = {
        let prefix = prefix.clone();
        tokio::spawn(async move {
            let tick = Duration::from_millis(10);
            let start = tokio::time::Instant::now();
            let mut acks = Vec::with_capacity(total as usize);
            let mut i = 0u64;
            let mut n = 0u32;
            while i < total {
                n += 1;
                tokio::time::sleep_until(start + tick * n).await;
                let due = (rate * u64::from(n) / 100).min(total);
                while i < due {
                    let key = format!("{prefix}{i}");
                    let value = event(i);
                    let rec = FutureRecord::to(&topic)
                        .key(&key)
                        .payload(&value)
                        .timestamp(chrono_ms());
                    acks.push(producer.send_result(rec).map_err(|(e, _)| e)?);
                    i += 1;
                }
            }
            let mut ok = 0u64;
            for a in acks {
                if matches!(a.await, Ok(Ok(_))) {
                    ok += 1;
                }
            }
            anyhow::Ok(ok)
        })
    };
    let mut lat = Latencies::new();
    let mut worst: BTreeMap<i64, i64> = BTreeMap::new();
    let mut last_arrival = first_send;
    let mut seen = std::collections::HashSet::new();
    let feed_end = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if seen.len() as u64 >= total {
            break;
        }
        let until = feed_end.max(tokio::time::Instant::now()) + DRAIN_WAIT;
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some((r, arrived))) => {
                let Some(k) = r.key.as_deref() else { continue };
                if !k.starts_with(prefix.as_bytes()) || !seen.insert(k.to_vec()) {
                    continue;
                }
                if let Some(ts) = r.timestamp {
                    lat.record_ms(arrived - ts);
                    let w = worst.entry((ts - first_send).max(0) / 1000).or_default();
                    *w = (*w).max(arrived - ts);
                }
                last_arrival = last_arrival.max(arrived);
            }
            Ok(None) => bail!("b's reader stopped"),
            Err(_) => break,
        }
    }
    let sent = sender.await.context("b's feeder panicked")??;
    Ok(Fed {
        sent,
        delivered: seen.len() as u64,
        first_send,
        last_arrival,
        lat,
        worst: worst.into_values().collect(),
        rx,
    })
}

struct Bench {
    cfg: Config,
    root: PathBuf,
    brokers: String,
    broker_pid: Option<u32>,
    server: Server,
    scheduler: Arc<FairScheduler>,
    clients: tokio::runtime::Runtime,
    reader: Option<UnboundedReceiver<(ReadRecord, i64)>>,
}

impl Bench {
    fn reload(&self, why: &str) -> anyhow::Result<()> {
        let r = self
            .server
            .reload()
            .with_context(|| format!("reload ({why})"))?;
        if !r.refused.is_empty() {
            bail!("reload ({why}) refused: {}", r.refused.join("; "));
        }
        Ok(())
    }

    fn write_a(&self, case: Case) -> anyhow::Result<usize> {
        let dir = self.root.join(A).join("pipelines");
        let ms = a_manifests(case, &self.cfg);
        for (file, text) in &ms {
            std::fs::write(dir.join(file), text).with_context(|| format!("writing {file}"))?;
        }
        Ok(ms.len())
    }

    fn clear_a(&self) -> anyhow::Result<()> {
        let dir = self.root.join(A).join("pipelines");
        for e in std::fs::read_dir(&dir).context("listing a's pipelines")? {
            let p = e.context("listing a's pipelines")?.path();
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        self.reload("stopping a")
    }

    /// Waits until `n` of `a`'s pipelines have consumed something.
    fn wait_for_a(&self, n: usize) -> anyhow::Result<()> {
        let t0 = Instant::now();
        loop {
            let s = self.server.status();
            let started = s
                .pipelines
                .iter()
                .filter(|p| p.tenant == A && p.figures.consumed > 0)
                .count();
            if started >= n {
                return Ok(());
            }
            if let Some(f) = s
                .pipelines
                .iter()
                .find(|p| p.tenant == A && p.state.starts_with("failed"))
            {
                bail!("a's pipeline {} {}", f.figures.pipeline, f.state);
            }
            if t0.elapsed() > JOIN_WAIT {
                // Seen under heavy outside load: tansu takes minutes to form
                // a new group. Measure anyway; a's figures will show it.
                eprintln!("only {started} of a's {n} pipelines consumed within {JOIN_WAIT:?}; measuring anyway");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn usage(&self) -> (TenantUsage, TenantUsage) {
        (self.scheduler.usage(A), self.scheduler.usage(B))
    }

    fn run(&mut self, case: Case) -> anyhow::Result<Outcome> {
        eprintln!("case {}: {}", case.slug(), case.what_a_runs(&self.cfg));
        let t_case = Instant::now();
        let before_all = figures(&self.server.status(), A);
        if let Some((topic, value, n)) = a_backlog(case, &self.cfg) {
            let topic = format!("{A}.{topic}");
            let records = (0..n)
                .map(|i| (Some(format!("a{i}").into_bytes()), Some(value.clone())))
                .collect();
            self.clients
                .block_on(async {
                    kafka::ensure_topics(&self.brokers, &[(topic.clone(), 1)]).await?;
                    kafka::produce_values(&self.brokers, &topic, records).await
                })
                .with_context(|| format!("filling {topic}"))?;
        }
        // The flood: a trickle until a's pipeline has joined, then 10x.
        let flood_stop = Arc::new(AtomicBool::new(false));
        let flood_sent = Arc::new(AtomicU64::new(0));
        let flood_rate = Arc::new(AtomicU64::new(0));
        let mut flood_task = None;
        if case == Case::Flood {
            let topic = format!("{A}.flood-in");
            self.clients
                .block_on(kafka::ensure_topics(&self.brokers, &[(topic.clone(), 1)]))?;
            let producer = kafka::producer(&self.brokers).context("a's producer")?;
            flood_rate.store(10, Ordering::Relaxed);
            flood_task = Some(self.clients.spawn(flood(
                producer,
                topic,
                flood_rate.clone(),
                flood_stop.clone(),
                flood_sent.clone(),
            )));
        }
        let mut a_count = 0;
        let late_start = matches!(case, Case::Crash | Case::Join);
        if !late_start {
            a_count = self.write_a(case)?;
            if a_count > 0 {
                self.reload("starting a")?;
                self.wait_for_a(a_count)?;
            }
        }
        if case == Case::Flood {
            flood_rate.store(self.cfg.rate * 10, Ordering::Relaxed);
            // Let the flood reach a steady state before b's window.
            std::thread::sleep(Duration::from_secs(3));
        }
        let u0 = self.usage();
        let a0 = figures(&self.server.status(), A);
        let cpu0 = sample_cpu(self.broker_pid);
        let flood0 = flood_sent.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let rx = self.reader.take().context("the reader is in use")?;
        let task = self.clients.spawn(feed_and_collect(
            self.brokers.clone(),
            case.slug(),
            self.cfg.rate,
            self.cfg.secs,
            rx,
        ));
        if late_start {
            std::thread::sleep(Duration::from_secs(2));
            a_count = self.write_a(case)?;
            self.reload("starting a during b's window")?;
        }
        let Fed {
            sent,
            delivered,
            first_send: first,
            last_arrival: last,
            lat,
            worst,
            rx,
        } = self.clients.block_on(task).context("b's feed panicked")??;
        self.reader = Some(rx);
        let window = t0.elapsed();
        let cpu1 = sample_cpu(self.broker_pid);
        let flood1 = flood_sent.load(Ordering::Relaxed);
        let status = self.server.status();
        let a1 = figures(&status, A);
        let u1 = self.usage();
        let a_states = status
            .pipelines
            .iter()
            .filter(|p| p.tenant == A)
            .map(|p| format!("{}: {}", p.figures.pipeline, p.state))
            .collect();
        flood_stop.store(true, Ordering::Relaxed);
        if let Some(t) = flood_task {
            self.clients.block_on(t).context("a's flood panicked")?;
        }
        if a_count > 0 {
            self.clear_a()?;
        }
        let took = (last - first).max(1) as f64 / 1000.0;
        eprintln!(
            "case {} done in {:.0} s: b {delivered}/{sent} delivered, {}",
            case.slug(),
            t_case.elapsed().as_secs_f64(),
            lat.summary()
        );
        Ok(Outcome {
            case,
            sent,
            delivered,
            rate: delivered as f64 / took,
            lat,
            a_window: minus(a1, a0),
            a_total: minus(a1, before_all),
            a_states,
            usage: [u0, u1],
            worst,
            cpu: cpu_report(&cpu0, &cpu1),
            window,
            flood_rate: (case == Case::Flood)
                .then(|| (flood1 - flood0) as f64 / window.as_secs_f64()),
        })
    }
}

fn circuit(o: &Outcome) -> String {
    if o.case.a_is_idle() {
        return "-".into();
    }
    let paused = o.a_states.iter().filter(|s| s.contains("paused")).count();
    if paused > 0 {
        format!("open ({paused} of {} paused)", o.a_states.len())
    } else {
        "closed".into()
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn print(outcomes: &[Outcome], cfg: &Config) {
    let Some(solo) = outcomes.iter().find(|o| o.case == Case::Solo) else {
        return;
    };
    println!(
        "\n| case: what tenant a runs | b records/s | vs solo | b p50 ms | b p99 ms | p99 vs solo | a during b's window: records in / out / dead letters | a's circuit | goal (>= 0.90x, p99 <= 2x) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let tput = o.rate / solo.rate;
        let p99 = o.lat.p99_ms() / solo.lat.p99_ms().max(1e-9);
        let missing = o.sent.saturating_sub(o.delivered);
        let goal = if o.case == Case::Solo {
            "baseline".to_string()
        } else if tput >= 0.9 && p99 <= 2.0 && missing == 0 {
            "holds".to_string()
        } else {
            let mut why = Vec::new();
            if tput < 0.9 {
                why.push(format!("throughput {tput:.2}x"));
            }
            if p99 > 2.0 {
                why.push(format!("p99 {p99:.2}x"));
            }
            if missing > 0 {
                why.push(format!("{missing} not delivered"));
            }
            format!("**misses** ({})", why.join(", "))
        };
        let a = if o.case.a_is_idle() {
            "-".to_string()
        } else {
            format!("{} / {} / {}", o.a_window.0, o.a_window.1, o.a_window.2)
        };
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {a} | {} | {goal} |",
            o.case.what_a_runs(cfg),
            o.rate,
            ratio(o.rate, solo.rate),
            ms(o.lat.p50_ms()),
            ms(o.lat.p99_ms()),
            ratio(o.lat.p99_ms(), solo.lat.p99_ms()),
            circuit(o),
        );
    }

    println!(
        "\nFair worker pool ({} workers), during b's window: calls granted, mean and longest wait for a worker, worker time held",
        support::cores()
    );
    println!("\n| case | b: calls | b: mean wait ms | b: longest wait ms | b: worker s | a: calls | a: worker s | a: share of worker time |");
    println!("|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let [(a0, b0), (a1, b1)] = o.usage;
        let calls = |x: &TenantUsage, y: &TenantUsage| y.grants.saturating_sub(x.grants);
        let busy = |x: &TenantUsage, y: &TenantUsage| secs(y.busy.saturating_sub(x.busy));
        let bw = secs(b1.waited.saturating_sub(b0.waited));
        let bc = calls(&b0, &b1);
        // The usage keeps the longest wait ever: if it grew in this
        // window, the new value happened in it; otherwise the window's
        // longest is at most the old one.
        let longest = if b1.longest_wait > b0.longest_wait {
            ms(secs(b1.longest_wait) * 1e3)
        } else {
            format!("<= {}", ms(secs(b0.longest_wait) * 1e3))
        };
        let (ab, bb) = (busy(&a0, &a1), busy(&b0, &b1));
        let share = if o.window.as_secs_f64() > 0.0 {
            format!(
                "{:.0} %",
                100.0 * ab / (o.window.as_secs_f64() * support::cores() as f64)
            )
        } else {
            "-".into()
        };
        println!(
            "| {} | {bc} | {} | {longest} | {bb:.2} | {} | {ab:.2} | {share} |",
            o.case.slug(),
            if bc > 0 {
                ms(bw * 1e3 / bc as f64)
            } else {
                "-".into()
            },
            calls(&a0, &a1),
        );
    }

    println!(
        "\nWhere the CPU went during b's window, in cores (of {}):",
        support::cores()
    );
    let names: Vec<String> = solo.cpu.iter().map(|(n, _)| n.clone()).collect();
    println!(
        "\n| | {} |",
        outcomes
            .iter()
            .map(|o| o.case.slug())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(outcomes.len()));
    for n in names {
        let row: Vec<String> = outcomes
            .iter()
            .map(|o| {
                o.cpu
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map_or("-".into(), |(_, v)| format!("{v:.2}"))
            })
            .collect();
        println!("| {} | {} |", n.trim(), row.join(" | "));
    }

    println!();
    for o in outcomes {
        let extra = o
            .flood_rate
            .map(|r| format!("; the flood queued {r:.0} records/s"))
            .unwrap_or_default();
        println!(
            "{}: b {} of {} records delivered, {} (max {} ms, {} negative clock samples); worst ms per second of the feed: {}; window {:.1} s; a over the whole case: {} in / {} out / {} dead letters; a's pipelines: {}{extra}",
            o.case.slug(),
            o.delivered,
            o.sent,
            o.lat.summary(),
            ms(o.lat.max_ms()),
            o.lat.negative(),
            o.worst
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            secs(o.window),
            o.a_total.0,
            o.a_total.1,
            o.a_total.2,
            if o.a_states.is_empty() {
                "none".to_string()
            } else {
                o.a_states.join(", ")
            },
        );
    }
}

fn main() -> anyhow::Result<()> {
    let cfg = Config {
        rate: env_or("WEFT_BENCH_RATE", 200)?,
        secs: env_or("WEFT_BENCH_SECS", 15)?,
        a_pipelines: env_or("WEFT_BENCH_A_PIPELINES", support::cores())?,
        a_timeout_ms: env_or("WEFT_BENCH_A_TIMEOUT_MS", 100)?,
        crash_backlog: env_or("WEFT_BENCH_CRASH_BACKLOG", 20_000)?,
    };
    if cfg.rate < 100 || cfg.secs == 0 || cfg.a_pipelines == 0 || cfg.a_timeout_ms < 20 {
        bail!("WEFT_BENCH_RATE >= 100, _SECS > 0, _A_PIPELINES > 0, _A_TIMEOUT_MS >= 20");
    }
    let only: Option<Vec<String>> = std::env::var("WEFT_BENCH_CASES")
        .ok()
        .map(|s| s.split(',').map(|c| c.trim().to_string()).collect());
    // `RUST_LOG=weft=debug` shows what the host does (reloads, circuits).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    support::build_plugins()?;
    let load = LoadMeter::start("tenancy bench");
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    // `WEFT_BENCH_KEEP=1` keeps the directory (broker.log, the tenants).
    let kept = std::env::var_os("WEFT_BENCH_KEEP").is_some();
    // `WEFT_BENCH_BROKER=memory`: tansu keeps records in memory instead of
    // sqlite, so the broker's storage is not what the tenants share.
    let storage = match std::env::var("WEFT_BENCH_BROKER").as_deref() {
        Ok("memory") => Storage::Memory,
        Ok("sqlite") | Err(_) => Storage::Sqlite,
        Ok(other) => bail!("WEFT_BENCH_BROKER={other}: sqlite or memory"),
    };
    let broker = LocalBroker::start_with(
        &dir.path().join("broker"),
        weft::stream::broker::free_port()?,
        storage,
    )
    .context("tansu (scripts/setup)")?;
    let brokers = broker.address();
    let root = dir.path().join("tenants");
    let b_dir = tenant(&root, B)?;
    tenant(&root, A)?;
    std::fs::write(
        b_dir.join("pipelines/redact.toml"),
        light("redact", "in", "out"),
    )
    .context("writing b's manifest")?;
    let host = Host::new(
        Some(dir.path().join("cache")),
        Policy::default(),
        &dir.path().join("data"),
    )
    .context("creating the host")?;
    // The server owns the host; its pool is shared, so keep a handle.
    let scheduler = host.runtime.scheduler().clone();
    let opts = ServeOptions {
        tenants: root.clone(),
        brokers: brokers.clone(),
        partitions: 1,
        // `WEFT_BENCH_ASSIGN=0/1`: every pipeline takes its partitions
        // without a consumer group (`weft serve --assign`), so starting a's
        // pipelines joins no group at the broker.
        assign: env_or("WEFT_BENCH_ASSIGN", Assignment::Group)?,
        circuit: CircuitPolicy {
            consecutive_failures: CIRCUIT_FAILURES,
            first_pause: CIRCUIT_PAUSE,
            ..CircuitPolicy::default()
        },
        grace: Duration::from_secs(30),
    };
    let (server, report) = Server::start(host, opts).context("starting the server")?;
    if !report.refused.is_empty() {
        bail!("refused at start: {}", report.refused.join("; "));
    }
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .context("starting the bench's tokio runtime")?;
    println!(
        "b: redaction transform at {} records/s (~250 B JSON) for {} s per case; a: {} pipelines in cases a-c; \
         {} plugin workers; circuit: {CIRCUIT_FAILURES} failures in a row, {} s first pause; local tansu ({:?} storage), 1 partition per topic",
        cfg.rate,
        cfg.secs,
        cfg.a_pipelines,
        scheduler.workers(),
        CIRCUIT_PAUSE.as_secs(),
        storage
    );
    // b's reader, and a warm-up until a record makes it through b's
    // pipeline (its group has joined, the reader's too).
    let reader = clients.block_on(async {
        let mut rx = kafka::follow_topic(&brokers, &format!("{B}.out"))?;
        let p = kafka::producer(&brokers)?;
        let t0 = Instant::now();
        'warm: for i in 0.. {
            if t0.elapsed() > JOIN_WAIT {
                bail!("nothing came through b's pipeline within {JOIN_WAIT:?}");
            }
            let key = format!("warm-{i}");
            let value = event(i);
            p.send(
                FutureRecord::to(&format!("{B}.in"))
                    .key(&key)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .context("producing a warm-up record")?;
            let until = tokio::time::Instant::now() + Duration::from_millis(500);
            while let Ok(Some((r, _))) = tokio::time::timeout_at(until, rx.recv()).await {
                if r.key.as_deref().is_some_and(|k| k.starts_with(b"warm-")) {
                    break 'warm;
                }
            }
        }
        anyhow::Ok(rx)
    })?;
    let mut bench = Bench {
        cfg,
        root,
        brokers,
        broker_pid: broker_pid(),
        server,
        scheduler,
        clients,
        reader: Some(reader),
    };
    // A few seconds of b alone first, so the solo case is not its first load.
    bench.clients.block_on(async {
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let mut outcomes = Vec::new();
    let join = only
        .as_ref()
        .is_some_and(|o| o.iter().any(|c| c == "join"))
        .then_some(Case::Join);
    for case in Case::ALL.into_iter().chain(join) {
        let wanted = only
            .as_ref()
            .is_none_or(|o| o.iter().any(|c| c == case.slug()) || case == Case::Solo);
        let wanted = wanted && (case != Case::Join || join.is_some());
        if wanted {
            outcomes.push(bench.run(case)?);
        }
    }
    print(&outcomes, &bench.cfg);
    println!("\n{}", load.report());
    let Bench {
        server, clients, ..
    } = bench;
    let last = server.stop();
    for p in &last.pipelines {
        if p.state.starts_with("failed") {
            println!("{}/{}: {}", p.tenant, p.figures.pipeline, p.state);
        }
    }
    drop(clients);
    drop(broker);
    if kept {
        println!("kept {}", dir.keep().display());
    }
    Ok(())
}

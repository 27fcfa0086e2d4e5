//! `cargo bench -p weft --bench rag`: the airline RAG pipelines at scale, run
//! the way production runs them: the real `weft` binary as a child process
//! with both pipelines (ingest into the index, answer questions) in one
//! process, against the local tansu broker, with an index on disk.
//!
//! 1. setup: a broker in a temp dir, copies of `pipelines/airline/ingest.toml`
//!    and `query.toml` for tenant `bench` (plugins by absolute path), topics
//!    with 3 partitions;
//! 2. preload: N synthetic flight-status documents (N = 100 000;
//!    `WEFT_BENCH_DOCS` overrides), one chunk each, seeded, keyed by doc id,
//!    plus the airline policy documents, produced *before* weft starts; `weft run` then indexes the backlog
//!    (load rate, from its progress lines) and the trees are built until
//!    `weft index stats` reports nothing pending (build tail after the load);
//! 3. baseline, weft stopped: the plain Kafka hop (produce -> a plain rdkafka
//!    consumer, `fetch.wait.max.ms = 20` like weft's), paced at the document
//!    rate, for min(10, secs) s;
//! 4. steady state, weft restarted (the index and the committed offsets
//!    persist, so its freshness histogram covers this phase only), for
//!    `WEFT_BENCH_SECS` (30) s: document updates and new documents at
//!    `WEFT_BENCH_DOC_RATE` (200/s), questions at `WEFT_BENCH_QUESTION_RATE`
//!    (20/s), and the Kafka hop again, concurrently, at the document rate.
//!    Questions alternate between two kinds: *filtered*, naming a flight
//!    that exists (the tagger copies the flight number into the question's
//!    metadata and the retriever searches only that flight's chunks), and
//!    *unfiltered*, a policy question from `data/airline/questions.jsonl`
//!    with no flight number (a search over the whole index). The corpus
//!    holds both: the policy documents of `data/airline/docs.jsonl` are
//!    preloaded with the flight documents. Question -> answer latency is
//!    arrival on the answers topic minus the question's CreateTime (the
//!    answer keeps it), reported per kind;
//!    index freshness (CreateTime -> searchable) comes from weft's final
//!    progress line after SIGTERM. The generator is the offline extractive
//!    one: these figures exclude an LLM.
//!
//! `WEFT_BENCH_KEEP=1` keeps the temp dir (broker, index, weft's logs).

mod support;

use anyhow::{anyhow, bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{env_or, ms, ratio, Latencies, LoadMeter};
use tokio::sync::mpsc::UnboundedReceiver;
use weft::index::{index_dir, VectorIndex};
use weft::stream::broker::LocalBroker;
use weft::stream::kafka::{self, chrono_ms, ReadRecord};

const SEED: u64 = 0x5EED_0A1B;
const TENANT: &str = "bench";
const INDEX: &str = "bench/kb";
const PARTITIONS: i32 = 3;
/// Flight numbers the query pipeline's tagger recognises: NW1 .. NW9999.
const FLIGHTS: usize = 9999;
/// Share of the steady document stream that updates an existing document
/// (the rest are new documents).
const UPDATE_SHARE: f64 = 0.8;
/// The query pipeline's stages, in order (for the timings table).
const QUERY_STAGES: [&str; 5] = ["tag-flight", "embed", "retrieve", "prompt", "answer"];

const AIRPORTS: [(&str, &str); 20] = [
    ("AMS", "Amsterdam"),
    ("BOS", "Boston"),
    ("JFK", "New York JFK"),
    ("ORD", "Chicago O'Hare"),
    ("FRA", "Frankfurt"),
    ("LHR", "London Heathrow"),
    ("CDG", "Paris Charles de Gaulle"),
    ("MAD", "Madrid"),
    ("FCO", "Rome Fiumicino"),
    ("SFO", "San Francisco"),
    ("LAX", "Los Angeles"),
    ("SEA", "Seattle"),
    ("DUB", "Dublin"),
    ("CPH", "Copenhagen"),
    ("ZRH", "Zurich"),
    ("VIE", "Vienna"),
    ("ATL", "Atlanta"),
    ("MIA", "Miami"),
    ("YYZ", "Toronto"),
    ("NRT", "Tokyo Narita"),
];
const STATUSES: [&str; 7] = [
    "on time",
    "delayed",
    "boarding",
    "gate changed",
    "cancelled",
    "departed",
    "landed",
];

fn repo() -> PathBuf {
    support::repo()
}

struct Settings {
    docs: usize,
    secs: u64,
    doc_rate: u64,
    question_rate: u64,
    keep: bool,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let s = Settings {
            docs: env_or("WEFT_BENCH_DOCS", 100_000)?,
            secs: env_or("WEFT_BENCH_SECS", 30)?,
            doc_rate: env_or("WEFT_BENCH_DOC_RATE", 200)?,
            question_rate: env_or("WEFT_BENCH_QUESTION_RATE", 20)?,
            keep: env_or("WEFT_BENCH_KEEP", 0u8)? != 0,
        };
        if s.docs == 0 || s.secs == 0 || s.doc_rate == 0 || s.question_rate == 0 {
            bail!("WEFT_BENCH_DOCS, _SECS, _DOC_RATE and _QUESTION_RATE must be > 0");
        }
        Ok(s)
    }
}

// ---------------------------------------------------------------- data

/// 2026-01-01 plus `day` days (a 365-day calendar: synthetic dates only).
fn date(day: usize) -> String {
    const LEN: [usize; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let year = 2026 + day / 365;
    let mut d = day % 365;
    let mut m = 0;
    while d >= LEN[m] {
        d -= LEN[m];
        m += 1;
    }
    format!("{year}-{:02}-{:02}", m + 1, d + 1)
}

/// Document `i` is flight NW(i % 9999 + 1) on day i / 9999: its status
/// for one date. Route and schedule depend on the flight number only;
/// gate and status change between versions.
fn flight_number(i: usize) -> usize {
    i % FLIGHTS + 1
}

fn flight_doc(i: usize, version: u32, rng: &mut StdRng) -> (String, String) {
    let n = flight_number(i);
    let day = date(i / FLIGHTS);
    let a = AIRPORTS.len();
    let from = n % a;
    let to = (from + 1 + (n / a) % (a - 1)) % a;
    let (hh, mm) = ((n * 7) % 24, (n * 13 % 12) * 5);
    let gate = format!(
        "{}{}",
        char::from(b'A' + rng.random_range(0..8u8)),
        rng.random_range(1..80)
    );
    let status = STATUSES[rng.random_range(0..STATUSES.len())];
    let extra = match status {
        "delayed" => format!(" Expected delay: {} minutes.", rng.random_range(1..24) * 15),
        "cancelled" => " Passengers are rebooked on the next available flight.".to_string(),
        _ => String::new(),
    };
    let id = format!("flight-NW{n}-{day}");
    let text = format!(
        "Flight NW{n} from {} ({}) to {} ({}) on {day}, scheduled departure {hh:02}:{mm:02}, gate {gate}. Current status: {status}.{extra}",
        AIRPORTS[from].1, AIRPORTS[from].0, AIRPORTS[to].1, AIRPORTS[to].0
    );
    let value = serde_json::json!({
        "id": id,
        "kind": "flight-status",
        "version": version,
        "title": format!("Flight NW{n} on {day}"),
        "text": text,
        "metadata": {
            "flight": format!("NW{n}"),
            "from": AIRPORTS[from].0,
            "to": AIRPORTS[to].0,
            "status": status,
        },
    });
    (id, value.to_string())
}

/// A question about flight NW`n`, as `(key, value)`.
fn question(id: &str, n: usize, rng: &mut StdRng) -> (String, String) {
    let text = match rng.random_range(0..3) {
        0 => format!("What is the status of flight NW{n}?"),
        1 => format!("Is flight NW{n} delayed?"),
        _ => format!("Which gate does flight NW{n} leave from?"),
    };
    let v = serde_json::json!({"id": id, "text": text});
    (id.to_string(), v.to_string())
}

/// The two kinds of question, reported apart: what the retriever searches
/// differs by orders of magnitude in size.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Names a flight: a search over that flight's chunks only.
    Filtered,
    /// Names none: a search over the whole index.
    Unfiltered,
}

impl Kind {
    const BOTH: [Kind; 2] = [Kind::Filtered, Kind::Unfiltered];

    fn label(self) -> &'static str {
        match self {
            Kind::Filtered => "flight named (filtered search)",
            Kind::Unfiltered => "no flight (unfiltered search)",
        }
    }
}

/// A question in flight, and what a relevant best hit is.
enum Asked {
    /// Flight NW`n`: a chunk of any of its documents.
    Flight(usize),
    /// The policy document that answers it.
    Policy(String),
}

impl Asked {
    fn kind(&self) -> Kind {
        match self {
            Asked::Flight(_) => Kind::Filtered,
            Asked::Policy(_) => Kind::Unfiltered,
        }
    }

    fn relevant(&self, doc_id: &str) -> bool {
        match self {
            Asked::Flight(n) => doc_id.starts_with(&format!("flight-NW{n}-")),
            Asked::Policy(gold) => doc_id == gold,
        }
    }
}

/// A question that names no flight, and the policy document answering it.
struct PolicyQuestion {
    text: String,
    gold: String,
}

/// Whether `text` names a flight the way the query pipeline's tagger
/// recognises one (`NW` + digits, any case).
fn names_flight(text: &str) -> bool {
    let b = text.as_bytes();
    b.windows(3).any(|w| {
        w[0].eq_ignore_ascii_case(&b'n')
            && w[1].eq_ignore_ascii_case(&b'w')
            && w[2].is_ascii_digit()
    })
}

/// The policy documents of `data/airline/docs.jsonl` as `(key, value)`
/// records, and the questions of `data/airline/questions.jsonl` that one of
/// them answers and that name no flight.
fn policy_corpus() -> anyhow::Result<(Vec<KeyValue>, Vec<PolicyQuestion>)> {
    let read = |name: &str| -> anyhow::Result<Vec<serde_json::Value>> {
        let path = repo().join("data/airline").join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))
            })
            .collect()
    };
    let mut docs = Vec::new();
    for d in read("docs.jsonl")? {
        if d["kind"].as_str() == Some("policy") {
            let id = d["id"]
                .as_str()
                .context("a policy document without an id")?;
            docs.push((id.to_string(), d.to_string()));
        }
    }
    let ids: HashSet<&str> = docs.iter().map(|(k, _)| k.as_str()).collect();
    let mut questions = Vec::new();
    for q in read("questions.jsonl")? {
        let (Some(text), Some(gold)) = (q["text"].as_str(), q["gold_doc"].as_str()) else {
            continue;
        };
        if ids.contains(gold) && !names_flight(text) {
            questions.push(PolicyQuestion {
                text: text.to_string(),
                gold: gold.to_string(),
            });
        }
    }
    if docs.is_empty() || questions.is_empty() {
        bail!(
            "data/airline has no policy documents or no policy questions without a flight number"
        );
    }
    Ok((docs, questions))
}

/// A record to produce: key and JSON value.
type KeyValue = (String, String);

/// An unfiltered question, as `(key, value)`.
fn policy_question(id: &str, q: &PolicyQuestion) -> (String, String) {
    let v = serde_json::json!({"id": id, "text": q.text});
    (id.to_string(), v.to_string())
}

/// The steady document stream: updates of random existing documents (new
/// version) and new documents, in a fixed order.
struct DocStream {
    versions: Vec<u32>,
    rng: StdRng,
}

impl DocStream {
    fn new(preloaded: usize) -> DocStream {
        DocStream {
            versions: vec![1; preloaded],
            rng: StdRng::seed_from_u64(SEED ^ 0xD0C5),
        }
    }

    fn next(&mut self) -> (String, String) {
        let i = if self.rng.random_bool(UPDATE_SHARE) {
            let i = self.rng.random_range(0..self.versions.len());
            self.versions[i] += 1;
            i
        } else {
            self.versions.push(1);
            self.versions.len() - 1
        };
        let v = self.versions[i];
        flight_doc(i, v, &mut self.rng)
    }
}

// ---------------------------------------------------------------- manifests

/// A copy of `pipelines/airline/<name>` for tenant `bench`, its plugins named
/// by absolute path (a manifest in a temp dir would not find them by name).
fn bench_manifest(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let src = repo().join("pipelines/airline").join(name);
    let text =
        std::fs::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
    let plugins = repo().join("target/plugins");
    let plugins = plugins.canonicalize().unwrap_or(plugins);
    let mut tenant = false;
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("tenant") && t.contains('=') {
            out.push_str(&format!("tenant = \"{TENANT}\"\n"));
            tenant = true;
        } else if let Some(rest) = t.strip_prefix("plugin = \"") {
            let plugin = rest
                .split('"')
                .next()
                .with_context(|| format!("{}: unreadable plugin line {line:?}", src.display()))?;
            let file = plugins.join(format!("{}.wasm", plugin.replace('-', "_")));
            if !file.is_file() {
                bail!(
                    "{} names plugin `{plugin}`, but {} does not exist (scripts/build-plugins)",
                    src.display(),
                    file.display()
                );
            }
            out.push_str(&format!("plugin = \"{}\"\n", file.display()));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !tenant {
        bail!("{} has no `tenant = ...` line to replace", src.display());
    }
    let dst = dir.join(name);
    std::fs::write(&dst, out).with_context(|| format!("writing {}", dst.display()))?;
    Ok(dst)
}

// ---------------------------------------------------------------- weft

#[derive(Debug, Clone, Copy, Default)]
struct Freshness {
    p50: f64,
    p99: f64,
    n: u64,
}

/// One parsed progress line: `<name>: C consumed, P produced, D
/// dead-lettered, B batches[, X docs indexed, freshness p50 A ms, p99 B ms (n = K)]`.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    consumed: u64,
    dead: u64,
    batches: u64,
    freshness: Option<Freshness>,
}

fn parse_progress(line: &str, pipeline: &str) -> Option<Progress> {
    let rest = line.strip_prefix(pipeline)?.strip_prefix(": ")?;
    let mut p = Progress::default();
    let mut fresh = Freshness::default();
    let mut seen = false;
    for part in rest.split(", ") {
        let words: Vec<&str> = part.split_whitespace().collect();
        match words.as_slice() {
            [n, "consumed"] => {
                p.consumed = n.parse().ok()?;
                seen = true;
            }
            [n, "dead-lettered"] => p.dead = n.parse().ok()?,
            [n, "batches"] => p.batches = n.parse().ok()?,
            ["freshness", "p50", x, "ms"] => fresh.p50 = x.parse().ok()?,
            ["p99", x, "ms", "(n", "=", n] => {
                fresh.p99 = x.parse().ok()?;
                fresh.n = n.trim_end_matches(')').parse().ok()?;
                p.freshness = Some(fresh);
            }
            _ => {}
        }
    }
    seen.then_some(p)
}

type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

/// A `weft run` child process; its stderr is kept (timestamped) and
/// copied to a log file.
struct Weft {
    child: Child,
    lines: Lines,
    reader: Option<std::thread::JoinHandle<()>>,
    log: PathBuf,
    started: Instant,
}

impl Weft {
    fn start(
        manifests: &[PathBuf],
        brokers: &str,
        data_dir: &Path,
        log: PathBuf,
    ) -> anyhow::Result<Weft> {
        let bin = env!("CARGO_BIN_EXE_weft");
        let mut child = Command::new(bin)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("run")
            .args(manifests)
            .args(["--brokers", brokers, "--progress-secs", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        let started = Instant::now();
        let stderr = child.stderr.take().context("weft's stderr")?;
        let mut file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let lines: Lines = Arc::default();
        let l2 = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                l2.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((Instant::now(), line));
            }
        });
        Ok(Weft {
            child,
            lines,
            reader: Some(reader),
            log,
            started,
        })
    }

    /// Every progress line of `pipeline` so far, with its arrival time.
    fn history(&self, pipeline: &str) -> Vec<(Instant, Progress)> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(t, l)| parse_progress(l, pipeline).map(|p| (*t, p)))
            .collect()
    }

    fn last(&self, pipeline: &str) -> Option<(Instant, Progress)> {
        self.history(pipeline).pop()
    }

    fn tail(&self, n: usize) -> String {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let from = lines.len().saturating_sub(n);
        lines[from..]
            .iter()
            .map(|(_, l)| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("polling weft")? {
            bail!(
                "weft exited unexpectedly ({status}); log {}, last lines:\n{}",
                self.log.display(),
                self.tail(20)
            );
        }
        Ok(())
    }

    /// Waits until `pipeline` has consumed `n` records; returns the progress
    /// line that showed it. Prints a status line every 10 s.
    async fn wait_consumed(
        &mut self,
        pipeline: &str,
        n: u64,
        within: Duration,
    ) -> anyhow::Result<(Instant, Progress)> {
        let t0 = Instant::now();
        let mut said = Instant::now();
        loop {
            if let Some((t, p)) = self.last(pipeline) {
                if p.consumed >= n {
                    return Ok((t, p));
                }
            }
            self.check_alive()?;
            if t0.elapsed() > within {
                bail!(
                    "{pipeline}: not {n} records consumed within {within:?}; last lines:\n{}",
                    self.tail(6)
                );
            }
            if said.elapsed() >= Duration::from_secs(10) {
                let c = self.last(pipeline).map(|(_, p)| p.consumed).unwrap_or(0);
                eprintln!("  ... {pipeline}: {c} / {n} consumed");
                said = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for the exit (weft drains, commits and prints a
    /// final progress line per pipeline).
    async fn stop(mut self) -> anyhow::Result<Vec<(Instant, String)>> {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            bail!("could not send SIGTERM to weft (pid {pid})");
        }
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().context("waiting for weft")? {
                break s;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                bail!("weft did not stop within 60 s of SIGTERM; killed it");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if !status.success() {
            bail!(
                "weft exited with {status}; log {}:\n{}",
                self.log.display(),
                self.tail(20)
            );
        }
        let lines = std::mem::take(&mut *self.lines.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(lines)
    }
}

impl Drop for Weft {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last progress line of `pipeline` among `lines` (the final one,
/// after a stop).
fn final_progress(lines: &[(Instant, String)], pipeline: &str) -> Option<Progress> {
    lines
        .iter()
        .rev()
        .find_map(|(_, l)| parse_progress(l, pipeline))
}

/// `weft index stats bench/kb --json`, from a separate process (LMDB lets
/// it read while `weft run` writes).
async fn index_stats(data_dir: &Path) -> anyhow::Result<serde_json::Value> {
    let dd = data_dir.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg("--data-dir")
            .arg(dd)
            .args(["index", "stats", INDEX, "--json"])
            .output()
    })
    .await
    .context("index stats task")?
    .context("running weft index stats")?;
    if !out.status.success() {
        bail!(
            "weft index stats: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing `weft index stats --json`")?;
    let stats = v[0]["stats"].clone();
    if !stats.is_object() {
        bail!("unexpected `weft index stats --json` output: {v}");
    }
    Ok(stats)
}

fn stat(s: &serde_json::Value, key: &str) -> u64 {
    s[key].as_u64().unwrap_or(0)
}

// ---------------------------------------------------------------- kafka

fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &str,
) -> anyhow::Result<DeliveryFuture> {
    let rec = FutureRecord::to(topic)
        .key(key)
        .payload(value)
        .timestamp(chrono_ms());
    producer
        .send_result(rec)
        .map_err(|(e, _)| anyhow!("producing to {topic}: {e}"))
}

async fn acked(sends: Vec<DeliveryFuture>, topic: &str) -> anyhow::Result<()> {
    for d in sends {
        match d.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("{topic}: a record was not acknowledged: {e}"),
            Err(_) => bail!("{topic}: the producer went away"),
        }
    }
    Ok(())
}

/// Produces all records (CreateTime = now) and waits for every ack.
async fn produce_backlog(
    producer: &FutureProducer,
    topic: &str,
    records: &[(String, String)],
) -> anyhow::Result<()> {
    for chunk in records.chunks(5000) {
        let mut sends = Vec::with_capacity(chunk.len());
        for (k, v) in chunk {
            sends.push(send(producer, topic, k, v)?);
        }
        acked(sends, topic).await?;
    }
    Ok(())
}

/// Produces `records` at `rate` per second, each stamped when it is handed
/// to the producer (which batches for up to 5 ms, as weft's does); returns
/// when all are acknowledged, with each record's send -> ack time.
async fn paced(
    producer: FutureProducer,
    topic: String,
    records: Vec<(String, String)>,
    rate: u64,
) -> anyhow::Result<Latencies> {
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let mut acks = Vec::with_capacity(records.len());
    for (i, (k, v)) in records.iter().enumerate() {
        tokio::time::sleep_until(start + every.mul_f64(i as f64)).await;
        let t = Instant::now();
        let d = send(&producer, &topic, k, v)?;
        acks.push(tokio::spawn(async move { (d.await, t.elapsed()) }));
    }
    let mut took = Latencies::new();
    for a in acks {
        match a.await.context("waiting for an ack")? {
            (Ok(Ok(_)), t) => took.record(t),
            (Ok(Err((e, _))), _) => bail!("{topic}: a record was not acknowledged: {e}"),
            (Err(_), _) => bail!("{topic}: the producer went away"),
        }
    }
    Ok(took)
}

/// A plain rdkafka consumer on `topic` (as weft's: `fetch.wait.max.ms` 20),
/// sending (key, arrival - CreateTime in ms) for every record.
fn hop_follower(brokers: &str, topic: &str) -> anyhow::Result<UnboundedReceiver<(String, i64)>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .set("group.id", format!("bench-hop-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "20")
        .create()
        .context("creating the hop consumer")?;
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("subscribing to {topic}"))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tx.closed() => break,
                r = consumer.recv() => {
                    let Ok(m) = r else { continue };
                    let now = chrono_ms();
                    let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
                    let lat = m.timestamp().to_millis().map(|t| now - t).unwrap_or(-1);
                    if tx.send((key, lat)).is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok(rx)
}

/// Latencies of the records whose key starts with `prefix`, until `n` of
/// them arrived or `within` passed.
async fn collect_hops(
    rx: &mut UnboundedReceiver<(String, i64)>,
    prefix: &str,
    n: usize,
    within: Duration,
) -> Latencies {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Latencies::new();
    while (out.len() as usize) < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((k, lat))) if k.starts_with(prefix) => out.record_ms(lat),
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    out
}

/// Sends `warm-<label>-<i>` to the hop topic every 200 ms until one comes
/// back (the consumer has joined its group).
async fn warm_hop(
    producer: &FutureProducer,
    topic: &str,
    rx: &mut UnboundedReceiver<(String, i64)>,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    for i in 0.. {
        if t0.elapsed() > Duration::from_secs(90) {
            bail!("the hop consumer received nothing within 90 s");
        }
        let d = send(producer, topic, &format!("warm-{i}"), "warm")?;
        acked(vec![d], topic).await?;
        if !collect_hops(rx, "warm-", 1, Duration::from_millis(200))
            .await
            .is_empty()
        {
            break;
        }
    }
    Ok(())
}

/// Times one unfiltered and one filtered (flight NW1) k = 4 search, in ms.
fn probe(ix: &VectorIndex, v: &[f32]) -> anyhow::Result<(f64, f64)> {
    let t = Instant::now();
    ix.search(v, 4, &[])
        .map_err(|e| anyhow!("probe search: {e}"))?;
    let all = t.elapsed().as_secs_f64() * 1e3;
    let filter = [("flight".to_string(), format!("NW{}", flight_number(0)))];
    let t = Instant::now();
    ix.search(v, 4, &filter)
        .map_err(|e| anyhow!("probe search: {e}"))?;
    Ok((all, t.elapsed().as_secs_f64() * 1e3))
}

// ---------------------------------------------------------------- figures

/// The answers to one kind of question.
#[derive(Default)]
struct KindAnswers {
    latencies: Latencies,
    /// Per stage: (sum of ms, count).
    stages: HashMap<String, (f64, u64)>,
    /// Answers whose best hit is relevant (a document of the asked flight,
    /// or the policy document that answers the question).
    relevant: usize,
    with_hits: usize,
}

impl KindAnswers {
    /// Mean time per answer in each query stage, in pipeline order.
    fn stage_means(&self) -> String {
        let mut names: Vec<String> = QUERY_STAGES.iter().map(|s| s.to_string()).collect();
        let mut extra: Vec<String> = self
            .stages
            .keys()
            .filter(|k| !QUERY_STAGES.contains(&k.as_str()))
            .cloned()
            .collect();
        extra.sort();
        names.extend(extra);
        let means: Vec<String> = names
            .iter()
            .filter_map(|st| {
                self.stages
                    .get(st)
                    .map(|(sum, c)| format!("{st} {:.2}", sum / (*c).max(1) as f64))
            })
            .collect();
        let missing: Vec<&str> = QUERY_STAGES
            .iter()
            .copied()
            .filter(|st| !self.stages.contains_key(*st))
            .collect();
        if missing.is_empty() {
            means.join(", ")
        } else {
            format!(
                "{} (not in timings_ms: {})",
                means.join(", "),
                missing.join(", ")
            )
        }
    }
}

/// Answers by kind, indexed like `Kind::BOTH`.
#[derive(Default)]
struct Answers([KindAnswers; 2]);

impl Answers {
    fn of(&self, k: Kind) -> &KindAnswers {
        &self.0[k as usize]
    }
}

/// Reads answers until every question in `asked` has one, or `within`
/// passed.
async fn collect_answers(
    rx: &mut UnboundedReceiver<(ReadRecord, i64)>,
    asked: &HashMap<String, Asked>,
    within: Duration,
) -> Answers {
    let deadline = tokio::time::Instant::now() + within;
    let mut got: HashSet<String> = HashSet::new();
    let mut a = Answers::default();
    while got.len() < asked.len() {
        let Ok(Some((rec, arrived))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        let Some(key) = rec.key.as_deref().map(|k| String::from_utf8_lossy(k)) else {
            continue;
        };
        let Some(q) = asked.get(key.as_ref()) else {
            continue;
        };
        if !got.insert(key.into_owned()) {
            continue; // a replayed duplicate
        }
        let k = &mut a.0[q.kind() as usize];
        k.latencies
            .record_ms(arrived - rec.timestamp.unwrap_or(arrived));
        let v: serde_json::Value = rec
            .value
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        if let Some(t) = v["timings_ms"].as_object() {
            for (stage, ms) in t {
                let e = k.stages.entry(stage.clone()).or_default();
                e.0 += ms.as_f64().unwrap_or(0.0);
                e.1 += 1;
            }
        }
        if let Some(best) = v["hits"][0]["doc_id"].as_str() {
            k.with_hits += 1;
            if q.relevant(best) {
                k.relevant += 1;
            }
        }
    }
    a
}

/// One row of the result table (Markdown, to paste into the README).
fn row(label: &str, value: impl Display) {
    println!("| {label} | {value} |");
}

// ---------------------------------------------------------------- main

fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    support::build_plugins()?;
    let tmp = tempfile::tempdir().context("creating a temp dir")?;
    let dir = tmp.path().to_path_buf();
    let result = tokio::runtime::Runtime::new()
        .context("starting tokio")?
        .block_on(run(&settings, &dir));
    if settings.keep {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    } else if result.is_err() {
        eprintln!("(set WEFT_BENCH_KEEP=1 to keep the broker, index and weft logs)");
    }
    result
}

async fn run(s: &Settings, dir: &Path) -> anyhow::Result<()> {
    let n = s.docs;
    let cores = support::cores();
    let (policy_docs, policy_questions) = policy_corpus()?;
    let load = LoadMeter::start("rag bench");
    let broker = LocalBroker::start(&dir.join("broker")).context("tansu (scripts/setup)")?;
    let brokers = broker.address();
    let ingest = bench_manifest(dir, "ingest.toml")?;
    let query = bench_manifest(dir, "query.toml")?;
    let manifests = [ingest, query];
    let data_dir = dir.join("data");
    let t = |name: &str| format!("{TENANT}.{name}");
    let (docs_topic, questions_topic, answers_topic, hop_topic) =
        (t("docs"), t("questions"), t("answers"), t("hop"));
    let topics: Vec<(String, i32)> = [
        docs_topic.clone(),
        questions_topic.clone(),
        answers_topic.clone(),
        hop_topic.clone(),
        t("ingest.dead-letters"),
        t("query.dead-letters"),
    ]
    .into_iter()
    .map(|t| (t, PARTITIONS))
    .collect();
    kafka::ensure_topics(&brokers, &topics).await?;
    println!(
        "rag bench: {n} flight-status documents + {} policy documents, tenant `{TENANT}`, topics with {PARTITIONS} partitions, local tansu (sqlite), {cores} cores\n",
        policy_docs.len()
    );

    // ---- 2. preload
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut docs: Vec<(String, String)> = (0..n).map(|i| flight_doc(i, 1, &mut rng)).collect();
    docs.extend(policy_docs.iter().cloned());
    let preload = docs.len();
    let longest = docs
        .iter()
        .map(|(_, v)| {
            serde_json::from_str::<serde_json::Value>(v)
                .ok()
                .and_then(|d| d["text"].as_str().map(|t| t.chars().count()))
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    let docs_producer = kafka::producer(&brokers)?;
    let t0 = Instant::now();
    produce_backlog(&docs_producer, &docs_topic, &docs).await?;
    let produce_secs = t0.elapsed().as_secs_f64();
    drop(docs);
    println!(
        "preload: produced {preload} documents (longest text {longest} chars) in {produce_secs:.1} s ({:.0}/s)",
        preload as f64 / produce_secs
    );

    let mut weft = Weft::start(
        &manifests,
        &brokers,
        &data_dir,
        dir.join("weft-preload.log"),
    )?;
    let (t_first, first) = weft
        .wait_consumed("ingest", 1, Duration::from_secs(120))
        .await?;
    let (t_loaded, loaded) = weft
        .wait_consumed("ingest", preload as u64, Duration::from_secs(1800))
        .await?;
    let since_start = t_loaded.duration_since(weft.started).as_secs_f64();
    // Between weft's first and last progress lines of the load (1 s apart),
    // so compilation and the group join do not count; a load shorter than
    // that falls back to the time since the process started.
    let load_rate = if loaded.consumed > first.consumed {
        (loaded.consumed - first.consumed) as f64
            / t_loaded.duration_since(t_first).as_secs_f64().max(1e-9)
    } else {
        loaded.consumed as f64 / since_start.max(1e-9)
    };
    println!(
        "preload: weft indexed {} documents in {since_start:.1} s from its start; {load_rate:.0} docs/s between its first and last progress line ({} batches, {} dead-lettered)",
        loaded.consumed, loaded.batches, loaded.dead
    );
    // Searches from this process (a reader beside weft's writer) while the
    // trees catch up: what the pending backlog costs a query.
    let ix = VectorIndex::open_read_only(&index_dir(&data_dir, TENANT, "kb"))
        .context("opening the index to probe searches")?;
    let mut probes: Vec<(u64, f64, f64)> = Vec::new();
    let mut polls = 0;
    let stats_loaded = loop {
        let st = index_stats(&data_dir).await?;
        let dim = st["dimension"].as_u64().unwrap_or(0) as usize;
        let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let (all, filtered) = probe(&ix, &v)?;
        probes.push((stat(&st, "pending"), all, filtered));
        if stat(&st, "pending") == 0 && stat(&st, "chunks") > 0 {
            break st;
        }
        polls += 1;
        if polls % 10 == 0 {
            eprintln!(
                "  ... trees: {} pending, {} in trees",
                stat(&st, "pending"),
                stat(&st, "in_trees")
            );
        }
        weft.check_alive()?;
        if t_loaded.elapsed() > Duration::from_secs(1800) {
            bail!("the index still has pending items 30 minutes after the load: {st}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let build_tail = t_loaded.elapsed().as_secs_f64();
    println!(
        "preload: trees caught up {build_tail:.1} s after the load ({} chunks in trees, {} trees)",
        stat(&stats_loaded, "in_trees"),
        stat(&stats_loaded, "trees")
    );
    let busiest = probes
        .iter()
        .copied()
        .max_by_key(|p| p.0)
        .unwrap_or_default();
    let built = probes.last().copied().unwrap_or_default();
    drop(ix);
    println!(
        "preload: k = 4 search, unfiltered / flight filter: {:.1} / {:.2} ms with {} pending, {:.1} / {:.2} ms once built",
        busiest.1, busiest.2, busiest.0, built.1, built.2
    );
    let lines = weft.stop().await?;
    let preload_fresh = final_progress(&lines, "ingest").and_then(|p| p.freshness);
    if let Some(f) = preload_fresh {
        println!(
            "preload: freshness p50 {} ms, p99 {} ms (n = {}): waiting in the backlog, not a latency\n",
            f.p50, f.p99, f.n
        );
    }

    // ---- 3. the plain Kafka hop, weft stopped
    let hop_producer = kafka::producer(&brokers)?;
    let mut hops = hop_follower(&brokers, &hop_topic)?;
    warm_hop(&hop_producer, &hop_topic, &mut hops).await?;
    let idle_secs = s.secs.min(10);
    let idle_n = (s.doc_rate * idle_secs) as usize;
    let recs: Vec<(String, String)> = (0..idle_n)
        .map(|i| (format!("idle-{i}"), format!("hop {i} {}", "x".repeat(300))))
        .collect();
    let idle_acks = paced(hop_producer.clone(), hop_topic.clone(), recs, s.doc_rate).await?;
    let hop_idle = collect_hops(&mut hops, "idle-", idle_n, Duration::from_secs(30)).await;
    println!(
        "kafka hop alone: {} of {idle_n} records at {}/s for {idle_secs} s",
        hop_idle.len(),
        s.doc_rate
    );

    // ---- 4. steady state, weft restarted
    let mut weft = Weft::start(&manifests, &brokers, &data_dir, dir.join("weft-steady.log"))?;
    let mut answers = kafka::follow_topic(&brokers, &answers_topic)?;
    let q_producer = kafka::producer(&brokers)?;
    let mut stream = DocStream::new(n);
    let mut qrng = StdRng::seed_from_u64(SEED ^ 0x0A5C);
    let flights = n.min(FLIGHTS);
    // Warm up: one document, and questions until the first answer, so both
    // consumer groups have joined before the clock starts. (The warm-up
    // document's freshness includes the group join; one sample of thousands.)
    let (k, v) = stream.next();
    acked(
        vec![send(&docs_producer, &docs_topic, &k, &v)?],
        &docs_topic,
    )
    .await?;
    let t_warm = Instant::now();
    // One answer of each kind (the first unfiltered search also pages the
    // whole index in).
    let mut warm_answered = [false; 2];
    for i in 0.. {
        weft.check_alive()?;
        if t_warm.elapsed() > Duration::from_secs(120) {
            bail!(
                "no answer to a warm-up question within 120 s; weft log:\n{}",
                weft.tail(10)
            );
        }
        let (k, v) = if i % 2 == 0 {
            let id = format!("warm-q-f{i}");
            question(&id, flight_number(qrng.random_range(0..flights)), &mut qrng)
        } else {
            let id = format!("warm-q-u{i}");
            let q = &policy_questions[qrng.random_range(0..policy_questions.len())];
            policy_question(&id, q)
        };
        acked(
            vec![send(&q_producer, &questions_topic, &k, &v)?],
            &questions_topic,
        )
        .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some((rec, _))) = tokio::time::timeout_at(deadline, answers.recv()).await {
            match rec.key.as_deref() {
                Some(k) if k.starts_with(b"warm-q-f") => warm_answered[0] = true,
                Some(k) if k.starts_with(b"warm-q-u") => warm_answered[1] = true,
                _ => {}
            }
        }
        if warm_answered == [true, true] {
            break;
        }
    }
    weft.wait_consumed("ingest", 1, Duration::from_secs(120))
        .await?;
    println!(
        "steady: weft restarted; both pipelines answering after {:.1} s",
        weft.started.elapsed().as_secs_f64()
    );

    let n_docs = (s.doc_rate * s.secs) as usize;
    let n_questions = (s.question_rate * s.secs) as usize;
    let before = stream.versions.len();
    let steady_docs: Vec<(String, String)> = (0..n_docs).map(|_| stream.next()).collect();
    let new_docs = stream.versions.len() - before;
    // Alternating kinds, so both see the same load at the same moments.
    let mut asked: HashMap<String, Asked> = HashMap::new();
    let questions: Vec<(String, String)> = (0..n_questions)
        .map(|i| {
            let id = format!("q-{i}");
            if i % 2 == 0 {
                let f = flight_number(qrng.random_range(0..flights));
                asked.insert(id.clone(), Asked::Flight(f));
                question(&id, f, &mut qrng)
            } else {
                let q = &policy_questions[qrng.random_range(0..policy_questions.len())];
                asked.insert(id.clone(), Asked::Policy(q.gold.clone()));
                policy_question(&id, q)
            }
        })
        .collect();
    let hop_recs: Vec<(String, String)> = (0..n_docs)
        .map(|i| {
            (
                format!("steady-{i}"),
                format!("hop {i} {}", "x".repeat(300)),
            )
        })
        .collect();
    let t_steady = Instant::now();
    let d_task = tokio::spawn(paced(
        docs_producer.clone(),
        docs_topic.clone(),
        steady_docs,
        s.doc_rate,
    ));
    let q_task = tokio::spawn(paced(
        q_producer.clone(),
        questions_topic.clone(),
        questions,
        s.question_rate,
    ));
    let h_task = tokio::spawn(paced(
        hop_producer.clone(),
        hop_topic.clone(),
        hop_recs,
        s.doc_rate,
    ));
    let mut acks = Vec::new();
    for (name, task) in [
        ("documents", d_task),
        ("questions", q_task),
        ("hop", h_task),
    ] {
        acks.push(
            task.await
                .with_context(|| format!("{name} producer task"))?
                .with_context(|| format!("producing {name}"))?,
        );
    }
    let produced_secs = t_steady.elapsed().as_secs_f64();
    let t_produced = Instant::now();
    let (t_caught, _) = weft
        .wait_consumed("ingest", 1 + n_docs as u64, Duration::from_secs(300))
        .await?;
    let catch_up = t_caught.saturating_duration_since(t_produced).as_secs_f64();
    let answered = collect_answers(&mut answers, &asked, Duration::from_secs(60)).await;
    let hop_steady = collect_hops(&mut hops, "steady-", n_docs, Duration::from_secs(30)).await;
    // The ingest rate over the producing window, from weft's progress lines.
    let hist = weft.history("ingest");
    let in_window: Vec<&(Instant, Progress)> = hist
        .iter()
        .filter(|(t, _)| *t >= t_steady && *t <= t_produced)
        .collect();
    let achieved = match (in_window.first(), in_window.last()) {
        (Some((ta, a)), Some((tb, b))) if tb > ta => {
            (b.consumed - a.consumed) as f64 / tb.duration_since(*ta).as_secs_f64()
        }
        _ => f64::NAN,
    };
    let lines = weft.stop().await?;
    let fin = final_progress(&lines, "ingest").context("no final progress line from weft")?;
    let qfin = final_progress(&lines, "query").unwrap_or_default();
    let fresh = fin
        .freshness
        .context("weft's final line has no freshness")?;
    let stats_end = index_stats(&data_dir).await?;

    // ---- 5. the table
    let filtered = answered.of(Kind::Filtered);
    let unfiltered = answered.of(Kind::Unfiltered);
    println!("\n== rag bench\n");
    println!("| | |\n|---|---|");
    row(
        "documents preloaded",
        format!(
            "{n} flight-status (one chunk each) + {} policy",
            policy_docs.len()
        ),
    );
    row(
        "dimension (hash embedder)",
        stats_end["dimension"]
            .as_u64()
            .map_or("-".into(), |d| d.to_string()),
    );
    row("cores", cores);
    row(
        "preload: produce to the topic",
        format!("{:.0} docs/s", preload as f64 / produce_secs),
    );
    row(
        "preload: load rate (weft, backlog)",
        format!("{load_rate:.0} docs/s ({since_start:.1} s incl. start-up)"),
    );
    row(
        "preload: trees caught up after the load",
        format!("{build_tail:.1} s"),
    );
    row(
        "preload: k = 4 search from a reader process, unfiltered / flight filter",
        format!(
            "{} / {} ms at {} pending; {} / {} ms built",
            ms(busiest.1),
            ms(busiest.2),
            busiest.0,
            ms(built.1),
            ms(built.2)
        ),
    );
    row(
        "steady: documents offered",
        format!(
            "{} at {}/s for {produced_secs:.1} s ({} updates, {new_docs} new)",
            n_docs,
            s.doc_rate,
            n_docs - new_docs
        ),
    );
    row(
        "steady: ingest rate achieved",
        format!("{achieved:.0} docs/s; backlog drained {catch_up:.1} s after the last produce"),
    );
    row(
        "steady: index freshness p50 / p99",
        format!(
            "{} / {} ms (n = {}, weft's final line)",
            fresh.p50, fresh.p99, fresh.n
        ),
    );
    row(
        "steady: questions",
        format!(
            "{n_questions} at {}/s, alternating flight named / no flight; offline generator (no LLM)",
            s.question_rate
        ),
    );
    for k in Kind::BOTH {
        let a = answered.of(k);
        row(
            &format!("steady: question -> answer, {}", k.label()),
            a.latencies.summary(),
        );
    }
    row(
        "steady: answer p50 / p99, unfiltered / filtered",
        format!(
            "{} / {}",
            ratio(unfiltered.latencies.p50_ms(), filtered.latencies.p50_ms()),
            ratio(unfiltered.latencies.p99_ms(), filtered.latencies.p99_ms())
        ),
    );
    for k in Kind::BOTH {
        row(
            &format!("steady: mean stage ms per answer, {}", k.label()),
            answered.of(k).stage_means(),
        );
    }
    row(
        "steady: best hit relevant (asked flight / gold policy doc)",
        format!(
            "{} of {} filtered, {} of {} unfiltered answers with hits",
            filtered.relevant, filtered.with_hits, unfiltered.relevant, unfiltered.with_hits
        ),
    );
    row("kafka hop, concurrent with steady", hop_steady.summary());
    row("kafka hop, weft stopped", hop_idle.summary());
    let ack = |l: &Latencies| format!("{} / {}", ms(l.p50_ms()), ms(l.p99_ms()));
    row(
        "produce send -> ack p50 / p99 (docs, questions)",
        format!(
            "{} ms, {} ms (hop: {} ms; weft stopped: {} ms)",
            ack(&acks[0]),
            ack(&acks[1]),
            ack(&acks[2]),
            ack(&idle_acks)
        ),
    );
    row(
        "weft batches (ingest, query)",
        format!(
            "{} ({:.1} docs avg), {} ({:.1} questions avg)",
            fin.batches,
            fin.consumed as f64 / fin.batches.max(1) as f64,
            qfin.batches,
            qfin.consumed as f64 / qfin.batches.max(1) as f64
        ),
    );
    let hop99 = hop_steady.p99_ms();
    row(
        "freshness p99 / kafka hop p99 (concurrent)",
        ratio(fresh.p99, hop99),
    );
    row(
        "answer p99 / kafka hop p99 (concurrent), filtered / unfiltered",
        format!(
            "{} / {} (an answer is two hops)",
            ratio(filtered.latencies.p99_ms(), hop99),
            ratio(unfiltered.latencies.p99_ms(), hop99)
        ),
    );
    row(
        "dead-lettered (ingest, query)",
        format!("{}, {}", fin.dead, qfin.dead),
    );
    row(
        "index at the end (after weft stopped)",
        format!(
            "{} documents, {} chunks, {} pending, {} in trees, {} trees",
            stat(&stats_end, "documents"),
            stat(&stats_end, "chunks"),
            stat(&stats_end, "pending"),
            stat(&stats_end, "in_trees"),
            stat(&stats_end, "trees")
        ),
    );
    row(
        "index on disk (store, trees)",
        format!(
            "{:.1} MiB, {:.1} MiB",
            stat(&stats_end, "store_bytes") as f64 / (1 << 20) as f64,
            stat(&stats_end, "trees_bytes") as f64 / (1 << 20) as f64
        ),
    );
    println!("\n{}", load.report());
    drop(broker);
    Ok(())
}

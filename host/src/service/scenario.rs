//! A scenario is data: a directory with `scenario.toml`, which names the
//! pipelines (manifests) to run side by side and the steps to feed them
//! (records to produce, questions to ask, with gold documents). `weft dev
//! <dir>` runs it against a local broker and scores the answers with
//! [`super::eval`]. The airline example is `pipelines/airline/`.
//!
//! ```toml
//! name = "airline"
//! pipelines = ["ingest.toml", "query.toml"]   # relative to this file
//!
//! [[step]]
//! produce = "../../data/airline/docs.jsonl"   # one JSON document per line, keyed by its `id`
//! into = "ingest"                             # a pipeline's name: its source topic
//! label = "documents"
//!
//! [[step]]
//! ask = "../../data/airline/questions.jsonl"  # {"id","text","gold_doc","expect","phase"}
//! into = "query"                              # answers come from its sink topic
//! phase = "before-updates"                    # only the questions of this phase
//! ```

use super::admin::Hosted;
use super::eval::{self, Asked, Evaluation, Question};
use super::serve::{served_pipeline, PipelineTopics, ReloadReport, ServeStatus};
use super::{indexes, Host, Result, ServiceError};
use crate::index::{IndexStats, VectorIndex};
use crate::manifest::{Manifest, StageKind};
use crate::metrics::Histogram;
use crate::pipeline::Pipeline;
use crate::stream::kafka::{self, Control, Counters, KafkaOptions, KeyValue, ReadRecord};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The file a scenario directory holds.
pub const SCENARIO_FILE: &str = "scenario.toml";

/// How long a step may wait for its records to be consumed or answered.
/// Default of a scenario's `step_timeout_secs`.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    note: Option<String>,
    pipelines: Vec<PathBuf>,
    /// How long one step may take (default 300): a slow model needs more.
    step_timeout_secs: Option<u64>,
    #[serde(rename = "step", default)]
    steps: Vec<RawStep>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    produce: Option<PathBuf>,
    ask: Option<PathBuf>,
    into: String,
    /// With `produce`: the file goes to this table of pipeline `into`.
    table: Option<String>,
    label: Option<String>,
    phase: Option<String>,
}

/// One step of a scenario.
#[derive(Debug, Clone)]
pub enum Step {
    /// Produce every line of `file` (JSON with an `id`, the key) to the
    /// source topic of pipeline `into`, and wait until it consumed them;
    /// or, with `table`, to the topic of that table of `into` (its next
    /// batch sees them: a batch waits for its tables to catch up).
    Produce {
        file: PathBuf,
        into: String,
        table: Option<String>,
        label: String,
    },
    /// Ask the questions of `file` (of `phase`, if given) on the source
    /// topic of pipeline `into` and collect its answers.
    Ask {
        file: PathBuf,
        into: String,
        phase: Option<String>,
    },
}

impl Step {
    /// The pipeline the step feeds.
    pub fn into(&self) -> &str {
        match self {
            Step::Produce { into, .. } | Step::Ask { into, .. } => into,
        }
    }
}

/// A loaded scenario, paths resolved.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// Printed with the figures: what they do and do not show.
    pub note: Option<String>,
    pub file: PathBuf,
    pub pipelines: Vec<PathBuf>,
    pub steps: Vec<Step>,
    /// How long one step (producing a file and waiting for it to be
    /// consumed, or asking and waiting for the answers) may take.
    pub step_timeout: Duration,
}

impl Scenario {
    /// Loads `dir/scenario.toml` (or `dir` itself if it is a file).
    pub fn load(dir: &Path) -> Result<Scenario> {
        let file = if dir.is_dir() {
            dir.join(SCENARIO_FILE)
        } else {
            dir.to_path_buf()
        };
        let text = std::fs::read_to_string(&file)
            .map_err(|e| ServiceError::io(format!("reading scenario {}", file.display()), e))?;
        let raw: RawScenario = toml::from_str(&text)
            .map_err(|e| ServiceError::Input(format!("{}: {e}", file.display())))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let mut steps = Vec::new();
        for (i, s) in raw.steps.into_iter().enumerate() {
            let at = || format!("{}: step {}", file.display(), i + 1);
            steps.push(match (s.produce, s.ask) {
                (Some(f), None) => Step::Produce {
                    label: s.label.unwrap_or_else(|| {
                        f.file_stem()
                            .map(|x| x.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    }),
                    file: base.join(f),
                    into: s.into,
                    table: s.table,
                },
                (None, Some(f)) if s.table.is_none() => Step::Ask {
                    file: base.join(f),
                    into: s.into,
                    phase: s.phase,
                },
                _ => {
                    return Err(ServiceError::Input(format!(
                        "{}: give exactly one of `produce` and `ask` (`table` goes with `produce`)",
                        at()
                    )))
                }
            });
        }
        Ok(Scenario {
            name: raw.name,
            note: raw.note,
            pipelines: raw.pipelines.iter().map(|p| base.join(p)).collect(),
            steps,
            file,
            step_timeout: raw
                .step_timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(STEP_TIMEOUT),
        })
    }
}

/// What a scenario run reports as it goes (the CLI prints these).
#[derive(Debug)]
pub enum Event<'a> {
    BrokerStarting {
        dir: &'a Path,
    },
    BrokerStarted {
        address: &'a str,
    },
    /// Records of a step consumed so far.
    Progress {
        what: &'a str,
        done: u64,
        total: u64,
    },
    Produced {
        label: &'a str,
        records: usize,
        pipeline: &'a str,
        /// The pipeline's sink index after the step, if it has one.
        index: Option<(&'a str, &'a IndexStats)>,
        freshness: Option<String>,
    },
    Asking {
        phase: &'a str,
        questions: usize,
    },
    /// A piece of the answer to the first question of an ask step, as the
    /// generator writes it (`first`: a new stream starts, drop what was
    /// shown; `reset`: `text` replaces it; `last`: the stream ends).
    Piece {
        question: &'a str,
        text: &'a str,
        first: bool,
        reset: bool,
        last: bool,
        /// From the question's produce to this piece's arrival.
        ms: i64,
    },
    Answered(&'a Asked),
    /// Every step is done and the run was asked to linger ([`Watch`]):
    /// the pipelines keep running until Ctrl-C or SIGTERM.
    Lingering,
    Finished,
}

/// A scenario's pipelines as the admin API (and its web console) see them
/// while `weft dev --admin` runs it: their figures, topics and broker, and
/// an operator's pause. Registered as the run starts them, so the console
/// shows the demo as it happens.
pub struct Watch {
    brokers: Mutex<Option<String>>,
    pipelines: Mutex<BTreeMap<(String, String), Watched>>,
    linger: bool,
}

struct Watched {
    file: PathBuf,
    counters: Arc<Counters>,
    topics: PipelineTopics,
    hold: tokio::sync::watch::Sender<bool>,
    samples: VecDeque<(Instant, u64, u64, u64)>,
    ended: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps updated in single statements: consistent after a panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Watch {
    /// `linger`: after the last step, keep the pipelines (and a local
    /// broker) running until Ctrl-C or SIGTERM, so questions can still be
    /// asked through the API.
    pub fn new(linger: bool) -> Watch {
        Watch {
            brokers: Mutex::new(None),
            pipelines: Mutex::new(BTreeMap::new()),
            linger,
        }
    }

    fn hosted(&self, tenant: &str, pipeline: &str) -> Result<tokio::sync::watch::Sender<bool>> {
        lock(&self.pipelines)
            .get(&(tenant.to_string(), pipeline.to_string()))
            .map(|w| w.hold.clone())
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "no pipeline `{pipeline}` of tenant `{tenant}` runs in this scenario"
                ))
            })
    }
}

impl Hosted for Watch {
    fn status(&self) -> ServeStatus {
        let mut pipelines = lock(&self.pipelines);
        let list = pipelines
            .iter_mut()
            .map(|((t, p), w)| {
                served_pipeline(
                    t,
                    p,
                    &w.file,
                    &w.counters,
                    &w.topics,
                    &mut w.samples,
                    w.ended.as_deref(),
                )
            })
            .collect();
        ServeStatus {
            pipelines: list,
            refused: Vec::new(),
        }
    }

    fn topics(&self, tenant: &str, pipeline: &str) -> Option<PipelineTopics> {
        lock(&self.pipelines)
            .get(&(tenant.to_string(), pipeline.to_string()))
            .map(|w| w.topics.clone())
    }

    fn brokers(&self) -> Option<String> {
        lock(&self.brokers).clone()
    }

    fn pause(&self, tenant: &str, pipeline: &str) -> Result<()> {
        self.hosted(tenant, pipeline)?.send_replace(true);
        Ok(())
    }

    fn resume(&self, tenant: &str, pipeline: &str) -> Result<()> {
        self.hosted(tenant, pipeline)?.send_replace(false);
        Ok(())
    }

    fn reload_pipeline(&self, tenant: &str, pipeline: &str) -> Result<ReloadReport> {
        self.hosted(tenant, pipeline)?;
        Err(ServiceError::Input(
            "`weft dev` runs a scenario's pipelines as loaded and does not reload them \
             (`weft serve` does)"
                .to_string(),
        ))
    }
}

/// Retrieval with a query pipeline's embedder alone, no metadata filter.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedderAlone {
    pub pipeline: String,
    pub questions: usize,
    pub hit_at_1: f64,
    pub hit_at_3: f64,
}

/// Everything a scenario run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub note: Option<String>,
    /// Records produced, by step label.
    pub produced: BTreeMap<String, usize>,
    #[serde(flatten)]
    pub evaluation: Evaluation,
    pub freshness_p50_ms: Option<f64>,
    pub freshness_p99_ms: Option<f64>,
    pub answer_latency_p50_ms: Option<f64>,
    pub answer_latency_p99_ms: Option<f64>,
    /// From a question's produce to the first piece of its answer stream,
    /// over the answers whose generator streamed (wrote more than one piece).
    pub first_piece_p50_ms: Option<f64>,
    pub first_piece_p99_ms: Option<f64>,
    /// Answers whose generator streamed them.
    pub streamed_answers: usize,
    /// Records dead-lettered by any pipeline.
    pub dead_letters: u64,
    /// The sink indexes at the end, by `tenant/name`.
    pub indexes: BTreeMap<String, IndexStats>,
    pub embedder_alone: Vec<EmbedderAlone>,
    pub asked: Vec<Asked>,
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ServiceError::io(format!("reading {}", path.display()), e))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// Records keyed by their `id`, the value being the line itself.
fn keyed_records(path: &Path) -> Result<Vec<(String, KeyValue)>> {
    read_lines(path)?
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let at = || format!("{} line {}", path.display(), i + 1);
            let v: serde_json::Value = serde_json::from_str(&l)
                .map_err(|e| ServiceError::Input(format!("{}: {e}", at())))?;
            let id = v["id"]
                .as_str()
                .ok_or_else(|| ServiceError::Input(format!("{}: no `id`", at())))?
                .to_string();
            let kv = (Some(id.as_bytes().to_vec()), Some(l.into_bytes()));
            Ok((id, kv))
        })
        .collect()
}

/// The questions of a JSON Lines file (of `phase`, if given).
pub fn questions(path: &Path, phase: Option<&str>) -> Result<Vec<Question>> {
    let all = read_lines(path)?
        .iter()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str::<Question>(l)
                .map_err(|e| ServiceError::Input(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(all
        .into_iter()
        .filter(|q| phase.is_none_or(|p| q.phase == p))
        .collect())
}

/// A pipeline of the scenario, running.
struct Running {
    manifest: Manifest,
    counters: Arc<Counters>,
    /// Records produced to its source so far.
    fed: u64,
    sink_index: Option<(String, Arc<VectorIndex>)>,
    task: tokio::task::JoinHandle<crate::stream::Result<Pipeline>>,
}

/// Runs `scenario` on `host` against `brokers`, or a local broker started in
/// `broker_dir`. Pipelines run side by side in this process, as they would
/// in production; `on_event` sees every step.
pub fn run(
    host: &Host,
    scenario: &Scenario,
    brokers: Option<String>,
    broker_dir: &Path,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report> {
    run_watched(host, scenario, brokers, broker_dir, None, on_event)
}

/// [`run`], with its pipelines registered in `watch` (if given) for an
/// admin API to show, pause and ask, and lingering after the last step if
/// `watch` says so.
pub fn run_watched(
    host: &Host,
    scenario: &Scenario,
    brokers: Option<String>,
    broker_dir: &Path,
    watch: Option<&Watch>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report> {
    // Every step names a pipeline of the scenario: say so before starting
    // anything.
    let manifests = scenario
        .pipelines
        .iter()
        .map(|m| host.load(m))
        .collect::<Result<Vec<_>>>()?;
    for s in &scenario.steps {
        let into = s.into();
        if !manifests.iter().any(|m| m.name == *into) {
            return Err(unknown_pipeline(scenario, into));
        }
    }
    let (_broker, brokers) = super::broker_or_local(brokers, broker_dir, |a| match a {
        None => on_event(Event::BrokerStarting { dir: broker_dir }),
        Some(address) => on_event(Event::BrokerStarted { address }),
    })?;
    if let Some(w) = watch {
        *lock(&w.brokers) = Some(brokers.clone());
    }
    // Tables follow their topics on this broker from the start.
    host.follow_tables(&brokers);
    let pipelines = host.pipelines(&scenario.pipelines)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| ServiceError::io("starting tokio", e))?;
    let report = rt.block_on(run_steps(
        host, scenario, pipelines, &brokers, watch, on_event,
    ));
    if let Some(w) = watch {
        // The broker goes away with `_broker`: nothing more to ask.
        *lock(&w.brokers) = None;
        for p in lock(&w.pipelines).values_mut() {
            p.ended.get_or_insert_with(|| "stopped".to_string());
        }
    }
    // Before the local broker goes away with `_broker`.
    host.stop_tables();
    let mut report = report?;
    report.embedder_alone = embedder_alone(host, scenario, &report.asked)?;
    on_event(Event::Finished);
    Ok(report)
}

async fn run_steps(
    host: &Host,
    scenario: &Scenario,
    pipelines: Vec<Pipeline>,
    brokers: &str,
    watch: Option<&Watch>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report> {
    let stream = ServiceError::Stream;
    let manifests: Vec<&Manifest> = pipelines.iter().map(|p| &p.manifest).collect();
    kafka::ensure_topics(brokers, &super::run::topics_of(&manifests, 3))
        .await
        .map_err(stream)?;
    // Answers (and their pieces) are followed from the start, before any
    // question is asked.
    let mut answers: HashMap<String, tokio::sync::mpsc::UnboundedReceiver<(ReadRecord, i64)>> =
        HashMap::new();
    let mut pieces: HashMap<String, tokio::sync::mpsc::UnboundedReceiver<(ReadRecord, i64)>> =
        HashMap::new();
    for s in &scenario.steps {
        if let Step::Ask { into, .. } = s {
            let m = manifests
                .iter()
                .find(|m| m.name == *into)
                .ok_or_else(|| unknown_pipeline(scenario, into))?;
            let topic = m.sink_topic.clone().ok_or_else(|| {
                ServiceError::Input(format!(
                    "{}: pipeline `{into}` is asked questions but has no sink topic for its answers",
                    scenario.file.display()
                ))
            })?;
            if !answers.contains_key(into) {
                answers.insert(
                    into.clone(),
                    kafka::follow_topic(brokers, &topic).map_err(stream)?,
                );
                if let Some(t) = m.deltas_topic() {
                    pieces.insert(
                        into.clone(),
                        kafka::follow_topic(brokers, &t).map_err(stream)?,
                    );
                }
            }
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let opts = KafkaOptions {
        instance_id: None,
        assign: Default::default(),
        brokers: brokers.to_string(),
        group: None,
        idle_exit: None,
        state_dir: Some(host.data_dir.join("sink")),
    };
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    for p in pipelines {
        let counters = Arc::new(Counters::with_metrics(
            host.metrics.pipeline(&p.manifest.tenant, &p.manifest.name),
        ));
        let manifest = p.manifest.clone();
        let sink_index = match &manifest.sink_index {
            Some(i) => Some((
                format!("{}/{i}", manifest.tenant),
                host.indexes.open(&manifest.tenant, i)?,
            )),
            None => None,
        };
        // An operator's pause through the admin API, when watched.
        let (hold, hold_rx) = tokio::sync::watch::channel(false);
        let control = Control {
            hold: watch.map(|_| hold_rx),
            ..Control::default()
        };
        if let Some(w) = watch {
            lock(&w.pipelines).insert(
                (manifest.tenant.clone(), manifest.name.clone()),
                Watched {
                    file: manifest.file.clone(),
                    counters: counters.clone(),
                    topics: PipelineTopics::of(&manifest),
                    hold,
                    samples: VecDeque::new(),
                    ended: None,
                },
            );
        }
        let task = tokio::spawn(kafka::run_with(
            p,
            opts.clone(),
            counters.clone(),
            stop_rx.clone(),
            control,
        ));
        running.insert(
            manifest.name.clone(),
            Running {
                manifest,
                counters,
                fed: 0,
                sink_index,
                task,
            },
        );
    }
    let mut produced = BTreeMap::new();
    let mut seen_docs: HashSet<String> = HashSet::new();
    let mut updated: HashSet<String> = HashSet::new();
    let latency = Histogram::default();
    let first_piece = Histogram::default();
    let mut asked = Vec::new();
    for step in &scenario.steps {
        match step {
            Step::Produce {
                file,
                into,
                table: Some(table),
                label,
            } => {
                let records = keyed_records(file)?;
                let r = running
                    .get(into)
                    .ok_or_else(|| unknown_pipeline(scenario, into))?;
                let topic = r
                    .manifest
                    .tables
                    .iter()
                    .find(|t| t.name == *table)
                    .map(|t| t.topic.clone())
                    .ok_or_else(|| {
                        ServiceError::Input(format!(
                            "{}: pipeline `{into}` declares no table `{table}`",
                            scenario.file.display()
                        ))
                    })?;
                let n = records.len();
                let values = records.into_iter().map(|(_, kv)| kv).collect();
                kafka::produce_values(brokers, &topic, values)
                    .await
                    .map_err(stream)?;
                *produced.entry(label.clone()).or_insert(0) += n;
                on_event(Event::Produced {
                    label,
                    records: n,
                    pipeline: into,
                    index: None,
                    freshness: None,
                });
            }
            Step::Produce {
                file, into, label, ..
            } => {
                let records = keyed_records(file)?;
                let r = running
                    .get_mut(into)
                    .ok_or_else(|| unknown_pipeline(scenario, into))?;
                let n = records.len();
                let mut values = Vec::with_capacity(n);
                for (id, kv) in records {
                    if !seen_docs.insert(id.clone()) {
                        updated.insert(id);
                    }
                    values.push(kv);
                }
                kafka::produce_values(brokers, &r.manifest.source_topic, values)
                    .await
                    .map_err(stream)?;
                r.fed += n as u64;
                wait_consumed(r, label, scenario.step_timeout, on_event).await?;
                *produced.entry(label.clone()).or_insert(0) += n;
                let stats = match &r.sink_index {
                    Some((name, ix)) => Some((name.as_str(), ix.stats()?)),
                    None => None,
                };
                on_event(Event::Produced {
                    label,
                    records: n,
                    pipeline: into,
                    index: stats.as_ref().map(|(n, s)| (*n, s)),
                    freshness: r.counters.freshness.summary(),
                });
            }
            Step::Ask { file, into, phase } => {
                let qs = questions(file, phase.as_deref())?;
                let r = running
                    .get(into)
                    .ok_or_else(|| unknown_pipeline(scenario, into))?;
                let rx = answers
                    .get_mut(into)
                    .ok_or_else(|| unknown_pipeline(scenario, into))?;
                on_event(Event::Asking {
                    phase: phase.as_deref().unwrap_or("all"),
                    questions: qs.len(),
                });
                let got = ask(
                    brokers,
                    r,
                    &qs,
                    rx,
                    pieces.get_mut(into),
                    scenario.step_timeout,
                    on_event,
                )
                .await?;
                for (ms, n) in got.first_pieces.values() {
                    if *n > 1 {
                        first_piece.record(*ms as f64);
                    }
                }
                let got = got.answers;
                for q in &qs {
                    let mut a = match got.get(&q.id) {
                        Some((v, lat)) => {
                            latency.record(*lat as f64);
                            eval::score(q, Some(v), Some(*lat), &updated)
                        }
                        None => eval::score(q, None, None, &updated),
                    };
                    a.pipeline = into.clone();
                    on_event(Event::Answered(&a));
                    asked.push(a);
                }
            }
        }
    }
    if watch.is_some_and(|w| w.linger) {
        on_event(Event::Lingering);
        super::run::shutdown_signal().await;
    }
    let _ = stop_tx.send(true);
    let mut dead_letters = 0;
    let mut indexes = BTreeMap::new();
    // (p50, p99) of the last pipeline that indexed anything, read in place
    // (a watching admin API may still hold the counters).
    let mut freshness = (None, None);
    for (name, r) in running {
        r.task
            .await
            .map_err(|e| ServiceError::Run(format!("pipeline `{name}`: {e}")))?
            .map_err(stream)?;
        dead_letters += r.counters.dead_letters.load(Relaxed);
        if let Some((n, ix)) = &r.sink_index {
            indexes.insert(n.clone(), ix.stats()?);
        }
        if r.counters.freshness.count() > 0 {
            freshness = (
                r.counters.freshness.quantile(0.5),
                r.counters.freshness.quantile(0.99),
            );
        }
    }
    Ok(Report {
        scenario: scenario.name.clone(),
        note: scenario.note.clone(),
        produced,
        evaluation: eval::evaluate(&asked),
        freshness_p50_ms: freshness.0,
        freshness_p99_ms: freshness.1,
        answer_latency_p50_ms: latency.quantile(0.5),
        answer_latency_p99_ms: latency.quantile(0.99),
        first_piece_p50_ms: first_piece.quantile(0.5),
        first_piece_p99_ms: first_piece.quantile(0.99),
        streamed_answers: first_piece.count() as usize,
        dead_letters,
        indexes,
        embedder_alone: Vec::new(),
        asked,
    })
}

fn unknown_pipeline(scenario: &Scenario, name: &str) -> ServiceError {
    ServiceError::Input(format!(
        "{}: no pipeline named `{name}` among {}",
        scenario.file.display(),
        scenario
            .pipelines
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Waits until the pipeline consumed (and so committed) all it was fed.
async fn wait_consumed(
    r: &Running,
    what: &str,
    limit: Duration,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let done = r.counters.consumed.load(Relaxed);
        on_event(Event::Progress {
            what,
            done,
            total: r.fed,
        });
        if done >= r.fed {
            return Ok(());
        }
        if r.task.is_finished() {
            return Err(ServiceError::Run(format!(
                "pipeline `{}` stopped while consuming {what}",
                r.manifest.name
            )));
        }
        if t0.elapsed() > limit {
            return Err(ServiceError::Run(format!(
                "{what}: pipeline `{}` consumed only {done} of {} records within {limit:?}",
                r.manifest.name, r.fed
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What an ask step got back.
struct Got {
    /// Per question id: the answer record and its latency (ms).
    answers: HashMap<String, (serde_json::Value, i64)>,
    /// Per question id: when the first piece of its answer's last stream
    /// arrived (ms after the question was produced) and how many pieces
    /// that stream had so far.
    first_pieces: HashMap<String, (i64, u32)>,
}

/// Produces the questions, then collects one answer per question id from
/// the answers topic (value and question -> answer latency in ms), until
/// every question is answered or dead-lettered (and, when `pieces` follows the
/// pipeline's answer stream, when each answer started to arrive; the first
/// question's pieces are reported as they come).
async fn ask(
    brokers: &str,
    r: &Running,
    qs: &[Question],
    answers: &mut tokio::sync::mpsc::UnboundedReceiver<(ReadRecord, i64)>,
    mut pieces: Option<&mut tokio::sync::mpsc::UnboundedReceiver<(ReadRecord, i64)>>,
    limit: Duration,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Got> {
    let records: Vec<KeyValue> = qs
        .iter()
        .map(|q| {
            (
                Some(q.id.clone().into_bytes()),
                Some(q.record().to_string().into_bytes()),
            )
        })
        .collect();
    let wanted: HashSet<&str> = qs.iter().map(|q| q.id.as_str()).collect();
    let shown = qs.first().map(|q| q.id.clone()).unwrap_or_default();
    let mut shown_done = false;
    let dead_before = r.counters.dead_letters.load(Relaxed);
    let asked_at = kafka::chrono_ms();
    kafka::produce_values(brokers, &r.manifest.source_topic, records)
        .await
        .map_err(ServiceError::Stream)?;
    let mut got = Got {
        answers: HashMap::new(),
        first_pieces: HashMap::new(),
    };
    let mut on_piece = |rec: &ReadRecord, arrived: i64, got: &mut Got, done: &mut bool| {
        let Some(d) = rec
            .value
            .as_deref()
            .and_then(|v| serde_json::from_slice::<crate::runtime::Delta>(v).ok())
        else {
            return;
        };
        // A piece of an earlier run's answer to a question with this id
        // (a topic kept from an earlier run) is not this question's.
        if !wanted.contains(d.id.as_str()) || rec.timestamp.is_some_and(|t| t < asked_at) {
            return;
        }
        let ms = arrived - asked_at;
        let e = got.first_pieces.entry(d.id.clone()).or_insert((ms, 0));
        if d.seq == 0 {
            *e = (ms, 0);
        }
        e.1 += 1;
        if d.id == shown {
            *done = d.last;
            on_event(Event::Piece {
                question: &d.id,
                text: &d.text,
                first: d.seq == 0,
                reset: d.reset,
                last: d.last,
                ms,
            });
        }
    };
    let deadline = tokio::time::Instant::now() + limit;
    // Until every question is answered (or dead-lettered), and the shown
    // one's stream has ended (its final piece may be read after its answer).
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        let dead = r.counters.dead_letters.load(Relaxed) - dead_before;
        let all = got.answers.len() >= qs.len()
            || (dead > 0 && got.answers.len() as u64 + dead >= qs.len() as u64);
        if all {
            if shown_done || pieces.is_none() {
                break;
            }
            let g =
                *grace.get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(2));
            if tokio::time::Instant::now() >= g {
                break;
            }
        }
        let wait = deadline.min(tokio::time::Instant::now() + Duration::from_millis(200));
        let piece = async {
            match pieces.as_deref_mut() {
                Some(p) => p.recv().await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            a = tokio::time::timeout_at(wait, answers.recv()) => a,
            Some((rec, arrived)) = piece => {
                on_piece(&rec, arrived, &mut got, &mut shown_done);
                continue;
            }
        };
        let (rec, arrived) = match next {
            Ok(Some(x)) => x,
            Ok(None) => {
                return Err(ServiceError::Run(format!(
                    "the answers topic of `{}` stopped being read",
                    r.manifest.name
                )))
            }
            Err(_) if tokio::time::Instant::now() >= deadline => {
                if all {
                    break;
                }
                return Err(ServiceError::Run(format!(
                    "only {} of {} answers arrived within {limit:?}",
                    got.answers.len(),
                    qs.len()
                )));
            }
            Err(_) => continue,
        };
        let Some(key) = rec
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
        else {
            continue;
        };
        // Answers produced before the question was asked are an earlier
        // run's, to questions with the same ids (the broker's data kept).
        if !wanted.contains(key.as_str()) || rec.timestamp.is_some_and(|t| t < asked_at) {
            continue;
        }
        let v: serde_json::Value = rec
            .value
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(serde_json::Value::Null);
        got.answers
            .insert(key, (v, arrived - rec.timestamp.unwrap_or(arrived)));
    }
    Ok(got)
}

/// For each pipeline that was asked questions and retrieves from an index:
/// top-3 search with its embedder alone (no metadata filter), over the
/// questions it was asked. Says what the embedder itself is worth.
fn embedder_alone(host: &Host, scenario: &Scenario, asked: &[Asked]) -> Result<Vec<EmbedderAlone>> {
    let mut out = Vec::new();
    for path in &scenario.pipelines {
        let m = host.load(path)?;
        let Some(index) = m
            .stages
            .iter()
            .find(|s| s.kind == StageKind::Retriever)
            .and_then(|s| s.index.clone())
        else {
            continue;
        };
        if !m.stages.iter().any(|s| s.kind == StageKind::Embedder) {
            continue;
        }
        let asked_here: Vec<&Asked> = asked.iter().filter(|a| a.pipeline == m.name).collect();
        if asked_here.is_empty() {
            continue;
        }
        let mut embedder = indexes::embedder_pipeline(path, &host.runtime, &host.policy)?;
        let texts: Vec<String> = asked_here.iter().map(|a| a.question.clone()).collect();
        let vectors = indexes::embed_texts(&mut embedder, &texts)?;
        let ix = host.indexes.open(&m.tenant, &index)?;
        let mut ranks = Vec::new();
        for (a, v) in asked_here.iter().zip(&vectors) {
            let hits = ix
                .search(v, 3, &[])
                .map_err(|e| ServiceError::Input(format!("searching {}/{index}: {e}", m.tenant)))?;
            ranks.push(
                hits.iter()
                    .position(|h| h.doc_id == a.gold_doc)
                    .map(|p| p + 1),
            );
        }
        let n = ranks.len().max(1) as f64;
        out.push(EmbedderAlone {
            pipeline: m.name.clone(),
            questions: ranks.len(),
            hit_at_1: ranks.iter().filter(|r| **r == Some(1)).count() as f64 / n,
            hit_at_3: ranks.iter().filter(|r| r.is_some()).count() as f64 / n,
        });
    }
    Ok(out)
}

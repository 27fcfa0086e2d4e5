//! `weft run`: pipelines between Kafka topics until stopped, or one
//! pipeline over a JSON Lines file.

use super::{Result, ServiceError};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::stream::file::{self as local, RunSummary};
use crate::stream::kafka::{self, Counters, KafkaOptions};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// A running (or finished) pipeline's figures at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineStatus {
    pub pipeline: String,
    pub consumed: u64,
    pub produced: u64,
    pub dead_letters: u64,
    pub batches: u64,
    /// Documents upserted or deleted by the index sink.
    pub indexed_docs: u64,
    /// Produced -> searchable, `p50 .. ms, p99 .. ms`, once anything was indexed.
    pub freshness: Option<String>,
    /// Why it is waiting on the broker for partitions, if it is.
    pub stalled: Option<String>,
}

impl PipelineStatus {
    pub fn of(pipeline: &str, c: &Counters) -> PipelineStatus {
        PipelineStatus {
            pipeline: pipeline.to_string(),
            consumed: c.consumed.load(Relaxed),
            produced: c.produced.load(Relaxed),
            dead_letters: c.dead_letters.load(Relaxed),
            batches: c.batches.load(Relaxed),
            indexed_docs: c.indexed_docs.load(Relaxed),
            freshness: c.freshness.summary(),
            stalled: c.stalled(),
        }
    }
}

/// How `run_kafka` runs: where, with how many partitions for the topics it
/// creates, and how often it reports.
#[derive(Debug, Clone)]
pub struct KafkaRun {
    pub options: KafkaOptions,
    /// Partitions of the topics weft creates when they are missing.
    pub partitions: i32,
    /// Report [`RunEvent::Progress`] this often (`None`: only at the end).
    pub progress_every: Option<Duration>,
    /// Stop on Ctrl-C / SIGTERM (finish the batch in flight, commit, return).
    pub stop_on_signals: bool,
    /// How long a stop waits for the batches in flight; a pipeline stuck
    /// longer (a plugin blocked in a host call) is abandoned uncommitted,
    /// and its batch is replayed by the next run.
    pub grace: Duration,
}

/// What a run reports while it runs.
#[derive(Debug)]
pub enum RunEvent<'a> {
    Progress(&'a [PipelineStatus]),
    /// A signal arrived: the batches in flight are being finished and committed.
    Stopping,
}

/// The source, sink, answer-piece, dead-letter and table topics of `pipelines`, each once (one
/// CreateTopics request must not name a topic twice).
pub fn topics_of(pipelines: &[&crate::manifest::Manifest], partitions: i32) -> Vec<(String, i32)> {
    let mut topics: Vec<(String, i32)> = Vec::new();
    for m in pipelines {
        let mut add = |t: &str| {
            if !topics.iter().any(|(x, _)| x == t) {
                topics.push((t.to_string(), partitions));
            }
        };
        add(&m.source_topic);
        if let Some(t) = &m.sink_topic {
            add(t);
        }
        add(&m.dead_letter_topic);
        if let Some(t) = m.deltas_topic() {
            add(&t);
        }
        for t in &m.tables {
            add(&t.topic);
        }
    }
    topics
}

/// Runs pipelines between topics (creating missing ones) until a signal
/// (if asked) or idleness stops them all; then drains, commits and returns
/// every pipeline's final figures. The first pipeline error ends the run.
pub fn run_kafka(
    pipelines: Vec<Pipeline>,
    run: &KafkaRun,
    on_event: impl Fn(RunEvent<'_>) + Send + Sync + 'static,
) -> Result<Vec<PipelineStatus>> {
    run_kafka_with(pipelines, run, &Metrics::new(), on_event)
}

/// [`run_kafka`], counting every pipeline's figures into `metrics` (a
/// host's, to export them).
pub fn run_kafka_with(
    pipelines: Vec<Pipeline>,
    run: &KafkaRun,
    metrics: &Metrics,
    on_event: impl Fn(RunEvent<'_>) + Send + Sync + 'static,
) -> Result<Vec<PipelineStatus>> {
    let metrics = metrics.clone();
    let rt = tokio::runtime::Runtime::new().map_err(|e| ServiceError::io("starting tokio", e))?;
    let run = run.clone();
    let on_event = Arc::new(on_event);
    let result = rt.block_on(async move {
        let manifests: Vec<_> = pipelines.iter().map(|p| &p.manifest).collect();
        let topics = topics_of(&manifests, run.partitions);
        kafka::ensure_topics(&run.options.brokers, &topics)
            .await
            .map_err(ServiceError::Stream)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if run.stop_on_signals {
            let on_event = on_event.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                on_event(RunEvent::Stopping);
                let _ = stop_tx.send(true);
            });
        }
        let mut tasks = Vec::new();
        let mut all = Vec::new();
        for p in pipelines {
            let counters = Arc::new(Counters::with_metrics(
                metrics.pipeline(&p.manifest.tenant, &p.manifest.name),
            ));
            all.push((p.manifest.name.clone(), counters.clone()));
            tasks.push(tokio::spawn(kafka::run(
                p,
                run.options.clone(),
                counters,
                stop_rx.clone(),
            )));
        }
        let snapshot = {
            let all = all.clone();
            move || -> Vec<PipelineStatus> {
                all.iter().map(|(n, c)| PipelineStatus::of(n, c)).collect()
            }
        };
        let reporter = run.progress_every.map(|every| {
            let snapshot = snapshot.clone();
            let on_event = on_event.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    on_event(RunEvent::Progress(&snapshot()));
                }
            })
        });
        let mut first_err = None;
        let grace = run.grace;
        for (t, (name, _)) in tasks.into_iter().zip(&all) {
            let mut stopped = stop_rx.clone();
            let out_of_grace = async move {
                if stopped.wait_for(|s| *s).await.is_err() {
                    // No stop can come any more: only the task ends this.
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(grace).await;
            };
            let r = tokio::select! {
                r = t => match r {
                    Ok(r) => r.map(|_| ()).map_err(ServiceError::Stream),
                    Err(e) => Err(ServiceError::Run(format!("pipeline task: {e}"))),
                },
                _ = out_of_grace => {
                    tracing::error!(pipeline = %name, "its batch in flight did not finish within the {grace:?} grace period; abandoned uncommitted (it is replayed from the last commit)");
                    Ok(())
                }
            };
            if let Err(e) = r {
                first_err = first_err.or(Some(e));
            }
        }
        if let Some(r) = reporter {
            r.abort();
        }
        let last = snapshot();
        on_event(RunEvent::Progress(&last));
        match first_err {
            Some(e) => Err(e),
            None => Ok(last),
        }
    });
    // A pipeline abandoned after the grace period still has a thread in a
    // plugin call: do not wait for it (dropping the runtime would).
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs one pipeline over a JSON Lines file: outputs to `output`, failed
/// records to `dead_letters`, with a progress bar on stderr if `progress`.
pub fn run_file(
    pipeline: &mut Pipeline,
    input: &Path,
    output: &Path,
    dead_letters: &Path,
    progress: bool,
) -> Result<RunSummary> {
    local::run_file(pipeline, input, output, dead_letters, progress).map_err(ServiceError::Stream)
}

//! `weft run`: between Kafka topics, or over a JSON Lines file.

use crate::cli::Globals;
use anyhow::bail;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use weft::service::exporter::MetricsEndpoint;
use weft::service::run::{run_file, run_kafka_with, KafkaRun, PipelineStatus, RunEvent};
use weft::service::Host;
use weft::stream::assign::Assignment;
use weft::stream::file as local;
use weft::stream::kafka::KafkaOptions;

#[derive(clap::Args)]
pub struct Args {
    /// Manifest files (one with --input; any number with --brokers).
    #[arg(required = true)]
    manifests: Vec<PathBuf>,
    /// Kafka bootstrap servers, e.g. 127.0.0.1:9092.
    #[arg(long, conflicts_with_all = ["input", "output"])]
    brokers: Option<String>,
    /// Consumer group (default: weft.<tenant>.<pipeline>).
    #[arg(long, requires = "brokers")]
    group: Option<String>,
    /// Static group membership: a stable identity of this process, the same
    /// across its restarts and unique in its group (e.g. the host name, or a
    /// StatefulSet pod name). A restarted process then takes over its dead
    /// predecessor's partitions instead of waiting for the broker to expire it.
    #[arg(long, requires = "brokers", conflicts_with = "assign")]
    instance_id: Option<String>,
    /// How this process gets its partitions: `group` (default: the broker's
    /// group coordinator shares them among the group's live processes), or
    /// `I/N`: this process reads partitions p with p % N == I of every
    /// source and joins no group (`0/1`: all of them). A static share
    /// resumes from the group's committed offsets at once after a restart,
    /// with no rebalance to wait for; each partition must then belong to
    /// exactly one process.
    #[arg(long, default_value = "group", requires = "brokers")]
    assign: Assignment,
    /// Partitions for topics weft creates when they are missing.
    #[arg(long, default_value_t = 3, requires = "brokers")]
    partitions: i32,
    /// Exit after this many seconds without a new record (default: run until Ctrl-C).
    #[arg(long, requires = "brokers")]
    idle_exit_secs: Option<u64>,
    /// Seconds a stop (SIGTERM, Ctrl-C) waits for the batches in flight to
    /// finish and commit; one stuck longer is abandoned uncommitted and
    /// replayed by the next run.
    #[arg(long, default_value_t = 30, requires = "brokers")]
    grace_secs: u64,
    /// Seconds between progress lines on stderr.
    #[arg(long, default_value_t = 5, requires = "brokers")]
    progress_secs: u64,
    /// Input records, one JSON value per line.
    #[arg(long, requires = "output")]
    input: Option<PathBuf>,
    /// Output records, one JSON value per line.
    #[arg(long, requires = "input")]
    output: Option<PathBuf>,
    /// Where failed records go (default: <output stem>.dead-letters.jsonl).
    #[arg(long)]
    dead_letter: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
    /// Serve Prometheus metrics on this address (`GET /metrics`), e.g. 127.0.0.1:9464.
    #[arg(long, requires = "brokers")]
    metrics: Option<SocketAddr>,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<ExitCode> {
    match (a.brokers.clone(), a.input.clone(), a.output.clone()) {
        (Some(brokers), _, _) => kafka(g, a, brokers),
        (None, Some(input), Some(output)) => file(g, a, input, output),
        _ => bail!(
            "say where records come from: --brokers HOST:PORT to run between Kafka topics, \
             or --input FILE --output FILE to run locally"
        ),
    }
}

/// One progress line per pipeline; tests and operators read these.
pub fn progress_line(s: &PipelineStatus) -> String {
    let mut line = format!(
        "{}: {} consumed, {} produced, {} dead-lettered, {} batches",
        s.pipeline, s.consumed, s.produced, s.dead_letters, s.batches
    );
    if let Some(f) = &s.freshness {
        line.push_str(&format!(", {} docs indexed, freshness {f}", s.indexed_docs));
    }
    if let Some(why) = &s.stalled {
        line.push_str(&format!(" [stalled: {why}]"));
    }
    line
}

fn kafka(g: &Globals, a: Args, brokers: String) -> anyhow::Result<ExitCode> {
    let host = Host::new(g.cache_dir.clone(), g.policy.clone(), &g.data_dir)?;
    host.follow_tables(&brokers);
    let pipelines = host.pipelines(&a.manifests)?;
    let _metrics = match a.metrics {
        Some(addr) => {
            let m = MetricsEndpoint::start(addr, host.scraper())?;
            eprintln!("metrics on http://{}/metrics", m.addr());
            Some(m)
        }
        None => None,
    };
    let run = KafkaRun {
        options: KafkaOptions {
            instance_id: a.instance_id.clone(),
            assign: a.assign,
            brokers,
            group: a.group,
            idle_exit: a.idle_exit_secs.map(Duration::from_secs),
            state_dir: Some(host.data_dir.join("sink")),
        },
        partitions: a.partitions,
        progress_every: (!a.quiet).then(|| Duration::from_secs(a.progress_secs.max(1))),
        stop_on_signals: true,
        grace: Duration::from_secs(a.grace_secs),
    };
    let quiet = a.quiet;
    let last = run_kafka_with(pipelines, &run, &host.metrics, move |e| match e {
        RunEvent::Stopping => eprintln!("stopping: finishing the batch in flight and committing"),
        RunEvent::Progress(all) => {
            if !quiet {
                for s in all {
                    eprintln!("{}", progress_line(s));
                }
            }
        }
    })?;
    if quiet {
        for s in &last {
            eprintln!("{}", progress_line(s));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn file(g: &Globals, a: Args, input: PathBuf, output: PathBuf) -> anyhow::Result<ExitCode> {
    if a.manifests.len() != 1 {
        bail!(
            "--input runs exactly one manifest (got {})",
            a.manifests.len()
        );
    }
    let host = Host::new(g.cache_dir.clone(), g.policy.clone(), &g.data_dir)?;
    let mut pipeline = host.pipelines(&a.manifests)?.remove(0);
    let dlq = a
        .dead_letter
        .unwrap_or_else(|| local::default_dead_letter_path(&output));
    let summary = run_file(&mut pipeline, &input, &output, &dlq, !a.quiet)?;
    let secs = summary.elapsed.as_secs_f64();
    eprintln!(
        "{}: {} records in, {} out, {} dead-lettered, {:.2} s ({:.0} records/s)",
        pipeline.manifest.name,
        summary.records_in,
        summary.records_out,
        summary.dead_letters,
        secs,
        summary.records_in as f64 / secs.max(1e-9)
    );
    for s in &pipeline.stages {
        eprintln!(
            "  stage {:<12} {:<14} {:>6} calls {:>9.1} ms busy, {} instance(s), {} failed call(s){}",
            s.name,
            s.kind.to_string(),
            s.stats.calls,
            s.stats.busy.as_secs_f64() * 1000.0,
            s.stats.instantiations,
            s.stats.failures,
            if s.stats.reused > 0 {
                format!(", {} embedding(s) reused from the index", s.stats.reused)
            } else {
                String::new()
            }
        );
        if s.logs_dropped() > 0 {
            eprintln!(
                "    {} plugin log line(s) dropped (over the per-stage log rate limit)",
                s.logs_dropped()
            );
        }
    }
    if let Some(sink) = &pipeline.sink {
        eprintln!(
            "  index: {} document(s) written to {}",
            summary.indexed_docs,
            sink.describe()
        );
    }
    eprintln!("  output: {}", output.display());
    if pipeline.manifest.deltas_topic().is_some() {
        eprintln!(
            "  answer pieces: {}",
            local::default_deltas_path(&output).display()
        );
    }
    if summary.dead_letters > 0 {
        eprintln!("  dead letters: {}", dlq.display());
    }
    Ok(ExitCode::SUCCESS)
}

//! The `weft` command line.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use weft::local;
use weft::stream::kafka::{self, KafkaOptions};

mod airline;
mod dev;
mod index_cli;
mod scaffold;
use weft::index::{IndexOptions, IndexRegistry};
use weft::manifest::Manifest;
use weft::pipeline::Pipeline;
use weft::plugin::{Runtime, StageShared};
use weft::policy::Policy;

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Run sandboxed WebAssembly pipelines for streaming RAG",
    long_about = "weft runs pipeline manifests (TOML) that chain sandboxed Wasm components \
                  (chunkers, embedders, retrievers, prompt builders, generators, transforms)."
)]
struct Cli {
    /// Directory of the compiled-component cache (default: $WEFT_CACHE_DIR or ~/.cache/weft).
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
    /// Operator policy (TOML) bounding what manifests may grant; built-in default otherwise.
    #[arg(long, global = true)]
    policy: Option<PathBuf>,
    /// Where tenants' indexes live (`<dir>/index/<tenant>/<name>`).
    #[arg(long, global = true, default_value = ".weft/data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate manifests: syntax, keys, plugins (compiled and type-checked
    /// against their stage's world) and grants against the policy.
    Check {
        /// Manifest files.
        #[arg(required = true)]
        manifests: Vec<PathBuf>,
    },
    /// Run pipelines between Kafka topics (`--brokers`), or one pipeline over
    /// a JSON Lines file (`--input`/`--output`, no broker needed).
    Run {
        /// Manifest files (one with --input; any number with --brokers).
        #[arg(required = true)]
        manifests: Vec<PathBuf>,
        /// Kafka bootstrap servers, e.g. 127.0.0.1:9092.
        #[arg(long, conflicts_with_all = ["input", "output"])]
        brokers: Option<String>,
        /// Consumer group (default: weft.<tenant>.<pipeline>).
        #[arg(long, requires = "brokers")]
        group: Option<String>,
        /// Partitions for topics weft creates when they are missing.
        #[arg(long, default_value_t = 3, requires = "brokers")]
        partitions: i32,
        /// Exit after this many seconds without a new record (default: run until Ctrl-C).
        #[arg(long, requires = "brokers")]
        idle_exit_secs: Option<u64>,
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
    },
    /// The whole thing on one machine: start a local broker (unless
    /// --brokers) and run the airline scenario: index the documents, answer
    /// the first questions, stream the flight updates, answer the questions
    /// about them. With --manifest/--input: feed one pipeline instead.
    Dev {
        /// Where the local broker and the indexes keep their data.
        #[arg(long, default_value = ".weft/dev")]
        dir: PathBuf,
        /// Use this broker instead of starting one.
        #[arg(long)]
        brokers: Option<String>,
        /// The airline scenario's files (pipelines and data).
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Write every question, answer and figure as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Run this one pipeline instead of the scenario...
        #[arg(long, requires = "input")]
        manifest: Option<PathBuf>,
        /// ...fed with these records.
        #[arg(long, requires = "manifest")]
        input: Option<PathBuf>,
    },
    /// Look into tenants' indexes: `stats`, `search`, `build`.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Start a plugin project (`weft plugin new`) or build one (`weft plugin build`).
    Plugin {
        #[command(subcommand)]
        command: scaffold::PluginCommand,
    },
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Documents, chunks, pending items, trees and sizes of indexes (all
    /// under --data-dir when none is named).
    Stats {
        /// `tenant/name`.
        indexes: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Embed a text with the index's own embedder and show the nearest chunks.
    Search {
        /// `tenant/name`.
        index: String,
        /// What to look for.
        text: String,
        /// How many hits.
        #[arg(long, default_value_t = 5)]
        k: u32,
        /// Metadata equality filters, `key=value` (repeatable).
        #[arg(long = "filter")]
        filters: Vec<String>,
        /// Take the embedder from this manifest instead of the one that
        /// wrote the index.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fold pending items into the trees now (needs the index not to be
    /// open for writing elsewhere).
    Build {
        /// `tenant/name`.
        index: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let policy = match &cli.policy {
        Some(p) => Policy::load(p)?,
        None => Policy::default(),
    };
    match cli.command {
        Command::Check { manifests } => {
            let runtime = Runtime::new(cli.cache_dir)?;
            let mut failed = 0;
            for m in &manifests {
                match check(&runtime, &policy, m) {
                    Ok(summary) => println!("ok: {summary}"),
                    Err(problems) => {
                        failed += 1;
                        for p in problems {
                            eprintln!("{p}");
                        }
                    }
                }
            }
            if failed > 0 {
                eprintln!("{failed} of {} manifest(s) have problems", manifests.len());
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            manifests,
            brokers: Some(brokers),
            group,
            partitions,
            idle_exit_secs,
            progress_secs,
            quiet,
            ..
        } => {
            let runtime = Runtime::new(cli.cache_dir)?;
            let indexes = IndexRegistry::new(&cli.data_dir, IndexOptions::default());
            let mut loaded = Vec::new();
            for m in &manifests {
                let m = load_checked(&policy, m)?;
                if let Some(i) = &m.sink_index {
                    indexes.will_write(&m.tenant, i);
                }
                loaded.push(m);
            }
            let mut pipelines = Vec::new();
            for m in loaded {
                pipelines.push(Pipeline::new(&runtime, m, Some(&indexes))?);
            }
            let opts = KafkaOptions {
                brokers,
                group,
                idle_exit: idle_exit_secs.map(Duration::from_secs),
            };
            let progress = (!quiet).then(|| Duration::from_secs(progress_secs.max(1)));
            run_kafka(pipelines, opts, partitions, progress)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            manifests,
            input: Some(input),
            output: Some(output),
            dead_letter,
            quiet,
            ..
        } => {
            if manifests.len() != 1 {
                bail!(
                    "--input runs exactly one manifest (got {})",
                    manifests.len()
                );
            }
            let runtime = Runtime::new(cli.cache_dir)?;
            let m = load_checked(&policy, &manifests[0])?;
            let indexes = IndexRegistry::new(&cli.data_dir, IndexOptions::default());
            let mut pipeline = Pipeline::new(&runtime, m, Some(&indexes))?;
            let dlq = dead_letter.unwrap_or_else(|| local::default_dead_letter_path(&output));
            let summary = local::run_file(&mut pipeline, &input, &output, &dlq, !quiet)?;
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
            }
            if let Some(ix) = &pipeline.sink_index {
                eprintln!(
                    "  index: {} document(s) written to {}",
                    summary.indexed_docs,
                    ix.dir().display()
                );
            }
            eprintln!("  output: {}", output.display());
            if summary.dead_letters > 0 {
                eprintln!("  dead letters: {}", dlq.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { .. } => bail!(
            "say where records come from: --brokers HOST:PORT to run between Kafka topics, \
             or --input FILE --output FILE to run locally"
        ),
        Command::Dev {
            dir,
            brokers,
            root,
            report,
            manifest,
            input,
        } => {
            let runtime = Runtime::new(cli.cache_dir)?;
            let indexes = IndexRegistry::new(&dir.join("data"), IndexOptions::default());
            match (manifest, input) {
                (Some(manifest), Some(input)) => {
                    let m = load_checked(&policy, &manifest)?;
                    let pipeline = Pipeline::new(&runtime, m, Some(&indexes))?;
                    dev::run(pipeline, &dir, brokers, &input)?;
                }
                _ => {
                    let load = |name: &str| {
                        load_checked(&policy, &root.join("pipelines/airline").join(name))
                    };
                    let (ingest, query) = (load("ingest.toml")?, load("query.toml")?);
                    if let Some(i) = &ingest.sink_index {
                        indexes.will_write(&ingest.tenant, i);
                    }
                    let ingest = Pipeline::new(&runtime, ingest, Some(&indexes))?;
                    let query = Pipeline::new(&runtime, query, Some(&indexes))?;
                    let embedder = index_cli::embedder_pipeline(
                        &root.join("pipelines/airline/query.toml"),
                        &runtime,
                        &policy,
                    )?;
                    airline::run(
                        ingest,
                        query,
                        embedder,
                        &dir,
                        brokers,
                        &root.join("data/airline"),
                        report.as_deref(),
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Index { command } => {
            index_cli::run(command, &cli.data_dir, cli.cache_dir, &policy)
        }
        Command::Plugin { command } => scaffold::run(command),
    }
}

/// Runs pipelines between topics until Ctrl-C/SIGTERM (or idleness), with a
/// progress line every few seconds, then drains, commits and returns.
fn run_kafka(
    pipelines: Vec<Pipeline>,
    opts: KafkaOptions,
    partitions: i32,
    progress: Option<Duration>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting tokio")?;
    rt.block_on(async move {
        let mut topics = Vec::new();
        for p in &pipelines {
            let m = &p.manifest;
            topics.push((m.source_topic.clone(), partitions));
            if let Some(t) = &m.sink_topic {
                topics.push((t.clone(), partitions));
            }
            topics.push((m.dead_letter_topic.clone(), partitions));
        }
        kafka::ensure_topics(&opts.brokers, &topics).await?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            eprintln!("stopping: finishing the batch in flight and committing");
            let _ = stop_tx.send(true);
        });
        let mut tasks = Vec::new();
        let mut all = Vec::new();
        for p in pipelines {
            let counters = Arc::new(kafka::Counters::default());
            all.push((p.manifest.name.clone(), counters.clone()));
            tasks.push(tokio::spawn(kafka::run(
                p,
                opts.clone(),
                counters,
                stop_rx.clone(),
            )));
        }
        let reporter = progress.map(|every| {
            let all = all.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    for (name, c) in &all {
                        eprintln!("{}", progress_line(name, c));
                    }
                }
            })
        });
        let mut first_err = None;
        for t in tasks {
            match t.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                Err(e) => first_err = first_err.or(Some(anyhow::anyhow!("pipeline task: {e}"))),
            }
        }
        if let Some(r) = reporter {
            r.abort();
        }
        for (name, c) in &all {
            eprintln!("{}", progress_line(name, c));
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })
}

fn progress_line(name: &str, c: &kafka::Counters) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut line = format!(
        "{name}: {} consumed, {} produced, {} dead-lettered, {} batches",
        c.consumed.load(Relaxed),
        c.produced.load(Relaxed),
        c.dead_letters.load(Relaxed),
        c.batches.load(Relaxed)
    );
    if let Some(f) = c.freshness.summary() {
        line.push_str(&format!(
            ", {} docs indexed, freshness {f}",
            c.indexed_docs.load(Relaxed)
        ));
    }
    line
}

async fn wait_for_signal() {
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

/// Loads a manifest and checks it against the policy; problems become one error.
fn load_checked(policy: &Policy, path: &Path) -> anyhow::Result<Manifest> {
    let m = Manifest::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let denied = policy.check(&m);
    if !denied.is_empty() {
        let msgs: Vec<String> = denied.iter().map(|d| d.to_string()).collect();
        bail!("{}", msgs.join("\n"));
    }
    Ok(m)
}

/// Every problem in one manifest, as printable lines.
fn check(runtime: &Runtime, policy: &Policy, path: &Path) -> Result<String, Vec<String>> {
    let m = Manifest::load(path).map_err(|e| {
        e.diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
    })?;
    let mut problems: Vec<String> = policy.check(&m).iter().map(|d| d.to_string()).collect();
    let mut stages = Vec::new();
    for s in &m.stages {
        let shared = std::sync::Arc::new(StageShared::new(&m.tenant, &m.name, s));
        match runtime
            .prepare(s, shared)
            .with_context(|| s.location.to_string())
        {
            Ok(_) => stages.push(format!("{} [{}]", s.name, s.kind)),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(format!(
        "{} (pipeline `{}`, tenant `{}`: {} -> {} -> {})",
        path.display(),
        m.name,
        m.tenant,
        m.source_topic,
        stages.join(" -> "),
        m.sink_topic
            .clone()
            .or(m.sink_index.map(|i| format!("index {i}")))
            .unwrap_or_default()
    ))
}

//! The `weft` command line.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use weft::local;
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
    /// Run a pipeline over a JSON Lines file (one record per line).
    Run {
        manifest: PathBuf,
        /// Input records, one JSON value per line.
        #[arg(long)]
        input: PathBuf,
        /// Output records, one JSON value per line.
        #[arg(long)]
        output: PathBuf,
        /// Where failed records go (default: <output stem>.dead-letters.jsonl).
        #[arg(long)]
        dead_letter: Option<PathBuf>,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
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
            manifest,
            input,
            output,
            dead_letter,
            quiet,
        } => {
            let runtime = Runtime::new(cli.cache_dir)?;
            let m = load_checked(&policy, &manifest)?;
            let mut pipeline = Pipeline::new(&runtime, m, None)?;
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
                    "  stage {:<12} {:<14} {:>6} calls {:>9.1} ms busy, {} instance(s), {} failed call(s)",
                    s.name,
                    s.kind.to_string(),
                    s.stats.calls,
                    s.stats.busy.as_secs_f64() * 1000.0,
                    s.stats.instantiations,
                    s.stats.failures
                );
            }
            eprintln!("  output: {}", output.display());
            if summary.dead_letters > 0 {
                eprintln!("  dead letters: {}", dlq.display());
            }
            Ok(ExitCode::SUCCESS)
        }
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

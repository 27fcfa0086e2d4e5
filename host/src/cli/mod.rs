//! Arguments and dispatch. Each command lives in `commands/`: it parses its
//! arguments, calls the service layer and prints; nothing else.

mod commands;
mod scaffold;

use clap::{Parser, Subcommand};
use commands::{check, dev, dlq, eval, index, plugin, run, serve, status};
use std::path::PathBuf;
use std::process::ExitCode;
use weft::policy::Policy;

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Run sandboxed WebAssembly pipelines for streaming RAG",
    long_about = "weft runs pipeline manifests (TOML) that chain sandboxed Wasm components \
                  (chunkers, embedders, retrievers, prompt builders, generators, transforms)."
)]
pub struct Cli {
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

/// What every command may need from the global options.
pub struct Globals {
    pub cache_dir: Option<PathBuf>,
    pub policy: Policy,
    pub data_dir: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Validate manifests: syntax, keys, plugins (compiled and type-checked
    /// against their stage's world) and grants against the policy.
    Check(check::Args),
    /// Run pipelines between Kafka topics (`--brokers`), or one pipeline over
    /// a JSON Lines file (`--input`/`--output`, no broker needed).
    Run(run::Args),
    /// Host every tenant's pipelines from a tenants directory in one
    /// long-running process, reloading what changes (files are watched;
    /// SIGHUP reloads too). Several processes on one directory share the
    /// partitions.
    Serve(serve::Args),
    /// The whole thing on one machine: start a local broker (unless
    /// --brokers) and run a scenario directory (default: the airline
    /// example, pipelines/airline): its pipelines side by side, its records
    /// produced, its questions asked and scored. With --manifest/--input:
    /// feed one pipeline instead.
    Dev(dev::Args),
    /// Score a query pipeline: ask a questions file (with gold documents)
    /// through it against the tenant's index in the data directory, and
    /// print hit@1, hit@3, MRR, gold cited and expected text per phase.
    Eval(eval::Args),
    /// What a running `weft serve` hosts (through its `--admin` API):
    /// status, rates, lag and last error of every pipeline.
    Status(status::Args),
    /// A pipeline's dead letters, through the admin API: `tail` shows the
    /// last ones with their headers, `replay` re-produces chosen ones to
    /// the source topic.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Look into tenants' indexes: `stats`, `search`, `build`.
    Index {
        #[command(subcommand)]
        command: index::IndexCommand,
    },
    /// Start a plugin project (`weft plugin new`) or build one (`weft plugin build`).
    Plugin {
        #[command(subcommand)]
        command: plugin::PluginCommand,
    },
}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let policy = match &cli.policy {
        Some(p) => Policy::load(p)?,
        None => Policy::builtin(),
    };
    let g = Globals {
        cache_dir: cli.cache_dir,
        policy,
        data_dir: cli.data_dir,
    };
    match cli.command {
        Command::Check(a) => check::run(&g, a),
        Command::Run(a) => run::run(&g, a),
        Command::Serve(a) => serve::run(&g, a),
        Command::Dev(a) => dev::run(&g, a),
        Command::Eval(a) => eval::run(&g, a),
        Command::Status(a) => status::run(a),
        Command::Dlq { command } => dlq::run(command),
        Command::Index { command } => index::run(&g, command),
        Command::Plugin { command } => plugin::run(command),
    }
}

//! `weft plugin new|build`: the project generator and toolchain driver are
//! in `cli::scaffold` (developer tooling that runs cargo, componentize-py
//! and componentize-js; no part of the host library).

use crate::cli::scaffold::{build, display_path, new_project, parse_kind, Lang, Project};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// What `weft plugin` does.
#[derive(Subcommand)]
pub enum PluginCommand {
    /// Write a new plugin project for one stage kind into <DIR>/<NAME>: the
    /// plugin, the contract (wit/), a one-stage pipeline.toml, sample.jsonl
    /// and a README with the build and smoke-test commands.
    New {
        /// Stage kind: chunker, embedder, retriever, prompt-builder, generator or transform.
        kind: String,
        /// Project name: lower-case ASCII letters, digits, `-` and `_`, starting with a letter.
        name: String,
        /// Language of the plugin (python and js: transform, chunker, prompt-builder).
        #[arg(long, value_enum)]
        lang: Lang,
        /// Where to create the project directory (default: the current directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build a plugin project into a component with its language's toolchain
    /// (cargo, componentize-py or componentize-js) and say where it went.
    Build {
        /// The project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

/// Runs `weft plugin ...`.
pub fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::New {
            kind,
            name,
            lang,
            dir,
        } => {
            let kind = parse_kind(&kind)?;
            let root = new_project(kind, &name, lang, dir.as_deref())?;
            let shown = display_path(&root);
            println!(
                "created {shown}/: a {} {kind} stage (world `{}`)",
                lang.title(),
                kind.world()
            );
            println!("next:");
            println!("  cd {shown}");
            println!("  weft plugin build .");
            println!("  weft run pipeline.toml --input sample.jsonl --output out.jsonl");
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Build { dir } => {
            let project = Project::detect(&dir)?;
            let t0 = Instant::now();
            let built = build(&project)?;
            let size = std::fs::metadata(&built.component)
                .map(|m| m.len())
                .unwrap_or(0);
            println!(
                "built {} ({}, {:.1} s)",
                display_path(&built.component),
                indicatif::DecimalBytes(size),
                t0.elapsed().as_secs_f64()
            );
            if let Some(from) = &built.copied_from {
                println!(
                    "  copied from {}, where cargo put it, to where pipeline.toml looks",
                    display_path(from)
                );
            }
            if project.dir.join("pipeline.toml").is_file()
                && project.dir.join("sample.jsonl").is_file()
            {
                println!(
                    "try it (in {}): weft run pipeline.toml --input sample.jsonl --output out.jsonl",
                    display_path(&project.dir)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

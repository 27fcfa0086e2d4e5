//! `weft eval`: ask a questions file through a query pipeline and score the
//! answers against their gold documents.

use crate::cli::commands::dev::print_figures;
use crate::cli::Globals;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use weft::service::eval::{evaluate_pipeline, groups};
use weft::service::Host;

#[derive(clap::Args)]
pub struct Args {
    /// Questions, one JSON object per line: `{"id", "text", "gold_doc",
    /// "expect"?, "phase"?, "metadata"?}`.
    questions: PathBuf,
    /// The query pipeline's manifest (its [source] format is "question").
    #[arg(long)]
    pipeline: PathBuf,
    /// Only the questions of this phase.
    #[arg(long)]
    phase: Option<String>,
    /// Write every question, answer and figure as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Follow the pipeline's tables on this broker first (otherwise they are
    /// read as stored in the data directory).
    #[arg(long)]
    brokers: Option<String>,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<ExitCode> {
    let host = Host::new(g.cache_dir.clone(), g.policy.clone(), &g.data_dir)?;
    if let Some(b) = &a.brokers {
        host.follow_tables(b);
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} questions")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = evaluate_pipeline(
        &host,
        &a.pipeline,
        &a.questions,
        a.phase.as_deref(),
        &mut |done, all| {
            bar.set_length(all as u64);
            bar.set_position(done as u64);
        },
    )
    .with_context(|| {
        format!(
            "evaluating {} with {}",
            a.pipeline.display(),
            a.questions.display()
        )
    })?;
    bar.finish_and_clear();
    host.stop_tables();
    println!(
        "== {} questions of {} through pipeline `{}` ({} ms)\n",
        report.evaluation.all.questions, report.questions_file, report.pipeline, report.took_ms
    );
    for (group, _) in groups(&report.asked) {
        if let Some(f) = report.evaluation.phases.get(&group) {
            print_figures(&group, f);
        }
    }
    print_figures("all", &report.evaluation.all);
    for (id, why) in &report.failed {
        eprintln!("failed (counted as a miss): {id}: {why}");
    }
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("report written to {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

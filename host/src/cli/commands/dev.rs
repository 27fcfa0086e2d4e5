//! `weft dev`: a scenario (default: the airline example) or one pipeline,
//! end to end on one machine.

use crate::cli::Globals;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use weft::service::admin::{AdminOptions, AdminServer};
use weft::service::dev::{run_one, DevEvent};
use weft::service::eval::{groups, Asked, Figures};
use weft::service::scenario::{self, Event, Scenario, Watch};
use weft::service::Host;

/// The scenario `weft dev` runs when given none (relative to the working
/// directory, like every path argument).
const DEFAULT_SCENARIO: &str = "pipelines/airline";
/// The one `weft dev --semantic` runs: all-MiniLM-L6-v2 with hybrid
/// retrieval and no flight filter (README, "With a real embedding model").
const SEMANTIC_SCENARIO: &str = "pipelines/airline/scenario-semantic-hybrid.toml";

#[derive(clap::Args)]
pub struct Args {
    /// A scenario directory (with scenario.toml) or file [default:
    /// pipelines/airline, or with --semantic
    /// pipelines/airline/scenario-semantic-hybrid.toml].
    scenario: Option<PathBuf>,
    /// Run the airline scenario with the semantic embedder instead:
    /// all-MiniLM-L6-v2 inside the sandbox, hybrid (vector + BM25)
    /// retrieval, no flight filter
    /// (pipelines/airline/scenario-semantic-hybrid.toml; the model files
    /// come from `bash scripts/setup`).
    #[arg(long, conflicts_with_all = ["scenario", "manifest"])]
    semantic: bool,
    /// Where the local broker and the indexes keep their data.
    #[arg(long, default_value = ".weft/dev")]
    dir: PathBuf,
    /// Use this broker instead of starting one.
    #[arg(long)]
    brokers: Option<String>,
    /// Write every question, answer and figure as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Run this one pipeline instead of a scenario...
    #[arg(long, requires = "input")]
    manifest: Option<PathBuf>,
    /// ...fed with these records.
    #[arg(long, requires = "manifest")]
    input: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (`GET /metrics`) while it runs.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Serve the web console (at /) and the admin API (under /api/) on this
    /// address, e.g. 127.0.0.1:9180, to watch the scenario and ask
    /// questions; after the last step the pipelines keep running until
    /// Ctrl-C, then the summary is printed. Scenarios only.
    #[arg(long, conflicts_with = "manifest")]
    admin: Option<std::net::SocketAddr>,
    /// The bearer token the admin API requires (required when --admin is
    /// not a loopback address).
    #[arg(long, requires = "admin")]
    admin_token_file: Option<PathBuf>,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<ExitCode> {
    // Refuse a bad --admin before anything starts.
    let admin = match a.admin {
        Some(addr) => Some(AdminOptions::new(addr, a.admin_token_file.as_deref())?),
        None => None,
    };
    let host = Host::new(g.cache_dir.clone(), g.policy.clone(), &a.dir.join("data"))?;
    let _metrics = match a.metrics {
        Some(addr) => {
            let m = weft::service::exporter::MetricsEndpoint::start(addr, host.scraper())?;
            eprintln!("metrics on http://{}/metrics", m.addr());
            Some(m)
        }
        None => None,
    };
    match (&a.manifest, &a.input) {
        (Some(manifest), Some(input)) => one(&host, &a, manifest, input),
        _ => scenario(&host, &a, admin),
    }
}

fn bar(template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::hidden();
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn one(host: &Host, a: &Args, manifest: &PathBuf, input: &Path) -> anyhow::Result<ExitCode> {
    let pipeline = host.pipelines(std::slice::from_ref(manifest))?.remove(0);
    let progress = bar("{spinner} {pos}/{len} records {msg}");
    let r = run_one(
        host,
        pipeline,
        &a.dir,
        a.brokers.clone(),
        input,
        &mut |e| match e {
            DevEvent::BrokerStarting { dir } => {
                eprintln!("starting a local broker (tansu, data in {})", dir.display())
            }
            DevEvent::BrokerStarted { address } => eprintln!("broker listening on {address}"),
            DevEvent::Produced {
                records,
                topic,
                took,
            } => {
                eprintln!(
                    "produced {records} records to {topic} in {:.2} s",
                    took.as_secs_f64()
                );
                progress.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                progress.set_length(records as u64);
            }
            DevEvent::Progress(s, _) => {
                progress.set_position(s.consumed);
                progress.set_message(format!(
                    "-> {} produced, {} dead-lettered",
                    s.produced, s.dead_letters
                ));
            }
        },
    )?;
    progress.finish_and_clear();
    let s = &r.status;
    let m = host.load(manifest)?;
    eprintln!(
        "{}: {} consumed -> {} produced, {} indexed, {} dead-lettered to {} ({:.2} s incl. 3 s idle wait)",
        s.pipeline,
        s.consumed,
        s.produced,
        s.indexed_docs,
        s.dead_letters,
        m.dead_letter_topic,
        r.elapsed.as_secs_f64()
    );
    if let Some((name, st)) = &r.index {
        println!(
            "index {name}: {} documents, {} chunks, {} pending, {} in trees ({})",
            st.documents, st.chunks, st.pending, st.in_trees, st.path
        );
    }
    if let (Some(out), Some(sink)) = (&r.outputs, &m.sink_topic) {
        println!("{} records on {sink}; the first three:", out.len());
        for rec in out.iter().take(3) {
            let v = rec
                .value
                .as_deref()
                .map(|v| {
                    String::from_utf8_lossy(v)
                        .chars()
                        .take(160)
                        .collect::<String>()
                })
                .unwrap_or_else(|| "null".into());
            println!(
                "  [p{} @{}] {} => {v}...",
                rec.partition,
                rec.offset,
                String::from_utf8_lossy(rec.key.as_deref().unwrap_or_default())
            );
        }
    }
    eprintln!("stopping the local broker");
    Ok(ExitCode::SUCCESS)
}

fn print_answer(a: &Asked) {
    println!("Q {}  {}", a.id, a.question);
    match &a.answer {
        None => println!("  (no answer: dead-lettered)"),
        Some(text) => {
            println!("A {}", text.replace('\n', " "));
            println!(
                "  cites {}   [gold {}: {}]",
                a.citations.join(", "),
                a.gold_doc,
                match (a.gold_cited, a.gold_rank) {
                    (true, _) => "cited".to_string(),
                    (false, Some(r)) => format!("hit #{r}, not cited"),
                    (false, None) => "missed".to_string(),
                }
            );
        }
    }
    println!();
}

pub(crate) fn print_figures(name: &str, f: &Figures) {
    println!(
        "  {name:<34} {:>3} questions  hit@1 {:.2}  hit@3 {:.2}  MRR {:.2}  gold cited {:.2}  expected text in answer {:.2}{}",
        f.questions,
        f.hit_at_1,
        f.hit_at_3,
        f.mrr,
        f.gold_cited,
        f.expect_in_answer,
        if f.unanswered > 0 {
            format!("  ({} unanswered, counted as misses)", f.unanswered)
        } else {
            String::new()
        }
    );
}

fn ms(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into())
}

/// The scenario to run: the one named, else the default (or with
/// --semantic, the semantic one).
fn scenario_path(a: &Args) -> PathBuf {
    match (&a.scenario, a.semantic) {
        (Some(p), _) => p.clone(),
        (None, true) => PathBuf::from(SEMANTIC_SCENARIO),
        (None, false) => PathBuf::from(DEFAULT_SCENARIO),
    }
}

fn scenario(host: &Host, a: &Args, admin: Option<AdminOptions>) -> anyhow::Result<ExitCode> {
    let sc = Scenario::load(&scenario_path(a))?;
    // With --admin: the console watches the pipelines as the run starts
    // them, and the run lingers after its last step for questions.
    let watch = Arc::new(Watch::new(admin.is_some()));
    let _admin = match admin {
        Some(o) => {
            let s = AdminServer::start(watch.clone(), o).context("--admin")?;
            eprintln!(
                "console on http://{0}/ (admin API under http://{0}/api/)",
                s.addr()
            );
            Some(s)
        }
        None => None,
    };
    let watched = _admin.as_ref().map(|_| watch.as_ref());
    let progress = bar("{spinner} {msg} {pos}/{len}");
    let report = scenario::run_watched(host, &sc, a.brokers.clone(), &a.dir, watched, &mut |e| {
        match e {
        Event::BrokerStarting { dir } => {
            eprintln!("starting a local broker (tansu, data in {})", dir.display())
        }
        Event::BrokerStarted { address } => eprintln!("broker listening on {address}"),
        Event::Progress { what, done, total } => {
            if progress.is_hidden() && done < total {
                progress.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            progress.set_message(what.to_string());
            progress.set_length(total);
            progress.set_position(done);
        }
        Event::Produced {
            label,
            records,
            pipeline,
            index,
            freshness,
        } => {
            progress.finish_and_clear();
            progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            match index {
                Some((name, s)) => eprintln!(
                    "{pipeline}: {records} {label} indexed: {} documents, {} chunks in {name} ({} pending, {} in trees); freshness (produced -> searchable) {}",
                    s.documents,
                    s.chunks,
                    s.pending,
                    s.in_trees,
                    freshness.unwrap_or_else(|| "-".into())
                ),
                None => eprintln!("{pipeline}: {records} {label} consumed"),
            }
        }
        Event::Asking { phase, questions } => {
            println!("\n== questions, {phase} ({questions})\n")
        }
        Event::Piece {
            question,
            text,
            first,
            reset,
            last,
            ms,
        } => {
            use std::io::Write;
            // The first question of each step, as its answer is written; a
            // stream of one piece (a generator that does not stream) is
            // shown with the answer instead.
            if first && last {
                return;
            }
            if first {
                print!("~ {question} (first piece after {ms} ms): ");
            }
            if reset && !first {
                print!(" [replaced by the whole answer] ");
            }
            print!("{}", text.replace('\n', " "));
            if last {
                println!("  [done after {ms} ms]\n");
            }
            let _ = std::io::stdout().flush();
        }
        Event::Answered(q) => print_answer(q),
        Event::Lingering => eprintln!(
            "every step is done; the pipelines keep running for the console: Ctrl-C (or SIGTERM) stops them and prints the summary"
        ),
        Event::Finished => {}
    }
    })?;
    println!("\n== summary ({})\n", report.scenario);
    // Phases (per pipeline, if several answered) in the order asked.
    for (group, _) in groups(&report.asked) {
        if let Some(f) = report.evaluation.phases.get(&group) {
            print_figures(&group, f);
        }
    }
    print_figures("about updated docs", &report.evaluation.about_updated_docs);
    print_figures("all", &report.evaluation.all);
    for e in &report.embedder_alone {
        println!(
            "  {:<34} {:>3} questions  hit@1 {:.2}  hit@3 {:.2}  (pipeline `{}`: its embedder alone, no metadata filter)",
            "embedder alone", e.questions, e.hit_at_1, e.hit_at_3, e.pipeline
        );
    }
    println!(
        "  index freshness (document produced -> searchable): p50 {} ms, p99 {} ms (each file is produced in one burst, so this includes queueing; steady-state figures: cargo bench --bench rag)",
        ms(report.freshness_p50_ms),
        ms(report.freshness_p99_ms)
    );
    println!(
        "  question -> answer on the topic: p50 {} ms, p99 {} ms",
        ms(report.answer_latency_p50_ms),
        ms(report.answer_latency_p99_ms)
    );
    if report.streamed_answers > 0 {
        println!(
            "  question -> first piece of the answer (streamed answers: {}): p50 {} ms, p99 {} ms",
            report.streamed_answers,
            ms(report.first_piece_p50_ms),
            ms(report.first_piece_p99_ms)
        );
    }
    println!(
        "  {} of {} questions concern a document updated before they were asked",
        report.evaluation.about_updated_docs.questions, report.evaluation.all.questions
    );
    if let Some(n) = &report.note {
        println!("  note: {n}");
    }
    if report.dead_letters > 0 {
        eprintln!(
            "warning: {} record(s) were dead-lettered (see the *.dead-letters topics)",
            report.dead_letters
        );
    }
    if let Some(p) = &a.report {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("report written to {}", p.display());
    }
    eprintln!("stopping the local broker");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("dev").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn semantic_picks_the_semantic_scenario() {
        let a = parse(&[]).unwrap();
        assert_eq!(scenario_path(&a), PathBuf::from("pipelines/airline"));
        let a = parse(&["--semantic"]).unwrap();
        assert_eq!(
            scenario_path(&a),
            PathBuf::from("pipelines/airline/scenario-semantic-hybrid.toml")
        );
        let a = parse(&["other/scenario.toml"]).unwrap();
        assert_eq!(scenario_path(&a), PathBuf::from("other/scenario.toml"));
        // A scenario and --semantic, or --semantic with one pipeline: refused.
        assert!(parse(&["--semantic", "other/scenario.toml"]).is_err());
        assert!(parse(&["--semantic", "--manifest", "m.toml", "--input", "i.jsonl"]).is_err());
    }

    #[test]
    fn the_semantic_scenario_loads_and_has_no_flight_filter() {
        // From the repository root, as `weft dev --semantic` resolves it.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let sc = Scenario::load(&root.join(SEMANTIC_SCENARIO)).unwrap();
        let text = |name: &str| {
            std::fs::read_to_string(root.join("pipelines/airline").join(name)).unwrap()
        };
        // The manifest's settings, its comments left out (they say what
        // it does not have).
        let query: String = text("query-semantic-hybrid.toml")
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(query.contains("minilm-embedder") && query.contains("mode = \"hybrid\""));
        assert!(!query.contains("filter_from_question") && !query.contains("tag-flight"));
        assert!(!sc.steps.is_empty());
    }
}

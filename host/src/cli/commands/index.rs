//! `weft index stats|search|build`.

use crate::cli::Globals;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use weft::index::IndexStats;
use weft::runtime::Runtime;
use weft::service::indexes::{self, SearchRequest};

#[derive(Subcommand)]
pub enum IndexCommand {
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

pub fn run(g: &Globals, command: IndexCommand) -> anyhow::Result<ExitCode> {
    match command {
        IndexCommand::Stats { indexes, json } => {
            let all = indexes::stats(&g.data_dir, &indexes)?;
            if all.is_empty() {
                eprintln!("no indexes under {}", g.data_dir.join("index").display());
            }
            if json {
                let v: Vec<_> = all
                    .iter()
                    .map(|(n, s)| serde_json::json!({"index": n, "stats": s}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for (n, s) in &all {
                    print_stats(n, s);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        IndexCommand::Search {
            index,
            text,
            k,
            filters,
            manifest,
            json,
        } => {
            let runtime = Runtime::new(g.cache_dir.clone())?;
            let req = SearchRequest {
                index,
                text,
                k: k as usize,
                filters,
                manifest,
            };
            let hits = indexes::search(&g.data_dir, &runtime, &g.policy, &req)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hits)?);
                return Ok(ExitCode::SUCCESS);
            }
            if hits.is_empty() {
                println!("no hits");
            }
            for (i, h) in hits.iter().enumerate() {
                let text: String = h.text.chars().take(160).collect();
                println!(
                    "{:>2}. {:.3}  {}  ({})\n    {}{}",
                    i + 1,
                    h.score,
                    h.doc_id,
                    h.chunk_id,
                    text,
                    if h.text.chars().count() > 160 {
                        "..."
                    } else {
                        ""
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        IndexCommand::Build { index } => {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} pending items folded into the trees",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            let r = indexes::build(&g.data_dir, &index, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            println!(
                "{index}: {} pending item(s) folded into the trees in {:.2} s",
                r.folded,
                r.elapsed.as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_stats(name: &str, s: &IndexStats) {
    use indicatif::BinaryBytes;
    println!("{name}  ({})", s.path);
    println!(
        "  documents {}  chunks {}  dimension {}",
        s.documents,
        s.chunks,
        s.dimension.map(|d| d.to_string()).unwrap_or("-".into())
    );
    println!(
        "  in trees {} ({} trees)  pending {} (searched exactly until the next build)",
        s.in_trees, s.trees, s.pending
    );
    println!(
        "  on disk: store {}, trees {}",
        BinaryBytes(s.store_bytes),
        BinaryBytes(s.trees_bytes)
    );
    if let Some(m) = &s.model {
        println!(
            "  embedder: stage `{}` of {}",
            m["stage"].as_str().unwrap_or("?"),
            m["manifest"].as_str().unwrap_or("?")
        );
    }
}

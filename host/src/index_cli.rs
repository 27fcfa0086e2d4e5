//! `weft index stats|search|build`: look into tenants' indexes from a shell,
//! also while a `weft run` process is writing them (LMDB readers never
//! block the writer).

use crate::IndexCommand;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use weft::index::{index_dir, IndexOptions, IndexStats, VectorIndex};
use weft::manifest::{Format, Manifest, StageKind};
use weft::pipeline::Pipeline;
use weft::plugin::Runtime;
use weft::policy::Policy;
use weft::record::{Item, Origin, Payload};

pub fn run(
    command: IndexCommand,
    data_dir: &Path,
    cache_dir: Option<PathBuf>,
    policy: &Policy,
) -> anyhow::Result<ExitCode> {
    match command {
        IndexCommand::Stats { indexes, json } => {
            let names = if indexes.is_empty() {
                all_indexes(data_dir)?
            } else {
                indexes
            };
            if names.is_empty() {
                eprintln!("no indexes under {}", data_dir.join("index").display());
            }
            let mut all = Vec::new();
            for n in &names {
                let ix = open_read(data_dir, n)?;
                let s = ix.stats().with_context(|| format!("index {n}"))?;
                if !json {
                    print_stats(n, &s);
                }
                all.push(serde_json::json!({"index": n, "stats": s}));
            }
            if json {
                println!("{}", serde_json::Value::Array(all));
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
            let ix = open_read(data_dir, &index)?;
            let filter = filters
                .iter()
                .map(|f| match f.split_once('=') {
                    Some((k, v)) => Ok((k.to_string(), v.to_string())),
                    None => bail!("--filter `{f}`: expected key=value"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let manifest = match manifest {
                Some(m) => m,
                None => recorded_manifest(&ix, &index)?,
            };
            let vector = embed(&manifest, &text, cache_dir, policy)?;
            let hits = ix
                .search(&vector, k as usize, &filter)
                .map_err(|e| anyhow::anyhow!("searching {index}: {e}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hits)?);
            } else {
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
            }
            Ok(ExitCode::SUCCESS)
        }
        IndexCommand::Build { index } => {
            let (tenant, name) = split_name(&index)?;
            let dir = index_dir(data_dir, tenant, name);
            if !dir.exists() {
                bail!("no index {index} under {}", data_dir.display());
            }
            let ix = VectorIndex::open(&dir, IndexOptions::default())?;
            let t0 = std::time::Instant::now();
            let before = ix.stats()?.pending;
            let bar = indicatif::ProgressBar::new(before);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} pending items folded into the trees",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            ix.build_now_with(|done| bar.set_position(done as u64))?;
            bar.finish_and_clear();
            println!(
                "{index}: {before} pending item(s) folded into the trees in {:.2} s",
                t0.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn split_name(index: &str) -> anyhow::Result<(&str, &str)> {
    match index.split_once('/') {
        Some((t, n)) if !t.is_empty() && !n.is_empty() && !n.contains('/') => Ok((t, n)),
        _ => bail!("name an index as tenant/name, e.g. airline/kb (got `{index}`)"),
    }
}

fn open_read(data_dir: &Path, index: &str) -> anyhow::Result<VectorIndex> {
    let (tenant, name) = split_name(index)?;
    let dir = index_dir(data_dir, tenant, name);
    VectorIndex::open_read_only(&dir).with_context(|| {
        format!(
            "opening index {index} (indexes live under --data-dir {})",
            data_dir.display()
        )
    })
}

/// `tenant/name` of every index under the data directory.
fn all_indexes(data_dir: &Path) -> anyhow::Result<Vec<String>> {
    let root = data_dir.join("index");
    let mut out = Vec::new();
    let Ok(tenants) = std::fs::read_dir(&root) else {
        return Ok(out);
    };
    for t in tenants.flatten() {
        for n in std::fs::read_dir(t.path()).into_iter().flatten().flatten() {
            if n.path().join("store").is_dir() {
                out.push(format!(
                    "{}/{}",
                    t.file_name().to_string_lossy(),
                    n.file_name().to_string_lossy()
                ));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn print_stats(name: &str, s: &IndexStats) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
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
        "  on disk: store {:.1} MiB, trees {:.1} MiB",
        mib(s.store_bytes),
        mib(s.trees_bytes)
    );
    if let Some(m) = &s.model {
        println!(
            "  embedder: stage `{}` of {}",
            m["stage"].as_str().unwrap_or("?"),
            m["manifest"].as_str().unwrap_or("?")
        );
    }
}

fn recorded_manifest(ix: &VectorIndex, index: &str) -> anyhow::Result<PathBuf> {
    let model = ix.model()?.unwrap_or(serde_json::Value::Null);
    match model["manifest"].as_str() {
        Some(m) if Path::new(m).exists() => Ok(PathBuf::from(m)),
        Some(m) => bail!(
            "{index} was written by {m}, which is gone; pass --manifest with the same embedder"
        ),
        None => bail!("{index} does not record its embedder; pass --manifest"),
    }
}

/// A pipeline of just the first embedder stage of `manifest`, taking
/// questions: it embeds texts exactly as the manifest's pipeline would.
pub fn embedder_pipeline(
    manifest: &Path,
    runtime: &Runtime,
    policy: &Policy,
) -> anyhow::Result<Pipeline> {
    let mut m = Manifest::load(manifest).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(d) = policy.check(&m).first() {
        bail!("{d}");
    }
    let stage = m
        .stages
        .iter()
        .find(|s| s.kind == StageKind::Embedder)
        .cloned()
        .with_context(|| format!("{} has no embedder stage", manifest.display()))?;
    m.stages = vec![stage];
    m.format = Format::Question;
    m.sink_index = None;
    Pipeline::new(runtime, m, None)
}

/// Embeds texts as questions, in order.
pub fn embed_texts(p: &mut Pipeline, texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
    let items = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let value = serde_json::json!({"id": format!("q{i}"), "text": text}).to_string();
            let origin = Origin {
                topic: "cli".into(),
                partition: 0,
                offset: i as i64,
                key: None,
                value: Some(value.clone().into_bytes()),
            };
            Item {
                key: None,
                headers: Vec::new(),
                timestamp: None,
                origin: Arc::new(origin),
                payload: Payload::Raw(Some(value.into_bytes())),
            }
        })
        .collect();
    let out = p.process(items);
    if let Some(d) = out.dead.first() {
        bail!("embedding text {}: {}", d.item.origin.offset + 1, d.failure);
    }
    let vectors: Vec<Vec<f32>> = out
        .outputs
        .into_iter()
        .filter_map(|i| match i.payload {
            Payload::Question(q) => q.vector,
            _ => None,
        })
        .collect();
    if vectors.len() != texts.len() {
        bail!(
            "the embedder returned {} vectors for {} texts",
            vectors.len(),
            texts.len()
        );
    }
    Ok(vectors)
}

fn embed(
    manifest: &Path,
    text: &str,
    cache_dir: Option<PathBuf>,
    policy: &Policy,
) -> anyhow::Result<Vec<f32>> {
    let runtime = Runtime::new(cache_dir)?;
    let mut p = embedder_pipeline(manifest, &runtime, policy)?;
    let mut v = embed_texts(&mut p, &[text.to_string()])?;
    v.pop().context("the embedder returned nothing")
}

//! `weft index stats|search|build`: look into tenants' indexes, also while
//! another process writes them (LMDB readers never block the writer).

use super::{Result, ServiceError};
use crate::index::{index_dir, IndexOptions, IndexStats, SearchHit, VectorIndex};
use crate::manifest::{Format, StageKind};
use crate::pipeline::Pipeline;
use crate::policy::Policy;
use crate::record::{Item, Origin, Payload};
use crate::runtime::Runtime;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `tenant/name` split, or an error saying how to name an index.
pub fn split_name(index: &str) -> Result<(&str, &str)> {
    match index.split_once('/') {
        Some((t, n)) if !t.is_empty() && !n.is_empty() && !n.contains('/') => Ok((t, n)),
        _ => Err(ServiceError::Input(format!(
            "name an index as tenant/name, e.g. airline/kb (got `{index}`)"
        ))),
    }
}

/// Opens `tenant/name` under `data_dir` read-only.
pub fn open_read(data_dir: &Path, index: &str) -> Result<VectorIndex> {
    let (tenant, name) = split_name(index)?;
    VectorIndex::open_read_only(&index_dir(data_dir, tenant, name)).map_err(|e| {
        ServiceError::Input(format!(
            "opening index {index} (indexes live under --data-dir {}): {e}",
            data_dir.display()
        ))
    })
}

/// `tenant/name` of every index under the data directory, sorted.
pub fn all_indexes(data_dir: &Path) -> Vec<String> {
    let root = data_dir.join("index");
    let mut out = Vec::new();
    let Ok(tenants) = std::fs::read_dir(&root) else {
        return out;
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
    out
}

/// Figures of the named indexes (all under `data_dir` if none is named).
pub fn stats(data_dir: &Path, names: &[String]) -> Result<Vec<(String, IndexStats)>> {
    let names = if names.is_empty() {
        all_indexes(data_dir)
    } else {
        names.to_vec()
    };
    names
        .into_iter()
        .map(|n| {
            let s = open_read(data_dir, &n)?.stats()?;
            Ok((n, s))
        })
        .collect()
}

/// The manifest whose embedder wrote `ix`, as the index recorded it.
pub fn recorded_manifest(ix: &VectorIndex, index: &str) -> Result<PathBuf> {
    let model = ix.model()?.unwrap_or(serde_json::Value::Null);
    match model["manifest"].as_str() {
        Some(m) if Path::new(m).exists() => Ok(PathBuf::from(m)),
        Some(m) => Err(ServiceError::Input(format!(
            "{index} was written by {m}, which is gone; pass --manifest with the same embedder"
        ))),
        None => Err(ServiceError::Input(format!(
            "{index} does not record its embedder; pass --manifest"
        ))),
    }
}

/// A pipeline of just the first embedder stage of `manifest`, taking
/// questions: it embeds texts exactly as the manifest's pipeline would.
pub fn embedder_pipeline(manifest: &Path, runtime: &Runtime, policy: &Policy) -> Result<Pipeline> {
    let mut m = super::check::load_checked(policy, manifest)?;
    let stage = m
        .stages
        .iter()
        .find(|s| s.kind == StageKind::Embedder)
        .cloned()
        .ok_or_else(|| {
            ServiceError::Input(format!("{} has no embedder stage", manifest.display()))
        })?;
    m.stages = vec![stage];
    m.format = Format::Question;
    m.sink_index = None;
    Ok(Pipeline::new(runtime, m, None)?)
}

/// Embeds texts as questions, in order.
pub fn embed_texts(p: &mut Pipeline, texts: &[String]) -> Result<Vec<Vec<f32>>> {
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
        return Err(ServiceError::Input(format!(
            "embedding text {}: {}",
            d.item.origin.offset + 1,
            d.failure
        )));
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
        return Err(ServiceError::Input(format!(
            "the embedder returned {} vectors for {} texts",
            vectors.len(),
            texts.len()
        )));
    }
    Ok(vectors)
}

/// A search from a shell: what to look for and where.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// `tenant/name`.
    pub index: String,
    pub text: String,
    pub k: usize,
    /// `key=value` equality filters.
    pub filters: Vec<String>,
    /// Embed with this manifest's embedder instead of the recorded one.
    pub manifest: Option<PathBuf>,
}

/// Embeds the text with the index's own embedder (or the given manifest's)
/// and returns the nearest chunks.
pub fn search(
    data_dir: &Path,
    runtime: &Runtime,
    policy: &Policy,
    req: &SearchRequest,
) -> Result<Vec<SearchHit>> {
    let ix = open_read(data_dir, &req.index)?;
    let filter = req
        .filters
        .iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(ServiceError::Input(format!(
                "--filter `{f}`: expected key=value"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    let manifest = match &req.manifest {
        Some(m) => m.clone(),
        None => recorded_manifest(&ix, &req.index)?,
    };
    let mut p = embedder_pipeline(&manifest, runtime, policy)?;
    let vector = embed_texts(&mut p, std::slice::from_ref(&req.text))?
        .pop()
        .ok_or_else(|| ServiceError::Input("the embedder returned nothing".into()))?;
    ix.search(&vector, req.k, &filter)
        .map_err(|e| ServiceError::Input(format!("searching {}: {e}", req.index)))
}

/// What `build` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    /// Items that were pending before the build.
    pub folded: u64,
    pub elapsed: Duration,
}

/// Folds every pending item of `tenant/name` into its trees now (the index
/// must not be open for writing in another process). `progress(done,
/// total)` is called as the build goes.
pub fn build(
    data_dir: &Path,
    index: &str,
    mut progress: impl FnMut(u64, u64),
) -> Result<BuildReport> {
    let (tenant, name) = split_name(index)?;
    let dir = index_dir(data_dir, tenant, name);
    if !dir.exists() {
        return Err(ServiceError::Input(format!(
            "no index {index} under {}",
            data_dir.display()
        )));
    }
    let ix = VectorIndex::open(&dir, IndexOptions::default())?;
    let t0 = Instant::now();
    let before = ix.stats()?.pending;
    ix.build_now_with(|done| progress(done as u64, before))?;
    Ok(BuildReport {
        folded: before,
        elapsed: t0.elapsed(),
    })
}

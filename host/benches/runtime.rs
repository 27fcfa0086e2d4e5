//! `cargo bench -p weft --bench runtime`: what the Wasm sandbox costs, as
//! ratios against native Rust measured in the same run.
//!
//! 1. 1 KiB records through a chain of 4 no-op transform components vs the
//!    same chain as native functions (boundary cost per stage per record);
//! 2. one call with one record (per-call overhead);
//! 3. instantiation from the pre-linked component; compile vs compile-cache hit;
//! 4. the reference chunker natively vs as a component over the sample docs;
//! 5. the CPU meter: epoch deadlines vs fuel on both workloads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::manifest::{Manifest, Stage};
use weft::runtime::bindings::types::{Document, Meta, Record};
use weft::runtime::{CpuMeter, Runtime, StagePlugin, StageShared};

const RECORDS: usize = 100_000;
const BATCH: usize = 256;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn build_plugins() {
    let ok = std::process::Command::new("bash")
        .arg(repo().join("scripts/build-plugins"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "scripts/build-plugins failed");
}

fn stage(dir: &Path, kind: &str, plugin: &str, config: &str) -> Stage {
    let p = repo().join("target/plugins").join(format!("{plugin}.wasm"));
    let text = format!(
        "name = \"bench\"\n[source]\ntopic = \"in\"\n[[stage]]\nname = \"s\"\nkind = \"{kind}\"\nplugin = \"{}\"\nconfig = {{ {config} }}\nlimits = {{ timeout_ms = 10000 }}\n[sink]\ntopic = \"out\"\n",
        p.display()
    );
    let f = dir.join(format!("{plugin}-{kind}.toml"));
    std::fs::write(&f, text).expect("write manifest");
    let m = Manifest::load(&f).expect("bench manifest");
    m.stages[0].clone()
}

fn prepare(rt: &Runtime, s: &Stage) -> StagePlugin {
    let shared = Arc::new(StageShared::new("bench", "bench", s));
    let mut p = rt.prepare(s, shared).expect("prepare");
    p.warm_up().expect("warm up");
    p
}

fn records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            key: Some(format!("key-{i}").into_bytes()),
            value: Some(vec![b'a' + (i % 26) as u8; 1024]),
            headers: vec![],
        })
        .collect()
}

/// The native twin of the no-op component: same signature, same moves.
fn native_noop(records: Vec<Record>) -> Vec<Result<Vec<Record>, String>> {
    records.into_iter().map(|r| Ok(vec![r])).collect()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn chain_native(input: &[Record]) -> Duration {
    let t0 = Instant::now();
    let mut out = 0usize;
    for batch in input.chunks(BATCH) {
        let mut recs = batch.to_vec();
        for _ in 0..4 {
            recs = native_noop(recs)
                .into_iter()
                .flat_map(|r| r.unwrap_or_default())
                .collect();
        }
        out += recs.len();
    }
    assert_eq!(out, input.len());
    t0.elapsed()
}

fn chain_wasm(stages: &mut [StagePlugin], input: &[Record]) -> Duration {
    let t0 = Instant::now();
    let mut out = 0usize;
    for batch in input.chunks(BATCH) {
        let mut recs = batch.to_vec();
        for s in stages.iter_mut() {
            recs = s
                .transform(&recs)
                .expect("noop call")
                .into_iter()
                .flat_map(|r| r.unwrap_or_default())
                .collect();
        }
        out += recs.len();
    }
    assert_eq!(out, input.len());
    t0.elapsed()
}

fn sample_docs(times: usize) -> Vec<Document> {
    let text = std::fs::read_to_string(repo().join("data/airline/docs.jsonl")).expect("docs");
    let mut docs = Vec::new();
    for round in 0..times {
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("doc json");
            docs.push(Document {
                id: format!("{}-{round}", v["id"].as_str().unwrap_or("doc")),
                title: v["title"].as_str().map(str::to_string),
                text: v["text"].as_str().unwrap_or_default().to_string(),
                metadata: vec![Meta {
                    key: "kind".into(),
                    value: v["kind"].as_str().unwrap_or_default().to_string(),
                }],
            });
        }
    }
    docs
}

fn chunk_native(docs: &[Document]) -> (Duration, usize) {
    let cfg = text_chunker::ChunkConfig::chars(600, 80);
    let t0 = Instant::now();
    let mut n = 0;
    for d in docs {
        let meta: Vec<(String, String)> = d
            .metadata
            .iter()
            .map(|m| (m.key.clone(), m.value.clone()))
            .collect();
        n += text_chunker::chunk_document(&d.id, d.title.as_deref(), &d.text, &meta, &cfg)
            .expect("native chunk")
            .len();
    }
    (t0.elapsed(), n)
}

fn chunk_wasm(p: &mut StagePlugin, docs: &[Document]) -> (Duration, usize) {
    let t0 = Instant::now();
    let mut n = 0;
    for batch in docs.chunks(64) {
        for r in p.chunk(batch).expect("chunk call") {
            n += r.expect("chunks").len();
        }
    }
    (t0.elapsed(), n)
}

fn best<T>(runs: usize, mut f: impl FnMut() -> (Duration, T)) -> (Duration, T) {
    let mut best = f();
    for _ in 1..runs {
        let r = f();
        if r.0 < best.0 {
            best = r;
        }
    }
    best
}

fn main() {
    build_plugins();
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let rt = Runtime::new(Some(cache.clone())).expect("runtime");
    println!(
        "weft runtime bench ({} x 1 KiB records, batches of {BATCH}, best of 3)\n",
        RECORDS
    );

    // 1. No-op chain.
    let input = records(RECORDS);
    let noop = stage(dir.path(), "transform", "noop_transform", "");
    let mut chain: Vec<StagePlugin> = (0..4).map(|_| prepare(&rt, &noop)).collect();
    let (native, _) = best(3, || (chain_native(&input), ()));
    let (wasm, _) = best(3, || (chain_wasm(&mut chain, &input), ()));
    let per_stage_ns = (wasm.as_secs_f64() - native.as_secs_f64()) * 1e9 / (RECORDS as f64 * 4.0);
    println!(
        "4 no-op stages, native      {:>12.0} records/s",
        rate(RECORDS, native)
    );
    println!(
        "4 no-op stages, wasm        {:>12.0} records/s",
        rate(RECORDS, wasm)
    );
    println!(
        "  ratio wasm/native         {:>12.3}",
        native.as_secs_f64() / wasm.as_secs_f64()
    );
    println!(
        "  boundary cost             {per_stage_ns:>12.3} us/stage/record x1000 = {:.3} us",
        per_stage_ns / 1000.0
    );

    // 2. Per-call overhead: one 1 KiB record per call.
    let one = records(1);
    let calls = 20_000;
    let t0 = Instant::now();
    for _ in 0..calls {
        let r = chain[0].transform(&one).expect("call");
        std::hint::black_box(r);
    }
    let per_call = t0.elapsed().as_secs_f64() * 1e6 / calls as f64;
    println!("call with 1 record          {per_call:>12.3} us/call");

    // 3. Instantiation and compilation.
    let n = 500;
    let t0 = Instant::now();
    for _ in 0..n {
        chain[0].recycle();
        chain[0].warm_up().expect("instantiate");
    }
    let inst = t0.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("instantiate (pre-linked)    {inst:>12.1} us");
    let chunker_path = repo().join("target/plugins/text_chunker.wasm");
    let cold_rt = Runtime::new(Some(dir.path().join("cold-cache"))).expect("runtime");
    let t0 = Instant::now();
    cold_rt.load_component(&chunker_path).expect("compile");
    let cold = t0.elapsed();
    let t0 = Instant::now();
    cold_rt.load_component(&chunker_path).expect("cache hit");
    let hit = t0.elapsed();
    println!(
        "compile text-chunker        {:>12.1} ms cold, {:.2} ms from the cache ({:.0}x)",
        cold.as_secs_f64() * 1e3,
        hit.as_secs_f64() * 1e3,
        cold.as_secs_f64() / hit.as_secs_f64()
    );

    // 4. Real work: the reference chunker.
    let docs = sample_docs(20);
    let bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    let chunk_stage = stage(
        dir.path(),
        "chunker",
        "text_chunker",
        "max_chars = 600, overlap = 80",
    );
    let mut chunker = prepare(&rt, &chunk_stage);
    let (nat, n_nat) = best(3, || chunk_native(&docs));
    let (wsm, n_wsm) = best(3, || chunk_wasm(&mut chunker, &docs));
    assert_eq!(n_nat, n_wsm, "same chunks natively and as a component");
    println!(
        "\nchunker, native             {:>12.0} docs/s {:>8.1} MB/s",
        rate(docs.len(), nat),
        bytes as f64 / nat.as_secs_f64() / 1e6
    );
    println!(
        "chunker, wasm               {:>12.0} docs/s {:>8.1} MB/s",
        rate(docs.len(), wsm),
        bytes as f64 / wsm.as_secs_f64() / 1e6
    );
    println!(
        "  ratio wasm/native         {:>12.3}",
        nat.as_secs_f64() / wsm.as_secs_f64()
    );

    // 5. CPU meter.
    let fuel_rt = Runtime::with_meter(Some(cache.clone()), CpuMeter::Fuel).expect("fuel runtime");
    let mut fuel_chain: Vec<StagePlugin> = (0..4).map(|_| prepare(&fuel_rt, &noop)).collect();
    let (fuel_noop, _) = best(3, || (chain_wasm(&mut fuel_chain, &input), ()));
    let mut fuel_chunker = prepare(&fuel_rt, &chunk_stage);
    let (fuel_chunk, _) = best(3, || chunk_wasm(&mut fuel_chunker, &docs));
    println!(
        "\nCPU meter: fuel vs epoch    no-op chain {:+.1}%, chunker {:+.1}% time",
        (fuel_noop.as_secs_f64() / wasm.as_secs_f64() - 1.0) * 100.0,
        (fuel_chunk.as_secs_f64() / wsm.as_secs_f64() - 1.0) * 100.0
    );
}

//! `cargo bench -p weft --bench boundary`: where a component's time goes at
//! the Wasm boundary, measured in one process so the ratios hold under load.
//!
//! 1. The reference chunker over the sample documents (×20, batches of 64),
//!    natively (whole, and its splitting alone) and as components: the
//!    shipped build (a span chunker: the host builds the chunks from its
//!    byte ranges), the build of an earlier commit if saved (see
//!    [`BASE_CHUNKER`]), and three probes (a bench-only component of the
//!    `chunk` world, `plugins/text-chunker/examples/boundary_probe.rs`) that
//!    do part of the work each, to split the cost:
//!    `empty` (input crossing + call), `spans` (+ the splitting algorithm in
//!    wasm), `echo` (input and output crossing, no guest work).
//!    The same on long documents (many chunks each), where per-chunk costs
//!    dominate instead of per-document ones.
//!    Every variant is run once per round, round after round, and the best
//!    round of each is kept: a busy machine slows all variants alike.
//! 2. The floor: the fixed cost of one call, and the cost per KiB of string
//!    crossing into and out of a component.
//! 3. Instance allocation: wasmtime's on-demand allocator vs the pooling
//!    allocator: instantiate (= recycle after a trap) and per-call cost.
//!
//! Outputs are checked, not just counted: every component variant that claims
//! to be the chunker must return exactly the native chunks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::manifest::{Manifest, Stage};
use weft::runtime::bindings::types::{Chunk, Document, Meta};
use weft::runtime::{CpuMeter, InstanceAllocator, Runtime, StagePlugin, StageShared};

/// Where a chunker built from an earlier commit is kept for comparison, if
/// at all (any contract: `chunk` or `chunk-spans`). To make it: check out
/// that commit, run `bash scripts/build-plugins`, and copy
/// `target/plugins/text_chunker.wasm` here. `WEFT_BASE_CHUNKER` overrides the
/// path.
const BASE_CHUNKER: &str = "target/bench/text_chunker_base.wasm";

const ROUNDS: usize = 15;
const BATCH: usize = 64;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut std::process::Command, what: &str) {
    let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "{what} failed");
}

/// The shipped plugins, and the probe component (an example, so not shipped).
fn build() -> PathBuf {
    run(
        std::process::Command::new("bash").arg(repo().join("scripts/build-plugins")),
        "scripts/build-plugins",
    );
    run(
        std::process::Command::new(env!("CARGO"))
            .current_dir(repo())
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
                "target/wasm",
                "-p",
                "text-chunker",
                "--example",
                "boundary_probe",
            ]),
        "building the boundary probe",
    );
    repo().join("target/wasm/wasm32-wasip2/release/examples/boundary_probe.wasm")
}

fn stage(dir: &Path, name: &str, plugin: &Path, config: &str) -> Stage {
    let text = format!(
        "name = \"bench\"\n[source]\ntopic = \"in\"\n[[stage]]\nname = \"s\"\nkind = \"chunker\"\nplugin = \"{}\"\nconfig = {{ {config} }}\nlimits = {{ timeout_ms = 10000, memory_mb = 512, max_output_kb = 65536 }}\n[sink]\ntopic = \"out\"\n",
        plugin.display()
    );
    let f = dir.join(format!("{name}.toml"));
    std::fs::write(&f, text).expect("write manifest");
    Manifest::load(&f).expect("bench manifest").stages[0].clone()
}

fn prepare(rt: &Runtime, s: &Stage) -> StagePlugin {
    let shared = Arc::new(StageShared::new("bench", "bench", s));
    let mut p = rt.prepare(s, shared).expect("prepare");
    p.warm_up().expect("warm up");
    p
}

fn doc(id: String, title: Option<String>, text: String, kind: &str) -> Document {
    Document {
        id,
        title,
        text,
        metadata: vec![Meta {
            key: "kind".into(),
            value: kind.to_string(),
        }],
    }
}

/// The sample documents, `times` over (ids made unique), as the runtime bench.
fn sample_docs(times: usize) -> Vec<Document> {
    let text = std::fs::read_to_string(repo().join("data/airline/docs.jsonl")).expect("docs");
    let parsed: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("doc json"))
        .collect();
    let mut docs = Vec::new();
    for round in 0..times {
        for v in &parsed {
            docs.push(doc(
                format!("{}-{round}", v["id"].as_str().unwrap_or("doc")),
                v["title"].as_str().map(str::to_string),
                v["text"].as_str().unwrap_or_default().to_string(),
                v["kind"].as_str().unwrap_or_default(),
            ));
        }
    }
    docs
}

/// Long documents: the sample texts joined as paragraphs, `per_doc` each
/// (about 140 bytes per sample text, so 60 give ~8 KiB and ~15 chunks).
fn long_docs(per_doc: usize, count: usize) -> Vec<Document> {
    let base = sample_docs(1);
    (0..count)
        .map(|n| {
            let text = (0..per_doc)
                .map(|i| base[(n * per_doc + i) % base.len()].text.as_str())
                .collect::<Vec<_>>()
                .join("\n\n");
            doc(format!("long-{n}"), Some(format!("Long {n}")), text, "long")
        })
        .collect()
}

/// What the host receives from a chunker, in a comparable form.
type Flat = (String, String, u32, String, Vec<(String, String)>);

fn flatten(c: &Chunk) -> Flat {
    (
        c.id.clone(),
        c.doc_id.clone(),
        c.seq,
        c.text.clone(),
        c.metadata
            .iter()
            .map(|m| (m.key.clone(), m.value.clone()))
            .collect(),
    )
}

fn native_flat(docs: &[Document], cfg: &text_chunker::ChunkConfig) -> Vec<Flat> {
    let mut out = Vec::new();
    for d in docs {
        let meta: Vec<(String, String)> = d
            .metadata
            .iter()
            .map(|m| (m.key.clone(), m.value.clone()))
            .collect();
        for c in text_chunker::chunk_document(&d.id, d.title.as_deref(), &d.text, &meta, cfg)
            .expect("native chunk")
        {
            out.push((c.id, d.id.clone(), c.seq, c.text, c.metadata));
        }
    }
    out
}

fn wasm_flat(p: &mut StagePlugin, docs: &[Document]) -> Vec<Flat> {
    let mut out = Vec::new();
    for batch in docs.chunks(BATCH) {
        for r in p.chunk(batch).expect("chunk call") {
            out.extend(r.expect("chunks").iter().map(flatten));
        }
    }
    out
}

/// Native: what the runtime bench measures (borrowed documents in, owned
/// chunks out, no doc id copied per chunk).
fn chunk_native(docs: &[Document], cfg: &text_chunker::ChunkConfig) -> usize {
    let mut n = 0;
    for d in docs {
        let meta: Vec<(String, String)> = d
            .metadata
            .iter()
            .map(|m| (m.key.clone(), m.value.clone()))
            .collect();
        n += text_chunker::chunk_document(&d.id, d.title.as_deref(), &d.text, &meta, cfg)
            .expect("native chunk")
            .len();
    }
    n
}

/// Native twin of the probe `spans`: the splitting alone, no chunks built.
fn spans_native(docs: &[Document], cfg: &text_chunker::ChunkConfig) -> usize {
    docs.iter()
        .map(|d| std::hint::black_box(text_chunker::chunk_spans(&d.text, cfg)).len())
        .sum()
}

fn chunk_wasm(p: &mut StagePlugin, docs: &[Document]) -> usize {
    let mut n = 0;
    for batch in docs.chunks(BATCH) {
        for r in p.chunk(batch).expect("chunk call") {
            n += r.expect("chunks").len();
        }
    }
    n
}

/// One row of a comparison: a name and a run that returns a chunk count.
struct Variant<'a> {
    name: String,
    run: Box<dyn FnMut() -> usize + 'a>,
    best: Duration,
}

/// Runs every variant once per round, `rounds` times; keeps each one's best.
fn compare(variants: &mut [Variant<'_>], rounds: usize) {
    for _ in 0..rounds {
        for v in variants.iter_mut() {
            let t0 = Instant::now();
            std::hint::black_box((v.run)());
            v.best = v.best.min(t0.elapsed());
        }
    }
}

fn print_table(title: &str, docs: usize, bytes: usize, variants: &[Variant<'_>]) {
    let native = variants[0].best.as_secs_f64();
    println!("\n{title}");
    println!(
        "  {:<34} {:>10} {:>9} {:>9} {:>8}",
        "variant", "docs/s", "MB/s", "us/doc", "vs native"
    );
    for v in variants {
        let s = v.best.as_secs_f64();
        println!(
            "  {:<34} {:>10.0} {:>9.1} {:>9.3} {:>8.3}",
            v.name,
            docs as f64 / s,
            bytes as f64 / s / 1e6,
            s * 1e6 / docs as f64,
            native / s
        );
    }
}

fn base_chunker() -> Option<PathBuf> {
    let p = std::env::var_os("WEFT_BASE_CHUNKER")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(BASE_CHUNKER));
    p.is_file().then_some(p)
}

/// The chunker section for one document set.
fn chunker_section(rt: &Runtime, dir: &Path, probe: &Path, title: &str, docs: &[Document]) {
    let cfg = text_chunker::ChunkConfig::chars(600, 80);
    let chunker_cfg = "max_chars = 600, overlap = 80";
    let shipped = repo().join("target/plugins/text_chunker.wasm");
    let mut chunker = prepare(rt, &stage(dir, "chunker", &shipped, chunker_cfg));
    let base = base_chunker().map(|p| prepare(rt, &stage(dir, "base", &p, chunker_cfg)));
    let mut probes: Vec<(String, StagePlugin)> = ["empty", "spans", "echo"]
        .iter()
        .map(|m| {
            let s = stage(dir, m, probe, &format!("probe = \"{m}\""));
            (format!("probe `{m}`"), prepare(rt, &s))
        })
        .collect();

    // Same output, byte for byte.
    let want = native_flat(docs, &cfg);
    assert_eq!(
        wasm_flat(&mut chunker, docs),
        want,
        "the component's chunks differ from the native ones"
    );
    let mut base = base;
    if let Some(b) = base.as_mut() {
        assert_eq!(
            wasm_flat(b, docs),
            want,
            "the base component's chunks differ"
        );
    }

    let n_chunks = want.len();
    let mut variants = vec![Variant {
        name: "native chunk_document".into(),
        run: Box::new(|| chunk_native(docs, &cfg)),
        best: Duration::MAX,
    }];
    variants.push(Variant {
        name: "native chunk_spans (split only)".into(),
        run: Box::new(|| spans_native(docs, &cfg)),
        best: Duration::MAX,
    });
    variants.push(Variant {
        name: "component (this build)".into(),
        run: Box::new(|| chunk_wasm(&mut chunker, docs)),
        best: Duration::MAX,
    });
    if let Some(b) = base.as_mut() {
        variants.push(Variant {
            name: "component (base build)".into(),
            run: Box::new(|| chunk_wasm(b, docs)),
            best: Duration::MAX,
        });
    }
    for (name, p) in probes.iter_mut() {
        variants.push(Variant {
            name: name.clone(),
            run: Box::new(|| chunk_wasm(p, docs)),
            best: Duration::MAX,
        });
    }
    compare(&mut variants, ROUNDS);
    let bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    print_table(
        &format!(
            "{title}: {} docs, {n_chunks} chunks, {:.0} bytes/doc, batches of {BATCH}, best of {ROUNDS}",
            docs.len(),
            bytes as f64 / docs.len() as f64
        ),
        docs.len(),
        bytes,
        &variants,
    );
}

/// Microseconds per call of `f`, best of `rounds` runs of `calls` calls.
fn per_call(rounds: usize, calls: usize, mut f: impl FnMut()) -> f64 {
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let t0 = Instant::now();
        for _ in 0..calls {
            f();
        }
        best = best.min(t0.elapsed());
    }
    best.as_secs_f64() * 1e6 / calls as f64
}

/// The floor: the fixed cost of a call and the cost per KiB crossing in
/// (`empty` probe: the host lowers the documents, the guest drops them) and
/// out (`echo` minus `empty`: the host lifts the same text back).
fn floor_section(rt: &Runtime, dir: &Path, probe: &Path) {
    let mut empty = prepare(rt, &stage(dir, "f-empty", probe, "probe = \"empty\""));
    let mut echo = prepare(rt, &stage(dir, "f-echo", probe, "probe = \"echo\""));
    println!("\nthe floor (probe components, best of 5)");
    let none: Vec<Document> = Vec::new();
    let call = per_call(5, 20_000, || {
        std::hint::black_box(empty.chunk(&none).expect("call"));
    });
    println!("  call with an empty batch             {call:>9.3} us");
    let tiny = vec![doc("d".into(), None, "x".into(), "k")];
    let one = per_call(5, 20_000, || {
        std::hint::black_box(echo.chunk(&tiny).expect("call"));
    });
    println!("  echo one 1-byte document             {one:>9.3} us");

    // Per document of `kib` KiB: 16 documents per call.
    let per_doc = |p: &mut StagePlugin, kib: usize| {
        let text: String = "lorem ipsum dolor sit amet, "
            .chars()
            .cycle()
            .take(kib * 1024)
            .collect();
        let docs: Vec<Document> = (0..16)
            .map(|i| doc(format!("d{i}"), None, text.clone(), "k"))
            .collect();
        per_call(5, 200, || {
            std::hint::black_box(p.chunk(&docs).expect("call"));
        }) / docs.len() as f64
    };
    let (in1, in64) = (per_doc(&mut empty, 1), per_doc(&mut empty, 64));
    let (io1, io64) = (per_doc(&mut echo, 1), per_doc(&mut echo, 64));
    let kib_in = (in64 - in1) / 63.0;
    let kib_out = ((io64 - in64) - (io1 - in1)) / 63.0;
    println!(
        "  per document (16/call), 1 / 64 KiB: in {in1:.3} / {in64:.3} us, in+out {io1:.3} / {io64:.3} us"
    );
    println!(
        "  per KiB into the guest               {:>9.1} ns ({:.2} GB/s)",
        kib_in * 1e3,
        1024.0 / (kib_in * 1e3)
    );
    println!(
        "  per KiB out of the guest             {:>9.1} ns ({:.2} GB/s)",
        kib_out * 1e3,
        1024.0 / (kib_out * 1e3)
    );
}

/// On-demand vs pooling instance allocation, same engine settings otherwise.
fn allocator_section(dir: &Path, cache: &Path) {
    let shipped = repo().join("target/plugins/text_chunker.wasm");
    let s = stage(dir, "alloc", &shipped, "max_chars = 600, overlap = 80");
    let docs = sample_docs(20);
    println!("\ninstance allocation (text chunker; best of 5)");
    println!(
        "  {:<12} {:>16} {:>22} {:>14}",
        "allocator", "instantiate us", "first call after, us", "docs/s"
    );
    let mut rows = Vec::new();
    for alloc in [InstanceAllocator::OnDemand, InstanceAllocator::Pooling] {
        let rt = Runtime::with_allocator(Some(cache.to_path_buf()), CpuMeter::Epoch, alloc)
            .expect("runtime");
        let mut p = prepare(&rt, &s);
        let few = &docs[..BATCH];
        // Recycle as after a trap, then instantiate (warm_up) and make one call:
        // a fresh instance's first call also pays its first page faults.
        let inst = per_call(5, 300, || {
            p.recycle();
            p.warm_up().expect("instantiate");
        });
        let first = per_call(5, 300, || {
            p.recycle();
            p.warm_up().expect("instantiate");
            std::hint::black_box(p.chunk(few).expect("call"));
        }) - inst;
        rows.push((alloc, inst, first, p));
    }
    // Throughput interleaved, like the chunker table.
    let mut best = [Duration::MAX; 2];
    for _ in 0..ROUNDS {
        for (i, row) in rows.iter_mut().enumerate() {
            let t0 = Instant::now();
            std::hint::black_box(chunk_wasm(&mut row.3, &docs));
            best[i] = best[i].min(t0.elapsed());
        }
    }
    for ((alloc, inst, first, _), b) in rows.iter().zip(best) {
        println!(
            "  {:<12} {inst:>16.1} {first:>22.1} {:>14.0}",
            format!("{alloc:?}"),
            docs.len() as f64 / b.as_secs_f64()
        );
    }
}

/// `WEFT_BENCH_PROFILE=<seconds>`: only the shipped chunker component over
/// the long documents (the sample ones with `WEFT_BENCH_PROFILE_DOCS=sample`),
/// in a loop, for a profiler (`perf record`) to see the component alone.
fn profile_loop(rt: &Runtime, dir: &Path, run_for: Duration) {
    let shipped = repo().join("target/plugins/text_chunker.wasm");
    let mut chunker = prepare(
        rt,
        &stage(dir, "chunker", &shipped, "max_chars = 600, overlap = 80"),
    );
    let docs = match std::env::var("WEFT_BENCH_PROFILE_DOCS").as_deref() {
        Ok("sample") => sample_docs(20),
        _ => long_docs(60, 200),
    };
    let t0 = Instant::now();
    let mut rounds = 0u64;
    while t0.elapsed() < run_for {
        std::hint::black_box(chunk_wasm(&mut chunker, &docs));
        rounds += 1;
    }
    let per_doc = t0.elapsed().as_secs_f64() * 1e6 / (rounds as f64 * docs.len() as f64);
    println!(
        "profile loop: {rounds} rounds of {} docs, {per_doc:.2} us/doc",
        docs.len()
    );
}

fn main() {
    let probe = build();
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let rt = Runtime::new(Some(cache.clone())).expect("runtime");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "weft boundary bench; load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    if base_chunker().is_none() {
        println!("(no base chunker at {BASE_CHUNKER}: the base row is left out)");
    }
    if let Some(secs) = std::env::var("WEFT_BENCH_PROFILE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        profile_loop(&rt, dir.path(), Duration::from_secs(secs));
        return;
    }
    chunker_section(&rt, dir.path(), &probe, "sample docs ×20", &sample_docs(20));
    chunker_section(&rt, dir.path(), &probe, "long docs", &long_docs(60, 200));
    floor_section(&rt, dir.path(), &probe);
    allocator_section(dir.path(), &cache);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nload average at end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

//! `cargo bench -p weft --bench runtime`: what the Wasm sandbox costs, as
//! ratios against native Rust measured in the same run, timed by criterion
//! (warm-up, sampling, outlier analysis) instead of hand-rolled loops.
//!
//! Benchmarks (criterion ids `group/name`):
//! 1. `chain/{native,wasm,wasm-fuel}`: one batch of 256 × 1 KiB records
//!    through 4 no-op transform stages, as native functions and as
//!    components (boundary cost per stage per record);
//! 2. `call/{native,wasm}`: one call with one 1 KiB record (per-call cost);
//! 3. `instantiate/wasm`: a fresh instance from the pre-linked component;
//!    `compile/{cold,cache-hit}`: compiling the text chunker, and loading it
//!    from the compile cache;
//! 4. `chunker/{native,wasm,wasm-fuel}`: the reference chunker over the
//!    sample docs (312), natively and as a component;
//! 5. the CPU meter: the `wasm-fuel` rows run on a fuel-metered runtime,
//!    the `wasm` rows on the default (epoch deadlines).
//!
//! After criterion's own report, a summary table gives the ratios. Its
//! figures come from the very samples criterion measured (each
//! `iter_custom` call is recorded; the last `sample_size` calls of a
//! benchmark are its measurement samples, the earlier ones its warm-up):
//! the median over samples of the time per iteration.
//!
//! Quick run: `WEFT_BENCH_QUICK=1 cargo bench -p weft --bench runtime`
//! (short warm-up and measurement, 10 samples); a criterion filter such as
//! `-- chain` runs one group (the summary shows what ran). Criterion's own
//! `--quick` changes the number of samples, so use `WEFT_BENCH_QUICK`.

mod support;

use criterion::{Criterion, SamplingMode, Throughput};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{ratio, Latencies, LoadMeter};
use weft::manifest::{Manifest, Stage};
use weft::runtime::bindings::types::{Document, Meta, Record};
use weft::runtime::{CpuMeter, Runtime, StagePlugin, StageShared};

const BATCH: usize = 256;
/// Documents per chunker call, as the ingest pipeline's batches.
const CHUNK_BATCH: usize = 64;

fn stage(dir: &Path, kind: &str, plugin: &str, config: &str) -> Stage {
    let p = support::repo()
        .join("target/plugins")
        .join(format!("{plugin}.wasm"));
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

/// One batch through 4 native no-op stages (the input is cloned, as the
/// Wasm chain's is).
fn chain_native(batch: &[Record]) -> usize {
    let mut recs = batch.to_vec();
    for _ in 0..4 {
        recs = native_noop(recs)
            .into_iter()
            .flat_map(|r| r.unwrap_or_default())
            .collect();
    }
    recs.len()
}

fn chain_wasm(stages: &mut [StagePlugin], batch: &[Record]) -> usize {
    let mut recs = batch.to_vec();
    for s in stages.iter_mut() {
        recs = s
            .transform(&recs)
            .expect("noop call")
            .into_iter()
            .flat_map(|r| r.unwrap_or_default())
            .collect();
    }
    recs.len()
}

fn sample_docs() -> Vec<Document> {
    let text =
        std::fs::read_to_string(support::repo().join("data/airline/docs.jsonl")).expect("docs");
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("doc json");
            Document {
                id: v["id"].as_str().unwrap_or("doc").to_string(),
                title: v["title"].as_str().map(str::to_string),
                text: v["text"].as_str().unwrap_or_default().to_string(),
                metadata: vec![Meta {
                    key: "kind".into(),
                    value: v["kind"].as_str().unwrap_or_default().to_string(),
                }],
            }
        })
        .collect()
}

fn chunk_native(docs: &[Document]) -> usize {
    let cfg = text_chunker::ChunkConfig::chars(600, 80);
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
    n
}

fn chunk_wasm(p: &mut StagePlugin, docs: &[Document]) -> usize {
    let mut n = 0;
    for batch in docs.chunks(CHUNK_BATCH) {
        for r in p.chunk(batch).expect("chunk call") {
            n += r.expect("chunks").len();
        }
    }
    n
}

/// The `(iterations, elapsed)` of every call criterion made, in order.
type Calls = Vec<(u64, Duration)>;

/// Every call criterion made of each benchmark, by id.
#[derive(Clone, Default)]
struct Recorder(Rc<RefCell<BTreeMap<String, Calls>>>);

impl Recorder {
    /// Runs `f` `iters` times, timing the loop, and records the result.
    fn run(&self, id: &str, iters: u64, mut f: impl FnMut()) -> Duration {
        let t0 = Instant::now();
        for _ in 0..iters {
            f();
        }
        let d = t0.elapsed();
        self.add(id, iters, d);
        d
    }

    fn add(&self, id: &str, iters: u64, d: Duration) {
        self.0
            .borrow_mut()
            .entry(id.to_string())
            .or_default()
            .push((iters, d));
    }

    /// The median over the measurement samples (the last `samples` calls)
    /// of the time per iteration, in ns; `None` if the benchmark did not run.
    fn median_ns(&self, id: &str, samples: usize) -> Option<f64> {
        let all = self.0.borrow();
        let calls = all.get(id)?;
        let mut h = Latencies::new();
        for (iters, d) in calls.iter().skip(calls.len().saturating_sub(samples)) {
            h.record_ns(d.as_nanos() as f64 / (*iters).max(1) as f64);
        }
        (!h.is_empty()).then(|| h.quantile_ns(0.5))
    }
}

/// Criterion settings: the defaults (100 samples, 3 s warm-up, 5 s
/// measurement), or a short run with `WEFT_BENCH_QUICK=1`.
struct Plan {
    quick: bool,
    samples: usize,
}

impl Plan {
    fn from_env() -> Plan {
        let quick = support::env_or("WEFT_BENCH_QUICK", 0u8).expect("WEFT_BENCH_QUICK") != 0;
        Plan {
            quick,
            samples: if quick { 10 } else { 100 },
        }
    }

    fn criterion(&self) -> Criterion {
        let c = Criterion::default().sample_size(self.samples);
        let c = if self.quick {
            c.warm_up_time(Duration::from_millis(300))
                .measurement_time(Duration::from_secs(1))
        } else {
            c
        };
        c.configure_from_args()
    }
}

fn main() {
    support::build_plugins().expect("scripts/build-plugins");
    let plan = Plan::from_env();
    let load = LoadMeter::start("runtime bench");
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let rt = Runtime::new(Some(cache.clone())).expect("runtime");
    let fuel_rt = Runtime::with_meter(Some(cache.clone()), CpuMeter::Fuel).expect("fuel runtime");
    let rec = Recorder::default();
    let mut c = plan.criterion();

    // 1. No-op chain.
    let batch = records(BATCH);
    let noop = stage(dir.path(), "transform", "noop_transform", "");
    let mut chain: Vec<StagePlugin> = (0..4).map(|_| prepare(&rt, &noop)).collect();
    let mut fuel_chain: Vec<StagePlugin> = (0..4).map(|_| prepare(&fuel_rt, &noop)).collect();
    assert_eq!(chain_native(&batch), chain_wasm(&mut chain, &batch));
    {
        let mut g = c.benchmark_group("chain");
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function("native", |b| {
            b.iter_custom(|n| {
                rec.run("chain/native", n, || {
                    black_box(chain_native(black_box(&batch)));
                })
            })
        });
        g.bench_function("wasm", |b| {
            b.iter_custom(|n| {
                rec.run("chain/wasm", n, || {
                    black_box(chain_wasm(&mut chain, black_box(&batch)));
                })
            })
        });
        g.bench_function("wasm-fuel", |b| {
            b.iter_custom(|n| {
                rec.run("chain/wasm-fuel", n, || {
                    black_box(chain_wasm(&mut fuel_chain, black_box(&batch)));
                })
            })
        });
        g.finish();
    }

    // 2. Per-call cost: one 1 KiB record per call.
    let one = records(1);
    {
        let mut g = c.benchmark_group("call");
        g.bench_function("native", |b| {
            b.iter_custom(|n| {
                rec.run("call/native", n, || {
                    black_box(native_noop(black_box(&one).to_vec()));
                })
            })
        });
        g.bench_function("wasm", |b| {
            b.iter_custom(|n| {
                rec.run("call/wasm", n, || {
                    black_box(chain[0].transform(black_box(&one)).expect("call"));
                })
            })
        });
        g.finish();
    }

    // 3. Instantiation and compilation.
    let chunker_path = support::repo().join("target/plugins/text_chunker.wasm");
    {
        let mut g = c.benchmark_group("instantiate");
        g.bench_function("wasm", |b| {
            b.iter_custom(|n| {
                rec.run("instantiate/wasm", n, || {
                    chain[0].recycle();
                    chain[0].warm_up().expect("instantiate");
                })
            })
        });
        g.finish();
        let mut g = c.benchmark_group("compile");
        // ~100 ms per iteration: few, equal-sized samples.
        g.sampling_mode(SamplingMode::Flat).sample_size(10);
        let mut fresh = 0u64;
        g.bench_function("cold", |b| {
            b.iter_custom(|n| {
                // A new runtime with an empty cache directory per compile;
                // only the compile is timed.
                let mut total = Duration::ZERO;
                for _ in 0..n {
                    fresh += 1;
                    let cold = Runtime::new(Some(dir.path().join(format!("cold-{fresh}"))))
                        .expect("runtime");
                    let t0 = Instant::now();
                    black_box(cold.load_component(&chunker_path).expect("compile"));
                    total += t0.elapsed();
                }
                rec.add("compile/cold", n, total);
                total
            })
        });
        rt.load_component(&chunker_path).expect("fill the cache");
        g.bench_function("cache-hit", |b| {
            b.iter_custom(|n| {
                rec.run("compile/cache-hit", n, || {
                    black_box(rt.load_component(&chunker_path).expect("cache hit"));
                })
            })
        });
        g.finish();
    }

    // 4. Real work: the reference chunker.
    let docs = sample_docs();
    let bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    let chunk_stage = stage(
        dir.path(),
        "chunker",
        "text_chunker",
        "max_chars = 600, overlap = 80",
    );
    let mut chunker = prepare(&rt, &chunk_stage);
    let mut fuel_chunker = prepare(&fuel_rt, &chunk_stage);
    assert_eq!(
        chunk_native(&docs),
        chunk_wasm(&mut chunker, &docs),
        "same chunks natively and as a component"
    );
    {
        let mut g = c.benchmark_group("chunker");
        g.throughput(Throughput::Elements(docs.len() as u64));
        g.bench_function("native", |b| {
            b.iter_custom(|n| {
                rec.run("chunker/native", n, || {
                    black_box(chunk_native(black_box(&docs)));
                })
            })
        });
        g.bench_function("wasm", |b| {
            b.iter_custom(|n| {
                rec.run("chunker/wasm", n, || {
                    black_box(chunk_wasm(&mut chunker, black_box(&docs)));
                })
            })
        });
        g.bench_function("wasm-fuel", |b| {
            b.iter_custom(|n| {
                rec.run("chunker/wasm-fuel", n, || {
                    black_box(chunk_wasm(&mut fuel_chunker, black_box(&docs)));
                })
            })
        });
        g.finish();
    }
    c.final_summary();

    // The summary: ratios from the same samples.
    let m = |id: &str| {
        let samples = if id.starts_with("compile/") {
            10
        } else {
            plan.samples
        };
        rec.median_ns(id, samples)
    };
    println!(
        "\n== runtime bench summary (median time per iteration over criterion's {} samples{})\n",
        plan.samples,
        if plan.quick { ", WEFT_BENCH_QUICK" } else { "" }
    );
    println!("| | native | wasm | ratio |\n|---|---|---|---|");
    let rate = |per_iter_ns: f64, items: usize| items as f64 * 1e9 / per_iter_ns;
    if let (Some(n), Some(w)) = (m("chain/native"), m("chain/wasm")) {
        println!(
            "| 4 no-op stages, 1 KiB records, batches of {BATCH} (records/s) | {:.0} | {:.0} | {:.3} (wasm rate / native rate) |",
            rate(n, BATCH),
            rate(w, BATCH),
            n / w
        );
        println!(
            "| boundary cost per stage per record (batched) | | {:.3} µs | |",
            (w - n) / (BATCH as f64 * 4.0) / 1e3
        );
    }
    if let (Some(n), Some(w)) = (m("call/native"), m("call/wasm")) {
        println!(
            "| one call with one 1 KiB record | {:.3} µs | {:.3} µs | {} the native time |",
            n / 1e3,
            w / 1e3,
            ratio(w, n)
        );
    }
    if let Some(i) = m("instantiate/wasm") {
        println!(
            "| instantiate from the pre-linked component | | {:.1} µs | |",
            i / 1e3
        );
    }
    if let (Some(cold), Some(hit)) = (m("compile/cold"), m("compile/cache-hit")) {
        println!(
            "| compile the text chunker: cold vs compile-cache hit | | {:.1} ms vs {:.2} ms | {} faster from the cache |",
            cold / 1e6,
            hit / 1e6,
            ratio(cold, hit)
        );
    }
    if let (Some(n), Some(w)) = (m("chunker/native"), m("chunker/wasm")) {
        println!(
            "| reference chunker, {} sample docs, {:.0} KB (docs/s) | {:.0} | {:.0} | **{:.3}** (wasm rate / native rate) |",
            docs.len(),
            bytes as f64 / 1e3,
            rate(n, docs.len()),
            rate(w, docs.len()),
            n / w
        );
    }
    let fuel = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(f), Some(e)) => format!("{:+.1} %", (f / e - 1.0) * 100.0),
        _ => "-".into(),
    };
    println!(
        "| CPU meter: fuel instead of epochs, time | | no-op chain {}, chunker {} | |",
        fuel(m("chain/wasm-fuel"), m("chain/wasm")),
        fuel(m("chunker/wasm-fuel"), m("chunker/wasm"))
    );
    println!("\n{}", load.report());
}

//! `cargo bench -p weft --bench index`: the vector index (LMDB + arroy,
//! cosine) against exact brute force measured in the same run.
//!
//! Data: N unit vectors of dimension 384 (N = 100 000; `WEFT_BENCH_N`
//! overrides it, e.g. 5000 for a smoke run), drawn from
//! `StdRng::seed_from_u64(SEED)`: Gaussian components (Box-Muller),
//! normalised, so uniform on the sphere. Vector n is the only chunk `d<n>#0`
//! of document `d<n>`, with metadata `kind = a|b|c` (n % 3: a third each) and
//! `bucket = 0..99` (n % 100: 1 % each). Uniform random vectors are the hard
//! case for any approximate index (all distances look alike); real
//! embeddings are clustered and do better, so `WEFT_BENCH_DATA=clustered`
//! draws every vector (and query) instead around one of N / 50 random
//! centroids: centroid plus Gaussian noise of norm 1, normalised (cosine
//! ~0.7 to its centroid, ~0.5 between two points of a cluster, ~0 across).
//!
//! 1. load: apply in batches of 1000 with the background builder off, then
//!    one full `build_now()` with 1 build thread, and with 2 on a copy;
//! 2. search, k = 10, no filter, 1000 queries of each set: random (fresh
//!    points from the same distribution as the data), and near duplicates
//!    (an indexed vector plus Gaussian noise of norm 0.3: cosine ~0.96 to
//!    its source), against the baseline, a single-threaded exact scan over a
//!    flat `Vec<f32>` with a top-10 heap in this process; recall@10 =
//!    |index top 10 ∩ exact top 10| / 10. A slow set stops after 10 s (at
//!    least 100 queries); the `queries` column says how many ran;
//! 3. filtered search across selectivities (0.1 % .. 100 %: metadata
//!    `s1000`, `s300`, `bucket`, `s30`, `s10`, `kind`, `half`, `all`), each
//!    answered both ways on the same index: the exact scan of the filter's
//!    matches (`IndexOptions::exact_filter_below` above the share) and
//!    arroy with the matches as candidates (below it), against an exact
//!    scan of the matching items (latency p50/p99 and recall@10);
//! 4. the pending delta: P items applied after the build and not built (so
//!    scanned exactly and merged with the trees) for P = 0 .. 10 000, the
//!    random queries, the pending items taking part in the exact truth: what
//!    `IndexOptions::max_pending` trades;
//! 5. incremental builds: fold those 10 000, then 10, 100 and 1000 new items
//!    on top of the full index;
//! 6. tree count: unbuilt copies of the loaded index built with
//!    `IndexOptions::trees` = each of `WEFT_BENCH_TREES` (default 64,32),
//!    against arroy's own pick: build time, size, rate and recall;
//! 7. a bulk load: N / 5 items built and the rest pending, searched from a
//!    read-only child process of this benchmark (what a query process sees
//!    while the trees catch up) and from the writer (`WEFT_BENCH_ONLY=bulk`
//!    runs this section alone);
//! 8. an HNSW library on the same N vectors (`hnsw_rs`, in memory, cosine,
//!    M = 16, ef_construction = 200, hnswlib's usual settings): insertion
//!    rate on 1 thread and on every core, next to the trees' build rate of
//!    section 1, and its search rate and recall@10 on the random queries at
//!    ef_search 64 and 200 (`WEFT_BENCH_HNSW=0` skips it).

mod support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};
use weft::index::{ChunkIn, DocOp, IndexOptions, IndexStats, SearchHit, VectorIndex};

const DIM: usize = 384;
const SEED: u64 = 0x00C0_FFEE;
const DEFAULT_N: usize = 100_000;
const BATCH: usize = 1000;
const QUERIES: usize = 1000;
const WARMUP: usize = 20;
/// A slow query set stops after this long (once `MIN_QUERIES` ran), so the
/// whole run stays within a few minutes; its rate and recall are over the
/// queries that ran.
const SET_BUDGET: Duration = Duration::from_secs(10);
const MIN_QUERIES: usize = 100;
const K: usize = 10;
/// Norm of the noise added to an indexed vector for a near-duplicate query.
const NOISE: f32 = 0.3;
/// Clustered data: items per centroid, and the norm of a point's noise.
const CLUSTER_SIZE: usize = 50;
const SPREAD: f32 = 1.0;
/// Filters of section 3: key, 1 in how many items match `key = 0` (`kind =
/// a` for 3), label.
const SELECTIVITY: [(&str, u32, &str); 8] = [
    ("s1000", 1000, "0.1 %"),
    ("s300", 300, "0.33 %"),
    ("bucket", 100, "1 %"),
    ("s30", 30, "3.3 %"),
    ("s10", 10, "10 %"),
    ("kind", 3, "33 %"),
    ("half", 2, "50 %"),
    ("all", 1, "100 %"),
];
/// Queries per filter and path in section 3 (the slow path stops earlier,
/// see `SET_BUDGET`).
const FILTER_QUERIES: usize = 300;
/// Queries the reader process of section 7 runs.
const READER_QUERIES: usize = 300;
const PENDING: [usize; 5] = [0, 1000, 2000, 5000, 10_000];
const INCREMENTS: [usize; 3] = [10, 100, 1000];
/// A pending level is acceptable while search keeps this share of the
/// fully built index's rate.
const KEEP: f64 = 0.5;

// ---------------------------------------------------------------- data

struct Vectors {
    dim: usize,
    data: Vec<f32>,
}

impl Vectors {
    fn row(&self, i: u32) -> &[f32] {
        let i = i as usize;
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

fn gaussian(rng: &mut StdRng) -> f32 {
    // 1 - u is in (0, 1], so the logarithm is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let n = dot(&v, &v).sqrt();
    for x in &mut v {
        *x /= n;
    }
    v
}

fn unit(rng: &mut StdRng) -> Vec<f32> {
    normalise((0..DIM).map(|_| gaussian(rng)).collect())
}

/// `v` plus Gaussian noise of (expected) norm `norm`, normalised.
fn jitter(rng: &mut StdRng, v: &[f32], norm: f32) -> Vec<f32> {
    let s = norm / (DIM as f32).sqrt();
    normalise(v.iter().map(|x| x + s * gaussian(rng)).collect())
}

/// Where the data and the random queries come from.
enum Points {
    Uniform,
    Clustered(Vec<Vec<f32>>),
}

impl Points {
    fn next(&self, rng: &mut StdRng) -> Vec<f32> {
        match self {
            Points::Uniform => unit(rng),
            Points::Clustered(c) => {
                let centre = &c[rng.random_range(0..c.len())];
                jitter(rng, centre, SPREAD)
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Points::Uniform => "random unit vectors (Gaussian, normalised)".into(),
            Points::Clustered(c) => format!(
                "clustered: {} random centroids, point = centroid + Gaussian noise of norm {SPREAD}, normalised",
                c.len()
            ),
        }
    }
}

fn kind(n: u32) -> &'static str {
    ["a", "b", "c"][n as usize % 3]
}

fn op(n: u32, v: &[f32]) -> DocOp {
    let doc = format!("d{n}");
    DocOp::Upsert {
        chunks: vec![ChunkIn {
            chunk_id: format!("{doc}#0"),
            text: format!("chunk {n}: benchmark text"),
            metadata: {
                let mut m = vec![("kind".into(), kind(n).into())];
                for (key, every, _) in SELECTIVITY {
                    if key != "kind" {
                        m.push((key.into(), (n % every).to_string()));
                    }
                }
                m
            },
            vector: v.to_vec(),
            model: None,
            source: None,
        }],
        doc_id: doc,
    }
}

fn apply_range(ix: &VectorIndex, vecs: &Vectors, from: u32, to: u32) -> Duration {
    let t0 = Instant::now();
    let mut n = from;
    while n < to {
        let end = (n + BATCH as u32).min(to);
        let ops: Vec<DocOp> = (n..end).map(|i| op(i, vecs.row(i))).collect();
        let r = ix.apply(&ops).expect("apply");
        assert!(r.rejected.is_empty(), "rejected: {:?}", r.rejected);
        assert_eq!(r.applied.items_added, u64::from(end - n));
        n = end;
    }
    t0.elapsed()
}

fn id_of(hit: &SearchHit) -> u32 {
    hit.doc_id
        .strip_prefix('d')
        .and_then(|s| s.parse().ok())
        .expect("benchmark doc ids are d<n>")
}

// ---------------------------------------------------------- brute force

/// Dot product with 8 independent sums, so the compiler can vectorise it
/// (a plain `.sum()` cannot be reordered). The vectors are unit length, so
/// this is the cosine.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0f32; 8];
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// (score, id), ordered so the heap's top is the worst kept candidate.
#[derive(PartialEq)]
struct Cand(f32, u32);
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.total_cmp(&self.0).then(self.1.cmp(&o.1))
    }
}

/// The exact top `K` of `ids` for `q`, best first.
fn exact(vecs: &Vectors, ids: impl Iterator<Item = u32>, q: &[f32]) -> Vec<(f32, u32)> {
    let mut heap: BinaryHeap<Cand> = BinaryHeap::with_capacity(K + 1);
    for id in ids {
        let s = dot(q, vecs.row(id));
        if heap.len() < K {
            heap.push(Cand(s, id));
        } else if heap.peek().is_some_and(|w| s > w.0) {
            heap.pop();
            heap.push(Cand(s, id));
        }
    }
    heap.into_sorted_vec()
        .into_iter()
        .map(|Cand(s, id)| (s, id))
        .collect()
}

fn merge(a: &[(f32, u32)], b: &[(f32, u32)]) -> Vec<(f32, u32)> {
    let mut all: Vec<(f32, u32)> = a.iter().chain(b).copied().collect();
    all.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    all.truncate(K);
    all
}

/// Queries/s of the exact scan over `ids` (a fresh iterator per query), and
/// its answers.
fn run_exact<I: Iterator<Item = u32>>(
    vecs: &Vectors,
    qs: &[Vec<f32>],
    ids: impl Fn() -> I,
) -> (f64, Vec<Vec<(f32, u32)>>) {
    let t0 = Instant::now();
    let out: Vec<_> = qs
        .iter()
        .map(|q| black_box(exact(vecs, ids(), black_box(q))))
        .collect();
    (qs.len() as f64 / t0.elapsed().as_secs_f64(), out)
}

// ---------------------------------------------------------------- index

fn run_index(
    ix: &VectorIndex,
    qs: &[Vec<f32>],
    filter: &[(String, String)],
) -> (f64, Vec<Vec<u32>>) {
    let (qps, ids, _) = run_index_timed(ix, qs, filter);
    (qps, ids)
}

/// [`run_index`] that also returns each query's latency in ms.
fn run_index_timed(
    ix: &VectorIndex,
    qs: &[Vec<f32>],
    filter: &[(String, String)],
) -> (f64, Vec<Vec<u32>>, Vec<f64>) {
    for q in qs.iter().take(WARMUP) {
        black_box(ix.search(q, K, filter).expect("search"));
    }
    let t0 = Instant::now();
    let mut hits: Vec<Vec<SearchHit>> = Vec::with_capacity(qs.len());
    let mut lat = Vec::with_capacity(qs.len());
    for q in qs {
        let t = Instant::now();
        hits.push(black_box(
            ix.search(black_box(q), K, filter).expect("search"),
        ));
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        if hits.len() >= MIN_QUERIES && t0.elapsed() > SET_BUDGET {
            break;
        }
    }
    let qps = hits.len() as f64 / t0.elapsed().as_secs_f64();
    let ids = hits.iter().map(|h| h.iter().map(id_of).collect()).collect();
    (qps, ids, lat)
}

/// The `p`-th percentile (0..=100) of `v` (milliseconds), from the one
/// percentile implementation the benches share (HdrHistogram, within 0.1 %).
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut l = support::Latencies::new();
    for ms in v {
        l.record_ns(ms * 1e6);
    }
    l.quantile_ms(p / 100.0)
}

fn recall(got: &[Vec<u32>], truth: &[Vec<(f32, u32)>]) -> f64 {
    let mut sum = 0.0;
    for (g, t) in got.iter().zip(truth) {
        if t.is_empty() {
            sum += 1.0;
            continue;
        }
        let found = t.iter().filter(|(_, id)| g.contains(id)).count();
        sum += found as f64 / t.len() as f64;
    }
    sum / got.len().max(1) as f64
}

fn manual(threads: usize) -> IndexOptions {
    IndexOptions {
        max_pending: u64::MAX,
        idle_build: Duration::from_secs(3600),
        max_age: Duration::from_secs(3600),
        build_threads: threads,
        ..IndexOptions::default()
    }
}

fn timed_build(ix: &VectorIndex) -> f64 {
    let t0 = Instant::now();
    ix.build_now().expect("build");
    t0.elapsed().as_secs_f64()
}

fn stats(ix: &VectorIndex) -> IndexStats {
    ix.stats().expect("stats")
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Copies a quiescent index (every write committed, no build running) to
/// `to`; LMDB makes a fresh lock file at open.
fn copy_index(from: &Path, to: &Path) {
    for env in ["store", "trees"] {
        std::fs::create_dir_all(to.join(env)).expect("mkdir");
        std::fs::copy(
            from.join(env).join("data.mdb"),
            to.join(env).join("data.mdb"),
        )
        .expect("copy index");
    }
}

fn progress(what: &str) {
    eprintln!("  .. {what}");
}

/// Reader side of section 7, run in a child process (`WEFT_BENCH_READER =
/// "<index dir>|<queries file>|<sketches 0/1>"`, queries as little-endian
/// f32 rows): opens the index read-only, as a query process beside the
/// writer does, and prints one line per query: latency in ms, then the hit
/// ids.
fn reader_child(spec: &str) {
    let mut parts = spec.split('|');
    let (Some(dir), Some(qfile), Some(sk)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("WEFT_BENCH_READER: dir|queries|sketches");
    };
    let bytes = std::fs::read(qfile).expect("queries");
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let qs: Vec<&[f32]> = floats.chunks_exact(DIM).collect();
    let opts = IndexOptions {
        pending_sketches: sk == "1",
        ..IndexOptions::default()
    };
    let ix = VectorIndex::open_read_only_with(Path::new(dir), opts).expect("open read-only");
    for q in qs.iter().take(WARMUP) {
        black_box(ix.search(q, K, &[]).expect("search"));
    }
    for q in qs {
        let t = Instant::now();
        let hits = black_box(ix.search(black_box(q), K, &[]).expect("search"));
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let ids: Vec<String> = hits.iter().map(|h| id_of(h).to_string()).collect();
        println!("{ms} {}", ids.join(","));
    }
}

/// Runs [`reader_child`] in a new process of this benchmark: latencies
/// (ms) and hit ids per query.
fn run_reader(dir: &Path, qs: &[Vec<f32>], sketches: bool) -> (Vec<f64>, Vec<Vec<u32>>) {
    let qfile = dir.join("bench-queries.f32");
    let bytes: Vec<u8> = qs.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&qfile, bytes).expect("write queries");
    let exe = std::env::current_exe().expect("bench executable");
    let out = std::process::Command::new(exe)
        .env(
            "WEFT_BENCH_READER",
            format!(
                "{}|{}|{}",
                dir.display(),
                qfile.display(),
                u8::from(sketches)
            ),
        )
        .output()
        .expect("reader process");
    assert!(
        out.status.success(),
        "reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lat = Vec::new();
    let mut ids = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (ms, hits) = line.split_once(' ').unwrap_or((line, ""));
        lat.push(ms.parse().expect("latency"));
        ids.push(hits.split(',').filter_map(|h| h.parse().ok()).collect());
    }
    (lat, ids)
}

fn main() {
    if let Ok(spec) = std::env::var("WEFT_BENCH_READER") {
        reader_child(&spec);
        return;
    }
    let started = Instant::now();
    let n: usize = std::env::var("WEFT_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n >= 1000)
        .unwrap_or(DEFAULT_N);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let max_pending = PENDING[PENDING.len() - 1];
    let total = n + max_pending + INCREMENTS.iter().sum::<usize>();

    // Tuning runs use another seed (`WEFT_BENCH_SEED`), so reported figures
    // come from data and queries nothing was tuned on.
    let seed: u64 = std::env::var("WEFT_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    // Tree counts for section 6, each `trees` or `trees:oversampling`.
    let shapes: Vec<(usize, usize)> = std::env::var("WEFT_BENCH_TREES")
        .unwrap_or_else(|_| "64,32".into())
        .split(',')
        .filter_map(|t| {
            let (t, o) = t.split_once(':').unwrap_or((t, ""));
            let o = o
                .trim()
                .parse()
                .unwrap_or(IndexOptions::default().oversampling);
            Some((t.trim().parse().ok()?, o))
        })
        .collect();
    println!("weft vector index benchmark (LMDB + arroy 0.9, cosine)");
    println!(
        "  {cores} cores | N = {n} chunks | dimension {DIM} | k = {K} | seed {seed:#x} | {QUERIES} queries per set"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let points = match std::env::var("WEFT_BENCH_DATA").as_deref() {
        Ok("clustered") => Points::Clustered(
            (0..(n / CLUSTER_SIZE).max(1))
                .map(|_| unit(&mut rng))
                .collect(),
        ),
        _ => Points::Uniform,
    };
    println!(
        "  data: {}; doc d<n> = one chunk d<n>#0; kind = a|b|c (n % 3), bucket = 0..99 (n % 100)",
        points.describe()
    );
    println!(
        "  baseline: exact single-threaded scan (8-lane dot product over a flat Vec<f32>, top-{K} heap)"
    );

    progress("generating vectors");
    let mut data = Vec::with_capacity(total * DIM);
    for _ in 0..total {
        data.extend(points.next(&mut rng));
    }
    let vecs = Vectors { dim: DIM, data };
    let random_q: Vec<Vec<f32>> = (0..QUERIES).map(|_| points.next(&mut rng)).collect();
    let sources: Vec<u32> = (0..QUERIES)
        .map(|_| rng.random_range(0..n as u32))
        .collect();
    let near_q: Vec<Vec<f32>> = sources
        .iter()
        .map(|&s| jitter(&mut rng, vecs.row(s), NOISE))
        .collect();

    if std::env::var("WEFT_BENCH_ONLY").as_deref() == Ok("bulk") {
        // Section 7 alone (its queries' exact truth only), for work on the
        // bulk-load search.
        let rq = &random_q[..READER_QUERIES];
        let (bf_qps, truth) = run_exact(&vecs, rq, || 0..n as u32);
        bulk_load(&vecs, n, rq, &truth, 1000.0 / bf_qps);
        return;
    }

    // ------------------------------------------------------------ 1. load
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = VectorIndex::open(dir.path(), manual(1)).expect("open");
    progress("applying");
    let load = apply_range(&ix, &vecs, 0, n as u32);

    // Unbuilt copies for section 7 (tree shapes).
    let shape_dirs: Vec<((usize, usize), tempfile::TempDir)> = shapes
        .iter()
        .map(|t| {
            let d = tempfile::tempdir().expect("tempdir");
            copy_index(dir.path(), d.path());
            (*t, d)
        })
        .collect();
    let build2 = {
        progress("copying the loaded index for the 2-thread build");
        let dir2 = tempfile::tempdir().expect("tempdir");
        copy_index(dir.path(), dir2.path());
        progress("full build, 1 thread");
        let b1 = timed_build(&ix);
        let ix2 = VectorIndex::open(dir2.path(), manual(2)).expect("open copy");
        progress("full build, 2 threads");
        let b2 = timed_build(&ix2);
        (b1, b2)
    };
    let (build1, build2) = build2;
    let st = stats(&ix);
    assert_eq!(st.pending, 0);
    assert_eq!(st.in_trees, n as u64);

    println!();
    println!("1. load");
    println!(
        "  apply {n} chunks, batches of {BATCH} ....... {:8.2} s   ({:.0} chunks/s)",
        load.as_secs_f64(),
        n as f64 / load.as_secs_f64()
    );
    println!(
        "  full build, build_threads = 1 ........... {build1:8.2} s   ({} trees; store {:.0} MiB, trees {:.0} MiB)",
        st.trees,
        mib(st.store_bytes),
        mib(st.trees_bytes)
    );
    println!(
        "  full build, build_threads = 2 ........... {build2:8.2} s   (x{:.2} vs 1 thread)",
        build1 / build2
    );
    let raw = (n * DIM * 4) as u64;
    println!(
        "  on disk: store + trees files = {:.0} + {:.0} MiB = {:.2} x the raw vectors ({:.0} MiB); pages in use {:.0} + {:.0} MiB = {:.2} x",
        mib(st.store_bytes),
        mib(st.trees_bytes),
        (st.store_bytes + st.trees_bytes) as f64 / raw as f64,
        mib(raw),
        mib(st.store_live_bytes),
        mib(st.trees_live_bytes),
        (st.store_live_bytes + st.trees_live_bytes) as f64 / raw as f64,
    );

    // ---------------------------------------------------------- 2. search
    progress("exact truth and baseline rate");
    let (bf_rand_qps, truth_rand) = run_exact(&vecs, &random_q, || 0..n as u32);
    let (bf_near_qps, truth_near) = run_exact(&vecs, &near_q, || 0..n as u32);
    progress("index search");
    let (ix_rand_qps, got_rand) = run_index(&ix, &random_q, &[]);
    let (ix_near_qps, got_near) = run_index(&ix, &near_q, &[]);
    let top1 = got_near
        .iter()
        .zip(&sources)
        .filter(|(g, s)| g.first() == Some(*s))
        .count() as f64
        / got_near.len() as f64;

    println!();
    println!("2. search, k = {K}, no filter, {QUERIES} queries per set");
    println!("  query set          index q/s   brute q/s   index/brute   recall@10   queries");
    let line = |name: &str, iq: f64, bq: f64, got: &[Vec<u32>], truth: &[Vec<(f32, u32)>]| {
        println!(
            "  {name:<16} {iq:11.0} {bq:11.1} {:12.1}x {:11.3} {:9}",
            iq / bq,
            recall(got, truth),
            got.len()
        );
    };
    line("random", ix_rand_qps, bf_rand_qps, &got_rand, &truth_rand);
    line(
        "near-duplicate",
        ix_near_qps,
        bf_near_qps,
        &got_near,
        &truth_near,
    );
    println!(
        "  near-duplicate: source vector ranked first in {:.1} % of queries",
        top1 * 100.0
    );

    // ------------------------------------------------------- 3. filtered
    progress("filtered search");
    println!();
    println!(
        "3. filtered search, random queries (up to {FILTER_QUERIES} per row): exact scan of the filter's matches vs arroy with the matches as candidates"
    );
    println!("  filter   matches | brute q/s | exact: q/s  p50 ms  p99 ms  recall | trees: q/s  p50 ms  p99 ms  recall");
    let fq = &random_q[..FILTER_QUERIES.min(random_q.len())];
    // Largest share at which the exact scan was still at least as fast.
    let mut exact_wins_up_to: Option<f64> = None;
    let mut trees_won = false;
    for (k, every, label) in SELECTIVITY {
        let keep = |i: u32| i.is_multiple_of(every);
        let ids: Vec<u32> = (0..n as u32).filter(|i| keep(*i)).collect();
        let (bq, truth) = run_exact(&vecs, fq, || ids.iter().copied());
        let v = if k == "kind" { "a" } else { "0" };
        let filter = vec![(k.to_string(), v.to_string())];
        let mut row = Vec::new();
        for share in [f64::INFINITY, 0.0] {
            ix.set_exact_filter_below(share);
            let (iq, got, lat) = run_index_timed(&ix, fq, &filter);
            for g in &got {
                assert!(g.iter().all(|i| keep(*i)), "filter leaked");
            }
            row.push((
                iq,
                percentile(&lat, 50.0),
                percentile(&lat, 99.0),
                recall(&got, &truth),
            ));
        }
        let (e, t) = (row[0], row[1]);
        println!(
            "  {label:>6} {:9} | {bq:9.0} | {:10.0} {:7.3} {:7.3} {:7.3} | {:10.0} {:7.3} {:7.3} {:7.3}",
            ids.len(),
            e.0, e.1, e.2, e.3, t.0, t.1, t.2, t.3
        );
        let share = 1.0 / f64::from(every);
        if e.0 >= t.0 && !trees_won {
            exact_wins_up_to = Some(share);
        } else {
            trees_won = true;
        }
    }
    ix.set_exact_filter_below(IndexOptions::default().exact_filter_below);
    println!(
        "  the exact scan is at least as fast up to a filter share of {} (IndexOptions::exact_filter_below = {})",
        exact_wins_up_to.map_or("none".into(), |s| format!("{:.3}", s)),
        IndexOptions::default().exact_filter_below
    );

    // ---------------------------------------------------------- 4. delta
    println!();
    println!("4. pending delta (applied after the build, not built), random queries");
    println!("  pending P   index q/s   ms/query   vs P=0   recall@10   queries");
    let mut levels: Vec<(usize, f64)> = Vec::new();
    let mut applied = 0usize;
    for p in PENDING {
        progress(&format!("{p} pending"));
        apply_range(&ix, &vecs, (n + applied) as u32, (n + p) as u32);
        applied = p;
        assert_eq!(stats(&ix).pending, p as u64);
        let lo = n as u32;
        let hi = (n + p) as u32;
        let truth: Vec<Vec<(f32, u32)>> = random_q
            .iter()
            .zip(&truth_rand)
            .map(|(q, t)| merge(t, &exact(&vecs, lo..hi, q)))
            .collect();
        let (iq, got) = run_index(&ix, &random_q, &[]);
        let base = levels.first().map_or(iq, |l| l.1);
        println!(
            "  {p:9} {iq:11.0} {:10.3} {:7.2}x {:11.3} {:9}",
            1000.0 / iq,
            iq / base,
            recall(&got, &truth),
            got.len()
        );
        levels.push((p, iq));
    }
    let base_ms = 1000.0 / levels[0].1;
    let (last_p, last_qps) = levels[levels.len() - 1];
    // Cost of the exact scan per pending item, from the largest level.
    let per_item_us = (1000.0 / last_qps - base_ms) * 1000.0 / last_p as f64;
    let ok = levels
        .iter()
        .filter(|(_, q)| *q >= KEEP * levels[0].1)
        .map(|(p, _)| *p)
        .max()
        .unwrap_or(0);
    // Pending items the exact scan can hold before it costs as much as the
    // tree search itself (search time doubles), rounded down to 100s.
    let doubling = (per_item_us > 0.0).then(|| base_ms * 1000.0 / per_item_us);
    println!(
        "  pending items cost ~{per_item_us:.2} µs per query each; search time doubles at ~{} pending; >= {:.0} % of the built rate up to P = {ok} (tested)",
        doubling.map_or("never".into(), |d| format!("{d:.0}")),
        KEEP * 100.0
    );
    let recommend = doubling.map_or(last_p as u64, |d| {
        ((d / 100.0).floor() as u64 * 100).max(100)
    });
    println!(
        "  recommendation: max_pending = {recommend} (where the pending scan costs as much as the tree search; current default {})",
        IndexOptions::default().max_pending
    );

    // ---------------------------------------------------------- 5. builds
    println!();
    println!("5. incremental build on top of the {n} built items");
    progress(&format!("folding {max_pending} pending"));
    let fold = timed_build(&ix);
    println!(
        "  build_now() with {max_pending:6} pending ....... {fold:8.3} s   ({} trees after)",
        stats(&ix).trees
    );
    let mut next = n + max_pending;
    for add in INCREMENTS {
        progress(&format!("+{add}"));
        apply_range(&ix, &vecs, next as u32, (next + add) as u32);
        next += add;
        let b = timed_build(&ix);
        println!(
            "  build_now() with {add:6} pending ....... {b:8.3} s   ({} trees after)",
            stats(&ix).trees
        );
    }
    let after = stats(&ix);
    assert_eq!(after.pending, 0);
    assert_eq!(after.in_trees, next as u64);
    println!(
        "  after: {} items in {} trees; store {:.0} MiB, trees {:.0} MiB",
        after.in_trees,
        after.trees,
        mib(after.store_bytes),
        mib(after.trees_bytes)
    );
    drop(ix);

    // ------------------------------------------------------ 6. tree shapes
    println!();
    println!(
        "6. tree count (IndexOptions::trees) on the same {n} items: full build with 2 threads, size, search (random / near-duplicate queries)"
    );
    println!("  (sizes: pages in use; the files keep the high-water mark of the load)");
    println!("  trees  overs.   build s   trees MiB   total / raw   random q/s  recall   near q/s  recall");
    println!(
        "  {:>5} {:>7} {build2:9.1} {:11.0} {:13.2} {:12.0} {:8.3} {:10.0} {:7.3}   (arroy's pick, section 1-2)",
        st.trees,
        IndexOptions::default().oversampling,
        mib(st.trees_live_bytes),
        (st.store_live_bytes + st.trees_live_bytes) as f64 / raw as f64,
        ix_rand_qps,
        recall(&got_rand, &truth_rand),
        ix_near_qps,
        recall(&got_near, &truth_near)
    );
    for ((t, o), d) in &shape_dirs {
        progress(&format!("{t} trees"));
        let ixt = VectorIndex::open(
            d.path(),
            IndexOptions {
                trees: Some(*t),
                oversampling: *o,
                ..manual(2)
            },
        )
        .expect("open copy");
        let b = timed_build(&ixt);
        let s = stats(&ixt);
        let (rq, rg) = run_index(&ixt, &random_q, &[]);
        let (nq, ng) = run_index(&ixt, &near_q, &[]);
        println!(
            "  {:>5} {o:>7} {b:9.1} {:11.0} {:13.2} {rq:12.0} {:8.3} {nq:10.0} {:7.3}",
            s.trees,
            mib(s.trees_live_bytes),
            (s.store_live_bytes + s.trees_live_bytes) as f64 / raw as f64,
            recall(&rg, &truth_rand),
            recall(&ng, &truth_near)
        );
    }
    drop(shape_dirs);

    bulk_load(&vecs, n, &random_q, &truth_rand, 1000.0 / bf_rand_qps);

    // ------------------------------------------------------------ 8. HNSW
    if std::env::var("WEFT_BENCH_HNSW").as_deref() != Ok("0") {
        hnsw_baseline(&vecs, n, build1, build2, &random_q, &truth_rand);
    }

    println!();
    println!("total bench time {:.0} s", started.elapsed().as_secs_f64());
}

/// Section 7: a bulk load. The shape of a preload: a fifth of the items
/// built, the rest applied since and pending, searched by a read-only
/// process (no vectors in memory) and by the writer (pending vectors in
/// memory). `bf_ms`: the brute force's time per query over all `n`.
fn bulk_load(
    vecs: &Vectors,
    n: usize,
    random_q: &[Vec<f32>],
    truth_rand: &[Vec<(f32, u32)>],
    bf_ms: f64,
) {
    let built = n / 5;
    println!();
    println!(
        "7. bulk load: {built} items built, {} pending; unfiltered random queries ({READER_QUERIES})",
        n - built
    );
    progress("bulk-load index");
    let dir6 = tempfile::tempdir().expect("tempdir");
    let ix6 = VectorIndex::open(dir6.path(), manual(1)).expect("open");
    apply_range(&ix6, vecs, 0, built as u32);
    ix6.build_now().expect("build");
    apply_range(&ix6, vecs, built as u32, n as u32);
    let st6 = stats(&ix6);
    assert_eq!(st6.pending, (n - built) as u64);
    let rq = &random_q[..READER_QUERIES.min(random_q.len())];
    let rtruth = &truth_rand[..rq.len()];
    progress("reader process");
    let (rlat, rgot) = run_reader(dir6.path(), rq, true);
    let (xlat, xgot) = run_reader(dir6.path(), rq, false);
    progress("writer process");
    let (_, wgot, wlat) = run_index_timed(&ix6, rq, &[]);
    println!("  searcher                                      p50 ms   p99 ms   recall@10");
    for (name, lat, got) in [
        ("read-only process, sketches + re-rank", &rlat, &rgot),
        (
            "read-only process, every vector read (before)",
            &xlat,
            &xgot,
        ),
        ("writer (pending in memory)", &wlat, &wgot),
    ] {
        println!(
            "  {name:<45} {:8.2} {:8.2} {:11.3}",
            percentile(lat, 50.0),
            percentile(lat, 99.0),
            recall(got, rtruth)
        );
    }
    println!(
        "  brute force over all {n} items in this process: {:.2} ms per query",
        bf_ms
    );
    drop(ix6);
}

/// Section 8: `hnsw_rs` on the same vectors, its insertion rate against the
/// trees' build rate (`build1`, `build2`: seconds for all `n` with 1 and 2
/// build threads), and its search.
fn hnsw_baseline(
    vecs: &Vectors,
    n: usize,
    build1: f64,
    build2: f64,
    queries: &[Vec<f32>],
    truth: &[Vec<(f32, u32)>],
) {
    use hnsw_rs::prelude::{DistCosine, Hnsw};
    const M: usize = 16;
    const EF_CONSTRUCTION: usize = 200;
    let rows: Vec<Vec<f32>> = (0..n as u32).map(|i| vecs.row(i).to_vec()).collect();
    let new = || Hnsw::<f32, DistCosine>::new(M, n, 16, EF_CONSTRUCTION, DistCosine);
    progress("HNSW insertion, 1 thread");
    let one = new();
    let t = Instant::now();
    for (i, r) in rows.iter().enumerate() {
        one.insert((r.as_slice(), i));
    }
    let single = t.elapsed().as_secs_f64();
    progress("HNSW insertion, every core");
    let all = new();
    let with_ids: Vec<(&Vec<f32>, usize)> = rows.iter().zip(0..).collect();
    let t = Instant::now();
    all.parallel_insert(&with_ids);
    let parallel = t.elapsed().as_secs_f64();
    println!();
    println!(
        "8. HNSW baseline (hnsw_rs 0.3, in memory, cosine, M = {M}, ef_construction = {EF_CONSTRUCTION}) on the same {n} vectors"
    );
    println!(
        "  build                                     s   items/s   vs the trees (same threads)"
    );
    println!(
        "  trees (arroy), 1 build thread    {build1:10.2} {:9.0}   1.00",
        n as f64 / build1
    );
    println!(
        "  HNSW, 1 thread                   {single:10.2} {:9.0}   {:.2}x the trees' rate",
        n as f64 / single,
        build1 / single
    );
    println!(
        "  trees (arroy), 2 build threads   {build2:10.2} {:9.0}   1.00",
        n as f64 / build2
    );
    println!(
        "  HNSW, every core                 {parallel:10.2} {:9.0}   {:.2}x the trees' rate",
        n as f64 / parallel,
        build2 / parallel
    );
    println!("  search (the parallel-built graph)  ef_search   q/s   recall@10");
    for ef in [64, 200] {
        let t = Instant::now();
        let got: Vec<Vec<u32>> = queries
            .iter()
            .map(|q| {
                black_box(all.search(q, K, ef))
                    .iter()
                    .map(|nb| nb.d_id as u32)
                    .collect()
            })
            .collect();
        let qps = queries.len() as f64 / t.elapsed().as_secs_f64();
        println!("  {:>34} {qps:9.0} {:11.3}", ef, recall(&got, truth));
    }
}

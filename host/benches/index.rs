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
//! 3. filtered search: `kind = a` (1/3 of items) and `bucket = 0` (1 %),
//!    against an exact scan of the matching items;
//! 4. the pending delta: P items applied after the build and not built (so
//!    scanned exactly and merged with the trees) for P = 0 .. 10 000, the
//!    random queries, the pending items taking part in the exact truth: what
//!    `IndexOptions::max_pending` trades;
//! 5. incremental builds: fold those 10 000, then 10, 100 and 1000 new items
//!    on top of the full index.

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
            metadata: vec![
                ("kind".into(), kind(n).into()),
                ("bucket".into(), (n % 100).to_string()),
            ],
            vector: v.to_vec(),
            model: None,
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
    for q in qs.iter().take(WARMUP) {
        black_box(ix.search(q, K, filter).expect("search"));
    }
    let t0 = Instant::now();
    let mut hits: Vec<Vec<SearchHit>> = Vec::with_capacity(qs.len());
    for q in qs {
        hits.push(black_box(
            ix.search(black_box(q), K, filter).expect("search"),
        ));
        if hits.len() >= MIN_QUERIES && t0.elapsed() > SET_BUDGET {
            break;
        }
    }
    let qps = hits.len() as f64 / t0.elapsed().as_secs_f64();
    let ids = hits.iter().map(|h| h.iter().map(id_of).collect()).collect();
    (qps, ids)
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

fn main() {
    let started = Instant::now();
    let n: usize = std::env::var("WEFT_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n >= 1000)
        .unwrap_or(DEFAULT_N);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let max_pending = PENDING[PENDING.len() - 1];
    let total = n + max_pending + INCREMENTS.iter().sum::<usize>();

    println!("weft vector index benchmark (LMDB + arroy 0.9, cosine)");
    println!(
        "  {cores} cores | N = {n} chunks | dimension {DIM} | k = {K} | seed {SEED:#x} | {QUERIES} queries per set"
    );
    let mut rng = StdRng::seed_from_u64(SEED);
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

    // ------------------------------------------------------------ 1. load
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = VectorIndex::open(dir.path(), manual(1)).expect("open");
    progress("applying");
    let load = apply_range(&ix, &vecs, 0, n as u32);

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
    println!("3. filtered search, random queries");
    println!("  filter        matches   index q/s   brute q/s   index/brute   recall@10   queries");
    // kind = a is every third item, bucket = 0 every hundredth.
    for (k, v, every) in [("kind", "a", 3u32), ("bucket", "0", 100)] {
        let keep = |i: u32| i.is_multiple_of(every);
        let ids: Vec<u32> = (0..n as u32).filter(|i| keep(*i)).collect();
        let (bq, truth) = run_exact(&vecs, &random_q, || ids.iter().copied());
        let filter = vec![(k.to_string(), v.to_string())];
        let (iq, got) = run_index(&ix, &random_q, &filter);
        for g in &got {
            assert!(g.iter().all(|i| keep(*i)), "filter leaked");
        }
        println!(
            "  {:<12} {:8} {iq:11.0} {bq:11.1} {:12.1}x {:11.3} {:9}",
            format!("{k} = {v}"),
            ids.len(),
            iq / bq,
            recall(&got, &truth),
            got.len()
        );
    }

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
    let st = stats(&ix);
    assert_eq!(st.pending, 0);
    assert_eq!(st.in_trees, next as u64);
    println!(
        "  after: {} items in {} trees; store {:.0} MiB, trees {:.0} MiB",
        st.in_trees,
        st.trees,
        mib(st.store_bytes),
        mib(st.trees_bytes)
    );
    println!();
    println!("total bench time {:.0} s", started.elapsed().as_secs_f64());
}

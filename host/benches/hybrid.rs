//! `cargo bench -p weft --bench hybrid`: the three retrieval modes of the
//! index (vector, keyword, hybrid) on N synthetic chunks (N = 100 000;
//! `WEFT_BENCH_N` overrides it), each against a brute-force answer computed
//! in this process. Not run by CI.
//!
//! Data, from `StdRng::seed_from_u64(SEED)`: N / 50 topics, each a random
//! unit centroid (dimension 384) and 40 topic words; chunk n belongs to
//! topic n % topics, its vector is the centroid plus Gaussian noise of norm
//! 1 (normalised), and its text is 20-60 words: each word a topic word with
//! probability 0.3, else a Zipf(1.0) draw from a 30 000-word general
//! vocabulary, plus one identifier `c<n>` (so an exact-term query has one
//! right answer, as a flight number does). Queries: 1000 chunks drawn at
//! random; the query vector is the chunk's plus noise of norm 0.3; the query
//! text is 3 of its words and its identifier, or 4 of its words for half
//! the queries (no identifier).
//!
//! Measured per mode (k = 10, no filter), after all items are built into
//! the trees:
//! - latency p50 / p99 of `VectorIndex::query`;
//! - recall@10 against the mode's exact answer: vector against a brute-force
//!   cosine scan; keyword against a brute-force BM25 (same k1 = 1.2,
//!   b = 0.75 and tokenizer, computed by scanning every chunk's tokens, no
//!   postings); hybrid against the reciprocal-rank fusion (k = 60, equal
//!   weights) of those two exact lists. So "recall" for hybrid is how much
//!   of the exact fused answer the index returns: the approximation of the
//!   vector side (arroy) is the only source of difference. Recall is
//!   tie-aware: a returned chunk whose exact score equals the 10th exact
//!   score (BM25 ties are common) counts as found;
//! - "source@10": the share of queries whose source chunk is in the top 10,
//!   a task measure that compares the modes with each other.

mod support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::time::Instant;
use support::{env_or, Latencies};
use weft::index::keyword::{idf, term_score, tokenize};
use weft::index::{rrf_fuse, ChunkIn, DocOp, IndexOptions, Query, SearchMode, VectorIndex};

const DIM: usize = 384;
const SEED: u64 = 0x00C0_FFEE;
const K: usize = 10;
const TOPIC_SIZE: usize = 50;
const TOPIC_WORDS: usize = 40;
const VOCAB: usize = 30_000;

fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

fn noisy(rng: &mut StdRng, base: &[f32], norm: f32) -> Vec<f32> {
    let mut noise: Vec<f32> = (0..DIM).map(|_| gaussian(rng)).collect();
    normalise(&mut noise);
    let mut v: Vec<f32> = base.iter().zip(&noise).map(|(b, e)| b + norm * e).collect();
    normalise(&mut v);
    v
}

/// Zipf(1.0) over `n` ranks by inverse CDF on precomputed cumulative weights.
struct Zipf(Vec<f64>);
impl Zipf {
    fn new(n: usize) -> Zipf {
        let mut acc = 0.0;
        Zipf(
            (1..=n)
                .map(|r| {
                    acc += 1.0 / r as f64;
                    acc
                })
                .collect(),
        )
    }
    fn draw(&self, rng: &mut StdRng) -> usize {
        let x = rng.random::<f64>() * self.0.last().copied().unwrap_or(1.0);
        self.0.partition_point(|c| *c < x).min(self.0.len() - 1)
    }
}

fn word(i: usize) -> String {
    // Pronounceable, alphabetic, distinct per index (base-20 syllables).
    const S: [&str; 20] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zi", "ba", "do", "fe", "gu", "ho", "ja",
        "pi", "qu", "wa", "xe", "yo",
    ];
    let mut n = i + 20;
    let mut w = String::new();
    while n > 0 {
        w.push_str(S[n % 20]);
        n /= 20;
    }
    w
}

struct Corpus {
    vectors: Vec<Vec<f32>>,
    tokens: Vec<Vec<String>>,
    texts: Vec<String>,
}

fn corpus(n: usize, rng: &mut StdRng) -> Corpus {
    let topics = (n / TOPIC_SIZE).max(1);
    let centroids: Vec<Vec<f32>> = (0..topics)
        .map(|_| {
            let mut c: Vec<f32> = (0..DIM).map(|_| gaussian(rng)).collect();
            normalise(&mut c);
            c
        })
        .collect();
    let topic_words: Vec<Vec<usize>> = (0..topics)
        .map(|_| {
            (0..TOPIC_WORDS)
                .map(|_| rng.random_range(0..VOCAB * 3))
                .collect()
        })
        .collect();
    let zipf = Zipf::new(VOCAB);
    let mut c = Corpus {
        vectors: Vec::with_capacity(n),
        tokens: Vec::with_capacity(n),
        texts: Vec::with_capacity(n),
    };
    for i in 0..n {
        let t = i % topics;
        c.vectors.push(noisy(rng, &centroids[t], 1.0));
        let len = rng.random_range(20..=60);
        let mut words: Vec<String> = (0..len)
            .map(|_| {
                if rng.random::<f32>() < 0.3 {
                    word(topic_words[t][rng.random_range(0..TOPIC_WORDS)])
                } else {
                    word(zipf.draw(rng))
                }
            })
            .collect();
        words.insert(rng.random_range(0..=words.len()), format!("c{i}"));
        let text = words.join(" ");
        c.tokens.push(tokenize(&text));
        c.texts.push(text);
    }
    c
}

fn exact_vector(c: &Corpus, q: &[f32]) -> Vec<(usize, f32)> {
    let mut s: Vec<(usize, f32)> = c
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| (i, v.iter().zip(q).map(|(a, b)| a * b).sum()))
        .collect();
    s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    s.truncate(K);
    s
}

/// BM25 by scanning every chunk's tokens (no postings): the brute force.
fn exact_bm25(c: &Corpus, df: &HashMap<&str, u64>, avgdl: f32, text: &str) -> Vec<(usize, f32)> {
    let mut terms = tokenize(text);
    terms.sort();
    terms.dedup();
    let n = c.tokens.len() as u64;
    let idfs: Vec<(&str, f32)> = terms
        .iter()
        .filter_map(|t| df.get(t.as_str()).map(|d| (t.as_str(), idf(n, *d))))
        .collect();
    let mut s: Vec<(usize, f32)> = Vec::new();
    for (i, toks) in c.tokens.iter().enumerate() {
        let mut score = 0.0;
        for (t, w) in &idfs {
            let tf = toks.iter().filter(|x| x.as_str() == *t).count();
            if tf > 0 {
                score += term_score(*w, tf as u16, toks.len() as u16, avgdl);
            }
        }
        if score > 0.0 {
            s.push((i, score));
        }
    }
    s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    s.truncate(K);
    s
}

/// Tie-aware recall@K: a returned chunk counts if it is in `truth` or its
/// exact score equals the K-th exact score (within 1e-4, relative).
fn recall(got: &[usize], truth: &[(usize, f32)], score_of: impl Fn(usize) -> f32) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let set: HashSet<usize> = truth.iter().map(|(i, _)| *i).collect();
    let last = truth.last().map(|t| t.1).unwrap_or(0.0);
    let ok = got
        .iter()
        .filter(|i| {
            set.contains(i)
                || (truth.len() == K && (score_of(**i) - last).abs() <= 1e-4 * last.abs().max(1.0))
        })
        .count();
    ok.min(truth.len()) as f64 / truth.len() as f64
}

fn item(id: &str) -> usize {
    id.trim_start_matches('d')
        .split('#')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX)
}

fn main() -> anyhow::Result<()> {
    let n: usize = env_or("WEFT_BENCH_N", 100_000)?;
    let queries: usize = env_or("WEFT_BENCH_QUERIES", 1000)?;
    let mut rng = StdRng::seed_from_u64(SEED);
    let t0 = Instant::now();
    let c = corpus(n, &mut rng);
    println!("hybrid bench: {n} chunks x {DIM} dims, {queries} queries, k = {K} (corpus made in {:.1} s)", t0.elapsed().as_secs_f64());

    let dir = tempfile::tempdir()?;
    let opts = IndexOptions {
        max_pending: u64::MAX,
        idle_build: std::time::Duration::from_secs(3600),
        max_age: std::time::Duration::from_secs(3600),
        ..IndexOptions::default()
    };
    let ix = VectorIndex::open(dir.path(), opts)?;
    let t0 = Instant::now();
    for start in (0..n).step_by(1000) {
        let ops: Vec<DocOp> = (start..(start + 1000).min(n))
            .map(|i| DocOp::Upsert {
                doc_id: format!("d{i}"),
                chunks: vec![ChunkIn {
                    chunk_id: format!("d{i}#0"),
                    text: c.texts[i].clone(),
                    metadata: vec![],
                    vector: c.vectors[i].clone(),
                    model: None,
                    source: None,
                }],
            })
            .collect();
        ix.apply(&ops)?;
    }
    let load = t0.elapsed();
    let t0 = Instant::now();
    ix.build_now()?;
    let stats = ix.stats()?;
    println!(
        "load (chunks, vectors and postings, batches of 1000): {:.1} s; build: {:.1} s; store {} MiB, trees {} MiB",
        load.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        stats.store_live_bytes >> 20,
        stats.trees_live_bytes >> 20
    );

    let mut df: HashMap<&str, u64> = HashMap::new();
    let mut total = 0u64;
    for toks in &c.tokens {
        total += toks.len() as u64;
        let uniq: HashSet<&str> = toks.iter().map(String::as_str).collect();
        for t in uniq {
            *df.entry(t).or_insert(0) += 1;
        }
    }
    let avgdl = total as f32 / n as f32;

    struct Q {
        src: usize,
        vector: Vec<f32>,
        text: String,
    }
    let qs: Vec<Q> = (0..queries)
        .map(|j| {
            let src = rng.random_range(0..n);
            let toks = &c.tokens[src];
            let words: Vec<&String> = toks.iter().filter(|t| !t.starts_with('c')).collect();
            let mut pick: Vec<String> = (0..if j % 2 == 0 { 3 } else { 4 })
                .map(|_| words[rng.random_range(0..words.len())].clone())
                .collect();
            if j % 2 == 0 {
                pick.push(format!("c{src}"));
            }
            Q {
                src,
                vector: noisy(&mut rng, &c.vectors[src], 0.3),
                text: pick.join(" "),
            }
        })
        .collect();

    println!();
    println!("| mode | recall@10 (vs its exact answer) | source@10 | p50 | p99 | queries/s |");
    println!("|---|---|---|---|---|---|");
    for mode in [SearchMode::Vector, SearchMode::Keyword, SearchMode::Hybrid] {
        let mut lat = Latencies::new();
        let (mut rec, mut src_found) = (0.0, 0usize);
        let t_all = Instant::now();
        let mut busy = 0.0;
        for q in &qs {
            let query = Query::new(mode, &q.vector, &q.text, K, &[]);
            let t0 = Instant::now();
            let hits = ix.query(&query)?;
            let d = t0.elapsed();
            busy += d.as_secs_f64();
            lat.record(d);
            let got: Vec<usize> = hits.iter().map(|h| item(&h.chunk_id)).collect();
            if got.contains(&q.src) {
                src_found += 1;
            }
            let cos =
                |i: usize| -> f32 { c.vectors[i].iter().zip(&q.vector).map(|(a, b)| a * b).sum() };
            rec += match mode {
                SearchMode::Vector => recall(&got, &exact_vector(&c, &q.vector), cos),
                SearchMode::Keyword => {
                    let truth = exact_bm25(&c, &df, avgdl, &q.text);
                    let score: HashMap<usize, f32> = exact_bm25_all(&c, &df, avgdl, &q.text, &got);
                    recall(&got, &truth, |i| score.get(&i).copied().unwrap_or(0.0))
                }
                SearchMode::Hybrid => {
                    let v: Vec<usize> = exact_vector(&c, &q.vector)
                        .into_iter()
                        .map(|x| x.0)
                        .collect();
                    let w: Vec<usize> = exact_bm25(&c, &df, avgdl, &q.text)
                        .into_iter()
                        .map(|x| x.0)
                        .collect();
                    let fused = rrf_fuse(&[(&v[..], 1.0), (&w[..], 1.0)], 60.0, K);
                    let score: HashMap<usize, f32> = fused.iter().copied().collect();
                    recall(&got, &fused, |i| score.get(&i).copied().unwrap_or(-1.0))
                }
            };
        }
        let _ = t_all;
        println!(
            "| {mode:?} | {:.3} | {:.3} | {:.2} ms | {:.2} ms | {:.0} |",
            rec / qs.len() as f64,
            src_found as f64 / qs.len() as f64,
            lat.p50_ms(),
            lat.p99_ms(),
            qs.len() as f64 / busy
        );
    }
    println!("\n(recall: vector vs brute-force cosine; keyword vs brute-force BM25; hybrid vs RRF(k=60, equal weights) of the two exact lists; tie-aware. source@10: the query's source chunk in the top 10. One thread, all items built.)");
    Ok(())
}

/// Exact BM25 scores of `ids` (for tie-aware recall).
fn exact_bm25_all(
    c: &Corpus,
    df: &HashMap<&str, u64>,
    avgdl: f32,
    text: &str,
    ids: &[usize],
) -> HashMap<usize, f32> {
    let mut terms = tokenize(text);
    terms.sort();
    terms.dedup();
    let n = c.tokens.len() as u64;
    ids.iter()
        .filter(|i| **i < c.tokens.len())
        .map(|&i| {
            let toks = &c.tokens[i];
            let s = terms
                .iter()
                .filter_map(|t| {
                    let d = df.get(t.as_str())?;
                    let tf = toks.iter().filter(|x| *x == t).count();
                    (tf > 0).then(|| term_score(idf(n, *d), tf as u16, toks.len() as u16, avgdl))
                })
                .sum();
            (i, s)
        })
        .collect()
}

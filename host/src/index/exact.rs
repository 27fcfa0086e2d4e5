//! Exact scoring of stored vectors, for what the trees cannot answer well:
//! the pending additions (not in the trees yet) and filters that keep few
//! chunks (arroy would read each match through its own LMDB lookups and
//! sort them all; see `IndexOptions::exact_filter_below`).

use std::collections::BinaryHeap;

/// Cosine similarity of `q` (norm `qnorm`) and a stored vector, read
/// straight from its little-endian bytes (LMDB values are not aligned for
/// `f32`, so no cast). Eight independent sums for the dot product and the
/// norm let the compiler vectorise the loop; one running sum made this a
/// chain of dependent adds, ~5x slower at 384 dimensions.
pub fn cosine_bytes(q: &[f32], qnorm: f32, b: &[u8]) -> f32 {
    let mut dot = [0f32; 8];
    let mut nn = [0f32; 8];
    let (qc, bc) = (q.chunks_exact(8), b.chunks_exact(32));
    let (qr, br) = (qc.remainder(), bc.remainder());
    for (x, c) in qc.zip(bc) {
        // SAFETY: `c` is exactly 32 bytes (`chunks_exact`), read without
        // alignment; every bit pattern is a valid u32. One unaligned
        // 32-byte load instead of eight 4-byte assemblies keeps the loop
        // vectorised (measured: per-element `from_le_bytes` scored a
        // 384-d vector in ~0.4 µs, slower than arroy's own path).
        let raw: [u32; 8] = unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<[u32; 8]>()) };
        for i in 0..8 {
            let y = f32::from_bits(u32::from_le(raw[i]));
            dot[i] += x[i] * y;
            nn[i] += y * y;
        }
    }
    let (mut d, mut n): (f32, f32) = (dot.iter().sum(), nn.iter().sum());
    for (x, c) in qr.iter().zip(br.chunks_exact(4)) {
        let y = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        d += x * y;
        n += y * y;
    }
    let norm = qnorm * n.sqrt();
    if norm > f32::EPSILON {
        d / norm
    } else {
        0.0
    }
}

/// Bytes of an int8 sketch of a `dim`-dimensional vector: scale and norm
/// (f32 LE each), then one `i8` per component.
pub fn sketch_len(dim: usize) -> usize {
    8 + dim
}

/// An int8 copy of `v` (a quarter of its f32 bytes) for the pending scan:
/// component i is `round(v[i] / scale)` with `scale = max |v| / 127`, so the
/// error per component is at most `scale / 2`, which moves a cosine by
/// about 1e-3 at 384 dimensions. Pending vectors are ranked by their
/// sketch and only the best few are read in full and scored exactly, so a
/// read-only process scans a quarter of the bytes (see `search_merged`).
pub fn sketch(v: &[f32]) -> Vec<u8> {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mut out = Vec::with_capacity(sketch_len(v.len()));
    out.extend_from_slice(&scale.to_le_bytes());
    out.extend_from_slice(&norm.to_le_bytes());
    out.extend(
        v.iter()
            .map(|x| ((x / scale).round().clamp(-127.0, 127.0) as i8) as u8),
    );
    out
}

/// A query prepared for scoring many sketches: its components as `i16`
/// (`q[i] ~ codes[i] * scale`), so a sketch is scored by an integer dot
/// product, which the CPU does 8 or 16 lanes at a time without converting
/// each `i8` to a float (the float form was ~half of a read-only search
/// with 80k pending at 384 dimensions). Rounding the query to 15 bits
/// moves a cosine by ~1e-5, far below the sketch's own ~1e-3.
pub struct SketchQuery {
    codes: Vec<i16>,
    /// Query component per code step, divided by the query's norm.
    scale: f32,
    /// The dot product for this CPU, chosen once per query rather than
    /// once per sketch.
    dot: fn(&[i16], &[u8]) -> i32,
}

impl SketchQuery {
    pub fn new(q: &[f32], qnorm: f32) -> SketchQuery {
        // Every product is at most `limit * 127` and `dim` of them are
        // summed in an i32: the limit keeps the sum from overflowing at
        // any dimension (32767 up to 516 dimensions).
        let limit = (i32::MAX as f32 / (127.0 * q.len().max(1) as f32)).min(32767.0);
        let max = q.iter().fold(0f32, |m, x| m.max(x.abs()));
        let step = if max > 0.0 { max / limit.floor() } else { 1.0 };
        let codes = q
            .iter()
            .map(|x| (x / step).round().clamp(-limit, limit) as i16)
            .collect();
        let scale = if qnorm > f32::EPSILON {
            step / qnorm
        } else {
            0.0
        };
        SketchQuery {
            codes,
            scale,
            dot: dot_i16_i8_for_cpu(),
        }
    }

    /// Approximate cosine of the query and a sketched vector, or `None` if
    /// `s` is not a sketch of a vector of the query's dimension.
    pub fn cosine(&self, s: &[u8]) -> Option<f32> {
        if s.len() != sketch_len(self.codes.len()) {
            return None;
        }
        let scale = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        let norm = f32::from_le_bytes([s[4], s[5], s[6], s[7]]);
        let d = (self.dot)(&self.codes, &s[8..]) as f32;
        Some(if norm > f32::EPSILON {
            d * self.scale * scale / norm
        } else {
            0.0
        })
    }
}

/// The integer dot product of query codes and a sketch's `i8` codes
/// (`c.len() == q.len()`) for this CPU: on x86-64 with AVX2 (checked at
/// run time, as arroy does for its own distances) the same loop compiled
/// for 256-bit registers; else the portable build (SSE2 on x86-64).
fn dot_i16_i8_for_cpu() -> fn(&[i16], &[u8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            return |q, c| {
                // SAFETY: the CPU supports AVX2, checked above.
                unsafe { dot_i16_i8_avx2(q, c) }
            };
        }
    }
    dot_i16_i8_portable
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_i16_i8_avx2(q: &[i16], c: &[u8]) -> i32 {
    dot_i16_i8_portable(q, c)
}

/// One reduction over widened products: LLVM turns it into multiply-add
/// of 16-bit pairs (`pmaddwd`).
#[inline(always)]
fn dot_i16_i8_portable(q: &[i16], c: &[u8]) -> i32 {
    let mut sum = 0i32;
    for (x, y) in q.iter().zip(c) {
        sum = sum.wrapping_add(i32::from(*x) * i32::from(*y as i8));
    }
    sum
}

/// A (score, id) ordered so a `BinaryHeap` pops the worst first.
#[derive(PartialEq)]
pub struct Scored(pub f32, pub u32);
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scored {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.total_cmp(&self.0).then(self.1.cmp(&o.1))
    }
}

/// The best `k` (score, id) pairs seen.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Scored>,
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    pub fn push(&mut self, score: f32, id: u32) {
        if self.heap.len() < self.k {
            self.heap.push(Scored(score, id));
        } else if self.heap.peek().is_some_and(|w| score > w.0) {
            self.heap.pop();
            self.heap.push(Scored(score, id));
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<Scored> {
        self.heap.into_sorted_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch_cosine(q: &[f32], qnorm: f32, s: &[u8]) -> Option<f32> {
        SketchQuery::new(q, qnorm).cosine(s)
    }

    #[test]
    fn the_simd_dot_product_equals_the_portable_one() {
        let mut x = 99u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for dim in [0, 1, 15, 16, 17, 384, 1000] {
            let q: Vec<i16> = (0..dim).map(|_| next() as i16).collect();
            let c: Vec<u8> = (0..dim).map(|_| next() as u8).collect();
            let want = q.iter().zip(&c).fold(0i32, |s, (a, b)| {
                s.wrapping_add(i32::from(*a) * i32::from(*b as i8))
            });
            assert_eq!(dot_i16_i8_portable(&q, &c), want, "dim {dim}");
            assert_eq!(dot_i16_i8_for_cpu()(&q, &c), want, "dim {dim}");
        }
    }

    #[test]
    fn cosine_from_bytes_matches_the_plain_formula() {
        for dim in [1, 7, 8, 9, 16, 383, 384] {
            let q: Vec<f32> = (0..dim).map(|i| ((i * 7) % 5) as f32 - 1.5).collect();
            let v: Vec<f32> = (0..dim)
                .map(|i| ((i * 3) % 11) as f32 * 0.1 + 0.01)
                .collect();
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            let dot: f32 = q.iter().zip(&v).map(|(a, b)| a * b).sum();
            let qn = q.iter().map(|x| x * x).sum::<f32>().sqrt();
            let vn = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            let got = cosine_bytes(&q, qn, &bytes);
            assert!((got - dot / (qn * vn)).abs() < 1e-4, "dim {dim}: {got}");
        }
    }

    #[test]
    fn a_sketch_scores_within_a_hair_of_the_exact_cosine() {
        let dim = 384;
        let mut x = 12345u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) - 0.5
        };
        for _ in 0..50 {
            let v: Vec<f32> = (0..dim).map(|_| next()).collect();
            let q: Vec<f32> = (0..dim).map(|_| next()).collect();
            let qn = q.iter().map(|a| a * a).sum::<f32>().sqrt();
            let bytes: Vec<u8> = v.iter().flat_map(|a| a.to_le_bytes()).collect();
            let exact = cosine_bytes(&q, qn, &bytes);
            let approx = sketch_cosine(&q, qn, &sketch(&v)).unwrap();
            assert!((exact - approx).abs() < 5e-3, "{exact} vs {approx}");
            let vn = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            let own = sketch_cosine(&v, vn, &sketch(&v)).unwrap();
            assert!(own > 0.999, "{own}");
        }
        assert_eq!(sketch_cosine(&[1.0; 3], 1.0, &sketch(&[1.0; 4])), None);
        // Near-zero vectors and the largest dimension the i16 codes cover
        // without clamping, at its worst case (every component at the
        // extreme, same sign): no overflow, cosine 1.
        assert_eq!(sketch_cosine(&[0.0; 8], 0.0, &sketch(&[1.0; 8])), Some(0.0));
        for dim in [516, 4096] {
            let v = vec![-1.0f32; dim];
            let n = (dim as f32).sqrt();
            let own = sketch_cosine(&v, n, &sketch(&v)).unwrap();
            assert!((own - 1.0).abs() < 1e-3, "dim {dim}: {own}");
        }
    }

    #[test]
    fn top_k_keeps_the_best_in_order() {
        let mut t = TopK::new(3);
        for (s, id) in [(0.1, 1), (0.9, 2), (0.5, 3), (0.7, 4), (0.2, 5)] {
            t.push(s, id);
        }
        let ids: Vec<u32> = t.into_sorted().into_iter().map(|s| s.1).collect();
        assert_eq!(ids, vec![2, 4, 3]);
    }
}

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

/// Approximate cosine of `q` (norm `qnorm`) and a sketched vector, or
/// `None` if `s` is not a sketch of a `q.len()`-dimensional vector.
pub fn sketch_cosine(q: &[f32], qnorm: f32, s: &[u8]) -> Option<f32> {
    if s.len() != sketch_len(q.len()) {
        return None;
    }
    let scale = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let norm = f32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let codes = &s[8..];
    let mut acc = [0f32; 16];
    let (qc, cc) = (q.chunks_exact(16), codes.chunks_exact(16));
    let (qr, cr) = (qc.remainder(), cc.remainder());
    for (x, c) in qc.zip(cc) {
        // Fixed-size copies: no bounds checks, so the loop vectorises.
        let x: [f32; 16] = x.try_into().unwrap_or([0.0; 16]);
        let c: [u8; 16] = c.try_into().unwrap_or([0; 16]);
        for i in 0..16 {
            acc[i] += x[i] * f32::from(c[i] as i8);
        }
    }
    let mut d: f32 = acc.iter().sum();
    for (x, c) in qr.iter().zip(cr) {
        d += x * f32::from(*c as i8);
    }
    let n = qnorm * norm;
    Some(if n > f32::EPSILON { d * scale / n } else { 0.0 })
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

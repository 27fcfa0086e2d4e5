//! In-memory copies of the pending vectors, kept by the writing process.
//!
//! Every search scans the pending additions exactly; read from LMDB that
//! costs ~0.7 µs per item and query (measured), so a bulk load that outruns
//! the tree builder made unfiltered searches slow. A flat copy in memory
//! scores an item in a fraction of that.
//!
//! It is only an accelerator: item ids are never reused and a vector never
//! changes, so an entry is either right or absent. A search whose store
//! snapshot lists an id this map lacks (not yet inserted, already evicted,
//! or over the cap) reads that one from LMDB. Readers in other processes
//! have no copy and always read LMDB.

use roaring::RoaringBitmap;
use std::collections::HashMap;
use std::sync::RwLock;

/// At most this many vectors are kept (384-d: ~1.5 KiB each, so ~150 MiB).
pub const DEFAULT_CAP: usize = 100_000;

/// A vector with its norm, by item id.
type ById = HashMap<u32, (f32, Box<[f32]>)>;

pub struct HotVectors {
    map: RwLock<ById>,
    cap: usize,
}

/// Dot product in eight independent lanes, which the compiler vectorises.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

impl HotVectors {
    pub fn new(cap: usize) -> HotVectors {
        HotVectors {
            map: RwLock::new(HashMap::new()),
            cap,
        }
    }

    pub fn insert<'a>(&self, items: impl IntoIterator<Item = (u32, &'a [f32])>) {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        for (id, v) in items {
            if m.len() >= self.cap {
                break;
            }
            let norm = dot(v, v).sqrt();
            m.insert(id, (norm, v.into()));
        }
    }

    pub fn remove(&self, ids: impl IntoIterator<Item = u32>) {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            m.remove(&id);
        }
    }

    /// How many vectors are held.
    pub fn count(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Scores the ids it holds with cosine similarity to `q` (norm
    /// `qnorm`) and returns the ids it does not hold.
    pub fn score(
        &self,
        q: &[f32],
        qnorm: f32,
        ids: &RoaringBitmap,
        mut push: impl FnMut(f32, u32),
    ) -> RoaringBitmap {
        let m = self.map.read().unwrap_or_else(|p| p.into_inner());
        if m.is_empty() {
            // A reader process, or nothing pending: no lookup per id.
            return ids.clone();
        }
        let mut missing = RoaringBitmap::new();
        for id in ids {
            match m.get(&id) {
                Some((norm, v)) if v.len() == q.len() => {
                    let n = qnorm * norm;
                    push(if n > f32::EPSILON { dot(q, v) / n } else { 0.0 }, id);
                }
                _ => {
                    missing.insert(id);
                }
            }
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_what_it_holds_and_reports_the_rest() {
        let h = HotVectors::new(2);
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        h.insert([(1, &a[..]), (2, &a[..]), (3, &a[..])]);
        assert_eq!(h.count(), 2, "capped");
        let ids: RoaringBitmap = [1, 2, 3].into_iter().collect();
        let mut got = Vec::new();
        let missing = h.score(&a, dot(&a, &a).sqrt(), &ids, |s, id| got.push((id, s)));
        assert_eq!(missing.iter().collect::<Vec<_>>(), vec![3]);
        assert!(got.iter().all(|(_, s)| (s - 1.0).abs() < 1e-5), "{got:?}");
        h.remove([1]);
        assert_eq!(h.count(), 1);
        assert_eq!(dot(&[1.0; 9], &[2.0; 9]), 18.0);
    }
}

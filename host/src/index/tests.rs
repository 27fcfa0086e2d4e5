//! White-box tests of the build bookkeeping, on real LMDB files.

use super::*;

fn opts() -> IndexOptions {
    IndexOptions {
        max_pending: u64::MAX,
        idle_build: Duration::from_secs(3600),
        max_age: Duration::from_secs(3600),
        max_build: 10,
        ..IndexOptions::default()
    }
}

/// Unit vectors along distinct directions of a 8-d space.
fn vector(i: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..8)
        .map(|j| ((i * 31 + j * 7) % 13) as f32 * 0.05)
        .collect();
    v[i % 8] += 1.0;
    v
}

fn load(ix: &VectorIndex, n: usize) {
    let ops: Vec<DocOp> = (0..n)
        .map(|i| DocOp::Upsert {
            doc_id: format!("d{i}"),
            chunks: vec![ChunkIn {
                chunk_id: format!("d{i}#0"),
                text: format!("t{i}"),
                metadata: vec![],
                vector: vector(i),
                model: None,
                source: None,
            }],
        })
        .collect();
    ix.apply(&ops).expect("apply");
}

fn findable(ix: &VectorIndex, n: usize) -> usize {
    (0..n)
        .filter(|i| {
            ix.search(&vector(*i), 3, &[])
                .expect("search")
                .iter()
                .any(|h| h.doc_id == format!("d{i}"))
        })
        .count()
}

/// Two builds that took the same snapshot (what `build_now` racing the
/// background builder did) must not mark the items they both folded in as
/// deleted. Before the fix, the second `finish_build` found their pending
/// entries gone and read that as "deleted during the build".
#[test]
fn finishing_the_same_snapshot_twice_deletes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = VectorIndex::open(dir.path(), opts()).expect("open");
    load(&ix, 25);
    let c = &ix.core;
    let snap = c
        .store
        .lmdb
        .read(|r| c.store.snapshot(r, c.opts.max_build))
        .expect("snapshot");
    assert_eq!(snap.adds.len(), 10);
    for _ in 0..2 {
        c.ann
            .build(
                Layout::Float,
                8,
                &snap,
                &Default::default(),
                &c.pool,
                &c.stop,
            )
            .expect("build");
        c.store
            .lmdb
            .write(|w| c.store.finish_build(w, &snap, Layout::Float))
            .expect("finish");
    }
    let a = ix.audit().expect("audit");
    assert!(a.is_clean(), "{a:?}");
    assert_eq!((a.in_trees, a.pending_adds, a.pending_deletes), (10, 15, 0));
    ix.build_now().expect("build");
    assert_eq!(findable(&ix, 25), 25);
    assert_eq!(ix.stats().expect("stats").in_trees, 25);
}

/// An index left damaged by the bug (live items neither in the trees nor
/// pending, live items pending deletion) is repaired when it is opened for
/// writing.
#[test]
fn opening_repairs_items_lost_by_earlier_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let ix = VectorIndex::open(dir.path(), opts()).expect("open");
        load(&ix, 30);
        ix.build_now().expect("build");
        let c = &ix.core;
        // Remove 0..10 from the trees behind the store's back, and mark
        // 10..15 (still in the trees) as pending deletion.
        let snap = store::PendingSnapshot {
            adds: vec![],
            dels: (0..10).collect(),
        };
        c.ann
            .build(
                Layout::Float,
                8,
                &snap,
                &Default::default(),
                &c.pool,
                &c.stop,
            )
            .expect("build");
        c.store
            .lmdb
            .write(|w| {
                // Indexes of those versions kept every vector in the store
                // (built ones no longer are), which is what makes the
                // repair possible.
                for id in 0..10u32 {
                    let bytes = store::vector_bytes(&vector(id as usize));
                    c.store
                        .vectors
                        .put(w, &id, &bytes)
                        .map_err(|e| IndexError::lmdb(&c.store.lmdb.path, "test", e))?;
                }
                for id in 10..15u32 {
                    c.store
                        .pending
                        .put(w, &id, &[store::PENDING_DEL])
                        .map_err(|e| IndexError::lmdb(&c.store.lmdb.path, "test", e))?;
                }
                Ok(())
            })
            .expect("damage");
        let a = ix.audit().expect("audit");
        assert_eq!(
            (a.lost.len(), a.live_pending_delete.len()),
            (10, 5),
            "{a:?}"
        );
        assert_eq!(findable(&ix, 30), 15, "the damage is real");
    }
    let ix = VectorIndex::open(dir.path(), opts()).expect("reopen");
    let a = ix.audit().expect("audit");
    assert!(a.is_clean(), "{a:?}");
    assert_eq!(findable(&ix, 30), 30);
    ix.build_now().expect("build");
    assert_eq!(ix.stats().expect("stats").in_trees, 30);
    assert_eq!(findable(&ix, 30), 30);
}

/// The store keeps no copy of a built vector; the exact scans read arroy's
/// item records in place, which must decode to what arroy itself returns.
#[test]
fn built_vectors_are_read_from_the_trees_exactly_as_arroy_stores_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = VectorIndex::open(dir.path(), opts()).expect("open");
    load(&ix, 25);
    ix.build_now().expect("build");
    let c = &ix.core;
    let ids: RoaringBitmap = (0..25).collect();
    let in_store = c
        .store
        .lmdb
        .read(|r| {
            (0..25)
                .map(|id| c.store.vector(r, id))
                .collect::<Result<Vec<_>, _>>()
        })
        .expect("store");
    assert!(in_store.iter().all(Option::is_none), "no second copy");
    let (mut raw, mut arroy) = (Vec::new(), Vec::new());
    c.ann
        .lmdb
        .read(|r| {
            // Sparse (one lookup each) and dense (one cursor) both.
            for set in [ids.clone(), [3u32, 24].into_iter().collect()] {
                c.ann.scan_items(r, 8, &set, |id, b| {
                    raw.push((id, store::bytes_vector(b)));
                })?;
            }
            for id in [3u32, 24].into_iter().chain(0..25) {
                arroy.push((id, c.ann.float_item(r, id)?.expect("held")));
            }
            Ok(())
        })
        .expect("read");
    raw.sort_by_key(|x| x.0);
    arroy.sort_by_key(|x| x.0);
    assert_eq!(raw, arroy);
    assert!(ix.reusable_vectors("d7", "m").expect("reuse").is_empty());
    // A built chunk's vector is reusable by the same embedder.
    ix.apply(&[DocOp::Upsert {
        doc_id: "dm".into(),
        chunks: vec![ChunkIn {
            chunk_id: "dm#0".into(),
            text: "tm".into(),
            metadata: vec![],
            vector: vector(40),
            model: Some("m".into()),
            source: None,
        }],
    }])
    .expect("apply");
    for when in ["pending", "built"] {
        let reused = ix.reusable_vectors("dm", "m").expect("reuse");
        assert_eq!(
            reused.get("dm#0"),
            Some(&("tm".to_string(), vector(40))),
            "{when}"
        );
        ix.build_now().expect("build");
    }
}

/// A pseudo-random unit-ish vector of `dim` components (xorshift, so the
/// test needs no generator crate and is the same on every run).
fn noise(seed: u64, dim: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn load_vectors(ix: &VectorIndex, vs: &[Vec<f32>]) {
    let ops: Vec<DocOp> = vs
        .iter()
        .enumerate()
        .map(|(i, v)| DocOp::Upsert {
            doc_id: format!("d{i}"),
            chunks: vec![ChunkIn {
                chunk_id: format!("d{i}#0"),
                text: format!("t{i}"),
                metadata: vec![],
                vector: v.clone(),
                model: Some("m".into()),
                source: None,
            }],
        })
        .collect();
    ix.apply(&ops).expect("apply");
}

/// The exact top `k` doc ids of `q` over `vs`.
fn exact_top(vs: &[Vec<f32>], q: &[f32], k: usize) -> Vec<String> {
    let cos = |a: &[f32]| {
        let d: f32 = a.iter().zip(q).map(|(x, y)| x * y).sum();
        d / (hot::dot(a, a).sqrt() * hot::dot(q, q).sqrt())
    };
    let mut s: Vec<(f32, usize)> = vs.iter().enumerate().map(|(i, v)| (cos(v), i)).collect();
    s.sort_by(|a, b| b.0.total_cmp(&a.0));
    s.iter().take(k).map(|(_, i)| format!("d{i}")).collect()
}

/// A new index of 384 dimensions keeps binary trees and its f32 vectors in
/// the store, scores what the trees propose exactly (a hit's score is the
/// true cosine), finds the exact top 10 after a build, and keeps its layout
/// when reopened with other options; an 8-d index stays float.
#[test]
fn a_wide_index_keeps_binary_trees_and_rescores_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 30 clusters of 20, as embeddings of related texts are: a query near
    // a centroid has a well separated top 10 (on uniform noise every
    // neighbour is nearly as far as any other point, and no approximate
    // index keeps its top 10).
    let centroids: Vec<Vec<f32>> = (0..30).map(|c| noise(10_000 + c, 384)).collect();
    let near = |c: &[f32], seed: u64| -> Vec<f32> {
        let n = noise(seed, 384);
        c.iter().zip(&n).map(|(x, e)| x + 0.6 * e).collect()
    };
    let vs: Vec<Vec<f32>> = (0..600)
        .map(|i| near(&centroids[(i % 30) as usize], i))
        .collect();
    {
        let ix = VectorIndex::open(dir.path(), opts()).expect("open");
        load_vectors(&ix, &vs);
        ix.build_now().expect("build");
        let st = ix.stats().expect("stats");
        assert_eq!(
            (st.layout, st.in_trees, st.pending),
            (Layout::Binary, 600, 0)
        );
        let a = ix.audit().expect("audit");
        assert!(a.is_clean(), "{a:?}");
        // The store's copy is what re-scores: every built vector is there.
        let c = &ix.core;
        let stored = c
            .store
            .lmdb
            .read(|r| {
                let mut n = 0;
                c.store
                    .scan_vectors(r, &(0..600).collect(), |_, _| n += 1)?;
                Ok(n)
            })
            .expect("scan");
        assert_eq!(stored, 600);
        let mut found = 0;
        for qi in 0..20u64 {
            let q = near(&centroids[(qi * 7 % 30) as usize], 1000 + qi);
            let hits = ix.search(&q, 10, &[]).expect("search");
            let want = exact_top(&vs, &q, 10);
            found += hits.iter().filter(|h| want.contains(&h.doc_id)).count();
            let top = &hits[0];
            let i: usize = top.doc_id[1..].parse().expect("id");
            let v = &vs[i];
            let cos = hot::dot(v, &q) / (hot::dot(v, v).sqrt() * hot::dot(&q, &q).sqrt());
            assert!((top.score - cos).abs() < 1e-5, "{} vs {cos}", top.score);
        }
        assert!(found >= 190, "recall@10 {found}/200");
        assert_eq!(
            ix.reusable_vectors("d3", "m").expect("reuse")["d3#0"].1,
            vs[3]
        );
    }
    let float_opts = IndexOptions {
        binary_trees: false,
        ..opts()
    };
    let ix = VectorIndex::open(dir.path(), float_opts.clone()).expect("reopen");
    assert_eq!(ix.stats().expect("stats").layout, Layout::Binary);
    drop(ix);
    let small = tempfile::tempdir().expect("tempdir");
    let ix = VectorIndex::open(small.path(), opts()).expect("open");
    load(&ix, 5);
    assert_eq!(ix.stats().expect("stats").layout, Layout::Float);
    // Sparse (feature hashing) or one-signed vectors: the signs say too
    // little, so the layout stays float whatever the options.
    for v in [
        (0..384)
            .map(|i| [0.0, 1.0, 0.0, -0.5][i % 4])
            .collect::<Vec<f32>>(),
        (0..384).map(|i| 0.01 + (i % 7) as f32).collect(),
    ] {
        let d = tempfile::tempdir().expect("tempdir");
        let ix = VectorIndex::open(d.path(), opts()).expect("open");
        load_vectors(&ix, &[v]);
        assert_eq!(ix.stats().expect("stats").layout, Layout::Float);
    }
    let flt = tempfile::tempdir().expect("tempdir");
    let ix = VectorIndex::open(flt.path(), float_opts).expect("open");
    load_vectors(&ix, &vs[..50]);
    ix.build_now().expect("build");
    assert_eq!(ix.stats().expect("stats").layout, Layout::Float);
}

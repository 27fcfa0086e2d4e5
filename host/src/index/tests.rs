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

/// Document `d<i>`: one chunk with `text` and [`vector`]`(i)`.
fn upsert(i: usize, text: String) -> DocOp {
    DocOp::Upsert {
        doc_id: format!("d{i}"),
        chunks: vec![ChunkIn {
            chunk_id: format!("d{i}#0"),
            text,
            metadata: vec![],
            vector: vector(i),
            model: None,
            source: None,
        }],
    }
}

fn load(ix: &VectorIndex, n: usize) {
    let ops: Vec<DocOp> = (0..n).map(|i| upsert(i, format!("t{i}"))).collect();
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
            .build(8, &snap, &Default::default(), &c.pool, &c.stop)
            .expect("build");
        c.store
            .lmdb
            .write(|w| c.store.finish_build(w, &snap))
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
            .build(8, &snap, &Default::default(), &c.pool, &c.stop)
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
            let reader = c.ann.reader(r)?.expect("built");
            for id in [3u32, 24].into_iter().chain(0..25) {
                arroy.push((id, reader.item_vector(r, id).expect("arroy").expect("held")));
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

/// New items fill LMDB pages, in the store and in the trees: a 384-d
/// vector (1.5 KB) fits two to a 4 KB page, and ascending puts without
/// `MDB_APPEND` split every page in half, leaving one (4 KB per vector).
#[test]
fn new_vectors_are_packed_two_to_a_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = IndexOptions {
        trees: Some(1),
        max_build: 10_000,
        ..opts()
    };
    let ix = VectorIndex::open(dir.path(), opts).expect("open");
    let n = 1000u64;
    let ops: Vec<DocOp> = (0..n)
        .map(|i| DocOp::Upsert {
            doc_id: format!("d{i}"),
            chunks: vec![ChunkIn {
                chunk_id: format!("d{i}#0"),
                text: String::new(),
                metadata: vec![],
                vector: (0..384)
                    .map(|j| ((i * 7 + j * 13) % 17) as f32 - 8.0)
                    .collect(),
                model: None,
                source: None,
            }],
        })
        .collect();
    // In batches, as a stream writes.
    for b in ops.chunks(100) {
        ix.apply(b).expect("apply");
    }
    let c = &ix.core;
    let per_item = |bytes: u64| bytes as f64 / n as f64;
    let (stored, pending) = c
        .store
        .lmdb
        .read(|r| {
            let e = |e| IndexError::lmdb(&c.store.lmdb.path, "stat", e);
            Ok((
                store::page_bytes(&c.store.vectors.stat(r).map_err(e)?),
                store::page_bytes(&c.store.pending.stat(r).map_err(e)?),
            ))
        })
        .expect("stat");
    assert!(
        per_item(stored) < 2300.0,
        "store: {} bytes per vector",
        per_item(stored)
    );
    // A pending entry (its int8 sketch, ~400 bytes) fits ten to a page.
    assert!(
        per_item(pending) < 600.0,
        "pending: {} bytes per entry",
        per_item(pending)
    );
    ix.build_now().expect("build");
    let trees = c.ann.live_bytes().expect("trees");
    // One tree of ~1000 items adds a few split nodes and id lists.
    assert!(
        per_item(trees) < 2600.0,
        "trees: {} bytes per item",
        per_item(trees)
    );
}

/// Keyword postings are kept in blocks of item ids, so a write rewrites only
/// the blocks it touches: a term in documents across several blocks is
/// still found in all of them, deletes reach the right block, and an index
/// written with one list per term (before blocks) is re-indexed at open.
#[test]
fn keyword_postings_span_blocks_and_the_old_layout_is_reindexed_at_open() {
    let block = keyword::BLOCK_ITEMS as usize;
    let n = block * 2 + block / 2;
    // A rare word every quarter block; two of its documents get deleted.
    let step = (block / 4).max(1);
    let (gone_a, gone_b) = (format!("d{step}"), format!("d{}", step * 5));
    let text = |i: usize| {
        let rare = if i.is_multiple_of(step) { " rare" } else { "" };
        format!("common w{i}{rare}")
    };
    let want: Vec<String> = {
        let mut w: Vec<String> = (0..n)
            .step_by(step)
            .map(|i| format!("d{i}"))
            .filter(|d| *d != gone_a && *d != gone_b)
            .collect();
        w.sort();
        w
    };
    let rare_docs = |ix: &VectorIndex| -> Vec<String> {
        let mut d: Vec<String> = ix
            .keyword_search("rare", n, &[])
            .expect("keyword search")
            .into_iter()
            .map(|h| h.doc_id)
            .collect();
        d.sort();
        d
    };
    let common_keys = |ix: &VectorIndex| -> Vec<String> {
        let store = &ix.core.store;
        let keys = store
            .lmdb
            .read(|r| Ok(store.postings_keys(r)))
            .expect("keys");
        keys.into_iter()
            .filter(|k| k.starts_with("common"))
            .collect()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let totals: (u64, u64);
    {
        let ix = VectorIndex::open(dir.path(), opts()).expect("open");
        for from in (0..n).step_by(100) {
            let ops: Vec<DocOp> = (from..(from + 100).min(n))
                .map(|i| upsert(i, text(i)))
                .collect();
            ix.apply(&ops).expect("apply");
        }
        ix.apply(&[
            DocOp::Delete {
                doc_id: gone_a.clone(),
            },
            DocOp::Delete {
                doc_id: gone_b.clone(),
            },
        ])
        .expect("delete");
        assert_eq!(rare_docs(&ix), want);
        assert_eq!(
            ix.keyword_search("common", n, &[]).expect("search").len(),
            n - 2
        );
        let w = format!("w{}", n - 1);
        let last = ix.keyword_search(&w, 3, &[]).expect("search");
        assert_eq!(
            last.first().map(|h| h.doc_id.clone()),
            Some(format!("d{}", n - 1))
        );
        let store = &ix.core.store;
        totals = store
            .lmdb
            .read(|r| store.keyword_totals(r))
            .expect("totals");
        assert_eq!(totals.0, (n - 2) as u64);
        assert_eq!(
            common_keys(&ix).len(),
            3,
            "one block per {block} items: {:?}",
            common_keys(&ix)
        );
    }
    // Both older layouts are re-indexed when a writer opens the index: one
    // list per term (before blocks), and blocks of 4,096 (marker `1`).
    for (old, blocks_of) in [("one list per term", None), ("blocks of 4096", Some(4096))] {
        {
            let ix = VectorIndex::open(dir.path(), opts()).expect("open");
            let store = &ix.core.store;
            store
                .lmdb
                .write(|w| {
                    store.rewrite_in_old_layout(w, blocks_of);
                    Ok(())
                })
                .expect("old layout");
            assert_eq!(common_keys(&ix).len(), 1, "{old}: written as such");
        }
        let ix = VectorIndex::open(dir.path(), opts()).expect("reopen");
        assert_eq!(rare_docs(&ix), want, "{old}: re-indexed at open");
        assert_eq!(
            common_keys(&ix).len(),
            3,
            "{old}: back in blocks of {block}"
        );
        let store = &ix.core.store;
        assert_eq!(
            store
                .lmdb
                .read(|r| store.keyword_totals(r))
                .expect("totals"),
            totals,
            "{old}: corpus totals rebuilt once, not added twice"
        );
        assert_eq!(
            ix.keyword_search("common", n, &[]).expect("search").len(),
            n - 2,
            "{old}"
        );
    }
}

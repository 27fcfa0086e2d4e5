//! The vector index on real LMDB files: upserts by document, replacement of
//! every chunk of an old version, tombstones, filters, the pending delta
//! merged with the arroy trees, growth of the map, the writer lock, reopen.

use std::time::Duration;
use weft::index::{ChunkIn, DocOp, IndexError, IndexOptions, VectorIndex};

/// A deterministic unit vector pointing mostly along axis `axis`.
fn unit(dim: usize, axis: usize, wobble: f32) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim)
        .map(|i| ((i * 7 + axis * 13) % 11) as f32 * 0.001 * wobble)
        .collect();
    v[axis % dim] += 1.0;
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn chunk(doc: &str, n: usize, text: &str, vector: Vec<f32>, meta: &[(&str, &str)]) -> ChunkIn {
    ChunkIn {
        chunk_id: format!("{doc}#{n}"),
        text: text.to_string(),
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        vector,
        model: None,
        source: None,
    }
}

fn upsert(doc: &str, chunks: Vec<ChunkIn>) -> DocOp {
    DocOp::Upsert {
        doc_id: doc.to_string(),
        chunks,
    }
}

/// Options under which the builder never runs on its own, so a test
/// decides whether items are in the trees or still pending.
fn manual() -> IndexOptions {
    IndexOptions {
        max_pending: u64::MAX,
        idle_build: Duration::from_secs(3600),
        max_age: Duration::from_secs(3600),
        ..IndexOptions::default()
    }
}

const D: usize = 16;

fn top_doc(ix: &VectorIndex, q: &[f32]) -> Option<String> {
    ix.search(q, 1, &[])
        .unwrap()
        .first()
        .map(|h| h.doc_id.clone())
}

#[test]
fn a_chunk_is_searchable_as_soon_as_apply_returns_and_after_a_build() {
    let dir = tempfile::tempdir().unwrap();
    let ix = VectorIndex::open(dir.path(), manual()).unwrap();
    assert!(ix.search(&unit(D, 0, 1.0), 3, &[]).unwrap().is_empty());
    let mut ops = Vec::new();
    for d in 0..10 {
        ops.push(upsert(
            &format!("doc-{d}"),
            vec![chunk(
                &format!("doc-{d}"),
                0,
                &format!("text {d}"),
                unit(D, d, 1.0),
                &[],
            )],
        ));
    }
    let r = ix.apply(&ops).unwrap();
    assert_eq!(r.applied.items_added, 10);
    assert!(r.rejected.is_empty());
    let hits = ix.search(&unit(D, 3, 0.0), 2, &[]).unwrap();
    assert_eq!(hits[0].doc_id, "doc-3");
    assert_eq!(hits[0].text, "text 3");
    assert!(hits[0].score > 0.99, "{}", hits[0].score);
    assert_eq!(ix.stats().unwrap().pending, 10);
    ix.build_now().unwrap();
    let s = ix.stats().unwrap();
    assert_eq!(
        (s.pending, s.in_trees, s.chunks, s.documents),
        (0, 10, 10, 10)
    );
    assert_eq!(top_doc(&ix, &unit(D, 7, 0.0)).as_deref(), Some("doc-7"));
}

#[test]
fn a_new_version_replaces_every_chunk_of_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let ix = VectorIndex::open(dir.path(), manual()).unwrap();
    let v1 = upsert(
        "doc",
        vec![
            chunk("doc", 0, "old a", unit(D, 1, 1.0), &[]),
            chunk("doc", 1, "old b", unit(D, 2, 1.0), &[]),
            chunk("doc", 2, "old c", unit(D, 3, 1.0), &[]),
        ],
    );
    ix.apply(&[v1]).unwrap();
    ix.build_now().unwrap();
    // Version 2 has one chunk, in a new direction: the old ones must vanish
    // from the trees' results (masked) and from the store.
    let v2 = upsert("doc", vec![chunk("doc", 0, "new", unit(D, 9, 1.0), &[])]);
    let r = ix.apply(&[v2]).unwrap();
    assert_eq!((r.applied.items_added, r.applied.items_removed), (1, 3));
    for when in ["pending", "built"] {
        let hits = ix.search(&unit(D, 2, 0.0), 10, &[]).unwrap();
        let texts: Vec<&str> = hits.iter().map(|h| h.text.as_str()).collect();
        assert_eq!(texts, vec!["new"], "{when}");
        let stored = ix.doc_chunks("doc").unwrap();
        assert_eq!(stored.len(), 1);
        ix.build_now().unwrap();
    }
    assert_eq!(ix.stats().unwrap().in_trees, 1);
}

#[test]
fn unchanged_chunks_of_a_new_version_keep_their_item() {
    let dir = tempfile::tempdir().unwrap();
    let ix = VectorIndex::open(dir.path(), manual()).unwrap();
    let a = chunk("doc", 0, "same", unit(D, 1, 1.0), &[]);
    let b = chunk("doc", 1, "before", unit(D, 2, 1.0), &[]);
    let b2 = chunk("doc", 1, "after", unit(D, 4, 1.0), &[]);
    ix.apply(&[upsert("doc", vec![a.clone(), b])]).unwrap();
    ix.build_now().unwrap();
    let r = ix.apply(&[upsert("doc", vec![a, b2])]).unwrap();
    assert_eq!(r.applied.items_unchanged, 1);
    assert_eq!(r.applied.items_added, 1);
    assert_eq!(r.applied.items_removed, 1);
    // Only the changed chunk waits for the trees.
    assert_eq!(ix.stats().unwrap().pending, 2, "one add, one delete");
}

#[test]
fn a_tombstone_deletes_the_document_and_all_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let ix = VectorIndex::open(dir.path(), manual()).unwrap();
    ix.apply(&[
        upsert(
            "gone",
            vec![
                chunk("gone", 0, "g0", unit(D, 1, 1.0), &[]),
                chunk("gone", 1, "g1", unit(D, 1, 2.0), &[]),
            ],
        ),
        upsert("kept", vec![chunk("kept", 0, "k0", unit(D, 5, 1.0), &[])]),
    ])
    .unwrap();
    ix.build_now().unwrap();
    ix.apply(&[DocOp::Delete {
        doc_id: "gone".into(),
    }])
    .unwrap();
    for when in ["masked", "built"] {
        let hits = ix.search(&unit(D, 1, 0.0), 10, &[]).unwrap();
        assert!(hits.iter().all(|h| h.doc_id == "kept"), "{when}: {hits:?}");
        assert_eq!(hits.len(), 1, "{when}");
        ix.build_now().unwrap();
    }
    assert_eq!(ix.doc_ids().unwrap(), vec!["kept".to_string()]);
    // Deleting what does not exist is fine (a replayed tombstone).
    ix.apply(&[DocOp::Delete {
        doc_id: "gone".into(),
    }])
    .unwrap();
}

#[test]
fn filters_match_metadata_equality_in_the_delta_and_in_the_trees() {
    let dir = tempfile::tempdir().unwrap();
    let ix = VectorIndex::open(dir.path(), manual()).unwrap();
    let mut ops = Vec::new();
    for d in 0..40 {
        let kind = if d % 4 == 0 {
            "policy"
        } else {
            "flight-status"
        };
        let flight = format!("NW{d}");
        ops.push(upsert(
            &format!("d{d}"),
            vec![chunk(
                &format!("d{d}"),
                0,
                "t",
                unit(D, d % D, 1.0),
                &[("kind", kind), ("flight", &flight)],
            )],
        ));
    }
    ix.apply(&ops[..20]).unwrap();
    ix.build_now().unwrap();
    ix.apply(&ops[20..]).unwrap();
    let f = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    let hits = ix
        .search(&unit(D, 1, 0.0), 40, &f("kind", "policy"))
        .unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits
        .iter()
        .all(|h| h.metadata.contains(&("kind".into(), "policy".into()))));
    // One from the trees, one from the pending delta.
    for d in [3, 33] {
        let hits = ix
            .search(&unit(D, 0, 0.0), 5, &f("flight", &format!("NW{d}")))
            .unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].doc_id, format!("d{d}"));
    }
    let both = vec![
        ("kind".to_string(), "policy".to_string()),
        ("flight".to_string(), "NW3".to_string()),
    ];
    assert!(ix.search(&unit(D, 0, 0.0), 5, &both).unwrap().is_empty());
    assert!(ix
        .search(&unit(D, 0, 0.0), 5, &f("kind", "nope"))
        .unwrap()
        .is_empty());
}

#[test]
fn bad_vectors_are_refused_one_document_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let ix = VectorIndex::open(dir.path(), manual()).unwrap();
    let ok = upsert("ok", vec![chunk("ok", 0, "t", unit(D, 1, 1.0), &[])]);
    let short = upsert("short", vec![chunk("short", 0, "t", vec![1.0; 3], &[])]);
    let nan = upsert("nan", vec![chunk("nan", 0, "t", vec![f32::NAN; D], &[])]);
    let zero = upsert("zero", vec![chunk("zero", 0, "t", vec![0.0; D], &[])]);
    let r = ix.apply(&[ok, short, nan, zero]).unwrap();
    let reasons: Vec<(usize, &str)> = r.rejected.iter().map(|(i, m)| (*i, m.as_str())).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].1.contains("3-dimensional"), "{reasons:?}");
    assert!(reasons[1].1.contains("non-finite"), "{reasons:?}");
    assert!(reasons[2].1.contains("all-zero"), "{reasons:?}");
    assert_eq!(ix.doc_ids().unwrap(), vec!["ok".to_string()]);
    let e = ix.search(&[1.0; 3], 1, &[]).unwrap_err().to_string();
    assert!(e.contains("16-dimensional"), "{e}");
}

#[test]
fn the_map_grows_without_anyone_sizing_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = IndexOptions {
        initial_map: 1 << 20,
        ..manual()
    };
    let ix = VectorIndex::open(dir.path(), opts).unwrap();
    // 3000 chunks x 384 floats is ~4.6 MB of vectors alone, with text.
    let text = "x".repeat(500);
    let ops: Vec<DocOp> = (0..3000)
        .map(|d| {
            upsert(
                &format!("d{d}"),
                vec![chunk(
                    &format!("d{d}"),
                    0,
                    &text,
                    unit(384, d % 384, 1.0),
                    &[],
                )],
            )
        })
        .collect();
    for batch in ops.chunks(500) {
        ix.apply(batch).unwrap();
    }
    ix.build_now().unwrap();
    let s = ix.stats().unwrap();
    assert_eq!((s.chunks, s.in_trees), (3000, 3000));
    assert!(s.map_bytes > 2 << 20, "map grew: {}", s.map_bytes);
    assert_eq!(
        top_doc(&ix, &unit(384, 17, 0.0))
            .unwrap()
            .trim_start_matches('d')
            .parse::<usize>()
            .unwrap()
            % 384,
        17
    );
}

#[test]
fn a_second_writer_is_refused_and_a_reopened_index_holds_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ix = VectorIndex::open(dir.path(), manual()).unwrap();
        ix.apply(&[
            upsert("a", vec![chunk("a", 0, "a", unit(D, 1, 1.0), &[])]),
            upsert("b", vec![chunk("b", 0, "b", unit(D, 2, 1.0), &[])]),
        ])
        .unwrap();
        ix.build_now().unwrap();
        ix.apply(&[upsert("c", vec![chunk("c", 0, "c", unit(D, 3, 1.0), &[])])])
            .unwrap();
        // Another process (simulated by a second lock holder) must not write.
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("writer.lock"))
            .unwrap();
        assert!(lock.try_lock().is_err(), "the writer lock is held");
    }
    {
        // A reader (`weft index search`) sees the still-pending `c` too.
        let reader = VectorIndex::open_read_only(dir.path()).unwrap();
        assert_eq!(reader.stats().unwrap().pending, 1);
        assert_eq!(top_doc(&reader, &unit(D, 3, 0.0)).as_deref(), Some("c"));
    }
    let ix = VectorIndex::open(dir.path(), manual()).unwrap();
    assert_eq!(ix.doc_ids().unwrap(), vec!["a", "b", "c"]);
    assert_eq!(top_doc(&ix, &unit(D, 3, 0.0)).as_deref(), Some("c"));
    let missing = VectorIndex::open_read_only(&dir.path().join("nope"))
        .err()
        .unwrap();
    assert!(matches!(missing, IndexError::Missing(_)), "{missing}");
}

#[test]
fn the_builder_folds_pending_items_in_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let opts = IndexOptions {
        idle_build: Duration::from_millis(100),
        ..IndexOptions::default()
    };
    let ix = VectorIndex::open(dir.path(), opts).unwrap();
    ix.apply(&[upsert("a", vec![chunk("a", 0, "a", unit(D, 1, 1.0), &[])])])
        .unwrap();
    let t0 = std::time::Instant::now();
    while ix.stats().unwrap().pending > 0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "builder never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = ix.stats().unwrap();
    assert_eq!((s.in_trees, s.builds), (1, 1));
}

#[test]
fn builds_are_bounded_so_the_trees_catch_up_in_steps() {
    let dir = tempfile::tempdir().unwrap();
    let opts = IndexOptions {
        max_build: 10,
        ..manual()
    };
    let ix = VectorIndex::open(dir.path(), opts).unwrap();
    let ops: Vec<DocOp> = (0..35)
        .map(|d| {
            upsert(
                &format!("d{d}"),
                vec![chunk(
                    &format!("d{d}"),
                    0,
                    "t",
                    unit(D, d % D, 1.0 + d as f32),
                    &[],
                )],
            )
        })
        .collect();
    ix.apply(&ops).unwrap();
    ix.build_now().unwrap();
    let s = ix.stats().unwrap();
    assert_eq!((s.pending, s.in_trees, s.builds), (0, 35, 4), "{s:?}");
}

#[test]
fn pending_vectors_score_the_same_from_memory_and_from_lmdb() {
    let dir = tempfile::tempdir().unwrap();
    let ops: Vec<DocOp> = (0..200)
        .map(|d| {
            upsert(
                &format!("d{d}"),
                vec![chunk(
                    &format!("d{d}"),
                    0,
                    "t",
                    unit(D, d % D, 1.0 + (d % 7) as f32),
                    &[],
                )],
            )
        })
        .collect();
    let q = unit(D, 5, 3.0);
    let hits = |ix: &VectorIndex| -> Vec<(String, f32)> {
        ix.search(&q, 20, &[])
            .unwrap()
            .into_iter()
            .map(|h| (h.chunk_id, h.score))
            .collect()
    };
    let in_memory = {
        let ix = VectorIndex::open(dir.path(), manual()).unwrap();
        ix.apply(&ops).unwrap();
        ix.apply(&[DocOp::Delete {
            doc_id: "d5".into(),
        }])
        .unwrap();
        let s = ix.stats().unwrap();
        assert_eq!((s.pending, s.pending_in_memory), (199, 199));
        hits(&ix)
    };
    // Reopened, nothing is in memory: the same answer comes from LMDB.
    let ix = VectorIndex::open(dir.path(), manual()).unwrap();
    assert_eq!(ix.stats().unwrap().pending_in_memory, 0);
    let from_disk = hits(&ix);
    assert_eq!(in_memory.len(), 20);
    assert!(in_memory.iter().all(|(c, _)| c != "d5#0"));
    // Same hits with the same scores (the two dot products may round
    // differently in the last bits, so compare by id, not by position).
    let by_id = |v: &[(String, f32)]| -> std::collections::BTreeMap<String, f32> {
        v.iter().cloned().collect()
    };
    let (a, b) = (by_id(&in_memory), by_id(&from_disk));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, x) in &a {
        assert!((x - b[k]).abs() < 1e-5, "{k}: {x} vs {}", b[k]);
    }
    ix.build_now().unwrap();
    assert_eq!(ix.stats().unwrap().pending_in_memory, 0);
}

// ------------------------------------------------------------------------
// Nothing is lost: builds (bounded and unbounded, `build_now` and the
// background builder, also at the same time), writes and deletes in any
// order leave every live chunk in the trees or pending, and searchable.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};

fn random_unit(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    loop {
        let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.1 {
            return v.iter().map(|x| x / n).collect();
        }
    }
}

/// What the index must hold: every document's current chunks.
#[derive(Default)]
struct Model {
    docs: BTreeMap<String, Vec<ChunkIn>>,
    /// Texts of every chunk version ever written (texts are unique per
    /// version, so a text not live now must never be returned).
    ever: HashSet<String>,
}

impl Model {
    fn live(&self) -> impl Iterator<Item = &ChunkIn> {
        self.docs.values().flatten()
    }

    fn live_texts(&self) -> HashSet<&str> {
        self.live().map(|c| c.text.as_str()).collect()
    }
}

/// The invariants: a clean audit (every live chunk in the trees or pending
/// addition, nothing live pending deletion, no ghosts), counts that agree
/// with each other and with the model, every live chunk found by a search
/// for its own vector (unfiltered and filtered by its metadata), and no
/// search ever returning a chunk that is not live.
fn check(ix: &VectorIndex, m: &Model, when: &str) {
    let a = ix.audit().unwrap();
    assert!(a.is_clean(), "{when}: {a:?}");
    let live = m.live().count() as u64;
    assert_eq!(a.live, live, "{when}: live chunks: {a:?}");
    assert_eq!(
        a.live + a.pending_deletes,
        a.in_trees + a.pending_adds,
        "{when}: trees - deletions + additions = live: {a:?}"
    );
    let s = ix.stats().unwrap();
    assert_eq!(s.chunks, live, "{when}: stats {s:?}");
    assert_eq!(s.documents, m.docs.len() as u64, "{when}");
    assert_eq!(s.pending, s.pending_adds + s.pending_deletes, "{when}");
    let texts = m.live_texts();
    for c in m.live() {
        for filter in [vec![], c.metadata.clone()] {
            let hits = ix.search(&c.vector, 3, &filter).unwrap();
            assert!(
                hits.iter()
                    .any(|h| h.chunk_id == c.chunk_id && h.text == c.text),
                "{when}: {} ({}) not found by its own vector (filter {filter:?}); got {:?}; {a:?}",
                c.chunk_id,
                c.text,
                hits.iter().map(|h| &h.text).collect::<Vec<_>>()
            );
            for h in &hits {
                assert!(
                    texts.contains(h.text.as_str()),
                    "{when}: dead chunk {} returned",
                    h.text
                );
            }
        }
    }
    assert!(m.ever.len() >= texts.len());
}

#[test]
fn build_now_racing_the_background_builder_loses_nothing() {
    // `weft index build` opens the index for writing, so its background
    // builder is due at once (items are pending) while `build_now` folds
    // the same items in bounded steps.
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut m = Model::default();
    let racing = IndexOptions {
        max_build: 40,
        idle_build: Duration::from_millis(1),
        max_age: Duration::from_millis(1),
        max_pending: 1,
        ..IndexOptions::default()
    };
    for round in 0..4 {
        {
            let ix = VectorIndex::open(dir.path(), manual()).unwrap();
            let ops: Vec<DocOp> = (0..400)
                .map(|i| {
                    let doc = format!("r{round}d{i}");
                    let c = chunk(&doc, 0, &doc, random_unit(&mut rng, D), &[]);
                    m.docs.insert(doc.clone(), vec![c.clone()]);
                    m.ever.insert(doc.clone());
                    upsert(&doc, vec![c])
                })
                .collect();
            for b in ops.chunks(100) {
                ix.apply(b).unwrap();
            }
        }
        let ix = VectorIndex::open(dir.path(), racing.clone()).unwrap();
        ix.build_now().unwrap();
        check(&ix, &m, &format!("round {round}, after build_now"));
    }
    let ix = VectorIndex::open(dir.path(), manual()).unwrap();
    ix.build_now().unwrap();
    let s = ix.stats().unwrap();
    assert_eq!((s.pending, s.in_trees, s.chunks), (0, 1600, 1600), "{s:?}");
    check(&ix, &m, "at the end");
}

#[test]
fn random_writes_deletes_and_builds_keep_every_live_chunk_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut m = Model::default();
    let mut version = 0u32;
    let opts = |rng: &mut StdRng| IndexOptions {
        // Bounded (small and mid) and effectively unbounded builds.
        max_build: [7, 50, 100_000][rng.random_range(0..3)],
        max_pending: rng.random_range(1..80),
        idle_build: Duration::from_millis(rng.random_range(1..30)),
        max_age: Duration::from_millis(rng.random_range(5..200)),
        hot_vectors: [0, 30, 10_000][rng.random_range(0..3)],
        // Filtered searches through the trees, exactly, or either.
        exact_filter_below: [0.0, 0.5, 2.0][rng.random_range(0..3)],
        ..IndexOptions::default()
    };
    let mut ix = Some(VectorIndex::open(dir.path(), opts(&mut rng)).unwrap());
    for step in 0..160 {
        let index = ix.as_ref().unwrap();
        let roll = rng.random_range(0..100);
        if roll < 45 {
            let mut ops = Vec::new();
            for _ in 0..rng.random_range(1..10) {
                let doc = format!("doc{}", rng.random_range(0..60));
                version += 1;
                let old = m.docs.get(&doc).cloned().unwrap_or_default();
                let n = rng.random_range(1..7);
                let chunks: Vec<ChunkIn> = (0..n)
                    .map(|i| match old.get(i) {
                        // An unchanged chunk keeps its item.
                        Some(c) if rng.random_bool(0.3) => c.clone(),
                        _ => {
                            let kind = ["a", "b", "c"][rng.random_range(0..3)];
                            chunk(
                                &doc,
                                i,
                                &format!("{doc} v{version} c{i}"),
                                random_unit(&mut rng, D),
                                &[("kind", kind)],
                            )
                        }
                    })
                    .collect();
                for c in &chunks {
                    m.ever.insert(c.text.clone());
                }
                // Ops in one batch apply in order; the model follows.
                m.docs.insert(doc.clone(), chunks.clone());
                ops.push(upsert(&doc, chunks));
            }
            let r = index.apply(&ops).unwrap();
            assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        } else if roll < 60 {
            let mut ops = Vec::new();
            for _ in 0..rng.random_range(1..4) {
                let doc = format!("doc{}", rng.random_range(0..60));
                m.docs.remove(&doc);
                ops.push(DocOp::Delete { doc_id: doc });
            }
            index.apply(&ops).unwrap();
        } else if roll < 75 {
            index.build_now().unwrap();
        } else if roll < 85 {
            // Let the background builder work.
            std::thread::sleep(Duration::from_millis(rng.random_range(5..60)));
        } else if roll < 90 {
            drop(ix.take());
            ix = Some(VectorIndex::open(dir.path(), opts(&mut rng)).unwrap());
        } else {
            check(index, &m, &format!("step {step}"));
        }
    }
    let index = ix.take().unwrap();
    check(&index, &m, "before the final build");
    index.build_now().unwrap();
    check(&index, &m, "after the final build");
    drop(index);
    let ix = VectorIndex::open(dir.path(), manual()).unwrap();
    ix.build_now().unwrap();
    let s = ix.stats().unwrap();
    assert_eq!(s.pending, 0, "{s:?}");
    assert_eq!(s.in_trees, m.live().count() as u64, "{s:?}");
    check(&ix, &m, "reopened, built");
    drop(ix);
    let reader = VectorIndex::open_read_only(dir.path()).unwrap();
    check(&reader, &m, "read-only");
}

#[test]
fn a_small_filter_is_answered_exactly_from_built_and_pending_items() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let ix = VectorIndex::open(dir.path(), manual()).unwrap();
    let docs: Vec<(String, Vec<f32>, bool)> = (0..600)
        .map(|i| (format!("d{i}"), random_unit(&mut rng, D), i % 10 == 0))
        .collect();
    let ops = |range: std::ops::Range<usize>| -> Vec<DocOp> {
        docs[range]
            .iter()
            .map(|(d, v, tagged)| {
                let t = if *tagged { "yes" } else { "no" };
                upsert(d, vec![chunk(d, 0, d, v.clone(), &[("tag", t)])])
            })
            .collect()
    };
    // Half built, half pending; one built and one pending tagged doc deleted.
    ix.apply(&ops(0..300)).unwrap();
    ix.build_now().unwrap();
    ix.apply(&ops(300..600)).unwrap();
    for d in ["d10", "d510"] {
        ix.apply(&[DocOp::Delete { doc_id: d.into() }]).unwrap();
    }
    let filter = vec![("tag".to_string(), "yes".to_string())];
    for _ in 0..20 {
        let q = random_unit(&mut rng, D);
        let mut truth: Vec<(f32, &str)> = docs
            .iter()
            .filter(|(d, _, tagged)| *tagged && d != "d10" && d != "d510")
            .map(|(d, v, _)| (v.iter().zip(&q).map(|(a, b)| a * b).sum(), d.as_str()))
            .collect();
        truth.sort_by(|a, b| b.0.total_cmp(&a.0));
        let hits = ix.search(&q, 10, &filter).unwrap();
        let got: Vec<&str> = hits.iter().map(|h| h.doc_id.as_str()).collect();
        let want: Vec<&str> = truth.iter().take(10).map(|t| t.1).collect();
        assert_eq!(got, want);
        for (h, t) in hits.iter().zip(&truth) {
            assert!((h.score - t.0).abs() < 1e-4, "{} vs {}", h.score, t.0);
        }
    }
}

// ---- Hybrid retrieval: the keyword side (BM25 postings in the store's
// LMDB environment), the three modes, and their filters.

use weft::index::{rrf_fuse, Query, SearchMode};

fn ids(hits: &[weft::index::SearchHit]) -> Vec<String> {
    hits.iter().map(|h| h.chunk_id.clone()).collect()
}

/// Ten documents about axis 0..10, each with its own words; doc-7 alone
/// mentions the code `XK42` but points along another axis than the query.
fn corpus(ix: &VectorIndex) {
    let mut ops = Vec::new();
    for d in 0..10 {
        let doc = format!("doc-{d}");
        let text = if d == 7 {
            "Refund code XK42 applies to cancelled flights".to_string()
        } else {
            format!("General policy text number {d} about baggage and seats")
        };
        let kind = if d % 2 == 0 { "even" } else { "odd" };
        ops.push(upsert(
            &doc,
            vec![chunk(&doc, 0, &text, unit(D, d, 1.0), &[("kind", kind)])],
        ));
    }
    let r = ix.apply(&ops).unwrap();
    assert!(r.rejected.is_empty());
}

#[test]
fn keyword_search_finds_an_exact_term_the_vectors_miss() {
    let dir = tempfile::tempdir().unwrap();
    let ix = VectorIndex::open(dir.path(), manual()).unwrap();
    corpus(&ix);
    // The query vector points at doc-2; doc-7 is orthogonal to it.
    let q = unit(D, 2, 0.0);
    for built in [false, true] {
        let by_vector = ids(&ix.search(&q, 3, &[]).unwrap());
        assert!(!by_vector.contains(&"doc-7#0".to_string()), "{by_vector:?}");
        let by_words = ix.keyword_search("what is xk42?", 3, &[]).unwrap();
        assert_eq!(ids(&by_words), vec!["doc-7#0"], "only doc-7 has the term");
        assert!(by_words[0].score > 0.0);
        let hybrid = ix
            .query(&Query::new(SearchMode::Hybrid, &q, "what is xk42?", 3, &[]))
            .unwrap();
        assert!(ids(&hybrid).contains(&"doc-7#0".to_string()), "{hybrid:?}");
        // Building the trees changes nothing on the keyword side.
        if !built {
            ix.build_now().unwrap();
        }
    }
    // Case and punctuation do not matter; a word no chunk has finds nothing.
    assert_eq!(
        ids(&ix.keyword_search("XK42.", 3, &[]).unwrap()),
        vec!["doc-7#0"]
    );
    assert!(ix.keyword_search("zeppelin", 3, &[]).unwrap().is_empty());
    // BM25 ranks the chunk with the rarer term first: "flights" is only in
    // doc-7, "baggage" in nine.
    let r = ix.keyword_search("baggage flights", 10, &[]).unwrap();
    assert_eq!(r[0].chunk_id, "doc-7#0");
    assert_eq!(r.len(), 10);
}

#[test]
fn a_new_version_replaces_its_postings_and_a_tombstone_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ix = VectorIndex::open(dir.path(), manual()).unwrap();
        corpus(&ix);
        ix.apply(&[upsert(
            "doc-7",
            vec![
                chunk("doc-7", 0, "Gate changed to Z70", unit(D, 7, 1.0), &[]),
                chunk("doc-7", 1, "Boarding at 14:10", unit(D, 8, 1.0), &[]),
            ],
        )])
        .unwrap();
        assert!(
            ix.keyword_search("xk42", 5, &[]).unwrap().is_empty(),
            "old term gone"
        );
        assert_eq!(
            ids(&ix.keyword_search("z70", 5, &[]).unwrap()),
            vec!["doc-7#0"]
        );
        assert_eq!(
            ids(&ix.keyword_search("boarding", 5, &[]).unwrap()),
            vec!["doc-7#1"]
        );
        ix.build_now().unwrap();
    }
    // Real files: the postings were committed with the chunks.
    let ix = VectorIndex::open(dir.path(), manual()).unwrap();
    assert_eq!(
        ids(&ix.keyword_search("z70", 5, &[]).unwrap()),
        vec!["doc-7#0"]
    );
    // A version with fewer chunks drops the postings of the lost chunk.
    ix.apply(&[upsert(
        "doc-7",
        vec![chunk(
            "doc-7",
            0,
            "Gate changed to Z70",
            unit(D, 7, 1.0),
            &[],
        )],
    )])
    .unwrap();
    assert!(ix.keyword_search("boarding", 5, &[]).unwrap().is_empty());
    ix.apply(&[DocOp::Delete {
        doc_id: "doc-7".into(),
    }])
    .unwrap();
    assert!(
        ix.keyword_search("z70", 5, &[]).unwrap().is_empty(),
        "tombstone"
    );
    assert!(ix.keyword_search("gate", 5, &[]).unwrap().is_empty());
    // The other documents' postings are untouched.
    assert_eq!(ix.keyword_search("baggage", 20, &[]).unwrap().len(), 9);
    drop(ix);
    let ro = VectorIndex::open_read_only(dir.path()).unwrap();
    assert!(ro.keyword_search("z70", 5, &[]).unwrap().is_empty());
    assert_eq!(ro.keyword_search("number", 20, &[]).unwrap().len(), 9);
}

#[test]
fn filters_apply_in_all_three_modes() {
    let dir = tempfile::tempdir().unwrap();
    let ix = VectorIndex::open(dir.path(), manual()).unwrap();
    corpus(&ix);
    let even = vec![("kind".to_string(), "even".to_string())];
    let q = unit(D, 7, 0.0); // nearest: doc-7, which is odd
    for pending in [true, false] {
        for mode in [SearchMode::Vector, SearchMode::Keyword, SearchMode::Hybrid] {
            let all = ix
                .query(&Query::new(mode, &q, "baggage xk42 policy", 10, &[]))
                .unwrap();
            assert!(all.iter().any(|h| h.chunk_id == "doc-7#0"), "{mode:?}");
            let hits = ix
                .query(&Query::new(mode, &q, "baggage xk42 policy", 10, &even))
                .unwrap();
            assert_eq!(hits.len(), 5, "{mode:?} pending={pending}: {hits:?}");
            for h in &hits {
                assert!(
                    h.metadata.contains(&("kind".into(), "even".into())),
                    "{mode:?}: {h:?}"
                );
            }
        }
        ix.build_now().unwrap();
    }
    let none = vec![("kind".to_string(), "none".to_string())];
    for mode in [SearchMode::Vector, SearchMode::Keyword, SearchMode::Hybrid] {
        assert!(ix
            .query(&Query::new(mode, &q, "xk42", 10, &none))
            .unwrap()
            .is_empty());
    }
}

#[test]
fn hybrid_order_is_the_reciprocal_rank_fusion_of_the_two_lists() {
    // The fusion itself, by hand: a at ranks 1 and 3, b at 2 and 1, c at 3
    // (vector only), d at 2 (keyword only), k = 60, equal weights.
    let v = ["a", "b", "c"];
    let w = ["b", "d", "a"];
    let fused = rrf_fuse(&[(&v[..], 1.0), (&w[..], 1.0)], 60.0, 4);
    let order: Vec<&str> = fused.iter().map(|(id, _)| *id).collect();
    assert_eq!(order, vec!["b", "a", "d", "c"]);
    assert!((fused[0].1 - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-6);
    // Weights move items: with the vector side at 0 the keyword order wins
    // (d above a), and c, only on the vector side, scores nothing.
    let fused = rrf_fuse(&[(&v[..], 0.0), (&w[..], 1.0)], 60.0, 4);
    let order: Vec<&str> = fused.iter().map(|(id, _)| *id).collect();
    assert_eq!(order, vec!["b", "d", "a", "c"]);
    assert_eq!(fused[3].1, 0.0);

    // And the index: hybrid = RRF of the vector and the keyword top k.
    let dir = tempfile::tempdir().unwrap();
    let ix = VectorIndex::open(dir.path(), manual()).unwrap();
    corpus(&ix);
    ix.build_now().unwrap();
    let q = unit(D, 3, 0.5);
    let text = "refund policy for cancelled flights number 5";
    let k = 6;
    let by_vector = ids(&ix.search(&q, k, &[]).unwrap());
    let by_words = ids(&ix.keyword_search(text, k, &[]).unwrap());
    assert_ne!(
        by_vector, by_words,
        "the two sides must disagree for this to test anything"
    );
    for (vw, kw) in [(1.0, 1.0), (1.0, 0.0), (0.2, 1.0)] {
        let mut query = Query::new(SearchMode::Hybrid, &q, text, k, &[]);
        query.vector_weight = vw;
        query.keyword_weight = kw;
        let hybrid = ix.query(&query).unwrap();
        let want = rrf_fuse(&[(&by_vector[..], vw), (&by_words[..], kw)], 60.0, k);
        assert_eq!(
            ids(&hybrid),
            want.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            "weights {vw}/{kw}"
        );
        for (h, (_, s)) in hybrid.iter().zip(&want) {
            assert!((h.score - s).abs() < 1e-6);
        }
    }
    // With the keyword side weighted 0, hybrid is the vector order.
    let mut query = Query::new(SearchMode::Hybrid, &q, text, k, &[]);
    query.keyword_weight = 0.0;
    assert_eq!(ids(&ix.query(&query).unwrap())[..3], by_vector[..3]);
}

// ---- Read-your-writes: watermarks committed with the data.

#[test]
fn watermarks_rise_with_the_data_survive_a_reopen_and_wake_a_waiter() {
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let need = |o: i64| vec![("t.docs".to_string(), 1, o)];
    {
        let ix = std::sync::Arc::new(VectorIndex::open(dir.path(), manual()).unwrap());
        assert!(ix.watermarks().unwrap().is_empty());
        let w = ix
            .wait_for(&need(5), Instant::now() + Duration::from_millis(50))
            .unwrap();
        assert!(!w.met, "nothing applied yet");
        ix.apply_at(
            &[upsert(
                "a",
                vec![chunk("a", 0, "alpha", unit(D, 0, 1.0), &[])],
            )],
            &[("t.docs".into(), 1, 5), ("t.docs".into(), 0, 9)],
        )
        .unwrap();
        // A replay of older offsets never lowers a watermark.
        ix.apply_at(&[], &[("t.docs".into(), 1, 3)]).unwrap();
        assert_eq!(ix.watermarks().unwrap()[&("t.docs".to_string(), 1)], 5);
        assert!(ix.wait_for(&need(5), Instant::now()).unwrap().met);
        // A waiter is woken by the apply that meets its requirement.
        let ix2 = ix.clone();
        let t0 = Instant::now();
        let waiter = std::thread::spawn(move || {
            ix2.wait_for(&need(8), Instant::now() + Duration::from_secs(10))
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(100));
        ix.apply_at(
            &[upsert(
                "a",
                vec![chunk("a", 0, "beta", unit(D, 1, 1.0), &[])],
            )],
            &[("t.docs".into(), 1, 8)],
        )
        .unwrap();
        let w = waiter.join().unwrap();
        assert!(w.met);
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(
            ids(&ix.keyword_search("beta", 3, &[]).unwrap()),
            vec!["a#0"]
        );
    }
    let ix = VectorIndex::open_read_only(dir.path()).unwrap();
    let marks = ix.watermarks().unwrap();
    assert_eq!(marks[&("t.docs".to_string(), 1)], 8);
    assert_eq!(marks[&("t.docs".to_string(), 0)], 9);
    let t0 = Instant::now();
    let w = ix
        .wait_for(&need(9), t0 + Duration::from_millis(200))
        .unwrap();
    assert!(!w.met);
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "waited to the deadline"
    );
}

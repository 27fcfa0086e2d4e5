//! The text chunker as a component returns exactly what the library returns
//! natively (ids, doc ids, seqs, texts, metadata, errors), over the sample
//! documents, long multi-chunk documents and awkward ones. The component
//! builds its chunks differently (it reuses the document's buffers), so this
//! is what keeps the two byte-identical.
//!
//! Also: wasmtime's pooling instance allocator keeps the memory limit.

mod support;

use std::sync::Arc;
use weft::manifest::{Manifest, Stage};
use weft::pipeline::Pipeline;
use weft::record::{Item, Origin, Payload};
use weft::runtime::bindings::types::{Document, Meta};
use weft::runtime::{CpuMeter, FailureKind, InstanceAllocator, Runtime, StageShared};

fn chunker_stage(dir: &std::path::Path, name: &str, config: &str) -> Stage {
    let m = support::write(
        dir,
        &format!("{name}.toml"),
        &format!(
            "name = \"p\"\n[source]\ntopic = \"in\"\n[[stage]]\nname = \"{name}\"\nkind = \"chunker\"\nplugin = \"{}\"\nconfig = {{ {config} }}\n[sink]\ntopic = \"out\"\n",
            support::plugin("text-chunker").display()
        ),
    );
    Manifest::load(&m).expect("manifest").stages[0].clone()
}

fn doc(id: &str, title: Option<&str>, text: &str, meta: &[(&str, &str)]) -> Document {
    Document {
        id: id.into(),
        title: title.map(Into::into),
        text: text.into(),
        metadata: meta
            .iter()
            .map(|(k, v)| Meta {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
    }
}

fn documents() -> Vec<Document> {
    let mut docs: Vec<Document> =
        support::read_jsonl(&support::repo_root().join("data/airline/docs.jsonl"))
            .iter()
            .map(|v| {
                doc(
                    v["id"].as_str().unwrap_or("x"),
                    v["title"].as_str(),
                    v["text"].as_str().unwrap_or(""),
                    &[("kind", v["kind"].as_str().unwrap_or(""))],
                )
            })
            .collect();
    // Long documents: many chunks each, the last one not at the text's end.
    let all: Vec<String> = docs.iter().map(|d| d.text.clone()).collect();
    for n in 0..10 {
        let text = all[n * 25..n * 25 + 25].join("\n\n") + "\n  ";
        docs.push(doc(
            &format!("long-{n}"),
            Some("Long"),
            &text,
            &[("kind", "long")],
        ));
    }
    docs.extend([
        doc("blank", Some("T"), " \n\t ", &[]),
        doc("empty", None, "", &[("a", "b")]),
        doc("bad#id", None, "text", &[]),
        doc("", None, "text", &[]),
        doc(
            "titled",
            Some("New title"),
            "  Padded text.  ",
            &[("title", "old"), ("k", "v"), ("title", "older")],
        ),
        doc(
            "multibyte",
            None,
            &"Café déjà vu. Ça va? Über größer. 👍🏽 e\u{301} Привет мир. ".repeat(40),
            &[("lang", "mixed")],
        ),
    ]);
    docs
}

type Out = Result<Vec<(String, String, u32, String, Vec<(String, String)>)>, String>;

fn native(docs: &[Document], cfg: &text_chunker::ChunkConfig) -> Vec<Out> {
    docs.iter()
        .map(|d| {
            let meta: Vec<(String, String)> = d
                .metadata
                .iter()
                .map(|m| (m.key.clone(), m.value.clone()))
                .collect();
            text_chunker::chunk_document(&d.id, d.title.as_deref(), &d.text, &meta, cfg).map(|cs| {
                cs.into_iter()
                    .map(|c| (c.id, d.id.clone(), c.seq, c.text, c.metadata))
                    .collect()
            })
        })
        .collect()
}

#[test]
fn component_chunks_equal_native_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let rt = support::runtime();
    let docs = documents();
    for (name, config, cfg) in [
        (
            "quickstart",
            "max_chars = 600, overlap = 80",
            text_chunker::ChunkConfig::chars(600, 80),
        ),
        (
            "small",
            "max_chars = 90, overlap = 30",
            text_chunker::ChunkConfig::chars(90, 30),
        ),
        (
            "tokens",
            "unit = \"tokens\", max_tokens = 12, overlap_tokens = 3",
            text_chunker::ChunkConfig::tokens(12, 3),
        ),
    ] {
        let stage = chunker_stage(dir.path(), name, config);
        let mut p = rt
            .prepare(&stage, Arc::new(StageShared::new("t", "p", &stage)))
            .expect("prepare");
        let want = native(&docs, &cfg);
        let mut got: Vec<Out> = Vec::new();
        // Batches of 7: buffers reused across documents and calls.
        for batch in docs.chunks(7) {
            for r in p.chunk(batch).expect("chunk call") {
                got.push(
                    r.map(|cs| {
                        cs.into_iter()
                            .map(|c| {
                                let meta = c.metadata.into_iter().map(|m| (m.key, m.value));
                                (c.id, c.doc_id, c.seq, c.text, meta.collect())
                            })
                            .collect()
                    })
                    .map_err(|e| e.message),
                );
            }
        }
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "config {name}, document {i} ({:?})", docs[i].id);
        }
        let chunks: usize = want.iter().flatten().map(Vec::len).sum();
        assert!(chunks > docs.len(), "config {name}: multi-chunk documents");
    }
}

#[test]
fn pooling_allocator_keeps_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let m = support::transform_manifest(
        dir.path(),
        &support::plugin("hostile"),
        "limits = { timeout_ms = 2000, memory_mb = 32 }",
    );
    let rt = Runtime::with_allocator(
        Some(support::cache_dir()),
        CpuMeter::Epoch,
        InstanceAllocator::Pooling,
    )
    .expect("pooling runtime");
    let mut p = Pipeline::new(&rt, Manifest::load(&m).expect("manifest"), None).expect("pipeline");
    let item = |n: i64, v: &str| Item {
        key: Some(format!("k{n}").into_bytes()),
        headers: vec![],
        timestamp: None,
        origin: Arc::new(Origin {
            topic: "t".into(),
            partition: 0,
            offset: n,
            key: None,
            value: Some(v.as_bytes().to_vec()),
        }),
        payload: Payload::Raw(Some(v.as_bytes().to_vec())),
    };
    let o = p.process(vec![
        item(1, "ok-before"),
        item(2, "alloc"),
        item(3, "ok-after"),
    ]);
    assert_eq!(o.outputs.len(), 2, "neighbours flow on");
    assert_eq!(o.dead.len(), 1);
    assert_eq!(
        o.dead[0].failure.kind,
        FailureKind::MemoryLimit,
        "{}",
        o.dead[0].failure
    );
    assert!(o.dead[0].failure.message.contains("memory_mb = 32"));
    // The slot is reused by the next instance, which still works.
    let o = p.process(vec![item(4, "ok-again")]);
    assert_eq!(o.outputs.len(), 1);
}

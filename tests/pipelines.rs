//! The shipped pipelines over the sample data, through the real `weft` binary
//! and real components.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

fn docs() -> Vec<Value> {
    support::read_jsonl(&support::repo_root().join("data/airline/docs.jsonl"))
}

#[test]
fn quickstart_chunks_and_embeds_every_sample_document() {
    support::ensure_plugins();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("chunks.jsonl");
    let root = support::repo_root();
    let r = support::weft(&[
        "run",
        root.join("pipelines/quickstart.toml").to_str().unwrap(),
        "--input",
        root.join("data/airline/docs.jsonl").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{stderr}");
    assert!(stderr.contains("312 records in"), "{stderr}");
    assert!(stderr.contains("0 dead-lettered"), "{stderr}");

    let chunks = support::read_jsonl(&out);
    let docs = docs();
    let mut by_doc: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for c in &chunks {
        by_doc
            .entry(c["doc_id"].as_str().unwrap().to_string())
            .or_default()
            .push(c);
    }
    assert_eq!(by_doc.len(), docs.len(), "every document produced chunks");
    for d in &docs {
        let id = d["id"].as_str().unwrap();
        let cs = &by_doc[id];
        let text = d["text"].as_str().unwrap();
        for (n, c) in cs.iter().enumerate() {
            assert_eq!(c["id"], format!("{id}#{n}"), "stable chunk ids in order");
            assert_eq!(c["seq"], n);
            let t = c["text"].as_str().unwrap();
            assert!(text.contains(t.trim()), "chunk text comes from its doc");
            assert!(t.chars().count() <= 600, "max_chars = 600 holds");
            // Metadata is carried through from the document.
            assert_eq!(c["metadata"]["kind"], d["kind"]);
            let v: Vec<f64> = c["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(v.len(), 384);
            let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-3, "L2-normalised, got {norm}");
        }
    }
}

#[test]
fn chunk_embed_transform_pipeline_over_the_sample_data() {
    support::ensure_plugins();
    let dir = tempfile::tempdir().unwrap();
    let m = support::write(
        dir.path(),
        "p.toml",
        &format!(
            r#"name = "enrich"
tenant = "demo"
[source]
topic = "docs"
format = "document"
[[stage]]
name = "chunk"
kind = "chunker"
plugin = "{chunker}"
config = {{ max_chars = 300, overlap = 40 }}
[[stage]]
name = "embed"
kind = "embedder"
plugin = "{embedder}"
config = {{ dimension = 64 }}
[[stage]]
name = "project"
kind = "transform"
plugin = "{transform}"
config = {{ keep = ["id", "doc_id", "vector"], set = {{ source = "airline" }} }}
[sink]
topic = "chunks"
"#,
            chunker = support::plugin("text-chunker").display(),
            embedder = support::plugin("hash-embedder").display(),
            transform = support::plugin("json-transform").display(),
        ),
    );
    // Sample documents plus two poison records: garbage bytes and a doc without text.
    let mut input =
        std::fs::read_to_string(support::repo_root().join("data/airline/docs.jsonl")).unwrap();
    input.push_str("this is not json\n{\"id\": \"no-text\"}\n");
    let input = support::write(dir.path(), "in.jsonl", &input);
    let out = dir.path().join("out.jsonl");
    let r = support::weft(&[
        "run",
        m.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let outs = support::read_jsonl(&out);
    assert!(outs.len() > docs().len(), "300-char chunks split some docs");
    let mut doc_ids = BTreeSet::new();
    for o in &outs {
        let v = &o["value"];
        let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["id", "doc_id", "vector", "source"]));
        assert_eq!(v["source"], "airline");
        assert_eq!(v["vector"].as_array().unwrap().len(), 64);
        assert_eq!(o["key"], v["id"], "the record key is the chunk id");
        assert_eq!(o["headers"]["weft.transformed-by"], "json-transform");
        doc_ids.insert(v["doc_id"].as_str().unwrap().to_string());
    }
    assert_eq!(doc_ids.len(), docs().len());
    let dead = support::read_jsonl(&dir.path().join("out.dead-letters.jsonl"));
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0]["stage"], "source");
    assert_eq!(dead[0]["error_kind"], "bad-record");
    assert!(dead[0]["error"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert_eq!(dead[0]["source"]["offset"], 313);
    assert!(dead[1]["error"]
        .as_str()
        .unwrap()
        .contains("missing `text`"));
}

#[test]
fn a_parallel_stage_splits_the_batch_between_instances_and_keeps_the_order() {
    support::ensure_plugins();
    let dir = tempfile::tempdir().unwrap();
    let m = |parallelism: u32| {
        support::write(
            dir.path(),
            &format!("p{parallelism}.toml"),
            &format!(
                r#"name = "par"
[source]
topic = "docs"
format = "document"
[[stage]]
name = "chunk"
kind = "chunker"
plugin = "{chunker}"
config = {{ max_chars = 300, overlap = 40 }}
[[stage]]
name = "embed"
kind = "embedder"
plugin = "{embedder}"
config = {{ dimension = 64 }}
parallelism = {parallelism}
[sink]
topic = "chunks"
"#,
                chunker = support::plugin("text-chunker").display(),
                embedder = support::plugin("hash-embedder").display(),
            ),
        )
    };
    let mut docs: Vec<String> = docs().iter().take(60).map(|d| d.to_string()).collect();
    docs.insert(7, "not json".into());
    let items = || -> Vec<weft::record::Item> {
        docs.iter()
            .enumerate()
            .map(|(i, d)| support::item(i as i64, d))
            .collect()
    };
    let host = support::host(dir.path());
    let mut one = host.pipelines(&[m(1)]).unwrap().remove(0);
    let mut three = host.pipelines(&[m(3)]).unwrap().remove(0);
    let a = one.process(items());
    let b = three.process(items());
    // The same outputs in the same order, the same dead letter.
    let ids = |o: &weft::pipeline::BatchOutcome| -> Vec<String> {
        o.outputs
            .iter()
            .map(|i| {
                String::from_utf8_lossy(&i.payload.to_value_bytes().unwrap_or_default())
                    .into_owned()
            })
            .collect()
    };
    assert!(a.outputs.len() > 60, "{}", a.outputs.len());
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(a.dead.len(), 1);
    assert_eq!(b.dead.len(), 1);
    assert_eq!(a.dead[0].item.origin.offset, b.dead[0].item.origin.offset);
    // Three instances of the embedder ran, each on its part of the batch
    // (each asks its dimension once, then embeds once), and the stage
    // reports their calls as one stage's.
    let embed = &three.stages[1];
    assert_eq!(embed.stats.instantiations, 3, "{:?}", embed.stats);
    assert_eq!(one.stages[1].stats.calls, 2, "{:?}", one.stages[1].stats);
    assert_eq!(embed.stats.calls, 3 * 2, "{:?}", embed.stats);
}

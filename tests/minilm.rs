//! The semantic embedder (`plugins/minilm-embedder`, all-MiniLM-L6-v2 inside
//! the component) through the host: a real pipeline whose only authority is
//! the model directory, granted read-only, against reference vectors
//! computed independently (`scripts/minilm-reference.py`) for the texts of
//! `tests/data/minilm/texts.jsonl`.
//!
//! The model files are not in git: `scripts/setup` installs them. Without
//! them these tests skip, saying so, unless `WEFT_REQUIRE_MODELS` is set (CI
//! runs `scripts/setup` first, so there they always run).

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use weft::manifest::Manifest;
use weft::pipeline::Pipeline;
use weft::record::{Item, Origin, Payload};

/// The model directory `scripts/setup` fills, or `$WEFT_MINILM_DIR`.
fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("WEFT_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo_root().join("pipelines/airline/models/all-MiniLM-L6-v2"));
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    let msg = format!(
        "the all-MiniLM-L6-v2 model is not installed in {} (run `bash scripts/setup`)",
        dir.display()
    );
    assert!(std::env::var_os("WEFT_REQUIRE_MODELS").is_none(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

/// A one-stage pipeline, questions in, the embedder granted `files` only.
fn pipeline(dir: &Path, files: &Path) -> Pipeline {
    let m = support::write(
        dir,
        "embed.toml",
        &format!(
            r#"name = "minilm"
tenant = "test"
[source]
topic = "questions"
format = "question"
[[stage]]
name = "embed"
kind = "embedder"
plugin = "{plugin}"
limits = {{ memory_mb = 192, timeout_ms = 120000 }}
grants = {{ files = [{{ host = "{files}", guest = "/models/all-MiniLM-L6-v2" }}] }}
[sink]
topic = "vectors"
"#,
            plugin = support::plugin("minilm-embedder").display(),
            files = files.display(),
        ),
    );
    Pipeline::new(
        &support::runtime(),
        Manifest::load(&m).expect("manifest"),
        None,
    )
    .expect("pipeline")
}

fn question(n: usize, text: &str) -> Item {
    let value = serde_json::json!({ "id": format!("t{n}"), "text": text }).to_string();
    Item {
        key: Some(format!("t{n}").into_bytes()),
        headers: Vec::new(),
        timestamp: None,
        origin: Arc::new(Origin {
            topic: "questions".into(),
            partition: 0,
            offset: n as i64,
            key: None,
            value: Some(value.clone().into_bytes()),
        }),
        payload: Payload::Raw(Some(value.into_bytes())),
    }
}

fn vectors(o: &weft::pipeline::BatchOutcome) -> Vec<Vec<f32>> {
    o.outputs
        .iter()
        .map(|i| match &i.payload {
            Payload::Question(q) => q.vector.clone().expect("a vector"),
            other => panic!("not a question: {other:?}"),
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_matches_the_reference_vectors_for_every_fixture_text() {
    let Some(models) = model_dir() else { return };
    let data = support::repo_root().join("tests/data/minilm");
    let texts = support::read_jsonl(&data.join("texts.jsonl"));
    let reference = support::read_jsonl(&data.join("reference.jsonl"));
    assert!(texts.len() >= 100, "the fixture has at least 100 texts");
    assert_eq!(texts.len(), reference.len());

    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path(), &models);
    // One batch of everything, as the index path sends it: short and long
    // texts together exercise the length buckets and their padding.
    let items = texts
        .iter()
        .enumerate()
        .map(|(n, t)| question(n, t["text"].as_str().unwrap()))
        .collect();
    let out = p.process(items);
    assert!(
        out.dead.is_empty(),
        "{:?}",
        out.dead.first().map(|d| &d.failure)
    );
    let got = vectors(&out);
    assert_eq!(got.len(), texts.len());

    let mut worst = (f64::INFINITY, String::new());
    for ((t, r), v) in texts.iter().zip(&reference).zip(&got) {
        assert_eq!(t["id"], r["id"]);
        assert_eq!(v.len(), 384);
        assert!(v.iter().all(|x| x.is_finite()), "{}: NaN", t["id"]);
        let want: Vec<f64> = r["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let c = cosine(v, &want);
        assert!(
            c >= 0.999,
            "{} ({:?}, {} tokens): cosine {c:.6} < 0.999",
            t["id"],
            t["text"]
                .as_str()
                .unwrap()
                .chars()
                .take(60)
                .collect::<String>(),
            r["tokens"]
        );
        if c < worst.0 {
            worst = (c, t["id"].to_string());
        }
    }
    eprintln!(
        "minilm: {} texts, lowest cosine {:.6} ({})",
        got.len(),
        worst.0,
        worst.1
    );

    // The same texts one at a time give the same vectors as in the batch:
    // padding inside a length bucket changes nothing.
    for n in [0usize, 20, 60, 100] {
        let one = p.process(vec![question(n, texts[n]["text"].as_str().unwrap())]);
        let single = &vectors(&one)[0];
        let c = cosine(
            single,
            &got[n].iter().map(|x| f64::from(*x)).collect::<Vec<_>>(),
        );
        assert!(c > 0.99999, "text {n}: alone vs in a batch, cosine {c}");
    }
}

#[test]
fn a_missing_model_is_a_config_error_naming_the_file_and_the_setup() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty-models");
    std::fs::create_dir(&empty).unwrap();
    let mut p = pipeline(dir.path(), &empty);
    let out = p.process(vec![question(1, "Where is my bag?")]);
    assert!(out.outputs.is_empty());
    let f = &out.dead[0].failure;
    assert_eq!(f.kind.as_str(), "config", "{f}");
    assert!(
        f.message.contains("/models/all-MiniLM-L6-v2/config.json"),
        "{f}"
    );
    assert!(f.message.contains("scripts/setup"), "{f}");
}

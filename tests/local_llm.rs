//! The local LLM generator (`plugins/local-llm-generator`, SmolLM2-135M-
//! Instruct inside the component) through the host: real pipelines of the
//! prompt-template stage and the generator, whose only authority is the
//! model directory, granted read-only, answering airline questions.
//!
//! The questions and their hits are `tests/data/local-llm/questions.jsonl`:
//! three sample questions with the hits `pipelines/airline/query.toml`
//! (hash embedder, flight filter, top-k) retrieved for them, captured from
//! an answers topic, so the context is what retrieval really hands over.
//!
//! The model file is not in git: `scripts/setup-models` installs it.
//! Without it these tests skip, saying so, unless `WEFT_REQUIRE_MODELS` is
//! set. Each pipeline loads the model (a few seconds) and each answer takes
//! seconds on one core: a slow file, on purpose small.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use weft::manifest::Manifest;
use weft::pipeline::{BatchOutcome, Pipeline};
use weft::record::{Item, Origin, Payload};

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The model directory `scripts/setup-models` fills, or `$WEFT_SMOLLM2_DIR`.
fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("WEFT_SMOLLM2_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo_root().join("pipelines/airline/models/smollm2"));
    if dir.join(MODEL_FILE).is_file() {
        return Some(dir);
    }
    let msg = format!(
        "the SmolLM2-135M-Instruct model is not installed in {} (run `bash scripts/setup-models`)",
        dir.display()
    );
    assert!(std::env::var_os("WEFT_REQUIRE_MODELS").is_none(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

/// prompt-template -> local-llm-generator, the model directory `files`
/// granted at /models/smollm2, with `config` and `memory_mb` for the generator.
fn pipeline(dir: &Path, files: &Path, config: &str, memory_mb: u32) -> Pipeline {
    let m = support::write(
        dir,
        "answer.toml",
        &format!(
            r#"name = "local-llm"
tenant = "test"
[source]
topic = "questions"
format = "question"
[[stage]]
name = "prompt"
kind = "prompt-builder"
plugin = "{prompt}"
[[stage]]
name = "answer"
kind = "generator"
plugin = "{llm}"
config = {{ {config} }}
limits = {{ memory_mb = {memory_mb}, timeout_ms = 120000 }}
grants = {{ files = [{{ host = "{files}", guest = "/models/smollm2" }}] }}
[sink]
topic = "answers"
"#,
            prompt = support::plugin("prompt-template").display(),
            llm = support::plugin("local-llm-generator").display(),
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

fn item(n: usize, value: &serde_json::Value) -> Item {
    let value = value.to_string();
    Item {
        key: Some(format!("q{n}").into_bytes()),
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

fn questions() -> Vec<serde_json::Value> {
    support::read_jsonl(&support::repo_root().join("tests/data/local-llm/questions.jsonl"))
}

/// (answer text, cited chunk ids) per output, in order.
fn answers(o: &BatchOutcome) -> Vec<(String, Vec<String>)> {
    o.outputs
        .iter()
        .map(|i| match &i.payload {
            Payload::Question(q) => {
                let a = q.answer.as_ref().expect("an answer");
                (
                    a.text.clone(),
                    a.citations.iter().map(|c| c.chunk_id.clone()).collect(),
                )
            }
            other => panic!("not a question: {other:?}"),
        })
        .collect()
}

fn run(p: &mut Pipeline, qs: &[serde_json::Value]) -> Vec<(String, Vec<String>)> {
    let out = p.process(qs.iter().enumerate().map(|(n, q)| item(n, q)).collect());
    assert!(
        out.dead.is_empty(),
        "{:?}",
        out.dead.first().map(|d| &d.failure)
    );
    assert_eq!(out.outputs.len(), qs.len());
    answers(&out)
}

#[test]
fn smollm2_answers_airline_questions_deterministically_citing_its_hits() {
    let Some(models) = model_dir() else { return };
    let qs = questions();
    assert_eq!(qs.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path(), &models, "temperature = 0, max_tokens = 48", 256);
    let first = run(&mut p, &qs);
    for ((text, cited), q) in first.iter().zip(&qs) {
        eprintln!("{}: {text:?} cites {cited:?}", q["text"]);
        assert!(!text.trim().is_empty(), "{}: empty answer", q["id"]);
        let hits: Vec<&str> = q["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["chunk_id"].as_str().unwrap())
            .collect();
        assert!(!cited.is_empty(), "{}: cites nothing", q["id"]);
        assert!(
            cited.iter().all(|c| hits.contains(&c.as_str())),
            "{}: cites {cited:?}, not among its hits {hits:?}",
            q["id"]
        );
    }
    // Greedy decoding on a reused instance: the same text again.
    let again = run(&mut p, &qs[..2]);
    assert_eq!(again, first[..2]);

    // max_tokens: with 4 tokens, greedy decoding gives the first 4 tokens of
    // the same answer, so a strict prefix of it.
    let mut short = pipeline(dir.path(), &models, "temperature = 0, max_tokens = 4", 256);
    let cut = run(&mut short, &qs[..1]);
    let (full, short_text) = (&first[0].0, &cut[0].0);
    assert!(
        !short_text.is_empty()
            && full.starts_with(short_text.as_str())
            && short_text.len() < full.len(),
        "4-token answer {short_text:?} is not a strict prefix of {full:?}"
    );
}

#[test]
fn a_prompt_longer_than_the_window_is_cut_not_refused() {
    let Some(models) = model_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    // 128 tokens of window, 16 for the answer: the question's ~15 hits
    // (~2,000 tokens) cannot fit, the context is cut from its end.
    let mut p = pipeline(
        dir.path(),
        &models,
        "context_tokens = 128, max_tokens = 16",
        256,
    );
    let docs = support::read_jsonl(&support::repo_root().join("data/airline/docs.jsonl"));
    let hits: Vec<_> = docs[..15]
        .iter()
        .map(|d| {
            serde_json::json!({"chunk_id": format!("{}#0", d["id"].as_str().unwrap()),
            "doc_id": d["id"], "score": 0.5, "text": d["text"]})
        })
        .collect();
    let q = serde_json::json!({"id": "long", "text": "How much does an extra checked bag cost?", "hits": hits});
    let a = run(&mut p, &[q]);
    assert!(!a[0].0.is_empty());
}

#[test]
fn a_model_that_does_not_fit_memory_mb_is_dead_lettered_naming_the_limit() {
    let Some(models) = model_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path(), &models, "max_tokens = 8", 128);
    let out = p.process(vec![item(0, &questions()[0])]);
    assert!(out.outputs.is_empty());
    let f = &out.dead[0].failure;
    assert_eq!(f.kind.as_str(), "memory-limit", "{f}");
    assert!(f.message.contains("limits.memory_mb = 128"), "{f}");
}

#[test]
fn a_missing_or_corrupt_model_is_a_config_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let q = serde_json::json!({"id": "q", "text": "Where is my bag?",
        "hits": [{"chunk_id": "a#0", "doc_id": "a", "score": 1.0, "text": "Bags are on belt 3."}]});
    let empty = dir.path().join("empty-models");
    std::fs::create_dir(&empty).unwrap();
    let corrupt = dir.path().join("corrupt-models");
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::write(corrupt.join(MODEL_FILE), b"<html>404 Not Found</html>").unwrap();
    for (files, why) in [
        (&empty, "cannot be opened"),
        (&corrupt, "is not a GGUF file"),
    ] {
        let mut p = pipeline(dir.path(), files, "max_tokens = 8", 256);
        let out = p.process(vec![item(0, &q)]);
        assert!(out.outputs.is_empty());
        let f = &out.dead[0].failure;
        assert_eq!(f.kind.as_str(), "config", "{f}");
        assert!(
            f.message.contains(&format!("/models/smollm2/{MODEL_FILE}")),
            "{f}"
        );
        assert!(f.message.contains(why), "{f}");
        assert!(f.message.contains("scripts/setup-models"), "{f}");
    }
}

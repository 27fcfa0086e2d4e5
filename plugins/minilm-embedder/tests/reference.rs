//! The embedding code compiled natively against the fixture's reference
//! vectors (the component runs the same code; `tests/minilm.rs` of the host
//! checks it through weft). Skips without the model files unless
//! `WEFT_REQUIRE_MODELS` is set, like the host's test.

use minilm_embedder::{MiniLm, PassLimits};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn native_code_matches_the_reference_vectors() {
    let dir = repo().join("pipelines/airline/models/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").is_file() {
        assert!(
            std::env::var_os("WEFT_REQUIRE_MODELS").is_none(),
            "model missing in {} (run `bash scripts/setup`)",
            dir.display()
        );
        eprintln!(
            "SKIPPED: no model in {} (run `bash scripts/setup`)",
            dir.display()
        );
        return;
    }
    let read = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(repo().join("tests/data/minilm").join(name))
            .expect("fixture")
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    };
    let texts = read("texts.jsonl");
    let reference = read("reference.jsonl");
    let input: Vec<String> = texts
        .iter()
        .map(|t| t["text"].as_str().unwrap_or_default().to_string())
        .collect();
    // The default cut, then a small token budget: more, smaller passes (the
    // fixture's longest texts go alone) must give the same vectors.
    let mut runs: Vec<Vec<Vec<f32>>> = Vec::new();
    for limits in [
        PassLimits::default(),
        PassLimits {
            max_batch: 32,
            max_batch_tokens: 128,
        },
    ] {
        let model = MiniLm::load(&dir, 256, limits).expect("model");
        let got = model.embed(&input).expect("embed");
        assert_eq!(got.len(), input.len());
        let mut min = f64::INFINITY;
        for ((t, r), v) in texts.iter().zip(&reference).zip(&got) {
            let ids = model
                .tokenize(t["text"].as_str().unwrap_or_default())
                .expect("tokenize");
            assert_eq!(Some(ids.len() as u64), r["tokens"].as_u64(), "{}", t["id"]);
            let want = r["vector"].as_array().expect("a vector");
            let dot: f64 = v
                .iter()
                .zip(want)
                .map(|(a, b)| f64::from(*a) * b.as_f64().expect("a number"))
                .sum();
            assert!(dot >= 0.999, "{limits:?}, {}: cosine {dot}", t["id"]);
            min = min.min(dot);
        }
        eprintln!(
            "native, {limits:?}: {} texts, lowest cosine {min:.6}",
            got.len()
        );
        runs.push(got);
    }
    for (i, (a, b)) in runs[0].iter().zip(&runs[1]).enumerate() {
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        assert!(dot > 0.99999, "text {i}: cosine {dot} between the two cuts");
    }
}

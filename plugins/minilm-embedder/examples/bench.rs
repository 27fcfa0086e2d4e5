//! The plugin's embedding code compiled natively, for comparison with the
//! component run by weft (README, "Benchmarks"):
//!
//!   cargo run --release -p minilm-embedder --example bench -- \
//!       pipelines/airline/models/all-MiniLM-L6-v2 texts.jsonl [batch]
//!
//! `texts.jsonl` has one JSON object with a `text` per line. Prints texts/s
//! and tokens/s over all of them, after one warm-up batch. candle's matrix
//! products use `RAYON_NUM_THREADS` threads (default: every core); the
//! component has one thread, so compare with `RAYON_NUM_THREADS=1`.

use minilm_embedder::{MiniLm, PassLimits};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(input)) = (args.get(1), args.get(2)) else {
        return Err("usage: bench MODEL_DIR TEXTS.jsonl [BATCH]".into());
    };
    let batch: usize = args.get(3).map_or(Ok(64), |b| b.parse())?;
    let texts: Vec<String> = std::fs::read_to_string(input)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(v["text"].as_str().unwrap_or_default().to_string())
        })
        .collect::<Result<_, serde_json::Error>>()?;
    let t0 = Instant::now();
    let model = MiniLm::load(std::path::Path::new(dir), 256, PassLimits::default())?;
    let load = t0.elapsed();
    let tokens: usize = texts
        .iter()
        .map(|t| model.tokenize(t).map(|ids| ids.len()))
        .sum::<Result<_, _>>()?;
    model.embed(&texts[..batch.min(texts.len())])?;
    let t = Instant::now();
    for chunk in texts.chunks(batch) {
        model.embed(chunk)?;
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "native: load {:.2} s; {} texts, {} tokens, batches of {batch}: {:.2} s, {:.1} texts/s, {:.0} tokens/s",
        load.as_secs_f64(),
        texts.len(),
        tokens,
        s,
        texts.len() as f64 / s,
        tokens as f64 / s
    );
    Ok(())
}

//! The activation memory of one forward pass, measured natively by counting
//! the heap (the component runs the same code; its linear memory holds the
//! same buffers, and never gives them back): the figures behind
//! `config::DEFAULT_MAX_BATCH_TOKENS`. Prints bytes per padded token for
//! several text lengths, and checks that the largest pass the defaults allow
//! fits next to the weights in the shipped `limits.memory_mb = 192`.
//!
//!   cargo test -p minilm-embedder --test pass_memory -- --nocapture
//!
//! Skips without the model files unless `WEFT_REQUIRE_MODELS` is set.

use minilm_embedder::config::{DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_TOKENS};
use minilm_embedder::{MiniLm, PassLimits};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting the bytes live and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak heap bytes above what was live before, while embedding `texts`.
fn peak_of(model: &MiniLm, texts: &[String]) -> usize {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let v = model.embed(texts).expect("embed");
    assert_eq!(v.len(), texts.len());
    PEAK.load(Relaxed) - base
}

#[test]
fn activation_bytes_per_padded_token() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../pipelines/airline/models/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").is_file() {
        assert!(
            std::env::var_os("WEFT_REQUIRE_MODELS").is_none(),
            "model missing in {} (run `bash scripts/setup`)",
            dir.display()
        );
        eprintln!("SKIPPED: no model in {}", dir.display());
        return;
    }
    // One pass whatever the batch, to measure a pass of a given shape.
    let one_pass = PassLimits {
        max_batch: 256,
        max_batch_tokens: 65_536,
    };
    let model = MiniLm::load(&dir, DEFAULT_MAX_TOKENS, one_pass).expect("model");
    // "bag" is one WordPiece token: `len` tokens with [CLS] and [SEP].
    let text = |len: usize| "bag ".repeat(len - 2);
    assert_eq!(model.tokenize(&text(64)).expect("tokenize").len(), 64);
    peak_of(&model, &[text(8)]); // warm-up: lazily built state
    let mut per_token = Vec::new();
    for len in [16usize, 32, 64, 128, 256] {
        let batch = (2048 / len).min(256);
        let peak = peak_of(&model, &vec![text(len); batch]);
        let bytes = peak / (batch * len);
        eprintln!(
            "pass of {batch} x {len} tokens: peak {:.1} MiB above the model, {bytes} bytes per padded token",
            peak as f64 / f64::from(1 << 20)
        );
        per_token.push((len, bytes));
    }
    // The largest pass the defaults allow: texts of `max_tokens`, as many as
    // the token budget lets in.
    let longest = DEFAULT_MAX_TOKENS;
    let batch = (DEFAULT_MAX_BATCH_TOKENS / longest).max(1);
    let peak = peak_of(&model, &vec![text(longest); batch]);
    eprintln!(
        "default budget ({DEFAULT_MAX_BATCH_TOKENS} tokens): worst pass {batch} x {longest}, peak {:.1} MiB",
        peak as f64 / f64::from(1 << 20)
    );
    // 192 MiB less the 91 MB of weights, the tokenizer and the allocator's
    // slack (a pass of ~90 MiB did not fit): a pass must stay under 48 MiB.
    assert!(
        peak < 48 << 20,
        "the default budget allows a pass of {:.1} MiB: {per_token:?}",
        peak as f64 / f64::from(1 << 20)
    );
}

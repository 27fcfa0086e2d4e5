//! The stage configuration, parsed from the host's flattened config entries.

use std::path::PathBuf;

/// Where the model is looked for unless `model_dir` says otherwise: the
/// guest path the shipped manifests grant the model directory at.
pub const DEFAULT_MODEL_DIR: &str = "/models/all-MiniLM-L6-v2";

/// all-MiniLM-L6-v2 was trained with 256-token inputs (sentence-transformers'
/// `max_seq_length`), so longer inputs are cut there by default; its position
/// table has 512 rows, which is the hard ceiling.
pub const DEFAULT_MAX_TOKENS: usize = 256;
pub const MAX_TOKENS_CEILING: usize = 512;

/// Sequences per forward pass (also cut by `max_batch_tokens`). Larger
/// batches amortise the per-op overhead.
pub const DEFAULT_MAX_BATCH: usize = 32;

/// Padded tokens per forward pass (texts x the longest of them): the bound
/// on a pass's activation memory, which matters because wasm linear memory
/// never shrinks, so the largest pass of an instance's life stays paid for.
///
/// candle's BERT holds, per padded token, about 12 KiB of hidden states,
/// projections and the feed-forward layer, plus about 5 live copies of the
/// attention scores (scaled, masked, softmax's intermediates) of 12 heads x
/// `longest` x 4 bytes each: ~240 bytes per position of the longest text.
/// Measured (`tests/pass_memory.rs`, heap peak of one pass): 17.7 KiB per
/// token at 16 tokens per text, 27.8 at 64, 43.1 at 128, 73.8 at 256. The
/// default is sized for the worst case, texts of `max_tokens` = 256: 512
/// tokens are 2 such texts, ~36 MiB, which next to the 91 MB of weights
/// fits the shipped `memory_mb = 192` with room for the allocator's slack
/// (2,048 tokens would be ~144 MiB; the old cut, by the attention scores
/// only, let 5 such texts into a pass, ~90 MiB, and batches of 64 chunks
/// outgrew 192 MiB). Short texts lose
/// little: 11 questions of 45 tokens still fill a pass of 512 rows, enough
/// for the dense layers' matrix products. Raise it with `max_tokens`
/// lowered or `memory_mb` raised.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 512;
pub const MAX_BATCH_TOKENS_RANGE: (usize, usize) = (16, 65_536);

/// The parsed configuration, plus warnings worth logging once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub model_dir: PathBuf,
    /// Tokens per text including `[CLS]` and `[SEP]`; longer texts are truncated.
    pub max_tokens: usize,
    pub max_batch: usize,
    /// Padded tokens per forward pass, the bound on its activation memory;
    /// a text longer than this still goes, alone.
    pub max_batch_tokens: usize,
    pub warnings: Vec<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            model_dir: PathBuf::from(DEFAULT_MODEL_DIR),
            max_tokens: DEFAULT_MAX_TOKENS,
            max_batch: DEFAULT_MAX_BATCH,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            warnings: Vec::new(),
        }
    }
}

impl Settings {
    /// How `embed` cuts a call's texts into forward passes.
    pub fn pass_limits(&self) -> crate::model::PassLimits {
        crate::model::PassLimits {
            max_batch: self.max_batch,
            max_batch_tokens: self.max_batch_tokens,
        }
    }

    /// Parses `entries` (key, value) as given by `config::entries()`.
    pub fn from_entries(entries: &[(String, String)]) -> Result<Settings, String> {
        let mut s = Settings::default();
        for (key, value) in entries {
            let v = value.trim().trim_matches('"');
            match key.as_str() {
                "model_dir" => {
                    if v.is_empty() {
                        return Err("config `model_dir` must not be empty".into());
                    }
                    s.model_dir = PathBuf::from(v);
                }
                "max_tokens" => s.max_tokens = integer(key, value, 3, MAX_TOKENS_CEILING)?,
                "max_batch" => s.max_batch = integer(key, value, 1, 256)?,
                "max_batch_tokens" => {
                    let (min, max) = MAX_BATCH_TOKENS_RANGE;
                    s.max_batch_tokens = integer(key, value, min, max)?
                }
                "dimension" => {
                    // Accepted so a manifest can state it next to the index,
                    // but the model decides: anything but 384 is a mistake.
                    if v != "384" {
                        return Err(format!(
                            "config `dimension` is fixed at 384 for all-MiniLM-L6-v2, not {value:?}"
                        ));
                    }
                }
                _ => s
                    .warnings
                    .push(format!("unknown config key `{key}` is ignored")),
            }
        }
        Ok(s)
    }
}

fn integer(key: &str, value: &str, min: usize, max: usize) -> Result<usize, String> {
    value
        .trim()
        .trim_matches('"')
        .parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            format!("config `{key}` must be an integer from {min} to {max}, not {value:?}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(Settings::from_entries(&[]).unwrap(), Settings::default());
        let s = Settings::from_entries(&entries(&[
            ("model_dir", "/m"),
            ("max_tokens", "128"),
            ("max_batch", "8"),
            ("max_batch_tokens", "512"),
            ("dimension", "384"),
            ("colour", "blue"),
        ]))
        .unwrap();
        assert_eq!(s.model_dir, PathBuf::from("/m"));
        assert_eq!(
            (s.max_tokens, s.max_batch, s.max_batch_tokens),
            (128, 8, 512)
        );
        assert_eq!(s.warnings.len(), 1);
    }

    #[test]
    fn bad_values_are_rejected() {
        for kv in [
            ("max_tokens", "0"),
            ("max_tokens", "513"),
            ("max_batch", "x"),
            ("max_batch_tokens", "15"),
            ("max_batch_tokens", "65537"),
            ("max_batch_tokens", "2k"),
            ("max_batch_tokens", "1.5"),
            ("max_batch_tokens", "-2048"),
            ("dimension", "256"),
            ("model_dir", ""),
        ] {
            let err = Settings::from_entries(&entries(&[kv])).unwrap_err();
            assert!(err.contains(&format!("`{}`", kv.0)), "{err}");
        }
    }

    #[test]
    fn max_batch_tokens_bounds_are_inclusive_and_errors_name_the_key() {
        for v in ["16", "65536", "\"1024\"", " 2048 "] {
            let s = Settings::from_entries(&entries(&[("max_batch_tokens", v)])).unwrap();
            assert_eq!(s.max_batch_tokens.to_string(), v.trim().trim_matches('"'));
        }
        let err = Settings::from_entries(&entries(&[("max_batch_tokens", "100000")])).unwrap_err();
        assert!(err.contains("`max_batch_tokens`"), "{err}");
        assert!(err.contains("16 to 65536"), "{err}");
        assert!(err.contains("100000"), "{err}");
    }
}

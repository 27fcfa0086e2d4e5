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

/// Sequences per forward pass. Larger batches amortise the per-op overhead,
/// but the attention scores grow with batch x length^2, and wasm linear
/// memory never shrinks, so the batch is also cut by a token budget (see
/// `model::ATTENTION_BUDGET`).
pub const DEFAULT_MAX_BATCH: usize = 32;

/// The parsed configuration, plus warnings worth logging once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub model_dir: PathBuf,
    /// Tokens per text including `[CLS]` and `[SEP]`; longer texts are truncated.
    pub max_tokens: usize,
    pub max_batch: usize,
    pub warnings: Vec<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            model_dir: PathBuf::from(DEFAULT_MODEL_DIR),
            max_tokens: DEFAULT_MAX_TOKENS,
            max_batch: DEFAULT_MAX_BATCH,
            warnings: Vec::new(),
        }
    }
}

impl Settings {
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
            ("dimension", "384"),
            ("colour", "blue"),
        ]))
        .unwrap();
        assert_eq!(s.model_dir, PathBuf::from("/m"));
        assert_eq!((s.max_tokens, s.max_batch), (128, 8));
        assert_eq!(s.warnings.len(), 1);
    }

    #[test]
    fn bad_values_are_rejected() {
        for kv in [
            ("max_tokens", "0"),
            ("max_tokens", "513"),
            ("max_batch", "x"),
            ("dimension", "256"),
            ("model_dir", ""),
        ] {
            let err = Settings::from_entries(&entries(&[kv])).unwrap_err();
            assert!(err.contains(kv.0), "{err}");
        }
    }
}

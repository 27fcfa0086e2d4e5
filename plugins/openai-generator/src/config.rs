//! The stage configuration, parsed from the host's flattened config entries.

use crate::endpoint::BaseUrl;

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
pub const DEFAULT_API_KEY_ENV: &str = "OPENAI_API_KEY";

/// Generator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub base_url: BaseUrl,
    pub model: String,
    /// Name of the environment variable holding the API key. It is only
    /// visible when the manifest grants it (`grants.env`); without it no
    /// `Authorization` header is sent, which suits local servers.
    pub api_key_env: String,
    pub timeout_ms: Option<u64>,
    /// Sampling temperature; the server's default when unset.
    pub temperature: Option<f32>,
    /// Answer length limit; the server's default when unset.
    pub max_tokens: Option<u32>,
    /// Ask for a streamed completion (server-sent events) and hand each
    /// piece to the host as it arrives (`deltas.emit`).
    pub stream: bool,
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
            temperature: None,
            max_tokens: None,
            stream: false,
            warnings: Vec::new(),
        };
        for (key, value) in entries {
            let v = value.trim().trim_matches('"');
            match key.as_str() {
                "base_url" => s.base_url = BaseUrl::parse(v)?,
                "model" => s.model = non_empty(key, v)?,
                "api_key_env" => s.api_key_env = non_empty(key, v)?,
                "timeout_ms" => {
                    s.timeout_ms =
                        Some(v.parse::<u64>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                            format!("config `timeout_ms` must be a positive integer, not {value:?}")
                        })?)
                }
                "temperature" => {
                    s.temperature = Some(
                        v.parse::<f32>()
                            .ok()
                            .filter(|t| (0.0..=2.0).contains(t))
                            .ok_or_else(|| {
                                format!(
                                "config `temperature` must be a number from 0 to 2, not {value:?}"
                            )
                            })?,
                    )
                }
                "max_tokens" => {
                    s.max_tokens =
                        Some(v.parse::<u32>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                            format!("config `max_tokens` must be a positive integer, not {value:?}")
                        })?)
                }
                "stream" => {
                    s.stream = match v {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(format!(
                                "config `stream` must be true or false, not {value:?}"
                            ))
                        }
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
        assert_eq!(s.base_url.authority, "api.openai.com");
        assert_eq!(s.model, DEFAULT_MODEL);
        assert_eq!(s.api_key_env, "OPENAI_API_KEY");
        assert_eq!(
            (s.timeout_ms, s.temperature, s.max_tokens),
            (None, None, None)
        );
        let s = Settings::from_entries(&entries(&[
            ("base_url", "http://127.0.0.1:8080/v1"),
            ("model", "llama"),
            ("api_key_env", "LOCAL_KEY"),
            ("timeout_ms", "2000"),
            ("temperature", "0.2"),
            ("max_tokens", "256"),
            ("stream", "true"),
        ]))
        .unwrap();
        assert!(s.stream);
        assert_eq!(s.base_url.path, "/v1");
        assert_eq!(s.model, "llama");
        assert_eq!(s.api_key_env, "LOCAL_KEY");
        assert_eq!(s.timeout_ms, Some(2000));
        assert_eq!(s.temperature, Some(0.2));
        assert_eq!(s.max_tokens, Some(256));
    }

    #[test]
    fn bad_values_are_rejected() {
        for kv in [
            ("base_url", "localhost:8080"),
            ("model", ""),
            ("timeout_ms", "0"),
            ("temperature", "3"),
            ("temperature", "warm"),
            ("max_tokens", "-1"),
            ("stream", "yes"),
        ] {
            assert!(Settings::from_entries(&entries(&[kv])).is_err(), "{kv:?}");
        }
    }
}

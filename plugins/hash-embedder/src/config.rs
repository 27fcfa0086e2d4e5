//! The stage configuration, parsed from the host's flattened config entries.

use crate::hashing::EmbedConfig;

/// The largest accepted dimension: far beyond what feature hashing gains
/// from, but small enough that a typo cannot make every vector gigabytes.
pub const MAX_DIMENSION: usize = 65_536;

/// The parsed configuration, plus warnings worth logging once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub embed: EmbedConfig,
    pub warnings: Vec<String>,
}

impl Settings {
    /// Parses `entries` (key, value) as given by `config::entries()`.
    pub fn from_entries(entries: &[(String, String)]) -> Result<Settings, String> {
        let mut embed = EmbedConfig::default();
        let mut warnings = Vec::new();
        for (key, value) in entries {
            let v = value.trim().trim_matches('"');
            match key.as_str() {
                "dimension" => {
                    embed.dimension = v
                        .parse::<usize>()
                        .ok()
                        .filter(|d| (1..=MAX_DIMENSION).contains(d))
                        .ok_or_else(|| {
                            format!("config `dimension` must be an integer from 1 to {MAX_DIMENSION}, not {value:?}")
                        })?;
                }
                "sublinear_tf" => embed.sublinear_tf = boolean(key, v)?,
                "stopwords" => {
                    embed.stopwords = match v.to_ascii_lowercase().as_str() {
                        "english" => true,
                        "none" => false,
                        _ => {
                            return Err(format!(
                                "config `stopwords` must be \"english\" or \"none\", not {value:?}"
                            ))
                        }
                    }
                }
                _ => warnings.push(format!("unknown config key `{key}` is ignored")),
            }
        }
        Ok(Settings { embed, warnings })
    }
}

fn boolean(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("config `{key}` must be true or false, not {v:?}")),
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
        assert_eq!(
            Settings::from_entries(&[]).unwrap().embed,
            EmbedConfig::default()
        );
        let s = Settings::from_entries(&entries(&[
            ("dimension", "128"),
            ("sublinear_tf", "false"),
            ("stopwords", "none"),
            ("colour", "blue"),
        ]))
        .unwrap();
        assert_eq!(
            s.embed,
            EmbedConfig {
                dimension: 128,
                sublinear_tf: false,
                stopwords: false
            }
        );
        assert_eq!(s.warnings.len(), 1);
    }

    #[test]
    fn bad_values_are_rejected() {
        for kv in [
            ("dimension", "0"),
            ("dimension", "-3"),
            ("dimension", "1e9"),
            ("dimension", "100000"),
            ("sublinear_tf", "yes"),
            ("stopwords", "french"),
        ] {
            let err = Settings::from_entries(&entries(&[kv])).unwrap_err();
            assert!(err.contains(kv.0), "{err}");
        }
    }
}

//! The stage configuration, parsed from the host's flattened config entries.

use crate::split::{ChunkConfig, Unit};

/// Defaults, chosen to fit comfortably in the context of common embedding
/// models (~200 words) while keeping whole paragraphs together.
pub const DEFAULT_MAX_CHARS: usize = 800;
pub const DEFAULT_OVERLAP: usize = 100;
pub const DEFAULT_MAX_TOKENS: usize = 200;
pub const DEFAULT_OVERLAP_TOKENS: usize = 20;

/// The parsed configuration, plus warnings worth logging once (ignored keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub chunk: ChunkConfig,
    pub warnings: Vec<String>,
}

const CHAR_KEYS: [&str; 2] = ["max_chars", "overlap"];
const TOKEN_KEYS: [&str; 2] = ["max_tokens", "overlap_tokens"];

impl Settings {
    /// Parses `entries` (key, value) as given by `config::entries()`.
    /// Errors name the offending key, since they end up in an operator's log.
    pub fn from_entries(entries: &[(String, String)]) -> Result<Settings, String> {
        let get = |key: &str| {
            entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let unit = match get("unit").map(|u| u.trim().to_ascii_lowercase()) {
            None => Unit::Chars,
            Some(u) if u == "chars" => Unit::Chars,
            Some(u) if u == "tokens" => Unit::Tokens,
            Some(u) => {
                return Err(format!(
                    "config `unit` must be \"chars\" or \"tokens\", not {u:?}"
                ))
            }
        };
        let (max_key, overlap_key, max_default, overlap_default, ignored) = match unit {
            Unit::Chars => (
                "max_chars",
                "overlap",
                DEFAULT_MAX_CHARS,
                DEFAULT_OVERLAP,
                TOKEN_KEYS,
            ),
            Unit::Tokens => (
                "max_tokens",
                "overlap_tokens",
                DEFAULT_MAX_TOKENS,
                DEFAULT_OVERLAP_TOKENS,
                CHAR_KEYS,
            ),
        };
        let max = number(max_key, get(max_key), max_default)?;
        let overlap = number(overlap_key, get(overlap_key), overlap_default)?;
        if max == 0 {
            return Err(format!("config `{max_key}` must be at least 1"));
        }
        if overlap >= max {
            return Err(format!(
                "config `{overlap_key}` ({overlap}) must be smaller than `{max_key}` ({max})"
            ));
        }
        let mut warnings = Vec::new();
        for (k, _) in entries {
            if ignored.contains(&k.as_str()) {
                warnings.push(format!(
                    "config `{k}` is ignored because `unit` is {}",
                    if unit == Unit::Chars {
                        "chars"
                    } else {
                        "tokens"
                    }
                ));
            } else if k != "unit"
                && !CHAR_KEYS.contains(&k.as_str())
                && !TOKEN_KEYS.contains(&k.as_str())
            {
                warnings.push(format!("unknown config key `{k}` is ignored"));
            }
        }
        Ok(Settings {
            chunk: ChunkConfig { unit, max, overlap },
            warnings,
        })
    }
}

/// A non-negative integer setting. Values arrive as JSON text (`800`), or as
/// a string when the manifest quoted them (`"800"`); both are accepted.
fn number(key: &str, value: Option<&str>, default: usize) -> Result<usize, String> {
    let Some(v) = value else {
        return Ok(default);
    };
    v.trim()
        .trim_matches('"')
        .parse::<usize>()
        .map_err(|_| format!("config `{key}` must be a non-negative integer, not {v:?}"))
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
    fn defaults() {
        let s = Settings::from_entries(&[]).unwrap();
        assert_eq!(s.chunk, ChunkConfig::chars(800, 100));
        assert!(s.warnings.is_empty());
        let s = Settings::from_entries(&entries(&[("unit", "tokens")])).unwrap();
        assert_eq!(s.chunk, ChunkConfig::tokens(200, 20));
    }

    #[test]
    fn explicit_values() {
        let s = Settings::from_entries(&entries(&[("max_chars", "500"), ("overlap", "\"0\"")]))
            .unwrap();
        assert_eq!(s.chunk, ChunkConfig::chars(500, 0));
        let s = Settings::from_entries(&entries(&[
            ("unit", "Tokens"),
            ("max_tokens", "64"),
            ("overlap_tokens", "8"),
            ("max_chars", "10"),
        ]))
        .unwrap();
        assert_eq!(s.chunk, ChunkConfig::tokens(64, 8));
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    }

    #[test]
    fn bad_values_are_rejected() {
        for kv in [
            vec![("unit", "bytes")],
            vec![("max_chars", "-1")],
            vec![("max_chars", "big")],
            vec![("max_chars", "0")],
            vec![("max_chars", "100"), ("overlap", "100")],
            vec![("unit", "tokens"), ("overlap_tokens", "300")],
        ] {
            let err = Settings::from_entries(&entries(&kv)).unwrap_err();
            assert!(err.contains("config `"), "{err}");
        }
    }

    #[test]
    fn unknown_keys_warn() {
        let s = Settings::from_entries(&entries(&[("max_char", "10")])).unwrap();
        assert_eq!(s.warnings, vec!["unknown config key `max_char` is ignored"]);
    }
}

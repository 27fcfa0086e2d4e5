//! The stage configuration, parsed from the host's flattened config entries.

use std::collections::BTreeMap;

/// What to do to every record, applied in this order: `keep`, `drop`,
/// `rename`, `set`. Projection thus names the *input* fields, and fields
/// added by `set` are always present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransformConfig {
    /// If set, only these top-level fields survive.
    pub keep: Option<Vec<String>>,
    /// Top-level fields removed.
    pub drop: Vec<String>,
    /// Field renames `from -> to`, applied simultaneously (so two renames can
    /// swap fields); a renamed field overwrites a field already called `to`.
    pub rename: BTreeMap<String, String>,
    /// String fields added, or overwritten, last.
    pub set: Vec<(String, String)>,
}

/// The parsed configuration, plus warnings worth logging once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub transform: TransformConfig,
    pub warnings: Vec<String>,
}

impl Settings {
    /// Parses `entries` (key, value) as given by `config::entries()`.
    pub fn from_entries(entries: &[(String, String)]) -> Result<Settings, String> {
        let mut t = TransformConfig::default();
        let mut warnings = Vec::new();
        for (key, value) in entries {
            if key == "keep" {
                t.keep = Some(names(key, value)?);
            } else if key == "drop" {
                t.drop = names(key, value)?;
            } else if let Some(field) = key.strip_prefix("set.") {
                if field.is_empty() {
                    return Err("config `set.` needs a field name after the dot".to_string());
                }
                t.set.push((field.to_string(), value.clone()));
            } else if let Some(from) = key.strip_prefix("rename.") {
                if from.is_empty() || value.is_empty() {
                    return Err(format!(
                        "config `{key}` must name a field to rename and a non-empty new name"
                    ));
                }
                if let Some((other, _)) = t.rename.iter().find(|(_, to)| *to == value) {
                    return Err(format!(
                        "config renames both `{other}` and `{from}` to `{value}`"
                    ));
                }
                t.rename.insert(from.to_string(), value.clone());
            } else {
                warnings.push(format!("unknown config key `{key}` is ignored"));
            }
        }
        Ok(Settings {
            transform: t,
            warnings,
        })
    }
}

/// A list of field names, given in the manifest as a TOML array (which the
/// host passes on as JSON text).
fn names(key: &str, value: &str) -> Result<Vec<String>, String> {
    serde_json::from_str::<Vec<String>>(value).map_err(|_| {
        format!("config `{key}` must be an array of field names, like [\"id\", \"text\"], not {value:?}")
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
    fn parses_every_option() {
        let s = Settings::from_entries(&entries(&[
            ("drop", r#"["secret"]"#),
            ("keep", r#"["id","body","secret"]"#),
            ("rename.body", "text"),
            ("set.source", "kb"),
            ("set.version", "2"),
            ("colour", "red"),
        ]))
        .unwrap();
        let t = s.transform;
        assert_eq!(t.keep.unwrap(), vec!["id", "body", "secret"]);
        assert_eq!(t.drop, vec!["secret"]);
        assert_eq!(t.rename.get("body").map(String::as_str), Some("text"));
        assert_eq!(
            t.set,
            vec![
                ("source".to_string(), "kb".to_string()),
                ("version".to_string(), "2".to_string())
            ]
        );
        assert_eq!(s.warnings.len(), 1);
    }

    #[test]
    fn bad_config_is_rejected() {
        for kv in [
            vec![("keep", "id")],
            vec![("drop", "[1,2]")],
            vec![("set.", "x")],
            vec![("rename.a", "")],
            vec![("rename.a", "c"), ("rename.b", "c")],
        ] {
            assert!(Settings::from_entries(&entries(&kv)).is_err(), "{kv:?}");
        }
    }
}

//! A transform that projects, renames and enriches the top-level fields of
//! JSON object records.
//!
//! Configuration (all optional), applied in this order:
//! - `keep`: array of field names; if set, only these fields are kept.
//! - `drop`: array of field names to remove.
//! - `rename.<from>` = `<to>`: renames a field (renames apply together).
//! - `set.<field>` = value: adds or overwrites a string field.
//!
//! Keys and headers pass through, plus the header `weft.transformed-by:
//! json-transform`, so downstream consumers can tell the record was rewritten.
//! Tombstones (no value) pass through untouched. A value that is not a JSON
//! object is an invalid-input error (the record is dead-lettered).
//! Untouched field values are copied byte for byte, in their input order.

pub mod config;
pub mod fields;

pub use config::{Settings, TransformConfig};
pub use fields::Fields;

use serde_json::value::RawValue;

/// The header added to every transformed record.
pub const HEADER_KEY: &str = "weft.transformed-by";
pub const HEADER_VALUE: &[u8] = b"json-transform";

/// Transforms one JSON object value.
pub fn transform_value(value: &[u8], cfg: &TransformConfig) -> Result<Vec<u8>, String> {
    let mut fields = Fields::parse(value)?;
    if let Some(keep) = &cfg.keep {
        fields.0.retain(|(k, _)| keep.contains(k));
    }
    if !cfg.drop.is_empty() {
        fields.0.retain(|(k, _)| !cfg.drop.contains(k));
    }
    if !cfg.rename.is_empty() {
        fields = rename(fields, cfg);
    }
    for (key, value) in &cfg.set {
        let json =
            serde_json::to_string(value).map_err(|e| format!("cannot encode `{key}`: {e}"))?;
        let raw = RawValue::from_string(json).map_err(|e| format!("cannot encode `{key}`: {e}"))?;
        fields.insert(key.clone(), raw);
    }
    fields.to_bytes()
}

/// Applies all renames at once. A renamed field takes the place of an
/// unrenamed field of the same name (the config asked for that name); the
/// config parser already rejects two renames to one name.
fn rename(fields: Fields, cfg: &TransformConfig) -> Fields {
    let renamed: Vec<(bool, String, Box<RawValue>)> = fields
        .0
        .into_iter()
        .map(|(k, v)| match cfg.rename.get(&k) {
            Some(to) => (true, to.clone(), v),
            None => (false, k, v),
        })
        .collect();
    let targets: Vec<&String> = renamed.iter().filter(|r| r.0).map(|r| &r.1).collect();
    let keep: Vec<bool> = renamed
        .iter()
        .map(|(was_renamed, name, _)| *was_renamed || !targets.contains(&name))
        .collect();
    Fields(
        renamed
            .into_iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|((_, name, v), _)| (name, v))
            .collect(),
    )
}

/// Sets the `weft.transformed-by` header, replacing an earlier one so a chain
/// of transforms does not pile up copies.
pub fn mark_headers(headers: &mut Vec<(String, Vec<u8>)>) {
    headers.retain(|(k, _)| k != HEADER_KEY);
    headers.push((HEADER_KEY.to_string(), HEADER_VALUE.to_vec()));
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "transformer" });

    use crate::Settings;
    use exports::weft::plugin::transform::Guest;
    use std::sync::OnceLock;
    use weft::plugin::log::{log, Level};
    use weft::plugin::types::{ErrorKind, Header, PluginError, Record};

    struct JsonTransform;

    /// Read and validated once per instance (the config cannot change).
    fn settings() -> &'static Result<Settings, String> {
        static SETTINGS: OnceLock<Result<Settings, String>> = OnceLock::new();
        SETTINGS.get_or_init(|| {
            let s = Settings::from_entries(&weft::plugin::config::entries());
            match &s {
                Ok(s) => s.warnings.iter().for_each(|w| log(Level::Warn, w)),
                Err(e) => log(Level::Error, e),
            }
            s
        })
    }

    fn transform_one(r: Record, s: &Settings) -> Result<Vec<Record>, PluginError> {
        let Some(value) = r.value else {
            return Ok(vec![r]);
        };
        let value =
            crate::transform_value(&value, &s.transform).map_err(|message| PluginError {
                kind: ErrorKind::InvalidInput,
                message,
            })?;
        let mut headers: Vec<(String, Vec<u8>)> =
            r.headers.into_iter().map(|h| (h.key, h.value)).collect();
        crate::mark_headers(&mut headers);
        Ok(vec![Record {
            key: r.key,
            value: Some(value),
            headers: headers
                .into_iter()
                .map(|(key, value)| Header { key, value })
                .collect(),
        }])
    }

    impl Guest for JsonTransform {
        fn transform(records: Vec<Record>) -> Vec<Result<Vec<Record>, PluginError>> {
            match settings() {
                Ok(s) => records.into_iter().map(|r| transform_one(r, s)).collect(),
                Err(e) => records
                    .iter()
                    .map(|_| {
                        Err(PluginError {
                            kind: ErrorKind::Config,
                            message: e.clone(),
                        })
                    })
                    .collect(),
            }
        }
    }

    export!(JsonTransform);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kv: &[(&str, &str)]) -> TransformConfig {
        let entries: Vec<(String, String)> = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_entries(&entries).unwrap().transform
    }

    fn run(input: &str, c: &TransformConfig) -> String {
        String::from_utf8(transform_value(input.as_bytes(), c).unwrap()).unwrap()
    }

    const DOC: &str = r#"{"id":"d1","body":"Hello","secret":"s3","meta":{"a":[1,2]},"n":7}"#;

    #[test]
    fn empty_config_passes_fields_through() {
        assert_eq!(run(DOC, &cfg(&[])), DOC);
    }

    #[test]
    fn keep_drop_rename_set_in_order() {
        let c = cfg(&[
            ("keep", r#"["id","body","secret","meta"]"#),
            ("drop", r#"["secret"]"#),
            ("rename.body", "text"),
            ("set.source", "kb \"v2\""),
            ("set.id", "overwritten"),
        ]);
        assert_eq!(
            run(DOC, &c),
            r#"{"id":"overwritten","text":"Hello","meta":{"a":[1,2]},"source":"kb \"v2\""}"#
        );
    }

    #[test]
    fn renames_apply_together_and_overwrite() {
        let c = cfg(&[("rename.a", "b"), ("rename.b", "a")]);
        assert_eq!(run(r#"{"a":1,"b":2,"c":3}"#, &c), r#"{"b":1,"a":2,"c":3}"#);
        let c = cfg(&[("rename.a", "c")]);
        assert_eq!(run(r#"{"a":1,"b":2,"c":3}"#, &c), r#"{"c":1,"b":2}"#);
        let c = cfg(&[("rename.missing", "x")]);
        assert_eq!(run(r#"{"a":1}"#, &c), r#"{"a":1}"#);
    }

    #[test]
    fn non_objects_are_invalid_input() {
        let c = cfg(&[]);
        assert_eq!(
            transform_value(b"[1]", &c).unwrap_err(),
            "record value is a JSON array, not an object"
        );
        assert!(transform_value(b"not json", &c).is_err());
    }

    #[test]
    fn header_is_set_once() {
        let mut h = vec![
            ("trace".to_string(), b"1".to_vec()),
            (HEADER_KEY.to_string(), b"other".to_vec()),
        ];
        mark_headers(&mut h);
        assert_eq!(
            h,
            vec![
                ("trace".to_string(), b"1".to_vec()),
                (HEADER_KEY.to_string(), HEADER_VALUE.to_vec())
            ]
        );
    }
}

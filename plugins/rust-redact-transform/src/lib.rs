//! A transform that redacts e-mail addresses and card-like numbers in the
//! string values of JSON records (rules in [`redact`]) and sets the header
//! `weft.redactions` to the number of replacements (0 for a clean record,
//! whose value passes through byte for byte).
//!
//! Keys and the other headers pass through; tombstones pass through
//! untouched; a value that is not UTF-8 JSON is an invalid-input error, so the
//! record is dead-lettered.
//!
//! Configuration (optional): `email_mask` (`"[email]"`) and `card_mask`
//! (`"[card]"`).
//!
//! This is the Rust one of four implementations of the same stage (with
//! `zig-transform` in C, `py-redact-transform` and `js-redact-transform`),
//! which `scripts/bench-polyglot` compares.

pub mod redact;

pub use redact::{redact_json, redact_text, Masks};

/// The header set on every transformed record.
pub const HEADER_KEY: &str = "weft.redactions";

/// Parses `entries` (key, value) as given by `config::entries()`; returns the
/// masks and warnings about unknown keys.
pub fn masks_from_entries(entries: &[(String, String)]) -> (Masks, Vec<String>) {
    let mut m = Masks::default();
    let mut warnings = Vec::new();
    for (k, v) in entries {
        match k.as_str() {
            "email_mask" => m.email = v.clone(),
            "card_mask" => m.card = v.clone(),
            _ => warnings.push(format!("unknown config key `{k}` is ignored")),
        }
    }
    (m, warnings)
}

/// Sets `weft.redactions` to `count`, in place if present, else at the end.
pub fn set_header(headers: &mut Vec<(String, Vec<u8>)>, count: usize) {
    let v = count.to_string().into_bytes();
    match headers.iter_mut().find(|(k, _)| k == HEADER_KEY) {
        Some(h) => h.1 = v,
        None => headers.push((HEADER_KEY.to_string(), v)),
    }
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "transformer" });

    use crate::Masks;
    use exports::weft::plugin::transform::Guest;
    use std::sync::OnceLock;
    use weft::plugin::log::{log, Level};
    use weft::plugin::types::{ErrorKind, Header, PluginError, Record};

    struct RedactTransform;

    /// Read once per instance (the config cannot change).
    fn masks() -> &'static Masks {
        static MASKS: OnceLock<Masks> = OnceLock::new();
        MASKS.get_or_init(|| {
            let (m, warnings) = crate::masks_from_entries(&weft::plugin::config::entries());
            warnings.iter().for_each(|w| log(Level::Warn, w));
            m
        })
    }

    fn transform_one(r: Record, masks: &Masks) -> Result<Vec<Record>, PluginError> {
        let Some(value) = r.value else {
            return Ok(vec![r]);
        };
        let (redacted, count) =
            crate::redact_json(&value, masks).map_err(|message| PluginError {
                kind: ErrorKind::InvalidInput,
                message,
            })?;
        let value = if count > 0 { redacted } else { value };
        let mut headers: Vec<(String, Vec<u8>)> =
            r.headers.into_iter().map(|h| (h.key, h.value)).collect();
        crate::set_header(&mut headers, count);
        Ok(vec![Record {
            key: r.key,
            value: Some(value),
            headers: headers
                .into_iter()
                .map(|(key, value)| Header { key, value })
                .collect(),
        }])
    }

    impl Guest for RedactTransform {
        fn transform(records: Vec<Record>) -> Vec<Result<Vec<Record>, PluginError>> {
            let m = masks();
            records.into_iter().map(|r| transform_one(r, m)).collect()
        }
    }

    export!(RedactTransform);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_set_once() {
        let mut h = vec![
            ("trace".to_string(), b"1".to_vec()),
            (HEADER_KEY.to_string(), b"9".to_vec()),
        ];
        set_header(&mut h, 2);
        assert_eq!(
            h,
            vec![
                ("trace".to_string(), b"1".to_vec()),
                (HEADER_KEY.to_string(), b"2".to_vec())
            ]
        );
    }

    #[test]
    fn config() {
        let (m, w) = masks_from_entries(&[
            ("email_mask".into(), "<e>".into()),
            ("colour".into(), "red".into()),
        ]);
        assert_eq!(m.email, "<e>");
        assert_eq!(m.card, "[card]");
        assert_eq!(w.len(), 1);
    }
}

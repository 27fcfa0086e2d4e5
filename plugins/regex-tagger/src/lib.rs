//! An enrichment transform: finds the first match of a regular expression in
//! one string field of a JSON record and stores it in another top-level
//! field. In the airline query pipeline it copies the flight number out of
//! a question's text (`"Is flight NW8843 on time?"` -> `"flight": "NW8843"`),
//! which the host keeps as question metadata and the retriever turns into an
//! index filter (`filter_from_question = ["flight"]`).
//!
//! Configuration:
//! - `pattern` (required): the expression (regex-lite syntax);
//! - `into` (required): the field to set;
//! - `field` (`"text"`): the field to search;
//! - `group` (0): the capture group to take (0 = the whole match);
//! - `uppercase` (false): upper-case the match (`nw8843` -> `NW8843`).
//!
//! A record without a match, without the field, or whose `into` field is
//! already set passes through unchanged, byte for byte; tombstones too. A
//! value that is not a JSON object is an invalid-input error.

use regex_lite::Regex;
use serde_json::Value;

/// The parsed configuration.
#[derive(Debug, Clone)]
pub struct Tagger {
    pub pattern: Regex,
    pub into: String,
    pub field: String,
    pub group: usize,
    pub uppercase: bool,
}

fn unquote(v: &str) -> String {
    match serde_json::from_str::<Value>(v) {
        Ok(Value::String(s)) => s,
        _ => v.to_string(),
    }
}

impl Tagger {
    /// Parses `config::entries()`; unknown keys are errors, so a typo does
    /// not silently disable the enrichment.
    pub fn from_entries(entries: &[(String, String)]) -> Result<Tagger, String> {
        let (mut pattern, mut into) = (None, None);
        let mut field = "text".to_string();
        let mut group = 0usize;
        let mut uppercase = false;
        for (k, v) in entries {
            match k.as_str() {
                "pattern" => {
                    let p = unquote(v);
                    pattern =
                        Some(Regex::new(&p).map_err(|e| format!("config `pattern` {p:?}: {e}"))?);
                }
                "into" => into = Some(unquote(v)),
                "field" => field = unquote(v),
                "group" => {
                    group = v
                        .trim()
                        .parse()
                        .map_err(|_| format!("config `group` must be a number, not `{v}`"))?
                }
                "uppercase" => {
                    uppercase = match v.trim() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(format!(
                                "config `uppercase` must be true or false, not `{v}`"
                            ))
                        }
                    }
                }
                other => return Err(format!("unknown config key `{other}`")),
            }
        }
        let pattern = pattern.ok_or("config `pattern` is required")?;
        let into = into.ok_or("config `into` is required")?;
        if group > pattern.captures_len() - 1 {
            return Err(format!(
                "config `group` = {group}, but the pattern has {} group(s)",
                pattern.captures_len() - 1
            ));
        }
        Ok(Tagger {
            pattern,
            into,
            field,
            group,
            uppercase,
        })
    }

    /// The new value, or `None` to pass the record through unchanged.
    pub fn tag(&self, value: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let mut v: Value =
            serde_json::from_slice(value).map_err(|e| format!("the value is not JSON: {e}"))?;
        let Value::Object(o) = &mut v else {
            return Err("the value is not a JSON object".to_string());
        };
        if o.contains_key(&self.into) {
            return Ok(None);
        }
        let Some(Value::String(text)) = o.get(&self.field) else {
            return Ok(None);
        };
        let Some(m) = self.pattern.captures(text).and_then(|c| c.get(self.group)) else {
            return Ok(None);
        };
        let found = if self.uppercase {
            m.as_str().to_uppercase()
        } else {
            m.as_str().to_string()
        };
        o.insert(self.into.clone(), Value::String(found));
        serde_json::to_vec(&v).map(Some).map_err(|e| e.to_string())
    }
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "transformer" });

    use crate::Tagger;
    use exports::weft::plugin::transform::Guest;
    use std::sync::OnceLock;
    use weft::plugin::types::{ErrorKind, PluginError, Record};

    struct RegexTagger;

    /// Read once per instance (the config cannot change).
    fn tagger() -> &'static Result<Tagger, String> {
        static T: OnceLock<Result<Tagger, String>> = OnceLock::new();
        T.get_or_init(|| Tagger::from_entries(&weft::plugin::config::entries()))
    }

    fn one(r: Record, t: &Tagger) -> Result<Vec<Record>, PluginError> {
        let Some(value) = &r.value else {
            return Ok(vec![r]);
        };
        match t.tag(value) {
            Ok(None) => Ok(vec![r]),
            Ok(Some(v)) => Ok(vec![Record {
                value: Some(v),
                ..r
            }]),
            Err(message) => Err(PluginError {
                kind: ErrorKind::InvalidInput,
                message,
            }),
        }
    }

    impl Guest for RegexTagger {
        fn transform(records: Vec<Record>) -> Vec<Result<Vec<Record>, PluginError>> {
            match tagger() {
                Ok(t) => records.into_iter().map(|r| one(r, t)).collect(),
                Err(m) => records
                    .iter()
                    .map(|_| {
                        Err(PluginError {
                            kind: ErrorKind::Config,
                            message: m.clone(),
                        })
                    })
                    .collect(),
            }
        }
    }

    export!(RegexTagger);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kv: &[(&str, &str)]) -> Result<Tagger, String> {
        Tagger::from_entries(
            &kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn copies_the_flight_number_out_of_the_text() {
        let t = cfg(&[
            ("pattern", r"\b[Nn][Ww]\d{1,4}\b"),
            ("into", "flight"),
            ("uppercase", "true"),
        ])
        .unwrap();
        let out = t
            .tag(br#"{"id":"q","text":"Is flight nw8843 on time?"}"#)
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["flight"], "NW8843");
        assert_eq!(v["text"], "Is flight nw8843 on time?");
    }

    #[test]
    fn no_match_or_already_set_passes_through() {
        let t = cfg(&[("pattern", r"NW\d+"), ("into", "flight")]).unwrap();
        assert!(t
            .tag(br#"{"text":"How much is a bag?"}"#)
            .unwrap()
            .is_none());
        assert!(t
            .tag(br#"{"text":"NW1","flight":"NW2"}"#)
            .unwrap()
            .is_none());
        assert!(t.tag(br#"{"other":"NW1"}"#).unwrap().is_none());
        assert!(t.tag(b"[1]").unwrap_err().contains("object"));
        assert!(t.tag(b"nope").unwrap_err().contains("JSON"));
    }

    #[test]
    fn groups_and_config_errors() {
        let t = cfg(&[
            ("pattern", r"gate ([A-Z]\d+)"),
            ("into", "gate"),
            ("group", "1"),
        ])
        .unwrap();
        let out = t.tag(br#"{"text":"at gate B12 now"}"#).unwrap().unwrap();
        assert!(String::from_utf8(out).unwrap().contains(r#""gate":"B12""#));
        assert!(cfg(&[("into", "x")]).unwrap_err().contains("pattern"));
        assert!(cfg(&[("pattern", "(")]).unwrap_err().contains("pattern"));
        assert!(cfg(&[("pattern", "a"), ("into", "x"), ("group", "2")])
            .unwrap_err()
            .contains("group"));
        assert!(cfg(&[("pattern", "a"), ("into", "x"), ("colour", "red")])
            .unwrap_err()
            .contains("colour"));
    }
}

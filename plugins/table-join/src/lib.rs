//! A stream-table join: looks up each JSON record's key in a table the
//! pipeline declares (`[[table]]`, kept by the host from a compacted topic)
//! and copies chosen fields of the row into the record. In the airline
//! query pipeline it joins a question with its customer's profile:
//! `metadata.customer_id = "cust-0001"` -> `booked_flight = "NW5937"`,
//! `customer_tier = "Silver"`, ..., which the host keeps as question
//! metadata, where the retriever boosts the booked flight's documents.
//!
//! Configuration:
//! - `table` (required): the table's name in the manifest;
//! - `key` (required): where the record holds the key, a dotted path into
//!   the JSON value (`metadata.customer_id`, `customer`);
//! - `fields.<out> = "<row field>"` (at least one): copy the row's field
//!   into the record's top-level field `<out>` (strings as they are, other
//!   JSON values as their JSON text); a field the row lacks is skipped;
//! - `status` (optional): a top-level field set to `found` or `unknown`
//!   (the key names no row), so an answer says whether it had the context.
//!
//! A record without the key passes through unchanged, byte for byte, and so
//! does a tombstone. A field the record already has is not overwritten. A
//! value that is not a JSON object is an invalid-input error; a lookup the
//! host refuses (an undeclared table) is a config error.

use serde_json::{Map, Value};

/// The parsed configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    pub table: String,
    pub key: Vec<String>,
    /// (record field, row field), in config order.
    pub fields: Vec<(String, String)>,
    pub status: Option<String>,
}

fn unquote(v: &str) -> String {
    match serde_json::from_str::<Value>(v) {
        Ok(Value::String(s)) => s,
        _ => v.to_string(),
    }
}

/// What to do with one record.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// No key: pass the record through unchanged.
    Pass,
    /// Look this key up, then [`Join::apply`] the row.
    Lookup(String),
}

impl Join {
    /// Parses `config::entries()`; unknown keys are errors, so a typo does
    /// not silently disable the join.
    pub fn from_entries(entries: &[(String, String)]) -> Result<Join, String> {
        let (mut table, mut key, mut status) = (None, None, None);
        let mut fields = Vec::new();
        for (k, v) in entries {
            match k.as_str() {
                "table" => table = Some(unquote(v)),
                "key" => key = Some(unquote(v)),
                "status" => status = Some(unquote(v)),
                other => match other.strip_prefix("fields.") {
                    Some(out) if !out.is_empty() => fields.push((out.to_string(), unquote(v))),
                    _ => return Err(format!("unknown config key `{other}`")),
                },
            }
        }
        let table = table.ok_or("config `table` is required")?;
        let key: Vec<String> = key
            .ok_or("config `key` is required (e.g. \"metadata.customer_id\")")?
            .split('.')
            .map(String::from)
            .collect();
        if key.iter().any(String::is_empty) {
            return Err("config `key` has an empty segment".into());
        }
        if fields.is_empty() {
            return Err(
                "config `fields` names no field to copy (e.g. fields = { tier = \"tier\" })".into(),
            );
        }
        Ok(Join {
            table,
            key,
            fields,
            status,
        })
    }

    /// Where the key of `value` is, if it has one.
    pub fn plan(&self, value: &[u8]) -> Result<Plan, String> {
        let v: Value =
            serde_json::from_slice(value).map_err(|e| format!("the value is not JSON: {e}"))?;
        if !v.is_object() {
            return Err("the value is not a JSON object".to_string());
        }
        let mut at = &v;
        for seg in &self.key {
            match at.get(seg) {
                Some(next) => at = next,
                None => return Ok(Plan::Pass),
            }
        }
        Ok(match at {
            Value::String(s) if !s.is_empty() => Plan::Lookup(s.clone()),
            Value::Number(n) => Plan::Lookup(n.to_string()),
            _ => Plan::Pass,
        })
    }

    /// The record with the row's fields (and the status) added; `row` is
    /// the table's value, `None` for an unknown key.
    pub fn apply(&self, value: &[u8], row: Option<&[u8]>) -> Result<Vec<u8>, String> {
        let mut v: Value =
            serde_json::from_slice(value).map_err(|e| format!("the value is not JSON: {e}"))?;
        let Value::Object(o) = &mut v else {
            return Err("the value is not a JSON object".to_string());
        };
        let row: Option<Map<String, Value>> = match row {
            None => None,
            Some(bytes) => match serde_json::from_slice(bytes) {
                Ok(Value::Object(m)) => Some(m),
                // A row that is not a JSON object has no fields to copy.
                _ => None,
            },
        };
        if let Some(row) = &row {
            for (out, field) in &self.fields {
                if o.contains_key(out) {
                    continue;
                }
                let Some(x) = row.get(field) else { continue };
                let text = match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                o.insert(out.clone(), Value::String(text));
            }
        }
        if let Some(status) = &self.status {
            let found = if row.is_some() { "found" } else { "unknown" };
            o.insert(status.clone(), Value::String(found.into()));
        }
        serde_json::to_vec(&v).map_err(|e| e.to_string())
    }
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "transformer" });

    use crate::{Join, Plan};
    use exports::weft::plugin::transform::Guest;
    use std::sync::OnceLock;
    use weft::plugin::types::{ErrorKind, PluginError, Record};

    struct TableJoin;

    /// Read once per instance (the config cannot change).
    fn join() -> &'static Result<Join, String> {
        static J: OnceLock<Result<Join, String>> = OnceLock::new();
        J.get_or_init(|| Join::from_entries(&weft::plugin::config::entries()))
    }

    fn err(kind: ErrorKind, message: String) -> PluginError {
        PluginError { kind, message }
    }

    fn one(r: Record, j: &Join) -> Result<Vec<Record>, PluginError> {
        let Some(value) = &r.value else {
            return Ok(vec![r]);
        };
        let key = match j.plan(value) {
            Ok(Plan::Pass) => return Ok(vec![r]),
            Ok(Plan::Lookup(k)) => k,
            Err(m) => return Err(err(ErrorKind::InvalidInput, m)),
        };
        let row = weft::plugin::table::get(&j.table, &key).map_err(|m| {
            err(
                ErrorKind::Config,
                format!("looking up `{key}` in table `{}`: {m}", j.table),
            )
        })?;
        let v = j
            .apply(value, row.as_deref())
            .map_err(|m| err(ErrorKind::InvalidInput, m))?;
        Ok(vec![Record {
            value: Some(v),
            ..r
        }])
    }

    impl Guest for TableJoin {
        fn transform(records: Vec<Record>) -> Vec<Result<Vec<Record>, PluginError>> {
            match join() {
                Ok(j) => records.into_iter().map(|r| one(r, j)).collect(),
                Err(m) => records
                    .iter()
                    .map(|_| Err(err(ErrorKind::Config, m.clone())))
                    .collect(),
            }
        }
    }

    export!(TableJoin);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kv: &[(&str, &str)]) -> Result<Join, String> {
        Join::from_entries(
            &kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    fn customers() -> Join {
        cfg(&[
            ("table", "customers"),
            ("key", "metadata.customer_id"),
            ("fields.booked_flight", "booking"),
            ("fields.customer_tier", "tier"),
            ("status", "customer"),
        ])
        .unwrap()
    }

    #[test]
    fn a_known_customer_adds_their_fields_and_status() {
        let j = customers();
        let q = br#"{"id":"q","question":"Is my flight late?","metadata":{"customer_id":"c-1"}}"#;
        assert_eq!(j.plan(q).unwrap(), Plan::Lookup("c-1".into()));
        let row = br#"{"id":"c-1","booking":"NW5937","tier":"Silver","miles":1200}"#;
        let v: Value = serde_json::from_slice(&j.apply(q, Some(row)).unwrap()).unwrap();
        assert_eq!(v["booked_flight"], "NW5937");
        assert_eq!(v["customer_tier"], "Silver");
        assert_eq!(v["customer"], "found");
        assert_eq!(v["question"], "Is my flight late?");
        assert!(
            v.get("miles").is_none(),
            "only the configured fields are copied"
        );
    }

    #[test]
    fn an_unknown_customer_is_marked_and_no_key_passes_through() {
        let j = customers();
        let q = br#"{"id":"q","question":"x","metadata":{"customer_id":"c-9"}}"#;
        let v: Value = serde_json::from_slice(&j.apply(q, None).unwrap()).unwrap();
        assert_eq!(v["customer"], "unknown");
        assert!(v.get("booked_flight").is_none());
        assert_eq!(j.plan(br#"{"id":"q","question":"x"}"#).unwrap(), Plan::Pass);
        assert_eq!(
            j.plan(br#"{"id":"q","metadata":{"customer_id":""}}"#)
                .unwrap(),
            Plan::Pass
        );
        assert!(j.plan(b"[1]").unwrap_err().contains("object"));
        assert!(j.plan(b"nope").unwrap_err().contains("JSON"));
    }

    #[test]
    fn existing_fields_win_and_non_strings_become_json_text() {
        let j = cfg(&[
            ("table", "t"),
            ("key", "k"),
            ("fields.a", "a"),
            ("fields.n", "n"),
        ])
        .unwrap();
        let out = j
            .apply(
                br#"{"k":"1","a":"mine"}"#,
                Some(br#"{"a":"theirs","n":[1,2]}"#),
            )
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["a"], "mine");
        assert_eq!(v["n"], "[1,2]");
    }

    #[test]
    fn config_errors_name_the_key() {
        assert!(cfg(&[("key", "k"), ("fields.a", "a")])
            .unwrap_err()
            .contains("table"));
        assert!(cfg(&[("table", "t"), ("fields.a", "a")])
            .unwrap_err()
            .contains("key"));
        assert!(cfg(&[("table", "t"), ("key", "k")])
            .unwrap_err()
            .contains("fields"));
        assert!(cfg(&[("table", "t"), ("key", "a..b"), ("fields.a", "a")])
            .unwrap_err()
            .contains("empty"));
        assert!(cfg(&[
            ("table", "t"),
            ("key", "k"),
            ("fields.a", "a"),
            ("colour", "red")
        ])
        .unwrap_err()
        .contains("colour"));
    }
}

//! A JSON object as an ordered list of fields whose values stay raw JSON.
//!
//! Only the top level is parsed: values are kept as the exact input text, so
//! nested data passes through untouched (same key order, same number
//! formatting) and large values cost no re-encoding.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// The top-level fields of a JSON object, in input order, keys unique.
#[derive(Debug, Default)]
pub struct Fields(pub Vec<(String, Box<RawValue>)>);

impl Fields {
    /// Parses `bytes`, explaining what is wrong when it is not a JSON object.
    pub fn parse(bytes: &[u8]) -> Result<Fields, String> {
        serde_json::from_slice::<Fields>(bytes).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => {
                format!("record value is a JSON {}, not an object", kind_of(bytes))
            }
            _ => format!("record value is not valid JSON: {e}"),
        })
    }

    /// Sets `key` to `value`, in place if present, else at the end.
    pub fn insert(&mut self, key: String, value: Box<RawValue>) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Serialises compactly at the top level; values are written verbatim.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(
            2 + self
                .0
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>(),
        );
        out.push(b'{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, k).map_err(|e| format!("cannot encode key: {e}"))?;
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
        Ok(out)
    }
}

/// What a JSON document that is not an object is, for error messages.
fn kind_of(bytes: &[u8]) -> &'static str {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        Some(b'-' | b'0'..=b'9') => "number",
        _ => "value",
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Fields::default();
                // A repeated key keeps its first position and its last value,
                // as most JSON parsers do.
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    fields.insert(k, v);
                }
                Ok(fields)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_order_and_nested_text() {
        let input = br#" { "z": 1.50, "a": {"y": [1, 2], "b": null}, "m": "x" } "#;
        let f = Fields::parse(input).unwrap();
        assert_eq!(
            String::from_utf8(f.to_bytes().unwrap()).unwrap(),
            r#"{"z":1.50,"a":{"y": [1, 2], "b": null},"m":"x"}"#
        );
    }

    #[test]
    fn duplicate_keys_keep_the_last_value() {
        let f = Fields::parse(br#"{"a":1,"b":2,"a":3}"#).unwrap();
        assert_eq!(f.to_bytes().unwrap(), br#"{"a":3,"b":2}"#);
    }

    #[test]
    fn non_objects_are_explained() {
        assert_eq!(
            Fields::parse(b" [1,2]").unwrap_err(),
            "record value is a JSON array, not an object"
        );
        assert_eq!(
            Fields::parse(b"\"s\"").unwrap_err(),
            "record value is a JSON string, not an object"
        );
        assert_eq!(
            Fields::parse(b"42").unwrap_err(),
            "record value is a JSON number, not an object"
        );
        assert!(Fields::parse(b"{\"a\":")
            .unwrap_err()
            .starts_with("record value is not valid JSON"));
        assert!(Fields::parse(b"\xff")
            .unwrap_err()
            .starts_with("record value is not valid JSON"));
    }
}

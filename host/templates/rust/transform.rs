//! {{name}}: a weft `transform` stage, a WebAssembly component for world
//! `transformer` of wit/weft.wit.
//!
//! It passes every record through and sets one header, `processed-by:
//! {{name}}` unless the stage's config in pipeline.toml says otherwise:
//!
//! ```toml
//! config = { header = "processed-by", value = "{{name}}" }
//! ```
//!
//! Keys, values (tombstones too) and the other headers pass through as they
//! are. The logic is plain Rust, unit-tested natively with `cargo test`; the
//! bindings are in `component`, compiled only for wasm.

/// The header set when the config names none.
pub const DEFAULT_HEADER: &str = "processed-by";
/// Its value when the config gives none.
pub const DEFAULT_VALUE: &str = "{{name}}";

/// Sets header `name` to `value`, replacing any header of that name.
pub fn set_header(headers: &mut Vec<(String, Vec<u8>)>, name: &str, value: &[u8]) {
    headers.retain(|(k, _)| k != name);
    headers.push((name.to_string(), value.to_vec()));
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "wit", world: "transformer" });

    use exports::weft::plugin::transform::Guest;
    use std::sync::OnceLock;
    use weft::plugin::config;
    use weft::plugin::types::{Header, PluginError, Record};

    /// The header's name and value, read from the config on the first call:
    /// the config cannot change during an instance's life.
    fn header() -> &'static (String, Vec<u8>) {
        static HEADER: OnceLock<(String, Vec<u8>)> = OnceLock::new();
        HEADER.get_or_init(|| {
            let name = config::get("header").filter(|h| !h.is_empty());
            let value = config::get("value");
            (
                name.unwrap_or_else(|| crate::DEFAULT_HEADER.to_string()),
                value
                    .unwrap_or_else(|| crate::DEFAULT_VALUE.to_string())
                    .into_bytes(),
            )
        })
    }

    struct Plugin;

    impl Guest for Plugin {
        /// One result per input record, in order: here always one record.
        fn transform(records: Vec<Record>) -> Vec<Result<Vec<Record>, PluginError>> {
            let (name, value) = header();
            records
                .into_iter()
                .map(|r| {
                    let mut headers: Vec<(String, Vec<u8>)> =
                        r.headers.into_iter().map(|h| (h.key, h.value)).collect();
                    crate::set_header(&mut headers, name, value);
                    let headers = headers
                        .into_iter()
                        .map(|(key, value)| Header { key, value })
                        .collect();
                    Ok(vec![Record {
                        key: r.key,
                        value: r.value,
                        headers,
                    }])
                })
                .collect()
        }
    }

    export!(Plugin);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_or_replaces_the_header() {
        let mut h = vec![("trace".to_string(), b"1".to_vec())];
        set_header(&mut h, "processed-by", b"me");
        set_header(&mut h, "processed-by", b"me again");
        assert_eq!(
            h,
            vec![
                ("trace".to_string(), b"1".to_vec()),
                ("processed-by".to_string(), b"me again".to_vec())
            ]
        );
    }
}

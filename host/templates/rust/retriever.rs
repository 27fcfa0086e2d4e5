//! {{name}}: a weft `retriever` stage, a WebAssembly component for world
//! `retriever` of wit/weft.wit.
//!
//! It asks the host's vector index (`index.search`, the pipeline tenant's own
//! index) for the `k` chunks nearest to the question's vector, filtered by
//! nothing, and returns them best first.
//!
//! Configuration (optional), in pipeline.toml: `k` (5), 1 to 1000.
//!
//! The logic is plain Rust, unit-tested natively with `cargo test`; the
//! bindings are in `component`, compiled only for wasm.

/// Hits returned when the config sets no `k`.
pub const DEFAULT_K: u32 = 5;

/// The `k` config value (a number, as JSON text), or the default.
pub fn parse_k(value: Option<&str>) -> Result<u32, String> {
    let Some(v) = value else {
        return Ok(DEFAULT_K);
    };
    match v.trim().trim_matches('"').parse::<u32>() {
        Ok(k) if (1..=1000).contains(&k) => Ok(k),
        _ => Err(format!(
            "config `k` must be an integer from 1 to 1000, not `{v}`"
        )),
    }
}

/// Checks the question's vector before it goes to the index, so a bad
/// embedder upstream shows as this item's input problem.
pub fn check_vector(v: &[f32]) -> Result<(), String> {
    if v.is_empty() {
        return Err("the question's vector is empty".to_string());
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err("the question's vector has a non-finite value".to_string());
    }
    Ok(())
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "wit", world: "retriever" });

    use exports::weft::plugin::retrieve::Guest;
    use std::sync::OnceLock;
    use weft::plugin::log::{log, Level};
    use weft::plugin::types::{ErrorKind, Hit, Meta, PluginError, Question};

    /// The configured `k`, read on the first call: the config cannot change
    /// during an instance's life.
    fn k() -> &'static Result<u32, String> {
        static K: OnceLock<Result<u32, String>> = OnceLock::new();
        K.get_or_init(|| {
            let k = crate::parse_k(weft::plugin::config::get("k").as_deref());
            if let Err(e) = &k {
                log(Level::Error, e);
            }
            k
        })
    }

    struct Plugin;

    impl Guest for Plugin {
        fn retrieve(question: Question, vector: Vec<f32>) -> Result<Vec<Hit>, PluginError> {
            let k = k().clone().map_err(|message| PluginError {
                kind: ErrorKind::Config,
                message,
            })?;
            crate::check_vector(&vector).map_err(|message| PluginError {
                kind: ErrorKind::InvalidInput,
                message,
            })?;
            // Every entry must match a chunk's metadata exactly, e.g. the
            // question's own metadata: `question.metadata.clone()`.
            let filter: Vec<Meta> = Vec::new();
            let hits =
                weft::plugin::index::search(&vector, k, &filter).map_err(|e| PluginError {
                    kind: ErrorKind::Internal,
                    message: format!("index search failed: {e}"),
                })?;
            log(
                Level::Debug,
                &format!("question `{}`: {} hit(s)", question.id, hits.len()),
            );
            Ok(hits)
        }
    }

    export!(Plugin);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_config() {
        assert_eq!(parse_k(None), Ok(5));
        assert_eq!(parse_k(Some("3")), Ok(3));
        for bad in ["0", "1001", "five"] {
            assert!(parse_k(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn vectors_are_checked() {
        assert!(check_vector(&[0.5, 0.5]).is_ok());
        assert!(check_vector(&[]).is_err());
        assert!(check_vector(&[f32::NAN]).is_err());
    }
}

//! {{name}}: a weft `embedder` stage, a WebAssembly component for world
//! `embedder` of wit/weft.wit.
//!
//! A tiny deterministic bag-of-words embedding, no model needed: each
//! lower-cased word is hashed (FNV-1a) into one of `dimension` buckets, adding
//! +1 or -1 there, and the vector is L2-normalised (a text without words gives
//! all zeros). Texts sharing words get similar vectors; that is all it knows.
//!
//! Configuration (optional), in pipeline.toml: `dimension` (64), 1 to 4096.
//!
//! The logic is plain Rust, unit-tested natively with `cargo test`; the
//! bindings are in `component`, compiled only for wasm.

/// The dimension when the config sets none.
pub const DEFAULT_DIMENSION: u32 = 64;
/// The largest dimension accepted.
pub const MAX_DIMENSION: u32 = 4096;

/// The `dimension` config value (a number, as JSON text), or the default.
pub fn parse_dimension(value: Option<&str>) -> Result<u32, String> {
    let Some(v) = value else {
        return Ok(DEFAULT_DIMENSION);
    };
    match v.trim().trim_matches('"').parse::<u32>() {
        Ok(d) if (1..=MAX_DIMENSION).contains(&d) => Ok(d),
        _ => Err(format!(
            "config `dimension` must be an integer from 1 to {MAX_DIMENSION}, not `{v}`"
        )),
    }
}

/// 64-bit FNV-1a: simple, fast and the same everywhere.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The embedding of `text` in `dimension` dimensions.
pub fn embed(text: &str, dimension: u32) -> Vec<f32> {
    let dim = u64::from(dimension.max(1));
    let mut v = vec![0f32; dim as usize];
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let h = fnv1a(word.to_lowercase().as_bytes());
        let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
        v[(h % dim) as usize] += sign;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "wit", world: "embedder" });

    use exports::weft::plugin::embed::Guest;
    use std::sync::OnceLock;
    use weft::plugin::log::{log, Level};
    use weft::plugin::types::{ErrorKind, PluginError};

    /// The configured dimension, read on the first call: the config cannot
    /// change during an instance's life.
    fn dimension() -> &'static Result<u32, String> {
        static DIMENSION: OnceLock<Result<u32, String>> = OnceLock::new();
        DIMENSION.get_or_init(|| {
            let d = crate::parse_dimension(weft::plugin::config::get("dimension").as_deref());
            if let Err(e) = &d {
                log(Level::Error, e);
            }
            d
        })
    }

    struct Plugin;

    impl Guest for Plugin {
        /// With a bad config there is no meaningful dimension; 0 matches no
        /// vector, and `embed` reports the actual problem.
        fn dimension() -> u32 {
            dimension().clone().unwrap_or(0)
        }

        fn embed(texts: Vec<String>) -> Result<Vec<Vec<f32>>, PluginError> {
            let d = dimension().clone().map_err(|message| PluginError {
                kind: ErrorKind::Config,
                message,
            })?;
            Ok(texts.iter().map(|t| crate::embed(t, d)).collect())
        }
    }

    export!(Plugin);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_normalised_and_word_based() {
        let a = embed("Checked bags cost 60 EUR", 64);
        assert_eq!(a.len(), 64);
        assert_eq!(a, embed("checked BAGS, cost 60 eur!", 64));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert!(embed(" ... ", 8).iter().all(|x| *x == 0.0));
    }

    #[test]
    fn dimension_config() {
        assert_eq!(parse_dimension(None), Ok(64));
        assert_eq!(parse_dimension(Some("128")), Ok(128));
        for bad in ["0", "4097", "many", "-1"] {
            assert!(parse_dimension(Some(bad)).is_err(), "{bad}");
        }
    }
}

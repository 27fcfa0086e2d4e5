//! Read-your-writes: a question may require that the index has applied
//! given source offsets (the produce receipt of a document update) before
//! it is searched. The requirement travels in the question's header
//! [`MIN_OFFSETS_HEADER`]; the retriever's index search waits for it,
//! bounded, inside the host call (so by the stage's call deadline too), and
//! records what it read at, which the answer then states.
//!
//! The wait runs inside the plugin's `index.search`/`index.query` host call
//! because that is where the index is read: waiting anywhere earlier would
//! let a later search still read older data in another process's index
//! view, and waiting later is too late. It holds the stage's worker slot
//! meanwhile, which is why it is bounded by the call's deadline.

use std::collections::BTreeMap;
use std::time::Duration;

/// The question header carrying a read-your-writes requirement.
pub const MIN_OFFSETS_HEADER: &str = "weft.min-offsets";

/// Retriever stage config key: how long the index may wait (ms).
pub const TIMEOUT_KEY: &str = "min_offsets_timeout_ms";
/// Retriever stage config key: `"flag"` (answer, marked stale) or
/// `"dead-letter"` when the requirement is not met in time.
pub const ON_STALE_KEY: &str = "on_stale";
/// Default wait: long enough for an index sink's batch (linger 20 ms, one
/// LMDB commit) under load, short of the default 5 s call timeout.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(4);

/// (topic, partition, offset) triples: a requirement, or watermarks.
pub type Offsets = Vec<(String, i32, i64)>;

/// What a question requires of the index.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRequirement {
    /// (topic, partition, offset): the index's watermark for the topic's
    /// partition must be at least the offset.
    pub need: Vec<(String, i32, i64)>,
    /// How long the search may wait for it (cut at the call's deadline).
    pub wait: Duration,
}

/// What a retriever's index search read at.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadAt {
    /// The index's watermarks when it was read: every document version up
    /// to these offsets is visible to the search.
    pub watermarks: Vec<(String, i32, i64)>,
    /// The question's requirement, if any.
    pub required: Vec<(String, i32, i64)>,
    /// The requirement was not met within the wait: the answer may not
    /// reflect the writes it asked for.
    pub stale: bool,
    /// Time spent waiting for the requirement.
    pub waited: Duration,
}

/// What to do with a question whose requirement timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStale {
    /// Answer from what the index holds, with `stale: true` in the answer.
    #[default]
    Flag,
    /// Send the question to the dead-letter topic instead of answering.
    DeadLetter,
}

/// A malformed `weft.min-offsets` header.
#[derive(Debug, Clone, thiserror::Error)]
#[error("header `{MIN_OFFSETS_HEADER}`: {0}")]
pub struct RequirementError(pub String);

/// Parses a `weft.min-offsets` value: a JSON object
/// `{"airline.docs/0": 123, ...}` or the compact form
/// `airline.docs/0:123,airline.docs/1:7`. Topic names cannot contain `/`
/// (Kafka allows letters, digits, `.`, `_`, `-`), so the last `/` separates
/// the partition.
pub fn parse_min_offsets(value: &[u8]) -> Result<Vec<(String, i32, i64)>, RequirementError> {
    let text = std::str::from_utf8(value)
        .map_err(|_| RequirementError("not UTF-8".into()))?
        .trim();
    let pairs: Vec<(String, i64)> = if text.starts_with('{') {
        let m: BTreeMap<String, serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| RequirementError(format!("not a JSON object of offsets: {e}")))?;
        m.into_iter()
            .map(|(k, v)| {
                v.as_i64()
                    .map(|o| (k.clone(), o))
                    .ok_or_else(|| RequirementError(format!("`{k}`: offset {v} is not an integer")))
            })
            .collect::<Result<_, _>>()?
    } else {
        text.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                let (k, o) = s.trim().rsplit_once(':').ok_or_else(|| {
                    RequirementError(format!("`{s}`: expected topic/partition:offset"))
                })?;
                let o = o.parse::<i64>().map_err(|_| {
                    RequirementError(format!("`{s}`: offset `{o}` is not an integer"))
                })?;
                Ok((k.to_string(), o))
            })
            .collect::<Result<_, _>>()?
    };
    if pairs.is_empty() {
        return Err(RequirementError("names no offsets".into()));
    }
    pairs
        .into_iter()
        .map(|(k, o)| {
            let (topic, partition) = k
                .rsplit_once('/')
                .ok_or_else(|| RequirementError(format!("`{k}`: expected topic/partition")))?;
            let partition = partition
                .parse::<i32>()
                .ok()
                .filter(|p| *p >= 0)
                .ok_or_else(|| RequirementError(format!("`{k}`: bad partition")))?;
            if topic.is_empty() || o < 0 {
                return Err(RequirementError(format!(
                    "`{k}`: empty topic or negative offset"
                )));
            }
            Ok((topic.to_string(), partition, o))
        })
        .collect()
}

/// `{"topic/partition": offset, ...}`, the form the header and the answer use.
pub fn offsets_json(marks: &[(String, i32, i64)]) -> serde_json::Value {
    serde_json::Value::Object(
        marks
            .iter()
            .map(|(t, p, o)| (format!("{t}/{p}"), serde_json::json!(o)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_header_forms_parse_and_bad_ones_are_refused() {
        let want = vec![
            ("airline.docs".to_string(), 0, 123),
            ("airline.docs".to_string(), 2, 7),
        ];
        assert_eq!(
            parse_min_offsets(br#"{"airline.docs/0": 123, "airline.docs/2": 7}"#).unwrap(),
            want
        );
        assert_eq!(
            parse_min_offsets(b"airline.docs/0:123, airline.docs/2:7").unwrap(),
            want
        );
        for bad in [
            &b""[..],
            b"{}",
            b"airline.docs:5",
            b"airline.docs/x:5",
            b"airline.docs/0:-1",
            b"{\"a/0\": \"5\"}",
            b"\xff",
        ] {
            assert!(parse_min_offsets(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            offsets_json(&want),
            serde_json::json!({"airline.docs/0": 123, "airline.docs/2": 7})
        );
    }
}

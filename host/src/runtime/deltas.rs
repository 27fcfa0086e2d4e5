//! The host side of `deltas`: a generator's answer handed on piece by piece
//! while the generator runs (time to first token), under the same bounds as
//! its output.
//!
//! Every call of a generator is one *stream* with its own id, numbered from
//! 0. The host always ends a stream with a final piece: the rest of the
//! answer when what was emitted is a prefix of it, the whole answer with
//! `reset` when it is not (or a piece was dropped), or an `error` when the
//! question failed. So the pieces of the last stream of a question, joined,
//! are exactly its answer. A replay (after a crash, or a retried call)
//! starts a new stream at 0: a reader keeps, per question, the stream whose
//! piece 0 it saw last, and discards what it had.

use serde::Serialize;
use std::sync::{Arc, OnceLock};

/// One piece of a question's answer stream, as a reader receives it (the
/// JSON value of a record on `<answers topic>.deltas`, keyed by `id`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Delta {
    /// The question id.
    pub id: String,
    /// This attempt's stream; a new one restarts `seq` at 0.
    pub stream: String,
    pub seq: u32,
    pub text: String,
    /// The last piece of the stream.
    #[serde(rename = "final")]
    pub last: bool,
    /// Discard the text received so far: `text` is the whole answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    /// The question failed (dead-lettered with this reason); no answer follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a stage's pieces go (the stream layer implements it for Kafka).
/// Called from inside a plugin call: it must not block.
pub trait DeltaSink: Send + Sync {
    /// Hands `d` on; `false` if it was dropped (a full queue), which the
    /// stream repairs with a `reset` final piece. `origin_ms` is the
    /// question record's timestamp (for time-to-first-token figures).
    fn send(&self, d: Delta, origin_ms: Option<i64>) -> bool;
}

/// The pipeline's sink for answer pieces, attached once it knows its broker
/// (none: pieces are bounded and dropped). Shared by the pipeline's stages.
pub type DeltaSlot = Arc<OnceLock<Arc<dyn DeltaSink>>>;

/// Longest final error text put on a stream (the dead letter has it whole).
const MAX_ERROR: usize = 1024;

/// One generator call's stream.
pub struct DeltaStream {
    id: String,
    stream: String,
    origin_ms: Option<i64>,
    sink: Option<Arc<dyn DeltaSink>>,
    seq: u32,
    /// What was emitted (to check the answer extends it), bounded by `max_bytes`.
    emitted: String,
    /// A piece was dropped on the way: the final piece must reset.
    gap: bool,
    max_pieces: u64,
    max_bytes: u64,
    /// Emits refused past a bound.
    pub refused: u64,
}

impl DeltaStream {
    /// A new stream for question `id`, at most `max_pieces` pieces and
    /// `max_bytes` bytes of text per call (the stage's output bounds).
    pub fn new(
        id: &str,
        origin_ms: Option<i64>,
        sink: Option<Arc<dyn DeltaSink>>,
        max_pieces: u64,
        max_bytes: u64,
    ) -> DeltaStream {
        DeltaStream {
            id: id.to_string(),
            stream: format!("{:016x}", rand::random::<u64>()),
            origin_ms,
            sink,
            seq: 0,
            emitted: String::new(),
            gap: false,
            max_pieces,
            max_bytes,
            refused: 0,
        }
    }

    /// This attempt's stream id.
    pub fn stream_id(&self) -> &str {
        &self.stream
    }

    /// Pieces handed on so far.
    pub fn pieces(&self) -> u32 {
        self.seq
    }

    fn send(&mut self, text: String, last: bool, reset: bool, error: Option<String>) {
        let d = Delta {
            id: self.id.clone(),
            stream: self.stream.clone(),
            seq: self.seq,
            text,
            last,
            reset,
            error,
        };
        self.seq += 1;
        if let Some(sink) = &self.sink {
            if !sink.send(d, self.origin_ms) {
                self.gap = true;
            }
        }
    }

    /// The plugin's `emit`: appends `text`, or refuses it past a bound (the
    /// last piece slot is kept for the final one).
    pub fn emit(&mut self, text: String) -> Result<(), String> {
        if text.is_empty() {
            return Ok(());
        }
        if u64::from(self.seq) + 1 >= self.max_pieces {
            self.refused += 1;
            return Err(format!(
                "this answer already has {} pieces, the stage's limit (limits.max_outputs = {}); \
                 return the answer, it is delivered whole",
                self.seq, self.max_pieces
            ));
        }
        if (self.emitted.len() + text.len()) as u64 > self.max_bytes {
            self.refused += 1;
            return Err(format!(
                "the answer's pieces would pass {} bytes, the stage's limit (limits.max_output_kb); \
                 return the answer, it is delivered whole",
                self.max_bytes
            ));
        }
        self.emitted.push_str(&text);
        self.send(text, false, false, None);
        Ok(())
    }

    /// Ends the stream with the complete answer: the rest of it, or all of
    /// it with `reset` if the pieces sent are not its beginning.
    pub fn finish_answer(mut self, answer: &str) {
        match answer.strip_prefix(self.emitted.as_str()) {
            Some(rest) if !self.gap => {
                let rest = rest.to_string();
                self.send(rest, true, false, None);
            }
            _ => self.send(answer.to_string(), true, true, None),
        }
    }

    /// Ends the stream of a question that failed: readers stop waiting.
    pub fn finish_error(mut self, reason: &str) {
        let mut e: String = reason.chars().take(MAX_ERROR).collect();
        if e.len() < reason.len() {
            e.push('…');
        }
        self.send(String::new(), true, self.seq > 0, Some(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Delta>>, bool);

    impl DeltaSink for Collect {
        fn send(&self, d: Delta, _: Option<i64>) -> bool {
            if self.1 && d.seq == 1 {
                return false;
            }
            self.0.lock().map(|mut v| v.push(d)).is_ok()
        }
    }

    fn joined(c: &Collect) -> (String, Vec<u32>, bool) {
        let v = c.0.lock().map(|v| v.clone()).unwrap_or_default();
        let mut text = String::new();
        for d in &v {
            if d.reset {
                text.clear();
            }
            text.push_str(&d.text);
        }
        (
            text,
            v.iter().map(|d| d.seq).collect(),
            v.last().is_some_and(|d| d.last),
        )
    }

    #[test]
    fn pieces_and_the_final_rest_join_to_the_answer() {
        let c = Arc::new(Collect::default());
        let mut s = DeltaStream::new("q1", None, Some(c.clone()), 100, 1000);
        s.emit("The gate ".into()).unwrap();
        s.emit("is B7".into()).unwrap();
        s.finish_answer("The gate is B7 [1].");
        assert_eq!(
            joined(&c),
            ("The gate is B7 [1].".to_string(), vec![0, 1, 2], true)
        );
    }

    #[test]
    fn an_answer_that_does_not_extend_the_pieces_resets() {
        let c = Arc::new(Collect::default());
        let mut s = DeltaStream::new("q1", None, Some(c.clone()), 100, 1000);
        s.emit("draft".into()).unwrap();
        s.finish_answer("final text");
        let v = c.0.lock().unwrap().clone();
        assert!(v[1].reset && v[1].last && v[1].text == "final text");
        assert_eq!(joined(&c).0, "final text");
    }

    #[test]
    fn a_dropped_piece_resets_the_final_one() {
        let c = Arc::new(Collect(Mutex::new(Vec::new()), true));
        let mut s = DeltaStream::new("q1", None, Some(c.clone()), 100, 1000);
        for w in ["a ", "b ", "c"] {
            s.emit(w.into()).unwrap();
        }
        s.finish_answer("a b c");
        assert_eq!(joined(&c).0, "a b c");
        assert!(c.0.lock().unwrap().last().unwrap().reset);
    }

    #[test]
    fn bounds_refuse_pieces_and_keep_room_for_the_final_one() {
        let c = Arc::new(Collect::default());
        let mut s = DeltaStream::new("q1", None, Some(c.clone()), 3, 1000);
        assert!(s.emit("a".into()).is_ok());
        assert!(s.emit("b".into()).is_ok());
        let e = s.emit("c".into()).unwrap_err();
        assert!(e.contains("max_outputs"), "{e}");
        s.finish_answer("abc");
        assert_eq!(joined(&c), ("abc".to_string(), vec![0, 1, 2], true));

        let c = Arc::new(Collect::default());
        let mut s = DeltaStream::new("q1", None, Some(c.clone()), 100, 4);
        assert!(s.emit("abcd".into()).is_ok());
        assert!(s.emit("e".into()).unwrap_err().contains("max_output_kb"));
        assert_eq!(s.refused, 1);
    }

    #[test]
    fn a_failed_question_ends_its_stream_with_the_reason() {
        let c = Arc::new(Collect::default());
        let mut s = DeltaStream::new("q1", None, Some(c.clone()), 100, 1000);
        s.emit("half".into()).unwrap();
        s.finish_error(&"x".repeat(5000));
        let v = c.0.lock().unwrap().clone();
        let last = v.last().unwrap();
        assert!(last.last && last.reset && last.text.is_empty());
        assert!(last.error.as_ref().unwrap().chars().count() <= MAX_ERROR + 1);
    }
}

//! `weft run --input`: run a pipeline over a JSON Lines file, no broker needed.
//! This is a plugin author's inner loop, so it reports like a compiler:
//! progress on large inputs, a summary at the end, and every failed record in
//! a dead-letter file with its reason and line number.

use super::{Result, StreamError};
use crate::pipeline::{DeadLetter, Pipeline};
use crate::record::{Item, Origin, Payload};
use crate::runtime::{Delta, DeltaSink};
use serde_json::{Map, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Totals of a local run.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub records_in: u64,
    pub records_out: u64,
    pub dead_letters: u64,
    /// Documents upserted or deleted in the `[sink] index`.
    pub indexed_docs: u64,
    pub elapsed: Duration,
}

/// Turns one input line into an item. Accepted shapes:
/// - an envelope `{"key": ..., "value": ..., "headers": {...}}` (value: any JSON;
///   a string is taken as its raw text; `null` is a tombstone);
/// - any other JSON object: it is the value, and its `id` is the key;
/// - anything else: the raw line bytes are the value (it will dead-letter
///   in a stage that needs JSON, which is what garbage should do).
pub fn parse_line(source: &str, line_no: i64, line: &[u8]) -> Item {
    let mut key: Option<Vec<u8>> = None;
    let mut headers = Vec::new();
    let value: Option<Vec<u8>>;
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(o)) if is_envelope(&o) => {
            key = match o.get("key") {
                Some(Value::String(s)) => Some(s.clone().into_bytes()),
                Some(Value::Null) | None => None,
                Some(other) => Some(other.to_string().into_bytes()),
            };
            if let Some(Value::Object(h)) = o.get("headers") {
                for (k, v) in h {
                    let v = match v {
                        Value::String(s) => s.clone().into_bytes(),
                        other => other.to_string().into_bytes(),
                    };
                    headers.push((k.clone(), v));
                }
            }
            value = match o.get("value") {
                Some(Value::Null) | None => None,
                Some(Value::String(s)) => Some(s.clone().into_bytes()),
                Some(other) => Some(other.to_string().into_bytes()),
            };
        }
        Ok(Value::Object(o)) => {
            if let Some(Value::String(id)) = o.get("id") {
                key = Some(id.clone().into_bytes());
            }
            value = Some(line.to_vec());
        }
        _ => value = Some(line.to_vec()),
    }
    let origin = Origin {
        topic: source.to_string(),
        partition: 0,
        offset: line_no,
        key: key.clone(),
        value: value.clone(),
    };
    Item {
        key,
        headers,
        timestamp: None,
        origin: Arc::new(origin),
        payload: Payload::Raw(value),
    }
}

fn is_envelope(o: &Map<String, Value>) -> bool {
    o.contains_key("value")
        && o.keys()
            .all(|k| k == "key" || k == "value" || k == "headers")
}

fn bytes_as_json(b: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(b) {
        Ok(v) => v,
        Err(_) => Value::String(String::from_utf8_lossy(b).into_owned()),
    }
}

fn text_of(b: &Option<Vec<u8>>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
    }
}

/// The JSON line written for an output item: typed payloads as themselves,
/// raw records and deletions as envelopes.
pub fn output_line(item: &Item) -> Value {
    match &item.payload {
        Payload::Document(_) | Payload::Chunk(_) | Payload::Question(_) => {
            let bytes = item.payload.to_value_bytes().unwrap_or_default();
            bytes_as_json(&bytes)
        }
        Payload::Delete(id) => serde_json::json!({"key": id, "value": null}),
        Payload::Raw(v) => {
            let mut o = Map::new();
            o.insert("key".into(), text_of(&item.key));
            o.insert(
                "value".into(),
                v.as_deref().map(bytes_as_json).unwrap_or(Value::Null),
            );
            if !item.headers.is_empty() {
                let h: Map<String, Value> = item
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            Value::String(String::from_utf8_lossy(v).into_owned()),
                        )
                    })
                    .collect();
                o.insert("headers".into(), Value::Object(h));
            }
            Value::Object(o)
        }
    }
}

/// The JSON line written for a dead letter.
pub fn dead_letter_line(d: &DeadLetter) -> Value {
    serde_json::json!({
        "stage": d.stage,
        "error_kind": d.failure.kind.as_str(),
        "error": d.failure.message,
        "source": {"topic": d.item.origin.topic, "partition": d.item.origin.partition, "offset": d.item.origin.offset},
        "key": text_of(&d.item.origin.key),
        "value": text_of(&d.item.origin.value),
    })
}

/// The default dead-letter file next to the output: `out.jsonl` -> `out.dead-letters.jsonl`.
pub fn default_dead_letter_path(output: &Path) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    output.with_file_name(format!("{stem}.dead-letters.jsonl"))
}

/// The answer-piece file next to the output: `out.jsonl` -> `out.deltas.jsonl`.
pub fn default_deltas_path(output: &Path) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    output.with_file_name(format!("{stem}.deltas.jsonl"))
}

/// A generator's answer pieces as JSON lines (the records a broker run
/// produces to `<answers>.deltas`), each written and flushed as it is
/// emitted, so `tail -f` shows an answer being written.
struct FileDeltas {
    w: Mutex<BufWriter<File>>,
}

impl DeltaSink for FileDeltas {
    fn send(&self, d: Delta, _origin_ms: Option<i64>) -> bool {
        let Ok(mut w) = self.w.lock() else {
            return false;
        };
        serde_json::to_writer(&mut *w, &d).is_ok()
            && w.write_all(b"\n").is_ok()
            && w.flush().is_ok()
    }
}

/// Runs `pipeline` over `input`, writing outputs and dead letters (and,
/// for a pipeline with a generator, its answer pieces next to the output:
/// [`default_deltas_path`]).
pub fn run_file(
    pipeline: &mut Pipeline,
    input: &Path,
    output: &Path,
    dead_letters: &Path,
    progress: bool,
) -> Result<RunSummary> {
    let t0 = Instant::now();
    let file = File::open(input)
        .map_err(|e| StreamError::io(format!("opening input {}", input.display()), e))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = BufReader::new(file);
    let mut out = BufWriter::new(
        File::create(output)
            .map_err(|e| StreamError::io(format!("creating {}", output.display()), e))?,
    );
    let mut dlq = BufWriter::new(
        File::create(dead_letters)
            .map_err(|e| StreamError::io(format!("creating {}", dead_letters.display()), e))?,
    );
    if pipeline.manifest.deltas_topic().is_some() {
        let path = default_deltas_path(output);
        let f = File::create(&path)
            .map_err(|e| StreamError::io(format!("creating {}", path.display()), e))?;
        pipeline.attach_deltas(Arc::new(FileDeltas {
            w: Mutex::new(BufWriter::new(f)),
        }));
    }
    let bar = if progress {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let source = input.display().to_string();
    let batch_size = pipeline.manifest.batch_records as usize;
    let mut summary = RunSummary::default();
    let mut line_no = 0i64;
    let mut read_bytes = 0u64;
    let mut buf = Vec::new();
    loop {
        let mut batch = Vec::with_capacity(batch_size);
        while batch.len() < batch_size {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| StreamError::io(format!("reading {}", input.display()), e))?;
            if n == 0 {
                break;
            }
            read_bytes += n as u64;
            line_no += 1;
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            batch.push(parse_line(&source, line_no, line));
        }
        if batch.is_empty() {
            break;
        }
        summary.records_in += batch.len() as u64;
        let mut outcome = pipeline.process(batch);
        if let Some(sink) = &pipeline.sink {
            let r = sink.write(&outcome).map_err(|source| StreamError::Sink {
                pipeline: pipeline.manifest.name.clone(),
                source,
            })?;
            summary.indexed_docs += r.docs_upserted + r.docs_deleted;
            // A record the sink refused is a dead letter, not an output too.
            outcome.drop_outputs_of(&r.dead);
            outcome.dead.extend(r.dead);
        }
        let write = |w: &mut BufWriter<File>, v: &Value, path: &Path| {
            serde_json::to_writer(&mut *w, v)
                .map_err(std::io::Error::from)
                .and_then(|_| w.write_all(b"\n"))
                .map_err(|e| StreamError::io(format!("writing {}", path.display()), e))
        };
        for item in &outcome.outputs {
            write(&mut out, &output_line(item), output)?;
        }
        for d in &outcome.dead {
            write(&mut dlq, &dead_letter_line(d), dead_letters)?;
        }
        // Each finished batch reaches the files before the next is read, so
        // a killed run loses at most the batch in flight.
        out.flush()
            .map_err(|e| StreamError::io(format!("writing {}", output.display()), e))?;
        dlq.flush()
            .map_err(|e| StreamError::io(format!("writing {}", dead_letters.display()), e))?;
        summary.records_out += outcome.outputs.len() as u64;
        summary.dead_letters += outcome.dead.len() as u64;
        bar.set_position(read_bytes);
        bar.set_message(format!(
            "{} in, {} out, {} failed",
            summary.records_in, summary.records_out, summary.dead_letters
        ));
    }
    bar.finish_and_clear();
    summary.elapsed = t0.elapsed();
    Ok(summary)
}

//! The items that flow between stages, and their JSON forms on topics and in
//! files.
//!
//! A source record enters as [`Payload::Raw`] bytes; the first stage that needs
//! a typed value decodes it (a document for a chunker, a chunk or question for
//! an embedder, ...). Transform stages see and return raw records, so a typed
//! payload is encoded to its JSON form on the way into a transform.

use crate::runtime::bindings::types::{
    Answer, Chunk, Document, Hit, Message, Meta, Question, Role,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Where a record came from: enough to find it again and to dead-letter it
/// with its original bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    /// Topic name, or the input file for local runs.
    pub topic: String,
    pub partition: i32,
    /// Kafka offset, or the 1-based line number for local runs.
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// One unit of work between stages.
#[derive(Debug, Clone)]
pub struct Item {
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Kafka timestamp (ms since epoch), kept from the source record.
    pub timestamp: Option<i64>,
    pub origin: Arc<Origin>,
    pub payload: Payload,
}

#[derive(Debug, Clone)]
pub enum Payload {
    /// Undecoded bytes; `None` is a tombstone.
    Raw(Option<Vec<u8>>),
    Document(Document),
    /// A deleted document (tombstone on the documents topic), by id.
    Delete(String),
    Chunk(EmbeddedChunk),
    Question(QuestionState),
}

#[derive(Debug, Clone)]
pub struct EmbeddedChunk {
    pub chunk: Chunk,
    pub vector: Option<Vec<f32>>,
}

/// A question and everything the query path has learned about it so far.
#[derive(Debug, Clone)]
pub struct QuestionState {
    pub question: Question,
    pub vector: Option<Vec<f32>>,
    pub hits: Vec<Hit>,
    pub messages: Vec<Message>,
    pub answer: Option<Answer>,
    /// Milliseconds spent per stage, in stage order.
    pub timings: Vec<(String, f64)>,
    /// What produced the answer (stage components and configs, the cited
    /// chunks' content hashes and sources), set once it is answered.
    pub provenance: Option<Value>,
    /// What the retriever's index search read at (`index_read` in the
    /// answer): the index's watermarks, and for a question with a
    /// read-your-writes requirement, the requirement and whether it was
    /// met in time (`stale`).
    pub index_read: Option<Value>,
}

impl QuestionState {
    pub fn new(question: Question) -> QuestionState {
        QuestionState {
            question,
            vector: None,
            hits: Vec::new(),
            messages: Vec::new(),
            answer: None,
            timings: Vec::new(),
            provenance: None,
            index_read: None,
        }
    }
}

/// Why a value could not be decoded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn parse_json(bytes: &[u8]) -> Result<Value, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        DecodeError(format!(
            "value is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    serde_json::from_str(text).map_err(|e| {
        DecodeError(format!(
            "value is not valid JSON: {e} (value starts with {:?})",
            text.chars().take(40).collect::<String>()
        ))
    })
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn meta_from_object(m: Option<&Value>) -> Result<Vec<Meta>, DecodeError> {
    match m {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(o)) => Ok(o
            .iter()
            .map(|(k, v)| Meta {
                key: k.clone(),
                value: scalar_text(v),
            })
            .collect()),
        Some(_) => Err(DecodeError("`metadata` must be a JSON object".into())),
    }
}

pub fn meta_to_object(meta: &[Meta]) -> Map<String, Value> {
    meta.iter()
        .map(|m| (m.key.clone(), Value::String(m.value.clone())))
        .collect()
}

fn key_text(key: Option<&[u8]>) -> Option<String> {
    key.and_then(|k| std::str::from_utf8(k).ok())
        .map(str::to_string)
}

fn required_str(o: &Map<String, Value>, field: &str) -> Result<String, DecodeError> {
    match o.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(DecodeError(format!("`{field}` must be a string"))),
        None => Err(DecodeError(format!("missing `{field}`"))),
    }
}

/// Top-level scalar fields other than the known ones (e.g. `kind`, `version`)
/// are folded into metadata so they can be used as search filters.
fn extra_scalars(o: &Map<String, Value>, known: &[&str], meta: &mut Vec<Meta>) {
    for (k, v) in o {
        if known.contains(&k.as_str()) || meta.iter().any(|m| &m.key == k) {
            continue;
        }
        if matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            meta.push(Meta {
                key: k.clone(),
                value: scalar_text(v),
            });
        }
    }
}

/// Decodes a document `{"id", "text", "title"?, "metadata"?}`; the Kafka key is
/// the id when the value has none.
pub fn decode_document(key: Option<&[u8]>, bytes: &[u8]) -> Result<Document, DecodeError> {
    let v = parse_json(bytes)?;
    let Value::Object(o) = v else {
        return Err(DecodeError("a document must be a JSON object".into()));
    };
    let id = match o.get("id") {
        Some(_) => required_str(&o, "id")?,
        None => key_text(key).ok_or_else(|| DecodeError("missing `id` (and no key)".into()))?,
    };
    if id.is_empty() {
        return Err(DecodeError("`id` is empty".into()));
    }
    let text = required_str(&o, "text")?;
    let title = match o.get("title") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(DecodeError("`title` must be a string".into())),
    };
    let mut metadata = meta_from_object(o.get("metadata"))?;
    extra_scalars(&o, &["id", "text", "title", "metadata"], &mut metadata);
    Ok(Document {
        id,
        title,
        text,
        metadata,
    })
}

/// Decodes a question `{"id", "text", "metadata"?}` (other scalar fields are
/// kept as metadata).
pub fn decode_question(key: Option<&[u8]>, bytes: &[u8]) -> Result<QuestionState, DecodeError> {
    let v = parse_json(bytes)?;
    let Value::Object(o) = v else {
        return Err(DecodeError("a question must be a JSON object".into()));
    };
    let id = match o.get("id") {
        Some(_) => required_str(&o, "id")?,
        None => key_text(key).ok_or_else(|| DecodeError("missing `id` (and no key)".into()))?,
    };
    let text = match o.get("text").or_else(|| o.get("question")) {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(DecodeError("missing `text` (a string)".into())),
    };
    let mut metadata = meta_from_object(o.get("metadata"))?;
    let known = [
        "id",
        "text",
        "question",
        "metadata",
        "vector",
        "hits",
        "messages",
        "answer",
        "citations",
        "timings_ms",
        "index_read",
    ];
    extra_scalars(&o, &known, &mut metadata);
    let mut qs = QuestionState::new(Question { id, text, metadata });
    // A question that went through a transform carries what earlier stages found.
    if let Some(v) = o.get("vector") {
        qs.vector =
            serde_json::from_value(v.clone()).map_err(|e| DecodeError(format!("`vector`: {e}")))?;
    }
    if let Some(h) = o.get("hits") {
        let hits: Vec<HitJson> =
            serde_json::from_value(h.clone()).map_err(|e| DecodeError(format!("`hits`: {e}")))?;
        qs.hits = hits.into_iter().map(HitJson::into_hit).collect();
    }
    if let Some(m) = o.get("messages") {
        let msgs: Vec<MessageJson> = serde_json::from_value(m.clone())
            .map_err(|e| DecodeError(format!("`messages`: {e}")))?;
        qs.messages = msgs.into_iter().map(MessageJson::into_message).collect();
    }
    qs.index_read = o.get("index_read").cloned();
    if let Some(Value::Object(t)) = o.get("timings_ms") {
        qs.timings = t
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
            .collect();
    }
    Ok(qs)
}

/// Decodes a chunk in its JSON form (as written by a chunker stage's sink).
pub fn decode_chunk(bytes: &[u8]) -> Result<EmbeddedChunk, DecodeError> {
    let v = parse_json(bytes)?;
    let c: ChunkJson =
        serde_json::from_value(v).map_err(|e| DecodeError(format!("not a chunk: {e}")))?;
    Ok(c.into_chunk())
}

/// Whether a raw JSON value looks like a chunk (it has `doc_id`).
pub fn looks_like_chunk(bytes: &[u8]) -> bool {
    matches!(parse_json(bytes), Ok(Value::Object(o)) if o.contains_key("doc_id"))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChunkJson {
    pub id: String,
    pub doc_id: String,
    #[serde(default)]
    pub seq: u32,
    pub text: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
}

impl ChunkJson {
    pub fn from_chunk(c: &EmbeddedChunk) -> ChunkJson {
        ChunkJson {
            id: c.chunk.id.clone(),
            doc_id: c.chunk.doc_id.clone(),
            seq: c.chunk.seq,
            text: c.chunk.text.clone(),
            metadata: meta_to_object(&c.chunk.metadata),
            vector: c.vector.clone(),
        }
    }

    fn into_chunk(self) -> EmbeddedChunk {
        EmbeddedChunk {
            chunk: Chunk {
                id: self.id,
                doc_id: self.doc_id,
                seq: self.seq,
                text: self.text,
                metadata: self
                    .metadata
                    .iter()
                    .map(|(k, v)| Meta {
                        key: k.clone(),
                        value: scalar_text(v),
                    })
                    .collect(),
            },
            vector: self.vector,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HitJson {
    pub chunk_id: String,
    pub doc_id: String,
    pub score: f32,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl HitJson {
    pub fn from_hit(h: &Hit) -> HitJson {
        HitJson {
            chunk_id: h.chunk_id.clone(),
            doc_id: h.doc_id.clone(),
            score: h.score,
            text: h.text.clone(),
            metadata: meta_to_object(&h.metadata),
        }
    }

    fn into_hit(self) -> Hit {
        Hit {
            chunk_id: self.chunk_id,
            doc_id: self.doc_id,
            score: self.score,
            text: self.text,
            metadata: self
                .metadata
                .iter()
                .map(|(k, v)| Meta {
                    key: k.clone(),
                    value: scalar_text(v),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MessageJson {
    pub role: String,
    pub content: String,
}

impl MessageJson {
    fn from_message(m: &Message) -> MessageJson {
        MessageJson {
            role: match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            }
            .to_string(),
            content: m.content.clone(),
        }
    }

    fn into_message(self) -> Message {
        Message {
            role: match self.role.as_str() {
                "system" => Role::System,
                "assistant" => Role::Assistant,
                _ => Role::User,
            },
            content: self.content,
        }
    }
}

/// The JSON form of a question's state; once answered, this is the answer
/// record (`answer`, `citations`, `timings_ms`), without the query vector.
pub fn question_json(q: &QuestionState) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), Value::String(q.question.id.clone()));
    o.insert("question".into(), Value::String(q.question.text.clone()));
    if !q.question.metadata.is_empty() {
        o.insert(
            "metadata".into(),
            Value::Object(meta_to_object(&q.question.metadata)),
        );
    }
    if let Some(a) = &q.answer {
        o.insert("answer".into(), Value::String(a.text.clone()));
        let cites: Vec<Value> = a
            .citations
            .iter()
            .map(|c| serde_json::json!({"chunk_id": c.chunk_id, "doc_id": c.doc_id, "score": c.score}))
            .collect();
        o.insert("citations".into(), Value::Array(cites));
        if let Some(p) = &q.provenance {
            o.insert("provenance".into(), p.clone());
        }
    } else {
        if let Some(v) = &q.vector {
            o.insert("vector".into(), serde_json::json!(v));
        }
        if !q.messages.is_empty() {
            let m: Vec<MessageJson> = q.messages.iter().map(MessageJson::from_message).collect();
            o.insert("messages".into(), serde_json::json!(m));
        }
    }
    if !q.hits.is_empty() {
        let h: Vec<HitJson> = q.hits.iter().map(HitJson::from_hit).collect();
        o.insert("hits".into(), serde_json::json!(h));
    }
    if !q.timings.is_empty() {
        let t: Map<String, Value> = q
            .timings
            .iter()
            .map(|(s, ms)| (s.clone(), serde_json::json!((ms * 1000.0).round() / 1000.0)))
            .collect();
        o.insert("timings_ms".into(), Value::Object(t));
    }
    if let Some(r) = &q.index_read {
        o.insert("index_read".into(), r.clone());
    }
    Value::Object(o)
}

pub fn document_json(d: &Document) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), Value::String(d.id.clone()));
    if let Some(t) = &d.title {
        o.insert("title".into(), Value::String(t.clone()));
    }
    o.insert("text".into(), Value::String(d.text.clone()));
    o.insert(
        "metadata".into(),
        Value::Object(meta_to_object(&d.metadata)),
    );
    Value::Object(o)
}

impl Payload {
    /// The record value this payload is written as (`None` = tombstone).
    pub fn to_value_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Payload::Raw(v) => v.clone(),
            Payload::Delete(_) => None,
            Payload::Document(d) => serde_json::to_vec(&document_json(d)).ok(),
            Payload::Chunk(c) => serde_json::to_vec(&ChunkJson::from_chunk(c)).ok(),
            Payload::Question(q) => serde_json::to_vec(&question_json(q)).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_takes_id_from_key_and_folds_scalars_into_metadata() {
        let d = decode_document(
            Some(b"k1"),
            br#"{"text":"hi","kind":"policy","version":2,"metadata":{"a":"b"}}"#,
        )
        .unwrap();
        assert_eq!(d.id, "k1");
        let m: Vec<(String, String)> = d.metadata.into_iter().map(|m| (m.key, m.value)).collect();
        assert!(m.contains(&("a".into(), "b".into())));
        assert!(m.contains(&("kind".into(), "policy".into())));
        assert!(m.contains(&("version".into(), "2".into())));
    }

    #[test]
    fn garbage_is_a_decode_error_naming_the_cause() {
        let e = decode_document(None, &[0xff, 0xfe]).unwrap_err();
        assert!(e.0.contains("UTF-8"), "{e}");
        let e = decode_document(None, b"{nope").unwrap_err();
        assert!(e.0.contains("JSON"), "{e}");
        let e = decode_document(None, br#"{"id":"x"}"#).unwrap_err();
        assert!(e.0.contains("text"), "{e}");
    }
}

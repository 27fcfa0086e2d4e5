//! Scoring answers against questions with gold documents: hit@1, hit@3 and
//! MRR of the retrieval, whether the answer cites the gold document and
//! contains the expected text. A question that got no answer (it was
//! dead-lettered, say) is a miss on every measure: it stays in the
//! denominator.

use super::{Host, Result, ServiceError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

/// One line of a questions file.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Question {
    pub id: String,
    pub text: String,
    /// The document that answers it.
    pub gold_doc: String,
    /// Text the answer must contain (case-insensitive); empty: not checked.
    #[serde(default)]
    pub expect: String,
    /// Which part of a scenario asks it.
    #[serde(default)]
    pub phase: String,
    /// Sent with the question (e.g. a customer id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

impl Question {
    /// The record produced to the questions topic.
    pub fn record(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"id": self.id, "text": self.text});
        if let Some(m) = &self.metadata {
            v["metadata"] = m.clone();
        }
        v
    }
}

/// One asked question, what came back, and how it scores.
#[derive(Debug, Clone, Serialize)]
pub struct Asked {
    pub id: String,
    /// The pipeline that answered (set by the caller that asked).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pipeline: String,
    pub phase: String,
    pub question: String,
    pub gold_doc: String,
    pub expect: String,
    /// `None`: no answer arrived (the question was dead-lettered).
    pub answer: Option<String>,
    /// Doc ids of the retrieved hits, best first.
    pub hits: Vec<String>,
    /// Doc ids the answer cites.
    pub cited: Vec<String>,
    /// `chunk_id (score)` of each citation, for display.
    pub citations: Vec<String>,
    /// 1-based rank of the gold document among the hits.
    pub gold_rank: Option<usize>,
    pub gold_cited: bool,
    pub expect_in_answer: bool,
    /// The gold document had a newer version produced before the question.
    pub about_updated_doc: bool,
    pub latency_ms: Option<i64>,
    pub timings_ms: serde_json::Value,
}

/// Scores one answer record (`{"answer", "hits": [{doc_id}], "citations":
/// [{doc_id, chunk_id, score}], "timings_ms"}`), or its absence.
pub fn score(
    q: &Question,
    answer: Option<&serde_json::Value>,
    latency_ms: Option<i64>,
    updated: &HashSet<String>,
) -> Asked {
    let empty = serde_json::Value::Null;
    let v = answer.unwrap_or(&empty);
    let doc_ids = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h["doc_id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let text = answer.map(|v| v["answer"].as_str().unwrap_or_default().to_string());
    let hits = doc_ids("hits");
    let cited = doc_ids("citations");
    let citations = v["citations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    format!(
                        "{} ({:.2})",
                        c["chunk_id"].as_str().unwrap_or("?"),
                        c["score"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let gold_rank = hits.iter().position(|d| *d == q.gold_doc).map(|p| p + 1);
    let expect_in_answer = match &text {
        Some(t) => t.to_lowercase().contains(&q.expect.to_lowercase()),
        None => false,
    };
    Asked {
        id: q.id.clone(),
        pipeline: String::new(),
        phase: q.phase.clone(),
        question: q.text.clone(),
        gold_doc: q.gold_doc.clone(),
        expect: q.expect.clone(),
        gold_cited: cited.contains(&q.gold_doc),
        answer: text,
        hits,
        cited,
        citations,
        gold_rank,
        expect_in_answer,
        about_updated_doc: updated.contains(&q.gold_doc),
        latency_ms,
        timings_ms: v["timings_ms"].clone(),
    }
}

/// Figures over a set of asked questions.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub questions: usize,
    /// Questions that got no answer (counted as misses below).
    pub unanswered: usize,
    pub hit_at_1: f64,
    pub hit_at_3: f64,
    /// Mean reciprocal rank of the gold document among the hits.
    pub mrr: f64,
    pub gold_cited: f64,
    pub expect_in_answer: f64,
}

pub fn figures(of: &[&Asked]) -> Figures {
    let n = of.len().max(1) as f64;
    let rate = |f: &dyn Fn(&Asked) -> bool| of.iter().filter(|a| f(a)).count() as f64 / n;
    Figures {
        questions: of.len(),
        unanswered: of.iter().filter(|a| a.answer.is_none()).count(),
        hit_at_1: rate(&|a| a.gold_rank == Some(1)),
        hit_at_3: rate(&|a| a.gold_rank.is_some_and(|r| r <= 3)),
        mrr: of
            .iter()
            .map(|a| a.gold_rank.map_or(0.0, |r| 1.0 / r as f64))
            .sum::<f64>()
            / n,
        gold_cited: rate(&|a| a.gold_cited),
        expect_in_answer: rate(&|a| a.expect_in_answer),
    }
}

/// Figures per phase (keyed `phase`, or `phase [pipeline]` when more
/// than one pipeline answered, so two pipelines asked the same questions are
/// compared instead of mixed), for the questions about updated documents,
/// and over everything.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub phases: BTreeMap<String, Figures>,
    /// Only the questions whose gold document was updated before they were
    /// asked: the freshness claim rests on these.
    pub about_updated_docs: Figures,
    pub all: Figures,
}

/// The [`Evaluation::phases`] key of each asked question, in the order
/// first asked.
pub fn groups(asked: &[Asked]) -> Vec<(String, Vec<&Asked>)> {
    let pipelines: std::collections::BTreeSet<&str> =
        asked.iter().map(|a| a.pipeline.as_str()).collect();
    let key = |a: &Asked| {
        if pipelines.len() > 1 {
            format!("{} [{}]", a.phase, a.pipeline)
        } else {
            a.phase.clone()
        }
    };
    let mut out: Vec<(String, Vec<&Asked>)> = Vec::new();
    for a in asked {
        let k = key(a);
        match out.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(a),
            None => out.push((k, vec![a])),
        }
    }
    out
}

pub fn evaluate(asked: &[Asked]) -> Evaluation {
    let phases = groups(asked)
        .into_iter()
        .map(|(k, of)| (k, figures(&of)))
        .collect();
    let updated: Vec<&Asked> = asked.iter().filter(|a| a.about_updated_doc).collect();
    Evaluation {
        phases,
        about_updated_docs: figures(&updated),
        all: figures(&asked.iter().collect::<Vec<_>>()),
    }
}

/// What `weft eval` found: every question with its answer and scores,
/// and the figures over them.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub pipeline: String,
    pub questions_file: String,
    pub evaluation: Evaluation,
    /// Questions that were dead-lettered, with the reason (each also counts
    /// as a miss in every figure).
    pub failed: Vec<(String, String)>,
    /// Wall time of the whole evaluation, ms.
    pub took_ms: u64,
    pub asked: Vec<Asked>,
}

/// Asks the questions of `questions_file` (of `phase`, if given) through
/// the query pipeline of `manifest` in this process, against the tenant's
/// index and tables as they are in the host's data directory, and scores
/// every answer against its gold document. No broker is needed (tables are
/// read as stored; the host follows them if it was told a broker).
/// `progress` hears (questions answered, questions in all).
pub fn evaluate_pipeline(
    host: &Host,
    manifest: &Path,
    questions_file: &Path,
    phase: Option<&str>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport> {
    let qs = super::scenario::questions(questions_file, phase)?;
    if qs.is_empty() {
        return Err(ServiceError::Input(format!(
            "{}: no questions{}",
            questions_file.display(),
            phase
                .map(|p| format!(" of phase `{p}`"))
                .unwrap_or_default()
        )));
    }
    let mut pipeline = host
        .pipelines(&[manifest.to_path_buf()])?
        .pop()
        .ok_or_else(|| ServiceError::Input(format!("{}: no pipeline", manifest.display())))?;
    if pipeline.manifest.format != crate::manifest::Format::Question {
        return Err(ServiceError::Input(format!(
            "{}: pipeline `{}` does not take questions (its [source] format must be \"question\")",
            manifest.display(),
            pipeline.manifest.name
        )));
    }
    let t0 = Instant::now();
    let mut answers: HashMap<String, serde_json::Value> = HashMap::new();
    let mut failed = Vec::new();
    let batch = pipeline.manifest.batch_records.max(1) as usize;
    for (n, chunk) in qs.chunks(batch).enumerate() {
        let items = chunk
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let line = q.record().to_string();
                crate::stream::file::parse_line(
                    &questions_file.display().to_string(),
                    (n * batch + i) as i64,
                    line.as_bytes(),
                )
            })
            .collect();
        let out = pipeline.process(items);
        for o in &out.outputs {
            if let Some(v) = o
                .payload
                .to_value_bytes()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            {
                if let Some(id) = v["id"].as_str() {
                    answers.insert(id.to_string(), v);
                }
            }
        }
        for d in &out.dead {
            let id = d
                .item
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            failed.push((id, format!("stage `{}`: {}", d.stage, d.failure)));
        }
        progress(((n + 1) * batch).min(qs.len()), qs.len());
    }
    let none = HashSet::new();
    let asked: Vec<Asked> = qs
        .iter()
        .map(|q| {
            let mut a = score(q, answers.get(&q.id), None, &none);
            a.pipeline = pipeline.manifest.name.clone();
            a
        })
        .collect();
    Ok(EvalReport {
        pipeline: pipeline.manifest.name.clone(),
        questions_file: questions_file.display().to_string(),
        evaluation: evaluate(&asked),
        failed,
        took_ms: t0.elapsed().as_millis() as u64,
        asked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: &str, gold: &str) -> Question {
        Question {
            id: id.into(),
            text: "t".into(),
            gold_doc: gold.into(),
            expect: "open".into(),
            phase: "p".into(),
            metadata: None,
        }
    }

    #[test]
    fn unanswered_questions_are_misses_in_the_denominator() {
        let updated = HashSet::from(["d2".to_string()]);
        let answer = serde_json::json!({
            "answer": "It is OPEN [1]",
            "hits": [{"doc_id": "d9"}, {"doc_id": "d1"}],
            "citations": [{"doc_id": "d1", "chunk_id": "d1#0", "score": 0.5}],
        });
        let asked = vec![
            score(&q("a", "d1"), Some(&answer), Some(3), &updated),
            score(&q("b", "d2"), None, None, &updated),
        ];
        let e = evaluate(&asked);
        assert_eq!(e.all.questions, 2);
        assert_eq!(e.all.unanswered, 1);
        assert_eq!(e.all.hit_at_1, 0.0);
        assert_eq!(e.all.hit_at_3, 0.5);
        assert_eq!(e.all.mrr, 0.25);
        assert_eq!(e.all.gold_cited, 0.5);
        assert_eq!(e.all.expect_in_answer, 0.5);
        assert_eq!(e.about_updated_docs.questions, 1);
        assert_eq!(e.about_updated_docs.hit_at_3, 0.0);
    }
}

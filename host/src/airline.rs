//! `weft dev`: the airline customer-service scenario, end to end on one
//! machine. Both pipelines (ingest into the index, answer questions) run side
//! by side in this process against a local broker, as they would in
//! production:
//!
//! 1. the 312 documents stream into `airline.docs` and get indexed;
//! 2. the `before-updates` questions stream into `airline.questions`; the
//!    answers with their citations are read back from `airline.answers`;
//! 3. the flight-status updates (new versions of 120 documents) stream in;
//! 4. the `after-updates` questions are asked and must be answered from the
//!    new versions (freshness).
//!
//! It prints each question, answer and citation, then hit@1/hit@3 of the
//! retrieval, index freshness and question-to-answer latency.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::metrics::Histogram;
use weft::pipeline::Pipeline;
use weft::stream::broker::LocalBroker;
use weft::stream::kafka::{self, Counters, KafkaOptions, KeyValue, ReadRecord};

#[derive(Debug, Clone, Deserialize)]
struct QuestionLine {
    id: String,
    text: String,
    gold_doc: String,
    expect: String,
    phase: String,
}

/// One asked question and what came back.
#[derive(Debug, Serialize)]
struct Asked {
    id: String,
    phase: String,
    question: String,
    gold_doc: String,
    expect: String,
    answer: String,
    /// Doc ids of the retrieved hits, best first.
    hits: Vec<String>,
    /// Doc ids the answer cites.
    cited: Vec<String>,
    /// 1-based rank of the gold document among the hits.
    gold_rank: Option<usize>,
    gold_cited: bool,
    expect_in_answer: bool,
    latency_ms: i64,
    timings_ms: serde_json::Value,
}

#[derive(Debug, Serialize)]
struct PhaseFigures {
    questions: usize,
    hit_at_1: f64,
    hit_at_3: f64,
    gold_cited: f64,
    expect_in_answer: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    documents: usize,
    updates: usize,
    phases: BTreeMap<String, PhaseFigures>,
    all: PhaseFigures,
    freshness_p50_ms: Option<f64>,
    freshness_p99_ms: Option<f64>,
    answer_latency_p50_ms: Option<f64>,
    answer_latency_p99_ms: Option<f64>,
    index: serde_json::Value,
    /// Top-3 search with the embedder alone (no metadata filter).
    embedder_alone: Option<EmbedderAlone>,
    asked: Vec<Asked>,
}

#[derive(Debug, Serialize)]
struct EmbedderAlone {
    questions: usize,
    hit_at_1: f64,
    hit_at_3: f64,
}

fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// Documents keyed by their `id`, the value being the line itself.
fn keyed_docs(path: &Path) -> anyhow::Result<Vec<KeyValue>> {
    read_lines(path)?
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(&l)
                .with_context(|| format!("{} line {}", path.display(), i + 1))?;
            let id = v["id"]
                .as_str()
                .with_context(|| format!("{} line {}: no `id`", path.display(), i + 1))?;
            Ok((Some(id.as_bytes().to_vec()), Some(l.into_bytes())))
        })
        .collect()
}

pub fn run(
    ingest: Pipeline,
    query: Pipeline,
    embedder: Pipeline,
    dir: &Path,
    brokers: Option<String>,
    data: &Path,
    report_path: Option<&Path>,
) -> anyhow::Result<()> {
    let docs = keyed_docs(&data.join("docs.jsonl"))?;
    let updates = keyed_docs(&data.join("updates.jsonl"))?;
    let questions: Vec<QuestionLine> = read_lines(&data.join("questions.jsonl"))?
        .iter()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("questions.jsonl line {}", i + 1))
        })
        .collect::<anyhow::Result<_>>()?;
    let (_broker, brokers) = match brokers {
        Some(b) => (None, b),
        None => {
            eprintln!("starting a local broker (tansu, data in {})", dir.display());
            let b = LocalBroker::start(dir)?;
            let addr = b.address();
            eprintln!("broker listening on {addr}");
            (Some(b), addr)
        }
    };
    let index = ingest
        .sink_index
        .clone()
        .context("the ingest pipeline has no [sink] index")?;
    let mut embedder = embedder;
    let rt = tokio::runtime::Runtime::new().context("starting tokio")?;
    let mut report = rt.block_on(async {
        let im = ingest.manifest.clone();
        let qm = query.manifest.clone();
        let answers_topic = qm
            .sink_topic
            .clone()
            .context("query.toml needs a sink topic")?;
        let mut topics = vec![
            (im.source_topic.clone(), 3),
            (im.dead_letter_topic.clone(), 3),
            (qm.source_topic.clone(), 3),
            (answers_topic.clone(), 3),
            (qm.dead_letter_topic.clone(), 3),
        ];
        topics.dedup();
        kafka::ensure_topics(&brokers, &topics).await?;
        let mut answers = kafka::follow_topic(&brokers, &answers_topic)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let opts = KafkaOptions {
            brokers: brokers.clone(),
            group: None,
            idle_exit: None,
        };
        let ic = Arc::new(Counters::default());
        let qc = Arc::new(Counters::default());
        let ingest_task = tokio::spawn(kafka::run(
            ingest,
            opts.clone(),
            ic.clone(),
            stop_rx.clone(),
        ));
        let query_task = tokio::spawn(kafka::run(query, opts, qc.clone(), stop_rx));

        // 1. The knowledge base.
        let n_docs = docs.len();
        kafka::produce_values(&brokers, &im.source_topic, docs).await?;
        wait_consumed(&ic, n_docs as u64, "indexing documents", &ingest_task).await?;
        let s = index.stats()?;
        eprintln!(
            "indexed {n_docs} documents: {} chunks in airline/kb ({} pending, {} in trees)",
            s.chunks, s.pending, s.in_trees
        );

        // 2. Questions about it.
        let latency = Histogram::default();
        let mut asked = Vec::new();
        let before: Vec<QuestionLine> = questions
            .iter()
            .filter(|q| q.phase != "after-updates")
            .cloned()
            .collect();
        println!("\n== questions before the updates ({})\n", before.len());
        ask(
            &brokers,
            &qm.source_topic,
            &before,
            &mut answers,
            &latency,
            &mut asked,
            &qc,
        )
        .await?;

        // 3. The flight updates.
        let n_updates = updates.len();
        let f0 = ic.freshness.count();
        kafka::produce_values(&brokers, &im.source_topic, updates).await?;
        wait_consumed(
            &ic,
            (n_docs + n_updates) as u64,
            "indexing updates",
            &ingest_task,
        )
        .await?;
        eprintln!(
            "indexed {n_updates} updates; index freshness (produced -> searchable) {}",
            ic.freshness.summary().unwrap_or_default()
        );
        debug_assert!(ic.freshness.count() > f0);

        // 4. Questions about the updated flights.
        let after: Vec<QuestionLine> = questions
            .iter()
            .filter(|q| q.phase == "after-updates")
            .cloned()
            .collect();
        println!("\n== questions after the updates ({})\n", after.len());
        ask(
            &brokers,
            &qm.source_topic,
            &after,
            &mut answers,
            &latency,
            &mut asked,
            &qc,
        )
        .await?;

        let _ = stop_tx.send(true);
        ingest_task.await.context("ingest task")??;
        query_task.await.context("query task")??;
        let dead = ic.dead_letters.load(Relaxed) + qc.dead_letters.load(Relaxed);
        if dead > 0 {
            eprintln!(
                "warning: {dead} record(s) were dead-lettered (see the *.dead-letters topics)"
            );
        }
        let mut phases = BTreeMap::new();
        for phase in ["before-updates", "after-updates"] {
            let of: Vec<&Asked> = asked.iter().filter(|a| a.phase == phase).collect();
            phases.insert(phase.to_string(), figures(&of));
        }
        let all = figures(&asked.iter().collect::<Vec<_>>());
        anyhow::Ok(Report {
            documents: n_docs,
            updates: n_updates,
            phases,
            all,
            freshness_p50_ms: ic.freshness.quantile(0.5),
            freshness_p99_ms: ic.freshness.quantile(0.99),
            answer_latency_p50_ms: latency.quantile(0.5),
            answer_latency_p99_ms: latency.quantile(0.99),
            index: serde_json::to_value(index.stats()?)?,
            embedder_alone: None,
            asked,
        })
    })?;
    // Retrieval by the embedder alone, without the flight filter the query
    // pipeline adds: what the hash embedder itself is worth.
    let texts: Vec<String> = questions.iter().map(|q| q.text.clone()).collect();
    let vectors = crate::index_cli::embed_texts(&mut embedder, &texts)?;
    let mut ranks = Vec::new();
    for (q, v) in questions.iter().zip(&vectors) {
        let hits = index
            .search(v, 3, &[])
            .map_err(|e| anyhow::anyhow!("searching: {e}"))?;
        ranks.push(
            hits.iter()
                .position(|h| h.doc_id == q.gold_doc)
                .map(|p| p + 1),
        );
    }
    let n = ranks.len().max(1) as f64;
    report.embedder_alone = Some(EmbedderAlone {
        questions: ranks.len(),
        hit_at_1: ranks.iter().filter(|r| **r == Some(1)).count() as f64 / n,
        hit_at_3: ranks.iter().filter(|r| r.is_some()).count() as f64 / n,
    });
    println!("\n== summary\n");
    for (phase, f) in &report.phases {
        print_figures(phase, f);
    }
    print_figures("all", &report.all);
    if let Some(e) = &report.embedder_alone {
        println!(
            "  {:<15} {:>3} questions  hit@1 {:.2}  hit@3 {:.2}  (hash embedder alone, no flight filter)",
            "embedder alone", e.questions, e.hit_at_1, e.hit_at_3
        );
    }
    println!(
        "  index freshness (document produced -> searchable): p50 {} ms, p99 {} ms (each file is produced in one burst, so this includes queueing; steady-state figures: cargo bench --bench rag)",
        fmt(report.freshness_p50_ms),
        fmt(report.freshness_p99_ms)
    );
    println!(
        "  question -> answer on the topic: p50 {} ms, p99 {} ms (offline extractive generator)",
        fmt(report.answer_latency_p50_ms),
        fmt(report.answer_latency_p99_ms)
    );
    println!(
        "  note: the hash embedder's weights were tuned on these questions, so hit@k here is not an independent measure"
    );
    if let Some(p) = report_path {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("report written to {}", p.display());
    }
    eprintln!("stopping the local broker");
    Ok(())
}

fn fmt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into())
}

fn print_figures(name: &str, f: &PhaseFigures) {
    println!(
        "  {name:<15} {:>3} questions  hit@1 {:.2}  hit@3 {:.2}  gold cited {:.2}  expected text in answer {:.2}",
        f.questions, f.hit_at_1, f.hit_at_3, f.gold_cited, f.expect_in_answer
    );
}

fn figures(of: &[&Asked]) -> PhaseFigures {
    let n = of.len().max(1) as f64;
    let rate = |f: &dyn Fn(&Asked) -> bool| of.iter().filter(|a| f(a)).count() as f64 / n;
    PhaseFigures {
        questions: of.len(),
        hit_at_1: rate(&|a| a.gold_rank == Some(1)),
        hit_at_3: rate(&|a| a.gold_rank.is_some_and(|r| r <= 3)),
        gold_cited: rate(&|a| a.gold_cited),
        expect_in_answer: rate(&|a| a.expect_in_answer),
    }
}

/// Waits until the pipeline has consumed (and so committed) `n` records.
async fn wait_consumed(
    c: &Counters,
    n: u64,
    what: &str,
    task: &tokio::task::JoinHandle<anyhow::Result<Pipeline>>,
) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(n);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    let t0 = Instant::now();
    while c.consumed.load(Relaxed) < n {
        if task.is_finished() {
            bail!("the pipeline stopped while {what}");
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!(
                "{what}: only {} of {n} records after 5 minutes",
                c.consumed.load(Relaxed)
            );
        }
        bar.set_position(c.consumed.load(Relaxed));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bar.finish_and_clear();
    Ok(())
}

/// Produces the questions, then collects one answer per question id from
/// the answers topic and prints them in question order.
async fn ask(
    brokers: &str,
    topic: &str,
    qs: &[QuestionLine],
    answers: &mut tokio::sync::mpsc::UnboundedReceiver<(ReadRecord, i64)>,
    latency: &Histogram,
    asked: &mut Vec<Asked>,
    qc: &Counters,
) -> anyhow::Result<()> {
    let records: Vec<KeyValue> = qs
        .iter()
        .map(|q| {
            let v = serde_json::json!({"id": q.id, "text": q.text});
            (
                Some(q.id.clone().into_bytes()),
                Some(v.to_string().into_bytes()),
            )
        })
        .collect();
    let wanted: HashMap<&str, &QuestionLine> = qs.iter().map(|q| (q.id.as_str(), q)).collect();
    let dead_before = qc.dead_letters.load(Relaxed);
    kafka::produce_values(brokers, topic, records).await?;
    let mut got: HashMap<String, (serde_json::Value, i64)> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while got.len() < qs.len() {
        let dead = qc.dead_letters.load(Relaxed) - dead_before;
        if got.len() as u64 + dead >= qs.len() as u64 && dead > 0 {
            break;
        }
        let next = tokio::time::timeout_at(deadline, answers.recv()).await;
        let Ok(Some((rec, arrived))) = next else {
            bail!(
                "only {} of {} answers arrived within 120 s",
                got.len(),
                qs.len()
            );
        };
        let Some(key) = rec
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
        else {
            continue;
        };
        if !wanted.contains_key(key.as_str()) {
            continue;
        }
        let v: serde_json::Value = rec
            .value
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(serde_json::Value::Null);
        let lat = arrived - rec.timestamp.unwrap_or(arrived);
        got.insert(key, (v, lat));
    }
    for q in qs {
        let Some((v, lat)) = got.remove(&q.id) else {
            println!("Q {}  {}\n  (no answer: dead-lettered)\n", q.id, q.text);
            continue;
        };
        latency.record(lat as f64);
        let answer = v["answer"].as_str().unwrap_or_default().to_string();
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
        let hits = doc_ids("hits");
        let cited = doc_ids("citations");
        let gold_rank = hits.iter().position(|d| *d == q.gold_doc).map(|p| p + 1);
        let gold_cited = cited.contains(&q.gold_doc);
        let expect_in_answer = answer.to_lowercase().contains(&q.expect.to_lowercase());
        let cites: Vec<String> = v["citations"]
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
        println!("Q {}  {}", q.id, q.text);
        println!("A {}", answer.replace('\n', " "));
        println!(
            "  cites {}   [gold {}: {}]",
            cites.join(", "),
            q.gold_doc,
            match (gold_cited, gold_rank) {
                (true, _) => "cited".to_string(),
                (false, Some(r)) => format!("hit #{r}, not cited"),
                (false, None) => "missed".to_string(),
            }
        );
        println!();
        asked.push(Asked {
            id: q.id.clone(),
            phase: q.phase.clone(),
            question: q.text.clone(),
            gold_doc: q.gold_doc.clone(),
            expect: q.expect.clone(),
            answer,
            hits,
            cited,
            gold_rank,
            gold_cited,
            expect_in_answer,
            latency_ms: lat,
            timings_ms: v["timings_ms"].clone(),
        });
    }
    Ok(())
}

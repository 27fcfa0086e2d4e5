//! The index sink and the query path end to end: the airline scenario over a
//! real broker, a SIGKILL during ingestion, tenants' indexes kept apart, the
//! `weft index` commands, and bad records on the way into the index.

mod support;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft::index::VectorIndex;
use weft::stream::broker::LocalBroker;

fn weft_in(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(dir)
        .args(args)
        .env("WEFT_CACHE_DIR", support::cache_dir())
        .output()
        .expect("running weft")
}

/// `weft --data-dir DATA run MANIFEST --input IN --output OUT --quiet` in `dir`.
fn run_local(
    dir: &Path,
    data: &Path,
    manifest: &Path,
    input: &Path,
    output: &Path,
) -> std::process::Output {
    weft_in(
        dir,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "run",
            manifest.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--quiet",
        ],
    )
}

fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_airline_scenario_answers_every_question_from_the_freshest_documents() {
    support::ensure_plugins();
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report.json");
    let out = weft_in(
        &support::repo_root(),
        &[
            "dev",
            "--dir",
            tmp.path().join("dev").to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let stdout = ok(&out, "weft dev");
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let asked = r["asked"].as_array().unwrap();
    assert_eq!(asked.len(), 73, "every question is answered");
    assert_eq!(r["produced"]["documents"], 312);
    assert_eq!(r["produced"]["updates"], 120);
    // The freshness claim rests on the questions whose gold document was
    // updated before they were asked: 36 of the 50 after-update questions.
    assert_eq!(
        r["about_updated_docs"]["questions"], 36,
        "{}",
        r["about_updated_docs"]
    );
    assert_eq!(r["about_updated_docs"]["gold_cited"], 1.0);
    assert_eq!(r["all"]["unanswered"], 0);
    // Freshness: every question about an updated flight is answered from its
    // new version: the gold document is cited and the new status is quoted.
    let after: Vec<&Value> = asked
        .iter()
        .filter(|a| a["phase"] == "after-updates")
        .collect();
    assert_eq!(after.len(), 50);
    for a in &after {
        assert_eq!(a["gold_cited"], true, "{a}");
        assert_eq!(a["expect_in_answer"], true, "{a}");
        // Every stage's time is in the answer, the enrichment transform too.
        for stage in ["tag-flight", "embed", "retrieve", "prompt", "answer"] {
            assert!(a["timings_ms"][stage].is_number(), "{stage}: {a}");
        }
    }
    // The index holds one version per document: 312 documents, and the
    // updated flights' chunks replaced rather than added.
    assert_eq!(r["indexes"]["airline/kb"]["documents"], 312);
    assert_eq!(r["indexes"]["airline/kb"]["chunks"], 312);
    // Retrieval quality is reported (the hash embedder is weak; these floors
    // catch a broken retriever, not a mediocre embedder).
    let before = &r["phases"]["before-updates"];
    eprintln!(
        "airline: before-updates hit@1 {} hit@3 {}; all hit@1 {} hit@3 {}; embedder alone hit@1 {} hit@3 {}",
        before["hit_at_1"],
        before["hit_at_3"],
        r["all"]["hit_at_1"],
        r["all"]["hit_at_3"],
        r["embedder_alone"][0]["hit_at_1"],
        r["embedder_alone"][0]["hit_at_3"]
    );
    assert!(before["hit_at_3"].as_f64().unwrap() >= 0.6, "{before}");
    assert!(
        stdout.contains("Q q1-49  Is flight NW8843 on time today?"),
        "{stdout}"
    );
    assert!(stdout.contains("hit@1"), "{stdout}");
}

fn produce(brokers: &str, topic: &str, records: &[(String, Option<String>)]) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "1")
        .create()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (k, v) in records {
            let mut r: FutureRecord<'_, String, String> = FutureRecord::to(topic).key(k);
            if let Some(v) = v {
                r = r.payload(v);
            }
            p.send(r, Duration::from_secs(30)).await.unwrap();
        }
    });
}

fn ingest_manifest(dir: &Path, tenant: &str) -> PathBuf {
    support::write(
        dir,
        &format!("ingest-{tenant}.toml"),
        &format!(
            r#"name = "ingest"
tenant = "{tenant}"
[source]
topic = "docs"
format = "document"
[batch]
max_records = 50
linger_ms = 20
[[stage]]
name = "chunk"
kind = "chunker"
plugin = "{}"
config = {{ max_chars = 200, overlap = 0 }}
[[stage]]
name = "embed"
kind = "embedder"
plugin = "{}"
config = {{ dimension = 64 }}
[sink]
index = "kb"
"#,
            support::plugin("text-chunker").display(),
            support::plugin("hash-embedder").display()
        ),
    )
}

fn query_manifest(dir: &Path, tenant: &str) -> PathBuf {
    support::write(
        dir,
        &format!("query-{tenant}.toml"),
        &format!(
            r#"name = "query"
tenant = "{tenant}"
[source]
topic = "questions"
format = "question"
[[stage]]
name = "embed"
kind = "embedder"
plugin = "{}"
config = {{ dimension = 64 }}
[[stage]]
name = "retrieve"
kind = "retriever"
plugin = "{}"
index = "kb"
config = {{ k = 5, mmr_lambda = 1.0 }}
[sink]
topic = "answers"
"#,
            support::plugin("hash-embedder").display(),
            support::plugin("topk-retriever").display()
        ),
    )
}

/// A document whose version 1 is long (several chunks) and version 2 short
/// (one chunk), so a replaced version must lose chunks, not just gain.
fn doc(i: usize, version: u32) -> String {
    let body = match version {
        1 => format!(
            "Doc {i} version 1 about route R{i}. {}",
            "An older paragraph that will disappear. ".repeat(12)
        ),
        _ => format!("Doc {i} version {version} about route R{i}."),
    };
    json!({"id": format!("d{i:04}"), "text": body}).to_string()
}

fn spawn_weft(manifest: &Path, brokers: &str, data: &Path, extra: &[&str], log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("--data-dir")
        .arg(data)
        .arg("run")
        .arg(manifest)
        .args([
            "--brokers",
            brokers,
            "--progress-secs",
            "1",
            "--partitions",
            "3",
        ])
        .args(extra)
        .env("WEFT_CACHE_DIR", support::cache_dir())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawning weft")
}

#[test]
fn sigkill_during_ingestion_leaves_an_index_that_opens_and_replays_to_the_latest_versions() {
    support::ensure_plugins();
    let tmp = tempfile::tempdir().unwrap();
    let b = LocalBroker::start(&tmp.path().join("broker")).expect("start tansu");
    let brokers = b.address();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(weft::stream::kafka::ensure_topics(
        &brokers,
        &[("t1.docs".into(), 3), ("t1.ingest.dead-letters".into(), 3)],
    ))
    .unwrap();
    let n = 1200;
    let data = tmp.path().join("data");
    let m = ingest_manifest(tmp.path(), "t1");
    // The expected end state: v1 for all, then v2 for every third doc, a
    // tombstone for every seventh, v3 for every eleventh.
    let mut plan: Vec<(String, Option<String>)> = Vec::new();
    for i in 0..n {
        plan.push((format!("d{i:04}"), Some(doc(i, 1))));
    }
    for i in (0..n).step_by(3) {
        plan.push((format!("d{i:04}"), Some(doc(i, 2))));
    }
    for i in (0..n).step_by(7) {
        plan.push((format!("d{i:04}"), None));
    }
    for i in (0..n).step_by(11) {
        plan.push((format!("d{i:04}"), Some(doc(i, 3))));
    }
    let mut latest: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (k, v) in &plan {
        latest.insert(k.clone(), v.clone());
    }
    let log1 = tmp.path().join("weft1.log");
    let mut first = spawn_weft(&m, &brokers, &data, &[], &log1);
    let produced = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let feeder = {
        let (brokers, plan, produced) = (brokers.clone(), plan.clone(), produced.clone());
        std::thread::spawn(move || {
            // ~10 s of input, so the kill lands mid-stream even when weft
            // takes seconds to start and join its group on a slow machine.
            for chunk in plan.chunks(50) {
                produce(&brokers, "t1.docs", chunk);
                produced.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let t0 = Instant::now();
    while support::consumed(&log1) < 300 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no progress: {}",
            std::fs::read_to_string(&log1).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap(); // SIGKILL, mid-batch or mid-build
    first.wait().unwrap();
    assert!(
        produced.load(std::sync::atomic::Ordering::SeqCst) < plan.len(),
        "the kill must land while input is still arriving"
    );
    let index_dir = data.join("index/t1/kb");
    {
        // It opens and answers right after the kill.
        let ix = VectorIndex::open_read_only(&index_dir).expect("index opens after SIGKILL");
        let s = ix.stats().unwrap();
        assert!(s.documents > 0, "{s:?}");
        let v = ix.doc_chunks(&ix.doc_ids().unwrap()[0]).unwrap();
        assert!(!v.is_empty());
    }
    let log2 = tmp.path().join("weft2.log");
    let second = spawn_weft(&m, &brokers, &data, &["--idle-exit-secs", "4"], &log2);
    feeder.join().unwrap();
    let mut second = second;
    let t0 = Instant::now();
    loop {
        if let Some(s) = second.try_wait().unwrap() {
            assert!(s.success(), "{}", std::fs::read_to_string(&log2).unwrap());
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "weft did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ix = VectorIndex::open_read_only(&index_dir).unwrap();
    let want: Vec<String> = latest
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(ix.doc_ids().unwrap(), want, "exactly the live documents");
    let mut chunks = 0;
    for (k, v) in &latest {
        let Some(v) = v else { continue };
        let text: Value = serde_json::from_str(v).unwrap();
        let version = if text["text"].as_str().unwrap().contains("version 1") {
            1
        } else if text["text"].as_str().unwrap().contains("version 2") {
            2
        } else {
            3
        };
        let stored = ix.doc_chunks(k).unwrap();
        if version == 1 {
            assert!(stored.len() > 1, "{k}: v1 has several chunks");
        } else {
            assert_eq!(
                stored.len(),
                1,
                "{k}: v{version} replaced all of v1's chunks"
            );
            assert!(
                stored[0].text.contains(&format!("version {version}")),
                "{k}: {}",
                stored[0].text
            );
        }
        chunks += stored.len() as u64;
    }
    let s = ix.stats().unwrap();
    assert_eq!(s.chunks, chunks, "no orphan chunks");
    assert_eq!(s.documents, want.len() as u64);
}

#[test]
fn tenants_indexes_are_separate_and_queries_see_only_their_own() {
    support::ensure_plugins();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for (tenant, topic) in [("acme", "anvils"), ("globex", "gadgets")] {
        let docs: String = (0..20)
            .map(|i| {
                json!({"id": format!("{tenant}-{i}"), "text": format!("All about {topic}: model {i} of our {topic}.")})
                    .to_string()
                    + "\n"
            })
            .collect();
        let input = support::write(tmp.path(), &format!("{tenant}.jsonl"), &docs);
        let m = ingest_manifest(tmp.path(), tenant);
        let out = tmp.path().join(format!("{tenant}-chunks.jsonl"));
        ok(&run_local(tmp.path(), &data, &m, &input, &out), "ingest");
    }
    assert!(data.join("index/acme/kb/store").is_dir());
    assert!(data.join("index/globex/kb/store").is_dir());
    // Both tenants ask about the *other* tenant's products: they only ever
    // get their own documents back.
    let q = support::write(
        tmp.path(),
        "q.jsonl",
        "{\"id\":\"q1\",\"text\":\"Tell me about gadgets\"}\n{\"id\":\"q2\",\"text\":\"anvils model 3\"}\n",
    );
    for tenant in ["acme", "globex"] {
        let m = query_manifest(tmp.path(), tenant);
        let out = tmp.path().join(format!("{tenant}-answers.jsonl"));
        ok(&run_local(tmp.path(), &data, &m, &q, &out), "query");
        let answers = support::read_jsonl(&out);
        assert_eq!(answers.len(), 2);
        for a in &answers {
            let hits = a["hits"].as_array().expect("hits");
            assert_eq!(hits.len(), 5);
            for h in hits {
                let doc = h["doc_id"].as_str().unwrap();
                assert!(doc.starts_with(&format!("{tenant}-")), "{tenant} saw {doc}");
            }
        }
    }
}

#[test]
fn weft_index_stats_and_search_read_an_index_with_its_own_embedder() {
    support::ensure_plugins();
    let tmp = tempfile::tempdir().unwrap();
    let root = support::repo_root();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let out = tmp.path().join("chunks.jsonl");
    ok(
        &run_local(
            &root,
            &data,
            Path::new("pipelines/airline/ingest.toml"),
            Path::new("data/airline/docs.jsonl"),
            &out,
        ),
        "ingest",
    );
    let stats: Value = serde_json::from_str(&ok(
        &weft_in(tmp.path(), &["--data-dir", d, "index", "stats", "--json"]),
        "stats",
    ))
    .unwrap();
    assert_eq!(stats[0]["index"], "airline/kb");
    assert_eq!(stats[0]["stats"]["documents"], 312);
    assert_eq!(stats[0]["stats"]["dimension"], 384);
    // The short local run exited before the background builder ran: fold
    // the pending items in by hand, then everything is in the trees.
    let pending = stats[0]["stats"]["pending"].as_u64().unwrap();
    let built = ok(
        &weft_in(
            tmp.path(),
            &["--data-dir", d, "index", "build", "airline/kb"],
        ),
        "build",
    );
    assert!(
        built.contains(&format!("{pending} pending item(s) folded")),
        "{built}"
    );
    let stats: Value = serde_json::from_str(&ok(
        &weft_in(tmp.path(), &["--data-dir", d, "index", "stats", "--json"]),
        "stats",
    ))
    .unwrap();
    assert_eq!(stats[0]["stats"]["pending"], 0);
    assert_eq!(stats[0]["stats"]["in_trees"], 312);
    // From another directory: the index remembers which manifest embedded it.
    let hits: Value = serde_json::from_str(&ok(
        &weft_in(
            tmp.path(),
            &[
                "--data-dir",
                d,
                "index",
                "search",
                "airline/kb",
                "Flight NW8843 from Boston",
                "--k",
                "3",
                "--json",
            ],
        ),
        "search",
    ))
    .unwrap();
    assert_eq!(hits[0]["doc_id"], "flight-NW8843", "{hits}");
    let filtered: Value = serde_json::from_str(&ok(
        &weft_in(
            tmp.path(),
            &[
                "--data-dir",
                d,
                "index",
                "search",
                "airline/kb",
                "Flight NW8843 from Boston",
                "--filter",
                "kind=policy",
                "--json",
            ],
        ),
        "filtered search",
    ))
    .unwrap();
    let f = filtered.as_array().unwrap();
    assert!(!f.is_empty());
    assert!(
        f.iter()
            .all(|h| h["doc_id"].as_str().unwrap().starts_with("policy-")),
        "{filtered}"
    );
    let missing = weft_in(
        tmp.path(),
        &["--data-dir", d, "index", "search", "airline/nope", "x"],
    );
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("airline/nope") && err.contains("no index"),
        "{err}"
    );
}

#[test]
fn records_the_index_cannot_take_are_dead_lettered_and_empty_versions_delete() {
    support::ensure_plugins();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // No embedder: chunks without vectors cannot be indexed.
    let m = support::write(
        tmp.path(),
        "no-embedder.toml",
        &format!(
            r#"name = "bad"
tenant = "t2"
[source]
topic = "docs"
format = "document"
[[stage]]
name = "chunk"
kind = "chunker"
plugin = "{}"
[sink]
index = "kb"
"#,
            support::plugin("text-chunker").display()
        ),
    );
    let input = support::write(
        tmp.path(),
        "in.jsonl",
        "{\"id\":\"a\",\"text\":\"Some text.\"}\n",
    );
    let out = tmp.path().join("out.jsonl");
    let run = |m: &Path, input: &Path| ok(&run_local(tmp.path(), &data, m, input, &out), "run");
    run(&m, &input);
    let dead = support::read_jsonl(&tmp.path().join("out.dead-letters.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["stage"], "index-sink");
    assert!(
        dead[0]["error"].as_str().unwrap().contains("embedder"),
        "{}",
        dead[0]
    );
    // With an embedder: a document, then a version with no text left in it,
    // which removes the document.
    let m = ingest_manifest(tmp.path(), "t2");
    let input = support::write(
        tmp.path(),
        "in2.jsonl",
        "{\"id\":\"a\",\"text\":\"Some text.\"}\n{\"id\":\"b\",\"text\":\"Other text.\"}\n",
    );
    run(&m, &input);
    let input = support::write(tmp.path(), "in3.jsonl", "{\"id\":\"a\",\"text\":\"   \"}\n");
    run(&m, &input);
    let ix = VectorIndex::open_read_only(&data.join("index/t2/kb")).unwrap();
    assert_eq!(ix.doc_ids().unwrap(), vec!["b".to_string()]);
}

#[test]
fn a_new_version_reuses_the_vectors_of_its_unchanged_chunks() {
    support::ensure_plugins();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let m = ingest_manifest(tmp.path(), "t3");
    let para = |s: &str| format!("{s} {}", "Words to fill the paragraph up. ".repeat(5));
    let v1 = json!({"id": "a", "text": format!("{}\n\n{}\n\n{}", para("One."), para("Two."), para("Three."))});
    let v2 = json!({"id": "a", "text": format!("{}\n\n{}\n\n{}", para("One."), para("Two."), para("Changed."))});
    let out = tmp.path().join("out.jsonl");
    let run = |line: &Value| {
        let input = support::write(tmp.path(), "in.jsonl", &format!("{line}\n"));
        let o = run_local(tmp.path(), &data, &m, &input, &out);
        ok(&o, "ingest");
        (
            String::from_utf8_lossy(&o.stderr).into_owned(),
            support::read_jsonl(&out),
        )
    };
    let (first, chunks1) = run(&v1);
    assert_eq!(chunks1.len(), 3, "{chunks1:?}");
    assert!(!first.contains("reused"), "{first}");
    let (second, chunks2) = run(&v2);
    assert!(
        second.contains("2 embedding(s) reused from the index"),
        "{second}"
    );
    // The reused vectors are the ones the embedder made for the same text.
    assert_eq!(chunks1[0]["vector"], chunks2[0]["vector"]);
    assert_eq!(chunks1[1]["vector"], chunks2[1]["vector"]);
    assert_ne!(chunks1[2]["vector"], chunks2[2]["vector"]);
    let ix = VectorIndex::open_read_only(&data.join("index/t3/kb")).unwrap();
    let stored = ix.doc_chunks("a").unwrap();
    assert_eq!(stored.len(), 3);
    assert!(stored[2].text.starts_with("Changed."), "{}", stored[2].text);
}

#[test]
fn a_query_process_searches_the_index_an_ingest_process_is_writing() {
    support::ensure_plugins();
    let tmp = tempfile::tempdir().unwrap();
    let b = LocalBroker::start(&tmp.path().join("broker")).expect("start tansu");
    let brokers = b.address();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(weft::stream::kafka::ensure_topics(
        &brokers,
        &[("t4.docs".into(), 3), ("t4.ingest.dead-letters".into(), 3)],
    ))
    .unwrap();
    let data = tmp.path().join("data");
    let m = ingest_manifest(tmp.path(), "t4");
    let log = tmp.path().join("ingest.log");
    let mut ingest = spawn_weft(&m, &brokers, &data, &[], &log);
    let docs: Vec<(String, Option<String>)> = (0..50)
        .map(|i| (format!("d{i:04}"), Some(doc(i, 2))))
        .collect();
    produce(&brokers, "t4.docs", &docs);
    let t0 = Instant::now();
    while support::consumed(&log) < 50 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The ingest process holds the writer lock; a second process answers
    // questions from the same index, read-only, meanwhile.
    let q = support::write(
        tmp.path(),
        "q.jsonl",
        "{\"id\":\"q1\",\"text\":\"Doc 17 version 2 about route R17.\"}\n",
    );
    let qm = query_manifest(tmp.path(), "t4");
    let out = tmp.path().join("answers.jsonl");
    ok(
        &run_local(tmp.path(), &data, &qm, &q, &out),
        "query beside a running ingest",
    );
    let answers = support::read_jsonl(&out);
    assert_eq!(answers[0]["hits"][0]["doc_id"], "d0017", "{}", answers[0]);
    // A second writer is refused with a clear message.
    let second = weft_in(
        tmp.path(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "index",
            "build",
            "t4/kb",
        ],
    );
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("open for writing by another process"), "{err}");
    sigterm(&ingest);
    let status = ingest.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
}

fn sigterm(c: &Child) {
    support::sigterm(c);
}

#[test]
fn weft_dev_feeds_a_single_index_pipeline_and_reports_the_index() {
    support::ensure_plugins();
    let tmp = tempfile::tempdir().unwrap();
    let out = weft_in(
        &support::repo_root(),
        &[
            "dev",
            "--dir",
            tmp.path().join("dev").to_str().unwrap(),
            "--manifest",
            "pipelines/airline/ingest.toml",
            "--input",
            "data/airline/docs.jsonl",
        ],
    );
    let stdout = ok(&out, "weft dev --manifest ingest.toml");
    assert!(
        stdout.contains("index airline/kb: 312 documents, 312 chunks"),
        "{stdout}"
    );
}

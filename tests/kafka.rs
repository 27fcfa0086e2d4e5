//! Pipelines between real Kafka topics: a real tansu broker over TCP, the
//! real `weft` binary as a child process (so it can be SIGKILLed), and an
//! independent rdkafka client in the test to produce inputs and read outputs.

mod support;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft::stream::broker::LocalBroker;
use weft::stream::kafka::ensure_topics;

#[derive(Debug)]
struct Record {
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: Option<Vec<u8>>,
    headers: BTreeMap<String, String>,
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// Produces `(key, value)` records and returns their (partition, offset).
fn produce(
    brokers: &str,
    topic: &str,
    records: &[(Option<String>, Option<Vec<u8>>)],
) -> Vec<(i32, i64)> {
    rt().block_on(async {
        let p: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("message.max.bytes", "8000000")
            .create()
            .unwrap();
        let mut out = Vec::new();
        for (k, v) in records {
            let mut r: FutureRecord<'_, String, Vec<u8>> = FutureRecord::to(topic);
            if let Some(k) = k {
                r = r.key(k);
            }
            if let Some(v) = v {
                r = r.payload(v);
            }
            let d = p.send(r, Duration::from_secs(30)).await.expect("produce");
            out.push((d.partition, d.offset));
        }
        out
    })
}

/// Reads a whole topic from the start until it is quiet for `idle`.
fn read_all(brokers: &str, topic: &str, idle: Duration) -> Vec<Record> {
    rt().block_on(async {
        let c: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("test-reader-{}", rand::random::<u64>()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        c.subscribe(&[topic]).unwrap();
        let mut out = Vec::new();
        while let Ok(Ok(m)) = tokio::time::timeout(idle, c.recv()).await {
            let mut headers = BTreeMap::new();
            if let Some(h) = m.headers() {
                for i in 0..h.count() {
                    let x = h.get(i);
                    headers.insert(
                        x.key.to_string(),
                        String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            out.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
        out
    })
}

fn create_topics(brokers: &str, topics: &[&str], partitions: i32) {
    let t: Vec<(String, i32)> = topics.iter().map(|t| (t.to_string(), partitions)).collect();
    rt().block_on(ensure_topics(brokers, &t))
        .expect("create topics");
}

/// A chunk-and-embed pipeline manifest in `dir`.
fn ingest_manifest(dir: &Path, extra: &str) -> PathBuf {
    support::write(
        dir,
        "ingest.toml",
        &format!(
            r#"name = "ingest"
tenant = "t1"
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
config = {{ max_chars = 400, overlap = 50 }}
limits = {{ max_output_kb = 64 }}
[[stage]]
name = "embed"
kind = "embedder"
plugin = "{}"
config = {{ dimension = 32 }}
[sink]
topic = "chunks"
{extra}
"#,
            support::plugin("text-chunker").display(),
            support::plugin("hash-embedder").display()
        ),
    )
}

fn spawn_weft(manifest: &Path, brokers: &str, extra: &[&str], log: &Path) -> Child {
    // State (indexes, sink keys) goes next to the log, in the test's temp
    // dir, unless the test names its own.
    let data = log.with_file_name("data");
    let data_dir: Vec<&str> = if extra.contains(&"--data-dir") {
        Vec::new()
    } else {
        vec!["--data-dir", data.to_str().expect("utf-8 temp path")]
    };
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("run")
        .args(&data_dir)
        .arg(manifest)
        .args([
            "--brokers",
            brokers,
            "--progress-secs",
            "1",
            "--partitions",
            "4",
        ])
        .args(extra)
        .env("WEFT_CACHE_DIR", support::cache_dir())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawning weft")
}

fn wait_exit(mut c: Child, within: Duration, log: &Path) {
    let t0 = Instant::now();
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            assert!(
                s.success(),
                "weft failed: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            return;
        }
        if t0.elapsed() > within {
            let _ = c.kill();
            panic!(
                "weft did not finish in {within:?}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn docs(n: usize, version: u32) -> Vec<(Option<String>, Option<Vec<u8>>)> {
    (0..n)
        .map(|i| {
            let id = format!("doc-{i:05}");
            let text = format!(
                "Document {i} version {version}. It talks about flight NW{} and its baggage policy. {}",
                i % 97,
                "Filler sentence for length. ".repeat(i % 7)
            );
            let v = serde_json::json!({"id": id, "text": text, "metadata": {"n": i}});
            (Some(id), Some(serde_json::to_vec(&v).unwrap()))
        })
        .collect()
}

/// Every output key has exactly one distinct value, and every input doc id
/// has its chunk #0 among the outputs.
fn assert_complete_without_conflicts(outputs: &[Record], n_docs: usize) {
    let mut by_key: BTreeMap<&str, BTreeSet<&[u8]>> = BTreeMap::new();
    for r in outputs {
        by_key
            .entry(r.key.as_deref().expect("outputs are keyed"))
            .or_default()
            .insert(r.value.as_deref().unwrap_or_default());
    }
    for (k, vs) in &by_key {
        assert_eq!(vs.len(), 1, "key {k} has {} different values", vs.len());
    }
    for i in 0..n_docs {
        let k = format!("doc-{i:05}#0");
        assert!(
            by_key.contains_key(k.as_str()),
            "{k} missing from the outputs"
        );
    }
}

/// Produces `n` documents to `t1.docs` in paced chunks of 100 (every
/// 50 ms) on a thread, so a kill lands mid-stream whatever the speed of
/// the machine; the counter says how many are produced so far.
fn paced_feeder(
    brokers: &str,
    n: usize,
) -> (
    std::thread::JoinHandle<()>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let produced = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (brokers, counter) = (brokers.to_string(), produced.clone());
    let feeder = std::thread::spawn(move || {
        for chunk in docs(n, 1).chunks(100) {
            produce(&brokers, "t1.docs", chunk);
            counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (feeder, produced)
}

/// Waits (up to 120 s) until the process logging to `log` has consumed at
/// least `n` records.
fn wait_consumed(log: &Path, n: u64) {
    let t0 = Instant::now();
    while support::consumed(log) < n {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no progress: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn broker(dir: &Path) -> LocalBroker {
    support::ensure_plugins();
    LocalBroker::start(&dir.join("broker")).expect("start tansu (run scripts/setup)")
}

#[test]
fn documents_flow_from_topic_to_topic_with_stable_keys() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let brokers = b.address();
    create_topics(
        &brokers,
        &["t1.docs", "t1.chunks", "t1.ingest.dead-letters"],
        4,
    );
    let sample = support::read_jsonl(&support::repo_root().join("data/airline/docs.jsonl"));
    let input: Vec<_> = sample
        .iter()
        .map(|d| {
            (
                d["id"].as_str().map(str::to_string),
                Some(serde_json::to_vec(d).unwrap()),
            )
        })
        .collect();
    produce(&brokers, "t1.docs", &input);
    let m = ingest_manifest(dir.path(), "");
    let log = dir.path().join("weft.log");
    let c = spawn_weft(&m, &brokers, &["--idle-exit-secs", "3"], &log);
    wait_exit(c, Duration::from_secs(120), &log);
    let out = read_all(&brokers, "t1.chunks", Duration::from_secs(3));
    let mut seen_docs = BTreeSet::new();
    for r in &out {
        let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(r.key.as_deref(), v["id"].as_str(), "key = chunk id");
        let doc = v["doc_id"].as_str().unwrap();
        assert!(v["id"].as_str().unwrap().starts_with(&format!("{doc}#")));
        assert_eq!(v["vector"].as_array().unwrap().len(), 32);
        seen_docs.insert(doc.to_string());
    }
    let want: BTreeSet<String> = sample
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        seen_docs, want,
        "every document is reflected in the outputs"
    );
    assert!(read_all(&brokers, "t1.ingest.dead-letters", Duration::from_secs(1)).is_empty());
}

#[test]
fn poison_records_go_to_the_dead_letter_topic_with_headers_while_good_ones_flow() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let brokers = b.address();
    create_topics(
        &brokers,
        &["t1.docs", "t1.chunks", "t1.ingest.dead-letters"],
        1,
    );
    let mut input = docs(3, 1);
    input.insert(
        1,
        (Some("garbage".into()), Some(vec![0xff, 0x00, 0xfe, 0x01])),
    );
    // 2 MB of text: its chunks exceed the chunker's max_output_kb = 64.
    let big = serde_json::json!({"id": "huge", "text": "word ".repeat(400_000)});
    input.insert(
        3,
        (Some("huge".into()), Some(serde_json::to_vec(&big).unwrap())),
    );
    input.push((
        Some("no-text".into()),
        Some(b"{\"id\": \"no-text\"}".to_vec()),
    ));
    let positions = produce(&brokers, "t1.docs", &input);
    let m = ingest_manifest(dir.path(), "");
    let log = dir.path().join("weft.log");
    wait_exit(
        spawn_weft(&m, &brokers, &["--idle-exit-secs", "3"], &log),
        Duration::from_secs(120),
        &log,
    );
    let out = read_all(&brokers, "t1.chunks", Duration::from_secs(3));
    let docs_out: BTreeSet<String> = out
        .iter()
        .map(|r| {
            r.key
                .clone()
                .unwrap()
                .split('#')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        docs_out,
        BTreeSet::from(["doc-00000".into(), "doc-00001".into(), "doc-00002".into()])
    );
    let dead = read_all(&brokers, "t1.ingest.dead-letters", Duration::from_secs(2));
    let by_key: BTreeMap<String, &Record> =
        dead.iter().map(|r| (r.key.clone().unwrap(), r)).collect();
    assert_eq!(by_key.len(), 3, "garbage, huge and no-text");
    let g = by_key["garbage"];
    assert_eq!(g.headers["weft.error.stage"], "source");
    assert_eq!(g.headers["weft.error.kind"], "bad-record");
    assert!(g.headers["weft.error.message"].contains("UTF-8"));
    assert_eq!(g.headers["weft.source.topic"], "t1.docs");
    assert_eq!(
        g.headers["weft.source.partition"],
        positions[1].0.to_string()
    );
    assert_eq!(g.headers["weft.source.offset"], positions[1].1.to_string());
    assert_eq!(
        g.value.as_deref(),
        Some(&[0xff, 0x00, 0xfe, 0x01][..]),
        "original bytes kept"
    );
    let h = by_key["huge"];
    assert_eq!(h.headers["weft.error.stage"], "chunk");
    assert_eq!(h.headers["weft.error.kind"], "output-too-large");
    assert_eq!(h.headers["weft.source.offset"], positions[3].1.to_string());
    let n = by_key["no-text"];
    assert!(n.headers["weft.error.message"].contains("missing `text`"));
    let _ = (g.partition, g.offset);
}

#[test]
fn sigkill_mid_stream_then_restart_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let brokers = b.address();
    create_topics(
        &brokers,
        &["t1.docs", "t1.chunks", "t1.ingest.dead-letters"],
        4,
    );
    let n = 6000;
    let m = ingest_manifest(dir.path(), "");
    let log1 = dir.path().join("weft1.log");
    let mut first = spawn_weft(&m, &brokers, &[], &log1);
    // Input keeps arriving while weft runs, so the kill lands mid-stream.
    let (feeder, produced) = paced_feeder(&brokers, n);
    wait_consumed(&log1, 200);
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let at_kill = produced.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        at_kill < n,
        "the kill must land while input is still arriving"
    );
    let log2 = dir.path().join("weft2.log");
    let second = spawn_weft(&m, &brokers, &["--idle-exit-secs", "4"], &log2);
    feeder.join().unwrap();
    wait_exit(second, Duration::from_secs(180), &log2);
    let out = read_all(&brokers, "t1.chunks", Duration::from_secs(3));
    assert_complete_without_conflicts(&out, n);
}

#[test]
fn broker_restart_mid_stream_is_survived_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = broker(dir.path());
    let brokers = b.address();
    let port = b.port;
    create_topics(
        &brokers,
        &["t1.docs", "t1.chunks", "t1.ingest.dead-letters"],
        2,
    );
    let n = 2000;
    produce(&brokers, "t1.docs", &docs(n, 1));
    let m = ingest_manifest(dir.path(), "");
    let log = dir.path().join("weft.log");
    let c = spawn_weft(&m, &brokers, &["--idle-exit-secs", "15"], &log);
    let t0 = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(" consumed")
    {
        assert!(t0.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(50));
    }
    b.stop();
    std::thread::sleep(Duration::from_secs(2));
    let _b2 = LocalBroker::start_on(&dir.path().join("broker"), port).expect("restart broker");
    wait_exit(c, Duration::from_secs(240), &log);
    let out = read_all(&brokers, "t1.chunks", Duration::from_secs(3));
    assert_complete_without_conflicts(&out, n);
}

#[test]
fn two_processes_in_one_group_share_partitions_and_one_takes_over_when_the_other_stops() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let brokers = b.address();
    create_topics(
        &brokers,
        &["t1.docs", "t1.chunks", "t1.ingest.dead-letters"],
        4,
    );
    let n = 3000;
    let m = ingest_manifest(dir.path(), "");
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = spawn_weft(&m, &brokers, &[], &log_a);
    let bproc = spawn_weft(&m, &brokers, &["--idle-exit-secs", "8"], &log_b);
    // Let the group settle with both members before the data arrives.
    std::thread::sleep(Duration::from_secs(6));
    produce(&brokers, "t1.docs", &docs(n, 1));
    let t0 = Instant::now();
    while support::consumed(&log_a) == 0 || support::consumed(&log_b) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "both members should get partitions: a={} b={}",
            support::consumed(&log_a),
            support::consumed(&log_b)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGTERM: A drains its batch, commits and leaves the group, and B takes
    // over its partitions. (After a SIGKILL the takeover waits for the
    // broker to expire A's session; tansu 0.6 was not seen to do that, see
    // the README. The SIGKILL replay itself is the test above.)
    support::sigterm(&a);
    let status = a.wait().unwrap();
    assert!(
        status.success(),
        "A exits cleanly on SIGTERM: {}",
        std::fs::read_to_string(&log_a).unwrap_or_default()
    );
    assert!(
        std::fs::read_to_string(&log_a)
            .unwrap()
            .contains("stopping: finishing the batch"),
        "A announced a graceful stop"
    );
    wait_exit(bproc, Duration::from_secs(240), &log_b);
    let out = read_all(&brokers, "t1.chunks", Duration::from_secs(3));
    assert_complete_without_conflicts(&out, n);
}

#[test]
fn an_output_the_broker_refuses_for_good_is_dead_lettered_and_the_partition_flows_on() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let brokers = b.address();
    create_topics(&brokers, &["t2.in", "t2.out", "t2.t.dead-letters"], 1);
    // `huge` makes a 6 MB output: within this stage's raised max_output_kb,
    // over the producer's message limit. It used to be retried every 5 s
    // forever, and the records behind it never flowed.
    let input: Vec<_> = ["ok-1", "huge", "ok-2"]
        .iter()
        .map(|v| (Some(v.to_string()), Some(v.as_bytes().to_vec())))
        .collect();
    produce(&brokers, "t2.in", &input);
    let m = support::write(
        dir.path(),
        "t.toml",
        &format!(
            "name = \"t\"\ntenant = \"t2\"\n[source]\ntopic = \"in\"\n[[stage]]\nname = \"s\"\n\
             kind = \"transform\"\nplugin = \"{}\"\nlimits = {{ max_output_kb = 16384 }}\n\
             [sink]\ntopic = \"out\"\n",
            support::plugin("hostile").display()
        ),
    );
    let log = dir.path().join("weft.log");
    wait_exit(
        spawn_weft(&m, &brokers, &["--idle-exit-secs", "3"], &log),
        Duration::from_secs(90),
        &log,
    );
    let out: Vec<String> = read_all(&brokers, "t2.out", Duration::from_secs(3))
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(out, vec!["ok-1", "ok-2"], "the records behind it flowed");
    let dead = read_all(&brokers, "t2.t.dead-letters", Duration::from_secs(2));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(
        d.value.as_deref(),
        Some(b"huge".as_slice()),
        "the source record"
    );
    assert_eq!(
        d.headers["weft.error.kind"], "output-too-large",
        "{:?}",
        d.headers
    );
    assert_eq!(d.headers["weft.error.stage"], "kafka-sink");
    assert!(
        d.headers["weft.error.message"].contains("refused"),
        "{:?}",
        d.headers
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("2 produced, 1 dead-lettered"),
        "the summary counts it once, as a dead letter: {log_text}"
    );
}

#[test]
fn a_shorter_version_or_a_tombstone_removes_the_chunk_keys_it_no_longer_has() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let brokers = b.address();
    create_topics(
        &brokers,
        &["t1.docs", "t1.chunks", "t1.ingest.dead-letters"],
        3,
    );
    let doc = |id: &str, words: usize, v: u32| {
        let text =
            format!("Version {v} of {id}. ") + &"Some sentence about baggage rules. ".repeat(words);
        let value = serde_json::json!({"id": id, "text": text});
        (
            Some(id.to_string()),
            Some(serde_json::to_vec(&value).unwrap()),
        )
    };
    let m = ingest_manifest(dir.path(), "");
    let data = dir.path().join("data");
    let args = [
        "--idle-exit-secs",
        "3",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let log = dir.path().join("weft.log");
    produce(
        &brokers,
        "t1.docs",
        &[doc("doc-a", 60, 1), doc("doc-b", 20, 1)],
    );
    wait_exit(
        spawn_weft(&m, &brokers, &args, &log),
        Duration::from_secs(120),
        &log,
    );
    // A shorter new version of doc-a, and doc-b deleted.
    produce(
        &brokers,
        "t1.docs",
        &[doc("doc-a", 1, 2), (Some("doc-b".into()), None)],
    );
    wait_exit(
        spawn_weft(&m, &brokers, &args, &log),
        Duration::from_secs(120),
        &log,
    );
    // The compacted view, as an independent consumer sees it: the last
    // value of every key (each key lives in one partition, in order).
    let mut last: BTreeMap<String, (i32, i64, Option<Vec<u8>>)> = BTreeMap::new();
    for r in read_all(&brokers, "t1.chunks", Duration::from_secs(3)) {
        let k = r.key.clone().expect("keyed");
        let newer = last
            .get(&k)
            .is_none_or(|(p, o, _)| (r.partition, r.offset) > (*p, *o));
        if newer {
            last.insert(k, (r.partition, r.offset, r.value.clone()));
        }
    }
    let view: Vec<String> = last
        .iter()
        .map(|(k, (_, _, v))| format!("{k}={}", if v.is_some() { "value" } else { "null" }))
        .collect();
    let live: Vec<&String> = last
        .iter()
        .filter(|(_, (_, _, v))| v.is_some())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        live,
        vec!["doc-a#0"],
        "only the new version's chunk is live: {view:?}"
    );
    let a0: serde_json::Value =
        serde_json::from_slice(last["doc-a#0"].2.as_deref().unwrap()).unwrap();
    assert!(
        a0["text"].as_str().unwrap().starts_with("Version 2"),
        "{a0}"
    );
    let removed = last.keys().filter(|k| k.starts_with("doc-a#")).count() - 1;
    assert!(removed >= 3, "doc-a v1 had several chunks: {view:?}");
    assert!(
        last.keys().any(|k| k.starts_with("doc-b#")),
        "doc-b's chunks were produced"
    );
}

#[test]
fn sigterm_is_bounded_by_the_grace_period_when_a_call_runs_long() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let brokers = b.address();
    // A call allowed a minute, that sleeps for it: longer than the grace.
    let m = support::transform_manifest(
        dir.path(),
        &support::plugin("hostile"),
        "limits = { timeout_ms = 60000 }",
    );
    let log = dir.path().join("weft.log");
    let c = spawn_weft(&m, &brokers, &["--grace-secs", "2"], &log);
    let source = "default.in";
    create_topics(&brokers, &[source], 4);
    produce(
        &brokers,
        source,
        &[(Some("k".into()), Some(b"sleep".to_vec()))],
    );
    let t0 = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(" consumed")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "weft did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Time for the group join and the record to reach the plugin.
    std::thread::sleep(Duration::from_secs(8));
    support::sigterm(&c);
    let t1 = Instant::now();
    wait_exit(c, Duration::from_secs(10), &log);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        t1.elapsed() < Duration::from_secs(6),
        "{:?}\n{text}",
        t1.elapsed()
    );
    assert!(
        text.contains("did not finish within the 2s grace period") && text.contains("replayed"),
        "{text}"
    );
}

/// `--assign I/N`: two processes take disjoint halves of the partitions
/// without joining a group; one is SIGKILLed mid-stream and restarted at
/// once, resumes from its committed offsets within seconds (no coordinator
/// to wait for, issue 14), and together they lose nothing and conflict on
/// nothing.
#[test]
fn a_static_share_resumes_at_once_after_sigkill_from_its_committed_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let brokers = b.address();
    create_topics(
        &brokers,
        &["t1.docs", "t1.chunks", "t1.ingest.dead-letters"],
        4,
    );
    let n = 4000;
    let m = ingest_manifest(dir.path(), "");
    let (log_a1, log_a2, log_b) = (
        dir.path().join("a1.log"),
        dir.path().join("a2.log"),
        dir.path().join("b.log"),
    );
    let mut a1 = spawn_weft(&m, &brokers, &["--assign", "0/2"], &log_a1);
    let bproc = spawn_weft(
        &m,
        &brokers,
        &["--assign", "1/2", "--idle-exit-secs", "4"],
        &log_b,
    );
    let (feeder, produced) = paced_feeder(&brokers, n);
    wait_consumed(&log_a1, 200);
    let before_kill = support::consumed(&log_a1);
    a1.kill().unwrap(); // SIGKILL
    a1.wait().unwrap();
    assert!(
        produced.load(std::sync::atomic::Ordering::SeqCst) < n,
        "the kill must land while input is still arriving"
    );
    let restarted = Instant::now();
    let a2 = spawn_weft(
        &m,
        &brokers,
        &["--assign", "0/2", "--idle-exit-secs", "4"],
        &log_a2,
    );
    // Under the 6 s session timeout a group member's restart waits for at
    // best (measured ~1.2 s here, debug build).
    while support::consumed(&log_a2) == 0 {
        assert!(
            restarted.elapsed() < Duration::from_secs(6),
            "the restarted share did not consume within 6 s: {}",
            std::fs::read_to_string(&log_a2).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let resumed = restarted.elapsed();
    eprintln!("restart -> first consumption: {resumed:?}");
    feeder.join().unwrap();
    // Idle exit needs the share's committed offsets to reach the end: it
    // fails here if the broker refused the commits of a member-less group.
    wait_exit(a2, Duration::from_secs(180), &log_a2);
    wait_exit(bproc, Duration::from_secs(180), &log_b);
    let out = read_all(&brokers, "t1.chunks", Duration::from_secs(3));
    assert_complete_without_conflicts(&out, n);
    // The restart resumed from A's commits rather than from the start of
    // its partitions: between them, B and the restarted A read fewer than
    // all the records.
    let (a2_n, b_n) = (support::consumed(&log_a2), support::consumed(&log_b));
    assert!(
        b_n > 0 && a2_n + b_n < n as u64,
        "A before the kill {before_kill}, A restarted {a2_n}, B {b_n}, of {n}"
    );
    let text = std::fs::read_to_string(&log_a2).unwrap_or_default();
    assert!(!text.contains("stalled"), "{text}");
}

#[test]
fn assign_is_checked_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let m = ingest_manifest(dir.path(), "");
    let out = support::weft(&[
        "run",
        m.to_str().unwrap(),
        "--brokers",
        "127.0.0.1:1",
        "--assign",
        "2/2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("expected `group` or `I/N`"), "{err}");
}

/// tansu 0.6's sqlite schema has no index on record headers, so a fetch
/// looked up each record's headers by scanning all the headers in the
/// broker while holding its one connection: with weft's dead letters and
/// outputs (which carry headers) in the broker, one tenant reading a
/// backlog stalled every other client for seconds (the tenancy bench's
/// crash-loop case: 4.9 s of the neighbour's p99, 0.6 s with the index).
/// The managed broker adds the index; this checks that it is there and that
/// sqlite's planner uses it for a lookup by record, the query shape of a
/// fetch, instead of a scan.
#[test]
fn the_managed_broker_indexes_record_headers_by_record() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let db = rusqlite::Connection::open(&b.db).expect("open broker.db");
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let plan: Vec<String> = {
        let mut q = db
            .prepare(
                "EXPLAIN QUERY PLAN SELECT k, v FROM header WHERE topition = ?1 AND offset_id = ?2",
            )
            .expect("plan a header lookup");
        q.query_map([1, 7], |r| r.get::<_, String>(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("plan rows")
    };
    assert!(
        plan.iter()
            .any(|p| p.contains("USING INDEX weft_header_record")),
        "a header lookup by record does not use the index: {plan:?}"
    );
    // A restart on the same file keeps it (and does not fail on it).
    drop(db);
    let port = b.port;
    drop(b);
    let b = LocalBroker::start_on(&dir.path().join("broker"), port).expect("restart");
    let db = rusqlite::Connection::open(&b.db).expect("open broker.db");
    let n: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'weft_header_record'",
            [],
            |r| r.get(0),
        )
        .expect("read the schema");
    assert_eq!(n, 1);
}

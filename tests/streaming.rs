//! Answers streamed piece by piece (`deltas.emit` -> `<answers>.deltas`):
//! the pieces of a question's last stream, in order, join to exactly the
//! answer on the answers topic, also after a SIGKILL and a replay; bounds
//! hold against a flooding generator; a failed question ends its stream
//! with the reason. Real broker (tansu over TCP), the real `weft` binary
//! and host, a real component (`tests/fixtures/streaming-generator`).

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weft::service::serve::{ServeOptions, Server};
use weft::stream::broker::LocalBroker;
use weft::stream::circuit::CircuitPolicy;
use weft::stream::kafka::{follow_topic, KeyValue, ReadRecord};

/// A question pipeline whose only stage is the streaming fixture (it
/// answers from the question's words when there are no hits).
fn manifest(pause_ms: u64, words: u64) -> String {
    format!(
        r#"name = "ask"
[source]
topic = "questions"
format = "question"
[batch]
linger_ms = 5
[[stage]]
name = "answer"
kind = "generator"
plugin = {:?}
config = {{ pause_ms = {pause_ms}, words = {words} }}
limits = {{ max_outputs = 50, timeout_ms = 20000 }}
[sink]
topic = "answers"
"#,
        support::plugin("streaming-generator").display().to_string()
    )
}

fn question(id: &str, text: &str, mode: Option<&str>) -> KeyValue {
    let mut v = json!({"id": id, "text": text});
    if let Some(m) = mode {
        v["metadata"] = json!({ "mode": m });
    }
    (
        Some(id.as_bytes().to_vec()),
        Some(serde_json::to_vec(&v).unwrap()),
    )
}

/// A piece as a reader decodes it, with when it arrived (ms since epoch).
#[derive(Debug, Clone)]
struct Piece {
    v: Value,
    at: i64,
}

/// Reads `rx` until `done` holds of what was read, or `limit` passes.
fn collect(
    rt: &tokio::runtime::Runtime,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(ReadRecord, i64)>,
    out: &mut Vec<Piece>,
    limit: Duration,
    done: impl Fn(&[Piece]) -> bool,
) {
    let until = Instant::now() + limit;
    while !done(out) {
        let left = until.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out; read so far: {out:#?}");
        match rt.block_on(async { tokio::time::timeout(left, rx.recv()).await }) {
            Ok(Some((r, at))) => {
                let v: Value = serde_json::from_slice(r.value.as_deref().unwrap_or(b"null"))
                    .expect("a piece is JSON");
                out.push(Piece { v, at });
            }
            Ok(None) => panic!("follower ended"),
            Err(_) => panic!("timed out; read so far: {out:#?}"),
        }
    }
}

fn finals_for(pieces: &[Piece], ids: &[&str]) -> bool {
    ids.iter().all(|id| {
        pieces
            .iter()
            .any(|p| p.v["id"] == *id && p.v["final"] == true)
    })
}

/// A reader's view of one question: the pieces of its *last* stream (a
/// new stream starts at piece 0 and replaces what was read), checked for
/// order, joined with `reset` applied.
fn last_stream(pieces: &[Piece], id: &str) -> (String, Vec<Piece>) {
    let mut cur: Vec<Piece> = Vec::new();
    for p in pieces.iter().filter(|p| p.v["id"] == id) {
        if p.v["seq"] == 0 {
            cur.clear();
        }
        cur.push(p.clone());
    }
    let stream = cur.first().map(|p| p.v["stream"].clone());
    for (i, p) in cur.iter().enumerate() {
        assert_eq!(p.v["seq"], i as u64, "pieces out of order: {cur:#?}");
        assert_eq!(
            Some(p.v["stream"].clone()),
            stream,
            "two streams mixed: {cur:#?}"
        );
        assert_eq!(
            p.v["final"] == true,
            i + 1 == cur.len(),
            "final not last: {cur:#?}"
        );
    }
    let mut text = String::new();
    for p in &cur {
        if p.v["reset"] == true {
            text.clear();
        }
        text.push_str(p.v["text"].as_str().unwrap_or_default());
    }
    (text, cur)
}

fn answers_by_id(records: &[Piece]) -> BTreeMap<String, Value> {
    records
        .iter()
        .map(|p| {
            (
                p.v["id"].as_str().unwrap_or_default().to_string(),
                p.v.clone(),
            )
        })
        .collect()
}

#[test]
fn answers_stream_in_order_and_join_to_the_answer_with_bounds_and_failures() {
    support::ensure_plugins();
    let dir = tempfile::tempdir().unwrap();
    let broker = LocalBroker::start(&dir.path().join("broker")).expect("start tansu");
    let brokers = broker.address();
    let root = dir.path().join("tenants");
    let t = support::tenant(&root, "shop", "");
    support::write(&t.join("pipelines"), "ask.toml", &manifest(60, 10));
    let host = support::host(dir.path());
    let metrics = host.metrics.clone();
    let opts = ServeOptions {
        tenants: root.clone(),
        brokers: brokers.clone(),
        partitions: 2,
        assign: Default::default(),
        circuit: CircuitPolicy::default(),
        grace: Duration::from_secs(30),
    };
    let (server, report) = Server::start(host, opts).expect("serve");
    assert!(report.refused.is_empty(), "{report:?}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut deltas, mut answers) = {
        let _in_rt = rt.enter();
        (
            follow_topic(&brokers, "shop.answers.deltas").expect("follow deltas"),
            follow_topic(&brokers, "shop.answers").expect("follow answers"),
        )
    };
    let words = "Flight NW103 boards at gate B7 from 10:40 and departs on time today";
    support::produce(
        &brokers,
        "shop.questions",
        vec![
            question("q1", words, None),
            question("q2", "When does the lounge open for gold members", None),
            question("flood", "x", Some("flood")),
            question("diverge", "x", Some("diverge")),
            question("fail", "one two three four", Some("fail")),
        ],
    );
    let ids = ["q1", "q2", "flood", "diverge", "fail"];
    let mut pieces = Vec::new();
    collect(
        &rt,
        &mut deltas,
        &mut pieces,
        Duration::from_secs(90),
        |p| finals_for(p, &ids),
    );
    let mut got = Vec::new();
    collect(&rt, &mut answers, &mut got, Duration::from_secs(60), |a| {
        let by = answers_by_id(a);
        ["q1", "q2", "flood", "diverge"]
            .iter()
            .all(|id| by.contains_key(*id))
    });
    let by = answers_by_id(&got);

    // A streamed answer: many pieces, the first long before the last, and
    // together exactly the answer.
    for id in ["q1", "q2"] {
        let (text, cur) = last_stream(&pieces, id);
        assert_eq!(text, by[id]["answer"].as_str().unwrap(), "{id}: {cur:#?}");
        assert!(cur.len() >= 8, "{id}: only {} pieces", cur.len());
        let spread = cur.last().unwrap().at - cur[0].at;
        assert!(
            spread >= 300,
            "{id}: the pieces arrived within {spread} ms: not streamed while generating"
        );
        assert!(cur.iter().all(|p| p.v["reset"] != true), "{cur:#?}");
    }
    assert!(
        by["q1"]["answer"]
            .as_str()
            .unwrap()
            .starts_with("[1] Flight NW103"),
        "{}",
        by["q1"]
    );

    // A flooding generator is cut at its bound (max_outputs = 50 pieces per
    // answer, the last kept for the final one); its answer still arrives
    // whole, and the stream's final piece resets to it.
    let (text, cur) = last_stream(&pieces, "flood");
    assert_eq!(by["flood"]["answer"], "emitted 49", "{}", by["flood"]);
    assert_eq!(cur.len(), 50, "49 pieces and the final one");
    assert_eq!(text, "emitted 49");
    assert_eq!(cur.last().unwrap().v["reset"], true);

    // Pieces the answer does not extend are replaced by the answer.
    let (text, cur) = last_stream(&pieces, "diverge");
    assert_eq!(text, "something else", "{cur:#?}");
    assert_eq!(by["diverge"]["answer"], "something else");

    // A failed question's stream ends with the reason, and no answer.
    let (text, cur) = last_stream(&pieces, "fail");
    let last = &cur.last().unwrap().v;
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("failed after 2 words on purpose")),
        "{cur:#?}"
    );
    assert_eq!(text, "", "a failed stream resets to nothing: {cur:#?}");
    assert!(!by.contains_key("fail"));

    // Time to first token, per question whose generator streamed (q1, q2,
    // flood, diverge and fail all emitted before finishing).
    let text = metrics.encode();
    let count = text
        .lines()
        .find(|l| {
            l.starts_with("weft_time_to_first_token_seconds_count{")
                && l.contains("pipeline=\"ask\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok());
    assert_eq!(count, Some(5.0), "{text}");
    server.stop();
}

fn spawn_run(manifest: &Path, brokers: &str, data: &Path, log: &Path) -> support::Reaped {
    support::Reaped(
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg("run")
            .arg(manifest)
            .args(["--brokers", brokers, "--partitions", "1", "--data-dir"])
            .arg(data)
            .env("WEFT_CACHE_DIR", support::cache_dir())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("spawning weft"),
    )
}

#[test]
fn a_sigkilled_stream_is_replayed_as_a_new_stream_that_joins_to_the_answer() {
    support::ensure_plugins();
    let dir = tempfile::tempdir().unwrap();
    let broker = LocalBroker::start(&dir.path().join("broker")).expect("start tansu");
    let brokers = broker.address();
    let m = support::write(
        dir.path(),
        "ask.toml",
        &format!("tenant = \"shop\"\n{}", manifest(150, 30)),
    );
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topics: Vec<(String, i32)> = ["questions", "answers", "answers.deltas", "ask.dead-letters"]
        .iter()
        .map(|t| (format!("shop.{t}"), 1))
        .collect();
    rt.block_on(weft::stream::kafka::ensure_topics(&brokers, &topics))
        .expect("topics");
    let log1 = dir.path().join("weft1.log");
    let mut first = spawn_run(&m, &brokers, &data, &log1);
    let (mut deltas, mut answers) = {
        let _in_rt = rt.enter();
        (
            follow_topic(&brokers, "shop.answers.deltas").expect("follow deltas"),
            follow_topic(&brokers, "shop.answers").expect("follow answers"),
        )
    };
    let text = "one two three four five six seven eight nine ten eleven twelve thirteen \
                fourteen fifteen sixteen seventeen eighteen nineteen twenty";
    support::produce(&brokers, "shop.questions", vec![question("k1", text, None)]);
    let mut pieces = Vec::new();
    collect(
        &rt,
        &mut deltas,
        &mut pieces,
        Duration::from_secs(90),
        |p| p.len() >= 3,
    );
    first.kill().unwrap(); // SIGKILL, mid-answer
    first.wait().unwrap();
    let cut = pieces.len();
    assert!(
        pieces.iter().all(|p| p.v["final"] != true),
        "the kill must land mid-stream: {pieces:#?}"
    );
    let log2 = dir.path().join("weft2.log");
    let second = spawn_run(&m, &brokers, &data, &log2);
    let mut got = Vec::new();
    collect(&rt, &mut answers, &mut got, Duration::from_secs(240), |a| {
        !a.is_empty()
    });
    collect(
        &rt,
        &mut deltas,
        &mut pieces,
        Duration::from_secs(30),
        |p| finals_for(p, &["k1"]),
    );
    drop(second);
    let answer = got[0].v["answer"].as_str().unwrap().to_string();
    let (joined, _) = last_stream(&pieces, "k1");
    assert_eq!(joined, answer, "{pieces:#?}");
    // The replay is a new stream (a new id, numbered from 0 again) after
    // the partial one, which a reader discards on seeing the new piece 0.
    let mut streams: Vec<(Value, Vec<&Piece>)> = Vec::new();
    for p in &pieces {
        match streams.iter_mut().find(|(id, _)| *id == p.v["stream"]) {
            Some((_, v)) => v.push(p),
            None => streams.push((p.v["stream"].clone(), vec![p])),
        }
    }
    assert_eq!(streams.len(), 2, "{pieces:#?}");
    let (killed, replayed) = (&streams[0].1, &streams[1].1);
    assert!(killed.len() >= cut && killed.iter().all(|p| p.v["final"] != true));
    assert_eq!(replayed[0].v["seq"], 0);
    assert_eq!(replayed.last().unwrap().v["final"], true);
    let partial: String = killed
        .iter()
        .map(|p| p.v["text"].as_str().unwrap_or_default())
        .collect();
    assert!(answer.starts_with(&partial), "{partial:?} / {answer:?}");
    assert!(partial.len() < answer.len());
}

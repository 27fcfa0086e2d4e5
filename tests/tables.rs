//! Tables (`[[table]]`): a tenant's compacted topic kept by the host in
//! LMDB and joined into questions by the `table-join` plugin. Real broker
//! (tansu over TCP), real LMDB files, the real components from `plugins/`.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use weft::service::serve::{ServeOptions, Server};
use weft::stream::broker::LocalBroker;
use weft::stream::circuit::CircuitPolicy;
use weft::stream::kafka::{follow_topic, KeyValue, ReadRecord};

const POLICY: &str = "";

fn kv(key: &str, value: Option<Value>) -> KeyValue {
    (
        Some(key.as_bytes().to_vec()),
        value.map(|v| serde_json::to_vec(&v).unwrap()),
    )
}

/// `text` with every `plugin = "<name>"` pointing at the built component
/// (the manifests live in temporary directories, outside the plugin path).
fn with_plugins(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        match line
            .strip_prefix("plugin = \"")
            .and_then(|r| r.strip_suffix('"'))
        {
            Some(name) => out.push_str(&format!(
                "plugin = {:?}",
                support::plugin(name).display().to_string()
            )),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The tenant's two pipelines: documents into index `kb`, and questions
/// joined with the `customers` table, then answered from `kb`.
fn pipelines(t: &Path) {
    support::write(
        &t.join("pipelines"),
        "ingest.toml",
        &with_plugins(
            r#"name = "ingest"
[source]
topic = "docs"
format = "document"
[[stage]]
name = "chunk"
kind = "chunker"
plugin = "text-chunker"
[[stage]]
name = "embed"
kind = "embedder"
plugin = "hash-embedder"
config = { dimension = 384 }
[sink]
index = "kb"
"#,
        ),
    );
    support::write(
        &t.join("pipelines"),
        "query.toml",
        &with_plugins(
            r#"name = "query"
tenant = "shop"   # agrees with the directory; lets `weft eval` run it alone
[source]
topic = "questions"
format = "question"
[batch]
linger_ms = 5
[[table]]
name = "customers"
topic = "customers"
key = "id"
[[stage]]
name = "customer"
kind = "transform"
plugin = "table-join"
config = { table = "customers", key = "metadata.customer_id", status = "customer", fields = { booked_flight = "booking", tier = "tier" } }
[[stage]]
name = "embed"
kind = "embedder"
plugin = "hash-embedder"
config = { dimension = 384 }
[[stage]]
name = "retrieve"
kind = "retriever"
plugin = "topk-retriever"
index = "kb"
config = { k = 3, boost_from_question = { booked_flight = "flight" }, boost = 0.3 }
[[stage]]
name = "prompt"
kind = "prompt-builder"
plugin = "prompt-template"
[[stage]]
name = "answer"
kind = "generator"
plugin = "extractive-generator"
[sink]
topic = "answers"
"#,
        ),
    );
}

/// Flight status documents of `flights` (one sentence each, same template,
/// so only the flight tells them apart) and a baggage policy.
fn documents(flights: &[&str]) -> Vec<KeyValue> {
    let mut out: Vec<KeyValue> = flights
        .iter()
        .enumerate()
        .map(|(i, f)| {
            kv(
                &format!("flight-{f}"),
                Some(json!({
                    "title": format!("Flight {f} status"),
                    "text": format!("Flight {f} from Oslo to Rome, gate A{i}. Current status: delayed by {} minutes.", 10 * (i + 1)),
                    "metadata": {"flight": f},
                })),
            )
        })
        .collect();
    out.push(kv(
        "policy-baggage",
        Some(json!({"title": "Baggage", "text": "Each extra checked bag costs 60 EUR."})),
    ));
    out
}

fn question(id: &str, text: &str, customer: &str) -> KeyValue {
    kv(
        id,
        Some(json!({"id": id, "text": text, "metadata": {"customer_id": customer}})),
    )
}

/// Waits for the answer to question `id` on `rx`.
fn answer(
    rt: &tokio::runtime::Runtime,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(ReadRecord, i64)>,
    id: &str,
) -> Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let got = rt
            .block_on(async { tokio::time::timeout(left, rx.recv()).await })
            .unwrap_or_else(|_| panic!("no answer to {id} within 60 s"))
            .expect("answers follower ended");
        let v: Value = serde_json::from_slice(got.0.value.as_deref().unwrap_or(b"null")).unwrap();
        if v["id"] == id {
            return v;
        }
    }
}

/// Each output as the JSON its record value would carry.
fn json_values(o: &weft::pipeline::BatchOutcome) -> Vec<String> {
    o.outputs
        .iter()
        .map(|i| String::from_utf8(i.payload.to_value_bytes().unwrap_or_default()).unwrap())
        .collect()
}

fn first_hit(a: &Value) -> String {
    a["hits"][0]["doc_id"].as_str().unwrap_or("").to_string()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn questions_join_their_customer_see_every_update_and_the_table_survives_a_restart() {
    support::ensure_plugins();
    let dir = tempfile::tempdir().unwrap();
    let broker = LocalBroker::start(&dir.path().join("broker")).expect("start tansu");
    let brokers = broker.address();
    let root = dir.path().join("tenants");
    let t = support::tenant(&root, "shop", POLICY);
    pipelines(&t);
    let opts = |root: &Path| ServeOptions {
        tenants: root.to_path_buf(),
        brokers: brokers.clone(),
        partitions: 2,
        assign: Default::default(),
        circuit: CircuitPolicy::default(),
        grace: Duration::from_secs(30),
    };
    let (server, report) = Server::start(support::host(dir.path()), opts(&root)).expect("serve");
    assert!(report.refused.is_empty(), "{report:?}");
    let flights = [
        "NW100", "NW101", "NW102", "NW103", "NW104", "NW105", "NW106", "NW107", "NW108", "NW109",
    ];
    let docs = documents(&flights);
    let n_docs = docs.len() as u64;
    support::produce(&brokers, "shop.docs", docs);
    support::produce(
        &brokers,
        "shop.customers",
        vec![
            kv(
                "c-1",
                Some(json!({"id": "c-1", "booking": "NW103", "tier": "Gold"})),
            ),
            kv(
                "c-2",
                Some(json!({"id": "c-2", "booking": "NW107", "tier": "Blue"})),
            ),
        ],
    );
    let ingest_consumed = |s: &Server| {
        s.status()
            .pipelines
            .iter()
            .find(|p| p.figures.pipeline == "ingest")
            .map_or(0, |p| p.figures.consumed)
    };
    wait_for("the documents", Duration::from_secs(60), || {
        ingest_consumed(&server) >= n_docs
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rx = {
        let _in_rt = rt.enter();
        follow_topic(&brokers, "shop.answers").expect("follow answers")
    };

    // The join: no flight in the question, the customer's booking finds it.
    support::produce(
        &brokers,
        "shop.questions",
        vec![question("q-c1", "Is my flight delayed?", "c-1")],
    );
    let a = answer(&rt, &mut rx, "q-c1");
    assert_eq!(a["metadata"]["booked_flight"], "NW103", "{a}");
    assert_eq!(a["metadata"]["tier"], "Gold", "{a}");
    assert_eq!(a["metadata"]["customer"], "found", "{a}");
    assert_eq!(first_hit(&a), "flight-NW103", "{a}");
    // Provenance: which components and configs made the answer, and a hash
    // of each cited chunk's text as the prompt saw it.
    let stages = a["provenance"]["stages"]
        .as_array()
        .expect("provenance.stages");
    let names: Vec<&str> = stages.iter().filter_map(|s| s["stage"].as_str()).collect();
    assert_eq!(
        names,
        ["customer", "embed", "retrieve", "prompt", "answer"],
        "{a}"
    );
    let embedder = std::fs::read(support::plugin("hash-embedder")).unwrap();
    assert_eq!(
        stages[1]["digest"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&embedder)),
        "{a}"
    );
    assert_eq!(stages[2]["index"], "kb", "{a}");
    let cited = a["provenance"]["cited"]
        .as_array()
        .expect("provenance.cited");
    assert!(!cited.is_empty(), "{a}");
    let hit_text = a["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["chunk_id"] == cited[0]["chunk_id"])
        .and_then(|h| h["text"].as_str())
        .expect("the cited hit");
    assert_eq!(
        cited[0]["text_sha256"],
        hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(hit_text.as_bytes())[..16]),
        "{a}"
    );

    // The retrieved chunk names the document version it came from (a
    // cited one carries it into the provenance too); a new version of that
    // document changes it in later answers.
    let source = |a: &Value| -> String {
        a["hits"]
            .as_array()
            .and_then(|h| h.iter().find(|h| h["doc_id"] == "flight-NW103"))
            .and_then(|h| h["metadata"]["_source"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    // Every cited chunk's provenance names the version its hit came from.
    for c in a["provenance"]["cited"].as_array().expect("cited") {
        let hit = a["hits"]
            .as_array()
            .and_then(|h| h.iter().find(|h| h["chunk_id"] == c["chunk_id"]))
            .expect("a cited chunk is a hit");
        assert_eq!(c["source"], hit["metadata"]["_source"], "{a}");
        assert!(
            c["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("shop.docs/")),
            "{a}"
        );
    }
    let v1 = source(&a);
    assert!(v1.starts_with("shop.docs/"), "{a}");
    support::produce(
        &brokers,
        "shop.docs",
        vec![kv(
            "flight-NW103",
            Some(
                json!({"title": "Flight NW103 status", "text": "Flight NW103 from Oslo to Rome, gate A3. Current status: cancelled.", "metadata": {"flight": "NW103"}}),
            ),
        )],
    );
    wait_for("the new version", Duration::from_secs(60), || {
        ingest_consumed(&server) > n_docs
    });
    support::produce(
        &brokers,
        "shop.questions",
        vec![question("q-c1b", "Is my flight delayed?", "c-1")],
    );
    let a = answer(&rt, &mut rx, "q-c1b");
    let v2 = source(&a);
    assert!(
        v2.starts_with("shop.docs/") && v2 != v1,
        "{v1} -> {v2}: {a}"
    );
    assert_eq!(first_hit(&a), "flight-NW103", "{a}");
    assert!(
        a["hits"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("cancelled"),
        "{a}"
    );

    // An unknown customer: answered, without personal context, marked.
    support::produce(
        &brokers,
        "shop.questions",
        vec![question("q-x", "Is my flight delayed?", "c-404")],
    );
    let a = answer(&rt, &mut rx, "q-x");
    assert_eq!(a["metadata"]["customer"], "unknown", "{a}");
    assert!(a["metadata"].get("booked_flight").is_none(), "{a}");
    assert!(a["answer"].as_str().is_some_and(|s| !s.is_empty()), "{a}");

    // 20 times: rebook the customer, ask at once; every answer sees the
    // new booking (the batch waits for the table to catch up).
    for i in 0..20 {
        let f = flights[i % flights.len()];
        support::produce(
            &brokers,
            "shop.customers",
            vec![kv(
                "c-2",
                Some(json!({"id": "c-2", "booking": f, "tier": "Blue"})),
            )],
        );
        let id = format!("q-u{i}");
        support::produce(
            &brokers,
            "shop.questions",
            vec![question(&id, "Is my flight delayed?", "c-2")],
        );
        let a = answer(&rt, &mut rx, &id);
        assert_eq!(a["metadata"]["booked_flight"], f, "update {i}: {a}");
        assert_eq!(first_hit(&a), format!("flight-{f}"), "update {i}: {a}");
    }

    // A tombstone deletes the customer.
    support::produce(&brokers, "shop.customers", vec![kv("c-1", None)]);
    support::produce(
        &brokers,
        "shop.questions",
        vec![question("q-gone", "Is my flight delayed?", "c-1")],
    );
    let a = answer(&rt, &mut rx, "q-gone");
    assert_eq!(a["metadata"]["customer"], "unknown", "{a}");

    let status = server.stop();
    assert!(
        status.pipelines.iter().all(|p| p.figures.dead_letters == 0),
        "{status:?}"
    );
    // The table is durable: reopened from its files, before any broker
    // read, it has the last booking and the offsets after the last update
    // (2 customers + 20 updates + 1 tombstone = 23 records).
    let host = support::host(dir.path());
    let store = host
        .tables
        .store("shop", 64, "test")
        .expect("reopen the store");
    let row: Value =
        serde_json::from_slice(&store.get("customers", "c-2").unwrap().expect("c-2 kept")).unwrap();
    assert_eq!(row["booking"], flights[19 % flights.len()]);
    assert_eq!(store.get("customers", "c-1").unwrap(), None);
    let applied: i64 = store.next_offsets("customers").unwrap().values().sum();
    assert_eq!(applied, 23);
    drop(store);
    drop(host);

    // Restarted, it resumes from those offsets and answers at once.
    let (server, _) = Server::start(support::host(dir.path()), opts(&root)).expect("serve again");
    support::produce(
        &brokers,
        "shop.questions",
        vec![question("q-after", "Is my flight delayed?", "c-2")],
    );
    let a = answer(&rt, &mut rx, "q-after");
    assert_eq!(
        a["metadata"]["booked_flight"],
        flights[19 % flights.len()],
        "{a}"
    );
    server.stop();

    // `weft eval`'s library call scores the same pipeline in-process
    // against the stored index and table: c-2's question finds its flight,
    // the deleted c-1's cannot (a miss, in the denominator).
    let qs = support::write(
        dir.path(),
        "questions.jsonl",
        &[
            json!({"id": "e1", "text": "Is my flight delayed?", "gold_doc": format!("flight-{}", flights[19 % flights.len()]), "expect": "delayed", "phase": "p", "metadata": {"customer_id": "c-2"}}),
            json!({"id": "e2", "text": "Is my flight delayed?", "gold_doc": "flight-NW103", "phase": "p", "metadata": {"customer_id": "c-1"}}),
        ]
        .iter()
        .map(|q| format!("{q}\n"))
        .collect::<String>(),
    );
    let host = support::host(dir.path());
    let mut seen = 0;
    let r = weft::service::eval::evaluate_pipeline(
        &host,
        &t.join("pipelines/query.toml"),
        &qs,
        None,
        &mut |done, _| seen = done,
    )
    .expect("eval");
    assert_eq!(seen, 2);
    let all = &r.evaluation.all;
    assert_eq!(all.questions, 2);
    assert_eq!(all.gold_cited, 0.5, "{r:?}");
    assert_eq!(r.asked[0].gold_rank, Some(1), "{r:?}");
}

#[test]
fn a_plugin_reads_only_the_tables_its_manifest_declares() {
    support::ensure_plugins();
    let dir = tempfile::tempdir().unwrap();
    let host = support::host(dir.path());
    // The tenant's store holds `customers` and `staff`; the pipeline
    // declares only `customers`.
    let store = host.tables.store("shop", 64, "test").unwrap();
    for (table, key) in [("customers", "c-1"), ("staff", "s-1")] {
        store.bind(table, &format!("shop.{table}")).unwrap();
        store
            .apply(
                table,
                &[weft::table::Change {
                    key: key.into(),
                    value: Some(br#"{"booking":"NW1","salary":"secret"}"#.to_vec()),
                }],
                &weft::table::offsets_after([(0, 0)]),
            )
            .unwrap();
    }
    drop(store);
    let manifest = |table: &str| {
        support::write(
            dir.path(),
            &format!("join-{table}.toml"),
            &with_plugins(&format!(
                r#"name = "join"
tenant = "shop"
[source]
topic = "questions"
format = "question"
[[table]]
name = "customers"
topic = "customers"
[[stage]]
name = "join"
kind = "transform"
plugin = "table-join"
config = {{ table = "{table}", key = "metadata.customer_id", fields = {{ booking = "booking", salary = "salary" }} }}
[sink]
topic = "out"
"#
            )),
        )
    };
    let q = br#"{"id":"q","text":"hi","metadata":{"customer_id":"c-1"}}"#;
    let s = br#"{"id":"q","text":"hi","metadata":{"customer_id":"s-1"}}"#;

    let mut declared = host.pipelines(&[manifest("customers")]).unwrap().remove(0);
    let out = declared.process(vec![
        support::item(0, std::str::from_utf8(q).unwrap()),
        support::item(1, std::str::from_utf8(s).unwrap()),
    ]);
    assert!(out.dead.is_empty(), "{:?}", out.dead);
    let values = json_values(&out);
    assert!(values[0].contains(r#""booking":"NW1""#), "{values:?}");
    // s-1 is not a customer: the staff row is not reachable through it.
    assert!(!values[1].contains("secret"), "{values:?}");

    // A key past the host's 1 KiB bound is refused, not looked up.
    let long = format!(
        r#"{{"id":"q","text":"hi","metadata":{{"customer_id":"{}"}}}}"#,
        "c".repeat(1100)
    );
    let out = declared.process(vec![support::item(2, &long)]);
    assert_eq!(out.dead.len(), 1, "an oversized key is refused");
    let why = out.dead[0].failure.to_string();
    assert!(why.contains("longer than the 1024-byte limit"), "{why}");

    let mut undeclared = host.pipelines(&[manifest("staff")]).unwrap().remove(0);
    let out = undeclared.process(vec![support::item(0, std::str::from_utf8(s).unwrap())]);
    assert_eq!(out.dead.len(), 1, "an undeclared table is refused");
    let why = out.dead[0].failure.to_string();
    assert!(
        why.contains("table `staff` is not declared") && why.contains("declared: customers"),
        "{why}"
    );
    assert!(out.outputs.is_empty());
}

#[test]
fn a_table_on_another_tenants_topic_is_refused_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let m = support::write(
        dir.path(),
        "steal.toml",
        &with_plugins(
            r#"name = "steal"
tenant = "shop"
[source]
topic = "questions"
[[stage]]
name = "t"
kind = "transform"
plugin = "noop-transform"
[[table]]
name = "customers"
topic = "rival.customers"
[sink]
topic = "out"
"#,
        ),
    );
    let err = weft::manifest::Manifest::load(&m).unwrap_err().to_string();
    assert!(
        err.contains("steal.toml:11:9") && err.contains("belongs to tenant `rival`"),
        "{err}"
    );
}

//! `--metrics`: a real `weft serve` (in-process `Server`) on a real broker
//! with real plugins, scraped over HTTP; the figures must equal what the
//! test produced. Also checks that the shipped Grafana dashboard parses
//! and only queries series a running weft exports.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weft::service::exporter::MetricsEndpoint;
use weft::service::serve::{ServeOptions, Server};
use weft::stream::broker::LocalBroker;
use weft::stream::circuit::CircuitPolicy;
use weft::stream::kafka::KeyValue;

/// A GET over a plain TCP connection (no weft code on the client side):
/// status and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// `name{labels}` -> value for every sample of a scrape.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The value of the sample `name` whose labels include all of `labels`.
fn value(s: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.iter()
        .find(|(k, _)| {
            k.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(l, v)| k.contains(&format!("{l}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The airline ingest and query pipelines, as the tenant `air`'s.
fn airline_tenant(root: &Path) -> PathBuf {
    let t = support::tenant(root, "air", "max_memory_mb = 128\nmax_instances = 16\n");
    let p = |n: &str| support::plugin(n).display().to_string();
    support::write(
        &t.join("pipelines"),
        "ingest.toml",
        &format!(
            "name = \"ingest\"\n[source]\ntopic = \"docs\"\nformat = \"document\"\n\
             [batch]\nmax_records = 64\nlinger_ms = 20\n\
             [[stage]]\nname = \"chunk\"\nkind = \"chunker\"\nplugin = \"{}\"\nconfig = {{ max_chars = 600, overlap = 80 }}\n\
             [[stage]]\nname = \"embed\"\nkind = \"embedder\"\nplugin = \"{}\"\nconfig = {{ dimension = 384 }}\n\
             [sink]\nindex = \"kb\"\n",
            p("text-chunker"),
            p("hash-embedder")
        ),
    );
    support::write(
        &t.join("pipelines"),
        "query.toml",
        &format!(
            "name = \"query\"\n[source]\ntopic = \"questions\"\nformat = \"question\"\n\
             [[stage]]\nname = \"embed\"\nkind = \"embedder\"\nplugin = \"{}\"\nconfig = {{ dimension = 384 }}\n\
             [[stage]]\nname = \"retrieve\"\nkind = \"retriever\"\nplugin = \"{}\"\nindex = \"kb\"\nconfig = {{ k = 4 }}\n\
             [[stage]]\nname = \"prompt\"\nkind = \"prompt-builder\"\nplugin = \"{}\"\n\
             [[stage]]\nname = \"answer\"\nkind = \"generator\"\nplugin = \"{}\"\n\
             [sink]\ntopic = \"answers\"\n",
            p("hash-embedder"),
            p("topk-retriever"),
            p("prompt-template"),
            p("extractive-generator")
        ),
    );
    // A transform around the hostile fixture: the value `panic` traps.
    support::write(
        &t.join("pipelines"),
        "risky.toml",
        &format!(
            "name = \"risky\"\n[source]\ntopic = \"raw\"\n\
             [[stage]]\nname = \"t\"\nkind = \"transform\"\nplugin = \"{}\"\n\
             [sink]\ntopic = \"raw-out\"\n",
            p("hostile")
        ),
    );
    t
}

fn keyed(lines: &[serde_json::Value]) -> Vec<KeyValue> {
    lines
        .iter()
        .map(|d| {
            (
                d["id"].as_str().map(|s| s.as_bytes().to_vec()),
                Some(serde_json::to_vec(d).unwrap()),
            )
        })
        .collect()
}

#[test]
fn a_scrape_of_a_running_serve_reports_exactly_what_was_produced() {
    support::ensure_plugins();
    let dir = tempfile::tempdir().unwrap();
    let broker = LocalBroker::start(&dir.path().join("broker")).expect("start tansu");
    let brokers = broker.address();
    let root = dir.path().join("tenants");
    airline_tenant(&root);
    let host = support::host(dir.path());
    let endpoint =
        MetricsEndpoint::start("127.0.0.1:0".parse().unwrap(), host.scraper()).expect("metrics");
    let opts = ServeOptions {
        tenants: root,
        brokers: brokers.clone(),
        partitions: 3,
        assign: Default::default(),
        circuit: CircuitPolicy::default(),
        grace: Duration::from_secs(30),
    };
    let (server, report) = Server::start(host, opts).expect("serve");
    assert!(report.refused.is_empty(), "{report:?}");

    let docs = support::read_jsonl(&support::repo_root().join("data/airline/docs.jsonl"));
    assert_eq!(docs.len(), 312);
    let mut records = keyed(&docs);
    // A record that is not a document: one dead letter, kind bad-record.
    records.push((Some(b"garbage".to_vec()), Some(b"{not json".to_vec())));
    support::produce(&brokers, "air.docs", records);
    support::produce(
        &brokers,
        "air.raw",
        ["fine", "panic", "also fine"]
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    Some(format!("r{i}").into_bytes()),
                    Some(v.as_bytes().to_vec()),
                )
            })
            .collect(),
    );
    let consumed = |s: &Server, name: &str| {
        s.status()
            .pipelines
            .iter()
            .find(|p| p.figures.pipeline == name)
            .map_or(0, |p| p.figures.consumed)
    };
    wait_for("313 documents consumed", Duration::from_secs(180), || {
        consumed(&server, "ingest") == 313
    });
    let questions: Vec<serde_json::Value> =
        support::read_jsonl(&support::repo_root().join("data/airline/questions.jsonl"))
            .into_iter()
            .take(20)
            .collect();
    support::produce(&brokers, "air.questions", keyed(&questions));
    wait_for("20 questions answered", Duration::from_secs(120), || {
        consumed(&server, "query") == 20
    });

    wait_for("3 raw records consumed", Duration::from_secs(60), || {
        consumed(&server, "risky") == 3
    });
    let ingest = [("tenant", "air"), ("pipeline", "ingest")];
    let query = [("tenant", "air"), ("pipeline", "query")];
    // Lag is looked at about once a second: wait for every partition at 0.
    let mut s = BTreeMap::new();
    wait_for("the lag to reach 0", Duration::from_secs(30), || {
        let (status, body) = http_get(endpoint.addr(), "/metrics");
        assert_eq!(status, 200, "{body}");
        s = samples(&body);
        let lags: Vec<f64> = s
            .iter()
            .filter(|(k, _)| {
                k.starts_with("weft_consumer_lag{") && k.contains("topic=\"air.docs\"")
            })
            .map(|(_, v)| *v)
            .collect();
        lags.len() == 3 && lags.iter().all(|l| *l == 0.0)
    });
    let v = |name: &str, labels: &[(&str, &str)]| {
        value(&s, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in the scrape"))
    };
    assert_eq!(v("weft_records_in_total", &ingest), 313.0);
    assert_eq!(
        v(
            "weft_dead_letters_total",
            &[
                ("tenant", "air"),
                ("pipeline", "ingest"),
                ("stage", "source"),
                ("kind", "bad-record")
            ]
        ),
        1.0
    );
    assert_eq!(
        s.keys()
            .filter(
                |k| k.starts_with("weft_dead_letters_total{") && k.contains("pipeline=\"ingest\"")
            )
            .count(),
        1,
        "only the garbage record was dead-lettered"
    );
    // The trapping record: one dead letter of kind `trap` from stage `t`,
    // and its instance recycled (the batch's, then the record's own call).
    let risky = [("tenant", "air"), ("pipeline", "risky"), ("stage", "t")];
    assert_eq!(
        v(
            "weft_dead_letters_total",
            &[
                ("tenant", "air"),
                ("pipeline", "risky"),
                ("stage", "t"),
                ("kind", "trap")
            ]
        ),
        1.0
    );
    assert_eq!(
        v(
            "weft_records_in_total",
            &[("tenant", "air"), ("pipeline", "risky")]
        ),
        3.0
    );
    assert_eq!(
        v(
            "weft_records_out_total",
            &[("tenant", "air"), ("pipeline", "risky")]
        ),
        2.0
    );
    let recycles = v("weft_instance_recycles_total", &risky);
    assert!((1.0..=2.0).contains(&recycles), "{recycles}");
    assert_eq!(
        v("weft_retries_total", &risky),
        0.0,
        "a trap is not retried"
    );
    // Every document is in the index, and each was timed produced -> searchable.
    assert_eq!(
        v(
            "weft_index_documents",
            &[("tenant", "air"), ("index", "kb")]
        ),
        312.0
    );
    assert!(v("weft_index_chunks", &[("tenant", "air"), ("index", "kb")]) >= 312.0);
    assert!(v("weft_index_bytes", &[("tenant", "air"), ("index", "kb")]) > 0.0);
    assert_eq!(v("weft_freshness_seconds_count", &ingest), 312.0);
    // Per stage: calls and the latency histogram agree, memory was seen.
    for stage in ["chunk", "embed"] {
        let l = [("tenant", "air"), ("pipeline", "ingest"), ("stage", stage)];
        let calls = v("weft_stage_calls_total", &l);
        assert!(calls >= 1.0, "{stage}: {calls}");
        assert_eq!(v("weft_stage_call_seconds_count", &l), calls, "{stage}");
        assert!(v("weft_wasm_memory_peak_bytes", &l) > 0.0, "{stage}");
        assert_eq!(v("weft_instance_recycles_total", &l), 0.0, "{stage}");
    }
    // The query side: every question answered once, each answer timed.
    assert_eq!(v("weft_records_in_total", &query), 20.0);
    assert_eq!(v("weft_records_out_total", &query), 20.0);
    assert_eq!(v("weft_question_answer_seconds_count", &query), 20.0);
    assert_eq!(v("weft_pipeline_paused", &query), 0.0);
    let batches = v("weft_batches_total", &ingest);
    assert_eq!(v("weft_batch_commit_seconds_count", &ingest), batches);
    // The same figures as the status the admin API and `weft status` show.
    let st = server.status();
    let ing = st
        .pipelines
        .iter()
        .find(|p| p.figures.pipeline == "ingest")
        .unwrap();
    assert_eq!(ing.figures.dead_letters, 1);
    assert_eq!(ing.lag, Some(0));
    assert_eq!(
        ing.last_error.as_ref().map(|e| e.kind.as_str()),
        Some("bad-record")
    );
    println!(
        "scraped: ingest 313 in, 1 dead letter, freshness sum {:.3} s over 312 docs; query 20 answers, latency sum {:.3} s",
        v("weft_freshness_seconds_sum", &ingest),
        v("weft_question_answer_seconds_sum", &query)
    );
    // The dashboard only queries series this scrape has.
    check_dashboard(&s);
    assert_eq!(http_get(endpoint.addr(), "/nope").0, 404);
    server.stop();
}

/// `docs/grafana-dashboard.json` parses, has a row per pipeline (a
/// repeated row on the `pipeline` variable) with rates, lag, errors and
/// freshness, and every `weft_*` series it queries is one weft exports.
fn check_dashboard(scraped: &BTreeMap<String, f64>) {
    let path = support::repo_root().join("docs/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard is shipped");
    let d: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = d["panels"].as_array().expect("panels");
    let row = panels.iter().find(|p| p["type"] == "row").expect("a row");
    assert_eq!(row["repeat"], "pipeline", "one row per pipeline");
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    for want in [
        "weft_records_in_total",
        "weft_consumer_lag",
        "weft_dead_letters_total",
        "weft_freshness_seconds_bucket",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(want)),
            "no panel queries {want}"
        );
    }
    let names: std::collections::BTreeSet<&str> =
        scraped.keys().filter_map(|k| k.split('{').next()).collect();
    for e in &exprs {
        for (i, _) in e.match_indices("weft_") {
            let name: String = e[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                names.contains(name.as_str()),
                "the dashboard queries {name}, which weft does not export ({e})"
            );
        }
    }
}

//! The admin API (`weft serve --admin`) of a real `Server` on a real
//! broker with real plugins, called over HTTP on loopback: status, pause
//! that really stops consumption and resume that restarts it, reload,
//! dead letters with their reason headers, replay to the source topic, a
//! question answered with citations, and the token rules. `weft status`
//! and `weft dlq` are run as the real binary against it.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::service::admin::{AdminOptions, AdminServer};
use weft::service::serve::{Condition, ServeOptions, Server};
use weft::stream::broker::LocalBroker;
use weft::stream::circuit::CircuitPolicy;
use weft::stream::kafka::KeyValue;

/// One request over a plain TCP connection (no weft code on the client
/// side): status and body as JSON (or `null`).
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
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
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
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

/// `ops`: a document chunker `docs` (ops.docs -> ops.chunks) and the
/// airline query path `query` (ops.questions -> ops.answers) over the
/// index that `ingest` fills.
fn tenant(root: &Path) {
    let t = support::tenant(root, "ops", "max_memory_mb = 128\nmax_instances = 16\n");
    let p = |n: &str| support::plugin(n).display().to_string();
    let dir = t.join("pipelines");
    support::write(
        &dir,
        "docs.toml",
        &format!(
            "name = \"docs\"\n[source]\ntopic = \"docs\"\nformat = \"document\"\n[batch]\nmax_records = 20\nlinger_ms = 20\n\
             [[stage]]\nname = \"chunk\"\nkind = \"chunker\"\nplugin = \"{}\"\n[sink]\ntopic = \"chunks\"\n",
            p("text-chunker")
        ),
    );
    support::write(
        &dir,
        "ingest.toml",
        &format!(
            "name = \"ingest\"\n[source]\ntopic = \"kb-docs\"\nformat = \"document\"\n\
             [[stage]]\nname = \"chunk\"\nkind = \"chunker\"\nplugin = \"{}\"\n\
             [[stage]]\nname = \"embed\"\nkind = \"embedder\"\nplugin = \"{}\"\nconfig = {{ dimension = 384 }}\n\
             [sink]\nindex = \"kb\"\n",
            p("text-chunker"),
            p("hash-embedder")
        ),
    );
    support::write(
        &dir,
        "query.toml",
        &format!(
            "name = \"query\"\n[source]\ntopic = \"questions\"\nformat = \"question\"\n\
             [[stage]]\nname = \"embed\"\nkind = \"embedder\"\nplugin = \"{}\"\nconfig = {{ dimension = 384 }}\n\
             [[stage]]\nname = \"retrieve\"\nkind = \"retriever\"\nplugin = \"{}\"\nindex = \"kb\"\nconfig = {{ k = 3 }}\n\
             [[stage]]\nname = \"prompt\"\nkind = \"prompt-builder\"\nplugin = \"{}\"\n\
             [[stage]]\nname = \"answer\"\nkind = \"generator\"\nplugin = \"{}\"\n\
             [sink]\ntopic = \"answers\"\n",
            p("hash-embedder"),
            p("topk-retriever"),
            p("prompt-template"),
            p("extractive-generator")
        ),
    );
}

fn doc(i: usize) -> KeyValue {
    (
        Some(format!("d{i}").into_bytes()),
        Some(
            serde_json::json!({"id": format!("d{i}"), "text": format!("Document {i} is about anvils.")})
                .to_string()
                .into_bytes(),
        ),
    )
}

#[test]
fn the_admin_api_pauses_resumes_reloads_tails_replays_and_answers() {
    support::ensure_plugins();
    let dir = tempfile::tempdir().unwrap();
    let broker = LocalBroker::start(&dir.path().join("broker")).expect("start tansu");
    let brokers = broker.address();
    let root = dir.path().join("tenants");
    tenant(&root);
    let opts = ServeOptions {
        tenants: root,
        brokers: brokers.clone(),
        partitions: 2,
        assign: Default::default(),
        circuit: CircuitPolicy::default(),
        grace: Duration::from_secs(30),
    };
    let (server, report) = Server::start(support::host(dir.path()), opts).expect("serve");
    assert!(report.refused.is_empty(), "{report:?}");
    let server = Arc::new(server);
    let admin = AdminServer::start(
        server.clone(),
        AdminOptions::new("127.0.0.1:0".parse().unwrap(), None).expect("loopback needs no token"),
    )
    .expect("admin");
    let a = admin.addr();
    let get = |path: &str| call(a, "GET", path, None, None);
    let post = |path: &str, body: Option<serde_json::Value>| call(a, "POST", path, None, body);
    let docs_status = || {
        let (code, p) = get("/api/pipelines/ops/docs");
        assert_eq!(code, 200, "{p}");
        p
    };

    // Ten documents and a garbage record: 10 consumed + 1 dead letter.
    let mut records: Vec<KeyValue> = (0..10).map(doc).collect();
    records.push((Some(b"bad-1".to_vec()), Some(b"{not a document".to_vec())));
    support::produce(&brokers, "ops.docs", records);
    wait_for("11 records consumed", Duration::from_secs(90), || {
        docs_status()["consumed"] == 11
    });
    let (code, st) = get("/api/status");
    assert_eq!(code, 200);
    let names: Vec<String> = st["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["tenant"].as_str().unwrap(),
                p["pipeline"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(names, ["ops/docs", "ops/ingest", "ops/query"]);
    let p = docs_status();
    assert_eq!(p["condition"], "running", "{p}");
    assert_eq!(p["dead_letters"], 1, "{p}");
    assert_eq!(p["last_error"]["kind"], "bad-record", "{p}");
    assert_eq!(p["topics"]["dead_letters"], "ops.docs.dead-letters", "{p}");
    let (code, t) = get("/api/tenants");
    assert_eq!(code, 200);
    assert_eq!(t["tenants"][0]["tenant"], "ops");
    assert_eq!(t["tenants"][0]["pipelines"].as_array().unwrap().len(), 3);

    // The dead letter shows in the tail with its reason headers.
    let (code, tail) = get("/api/pipelines/ops/docs/dead-letters?n=5");
    assert_eq!(code, 200, "{tail}");
    let dl = &tail["dead_letters"].as_array().unwrap()[..];
    assert_eq!(dl.len(), 1, "{tail}");
    assert_eq!(dl[0]["key"], "bad-1");
    assert_eq!(dl[0]["value"], "{not a document");
    assert_eq!(dl[0]["kind"], "bad-record");
    assert_eq!(dl[0]["stage"], "source");
    let headers: Vec<(String, String)> = serde_json::from_value(dl[0]["headers"].clone()).unwrap();
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "weft.error.kind" && v == "bad-record"),
        "{headers:?}"
    );
    assert!(headers.iter().any(|(k, _)| k == "weft.error.message"));
    let (partition, offset) = (
        dl[0]["partition"].as_i64().unwrap(),
        dl[0]["offset"].as_i64().unwrap(),
    );

    // `weft status` and `weft dlq tail`, the real binary, through the API.
    let url = format!("http://{a}");
    let out = support::weft(&["status", "--admin", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ops/docs") && l.contains("running") && l.contains("11")),
        "{text}"
    );
    let out = support::weft(&["dlq", "tail", "ops/docs", "-n", "3", "--admin", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "{partition}:{offset}  key bad-1  bad-record in stage source"
        )) && text.contains("weft.error.kind: bad-record"),
        "{text}"
    );

    // Pause: records produced meanwhile are not consumed, and lag shows them.
    let (code, r) = post("/api/pipelines/ops/docs/pause", None);
    assert_eq!(code, 200, "{r}");
    wait_for("the pause", Duration::from_secs(10), || {
        docs_status()["condition"] == "paused"
    });
    support::produce(&brokers, "ops.docs", (10..40).map(doc).collect());
    std::thread::sleep(Duration::from_secs(4));
    let p = docs_status();
    assert_eq!(p["consumed"], 11, "paused, yet consumed: {p}");
    assert_eq!(p["state"], "paused: by an operator");
    wait_for(
        "the lag of the paused pipeline",
        Duration::from_secs(10),
        || docs_status()["lag"] == 30,
    );
    // Resume: the 30 records flow.
    let (code, _) = post("/api/pipelines/ops/docs/resume", None);
    assert_eq!(code, 200);
    wait_for("41 consumed after resume", Duration::from_secs(60), || {
        docs_status()["consumed"] == 41
    });
    assert_eq!(docs_status()["condition"], "running");

    // Reload one pipeline: a new version of it even though nothing changed.
    let (code, r) = post("/api/pipelines/ops/docs/reload", None);
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["swapped"], serde_json::json!(["ops/docs"]), "{r}");
    wait_for("the swap", Duration::from_secs(30), || {
        docs_status()["reloads"] == 1
    });

    // Replay the dead letter: back on the source topic with its key, value
    // and own headers, without weft's; the pipeline consumes it again.
    let out = support::weft(&[
        "dlq",
        "replay",
        "ops/docs",
        "--offset",
        &format!("{partition}:{offset}"),
        "--admin",
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("replayed 1 dead letter(s) to ops.docs"),
        "{text}"
    );
    // 11 at first, 30 while paused, 1 replayed.
    let source = support::read_first(&brokers, "ops.docs", 42);
    let replayed: Vec<_> = source
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"bad-1".as_slice()))
        .collect();
    assert_eq!(replayed.len(), 2, "the original and the replayed copy");
    let copy = replayed.iter().max_by_key(|r| r.offset).unwrap();
    assert_eq!(copy.value.as_deref(), Some(b"{not a document".as_slice()));
    assert!(
        copy.headers.iter().all(|(k, _)| !k.starts_with("weft.")),
        "weft's headers were stripped: {:?}",
        copy.headers
    );
    wait_for(
        "the replayed record consumed",
        Duration::from_secs(60),
        || docs_status()["consumed"] == 42,
    );
    // Still garbage, so dead-lettered again: the tail has both.
    wait_for("the second dead letter", Duration::from_secs(30), || {
        get("/api/pipelines/ops/docs/dead-letters?n=10").1["dead_letters"]
            .as_array()
            .is_some_and(|l| l.len() == 2)
    });
    // Bad requests are refused plainly.
    let (code, r) = post(
        "/api/pipelines/ops/docs/dead-letters/replay",
        Some(serde_json::json!({"offsets": [{"partition": 0, "offset": 999}]})),
    );
    assert_eq!(code, 404, "{r}");
    let (code, _) = post(
        "/api/pipelines/ops/docs/dead-letters/replay",
        Some(serde_json::json!({})),
    );
    assert_eq!(code, 400);
    assert_eq!(get("/api/pipelines/ops/nope").0, 404);
    assert_eq!(call(a, "DELETE", "/api/status", None, None).0, 405);

    // Ask: the answer comes back with citations, through the query path.
    let kb: Vec<KeyValue> =
        support::read_jsonl(&support::repo_root().join("data/airline/docs.jsonl"))
            .iter()
            .map(|d| {
                (
                    d["id"].as_str().map(|s| s.as_bytes().to_vec()),
                    Some(serde_json::to_vec(d).unwrap()),
                )
            })
            .collect();
    let n = kb.len() as u64;
    support::produce(&brokers, "ops.kb-docs", kb);
    wait_for(
        "the knowledge base indexed",
        Duration::from_secs(120),
        || get("/api/pipelines/ops/ingest").1["indexed_docs"] == n,
    );
    let (code, r) = post(
        "/api/pipelines/ops/query/ask",
        Some(
            serde_json::json!({"id": "q-admin-1", "text": "How much does an extra checked bag cost?"}),
        ),
    );
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["id"], "q-admin-1");
    let answer = &r["answer"];
    assert_eq!(answer["id"], "q-admin-1", "{r}");
    let cites = answer["citations"].as_array().expect("citations");
    assert!(!cites.is_empty(), "{r}");
    assert!(cites.iter().any(|c| c["doc_id"] == "policy-baggage"), "{r}");
    assert!(
        answer["answer"]
            .as_str()
            .is_some_and(|s| s.contains("60 EUR")),
        "{r}"
    );
    println!(
        "ask answered in {} ms: {}",
        r["latency_ms"], answer["answer"]
    );
    // A pipeline that does not answer questions says so.
    let (code, r) = post(
        "/api/pipelines/ops/docs/ask",
        Some(serde_json::json!({"text": "hello"})),
    );
    assert_eq!(code, 400, "{r}");

    drop(admin);
    let server = Arc::try_unwrap(server).ok().expect("the only reference");
    let last = server.stop();
    assert!(last
        .pipelines
        .iter()
        .all(|p| p.condition == Condition::Stopped));
}

#[test]
fn off_loopback_needs_a_token_file_and_a_wrong_token_gets_401() {
    let dir = tempfile::tempdir().unwrap();
    // Refused before anything listens, naming the option.
    let err = AdminOptions::new("0.0.0.0:0".parse().unwrap(), None).expect_err("no token");
    let msg = err.to_string();
    assert!(
        msg.contains("0.0.0.0:0 is not a loopback address") && msg.contains("--admin-token-file"),
        "{msg}"
    );
    // The binary refuses it the same way (before any broker is needed).
    let out = support::weft(&[
        "serve",
        "--tenants",
        dir.path().to_str().unwrap(),
        "--brokers",
        "127.0.0.1:1",
        "--admin",
        "0.0.0.0:0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--admin-token-file"), "{stderr}");
    // A short token is refused too.
    let short = support::write(dir.path(), "short", "abc\n");
    assert!(AdminOptions::new("0.0.0.0:0".parse().unwrap(), Some(&short)).is_err());

    // With a token, every request must carry it (also on loopback).
    let token = "s3cret-token-of-some-length";
    let file = support::write(dir.path(), "token", &format!("{token}\n"));
    let opts = AdminOptions::new("127.0.0.1:0".parse().unwrap(), Some(&file)).expect("opts");
    let root = dir.path().join("tenants");
    std::fs::create_dir_all(&root).unwrap();
    // An empty tenants directory: a server with nothing to host, no broker needed.
    let (server, _) = Server::start(
        support::host(dir.path()),
        ServeOptions::new(&root, "127.0.0.1:1"),
    )
    .expect("serve");
    let admin = AdminServer::start(Arc::new(server), opts).expect("admin");
    let a = admin.addr();
    assert_eq!(call(a, "GET", "/api/status", None, None).0, 401);
    assert_eq!(
        call(
            a,
            "GET",
            "/api/status",
            Some("s3cret-token-of-some-lengtX"),
            None
        )
        .0,
        401
    );
    assert_eq!(call(a, "GET", "/api/status", Some("short"), None).0, 401);
    let (code, st) = call(a, "GET", "/api/status", Some(token), None);
    assert_eq!(code, 200, "{st}");
    assert_eq!(st["pipelines"], serde_json::json!([]));
    // `weft status` with the token file works, without it is refused.
    let url = format!("http://{a}");
    let out = support::weft(&[
        "status",
        "--admin",
        &url,
        "--admin-token-file",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = support::weft(&["status", "--admin", &url]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

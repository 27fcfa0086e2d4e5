//! The web console (issue 13 §3) in a real browser: headless Chromium (the
//! Debian package `scripts/setup` installs) loads the console from the
//! admin server of a real `Server` (and of the real `weft dev` binary) on a
//! real broker with the airline pipelines and plugins, asks a question
//! through `?ask=`, and the dumped DOM must hold the answer, its citations
//! and the text of the documents behind them. Markup inside documents and
//! dead letters must come out as text, never as elements.
//!
//! Without Chromium these tests fail, naming `scripts/setup`, unless
//! `WEFT_SKIP_BROWSER=1` is set (then the browser parts are skipped and
//! said so on stderr).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::service::admin::{AdminOptions, AdminServer};
use weft::service::serve::{ServeOptions, Server};
use weft::stream::broker::LocalBroker;
use weft::stream::circuit::CircuitPolicy;
use weft::stream::kafka::KeyValue;

/// The browser, or `None` when `WEFT_SKIP_BROWSER=1` and it is missing.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() && std::env::var("WEFT_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("WEFT_SKIP_BROWSER=1 and no chromium on PATH: skipping the browser checks");
        return None;
    }
    Some(found.unwrap_or_else(|| {
        panic!(
            "chromium is not installed: run `bash scripts/setup` (it installs Debian's `chromium` \
             package; CI runs it), or set WEFT_SKIP_BROWSER=1 to skip the browser tests"
        )
    }))
}

/// Runs headless Chromium on `url` with `args` (its own profile, so tests
/// may run side by side) and returns its stdout; fails after 120 s.
fn browse(chromium: &Path, url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("a profile dir");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for chromium") {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = out.join().expect("stdout reader");
    let err = err.join().expect("stderr reader");
    assert!(
        status.success(),
        "chromium failed on {url}: {status}\n{err}"
    );
    out
}

/// The page's DOM once the question it asked on load is answered (or
/// failed), in real time (see [`dom_when`]), serialised the way Chromium
/// dumps it (`<body data-ask=...>` first).
fn dump_dom(chromium: &Path, url: &str) -> String {
    let t0 = Instant::now();
    let dom = dom_when(
        chromium,
        url,
        "['answered', 'failed'].includes(document.body.dataset.ask)",
        Duration::from_secs(120),
    );
    eprintln!(
        "chromium: the page was ready in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    dom
}

/// Opens `url` in Chromium driven over the DevTools protocol (on the
/// `--remote-debugging-pipe` file descriptors, no port), waits in real
/// time until `ready` (a JavaScript expression) is true, and returns the
/// page's HTML then. `--dump-dom` cannot watch a stream: a streamed
/// response body does not hold its virtual time.
fn dom_when(chromium: &Path, url: &str, ready: &str, limit: Duration) -> String {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let profile = tempfile::tempdir().expect("a profile dir");
    // Chromium reads commands on fd 3 and writes replies on fd 4, each
    // message ending with a NUL byte.
    let (to_read, mut to_browser) = std::io::pipe().expect("pipe");
    let (mut from_browser, from_write) = std::io::pipe().expect("pipe");
    let (r, w) = (to_read.as_raw_fd(), from_write.as_raw_fd());
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--remote-debugging-pipe",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg("about:blank")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = support::Reaped(cmd.spawn().expect("starting chromium"));
    drop((to_read, from_write));
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        while let Ok(n) = from_browser.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            while let Some(end) = buf.iter().position(|b| *b == 0) {
                let msg: Vec<u8> = buf.drain(..=end).collect();
                if let Ok(v) = serde_json::from_slice(&msg[..msg.len() - 1]) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut next_id = 0u64;
    let mut call = |method: &str, params: serde_json::Value, session: Option<&str>| {
        next_id += 1;
        let mut m = serde_json::json!({"id": next_id, "method": method, "params": params});
        if let Some(s) = session {
            m["sessionId"] = s.into();
        }
        let mut bytes = m.to_string().into_bytes();
        bytes.push(0);
        to_browser.write_all(&bytes).expect("writing to chromium");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = rx
                .recv_timeout(left.max(Duration::from_millis(1)))
                .unwrap_or_else(|_| panic!("chromium did not answer {method} in time"));
            if v["id"] == next_id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    };
    let target = call("Target.createTarget", serde_json::json!({"url": url}), None);
    let target = target["targetId"]
        .as_str()
        .expect("a target id")
        .to_string();
    let attached = call(
        "Target.attachToTarget",
        serde_json::json!({"targetId": target, "flatten": true}),
        None,
    );
    let session = attached["sessionId"]
        .as_str()
        .expect("a session")
        .to_string();
    let eval =
        |call: &mut dyn FnMut(&str, serde_json::Value, Option<&str>) -> serde_json::Value,
         expr: &str| {
            call(
                "Runtime.evaluate",
                serde_json::json!({"expression": expr, "returnByValue": true}),
                Some(&session),
            )["result"]["value"]
                .clone()
        };
    loop {
        if eval(&mut call, ready) == serde_json::Value::Bool(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not get ready ({ready}) within {limit:?}: {}",
            eval(&mut call, "document.body.outerHTML")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let html = eval(&mut call, "document.documentElement.outerHTML");
    drop(child);
    html.as_str().unwrap_or_default().to_string()
}

/// Saves a screenshot of `url` as `target/test-artifacts/<name>`.
fn screenshot(chromium: &Path, url: &str, name: &str) -> PathBuf {
    let dir = support::repo_root().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("target/test-artifacts");
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    browse(
        chromium,
        url,
        &[
            "--window-size=1280,1100",
            "--virtual-time-budget=15000",
            &format!("--screenshot={}", path.display()),
        ],
    );
    let png = std::fs::read(&path).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} is not a real screenshot ({} bytes)",
        path.display(),
        png.len()
    );
    path
}

/// `text` as a URL query value.
fn q(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// How often `needle` occurs in `hay`, ignoring ASCII case.
fn count(hay: &str, needle: &str) -> usize {
    hay.to_ascii_lowercase()
        .matches(&needle.to_ascii_lowercase())
        .count()
}

/// One GET over a plain TCP connection: status, headers (lower-case
/// names) and body.
fn get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
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
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The airline documents the tests index: the 12 policies, 8 flights and
/// flight NW8843.
fn airline_docs() -> Vec<String> {
    let text = std::fs::read_to_string(support::repo_root().join("data/airline/docs.jsonl"))
        .expect("data/airline/docs.jsonl");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut docs: Vec<String> = lines.iter().take(20).map(|l| l.to_string()).collect();
    docs.push(
        lines
            .iter()
            .find(|l| l.contains(r#""id": "flight-NW8843""#))
            .expect("flight-NW8843 in the sample data")
            .to_string(),
    );
    docs
}

fn keyed(doc: &str) -> KeyValue {
    let v: serde_json::Value = serde_json::from_str(doc).expect("a JSON document");
    let id = v["id"].as_str().expect("an id").to_string();
    (Some(id.into_bytes()), Some(doc.as_bytes().to_vec()))
}

/// A `Server` hosting tenant `airline` with the repository's airline
/// pipelines (ingest: chunk, hash-embed, index; query: tag the flight,
/// embed, retrieve, prompt, extractive answer), and its admin API.
struct Airline {
    dir: tempfile::TempDir,
    _broker: LocalBroker,
    brokers: String,
    server: Arc<Server>,
    admin: AdminServer,
}

impl Airline {
    fn start() -> Airline {
        support::ensure_plugins();
        let dir = tempfile::tempdir().unwrap();
        let broker = LocalBroker::start(&dir.path().join("broker")).expect("start tansu");
        let brokers = broker.address();
        let root = dir.path().join("tenants");
        let t = support::tenant(
            &root,
            "airline",
            "max_memory_mb = 128\nmax_instances = 16\n",
        );
        // The repository's manifests, plugins named by their built files
        // (a tenant's names resolve from its own directory).
        for m in ["ingest.toml", "query.toml"] {
            let mut text =
                std::fs::read_to_string(support::repo_root().join("pipelines/airline").join(m))
                    .expect("the airline manifests");
            for p in [
                "text-chunker",
                "hash-embedder",
                "regex-tagger",
                "topk-retriever",
                "prompt-template",
                "extractive-generator",
            ] {
                text = text.replace(
                    &format!("plugin = \"{p}\""),
                    &format!("plugin = {:?}", support::plugin(p).display().to_string()),
                );
            }
            support::write(&t.join("pipelines"), m, &text);
        }
        // A generator that writes its answer word by word (the test
        // fixture), to watch an answer stream into the page.
        support::write(
            &t.join("pipelines"),
            "stream.toml",
            &format!(
                r#"name = "stream"
[source]
topic = "stream-questions"
format = "question"
[batch]
linger_ms = 5
[[stage]]
name = "answer"
kind = "generator"
plugin = {:?}
config = {{ pause_ms = 80, words = 12 }}
[sink]
topic = "stream-answers"
"#,
                support::plugin("streaming-generator").display().to_string()
            ),
        );
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
            AdminOptions::new("127.0.0.1:0".parse().unwrap(), None).expect("loopback"),
        )
        .expect("admin");
        Airline {
            dir,
            _broker: broker,
            brokers,
            server,
            admin,
        }
    }

    fn url(&self, query: &str) -> String {
        format!("http://{}/{query}", self.admin.addr())
    }

    /// Produces `records` to airline.docs and waits until ingest consumed
    /// `total` records so far.
    fn feed(&self, records: Vec<KeyValue>, total: u64) {
        support::produce(&self.brokers, "airline.docs", records);
        let t0 = Instant::now();
        loop {
            let s = self.server.status();
            let ingest = s
                .pipelines
                .iter()
                .find(|p| p.figures.pipeline == "ingest")
                .expect("ingest runs");
            if ingest.figures.consumed >= total {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "ingest consumed only {} of {total}",
                ingest.figures.consumed
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn the_console_shows_pipelines_answers_with_citations_and_dead_letters_in_chromium() {
    let browser = chromium();
    let a = Airline::start();
    let mut records: Vec<KeyValue> = airline_docs().iter().map(|d| keyed(d)).collect();
    let n = records.len() as u64;
    // Not a document: a dead letter whose value is markup.
    records.push((
        Some(b"bad-<b>1</b>".to_vec()),
        Some(b"<img src=x onerror=alert(1)>{not a document".to_vec()),
    ));
    a.feed(records, n + 1);

    // The console is the admin server's: the page, its script and sheet
    // with their types, a strict CSP and nosniff on every response; the
    // API stays under /api/.
    let addr = a.admin.addr();
    let (code, h, body) = get(addr, "/");
    assert_eq!(code, 200, "{body}");
    assert_eq!(header(&h, "content-type"), Some("text/html; charset=utf-8"));
    assert!(body.contains("<title>weft console</title>"), "{body}");
    for (path, kind) in [
        ("/console.js", "text/javascript; charset=utf-8"),
        ("/console.css", "text/css; charset=utf-8"),
        ("/api/status", "application/json"),
        ("/nothing-here", "application/json"),
    ] {
        let (code, h, _) = get(addr, path);
        assert_eq!(
            code,
            if path == "/nothing-here" { 404 } else { 200 },
            "{path}"
        );
        assert_eq!(header(&h, "content-type"), Some(kind), "{path}");
    }
    for path in ["/", "/console.js", "/api/status", "/api/nope"] {
        let (_, h, _) = get(addr, path);
        let csp = header(&h, "content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'")
                && csp.contains("script-src 'self'")
                && !csp.contains("unsafe-inline")
                && !csp.contains("unsafe-eval"),
            "{path}: CSP {csp:?}"
        );
        assert_eq!(
            header(&h, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }

    // With a token, the console's files still load (they hold no data and
    // a browser cannot send the token to open a page) but the API wants it.
    let token_file = support::write(a.dir.path(), "token", "a-secret-of-enough-length\n");
    let guarded = AdminServer::start(
        a.server.clone(),
        AdminOptions::new("127.0.0.1:0".parse().unwrap(), Some(&token_file)).expect("token"),
    )
    .expect("admin with a token");
    for (path, want) in [("/", 200), ("/console.js", 200), ("/api/status", 401)] {
        let (code, h, body) = get(guarded.addr(), path);
        assert_eq!(code, want, "{path}: {body}");
        assert!(
            header(&h, "content-security-policy").is_some(),
            "{path}: no CSP"
        );
    }
    drop(guarded);

    let Some(browser) = browser else { return };
    let question = "Is flight NW8843 on time?";
    let url = a.url(&format!("?ask={}&dlq=airline/ingest", q(question)));
    let t0 = Instant::now();
    let dom = dump_dom(&browser, &url);
    let took = t0.elapsed();

    // Both pipelines, with their figures.
    assert!(
        dom.contains(r#"<tr data-pipeline="airline/ingest">"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<tr data-pipeline="airline/query">"#),
        "{dom}"
    );
    assert!(dom.contains("tenant airline"), "{dom}");
    assert!(dom.contains("airline.docs -&gt; index kb"), "{dom}");
    // The question was asked on load and answered: the answer, its
    // citation and the document behind it.
    assert!(dom.contains(r#"<body data-ask="answered""#), "{dom}");
    let answer = dom
        .split(r#"<p class="answer-text" aria-label="answer">"#)
        .nth(1)
        .and_then(|s| s.split("</p>").next())
        .unwrap_or_else(|| panic!("no answer in the page:\n{dom}"));
    assert!(
        answer.contains("NW8843") && answer.contains("Boston"),
        "{answer}"
    );
    assert!(
        dom.contains(r#"<li class="citation"><strong>flight-NW8843</strong> Flight NW8843 status"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<h4>[1] Flight NW8843 status (flight-NW8843)</h4>"#),
        "{dom}"
    );
    assert!(
        dom.contains(
            r#"<p class="doc-text">Flight NW8843 from Boston (BOS) to Amsterdam (AMS) on 2026-12-03"#
        ),
        "{dom}"
    );
    // The dead letter, its markup as text.
    assert!(dom.contains(r#"data-dlq="airline/ingest""#), "{dom}");
    assert!(dom.contains(r#"<tr class="dead-letter">"#), "{dom}");
    assert!(
        dom.contains("&lt;img src=x onerror=alert(1)&gt;{not a document"),
        "{dom}"
    );
    assert!(dom.contains("bad-&lt;b&gt;1&lt;/b&gt;"), "{dom}");
    assert!(dom.contains("source / bad-record"), "{dom}");
    assert_eq!(count(&dom, "<img"), 0, "{dom}");
    assert_eq!(count(&dom, "<b>"), 0, "{dom}");
    eprintln!(
        "console: answered and dumped in {:.1} s",
        took.as_secs_f64()
    );

    let png = screenshot(&browser, &url, "console.png");
    eprintln!("screenshot: {}", png.display());
}

#[test]
fn an_answer_streams_into_the_console_piece_by_piece() {
    let browser = chromium();
    let a = Airline::start();
    let Some(browser) = browser else { return };
    let words = "Passengers with reduced mobility get assistance from check-in to the seat when booked ahead";
    let url = a.url(&format!("?ask={}&pipeline=airline/stream", q(words)));
    let dom = dump_dom(&browser, &url);
    assert!(dom.contains(r#"<body data-ask="answered""#), "{dom}");
    let answer = dom
        .split(r#"<p class="answer-text" aria-label="answer">"#)
        .nth(1)
        .and_then(|s| s.split("</p>").next())
        .unwrap_or_else(|| panic!("no answer in the page:\n{dom}"));
    assert!(
        answer.starts_with("[1] Passengers with reduced mobility"),
        "{answer}"
    );
    // 13 pieces (the marker and 12 words) and the final one, read by the
    // page over many network reads: it was shown while being written.
    let stats = dom
        .split(r#"<p class="muted stream-stats" data-reads=""#)
        .nth(1)
        .unwrap_or_else(|| panic!("no stream figures in the page:\n{dom}"));
    let reads: u32 = stats
        .split('"')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("data-reads is a number");
    assert!(reads >= 5, "only {reads} reads brought pieces: {stats}");
    assert!(
        stats.contains("streamed in 14 piece(s), the first after"),
        "{stats}"
    );
}

#[test]
fn markup_in_a_cited_document_is_shown_as_text_and_never_runs() {
    let browser = chromium();
    let a = Airline::start();
    let hostile = serde_json::json!({
        "id": "policy-hamsters",
        "title": "<script>document.title='pwned'</script>Hamsters <img src=x onerror=alert(1)>",
        "text": "Hamsters travel in the cabin in a ventilated cage <script>document.title='pwned'</script>. \
                 A hamster cage <img src=x onerror=document.title='pwned'> must fit under the seat.",
        "metadata": {"kind": "policy"},
    })
    .to_string();
    let mut records: Vec<KeyValue> = airline_docs().iter().map(|d| keyed(d)).collect();
    records.push(keyed(&hostile));
    let n = records.len() as u64;
    a.feed(records, n);

    let Some(browser) = browser else { return };
    let url = a.url(&format!(
        "?ask={}",
        q("Can hamsters travel in the cabin in a cage?")
    ));
    let dom = dump_dom(&browser, &url);
    assert!(dom.contains(r#"<body data-ask="answered""#), "{dom}");
    // Cited, and shown: title and text as text.
    assert!(
        dom.contains(r#"<li class="citation"><strong>policy-hamsters</strong>"#),
        "the hostile document is not cited:\n{dom}"
    );
    let escaped_title =
        "&lt;script&gt;document.title='pwned'&lt;/script&gt;Hamsters &lt;img src=x onerror=alert(1)&gt;";
    assert!(
        dom.contains(&format!("<h4>[1] {escaped_title} (policy-hamsters)</h4>"))
            || dom.contains(&format!("{escaped_title} (policy-hamsters)</h4>")),
        "{dom}"
    );
    assert!(
        dom.contains("A hamster cage &lt;img src=x onerror=document.title='pwned'&gt; must fit under the seat."),
        "{dom}"
    );
    // No element came from the data: the page's one script tag, no image,
    // and the title is the console's.
    assert_eq!(count(&dom, "<script"), 1, "{dom}");
    assert_eq!(count(&dom, "<img"), 0, "{dom}");
    assert!(dom.contains("<title>weft console</title>"), "{dom}");
    assert!(!dom.contains("<title>pwned"), "{dom}");
}

/// Reads `weft dev`'s stderr into a shared log.
fn tee(r: impl Read + Send + 'static) -> Arc<std::sync::Mutex<String>> {
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let l = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if let Ok(mut g) = l.lock() {
                g.push_str(&line);
                g.push('\n');
            }
        }
    });
    log
}

#[test]
fn weft_dev_serves_the_console_during_the_scenario_and_lingers_for_questions() {
    support::ensure_plugins();
    let browser = chromium();
    let tmp = tempfile::tempdir().unwrap();
    let root = support::repo_root();
    let docs = tmp.path().join("docs.jsonl");
    std::fs::write(&docs, airline_docs().join("\n")).unwrap();
    let questions = tmp.path().join("questions.jsonl");
    std::fs::write(
        &questions,
        r#"{"id": "c1", "text": "Can I bring my cat in the cabin?", "gold_doc": "policy-pets", "expect": "6 kg", "phase": "p"}"#,
    )
    .unwrap();
    let scenario = support::write(
        tmp.path(),
        "scenario.toml",
        &format!(
            "name = \"console\"\npipelines = [{:?}, {:?}]\n\
             [[step]]\nproduce = \"docs.jsonl\"\ninto = \"ingest\"\nlabel = \"documents\"\n\
             [[step]]\nask = \"questions.jsonl\"\ninto = \"query\"\n",
            root.join("pipelines/airline/ingest.toml")
                .display()
                .to_string(),
            root.join("pipelines/airline/query.toml")
                .display()
                .to_string(),
        ),
    );
    let mut child = support::Reaped(
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .current_dir(&root)
            .env("WEFT_CACHE_DIR", support::cache_dir())
            .args(["dev", scenario.to_str().unwrap(), "--dir"])
            .arg(tmp.path().join("dev"))
            .args(["--admin", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weft dev"),
    );
    let stdout = tee(child.stdout.take().expect("stdout"));
    let stderr = tee(child.stderr.take().expect("stderr"));
    let t0 = Instant::now();
    let text = |l: &Arc<std::sync::Mutex<String>>| l.lock().map(|g| g.clone()).unwrap_or_default();
    // The console's address comes first; the run then lingers.
    let addr: SocketAddr = loop {
        let err = text(&stderr);
        if err.contains("every step is done") {
            let line = err
                .lines()
                .find(|l| l.starts_with("console on http://"))
                .unwrap_or_else(|| panic!("no console line:\n{err}"));
            break line["console on http://".len()..]
                .split('/')
                .next()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no address in {line:?}"));
        }
        if let Ok(Some(s)) = child.try_wait() {
            panic!("weft dev ended ({s}) before lingering:\n{err}");
        }
        if t0.elapsed() > Duration::from_secs(240) {
            let _ = child.kill();
            panic!("weft dev did not finish its steps within 240 s:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // The scenario's own question was answered and printed as usual.
    assert!(text(&stdout).contains("Q c1  Can I bring my cat in the cabin?"));
    let (code, _, status) = get(addr, "/api/status");
    assert_eq!(code, 200, "{status}");
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    let ingest = st["pipelines"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["pipeline"] == "ingest"))
        .unwrap_or_else(|| panic!("{st}"));
    assert_eq!(ingest["consumed"], 21, "{ingest}");
    assert_eq!(ingest["condition"], "running", "{ingest}");

    if let Some(browser) = &browser {
        let url = format!("http://{addr}/?ask={}", q("Are cats allowed in the cabin?"));
        let dom = dump_dom(browser, &url);
        assert!(dom.contains(r#"<body data-ask="answered""#), "{dom}");
        assert!(
            dom.contains(r#"<tr data-pipeline="airline/query">"#),
            "{dom}"
        );
        assert!(
            dom.contains(r#"<li class="citation"><strong>policy-pets</strong>"#),
            "{dom}"
        );
        assert!(
            dom.contains("Cats and small dogs may travel in the cabin"),
            "{dom}"
        );
    }

    // SIGTERM stops the pipelines and the summary is printed as without --admin.
    support::sigterm(&child);
    let t1 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for weft dev") {
            break s;
        }
        if t1.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("weft dev did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}: {}", text(&stderr));
    std::thread::sleep(Duration::from_millis(200));
    let out = text(&stdout);
    assert!(out.contains("== summary (console)"), "{out}");
    assert!(
        out.contains("index freshness (document produced -> searchable): p50 "),
        "{out}"
    );
    assert!(
        !out.contains("p50 - ms"),
        "freshness lost while lingering:\n{out}"
    );
}

//! Tenant isolation, proven per host interface (issue 10 §4). Tenants `a`
//! and `b` share one process (`Server` or one `Host`); every test is an
//! attack by `a` on `b` through one interface, and asserts both that the
//! attack fails with a clear, located error and that `b` is unaffected (its
//! data still where it was, its pipelines still running). Each assertion
//! names what `b` has, so that removing the mechanism (the tenant prefix of
//! topics, the tenant in the index path, per-stage state, per-tenant
//! policies and accounts) would make the test fail rather than pass
//! vacuously.
//!
//! Not covered here: tables and metrics labels (issues 12 and 13) do not
//! exist yet. Memory, instance and index quotas per tenant are attacked in
//! `tests/quotas.rs`; this file adds the state quota through the `Host`
//! path `weft serve` uses.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use weft::manifest::{line_col, Manifest};
use weft::pipeline::Pipeline;
use weft::policy::Policy;
use weft::record::{question_json, Payload};
use weft::service::serve::{ServeOptions, Server};
use weft::service::tenants::{check_tree, TenantCheck};
use weft::service::Host;
use weft::stream::broker::LocalBroker;
use weft::stream::kafka::KeyValue;

/// Writes `text` as `<tenant dir>/pipelines/<file>`.
fn pipeline_file(tenant_dir: &Path, file: &str, text: &str) -> PathBuf {
    support::write(&tenant_dir.join("pipelines"), file, text)
}

/// A one-stage transform pipeline `name` around `plugin`; `top` goes before
/// `[source]`, `stage` inside the stage, `bottom` after `[sink]`.
fn transform(name: &str, source: &str, sink: &str, plugin: &Path, parts: [&str; 3]) -> String {
    let [top, stage, bottom] = parts;
    format!(
        "name = \"{name}\"\n{top}[source]\ntopic = \"{source}\"\n[batch]\nmax_records = 20\nlinger_ms = 20\n\
         [[stage]]\nname = \"s\"\nkind = \"transform\"\nplugin = \"{}\"\nlimits = {{ memory_mb = 32, timeout_ms = 5000 }}\n{stage}\
         [sink]\ntopic = \"{sink}\"\n{bottom}",
        plugin.display()
    )
}

/// `file:line:col: ` of the first occurrence of `needle` in the manifest
/// `file`: where the diagnostic of the value `needle` must point.
fn at(file: &Path, needle: &str) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in {text}"));
    let (line, col) = line_col(&text, offset);
    format!("{}:{line}:{col}: ", file.display())
}

fn checks(root: &Path) -> Vec<TenantCheck> {
    check_tree(&support::runtime(), root).expect("the tenants tree is readable")
}

fn ok_names(c: &TenantCheck) -> Vec<&str> {
    c.ok.iter().map(|c| c.manifest.name.as_str()).collect()
}

/// Asserts that `problems` holds, for each `(file, needle, message)`, the
/// line `file:line:col: message...` pointing at `needle`, and nothing else.
fn assert_refusals(problems: &[String], expected: &[(PathBuf, &str, String)]) {
    for (file, needle, message) in expected {
        let want = format!("{}{message}", at(file, needle));
        assert!(
            problems.iter().any(|p| p.starts_with(&want)),
            "missing refusal\n  {want}\nin\n  {}",
            problems.join("\n  ")
        );
    }
    assert_eq!(
        problems.len(),
        expected.len(),
        "one refusal per attack: {problems:#?}"
    );
}

/// The first `n` keys of `topic` (waits for a count, not for silence: a
/// fresh reader's group join can take tansu seconds).
fn read_keys(brokers: &str, topic: &str, n: usize) -> Vec<String> {
    support::read_first(brokers, topic, n)
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.key.unwrap_or_default()).into_owned())
        .collect()
}

/// Topics: every way a manifest in `a`'s directory can name one of `b`'s
/// topics (its source, sink or dead-letter topic, in any case, through a
/// malformed name, by claiming `tenant = "b"`) is refused by `weft check
/// --tenants` and by `weft serve` (start and reload), at the value's
/// `file:line:col`; `b`'s pipeline runs and its topic carries exactly its
/// own records.
#[test]
fn a_cannot_name_bs_topics_in_check_start_or_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tenants");
    let a = support::tenant(&root, "a", "max_instances = 16\n");
    let b = support::tenant(&root, "b", "max_instances = 16\n");
    let noop = support::plugin("noop-transform");
    pipeline_file(
        &b,
        "p.toml",
        &transform("p", "in", "out", &noop, ["", "", ""]),
    );
    // a's own pipeline, which must keep passing: the checks refuse the
    // attacks, not the tenant.
    pipeline_file(
        &a,
        "fine.toml",
        &transform("fine", "in", "out", &noop, ["", "", ""]),
    );

    let other = |name: &str| {
        format!(
            "topic `{name}` belongs to tenant `{}`; this pipeline is tenant `a` and may only name its own topics",
            name.split('.').next().unwrap()
        )
    };
    let malformed = |name: &str| {
        format!("topic `{name}`: empty name between dots (`..`, or a leading or trailing dot)")
    };
    // (file, source, sink, extra parts, the value the refusal points at, message)
    #[allow(clippy::type_complexity)]
    let attacks: Vec<(&str, &str, &str, [&str; 3], &str, String)> = vec![
        ("src-b.toml", "b.in", "out", ["", "", ""], "\"b.in\"", other("b.in")),
        ("src-upper.toml", "B.in", "out", ["", "", ""], "\"B.in\"", other("B.in")),
        ("sink-b.toml", "in", "b.out", ["", "", ""], "\"b.out\"", other("b.out")),
        ("double-dot.toml", "a..in", "out", ["", "", ""], "\"a..in\"", malformed("a..in")),
        ("up-dir.toml", "../b.in", "out", ["", "", ""], "\"../b.in\"", malformed("../b.in")),
        ("leading-dot.toml", ".in", "out", ["", "", ""], "\".in\"", malformed(".in")),
        ("trailing-dot.toml", "in", "out.", ["", "", ""], "\"out.\"", malformed("out.")),
        ("own-trailing-dot.toml", "a.in.", "out", ["", "", ""], "\"a.in.\"", malformed("a.in.")),
        // b's dead letters: read as a source, or written as a's sink or as
        // a's dead-letter topic.
        ("src-b-dl.toml", "b.p.dead-letters", "out", ["", "", ""], "\"b.p.dead-letters\"", other("b.p.dead-letters")),
        ("sink-b-dl.toml", "in", "b.p.dead-letters", ["", "", ""], "\"b.p.dead-letters\"", other("b.p.dead-letters")),
        ("dl-b.toml", "in", "out", ["", "", "[dead_letter]\ntopic = \"b.p.dead-letters\"\n"], "\"b.p.dead-letters\"", other("b.p.dead-letters")),
        ("claims-b.toml", "in", "out", ["tenant = \"b\"\n", "", ""], "\"b\"",
         "tenant `b` disagrees with the directory: this manifest lives in tenant `a`'s directory, so it runs as `a`".to_string()),
    ];
    let mut expected = Vec::new();
    for (i, (file, source, sink, parts, needle, message)) in attacks.iter().enumerate() {
        let name = format!("attack{i}");
        let path = pipeline_file(&a, file, &transform(&name, source, sink, &noop, *parts));
        expected.push((path, *needle, message.clone()));
    }

    // weft check --tenants.
    let c = checks(&root);
    assert_eq!((c[0].tenant.as_str(), c[1].tenant.as_str()), ("a", "b"));
    assert_eq!(ok_names(&c[0]), ["fine"]);
    assert_refusals(&c[0].problems, &expected);
    assert_eq!(ok_names(&c[1]), ["p"]);
    assert!(c[1].problems.is_empty(), "{:?}", c[1].problems);
    assert_eq!(c[1].ok[0].manifest.source_topic, "b.in");

    // weft serve: the same refusals, and b's pipeline starts.
    let broker = LocalBroker::start(&tmp.path().join("broker")).expect("start tansu");
    let brokers = broker.address();
    let host = Host::new(
        Some(support::cache_dir()),
        Policy::default(),
        &tmp.path().join("data"),
    )
    .expect("host");
    let opts = ServeOptions {
        partitions: 1,
        ..ServeOptions::new(&root, &brokers)
    };
    let (server, report) = Server::start(host, opts).expect("serve");
    assert_eq!(report.started, ["a/fine", "b/p"], "{report:?}");
    assert_refusals(&report.refused, &expected);

    // A reload with one more attack (a's dead letters into b's sink topic)
    // refuses it too, and leaves b's pipeline alone.
    let late = pipeline_file(
        &a,
        "late.toml",
        &transform(
            "late",
            "in",
            "out",
            &noop,
            ["", "", "[dead_letter]\ntopic = \"b.out\"\n"],
        ),
    );
    expected.push((late, "\"b.out\"", other("b.out")));
    let report = server.reload().expect("reload");
    assert!(!report.changed(), "{report:?}");
    assert_refusals(&report.refused, &expected);

    // b is unaffected: its topic carries exactly what b's source got.
    let records: Vec<KeyValue> = (0..20)
        .map(|n| (Some(format!("b{n}").into_bytes()), Some(b"hello".to_vec())))
        .collect();
    support::produce(&brokers, "b.in", records);
    let mut keys = read_keys(&brokers, "b.out", 20);
    keys.sort();
    let mut want: Vec<String> = (0..20).map(|n| format!("b{n}")).collect();
    want.sort();
    assert_eq!(keys, want);
    let status = server.stop();
    let bp = status
        .pipelines
        .iter()
        .find(|p| p.tenant == "b")
        .expect("b's pipeline");
    // Ran to the end and stopped when asked (not failed, not paused).
    assert_eq!(bp.state, "stopped", "{bp:?}");
    assert_eq!(bp.figures.dead_letters, 0, "{bp:?}");
}

/// An ingest pipeline of the tenant whose directory it is written in:
/// chunker, embedder, into index `index`.
fn ingest_text(index: &str) -> String {
    format!(
        "name = \"ingest\"\n[source]\ntopic = \"docs\"\nformat = \"document\"\n\
         [[stage]]\nname = \"chunk\"\nkind = \"chunker\"\nplugin = \"{}\"\nconfig = {{ max_chars = 400, overlap = 0 }}\n\
         [[stage]]\nname = \"embed\"\nkind = \"embedder\"\nplugin = \"{}\"\nconfig = {{ dimension = 64 }}\n\
         [sink]\nindex = \"{index}\"\n",
        support::plugin("text-chunker").display(),
        support::plugin("hash-embedder").display()
    )
}

/// A query pipeline: embedder, then `topk-retriever` on index `index`.
fn query_text(name: &str, index: &str) -> String {
    format!(
        "name = \"{name}\"\n[source]\ntopic = \"questions\"\nformat = \"question\"\n\
         [[stage]]\nname = \"embed\"\nkind = \"embedder\"\nplugin = \"{}\"\nconfig = {{ dimension = 64 }}\n\
         [[stage]]\nname = \"retrieve\"\nkind = \"retriever\"\nplugin = \"{}\"\nindex = \"{index}\"\nconfig = {{ k = 5, mmr_lambda = 1.0 }}\n\
         [sink]\ntopic = \"answers\"\n",
        support::plugin("hash-embedder").display(),
        support::plugin("topk-retriever").display()
    )
}

/// The checked manifest `name` of tenant check `c`.
fn checked(c: &TenantCheck, name: &str) -> Manifest {
    c.ok.iter()
        .find(|m| m.manifest.name == name)
        .unwrap_or_else(|| panic!("`{name}` did not pass: {:?}", c.problems))
        .manifest
        .clone()
}

/// Indexes `docs` (`(id, text)`) through an ingest pipeline and its index sink.
fn ingest(p: &mut Pipeline, docs: &[(&str, &str)]) {
    let items = docs
        .iter()
        .enumerate()
        .map(|(n, (id, text))| {
            let mut it = support::item(
                n as i64,
                &serde_json::json!({"id": id, "text": text}).to_string(),
            );
            it.key = Some(id.as_bytes().to_vec());
            it
        })
        .collect();
    let o = p.process(items);
    assert!(o.dead.is_empty(), "{:?}", o.dead);
    let r = p
        .sink
        .as_ref()
        .expect("an index sink")
        .write(&o)
        .expect("indexed");
    assert_eq!(r.docs_upserted, docs.len() as u64);
}

/// `(doc_id, text)` of every hit the query pipeline retrieves for
/// `question`, and the JSON of the record its sink would write.
fn ask(p: &mut Pipeline, question: &str) -> (Vec<(String, String)>, String) {
    let q = serde_json::json!({"id": "q1", "text": question}).to_string();
    let o = p.process(vec![support::item(1, &q)]);
    assert!(o.dead.is_empty(), "{:?}", o.dead);
    assert_eq!(o.outputs.len(), 1);
    let Payload::Question(q) = &o.outputs[0].payload else {
        panic!("not a question: {:?}", o.outputs[0].payload)
    };
    let hits = q
        .hits
        .iter()
        .map(|h| (h.doc_id.clone(), h.text.clone()))
        .collect();
    (hits, question_json(q).to_string())
}

const B_SECRET: &str =
    "The zebra vault code is 7741-BRAVO; only tenant b knows the zebra vault code.";

/// Index search: `a`'s retriever naming `kb` searches `a`'s `kb`, never
/// `b`'s, although both live in one process under one data directory and
/// `b`'s retriever finds `b`'s documents for the same question; an index
/// name that tries to leave `a`'s directory is refused with its location.
#[test]
fn as_retriever_never_sees_bs_documents() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tenants");
    let a = support::tenant(&root, "a", "max_instances = 16\n");
    let b = support::tenant(&root, "b", "max_instances = 16\n");
    pipeline_file(&b, "ingest.toml", &ingest_text("kb"));
    pipeline_file(&b, "query.toml", &query_text("query", "kb"));
    pipeline_file(&a, "query.toml", &query_text("query", "kb"));
    let bad = "may only contain ASCII letters, digits, `-`, `_` (an index always belongs to the pipeline's tenant)";
    let expected = vec![
        (
            pipeline_file(&a, "up.toml", &query_text("up", "../b/kb")),
            "\"../b/kb\"",
            format!("stage `retrieve`: index `../b/kb` {bad}"),
        ),
        (
            pipeline_file(&a, "slash.toml", &query_text("slash", "b/kb")),
            "\"b/kb\"",
            format!("stage `retrieve`: index `b/kb` {bad}"),
        ),
        (
            pipeline_file(&a, "dots.toml", &query_text("dots", "..")),
            "\"..\"",
            format!("stage `retrieve`: index `..` {bad}"),
        ),
        (
            pipeline_file(
                &a,
                "sink.toml",
                &ingest_text("../b/kb").replace("\"ingest\"", "\"sink\""),
            ),
            "\"../b/kb\"",
            format!("[sink] index `../b/kb` {bad}"),
        ),
    ];
    let c = checks(&root);
    assert_refusals(&c[0].problems, &expected);
    assert_eq!(ok_names(&c[0]), ["query"]);
    assert!(c[1].problems.is_empty(), "{:?}", c[1].problems);

    let host = Host::new(
        Some(support::cache_dir()),
        Policy::default(),
        &tmp.path().join("data"),
    )
    .expect("host");
    let policy = Policy::default();
    let mut b_ingest = host
        .pipeline_for(checked(&c[1], "ingest"), &policy)
        .unwrap();
    ingest(
        &mut b_ingest,
        &[
            ("b-1", B_SECRET),
            ("b-2", "The zebra vault opens at dawn for tenant b staff."),
            ("b-3", "Tenant b's quarterly report on zebra vault audits."),
        ],
    );
    let mut b_query = host.pipeline_for(checked(&c[1], "query"), &policy).unwrap();
    let mut a_query = host.pipeline_for(checked(&c[0], "query"), &policy).unwrap();
    let question = "What is the zebra vault code?";
    // b's documents are there, and found for this question...
    let (b_hits, b_json) = ask(&mut b_query, question);
    assert!(b_json.contains("7741-BRAVO"), "{b_json}");
    assert!(
        b_hits
            .iter()
            .any(|(d, t)| d == "b-1" && t.contains("7741-BRAVO")),
        "{b_hits:?}"
    );
    // ...but not by a, whose `kb` nobody has written.
    let (a_hits, a_json) = ask(&mut a_query, question);
    assert!(a_hits.is_empty(), "a saw {a_hits:?}");
    assert!(
        !a_json.contains("BRAVO") && !a_json.contains("b-1"),
        "{a_json}"
    );
    assert!(!tmp.path().join("data/index/a/kb").exists());

    // Once a has its own `kb`, a's retriever works, and finds only a's.
    pipeline_file(&a, "ingest.toml", &ingest_text("kb"));
    let c = checks(&root);
    let mut a_ingest = host
        .pipeline_for(checked(&c[0], "ingest"), &policy)
        .unwrap();
    ingest(
        &mut a_ingest,
        &[
            ("a-1", "The zebra vault code of tenant a is 1234-ALPHA."),
            ("a-2", "Tenant a keeps its zebra vault in Lisbon."),
        ],
    );
    let mut a_query = host.pipeline_for(checked(&c[0], "query"), &policy).unwrap();
    let (a_hits, a_json) = ask(&mut a_query, question);
    assert!(!a_hits.is_empty());
    assert!(!a_json.contains("BRAVO"), "{a_json}");
    for (doc, text) in &a_hits {
        assert!(doc.starts_with("a-"), "a saw {doc}: {text}");
        assert!(!text.contains("BRAVO"), "a saw b's text: {text}");
    }
    let (b_hits, b_json) = ask(&mut b_query, question);
    assert!(b_json.contains("7741-BRAVO"), "{b_json}");
    assert!(
        b_hits.iter().all(|(d, _)| d.starts_with("b-")),
        "{b_hits:?}"
    );
    assert_eq!(b_hits.len(), 3, "b still has its three documents");
}

/// `hostile` stage `s` of pipeline `p` in the tenant directory `dir`, with
/// extra stage TOML, prepared by `host` under the tenant's policy.
fn hostile(host: &Host, dir: &Path, stage: &str) -> Pipeline {
    let tenant = dir.file_name().unwrap().to_str().unwrap();
    let file = pipeline_file(
        dir,
        "p.toml",
        &transform(
            "p",
            "in",
            "out",
            &support::plugin("hostile"),
            ["", stage, ""],
        ),
    );
    let policy = Policy::load(&dir.join("policy.toml")).expect("policy");
    let m = Manifest::load_in(&file, Some(tenant)).expect("manifest");
    host.pipeline_for(m, &policy).expect("pipeline")
}

fn run_one(p: &mut Pipeline, n: i64, value: &str) -> String {
    let o = p.process(vec![support::item(n, value)]);
    assert!(o.dead.is_empty(), "{:?}", o.dead);
    support::values(&o).join("|")
}

/// State: `a` and `b` run the same pipeline name, stage name and state key
/// (`count`) in one host; each counter counts only its own tenant's calls.
#[test]
fn as_state_and_bs_state_do_not_mix() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tenants");
    let host = support::host(tmp.path());
    let mut pa = hostile(&host, &support::tenant(&root, "a", ""), "");
    let mut pb = hostile(&host, &support::tenant(&root, "b", ""), "");
    assert_eq!(
        (pa.manifest.tenant.as_str(), pb.manifest.tenant.as_str()),
        ("a", "b")
    );
    for n in 1..=3 {
        assert_eq!(run_one(&mut pa, n, "state"), n.to_string());
    }
    // b's first call sees no count: a's three are not visible to b...
    assert_eq!(run_one(&mut pb, 1, "state"), "1");
    // ...and b's write did not touch a's.
    assert_eq!(run_one(&mut pa, 4, "state"), "4");
    assert_eq!(run_one(&mut pb, 2, "state"), "2");
    // a fills 15 keys of 64 KiB; b holds only its counter.
    run_one(&mut pa, 5, "state-fill");
    assert_eq!(pb.stages[0].state_size().0, 1);
    assert_eq!(pa.stages[0].state_size().0, 16);
}

/// Config: a plugin's `config.entries()` is exactly its own stage's
/// manifest config, though `b`'s stage of the same names holds a secret.
#[test]
fn as_plugin_sees_only_as_config() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tenants");
    let host = support::host(tmp.path());
    let mut pa = hostile(
        &host,
        &support::tenant(&root, "a", ""),
        "config = { owner = \"a\", endpoint = \"https://a.example\" }\n",
    );
    let mut pb = hostile(
        &host,
        &support::tenant(&root, "b", ""),
        "config = { owner = \"b\", api_key = \"b-secret\", nested = { token = \"b-token\" } }\n",
    );
    assert_eq!(
        run_one(&mut pb, 1, "config"),
        "api_key=b-secret\nnested.token=b-token\nowner=b"
    );
    assert_eq!(
        run_one(&mut pa, 1, "config"),
        "endpoint=https://a.example\nowner=a"
    );
}

/// Formatted log output captured in memory.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every plugin log event, by its structured fields: `(tenant, message)`.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<(String, String)>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Events {
    fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields(String, String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                match f.name() {
                    "tenant" => self.0 = format!("{v:?}"),
                    "message" => self.1 = format!("{v:?}"),
                    _ => {}
                }
            }
        }
        let mut fields = Fields::default();
        e.record(&mut fields);
        if fields.1.starts_with("plugin: ") {
            self.0.lock().unwrap().push((fields.0, fields.1));
        }
    }
}

/// Logs: a line `a`'s plugin logs that forges a whole host line of `b`'s
/// (newline, timestamp, `tenant=b pipeline=p stage=s`) stays one line,
/// tagged with `a`'s tenant, pipeline and stage; and `a` flooding the log
/// spends only `a`'s budget: `b`'s next line is logged.
#[test]
fn as_log_lines_are_as_and_a_flood_does_not_silence_b() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tenants");
    let host = support::host(tmp.path());
    let mut pa = hostile(&host, &support::tenant(&root, "a", ""), "");
    let mut pb = hostile(&host, &support::tenant(&root, "b", ""), "");
    let text = Buf::default();
    let events = Events::default();
    let subscriber = {
        use tracing_subscriber::layer::SubscriberExt;
        let w = text.clone();
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(move || w.clone())
                    .with_ansi(false),
            )
            .with(events.clone())
    };
    let forged = "2026-11-30T10:00:00.000000Z  INFO weft::runtime::ctx: plugin: routine tenant=b pipeline=p stage=s";
    let t0 = std::time::Instant::now();
    tracing::subscriber::with_default(subscriber, || {
        run_one(&mut pb, 1, "log:b's own line");
        run_one(&mut pa, 1, &format!("log:innocent\n{forged}"));
        // 200,000 lines in one call: a's budget is spent...
        run_one(&mut pa, 2, "log-flood");
        // ...and b's is not.
        run_one(&mut pb, 2, "log:b after a's flood");
    });
    assert!(
        pa.stages[0].logs_dropped() >= 199_000,
        "{}",
        pa.stages[0].logs_dropped()
    );
    assert_eq!(pb.stages[0].logs_dropped(), 0);

    // Attribution by the event's own fields.
    let events = events.0.lock().unwrap().clone();
    let of = |t: &str| -> Vec<&String> {
        events
            .iter()
            .filter(|(tenant, _)| tenant == t)
            .map(|(_, m)| m)
            .collect()
    };
    assert_eq!(
        of("b"),
        ["plugin: b's own line", "plugin: b after a's flood"],
        "b's lines are b's own, in full"
    );
    let a_lines = of("a");
    assert!(a_lines[0].contains("routine tenant=b"), "{a_lines:?}");
    // The burst, then 50 lines/s while the flood lasted.
    let bound = 1 + 200 + 50 * (t0.elapsed().as_secs() as usize + 1);
    assert!(
        a_lines.len() <= bound,
        "{} lines over {bound}",
        a_lines.len()
    );
    assert_eq!(
        events.len(),
        a_lines.len() + 2,
        "every plugin line has a tenant"
    );

    // And in the text a person or a log shipper reads: the forged line is
    // not a line of its own, and the line it is in ends with a's tags.
    let text = String::from_utf8(text.0.lock().unwrap().clone()).unwrap();
    let with_forgery: Vec<&str> = text.lines().filter(|l| l.contains("routine")).collect();
    assert_eq!(with_forgery.len(), 1, "{text}");
    let line = with_forgery[0];
    assert!(
        line.contains("plugin: innocent\\n2026-11-30T10:00:00"),
        "{line}"
    );
    assert!(line.ends_with("tenant=a pipeline=p stage=s"), "{line}");
    // The first tags of the line are a's too (they open it, before the
    // message), so a reader that takes the first `tenant=` is not fooled.
    let first = line.find("tenant=").map(|i| &line[i..i + 8]);
    assert_eq!(first, Some("tenant=a"), "{line}");
    for l in text.lines() {
        assert!(
            !l.starts_with("2026-11-30T10:00:00"),
            "a forged line of its own: {l}"
        );
        if l.ends_with("tenant=b pipeline=p stage=s") {
            assert!(
                l.contains("plugin: b's own line") || l.contains("plugin: b after a's flood"),
                "{l}"
            );
        }
    }
}

/// Files and HTTP: a file grant from `a`'s manifest into `b`'s directory
/// (by a relative path, or through a symlink in `a`'s own directory) is
/// refused by `a`'s policy, which names the rule's line; an outbound host
/// `a`'s policy does not allow is refused although `b`'s policy allows it
/// and `b`'s identical manifest passes. Policies are per tenant.
#[test]
fn as_file_and_http_grants_are_bounded_by_as_own_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tenants");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let a = support::tenant(
        &root,
        "a",
        &format!(
            "allowed_outbound_hosts = [\"a.example.com\"]\nallowed_file_roots = [\"{}\"]\n",
            root.join("a").display()
        ),
    );
    let b = support::tenant(
        &root,
        "b",
        &format!(
            "allowed_outbound_hosts = [\"b.example.com\"]\nallowed_file_roots = [\"{}\"]\n",
            root.join("b").display()
        ),
    );
    std::fs::create_dir_all(b.join("data")).unwrap();
    std::fs::write(b.join("data/secret.txt"), "b's secret").unwrap();
    std::fs::create_dir_all(a.join("models")).unwrap();
    std::os::unix::fs::symlink(b.join("data"), a.join("pipelines/models")).unwrap();
    let hostile = support::plugin("hostile");
    let http = support::plugin("hostile-http");
    let files = |host: &str| {
        format!("grants = {{ files = [{{ host = \"{host}\", guest = \"/data\" }}] }}\n")
    };
    let out_b = "grants = { outbound_hosts = [\"https://b.example.com\"] }\n";
    // a's controls pass: its own directory, its own host.
    let own = [
        ("own-files.toml", &hostile, files("../models")),
        (
            "own-http.toml",
            &http,
            "grants = { outbound_hosts = [\"https://a.example.com\"] }\n".to_string(),
        ),
    ];
    for (file, plugin, stage) in own {
        let name = file.trim_end_matches(".toml").replace('-', "_");
        pipeline_file(
            &a,
            file,
            &transform(&name, "in", "out", plugin, ["", &stage, ""]),
        );
    }
    let mut expected = Vec::new();
    let a_policy = a.join("policy.toml");
    let files_rule = format!(
        "(denied by policy {}:2:1 `allowed_file_roots`)",
        a_policy.display()
    );
    for (file, host) in [("up.toml", "../../b/data"), ("link.toml", "models")] {
        let path = pipeline_file(
            &a,
            file,
            &transform(
                file.trim_end_matches(".toml"),
                "in",
                "out",
                &hostile,
                ["", &files(host), ""],
            ),
        );
        expected.push((
            path,
            "\"s\"",
            format!(
                "stage `s`: file grant `{}` is outside the allowed roots ({}) {files_rule}",
                b.join("data").display(),
                root.join("a").display()
            ),
        ));
    }
    let path = pipeline_file(
        &a,
        "http.toml",
        &transform("http", "in", "out", &http, ["", out_b, ""]),
    );
    expected.push((
        path,
        "\"s\"",
        format!(
            "stage `s`: outbound host `b.example.com` is not allowed (denied by policy {}:1:1 `allowed_outbound_hosts`)",
            a_policy.display()
        ),
    ));
    // b's manifests with the very grants a was refused.
    pipeline_file(
        &b,
        "files.toml",
        &transform("files", "in", "out", &hostile, ["", &files("../data"), ""]),
    );
    pipeline_file(
        &b,
        "http.toml",
        &transform("http", "in", "out", &http, ["", out_b, ""]),
    );

    let c = checks(&root);
    assert_refusals(&c[0].problems, &expected);
    assert_eq!(ok_names(&c[0]), ["own_files", "own_http"]);
    assert!(c[1].problems.is_empty(), "{:?}", c[1].problems);
    assert_eq!(ok_names(&c[1]), ["files", "http"]);
    let b_files = &c[1].ok[0].manifest.stages[0].grants.files;
    assert_eq!(b_files[0].0, b.join("data"));
}

/// Quotas: `a` exhausting its state quota (1 MiB, from `a`'s policy) leaves
/// `b` its whole own quota (2 MiB, from `b`'s), through the accounts `Host`
/// keeps per tenant for `weft serve`. Total memory, instances and indexes
/// per tenant: `tests/quotas.rs`.
#[test]
fn a_exhausting_its_state_quota_leaves_b_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tenants");
    let host = support::host(tmp.path());
    let a = support::tenant(&root, "a", "max_state_mb = 1\n");
    let b = support::tenant(&root, "b", "max_state_mb = 2\n");
    let mut pa = hostile(&host, &a, "");
    let mut pb = hostile(&host, &b, "");
    // Each `state-fill` keeps 15 x 64 KiB under `<record key>-<n>`.
    let fill = 15 * 64 * 1024 + 65;
    run_one(&mut pa, 1, "state-fill");
    let o = pa.process(vec![support::item(2, "state-fill")]);
    assert_eq!(o.dead.len(), 1, "a's second fill is over its 1 MiB");
    let why = &o.dead[0].failure.message;
    assert!(
        why.contains("state of tenant `a`")
            && why.contains(&format!(
                "{}:1:1 `max_state_mb`",
                a.join("policy.toml").display()
            )),
        "{why}"
    );
    let a_account = pa.stages[0].account().clone();
    assert!(a_account.state_used() <= 1 << 20);
    // b, in the same host, fills twice while a is full.
    run_one(&mut pb, 1, "state-fill");
    run_one(&mut pb, 2, "state-fill");
    let b_account = pb.stages[0].account();
    assert!(
        !Arc::ptr_eq(&a_account, b_account),
        "one account per tenant"
    );
    assert_eq!(b_account.state_used(), 2 * fill);
    assert_eq!(b_account.state_limit(), 2 << 20);
    assert_eq!(a_account.state_limit(), 1 << 20);
}

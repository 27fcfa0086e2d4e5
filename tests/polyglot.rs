//! Plugins written in other languages (Python, JavaScript, C compiled with
//! Zig), built from source by `scripts/build-polyglot-plugins` and run in real
//! pipelines through the real `weft` binary, next to the Rust plugins.
//!
//! The toolchains come from `scripts/setup-polyglot`; without them these tests
//! fail (they never skip), saying so.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Builds the non-Rust plugins (once per test binary; the script is incremental).
fn ensure_polyglot() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(support::repo_root().join("scripts/build-polyglot-plugins"))
            .output()
            .map_err(|e| format!("cannot run scripts/build-polyglot-plugins: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    if let Err(e) = built {
        panic!(
            "the polyglot plugins could not be built; if a toolchain is missing, run \
             scripts/setup-polyglot first.\nscripts/build-polyglot-plugins said:\n{e}"
        );
    }
}

/// A built component, Rust or not, e.g. `plugin("py-markdown-chunker")`.
fn plugin(name: &str) -> PathBuf {
    ensure_polyglot();
    support::plugin(name)
}

fn data(rel: &str) -> PathBuf {
    support::repo_root().join("tests/data").join(rel)
}

/// Runs `weft run manifest --input input` in `dir`; returns (outputs, dead
/// letters, stderr), failing the test if weft itself fails.
fn run(dir: &Path, manifest: &str, input: &Path) -> (Vec<Value>, Vec<Value>, String) {
    let m = support::write(dir, "pipeline.toml", manifest);
    let out = dir.join("out.jsonl");
    let r = support::weft(&[
        "run",
        m.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr).into_owned();
    assert!(r.status.success(), "weft run failed:\n{stderr}");
    (
        support::read_jsonl(&out),
        support::read_jsonl(&dir.join("out.dead-letters.jsonl")),
        stderr,
    )
}

/// The handbook (tests/data/handbook/*.md) as document lines, plus one
/// document whose id cannot make chunk ids.
fn handbook_docs(dir: &Path) -> (PathBuf, BTreeMap<String, String>) {
    let mut docs = BTreeMap::new();
    for e in std::fs::read_dir(data("handbook")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            let id = p.file_stem().unwrap().to_string_lossy().into_owned();
            docs.insert(id, std::fs::read_to_string(&p).unwrap());
        }
    }
    let mut lines = String::new();
    for (id, text) in &docs {
        let line = serde_json::json!({"id": id, "text": text, "kind": "handbook"});
        lines.push_str(&format!("{line}\n"));
    }
    lines.push_str("{\"id\": \"bad#id\", \"text\": \"# A\\n\\nbody\"}\n");
    (support::write(dir, "docs.jsonl", &lines), docs)
}

#[test]
fn python_markdown_chunker_feeds_the_rust_embedder() {
    let dir = tempfile::tempdir().unwrap();
    let (input, docs) = handbook_docs(dir.path());
    let manifest = format!(
        r#"name = "handbook"
tenant = "demo"
[source]
topic = "docs"
format = "document"
[[stage]]
name = "chunk"
kind = "chunker"
plugin = "{}"
config = {{ max_chars = 300 }}
[[stage]]
name = "embed"
kind = "embedder"
plugin = "hash-embedder"
config = {{ dimension = 64 }}
[sink]
topic = "chunks"
"#,
        plugin("py-markdown-chunker").display()
    );
    let (chunks, dead, stderr) = run(dir.path(), &manifest, &input);
    assert!(stderr.contains("4 records in"), "{stderr}");

    // The doc id with '#' is the plugin's invalid-input error, dead-lettered.
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["stage"], "chunk");
    assert_eq!(dead[0]["error_kind"], "invalid-input");
    assert!(dead[0]["error"].as_str().unwrap().contains("'#'"));

    let mut by_doc: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for c in &chunks {
        by_doc
            .entry(c["doc_id"].as_str().unwrap())
            .or_default()
            .push(c);
    }
    assert_eq!(by_doc.len(), docs.len(), "every handbook page has chunks");
    for (doc, cs) in &by_doc {
        for (n, c) in cs.iter().enumerate() {
            assert_eq!(c["id"], format!("{doc}#{n}"), "stable chunk ids in order");
            assert_eq!(c["seq"], n);
            let text = c["text"].as_str().unwrap();
            assert!(text.chars().count() <= 300, "max_chars holds: {text:?}");
            assert!(docs[*doc].contains(text), "a chunk is a slice of its doc");
            assert_eq!(c["metadata"]["kind"], "handbook", "doc metadata is carried");
            let v: Vec<f64> = c["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(v.len(), 64, "the Rust embedder ran on the Python chunks");
        }
    }

    // The heading path of the chunk that holds `needle`.
    let section_of = |needle: &str| -> Value {
        let c = chunks
            .iter()
            .find(|c| c["text"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("no chunk contains {needle:?}"));
        c["metadata"].get("section").cloned().unwrap_or(Value::Null)
    };
    assert_eq!(section_of("costs 60 EUR"), "Baggage > Checked bags");
    assert_eq!(section_of("100 ml"), "Baggage > Cabin bags > Liquids");
    assert_eq!(
        section_of("fee is 45 EUR"),
        "Travelling with animals > In the cabin"
    );
    assert_eq!(section_of("shell comment"), "Booking API > Flight status");
    assert_eq!(section_of("status 429"), "Booking API > Rate limits");
    assert_eq!(
        section_of("Partners use"),
        Value::Null,
        "text before any heading"
    );

    // A section longer than max_chars is cut into several chunks, each in it,
    // the first starting with its heading.
    let sports: Vec<&str> = chunks
        .iter()
        .filter(|c| c["metadata"]["section"] == "Baggage > Sports equipment")
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert!(sports.len() >= 3, "{sports:?}");
    assert!(sports[0].starts_with("## Sports equipment\n\nSkis"));
    assert!(sports.iter().all(|t| !t.contains("## Cabin")));
}

#[test]
fn python_chunker_config_errors_and_limits_are_the_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let input = support::write(
        dir.path(),
        "docs.jsonl",
        "{\"id\": \"a\", \"text\": \"# A\\n\\nbody\"}\n{\"id\": \"b\", \"text\": \"# B\\n\\nbody\"}\n",
    );
    let stage = |extra: &str| {
        format!(
            "name = \"t\"\n[source]\ntopic = \"docs\"\nformat = \"document\"\n[[stage]]\nname = \"chunk\"\nkind = \"chunker\"\nplugin = \"{}\"\n{extra}\n[sink]\ntopic = \"out\"\n",
            plugin("py-markdown-chunker").display()
        )
    };
    // A bad config value: every document fails with the plugin's config error.
    let (out, dead, _) = run(dir.path(), &stage("config = { max_chars = 0 }"), &input);
    assert!(out.is_empty());
    assert_eq!(dead.len(), 2);
    for d in &dead {
        assert_eq!(d["error_kind"], "config");
        assert!(d["error"].as_str().unwrap().contains("max_chars"), "{d}");
    }
    // A memory limit below what the Python runtime needs: the host stops it
    // and dead-letters the records, whatever language the plugin is in.
    let (out, dead, _) = run(dir.path(), &stage("limits = { memory_mb = 4 }"), &input);
    assert!(out.is_empty());
    assert_eq!(dead.len(), 2);
    for d in &dead {
        assert_eq!(d["error_kind"], "memory-limit", "{d}");
        assert!(
            d["error"].as_str().unwrap().contains("memory_mb = 4"),
            "{d}"
        );
    }
}

#[test]
fn c_transform_redacts_and_passes_the_rest_through() {
    let dir = tempfile::tempdir().unwrap();
    let input = data("redact/records.jsonl");
    let manifest = support::transform_manifest(
        dir.path(),
        &plugin("zig-transform"),
        "config = { card_mask = \"[card number]\" }",
    );
    let manifest = std::fs::read_to_string(manifest).unwrap();
    let (out, dead, _) = run(dir.path(), &manifest, &input);

    let by_key: BTreeMap<&str, &Value> = out
        .iter()
        .map(|o| (o["key"].as_str().unwrap(), o))
        .collect();
    assert_eq!(out.len(), 8, "{out:#?}");
    let note = |k: &str| by_key[k]["value"]["note"].as_str().unwrap().to_string();
    let redactions = |k: &str| by_key[k]["headers"]["weft.redactions"].clone();

    assert_eq!(note("t1"), "Please write to [email] about my refund.");
    assert_eq!(by_key["t1"]["value"]["amount"], 120.5);
    assert_eq!(redactions("t1"), "1");
    assert_eq!(
        note("t2"),
        "Card [card number] was charged twice; the other one is [card number]."
    );
    assert_eq!(
        by_key["t2"]["value"]["order"], 4111111111111111u64,
        "numbers outside strings are not touched"
    );
    assert_eq!(redactions("t2"), "2");

    // A clean record: value unchanged, headers kept, the count is 0.
    assert_eq!(
        note("t3"),
        "Flight NW123 on 2025-06-01, seat 14C, booking ref 12345678."
    );
    assert_eq!(by_key["t3"]["headers"]["trace-id"], "abc-123");
    assert_eq!(by_key["t3"]["headers"]["source"], "crm");
    assert_eq!(redactions("t3"), "0");

    // Nested values; a host without a dot is no address; a 16-digit card.
    let t4 = &by_key["t4"]["value"];
    assert_eq!(t4["contacts"][0]["email"], "[email]");
    assert_eq!(t4["contacts"][1]["email"], "not-an-address@localhost");
    assert_eq!(t4["nested"]["deep"][0], "call 555-0100");
    assert_eq!(t4["nested"]["deep"][1], "pay with [card number]");
    assert_eq!(redactions("t4"), "2");

    // A tombstone passes through as it is, without the header.
    assert_eq!(by_key["t5"]["value"], Value::Null);
    assert!(by_key["t5"].get("headers").is_none());

    // Keys are left alone; escapes survive; the header is replaced, not doubled.
    let t7 = &by_key["t7"]["value"];
    assert_eq!(t7["ana.lima@example.com"], "keys are left alone");
    assert_eq!(t7["text"], "line one\nmail: [email]");
    assert_eq!(redactions("t7"), "1");

    // Only ASCII address characters count: the non-ASCII start of a local
    // part stays (documented limitation).
    assert_eq!(note("t8"), "Zürich café, reach me at jü[email] or [email]");
    assert_eq!(by_key["t9"]["value"][2], "plain string array with [email]");

    // The line that is not JSON is the plugin's invalid-input error.
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["stage"], "s");
    assert_eq!(dead[0]["error_kind"], "invalid-input");
    assert!(dead[0]["error"]
        .as_str()
        .unwrap()
        .starts_with("record value is not valid JSON"));
    assert_eq!(dead[0]["source"]["offset"], 6);
}

#[test]
fn the_four_redaction_plugins_agree_byte_for_byte() {
    // Rust, C, Python and JavaScript implement the same rules; the benchmark
    // compares them, so they must do exactly the same work.
    let input = data("redact/records.jsonl");
    let mut results = Vec::new();
    for name in [
        "rust-redact-transform",
        "zig-transform",
        "py-redact-transform",
        "js-redact-transform",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let m = support::transform_manifest(dir.path(), &plugin(name), "");
        let (out, dead, _) = run(dir.path(), &std::fs::read_to_string(m).unwrap(), &input);
        let kinds: Vec<Value> = dead.iter().map(|d| d["error_kind"].clone()).collect();
        results.push((name, out, kinds));
    }
    let (first, out0, dead0) = &results[0];
    assert_eq!(out0.len(), 8);
    for (name, out, dead) in &results[1..] {
        assert_eq!(out, out0, "{name} and {first} differ");
        assert_eq!(dead, dead0, "{name} and {first} dead-letter differently");
    }
}

/// The JS prompt builder, alone (to see its messages) and before the Rust
/// extractive generator (to see them used).
#[test]
fn javascript_prompt_builder_numbers_the_context_for_the_generator() {
    let dir = tempfile::tempdir().unwrap();
    let input = data("handbook/questions.jsonl");
    let head = format!(
        r#"name = "ask"
tenant = "demo"
[source]
topic = "questions"
format = "question"
[[stage]]
name = "prompt"
kind = "prompt-builder"
plugin = "{}"
config = {{ max_context_chars = 1000 }}
"#,
        plugin("js-prompt-builder").display()
    );

    let (out, dead, _) = run(
        dir.path(),
        &format!("{head}[sink]\ntopic = \"prompts\"\n"),
        &input,
    );
    assert_eq!(out.len(), 3, "{out:#?}");
    let q = out.iter().find(|q| q["id"] == "q-bag").unwrap();
    let msgs = q["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["role"], "system");
    assert!(msgs[0]["content"].as_str().unwrap().contains("[1] or [2]"));
    assert_eq!(msgs[1]["role"], "user");
    let user = msgs[1]["content"].as_str().unwrap();
    assert!(
        user.starts_with(
            "Context:\n[1] (doc pets; Travelling with animals > In the hold) In the hold"
        ),
        "{user}"
    );
    assert!(
        user.contains("\n\n[2] (doc baggage; Baggage > Checked bags) ## Checked bags In Economy"),
        "{user}"
    );
    assert!(user.ends_with("\n\nQuestion: How much does an extra checked bag cost?"));
    let none = out.iter().find(|q| q["id"] == "q-none").unwrap();
    assert!(none["messages"][1]["content"]
        .as_str()
        .unwrap()
        .contains("(no relevant context was found)"));
    // A blank question is the plugin's invalid-input error.
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["key"], "q-empty");
    assert_eq!(dead[0]["error_kind"], "invalid-input");

    // The budget holds: the context of each prompt fits max_context_chars.
    for q in &out {
        let user = q["messages"][1]["content"].as_str().unwrap();
        let context = user
            .strip_prefix("Context:\n")
            .and_then(|u| u.split("\n\nQuestion: ").next())
            .unwrap();
        assert!(context.chars().count() <= 1000);
    }

    let (answers, _, _) = run(
        dir.path(),
        &format!(
            "{head}[[stage]]\nname = \"generate\"\nkind = \"generator\"\nplugin = \"extractive-generator\"\n[sink]\ntopic = \"answers\"\n"
        ),
        &input,
    );
    let answer = |id: &str| answers.iter().find(|a| a["id"] == id).unwrap();
    let bag = answer("q-bag");
    assert!(bag["answer"].as_str().unwrap().contains("60 EUR"), "{bag}");
    assert!(bag["answer"].as_str().unwrap().contains("[2]"), "{bag}");
    assert_eq!(bag["citations"][0]["doc_id"], "baggage");
    let cat = answer("q-cat");
    assert!(cat["answer"].as_str().unwrap().contains("45 EUR"), "{cat}");
    assert_eq!(cat["citations"][0]["doc_id"], "pets");
    assert!(answer("q-none")["answer"]
        .as_str()
        .unwrap()
        .starts_with("I don't know"));
}

/// The plugins' own unit tests, in their own languages (plain Python, Node and
/// native C), so `cargo test` covers them too.
#[test]
fn polyglot_unit_tests_pass() {
    ensure_polyglot();
    let root = support::repo_root();
    let tools = root.join(".tools");
    let check = |what: &str, cmd: &mut Command| {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for py in ["py-markdown-chunker", "py-redact-transform"] {
        check(
            py,
            Command::new(tools.join("py/bin/python"))
                .args(["-m", "unittest", "--quiet"])
                .current_dir(root.join("plugins").join(py)),
        );
    }
    for js in ["js-prompt-builder", "js-redact-transform"] {
        check(
            js,
            Command::new("node")
                .arg("--test")
                .current_dir(root.join("plugins").join(js)),
        );
    }
    let exe = tempfile::tempdir().unwrap();
    let bin = exe.path().join("test_redact");
    let c = root.join("plugins/zig-transform");
    check(
        "zig cc test_redact.c",
        Command::new(tools.join("py/bin/python"))
            .args(["-m", "ziglang", "cc", "-O1", "-Wall", "-Wextra", "-o"])
            .arg(&bin)
            .arg(c.join("test_redact.c"))
            .arg(c.join("redact.c"))
            .env("ZIG_GLOBAL_CACHE_DIR", tools.join("zig-cache")),
    );
    check("test_redact", &mut Command::new(&bin));
}

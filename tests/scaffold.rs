//! `weft plugin new` and `weft plugin build` through the real `weft` binary:
//! scaffold a project into a temp dir, build it with its language's
//! toolchain, run the README's smoke test (`weft run pipeline.toml --input
//! sample.jsonl --output out.jsonl`) and check what the template promises.
//!
//! The Rust projects share one cargo target dir, target/scaffold-target, so
//! wit-bindgen compiles once rather than in every temp dir (`plugin build`
//! then copies the component to where the project's pipeline.toml looks).
//! The Python and JavaScript projects need the toolchains from
//! scripts/setup-polyglot; without them these tests fail, saying so.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the real `weft` in `dir`, with the tests' compile cache and the
/// shared cargo target dir.
fn weft(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .current_dir(dir)
        .env("WEFT_CACHE_DIR", support::cache_dir())
        .env(
            "CARGO_TARGET_DIR",
            support::repo_root().join("target/scaffold-target"),
        )
        .output()
        .expect("running weft")
}

/// stdout and stderr of a run that must have succeeded.
fn ok(out: &Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// stderr of a run that must have failed.
fn fails(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{what} should have failed:\n{stderr}"
    );
    stderr
}

/// What one scaffold gave.
struct Scaffold {
    project: PathBuf,
    build_output: String,
    outputs: Vec<Value>,
    dead: Vec<Value>,
}

/// `weft plugin new <kind> <name> --lang <lang> --dir <tmp>`, `weft plugin
/// build <project>`, then the smoke test in the project.
fn scaffold(tmp: &Path, kind: &str, name: &str, lang: &str) -> Scaffold {
    let dir = tmp.to_str().unwrap();
    let args = ["plugin", "new", kind, name, "--lang", lang, "--dir", dir];
    ok(&weft(tmp, &args), "weft plugin new");
    let project = tmp.join(name);
    let build = weft(&project, &["plugin", "build", project.to_str().unwrap()]);
    let build_output = ok(&build, "weft plugin build");
    let run = weft(
        &project,
        &[
            "run",
            "pipeline.toml",
            "--input",
            "sample.jsonl",
            "--output",
            "out.jsonl",
        ],
    );
    let summary = ok(&run, "weft run");
    assert!(summary.contains("3 records in"), "{summary}");
    Scaffold {
        outputs: support::read_jsonl(&project.join("out.jsonl")),
        dead: support::read_jsonl(&project.join("out.dead-letters.jsonl")),
        project,
        build_output,
    }
}

/// The transform template's promise: the sample's three records, unchanged
/// but for the header `processed-by: <name>`, other headers kept.
fn assert_transform_output(s: &Scaffold, name: &str) {
    assert!(s.dead.is_empty(), "{:?}", s.dead);
    let keys: Vec<&str> = s
        .outputs
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["order-1", "order-2", "order-3"]);
    for o in &s.outputs {
        assert_eq!(o["headers"]["processed-by"], name, "{o}");
    }
    assert_eq!(
        s.outputs[0]["value"],
        serde_json::json!({"item": "tea", "qty": 2})
    );
    assert_eq!(s.outputs[1]["headers"]["source"], "sample");
    assert_eq!(
        s.outputs[2]["value"],
        Value::Null,
        "the tombstone stays one"
    );
}

/// The questions with hits in the prompt-builder and generator samples.
const Q1_USER: &str =
    "Context:\n[1] (doc baggage) In Economy you may check one bag of up to 23 kg.\n\n\
                       [2] (doc baggage) Cabin bags must fit in the overhead locker.\n\n\
                       Question: How many bags can I check in Economy?";

fn assert_prompt_output(s: &Scaffold) {
    assert!(s.dead.is_empty(), "{:?}", s.dead);
    assert_eq!(s.outputs.len(), 3);
    for o in &s.outputs {
        let m = o["messages"].as_array().unwrap();
        assert_eq!(m.len(), 2, "{o}");
        assert_eq!(m[0]["role"], "system");
        assert!(m[0]["content"].as_str().unwrap().contains("[1]"));
        assert_eq!(m[1]["role"], "user");
    }
    assert_eq!(s.outputs[0]["messages"][1]["content"], Q1_USER);
    let q2 = s.outputs[1]["messages"][1]["content"].as_str().unwrap();
    assert!(
        q2.starts_with(
            "Context:\n[1] (doc pets) The fee is 45 EUR per flight.\n\n[2] (doc pets) Small dogs"
        ),
        "{q2}"
    );
    assert_eq!(
        s.outputs[2]["messages"][1]["content"],
        "Context:\n(no context was found)\n\nQuestion: Is there a lounge in Lisbon?"
    );
}

#[test]
fn rust_transform_scaffold_passes_records_through_with_its_header() {
    let tmp = tempfile::tempdir().unwrap();
    let s = scaffold(tmp.path(), "transform", "hello-transform", "rust");
    assert_transform_output(&s, "hello-transform");

    // A standalone crate, with the contract and the README's two commands.
    let p = &s.project;
    let cargo_toml = std::fs::read_to_string(p.join("Cargo.toml")).unwrap();
    assert!(cargo_toml.contains("\n[workspace]\n"), "{cargo_toml}");
    assert!(cargo_toml.contains("wit-bindgen = \"0.46\""));
    assert!(cargo_toml.contains("crate-type = [\"cdylib\"]"));
    let wit = std::fs::read_to_string(p.join("wit/weft.wit")).unwrap();
    let ours = std::fs::read_to_string(support::repo_root().join("wit/weft.wit")).unwrap();
    assert_eq!(wit, ours);
    let readme = std::fs::read_to_string(p.join("README.md")).unwrap();
    assert!(readme.contains("weft plugin build ."));
    assert!(readme.contains("weft run pipeline.toml --input sample.jsonl --output out.jsonl"));

    // cargo built into the shared target dir; the component was copied to
    // where pipeline.toml looks.
    let shared = support::repo_root()
        .join("target/scaffold-target/wasm32-wasip2/release/hello_transform.wasm");
    assert!(shared.is_file());
    assert!(p
        .join("target/wasm32-wasip2/release/hello_transform.wasm")
        .is_file());
    assert!(s.build_output.contains("copied from"), "{}", s.build_output);
}

#[test]
fn rust_chunker_scaffold_makes_one_chunk_per_paragraph() {
    let tmp = tempfile::tempdir().unwrap();
    let s = scaffold(tmp.path(), "chunker", "para-chunker", "rust");
    assert!(s.dead.is_empty(), "{:?}", s.dead);
    let ids: Vec<&str> = s
        .outputs
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "baggage#0",
            "baggage#1",
            "baggage#2",
            "pets#0",
            "pets#1",
            "refunds#0"
        ]
    );
    for c in &s.outputs {
        let id = c["id"].as_str().unwrap();
        let (doc, n) = id.split_once('#').unwrap();
        assert_eq!(c["doc_id"], doc);
        assert_eq!(c["seq"].to_string(), n);
    }
    assert_eq!(
        s.outputs[0]["text"],
        "In Economy you may check one bag of up to 23 kg.\nEach extra bag costs 60 EUR per flight."
    );
    assert_eq!(
        s.outputs[1]["text"],
        "Cabin bags must fit in the overhead locker."
    );
    assert_eq!(
        s.outputs[5]["metadata"]["kind"], "faq",
        "doc metadata is carried"
    );
}

#[test]
fn rust_scaffolds_of_the_other_kinds_build_and_run() {
    let tmp = tempfile::tempdir().unwrap();

    // Embedder: 64-dimensional unit vectors, deterministic.
    let s = scaffold(tmp.path(), "embedder", "bow-embedder", "rust");
    assert!(s.dead.is_empty(), "{:?}", s.dead);
    assert_eq!(s.outputs.len(), 3);
    for c in &s.outputs {
        let v: Vec<f64> = c["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), 64);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }

    // Retriever: it calls index.search on the tenant's index `kb`, created
    // empty on first use, so every question comes out with no hits.
    let s = scaffold(tmp.path(), "retriever", "index-retriever", "rust");
    assert!(s.dead.is_empty(), "{:?}", s.dead);
    assert_eq!(s.outputs.len(), 3);
    for q in &s.outputs {
        assert!(q["id"].is_string(), "{q}");
        assert!(q.get("hits").is_none(), "no hits in an empty index: {q}");
    }

    // Prompt builder: the same messages as the Python and JS templates.
    let s = scaffold(tmp.path(), "prompt-builder", "numbered-prompt", "rust");
    assert_prompt_output(&s);

    // Generator: the best hit, cited.
    let s = scaffold(tmp.path(), "generator", "echo-generator", "rust");
    assert!(s.dead.is_empty(), "{:?}", s.dead);
    let answers: Vec<&str> = s
        .outputs
        .iter()
        .map(|a| a["answer"].as_str().unwrap())
        .collect();
    assert_eq!(
        answers,
        [
            "In Economy you may check one bag of up to 23 kg. [1]",
            "Small dogs and cats may travel in the cabin. [2]",
            "I don't know: no context was retrieved for this question.",
        ]
    );
    assert_eq!(s.outputs[1]["citations"][0]["chunk_id"], "pets#0");
    assert_eq!(s.outputs[2]["citations"], serde_json::json!([]));
}

#[test]
fn python_transform_scaffold_passes_records_through_with_its_header() {
    let tmp = tempfile::tempdir().unwrap();
    let s = scaffold(tmp.path(), "transform", "py-header", "python");
    assert_transform_output(&s, "py-header");
    assert!(s.project.join("build/py-header.wasm").is_file());
}

#[test]
fn js_prompt_builder_scaffold_numbers_the_context() {
    let tmp = tempfile::tempdir().unwrap();
    let s = scaffold(tmp.path(), "prompt-builder", "js-prompt", "js");
    assert_prompt_output(&s);
    assert!(s.project.join("build/js-prompt.wasm").is_file());
}

#[test]
fn new_writes_into_the_current_directory_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(
        &weft(
            tmp.path(),
            &["plugin", "new", "chunker", "here", "--lang", "js"],
        ),
        "weft plugin new",
    );
    assert!(out.contains("weft plugin build ."), "{out}");
    let p = tmp.path().join("here");
    for f in [
        "component.js",
        "build.mjs",
        "package.json",
        "wit/weft.wit",
        "pipeline.toml",
        "sample.jsonl",
        "README.md",
        "weft-plugin.toml",
    ] {
        assert!(p.join(f).is_file(), "{f} is missing");
    }
    let pipeline = std::fs::read_to_string(p.join("pipeline.toml")).unwrap();
    assert!(
        pipeline.contains("plugin = \"build/here.wasm\""),
        "{pipeline}"
    );
    assert!(pipeline.contains("format = \"document\""), "{pipeline}");
}

#[test]
fn new_refuses_to_overwrite_an_existing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = tmp.path().join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("notes.txt"), "mine").unwrap();
    let dir = tmp.path().to_str().unwrap();
    for lang in ["rust", "python"] {
        let args = [
            "plugin",
            "new",
            "transform",
            "taken",
            "--lang",
            lang,
            "--dir",
            dir,
        ];
        let err = fails(&weft(tmp.path(), &args), "weft plugin new over a directory");
        assert!(err.contains("already exists"), "{err}");
        assert!(err.contains("never overwrites"), "{err}");
    }
    let left: Vec<_> = std::fs::read_dir(&taken)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["notes.txt"], "nothing was written into it");
    assert_eq!(
        std::fs::read_to_string(taken.join("notes.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn unknown_kinds_untemplated_languages_and_non_projects_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();

    let err = fails(
        &weft(
            tmp.path(),
            &[
                "plugin",
                "new",
                "summariser",
                "s",
                "--lang",
                "rust",
                "--dir",
                dir,
            ],
        ),
        "an unknown kind",
    );
    assert!(err.contains("unknown stage kind `summariser`"), "{err}");
    assert!(
        err.contains("chunker, embedder, retriever, prompt-builder, generator, transform"),
        "{err}"
    );

    let err = fails(
        &weft(
            tmp.path(),
            &[
                "plugin", "new", "embedder", "e", "--lang", "python", "--dir", dir,
            ],
        ),
        "an untemplated language",
    );
    assert!(
        err.contains("not yet templated for python; use --lang rust"),
        "{err}"
    );

    let err = fails(
        &weft(
            tmp.path(),
            &[
                "plugin",
                "new",
                "transform",
                "Bad Name",
                "--lang",
                "rust",
                "--dir",
                dir,
            ],
        ),
        "a bad name",
    );
    assert!(err.contains("invalid plugin name `Bad Name`"), "{err}");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing was created"
    );

    let err = fails(
        &weft(tmp.path(), &["plugin", "build", dir]),
        "building a non-project",
    );
    assert!(err.contains("is not a plugin project"), "{err}");
    assert!(err.contains("weft plugin new"), "{err}");
}

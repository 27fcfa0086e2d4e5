//! Golden tests for `weft check`: each tests/manifests/<case>.toml is checked
//! by the real binary and its stderr must equal <case>.err exactly (file,
//! line, column and message). `WEFT_BLESS=1 cargo test --test manifest_check`
//! rewrites the .err files after a deliberate change; review the diff.
//! The repository path is written as `<repo>` in them.

mod support;

use std::path::Path;
use std::process::Command;

fn check(dir: &Path, file: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(dir)
        .args(["check", file])
        .env("WEFT_CACHE_DIR", support::cache_dir())
        .env_remove("WEFT_PLUGIN_PATH")
        .output()
        .expect("running weft check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_manifests_fail_with_their_golden_messages() {
    support::ensure_plugins();
    let dir = support::repo_root().join("tests/manifests");
    let bless = std::env::var_os("WEFT_BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "cases: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let (ok, _, stderr) = check(&dir, case);
        // Paths outside the manifest's directory are absolute: make them portable.
        let stderr = stderr.replace(&support::repo_root().display().to_string(), "<repo>");
        assert!(!ok, "{case} should fail the check");
        let golden = dir.join(case.replace(".toml", ".err"));
        if bless {
            std::fs::write(&golden, &stderr).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if want != stderr {
            failures.push(format!("--- {case}\nwant:\n{want}\ngot:\n{stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shipped_pipelines_pass_the_check() {
    support::ensure_plugins();
    let root = support::repo_root();
    let (ok, stdout, stderr) = check(&root, "pipelines/quickstart.toml");
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("ok: pipelines/quickstart.toml (pipeline `quickstart`, tenant `demo`: demo.docs -> chunk [chunker] -> embed [embedder] -> demo.chunks)"),
        "{stdout}"
    );
    for m in [
        "pipelines/airline/ingest.toml",
        "pipelines/airline/query.toml",
    ] {
        let (ok, stdout, stderr) = check(&root, m);
        assert!(ok, "{m}: {stderr}");
        assert!(stdout.contains("tenant `airline`"), "{stdout}");
    }
    let (_, stdout, _) = check(&root, "pipelines/airline/query.toml");
    assert!(
        stdout.contains("airline.questions -> tag-flight [transform] -> embed [embedder] -> retrieve [retriever] -> prompt [prompt-builder] -> answer [generator] -> airline.answers"),
        "{stdout}"
    );
}

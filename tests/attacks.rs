//! Attacks on the host through the published contract, one per class of
//! resource a plugin can reach (issue 14). Each ran unbounded before the
//! fix; each must now fail only its own record, with a clear reason, while
//! the host stays within its bounds. Real components from
//! tests/fixtures/hostile.

mod support;

use std::time::{Duration, Instant};
use weft::manifest::Manifest;
use weft::pipeline::{BatchOutcome, Pipeline};
use weft::runtime::state::STATE_MAX_BYTES;
use weft::runtime::FailureKind;

/// This process's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn pipeline(dir: &std::path::Path) -> Pipeline {
    let m = support::transform_manifest(
        dir,
        &support::plugin("hostile"),
        "limits = { timeout_ms = 20000, memory_mb = 256 }",
    );
    Pipeline::new(
        &support::runtime(),
        Manifest::load(&m).expect("manifest"),
        None,
    )
    .expect("pipeline")
}

fn run(p: &mut Pipeline, bad: &str) -> BatchOutcome {
    p.process(vec![
        support::item(1, "ok-before"),
        support::item(2, bad),
        support::item(3, "ok-after"),
    ])
}

/// The neighbours flowed and exactly the bad record failed, of `kind`.
fn only_bad_failed(o: &BatchOutcome, kind: FailureKind, words: &str) {
    assert_eq!(support::values(o), vec!["ok-before", "ok-after"]);
    assert_eq!(o.dead.len(), 1, "{:?}", o.dead);
    let f = &o.dead[0].failure;
    assert_eq!(o.dead[0].item.origin.offset, 2);
    assert_eq!(f.kind, kind, "{f}");
    assert!(f.message.contains(words), "{words:?} not in {f}");
}

#[test]
fn state_keys_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path());
    // 64 sets of 1 MiB keys in one call: was 64 MiB of host memory kept for
    // the pipeline's life; now the first is refused and the call fails.
    let o = run(&mut p, "state-keys");
    only_bad_failed(&o, FailureKind::InvalidInput, "exceeds the 1024-byte limit");
    let (entries, bytes) = p.stages[0].state_size();
    assert_eq!(entries, 0, "nothing of the failed call was kept");
    assert!(bytes <= STATE_MAX_BYTES);
}

#[test]
fn state_deletes_of_keys_nobody_stored_hold_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path());
    // 1,000 deletes of 1 MiB keys in one call: was 1 GiB of pending deletes
    // held by the host until the call returned.
    let peak_before = peak_rss_mib();
    let o = run(&mut p, "state-deletes");
    assert_eq!(
        support::values(&o),
        vec!["ok-before", "state-deletes", "ok-after"]
    );
    assert_eq!(p.stages[0].state_size(), (0, 0));
    // Other tests of this binary run alongside and may raise the peak a
    // little; the attack alone used to raise it by a GiB.
    let grew = peak_rss_mib() - peak_before;
    assert!(grew < 600, "peak RSS grew by {grew} MiB");
}

#[test]
fn a_million_empty_records_from_one_input_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path());
    let o = run(&mut p, "many-outputs");
    only_bad_failed(
        &o,
        FailureKind::OutputTooLarge,
        "exceed limits.max_outputs = 20000",
    );
}

#[test]
fn a_log_flood_is_rate_limited_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path());
    let t0 = Instant::now();
    let o = run(&mut p, "log-flood");
    assert_eq!(support::values(&o).len(), 3, "logging is not a failure");
    let dropped = p.stages[0].logs_dropped();
    assert!(
        dropped >= 199_000,
        "only {dropped} of 200,000 lines dropped"
    );
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

#[test]
fn a_plugin_cannot_forge_a_host_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let m = support::transform_manifest(dir.path(), &support::plugin("hostile"), "");
    let input = support::write(dir.path(), "in.jsonl", "log-forge\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "run",
            m.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ])
        .args([
            "--output",
            dir.path().join("out.jsonl").to_str().unwrap(),
            "--quiet",
        ])
        .env("WEFT_CACHE_DIR", support::cache_dir())
        .env("WEFT_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .expect("run weft");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("FORGED"),
        "the plugin's line is logged: {stderr}"
    );
    for line in stderr.lines() {
        assert!(
            !line.trim_start().starts_with("2026-11-30T10:00:00"),
            "a forged line reached the log on its own: {line}"
        );
        if line.contains("FORGED") {
            assert!(line.contains("plugin:") && line.contains("stage"), "{line}");
        }
    }
}

#[test]
fn a_50_mb_error_message_is_cut_before_any_sink_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path());
    let o = run(&mut p, "huge-error");
    only_bad_failed(
        &o,
        FailureKind::InvalidInput,
        "truncated, 52428800 bytes in all",
    );
    assert!(o.dead[0].failure.message.len() < 5000);
    // And through the file runner: the dead-letter file stays small.
    let m = support::transform_manifest(dir.path(), &support::plugin("hostile"), "");
    let input = support::write(dir.path(), "in.jsonl", "huge-error\n");
    let dlq = dir.path().join("out.dead-letters.jsonl");
    let out = support::weft(&[
        "run",
        m.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        dir.path().join("out.jsonl").to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = std::fs::metadata(&dlq).expect("dead letters").len();
    assert!(size < 20_000, "dead-letter file is {size} bytes");
}

#[test]
fn a_wrong_result_count_does_not_take_the_neighbours_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path());
    // The batch call returns 2 results for 3 inputs; replayed one by one,
    // every input succeeds (it was the batch answer that was wrong).
    let o = run(&mut p, "short-count");
    assert!(o.dead.is_empty(), "{:?}", o.dead);
    assert_eq!(
        support::values(&o),
        vec!["ok-before", "short-count", "ok-after"]
    );
}

/// The core module of a transform component whose every call grows a
/// funcref table by 100 million entries (800 MB of host memory) before it
/// traps.
const TABLE_BOMB: &str = r#"
  (core module $m
    (table $t 1 funcref)
    (memory (export "memory") 1)
    {BUMP_REALLOC}
    (func (export "transform") (param i32 i32) (result i32)
      (drop (table.grow $t (ref.null func) (i32.const 100000000)))
      unreachable))
"#;

#[test]
fn tables_count_as_memory() {
    let dir = tempfile::tempdir().unwrap();
    let core = TABLE_BOMB.replace("{BUMP_REALLOC}", support::BUMP_REALLOC);
    let plugin = support::transform_component(dir.path(), "table_bomb.wasm", &core);
    let m = support::transform_manifest(dir.path(), &plugin, "limits = { memory_mb = 128 }");
    let mut p = Pipeline::new(
        &support::runtime(),
        Manifest::load(&m).expect("manifest"),
        None,
    )
    .expect("the component is a transform");
    let peak_before = peak_rss_mib();
    let o = p.process(vec![support::item(1, "anything")]);
    let grew = peak_rss_mib() - peak_before;
    assert_eq!(o.dead.len(), 1);
    let f = &o.dead[0].failure;
    assert_eq!(f.kind, FailureKind::MemoryLimit, "{f}");
    assert!(f.message.contains("table"), "{f}");
    assert!(grew < 600, "peak RSS grew by {grew} MiB");
}

#[test]
fn a_plugin_path_naming_a_host_file_does_not_echo_its_contents() {
    let dir = tempfile::tempdir().unwrap();
    let secret = support::write(dir.path(), "secret.txt", "root:x:0:0:hunter2\n");
    let m = support::transform_manifest(dir.path(), &secret, "");
    let out = support::weft(&["check", m.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is not a WebAssembly file"), "{stderr}");
    for leak in ["root", "hunter2", "0x72", "0x6f"] {
        assert!(
            !stderr.contains(leak),
            "the error quotes the file ({leak}): {stderr}"
        );
    }
}

#[test]
fn a_policy_with_allowed_plugin_dirs_confines_weft_run_and_check_too() {
    support::ensure_plugins();
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    let elsewhere = dir.path().join("elsewhere");
    let manifests = dir.path().join("manifests");
    for d in [&allowed, &elsewhere, &manifests] {
        std::fs::create_dir_all(d).unwrap();
    }
    for d in [&allowed, &elsewhere] {
        std::fs::copy(support::plugin("noop-transform"), d.join("noop.wasm")).unwrap();
    }
    let policy = support::write(
        dir.path(),
        "policy.toml",
        &format!(
            "allowed_plugin_dirs = [{:?}]\n",
            allowed.display().to_string()
        ),
    );
    let check = |plugin: &std::path::Path| {
        let m = support::transform_manifest(&manifests, plugin, "");
        support::weft(&[
            "--policy",
            policy.to_str().unwrap(),
            "check",
            m.to_str().unwrap(),
        ])
    };
    let ok = check(&allowed.join("noop.wasm"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = check(&elsewhere.join("noop.wasm"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("pipeline.toml:")
            && stderr.contains("is outside the allowed plugin directories")
            && stderr.contains("policy.toml:1:1"),
        "{stderr}"
    );
    // `weft run` loads through the same check.
    let input = support::write(dir.path(), "in.jsonl", "{\"id\":\"a\"}\n");
    let m = support::transform_manifest(&manifests, &elsewhere.join("noop.wasm"), "");
    let run = support::weft(&[
        "--policy",
        policy.to_str().unwrap(),
        "run",
        m.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        dir.path().join("out.jsonl").to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("is outside the allowed plugin directories"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// The core module of a transform component whose start function never
/// returns.
const SLOW_START: &str = r#"
  (core module $m
    (memory (export "memory") 1)
    (func $spin (loop $l (br $l)))
    (start $spin)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 8))
    (func (export "transform") (param i32 i32) (result i32) unreachable))
"#;

#[test]
fn a_start_function_that_never_returns_is_caught_by_check_and_bounded_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = support::transform_component(dir.path(), "slow_start.wasm", SLOW_START);
    let m = support::transform_manifest(dir.path(), &plugin, "limits = { timeout_ms = 300 }");
    let t0 = Instant::now();
    let out = support::weft(&["check", m.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "weft check accepted it: {stderr}");
    assert!(
        stderr.contains("cannot start") && stderr.contains("timeout_ms = 300"),
        "{stderr}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30));
    // At run time each record fails within the deadline, and is counted.
    let mut p = Pipeline::new(
        &support::runtime(),
        Manifest::load(&m).expect("manifest"),
        None,
    )
    .expect("prepares");
    let o = p.process(vec![support::item(1, "a")]);
    assert_eq!(o.dead.len(), 1);
    assert_eq!(
        o.dead[0].failure.kind,
        FailureKind::Timeout,
        "{}",
        o.dead[0].failure
    );
    assert!(
        o.dead[0].failure.message.contains("instantiating"),
        "{}",
        o.dead[0].failure
    );
    assert!(p.stages[0].stats.failures >= 1, "the failure is counted");
}

#[test]
fn a_sleep_in_a_host_call_is_cut_at_the_stage_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let m = support::transform_manifest(
        dir.path(),
        &support::plugin("hostile"),
        "limits = { timeout_ms = 1000 }",
    );
    let mut p = Pipeline::new(&support::runtime(), Manifest::load(&m).unwrap(), None).unwrap();
    // An hour of `std::thread::sleep`: WASI's poll, inside the host, where
    // an epoch deadline cannot reach. The batch fails, then the records
    // are replayed one by one: two calls of about a second each.
    let t0 = Instant::now();
    let o = run(&mut p, "sleep");
    let took = t0.elapsed();
    only_bad_failed(
        &o,
        FailureKind::Timeout,
        "was blocked in a host call (wasi:io/poll",
    );
    assert!(
        o.dead[0]
            .failure
            .message
            .contains("past the stage's deadline (limits.timeout_ms = 1000)"),
        "{}",
        o.dead[0].failure
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn a_transform_with_the_right_version_and_the_wrong_signature_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    // Exports `weft:plugin/transform@0.1.9` (a version this host accepts)
    // whose `transform` takes and returns a u32: not the contract's shape.
    let text = r#"(component
  (core module $m
    (func (export "transform") (param i32) (result i32) local.get 0))
  (core instance $i (instantiate $m))
  (func $transform (param "x" u32) (result u32) (canon lift (core func $i "transform")))
  (instance $exports (export "transform" (func $transform)))
  (export "weft:plugin/transform@0.1.9" (instance $exports)))"#;
    let plugin = dir.path().join("wrong_shape.wasm");
    std::fs::write(&plugin, wat::parse_str(text).expect("component text")).unwrap();
    let m = support::transform_manifest(dir.path(), &plugin, "");
    // What `weft run`, `dev` and `serve` load through.
    let host = weft::service::Host::new(
        Some(support::cache_dir()),
        weft::policy::Policy::default(),
        &dir.path().join("data"),
    )
    .unwrap();
    let err = host
        .pipelines(std::slice::from_ref(&m))
        .err()
        .expect("a component of the wrong shape must not load");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("pipeline.toml:5:8: stage `s`: the plugin cannot start")
            && msg.contains("do not have the contract's types (type mismatch with parameters: expected `list` found `u32`)"),
        "{msg}"
    );
    eprintln!("{msg}");
}

/// A span chunker (`weft:plugin/chunk-spans`) only returns byte ranges; the
/// host builds the chunks. Every bad range fails its own document, named,
/// and an output bomb (a million copies of the text) is refused before the
/// host builds any of it.
#[test]
fn bad_spans_fail_only_their_document_and_an_output_bomb_is_not_built() {
    use weft::record::Payload;
    let dir = tempfile::tempdir().unwrap();
    let m = support::write(
        dir.path(),
        "pipeline.toml",
        &format!(
            "name = \"t\"\n[source]\ntopic = \"in\"\nformat = \"document\"\n[[stage]]\nname = \"split\"\nkind = \"chunker\"\nplugin = \"{}\"\nlimits = {{ max_output_kb = 1024, max_outputs = 10000000 }}\n[sink]\ntopic = \"out\"\n",
            support::plugin("hostile-spans").display()
        ),
    );
    let mut p = Pipeline::new(
        &support::runtime(),
        Manifest::load(&m).expect("manifest"),
        None,
    )
    .expect("pipeline");
    let doc = |id: &str, text: &str| serde_json::json!({ "id": id, "text": text }).to_string();
    // 100 KB of text, a million times over: 100 GB if it were built.
    let bomb = format!("copies:1000000 {}", "x".repeat(100_000));
    let rss_before = peak_rss_mib();
    for (bad, kind, words) in [
        ("past-end", FailureKind::BadOutput, "span 0 (0..9)"),
        ("empty-span", FailureKind::BadOutput, "non-empty range"),
        (
            "mid-char é",
            FailureKind::BadOutput,
            "cuts a UTF-8 character",
        ),
        (
            bomb.as_str(),
            FailureKind::OutputTooLarge,
            "max_output_kb = 1024",
        ),
        ("fail", FailureKind::InvalidInput, "told to fail"),
    ] {
        let o = p.process(vec![
            support::item(1, &doc("a", "ok before")),
            support::item(2, &doc("bad", bad)),
            support::item(3, &doc("c", "ok after")),
        ]);
        let chunks: Vec<(String, String)> = o
            .outputs
            .iter()
            .map(|i| match &i.payload {
                Payload::Chunk(c) => (c.chunk.id.clone(), c.chunk.text.clone()),
                other => panic!("not a chunk: {other:?}"),
            })
            .collect();
        assert_eq!(
            chunks,
            [
                ("a#0".to_string(), "ok before".to_string()),
                ("c#0".to_string(), "ok after".to_string())
            ],
            "{words}"
        );
        assert_eq!(o.dead.len(), 1, "{:?}", o.dead);
        let f = &o.dead[0].failure;
        assert_eq!(o.dead[0].item.origin.offset, 2);
        assert_eq!(f.kind, kind, "{f}");
        assert!(f.message.contains(words), "{words:?} not in {f}");
    }
    let grew = peak_rss_mib() - rss_before;
    assert!(grew < 200, "peak memory grew by {grew} MiB");
    // A wrong result count: the documents are replayed one by one and all
    // three get their chunk.
    let o = p.process(vec![
        support::item(1, &doc("a", "ok before")),
        support::item(2, &doc("b", "short-count")),
        support::item(3, &doc("c", "ok after")),
    ]);
    assert!(o.dead.is_empty(), "{:?}", o.dead);
    assert_eq!(o.outputs.len(), 3);
}

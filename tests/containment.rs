//! A plugin that misbehaves fails its own record, with a clear reason, and
//! the host and the other records go on. Real components, built from
//! tests/fixtures/hostile.

mod support;

use std::time::{Duration, Instant};
use weft::manifest::Manifest;
use weft::pipeline::{BatchOutcome, Pipeline};
use weft::runtime::FailureKind;

fn hostile_pipeline(dir: &std::path::Path) -> Pipeline {
    let m = support::transform_manifest(
        dir,
        &support::plugin("hostile"),
        "limits = { timeout_ms = 300, memory_mb = 32, max_output_kb = 256 }",
    );
    let manifest = Manifest::load(&m).expect("manifest");
    Pipeline::new(&support::runtime(), manifest, None).expect("pipeline")
}

/// Runs `[ok-before, bad, ok-after]` and returns the outcome.
fn sandwich(p: &mut Pipeline, bad: &str) -> BatchOutcome {
    p.process(vec![
        support::item(1, "ok-before"),
        support::item(2, bad),
        support::item(3, "ok-after"),
    ])
}

fn assert_contained(o: &BatchOutcome, kind: FailureKind, words: &str) {
    assert_eq!(
        support::values(o),
        vec!["ok-before", "ok-after"],
        "neighbours flow on"
    );
    assert_eq!(o.dead.len(), 1, "exactly the bad record is dead-lettered");
    let d = &o.dead[0];
    assert_eq!(d.item.origin.offset, 2);
    assert_eq!(d.stage, "s");
    assert_eq!(d.failure.kind, kind, "{}", d.failure);
    assert!(
        d.failure.message.contains(words),
        "message {:?} should mention {words:?}",
        d.failure.message
    );
}

#[test]
fn infinite_loop_is_stopped_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = hostile_pipeline(dir.path());
    let t0 = Instant::now();
    let o = sandwich(&mut p, "loop");
    assert_contained(&o, FailureKind::Timeout, "timeout_ms = 300");
    // Batch attempt + isolated replay: two timeouts, not an endless hang.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[test]
fn unbounded_memory_growth_hits_the_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = hostile_pipeline(dir.path());
    assert_contained(
        &sandwich(&mut p, "alloc"),
        FailureKind::MemoryLimit,
        "memory_mb = 32",
    );
}

#[test]
fn deep_recursion_traps_instead_of_crashing_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = hostile_pipeline(dir.path());
    assert_contained(
        &sandwich(&mut p, "recurse"),
        FailureKind::Trap,
        "stack overflow",
    );
}

#[test]
fn panic_is_reported_with_the_plugins_own_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = hostile_pipeline(dir.path());
    assert_contained(
        &sandwich(&mut p, "panic"),
        FailureKind::Trap,
        "hostile plugin panicked on purpose",
    );
}

#[test]
fn reading_etc_passwd_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = hostile_pipeline(dir.path());
    let o = sandwich(&mut p, "read-passwd");
    assert_contained(&o, FailureKind::InvalidInput, "cannot read /etc/passwd");
    assert!(support::values(&o).iter().all(|v| !v.contains("root:")));
}

#[test]
fn environment_is_empty_unless_granted() {
    std::env::set_var("WEFT_TEST_SECRET", "s3cret");
    let dir = tempfile::tempdir().unwrap();
    let mut p = hostile_pipeline(dir.path());
    let o = p.process(vec![support::item(1, "env")]);
    assert_eq!(
        support::values(&o),
        vec![""],
        "no environment variables are visible"
    );

    let dir = tempfile::tempdir().unwrap();
    let m = support::transform_manifest(
        dir.path(),
        &support::plugin("hostile"),
        "grants = { env = [\"WEFT_TEST_SECRET\"] }",
    );
    let mut p = Pipeline::new(&support::runtime(), Manifest::load(&m).unwrap(), None).unwrap();
    let o = p.process(vec![support::item(1, "env")]);
    assert_eq!(
        support::values(&o),
        vec!["WEFT_TEST_SECRET"],
        "exactly the granted variable"
    );
}

#[test]
fn output_over_the_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = hostile_pipeline(dir.path());
    assert_contained(
        &sandwich(&mut p, "big"),
        FailureKind::OutputTooLarge,
        "max_output_kb = 256",
    );
}

#[test]
fn host_keeps_serving_after_every_kind_of_misbehaviour() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = hostile_pipeline(dir.path());
    let bad = ["loop", "alloc", "recurse", "panic", "read-passwd", "big"];
    let mut batch = Vec::new();
    for (i, b) in bad.iter().enumerate() {
        batch.push(support::item(2 * i as i64, &format!("good-{i}")));
        batch.push(support::item(2 * i as i64 + 1, b));
    }
    let o = p.process(batch);
    assert_eq!(o.dead.len(), bad.len());
    let good: Vec<String> = (0..bad.len()).map(|i| format!("good-{i}")).collect();
    assert_eq!(support::values(&o), good, "every good record, in order");
    // And a later batch runs on a fresh instance as if nothing happened.
    let o = p.process(vec![support::item(100, "after")]);
    assert_eq!(support::values(&o), vec!["after"]);
    assert!(o.dead.is_empty());
}

#[test]
fn headers_key_and_timestamp_flow_through_a_stage_that_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = hostile_pipeline(dir.path());
    let o = p.process(vec![support::item(7, "plain")]);
    let out = &o.outputs[0];
    assert_eq!(out.key.as_deref(), Some(&b"k7"[..]));
    assert_eq!(out.headers, vec![("trace".to_string(), b"t7".to_vec())]);
    assert_eq!(out.timestamp, Some(1_700_000_000_007));
}

#[test]
fn state_survives_instance_recycling_and_stays_per_stage() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = hostile_pipeline(dir.path());
    let o = p.process(vec![
        support::item(1, "state"),
        support::item(2, "panic"),
        support::item(3, "state"),
    ]);
    // The batch traps on `panic` and is replayed item by item: the aborted
    // call's state writes were discarded, so the counter counts each once.
    assert_eq!(
        support::values(&o),
        vec!["1", "2"],
        "the counter outlives the trap"
    );
    let dir2 = tempfile::tempdir().unwrap();
    let mut other = hostile_pipeline(dir2.path());
    assert_eq!(
        support::values(&other.process(vec![support::item(1, "state")])),
        vec!["1"]
    );
}

#[test]
fn weft_run_writes_outputs_dead_letters_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let m = support::transform_manifest(
        dir.path(),
        &support::plugin("hostile"),
        "limits = { timeout_ms = 300 }",
    );
    let input = support::write(
        dir.path(),
        "in.jsonl",
        "{\"key\":\"a\",\"value\":\"fine\"}\nloop\n{\"key\":\"b\",\"value\":\"panic\"}\n",
    );
    let out = dir.path().join("out.jsonl");
    let r = support::weft(&[
        "run",
        m.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{stderr}");
    assert!(
        stderr.contains("3 records in, 1 out, 2 dead-lettered"),
        "{stderr}"
    );
    let outs = support::read_jsonl(&out);
    assert_eq!(outs, vec![serde_json::json!({"key": "a", "value": "fine"})]);
    let dead = support::read_jsonl(&dir.path().join("out.dead-letters.jsonl"));
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["error_kind"], "timeout");
    assert_eq!(dead[0]["source"]["offset"], 2);
    assert_eq!(dead[0]["value"], "loop");
    assert_eq!(dead[1]["error_kind"], "trap");
    assert_eq!(dead[1]["key"], "b");
}

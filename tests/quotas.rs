//! Attacks on the tenant-wide quotas of the operator's policy (issue 10):
//! each one spends a quota through real components, and each must stop at
//! it, with the policy rule named, while another tenant is unaffected.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::BUMP_REALLOC;
use weft::index::{IndexOptions, IndexQuota, IndexRegistry};
use weft::manifest::Manifest;
use weft::pipeline::{BatchOutcome, Pipeline};
use weft::policy::Policy;
use weft::runtime::{FailureKind, Runtime, TenantAccount};

const MIB: u64 = 1 << 20;

/// A policy read from a file, so refusals name `policy.toml:<line>`.
fn policy(dir: &Path, text: &str) -> Policy {
    Policy::load(&support::write(dir, "policy.toml", text)).expect("policy")
}

/// The core module of a transform that starts with `initial` pages of
/// memory, grows it by `grow` pages (64 KiB each) on every call, and spins
/// `spin` loop iterations, then passes every input record through
/// (`ok([record])`, pointing at the record as the host lowered it).
fn core_module(initial: u32, grow: u32, spin: u32) -> String {
    format!(
        r#"
  (core module $m
    (memory (export "memory") {initial})
    {BUMP_REALLOC}
    (func (export "transform") (param i32 i32) (result i32)
      (local $i i32)
      (local $k i32)
      (if (i32.lt_s (memory.grow (i32.const {grow})) (i32.const 0)) (then unreachable))
      (block $done
        (loop $spin
          (br_if $done (i32.ge_u (local.get $i) (i32.const {spin})))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $spin)))
      ;; The inputs are not read again: the next call may reuse their room.
      (global.set $bump (i32.const 1024))
      ;; One result per input at 16 + 16k: ok, a list of the one record
      ;; (records are 32 bytes each in the input list).
      (block $out
        (loop $each
          (br_if $out (i32.ge_u (local.get $k) (local.get 1)))
          (i32.store (i32.add (i32.const 16) (i32.mul (local.get $k) (i32.const 16))) (i32.const 0))
          (i32.store (i32.add (i32.const 20) (i32.mul (local.get $k) (i32.const 16)))
            (i32.add (local.get 0) (i32.mul (local.get $k) (i32.const 32))))
          (i32.store (i32.add (i32.const 24) (i32.mul (local.get $k) (i32.const 16))) (i32.const 1))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br $each)))
      (i32.store (i32.const 0) (i32.const 16))
      (i32.store (i32.const 4) (local.get 1))
      (i32.const 0)))
"#
    )
}

/// A manifest of tenant `tenant` with one transform stage per plugin.
fn manifest(dir: &Path, file: &str, tenant: &str, plugins: &[(&Path, &str)]) -> Manifest {
    let mut text = format!("name = \"p\"\ntenant = \"{tenant}\"\n[source]\ntopic = \"in\"\n");
    for (i, (plugin, extra)) in plugins.iter().enumerate() {
        text.push_str(&format!(
            "[[stage]]\nname = \"s{}\"\nkind = \"transform\"\nplugin = \"{}\"\n{extra}\n",
            i + 1,
            plugin.display()
        ));
    }
    text.push_str("[sink]\ntopic = \"out\"\n");
    Manifest::load(&support::write(dir, file, &text)).expect("manifest")
}

fn for_tenant(rt: &Runtime, m: Manifest, account: &Arc<TenantAccount>) -> Pipeline {
    Pipeline::for_tenant(rt, m, None, account.clone()).expect("pipeline")
}

fn failure(o: &BatchOutcome) -> &weft::runtime::Failure {
    assert_eq!(o.dead.len(), 1, "{:?}", o.dead);
    &o.dead[0].failure
}

#[test]
fn a_tenants_instances_share_its_total_memory_and_another_tenant_is_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), "max_total_memory_mb = 20\n");
    // Each stage grows by 12 MiB, within its own 16 MiB; two of them are
    // 24 MiB, over the tenant's 20.
    let grower = support::transform_component(dir.path(), "grow.wasm", &core_module(1, 192, 0));
    let limits = "limits = { memory_mb = 16 }";
    let rt = support::runtime();
    let a = Arc::new(TenantAccount::from_policy("a", &pol));
    let b = Arc::new(TenantAccount::from_policy("b", &pol));
    let mut pa = for_tenant(
        &rt,
        manifest(
            dir.path(),
            "a.toml",
            "a",
            &[(&grower, limits), (&grower, limits)],
        ),
        &a,
    );
    let mut pb = for_tenant(
        &rt,
        manifest(dir.path(), "b.toml", "b", &[(&grower, limits)]),
        &b,
    );
    let o = pa.process(vec![support::item(1, "x")]);
    let f = failure(&o);
    assert_eq!(o.dead[0].stage, "s2");
    assert_eq!(f.kind, FailureKind::MemoryLimit, "{f}");
    assert!(
        f.message.contains("tenant `a`")
            && f.message.contains("policy.toml:1:1 `max_total_memory_mb`"),
        "{f}"
    );
    // s1 keeps its 12 MiB + 1 page; s2's instance was dropped and gave its
    // bytes back.
    assert_eq!(a.memory_used(), 193 * 64 * 1024);
    assert!(a.memory_used() <= 20 * MIB);
    // Tenant b grows by the same 12 MiB while a holds 12: the process holds
    // 24 MiB, each tenant within its own 20.
    let o = pb.process(vec![support::item(1, "x")]);
    assert!(o.dead.is_empty(), "{:?}", o.dead);
    assert_eq!(b.memory_used(), 193 * 64 * 1024);
    // Dropping a's pipeline gives its memory back.
    drop(pa);
    assert_eq!(a.memory_used(), 0);
}

#[test]
fn an_instance_that_would_take_the_tenant_over_its_total_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), "max_total_memory_mb = 20\n");
    // 12 MiB at instantiation, no growth.
    let big = support::transform_component(dir.path(), "big.wasm", &core_module(192, 0, 0));
    let limits = "limits = { memory_mb = 16 }";
    let a = Arc::new(TenantAccount::from_policy("a", &pol));
    let mut p = for_tenant(
        &support::runtime(),
        manifest(dir.path(), "a.toml", "a", &[(&big, limits), (&big, limits)]),
        &a,
    );
    let o = p.process(vec![support::item(1, "x")]);
    let f = failure(&o);
    assert_eq!(o.dead[0].stage, "s2");
    assert_eq!(f.kind, FailureKind::MemoryLimit, "{f}");
    assert!(
        f.message.contains("instantiating") && f.message.contains("max_total_memory_mb"),
        "{f}"
    );
    assert_eq!(a.memory_used(), 12 * MIB);
    assert_eq!(a.instances(), 1);
}

#[test]
fn a_tenant_cannot_run_more_live_instances_than_its_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), "cpu_weight = 1\nmax_instances = 2\n");
    let noop = support::transform_component(dir.path(), "noop.wasm", &core_module(1, 0, 0));
    let rt = support::runtime();
    let a = Arc::new(TenantAccount::from_policy("a", &pol));
    let mut p = for_tenant(
        &rt,
        manifest(
            dir.path(),
            "a.toml",
            "a",
            &[(&noop, ""), (&noop, ""), (&noop, "")],
        ),
        &a,
    );
    let o = p.process(vec![support::item(1, "x")]);
    let f = failure(&o);
    assert_eq!(o.dead[0].stage, "s3");
    assert_eq!(f.kind, FailureKind::QuotaExceeded, "{f}");
    assert_eq!(f.kind.as_str(), "quota-exceeded");
    assert!(
        f.message.contains("2 live plugin instances")
            && f.message.contains("policy.toml:2:1 `max_instances`"),
        "{f}"
    );
    assert_eq!(a.instances(), 2);
    // Instances are counted while they live: dropping the pipeline frees
    // them, and another pipeline of the tenant can start two.
    drop(p);
    assert_eq!(a.instances(), 0);
    let mut p = for_tenant(
        &rt,
        manifest(dir.path(), "a2.toml", "a", &[(&noop, ""), (&noop, "")]),
        &a,
    );
    assert!(p.process(vec![support::item(1, "x")]).dead.is_empty());
    assert_eq!(a.instances(), 2);
}

#[test]
fn a_tenants_stages_share_its_state_quota_and_deletes_give_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), "max_state_mb = 2\n");
    let hostile = support::plugin("hostile");
    let rt = support::runtime();
    let a = Arc::new(TenantAccount::from_policy("a", &pol));
    let b = Arc::new(TenantAccount::from_policy("b", &pol));
    let mut p1 = for_tenant(
        &rt,
        manifest(dir.path(), "1.toml", "a", &[(&hostile, "")]),
        &a,
    );
    let mut p2 = for_tenant(
        &rt,
        manifest(dir.path(), "2.toml", "a", &[(&hostile, "")]),
        &a,
    );
    let mut pb = for_tenant(
        &rt,
        manifest(dir.path(), "b.toml", "b", &[(&hostile, "")]),
        &b,
    );
    // Each `state-fill` keeps 15 x 64 KiB (0.94 MiB) under its record key.
    // Keys `k1-0` .. `k1-14`: 10 of 4 bytes and 5 of 5.
    let fill = 15 * 64 * 1024 + 65;
    assert!(p1
        .process(vec![support::item(1, "state-fill")])
        .dead
        .is_empty());
    assert!(p2
        .process(vec![support::item(2, "state-fill")])
        .dead
        .is_empty());
    assert_eq!(a.state_used(), 2 * fill);
    // A third fill, in either pipeline, would take the tenant over 2 MiB,
    // though each stage is far from its own 16 MiB.
    let o = p1.process(vec![support::item(3, "state-fill")]);
    let f = failure(&o);
    assert!(
        f.message.contains("state of tenant `a`")
            && f.message.contains("policy.toml:1:1 `max_state_mb`"),
        "{f}"
    );
    // The plugin's `set` was refused at its second key; it reported the
    // error for its record and returned normally, so its first write was
    // committed (as for any plugin error): the tenant stays within 2 MiB
    // and its account matches what its stages hold.
    assert!(a.state_used() <= 2 * MIB, "{}", a.state_used());
    let held = (p1.stages[0].state_size().1 + p2.stages[0].state_size().1) as u64;
    assert_eq!(a.state_used(), held);
    // Tenant b fills as much while a is full.
    assert!(pb
        .process(vec![support::item(1, "state-fill")])
        .dead
        .is_empty());
    assert!(pb
        .process(vec![support::item(2, "state-fill")])
        .dead
        .is_empty());
    assert_eq!(b.state_used(), 2 * fill);
    // Deleting in one stage makes room in the other.
    assert!(p2
        .process(vec![support::item(2, "state-clear")])
        .dead
        .is_empty());
    assert_eq!(a.state_used(), fill + 64 * 1024 + 4, "k1's fill and k3-0");
    assert!(p1
        .process(vec![support::item(3, "state-fill")])
        .dead
        .is_empty());
    assert_eq!(a.state_used(), 2 * fill);
}

/// A document source item keyed by its id (`text: None` = tombstone).
fn doc(n: i64, id: &str, text: Option<&str>) -> weft::record::Item {
    let mut it = match text {
        Some(t) => support::item(n, &serde_json::json!({"id": id, "text": t}).to_string()),
        None => {
            let mut it = support::item(n, "");
            it.payload = weft::record::Payload::Raw(None);
            it
        }
    };
    it.key = Some(id.as_bytes().to_vec());
    it
}

fn ingest_manifest(dir: &Path, tenant: &str) -> Manifest {
    let text = format!(
        "name = \"ingest\"\ntenant = \"{tenant}\"\n[source]\ntopic = \"docs\"\nformat = \"document\"\n\
         [[stage]]\nname = \"chunk\"\nkind = \"chunker\"\nplugin = \"{}\"\nconfig = {{ max_chars = 600, overlap = 0 }}\n\
         [[stage]]\nname = \"embed\"\nkind = \"embedder\"\nplugin = \"{}\"\nconfig = {{ dimension = 384 }}\n\
         [sink]\nindex = \"kb\"\n",
        support::plugin("text-chunker").display(),
        support::plugin("hash-embedder").display()
    );
    Manifest::load(&support::write(dir, &format!("{tenant}.toml"), &text)).expect("manifest")
}

/// Processes `items` and writes them to the pipeline's index sink.
fn ingest(p: &mut Pipeline, items: Vec<weft::record::Item>) -> weft::pipeline::SinkReport {
    let o = p.process(items);
    assert!(o.dead.is_empty(), "{:?}", o.dead);
    p.sink
        .as_ref()
        .expect("an index sink")
        .write(&o)
        .expect("the index writes")
}

fn quota_dead(r: &weft::pipeline::SinkReport) -> Vec<String> {
    r.dead
        .iter()
        .map(|d| {
            assert_eq!(d.failure.kind, FailureKind::QuotaExceeded, "{}", d.failure);
            assert_eq!(d.stage, "index-sink");
            // The dead letter's key is the chunk's, `<doc>#<n>`.
            let key = String::from_utf8_lossy(d.item.key.as_deref().unwrap_or_default());
            key.split('#').next().unwrap_or_default().to_string()
        })
        .collect()
}

#[test]
fn an_index_takes_no_more_documents_than_its_quota_but_deletes_always() {
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), "max_index_documents = 5\n");
    let registry = IndexRegistry::new(&dir.path().join("data"), IndexOptions::default());
    registry.set_quota("a", IndexQuota::from_policy(&pol));
    let rt = support::runtime();
    let a = Arc::new(TenantAccount::from_policy("a", &pol));
    let b = Arc::new(TenantAccount::unlimited("b"));
    let mut pa = Pipeline::for_tenant(&rt, ingest_manifest(dir.path(), "a"), Some(&registry), a)
        .expect("pipeline a");
    let mut pb = Pipeline::for_tenant(&rt, ingest_manifest(dir.path(), "b"), Some(&registry), b)
        .expect("pipeline b");
    let docs = |from: i64, n: i64| -> Vec<weft::record::Item> {
        (from..from + n)
            .map(|i| {
                doc(
                    i,
                    &format!("d{i}"),
                    Some(&format!("document number {i} about flights")),
                )
            })
            .collect()
    };
    let r = ingest(&mut pa, docs(1, 8));
    assert_eq!(r.docs_upserted, 5);
    assert_eq!(quota_dead(&r), vec!["d6", "d7", "d8"]);
    let reason = &r.dead[0].failure.message;
    assert!(
        reason.contains("5 documents") && reason.contains("policy.toml:1:1 `max_index_documents`"),
        "{reason}"
    );
    // A new version of a document it holds adds none: accepted at the quota.
    let r = ingest(&mut pa, vec![doc(20, "d1", Some("a new version of d1"))]);
    assert_eq!((r.docs_upserted, r.dead.len()), (1, 0));
    // Deletes go through at the quota, and make room.
    let r = ingest(&mut pa, vec![doc(21, "d1", None), doc(22, "d2", None)]);
    assert_eq!((r.docs_deleted, r.dead.len()), (2, 0));
    let r = ingest(&mut pa, docs(30, 3));
    assert_eq!(r.docs_upserted, 2);
    assert_eq!(quota_dead(&r), vec!["d32"]);
    let ix = registry.open("a", "kb").unwrap();
    assert_eq!(ix.usage().unwrap().documents, 5);
    // Tenant b's index (no quota set for b) takes all 8.
    let r = ingest(&mut pb, docs(1, 8));
    assert_eq!((r.docs_upserted, r.dead.len()), (8, 0));
}

#[test]
fn an_index_stops_taking_upserts_at_its_byte_quota() {
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), "max_index_mb = 1\n");
    let registry = IndexRegistry::new(&dir.path().join("data"), IndexOptions::default());
    registry.set_quota("a", IndexQuota::from_policy(&pol));
    let rt = support::runtime();
    let a = Arc::new(TenantAccount::from_policy("a", &pol));
    let mut p = Pipeline::for_tenant(&rt, ingest_manifest(dir.path(), "a"), Some(&registry), a)
        .expect("pipeline");
    let ix = registry.open("a", "kb").unwrap();
    let text: String = (0..1500).map(|i| format!("word{i} ")).collect(); // ~13 KB
    let mut accepted = 0;
    let mut refused = Vec::new();
    let mut before_refusal = 0;
    let mut biggest_batch = 0;
    for batch in 0..30i64 {
        let items: Vec<_> = (0..4)
            .map(|i| doc(batch * 4 + i, &format!("d{}", batch * 4 + i), Some(&text)))
            .collect();
        let used = ix.usage().unwrap().bytes;
        let r = ingest(&mut p, items);
        biggest_batch = biggest_batch.max(ix.usage().unwrap().bytes.saturating_sub(used));
        accepted += r.docs_upserted;
        if !r.dead.is_empty() {
            before_refusal = used;
            refused = quota_dead(&r);
            let reason = &r.dead[0].failure.message;
            assert!(
                reason.contains("policy.toml:1:1 `max_index_mb`"),
                "{reason}"
            );
            break;
        }
    }
    assert_eq!(
        refused.len(),
        4,
        "the whole batch over the quota is refused"
    );
    assert!(accepted >= 8, "{accepted} documents before the quota");
    let used = ix.usage().unwrap().bytes;
    assert!(before_refusal >= MIB, "refused at {before_refusal} bytes");
    // Checked per batch: at most one batch past the quota.
    assert_eq!(used, before_refusal, "the refused batch wrote nothing");
    assert!(
        used < MIB + biggest_batch,
        "{used} bytes, batches up to {biggest_batch}"
    );
    // Deletes are still accepted.
    let r = ingest(&mut p, vec![doc(1000, "d0", None), doc(1001, "d1", None)]);
    assert_eq!((r.docs_deleted, r.dead.len()), (2, 0));
    println!("byte quota: {accepted} documents accepted, refused at {before_refusal} bytes (batches up to {biggest_batch} bytes)");
}

#[test]
fn a_tenant_cannot_open_more_indexes_than_its_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), "max_indexes = 1\n");
    let registry = IndexRegistry::new(&dir.path().join("data"), IndexOptions::default());
    registry.set_default_quota(IndexQuota::from_policy(&pol));
    let first = registry.open("a", "kb").unwrap();
    let e = registry
        .open("a", "other")
        .err()
        .expect("a second index is refused");
    let msg = e.to_string();
    assert!(msg.contains("policy.toml:1:1 `max_indexes`"), "{msg}");
    // The one it has still opens, and another tenant has its own count.
    assert!(Arc::ptr_eq(&first, &registry.open("a", "kb").unwrap()));
    drop(first);
    assert!(registry.open("b", "other").is_ok());
}

#[test]
fn a_cpu_heavy_tenant_does_not_delay_another_by_more_than_one_call() {
    let dir = tempfile::tempdir().unwrap();
    // One worker, so every call of either tenant waits for it.
    let rt = support::runtime().with_workers(1);
    let burner =
        support::transform_component(dir.path(), "burn.wasm", &core_module(1, 0, 150_000_000));
    let quick = support::transform_component(dir.path(), "quick.wasm", &core_module(1, 0, 0));
    let heavy = Arc::new(TenantAccount::unlimited("heavy"));
    let light = Arc::new(TenantAccount::unlimited("light"));
    let mut pl = for_tenant(
        &rt,
        manifest(dir.path(), "l.toml", "light", &[(&quick, "")]),
        &light,
    );
    assert!(pl.process(vec![support::item(0, "warm")]).dead.is_empty());
    // Five pipelines of the heavy tenant burn CPU back to back.
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..5)
        .map(|i| {
            let m = manifest(
                dir.path(),
                &format!("h{i}.toml"),
                "heavy",
                &[(&burner, "limits = { timeout_ms = 30000 }")],
            );
            let mut p = for_tenant(&rt, m, &heavy);
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let o = p.process(vec![support::item(1, "burn")]);
                    assert!(o.dead.is_empty(), "{:?}", o.dead);
                }
            })
        })
        .collect();
    while rt.scheduler().usage("heavy").grants < 4 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut waits = Vec::new();
    for i in 0..8 {
        let t0 = Instant::now();
        assert!(pl.process(vec![support::item(i, "quick")]).dead.is_empty());
        waits.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(37));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let h = rt.scheduler().usage("heavy");
    let l = rt.scheduler().usage("light");
    let call = h.busy / h.grants as u32;
    let worst = waits.iter().max().copied().unwrap_or_default();
    println!(
        "heavy: {} calls of {call:?} on average; light: {} calls, worst wall time {worst:?}, longest wait {:?}, waits {waits:?}",
        h.grants, l.grants, l.longest_wait
    );
    assert_eq!(rt.scheduler().peak_running(), 1, "one worker");
    assert!(
        call > Duration::from_millis(50),
        "the heavy calls are heavy: {call:?}"
    );
    // The light tenant waited for the heavy calls (the pool is in effect)...
    assert!(
        l.longest_wait > call / 5,
        "{:?} vs calls of {call:?}",
        l.longest_wait
    );
    // ...but only behind the one in progress (up to two calls' time, as
    // calls vary on a busy machine): first come, first served would queue
    // it behind the calls of all five heavy pipelines.
    assert!(
        l.longest_wait < call * 2,
        "waited {:?} with heavy calls of {call:?}",
        l.longest_wait
    );
    assert!(worst < call * 2 + Duration::from_millis(50), "{worst:?}");
}

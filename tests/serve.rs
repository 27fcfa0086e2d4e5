//! `weft serve`'s library side driven in-process against a real broker:
//! tenants from their directories, refusals that point at the manifest and
//! the policy rule, hot reload without loss, and the circuit breaker.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weft::runtime::Runtime;
use weft::service::serve::{ServeOptions, Server};
use weft::service::tenants::check_tree;
use weft::stream::broker::LocalBroker;
use weft::stream::circuit::CircuitPolicy;
use weft::stream::kafka::KeyValue;

const POLICY: &str = "max_memory_mb = 64\nmax_timeout_ms = 5000\nmax_instances = 4\n";

/// A transform pipeline `name` of the tenant at `dir`, from `<t>.in` to `<t>.out`.
fn transform(dir: &Path, name: &str, plugin: &Path, extra: &str) -> PathBuf {
    let p = dir.join("pipelines").join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\n[source]\ntopic = \"in\"\n[batch]\nmax_records = 50\nlinger_ms = 20\n\
             [[stage]]\nname = \"t\"\nkind = \"transform\"\nplugin = \"{}\"\nlimits = {{ memory_mb = 32, timeout_ms = 2000 }}\n{extra}\
             [sink]\ntopic = \"out\"\n",
            plugin.display()
        ),
    )
    .unwrap();
    p
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_directory_decides_the_tenant_and_refusals_name_manifest_and_policy_lines() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tenants");
    let alpha = support::tenant(&root, "alpha", POLICY);
    let beta = support::tenant(&root, "beta", "# beta's policy\nmax_memory_mb = 16\n");
    let noop = support::plugin("noop-transform");
    // A manifest in beta's directory that claims to be alpha's.
    let p = transform(&beta, "spy", &noop, "");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, format!("tenant = \"alpha\"\n{text}")).unwrap();
    // One that asks for more memory than beta's policy allows.
    transform(&beta, "greedy", &noop, "");
    // One naming an odd topic inside its own prefix.
    let odd = transform(&alpha, "odd", &noop, "");
    let text = std::fs::read_to_string(&odd).unwrap();
    std::fs::write(
        &odd,
        text.replace("topic = \"out\"", "topic = \"alpha..out\""),
    )
    .unwrap();
    transform(&alpha, "fine", &noop, "");

    let checks = check_tree(&Runtime::new(Some(support::cache_dir())).unwrap(), &root).unwrap();
    let alpha_check = &checks[0];
    assert_eq!(alpha_check.tenant, "alpha");
    assert_eq!(alpha_check.ok.len(), 1, "{:?}", alpha_check.problems);
    assert_eq!(alpha_check.ok[0].manifest.tenant, "alpha");
    assert!(
        alpha_check.problems.iter().any(|p| p.contains("odd.toml:")
            && p.contains("`alpha..out`")
            && p.contains("empty name between dots")),
        "{:?}",
        alpha_check.problems
    );
    let beta_check = &checks[1];
    assert!(beta_check.ok.is_empty());
    let problems = beta_check.problems.join("\n");
    assert!(
        problems.contains("spy.toml:1:10: tenant `alpha` disagrees with the directory: this manifest lives in tenant `beta`'s directory"),
        "{problems}"
    );
    // The stage's line in the manifest, and the line of the rule in beta's policy.
    assert!(
        problems.contains("greedy.toml:8:8: stage `t`: limits.memory_mb 32 exceeds the maximum 16 (denied by policy ")
            && problems.contains("beta/policy.toml:2:1 `max_memory_mb`)"),
        "{problems}"
    );
}

#[test]
fn tenant_quota_on_instances_refuses_the_manifest_that_goes_over() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tenants");
    let t = support::tenant(&root, "small", "max_instances = 2\n");
    let noop = support::plugin("noop-transform");
    for n in ["a", "b", "c"] {
        transform(&t, n, &noop, "");
    }
    let checks = check_tree(&Runtime::new(Some(support::cache_dir())).unwrap(), &root).unwrap();
    let names: Vec<&str> = checks[0]
        .ok
        .iter()
        .map(|c| c.manifest.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(checks[0].problems.len(), 1, "{:?}", checks[0].problems);
    assert!(
        checks[0].problems[0].contains("c.toml:1:1: pipeline `c` would bring the tenant's plugin instances to 3, over the maximum 2 (denied by policy")
            && checks[0].problems[0].contains("small/policy.toml:1:1 `max_instances`"),
        "{:?}",
        checks[0].problems
    );
}

/// The tag the reload test's pipeline version `v` puts on every output.
fn tagger(dir: &Path, version: &str, plugin: &Path) {
    transform(
        dir,
        "tag",
        plugin,
        &format!("config = {{ set = {{ version = \"{version}\" }} }}\n"),
    );
}

#[test]
fn ten_hot_reloads_during_a_stream_lose_nothing_and_switch_at_batch_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let broker = LocalBroker::start(&dir.path().join("broker")).expect("start tansu");
    let brokers = broker.address();
    let root = dir.path().join("tenants");
    let t = support::tenant(&root, "rel", POLICY);
    // Two plugin files (the same json-transform component in two copies,
    // so a reload also changes the plugin file the stage loads).
    let plugins = t.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let (pa, pb) = (plugins.join("a.wasm"), plugins.join("b.wasm"));
    std::fs::copy(support::plugin("json-transform"), &pa).unwrap();
    std::fs::copy(support::plugin("json-transform"), &pb).unwrap();
    tagger(&t, "v0", &pa);
    let opts = ServeOptions {
        tenants: root.clone(),
        brokers: brokers.clone(),
        partitions: 2,
        assign: Default::default(),
        circuit: CircuitPolicy::default(),
        grace: Duration::from_secs(30),
    };
    let (server, report) = Server::start(support::host(dir.path()), opts).expect("serve");
    assert_eq!(report.started, ["rel/tag"], "{report:?}");
    assert!(report.refused.is_empty(), "{report:?}");

    const N: usize = 20_000;
    let producer = {
        let brokers = brokers.clone();
        std::thread::spawn(move || {
            // 40 bursts of 500 over about 10 s, so the reloads land mid-stream.
            for burst in 0..40 {
                let records: Vec<KeyValue> = (0..500)
                    .map(|i| {
                        let n = burst * 500 + i;
                        (
                            Some(format!("k{n}").into_bytes()),
                            Some(format!("{{\"n\":{n}}}").into_bytes()),
                        )
                    })
                    .collect();
                support::produce(&brokers, "rel.in", records);
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let consumed = |s: &Server| s.status().pipelines[0].figures.consumed;
    let mut last_consumed = 0;
    for r in 1..=10 {
        // Wait for records to flow under the current version first.
        wait_for("records between reloads", Duration::from_secs(60), || {
            consumed(&server) > last_consumed
        });
        last_consumed = consumed(&server);
        tagger(&t, &format!("v{r}"), if r % 2 == 0 { &pa } else { &pb });
        let report = server.reload().expect("reload");
        assert_eq!(report.swapped, ["rel/tag"], "reload {r}: {report:?}");
        wait_for("the swap", Duration::from_secs(30), || {
            server.status().pipelines[0].reloads == r
        });
    }
    // A broken version is refused and the running one keeps going.
    let good = std::fs::read_to_string(t.join("pipelines/tag.toml")).unwrap();
    std::fs::write(
        t.join("pipelines/tag.toml"),
        good.replace(&pa.display().to_string(), "/nonexistent/plugin.wasm"),
    )
    .unwrap();
    let report = server.reload().expect("reload");
    assert!(
        report.swapped.is_empty() && report.stopped.is_empty(),
        "{report:?}"
    );
    assert!(
        report
            .refused
            .iter()
            .any(|p| p.contains("tag.toml") && p.contains("does not exist")),
        "{report:?}"
    );
    producer.join().unwrap();
    wait_for("every record", Duration::from_secs(120), || {
        consumed(&server) >= N as u64
    });
    let status = server.stop();
    let p = &status.pipelines[0];
    assert_eq!(p.state, "stopped", "{p:?}");
    assert_eq!(p.reloads, 10);
    assert_eq!(p.figures.dead_letters, 0, "{p:?}");

    // Every input has an output; a key seen twice (a replay) has one value.
    // Exactly N records: a replay would have produced more.
    let out = support::read_first(&brokers, "rel.out", N);
    let mut by_key: BTreeMap<String, String> = BTreeMap::new();
    for r in &out {
        let k = String::from_utf8(r.key.clone().unwrap()).unwrap();
        let v = String::from_utf8(r.value.clone().unwrap()).unwrap();
        if let Some(old) = by_key.insert(k.clone(), v.clone()) {
            assert_eq!(old, v, "{k} was produced with two values");
        }
    }
    assert_eq!(by_key.len(), N, "every input has exactly one output value");
    let tag = |v: &str| -> String {
        let j: serde_json::Value = serde_json::from_str(v).unwrap();
        j["version"]
            .as_str()
            .expect("every output is tagged")
            .to_string()
    };
    // In each source partition's order, the tag only changes at a reload:
    // at most 10 changes, never back to an older version.
    let source = support::read_first(&brokers, "rel.in", N);
    let mut parts: BTreeMap<i32, Vec<(i64, u32)>> = BTreeMap::new();
    for r in &source {
        let k = String::from_utf8(r.key.clone().unwrap()).unwrap();
        let v: u32 = tag(&by_key[&k])[1..].parse().unwrap();
        parts.entry(r.partition).or_default().push((r.offset, v));
    }
    let mut versions_seen = std::collections::BTreeSet::new();
    for (partition, mut seq) in parts {
        seq.sort();
        let tags: Vec<u32> = seq.iter().map(|(_, v)| *v).collect();
        assert!(
            tags.windows(2).all(|w| w[0] <= w[1]),
            "partition {partition}: a record got an older version than the one before it"
        );
        let changes = tags.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(changes <= 10, "partition {partition}: {changes} changes");
        versions_seen.extend(tags);
    }
    assert!(
        versions_seen.len() >= 6,
        "the reloads landed mid-stream: versions seen {versions_seen:?}"
    );
}

#[test]
fn a_crash_looping_stage_opens_the_circuit_and_a_reload_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = LocalBroker::start(&dir.path().join("broker")).expect("start tansu");
    let brokers = broker.address();
    let root = dir.path().join("tenants");
    let t = support::tenant(&root, "crash", POLICY);
    let hostile = support::plugin("hostile");
    transform(&t, "p", &hostile, "");
    let opts = ServeOptions {
        tenants: root.clone(),
        brokers: brokers.clone(),
        partitions: 1,
        assign: Default::default(),
        circuit: CircuitPolicy {
            consecutive_failures: 20,
            first_pause: Duration::from_secs(600),
            ..CircuitPolicy::default()
        },
        grace: Duration::from_secs(30),
    };
    let (server, _) = Server::start(support::host(dir.path()), opts).expect("serve");
    // 1,000 records that each make the plugin panic.
    let records: Vec<KeyValue> = (0..1000)
        .map(|n| (Some(format!("k{n}").into_bytes()), Some(b"panic".to_vec())))
        .collect();
    support::produce(&brokers, "crash.in", records);
    wait_for("the circuit to open", Duration::from_secs(60), || {
        server.status().pipelines[0].state.starts_with("paused")
    });
    std::thread::sleep(Duration::from_secs(2));
    let s = server.status().pipelines[0].clone();
    assert!(
        s.state.contains("records in a row failed in a plugin") && s.state.contains("trap"),
        "{s:?}"
    );
    // At most one batch past the threshold, not the whole topic.
    assert!(
        s.figures.dead_letters >= 20 && s.figures.dead_letters <= 70,
        "{s:?}"
    );
    assert_eq!(s.figures.consumed, s.figures.dead_letters);
    // The fix: a plugin that passes records through. The reload closes the
    // circuit and the rest of the topic flows (through the new version).
    transform(&t, "p", &support::plugin("noop-transform"), "");
    let report = server.reload().expect("reload");
    assert_eq!(report.swapped, ["crash/p"], "{report:?}");
    wait_for("the rest of the topic", Duration::from_secs(60), || {
        server.status().pipelines[0].figures.consumed >= 1000
    });
    let s = server.stop().pipelines[0].clone();
    assert_eq!(s.state, "stopped", "{s:?}");
    assert_eq!(s.figures.produced + s.figures.dead_letters, 1000, "{s:?}");
}

fn spawn_serve(root: &Path, brokers: &str, data: &Path, log: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["serve", "--progress-secs", "1", "--partitions", "4"])
        .arg("--tenants")
        .arg(root)
        .args(["--brokers", brokers])
        .arg("--data-dir")
        .arg(data)
        .env("WEFT_CACHE_DIR", support::cache_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawning weft serve")
}

fn sigterm_and_wait(mut c: std::process::Child, log: &Path) {
    support::sigterm(&c);
    let t0 = Instant::now();
    loop {
        if let Some(status) = c.try_wait().unwrap() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert!(status.success(), "weft serve failed:\n{text}");
            assert!(text.contains("stopping: finishing the batches"), "{text}");
            return;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = c.kill();
            panic!("weft serve did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_serve_processes_on_one_directory_share_the_partitions_and_reload_on_edits() {
    let dir = tempfile::tempdir().unwrap();
    let broker = LocalBroker::start(&dir.path().join("broker")).expect("start tansu");
    let brokers = broker.address();
    let root = dir.path().join("tenants");
    let t = support::tenant(&root, "two", POLICY);
    transform(&t, "p", &support::plugin("noop-transform"), "");
    let (log1, log2) = (dir.path().join("one.log"), dir.path().join("two.log"));
    let one = spawn_serve(&root, &brokers, &dir.path().join("d1"), &log1);
    wait_for(
        "the first process to start",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&log1)
                .unwrap_or_default()
                .contains("start: started two/p")
        },
    );
    let two = spawn_serve(&root, &brokers, &dir.path().join("d2"), &log2);
    wait_for(
        "the second process to start",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&log2)
                .unwrap_or_default()
                .contains("start: started two/p")
        },
    );
    // Let the group settle on two members, then feed 4 partitions for ~10 s.
    std::thread::sleep(Duration::from_secs(8));
    const N: usize = 4000;
    for burst in 0..20 {
        let records: Vec<KeyValue> = (0..N / 20)
            .map(|i| {
                let n = burst * (N / 20) + i;
                (
                    Some(format!("k{n}").into_bytes()),
                    Some(format!("v{n}").into_bytes()),
                )
            })
            .collect();
        support::produce(&brokers, "two.in", records);
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = support::read_first(&brokers, "two.out", N);
    let keys: std::collections::BTreeSet<_> = out.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys.len(), N, "every record came out");
    // Both processes watch the directory: an edit is swapped in by each.
    let m = t.join("pipelines/p.toml");
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, text.replace("max_records = 50", "max_records = 40")).unwrap();
    for log in [&log1, &log2] {
        let t0 = Instant::now();
        while !std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("reload (a file changed): swapped in a new version of two/p")
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no reload after the edit:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    sigterm_and_wait(one, &log1);
    sigterm_and_wait(two, &log2);
    let (c1, c2) = (support::consumed(&log1), support::consumed(&log2));
    eprintln!("split: {c1} + {c2}");
    assert!(
        c1 > 0 && c2 > 0 && c1 + c2 >= N as u64,
        "both processes took part: {c1} + {c2} of {N}"
    );
}

#[test]
fn a_tenant_cannot_load_another_tenants_plugin_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tenants");
    let a = support::tenant(&root, "a", POLICY);
    let b = support::tenant(&root, "b", POLICY);
    std::fs::create_dir_all(b.join("plugins")).unwrap();
    std::fs::copy(
        support::plugin("noop-transform"),
        b.join("plugins/private.wasm"),
    )
    .unwrap();
    // b may use its own component; a may not, by a relative path or a link.
    transform(&b, "own", Path::new("../plugins/private.wasm"), "");
    transform(&a, "steal", Path::new("../../b/plugins/private.wasm"), "");
    std::os::unix::fs::symlink(b.join("plugins"), a.join("linked")).unwrap();
    transform(&a, "link", Path::new("../linked/private.wasm"), "");
    let checks = check_tree(&Runtime::new(Some(support::cache_dir())).unwrap(), &root).unwrap();
    let problems = checks[0].problems.join("\n");
    assert!(checks[0].ok.is_empty(), "{problems}");
    for name in ["steal", "link"] {
        assert!(
            problems.contains(&format!("{name}.toml:"))
                && problems.contains("is outside the allowed plugin directories"),
            "{problems}"
        );
    }
    assert!(
        problems.contains("(denied by policy") && problems.contains("`allowed_plugin_dirs`"),
        "{problems}"
    );
    assert_eq!(checks[1].ok.len(), 1, "{:?}", checks[1].problems);
}

#[test]
fn a_tenant_directory_with_an_underscore_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tenants");
    // `a_b.in` and tenant a's `b.in` (`a.b.in`) are one topic to Kafka.
    support::tenant(&root, "a_b", POLICY);
    let ok = support::tenant(&root, "a", POLICY);
    transform(&ok, "p", &support::plugin("noop-transform"), "");
    let checks = check_tree(&Runtime::new(Some(support::cache_dir())).unwrap(), &root).unwrap();
    assert_eq!(checks[0].tenant, "a");
    assert_eq!(checks[0].ok.len(), 1, "{:?}", checks[0].problems);
    assert_eq!(checks[1].tenant, "a_b");
    assert!(
        checks[1].problems[0].contains("tenant `a_b` may not contain `_`"),
        "{:?}",
        checks[1].problems
    );
}

#[test]
fn stopping_is_bounded_by_the_grace_period_when_a_call_runs_long() {
    let dir = tempfile::tempdir().unwrap();
    let broker = LocalBroker::start(&dir.path().join("broker")).expect("start tansu");
    let brokers = broker.address();
    let root = dir.path().join("tenants");
    let t = support::tenant(&root, "hang", "max_timeout_ms = 60000\n");
    // A call allowed a minute that sleeps for it: longer than the grace.
    std::fs::write(
        t.join("pipelines/p.toml"),
        format!(
            "name = \"p\"\n[source]\ntopic = \"in\"\n[[stage]]\nname = \"t\"\nkind = \"transform\"\nplugin = \"{}\"\nlimits = {{ timeout_ms = 60000 }}\n[sink]\ntopic = \"out\"\n",
            support::plugin("hostile").display()
        ),
    )
    .unwrap();
    let opts = ServeOptions {
        partitions: 1,
        grace: Duration::from_secs(3),
        ..ServeOptions::new(&root, &brokers)
    };
    let (server, _) = Server::start(support::host(dir.path()), opts).expect("serve");
    support::produce(
        &brokers,
        "hang.in",
        vec![(Some(b"k".to_vec()), Some(b"sleep".to_vec()))],
    );
    std::thread::sleep(Duration::from_secs(4));
    let t0 = Instant::now();
    let status = server.stop();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(6), "stop took {took:?}");
    let p = &status.pipelines[0];
    assert!(
        p.state
            .contains("did not finish within the 3s grace period")
            && p.state.contains("replayed"),
        "{p:?}"
    );
    assert_eq!(p.figures.consumed, 0, "nothing was committed: {p:?}");
}

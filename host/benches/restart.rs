//! Time from a restart to the first consumption after `weft run` is
//! SIGKILLed, over many kill/restart cycles with random delays (issue 14:
//! "a crash must not stall a pipeline"), with and without static group
//! membership (`--instance-id`) and with a static share of the partitions
//! taken without a group (`--assign 0/1`), in one run on one broker.
//!
//! A producer writes a record every 20 ms to `rs.in`; a `weft run` child
//! runs a pass-through transform to `rs.out`. Each cycle: wait until the
//! child produces, let it run 1-4 s, SIGKILL it, wait 0-3 s, restart it,
//! and time until its first output. A restart that does not consume within
//! `RESTART_TIMEOUT_SECS` (default 45) counts as that long (a wedge).
//!
//!   cargo bench -p weft --bench restart            # RESTART_CYCLES=20 per mode
//!   RESTART_MODES=share cargo bench -p weft --bench restart   # dynamic,instance,share
//!
//! Not a CI step: it takes minutes, most of it waiting on the broker.

#[path = "support/mod.rs"]
mod support;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rdkafka::producer::FutureRecord;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{env_or, ms, Latencies};
use weft::stream::broker::LocalBroker;

fn start(manifest: &Path, brokers: &str, data: &Path, extra: &[&str]) -> anyhow::Result<Child> {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("--data-dir")
        .arg(data)
        .arg("run")
        .arg(manifest)
        .args(["--brokers", brokers, "--progress-secs", "60"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting weft")
}

/// The ways a restarted process can get its partitions back: a name for
/// `RESTART_MODES`, a label, and the `weft run` arguments (each mode has
/// its own consumer group, so one mode's dead members cannot hold up the
/// next).
const MODES: &[(&str, &str, &[&str])] = &[
    ("dynamic", "dynamic membership", &["--group", "rs-dynamic"]),
    (
        "instance",
        "static membership (--instance-id)",
        &["--group", "rs-instance", "--instance-id", "bench-1"],
    ),
    (
        "share",
        "static share, no group (--assign 0/1)",
        &["--group", "rs-share", "--assign", "0/1"],
    ),
];

fn main() -> anyhow::Result<()> {
    support::build_plugins()?;
    let cycles: usize = env_or("RESTART_CYCLES", 20)?;
    let wanted: String = env_or("RESTART_MODES", "dynamic,instance,share".to_string())?;
    // Wedges in a row after which a mode is abandoned (each costs the
    // timeout plus a replacement process's own wait).
    let give_up: usize = env_or("RESTART_GIVE_UP", 3)?;
    let timeout = Duration::from_secs(env_or("RESTART_TIMEOUT_SECS", 45)?);
    let dir = tempfile::tempdir()?;
    let broker = LocalBroker::start(&dir.path().join("broker"))?;
    let brokers = broker.address();
    let plugin = support::repo().join("target/plugins/noop_transform.wasm");
    let manifest = dir.path().join("rs.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"pass\"\ntenant = \"rs\"\n[source]\ntopic = \"in\"\n[batch]\nlinger_ms = 5\n[[stage]]\nname = \"t\"\nkind = \"transform\"\nplugin = {:?}\n[sink]\ntopic = \"out\"\n",
            plugin.display().to_string()
        ),
    )?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(weft::stream::kafka::ensure_topics(
        &brokers,
        &[("rs.in".into(), 1), ("rs.out".into(), 1)],
    ))?;
    // The steady input.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (brokers, stop) = (brokers.clone(), stop.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Runtime::new()?;
            let p = weft::stream::kafka::producer(&brokers)?;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = n.to_string();
                let value = format!("{{\"seq\":{n}}}");
                let _ = rt.block_on(p.send(
                    FutureRecord::to("rs.in").key(&key).payload(&value),
                    Duration::from_secs(5),
                ));
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        })
    };
    let outputs = std::cell::RefCell::new({
        let _in_rt = rt.enter();
        weft::stream::kafka::follow_topic(&brokers, "rs.out")?
    });
    // Drops one queued output; false when none is queued.
    let outputs_pending = || outputs.borrow_mut().try_recv().is_ok();
    // Waits for the next output (the queue was drained before `since`).
    let first_output = |since: Instant, limit: Duration| -> Option<Duration> {
        let left = (since + limit).saturating_duration_since(Instant::now());
        let mut rx = outputs.borrow_mut();
        match rt.block_on(async { tokio::time::timeout(left, rx.recv()).await }) {
            Ok(Some(_)) => Some(since.elapsed()),
            _ => None,
        }
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    println!("restart -> first consumption after SIGKILL, {cycles} cycles per mode (timeout {timeout:?}: a wedge counts as that)\n");
    for (key, mode, args) in MODES {
        if !wanted.split(',').any(|w| w.trim() == *key) {
            continue;
        }
        let data = dir.path().join(format!("data-{key}"));
        // Outputs left over from the previous mode are not this one's.
        while outputs_pending() {}
        let mut child = start(&manifest, &brokers, &data, args)?;
        if first_output(Instant::now(), Duration::from_secs(120)).is_none() {
            anyhow::bail!("{mode}: the first process never consumed");
        }
        let mut lat = Latencies::new();
        let (mut wedged, mut in_a_row, mut done) = (0, 0, 0);
        for i in 0..cycles {
            if in_a_row >= give_up {
                eprintln!("{mode}: {in_a_row} wedges in a row: giving up after {done} cycles");
                break;
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(1000..4000)));
            let _ = child.kill();
            let _ = child.wait();
            // At least 0.5 s, so outputs the killed process had produced
            // reach the reader (and are drained) before the restart.
            std::thread::sleep(Duration::from_millis(rng.random_range(500..3000)));
            while outputs_pending() {}
            let t0 = Instant::now();
            child = start(&manifest, &brokers, &data, args)?;
            let took = first_output(t0, timeout);
            let d = took.unwrap_or(timeout);
            done += 1;
            in_a_row = if took.is_none() { in_a_row + 1 } else { 0 };
            if took.is_none() {
                wedged += 1;
                // A wedged process is replaced, as an operator would; a
                // replacement that wedges too counts towards giving up.
                let _ = child.kill();
                let _ = child.wait();
                child = start(&manifest, &brokers, &data, args)?;
                if in_a_row < give_up && first_output(Instant::now(), timeout).is_none() {
                    eprintln!("{mode}: its replacement wedged too");
                    in_a_row += 1;
                }
            }
            lat.record(d);
            eprintln!(
                "{mode}: cycle {}: {:.1} s{}",
                i + 1,
                d.as_secs_f64(),
                if took.is_none() { " (wedged)" } else { "" }
            );
        }
        let _ = child.kill();
        let _ = child.wait();
        println!(
            "{mode:<38} p50 {}  p99 {}  max {}  wedged {wedged}/{done}{}",
            ms(lat.p50_ms()),
            ms(lat.p99_ms()),
            ms(lat.max_ms()),
            if done < cycles {
                format!(" (gave up after {give_up} in a row)")
            } else {
                String::new()
            },
        );
    }
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    drop(broker);
    Ok(())
}

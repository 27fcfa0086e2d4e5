//! Time from a restart to the first consumption after `weft run` is
//! SIGKILLed, over many kill/restart cycles with random delays (issue 14:
//! "a crash must not stall a pipeline"), with and without static group
//! membership (`--instance-id`), in one run on one broker.
//!
//! A producer writes a record every 20 ms to `rs.in`; a `weft run` child
//! runs a pass-through transform to `rs.out`. Each cycle: wait until the
//! child produces, let it run 1-4 s, SIGKILL it, wait 0-3 s, restart it,
//! and time until its first output. A restart that does not consume within
//! `RESTART_TIMEOUT_SECS` (default 45) counts as that long (a wedge).
//!
//!   cargo bench -p weft --bench restart            # RESTART_CYCLES=20 per mode
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

fn start(
    manifest: &Path,
    brokers: &str,
    data: &Path,
    instance: Option<&str>,
) -> anyhow::Result<Child> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weft"));
    c.arg("--data-dir")
        .arg(data)
        .arg("run")
        .arg(manifest)
        .args(["--brokers", brokers, "--progress-secs", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(id) = instance {
        c.args(["--instance-id", id]);
    }
    c.spawn().context("starting weft")
}

fn main() -> anyhow::Result<()> {
    support::build_plugins()?;
    let cycles: usize = env_or("RESTART_CYCLES", 20)?;
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
    for (mode, instance) in [
        ("dynamic membership", None),
        ("static membership (--instance-id)", Some("bench-1")),
    ] {
        let data = dir
            .path()
            .join(format!("data-{}", instance.unwrap_or("dyn")));
        let mut child = start(&manifest, &brokers, &data, instance)?;
        if first_output(Instant::now(), Duration::from_secs(120)).is_none() {
            anyhow::bail!("{mode}: the first process never consumed");
        }
        let mut lat = Latencies::new();
        let mut wedged = 0;
        for i in 0..cycles {
            std::thread::sleep(Duration::from_millis(rng.random_range(1000..4000)));
            let _ = child.kill();
            let _ = child.wait();
            // At least 0.5 s, so outputs the killed process had produced
            // reach the reader (and are drained) before the restart.
            std::thread::sleep(Duration::from_millis(rng.random_range(500..3000)));
            while outputs_pending() {}
            let t0 = Instant::now();
            child = start(&manifest, &brokers, &data, instance)?;
            let took = first_output(t0, timeout);
            let d = took.unwrap_or(timeout);
            if took.is_none() {
                wedged += 1;
                // A wedged process is replaced, as an operator would.
                let _ = child.kill();
                let _ = child.wait();
                child = start(&manifest, &brokers, &data, instance)?;
                let _ = first_output(Instant::now(), Duration::from_secs(300));
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
            "{mode:<36} p50 {}  p99 {}  max {}  wedged {wedged}/{cycles}",
            ms(lat.p50_ms()),
            ms(lat.p99_ms()),
            ms(lat.max_ms()),
        );
    }
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    drop(broker);
    Ok(())
}

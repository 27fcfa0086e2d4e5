//! `cargo bench -p weft --bench kafka`: a passthrough pipeline (one no-op
//! component) against a plain rdkafka consume -> produce -> commit loop, on
//! the same local tansu broker and topic sizes, plus end-to-end latency at a
//! fixed input rate.

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weft::manifest::Manifest;
use weft::pipeline::Pipeline;
use weft::runtime::Runtime;
use weft::stream::broker::LocalBroker;
use weft::stream::kafka::{self, Counters, KafkaOptions};

const N: usize = 20_000;
const SIZE: usize = 1024;
const BATCH: usize = 256;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn fill(brokers: &str, topic: &str, n: usize) {
    let p = kafka::producer(brokers).expect("producer");
    let value = vec![b'x'; SIZE];
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let sends = chunk.iter().map(|i| {
            let key = format!("k{i}");
            let v = value.clone();
            let p = &p;
            async move {
                p.send(
                    FutureRecord::to(topic).key(&key).payload(&v),
                    Duration::from_secs(30),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
            }
        });
        for r in futures::future::join_all(sends).await {
            r.expect("fill");
        }
    }
}

/// The baseline: what a hand-written Rust service would do, with the same
/// guarantees (batch, wait for acks, then commit).
async fn copy_loop(brokers: &str, from: &str, to: &str, n: usize) -> Duration {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-copy")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    c.subscribe(&[from]).expect("subscribe");
    let p: FutureProducer = kafka::producer(brokers).expect("producer");
    let t0 = Instant::now();
    let mut done = 0;
    while done < n {
        let mut batch = Vec::with_capacity(BATCH);
        let first = c.recv().await.expect("recv");
        batch.push(first.detach());
        while batch.len() < BATCH {
            match tokio::time::timeout(Duration::from_millis(20), c.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                _ => break,
            }
        }
        let sends = batch.iter().map(|m| {
            let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(to);
            if let Some(k) = m.key() {
                r = r.key(k);
            }
            if let Some(v) = m.payload() {
                r = r.payload(v);
            }
            p.send(r, Duration::from_secs(30))
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e).expect("produce");
        }
        let mut tpl = TopicPartitionList::new();
        for m in &batch {
            tpl.add_partition_offset(m.topic(), m.partition(), Offset::Offset(m.offset() + 1))
                .expect("tpl");
        }
        c.commit(&tpl, CommitMode::Sync).expect("commit");
        done += batch.len();
    }
    t0.elapsed()
}

fn passthrough(dir: &Path, from: &str, to: &str) -> Pipeline {
    let plugin = repo().join("target/plugins/noop_transform.wasm");
    let text = format!(
        "name = \"pass\"\ntenant = \"bench\"\n[source]\ntopic = \"{from}\"\n[batch]\nmax_records = {BATCH}\nlinger_ms = 20\n[[stage]]\nname = \"noop\"\nkind = \"transform\"\nplugin = \"{}\"\n[sink]\ntopic = \"{to}\"\n",
        plugin.display()
    );
    let f = dir.join(format!("{from}.toml"));
    std::fs::write(&f, text).expect("manifest");
    let m = Manifest::load(&f).expect("manifest");
    let rt = Runtime::new(Some(dir.join("cache"))).expect("runtime");
    Pipeline::new(&rt, m, None).expect("pipeline")
}

/// Runs the pipeline until it has consumed `n` records.
async fn run_until(p: Pipeline, brokers: &str, n: usize) -> Duration {
    let counters = Arc::new(Counters::default());
    let (tx, rx) = tokio::sync::watch::channel(false);
    let opts = KafkaOptions {
        brokers: brokers.to_string(),
        group: None,
        idle_exit: None,
        state_dir: None,
    };
    let t0 = Instant::now();
    let task = tokio::spawn(kafka::run(p, opts, counters.clone(), rx));
    while counters.consumed.load(Ordering::Relaxed) < n as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = t0.elapsed();
    let _ = tx.send(true);
    let _ = task.await;
    elapsed
}

fn pct(sorted: &[i64], p: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

async fn latency(dir: &Path, brokers: &str, rate: usize, secs: usize) -> (i64, i64, usize) {
    kafka::ensure_topics(
        brokers,
        &[
            ("bench.lat-in".into(), 1),
            ("bench.lat-out".into(), 1),
            ("bench.pass.dead-letters".into(), 1),
        ],
    )
    .await
    .expect("topics");
    let p = passthrough(dir, "lat-in", "lat-out");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let opts = KafkaOptions {
        brokers: brokers.to_string(),
        group: Some("bench-lat".into()),
        idle_exit: None,
        state_dir: None,
    };
    let task = tokio::spawn(kafka::run(p, opts, Arc::new(Counters::default()), rx));
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-lat-reader")
        .set("fetch.wait.max.ms", "20")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reader");
    reader.subscribe(&["bench.lat-out"]).expect("subscribe");
    tokio::time::sleep(Duration::from_secs(3)).await; // let both groups settle
    let total = rate * secs;
    let brokers2 = brokers.to_string();
    let producer = tokio::spawn(async move {
        let p = kafka::producer(&brokers2).expect("producer");
        let every = Duration::from_secs_f64(1.0 / rate as f64);
        let start = Instant::now();
        for i in 0..total {
            let due = start + every * i as u32;
            tokio::time::sleep_until(due.into()).await;
            let key = format!("l{i}");
            let v = vec![b'y'; SIZE];
            let _ = p
                .send(
                    FutureRecord::to("bench.lat-in")
                        .key(&key)
                        .payload(&v)
                        .timestamp(now_ms()),
                    Duration::from_secs(10),
                )
                .await;
        }
    });
    let mut lat = Vec::with_capacity(total);
    while lat.len() < total {
        match tokio::time::timeout(Duration::from_secs(20), reader.recv()).await {
            Ok(Ok(m)) => {
                if let Some(ts) = m.timestamp().to_millis() {
                    lat.push(now_ms() - ts);
                }
            }
            _ => break,
        }
    }
    let _ = producer.await;
    let _ = tx.send(true);
    let _ = task.await;
    lat.sort_unstable();
    (pct(&lat, 0.5), pct(&lat, 0.99), lat.len())
}

fn main() {
    let ok = std::process::Command::new("bash")
        .arg(repo().join("scripts/build-plugins"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "scripts/build-plugins failed");
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = LocalBroker::start(&dir.path().join("broker")).expect("tansu (scripts/setup)");
    let brokers = broker.address();
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        let topics: Vec<(String, i32)> = ["bench.in", "bench.out-raw", "bench.in2", "bench.out", "bench.pass.dead-letters"]
            .iter()
            .map(|t| (t.to_string(), 1))
            .collect();
        kafka::ensure_topics(&brokers, &topics).await.expect("topics");
        fill(&brokers, "bench.in", N).await;
        fill(&brokers, "bench.in2", N).await;
        let mb = (N * SIZE) as f64 / 1e6;
        println!("kafka bench: {N} x {SIZE} B records, 1 partition, local tansu (sqlite), acks=all\n");
        let raw = copy_loop(&brokers, "bench.in", "bench.out-raw", N).await;
        println!(
            "rdkafka copy loop      {:>9.0} records/s {:>7.2} MB/s",
            N as f64 / raw.as_secs_f64(),
            mb / raw.as_secs_f64()
        );
        let p = passthrough(dir.path(), "in2", "out");
        let weft = run_until(p, &brokers, N).await;
        println!(
            "weft passthrough       {:>9.0} records/s {:>7.2} MB/s",
            N as f64 / weft.as_secs_f64(),
            mb / weft.as_secs_f64()
        );
        println!("  ratio weft/raw       {:>9.3}", raw.as_secs_f64() / weft.as_secs_f64());
        let (rate, secs) = (200, 10);
        let (p50, p99, n) = latency(dir.path(), &brokers, rate, secs).await;
        println!("\nend-to-end latency at {rate} records/s for {secs} s ({n} records): p50 {p50} ms, p99 {p99} ms");
    });
}

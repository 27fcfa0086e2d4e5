//! `cargo bench -p weft --bench kafka`: a passthrough pipeline (one no-op
//! Wasm component) against a plain rdkafka consume -> produce -> commit loop
//! on the same local tansu broker, in the same run.
//!
//! The baseline runs twice: with librdkafka's defaults (what a hand-written
//! service gets without tuning) and with exactly weft's client settings
//! (`settings` below: what is left is weft's own cost). All three copy
//! records the same way: batches of up to `BATCH` records or whatever
//! arrived within `LINGER_MS` of a batch's first record, every output
//! acknowledged (acks=all) before the batch's offsets are committed, the
//! record's CreateTime kept.
//!
//! 1. throughput: each variant copies its own pre-filled topic of
//!    `WEFT_BENCH_RECORDS` (20 000) × 1 KiB records, one partition, for
//!    `WEFT_BENCH_ROUNDS` (3) rounds with the order rotated each round; the
//!    rate counts from the first committed batch to the last (group join and
//!    start-up excluded for all three alike);
//! 2. end-to-end latency: `WEFT_BENCH_RATE` (200) records/s for
//!    `WEFT_BENCH_SECS` (10) s through each variant, produce -> copier ->
//!    a reader with weft's consumer settings; latency is arrival at the
//!    reader minus the record's CreateTime.

mod support;

use anyhow::{bail, Context};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{env_or, ms, ratio, Latencies, LoadMeter};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft::manifest::Manifest;
use weft::pipeline::Pipeline;
use weft::runtime::Runtime;
use weft::stream::broker::LocalBroker;
use weft::stream::kafka::{self, chrono_ms, Counters, KafkaOptions};

const SIZE: usize = 1024;
const TENANT: &str = "bench";

/// Every Kafka client setting of the comparison, in one place: the
/// baseline's two profiles, and the clients the bench itself uses to fill
/// topics and read results (always weft's, so the instrument is the same
/// for every variant). The weft profile is a copy of
/// `host/src/stream/kafka.rs` (`base_config`, `producer()`, the consumer in
/// `run()`); a change there must be mirrored here.
mod settings {
    // weft's own settings, from the library itself, so the baseline cannot
    // drift from what the pipelines use.
    pub use weft::stream::kafka::{
        COMMON_SETTINGS as WEFT_COMMON, CONSUMER_SETTINGS as WEFT_CONSUMER,
        PRODUCER_SETTINGS as WEFT_PRODUCER,
    };
    /// The default profile sets only what the copy loop's guarantee needs
    /// (manual commits, start from the beginning, acks from all replicas,
    /// which is librdkafka's default anyway); everything else is
    /// librdkafka's default (e.g. `fetch.wait.max.ms` 500, `linger.ms` 5,
    /// a million requests in flight).
    pub const DEFAULT_CONSUMER: &[(&str, &str)] = &[
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
    ];
    pub const DEFAULT_PRODUCER: &[(&str, &str)] = &[("acks", "all")];
    /// Batching, for the copy loop and the pipeline's manifest alike.
    pub const BATCH: usize = 256;
    pub const LINGER_MS: u64 = 20;
}
use settings::{BATCH, LINGER_MS};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Profile {
    Default,
    Weft,
}

fn client(brokers: &str, sets: &[&[(&str, &str)]]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in sets.iter().flat_map(|s| s.iter()) {
        c.set(*k, *v);
    }
    c
}

impl Profile {
    fn consumer(self, brokers: &str, group: &str) -> ClientConfig {
        let mut c = match self {
            Profile::Default => client(brokers, &[settings::DEFAULT_CONSUMER]),
            Profile::Weft => client(brokers, &[settings::WEFT_COMMON, settings::WEFT_CONSUMER]),
        };
        c.set("group.id", group);
        c
    }

    fn producer(self, brokers: &str) -> anyhow::Result<FutureProducer> {
        match self {
            Profile::Default => client(brokers, &[settings::DEFAULT_PRODUCER]),
            Profile::Weft => client(brokers, &[settings::WEFT_COMMON, settings::WEFT_PRODUCER]),
        }
        .create()
        .context("creating a producer")
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    RawDefault,
    RawWeft,
    Weft,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::RawDefault, Variant::RawWeft, Variant::Weft];

    fn label(self) -> &'static str {
        match self {
            Variant::RawDefault => "rdkafka copy loop, librdkafka defaults",
            Variant::RawWeft => "rdkafka copy loop, weft's settings",
            Variant::Weft => "weft passthrough (1 no-op Wasm stage)",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Variant::RawDefault => "raw-default",
            Variant::RawWeft => "raw-weft",
            Variant::Weft => "weft",
        }
    }
}

/// Produces `n` 1 KiB records to `topic` with weft's producer settings.
async fn fill(brokers: &str, topic: &str, n: usize) -> anyhow::Result<()> {
    let p = Profile::Weft.producer(brokers)?;
    let value = vec![b'x'; SIZE];
    for start in (0..n).step_by(1000) {
        let sends = (start..n.min(start + 1000)).map(|i| {
            let key = format!("k{i}");
            let (p, v) = (&p, &value);
            async move {
                p.send(
                    FutureRecord::to(topic).key(&key).payload(v),
                    Duration::from_secs(30),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
            }
        });
        for r in futures::future::join_all(sends).await {
            r.with_context(|| format!("filling {topic}"))?;
        }
    }
    Ok(())
}

/// The baseline: what a hand-written Rust service does with the same
/// guarantee and batching as weft, minus weft (no owned records, no Wasm
/// call, no headers, no retry bookkeeping). It reports progress through the
/// same `Counters::consumed` weft's pipelines update, after each commit, so
/// one poller measures all variants.
async fn copy_loop(
    brokers: String,
    profile: Profile,
    from: String,
    to: String,
    group: String,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let c: StreamConsumer = profile
        .consumer(&brokers, &group)
        .create()
        .context("creating the copy loop's consumer")?;
    c.subscribe(&[&from])
        .with_context(|| format!("subscribing to {from}"))?;
    let p = profile.producer(&brokers)?;
    let linger = Duration::from_millis(LINGER_MS);
    loop {
        let first = tokio::select! {
            _ = stop.changed() => break,
            r = c.recv() => r.context("consuming")?.detach(),
        };
        let mut batch: Vec<OwnedMessage> = Vec::with_capacity(BATCH);
        batch.push(first);
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, c.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => return Err(e).context("consuming"),
                Err(_) => break,
            }
        }
        let sends = batch.iter().map(|m| {
            let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&to);
            if let Some(k) = m.key() {
                r = r.key(k);
            }
            if let Some(v) = m.payload() {
                r = r.payload(v);
            }
            if let Some(ts) = m.timestamp().to_millis() {
                r = r.timestamp(ts);
            }
            p.send(r, Duration::from_secs(10))
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e).context("producing")?;
        }
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for m in &batch {
            let e = next.entry((m.topic(), m.partition())).or_insert(0);
            *e = (*e).max(m.offset() + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, part), o) in next {
            tpl.add_partition_offset(t, part, Offset::Offset(o))
                .context("building the commit")?;
        }
        c.commit(&tpl, CommitMode::Sync).context("committing")?;
        counters
            .consumed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// A passthrough pipeline `from` -> `to` (topic names without the tenant),
/// batching like the copy loop.
fn passthrough(dir: &Path, from: &str, to: &str) -> anyhow::Result<Pipeline> {
    let plugin = support::repo().join("target/plugins/noop_transform.wasm");
    let text = format!(
        "name = \"pass\"\ntenant = \"{TENANT}\"\n[source]\ntopic = \"{from}\"\n[batch]\nmax_records = {BATCH}\nlinger_ms = {LINGER_MS}\n[[stage]]\nname = \"noop\"\nkind = \"transform\"\nplugin = \"{}\"\n[sink]\ntopic = \"{to}\"\n",
        plugin.display()
    );
    let f = dir.join(format!("{from}.toml"));
    std::fs::write(&f, text).with_context(|| format!("writing {}", f.display()))?;
    let m = Manifest::load(&f).context("loading the passthrough manifest")?;
    let rt = Runtime::new(Some(dir.join("cache"))).context("creating the runtime")?;
    Pipeline::new(&rt, m, None).context("preparing the passthrough pipeline")
}

/// One running variant copying between two topics.
struct Copier {
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Copier {
    /// `from` and `to` are topic names without the tenant prefix.
    fn start(
        v: Variant,
        brokers: &str,
        dir: &Path,
        from: &str,
        to: &str,
    ) -> anyhow::Result<Copier> {
        let counters = Arc::new(Counters::default());
        let (stop, rx) = watch::channel(false);
        let group = format!("bench-{from}");
        let task = match v {
            Variant::RawDefault | Variant::RawWeft => {
                let profile = if v == Variant::RawDefault {
                    Profile::Default
                } else {
                    Profile::Weft
                };
                tokio::spawn(copy_loop(
                    brokers.to_string(),
                    profile,
                    format!("{TENANT}.{from}"),
                    format!("{TENANT}.{to}"),
                    group,
                    counters.clone(),
                    rx,
                ))
            }
            Variant::Weft => {
                let p = passthrough(dir, from, to)?;
                let opts = KafkaOptions {
                    instance_id: None,
                    assign: Default::default(),
                    brokers: brokers.to_string(),
                    group: Some(group),
                    idle_exit: None,
                    state_dir: None,
                };
                let c = counters.clone();
                tokio::spawn(async move {
                    kafka::run(p, opts, c, rx)
                        .await
                        .map(|_| ())
                        .map_err(anyhow::Error::from)
                })
            }
        };
        Ok(Copier {
            counters,
            stop,
            task,
        })
    }

    fn consumed(&self) -> u64 {
        self.counters.consumed.load(Ordering::Relaxed)
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("copier task panicked")?
    }
}

/// Records copied and the time they took, from the first committed batch
/// (the group has joined, the copier is warm) until `n` are committed.
async fn measure(c: &Copier, n: u64) -> anyhow::Result<(u64, Duration)> {
    let give_up = Instant::now() + Duration::from_secs(600);
    let (c0, t0) = loop {
        let done = c.consumed();
        if done > 0 {
            break (done, Instant::now());
        }
        if Instant::now() > give_up || c.task.is_finished() {
            bail!("the copier committed nothing");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    loop {
        let done = c.consumed();
        if done >= n {
            return Ok((done - c0, t0.elapsed()));
        }
        if Instant::now() > give_up || c.task.is_finished() {
            bail!("the copier stopped at {done} of {n} records");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// End-to-end latency through `v` at `rate` records/s for `secs` s.
async fn latency(
    v: Variant,
    brokers: &str,
    dir: &Path,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Latencies> {
    let (from, to) = (
        format!("lat-{}-in", v.slug()),
        format!("lat-{}-out", v.slug()),
    );
    let copier = Copier::start(v, brokers, dir, &from, &to)?;
    let out_topic = format!("{TENANT}.{to}");
    let in_topic = format!("{TENANT}.{from}");
    let reader: StreamConsumer = Profile::Weft
        .consumer(brokers, &format!("bench-reader-{}", v.slug()))
        .create()
        .context("creating the reader")?;
    reader
        .subscribe(&[&out_topic])
        .with_context(|| format!("subscribing to {out_topic}"))?;
    let producer = Profile::Weft.producer(brokers)?;
    // Warm up until a record makes it through: both groups have joined.
    let t_warm = Instant::now();
    'warm: for i in 0.. {
        if t_warm.elapsed() > Duration::from_secs(90) {
            bail!("{}: nothing came through within 90 s", v.label());
        }
        let key = format!("warm-{i}");
        producer
            .send(
                FutureRecord::to(&in_topic).key(&key).payload("warm"),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .context("producing a warm-up record")?;
        let until = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Ok(m)) = tokio::time::timeout_at(until, reader.recv()).await {
            if m.key().is_some_and(|k| k.starts_with(b"warm-")) {
                break 'warm;
            }
        }
    }
    let total = (rate * secs) as usize;
    let topic = in_topic.clone();
    let paced = tokio::spawn(async move {
        let every = Duration::from_secs_f64(1.0 / rate as f64);
        let start = tokio::time::Instant::now();
        let value = vec![b'y'; SIZE];
        let mut acks = Vec::with_capacity(total);
        for i in 0..total {
            tokio::time::sleep_until(start + every.mul_f64(i as f64)).await;
            let key = format!("l{i}");
            let rec = FutureRecord::to(&topic)
                .key(&key)
                .payload(&value)
                .timestamp(chrono_ms());
            acks.push(producer.send_result(rec).map_err(|(e, _)| e)?);
        }
        for a in acks {
            a.await
                .map_err(|_| anyhow::anyhow!("the producer went away"))?
                .map_err(|(e, _)| e)?;
        }
        anyhow::Ok(())
    });
    let mut lat = Latencies::new();
    while (lat.len() as usize) < total {
        match tokio::time::timeout(Duration::from_secs(20), reader.recv()).await {
            Ok(Ok(m)) if m.key().is_some_and(|k| k.starts_with(b"l")) => {
                if let Some(ts) = m.timestamp().to_millis() {
                    lat.record_ms(chrono_ms() - ts);
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    paced.await.context("paced producer panicked")??;
    copier.stop().await?;
    Ok(lat)
}

fn main() -> anyhow::Result<()> {
    let n: usize = env_or("WEFT_BENCH_RECORDS", 20_000)?;
    let rounds: usize = env_or("WEFT_BENCH_ROUNDS", 3)?;
    let rate: u64 = env_or("WEFT_BENCH_RATE", 200)?;
    let secs: u64 = env_or("WEFT_BENCH_SECS", 10)?;
    if n == 0 || rounds == 0 || rate == 0 || secs == 0 {
        bail!("WEFT_BENCH_RECORDS, _ROUNDS, _RATE and _SECS must be > 0");
    }
    support::build_plugins()?;
    let load = LoadMeter::start("kafka bench");
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let broker = LocalBroker::start(&dir.path().join("broker")).context("tansu (scripts/setup)")?;
    let brokers = broker.address();
    let rt = tokio::runtime::Runtime::new().context("starting tokio")?;
    rt.block_on(async {
        let mut topics: Vec<String> = vec!["pass.dead-letters".into()];
        for v in Variant::ALL {
            topics.push(format!("lat-{}-in", v.slug()));
            topics.push(format!("lat-{}-out", v.slug()));
            for r in 0..rounds {
                topics.push(format!("tput-{}-r{r}-in", v.slug()));
                topics.push(format!("tput-{}-r{r}-out", v.slug()));
            }
        }
        let topics: Vec<(String, i32)> = topics
            .into_iter()
            .map(|t| (format!("{TENANT}.{t}"), 1))
            .collect();
        kafka::ensure_topics(&brokers, &topics).await?;
        println!(
            "{n} x {SIZE} B records, 1 partition, local tansu (sqlite); batches of up to {BATCH} records / {LINGER_MS} ms linger; acks=all, commit after every batch is acknowledged"
        );
        println!("weft's settings (host/src/stream/kafka.rs; the copy loop's second profile):");
        let list = |s: &[(&str, &str)]| {
            s.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("  all clients: {}", list(settings::WEFT_COMMON));
        println!("  producer:    {}", list(settings::WEFT_PRODUCER));
        println!("  consumer:    {}", list(settings::WEFT_CONSUMER));
        println!(
            "librdkafka defaults profile sets only: consumer {}; producer {}\n",
            list(settings::DEFAULT_CONSUMER),
            list(settings::DEFAULT_PRODUCER)
        );

        // 1. Throughput, rounds in rotated order.
        for v in Variant::ALL {
            for r in 0..rounds {
                fill(&brokers, &format!("{TENANT}.tput-{}-r{r}-in", v.slug()), n).await?;
            }
        }
        let mut per_round: Vec<[f64; 3]> = Vec::new();
        let mut totals = [(0u64, Duration::ZERO); 3];
        for r in 0..rounds {
            let mut rates = [0.0; 3];
            for k in 0..3 {
                let i = (k + r) % 3;
                let v = Variant::ALL[i];
                let from = format!("tput-{}-r{r}-in", v.slug());
                let to = format!("tput-{}-r{r}-out", v.slug());
                let c = Copier::start(v, &brokers, dir.path(), &from, &to)?;
                let (records, took) = measure(&c, n as u64).await?;
                c.stop().await?;
                rates[i] = records as f64 / took.as_secs_f64();
                totals[i].0 += records;
                totals[i].1 += took;
            }
            println!(
                "round {}: {} records/s (raw defaults, raw weft settings, weft)",
                r + 1,
                rates
                    .iter()
                    .map(|x| format!("{x:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            per_round.push(rates);
        }
        let agg: Vec<f64> = totals
            .iter()
            .map(|(c, t)| *c as f64 / t.as_secs_f64())
            .collect();
        println!(
            "\n| throughput, {n} x 1 KiB, {rounds} rounds | records/s | MB/s | weft / this |"
        );
        println!("|---|---|---|---|");
        for (i, v) in Variant::ALL.iter().enumerate() {
            println!(
                "| {} | {:.0} | {:.2} | {} |",
                v.label(),
                agg[i],
                agg[i] * SIZE as f64 / 1e6,
                ratio(agg[2], agg[i])
            );
        }
        let spread = |j: usize| {
            let rs: Vec<f64> = per_round.iter().map(|r| r[2] / r[j]).collect();
            let lo = rs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = rs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{lo:.2} .. {hi:.2}")
        };
        println!(
            "per-round ratio weft / raw: {} (weft's settings), {} (defaults)",
            spread(1),
            spread(0)
        );

        // 2. Latency at a fixed rate.
        let mut lats = Vec::new();
        for v in Variant::ALL {
            lats.push(latency(v, &brokers, dir.path(), rate, secs).await?);
        }
        println!(
            "\n| end-to-end latency, {rate} records/s for {secs} s | p50 ms | p99 ms | max ms | records | weft p99 / this p99 |"
        );
        println!("|---|---|---|---|---|---|");
        for (v, l) in Variant::ALL.iter().zip(&lats) {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                v.label(),
                ms(l.p50_ms()),
                ms(l.p99_ms()),
                ms(l.max_ms()),
                l.len(),
                ratio(lats[2].p99_ms(), l.p99_ms())
            );
        }
        anyhow::Ok(())
    })?;
    println!(
        "\nStill different between weft and the copy loop at weft's settings: weft copies every \
         record into an owned item (key and value twice, for dead letters) and back, runs the \
         batch through the Wasm component on a blocking thread, sends each record with a header \
         list and keeps it for retries, and selects on a stop signal; the records carry no \
         headers here."
    );
    println!("{}", load.report());
    drop(broker);
    Ok(())
}

//! A pipeline between Kafka topics, at least once and without duplicates:
//!
//! 1. poll a batch (up to `batch.max_records`, or whatever arrived within
//!    `batch.linger_ms`) from the source topic with a consumer group;
//! 2. run it through the stages on a blocking thread (Wasm calls stay off the
//!    async reactor);
//! 3. produce every output and every dead letter, and wait until the broker
//!    has acknowledged *all* of them (retrying with backoff, never dropping);
//! 4. only then commit the batch's offsets.
//!
//! A crash anywhere replays the batch; because every output has a
//! deterministic key (`<doc id>#<n>`, the question id), the replay overwrites
//! instead of duplicating. Kafka transactions are not used (tansu has none).

use super::assign::{self, Assignment};
use super::circuit::{Breaker, CircuitPolicy};
use super::deltas::KafkaDeltas;
use super::orphans::ChunkKeys;
use super::stall::StallWatch;
use super::{Result, StreamError};
use crate::manifest::Format;
use crate::metrics::{Histogram, PipelineMetrics};
use crate::pipeline::{BatchOutcome, DeadLetter, DocumentSink, Pipeline, SinkError, SinkReport};
use crate::record::{Item, Origin, Payload};
use crate::runtime::{Failure, FailureKind};
use backon::{BackoffBuilder, BlockingRetryable, ExponentialBuilder};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Dead-letter header names.
pub const H_STAGE: &str = "weft.error.stage";
pub const H_KIND: &str = "weft.error.kind";
pub const H_MESSAGE: &str = "weft.error.message";
pub const H_TOPIC: &str = "weft.source.topic";
pub const H_PARTITION: &str = "weft.source.partition";
pub const H_OFFSET: &str = "weft.source.offset";
pub const H_PIPELINE: &str = "weft.pipeline";

/// Whether a header is one weft adds to a dead letter (the error, the
/// source coordinates, the pipeline): what a dead letter sheds when it is
/// written again, and when it is replayed to its source topic.
pub fn is_dead_letter_header(key: &str) -> bool {
    key.starts_with("weft.error.") || key.starts_with("weft.source.") || key == H_PIPELINE
}

/// The last dead letter of a pipeline, for its status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastError {
    pub stage: String,
    pub kind: String,
    pub message: String,
    /// When it was written (ms since the epoch).
    pub at_ms: i64,
}

/// Live counters of one running pipeline, for progress displays and metrics.
#[derive(Default)]
pub struct Counters {
    pub consumed: AtomicU64,
    pub produced: AtomicU64,
    pub dead_letters: AtomicU64,
    pub batches: AtomicU64,
    /// Documents upserted or deleted by the index sink.
    pub indexed_docs: AtomicU64,
    /// Record timestamp to searchable in the index, in ms.
    pub freshness: Histogram,
    /// New versions swapped in while running (hot reloads).
    pub reloads: AtomicU64,
    /// Why the circuit is open, while it is (the pipeline is paused).
    pub circuit: std::sync::Mutex<Option<String>>,
    /// Why the pipeline is waiting on the broker for partitions, while it is.
    pub stall: std::sync::Mutex<Option<String>>,
    /// Whether an operator's pause ([`Control::hold`]) holds the pipeline.
    pub held: AtomicBool,
    /// The group's lag per source partition, as last looked at.
    pub lag: std::sync::Mutex<Option<Vec<(i32, i64)>>>,
    /// The last dead letter written.
    pub last_error: std::sync::Mutex<Option<LastError>>,
    /// The exported series of this pipeline (detached by default).
    pub metrics: Arc<PipelineMetrics>,
}

impl Counters {
    /// Counters whose figures are also exported as `metrics`.
    pub fn with_metrics(metrics: Arc<PipelineMetrics>) -> Counters {
        Counters {
            metrics,
            ..Counters::default()
        }
    }

    /// The group's lag over all source partitions, once it was looked at.
    pub fn total_lag(&self) -> Option<i64> {
        self.lag
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(|v| v.iter().map(|(_, n)| n).sum()))
    }

    /// The last dead letter written, if any.
    pub fn last_error(&self) -> Option<LastError> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// The open circuit's reason, if the pipeline is paused.
    pub fn circuit_open(&self) -> Option<String> {
        self.circuit.lock().ok().and_then(|c| c.clone())
    }

    /// Why the pipeline holds no partitions while its group has lag.
    pub fn stalled(&self) -> Option<String> {
        self.stall.lock().ok().and_then(|c| c.clone())
    }

    fn set_stalled(&self, reason: Option<String>) {
        if let Ok(mut c) = self.stall.lock() {
            *c = reason;
        }
    }

    fn set_circuit(&self, reason: Option<String>) {
        if let Ok(mut c) = self.circuit.lock() {
            *c = reason;
        }
    }
}

/// What a host may do to a running pipeline besides stopping it.
#[derive(Default)]
pub struct Control {
    /// New versions of the pipeline (same topics, group and sink), each
    /// swapped in at the next batch boundary: after the batch in flight is
    /// committed, before the next is read.
    pub swap: Option<tokio::sync::mpsc::UnboundedReceiver<Pipeline>>,
    /// When the pipeline pauses itself instead of dead-lettering its topic
    /// (the default never does).
    pub circuit: CircuitPolicy,
    /// An operator's pause: while it reads `true`, the pipeline holds its
    /// partitions paused from the next batch boundary on (the batch in
    /// flight is finished and committed), keeping its group membership.
    pub hold: Option<watch::Receiver<bool>>,
}

/// The next new version from `swap`; never resolves without a channel.
async fn next_version(
    swap: &mut Option<tokio::sync::mpsc::UnboundedReceiver<Pipeline>>,
) -> Option<Pipeline> {
    match swap {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes a batch to the pipeline's document sink, retrying a failing store
/// (a full disk, say) with backoff (0.2 s doubling, 5 retries) before giving
/// up on the batch.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

fn write_sink(sink: &dyn DocumentSink, outcome: &BatchOutcome) -> Result<SinkReport, SinkError> {
    (|| sink.write(outcome))
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_times(5),
        )
        .sleep(std::thread::sleep)
        .notify(|e, after| tracing::warn!("index write failed (retrying in {after:?}): {e}"))
        .call()
}

/// How to run a pipeline against a broker.
#[derive(Clone, Debug)]
pub struct KafkaOptions {
    pub brokers: String,
    /// Consumer group; default `weft.<tenant>.<pipeline>`.
    pub group: Option<String>,
    /// Stop after this long without a new record (for demos and tests);
    /// `None` runs until stopped.
    pub idle_exit: Option<Duration>,
    /// Where pipelines keep what their topic sinks need across restarts
    /// (the chunk keys of each document, `<dir>/<tenant>/<pipeline>`);
    /// `None`: a new version's dropped chunk keys are not tombstoned.
    pub state_dir: Option<std::path::PathBuf>,
    /// Static group membership: this process's stable identity (the same
    /// across restarts, different for every process of a group). Each
    /// pipeline's consumer joins as `<id>.<tenant>.<pipeline>`, so a
    /// restarted process takes over its dead predecessor's membership and
    /// partitions instead of waiting for the broker to expire it. A second
    /// live process with the same id is fenced by the broker.
    pub instance_id: Option<String>,
    /// Group membership (default) or a static share of each source's
    /// partitions taken without it (see [`super::assign`]).
    pub assign: Assignment,
}

/// Settings of every weft client, bootstrap servers aside. Public so the
/// Kafka bench's baseline uses exactly these (no copy to drift).
pub const COMMON_SETTINGS: &[(&str, &str)] = &[
    ("broker.address.family", "v4"),
    ("socket.keepalive.enable", "true"),
    ("reconnect.backoff.max.ms", "2000"),
];

/// A producer that waits for full acknowledgement and keeps per-partition
/// order (one request in flight, since tansu has no idempotent producer).
/// `message.max.bytes` is [`MAX_MESSAGE_BYTES`] (a test checks they agree).
pub const PRODUCER_SETTINGS: &[(&str, &str)] = &[
    ("acks", "all"),
    ("enable.idempotence", "false"),
    ("max.in.flight.requests.per.connection", "1"),
    ("linger.ms", "5"),
    ("message.timeout.ms", "30000"),
    ("message.max.bytes", "4900000"),
];

/// The pipeline consumer, group id aside: manual commits after the batch's
/// outputs are durable, from the beginning of a new group.
pub const CONSUMER_SETTINGS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "1000"),
    ("fetch.message.max.bytes", "8000000"),
    // A broker holds a fetch until this long when there is no data; the
    // default 500 ms would dominate end-to-end latency (measured: p50
    // 800 ms over two hops at 200 records/s).
    ("fetch.wait.max.ms", "20"),
];

fn with(mut c: ClientConfig, settings: &[(&str, &str)]) -> ClientConfig {
    for (k, v) in settings {
        c.set(*k, *v);
    }
    c
}

pub(crate) fn base_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    with(c, COMMON_SETTINGS)
}

/// The consumer configuration of a pipeline in consumer group `group`.
pub fn consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut c = with(base_config(brokers), CONSUMER_SETTINGS);
    c.set("group.id", group);
    c
}

/// A producer with [`PRODUCER_SETTINGS`].
pub fn producer(brokers: &str) -> Result<FutureProducer> {
    with(base_config(brokers), PRODUCER_SETTINGS)
        .create()
        .map_err(|e| StreamError::kafka("creating the Kafka producer", e))
}

/// Creates the topics that do not exist yet (already-existing is fine).
pub async fn ensure_topics(brokers: &str, topics: &[(String, i32)]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(brokers)
        .create()
        .map_err(|e| StreamError::kafka("creating the Kafka admin client", e))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(new.iter(), &opts)
        .await
        .map_err(|e| StreamError::kafka(format!("creating topics on {brokers}"), e))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, e)) => {
                return Err(StreamError::CreateTopic {
                    topic,
                    code: e.to_string(),
                })
            }
        }
    }
    Ok(())
}

fn owned_item(m: &rdkafka::message::BorrowedMessage<'_>) -> Item {
    let key = m.key().map(<[u8]>::to_vec);
    let value = m.payload().map(<[u8]>::to_vec);
    let mut headers = Vec::new();
    if let Some(h) = m.headers() {
        for i in 0..h.count() {
            let hd = h.get(i);
            headers.push((
                hd.key.to_string(),
                hd.value.map(<[u8]>::to_vec).unwrap_or_default(),
            ));
        }
    }
    let origin = Origin {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: key.clone(),
        value: value.clone(),
    };
    Item {
        key,
        headers,
        timestamp: m.timestamp().to_millis(),
        origin: Arc::new(origin),
        payload: Payload::Raw(value),
    }
}

/// One record to produce, owned so it can be re-sent after a failure.
struct Outgoing {
    topic: String,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    timestamp: Option<i64>,
    /// What to do when the broker refuses it for good.
    role: Role,
}

/// Where an outgoing record came from, which decides what happens when the
/// broker refuses it permanently (too large, invalid, not authorised).
enum Role {
    /// An output of `item`: it becomes a dead letter of `item` instead.
    Output(Box<Item>),
    /// A dead letter: it is sent again with its value cut to
    /// [`TRIMMED_VALUE_BYTES`] (and a header saying so).
    DeadLetter,
    /// A dead letter already trimmed, or a record produced by a tool:
    /// nothing smaller can be sent, so the batch fails uncommitted.
    Final,
}

/// Where the dead letters of refused outputs go.
struct DeadLetters<'a> {
    topic: &'a str,
    pipeline: &'a str,
}

/// The stage named in the dead letter of an output the broker refused.
pub const KAFKA_SINK_STAGE: &str = "kafka-sink";

/// Outputs the broker refused for good (sent as dead letters instead).
#[derive(Debug, Default)]
struct Refused {
    outputs: u64,
    /// The error kind of each refused output's dead letter.
    kinds: Vec<&'static str>,
}

/// Bytes of the original value a trimmed dead letter keeps.
pub const TRIMMED_VALUE_BYTES: usize = 1024;

/// Header of a trimmed dead letter: the original value's length in bytes.
pub const H_VALUE_BYTES: &str = "weft.error.value-bytes";

/// The largest record weft produces (`message.max.bytes` of its
/// producers). Below 5 MiB on purpose: tansu 0.6 acknowledges a record of
/// 5 MiB or more and then never delivers it, stalling the topic.
pub const MAX_MESSAGE_BYTES: usize = 4_900_000;

fn output_record(topic: &str, item: &Item) -> Outgoing {
    Outgoing {
        topic: topic.to_string(),
        key: item.key.clone(),
        value: item.payload.to_value_bytes(),
        headers: item.headers.clone(),
        timestamp: item.timestamp,
        role: Role::Output(Box::new(item.clone())),
    }
}

/// Whether the broker (or the producer itself) will never accept this
/// record as it is, however often it is retried.
fn permanent(e: &rdkafka::error::KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::InvalidRecord
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::InvalidTopic
        )
    )
}

fn dead_letter_record(topic: &str, pipeline: &str, d: &DeadLetter) -> Outgoing {
    let o = &d.item.origin;
    let mut headers = d.item.headers.clone();
    headers.retain(|(k, _)| !is_dead_letter_header(k));
    let message: String = d.failure.message.chars().take(2000).collect();
    headers.extend([
        (H_STAGE.to_string(), d.stage.clone().into_bytes()),
        (
            H_KIND.to_string(),
            d.failure.kind.as_str().as_bytes().to_vec(),
        ),
        (H_MESSAGE.to_string(), message.into_bytes()),
        (H_TOPIC.to_string(), o.topic.clone().into_bytes()),
        (
            H_PARTITION.to_string(),
            o.partition.to_string().into_bytes(),
        ),
        (H_OFFSET.to_string(), o.offset.to_string().into_bytes()),
        (H_PIPELINE.to_string(), pipeline.as_bytes().to_vec()),
    ]);
    Outgoing {
        topic: topic.to_string(),
        key: o.key.clone(),
        value: o.value.clone(),
        headers,
        timestamp: d.item.timestamp,
        role: Role::DeadLetter,
    }
}

/// The error kind of the dead letter of an output the broker refused.
fn refused_kind(e: &rdkafka::error::KafkaError) -> FailureKind {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge)
        | Some(RDKafkaErrorCode::InvalidMessageSize) => FailureKind::OutputTooLarge,
        _ => FailureKind::BadOutput,
    }
}

/// What to send instead of a record the broker refused for good, or `None`
/// when nothing smaller is possible.
fn instead_of(
    mut r: Outgoing,
    e: &rdkafka::error::KafkaError,
    dl: Option<&DeadLetters<'_>>,
) -> Option<Outgoing> {
    match (std::mem::replace(&mut r.role, Role::Final), dl) {
        (Role::Output(item), Some(dl)) => {
            let kind = refused_kind(e);
            let d = DeadLetter {
                item: *item,
                stage: KAFKA_SINK_STAGE.to_string(),
                failure: Failure::new(
                    kind,
                    format!(
                        "the broker refused the output for {} ({} bytes): {e}",
                        r.topic,
                        r.value.as_ref().map_or(0, Vec::len)
                    ),
                ),
            };
            tracing::warn!(pipeline = %dl.pipeline, "dead letter ({}): {}", d.failure.kind, d.failure.message);
            Some(dead_letter_record(dl.topic, dl.pipeline, &d))
        }
        (Role::DeadLetter, _) => {
            let len = r.value.as_ref().map_or(0, Vec::len);
            if let Some(v) = &mut r.value {
                v.truncate(TRIMMED_VALUE_BYTES);
            }
            r.headers
                .push((H_VALUE_BYTES.to_string(), len.to_string().into_bytes()));
            tracing::warn!("dead letter refused by the broker ({e}); sending it with its value cut to {TRIMMED_VALUE_BYTES} of {len} bytes");
            Some(r)
        }
        _ => None,
    }
}

/// Sends every record and waits for every acknowledgement; failed sends are
/// retried with backoff until they succeed or `stop` is raised (then the
/// batch is abandoned uncommitted, to be replayed).
async fn produce_all(
    producer: &FutureProducer,
    records: Vec<Outgoing>,
    stop: &watch::Receiver<bool>,
    dead_letters: Option<&DeadLetters<'_>>,
) -> Result<Refused> {
    let mut refused = Refused::default();
    let mut pending: Vec<Outgoing> = records;
    // Only the unacknowledged records are sent again; the delays (0.1 s
    // doubling up to 5 s, for as long as it takes) come from backon.
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build();
    loop {
        let sends = pending.iter().map(|r| {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut rec: FutureRecord<'_, Vec<u8>, Vec<u8>> =
                FutureRecord::to(&r.topic).headers(headers);
            if let Some(k) = &r.key {
                rec = rec.key(k);
            }
            if let Some(v) = &r.value {
                rec = rec.payload(v);
            }
            if let Some(ts) = r.timestamp {
                rec = rec.timestamp(ts);
            }
            producer.send(rec, Duration::from_secs(10))
        });
        let results = futures::future::join_all(sends).await;
        let mut failed = Vec::new();
        let mut last_err = None;
        for (r, res) in pending.into_iter().zip(results) {
            let Err((e, _)) = res else { continue };
            if permanent(&e) {
                // Retrying cannot help and would stop the partition for
                // good: send what stands in for it instead (at once).
                let topic = r.topic.clone();
                let was_output = matches!(r.role, Role::Output(_));
                match instead_of(r, &e, dead_letters) {
                    Some(other) => {
                        if was_output {
                            refused.outputs += 1;
                            refused.kinds.push(refused_kind(&e).as_str());
                        }
                        failed.push(other);
                    }
                    None => return Err(StreamError::kafka(format!("producing to {topic}"), e)),
                }
                continue;
            }
            last_err = Some(e);
            failed.push(r);
        }
        if failed.is_empty() {
            return Ok(refused);
        }
        if *stop.borrow() {
            return Err(StreamError::Unacknowledged(failed.len()));
        }
        let backoff = if last_err.is_none() {
            Duration::ZERO // only stand-ins for refused records to send
        } else {
            delays.next().unwrap_or(Duration::from_secs(5))
        };
        tracing::warn!(
            "{} record(s) not acknowledged ({}); retrying in {backoff:?}",
            failed.len(),
            last_err.map(|e| e.to_string()).unwrap_or_default()
        );
        tokio::time::sleep(backoff).await;
        pending = failed;
    }
}

/// Runs a client call that waits on the broker (metadata, committed
/// offsets, watermarks, a synchronous commit) on the blocking pool instead
/// of an async worker. With a busy broker such a call takes seconds, and
/// `weft serve` runs every tenant's pipeline loop on one runtime with a
/// worker per core: two of one tenant's pipelines waiting there stalled
/// another tenant's pipeline for 10 s (the tenancy bench's crash case).
/// `None` if the runtime is shutting down.
pub(super) async fn off_worker<T: Send + 'static>(
    consumer: &Arc<StreamConsumer>,
    call: impl FnOnce(&StreamConsumer) -> T + Send + 'static,
) -> Option<T> {
    let c = consumer.clone();
    match tokio::task::spawn_blocking(move || call(&c)).await {
        Ok(v) => Some(v),
        Err(e) => match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(_) => None,
        },
    }
}

/// Records of `topic` the consumer group has not committed yet, over all
/// partitions, or over `only` those of a static share (`None`: the broker
/// did not say). Idle exit waits for 0, not just for silence: after a
/// member dies, its partitions come back only when its session expires.
async fn group_lag(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    only: Option<&[i32]>,
) -> Option<i64> {
    partition_lags(consumer, topic, only)
        .await
        .map(|v| v.iter().map(|(_, n)| n).sum())
}

/// The group's lag on each partition of `topic` (high watermark minus
/// committed offset; a partition never committed counts all it holds),
/// of every partition or of `only` those.
async fn partition_lags(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    only: Option<&[i32]>,
) -> Option<Vec<(i32, i64)>> {
    let (topic, only) = (topic.to_string(), only.map(<[i32]>::to_vec));
    off_worker(consumer, move |c| lags_now(c, &topic, only.as_deref()))
        .await
        .flatten()
}

/// [`partition_lags`], blocking.
fn lags_now(
    consumer: &StreamConsumer,
    topic: &str,
    only: Option<&[i32]>,
) -> Option<Vec<(i32, i64)>> {
    let t = Duration::from_secs(2);
    let md = consumer.fetch_metadata(Some(topic), t).ok()?;
    let tm = md.topics().iter().find(|x| x.name() == topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in tm.partitions() {
        if only.is_none_or(|o| o.contains(&p.id())) {
            tpl.add_partition(topic, p.id());
        }
    }
    let committed = consumer.committed_offsets(tpl, t).ok()?;
    let mut lags = Vec::new();
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(topic, e.partition(), t).ok()?;
        lags.push((
            e.partition(),
            match e.offset() {
                Offset::Offset(o) => (high - o).max(0),
                _ => (high - low).max(0),
            },
        ));
    }
    Some(lags)
}

/// How often (at most) a running pipeline looks at its group's lag: a
/// few broker round trips each time.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// How often a static share looks for partitions added to its source.
const SHARE_CHECK_EVERY: Duration = Duration::from_secs(30);

/// Looks at the group's lag on `topic` if the last look is older than
/// [`LAG_EVERY`] (or `force`), and records it in `counters` and the
/// exported series.
async fn refresh_lag(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    counters: &Counters,
    only: Option<&[i32]>,
    last: &mut Option<Instant>,
    force: bool,
) -> Option<i64> {
    if !force && last.is_some_and(|t| t.elapsed() < LAG_EVERY) {
        return None;
    }
    *last = Some(Instant::now());
    let lags = partition_lags(consumer, topic, only).await?;
    for (p, n) in &lags {
        counters.metrics.set_lag(topic, *p, *n);
    }
    let total = lags.iter().map(|(_, n)| n).sum();
    if let Ok(mut l) = counters.lag.lock() {
        *l = Some(lags);
    }
    Some(total)
}

/// Points every stage of `pipeline` at the pipeline's exported series.
fn attach_metrics(pipeline: &mut Pipeline, metrics: &PipelineMetrics) {
    for s in &mut pipeline.stages {
        let m = metrics.stage(&s.name);
        s.set_metrics(m);
    }
}

/// Whether `consumer` holds any partition now.
fn holds_partitions(consumer: &StreamConsumer) -> bool {
    consumer.assignment().is_ok_and(|a| a.count() > 0)
}

/// Runs `pipeline` from its source topic to its sink topic until `stop` is
/// raised (or it has been idle for `idle_exit`). Returns the pipeline back.
pub async fn run(
    pipeline: Pipeline,
    opts: KafkaOptions,
    counters: Arc<Counters>,
    stop: watch::Receiver<bool>,
) -> Result<Pipeline> {
    run_with(pipeline, opts, counters, stop, Control::default()).await
}

/// [`run`], taking new versions and pausing on failures as `control` says.
pub async fn run_with(
    mut pipeline: Pipeline,
    opts: KafkaOptions,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
    mut control: Control,
) -> Result<Pipeline> {
    let mut breaker = Breaker::new(control.circuit.clone());
    let m = pipeline.manifest.clone();
    let sink = m.sink_topic.clone();
    let sink_desc = match (&sink, &m.sink_index) {
        (Some(t), Some(i)) => format!("{t} + index {i}"),
        (Some(t), None) => t.clone(),
        (None, Some(i)) => format!("index {i}"),
        (None, None) => return Err(StreamError::NoSink(m.name.clone())),
    };
    let group = opts
        .group
        .clone()
        .unwrap_or_else(|| format!("weft.{}.{}", m.tenant, m.name));
    let mut config = consumer_config(&opts.brokers, &group);
    if let Some(id) = &opts.instance_id {
        config.set("group.instance.id", format!("{id}.{}.{}", m.tenant, m.name));
    }
    let consumer: Arc<StreamConsumer> = Arc::new(
        config
            .create()
            .map_err(|e| StreamError::kafka("creating the Kafka consumer", e))?,
    );
    // In a static share, the partitions held (grown when the topic grows).
    let mut share = match opts.assign {
        Assignment::Group => {
            consumer
                .subscribe(&[&m.source_topic])
                .map_err(|e| StreamError::kafka(format!("subscribing to {}", m.source_topic), e))?;
            None
        }
        a @ Assignment::Static { .. } => {
            let held = assign::assign_share(&consumer, &m.source_topic, a).await?;
            tracing::info!(pipeline = %m.name, "--assign {a}: partitions {held:?} of {}", m.source_topic);
            Some(held)
        }
    };
    let mut last_share_check = Instant::now();
    let producer = producer(&opts.brokers)?;
    // A generator's answer pieces, produced as it emits them.
    let deltas = m.deltas_topic().map(|t| {
        Arc::new(KafkaDeltas::new(
            producer.clone(),
            &t,
            counters.metrics.clone(),
        ))
    });
    if let Some(d) = &deltas {
        pipeline.attach_deltas(d.clone());
    }
    // Documents chunked to a topic: remember each one's chunk keys, so a
    // shorter new version or a tombstone removes the keys it no longer has.
    let chunk_keys = match (&opts.state_dir, &sink, m.format) {
        (Some(dir), Some(_), Format::Document) => {
            Some(ChunkKeys::open(&dir.join(&m.tenant).join(&m.name))?)
        }
        _ => None,
    };
    tracing::info!(pipeline = %m.name, group = %group, "consuming {} -> {sink_desc}", m.source_topic);
    attach_metrics(&mut pipeline, &counters.metrics);
    let mut last_record = Instant::now();
    let mut paused = false;
    let mut stall = StallWatch::new(Instant::now());
    let mut last_lag: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        // A static share picks up partitions its source has gained (checked
        // here, at a batch boundary, so a busy pipeline sees them too).
        if let Some(held) = &mut share {
            if last_share_check.elapsed() >= SHARE_CHECK_EVERY {
                last_share_check = Instant::now();
                match assign::assign_new(&consumer, &m.source_topic, opts.assign, held).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(pipeline = %m.name, "{} gained {n} partition(s) of this share: now reading {held:?}", m.source_topic)
                    }
                    Err(e) => tracing::warn!(pipeline = %m.name, "looking for new partitions: {e}"),
                }
            }
        }
        // A batch boundary: the last batch is committed, so a new version
        // may take over from here.
        if let Some(rx) = &mut control.swap {
            while let Ok(next) = rx.try_recv() {
                pipeline = swapped_in(next, &mut breaker, &counters, &deltas);
            }
        }
        // An operator's pause takes precedence over the circuit (whose
        // state is kept and shown again on resume).
        let held = control.hold.as_ref().is_some_and(|h| *h.borrow());
        let open = if held {
            None
        } else {
            breaker.check(Instant::now()).cloned()
        };
        if held || open.is_some() {
            if !paused {
                set_paused(&consumer, true);
                paused = true;
                counters.metrics.paused.set(1);
            }
            counters.held.store(held, Ordering::Relaxed);
            if let Some(open) = &open {
                if counters.circuit_open().is_none() {
                    counters.set_circuit(Some(open.reason.clone()));
                }
            }
            let wait = open
                .map(|o| o.until.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::MAX)
                .min(Duration::from_millis(250));
            // Lag keeps growing while paused: keep showing it.
            refresh_lag(
                &consumer,
                &m.source_topic,
                &counters,
                share.as_deref(),
                &mut last_lag,
                false,
            )
            .await;
            let mut hold_rx = control.hold.clone();
            let hold_changed = async {
                match &mut hold_rx {
                    Some(h) => {
                        if h.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => break,
                _ = hold_changed => {}
                next = next_version(&mut control.swap) => {
                    if let Some(next) = next {
                        pipeline = swapped_in(next, &mut breaker, &counters, &deltas);
                    }
                }
                // Polled while paused so the group keeps this member; a
                // record from a partition assigned since the pause is put
                // back and its partition paused too.
                r = consumer.recv() => {
                    if let Ok(msg) = r {
                        let (t, p, o) = (msg.topic().to_string(), msg.partition(), msg.offset());
                        drop(msg);
                        if let Err(e) = consumer.seek(&t, p, Offset::Offset(o), Duration::from_secs(2)) {
                            tracing::warn!(pipeline = %m.name, "seeking back while paused: {e}");
                        }
                        set_paused(&consumer, true);
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        if paused {
            set_paused(&consumer, false);
            paused = false;
            counters.set_circuit(None);
            counters.held.store(false, Ordering::Relaxed);
            counters.metrics.paused.set(0);
        }
        let max = pipeline.manifest.batch_records as usize;
        let linger = Duration::from_millis(pipeline.manifest.linger_ms);
        // Wait for the first record of a batch, the stop signal, or idleness.
        let first = tokio::select! {
            _ = stop.changed() => break,
            r = consumer.recv() => r,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                let now = Instant::now();
                let mut lag = refresh_lag(&consumer, &m.source_topic, &counters, share.as_deref(), &mut last_lag, false).await;
                if stall.due(now) {
                    let holds = holds_partitions(&consumer);
                    if !holds && lag.is_none() {
                        lag = group_lag(&consumer, &m.source_topic, share.as_deref()).await;
                    }
                    let stalled = stall.observe(now, holds, lag, &m.source_topic);
                    if let Some(why) = &stalled {
                        if counters.stalled().is_none() {
                            tracing::warn!(pipeline = %m.name, "stalled: {why}");
                        }
                    }
                    counters.set_stalled(stalled);
                }
                // Idle exit once the group has consumed everything. A
                // process that holds no partition while the group has lag
                // is stalled, not done: once that has lasted the idle time
                // too it exits with an error saying so (the records stay
                // in the topic, uncommitted, for the group), rather than
                // wait forever or report success.
                if let Some(idle) = opts.idle_exit {
                    if last_record.elapsed() >= idle {
                        let lag = match lag {
                            Some(l) => Some(l),
                            None => group_lag(&consumer, &m.source_topic, share.as_deref()).await,
                        };
                        if lag == Some(0) {
                            break;
                        }
                        if let Some(lag) = lag {
                            if !holds_partitions(&consumer) && last_record.elapsed() >= idle * 2 {
                                return Err(StreamError::IdleWithoutPartitions {
                                    pipeline: m.name.clone(),
                                    topic: m.source_topic.clone(),
                                    lag,
                                    secs: last_record.elapsed().as_secs(),
                                });
                            }
                        }
                    }
                }
                continue;
            }
        };
        let batch_started = Instant::now();
        let mut batch = Vec::with_capacity(max);
        match first {
            Ok(msg) => batch.push(owned_item(&msg)),
            Err(e) => {
                tracing::warn!(pipeline = %m.name, "consumer: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(msg)) => batch.push(owned_item(&msg)),
                Ok(Err(e)) => {
                    tracing::warn!(pipeline = %m.name, "consumer: {e}");
                    break;
                }
                Err(_) => break,
            }
        }
        last_record = Instant::now();
        // A record came, so a partition is held: no stall.
        if stall
            .observe(last_record, true, None, &m.source_topic)
            .is_none()
            && counters.stalled().is_some()
        {
            counters.set_stalled(None);
        }
        let n = batch.len() as u64;
        // The offsets to commit once every output of this batch is durable.
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for it in &batch {
            let e = next
                .entry((it.origin.topic.clone(), it.origin.partition))
                .or_insert(0);
            *e = (*e).max(it.origin.offset + 1);
        }
        let gathered = batch_started.elapsed();
        let (p, outcome, indexed, phases) = tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let outcome = pipeline.process(batch);
            let processed = t0.elapsed();
            let indexed = pipeline
                .sink
                .as_deref()
                .map(|sink| write_sink(sink, &outcome))
                .transpose();
            (
                pipeline,
                outcome,
                indexed,
                (processed, t0.elapsed() - processed),
            )
        })
        .await
        .map_err(|e| StreamError::WorkerPanicked {
            pipeline: m.name.clone(),
            message: e.to_string(),
        })?;
        pipeline = p;
        // The index could not be written even after retries: stop without
        // committing, so the batch is replayed by whoever runs next.
        let indexed = indexed.map_err(|source| StreamError::Sink {
            pipeline: m.name.clone(),
            source,
        })?;
        let mut outcome = outcome;
        if let Some(r) = &indexed {
            // A record the index refused is a dead letter, not an output too.
            outcome.drop_outputs_of(&r.dead);
        }
        let mut outgoing: Vec<Outgoing> = match &sink {
            Some(topic) => outcome
                .outputs
                .iter()
                .map(|it| output_record(topic, it))
                .collect(),
            None => Vec::new(),
        };
        let plan = match (&chunk_keys, &sink) {
            (Some(ck), Some(topic)) => {
                let failed: std::collections::HashSet<_> = outcome
                    .dead
                    .iter()
                    .chain(indexed.iter().flat_map(|r| r.dead.iter()))
                    .map(|d| {
                        let o = &d.item.origin;
                        (o.topic.clone(), o.partition, o.offset)
                    })
                    .collect();
                let plan = ck.plan(&outcome.outputs, &failed)?;
                for (key, timestamp) in &plan.tombstones {
                    outgoing.push(Outgoing {
                        topic: topic.clone(),
                        key: Some(key.clone()),
                        value: None,
                        headers: Vec::new(),
                        timestamp: *timestamp,
                        role: Role::Final,
                    });
                }
                Some(plan)
            }
            _ => None,
        };
        let produced = outgoing.len() as u64;
        let mut dead: Vec<&DeadLetter> = outcome.dead.iter().collect();
        if let Some(r) = &indexed {
            dead.extend(r.dead.iter());
            counters
                .indexed_docs
                .fetch_add(r.docs_upserted + r.docs_deleted, Ordering::Relaxed);
            for f in &r.freshness_ms {
                counters.freshness.record(*f);
                counters.metrics.freshness.observe(f.max(0.0) / 1000.0);
            }
        }
        let n_dead = dead.len() as u64;
        if let Some(open) = breaker.record(Instant::now(), n.saturating_sub(n_dead), &dead) {
            tracing::error!(pipeline = %m.name, "circuit open: {}", open.reason);
        }
        for d in &dead {
            counters
                .metrics
                .dead_letter(&d.stage, d.failure.kind.as_str());
        }
        if let Some(d) = dead.last() {
            if let Ok(mut e) = counters.last_error.lock() {
                *e = Some(LastError {
                    stage: d.stage.clone(),
                    kind: d.failure.kind.as_str().to_string(),
                    message: d.failure.message.chars().take(500).collect(),
                    at_ms: chrono_ms(),
                });
            }
        }
        for d in dead {
            tracing::warn!(
                pipeline = %m.name, stage = %d.stage, topic = %d.item.origin.topic,
                partition = d.item.origin.partition, offset = d.item.origin.offset,
                "dead letter ({}): {}", d.failure.kind, d.failure.message
            );
            outgoing.push(dead_letter_record(&m.dead_letter_topic, &m.name, d));
        }
        let dl = DeadLetters {
            topic: &m.dead_letter_topic,
            pipeline: &m.name,
        };
        // Every answer's stream ends before the answer itself is produced:
        // a reader that has the answer has its whole stream.
        if let Some(d) = &deltas {
            d.settle(Duration::from_secs(30)).await;
        }
        let produce_started = Instant::now();
        let refused = produce_all(&producer, outgoing, &stop, Some(&dl)).await?;
        let produce_took = produce_started.elapsed();
        if m.format == Format::Question {
            // Acknowledged: the answers are on the sink topic now.
            let now = chrono_ms();
            for it in &outcome.outputs {
                if let Some(ts) = it.timestamp {
                    counters
                        .metrics
                        .answer
                        .observe((now - ts).max(0) as f64 / 1000.0);
                }
            }
        }
        if let (Some(ck), Some(plan)) = (&chunk_keys, plan) {
            // Acknowledged: the new keys become the ones to compare with.
            ck.record(plan)?;
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &next {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o))
                .map_err(|e| StreamError::kafka("building the commit", e))?;
        }
        let commit_started = Instant::now();
        let committed = off_worker(&consumer, move |c| c.commit(&tpl, CommitMode::Sync)).await;
        // Where a batch's time went, for `WEFT_LOG=weft=debug`: a record's
        // freshness is about the hop, half a batch cycle and its own batch.
        tracing::debug!(
            pipeline = %m.name,
            records = n,
            gather_ms = ms(gathered),
            process_ms = ms(phases.0),
            index_ms = ms(phases.1),
            produce_ms = ms(produce_took),
            commit_ms = ms(commit_started.elapsed()),
            "batch"
        );
        if let Some(Err(e)) = committed {
            // Typically a rebalance took the partition away: the new owner
            // replays from the last commit, and idempotent keys absorb it.
            tracing::warn!(pipeline = %m.name, "commit failed (batch will be replayed): {e}");
        }
        counters.consumed.fetch_add(n, Ordering::Relaxed);
        counters
            .produced
            .fetch_add(produced - refused.outputs, Ordering::Relaxed);
        counters
            .dead_letters
            .fetch_add(n_dead + refused.outputs, Ordering::Relaxed);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        let pm = &counters.metrics;
        pm.batch_commit
            .observe(batch_started.elapsed().as_secs_f64());
        pm.records_in.inc_by(n);
        pm.records_out.inc_by(produced - refused.outputs);
        for kind in &refused.kinds {
            pm.dead_letter(KAFKA_SINK_STAGE, kind);
        }
        pm.batches.inc();
        refresh_lag(
            &consumer,
            &m.source_topic,
            &counters,
            share.as_deref(),
            &mut last_lag,
            false,
        )
        .await;
    }
    Ok(pipeline)
}

/// Takes `next` as the running version: counted, and with its circuit
/// closed (a new version deserves a fresh start).
fn swapped_in(
    mut next: Pipeline,
    breaker: &mut Breaker,
    counters: &Counters,
    deltas: &Option<Arc<KafkaDeltas>>,
) -> Pipeline {
    breaker.reset();
    attach_metrics(&mut next, &counters.metrics);
    if let Some(d) = deltas {
        next.attach_deltas(d.clone());
    }
    counters.reloads.fetch_add(1, Ordering::Relaxed);
    counters.metrics.reloads.inc();
    tracing::info!(pipeline = %next.manifest.name, "new version swapped in");
    next
}

/// Pauses (or resumes) every partition assigned to `consumer`.
fn set_paused(consumer: &StreamConsumer, pause: bool) {
    let Ok(assigned) = consumer.assignment() else {
        return;
    };
    let r = if pause {
        consumer.pause(&assigned)
    } else {
        consumer.resume(&assigned)
    };
    if let Err(e) = r {
        tracing::warn!(
            "{} the consumer: {e}",
            if pause { "pausing" } else { "resuming" }
        );
    }
}

/// A record read back from a topic (for `weft dev`'s display and tools).
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record's Kafka timestamp (ms since the epoch).
    pub timestamp: Option<i64>,
}

fn read_record(m: &rdkafka::message::BorrowedMessage<'_>) -> ReadRecord {
    let it = owned_item(m);
    ReadRecord {
        partition: m.partition(),
        offset: m.offset(),
        key: it.key,
        value: m.payload().map(<[u8]>::to_vec),
        headers: it.headers,
        timestamp: it.timestamp,
    }
}

/// Follows `topic` from its beginning and sends every record as it arrives,
/// with the wall-clock time (ms since the epoch) it arrived, until the
/// receiver is dropped. For demos, tests and latency measurements.
pub fn follow_topic(
    brokers: &str,
    topic: &str,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<(ReadRecord, i64)>> {
    let group = format!(
        "weft-follower-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let consumer: StreamConsumer = base_config(brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(|e| StreamError::kafka("creating a follower", e))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| StreamError::kafka(format!("subscribing to {topic}"), e))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tx.closed() => break,
                r = consumer.recv() => match r {
                    Ok(m) => {
                        let now = chrono_ms();
                        if tx.send((read_record(&m), now)).is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!("follower: {e}"),
                },
            }
        }
    });
    Ok(rx)
}

/// Now, in ms since the epoch.
pub fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reads a topic from the beginning until nothing new arrives for `idle`.
pub async fn read_topic(brokers: &str, topic: &str, idle: Duration) -> Result<Vec<ReadRecord>> {
    let group = format!(
        "weft-reader-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let consumer: StreamConsumer = base_config(brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| StreamError::kafka("creating a reader", e))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| StreamError::kafka(format!("subscribing to {topic}"), e))?;
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(idle, consumer.recv()).await {
            Ok(Ok(m)) => out.push(read_record(&m)),
            Ok(Err(e)) => tracing::warn!("reader: {e}"),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// A record's key and value (`None` value = tombstone).
pub type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Produces `(key, value)` pairs to `topic` and waits for acknowledgement.
pub async fn produce_values(brokers: &str, topic: &str, records: Vec<KeyValue>) -> Result<()> {
    let p = producer(brokers)?;
    let (_tx, rx) = watch::channel(false);
    let out = records
        .into_iter()
        .map(|(key, value)| Outgoing {
            topic: topic.to_string(),
            key,
            value,
            headers: Vec::new(),
            timestamp: None,
            role: Role::Final,
        })
        .collect();
    produce_all(&p, out, &rx, None).await.map(|_| ())
}

/// A consumer outside any group's assignment (positions are assigned,
/// nothing is committed), for the admin tools: no group join, which takes
/// tansu seconds.
fn tool_consumer(brokers: &str) -> Result<StreamConsumer> {
    let group = format!("weft-tool-{}-{}", std::process::id(), rand::random::<u32>());
    base_config(brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(|e| StreamError::kafka("creating a reader", e))
}

/// `(partition, low, high)` watermarks of every partition of `topic`.
fn watermarks(consumer: &StreamConsumer, topic: &str) -> Result<Vec<(i32, i64, i64)>> {
    let t = Duration::from_secs(5);
    let md = consumer
        .fetch_metadata(Some(topic), t)
        .map_err(|e| StreamError::kafka(format!("reading the metadata of {topic}"), e))?;
    let Some(tm) = md.topics().iter().find(|x| x.name() == topic) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for p in tm.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), t)
            .map_err(|e| StreamError::kafka(format!("reading the offsets of {topic}"), e))?;
        out.push((p.id(), low, high));
    }
    Ok(out)
}

/// Reads `topic` from `from` (partition -> first offset) up to each
/// partition's high watermark `to`, giving up after `limit`.
async fn read_between(
    consumer: &StreamConsumer,
    topic: &str,
    ranges: &[(i32, i64, i64)],
    limit: Duration,
) -> Result<Vec<ReadRecord>> {
    let mut tpl = TopicPartitionList::new();
    let mut left: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, from, to) in ranges {
        if from < to {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*from))
                .map_err(|e| StreamError::kafka("assigning partitions", e))?;
            left.insert(*p, *to);
        }
    }
    let mut out = Vec::new();
    if left.is_empty() {
        return Ok(out);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| StreamError::kafka(format!("reading {topic}"), e))?;
    let deadline = tokio::time::Instant::now() + limit;
    while !left.is_empty() {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => {
                let (p, o) = (m.partition(), m.offset());
                if let Some(end) = left.get(&p).copied() {
                    if o < end {
                        out.push(read_record(&m));
                    }
                    if o + 1 >= end {
                        left.remove(&p);
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!("reading {topic}: {e}"),
            Err(_) => {
                return Err(StreamError::Broker(format!(
                    "reading {topic}: the broker did not deliver the records up to its high watermark within {limit:?}"
                )))
            }
        }
    }
    Ok(out)
}

/// The last `n` records of `topic` over all its partitions, oldest first
/// (by timestamp, then partition and offset).
pub async fn tail_topic(brokers: &str, topic: &str, n: usize) -> Result<Vec<ReadRecord>> {
    let consumer = tool_consumer(brokers)?;
    let ranges: Vec<(i32, i64, i64)> = watermarks(&consumer, topic)?
        .into_iter()
        .map(|(p, low, high)| (p, low.max(high - n as i64), high))
        .collect();
    let mut out = read_between(&consumer, topic, &ranges, Duration::from_secs(30)).await?;
    out.sort_by_key(|r| (r.timestamp.unwrap_or(0), r.partition, r.offset));
    let skip = out.len().saturating_sub(n);
    Ok(out.split_off(skip))
}

/// Every record of `topic` now (up to the high watermarks), or only those
/// at `only` (partition, offset) positions.
pub async fn read_records(
    brokers: &str,
    topic: &str,
    only: Option<&[(i32, i64)]>,
) -> Result<Vec<ReadRecord>> {
    let consumer = tool_consumer(brokers)?;
    let ranges: Vec<(i32, i64, i64)> = watermarks(&consumer, topic)?
        .into_iter()
        .filter_map(|(p, low, high)| match only {
            None => Some((p, low, high)),
            Some(at) => {
                let mine: Vec<i64> = at
                    .iter()
                    .filter(|(q, _)| *q == p)
                    .map(|(_, o)| *o)
                    .collect();
                let first = mine.iter().min()?;
                let last = mine.iter().max()?;
                Some((p, (*first).max(low), (last + 1).min(high)))
            }
        })
        .collect();
    let all = read_between(&consumer, topic, &ranges, Duration::from_secs(30)).await?;
    Ok(match only {
        None => all,
        Some(at) => all
            .into_iter()
            .filter(|r| at.contains(&(r.partition, r.offset)))
            .collect(),
    })
}

/// A record to produce with its headers.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Produces `records` and waits until the broker acknowledged them all
/// (retrying as the pipelines do).
pub async fn produce_records(brokers: &str, records: Vec<NewRecord>) -> Result<()> {
    let p = producer(brokers)?;
    let (_tx, rx) = watch::channel(false);
    let out = records
        .into_iter()
        .map(|r| Outgoing {
            topic: r.topic,
            key: r.key,
            value: r.value,
            headers: r.headers,
            timestamp: None,
            role: Role::Final,
        })
        .collect();
    produce_all(&p, out, &rx, None).await.map(|_| ())
}

/// Where each of some topics ends now: what [`await_key`] reads from.
#[derive(Debug, Clone)]
pub struct TopicEnds(Vec<(String, Vec<(i32, i64)>)>);

/// The high watermarks of `topics` now.
pub fn topic_ends(brokers: &str, topics: &[&str]) -> Result<TopicEnds> {
    let consumer = tool_consumer(brokers)?;
    let mut out = Vec::new();
    for t in topics {
        let ends = watermarks(&consumer, t)?
            .into_iter()
            .map(|(p, _, high)| (p, high))
            .collect();
        out.push((t.to_string(), ends));
    }
    Ok(TopicEnds(out))
}

/// The first record with key `key` written to any of the topics after
/// `from`, with its topic, or `None` after `limit`.
pub async fn await_key(
    brokers: &str,
    from: &TopicEnds,
    key: &[u8],
    limit: Duration,
) -> Result<Option<(String, ReadRecord)>> {
    let mut rx = keyed_records(brokers, from, key, limit)?;
    Ok(rx.recv().await)
}

/// Every record with key `key` written to any of the topics after `from`,
/// with its topic, as it arrives, for `limit` (or until the receiver is
/// dropped). A question's answer pieces, answer and dead letter, for one.
pub fn keyed_records(
    brokers: &str,
    from: &TopicEnds,
    key: &[u8],
    limit: Duration,
) -> Result<tokio::sync::mpsc::Receiver<(String, ReadRecord)>> {
    let consumer = tool_consumer(brokers)?;
    let mut tpl = TopicPartitionList::new();
    for (t, ends) in &from.0 {
        for (p, o) in ends {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o))
                .map_err(|e| StreamError::kafka("assigning partitions", e))?;
        }
    }
    consumer
        .assign(&tpl)
        .map_err(|e| StreamError::kafka("reading for an answer", e))?;
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let key = key.to_vec();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            tokio::select! {
                _ = tx.closed() => break,
                r = tokio::time::timeout_at(deadline, consumer.recv()) => match r {
                    Ok(Ok(m)) if m.key() == Some(key.as_slice()) => {
                        let item = (m.topic().to_string(), read_record(&m));
                        if tx.send(item).await.is_err() {
                            break;
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!("waiting for an answer: {e}"),
                    Err(_) => break,
                },
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_limit_is_the_one_weft_keeps_its_records_under() {
        let set = PRODUCER_SETTINGS
            .iter()
            .find(|(k, _)| *k == "message.max.bytes")
            .map(|(_, v)| v.parse::<usize>().ok());
        assert_eq!(set, Some(Some(MAX_MESSAGE_BYTES)));
    }
}

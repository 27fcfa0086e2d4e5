//! Metrics any layer may update: the Prometheus registry a process exports
//! (`--metrics`), with handles per pipeline ([`PipelineMetrics`]) and per
//! stage ([`StageMetrics`]) resolved once so the hot path only touches
//! atomics, and a latency [`Histogram`] (HdrHistogram) for the percentile
//! summaries printed in progress lines and reports.
//!
//! Series are pushed where the event happens (a call, a commit, a dead
//! letter), not derived from progress lines, so a scrape sees the same
//! figures the process acted on. Handles made without a registry
//! ([`PipelineMetrics::detached`], `StageMetrics::default()`) count into
//! nothing exported: library users and tests that never export pay a few
//! atomics and nothing else.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram as PromHistogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Percentile summaries: HdrHistogram in µs with 3 significant digits (any
/// quantile within 0.1 %), from 1 µs to a week; larger values saturate.
const HDR_MAX_US: u64 = 7 * 24 * 3_600 * 1_000_000;

/// A thread-safe histogram of milliseconds, for percentile summaries.
pub struct Histogram {
    inner: Mutex<Inner>,
}

struct Inner {
    hist: hdrhistogram::Histogram<u64>,
    /// The exact largest value, so `quantile(1.0)` is the true maximum
    /// rather than the top of its HdrHistogram bucket.
    max: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            inner: Mutex::new(Inner {
                hist: hdrhistogram::Histogram::new_with_bounds(1, HDR_MAX_US, 3)
                    .expect("static histogram bounds are valid"),
                max: 0.0,
            }),
        }
    }
}

impl Histogram {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, ms: f64) {
        let us = if ms.is_finite() {
            (ms * 1000.0).round().max(1.0)
        } else {
            1.0
        };
        let mut i = self.lock();
        i.hist.saturating_record((us as u64).min(HDR_MAX_US));
        if ms > i.max {
            i.max = ms;
        }
    }

    pub fn count(&self) -> u64 {
        self.lock().hist.len()
    }

    /// The `q` quantile (0..=1) in milliseconds, `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let i = self.lock();
        if i.hist.is_empty() {
            return None;
        }
        let v = i.hist.value_at_quantile(q.clamp(0.0, 1.0)) as f64 / 1000.0;
        Some(v.min(i.max))
    }

    /// "p50 12 ms, p99 40 ms (n = 1000)", or `None` when empty.
    pub fn summary(&self) -> Option<String> {
        let (p50, p99) = (self.quantile(0.5)?, self.quantile(0.99)?);
        Some(format!(
            "p50 {} ms, p99 {} ms (n = {})",
            fmt_ms(p50),
            fmt_ms(p99),
            self.count()
        ))
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms:.1}")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub tenant: String,
    pub pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub tenant: String,
    pub pipeline: String,
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub tenant: String,
    pub pipeline: String,
    pub stage: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub tenant: String,
    pub pipeline: String,
    pub topic: String,
    pub partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IndexLabels {
    pub tenant: String,
    pub index: String,
}

type Hist<L> = Family<L, PromHistogram, fn() -> PromHistogram>;

/// Call latencies: 0.1 ms to ~26 s (doubling), Wasm calls span that.
fn call_buckets() -> PromHistogram {
    PromHistogram::new(exponential_buckets(0.0001, 2.0, 19))
}

/// Seconds-scale latencies (freshness, answers, batches): 5 ms to ~10 min.
fn latency_buckets() -> PromHistogram {
    PromHistogram::new(exponential_buckets(0.005, 2.0, 18))
}

struct Families {
    records_in: Family<PipelineLabels, Counter>,
    records_out: Family<PipelineLabels, Counter>,
    batches: Family<PipelineLabels, Counter>,
    reloads: Family<PipelineLabels, Counter>,
    paused: Family<PipelineLabels, Gauge>,
    dead_letters: Family<DeadLetterLabels, Counter>,
    retries: Family<StageLabels, Counter>,
    calls: Family<StageLabels, Counter>,
    call_seconds: Hist<StageLabels>,
    recycles: Family<StageLabels, Counter>,
    memory_peak: Family<StageLabels, Gauge>,
    lag: Family<PartitionLabels, Gauge>,
    batch_commit: Hist<PipelineLabels>,
    freshness: Hist<PipelineLabels>,
    answer: Hist<PipelineLabels>,
    first_token: Hist<PipelineLabels>,
    index_documents: Family<IndexLabels, Gauge>,
    index_chunks: Family<IndexLabels, Gauge>,
    index_pending: Family<IndexLabels, Gauge>,
    index_bytes: Family<IndexLabels, Gauge>,
}

/// One process's exported metrics (cheap to clone: shared handles). Every
/// series is named `weft_*` and labelled with tenant and pipeline (and
/// stage, error kind, partition where they apply).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    f: Arc<Families>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let f = Families {
            records_in: Family::default(),
            records_out: Family::default(),
            batches: Family::default(),
            reloads: Family::default(),
            paused: Family::default(),
            dead_letters: Family::default(),
            retries: Family::default(),
            calls: Family::default(),
            call_seconds: Family::new_with_constructor(call_buckets),
            recycles: Family::default(),
            memory_peak: Family::default(),
            lag: Family::default(),
            batch_commit: Family::new_with_constructor(latency_buckets),
            freshness: Family::new_with_constructor(latency_buckets),
            answer: Family::new_with_constructor(latency_buckets),
            first_token: Family::new_with_constructor(latency_buckets),
            index_documents: Family::default(),
            index_chunks: Family::default(),
            index_pending: Family::default(),
            index_bytes: Family::default(),
        };
        let mut r = Registry::with_prefix("weft");
        r.register(
            "records_in",
            "Source records processed and committed",
            f.records_in.clone(),
        );
        r.register(
            "records_out",
            "Records produced to the sink topic and acknowledged (outputs and chunk tombstones)",
            f.records_out.clone(),
        );
        r.register("batches", "Batches committed", f.batches.clone());
        r.register(
            "reloads",
            "New versions of the pipeline swapped in while running",
            f.reloads.clone(),
        );
        r.register(
            "pipeline_paused",
            "1 while the pipeline's partitions are paused (circuit open or paused by an operator)",
            f.paused.clone(),
        );
        r.register(
            "dead_letters",
            "Records sent to the dead-letter topic, by failing stage and error kind",
            f.dead_letters.clone(),
        );
        r.register(
            "retries",
            "Plugin calls retried after a transient error",
            f.retries.clone(),
        );
        r.register(
            "stage_calls",
            "Calls into the stage's plugin (a batch is one call; an isolated replay is one call per record)",
            f.calls.clone(),
        );
        r.register(
            "stage_call_seconds",
            "Duration of one call into the stage's plugin, waiting for a worker excluded",
            f.call_seconds.clone(),
        );
        r.register(
            "instance_recycles",
            "Plugin instances dropped after a trap or a broken limit (the next call gets a fresh one)",
            f.recycles.clone(),
        );
        r.register(
            "wasm_memory_peak_bytes",
            "Largest linear memories + tables of one instance of the stage seen after a call",
            f.memory_peak.clone(),
        );
        r.register(
            "consumer_lag",
            "Records of the source partition the pipeline's consumer group has not committed",
            f.lag.clone(),
        );
        r.register(
            "batch_commit_seconds",
            "From a batch's first record received to its offsets committed (outputs, dead letters and index writes durable)",
            f.batch_commit.clone(),
        );
        r.register(
            "freshness_seconds",
            "From a document record's timestamp to its index transaction committed (searchable)",
            f.freshness.clone(),
        );
        r.register(
            "question_answer_seconds",
            "From a question record's timestamp to its answer acknowledged on the sink topic",
            f.answer.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "From a question record's timestamp to the first piece of its answer handed to the producer (generators that stream)",
            f.first_token.clone(),
        );
        r.register(
            "index_documents",
            "Documents in the index",
            f.index_documents.clone(),
        );
        r.register(
            "index_chunks",
            "Chunks (vectors) in the index",
            f.index_chunks.clone(),
        );
        r.register(
            "index_pending",
            "Additions and deletions searchable but not yet folded into the index's trees",
            f.index_pending.clone(),
        );
        r.register(
            "index_bytes",
            "LMDB bytes in use by the index (store and trees, pages holding data)",
            f.index_bytes.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            f: Arc::new(f),
        }
    }

    /// Handles for one pipeline of `tenant`. Asking again for the same
    /// names gives handles on the same series, so a restarted pipeline's
    /// counters go on from where they were.
    pub fn pipeline(&self, tenant: &str, pipeline: &str) -> Arc<PipelineMetrics> {
        Arc::new(self.pipeline_metrics(tenant, pipeline))
    }

    fn pipeline_metrics(&self, tenant: &str, pipeline: &str) -> PipelineMetrics {
        let labels = PipelineLabels {
            tenant: tenant.to_string(),
            pipeline: pipeline.to_string(),
        };
        let f = &self.f;
        PipelineMetrics {
            records_in: f.records_in.get_or_create_owned(&labels),
            records_out: f.records_out.get_or_create_owned(&labels),
            batches: f.batches.get_or_create_owned(&labels),
            reloads: f.reloads.get_or_create_owned(&labels),
            paused: f.paused.get_or_create_owned(&labels),
            batch_commit: f.batch_commit.get_or_create_owned(&labels),
            freshness: f.freshness.get_or_create_owned(&labels),
            answer: f.answer.get_or_create_owned(&labels),
            first_token: f.first_token.get_or_create_owned(&labels),
            metrics: self.clone(),
            labels,
        }
    }

    /// Sets the figures of `tenant`'s index `index`.
    pub fn set_index(&self, tenant: &str, index: &str, figures: IndexFigures) {
        let l = IndexLabels {
            tenant: tenant.to_string(),
            index: index.to_string(),
        };
        let set = |g: &Family<IndexLabels, Gauge>, v: u64| {
            g.get_or_create(&l)
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.f.index_documents, figures.documents);
        set(&self.f.index_chunks, figures.chunks);
        set(&self.f.index_pending, figures.pending);
        set(&self.f.index_bytes, figures.bytes);
    }

    /// Everything in Prometheus' text format (OpenMetrics 1.0, which
    /// Prometheus scrapes; see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the exporter reads from an index at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexFigures {
    pub documents: u64,
    pub chunks: u64,
    pub pending: u64,
    pub bytes: u64,
}

/// The series of one pipeline. The counters are resolved once; series with
/// a further label (stage, kind, partition) are looked up when they change.
pub struct PipelineMetrics {
    pub records_in: Counter,
    pub records_out: Counter,
    pub batches: Counter,
    pub reloads: Counter,
    pub paused: Gauge,
    pub batch_commit: PromHistogram,
    pub freshness: PromHistogram,
    pub answer: PromHistogram,
    pub first_token: PromHistogram,
    metrics: Metrics,
    labels: PipelineLabels,
}

impl Default for PipelineMetrics {
    /// Handles that count into a registry nobody exports.
    fn default() -> Self {
        Metrics::new().pipeline_metrics("", "")
    }
}

impl PipelineMetrics {
    /// Handles that count into a registry nobody exports.
    pub fn detached() -> Arc<PipelineMetrics> {
        Arc::new(PipelineMetrics::default())
    }

    /// One dead letter from `stage` of `kind` (`trap`, `timeout`, ...).
    pub fn dead_letter(&self, stage: &str, kind: &str) {
        self.metrics
            .f
            .dead_letters
            .get_or_create(&DeadLetterLabels {
                tenant: self.labels.tenant.clone(),
                pipeline: self.labels.pipeline.clone(),
                stage: stage.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// The group's lag on one source partition.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.metrics
            .f
            .lag
            .get_or_create(&PartitionLabels {
                tenant: self.labels.tenant.clone(),
                pipeline: self.labels.pipeline.clone(),
                topic: topic.to_string(),
                partition: partition.to_string(),
            })
            .set(lag);
    }

    /// Handles for the stage named `stage` of this pipeline.
    pub fn stage(&self, stage: &str) -> Arc<StageMetrics> {
        let l = StageLabels {
            tenant: self.labels.tenant.clone(),
            pipeline: self.labels.pipeline.clone(),
            stage: stage.to_string(),
        };
        let f = &self.metrics.f;
        Arc::new(StageMetrics {
            calls: f.calls.get_or_create_owned(&l),
            call_seconds: f.call_seconds.get_or_create_owned(&l),
            recycles: f.recycles.get_or_create_owned(&l),
            retries: f.retries.get_or_create_owned(&l),
            memory_peak: f.memory_peak.get_or_create_owned(&l),
        })
    }
}

/// The series of one stage, updated by the runtime on every call.
pub struct StageMetrics {
    calls: Counter,
    call_seconds: PromHistogram,
    recycles: Counter,
    retries: Counter,
    memory_peak: Gauge,
}

impl Default for StageMetrics {
    fn default() -> Self {
        StageMetrics {
            calls: Counter::default(),
            call_seconds: call_buckets(),
            recycles: Counter::default(),
            retries: Counter::default(),
            memory_peak: Gauge::default(),
        }
    }
}

impl StageMetrics {
    /// One call that took `took`, after which the instance's memories and
    /// tables held `memory_bytes`.
    pub fn call(&self, took: Duration, memory_bytes: usize) {
        self.calls.inc();
        self.call_seconds.observe(took.as_secs_f64());
        let m = i64::try_from(memory_bytes).unwrap_or(i64::MAX);
        self.memory_peak.inner().fetch_max(m, Ordering::Relaxed);
    }

    /// An instance was dropped after a failure.
    pub fn recycled(&self) {
        self.recycles.inc();
    }

    /// `n` inputs are called again after a transient error.
    pub fn retried(&self, n: u64) {
        self.retries.inc_by(n);
    }

    pub fn calls(&self) -> u64 {
        self.calls.get()
    }

    pub fn recycles(&self) -> u64 {
        self.recycles.get()
    }

    pub fn retries(&self) -> u64 {
        self.retries.get()
    }

    pub fn memory_peak(&self) -> i64 {
        self.memory_peak.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_five_percent() {
        let h = Histogram::default();
        for i in 1..=1000 {
            h.record(i as f64);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((p50 - 500.0).abs() / 500.0 < 0.05, "{p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.05, "{p99}");
        assert_eq!(h.quantile(1.0).unwrap(), 1000.0);
        assert!(Histogram::default().quantile(0.5).is_none());
        assert_eq!(h.count(), 1000);
        assert!(h.summary().unwrap().ends_with("(n = 1000)"));
    }

    #[test]
    fn series_carry_their_labels_and_survive_a_second_handle() {
        let m = Metrics::new();
        let p = m.pipeline("acme", "ingest");
        p.records_in.inc_by(312);
        p.dead_letter("chunk", "trap");
        p.set_lag("acme.docs", 2, 7);
        let s = p.stage("embed");
        s.call(Duration::from_millis(3), 1 << 20);
        s.call(Duration::from_millis(4), 1 << 19);
        // The same series, not a new one.
        m.pipeline("acme", "ingest").records_in.inc();
        let text = m.encode();
        for want in [
            "weft_records_in_total{tenant=\"acme\",pipeline=\"ingest\"} 313",
            "weft_dead_letters_total{tenant=\"acme\",pipeline=\"ingest\",stage=\"chunk\",kind=\"trap\"} 1",
            "weft_consumer_lag{tenant=\"acme\",pipeline=\"ingest\",topic=\"acme.docs\",partition=\"2\"} 7",
            "weft_stage_calls_total{tenant=\"acme\",pipeline=\"ingest\",stage=\"embed\"} 2",
            "weft_wasm_memory_peak_bytes{tenant=\"acme\",pipeline=\"ingest\",stage=\"embed\"} 1048576",
            "weft_stage_call_seconds_count{tenant=\"acme\",pipeline=\"ingest\",stage=\"embed\"} 2",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        // Detached handles export nothing here.
        PipelineMetrics::detached().records_in.inc();
        assert!(!m.encode().contains("pipeline=\"\""));
    }
}

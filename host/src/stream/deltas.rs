//! A generator's answer pieces on Kafka: each piece is produced the moment
//! the plugin emits it to `<answers topic>.deltas` (key: the question id,
//! value: a [`Delta`] as JSON), so a reader sees the answer appear while it
//! is generated. Producing never blocks the plugin call; a piece the
//! producer cannot queue is dropped and the stream's final piece then
//! carries the whole answer (`reset`). Before a batch's offsets are
//! committed its pieces are awaited ([`KafkaDeltas::settle`]), so a
//! committed answer's stream is on the topic too.

use crate::metrics::PipelineMetrics;
use crate::runtime::{Delta, DeltaSink};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The Kafka side of one pipeline's answer streams.
pub struct KafkaDeltas {
    producer: FutureProducer,
    topic: String,
    metrics: Arc<PipelineMetrics>,
    in_flight: Mutex<Vec<DeliveryFuture>>,
    /// Pieces not queued or not acknowledged.
    pub lost: AtomicU64,
    /// Pieces acknowledged by the broker.
    pub delivered: AtomicU64,
}

impl KafkaDeltas {
    pub fn new(
        producer: FutureProducer,
        topic: &str,
        metrics: Arc<PipelineMetrics>,
    ) -> KafkaDeltas {
        KafkaDeltas {
            producer,
            topic: topic.to_string(),
            metrics,
            in_flight: Mutex::new(Vec::new()),
            lost: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Waits (each at most `limit`) for the pieces handed on so far to be
    /// acknowledged; a piece that is not is counted as lost and logged. It
    /// does not hold up the batch beyond that: the answers topic carries
    /// the complete answer either way.
    pub async fn settle(&self, limit: Duration) {
        let pending = match self.in_flight.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => return,
        };
        let mut lost = 0u64;
        let n = pending.len() as u64;
        for f in pending {
            match tokio::time::timeout(limit, f).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err((e, _)))) => {
                    lost += 1;
                    tracing::warn!(topic = %self.topic, "answer piece not delivered: {e}");
                }
                _ => lost += 1,
            }
        }
        self.lost.fetch_add(lost, Ordering::Relaxed);
        self.delivered.fetch_add(n - lost, Ordering::Relaxed);
    }
}

impl DeltaSink for KafkaDeltas {
    fn send(&self, d: Delta, origin_ms: Option<i64>) -> bool {
        let now = super::kafka::chrono_ms();
        if d.seq == 0 && !d.last {
            if let Some(t) = origin_ms {
                self.metrics
                    .first_token
                    .observe((now - t).max(0) as f64 / 1000.0);
            }
        }
        let value = match serde_json::to_vec(&d) {
            Ok(v) => v,
            Err(_) => return false,
        };
        let record = FutureRecord::to(&self.topic)
            .key(d.id.as_bytes())
            .payload(&value)
            .timestamp(now);
        match self.producer.send_result(record) {
            Ok(f) => {
                if let Ok(mut v) = self.in_flight.lock() {
                    v.push(f);
                }
                true
            }
            Err((e, _)) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %self.topic, question = %d.id, "answer piece dropped: {e}");
                false
            }
        }
    }
}

//! Where records come from and go to: Kafka (the managed local broker,
//! topic admin, and the consume -> stages -> produce -> commit loop) and
//! JSON Lines files (`weft run --input`).

pub mod assign;
pub mod broker;
pub mod circuit;
pub mod deltas;
pub mod file;
pub mod kafka;
pub mod orphans;
pub mod stall;
pub mod table;

use crate::pipeline::SinkError;

/// Why a source, a sink or the broker failed. Every variant says what was
/// being done.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{what}: {source}")]
    Kafka {
        what: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("creating topic {topic}: {code}")]
    CreateTopic { topic: String, code: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The index (or another host-side sink) failed even after retries; the
    /// batch stays uncommitted and is replayed by whoever runs next.
    #[error("pipeline `{pipeline}`: index sink: {source}")]
    Sink {
        pipeline: String,
        #[source]
        source: SinkError,
    },
    #[error("pipeline `{0}` has no sink")]
    NoSink(String),
    #[error("stopping with {0} unacknowledged records; their batch stays uncommitted and will be replayed")]
    Unacknowledged(usize),
    #[error("pipeline `{pipeline}`: the worker running its stages panicked: {message}")]
    WorkerPanicked { pipeline: String, message: String },
    /// The managed broker is missing or did not start.
    #[error("{0}")]
    Broker(String),
    /// `--idle-exit-secs` ran out while the process held no partition and
    /// its group still had records to consume.
    #[error("pipeline `{pipeline}`: idle for {secs} s without a partition of {topic} while its group has {lag} unconsumed record(s) (another member holds them, or the broker has not reassigned a dead member's): exiting; the records stay in the topic for the group")]
    IdleWithoutPartitions {
        pipeline: String,
        topic: String,
        lag: i64,
        secs: u64,
    },
    /// A table could not be opened or followed.
    #[error("{0}")]
    Table(String),
}

impl StreamError {
    pub(crate) fn kafka(
        what: impl Into<String>,
        source: rdkafka::error::KafkaError,
    ) -> StreamError {
        StreamError::Kafka {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> StreamError {
        StreamError::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = StreamError> = std::result::Result<T, E>;

//! `weft dev --manifest M --input F`: one pipeline fed from a file through a
//! broker (a local one unless given), until it has been idle for 3 s.

use super::run::PipelineStatus;
use super::{Host, Result, ServiceError};
use crate::index::IndexStats;
use crate::pipeline::Pipeline;
use crate::stream::file::parse_line;
use crate::stream::kafka::{self, Counters, KafkaOptions, ReadRecord};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Idle time after which the pipeline is considered done.
const IDLE_EXIT: Duration = Duration::from_secs(3);

/// What a single-pipeline dev run did.
#[derive(Debug)]
pub struct DevReport {
    pub status: PipelineStatus,
    pub produced_in: Duration,
    /// Wall time of the pipeline, including the idle wait at the end.
    pub elapsed: Duration,
    /// `tenant/name` and figures of the sink index, if any.
    pub index: Option<(String, IndexStats)>,
    /// Records on the sink topic, if any.
    pub outputs: Option<Vec<ReadRecord>>,
}

/// What a dev run reports as it goes.
#[derive(Debug)]
pub enum DevEvent<'a> {
    BrokerStarting {
        dir: &'a Path,
    },
    BrokerStarted {
        address: &'a str,
    },
    Produced {
        records: usize,
        topic: &'a str,
        took: Duration,
    },
    Progress(&'a PipelineStatus, u64),
}

/// Feeds `input` (JSON Lines, as `weft run --input` reads it) to `pipeline`.
pub fn run_one(
    host: &Host,
    pipeline: Pipeline,
    broker_dir: &Path,
    brokers: Option<String>,
    input: &Path,
    on_event: &mut dyn FnMut(DevEvent<'_>),
) -> Result<DevReport> {
    let (_broker, brokers) = super::broker_or_local(brokers, broker_dir, |a| match a {
        None => on_event(DevEvent::BrokerStarting { dir: broker_dir }),
        Some(address) => on_event(DevEvent::BrokerStarted { address }),
    })?;
    let text = std::fs::read_to_string(input)
        .map_err(|e| ServiceError::io(format!("reading {}", input.display()), e))?;
    let records: Vec<_> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let it = parse_line("input", i as i64 + 1, l.as_bytes());
            (it.key, it.origin.value.clone())
        })
        .collect();
    let m = pipeline.manifest.clone();
    let index = match &m.sink_index {
        Some(i) => Some((
            format!("{}/{i}", m.tenant),
            host.indexes.open(&m.tenant, i)?,
        )),
        None => None,
    };
    let stream = ServiceError::Stream;
    let rt = tokio::runtime::Runtime::new().map_err(|e| ServiceError::io("starting tokio", e))?;
    rt.block_on(async {
        let manifests = [&m];
        kafka::ensure_topics(&brokers, &super::run::topics_of(&manifests, 3))
            .await
            .map_err(stream)?;
        let n = records.len();
        let t0 = Instant::now();
        kafka::produce_values(&brokers, &m.source_topic, records)
            .await
            .map_err(stream)?;
        let produced_in = t0.elapsed();
        on_event(DevEvent::Produced {
            records: n,
            topic: &m.source_topic,
            took: produced_in,
        });
        let counters = Arc::new(Counters::with_metrics(
            host.metrics.pipeline(&m.tenant, &m.name),
        ));
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let opts = KafkaOptions {
            instance_id: None,
            assign: Default::default(),
            brokers: brokers.clone(),
            group: None,
            idle_exit: Some(IDLE_EXIT),
            state_dir: Some(host.data_dir.join("sink")),
        };
        let t0 = Instant::now();
        let task = tokio::spawn(kafka::run(pipeline, opts, counters.clone(), stop_rx));
        while !task.is_finished() {
            on_event(DevEvent::Progress(
                &PipelineStatus::of(&m.name, &counters),
                n as u64,
            ));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        task.await
            .map_err(|e| ServiceError::Run(format!("pipeline task: {e}")))?
            .map_err(stream)?;
        let elapsed = t0.elapsed();
        let index = match &index {
            Some((name, ix)) => Some((name.clone(), ix.stats()?)),
            None => None,
        };
        let outputs = match &m.sink_topic {
            Some(sink) => Some(
                kafka::read_topic(&brokers, sink, Duration::from_secs(2))
                    .await
                    .map_err(stream)?,
            ),
            None => None,
        };
        Ok(DevReport {
            status: PipelineStatus::of(&m.name, &counters),
            produced_in,
            elapsed,
            index,
            outputs,
        })
    })
}

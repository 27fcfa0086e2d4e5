//! Following tables' topics into the tenants' table stores, and the lookup
//! a pipeline's plugins use ([`PipelineTables`], the runtime's
//! [`TableLookup`]).
//!
//! A table is *global* to its process, as Kafka Streams' GlobalKTable: each
//! process that runs a pipeline declaring it follows every partition of its
//! topic (no consumer group, nothing committed to the broker), because any
//! question may need any customer. The follower resumes from the offsets the
//! store committed with the rows, so a restart reopens the table instead of
//! reading the topic again.
//!
//! Freshness: before a batch is processed, [`PipelineTables::catch_up`] asks
//! the broker for each partition's end offset and waits until the follower
//! has applied up to it. An update produced before a question was read is
//! therefore visible to that question, not "eventually".

use super::kafka::base_config;
use super::{Result, StreamError};
use crate::manifest::TableDecl;
use crate::runtime::{SearchError, TableLookup};
use crate::table::{offsets_after, Change, TableError, TableStore};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest value a table keeps (a profile, not a document); a larger record
/// is skipped and counted, and stays in its topic.
pub const MAX_TABLE_VALUE: usize = 256 << 10;

/// Records applied per LMDB transaction at most.
const APPLY_BATCH: usize = 1000;

/// What a follower has applied: the next offset per partition.
#[derive(Default)]
struct Progress {
    next: Mutex<BTreeMap<i32, i64>>,
    changed: Condvar,
}

/// One table's follower: a thread that reads its topic and applies each
/// record to the tenant's store.
pub struct TableFollower {
    tenant: String,
    decl: TableDecl,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    /// Records not applied: no key, or a value over [`MAX_TABLE_VALUE`].
    skipped: Arc<AtomicU64>,
    /// A separate client for end offsets, so asking never waits behind
    /// the follower's fetches.
    offsets: BaseConsumer,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl TableFollower {
    /// Binds the table to its topic in `store` and starts following it.
    pub fn start(
        brokers: &str,
        tenant: &str,
        decl: &TableDecl,
        store: Arc<TableStore>,
    ) -> Result<Arc<TableFollower>> {
        store
            .bind(&decl.name, &decl.topic)
            .map_err(|e| StreamError::Table(e.to_string()))?;
        let start = store
            .next_offsets(&decl.name)
            .map_err(|e| StreamError::Table(e.to_string()))?;
        let client = |what: &str| -> Result<BaseConsumer> {
            base_config(brokers)
                .set("group.id", format!("weft-table-{tenant}-{}", decl.name))
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("fetch.wait.max.ms", "10")
                .set("fetch.message.max.bytes", "8000000")
                .create()
                .map_err(|e| {
                    StreamError::kafka(format!("creating the {what} of table `{}`", decl.name), e)
                })
        };
        let consumer = client("follower")?;
        let offsets = client("offset reader")?;
        let progress = Arc::new(Progress {
            next: Mutex::new(start.clone()),
            changed: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let skipped = Arc::new(AtomicU64::new(0));
        let thread = {
            let (tenant, decl, store) = (tenant.to_string(), decl.clone(), store.clone());
            let (progress, stop, skipped) = (progress.clone(), stop.clone(), skipped.clone());
            std::thread::Builder::new()
                .name(format!("table-{}", decl.name))
                .spawn(move || {
                    follow(
                        &consumer, &tenant, &decl, &store, &progress, &stop, &skipped, start,
                    )
                })
                .map_err(|e| StreamError::io("starting a table follower", e))?
        };
        tracing::info!(tenant, table = %decl.name, "following {}", decl.topic);
        Ok(Arc::new(TableFollower {
            tenant: tenant.to_string(),
            decl: decl.clone(),
            progress,
            stop,
            skipped,
            offsets,
            thread: Mutex::new(Some(thread)),
        }))
    }

    pub fn decl(&self) -> &TableDecl {
        &self.decl
    }

    /// Records skipped so far (no key, or too large).
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// The end offset of each partition of the topic now.
    fn end_offsets(&self, timeout: Duration) -> std::result::Result<BTreeMap<i32, i64>, String> {
        let md = self
            .offsets
            .fetch_metadata(Some(&self.decl.topic), timeout)
            .map_err(|e| format!("reading the partitions of {}: {e}", self.decl.topic))?;
        let mut ends = BTreeMap::new();
        for t in md.topics() {
            for p in t.partitions() {
                let (_, high) = self
                    .offsets
                    .fetch_watermarks(&self.decl.topic, p.id(), timeout)
                    .map_err(|e| {
                        format!("reading the end of {}/{}: {e}", self.decl.topic, p.id())
                    })?;
                ends.insert(p.id(), high);
            }
        }
        Ok(ends)
    }

    /// Waits until everything the topic holds now is applied, at most the
    /// table's `wait_ms`.
    pub fn catch_up(&self) -> std::result::Result<(), String> {
        let wait = Duration::from_millis(self.decl.wait_ms);
        let deadline = Instant::now() + wait;
        let ends = self.end_offsets(wait.max(Duration::from_millis(100)))?;
        let behind = |next: &BTreeMap<i32, i64>| -> i64 {
            ends.iter()
                .map(|(p, end)| (end - next.get(p).copied().unwrap_or(0)).max(0))
                .sum()
        };
        let mut next = self.progress.next.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let lag = behind(&next);
            if lag == 0 {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "table `{}` (tenant `{}`) is {lag} records behind {} after waiting {} ms (wait_ms); the batch runs on what it has",
                    self.decl.name, self.tenant, self.decl.topic, self.decl.wait_ms
                ));
            }
            next = self
                .progress
                .changed
                .wait_timeout(next, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Stops the thread (after its current poll) and waits for it.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

impl Drop for TableFollower {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The key of a table record: its Kafka key, else the value's `key_field`.
fn record_key(decl: &TableDecl, key: Option<&[u8]>, value: Option<&[u8]>) -> Option<String> {
    if let Some(k) = key.and_then(|k| std::str::from_utf8(k).ok()) {
        if !k.is_empty() {
            return Some(k.to_string());
        }
    }
    let field = decl.key_field.as_deref()?;
    let v: serde_json::Value = serde_json::from_slice(value?).ok()?;
    match v.get(field)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Assigns every partition of the table's topic (waiting for the topic to
/// exist), from the stored offsets.
fn assign(
    consumer: &BaseConsumer,
    decl: &TableDecl,
    start: &BTreeMap<i32, i64>,
    stop: &AtomicBool,
) -> bool {
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) {
        let parts: Vec<i32> =
            match consumer.fetch_metadata(Some(&decl.topic), Duration::from_secs(2)) {
                Ok(md) => md
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect(),
                Err(_) => Vec::new(),
            };
        if !parts.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for p in parts {
                let at = start
                    .get(&p)
                    .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                if let Err(e) = tpl.add_partition_offset(&decl.topic, p, at) {
                    tracing::error!(table = %decl.name, "{e}");
                }
            }
            match consumer.assign(&tpl) {
                Ok(()) => return true,
                Err(e) => tracing::warn!(table = %decl.name, "assigning {}: {e}", decl.topic),
            }
        } else if !warned {
            tracing::info!(table = %decl.name, "waiting for topic {} to exist", decl.topic);
            warned = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

/// The follower thread: poll, apply in batches (rows and offsets in one
/// transaction), publish progress. A full store holds the batch and tries
/// again: updates wait, they are never dropped.
#[allow(clippy::too_many_arguments)]
fn follow(
    consumer: &BaseConsumer,
    tenant: &str,
    decl: &TableDecl,
    store: &TableStore,
    progress: &Progress,
    stop: &AtomicBool,
    skipped: &AtomicU64,
    start: BTreeMap<i32, i64>,
) {
    if !assign(consumer, decl, &start, stop) {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        let mut changes = Vec::new();
        let mut read = Vec::new();
        let first = Instant::now();
        while changes.len() < APPLY_BATCH && !stop.load(Ordering::Relaxed) {
            let wait = if read.is_empty() {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(5).saturating_sub(first.elapsed())
            };
            match consumer.poll(wait) {
                None => {
                    if !read.is_empty() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(tenant, table = %decl.name, "reading {}: {e}", decl.topic);
                    break;
                }
                Some(Ok(m)) => {
                    read.push((m.partition(), m.offset()));
                    let value = m.payload();
                    match record_key(decl, m.key(), value) {
                        Some(key) if value.is_none_or(|v| v.len() <= MAX_TABLE_VALUE) => changes
                            .push(Change {
                                key,
                                value: value.map(<[u8]>::to_vec),
                            }),
                        key => {
                            skipped.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                tenant, table = %decl.name,
                                "{}/{} offset {}: skipped: {}",
                                decl.topic, m.partition(), m.offset(),
                                if key.is_none() {
                                    "no key (no Kafka key, and no key field in the value)".to_string()
                                } else {
                                    format!("value of {} bytes is over the {MAX_TABLE_VALUE}-byte table limit", value.map_or(0, <[u8]>::len))
                                }
                            );
                        }
                    }
                }
            }
        }
        if read.is_empty() {
            continue;
        }
        let next = offsets_after(read);
        let mut reported = false;
        loop {
            match store.apply(&decl.name, &changes, &next) {
                Ok(()) => break,
                Err(e @ TableError::Full { .. }) => {
                    if !reported {
                        tracing::error!(tenant, "{e}");
                        reported = true;
                    }
                }
                Err(e) => tracing::error!(tenant, table = %decl.name, "{e}; retrying"),
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let mut p = progress.next.lock().unwrap_or_else(|p| p.into_inner());
        for (part, o) in next {
            p.insert(part, o);
        }
        progress.changed.notify_all();
    }
}

/// The followers of one process, one per (tenant, table), shared by the
/// pipelines that declare the table.
pub struct Followers {
    brokers: String,
    running: Mutex<HashMap<(String, String), Arc<TableFollower>>>,
}

impl Followers {
    pub fn new(brokers: &str) -> Followers {
        Followers {
            brokers: brokers.to_string(),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The follower of `tenant`'s table `decl`, started on first use. A
    /// table already followed from another topic is an error naming both.
    pub fn follow(
        &self,
        tenant: &str,
        decl: &TableDecl,
        store: &Arc<TableStore>,
    ) -> Result<Arc<TableFollower>> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.to_string(), decl.name.clone());
        if let Some(f) = running.get(&key) {
            if f.decl.topic != decl.topic {
                return Err(StreamError::Table(format!(
                    "table `{}` of tenant `{tenant}` already follows {} in this process; a pipeline cannot point it at {}",
                    decl.name, f.decl.topic, decl.topic
                )));
            }
            return Ok(f.clone());
        }
        let f = TableFollower::start(&self.brokers, tenant, decl, store.clone())?;
        running.insert(key, f.clone());
        Ok(f)
    }

    /// Stops every follower.
    pub fn stop_all(&self) {
        let all: Vec<_> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, f)| f)
            .collect();
        for f in all {
            f.stop();
        }
    }
}

impl Drop for Followers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The tables one pipeline declares: lookups by declared name only, in its
/// tenant's store, and catch-up before each batch when followed.
pub struct PipelineTables {
    tenant: String,
    pipeline: String,
    store: Arc<TableStore>,
    tables: Vec<(TableDecl, Option<Arc<TableFollower>>)>,
}

impl PipelineTables {
    /// The declared tables of a pipeline, each followed by `followers` when
    /// given (a pipeline that is only checked or run from a file reads the
    /// store as it is).
    pub fn new(
        tenant: &str,
        pipeline: &str,
        decls: &[TableDecl],
        store: Arc<TableStore>,
        followers: Option<&Followers>,
    ) -> Result<PipelineTables> {
        let mut tables = Vec::new();
        for d in decls {
            let f = match followers {
                Some(fs) => Some(fs.follow(tenant, d, &store)?),
                None => None,
            };
            tables.push((d.clone(), f));
        }
        Ok(PipelineTables {
            tenant: tenant.to_string(),
            pipeline: pipeline.to_string(),
            store,
            tables,
        })
    }
}

impl TableLookup for PipelineTables {
    fn get(&self, name: &str, key: &str) -> std::result::Result<Option<Vec<u8>>, SearchError> {
        if !self.tables.iter().any(|(d, _)| d.name == name) {
            let declared: Vec<&str> = self.tables.iter().map(|(d, _)| d.name.as_str()).collect();
            return Err(SearchError::new(format!(
                "table `{name}` is not declared by pipeline `{}` of tenant `{}` (declared: {})",
                self.pipeline,
                self.tenant,
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            )));
        }
        self.store.get(name, key).map_err(SearchError::new)
    }

    fn catch_up(&self) -> std::result::Result<(), SearchError> {
        let lagging: Vec<String> = self
            .tables
            .iter()
            .filter_map(|(_, f)| f.as_ref()?.catch_up().err())
            .collect();
        if lagging.is_empty() {
            Ok(())
        } else {
            Err(SearchError::new(lagging.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(key_field: Option<&str>) -> TableDecl {
        TableDecl {
            name: "customers".into(),
            topic: "t.customers".into(),
            key_field: key_field.map(String::from),
            wait_ms: 100,
        }
    }

    #[test]
    fn the_kafka_key_wins_then_the_key_field() {
        let v = br#"{"id": "c-1", "n": 7}"#.as_slice();
        assert_eq!(
            record_key(&decl(Some("id")), Some(b"k"), Some(v)).as_deref(),
            Some("k")
        );
        assert_eq!(
            record_key(&decl(Some("id")), None, Some(v)).as_deref(),
            Some("c-1")
        );
        assert_eq!(
            record_key(&decl(Some("n")), None, Some(v)).as_deref(),
            Some("7")
        );
        assert_eq!(record_key(&decl(None), None, Some(v)), None);
        // A tombstone without a Kafka key names nothing to delete.
        assert_eq!(record_key(&decl(Some("id")), None, None), None);
        assert_eq!(record_key(&decl(Some("id")), None, Some(b"garbage")), None);
    }
}

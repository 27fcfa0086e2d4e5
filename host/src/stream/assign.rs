//! How a pipeline's consumer gets its partitions.
//!
//! By default the broker's group coordinator shares a source topic's
//! partitions among the live members of the pipeline's consumer group. That
//! is what lets several processes scale out, but it makes a restart wait on
//! the coordinator: after a SIGKILL, tansu 0.6 keeps the dead member's
//! partitions for its session timeout and sometimes for minutes (issue 14;
//! `cargo bench -p weft --bench restart`).
//!
//! A static share (`weft run --assign I/N`) takes the partitions itself, as
//! Flink's Kafka source does: process `I` of `N` reads partition `p` when
//! `p % N == I`, and `0/1` reads them all. There is no group membership, so
//! there is nothing to rebalance or expire: a restarted process fetches the
//! group's committed offsets and resumes at once. Offsets are still
//! committed to the same group (`weft.<tenant>.<pipeline>`) only after the
//! batch's outputs are durable, so switching between the two modes keeps
//! the position. What the operator takes on: every partition must be owned
//! by exactly one process (the shares of `0/N` .. `N-1/N` partition the
//! topic); two processes with overlapping shares both process the same
//! records (their outputs have the same deterministic keys and values, so
//! nothing conflicts, but the work is done twice).

use super::kafka::off_worker;
use super::{Result, StreamError};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a pipeline's consumer gets its partitions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Assignment {
    /// The group coordinator assigns them (consumer group membership).
    #[default]
    Group,
    /// This process reads partition `p` of its source when
    /// `p % count == index`; no group membership.
    Static { index: u32, count: u32 },
}

/// A `--assign` value that is neither `group` nor `I/N` with `I < N`.
#[derive(Debug, thiserror::Error)]
#[error("--assign {0:?}: expected `group` or `I/N` (this process's share: partitions p with p % N == I, 0 <= I < N; `0/1` takes every partition)")]
pub struct BadAssignment(String);

impl FromStr for Assignment {
    type Err = BadAssignment;

    fn from_str(s: &str) -> Result<Assignment, BadAssignment> {
        if s == "group" {
            return Ok(Assignment::Group);
        }
        let bad = || BadAssignment(s.to_string());
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Assignment::Static { index, count })
    }
}

impl fmt::Display for Assignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Assignment::Group => f.write_str("group"),
            Assignment::Static { index, count } => write!(f, "{index}/{count}"),
        }
    }
}

impl Assignment {
    /// Which of `partitions` are this process's (all of them in group mode,
    /// where the coordinator decides).
    pub fn owned(&self, partitions: &[i32]) -> Vec<i32> {
        match *self {
            Assignment::Group => partitions.to_vec(),
            Assignment::Static { index, count } => partitions
                .iter()
                .copied()
                .filter(|p| (*p as u32) % count == index)
                .collect(),
        }
    }
}

/// How long [`assign_share`] waits for the topic's metadata (a topic weft
/// has just created may take a moment to appear).
const METADATA_WAIT: Duration = Duration::from_secs(20);

/// The partition ids of `topic`, asking the broker until it names at least
/// one (or `within` runs out).
async fn partitions_of(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    within: Duration,
) -> Result<Vec<i32>> {
    let started = Instant::now();
    loop {
        let name = topic.to_string();
        let ids: Vec<i32> = off_worker(consumer, move |c| {
            c.fetch_metadata(Some(&name), Duration::from_secs(5))
                .map(|md| {
                    md.topics()
                        .iter()
                        .filter(|t| t.name() == name)
                        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                        .collect()
                })
        })
        .await
        .unwrap_or_else(|| Ok(Vec::new()))
        .map_err(|e| StreamError::kafka(format!("reading the partitions of {topic}"), e))?;
        if !ids.is_empty() {
            return Ok(ids);
        }
        if started.elapsed() >= within {
            return Err(StreamError::Broker(format!(
                "the broker names no partition of {topic} after {} s",
                within.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Assigns `consumer` this process's share of `topic`, each partition from
/// the group's committed offset (`auto.offset.reset` where there is none).
/// Returns the partitions taken; none is an error, since the process would
/// sit idle (more processes than partitions).
pub async fn assign_share(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    share: Assignment,
) -> Result<Vec<i32>> {
    let all = partitions_of(consumer, topic, METADATA_WAIT).await?;
    let mine = share.owned(&all);
    if mine.is_empty() {
        return Err(StreamError::Broker(format!(
            "--assign {share}: {topic} has {} partition(s), none of them is this process's share (p % N == I); use fewer processes or more partitions",
            all.len()
        )));
    }
    take(consumer, topic, &mine)?;
    Ok(mine)
}

/// Adds the share's partitions of `topic` that are not assigned yet (the
/// topic gained partitions since the start). Returns how many were added.
pub async fn assign_new(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    share: Assignment,
    held: &mut Vec<i32>,
) -> Result<usize> {
    let all = partitions_of(consumer, topic, Duration::ZERO).await?;
    let new: Vec<i32> = share
        .owned(&all)
        .into_iter()
        .filter(|p| !held.contains(p))
        .collect();
    if new.is_empty() {
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    for p in &new {
        tpl.add_partition_offset(topic, *p, Offset::Stored)
            .map_err(|e| StreamError::kafka("building the assignment", e))?;
    }
    consumer
        .incremental_assign(&tpl)
        .map_err(|e| StreamError::kafka(format!("assigning new partitions of {topic}"), e))?;
    held.extend(&new);
    Ok(new.len())
}

fn take(consumer: &StreamConsumer, topic: &str, partitions: &[i32]) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        // `Stored`: the group's committed offset, fetched by the client.
        tpl.add_partition_offset(topic, *p, Offset::Stored)
            .map_err(|e| StreamError::kafka("building the assignment", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| StreamError::kafka(format!("assigning partitions of {topic}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_group_and_shares_and_refuses_the_rest() {
        assert_eq!("group".parse::<Assignment>().unwrap(), Assignment::Group);
        assert_eq!(
            "1/3".parse::<Assignment>().unwrap(),
            Assignment::Static { index: 1, count: 3 }
        );
        for bad in ["", "3/3", "1/0", "a/2", "1", "-1/2", "1/2/3"] {
            let e = bad.parse::<Assignment>().unwrap_err().to_string();
            assert!(e.contains("expected `group` or `I/N`"), "{bad}: {e}");
        }
    }

    #[test]
    fn shares_partition_the_topic() {
        let parts: Vec<i32> = (0..7).collect();
        let mut seen = Vec::new();
        for index in 0..3 {
            seen.extend(Assignment::Static { index, count: 3 }.owned(&parts));
        }
        seen.sort();
        assert_eq!(seen, parts);
        assert_eq!(
            Assignment::Static { index: 0, count: 1 }.owned(&parts),
            parts
        );
        assert_eq!(
            Assignment::Static { index: 2, count: 3 }.owned(&parts),
            vec![2, 5]
        );
    }
}

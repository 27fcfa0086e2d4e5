//! Noticing that a pipeline is stuck without partitions. A consumer that
//! holds no partition of its source while its group still has records to
//! consume is waiting on the broker's group coordinator (after a crash,
//! tansu 0.6 keeps a dead member's partitions for minutes); without a word
//! it would look idle. The watch turns that into a plain status and log
//! line. (`--idle-exit-secs` still waits for the group to have no lag: a
//! process exiting without partitions would leave the records behind.)

use std::time::{Duration, Instant};

/// How long without partitions, while there is lag, before it is a stall.
pub const STALL_AFTER: Duration = Duration::from_secs(10);
/// How often (at most) the assignment and the lag are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// One pipeline's watch.
#[derive(Debug)]
pub struct StallWatch {
    last_check: Option<Instant>,
    /// Since when no partition has been held (`None`: one is held).
    unassigned_since: Option<Instant>,
}

impl StallWatch {
    pub fn new(now: Instant) -> StallWatch {
        StallWatch {
            last_check: None,
            unassigned_since: Some(now),
        }
    }

    /// Whether it is time to look again.
    pub fn due(&self, now: Instant) -> bool {
        self.last_check
            .is_none_or(|t| now.saturating_duration_since(t) >= CHECK_EVERY)
    }

    /// Records what a look found: whether a partition is held, and the
    /// group's lag on the source (`None`: unknown). Returns the stall, if
    /// this is one, as a sentence for the status and the log.
    pub fn observe(
        &mut self,
        now: Instant,
        holds: bool,
        lag: Option<i64>,
        topic: &str,
    ) -> Option<String> {
        self.last_check = Some(now);
        if holds {
            self.unassigned_since = None;
            return None;
        }
        let since = *self.unassigned_since.get_or_insert(now);
        let waited = now.saturating_duration_since(since);
        match lag {
            Some(n) if n > 0 && waited >= STALL_AFTER => Some(format!(
                "holds no partition of {topic} for {} s while its group has {n} unconsumed record(s): the broker has not assigned them to this process (after a crash, tansu 0.6 can keep a dead member's partitions unassigned for minutes; `--assign I/N` takes a static share of the partitions without the group coordinator)",
                waited.as_secs()
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_partitions_with_lag_is_a_stall_after_a_while() {
        let t = Instant::now();
        let mut w = StallWatch::new(t);
        assert!(w.observe(t, false, Some(5), "x.in").is_none(), "not yet");
        let s = w
            .observe(t + STALL_AFTER, false, Some(5), "x.in")
            .expect("a stall");
        assert!(
            s.contains("holds no partition of x.in for 10 s") && s.contains("5 unconsumed"),
            "{s}"
        );
        // Without lag there is nothing to wait for: not a stall.
        assert!(w
            .observe(t + STALL_AFTER * 2, false, Some(0), "x.in")
            .is_none());
        // Holding a partition ends it.
        assert!(w
            .observe(t + STALL_AFTER * 3, true, Some(5), "x.in")
            .is_none());
        assert!(
            w.observe(t + STALL_AFTER * 3, false, Some(5), "x.in")
                .is_none(),
            "the clock restarts"
        );
    }
}

//! The circuit breaker of a running pipeline. A stage that fails every
//! record (a crash-looping plugin, a dead endpoint) would otherwise turn its
//! whole source topic into dead letters at full speed; instead, after
//! `consecutive_failures` records in a row failed in a plugin, or when dead
//! letters come faster than the tenant's `max_dead_letters_per_sec`, the
//! pipeline pauses (its offsets stay where they are), says why in its
//! status, and tries again after a backoff (30 s, doubling to 10 min). A
//! reload closes the circuit at once.

use crate::pipeline::DeadLetter;
use crate::runtime::FailureKind;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When a circuit opens and how long it stays open.
#[derive(Debug, Clone)]
pub struct CircuitPolicy {
    /// Records failing in a plugin in a row that open the circuit (0: never).
    pub consecutive_failures: u64,
    /// Dead letters per second, averaged over `window`, that open it (0: no
    /// rate limit).
    pub max_dead_letters_per_sec: u64,
    pub window: Duration,
    pub first_pause: Duration,
    pub max_pause: Duration,
}

impl Default for CircuitPolicy {
    fn default() -> Self {
        CircuitPolicy {
            consecutive_failures: 100,
            max_dead_letters_per_sec: 0,
            window: Duration::from_secs(10),
            first_pause: Duration::from_secs(30),
            max_pause: Duration::from_secs(600),
        }
    }
}

/// Whether a failure says the plugin (or what it depends on) is broken,
/// rather than that one record is bad.
pub fn is_plugin_fault(kind: FailureKind) -> bool {
    !matches!(
        kind,
        FailureKind::BadRecord | FailureKind::InvalidInput | FailureKind::OutputTooLarge
    )
}

/// An open circuit: until when, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Open {
    pub until: Instant,
    pub reason: String,
}

/// One pipeline's breaker.
#[derive(Debug)]
pub struct Breaker {
    policy: CircuitPolicy,
    consecutive: u64,
    /// Dead letters of recent batches, to compute the rate.
    recent: VecDeque<(Instant, u64)>,
    /// Times opened since the last success (for the backoff).
    opens: u32,
    open: Option<Open>,
    /// The pause is over and the next batch decides: a success closes the
    /// circuit, a plugin failure reopens it for twice as long.
    probing: bool,
}

impl Breaker {
    pub fn new(policy: CircuitPolicy) -> Breaker {
        Breaker {
            policy,
            consecutive: 0,
            recent: VecDeque::new(),
            opens: 0,
            open: None,
            probing: false,
        }
    }

    /// The open circuit, if it is still open at `now`; once its pause is
    /// over, the breaker lets one batch through to probe.
    pub fn check(&mut self, now: Instant) -> Option<&Open> {
        if self.open.as_ref().is_some_and(|o| now >= o.until) {
            self.open = None;
            self.probing = true;
        }
        self.open.as_ref()
    }

    /// Closes the circuit and forgets the failures (after a reload).
    pub fn reset(&mut self) {
        *self = Breaker::new(self.policy.clone());
    }

    /// Accounts one processed batch: `ok` records succeeded, `dead` failed.
    /// Returns the circuit if this batch opened it.
    pub fn record(&mut self, now: Instant, ok: u64, dead: &[&DeadLetter]) -> Option<Open> {
        let faults = dead
            .iter()
            .filter(|d| is_plugin_fault(d.failure.kind))
            .count() as u64;
        let last_fault = dead.iter().rev().find(|d| is_plugin_fault(d.failure.kind));
        if ok > 0 {
            self.consecutive = faults;
            if faults == 0 {
                self.opens = 0;
                self.probing = false;
            }
        } else {
            self.consecutive += faults;
        }
        self.recent.push_back((now, dead.len() as u64));
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.policy.window)
        {
            self.recent.pop_front();
        }
        let in_window: u64 = self.recent.iter().map(|(_, n)| n).sum();
        let rate = in_window as f64 / self.policy.window.as_secs_f64().max(0.001);
        let cause = |d: &DeadLetter| {
            format!(
                "last: stage `{}`, {}: {}",
                d.stage,
                d.failure.kind,
                crate::runtime::logs::loggable(&d.failure.message)
            )
        };
        let reason = if self.probing && faults > 0 && ok == 0 {
            Some(format!(
                "still failing after the pause ({})",
                last_fault.map(|d| cause(d)).unwrap_or_default()
            ))
        } else if self.policy.consecutive_failures > 0
            && self.consecutive >= self.policy.consecutive_failures
        {
            Some(format!(
                "{} records in a row failed in a plugin ({})",
                self.consecutive,
                last_fault.map(|d| cause(d)).unwrap_or_default()
            ))
        } else if self.policy.max_dead_letters_per_sec > 0
            && in_window > self.policy.max_dead_letters_per_sec
            && rate > self.policy.max_dead_letters_per_sec as f64
        {
            Some(format!(
                "{rate:.0} dead letters/s over the last {:?}, over the tenant's max_dead_letters_per_sec = {}",
                self.policy.window, self.policy.max_dead_letters_per_sec
            ))
        } else {
            None
        };
        self.probing = false;
        let reason = reason?;
        let pause = self
            .policy
            .first_pause
            .saturating_mul(1 << self.opens.min(16))
            .min(self.policy.max_pause);
        self.opens += 1;
        self.consecutive = 0;
        self.recent.clear();
        let open = Open {
            until: now + pause,
            reason: format!("{reason}; paused for {pause:?}"),
        };
        self.open = Some(open.clone());
        Some(open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Item, Origin, Payload};
    use crate::runtime::Failure;

    fn dl(kind: FailureKind) -> DeadLetter {
        DeadLetter {
            item: Item {
                key: None,
                payload: Payload::Raw(None),
                headers: Vec::new(),
                timestamp: None,
                origin: std::sync::Arc::new(Origin {
                    topic: "t".into(),
                    partition: 0,
                    offset: 0,
                    key: None,
                    value: None,
                }),
            },
            stage: "s".into(),
            failure: Failure::new(kind, "boom"),
        }
    }

    fn policy() -> CircuitPolicy {
        CircuitPolicy {
            consecutive_failures: 10,
            max_dead_letters_per_sec: 0,
            window: Duration::from_secs(10),
            first_pause: Duration::from_secs(30),
            max_pause: Duration::from_secs(100),
        }
    }

    #[test]
    fn opens_after_consecutive_plugin_faults_and_backs_off() {
        let mut b = Breaker::new(policy());
        let t = Instant::now();
        let traps: Vec<DeadLetter> = (0..6).map(|_| dl(FailureKind::Trap)).collect();
        let refs: Vec<&DeadLetter> = traps.iter().collect();
        assert!(b.record(t, 0, &refs).is_none());
        let open = b.record(t, 0, &refs).expect("12 traps in a row open it");
        assert!(
            open.reason.contains("12 records in a row"),
            "{}",
            open.reason
        );
        assert_eq!(open.until, t + Duration::from_secs(30));
        assert!(b.check(t + Duration::from_secs(29)).is_some());
        assert!(
            b.check(t + Duration::from_secs(30)).is_none(),
            "probe after the pause"
        );
        // The probe fails: open again, twice as long.
        let t2 = t + Duration::from_secs(31);
        let again = b
            .record(t2, 0, &refs[..1])
            .expect("a failing probe reopens");
        assert_eq!(again.until, t2 + Duration::from_secs(60));
        // The probe after that succeeds: closed, and the backoff starts over.
        assert!(b.check(t2 + Duration::from_secs(60)).is_none());
        assert!(b.record(t2 + Duration::from_secs(61), 5, &[]).is_none());
        assert_eq!(b.opens, 0);
    }

    #[test]
    fn bad_records_and_successes_do_not_open_it() {
        let mut b = Breaker::new(policy());
        let t = Instant::now();
        let bad: Vec<DeadLetter> = (0..50).map(|_| dl(FailureKind::BadRecord)).collect();
        let refs: Vec<&DeadLetter> = bad.iter().collect();
        assert!(b.record(t, 0, &refs).is_none());
        let traps: Vec<DeadLetter> = (0..9).map(|_| dl(FailureKind::Trap)).collect();
        let refs: Vec<&DeadLetter> = traps.iter().collect();
        assert!(b.record(t, 0, &refs).is_none());
        // One success in the batch breaks the run of failures.
        assert!(b.record(t, 1, &refs[..1]).is_none());
        assert!(b.record(t, 0, &refs[..5]).is_none());
    }

    #[test]
    fn dead_letter_rate_opens_it() {
        let mut b = Breaker::new(CircuitPolicy {
            consecutive_failures: 0,
            max_dead_letters_per_sec: 2,
            ..policy()
        });
        let t = Instant::now();
        let bad: Vec<DeadLetter> = (0..15).map(|_| dl(FailureKind::BadRecord)).collect();
        let refs: Vec<&DeadLetter> = bad.iter().collect();
        assert!(b.record(t, 100, &refs).is_none(), "15 in 10 s is 1.5/s");
        let open = b.record(t, 100, &refs).expect("30 in 10 s is 3/s");
        assert!(open.reason.contains("dead letters/s"), "{}", open.reason);
    }
}

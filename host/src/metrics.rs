//! Small in-process metrics: a latency histogram with bounded memory, for
//! figures such as index freshness that a long-running process reports.

use std::sync::Mutex;

/// Buckets grow by 5% from 10 µs, so any quantile is within 5% of the truth,
/// and 400 buckets reach past 24 hours.
const FIRST_MS: f64 = 0.01;
const GROWTH: f64 = 1.05;
const BUCKETS: usize = 400;

/// A thread-safe histogram of milliseconds.
pub struct Histogram {
    inner: Mutex<Inner>,
}

struct Inner {
    counts: Vec<u64>,
    total: u64,
    max: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            inner: Mutex::new(Inner {
                counts: vec![0; BUCKETS],
                total: 0,
                max: 0.0,
            }),
        }
    }
}

fn bucket(ms: f64) -> usize {
    if ms <= FIRST_MS {
        return 0;
    }
    (((ms / FIRST_MS).ln() / GROWTH.ln()).ceil() as usize).min(BUCKETS - 1)
}

fn upper(b: usize) -> f64 {
    FIRST_MS * GROWTH.powi(b as i32)
}

impl Histogram {
    pub fn record(&self, ms: f64) {
        let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        i.counts[bucket(ms)] += 1;
        i.total += 1;
        if ms > i.max {
            i.max = ms;
        }
    }

    pub fn count(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// The `q` quantile (0..=1) in milliseconds, `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if i.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * i.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, c) in i.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper(b).min(i.max));
            }
        }
        Some(i.max)
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
    }
}

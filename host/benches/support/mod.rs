//! Helpers shared by the benches (each includes this file as `mod support;`):
//! percentiles from one maintained implementation (`hdrhistogram`) instead of
//! a sort-and-index function per bench, the machine-load caveat every bench
//! prints, and ratio formatting.
//!
//! The machine is small (2 cores) and shared, so absolute figures move with
//! whatever else runs; the benches therefore always measure their baseline
//! in the same run and print ratios, and they print the load they ran under.

// Every bench uses a subset of these helpers.
#![allow(dead_code)]

use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// Latency samples, kept in nanoseconds with 3 significant digits: any
/// percentile is within 0.1 % of the exact one, in constant memory, and all
/// benches (from sub-µs calls to Kafka round trips) compute percentiles the
/// same way.
pub struct Latencies {
    hist: Histogram<u64>,
    /// Samples below zero (a timestamp from another clock ahead of ours),
    /// recorded as 0 and counted so a report can say so.
    negative: u64,
}

/// The largest latency the histograms track (1 hour, in ns); larger samples
/// saturate to it (a bench that waits that long has failed anyway).
const MAX_NS: u64 = 3_600_000_000_000;

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Latencies {
        Latencies {
            hist: Histogram::new_with_bounds(1, MAX_NS, 3)
                .expect("static histogram bounds are valid"),
            negative: 0,
        }
    }

    pub fn record(&mut self, d: Duration) {
        self.record_ns(d.as_nanos() as f64);
    }

    /// A latency in ns (fractions, e.g. a per-iteration mean, are rounded).
    pub fn record_ns(&mut self, ns: f64) {
        let v = if ns.is_finite() {
            ns.round().max(1.0)
        } else {
            1.0
        };
        self.hist.saturating_record((v as u64).min(MAX_NS));
    }

    /// A latency in whole ms (Kafka timestamps have ms resolution).
    pub fn record_ms(&mut self, ms: i64) {
        if ms < 0 {
            self.negative += 1;
        }
        let ns = u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000);
        self.hist.saturating_record(ns.clamp(1, MAX_NS));
    }

    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    pub fn negative(&self) -> u64 {
        self.negative
    }

    /// The `q` quantile (0.0 ..= 1.0) in ns; 0 when there are no samples.
    pub fn quantile_ns(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(q) as f64
    }

    /// The `q` quantile (0.0 ..= 1.0) in ms; 0 when there are no samples.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.quantile_ns(q) / 1e6
    }

    pub fn p50_ms(&self) -> f64 {
        self.quantile_ms(0.5)
    }

    pub fn p99_ms(&self) -> f64 {
        self.quantile_ms(0.99)
    }

    pub fn max_ms(&self) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.max() as f64 / 1e6
    }

    /// `p50 X / p99 Y ms (n = N)`.
    pub fn summary(&self) -> String {
        format!(
            "p50 {} / p99 {} ms (n = {})",
            ms(self.p50_ms()),
            ms(self.p99_ms()),
            self.len()
        )
    }
}

/// A duration in ms with as many decimals as its size warrants.
pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// `a / b` as `1.23x`, or `-` when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// The machine's CPU use over a bench run: how busy all cores were, and how
/// much of that was this process (the rest is the broker and weft children
/// of a bench, and whatever else shares the machine). Read from /proc; on a
/// system without it the report says so instead.
pub struct LoadMeter {
    start: Option<CpuSnapshot>,
    t0: Instant,
}

#[derive(Clone, Copy)]
struct CpuSnapshot {
    /// Jiffies over all cores: busy, total.
    busy: u64,
    total: u64,
    /// This process's user + system jiffies.
    own: u64,
}

fn snapshot() -> Option<CpuSnapshot> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = cpu.iter().take(8).sum();
    let idle = cpu.get(3)? + cpu.get(4).copied().unwrap_or(0);
    let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let after = own_stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(CpuSnapshot {
        busy: total.saturating_sub(idle),
        total,
        own: utime + stime,
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" / "))
        .unwrap_or_else(|| "unknown".into())
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1)
}

impl LoadMeter {
    /// Starts measuring and prints the load at the start.
    pub fn start(bench: &str) -> LoadMeter {
        println!(
            "{bench}: {} cores, load average {} (1 / 5 / 15 min) at the start",
            cores(),
            loadavg()
        );
        LoadMeter {
            start: snapshot(),
            t0: Instant::now(),
        }
    }

    /// One line on the load over the run so far, with the caveat.
    pub fn report(&self) -> String {
        let secs = self.t0.elapsed().as_secs_f64();
        let usage = match (self.start, snapshot()) {
            (Some(a), Some(b)) if b.total > a.total => {
                let total = (b.total - a.total) as f64;
                format!(
                    "all cores {:.0} % busy, this process {:.0} % of the machine",
                    100.0 * (b.busy - a.busy) as f64 / total,
                    100.0 * b.own.saturating_sub(a.own) as f64 / total
                )
            }
            _ => "CPU use unknown (no /proc)".into(),
        };
        format!(
            "load over the run ({secs:.0} s, {} cores): {usage}; load average {} at the end.\n\
             Shared machine: absolute figures move with other work; compare the ratios, \
             whose two sides ran in this same run.",
            cores(),
            loadavg()
        )
    }
}

/// An environment variable parsed as `T`, or `default` when it is unset.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={v:?}: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(e) => Err(anyhow::anyhow!("{name}: {e}")),
    }
}

/// Runs `scripts/build-plugins` (every bench needs the Wasm plugins).
pub fn build_plugins() -> anyhow::Result<()> {
    let script = repo().join("scripts/build-plugins");
    let ok = std::process::Command::new("bash")
        .arg(&script)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        anyhow::bail!("{} failed", script.display());
    }
    Ok(())
}

/// The repository root.
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

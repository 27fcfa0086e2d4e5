//! Plugin logs, bounded: each stage may log a burst of [`LOG_BURST`] lines
//! and then [`LOG_PER_SEC`] lines per second; the rest are dropped and
//! counted (the count is in the stage's summary and logged once a second
//! while dropping). Each message is cut to [`LOG_MAX_CHARS`] and made one
//! line with control characters escaped, so a plugin can neither fill the
//! disk through the host's stderr nor forge a host log line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Lines a stage may log at once after being quiet.
pub const LOG_BURST: f64 = 200.0;
/// Lines per second a stage may log on average.
pub const LOG_PER_SEC: f64 = 50.0;
/// Characters of one message that are kept.
pub const LOG_MAX_CHARS: usize = 1024;

/// A token bucket per stage, shared by its instances.
#[derive(Debug)]
pub struct LogBudget {
    bucket: Mutex<(f64, Instant, Instant)>,
    dropped: AtomicU64,
}

impl Default for LogBudget {
    fn default() -> Self {
        let now = Instant::now();
        LogBudget {
            bucket: Mutex::new((LOG_BURST, now, now)),
            dropped: AtomicU64::new(0),
        }
    }
}

impl LogBudget {
    /// Whether one more line may be logged now.
    pub fn admit(&self) -> bool {
        let Ok(mut b) = self.bucket.lock() else {
            return false;
        };
        let now = Instant::now();
        let (tokens, refilled, reported) = &mut *b;
        *tokens =
            (*tokens + now.duration_since(*refilled).as_secs_f64() * LOG_PER_SEC).min(LOG_BURST);
        *refilled = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return true;
        }
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if now.duration_since(*reported).as_secs() >= 1 {
            *reported = now;
            tracing::warn!(
                "a plugin logs faster than {LOG_PER_SEC} lines/s: {n} line(s) dropped so far"
            );
        }
        false
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// `message` as one bounded line: control characters (newlines included)
/// escaped, cut at [`LOG_MAX_CHARS`] with the original length said.
pub fn loggable(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(LOG_MAX_CHARS + 32));
    for (n, c) in message.chars().enumerate() {
        if n == LOG_MAX_CHARS {
            out.push_str(&format!("... ({} bytes in all)", message.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_one_bounded_line() {
        let forged = "ok\n2026-11-30T10:00:00Z ERROR tenant=other: breach\r\x1b[2J";
        let l = loggable(forged);
        assert!(
            !l.contains('\n') && !l.contains('\r') && !l.contains('\x1b'),
            "{l}"
        );
        assert!(l.contains("\\n2026"), "{l}");
        let long = "x".repeat(10 * LOG_MAX_CHARS);
        assert!(loggable(&long).len() < LOG_MAX_CHARS + 40);
    }

    #[test]
    fn a_flood_is_cut_to_the_burst_and_counted() {
        let b = LogBudget::default();
        let admitted = (0..10_000).filter(|_| b.admit()).count();
        assert!(
            admitted >= LOG_BURST as usize && admitted < LOG_BURST as usize + 50,
            "{admitted}"
        );
        assert_eq!(b.dropped(), 10_000 - admitted as u64);
    }
}

//! Why a record failed in a stage, in words fit for a dead-letter header.

use crate::manifest::Limits;
use std::fmt;

/// The class of a failure; its string form is the `weft.error.kind` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The record could not be decoded into what the stage needs.
    BadRecord,
    /// The plugin rejected the item as invalid.
    InvalidInput,
    /// The plugin says its configuration is wrong.
    Config,
    /// A retryable failure that kept failing after the retries.
    Transient,
    /// The plugin reported an internal error.
    PluginError,
    /// The plugin trapped (panic, unreachable, out-of-bounds access).
    Trap,
    /// The call ran past the stage's `timeout_ms`.
    Timeout,
    /// The plugin tried to grow memory past `memory_mb`.
    MemoryLimit,
    /// Recursion too deep for the wasm stack.
    StackOverflow,
    /// The plugin returned more than `max_output_kb` for one item.
    OutputTooLarge,
    /// The plugin returned something malformed (wrong count, bad vector).
    BadOutput,
    /// A tenant-wide quota of the operator's policy was reached (instances,
    /// state, an index's size or documents).
    QuotaExceeded,
    /// The index had not applied a question's read-your-writes requirement
    /// (`weft.min-offsets`) in time and the retriever says
    /// `on_stale = "dead-letter"`: replaying it later may answer it.
    Stale,
    /// A bug in the host.
    Internal,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::BadRecord => "bad-record",
            FailureKind::InvalidInput => "invalid-input",
            FailureKind::Config => "config",
            FailureKind::Transient => "transient",
            FailureKind::PluginError => "plugin-error",
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::MemoryLimit => "memory-limit",
            FailureKind::StackOverflow => "stack-overflow",
            FailureKind::OutputTooLarge => "output-too-large",
            FailureKind::BadOutput => "bad-output",
            FailureKind::QuotaExceeded => "quota-exceeded",
            FailureKind::Stale => "stale",
            FailureKind::Internal => "internal",
        }
    }

    /// Whether the failure poisons the instance (it must be replaced).
    pub fn is_trap_like(self) -> bool {
        matches!(
            self,
            FailureKind::Trap
                | FailureKind::Timeout
                | FailureKind::MemoryLimit
                | FailureKind::StackOverflow
        )
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Failure {}

/// Longest failure message kept. Messages often come from plugins (their
/// error text, what they printed), and a failure is stored in dead-letter
/// headers and files and printed in logs, so it is cut here, once, for
/// every sink.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// `s` cut to at most `max` bytes on a character boundary, saying how long
/// it was.
pub fn truncate_message(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let total = s.len();
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str(&format!("... (truncated, {total} bytes in all)"));
    s
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: truncate_message(message.into(), MAX_MESSAGE_BYTES),
        }
    }

    /// Classifies an error out of wasmtime into a kind and a message that says
    /// which limit was hit and how to raise it.
    pub fn from_wasm(e: wasmtime::Error, what: &str, limits: &Limits) -> Failure {
        let chain = format!("{e:#}");
        if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
            return match trap {
                wasmtime::Trap::Interrupt => Failure::new(
                    FailureKind::Timeout,
                    format!(
                        "{what} ran longer than limits.timeout_ms = {} and was stopped",
                        limits.timeout_ms
                    ),
                ),
                wasmtime::Trap::StackOverflow => Failure::new(
                    FailureKind::StackOverflow,
                    format!("{what} exhausted the wasm call stack (runaway recursion?)"),
                ),
                wasmtime::Trap::OutOfFuel => {
                    Failure::new(FailureKind::Timeout, format!("{what} used up its CPU fuel"))
                }
                wasmtime::Trap::MemoryOutOfBounds => Failure::new(
                    FailureKind::Trap,
                    format!(
                        "{what} trapped: out-of-bounds memory access (in Rust and C guests this is \
                         usually a stack overflow from runaway recursion)"
                    ),
                ),
                other => Failure::new(FailureKind::Trap, format!("{what} trapped: {other}")),
            };
        }
        if let Some(t) = e.downcast_ref::<super::blocking::HostCallTimeout>() {
            return Failure::new(
                FailureKind::Timeout,
                format!(
                    "{what} was {t} (limits.timeout_ms = {}) and was stopped",
                    limits.timeout_ms
                ),
            );
        }
        // Export names match the contract but their types do not; wasmtime
        // finds that only when it instantiates.
        if let Some(at) = chain.find("type mismatch") {
            return Failure::new(
                FailureKind::Config,
                format!(
                    "{what} failed: the plugin's exports do not have the contract's types ({})",
                    &chain[at..]
                ),
            );
        }
        // The tenant's total, not the stage's limit (see `TenantAccount`).
        if let Some(at) = chain.find("forcing trap when growing") {
            if let Some(i) = chain[at..].find("the instances of tenant `") {
                let detail = chain[at + i..].lines().next().unwrap_or_default();
                return Failure::new(
                    FailureKind::MemoryLimit,
                    format!("{what} needed more memory than its tenant has left: {detail}"),
                );
            }
        }
        if chain.contains("forcing trap when growing memory")
            || chain.contains("forcing a memory growth failure")
        {
            return Failure::new(
                FailureKind::MemoryLimit,
                format!(
                    "{what} tried to grow its memory past limits.memory_mb = {}",
                    limits.memory_bytes >> 20
                ),
            );
        }
        if chain.contains("forcing trap when growing a table") {
            return Failure::new(
                FailureKind::MemoryLimit,
                format!(
                    "{what} tried to grow a table past limits.memory_mb = {} (tables count as memory)",
                    limits.memory_bytes >> 20
                ),
            );
        }
        // Keep the first line only: wasm backtraces belong in the log, not in
        // a header. But that line is sometimes only wasmtime's "error while
        // executing at wasm backtrace:", and the cause (a guest's
        // `process::exit`, a failed host call) is the root of the chain.
        let first = chain.lines().next().unwrap_or_default().to_string();
        let root = e.root_cause().to_string();
        let root = root.lines().next().unwrap_or_default();
        let said = if first.contains("wasm backtrace") || first.trim().is_empty() {
            root.to_string()
        } else if !root.is_empty() && !first.contains(root) {
            format!("{first}: {root}")
        } else {
            first
        };
        tracing::debug!("{what} failed: {chain}");
        Failure::new(FailureKind::Trap, format!("{what} failed: {said}"))
    }

    /// Appends what the guest last wrote to stderr (a Rust panic message, say).
    pub fn with_guest_said(mut self, said: Option<String>) -> Failure {
        if let Some(s) = said {
            let s: String = s.chars().take(300).collect();
            self.message = format!("{}; the plugin said: {s}", self.message);
        }
        self
    }
}

impl From<super::bindings::types::PluginError> for Failure {
    /// A failure the plugin reported itself, by its own kind.
    fn from(e: super::bindings::types::PluginError) -> Failure {
        use super::bindings::types::ErrorKind;
        let kind = match e.kind {
            ErrorKind::InvalidInput => FailureKind::InvalidInput,
            ErrorKind::Config => FailureKind::Config,
            ErrorKind::Transient => FailureKind::Transient,
            ErrorKind::Internal => FailureKind::PluginError,
        };
        Failure::new(kind, e.message)
    }
}

/// Bytes an output record is charged on top of its contents, so that many
/// tiny records cannot slip under the byte cap.
const RECORD_OVERHEAD: u64 = 64;

/// The output of one input, `count` records of `size` bytes, against the
/// stage's `max_outputs` and `max_output_kb`.
pub fn output_over_cap(limits: &Limits, count: usize, size: u64) -> Option<Failure> {
    let count = count as u64;
    if count > limits.max_outputs {
        return Some(Failure::new(
            FailureKind::OutputTooLarge,
            format!(
                "{count} output records exceed limits.max_outputs = {}",
                limits.max_outputs
            ),
        ));
    }
    let size = size.saturating_add(count.saturating_mul(RECORD_OVERHEAD));
    (size > limits.max_output_bytes).then(|| {
        Failure::new(
            FailureKind::OutputTooLarge,
            format!(
                "output of {size} bytes (counting {RECORD_OVERHEAD} per record) exceeds limits.max_output_kb = {}",
                limits.max_output_bytes >> 10
            ),
        )
    })
}

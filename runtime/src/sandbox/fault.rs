//! What can go wrong in a guest call, classified by cause (never by message text).

use serde::{Deserialize, Serialize};
use wasmtime::Trap;

/// A callback failure: its kind and what happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// The kind, for policy and statistics.
    pub kind: CallbackFaultKind,
    /// A human-readable description.
    pub message: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl Fault {
    pub(crate) fn new(kind: CallbackFaultKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// What kind of failure a callback had. Every fault is recorded with its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallbackFaultKind {
    /// A call ran past its wall-clock deadline.
    Timeout,
    /// A call used up its instruction budget.
    OutOfFuel,
    /// The callback tried to grow its memory (or a table) past the cap.
    MemoryLimit,
    /// The callback overflowed its wasm stack.
    StackOverflow,
    /// Any other trap: `unreachable`, a Rust panic, an out-of-bounds access...
    Trap,
    /// The callback returned a decision the host rejected as a fault (e.g. too many).
    InvalidDecision,
    /// The callback returned output the host could not accept (e.g. an oversized state).
    InvalidOutput,
    /// The host failed while serving the callback (including a caught panic).
    HostError,
    /// The callback went over one of its budgets for the whole run (fuel, time, decisions,
    /// checkpoint tags or bytes, metric names, validations or restores per epoch).
    Budget,
}

impl CallbackFaultKind {
    /// The kebab-case name used in logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackFaultKind::Timeout => "timeout",
            CallbackFaultKind::OutOfFuel => "out-of-fuel",
            CallbackFaultKind::MemoryLimit => "memory-limit",
            CallbackFaultKind::StackOverflow => "stack-overflow",
            CallbackFaultKind::Trap => "trap",
            CallbackFaultKind::InvalidDecision => "invalid-decision",
            CallbackFaultKind::InvalidOutput => "invalid-output",
            CallbackFaultKind::HostError => "host-error",
            CallbackFaultKind::Budget => "budget",
        }
    }
}

impl std::fmt::Display for CallbackFaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error a memory grow past the cap raises inside wasmtime, so the trap can be classified.
#[derive(Debug, thiserror::Error)]
#[error("linear memory limit of {cap} bytes exceeded (asked for {desired} bytes)")]
pub(super) struct MemoryLimitExceeded {
    pub(super) cap: usize,
    pub(super) desired: usize,
}

/// The error a table grow past the cap raises (a table is memory the host allocates for the
/// guest: a 10-million-entry table is 80 MB), so it is classified as a memory limit.
#[derive(Debug, thiserror::Error)]
#[error("table limit of {cap} entries exceeded (asked for {desired} entries)")]
pub(super) struct TableLimitExceeded {
    pub(super) cap: usize,
    pub(super) desired: usize,
}

/// Classifies an error returned by a guest call, as a fault with its description. Never looks
/// at message text. An error that is no trap and carries no wasm backtrace arose after the guest
/// returned, when the host took in its answer (a list longer than a transfer may carry, a bad
/// string): that is `answer`, the kind for a bad answer of this call (an event call's answer is
/// its decisions).
pub(crate) fn fault_of(err: &wasmtime::Error, answer: CallbackFaultKind) -> Fault {
    let kind = classify(err);
    let returned = err.downcast_ref::<wasmtime::WasmBacktrace>().is_none();
    if kind == CallbackFaultKind::InvalidOutput && returned {
        return Fault::new(
            answer,
            format!("its answer could not be taken in: {}", describe(err)),
        );
    }
    Fault::new(kind, describe(err))
}

/// Classifies an error returned by a guest call. Never looks at message text.
fn classify(err: &wasmtime::Error) -> CallbackFaultKind {
    if err.downcast_ref::<MemoryLimitExceeded>().is_some()
        || err.downcast_ref::<TableLimitExceeded>().is_some()
    {
        return CallbackFaultKind::MemoryLimit;
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallbackFaultKind::Timeout,
        Some(Trap::OutOfFuel) => CallbackFaultKind::OutOfFuel,
        Some(Trap::StackOverflow) => CallbackFaultKind::StackOverflow,
        Some(_) => CallbackFaultKind::Trap,
        // Our host functions never fail, so an error that is not a trap comes from lifting what
        // the guest handed over: invalid UTF-8, an out-of-bounds list, a bad discriminant.
        None => CallbackFaultKind::InvalidOutput,
    }
}

/// A wasmtime error with its causes on one line, for messages.
pub(crate) fn describe(err: &wasmtime::Error) -> String {
    // One line, without the wasm backtrace wasmtime attaches to traps: a callback's functions
    // are usually stripped of names, so it is a column of numbers that says nothing.
    let backtrace = err
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|b| b.to_string());
    let parts: Vec<String> = err
        .chain()
        .map(|c| c.to_string())
        .filter(|c| Some(c) != backtrace.as_ref())
        .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let mut out: Vec<String> = Vec::new();
    for p in parts {
        if !out.last().is_some_and(|l| l.contains(&p)) {
            out.push(p);
        }
    }
    out.join(": ")
}

//! What the host reports about its callbacks: each fault as recorded in `faults.jsonl`, what
//! was done about it, and each callback's statistics for `summary.json`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::callback::CallStats;
use crate::sandbox::CallbackFaultKind;

/// A fault, as recorded in `faults.jsonl` and reported to subscribed callbacks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultRecord {
    /// The callback that faulted.
    pub callback: String,
    /// The event it was handling (or `snapshot-state` / `restore-state` / `init`).
    pub during: String,
    /// Epoch of that event.
    pub epoch: u32,
    /// Step of that event.
    pub step: u64,
    /// Kind of fault.
    pub kind: CallbackFaultKind,
    /// What happened.
    pub message: String,
    /// What the host did about it.
    pub action: FaultAction,
}

/// What the host did about a fault, as the callback's [`FaultPolicy`] said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultAction {
    /// A fresh instance replaced the faulted one, with its last good state.
    Restarted,
    /// The callback is not called again in this run.
    Disabled,
    /// Training ends: the callback is critical.
    Aborted,
}

impl std::fmt::Display for FaultAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Restarted => "restarted",
            Self::Disabled => "disabled",
            Self::Aborted => "aborted",
        })
    }
}

/// Whether a callback is still being called at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallbackStatus {
    /// Called to the end.
    Active,
    /// Disabled after a fault.
    Disabled,
}

impl std::fmt::Display for CallbackStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        })
    }
}

/// A callback's statistics for `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct CallbackReport {
    /// Name.
    pub name: String,
    /// Spec it was started from.
    pub spec: String,
    /// Calls, time, fuel and decisions (all instances together).
    #[serde(flatten)]
    pub stats: CallStats,
    /// Mean time per call, in microseconds.
    pub mean_time_us: f64,
    /// Faults by kind.
    pub faults: BTreeMap<CallbackFaultKind, u32>,
    /// Times a fresh instance replaced a faulted one.
    pub restarts: u32,
    /// Whether it was still called at the end.
    pub status: CallbackStatus,
    /// Output bytes dropped for exceeding the log budgets.
    pub dropped_log_bytes: u64,
}

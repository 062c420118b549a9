//! How to run one callback: which one, under which limits, and what to do when it faults. This
//! is both the `[[callbacks]]` entry of a config file and what [`crate::CallbackHost`] starts from.

use serde::{Deserialize, Serialize};

use super::CallbackSpec;
use crate::sandbox::Limits;

/// Restarts a `restart` callback gets before it is disabled, unless its entry says otherwise.
pub const DEFAULT_MAX_RESTARTS: u32 = 3;

/// What happens when a callback faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultPolicy {
    /// Drop the poisoned store, start a fresh instance with the last good state; after too many
    /// restarts, disable.
    #[default]
    Restart,
    /// Stop calling the callback for the rest of the run.
    Disable,
    /// End training: the callback is critical.
    Abort,
}

impl std::fmt::Display for FaultPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Restart => "restart",
            Self::Disable => "disable",
            Self::Abort => "abort",
        })
    }
}

impl std::str::FromStr for FaultPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "restart" => Ok(Self::Restart),
            "disable" => Ok(Self::Disable),
            "abort" => Ok(Self::Abort),
            other => Err(format!(
                "unknown fault policy '{other}': expected restart, disable or abort"
            )),
        }
    }
}

/// One callback of a run: `[[callbacks]]` in a config file, with `spec` and optionally
/// `on_fault`, `max_restarts`, `inert_wasi` and `[callbacks.limits]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackOptions {
    /// Which callback, with its parameters: `NAME[:k=v,...]` or `PATH.wasm[:k=v,...]`.
    pub spec: CallbackSpec,
    /// What to do when it faults (default `restart`).
    #[serde(default)]
    pub on_fault: FaultPolicy,
    /// Restarts allowed before a `restart` callback is disabled ([`DEFAULT_MAX_RESTARTS`]).
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// Link `wasi:filesystem` and `wasi:sockets` with nothing behind them (no directories, no
    /// network) instead of refusing the component; for language runtimes that import them.
    #[serde(default)]
    pub inert_wasi: bool,
    /// Resource limits; unset fields keep their defaults.
    #[serde(default)]
    pub limits: Limits,
}

fn default_max_restarts() -> u32 {
    DEFAULT_MAX_RESTARTS
}

impl CallbackOptions {
    /// The callback with default limits, `restart` on fault, at most [`DEFAULT_MAX_RESTARTS`]
    /// restarts, and no inert WASI: what `--callback SPEC` adds.
    pub fn new(spec: CallbackSpec) -> Self {
        Self {
            spec,
            on_fault: FaultPolicy::default(),
            max_restarts: DEFAULT_MAX_RESTARTS,
            inert_wasi: false,
            limits: Limits::default(),
        }
    }
}

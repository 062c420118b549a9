//! Per-callback resource limits, in the units operators speak (durations, byte sizes, counts),
//! and the checks the host makes on what a guest hands back.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SandboxError;
use super::fault::{CallbackFaultKind, Fault};

/// Resource limits for one callback. Callers speak in durations and byte sizes; the sandbox turns
/// them into epoch ticks and fuel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock deadline for one event call (enforced by epoch interruption).
    #[serde(with = "millis")]
    pub call_timeout: Duration,
    /// Wall-clock deadline for `init` and `restore-state`.
    #[serde(with = "millis")]
    pub init_timeout: Duration,
    /// Deterministic instruction budget for one call.
    pub fuel_per_call: u64,
    /// Cap on the callback's linear memory, in bytes.
    pub memory_bytes: usize,
    /// Bytes of log and stdout/stderr output kept per call; the rest is cut.
    pub log_bytes_per_call: usize,
    /// Bytes of log and stdout/stderr output kept per run; the rest is dropped.
    pub log_bytes_per_run: usize,
    /// Decisions one call may return; more is a fault.
    pub max_decisions_per_call: usize,
    /// Size of a state snapshot; larger is a fault.
    pub max_state_bytes: usize,
    /// Size of a component file.
    pub max_component_bytes: usize,
    /// CPU time, all threads together, that compiling the component may take (whole seconds,
    /// rounded up). Enforced when the sandbox compiles in a child process
    /// ([`super::Compiler::Process`], what the CLI does); not for bundled or cached components.
    #[serde(with = "millis")]
    pub compile_cpu_time: Duration,
    /// Memory (heap and other private writable mappings) that compiling the component may take.
    /// Enforced like `compile_cpu_time`.
    pub compile_memory_bytes: usize,

    // Budgets for the whole run, across restarts: a callback within every per-call limit still
    // cannot make a run slow or its directory huge. Over one, it faults with kind `budget` and is
    // disabled (or, with `on_fault = "abort"`, ends the run): a restart would start over budget.
    /// Fuel all of the callback's calls may use together, host work included (see
    /// [`HOST_BYTES_PER_FUEL`]).
    pub fuel_per_run: u64,
    /// Share of the run's wall-clock time the callback's calls may take, once they have taken
    /// `time_grace` in all: at 0.25, the callback can make a run at most a third longer.
    pub time_share: f64,
    /// Time in calls a callback may take before `time_share` applies, so that a short run is not
    /// judged on its first calls (which start caches and language runtimes).
    #[serde(with = "millis")]
    pub time_grace: Duration,
    /// Decisions the callback may return in the run (each becomes a line of `decisions.jsonl`).
    pub decisions_per_run: u64,
    /// Distinct checkpoint tags the callback may create (each is a file in `checkpoints/`).
    pub checkpoint_tags: usize,
    /// Checkpoints the callback may have saved per epoch (each writes and syncs a file).
    pub checkpoint_saves_per_epoch: u32,
    /// Bytes of checkpoints the callback may have saved in the run (the save that crosses it is
    /// the last).
    pub checkpoint_bytes_per_run: u64,
    /// Distinct custom metric names the callback may log (each is a key of every epoch's line
    /// in `metrics.jsonl`).
    pub metric_names: usize,
    /// `validate-now` decisions of the callback applied per epoch (each runs a validation pass).
    pub validations_per_epoch: u32,
    /// `restore-checkpoint` decisions of the callback applied per epoch (each reads a checkpoint
    /// and undoes training).
    pub restores_per_epoch: u32,
}

/// Bytes the host takes in for a guest (`log` messages, stdout and stderr, the strings of its
/// decisions, its state snapshots) that cost it one unit of fuel: copying and checking a byte costs the host about what an instruction costs the guest,
/// so output is never a free way to burn the host's time.
pub const HOST_BYTES_PER_FUEL: u64 = 1;

impl Default for Limits {
    /// Generous for honest callbacks (which take microseconds and kilobytes), tight enough that a
    /// hostile one costs a run little: 100 ms and 50M instructions per call, 500 ms for init,
    /// 64 MiB of memory, 16 KiB of output per call and 1 MiB per run, 64 decisions per call,
    /// 1 MiB of state, 64 MiB of component. Compiling a component that is neither bundled nor
    /// cached may take 5 s of CPU time and 256 MiB: far more than Rust and C callbacks need
    /// (0.2 s and 16 MiB for the bundled ones), while an unbounded compile bomb of 59 MB took
    /// 432 s and 1.7 GB on a 2-vCPU AMD EPYC VM. Components carrying a language runtime (the
    /// Python and JavaScript examples, 13-18 MB: 19-38 s and 410-490 MiB there) need these
    /// raised for them.
    ///
    /// Per run: 10G fuel (seconds of guest work; an honest per-batch callback uses ~10k fuel a
    /// call, so 1M calls), a quarter of the run's time after the first second, 1M decisions (an
    /// `lr-schedule` deciding every step of a million-step run), 16 checkpoint tags, 8 saves per
    /// epoch and 16 GiB of checkpoints in all, 64 custom metric names, 4 `validate-now` and 2
    /// `restore-checkpoint` per epoch.
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_millis(100),
            init_timeout: Duration::from_millis(500),
            fuel_per_call: 50_000_000,
            memory_bytes: 64 << 20,
            log_bytes_per_call: 16 << 10,
            log_bytes_per_run: 1 << 20,
            max_decisions_per_call: 64,
            max_state_bytes: 1 << 20,
            max_component_bytes: 64 << 20,
            compile_cpu_time: Duration::from_secs(5),
            compile_memory_bytes: 256 << 20,
            fuel_per_run: 10_000_000_000,
            time_share: 0.25,
            time_grace: Duration::from_secs(1),
            decisions_per_run: 1_000_000,
            checkpoint_tags: 16,
            checkpoint_saves_per_epoch: 8,
            checkpoint_bytes_per_run: 16 << 30,
            metric_names: 64,
            validations_per_epoch: 4,
            restores_per_epoch: 2,
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Limits {
    /// Bytes one transfer from the guest may carry before the host refuses to take it in
    /// (wasmtime's "hostcall fuel", checked before anything is copied): a state snapshot at its
    /// limit, a decision list many times longer than allowed, or a log message of megabytes. A
    /// 1M-decision list is refused at once instead of being copied first and counted after.
    pub(crate) fn transfer_bytes(&self) -> usize {
        self.max_state_bytes.saturating_add(4 << 20)
    }

    /// Checks the size of a component file before it is read.
    pub(crate) fn check_component_size(&self, name: &str, bytes: u64) -> Result<(), SandboxError> {
        if bytes > self.max_component_bytes as u64 {
            return Err(SandboxError::InvalidComponent {
                name: name.to_string(),
                message: format!(
                    "component is {bytes} bytes, over the limit of {} bytes (raise limits.max_component_bytes)",
                    self.max_component_bytes
                ),
            });
        }
        Ok(())
    }

    /// Checks the number of decisions one call returned.
    pub(crate) fn check_decisions(&self, count: usize) -> Result<(), Fault> {
        if count > self.max_decisions_per_call {
            return Err(Fault::new(
                CallbackFaultKind::InvalidDecision,
                format!(
                    "returned {count} decisions in one call (limit {})",
                    self.max_decisions_per_call
                ),
            ));
        }
        Ok(())
    }

    /// Checks the size of a state snapshot.
    pub(crate) fn check_state(&self, bytes: usize) -> Result<(), Fault> {
        if bytes > self.max_state_bytes {
            return Err(Fault::new(
                CallbackFaultKind::InvalidOutput,
                format!(
                    "state snapshot of {bytes} bytes exceeds the limit of {} bytes",
                    self.max_state_bytes
                ),
            ));
        }
        Ok(())
    }
}

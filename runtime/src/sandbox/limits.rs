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
}

impl Default for Limits {
    /// Generous for honest callbacks (which take microseconds and kilobytes), tight enough that a
    /// hostile one costs a run little: 100 ms and 50M instructions per call, 500 ms for init,
    /// 64 MiB of memory, 16 KiB of output per call and 1 MiB per run, 64 decisions per call,
    /// 1 MiB of state, 64 MiB of component. Compiling a component that is neither bundled nor
    /// cached may take 60 s of CPU time and 768 MiB: the largest real components, the Python
    /// and JavaScript examples (18 and 13 MB), take 19-38 s and 410-490 MiB on a 2-vCPU AMD EPYC
    /// VM, where an unbounded compile bomb of 59 MB took 432 s and 1.7 GB.
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
            compile_cpu_time: Duration::from_secs(60),
            compile_memory_bytes: 768 << 20,
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

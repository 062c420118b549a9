//! The host's side of one live callback instance: its store data (output capture with budgets,
//! deny-by-default WASI with frozen clocks and seeded randomness, the memory cap) and the `log`
//! import.

use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::capture::CapturedOutput;
use super::fault::{MemoryLimitExceeded, TableLimitExceeded};
use super::limits::Limits;
use super::text::{is_printable_within, printable};
use crate::contract::{HostImports, Level};

/// One line a callback logged (via the `log` import or its stdout/stderr).
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// Severity; stdout is `info`, stderr is `warn`.
    pub level: Level,
    /// The printable, length-capped text.
    pub message: String,
}

impl LogLine {
    /// The level's name as the contract spells it: `debug`, `info`, `warn` or `error`.
    pub fn level_name(&self) -> &'static str {
        match self.level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Entries a guest's table may hold: far more than any callback's function table needs (a
/// Python interpreter's has about 10,000), and at most 800 KB of host memory.
const MAX_TABLE_ENTRIES: usize = 100_000;

/// Per-store data: everything the host keeps for one live callback instance.
//
// `repr(C)`: the fields every call touches (the per-call log budget, reset before it; the lines
// and the stdio flag, checked after it) first and together, as in `CallbackInstance`.
#[repr(C)]
pub struct GuestState {
    log_budget_call: usize,
    logs: Vec<LogLine>,
    /// Forward WASI stdout/stderr (only components that import them pay for the check).
    pub(crate) capture_stdio: bool,
    /// Bytes of `log` messages the host took in during this call, kept or not.
    log_bytes_in: u64,
    log_budget_run: usize,
    memory_cap: usize,
    dropped_log_bytes: u64,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl GuestState {
    pub(super) fn new(limits: &Limits) -> Self {
        // Each stream holds one call's worth of output; the rest is dropped and counted.
        let stdout = CapturedOutput::new(limits.log_bytes_per_call);
        let stderr = CapturedOutput::new(limits.log_bytes_per_call);
        let mut wasi = WasiCtx::builder();
        // Deny by default: no files (no preopens), no env, no args, stdin closed, no network.
        // Clocks are frozen and randomness is seeded so guests stay deterministic and replayable.
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(seeded_rng(RANDOM_SEED))
            .insecure_random(seeded_rng(RANDOM_SEED ^ 1))
            .insecure_random_seed(u128::from(RANDOM_SEED));
        Self {
            capture_stdio: false,
            log_bytes_in: 0,
            memory_cap: limits.memory_bytes,
            log_budget_call: limits.log_bytes_per_call,
            log_budget_run: limits.log_bytes_per_run,
            logs: Vec::new(),
            dropped_log_bytes: 0,
            stdout,
            stderr,
            wasi: wasi.build(),
            table: ResourceTable::new(),
        }
    }

    /// Resets the per-call output budget before a call.
    pub(crate) fn begin_call(&mut self, limits: &Limits) {
        self.log_budget_call = limits.log_bytes_per_call;
    }

    /// Bytes the host took in for the guest since the last call of this: `log` messages and
    /// stdout/stderr writes, whether kept or dropped for a budget. The caller charges them as fuel.
    pub(crate) fn take_host_bytes(&mut self) -> u64 {
        let mut bytes = std::mem::take(&mut self.log_bytes_in);
        if self.capture_stdio {
            bytes += self.stdout.take_written() + self.stderr.take_written();
        }
        bytes
    }

    /// Takes the lines logged since the last call, including new stdout/stderr output.
    pub(crate) fn take_logs(&mut self) -> Vec<LogLine> {
        self.drain_logs().collect()
    }

    /// Whether [`GuestState::drain_logs`] may yield anything: lines logged, or captured
    /// stdout/stderr not yet looked at. Lets the host skip the drain after the usual call that
    /// logged nothing.
    pub(crate) fn may_have_logs(&self) -> bool {
        !self.logs.is_empty() || self.capture_stdio
    }

    /// Removes and yields the lines logged since the last call, including new stdout/stderr
    /// output; the buffer keeps its capacity, so a callback that logs every call does not make
    /// the host allocate a new one each time.
    pub(crate) fn drain_logs(&mut self) -> std::vec::Drain<'_, LogLine> {
        if self.capture_stdio {
            self.collect_stdio();
        }
        self.logs.drain(..)
    }

    /// Turns the captured stdout/stderr output into log lines.
    fn collect_stdio(&mut self) {
        for (pipe, level) in [
            (self.stdout.clone(), Level::Info),
            (self.stderr.clone(), Level::Warn),
        ] {
            if pipe.is_empty() {
                continue;
            }
            let (bytes, dropped) = pipe.take();
            self.dropped_log_bytes += dropped;
            for line in String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                self.push_log(level, line.to_string());
            }
        }
    }

    /// Bytes of output dropped because a budget ran out.
    pub(crate) fn dropped_log_bytes(&self) -> u64 {
        self.dropped_log_bytes
    }
}

impl GuestState {
    /// Keeps a log line within the per-call and per-run budgets, counting what is dropped.
    fn push_log(&mut self, level: Level, message: String) {
        let budget = self.log_budget_call.min(self.log_budget_run);
        if budget == 0 {
            self.dropped_log_bytes += message.len() as u64;
            return;
        }
        // Most lines need neither escaping nor cutting: keep the guest's string as it came.
        let message = if is_printable_within(&message, budget) {
            message
        } else {
            printable(&message, budget)
        };
        self.log_budget_call = self.log_budget_call.saturating_sub(message.len());
        self.log_budget_run = self.log_budget_run.saturating_sub(message.len());
        self.logs.push(LogLine { level, message });
    }
}

impl HostImports for GuestState {
    fn log(&mut self, level: Level, message: String) {
        // Counted before any budget is looked at: once the budgets are spent the line is dropped,
        // but taking it in still cost the host, so it still costs the guest.
        self.log_bytes_in += message.len() as u64;
        self.push_log(level, message);
    }
}

impl crate::contract::TypesImports for GuestState {}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for GuestState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            // An error (not `Ok(false)`) so the guest traps right here with a classifiable cause,
            // instead of limping on after a failed allocation.
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                cap: self.memory_cap,
                desired,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ENTRIES {
            // An error, as for memory: the guest traps with a cause the host can classify.
            return Err(wasmtime::Error::new(TableLimitExceeded {
                cap: MAX_TABLE_ENTRIES,
                desired,
            }));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        // A callback world component instantiates a handful of core instances (the module, the
        // shims and, for WASI guests, an adapter).
        64
    }

    fn memories(&self) -> usize {
        8
    }

    fn tables(&self) -> usize {
        16
    }
}

/// The seed of every guest's `wasi:random` generators. Fixed, so a callback that asks for random
/// bytes gets the same ones in every run and every replay; a callback has no business with real
/// entropy, and nothing it does with these bytes can reach outside its sandbox.
const RANDOM_SEED: u64 = 0x0074_7261_696e_7274;

fn seeded_rng(seed: u64) -> wasi_rand::rngs::StdRng {
    use wasi_rand::SeedableRng;
    wasi_rand::rngs::StdRng::seed_from_u64(seed)
}

/// A clock that never moves: callbacks get no time source, so replays are exact.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_budget_per_call_and_per_run() {
        let limits = Limits {
            log_bytes_per_call: 10,
            log_bytes_per_run: 25,
            ..Limits::default()
        };
        let mut g = GuestState::new(&limits);
        g.begin_call(&limits);
        g.log(Level::Info, "0123456789abc".into());
        g.log(Level::Info, "more".into());
        let logs = g.take_logs();
        assert_eq!(logs.len(), 1);
        assert!(logs[0].message.starts_with("0123456789"));
        assert_eq!(g.dropped_log_bytes(), 4);
        for _ in 0..5 {
            g.begin_call(&limits);
            g.log(Level::Info, "0123456789".into());
        }
        let kept: usize = g.take_logs().iter().map(|l| l.message.len()).sum();
        assert!(kept <= 25, "run budget exceeded: {kept}");
    }
}

//! All sandbox policy in one place: the wasmtime engine configuration, per-callback limits, what a
//! guest may import, how its output is captured, and how a failure is classified.
//!
//! Three tiers of state, named for how long they live:
//! - [`Sandbox`] (engine, linker, epoch ticker): once per process, shared by every run.
//! - [`crate::CompiledCallback`] (component + `InstancePre`): once per callback file.
//! - a `Store<GuestState>`: once per callback per run, dropped after any fault, because a trap
//!   poisons a whole store in wasmtime 48.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

mod cache;
mod capture;
mod engine;

pub use self::cache::{CacheOutcome, ComponentCache};
pub use self::engine::WASM_STACK_BYTES;

use serde::{Deserialize, Serialize};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use self::capture::CapturedOutput;
use crate::contract::{CallbackWorld, HostImports, Level};

/// How often the engine's epoch advances; call deadlines are rounded up to whole ticks.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// A call deadline in epoch ticks, from [`Sandbox::deadline`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(u64);

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
}

impl Default for Limits {
    /// Generous for honest callbacks (which take microseconds and kilobytes), tight enough that a
    /// hostile one costs a run little: 100 ms and 50M instructions per call, 500 ms for init,
    /// 64 MiB of memory, 16 KiB of output per call and 1 MiB per run, 64 decisions per call,
    /// 1 MiB of state, 64 MiB of component.
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

/// Errors setting up the sandbox or loading a component.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The wasmtime engine could not be configured.
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
    /// The bytes are not a component for the callback world.
    #[error("{name}: {message}")]
    InvalidComponent {
        /// The callback's name.
        name: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// What kind of failure a callback had. Every fault is recorded with its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// A call ran past its wall-clock deadline.
    Timeout,
    /// A call used up its instruction budget.
    OutOfFuel,
    /// The callback tried to grow its memory past the cap.
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
}

impl FaultKind {
    /// The kebab-case name used in logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Timeout => "timeout",
            FaultKind::OutOfFuel => "out-of-fuel",
            FaultKind::MemoryLimit => "memory-limit",
            FaultKind::StackOverflow => "stack-overflow",
            FaultKind::Trap => "trap",
            FaultKind::InvalidDecision => "invalid-decision",
            FaultKind::InvalidOutput => "invalid-output",
            FaultKind::HostError => "host-error",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error a memory grow past the cap raises inside wasmtime, so the trap can be classified.
#[derive(Debug, thiserror::Error)]
#[error("linear memory limit of {cap} bytes exceeded (asked for {desired} bytes)")]
struct MemoryLimitExceeded {
    cap: usize,
    desired: usize,
}

/// Classifies an error returned by a guest call. Never looks at message text.
pub(crate) fn classify(err: &wasmtime::Error) -> FaultKind {
    if err.downcast_ref::<MemoryLimitExceeded>().is_some() {
        return FaultKind::MemoryLimit;
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FaultKind::Timeout,
        Some(Trap::OutOfFuel) => FaultKind::OutOfFuel,
        Some(Trap::StackOverflow) => FaultKind::StackOverflow,
        Some(_) => FaultKind::Trap,
        // Our host functions never fail, so an error that is not a trap comes from lifting what
        // the guest handed over: invalid UTF-8, an out-of-bounds list, a bad discriminant.
        None => FaultKind::InvalidOutput,
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
    log_budget_run: usize,
    memory_cap: usize,
    dropped_log_bytes: u64,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl GuestState {
    fn new(limits: &Limits) -> Self {
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

/// Makes guest text safe for a terminal and a log file: control characters are escaped and the
/// result is cut to at most `max_bytes` (on a character boundary, marked with `…`).
pub(crate) fn printable(text: &str, max_bytes: usize) -> String {
    if is_printable_within(text, max_bytes) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len().min(max_bytes));
    for c in text.chars() {
        let escaped = c.is_control().then(|| c.escape_default());
        let len = escaped
            .as_ref()
            .map_or(c.len_utf8(), ExactSizeIterator::len);
        if out.len() + len > max_bytes {
            out.push('…');
            break;
        }
        match escaped {
            Some(e) => out.extend(e),
            None => out.push(c),
        }
    }
    out
}

/// Whether [`printable`] would return `text` unchanged.
fn is_printable_within(text: &str, max_bytes: usize) -> bool {
    // Printable ASCII, the usual log line, is checked by bytes; anything else is decoded to find
    // control characters, C1 controls (U+0080..U+009F) included.
    text.len() <= max_bytes
        && (is_printable_ascii(text.as_bytes()) || !text.chars().any(char::is_control))
}

/// Whether every byte is printable ASCII (0x20..=0x7E). Checked in fixed-size blocks without an
/// early exit, which the compiler turns into a few vector compares instead of a branch per byte;
/// the tail is the last whole block again (overlapping the one before), not a loop per byte.
fn is_printable_ascii(bytes: &[u8]) -> bool {
    #[inline(always)]
    fn block_ok<const N: usize>(block: &[u8; N]) -> bool {
        block.iter().fold(true, |ok, &b| ok & is_printable_byte(b))
    }
    #[inline(always)]
    fn blocks_ok<const N: usize>(bytes: &[u8]) -> bool {
        let (blocks, _) = bytes.as_chunks::<N>();
        blocks.iter().all(block_ok) && bytes.last_chunk::<N>().is_none_or(block_ok)
    }
    match bytes.len() {
        32.. => blocks_ok::<32>(bytes),
        8.. => blocks_ok::<8>(bytes),
        _ => bytes.iter().all(|&b| is_printable_byte(b)),
    }
}

/// Whether `b` is printable ASCII (0x20..=0x7E).
#[inline(always)]
fn is_printable_byte(b: u8) -> bool {
    b.wrapping_sub(0x20) < 0x5f
}

impl HostImports for GuestState {
    fn log(&mut self, level: Level, message: String) {
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
        Ok(desired <= 100_000)
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

/// The process-wide sandbox: one wasmtime engine and linker, shared by every run and callback.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<GuestState>,
    ticker: EpochTicker,
    cache: ComponentCache,
}

impl Sandbox {
    /// Configures the engine (`sandbox/engine.rs`: Cranelift, component model, fuel and epoch
    /// interruption on, a 512 KiB wasm stack, no concurrency support) and a linker offering the
    /// `host` interface plus deny-by-default WASI. Compiled components are cached where
    /// [`ComponentCache::from_env`] says; the bundled callbacks load precompiled.
    pub fn new() -> Result<Self, SandboxError> {
        Self::with_cache(ComponentCache::from_env())
    }

    /// As [`Sandbox::new`], with an explicit compiled-component cache.
    pub fn with_cache(cache: ComponentCache) -> Result<Self, SandboxError> {
        let engine =
            Engine::new(&engine::config()).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        CallbackWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            linker,
            ticker,
            cache,
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiled-component cache.
    pub fn cache(&self) -> &ComponentCache {
        &self.cache
    }

    pub(crate) fn linker(&self) -> &Linker<GuestState> {
        &self.linker
    }

    /// A fresh store for one callback instance, with its limits installed.
    pub(crate) fn new_store(&self, limits: &Limits) -> Store<GuestState> {
        let mut store = Store::new(&self.engine, GuestState::new(limits));
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        store
    }

    /// `timeout` as a call deadline, in epoch ticks. Converted once per callback instance rather
    /// than before every call.
    pub(crate) fn deadline(&self, timeout: Duration) -> Deadline {
        Deadline(self.ticker.ticks_for(timeout))
    }

    /// Arms the deadline and the fuel budget for the next call.
    pub(crate) fn arm(&self, store: &mut Store<GuestState>, deadline: Deadline, fuel: u64) {
        store.set_epoch_deadline(deadline.0);
        // set_fuel only fails when fuel is disabled, which `new` never does.
        let _ = store.set_fuel(fuel);
    }
}

/// Advances the engine's epoch on a background thread, so a guest that runs past its deadline
/// traps at its next loop header or call.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("trainrt-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        Self { stop, thread }
    }

    fn ticks_for(&self, timeout: Duration) -> u64 {
        // +1: the current tick may be about to end, so one tick of slack keeps the deadline a
        // lower bound rather than cutting honest calls short.
        let ticks = timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX / 2).max(1) + 1
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_controls_and_caps_length() {
        assert_eq!(printable("a\nb\u{1b}[31m", 100), "a\\nb\\u{1b}[31m");
        let long = "x".repeat(50);
        let cut = printable(&long, 10);
        assert!(
            cut.starts_with("xxxxxxxxxx") && cut.ends_with('…') && cut.len() <= 13,
            "{cut}"
        );
        assert_eq!(printable("ééé", 3), "é…");
        // Nothing to escape or cut: the text as it came.
        assert_eq!(
            printable("epoch 3: loss=0.1234 ✓", 100),
            "epoch 3: loss=0.1234 ✓"
        );
        assert_eq!(printable("exactly10!", 10), "exactly10!");
        // DEL and the C1 controls (two bytes in UTF-8) are escaped too.
        assert_eq!(printable("a\u{7f}b\u{85}c", 100), "a\\u{7f}b\\u{85}c");
        // An escape that does not fit is cut whole, never split.
        assert_eq!(printable("abcdefgh\n", 9), "abcdefgh…");
    }

    #[test]
    fn the_ascii_check_finds_any_unprintable_byte_at_any_position() {
        // Every length up to three blocks of 32, and so every way a tail can overlap.
        for len in 0..=96 {
            let line = vec![b'a'; len];
            assert!(is_printable_ascii(&line), "{len}");
            for at in 0..len {
                for bad in [0x00, b'\n', 0x1f, 0x7f, 0x80, 0xff] {
                    let mut with = line.clone();
                    with[at] = bad;
                    assert!(!is_printable_ascii(&with), "{bad:#x} at {at} of {len}");
                }
            }
        }
        let all: Vec<u8> = (0x20..=0x7e).collect();
        assert!(is_printable_ascii(&all));
    }

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

    #[test]
    fn deadline_ticks_round_up() {
        let t = EpochTicker {
            stop: Arc::new(AtomicBool::new(true)),
            thread: None,
        };
        assert_eq!(t.ticks_for(Duration::from_millis(100)), 51);
        assert_eq!(t.ticks_for(Duration::from_micros(1)), 2);
        assert_eq!(t.ticks_for(Duration::from_millis(2)), 2);
        assert_eq!(t.ticks_for(Duration::ZERO), 2);
        assert_eq!(t.ticks_for(Duration::MAX), u64::MAX / 2 + 1);
    }
}

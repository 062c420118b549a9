//! All sandbox policy in one place: the wasmtime engine configuration (`engine`), per-callback
//! limits and the checks on what a guest returns (`limits`), what a callback has spent of its
//! budgets for the whole run (`budget`), what a guest may import
//! (`imports`), how its output is captured and budgeted (`guest`, `capture`, `text`), how a
//! failure is classified (`fault`), and how a component is compiled under limits (`compile`).
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

mod budget;
mod cache;
mod capture;
mod compile;
mod engine;
mod fault;
mod guest;
mod imports;
mod limits;
mod text;

pub use self::budget::{CallTotals, RunBudget, Spend};
pub use self::cache::{CacheOutcome, ComponentCache};
pub use self::compile::{COMPILE_SUBCOMMAND, Compiler, serve_compile};
pub use self::engine::WASM_STACK_BYTES;
pub use self::fault::CallbackFaultKind;
pub use self::fault::Fault;
pub(crate) use self::fault::{describe, fault_of};
pub use self::guest::{GuestState, LogLine};
pub use self::imports::{ImportVerdict, import_verdict};
pub(crate) use self::imports::{check_grants, compile};
pub use self::limits::{HOST_BYTES_PER_FUEL, Limits};
pub(crate) use self::text::printable;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, ResourceLimiter, Store};

use crate::contract::CallbackWorld;

/// How often the engine's epoch advances; call deadlines are rounded up to whole ticks.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// A call deadline in epoch ticks, from [`Sandbox::deadline`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(u64);

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
    /// Compiling the component went past one of its compile limits (`compile_cpu_time`,
    /// `compile_memory_bytes`); the message starts with `compile-limit:` and says how to raise it.
    #[error("{name}: {message}")]
    CompileLimit {
        /// The callback's name.
        name: String,
        /// Which limit, its value, and how to raise it.
        message: String,
    },
    /// The compiler process could not compile the component for another reason (it could not
    /// start, or crashed).
    #[error("{name}: cannot compile: {message}")]
    Compiler {
        /// The callback's name.
        name: String,
        /// What went wrong.
        message: String,
    },
}

/// The process-wide sandbox: one wasmtime engine and linker, shared by every run and callback.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<GuestState>,
    ticker: EpochTicker,
    cache: ComponentCache,
    compiler: Compiler,
}

impl Sandbox {
    /// Configures the engine (`sandbox/engine.rs`: Cranelift, component model, fuel and epoch
    /// interruption on, a 512 KiB wasm stack, no concurrency support) and a linker offering the
    /// `host` interface plus deny-by-default WASI. Compiled components are cached where
    /// [`ComponentCache::from_env`] says; the bundled callbacks load precompiled.
    ///
    /// Components that are neither bundled nor cached compile **in this process, without
    /// bounds** ([`Compiler::InProcess`]): a library has no program of its own to run as a child.
    /// To bound compilation by each callback's `compile_cpu_time` and `compile_memory_bytes`,
    /// pass a program that serves [`COMPILE_SUBCOMMAND`] to [`Sandbox::with_compiler`], as the
    /// `trainrt` CLI does with itself.
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
            compiler: Compiler::InProcess,
        })
    }

    /// Compiles components that are neither bundled nor cached with `compiler`:
    /// `Compiler::process(std::env::current_exe()?)` in a binary that answers
    /// [`COMPILE_SUBCOMMAND`] by calling [`serve_compile`].
    pub fn with_compiler(mut self, compiler: Compiler) -> Self {
        self.compiler = compiler;
        self
    }

    /// How components that are neither bundled nor cached are compiled.
    pub fn compiler(&self) -> &Compiler {
        &self.compiler
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
        store.set_hostcall_fuel(limits.transfer_bytes());
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

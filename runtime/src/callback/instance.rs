//! A live callback: one store per callback per run, and the call wrapper that arms the deadline
//! and fuel, times the call, and turns traps and panics into classified faults.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde::Serialize;
use wasmtime::Store;

use super::{CallbackError, CompiledCallback};
use crate::clock;
use crate::contract::Decision;
use crate::contract::{CallbackWorld, ConfigEntry};
use crate::events::{Event, Subscriptions};
use crate::sandbox::{
    CallbackFaultKind, Deadline, Fault, GuestState, Limits, LogLine, Sandbox, classify,
};

/// Counters kept for each callback and reported in `summary.json`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CallStats {
    /// Guest calls made (init and state calls included).
    pub calls: u64,
    /// Total time spent in guest calls, summed in nanoseconds (most calls take under a
    /// microsecond) and reported in `summary.json` as whole microseconds.
    #[serde(rename = "total_time_us", serialize_with = "as_micros")]
    pub total_time_ns: u64,
    /// Fuel (wasm instructions, roughly) used in total.
    pub fuel_used: u64,
    /// Decisions returned.
    pub decisions: u64,
}

fn as_micros<S: serde::Serializer>(ns: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(ns.saturating_add(500) / 1000)
}

/// A live callback for one run: its own store, bindings and subscription filter.
//
// `repr(C)` keeps the fields in the order written: those every event call reads or writes first,
// together. A per-batch call usually finds them evicted from the first-level cache by the
// training step before it, so each further cache line they were spread over cost a miss per call.
#[repr(C)]
pub struct CallbackInstance {
    /// First although only `init` reads it: `Option<CallbackInstance>` (a slot's instance, which
    /// every event checks for) is told apart by a niche in a field, and the compiler takes this
    /// one's (a `Vec`'s capacity); at the end of the struct, checking would cost a cache line.
    config: Vec<ConfigEntry>,
    // Touched by every event call.
    subscriptions: Subscriptions,
    /// `limits.call_timeout` in epoch ticks.
    call_deadline: Deadline,
    store: Store<GuestState>,
    /// Counters; `total_time_ns` is filled from `time_ticks` when read.
    stats: CallStats,
    /// Time inside guest calls, in [`clock`] ticks.
    time_ticks: u64,
    /// What the last `snapshot-state` returned, kept while the instance has not been called
    /// since. A guest's state changes only inside its own calls (it has no threads, and the host
    /// never touches its memory between calls), so asking again would return the same bytes: a
    /// callback that heard nothing since the last checkpoint costs the next one no guest call.
    unchanged_snapshot: Option<Vec<u8>>,
    limits: Limits,
    bindings: CallbackWorld,
    // The rest.
    /// `limits.init_timeout` in epoch ticks.
    init_deadline: Deadline,
    compiled: Arc<CompiledCallback>,
}

impl CallbackInstance {
    /// Instantiates the callback in a fresh store and runs its `init` with `params`.
    pub fn start(
        sandbox: &Sandbox,
        compiled: Arc<CompiledCallback>,
        params: &[(String, String)],
        limits: &Limits,
    ) -> Result<Self, CallbackError> {
        let name = compiled.name().to_string();
        let start_fault = |during, fault| CallbackError::StartFault {
            name: name.clone(),
            during,
            fault,
        };
        let mut store = sandbox.new_store(limits);
        store.data_mut().capture_stdio = compiled.uses_stdio;
        let init_deadline = sandbox.deadline(limits.init_timeout);
        sandbox.arm(&mut store, init_deadline, limits.fuel_per_call);
        let bindings = guard(|| compiled.pre.instantiate(&mut store))
            .map_err(|f| start_fault("instantiation", f))?;
        let config: Vec<ConfigEntry> = params
            .iter()
            .map(|(k, v)| ConfigEntry {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        let mut this = Self {
            compiled: compiled.clone(),
            config,
            limits: limits.clone(),
            call_deadline: sandbox.deadline(limits.call_timeout),
            init_deadline,
            store,
            bindings,
            subscriptions: Subscriptions::default(),
            stats: CallStats::default(),
            time_ticks: 0,
            unchanged_snapshot: None,
        };
        let config = this.config.clone();
        let registration = this
            .call(sandbox, init_deadline, |b, s| {
                b.trainrt_callbacks_callback().call_init(s, &config)
            })
            .map_err(|f| start_fault("init", f))?;
        match registration {
            Ok(r) => this.subscriptions = Subscriptions::new(&r.events, r.batch_every),
            Err(message) => {
                return Err(CallbackError::Rejected {
                    name: compiled.name().to_string(),
                    message: crate::sandbox::printable(&message, 1024),
                });
            }
        }
        Ok(this)
    }

    /// The callback's name.
    pub fn name(&self) -> &str {
        self.compiled.name()
    }

    /// What the callback subscribed to at init.
    pub fn subscriptions(&self) -> Subscriptions {
        self.subscriptions
    }

    /// Call counters so far.
    pub fn stats(&self) -> CallStats {
        CallStats {
            total_time_ns: clock::ticks_to_ns(self.time_ticks),
            ..self.stats
        }
    }

    /// The compiled callback this instance runs.
    pub fn compiled(&self) -> &Arc<CompiledCallback> {
        &self.compiled
    }

    /// The parameters the callback was started with.
    pub fn params(&self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|c| (c.key.clone(), c.value.clone()))
            .collect()
    }

    /// Delivers one event (the caller has checked the subscription) and returns its decisions.
    /// After an `Err`, the instance's store is poisoned: drop it.
    pub fn deliver(&mut self, sandbox: &Sandbox, event: &Event) -> Result<Vec<Decision>, Fault> {
        let decisions = self.call(sandbox, self.call_deadline, |b, s| {
            let g = b.trainrt_callbacks_callback();
            match event {
                Event::TrainStart(i) => g.call_on_train_start(s, i),
                Event::EpochStart(i) => g.call_on_epoch_start(s, *i),
                Event::BatchStart(i) => g.call_on_batch_start(s, *i),
                Event::BatchEnd(m) => g.call_on_batch_end(s, *m),
                Event::ValidationEnd(m) => g.call_on_validation_end(s, *m),
                Event::EpochEnd(m) => g.call_on_epoch_end(s, m),
                Event::CheckpointSaved(i) => g.call_on_checkpoint_saved(s, i),
                Event::TrainEnd(i) => g.call_on_train_end(s, i),
                Event::Fault(i) => g.call_on_fault(s, i),
            }
        })?;
        self.limits.check_decisions(decisions.len())?;
        self.stats.decisions += decisions.len() as u64;
        Ok(decisions)
    }

    /// The callback's state snapshot, size-checked. Calls the guest only if it was called since
    /// its last snapshot.
    pub fn snapshot(&mut self, sandbox: &Sandbox) -> Result<Vec<u8>, Fault> {
        if let Some(state) = &self.unchanged_snapshot {
            return Ok(state.clone());
        }
        let state = self.call(sandbox, self.call_deadline, |b, s| {
            b.trainrt_callbacks_callback().call_snapshot_state(s)
        })?;
        self.limits.check_state(state.len())?;
        self.unchanged_snapshot = Some(state.clone());
        Ok(state)
    }

    /// Restores a state snapshot taken earlier (on resume, or after a restart).
    pub fn restore(&mut self, sandbox: &Sandbox, state: &[u8]) -> Result<(), Fault> {
        match self.call(sandbox, self.init_deadline, |b, s| {
            b.trainrt_callbacks_callback().call_restore_state(s, state)
        })? {
            Ok(()) => Ok(()),
            Err(message) => Err(Fault::new(
                CallbackFaultKind::InvalidOutput,
                format!(
                    "rejected its saved state: {}",
                    crate::sandbox::printable(&message, 1024)
                ),
            )),
        }
    }

    /// Lines the callback logged since the last call to this.
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        self.store.data_mut().take_logs()
    }

    /// Whether [`CallbackInstance::drain_logs`] may yield anything (false after a call that
    /// logged nothing and wrote no output).
    pub fn may_have_logs(&self) -> bool {
        self.store.data().may_have_logs()
    }

    /// Removes and yields the lines the callback logged since the last call, keeping the
    /// buffer for the next ones.
    pub fn drain_logs(&mut self) -> impl Iterator<Item = LogLine> + '_ {
        self.store.data_mut().drain_logs()
    }

    /// Output bytes dropped for exceeding the log budgets.
    pub fn dropped_log_bytes(&self) -> u64 {
        self.store.data().dropped_log_bytes()
    }

    /// Runs one guest call under the deadline and fuel budget, catching traps and panics.
    fn call<R>(
        &mut self,
        sandbox: &Sandbox,
        deadline: Deadline,
        f: impl FnOnce(&CallbackWorld, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        let fuel = self.limits.fuel_per_call;
        // Whatever this call is, the guest may change its state in it.
        self.unchanged_snapshot = None;
        self.store.data_mut().begin_call(&self.limits);
        sandbox.arm(&mut self.store, deadline, fuel);
        let started = clock::now();
        let (bindings, store) = (&self.bindings, &mut self.store);
        let result = guard(|| f(bindings, store));
        self.time_ticks = self.time_ticks.saturating_add(started.ticks_since());
        self.stats.calls += 1;
        self.stats.fuel_used += fuel.saturating_sub(self.store.get_fuel().unwrap_or(0));
        result
    }
}

/// Runs a wasmtime call, turning an error into a classified fault and a panic (in wasmtime or a
/// host function) into a host-error fault instead of a dead process.
fn guard<R>(f: impl FnOnce() -> wasmtime::Result<R>) -> Result<R, Fault> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(Fault::new(classify(&e), crate::sandbox::describe(&e))),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Fault::new(
                CallbackFaultKind::HostError,
                format!("host panicked while serving the callback: {what}"),
            ))
        }
    }
}

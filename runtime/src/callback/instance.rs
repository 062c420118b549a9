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
    CallbackFaultKind, Deadline, Fault, GuestState, HOST_BYTES_PER_FUEL, Limits, LogLine, Sandbox,
    fault_of,
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
    /// Fuel used in total: wasm instructions, roughly, plus the bytes of output the host took in
    /// for the callback ([`crate::sandbox::HOST_BYTES_PER_FUEL`]).
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
        let bindings = guard(CallbackFaultKind::InvalidOutput, || {
            compiled.pre.instantiate(&mut store)
        })
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
            .call(
                sandbox,
                init_deadline,
                CallbackFaultKind::InvalidOutput,
                error_bytes,
                |b, s| b.trainrt_callbacks_callback().call_init(s, &config),
            )
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

    /// Fuel used so far (what [`CallbackInstance::stats`] reports, without converting time).
    pub(crate) fn fuel_used(&self) -> u64 {
        self.stats.fuel_used
    }

    /// Decisions returned so far.
    pub(crate) fn decisions(&self) -> u64 {
        self.stats.decisions
    }

    /// Time inside calls so far, in the call timer's ticks (cheap to read; `stats` converts it).
    pub(crate) fn time_ticks(&self) -> u64 {
        self.time_ticks
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
        let answer = CallbackFaultKind::InvalidDecision;
        let size = |decisions: &Vec<Decision>| decision_bytes(decisions);
        let decisions = self.call(sandbox, self.call_deadline, answer, size, |b, s| {
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
        let answer = CallbackFaultKind::InvalidOutput;
        let size = |state: &Vec<u8>| state.len() as u64;
        let state = self.call(sandbox, self.call_deadline, answer, size, |b, s| {
            b.trainrt_callbacks_callback().call_snapshot_state(s)
        })?;
        self.limits.check_state(state.len())?;
        self.unchanged_snapshot = Some(state.clone());
        Ok(state)
    }

    /// Restores a state snapshot taken earlier (on resume, or after a restart).
    pub fn restore(&mut self, sandbox: &Sandbox, state: &[u8]) -> Result<(), Fault> {
        let answer = CallbackFaultKind::InvalidOutput;
        match self.call(sandbox, self.init_deadline, answer, error_bytes, |b, s| {
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
    /// `answer` is the fault kind for an answer the host cannot take in; `size` says how many
    /// bytes the host took in with the answer (its strings), which the guest pays for as fuel
    /// with what it logged.
    fn call<R>(
        &mut self,
        sandbox: &Sandbox,
        deadline: Deadline,
        answer: CallbackFaultKind,
        size: impl FnOnce(&R) -> u64,
        f: impl FnOnce(&CallbackWorld, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        let fuel = self.limits.fuel_per_call;
        // Whatever this call is, the guest may change its state in it.
        self.unchanged_snapshot = None;
        self.store.data_mut().begin_call(&self.limits);
        sandbox.arm(&mut self.store, deadline, fuel);
        let started = clock::now();
        let (bindings, store) = (&self.bindings, &mut self.store);
        let result = guard(answer, || f(bindings, store));
        self.time_ticks = self.time_ticks.saturating_add(started.ticks_since());
        self.stats.calls += 1;
        // What the host took in for the guest (its log lines, its output, its answer) costs it
        // fuel too.
        let answer_bytes = result.as_ref().map_or(0, size);
        let host_bytes = self.store.data_mut().take_host_bytes() + answer_bytes;
        let host_fuel = host_bytes / HOST_BYTES_PER_FUEL;
        let used = fuel
            .saturating_sub(self.store.get_fuel().unwrap_or(0))
            .saturating_add(host_fuel);
        self.stats.fuel_used = self.stats.fuel_used.saturating_add(used);
        let answer = result?;
        if used > fuel {
            return Err(Fault::new(
                CallbackFaultKind::OutOfFuel,
                format!(
                    "used {used} fuel in one call, {host_fuel} of it for the {host_bytes} bytes \
                     of output the host took in (limit {fuel}: limits.fuel_per_call)"
                ),
            ));
        }
        Ok(answer)
    }
}

/// Bytes of the strings in a list of decisions (tags, reasons, metric names).
fn decision_bytes(decisions: &[Decision]) -> u64 {
    let bytes = |d: &Decision| match d {
        Decision::StopTraining(s)
        | Decision::SaveCheckpoint(s)
        | Decision::RestoreCheckpoint(s) => s.len(),
        Decision::LogMetric(m) => m.name.len(),
        Decision::EndEpoch | Decision::SetLearningRate(_) | Decision::ValidateNow => 0,
    };
    decisions.iter().map(|d| bytes(d) as u64).sum()
}

/// Bytes of the message in an `Err` answer (`init` and `restore-state` return `result<_, string>`).
fn error_bytes<T>(answer: &Result<T, String>) -> u64 {
    answer.as_ref().err().map_or(0, |m| m.len() as u64)
}

/// Runs a wasmtime call, turning an error into a classified fault (`answer` for an answer the
/// host could not take in) and a panic (in wasmtime or a host function) into a host-error fault
/// instead of a dead process.
fn guard<R>(
    answer: CallbackFaultKind,
    f: impl FnOnce() -> wasmtime::Result<R>,
) -> Result<R, Fault> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(fault_of(&e, answer)),
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

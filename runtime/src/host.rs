//! The callbacks of one run: delivered to in command-line order, each in its own store, with the
//! fault policy applied when one fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::callback::{
    CallStats, CallbackError, CallbackInstance, CallbackOptions, CompiledCallback, FaultPolicy,
};
use crate::contract::{Decision, EventKind, Level, RunInfo};
use crate::events::{Event, kind_name};
use crate::sandbox::{CallTotals, CallbackFaultKind, Fault, LogLine, RunBudget, Sandbox, Spend};

mod records;

pub use records::{CallbackReport, CallbackStatus, FaultAction, FaultRecord};

// `repr(C)`: the instance, whose first fields every event reads, at the start of the slot.
#[repr(C)]
struct Slot {
    instance: Option<CallbackInstance>,
    /// Shared with every `Answer` it gives, so answering costs no allocation for the name.
    name: Arc<str>,
    options: CallbackOptions,
    compiled: Arc<CompiledCallback>,
    last_good_state: Option<Vec<u8>>,
    stats: CallStats,
    faults: BTreeMap<CallbackFaultKind, u32>,
    restarts: u32,
    dropped_log_bytes: u64,
    /// What it has spent of its run budgets, across restarts.
    budget: RunBudget,
    /// Time in calls of the instances it dropped, in clock ticks (`stats` has it in ns).
    dead_time_ticks: u64,
}

impl Slot {
    /// Calls, time, fuel and decisions of every instance so far, the live one included.
    fn stats(&self) -> CallStats {
        let mut stats = self.stats;
        if let Some(i) = &self.instance {
            add_stats(&mut stats, &i.stats());
        }
        stats
    }

    /// Checks the run budgets after a call. Cheap: sums of counters, and clock ticks converted
    /// only when the callback's time share could have been exceeded.
    fn check_budget(&mut self, run_started: Instant) -> Result<(), Fault> {
        let live = self.instance.as_ref();
        let totals = CallTotals {
            fuel: self.stats.fuel_used + live.map_or(0, |i| i.fuel_used()),
            decisions: self.stats.decisions + live.map_or(0, |i| i.decisions()),
            time_units: self.dead_time_ticks + live.map_or(0, |i| i.time_ticks()),
        };
        self.budget
            .check_calls(&self.options.limits, totals, |ticks| {
                let time = Duration::from_nanos(crate::clock::ticks_to_ns(ticks));
                (time, run_started.elapsed())
            })
    }
}

/// One decision-bearing answer from a callback.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The callback's name.
    pub callback: Arc<str>,
    /// Its decisions, unvalidated.
    pub decisions: Vec<Decision>,
}

/// The callbacks of one run, in command-line order.
pub struct CallbackHost {
    sandbox: Arc<Sandbox>,
    slots: Vec<Slot>,
    run_info: Option<RunInfo>,
    faults: Vec<FaultRecord>,
    logs: Vec<(Arc<str>, LogLine)>,
    abort: Option<FaultRecord>,
    /// The answers to the event being dispatched; kept between events for its capacity.
    answers: Vec<Answer>,
    /// When the callbacks started: the run's time so far, which `time_share` is a share of.
    started: Instant,
}

impl CallbackHost {
    /// Loads, compiles and starts every callback (running each one's `init`). Names are made
    /// unique (`logger`, `logger#2`) so logs and decisions say which one spoke.
    pub fn start(
        sandbox: Arc<Sandbox>,
        callbacks: &[CallbackOptions],
    ) -> Result<Self, CallbackError> {
        let mut slots: Vec<Slot> = Vec::with_capacity(callbacks.len());
        let mut compiled_cache: BTreeMap<String, Arc<CompiledCallback>> = BTreeMap::new();
        for options in callbacks {
            let base = options.spec.name();
            let same = slots
                .iter()
                .filter(|s| s.options.spec.name() == base)
                .count();
            let name = if same == 0 {
                base.clone()
            } else {
                format!("{base}#{}", same + 1)
            };
            let compiled = match compiled_cache.get(&options.spec.source) {
                Some(c) => c.clone(),
                None => {
                    let bytes = options.spec.load_bytes(&options.limits)?;
                    let c = Arc::new(CompiledCallback::with_limits(
                        &sandbox,
                        &base,
                        &bytes,
                        &options.limits,
                    )?);
                    compiled_cache.insert(options.spec.source.clone(), c.clone());
                    c
                }
            };
            compiled.check_grants(&sandbox, &name, options.inert_wasi)?;
            let instance = CallbackInstance::start(
                &sandbox,
                compiled.clone(),
                &options.spec.params,
                &options.limits,
            )
            .map_err(|e| rename_error(e, &name))?;
            slots.push(Slot {
                name: name.into(),
                options: options.clone(),
                compiled,
                instance: Some(instance),
                last_good_state: None,
                stats: CallStats::default(),
                faults: BTreeMap::new(),
                restarts: 0,
                dropped_log_bytes: 0,
                budget: RunBudget::default(),
                dead_time_ticks: 0,
            });
        }
        Ok(Self {
            sandbox,
            slots,
            run_info: None,
            faults: Vec::new(),
            logs: Vec::new(),
            abort: None,
            answers: Vec::new(),
            started: Instant::now(),
        })
    }

    /// Names of the callbacks, in delivery order.
    pub fn names(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.name.to_string()).collect()
    }

    /// Whether any active callback wants events of this kind (lets the trainer skip building them).
    pub fn wants_kind(&self, kind: EventKind) -> bool {
        self.slots.iter().any(|s| {
            s.instance
                .as_ref()
                .is_some_and(|i| i.subscriptions().wants_kind(kind))
        })
    }

    /// Delivers `event` to each subscribed callback in order and collects their decisions.
    /// Returns whether anyone received it, and the answers, drained from a buffer the host keeps
    /// for the next event. Faults are handled per policy and queued for
    /// [`CallbackHost::take_faults`].
    pub fn dispatch(&mut self, event: &Event) -> (bool, std::vec::Drain<'_, Answer>) {
        if let Event::TrainStart(info) = event {
            self.run_info = Some(info.clone());
        }
        let mut delivered = false;
        self.answers.clear();
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            let Some(instance) = slot.instance.as_mut() else {
                continue;
            };
            if !instance.subscriptions().wants(event) {
                continue;
            }
            delivered = true;
            let result = instance
                .deliver(&self.sandbox, event)
                .and_then(|d| slot.check_budget(self.started).map(|()| d));
            // On a fault, `handle_fault` collects the logs (they may explain it).
            if result.is_ok() {
                collect_logs(slot, &mut self.logs);
            }
            match result {
                Ok(decisions) if decisions.is_empty() => {}
                Ok(decisions) => self.answers.push(Answer {
                    callback: slot.name.clone(),
                    decisions,
                }),
                Err(fault) => self.handle_fault(
                    i,
                    kind_name(event.kind()),
                    event.epoch(),
                    event.step(),
                    fault,
                ),
            }
        }
        (delivered, self.answers.drain(..))
    }

    /// Every active callback's state, for a checkpoint. Also remembered as each callback's last
    /// good state, which a restart restores.
    pub fn snapshot_all(&mut self, epoch: u32, step: u64) -> Vec<(String, Vec<u8>)> {
        let mut states = Vec::new();
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            let Some(instance) = slot.instance.as_mut() else {
                continue;
            };
            let result = instance
                .snapshot(&self.sandbox)
                .and_then(|state| slot.check_budget(self.started).map(|()| state));
            // On a fault, `handle_fault` collects the logs (they may explain it).
            if result.is_ok() {
                collect_logs(slot, &mut self.logs);
            }
            match result {
                Ok(state) => {
                    slot.last_good_state = Some(state.clone());
                    states.push((slot.name.to_string(), state));
                }
                Err(fault) => self.handle_fault(i, "snapshot-state", epoch, step, fault),
            }
        }
        states
    }

    /// Restores states saved by [`CallbackHost::snapshot_all`] (on resume). A callback missing
    /// from `states` keeps its fresh state.
    pub fn restore_all(&mut self, states: &[(String, Vec<u8>)], epoch: u32, step: u64) {
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            let Some(state) = states
                .iter()
                .find(|(n, _)| **n == *slot.name)
                .map(|(_, s)| s.clone())
            else {
                continue;
            };
            let Some(instance) = slot.instance.as_mut() else {
                continue;
            };
            let result = instance
                .restore(&self.sandbox, &state)
                .and_then(|()| slot.check_budget(self.started));
            // On a fault, `handle_fault` collects the logs (they may explain it).
            if result.is_ok() {
                collect_logs(slot, &mut self.logs);
            }
            match result {
                Ok(()) => slot.last_good_state = Some(state),
                Err(fault) => self.handle_fault(i, "restore-state", epoch, step, fault),
            }
        }
    }

    /// Charges callback `name` for applying one of its decisions (answering an event of `epoch`
    /// and `step`, `during` its kind). `Err` with the reason when the decision must not be applied
    /// because the callback is over a run budget; the first time, the `budget` fault is handled
    /// as its policy says and queued for [`CallbackHost::take_faults`].
    pub fn charge(
        &mut self,
        name: &str,
        spend: Spend<'_>,
        during: &str,
        epoch: u32,
        step: u64,
    ) -> Result<(), String> {
        let Some(index) = self.slots.iter().position(|s| *s.name == *name) else {
            return Ok(());
        };
        let slot = &mut self.slots[index];
        match slot.budget.spend(&slot.options.limits, spend) {
            Ok(()) => Ok(()),
            Err(None) => Err(format!("{name} is over a run budget")),
            Err(Some(fault)) => {
                let reason = format!("over budget: {}", fault.message);
                self.handle_fault(index, during, epoch, step, fault);
                Err(reason)
            }
        }
    }

    /// Faults since the last call, oldest first.
    pub fn take_faults(&mut self) -> Vec<FaultRecord> {
        std::mem::take(&mut self.faults)
    }

    /// Lines callbacks logged since the last call, with the callback's name.
    pub fn take_logs(&mut self) -> Vec<(Arc<str>, LogLine)> {
        std::mem::take(&mut self.logs)
    }

    /// Removes and yields the log lines collected so far, as [`CallbackHost::take_logs`] does,
    /// but keeps the buffer: the trainer drains it after every event.
    pub fn drain_logs(&mut self) -> std::vec::Drain<'_, (Arc<str>, LogLine)> {
        self.logs.drain(..)
    }

    /// The fault of a critical (`abort`) callback, if one happened: training must end.
    pub fn abort_requested(&self) -> Option<&FaultRecord> {
        self.abort.as_ref()
    }

    /// Per-callback statistics.
    pub fn reports(&self) -> Vec<CallbackReport> {
        self.slots
            .iter()
            .map(|s| {
                let stats = s.stats();
                let dropped =
                    s.dropped_log_bytes + s.instance.as_ref().map_or(0, |i| i.dropped_log_bytes());
                let mean = if stats.calls == 0 {
                    0.0
                } else {
                    stats.total_time_ns as f64 / 1e3 / stats.calls as f64
                };
                CallbackReport {
                    name: s.name.to_string(),
                    spec: s.options.spec.to_string(),
                    stats,
                    mean_time_us: mean,
                    faults: s.faults.clone(),
                    restarts: s.restarts,
                    status: if s.instance.is_some() {
                        CallbackStatus::Active
                    } else {
                        CallbackStatus::Disabled
                    },
                    dropped_log_bytes: dropped,
                }
            })
            .collect()
    }

    fn handle_fault(&mut self, index: usize, during: &str, epoch: u32, step: u64, fault: Fault) {
        let slot = &mut self.slots[index];
        *slot.faults.entry(fault.kind).or_default() += 1;
        let mut message = fault.message;
        // The store is poisoned (or its answer untrustworthy): never call it again. What it wrote
        // before dying is kept: a Rust panic's message reaches stderr just before the trap.
        if let Some(mut dead) = slot.instance.take() {
            let lines = dead.take_logs();
            let stderr: Vec<&str> = lines
                .iter()
                .filter(|l| l.level == Level::Warn)
                .map(|l| l.message.as_str())
                .collect();
            if fault.kind == CallbackFaultKind::Trap && !stderr.is_empty() {
                let said = crate::sandbox::printable(&stderr.join(" / "), 1024);
                message = format!("{message}; it last said: {said}");
            }
            self.logs
                .extend(lines.into_iter().map(|l| (slot.name.clone(), l)));
            add_stats(&mut slot.stats, &dead.stats());
            slot.dead_time_ticks += dead.time_ticks();
            slot.dropped_log_bytes += dead.dropped_log_bytes();
        }
        let action = match slot.options.on_fault {
            FaultPolicy::Abort => FaultAction::Aborted,
            FaultPolicy::Disable => FaultAction::Disabled,
            // A budget outlives instances: a fresh one would start over it.
            FaultPolicy::Restart if fault.kind == CallbackFaultKind::Budget => {
                FaultAction::Disabled
            }
            FaultPolicy::Restart if slot.restarts >= slot.options.max_restarts => {
                FaultAction::Disabled
            }
            FaultPolicy::Restart => match restart(&self.sandbox, slot, self.run_info.as_ref()) {
                Ok(()) => FaultAction::Restarted,
                Err(_) => FaultAction::Disabled,
            },
        };
        let record = FaultRecord {
            callback: slot.name.to_string(),
            during: during.to_string(),
            epoch,
            step,
            kind: fault.kind,
            message,
            action,
        };
        if action == FaultAction::Aborted && self.abort.is_none() {
            self.abort = Some(record.clone());
        }
        self.faults.push(record);
    }
}

/// Replaces a faulted instance with a fresh one from the same `InstancePre`: init with the same
/// parameters, the run's train-start (so it knows the metric names), then its last good state.
fn restart(sandbox: &Sandbox, slot: &mut Slot, run_info: Option<&RunInfo>) -> Result<(), Fault> {
    slot.restarts += 1;
    let mut fresh = CallbackInstance::start(
        sandbox,
        slot.compiled.clone(),
        &slot.options.spec.params,
        &slot.options.limits,
    )
    .map_err(|e| Fault::new(CallbackFaultKind::HostError, e.to_string()))?;
    if let Some(info) = run_info {
        let start = Event::TrainStart(info.clone());
        if fresh.subscriptions().wants(&start) {
            // Its decisions were already made (and applied) by the previous instance.
            fresh.deliver(sandbox, &start)?;
        }
    }
    if let Some(state) = &slot.last_good_state {
        fresh.restore(sandbox, state)?;
    }
    let _ = fresh.take_logs();
    slot.instance = Some(fresh);
    Ok(())
}

fn collect_logs(slot: &mut Slot, logs: &mut Vec<(Arc<str>, LogLine)>) {
    // Most calls log nothing: skip the drain and its iterator then (per batch, it adds up).
    if let Some(instance) = slot.instance.as_mut().filter(|i| i.may_have_logs()) {
        logs.extend(instance.drain_logs().map(|line| (slot.name.clone(), line)));
    }
}

fn add_stats(total: &mut CallStats, more: &CallStats) {
    total.calls += more.calls;
    total.total_time_ns = total.total_time_ns.saturating_add(more.total_time_ns);
    total.fuel_used += more.fuel_used;
    total.decisions += more.decisions;
}

fn rename_error(err: CallbackError, name: &str) -> CallbackError {
    match err {
        CallbackError::Rejected { message, .. } => CallbackError::Rejected {
            name: name.to_string(),
            message,
        },
        CallbackError::StartFault { during, fault, .. } => CallbackError::StartFault {
            name: name.to_string(),
            during,
            fault,
        },
        other => other,
    }
}

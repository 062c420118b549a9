//! The glue between the contract's exports and a [`Callback`]: what `export_callback!` expands
//! to calls into here, so the macro stays a thin list of forwards.
//!
//! Two kinds of export. The events that arrive per batch and per epoch (`epoch-start`,
//! `batch-start`, `batch-end`, `validation-end`, `epoch-end`) are exported by hand, in [`abi`]:
//! their decisions are lowered into buffers the slot keeps (see `lowered`), so they have no
//! post-return and allocate nothing in the steady state. The rest (`init`, the once-per-run and
//! per-checkpoint events, state) go through `wit-bindgen`'s generated [`Guest`] glue.

use std::cell::RefCell;

use crate::bindings::trainrt::callbacks::types::{
    BatchInfo, BatchMetrics, CheckpointInfo, Decision, EpochInfo, EventKind, FaultInfo, RunInfo,
    TrainEndInfo, ValidationMetrics,
};
use crate::lowered::Lowered;
use crate::{Callback, Config, Decisions, EpochMetrics};

pub use crate::bindings::exports::trainrt::callbacks::callback::Guest;
pub use crate::bindings::trainrt::callbacks::types::{ConfigEntry, Registration};

/// The live callback and what the adapter remembers on its behalf.
struct Instance<T> {
    callback: T,
    /// `run-info.metric-names`, needed to give epoch metrics their names.
    metric_names: Vec<String>,
    /// Whether the callback itself asked for `train-start` (the adapter always does).
    wants_train_start: bool,
}

/// Holds the one callback instance of a component, created by `init`, and the buffers behind
/// the hand-exported events' results.
pub struct Slot<T> {
    instance: RefCell<Option<Instance<T>>>,
    lowered: RefCell<Lowered>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Slot<T> {
    /// An empty slot: every event is answered with no decisions until `init` succeeds.
    pub const fn new() -> Self {
        Slot {
            instance: RefCell::new(None),
            lowered: RefCell::new(Lowered::new()),
        }
    }
}

impl<T: Callback> Slot<T> {
    /// Runs [`Callback::init`], rejects unread parameters and registers for the events asked for,
    /// plus `train-start`, which the adapter needs for the metric names.
    pub fn init(&self, entries: Vec<ConfigEntry>) -> Result<Registration, String> {
        let mut config = Config::from_entries(entries.into_iter().map(|e| (e.key, e.value)))?;
        let (callback, subscriptions) = T::init(&mut config)?;
        // Also enforced here so that a callback that forgets `finish` still rejects typos.
        config.finish()?;
        let wants_train_start = subscriptions.contains(EventKind::TrainStart);
        *self.instance.borrow_mut() = Some(Instance {
            callback,
            metric_names: Vec::new(),
            wants_train_start,
        });
        Ok(subscriptions.train_start().into_registration())
    }

    /// Calls `f` with the instance and collects its decisions; none before `init`. For the
    /// events exported through the generated glue, which owns (and, after the host has read them,
    /// frees) the returned list.
    fn dispatch(&self, f: impl FnOnce(&mut Instance<T>, &mut Decisions)) -> Vec<Decision> {
        let mut out = Decisions::new();
        self.with_instance(|i| f(i, &mut out));
        out.into_vec()
    }

    /// Calls `f` with the instance, if `init` succeeded.
    fn with_instance(&self, f: impl FnOnce(&mut Instance<T>)) {
        // The component is single-threaded and exports never re-enter (the only import is
        // `log`), so this borrow cannot already be held.
        if let Some(instance) = self.instance.borrow_mut().as_mut() {
            f(instance);
        }
    }

    /// Calls `f` with the instance and leaves its decisions, lowered, in the slot's buffers,
    /// replacing the previous event's: for the hand-exported events ([`abi`]). None before
    /// `init`. Returns the address of the return area.
    fn decide(&self, f: impl FnOnce(&mut Instance<T>, &mut Decisions)) -> *const u8 {
        let mut lowered = self.lowered.borrow_mut();
        lowered.clear();
        self.with_instance(|i| f(i, &mut lowered.decisions));
        lowered.lower()
    }

    /// Records the metric names, then forwards if the callback subscribed.
    pub fn on_train_start(&self, info: RunInfo) -> Vec<Decision> {
        self.dispatch(|i, out| {
            i.metric_names = info.metric_names.clone();
            if i.wants_train_start {
                i.callback.on_train_start(&info, out);
            }
        })
    }

    /// Forwards `on-epoch-start`.
    fn on_epoch_start(&self, info: &EpochInfo) -> *const u8 {
        self.decide(|i, out| i.callback.on_epoch_start(info, out))
    }

    /// Forwards `on-batch-start`.
    fn on_batch_start(&self, info: &BatchInfo) -> *const u8 {
        self.decide(|i, out| i.callback.on_batch_start(info, out))
    }

    /// Forwards `on-batch-end`.
    fn on_batch_end(&self, m: &BatchMetrics) -> *const u8 {
        self.decide(|i, out| i.callback.on_batch_end(m, out))
    }

    /// Forwards `on-validation-end`.
    fn on_validation_end(&self, m: &ValidationMetrics) -> *const u8 {
        self.decide(|i, out| i.callback.on_validation_end(m, out))
    }

    /// Names the values with the metric names from `train-start` and forwards.
    fn on_epoch_end(&self, epoch: u32, step: u64, values: &[f64]) -> *const u8 {
        self.decide(|i, out| {
            let metrics = EpochMetrics::new(epoch, step, &i.metric_names, values);
            i.callback.on_epoch_end(&metrics, out);
        })
    }

    /// Forwards `on-checkpoint-saved`.
    pub fn on_checkpoint_saved(&self, info: CheckpointInfo) -> Vec<Decision> {
        self.dispatch(|i, out| i.callback.on_checkpoint_saved(&info, out))
    }

    /// Forwards `on-train-end`.
    pub fn on_train_end(&self, info: TrainEndInfo) -> Vec<Decision> {
        self.dispatch(|i, out| i.callback.on_train_end(&info, out))
    }

    /// Forwards `on-fault`.
    pub fn on_fault(&self, info: FaultInfo) -> Vec<Decision> {
        self.dispatch(|i, out| i.callback.on_fault(&info, out))
    }

    /// The callback's state; empty before `init`.
    pub fn snapshot_state(&self) -> Vec<u8> {
        self.instance
            .borrow()
            .as_ref()
            .map(|i| i.callback.snapshot())
            .unwrap_or_default()
    }

    /// Restores the callback's state; an error before `init`, which the contract rules out.
    pub fn restore_state(&self, state: Vec<u8>) -> Result<(), String> {
        match self.instance.borrow_mut().as_mut() {
            Some(i) => i.callback.restore(&state),
            None => Err("restore-state was called before a successful init".to_string()),
        }
    }
}

/// The hand-written canonical-ABI exports of the per-batch and per-epoch events, which
/// `export_callback!` exports under the contract's names. Each takes the event's record
/// flattened into core wasm parameters and returns the address of a return area holding the
/// `list<decision>`'s pointer and length (see `lowered`).
///
/// `wit-bindgen` skips these functions (`bindings.rs`), and wit-component checks each export's
/// core signature against `wit/callbacks.wit` when the component is made, so a mismatch fails
/// the build rather than a run. Only wasm32 calls them (the exports are wasm-only); they compile
/// everywhere so that native builds check them too.
pub mod abi {
    use super::Slot;
    use crate::{BatchInfo, BatchMetrics, Callback, EpochInfo, ValidationMetrics};

    /// `on-epoch-start: func(info: epoch-info) -> list<decision>`.
    pub fn on_epoch_start<T: Callback>(
        slot: &Slot<T>,
        epoch: u32,
        step: u64,
        lr: f64,
    ) -> *const u8 {
        slot.on_epoch_start(&EpochInfo { epoch, step, lr })
    }

    /// `on-batch-start: func(info: batch-info) -> list<decision>`.
    pub fn on_batch_start<T: Callback>(
        slot: &Slot<T>,
        epoch: u32,
        batch: u32,
        step: u64,
    ) -> *const u8 {
        slot.on_batch_start(&BatchInfo { epoch, batch, step })
    }

    /// `on-batch-end: func(metrics: batch-metrics) -> list<decision>`.
    #[allow(clippy::too_many_arguments)] // the record's seven fields, flattened
    pub fn on_batch_end<T: Callback>(
        slot: &Slot<T>,
        epoch: u32,
        batch: u32,
        step: u64,
        loss: f64,
        accuracy: f64,
        lr: f64,
        grad_norm: f64,
    ) -> *const u8 {
        slot.on_batch_end(&BatchMetrics {
            epoch,
            batch,
            step,
            loss,
            accuracy,
            lr,
            grad_norm,
        })
    }

    /// `on-validation-end: func(metrics: validation-metrics) -> list<decision>`.
    pub fn on_validation_end<T: Callback>(
        slot: &Slot<T>,
        epoch: u32,
        step: u64,
        val_loss: f64,
        val_accuracy: f64,
    ) -> *const u8 {
        slot.on_validation_end(&ValidationMetrics {
            epoch,
            step,
            val_loss,
            val_accuracy,
        })
    }

    /// `on-epoch-end: func(metrics: epoch-metrics) -> list<decision>`.
    ///
    /// # Safety
    ///
    /// `values` and `len` must be the `values` list as the host lowered it: `len` `f64`s that
    /// the host allocated through `cabi_realloc` (align 8) and hands over to the guest. They are
    /// freed here.
    #[allow(unsafe_code)] // taking ownership of a list the host allocated in guest memory
    pub unsafe fn on_epoch_end<T: Callback>(
        slot: &Slot<T>,
        epoch: u32,
        step: u64,
        values: *mut f64,
        len: usize,
    ) -> *const u8 {
        // SAFETY: the caller's contract; `cabi_realloc` allocates with the global allocator and
        // the layout of `len` `f64`s, as `Vec<f64>` with capacity `len` frees it (a zero-length
        // list was never allocated, and a zero-capacity `Vec` frees nothing).
        let values = unsafe { Vec::from_raw_parts(values, len, len) };
        slot.on_epoch_end(epoch, step, &values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use crate::{Decision, Subscriptions};

    /// Records what reaches it, to check the adapter's forwarding.
    struct Probe {
        train_starts: u32,
        last_metrics: Vec<(String, f64)>,
    }

    impl Callback for Probe {
        fn init(config: &mut Config) -> Result<(Self, Subscriptions), String> {
            let train_start = config.bool("train_start", false)?;
            let mut subs = Subscriptions::new().epoch_end();
            if train_start {
                subs = subs.train_start();
            }
            let probe = Probe {
                train_starts: 0,
                last_metrics: Vec::new(),
            };
            Ok((probe, subs))
        }
        fn on_train_start(&mut self, _info: &RunInfo, _out: &mut Decisions) {
            self.train_starts += 1;
        }
        fn on_epoch_end(&mut self, m: &EpochMetrics<'_>, out: &mut Decisions) {
            self.last_metrics = m.iter().map(|(n, v)| (n.to_string(), v)).collect();
            out.validate_now();
        }
    }

    fn entry(key: &str, value: &str) -> ConfigEntry {
        ConfigEntry {
            key: key.to_string(),
            value: value.to_string(),
        }
    }

    /// Delivers an epoch-end as the hand-written export does and returns the decisions it left.
    fn epoch_end(slot: &Slot<Probe>, values: &[f64]) -> Vec<Decision> {
        slot.on_epoch_end(0, 10, values);
        slot.lowered.borrow().decisions.as_slice().to_vec()
    }

    #[test]
    fn events_before_init_return_nothing() {
        let slot = Slot::<Probe>::new();
        assert!(epoch_end(&slot, &[1.0]).is_empty());
        assert!(slot.on_train_start(testing::run_info()).is_empty());
        assert!(slot.snapshot_state().is_empty());
        assert!(slot.restore_state(vec![1]).is_err());
    }

    #[test]
    fn each_event_replaces_the_previous_events_decisions() -> Result<(), String> {
        let slot = Slot::<Probe>::new();
        slot.init(Vec::new())?;
        assert_eq!(epoch_end(&slot, &[0.5]), vec![Decision::ValidateNow]);
        assert_eq!(epoch_end(&slot, &[0.4]), vec![Decision::ValidateNow]);
        // An event the probe ignores leaves nothing behind from the one before.
        slot.on_batch_end(&BatchMetrics {
            epoch: 0,
            batch: 0,
            step: 11,
            loss: 0.5,
            accuracy: 0.5,
            lr: 0.1,
            grad_norm: 1.0,
        });
        assert!(slot.lowered.borrow().decisions.is_empty());
        Ok(())
    }

    #[test]
    fn train_start_is_always_registered_but_only_forwarded_when_asked() -> Result<(), String> {
        for asked in [false, true] {
            let slot = Slot::<Probe>::new();
            let reg = slot.init(vec![entry("train_start", &asked.to_string())])?;
            assert!(reg.events.contains(&EventKind::TrainStart));
            assert!(reg.events.contains(&EventKind::EpochEnd));
            slot.on_train_start(testing::run_info());
            let forwarded = slot
                .instance
                .borrow()
                .as_ref()
                .map(|i| i.callback.train_starts);
            assert_eq!(forwarded, Some(u32::from(asked)));
        }
        Ok(())
    }

    #[test]
    fn epoch_metrics_are_named_from_train_start() -> Result<(), String> {
        let slot = Slot::<Probe>::new();
        slot.init(Vec::new())?;
        let mut info = testing::run_info();
        info.metric_names = testing::names(&["loss", "val_loss"]);
        slot.on_train_start(info);
        let decisions = epoch_end(&slot, &[0.5, 0.25]);
        assert_eq!(decisions, vec![Decision::ValidateNow]);
        let seen = slot
            .instance
            .borrow()
            .as_ref()
            .map(|i| i.callback.last_metrics.clone());
        let expected = vec![("loss".to_string(), 0.5), ("val_loss".to_string(), 0.25)];
        assert_eq!(seen, Some(expected));
        Ok(())
    }

    #[test]
    fn unknown_parameters_fail_init_even_without_finish() {
        let slot = Slot::<Probe>::new();
        let err = slot.init(vec![entry("trian_start", "true")]);
        assert_eq!(
            err.err().as_deref(),
            Some("unknown parameter 'trian_start'; known parameters: train_start")
        );
        assert!(epoch_end(&slot, &[1.0]).is_empty());
    }
}

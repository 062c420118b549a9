//! The glue between the contract's exports and a [`Callback`]: what `export_callback!` expands
//! to calls into here, so the macro stays a thin list of forwards. Every export goes through
//! `wit-bindgen`'s generated [`Guest`] glue, which derives the canonical ABI from
//! `wit/callbacks.wit`.

use std::cell::RefCell;

use crate::bindings::trainrt::callbacks::types::{
    BatchInfo, BatchMetrics, CheckpointInfo, Decision, EpochInfo, EventKind, FaultInfo, RunInfo,
    TrainEndInfo, ValidationMetrics,
};
use crate::{Callback, Config, Decisions, EpochMetrics};

pub use crate::bindings::exports::trainrt::callbacks::callback::Guest;
pub use crate::bindings::trainrt::callbacks::types::{
    ConfigEntry, EpochMetrics as EpochValues, Registration,
};

/// The live callback and what the adapter remembers on its behalf.
struct Instance<T> {
    callback: T,
    /// `run-info.metric-names`, needed to give epoch metrics their names.
    metric_names: Vec<String>,
    /// Whether the callback itself asked for `train-start` (the adapter always does).
    wants_train_start: bool,
}

/// Holds the one callback instance of a component, created by `init`.
pub struct Slot<T> {
    instance: RefCell<Option<Instance<T>>>,
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

    /// Calls `f` with the instance and collects its decisions; none before `init`. The
    /// generated glue owns the returned list and frees it after the host has read it.
    fn dispatch(&self, f: impl FnOnce(&mut Instance<T>, &mut Decisions)) -> Vec<Decision> {
        let mut out = Decisions::new();
        // The component is single-threaded and exports never re-enter (the only import is
        // `log`), so this borrow cannot already be held.
        if let Some(instance) = self.instance.borrow_mut().as_mut() {
            f(instance, &mut out);
        }
        out.into_vec()
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
    pub fn on_epoch_start(&self, info: EpochInfo) -> Vec<Decision> {
        self.dispatch(|i, out| i.callback.on_epoch_start(&info, out))
    }

    /// Forwards `on-batch-start`.
    pub fn on_batch_start(&self, info: BatchInfo) -> Vec<Decision> {
        self.dispatch(|i, out| i.callback.on_batch_start(&info, out))
    }

    /// Forwards `on-batch-end`.
    pub fn on_batch_end(&self, m: BatchMetrics) -> Vec<Decision> {
        self.dispatch(|i, out| i.callback.on_batch_end(&m, out))
    }

    /// Forwards `on-validation-end`.
    pub fn on_validation_end(&self, m: ValidationMetrics) -> Vec<Decision> {
        self.dispatch(|i, out| i.callback.on_validation_end(&m, out))
    }

    /// Names the values with the metric names from `train-start` and forwards.
    pub fn on_epoch_end(&self, m: EpochValues) -> Vec<Decision> {
        self.dispatch(|i, out| {
            let metrics = EpochMetrics::new(m.epoch, m.step, &i.metric_names, &m.values);
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

    /// Delivers an epoch-end as the export does and returns its decisions.
    fn epoch_end(slot: &Slot<Probe>, values: &[f64]) -> Vec<Decision> {
        slot.on_epoch_end(EpochValues {
            epoch: 0,
            step: 10,
            values: values.to_vec(),
        })
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

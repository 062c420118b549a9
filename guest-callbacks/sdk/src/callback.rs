//! The trait a callback implements.

use crate::{
    BatchInfo, BatchMetrics, CheckpointInfo, Config, Decisions, EpochInfo, EpochMetrics, FaultInfo,
    RunInfo, Subscriptions, TrainEndInfo, ValidationMetrics,
};

/// A training callback: created once from its parameters, then told about the events it
/// subscribed to, in lifecycle order. Each event handler pushes its decisions into `out`.
///
/// Every handler defaults to doing nothing, so a callback implements only what it subscribes to.
/// Only subscribed handlers are called. That holds for `on_train_start` too, although the SDK
/// always registers `train-start` itself to learn the metric names.
pub trait Callback: Sized + 'static {
    /// Builds the callback from its `key=value` parameters and says which events it wants.
    ///
    /// Return `Err` with a message for the user on a bad parameter. Call [`Config::finish`] after
    /// reading every parameter so that misspelled keys are rejected (the SDK checks it again).
    fn init(config: &mut Config) -> Result<(Self, Subscriptions), String>;

    /// Training starts (also when resuming: see `info.start_epoch`).
    fn on_train_start(&mut self, _info: &RunInfo, _out: &mut Decisions) {}

    /// An epoch starts; `info.lr` is the learning rate it starts with.
    fn on_epoch_start(&mut self, _info: &EpochInfo, _out: &mut Decisions) {}

    /// A batch starts (every `batch_every`-th global step).
    fn on_batch_start(&mut self, _info: &BatchInfo, _out: &mut Decisions) {}

    /// A batch ended, after the optimizer step (every `batch_every`-th global step).
    fn on_batch_end(&mut self, _m: &BatchMetrics, _out: &mut Decisions) {}

    /// A validation pass ended.
    fn on_validation_end(&mut self, _m: &ValidationMetrics, _out: &mut Decisions) {}

    /// An epoch ended, with all of its metrics by name.
    fn on_epoch_end(&mut self, _m: &EpochMetrics<'_>, _out: &mut Decisions) {}

    /// A checkpoint was written.
    fn on_checkpoint_saved(&mut self, _info: &CheckpointInfo, _out: &mut Decisions) {}

    /// Training ended; sent once, last.
    fn on_train_end(&mut self, _info: &TrainEndInfo, _out: &mut Decisions) {}

    /// Something went wrong (non-finite loss, another callback faulted, an I/O error).
    fn on_fault(&mut self, _info: &FaultInfo, _out: &mut Decisions) {}

    /// The state to save in every checkpoint; see [`crate::state`]. Empty for stateless callbacks.
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Restores a state produced by [`Callback::snapshot`]; called after `init` when resuming.
    fn restore(&mut self, _state: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

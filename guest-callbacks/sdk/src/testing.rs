//! Helpers for native unit tests of callbacks.

use crate::RunInfo;

/// A plausible `run-info` for a fresh run: 10 epochs of 100 batches, lr 0.1, metrics
/// `loss, accuracy, val_loss, val_accuracy, lr`. Adjust fields with struct update syntax.
pub fn run_info() -> RunInfo {
    RunInfo {
        run_name: "test-run".into(),
        model: "mlp(64-128-10)".into(),
        parameter_count: 9_610,
        dataset: "digits".into(),
        train_samples: 1_500,
        validation_samples: 297,
        epochs: 10,
        batch_size: 15,
        batches_per_epoch: 100,
        optimizer: "sgd".into(),
        initial_lr: 0.1,
        seed: 42,
        metric_names: names(&["loss", "accuracy", "val_loss", "val_accuracy", "lr"]),
        start_epoch: 0,
        start_step: 0,
    }
}

/// Owned metric names, as `run-info.metric-names` carries them.
pub fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_string()).collect()
}

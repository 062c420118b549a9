//! The decisions a callback hands back from one event.

use crate::{Decision, Metric};

/// The decisions made while handling one event, in the order they were made.
///
/// The host validates each one (see `docs/decisions.md`) and applies the valid ones at fixed
/// points of the training loop; an invalid one (e.g. a non-positive learning rate) is rejected
/// and recorded, never applied.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decisions(Vec<Decision>);

impl Decisions {
    /// No decisions.
    pub const fn new() -> Self {
        Decisions(Vec::new())
    }

    /// Stop training after the current step; `reason` goes into the run's summary.
    pub fn stop(&mut self, reason: impl Into<String>) {
        self.0.push(Decision::StopTraining(reason.into()));
    }

    /// End the current epoch after the current step (validation and epoch-end still run).
    pub fn end_epoch(&mut self) {
        self.0.push(Decision::EndEpoch);
    }

    /// Save a checkpoint under `tag` (`[A-Za-z0-9_.-]`, at most 64 characters).
    pub fn save_checkpoint(&mut self, tag: impl Into<String>) {
        self.0.push(Decision::SaveCheckpoint(tag.into()));
    }

    /// Use learning rate `lr` (finite, > 0) from the next step on.
    pub fn set_lr(&mut self, lr: f64) {
        self.0.push(Decision::SetLearningRate(lr));
    }

    /// Load the weights saved under `tag`.
    pub fn restore_checkpoint(&mut self, tag: impl Into<String>) {
        self.0.push(Decision::RestoreCheckpoint(tag.into()));
    }

    /// Run validation at the next fixed point, in addition to the scheduled one.
    pub fn validate_now(&mut self) {
        self.0.push(Decision::ValidateNow);
    }

    /// Record a custom metric in this epoch's metrics.
    pub fn log_metric(&mut self, name: impl Into<String>, value: f64) {
        self.0.push(Decision::LogMetric(Metric {
            name: name.into(),
            value,
        }));
    }

    /// Whether no decision was made.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The decisions made so far.
    pub fn as_slice(&self) -> &[Decision] {
        &self.0
    }

    /// The decisions, as the WIT `decision` values sent to the host.
    pub fn into_vec(self) -> Vec<Decision> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_keep_their_order_and_payloads() {
        let mut d = Decisions::new();
        assert!(d.is_empty());
        d.log_metric("wait", 2.0);
        d.save_checkpoint("best");
        d.set_lr(0.5);
        d.restore_checkpoint("best");
        d.validate_now();
        d.end_epoch();
        d.stop("done");
        assert_eq!(
            d.into_vec(),
            vec![
                Decision::LogMetric(Metric {
                    name: "wait".into(),
                    value: 2.0
                }),
                Decision::SaveCheckpoint("best".into()),
                Decision::SetLearningRate(0.5),
                Decision::RestoreCheckpoint("best".into()),
                Decision::ValidateNow,
                Decision::EndEpoch,
                Decision::StopTraining("done".into()),
            ]
        );
    }
}

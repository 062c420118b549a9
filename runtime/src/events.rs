//! Lifecycle events: what the trainer tells callbacks, one way.
//!
//! An [`Event`] is exactly what a callback receives. The run directory's `events.jsonl` holds
//! one per line (those delivered to at least one callback), which `trainrt replay` feeds back to
//! callbacks without training.

mod json;
mod subscriptions;

pub use self::json::{FloatJson, float, json_number, outcome_parts};
pub use self::subscriptions::Subscriptions;

use serde::{Deserialize, Serialize};

use self::json::{
    BatchMetricsJson, EpochMetricsJson, FaultInfoJson, ValidationMetricsJson, train_end,
};

use crate::contract::{
    BatchInfo, BatchMetrics, CheckpointInfo, EpochInfo, EpochMetrics, EventKind, FaultInfo,
    RunInfo, TrainEndInfo, ValidationMetrics,
};

/// One lifecycle event, as delivered to callbacks and recorded in `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// Training starts; sent once, first.
    TrainStart(RunInfo),
    /// An epoch starts.
    EpochStart(EpochInfo),
    /// A batch starts (subscribers may ask for every N-th only).
    BatchStart(BatchInfo),
    /// A batch ended, after the optimizer step.
    BatchEnd(#[serde(with = "BatchMetricsJson")] BatchMetrics),
    /// A validation pass ended.
    ValidationEnd(#[serde(with = "ValidationMetricsJson")] ValidationMetrics),
    /// An epoch ended, with all its metrics.
    EpochEnd(#[serde(with = "EpochMetricsJson")] EpochMetrics),
    /// A checkpoint was written.
    CheckpointSaved(CheckpointInfo),
    /// Training ended; sent once, last.
    TrainEnd(#[serde(with = "train_end")] TrainEndInfo),
    /// Something went wrong (non-finite loss, a callback fault, an I/O error).
    Fault(#[serde(with = "FaultInfoJson")] FaultInfo),
}

impl Event {
    /// Which kind of event this is, for subscription filtering.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::TrainStart(_) => EventKind::TrainStart,
            Event::EpochStart(_) => EventKind::EpochStart,
            Event::BatchStart(_) => EventKind::BatchStart,
            Event::BatchEnd(_) => EventKind::BatchEnd,
            Event::ValidationEnd(_) => EventKind::ValidationEnd,
            Event::EpochEnd(_) => EventKind::EpochEnd,
            Event::CheckpointSaved(_) => EventKind::CheckpointSaved,
            Event::TrainEnd(_) => EventKind::TrainEnd,
            Event::Fault(_) => EventKind::Fault,
        }
    }

    /// The epoch the event belongs to.
    pub fn epoch(&self) -> u32 {
        match self {
            Event::TrainStart(i) => i.start_epoch,
            Event::EpochStart(i) => i.epoch,
            Event::BatchStart(i) => i.epoch,
            Event::BatchEnd(m) => m.epoch,
            Event::ValidationEnd(m) => m.epoch,
            Event::EpochEnd(m) => m.epoch,
            Event::CheckpointSaved(i) => i.epoch,
            Event::TrainEnd(i) => i.epoch,
            Event::Fault(i) => i.epoch,
        }
    }

    /// The global optimizer step the event belongs to.
    pub fn step(&self) -> u64 {
        match self {
            Event::TrainStart(i) => i.start_step,
            Event::EpochStart(i) => i.step,
            Event::BatchStart(i) => i.step,
            Event::BatchEnd(m) => m.step,
            Event::ValidationEnd(m) => m.step,
            Event::EpochEnd(m) => m.step,
            Event::CheckpointSaved(i) => i.step,
            Event::TrainEnd(i) => i.step,
            Event::Fault(i) => i.step,
        }
    }
}

/// The kebab-case name of an event kind, as used in WIT, logs and `events.jsonl`.
pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::TrainStart => "train-start",
        EventKind::EpochStart => "epoch-start",
        EventKind::BatchStart => "batch-start",
        EventKind::BatchEnd => "batch-end",
        EventKind::ValidationEnd => "validation-end",
        EventKind::EpochEnd => "epoch-end",
        EventKind::CheckpointSaved => "checkpoint-saved",
        EventKind::TrainEnd => "train-end",
        EventKind::Fault => "fault",
    }
}

/// Every event kind, in lifecycle order.
pub const ALL_KINDS: [EventKind; 9] = [
    EventKind::TrainStart,
    EventKind::EpochStart,
    EventKind::BatchStart,
    EventKind::BatchEnd,
    EventKind::ValidationEnd,
    EventKind::EpochEnd,
    EventKind::CheckpointSaved,
    EventKind::TrainEnd,
    EventKind::Fault,
];

/// The epoch metrics, announced at `train-start` (`run-info.metric-names`); `epoch-metrics.values`
/// follow this order.
pub const METRIC_NAMES: [&str; 6] = [
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "grad_norm",
];

/// Whether the trainer itself records `name` in `metrics.jsonl` (the epoch metrics plus `epoch`
/// and `step`); a callback's custom metric may not reuse such a name.
pub fn is_builtin_metric(name: &str) -> bool {
    name == "epoch" || name == "step" || METRIC_NAMES.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{FaultKind, Outcome};

    /// A `batch-end` event at `step` of epoch 0 (also used by the subscription tests).
    pub(crate) fn batch_end(step: u64) -> Event {
        Event::BatchEnd(BatchMetrics {
            epoch: 0,
            batch: 0,
            step,
            loss: 1.0,
            accuracy: 0.5,
            lr: 0.1,
            grad_norm: 1.0,
        })
    }

    #[test]
    fn non_finite_metrics_survive_json() {
        let e = Event::BatchEnd(BatchMetrics {
            epoch: 1,
            batch: 2,
            step: 3,
            loss: f64::NAN,
            accuracy: 0.0,
            lr: 0.1,
            grad_norm: f64::INFINITY,
        });
        let line = serde_json::to_string(&e).unwrap();
        let Event::BatchEnd(m) = serde_json::from_str(&line).unwrap() else {
            panic!("{line}")
        };
        assert!(m.loss.is_nan() && m.grad_norm == f64::INFINITY, "{line}");
        let e = Event::EpochEnd(EpochMetrics {
            epoch: 0,
            step: 5,
            values: vec![1.5, f64::NAN, f64::NEG_INFINITY],
        });
        let line = serde_json::to_string(&e).unwrap();
        let Event::EpochEnd(m) = serde_json::from_str(&line).unwrap() else {
            panic!("{line}")
        };
        assert_eq!(m.values[0], 1.5);
        assert!(
            m.values[1].is_nan() && m.values[2] == f64::NEG_INFINITY,
            "{line}"
        );
    }

    #[test]
    fn fault_kinds_and_outcomes_are_written_with_their_wit_names() {
        let fault = Event::Fault(FaultInfo {
            kind: FaultKind::CallbackFault,
            message: "bad: trap".into(),
            epoch: 2,
            step: 90,
        });
        let line = serde_json::to_string(&fault).unwrap();
        assert_eq!(
            line,
            r#"{"event":"fault","kind":"callback-fault","message":"bad: trap","epoch":2,"step":90}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), fault);

        let cases = [
            (Outcome::Completed, r#""outcome":"completed","epoch""#),
            (
                Outcome::Stopped("done".into()),
                r#""outcome":"stopped","reason":"done""#,
            ),
            (
                Outcome::Failed("disk".into()),
                r#""outcome":"failed","reason":"disk""#,
            ),
        ];
        for (outcome, expected) in cases {
            let end = Event::TrainEnd(TrainEndInfo {
                outcome,
                epoch: 3,
                step: 135,
            });
            let line = serde_json::to_string(&end).unwrap();
            assert!(line.contains(expected), "{line}");
            assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), end);
        }
    }

    #[test]
    fn a_train_end_without_the_reason_it_needs_is_refused() {
        for (line, what) in [
            (
                r#"{"event":"train-end","outcome":"stopped","epoch":1,"step":2}"#,
                "needs",
            ),
            (
                r#"{"event":"train-end","outcome":"completed","reason":"x","epoch":1,"step":2}"#,
                "has no",
            ),
            (
                r#"{"event":"train-end","outcome":"Completed","epoch":1,"step":2}"#,
                "completed",
            ),
        ] {
            let err = serde_json::from_str::<Event>(line).unwrap_err().to_string();
            assert!(err.contains(what), "{line}: {err}");
        }
    }

    #[test]
    fn events_round_trip_through_json() {
        let e = batch_end(3);
        let line = serde_json::to_string(&e).unwrap();
        assert!(line.contains("\"event\":\"batch-end\""), "{line}");
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
    }
}

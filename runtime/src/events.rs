//! Lifecycle events: what the trainer tells callbacks, one way.
//!
//! An [`Event`] is exactly what a callback receives. The run directory's `events.jsonl` holds
//! one per line (those delivered to at least one callback), which `trainrt replay` feeds back to
//! callbacks without training.

use serde::{Deserialize, Serialize};

use crate::contract::{
    BatchInfo, BatchMetrics, CheckpointInfo, EpochInfo, EpochMetrics, EventKind, FaultInfo,
    FaultKind, Outcome, RunInfo, TrainEndInfo, ValidationMetrics,
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

// Metrics can be NaN or infinite (a diverging loss is exactly what some callbacks watch for), and
// JSON has no such numbers: these remote definitions write them as "NaN", "inf" and "-inf" so a
// recorded stream replays exactly.
#[derive(Serialize, Deserialize)]
#[serde(remote = "BatchMetrics")]
struct BatchMetricsJson {
    epoch: u32,
    batch: u32,
    step: u64,
    #[serde(with = "float")]
    loss: f64,
    #[serde(with = "float")]
    accuracy: f64,
    #[serde(with = "float")]
    lr: f64,
    #[serde(with = "float")]
    grad_norm: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "ValidationMetrics")]
struct ValidationMetricsJson {
    epoch: u32,
    step: u64,
    #[serde(with = "float")]
    val_loss: f64,
    #[serde(with = "float")]
    val_accuracy: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "EpochMetrics")]
struct EpochMetricsJson {
    epoch: u32,
    step: u64,
    #[serde(with = "float::vec")]
    values: Vec<f64>,
}

// Variants and enums are written with their WIT names, as `summary.json` and `decisions.jsonl`
// write them: `"kind":"callback-fault"`, `"outcome":"stopped","reason":"..."`.
#[derive(Serialize, Deserialize)]
#[serde(remote = "FaultKind", rename_all = "kebab-case")]
enum FaultKindJson {
    NonFiniteLoss,
    CallbackFault,
    IoError,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "FaultInfo")]
struct FaultInfoJson {
    #[serde(with = "FaultKindJson")]
    kind: FaultKind,
    message: String,
    epoch: u32,
    step: u64,
}

/// An outcome as `summary.json` and `events.jsonl` write it: its WIT name, and the reason unless
/// it completed.
pub fn outcome_parts(outcome: &Outcome) -> (&'static str, Option<&str>) {
    match outcome {
        Outcome::Completed => ("completed", None),
        Outcome::Stopped(r) => ("stopped", Some(r)),
        Outcome::Failed(r) => ("failed", Some(r)),
    }
}

/// `train-end` with its outcome in the shape of [`outcome_parts`].
mod train_end {
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

    use crate::contract::{Outcome, TrainEndInfo};

    #[derive(Serialize)]
    struct Written<'a> {
        outcome: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        epoch: u32,
        step: u64,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "kebab-case")]
    enum Name {
        Completed,
        Stopped,
        Failed,
    }

    #[derive(Deserialize)]
    struct Read {
        outcome: Name,
        #[serde(default)]
        reason: Option<String>,
        epoch: u32,
        step: u64,
    }

    pub fn serialize<S: Serializer>(info: &TrainEndInfo, s: S) -> Result<S::Ok, S::Error> {
        let (outcome, reason) = super::outcome_parts(&info.outcome);
        Written {
            outcome,
            reason,
            epoch: info.epoch,
            step: info.step,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TrainEndInfo, D::Error> {
        let r = Read::deserialize(d)?;
        let outcome = match (r.outcome, r.reason) {
            (Name::Completed, None) => Outcome::Completed,
            (Name::Stopped, Some(reason)) => Outcome::Stopped(reason),
            (Name::Failed, Some(reason)) => Outcome::Failed(reason),
            (Name::Completed, Some(_)) => {
                return Err(D::Error::custom("a completed run has no \"reason\""));
            }
            (_, None) => {
                return Err(D::Error::custom(
                    "a stopped or failed run needs a \"reason\"",
                ));
            }
        };
        Ok(TrainEndInfo {
            outcome,
            epoch: r.epoch,
            step: r.step,
        })
    }
}

/// A float that serializes with the NaN-preserving encoding of [`float`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FloatJson(#[serde(with = "float")] pub f64);

/// JSON encoding of `f64` that keeps NaN and infinities (as strings).
pub mod float {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// A float as JSON: a number when finite, else `"NaN"`, `"inf"` or `"-inf"`.
    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
        Null(()),
    }

    fn to_repr(v: f64) -> Repr {
        if v.is_finite() {
            Repr::Number(v)
        } else if v.is_nan() {
            Repr::Text("NaN".into())
        } else if v > 0.0 {
            Repr::Text("inf".into())
        } else {
            Repr::Text("-inf".into())
        }
    }

    fn from_repr<E: serde::de::Error>(r: Repr) -> Result<f64, E> {
        match r {
            Repr::Number(v) => Ok(v),
            Repr::Null(()) => Ok(f64::NAN),
            Repr::Text(t) => match t.as_str() {
                "NaN" | "nan" => Ok(f64::NAN),
                "inf" | "+inf" | "Infinity" => Ok(f64::INFINITY),
                "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
                other => Err(E::custom(format!(
                    "expected a number, \"NaN\", \"inf\" or \"-inf\", found \"{other}\""
                ))),
            },
        }
    }

    /// Serializes one float.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        to_repr(*v).serialize(s)
    }

    /// Deserializes one float.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        from_repr(Repr::deserialize(d)?)
    }

    /// The same encoding for a list of floats.
    pub mod vec {
        use super::{Repr, from_repr, to_repr};
        use serde::{Deserialize, Deserializer, Serializer};

        /// Serializes a list of floats.
        pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|x| to_repr(*x)))
        }

        /// Deserializes a list of floats.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
            Vec::<Repr>::deserialize(d)?
                .into_iter()
                .map(from_repr)
                .collect()
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

/// Which events a callback asked for: a bit per kind plus the per-batch stride, checked on every
/// event without touching the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Subscriptions {
    bits: u16,
    batch_every: u32,
}

impl Subscriptions {
    /// Builds the filter from a callback's registration.
    pub fn new(kinds: &[EventKind], batch_every: u32) -> Self {
        let bits = kinds.iter().fold(0u16, |acc, k| acc | bit(*k));
        Self {
            bits,
            batch_every: batch_every.max(1),
        }
    }

    /// Whether the callback asked for this kind of event at all.
    pub fn wants_kind(&self, kind: EventKind) -> bool {
        self.bits & bit(kind) != 0
    }

    /// Whether the callback receives this event: kind subscribed and, for per-batch events, the
    /// step on its stride.
    pub fn wants(&self, event: &Event) -> bool {
        let kind = event.kind();
        if !self.wants_kind(kind) {
            return false;
        }
        // Every step is the common case: no division on the per-batch path for it.
        if self.batch_every == 1 {
            return true;
        }
        match event {
            // batch-start carries the steps taken before the batch, batch-end counts the batch:
            // both use the number of the batch's own step (1-based) so they pair up.
            Event::BatchStart(i) => (i.step + 1) % u64::from(self.batch_every) == 0,
            Event::BatchEnd(m) => m.step % u64::from(self.batch_every) == 0,
            _ => true,
        }
    }

    /// The subscribed kinds, in lifecycle order.
    pub fn kinds(&self) -> Vec<EventKind> {
        ALL_KINDS
            .into_iter()
            .filter(|k| self.wants_kind(*k))
            .collect()
    }

    /// Deliver per-batch events every this many steps.
    pub fn batch_every(&self) -> u32 {
        self.batch_every
    }
}

fn bit(kind: EventKind) -> u16 {
    1 << (kind as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_end(step: u64) -> Event {
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
    fn subscriptions_filter_kinds_and_batch_stride() {
        let subs = Subscriptions::new(&[EventKind::BatchEnd, EventKind::EpochEnd], 10);
        assert!(subs.wants_kind(EventKind::EpochEnd));
        assert!(!subs.wants_kind(EventKind::BatchStart));
        assert!(!subs.wants(&batch_end(9)));
        assert!(subs.wants(&batch_end(10)));
        assert!(subs.wants(&batch_end(20)));
        assert_eq!(subs.kinds(), vec![EventKind::BatchEnd, EventKind::EpochEnd]);
    }

    #[test]
    fn stride_zero_means_every_batch() {
        let subs = Subscriptions::new(&[EventKind::BatchEnd], 0);
        assert!(subs.wants(&batch_end(1)) && subs.wants(&batch_end(2)));
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

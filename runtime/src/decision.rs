//! Decisions: what callbacks ask for, validated before anything reaches the trainer.
//!
//! Callbacks answer each event with decisions. A [`DecisionSet`] collects the answers of all
//! callbacks to one event, in command-line order, validating each one; the trainer then applies
//! what survived at the event's fixed point (see `docs/decisions.md`). Every decision, applied,
//! overridden or rejected, becomes a [`DecisionRecord`] in `decisions.jsonl`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::checkpoint::{LAST_TAG, validate_tag};
use crate::contract::{Decision, EventKind, Metric};
use crate::events::{is_builtin_metric, json_number as num, kind_name};
use crate::sandbox::printable;

/// Operator bounds on what callbacks may ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionPolicy {
    /// Smallest learning rate a callback may set.
    pub min_lr: f64,
    /// Largest learning rate a callback may set.
    pub max_lr: f64,
}

impl Default for DecisionPolicy {
    /// Learning rates in `[1e-12, 100]`: wide enough for any sane schedule, and excludes the
    /// absurd values (zero, negative, huge) that would silently wreck a run.
    fn default() -> Self {
        Self {
            min_lr: 1e-12,
            max_lr: 100.0,
        }
    }
}

/// What became of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Applied at the event's fixed point.
    Applied,
    /// A later callback's decision of the same kind won.
    Overridden,
    /// Invalid, or could not be applied; `reason` says why.
    Rejected,
}

/// One line of `decisions.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The callback that asked.
    pub callback: String,
    /// The event it was answering.
    pub event: String,
    /// Epoch of the event.
    pub epoch: u32,
    /// Global step of the event.
    pub step: u64,
    /// The decision, as `{"kind": ..., ...}`.
    pub decision: Value,
    /// What became of it.
    pub status: Status,
    /// Why it was rejected or overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A decision that survived validation, with the callback that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributed<T> {
    /// The callback's name.
    pub callback: String,
    /// The decision's value.
    pub value: T,
    record: usize,
}

/// The validated decisions of all callbacks for one event, ready to apply.
#[derive(Debug, Default)]
pub struct DecisionSet {
    /// Stop training, with the first reason given (stop is sticky).
    pub stop: Option<Attributed<String>>,
    /// End the current epoch.
    pub end_epoch: bool,
    /// Checkpoints to save, in order, without duplicates.
    pub saves: Vec<Attributed<String>>,
    /// The learning rate to set: the last callback's wins.
    pub lr: Option<Attributed<f64>>,
    /// The checkpoint to restore: the last callback's wins.
    pub restore: Option<Attributed<String>>,
    /// Run validation now: each callback that asked (one validation runs however many did).
    pub validations: Vec<Attributed<()>>,
    /// Custom metrics to record, in order (a later value of a name wins).
    pub metrics: Vec<Attributed<Metric>>,
    records: Vec<DecisionRecord>,
}

impl DecisionSet {
    /// Validates `decision` from `callback` answering `event` and adds it to the set.
    /// `known_tags` are the checkpoints that exist now.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        callback: &str,
        event: EventKind,
        epoch: u32,
        step: u64,
        decision: Decision,
        policy: &DecisionPolicy,
        known_tags: &BTreeSet<String>,
    ) {
        let index = self.records.len();
        let mut record = DecisionRecord {
            callback: callback.to_string(),
            event: kind_name(event).to_string(),
            epoch,
            step,
            decision: decision_json(&decision),
            status: Status::Applied,
            reason: None,
        };
        fn attributed<T>(callback: &str, value: T, record: usize) -> Attributed<T> {
            Attributed {
                callback: callback.to_string(),
                value,
                record,
            }
        }
        match validate(decision, policy, known_tags) {
            Err(reason) => {
                record.status = Status::Rejected;
                record.reason = Some(reason);
            }
            Ok(Decision::StopTraining(reason)) => {
                if self.stop.is_none() {
                    self.stop = Some(attributed(callback, reason, index));
                }
            }
            Ok(Decision::EndEpoch) => self.end_epoch = true,
            Ok(Decision::SaveCheckpoint(tag)) => {
                if let Some(twin) = case_twin(&tag, self.saves.iter().map(|s| &s.value)) {
                    record.status = Status::Rejected;
                    record.reason = Some(case_collision(&tag, twin));
                } else if !self.saves.iter().any(|s| s.value == tag) {
                    self.saves.push(attributed(callback, tag, index));
                }
            }
            Ok(Decision::SetLearningRate(lr)) => {
                if let Some(previous) = self.lr.replace(attributed(callback, lr, index)) {
                    self.overridden(previous.record, callback);
                }
            }
            Ok(Decision::RestoreCheckpoint(tag)) => {
                if let Some(previous) = self.restore.replace(attributed(callback, tag, index)) {
                    self.overridden(previous.record, callback);
                }
            }
            Ok(Decision::ValidateNow) => self.validations.push(attributed(callback, (), index)),
            Ok(Decision::LogMetric(m)) => self.metrics.push(attributed(callback, m, index)),
        }
        self.records.push(record);
    }

    fn overridden(&mut self, record: usize, by: &str) {
        if let Some(r) = self.records.get_mut(record) {
            r.status = Status::Overridden;
            r.reason = Some(format!("overridden by {by}"));
        }
    }

    /// Marks an accepted decision as rejected after all, because applying it failed.
    pub fn reject<T>(&mut self, decision: &Attributed<T>, reason: String) {
        if let Some(r) = self.records.get_mut(decision.record) {
            r.status = Status::Rejected;
            r.reason = Some(reason);
        }
    }

    /// Whether no callback decided anything.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records, for `decisions.jsonl`.
    pub fn records(&self) -> &[DecisionRecord] {
        &self.records
    }
}

/// Checks one decision against the contract and the operator's policy, returning it cleaned
/// (reasons made printable) or why it is rejected.
pub fn validate(
    decision: Decision,
    policy: &DecisionPolicy,
    known_tags: &BTreeSet<String>,
) -> Result<Decision, String> {
    let own_tag = |tag: &str| -> Result<(), String> {
        validate_tag(tag)
            .map_err(|e| format!("invalid checkpoint tag {:?}: {e}", printable(tag, 80)))
    };
    match decision {
        Decision::StopTraining(reason) => Ok(Decision::StopTraining(printable(&reason, 512))),
        Decision::SaveCheckpoint(tag) => {
            own_tag(&tag)?;
            if tag.eq_ignore_ascii_case(LAST_TAG) {
                return Err(format!(
                    "checkpoint tag '{LAST_TAG}' (in any case) is reserved for the trainer's own \
                     checkpoint"
                ));
            }
            if let Some(existing) = case_twin(&tag, known_tags.iter()) {
                return Err(case_collision(&tag, existing));
            }
            Ok(Decision::SaveCheckpoint(tag))
        }
        Decision::RestoreCheckpoint(tag) => {
            own_tag(&tag)?;
            if !known_tags.contains(&tag) {
                return Err(format!("no checkpoint tagged '{tag}' exists in this run"));
            }
            Ok(Decision::RestoreCheckpoint(tag))
        }
        Decision::SetLearningRate(lr) => {
            if !lr.is_finite() || lr <= 0.0 {
                return Err(format!(
                    "learning rate {} is not a finite number > 0",
                    short(lr)
                ));
            }
            if lr < policy.min_lr || lr > policy.max_lr {
                return Err(format!(
                    "learning rate {} is outside the allowed range [{}, {}]",
                    short(lr),
                    short(policy.min_lr),
                    short(policy.max_lr)
                ));
            }
            Ok(Decision::SetLearningRate(lr))
        }
        Decision::LogMetric(m) => {
            let ok_name = !m.name.is_empty()
                && m.name.len() <= 64
                && m.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
            if !ok_name {
                return Err(format!(
                    "metric name {:?} must be 1-64 characters from [A-Za-z0-9_.-/]",
                    printable(&m.name, 80)
                ));
            }
            if is_builtin_metric(&m.name) {
                return Err(format!(
                    "metric name '{}' is recorded by the trainer itself",
                    m.name
                ));
            }
            if !m.value.is_finite() {
                return Err(format!(
                    "metric {} has a non-finite value {}",
                    m.name, m.value
                ));
            }
            Ok(Decision::LogMetric(m))
        }
        d @ (Decision::EndEpoch | Decision::ValidateNow) => Ok(d),
    }
}

/// A tag among `tags` that differs from `tag` only in case: on a case-insensitive file system
/// (macOS, Windows) the two would be one file.
fn case_twin<'a>(tag: &str, tags: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    tags.map(String::as_str)
        .find(|t| *t != tag && t.eq_ignore_ascii_case(tag))
}

fn case_collision(tag: &str, existing: &str) -> String {
    format!(
        "checkpoint tag '{tag}' differs from '{existing}' only in case, and the two would be one \
         file on a case-insensitive file system; use '{existing}'"
    )
}

/// A number for a message: plain when it reads well (`0.05`, `12.5`), in scientific notation
/// when plain would run to many digits (`1e300`, `1e-12`).
fn short(x: f64) -> String {
    let magnitude = x.abs();
    if magnitude != 0.0 && magnitude.is_finite() && !(1e-4..1e6).contains(&magnitude) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// The JSON form of a decision for the run's logs: `{"kind": "set-learning-rate", "lr": 0.01}`.
/// Guest strings are cut and made printable; non-finite numbers are kept as strings.
pub fn decision_json(decision: &Decision) -> Value {
    match decision {
        Decision::StopTraining(r) => json!({"kind": "stop-training", "reason": printable(r, 512)}),
        Decision::EndEpoch => json!({"kind": "end-epoch"}),
        Decision::SaveCheckpoint(t) => json!({"kind": "save-checkpoint", "tag": printable(t, 80)}),
        Decision::SetLearningRate(lr) => json!({"kind": "set-learning-rate", "lr": num(*lr)}),
        Decision::RestoreCheckpoint(t) => {
            json!({"kind": "restore-checkpoint", "tag": printable(t, 80)})
        }
        Decision::ValidateNow => json!({"kind": "validate-now"}),
        Decision::LogMetric(m) => {
            json!({"kind": "log-metric", "name": printable(&m.name, 80), "value": num(m.value)})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_with(decisions: &[(&str, Decision)]) -> DecisionSet {
        let mut set = DecisionSet::default();
        let tags: BTreeSet<String> = ["best".to_string()].into();
        for (cb, d) in decisions {
            set.add(
                cb,
                EventKind::EpochEnd,
                3,
                30,
                d.clone(),
                &DecisionPolicy::default(),
                &tags,
            );
        }
        set
    }

    #[test]
    fn later_learning_rate_wins_and_the_override_is_recorded() {
        let set = set_with(&[
            ("a", Decision::SetLearningRate(0.1)),
            ("b", Decision::SetLearningRate(0.01)),
        ]);
        let lr = set.lr.as_ref().unwrap();
        assert_eq!((lr.callback.as_str(), lr.value), ("b", 0.01));
        assert_eq!(set.records()[0].status, Status::Overridden);
        assert_eq!(set.records()[0].reason.as_deref(), Some("overridden by b"));
        assert_eq!(set.records()[1].status, Status::Applied);
    }

    #[test]
    fn tags_that_differ_only_in_case_are_one_tag() {
        let set = set_with(&[
            ("a", Decision::SaveCheckpoint("top".into())),
            ("b", Decision::SaveCheckpoint("TOP".into())),
            ("c", Decision::SaveCheckpoint("top".into())),
        ]);
        let saved: Vec<&str> = set.saves.iter().map(|s| s.value.as_str()).collect();
        assert_eq!(saved, ["top"]);
        assert_eq!(set.records()[1].status, Status::Rejected);
        assert_eq!(set.records()[2].status, Status::Applied);
    }

    #[test]
    fn first_stop_reason_is_kept() {
        let set = set_with(&[
            ("a", Decision::StopTraining("first".into())),
            ("b", Decision::StopTraining("second".into())),
        ]);
        assert_eq!(set.stop.unwrap().value, "first");
    }

    #[test]
    fn invalid_decisions_are_rejected_with_reasons() {
        let cases = [
            (Decision::SetLearningRate(f64::NAN), "not a finite number"),
            (Decision::SetLearningRate(-1.0), "not a finite number > 0"),
            (Decision::SetLearningRate(f64::INFINITY), "not a finite"),
            (Decision::SetLearningRate(1e9), "outside the allowed range"),
            (
                Decision::SaveCheckpoint("../../etc/passwd".into()),
                "invalid checkpoint tag",
            ),
            (Decision::SaveCheckpoint("last".into()), "reserved"),
            (Decision::SaveCheckpoint("LAST".into()), "reserved"),
            (
                Decision::SaveCheckpoint("CON".into()),
                "device name on Windows",
            ),
            (
                Decision::SaveCheckpoint("Best".into()),
                "differs from 'best' only in case",
            ),
            (
                Decision::SetLearningRate(1e300),
                "learning rate 1e300 is outside the allowed range [1e-12, 100]",
            ),
            (
                Decision::RestoreCheckpoint("nope".into()),
                "no checkpoint tagged 'nope'",
            ),
            (
                Decision::LogMetric(Metric {
                    name: "loss".into(),
                    value: 1.0,
                }),
                "recorded by the trainer",
            ),
            (
                Decision::LogMetric(Metric {
                    name: "x y".into(),
                    value: 1.0,
                }),
                "must be 1-64",
            ),
            (
                Decision::LogMetric(Metric {
                    name: "x".into(),
                    value: f64::NAN,
                }),
                "non-finite",
            ),
        ];
        for (d, why) in cases {
            let set = set_with(&[("cb", d.clone())]);
            let r = &set.records()[0];
            assert_eq!(r.status, Status::Rejected, "{d:?}");
            assert!(
                r.reason.as_deref().unwrap_or("").contains(why),
                "{d:?}: {:?}",
                r.reason
            );
            assert!(
                set.lr.is_none()
                    && set.saves.is_empty()
                    && set.restore.is_none()
                    && set.metrics.is_empty()
            );
        }
    }

    #[test]
    fn restore_of_known_tag_and_custom_metrics_pass() {
        let set = set_with(&[
            ("a", Decision::RestoreCheckpoint("best".into())),
            (
                "a",
                Decision::LogMetric(Metric {
                    name: "wait".into(),
                    value: 2.0,
                }),
            ),
            ("a", Decision::SaveCheckpoint("epoch-0003".into())),
            ("b", Decision::SaveCheckpoint("epoch-0003".into())),
        ]);
        assert_eq!(set.restore.unwrap().value, "best");
        let metrics: Vec<(&str, &str, f64)> = set
            .metrics
            .iter()
            .map(|m| (m.callback.as_str(), m.value.name.as_str(), m.value.value))
            .collect();
        assert_eq!(metrics, [("a", "wait", 2.0)]);
        assert_eq!(set.saves.len(), 1);
    }

    #[test]
    fn decision_json_keeps_non_finite_values_and_escapes_strings() {
        let v = decision_json(&Decision::SetLearningRate(f64::NAN));
        assert_eq!(v, json!({"kind": "set-learning-rate", "lr": "NaN"}));
        let v = decision_json(&Decision::StopTraining("a\nb".into()));
        assert_eq!(v["reason"], "a\\nb");
    }
}

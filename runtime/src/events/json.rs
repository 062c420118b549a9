//! How events are written to `events.jsonl` (and read back by `trainrt replay`): WIT names in
//! kebab-case, and floats that keep NaN and the infinities.

use serde::{Deserialize, Serialize};

use crate::contract::{
    BatchMetrics, EpochMetrics, FaultInfo, FaultKind, Outcome, ValidationMetrics,
};

// Metrics can be NaN or infinite (a diverging loss is exactly what some callbacks watch for), and
// JSON has no such numbers: these remote definitions write them as "NaN", "inf" and "-inf" so a
// recorded stream replays exactly.
#[derive(Serialize, Deserialize)]
#[serde(remote = "BatchMetrics")]
pub(super) struct BatchMetricsJson {
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
pub(super) struct ValidationMetricsJson {
    epoch: u32,
    step: u64,
    #[serde(with = "float")]
    val_loss: f64,
    #[serde(with = "float")]
    val_accuracy: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "EpochMetrics")]
pub(super) struct EpochMetricsJson {
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
pub(super) struct FaultInfoJson {
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
pub(super) mod train_end {
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

/// A float as a JSON value in the encoding of [`float`]: for `metrics.jsonl` and decisions.
pub fn json_number(v: f64) -> serde_json::Value {
    serde_json::to_value(FloatJson(v)).unwrap_or(serde_json::Value::Null)
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

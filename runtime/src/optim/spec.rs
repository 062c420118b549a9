//! Optimizer specs (`--optimizer`) with PyTorch's defaults and range checks.

use std::fmt;
use std::str::FromStr;

use super::OptimError;

/// Which optimizer to use, as given to `--optimizer`.
///
/// - `sgd[:momentum=M,weight_decay=W,nesterov=true|false]`: defaults 0, 0, false (PyTorch's).
/// - `adamw[:beta1=B1,beta2=B2,eps=E,weight_decay=W]`: defaults 0.9, 0.999, 1e-8, 0.01 (PyTorch's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerSpec {
    /// Stochastic gradient descent; L2 weight decay is added to the gradient.
    Sgd {
        /// Momentum factor (0 disables the momentum buffer).
        momentum: f64,
        /// L2 penalty added to the gradient.
        weight_decay: f64,
        /// Nesterov momentum (needs momentum > 0).
        nesterov: bool,
    },
    /// Adam with decoupled weight decay and bias correction.
    AdamW {
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Added to the denominator for stability.
        eps: f64,
        /// Decoupled weight decay: parameters shrink by `lr * weight_decay` each step.
        weight_decay: f64,
    },
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        OptimizerSpec::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

impl FromStr for OptimizerSpec {
    type Err = OptimError;

    fn from_str(s: &str) -> Result<Self, OptimError> {
        let err = |reason: String| OptimError::Spec {
            spec: s.to_string(),
            reason,
        };
        let (kind, opts) = s.split_once(':').unwrap_or((s, ""));
        let mut spec = match kind {
            "sgd" => OptimizerSpec::default(),
            "adamw" => OptimizerSpec::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
            },
            _ => {
                return Err(err(
                    "expected `sgd[:momentum=M,weight_decay=W,nesterov=B]` or \
                 `adamw[:beta1=B1,beta2=B2,eps=E,weight_decay=W]`"
                        .into(),
                ));
            }
        };
        for kv in opts.split(',').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| err(format!("`{kv}` is not key=value")))?;
            let num = || {
                v.parse::<f64>()
                    .map_err(|_| err(format!("`{v}` is not a number for {k}")))
            };
            match (&mut spec, k) {
                (OptimizerSpec::Sgd { momentum, .. }, "momentum") => *momentum = num()?,
                (OptimizerSpec::Sgd { nesterov, .. }, "nesterov") => {
                    *nesterov = v
                        .parse()
                        .map_err(|_| err(format!("nesterov=`{v}` must be true or false")))?;
                }
                (
                    OptimizerSpec::Sgd { weight_decay, .. }
                    | OptimizerSpec::AdamW { weight_decay, .. },
                    "weight_decay",
                ) => *weight_decay = num()?,
                (OptimizerSpec::AdamW { beta1, .. }, "beta1") => *beta1 = num()?,
                (OptimizerSpec::AdamW { beta2, .. }, "beta2") => *beta2 = num()?,
                (OptimizerSpec::AdamW { eps, .. }, "eps") => *eps = num()?,
                _ => return Err(err(format!("unknown key `{k}` for {kind}"))),
            }
        }
        spec.validate().map_err(err)?;
        Ok(spec)
    }
}

impl OptimizerSpec {
    /// Checks the hyper-parameters are in range (the same rules PyTorch enforces).
    pub fn validate(&self) -> Result<(), String> {
        let unit = |name: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name}={v} must be in [0, 1)"))
            }
        };
        let non_negative = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!("{name}={v} must be finite and >= 0"))
            }
        };
        match *self {
            OptimizerSpec::Sgd {
                momentum,
                weight_decay,
                nesterov,
            } => {
                unit("momentum", momentum)?;
                non_negative("weight_decay", weight_decay)?;
                if nesterov && momentum == 0.0 {
                    return Err("nesterov needs momentum > 0".into());
                }
            }
            OptimizerSpec::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                unit("beta1", beta1)?;
                unit("beta2", beta2)?;
                non_negative("weight_decay", weight_decay)?;
                if !(eps.is_finite() && eps > 0.0) {
                    return Err(format!("eps={eps} must be finite and > 0"));
                }
            }
        }
        Ok(())
    }
}

/// The spec as a user would write it: the optimizer's name and only the parameters that differ
/// from its defaults (`sgd:momentum=0.9`), so it parses back to the same spec.
impl fmt::Display for OptimizerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut params: Vec<String> = Vec::new();
        let mut param = |name: &str, value: f64, default: f64| {
            if value.to_bits() != default.to_bits() {
                params.push(format!("{name}={value:?}"));
            }
        };
        let name = match *self {
            OptimizerSpec::Sgd {
                momentum,
                weight_decay,
                nesterov,
            } => {
                param("momentum", momentum, 0.0);
                param("weight_decay", weight_decay, 0.0);
                if nesterov {
                    params.push("nesterov=true".into());
                }
                "sgd"
            }
            OptimizerSpec::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                param("beta1", beta1, 0.9);
                param("beta2", beta2, 0.999);
                param("eps", eps, 1e-8);
                param("weight_decay", weight_decay, 0.01);
                "adamw"
            }
        };
        f.write_str(name)?;
        if !params.is_empty() {
            write!(f, ":{}", params.join(","))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::Optimizer;
    use candle_core::{DType, Device, Var};

    #[test]
    fn specs_parse_with_pytorch_defaults_and_reject_bad_values() {
        assert_eq!(
            "sgd".parse::<OptimizerSpec>().unwrap(),
            OptimizerSpec::Sgd {
                momentum: 0.0,
                weight_decay: 0.0,
                nesterov: false
            }
        );
        let adamw: OptimizerSpec = "adamw:beta2=0.99".parse().unwrap();
        assert_eq!(
            adamw,
            OptimizerSpec::AdamW {
                beta1: 0.9,
                beta2: 0.99,
                eps: 1e-8,
                weight_decay: 0.01
            }
        );
        assert_eq!(adamw.to_string().parse::<OptimizerSpec>().unwrap(), adamw);
        for bad in [
            "adam",
            "sgd:nesterov=true",
            "sgd:momentum=1",
            "sgd:beta1=0.9",
            "adamw:eps=0",
            "sgd:lr",
        ] {
            let err = bad.parse::<OptimizerSpec>().unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
        let var = Var::zeros(1, DType::F32, &Device::Cpu).unwrap();
        assert!(
            Optimizer::new(OptimizerSpec::default(), vec![("w".into(), var)], f64::NAN).is_err()
        );
    }
}

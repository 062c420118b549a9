//! Optimizers (SGD with momentum, AdamW) whose state can be saved and restored exactly.
//!
//! candle-nn's optimizers keep their state private, so a checkpoint could not resume them. These
//! follow PyTorch's `torch.optim.SGD` (dampening 0) and `torch.optim.AdamW` update rules, with
//! every intermediate computed in the parameters' dtype; restoring [`Optimizer::state_tensors`]
//! with [`Optimizer::load_state`] continues training bitwise-identically.
//!
//! The step count is global (PyTorch keeps one per parameter); they agree whenever every
//! parameter gets a gradient each step, as in this crate's models. A parameter without a gradient
//! in a step is left untouched.

use std::fmt;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

mod spec;
mod state;

pub use spec::OptimizerSpec;

/// Errors configuring, stepping or restoring an optimizer.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// An `--optimizer` spec could not be parsed.
    #[error("invalid optimizer spec `{spec}`: {reason}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// A learning rate is negative or not finite.
    #[error("invalid learning rate {0}: must be finite and >= 0")]
    LearningRate(f64),
    /// A state tensor this optimizer needs is missing.
    #[error("cannot restore optimizer: state tensor `{name}` is missing")]
    MissingState {
        /// The state tensor name.
        name: String,
    },
    /// A state tensor belongs to no parameter of this optimizer (or to another optimizer kind).
    #[error("cannot restore optimizer: unexpected state tensor `{name}` for {optimizer}")]
    UnexpectedState {
        /// The state tensor name.
        name: String,
        /// This optimizer's spec.
        optimizer: String,
    },
    /// A state tensor has the wrong shape or dtype.
    #[error("cannot restore optimizer: state tensor `{name}` is {found}, expected {expected}")]
    StateMismatch {
        /// The state tensor name.
        name: String,
        /// Expected shape and dtype.
        expected: String,
        /// Shape and dtype found.
        found: String,
    },
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Per-parameter state.
enum ParamState {
    /// The SGD momentum buffer, created from the first gradient as PyTorch does.
    Sgd { momentum: Option<Tensor> },
    /// AdamW's first and second moment estimates.
    AdamW { m: Tensor, v: Tensor },
}

struct Param {
    name: String,
    var: Var,
    state: ParamState,
}

/// An optimizer over a fixed list of named parameters.
pub struct Optimizer {
    spec: OptimizerSpec,
    lr: f64,
    step: u64,
    /// `step` as a CPU tensor, kept current so [`Optimizer::state_tensors`] cannot fail.
    step_tensor: Tensor,
    params: Vec<Param>,
}

impl fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Optimizer")
            .field("spec", &self.spec)
            .field("lr", &self.lr)
            .field("step", &self.step)
            .finish()
    }
}

impl Optimizer {
    /// An optimizer over `vars` (e.g. [`crate::model::Model::vars`]) at learning rate `lr`, step 0.
    pub fn new(spec: OptimizerSpec, vars: Vec<(String, Var)>, lr: f64) -> Result<Self, OptimError> {
        spec.validate().map_err(|reason| OptimError::Spec {
            spec: spec.to_string(),
            reason,
        })?;
        check_lr(lr)?;
        let params = vars
            .into_iter()
            .map(|(name, var)| -> Result<Param, OptimError> {
                let state = match spec {
                    OptimizerSpec::Sgd { .. } => ParamState::Sgd { momentum: None },
                    OptimizerSpec::AdamW { .. } => ParamState::AdamW {
                        m: var.zeros_like()?,
                        v: var.zeros_like()?,
                    },
                };
                Ok(Param { name, var, state })
            })
            .collect::<Result<_, OptimError>>()?;
        Ok(Self {
            spec,
            lr,
            step: 0,
            step_tensor: step_tensor(0)?,
            params,
        })
    }

    /// The hyper-parameters.
    pub fn spec(&self) -> &OptimizerSpec {
        &self.spec
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate used from the next step on. The caller validates it (finite, >= 0):
    /// decisions are checked where they are made.
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Applies one update from `grads`; returns the global L2 norm of the gradients (before
    /// weight decay). A non-finite norm means the update was non-finite too: the caller decides.
    pub fn step(&mut self, grads: &GradStore) -> Result<f64, OptimError> {
        self.step += 1;
        self.step_tensor = step_tensor(self.step)?;
        let lr = self.lr;
        // Sum of squared gradients: on the CPU read in place in f64 (two tensor ops per parameter
        // cost more than the sum itself on small models); elsewhere on the device.
        let mut host_sum = 0.0f64;
        let mut squares = Vec::new();
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            match cpu_sum_of_squares(g) {
                Some(sum) => host_sum += sum,
                None => squares.push(g.sqr()?.sum_all()?.to_dtype(DType::F64)?),
            }
            // Detached so the update does not record a graph back to the variable.
            let w = p.var.as_detached_tensor();
            let updated = match (&self.spec, &mut p.state) {
                (
                    &OptimizerSpec::Sgd {
                        momentum,
                        weight_decay,
                        nesterov,
                    },
                    ParamState::Sgd { momentum: buf },
                ) => {
                    let mut d = if weight_decay != 0.0 {
                        (g + w.affine(weight_decay, 0.0)?)?
                    } else {
                        g.clone()
                    };
                    if momentum != 0.0 {
                        let b = match buf.take() {
                            None => d.clone(),
                            Some(b) => (b.affine(momentum, 0.0)? + &d)?,
                        };
                        d = if nesterov {
                            (d + b.affine(momentum, 0.0)?)?
                        } else {
                            b.clone()
                        };
                        *buf = Some(b);
                    }
                    (w - d.affine(lr, 0.0)?)?
                }
                (
                    &OptimizerSpec::AdamW {
                        beta1,
                        beta2,
                        eps,
                        weight_decay,
                    },
                    ParamState::AdamW { m, v },
                ) => {
                    let w = if weight_decay != 0.0 {
                        w.affine(1.0 - lr * weight_decay, 0.0)?
                    } else {
                        w
                    };
                    // m.lerp(g, 1 - beta1) and v * beta2 + (1 - beta2) * g * g, as PyTorch computes them.
                    *m = (&*m + (g - &*m)?.affine(1.0 - beta1, 0.0)?)?;
                    *v = (v.affine(beta2, 0.0)? + g.sqr()?.affine(1.0 - beta2, 0.0)?)?;
                    let t = self.step.min(i32::MAX as u64) as i32;
                    let bias1 = 1.0 - beta1.powi(t);
                    let bias2_sqrt = (1.0 - beta2.powi(t)).sqrt();
                    let denom = v.sqrt()?.affine(1.0 / bias2_sqrt, eps)?;
                    (w - (&*m / denom)?.affine(lr / bias1, 0.0)?)?
                }
                // new() creates the state kind from the spec kind and nothing changes either.
                _ => {
                    return Err(candle_core::Error::Msg(
                        "optimizer state does not match its spec".into(),
                    )
                    .into());
                }
            };
            p.var.set(&updated)?;
        }
        let on_device = if squares.is_empty() {
            0.0
        } else {
            Tensor::stack(&squares, 0)?.sum_all()?.to_scalar::<f64>()?
        };
        Ok((host_sum + on_device).sqrt())
    }
}

/// Σx² of a contiguous f32 CPU tensor, read in place (no copy, no tensor ops), accumulated in f64
/// over eight lanes in a fixed order: deterministic, and cheap next to the step itself. `None`
/// for anything else, which the caller sums on its device.
fn cpu_sum_of_squares(t: &Tensor) -> Option<f64> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)) = &*storage else {
        return None;
    };
    let (start, end) = layout.contiguous_offsets()?;
    let xs = data.get(start..end)?;
    let mut lanes = [0.0f64; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(x) * f64::from(x);
        }
    }
    let tail: f64 = tail.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    Some(lanes.iter().sum::<f64>() + tail)
}

/// The step count as the `[1]` I64 CPU tensor stored in checkpoints.
fn step_tensor(step: u64) -> Result<Tensor, OptimError> {
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    Ok(Tensor::from_slice(&[step], 1, &candle_core::Device::Cpu)?)
}

fn check_lr(lr: f64) -> Result<(), OptimError> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(OptimError::LearningRate(lr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn in_place_sum_of_squares_matches_tensor_ops() {
        let values: Vec<f32> = (0..1037).map(|i| (i as f32 * 0.37).sin()).collect();
        let t = Tensor::from_vec(values.clone(), (17, 61), &Device::Cpu).unwrap();
        let expected: f64 = values.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let got = cpu_sum_of_squares(&t).unwrap();
        assert!(
            (got - expected).abs() <= 1e-9 * expected,
            "{got} vs {expected}"
        );
        // A non-contiguous view is left to the tensor path.
        assert!(cpu_sum_of_squares(&t.t().unwrap()).is_none());
    }

    const C: [f32; 3] = [0.5, -1.0, 2.0];

    /// A single parameter whose loss `sum(w * C)` has gradient `C`.
    pub(super) fn tiny(spec: &str, lr: f64) -> (Var, Optimizer) {
        let var = Var::from_slice(&[1.0f32, -2.0, 0.5], 3, &Device::Cpu).unwrap();
        let opt =
            Optimizer::new(spec.parse().unwrap(), vec![("w".into(), var.clone())], lr).unwrap();
        (var, opt)
    }

    pub(super) fn step_tiny(var: &Var, opt: &mut Optimizer) -> f64 {
        let c = Tensor::new(&C, &Device::Cpu).unwrap();
        let loss = (var.as_tensor() * c).unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap()).unwrap()
    }

    fn assert_close(var: &Var, expected: &[f64]) {
        let got = var.to_vec1::<f32>().unwrap();
        for (g, e) in got.iter().zip(expected) {
            assert!(
                (f64::from(*g) - e).abs() < 1e-6,
                "got {got:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn adamw_matches_pytorch_by_hand() {
        let (var, mut opt) = tiny("adamw", 0.1);
        let (lr, b1, b2, eps, wd) = (0.1, 0.9, 0.999, 1e-8, 0.01);
        let mut p = [1.0f64, -2.0, 0.5];
        let (mut m, mut v) = ([0.0f64; 3], [0.0f64; 3]);
        for t in 1..=3 {
            let norm = step_tiny(&var, &mut opt);
            assert!((norm - 5.25f64.sqrt()).abs() < 1e-6, "{norm}");
            for i in 0..3 {
                let g = f64::from(C[i]);
                p[i] *= 1.0 - lr * wd;
                m[i] = b1 * m[i] + (1.0 - b1) * g;
                v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                let m_hat = m[i] / (1.0 - b1.powi(t));
                let v_hat = v[i] / (1.0 - b2.powi(t));
                p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
            }
            assert_close(&var, &p);
        }
        // After step 1 the update is lr * sign(g) on top of the decay.
        assert_eq!(opt.step_count(), 3);
    }

    #[test]
    fn sgd_with_nesterov_and_weight_decay_matches_pytorch_by_hand() {
        let (var, mut opt) = tiny("sgd:momentum=0.9,weight_decay=0.1,nesterov=true", 0.05);
        let (lr, mu, wd) = (0.05, 0.9, 0.1);
        let mut p = [1.0f64, -2.0, 0.5];
        let mut buf: Option<[f64; 3]> = None;
        for _ in 0..3 {
            step_tiny(&var, &mut opt);
            let d: Vec<f64> = (0..3).map(|i| f64::from(C[i]) + wd * p[i]).collect();
            let b: [f64; 3] = std::array::from_fn(|i| buf.map_or(d[i], |b| mu * b[i] + d[i]));
            for i in 0..3 {
                p[i] -= lr * (d[i] + mu * b[i]);
            }
            buf = Some(b);
            assert_close(&var, &p);
        }
    }
}

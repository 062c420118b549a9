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

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

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
        OptimizerSpec::Sgd { momentum: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

impl FromStr for OptimizerSpec {
    type Err = OptimError;

    fn from_str(s: &str) -> Result<Self, OptimError> {
        let err = |reason: String| OptimError::Spec { spec: s.to_string(), reason };
        let (kind, opts) = s.split_once(':').unwrap_or((s, ""));
        let mut spec = match kind {
            "sgd" => OptimizerSpec::default(),
            "adamw" => OptimizerSpec::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 },
            _ => return Err(err("expected `sgd[:momentum=M,weight_decay=W,nesterov=B]` or \
                 `adamw[:beta1=B1,beta2=B2,eps=E,weight_decay=W]`"
                .into())),
        };
        for kv in opts.split(',').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| err(format!("`{kv}` is not key=value")))?;
            let num = || v.parse::<f64>().map_err(|_| err(format!("`{v}` is not a number for {k}")));
            match (&mut spec, k) {
                (OptimizerSpec::Sgd { momentum, .. }, "momentum") => *momentum = num()?,
                (OptimizerSpec::Sgd { nesterov, .. }, "nesterov") => {
                    *nesterov = v.parse().map_err(|_| err(format!("nesterov=`{v}` must be true or false")))?;
                }
                (OptimizerSpec::Sgd { weight_decay, .. } | OptimizerSpec::AdamW { weight_decay, .. }, "weight_decay") => {
                    *weight_decay = num()?
                }
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
            if (0.0..1.0).contains(&v) { Ok(()) } else { Err(format!("{name}={v} must be in [0, 1)")) }
        };
        let non_negative = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 { Ok(()) } else { Err(format!("{name}={v} must be finite and >= 0")) }
        };
        match *self {
            OptimizerSpec::Sgd { momentum, weight_decay, nesterov } => {
                unit("momentum", momentum)?;
                non_negative("weight_decay", weight_decay)?;
                if nesterov && momentum == 0.0 {
                    return Err("nesterov needs momentum > 0".into());
                }
            }
            OptimizerSpec::AdamW { beta1, beta2, eps, weight_decay } => {
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

impl fmt::Display for OptimizerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptimizerSpec::Sgd { momentum, weight_decay, nesterov } => {
                write!(f, "sgd:momentum={momentum:?},weight_decay={weight_decay:?},nesterov={nesterov}")
            }
            OptimizerSpec::AdamW { beta1, beta2, eps, weight_decay } => {
                write!(f, "adamw:beta1={beta1:?},beta2={beta2:?},eps={eps:?},weight_decay={weight_decay:?}")
            }
        }
    }
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
        f.debug_struct("Optimizer").field("spec", &self.spec).field("lr", &self.lr).field("step", &self.step).finish()
    }
}

impl Optimizer {
    /// An optimizer over `vars` (e.g. [`crate::model::Model::vars`]) at learning rate `lr`, step 0.
    pub fn new(spec: OptimizerSpec, vars: Vec<(String, Var)>, lr: f64) -> Result<Self, OptimError> {
        spec.validate().map_err(|reason| OptimError::Spec { spec: spec.to_string(), reason })?;
        check_lr(lr)?;
        let params = vars
            .into_iter()
              .map(|(name, var)| -> Result<Param, OptimError> {
                let state = match spec {
                    OptimizerSpec::Sgd { .. } => ParamState::Sgd { momentum: None },
                    OptimizerSpec::AdamW { .. } => ParamState::AdamW { m: var.zeros_like()?, v: var.zeros_like()? },
                };
                Ok(Param { name, var, state })
            })
            .collect::<Result<_, OptimError>>()?;
        Ok(Self { spec, lr, step: 0, step_tensor: step_tensor(0)?, params })
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
        let mut squares = Vec::with_capacity(self.params.len());
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else { continue };
            squares.push(g.sqr()?.sum_all()?);
            // Detached so the update does not record a graph back to the variable.
            let w = p.var.as_detached_tensor();
            let updated = match (&self.spec, &mut p.state) {
                (&OptimizerSpec::Sgd { momentum, weight_decay, nesterov }, ParamState::Sgd { momentum: buf }) => {
                    let mut d = if weight_decay != 0.0 { (g + w.affine(weight_decay, 0.0)?)? } else { g.clone() };
                    if momentum != 0.0 {
                        let b = match buf.take() {
                            None => d.clone(),
                            Some(b) => (b.affine(momentum, 0.0)? + &d)?,
                        };
                        d = if nesterov { (d + b.affine(momentum, 0.0)?)? } else { b.clone() };
                        *buf = Some(b);
                    }
                    (w - d.affine(lr, 0.0)?)?
                }
                (&OptimizerSpec::AdamW { beta1, beta2, eps, weight_decay }, ParamState::AdamW { m, v }) => {
                    let w = if weight_decay != 0.0 { w.affine(1.0 - lr * weight_decay, 0.0)? } else { w };
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
                _ => return Err(candle_core::Error::Msg("optimizer state does not match its spec".into()).into()),
            };
            p.var.set(&updated)?;
        }
        if squares.is_empty() {
            return Ok(0.0);
        }
        let total = Tensor::stack(&squares, 0)?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Ok(total.sqrt())
    }

    /// The state to checkpoint (`step` on the CPU, the rest on the parameters' device), named `step`, `momentum.<param>` (SGD) or `m.<param>`/`v.<param>`
    /// (AdamW). The tensors are snapshots: later steps replace, never mutate, them.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("step".to_string(), self.step_tensor.clone())];
        for p in &self.params {
            match &p.state {
                ParamState::Sgd { momentum: Some(b) } => out.push((format!("momentum.{}", p.name), b.clone())),
                ParamState::Sgd { momentum: None } => {}
                ParamState::AdamW { m, v } => {
                    out.push((format!("m.{}", p.name), m.clone()));
                    out.push((format!("v.{}", p.name), v.clone()));
                }
            }
        }
        out
    }

    /// Restores state saved by [`Optimizer::state_tensors`] (moved to the parameters' device).
    /// Checks every name, shape and dtype before changing anything. The learning rate is not part
    /// of the state: restore it with [`Optimizer::set_lr`].
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<(), OptimError> {
        let step = read_step(tensors)?;
        let kinds = self.state_kinds();
        let expected = |name: &str| {
            name == "step" || self.params.iter().any(|p| kinds.iter().any(|k| name == format!("{k}.{}", p.name)))
        };
        if let Some(name) = tensors.keys().find(|n| !expected(n)) {
            return Err(OptimError::UnexpectedState { name: name.clone(), optimizer: self.spec.to_string() });
        }
        let mut restored = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let fetch = |kind: &str| fetch_state(tensors, kind, p);
            let missing = |kind: &str| OptimError::MissingState { name: format!("{kind}.{}", p.name) };
            restored.push(match self.spec {
                OptimizerSpec::AdamW { .. } => ParamState::AdamW {
                    m: fetch("m")?.ok_or_else(|| missing("m"))?,
                    v: fetch("v")?.ok_or_else(|| missing("v"))?,
                },
                // A momentum buffer appears with the first gradient, so only step 0 may lack one.
                OptimizerSpec::Sgd { momentum, .. } if momentum != 0.0 => match fetch("momentum")? {
                    None if step > 0 => return Err(missing("momentum")),
                    buf => ParamState::Sgd { momentum: buf },
                },
                OptimizerSpec::Sgd { .. } => ParamState::Sgd { momentum: None },
            });
        }
        for (p, state) in self.params.iter_mut().zip(restored) {
            p.state = state;
        }
        self.step = step;
        self.step_tensor = step_tensor(step)?;
        Ok(())
    }

    /// Names of the per-parameter state tensors this optimizer keeps.
    fn state_kinds(&self) -> &'static [&'static str] {
        match self.spec {
            OptimizerSpec::Sgd { momentum, .. } if momentum != 0.0 => &["momentum"],
            OptimizerSpec::Sgd { .. } => &[],
            OptimizerSpec::AdamW { .. } => &["m", "v"],
        }
    }
}

/// The state tensor `<kind>.<param>`, checked against the parameter and moved to its device.
fn fetch_state(tensors: &HashMap<String, Tensor>, kind: &str, p: &Param) -> Result<Option<Tensor>, OptimError> {
    let name = format!("{kind}.{}", p.name);
    let Some(t) = tensors.get(&name) else { return Ok(None) };
    if t.dims() != p.var.dims() || t.dtype() != p.var.dtype() {
        return Err(OptimError::StateMismatch {
            name,
            expected: format!("{:?} {:?}", p.var.dims(), p.var.dtype()),
            found: format!("{:?} {:?}", t.dims(), t.dtype()),
        });
    }
    Ok(Some(t.to_device(p.var.device())?))
}

fn read_step(tensors: &HashMap<String, Tensor>) -> Result<u64, OptimError> {
    let t = tensors.get("step").ok_or_else(|| OptimError::MissingState { name: "step".into() })?;
    let value = match t.dtype() {
        DType::I64 if t.dims() == [1] => t.to_vec1::<i64>()?[0],
        _ => -1,
    };
    u64::try_from(value).map_err(|_| OptimError::StateMismatch {
        name: "step".into(),
        expected: "[1] I64 >= 0".into(),
        found: format!("{:?} {:?} = {value}", t.dims(), t.dtype()),
    })
}

/// The step count as the `[1]` I64 CPU tensor stored in checkpoints.
fn step_tensor(step: u64) -> Result<Tensor, OptimError> {
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    Ok(Tensor::from_slice(&[step], 1, &candle_core::Device::Cpu)?)
}

fn check_lr(lr: f64) -> Result<(), OptimError> {
    if lr.is_finite() && lr >= 0.0 { Ok(()) } else { Err(OptimError::LearningRate(lr)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataSpec, DeviceData, epoch_permutation};
    use crate::model::{Model, ModelSpec, cross_entropy};
    use candle_core::Device;

    const C: [f32; 3] = [0.5, -1.0, 2.0];

    /// A single parameter whose loss `sum(w * C)` has gradient `C`.
    fn tiny(spec: &str, lr: f64) -> (Var, Optimizer) {
        let var = Var::from_slice(&[1.0f32, -2.0, 0.5], 3, &Device::Cpu).unwrap();
        let opt = Optimizer::new(spec.parse().unwrap(), vec![("w".into(), var.clone())], lr).unwrap();
        (var, opt)
    }

    fn step_tiny(var: &Var, opt: &mut Optimizer) -> f64 {
        let c = Tensor::new(&C, &Device::Cpu).unwrap();
        let loss = (var.as_tensor() * c).unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap()).unwrap()
    }

    fn assert_close(var: &Var, expected: &[f64]) {
        let got = var.to_vec1::<f32>().unwrap();
        for (g, e) in got.iter().zip(expected) {
            assert!((f64::from(*g) - e).abs() < 1e-6, "got {got:?}, expected {expected:?}");
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

    #[test]
    fn specs_parse_with_pytorch_defaults_and_reject_bad_values() {
        assert_eq!(
            "sgd".parse::<OptimizerSpec>().unwrap(),
            OptimizerSpec::Sgd { momentum: 0.0, weight_decay: 0.0, nesterov: false }
        );
        let adamw: OptimizerSpec = "adamw:beta2=0.99".parse().unwrap();
        assert_eq!(adamw, OptimizerSpec::AdamW { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.01 });
        assert_eq!(adamw.to_string().parse::<OptimizerSpec>().unwrap(), adamw);
        for bad in ["adam", "sgd:nesterov=true", "sgd:momentum=1", "sgd:beta1=0.9", "adamw:eps=0", "sgd:lr"] {
            let err = bad.parse::<OptimizerSpec>().unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
        let var = Var::zeros(1, DType::F32, &Device::Cpu).unwrap();
        assert!(Optimizer::new(OptimizerSpec::default(), vec![("w".into(), var)], f64::NAN).is_err());
    }

    /// Trains a small MLP for `steps` from the given state, over fixed synthetic batches.
    fn run(model: &Model, opt: &mut Optimizer, data: &DeviceData, steps: std::ops::Range<usize>) {
        let order = epoch_permutation(data.len(), 3, 0);
        let batches: Vec<_> = data.batches(&order, 16).unwrap().map(Result::unwrap).collect();
        for s in steps {
            let (x, y) = &batches[s % batches.len()];
            let loss = cross_entropy(&model.forward(x).unwrap(), y).unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
    }

    fn bits(model: &Model) -> Vec<Vec<u32>> {
        let flat = |t: &Tensor| -> Vec<u32> { t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect() };
        model.tensors().iter().map(|(_, t)| flat(t)).collect()
    }

    #[test]
    fn restored_state_continues_bitwise_identically() {
        let ds = "synthetic:samples=96,features=6,classes=3".parse::<DataSpec>().unwrap().load().unwrap();
        let data = DeviceData::new(&ds, &Device::Cpu).unwrap();
        let spec: ModelSpec = "mlp:16".parse().unwrap();
        for optimizer in ["sgd:momentum=0.9,weight_decay=0.01", "sgd:momentum=0.9,nesterov=true", "sgd", "adamw"] {
            let spec_o: OptimizerSpec = optimizer.parse().unwrap();
            let straight = Model::new(&spec, ds.shape(), 1, &Device::Cpu).unwrap();
            let mut opt = Optimizer::new(spec_o, straight.vars(), 0.05).unwrap();
            run(&straight, &mut opt, &data, 0..10);

            let first = Model::new(&spec, ds.shape(), 1, &Device::Cpu).unwrap();
            let mut opt = Optimizer::new(spec_o, first.vars(), 0.05).unwrap();
            run(&first, &mut opt, &data, 0..4);
            let weights: HashMap<_, _> = first.tensors().into_iter().map(|(n, t)| (n, t.copy().unwrap())).collect();
            let state: HashMap<_, _> = opt.state_tensors().into_iter().collect();
            run(&first, &mut opt, &data, 4..6); // Later steps must not disturb the saved state.

            let resumed = Model::new(&spec, ds.shape(), 99, &Device::Cpu).unwrap();
            resumed.load_tensors(&weights).unwrap();
            let mut opt = Optimizer::new(spec_o, resumed.vars(), 0.05).unwrap();
            opt.load_state(&state).unwrap();
            assert_eq!(opt.step_count(), 4);
            run(&resumed, &mut opt, &data, 4..10);
            assert_eq!(bits(&resumed), bits(&straight), "{optimizer}");
        }
    }

    #[test]
    fn load_state_rejects_foreign_missing_and_misshapen_state() {
        let (_, mut adam) = tiny("adamw", 0.1);
        let (var, mut sgd) = tiny("sgd:momentum=0.5", 0.1);
        step_tiny(&var, &mut sgd);
        let state: HashMap<_, _> = sgd.state_tensors().into_iter().collect();
        assert_eq!(state.len(), 2);
        let err = adam.load_state(&state).unwrap_err().to_string();
        assert!(err.contains("unexpected state tensor `momentum.w`"), "{err}");

        let mut no_buf = state.clone();
        no_buf.remove("momentum.w");
        assert!(sgd.load_state(&no_buf).unwrap_err().to_string().contains("`momentum.w` is missing"));
        let mut no_step = state.clone();
        no_step.remove("step");
        assert!(sgd.load_state(&no_step).unwrap_err().to_string().contains("`step` is missing"));
        let mut bad = state.clone();
        bad.insert("momentum.w".into(), Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap());
        let err = sgd.load_state(&bad).unwrap_err().to_string();
        assert!(err.contains("`momentum.w` is [2] F32, expected [3] F32"), "{err}");
        assert_eq!(sgd.step_count(), 1, "a rejected load changes nothing");
    }
}

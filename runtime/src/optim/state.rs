//! Saving and restoring optimizer state, for checkpoints that resume bitwise-identically.

use std::collections::HashMap;

use candle_core::{DType, Tensor};

use super::{OptimError, Optimizer, OptimizerSpec, Param, ParamState, step_tensor};

impl Optimizer {
    /// The state to checkpoint: `step` (a `[1]` I64 CPU tensor), then per parameter
    /// `momentum.<param>` (SGD with momentum, once a gradient was seen) or `m.<param>` and
    /// `v.<param>` (AdamW), on the parameters' device. The tensors are snapshots: later steps
    /// replace them rather than write into them.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("step".to_string(), self.step_tensor.clone())];
        for p in &self.params {
            match &p.state {
                ParamState::Sgd { momentum: Some(b) } => {
                    out.push((format!("momentum.{}", p.name), b.clone()))
                }
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
            name == "step"
                || self
                    .params
                    .iter()
                    .any(|p| kinds.iter().any(|k| name == format!("{k}.{}", p.name)))
        };
        if let Some(name) = tensors.keys().find(|n| !expected(n)) {
            return Err(OptimError::UnexpectedState {
                name: name.clone(),
                optimizer: self.spec.to_string(),
            });
        }
        let mut restored = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let fetch = |kind: &str| fetch_state(tensors, kind, p);
            let missing = |kind: &str| OptimError::MissingState {
                name: format!("{kind}.{}", p.name),
            };
            restored.push(match self.spec {
                OptimizerSpec::AdamW { .. } => ParamState::AdamW {
                    m: fetch("m")?.ok_or_else(|| missing("m"))?,
                    v: fetch("v")?.ok_or_else(|| missing("v"))?,
                },
                // A momentum buffer appears with the first gradient, so only step 0 may lack one.
                OptimizerSpec::Sgd { momentum, .. } if momentum != 0.0 => {
                    match fetch("momentum")? {
                        None if step > 0 => return Err(missing("momentum")),
                        buf => ParamState::Sgd { momentum: buf },
                    }
                }
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
fn fetch_state(
    tensors: &HashMap<String, Tensor>,
    kind: &str,
    p: &Param,
) -> Result<Option<Tensor>, OptimError> {
    let name = format!("{kind}.{}", p.name);
    let Some(t) = tensors.get(&name) else {
        return Ok(None);
    };
    if t.dims() != p.var.dims() || t.dtype() != p.var.dtype() {
        return Err(OptimError::StateMismatch {
            name,
            expected: format!("{:?} {:?}", p.var.dims(), p.var.dtype()),
            found: format!("{:?} {:?}", t.dims(), t.dtype()),
        });
    }
    Ok(Some(t.to_device(p.var.device())?))
}

/// The step count from the `step` state tensor.
fn read_step(tensors: &HashMap<String, Tensor>) -> Result<u64, OptimError> {
    let t = tensors
        .get("step")
        .ok_or_else(|| OptimError::MissingState {
            name: "step".into(),
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataSpec, DeviceData, epoch_permutation};
    use crate::model::{Model, ModelSpec, cross_entropy};
    use crate::optim::tests::{step_tiny, tiny};
    use candle_core::Device;

    /// Trains a small MLP for `steps` from the given state, over fixed synthetic batches.
    fn run(model: &Model, opt: &mut Optimizer, data: &DeviceData, steps: std::ops::Range<usize>) {
        let order = epoch_permutation(data.len(), 3, 0);
        let batches: Vec<_> = data
            .batches(&order, 16)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for s in steps {
            let (x, y) = &batches[s % batches.len()];
            let loss = cross_entropy(&model.forward(x).unwrap(), y).unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
    }

    fn bits(model: &Model) -> Vec<Vec<u32>> {
        let flat = |t: &Tensor| -> Vec<u32> {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        model.tensors().iter().map(|(_, t)| flat(t)).collect()
    }

    #[test]
    fn restored_state_continues_bitwise_identically() {
        let ds = "synthetic:samples=96,features=6,classes=3"
            .parse::<DataSpec>()
            .unwrap()
            .load()
            .unwrap();
        let data = DeviceData::new(&ds, &Device::Cpu).unwrap();
        let spec: ModelSpec = "mlp:16".parse().unwrap();
        for optimizer in [
            "sgd:momentum=0.9,weight_decay=0.01",
            "sgd:momentum=0.9,nesterov=true",
            "sgd",
            "adamw",
        ] {
            let spec_o: OptimizerSpec = optimizer.parse().unwrap();
            let straight = Model::new(&spec, ds.shape(), 1, &Device::Cpu).unwrap();
            let mut opt = Optimizer::new(spec_o, straight.vars(), 0.05).unwrap();
            run(&straight, &mut opt, &data, 0..10);

            let first = Model::new(&spec, ds.shape(), 1, &Device::Cpu).unwrap();
            let mut opt = Optimizer::new(spec_o, first.vars(), 0.05).unwrap();
            run(&first, &mut opt, &data, 0..4);
            let weights: HashMap<_, _> = first
                .tensors()
                .into_iter()
                .map(|(n, t)| (n, t.copy().unwrap()))
                .collect();
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
        assert!(
            err.contains("unexpected state tensor `momentum.w`"),
            "{err}"
        );

        let mut no_buf = state.clone();
        no_buf.remove("momentum.w");
        assert!(
            sgd.load_state(&no_buf)
                .unwrap_err()
                .to_string()
                .contains("`momentum.w` is missing")
        );
        let mut no_step = state.clone();
        no_step.remove("step");
        assert!(
            sgd.load_state(&no_step)
                .unwrap_err()
                .to_string()
                .contains("`step` is missing")
        );
        let mut bad = state.clone();
        bad.insert(
            "momentum.w".into(),
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        );
        let err = sgd.load_state(&bad).unwrap_err().to_string();
        assert!(
            err.contains("`momentum.w` is [2] F32, expected [3] F32"),
            "{err}"
        );
        assert_eq!(sgd.step_count(), 1, "a rejected load changes nothing");
    }
}

//! Models (an MLP and a small CNN), their deterministic initialisation, and loss/metrics.
//!
//! candle's CPU random generator cannot be seeded, so initial weights are drawn here from a
//! [`rand_chacha::ChaCha8Rng`] keyed by `(seed, parameter index)` with PyTorch's default
//! `nn.Linear`/`nn.Conv2d` scheme: weights and biases uniform in `±1/sqrt(fan_in)` (what
//! `kaiming_uniform_(a=sqrt(5))` reduces to). The values become [`Var`]s in a [`VarMap`], and the
//! layers are then built by candle-nn from that map, so the same seed gives bitwise-identical
//! weights in every run and process.

use std::collections::HashMap;
use std::fmt;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};

use crate::data::{DataError, DatasetShape, ImageShape, PURPOSE_INIT, keyed_rng, unit_f64};

mod metrics;
mod spec;

pub use metrics::{accuracy, correct_count, cross_entropy, evaluate, evaluate_dataset};
pub use spec::ModelSpec;
use spec::{cnn_output, cnn_stages, plan};

/// Errors building, restoring or evaluating a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A `--model` spec could not be parsed.
    #[error("invalid model spec `{spec}`: {reason}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// A convolutional model was asked for on data that are not images.
    #[error(
        "model `{model}` needs image data, but dataset features have no image shape (use `mlp`)"
    )]
    NoImageShape {
        /// The model spec.
        model: String,
    },
    /// A tensor to restore is missing.
    #[error("cannot restore model: tensor `{name}` is missing")]
    MissingTensor {
        /// The parameter name.
        name: String,
    },
    /// A tensor to restore belongs to no parameter.
    #[error("cannot restore model: unexpected tensor `{name}` (not a parameter of this model)")]
    UnexpectedTensor {
        /// The tensor name.
        name: String,
    },
    /// A tensor to restore has the wrong shape or dtype.
    #[error("cannot restore model: tensor `{name}` is {found}, expected {expected}")]
    TensorMismatch {
        /// The parameter name.
        name: String,
        /// Shape and dtype of the parameter.
        expected: String,
        /// Shape and dtype of the given tensor.
        found: String,
    },
    /// Evaluation was asked for on no examples.
    #[error("cannot evaluate on an empty dataset")]
    EmptyDataset,
    /// Batching the data failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

enum Layers {
    Mlp(Vec<Linear>),
    Cnn {
        convs: Vec<(Conv2d, bool)>,
        head: Linear,
        image: ImageShape,
    },
}

/// A classifier whose parameters are candle [`Var`]s, ready for backprop and our optimizers.
pub struct Model {
    layers: Layers,
    vars: Vec<(String, Var)>,
    varmap: VarMap,
    description: String,
    device: Device,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Builds `spec` for data of `shape` on `device`, initialised deterministically from `seed`.
    pub fn new(
        spec: &ModelSpec,
        shape: DatasetShape,
        seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let (plan, description) = plan(spec, &shape)?;
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
            for (index, p) in plan.iter().enumerate() {
                let mut rng = keyed_rng(seed, PURPOSE_INIT, index as u64);
                let bound = 1.0 / (p.fan_in as f64).sqrt();
                let count: usize = p.shape.iter().product();
                let values: Vec<f32> = (0..count)
                    .map(|_| ((unit_f64(&mut rng) * 2.0 - 1.0) * bound) as f32)
                    .collect();
                let var = Var::from_tensor(&Tensor::from_vec(values, p.shape.as_slice(), device)?)?;
                data.insert(p.name.clone(), var);
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let layers = build_layers(spec, &shape, &vb)?;
        let mut vars: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self {
            layers,
            vars,
            varmap,
            description,
            device: device.clone(),
        })
    }

    /// Logits `[B, classes]` for x `[B, F]` or `[B, C, H, W]` (either layout works for both models).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.layers {
            Layers::Mlp(linears) => {
                let mut h = if x.rank() > 2 {
                    x.flatten_from(1)?
                } else {
                    x.clone()
                };
                for (i, layer) in linears.iter().enumerate() {
                    h = layer.forward(&h)?;
                    if i + 1 < linears.len() {
                        h = h.relu()?;
                    }
                }
                Ok(h)
            }
            Layers::Cnn { convs, head, image } => {
                let mut h = if x.rank() == 2 {
                    x.reshape((x.dim(0)?, image.channels, image.height, image.width))?
                } else {
                    x.clone()
                };
                for (conv, pool) in convs {
                    h = conv.forward(&h)?.relu()?;
                    if *pool {
                        h = h.max_pool2d(2)?;
                    }
                }
                head.forward(&h.flatten_from(1)?)
            }
        }
    }

    /// The parameters, sorted by name (a stable order for optimizers and checkpoints).
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.vars.clone()
    }

    /// The candle-nn variable map holding the parameters.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// A short description of the architecture, e.g. `mlp(64-128-10)`.
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// Total number of scalar parameters.
    pub fn parameter_count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The parameters as plain tensors, sorted by name, for checkpointing. They share storage with
    /// the live parameters, so the next optimizer step changes them: serialise (or `copy()`) first.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.vars
            .iter()
            .map(|(name, var)| (name.clone(), var.as_detached_tensor()))
            .collect()
    }

    /// Overwrites every parameter with the same-named tensor, moved to this model's device.
    /// Checks all names, shapes and dtypes before changing anything.
    pub fn load_tensors(&self, tensors: &HashMap<String, Tensor>) -> Result<(), ModelError> {
        if let Some(name) = tensors
            .keys()
            .find(|k| !self.vars.iter().any(|(n, _)| n == *k))
        {
            return Err(ModelError::UnexpectedTensor { name: name.clone() });
        }
        for (name, var) in &self.vars {
            let t = tensors
                .get(name)
                .ok_or_else(|| ModelError::MissingTensor { name: name.clone() })?;
            if t.dims() != var.dims() || t.dtype() != var.dtype() {
                return Err(ModelError::TensorMismatch {
                    name: name.clone(),
                    expected: format!("{:?} {:?}", var.dims(), var.dtype()),
                    found: format!("{:?} {:?}", t.dims(), t.dtype()),
                });
            }
        }
        for (name, var) in &self.vars {
            if let Some(t) = tensors.get(name) {
                var.set(&t.to_device(&self.device)?)?;
            }
        }
        Ok(())
    }
}

fn build_layers(
    spec: &ModelSpec,
    shape: &DatasetShape,
    vb: &VarBuilder,
) -> candle_core::Result<Layers> {
    let layers = match spec {
        ModelSpec::Mlp { hidden } => {
            let mut widths: Vec<usize> = std::iter::once(shape.features)
                .chain(hidden.iter().copied())
                .collect();
            widths.push(shape.classes);
            let linears = widths
                .windows(2)
                .enumerate()
                .map(|(i, pair)| candle_nn::linear(pair[0], pair[1], vb.pp(format!("fc{i}"))))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Layers::Mlp(linears)
        }
        ModelSpec::Cnn { channels } => {
            let (image, stages) = cnn_stages(spec, shape, channels)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let cfg = Conv2dConfig {
                padding: 1,
                ..Default::default()
            };
            let mut in_ch = image.channels;
            let mut convs = Vec::with_capacity(stages.len());
            for (i, &(out, pool)) in stages.iter().enumerate() {
                convs.push((
                    candle_nn::conv2d(in_ch, out, 3, cfg, vb.pp(format!("conv{i}")))?,
                    pool,
                ));
                in_ch = out;
            }
            let (c, h, w) = cnn_output(image, &stages);
            let head = candle_nn::linear(c * h * w, shape.classes, vb.pp("fc"))?;
            Layers::Cnn { convs, head, image }
        }
    };
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits_shape() -> DatasetShape {
        DatasetShape {
            features: 64,
            classes: 10,
            image: Some(ImageShape {
                channels: 1,
                height: 8,
                width: 8,
            }),
        }
    }

    /// Every weight's bit pattern, for bitwise comparisons (shared with the submodules' tests).
    pub(super) fn weights(model: &Model) -> Vec<(String, Vec<u32>)> {
        let bits = |t: &Tensor| -> Vec<u32> {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        model
            .tensors()
            .iter()
            .map(|(n, t)| (n.clone(), bits(t)))
            .collect()
    }

    #[test]
    fn init_is_deterministic_for_a_seed_and_differs_across_seeds() {
        let spec = ModelSpec::default();
        let a = Model::new(&spec, digits_shape(), 7, &Device::Cpu).unwrap();
        let b = Model::new(&spec, digits_shape(), 7, &Device::Cpu).unwrap();
        let c = Model::new(&spec, digits_shape(), 8, &Device::Cpu).unwrap();
        assert_eq!(weights(&a), weights(&b));
        for ((_, wa), (_, wc)) in weights(&a).iter().zip(weights(&c)) {
            assert_ne!(*wa, wc);
        }
        // PyTorch's default bound: |w| <= 1/sqrt(fan_in) = 1/8 for the first layer.
        let w = a
            .tensors()
            .into_iter()
            .find(|(n, _)| n == "fc0.weight")
            .unwrap()
            .1;
        let max = w
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(max <= 0.125 && max > 0.12, "{max}");
        let first: Vec<f32> = w
            .flatten_all()
            .unwrap()
            .narrow(0, 0, 3)
            .unwrap()
            .to_vec1()
            .unwrap();
        // Pinned: if this changes, a seed no longer names the same initial model as before.
        assert_eq!(first, [0.07699795, 0.066177316, -0.1192021]);
    }

    #[test]
    fn cnn_runs_on_8x8_and_28x28_images_and_refuses_flat_data() {
        let cnn: ModelSpec = "cnn".parse().unwrap();
        let model = Model::new(&cnn, digits_shape(), 0, &Device::Cpu).unwrap();
        assert_eq!(model.describe(), "cnn(1x8x8-conv16-pool-conv32-pool-10)");
        let x = Tensor::zeros((2, 64), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.forward(&x).unwrap().dims(), &[2, 10]);
        let x = Tensor::zeros((3, 1, 8, 8), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.forward(&x).unwrap().dims(), &[3, 10]);
        let mnist = DatasetShape {
            features: 784,
            classes: 10,
            image: Some(ImageShape {
                channels: 1,
                height: 28,
                width: 28,
            }),
        };
        let model = Model::new(&cnn, mnist, 0, &Device::Cpu).unwrap();
        assert_eq!(model.describe(), "cnn(1x28x28-conv16-pool-conv32-pool-10)");
        let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.forward(&x).unwrap().dims(), &[2, 10]);
        let flat = DatasetShape {
            features: 5,
            classes: 2,
            image: None,
        };
        let err = Model::new(&cnn, flat, 0, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs image data"), "{err}");
    }

    #[test]
    fn load_tensors_restores_weights_and_rejects_mismatches() {
        let a = Model::new(&ModelSpec::default(), digits_shape(), 1, &Device::Cpu).unwrap();
        let b = Model::new(&ModelSpec::default(), digits_shape(), 2, &Device::Cpu).unwrap();
        let saved: HashMap<String, Tensor> = a
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.copy().unwrap()))
            .collect();
        b.load_tensors(&saved).unwrap();
        assert_eq!(weights(&a), weights(&b));

        let mut missing = saved.clone();
        missing.remove("fc1.bias");
        assert!(
            b.load_tensors(&missing)
                .unwrap_err()
                .to_string()
                .contains("`fc1.bias` is missing")
        );
        let mut extra = saved.clone();
        extra.insert(
            "fc9.bias".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
        assert!(
            b.load_tensors(&extra)
                .unwrap_err()
                .to_string()
                .contains("unexpected tensor `fc9.bias`")
        );
        let mut wrong = saved.clone();
        wrong.insert(
            "fc1.bias".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
        let err = b.load_tensors(&wrong).unwrap_err().to_string();
        assert!(
            err.contains("`fc1.bias` is [3] F32, expected [10] F32"),
            "{err}"
        );
        assert_eq!(weights(&a), weights(&b), "a rejected load changes nothing");
    }
}

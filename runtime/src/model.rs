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
use std::str::FromStr;

use candle_core::{D, DType, Device, Module, Tensor, Var};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};

use crate::data::{DataError, Dataset, DatasetShape, DeviceData, ImageShape, PURPOSE_INIT, keyed_rng, unit_f64};

/// Largest hidden width or channel count a spec may ask for.
const MAX_WIDTH: usize = 1 << 16;

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
    #[error("model `{model}` needs image data, but dataset features have no image shape (use `mlp`)")]
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

/// Which network to train, as given to `--model`.
///
/// - `mlp` (default): one hidden layer of 128; `mlp:256,128` gives the hidden widths. ReLU between.
/// - `cnn`: for image data; `cnn:16,32` (the default) gives the channels of each 3x3 conv
///   (padding 1, ReLU, then 2x2 max-pool while both sides are >= 4), then one linear layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A multi-layer perceptron with these hidden widths.
    Mlp {
        /// Hidden layer widths, input side first.
        hidden: Vec<usize>,
    },
    /// A small convolutional network.
    Cnn {
        /// Output channels of each conv layer.
        channels: Vec<usize>,
    },
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec::Mlp { hidden: vec![128] }
    }
}

impl FromStr for ModelSpec {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, ModelError> {
        let err = |reason: String| ModelError::Spec { spec: s.to_string(), reason };
        let (kind, widths) = match s.split_once(':') {
            Some((kind, list)) => {
                let widths = list
                    .split(',')
                    .map(|w| w.trim().parse::<usize>().ok().filter(|&w| (1..=MAX_WIDTH).contains(&w)))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| err(format!("`{list}` must be comma-separated widths in 1..={MAX_WIDTH}")))?;
                (kind, Some(widths))
            }
            None => (s, None),
        };
        match kind {
            "mlp" => Ok(ModelSpec::Mlp { hidden: widths.unwrap_or_else(|| vec![128]) }),
            "cnn" => match widths {
                Some(w) if w.len() > 4 => Err(err("a cnn has at most 4 conv layers".into())),
                w => Ok(ModelSpec::Cnn { channels: w.unwrap_or_else(|| vec![16, 32]) }),
            },
            _ => Err(err("expected `mlp`, `mlp:W1,W2,...`, `cnn` or `cnn:C1,C2,...`".into())),
        }
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, widths) = match self {
            ModelSpec::Mlp { hidden } => ("mlp", hidden),
            ModelSpec::Cnn { channels } => ("cnn", channels),
        };
        let list: Vec<String> = widths.iter().map(usize::to_string).collect();
        write!(f, "{kind}:{}", list.join(","))
    }
}

/// One parameter to create: its name, shape and PyTorch fan-in.
struct ParamPlan {
    name: String,
    shape: Vec<usize>,
    fan_in: usize,
}

enum Layers {
    Mlp(Vec<Linear>),
    Cnn { convs: Vec<(Conv2d, bool)>, head: Linear, image: ImageShape },
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
        f.debug_struct("Model").field("description", &self.description).finish_non_exhaustive()
    }
}

impl Model {
    /// Builds `spec` for data of `shape` on `device`, initialised deterministically from `seed`.
    pub fn new(spec: &ModelSpec, shape: DatasetShape, seed: u64, device: &Device) -> Result<Self, ModelError> {
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
                let values: Vec<f32> = (0..count).map(|_| ((unit_f64(&mut rng) * 2.0 - 1.0) * bound) as f32).collect();
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
        Ok(Self { layers, vars, varmap, description, device: device.clone() })
    }

    /// Logits `[B, classes]` for x `[B, F]` or `[B, C, H, W]` (either layout works for both models).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.layers {
            Layers::Mlp(linears) => {
                let mut h = if x.rank() > 2 { x.flatten_from(1)? } else { x.clone() };
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
        self.vars.iter().map(|(name, var)| (name.clone(), var.as_detached_tensor())).collect()
    }

    /// Overwrites every parameter with the same-named tensor, moved to this model's device.
    /// Checks all names, shapes and dtypes before changing anything.
    pub fn load_tensors(&self, tensors: &HashMap<String, Tensor>) -> Result<(), ModelError> {
        if let Some(name) = tensors.keys().find(|k| !self.vars.iter().any(|(n, _)| n == *k)) {
            return Err(ModelError::UnexpectedTensor { name: name.clone() });
        }
        for (name, var) in &self.vars {
            let t = tensors.get(name).ok_or_else(|| ModelError::MissingTensor { name: name.clone() })?;
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

/// Parameter shapes in creation order, and the model's description.
fn plan(spec: &ModelSpec, shape: &DatasetShape) -> Result<(Vec<ParamPlan>, String), ModelError> {
    let mut params = Vec::new();
    let linear = |params: &mut Vec<ParamPlan>, name: String, fan_in: usize, out: usize| {
        params.push(ParamPlan { name: format!("{name}.weight"), shape: vec![out, fan_in], fan_in });
        params.push(ParamPlan { name: format!("{name}.bias"), shape: vec![out], fan_in });
    };
    let description = match spec {
        ModelSpec::Mlp { hidden } => {
            let widths: Vec<usize> = std::iter::once(shape.features).chain(hidden.iter().copied()).collect();
            for (i, pair) in widths.windows(2).enumerate() {
                linear(&mut params, format!("fc{i}"), pair[0], pair[1]);
            }
            linear(&mut params, format!("fc{}", hidden.len()), widths[widths.len() - 1], shape.classes);
            let all: Vec<String> = widths.iter().chain([&shape.classes]).map(usize::to_string).collect();
            format!("mlp({})", all.join("-"))
        }
        ModelSpec::Cnn { channels } => {
            let (image, stages) = cnn_stages(spec, shape, channels)?;
            let mut desc = format!("cnn({image}");
            let mut in_ch = image.channels;
            for (i, &(out, pool)) in stages.iter().enumerate() {
                let fan_in = in_ch * 9;
                params.push(ParamPlan { name: format!("conv{i}.weight"), shape: vec![out, in_ch, 3, 3], fan_in });
                params.push(ParamPlan { name: format!("conv{i}.bias"), shape: vec![out], fan_in });
                desc.push_str(&format!("-conv{out}{}", if pool { "-pool" } else { "" }));
                in_ch = out;
            }
            let (_, h, w) = cnn_output(image, &stages);
            linear(&mut params, "fc".into(), in_ch * h * w, shape.classes);
            format!("{desc}-{})", shape.classes)
        }
    };
    Ok((params, description))
}

/// For each conv layer: (output channels, whether a 2x2 max-pool follows).
fn cnn_stages(
    spec: &ModelSpec,
    shape: &DatasetShape,
    channels: &[usize],
) -> Result<(ImageShape, Vec<(usize, bool)>), ModelError> {
    let image = shape.image.ok_or_else(|| ModelError::NoImageShape { model: spec.to_string() })?;
    let (mut h, mut w) = (image.height, image.width);
    let stages = channels
        .iter()
        .map(|&c| {
            let pool = h >= 4 && w >= 4;
            if pool {
                (h, w) = (h / 2, w / 2);
            }
            (c, pool)
        })
        .collect();
    Ok((image, stages))
}

/// (channels, height, width) after all conv stages.
fn cnn_output(image: ImageShape, stages: &[(usize, bool)]) -> (usize, usize, usize) {
    stages.iter().fold((image.channels, image.height, image.width), |(_, h, w), &(c, pool)| {
        if pool { (c, h / 2, w / 2) } else { (c, h, w) }
    })
}

fn build_layers(spec: &ModelSpec, shape: &DatasetShape, vb: &VarBuilder) -> candle_core::Result<Layers> {
    let layers = match spec {
        ModelSpec::Mlp { hidden } => {
            let mut widths: Vec<usize> = std::iter::once(shape.features).chain(hidden.iter().copied()).collect();
            widths.push(shape.classes);
            let linears = widths
                .windows(2)
                .enumerate()
                .map(|(i, pair)| candle_nn::linear(pair[0], pair[1], vb.pp(format!("fc{i}"))))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Layers::Mlp(linears)
        }
        ModelSpec::Cnn { channels } => {
            let (image, stages) =
                cnn_stages(spec, shape, channels).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let cfg = Conv2dConfig { padding: 1, ..Default::default() };
            let mut in_ch = image.channels;
            let mut convs = Vec::with_capacity(stages.len());
            for (i, &(out, pool)) in stages.iter().enumerate() {
                convs.push((candle_nn::conv2d(in_ch, out, 3, cfg, vb.pp(format!("conv{i}")))?, pool));
                in_ch = out;
            }
            let (c, h, w) = cnn_output(image, &stages);
            let head = candle_nn::linear(c * h * w, shape.classes, vb.pp("fc"))?;
            Layers::Cnn { convs, head, image }
        }
    };
    Ok(layers)
}

/// Mean cross-entropy of `logits` `[B, K]` against u32 `labels` `[B]`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, labels)
}

/// Number of rows whose arg-max logit equals the label, as an f32 scalar tensor (no device sync).
pub fn correct_count(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    logits.argmax(D::Minus1)?.eq(labels)?.to_dtype(DType::F32)?.sum_all()
}

/// Fraction of rows whose arg-max logit equals the label.
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<f64> {
    let n = labels.dim(0)?;
    Ok(f64::from(correct_count(logits, labels)?.to_scalar::<f32>()?) / n.max(1) as f64)
}

/// Mean loss and accuracy of `model` on `dataset`, copied to `device` first.
pub fn evaluate_dataset(
    model: &Model,
    dataset: &Dataset,
    batch_size: usize,
    device: &Device,
) -> Result<(f64, f64), ModelError> {
    evaluate(model, &DeviceData::new(dataset, device)?, batch_size)
}

/// Mean loss and accuracy (per example) of `model` on data already on its device, in batches of
/// `batch_size`. Fails on empty data rather than invent a number.
pub fn evaluate(model: &Model, data: &DeviceData, batch_size: usize) -> Result<(f64, f64), ModelError> {
    if data.is_empty() {
        return Err(ModelError::EmptyDataset);
    }
    let batch_size = batch_size.max(1);
    // Sums stay on the device (in f64) so evaluation syncs once, not once per batch.
    let mut loss_sum = Tensor::zeros((), DType::F64, model.device())?;
    let mut correct = Tensor::zeros((), DType::F64, model.device())?;
    for start in (0..data.len()).step_by(batch_size) {
        let len = batch_size.min(data.len() - start);
        let (x, y) = data.range(start, len)?;
        let logits = model.forward(&x)?.detach();
        let batch_loss = (cross_entropy(&logits, &y)?.to_dtype(DType::F64)? * len as f64)?;
        loss_sum = (loss_sum + batch_loss)?;
        correct = (correct + correct_count(&logits, &y)?.to_dtype(DType::F64)?)?;
    }
    let n = data.len() as f64;
    Ok((loss_sum.to_scalar::<f64>()? / n, correct.to_scalar::<f64>()? / n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataSpec, epoch_permutation, split};
    use crate::optim::{Optimizer, OptimizerSpec};

    fn digits_shape() -> DatasetShape {
        DatasetShape { features: 64, classes: 10, image: Some(ImageShape { channels: 1, height: 8, width: 8 }) }
    }

    fn weights(model: &Model) -> Vec<(String, Vec<u32>)> {
        let bits = |t: &Tensor| -> Vec<u32> { t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect() };
        model.tensors().iter().map(|(n, t)| (n.clone(), bits(t))).collect()
    }

    #[test]
    fn specs_parse_and_describe_the_network() {
        assert_eq!("mlp".parse::<ModelSpec>().unwrap(), ModelSpec::default());
        assert_eq!("mlp:256,128".parse::<ModelSpec>().unwrap(), ModelSpec::Mlp { hidden: vec![256, 128] });
        assert_eq!("cnn".parse::<ModelSpec>().unwrap(), ModelSpec::Cnn { channels: vec![16, 32] });
        for bad in ["resnet", "mlp:", "mlp:0", "mlp:a", "cnn:1,2,3,4,5"] {
            assert!(bad.parse::<ModelSpec>().unwrap_err().to_string().contains(&format!("`{bad}`")));
        }
        let model = Model::new(&ModelSpec::default(), digits_shape(), 0, &Device::Cpu).unwrap();
        assert_eq!(model.describe(), "mlp(64-128-10)");
        assert_eq!(model.parameter_count(), 64 * 128 + 128 + 128 * 10 + 10);
        let names: Vec<String> = model.vars().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["fc0.bias", "fc0.weight", "fc1.bias", "fc1.weight"]);
        let deep = Model::new(&"mlp:32,16".parse().unwrap(), digits_shape(), 0, &Device::Cpu).unwrap();
        assert_eq!(deep.describe(), "mlp(64-32-16-10)");
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
        let w = a.tensors().into_iter().find(|(n, _)| n == "fc0.weight").unwrap().1;
        let max = w.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(max <= 0.125 && max > 0.12, "{max}");
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
        let mnist = DatasetShape { features: 784, classes: 10, image: Some(ImageShape { channels: 1, height: 28, width: 28 }) };
        let model = Model::new(&cnn, mnist, 0, &Device::Cpu).unwrap();
        assert_eq!(model.describe(), "cnn(1x28x28-conv16-pool-conv32-pool-10)");
        let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.forward(&x).unwrap().dims(), &[2, 10]);
        let flat = DatasetShape { features: 5, classes: 2, image: None };
        let err = Model::new(&cnn, flat, 0, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("needs image data"), "{err}");
    }

    #[test]
    fn load_tensors_restores_weights_and_rejects_mismatches() {
        let a = Model::new(&ModelSpec::default(), digits_shape(), 1, &Device::Cpu).unwrap();
        let b = Model::new(&ModelSpec::default(), digits_shape(), 2, &Device::Cpu).unwrap();
        let saved: HashMap<String, Tensor> =
            a.tensors().into_iter().map(|(n, t)| (n, t.copy().unwrap())).collect();
        b.load_tensors(&saved).unwrap();
        assert_eq!(weights(&a), weights(&b));

        let mut missing = saved.clone();
        missing.remove("fc1.bias");
        assert!(b.load_tensors(&missing).unwrap_err().to_string().contains("`fc1.bias` is missing"));
        let mut extra = saved.clone();
        extra.insert("fc9.bias".into(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
        assert!(b.load_tensors(&extra).unwrap_err().to_string().contains("unexpected tensor `fc9.bias`"));
        let mut wrong = saved.clone();
        wrong.insert("fc1.bias".into(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
        let err = b.load_tensors(&wrong).unwrap_err().to_string();
        assert!(err.contains("`fc1.bias` is [3] F32, expected [10] F32"), "{err}");
        assert_eq!(weights(&a), weights(&b), "a rejected load changes nothing");
    }

    /// Trains the default MLP on digits; returns validation accuracy and the final weights.
    fn train_digits(epochs: u64) -> (f64, Vec<(String, Vec<u32>)>) {
        let device = Device::Cpu;
        let ds = DataSpec::Digits.load().unwrap();
        let (train, val) = split(&ds, 0.2, 0).unwrap();
        let model = Model::new(&ModelSpec::default(), train.shape(), 0, &device).unwrap();
        let spec: OptimizerSpec = "sgd:momentum=0.9".parse().unwrap();
        let mut opt = Optimizer::new(spec, model.vars(), 0.1).unwrap();
        let data = DeviceData::new(&train, &device).unwrap();
        for epoch in 0..epochs {
            let order = epoch_permutation(data.len(), 0, epoch);
            for batch in data.batches(&order, 32).unwrap() {
                let (x, y) = batch.unwrap();
                let loss = cross_entropy(&model.forward(&x).unwrap(), &y).unwrap();
                opt.step(&loss.backward().unwrap()).unwrap();
            }
        }
        let (_, acc) = evaluate_dataset(&model, &val, 256, &device).unwrap();
        (acc, weights(&model))
    }

    #[test]
    fn mlp_with_sgd_learns_digits_reproducibly() {
        let (acc, w) = train_digits(10);
        assert!(acc > 0.9, "validation accuracy {acc}");
        let (acc2, w2) = train_digits(10);
        assert_eq!((acc, w), (acc2, w2), "same seed, same data: bitwise-identical weights");
    }

    #[test]
    fn evaluate_averages_per_example_over_uneven_batches() {
        let ds = DataSpec::Digits.load().unwrap();
        let model = Model::new(&ModelSpec::default(), ds.shape(), 3, &Device::Cpu).unwrap();
        let data = DeviceData::new(&ds, &Device::Cpu).unwrap();
        let (loss_all, acc_all) = evaluate(&model, &data, 2000).unwrap();
        let (loss, acc) = evaluate(&model, &data, 100).unwrap();
        assert!((loss - loss_all).abs() < 1e-5 && (acc - acc_all).abs() < 1e-12, "{loss} {loss_all}");
        let (x, y) = data.range(0, data.len()).unwrap();
        let logits = model.forward(&x).unwrap();
        assert!((accuracy(&logits, &y).unwrap() - acc).abs() < 1e-12);
    }
}

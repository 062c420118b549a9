//! Loss, accuracy and whole-dataset evaluation.

use candle_core::{D, DType, Device, Tensor};

use super::{Model, ModelError};
use crate::data::{Dataset, DeviceData};

/// Mean cross-entropy of `logits` `[B, K]` against u32 `labels` `[B]`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, labels)
}

/// Number of rows whose arg-max logit equals the label, as an f32 scalar tensor (no device sync).
pub fn correct_count(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    logits
        .argmax(D::Minus1)?
        .eq(labels)?
        .to_dtype(DType::F32)?
        .sum_all()
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
pub fn evaluate(
    model: &Model,
    data: &DeviceData,
    batch_size: usize,
) -> Result<(f64, f64), ModelError> {
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
    Ok((
        loss_sum.to_scalar::<f64>()? / n,
        correct.to_scalar::<f64>()? / n,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataSpec, epoch_permutation, split};
    use crate::model::ModelSpec;
    use crate::optim::{Optimizer, OptimizerSpec};

    use crate::model::tests::weights;

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
        assert_eq!(
            (acc, w),
            (acc2, w2),
            "same seed, same data: bitwise-identical weights"
        );
    }

    #[test]
    fn evaluate_averages_per_example_over_uneven_batches() {
        let ds = DataSpec::Digits.load().unwrap();
        let model = Model::new(&ModelSpec::default(), ds.shape(), 3, &Device::Cpu).unwrap();
        let data = DeviceData::new(&ds, &Device::Cpu).unwrap();
        let (loss_all, acc_all) = evaluate(&model, &data, 2000).unwrap();
        let (loss, acc) = evaluate(&model, &data, 100).unwrap();
        assert!(
            (loss - loss_all).abs() < 1e-5 && (acc - acc_all).abs() < 1e-12,
            "{loss} {loss_all}"
        );
        let (x, y) = data.range(0, data.len()).unwrap();
        let logits = model.forward(&x).unwrap();
        assert!((accuracy(&logits, &y).unwrap() - acc).abs() < 1e-12);
    }
}

//! The maths of a run: the model, its optimizer and the data on the device. Knows nothing of
//! callbacks; the trainer calls it between fixed points.

use candle_core::{D, Tensor};

use super::TrainError;
use crate::checkpoint::LoadedCheckpoint;
use crate::data::{self, DeviceData};
use crate::model::{self, Model};
use crate::optim::Optimizer;

/// What one optimizer step measured.
pub(super) struct StepResult {
    /// The batch's mean loss, before the step.
    pub loss: f64,
    /// Correct predictions in the batch, before the step.
    pub correct: u64,
    /// Global gradient norm of the step.
    pub grad_norm: f64,
    /// The learning rate the step used.
    pub lr: f64,
}

/// Model, optimizer and data of one run.
pub(super) struct Learner {
    pub model: Model,
    pub optimizer: Optimizer,
    train: DeviceData,
    train_labels: Vec<u32>,
    val: DeviceData,
    batch_size: usize,
    seed: u64,
}

impl Learner {
    pub fn new(
        model: Model,
        optimizer: Optimizer,
        train: &data::Dataset,
        val: &data::Dataset,
        batch_size: usize,
        seed: u64,
    ) -> Result<Self, TrainError> {
        let device = model.device().clone();
        Ok(Self {
            train_labels: train.labels().to_vec(),
            train: DeviceData::new(train, &device)?,
            val: DeviceData::new(val, &device)?,
            model,
            optimizer,
            batch_size,
            seed,
        })
    }

    /// Batches of one epoch, as example indices, in the seeded order of that epoch.
    pub fn epoch_batches(&self, epoch: u32) -> Vec<Vec<usize>> {
        let order = data::epoch_permutation(self.train.len(), self.seed, u64::from(epoch));
        order
            .chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// One forward/backward pass and optimizer step on the examples `batch`.
    pub fn step(&mut self, batch: &[usize]) -> Result<StepResult, TrainError> {
        let (x, y) = self.train.batch(batch)?;
        let logits = self.model.forward(&x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        let grads = loss.backward()?;
        let lr = self.optimizer.lr();
        let grad_norm = self.optimizer.step(&grads)?;
        let loss = f64::from(loss.to_scalar::<f32>()?);
        let correct = count_correct(&logits, batch.iter().map(|&i| self.train_labels[i]))?;
        Ok(StepResult {
            loss,
            correct,
            grad_norm,
            lr,
        })
    }

    /// Mean loss and accuracy on the validation set; `None` without one.
    pub fn validate(&self) -> Result<Option<(f64, f64)>, TrainError> {
        if self.val.is_empty() {
            return Ok(None);
        }
        Ok(Some(model::evaluate(
            &self.model,
            &self.val,
            self.batch_size,
        )?))
    }

    /// Replaces the weights with a checkpoint's (the optimizer state stays: a restore rewinds
    /// the model, not the schedule).
    pub fn restore_weights(&mut self, checkpoint: &LoadedCheckpoint) -> Result<(), TrainError> {
        Ok(self.model.load_tensors(&checkpoint.model)?)
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.optimizer.lr()
    }
}

/// Correct predictions in a batch, compared on the host against labels we already hold.
fn count_correct(logits: &Tensor, labels: impl Iterator<Item = u32>) -> candle_core::Result<u64> {
    let predicted = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    Ok(predicted
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == *l)
        .count() as u64)
}

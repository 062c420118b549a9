//! The training loop. Every `emit` is a fixed point: the event goes to the callbacks that asked
//! for it, and their decisions are applied before the next line runs (see `apply.rs`).

use serde_json::{Map, Value, json};

use super::{Interrupt, Observer, Run, TrainError};
use crate::checkpoint::LAST_TAG;
use crate::contract::{
    BatchInfo, BatchMetrics, EpochInfo, EpochMetrics, EventKind, FaultInfo, FaultKind, Outcome,
    TrainEndInfo, ValidationMetrics,
};
use crate::events::{Event, METRIC_NAMES, json_number};

/// Running totals of one epoch.
#[derive(Default)]
struct EpochTotals {
    loss: f64,
    correct: u64,
    samples: u64,
    grad_norm: f64,
    batches: u64,
    non_finite_reported: bool,
}

impl Run {
    /// The epochs, from `train-start` to the last epoch's end. Never inlined, so a profiler can
    /// count whole epochs with and without callbacks.
    #[inline(never)]
    pub(super) fn fit(&mut self, observer: &mut dyn Observer) -> Result<(), TrainError> {
        self.emit(Event::TrainStart(self.info.clone()), observer)?;
        self.restore_callback_states(observer)?;
        while self.progress.epoch < self.config.epochs && !self.stopping() {
            if self.progress.suspend {
                break;
            }
            let epoch = self.progress.epoch;
            let (step, lr) = (self.progress.step, self.learner.lr());
            self.emit(Event::EpochStart(EpochInfo { epoch, step, lr }), observer)?;
            if self.progress.stop.is_some() {
                break;
            }
            let [loss, accuracy, grad_norm] = self.train_epoch(epoch, observer)?;
            let [val_loss, val_accuracy] = self.validate(observer)?;
            let lr = self.learner.lr();
            let values = [loss, accuracy, val_loss, val_accuracy, lr, grad_norm];
            self.finish_epoch(epoch, values, observer)?;
        }
        Ok(())
    }

    /// Runs the batches of one epoch, returning mean loss, accuracy and gradient norm. Returns
    /// early when a callback ends the epoch or stops training. Never inlined (it runs once per
    /// epoch), so a profiler can count it alone against a hand-written loop.
    #[inline(never)]
    fn train_epoch(
        &mut self,
        epoch: u32,
        observer: &mut dyn Observer,
    ) -> Result<[f64; 3], TrainError> {
        let batches = self.info.batches_per_epoch;
        let wants_start = self.callbacks.wants_kind(EventKind::BatchStart);
        let wants_end = self.callbacks.wants_kind(EventKind::BatchEnd);
        let mut totals = EpochTotals::default();
        for (b, chunk) in self.learner.epoch_batches(epoch).iter().enumerate() {
            let batch = b as u32;
            if wants_start {
                let step = self.progress.step;
                self.emit(
                    Event::BatchStart(BatchInfo { epoch, batch, step }),
                    observer,
                )?;
            }
            let result = self.learner.step(chunk)?;
            self.checkpoints.weights_changed();
            // Training moved on from any weights a callback restored.
            self.progress.restored = None;
            self.progress.step += 1;
            let step = self.progress.step;
            let every = u64::from(self.config.log_every);
            if every > 0 && step.is_multiple_of(every) {
                self.files.batch(step, result.loss, result.lr)?;
            }
            totals.loss += result.loss * chunk.len() as f64;
            totals.correct += result.correct;
            totals.samples += chunk.len() as u64;
            totals.grad_norm += result.grad_norm;
            totals.batches += 1;
            if !result.loss.is_finite() && !totals.non_finite_reported {
                totals.non_finite_reported = true;
                let what = if result.loss.is_nan() {
                    "NaN"
                } else {
                    "infinite"
                };
                let info = FaultInfo {
                    kind: FaultKind::NonFiniteLoss,
                    message: format!("loss is {what} at epoch {epoch}, step {step}"),
                    epoch,
                    step,
                };
                self.emit(Event::Fault(info), observer)?;
            }
            if wants_end {
                let metrics = BatchMetrics {
                    epoch,
                    batch,
                    step,
                    loss: result.loss,
                    accuracy: result.correct as f64 / chunk.len() as f64,
                    lr: result.lr,
                    grad_norm: result.grad_norm,
                };
                self.emit(Event::BatchEnd(metrics), observer)?;
            }
            observer.batch_done(epoch, batch, batches);
            self.poll_interrupt(observer);
            if std::mem::take(&mut self.progress.end_epoch) || self.stopping() {
                break;
            }
        }
        if totals.batches == 0 {
            return Ok([f64::NAN; 3]);
        }
        let n = totals.samples as f64;
        Ok([
            totals.loss / n,
            totals.correct as f64 / n,
            totals.grad_norm / totals.batches as f64,
        ])
    }

    /// Validates and announces it; NaNs without a validation set (and no event).
    fn validate(&mut self, observer: &mut dyn Observer) -> Result<[f64; 2], TrainError> {
        let Some((event, values)) = self.measure_validation()? else {
            return Ok([f64::NAN; 2]);
        };
        self.emit(event, observer)?;
        Ok(values)
    }

    /// Runs validation; its `validation-end` event and values, `None` without a validation set.
    pub(super) fn measure_validation(&mut self) -> Result<Option<(Event, [f64; 2])>, TrainError> {
        let Some((val_loss, val_accuracy)) = self.learner.validate()? else {
            return Ok(None);
        };
        let event = Event::ValidationEnd(ValidationMetrics {
            epoch: self.progress.epoch,
            step: self.progress.step,
            val_loss,
            val_accuracy,
        });
        Ok(Some((event, [val_loss, val_accuracy])))
    }

    /// Announces the end of an epoch, records its metrics (with callbacks' custom metrics) and
    /// writes the `last` checkpoint.
    fn finish_epoch(
        &mut self,
        epoch: u32,
        values: [f64; 6],
        observer: &mut dyn Observer,
    ) -> Result<(), TrainError> {
        // The epoch's training and validation are done: checkpoints from here on hold it.
        self.progress.epochs_done = epoch + 1;
        let step = self.progress.step;
        let metrics = EpochMetrics {
            epoch,
            step,
            values: values.to_vec(),
        };
        self.emit(Event::EpochEnd(metrics), observer)?;
        let mut line = Map::new();
        line.insert("epoch".into(), json!(epoch));
        line.insert("step".into(), json!(step));
        for (name, value) in METRIC_NAMES.iter().zip(&values) {
            line.insert((*name).into(), json_number(*value));
        }
        for (k, v) in std::mem::take(&mut self.progress.custom_metrics) {
            line.entry(k).or_insert(v);
        }
        let line = Value::Object(line);
        self.files.metrics(&line)?;
        observer.epoch_done(epoch, &line);
        self.progress.last_metrics = line;
        // Logs reach the OS before the checkpoint that covers them, so a crash never leaves a
        // checkpoint whose epoch has no metrics line.
        self.files.flush(false)?;
        // A checkpoint that failed to write (a full disk) ends the run here.
        self.checkpoints.check()?;
        self.poll_interrupt(observer);
        let done = self.progress.epochs_done;
        let pausing = self.progress.suspend && !self.stopping();
        if (done.is_multiple_of(self.config.checkpoint_every) || pausing)
            && done < self.config.epochs
            && self.progress.stop.is_none()
        {
            self.save_checkpoint(LAST_TAG, observer, true)?;
        }
        // With any checkpoint the callbacks asked for at `epoch-end`, as one group.
        self.checkpoints.commit()?;
        self.progress.epoch = epoch + 1;
        Ok(())
    }

    /// Announces the end of training and writes the final `last` checkpoint; every checkpoint is
    /// on disk when this returns.
    pub(super) fn finish(
        &mut self,
        outcome: &Outcome,
        observer: &mut dyn Observer,
    ) -> Result<(), TrainError> {
        let end = Event::TrainEnd(TrainEndInfo {
            outcome: outcome.clone(),
            epoch: self.progress.epochs_done,
            step: self.progress.step,
        });
        self.emit(end, observer)?;
        self.save_checkpoint(LAST_TAG, observer, false)?;
        Ok(self.checkpoints.wait()?)
    }

    /// Takes in a request from outside the run ([`Observer::interrupt`]); a cancel stops like a
    /// callback's stop, with its reason, and the first reason stands.
    fn poll_interrupt(&mut self, observer: &mut dyn Observer) {
        match observer.interrupt() {
            Some(Interrupt::Cancel(reason)) if self.progress.stop.is_none() => {
                self.progress.stop = Some(reason);
                self.progress.cancelled = true;
            }
            Some(Interrupt::Suspend) => self.progress.suspend = true,
            _ => {}
        }
    }

    /// Whether a callback stopped training or a critical one faulted.
    pub(super) fn stopping(&self) -> bool {
        self.progress.stop.is_some() || self.callbacks.abort_requested().is_some()
    }
}

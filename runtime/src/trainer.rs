//! The training loop: candle does the maths, callbacks observe through events, and their
//! decisions are applied only at fixed points (see `docs/decisions.md`):
//!
//! - before the first step of an epoch (answers to `epoch-start`),
//! - before a step (answers to `batch-start`) and after it (answers to `batch-end`),
//! - after validation (answers to `validation-end`) and after the epoch (answers to `epoch-end`),
//! - at the end of training (answers to `train-end`), before the final checkpoint.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{D, Tensor};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::config::{ConfigError, TrainConfig};
use crate::contract::{
    BatchInfo, BatchMetrics, EpochInfo, EpochMetrics, EventKind, FaultInfo,
    FaultKind as EventFaultKind, Outcome, RunInfo, TrainEndInfo, ValidationMetrics,
};
use crate::data::{self, DeviceData};
use crate::decision::LAST_TAG;
use crate::events::{Event, outcome_parts};
use crate::host::{CallbackHost, CallbackReport, FaultRecord};
use crate::model::Model;
use crate::optim::Optimizer;
use crate::rundir::{JsonLines, RunDirError, atomic_write_json};
use crate::sandbox::{LogLine, Sandbox};

/// Metric names announced at train-start; `epoch-metrics.values` follow this order.
pub const METRIC_NAMES: [&str; 6] = [
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "grad_norm",
];

/// Errors that keep a run from starting or finishing its bookkeeping.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A callback could not be loaded or started.
    #[error(transparent)]
    Callback(#[from] crate::callback::CallbackError),
    /// The data could not be loaded.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// The model could not be built or restored.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The run directory could not be written or read.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// The optimizer could not be built or restored.
    #[error(transparent)]
    Optim(#[from] crate::optim::OptimError),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    /// `--resume` pointed at something that is not a resumable run.
    #[error("cannot resume {path}: {message}")]
    Resume {
        /// The run directory.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// A new run would overwrite an existing one.
    #[error(
        "run directory {0} already holds a run; pass --resume {0} to continue it, or choose another --run-dir"
    )]
    RunDirExists(PathBuf),
}

/// What the trainer reports while it runs (progress bars, logs). Every method has a no-op default.
pub trait Observer {
    /// Training is about to start.
    fn started(&mut self, _info: &RunInfo, _run_dir: &Path) {}
    /// A batch finished.
    fn batch_done(&mut self, _epoch: u32, _batch: u32, _batches: u32) {}
    /// An epoch finished; `metrics` is its `metrics.jsonl` line.
    fn epoch_done(&mut self, _epoch: u32, _metrics: &Value) {}
    /// A callback logged a line.
    fn callback_log(&mut self, _callback: &str, _line: &LogLine) {}
    /// A callback faulted.
    fn callback_fault(&mut self, _fault: &FaultRecord) {}
}

/// An [`Observer`] that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

/// How a run ended, as written to `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// `completed`, `stopped` or `failed`.
    pub outcome: String,
    /// Why it stopped or failed (who stopped it, and their reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Epochs completed in total.
    pub epochs_completed: u32,
    /// Optimizer steps taken in total.
    pub steps: u64,
    /// The last epoch's metrics.
    pub final_metrics: Value,
    /// The run directory.
    pub run_dir: PathBuf,
    /// Wall-clock seconds of this invocation.
    pub wall_time_s: f64,
    /// Per-callback statistics.
    pub callbacks: Vec<CallbackReport>,
}

/// A run to start: a validated config and where it lives.
pub struct RunRequest {
    /// The run's configuration.
    pub config: TrainConfig,
    /// The run directory.
    pub run_dir: PathBuf,
    /// Continue the run in `run_dir` from its `last` checkpoint.
    pub resume: bool,
}

/// Trains a model as `request` says, with callbacks in `sandbox`. Returns the summary also when
/// training failed mid-way (outcome `failed`); `Err` means the run could not start or its files
/// could not be written.
pub fn train(
    sandbox: Arc<Sandbox>,
    request: RunRequest,
    observer: &mut dyn Observer,
) -> Result<RunSummary, TrainError> {
    let mut run = Run::prepare(sandbox, request)?;
    run.execute(observer)
}

/// Reads the configuration a run directory was started with.
pub fn load_run_config(run_dir: &Path) -> Result<TrainConfig, TrainError> {
    let path = run_dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::Resume {
        path: run_dir.to_path_buf(),
        message: format!(
            "cannot read {}: {e} (is this a trainrt run directory?)",
            path.display()
        ),
    })?;
    serde_json::from_str(&text).map_err(|e| TrainError::Resume {
        path: run_dir.to_path_buf(),
        message: format!("invalid config.json: {e}"),
    })
}

struct Files {
    metrics: JsonLines,
    events: JsonLines,
    decisions: JsonLines,
    faults: JsonLines,
    log: JsonLines,
}

struct Run {
    config: TrainConfig,
    run_dir: PathBuf,
    train: DeviceData,
    val: DeviceData,
    train_labels: Vec<u32>,
    model: Model,
    optimizer: Optimizer,
    host: CallbackHost,
    files: Files,
    info: RunInfo,
    /// The current epoch's index (after the loop: the number of epochs run).
    epoch: u32,
    /// Epochs fully trained and validated: where a resume from the next checkpoint starts.
    epochs_done: u32,
    step: u64,
    stop: Option<String>,
    known_tags: BTreeSet<String>,
    end_epoch_requested: bool,
    custom_metrics: Map<String, Value>,
    last_metrics: Value,
    resumed_states: Vec<(String, Vec<u8>)>,
    /// Writes checkpoints while training goes on; its failures are fatal at the next fixed point.
    writer: crate::checkpoint::Writer,
    /// The latest checkpoint serialized, with its metadata, while the tensors it holds are
    /// still the model's and the optimizer's: a save of the same state under another tag (an
    /// epoch's `best`, then its `last`) reuses the bytes. Cleared wherever those tensors change
    /// (a training step, a restore).
    latest_encoding: Option<(
        crate::checkpoint::CheckpointMeta,
        crate::checkpoint::Encoded,
    )>,
}

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

mod answers;
mod setup;

impl Run {
    fn execute(&mut self, observer: &mut dyn Observer) -> Result<RunSummary, TrainError> {
        let started = Instant::now();
        observer.started(&self.info, &self.run_dir);
        let result = self.train_loop(observer);
        let outcome = match (&result, &self.stop) {
            (Err(e), _) => Outcome::Failed(crate::error_chain(e)),
            (Ok(()), _) if self.host.abort_requested().is_some() => {
                let f = self.host.abort_requested().cloned();
                Outcome::Failed(
                    f.map(|f| {
                        format!(
                            "critical callback {} faulted ({}): {}",
                            f.callback, f.kind, f.message
                        )
                    })
                    .unwrap_or_default(),
                )
            }
            (Ok(()), Some(reason)) => Outcome::Stopped(reason.clone()),
            (Ok(()), None) => Outcome::Completed,
        };
        // The end is reported and the final checkpoint written whatever happened above.
        let end = Event::TrainEnd(TrainEndInfo {
            outcome: outcome.clone(),
            epoch: self.epochs_done,
            step: self.step,
        });
        let end_result = self
            .emit(&end, observer)
            .and_then(|()| self.save_checkpoint(LAST_TAG, observer, false))
            // Every checkpoint is on disk before the summary says the run is over.
            .and_then(|()| Ok(self.writer.wait()?));
        let (name, reason) = outcome_parts(&outcome);
        let summary = RunSummary {
            outcome: name.into(),
            reason: reason.map(str::to_string),
            epochs_completed: self.epochs_done,
            steps: self.step,
            final_metrics: self.last_metrics.clone(),
            run_dir: self.run_dir.clone(),
            wall_time_s: started.elapsed().as_secs_f64(),
            callbacks: self.host.reports(),
        };
        self.flush(true)?;
        atomic_write_json(&self.run_dir.join("summary.json"), &summary)?;
        end_result?;
        Ok(summary)
    }

    /// The epochs, from `train-start` to the last epoch's end. Never inlined, so a profiler can
    /// count whole epochs with and without callbacks.
    #[inline(never)]
    fn train_loop(&mut self, observer: &mut dyn Observer) -> Result<(), TrainError> {
        let start = Event::TrainStart(self.info.clone());
        self.emit(&start, observer)?;
        if !self.resumed_states.is_empty() {
            let states = std::mem::take(&mut self.resumed_states);
            self.host.restore_all(&states, self.epoch, self.step);
            self.after_dispatch(observer)?;
        }
        while self.epoch < self.config.epochs
            && self.stop.is_none()
            && self.host.abort_requested().is_none()
        {
            let epoch = self.epoch;
            let lr = self.optimizer.lr();
            self.emit(
                &Event::EpochStart(EpochInfo {
                    epoch,
                    step: self.step,
                    lr,
                }),
                observer,
            )?;
            if self.stop.is_some() {
                break;
            }
            let (loss, accuracy, grad_norm) = self.train_epoch(epoch, observer)?;
            let (val_loss, val_accuracy) = self.validate(observer)?;
            let values = [
                loss,
                accuracy,
                val_loss,
                val_accuracy,
                self.optimizer.lr(),
                grad_norm,
            ];
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
    ) -> Result<(f64, f64, f64), TrainError> {
        let order = data::epoch_permutation(self.train.len(), self.config.seed, u64::from(epoch));
        let batch_size = self.config.batch_size as usize;
        let batches = self.info.batches_per_epoch;
        let wants_start = self.host.wants_kind(EventKind::BatchStart);
        let wants_end = self.host.wants_kind(EventKind::BatchEnd);
        let mut totals = EpochTotals::default();
        for (b, chunk) in order.chunks(batch_size).enumerate() {
            let batch = b as u32;
            if wants_start {
                self.emit(
                    &Event::BatchStart(BatchInfo {
                        epoch,
                        batch,
                        step: self.step,
                    }),
                    observer,
                )?;
            }
            let (x, y) = self.train.batch(chunk)?;
            let logits = self.model.forward(&x)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let grads = loss.backward()?;
            let lr = self.optimizer.lr();
            self.latest_encoding = None;
            let grad_norm = self.optimizer.step(&grads)?;
            self.step += 1;
            let loss_value = f64::from(loss.to_scalar::<f32>()?);
            let correct = count_correct(&logits, chunk.iter().map(|&i| self.train_labels[i]))?;
            totals.loss += loss_value * chunk.len() as f64;
            totals.correct += correct;
            totals.samples += chunk.len() as u64;
            totals.grad_norm += grad_norm;
            totals.batches += 1;
            if !loss_value.is_finite() && !totals.non_finite_reported {
                totals.non_finite_reported = true;
                let info = FaultInfo {
                    kind: EventFaultKind::NonFiniteLoss,
                    message: format!(
                        "loss is {} at epoch {epoch}, step {}",
                        if loss_value.is_nan() {
                            "NaN"
                        } else {
                            "infinite"
                        },
                        self.step
                    ),
                    epoch,
                    step: self.step,
                };
                self.emit(&Event::Fault(info), observer)?;
            }
            if wants_end {
                let metrics = BatchMetrics {
                    epoch,
                    batch,
                    step: self.step,
                    loss: loss_value,
                    accuracy: correct as f64 / chunk.len() as f64,
                    lr,
                    grad_norm,
                };
                self.emit(&Event::BatchEnd(metrics), observer)?;
            }
            observer.batch_done(epoch, batch, batches);
            if self.take_end_epoch() || self.stop.is_some() || self.host.abort_requested().is_some()
            {
                break;
            }
        }
        if totals.batches == 0 {
            return Ok((f64::NAN, f64::NAN, f64::NAN));
        }
        let n = totals.samples as f64;
        Ok((
            totals.loss / n,
            totals.correct as f64 / n,
            totals.grad_norm / totals.batches as f64,
        ))
    }

    fn validate(&mut self, observer: &mut dyn Observer) -> Result<(f64, f64), TrainError> {
        if self.val.is_empty() {
            return Ok((f64::NAN, f64::NAN));
        }
        let (loss, accuracy) =
            crate::model::evaluate(&self.model, &self.val, self.config.batch_size as usize)?;
        let event = Event::ValidationEnd(ValidationMetrics {
            epoch: self.epoch,
            step: self.step,
            val_loss: loss,
            val_accuracy: accuracy,
        });
        self.emit(&event, observer)?;
        Ok((loss, accuracy))
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
        self.epochs_done = epoch + 1;
        self.emit(
            &Event::EpochEnd(EpochMetrics {
                epoch,
                step: self.step,
                values: values.to_vec(),
            }),
            observer,
        )?;
        let mut line = Map::new();
        line.insert("epoch".into(), json!(epoch));
        line.insert("step".into(), json!(self.step));
        for (name, value) in METRIC_NAMES.iter().zip(&values) {
            line.insert((*name).into(), json_num(*value));
        }
        for (k, v) in std::mem::take(&mut self.custom_metrics) {
            if !line.contains_key(&k) {
                line.insert(k, v);
            }
        }
        let line = Value::Object(line);
        self.files.metrics.append(&line)?;
        observer.epoch_done(epoch, &line);
        self.last_metrics = line;
        // Logs reach the OS before the checkpoint that covers them, so a crash never leaves a
        // checkpoint whose epoch has no metrics line.
        self.flush(false)?;
        // A checkpoint that failed to write (a full disk) ends the run here.
        self.writer.check()?;
        if self
            .epochs_done
            .is_multiple_of(self.config.checkpoint_every)
            && self.epochs_done < self.config.epochs
            && self.stop.is_none()
        {
            self.save_checkpoint(LAST_TAG, observer, true)?;
        }
        // With any checkpoint the callbacks asked for at `epoch-end`, as one group.
        self.writer.commit()?;
        self.epoch = epoch + 1;
        Ok(())
    }

    /// Hands the logs to the OS; with `durable`, also waits for the disk.
    fn flush(&mut self, durable: bool) -> Result<(), TrainError> {
        for f in [
            &mut self.files.metrics,
            &mut self.files.events,
            &mut self.files.decisions,
            &mut self.files.faults,
            &mut self.files.log,
        ] {
            if durable { f.sync()? } else { f.flush()? }
        }
        Ok(())
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

/// A float for `metrics.jsonl`: non-finite values are kept as strings.
fn json_num(v: f64) -> Value {
    serde_json::to_value(crate::events::FloatJson(v)).unwrap_or(Value::Null)
}

//! Training with callbacks: candle does the maths ([`learner`](self)), callbacks observe through
//! events, and their decisions are applied only at fixed points (see `docs/decisions.md` and
//! `fit.rs`, where the loop is):
//!
//! - before the first step of an epoch (answers to `epoch-start`),
//! - before a step (answers to `batch-start`) and after it (answers to `batch-end`),
//! - after validation (answers to `validation-end`) and after the epoch (answers to `epoch-end`),
//! - at the end of training (answers to `train-end`), before the final checkpoint.
//!
//! A run is a handful of parts, each the one owner of its concept: the [`TrainConfig`], the
//! `Learner` (model, optimizer, data), the [`CallbackHost`], the `RunFiles` (JSON-lines files),
//! the [`CheckpointSaver`] and the `Progress` (where the run is, and what callbacks asked for).

mod apply;
mod fit;
mod learner;
mod run_files;
mod setup;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::checkpoint::CheckpointSaver;
use crate::config::{ConfigError, TrainConfig};
use crate::contract::{Outcome, RunInfo};
use crate::decision::DecisionRecord;
use crate::host::{CallbackHost, CallbackReport, FaultRecord};
use crate::rundir::RunDirError;
use crate::sandbox::{LogLine, Sandbox};

use self::learner::Learner;
use self::run_files::RunFiles;

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
    /// Callbacks' decisions at one fixed point, with what became of each (`decisions.jsonl`).
    fn decisions(&mut self, _records: &[DecisionRecord]) {}
    /// Whether someone outside the run asks it to stop or pause: polled after every step and at
    /// the end of every epoch (a service cancelling a job, a signal).
    fn interrupt(&mut self) -> Option<Interrupt> {
        None
    }
}

/// A request from outside the run, applied at the trainer's fixed points like a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interrupt {
    /// Stop after the current step, as a callback's stop would (validation, `train-end` with a
    /// `stopped` outcome carrying the reason, the final `last` checkpoint); the run ends
    /// `cancelled`.
    Cancel(String),
    /// Pause at the end of the current epoch, once its `last` checkpoint is on disk, without
    /// `train-end`: `--resume` continues the run exactly where it paused. The run ends
    /// `suspended`. Ignored once the last epoch has started.
    Suspend,
}

/// An [`Observer`] that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    /// Every planned epoch ran.
    Completed,
    /// A callback stopped training.
    Stopped,
    /// Training failed, or a critical callback faulted.
    Failed,
    /// Stopped from outside ([`Interrupt::Cancel`]).
    Cancelled,
    /// Paused at an epoch boundary ([`Interrupt::Suspend`]); `--resume` continues it.
    Suspended,
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Completed => "completed",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Suspended => "suspended",
        })
    }
}

impl From<&Outcome> for RunOutcome {
    fn from(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Completed => Self::Completed,
            Outcome::Stopped(_) => Self::Stopped,
            Outcome::Failed(_) => Self::Failed,
        }
    }
}

/// How a run ended, as written to `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Completed, stopped or failed.
    pub outcome: RunOutcome,
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
    /// Set when the run ends on weights a callback restored after the last training step (e.g.
    /// the best epoch's, at `train-end`): `final_metrics` were measured before that restore, so
    /// these say which weights the run ended with, validated again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_weights: Option<RestoredWeights>,
}

/// Weights restored from a checkpoint after the last training step: what the run ends with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestoredWeights {
    /// The checkpoint's tag.
    pub tag: String,
    /// The callback whose decision restored it.
    pub by: String,
    /// Epochs completed when the checkpoint was saved.
    pub epochs_completed: u32,
    /// Optimizer steps taken when the checkpoint was saved.
    pub step: u64,
    /// Validation loss of the restored weights, measured after the run (none without a
    /// validation set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Validation accuracy of the restored weights, measured likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
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

/// A run in progress: the handful of parts it is made of.
struct Run {
    config: TrainConfig,
    /// What `train-start` announces (also the console's header).
    info: RunInfo,
    learner: Learner,
    callbacks: CallbackHost,
    files: RunFiles,
    checkpoints: CheckpointSaver,
    progress: Progress,
}

/// Where the run is, and what callbacks asked for that the loop has not acted on yet.
#[derive(Default)]
struct Progress {
    /// The current epoch's index (after the loop: the number of epochs run).
    epoch: u32,
    /// Epochs fully trained and validated: where a resume from the next checkpoint starts.
    epochs_done: u32,
    /// Optimizer steps taken since the start of the run.
    step: u64,
    /// Why a callback stopped training (the first reason given).
    stop: Option<String>,
    /// A callback asked to end the current epoch after this step.
    end_epoch: bool,
    /// Custom metrics logged by callbacks for the current epoch's `metrics.jsonl` line.
    custom_metrics: Map<String, Value>,
    /// The last epoch's `metrics.jsonl` line.
    last_metrics: Value,
    /// Callback states from the checkpoint a resumed run starts from, restored at `train-start`.
    resumed_states: Vec<(String, Vec<u8>)>,
    /// The checkpoint a callback restored since the last training step, if any.
    restored: Option<RestoredWeights>,
    /// Stopped by [`Interrupt::Cancel`] (the reason is in `stop`).
    cancelled: bool,
    /// [`Interrupt::Suspend`] was asked for: pause at the end of this epoch.
    suspend: bool,
}

impl Run {
    /// Runs the loop, then always: `train-end`, the final `last` checkpoint, the summary.
    fn execute(&mut self, observer: &mut dyn Observer) -> Result<RunSummary, TrainError> {
        let started = Instant::now();
        observer.started(&self.info, self.files.dir());
        let result = self.fit(observer);
        if result.is_ok() && self.suspending() {
            return self.suspend(started);
        }
        let outcome = match (&result, &self.progress.stop) {
            (Err(e), _) => Outcome::Failed(crate::error_chain(e)),
            (Ok(()), _) if self.callbacks.abort_requested().is_some() => Outcome::Failed(
                self.callbacks
                    .abort_requested()
                    .map_or_else(String::new, |f| {
                        format!(
                            "critical callback {} faulted ({}): {}",
                            f.callback, f.kind, f.message
                        )
                    }),
            ),
            (Ok(()), Some(reason)) => Outcome::Stopped(reason.clone()),
            (Ok(()), None) => Outcome::Completed,
        };
        let end_result = self.finish(&outcome, observer);
        let final_weights = match self.progress.restored.take() {
            Some(mut restored) if end_result.is_ok() => {
                // Best effort: a validation that fails here leaves the figures out, not the
                // summary.
                if let Ok(Some((loss, accuracy))) = self.learner.validate() {
                    (restored.val_loss, restored.val_accuracy) = (Some(loss), Some(accuracy));
                }
                Some(restored)
            }
            _ => None,
        };
        let cancelled = self.progress.cancelled && matches!(outcome, Outcome::Stopped(_));
        let summary = RunSummary {
            outcome: if cancelled {
                RunOutcome::Cancelled
            } else {
                RunOutcome::from(&outcome)
            },
            reason: match outcome {
                Outcome::Completed => None,
                Outcome::Stopped(reason) | Outcome::Failed(reason) => Some(reason),
            },
            epochs_completed: self.progress.epochs_done,
            steps: self.progress.step,
            final_metrics: self.progress.last_metrics.clone(),
            run_dir: self.files.dir().to_path_buf(),
            wall_time_s: started.elapsed().as_secs_f64(),
            callbacks: self.callbacks.reports(),
            final_weights,
        };
        self.files.flush(true)?;
        self.files.summary(&summary)?;
        end_result?;
        Ok(summary)
    }

    /// Whether the loop ended to pause: asked to, with epochs left and nothing else ending it.
    fn suspending(&self) -> bool {
        self.progress.suspend && self.progress.epoch < self.config.epochs && !self.stopping()
    }

    /// Ends an invocation paused at an epoch boundary: its `last` checkpoint is on disk (saved
    /// by `finish_epoch`), callbacks hear no `train-end`, and `--resume` continues.
    fn suspend(&mut self, started: Instant) -> Result<RunSummary, TrainError> {
        self.checkpoints.wait()?;
        let summary = RunSummary {
            outcome: RunOutcome::Suspended,
            reason: Some(format!(
                "suspended after epoch {}; resume continues from its checkpoint",
                self.progress.epochs_done
            )),
            epochs_completed: self.progress.epochs_done,
            steps: self.progress.step,
            final_metrics: self.progress.last_metrics.clone(),
            run_dir: self.files.dir().to_path_buf(),
            wall_time_s: started.elapsed().as_secs_f64(),
            callbacks: self.callbacks.reports(),
            final_weights: None,
        };
        self.files.flush(true)?;
        self.files.summary(&summary)?;
        Ok(summary)
    }
}

//! Preparing a run: checking everything the user gave, loading data, model, optimizer and
//! callbacks, and, for `--resume`, the last checkpoint. The run directory appears only once all
//! of that succeeded.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::learner::Learner;
use super::run_files::RunFiles;
use super::{Progress, Run, RunRequest, TrainError};
use crate::checkpoint::{self, CheckpointSaver, LAST_TAG};
use crate::contract::RunInfo;
use crate::data;
use crate::events::METRIC_NAMES;
use crate::host::CallbackHost;
use crate::model::Model;
use crate::optim::Optimizer;
use crate::rundir::{RunDirError, atomic_write_json};
use crate::sandbox::Sandbox;

impl Run {
    pub(super) fn prepare(sandbox: Arc<Sandbox>, request: RunRequest) -> Result<Self, TrainError> {
        let RunRequest {
            config,
            run_dir,
            resume,
        } = request;
        config.validate()?;
        let checkpoints = run_dir.join("checkpoints");
        if !resume && run_dir.join("config.json").exists() {
            return Err(TrainError::RunDirExists(run_dir));
        }
        let device = crate::device::open(config.device)?;
        let dataset = config.data.load()?;
        let (train_set, val_set) = data::split(&dataset, config.val_fraction, config.seed)?;
        let model = Model::new(&config.model, dataset.shape(), config.seed, &device)?;
        let mut optimizer = Optimizer::new(config.optimizer, model.vars(), config.lr)?;

        let mut epoch = 0;
        let mut step = 0;
        let mut resumed_states = Vec::new();
        if resume {
            let path = checkpoints.join(format!("{LAST_TAG}.safetensors"));
            if !path.exists() {
                return Err(TrainError::Resume {
                    path: run_dir,
                    message: "it has no checkpoints/last.safetensors yet".into(),
                });
            }
            let ckpt = checkpoint::load(&path)?;
            crate::rundir::remove_stale_temp_files(&run_dir);
            crate::rundir::remove_stale_temp_files(&checkpoints);
            model.load_tensors(&ckpt.model)?;
            optimizer.load_state(&ckpt.optimizer)?;
            optimizer.set_lr(ckpt.meta.lr);
            epoch = ckpt.meta.epoch;
            step = ckpt.meta.step;
            resumed_states = ckpt
                .meta
                .callback_states
                .iter()
                .map(|s| (s.name.clone(), s.state.clone()))
                .collect();
        }
        let callbacks = CallbackHost::start(sandbox, &config.callbacks)?;
        // Only now that everything the user gave us has been checked does the run directory
        // appear: a run that cannot start leaves nothing behind.
        std::fs::create_dir_all(&checkpoints)
            .map_err(|e| RunDirError::io("cannot create run directory", &checkpoints, e))?;
        atomic_write_json(&run_dir.join("config.json"), &config)?;
        if resume {
            // A crash after an epoch's metrics line but before its checkpoint leaves lines for
            // epochs that will run again: keep only the epochs the checkpoint holds.
            drop_metrics_from(&run_dir.join("metrics.jsonl"), epoch)?;
        }
        let files = RunFiles::open(&run_dir, resume.then_some(step))?;
        let batch = config.batch_size as usize;
        let info = RunInfo {
            run_name: config.name.clone(),
            model: model.describe(),
            parameter_count: model.parameter_count() as u64,
            dataset: dataset.name().to_string(),
            train_samples: train_set.len() as u64,
            validation_samples: val_set.len() as u64,
            epochs: config.epochs,
            batch_size: config.batch_size,
            batches_per_epoch: train_set.len().div_ceil(batch) as u32,
            optimizer: config.optimizer.to_string(),
            initial_lr: config.lr,
            seed: config.seed,
            metric_names: METRIC_NAMES.iter().map(|s| s.to_string()).collect(),
            start_epoch: epoch,
            start_step: step,
        };
        let learner = Learner::new(model, optimizer, &train_set, &val_set, batch, config.seed)?;
        Ok(Self {
            checkpoints: CheckpointSaver::open(&checkpoints)?,
            progress: Progress {
                epoch,
                epochs_done: epoch,
                step,
                last_metrics: Value::Null,
                resumed_states,
                ..Progress::default()
            },
            config,
            info,
            learner,
            callbacks,
            files,
        })
    }
}

/// Rewrites `metrics.jsonl` without the lines of epochs `from` and later.
fn drop_metrics_from(path: &Path, from: u32) -> Result<(), RunDirError> {
    if !path.exists() {
        return Ok(());
    }
    let lines: Vec<Value> = crate::rundir::read_json_lines(path)?;
    let keep: Vec<&Value> = lines
        .iter()
        .filter(|l| l["epoch"].as_u64().is_some_and(|e| e < u64::from(from)))
        .collect();
    if keep.len() == lines.len()
        && std::fs::read(path)
            .map(|b| b.ends_with(b"\n"))
            .unwrap_or(true)
    {
        return Ok(());
    }
    let mut text = String::new();
    for l in keep {
        text.push_str(&l.to_string());
        text.push('\n');
    }
    crate::rundir::atomic_write(path, text.as_bytes())
}

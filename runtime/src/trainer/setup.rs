//! Preparing a run: checking everything the user gave, loading data, model, optimizer and
//! callbacks, and, for `--resume`, the last checkpoint. The run directory appears only once all
//! of that succeeded.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Files, METRIC_NAMES, Run, RunRequest, TrainError};
use crate::checkpoint;
use crate::config::ConfigError;
use crate::contract::RunInfo;
use crate::data::{self, DataSpec, DeviceData};
use crate::decision::LAST_TAG;
use crate::host::CallbackHost;
use crate::model::{Model, ModelSpec};
use crate::optim::{Optimizer, OptimizerSpec};
use crate::rundir::{JsonLines, RunDirError, atomic_write_json};
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
        let spec =
            crate::device::parse(&config.device).map_err(|message| ConfigError::Invalid {
                field: "device",
                message,
            })?;
        let device = crate::device::open(spec)?;
        let data_spec: DataSpec = config.data.parse()?;
        let dataset = data_spec.load()?;
        let (train_set, val_set) = data::split(&dataset, config.val_fraction, config.seed)?;
        let model_spec: ModelSpec = config.model.parse()?;
        let model = Model::new(&model_spec, dataset.shape(), config.seed, &device)?;
        let opt_spec: OptimizerSpec = config.optimizer.parse()?;
        let mut optimizer = Optimizer::new(opt_spec, model.vars(), config.lr)?;

        let mut epoch = 0;
        let mut step = 0;
        let mut resumed_states = Vec::new();
        let mut known_tags = existing_tags(&checkpoints);
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
        known_tags.remove(LAST_TAG);

        let host = CallbackHost::start(sandbox, &config.callback_options()?)?;
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
        let files = Files {
            metrics: JsonLines::open_append(&run_dir.join("metrics.jsonl"))?,
            events: JsonLines::open_append(&run_dir.join("events.jsonl"))?,
            decisions: JsonLines::open_append(&run_dir.join("decisions.jsonl"))?,
            faults: JsonLines::open_append(&run_dir.join("faults.jsonl"))?,
            log: JsonLines::open_append(&run_dir.join("log.jsonl"))?,
        };
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
            optimizer: config.optimizer.clone(),
            initial_lr: config.lr,
            seed: config.seed,
            metric_names: METRIC_NAMES.iter().map(|s| s.to_string()).collect(),
            start_epoch: epoch,
            start_step: step,
        };
        Ok(Self {
            train_labels: train_set.labels().to_vec(),
            train: DeviceData::new(&train_set, &device)?,
            val: DeviceData::new(&val_set, &device)?,
            config,
            run_dir,
            model,
            optimizer,
            host,
            files,
            info,
            epoch,
            epochs_done: epoch,
            step,
            stop: None,
            known_tags,
            end_epoch_requested: false,
            custom_metrics: Map::new(),
            last_metrics: Value::Null,
            resumed_states,
            writer: checkpoint::Writer::new()?,
            latest_encoding: None,
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

/// Tags of the checkpoints already in a run directory.
fn existing_tags(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".safetensors"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

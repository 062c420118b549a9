//! `trainrt run`: train a model with callbacks.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use trainrt::TrainConfig;
use trainrt::config::apply_sandbox_flags;
use trainrt::data::DataSpec;
use trainrt::device::DeviceSpec;
use trainrt::model::ModelSpec;
use trainrt::optim::OptimizerSpec;
use trainrt::trainer::{self, RunOutcome, RunRequest, TrainError};

use crate::Failure;
use crate::output::Console;

/// Flags override the config file, which overrides the defaults.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    settings: RunSettings,
    /// Continue the run in DIR from its last checkpoint, with callback state restored.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "run_dir"])]
    resume: Option<PathBuf>,
    /// Run directory (default: `runs/<name>`).
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// CPU threads for tensor maths (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print machine-readable JSON lines on stdout instead of progress output.
    #[arg(long)]
    json: bool,
}

/// The settings of a run, as flags: what `trainrt run` and `trainrt remote submit` share.
#[derive(Args)]
pub struct RunSettings {
    /// TOML file with run settings and callbacks.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run name (default: from the config, else `digits-mlp`).
    #[arg(long)]
    name: Option<String>,
    /// Model: `mlp`, `mlp:256,128` (hidden sizes) or `cnn`.
    #[arg(long)]
    model: Option<ModelSpec>,
    /// Data: `digits` (embedded), `csv:PATH` or `synthetic:samples=N,features=F,classes=C`.
    #[arg(long)]
    data: Option<DataSpec>,
    /// Epochs to train, in total.
    #[arg(long)]
    epochs: Option<u32>,
    /// Samples per batch.
    #[arg(long)]
    batch_size: Option<u32>,
    /// Initial learning rate.
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Optimizer: `sgd[:momentum=M,weight_decay=W,nesterov=B]` or
    /// `adamw[:beta1=B1,beta2=B2,eps=E,weight_decay=W]` (default `sgd:momentum=0.9`).
    #[arg(long)]
    optimizer: Option<OptimizerSpec>,
    /// Seed for initialisation, split and batch order.
    #[arg(long)]
    seed: Option<u64>,
    /// Device: `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[arg(long)]
    device: Option<DeviceSpec>,
    /// Fraction of the data held out for validation.
    #[arg(long)]
    val_fraction: Option<f64>,
    /// Write the training loss and learning rate to TensorBoard every N steps (0: epoch metrics
    /// only; default 10).
    #[arg(long, value_name = "N")]
    log_every: Option<u32>,
    /// A callback: a bundled name or a `.wasm` path, with `:key=value,...` parameters. Repeat for
    /// more; they run in this order, after any from the config file.
    #[arg(long = "callback", value_name = "SPEC")]
    callbacks: Vec<String>,
    /// Sandbox options for one callback (`NAME:key=value,...`, NAME being a bundled name or a
    /// file stem) or for all (`key=value,...`): the config file's limit keys (`call_timeout=50ms`,
    /// `fuel_per_call=10_000_000`, `memory_bytes=16MiB`, ...), `on_fault`, `max_restarts` and
    /// `inert_wasi`. Repeatable; applied in order, after the config file.
    #[arg(long = "sandbox", value_name = "[NAME:]KEY=VALUE,...")]
    sandbox: Vec<String>,
}

impl RunSettings {
    /// The configuration: `base` (defaults, a config file or a resumed run's), then the flags;
    /// validated.
    pub fn apply(self, base: Option<TrainConfig>) -> Result<TrainConfig, Failure> {
        let mut config = match (base, &self.config) {
            (Some(config), _) => config,
            (None, Some(path)) => TrainConfig::from_toml_file(path).map_err(Failure::usage)?,
            (None, None) => TrainConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = self.$field { config.$field = v; })* };
        }
        set!(
            name,
            model,
            data,
            epochs,
            batch_size,
            lr,
            optimizer,
            seed,
            device,
            val_fraction,
            log_every
        );
        for spec in &self.callbacks {
            config.push_callback(spec).map_err(Failure::usage)?;
        }
        apply_sandbox_flags(&mut config.callbacks, &self.sandbox).map_err(Failure::usage)?;
        config.validate().map_err(Failure::usage)?;
        Ok(config)
    }
}

impl RunArgs {
    /// Builds the validated run request: defaults, then the config file (or the resumed run's
    /// `config.json`), then flags.
    fn request(self) -> Result<(RunRequest, bool), Failure> {
        if self.resume.is_some() && self.settings.config.is_some() {
            return Err(Failure::usage(anyhow::anyhow!(
                "--resume continues a run with its own configuration; leave out --config"
            )));
        }
        let base = match &self.resume {
            Some(dir) => Some(trainer::load_run_config(dir).map_err(Failure::usage)?),
            None => None,
        };
        let resume = base.is_some();
        let config = self.settings.apply(base)?;
        let run_dir = match (self.resume, self.run_dir) {
            (Some(dir), _) | (None, Some(dir)) => dir,
            (None, None) => PathBuf::from("runs").join(&config.name),
        };
        Ok((
            RunRequest {
                config,
                run_dir,
                resume,
            },
            self.json,
        ))
    }

    /// Runs training and maps the outcome to an exit code.
    pub fn execute(self) -> Result<u8, Failure> {
        set_threads(self.threads);
        let (request, json) = self.request()?;
        let sandbox = Arc::new(crate::compile::sandbox()?);
        let mut console = Console::new(json);
        let summary = trainer::train(sandbox, request, &mut console).map_err(|e| match e {
            TrainError::Config(_)
            | TrainError::Callback(_)
            | TrainError::Data(_)
            | TrainError::Model(_)
            | TrainError::Optim(_)
            | TrainError::Resume { .. }
            | TrainError::RunDirExists(_) => Failure::usage(e),
            other => Failure::failed(other),
        })?;
        console.finish(&summary);
        Ok(if summary.outcome == RunOutcome::Failed {
            1
        } else {
            0
        })
    }
}

/// Pins candle's CPU thread count. candle reads `RAYON_NUM_THREADS` on every matmul and, when it
/// is unset, probes the CPU topology each time, which makes training about 3x slower.
fn set_threads(threads: Option<usize>) {
    if threads.is_none()
        && std::env::var("RAYON_NUM_THREADS").is_ok_and(|v| v.parse::<usize>().is_ok_and(|n| n > 0))
    {
        return;
    }
    let n = threads.filter(|n| *n > 0).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    #[allow(unsafe_code)]
    // SAFETY: called first thing in `execute`, before this process starts any other thread, so
    // nothing can read the environment concurrently.
    unsafe {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

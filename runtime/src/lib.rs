//! trainrt: a training runtime whose callbacks are sandboxed WebAssembly components.
//!
//! A candle trainer emits lifecycle events (see `wit/callbacks.wit`) to callbacks that run in
//! wasmtime, one store each; callbacks answer with decisions that the host validates and applies
//! at fixed points. Embedding it takes one shared [`Sandbox`] per process:
//!
//! ```no_run
//! use std::sync::Arc;
//! use trainrt::{RunRequest, Sandbox, TrainConfig, trainer::Quiet};
//!
//! let sandbox = Arc::new(Sandbox::new()?); // engine + linker: once per process
//! let mut config = TrainConfig::default(); // an MLP on the embedded digits dataset
//! config.push_callback("early-stopping:patience=3")?;
//! config.push_callback("logger")?;
//! let request = RunRequest { config, run_dir: "runs/example".into(), resume: false };
//! let summary = trainrt::train(sandbox, request, &mut Quiet)?; // a store per callback per run
//! println!("{} after {} epochs", summary.outcome, summary.epochs_completed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Set `RAYON_NUM_THREADS` before training (the CLI's `--threads` does): candle re-probes the CPU
//! topology on every matmul when it is unset.

pub mod bundled;
pub mod callback;
pub mod checkpoint;
mod clock;
pub mod config;
pub mod contract;
pub mod data;
pub mod decision;
pub mod device;
pub mod events;
pub mod host;
pub mod inspect;
pub mod model;
pub mod optim;
pub mod rundir;
pub mod sandbox;
pub mod trainer;

pub use callback::{CallbackSpec, CompiledCallback};
pub use config::TrainConfig;
pub use host::CallbackHost;
pub use sandbox::{Limits, Sandbox};
pub use trainer::{RunRequest, RunSummary, train};

/// Formats an error and its whole chain of causes on one line: `outer: cause: root cause`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors repeat their source's text in their own message; say it once.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

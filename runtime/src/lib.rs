//! trainrt: a training runtime whose callbacks are sandboxed WebAssembly components.

pub mod bundled;
pub mod callback;
pub mod checkpoint;
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

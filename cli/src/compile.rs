//! `trainrt __compile` (hidden): the child process the sandbox compiles a component in, under the
//! callback's compile limits; and the sandbox every subcommand uses, which runs it.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use trainrt::Sandbox;
use trainrt::sandbox::{Compiler, serve_compile};

use crate::Failure;

/// `trainrt __compile --cpu-time-ms N --memory-bytes N`: component on stdin, artifact on stdout.
#[derive(Args)]
pub struct CompileArgs {
    /// CPU-time limit, in milliseconds (rounded up to whole seconds).
    #[arg(long)]
    cpu_time_ms: u64,
    /// Memory limit, in bytes.
    #[arg(long)]
    memory_bytes: u64,
}

impl CompileArgs {
    /// Compiles stdin to stdout; the exit code tells the parent how it went.
    pub fn execute(self) -> Result<u8, Failure> {
        Ok(serve_compile(
            Duration::from_millis(self.cpu_time_ms),
            self.memory_bytes,
        ))
    }
}

/// The sandbox of `run`, `check` and `replay`: components that are neither bundled nor cached
/// compile in a child `trainrt __compile` (this very binary), under their compile limits.
pub fn sandbox() -> Result<Sandbox, Failure> {
    let exe = std::env::current_exe()
        .context("cannot find the trainrt binary to compile components with")
        .map_err(Failure::failed)?;
    let sandbox = Sandbox::new().map_err(Failure::failed)?;
    Ok(sandbox.with_compiler(Compiler::process(exe)))
}

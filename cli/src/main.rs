//! The `trainrt` command line: parses arguments and dispatches to a subcommand.
//!
//! Exit codes: 0 training completed or was stopped by a callback (or the command succeeded),
//! 1 training or the command failed, 2 usage error (bad flags, config, data or callback).

mod check;
mod checkpoint;
mod compile;
mod output;
mod remote;
mod replay;
mod run;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// trainrt: train models with sandboxed WebAssembly callbacks.
#[derive(Parser)]
#[command(name = "trainrt", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Train a model, with callbacks.
    Run(run::RunArgs),
    /// Validate a callback component and print its interface, subscriptions and limits.
    Check(check::CheckArgs),
    /// Drive callbacks with a recorded events.jsonl and print their decisions as JSON lines.
    Replay(replay::ReplayArgs),
    /// The callbacks bundled in this binary.
    #[command(subcommand)]
    Callbacks(check::CallbacksCommand),
    /// Verify a checkpoint and print its metadata, callback states and tensors.
    Checkpoint(checkpoint::CheckpointArgs),
    /// Print the callback contract (`wit/callbacks.wit`) this binary speaks, for bindings
    /// generators in any language.
    Wit,
    /// Run the multi-tenant training service (HTTP API, job store, job slots).
    Serve(serve::ServeArgs),
    /// The service's operator commands: tenants and tokens.
    Admin(serve::AdminArgs),
    /// Use a training service: upload callbacks and data, submit jobs, follow them.
    Remote(remote::RemoteArgs),
    /// Run one job attempt of the service (the service's child process).
    #[command(name = trainrt_service::job_process::SUBCOMMAND, hide = true)]
    JobExec(serve::JobExecArgs),
    /// Compile a component from stdin under limits (the sandbox's child process).
    #[command(name = trainrt::sandbox::COMPILE_SUBCOMMAND, hide = true)]
    Compile(compile::CompileArgs),
}

/// A failure with the exit code it maps to.
pub struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    /// The user asked for something invalid (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 2,
            error: error.into(),
        }
    }

    /// Something failed while doing what was asked (exit 1).
    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 1,
            error: error.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Run(args) => args.execute(),
        Command::Check(args) => args.execute(),
        Command::Replay(args) => args.execute(),
        Command::Callbacks(cmd) => cmd.execute(),
        Command::Checkpoint(args) => args.execute(),
        Command::Wit => {
            print!("{}", trainrt::contract::WIT_SOURCE);
            Ok(0)
        }
        Command::Serve(args) => args.execute(),
        Command::Admin(args) => args.execute(),
        Command::Remote(args) => args.execute(),
        Command::JobExec(args) => args.execute(),
        Command::Compile(args) => args.execute(),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure { code, error }) => {
            // The whole cause chain on one line, each cause once (some errors already repeat
            // their source's text in their own message).
            eprintln!("trainrt: {}", trainrt::error_chain(&*error));
            ExitCode::from(code)
        }
    }
}

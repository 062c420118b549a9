//! `trainrt replay`: drive callbacks with a recorded event stream, without training.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use trainrt::config::{apply_sandbox_flags, callback_options};
use trainrt::decision::decision_json;
use trainrt::events::{Event, kind_name};
use trainrt::host::CallbackHost;

use crate::Failure;

/// `trainrt replay EVENTS.jsonl --callback SPEC...`
#[derive(Args)]
pub struct ReplayArgs {
    /// An `events.jsonl` from a run directory (or written by hand).
    events: PathBuf,
    /// A callback to drive (bundled name or `.wasm` path, with `:key=value,...`). Repeatable.
    #[arg(long = "callback", value_name = "SPEC", required = true)]
    callbacks: Vec<String>,
    /// Sandbox options, as for `trainrt run`: `[NAME:]key=value,...`. Repeatable.
    #[arg(long = "sandbox", value_name = "[NAME:]KEY=VALUE,...")]
    sandbox: Vec<String>,
}

impl ReplayArgs {
    /// Feeds every event to the callbacks subscribed to it and prints each decision as a JSON
    /// line: `{"callback", "event", "epoch", "step", "decision"}`. Logs and faults go to stderr.
    pub fn execute(self) -> Result<u8, Failure> {
        let mut options = self
            .callbacks
            .iter()
            .map(|s| callback_options(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Failure::usage)?;
        // A replay has no training for the callbacks' time to be a share of: every other limit
        // and budget holds as in a run, this one would disable any callback after a second.
        for o in &mut options {
            o.limits.time_share = f64::INFINITY;
        }
        apply_sandbox_flags(&mut options, &self.sandbox).map_err(Failure::usage)?;
        let file = std::fs::File::open(&self.events)
            .with_context(|| format!("cannot open {}", self.events.display()))
            .map_err(Failure::usage)?;
        let mut events = Vec::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line
                .with_context(|| format!("cannot read {}", self.events.display()))
                .map_err(Failure::failed)?;
            if line.trim().is_empty() {
                continue;
            }
            let event: Event = serde_json::from_str(&line)
                .with_context(|| {
                    format!(
                        "{} line {}: not a trainrt event",
                        self.events.display(),
                        i + 1
                    )
                })
                .map_err(Failure::usage)?;
            events.push(event);
        }
        let sandbox = Arc::new(crate::compile::sandbox()?);
        let mut host = CallbackHost::start(sandbox, &options).map_err(Failure::usage)?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for event in &events {
            let (_, answers) = host.dispatch(event);
            for answer in answers {
                for d in &answer.decisions {
                    let line = json!({
                        "callback": &*answer.callback,
                        "event": kind_name(event.kind()),
                        "epoch": event.epoch(),
                        "step": event.step(),
                        "decision": decision_json(d),
                    });
                    writeln!(out, "{line}").map_err(Failure::failed)?;
                }
            }
            for (callback, line) in host.take_logs() {
                eprintln!("[{callback}] {}", line.message);
            }
            for f in host.take_faults() {
                eprintln!(
                    "[{}] fault during {}: {}: {} ({})",
                    f.callback, f.during, f.kind, f.message, f.action
                );
            }
        }
        Ok(0)
    }
}

//! `trainrt replay`: drive callbacks with a recorded event stream, without training.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
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
    /// Compare the decisions with this file (an earlier replay's output, or a run's
    /// `decisions.jsonl`, whose `status` and `reason` are ignored) and exit 1 with the
    /// differences if they are not the same: a callback's regression test in one line.
    #[arg(long, value_name = "DECISIONS.jsonl")]
    expect: Option<PathBuf>,
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
        let expected = self.expect.as_deref().map(read_expected).transpose()?;
        let sandbox = Arc::new(crate::compile::sandbox()?);
        let mut host = CallbackHost::start(sandbox, &options).map_err(Failure::usage)?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let mut got = Vec::new();
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
                    got.push(line);
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
        let (Some(expected), Some(path)) = (expected, &self.expect) else {
            return Ok(0);
        };
        match differences(&expected, &got) {
            None => {
                eprintln!(
                    "decisions match {}: {} decision(s)",
                    path.display(),
                    got.len()
                );
                Ok(0)
            }
            Some(diff) => Err(Failure::failed(anyhow::anyhow!(
                "decisions differ from {}:\n{diff}",
                path.display()
            ))),
        }
    }
}

/// The fields of a decision line that a replay reproduces (a run's `decisions.jsonl` adds what
/// became of each, which a replay cannot know).
const COMPARED: [&str; 5] = ["callback", "event", "epoch", "step", "decision"];

/// Reads the expected decisions, keeping the compared fields of each line.
fn read_expected(path: &std::path::Path) -> Result<Vec<Value>, Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(Failure::usage)?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let value: Value = serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))
                .map_err(Failure::usage)?;
            let compared: serde_json::Map<String, Value> = COMPARED
                .iter()
                .filter_map(|k| value.get(*k).map(|v| ((*k).to_string(), v.clone())))
                .collect();
            if compared.len() != COMPARED.len() {
                return Err(Failure::usage(anyhow::anyhow!(
                    "{} line {}: not a decision (it needs {})",
                    path.display(),
                    i + 1,
                    COMPARED.join(", ")
                )));
            }
            Ok(Value::Object(compared))
        })
        .collect()
}

/// `None` when `got` is `expected`; otherwise the differing lines, numbered from 1, with `-` for
/// what was expected and `+` for what the callbacks decided (at most ten, then a count).
fn differences(expected: &[Value], got: &[Value]) -> Option<String> {
    const SHOWN: usize = 10;
    let mut lines = Vec::new();
    let mut differing = 0;
    for i in 0..expected.len().max(got.len()) {
        let (e, g) = (expected.get(i), got.get(i));
        if e == g {
            continue;
        }
        differing += 1;
        if differing > SHOWN {
            continue;
        }
        lines.push(format!("decision {}:", i + 1));
        lines.push(e.map_or_else(|| "  - (none)".into(), |v| format!("  - {v}")));
        lines.push(g.map_or_else(|| "  + (none)".into(), |v| format!("  + {v}")));
    }
    if differing == 0 {
        return None;
    }
    if differing > SHOWN {
        lines.push(format!("... and {} more", differing - SHOWN));
    }
    lines.push(format!(
        "{differing} of {} line(s) differ; expected {} decision(s), got {}",
        expected.len().max(got.len()),
        expected.len(),
        got.len()
    ));
    Some(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_line_with_both_sides() {
        let a = json!({"callback": "x", "decision": {"kind": "end-epoch"}});
        let b = json!({"callback": "y", "decision": {"kind": "end-epoch"}});
        let one = std::slice::from_ref(&a);
        assert_eq!(differences(one, one), None);
        let diff = differences(&[a.clone(), a.clone()], &[a.clone(), b.clone(), b]).unwrap();
        assert!(diff.contains("decision 2:\n  - {"), "{diff}");
        assert!(diff.contains("\"y\""), "{diff}");
        assert!(diff.contains("decision 3:\n  - (none)"), "{diff}");
        assert!(
            diff.ends_with("2 of 3 line(s) differ; expected 2 decision(s), got 3"),
            "{diff}"
        );
    }
}

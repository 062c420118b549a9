//! The JSON-lines files of a run directory (and what is derived from them: `metrics.csv` and the
//! TensorBoard events file), appended as the run goes: one owner, so the order in which they
//! reach the OS (and the disk) is decided in one place.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::decision::DecisionRecord;
use crate::decision::Status;
use crate::events::Event;
use crate::host::FaultRecord;
use crate::rundir::{JsonLines, MetricsCsv, RunDirError, TensorBoardWriter, atomic_write_json};
use crate::sandbox::LogLine;

/// `metrics.jsonl`, `events.jsonl`, `decisions.jsonl`, `faults.jsonl` and `log.jsonl` of one run,
/// `metrics.csv`, and the run's TensorBoard events in `tensorboard/`.
pub(super) struct RunFiles {
    dir: PathBuf,
    metrics: JsonLines,
    metrics_csv: MetricsCsv,
    tensorboard: TensorBoardWriter,
    events: JsonLines,
    decisions: JsonLines,
    faults: JsonLines,
    log: JsonLines,
}

impl RunFiles {
    /// Opens the files of `dir` for appending (a resumed run continues them, from the global
    /// step `resumed_at`).
    pub fn open(dir: &Path, resumed_at: Option<u64>) -> Result<Self, RunDirError> {
        let open = |name: &str| JsonLines::open_append(&dir.join(name));
        let metrics = open("metrics.jsonl")?;
        Ok(Self {
            dir: dir.to_path_buf(),
            metrics_csv: MetricsCsv::open(&dir.join("metrics.csv"), metrics.path())?,
            tensorboard: TensorBoardWriter::create(&dir.join("tensorboard"), resumed_at)?,
            metrics,
            events: open("events.jsonl")?,
            decisions: open("decisions.jsonl")?,
            faults: open("faults.jsonl")?,
            log: open("log.jsonl")?,
        })
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An event delivered to at least one callback.
    pub fn event(&mut self, event: &Event) -> Result<(), RunDirError> {
        self.events.append(event)
    }

    /// What became of the decisions answering one event. Those applied that change training (a
    /// learning rate, a restore, a stop, the end of an epoch) are also marked in TensorBoard.
    pub fn decisions(&mut self, records: &[DecisionRecord]) -> Result<(), RunDirError> {
        for r in records {
            self.decisions.append(r)?;
            let kind = r.decision["kind"].as_str().unwrap_or_default();
            let marked = matches!(
                kind,
                "set-learning-rate" | "restore-checkpoint" | "stop-training" | "end-epoch"
            );
            if marked && r.status == Status::Applied {
                let text = format!("{}: {}", r.callback, r.decision);
                self.tensorboard.text(r.step, "decisions", &text)?;
            }
        }
        Ok(())
    }

    /// The training loss and learning rate after step `step`, for TensorBoard.
    pub fn batch(&mut self, step: u64, loss: f64, lr: f64) -> Result<(), RunDirError> {
        self.tensorboard
            .scalars(step, [("batch/loss", loss), ("batch/lr", lr)])
    }

    /// A callback fault.
    pub fn fault(&mut self, fault: &FaultRecord) -> Result<(), RunDirError> {
        self.faults.append(fault)
    }

    /// A line a callback logged.
    pub fn log(&mut self, callback: &str, line: &LogLine) -> Result<(), RunDirError> {
        self.log.append(&json!({
            "callback": callback,
            "level": line.level_name(),
            "message": line.message,
        }))
    }

    /// An epoch's metrics line.
    pub fn metrics(&mut self, line: &Value) -> Result<(), RunDirError> {
        self.metrics.append(line)?;
        self.metrics_csv.append(line)?;
        // In TensorBoard at the epoch's last step, every number but the epoch and the step.
        let step = line["step"].as_u64().unwrap_or_default();
        let values = line
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(name, _)| *name != "epoch" && *name != "step")
            .filter_map(|(name, value)| Some((name, number(value)?)))
            .map(|(name, value)| (format!("epoch/{name}"), value))
            .collect::<Vec<_>>();
        self.tensorboard
            .scalars(step, values.iter().map(|(tag, v)| (tag.as_str(), *v)))
    }

    /// Hands every file's buffered lines to the OS; with `durable`, also waits for the disk.
    pub fn flush(&mut self, durable: bool) -> Result<(), RunDirError> {
        for f in [
            &mut self.metrics,
            &mut self.events,
            &mut self.decisions,
            &mut self.faults,
            &mut self.log,
        ] {
            if durable { f.sync()? } else { f.flush()? }
        }
        if durable {
            self.metrics_csv.sync()?;
            self.tensorboard.sync()
        } else {
            self.metrics_csv.flush()?;
            self.tensorboard.flush()
        }
    }

    /// Writes `summary.json`, atomically.
    pub fn summary<T: serde::Serialize>(&self, summary: &T) -> Result<(), RunDirError> {
        atomic_write_json(&self.dir.join("summary.json"), summary)
    }
}

/// A metric's value as a number: JSON numbers, and the non-finite values `metrics.jsonl` spells
/// as strings.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "inf" => Some(f64::INFINITY),
            "-inf" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

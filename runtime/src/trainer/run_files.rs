//! The JSON-lines files of a run directory (and `metrics.csv`, derived from `metrics.jsonl`),
//! appended as the run goes: one owner, so the order in which they reach the OS (and the disk) is
//! decided in one place.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::decision::DecisionRecord;
use crate::events::Event;
use crate::host::FaultRecord;
use crate::rundir::{JsonLines, MetricsCsv, RunDirError, atomic_write_json};
use crate::sandbox::LogLine;

/// `metrics.jsonl`, `events.jsonl`, `decisions.jsonl`, `faults.jsonl` and `log.jsonl` of one run,
/// and `metrics.csv`.
pub(super) struct RunFiles {
    dir: PathBuf,
    metrics: JsonLines,
    metrics_csv: MetricsCsv,
    events: JsonLines,
    decisions: JsonLines,
    faults: JsonLines,
    log: JsonLines,
}

impl RunFiles {
    /// Opens the files of `dir` for appending (a resumed run continues them).
    pub fn open(dir: &Path) -> Result<Self, RunDirError> {
        let open = |name: &str| JsonLines::open_append(&dir.join(name));
        let metrics = open("metrics.jsonl")?;
        Ok(Self {
            dir: dir.to_path_buf(),
            metrics_csv: MetricsCsv::open(&dir.join("metrics.csv"), metrics.path())?,
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

    /// What became of the decisions answering one event.
    pub fn decisions(&mut self, records: &[DecisionRecord]) -> Result<(), RunDirError> {
        records.iter().try_for_each(|r| self.decisions.append(r))
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
        self.metrics_csv.append(line)
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
            self.metrics_csv.sync()
        } else {
            self.metrics_csv.flush()
        }
    }

    /// Writes `summary.json`, atomically.
    pub fn summary<T: serde::Serialize>(&self, summary: &T) -> Result<(), RunDirError> {
        atomic_write_json(&self.dir.join("summary.json"), summary)
    }
}

//! The job process: `trainrt job-exec JOB_DIR`, one per job attempt, spawned by the service's
//! executor. It trains the job's plan with `trainrt::train` and reports on stdout, one JSON
//! object per line (`{"kind": …, "data": …}`, what becomes the job's event stream); it takes
//! `cancel` and `suspend` on stdin. A crash, an out-of-memory kill or a candle error ends this
//! process only, never the service or another job.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use trainrt::Sandbox;
use trainrt::config::TrainConfig;
use trainrt::contract::RunInfo;
use trainrt::decision::DecisionRecord;
use trainrt::host::FaultRecord;
use trainrt::sandbox::LogLine;
use trainrt::trainer::{Interrupt, Observer, RunRequest};

/// The subcommand the executor runs (hidden from `trainrt --help`).
pub const SUBCOMMAND: &str = "job-exec";
/// The last report: the process's CPU time, for the job's usage (not an event of the job).
pub const USAGE_REPORT: &str = "usage";

/// What the executor hands the job process, as `JOB_DIR/plan.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// The run, with uploads as files on this machine.
    pub config: TrainConfig,
    /// Continue the run in `run_dir` from its last checkpoint.
    pub resume: bool,
    /// The run directory.
    pub run_dir: PathBuf,
    /// CPU-seconds this attempt may still use (the process is killed past it).
    pub cpu_seconds: f64,
    /// Memory ceiling of the process.
    pub memory_bytes: u64,
}

impl Plan {
    /// The plan's file in a job directory.
    pub fn path(job_dir: &Path) -> PathBuf {
        job_dir.join("plan.json")
    }
}

/// Why the job process could not run the plan.
#[derive(Debug, thiserror::Error)]
pub enum JobProcessError {
    /// The plan could not be read.
    #[error("cannot read the job plan {path}: {message}")]
    Plan {
        /// Its path.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Limiting the process failed.
    #[error("cannot limit the job process: {0}")]
    Limits(#[from] std::io::Error),
    /// Training could not start or its files could not be written.
    #[error(transparent)]
    Train(#[from] trainrt::trainer::TrainError),
}

/// Runs the plan in `job_dir` with callbacks in `sandbox`; returns when the run ended (its
/// `summary.json` says how).
pub fn run(job_dir: &Path, sandbox: Arc<Sandbox>) -> Result<(), JobProcessError> {
    let path = Plan::path(job_dir);
    let plan: Plan = std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        .map_err(|message| JobProcessError::Plan {
            path: path.clone(),
            message,
        })?;
    limit_self(&plan)?;
    let interrupt = Arc::new(Mutex::new(None));
    read_requests(Arc::clone(&interrupt));
    let mut reporter = Reporter {
        out: std::io::stdout().lock(),
        interrupt,
    };
    let request = RunRequest {
        config: plan.config,
        run_dir: plan.run_dir,
        resume: plan.resume,
    };
    let summary = trainrt::train(sandbox, request, &mut reporter)?;
    let summary = serde_json::to_value(&summary).unwrap_or(Value::Null);
    reporter.send("summary", summary);
    if let Some(cpu) = cpu_seconds("/proc/self/stat") {
        reporter.send(USAGE_REPORT, json!({"cpu_seconds": cpu}));
    }
    Ok(())
}

/// CPU-seconds of a process and of the children it waited for (the compiler processes), from
/// its `/proc/PID/stat` (Linux; `None` elsewhere or once it is gone).
pub fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The fields after the command name (which may hold spaces and parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime: fields 14-17 of the file, in clock ticks (USER_HZ, which
    // Linux fixes at 100 for user space).
    let ticks: u64 = fields
        .get(11..15)?
        .iter()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Some(ticks as f64 / 100.0)
}

/// Dies with the service (a `kill -9` of the server must not leave jobs training unseen), and
/// keeps to the job's CPU and memory ceilings.
#[cfg(target_os = "linux")]
fn limit_self(plan: &Plan) -> std::io::Result<()> {
    use rustix::process::{
        Resource, Rlimit, Signal, getppid, set_parent_process_death_signal, setrlimit,
    };
    set_parent_process_death_signal(Some(Signal::KILL))?;
    // The parent may have died before the signal was asked for: then init adopted us.
    if getppid().is_none_or(|pid| pid.as_raw_nonzero().get() == 1) {
        std::process::exit(1);
    }
    let cpu = plan.cpu_seconds.ceil().max(1.0) as u64;
    setrlimit(
        Resource::Cpu,
        Rlimit {
            current: Some(cpu),
            maximum: Some(cpu + 1),
        },
    )?;
    let memory = plan.memory_bytes;
    setrlimit(
        Resource::Data,
        Rlimit {
            current: Some(memory),
            maximum: Some(memory),
        },
    )?;
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn limit_self(_plan: &Plan) -> std::io::Result<()> {
    Ok(())
}

/// Takes `cancel` and `suspend` lines from the executor on stdin.
fn read_requests(interrupt: Arc<Mutex<Option<Interrupt>>>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let request = match line.trim() {
                "cancel" => Interrupt::Cancel("cancelled on request".into()),
                "suspend" => Interrupt::Suspend,
                _ => continue,
            };
            if let Ok(mut slot) = interrupt.lock() {
                // A cancel outranks a suspend; the first cancel's reason stands.
                if !matches!(*slot, Some(Interrupt::Cancel(_))) {
                    *slot = Some(request);
                }
            }
        }
    });
}

/// Reports the run on stdout, one JSON line per event.
struct Reporter<W: Write> {
    out: W,
    interrupt: Arc<Mutex<Option<Interrupt>>>,
}

impl<W: Write> Reporter<W> {
    fn send(&mut self, kind: &str, data: Value) {
        // The executor reading this is the job's owner: if it is gone, so is the job (the
        // parent-death signal ends this process).
        let _ = writeln!(self.out, "{}", json!({"kind": kind, "data": data}));
        let _ = self.out.flush();
    }
}

impl<W: Write> Observer for Reporter<W> {
    fn started(&mut self, info: &RunInfo, _run_dir: &Path) {
        self.send("started", serde_json::to_value(info).unwrap_or(Value::Null));
    }

    fn epoch_done(&mut self, _epoch: u32, metrics: &Value) {
        self.send("epoch", metrics.clone());
    }

    fn callback_log(&mut self, callback: &str, line: &LogLine) {
        let data =
            json!({"callback": callback, "level": line.level_name(), "message": line.message});
        self.send("log", data);
    }

    fn callback_fault(&mut self, fault: &FaultRecord) {
        self.send("fault", serde_json::to_value(fault).unwrap_or(Value::Null));
    }

    fn decisions(&mut self, records: &[DecisionRecord]) {
        for record in records {
            self.send(
                "decision",
                serde_json::to_value(record).unwrap_or(Value::Null),
            );
        }
    }

    fn interrupt(&mut self) -> Option<Interrupt> {
        self.interrupt.lock().ok().and_then(|slot| slot.clone())
    }
}

/// One line the job process wrote.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    /// What it is.
    pub kind: String,
    /// Its data.
    pub data: Value,
}

#[cfg(test)]
mod tests {
    use super::cpu_seconds;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces() {
        let dir = tempfile::tempdir().unwrap();
        let stat = dir.path().join("stat");
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime ...
        std::fs::write(
            &stat,
            "42 (job ) x) S 1 42 42 0 -1 0 0 0 0 0 150 50 30 20 20 0 1 0",
        )
        .unwrap();
        assert_eq!(cpu_seconds(stat.to_str().unwrap()), Some(2.5));
        #[cfg(target_os = "linux")]
        assert!(cpu_seconds("/proc/self/stat").is_some());
        assert_eq!(cpu_seconds("/nonexistent/stat"), None);
    }
}

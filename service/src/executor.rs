//! Runs one claimed job attempt: prepares its plan, spawns the job process, turns its reports
//! into the job's event stream, enforces the per-job ceilings and the tenant's quotas while it
//! runs, carries out cancels and shutdowns, and records how the attempt ended.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use trainrt::config::TrainConfig;

use crate::artifacts::{Artifacts, dir_bytes};
use crate::job_process::{Plan, Report, SUBCOMMAND, USAGE_REPORT, cpu_seconds};
use crate::jobs::localize;
use crate::model::{JobState, Principal, Tenant};
use crate::store::{AttemptUsage, Claim, Finish, Store, StoreError};

/// How often the executor checks a running job (cancel, ceilings, usage).
const TICK: Duration = Duration::from_millis(200);
/// Reports are written to the store in batches, at most this long after they arrived.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How long a job may take to stop after a cancel or a shutdown before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// What every job attempt of one service shares.
pub struct JobRunner {
    /// The job store.
    pub store: Arc<dyn Store>,
    /// Uploads and job directories.
    pub artifacts: Artifacts,
    /// The `trainrt` binary that runs job processes.
    pub exe: PathBuf,
    /// This worker's name in the store's attempts.
    pub worker: String,
    /// Bumped whenever events were appended, so live streams wake up.
    pub events: watch::Sender<u64>,
}

/// What one attempt may use, fixed when it starts.
struct Allowance {
    /// When it started (for the wall-clock ceiling).
    started: Instant,
    /// CPU-seconds: the job's ceiling, or what is left of the tenant's quota if less.
    cpu_seconds: f64,
    /// The tenant's storage without this job's run directory (measured live).
    storage_before: u64,
}

/// Why the executor stopped a job itself.
#[derive(Debug, Clone)]
enum Stopping {
    /// Its tenant (or the operator) cancelled it.
    Cancel,
    /// A ceiling or quota ended it: the job fails with this reason.
    Limit(String),
    /// The service is shutting down: back to the queue, to resume.
    Suspend,
}

impl JobRunner {
    /// Runs `claim` to its end; `shutdown` turning true suspends it (it goes back to the queue).
    pub async fn run(&self, claim: Claim, mut shutdown: watch::Receiver<bool>) {
        let job = claim.job.clone();
        let attempt = claim.attempt;
        let finish = match self.attempt(claim, &mut shutdown).await {
            Ok(finish) => finish,
            Err(e) => Finish {
                state: JobState::Failed,
                reason: Some(format!("the service could not run the job: {e}")),
                summary: None,
            },
        };
        match self.store.finish(&job, attempt, finish).await {
            Ok(()) => self.events.send_modify(|n| *n += 1),
            Err(StoreError::Fenced { .. }) => {}
            Err(e) => eprintln!("trainrt serve: job {job}: cannot record its end: {e}"),
        }
    }

    async fn attempt(
        &self,
        claim: Claim,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Finish, String> {
        let tenant = self
            .store
            .tenant(claim.tenant)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("its tenant no longer exists")?;
        let usage = self
            .store
            .usage(tenant.id)
            .await
            .map_err(|e| e.to_string())?;
        let ceilings = &tenant.quota.job;
        let cpu_budget = ceilings
            .cpu_seconds
            .min(tenant.quota.cpu_seconds - usage.cpu_seconds);
        if cpu_budget <= 0.0 {
            return Ok(failed("the tenant's CPU-seconds quota is used up"));
        }
        let job_dir = self.artifacts.job_dir(&claim.job);
        let run_dir = self.artifacts.run_dir(&claim.job);
        let plan = self.plan(&claim, &run_dir, cpu_budget, ceilings.memory_bytes)?;
        write_plan(&job_dir, &plan).map_err(|e| format!("cannot write its plan: {e}"))?;
        let stderr = std::fs::File::create(job_dir.join("stderr.log"))
            .map_err(|e| format!("cannot create its stderr.log: {e}"))?;
        let mut child = tokio::process::Command::new(&self.exe)
            .arg(SUBCOMMAND)
            .arg(&job_dir)
            .current_dir(&job_dir)
            .env("RAYON_NUM_THREADS", ceilings.threads.max(1).to_string())
            .env("TRAINRT_CACHE_DIR", self.artifacts.component_cache())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the job process {}: {e}", self.exe.display()))?;
        let pid = child.id();
        let mut stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();

        let mut pending: Vec<(String, Value)> = Vec::new();
        let mut last_flush = Instant::now();
        let mut summary: Option<Value> = None;
        let mut stopping: Option<(Stopping, Instant)> = None;
        let mut usage_now = AttemptUsage::default();
        let mut tick = tokio::time::interval(TICK);
        // The tenant's storage without this job's own run directory, which is measured live.
        let own = self
            .store
            .job(&Principal::Operator, &claim.job)
            .await
            .map_err(|e| e.to_string())?
            .map_or(0, |job| job.storage_bytes);
        let allowance = Allowance {
            started: Instant::now(),
            cpu_seconds: cpu_budget,
            storage_before: usage.storage_bytes.saturating_sub(own),
        };
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        match serde_json::from_str::<Report>(&line) {
                            // The process's own CPU time as it ends, after the last sample.
                            Ok(report) if report.kind == USAGE_REPORT => {
                                let reported = report.data["cpu_seconds"].as_f64().unwrap_or(0.0);
                                usage_now.cpu_seconds = usage_now.cpu_seconds.max(reported);
                            }
                            Ok(report) => {
                                if report.kind == "summary" {
                                    summary = Some(report.data.clone());
                                }
                                pending.push((report.kind, report.data));
                            }
                            Err(_) => {}
                        }
                        if pending.len() >= 256 || last_flush.elapsed() >= FLUSH_EVERY {
                            self.flush(&claim, &mut pending).await?;
                            last_flush = Instant::now();
                        }
                    }
                    // The process closed its stdout: it is ending.
                    Ok(None) | Err(_) => break,
                },
                _ = tick.tick() => {
                    self.flush(&claim, &mut pending).await?;
                    last_flush = Instant::now();
                    usage_now.cpu_seconds = pid.and_then(|pid| cpu_seconds(&format!("/proc/{pid}/stat"))).unwrap_or(usage_now.cpu_seconds);
                    usage_now.storage_bytes = dir_bytes(&run_dir);
                    let charged = self.store.charge(&claim.job, claim.attempt, usage_now).await;
                    if let Err(StoreError::Fenced { .. }) = charged {
                        return Err("the job was taken from this worker".into());
                    }
                    if stopping.is_none() {
                        let why = self.why_stop(&claim, &tenant, &allowance, usage_now, shutdown).await;
                        if let Some(why) = why {
                            let request = if matches!(why, Stopping::Suspend) { "suspend\n" } else { "cancel\n" };
                            if let Some(stdin) = stdin.as_mut() {
                                let _ = stdin.write_all(request.as_bytes()).await;
                                let _ = stdin.flush().await;
                            }
                            stopping = Some((why, Instant::now()));
                        }
                    } else if let Some((_, since)) = &stopping
                        && since.elapsed() > STOP_GRACE
                    {
                        let _ = child.start_kill();
                    }
                }
            }
        }
        drop(stdin.take());
        let status = child.wait().await.map_err(|e| e.to_string())?;
        self.flush(&claim, &mut pending).await?;
        if summary.is_none() {
            // Written by this attempt: `plan` removed any earlier attempt's.
            summary = read_json(&run_dir.join("summary.json"));
        }
        usage_now.storage_bytes = dir_bytes(&run_dir);
        usage_now.fuel = summary.as_ref().map_or(0, fuel_of);
        let _ = self
            .store
            .charge(&claim.job, claim.attempt, usage_now)
            .await;
        Ok(outcome(summary, stopping.map(|s| s.0), status, &job_dir))
    }

    /// The job's plan: its configuration made runnable here, and whether it resumes.
    fn plan(
        &self,
        claim: &Claim,
        run_dir: &Path,
        cpu_seconds: f64,
        memory_bytes: u64,
    ) -> Result<Plan, String> {
        let mut config: TrainConfig = serde_json::from_value(claim.resolved.clone())
            .map_err(|e| format!("its stored configuration is unreadable: {e}"))?;
        let job_dir = self.artifacts.job_dir(&claim.job);
        localize(&mut config, &self.artifacts, &job_dir)
            .map_err(|e| format!("cannot link its uploads into {}: {e}", job_dir.display()))?;
        // An attempt that died before its first checkpoint left nothing to resume: start over.
        let resume = claim.resume && run_dir.join("checkpoints/last.safetensors").exists();
        if !resume && run_dir.exists() {
            std::fs::remove_dir_all(run_dir)
                .map_err(|e| format!("cannot clear {}: {e}", run_dir.display()))?;
        }
        // An earlier attempt's summary (a suspended one) must not pass for this attempt's.
        match std::fs::remove_file(run_dir.join("summary.json")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot clear the last summary: {e}"));
            }
            _ => {}
        }
        Ok(Plan {
            config,
            resume,
            // Relative to the job directory, the job process's working directory.
            run_dir: PathBuf::from("run"),
            cpu_seconds,
            memory_bytes,
        })
    }

    async fn flush(&self, claim: &Claim, pending: &mut Vec<(String, Value)>) -> Result<(), String> {
        if pending.is_empty() {
            return Ok(());
        }
        match self
            .store
            .append_events(&claim.job, claim.attempt, pending)
            .await
        {
            Ok(()) => {
                pending.clear();
                self.events.send_modify(|n| *n += 1);
                Ok(())
            }
            Err(StoreError::Fenced { .. }) => Err("the job was taken from this worker".into()),
            // Kept for the next flush: the store may be busy for a moment.
            Err(e) => {
                eprintln!(
                    "trainrt serve: job {}: events not yet stored: {e}",
                    claim.job
                );
                Ok(())
            }
        }
    }

    /// Whether the job must stop now, and why.
    async fn why_stop(
        &self,
        claim: &Claim,
        tenant: &Tenant,
        allowance: &Allowance,
        usage: AttemptUsage,
        shutdown: &watch::Receiver<bool>,
    ) -> Option<Stopping> {
        if *shutdown.borrow() {
            return Some(Stopping::Suspend);
        }
        if self
            .store
            .cancel_requested(&claim.job)
            .await
            .unwrap_or(false)
        {
            return Some(Stopping::Cancel);
        }
        let ceilings = &tenant.quota.job;
        if allowance.started.elapsed().as_secs_f64() > ceilings.wall_seconds {
            return Some(Stopping::Limit(format!(
                "the job ran past its wall-clock ceiling of {} s",
                ceilings.wall_seconds
            )));
        }
        if usage.cpu_seconds > ceilings.cpu_seconds {
            return Some(Stopping::Limit(format!(
                "the job used more than its ceiling of {} CPU-seconds",
                ceilings.cpu_seconds
            )));
        }
        if usage.cpu_seconds > allowance.cpu_seconds {
            return Some(Stopping::Limit(format!(
                "the tenant's CPU-seconds quota of {} is used up",
                tenant.quota.cpu_seconds
            )));
        }
        let storage_before = allowance.storage_before;
        if storage_before + usage.storage_bytes > tenant.quota.storage_bytes {
            return Some(Stopping::Limit(format!(
                "the tenant's storage quota of {} bytes is used up ({} bytes with this job's run \
                 directory, {} of them this job's checkpoints and files)",
                tenant.quota.storage_bytes,
                storage_before + usage.storage_bytes,
                usage.storage_bytes
            )));
        }
        None
    }
}

fn failed(reason: &str) -> Finish {
    Finish {
        state: JobState::Failed,
        reason: Some(reason.to_string()),
        summary: None,
    }
}

/// How the attempt ended, from the run's summary, why the executor stopped it, and how the
/// process exited.
fn outcome(
    summary: Option<Value>,
    stopping: Option<Stopping>,
    status: std::process::ExitStatus,
    job_dir: &Path,
) -> Finish {
    let run_outcome = summary
        .as_ref()
        .and_then(|s| s.get("outcome"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let run_reason = summary
        .as_ref()
        .and_then(|s| s.get("reason"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let (state, reason) = match (run_outcome.as_deref(), &stopping) {
        (Some("suspended"), _) | (None, Some(Stopping::Suspend)) => (
            JobState::Queued,
            Some("the service shut down; the job resumes from its last checkpoint".to_string()),
        ),
        (Some(_), Some(Stopping::Limit(why))) | (None, Some(Stopping::Limit(why))) => {
            (JobState::Failed, Some(why.clone()))
        }
        (Some("cancelled"), _) | (None, Some(Stopping::Cancel)) => (
            JobState::Cancelled,
            Some("cancelled on request".to_string()),
        ),
        (Some("completed"), _) => (JobState::Succeeded, None),
        (Some("stopped"), _) => (JobState::Stopped, run_reason),
        (Some(_), _) => (JobState::Failed, run_reason),
        (None, None) => (JobState::Failed, Some(died(status, job_dir))),
    };
    Finish {
        state,
        reason,
        summary,
    }
}

/// Why a job process that wrote no summary ended, with the end of its stderr.
fn died(status: std::process::ExitStatus, job_dir: &Path) -> String {
    #[cfg(unix)]
    let how = {
        use std::os::unix::process::ExitStatusExt;
        match status.signal() {
            Some(9) => "was killed (SIGKILL: out of memory, or over its CPU ceiling)".to_string(),
            Some(24) => "went over its CPU-time ceiling (SIGXCPU)".to_string(),
            Some(signal) => format!("was killed by signal {signal}"),
            None => format!("exited with {status}"),
        }
    };
    #[cfg(not(unix))]
    let how = format!("exited with {status}");
    let stderr = std::fs::read_to_string(job_dir.join("stderr.log")).unwrap_or_default();
    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    if tail.is_empty() {
        format!("the job process {how}")
    } else {
        format!("the job process {how}: {}", tail.join(" / "))
    }
}

/// Fuel all of a run's callbacks used, from its summary.
fn fuel_of(summary: &Value) -> u64 {
    summary
        .get("callbacks")
        .and_then(Value::as_array)
        .map_or(0, |callbacks| {
            callbacks
                .iter()
                .filter_map(|c| c["fuel_used"].as_u64())
                .sum()
        })
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes the plan atomically (temp file, sync, rename).
fn write_plan(job_dir: &Path, plan: &Plan) -> std::io::Result<()> {
    std::fs::create_dir_all(job_dir)?;
    let tmp = job_dir.join(".plan.json.tmp");
    let bytes = serde_json::to_vec_pretty(plan).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(tmp, Plan::path(job_dir))
}

//! The service's records: tenants and their quotas, jobs and their states, events, uploads.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use trainrt::Limits;
use utoipa::ToSchema;

/// A tenant's row id.
pub type TenantId = i64;

/// Who is asking: a tenant (everything scoped to it) or the operator (everything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A tenant's token.
    Tenant(TenantId),
    /// The operator's token: the admin endpoints, every tenant's jobs.
    Operator,
}

impl Principal {
    /// The tenant whose resources a query may see; `None` for the operator (all of them).
    pub fn scope(&self) -> Option<TenantId> {
        match self {
            Self::Tenant(id) => Some(*id),
            Self::Operator => None,
        }
    }
}

/// What a tenant may use, set by the operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Quota {
    /// Jobs running at once.
    pub max_running: u32,
    /// Jobs waiting in the queue at once.
    pub max_queued: u32,
    /// CPU-seconds all of the tenant's jobs may use together.
    pub cpu_seconds: f64,
    /// Bytes of uploads, run directories and checkpoints together.
    pub storage_bytes: u64,
    /// Callback fuel all of the tenant's jobs may use together.
    pub fuel: u64,
    /// Ceilings on each callback's sandbox limits: a job may ask for less, never more.
    #[schema(value_type = Object)]
    pub sandbox: Limits,
    /// Per job: CPU-seconds, wall-clock seconds, memory bytes and threads.
    pub job: JobCeilings,
}

impl Default for Quota {
    /// Two running and 100 queued jobs, 10 CPU-hours, 10 GiB, 10^13 fuel, the default sandbox
    /// limits as ceilings, and the default per-job ceilings.
    fn default() -> Self {
        Self {
            max_running: 2,
            max_queued: 100,
            cpu_seconds: 36_000.0,
            storage_bytes: 10 << 30,
            fuel: 10_000_000_000_000,
            sandbox: Limits::default(),
            job: JobCeilings::default(),
        }
    }
}

/// What one job's process may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JobCeilings {
    /// CPU-seconds, all threads together.
    pub cpu_seconds: f64,
    /// Wall-clock seconds from start to end (each attempt).
    pub wall_seconds: f64,
    /// Memory (heap and other private writable mappings) of the job's process.
    pub memory_bytes: u64,
    /// Threads candle's matrix kernels may use.
    pub threads: u32,
}

impl Default for JobCeilings {
    /// One CPU-hour, two hours of wall-clock, 4 GiB, one thread.
    fn default() -> Self {
        Self {
            cpu_seconds: 3600.0,
            wall_seconds: 7200.0,
            memory_bytes: 4 << 30,
            threads: 1,
        }
    }
}

/// Checks a tenant's name.
pub fn check_tenant_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "tenant name '{name}' must be 1-64 letters, digits, '-' or '_'"
        ))
    }
}

/// A tenant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tenant {
    /// Row id.
    #[serde(skip)]
    pub id: TenantId,
    /// Unique name.
    pub name: String,
    /// Its quota.
    pub quota: Quota,
    /// When it was created (ms since the epoch).
    pub created_at: i64,
}

/// What a tenant has used, against its quota.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Usage {
    /// Jobs running now.
    pub running: u32,
    /// Jobs queued now.
    pub queued: u32,
    /// CPU-seconds used by all jobs.
    pub cpu_seconds: f64,
    /// Bytes stored: uploads, run directories, checkpoints.
    pub storage_bytes: u64,
    /// Callback fuel used by all jobs.
    pub fuel: u64,
}

/// A job's state. `queued → running → succeeded | stopped | failed | cancelled`; a running job
/// whose process was lost (a restart) goes back to `queued` and resumes from its checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a slot.
    Queued,
    /// Its process is training.
    Running,
    /// Every planned epoch ran.
    Succeeded,
    /// A callback stopped it.
    Stopped,
    /// Training, a critical callback or a quota failed it.
    Failed,
    /// Cancelled by its tenant or the operator.
    Cancelled,
}

impl JobState {
    /// Every state, in order.
    pub const ALL: [Self; 6] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Stopped,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Its name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the job is over.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }

    /// Whether a job may go from `self` to `next`: the one place the state machine is written.
    pub fn may_become(self, next: Self) -> bool {
        use JobState::*;
        match (self, next) {
            (Queued, Running | Cancelled) => true,
            // Back to the queue when its process is lost (a restart, a shutdown), to resume.
            (Running, Queued | Succeeded | Stopped | Failed | Cancelled) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown job state '{s}': expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A job, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Job {
    /// Its id (`job_…`).
    pub id: String,
    /// The owning tenant's name.
    pub tenant: String,
    /// Where it is in its life.
    pub state: JobState,
    /// The run configuration, with uploads named as the tenant named them.
    #[schema(value_type = Object)]
    pub config: Value,
    /// Why it ended as it did, or why it went back to the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Attempts so far (1 on its first run; more after restarts).
    pub attempts: u32,
    /// Whether a cancel was asked for and not yet carried out.
    pub cancel_requested: bool,
    /// When it was submitted, started (latest attempt) and finished (ms since the epoch).
    pub created_at: i64,
    /// When its latest attempt started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// When it finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// CPU-seconds its processes used.
    pub cpu_seconds: f64,
    /// Callback fuel its runs used.
    pub fuel: u64,
    /// Bytes its run directory takes.
    pub storage_bytes: u64,
    /// The run's `summary.json`, once it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub summary: Option<Value>,
}

/// One event of a job's stream: what the server saw happen, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobEvent {
    /// Position in the job's stream, from 1, without gaps (the SSE `id:`).
    pub seq: i64,
    /// When the server recorded it (ms since the epoch).
    pub at: i64,
    /// `state`, `epoch`, `decision`, `fault`, `log`, `batch`, `summary`.
    pub kind: String,
    /// What happened.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// An uploaded callback or dataset.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Upload {
    /// The name jobs refer to it by (`stop_at.wasm`, `iris.csv`).
    pub name: String,
    /// SHA-256 of its bytes (lowercase hex); jobs may refer to it as `sha256:HEX`.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// When it was uploaded (ms since the epoch).
    pub created_at: i64,
}

/// What kind of upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadKind {
    /// A callback component.
    Callback,
    /// A CSV dataset.
    Dataset,
}

impl UploadKind {
    /// Its table and artifact folder name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Callback => "callbacks",
            Self::Dataset => "datasets",
        }
    }
}

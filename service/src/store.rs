//! The job store: tenants, tokens, uploads, jobs, their attempts and event streams. One trait,
//! two backends ([`sqlite`], the embedded default, and PostgreSQL), one shared test suite.
//!
//! Rules every backend keeps:
//! - Every state change is one transaction, and a job's `state` event is written in the same
//!   transaction as the state itself.
//! - Every query a tenant can reach is scoped by tenant here, not in handlers: another tenant's
//!   job, upload or dataset is simply not found.
//! - Writes made for a running job name its attempt and are refused once the attempt no longer
//!   holds the job (it was requeued or ended): a lost process cannot write over its successor.

pub mod postgres;
mod rows;
pub mod schema;
pub mod sqlite;
#[cfg(test)]
mod suite;

use async_trait::async_trait;
use serde_json::Value;

use crate::model::{
    Job, JobEvent, JobState, Principal, Quota, Tenant, TenantId, Upload, UploadKind, Usage,
};

/// Errors of the job store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or could not be reached.
    #[error("job store: {0}")]
    Database(#[from] sqlx::Error),
    /// The database holds a schema this binary does not know (a newer trainrt wrote it).
    #[error(
        "the database's schema is version {found}, newer than this trainrt's {known}: run a newer trainrt"
    )]
    SchemaTooNew {
        /// Version in the database.
        found: i64,
        /// Latest version this binary knows.
        known: i64,
    },
    /// A stored value could not be read back (hand-edited rows).
    #[error("job store holds an unreadable {what}: {message}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it could not be read.
        message: String,
    },
    /// A name is taken (a tenant's).
    #[error("{0} already exists")]
    Exists(String),
    /// The tenant's queue is full.
    #[error("{queued} jobs are queued, the most your quota allows; wait for some to start")]
    QueueFull {
        /// Jobs queued now.
        queued: u32,
    },
    /// The write was made for an attempt that no longer holds its job.
    #[error("job {job}: attempt {attempt} no longer holds it")]
    Fenced {
        /// The job.
        job: String,
        /// The attempt that tried to write.
        attempt: u32,
    },
}

/// A job to queue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its id.
    pub id: String,
    /// The configuration as the tenant submitted it (shown back to the tenant).
    pub config: Value,
    /// The configuration with uploads resolved to content hashes (what runs).
    pub resolved: Value,
    /// The `Idempotency-Key` it was submitted with.
    pub idempotency_key: Option<String>,
}

/// A job a worker claimed.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The job's id.
    pub job: String,
    /// Its tenant.
    pub tenant: TenantId,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    /// The resolved configuration.
    pub resolved: Value,
    /// Whether an earlier attempt ran: resume from its checkpoint.
    pub resume: bool,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct Finish {
    /// The job's final state, or `queued` to run it again.
    pub state: JobState,
    /// Why.
    pub reason: Option<String>,
    /// The run's `summary.json`, if it wrote one.
    pub summary: Option<Value>,
}

/// What one attempt has used so far (absolute figures: charging twice changes nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AttemptUsage {
    /// CPU-seconds of its process.
    pub cpu_seconds: f64,
    /// Callback fuel of its run.
    pub fuel: u64,
    /// Bytes of the job's run directory now.
    pub storage_bytes: u64,
}

/// One attempt of a job: who ran it, from when to when (the lease history).
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The job.
    pub job: String,
    /// The tenant.
    pub tenant: TenantId,
    /// Its number.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: String,
    /// When it started (ms since the epoch).
    pub started_at: i64,
    /// When it ended, if it did.
    pub ended_at: Option<i64>,
}

/// A page of jobs, newest first, and the cursor of the next page.
#[derive(Debug, Clone)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `None` on the last.
    pub next: Option<String>,
}

/// The job store. See the module docs for the rules every backend keeps.
#[async_trait]
pub trait Store: Send + Sync {
    // --- tenants and tokens (the operator's) ---

    /// Creates a tenant.
    async fn create_tenant(&self, name: &str, quota: &Quota) -> Result<Tenant, StoreError>;
    /// Every tenant, by name.
    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// A tenant by name.
    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>, StoreError>;
    /// A tenant by id.
    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>, StoreError>;
    /// Replaces a tenant's quota; false when there is no such tenant.
    async fn set_quota(&self, name: &str, quota: &Quota) -> Result<bool, StoreError>;
    /// Stores a token's hash for a tenant, or for the operator (`None`).
    async fn add_token(
        &self,
        id: &str,
        hash: &str,
        tenant: Option<TenantId>,
    ) -> Result<(), StoreError>;
    /// Revokes a token by id; false when there is no such live token.
    async fn revoke_token(&self, id: &str) -> Result<bool, StoreError>;
    /// Who a token (by hash) belongs to, if it is live.
    async fn principal(&self, hash: &str) -> Result<Option<Principal>, StoreError>;

    // --- uploads ---

    /// Records an upload under `name` (a new upload under a taken name replaces the binding).
    async fn put_upload(
        &self,
        tenant: TenantId,
        kind: UploadKind,
        upload: &Upload,
    ) -> Result<(), StoreError>;
    /// A tenant's uploads of one kind, by name.
    async fn uploads(&self, tenant: TenantId, kind: UploadKind) -> Result<Vec<Upload>, StoreError>;
    /// One of a tenant's uploads, by name or by `sha256:HEX`.
    async fn upload(
        &self,
        tenant: TenantId,
        kind: UploadKind,
        name_or_hash: &str,
    ) -> Result<Option<Upload>, StoreError>;

    // --- jobs, as tenants see them ---

    /// Queues a job, unless the tenant already submitted one with the same idempotency key
    /// (then that job is returned, and `false`). Refused when the tenant's queue is full.
    async fn submit(&self, tenant: &Tenant, job: NewJob) -> Result<(Job, bool), StoreError>;
    /// A job, if `who` may see it.
    async fn job(&self, who: &Principal, id: &str) -> Result<Option<Job>, StoreError>;
    /// Jobs `who` may see, newest first, optionally in one state.
    async fn jobs(
        &self,
        who: &Principal,
        state: Option<JobState>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<JobPage, StoreError>;
    /// Cancels a queued job at once, or asks the process of a running one to stop. Returns the
    /// job as it is now (`None` if `who` may not see it).
    async fn cancel(&self, who: &Principal, id: &str) -> Result<Option<Job>, StoreError>;
    /// Events of a job after `after`, in order, at most `limit` (`None` if `who` may not see
    /// the job).
    async fn events(
        &self,
        who: &Principal,
        id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Option<Vec<JobEvent>>, StoreError>;
    /// What a tenant has used.
    async fn usage(&self, tenant: TenantId) -> Result<Usage, StoreError>;

    // --- jobs, as workers run them ---

    /// Claims the next job for `worker`, fairly across tenants (the tenant served longest ago
    /// first) and within each tenant's running-jobs quota; the job becomes `running` in the same
    /// transaction.
    async fn claim(&self, worker: &str) -> Result<Option<Claim>, StoreError>;
    /// Appends events to a running job's stream (numbered on from its last).
    async fn append_events(
        &self,
        job: &str,
        attempt: u32,
        events: &[(String, Value)],
    ) -> Result<(), StoreError>;
    /// Records what an attempt has used so far.
    async fn charge(&self, job: &str, attempt: u32, usage: AttemptUsage) -> Result<(), StoreError>;
    /// Whether a cancel was asked for the job.
    async fn cancel_requested(&self, job: &str) -> Result<bool, StoreError>;
    /// Ends an attempt: the job's final state, or back to the queue.
    async fn finish(&self, job: &str, attempt: u32, finish: Finish) -> Result<(), StoreError>;
    /// Puts every job `worker` was running back in the queue (its processes were lost: the
    /// server restarted); returns their ids.
    async fn requeue_lost(&self, worker: &str, reason: &str) -> Result<Vec<String>, StoreError>;
    /// The attempts of a tenant's jobs (every tenant's for `None`), oldest first.
    async fn attempts(&self, tenant: Option<TenantId>) -> Result<Vec<Attempt>, StoreError>;
}

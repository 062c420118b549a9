//! trainrt's multi-tenant training service: what `trainrt serve` runs.
//!
//! Tenants submit training jobs with their own, untrusted wasm callbacks; each job runs in its own
//! child process (`trainrt job-exec`), its callbacks sandboxed as in `trainrt run`. The parts,
//! each the one owner of its concept:
//!
//! - [`store`]: the job store, one [`Store`] trait with a SQLite backend (the embedded default)
//!   and a PostgreSQL one; every state change is one transaction, every query scoped by tenant.
//! - [`artifacts`]: uploaded callbacks and datasets, and the jobs' run directories.
//! - [`jobs`]: a job's life (the state machine) and what a tenant may submit (resolution of
//!   callbacks and data to artifacts, quotas, sandbox ceilings).
//! - [`scheduler`]: job slots, fair across tenants; [`executor`]: one child process per job.
//! - [`api`]: the HTTP layer (axum), thin: parse, authorise, call the above, map errors.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = trainrt_service::ServeConfig::new("trainrt-data".into());
//! trainrt_service::serve(config).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod artifacts;
pub mod auth;
pub mod executor;
pub mod job_process;
pub mod jobs;
pub mod model;
pub mod scheduler;
pub mod server;
pub mod store;

pub use server::{ServeConfig, serve};
pub use store::{Store, StoreError};

/// Milliseconds since the Unix epoch: how the store keeps times (the same in both backends).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

//! Reading rows back into records, the same for every backend: each backend's row type says how
//! it reads the five kinds of column the schema has ([`Columns`]), and the rest is shared.

use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::{Attempt, StoreError};
use crate::model::{Job, JobEvent, JobState, Tenant, Upload};

/// The columns of a row, by name, as the schema's types.
pub trait Columns {
    /// A 64-bit integer.
    fn int(&self, name: &str) -> Result<i64, sqlx::Error>;
    /// A nullable 64-bit integer.
    fn opt_int(&self, name: &str) -> Result<Option<i64>, sqlx::Error>;
    /// A double.
    fn real(&self, name: &str) -> Result<f64, sqlx::Error>;
    /// Text.
    fn text(&self, name: &str) -> Result<String, sqlx::Error>;
    /// Nullable text.
    fn opt_text(&self, name: &str) -> Result<Option<String>, sqlx::Error>;
}

macro_rules! columns {
    ($($row:ty),*) => {$(
        impl Columns for $row {
            fn int(&self, name: &str) -> Result<i64, sqlx::Error> {
                self.try_get(name)
            }
            fn opt_int(&self, name: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(name)
            }
            fn real(&self, name: &str) -> Result<f64, sqlx::Error> {
                self.try_get(name)
            }
            fn text(&self, name: &str) -> Result<String, sqlx::Error> {
                self.try_get(name)
            }
            fn opt_text(&self, name: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(name)
            }
        }
    )*};
}
columns!(SqliteRow, PgRow);

/// The error for a stored JSON value that does not parse.
pub fn corrupt(what: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |e| StoreError::Corrupt {
        what,
        message: e.to_string(),
    }
}

/// A count or size as the database keeps it.
pub fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The `state` event written with every state change.
pub fn state_event(state: JobState, reason: Option<&str>, attempt: u32) -> (String, Value) {
    let mut data = serde_json::json!({"state": state, "attempt": attempt});
    if let Some(reason) = reason {
        data["reason"] = Value::from(reason);
    }
    ("state".into(), data)
}

/// A `tenants` row.
pub fn tenant(row: &impl Columns) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: row.int("id")?,
        name: row.text("name")?,
        quota: serde_json::from_str(&row.text("quota")?).map_err(corrupt("tenant quota"))?,
        created_at: row.int("created_at")?,
    })
}

/// A job row with its tenant's name and its attempts' usage (the backends' `JOB_COLUMNS`).
pub fn job(row: &impl Columns) -> Result<Job, StoreError> {
    let state = row.text("state")?;
    Ok(Job {
        id: row.text("id")?,
        tenant: row.text("tenant")?,
        state: state.parse().map_err(|message| StoreError::Corrupt {
            what: "job state",
            message,
        })?,
        config: serde_json::from_str(&row.text("config")?).map_err(corrupt("job config"))?,
        reason: row.opt_text("reason")?,
        attempts: row.int("attempts")? as u32,
        cancel_requested: row.int("cancel_requested")? != 0,
        created_at: row.int("created_at")?,
        started_at: row.opt_int("started_at")?,
        finished_at: row.opt_int("finished_at")?,
        cpu_seconds: row.real("cpu_seconds")?,
        fuel: row.int("fuel")? as u64,
        storage_bytes: row.int("storage_bytes")? as u64,
        summary: row
            .opt_text("summary")?
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(corrupt("job summary"))?,
    })
}

/// An `uploads` row.
pub fn upload(row: &impl Columns) -> Result<Upload, StoreError> {
    Ok(Upload {
        name: row.text("name")?,
        sha256: row.text("sha256")?,
        bytes: row.int("bytes")? as u64,
        created_at: row.int("created_at")?,
    })
}

/// A `job_events` row.
pub fn event(row: &impl Columns) -> Result<JobEvent, StoreError> {
    Ok(JobEvent {
        seq: row.int("seq")?,
        at: row.int("at")?,
        kind: row.text("kind")?,
        data: serde_json::from_str(&row.text("data")?).map_err(corrupt("job event"))?,
    })
}

/// An `attempts` row.
pub fn attempt(row: &impl Columns) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        job: row.text("job_id")?,
        tenant: row.int("tenant_id")?,
        attempt: row.int("attempt")? as u32,
        worker: row.text("worker")?,
        started_at: row.int("started_at")?,
        ended_at: row.opt_int("ended_at")?,
    })
}

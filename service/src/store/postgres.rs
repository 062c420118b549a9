//! The PostgreSQL backend: for several API servers and workers on one database. Claims lock the
//! job they take (`FOR UPDATE SKIP LOCKED`, so claimers never wait on each other) and then the
//! tenant's row, and count its running jobs again under that lock, so no race between workers
//! can put a tenant over its running quota. Writes for a running job lock its row first, which
//! orders them against a claim, a cancel or a requeue of the same job.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use super::rows::{self, corrupt, state_event, to_i64};
use super::schema;
use super::{Attempt, AttemptUsage, Claim, Finish, JobPage, NewJob, Store, StoreError};
use crate::model::{
    Job, JobEvent, JobState, Principal, Quota, Tenant, TenantId, Upload, UploadKind, Usage,
};
use crate::now_ms;

/// A job row with its tenant's name and its attempts' usage.
const JOB_COLUMNS: &str = "j.seq, j.id, t.name AS tenant, j.state, j.config, j.reason, j.attempts,
    j.cancel_requested, j.storage_bytes, j.summary, j.created_at, j.started_at, j.finished_at,
    (SELECT COALESCE(SUM(a.cpu_seconds), 0.0) FROM attempts a WHERE a.job_id = j.id) AS cpu_seconds,
    (SELECT COALESCE(SUM(a.fuel), 0)::BIGINT FROM attempts a WHERE a.job_id = j.id) AS fuel";

/// Serialises schema migrations across every process that opens the database.
const MIGRATION_LOCK: i64 = 0x0074_7261_696e_7274; // "trainrt"

/// The PostgreSQL job store.
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host/db`) and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        migrate(&pool).await?;
        Ok(Self { pool })
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

/// Applies the migrations the database lacks, in one transaction holding an advisory lock, so
/// servers starting together migrate once.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations")
            .fetch_one(&mut *tx)
            .await?;
    if current > schema::latest() {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: schema::latest(),
        });
    }
    for migration in schema::MIGRATIONS.iter().filter(|m| m.version > current) {
        sqlx::raw_sql(&schema::render(migration.template, &schema::POSTGRES))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(migration.name)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Appends events to a job's stream inside `tx` (which holds the job's row lock).
async fn append(
    tx: &mut Transaction<'_, Postgres>,
    job: &str,
    events: &[(String, Value)],
) -> Result<(), StoreError> {
    let last: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(seq), 0)::BIGINT FROM job_events WHERE job_id = $1",
    )
    .bind(job)
    .fetch_one(&mut **tx)
    .await?;
    let at = now_ms();
    for (i, (kind, data)) in events.iter().enumerate() {
        sqlx::query(
            "INSERT INTO job_events (job_id, seq, at, kind, data) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(job)
        .bind(last + 1 + i as i64)
        .bind(at)
        .bind(kind)
        .bind(data.to_string())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Locks the job's row; whether `attempt` still holds it.
async fn holds(
    tx: &mut Transaction<'_, Postgres>,
    job: &str,
    attempt: u32,
) -> Result<bool, StoreError> {
    let held: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM jobs WHERE id = $1 AND attempts = $2 AND state = 'running' FOR UPDATE",
    )
    .bind(job)
    .bind(i64::from(attempt))
    .fetch_optional(&mut **tx)
    .await?;
    Ok(held.is_some())
}

fn fenced(job: &str, attempt: u32) -> StoreError {
    StoreError::Fenced {
        job: job.into(),
        attempt,
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_tenant(&self, name: &str, quota: &Quota) -> Result<Tenant, StoreError> {
        let quota_json = serde_json::to_string(quota).map_err(corrupt("tenant quota"))?;
        let created_at = now_ms();
        let result = sqlx::query(
            "INSERT INTO tenants (name, quota, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(name)
        .bind(&quota_json)
        .bind(created_at)
        .fetch_one(&self.pool)
        .await;
        match result {
            Ok(row) => Ok(Tenant {
                id: row.try_get("id")?,
                name: name.to_string(),
                quota: quota.clone(),
                created_at,
            }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Exists(format!("tenant '{name}'")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        sqlx::query("SELECT id, name, quota, created_at FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::tenant)
            .collect()
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>, StoreError> {
        sqlx::query("SELECT id, name, quota, created_at FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(rows::tenant)
            .transpose()
    }

    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>, StoreError> {
        sqlx::query("SELECT id, name, quota, created_at FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(rows::tenant)
            .transpose()
    }

    async fn set_quota(&self, name: &str, quota: &Quota) -> Result<bool, StoreError> {
        let quota = serde_json::to_string(quota).map_err(corrupt("tenant quota"))?;
        let done = sqlx::query("UPDATE tenants SET quota = $1 WHERE name = $2")
            .bind(quota)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_token(
        &self,
        id: &str,
        hash: &str,
        tenant: Option<TenantId>,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO tokens (id, hash, tenant_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(hash)
            .bind(tenant)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn principal(&self, hash: &str) -> Result<Option<Principal>, StoreError> {
        let row =
            sqlx::query("SELECT tenant_id FROM tokens WHERE hash = $1 AND revoked_at IS NULL")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            None => None,
            Some(row) => Some(match row.try_get::<Option<i64>, _>("tenant_id")? {
                Some(id) => Principal::Tenant(id),
                None => Principal::Operator,
            }),
        })
    }

    async fn put_upload(
        &self,
        tenant: TenantId,
        kind: UploadKind,
        upload: &Upload,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO uploads (tenant_id, kind, name, sha256, bytes, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, kind, name) DO UPDATE SET
                sha256 = excluded.sha256, bytes = excluded.bytes, created_at = excluded.created_at",
        )
        .bind(tenant)
        .bind(kind.as_str())
        .bind(&upload.name)
        .bind(&upload.sha256)
        .bind(to_i64(upload.bytes))
        .bind(upload.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn uploads(&self, tenant: TenantId, kind: UploadKind) -> Result<Vec<Upload>, StoreError> {
        sqlx::query(
            "SELECT name, sha256, bytes, created_at FROM uploads
             WHERE tenant_id = $1 AND kind = $2 ORDER BY name",
        )
        .bind(tenant)
        .bind(kind.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::upload)
        .collect()
    }

    async fn upload(
        &self,
        tenant: TenantId,
        kind: UploadKind,
        name_or_hash: &str,
    ) -> Result<Option<Upload>, StoreError> {
        let (column, value) = match name_or_hash.strip_prefix("sha256:") {
            Some(hash) => ("sha256", hash),
            None => ("name", name_or_hash),
        };
        sqlx::query(&format!(
            "SELECT name, sha256, bytes, created_at FROM uploads
             WHERE tenant_id = $1 AND kind = $2 AND {column} = $3 ORDER BY created_at DESC LIMIT 1"
        ))
        .bind(tenant)
        .bind(kind.as_str())
        .bind(value)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(rows::upload)
        .transpose()
    }

    async fn submit(&self, tenant: &Tenant, job: NewJob) -> Result<(Job, bool), StoreError> {
        let who = Principal::Tenant(tenant.id);
        let mut tx = self.pool.begin().await?;
        // One submit per tenant at a time: the queue count and the idempotency key hold.
        sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant.id)
            .execute(&mut *tx)
            .await?;
        if let Some(key) = &job.idempotency_key {
            let existing: Option<String> = sqlx::query_scalar(
                "SELECT id FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2",
            )
            .bind(tenant.id)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = existing {
                tx.commit().await?;
                let job = self.job(&who, &id).await?.ok_or(StoreError::Corrupt {
                    what: "job",
                    message: format!("{id} vanished"),
                })?;
                return Ok((job, false));
            }
        }
        let queued: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE tenant_id = $1 AND state = 'queued'",
        )
        .bind(tenant.id)
        .fetch_one(&mut *tx)
        .await?;
        if queued >= i64::from(tenant.quota.max_queued) {
            return Err(StoreError::QueueFull {
                queued: queued as u32,
            });
        }
        sqlx::query(
            "INSERT INTO jobs (id, tenant_id, state, config, resolved, idempotency_key, created_at)
             VALUES ($1, $2, 'queued', $3, $4, $5, $6)",
        )
        .bind(&job.id)
        .bind(tenant.id)
        .bind(job.config.to_string())
        .bind(job.resolved.to_string())
        .bind(&job.idempotency_key)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        append(&mut tx, &job.id, &[state_event(JobState::Queued, None, 0)]).await?;
        tx.commit().await?;
        let created = self.job(&who, &job.id).await?.ok_or(StoreError::Corrupt {
            what: "job",
            message: format!("{} vanished", job.id),
        })?;
        Ok((created, true))
    }

    async fn job(&self, who: &Principal, id: &str) -> Result<Option<Job>, StoreError> {
        sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs j JOIN tenants t ON t.id = j.tenant_id
             WHERE j.id = $1 AND ($2::BIGINT IS NULL OR j.tenant_id = $2)"
        ))
        .bind(id)
        .bind(who.scope())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(rows::job)
        .transpose()
    }

    async fn jobs(
        &self,
        who: &Principal,
        state: Option<JobState>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<JobPage, StoreError> {
        let before = cursor
            .and_then(|c| c.parse::<i64>().ok())
            .unwrap_or(i64::MAX);
        let found = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs j JOIN tenants t ON t.id = j.tenant_id
             WHERE ($1::BIGINT IS NULL OR j.tenant_id = $1) AND ($2::TEXT IS NULL OR j.state = $2)
               AND j.seq < $3
             ORDER BY j.seq DESC LIMIT $4"
        ))
        .bind(who.scope())
        .bind(state.map(JobState::as_str))
        .bind(before)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = found.len() > limit as usize;
        let page = &found[..found.len().min(limit as usize)];
        let next = match page.last() {
            Some(last) if more => Some(last.try_get::<i64, _>("seq")?.to_string()),
            _ => None,
        };
        Ok(JobPage {
            jobs: page.iter().map(rows::job).collect::<Result<_, _>>()?,
            next,
        })
    }

    async fn cancel(&self, who: &Principal, id: &str) -> Result<Option<Job>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT state, attempts FROM jobs WHERE id = $1 AND ($2::BIGINT IS NULL OR tenant_id = $2)
             FOR UPDATE",
        )
        .bind(id)
        .bind(who.scope())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let state: String = row.try_get("state")?;
        let attempts = row.try_get::<i64, _>("attempts")? as u32;
        match state.as_str() {
            "queued" => {
                let reason = "cancelled before it started";
                sqlx::query("UPDATE jobs SET state = 'cancelled', reason = $1, finished_at = $2 WHERE id = $3")
                    .bind(reason)
                    .bind(now_ms())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                append(
                    &mut tx,
                    id,
                    &[state_event(JobState::Cancelled, Some(reason), attempts)],
                )
                .await?;
            }
            "running" => {
                sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            _ => {}
        }
        tx.commit().await?;
        self.job(who, id).await
    }

    async fn events(
        &self,
        who: &Principal,
        id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Option<Vec<JobEvent>>, StoreError> {
        if self.job(who, id).await?.is_none() {
            return Ok(None);
        }
        sqlx::query(
            "SELECT seq, at, kind, data FROM job_events WHERE job_id = $1 AND seq > $2
             ORDER BY seq LIMIT $3",
        )
        .bind(id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::event)
        .collect::<Result<Vec<_>, StoreError>>()
        .map(Some)
    }

    async fn usage(&self, tenant: TenantId) -> Result<Usage, StoreError> {
        let row = sqlx::query(
            "SELECT
                (SELECT COUNT(*) FROM jobs WHERE tenant_id = $1 AND state = 'running') AS running,
                (SELECT COUNT(*) FROM jobs WHERE tenant_id = $1 AND state = 'queued') AS queued,
                (SELECT COALESCE(SUM(cpu_seconds), 0.0) FROM attempts WHERE tenant_id = $1) AS cpu,
                (SELECT COALESCE(SUM(fuel), 0)::BIGINT FROM attempts WHERE tenant_id = $1) AS fuel,
                ((SELECT COALESCE(SUM(storage_bytes), 0) FROM jobs WHERE tenant_id = $1)
                  + (SELECT COALESCE(SUM(bytes), 0) FROM
                       (SELECT DISTINCT kind, sha256, bytes FROM uploads WHERE tenant_id = $1) u)
                )::BIGINT AS storage",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?;
        Ok(Usage {
            running: row.try_get::<i64, _>("running")? as u32,
            queued: row.try_get::<i64, _>("queued")? as u32,
            cpu_seconds: row.try_get("cpu")?,
            fuel: row.try_get::<i64, _>("fuel")? as u64,
            storage_bytes: row.try_get::<i64, _>("storage")? as u64,
        })
    }

    async fn claim(&self, worker: &str) -> Result<Option<Claim>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT j.id, j.tenant_id, j.attempts, j.resolved,
                    (t.quota::jsonb ->> 'max_running')::BIGINT AS max_running
             FROM jobs j JOIN tenants t ON t.id = j.tenant_id
             WHERE j.state = 'queued'
               AND (SELECT COUNT(*) FROM jobs r WHERE r.tenant_id = j.tenant_id AND r.state = 'running')
                   < (t.quota::jsonb ->> 'max_running')::BIGINT
             ORDER BY t.last_served, j.seq LIMIT 1
             FOR UPDATE OF j SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.try_get("id")?;
        let tenant: TenantId = row.try_get("tenant_id")?;
        let max_running: i64 = row.try_get("max_running")?;
        // Another claimer may have taken this tenant's last slot since the query's snapshot:
        // count again holding the tenant's row.
        sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        let running: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE tenant_id = $1 AND state = 'running'",
        )
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
        if running >= max_running {
            return Ok(None);
        }
        let attempt = row.try_get::<i64, _>("attempts")? as u32 + 1;
        let resolved: String = row.try_get("resolved")?;
        let now = now_ms();
        sqlx::query("UPDATE jobs SET state = 'running', attempts = $1, started_at = $2, reason = NULL WHERE id = $3")
            .bind(i64::from(attempt))
            .bind(now)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE tenants SET last_served = (SELECT COALESCE(MAX(last_served), 0) + 1 FROM tenants)
             WHERE id = $1",
        )
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO attempts (job_id, attempt, tenant_id, worker, started_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(i64::from(attempt))
            .bind(tenant)
            .bind(worker)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        append(
            &mut tx,
            &id,
            &[state_event(JobState::Running, None, attempt)],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Claim {
            job: id,
            tenant,
            attempt,
            resolved: serde_json::from_str(&resolved).map_err(corrupt("job config"))?,
            resume: attempt > 1,
        }))
    }

    async fn append_events(
        &self,
        job: &str,
        attempt: u32,
        events: &[(String, Value)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if !holds(&mut tx, job, attempt).await? {
            return Err(fenced(job, attempt));
        }
        append(&mut tx, job, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn charge(&self, job: &str, attempt: u32, usage: AttemptUsage) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if !holds(&mut tx, job, attempt).await? {
            return Err(fenced(job, attempt));
        }
        sqlx::query(
            "UPDATE attempts SET cpu_seconds = $1, fuel = $2 WHERE job_id = $3 AND attempt = $4",
        )
        .bind(usage.cpu_seconds)
        .bind(to_i64(usage.fuel))
        .bind(job)
        .bind(i64::from(attempt))
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE jobs SET storage_bytes = $1 WHERE id = $2")
            .bind(to_i64(usage.storage_bytes))
            .bind(job)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn cancel_requested(&self, job: &str) -> Result<bool, StoreError> {
        let flag: Option<i64> =
            sqlx::query_scalar("SELECT cancel_requested FROM jobs WHERE id = $1")
                .bind(job)
                .fetch_optional(&self.pool)
                .await?;
        Ok(flag == Some(1))
    }

    async fn finish(&self, job: &str, attempt: u32, finish: Finish) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if !holds(&mut tx, job, attempt).await? || !JobState::Running.may_become(finish.state) {
            return Err(fenced(job, attempt));
        }
        let now = now_ms();
        let finished_at = finish.state.is_final().then_some(now);
        sqlx::query(
            "UPDATE jobs SET state = $1, reason = $2, finished_at = $3, summary = COALESCE($4, summary),
                cancel_requested = CASE WHEN $5 THEN 0 ELSE cancel_requested END
             WHERE id = $6",
        )
        .bind(finish.state.as_str())
        .bind(&finish.reason)
        .bind(finished_at)
        .bind(finish.summary.as_ref().map(Value::to_string))
        .bind(finish.state.is_final())
        .bind(job)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE attempts SET ended_at = $1 WHERE job_id = $2 AND attempt = $3")
            .bind(now)
            .bind(job)
            .bind(i64::from(attempt))
            .execute(&mut *tx)
            .await?;
        append(
            &mut tx,
            job,
            &[state_event(finish.state, finish.reason.as_deref(), attempt)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn requeue_lost(&self, worker: &str, reason: &str) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let lost: Vec<(String, i64)> = sqlx::query_as(
            "SELECT j.id, j.attempts FROM jobs j JOIN attempts a
               ON a.job_id = j.id AND a.attempt = j.attempts
             WHERE j.state = 'running' AND a.worker = $1
             FOR UPDATE OF j",
        )
        .bind(worker)
        .fetch_all(&mut *tx)
        .await?;
        let now = now_ms();
        for (id, attempt) in &lost {
            sqlx::query("UPDATE jobs SET state = 'queued', reason = $1 WHERE id = $2")
                .bind(reason)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE attempts SET ended_at = $1 WHERE job_id = $2 AND attempt = $3")
                .bind(now)
                .bind(id)
                .bind(attempt)
                .execute(&mut *tx)
                .await?;
            append(
                &mut tx,
                id,
                &[state_event(JobState::Queued, Some(reason), *attempt as u32)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(lost.into_iter().map(|(id, _)| id).collect())
    }

    async fn attempts(&self, tenant: Option<TenantId>) -> Result<Vec<Attempt>, StoreError> {
        sqlx::query(
            "SELECT job_id, tenant_id, attempt, worker, started_at, ended_at FROM attempts
             WHERE ($1::BIGINT IS NULL OR tenant_id = $1) ORDER BY started_at, job_id, attempt",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::attempt)
        .collect()
    }
}

#[cfg(test)]
mod tests;

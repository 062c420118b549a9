//! `/v1/jobs`: submit, list, look at and cancel jobs, and read what their runs recorded.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ErrorBody, State, parse_json};
use crate::auth::new_job_id;
use crate::jobs::{check_usage, resolve};
use crate::model::{Job, JobState};
use crate::store::NewJob;

/// The body was too large or unreadable.
pub fn body_error(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "body_too_large"
    } else {
        "bad_request"
    };
    ApiError::new(status, code, rejection.body_text())
}

/// Queues a job. The body is a run configuration as `trainrt run` takes it (the fields of its
/// `config.json`); callbacks and data name bundled ones or the tenant's uploads. With an
/// `Idempotency-Key` header, submitting again returns the first job (200 instead of 201).
#[utoipa::path(post, path = "/jobs", tag = "jobs",
    request_body(content = Object, description = "A run configuration"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 201, description = "Queued", body = Job),
        (status = 200, description = "Already submitted with this Idempotency-Key", body = Job),
        (status = 422, description = "Invalid configuration", body = ErrorBody),
        (status = 403, description = "A quota is used up", body = ErrorBody),
        (status = 429, description = "Queue full or rate limited", body = ErrorBody)))]
pub async fn submit(
    state: State,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = state.tenant(&headers).await?;
    let body: Value = parse_json(&body.map_err(body_error)?)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 200)
                .ok_or_else(|| {
                    ApiError::bad_request("Idempotency-Key must be 1-200 visible ASCII characters")
                })?
                .to_string(),
        ),
    };
    let usage = state.store.usage(tenant.id).await?;
    check_usage(&tenant, &usage)?;
    let submission = resolve(state.store.as_ref(), &tenant, body).await?;
    let to_json = |c| serde_json::to_value(c).unwrap_or(Value::Null);
    let new = NewJob {
        id: new_job_id(),
        config: to_json(&submission.shown),
        resolved: to_json(&submission.resolved),
        idempotency_key: key,
    };
    let (job, created) = state.store.submit(&tenant, new).await?;
    let status = if created {
        state.wake.notify_one();
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(job)).into_response())
}

/// Query of `GET /v1/jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only jobs in this state.
    state: Option<String>,
    /// The `next` of the previous page.
    cursor: Option<String>,
    /// Jobs per page (1-500, default 50).
    limit: Option<u32>,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    /// Newest first.
    jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The caller's jobs (the operator's token: every tenant's), newest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody)))]
pub async fn list(
    state: State,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let who = state.caller(&headers).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let job_state = query
        .state
        .as_deref()
        .map(str::parse::<JobState>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    if let Some(cursor) = &query.cursor
        && cursor.parse::<u64>().is_err()
    {
        return Err(ApiError::bad_request("cursor is not one this API gave out"));
    }
    let page = state
        .store
        .jobs(&who, job_state, query.cursor.as_deref(), limit)
        .await?;
    Ok(Json(JobList {
        jobs: page.jobs,
        next: page.next,
    }))
}

/// One job.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
pub async fn get(
    state: State,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let who = state.caller(&headers).await?;
    let job = state
        .store
        .job(&who, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    Ok(Json(job))
}

/// Cancels a job: a queued one at once; a running one finishes its step, writes its last
/// checkpoint and ends `cancelled` (it is killed if it takes longer than 30 s).
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path)),
    responses((status = 202, description = "Cancelled or being cancelled", body = Job),
        (status = 404, body = ErrorBody)))]
pub async fn cancel(
    state: State,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = state.caller(&headers).await?;
    let job = state
        .store
        .cancel(&who, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// A JSON-lines file of a job's run directory, as an array.
async fn run_records(
    state: &State,
    headers: &HeaderMap,
    id: &str,
    file: &str,
) -> Result<Json<Vec<Value>>, ApiError> {
    let who = state.caller(headers).await?;
    state
        .store
        .job(&who, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    let path = state.artifacts.run_dir(id).join(file);
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "io",
                format!("cannot read {file}: {e}"),
            ));
        }
    };
    // A line being written as we read is skipped, not an error.
    Ok(Json(
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    ))
}

/// The run's `metrics.jsonl`: one object per epoch.
#[utoipa::path(get, path = "/jobs/{id}/metrics", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = Vec<Object>), (status = 404, body = ErrorBody)))]
pub async fn metrics(
    state: State,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    run_records(&state, &headers, &id, "metrics.jsonl").await
}

/// The run's `decisions.jsonl`: every decision and what became of it.
#[utoipa::path(get, path = "/jobs/{id}/decisions", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = Vec<Object>), (status = 404, body = ErrorBody)))]
pub async fn decisions(
    state: State,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    run_records(&state, &headers, &id, "decisions.jsonl").await
}

/// The run's `faults.jsonl`: every callback fault and what the host did.
#[utoipa::path(get, path = "/jobs/{id}/faults", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = Vec<Object>), (status = 404, body = ErrorBody)))]
pub async fn faults(
    state: State,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    run_records(&state, &headers, &id, "faults.jsonl").await
}

/// The run's `log.jsonl`: what its callbacks logged.
#[utoipa::path(get, path = "/jobs/{id}/logs", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = Vec<Object>), (status = 404, body = ErrorBody)))]
pub async fn logs(
    state: State,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    run_records(&state, &headers, &id, "log.jsonl").await
}

/// A checkpoint of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointEntry {
    /// Its tag (`last`, `best`, …): download it at `checkpoints/{tag}`.
    tag: String,
    /// Its size.
    bytes: u64,
}

/// The run's checkpoints.
#[utoipa::path(get, path = "/jobs/{id}/checkpoints", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = Vec<CheckpointEntry>), (status = 404, body = ErrorBody)))]
pub async fn checkpoints(
    state: State,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Vec<CheckpointEntry>>, ApiError> {
    let who = state.caller(&headers).await?;
    state
        .store
        .job(&who, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    let dir = state.artifacts.run_dir(&id).join("checkpoints");
    let mut entries = Vec::new();
    if let Ok(read) = std::fs::read_dir(dir) {
        for entry in read.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(tag) = name.strip_suffix(".safetensors") {
                let bytes = entry.metadata().map_or(0, |m| m.len());
                entries.push(CheckpointEntry {
                    tag: tag.to_string(),
                    bytes,
                });
            }
        }
    }
    entries.sort_by(|a, b| a.tag.cmp(&b.tag));
    Ok(Json(entries))
}

/// Downloads a checkpoint (safetensors: weights, optimizer state, callback states).
#[utoipa::path(get, path = "/jobs/{id}/checkpoints/{tag}", tag = "runs",
    params(("id" = String, Path), ("tag" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", description = "The safetensors file"),
        (status = 404, body = ErrorBody)))]
pub async fn checkpoint(
    state: State,
    headers: HeaderMap,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let who = state.caller(&headers).await?;
    state
        .store
        .job(&who, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    // Tags are validated when saved; anything else here is not one.
    if tag.is_empty()
        || !tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::not_found("checkpoint"));
    }
    let path = state
        .artifacts
        .run_dir(&id)
        .join("checkpoints")
        .join(format!("{tag}.safetensors"));
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiError::not_found("checkpoint"))?;
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let stream = tokio_util_stream(file);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{tag}.safetensors\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A file as a stream of chunks.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

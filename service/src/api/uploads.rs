//! `/v1/callbacks` and `/v1/datasets`: a tenant's uploads, content-addressed; and its quota.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use trainrt::callback::CompiledCallback;
use trainrt::{Limits, error_chain};
use utoipa::{IntoParams, ToSchema};

use super::jobs::body_error;
use super::{ApiError, ErrorBody, State};
use crate::model::{Quota, Upload, UploadKind, Usage};

/// Query of an upload.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The name jobs will refer to it by (`stop_at.wasm`, `iris.csv`): letters, digits, `.`,
    /// `-`, `_`; a callback's ends in `.wasm`.
    name: String,
    /// Callbacks only: accept a component that imports `wasi:filesystem` or `wasi:sockets`
    /// (language runtimes do), to be linked with nothing behind them (`inert_wasi` in a job).
    #[serde(default)]
    inert_wasi: bool,
}

fn check_name(name: &str, kind: UploadKind) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !valid {
        return Err(ApiError::bad_request(format!(
            "upload name '{name}' must be 1-100 letters, digits, '.', '-' or '_', not starting with '.'"
        )));
    }
    if kind == UploadKind::Callback && !name.ends_with(".wasm") {
        return Err(ApiError::bad_request(format!(
            "callback name '{name}' must end in .wasm"
        )));
    }
    Ok(())
}

/// Uploads a callback component (the body, raw bytes), checked as `trainrt check` does:
/// anything that is not a callback-world component this service can run is refused, saying why.
#[utoipa::path(post, path = "/callbacks", tag = "uploads", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses((status = 201, body = Upload),
        (status = 422, description = "Not a callback component this service can run", body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn upload_callback(
    state: State,
    headers: HeaderMap,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = state.tenant(&headers).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_name(&query.name, UploadKind::Callback)?;
    let bytes = body.map_err(body_error)?;
    if bytes.len() > state.limits.callback_bytes {
        return Err(too_large("callback", state.limits.callback_bytes));
    }
    let limits: Limits = tenant.quota.sandbox.clone();
    let sandbox = Arc::clone(&state.sandbox);
    let (name, inert) = (query.name.clone(), query.inert_wasi);
    let checked = bytes.clone();
    tokio::task::spawn_blocking(move || {
        let compiled = CompiledCallback::with_limits(&sandbox, &name, &checked, &limits)?;
        compiled.check_grants(&sandbox, &name, inert)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_component",
            error_chain(&e),
        )
    })?;
    store_upload(&state, tenant.id, UploadKind::Callback, &query.name, &bytes).await
}

/// Uploads a CSV dataset (the body): numeric feature columns and an integer label column.
#[utoipa::path(post, path = "/datasets", tag = "uploads", params(UploadQuery),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 201, body = Upload), (status = 422, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn upload_dataset(
    state: State,
    headers: HeaderMap,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = state.tenant(&headers).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_name(&query.name, UploadKind::Dataset)?;
    let bytes = body.map_err(body_error)?;
    if bytes.len() > state.limits.dataset_bytes {
        return Err(too_large("dataset", state.limits.dataset_bytes));
    }
    if std::str::from_utf8(&bytes).is_err() || bytes.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_dataset",
            "a dataset is a non-empty UTF-8 CSV file",
        ));
    }
    store_upload(&state, tenant.id, UploadKind::Dataset, &query.name, &bytes).await
}

fn too_large(what: &str, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("a {what} upload may be at most {limit} bytes"),
    )
}

async fn store_upload(
    state: &State,
    tenant: i64,
    kind: UploadKind,
    name: &str,
    bytes: &Bytes,
) -> Result<Response, ApiError> {
    let artifacts = state.artifacts.clone();
    let data = bytes.clone();
    let sha256 = tokio::task::spawn_blocking(move || artifacts.put(kind, &data))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| {
            ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage",
                format!("cannot store the upload: {e}"),
            )
        })?;
    let upload = Upload {
        name: name.to_string(),
        sha256,
        bytes: bytes.len() as u64,
        created_at: crate::now_ms(),
    };
    state.store.put_upload(tenant, kind, &upload).await?;
    Ok((StatusCode::CREATED, Json(upload)).into_response())
}

/// The tenant's callbacks.
#[utoipa::path(get, path = "/callbacks", tag = "uploads", responses((status = 200, body = Vec<Upload>)))]
pub async fn list_callbacks(
    state: State,
    headers: HeaderMap,
) -> Result<Json<Vec<Upload>>, ApiError> {
    let tenant = state.tenant(&headers).await?;
    Ok(Json(
        state.store.uploads(tenant.id, UploadKind::Callback).await?,
    ))
}

/// The tenant's datasets.
#[utoipa::path(get, path = "/datasets", tag = "uploads", responses((status = 200, body = Vec<Upload>)))]
pub async fn list_datasets(
    state: State,
    headers: HeaderMap,
) -> Result<Json<Vec<Upload>>, ApiError> {
    let tenant = state.tenant(&headers).await?;
    Ok(Json(
        state.store.uploads(tenant.id, UploadKind::Dataset).await?,
    ))
}

/// A tenant's quota and what it has used.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaReport {
    /// The tenant.
    tenant: String,
    /// What it may use.
    quota: Quota,
    /// What it has used.
    usage: Usage,
}

/// The calling tenant's quota and usage.
#[utoipa::path(get, path = "/quota", tag = "uploads", responses((status = 200, body = QuotaReport)))]
pub async fn quota(state: State, headers: HeaderMap) -> Result<Json<QuotaReport>, ApiError> {
    let tenant = state.tenant(&headers).await?;
    let usage = state.store.usage(tenant.id).await?;
    Ok(Json(QuotaReport {
        tenant: tenant.name,
        quota: tenant.quota,
        usage,
    }))
}

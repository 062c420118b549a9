//! `/v1/admin`: the operator's endpoints (tenants, quotas, tokens, the attempts history). Every
//! one answers 404 to a tenant's token, as if it did not exist.

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::jobs::body_error;
use super::{ApiError, ErrorBody, State, parse_json};
use crate::auth::issue_token;
use crate::model::{Principal, Quota, Tenant, Usage, check_tenant_name};

async fn operator(state: &State, headers: &HeaderMap) -> Result<(), ApiError> {
    match state.caller(headers).await? {
        Principal::Operator => Ok(()),
        Principal::Tenant(_) => Err(ApiError::not_found("endpoint")),
    }
}

/// A new tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// Unique name: letters, digits, `-`, `_`.
    name: String,
    /// Its quota (defaults for what is left out).
    #[serde(default)]
    quota: Quota,
}

/// A token, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedToken {
    /// The tenant it acts for (absent for an operator token).
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    /// Its id, for revoking it.
    id: String,
    /// The secret: shown only now.
    token: String,
}

/// Creates a tenant and its first token.
#[utoipa::path(post, path = "/admin/tenants", tag = "admin", request_body = NewTenant,
    responses((status = 201, body = IssuedToken), (status = 409, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_tenant(
    state: State,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    operator(&state, &headers).await?;
    let new: NewTenant = parse_json(&body.map_err(body_error)?)?;
    check_tenant_name(&new.name).map_err(ApiError::bad_request)?;
    let tenant = state.store.create_tenant(&new.name, &new.quota).await?;
    let token = issue_token(state.store.as_ref(), Some(tenant.id)).await?;
    let issued = IssuedToken {
        tenant: Some(tenant.name),
        id: token.id,
        token: token.secret,
    };
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

/// A tenant with its usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantReport {
    /// The tenant.
    #[serde(flatten)]
    tenant: Tenant,
    /// What it has used.
    usage: Usage,
}

/// Every tenant, with its quota and usage.
#[utoipa::path(get, path = "/admin/tenants", tag = "admin",
    responses((status = 200, body = Vec<TenantReport>), (status = 404, body = ErrorBody)))]
pub async fn list_tenants(
    state: State,
    headers: HeaderMap,
) -> Result<Json<Vec<TenantReport>>, ApiError> {
    operator(&state, &headers).await?;
    let mut reports = Vec::new();
    for tenant in state.store.tenants().await? {
        let usage = state.store.usage(tenant.id).await?;
        reports.push(TenantReport { tenant, usage });
    }
    Ok(Json(reports))
}

/// Replaces a tenant's quota (jobs already running keep the one they started with).
#[utoipa::path(put, path = "/admin/tenants/{name}/quota", tag = "admin", params(("name" = String, Path)),
    request_body = Quota, responses((status = 200, body = Quota), (status = 404, body = ErrorBody)))]
pub async fn set_quota(
    state: State,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Quota>, ApiError> {
    operator(&state, &headers).await?;
    let quota: Quota = parse_json(&body.map_err(body_error)?)?;
    if !state.store.set_quota(&name, &quota).await? {
        return Err(ApiError::not_found("tenant"));
    }
    Ok(Json(quota))
}

/// Issues another token for a tenant.
#[utoipa::path(post, path = "/admin/tenants/{name}/tokens", tag = "admin", params(("name" = String, Path)),
    responses((status = 201, body = IssuedToken), (status = 404, body = ErrorBody)))]
pub async fn create_token(
    state: State,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    operator(&state, &headers).await?;
    let tenant = state
        .store
        .tenant_by_name(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let token = issue_token(state.store.as_ref(), Some(tenant.id)).await?;
    let issued = IssuedToken {
        tenant: Some(tenant.name),
        id: token.id,
        token: token.secret,
    };
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

/// Revokes a token: requests with it answer 401 from now on.
#[utoipa::path(delete, path = "/admin/tokens/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    state: State,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    operator(&state, &headers).await?;
    if state.store.revoke_token(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("token"))
    }
}

/// One attempt of a job: which worker ran it, from when to when.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptRecord {
    job: String,
    tenant: String,
    attempt: u32,
    worker: String,
    started_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<i64>,
}

/// Every job attempt, oldest first: the history quotas and exclusivity are checked against.
#[utoipa::path(get, path = "/admin/attempts", tag = "admin",
    responses((status = 200, body = Vec<AttemptRecord>), (status = 404, body = ErrorBody)))]
pub async fn attempts(
    state: State,
    headers: HeaderMap,
) -> Result<Json<Vec<AttemptRecord>>, ApiError> {
    operator(&state, &headers).await?;
    let tenants = state.store.tenants().await?;
    let name = |id: i64| {
        tenants
            .iter()
            .find(|t| t.id == id)
            .map_or_else(String::new, |t| t.name.clone())
    };
    let records = state
        .store
        .attempts(None)
        .await?
        .into_iter()
        .map(|a| AttemptRecord {
            tenant: name(a.tenant),
            job: a.job,
            attempt: a.attempt,
            worker: a.worker,
            started_at: a.started_at,
            ended_at: a.ended_at,
        })
        .collect();
    Ok(Json(records))
}

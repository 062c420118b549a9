//! The HTTP API, versioned under `/v1`: thin handlers that parse, authorise, call the store and
//! the job rules, and map errors to status codes in one place ([`ApiError`]). The OpenAPI
//! document at `/v1/openapi.json` is generated from the handlers the router serves.

mod admin;
mod events;
mod jobs;
mod uploads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use trainrt::Sandbox;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::artifacts::Artifacts;
use crate::auth;
use crate::jobs::SubmitError;
use crate::model::{Principal, Tenant};
use crate::store::{Store, StoreError};

/// What the handlers share.
pub struct ApiState {
    /// The job store.
    pub store: Arc<dyn Store>,
    /// Uploads and job directories.
    pub artifacts: Artifacts,
    /// Validates uploaded callbacks as `trainrt check` does (no compiled-component cache, so
    /// the time an upload takes says nothing of other tenants' uploads).
    pub sandbox: Arc<Sandbox>,
    /// Wakes the scheduler when a job is queued.
    pub wake: Arc<Notify>,
    /// Bumped whenever events were stored, to wake live streams.
    pub events: watch::Receiver<u64>,
    /// Limits of the HTTP layer.
    pub limits: ApiLimits,
    /// Request budgets per token.
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Limits of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Largest request body outside uploads (JSON).
    pub json_body_bytes: usize,
    /// Largest callback component upload.
    pub callback_bytes: usize,
    /// Largest dataset upload.
    pub dataset_bytes: usize,
    /// Requests per second per token, sustained.
    pub requests_per_second: f64,
    /// Requests per token in a burst.
    pub burst: f64,
    /// Longest a request may take before it answers 408 (event streams are not cut).
    pub request_timeout: Duration,
}

impl Default for ApiLimits {
    /// 1 MiB of JSON, 32 MiB callbacks, 256 MiB datasets, 50 requests a second per token with
    /// bursts of 200, 30 s per request.
    fn default() -> Self {
        Self {
            json_body_bytes: 1 << 20,
            callback_bytes: 32 << 20,
            dataset_bytes: 256 << 20,
            requests_per_second: 50.0,
            burst: 200.0,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl ApiState {
    /// The state of a service's API.
    pub fn new(
        store: Arc<dyn Store>,
        artifacts: Artifacts,
        sandbox: Arc<Sandbox>,
        wake: Arc<Notify>,
        events: watch::Receiver<u64>,
        limits: ApiLimits,
    ) -> Self {
        Self {
            store,
            artifacts,
            sandbox,
            wake,
            events,
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Who presented the request's bearer token; 401 without a live one, 429 over its rate.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "send an API token as `Authorization: Bearer TOKEN`",
                )
            })?;
        let hash = auth::hash(token);
        self.take_request(&hash)?;
        self.store.principal(&hash).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the API token is unknown or revoked",
            )
        })
    }

    /// The calling tenant; 403 for the operator's token (it owns no jobs or uploads).
    pub async fn tenant(&self, headers: &HeaderMap) -> Result<Tenant, ApiError> {
        match self.caller(headers).await? {
            Principal::Tenant(id) => self.store.tenant(id).await?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "the tenant is gone",
                )
            }),
            Principal::Operator => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant_only",
                "this endpoint acts for a tenant; use a tenant's token",
            )),
        }
    }

    /// Takes one request from the token's bucket, or answers 429 with when to retry.
    fn take_request(&self, token_hash: &str) -> Result<(), ApiError> {
        let (rate, burst) = (self.limits.requests_per_second, self.limits.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let bucket = buckets.entry(token_hash.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64;
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("more than {rate} requests a second with this token; retry in {wait} s"),
        )
        .retry_after(wait))
    }
}

/// A token's request budget (a token bucket).
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Shared state of the handlers.
pub type State = axum::extract::State<Arc<ApiState>>;

/// Every route, with the OpenAPI document built from the same handlers.
pub fn router(state: Arc<ApiState>) -> (axum::Router, utoipa::openapi::OpenApi) {
    let json_limit = state.limits.json_body_bytes;
    let upload_limit = state.limits.callback_bytes.max(state.limits.dataset_bytes);
    let timeout = state.limits.request_timeout;
    let uploads = OpenApiRouter::new()
        .routes(routes!(uploads::upload_callback, uploads::list_callbacks))
        .routes(routes!(uploads::upload_dataset, uploads::list_datasets))
        .layer(DefaultBodyLimit::max(upload_limit));
    let api = OpenApiRouter::new()
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        .routes(routes!(events::events))
        .routes(routes!(jobs::metrics))
        .routes(routes!(jobs::decisions))
        .routes(routes!(jobs::faults))
        .routes(routes!(jobs::logs))
        .routes(routes!(jobs::checkpoints))
        .routes(routes!(jobs::checkpoint))
        .routes(routes!(uploads::quota))
        .routes(routes!(admin::create_tenant, admin::list_tenants))
        .routes(routes!(admin::set_quota))
        .routes(routes!(admin::create_token))
        .routes(routes!(admin::revoke_token))
        .routes(routes!(admin::attempts))
        .routes(routes!(health))
        .layer(DefaultBodyLimit::max(json_limit))
        .merge(uploads);
    let (router, mut openapi) = OpenApiRouter::new().nest("/v1", api).split_for_parts();
    openapi.info.title = "trainrt service".into();
    openapi.info.description =
        Some("Training jobs whose callbacks are sandboxed WebAssembly components.".into());
    let document = openapi.clone();
    let router = router
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { Json(document) }
            }),
        )
        .fallback(not_found)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(state);
    (router, openapi)
}

/// Whether the service answers.
#[utoipa::path(get, path = "/health", responses((status = 200, description = "The service answers")))]
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /v1/openapi.json",
    )
}

/// An error answer: `{"error": {"code", "message"}}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    retry_after: Option<u64>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`not_found`, `invalid_config`, …).
    pub code: String,
    /// What was wrong and how to fix it.
    pub message: String,
}

impl ApiError {
    /// An error with its status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    code: code.into(),
                    message: message.into(),
                },
            },
            retry_after: None,
        }
    }

    /// 404 for `what`: also the answer for another tenant's resources.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    /// 400 for a malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::QueueFull { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", e.to_string()).retry_after(5)
            }
            StoreError::Exists(_) => Self::new(StatusCode::CONFLICT, "exists", e.to_string()),
            _ => {
                eprintln!("trainrt serve: {e}");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the job store failed; try again",
                )
                .retry_after(1)
            }
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid(m) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", m)
            }
            SubmitError::UnknownUpload(m) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_upload", m)
            }
            SubmitError::QuotaExhausted(m) => {
                Self::new(StatusCode::FORBIDDEN, "quota_exhausted", m)
            }
            SubmitError::Store(e) => e.into(),
        }
    }
}

/// The JSON body of a request, with a 400 that says what is wrong (axum's own rejection is
/// plain text).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("invalid JSON body: {e}"),
        )
    })
}

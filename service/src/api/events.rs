//! `/v1/jobs/{id}/events`: a job's event stream, as JSON pages or live as Server-Sent Events,
//! each event with its sequence number (the SSE `id:`), so a client that reconnects with
//! `Last-Event-ID` continues without a gap or a duplicate.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiState, ErrorBody, State};
use crate::model::{JobEvent, Principal};

/// Events read from the store at a time.
const PAGE: u32 = 500;
/// How long a live stream waits for a wake-up before it looks at the store anyway (events
/// written by another process, a state change).
const POLL: Duration = Duration::from_secs(1);

/// Query of the events endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Events after this sequence number (default 0: from the first). For SSE, the
    /// `Last-Event-ID` header takes precedence.
    after: Option<i64>,
    /// Events per page, JSON only (1-1000, default 500).
    limit: Option<u32>,
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// In order.
    events: Vec<JobEvent>,
    /// Pass as `after` for the next page.
    next_after: i64,
    /// Whether the job has ended (its stream will not grow).
    done: bool,
}

/// The job's events: a JSON page, or with `Accept: text/event-stream` a live SSE stream that
/// ends after the job's final state.
#[utoipa::path(get, path = "/jobs/{id}/events", tag = "jobs",
    params(("id" = String, Path), EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "SSE: resume after this event")),
    responses(
        (status = 200, description = "A page of events", body = EventPage),
        (status = 200, content_type = "text/event-stream", description = "Live events: `id:` is the sequence number, `event:` the kind, `data:` the event as JSON"),
        (status = 404, body = ErrorBody)))]
pub async fn events(
    state: State,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let who = state.caller(&headers).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let job = state
        .store
        .job(&who, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_sse {
        let last_id = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| ApiError::bad_request("Last-Event-ID must be an event's id"))
            })
            .transpose()?;
        let after = last_id.or(query.after).unwrap_or(0).max(0);
        let stream = live(Arc::clone(&state.0), who, id, after);
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let limit = query.limit.unwrap_or(PAGE);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let after = query.after.unwrap_or(0).max(0);
    let events = state
        .store
        .events(&who, &id, after, limit)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    let next_after = events.last().map_or(after, |e| e.seq);
    let done = job.state.is_final() && (events.len() as u32) < limit;
    Ok(Json(EventPage {
        events,
        next_after,
        done,
    })
    .into_response())
}

/// Where a live stream is.
struct Cursor {
    state: Arc<ApiState>,
    who: Principal,
    job: String,
    after: i64,
    buffer: VecDeque<JobEvent>,
    finished: bool,
}

/// The job's events after `after`, as they are stored, until its final state has been sent.
fn live(
    state: Arc<ApiState>,
    who: Principal,
    job: String,
    after: i64,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let cursor = Cursor {
        state,
        who,
        job,
        after,
        buffer: VecDeque::new(),
        finished: false,
    };
    stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(event) = c.buffer.pop_front() {
                c.after = event.seq;
                if event.kind == "state"
                    && event.data["state"]
                        .as_str()
                        .and_then(|s| s.parse::<crate::model::JobState>().ok())
                        .is_some_and(|s| s.is_final())
                {
                    c.finished = true;
                }
                let sse = Event::default()
                    .id(event.seq.to_string())
                    .event(event.kind.clone())
                    .data(serde_json::to_string(&event).unwrap_or_default());
                return Some((Ok(sse), c));
            }
            if c.finished {
                return None;
            }
            // Subscribe before reading, so an append between the read and the wait wakes us.
            let mut wake = c.state.events.clone();
            wake.mark_unchanged();
            match c.state.store.events(&c.who, &c.job, c.after, PAGE).await {
                Ok(Some(events)) if !events.is_empty() => c.buffer.extend(events),
                Ok(Some(_)) => {
                    // Nothing new. A job that has ended may still have events committed since
                    // the read (its last ones and its final state, in one transaction): one more
                    // read after seeing it ended, and the stream ends when that finds none.
                    match c.state.store.job(&c.who, &c.job).await {
                        Ok(Some(job)) if !job.state.is_final() => {
                            let _ = tokio::time::timeout(POLL, wake.changed()).await;
                        }
                        Ok(Some(_)) => {
                            match c.state.store.events(&c.who, &c.job, c.after, PAGE).await {
                                Ok(Some(events)) if !events.is_empty() => c.buffer.extend(events),
                                _ => return None,
                            }
                        }
                        _ => return None,
                    }
                }
                // The job is gone, or the store failed: end the stream; the client resumes
                // with Last-Event-ID.
                Ok(None) | Err(_) => return None,
            }
        }
    })
}

//! `/api/jobs` as operators use it: create (render a preset for a node and wake its agent), list,
//! read, cancel, follow live and download the full log. The agents' side is in `agent_api.rs`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use hyprbox_proto::jobs::events::{self, DoneEvent, StatusEvent};
use hyprbox_proto::jobs::{CreateJob, JobBody, JobDetail, JobDetailEnvelope, JobEnvelope, JobsBody};
use hyprbox_proto::validate_node_id;
use hyprbox_store::audit;
use hyprbox_store::jobs::{self, Job, JobFilter, NewJob};
use hyprbox_store::{new_id, now_ms};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use crate::auth::audit::audit_event;
use crate::auth::{CurrentUser, Identity, Operator};
use crate::fleet::agent_links::AgentMessage;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ClientIp, Json, Query};
use crate::http::time::rfc3339;
use crate::jobs::feeds::{FeedEvent, publish_status};
use crate::state::AppState;

/// How much of each stream a job's detail carries.
pub const TAIL_BYTES: usize = 4 << 20;
/// Chunks read per page when replaying or downloading a log (a chunk is at most 1 MiB).
const PAGE: i64 = 8;

/// The job object of the contract, from its row.
pub fn job_body(job: &Job) -> JobBody {
    JobBody {
        id: job.id.clone(),
        node_id: job.node_id.clone(),
        preset_name: job.preset_name.clone(),
        preset_version: job.preset_version.clone(),
        variables: serde_json::from_str(&job.variables).unwrap_or(Value::Object(Map::new())),
        status: job.status.clone(),
        exit_code: job.exit_code,
        created_by: job.created_by.clone(),
        created_at: rfc3339(job.created_at),
        started_at: job.started_at.map(rfc3339),
        finished_at: job.finished_at.map(rfc3339),
        cancel_requested_at: job.cancel_requested_at.map(rfc3339),
        error: job.error.clone(),
        timeout_seconds: job.timeout_seconds,
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    pub node_id: Option<String>,
    pub status: Option<String>,
    pub limit: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawQuery {
    /// `stdout` (default) or `stderr`.
    pub stream: Option<String>,
}

fn owner(identity: &Identity) -> Option<&str> {
    (identity.user.role != hyprbox_store::users::Role::Admin).then_some(identity.user.id.as_str())
}

/// A job the caller may see: others' jobs are 404 unless the caller is an ADMIN.
pub(crate) async fn visible_job(state: &AppState, identity: &Identity, id: &str) -> Result<Job, ApiError> {
    if !crate::auth::users::plausible_id(id) {
        return Err(ApiError::not_found("job"));
    }
    let mut conn = state.store.conn().await?;
    jobs::get(&mut conn, id)
        .await?
        .filter(|job| owner(identity).is_none_or(|o| job.created_by == o))
        .ok_or_else(|| ApiError::not_found("job"))
}

#[utoipa::path(post, path = "/api/jobs", tag = "jobs", request_body = CreateJob,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, description = "Queued; the script is rendered now and the node's agent woken", body = JobEnvelope),
        (status = 400, description = "Malformed body, or a variable breaks its rule (the message names it)", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Below OPERATOR", body = ErrorBody),
        (status = 404, description = "Unknown node or preset", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Operator(actor): Operator,
    ip: ClientIp,
    Json(body): Json<CreateJob>,
) -> ApiResult<(StatusCode, Json<JobEnvelope>)> {
    validate_node_id("nodeId", &body.node_id).map_err(ApiError::BadRequest)?;
    if state.fleet.get(&body.node_id).is_none() {
        return Err(ApiError::not_found("node"));
    }
    let preset = state
        .presets
        .get(&body.preset_name)
        .ok_or_else(|| ApiError::not_found("preset"))?;
    let rendered = preset
        .render(&body.variables)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let id = new_id();
    // Secret variables (passwords) are kept only inside the script the agent runs, never in the
    // job's variables, which lists, audit views and the fleet UI show.
    let variables = Value::Object(preset.redact(&rendered.resolved)).to_string();
    let metadata = serde_json::json!({ "nodeId": body.node_id, "presetName": preset.name });
    let event = audit_event(
        Some(&actor.user),
        "job.create",
        Some(("job", &id)),
        ip,
        Some(metadata),
    );
    let new = NewJob {
        id: &id,
        node_id: &body.node_id,
        preset_name: &preset.name,
        preset_version: &preset.version,
        variables: &variables,
        script: &rendered.script,
        created_by: &actor.user.id,
        created_at: now_ms(),
        timeout_seconds: i64::try_from(preset.timeout().as_secs()).unwrap_or(i64::MAX),
        policy_id: None,
    };
    let job = jobs::create(&state.store, &new, &event).await?;
    state.agents.send(&job.node_id, &AgentMessage::Wakeup);
    publish_status(&state, &job).await;
    Ok((StatusCode::CREATED, Json(JobEnvelope { job: job_body(&job) })))
}

#[utoipa::path(get, path = "/api/jobs", tag = "jobs", params(ListQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Your jobs (everyone's for an ADMIN), newest first; limit 1–200, default 50, larger values clamped", body = JobsBody),
        (status = 400, description = "Invalid limit, status or nodeId", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(identity): CurrentUser,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<JobsBody>> {
    let limit = match query.limit.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => 50,
        // Any whole number above 200 is clamped, even one too large for an i64 ("0050" is 50).
        Some(raw) if raw.bytes().all(|b| b.is_ascii_digit()) && raw.trim_start_matches('0').len() > 3 => 200,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| ApiError::bad_request("limit must be a whole number of at least 1"))?
            .min(200),
    };
    let status = query.status.as_deref().map(str::trim).filter(|s| !s.is_empty());
    if let Some(status) = status
        && ![
            jobs::QUEUED,
            jobs::RUNNING,
            jobs::SUCCEEDED,
            jobs::FAILED,
            jobs::CANCELLED,
        ]
        .contains(&status)
    {
        return Err(ApiError::bad_request(
            "status must be one of QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED",
        ));
    }
    let node_id = query.node_id.as_deref().filter(|s| !s.is_empty());
    if let Some(node_id) = node_id {
        validate_node_id("nodeId", node_id).map_err(ApiError::BadRequest)?;
    }
    let filter = JobFilter {
        owner: owner(&identity),
        node_id,
        status,
    };
    let mut conn = state.store.conn().await?;
    let jobs = jobs::list(&mut conn, &filter, limit).await?;
    Ok(Json(JobsBody {
        jobs: jobs.iter().map(job_body).collect(),
    }))
}

#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The job with its script and output tails", body = JobDetailEnvelope),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such job, or another user's", body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    CurrentUser(identity): CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<Json<JobDetailEnvelope>> {
    let job = visible_job(&state, &identity, &id).await?;
    let mut conn = state.store.conn().await?;
    let (stdout, stdout_cut) = jobs::tail(&mut conn, &job.id, jobs::Stream::Stdout, TAIL_BYTES).await?;
    let (stderr, stderr_cut) = jobs::tail(&mut conn, &job.id, jobs::Stream::Stderr, TAIL_BYTES).await?;
    Ok(Json(JobDetailEnvelope {
        job: JobDetail {
            script: job.script.clone(),
            stdout,
            stderr,
            stdout_truncated: stdout_cut || job.stdout_truncated,
            stderr_truncated: stderr_cut || job.stderr_truncated,
            stdout_bytes: job.stdout_bytes,
            stderr_bytes: job.stderr_bytes,
            output_limit_reached: job.stdout_truncated || job.stderr_truncated,
            job: job_body(&job),
        },
    }))
}

#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "A QUEUED job, now CANCELLED", body = JobEnvelope),
        (status = 202, description = "A RUNNING job: its agent was told to stop it; it ends CANCELLED", body = JobEnvelope),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Below OPERATOR", body = ErrorBody),
        (status = 404, description = "No such job, or another user's", body = ErrorBody),
        (status = 409, description = "Already finished, or RUNNING on a node whose agent is not connected", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Operator(actor): Operator,
    ip: ClientIp,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<JobEnvelope>)> {
    let job = visible_job(&state, &actor, &id).await?;
    let now = now_ms();
    let mut tx = state.store.begin().await?;
    let (status, job) = if let Some(cancelled) = jobs::cancel_queued(&mut tx, &job.id, None, now).await? {
        (StatusCode::OK, cancelled)
    } else {
        // Not QUEUED (any more): a RUNNING job can only be stopped by its connected agent.
        let current = jobs::get(&mut tx, &job.id)
            .await?
            .ok_or_else(|| ApiError::not_found("job"))?;
        if current.status != jobs::RUNNING {
            return Err(ApiError::Conflict(format!(
                "the job is already {}",
                current.status
            )));
        }
        if !state.agents.is_connected(&current.node_id) {
            return Err(ApiError::Conflict(
                "the job is RUNNING and its node's agent is not connected, so it cannot be told to stop"
                    .into(),
            ));
        }
        let requested = jobs::request_cancel(&mut tx, &current.id, now)
            .await?
            .ok_or_else(|| ApiError::Conflict("the job has just finished".into()))?;
        (StatusCode::ACCEPTED, requested)
    };
    let metadata = serde_json::json!({ "nodeId": job.node_id, "status": job.status });
    audit::record(
        &mut tx,
        &audit_event(
            Some(&actor.user),
            "job.cancel",
            Some(("job", &job.id)),
            ip,
            Some(metadata),
        ),
    )
    .await?;
    tx.commit().await?;
    if status == StatusCode::OK {
        publish_status(&state, &job).await;
    } else {
        // Told once the request is committed, so the agent's completion finds it and ends the job
        // CANCELLED. An agent that dropped off just now is told again when it reconnects.
        let message = AgentMessage::Cancel {
            job_id: job.id.clone(),
        };
        state.agents.send(&job.node_id, &message);
    }
    Ok((status, Json(JobEnvelope { job: job_body(&job) })))
}

/// A piece of output; its `id` is the chunk's sequence number, so a reconnecting client that sends
/// `Last-Event-ID` resumes after it instead of getting the whole log again.
///
/// SSE carries lines: a CR ends one too, so CRLF is sent as LF (else every CRLF line would arrive
/// followed by an empty one). The raw download keeps the bytes exactly.
fn output_event(chunk: &jobs::Chunk) -> Event {
    let text = String::from_utf8_lossy(&chunk.data);
    let event = Event::default()
        .event(chunk.stream.as_str())
        .id(chunk.seq.to_string());
    if text.contains("\r\n") {
        event.data(text.replace("\r\n", "\n"))
    } else {
        event.data(text)
    }
}

fn status_event(status: &str) -> Event {
    let status = StatusEvent {
        status: status.to_string(),
    };
    Event::default()
        .event(events::STATUS)
        .data(serde_json::to_string(&status).unwrap_or_default())
}

fn done_event(job: &Job) -> Event {
    let done = DoneEvent {
        status: job.status.clone(),
        exit_code: job.exit_code,
        error: job.error.clone(),
    };
    Event::default()
        .event(events::DONE)
        .data(serde_json::to_string(&done).unwrap_or_default())
}

/// Where a job stream is: replaying stored chunks, following live, or finished.
struct Follow {
    state: AppState,
    job_id: String,
    receiver: tokio::sync::broadcast::Receiver<FeedEvent>,
    /// The last chunk sent; nothing at or below it is sent again.
    last_seq: i64,
    /// Events ready to go out.
    queue: std::collections::VecDeque<Event>,
    /// Read the database (from `last_seq`) before listening again: at the start, after a lag.
    catch_up: bool,
    last_status: Option<String>,
    finished: bool,
}

impl Follow {
    /// Reads stored chunks after `last_seq` and the job's current status into the queue.
    async fn read_stored(&mut self) -> Result<(), ApiError> {
        let mut conn = self.state.store.conn().await?;
        let chunks = jobs::chunks(&mut conn, &self.job_id, None, self.last_seq, PAGE).await?;
        let more = chunks.len() == usize::try_from(PAGE).unwrap_or(usize::MAX);
        for chunk in &chunks {
            self.last_seq = chunk.seq;
            self.queue.push_back(output_event(chunk));
        }
        if more {
            return Ok(());
        }
        self.catch_up = false;
        let job = jobs::get(&mut conn, &self.job_id)
            .await?
            .ok_or_else(|| ApiError::not_found("job"))?;
        self.status(&job);
        Ok(())
    }

    fn status(&mut self, job: &Job) {
        if self.last_status.as_deref() != Some(job.status.as_str()) {
            self.last_status = Some(job.status.clone());
            self.queue.push_back(status_event(&job.status));
        }
        if jobs::is_terminal(&job.status) {
            self.queue.push_back(done_event(job));
            self.finished = true;
        }
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.finished {
                return None;
            }
            if self.catch_up {
                if self.read_stored().await.is_err() {
                    return None;
                }
                continue;
            }
            let next = tokio::select! {
                () = self.state.shutdown.cancelled() => return None,
                next = self.receiver.recv() => next,
            };
            match next {
                Ok(FeedEvent::Output(chunk)) if chunk.seq == self.last_seq + 1 => {
                    self.last_seq = chunk.seq;
                    return Some(output_event(&chunk));
                }
                Ok(FeedEvent::Output(chunk)) if chunk.seq <= self.last_seq => {}
                // A gap (pieces committed by two writers can arrive out of order): the database
                // has them all, in order.
                Ok(FeedEvent::Output(_)) => self.catch_up = true,
                // A job starts before it has output: RUNNING is shown as it happens, so a job that
                // also ends before the next read still shows each flip.
                Ok(FeedEvent::Status(status)) if !jobs::is_terminal(&status) => {
                    if self.last_status.as_deref() != Some(&*status) {
                        self.last_status = Some(status.to_string());
                        return Some(status_event(&status));
                    }
                }
                // The end: the database has the whole job (exit code, error) and all output before it.
                Ok(FeedEvent::Status(_)) | Err(RecvError::Lagged(_)) => self.catch_up = true,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

#[utoipa::path(get, path = "/api/jobs/{id}/stream", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "text/event-stream: the stored output replayed (after `Last-Event-ID` when sent), then `stdout`/`stderr` deltas (each with its sequence number as `id`), `status` on each flip and `done` at the end, after which the server closes the stream; gzip-compressed when the request accepts gzip", content_type = "text/event-stream"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such job, or another user's", body = ErrorBody),
        (status = 429, description = "The user already holds HYPRBOX_MAX_STREAMS_PER_USER streams open", body = ErrorBody)))]
pub async fn stream(
    State(state): State<AppState>,
    CurrentUser(identity): CurrentUser,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let job = visible_job(&state, &identity, &id).await?;
    // A reconnecting EventSource says what it saw last; anything unparsable replays everything.
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|seq| *seq >= 0)
        .unwrap_or(-1);
    // Subscribed before the replay reads the database, so nothing falls between the two.
    let receiver = state.feeds.subscribe(&job.id);
    // An id past the stored log (another server's, or made up) must not mute the output to come.
    let last_seen = if last_seen >= 0 {
        let mut conn = state.store.conn().await?;
        last_seen.min(jobs::last_chunk_seq(&mut conn, &job.id).await?.unwrap_or(-1))
    } else {
        last_seen
    };
    let follow = Follow {
        state: state.clone(),
        job_id: job.id,
        receiver,
        last_seq: last_seen,
        queue: std::collections::VecDeque::new(),
        catch_up: true,
        last_status: None,
        finished: false,
    };
    // Like the fleet stream, it lives no longer than the session that opened it.
    let lease = crate::auth::lease::SessionLease::open(&state, &identity)?;
    let events = lease.guard(futures_util::stream::unfold(follow, |mut follow| async move {
        follow
            .next()
            .await
            .map(|event| (Ok::<_, Infallible>(event), follow))
    }));
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(25)).text("ping"));
    Ok(crate::http::sse::compress(
        crate::http::sse::accepts_gzip(&headers),
        sse.into_response(),
    ))
}

#[utoipa::path(get, path = "/api/jobs/{id}/output/raw", tag = "jobs",
    params(("id" = String, Path, description = "Job id"), RawQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The full stored log of one stream as a text/plain attachment, streamed", content_type = "text/plain"),
        (status = 400, description = "stream is neither stdout nor stderr", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such job, or another user's", body = ErrorBody)))]
pub async fn raw(
    State(state): State<AppState>,
    CurrentUser(identity): CurrentUser,
    Path(id): Path<String>,
    Query(query): Query<RawQuery>,
) -> ApiResult<Response> {
    // The job first: someone else's job is 404 whatever the query says.
    let job = visible_job(&state, &identity, &id).await?;
    let stream = match query.stream.as_deref() {
        None | Some("") => jobs::Stream::Stdout,
        Some(name) => jobs::Stream::parse(name)
            .ok_or_else(|| ApiError::bad_request("stream must be stdout or stderr"))?,
    };
    let filename = format!("job-{}-{}.log", job.id, stream.as_str());
    // A page of chunks at a time: the whole log is never in memory.
    let pages = futures_util::stream::unfold(Some(-1i64), move |after| {
        let state = state.clone();
        let job_id = job.id.clone();
        async move {
            let after = after?;
            let page = async {
                let mut conn = state.store.conn().await?;
                jobs::chunks(&mut conn, &job_id, Some(stream), after, PAGE).await
            }
            .await;
            match page {
                Ok(chunks) if chunks.is_empty() => None,
                Ok(chunks) => {
                    let last = chunks.last().map(|c| c.seq);
                    let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.data).collect();
                    Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), last))
                }
                Err(err) => Some((Err(std::io::Error::other(err.to_string())), None)),
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(pages),
    )
        .into_response())
}

//! The daemon's HTTP API (axum, JSON). Every `/api` route needs a bearer token; `/health` and
//! `/metrics` need one unless `server.public` lists them. Errors are `{"error": code, "message": why}`
//! with the status that fits: 400 bad request, 401 no or bad token, 403 not allowed, 404 unknown,
//! 405 wrong method, 408 query timeout, 409 already running, 413 body too large, 429 too many
//! queries (with `Retry-After`), 503 shutting down. Axum's own rejections get the same body
//! ([`json_errors`]). Connections are served by `daemon::http`.

mod catalog;
mod data;
mod metrics_run;
mod query;

pub use query::worker_main as query_worker_main;

use super::runs::{self, Refused};
use super::Shared;
use crate::state::auth::{self, Caller, Verdict};
use crate::state::report;
use crate::timestamp::rfc3339;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;

pub type AppState = Arc<Shared>;

/// An API error: status, a stable code and a message that says what to do.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(self, seconds: u64) -> Self {
        ApiError {
            retry_after: Some(seconds),
            ..self
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            message.to_string(),
        )
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.code, "message": self.message}));
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pipeline\""),
            );
        }
        if let Some(s) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Runs blocking work (DuckDB) off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("request handler failed: {e}"))))
}

/// A run's task as recorded in the state, as the API shows it (`GET /api/runs/{id}` of a finished
/// run, a table's `history`).
#[derive(Debug, Serialize)]
pub struct RecordedTask {
    pub run_id: String,
    pub table_id: String,
    pub task: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub rows: Option<i64>,
    pub size_bytes: Option<i64>,
    pub status: String,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
    pub detail: Option<String>,
}

impl From<report::TaskRow> for RecordedTask {
    fn from(t: report::TaskRow) -> Self {
        RecordedTask {
            run_id: t.run_id,
            table_id: t.table_id,
            task: t.task,
            started_at: t.started_at,
            finished_at: t.finished_at,
            rows: t.rows,
            size_bytes: t.size_bytes,
            status: t.status,
            error: t.error,
            duration_ms: t.duration_ms,
            detail: t.detail,
        }
    }
}

/// A finished run as recorded in the state (runs before this daemon started, or from a shell).
#[derive(Debug, Serialize)]
struct RecordedRun {
    run_id: String,
    trigger: String,
    who: String,
    started_at: String,
    finished_at: String,
    status: String,
    failed: i64,
    skipped: i64,
    published: bool,
    tasks: Vec<RecordedTask>,
}

impl RecordedRun {
    fn of(run: report::RunRow, tasks: Vec<report::TaskRow>) -> Self {
        RecordedRun {
            run_id: run.run_id,
            trigger: run.trigger,
            who: run.who,
            started_at: run.started_at,
            finished_at: run.finished_at,
            status: run.status,
            failed: run.failed,
            skipped: run.skipped,
            published: run.published,
            tasks: tasks.into_iter().map(RecordedTask::from).collect(),
        }
    }
}

/// Checks the `Authorization: Bearer …` header against the tokens in the state.
pub async fn authenticate(shared: &Arc<Shared>, headers: &HeaderMap) -> ApiResult<Caller> {
    const HOW: &str = "send `Authorization: Bearer <token>`; an admin creates one with \
                       `pipeline admin token create --user NAME`";
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(format!(
            "missing bearer token: {HOW}"
        )));
    };
    let Some(token) = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
    else {
        return Err(ApiError::unauthorized(format!(
            "the Authorization header is not a bearer token: {HOW}"
        )));
    };
    let state = shared.state.clone();
    let verdict = blocking(move || {
        let r = state.read().map_err(ApiError::internal)?;
        auth::verify(&r, &token).map_err(ApiError::internal)
    })
    .await?;
    match verdict {
        Verdict::Valid(caller) => {
            note_use(shared, &caller.token_id);
            Ok(caller)
        }
        Verdict::Unknown => Err(ApiError::unauthorized(format!(
            "unknown token (it was never issued here, or was mistyped): {HOW}"
        ))),
        Verdict::Revoked => Err(ApiError::unauthorized(
            "this token was revoked (or has expired); ask an admin for a new one",
        )),
        Verdict::UserDisabled => Err(ApiError::unauthorized(
            "this token's user is disabled; ask an admin",
        )),
    }
}

/// Records that a token was used (for `pipeline admin token list`), at most once a minute per token,
/// in the background: a busy state never slows a request.
fn note_use(shared: &Arc<Shared>, token_id: &str) {
    let now = std::time::Instant::now();
    {
        let Ok(mut seen) = shared.token_use.lock() else {
            return;
        };
        if seen
            .get(token_id)
            .is_some_and(|t| now.duration_since(*t) < std::time::Duration::from_secs(60))
        {
            return;
        }
        seen.insert(token_id.to_string(), now);
    }
    let (state, id) = (shared.state.clone(), token_id.to_string());
    tokio::task::spawn_blocking(move || {
        let write = || auth::touch(&state.write()?, &id);
        if let Err(e) = write() {
            tracing::debug!(error = %e, "could not record a token's last use");
        }
    });
}

/// The caller of an `/api` route.
pub struct Auth(pub Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &AppState) -> ApiResult<Self> {
        authenticate(shared, &parts.headers).await.map(Auth)
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    let routes = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .route("/api/status", get(status))
        .route("/api/sync/trigger", post(trigger))
        .route("/api/runs/{id}", get(run))
        .route("/api/tables", get(catalog::tables))
        .route("/api/tables/{name}", get(catalog::table))
        .route("/api/metrics", get(catalog::metrics))
        .route("/api/metrics/{category}/{name}", get(catalog::metric))
        .route("/api/metrics/{category}/{name}/run", post(metrics_run::run))
        .route("/api/query", post(query::query))
        .route("/api/manifest", get(data::manifest))
        .route("/api/data/{table}", get(data::data))
        .fallback(|| async {
            ApiError::not_found(
                "no such route; see docs/daemon.md for the API (GET /api/status, /api/tables, …)",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .with_state(shared);
    // Around the whole router, not each route: a route's 405 gets its `Allow` header outside
    // the route's own layers.
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .layer(axum::middleware::map_response(json_errors))
}

/// 413 at once for a body whose `Content-Length` is over [`MAX_REQUEST_BODY`], before any of it
/// is read (a body without one is cut by `DefaultBodyLimit` as it arrives).
async fn refuse_large_bodies(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BODY as u64) {
        let (code, message) = rejection(
            StatusCode::PAYLOAD_TOO_LARGE,
            &HeaderMap::new(),
            String::new(),
        );
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message).into_response();
    }
    next.run(request).await
}

/// The most a request body may be (`POST /api/query`, `/api/sync/trigger`); more is 413.
pub const MAX_REQUEST_BODY: usize = 2 * 1024 * 1024;

/// Gives every error answer the documented JSON body. Handlers answer [`ApiError`] already; this
/// catches what axum answers by itself — 405 for a method a route does not take, 413 for a body
/// over [`MAX_REQUEST_BODY`], an extractor's rejection of a malformed path or query string — so no
/// plain-text error leaks through. Headers (`Allow`, `WWW-Authenticate`) are kept.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Rejection texts are a line or two; anything longer is cut, not buffered.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, message) = rejection(status, &parts.headers, text);
    let body = json!({"error": code, "message": message}).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The code and message of an answer axum made itself.
fn rejection(status: StatusCode, headers: &HeaderMap, text: String) -> (&'static str, String) {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("another method");
            (
                "method_not_allowed",
                format!("this route does not take that method; it takes {allowed}"),
            )
        }
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            format!(
                "the request body is larger than {} MiB, the most this API reads",
                MAX_REQUEST_BODY / (1024 * 1024)
            ),
        ),
        _ => {
            let code = match status {
                StatusCode::NOT_FOUND => "not_found",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
                s if s.is_client_error() => "bad_request",
                _ => "internal",
            };
            let message = if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("request refused")
                    .to_string()
            } else {
                text
            };
            (code, message)
        }
    }
}

async fn health(State(shared): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if !shared.instance().server.public_health {
        authenticate(&shared, &headers).await?;
    }
    let status = if shared.shutting_down() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": if shared.shutting_down() { "shutting_down" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": (chrono::Utc::now() - shared.started_at).num_seconds(),
    });
    Ok((status, Json(body)).into_response())
}

async fn prometheus(State(shared): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if !shared.instance().server.public_metrics {
        authenticate(&shared, &headers).await?;
    }
    let uptime = (chrono::Utc::now() - shared.started_at).num_milliseconds() as f64 / 1000.0;
    let text = shared.stats.render(shared.runs.running_count(), uptime);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn status(State(shared): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Value>> {
    let instance = shared.instance();
    let snapshot = shared.snapshot();
    let next = shared
        .next_runs
        .lock()
        .map(|n| n.clone())
        .unwrap_or_default();
    let busy = shared.runs.busy();
    let state = shared.state.clone();
    let recorded = blocking(move || {
        let r = state.read().map_err(ApiError::internal)?;
        report::status(&r).map_err(ApiError::internal)
    })
    .await?;
    let tables: Vec<Value> = recorded
        .tables
        .iter()
        .filter(|t| {
            snapshot
                .registered
                .tables
                .get(&t.id)
                .is_some_and(|d| caller.may_read(&d.access))
        })
        .map(|t| {
            json!({
                "id": t.id,
                "name": t.name,
                "source": t.source,
                "schedule": t.schedule,
                "next_run": next.get(&t.id).map(|n| rfc3339(*n)),
                "running_in": busy.get(&t.id),
                "last_sync": t.last_sync,
                "last_status": t.last_status,
                "rows": t.rows,
                "last_error": t.last_error,
            })
        })
        .collect();
    // Transforms and metric checks the caller may read, with their state (ok / stale / failed).
    let readable = catalog::readable(&snapshot.registered, &caller);
    let transform_states: Vec<&crate::state::downstream::TransformState> = recorded
        .transform_states
        .iter()
        .filter(|t| readable.contains(&t.name.to_lowercase()))
        .collect();
    let metric_checks: Vec<&crate::state::downstream::CheckState> = recorded
        .metric_checks
        .iter()
        .filter(|c| catalog::metric_visible(&snapshot.registered, &caller, &readable, &c.metric))
        .collect();
    let watcher = shared.watcher.lock().map(|w| w.clone()).unwrap_or_default();
    // Running runs as `GET /api/runs/{id}` shows them to this caller.
    let filter = RunFilter::new(&snapshot.registered, &caller);
    let runs: Vec<Value> = shared
        .runs
        .running()
        .into_iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .filter_map(|r| filter.apply(r))
        .collect();
    Ok(Json(json!({
        "instance": instance.name,
        "version": env!("CARGO_PKG_VERSION"),
        "timezone": instance.tz.name(),
        "started_at": rfc3339(shared.started_at),
        "shutting_down": shared.shutting_down(),
        "user": caller.user,
        "groups": caller.groups,
        // What this daemon serves (it follows applies from shells within moments).
        "serial": snapshot.serial,
        "last_apply": recorded.last_apply,
        "watcher": watcher,
        "pending_tasks": recorded.pending_tasks.len(),
        // Running runs as `GET /api/runs/{id}` shows them to this caller.
        "runs": runs,
        "tables": tables,
        "transform_states": transform_states,
        "metric_checks": metric_checks,
    })))
}

/// `POST /api/sync/trigger`: no body (the tables that are due), a JSON list of table names or ids,
/// or `{"tables": [...], "source": "..."}`. An explicit list ignores schedules.
async fn trigger(
    State(shared): State<AppState>,
    Auth(caller): Auth,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    if shared.shutting_down() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the daemon is shutting down; try again once it is back",
        ));
    }
    let snapshot = shared.snapshot();
    let reg = &snapshot.registered;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the body is not UTF-8 JSON"))?
        .trim();
    let (names, source): (Option<Vec<String>>, Option<String>) = if text.is_empty() {
        (None, None)
    } else {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request(format!(
                "the body is not valid JSON ({e}); send nothing, [\"table\", …] or {{\"tables\": [...]}}"
            ))
        })?;
        parse_selection(&value)?
    };
    let mut ids: Vec<String> = Vec::new();
    if let Some(source) = &source {
        if !reg.sources.contains_key(source) {
            return Err(ApiError::not_found(format!("unknown source `{source}`")));
        }
        ids.extend(reg.tables_of(source).map(|t| t.id.clone()));
    }
    for n in names.iter().flatten() {
        let t = reg.table(n).ok_or_else(|| {
            ApiError::not_found(format!(
                "unknown table `{n}`; GET /api/tables lists the tables you can see"
            ))
        })?;
        // Naming a table one may not read is refused; a source or "what is due" means the tables
        // of it one may read.
        if !caller.may_read(&t.access) {
            return Err(forbidden_table(t, &caller));
        }
        ids.push(t.id.clone());
    }
    let explicit = names.is_some() || source.is_some();
    if !explicit {
        ids = due_tables(&shared).await?;
    }
    ids.retain(|id| {
        reg.tables
            .get(id)
            .is_some_and(|t| caller.may_read(&t.access))
    });
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        let message = if explicit {
            "no table you may read was selected"
        } else {
            "no table is due"
        };
        return Ok((
            StatusCode::OK,
            Json(json!({"run_id": null, "tables": [], "message": message})),
        )
            .into_response());
    }
    let req = runs::sync_request(&shared, &ids, false, "api", &caller.user)
        .map_err(ApiError::bad_request)?;
    match shared.runs.start(&shared, req) {
        Ok(run_id) => Ok((
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/api/runs/{run_id}"))],
            Json(json!({"run_id": run_id, "tables": ids, "status": format!("/api/runs/{run_id}")})),
        )
            .into_response()),
        Err(Refused::Busy(busy)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_running",
            format!(
                "already syncing: {}; wait for that run (GET /api/runs/{{id}}) and trigger again",
                busy.iter()
                    .map(|(t, r)| format!("{t} (run {r})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        Err(Refused::ShuttingDown) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the daemon is shutting down",
        )),
        Err(Refused::Nothing) => Ok((
            StatusCode::OK,
            Json(json!({"run_id": null, "tables": ids, "message": "nothing to do"})),
        )
            .into_response()),
    }
}

/// 403 for a table outside the caller's groups, saying which groups may read it.
pub fn forbidden_table(t: &crate::registry::registered::TableDef, caller: &Caller) -> ApiError {
    let groups = if caller.groups.is_empty() {
        "no group".to_string()
    } else {
        caller.groups.join(", ")
    };
    ApiError::forbidden(format!(
        "table `{}` is readable only by group(s) {}; you ({}) are in {groups}",
        t.name,
        t.access.join(", "),
        caller.user
    ))
}

fn parse_selection(v: &Value) -> ApiResult<(Option<Vec<String>>, Option<String>)> {
    let strings = |v: &Value| -> ApiResult<Vec<String>> {
        v.as_array()
            .ok_or_else(|| ApiError::bad_request("`tables` must be a list of table names"))?
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request("table names must be strings"))
            })
            .collect()
    };
    match v {
        Value::Array(_) => Ok((Some(strings(v)?), None)),
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| *k != "tables" && *k != "source") {
                return Err(ApiError::bad_request(format!(
                    "unknown key `{k}`; expected `tables` and/or `source`"
                )));
            }
            let tables = o.get("tables").map(strings).transpose()?;
            let source = match o.get("source") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(ApiError::bad_request("`source` must be a source name")),
            };
            Ok((tables, source))
        }
        _ => Err(ApiError::bad_request(
            "send nothing, a list of table names, or {\"tables\": [...], \"source\": \"...\"}",
        )),
    }
}

/// Tables whose schedule fell due since their last sync or attempt (never-synced ones included).
async fn due_tables(shared: &Arc<Shared>) -> ApiResult<Vec<String>> {
    let s = shared.clone();
    let last = blocking(move || Ok(super::scheduler::last_attempts(&s))).await?;
    let tz = shared.instance().tz;
    let now = shared.clock.now();
    Ok(shared
        .snapshot()
        .registered
        .tables
        .values()
        .filter(|t| {
            let Some(text) = &t.schedule else {
                return false;
            };
            match last.get(&t.id) {
                None => true,
                Some(at) => super::scheduler::next_after(text, *at, tz).is_some_and(|n| n <= now),
            }
        })
        .map(|t| t.id.clone())
        .collect())
}

/// `GET /api/runs/{id}`: the run with only what the caller may see ([`RunFilter`]); 404, like an
/// unknown id, when it concerns nothing the caller may read.
async fn run(
    State(shared): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let snapshot = shared.snapshot();
    let filter = RunFilter::new(&snapshot.registered, &caller);
    let unknown = |id: &str| ApiError::not_found(format!("no run `{id}`"));
    if let Some(view) = shared.runs.get(&id) {
        let view = serde_json::to_value(view).map_err(ApiError::internal)?;
        return filter.apply(view).map(Json).ok_or_else(|| unknown(&id));
    }
    // Runs before this daemon started, or from the command line: from the state.
    let state = shared.state.clone();
    let key = id.clone();
    let found = blocking(move || {
        let read = || -> Result<Option<RecordedRun>, crate::state::StateError> {
            let r = state.read()?;
            let Some(run) = report::run(&r, &key)? else {
                return Ok(None);
            };
            Ok(Some(RecordedRun::of(run, report::run_tasks(&r, &key)?)))
        };
        let run = read().map_err(ApiError::internal)?;
        run.map(|r| serde_json::to_value(r).map_err(ApiError::internal))
            .transpose()
    })
    .await?;
    found
        .and_then(|run| filter.apply(run))
        .map(Json)
        .ok_or_else(|| unknown(&id))
}

/// What of a run a caller may see. A run syncs tables and builds transforms and metrics of many
/// owners; rather than refusing it whole, it is shown with only the tasks of tables, transforms and
/// metrics the caller may read, and `hidden_tasks` says how many were left out. A rebuild is shown
/// when the caller may read every table of its source; the publish step always, but its error (and
/// the run's) only when nothing was hidden, since they may name any table. A run none of whose tables
/// (or, without tables, tasks) the caller may read is answered like an unknown run: its existence is
/// not disclosed.
struct RunFilter<'a> {
    reg: &'a crate::registry::registered::Registered,
    caller: &'a Caller,
    readable: std::collections::BTreeSet<String>,
}

impl<'a> RunFilter<'a> {
    fn new(reg: &'a crate::registry::registered::Registered, caller: &'a Caller) -> Self {
        RunFilter {
            reg,
            caller,
            readable: catalog::readable(reg, caller),
        }
    }

    fn table_readable(&self, id: &str) -> bool {
        self.reg
            .tables
            .get(id)
            .is_some_and(|t| self.caller.may_read(&t.access))
    }

    /// `task` is `<kind>:<target>`, as runs and sync_history name tasks. Unknown targets (since
    /// removed) and kinds are hidden.
    fn task_visible(&self, task: &str) -> bool {
        let Some((kind, target)) = task.split_once(':') else {
            return false;
        };
        match kind {
            "extract" | "attach" => self.table_readable(target),
            "transform" => self.readable.contains(&target.to_lowercase()),
            "check" => catalog::metric_visible(self.reg, self.caller, &self.readable, target),
            "rebuild" => {
                self.reg.sources.contains_key(target)
                    && self
                        .reg
                        .tables_of(target)
                        .all(|t| self.caller.may_read(&t.access))
            }
            "publish" => true,
            _ => false,
        }
    }

    /// The run (a `RunView` or a state row with its `tasks`) as the caller may see it, or None
    /// when it must look unknown.
    fn apply(&self, mut run: Value) -> Option<Value> {
        let tasks = run["tasks"].as_array().cloned().unwrap_or_default();
        let name = |t: &Value| t["task"].as_str().unwrap_or("").to_string();
        let mut tables: Vec<String> = run["tables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .chain(tasks.iter().filter_map(|t| {
                let task = name(t);
                let (kind, target) = task.split_once(':')?;
                matches!(kind, "extract" | "attach").then(|| target.to_string())
            }))
            .collect();
        tables.sort();
        tables.dedup();
        let (shown, hidden): (Vec<Value>, Vec<Value>) =
            tasks.into_iter().partition(|t| self.task_visible(&name(t)));
        let shown_tables: Vec<String> = tables
            .iter()
            .filter(|t| self.table_readable(t))
            .cloned()
            .collect();
        let nothing_readable = if tables.is_empty() {
            shown.is_empty() && !hidden.is_empty()
        } else {
            shown_tables.is_empty()
        };
        if nothing_readable {
            return None;
        }
        let partial = !hidden.is_empty() || shown_tables.len() < tables.len();
        let mut shown = shown;
        if partial {
            const HIDDEN: &str = "hidden: it may concern tables you may not read";
            for t in shown.iter_mut().filter(|t| name(t).starts_with("publish:")) {
                if !t["error"].is_null() {
                    t["error"] = json!(HIDDEN);
                }
            }
            if !run["error"].is_null() {
                run["error"] = json!(HIDDEN);
            }
        }
        let count = |status: &str| shown.iter().filter(|t| t["status"] == status).count();
        let (failed, skipped) = (count("failed"), count("skipped"));
        let o = run.as_object_mut()?;
        // A state row counts every task; count only the shown ones.
        for (key, n) in [("failed", failed), ("skipped", skipped)] {
            if o.get(key).is_some_and(Value::is_number) {
                o.insert(key.into(), json!(n));
            }
        }
        if o.contains_key("tables") {
            o.insert("tables".into(), json!(shown_tables));
        }
        o.insert("hidden_tasks".into(), json!(hidden.len()));
        o.insert("tasks".into(), Value::Array(shown));
        Some(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn rewritten(response: Response) -> (StatusCode, HeaderMap, Value) {
        let r = json_errors(response).await;
        let (parts, body) = r.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn axum_rejections_get_the_json_error_body() {
        // 405 as method routing answers it: no body, an Allow header.
        let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
        let (status, headers, body) = rewritten(r).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "GET,HEAD");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(body["error"], "method_not_allowed");
        assert!(body["message"].as_str().unwrap().contains("GET,HEAD"));

        // 413 as the body limit answers it: plain text.
        let r = (StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded").into_response();
        let (status, _, body) = rewritten(r).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"], "payload_too_large");
        assert!(body["message"].as_str().unwrap().contains("2 MiB"));

        // An extractor's rejection keeps its explanation.
        let r = (
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string: duplicate field `file`",
        )
            .into_response();
        let (_, _, body) = rewritten(r).await;
        assert_eq!(
            body,
            json!({"error": "bad_request", "message": "Failed to deserialize query string: duplicate field `file`"})
        );
    }

    #[tokio::test]
    async fn answers_that_are_not_plain_errors_pass_unchanged() {
        let api = ApiError::forbidden("no").retry_after(3).into_response();
        let (status, headers, body) = rewritten(api).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers[header::RETRY_AFTER], "3");
        assert_eq!(body, json!({"error": "forbidden", "message": "no"}));
        let metrics = (StatusCode::OK, "pipeline_build_info 1").into_response();
        let r = json_errors(metrics).await;
        let bytes = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&bytes[..], b"pipeline_build_info 1");
    }
}

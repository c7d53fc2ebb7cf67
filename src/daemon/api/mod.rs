//! The daemon's HTTP API (axum, JSON; docs/api.md). Every `/api` route needs a bearer token;
//! `/health` and `/metrics` need one unless `server.public` lists them. Every answer is a typed
//! struct of [`response`]; every error is `{"error": {"code", "message", "request_id"}}`
//! ([`error`]) with the status that fits: 400 bad request, 401 no or bad token, 403 not allowed,
//! 404 unknown, 405 wrong method, 408 query timeout, 409 already running, 413 body too large, 429
//! too many queries (with `Retry-After`), 500 internal (logged with the request id, answered
//! generically), 503 shutting down. Connections are served by `daemon::http`.

mod catalog;
mod data;
pub mod error;
mod metrics_run;
mod query;
pub mod response;
mod status;
#[cfg(test)]
mod tests;

pub use data::ManifestState;
pub use error::{ApiError, ApiResult, RequestId, MAX_REQUEST_BODY};
pub use query::worker_main as query_worker_main;

use super::runs::{self, Refused};
use super::Shared;
use crate::state::auth::{self, Caller, Verdict};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use response::{Health, Run, RunTask, Triggered};
use serde_json::Value;
use std::sync::Arc;

pub type AppState = Arc<Shared>;

/// Runs blocking work (DuckDB) off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("request handler failed: {e}"))))
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
    // The stamp is taken before reading, so a write meanwhile makes the next request look again.
    let key = auth::token_key(&token);
    let stamp = shared.state.stamp();
    if let Some(caller) = shared.verdicts.get(&key, &stamp) {
        note_use(shared, &caller.token_id);
        return Ok(caller);
    }
    let state = shared.state.clone();
    let (verdict, expires_in) = blocking(move || {
        let r = state.read().map_err(ApiError::internal)?;
        auth::verify_until(&r, &token).map_err(ApiError::internal)
    })
    .await?;
    match verdict {
        Verdict::Valid(caller) => {
            shared.verdicts.put(key, stamp, caller.clone(), expires_in);
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
        .route("/api/status", get(status::status))
        .route("/api/sync/trigger", post(trigger))
        .route("/api/runs/{id}", get(run))
        .route("/api/tables", get(catalog::tables))
        .route("/api/tables/{name}", get(catalog::table))
        .route("/api/tables/{name}/profile", get(catalog::profile))
        .route("/api/metrics", get(catalog::metrics))
        .route("/api/metrics/{category}/{name}", get(catalog::metric))
        .route("/api/metrics/{category}/{name}/run", post(metrics_run::run))
        .route("/api/query", post(query::query))
        .route("/api/manifest", get(data::manifest))
        .route("/api/data/{table}", get(data::data))
        .route("/webhooks/jira/{source}", post(super::jira::webhook))
        .fallback(|| async {
            ApiError::not_found(
                "no such route; see docs/api.md for the API (GET /api/status, /api/tables, …)",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .with_state(shared);
    // Around the whole router, not each route: a route's 405 gets its `Allow` header outside
    // the route's own layers, and every error answer passes through `request_scope`.
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .layer(axum::middleware::from_fn(error::request_scope))
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
        let (code, message) = error::rejection(
            StatusCode::PAYLOAD_TOO_LARGE,
            &HeaderMap::new(),
            String::new(),
        );
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message).into_response();
    }
    next.run(request).await
}

async fn health(State(shared): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if !shared.instance().server.public_health {
        authenticate(&shared, &headers).await?;
    }
    let down = shared.shutting_down();
    let status = if down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = Health {
        status: if down { "shutting_down" } else { "ok" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: (chrono::Utc::now() - shared.started_at).num_seconds(),
    };
    Ok((status, Json(body)).into_response())
}

async fn prometheus(State(shared): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if !shared.instance().server.public_metrics {
        authenticate(&shared, &headers).await?;
    }
    let uptime = (chrono::Utc::now() - shared.started_at).num_milliseconds() as f64 / 1000.0;
    let mut text = shared.stats.render(shared.runs.running_count(), uptime);
    // Statuses, freshness and downstream states come from the state at each scrape, so they hold
    // whatever ran them (this daemon, a shell) and survive restarts.
    let state = shared.state.clone();
    let (now, tz) = (shared.clock.now(), shared.instance().tz);
    let read = blocking(move || {
        let r = state.read().map_err(ApiError::internal)?;
        let mut status = crate::state::report::status(&r).map_err(ApiError::internal)?;
        status.with_times(now, tz);
        Ok(status)
    })
    .await;
    let readable = match read {
        Ok(status) => {
            super::stats::render_state(&mut text, &status, now);
            true
        }
        Err(e) => {
            // The counters are still worth scraping; the gauge says what is missing.
            tracing::warn!(error = %e.detail(), "/metrics: could not read the state");
            false
        }
    };
    text.push_str(&format!(
        "# HELP pipeline_state_readable 1 when the state could be read for this scrape.\n\
         # TYPE pipeline_state_readable gauge\npipeline_state_readable {}\n",
        u8::from(readable)
    ));
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `POST /api/sync/trigger`: no body (the tables that are due), a JSON list of table names or ids,
/// or `{"tables": [...], "source": "..."}`. An explicit list ignores schedules.
async fn trigger(
    State(shared): State<AppState>,
    Auth(caller): Auth,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    if shared.shutting_down() {
        return Err(ApiError::unavailable(
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
            Json(Triggered {
                run_id: None,
                tables: Vec::new(),
                status: None,
                message: Some(message),
            }),
        )
            .into_response());
    }
    let req = runs::sync_request(&shared, &ids, false, "api", &caller.user)
        .map_err(ApiError::bad_request)?;
    match shared.runs.start(&shared, req) {
        Ok(run_id) => Ok((
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/api/runs/{run_id}"))],
            Json(Triggered {
                status: Some(format!("/api/runs/{run_id}")),
                run_id: Some(run_id),
                tables: ids,
                message: None,
            }),
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
        Err(Refused::ShuttingDown) => Err(ApiError::unavailable(
            "shutting_down",
            "the daemon is shutting down",
        )),
        Err(Refused::Nothing) => Ok((
            StatusCode::OK,
            Json(Triggered {
                run_id: None,
                tables: ids,
                status: None,
                message: Some("nothing to do"),
            }),
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
) -> ApiResult<Json<Run>> {
    let snapshot = shared.snapshot();
    let filter = RunFilter::new(&snapshot.registered, &caller);
    let unknown = |id: &str| ApiError::not_found(format!("no run `{id}`"));
    if let Some(view) = shared.runs.get(&id) {
        return filter
            .apply(Run::live(view))
            .map(Json)
            .ok_or_else(|| unknown(&id));
    }
    // Runs before this daemon started, or from the command line: from the state.
    let state = shared.state.clone();
    let key = id.clone();
    let found = blocking(move || {
        let read = || -> Result<Option<Run>, crate::state::StateError> {
            let r = state.read()?;
            let Some(run) = crate::state::report::run(&r, &key)? else {
                return Ok(None);
            };
            let tasks = crate::state::report::run_tasks(&r, &key)?;
            Ok(Some(Run::recorded(run, tasks)))
        };
        read().map_err(ApiError::internal)
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
pub(super) struct RunFilter<'a> {
    reg: &'a crate::registry::registered::Registered,
    caller: &'a Caller,
    readable: std::collections::BTreeSet<String>,
}

impl<'a> RunFilter<'a> {
    pub(super) fn new(
        reg: &'a crate::registry::registered::Registered,
        caller: &'a Caller,
    ) -> Self {
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
    pub(super) fn task_visible(&self, task: &str) -> bool {
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

    /// The run as the caller may see it, or None when it must look unknown.
    pub(super) fn apply(&self, mut run: Run) -> Option<Run> {
        let mut tables: Vec<String> = run
            .tables
            .iter()
            .cloned()
            .chain(
                run.tasks
                    .iter()
                    .filter(|t| matches!(t.kind.as_str(), "extract" | "attach"))
                    .map(|t| t.target.clone()),
            )
            .collect();
        tables.sort();
        tables.dedup();
        let (mut shown, hidden): (Vec<RunTask>, Vec<RunTask>) = std::mem::take(&mut run.tasks)
            .into_iter()
            .partition(|t| self.task_visible(&t.task));
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
        if partial {
            const HIDDEN: &str = "hidden: it may concern tables you may not read";
            for t in shown.iter_mut().filter(|t| t.kind == "publish") {
                if t.error.is_some() {
                    t.error = Some(HIDDEN.into());
                }
            }
            if run.error.is_some() {
                run.error = Some(HIDDEN.into());
            }
        }
        run.tables = shown_tables;
        run.hidden_tasks = hidden.len();
        run.tasks = shown;
        Some(run.recount())
    }
}

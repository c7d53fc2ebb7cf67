//! `POST /api/metrics/{category}/{name}/run` `{grain?, dimension?, from?, to?, max_rows?}`: a
//! metric's canonical SQL rendered on the server (the same renderer as `pipeline metrics run`)
//! and run through `POST /api/query`'s path, so the caller's permissions, the sandbox and the
//! limits all apply unchanged. The answer is `/api/query`'s, plus `metric` and the `sql` that ran.

use super::catalog::{metric_visible, readable};
use super::{ApiError, ApiResult, AppState, Auth};
use crate::metrics::{select_parts, MetricParts, Request};
use axum::extract::{Path, State};
use axum::response::Response;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    grain: Option<String>,
    dimension: Option<String>,
    /// First day, `YYYY-MM-DD` (inclusive).
    from: Option<String>,
    /// Last day, `YYYY-MM-DD` (inclusive).
    to: Option<String>,
    max_rows: Option<u64>,
}

pub async fn run(
    State(shared): State<AppState>,
    Auth(caller): Auth,
    Path((category, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "expected {{\"grain\", \"dimension\", \"from\": \"YYYY-MM-DD\", \"to\", \"max_rows\"}} \
                 (all optional) ({e})"
            ))
        })?
    };
    let snapshot = shared.snapshot();
    let id = format!("{category}/{name}");
    let Some(def) = snapshot.registered.metrics.get(&id) else {
        return Err(ApiError::not_found(format!(
            "no metric `{id}`; GET /api/metrics lists them"
        )));
    };
    let ok = readable(&snapshot.registered, &caller);
    if !metric_visible(&snapshot.registered, &caller, &ok, &id) {
        return Err(ApiError::forbidden(format!(
            "metric `{id}` reads tables you ({}) may not read",
            caller.user
        )));
    }
    let mut parts = MetricParts::of_registered(def);
    parts.id = id.clone();
    let sql = select_parts(
        &parts,
        &Request {
            grain: req.grain,
            dimension: req.dimension,
            date_from: req.from,
            date_to: req.to,
        },
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut query = serde_json::json!({ "sql": sql });
    if let Some(n) = req.max_rows {
        query["max_rows"] = n.into();
    }
    let response = super::query::query(
        State(shared.clone()),
        Auth(caller),
        axum::body::Bytes::from(query.to_string()),
    )
    .await?;
    // `/api/query`'s answer with the metric and its SQL in front.
    let (mut head, body) = response.into_parts();
    if !head.status.is_success() {
        return Ok(Response::from_parts(head, body));
    }
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(ApiError::internal)?;
    let mut answer: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    if let Some(o) = answer.as_object_mut() {
        let mut front = serde_json::Map::new();
        front.insert("metric".into(), id.into());
        front.insert("sql".into(), sql.into());
        front.append(o);
        *o = front;
    }
    head.headers.remove(axum::http::header::CONTENT_LENGTH);
    Ok(Response::from_parts(
        head,
        axum::body::Body::from(answer.to_string()),
    ))
}

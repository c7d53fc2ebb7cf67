//! Every answer that is not a success: one [`ApiError`], one body shape, one place that logs.
//!
//! A handler returns an [`ApiError`]. The [`request_scope`] layer around the whole router gives each
//! request an id (`X-Request-Id`, the client's own when it sent a sane one), and turns every error
//! answer — a handler's, or one axum makes by itself (405 for a method a route does not take, 413 for
//! a body over the limit, a malformed path or query string, an unknown route) — into
//!
//! ```json
//! {"error": {"code": "not_found", "message": "unknown table `nosuch`; …", "request_id": "r-…"}}
//! ```
//!
//! An internal error (a state read that failed, a query process that crashed) is answered with a
//! generic 500 that names the request id; what actually went wrong, which may hold DuckDB's text,
//! paths or names the caller may not see, goes to the daemon's log under that id, never to the client.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a client is told about an internal error.
pub const INTERNAL_MESSAGE: &str =
    "internal error: the daemon could not answer; its log has the details under this request id";

/// An API error: status, a stable code and a message that says what to do. Internal errors carry
/// their detail for the log only.
#[derive(Debug, thiserror::Error)]
#[error("{code} ({status}): {}", self.detail.as_deref().unwrap_or(&self.message))]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
    /// What went wrong inside (logged with the request id, never sent).
    detail: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            detail: None,
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

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// A failure inside the daemon: 500 with a generic message; `detail` is only logged.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        ApiError {
            detail: Some(detail.to_string()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                INTERNAL_MESSAGE,
            )
        }
    }

    /// The detail of an internal error (for the log), or the message.
    pub fn detail(&self) -> &str {
        self.detail.as_deref().unwrap_or(&self.message)
    }
}

/// The documented error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

#[derive(Clone, Debug, Serialize)]
pub struct ErrorInfo {
    pub code: &'static str,
    pub message: String,
    /// The request's id (also in the `X-Request-Id` header): quote it when reporting a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Rides on an error response from [`ApiError::into_response`] to [`request_scope`], which logs
/// the detail of a 5xx and adds the request id to the body.
#[derive(Clone, Debug)]
struct Rendered {
    info: ErrorInfo,
    detail: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let info = ErrorInfo {
            code: self.code,
            message: self.message,
            request_id: None,
        };
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: info.clone(),
            }),
        )
            .into_response();
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
        response.extensions_mut().insert(Rendered {
            info,
            detail: self.detail,
        });
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The id of a request, in its extensions (set by [`request_scope`]).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub const REQUEST_ID: &str = "x-request-id";

/// A client's own id is kept when it is short and plain (it ends up in logs).
fn client_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(REQUEST_ID)?.to_str().ok()?.trim();
    let plain = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    plain.then(|| v.to_string())
}

/// `r-<daemon start, hex>-<sequence>`: unique per daemon and ordered, without a random source.
fn new_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static EPOCH: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let epoch = EPOCH.get_or_init(|| chrono::Utc::now().timestamp());
    format!("r-{epoch:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Around the whole router: the request id, the one error body, and the log line of an internal
/// error. Errors a handler answered carry their [`ErrorInfo`]; answers axum made itself are
/// recognised by an error status without a JSON body and given the same shape (headers such as
/// `Allow` and `WWW-Authenticate` are kept).
pub async fn request_scope(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let id = client_id(request.headers()).unwrap_or_else(new_id);
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::debug_span!("request", request_id = %id);
    let response = {
        use tracing::Instrument;
        next.run(request).instrument(span).await
    };
    let mut response = as_error_body(response, &id).await;
    if let Some(r) = response.extensions_mut().remove::<Rendered>() {
        if response.status().is_server_error() {
            tracing::error!(
                request_id = %id,
                method = %method,
                path = %path,
                status = response.status().as_u16(),
                error = r.detail.as_deref().unwrap_or(&r.info.message),
                "API request failed"
            );
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// `response` with the documented body if it is an error; the [`Rendered`] extension stays for the
/// caller to log.
async fn as_error_body(response: Response, id: &str) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let rendered = parts.extensions.get::<Rendered>().cloned();
    let info = match rendered {
        Some(r) => r.info,
        None => {
            let is_json = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if is_json {
                // A JSON error not made by ApiError: there is none today; pass it unchanged.
                return Response::from_parts(parts, body);
            }
            // Rejection texts are a line or two; anything longer is cut, not buffered.
            let text = axum::body::to_bytes(body, 4096)
                .await
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .unwrap_or_default();
            let (code, message) = rejection(status, &parts.headers, text);
            if status.is_server_error() {
                // Whatever axum or hyper said inside is logged, not sent.
                parts.extensions.insert(Rendered {
                    info: ErrorInfo {
                        code,
                        message: INTERNAL_MESSAGE.into(),
                        request_id: None,
                    },
                    detail: Some(message),
                });
                ErrorInfo {
                    code,
                    message: INTERNAL_MESSAGE.into(),
                    request_id: None,
                }
            } else {
                ErrorInfo {
                    code,
                    message,
                    request_id: None,
                }
            }
        }
    };
    let body = ErrorBody {
        error: ErrorInfo {
            request_id: Some(id.to_string()),
            ..info
        },
    };
    let text = serde_json::to_string(&body).unwrap_or_else(|_| {
        r#"{"error":{"code":"internal","message":"internal error"}}"#.to_string()
    });
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(text))
}

/// The most a request body may be (`POST /api/query`, `/api/sync/trigger`); more is 413.
pub const MAX_REQUEST_BODY: usize = 2 * 1024 * 1024;

/// The code and message of an answer axum made itself.
pub fn rejection(status: StatusCode, headers: &HeaderMap, text: String) -> (&'static str, String) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    async fn rewritten(response: Response) -> (StatusCode, HeaderMap, Value) {
        let r = as_error_body(response, "r-test").await;
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
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert_eq!(body["error"]["request_id"], "r-test");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("GET,HEAD"));

        // 413 as the body limit answers it: plain text.
        let r = (StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded").into_response();
        let (status, _, body) = rewritten(r).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["code"], "payload_too_large");
        assert!(body["error"]["message"].as_str().unwrap().contains("2 MiB"));

        // An extractor's rejection keeps its explanation.
        let r = (
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string: duplicate field `file`",
        )
            .into_response();
        let (_, _, body) = rewritten(r).await;
        assert_eq!(
            body,
            json!({"error": {"code": "bad_request",
                   "message": "Failed to deserialize query string: duplicate field `file`",
                   "request_id": "r-test"}})
        );
    }

    #[tokio::test]
    async fn internal_errors_answer_generically_and_keep_the_detail_for_the_log() {
        let e = ApiError::internal("IO Error: Could not set lock on file \"/x/system.duckdb\"");
        let (status, _, body) = rewritten(e.into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        assert_eq!(body["error"]["message"], INTERNAL_MESSAGE);
        assert!(!body.to_string().contains("duckdb"), "{body}");
        // A plain-text 500 from below the handlers is not passed on either.
        let r = (StatusCode::INTERNAL_SERVER_ERROR, "Binder Error: secret").into_response();
        let (_, _, body) = rewritten(r).await;
        assert_eq!(body["error"]["message"], INTERNAL_MESSAGE);
    }

    #[tokio::test]
    async fn answers_that_are_not_errors_pass_unchanged() {
        let api = ApiError::forbidden("no").retry_after(3).into_response();
        let (status, headers, body) = rewritten(api).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers[header::RETRY_AFTER], "3");
        assert_eq!(
            body,
            json!({"error": {"code": "forbidden", "message": "no", "request_id": "r-test"}})
        );
        let metrics = (StatusCode::OK, "pipeline_build_info 1").into_response();
        let r = as_error_body(metrics, "r").await;
        let bytes = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&bytes[..], b"pipeline_build_info 1");
    }

    #[test]
    fn request_ids_from_clients_are_kept_only_when_plain() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(client_id(&h).as_deref(), Some("abc-123"));
        h.insert(REQUEST_ID, HeaderValue::from_static("a b\"c"));
        assert_eq!(client_id(&h), None);
        assert_ne!(new_id(), new_id());
    }
}

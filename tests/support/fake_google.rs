//! Google's side of the BigQuery connector's tests, over plain HTTP on 127.0.0.1:
//!
//! - [`TestKey`]: an RSA key pair made in the test (the `rsa` crate), written out as a
//!   service-account key file ([`TestKey::service_account_json`]) whose `token_uri` points at
//!   [`FakeGoogle`].
//! - [`FakeGoogle`]: an OAuth 2.0 token endpoint (`POST /token`) for the JWT-bearer grant, as
//!   Google documents it for service accounts. It checks the request as Google would: the form's
//!   `grant_type`, the assertion's RS256 signature against the test key's public half (an
//!   implementation independent of the connector's), and its claims (`iss` = the account, `aud` =
//!   this endpoint, `scope` = BigQuery's, `iat`/`exp` now and at most an hour apart). It answers
//!   `{"access_token", "expires_in", "token_type"}`, or Google's `{"error", "error_description"}`.
//! - [`FaultProxy`]: a pass-through in front of the BigQuery emulator (bqemulator), which cannot
//!   inject faults or estimate bytes itself. It forwards every request upstream, records it (method,
//!   path, query, JSON body, bearer token), and on demand answers instead: 429/5xx with
//!   `Retry-After` ([`FaultProxy::fail_next`]), a `totalBytesProcessed` of the tester's choice in
//!   dry-run answers ([`FaultProxy::set_dry_run_bytes`]), or 401 for tokens the endpoint did not
//!   issue (tokens are checked against [`FakeGoogle::issued`] when [`FaultProxy::require_tokens`]
//!   is set).
//!
//! Included with `#[path = "../support/fake_google.rs"] #[allow(dead_code)] mod fake_google;`.

use std::net::TcpListener as StdTcpListener;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The OAuth scope the connector must ask for.
pub const BIGQUERY_SCOPE: &str = "https://www.googleapis.com/auth/bigquery";
pub const TEST_ACCOUNT: &str = "pipeline-test@demo.iam.gserviceaccount.com";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A 2048-bit RSA key pair, made once per test process (key generation takes a moment).
pub struct TestKey {
    pub private_pem: String,
    pub key_id: String,
    public: rsa::RsaPublicKey,
}

impl TestKey {
    pub fn shared() -> &'static TestKey {
        static KEY: std::sync::OnceLock<TestKey> = std::sync::OnceLock::new();
        KEY.get_or_init(|| {
            use rsa::pkcs8::EncodePrivateKey;
            let private =
                rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("an RSA key pair");
            let private_pem = private
                .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .expect("PKCS#8 PEM")
                .to_string();
            TestKey {
                private_pem,
                key_id: format!("test-key-{:x}", now()),
                public: private.to_public_key(),
            }
        })
    }

    /// A service-account key file's JSON for this key, with `token_uri` at the fake.
    pub fn service_account_json(&self, token_uri: &str, project: &str) -> String {
        json!({
            "type": "service_account",
            "project_id": project,
            "private_key_id": self.key_id,
            "private_key": self.private_pem,
            "client_email": TEST_ACCOUNT,
            "client_id": "123456789",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        })
        .to_string()
    }

    /// Whether `signature` is this key's RS256 signature of `message`.
    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use rsa::signature::Verifier;
        let key = rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(self.public.clone());
        rsa::pkcs1v15::Signature::try_from(signature).is_ok_and(|s| key.verify(message, &s).is_ok())
    }
}

/// Base64url (or standard) text to bytes.
fn b64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    for chunk in text.trim_end_matches('=').as_bytes().chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

/// A server with its own runtime, stopped when dropped.
struct Server {
    base: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    fn start(name: &str, app: Router) -> Server {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.set_nonblocking(true).expect("non-blocking");
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener).expect("a listener")
        };
        runtime.spawn(async move { axum::serve(listener, app).await });
        Server {
            base,
            runtime: Some(runtime),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[derive(Default)]
struct TokenState {
    issued: Vec<String>,
    /// Assertions refused, with why.
    refused: Vec<String>,
    expires_in: i64,
    /// Answer the next requests with this error instead (status, error, description).
    refuse_next: Option<(u16, String, String)>,
}

/// The fake OAuth token endpoint.
pub struct FakeGoogle {
    server: Server,
    state: Arc<Mutex<TokenState>>,
}

impl FakeGoogle {
    pub fn start() -> FakeGoogle {
        let state = Arc::new(Mutex::new(TokenState {
            expires_in: 3599,
            ..TokenState::default()
        }));
        let shared = Arc::clone(&state);
        // The audience the assertion must name is this endpoint's own URL, known once bound.
        let audience: Arc<Mutex<String>> = Arc::default();
        let aud = Arc::clone(&audience);
        let app = Router::new().route(
            "/token",
            post(move |body: Bytes| {
                let state = Arc::clone(&shared);
                let aud = lock(&aud).clone();
                async move { token(&state, &aud, &body) }
            }),
        );
        let server = Server::start("fake-google", app);
        *lock(&audience) = format!("{}/token", server.base);
        FakeGoogle { server, state }
    }

    /// The key file's `token_uri`.
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.server.base)
    }

    /// Access tokens handed out so far.
    pub fn issued(&self) -> Vec<String> {
        lock(&self.state).issued.clone()
    }

    /// Assertions refused so far, with why.
    pub fn refused(&self) -> Vec<String> {
        lock(&self.state).refused.clone()
    }

    /// Answer every token request with Google's error until [`FakeGoogle::accept`].
    pub fn refuse(&self, status: u16, error: &str, description: &str) {
        lock(&self.state).refuse_next = Some((status, error.into(), description.into()));
    }

    pub fn accept(&self) {
        lock(&self.state).refuse_next = None;
    }
}

/// The `n`th access token the fake hands out (the same in every test, so a test can look for it).
pub fn token_number(n: usize) -> String {
    format!("ya29.fake-bigquery-access-token-{n:04}-c0ffee")
}

fn token(state: &Mutex<TokenState>, audience: &str, body: &[u8]) -> Response {
    let refuse = |why: String| {
        lock(state).refused.push(why.clone());
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    if let Some((status, error, description)) = lock(state).refuse_next.clone() {
        return (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response();
    }
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if field("grant_type") != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return refuse(format!("unsupported grant_type {:?}", field("grant_type")));
    }
    let Some(assertion) = field("assertion") else {
        return refuse("no assertion".into());
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return refuse("the assertion is not a JWS in compact form".into());
    };
    let key = TestKey::shared();
    let signed = format!("{header}.{claims}");
    if !b64(signature).is_some_and(|s| key.verifies(signed.as_bytes(), &s)) {
        return refuse("Invalid JWT Signature.".into());
    }
    let decode = |part: &str| -> Value {
        b64(part)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    let (header, claims) = (decode(header), decode(claims));
    if header["alg"] != "RS256" || header["kid"] != key.key_id.as_str() {
        return refuse(format!("unexpected JWT header {header}"));
    }
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    let problems = [
        (claims["iss"] != TEST_ACCOUNT, "iss"),
        (claims["aud"] != audience, "aud"),
        (claims["scope"] != BIGQUERY_SCOPE, "scope"),
        ((iat - now()).abs() > 300, "iat"),
        (exp <= iat || exp - iat > 3600, "exp"),
    ];
    if let Some((_, claim)) = problems.iter().find(|(bad, _)| *bad) {
        return refuse(format!("Invalid JWT: bad `{claim}` claim in {claims}"));
    }
    let mut s = lock(state);
    let token = token_number(s.issued.len());
    s.issued.push(token.clone());
    Json(json!({"access_token": token, "expires_in": s.expires_in, "token_type": "Bearer"}))
        .into_response()
}

/// A request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
    pub bearer: Option<String>,
    /// What the client got: the injected fault's status, or upstream's.
    pub status: u16,
}

impl Seen {
    pub fn is_dry_run(&self) -> bool {
        self.body["dryRun"] == true
    }

    /// A `jobs.query` that runs (not a dry run).
    pub fn is_query(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/queries") && !self.is_dry_run()
    }
}

struct Fault {
    /// Only `jobs.query` calls that run (not dry runs).
    job_queries_only: bool,
    method: Method,
    path_contains: String,
    remaining: usize,
    status: u16,
    retry_after: Option<u64>,
}

#[derive(Default)]
struct ProxyState {
    faults: Vec<Fault>,
    dry_run_bytes: Option<u64>,
    pass_dry_runs: bool,
    seen: Vec<Seen>,
    /// When set, a bearer token not in this list is answered 401.
    valid_tokens: Option<Arc<Mutex<TokenState>>>,
}

/// The fault-injecting pass-through in front of the emulator.
pub struct FaultProxy {
    server: Server,
    state: Arc<Mutex<ProxyState>>,
}

impl FaultProxy {
    /// A proxy for `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> FaultProxy {
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = Arc::clone(&state);
        let upstream = upstream.trim_end_matches('/').to_string();
        let app = Router::new().fallback(any(move |req: Request| {
            let state = Arc::clone(&shared);
            let upstream = upstream.clone();
            async move { forward(state, upstream, req).await }
        }));
        FaultProxy {
            server: Server::start("fault-proxy", app),
            state,
        }
    }

    /// The endpoint to give the connector.
    pub fn url(&self) -> String {
        self.server.base.clone()
    }

    /// Answers the next `count` requests of `method` whose path contains `path_contains` with
    /// `status` (and `Retry-After: secs` when given) instead of forwarding them.
    pub fn fail_next(
        &self,
        method: &str,
        path_contains: &str,
        count: usize,
        status: u16,
        retry_after: Option<u64>,
    ) {
        lock(&self.state).faults.push(Fault {
            job_queries_only: false,
            method: method.parse().expect("an HTTP method"),
            path_contains: path_contains.into(),
            remaining: count,
            status,
            retry_after,
        });
    }

    /// Like [`FaultProxy::fail_next`] for `jobs.query` calls that run a query (dry runs pass).
    pub fn fail_next_job_query(&self, count: usize, status: u16, retry_after: Option<u64>) {
        lock(&self.state).faults.push(Fault {
            job_queries_only: true,
            method: Method::POST,
            path_contains: "/queries".into(),
            remaining: count,
            status,
            retry_after,
        });
    }

    /// Dry runs are answered here with success (0 bytes, no schema) and never reach the emulator:
    /// a query that would pass its dry run and fail while it runs.
    pub fn pass_dry_runs(&self) {
        lock(&self.state).pass_dry_runs = true;
    }

    /// Dry runs answer `totalBytesProcessed: bytes` (the emulator has no cost model: it says 0).
    pub fn set_dry_run_bytes(&self, bytes: u64) {
        lock(&self.state).dry_run_bytes = Some(bytes);
    }

    /// Refuse (401) bearer tokens `google` did not issue.
    pub fn require_tokens(&self, google: &FakeGoogle) {
        lock(&self.state).valid_tokens = Some(Arc::clone(&google.state));
    }

    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.state).seen.clone()
    }

    pub fn clear(&self) {
        lock(&self.state).seen.clear();
    }
}

async fn forward(state: Arc<Mutex<ProxyState>>, upstream: String, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers: HeaderMap = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(String::from);
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut seen = Seen {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: json_body.clone(),
        bearer: bearer.clone(),
        status: 0,
    };
    let injected = {
        let mut s = lock(&state);
        let unknown_token = s.valid_tokens.as_ref().is_some_and(|t| {
            bearer
                .as_ref()
                .is_none_or(|b| !lock(t).issued.iter().any(|i| i == b))
        });
        if unknown_token {
            Some((401, None))
        } else {
            s.faults
                .iter_mut()
                .find(|f| {
                    f.remaining > 0
                        && f.method == method
                        && path.contains(&f.path_contains)
                        && !(f.job_queries_only && json_body["dryRun"] == true)
                })
                .map(|f| {
                    f.remaining -= 1;
                    (f.status, f.retry_after)
                })
        }
    };
    if let Some((status, retry_after)) = injected {
        seen.status = status;
        lock(&state).seen.push(seen);
        let reason = match status {
            401 => "authError",
            429 | 403 => "rateLimitExceeded",
            _ => "backendError",
        };
        let body = json!({"error": {"code": status, "message": format!("injected {status}"),
                                    "errors": [{"reason": reason, "message": format!("injected {status}")}]}});
        let mut response = (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(body),
        )
            .into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(
                "retry-after",
                secs.to_string().parse().expect("a header value"),
            );
        }
        return response;
    }
    if json_body["dryRun"] == true && lock(&state).pass_dry_runs {
        seen.status = 200;
        lock(&state).seen.push(seen);
        let answer = json!({"kind": "bigquery#queryResponse", "jobComplete": true,
                            "totalBytesProcessed": "0", "schema": {"fields": []}});
        return Json(answer).into_response();
    }
    let url = if query.is_empty() {
        format!("{upstream}{path}")
    } else {
        format!("{upstream}{path}?{query}")
    };
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let m = method.to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut r = ureq::request(&m, &url)
            .timeout(Duration::from_secs(120))
            .set("content-type", &content_type);
        if let Some(a) = &auth {
            r = r.set("authorization", a);
        }
        let result = if body.is_empty() {
            r.call()
        } else {
            r.send_bytes(&body)
        };
        match result {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
                let status = resp.status();
                (status, resp.into_string().unwrap_or_default())
            }
            Err(e) => (
                502,
                json!({"error": {"code": 502, "message": e.to_string()}}).to_string(),
            ),
        }
    })
    .await
    .unwrap_or((502, String::new()));
    let (status, mut text) = answer;
    let dry_run_bytes = lock(&state).dry_run_bytes;
    if let (Some(bytes), true) = (dry_run_bytes, json_body["dryRun"] == true) {
        if let Ok(mut v) = serde_json::from_str::<Value>(&text) {
            v["totalBytesProcessed"] = bytes.to_string().into();
            text = v.to_string();
        }
    }
    seen.status = status;
    lock(&state).seen.push(seen);
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        [("content-type", "application/json")],
        text,
    )
        .into_response()
}

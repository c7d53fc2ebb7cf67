//! Service-account authentication for the BigQuery REST API: the OAuth 2.0 JWT-bearer grant
//! (RFC 7523) as Google documents it for service accounts.
//!
//! A service-account key is the JSON file Google issues (`type`, `client_email`, `private_key` (PKCS#8
//! PEM), `private_key_id`, `token_uri`, `project_id`). To get an access token, a JWT whose claims name
//! the account (`iss`), the BigQuery scope, the token endpoint (`aud`) and a one-hour validity is
//! signed with the key (RS256: RSASSA-PKCS1-v1_5 over SHA-256, by `ring`) and posted to the key's
//! `token_uri` as `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<jwt>`. The
//! answer's `access_token` is cached (per account, endpoint and scope, for the whole process: each
//! task builds its own connector) until five minutes before it expires, so a run asks once an hour.
//!
//! Secrets: the private key, the signed assertion (a bearer credential until it expires) and every
//! access token are registered with [`crate::redact`] the moment they are read or made, and no
//! `Debug` output or error message contains them.

use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The OAuth scope of the BigQuery API.
pub const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";

/// Google's token endpoint, when a key names none.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// How long an assertion is valid (Google accepts at most one hour).
const ASSERTION_LIFETIME: i64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The key cannot be used (not JSON, not a service account, an unreadable private key).
    #[error("{0}")]
    Key(String),
    /// The token endpoint refused the assertion or could not be reached.
    #[error("token endpoint {endpoint}: {message}")]
    Token { endpoint: String, message: String },
}

/// A service-account key, parsed and ready to sign.
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key_id: Option<String>,
    pub token_uri: String,
    /// The project the account belongs to (the default `project_id` of a source).
    pub project_id: Option<String>,
    key: ring::signature::RsaKeyPair,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is a secret: never printed.
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    client_email: Option<String>,
    #[serde(default)]
    private_key: Option<String>,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
}

impl ServiceAccount {
    /// Parses a key file's JSON. `origin` names where it came from, for messages (a path or an
    /// environment variable's name, never its content). The private key is registered as a secret
    /// before anything else can fail.
    pub fn from_json(json: &str, origin: &str) -> Result<ServiceAccount, AuthError> {
        let key: KeyFile = serde_json::from_str(json).map_err(|e| {
            // serde's message quotes no input beyond a type name, but say only where it broke.
            AuthError::Key(format!(
                "{origin} is not a service-account key (JSON): error at line {} column {}",
                e.line(),
                e.column()
            ))
        })?;
        if let Some(pem) = &key.private_key {
            register_pem(pem);
        }
        if let Some(kind) = key.kind.as_deref().filter(|k| *k != "service_account") {
            return Err(AuthError::Key(format!(
                "{origin} holds a `{kind}` credential; a BigQuery source needs a service-account key \
                 (\"type\": \"service_account\")"
            )));
        }
        let missing = |field: &str| {
            AuthError::Key(format!(
                "{origin} has no `{field}`: is it a service-account key file?"
            ))
        };
        let client_email = key.client_email.ok_or_else(|| missing("client_email"))?;
        let pem = key.private_key.ok_or_else(|| missing("private_key"))?;
        let der = pem_body(&pem).ok_or_else(|| {
            AuthError::Key(format!(
                "{origin}: `private_key` is not a PEM-encoded key (-----BEGIN PRIVATE KEY-----)"
            ))
        })?;
        let key_pair = if pem.contains("BEGIN RSA PRIVATE KEY") {
            ring::signature::RsaKeyPair::from_der(&der)
        } else {
            ring::signature::RsaKeyPair::from_pkcs8(&der)
        }
        .map_err(|e| {
            AuthError::Key(format!(
                "{origin}: `private_key` is not a usable RSA key ({e})"
            ))
        })?;
        Ok(ServiceAccount {
            client_email,
            private_key_id: key.private_key_id,
            token_uri: key
                .token_uri
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| GOOGLE_TOKEN_URI.to_string()),
            project_id: key.project_id,
            key: key_pair,
        })
    }

    /// The signed JWT assertion for `scope`, issued at `now` (unix seconds).
    pub fn assertion(&self, scope: &str, now: i64) -> Result<String, AuthError> {
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.private_key_id {
            header["kid"] = kid.clone().into();
        }
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": scope,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        let signing_input = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| AuthError::Key("signing the token request failed".into()))?;
        let jwt = format!("{signing_input}.{}", base64url(&signature));
        // A bearer credential at the token endpoint until it expires.
        crate::redact::register(&jwt);
        Ok(jwt)
    }
}

/// Registers a PEM key as a secret: whole, and each of its base64 lines, so that no part of it
/// survives in a log line that shows only some of it.
fn register_pem(pem: &str) {
    crate::redact::register(pem);
    for line in pem.lines().map(str::trim) {
        if !line.starts_with("-----") && line.len() >= 16 {
            crate::redact::register(line);
        }
    }
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    crate::redact::register(&body);
}

/// The DER bytes inside a PEM block.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN ")?;
    let after = &pem[start..];
    let header_end = after.find('\n')?;
    let end = after.find("-----END ")?;
    if end <= header_end {
        return None;
    }
    let body: String = after[header_end..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64_decode(&body)
}

/// Base64url without padding (RFC 7515 §2), as JWTs use.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Standard base64 (with or without padding) to bytes; `None` when it is not base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
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

/// An access token and when to stop using it.
#[derive(Clone)]
struct Cached {
    token: String,
    renew_at: Instant,
}

/// (account, token endpoint, scope).
type TokenKey = (String, String, String);

/// Tokens by [`TokenKey`], for the whole process.
static TOKENS: Mutex<Option<HashMap<TokenKey, Cached>>> = Mutex::new(None);

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

impl ServiceAccount {
    fn cache_key(&self, scope: &str) -> TokenKey {
        (
            self.client_email.clone(),
            self.token_uri.clone(),
            scope.to_string(),
        )
    }

    /// An access token for `scope`: the cached one while it is valid for five more minutes, else a
    /// new one from the token endpoint (one attempt; the caller retries).
    pub fn access_token(&self, agent: &ureq::Agent, scope: &str) -> Result<String, AuthError> {
        let key = self.cache_key(scope);
        {
            let cache = TOKENS.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.as_ref().and_then(|m| m.get(&key)) {
                if Instant::now() < c.renew_at {
                    return Ok(c.token.clone());
                }
            }
        }
        let (token, lifetime) = self.exchange(agent, scope)?;
        // Renewed five minutes early (a query can start just before expiry), or at half the
        // lifetime of a short-lived token.
        let margin = Duration::from_secs(300).min(lifetime / 2);
        let cached = Cached {
            token: token.clone(),
            renew_at: Instant::now() + lifetime - margin,
        };
        TOKENS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(key, cached);
        Ok(token)
    }

    /// Forgets the cached token (the API refused it: revoked, or the clock is off).
    pub fn forget_token(&self, scope: &str) {
        if let Some(m) = TOKENS.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            m.remove(&self.cache_key(scope));
        }
    }

    /// Posts a fresh assertion to the token endpoint; the token and its lifetime.
    fn exchange(&self, agent: &ureq::Agent, scope: &str) -> Result<(String, Duration), AuthError> {
        let now = chrono::Utc::now().timestamp();
        let assertion = self.assertion(scope, now)?;
        let fail = |message: String| AuthError::Token {
            endpoint: self.token_uri.clone(),
            message,
        };
        let response = agent.post(&self.token_uri).send_form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &assertion),
        ]);
        let (status, body) = match response {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(status, r)) => (status, r.into_string().unwrap_or_default()),
            Err(ureq::Error::Transport(t)) => {
                return Err(fail(format!(
                    "{}{}",
                    t.kind(),
                    t.message().map(|m| format!(": {m}")).unwrap_or_default()
                )))
            }
        };
        let parsed: Option<TokenResponse> = serde_json::from_str(&body).ok();
        if let Some(token) = parsed.as_ref().and_then(|p| p.access_token.clone()) {
            if (200..300).contains(&status) {
                crate::redact::register(&token);
                let seconds = parsed
                    .as_ref()
                    .and_then(|p| p.expires_in)
                    .filter(|s| *s > 0)
                    .unwrap_or(3600);
                return Ok((token, Duration::from_secs(seconds as u64)));
            }
        }
        let message = match parsed {
            Some(TokenResponse {
                error: Some(error),
                error_description,
                ..
            }) => match error_description {
                Some(d) => format!("HTTP {status}: {error}: {d}"),
                None => format!("HTTP {status}: {error}"),
            },
            _ => format!("HTTP {status}: the answer has no access_token"),
        };
        Err(fail(crate::redact::redact(&message).into_owned()))
    }
}

/// Whether a token endpoint's refusal is worth another attempt (the endpoint is overloaded or
/// unreachable), rather than final (`invalid_grant`: a wrong key, a disabled account).
pub fn is_transient(e: &AuthError) -> bool {
    match e {
        AuthError::Key(_) => false,
        AuthError::Token { message, .. } => {
            message.starts_with("HTTP 5")
                || message.starts_with("HTTP 429")
                || !message.starts_with("HTTP ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_in_both_alphabets() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        for bytes in [&b"any carnal pleas"[..], b"\x00\x01\x02\xff", b"ab"] {
            assert_eq!(base64_decode(&base64url(bytes)).as_deref(), Some(bytes));
        }
        assert_eq!(
            base64_decode("AAEC/w==").as_deref(),
            Some(&[0, 1, 2, 255][..])
        );
        assert_eq!(base64_decode("A"), None);
        assert_eq!(base64_decode("a b"), None);
    }

    /// A token endpoint on 127.0.0.1 answering every request with a new token valid for
    /// `expires_in` seconds; counts the requests.
    fn token_endpoint(expires_in: u64) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let json =
                    format!(r#"{{"access_token": "test-token-{n}", "expires_in": {expires_in}}}"#);
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{json}",
                    json.len()
                );
            }
        });
        (url, count)
    }

    fn test_account(token_uri: &str) -> ServiceAccount {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let json = serde_json::json!({"type": "service_account", "client_email": "t@example.com",
            "private_key": pem.as_str(), "token_uri": token_uri});
        ServiceAccount::from_json(&json.to_string(), "a test key").unwrap()
    }

    #[test]
    fn tokens_are_cached_until_shortly_before_they_expire() {
        let agent = ureq::Agent::new();
        let (url, requests) = token_endpoint(3600);
        let account = test_account(&url);
        let scope = "https://example.com/scope-cached";
        assert_eq!(account.access_token(&agent, scope).unwrap(), "test-token-0");
        assert_eq!(account.access_token(&agent, scope).unwrap(), "test-token-0");
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Refused by the API: forgotten, and a new one is asked for.
        account.forget_token(scope);
        assert_eq!(account.access_token(&agent, scope).unwrap(), "test-token-1");

        // A token valid for 2 s is renewed after half of it, not used to the last second.
        let (url, requests) = token_endpoint(2);
        let account = test_account(&url);
        let scope = "https://example.com/scope-short";
        assert_eq!(account.access_token(&agent, scope).unwrap(), "test-token-0");
        assert_eq!(account.access_token(&agent, scope).unwrap(), "test-token-0");
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(account.access_token(&agent, scope).unwrap(), "test-token-1");
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Every token is a registered secret.
        assert!(!crate::redact::redact("Bearer x test-token-1").contains("test-token-1"));
    }

    #[test]
    fn a_key_that_is_not_a_service_account_key_is_refused_without_showing_it() {
        let origin = "credentials_env BQ_KEY";
        let e = ServiceAccount::from_json("{not json", origin).unwrap_err();
        assert!(e.to_string().contains("not a service-account key"), "{e}");
        let e = ServiceAccount::from_json(
            r#"{"type": "authorized_user", "client_email": "a@b", "private_key": "x"}"#,
            origin,
        )
        .unwrap_err();
        assert!(e.to_string().contains("`authorized_user`"), "{e}");
        let secret_pem = "-----BEGIN PRIVATE KEY-----\nTUlJRXZnSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NCS2d3\n-----END PRIVATE KEY-----\n";
        let json = serde_json::json!({"type": "service_account", "client_email": "a@b",
                                      "private_key": secret_pem})
        .to_string();
        let e = ServiceAccount::from_json(&json, origin).unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains("not a usable RSA key"), "{shown}");
        assert!(!shown.contains("TUlJRXZn"), "{shown}");
        // Registered as a secret as soon as it was read.
        assert!(!crate::redact::redact(secret_pem).contains("TUlJRXZn"));
    }
}

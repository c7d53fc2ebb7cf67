//! A small, blocking client for the parts of Jira Cloud's REST API v3 the connector needs: an issue
//! with everything the tables hold (`GET /rest/api/3/issue/{key}?expand=renderedFields,changelog&fields=*all`,
//! completed by the paginated changelog and comment endpoints when the issue's own lists are
//! truncated), its remote links, the field metadata (`/rest/api/3/field`), and JQL search with
//! token pagination (`/rest/api/3/search/jql`, `nextPageToken`).
//!
//! Requests authenticate with basic auth (account e-mail + API token) in the `Authorization`
//! header, never in a URL; the token (and the encoded header) are registered with
//! [`crate::redact`], so no log line or error shows them. 429 and 5xx answers and network errors
//! are retried a bounded number of times with jittered exponential backoff; a `Retry-After`
//! header (seconds) is honoured, up to a cap. A 404 on an issue means it is gone (deleted, or no
//! longer visible to the account): [`Client::fetch_issue`] returns `None` and the caller removes it.

// ureq's error carries the response; it is large, and only ever handled right where it occurs.
#![allow(clippy::result_large_err)]

use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum JiraError {
    #[error("Jira {what}: HTTP {status}: {message}")]
    Http {
        what: String,
        status: u16,
        message: String,
    },
    #[error("Jira {what}: {message}")]
    Transport { what: String, message: String },
    #[error("Jira {what}: unexpected response: {message}")]
    Protocol { what: String, message: String },
}

impl JiraError {
    /// The HTTP status, for errors that are answers.
    pub fn status(&self) -> Option<u16> {
        match self {
            JiraError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Retry and timeout settings (tests shorten them).
#[derive(Clone, Debug)]
pub struct Patience {
    /// Attempts per request, the first included.
    pub attempts: u32,
    pub first_pause: Duration,
    pub max_pause: Duration,
    /// The longest `Retry-After` obeyed; a longer one is waited for this long.
    pub max_retry_after: Duration,
    pub request_timeout: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Patience {
            attempts: 6,
            first_pause: Duration::from_millis(500),
            max_pause: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            request_timeout: Duration::from_secs(60),
        }
    }
}

pub struct Client {
    base: String,
    /// `Basic <base64(email:token)>`: a secret.
    authorization: String,
    agent: ureq::Agent,
    patience: Patience,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credentials are a secret: never printed.
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

/// One entry of `GET /rest/api/3/field`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct FieldMeta {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub custom: bool,
    #[serde(default)]
    pub schema: Option<FieldSchema>,
}

/// A field's `schema`: its JSON type (`string`, `number`, `date`, `datetime`, `array`, `option`,
/// `user`, `any`…), the item type of arrays, and for custom fields the plugin type
/// (`com.pyxis.greenhopper.jira:gh-sprint`…).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct FieldSchema {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub items: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub custom: Option<String>,
}

/// An issue as the tables need it: the issue (changelog and comments complete) and its remote links.
#[derive(Clone, Debug, PartialEq)]
pub struct FetchedIssue {
    pub issue: Value,
    pub remote_links: Vec<Value>,
}

/// One page of a JQL search.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchPage {
    /// Issues with the requested fields (`id`, `key`, `fields`).
    pub issues: Vec<Value>,
    /// The token for the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// Histories and comments fetched per request when completing a truncated list (the endpoints'
/// maximum page size is 100 for changelogs).
const PAGE: usize = 100;

impl Client {
    /// A client for the site at `base` (e.g. `https://acme.atlassian.net`). The token and the
    /// encoded credentials are registered with [`crate::redact`] here.
    pub fn new(base: &str, email: &str, token: &str, patience: Patience) -> Client {
        crate::redact::register(token);
        let pair = format!("{email}:{token}");
        crate::redact::register(&pair);
        let encoded = base64_padded(pair.as_bytes());
        crate::redact::register(&encoded);
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .timeout(patience.request_timeout)
            .build();
        Client {
            base: base.trim_end_matches('/').to_string(),
            authorization: format!("Basic {encoded}"),
            agent,
            patience,
        }
    }

    /// The site URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The field metadata of the site (`GET /rest/api/3/field`).
    pub fn fields(&self) -> Result<Vec<FieldMeta>, JiraError> {
        let v = self.get_json("field list", "/rest/api/3/field")?;
        decode("field list", v)
    }

    /// The issue (by key or id) with its changelog and comments complete, and its remote links;
    /// `None` when Jira answers 404 (deleted, or not visible to the account).
    pub fn fetch_issue(&self, key_or_id: &str) -> Result<Option<FetchedIssue>, JiraError> {
        let Some(mut issue) = self.issue(key_or_id)? else {
            return Ok(None);
        };
        // Sub-resources by the issue's current key (an id or a moved issue's old key redirects).
        let key = issue
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or(key_or_id)
            .to_string();
        self.complete_changelog(&key, &mut issue)?;
        self.complete_comments(&key, &mut issue)?;
        let remote_links = match self.remote_links(&key) {
            Ok(links) => links,
            // Deleted between the two requests: gone.
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(FetchedIssue {
            issue,
            remote_links,
        }))
    }

    /// `GET /rest/api/3/issue/{key}?expand=renderedFields,changelog&fields=*all`; `None` on 404.
    pub fn issue(&self, key_or_id: &str) -> Result<Option<Value>, JiraError> {
        let path = format!(
            "/rest/api/3/issue/{}?expand=renderedFields,changelog&fields=*all",
            enc(key_or_id)
        );
        match self.get_json(&format!("issue {key_or_id}"), &path) {
            Ok(v) if v.is_object() => Ok(Some(v)),
            Ok(_) => Err(JiraError::Protocol {
                what: format!("issue {key_or_id}"),
                message: "the answer is not a JSON object".into(),
            }),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /rest/api/3/issue/{key}/remotelink`.
    pub fn remote_links(&self, key: &str) -> Result<Vec<Value>, JiraError> {
        let what = format!("remote links of {key}");
        let v = self.get_json(&what, &format!("/rest/api/3/issue/{}/remotelink", enc(key)))?;
        decode(&what, v)
    }

    /// One page of `GET /rest/api/3/search/jql` with the given fields.
    pub fn search_page(
        &self,
        jql: &str,
        fields: &[&str],
        max_results: usize,
        next_page_token: Option<&str>,
    ) -> Result<SearchPage, JiraError> {
        let mut path = format!(
            "/rest/api/3/search/jql?jql={}&maxResults={max_results}",
            enc(jql)
        );
        if !fields.is_empty() {
            path.push_str(&format!("&fields={}", enc(&fields.join(","))));
        }
        if let Some(token) = next_page_token {
            path.push_str(&format!("&nextPageToken={}", enc(token)));
        }
        let v = self.get_json("search", &path)?;
        let issues = v
            .get("issues")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let is_last = v.get("isLast").and_then(Value::as_bool);
        let next = v
            .get("nextPageToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        // `isLast: true` ends the search even if a token came along; a token with no issues would
        // loop forever on a misbehaving server, so it ends it too.
        let next_page_token = match (is_last, next) {
            (Some(true), _) => None,
            (_, Some(_)) if issues.is_empty() => None,
            (_, next) => next,
        };
        Ok(SearchPage {
            issues,
            next_page_token,
        })
    }

    /// Replaces a truncated `changelog.histories` with every history from
    /// `GET /rest/api/3/issue/{key}/changelog` (paginated by `startAt`).
    fn complete_changelog(&self, key: &str, issue: &mut Value) -> Result<(), JiraError> {
        let Some(changelog) = issue.get("changelog") else {
            return Ok(());
        };
        let Some(all) = self.complete(
            key,
            changelog,
            "histories",
            "changelog",
            "values",
            "changelog",
        )?
        else {
            return Ok(());
        };
        issue["changelog"] = serde_json::json!({
            "startAt": 0, "maxResults": all.len(), "total": all.len(), "histories": all
        });
        Ok(())
    }

    /// Replaces a truncated `fields.comment.comments` with every comment from
    /// `GET /rest/api/3/issue/{key}/comment` (paginated by `startAt`).
    fn complete_comments(&self, key: &str, issue: &mut Value) -> Result<(), JiraError> {
        let Some(comment) = issue.pointer("/fields/comment") else {
            return Ok(());
        };
        let Some(all) =
            self.complete(key, comment, "comments", "comment", "comments", "comments")?
        else {
            return Ok(());
        };
        issue["fields"]["comment"] = serde_json::json!({
            "startAt": 0, "maxResults": all.len(), "total": all.len(), "comments": all
        });
        Ok(())
    }

    /// Every item of an issue's list that the issue itself carries truncated (`embedded[list]`
    /// shorter than `embedded.total`), read from `GET /rest/api/3/issue/{key}/{endpoint}` page by
    /// page (`startAt`) under `page_list` (`noun` names them in errors); `None` when the embedded list is already whole. A page
    /// ends the list when it is empty, says `isLast: true`, or brings the count to its `total`
    /// (without `isLast` or `total`, one page is all there is).
    fn complete(
        &self,
        key: &str,
        embedded: &Value,
        list: &str,
        endpoint: &str,
        page_list: &str,
        noun: &str,
    ) -> Result<Option<Vec<Value>>, JiraError> {
        let have = embedded
            .get(list)
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let total = embedded.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
        if total <= have {
            return Ok(None);
        }
        let what = format!("{noun} of {key}");
        let mut all = Vec::with_capacity(total);
        loop {
            let path = format!(
                "/rest/api/3/issue/{}/{endpoint}?startAt={}&maxResults={PAGE}",
                enc(key),
                all.len()
            );
            let page = self.get_json(&what, &path)?;
            let values = page
                .get(page_list)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let is_last = page.get("isLast").and_then(Value::as_bool);
            let page_total = page
                .get("total")
                .and_then(Value::as_u64)
                .map(|t| t as usize);
            let got = values.len();
            all.extend(values);
            let done = got == 0
                || is_last == Some(true)
                || page_total.is_some_and(|t| all.len() >= t)
                || (is_last.is_none() && page_total.is_none());
            if done {
                break;
            }
        }
        Ok(Some(all))
    }

    fn get_json(&self, what: &str, path_and_query: &str) -> Result<Value, JiraError> {
        let url = format!("{}{path_and_query}", self.base);
        let resp = self.send(what, || {
            self.agent
                .get(&url)
                .set("Authorization", &self.authorization)
                .set("Accept", "application/json")
                .call()
        })?;
        resp.into_json().map_err(|e| JiraError::Protocol {
            what: what.to_string(),
            message: crate::redact::redact(&e.to_string()).into_owned(),
        })
    }

    /// Sends a request (built fresh for each attempt) and returns the response once it is not a
    /// retryable failure.
    fn send(
        &self,
        what: &str,
        mut request: impl FnMut() -> Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, JiraError> {
        let mut pause = self.patience.first_pause;
        let attempts = self.patience.attempts.max(1);
        for attempt in 1..=attempts {
            let last = attempt == attempts;
            match request() {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(status, resp)) => {
                    let retry_after = resp
                        .header("Retry-After")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let message = error_message(resp);
                    let retryable = status == 429 || status >= 500;
                    if !retryable || last {
                        return Err(JiraError::Http {
                            what: what.to_string(),
                            status,
                            message,
                        });
                    }
                    let wait = retry_after
                        .map(|w| w.min(self.patience.max_retry_after))
                        .unwrap_or_else(|| jitter(pause));
                    tracing::warn!(status, ?wait, attempt, "Jira {what}: retrying");
                    std::thread::sleep(wait);
                }
                Err(ureq::Error::Transport(t)) => {
                    let message = transport_message(&t);
                    if last {
                        return Err(JiraError::Transport {
                            what: what.to_string(),
                            message,
                        });
                    }
                    tracing::warn!(error = %message, attempt, "Jira {what}: retrying");
                    std::thread::sleep(jitter(pause));
                }
            }
            pause = (pause * 2).min(self.patience.max_pause);
        }
        unreachable!("the last attempt returns")
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T, JiraError> {
    serde_json::from_value(v).map_err(|e| JiraError::Protocol {
        what: what.to_string(),
        message: e.to_string(),
    })
}

/// Jira's error body (`{"errorMessages": [...], "errors": {"field": "message"}}`), else the status
/// text. Redacted: a message may echo a request.
fn error_message(resp: ureq::Response) -> String {
    let status_text = resp.status_text().to_string();
    let body = resp.into_string().unwrap_or_default();
    let from_json = serde_json::from_str::<Value>(&body).ok().and_then(|v| {
        let mut parts: Vec<String> = v
            .get("errorMessages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(str::to_string))
            .collect();
        if let Some(errors) = v.get("errors").and_then(Value::as_object) {
            for (field, m) in errors {
                if let Some(m) = m.as_str() {
                    parts.push(format!("{field}: {m}"));
                }
            }
        }
        if parts.is_empty() {
            v.get("message").and_then(Value::as_str).map(str::to_string)
        } else {
            Some(parts.join("; "))
        }
    });
    crate::redact::redact(&from_json.unwrap_or(status_text)).into_owned()
}

/// A transport failure's kind and detail, redacted.
fn transport_message(t: &ureq::Transport) -> String {
    let mut message = t.kind().to_string();
    if let Some(detail) = t.message() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if let Some(source) = std::error::Error::source(t) {
        message.push_str(": ");
        message.push_str(&source.to_string());
    }
    crate::redact::redact(&message).into_owned()
}

/// A pause of 50–100 % of `d`, so that many clients retrying do not retry in step.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
}

/// Percent-encoding for a path segment or a query value: unreserved bytes pass.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648), for the basic-auth header.
fn base64_padded(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jira_basic_auth_is_padded_base64() {
        assert_eq!(base64_padded(b""), "");
        assert_eq!(base64_padded(b"f"), "Zg==");
        assert_eq!(base64_padded(b"fo"), "Zm8=");
        assert_eq!(base64_padded(b"foo"), "Zm9v");
        assert_eq!(
            base64_padded(b"user@example.com:api-token"),
            "dXNlckBleGFtcGxlLmNvbTphcGktdG9rZW4="
        );
    }

    #[test]
    fn jira_client_never_shows_its_credentials() {
        let c = Client::new(
            "https://acme.atlassian.net/",
            "bot@acme.example",
            "ATATT-unit-test-token-41",
            Patience::default(),
        );
        assert_eq!(c.base(), "https://acme.atlassian.net");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("ATATT") && !debug.contains("Basic"),
            "{debug}"
        );
        let line = format!("GET with Authorization {}", c.authorization);
        let shown = crate::redact::redact(&line);
        assert!(!shown.contains("ATATT"), "{shown}");
        assert!(
            !shown.contains(&base64_padded(b"bot@acme.example:ATATT-unit-test-token-41")[..20]),
            "{shown}"
        );
    }

    #[test]
    fn jira_query_values_are_percent_encoded() {
        assert_eq!(
            enc("project = \"OPS\" AND updated >= 2024-01-01"),
            "project%20%3D%20%22OPS%22%20AND%20updated%20%3E%3D%202024-01-01"
        );
        assert_eq!(enc("PROJ-1"), "PROJ-1");
        assert_eq!(enc("../x"), "..%2Fx");
    }
}

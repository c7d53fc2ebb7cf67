//! A reader of OpenMetadata's REST API (`/api/v1/tables`, `/api/v1/metrics`), as far as the
//! catalogue import needs it: every page of each list, through the `paging.after` cursor.
//!
//! The token (a JWT, from the environment variable the user names) goes only in the
//! `Authorization` header; errors name the URL and the status, never the token. Unknown fields are
//! ignored and missing ones default, so servers of other versions still read.

use serde::Deserialize;
use std::time::Duration;

/// Rows asked for per page (OpenMetadata's maximum is 1000000; its default 10).
pub const PAGE_SIZE: usize = 100;

/// At most this many pages per list: a server that keeps answering with new cursors is broken,
/// and the import stops rather than loop.
const MAX_PAGES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum OpenMetadataError {
    #[error(
        "{url} refused the request ({status}): check the token in ${token_env} (an OpenMetadata \
         bot or personal access token)"
    )]
    Unauthorized {
        url: String,
        status: u16,
        token_env: String,
    },
    #[error(
        "{url} answered 404: is this an OpenMetadata server (its API lives under /api/v1)? {message}"
    )]
    NotFound { url: String, message: String },
    #[error("{url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error(
        "{url} did not answer with OpenMetadata's JSON ({detail}); is this an OpenMetadata server?"
    )]
    NotJson { url: String, detail: String },
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{url} kept returning next-page cursors after {pages} pages; stopped")]
    EndlessPaging { url: String, pages: usize },
}

/// One page of a list: `{"data": [...], "paging": {"after": "...", "total": N}}`.
#[derive(Debug, Deserialize)]
struct Page<T> {
    data: Vec<T>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Debug, Default, Deserialize)]
struct Paging {
    #[serde(default)]
    after: Option<String>,
}

/// A table entity (the fields the import reads).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    pub name: String,
    /// `service.database.schema.table`.
    #[serde(default)]
    pub fully_qualified_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub columns: Vec<Column>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Column {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub data_type: Option<String>,
}

/// A metric entity (OpenMetadata 1.6 and later).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    pub name: String,
    #[serde(default)]
    pub fully_qualified_name: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metric_expression: Option<Expression>,
    /// `SUM`, `COUNT`, `AVERAGE`, …
    #[serde(default)]
    pub metric_type: Option<String>,
    /// `COUNT`, `DOLLARS`, `PERCENTAGE`, …
    #[serde(default)]
    pub unit_of_measurement: Option<String>,
    /// `DAY`, `MONTH`, …
    #[serde(default)]
    pub granularity: Option<String>,
    #[serde(default)]
    pub owners: Vec<EntityRef>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Expression {
    /// `SQL`, `Java`, `JavaScript`, `Python`, `External`.
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EntityRef {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    #[serde(rename = "tagFQN", default)]
    pub tag_fqn: Option<String>,
}

pub struct Client {
    base: String,
    token: Option<String>,
    token_env: String,
    agent: ureq::Agent,
}

impl Client {
    /// `base`: the server's URL (`https://catalog.example.com`); `token` read from `token_env`.
    pub fn new(base: &str, token: Option<String>, token_env: &str) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(60))
            .timeout_write(Duration::from_secs(60))
            .build();
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            token_env: token_env.to_string(),
            agent,
        }
    }

    /// Every table, with its columns and tags.
    pub fn tables(&self) -> Result<Vec<Table>, OpenMetadataError> {
        self.list("/api/v1/tables", "columns,tags")
    }

    /// Every metric, with its owners and tags.
    pub fn metrics(&self) -> Result<Vec<Metric>, OpenMetadataError> {
        self.list("/api/v1/metrics", "owners,tags")
    }

    fn list<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        fields: &str,
    ) -> Result<Vec<T>, OpenMetadataError> {
        let url = format!("{}{path}", self.base);
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut req = self
                .agent
                .get(&url)
                .query("limit", &PAGE_SIZE.to_string())
                .query("fields", fields)
                .set("Accept", "application/json")
                .set(
                    "User-Agent",
                    concat!("pipeline/", env!("CARGO_PKG_VERSION")),
                );
            if let Some(a) = &after {
                req = req.query("after", a);
            }
            if let Some(t) = &self.token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            let resp = req.call().map_err(|e| self.error(&url, e))?;
            let text = resp
                .into_string()
                .map_err(|e| OpenMetadataError::Unreachable {
                    url: url.clone(),
                    message: format!("reading the answer: {e}"),
                })?;
            let page: Page<T> =
                serde_json::from_str(&text).map_err(|e| OpenMetadataError::NotJson {
                    url: url.clone(),
                    detail: e.to_string(),
                })?;
            out.extend(page.data);
            let next = page
                .paging
                .unwrap_or_default()
                .after
                .filter(|a| !a.is_empty());
            // A cursor equal to the one just used would fetch the same page forever.
            if next.is_none() || next == after {
                return Ok(out);
            }
            after = next;
        }
        Err(OpenMetadataError::EndlessPaging {
            url,
            pages: MAX_PAGES,
        })
    }

    fn error(&self, url: &str, e: ureq::Error) -> OpenMetadataError {
        let url = url.to_string();
        match e {
            ureq::Error::Status(status @ (401 | 403), _) => OpenMetadataError::Unauthorized {
                url,
                status,
                token_env: self.token_env.clone(),
            },
            ureq::Error::Status(status, resp) => {
                let text = resp.into_string().unwrap_or_default();
                // OpenMetadata's error body: {"code": 404, "message": "..."}.
                let message = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(String::from))
                    .unwrap_or_else(|| text.chars().take(300).collect());
                let message = crate::redact::redact(&message).into_owned();
                if status == 404 {
                    OpenMetadataError::NotFound { url, message }
                } else {
                    OpenMetadataError::Status {
                        url,
                        status,
                        message,
                    }
                }
            }
            ureq::Error::Transport(t) => OpenMetadataError::Unreachable {
                url,
                message: match t.kind() {
                    ureq::ErrorKind::ConnectionFailed => "connection refused or failed".to_string(),
                    ureq::ErrorKind::Dns => "unknown host".to_string(),
                    _ => t
                        .message()
                        .map(String::from)
                        .unwrap_or_else(|| t.kind().to_string()),
                },
            },
        }
    }
}

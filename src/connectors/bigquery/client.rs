//! A small, blocking client for the parts of the BigQuery REST API v2 a sync needs: datasets and
//! tables (list, get), `tabledata.list`, `jobs.query` (also as a dry run), `jobs.getQueryResults`
//! and `jobs.get`, with retries and timeouts.
//!
//! Every request carries `Authorization: Bearer <token>` from [`auth`](super::auth), never a
//! credential in a URL. 429, 5xx, BigQuery's `rateLimitExceeded` 403s and network errors are retried
//! with jittered exponential backoff, honouring a `Retry-After` header; a 401 renews the token once.
//! `jobs.query` carries a `requestId`, the same on every attempt, so a retried request never starts
//! a second job. Errors carry BigQuery's own message (`error.message` and each of `error.errors[]`),
//! and a job that failed is reported with its `status.errorResult` and `status.errors[]`.
//!
//! Rows come back in pages (`pageToken`); [`Client::query`] and [`Client::table_rows`] hand each page
//! to a callback as it arrives, so a caller never holds more than one page.

// ureq's error carries the response; it is large, and only ever handled right where it occurs.
#![allow(clippy::result_large_err)]

use super::auth::{self, AuthError, ServiceAccount};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BigqueryError {
    #[error("BigQuery {what}: HTTP {status}: {message}")]
    Http {
        what: String,
        status: u16,
        message: String,
    },
    #[error("BigQuery {what}: {message}")]
    Transport { what: String, message: String },
    #[error("BigQuery job {job} failed: {message}")]
    Job { job: String, message: String },
    #[error("BigQuery job {job} did not finish within {waited:?}")]
    JobTimeout { job: String, waited: Duration },
    #[error("BigQuery {what}: unexpected response: {message}")]
    Protocol { what: String, message: String },
    #[error("BigQuery authentication: {0}")]
    Auth(#[from] AuthError),
}

/// Retry and timeout settings (tests shorten them).
#[derive(Clone, Debug)]
pub struct Patience {
    pub attempts: u32,
    pub first_pause: Duration,
    pub max_pause: Duration,
    pub request_timeout: Duration,
    pub job_timeout: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Patience {
            attempts: 6,
            first_pause: Duration::from_millis(500),
            max_pause: Duration::from_secs(30),
            request_timeout: Duration::from_secs(300),
            job_timeout: Duration::from_secs(6 * 3600),
        }
    }
}

/// A column as BigQuery describes it (`TableFieldSchema`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub fields: Vec<Field>,
    #[serde(default)]
    pub description: Option<String>,
    /// Parameterized NUMERIC / BIGNUMERIC (`NUMERIC(10, 2)`), as strings of digits.
    #[serde(default)]
    pub precision: Option<String>,
    #[serde(default)]
    pub scale: Option<String>,
}

impl Field {
    pub fn repeated(&self) -> bool {
        self.mode
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case("REPEATED"))
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Schema {
    #[serde(default)]
    pub fields: Vec<Field>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct TableRef {
    #[serde(rename = "projectId")]
    pub project_id: String,
    #[serde(rename = "datasetId")]
    pub dataset_id: String,
    #[serde(rename = "tableId")]
    pub table_id: String,
}

/// A table as `tables.get` describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct TableInfo {
    #[serde(rename = "tableReference")]
    pub reference: TableRef,
    /// `TABLE`, `VIEW`, `MATERIALIZED_VIEW`, `EXTERNAL`, `SNAPSHOT`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub schema: Schema,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, rename = "numRows")]
    pub num_rows: Option<String>,
    #[serde(default, rename = "numBytes")]
    pub num_bytes: Option<String>,
    #[serde(default, rename = "lastModifiedTime")]
    pub last_modified_time: Option<String>,
    /// Present while rows inserted by streaming are not yet in managed storage (they are readable,
    /// but `lastModifiedTime` does not account for them).
    #[serde(default, rename = "streamingBuffer")]
    pub streaming_buffer: Option<Value>,
    #[serde(default, rename = "tableConstraints")]
    pub constraints: Option<Value>,
    #[serde(default)]
    pub location: Option<String>,
}

impl TableInfo {
    /// Whether `tabledata.list` can read it (stored rows; not a view or an external table).
    pub fn is_stored(&self) -> bool {
        matches!(
            self.kind.as_deref().unwrap_or("TABLE"),
            "TABLE" | "SNAPSHOT" | "CLONE"
        )
    }

    /// A view (logical or materialized): read through a query.
    pub fn is_view(&self) -> bool {
        matches!(
            self.kind.as_deref(),
            Some("VIEW") | Some("MATERIALIZED_VIEW")
        )
    }

    /// The primary key's columns (`tableConstraints.primaryKey.columns`; BigQuery does not
    /// enforce it, but it says which columns identify a row).
    pub fn primary_key(&self) -> Vec<String> {
        self.constraints
            .as_ref()
            .and_then(|c| c.pointer("/primaryKey/columns"))
            .and_then(|c| c.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One page of rows (`f`/`v` encoded), as both `tabledata.list` and the query methods give them.
#[derive(Debug, Default, Deserialize)]
pub struct Page {
    #[serde(default)]
    pub rows: Vec<Value>,
    #[serde(default, rename = "pageToken")]
    pub page_token: Option<String>,
    #[serde(default, rename = "totalRows")]
    pub total_rows: Option<String>,
}

/// What a dry run says about a query.
#[derive(Clone, Debug)]
pub struct DryRun {
    pub bytes_processed: u64,
    pub schema: Schema,
}

/// A query to run (`QueryRequest`).
#[derive(Clone, Debug, Default)]
pub struct QueryRequest {
    pub sql: String,
    /// `maximumBytesBilled`: BigQuery fails the job rather than bill more.
    pub maximum_bytes_billed: Option<u64>,
    /// `defaultDataset` (project, dataset) for unqualified table names.
    pub default_dataset: Option<(String, String)>,
    /// Rows per page (`maxResults`); BigQuery's own page size (about 10 MB) when unset.
    pub page_size: Option<u32>,
}

pub struct Client {
    /// `<endpoint>/bigquery/v2`
    base: String,
    account: ServiceAccount,
    agent: ureq::Agent,
    patience: Patience,
    /// Where jobs run (`location`), when the source sets it.
    location: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

/// The result of one attempt at a request.
enum Attempt {
    Done(ureq::Response),
    /// Worth retrying, after `after` if the server said so; `why` for the final error.
    Retry {
        after: Option<Duration>,
        why: BigqueryError,
    },
    Fail(BigqueryError),
}

impl Client {
    /// `endpoint`: `https://bigquery.googleapis.com` or an emulator's `http://127.0.0.1:PORT`.
    pub fn new(
        endpoint: &str,
        account: ServiceAccount,
        patience: Patience,
        location: Option<String>,
    ) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .timeout(patience.request_timeout)
            .build();
        Client {
            base: format!("{}/bigquery/v2", endpoint.trim_end_matches('/')),
            account,
            agent,
            patience,
            location,
        }
    }

    pub fn account(&self) -> &ServiceAccount {
        &self.account
    }

    /// Sends a request (built afresh for each attempt, with the current token) until it succeeds,
    /// fails for good, or the attempts run out.
    fn send(
        &self,
        what: &str,
        request: impl Fn(&ureq::Agent, &str) -> Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, BigqueryError> {
        let mut pause = self.patience.first_pause;
        let mut renewed = false;
        let mut attempt = 1;
        loop {
            let outcome = match self.account.access_token(&self.agent, auth::SCOPE) {
                Ok(token) => self.attempt(what, &request, &token, &mut renewed),
                Err(e) if auth::is_transient(&e) => Attempt::Retry {
                    after: None,
                    why: e.into(),
                },
                Err(e) => Attempt::Fail(e.into()),
            };
            match outcome {
                Attempt::Done(r) => return Ok(r),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { after, why } => {
                    if attempt >= self.patience.attempts {
                        return Err(why);
                    }
                    let wait = after
                        .unwrap_or_else(|| jitter(pause))
                        .min(self.patience.max_pause);
                    tracing::debug!(what, attempt, ?wait, error = %why, "bigquery: retrying");
                    std::thread::sleep(wait);
                    pause = (pause * 2).min(self.patience.max_pause);
                    attempt += 1;
                }
            }
        }
    }

    fn attempt(
        &self,
        what: &str,
        request: &impl Fn(&ureq::Agent, &str) -> Result<ureq::Response, ureq::Error>,
        token: &str,
        renewed: &mut bool,
    ) -> Attempt {
        match request(&self.agent, &format!("Bearer {token}")) {
            Ok(r) => Attempt::Done(r),
            Err(ureq::Error::Status(status, r)) => {
                let after = retry_after(&r);
                let body = r.into_string().unwrap_or_default();
                let (message, reasons) = error_message(&body);
                let why = BigqueryError::Http {
                    what: what.to_string(),
                    status,
                    message: message.unwrap_or_else(|| status_text(status).into()),
                };
                let rate_limited = status == 403
                    && reasons
                        .iter()
                        .any(|r| r == "rateLimitExceeded" || r == "userRateLimitExceeded");
                if status == 401 && !*renewed {
                    // A token the API no longer takes: ask for a new one, once.
                    *renewed = true;
                    self.account.forget_token(auth::SCOPE);
                    Attempt::Retry {
                        after: Some(Duration::ZERO),
                        why,
                    }
                } else if status == 429 || status >= 500 || rate_limited {
                    Attempt::Retry { after, why }
                } else {
                    Attempt::Fail(why)
                }
            }
            Err(ureq::Error::Transport(t)) => Attempt::Retry {
                after: None,
                why: BigqueryError::Transport {
                    what: what.to_string(),
                    message: transport_message(&t),
                },
            },
        }
    }

    fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        url: &str,
        query: &[(&str, String)],
    ) -> Result<T, BigqueryError> {
        let r = self.send(what, |agent, bearer| {
            query
                .iter()
                .fold(agent.get(url), |r, (k, v)| r.query(k, v))
                .set("Authorization", bearer)
                .call()
        })?;
        read_json(what, r)
    }

    fn post_json<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        url: &str,
        body: &Value,
    ) -> Result<T, BigqueryError> {
        let r = self.send(what, |agent, bearer| {
            agent
                .post(url)
                .set("Authorization", bearer)
                .send_json(body.clone())
        })?;
        read_json(what, r)
    }

    fn project_url(&self, project: &str) -> String {
        format!("{}/projects/{}", self.base, enc(project))
    }

    /// `tables.get`.
    pub fn table(
        &self,
        project: &str,
        dataset: &str,
        table: &str,
    ) -> Result<TableInfo, BigqueryError> {
        let url = format!(
            "{}/datasets/{}/tables/{}",
            self.project_url(project),
            enc(dataset),
            enc(table)
        );
        self.get_json(&format!("table {project}.{dataset}.{table}"), &url, &[])
    }

    /// `datasets.list`: every dataset id of `project`.
    pub fn datasets(&self, project: &str) -> Result<Vec<String>, BigqueryError> {
        let url = format!("{}/datasets", self.project_url(project));
        let mut out = Vec::new();
        self.pages("datasets", &url, &[], |page: &Value| {
            for d in page["datasets"].as_array().into_iter().flatten() {
                if let Some(id) = d
                    .pointer("/datasetReference/datasetId")
                    .and_then(|v| v.as_str())
                {
                    out.push(id.to_string());
                }
            }
        })?;
        Ok(out)
    }

    /// `tables.list`: every table id of a dataset.
    pub fn tables(&self, project: &str, dataset: &str) -> Result<Vec<String>, BigqueryError> {
        let url = format!(
            "{}/datasets/{}/tables",
            self.project_url(project),
            enc(dataset)
        );
        let mut out = Vec::new();
        self.pages(
            &format!("tables of {dataset}"),
            &url,
            &[],
            |page: &Value| {
                for t in page["tables"].as_array().into_iter().flatten() {
                    if let Some(id) = t
                        .pointer("/tableReference/tableId")
                        .and_then(|v| v.as_str())
                    {
                        out.push(id.to_string());
                    }
                }
            },
        )?;
        Ok(out)
    }

    /// Follows `nextPageToken` (list methods) through every page.
    fn pages(
        &self,
        what: &str,
        url: &str,
        query: &[(&str, String)],
        mut each: impl FnMut(&Value),
    ) -> Result<(), BigqueryError> {
        let mut token: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            if let Some(t) = &token {
                q.push(("pageToken", t.clone()));
            }
            let page: Value = self.get_json(what, url, &q)?;
            each(&page);
            token = page["nextPageToken"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(String::from);
            if token.is_none() {
                return Ok(());
            }
        }
    }

    /// `tabledata.list`: the stored rows of a table, page by page, in the table's column order.
    pub fn table_rows(
        &self,
        project: &str,
        dataset: &str,
        table: &str,
        page_size: Option<u32>,
        mut each: impl FnMut(Page) -> Result<(), BigqueryError>,
    ) -> Result<(), BigqueryError> {
        let url = format!(
            "{}/datasets/{}/tables/{}/data",
            self.project_url(project),
            enc(dataset),
            enc(table)
        );
        let what = format!("rows of {project}.{dataset}.{table}");
        let mut token: Option<String> = None;
        let (mut empty_pages, mut arrived) = (0, 0u64);
        loop {
            let mut q = vec![("formatOptions.useInt64Timestamp", "true".to_string())];
            if let Some(n) = page_size {
                q.push(("maxResults", n.to_string()));
            }
            if let Some(t) = &token {
                q.push(("pageToken", t.clone()));
            }
            let page: Page = self.get_json(&what, &url, &q)?;
            token = page.page_token.clone().filter(|t| !t.is_empty());
            empty_pages = if page.rows.is_empty() {
                empty_pages + 1
            } else {
                0
            };
            arrived += page.rows.len() as u64;
            let total = page
                .total_rows
                .as_deref()
                .and_then(|t| t.parse::<u64>().ok());
            each(page)?;
            if token.is_none() {
                // A table written to while it is read may legitimately count other rows than
                // arrived (unlike a job's fixed result): said, not refused.
                if let Some(total) = total.filter(|t| *t != arrived) {
                    tracing::warn!(
                        table = %what,
                        "bigquery: the table counted {total} rows but {arrived} arrived (was it \
                         written to during the read?)"
                    );
                }
                return Ok(());
            }
            endless(&what, empty_pages)?;
        }
    }

    fn query_body(&self, q: &QueryRequest, dry_run: bool, request_id: &str) -> Value {
        let mut body = serde_json::json!({
            "query": q.sql,
            "useLegacySql": false,
            "formatOptions": {"useInt64Timestamp": true},
        });
        if dry_run {
            body["dryRun"] = true.into();
        } else {
            body["requestId"] = request_id.into();
            body["timeoutMs"] = 10_000.into();
            if let Some(n) = q.page_size {
                body["maxResults"] = n.into();
            }
            if let Some(max) = q.maximum_bytes_billed {
                // int64 fields travel as strings in BigQuery's JSON.
                body["maximumBytesBilled"] = max.to_string().into();
            }
        }
        if let Some((project, dataset)) = &q.default_dataset {
            body["defaultDataset"] =
                serde_json::json!({"projectId": project, "datasetId": dataset});
        }
        if let Some(location) = &self.location {
            body["location"] = location.clone().into();
        }
        body
    }

    /// `jobs.query` with `dryRun`: the bytes the query would process (and so bill) and its schema.
    /// Nothing runs.
    pub fn dry_run(&self, project: &str, q: &QueryRequest) -> Result<DryRun, BigqueryError> {
        let url = format!("{}/queries", self.project_url(project));
        let r: Value = self.post_json("dry run", &url, &self.query_body(q, true, ""))?;
        if let Some(message) = response_errors(&r) {
            return Err(BigqueryError::Job {
                job: "(dry run)".into(),
                message,
            });
        }
        let bytes = r["totalBytesProcessed"]
            .as_str()
            .map(|s| s.parse::<u64>())
            .or_else(|| r["totalBytesProcessed"].as_u64().map(Ok))
            .transpose()
            .map_err(|e| BigqueryError::Protocol {
                what: "dry run".into(),
                message: format!("totalBytesProcessed: {e}"),
            })?
            .unwrap_or(0);
        let schema = serde_json::from_value(r["schema"].clone()).unwrap_or_default();
        Ok(DryRun {
            bytes_processed: bytes,
            schema,
        })
    }

    /// Runs a query (`jobs.query`, then `jobs.getQueryResults` until it is done and through every
    /// page). `schema` is called once with the result's schema before the first page; `each` with
    /// each page. A job that fails is an error with BigQuery's messages.
    pub fn query(
        &self,
        project: &str,
        q: &QueryRequest,
        schema: impl FnOnce(Schema) -> Result<(), BigqueryError>,
        mut each: impl FnMut(Page) -> Result<(), BigqueryError>,
    ) -> Result<(), BigqueryError> {
        let url = format!("{}/queries", self.project_url(project));
        let request_id = request_id();
        let first: Value =
            self.post_json("query", &url, &self.query_body(q, false, &request_id))?;
        let job = first
            .pointer("/jobReference/jobId")
            .and_then(|v| v.as_str())
            .ok_or_else(|| BigqueryError::Protocol {
                what: "query".into(),
                message: "the answer has no jobReference.jobId".into(),
            })?
            .to_string();
        let location = first
            .pointer("/jobReference/location")
            .and_then(|v| v.as_str())
            .map(String::from)
            .or_else(|| self.location.clone());
        if response_errors(&first).is_some() {
            // Errors in a query answer may be warnings; the job's status says whether it failed.
            self.check_job(project, &job, location.as_deref())?;
        }
        let started = std::time::Instant::now();
        let results_url = format!("{}/queries/{}", self.project_url(project), enc(&job));
        let mut params = vec![("formatOptions.useInt64Timestamp", "true".to_string())];
        if let Some(l) = &location {
            params.push(("location", l.clone()));
        }
        if let Some(n) = q.page_size {
            params.push(("maxResults", n.to_string()));
        }
        let mut page = first;
        // Wait for the job.
        while page["jobComplete"].as_bool() != Some(true) {
            if started.elapsed() > self.patience.job_timeout {
                return Err(BigqueryError::JobTimeout {
                    job,
                    waited: started.elapsed(),
                });
            }
            let mut p = params.clone();
            p.push(("timeoutMs", "10000".into()));
            page = self.get_json(&format!("results of job {job}"), &results_url, &p)?;
        }
        let fields: Schema = serde_json::from_value(page["schema"].clone()).unwrap_or_default();
        if fields.fields.is_empty() {
            // A finished job without a schema failed, or ran no SELECT.
            self.check_job(project, &job, location.as_deref())?;
            return Err(BigqueryError::Protocol {
                what: format!("job {job}"),
                message: "the query returned no columns (is it a SELECT?)".into(),
            });
        }
        schema(fields)?;
        let what = format!("results of job {job}");
        let (mut arrived, mut empty_pages) = (0u64, 0);
        loop {
            let current: Page =
                serde_json::from_value(page).map_err(|e| BigqueryError::Protocol {
                    what: what.clone(),
                    message: e.to_string(),
                })?;
            let token = current.page_token.clone().filter(|t| !t.is_empty());
            let total = current
                .total_rows
                .as_deref()
                .and_then(|t| t.parse::<u64>().ok());
            arrived += current.rows.len() as u64;
            empty_pages = if current.rows.is_empty() {
                empty_pages + 1
            } else {
                0
            };
            each(current)?;
            let Some(token) = token else {
                // A job's result is fixed: every row it counted must have arrived.
                return match total {
                    Some(total) if total != arrived => Err(BigqueryError::Protocol {
                        what,
                        message: format!("{total} rows in the result, but {arrived} arrived"),
                    }),
                    _ => Ok(()),
                };
            };
            endless(&what, empty_pages)?;
            let mut p = params.clone();
            p.push(("pageToken", token));
            page = self.get_json(&format!("results of job {job}"), &results_url, &p)?;
        }
    }

    /// `jobs.get`: fails with the job's error when it has one.
    fn check_job(
        &self,
        project: &str,
        job: &str,
        location: Option<&str>,
    ) -> Result<(), BigqueryError> {
        let url = format!("{}/jobs/{}", self.project_url(project), enc(job));
        let mut q = Vec::new();
        if let Some(l) = location {
            q.push(("location", l.to_string()));
        }
        let detail: Value = self.get_json(&format!("job {job}"), &url, &q)?;
        let status = &detail["status"];
        if let Some(error) = status.get("errorResult").filter(|e| !e.is_null()) {
            let mut messages = vec![error_entry(error)];
            for e in status["errors"].as_array().into_iter().flatten() {
                let m = error_entry(e);
                if !messages.contains(&m) {
                    messages.push(m);
                }
            }
            return Err(BigqueryError::Job {
                job: job.to_string(),
                message: crate::redact::redact(&messages.join("; ")).into_owned(),
            });
        }
        Ok(())
    }
}

/// A server that keeps handing out page tokens with no rows would be read forever: a few empty
/// pages in a row can happen, many cannot.
fn endless(what: &str, empty_pages: u32) -> Result<(), BigqueryError> {
    if empty_pages >= 20 {
        return Err(BigqueryError::Protocol {
            what: what.to_string(),
            message: format!("{empty_pages} empty pages in a row, each with a next page token"),
        });
    }
    Ok(())
}

/// `message (reason)` of one of BigQuery's `ErrorProto`s.
fn error_entry(e: &Value) -> String {
    let message = e["message"].as_str().unwrap_or("(no message)");
    match e["reason"].as_str() {
        Some(reason) => format!("{message} ({reason})"),
        None => message.to_string(),
    }
}

/// The `errors[]` of a query answer, joined; `None` when there are none.
fn response_errors(r: &Value) -> Option<String> {
    let list = r["errors"].as_array().filter(|a| !a.is_empty())?;
    Some(list.iter().map(error_entry).collect::<Vec<_>>().join("; "))
}

fn read_json<T: for<'de> Deserialize<'de>>(
    what: &str,
    r: ureq::Response,
) -> Result<T, BigqueryError> {
    let text = r.into_string().map_err(|e| BigqueryError::Transport {
        what: what.to_string(),
        message: format!("reading the answer: {e}"),
    })?;
    serde_json::from_str(&text).map_err(|e| BigqueryError::Protocol {
        what: what.to_string(),
        message: e.to_string(),
    })
}

/// BigQuery's error JSON (`{"error": {"message", "errors": [{"reason", "message"}]}}`): the
/// message, with each distinct `errors[].message` after it, and the reasons. Never the rest of the
/// body.
pub fn error_message(body: &str) -> (Option<String>, Vec<String>) {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return (None, Vec::new());
    };
    let error = &v["error"];
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = error["message"]
        .as_str()
        .or(v["error_description"].as_str())
    {
        parts.push(m.to_string());
    } else if let Some(m) = error.as_str() {
        parts.push(m.to_string());
    }
    let mut reasons = Vec::new();
    for e in error["errors"].as_array().into_iter().flatten() {
        if let Some(r) = e["reason"].as_str() {
            reasons.push(r.to_string());
        }
        if let Some(m) = e["message"].as_str() {
            if !parts.iter().any(|p| p == m) {
                parts.push(m.to_string());
            }
        }
    }
    let message =
        (!parts.is_empty()).then(|| crate::redact::redact(&parts.join("; ")).into_owned());
    (message, reasons)
}

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "error",
    }
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(r: &ureq::Response) -> Option<Duration> {
    let value = r.header("Retry-After")?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    wait.to_std().ok().or(Some(Duration::ZERO))
}

/// A transport failure without the URL (ours carry no credential, but say only what failed).
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

/// A unique `requestId` for one `jobs.query` call (the same on its retries).
fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos());
    format!(
        "pipeline-{}-{nanos:x}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Path segment encoding (letters, digits, `-`, `_`, `.` pass).
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigquery_error_bodies_give_the_message_and_each_distinct_error() {
        let body = r#"{"error": {"code": 400, "message": "Syntax error: Unexpected keyword at [1:8]",
            "errors": [{"message": "Syntax error: Unexpected keyword at [1:8]", "domain": "global",
                        "reason": "invalidQuery", "location": "q"},
                       {"message": "and another", "reason": "invalid"}],
            "status": "INVALID_ARGUMENT"}}"#;
        let (message, reasons) = error_message(body);
        assert_eq!(
            message.as_deref(),
            Some("Syntax error: Unexpected keyword at [1:8]; and another")
        );
        assert_eq!(reasons, ["invalidQuery", "invalid"]);
        assert_eq!(error_message("<html>busy</html>"), (None, Vec::new()));
    }

    #[test]
    fn query_answers_with_errors_are_summarised_with_their_reasons() {
        let r = serde_json::json!({"errors": [{"reason": "notFound", "message": "Not found: Table x"}]});
        assert_eq!(
            response_errors(&r).as_deref(),
            Some("Not found: Table x (notFound)")
        );
        assert_eq!(response_errors(&serde_json::json!({"errors": []})), None);
    }
}

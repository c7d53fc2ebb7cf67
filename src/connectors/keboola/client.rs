//! A small, blocking client for the parts of the Keboola Storage API v2 a sync needs: buckets, tables
//! (with columns), the asynchronous table export (`export-async` → poll the job → file detail →
//! manifest → slices), with timeouts and retries.
//!
//! Every request carries the token in the `X-StorageApi-Token` header, never in a URL, and no error or
//! log line contains it. 5xx, 429 and network errors are retried with jittered exponential backoff;
//! a `Retry-After` header is honoured. Slices are streamed to files, never held in memory, and a
//! download that ends early (a cut connection, a short body) is retried, then reported.

// ureq's error carries the response; it is large, and only ever handled right where it occurs.
#![allow(clippy::result_large_err)]

use serde::Deserialize;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum KeboolaError {
    #[error("Keboola {what}: HTTP {status}: {message}")]
    Http {
        what: String,
        status: u16,
        message: String,
    },
    #[error("Keboola {what}: {message}")]
    Transport { what: String, message: String },
    #[error("Keboola export job {job} failed: {message}")]
    Job { job: String, message: String },
    #[error("Keboola export job {job} did not finish within {waited:?}")]
    JobTimeout { job: String, waited: Duration },
    #[error("Keboola {what}: unexpected response: {message}")]
    Protocol { what: String, message: String },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
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
            job_timeout: Duration::from_secs(3 * 3600),
        }
    }
}

pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
    patience: Patience,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never printed.
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

/// A table as the Storage API describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct TableInfo {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub columns: Vec<String>,
    #[serde(default, rename = "primaryKey")]
    pub primary_key: Vec<String>,
    #[serde(default, rename = "rowsCount")]
    pub rows_count: Option<i64>,
    #[serde(default, rename = "dataSizeBytes")]
    pub data_size_bytes: Option<i64>,
    #[serde(default, rename = "lastChangeDate")]
    pub last_change_date: Option<String>,
    #[serde(default)]
    pub metadata: Vec<Metadata>,
    #[serde(
        default,
        rename = "columnMetadata",
        deserialize_with = "map_or_empty_list"
    )]
    pub column_metadata: std::collections::BTreeMap<String, Vec<Metadata>>,
    #[serde(default)]
    pub bucket: Option<BucketRef>,
}

/// The API (PHP underneath) sends an empty object as `[]`: accept both.
fn map_or_empty_list<'de, D>(
    d: D,
) -> Result<std::collections::BTreeMap<String, Vec<Metadata>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Map(std::collections::BTreeMap<String, Vec<Metadata>>),
        List(serde::de::IgnoredAny),
    }
    Ok(match Either::deserialize(d)? {
        Either::Map(m) => m,
        Either::List(_) => Default::default(),
    })
}

#[derive(Clone, Debug, Deserialize)]
pub struct BucketRef {
    pub id: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Metadata {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
}

fn meta<'a>(list: &'a [Metadata], key: &str) -> Option<&'a str> {
    list.iter()
        .rev()
        .find(|m| m.key == key)
        .and_then(|m| m.value.as_deref())
}

impl TableInfo {
    pub fn description(&self) -> Option<&str> {
        meta(&self.metadata, "KBC.description")
    }

    pub fn column_description(&self, column: &str) -> Option<&str> {
        self.column_metadata
            .get(column)
            .and_then(|m| meta(m, "KBC.description"))
    }

    /// The column's base type from Keboola's metadata (STRING, INTEGER, NUMERIC, FLOAT, BOOLEAN,
    /// DATE, TIMESTAMP), when known.
    pub fn base_type(&self, column: &str) -> Option<&str> {
        self.column_metadata
            .get(column)
            .and_then(|m| meta(m, "KBC.datatype.basetype"))
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Bucket {
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// An exported file.
#[derive(Clone, Debug, Deserialize)]
pub struct FileInfo {
    pub id: Value,
    #[serde(default, rename = "isSliced")]
    pub is_sliced: bool,
    pub url: String,
}

/// What an export produced, and when it started (the next increment's `changedSince`).
#[derive(Clone, Debug)]
pub struct Export {
    pub file: FileInfo,
    pub started_at: i64,
}

impl Client {
    pub fn new(base: &str, token: String, patience: Patience) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .timeout(patience.request_timeout)
            .build();
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
            patience,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request (built fresh for each attempt) and returns the response once it is not a
    /// retryable failure.
    fn send(
        &self,
        what: &str,
        mut request: impl FnMut() -> Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, KeboolaError> {
        let mut pause = self.patience.first_pause;
        for attempt in 1..=self.patience.attempts {
            let last = attempt == self.patience.attempts;
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
                        return Err(KeboolaError::Http {
                            what: what.to_string(),
                            status,
                            message,
                        });
                    }
                    let wait = retry_after.unwrap_or_else(|| jitter(pause));
                    tracing::warn!(status, ?wait, attempt, "Keboola {what}: retrying");
                    // A server asking for more than five minutes is not worth holding a run for.
                    std::thread::sleep(wait.min(Duration::from_secs(300)));
                }
                Err(ureq::Error::Transport(t)) => {
                    if last {
                        return Err(KeboolaError::Transport {
                            what: what.to_string(),
                            message: t.to_string(),
                        });
                    }
                    tracing::warn!(error = %t, attempt, "Keboola {what}: retrying");
                    std::thread::sleep(jitter(pause));
                }
            }
            pause = (pause * 2).min(self.patience.max_pause);
        }
        unreachable!("the last attempt returns")
    }

    fn get_json(&self, what: &str, path: &str) -> Result<Value, KeboolaError> {
        let url = self.url(path);
        let resp = self.send(what, || {
            self.agent
                .get(&url)
                .set("X-StorageApi-Token", &self.token)
                .call()
        })?;
        resp.into_json().map_err(|e| KeboolaError::Protocol {
            what: what.to_string(),
            message: e.to_string(),
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T, KeboolaError> {
        serde_json::from_value(v).map_err(|e| KeboolaError::Protocol {
            what: what.to_string(),
            message: e.to_string(),
        })
    }

    pub fn buckets(&self) -> Result<Vec<Bucket>, KeboolaError> {
        Self::decode("buckets", self.get_json("buckets", "/v2/storage/buckets")?)
    }

    /// Tables with their columns, of one bucket or of the whole project.
    pub fn tables(&self, bucket: Option<&str>) -> Result<Vec<TableInfo>, KeboolaError> {
        let path = match bucket {
            Some(b) => format!(
                "/v2/storage/buckets/{}/tables?include=columns,metadata,columnMetadata",
                enc(b)
            ),
            None => "/v2/storage/tables?include=columns,metadata,columnMetadata".to_string(),
        };
        Self::decode("tables", self.get_json("tables", &path)?)
    }

    pub fn table(&self, id: &str) -> Result<TableInfo, KeboolaError> {
        let what = format!("table {id}");
        Self::decode(
            &what,
            self.get_json(&what, &format!("/v2/storage/tables/{}", enc(id)))?,
        )
    }

    /// Exports `id` (rows changed after `changed_since`, a unix timestamp, when given) and waits for
    /// the job.
    pub fn export(&self, id: &str, changed_since: Option<&str>) -> Result<Export, KeboolaError> {
        let what = format!("export of {id}");
        let started_at = chrono::Utc::now().timestamp();
        let url = self.url(&format!("/v2/storage/tables/{}/export-async", enc(id)));
        let mut form: Vec<(&str, &str)> = vec![("gzip", "1")];
        if let Some(since) = changed_since {
            form.push(("changedSince", since));
        }
        let resp = self.send(&what, || {
            self.agent
                .post(&url)
                .set("X-StorageApi-Token", &self.token)
                .send_form(&form)
        })?;
        let job: Value = resp.into_json().map_err(|e| KeboolaError::Protocol {
            what: what.clone(),
            message: e.to_string(),
        })?;
        let job_id = job
            .get("id")
            .map(|v| v.to_string().trim_matches('"').to_string())
            .ok_or_else(|| KeboolaError::Protocol {
                what: what.clone(),
                message: "the export response has no job id".into(),
            })?;
        let file_id = self.wait(&job_id)?;
        let file = self.file(&file_id)?;
        Ok(Export { file, started_at })
    }

    /// Polls a job with backoff until it succeeds (its file id) or fails (Keboola's message).
    fn wait(&self, job: &str) -> Result<String, KeboolaError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(200);
        loop {
            let v = self.get_json(
                &format!("job {job}"),
                &format!("/v2/storage/jobs/{}", enc(job)),
            )?;
            match v.get("status").and_then(|s| s.as_str()) {
                Some("success") => {
                    return v
                        .pointer("/results/file/id")
                        .map(|id| id.to_string().trim_matches('"').to_string())
                        .ok_or_else(|| KeboolaError::Protocol {
                            what: format!("job {job}"),
                            message: "a successful export job without results.file.id".into(),
                        })
                }
                Some("error") | Some("cancelled") | Some("terminated") => {
                    let message = v
                        .pointer("/error/message")
                        .and_then(|m| m.as_str())
                        .unwrap_or("no message")
                        .to_string();
                    return Err(KeboolaError::Job {
                        job: job.to_string(),
                        message,
                    });
                }
                _ => {}
            }
            if started.elapsed() > self.patience.job_timeout {
                return Err(KeboolaError::JobTimeout {
                    job: job.to_string(),
                    waited: started.elapsed(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 3 / 2).min(Duration::from_secs(5));
        }
    }

    fn file(&self, id: &str) -> Result<FileInfo, KeboolaError> {
        let what = format!("file {id}");
        Self::decode(
            &what,
            self.get_json(
                &what,
                &format!("/v2/storage/files/{}?federationToken=1", enc(id)),
            )?,
        )
    }

    /// Downloads the export into `dir`: each slice of a sliced file, or the file itself. Returns the
    /// files written (gzip'd CSV without a header).
    pub fn download(&self, file: &FileInfo, dir: &Path) -> Result<Vec<PathBuf>, KeboolaError> {
        std::fs::create_dir_all(dir).map_err(|e| KeboolaError::Io(dir.to_path_buf(), e))?;
        let urls: Vec<String> = if file.is_sliced {
            let manifest: Value = self
                .send("export manifest", || self.agent.get(&file.url).call())?
                .into_json()
                .map_err(|e| KeboolaError::Protocol {
                    what: "export manifest".into(),
                    message: e.to_string(),
                })?;
            manifest
                .get("entries")
                .and_then(|e| e.as_array())
                .ok_or_else(|| KeboolaError::Protocol {
                    what: "export manifest".into(),
                    message: "no `entries` list".into(),
                })?
                .iter()
                .filter_map(|e| e.get("url").and_then(|u| u.as_str()).map(String::from))
                .collect()
        } else {
            vec![file.url.clone()]
        };
        let mut out = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(KeboolaError::Protocol {
                    what: "export download".into(),
                    message: format!(
                        "slice {i} is at a {} location; only HTTP(S) downloads are supported so far",
                        url.split(':').next().unwrap_or("non-HTTP")
                    ),
                });
            }
            let path = dir.join(format!("slice_{i:05}.csv.gz"));
            self.fetch_to(url, &path, i)?;
            out.push(path);
        }
        Ok(out)
    }

    /// Streams `url` into `path`; a body shorter than announced, or cut off, is retried.
    fn fetch_to(&self, url: &str, path: &Path, i: usize) -> Result<(), KeboolaError> {
        let what = format!("download of slice {i}");
        let mut pause = self.patience.first_pause;
        for attempt in 1..=self.patience.attempts {
            let resp = self.send(&what, || self.agent.get(url).call())?;
            let expected = resp
                .header("Content-Length")
                .and_then(|v| v.parse::<u64>().ok());
            match copy_body(resp, path) {
                Ok(n) if expected.is_none_or(|e| e == n) => return Ok(()),
                Ok(n) => tracing::warn!(attempt, got = n, ?expected, "{what}: short body"),
                Err(e) => tracing::warn!(attempt, error = %e, "{what}: interrupted"),
            }
            if attempt == self.patience.attempts {
                break;
            }
            std::thread::sleep(jitter(pause));
            pause = (pause * 2).min(self.patience.max_pause);
        }
        let _ = std::fs::remove_file(path);
        Err(KeboolaError::Transport {
            what,
            message: format!(
                "the download was truncated {} times; nothing was published",
                self.patience.attempts
            ),
        })
    }
}

fn copy_body(resp: ureq::Response, path: &Path) -> std::io::Result<u64> {
    let mut reader = resp.into_reader();
    let mut file = std::fs::File::create(path)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])?;
        total += n as u64;
    }
    file.flush()?;
    Ok(total)
}

/// The error message of an API error response (`{"error": "...", "code": "..."}`), else its status
/// text. Never includes request headers.
fn error_message(resp: ureq::Response) -> String {
    let status_text = resp.status_text().to_string();
    let body = resp.into_string().unwrap_or_default();
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .and_then(|e| e.as_str().map(String::from))
                .or_else(|| {
                    v.pointer("/error/message")
                        .and_then(|m| m.as_str())
                        .map(String::from)
                })
        })
        .unwrap_or(status_text)
}

/// A pause of 50–100 % of `d`, so that many clients retrying do not retry in step.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let frac = 0.5 + (nanos % 1000) as f64 / 2000.0;
    d.mul_f64(frac)
}

/// Path segment encoding for ids such as `in.c-shop.orders` (letters, digits, `.`, `-`, `_` pass).
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

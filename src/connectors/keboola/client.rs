//! A small, blocking client for the parts of the Keboola Storage API v2 a sync needs: token
//! verification (the token's project), buckets, tables (with columns), the asynchronous table
//! export (`export-async` with row filters → poll the job → file detail → manifest → slices), with
//! timeouts and retries.
//!
//! Every request carries the token in the `X-StorageApi-Token` header, never in a URL, and no error or
//! log line contains it. 5xx, 429 and network errors are retried with jittered exponential backoff;
//! a `Retry-After` header is honoured. Slices are streamed to files, never held in memory, and a
//! download that ends early (a cut connection, a short body) or is not one complete gzip stream
//! (checked as it arrives) is retried, then reported.
//!
//! Slices live in the stack's file storage, never reached with the Storage token: HTTP(S) URLs are
//! fetched as they are (pre-signed), `s3://bucket/key` with a GET signed by [`sigv4`] with the
//! temporary AWS credentials of the file detail, `gs://bucket/object` through Google's JSON API with
//! the detail's OAuth access token. Those credentials are kept in [`Secret`]s and registered with
//! [`crate::redact`] as they arrive: no `Debug`, error or log line shows them; errors name the
//! bucket and key only, and transport errors leave out the URL (a pre-signed one is a credential).
//!
//! [`sigv4`]: super::sigv4

// ureq's error carries the response; it is large, and only ever handled right where it occurs.
#![allow(clippy::result_large_err)]

use super::sigv4;
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
    storage: StorageEndpoints,
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

/// An exported file, as `GET /v2/storage/files/{id}?federationToken=1` describes it: `url` is the
/// file (or, when sliced, its manifest) behind a pre-signed URL; the cloud fields are those of the
/// stack's file storage, with temporary credentials for reading it directly.
#[derive(Clone, Debug, Deserialize)]
pub struct FileInfo {
    pub id: Value,
    #[serde(default, rename = "isSliced")]
    pub is_sliced: bool,
    pub url: String,
    /// `aws`, `gcp` or `azure`.
    #[serde(default)]
    pub provider: Option<String>,
    /// The S3 bucket's region (AWS stacks).
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default, rename = "s3Path")]
    pub s3_path: Option<ObjectPath>,
    /// Temporary AWS credentials (AWS stacks; valid 12 hours).
    #[serde(default)]
    pub credentials: Option<AwsCredentials>,
    #[serde(default, rename = "gcsPath")]
    pub gcs_path: Option<ObjectPath>,
    /// An OAuth access token for Google Cloud Storage (GCP stacks; valid about an hour).
    #[serde(default, rename = "gcsCredentials")]
    pub gcs_credentials: Option<GcsCredentials>,
    /// When the detail was read: a GCS token's `expires_in` counts from then.
    #[serde(skip, default = "chrono::Utc::now")]
    pub fetched_at: chrono::DateTime<chrono::Utc>,
}

/// A bucket and an object key in it.
#[derive(Clone, Debug, Deserialize)]
pub struct ObjectPath {
    pub bucket: String,
    pub key: String,
}

/// A credential from a file detail: read like a string, shown as `<redacted>` by `Debug`, and
/// reachable only through [`Secret::expose`], so it cannot slip into a log line or an error.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The `credentials` of an AWS stack's file detail (STS federation token).
#[derive(Clone, Debug, Deserialize)]
pub struct AwsCredentials {
    #[serde(rename = "AccessKeyId")]
    pub access_key_id: Secret,
    #[serde(rename = "SecretAccessKey")]
    pub secret_access_key: Secret,
    #[serde(rename = "SessionToken")]
    pub session_token: Secret,
    /// RFC 3339, e.g. `2017-02-14T22:10:17+00:00`.
    #[serde(default, rename = "Expiration")]
    pub expiration: Option<String>,
}

/// The `gcsCredentials` of a GCP stack's file detail.
#[derive(Clone, Debug, Deserialize)]
pub struct GcsCredentials {
    pub access_token: Secret,
    #[serde(default)]
    pub token_type: Option<String>,
    /// Seconds from when the detail was read.
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default, rename = "projectId")]
    pub project_id: Option<String>,
}

impl FileInfo {
    /// When the credentials for direct reads stop working, if the detail says.
    fn credentials_expire_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let aws = self
            .credentials
            .as_ref()
            .and_then(|c| c.expiration.as_deref())
            .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
            .map(|e| e.with_timezone(&chrono::Utc));
        let gcs = self
            .gcs_credentials
            .as_ref()
            .and_then(|c| c.expires_in)
            .map(|s| self.fetched_at + chrono::Duration::seconds(s));
        aws.or(gcs)
    }

    /// Whether the credentials run out within five minutes of `now`: a slice started later might
    /// be refused (GCS tokens last an hour; a large export can take longer to download).
    fn credentials_expire_soon(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.credentials_expire_at()
            .is_some_and(|at| at - now < chrono::Duration::minutes(5))
    }

    /// Registers the file storage credentials with [`crate::redact`], so that no log line (ours or
    /// the HTTP client's, which prints request headers at debug level) can show them.
    fn register_secrets(&self) {
        if let Some(c) = &self.credentials {
            for secret in [&c.access_key_id, &c.secret_access_key, &c.session_token] {
                crate::redact::register(secret.expose());
            }
        }
        if let Some(c) = &self.gcs_credentials {
            crate::redact::register(c.access_token.expose());
        }
    }

    fn id_string(&self) -> String {
        self.id.to_string().trim_matches('"').to_string()
    }
}

/// Where file storage is reached. Both default to the real services; tests point them at the fake
/// Keboola server (`PIPELINE_KEBOOLA_S3_ENDPOINT`, `PIPELINE_KEBOOLA_GCS_ENDPOINT`).
#[derive(Clone, Debug, Default)]
pub struct StorageEndpoints {
    /// `scheme://host[:port]` answering path-style S3 requests (`/{bucket}/{key}`), instead of
    /// AWS's virtual-hosted `https://{bucket}.s3.{region}.amazonaws.com`.
    pub s3: Option<String>,
    /// Replaces `https://storage.googleapis.com`.
    pub gcs: Option<String>,
}

/// Where one slice is, from its manifest URL.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Location<'a> {
    /// A pre-signed or otherwise self-contained HTTP(S) URL.
    Http(&'a str),
    S3 {
        bucket: &'a str,
        key: &'a str,
    },
    Gcs {
        bucket: &'a str,
        object: &'a str,
    },
}

impl Location<'_> {
    /// For errors: cloud locations by bucket and key; an HTTP URL not at all, as its query may
    /// carry a signature.
    fn describe(&self) -> String {
        match self {
            Location::Http(_) => String::new(),
            Location::S3 { bucket, key } => format!(" (s3://{bucket}/{key})"),
            Location::Gcs { bucket, object } => format!(" (gs://{bucket}/{object})"),
        }
    }
}

/// Reads a manifest entry's URL; the error says why it cannot be downloaded.
fn locate(url: &str) -> Result<Location<'_>, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("its URL has no scheme".into());
    };
    let bucket_and_key = |what: &str| {
        rest.split_once('/')
            .filter(|(bucket, key)| !bucket.is_empty() && !key.is_empty())
            .ok_or_else(|| format!("its {what} URL has no bucket or no key"))
    };
    match scheme.to_ascii_lowercase().as_str() {
        "s3" => bucket_and_key("s3://").map(|(bucket, key)| Location::S3 { bucket, key }),
        "gs" => bucket_and_key("gs://").map(|(bucket, object)| Location::Gcs { bucket, object }),
        "abs" | "azure" => Err(AZURE.into()),
        // An Azure blob without a SAS query cannot be read by a plain GET.
        "http" | "https"
            if rest
                .split('/')
                .next()
                .is_some_and(|host| host.ends_with(".blob.core.windows.net"))
                && !rest.contains('?') =>
        {
            Err(AZURE.into())
        }
        "http" | "https" => Ok(Location::Http(url)),
        other => Err(format!("its URL has an unknown scheme `{other}`")),
    }
}

const AZURE: &str = "it is in Azure Blob Storage, which is not supported yet: slices are \
    downloaded from AWS (s3://) and GCP (gs://) stacks' file storage, and from HTTP(S) URLs";

/// One of an export's `whereFilters` (the Storage API reference's `WhereFiltersObject`): rows whose
/// `column` equals (`eq`) one of `values`, or (`ne`) none of them. Without a `dataType` the values
/// are compared as text.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WhereFilter {
    pub column: String,
    pub operator: WhereOperator,
    pub values: Vec<String>,
}

/// The operators every storage backend supports (`gt`, `ge`, `lt`, `le` are Snowflake-only and
/// compare by a `dataType`: not used).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WhereOperator {
    Eq,
    Ne,
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
            storage: StorageEndpoints::default(),
        }
    }

    /// Reaches file storage at `storage` instead of the real cloud services.
    pub fn with_storage_endpoints(mut self, storage: StorageEndpoints) -> Client {
        self.storage = storage;
        self
    }

    /// The Storage API URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The Storage API token (a secret: for comparisons and digests, never for display).
    pub(super) fn token(&self) -> &str {
        &self.token
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
                    let message = transport_message(&t);
                    if last {
                        return Err(KeboolaError::Transport {
                            what: what.to_string(),
                            message,
                        });
                    }
                    tracing::warn!(error = %message, attempt, "Keboola {what}: retrying");
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
            message: crate::redact::redact(&e.to_string()).into_owned(),
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

    /// Exports `id` and waits for the job: the rows changed after `changed_since` (a unix
    /// timestamp) when given, and only those matching every filter of `filters`.
    pub fn export(
        &self,
        id: &str,
        changed_since: Option<&str>,
        filters: &[WhereFilter],
    ) -> Result<Export, KeboolaError> {
        let what = format!("export of {id}");
        let started_at = chrono::Utc::now().timestamp();
        let url = self.url(&format!("/v2/storage/tables/{}/export-async", enc(id)));
        // A JSON body, as the reference documents the endpoint: `whereFilters` is a list of
        // objects, which a form cannot carry.
        let mut body = serde_json::json!({ "gzip": true });
        if let Some(since) = changed_since {
            body["changedSince"] = since.into();
        }
        if !filters.is_empty() {
            body["whereFilters"] =
                serde_json::to_value(filters).map_err(|e| KeboolaError::Protocol {
                    what: what.clone(),
                    message: e.to_string(),
                })?;
        }
        let resp = self.send(&what, || {
            self.agent
                .post(&url)
                .set("X-StorageApi-Token", &self.token)
                .send_json(&body)
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

    /// `GET /v2/storage/tokens/verify`: the id of the project the token belongs to (its `owner`).
    /// The response also holds the token itself: nothing but the owner's id is kept from it.
    pub fn token_project(&self) -> Result<String, KeboolaError> {
        let what = "token verification";
        let v = self.get_json(what, "/v2/storage/tokens/verify")?;
        match v.pointer("/owner/id") {
            Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
            Some(Value::Number(id)) => Ok(id.to_string()),
            _ => Err(KeboolaError::Protocol {
                what: what.into(),
                message: "the response has no owner.id".into(),
            }),
        }
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
        let file: FileInfo = Self::decode(
            &what,
            self.get_json(
                &what,
                &format!("/v2/storage/files/{}?federationToken=1", enc(id)),
            )?,
        )?;
        file.register_secrets();
        Ok(file)
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
        // Every location is checked before the first download: an unsupported stack fails at once.
        let locations = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                locate(url).map_err(|why| KeboolaError::Protocol {
                    what: "export download".into(),
                    message: format!("slice {i} cannot be downloaded: {why}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut file = std::borrow::Cow::Borrowed(file);
        let mut out = Vec::new();
        for (i, location) in locations.iter().enumerate() {
            let direct = !matches!(location, Location::Http(_));
            if direct && file.credentials_expire_soon(chrono::Utc::now()) {
                // Asking for the file detail again hands out fresh credentials.
                tracing::info!("Keboola file storage credentials expire soon: renewing them");
                file = std::borrow::Cow::Owned(self.file(&file.id_string())?);
            }
            let path = dir.join(format!("slice_{i:05}.csv.gz"));
            self.fetch_to(&file, location, &path, i)?;
            out.push(path);
        }
        Ok(out)
    }

    /// Streams a slice into `path`. A body shorter than announced, cut off, or not one complete
    /// gzip stream (a truncated or corrupt slice, even one whose length matches its
    /// `Content-Length`) is fetched again, with the same bounded retries as other transient
    /// failures; after the last, the extract fails and nothing is published.
    fn fetch_to(
        &self,
        file: &FileInfo,
        location: &Location,
        path: &Path,
        i: usize,
    ) -> Result<(), KeboolaError> {
        let what = format!("download of slice {i}{}", location.describe());
        let get = self.slice_request(file, location, &what)?;
        let mut pause = self.patience.first_pause;
        let mut last_fault = String::new();
        for attempt in 1..=self.patience.attempts {
            let resp = self.send(&what, || get.call(&self.agent))?;
            let expected = resp
                .header("Content-Length")
                .and_then(|v| v.parse::<u64>().ok());
            last_fault = match copy_body(resp.into_reader(), path) {
                Err(SliceFault::Disk(e)) => return Err(KeboolaError::Io(path.to_path_buf(), e)),
                Err(SliceFault::Cut(e)) => {
                    format!("cut off ({})", crate::redact::redact(&e.to_string()))
                }
                Ok(body) => match (expected, body.gzip) {
                    (Some(announced), _) if announced != body.bytes => {
                        format!("{} of {announced} bytes arrived", body.bytes)
                    }
                    (_, Err(e)) => format!("not a complete gzip stream ({e})"),
                    (_, Ok(())) => return Ok(()),
                },
            };
            tracing::warn!(attempt, fault = %last_fault, "{what}: fetching it again");
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
                "the slice arrived incomplete or corrupt on all {} attempts (last: {last_fault}); \
                 nothing was published",
                self.patience.attempts
            ),
        })
    }

    /// How to GET a slice at `location`, with the file detail's credentials when it is in a cloud
    /// bucket. Never the Storage token: file storage is another service.
    fn slice_request<'a>(
        &self,
        file: &'a FileInfo,
        location: &Location<'a>,
        what: &str,
    ) -> Result<SliceRequest<'a>, KeboolaError> {
        let missing = |field: &str| KeboolaError::Protocol {
            what: what.to_string(),
            message: format!(
                "the file detail has no `{field}`, needed to read {} file storage directly",
                match location {
                    Location::Gcs { .. } => "GCP",
                    _ => "AWS",
                }
            ),
        };
        Ok(match *location {
            Location::Http(url) => SliceRequest::Http(url),
            Location::S3 { bucket, key } => {
                let credentials = file
                    .credentials
                    .as_ref()
                    .ok_or_else(|| missing("credentials"))?;
                let region = file.region.as_deref().ok_or_else(|| missing("region"))?;
                let encoded_key = sigv4::uri_encode(key, true);
                let (url, host, path) = match &self.storage.s3 {
                    Some(endpoint) => {
                        let endpoint = endpoint.trim_end_matches('/');
                        let host = endpoint
                            .split_once("://")
                            .map_or(endpoint, |(_, authority)| authority);
                        let path = format!("/{}/{encoded_key}", sigv4::uri_encode(bucket, false));
                        (format!("{endpoint}{path}"), host.to_string(), path)
                    }
                    // AWS's wildcard certificate does not cover a bucket name with dots as a host
                    // name: such buckets are addressed path-style.
                    None if bucket.contains('.') => {
                        let host = format!("s3.{region}.amazonaws.com");
                        let path = format!("/{}/{encoded_key}", sigv4::uri_encode(bucket, false));
                        (format!("https://{host}{path}"), host, path)
                    }
                    None => {
                        let host = format!("{bucket}.s3.{region}.amazonaws.com");
                        let path = format!("/{encoded_key}");
                        (format!("https://{host}{path}"), host, path)
                    }
                };
                SliceRequest::S3 {
                    url,
                    host,
                    path,
                    region,
                    credentials,
                }
            }
            Location::Gcs { bucket, object } => {
                let credentials = file
                    .gcs_credentials
                    .as_ref()
                    .ok_or_else(|| missing("gcsCredentials"))?;
                let endpoint = self
                    .storage
                    .gcs
                    .as_deref()
                    .unwrap_or("https://storage.googleapis.com")
                    .trim_end_matches('/');
                // The object name is one path segment: its slashes are encoded too.
                let url = format!(
                    "{endpoint}/storage/v1/b/{}/o/{}?alt=media",
                    sigv4::uri_encode(bucket, false),
                    sigv4::uri_encode(object, false)
                );
                SliceRequest::Gcs {
                    url,
                    bearer: format!("Bearer {}", credentials.access_token.expose()),
                }
            }
        })
    }
}

/// A prepared slice GET, sent afresh on every attempt.
enum SliceRequest<'a> {
    Http(&'a str),
    S3 {
        url: String,
        host: String,
        path: String,
        region: &'a str,
        credentials: &'a AwsCredentials,
    },
    Gcs {
        url: String,
        bearer: String,
    },
}

impl SliceRequest<'_> {
    fn call(&self, agent: &ureq::Agent) -> Result<ureq::Response, ureq::Error> {
        match self {
            SliceRequest::Http(url) => agent.get(url).call(),
            SliceRequest::S3 {
                url,
                host,
                path,
                region,
                credentials,
            } => {
                // Signed now, not once: the date is part of the signature and S3 refuses one made
                // more than 15 minutes before the request arrives (retries can wait that long).
                let amz_date = sigv4::amz_date(chrono::Utc::now());
                let token = credentials.session_token.expose();
                let headers = [
                    ("host", host.as_str()),
                    ("x-amz-content-sha256", sigv4::UNSIGNED_PAYLOAD),
                    ("x-amz-date", amz_date.as_str()),
                    ("x-amz-security-token", token),
                ];
                let signer = sigv4::Signer {
                    access_key_id: credentials.access_key_id.expose(),
                    secret_access_key: credentials.secret_access_key.expose(),
                    region,
                    service: "s3",
                };
                let request = sigv4::Request {
                    method: "GET",
                    path,
                    query: "",
                    headers: &headers,
                    payload_hash: sigv4::UNSIGNED_PAYLOAD,
                };
                let authorization = sigv4::authorization(&signer, &request, &amz_date);
                // The host header is set rather than left to ureq, so that the one signed is the
                // one sent.
                headers
                    .iter()
                    .fold(agent.get(url), |r, (name, value)| r.set(name, value))
                    .set("Authorization", &authorization)
                    .call()
            }
            SliceRequest::Gcs { url, bearer } => agent.get(url).set("Authorization", bearer).call(),
        }
    }
}

/// A slice body as it arrived: its length, and whether it is one or more complete gzip members.
struct SliceBody {
    bytes: u64,
    gzip: std::io::Result<()>,
}

/// Why a slice body could not be stored.
enum SliceFault {
    /// The connection failed while the body arrived.
    Cut(std::io::Error),
    /// Writing it to disk failed: not something fetching it again would mend.
    Disk(std::io::Error),
}

/// Streams a slice body into `path`, and through a gzip decoder that checks it as it goes: every
/// member's CRC-32 and length trailer, and that the stream does not end inside one. The bytes on
/// disk stay gzip'd (DuckDB reads them so); the decoded bytes are only counted, never stored, so
/// the check costs one inflate pass, overlapping the download, and no memory or disk.
fn copy_body(mut reader: impl Read, path: &Path) -> Result<SliceBody, SliceFault> {
    let mut file = std::fs::File::create(path).map_err(SliceFault::Disk)?;
    let mut check = flate2::write::MultiGzDecoder::new(std::io::sink());
    let mut gzip = Ok(());
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(SliceFault::Cut)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(SliceFault::Disk)?;
        if gzip.is_ok() {
            gzip = check.write_all(&buf[..n]);
        }
        bytes += n as u64;
    }
    file.flush().map_err(SliceFault::Disk)?;
    if gzip.is_ok() {
        gzip = if bytes == 0 {
            // DuckDB refuses an empty .gz file too ("Input is not a GZIP stream").
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "an empty body",
            ))
        } else {
            check.try_finish()
        };
    }
    Ok(SliceBody { bytes, gzip })
}

/// A transport failure, without the URL ureq's own message starts with: a pre-signed URL carries
/// a signature (and a session token) in its query.
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

/// The error message of an error response: the Storage API's and Google's JSON
/// (`{"error": "..."}`, `{"error": {"message": "..."}}`), S3's XML `Code` and `Message`, else the
/// status text. Never the rest of the body: S3 echoes the canonical request of a refused
/// signature, session token included.
fn error_message(resp: ureq::Response) -> String {
    let status_text = resp.status_text().to_string();
    let body = resp.into_string().unwrap_or_default();
    let json = || {
        serde_json::from_str::<Value>(&body).ok().and_then(|v| {
            v.get("error")
                .and_then(|e| e.as_str().map(String::from))
                .or_else(|| {
                    v.pointer("/error/message")
                        .and_then(|m| m.as_str())
                        .map(String::from)
                })
        })
    };
    let xml = || {
        let code = xml_element(&body, "Code")?;
        Some(match xml_element(&body, "Message") {
            Some(message) => format!("{code}: {message}"),
            None => code.to_string(),
        })
    };
    json().or_else(xml).unwrap_or(status_text)
}

/// The text of the first `<name>…</name>` in an XML document.
fn xml_element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + len].trim())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keboola_slice_urls_are_located_by_scheme() {
        assert_eq!(
            locate("s3://kbc-sapi-files/exp-15/1/a.csv.gz0000_part_00"),
            Ok(Location::S3 {
                bucket: "kbc-sapi-files",
                key: "exp-15/1/a.csv.gz0000_part_00"
            })
        );
        assert_eq!(
            locate("gs://kbc-files/exp-15/slice-0"),
            Ok(Location::Gcs {
                bucket: "kbc-files",
                object: "exp-15/slice-0"
            })
        );
        assert_eq!(
            locate("https://example.com/x?sig=1"),
            Ok(Location::Http("https://example.com/x?sig=1"))
        );
        for azure in [
            "abs://account/container/slice",
            "azure://kbc.blob.core.windows.net/container/slice",
            "https://kbc.blob.core.windows.net/container/slice",
        ] {
            let why = locate(azure).expect_err(azure);
            assert!(why.contains("Azure") && why.contains("s3://"), "{why}");
        }
        assert!(locate("s3://bucket-only").is_err());
        assert!(locate("s3:///key").is_err());
        assert!(locate("ftp://host/x").is_err_and(|why| why.contains("`ftp`")));
    }

    fn detail(json: Value) -> FileInfo {
        serde_json::from_value(json).expect("a file detail")
    }

    #[test]
    fn keboola_file_detail_credentials_never_show_in_debug() {
        let file = detail(serde_json::json!({
            "id": 1, "isSliced": true, "url": "https://x/manifest", "provider": "aws",
            "region": "us-east-1", "s3Path": {"bucket": "b", "key": "k"},
            "credentials": {"AccessKeyId": "ASIAFAKEKEYID", "SecretAccessKey": "fake-secret",
                            "SessionToken": "fake-session", "Expiration": "2017-02-14T22:10:17+00:00"},
            "gcsCredentials": {"access_token": "ya29.fake", "token_type": "Bearer",
                               "expires_in": 3599, "projectId": "p"},
        }));
        let shown = format!("{file:?}");
        for secret in ["ASIAFAKEKEYID", "fake-secret", "fake-session", "ya29.fake"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(
            file.credentials
                .as_ref()
                .map(|c| c.secret_access_key.expose()),
            Some("fake-secret")
        );
    }

    #[test]
    fn keboola_credentials_are_renewed_five_minutes_before_they_expire() {
        let aws = detail(serde_json::json!({
            "id": 1, "url": "u",
            "credentials": {"AccessKeyId": "a", "SecretAccessKey": "s", "SessionToken": "t",
                            "Expiration": "2030-01-01T12:00:00+00:00"},
        }));
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .expect("a time")
                .with_timezone(&chrono::Utc)
        };
        assert!(!aws.credentials_expire_soon(at("2030-01-01T11:54:00Z")));
        assert!(aws.credentials_expire_soon(at("2030-01-01T11:56:00Z")));
        let gcs = detail(serde_json::json!({
            "id": 1, "url": "u", "gcsCredentials": {"access_token": "t", "expires_in": 3599},
        }));
        let fetched = gcs.fetched_at;
        assert!(!gcs.credentials_expire_soon(fetched + chrono::Duration::minutes(50)));
        assert!(gcs.credentials_expire_soon(fetched + chrono::Duration::minutes(56)));
        // No credentials (pre-signed HTTP slices): nothing to renew.
        let plain = detail(serde_json::json!({"id": 1, "url": "u"}));
        assert!(!plain.credentials_expire_soon(chrono::Utc::now()));
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).expect("in memory");
        encoder.finish().expect("in memory")
    }

    /// Whether `copy_body` accepts `body` as a complete gzip stream (and stores it unchanged).
    fn accepted(body: &[u8]) -> bool {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("slice.csv.gz");
        let Ok(stored) = copy_body(body, &path) else {
            panic!("reading from memory cannot fail")
        };
        assert_eq!(stored.bytes, body.len() as u64);
        assert_eq!(std::fs::read(&path).expect("stored"), body);
        stored.gzip.is_ok()
    }

    #[test]
    fn keboola_slices_must_be_complete_gzip_streams() {
        let csv: Vec<u8> = (0..2000)
            .flat_map(|i| format!("\"{i}\",\"row {i}\"\n").into_bytes())
            .collect();
        let whole = gzip(&csv);
        assert!(accepted(&whole));
        // Several members, as concatenated gzip files are: DuckDB reads them, so do we.
        assert!(accepted(&[gzip(b"\"1\"\n"), gzip(b"\"2\"\n")].concat()));
        // Cut anywhere, even inside the 8-byte trailer: refused.
        for cut in [1, 10, whole.len() / 2, whole.len() - 8, whole.len() - 1] {
            assert!(!accepted(&whole[..cut]), "cut at {cut} of {}", whole.len());
        }
        // Whole but wrong: a flipped bit in the data or in the CRC-32.
        for at in [whole.len() / 2, whole.len() - 8] {
            let mut spoiled = whole.clone();
            spoiled[at] ^= 0x01;
            assert!(!accepted(&spoiled), "bit flipped at {at}");
        }
        assert!(!accepted(b""), "DuckDB refuses an empty .gz");
        assert!(!accepted(b"\"1\",\"not gzip\"\n"));
        assert!(!accepted(&[whole.as_slice(), b"junk"].concat()));
    }

    #[test]
    fn keboola_transport_errors_never_show_the_url() {
        // A closed port on loopback: connection refused, which ureq reports with the URL.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let url = format!(
            "http://127.0.0.1:{port}/slice?X-Amz-Security-Token=transport-secret&X-Amz-Signature=abcdef0123"
        );
        let Err(ureq::Error::Transport(t)) = ureq::get(&url).call() else {
            panic!("nothing listens on {port}")
        };
        assert!(t.to_string().contains("abcdef0123"), "ureq shows the URL");
        let message = transport_message(&t);
        assert!(
            !message.contains("transport-secret") && !message.contains("abcdef0123"),
            "{message}"
        );
        assert!(message.contains("Connection Failed"), "{message}");
    }

    #[test]
    fn keboola_s3_error_bodies_give_code_and_message_only() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                    <Message>The request signature we calculated does not match</Message>\
                    <CanonicalRequest>x-amz-security-token:secret</CanonicalRequest></Error>";
        assert_eq!(xml_element(body, "Code"), Some("SignatureDoesNotMatch"));
        assert_eq!(
            xml_element(body, "Message"),
            Some("The request signature we calculated does not match")
        );
        assert_eq!(xml_element(body, "Missing"), None);
    }
}

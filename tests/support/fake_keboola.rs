//! A fake Keboola Storage API v2, for end-to-end tests and benchmarks of the Keboola connector.
//!
//! It serves, over plain HTTP on 127.0.0.1, the subset a table extractor walks through (the flow of
//! the official Python client: `tables.export_raw` → `jobs.block_until_completed` → `files.download`):
//! list buckets and tables, read a table's detail, start an asynchronous table export, poll the job,
//! read the exported file's detail, fetch its slice manifest and download the gzip'd CSV slices
//! (no header, every value double-quoted, quotes doubled, columns in the table's order).
//!
//! File storage, as [`FakeKeboola::set_file_storage`] chooses ([`Storage`]):
//! - `Http` (the default): the file detail (`GET /v2/storage/files/{id}?federationToken=1`) carries no
//!   cloud credentials and the manifest lists plain HTTP URLs on the fake (`/fake/files/…`). Like
//!   pre-signed cloud URLs they need no Storage token.
//! - `S3`, an AWS stack: the detail has `provider: aws`, `region`, `s3Path` and temporary
//!   `credentials` (fixed fake values, [`FAKE_AWS_ACCESS_KEY_ID`] …), the manifest lists
//!   `s3://{bucket}/{key}` URLs, and the fake answers path-style S3 GETs (`/{bucket}/{key}`) only
//!   when signed with AWS Signature Version 4 by those credentials: it recomputes the signature from
//!   the request it received and answers S3's XML errors (`SignatureDoesNotMatch`, `InvalidToken`,
//!   `RequestTimeTooSkewed` …) otherwise. Point the client at it with `PIPELINE_KEBOOLA_S3_ENDPOINT`.
//! - `Gcs`, a GCP stack: `provider: gcp`, `gcsPath` and `gcsCredentials` (an OAuth access token),
//!   `gs://{bucket}/{object}` URLs, and Google's JSON API download
//!   (`/storage/v1/b/{bucket}/o/{object}?alt=media`) with `Authorization: Bearer {token}`. Point the
//!   client at it with `PIPELINE_KEBOOLA_GCS_ENDPOINT`.
//!
//! In every mode the manifest itself stays behind a pre-signed HTTP URL, as Keboola's is: its query
//! (like the `Http` slices') carries a fake SigV4 query signature and session token
//! ([`FAKE_PRESIGNED_SIGNATURE`], [`FAKE_PRESIGNED_SECURITY_TOKEN`]) that the fake requires, so
//! tests can check that no log line or error shows them. Every request outside `/v2/` is recorded
//! ([`FakeKeboola::file_storage_requests`]), and [`FakeKeboola::token_sent_to_file_storage`] tells
//! when one carried the Storage token anyway.
//!
//! Also served: `GET /v2/storage/tokens/verify` (the token's detail, with its project as `owner.id`,
//! [`FakeKeboola::set_project_id`]; like the real one it includes the token itself). Export requests
//! are recorded with their `changedSince` and row filters ([`FakeKeboola::export_requests`]), and
//! the filters are applied: `whereFilters` (JSON, or `whereFilters[n][…]` form fields) and the older
//! single `whereColumn` / `whereValues[]` / `whereOperator`, `eq` or `ne`, values compared as text.
//!
//! Faults: failures and rate limits per route ([`FakeKeboola::fail_next`], …), a failed job, a
//! slice cut off mid-body ([`FakeKeboola::truncate_next_slice`]) and a slice whose gzip stream is
//! truncated or has a wrong checksum but arrives whole, with a matching `Content-Length`
//! ([`FakeKeboola::corrupt_next_slices`]).
//!
//! Where it differs from the real service, on purpose:
//! - One server plays Keboola and its file storage; S3 is reached path-style, not virtual-hosted.
//! - An export's rows are snapshotted when the job is created, not when it runs; slices are always
//!   gzip'd whatever `gzip` says; `changedSince` takes a unix timestamp or an ISO-8601 date(-time),
//!   not every `strtotime` phrase. Other export options (`format`, `orderBy`, …) are ignored;
//!   comparison operators (`gt`, …) and filters on generated tables are refused.
//!
//! Tests include it with `#[path = "../support/fake_keboola.rs"] #[allow(dead_code)] mod fake_keboola;`
//! (the `allow` because each includer uses a different subset) and drive it through blocking `&self`
//! methods; `examples/fake_keboola.rs` runs it as a standalone benchmark server. The server has its
//! own tokio runtime, so plain `#[test]`s and `#[tokio::test]`s can use it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::TcpListener as StdTcpListener;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, Timelike};
use flate2::write::GzEncoder;
use flate2::Compression;
use futures_util::StreamExt as _;
use pipeline::connectors::keboola::sigv4;
use serde_json::{json, Map, Value};

/// Change time (unix seconds) of generated row 0; generated row `r` changed at `GENERATED_EPOCH + r`,
/// so `changedSince` selects a suffix of a generated table.
pub const GENERATED_EPOCH: i64 = 1_700_000_000;
const TOKEN_HEADER: &str = "x-storageapi-token";
/// The fake AWS stack's file storage bucket and the temporary credentials its file details hand out.
pub const FAKE_S3_BUCKET: &str = "kbc-fake-sapi-files";
pub const FAKE_AWS_ACCESS_KEY_ID: &str = "ASIAFAKEKEBOOLA7EXAM";
pub const FAKE_AWS_SECRET_ACCESS_KEY: &str = "fakeSecret/K7MDENG+bPxRfiCYEXAMPLEKEY";
pub const FAKE_AWS_SESSION_TOKEN: &str = "FwoGZXIvYXdzEFAKESESSIONTOKENfake+token//value=";
/// The fake GCP stack's bucket and OAuth access token.
pub const FAKE_GCS_BUCKET: &str = "kbc-fake-gcs-files";
pub const FAKE_GCS_ACCESS_TOKEN: &str = "ya29.fake-gcs-access-token";
/// The project the fake's tokens belong to by default (a real token starts with its project id).
pub const FAKE_PROJECT_ID: u64 = 1234;
/// The signature and session token in the query of the pre-signed URLs the fake hands out (the
/// manifest's, and the slices' in [`Storage::Http`] mode), as a real stack's S3 URLs carry them.
/// The fake refuses a manifest or slice GET without them.
pub const FAKE_PRESIGNED_SIGNATURE: &str =
    "f4k3519a7e0f1e2d3c4b5a697887a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9";
pub const FAKE_PRESIGNED_SECURITY_TOKEN: &str = "IQoJb3JpZ2luX2VjEFAKEPRESIGNEDsessiontoken+x/y=";
/// Uncompressed CSV bytes per streamed chunk: large enough for gzip to compress well, small enough
/// that a 1 GB slice never sits in memory.
const CHUNK_BYTES: usize = 256 * 1024;

/// A group of endpoints, for fault injection and request counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /v2/storage/tokens/verify`
    Verify,
    /// `GET /v2/storage/buckets`
    Buckets,
    /// `GET /v2/storage/tables` and `GET /v2/storage/buckets/{id}/tables`
    Tables,
    /// `GET /v2/storage/tables/{id}`
    Detail,
    /// `POST /v2/storage/tables/{id}/export-async`
    Export,
    /// `GET /v2/storage/jobs/{id}`
    Job,
    /// `GET /v2/storage/files/{id}`
    File,
    /// `GET /fake/files/{id}/manifest`
    Manifest,
    /// A slice download: `GET /fake/files/{id}/slices/{n}.csv.gz`, or the S3 or GCS object GET of
    /// a slice when file storage is [`Storage::S3`] or [`Storage::Gcs`].
    Slice,
    /// Every request.
    Any,
}

/// Where exports are stored, as the file detail and the manifest describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Plain HTTP URLs on the fake, no cloud credentials (the default).
    Http,
    /// An AWS stack in `region`: `s3://` slices, SigV4-signed GETs.
    S3 { region: String },
    /// A GCP stack: `gs://` slices, GETs with a bearer token.
    Gcs,
}

/// How a slice is spoiled by [`FakeKeboola::corrupt_next_slices`]. Either way the body is sent
/// whole, with a `Content-Length` that matches it: only checking the gzip stream finds the fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GzipFault {
    /// The gzip stream cut short (its last third, trailer included, missing).
    Truncated,
    /// A complete stream whose CRC-32 trailer does not match the data.
    BadChecksum,
}

/// An export request as the fake parsed it (query string and body together).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportRequest {
    pub table_id: String,
    pub changed_since: Option<String>,
    /// `whereFilters`, and the older single `whereColumn`/`whereValues[]`/`whereOperator` filter.
    pub where_filters: Vec<WhereFilter>,
}

/// A row filter of an export: `column` equal to one of `values` (`eq`) or to none (`ne`), as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhereFilter {
    pub column: String,
    pub operator: String,
    pub values: Vec<String>,
}

/// A request the fake received outside the Storage API (`/v2/…`): to the manifest or file storage.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query as received (still percent-encoded).
    pub uri: String,
    /// Names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running fake; dropping it stops the server.
pub struct FakeKeboola {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Shared {
    token: String,
    base: String,
    state: Mutex<FakeState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock must not turn every later request into a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct FakeState {
    buckets: BTreeMap<String, Bucket>,
    tables: BTreeMap<String, Table>,
    slices: usize,
    job_polls: usize,
    next_id: u64,
    jobs: HashMap<u64, Job>,
    files: HashMap<u64, ExportFile>,
    faults: Vec<Fault>,
    counts: HashMap<Route, usize>,
    last_changed_since: Option<String>,
    token_in_url: bool,
    token_sent_to_files: bool,
    file_requests: Vec<RecordedRequest>,
    storage: Storage,
    /// The secret S3 signatures are checked with (normally the one handed out).
    expected_aws_secret: String,
    next_job_error: Option<String>,
    truncate_next_slice: bool,
    corrupt_slices: std::collections::VecDeque<GzipFault>,
    project_id: u64,
    exports: Vec<ExportRequest>,
}

struct Bucket {
    id: String,
    name: String,
    stage: String,
    description: String,
}

struct Table {
    id: String,
    name: String,
    bucket_id: String,
    columns: Vec<String>,
    primary_key: Vec<String>,
    description: String,
    column_descriptions: BTreeMap<String, String>,
    /// `KBC.datatype.basetype` per column (STRING, INTEGER, NUMERIC…), when set.
    column_base_types: BTreeMap<String, String>,
    rows: TableRows,
    created: i64,
    last_change: i64,
}

enum TableRows {
    Stored(Vec<StoredRow>),
    /// Rows computed on demand by [`generated_value`], so a benchmark table costs no memory.
    Generated(u64),
}

struct StoredRow {
    values: Vec<String>,
    changed_at: i64,
}

struct Job {
    id: u64,
    table_id: String,
    created: i64,
    polls: usize,
    params: Value,
    /// The exported file's id, or the error message the job ends with.
    outcome: Result<u64, String>,
}

struct ExportFile {
    id: u64,
    name: String,
    created: i64,
    rows: ExportRows,
    slices: usize,
    /// Where it is stored: the file storage mode when the export was made.
    storage: Storage,
}

impl ExportFile {
    /// The object key of slice `n` in a cloud bucket. A space and a `=` in it make clients encode
    /// the key (SigV4's canonical URI, GCS's object path segment).
    fn slice_key(&self, n: usize) -> String {
        format!("exp-15/{}/slices/{} part={n}", self.id, self.name)
    }

    fn manifest_key(&self) -> String {
        format!("exp-15/{}/slices/{}manifest", self.id, self.name)
    }
}

/// The file id and slice number of a key made by [`ExportFile::slice_key`].
fn parse_slice_key(key: &str) -> Option<(String, u64)> {
    let mut parts = key.splitn(4, '/');
    let (_, id, _, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let (_, n) = rest.rsplit_once(" part=")?;
    Some((id.to_owned(), n.parse().ok()?))
}

/// The rows an export selected, already filtered and projected onto the requested columns.
#[derive(Clone)]
enum ExportRows {
    Stored(Arc<Vec<Vec<String>>>),
    Generated {
        first: u64,
        count: u64,
        columns: Arc<Vec<usize>>,
    },
}

struct Fault {
    route: Route,
    kind: FaultKind,
    remaining: usize,
}

enum FaultKind {
    Fail(StatusCode),
    RateLimit(u64),
    Delay(Duration),
}

impl FakeKeboola {
    /// Starts the fake on an ephemeral port of 127.0.0.1.
    pub fn start() -> FakeKeboola {
        Self::start_on_port(0).expect("start the fake Keboola Storage API on 127.0.0.1")
    }

    /// Starts the fake on a given port of 127.0.0.1 (0 picks a free one).
    pub fn start_on_port(port: u16) -> io::Result<FakeKeboola> {
        let listener = StdTcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let base = format!("http://{}", listener.local_addr()?);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let token = format!("1234-56789-fake{:x}{:x}", nanos, std::process::id());
        let shared = Arc::new(Shared {
            token,
            base,
            state: Mutex::new(FakeState {
                buckets: BTreeMap::new(),
                tables: BTreeMap::new(),
                slices: 3,
                job_polls: 2,
                next_id: 100,
                jobs: HashMap::new(),
                files: HashMap::new(),
                faults: Vec::new(),
                counts: HashMap::new(),
                last_changed_since: None,
                token_in_url: false,
                token_sent_to_files: false,
                file_requests: Vec::new(),
                storage: Storage::Http,
                expected_aws_secret: FAKE_AWS_SECRET_ACCESS_KEY.to_owned(),
                next_job_error: None,
                truncate_next_slice: false,
                corrupt_slices: std::collections::VecDeque::new(),
                project_id: FAKE_PROJECT_ID,
                exports: Vec::new(),
            }),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-keboola")
            .enable_all()
            .build()?;
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let app = router(Arc::clone(&shared));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Ok(FakeKeboola {
            shared,
            runtime: Some(runtime),
        })
    }

    /// Base URL, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// The only Storage API token the fake accepts.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Adds a bucket such as `in.c-shop` (stage `in`, name `shop`).
    pub fn add_bucket(&self, id: &str, description: &str) {
        let (stage, rest) = id
            .split_once('.')
            .expect("a bucket id looks like `in.c-shop`");
        let bucket = Bucket {
            id: id.to_owned(),
            name: rest.strip_prefix("c-").unwrap_or(rest).to_owned(),
            stage: stage.to_owned(),
            description: description.to_owned(),
        };
        self.shared.lock().buckets.insert(id.to_owned(), bucket);
    }

    /// Adds an empty table such as `in.c-shop.orders`, creating its bucket if needed.
    pub fn add_table(&self, id: &str, columns: &[&str], primary_key: &[&str], description: &str) {
        for key in primary_key {
            assert!(
                columns.contains(key),
                "primary key column {key} is not a column of {id}"
            );
        }
        self.insert_table(
            id,
            columns.iter().map(|c| c.to_string()).collect(),
            primary_key,
            description,
            TableRows::Stored(Vec::new()),
        );
    }

    /// Adds a table of `rows` deterministic rows computed while they are streamed: columns `id`,
    /// then `name_N`, `amount_N`, `updated_at_N`, `value_N` in turn; row `r` changed at
    /// `GENERATED_EPOCH + r`.
    pub fn add_generated_table(&self, id: &str, columns: usize, rows: u64) {
        let names = (0..columns.max(1)).map(generated_column_name).collect();
        self.insert_table(
            id,
            names,
            &["id"],
            "Generated rows",
            TableRows::Generated(rows),
        );
        // Dates consistent with the rows' change times, so `lastChangeDate` is the last row's.
        self.with_table(id, |table| {
            table.created = GENERATED_EPOCH;
            table.last_change = GENERATED_EPOCH + rows.saturating_sub(1) as i64;
        });
    }

    /// Sets the `KBC.description` metadata of one column.
    pub fn set_column_description(&self, table: &str, column: &str, description: &str) {
        self.with_table(table, |table| {
            assert!(
                table.columns.iter().any(|c| c == column),
                "{column} is not a column of {}",
                table.id
            );
            table
                .column_descriptions
                .insert(column.to_owned(), description.to_owned());
        });
    }

    /// Sets the `KBC.datatype.basetype` metadata of one column (`STRING`, `INTEGER`, `NUMERIC`,
    /// `FLOAT`, `BOOLEAN`, `DATE`, `TIMESTAMP`), which clients read as the column's type.
    pub fn set_column_base_type(&self, table: &str, column: &str, base_type: &str) {
        self.with_table(table, |table| {
            assert!(
                table.columns.iter().any(|c| c == column),
                "{column} is not a column of {}",
                table.id
            );
            table
                .column_base_types
                .insert(column.to_owned(), base_type.to_owned());
        });
    }

    /// Replaces a table's rows; each row has one value per column, in the table's column order.
    pub fn set_rows(&self, table: &str, rows: Vec<Vec<String>>, changed_at: i64) {
        self.with_table(table, |table| {
            let stored = rows
                .into_iter()
                .map(|values| table.stored_row(values, changed_at))
                .collect();
            table.rows = TableRows::Stored(stored);
            table.last_change = changed_at;
        });
    }

    /// Inserts rows, replacing those with the same primary key (appending all when there is none).
    pub fn upsert_rows(&self, table: &str, rows: Vec<Vec<String>>, changed_at: i64) {
        self.with_table(table, |table| {
            let key_positions: Vec<usize> = table
                .primary_key
                .iter()
                .filter_map(|k| table.columns.iter().position(|c| c == k))
                .collect();
            let new_rows: Vec<StoredRow> = rows
                .into_iter()
                .map(|values| table.stored_row(values, changed_at))
                .collect();
            let TableRows::Stored(existing) = &mut table.rows else {
                panic!("{} is a generated table", table.id)
            };
            let key = |row: &StoredRow| {
                key_positions
                    .iter()
                    .map(|&i| row.values[i].clone())
                    .collect::<Vec<_>>()
            };
            let mut index: HashMap<Vec<String>, usize> = existing
                .iter()
                .enumerate()
                .map(|(i, r)| (key(r), i))
                .collect();
            for row in new_rows {
                let position = if key_positions.is_empty() {
                    None
                } else {
                    index.get(&key(&row)).copied()
                };
                match position {
                    Some(i) => existing[i] = row,
                    None => {
                        index.insert(key(&row), existing.len());
                        existing.push(row);
                    }
                }
            }
            table.last_change = table.last_change.max(changed_at);
        });
    }

    /// How many slices later exports are split into (default 3).
    pub fn set_slices(&self, n: usize) {
        assert!(n >= 1, "an export has at least one slice");
        self.shared.lock().slices = n;
    }

    /// On which poll later export jobs finish (default 2: `processing`, then `success`).
    pub fn set_job_polls(&self, n: usize) {
        assert!(n >= 1, "a job finishes on its first poll at the earliest");
        self.shared.lock().job_polls = n;
    }

    /// The next `times` requests to `route` answer `status` with a JSON error.
    pub fn fail_next(&self, route: Route, times: usize, status: u16) {
        let status = StatusCode::from_u16(status).expect("a valid HTTP status");
        self.add_fault(route, times, FaultKind::Fail(status));
    }

    /// The next `times` requests to `route` answer 429 with `Retry-After: retry_after_secs`.
    pub fn rate_limit_next(&self, route: Route, times: usize, retry_after_secs: u64) {
        self.add_fault(route, times, FaultKind::RateLimit(retry_after_secs));
    }

    /// The next `times` requests to `route` are answered only after `delay`.
    pub fn delay_next(&self, route: Route, times: usize, delay: Duration) {
        self.add_fault(route, times, FaultKind::Delay(delay));
    }

    /// The next export job ends in status `error` with this message.
    pub fn fail_next_job(&self, message: &str) {
        self.shared.lock().next_job_error = Some(message.to_owned());
    }

    /// The next slice download sends part of a gzip stream, then drops the connection.
    pub fn truncate_next_slice(&self) {
        self.shared.lock().truncate_next_slice = true;
    }

    /// The next `times` slice downloads send a spoiled gzip stream (see [`GzipFault`]) with a
    /// matching `Content-Length`.
    pub fn corrupt_next_slices(&self, times: usize, fault: GzipFault) {
        let mut state = self.shared.lock();
        state
            .corrupt_slices
            .extend(std::iter::repeat_n(fault, times));
    }

    /// Slice downloads still to be spoiled by [`FakeKeboola::corrupt_next_slices`].
    pub fn corrupt_slices_pending(&self) -> usize {
        self.shared.lock().corrupt_slices.len()
    }

    /// The project `GET /v2/storage/tokens/verify` says the token belongs to (default
    /// [`FAKE_PROJECT_ID`]).
    pub fn set_project_id(&self, id: u64) {
        self.shared.lock().project_id = id;
    }

    /// Every export request received, in order, with the parameters the fake understood.
    pub fn export_requests(&self) -> Vec<ExportRequest> {
        self.shared.lock().exports.clone()
    }

    /// Requests received for `route`, including refused and fault-injected ones.
    pub fn requests(&self, route: Route) -> usize {
        self.shared.lock().counts.get(&route).copied().unwrap_or(0)
    }

    /// The raw `changedSince` of the last export request (`None` if it had none).
    pub fn last_changed_since(&self) -> Option<String> {
        self.shared.lock().last_changed_since.clone()
    }

    /// Whether any request URL contained the token (it belongs in a header, never in a URL).
    pub fn tokens_seen_in_urls(&self) -> bool {
        self.shared.lock().token_in_url
    }

    /// Whether a manifest or slice request carried the token: real file storage is a cloud bucket
    /// reached through pre-signed URLs, which must never see the Storage token.
    pub fn token_sent_to_file_storage(&self) -> bool {
        self.shared.lock().token_sent_to_files
    }

    /// Where later exports are stored (default [`Storage::Http`]).
    pub fn set_file_storage(&self, storage: Storage) {
        self.shared.lock().storage = storage;
    }

    /// Checks S3 signatures with `secret` instead of the [`FAKE_AWS_SECRET_ACCESS_KEY`] that file
    /// details hand out, so every signed GET fails with `SignatureDoesNotMatch`.
    pub fn expect_aws_secret(&self, secret: &str) {
        self.shared.lock().expected_aws_secret = secret.to_owned();
    }

    /// Every request received outside the Storage API (manifests, slices, S3 and GCS objects).
    pub fn file_storage_requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().file_requests.clone()
    }

    fn add_fault(&self, route: Route, times: usize, kind: FaultKind) {
        if times > 0 {
            self.shared.lock().faults.push(Fault {
                route,
                kind,
                remaining: times,
            });
        }
    }

    fn insert_table(
        &self,
        id: &str,
        columns: Vec<String>,
        primary_key: &[&str],
        description: &str,
        rows: TableRows,
    ) {
        let (bucket_id, name) = id
            .rsplit_once('.')
            .expect("a table id looks like `in.c-shop.orders`");
        if !self.shared.lock().buckets.contains_key(bucket_id) {
            self.add_bucket(bucket_id, "");
        }
        let now = unix_now();
        let table = Table {
            id: id.to_owned(),
            name: name.to_owned(),
            bucket_id: bucket_id.to_owned(),
            columns,
            primary_key: primary_key.iter().map(|k| k.to_string()).collect(),
            description: description.to_owned(),
            column_descriptions: BTreeMap::new(),
            column_base_types: BTreeMap::new(),
            rows,
            created: now,
            last_change: now,
        };
        self.shared.lock().tables.insert(id.to_owned(), table);
    }

    fn with_table<R>(&self, id: &str, change: impl FnOnce(&mut Table) -> R) -> R {
        let mut state = self.shared.lock();
        let table = state
            .tables
            .get_mut(id)
            .unwrap_or_else(|| panic!("unknown table {id}"));
        change(table)
    }
}

impl Drop for FakeKeboola {
    fn drop(&mut self) {
        // Not a graceful shutdown: a client stuck mid-download must not hang the test; and unlike
        // dropping the runtime, this is allowed inside a `#[tokio::test]`.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Table {
    fn stored_row(&self, values: Vec<String>, changed_at: i64) -> StoredRow {
        assert_eq!(
            values.len(),
            self.columns.len(),
            "a row of {} needs one value per column {:?}",
            self.id,
            self.columns
        );
        StoredRow { values, changed_at }
    }

    fn row_count(&self) -> u64 {
        match &self.rows {
            TableRows::Stored(rows) => rows.len() as u64,
            TableRows::Generated(count) => *count,
        }
    }

    /// Selects the rows an export returns, projected onto `columns` (indexes into the table's
    /// columns); `filters` are `(column index, filter)` pairs that every row must match.
    fn export_rows(
        &self,
        since: Option<i64>,
        columns: Vec<usize>,
        limit: Option<u64>,
        filters: &[(usize, WhereFilter)],
    ) -> ExportRows {
        let limit = limit.unwrap_or(u64::MAX);
        match &self.rows {
            TableRows::Stored(rows) => ExportRows::Stored(Arc::new(
                rows.iter()
                    .filter(|row| since.is_none_or(|since| row.changed_at > since))
                    .filter(|row| filters.iter().all(|(i, f)| f.matches(&row.values[*i])))
                    .take(usize::try_from(limit).unwrap_or(usize::MAX))
                    .map(|row| columns.iter().map(|&i| row.values[i].clone()).collect())
                    .collect(),
            )),
            TableRows::Generated(count) => {
                let first = since.map_or(0, |since| {
                    since
                        .saturating_sub(GENERATED_EPOCH)
                        .saturating_add(1)
                        .clamp(0, *count as i64) as u64
                });
                ExportRows::Generated {
                    first,
                    count: (count - first).min(limit),
                    columns: Arc::new(columns),
                }
            }
        }
    }

    /// Uncompressed CSV size, extrapolated from the first rows so listing a big table stays cheap.
    fn data_size_bytes(&self) -> u64 {
        let sample = self.export_rows(None, (0..self.columns.len()).collect(), Some(64), &[]);
        (sample.estimated_size() * self.row_count())
            .checked_div(sample.len())
            .unwrap_or(0)
    }

    fn json(&self, bucket: Option<&Bucket>, include: &Include, base: &str) -> Value {
        let mut table = json!({
            "uri": format!("{base}/v2/storage/tables/{}", self.id),
            "id": self.id,
            "name": self.name,
            "displayName": self.name,
            "transactional": false,
            "primaryKey": self.primary_key,
            "isAlias": false,
            "rowsCount": self.row_count(),
            "dataSizeBytes": self.data_size_bytes(),
            "created": format_time(self.created),
            "lastImportDate": format_time(self.last_change),
            "lastChangeDate": format_time(self.last_change),
            "bucket": {
                "id": self.bucket_id,
                "name": bucket.map_or("", |b| b.name.as_str()),
                "stage": bucket.map_or("", |b| b.stage.as_str()),
                "description": bucket.map_or("", |b| b.description.as_str()),
            },
        });
        if include.columns {
            table["columns"] = json!(self.columns);
        }
        if include.metadata {
            let description = (!self.description.is_empty())
                .then(|| metadata_entry(&self.description, self.last_change));
            table["metadata"] = json!(description.into_iter().collect::<Vec<_>>());
        }
        if include.column_metadata {
            let mut described: Map<String, Value> = Map::new();
            for (column, text) in &self.column_descriptions {
                let entries = described.entry(column.clone()).or_insert_with(|| json!([]));
                if let Value::Array(list) = entries {
                    list.push(metadata_entry(text, self.last_change));
                }
            }
            for (column, base_type) in &self.column_base_types {
                let entries = described.entry(column.clone()).or_insert_with(|| json!([]));
                if let Value::Array(list) = entries {
                    list.push(
                        json!({"id": "2", "key": "KBC.datatype.basetype", "value": base_type,
                        "provider": "storage", "timestamp": format_time(self.last_change)}),
                    );
                }
            }
            // The real service is PHP: an empty associative array is serialised as `[]`, not `{}`.
            table["columnMetadata"] = if described.is_empty() {
                json!([])
            } else {
                Value::Object(described)
            };
        }
        table
    }
}

fn metadata_entry(description: &str, at: i64) -> Value {
    json!({"id": "1", "key": "KBC.description", "value": description, "provider": "user", "timestamp": format_time(at)})
}

impl ExportRows {
    fn len(&self) -> u64 {
        match self {
            ExportRows::Stored(rows) => rows.len() as u64,
            ExportRows::Generated { count, .. } => *count,
        }
    }

    /// Appends row `index` as one CSV line: every value quoted, quotes doubled.
    fn write_row(&self, index: u64, out: &mut Vec<u8>, scratch: &mut String) {
        match self {
            ExportRows::Stored(rows) => {
                for (i, value) in rows[index as usize].iter().enumerate() {
                    push_field(out, value, i == 0);
                }
            }
            ExportRows::Generated { first, columns, .. } => {
                for (i, &column) in columns.iter().enumerate() {
                    generated_value(first + index, column, scratch);
                    push_field(out, scratch, i == 0);
                }
            }
        }
        out.push(b'\n');
    }

    /// Uncompressed CSV size; for generated rows extrapolated from the first ones, since computing
    /// a benchmark table's exact size would mean generating it.
    fn estimated_size(&self) -> u64 {
        let (mut csv, mut scratch) = (Vec::new(), String::new());
        let sample = self.len().min(64);
        (0..sample).for_each(|i| self.write_row(i, &mut csv, &mut scratch));
        (csv.len() as u64 * self.len())
            .checked_div(sample)
            .unwrap_or(0)
    }
}

fn push_field(out: &mut Vec<u8>, value: &str, first: bool) {
    if !first {
        out.push(b',');
    }
    out.push(b'"');
    // Most values hold no quote: copy them whole (the benchmark streams a gigabyte of them).
    if value.contains('"') {
        out.extend_from_slice(value.replace('"', "\"\"").as_bytes());
    } else {
        out.extend_from_slice(value.as_bytes());
    }
    out.push(b'"');
}

fn generated_column_name(column: usize) -> String {
    match column {
        0 => "id".to_owned(),
        c => format!("{}_{c}", ["value", "name", "amount", "updated_at"][c % 4]),
    }
}

/// The value of a generated table's cell: a pure function of its position, so every run and every
/// retried download sees the same data. Some names hold quotes and commas to exercise CSV quoting.
fn generated_value(row: u64, column: usize, out: &mut String) {
    out.clear();
    let _ = match (column, column % 4) {
        (0, _) => write!(out, "{}", row + 1),
        (_, 1) if row.is_multiple_of(97) => write!(out, "name \"{row}\", quoted"),
        (_, 1) => write!(out, "name-{row}"),
        (c, 2) => write!(
            out,
            "{}.{:02}",
            (row * 7919 + c as u64) % 100_000,
            row % 100
        ),
        (_, 3) => write_time(out, GENERATED_EPOCH + row as i64),
        (c, _) => write!(
            out,
            "{}",
            row.wrapping_mul(2_654_435_761).wrapping_add(c as u64) % 1_000_003
        ),
    };
}

/// Produces one slice as gzip chunks, computing rows only as the client reads them.
struct SliceChunks {
    rows: ExportRows,
    next: u64,
    end: u64,
    encoder: Option<GzEncoder<Vec<u8>>>,
    /// Stop after half the rows, leaving the gzip stream unfinished.
    truncate: bool,
    csv: Vec<u8>,
    scratch: String,
}

impl Iterator for SliceChunks {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut encoder = self.encoder.take()?;
        // A truncated slice stops halfway (within one chunk); others run to the end.
        let stop = if self.truncate {
            self.next + (self.end - self.next) / 2
        } else {
            self.end
        };
        loop {
            self.csv.clear();
            while self.next < stop && self.csv.len() < CHUNK_BYTES {
                self.rows
                    .write_row(self.next, &mut self.csv, &mut self.scratch);
                self.next += 1;
            }
            if let Err(error) = encoder.write_all(&self.csv) {
                return Some(Err(error));
            }
            if self.truncate {
                // A sync flush hands over the compressed bytes so far without ending the gzip
                // stream; the caller then breaks the body off.
                return Some(
                    encoder
                        .flush()
                        .map(|()| Bytes::from(std::mem::take(encoder.get_mut()))),
                );
            }
            if self.next >= self.end {
                return Some(encoder.finish().map(Bytes::from));
            }
            // gzip may buffer a whole chunk; an empty frame would only waste a poll.
            if !encoder.get_ref().is_empty() {
                let out = std::mem::take(encoder.get_mut());
                self.encoder = Some(encoder);
                return Some(Ok(Bytes::from(out)));
            }
        }
    }
}

impl FakeState {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Consumes the faults matching `route`: every pending delay, and the first failure.
    fn take_faults(&mut self, route: Route) -> (Vec<Duration>, Option<Response>) {
        let (mut delays, mut failure) = (Vec::new(), None);
        for fault in self
            .faults
            .iter_mut()
            .filter(|f| f.route == route || f.route == Route::Any)
        {
            match fault.kind {
                FaultKind::Delay(delay) => delays.push(delay),
                _ if failure.is_some() => continue,
                FaultKind::Fail(status) => {
                    let message = format!("Injected failure: HTTP {status}");
                    failure =
                        Some(ApiError::new(status, "fake.injectedFailure", message).into_response())
                }
                FaultKind::RateLimit(secs) => {
                    let mut response = ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "storage.tooManyRequests",
                        "Too many requests",
                    )
                    .into_response();
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                    failure = Some(response);
                }
            }
            fault.remaining -= 1;
        }
        self.faults.retain(|f| f.remaining > 0);
        (delays, failure)
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v2/storage/tokens/verify", get(verify_token))
        .route("/v2/storage/buckets", get(list_buckets))
        .route(
            "/v2/storage/buckets/{bucket_id}/tables",
            get(list_bucket_tables),
        )
        .route("/v2/storage/tables", get(list_tables))
        .route("/v2/storage/tables/{table_id}", get(table_detail))
        .route(
            "/v2/storage/tables/{table_id}/export-async",
            post(export_table),
        )
        .route("/v2/storage/jobs/{job_id}", get(job_detail))
        .route("/v2/storage/files/{file_id}", get(file_detail))
        .route("/fake/files/{file_id}/manifest", get(manifest))
        .route("/fake/files/{file_id}/slices/{slice}", get(slice))
        .route(&format!("/{FAKE_S3_BUCKET}/{{*key}}"), get(s3_object))
        .route("/storage/v1/b/{bucket}/o/{object}", get(gcs_object))
        .fallback(|| async {
            ApiError::not_found("fake.routeNotFound", "No such endpoint in the fake")
        })
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), gate))
        .with_state(shared)
}

fn classify(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v2", "storage", "tokens", "verify"] => Some(Route::Verify),
        ["v2", "storage", "buckets"] => Some(Route::Buckets),
        ["v2", "storage", "tables"] | ["v2", "storage", "buckets", _, "tables"] => {
            Some(Route::Tables)
        }
        ["v2", "storage", "tables", _] => Some(Route::Detail),
        ["v2", "storage", "tables", _, "export-async"] => Some(Route::Export),
        ["v2", "storage", "jobs", _] => Some(Route::Job),
        ["v2", "storage", "files", _] => Some(Route::File),
        ["fake", "files", _, "manifest"] => Some(Route::Manifest),
        ["fake", "files", _, "slices", _] => Some(Route::Slice),
        [FAKE_S3_BUCKET, ..] | ["storage", "v1", "b", _, "o", _] => Some(Route::Slice),
        _ => None,
    }
}

/// Counts every request, checks the token on API routes, records the others (file storage, which
/// must never see the token, in a header or anywhere else), then applies injected faults.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let route = classify(request.uri().path());
    let is_api = request.uri().path().starts_with("/v2/");
    let has_token = request
        .headers()
        .get(TOKEN_HEADER)
        .is_some_and(|v| v.as_bytes() == shared.token.as_bytes());
    let (delays, failure) = {
        let mut state = shared.lock();
        if request.uri().to_string().contains(&shared.token) {
            state.token_in_url = true;
        }
        for counted in [Some(Route::Any), route].into_iter().flatten() {
            *state.counts.entry(counted).or_default() += 1;
        }
        if is_api && !has_token {
            let error = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "storage.tokenInvalid",
                "Invalid access token",
            );
            return error.into_response();
        }
        if !is_api {
            let token = shared.token.as_bytes();
            let carries_token = |v: &[u8]| v.windows(token.len()).any(|w| w == token);
            state.token_sent_to_files |= has_token
                || carries_token(request.uri().to_string().as_bytes())
                || request
                    .headers()
                    .values()
                    .any(|v| carries_token(v.as_bytes()));
            let recorded = RecordedRequest {
                method: request.method().to_string(),
                uri: request.uri().to_string(),
                headers: request
                    .headers()
                    .iter()
                    .map(|(name, value)| {
                        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                        (name.as_str().to_owned(), value)
                    })
                    .collect(),
            };
            state.file_requests.push(recorded);
        }
        state.take_faults(route.unwrap_or(Route::Any))
    };
    for delay in delays {
        tokio::time::sleep(delay).await;
    }
    match failure {
        Some(response) => response,
        None => next.run(request).await,
    }
}

/// An error in the real API's JSON shape: `{"error": …, "code": …, "status": "error"}`.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

type ApiResult = Result<Response, ApiError>;

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "storage.validation", message)
    }

    fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.message, "code": self.code, "status": "error"});
        (self.status, Json(body)).into_response()
    }
}

/// Which optional parts of a table a list request asked for with `include=`.
#[derive(Default)]
struct Include {
    columns: bool,
    metadata: bool,
    column_metadata: bool,
}

impl Include {
    const ALL: Include = Include {
        columns: true,
        metadata: true,
        column_metadata: true,
    };

    fn from_query(query: Option<&str>) -> Result<Include, ApiError> {
        let mut include = Include::default();
        for (_, value) in parse_query(query)?
            .iter()
            .filter(|(key, _)| key == "include")
        {
            for part in value.split(',') {
                match part.trim() {
                    "columns" => include.columns = true,
                    "metadata" => include.metadata = true,
                    "columnMetadata" => include.column_metadata = true,
                    _ => {}
                }
            }
        }
        Ok(include)
    }
}

fn parse_query(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("Malformed query string: {e}")))
}

async fn list_buckets(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.lock();
    let buckets: Vec<Value> = state
        .buckets
        .values()
        .map(
            |b| json!({"id": b.id, "name": b.name, "stage": b.stage, "description": b.description}),
        )
        .collect();
    Json(buckets).into_response()
}

async fn list_tables(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> ApiResult {
    tables_json(&shared, None, query.as_deref())
}

async fn list_bucket_tables(
    State(shared): State<Arc<Shared>>,
    Path(bucket_id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    tables_json(&shared, Some(&bucket_id), query.as_deref())
}

fn tables_json(shared: &Shared, bucket_id: Option<&str>, query: Option<&str>) -> ApiResult {
    let include = Include::from_query(query)?;
    let state = shared.lock();
    if let Some(id) = bucket_id.filter(|id| !state.buckets.contains_key(*id)) {
        return Err(ApiError::not_found(
            "storage.buckets.notFound",
            format!("Bucket {id} not found"),
        ));
    }
    let tables: Vec<Value> = state
        .tables
        .values()
        .filter(|t| bucket_id.is_none_or(|id| t.bucket_id == id))
        .map(|t| t.json(state.buckets.get(&t.bucket_id), &include, &shared.base))
        .collect();
    Ok(Json(tables).into_response())
}

fn find_table<'a>(state: &'a FakeState, id: &str) -> Result<&'a Table, ApiError> {
    let message = || format!("The table \"{id}\" was not found");
    state
        .tables
        .get(id)
        .ok_or_else(|| ApiError::not_found("storage.tables.notFound", message()))
}

async fn table_detail(
    State(shared): State<Arc<Shared>>,
    Path(table_id): Path<String>,
) -> ApiResult {
    let state = shared.lock();
    let table = find_table(&state, &table_id)?;
    let bucket = state.buckets.get(&table.bucket_id);
    Ok(Json(table.json(bucket, &Include::ALL, &shared.base)).into_response())
}

#[derive(Default)]
struct ExportParams {
    changed_since: Option<String>,
    gzip: bool,
    columns: Option<Vec<String>>,
    limit: Option<u64>,
    where_filters: Vec<WhereFilter>,
}

impl WhereFilter {
    /// Keboola's meaning: values compared as text, like SQL `IN` (`eq`) and `NOT IN` (`ne`).
    fn matches(&self, value: &str) -> bool {
        let listed = self.values.iter().any(|v| v == value);
        if self.operator == "ne" {
            !listed
        } else {
            listed
        }
    }

    /// Checks the operator as the real service does: `eq` and `ne` work on every backend; the
    /// comparisons are Snowflake-only and need a `dataType`, which the fake does not implement.
    fn checked(mut self) -> Result<WhereFilter, ApiError> {
        if self.operator.is_empty() {
            self.operator = "eq".to_owned();
        }
        match self.operator.as_str() {
            "eq" | "ne" => {}
            "gt" | "ge" | "lt" | "le" => {
                return Err(ApiError::bad_request(format!(
                    "fake: the {} operator is not implemented by the fake",
                    self.operator
                )))
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "Invalid where operator {other:?}: expected eq or ne"
                )))
            }
        }
        if self.column.is_empty() || self.values.is_empty() {
            return Err(ApiError::bad_request(
                "A where filter needs a column and at least one value",
            ));
        }
        Ok(self)
    }

    /// A `whereFilters` entry of a JSON body.
    fn from_json(value: &Value) -> Result<WhereFilter, ApiError> {
        let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        let field = |name: &str| value.get(name).map(text).unwrap_or_default();
        let values = match value.get("values") {
            Some(Value::Array(items)) => items.iter().map(text).collect(),
            Some(other) => vec![text(other)],
            None => Vec::new(),
        };
        WhereFilter {
            column: field("column"),
            operator: field("operator"),
            values,
        }
        .checked()
    }
}

impl ExportParams {
    /// Reads the options from the query string and a form-encoded or JSON body: clients send either.
    fn parse(
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<ExportParams, ApiError> {
        let mut pairs = parse_query(query)?;
        let mut where_filters = Vec::new();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if body.is_empty() {
            // The Python client's plain `requests.post(url)` sends no body at all.
        } else if content_type.is_some_and(|t| t.starts_with("application/json")) {
            let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
                return Err(ApiError::bad_request("The JSON body must be an object"));
            };
            for (key, value) in object {
                if key == "whereFilters" {
                    let Value::Array(filters) = &value else {
                        return Err(ApiError::bad_request("whereFilters must be a list"));
                    };
                    for filter in filters {
                        where_filters.push(WhereFilter::from_json(filter)?);
                    }
                    continue;
                }
                let values = match value {
                    Value::Array(items) => items,
                    other => vec![other],
                };
                let text = |v: Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                pairs.extend(values.into_iter().map(|v| (key.clone(), text(v))));
            }
        } else {
            let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|e| ApiError::bad_request(format!("Malformed form body: {e}")))?;
            pairs.extend(form);
        }
        let mut params = ExportParams {
            where_filters,
            ..ExportParams::default()
        };
        // The older single filter, and `whereFilters[n][field]` as a PHP form encodes the list.
        let mut legacy = WhereFilter {
            column: String::new(),
            operator: String::new(),
            values: Vec::new(),
        };
        let mut indexed: BTreeMap<usize, WhereFilter> = BTreeMap::new();
        for (key, value) in pairs {
            if let Some(rest) = key.strip_prefix("whereFilters[") {
                let Some((n, field)) = rest.split_once("][") else {
                    return Err(ApiError::bad_request(format!("Malformed parameter {key}")));
                };
                let Ok(n) = n.parse::<usize>() else {
                    return Err(ApiError::bad_request(format!("Malformed parameter {key}")));
                };
                let filter = indexed.entry(n).or_insert_with(|| WhereFilter {
                    column: String::new(),
                    operator: String::new(),
                    values: Vec::new(),
                });
                match field.trim_end_matches(']') {
                    "column" => filter.column = value,
                    "operator" => filter.operator = value,
                    "values" | "values][" => filter.values.push(value),
                    _ => {}
                }
                continue;
            }
            match key.as_str() {
                "whereColumn" => legacy.column = value,
                "whereOperator" => legacy.operator = value,
                "whereValues" | "whereValues[]" => legacy.values.push(value),
                "changedSince" => params.changed_since = Some(value),
                "gzip" => params.gzip = matches!(value.as_str(), "1" | "true"),
                "columns" | "columns[]" => {
                    let names = value.split(',').map(str::trim).filter(|c| !c.is_empty());
                    params
                        .columns
                        .get_or_insert_with(Vec::new)
                        .extend(names.map(str::to_owned));
                }
                "limit" => {
                    let limit = value
                        .parse()
                        .map_err(|_| ApiError::bad_request(format!("Invalid limit {value:?}")))?;
                    params.limit = Some(limit);
                }
                _ => {}
            }
        }
        for filter in indexed.into_values() {
            params.where_filters.push(filter.checked()?);
        }
        if !legacy.column.is_empty() {
            params.where_filters.push(legacy.checked()?);
        }
        Ok(params)
    }

    /// The `changedSince` bound in unix seconds: a timestamp or an ISO-8601 date-time (with an
    /// offset, or UTC without) or date.
    fn since(&self) -> Result<Option<i64>, ApiError> {
        let Some(raw) = self
            .changed_since
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        let with_offset = DateTime::parse_from_rfc3339(raw)
            .or_else(|_| DateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%z"))
            .map(|t| t.timestamp());
        let naive = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
            .iter()
            .find_map(|format| NaiveDateTime::parse_from_str(raw, format).ok())
            .or_else(|| {
                NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
            })
            .map(|t| t.and_utc().timestamp());
        raw.parse::<i64>()
            .ok()
            .or(with_offset.ok())
            .or(naive)
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Invalid changedSince {raw:?}: expected a unix timestamp or an ISO-8601 date"
                ))
            })
    }
}

async fn export_table(
    State(shared): State<Arc<Shared>>,
    Path(table_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let params = ExportParams::parse(query.as_deref(), &headers, &body)?;
    let mut state = shared.lock();
    state.last_changed_since = params.changed_since.clone();
    state.exports.push(ExportRequest {
        table_id: table_id.clone(),
        changed_since: params.changed_since.clone(),
        where_filters: params.where_filters.clone(),
    });
    let since = params.since()?;
    let table = find_table(&state, &table_id)?;
    let mut filters = Vec::new();
    for filter in &params.where_filters {
        let Some(i) = table.columns.iter().position(|c| *c == filter.column) else {
            return Err(ApiError::bad_request(format!(
                "Column {} not found in table {table_id}",
                filter.column
            )));
        };
        if matches!(table.rows, TableRows::Generated(_)) {
            return Err(ApiError::bad_request(
                "fake: where filters on a generated table are not implemented",
            ));
        }
        filters.push((i, filter.clone()));
    }
    let mut projection = Vec::new();
    for name in params.columns.as_ref().unwrap_or(&table.columns) {
        let Some(i) = table.columns.iter().position(|c| c == name) else {
            return Err(ApiError::bad_request(format!(
                "Column {name} not found in table {table_id}"
            )));
        };
        projection.push(i);
    }
    let rows = table.export_rows(since, projection, params.limit, &filters);
    let name = format!("{}.csv.gz", table.id);
    let (file_id, job_id, created, slices) =
        (state.next_id(), state.next_id(), unix_now(), state.slices);
    let storage = state.storage.clone();
    state.files.insert(
        file_id,
        ExportFile {
            id: file_id,
            name,
            created,
            rows,
            slices,
            storage,
        },
    );
    let outcome = state.next_job_error.take().map_or(Ok(file_id), Err);
    let where_filters: Vec<Value> = params
        .where_filters
        .iter()
        .map(|f| json!({"column": f.column, "operator": f.operator, "values": f.values}))
        .collect();
    let params = json!({
        "changedSince": params.changed_since, "columns": params.columns, "limit": params.limit,
        "gzip": params.gzip, "whereFilters": where_filters,
    });
    let job = Job {
        id: job_id,
        table_id,
        created,
        polls: 0,
        params,
        outcome,
    };
    let response = job.json(state.job_polls, &shared.base);
    state.jobs.insert(job_id, job);
    Ok((StatusCode::ACCEPTED, Json(response)).into_response())
}

impl Job {
    fn json(&self, polls_to_finish: usize, base: &str) -> Value {
        let finished = self.polls >= polls_to_finish;
        let status = match (&self.outcome, finished, self.polls) {
            (Ok(_), true, _) => "success",
            (Err(_), true, _) => "error",
            (_, false, 0) => "waiting",
            (_, false, _) => "processing",
        };
        let mut job = json!({
            "id": self.id,
            "status": status,
            "url": format!("{base}/v2/storage/jobs/{}", self.id),
            "tableId": self.table_id,
            "operationName": "tableExport",
            "operationParams": self.params,
            "createdTime": format_time(self.created),
            "startTime": (self.polls > 0).then(|| format_time(self.created)),
            "endTime": finished.then(|| format_time(self.created)),
            "runId": null,
            "results": null,
        });
        match (&self.outcome, finished) {
            (Ok(file_id), true) => {
                job["results"] = json!({"file": {"id": file_id}, "cached": false})
            }
            (Err(message), true) => {
                let exception_id = format!("fake-{}", self.id);
                job["error"] = json!({"code": "storage.tableExportFailed", "message": message, "exceptionId": exception_id});
            }
            (_, false) => {}
        }
        job
    }
}

async fn job_detail(State(shared): State<Arc<Shared>>, Path(job_id): Path<String>) -> ApiResult {
    let mut state = shared.lock();
    let polls_to_finish = state.job_polls;
    let Some(job) = job_id.parse().ok().and_then(|id| state.jobs.get_mut(&id)) else {
        return Err(ApiError::not_found(
            "storage.jobs.notFound",
            format!("Job {job_id} not found"),
        ));
    };
    job.polls += 1;
    Ok(Json(job.json(polls_to_finish, &shared.base)).into_response())
}

fn find_file<'a>(state: &'a FakeState, id: &str) -> Result<&'a ExportFile, ApiError> {
    let file = id.parse().ok().and_then(|id: u64| state.files.get(&id));
    file.ok_or_else(|| {
        ApiError::not_found("storage.files.notFound", format!("File {id} not found"))
    })
}

async fn file_detail(State(shared): State<Arc<Shared>>, Path(file_id): Path<String>) -> ApiResult {
    let state = shared.lock();
    let file = find_file(&state, &file_id)?;
    let mut detail = json!({
        "id": file.id,
        "name": file.name,
        "created": format_time(file.created),
        "isPublic": false,
        "isSliced": true,
        "isEncrypted": true,
        "sizeBytes": file.rows.estimated_size(),
        "provider": "fake-http",
        "tags": ["table-export"],
        "url": format!("{}/fake/files/{}/manifest?{}", shared.base, file.id, presigned_query()),
    });
    match &file.storage {
        Storage::Http => {}
        Storage::S3 { region } => {
            // Federation-token credentials last 12 hours (the Storage API documentation).
            let expiration = DateTime::from_timestamp(unix_now() + 12 * 3600, 0)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, false));
            detail["provider"] = json!("aws");
            detail["region"] = json!(region);
            detail["s3Path"] = json!({"bucket": FAKE_S3_BUCKET, "key": file.manifest_key()});
            detail["credentials"] = json!({
                "AccessKeyId": FAKE_AWS_ACCESS_KEY_ID,
                "SecretAccessKey": FAKE_AWS_SECRET_ACCESS_KEY,
                "SessionToken": FAKE_AWS_SESSION_TOKEN,
                "Expiration": expiration,
            });
        }
        Storage::Gcs => {
            detail["provider"] = json!("gcp");
            detail["region"] = json!("us-east1");
            detail["gcsPath"] = json!({"bucket": FAKE_GCS_BUCKET, "key": file.manifest_key()});
            detail["gcsCredentials"] = json!({
                "access_token": FAKE_GCS_ACCESS_TOKEN,
                "token_type": "Bearer",
                "expires_in": 3599,
                "projectId": "fake-keboola-project",
            });
        }
    }
    Ok(Json(detail).into_response())
}

async fn manifest(
    State(shared): State<Arc<Shared>>,
    Path(file_id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    if let Some(refused) = check_presigned(query.as_deref()) {
        return Ok(refused);
    }
    let state = shared.lock();
    let file = find_file(&state, &file_id)?;
    let entries: Vec<Value> = (0..file.slices)
        .map(|n| {
            let url = match &file.storage {
                Storage::Http => format!(
                    "{}/fake/files/{}/slices/{n}.csv.gz?{}",
                    shared.base,
                    file.id,
                    presigned_query()
                ),
                Storage::S3 { .. } => format!("s3://{FAKE_S3_BUCKET}/{}", file.slice_key(n)),
                Storage::Gcs => format!("gs://{FAKE_GCS_BUCKET}/{}", file.slice_key(n)),
            };
            json!({"url": url, "mandatory": true})
        })
        .collect();
    Ok(Json(json!({"entries": entries})).into_response())
}

async fn slice(
    State(shared): State<Arc<Shared>>,
    Path((file_id, slice)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    if let Some(refused) = check_presigned(query.as_deref()) {
        return Ok(refused);
    }
    let index = slice
        .strip_suffix(".csv.gz")
        .and_then(|n| n.parse::<u64>().ok());
    let rows = {
        let state = shared.lock();
        find_file(&state, &file_id)?;
        index.and_then(|index| slice_rows(&state, &file_id, index, |_| true))
    };
    let Some((rows, range)) = rows else {
        return Err(ApiError::not_found(
            "fake.sliceNotFound",
            format!("No slice {slice} in file {file_id}"),
        ));
    };
    Ok(slice_response(&shared, rows, range))
}

/// The rows of slice `index` of file `file_id`, when the file exists, is stored where
/// `stored_in` accepts, and has that slice.
fn slice_rows(
    state: &FakeState,
    file_id: &str,
    index: u64,
    stored_in: impl Fn(&Storage) -> bool,
) -> Option<(ExportRows, Range<u64>)> {
    let file = find_file(state, file_id)
        .ok()
        .filter(|f| stored_in(&f.storage))?;
    let slices = file.slices as u64;
    if index >= slices {
        return None;
    }
    let total = file.rows.len();
    let range: Range<u64> = total * index / slices..total * (index + 1) / slices;
    Some((file.rows.clone(), range))
}

/// Streams the gzip'd CSV of `rows[range]`, cut off halfway if a truncation was asked for, or
/// sends it spoiled (whole, with its length) if a [`GzipFault`] was.
fn slice_response(shared: &Shared, rows: ExportRows, range: Range<u64>) -> Response {
    let (truncate, corrupt) = {
        let mut state = shared.lock();
        match state.corrupt_slices.pop_front() {
            Some(fault) => (false, Some(fault)),
            None => (std::mem::take(&mut state.truncate_next_slice), None),
        }
    };
    let chunks = SliceChunks {
        rows,
        next: range.start,
        end: range.end,
        encoder: Some(GzEncoder::new(Vec::new(), Compression::fast())),
        truncate,
        csv: Vec::with_capacity(CHUNK_BYTES + 4096),
        scratch: String::new(),
    };
    if let Some(fault) = corrupt {
        let mut gzip = Vec::new();
        for chunk in chunks {
            match chunk {
                Ok(bytes) => gzip.extend_from_slice(&bytes),
                Err(e) => {
                    return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                }
            }
        }
        match fault {
            GzipFault::Truncated => gzip.truncate(gzip.len() * 2 / 3),
            GzipFault::BadChecksum => {
                // The trailer is CRC-32 then length, 4 bytes each, little-endian.
                let crc = gzip.len() - 8;
                gzip[crc] ^= 0xff;
            }
        }
        // A complete body: hyper sends it with a Content-Length that matches it.
        return (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from(gzip),
        )
            .into_response();
    }
    // A stream body has no Content-Length: hyper sends it chunked, as the size is unknown up front.
    let chunks = futures_util::stream::iter(chunks);
    let body = if truncate {
        // An error ends the body without its last chunk, so hyper drops the connection. The pause
        // first lets the status line and the partial data reach the client: an error right away
        // would abort before anything is flushed, which is a different fault (a failed request).
        let cut = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "fake: truncated slice",
            ))
        });
        Body::from_stream(chunks.chain(cut))
    } else {
        Body::from_stream(chunks)
    };
    ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
}

/// The query of a pre-signed S3 URL (SigV4 query authentication), with the fake signature and
/// session token.
fn presigned_query() -> String {
    let encoded = |v: &str| {
        serde_urlencoded::to_string([("v", v)]).map_or_else(|_| v.to_owned(), |p| p[2..].to_owned())
    };
    format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date=20260101T000000Z\
         &X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token={}&X-Amz-Signature={}",
        encoded("ASIAFAKEPRESIGNEDKEY/20260101/us-east-1/s3/aws4_request"),
        encoded(FAKE_PRESIGNED_SECURITY_TOKEN),
        FAKE_PRESIGNED_SIGNATURE
    )
}

/// S3's refusal of a GET whose pre-signed query is missing or altered: the client must use the
/// URL exactly as it was handed out.
fn check_presigned(query: Option<&str>) -> Option<Response> {
    let pairs = parse_query(query).unwrap_or_default();
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let signed = value("X-Amz-Signature") == Some(FAKE_PRESIGNED_SIGNATURE)
        && value("X-Amz-Security-Token") == Some(FAKE_PRESIGNED_SECURITY_TOKEN);
    (!signed).then(|| {
        s3_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters",
            "",
        )
    })
}

/// `GET /v2/storage/tokens/verify`: the token's detail, as the real service answers it: its
/// project (`owner`) and, like the real one, the token itself.
async fn verify_token(State(shared): State<Arc<Shared>>) -> Response {
    let project_id = shared.lock().project_id;
    Json(json!({
        "id": "56789",
        "created": format_time(GENERATED_EPOCH),
        "description": "fake token",
        "uri": format!("{}/v2/storage/tokens/56789", shared.base),
        "isMasterToken": false,
        "canManageBuckets": false,
        "canReadAllFileUploads": false,
        "expires": null,
        "isExpired": false,
        "isDisabled": false,
        "token": shared.token,
        "bucketPermissions": {},
        "owner": {
            "id": project_id.to_string(),
            "name": "Fake project",
            "type": "production",
            "region": "us-east-1",
            "defaultBackend": "snowflake",
            "fileStorageProvider": "aws",
        },
    }))
    .into_response()
}

/// `GET /{bucket}/{key}`, path-style S3: a slice, for a request signed with the fake credentials.
async fn s3_object(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Response {
    if let Some(refused) = check_s3_signature(&shared, &method, &uri, &headers) {
        return refused;
    }
    let rows = parse_slice_key(&key).and_then(|(file_id, index)| {
        let stored_in_s3 = |s: &Storage| matches!(s, Storage::S3 { .. });
        slice_rows(&shared.lock(), &file_id, index, stored_in_s3)
    });
    match rows {
        Some((rows, range)) => slice_response(&shared, rows, range),
        None => s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
            "",
        ),
    }
}

/// Checks a request as S3 does with SigV4 header authentication: the credential scope, the session
/// token, the date, that every `x-amz-*` header is signed, then the signature itself, recomputed
/// from the request as received (method, raw path, query, signed headers' values). Returns S3's
/// refusal when a check fails.
fn check_s3_signature(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<Response> {
    let (region, secret) = {
        let state = shared.lock();
        let Storage::S3 { region } = &state.storage else {
            return Some(s3_error(
                StatusCode::NOT_FOUND,
                "NoSuchBucket",
                "The specified bucket does not exist",
                "",
            ));
        };
        (region.clone(), state.expected_aws_secret.clone())
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let malformed = |message: &str| {
        s3_error(
            StatusCode::BAD_REQUEST,
            "AuthorizationHeaderMalformed",
            message,
            "",
        )
    };
    let Some(authorization) = header("authorization") else {
        return Some(s3_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Access Denied",
            "",
        ));
    };
    let Some(fields) = authorization.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Some(malformed("Unsupported Authorization Type"));
    };
    let field = |name: &str| {
        fields
            .split(',')
            .filter_map(|part| part.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    };
    let (Some(credential), Some(signed), Some(signature)) = (
        field("Credential"),
        field("SignedHeaders"),
        field("Signature"),
    ) else {
        return Some(malformed(
            "The authorization header is malformed; it needs Credential, SignedHeaders and Signature",
        ));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, scope_region, "s3", "aws4_request"] = scope.as_slice() else {
        return Some(malformed(
            "The authorization header is malformed; the Credential is mal-formed",
        ));
    };
    if *key_id != FAKE_AWS_ACCESS_KEY_ID {
        return Some(s3_error(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            "",
        ));
    }
    if *scope_region != region {
        return Some(malformed(&format!(
            "The authorization header is malformed; the region '{scope_region}' is wrong; \
             expecting '{region}'"
        )));
    }
    if header("x-amz-security-token") != Some(FAKE_AWS_SESSION_TOKEN) {
        return Some(s3_error(
            StatusCode::FORBIDDEN,
            "InvalidToken",
            "The provided token is malformed or otherwise invalid.",
            "",
        ));
    }
    let Some(payload_hash) = header("x-amz-content-sha256") else {
        return Some(s3_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "Missing required header for this request: x-amz-content-sha256",
            "",
        ));
    };
    let Some(amz_date) = header("x-amz-date") else {
        return Some(s3_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "AWS authentication requires a valid Date or x-amz-date header",
            "",
        ));
    };
    if !amz_date.starts_with(date) {
        return Some(malformed(
            "The authorization header is malformed; Invalid credential date. Date is not the \
             same as X-Amz-Date.",
        ));
    }
    let signed_at =
        NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ").map(|t| t.and_utc().timestamp());
    if signed_at.map_or(true, |t| (unix_now() - t).abs() > 15 * 60) {
        return Some(s3_error(
            StatusCode::FORBIDDEN,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            "",
        ));
    }
    let signed_names: Vec<&str> = signed.split(';').collect();
    let unsigned = headers
        .keys()
        .map(|name| name.as_str())
        .any(|name| name.starts_with("x-amz-") && !signed_names.contains(&name));
    if !signed_names.contains(&"host") || unsigned {
        return Some(s3_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "There were headers present in the request which were not signed",
            "",
        ));
    }
    // Path-style: the host is this server; a client signing another host has built a wrong URL.
    let authority = shared
        .base
        .split_once("://")
        .map_or(shared.base.as_str(), |(_, a)| a);
    if header("host") != Some(authority) {
        return Some(s3_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "fake: the Host header does not name this endpoint",
            "",
        ));
    }
    let values: Vec<(&str, String)> = signed_names
        .iter()
        .map(|name| {
            let all: Vec<&str> = headers
                .get_all(*name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (*name, all.join(","))
        })
        .collect();
    let pairs: Vec<(&str, &str)> = values.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut query: Vec<(&str, &str)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let request = sigv4::Request {
        method: method.as_str(),
        path: uri.path(),
        query: &query,
        headers: &pairs,
        payload_hash,
    };
    let signer = sigv4::Signer {
        access_key_id: FAKE_AWS_ACCESS_KEY_ID,
        secret_access_key: &secret,
        region: &region,
        service: "s3",
    };
    let (canonical, _) = sigv4::canonical_request(&request);
    let scope = format!("{date}/{region}/s3/aws4_request");
    let string_to_sign = sigv4::string_to_sign(amz_date, &scope, &canonical);
    if sigv4::signature(&signer, amz_date, &string_to_sign) != signature {
        // Like S3, the error shows what was signed: the canonical request, session token and all.
        // A client must never pass such a body on.
        let extra = format!(
            "<AWSAccessKeyId>{FAKE_AWS_ACCESS_KEY_ID}</AWSAccessKeyId><StringToSign>{}</StringToSign>\
             <SignatureProvided>{}</SignatureProvided><CanonicalRequest>{}</CanonicalRequest>",
            xml_escape(&string_to_sign),
            xml_escape(signature),
            xml_escape(&canonical)
        );
        return Some(s3_error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your key and signing method.",
            &extra,
        ));
    }
    None
}

/// An S3 error document.
fn s3_error(status: StatusCode, code: &str, message: &str, extra: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message>\
         {extra}<RequestId>FAKE0000</RequestId></Error>",
        xml_escape(message)
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `GET /storage/v1/b/{bucket}/o/{object}?alt=media`, Google's JSON API download: a slice, for a
/// request with the fake bearer token.
async fn gcs_object(
    State(shared): State<Arc<Shared>>,
    Path((bucket, object)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let is_gcs = shared.lock().storage == Storage::Gcs;
    if !is_gcs || bucket != FAKE_GCS_BUCKET {
        return gcs_error(
            StatusCode::NOT_FOUND,
            "notFound",
            "The specified bucket does not exist.",
        );
    }
    let bearer = format!("Bearer {FAKE_GCS_ACCESS_TOKEN}");
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == bearer.as_bytes());
    if !authorized {
        return gcs_error(StatusCode::UNAUTHORIZED, "authError", "Invalid Credentials");
    }
    let media = parse_query(query.as_deref())
        .is_ok_and(|pairs| pairs.iter().any(|(k, v)| k == "alt" && v == "media"));
    if !media {
        return gcs_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "fake: only object downloads (alt=media) are served",
        );
    }
    let rows = parse_slice_key(&object).and_then(|(file_id, index)| {
        slice_rows(&shared.lock(), &file_id, index, |s| *s == Storage::Gcs)
    });
    match rows {
        Some((rows, range)) => slice_response(&shared, rows, range),
        None => gcs_error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("No such object: {bucket}/{object}"),
        ),
    }
}

/// An error in the JSON API's shape.
fn gcs_error(status: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"error": {
        "code": status.as_u16(),
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}],
    }});
    (status, Json(body)).into_response()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Keboola's timestamp format, e.g. `2026-11-20T10:00:00+0000`.
fn format_time(unix_seconds: i64) -> String {
    let mut out = String::new();
    let _ = write_time(&mut out, unix_seconds);
    out
}

/// Writes a UTC time in Keboola's format; by hand, as chrono's `format` parses its pattern on
/// every call, which dominated generating benchmark rows.
fn write_time(out: &mut String, unix_seconds: i64) -> std::fmt::Result {
    let Some(t) = DateTime::from_timestamp(unix_seconds, 0) else {
        return Ok(());
    };
    let (date, time) = (t.date_naive(), t.time());
    write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+0000",
        date.year(),
        date.month(),
        date.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
}

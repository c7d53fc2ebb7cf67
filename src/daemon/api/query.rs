//! `POST /api/query`: one read-only SELECT on analytics.duckdb, sandboxed and bounded (DESIGN.md
//! §10, docs/security.md).
//!
//! Layers, each enough on its own for what it guards:
//! 1. The SQL must be exactly one SELECT: DuckDB's own parser serializes it (`json_serialize_sql`
//!    refuses anything else), so COPY, ATTACH, INSTALL, SET, PRAGMA… never reach execution.
//! 2. Every relation it names must be a table or transform the caller may read (CTE names resolved
//!    per scope, see [`crate::spec::sql`]); a query the parser walk cannot resolve with certainty,
//!    catalogue listings (`SHOW TABLES`) and introspection functions (`current_setting`) are
//!    refused to non-admins; table functions other than a few pure generators (`range`, `unnest`…)
//!    are refused, since `query('…')` would hide SQL from this check.
//! 3. It runs on a fresh connection whose configuration is locked with external access disabled:
//!    no file, network, ATTACH, INSTALL or SET; only the Parquet of the caller's tables is
//!    re-opened (`allowed_paths`/`allowed_directories`).
//! 4. It runs in a process of its own (`pipeline daemon --query-worker`, [`worker_main`]) with a
//!    hard memory limit (`RLIMIT_DATA` = `server.query_memory_limit_mb`), a CPU-time limit and an
//!    alarm, and is killed after `server.query_timeout_seconds`. DuckDB's `memory_limit` alone
//!    does not bound a scalar function that builds one huge string, and its interrupt is not
//!    checked inside one; a killed process frees everything at once. Rows and bytes of the answer
//!    are capped while rows stream (`query_max_rows`, `query_max_bytes`), and concurrent queries
//!    are capped in total and per token (429, [`crate::daemon::limits::QueryGate`]).
//!
//! The daemon parses and authorises; the query process only opens the sandbox and fetches. It
//! reads a [`Job`] (JSON) on stdin and writes one [`Outcome`] line, then the answer's JSON text
//! without its closing brace, to which the daemon adds the time it took.

use super::catalog::readable;
use super::{ApiError, ApiResult, AppState, Auth};
use crate::daemon::limits::{Full, Host, Limits, QuerySlot};
use crate::quote;
use crate::registry::registered::Registered;
use crate::spec::model::QueryMode;
use crate::spec::sql::{introspection, Reads, SqlParser, PURE_TABLE_FUNCTIONS};
use crate::state::auth::{Caller, ADMIN_GROUP};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use duckdb::Connection;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(serde::Deserialize)]
pub struct QueryRequest {
    sql: String,
    /// At most `server.query_max_rows`.
    max_rows: Option<u64>,
}

/// Parses `sql` with DuckDB and checks it is exactly one SELECT; returns what it reads.
fn parse(sql: &str) -> ApiResult<Reads> {
    let parser = SqlParser::new().map_err(ApiError::internal)?;
    parser.parse_select(sql).map_err(|e| {
        ApiError::bad_request(if e.message.starts_with("only a SELECT") {
            "only a SELECT query is allowed here (no COPY, ATTACH, INSTALL, SET, PRAGMA, DDL or DML)"
                .to_string()
        } else if e.message.starts_with("expected exactly one") {
            format!("send exactly one SELECT statement ({})", e.message)
        } else {
            format!("the query does not parse: {}", e.message)
        })
    })
}

/// Refuses relations and functions the caller may not use. Admins may read every relation and use
/// the introspection forms; table functions other than pure generators are refused to everyone.
fn authorize(reads: &Reads, reg: &Registered, caller: &Caller) -> ApiResult<()> {
    let admin = caller.groups.iter().any(|g| g == ADMIN_GROUP);
    for f in &reads.functions {
        if !PURE_TABLE_FUNCTIONS.contains(&f.as_str()) {
            let catalogue = f.starts_with("duckdb_") || f.starts_with("pragma_");
            return Err(ApiError::forbidden(format!(
                "table function `{f}` is not allowed in API queries (only {}){}",
                PURE_TABLE_FUNCTIONS.join(", "),
                if catalogue {
                    "; GET /api/tables lists the tables you can read, with their columns"
                } else {
                    ""
                }
            )));
        }
    }
    if admin {
        return Ok(());
    }
    // Fail closed: a query whose reads cannot all be named is not checked piecemeal.
    if let Some(why) = reads.uncertain.first() {
        return Err(ApiError::forbidden(format!(
            "the access check cannot tell with certainty what this query reads ({why}); \
             write it with plain table names, joins and subqueries, or ask an admin to run it"
        )));
    }
    if let Some(listing) = reads.listings.first() {
        return Err(ApiError::forbidden(format!(
            "`{listing}` lists the whole catalogue, which only admins may do; GET /api/tables \
             lists the tables you can read, and GET /api/tables/{{name}} their columns"
        )));
    }
    for f in &reads.scalar_functions {
        if let Some(why) = introspection(f) {
            return Err(ApiError::forbidden(format!(
                "`{f}()` is refused in API queries: it {why}; only admins may call it"
            )));
        }
    }
    let ok = readable(reg, caller);
    for r in &reads.tables {
        let lower = r.name.to_lowercase();
        let (catalog, schema) = (r.catalog.to_lowercase(), r.schema.to_lowercase());
        let in_analytics = matches!(
            (catalog.as_str(), schema.as_str()),
            ("" | "analytics", "" | "main") | ("", "analytics")
        );
        if in_analytics && ok.contains(&lower) {
            continue;
        }
        if in_analytics {
            if let Some(t) = reg
                .tables
                .values()
                .find(|t| t.name.eq_ignore_ascii_case(&r.name))
            {
                return Err(super::forbidden_table(t, caller));
            }
            if let Some((name, t)) = reg
                .transforms
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&r.name))
            {
                return Err(ApiError::forbidden(match t.inputs_uncertain.first() {
                    Some(why) => format!(
                        "transform `{name}` is readable only by admins: the tables it reads \
                         cannot be determined with certainty ({why})"
                    ),
                    None => format!(
                        "transform `{name}` reads tables you ({}) may not read",
                        caller.user
                    ),
                }));
            }
        }
        return Err(ApiError::forbidden(format!(
            "`{}` is not a table you may query; GET /api/tables lists those you can",
            r.written()
        )));
    }
    Ok(())
}

/// The Parquet files and directories of the local tables the caller may read.
fn allowed_data(
    reg: &Registered,
    caller: &Caller,
    extracts: &Path,
) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for t in reg.tables.values().filter(|t| caller.may_read(&t.access)) {
        if t.query_mode() == QueryMode::Remote {
            continue;
        }
        let data = extracts.join(&t.source).join("data");
        files.push(data.join(format!("{}.parquet", t.name)));
        dirs.push(data.join(&t.name));
    }
    (files, dirs)
}

fn list(paths: &[PathBuf]) -> String {
    let items: Vec<String> = paths.iter().map(|p| quote::path(p)).collect();
    format!("[{}]", items.join(", "))
}

/// DuckDB's share of a query process's memory limit: what DuckDB tracks (hash tables, sorts,
/// buffered results) errs cleanly at this; the rest is room for what it does not track (strings
/// built inside a function, the Arrow copy of a result chunk) and the answer being built.
fn duckdb_memory_mb(process_mb: u64) -> u64 {
    (process_mb * 3 / 4).max(32)
}

/// Opens the locked-down connection; also returns the attachments that failed (for the log).
fn sandbox(job: &Job) -> Result<(Connection, Vec<String>), String> {
    let conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
    crate::duck::retry_locked(crate::duck::LOCK_RETRY, || {
        conn.execute_batch(&format!(
            "SET TimeZone = 'UTC'; ATTACH {} AS analytics (READ_ONLY); USE analytics;",
            quote::path(&job.analytics)
        ))
    })
    .map_err(|e| format!("cannot open analytics.duckdb: {e}"))?;
    let mut problems = Vec::new();
    if !job.remote_sources.is_empty() {
        let policy = crate::extract_db::RemotePolicy {
            extensions: job.extensions.clone(),
            token_envs: job.token_envs.clone(),
            store: crate::extensions::ExtensionStore {
                directory: job.extension_directory.clone(),
                repository: job.extension_repository.clone(),
            },
        };
        let list = crate::analytics::attach::read(&conn, Some("analytics")).unwrap_or_default();
        let list: Vec<_> = list
            .into_iter()
            .filter(|a| job.remote_sources.contains(&a.source))
            .collect();
        problems = crate::analytics::attach::attach_all(&conn, &list, &policy);
    }
    conn.execute_batch(&format!(
        "SET allowed_paths = {}; SET allowed_directories = {};
         SET autoinstall_known_extensions = false; SET autoload_known_extensions = false;
         SET memory_limit = '{}MiB'; SET threads = {}; SET temp_directory = '';
         SET enable_external_access = false; SET lock_configuration = true;",
        list(&job.files),
        list(&job.dirs),
        duckdb_memory_mb(job.process_memory_mb),
        job.threads,
    ))
    .map_err(|e| format!("cannot set up the query sandbox: {e}"))?;
    Ok((conn, problems))
}

/// Room kept in `query_max_bytes` for the answer's fields after the rows.
const TAIL_BYTES: usize = 256;

/// Runs `sql` and writes the answer's JSON text without its closing brace: columns, then rows
/// until the query ends, `max_rows` rows were written, or the next row would take the answer
/// past `max_bytes`. The query is executed streaming, so stopping early also stops the work.
fn fetch(
    conn: &Connection,
    sql: &str,
    max_rows: usize,
    max_bytes: usize,
) -> Result<Vec<u8>, duckdb::Error> {
    let mut stmt = conn.prepare(sql)?;
    // `stream_arrow` executes the statement streaming; its iterator would panic on a failed
    // fetch (an interrupt, DuckDB's memory limit), so the rows are read through `raw_query`,
    // which reads the same result and returns errors.
    let _ = stmt.stream_arrow([])?;
    let mut rows = stmt.raw_query();
    let (names, types): (Vec<String>, Vec<String>) = match rows.as_ref() {
        Some(s) => (
            s.column_names(),
            (0..s.column_count())
                .map(|i| format!("{}", s.column_type(i)))
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let columns: Vec<Value> = names
        .iter()
        .zip(&types)
        .map(|(n, t)| json!({"name": n, "type": t}))
        .collect();
    let mut out = b"{\"columns\":".to_vec();
    serde_json::to_writer(&mut out, &columns)
        .map_err(|e| duckdb::Error::ToSqlConversionFailure(e.into()))?;
    out.extend_from_slice(b",\"rows\":[");
    let limit = max_bytes.saturating_sub(TAIL_BYTES);
    let (mut count, mut cut) = (0usize, None);
    while let Some(row) = rows.next()? {
        if count == max_rows {
            cut = Some("max_rows");
            break;
        }
        let mark = out.len();
        // A long text is measured where it lies, before it is copied and escaped: a value of
        // gigabytes is never turned into JSON.
        let text_bytes: usize = (0..names.len())
            .map(|i| match row.get_ref(i) {
                Ok(duckdb::types::ValueRef::Text(t)) => t.len(),
                _ => 0,
            })
            .sum();
        if mark + text_bytes > limit {
            cut = Some("max_bytes");
            break;
        }
        let values: Vec<Value> = (0..names.len())
            .map(|i| {
                row.get::<_, duckdb::types::Value>(i)
                    .map(|v| crate::value_json::json(&v))
            })
            .collect::<Result<_, _>>()?;
        if count > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &values)
            .map_err(|e| duckdb::Error::ToSqlConversionFailure(e.into()))?;
        if out.len() > limit {
            out.truncate(mark);
            cut = Some("max_bytes");
            break;
        }
        count += 1;
    }
    let tail = json!({
        "row_count": count,
        "truncated": cut.is_some(),
        "truncated_by": cut,
        "max_rows": max_rows,
        "max_bytes": max_bytes,
    })
    .to_string();
    // `{"row_count":…}` → `],"row_count":…` (the daemon closes the object).
    out.extend_from_slice(b"],");
    out.extend_from_slice(&tail.as_bytes()[1..tail.len() - 1]);
    Ok(out)
}

/// Maps DuckDB's refusal of a sandboxed operation to 403, its memory limit to 400 `memory_limit`, a
/// problem with the query itself (it does not bind, a value does not convert…) to 400 with DuckDB's
/// explanation, since that is about the caller's own SQL; anything else (a file that cannot be read,
/// an internal error) is the daemon's problem: 500, logged, not shown.
fn query_error(e: duckdb::Error) -> ApiError {
    let text = e.to_string();
    if text.contains("Permission Error") || text.contains("disabled by configuration") {
        ApiError::forbidden(format!("refused by the query sandbox: {text}"))
    } else if text.contains("Out of Memory") || text.contains("bad_alloc") {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "memory_limit",
            format!(
                "the query needs more memory than server.query_memory_limit_mb allows; narrow it \
                 ({text})"
            ),
        )
    } else if about_the_query(&text) {
        ApiError::bad_request(format!("query failed: {text}"))
    } else {
        ApiError::internal(format!("query failed: {text}"))
    }
}

/// DuckDB's error classes that describe the SQL or its values, not the engine or the files.
fn about_the_query(text: &str) -> bool {
    const CLASSES: &[&str] = &[
        "Binder Error",
        "Parser Error",
        "Conversion Error",
        "Invalid Input Error",
        "Out of Range Error",
        "Catalog Error",
        "Constraint Error",
        "Not implemented Error",
        "Syntax Error",
        "Invalid type Error",
        "Mismatch Type Error",
        "Interrupted",
        "Divide by zero",
    ];
    CLASSES.iter().any(|c| text.contains(c))
}

/// What the daemon hands a query process (JSON on its stdin).
#[derive(serde::Serialize, serde::Deserialize)]
struct Job {
    sql: String,
    analytics: PathBuf,
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    remote_sources: BTreeSet<String>,
    extensions: Vec<String>,
    token_envs: Vec<String>,
    /// The instance's extension directory and repository (remote tables load their extension).
    extension_directory: Option<PathBuf>,
    extension_repository: Option<String>,
    /// The process's hard limit; DuckDB gets [`duckdb_memory_mb`] of it.
    process_memory_mb: u64,
    threads: u64,
    max_rows: usize,
    max_bytes: usize,
}

/// The first line a query process writes. An answer follows it when `status` is 200.
#[derive(serde::Serialize, serde::Deserialize)]
struct Outcome {
    status: u16,
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
    /// Attachments that failed (logged by the daemon).
    #[serde(default)]
    warnings: Vec<String>,
}

/// A job is a SELECT (at most the request body limit) and a few lists of paths.
const MAX_JOB_BYTES: u64 = 64 * 1024 * 1024;

/// `pipeline daemon --query-worker`: runs the [`Job`] on stdin, writes the [`Outcome`] line and
/// the answer to stdout. Started by the daemon only, with its limits already in place.
pub fn worker_main() -> std::process::ExitCode {
    use std::io::{Read, Write};
    let mut input = Vec::new();
    let job: Result<Job, String> = std::io::stdin()
        .take(MAX_JOB_BYTES)
        .read_to_end(&mut input)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice(&input).map_err(|e| e.to_string()));
    let (outcome, body) = match job {
        Err(e) => (
            failure(ApiError::internal(format!("bad job: {e}"))),
            Vec::new(),
        ),
        Ok(job) => match sandbox(&job) {
            Err(e) => (failure(ApiError::internal(e)), Vec::new()),
            Ok((conn, warnings)) => match fetch(&conn, &job.sql, job.max_rows, job.max_bytes) {
                Ok(body) => (
                    Outcome {
                        status: 200,
                        error: String::new(),
                        message: String::new(),
                        warnings,
                    },
                    body,
                ),
                Err(e) => (
                    Outcome {
                        warnings,
                        ..failure(query_error(e))
                    },
                    Vec::new(),
                ),
            },
        },
    };
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut out, &outcome)
        .map_err(std::io::Error::from)
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.write_all(&body))
        .and_then(|_| out.flush());
    match written {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}

/// The outcome line of a failure. An internal error's detail goes to the daemon, which logs it and
/// answers generically ([`reported`]).
fn failure(e: ApiError) -> Outcome {
    Outcome {
        status: e.status.as_u16(),
        error: e.code.to_string(),
        message: e.detail().to_string(),
        warnings: Vec::new(),
    }
}

/// An error a query process reported, as the API answers it: what it says of the caller's query
/// is passed on; anything else is internal.
fn reported(o: Outcome) -> ApiError {
    let code = match o.error.as_str() {
        "forbidden" => "forbidden",
        "memory_limit" => "memory_limit",
        "bad_request" => "bad_request",
        _ => "internal",
    };
    match StatusCode::from_u16(o.status) {
        Ok(status) if status.is_client_error() && code != "internal" => {
            ApiError::new(status, code, o.message)
        }
        _ => ApiError::internal(format!("query process: {}", o.message)),
    }
}

/// Seconds of CPU a query process may use beyond `threads × timeout` (start-up, DuckDB's own
/// threads); past it the kernel ends the process even if the daemon could not.
const CPU_SLACK_SECONDS: u64 = 10;
/// Answer bytes beyond `query_max_bytes` a query process may write (the outcome line, columns).
const OUTPUT_SLACK_BYTES: u64 = 1024 * 1024;

/// The query process: this same binary, with its limits set between fork and exec.
fn worker_command(limits: &Limits) -> tokio::process::Command {
    // /proc/self/exe, not current_exe(): the binary the daemon runs even if it was replaced on disk.
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.args(["--quiet", "daemon", "--query-worker"])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let data = limits.query_memory_mb.saturating_mul(1024 * 1024);
    let timeout = limits.query_timeout.as_secs().max(1);
    let cpu = timeout * (limits.query_threads + 1) + CPU_SLACK_SECONDS;
    // The alarm ends a query process the daemon can no longer stop (it was killed itself).
    let alarm = (timeout + CPU_SLACK_SECONDS).min(u32::MAX as u64) as libc::c_uint;
    let set = |resource, soft: u64, hard: u64| {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(resource, &lim) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: between fork and exec the closure only makes system calls (setrlimit, alarm), which
    // are async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            set(libc::RLIMIT_DATA, data, data)?;
            set(libc::RLIMIT_CPU, cpu, cpu + CPU_SLACK_SECONDS)?;
            libc::alarm(alarm);
            Ok(())
        });
    }
    cmd
}

/// Why a query process was stopped before it answered.
enum Stopped {
    Timeout,
    Shutdown,
}

/// Runs `job` in a query process; its answer (without the closing brace). `slot` is
/// given back only once the process has exited, whatever happens to the request meanwhile.
async fn run_worker(
    job: Job,
    limits: Limits,
    slot: QuerySlot,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> ApiResult<Vec<u8>> {
    let _slot = slot;
    let input = serde_json::to_vec(&job).map_err(ApiError::internal)?;
    let mut child = worker_command(&limits)
        .spawn()
        .map_err(|e| ApiError::internal(format!("cannot start a query process: {e}")))?;
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(ApiError::internal("the query process has no pipes"));
    };
    let cap = job.max_bytes as u64 + OUTPUT_SLACK_BYTES;
    let exchange = async move {
        stdin.write_all(&input).await?;
        drop(stdin);
        let mut out = Vec::new();
        (&mut stdout).take(cap + 1).read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let deadline = tokio::time::Instant::now() + limits.query_timeout;
    let result = tokio::select! {
        r = exchange => Ok(r),
        _ = tokio::time::sleep_until(deadline) => Err(Stopped::Timeout),
        _ = shutdown.wait_for(|s| *s) => Err(Stopped::Shutdown),
    };
    let output = match result {
        Ok(Ok(out)) if out.len() as u64 <= cap => out,
        Ok(Ok(_)) => {
            let _ = child.kill().await;
            return Err(ApiError::internal(
                "the query process wrote more than allowed",
            ));
        }
        Ok(Err(e)) => {
            let _ = child.kill().await;
            return Err(ApiError::internal(format!("query process: {e}")));
        }
        Err(why) => {
            // SIGKILL and reap: the memory is free before the slot is.
            let _ = child.kill().await;
            return Err(match why {
                Stopped::Timeout => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    format!(
                        "the query ran longer than {} s and was stopped; narrow it, or raise \
                         server.query_timeout_seconds",
                        limits.query_timeout.as_secs()
                    ),
                ),
                Stopped::Shutdown => shutting_down(),
            });
        }
    };
    // The process closes stdout when it exits; a short wait for the exit status.
    let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(s)) => Some(s),
        _ => {
            let _ = child.kill().await;
            None
        }
    };
    let (line, body) = match output.iter().position(|b| *b == b'\n') {
        Some(i) => (&output[..i], &output[i + 1..]),
        None => (&output[..], &[][..]),
    };
    let Ok(outcome) = serde_json::from_slice::<Outcome>(line) else {
        return Err(crashed(status, &limits));
    };
    for w in &outcome.warnings {
        tracing::warn!(problem = %w, "query sandbox: an attachment failed");
    }
    if outcome.status != 200 {
        return Err(reported(outcome));
    }
    Ok(body.to_vec())
}

/// A query process that ended without an outcome: killed by the kernel at one of its limits.
fn crashed(status: Option<std::process::ExitStatus>, limits: &Limits) -> ApiError {
    use std::os::unix::process::ExitStatusExt;
    match status.and_then(|s| s.signal()) {
        Some(libc::SIGXCPU) | Some(libc::SIGALRM) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the query used more CPU time than server.query_timeout_seconds allows and was stopped",
        ),
        Some(libc::SIGABRT) | Some(libc::SIGSEGV) | Some(libc::SIGKILL) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "memory_limit",
            format!(
                "the query process ended abnormally, most likely at its memory limit \
                 (server.query_memory_limit_mb = {} MiB); narrow the query",
                limits.query_memory_mb
            ),
        ),
        _ => ApiError::internal(format!(
            "the query process ended without an answer ({})",
            status.map_or("no exit status".into(), |s| s.to_string())
        )),
    }
}

fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the daemon is shutting down; try again once it is back",
    )
}

/// Seconds a client is told to wait when every query slot is taken.
const RETRY_AFTER_SECONDS: u64 = 2;

fn too_busy(full: Full, limits: &Limits) -> ApiError {
    let message = match full {
        Full::Global => format!(
            "{} queries are running, the most this daemon runs at once \
             (server.max_concurrent_queries); retry in a moment",
            limits.max_queries
        ),
        Full::Token => format!(
            "this token already has {} queries running, the most one token may \
             (server.max_concurrent_queries_per_token); retry when one has finished",
            limits.max_queries_per_token
        ),
    };
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_queries", message)
        .retry_after(RETRY_AFTER_SECONDS)
}

pub async fn query(
    State(shared): State<AppState>,
    Auth(caller): Auth,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: QueryRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"sql\": \"SELECT …\", \"max_rows\": N}} ({e})"
        ))
    })?;
    drop(body);
    // DuckDB ends its parse at a NUL, so the check and the engine could read different text.
    if let Some(at) = req.sql.find('\0') {
        return Err(ApiError::bad_request(format!(
            "the SQL contains a NUL character (\\u0000) at byte {at}; remove it"
        )));
    }
    if shared.shutting_down() {
        return Err(shutting_down());
    }
    let instance = shared.instance();
    let limits = Limits::new(&instance.server, &Host::get());
    let max_rows = req
        .max_rows
        .unwrap_or(limits.query_max_rows)
        .min(limits.query_max_rows) as usize;
    let snapshot = shared.snapshot();
    let analytics = shared.data.analytics();
    if !analytics.is_file() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_data",
            "nothing is published yet: the first sync has not finished",
        ));
    }
    // The slot is taken before any work, so a flood of requests costs one check each.
    let slot = shared
        .queries
        .try_acquire(
            &caller.token_id,
            limits.max_queries,
            limits.max_queries_per_token,
        )
        .map_err(|full| too_busy(full, &limits))?;
    let started = Instant::now();
    let (files, dirs) = allowed_data(&snapshot.registered, &caller, &shared.data.extracts());
    let remote_sources: BTreeSet<String> = snapshot
        .registered
        .tables
        .values()
        .filter(|t| t.query_mode() == QueryMode::Remote && caller.may_read(&t.access))
        .map(|t| t.source.clone())
        .collect();
    let sql = req.sql;
    let sql = super::blocking(move || {
        let reads = parse(&sql)?;
        authorize(&reads, &snapshot.registered, &caller)?;
        Ok(sql)
    })
    .await?;
    let job = Job {
        sql,
        analytics,
        files,
        dirs,
        remote_sources,
        extensions: instance.remote_extensions.clone(),
        token_envs: instance.remote_token_envs.clone(),
        extension_directory: instance.extensions.directory.clone(),
        extension_repository: instance.extensions.repository.clone(),
        process_memory_mb: limits.query_memory_mb,
        threads: limits.query_threads,
        max_rows,
        max_bytes: limits.query_max_bytes as usize,
    };
    // Its own task: if the client goes away, the process is still stopped and reaped before the
    // slot is given back.
    let worker = tokio::spawn(run_worker(job, limits, slot, shared.shutdown.subscribe()));
    let mut answer = worker
        .await
        .map_err(|e| ApiError::internal(format!("query handler failed: {e}")))??;
    answer.extend_from_slice(
        format!(",\"elapsed_ms\":{}}}", started.elapsed().as_millis()).as_bytes(),
    );
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Bytes::from(answer),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parse_tree_names_tables_functions_and_ctes() {
        let r = parse(
            "WITH recent AS (SELECT * FROM orders WHERE d > 1)
             SELECT * FROM recent JOIN analytics.main.customers c USING (id)
             WHERE id IN (SELECT id FROM range(3) t(id)) UNION ALL SELECT * FROM x.y",
        )
        .unwrap();
        let mut names: Vec<&str> = r.tables.iter().map(|t| t.name.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            ["customers", "orders", "y"],
            "the CTE `recent` is not a table"
        );
        assert_eq!(r.functions, vec!["range"]);
    }

    #[test]
    fn only_one_select_parses() {
        for sql in [
            "COPY (SELECT 1) TO '/tmp/x.csv'",
            "ATTACH '/tmp/x.duckdb' AS x",
            "INSTALL httpfs",
            "SET threads = 1",
            "CREATE TABLE t AS SELECT 1",
            "PRAGMA version",
        ] {
            let e = parse(sql).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{sql}: {}", e.message);
            assert!(e.message.contains("only a SELECT"), "{sql}: {}", e.message);
        }
        let e = parse("SELECT 1; SELECT 2").unwrap_err();
        assert!(e.message.contains("exactly one"), "{}", e.message);
        let e = parse("SELEC 1").unwrap_err();
        assert!(e.message.contains("does not parse"), "{}", e.message);
    }
}

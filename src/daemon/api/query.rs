//! `POST /api/query`: one read-only SELECT on analytics.duckdb, sandboxed (DESIGN.md §10).
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
//! 4. Rows are capped (`server.query_max_rows`) and the query is interrupted after
//!    `server.query_timeout_seconds`.

use super::catalog::readable;
use super::{ApiError, ApiResult, AppState, Auth};
use crate::quote;
use crate::registered::Registered;
use crate::spec::model::QueryMode;
use crate::spec::sql::{introspection, Reads, SqlParser, PURE_TABLE_FUNCTIONS};
use crate::state::auth::{Caller, ADMIN_GROUP};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use duckdb::Connection;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// Opens the locked-down connection.
fn sandbox(
    analytics: &Path,
    files: &[PathBuf],
    dirs: &[PathBuf],
    remote_sources: &BTreeSet<String>,
    policy: &crate::contract::RemotePolicy,
) -> Result<Connection, String> {
    let conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
    crate::state::retry_locked(crate::state::LOCK_RETRY, || {
        conn.execute_batch(&format!(
            "SET TimeZone = 'UTC'; ATTACH {} AS analytics (READ_ONLY); USE analytics;",
            quote::path(analytics)
        ))
    })
    .map_err(|e| format!("cannot open analytics.duckdb: {e}"))?;
    if !remote_sources.is_empty() {
        let list = crate::orchestrator::attach::read(&conn, Some("analytics")).unwrap_or_default();
        let list: Vec<_> = list
            .into_iter()
            .filter(|a| remote_sources.contains(&a.source))
            .collect();
        for p in crate::orchestrator::attach::attach_all(&conn, &list, policy) {
            tracing::warn!(problem = %p, "query sandbox: an attachment failed");
        }
    }
    conn.execute_batch(&format!(
        "SET allowed_paths = {}; SET allowed_directories = {};
         SET autoinstall_known_extensions = false; SET autoload_known_extensions = false;
         SET memory_limit = '1GB'; SET temp_directory = '';
         SET enable_external_access = false; SET lock_configuration = true;",
        list(files),
        list(dirs)
    ))
    .map_err(|e| format!("cannot set up the query sandbox: {e}"))?;
    Ok(conn)
}

struct Answer {
    columns: Vec<Value>,
    rows: Vec<Value>,
    truncated: bool,
}

fn fetch(conn: &Connection, sql: &str, max_rows: usize) -> Result<Answer, duckdb::Error> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    let (names, types): (Vec<String>, Vec<String>) = match rows.as_ref() {
        Some(s) => (
            s.column_names(),
            (0..s.column_count())
                .map(|i| format!("{}", s.column_type(i)))
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let mut out = Vec::new();
    let mut truncated = false;
    while let Some(row) = rows.next()? {
        if out.len() == max_rows {
            truncated = true;
            break;
        }
        let values: Vec<Value> = (0..names.len())
            .map(|i| {
                row.get::<_, duckdb::types::Value>(i)
                    .map(|v| crate::value_json::json(&v))
            })
            .collect::<Result<_, _>>()?;
        out.push(Value::Array(values));
    }
    Ok(Answer {
        columns: names
            .into_iter()
            .zip(types)
            .map(|(n, t)| json!({"name": n, "type": t}))
            .collect(),
        rows: out,
        truncated,
    })
}

/// Maps DuckDB's refusal of a sandboxed operation to 403, anything else to 400.
fn query_error(e: duckdb::Error) -> ApiError {
    let text = e.to_string();
    if text.contains("Permission Error") || text.contains("disabled by configuration") {
        ApiError::forbidden(format!("refused by the query sandbox: {text}"))
    } else if text.contains("INTERRUPT") || text.contains("Interrupted") {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the query was interrupted",
        )
    } else {
        ApiError::bad_request(format!("query failed: {text}"))
    }
}

pub async fn query(
    State(shared): State<AppState>,
    Auth(caller): Auth,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let req: QueryRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"sql\": \"SELECT …\", \"max_rows\": N}} ({e})"
        ))
    })?;
    let settings = shared.settings();
    let limit = settings.server.query_max_rows;
    let max_rows = req.max_rows.unwrap_or(limit).min(limit) as usize;
    let timeout = Duration::from_secs(settings.server.query_timeout_seconds);
    let snapshot = shared.snapshot();
    let analytics = shared.data.analytics();
    if !analytics.is_file() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_data",
            "nothing is published yet: the first sync has not finished",
        ));
    }
    let (files, dirs) = allowed_data(&snapshot.registered, &caller, &shared.data.extracts());
    let remote_sources: BTreeSet<String> = snapshot
        .registered
        .tables
        .values()
        .filter(|t| t.query_mode() == QueryMode::Remote && caller.may_read(&t.access))
        .map(|t| t.source.clone())
        .collect();
    let policy = settings.exec.policy.clone();
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    let work = tokio::task::spawn_blocking(move || -> ApiResult<Answer> {
        let reads = parse(&req.sql)?;
        authorize(&reads, &snapshot.registered, &caller)?;
        let conn = sandbox(&analytics, &files, &dirs, &remote_sources, &policy)
            .map_err(ApiError::internal)?;
        let _ = handle_tx.send(conn.interrupt_handle());
        fetch(&conn, &req.sql, max_rows).map_err(query_error)
    });
    let answer = match tokio::time::timeout(timeout, work).await {
        Ok(joined) => {
            joined.map_err(|e| ApiError::internal(format!("query handler failed: {e}")))??
        }
        Err(_) => {
            if let Ok(handle) = handle_rx.try_recv() {
                handle.interrupt();
            }
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the query ran longer than {} s and was interrupted; narrow it, or raise \
                     server.query_timeout_seconds",
                    timeout.as_secs()
                ),
            ));
        }
    };
    Ok(Json(json!({
        "columns": answer.columns,
        "rows": answer.rows,
        "row_count": answer.rows.len(),
        "truncated": answer.truncated,
        "max_rows": max_rows,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    })))
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

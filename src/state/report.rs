//! Read-only views of the state for `pipeline status` and `pipeline history`.
//!
//! Timestamps are stored in UTC and reported as RFC 3339 strings (`…Z`); renderers convert them to the
//! instance time zone for people.

use super::downstream::{CheckState, TransformState};
use super::StateResult;
use duckdb::Connection;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// SQL for a UTC timestamp column as RFC 3339 text.
fn ts(col: &str) -> String {
    format!("strftime({col}, '%Y-%m-%dT%H:%M:%S.%gZ')")
}

#[derive(Debug, Serialize)]
pub struct TableStatus {
    pub id: String,
    pub name: String,
    pub source: String,
    pub query_mode: String,
    pub sync_mode: String,
    pub schedule: Option<String>,
    pub last_sync: Option<String>,
    /// The last extract's status (`ok`, `error`), or `failed` when the table's view is not in the
    /// published analytics file (`last_error` says why): never `ok` for a table that is not queryable.
    pub last_status: Option<String>,
    pub rows: Option<i64>,
    pub size_bytes: Option<i64>,
    pub last_error: Option<String>,
    /// Filled in by the caller, which knows the instance time zone.
    pub next_run: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PendingTask {
    pub task: String,
    pub kind: String,
    pub target: String,
    pub reason: String,
    pub serial: i64,
}

#[derive(Debug, Serialize)]
pub struct LastApply {
    pub serial: i64,
    pub who: String,
    pub applied_at: String,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub serial: i64,
    pub last_apply: Option<LastApply>,
    pub sources: i64,
    pub transforms: i64,
    pub metrics: i64,
    pub tables: Vec<TableStatus>,
    /// Every registered transform with its last outcome (ok, stale with the reason, failed).
    pub transform_states: Vec<TransformState>,
    /// Every registered metric with its last check (ok, stale with the reason, failed).
    pub metric_checks: Vec<CheckState>,
    pub pending_tasks: Vec<PendingTask>,
}

pub fn status(conn: &Connection) -> StateResult<Status> {
    let count = |table: &str| -> StateResult<i64> {
        Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
    };
    // A table whose view did not make it into the published file is `failed` with that reason,
    // unless its extract failed (that error says more).
    let sql = format!(
        "SELECT r.id, r.name, r.source, r.query_mode, r.sync_mode, r.sync_schedule, {last},
                CASE WHEN p.status = 'failed' AND coalesce(s.status, '') NOT IN ('error', 'failed')
                     THEN 'failed' ELSE s.status END,
                s.rows, s.size_bytes,
                CASE WHEN p.status = 'failed' AND coalesce(s.status, '') NOT IN ('error', 'failed')
                     THEN 'not published: ' || p.reason ELSE s.error END
         FROM table_registry r LEFT JOIN sync_state s ON s.table_id = r.id
             LEFT JOIN publish_state p ON p.table_id = r.id
         ORDER BY r.source, r.id",
        last = ts("s.last_sync")
    );
    let mut stmt = conn.prepare(&sql)?;
    let tables = stmt
        .query_map([], |r| {
            Ok(TableStatus {
                id: r.get(0)?,
                name: r.get(1)?,
                source: r.get(2)?,
                query_mode: r.get(3)?,
                sync_mode: r.get(4)?,
                schedule: r.get(5)?,
                last_sync: r.get(6)?,
                last_status: r.get(7)?,
                rows: r.get(8)?,
                size_bytes: r.get(9)?,
                last_error: r.get(10)?,
                next_run: None,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut stmt = conn.prepare(
        "SELECT task, kind, target, reason, serial FROM pending_tasks
         ORDER BY serial, position",
    )?;
    let pending_tasks = stmt
        .query_map([], |r| {
            Ok(PendingTask {
                task: r.get(0)?,
                kind: r.get(1)?,
                target: r.get(2)?,
                reason: r.get(3)?,
                serial: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let last_apply = conn
        .prepare(&format!(
            "SELECT serial, who, {} FROM apply_log ORDER BY serial DESC LIMIT 1",
            ts("applied_at")
        ))?
        .query_map([], |r| {
            Ok(LastApply {
                serial: r.get(0)?,
                who: r.get(1)?,
                applied_at: r.get(2)?,
            })
        })?
        .next()
        .transpose()?;
    Ok(Status {
        serial: super::serial(conn)?,
        last_apply,
        sources: count("sources")?,
        transforms: count("transforms")?,
        metrics: count("metric_definitions")?,
        tables,
        transform_states: super::downstream::transforms(conn)?,
        metric_checks: super::downstream::checks(conn)?,
        pending_tasks,
    })
}

/// Tables whose last extract (or attach) failed.
pub fn failed_extracts(conn: &Connection) -> StateResult<BTreeSet<String>> {
    Ok(failing_tables(conn)?.into_keys().collect())
}

/// Tables whose last extract (or attach) failed, with the error: what reads them is stale.
pub fn failing_tables(conn: &Connection) -> StateResult<BTreeMap<String, String>> {
    let mut stmt = conn.prepare(
        "SELECT table_id, coalesce(error, 'failed') FROM sync_state WHERE status IN ('error', 'failed')",
    )?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    Ok(rows)
}

/// When each table was last synced or attempted (unchanged and failed syncs included), RFC 3339 in
/// UTC: what schedules count from. (`sync_state.last_sync` moves only when new data arrived.)
pub fn last_attempts(conn: &Connection) -> StateResult<Vec<(String, String)>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT table_id, {} FROM sync_history
         WHERE split_part(task, ':', 1) IN ('extract', 'attach')
         GROUP BY table_id",
        ts("max(started_at)")
    ))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[derive(Debug, Serialize)]
pub struct ApplyEntry {
    pub serial: i64,
    pub applied_at: String,
    pub who: String,
    pub result: String,
    pub add: i64,
    pub change: i64,
    pub destroy: i64,
    pub targets: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SyncEntry {
    pub run_id: String,
    pub table_id: String,
    pub task: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub rows: Option<i64>,
    pub size_bytes: Option<i64>,
    pub status: String,
    pub error: Option<String>,
    /// What the task did besides rows (a schema change accepted, an output re-extracted…).
    pub detail: Option<String>,
}

/// The newest `limit` applies and syncs (newest first), optionally for one table only.
pub fn history(
    conn: &Connection,
    limit: usize,
    table: Option<&str>,
) -> StateResult<(Vec<ApplyEntry>, Vec<SyncEntry>)> {
    let limit = limit as i64;
    // A table filter keeps the applies whose plan touched that table.
    let sql = format!(
        "SELECT serial, {at}, who, result,
                coalesce(CAST(plan->'$.summary.add' AS BIGINT), 0),
                coalesce(CAST(plan->'$.summary.change' AS BIGINT), 0),
                coalesce(CAST(plan->'$.summary.destroy' AS BIGINT), 0),
                coalesce(CAST(plan->'$.targets' AS VARCHAR[]), [])
         FROM apply_log
         WHERE $1::VARCHAR IS NULL
            OR list_contains(CAST(json_extract_string(plan, '$.changes[*].id') AS VARCHAR[]), $1)
         ORDER BY serial DESC LIMIT $2",
        at = ts("applied_at")
    );
    let applies = conn
        .prepare(&sql)?
        .query_map(duckdb::params![table, limit], |r| {
            Ok(ApplyEntry {
                serial: r.get(0)?,
                applied_at: r.get(1)?,
                who: r.get(2)?,
                result: r.get(3)?,
                add: r.get(4)?,
                change: r.get(5)?,
                destroy: r.get(6)?,
                targets: list(r.get_ref(7)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let sql = format!(
        "SELECT run_id, table_id, task, {started}, {finished}, rows, size_bytes, status, error, detail
         FROM sync_history WHERE $1::VARCHAR IS NULL OR table_id = $1
         ORDER BY started_at DESC LIMIT $2",
        started = ts("started_at"),
        finished = ts("finished_at")
    );
    let syncs = conn
        .prepare(&sql)?
        .query_map(duckdb::params![table, limit], |r| {
            Ok(SyncEntry {
                run_id: r.get(0)?,
                table_id: r.get(1)?,
                task: r.get(2)?,
                started_at: r.get(3)?,
                finished_at: r.get(4)?,
                rows: r.get(5)?,
                size_bytes: r.get(6)?,
                status: r.get(7)?,
                error: r.get(8)?,
                detail: r.get(9)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((applies, syncs))
}

fn list(v: duckdb::types::ValueRef) -> Vec<String> {
    use duckdb::types::Value;
    match v.to_owned() {
        Value::List(items) => items
            .into_iter()
            .filter_map(|i| match i {
                Value::Text(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

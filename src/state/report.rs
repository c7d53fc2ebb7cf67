//! Read-only views of the state for `pipeline status` and `pipeline history`.
//!
//! Timestamps are stored in UTC and reported as RFC 3339 strings (`…Z`); renderers convert them to the
//! instance time zone for people.

use super::downstream::{CheckState, TransformState};
use super::{ts, Reader, StateResult};
use crate::spec::schedule::{Freshness, Schedule};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

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
    /// When the table last synced successfully (new data or none: `unchanged` counts), RFC 3339 in
    /// UTC: what freshness is measured from. `last_sync` moves only when new data arrived.
    pub last_success_at: Option<String>,
    /// Filled in by [`Status::with_times`], which knows the instance time zone.
    pub next_run: Option<String>,
    /// Against the schedule, at the time of the report (filled in by [`Status::with_times`]).
    pub freshness: Option<Freshness>,
}

#[derive(Debug, Serialize)]
pub struct PendingTask {
    pub task: String,
    pub kind: String,
    pub target: String,
    pub reason: String,
    pub serial: i64,
    /// RFC 3339, UTC.
    pub queued_at: String,
    /// The last run that tried it since it was queued (it stays pending when that failed).
    pub last_attempt: Option<TaskAttempt>,
}

/// A run's attempt at a task.
#[derive(Debug, Serialize)]
pub struct TaskAttempt {
    pub run_id: String,
    /// RFC 3339, UTC.
    pub at: String,
    /// failed | skipped | cancelled | ok | unchanged
    pub status: String,
    pub error: Option<String>,
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

impl Status {
    /// Fills in each table's next scheduled run and its freshness at `now`, evaluating schedules in
    /// the instance zone `tz`.
    pub fn with_times(&mut self, now: DateTime<Utc>, tz: Tz) {
        let local = now.with_timezone(&tz);
        for t in &mut self.tables {
            let schedule = t.schedule.as_deref();
            t.next_run = schedule
                .and_then(|s| Schedule::parse_cached(s).ok())
                .and_then(|s| s.next_after(local))
                .map(|n| crate::timestamp::rfc3339(n.with_timezone(&Utc)));
            let last_ok = t
                .last_success_at
                .as_deref()
                .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                .map(|at| at.with_timezone(&Utc));
            t.freshness = Some(Freshness::of(schedule, last_ok, now, tz));
        }
    }
}

pub fn status(r: &Reader) -> StateResult<Status> {
    let conn = &r.conn;
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
                     THEN 'not published: ' || p.reason ELSE s.error END,
                {ok_attempt}
         FROM table_registry r LEFT JOIN sync_state s ON s.table_id = r.id
             LEFT JOIN publish_state p ON p.table_id = r.id
             LEFT JOIN (SELECT table_id, max(started_at) AS at FROM sync_history
                        WHERE split_part(task, ':', 1) IN ('extract', 'attach')
                          AND status IN ('ok', 'unchanged')
                        GROUP BY table_id) a ON a.table_id = r.id
         ORDER BY r.source, r.id",
        last = ts("s.last_sync"),
        ok_attempt = ts("a.at")
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
                last_success_at: r.get(11)?,
                next_run: None,
                freshness: None,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    // A pending task's last attempt since it was (re)queued: why it is still pending.
    let sql = format!(
        "SELECT p.task, p.kind, p.target, p.reason, p.serial, {queued},
                h.run_id, {started}, h.status, h.error
         FROM pending_tasks p
         LEFT JOIN (SELECT task, run_id, started_at, status, error,
                           row_number() OVER (PARTITION BY task ORDER BY started_at DESC) AS n
                    FROM sync_history WHERE task IN (SELECT task FROM pending_tasks)) h
             ON h.task = p.task AND h.n = 1 AND h.started_at >= p.queued_at
         ORDER BY p.serial, p.position",
        queued = ts("p.queued_at"),
        started = ts("h.started_at")
    );
    let mut stmt = conn.prepare(&sql)?;
    let pending_tasks = stmt
        .query_map([], |r| {
            let run_id: Option<String> = r.get(6)?;
            let last_attempt = match run_id {
                Some(run_id) => Some(TaskAttempt {
                    run_id,
                    at: r.get(7)?,
                    status: r.get(8)?,
                    error: r.get(9)?,
                }),
                None => None,
            };
            Ok(PendingTask {
                task: r.get(0)?,
                kind: r.get(1)?,
                target: r.get(2)?,
                reason: r.get(3)?,
                serial: r.get(4)?,
                queued_at: r.get(5)?,
                last_attempt,
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
        serial: r.serial()?,
        last_apply,
        sources: count("sources")?,
        transforms: count("transforms")?,
        metrics: count("metric_definitions")?,
        tables,
        transform_states: super::downstream::transforms(r)?,
        metric_checks: super::downstream::checks(r)?,
        pending_tasks,
    })
}

/// Tables whose last extract (or attach) failed.
pub fn failed_extracts(r: &Reader) -> StateResult<BTreeSet<String>> {
    Ok(failing_tables(r)?.into_keys().collect())
}

/// Tables whose last extract (or attach) failed, with the error: what reads them is stale.
pub fn failing_tables(r: &Reader) -> StateResult<BTreeMap<String, String>> {
    let conn = &r.conn;
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
pub fn last_attempts(r: &Reader) -> StateResult<Vec<(String, String)>> {
    let conn = &r.conn;
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
    r: &Reader,
    limit: usize,
    table: Option<&str>,
) -> StateResult<(Vec<ApplyEntry>, Vec<SyncEntry>)> {
    let conn = &r.conn;
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

/// A table's last successful sync, for the daemon's `/metrics` gauges.
#[derive(Clone, Debug, PartialEq)]
pub struct LastSuccess {
    pub table_id: String,
    /// Unix seconds.
    pub at: f64,
    pub rows: Option<i64>,
}

/// A table's last new data (RFC 3339, UTC) and its rows then.
pub type Synced = (Option<String>, Option<i64>);

/// Every table's [`Synced`], by id, as `sync_state` records it: what the pull manifest needs,
/// without [`status`]'s scan of the sync history (which grows with every run).
pub fn synced(r: &Reader) -> StateResult<std::collections::BTreeMap<String, Synced>> {
    let sql = format!(
        "SELECT table_id, {}, rows FROM sync_state",
        super::ts("last_sync")
    );
    let mut stmt = r.conn.prepare(&sql)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Every table's last successful sync.
pub fn last_successes(r: &Reader) -> StateResult<Vec<LastSuccess>> {
    let mut stmt = r.conn.prepare(
        "SELECT table_id, epoch(last_sync), rows FROM sync_state
         WHERE status = 'ok' AND last_sync IS NOT NULL",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(LastSuccess {
                table_id: r.get(0)?,
                at: r.get(1)?,
                rows: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A finished run as recorded (`runs`).
#[derive(Clone, Debug, PartialEq)]
pub struct RunRow {
    pub run_id: String,
    /// run | apply | schedule | api | watcher
    pub trigger: String,
    pub who: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub finished_at: String,
    /// ok | failed | cancelled
    pub status: String,
    pub tasks: i64,
    pub failed: i64,
    pub skipped: i64,
    pub published: bool,
}

/// One task of a run as recorded (`sync_history`).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRow {
    pub run_id: String,
    /// The task's target: a table id, source, transform or metric.
    pub table_id: String,
    /// `<kind>:<target>`.
    pub task: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub finished_at: Option<String>,
    pub rows: Option<i64>,
    pub size_bytes: Option<i64>,
    pub status: String,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
    pub detail: Option<String>,
}

/// The run `run_id`, if it was recorded.
pub fn run(r: &Reader, run_id: &str) -> StateResult<Option<RunRow>> {
    let sql = format!(
        "SELECT run_id, trigger, who, {}, {}, status, tasks, failed, skipped, published
         FROM runs WHERE run_id = ?",
        ts("started_at"),
        ts("finished_at")
    );
    let row = r
        .conn
        .prepare(&sql)?
        .query_map([run_id], |r| {
            Ok(RunRow {
                run_id: r.get(0)?,
                trigger: r.get(1)?,
                who: r.get(2)?,
                started_at: r.get(3)?,
                finished_at: r.get(4)?,
                status: r.get(5)?,
                tasks: r.get(6)?,
                failed: r.get(7)?,
                skipped: r.get(8)?,
                published: r.get(9)?,
            })
        })?
        .next()
        .transpose()?;
    Ok(row)
}

/// The tasks of run `run_id`, in the order they started.
pub fn run_tasks(r: &Reader, run_id: &str) -> StateResult<Vec<TaskRow>> {
    task_rows(r, "run_id = ? ORDER BY started_at", run_id)
}

/// The newest `limit` tasks that worked on `table_id` (any task whose target it is), newest first.
pub fn table_tasks(r: &Reader, table_id: &str, limit: usize) -> StateResult<Vec<TaskRow>> {
    task_rows(
        r,
        &format!("table_id = ? ORDER BY started_at DESC LIMIT {limit}"),
        table_id,
    )
}

fn task_rows(r: &Reader, filter: &str, param: &str) -> StateResult<Vec<TaskRow>> {
    let sql = format!(
        "SELECT run_id, table_id, task, {}, {}, rows, size_bytes, status, error, duration_ms, detail
         FROM sync_history WHERE {filter}",
        ts("started_at"),
        ts("finished_at")
    );
    let rows = r
        .conn
        .prepare(&sql)?
        .query_map([param], |r| {
            Ok(TaskRow {
                run_id: r.get(0)?,
                table_id: r.get(1)?,
                task: r.get(2)?,
                started_at: r.get(3)?,
                finished_at: r.get(4)?,
                rows: r.get(5)?,
                size_bytes: r.get(6)?,
                status: r.get(7)?,
                error: r.get(8)?,
                duration_ms: r.get(9)?,
                detail: r.get(10)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
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

/// What a `--table` argument names: a table id, or a view name (any case) of a registered table.
#[derive(Debug, PartialEq, Eq)]
pub enum TableName {
    /// The table's id.
    Found(String),
    /// Nothing registered or synced has that id or view name; the closest id or view name, if any.
    Unknown { closest: Option<String> },
}

/// Resolves a table given by id or by view name against the registered tables and, for tables
/// since removed, the ids in the sync history.
pub fn table_name(r: &Reader, given: &str) -> StateResult<TableName> {
    let known: Vec<(String, Option<String>)> = r
        .conn
        .prepare(
            "SELECT id, name FROM table_registry
             UNION SELECT DISTINCT table_id, NULL FROM sync_history
               WHERE table_id NOT IN (SELECT id FROM table_registry)",
        )?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    if known.iter().any(|(id, _)| id == given) {
        return Ok(TableName::Found(given.to_string()));
    }
    if let Some((id, _)) = known.iter().find(|(_, name)| {
        name.as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(given))
    }) {
        return Ok(TableName::Found(id.clone()));
    }
    let candidates = known
        .iter()
        .flat_map(|(id, name)| std::iter::once(id.as_str()).chain(name.as_deref()));
    Ok(TableName::Unknown {
        closest: crate::diag::suggest(given, candidates).map(str::to_string),
    })
}

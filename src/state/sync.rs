//! What runs read from and record in the state: each table's last successful extract (sync_state),
//! every task's outcome (sync_history), the run itself (runs), view ownership, metric checks, and the
//! pending tasks a run completes. A run records everything in one short transaction at its end, so
//! the state never shows half a run; a run killed before that leaves the state as before it, and the
//! next run converges (extracts are idempotent: merged by key, swapped whole).

use super::StateResult;
use crate::extract::Previous;
use crate::plan::tasks::{Task, TaskKind};
use duckdb::{params, Connection};
use std::collections::{BTreeMap, HashMap};

/// Everything a run needs from the state before it starts.
#[derive(Debug, Default)]
pub struct Before {
    pub previous: HashMap<String, Previous>,
    pub owners: BTreeMap<String, String>,
    pub pending: Vec<Task>,
}

pub fn read_before(conn: &Connection) -> StateResult<Before> {
    let mut stmt = conn.prepare(
        "SELECT table_id, fingerprint, last_cursor, rows, size_bytes, hash FROM sync_state
         WHERE status = 'ok' OR fingerprint IS NOT NULL OR last_cursor IS NOT NULL",
    )?;
    let previous = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Previous {
                    fingerprint: r.get(1)?,
                    last_cursor: r.get(2)?,
                    rows: r.get(3)?,
                    size_bytes: r.get(4)?,
                    hash: r.get(5)?,
                },
            ))
        })?
        .collect::<Result<HashMap<_, _>, _>>()?;
    let mut stmt = conn.prepare("SELECT view_name, source FROM view_ownership")?;
    let owners = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    let mut stmt = conn.prepare(
        "SELECT task, kind, target, after, reason FROM pending_tasks ORDER BY serial, position",
    )?;
    let pending = stmt
        .query_map([], |r| {
            let kind: String = r.get(1)?;
            let after: duckdb::types::Value = r.get(3)?;
            Ok((
                r.get::<_, String>(0)?,
                kind,
                r.get::<_, String>(2)?,
                after,
                r.get(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter_map(|(id, kind, target, after, reason)| {
            let kind = serde_json::from_value::<TaskKind>(serde_json::Value::String(kind)).ok()?;
            Some(Task {
                id,
                kind,
                target,
                after: string_list(after),
                reason,
            })
        })
        .collect();
    Ok(Before {
        previous,
        owners,
        pending,
    })
}

fn string_list(v: duckdb::types::Value) -> Vec<String> {
    match v {
        duckdb::types::Value::List(items) => items
            .into_iter()
            .filter_map(|i| match i {
                duckdb::types::Value::Text(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// One task's outcome, as sync_history records it.
#[derive(Clone, Debug)]
pub struct TaskRecord {
    pub task: String,
    pub kind: TaskKind,
    pub target: String,
    /// UTC, `YYYY-MM-DD HH:MM:SS.ffffff`.
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: i64,
    /// ok | unchanged | failed | skipped | cancelled
    pub status: String,
    pub rows: Option<i64>,
    pub bytes: Option<i64>,
    pub error: Option<String>,
    pub detail: Option<String>,
    /// For extract tasks that succeeded: the new sync_state.
    pub extracted: Option<crate::extract::Extracted>,
}

/// The run as a whole.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub run_id: String,
    pub trigger: String,
    pub who: String,
    pub started_at: String,
    pub finished_at: String,
    pub status: String,
    pub published: bool,
    pub tasks: Vec<TaskRecord>,
    pub claimed: BTreeMap<String, String>,
    pub released: Vec<String>,
    /// Pending tasks this run completed (removed from pending_tasks).
    pub completed_pending: Vec<String>,
}

/// Records a finished run in one transaction.
pub fn record(conn: &mut Connection, run: &RunRecord) -> StateResult<()> {
    let tx = conn.transaction()?;
    let failed = run.tasks.iter().filter(|t| t.status == "failed").count() as i64;
    let skipped = run.tasks.iter().filter(|t| t.status == "skipped").count() as i64;
    tx.execute(
        "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, CAST(? AS TIMESTAMP), CAST(? AS TIMESTAMP), ?, ?, ?, ?, ?)",
        params![
            run.run_id,
            run.trigger,
            run.who,
            run.started_at,
            run.finished_at,
            run.status,
            run.tasks.len() as i64,
            failed,
            skipped,
            run.published
        ],
    )?;
    {
        let mut hist = tx.prepare(
            "INSERT INTO sync_history (run_id, table_id, task, started_at, finished_at, rows, size_bytes,
                 status, error, duration_ms, detail)
             VALUES (?, ?, ?, CAST(? AS TIMESTAMP), CAST(? AS TIMESTAMP), ?, ?, ?, ?, ?, ?)",
        )?;
        let mut ok_state = tx.prepare(
            "INSERT INTO sync_state (table_id, last_sync, last_cursor, rows, size_bytes, hash, status, error, fingerprint)
             VALUES (?, CAST(? AS TIMESTAMP), ?, ?, ?, ?, 'ok', NULL, ?)
             ON CONFLICT (table_id) DO UPDATE SET last_sync = excluded.last_sync,
                 last_cursor = excluded.last_cursor, rows = excluded.rows, size_bytes = excluded.size_bytes,
                 hash = excluded.hash, status = 'ok', error = NULL, fingerprint = excluded.fingerprint",
        )?;
        // A failure keeps the last good data's numbers and cursor; only status and error change.
        let mut failed_state = tx.prepare(
            "INSERT INTO sync_state (table_id, status, error) VALUES (?, 'error', ?)
             ON CONFLICT (table_id) DO UPDATE SET status = 'error', error = excluded.error",
        )?;
        for t in &run.tasks {
            hist.execute(params![
                run.run_id,
                t.target,
                t.task,
                t.started_at,
                t.finished_at,
                t.rows,
                t.bytes,
                t.status,
                t.error,
                t.duration_ms,
                t.detail
            ])?;
            if !matches!(t.kind, TaskKind::Extract | TaskKind::Attach) {
                continue;
            }
            match (&t.extracted, t.status.as_str()) {
                // An unchanged table keeps its last_sync: nothing new arrived.
                (Some(x), _) if x.unchanged => {}
                (Some(x), _) => {
                    ok_state.execute(params![
                        t.target,
                        t.finished_at,
                        x.cursor,
                        x.rows,
                        x.bytes,
                        x.hash,
                        x.fingerprint
                    ])?;
                }
                (None, "ok") => {
                    ok_state.execute(params![
                        t.target,
                        t.finished_at,
                        None::<String>,
                        None::<i64>,
                        None::<i64>,
                        None::<String>,
                        None::<String>
                    ])?;
                }
                (None, "failed") => {
                    failed_state.execute(params![t.target, t.error])?;
                }
                _ => {}
            }
        }
        let mut claim = tx.prepare(
            "INSERT INTO view_ownership (view_name, source) VALUES (?, ?) ON CONFLICT (view_name) DO NOTHING",
        )?;
        for (view, source) in &run.claimed {
            claim.execute([view, source])?;
        }
        let mut release = tx.prepare("DELETE FROM view_ownership WHERE view_name = ?")?;
        for view in &run.released {
            release.execute([view])?;
        }
        let mut check = tx.prepare(
            "UPDATE metric_definitions SET last_check_at = CAST(? AS TIMESTAMP), last_check_status = ?,
                 last_check_error = ? WHERE id = ?",
        )?;
        for t in run.tasks.iter().filter(|t| t.kind == TaskKind::Check) {
            if t.status == "ok" || t.status == "failed" {
                check.execute(params![t.finished_at, t.status, t.error, t.target])?;
            }
        }
        let mut done = tx.prepare("DELETE FROM pending_tasks WHERE task = ?")?;
        for task in &run.completed_pending {
            done.execute([task])?;
        }
    }
    tx.commit()?;
    Ok(())
}

//! What analysts query besides the tables' data, as the last run left it: each transform's and metric
//! check's state (`transform_state`, `check_state`: ok / stale with the reason / failed with the
//! error, the last time it was ok, rows) and whether each table's view made it into the published
//! analytics file (`publish_state`). Written by a run in the same transaction as the rest of its
//! record ([`super::sync::record`]); read by `pipeline status` and `GET /api/status`.

use super::{ts, Reader, StateResult, ROWS};
use duckdb::{params, Connection};
use serde::Serialize;

/// One transform's or check's outcome, to record.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Transform name or metric id.
    pub name: String,
    /// ok | stale | failed
    pub status: String,
    pub reason: Option<String>,
    /// Rows of a transform's new result (absent: keep the recorded number).
    pub rows: Option<i64>,
}

/// Whether a table's view is in the new analytics file.
#[derive(Clone, Debug, PartialEq)]
pub struct TablePublish {
    pub table_id: String,
    /// ok | failed
    pub status: String,
    pub reason: Option<String>,
}

/// Everything a run records here; empty parts record nothing.
#[derive(Clone, Debug, Default)]
pub struct Outcomes {
    pub transforms: Vec<Outcome>,
    pub checks: Vec<Outcome>,
    /// Only when the run published a new analytics file.
    pub tables: Vec<TablePublish>,
}

/// Records `o` (run `run_id`, finished at `at`: UTC `YYYY-MM-DD HH:MM:SS[.f]`) on `conn`, inside the
/// caller's transaction.
pub(super) fn record(conn: &Connection, run_id: &str, at: &str, o: &Outcomes) -> StateResult<()> {
    use serde_json::json;
    let rows = |items: &[Outcome]| {
        serde_json::Value::Array(
            items
                .iter()
                .map(|x| {
                    json!({"name": x.name, "status": x.status, "reason": x.reason, "rows": x.rows,
                           "at": at, "run": run_id})
                })
                .collect(),
        )
        .to_string()
    };
    // `last_ok_at` moves only on ok; a kept result keeps its recorded row count.
    let upsert = |table: &str, key: &str, with_rows: bool| {
        let (cols, vals, set) = if with_rows {
            (
                ", rows",
                ", CAST(d->>'rows' AS BIGINT)",
                ", rows = coalesce(excluded.rows, rows)",
            )
        } else {
            ("", "", "")
        };
        format!(
            "INSERT INTO {table} ({key}, status, reason{cols}, last_ok_at, updated_at, run_id)
             SELECT d->>'name', d->>'status', d->>'reason'{vals},
                 CASE WHEN d->>'status' = 'ok' THEN CAST(d->>'at' AS TIMESTAMP) END,
                 CAST(d->>'at' AS TIMESTAMP), d->>'run' FROM {ROWS}
             ON CONFLICT ({key}) DO UPDATE SET status = excluded.status, reason = excluded.reason{set},
                 last_ok_at = coalesce(excluded.last_ok_at, last_ok_at),
                 updated_at = excluded.updated_at, run_id = excluded.run_id"
        )
    };
    if !o.transforms.is_empty() {
        conn.execute(
            &upsert("transform_state", "name", true),
            params![rows(&o.transforms)],
        )?;
    }
    if !o.checks.is_empty() {
        conn.execute(
            &upsert("check_state", "metric_id", false),
            params![rows(&o.checks)],
        )?;
    }
    if !o.tables.is_empty() {
        let tables = serde_json::Value::Array(
            o.tables
                .iter()
                .map(|t| json!({"id": t.table_id, "status": t.status, "reason": t.reason}))
                .collect(),
        )
        .to_string();
        conn.execute(
            &format!(
                "INSERT INTO publish_state (table_id, status, reason, updated_at, run_id)
                 SELECT d->>'id', d->>'status', d->>'reason', CAST($2 AS TIMESTAMP), $3 FROM {ROWS}
                 ON CONFLICT (table_id) DO UPDATE SET status = excluded.status,
                     reason = excluded.reason, updated_at = excluded.updated_at, run_id = excluded.run_id"
            ),
            params![tables, at, run_id],
        )?;
    }
    Ok(())
}

/// A registered transform and its last outcome (`status` is null until a run built it).
#[derive(Clone, Debug, Serialize)]
pub struct TransformState {
    pub name: String,
    pub source: String,
    pub materialized: String,
    pub status: Option<String>,
    pub reason: Option<String>,
    pub rows: Option<i64>,
    pub last_ok_at: Option<String>,
    pub updated_at: Option<String>,
}

/// A registered metric and its last check (`status` is null until one ran).
#[derive(Clone, Debug, Serialize)]
pub struct CheckState {
    pub metric: String,
    pub status: Option<String>,
    pub reason: Option<String>,
    pub last_ok_at: Option<String>,
    pub updated_at: Option<String>,
}

pub fn transforms(r: &Reader) -> StateResult<Vec<TransformState>> {
    let conn = &r.conn;
    let sql = format!(
        "SELECT t.name, t.source, t.materialized, s.status, s.reason, s.rows, {}, {}
         FROM transforms t LEFT JOIN transform_state s ON s.name = t.name ORDER BY t.name",
        ts("s.last_ok_at"),
        ts("s.updated_at")
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(TransformState {
                name: r.get(0)?,
                source: r.get(1)?,
                materialized: r.get(2)?,
                status: r.get(3)?,
                reason: r.get(4)?,
                rows: r.get(5)?,
                last_ok_at: r.get(6)?,
                updated_at: r.get(7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Every registered metric's last check: a run's (`check_state`), or a later `metrics check`
/// (recorded in `metric_definitions`).
pub fn checks(r: &Reader) -> StateResult<Vec<CheckState>> {
    let conn = &r.conn;
    let cli = "(s.updated_at IS NULL OR m.last_check_at > s.updated_at)";
    let sql = format!(
        "SELECT m.id,
                CASE WHEN {cli} THEN m.last_check_status ELSE s.status END,
                CASE WHEN {cli} THEN m.last_check_error ELSE s.reason END,
                {}, {}
         FROM metric_definitions m LEFT JOIN check_state s ON s.metric_id = m.id ORDER BY m.id",
        ts("greatest(s.last_ok_at, CASE WHEN m.last_check_status = 'ok' THEN m.last_check_at END)"),
        ts("greatest(s.updated_at, m.last_check_at)")
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(CheckState {
                metric: r.get(0)?,
                status: r.get(1)?,
                reason: r.get(2)?,
                last_ok_at: r.get(3)?,
                updated_at: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

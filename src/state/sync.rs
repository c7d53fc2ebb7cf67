//! What runs read from and record in the state: each table's last successful extract (sync_state),
//! every task's outcome (sync_history), the run itself (runs), view ownership, metric checks, and the
//! pending tasks a run completes. A run records everything in one short transaction at its end, so
//! the state never shows half a run; a run killed before that leaves the state as before it, and the
//! next run converges (extracts are idempotent: merged by key, swapped whole).

use super::{Reader, StateResult, Writer, ROWS};
use crate::registry::task::{Task, TaskKind};
use duckdb::params;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// A table's last extract as recorded (sync_state): what the next extract compares with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableSync {
    pub fingerprint: Option<String>,
    pub last_cursor: Option<String>,
    pub rows: Option<i64>,
    pub size_bytes: Option<i64>,
    pub hash: Option<String>,
    /// The schema last published, as the run recorded it (a JSON list of columns); `None` when
    /// recorded before the state had it or when it does not parse.
    pub schema: Option<Value>,
    pub output_stamp: Option<String>,
}

/// Everything a run needs from the state before it starts.
#[derive(Debug, Default)]
pub struct Before {
    /// Table id → its last extract.
    pub previous: HashMap<String, TableSync>,
    /// View name → the source that owns it.
    pub owners: BTreeMap<String, String>,
    /// Tasks an apply queued that no run has completed yet, in order.
    pub pending: Vec<Task>,
}

pub fn read_before(r: &Reader) -> StateResult<Before> {
    let conn = &r.conn;
    let mut stmt = conn.prepare(
        "SELECT table_id, fingerprint, last_cursor, rows, size_bytes, hash,
                CAST(published_schema AS VARCHAR), output_stamp FROM sync_state
         WHERE status = 'ok' OR fingerprint IS NOT NULL OR last_cursor IS NOT NULL",
    )?;
    let previous = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                TableSync {
                    fingerprint: r.get(1)?,
                    last_cursor: r.get(2)?,
                    rows: r.get(3)?,
                    size_bytes: r.get(4)?,
                    hash: r.get(5)?,
                    schema: r
                        .get::<_, Option<String>>(6)?
                        .and_then(|s| serde_json::from_str(&s).ok()),
                    output_stamp: r.get(7)?,
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
            let kind = TaskKind::from_name(&kind)?;
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
    pub extracted: Option<Synced>,
}

/// What a successful extract leaves in sync_state (and, for accepted schema changes, audit_log).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Synced {
    pub rows: i64,
    pub bytes: i64,
    pub hash: Option<String>,
    pub cursor: Option<String>,
    pub fingerprint: Option<String>,
    /// The published schema now (a JSON list of columns), when known.
    pub schema: Option<Value>,
    /// How the schema differs from the one published before; empty when the same.
    pub schema_changes: Vec<Value>,
    /// What accepted `schema_changes`.
    pub schema_accepted_by: Option<String>,
    pub output_stamp: Option<String>,
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
    /// Transform and check outcomes, and which tables the published file has.
    pub downstream: super::downstream::Outcomes,
}

fn json(rows: Vec<serde_json::Value>) -> String {
    serde_json::Value::Array(rows).to_string()
}

/// Records a finished run in one transaction, with one set-based statement per table: a run of a
/// thousand tasks costs a handful of statements, not thousands.
pub fn record(w: &mut Writer, run: &RunRecord) -> StateResult<()> {
    use serde_json::json as j;
    let failed = run.tasks.iter().filter(|t| t.status == "failed").count() as i64;
    let skipped = run.tasks.iter().filter(|t| t.status == "skipped").count() as i64;
    let history: Vec<_> = run
        .tasks
        .iter()
        .map(|t| {
            j!({"run": run.run_id, "target": t.target, "task": t.task, "started": t.started_at,
                "finished": t.finished_at, "rows": t.rows, "bytes": t.bytes, "status": t.status,
                "error": t.error, "ms": t.duration_ms, "detail": t.detail})
        })
        .collect();
    let data_tasks = || {
        run.tasks
            .iter()
            .filter(|t| matches!(t.kind, TaskKind::Extract | TaskKind::Attach))
    };
    let schema_json = |x: &Synced| x.schema.as_ref().map(Value::to_string);
    // An unchanged table keeps its last_sync: nothing new arrived. A failure keeps the last good
    // data's numbers and cursor; only status and error change.
    let synced: Vec<_> = data_tasks()
        .filter(|t| t.status == "ok")
        .map(|t| {
            let x = t.extracted.as_ref();
            j!({"id": t.target, "at": t.finished_at, "cursor": x.and_then(|x| x.cursor.clone()),
                "rows": x.map(|x| x.rows), "bytes": x.map(|x| x.bytes),
                "hash": x.and_then(|x| x.hash.clone()), "fp": x.and_then(|x| x.fingerprint.clone()),
                "schema": x.and_then(schema_json), "stamp": x.and_then(|x| x.output_stamp.clone())})
        })
        .collect();
    // Unchanged tables whose output was verified again (a new stamp) or whose schema is recorded
    // for the first time (a state from before the schema contract).
    let verified: Vec<_> = data_tasks()
        .filter(|t| t.status == "unchanged")
        .filter_map(|t| t.extracted.as_ref().map(|x| (t, x)))
        .map(|(t, x)| j!({"id": t.target, "stamp": x.output_stamp, "schema": schema_json(x)}))
        .collect();
    // Schema changes that were published, with what accepted them: the audit trail of the contract.
    let schema_changes: Vec<_> = data_tasks()
        .filter(|t| t.status == "ok")
        .filter_map(|t| t.extracted.as_ref().map(|x| (t, x)))
        .filter(|(_, x)| !x.schema_changes.is_empty())
        .map(|(t, x)| {
            let detail = j!({"run_id": run.run_id, "accepted_by": x.schema_accepted_by,
                             "changes": x.schema_changes});
            j!({"id": t.target, "who": run.who, "detail": detail.to_string()})
        })
        .collect();
    let failures: Vec<_> = data_tasks()
        .filter(|t| t.status == "failed")
        .map(|t| j!({"id": t.target, "error": t.error}))
        .collect();
    let claims: Vec<_> = run
        .claimed
        .iter()
        .map(|(v, s)| j!({"view": v, "source": s}))
        .collect();
    let checks: Vec<_> = run
        .tasks
        .iter()
        .filter(|t| t.kind == TaskKind::Check && (t.status == "ok" || t.status == "failed"))
        .map(|t| j!({"id": t.target, "at": t.finished_at, "status": t.status, "error": t.error}))
        .collect();
    let strings = |v: &[String]| json(v.iter().map(|s| j!(s)).collect());

    let tx = w.conn().transaction()?;
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
    let statements: [(&str, String); 9] = [
        (
            "INSERT INTO sync_history (run_id, table_id, task, started_at, finished_at, rows, size_bytes,
                 status, error, duration_ms, detail)
             SELECT d->>'run', d->>'target', d->>'task', CAST(d->>'started' AS TIMESTAMP),
                 CAST(d->>'finished' AS TIMESTAMP), CAST(d->>'rows' AS BIGINT), CAST(d->>'bytes' AS BIGINT),
                 d->>'status', d->>'error', CAST(d->>'ms' AS BIGINT), d->>'detail' FROM ROWS",
            json(history),
        ),
        (
            "INSERT INTO sync_state (table_id, last_sync, last_cursor, rows, size_bytes, hash, status, error,
                 fingerprint, published_schema, output_stamp)
             SELECT d->>'id', CAST(d->>'at' AS TIMESTAMP), d->>'cursor', CAST(d->>'rows' AS BIGINT),
                 CAST(d->>'bytes' AS BIGINT), d->>'hash', 'ok', NULL, d->>'fp',
                 CAST(d->>'schema' AS JSON), d->>'stamp' FROM ROWS
             ON CONFLICT (table_id) DO UPDATE SET last_sync = excluded.last_sync,
                 last_cursor = excluded.last_cursor, rows = excluded.rows, size_bytes = excluded.size_bytes,
                 hash = excluded.hash, status = 'ok', error = NULL, fingerprint = excluded.fingerprint,
                 published_schema = excluded.published_schema, output_stamp = excluded.output_stamp",
            json(synced),
        ),
        (
            "UPDATE sync_state SET output_stamp = coalesce(v.d->>'stamp', output_stamp),
                 published_schema = coalesce(CAST(v.d->>'schema' AS JSON), published_schema)
             FROM ROWS AS v WHERE table_id = (v.d->>'id')",
            json(verified),
        ),
        (
            "INSERT INTO audit_log (who, action, object, detail)
             SELECT d->>'who', 'schema_change', d->>'id', CAST(d->>'detail' AS JSON) FROM ROWS",
            json(schema_changes),
        ),
        (
            "INSERT INTO sync_state (table_id, status, error) SELECT d->>'id', 'error', d->>'error' FROM ROWS
             ON CONFLICT (table_id) DO UPDATE SET status = 'error', error = excluded.error",
            json(failures),
        ),
        (
            "INSERT INTO view_ownership (view_name, source) SELECT d->>'view', d->>'source' FROM ROWS
             ON CONFLICT (view_name) DO NOTHING",
            json(claims),
        ),
        (
            "DELETE FROM view_ownership WHERE view_name IN (SELECT d->>'$' FROM ROWS)",
            strings(&run.released),
        ),
        (
            "UPDATE metric_definitions SET last_check_at = CAST(c.d->>'at' AS TIMESTAMP),
                 last_check_status = c.d->>'status', last_check_error = c.d->>'error'
             FROM ROWS AS c WHERE id = (c.d->>'id')",
            json(checks),
        ),
        (
            "DELETE FROM pending_tasks WHERE task IN (SELECT d->>'$' FROM ROWS)",
            strings(&run.completed_pending),
        ),
    ];
    for (sql, rows) in statements {
        if rows != "[]" {
            tx.execute(&sql.replace("ROWS", ROWS), params![rows])?;
        }
    }
    super::downstream::record(&tx, &run.run_id, &run.finished_at, &run.downstream)?;
    tx.commit()?;
    Ok(())
}

/// Records `metrics check` results: (metric id, error if it failed). Metrics not registered yet are
/// not in the table, and are left out.
pub fn record_checks(w: &Writer, results: &[(String, Option<String>)]) -> StateResult<()> {
    let conn = &w.conn;
    let rows: Vec<serde_json::Value> = results
        .iter()
        .map(|(id, error)| {
            serde_json::json!({"id": id, "status": if error.is_some() { "failed" } else { "ok" },
                               "error": error})
        })
        .collect();
    conn.execute(
        &format!(
            "UPDATE metric_definitions SET last_check_at = current_timestamp,
                 last_check_status = c.d->>'status', last_check_error = c.d->>'error'
             FROM {ROWS} AS c WHERE id = (c.d->>'id')"
        ),
        params![json(rows)],
    )?;
    Ok(())
}

/// A metric's last check.
#[derive(Clone, Debug)]
pub struct LastCheck {
    /// ok | failed
    pub status: String,
    /// UTC, RFC 3339.
    pub at: String,
    pub error: Option<String>,
}

/// The last check of each registered metric, by id.
pub fn last_checks(r: &Reader) -> StateResult<HashMap<String, LastCheck>> {
    let mut stmt = r.conn.prepare(&format!(
        "SELECT id, last_check_status, {}, last_check_error
         FROM metric_definitions WHERE last_check_status IS NOT NULL",
        super::ts("last_check_at")
    ))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                LastCheck {
                    status: r.get(1)?,
                    at: r.get(2)?,
                    error: r.get(3)?,
                },
            ))
        })?
        .collect::<Result<HashMap<_, _>, _>>()?;
    Ok(rows)
}

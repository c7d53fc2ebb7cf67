//! The registry part of the state: the objects the last apply recorded, and writing an apply.
//!
//! Each registered row keeps its canonical document (`spec` JSON); the typed columns are derived from
//! it in SQL at write time, so the two never disagree and the Rust side binds only four values.

use super::{StateError, StateResult};
use crate::plan::diff::{Action, Change};
use crate::plan::object::{Kind, Object, Objects};
use crate::plan::Plan;
use duckdb::{params, Connection, Transaction};
use serde_json::{Map, Value};
use std::path::Path;

/// Where each kind lives, and how its typed columns derive from the document `s`.
struct KindTable {
    table: &'static str,
    key: &'static str,
    /// `(column, expression over s)`.
    columns: &'static [(&'static str, &'static str)],
}

fn table_of(kind: Kind) -> &'static KindTable {
    const SOURCES: KindTable = KindTable {
        table: "sources",
        key: "name",
        columns: &[
            ("source_type", "s->>'type'"),
            ("description", "s->>'description'"),
        ],
    };
    const TABLES: KindTable = KindTable {
        table: "table_registry",
        key: "id",
        columns: &[
            ("name", "s->>'name'"),
            ("source", "s->>'source'"),
            ("source_type", "s->>'source_type'"),
            ("bucket", "s->>'bucket'"),
            ("source_table", "s->>'source_table'"),
            ("query_mode", "s->>'query_mode'"),
            ("sync_schedule", "s->>'schedule'"),
            ("sync_mode", "s->>'sync_mode'"),
            ("cursor", "s->>'cursor'"),
            ("primary_key", "CAST(s->'primary_key' AS VARCHAR[])"),
            ("description", "s->>'description'"),
            ("access", "CAST(s->'access' AS VARCHAR[])"),
        ],
    };
    const TRANSFORMS: KindTable = KindTable {
        table: "transforms",
        key: "name",
        columns: &[
            ("source", "s->>'source'"),
            ("materialized", "s->>'materialized'"),
            ("sql", "s->>'sql'"),
            ("inputs", "CAST(s->'inputs' AS VARCHAR[])"),
            ("description", "s->>'description'"),
        ],
    };
    const METRICS: KindTable = KindTable {
        table: "metric_definitions",
        key: "id",
        columns: &[
            ("category", "s->>'category'"),
            ("name", "s->>'name'"),
            ("display_name", "s->>'display_name'"),
            ("description", "s->>'description'"),
            ("owner", "s->>'owner'"),
            ("unit", "s->>'unit'"),
            ("grains", "CAST(s->'grain' AS VARCHAR[])"),
            ("sql", "s->>'sql'"),
            ("tables", "CAST(s->'tables' AS VARCHAR[])"),
        ],
    };
    match kind {
        Kind::Source => &SOURCES,
        Kind::Table => &TABLES,
        Kind::Transform => &TRANSFORMS,
        Kind::Metric => &METRICS,
    }
}

/// The serial and registered objects of the state at `path`; `(0, empty)` when it does not exist yet
/// (planning never creates it).
pub fn read_recorded(path: &Path) -> StateResult<(i64, Objects)> {
    if !path.exists() {
        return Ok((0, Objects::new()));
    }
    let conn = super::open_for_reading(path)?;
    let serial = super::serial(&conn)?;
    Ok((serial, recorded(&conn)?))
}

/// Every registered object, from an open connection.
pub fn recorded(conn: &Connection) -> StateResult<Objects> {
    let mut out = Objects::new();
    for kind in Kind::ALL {
        let t = table_of(kind);
        let sql = format!(
            "SELECT {key}, spec_file, CAST(spec AS VARCHAR) FROM {table}",
            key = t.key,
            table = t.table
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        for row in rows {
            let (id, file, spec) = row?;
            // A row without a document (written before version 2) diffs as all-new fields, which
            // the next apply rewrites.
            let fields = spec
                .and_then(|s| serde_json::from_str::<Map<String, Value>>(&s).ok())
                .unwrap_or_default();
            out.insert(
                (kind, id.clone()),
                Object {
                    kind,
                    id,
                    file,
                    fields,
                },
            );
        }
    }
    Ok(out)
}

/// What an apply did.
#[derive(Debug)]
pub struct Applied {
    pub serial: i64,
    pub queued_tasks: usize,
}

/// Writes `plan` in one transaction: registry rows, grants, pending tasks, audit_log, apply_log and
/// the serial. `who` is the OS or API user. Refuses (changing nothing) when the state serial is no
/// longer the one the plan was made against.
pub fn apply(conn: &mut Connection, plan: &Plan, who: &str) -> StateResult<Applied> {
    let tx = conn.transaction()?;
    let current = super::serial(&tx)?;
    if current != plan.state_serial {
        return Err(StateError::Stale(format!(
            "the state is at serial {current} but the plan was made at serial {}: another apply ran in \
             between. Plan again and review the new plan.",
            plan.state_serial
        )));
    }
    for change in &plan.changes {
        write_change(&tx, change)?;
        tx.execute(
            "INSERT INTO audit_log (who, action, object, detail) VALUES (?, ?, ?, ?::JSON)",
            params![
                who,
                format!("{} {}", action_word(change.action), change.kind),
                change.id,
                serde_json::to_string(&change.fields).expect("JSON serializes"),
            ],
        )?;
    }
    let serial = current + 1;
    for (position, task) in plan.tasks.iter().enumerate() {
        tx.execute(
            "INSERT OR REPLACE INTO pending_tasks (task, position, kind, target, after, reason, serial)
             VALUES (?, ?, ?, ?, CAST(?::JSON AS VARCHAR[]), ?, ?)",
            params![
                task.id,
                position as i64,
                task.kind.as_str(),
                task.target,
                serde_json::to_string(&task.after).expect("JSON serializes"),
                task.reason,
                serial,
            ],
        )?;
    }
    tx.execute(
        "UPDATE state_meta SET value = ? WHERE key = 'serial'",
        params![serial.to_string()],
    )?;
    tx.execute(
        "INSERT INTO apply_log (serial, spec_digest, plan, who, result) VALUES (?, ?, ?::JSON, ?, 'applied')",
        params![
            serial,
            plan.spec_digest,
            serde_json::to_string(plan).expect("plans serialize"),
            who
        ],
    )?;
    tx.commit()?;
    Ok(Applied {
        serial,
        queued_tasks: plan.tasks.len(),
    })
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Update => "update",
        Action::Replace => "replace",
        Action::Delete => "delete",
    }
}

fn write_change(tx: &Transaction, change: &Change) -> StateResult<()> {
    let t = table_of(change.kind);
    if let Some(before) = &change.before {
        if change.kind == Kind::Table {
            let after_name = change.object.as_ref().and_then(|o| o.str("name"));
            forget_table(tx, before, change.action, after_name)?;
        }
    }
    match &change.object {
        None => {
            let sql = format!("DELETE FROM {} WHERE {} = ?", t.table, t.key);
            tx.execute(&sql, params![change.id])?;
        }
        Some(obj) => {
            let cols: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
            let exprs: Vec<&str> = t.columns.iter().map(|c| c.1).collect();
            // An upsert that leaves registered_at alone on update.
            let updates: Vec<String> = ["spec_file", "spec_hash", "spec", "updated_at"]
                .iter()
                .chain(cols.iter())
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            let sql = format!(
                "INSERT INTO {table} ({key}, spec_file, spec_hash, spec, updated_at, {cols})
                 SELECT $1, $2, $3, s, current_timestamp, {exprs} FROM (SELECT $4::JSON AS s)
                 ON CONFLICT ({key}) DO UPDATE SET {updates}",
                table = t.table,
                key = t.key,
                cols = cols.join(", "),
                exprs = exprs.join(", "),
                updates = updates.join(", "),
            );
            let doc = serde_json::to_string(&obj.fields).expect("JSON serializes");
            tx.execute(&sql, params![obj.id, obj.file, obj.hash(), doc])?;
            if change.kind == Kind::Table {
                tx.execute(
                    "INSERT INTO table_grants SELECT ?, unnest(CAST(?::JSON AS VARCHAR[]))",
                    params![
                        obj.id,
                        serde_json::to_string(obj.get("access")).expect("JSON serializes")
                    ],
                )?;
            }
            if change.kind == Kind::Metric {
                // A new definition has not been checked yet.
                tx.execute(
                    "UPDATE metric_definitions SET last_check_at = NULL, last_check_status = NULL,
                     last_check_error = NULL WHERE id = ?",
                    params![obj.id],
                )?;
            }
        }
    }
    Ok(())
}

/// Clears what belonged to a table's previous definition: its grants always; its sync state when it is
/// deleted or replaced (the data is rebuilt from scratch); its view claim when the view goes away.
fn forget_table(
    tx: &Transaction,
    before: &Object,
    action: Action,
    after_name: Option<&str>,
) -> StateResult<()> {
    tx.execute(
        "DELETE FROM table_grants WHERE table_id = ?",
        params![before.id],
    )?;
    if matches!(action, Action::Delete | Action::Replace) {
        tx.execute(
            "DELETE FROM sync_state WHERE table_id = ?",
            params![before.id],
        )?;
    }
    if action != Action::Update || before.str("name") != after_name {
        tx.execute(
            "DELETE FROM view_ownership WHERE view_name = ? AND source = ?",
            params![before.str("name"), before.str("source")],
        )?;
    }
    if action == Action::Delete {
        tx.execute(
            "DELETE FROM pending_tasks WHERE target = ? AND kind IN ('extract', 'attach')",
            params![before.id],
        )?;
    }
    Ok(())
}

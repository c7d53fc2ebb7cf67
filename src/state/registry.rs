//! The registry part of the state: the objects the last apply recorded, and writing an apply.
//!
//! Each registered row keeps its canonical document (`spec` JSON); the typed columns are derived from
//! it in SQL at write time, so the two never disagree and the Rust side binds only four values.

use super::{Reader, StateError, StateResult, StateStore, Writer, ROWS};
use crate::registry::document::{Action, Kind, Object, Objects};
use crate::registry::task::Task;
use duckdb::{params, Transaction};
use serde_json::{Map, Value};

/// Where each kind lives, and how its typed columns derive from the document `s`.
struct KindTable {
    table: &'static str,
    key: &'static str,
    /// `(column, expression over s)`.
    columns: &'static [(&'static str, &'static str)],
}

fn table_of(kind: Kind) -> &'static KindTable {
    const SETTINGS: KindTable = KindTable {
        table: "instance_settings",
        key: "id",
        columns: &[],
    };
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
        Kind::Settings => &SETTINGS,
        Kind::Source => &SOURCES,
        Kind::Table => &TABLES,
        Kind::Transform => &TRANSFORMS,
        Kind::Metric => &METRICS,
    }
}

pub use crate::registry::document::Recorded;

impl StateStore {
    /// The recorded side of the state (empty when there is none yet: planning never creates it).
    /// See [`objects`] for `known`.
    pub fn recorded(&self, known: &Objects) -> StateResult<Recorded> {
        match self.read_if_exists()? {
            Some(r) => recorded(&r, known),
            None => Ok(Recorded::default()),
        }
    }

    /// [`StateStore::recorded`] through an open DuckDB instance (see [`StateStore::read_through`]).
    pub fn recorded_through(
        &self,
        conn: duckdb::Connection,
        known: &Objects,
    ) -> StateResult<Recorded> {
        if !self.exists() {
            return Ok(Recorded::default());
        }
        recorded(&self.read_through(conn)?, known)
    }
}

/// The recorded side of the state, from an open reader.
pub fn recorded(r: &Reader, known: &Objects) -> StateResult<Recorded> {
    Ok(Recorded {
        serial: r.serial()?,
        objects: objects(r, known)?,
        failed_extracts: super::report::failed_extracts(r)?,
    })
}

/// Every registered object.
///
/// `known` are objects the caller already has (the desired ones): a recorded object whose hash and
/// file match a known one is that object, so its document is neither read nor parsed. A no-op plan
/// of a thousand tables reads a thousand short rows, not a thousand JSON documents.
pub fn objects(r: &Reader, known: &Objects) -> StateResult<Objects> {
    let conn = &r.conn;
    let mut out = Objects::new();
    let mut unknown: Vec<(Kind, Value)> = Vec::new();
    for (kind, id, file, hash) in stamps(r)? {
        let key = (kind, id);
        match known.get(&key) {
            Some(o) if o.file == file && o.hash() == hash.as_str() => {
                out.insert(key, o.clone());
            }
            _ => unknown.push((kind, Value::String(key.1))),
        }
    }
    for kind in Kind::ALL {
        let t = table_of(kind);
        let unknown: Vec<Value> = unknown
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, id)| id.clone())
            .collect();
        if unknown.is_empty() {
            continue;
        }
        let sql = format!(
            "SELECT {key}, spec_file, CAST(spec AS VARCHAR) FROM {table}
             WHERE {key} IN (SELECT unnest(CAST($1::JSON AS VARCHAR[])))",
            key = t.key,
            table = t.table
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![json_rows(&unknown)], |r| {
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
            out.insert((kind, id.clone()), Object::new(kind, id, file, fields));
        }
    }
    Ok(out)
}

/// Every registered object's kind, id, spec file and document hash.
pub(super) fn stamps(r: &Reader) -> StateResult<Vec<(Kind, String, String, String)>> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let t = table_of(kind);
        let sql = format!("SELECT {}, spec_file, spec_hash FROM {}", t.key, t.table);
        let mut stmt = r.conn.prepare(&sql)?;
        let rows = stmt.query_map([], |r| Ok((kind, r.get(0)?, r.get(1)?, r.get(2)?)))?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}

impl StateStore {
    /// [`apply`], keeping the registry digest ([`super::digest`]) in step: removed before the
    /// write, written anew after the commit. The caller holds the state lock.
    pub fn apply_registry(&self, set: &WriteSet) -> StateResult<Applied> {
        self.forget_digest()?;
        let mut w = self.write()?;
        let applied = apply(&mut w, set)?;
        self.write_digest(&w);
        Ok(applied)
    }
}

/// What an apply did.
#[derive(Debug)]
pub struct Applied {
    pub serial: i64,
    pub queued_tasks: usize,
}

/// Rows handed to DuckDB as one JSON array parameter: one statement per kind and purpose instead of
/// one per object (a thousand-table apply is a handful of statements, not thousands).
fn json_rows(rows: &[Value]) -> String {
    serde_json::to_string(rows).expect("JSON serializes")
}

/// One object's change, as an apply records it.
#[derive(Clone, Debug)]
pub struct ObjectWrite {
    pub kind: Kind,
    pub id: String,
    pub action: Action,
    /// What it becomes (`None` deletes it).
    pub object: Option<Object>,
    /// What it was (`None` when new).
    pub before: Option<Object>,
    /// What changed, recorded in audit_log.
    pub detail: Value,
}

/// Everything one apply writes, in one transaction.
#[derive(Clone, Debug)]
pub struct WriteSet {
    /// The serial the changes were planned against: if the state moved on, nothing is written.
    pub expected_serial: i64,
    /// The digest of the specs the changes come from (apply_log).
    pub spec_digest: String,
    pub writes: Vec<ObjectWrite>,
    /// Tasks to queue as pending, in order.
    pub tasks: Vec<Task>,
    /// What was applied, as JSON text, for apply_log (`pipeline history` reads its `summary`,
    /// `targets` and `changes[*].id`).
    pub record: String,
    /// The OS or API user.
    pub who: String,
}

/// Writes `set` in one transaction: registry rows, grants, pending tasks, audit_log, apply_log and
/// the serial. Refuses (changing nothing) when the state serial is no longer the one the changes
/// were planned against.
pub fn apply(w: &mut Writer, set: &WriteSet) -> StateResult<Applied> {
    let tx = w.conn().transaction()?;
    let current: String = tx.query_row(
        "SELECT value FROM state_meta WHERE key = 'serial'",
        [],
        |r| r.get(0),
    )?;
    let current: i64 = current.parse().unwrap_or(0);
    if current != set.expected_serial {
        return Err(StateError::Stale(format!(
            "the state is at serial {current} but the plan was made at serial {}: another apply ran in \
             between. Plan again and review the new plan.",
            set.expected_serial
        )));
    }
    let serial = current + 1;
    forget_tables(&tx, &set.writes)?;
    for kind in Kind::ALL {
        let of_kind = || set.writes.iter().filter(move |c| c.kind == kind);
        let deleted: Vec<Value> = of_kind()
            .filter(|c| c.object.is_none())
            .map(|c| Value::String(c.id.clone()))
            .collect();
        let upserts: Vec<Value> = of_kind()
            .filter_map(|c| c.object.as_ref())
            .map(|o| {
                serde_json::json!({"id": o.id, "file": o.file, "hash": o.hash(), "fields": o.fields()})
            })
            .collect();
        write_kind(&tx, kind, &deleted, &upserts)?;
    }
    let audit: Vec<Value> = set
        .writes
        .iter()
        .map(|c| {
            serde_json::json!({
                "action": format!("{} {}", action_word(c.action), c.kind),
                "object": c.id,
                "detail": c.detail,
            })
        })
        .collect();
    tx.execute(
        &format!(
            "INSERT INTO audit_log (who, action, object, detail)
             SELECT $2, d->>'action', d->>'object', d->'detail' FROM {ROWS}"
        ),
        params![json_rows(&audit), set.who],
    )?;
    let tasks: Vec<Value> = set
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"task": t.id, "position": i, "kind": t.kind.as_str(), "target": t.target,
                               "after": t.after, "reason": t.reason})
        })
        .collect();
    tx.execute(
        &format!(
            "INSERT OR REPLACE INTO pending_tasks (task, position, kind, target, after, reason, serial)
             SELECT d->>'task', CAST(d->>'position' AS INTEGER), d->>'kind', d->>'target',
                    CAST(d->'after' AS VARCHAR[]), d->>'reason', $2 FROM {ROWS}"
        ),
        params![json_rows(&tasks), serial],
    )?;
    tx.execute(
        "UPDATE state_meta SET value = ? WHERE key = 'serial'",
        params![serial.to_string()],
    )?;
    tx.execute(
        "INSERT INTO apply_log (serial, spec_digest, plan, who, result) VALUES (?, ?, ?::JSON, ?, 'applied')",
        params![serial, set.spec_digest, set.record, set.who],
    )?;
    tx.commit()?;
    Ok(Applied {
        serial,
        queued_tasks: set.tasks.len(),
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

/// Deletes `deleted` ids and upserts `upserts` (`{id, file, hash, fields}`) of one kind.
fn write_kind(
    tx: &Transaction,
    kind: Kind,
    deleted: &[Value],
    upserts: &[Value],
) -> StateResult<()> {
    let t = table_of(kind);
    if !deleted.is_empty() {
        let sql = format!(
            "DELETE FROM {} WHERE {} IN (SELECT unnest(CAST($1::JSON AS VARCHAR[])))",
            t.table, t.key
        );
        tx.execute(&sql, params![json_rows(deleted)])?;
    }
    if upserts.is_empty() {
        return Ok(());
    }
    // Each typed column with a leading comma, so a kind without any (settings) needs no other SQL.
    let cols: String = t.columns.iter().map(|c| format!(", {}", c.0)).collect();
    let exprs: String = t.columns.iter().map(|c| format!(", {}", c.1)).collect();
    // An upsert that leaves registered_at alone on update.
    let updates: Vec<String> = ["spec_file", "spec_hash", "spec", "updated_at"]
        .iter()
        .chain(t.columns.iter().map(|c| &c.0))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({key}, spec_file, spec_hash, spec, updated_at{cols})
         SELECT id, file, hash, s, current_timestamp{exprs}
         FROM (SELECT d->>'id' AS id, d->>'file' AS file, d->>'hash' AS hash, d->'fields' AS s FROM {ROWS})
         ON CONFLICT ({key}) DO UPDATE SET {updates}",
        table = t.table,
        key = t.key,
        updates = updates.join(", "),
    );
    tx.execute(&sql, params![json_rows(upserts)])?;
    match kind {
        Kind::Table => {
            tx.execute(
                &format!(
                    "INSERT INTO table_grants
                     SELECT id, unnest(CAST(s->'access' AS VARCHAR[]))
                     FROM (SELECT d->>'id' AS id, d->'fields' AS s FROM {ROWS})"
                ),
                params![json_rows(upserts)],
            )?;
        }
        Kind::Metric => {
            // A new definition has not been checked yet.
            tx.execute(
                &format!(
                    "UPDATE metric_definitions SET last_check_at = NULL, last_check_status = NULL,
                     last_check_error = NULL WHERE id IN (SELECT d->>'id' FROM {ROWS})"
                ),
                params![json_rows(upserts)],
            )?;
        }
        Kind::Settings | Kind::Source | Kind::Transform => {}
    }
    Ok(())
}

/// Clears what belonged to changed tables' previous definitions: their grants always; their sync
/// state and profile when deleted or replaced (the data is rebuilt from scratch); their view claim
/// when the view goes away or is renamed; the extract tasks of deleted ones.
fn forget_tables(tx: &Transaction, changes: &[ObjectWrite]) -> StateResult<()> {
    let (mut grants, mut sync, mut views, mut tasks) = (vec![], vec![], vec![], vec![]);
    for c in changes.iter().filter(|c| c.kind == Kind::Table) {
        let Some(before) = &c.before else { continue };
        let id = Value::String(before.id.clone());
        grants.push(id.clone());
        if matches!(c.action, Action::Delete | Action::Replace) {
            sync.push(id.clone());
        }
        let after_name = c.object.as_ref().and_then(|o| o.str("name"));
        if c.action != Action::Update || before.str("name") != after_name {
            views.push(
                serde_json::json!({"name": before.str("name"), "source": before.str("source")}),
            );
        }
        if c.action == Action::Delete {
            tasks.push(id);
        }
    }
    let by_id = [
        ("DELETE FROM table_grants WHERE table_id", &grants),
        ("DELETE FROM sync_state WHERE table_id", &sync),
        ("DELETE FROM profiles WHERE table_id", &sync),
        (
            "DELETE FROM pending_tasks WHERE kind IN ('extract', 'attach') AND target",
            &tasks,
        ),
    ];
    for (delete, ids) in by_id {
        if !ids.is_empty() {
            let sql = format!("{delete} IN (SELECT unnest(CAST($1::JSON AS VARCHAR[])))");
            tx.execute(&sql, params![json_rows(ids)])?;
        }
    }
    if !views.is_empty() {
        tx.execute(
            &format!(
                "DELETE FROM view_ownership WHERE (view_name, source) IN
                 (SELECT (d->>'name', d->>'source') FROM {ROWS})"
            ),
            params![json_rows(&views)],
        )?;
    }
    Ok(())
}

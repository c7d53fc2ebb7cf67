//! The workspace's `analytics.duckdb`: a view per downloaded table over its Parquet by a path
//! relative to the workspace root, the transforms whose inputs are local as views of their SQL,
//! column and table documentation as DuckDB comments, and `_pipeline.tables` (freshness, which
//! tables are remote), `_pipeline.transforms`, `_pipeline.metrics` and `_pipeline.info`.
//!
//! Relative paths keep the directory movable: [`open`] sets DuckDB's `file_search_path` to the
//! root, and the DuckDB CLI started in the root resolves them the same way. The file is built
//! aside in `.pipeline/` and renamed over the previous one, so a reader never sees a half-built
//! database and a failed build keeps the last good one.

use super::{LocalState, Workspace, WorkspaceError};
use crate::quote;
use duckdb::Connection;

const META: &str = "_pipeline";

/// Builds and swaps in `analytics.duckdb` for `state`; notes on what could not be a local view.
pub fn build(ws: &Workspace, state: &LocalState) -> Result<Vec<String>, WorkspaceError> {
    let aside = ws.marker().join("analytics.duckdb.new");
    let wal = ws.marker().join("analytics.duckdb.new.wal");
    for p in [&aside, &wal] {
        let _ = std::fs::remove_file(p);
    }
    let notes = {
        let conn = Connection::open(&aside)?;
        let notes = fill(&conn, ws, state)?;
        conn.execute_batch("CHECKPOINT")?;
        notes
    };
    let _ = std::fs::remove_file(&wal);
    std::fs::rename(&aside, ws.analytics()).map_err(|e| WorkspaceError::io(&ws.analytics(), e))?;
    Ok(notes)
}

fn fill(
    conn: &Connection,
    ws: &Workspace,
    state: &LocalState,
) -> Result<Vec<String>, WorkspaceError> {
    let mut notes = Vec::new();
    conn.execute_batch(&format!(
        "SET TimeZone = 'UTC'; SET file_search_path = {}; CREATE SCHEMA {META};",
        quote::literal(&ws.root.to_string_lossy())
    ))?;
    // Every table's statements in one transaction (a commit per view would cost an fsync each);
    // should one not bind, the tables go one by one to skip only that one.
    let mut per_table: Vec<(String, String)> = Vec::new();
    for t in &state.tables {
        let Some(view) = quote::ident(&t.name) else {
            notes.push(format!(
                "table `{}`: not a safe identifier; no view",
                t.name
            ));
            continue;
        };
        if t.files.is_empty() {
            notes.push(format!(
                "table `{}`: no data on the server yet; no view",
                t.name
            ));
            continue;
        }
        let mut sql = format!(
            "CREATE VIEW {view} AS SELECT * FROM read_parquet({});\n",
            quote::literal(&t.relative_scan_path())
        );
        if let Some(d) = &t.description {
            sql.push_str(&format!(
                "COMMENT ON VIEW {view} IS {};\n",
                quote::literal(d)
            ));
        }
        per_table.push((t.name.clone(), sql));
    }
    let all: String = per_table.iter().map(|(_, s)| s.as_str()).collect();
    if conn
        .execute_batch(&format!("BEGIN;\n{all}COMMIT;"))
        .is_err()
    {
        let _ = conn.execute_batch("ROLLBACK");
        for (name, sql) in &per_table {
            if let Err(e) = conn.execute_batch(&format!("BEGIN;\n{sql}COMMIT;")) {
                let _ = conn.execute_batch("ROLLBACK");
                notes.push(format!("table `{name}`: no view ({e})"));
            }
        }
    }
    // Column comments one by one: a documented column the data lacks costs only its comment.
    conn.execute_batch("BEGIN")?;
    for t in &state.tables {
        let Some(view) = quote::ident(&t.name) else {
            continue;
        };
        for (col, doc) in &t.columns {
            if let Some(c) = quote::ident(col) {
                let _ = conn.execute_batch(&format!(
                    "COMMENT ON COLUMN {view}.{c} IS {}",
                    quote::literal(doc)
                ));
            }
        }
    }
    conn.execute_batch("COMMIT")?;
    // Transforms over local views: those that read remote tables (or other transforms that do)
    // stay on the server. Repeat while some transform becomes buildable.
    let mut pending: Vec<&super::TransformDoc> = state.transforms.iter().collect();
    let mut status: Vec<(String, String, Option<String>)> = Vec::new();
    loop {
        let mut left = Vec::new();
        let mut built = false;
        let mut last_error = std::collections::BTreeMap::new();
        for t in pending.drain(..) {
            let Some(view) = quote::ident(&t.name) else {
                let why = "not a safe identifier".to_string();
                status.push((t.name.clone(), "server_only".into(), Some(why)));
                continue;
            };
            let mut sql = format!(
                "CREATE VIEW {view} AS {};",
                t.sql.trim().trim_end_matches(';')
            );
            if let Some(d) = &t.description {
                sql.push_str(&format!("COMMENT ON VIEW {view} IS {};", quote::literal(d)));
            }
            match conn.execute_batch(&format!("BEGIN; {sql} COMMIT;")) {
                Ok(()) => {
                    built = true;
                    status.push((t.name.clone(), "local".into(), None));
                }
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    last_error.insert(t.name.clone(), first_line(&e.to_string()));
                    left.push(t);
                }
            }
        }
        if left.is_empty() {
            break;
        }
        if !built {
            for t in left {
                let why = last_error.remove(&t.name).unwrap_or_default();
                notes.push(format!(
                    "transform `{}` is not a local view (query it with --server): {why}",
                    t.name
                ));
                status.push((t.name.clone(), "server_only".into(), Some(why)));
            }
            break;
        }
        pending = left;
    }
    write_meta(conn, state, &status)?;
    Ok(notes)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

fn write_meta(
    conn: &Connection,
    state: &LocalState,
    transforms: &[(String, String, Option<String>)],
) -> Result<(), WorkspaceError> {
    use serde_json::json;
    let from = "(SELECT unnest(CAST($1::JSON AS JSON[])) AS d)";
    let mut tables: Vec<serde_json::Value> = state
        .tables
        .iter()
        .map(|t| {
            json!({"name": t.name, "source": t.source, "query_mode": "local",
                   "description": t.description, "rows": t.freshness.rows,
                   "last_sync": t.freshness.last_sync, "local": true,
                   "files": t.files.len(), "size_bytes": t.size_bytes()})
        })
        .collect();
    tables.extend(state.remote_tables.iter().map(|t| {
        json!({"name": t.name, "source": t.source, "query_mode": "remote",
               "description": t.description, "local": false, "files": 0})
    }));
    let transforms: Vec<serde_json::Value> = transforms
        .iter()
        .map(|(n, s, r)| json!({"name": n, "status": s, "reason": r}))
        .collect();
    let metrics: Vec<serde_json::Value> = state
        .metrics
        .iter()
        .map(|m| {
            json!({"id": m["id"], "display_name": m["display_name"], "description": m["description"],
                   "unit": m["unit"], "sql": m["sql"], "definition": m.to_string()})
        })
        .collect();
    let info = vec![
        json!({"key": "server", "value": state.server}),
        json!({"key": "pulled_at", "value": state.pulled_at}),
        json!({"key": "pipeline_version", "value": env!("CARGO_PKG_VERSION")}),
    ];
    let s = META;
    conn.execute_batch(&format!(
        "BEGIN;
         CREATE TABLE {s}.tables (name VARCHAR PRIMARY KEY, source VARCHAR, query_mode VARCHAR,
             description VARCHAR, rows BIGINT, last_sync TIMESTAMPTZ, pulled_at TIMESTAMPTZ,
             local BOOLEAN, files INTEGER, size_bytes BIGINT);
         CREATE TABLE {s}.transforms (name VARCHAR PRIMARY KEY, status VARCHAR, reason VARCHAR);
         CREATE TABLE {s}.metrics (id VARCHAR PRIMARY KEY, display_name VARCHAR, description VARCHAR,
             unit VARCHAR, sql VARCHAR, definition JSON);
         CREATE TABLE {s}.info (key VARCHAR PRIMARY KEY, value VARCHAR);"
    ))?;
    let text = |v: Vec<serde_json::Value>| serde_json::Value::Array(v).to_string();
    conn.execute(
        &format!(
            "INSERT INTO {s}.tables SELECT d->>'name', d->>'source', d->>'query_mode', d->>'description',
                 TRY_CAST(d->>'rows' AS BIGINT), TRY_CAST(d->>'last_sync' AS TIMESTAMPTZ),
                 TRY_CAST($2 AS TIMESTAMPTZ), CAST(d->>'local' AS BOOLEAN),
                 CAST(d->>'files' AS INTEGER), TRY_CAST(d->>'size_bytes' AS BIGINT) FROM {from}"
        ),
        duckdb::params![text(tables), state.pulled_at],
    )?;
    conn.execute(
        &format!(
            "INSERT INTO {s}.transforms SELECT d->>'name', d->>'status', d->>'reason' FROM {from}"
        ),
        [text(transforms)],
    )?;
    conn.execute(
        &format!(
            "INSERT INTO {s}.metrics SELECT d->>'id', d->>'display_name', d->>'description',
                 d->>'unit', d->>'sql', CAST(d->>'definition' AS JSON) FROM {from}"
        ),
        [text(metrics)],
    )?;
    conn.execute(
        &format!("INSERT INTO {s}.info SELECT d->>'key', d->>'value' FROM {from}"),
        [text(info)],
    )?;
    conn.execute_batch("COMMIT")?;
    Ok(())
}

/// The workspace's database, read-only, with relative paths resolving against the root wherever
/// the workspace now lies.
pub fn open(ws: &Workspace) -> Result<Connection, WorkspaceError> {
    let path = ws.analytics();
    if !path.is_file() {
        return Err(WorkspaceError::Invalid(format!(
            "{} has no analytics.duckdb: run `pipeline pull` there",
            ws.root.display()
        )));
    }
    let config = duckdb::Config::default().access_mode(duckdb::AccessMode::ReadOnly)?;
    let conn = Connection::open_with_flags(&path, config)?;
    conn.execute_batch(&format!(
        "SET file_search_path = {}",
        quote::literal(&ws.root.to_string_lossy())
    ))?;
    Ok(conn)
}

/// Runs `sql` on `conn` and answers like `POST /api/query`: `{"columns": [{"name", "type"}],
/// "rows": [[…]], "row_count", "truncated"}`, at most `max_rows` rows (the result streams: rows
/// past the limit are never computed when the plan allows).
pub fn query_json(
    conn: &Connection,
    sql: &str,
    max_rows: usize,
) -> Result<serde_json::Value, WorkspaceError> {
    use crate::value_text::ColumnType;
    let mut stmt = conn.prepare(sql)?;
    drop(stmt.stream_arrow([])?);
    let mut rows = stmt.raw_query();
    let (names, types): (Vec<String>, Vec<String>) = match rows.as_ref() {
        Some(s) => (
            s.column_names(),
            (0..s.column_count())
                .map(|i| ColumnType::of(&s.column_logical_type(i)).name())
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
        let values: Vec<serde_json::Value> = (0..names.len())
            .map(|i| {
                row.get::<_, duckdb::types::Value>(i)
                    .map(|v| crate::value_json::json(&v))
            })
            .collect::<Result<_, _>>()?;
        out.push(serde_json::Value::Array(values));
    }
    let columns: Vec<serde_json::Value> = names
        .iter()
        .zip(&types)
        .map(|(n, t)| serde_json::json!({"name": n, "type": t}))
        .collect();
    Ok(
        serde_json::json!({"columns": columns, "row_count": out.len(), "rows": out,
                          "truncated": truncated}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::{LocalFile, LocalTable, RemoteTable, TransformDoc};

    fn parquet(conn: &Connection, path: &std::path::Path, select: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        conn.execute_batch(&format!(
            "COPY ({select}) TO {} (FORMAT parquet)",
            quote::literal(&path.to_string_lossy())
        ))
        .unwrap();
    }

    fn table(name: &str, partitioned: bool, files: &[&str]) -> LocalTable {
        LocalTable {
            name: name.into(),
            source: "shop".into(),
            description: Some(format!("{name} it's documented")),
            columns: [("id".to_string(), "The id".to_string())].into(),
            freshness: Default::default(),
            partitioned,
            files: files
                .iter()
                .map(|p| LocalFile {
                    path: p.to_string(),
                    sha256: "0".repeat(64),
                    size_bytes: 1,
                    etag: None,
                })
                .collect(),
            profile: None,
        }
    }

    /// Views read the Parquet by relative paths: after the directory moves, every view (single
    /// file, partitions, a transform over both) still answers; what cannot be local is said.
    #[test]
    fn a_built_workspace_survives_a_move() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::at(&tmp.path().join("a"));
        let mem = Connection::open_in_memory().unwrap();
        parquet(
            &mem,
            &ws.root.join("data/shop/orders.parquet"),
            "SELECT range AS id FROM range(5)",
        );
        parquet(
            &mem,
            &ws.root.join("data/shop/events/m=1.parquet"),
            "SELECT 1 AS id",
        );
        parquet(
            &mem,
            &ws.root.join("data/shop/events/m=2.parquet"),
            "SELECT 2 AS id",
        );
        std::fs::create_dir_all(ws.marker()).unwrap();
        let mut state = LocalState::new("http://x");
        state.tables = vec![
            table(
                "events",
                true,
                &[
                    "data/shop/events/m=1.parquet",
                    "data/shop/events/m=2.parquet",
                ],
            ),
            table("orders", false, &["data/shop/orders.parquet"]),
        ];
        state.remote_tables = vec![RemoteTable {
            name: "big".into(),
            source: "wh".into(),
            description: None,
            columns: Default::default(),
        }];
        // Listed before what it reads: built in a second round.
        state.transforms = vec![
            TransformDoc {
                name: "a_total".into(),
                description: None,
                inputs: vec!["b_both".into()],
                sql: "select sum(id) as s from b_both".into(),
            },
            TransformDoc {
                name: "b_both".into(),
                description: None,
                inputs: vec![],
                sql: "select id from orders union all select id from events;".into(),
            },
            TransformDoc {
                name: "c_remote".into(),
                description: None,
                inputs: vec!["big".into()],
                sql: "select * from big".into(),
            },
        ];
        let notes = build(&ws, &state).unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("c_remote"), "{notes:?}");

        let moved = Workspace::at(&tmp.path().join("elsewhere"));
        std::fs::rename(&ws.root, &moved.root).unwrap();
        let conn = open(&moved).unwrap();
        let n = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(n("SELECT count(*) FROM orders"), 5);
        assert_eq!(n("SELECT count(*) FROM events"), 2);
        assert_eq!(n("SELECT s FROM a_total"), 13);
        assert_eq!(
            n("SELECT count(*) FROM _pipeline.tables WHERE NOT local AND name = 'big'"),
            1
        );
        assert_eq!(
            n("SELECT count(*) FROM _pipeline.transforms WHERE status = 'server_only'"),
            1
        );
        let comment: String = conn
            .query_row(
                "SELECT comment FROM duckdb_columns() WHERE table_name = 'orders' AND column_name = 'id'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(comment, "The id");
        let v = query_json(&conn, "SELECT id FROM orders ORDER BY id", 2).unwrap();
        assert_eq!(v["rows"], serde_json::json!([[0], [1]]));
        assert_eq!(v["truncated"], true);
        assert_eq!(v["columns"][0]["type"], "BIGINT");
    }
}

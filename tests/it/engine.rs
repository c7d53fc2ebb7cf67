//! The engine end to end: `apply` and `run` extract real files, write the extract.duckdb contract,
//! rebuild analytics.duckdb from every extract (ours and hand-written ones), survive bad input and
//! SIGKILL, and `query`/`graph` show the result.

use crate::common::Instance;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const CONFIG: (&str, &str) = ("config/instance.yaml", "name: Test\ntimezone: UTC\n");

/// The contract's DDL, written out as DESIGN.md §4 fixes it (not taken from the crate).
const META_DDL: &str = "CREATE TABLE _meta (table_name VARCHAR NOT NULL, description VARCHAR, \
    rows BIGINT, size_bytes BIGINT, extracted_at TIMESTAMP, query_mode VARCHAR DEFAULT 'local')";
const REMOTE_ATTACH_DDL: &str =
    "CREATE TABLE _remote_attach (alias VARCHAR, extension VARCHAR, url VARCHAR, token_env VARCHAR)";

/// A `pipeline run --format json`: exit code, events, stderr.
struct Run {
    code: i32,
    events: Vec<Value>,
    stderr: String,
}

impl Run {
    fn dump(&self) -> String {
        let events: Vec<String> = self.events.iter().map(|e| e.to_string()).collect();
        format!("{}\nstderr:\n{}", events.join("\n"), self.stderr)
    }

    fn finished(&self) -> &Value {
        self.events
            .iter()
            .rev()
            .find(|e| e["event"] == "run_finished")
            .unwrap_or_else(|| panic!("no run_finished event:\n{}", self.dump()))
    }

    fn task(&self, id: &str) -> &Value {
        self.events
            .iter()
            .find(|e| e["event"] == "task_finished" && e["task"] == id)
            .unwrap_or_else(|| panic!("no task_finished for {id}:\n{}", self.dump()))
    }

    fn status(&self, id: &str) -> &str {
        self.task(id)["status"].as_str().unwrap()
    }

    /// The finished tasks whose id starts with `prefix`, with their status.
    fn statuses(&self, prefix: &str) -> Vec<(String, String)> {
        self.events
            .iter()
            .filter(|e| e["event"] == "task_finished")
            .filter(|e| e["task"].as_str().unwrap().starts_with(prefix))
            .map(|e| {
                (
                    e["task"].as_str().unwrap().to_string(),
                    e["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn warnings(&self) -> Vec<String> {
        self.finished()["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect()
    }

    /// The one warning containing every needle.
    fn warning(&self, needles: &[&str]) -> String {
        let found: Vec<String> = self
            .warnings()
            .into_iter()
            .filter(|w| needles.iter().all(|n| w.contains(n)))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one warning with {needles:?}:\n{}",
            self.dump()
        );
        found[0].clone()
    }
}

/// `pipeline run --format json` plus `args`.
fn run(inst: &Instance, args: &[&str]) -> Run {
    run_with(inst, args, |c| c)
}

fn run_with(
    inst: &Instance,
    args: &[&str],
    env: impl FnOnce(&mut assert_cmd::Command) -> &mut assert_cmd::Command,
) -> Run {
    let mut cmd = inst.cmd();
    cmd.args(["run", "--format", "json"]).args(args);
    let out = env(&mut cmd).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let events = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON event ({e}): {l}\nstderr:\n{stderr}"))
        })
        .collect();
    Run {
        code: out.status.code().unwrap_or(-1),
        events,
        stderr,
    }
}

/// `pipeline query --format json`: one object per row.
fn query(inst: &Instance, sql: &str) -> Vec<Value> {
    let out = inst
        .cmd()
        .args(["query", "--format", "json", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "query `{sql}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Rows of `relation` through `pipeline query`.
fn count(inst: &Instance, relation: &str) -> i64 {
    query(inst, &format!("SELECT count(*) AS n FROM {relation}"))[0]["n"]
        .as_i64()
        .unwrap()
}

/// Rows of `relation` on a plain DuckDB connection.
fn plain_count(conn: &duckdb::Connection, relation: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {relation}"), [], |r| {
        r.get(0)
    })
    .unwrap_or_else(|e| panic!("{relation}: {e}"))
}

fn strings(conn: &duckdb::Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A SQL string literal naming `p`.
fn lit(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', "''"))
}

fn read_only(path: &Path) -> duckdb::Connection {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .unwrap();
    duckdb::Connection::open_with_flags(path, config)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The instance's root as the engine names it in views (absolute, symlinks resolved).
fn canonical(inst: &Instance) -> PathBuf {
    std::fs::canonicalize(inst.path()).unwrap()
}

/// Writes `data/extracts/<dir>/extract.duckdb` the way another tool would: the contract's two
/// tables, then whatever `build` adds (rows, views, tables). Returns the extract directory.
fn write_extract(inst: &Instance, dir: &str, build: impl FnOnce(&duckdb::Connection)) -> PathBuf {
    let dir = canonical(inst).join("data/extracts").join(dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let conn = duckdb::Connection::open(dir.join("extract.duckdb")).unwrap();
    conn.execute_batch(&format!("{META_DDL}; {REMOTE_ATTACH_DDL};"))
        .unwrap();
    build(&conn);
    conn.execute_batch("CHECKPOINT").unwrap();
    drop(conn);
    dir
}

/// A DuckDB file at `path` made by `sql`.
fn duckdb_file(path: &Path, sql: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = duckdb::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
    conn.execute_batch("CHECKPOINT").unwrap();
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Files under data/ that a finished writer must not leave behind: WALs and staging copies.
fn leftovers(inst: &Instance) -> Vec<PathBuf> {
    walk(&inst.path().join("data"))
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".wal") || name.ends_with(".duckdb.tmp") || name.ends_with(".parquet.tmp")
        })
        .collect()
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .modified()
        .unwrap()
}

/// Two csv sources; `shop` has a transform over a table and a view over that transform.
fn two_sources() -> Instance {
    Instance::from_files(&[
        CONFIG,
        (
            "pipelines/shop.yaml",
            "type: csv\nconnection:\n  path: files/shop\ntransforms:\n  - name: big_orders\n    sql: select * from orders where amount > 2\n  - name: big_spenders\n    materialized: view\n    sql: select customer_id, count(*) as n from big_orders group by 1\n",
        ),
        ("pipelines/crm.yaml", "type: csv\nconnection:\n  path: files/crm\n"),
        (
            "registry/tables.yaml",
            "tables:\n  - {source: shop, source_table: orders}\n  - {source: shop, source_table: customers}\n  - {source: crm, source_table: spend}\n",
        ),
        (
            "files/shop/orders.csv",
            "order_id,customer_id,amount\n1,10,1.5\n2,10,3.0\n3,11,4.0\n4,12,9.5\n5,12,2.0\n",
        ),
        ("files/shop/customers.csv", "customer_id,name\n10,Ann\n11,Bo\n12,Cy\n"),
        (
            "files/crm/spend.csv",
            "day,channel,cost\n2026-01-01,ads,10\n2026-01-01,mail,2\n2026-01-02,ads,11\n2026-01-02,mail,3\n",
        ),
    ])
}

#[test]
fn apply_publishes_every_table_and_transform_and_an_unchanged_rerun_touches_nothing() {
    let inst = two_sources();
    inst.apply();
    let expected = [
        ("orders", 5),
        ("customers", 3),
        ("spend", 4),
        ("big_orders", 3),
        ("big_spenders", 2),
    ];
    for (rel, n) in expected {
        assert_eq!(count(&inst, rel), n, "{rel} through pipeline query");
    }
    // A plain DuckDB session needs no setup: local views read the Parquet directly.
    let conn = inst.analytics();
    for (rel, n) in expected {
        assert_eq!(plain_count(&conn, rel), n, "{rel} in a plain session");
    }
    assert_eq!(
        strings(&conn, "SELECT name || '@' || source FROM _pipeline.tables ORDER BY name"),
        ["customers@shop", "orders@shop", "spend@crm"]
    );
    assert_eq!(
        strings(&conn, "SELECT name || ':' || status FROM _pipeline.transforms ORDER BY name"),
        ["big_orders:ok", "big_spenders:ok"]
    );
    drop(conn);

    let root = inst.path().join("data");
    let files: Vec<PathBuf> = [
        "analytics/analytics.duckdb",
        "extracts/shop/extract.duckdb",
        "extracts/shop/data/orders.parquet",
        "extracts/shop/data/customers.parquet",
        "extracts/crm/extract.duckdb",
        "extracts/crm/data/spend.parquet",
    ]
    .iter()
    .map(|f| root.join(f))
    .collect();
    let before: Vec<SystemTime> = files.iter().map(|f| mtime(f)).collect();

    let again = run(&inst, &[]);
    assert_eq!(again.code, 0, "{}", again.dump());
    let mut extracts = again.statuses("extract:");
    extracts.sort();
    assert_eq!(
        extracts,
        [
            ("extract:crm.spend".into(), "unchanged".into()),
            ("extract:shop.customers".into(), "unchanged".into()),
            ("extract:shop.orders".into(), "unchanged".into()),
        ],
        "{}",
        again.dump()
    );
    assert_eq!(again.status("publish:analytics"), "unchanged");
    assert_eq!(again.finished()["published"], false);
    let after: Vec<SystemTime> = files.iter().map(|f| mtime(f)).collect();
    for ((f, b), a) in files.iter().zip(&before).zip(&after) {
        assert_eq!(b, a, "{} was rewritten by a run with nothing to do", f.display());
    }
    assert_eq!(count(&inst, "big_spenders"), 2);
}

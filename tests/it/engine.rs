//! The engine end to end: `apply` and `run` extract real files, write the extract.duckdb contract,
//! rebuild analytics.duckdb from every extract (ours and hand-written ones), survive bad input and
//! SIGKILL, and `query`/`graph` show the result.

use crate::common::Instance;
use crate::common::{count, query};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
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
    run_cmd(inst.cmd(), args)
}

/// `cmd` (`pipeline --dir …`, its environment set) with `run --format json` plus `args`.
fn run_cmd(mut cmd: assert_cmd::Command, args: &[&str]) -> Run {
    let out = cmd
        .args(["run", "--format", "ndjson"])
        .args(args)
        .output()
        .unwrap();
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

/// Rows of each relation, in one `pipeline query`.
fn counts(inst: &Instance, relations: &[&str]) -> Vec<i64> {
    let sql = relations
        .iter()
        .enumerate()
        .map(|(i, r)| format!("(SELECT count(*) FROM {r}) AS c{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let row = &query(inst, &format!("SELECT {sql}"))[0];
    (0..relations.len())
        .map(|i| row[format!("c{i}")].as_i64().unwrap())
        .collect()
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
            name.ends_with(".wal")
                || name.ends_with(".duckdb.tmp")
                || name.ends_with(".parquet.tmp")
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
            "order_id,customer_id,amount\n1,10,1.5\n2,11,3.0\n3,11,4.0\n4,12,9.5\n5,12,2.0\n",
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
    let (relations, rows): (Vec<&str>, Vec<i64>) = expected.into_iter().unzip();
    assert_eq!(
        counts(&inst, &relations),
        rows,
        "{relations:?} through pipeline query"
    );
    // A plain DuckDB session needs no setup: local views read the Parquet directly.
    let conn = inst.analytics();
    for (rel, n) in expected {
        assert_eq!(plain_count(&conn, rel), n, "{rel} in a plain session");
    }
    assert_eq!(
        strings(
            &conn,
            "SELECT name || '@' || source FROM _pipeline.tables ORDER BY name"
        ),
        ["customers@shop", "orders@shop", "spend@crm"]
    );
    assert_eq!(
        strings(
            &conn,
            "SELECT name || ':' || status FROM _pipeline.transforms ORDER BY name"
        ),
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
        assert_eq!(
            b,
            a,
            "{} was rewritten by a run with nothing to do",
            f.display()
        );
    }
    assert_eq!(count(&inst, "big_spenders"), 2);
}

#[test]
fn extract_duckdb_matches_the_contract_column_for_column() {
    let inst = two_sources();
    inst.apply();
    let root = canonical(&inst);
    let dir = root.join("data/extracts/shop");
    let conn = read_only(&dir.join("extract.duckdb"));
    let columns = |table: &str| {
        strings(
            &conn,
            &format!(
                "SELECT column_name || ' ' || data_type || CASE WHEN is_nullable THEN '' ELSE ' NOT NULL' END \
                 || coalesce(' DEFAULT ' || column_default, '') FROM duckdb_columns() \
                 WHERE schema_name = 'main' AND table_name = '{table}' ORDER BY column_index"
            ),
        )
    };
    assert_eq!(
        columns("_meta"),
        [
            "table_name VARCHAR NOT NULL",
            "description VARCHAR",
            "rows BIGINT",
            "size_bytes BIGINT",
            "extracted_at TIMESTAMP",
            "query_mode VARCHAR DEFAULT 'local'",
        ]
    );
    assert_eq!(
        columns("_remote_attach"),
        [
            "alias VARCHAR",
            "extension VARCHAR",
            "url VARCHAR",
            "token_env VARCHAR"
        ]
    );
    // Nothing but the contract's tables, and one view per table over its Parquet (absolute path).
    assert_eq!(
        strings(&conn, "SELECT table_name FROM duckdb_tables() ORDER BY 1"),
        ["_meta", "_remote_attach"]
    );
    assert_eq!(
        plain_count(&conn, "_remote_attach"),
        0,
        "a csv source attaches nothing"
    );
    let views = strings(
        &conn,
        "SELECT view_name || ' => ' || sql FROM duckdb_views() WHERE NOT internal ORDER BY view_name",
    );
    assert_eq!(views.len(), 2, "{views:?}");
    for (view, table) in views.iter().zip(["customers", "orders"]) {
        let parquet = dir.join(format!("data/{table}.parquet"));
        assert!(view.starts_with(&format!("{table} => ")), "{view}");
        assert!(
            view.contains(&format!("read_parquet({})", lit(&parquet))),
            "{view} does not read {}",
            parquet.display()
        );
    }
    let mut stmt = conn
        .prepare(
            "SELECT table_name, description, rows, size_bytes, extracted_at IS NOT NULL, query_mode \
             FROM _meta ORDER BY table_name",
        )
        .unwrap();
    let meta: Vec<(String, Option<String>, i64, i64, bool, String)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(meta.len(), 2);
    for ((name, description, rows, size, stamped, mode), expected_rows) in meta.iter().zip([3, 5]) {
        assert_eq!(description, &None);
        assert_eq!(*rows, expected_rows, "{name}: rows");
        assert_eq!(
            *rows,
            plain_count(&conn, name),
            "{name}: rows = its view's count"
        );
        let bytes = std::fs::metadata(dir.join(format!("data/{name}.parquet")))
            .unwrap()
            .len();
        assert_eq!(*size as u64, bytes, "{name}: size_bytes = Parquet bytes");
        assert!(stamped, "{name}: extracted_at");
        assert_eq!(mode, "local");
    }
    drop(conn);
    let left = leftovers(&inst);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_hand_written_extract_with_a_local_and_a_remote_table_is_published() {
    let inst = two_sources();
    inst.apply();
    let root = canonical(&inst);
    // Another tool's database, which the extract's remote table reads at query time.
    let other = root.join("elsewhere/other.duckdb");
    duckdb_file(
        &other,
        "CREATE TABLE x AS SELECT range AS id, 'r' || range AS label FROM range(4)",
    );
    let dir = root.join("data/extracts/handmade");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let parquet = dir.join("data/t.parquet");
    duckdb::Connection::open_in_memory()
        .unwrap()
        .execute_batch(&format!(
            "COPY (SELECT range AS k FROM range(3)) TO {} (FORMAT parquet)",
            lit(&parquet)
        ))
        .unwrap();
    let size = std::fs::metadata(&parquet).unwrap().len();
    write_extract(&inst, "handmade", |c| {
        c.execute_batch(&format!(
            "INSERT INTO _meta VALUES ('t', 'made by hand', 3, {size}, TIMESTAMP '2026-01-02 03:04:05', 'local');
             INSERT INTO _meta (table_name, description, query_mode) VALUES ('x', 'read at the source', 'remote');
             INSERT INTO _remote_attach VALUES ('rem', 'duckdb', {}, NULL);
             CREATE VIEW t AS SELECT * FROM read_parquet({});
             ATTACH {} AS rem (READ_ONLY);
             CREATE VIEW x AS SELECT * FROM rem.main.x;
             DETACH rem;",
            lit(&other),
            lit(&parquet),
            lit(&other)
        ))
        .unwrap();
    });

    let r = run(&inst, &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.finished()["published"], true, "{}", r.dump());
    assert!(r.warnings().is_empty(), "{}", r.dump());
    assert_eq!(counts(&inst, &["t", "x"]), [3, 4]);
    assert_eq!(
        query(&inst, "SELECT label FROM x WHERE id = 2")[0]["label"],
        "r2"
    );
    let published = query(
        &inst,
        "SELECT name, source, query_mode, description, rows, needs_attach FROM _pipeline.tables \
         WHERE source = 'handmade' ORDER BY name",
    );
    assert_eq!(
        published,
        [
            serde_json::json!({"name": "t", "source": "handmade", "query_mode": "local",
                "description": "made by hand", "rows": 3, "needs_attach": false}),
            serde_json::json!({"name": "x", "source": "handmade", "query_mode": "remote",
                "description": "read at the source", "rows": null, "needs_attach": true}),
        ]
    );
    // The local one needs no setup; the remote one is live: a new row at the source shows at once.
    assert_eq!(plain_count(&inst.analytics(), "t"), 3);
    duckdb_file(&other, "INSERT INTO x VALUES (4, 'r4')");
    assert_eq!(count(&inst, "x"), 5);
    // Our own tables are untouched by the newcomer.
    assert_eq!(count(&inst, "orders"), 5);
}

/// Allowed by the instance, never set by the tests.
const UNSET_TOKEN: &str = "PIPELINE_TEST_ENGINE_TOKEN_NEVER_SET";

#[test]
fn adversarial_extracts_are_skipped_with_a_reason_and_the_rest_publishes() {
    let inst = two_sources();
    inst.write(
        "config/instance.yaml",
        &format!(
            "name: Test\ntimezone: UTC\nremote_attach:\n  extensions: [postgres]\n  token_envs: [{UNSET_TOKEN}]\n"
        ),
    );
    // apply insists on every variable the specs name; `run` is where the unset one must only warn.
    inst.cmd()
        .env(UNSET_TOKEN, "only-for-apply")
        .args(["apply", "--auto-approve"])
        .assert()
        .success();
    let root = canonical(&inst);
    let extracts = root.join("data/extracts");
    // Views over remote databases bind at creation: a local stand-in is attached under the alias
    // while they are written, so only the `_remote_attach` row decides at rebuild.
    let standin = root.join("elsewhere/standin.duckdb");
    duckdb_file(&standin, "CREATE TABLE t AS SELECT 1 AS a");
    let remote_view = |c: &duckdb::Connection, alias: &str, view: &str| {
        c.execute_batch(&format!(
            "ATTACH {} AS {alias} (READ_ONLY); CREATE VIEW {view} AS SELECT * FROM {alias}.main.t; DETACH {alias};",
            lit(&standin)
        ))
        .unwrap();
    };

    // 1. Not a database at all.
    std::fs::create_dir_all(extracts.join("garbage")).unwrap();
    std::fs::write(
        extracts.join("garbage/extract.duckdb"),
        b"this is not a DuckDB file\n",
    )
    .unwrap();
    // 2. `_meta` names a table with neither a view nor Parquet.
    write_extract(&inst, "ghost", |c| {
        c.execute_batch("INSERT INTO _meta (table_name, rows) VALUES ('phantom', 1)")
            .unwrap();
    });
    // 3. A directory name carrying SQL, with an otherwise valid extract.
    let sql_dir = "x\"; drop table y; --";
    write_extract(&inst, sql_dir, |c| {
        c.execute_batch(
            "INSERT INTO _meta (table_name, rows) VALUES ('sneaky', 1); CREATE VIEW sneaky AS SELECT 1 AS a;",
        )
        .unwrap();
    });
    // 4. A table name carrying SQL, beside a good table kept inside the extract file.
    write_extract(&inst, "badname", |c| {
        c.execute_batch(
            "INSERT INTO _meta (table_name, rows) VALUES ('t\"; drop view orders; --', 1), ('fine', 2);
             CREATE VIEW \"t\"\"; drop view orders; --\" AS SELECT 1 AS a;
             CREATE TABLE fine AS SELECT range AS a FROM range(2);",
        )
        .unwrap();
    });
    // 5. A remote whose token variable is allowed but unset.
    write_extract(&inst, "tokenless", |c| {
        c.execute_batch(&format!(
            "INSERT INTO _remote_attach VALUES ('pgdb', 'postgres', 'dbname=app host=localhost', '{UNSET_TOKEN}');
             INSERT INTO _meta (table_name, query_mode) VALUES ('pg_orders', 'remote');"
        ))
        .unwrap();
        remote_view(c, "pgdb", "pg_orders");
    });
    // 6. A remote through an extension that is not on the allowlist.
    write_extract(&inst, "webby", |c| {
        c.execute_batch(
            "INSERT INTO _remote_attach VALUES ('web', 'httpfs', 'https://example.com/db.duckdb', NULL);
             INSERT INTO _meta (table_name, query_mode) VALUES ('web_orders', 'remote');",
        )
        .unwrap();
        remote_view(c, "web", "web_orders");
    });

    let mut cmd = inst.cmd();
    cmd.env_remove(UNSET_TOKEN);
    let r = run_cmd(cmd, &[]);
    assert_eq!(
        r.code,
        0,
        "skipped extracts do not fail the run: {}",
        r.dump()
    );
    assert_eq!(r.finished()["published"], true);
    r.warning(&["extract garbage", "not a readable DuckDB database"]);
    r.warning(&["ghost.phantom", "no data/phantom.parquet", "skipped"]);
    r.warning(&["drop table y", "not a safe identifier", "ignored"]);
    r.warning(&[
        "badname.",
        "drop view orders",
        "the table name is not a safe identifier",
    ]);
    r.warning(&[
        "extract tokenless: remote attachment `pgdb` skipped",
        &format!("token env var `{UNSET_TOKEN}` is not set"),
    ]);
    // The tables behind a refused attachment say why they are missing.
    r.warning(&["tokenless.pg_orders", "does not bind", "is not set"]);
    r.warning(&[
        "extract webby: remote attachment `web` skipped",
        "extension `httpfs` is not allowed",
    ]);
    r.warning(&[
        "webby.web_orders",
        "does not bind",
        "`httpfs` is not allowed",
    ]);
    assert_eq!(r.warnings().len(), 8, "{}", r.dump());

    // Every good table publishes; nothing of the bad ones does, and no injected SQL ran.
    let names: Vec<String> = query(&inst, "SELECT name FROM _pipeline.tables ORDER BY name")
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["customers", "fine", "orders", "spend"]);
    assert_eq!(
        counts(&inst, &["orders", "spend", "fine", "big_spenders"]),
        [5, 4, 2, 2]
    );
    let conn = inst.analytics();
    assert_eq!(
        strings(&conn, "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' UNION ALL SELECT view_name FROM duckdb_views() WHERE schema_name = 'main' AND NOT internal ORDER BY 1"),
        ["big_orders", "big_spenders", "customers", "fine", "orders", "spend"]
    );
}

#[test]
fn a_corrupt_csv_fails_its_extract_keeps_the_old_data_and_the_other_source_publishes() {
    let inst = two_sources();
    // A fixed dialect: DuckDB's sniffer then cannot explain a ragged row away.
    inst.write(
        "pipelines/shop.yaml",
        "type: csv\nconnection:\n  path: files/shop\n  options: {header: true, delim: \",\"}\ntransforms:\n  - name: big_orders\n    sql: select * from orders where amount > 2\n",
    );
    inst.apply();
    assert_eq!(count(&inst, "orders"), 5);
    let parquet = inst.path().join("data/extracts/shop/data/orders.parquet");
    let old_bytes = std::fs::read(&parquet).unwrap();

    // A row with more columns than the header; the other source gets a new row meanwhile.
    inst.write(
        "files/shop/orders.csv",
        "order_id,customer_id,amount\n1,10,1.5\n2,11,3.0,oops,more\n3,11,4.0\n",
    );
    inst.write(
        "files/crm/spend.csv",
        "day,channel,cost\n2026-01-01,ads,10\n2026-01-01,mail,2\n2026-01-02,ads,11\n2026-01-02,mail,3\n2026-01-03,ads,12\n",
    );
    let r = run(&inst, &[]);
    assert_eq!(r.code, 1, "{}", r.dump());
    assert_eq!(r.status("extract:shop.orders"), "failed");
    let error = r.task("extract:shop.orders")["error"].as_str().unwrap();
    assert!(
        error.contains("files/shop/orders.csv"),
        "the error names the file: {error}"
    );
    assert!(error.contains("CSV"), "{error}");
    assert_eq!(r.finished()["status"], "failed");
    assert_eq!(
        r.finished()["failed"],
        serde_json::json!([{"task": "extract:shop.orders", "error": error}])
    );
    // Everything else ran: the other source was extracted and published.
    assert_eq!(r.status("extract:crm.spend"), "ok");
    assert_eq!(r.status("rebuild:crm"), "ok");
    assert_eq!(r.status("extract:shop.customers"), "unchanged");
    assert_eq!(r.status("publish:analytics"), "ok");
    assert_eq!(r.finished()["published"], true);
    // The other source's new row is there; the failed table still serves its previous data.
    assert_eq!(counts(&inst, &["spend", "orders", "big_orders"]), [5, 5, 3]);
    assert_eq!(std::fs::read(&parquet).unwrap(), old_bytes);
    let state = inst.state();
    let (status, rows, recorded): (String, i64, String) = state
        .query_row(
            "SELECT status, rows, error FROM sync_state WHERE table_id = 'shop.orders'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((status.as_str(), rows), ("error", 5));
    assert!(recorded.contains("orders.csv"), "{recorded}");
    let history: String = state
        .query_row(
            "SELECT status FROM sync_history WHERE table_id = 'shop.orders' AND run_id = ?",
            [r.finished()["run_id"].as_str().unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(history, "failed");
}

/// Sets a file's modification time, so its fingerprint changes even when its bytes do not.
fn touch(path: &Path, at: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(at)
        .unwrap();
}

#[test]
fn incremental_reruns_merge_by_key_and_never_duplicate() {
    let inst = Instance::from_files(&[
        CONFIG,
        ("pipelines/shop.yaml", "type: csv\nconnection:\n  path: files\n"),
        (
            "registry/shop.yaml",
            "tables:\n  - source: shop\n    source_table: orders\n    sync: {mode: incremental, cursor: updated_at, primary_key: [order_id]}\n",
        ),
        (
            "files/orders.csv",
            "order_id,amount,updated_at\n1,5.5,2026-01-01 10:00:00\n2,7.25,2026-01-02 11:00:00\n3,1.0,2026-01-03 12:00:00\n",
        ),
    ]);
    inst.apply();
    let cursor = || -> String {
        inst.state()
            .query_row(
                "SELECT last_cursor FROM sync_state WHERE table_id = 'shop.orders'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(count(&inst, "orders"), 3);
    assert_eq!(cursor(), "2026-01-03 12:00:00");

    // Order 2 changes (newer updated_at), order 4 is new.
    let csv = inst.path().join("files/orders.csv");
    inst.write(
        "files/orders.csv",
        "order_id,amount,updated_at\n1,5.5,2026-01-01 10:00:00\n2,99.0,2026-01-05 09:00:00\n3,1.0,2026-01-03 12:00:00\n4,3.0,2026-01-04 08:00:00\n",
    );
    let r = run(&inst, &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.status("extract:shop.orders"), "ok");
    assert_eq!(r.task("extract:shop.orders")["rows"], 4);
    // Only the rows from the last cursor on were read (orders 2, 3 and 4), then merged.
    let detail = r.task("extract:shop.orders")["detail"].to_string();
    assert!(
        detail.starts_with("\"3 ") && detail.contains("merged"),
        "{detail}"
    );
    let summary = |inst: &Instance| {
        query(
            inst,
            "SELECT count(*) AS n, count(DISTINCT order_id) AS keys, \
             max(amount) FILTER (WHERE order_id = 2) AS amount2 FROM orders",
        )[0]
        .clone()
    };
    assert_eq!(
        summary(&inst),
        serde_json::json!({"n": 4, "keys": 4, "amount2": 99.0})
    );
    assert_eq!(cursor(), "2026-01-05 09:00:00");

    // Nothing changed: nothing is read, the count stays.
    let r = run(&inst, &[]);
    assert_eq!(r.status("extract:shop.orders"), "unchanged", "{}", r.dump());
    assert_eq!(count(&inst, "orders"), 4);

    // Same bytes, new mtime: the rows from the last cursor on are read again and merged, not added.
    touch(&csv, SystemTime::now() + Duration::from_secs(5));
    let r = run(&inst, &[]);
    assert_eq!(r.status("extract:shop.orders"), "ok", "{}", r.dump());
    let detail = r.task("extract:shop.orders")["detail"].to_string();
    assert!(
        detail.starts_with("\"1 ") && detail.contains("merged"),
        "{detail}"
    );
    assert_eq!(
        summary(&inst),
        serde_json::json!({"n": 4, "keys": 4, "amount2": 99.0})
    );
    assert_eq!(cursor(), "2026-01-05 09:00:00");
    assert_eq!(
        inst.state_int("SELECT rows FROM sync_state WHERE table_id = 'shop.orders'"),
        4
    );
}

#[test]
fn a_view_name_belongs_to_its_first_source_and_a_second_one_is_refused() {
    let inst = Instance::from_files(&[
        CONFIG,
        ("pipelines/shop.yaml", "type: csv\nconnection:\n  path: files/shop\n"),
        ("pipelines/crm.yaml", "type: csv\nconnection:\n  path: files/crm\n"),
        (
            "registry/tables.yaml",
            "tables:\n  - {source: shop, source_table: orders}\n  - {source: crm, source_table: spend}\n",
        ),
        ("files/shop/orders.csv", "order_id,amount\n1,1.5\n2,3.0\n3,4.0\n"),
        ("files/crm/spend.csv", "day,cost\n2026-01-01,10\n"),
    ]);
    inst.apply();
    let owner = |view: &str| -> String {
        inst.state()
            .query_row(
                "SELECT source FROM view_ownership WHERE view_name = ?",
                [view],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(owner("orders"), "shop");

    // Another tool's extract (sorting before `shop`) also publishes `orders`, and a table of its own.
    write_extract(&inst, "aaa_intruder", |c| {
        c.execute_batch(
            "INSERT INTO _meta (table_name, rows) VALUES ('orders', 7), ('intruder_only', 1);
             CREATE TABLE orders AS SELECT range AS order_id FROM range(7);
             CREATE TABLE intruder_only AS SELECT 1 AS a;",
        )
        .unwrap();
    });
    let r = run(&inst, &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    let w = r.warning(&["aaa_intruder.orders"]);
    assert!(w.contains("view `orders` belongs to source `shop`"), "{w}");
    assert_eq!(
        counts(&inst, &["orders", "intruder_only"]),
        [3, 1],
        "the owner keeps its view"
    );
    assert_eq!(
        query(
            &inst,
            "SELECT name, source FROM _pipeline.tables ORDER BY name"
        ),
        [
            serde_json::json!({"name": "intruder_only", "source": "aaa_intruder"}),
            serde_json::json!({"name": "orders", "source": "shop"}),
            serde_json::json!({"name": "spend", "source": "crm"}),
        ]
    );
    assert_eq!(owner("orders"), "shop");
    assert_eq!(owner("intruder_only"), "aaa_intruder");

    // The owner's extract turns unreadable while another source syncs: the name stays the owner's.
    let shop_extract = inst.path().join("data/extracts/shop/extract.duckdb");
    std::fs::write(&shop_extract, b"not a database").unwrap();
    let r = run(&inst, &["--source", "crm"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    r.warning(&["extract shop", "not a readable DuckDB database"]);
    let w = r.warning(&["aaa_intruder.orders"]);
    assert!(w.contains("belongs to source `shop`"), "{w}");
    assert_eq!(
        query(
            &inst,
            "SELECT name FROM _pipeline.tables WHERE name = 'orders'"
        ),
        Vec::<Value>::new(),
        "nobody publishes orders meanwhile"
    );
    assert_eq!(owner("orders"), "shop");

    // A full run rewrites the owner's extract, and its view is back.
    let r = run(&inst, &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(count(&inst, "orders"), 3);
    assert_eq!(
        query(
            &inst,
            "SELECT source FROM _pipeline.tables WHERE name = 'orders'"
        ),
        [serde_json::json!({"source": "shop"})]
    );
}

fn binary() -> PathBuf {
    assert_cmd::cargo::cargo_bin("pipeline")
}

const BULK_TABLES: [&str; 3] = ["t0", "t1", "t2"];
const BULK_ROWS: usize = 50_000;

/// Writes every bulk CSV with `rows` rows.
fn bulk_data(inst: &Instance, rows: usize) {
    for (i, t) in BULK_TABLES.iter().enumerate() {
        let mut csv = String::with_capacity(rows * 40);
        csv.push_str("id,grp,amount,note\n");
        for r in 0..rows {
            csv.push_str(&format!("{r},{},{}.25,note {i} {r}\n", r % 97, r % 1000));
        }
        inst.write(&format!("files/{t}.csv"), &csv);
    }
}

/// After a kill: analytics.duckdb and the extract are whole files from some complete run, each
/// table has one of the row counts written so far, and the rest of a build agrees with it.
fn assert_whole(inst: &Instance, versions: &[i64]) {
    let data = inst.path().join("data");
    for db in ["analytics/analytics.duckdb", "extracts/bulk/extract.duckdb"] {
        let wal = data.join(format!("{db}.wal"));
        assert!(!wal.exists(), "stale {}", wal.display());
    }
    let conn = inst.analytics();
    for t in BULK_TABLES {
        let n = plain_count(&conn, t);
        assert!(
            versions.contains(&n),
            "{t} has {n} rows, not one of {versions:?}"
        );
    }
    // A transform is a snapshot taken at publish: it matches what that publish recorded.
    let (total, recorded): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT n FROM totals), (SELECT rows FROM _pipeline.tables WHERE name = 't0')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(total, recorded, "totals and _pipeline.tables disagree");
    assert!(versions.contains(&total), "{total} not one of {versions:?}");
    drop(conn);
    let extract = read_only(&data.join("extracts/bulk/extract.duckdb"));
    assert_eq!(plain_count(&extract, "_meta"), 3);
    for t in BULK_TABLES {
        assert!(versions.contains(&plain_count(&extract, t)));
    }
    drop(extract);
    assert!(
        versions.contains(&count(inst, "t1")),
        "pipeline query reads it too"
    );
}

fn is(e: &Value, event: &str, prefix: &str) -> bool {
    e["event"] == event && e["task"].as_str().unwrap_or("").starts_with(prefix)
}

/// A `pipeline run --full-refresh --format json` in the background, its events read as they come.
struct BulkRun {
    child: std::process::Child,
    events: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    started: Instant,
}

impl BulkRun {
    fn start(inst: &Instance) -> BulkRun {
        let mut child = Command::new(binary())
            .arg("--dir")
            .arg(inst.path())
            .args([
                "run",
                "--full-refresh",
                "--lock-timeout",
                "30s",
                "--format",
                "ndjson",
            ])
            .env_remove("CI")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        BulkRun {
            child,
            events: std::io::BufRead::lines(std::io::BufReader::new(stdout)),
            started: Instant::now(),
        }
    }

    fn next(&mut self) -> Option<(Duration, Value)> {
        let line = self.events.next()?.unwrap();
        Some((self.started.elapsed(), serde_json::from_str(&line).unwrap()))
    }

    /// Reads events until the first `event` of a task starting with `prefix`.
    fn wait_for(&mut self, event: &str, prefix: &str) {
        while let Some((_, e)) = self.next() {
            if is(&e, event, prefix) {
                return;
            }
        }
        panic!("the run ended before {event} {prefix}");
    }

    /// Every event with when it arrived, then the exit (its time last, as a `null` event).
    fn finish(mut self) -> (Option<i32>, Vec<(Duration, Value)>) {
        let mut all = Vec::new();
        while let Some(e) = self.next() {
            all.push(e);
        }
        let status = self.child.wait().unwrap();
        all.push((self.started.elapsed(), Value::Null));
        (status.code(), all)
    }

    /// SIGKILL (no cleanup runs); whether the run was still going. The pipe stays open until the
    /// child is gone, so it never writes into a closed one.
    fn kill(mut self) -> bool {
        let _ = self.child.kill();
        let status = self.child.wait().unwrap();
        std::os::unix::process::ExitStatusExt::signal(&status) == Some(9)
    }
}

#[test]
fn sigkill_during_a_run_leaves_whole_files_and_the_next_run_converges() {
    let inst = Instance::from_files(&[
        CONFIG,
        (
            "pipelines/bulk.yaml",
            "type: csv\nconnection:\n  path: files\ntransforms:\n  - name: totals\n    sql: select count(*) as n from t0\n",
        ),
        (
            "registry/bulk.yaml",
            "tables:\n  - {source: bulk, source_table: t0}\n  - {source: bulk, source_table: t1}\n  - {source: bulk, source_table: t2}\n",
        ),
    ]);
    bulk_data(&inst, BULK_ROWS);
    inst.apply();
    let mut versions = vec![BULK_ROWS as i64];
    assert_whole(&inst, &versions);

    // One full run measured here, phase by phase, to place the kills inside each phase.
    let (code, timeline) = BulkRun::start(&inst).finish();
    assert_eq!(code, Some(0));
    let at = |event: &str, prefix: &str, last: bool| -> Duration {
        let mut hits = timeline.iter().filter(|(_, e)| is(e, event, prefix));
        let hit = if last { hits.next_back() } else { hits.next() };
        hit.unwrap_or_else(|| panic!("no {event} {prefix}: {timeline:?}"))
            .0
    };
    let end = timeline.last().unwrap().0;
    let started = |prefix: &str| at("task_started", prefix, false);
    let finished = |prefix: &str| at("task_finished", prefix, true);
    // (anchor event, task prefix, phase length, where in the phase in sixths): each run is killed
    // that far into the phase that begins with the first such event.
    let phases: [(&str, &str, Duration, &[u32]); 6] = [
        ("", "", started("extract:"), &[3]), // starting up
        (
            "task_started",
            "extract:",
            finished("extract:") - started("extract:"),
            &[2, 4],
        ),
        (
            "task_started",
            "rebuild:",
            finished("rebuild:") - started("rebuild:"),
            &[3],
        ),
        (
            "task_started",
            "publish:",
            finished("publish:") - started("publish:"),
            &[3],
        ),
        (
            "task_finished",
            "publish:",
            finished("transform:") - finished("publish:"),
            &[3],
        ),
        // Transforms done: the swap over analytics.duckdb, then the state record.
        (
            "task_finished",
            "transform:",
            end - finished("transform:"),
            &[2, 4],
        ),
    ];
    let mut killed = 0;
    let mut points = 0;
    for (event, prefix, length, sixths) in phases {
        for &sixth in sixths {
            // New data each time, so a file from any run is recognisable by its row count.
            let rows = BULK_ROWS + 1 + points;
            points += 1;
            bulk_data(&inst, rows);
            versions.push(rows as i64);
            let mut child = BulkRun::start(&inst);
            if !event.is_empty() {
                child.wait_for(event, prefix);
            }
            std::thread::sleep(length * sixth / 6);
            killed += usize::from(child.kill());
            assert_whole(&inst, &versions);
            inst.cmd().arg("status").assert().success();
        }
    }
    assert!(
        killed >= points - 2,
        "only {killed} of {points} runs were killed before they finished"
    );

    // A normal run takes over what the killed ones left and converges on the newest data.
    let last = BULK_ROWS + 100;
    bulk_data(&inst, last);
    let r = run(&inst, &["--lock-timeout", "30s"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_whole(&inst, &[last as i64]);
    let r = run(&inst, &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert!(
        r.statuses("extract:").iter().all(|(_, s)| s == "unchanged"),
        "{}",
        r.dump()
    );
    assert_eq!(r.status("publish:analytics"), "unchanged");
    let left = leftovers(&inst);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn duckdb_source_copies_materializes_and_attaches_remotely() {
    let inst = Instance::from_files(&[
        CONFIG,
        (
            "pipelines/warehouse.yaml",
            "type: duckdb\nconnection:\n  path: db/warehouse.duckdb\n",
        ),
        (
            "registry/warehouse.yaml",
            "tables:\n  - source: warehouse\n    source_table: items\n  - source: warehouse\n    bucket: sales\n    source_table: orders\n    query_mode: remote\n  - id: warehouse.item_sales\n    source: warehouse\n    name: item_sales\n    query_mode: materialized\n    query: select item_id, CAST(sum(qty) AS BIGINT) as qty from sales.orders group by item_id\n",
        ),
    ]);
    let db = canonical(&inst).join("db/warehouse.duckdb");
    duckdb_file(
        &db,
        "CREATE TABLE items AS SELECT range AS item_id, 'item ' || range AS label FROM range(4);
         CREATE SCHEMA sales;
         CREATE TABLE sales.orders AS SELECT range AS order_id, range % 3 AS item_id, 2 AS qty FROM range(5);",
    );
    inst.apply();
    assert_eq!(counts(&inst, &["items", "orders"]), [4, 5]);
    assert_eq!(
        query(
            &inst,
            "SELECT item_id, qty FROM item_sales ORDER BY item_id"
        ),
        [
            serde_json::json!({"item_id": 0, "qty": 4}),
            serde_json::json!({"item_id": 1, "qty": 4}),
            serde_json::json!({"item_id": 2, "qty": 2}),
        ]
    );

    let dir = canonical(&inst).join("data/extracts/warehouse");
    let extract = read_only(&dir.join("extract.duckdb"));
    assert_eq!(
        strings(
            &extract,
            "SELECT table_name || ':' || query_mode || ':' || coalesce(CAST(rows AS VARCHAR), '-') FROM _meta ORDER BY 1"
        ),
        ["item_sales:materialized:3", "items:local:4", "orders:remote:-"]
    );
    let attach: (String, String, String, Option<String>) = extract
        .query_row("SELECT * FROM _remote_attach", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!(
        attach,
        (
            "warehouse__db".into(),
            "duckdb".into(),
            db.to_string_lossy().into_owned(),
            None
        )
    );
    drop(extract);
    assert!(dir.join("data/items.parquet").is_file());
    assert!(dir.join("data/item_sales.parquet").is_file());
    assert!(
        !dir.join("data/orders.parquet").exists(),
        "a remote table is not copied"
    );

    // The remote table reads the source live; the local copy changes only with a run.
    duckdb_file(
        &db,
        "INSERT INTO sales.orders VALUES (5, 0, 2); INSERT INTO items VALUES (4, 'item 4');",
    );
    assert_eq!(counts(&inst, &["orders", "items"]), [6, 4]);
    let r = run(&inst, &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.status("attach:sales.orders"), "ok");
    assert_eq!(count(&inst, "items"), 5);
    assert_eq!(
        query(&inst, "SELECT qty FROM item_sales WHERE item_id = 0")[0]["qty"],
        6
    );
}

type Edges = BTreeSet<(String, String)>;

fn graph(inst: &Instance, format: &str) -> String {
    let out = inst
        .cmd()
        .args(["graph", "--format", format])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn graph_shows_the_task_dag_in_every_format_and_run_names_unknown_tables() {
    let inst = two_sources();
    let expected: Edges = [
        ("extract:crm.spend", "rebuild:crm"),
        ("extract:shop.customers", "rebuild:shop"),
        ("extract:shop.orders", "rebuild:shop"),
        ("rebuild:crm", "publish:analytics"),
        ("rebuild:shop", "publish:analytics"),
        ("publish:analytics", "transform:big_orders"),
        ("publish:analytics", "transform:big_spenders"),
        ("transform:big_orders", "transform:big_spenders"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();

    // Built from the specs: nothing needs to be applied first.
    let dot = graph(&inst, "dot");
    assert!(dot.starts_with("digraph"), "{dot}");
    let edges: Edges = dot
        .lines()
        .filter_map(|l| l.trim().strip_suffix(';')?.split_once(" -> "))
        .map(|(a, b)| {
            (
                a.trim_matches('"').to_string(),
                b.trim_matches('"').to_string(),
            )
        })
        .collect();
    assert_eq!(edges, expected, "{dot}");

    let mermaid = graph(&inst, "mermaid");
    assert!(mermaid.starts_with("flowchart"), "{mermaid}");
    // `t0["extract: crm.spend"]` names a node; `t0 --> t3` is an edge.
    let nodes: BTreeMap<&str, String> = mermaid
        .lines()
        .filter_map(|l| {
            let (id, label) = l.trim().split_once("[\"")?;
            let (kind, target) = label.strip_suffix("\"]")?.split_once(": ")?;
            Some((id, format!("{kind}:{target}")))
        })
        .collect();
    let edges: Edges = mermaid
        .lines()
        .filter_map(|l| l.trim().split_once(" --> "))
        .map(|(a, b)| (nodes[a].clone(), nodes[b].clone()))
        .collect();
    assert_eq!(edges, expected, "{mermaid}");

    let json: Value = serde_json::from_str(&graph(&inst, "json")).unwrap();
    let edges: Edges = json["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(edges, expected, "{json:#}");
    assert_eq!(json["tasks"].as_array().unwrap().len(), 8);

    inst.apply();
    let runs = inst.state_int("SELECT count(*) FROM runs");
    for (args, message) in [
        (["--table", "ordrs"], "no registered table `ordrs`"),
        (["--source", "shpo"], "no registered source `shpo`"),
    ] {
        let out = inst.cmd().arg("run").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{err}");
        let hint = if args[0] == "--table" {
            "did you mean `orders`?"
        } else {
            "did you mean `shop`?"
        };
        assert!(err.contains(hint), "{err}");
    }
    assert_eq!(
        inst.state_int("SELECT count(*) FROM runs"),
        runs,
        "nothing ran"
    );
}

#[test]
fn a_view_name_differing_only_in_case_still_belongs_to_its_owner() {
    let inst = Instance::from_files(&[
        CONFIG,
        (
            "pipelines/shop.yaml",
            "type: csv\nconnection:\n  path: files\n",
        ),
        (
            "registry/shop.yaml",
            "tables:\n  - {source: shop, source_table: orders}\n",
        ),
        ("files/orders.csv", "order_id,amount\n1,1.5\n2,3.0\n3,4.0\n"),
    ]);
    inst.apply();
    // DuckDB names are case-insensitive: `ORDERS` is the same view as `orders`.
    write_extract(&inst, "aaa_intruder", |c| {
        c.execute_batch(
            "INSERT INTO _meta (table_name, rows) VALUES ('ORDERS', 7);
             CREATE TABLE \"ORDERS\" AS SELECT range AS order_id FROM range(7);",
        )
        .unwrap();
    });
    let r = run(&inst, &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    let w = r.warning(&["aaa_intruder.ORDERS"]);
    assert!(w.contains("belongs to source `shop`"), "{w}");
    assert_eq!(count(&inst, "orders"), 3, "the owner keeps its view");
    assert_eq!(
        query(&inst, "SELECT name, source FROM _pipeline.tables"),
        [serde_json::json!({"name": "orders", "source": "shop"})]
    );
    assert_eq!(
        inst.state_int("SELECT count(*) FROM view_ownership WHERE source = 'aaa_intruder'"),
        0
    );
}

#[test]
fn extracts_named_like_duckdb_catalogs_are_refused_or_work() {
    let inst = Instance::from_files(&[
        CONFIG,
        (
            "pipelines/shop.yaml",
            "type: csv\nconnection:\n  path: files\ntransforms:\n  - name: order_count\n    sql: select count(*) as n from orders\n    checks: [{accepted_values: {column: n, values: [3]}}]\n",
        ),
        (
            "registry/shop.yaml",
            "tables:\n  - {source: shop, source_table: orders}\n",
        ),
        ("files/orders.csv", "order_id,amount\n1,1.5\n2,3.0\n3,4.0\n"),
    ]);
    inst.apply();
    // Valid source names by the contract's pattern, each the name of a catalog DuckDB or pipeline
    // uses somewhere. Their tables live inside the extract, so views read through its catalog.
    let names = [
        "analytics",
        "memory",
        "main",
        "system",
        "temp",
        "previous",
        "_pipeline",
    ];
    for name in names {
        write_extract(&inst, name, |c| {
            c.execute_batch(&format!(
                "INSERT INTO _meta (table_name, rows) VALUES ('tbl_{name}', 2);
                 CREATE TABLE tbl_{name} AS SELECT range AS a FROM range(2);"
            ))
            .unwrap();
        });
    }
    // The transform's check now fails: its previous result must stay published.
    inst.write(
        "files/orders.csv",
        "order_id,amount\n1,1.5\n2,3.0\n3,4.0\n4,5.0\n",
    );
    let r = run(&inst, &[]);
    assert_eq!(r.code, 1, "{}", r.dump());
    assert_eq!(r.status("transform:order_count"), "failed");

    let published: Vec<String> = query(&inst, "SELECT name FROM _pipeline.tables")
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    for name in names {
        let table = format!("tbl_{name}");
        if published.contains(&table) {
            // Whatever is published must answer queries.
            let out = inst
                .cmd()
                .args([
                    "query",
                    "--format",
                    "json",
                    &format!("SELECT count(*) AS n FROM {table}"),
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{table} is published but `pipeline query` fails: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            r.warning(&[&format!("extract {name}:")]);
        }
    }
    assert_eq!(
        query(
            &inst,
            "SELECT status FROM _pipeline.transforms WHERE name = 'order_count'"
        ),
        [serde_json::json!({"status": "failed"})],
        "{}",
        r.dump()
    );
    assert_eq!(count(&inst, "orders"), 4);
    assert_eq!(query(&inst, "SELECT n FROM order_count")[0]["n"], 3);
}

//! Data safety end to end: the schema contract refuses a new extract that drops, renames or narrows
//! a column (the published Parquet stays, byte for byte), new columns pass by default, `freeze` and
//! `--accept-schema` do what they say; incremental tables drop rows that leave their `where`; lost or
//! damaged Parquet is extracted again, or reported for another tool's extract; an extract written
//! by another tool is published with nothing registered; and a run whose state directory vanishes
//! fails instead of recording into a new empty state.

use crate::common::query;
use crate::common::{daemon::wait_for, Instance};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CONFIG: (&str, &str) = ("config/instance.yaml", "name: Safe\ntimezone: UTC\n");
const SOURCE: (&str, &str) = (
    "pipelines/shop.yaml",
    "type: csv\nconnection:\n  path: files\n",
);
const ORDERS: &str = "order_id,customer_id,amount,updated_at\n\
                      1,10,5.5,2026-01-01 10:00:00\n\
                      2,11,7.25,2026-01-02 11:00:00\n\
                      3,10,1.0,2026-01-03 12:00:00\n";

/// One csv source `shop` with the table `orders` registered as `registry` says.
fn shop(registry: &str) -> Instance {
    Instance::from_files(&[
        CONFIG,
        SOURCE,
        ("registry/shop.yaml", registry),
        ("files/orders.csv", ORDERS),
    ])
}

const ORDERS_TABLE: &str = "tables:\n  - source: shop\n    source_table: orders\n";

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

    fn task(&self, id: &str) -> &Value {
        self.events
            .iter()
            .find(|e| e["event"] == "task_finished" && e["task"] == id)
            .unwrap_or_else(|| panic!("no task_finished for {id}:\n{}", self.dump()))
    }

    fn finished(&self) -> &Value {
        self.events
            .iter()
            .rev()
            .find(|e| e["event"] == "run_finished")
            .unwrap_or_else(|| panic!("no run_finished:\n{}", self.dump()))
    }

    fn warnings(&self) -> String {
        self.finished()["warnings"].to_string()
    }
}

fn run(inst: &Instance, args: &[&str]) -> Run {
    let out = inst
        .cmd()
        .args(["run", "--format", "ndjson"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let events = String::from_utf8_lossy(&out.stdout)
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

fn status_json(inst: &Instance) -> Value {
    let out = inst
        .cmd()
        .args(["status", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn status_human(inst: &Instance) -> String {
    let out = inst.cmd().arg("status").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The status row of table `id`.
fn table_status(inst: &Instance, id: &str) -> Value {
    status_json(inst)["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no table {id} in status"))
        .clone()
}

fn parquet(inst: &Instance, source: &str, table: &str) -> PathBuf {
    inst.path()
        .join(format!("data/extracts/{source}/data/{table}.parquet"))
}

/// Column names of a published table, through `pipeline query`.
fn columns(inst: &Instance, table: &str) -> Vec<String> {
    query(
        inst,
        &format!("SELECT column_name FROM (DESCRIBE {table}) ORDER BY column_name"),
    )
    .iter()
    .map(|r| r["column_name"].as_str().unwrap().to_string())
    .collect()
}

/// Rewrites `rel` with new content and a later modification time (sub-second writes keep mtimes
/// apart on every file system we run on, but a fingerprint must see the change for sure).
fn rewrite(inst: &Instance, rel: &str, text: &str) {
    let path = inst.path().join(rel);
    let before = std::fs::metadata(&path)
        .ok()
        .and_then(|m| m.modified().ok());
    std::fs::write(&path, text).unwrap();
    if let Some(before) = before {
        let later = before + Duration::from_secs(1);
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(later.max(std::time::SystemTime::now()))
            .unwrap();
    }
}

#[test]
fn dropped_renamed_and_text_columns_are_refused_and_the_published_parquet_stays() {
    let inst = shop(ORDERS_TABLE);
    inst.apply();
    let published = parquet(&inst, "shop", "orders");
    let bytes = std::fs::read(&published).unwrap();
    let cases = [
        (
            "a dropped column",
            "order_id,customer_id,updated_at\n1,10,2026-01-01 10:00:00\n",
            vec!["dropped `amount` (DOUBLE)"],
        ),
        (
            "a renamed column",
            "order_id,customer_id,total,updated_at\n1,10,5.5,2026-01-01 10:00:00\n",
            vec![
                "dropped `amount` (DOUBLE)",
                "added `total` (DOUBLE) (allowed)",
                "renamed column",
            ],
        ),
        (
            "a column turned to text",
            "order_id,customer_id,amount,updated_at\n1,10,5.5,2026-01-01 10:00:00\n2,11,n/a,2026-01-02 11:00:00\n",
            vec!["`amount`: DOUBLE → VARCHAR (not a widening"],
        ),
    ];
    for (what, csv, needles) in cases {
        rewrite(&inst, "files/orders.csv", csv);
        let r = run(&inst, &[]);
        assert_eq!(r.code, 1, "{what}: {}", r.dump());
        let task = r.task("extract:shop.orders");
        assert_eq!(task["status"], "failed", "{what}: {}", r.dump());
        let error = task["error"].as_str().unwrap();
        assert!(
            error.contains(
                "schema change refused for table `shop.orders` (schema_changes: additive)"
            ),
            "{what}: {error}"
        );
        for n in needles {
            assert!(error.contains(n), "{what}: `{n}` not in {error}");
        }
        assert!(
            error.contains("pipeline run --accept-schema shop.orders"),
            "{what}: {error}"
        );
        // The previous Parquet is exactly what it was, and still answers queries.
        assert_eq!(std::fs::read(&published).unwrap(), bytes, "{what}");
        assert_eq!(
            query(&inst, "SELECT sum(amount) AS s FROM orders")[0]["s"],
            13.75,
            "{what}"
        );
        // status shows the failure with its column-level difference.
        let row = table_status(&inst, "shop.orders");
        assert_eq!(row["last_status"], "error", "{what}");
        assert!(
            row["last_error"]
                .as_str()
                .unwrap()
                .contains(needles_first(what)),
            "{what}: {row}"
        );
    }
    let human = status_human(&inst);
    assert!(
        human.contains("schema change refused for table `shop.orders`")
            && human.contains("`amount`: DOUBLE → VARCHAR"),
        "{human}"
    );
    // Put the old shape back: the table extracts again and is ok.
    rewrite(&inst, "files/orders.csv", ORDERS);
    let r = run(&inst, &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(table_status(&inst, "shop.orders")["last_status"], "ok");
}

/// The difference each case of the test above must show in `status`.
fn needles_first(what: &str) -> &'static str {
    match what {
        "a column turned to text" => "`amount`: DOUBLE → VARCHAR",
        _ => "dropped `amount` (DOUBLE)",
    }
}

#[test]
fn a_new_column_passes_by_default_and_freeze_refuses_the_next_one() {
    let inst = shop(ORDERS_TABLE);
    inst.apply();
    rewrite(
        &inst,
        "files/orders.csv",
        "order_id,customer_id,amount,updated_at,note\n1,10,5.5,2026-01-01 10:00:00,hi\n",
    );
    let r = run(&inst, &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    let detail = r.task("extract:shop.orders")["detail"].to_string();
    assert!(
        detail.contains("schema changed (additive): added `note` (VARCHAR)"),
        "{detail}"
    );
    assert!(columns(&inst, "orders").contains(&"note".to_string()));
    // Recorded: the audit log and the history say what changed and what accepted it.
    assert_eq!(
        inst.state_int(
            "SELECT count(*) FROM audit_log WHERE action = 'schema_change' AND object = 'shop.orders' \
             AND (detail->>'accepted_by') = 'additive' AND (detail->'changes'->0->>'column') = 'note'"
        ),
        1
    );
    let history = inst.cmd().args(["history"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&history.stdout).contains("schema changed (additive)"),
        "{}",
        String::from_utf8_lossy(&history.stdout)
    );

    // Freeze: plan shows a replace, apply re-extracts and records the shape as it is now.
    inst.write(
        "registry/shop.yaml",
        "tables:\n  - source: shop\n    source_table: orders\n    schema_changes: freeze\n",
    );
    let plan = inst.plan(&[]);
    assert_eq!(plan["changes"][0]["action"], "replace", "{plan:#}");
    inst.apply();
    rewrite(
        &inst,
        "files/orders.csv",
        "order_id,customer_id,amount,updated_at,note,extra\n1,10,5.5,2026-01-01 10:00:00,hi,1\n",
    );
    let r = run(&inst, &[]);
    assert_eq!(r.code, 1, "{}", r.dump());
    let error = r.task("extract:shop.orders")["error"].as_str().unwrap();
    assert!(
        error.contains("(schema_changes: freeze)") && error.contains("added `extra` (BIGINT)"),
        "{error}"
    );
    assert!(!columns(&inst, "orders").contains(&"extra".to_string()));
}

#[test]
fn accept_schema_publishes_a_refused_shape_once() {
    let inst = shop(ORDERS_TABLE);
    inst.apply();
    rewrite(
        &inst,
        "files/orders.csv",
        "order_id,customer_id,updated_at\n1,10,2026-01-01 10:00:00\n",
    );
    assert_eq!(run(&inst, &[]).code, 1);
    // Unknown names and tables the run does not extract are refused before anything runs.
    let out = inst
        .cmd()
        .args(["run", "--accept-schema", "ordrs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did you mean `orders`?"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let r = run(&inst, &["--accept-schema", "orders"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert!(
        r.warnings()
            .contains("the published schema changed (--accept-schema): dropped `amount` (DOUBLE)"),
        "{}",
        r.dump()
    );
    assert_eq!(
        columns(&inst, "orders"),
        ["customer_id", "order_id", "updated_at"]
    );
    assert_eq!(
        inst.state_int(
            "SELECT count(*) FROM audit_log WHERE action = 'schema_change' \
             AND (detail->>'accepted_by') = '--accept-schema'"
        ),
        1
    );
    // Once: the contract holds again against the accepted shape.
    rewrite(
        &inst,
        "files/orders.csv",
        "order_id,updated_at\n1,2026-01-01 10:00:00\n",
    );
    let r = run(&inst, &[]);
    assert_eq!(r.code, 1, "{}", r.dump());
    assert!(r.task("extract:shop.orders")["error"]
        .as_str()
        .unwrap()
        .contains("dropped `customer_id` (BIGINT)"));
}

#[test]
fn the_instance_default_evolve_publishes_any_shape_and_says_so() {
    let inst = shop(ORDERS_TABLE);
    inst.write(
        "config/instance.yaml",
        "name: Safe\ntimezone: UTC\ndefaults:\n  schema_changes: evolve\n",
    );
    inst.apply();
    rewrite(
        &inst,
        "files/orders.csv",
        "order_id,customer_id,updated_at\n1,10,2026-01-01 10:00:00\n",
    );
    let r = run(&inst, &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert!(
        r.warnings().contains(
            "shop.orders: the published schema changed (evolve): dropped `amount` (DOUBLE)"
        ),
        "{}",
        r.dump()
    );
    assert!(!columns(&inst, "orders").contains(&"amount".to_string()));
}

#[test]
fn declared_columns_are_checked_at_every_extract_with_a_did_you_mean() {
    let inst = shop(
        "tables:\n  - source: shop\n    source_table: orders\n    columns: { amout: Order amount, order_id: Id }\n",
    );
    let out = inst
        .cmd()
        .args(["apply", "--auto-approve"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "table `shop.orders`: the new data lacks 1 column(s) that `columns:` in registry/shop.yaml \
             declares: `amout` (did you mean `amount`?)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("The data has: order_id, customer_id, amount, updated_at"),
        "{stderr}"
    );
}

#[test]
fn an_incremental_row_that_leaves_the_where_filter_leaves_the_table() {
    let inst = shop(
        "tables:\n  - source: shop\n    source_table: orders\n    \
         sync: { mode: incremental, cursor: updated_at, primary_key: [order_id] }\n    \
         where: [{ column: customer_id, operator: ne, values: [99] }]\n",
    );
    rewrite(
        &inst,
        "files/orders.csv",
        &format!(
            "{ORDERS}4,12,2.0,2026-01-03 13:00:00\n5,99,3.0,2026-01-03 13:00:00\n\
             6,10,1.0,2025-12-01 00:00:00\n"
        ),
    );
    inst.apply();
    let ids = |inst: &Instance| -> Vec<i64> {
        query(inst, "SELECT order_id FROM orders ORDER BY 1")
            .iter()
            .map(|r| r["order_id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids(&inst), [1, 2, 3, 4, 6], "order 5 is filtered out");
    // Order 2 moves to customer 99 (which the filter excludes), with a newer cursor.
    rewrite(
        &inst,
        "files/orders.csv",
        "order_id,customer_id,amount,updated_at\n\
         1,10,5.5,2026-01-01 10:00:00\n\
         2,99,7.25,2026-01-04 11:00:00\n\
         3,10,1.0,2026-01-03 12:00:00\n\
         4,12,2.0,2026-01-03 13:00:00\n\
         5,99,3.0,2026-01-03 13:00:00\n\
         6,10,1.0,2025-12-01 00:00:00\n",
    );
    let r = run(&inst, &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    // Rows at or after the last cursor (2, 4 and 5), read without the filter and merged.
    assert_eq!(
        r.task("extract:shop.orders")["detail"],
        "3 new or changed rows merged",
        "{}",
        r.dump()
    );
    assert_eq!(
        ids(&inst),
        [1, 3, 4, 6],
        "the row that left the filter is gone"
    );
}

#[test]
fn a_deleted_or_truncated_parquet_is_extracted_again() {
    let inst = shop(ORDERS_TABLE);
    inst.apply();
    let file = parquet(&inst, "shop", "orders");
    let bytes = std::fs::read(&file).unwrap();

    std::fs::remove_file(&file).unwrap();
    let r = run(&inst, &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.task("extract:shop.orders")["status"], "ok");
    assert!(
        r.warnings()
            .contains("shop.orders: its Parquet output is missing"),
        "{}",
        r.dump()
    );
    assert_eq!(r.finished()["published"], true, "{}", r.dump());
    assert_eq!(query(&inst, "SELECT count(*) AS n FROM orders")[0]["n"], 3);

    // Truncated in place: the size no longer matches, the hash is checked and differs.
    let now = std::fs::read(&file).unwrap();
    std::fs::write(&file, &now[..now.len() / 2]).unwrap();
    let r = run(&inst, &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.task("extract:shop.orders")["status"], "ok");
    assert!(
        r.task("extract:shop.orders")["detail"]
            .to_string()
            .contains("re-extracted: its Parquet output changed on disk"),
        "{}",
        r.dump()
    );
    assert_eq!(query(&inst, "SELECT count(*) AS n FROM orders")[0]["n"], 3);
    assert_eq!(std::fs::read(&file).unwrap().len(), bytes.len());

    // Untouched: nothing is read or hashed again.
    let r = run(&inst, &[]);
    assert_eq!(r.task("extract:shop.orders")["status"], "unchanged");
    assert_eq!(r.task("publish:analytics")["status"], "unchanged");
}

/// The contract's DDL, as DESIGN.md §4 fixes it.
const META_DDL: &str = "CREATE TABLE _meta (table_name VARCHAR NOT NULL, description VARCHAR, \
    rows BIGINT, size_bytes BIGINT, extracted_at TIMESTAMP, query_mode VARCHAR DEFAULT 'local')";

/// Writes `data/extracts/hand/` as another tool would: one local table `t` of three rows.
fn hand_written_extract(inst: &Instance) -> PathBuf {
    let dir = std::fs::canonicalize(inst.path())
        .unwrap()
        .join("data/extracts/hand");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let file = dir.join("data/t.parquet");
    let lit = |p: &Path| format!("'{}'", p.display());
    let _ = std::fs::remove_file(dir.join("extract.duckdb"));
    let conn = duckdb::Connection::open(dir.join("extract.duckdb")).unwrap();
    conn.execute_batch(&format!(
        "COPY (SELECT range AS k FROM range(3)) TO {f} (FORMAT parquet);
         {META_DDL};
         INSERT INTO _meta VALUES ('t', 'made by hand', 3, 1, NULL, 'local');
         CREATE VIEW t AS SELECT * FROM read_parquet({f});
         CHECKPOINT;",
        f = lit(&file)
    ))
    .unwrap();
    file
}

#[test]
fn a_foreign_extract_is_published_with_nothing_registered_and_its_lost_file_reported() {
    let inst = Instance::from_files(&[CONFIG]);
    let file = hand_written_extract(&inst);
    let r = run(&inst, &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.finished()["published"], true, "{}", r.dump());
    assert_eq!(query(&inst, "SELECT count(*) AS n FROM t")[0]["n"], 3);
    assert_eq!(inst.state_int("SELECT count(*) FROM runs"), 1);

    // Its Parquet is deleted under an unchanged extract.duckdb: the next run publishes again and
    // says the view is gone, and so does every run after it, and status.
    std::fs::remove_file(&file).unwrap();
    let r = run(&inst, &[]);
    assert_eq!(r.task("publish:analytics")["status"], "ok", "{}", r.dump());
    assert!(
        r.warnings().contains("hand.t: its view does not bind"),
        "{}",
        r.dump()
    );
    let r = run(&inst, &[]);
    assert_eq!(r.task("publish:analytics")["status"], "unchanged");
    assert!(
        r.warnings().contains("hand.t: its view does not bind")
            && r.warnings()
                .contains("not published since the last rebuild"),
        "{}",
        r.dump()
    );
    let status = status_json(&inst);
    assert!(
        status["analytics_problems"].to_string().contains("hand.t"),
        "{status:#}"
    );
    assert!(status_human(&inst).contains("analytics.duckdb left out 1 thing(s)"));

    // A truncated file is noticed the same way (size and mtime are part of the fingerprint).
    hand_written_extract(&inst);
    assert_eq!(run(&inst, &[]).code, 0);
    assert_eq!(query(&inst, "SELECT count(*) AS n FROM t")[0]["n"], 3);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let r = run(&inst, &[]);
    assert_eq!(r.task("publish:analytics")["status"], "ok", "{}", r.dump());
    assert!(r.warnings().contains("hand.t"), "{}", r.dump());
}

#[test]
fn a_state_directory_removed_during_a_run_fails_the_run() {
    let inst = Instance::busy(100_000);
    inst.apply();
    let analytics = std::fs::read(inst.analytics_path()).unwrap();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("pipeline"))
        .arg("--dir")
        .arg(inst.path())
        .args(["run", "--full-refresh", "-j", "1", "--format", "ndjson"])
        .env_remove("CI")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events: Vec<Value> = Vec::new();
    // Remove the state as soon as the run is under way (its first task done, others to come).
    for line in lines.by_ref() {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        let under_way = event["event"] == "task_finished";
        events.push(event);
        if under_way {
            std::fs::remove_dir_all(inst.path().join("data/state")).unwrap();
            break;
        }
    }
    for line in lines {
        events.push(serde_json::from_str(&line.unwrap()).unwrap());
    }
    let status = wait_for(Duration::from_secs(120), "the run to end", || {
        child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(1), "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "run_finished", "{events:?}");
    assert_eq!(last["status"], "failed", "{last}");
    assert_eq!(last["published"], false, "{last}");
    assert!(
        last["record_error"]
            .as_str()
            .unwrap_or("")
            .contains("does not exist any more"),
        "{last}"
    );
    // No new, empty state was created in its place, and analytics is the previous file.
    assert!(!inst.state_path().exists());
    assert_eq!(std::fs::read(inst.analytics_path()).unwrap(), analytics);
}

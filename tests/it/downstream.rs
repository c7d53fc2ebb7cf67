//! Data safety downstream of the tables (issue 15, points 2–5), end to end on real files and real
//! processes: `plan` labels changes breaking or not by binding against the published analytics;
//! `apply` (and the daemon's watcher) refuse breaking changes unless told; declared columns are
//! checked against the published data; fixing a failed extract's spec queues it again; transforms
//! and metric checks keep their last good result and say `stale`; one bad table fails alone.

use crate::common::count;
use crate::common::daemon::{call, ok, status, token, wait_for, Daemon};
use crate::common::Instance;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const CONFIG: (&str, &str) = ("config/instance.yaml", "name: Test\ntimezone: UTC\n");

/// `facts` reads orders; `daily` reads facts; a metric reads facts. Line 6 is facts' SQL.
const SHOP: &str = "type: csv
connection:
  path: files
transforms:
  - name: facts
    sql: select order_id, customer_id, amount from orders
  - name: daily
    sql: select customer_id, sum(amount) as total from facts group by 1
";

const REGISTRY: &str = "tables:
  - source: shop
    source_table: orders
  - source: shop
    source_table: customers
";

const REVENUE: &str =
    "description: Revenue\nowner: data@example.com\nsql: select sum(amount) as value from facts\n";

const ORDERS: &str = "order_id,customer_id,amount,updated_at\n1,10,5.5,2026-01-01 10:00:00\n2,11,7.25,2026-01-02 11:00:00\n3,10,1.0,2026-01-03 12:00:00\n";
const CUSTOMERS: &str = "customer_id,name\n10,Ann\n11,Bo\n";

fn shop() -> Instance {
    Instance::from_files(&[
        CONFIG,
        ("pipelines/shop.yaml", SHOP),
        ("registry/shop.yaml", REGISTRY),
        ("metrics/sales/revenue.yaml", REVENUE),
        ("files/orders.csv", ORDERS),
        ("files/customers.csv", CUSTOMERS),
    ])
}

/// Replaces `from` by `to` in the file at `rel` (which must contain it).
fn edit(inst: &Instance, rel: &str, from: &str, to: &str) {
    let path = inst.path().join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{rel} has no {from:?}");
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// The change to `kind` `id` in a JSON plan.
fn change<'a>(plan: &'a Value, kind: &str, id: &str) -> &'a Value {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == kind && c["id"] == id)
        .unwrap_or_else(|| panic!("no change to {kind} {id} in {plan:#}"))
}

/// The object `id` of `kind` listed in an impact's `breaks`.
fn broken<'a>(impact: &'a Value, kind: &str, id: &str) -> &'a Value {
    impact["breaks"]
        .as_array()
        .unwrap_or_else(|| panic!("no breaks in {impact:#}"))
        .iter()
        .find(|b| b["kind"] == kind && b["id"] == id)
        .unwrap_or_else(|| panic!("{kind} {id} is not among the breaks: {impact:#}"))
}

fn status_json(inst: &Instance) -> Value {
    serde_json::from_str(&ok(inst, &["status", "--format", "json"])).unwrap()
}

/// The entry named `name` (under `key`) of a list in a status document.
fn entry<'a>(status: &'a Value, list: &str, key: &str, name: &str) -> &'a Value {
    status[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {status:#}"))
        .iter()
        .find(|e| e[key] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}: {status:#}"))
}

/// Runs `pipeline <args>`; (exit code, stdout, stderr).
fn run(inst: &Instance, args: &[&str]) -> (i32, String, String) {
    let out = inst.cmd().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plan_labels_changes_breaking_or_not_by_binding_downstream_sql() {
    let inst = shop();
    inst.apply();

    // Dropping `amount` from facts breaks daily and the metric, which read it.
    edit(
        &inst,
        "pipelines/shop.yaml",
        "select order_id, customer_id, amount from orders",
        "select order_id, customer_id from orders",
    );
    let plan = inst.plan(&[]);
    let facts = &change(&plan, "transform", "facts")["impact"];
    assert_eq!(facts["label"], "breaking", "{plan:#}");
    assert_eq!(facts["at"], "pipelines/shop.yaml:6");
    let daily = broken(facts, "transform", "daily");
    assert!(
        daily["message"].as_str().unwrap().contains("amount"),
        "{daily}"
    );
    assert!(
        daily["at"]
            .as_str()
            .unwrap()
            .starts_with("pipelines/shop.yaml:8:"),
        "{daily}"
    );
    let revenue = broken(facts, "metric", "sales/revenue");
    assert!(
        revenue["message"]
            .as_str()
            .unwrap()
            .contains("Binder Error"),
        "{revenue}"
    );
    assert!(
        revenue["at"]
            .as_str()
            .unwrap()
            .starts_with("metrics/sales/revenue.yaml:3:"),
        "{revenue}"
    );
    assert_eq!(plan["summary"]["breaking"], 1);

    let (code, human, _) = run(&inst, &["plan"]);
    assert_eq!(code, 0);
    assert!(
        human.contains("~ transform facts  pipelines/shop.yaml  [breaking]"),
        "{human}"
    );
    assert!(
        human.contains("! breaking (pipelines/shop.yaml:6): 2 object(s) would not bind"),
        "{human}"
    );
    assert!(human.contains("transform daily"), "{human}");
    assert!(human.contains("metric sales/revenue"), "{human}");
    assert!(human.contains("1 breaking change(s)"), "{human}");

    // Adding a column breaks nothing; neither does a description.
    edit(
        &inst,
        "pipelines/shop.yaml",
        "select order_id, customer_id from orders",
        "select order_id, customer_id, amount, amount * 2 as doubled from orders",
    );
    edit(
        &inst,
        "registry/shop.yaml",
        "source_table: customers\n",
        "source_table: customers\n    description: People who order\n",
    );
    let plan = inst.plan(&[]);
    assert_eq!(
        change(&plan, "transform", "facts")["impact"]["label"],
        "non-breaking",
        "{plan:#}"
    );
    assert_eq!(
        change(&plan, "table", "shop.customers")["impact"]["label"],
        "non-breaking"
    );
    assert_eq!(plan["summary"]["breaking"], 0);
    let (_, human, _) = run(&inst, &["plan"]);
    assert!(human.contains("[non-breaking]"), "{human}");
    assert!(!human.contains("[breaking]"), "{human}");
}

#[test]
fn apply_refuses_breaking_changes_unless_allowed_and_what_breaks_keeps_its_last_result() {
    let inst = shop();
    inst.apply();
    edit(
        &inst,
        "pipelines/shop.yaml",
        "select order_id, customer_id, amount from orders",
        "select order_id, customer_id from orders",
    );

    let (code, _, stderr) = run(&inst, &["apply", "--auto-approve"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("refusing to apply"), "{stderr}");
    assert!(
        stderr.contains("transform `daily`") && stderr.contains("metric `sales/revenue`"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-breaking"), "{stderr}");
    assert_eq!(
        inst.state_int("SELECT value::BIGINT FROM state_meta WHERE key = 'serial'"),
        1
    );

    // A saved plan records the labels: applying it needs the flag too.
    let saved = inst.path().join("plan.json");
    ok(&inst, &["plan", "--out", saved.to_str().unwrap()]);
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(text.contains("\"label\": \"breaking\""), "{text}");
    let (code, _, stderr) = run(&inst, &["apply", saved.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("refusing to apply"), "{stderr}");
    assert_eq!(
        inst.state_int("SELECT value::BIGINT FROM state_meta WHERE key = 'serial'"),
        1
    );

    let (code, _, stderr) = run(
        &inst,
        &["apply", saved.to_str().unwrap(), "--allow-breaking"],
    );
    // Applied; daily and the metric now fail, as the plan said.
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        inst.state_int("SELECT value::BIGINT FROM state_meta WHERE key = 'serial'"),
        2
    );
    let s = status_json(&inst);
    let daily = entry(&s, "transform_states", "name", "daily");
    assert_eq!(daily["status"], "failed", "{s:#}");
    assert!(
        daily["reason"]
            .as_str()
            .unwrap()
            .contains("previous result is kept"),
        "{daily}"
    );
    assert_eq!(
        entry(&s, "metric_checks", "metric", "sales/revenue")["status"],
        "failed"
    );
    // daily's previous result is still there for analysts.
    assert_eq!(count(&inst, "daily"), 2);
    assert_eq!(
        entry(&s, "transform_states", "name", "facts")["status"],
        "ok"
    );
}

#[test]
fn plan_reports_declared_columns_the_published_data_lacks() {
    let inst = shop();
    inst.apply();
    edit(
        &inst,
        "registry/shop.yaml",
        "source_table: orders\n",
        "source_table: orders\n    columns:\n      order_id: The order\n      discount: Discount given\n",
    );
    let plan = inst.plan(&[]);
    let impact = &change(&plan, "table", "shop.orders")["impact"];
    let warning = impact["warnings"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{plan:#}"));
    assert!(warning.contains("`discount`"), "{warning}");
    assert!(!warning.contains("`order_id`"), "{warning}");
    assert!(
        warning.contains("order_id, customer_id, amount, updated_at"),
        "{warning}"
    );
    let (_, human, _) = run(&inst, &["plan"]);
    assert!(
        human.contains("! warning: declares column(s) `discount`"),
        "{human}"
    );
}

#[test]
fn fixing_the_spec_that_made_an_extract_fail_queues_it_again() {
    let inst = shop();
    edit(
        &inst,
        "registry/shop.yaml",
        "source_table: orders\n",
        "source_table: orders\n    columns:\n      order_id: The order\n      discount: Discount given\n",
    );
    let (code, _, stderr) = run(&inst, &["apply", "--auto-approve"]);
    assert_eq!(code, 1, "the extract fails on the missing column: {stderr}");
    let s = status_json(&inst);
    let orders = entry(&s, "tables", "id", "shop.orders");
    assert_eq!(orders["last_status"], "error", "{s:#}");
    assert!(orders["last_error"].as_str().unwrap().contains("discount"));

    // Removing the wrong column only changes documentation, but the extract failed: it runs again.
    edit(
        &inst,
        "registry/shop.yaml",
        "      discount: Discount given\n",
        "",
    );
    let plan = inst.plan(&[]);
    let task = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "extract:shop.orders")
        .unwrap_or_else(|| panic!("the extract is not queued: {plan:#}"));
    assert_eq!(
        task["reason"],
        "its last extract failed and its spec changed"
    );
    inst.apply();
    let s = status_json(&inst);
    let orders = entry(&s, "tables", "id", "shop.orders");
    assert_eq!(orders["last_status"], "ok", "{s:#}");
    assert_eq!(orders["rows"], 3);
    assert_eq!(count(&inst, "facts"), 3);
}

/// The shop plus `people` (a table transform over customers), `people_names` (a view over people)
/// and a metric over the view.
fn shop_with_people() -> Instance {
    let inst = shop();
    inst.write(
        "pipelines/shop.yaml",
        &format!(
            "{SHOP}  - name: people\n    sql: select customer_id, name from customers\n  - name: people_names\n    materialized: view\n    sql: select name from people\n"
        ),
    );
    inst.write(
        "metrics/sales/people.yaml",
        "description: People\nowner: data@example.com\nsql: select count(*) as value from people_names\n",
    );
    inst
}

#[test]
fn downstream_keeps_its_last_good_result_and_says_stale_in_status_and_the_api() {
    let inst = shop_with_people();
    inst.apply();
    assert_eq!(count(&inst, "people_names"), 2);

    // The orders export disappears (its extract fails) and customers loses `name` (people fails:
    // the table's contract lets the new shape through, so the failure is the transform's).
    edit(
        &inst,
        "registry/shop.yaml",
        "source_table: customers\n",
        "source_table: customers\n    schema_changes: evolve\n",
    );
    inst.apply();
    std::fs::remove_file(inst.path().join("files/orders.csv")).unwrap();
    inst.write(
        "files/customers.csv",
        "customer_id,full_name\n10,Ann\n11,Bo\n12,Cy\n",
    );
    let (code, _, stderr) = run(&inst, &["run"]);
    assert_eq!(code, 1, "{stderr}");

    // Everything stays queryable from a plain DuckDB session, with its previous rows.
    let conn = inst.analytics();
    let n = |rel: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {rel}"), [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    assert_eq!((n("facts"), n("people"), n("people_names")), (3, 2, 2));
    let marks: Vec<(String, String)> = conn
        .prepare("SELECT name, status FROM _pipeline.transforms ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(conn);
    let marks: Vec<(&str, &str)> = marks
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        marks,
        [
            ("daily", "stale"),
            ("facts", "stale"),
            ("people", "failed"),
            ("people_names", "stale")
        ]
    );

    let s = status_json(&inst);
    let facts = entry(&s, "transform_states", "name", "facts");
    assert_eq!(facts["status"], "stale", "{s:#}");
    assert!(
        facts["reason"].as_str().unwrap().contains("`orders`"),
        "{facts}"
    );
    assert!(facts["last_ok_at"].is_string());
    let people = entry(&s, "transform_states", "name", "people");
    assert_eq!(people["status"], "failed");
    assert!(
        people["reason"].as_str().unwrap().contains("name"),
        "{people}"
    );
    let names = entry(&s, "transform_states", "name", "people_names");
    assert_eq!(names["status"], "stale");
    assert!(
        names["reason"].as_str().unwrap().contains("`people`"),
        "{names}"
    );
    for metric in ["sales/people", "sales/revenue"] {
        let check = entry(&s, "metric_checks", "metric", metric);
        assert_eq!(check["status"], "stale", "{s:#}");
    }
    let (_, human, _) = run(&inst, &["status"]);
    assert!(human.contains("people_names (stale)"), "{human}");

    // The daemon's /api/status says the same.
    let t = token(&inst, "ann", &[]);
    let d = Daemon::start(&inst, &[], &[]);
    let api = wait_for(
        Duration::from_secs(20),
        "transform states in /api/status",
        || {
            let s = status(&d, &t);
            (s["transform_states"]
                .as_array()
                .is_some_and(|a| a.len() == 4))
            .then_some(s)
        },
    );
    assert_eq!(
        entry(&api, "transform_states", "name", "people_names")["status"],
        "stale"
    );
    assert_eq!(
        entry(&api, "transform_states", "name", "people")["status"],
        "failed"
    );
    assert_eq!(
        entry(&api, "metric_checks", "metric", "sales/people")["status"],
        "stale"
    );

    // The watcher never applies a breaking change: it reports it and keeps serving.
    let serial = api["serial"].clone();
    edit(
        &inst,
        "pipelines/shop.yaml",
        "select order_id, customer_id, amount from orders",
        "select order_id, customer_id from orders",
    );
    let watcher = wait_for(Duration::from_secs(20), "the watcher to refuse", || {
        let s = status(&d, &t);
        (s["watcher"]["last_result"] == "breaking").then(|| s["watcher"].clone())
    });
    let errors = watcher["errors"].to_string();
    assert!(
        errors.contains("transform `facts` (pipelines/shop.yaml:6)"),
        "{errors}"
    );
    assert!(errors.contains("metric `sales/revenue`"), "{errors}");
    assert!(errors.contains("--allow-breaking"), "{errors}");
    assert_eq!(status(&d, &t)["serial"], serial);
    let (code, _) = call("GET", &d.url("/api/tables/orders"), Some(&t), None);
    assert_eq!(code, 200);
}

/// A duckdb source with a local table, a remote one and a remote one naming a table that is not
/// there.
#[test]
fn a_bad_remote_table_fails_alone_while_its_siblings_publish() {
    let inst = Instance::from_files(&[
        CONFIG,
        (
            "pipelines/warehouse.yaml",
            "type: duckdb\nconnection:\n  path: db/warehouse.duckdb\n",
        ),
        (
            "registry/warehouse.yaml",
            "tables:\n  - source: warehouse\n    source_table: items\n  - source: warehouse\n    bucket: sales\n    source_table: orders\n    query_mode: remote\n  - source: warehouse\n    bucket: sales\n    source_table: ghost\n    query_mode: remote\n",
        ),
    ]);
    let db = inst.path().join("db/warehouse.duckdb");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let conn = duckdb::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE items AS SELECT range AS item_id FROM range(4);
         CREATE SCHEMA sales;
         CREATE TABLE sales.orders AS SELECT range AS order_id FROM range(5);
         CHECKPOINT;",
    )
    .unwrap();
    drop(conn);

    let (code, _, stderr) = run(&inst, &["apply", "--auto-approve"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("attach:sales.ghost"), "{stderr}");
    assert_eq!(count(&inst, "items"), 4);
    assert_eq!(count(&inst, "orders"), 5);
    let s = status_json(&inst);
    let ghost = entry(&s, "tables", "name", "ghost");
    assert_ne!(ghost["last_status"], "ok", "{s:#}");
    assert!(
        ghost["last_error"].as_str().unwrap().contains("ghost"),
        "{ghost}"
    );
    assert_eq!(entry(&s, "tables", "name", "items")["last_status"], "ok");
    assert_eq!(entry(&s, "tables", "name", "orders")["last_status"], "ok");
}

/// A table whose extract succeeds but whose view is refused at publish is not `ok` in status.
#[test]
fn status_never_says_ok_for_a_table_that_is_not_queryable() {
    let inst = shop();
    // Another tool's extract, first in name order, publishes `customers` first: ours is refused.
    foreign_extract(&inst.path().join("data/extracts/aaa"));
    let (code, _, stderr) = run(&inst, &["apply", "--auto-approve"]);
    assert_eq!(code, 0, "{stderr}");
    let s = status_json(&inst);
    let customers = entry(&s, "tables", "id", "shop.customers");
    assert_eq!(customers["last_status"], "failed", "{s:#}");
    assert!(
        customers["last_error"]
            .as_str()
            .unwrap()
            .contains("belongs to source `aaa`"),
        "{customers}"
    );
    assert_eq!(
        entry(&s, "tables", "id", "shop.orders")["last_status"],
        "ok"
    );
}

/// An extract.duckdb as another tool writes it, holding a table `customers` inside.
fn foreign_extract(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let conn = duckdb::Connection::open(dir.join("extract.duckdb")).unwrap();
    conn.execute_batch(
        "CREATE TABLE _meta (table_name VARCHAR NOT NULL, description VARCHAR, rows BIGINT,
             size_bytes BIGINT, extracted_at TIMESTAMP, query_mode VARCHAR DEFAULT 'local');
         CREATE TABLE _remote_attach (alias VARCHAR, extension VARCHAR, url VARCHAR, token_env VARCHAR);
         INSERT INTO _meta VALUES ('customers', NULL, 1, 0, NULL, 'local');
         CREATE TABLE customers AS SELECT 1 AS x;
         CHECKPOINT;",
    )
    .unwrap();
}

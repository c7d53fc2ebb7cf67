//! The one-source publish (issue 16 stage B2), end to end: `pipeline run --source X` republishes
//! only X in a copy of the live analytics file and rebuilds only the transforms that read it; the
//! file it leaves is the one a full rebuild would (the next full run finds analytics up to date);
//! with no live file it rebuilds everything. `pipeline run --select` builds only the chosen
//! transforms in the same kind of copy (issue 20 point 6). And the run's metric check is `metrics
//! check`: a broken variant fails both.

use crate::common::daemon::ok;
use crate::common::Instance;
use serde_json::Value;

const CONFIG: (&str, &str) = ("config/instance.yaml", "name: Test\ntimezone: UTC\n");

/// `facts` reads shop's orders, `daily` reads facts; `people` reads crm's contacts.
const SHOP: &str = "type: csv
connection:
  path: files/shop
transforms:
  - name: facts
    sql: select order_id, amount from orders
  - name: daily
    sql: select count(*) as n, sum(amount) as total from facts
  - name: people
    sql: select count(*) as n from contacts
";
const CRM: &str = "type: csv\nconnection:\n  path: files/crm\n";
const REGISTRY: &str = "tables:
  - source: shop
    source_table: orders
  - source: crm
    source_table: contacts
";
const ORDERS: &str = "order_id,amount\n1,5.5\n2,7.25\n";
const CONTACTS: &str = "id,name\n1,Ann\n2,Bo\n3,Cy\n";

fn instance() -> Instance {
    Instance::from_files(&[
        CONFIG,
        ("pipelines/shop.yaml", SHOP),
        ("pipelines/crm.yaml", CRM),
        ("registry/all.yaml", REGISTRY),
        ("files/shop/orders.csv", ORDERS),
        ("files/crm/contacts.csv", CONTACTS),
    ])
}

/// The `task_finished` events of a `run --format json`, by task id.
fn run_json(inst: &Instance, args: &[&str]) -> std::collections::BTreeMap<String, Value> {
    let mut all = vec!["run", "--format", "ndjson"];
    all.extend_from_slice(args);
    ok(inst, &all)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "task_finished")
        .map(|e| (e["task"].as_str().unwrap_or_default().to_string(), e))
        .collect()
}

fn int(inst: &Instance, sql: &str) -> i64 {
    inst.analytics().query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn run_source_republishes_one_source_and_what_reads_it() {
    let inst = instance();
    inst.apply();
    assert_eq!(int(&inst, "select n from daily"), 2);
    assert_eq!(int(&inst, "select n from people"), 3);

    inst.write("files/shop/orders.csv", &format!("{ORDERS}3,1.0\n"));
    let tasks = run_json(&inst, &["--source", "shop"]);
    let publish = &tasks["publish:analytics"];
    assert_eq!(publish["status"], "ok", "{publish}");
    assert!(
        publish["detail"]
            .as_str()
            .unwrap()
            .contains("shop republished"),
        "{publish}"
    );
    // Only the transforms that read shop ran; `people` kept its result.
    assert_eq!(tasks["transform:facts"]["status"], "ok");
    assert_eq!(tasks["transform:daily"]["status"], "ok");
    assert!(!tasks.contains_key("transform:people"), "{tasks:?}");
    assert_eq!(int(&inst, "select n from daily"), 3);
    assert_eq!(int(&inst, "select count(*) from orders"), 3);
    assert_eq!(int(&inst, "select n from people"), 3);
    assert_eq!(int(&inst, "select count(*) from contacts"), 3);
    let statuses: Vec<(String, String)> = inst
        .analytics()
        .prepare("select name, status from _pipeline.transforms order by name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        statuses,
        [("daily", "ok"), ("facts", "ok"), ("people", "ok")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let sources: i64 = int(
        &inst,
        "select count(*) from _pipeline.tables where name in ('orders', 'contacts')",
    );
    assert_eq!(sources, 2);

    // What it left is what a full rebuild would leave: nothing to publish.
    let tasks = run_json(&inst, &[]);
    let publish = &tasks["publish:analytics"];
    assert_eq!(publish["status"], "unchanged", "{publish}");
    assert!(
        publish["detail"].as_str().unwrap().contains("up to date"),
        "{publish}"
    );
}

#[test]
fn a_full_run_republishes_only_the_sources_that_changed() {
    let inst = instance();
    inst.apply();
    // Both sources are synced; only shop's data changed.
    inst.write("files/shop/orders.csv", &format!("{ORDERS}3,1.0\n"));
    let tasks = run_json(&inst, &[]);
    assert_eq!(tasks["extract:crm.contacts"]["status"], "unchanged");
    let detail = tasks["publish:analytics"]["detail"].as_str().unwrap();
    assert!(detail.contains("shop republished"), "{detail}");
    assert_eq!(tasks["transform:facts"]["status"], "ok");
    assert_eq!(tasks["transform:daily"]["status"], "ok");
    // `people` reads only crm: kept in the copy, not built again.
    let people = &tasks["transform:people"];
    assert_eq!(people["status"], "unchanged", "{people}");
    assert!(
        people["detail"].as_str().unwrap().contains("kept"),
        "{people}"
    );
    assert_eq!(int(&inst, "select n from daily"), 3);
    assert_eq!(int(&inst, "select n from people"), 3);
    // The file is the one a full rebuild would leave.
    let tasks = run_json(&inst, &[]);
    assert_eq!(tasks["publish:analytics"]["status"], "unchanged");
    // A new transform is built in a copy too (with the next changed source's).
    inst.write(
        "pipelines/crm.yaml",
        "type: csv\nconnection:\n  path: files/crm\ntransforms:\n  - name: crm_count\n    sql: select count(*) as n from contacts\n",
    );
    inst.apply();
    assert_eq!(int(&inst, "select n from crm_count"), 3);
    inst.write("files/crm/contacts.csv", &format!("{CONTACTS}4,Di\n"));
    let tasks = run_json(&inst, &[]);
    let detail = tasks["publish:analytics"]["detail"].as_str().unwrap();
    assert!(detail.contains("crm republished"), "{detail}");
    assert_eq!(tasks["transform:facts"]["status"], "unchanged");
    assert_eq!(tasks["transform:people"]["status"], "ok");
    assert_eq!(int(&inst, "select n from people"), 4);
    assert_eq!(int(&inst, "select n from crm_count"), 4);
    assert_eq!(int(&inst, "select n from daily"), 3);
}

#[test]
fn a_changed_transform_is_rebuilt_with_what_reads_it_and_nothing_else() {
    let inst = instance();
    inst.apply();
    let queue = |spec: &str| {
        inst.write("pipelines/shop.yaml", spec);
        inst.cmd()
            .args(["apply", "--auto-approve", "--queue-only"])
            .assert()
            .success();
    };
    // `facts` doubles its amounts and becomes a table: it and `daily` (which reads it) are built
    // again in a copy of the live file; `people` keeps its result.
    let doubled = SHOP.replace(
        "    sql: select order_id, amount from orders\n",
        "    materialized: table\n    sql: select order_id, amount * 2 as amount from orders\n",
    );
    queue(&doubled);
    let tasks = run_json(&inst, &[]);
    let detail = tasks["publish:analytics"]["detail"].as_str().unwrap();
    assert!(detail.contains("transforms changed: facts"), "{detail}");
    assert!(!detail.contains("republished"), "{detail}");
    assert_eq!(tasks["transform:facts"]["status"], "ok");
    assert_eq!(tasks["transform:daily"]["status"], "ok");
    let people = &tasks["transform:people"];
    assert_eq!(people["status"], "unchanged", "{people}");
    assert!(
        people["detail"].as_str().unwrap().contains("kept"),
        "{people}"
    );
    let total: f64 = inst
        .analytics()
        .query_row("select total from daily", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total, 25.5);
    let kind: String = inst
        .analytics()
        .query_row(
            "select table_type from information_schema.tables where table_name = 'facts'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kind, "BASE TABLE");
    // What it left is what a full rebuild would leave.
    let tasks = run_json(&inst, &[]);
    assert_eq!(tasks["publish:analytics"]["status"], "unchanged");

    // `people` goes and `big` comes: only `big` is built, `people` is gone from analytics.
    queue(&doubled.replace(
        "  - name: people\n    sql: select count(*) as n from contacts\n",
        "  - name: big\n    sql: select * from facts where amount > 12\n",
    ));
    let tasks = run_json(&inst, &[]);
    let detail = tasks["publish:analytics"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("transforms changed: big, people"),
        "{detail}"
    );
    assert_eq!(tasks["transform:big"]["status"], "ok");
    assert_eq!(tasks["transform:facts"]["status"], "unchanged");
    assert_eq!(tasks["transform:daily"]["status"], "unchanged");
    assert_eq!(int(&inst, "select count(*) from big"), 1);
    assert_eq!(int(&inst, "select n from daily"), 2);
    assert!(inst.analytics().prepare("select * from people").is_err());
    let statuses: Vec<String> = inst
        .analytics()
        .prepare("select name || '=' || status from _pipeline.transforms order by name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(statuses, ["big=ok", "daily=ok", "facts=ok"]);
    let tasks = run_json(&inst, &[]);
    assert_eq!(tasks["publish:analytics"]["status"], "unchanged");
}

#[test]
fn run_source_without_a_live_file_rebuilds_everything() {
    let inst = instance();
    inst.apply();
    std::fs::remove_file(inst.analytics_path()).unwrap();
    let tasks = run_json(&inst, &["--source", "shop"]);
    let publish = &tasks["publish:analytics"];
    assert_eq!(publish["status"], "ok", "{publish}");
    assert!(
        !publish["detail"].as_str().unwrap().contains("republished"),
        "{publish}"
    );
    assert_eq!(tasks["transform:people"]["status"], "ok");
    assert_eq!(int(&inst, "select n from people"), 3);
    assert_eq!(int(&inst, "select n from daily"), 2);
}

/// The transform tasks a `run --select` ran, in order.
fn transforms_run(tasks: &std::collections::BTreeMap<String, Value>) -> Vec<String> {
    let mut ran: Vec<(String, String)> = tasks
        .iter()
        .filter(|(id, _)| id.starts_with("transform:"))
        .map(|(id, e)| (e["status"].as_str().unwrap_or("?").to_string(), id.clone()))
        .collect();
    ran.sort_by(|a, b| a.1.cmp(&b.1));
    ran.into_iter()
        .map(|(status, id)| format!("{id}={status}"))
        .collect()
}

#[test]
fn run_select_builds_only_the_chosen_subgraph() {
    let inst = instance();
    // --select needs a published file to keep the other transforms' results in.
    let out = inst
        .cmd()
        .args(["run", "--select", "facts"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    inst.apply();

    let tasks = run_json(&inst, &["--select", "facts"]);
    assert_eq!(transforms_run(&tasks), ["transform:facts=ok"]);
    assert!(
        !tasks.keys().any(|k| k.starts_with("extract:")),
        "{tasks:?}"
    );
    let detail = tasks["publish:analytics"]["detail"].as_str().unwrap();
    assert!(detail.contains("a copy of the live file"), "{detail}");
    assert_eq!(
        transforms_run(&run_json(&inst, &["--select", "facts+"])),
        ["transform:daily=ok", "transform:facts=ok"]
    );
    assert_eq!(
        transforms_run(&run_json(&inst, &["--select", "+daily"])),
        ["transform:daily=ok", "transform:facts=ok"]
    );
    // The copy was complete and nothing else changed: a full run finds nothing to publish.
    let tasks = run_json(&inst, &[]);
    assert_eq!(tasks["publish:analytics"]["status"], "unchanged");

    // A table selector syncs the table and builds what reads it.
    inst.write("files/shop/orders.csv", &format!("{ORDERS}3,1.0\n"));
    let tasks = run_json(&inst, &["--select", "orders"]);
    assert_eq!(tasks["extract:shop.orders"]["status"], "ok");
    assert_eq!(
        transforms_run(&tasks),
        ["transform:daily=ok", "transform:facts=ok"]
    );
    assert_eq!(int(&inst, "select n from daily"), 3);
    assert_eq!(int(&inst, "select n from people"), 3);

    // Something else changed since the live file was built: the copy is refused, and with it the
    // run (building `daily` alone on a file rebuilt from the extracts would need `facts`); nothing
    // is published, every result stays. A full run then brings it up to date.
    inst.write("data/extracts/crm/data/extra.txt", "changes crm's stamp");
    let out = inst
        .cmd()
        .args(["run", "--select", "daily", "--format", "ndjson"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("out of date"), "{text}");
    assert!(text.contains("\"published\":false"), "{text}");
    assert_eq!(int(&inst, "select n from people"), 3);
    assert_eq!(int(&inst, "select n from daily"), 3);
    let tasks = run_json(&inst, &[]);
    assert_eq!(tasks["publish:analytics"]["status"], "ok");
    assert_eq!(
        transforms_run(&run_json(&inst, &["--select", "daily"])),
        ["transform:daily=ok"]
    );

    // An unknown name is an error naming the closest one.
    let out = inst
        .cmd()
        .args(["run", "--select", "dayly+"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did you mean `daily`"), "{err}");
}

#[test]
fn a_broken_variant_fails_metrics_check_and_the_run_check_alike() {
    let inst = instance();
    inst.write(
        "metrics/sales/revenue.yaml",
        "description: Revenue\nowner: data@example.com\ndimensions: [order_id]\n\
         sql: select sum(amount) as value from facts\n\
         variants:\n  by_order_id: select order_id, sum(no_such_column) as value from facts group by 1\n",
    );
    // Apply registers it; its check binds every variant, so the run fails on the variant.
    let out = inst
        .cmd()
        .args(["apply", "--auto-approve"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("variant `by_order_id` (grain month) does not bind"),
        "{text}"
    );
    let out = inst.cmd().args(["metrics", "check"]).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("variant `by_order_id`"), "{text}");
}

/// What a push connector does after writing a source's data: `exec::publish_source` republishes
/// that source alone, as a run the state records (trigger `push`).
#[test]
fn a_push_republishes_its_source_and_is_recorded() {
    use pipeline::registry::document::Objects;
    use pipeline::registry::registered::Registered;
    use pipeline::state::StateStore;

    let inst = instance();
    inst.apply();
    // The connector rewrote shop's data: four orders now.
    let parquet = inst.path().join("data/extracts/shop/data/orders.parquet");
    duckdb::Connection::open_in_memory()
        .unwrap()
        .execute_batch(&format!(
            "COPY (SELECT range AS order_id, 2.0 AS amount FROM range(4)) TO '{}' (FORMAT parquet)",
            parquet.display()
        ))
        .unwrap();
    let instance = pipeline::instance::Instance::open(inst.path()).unwrap();
    let store = StateStore::of(&instance.data);
    let registered =
        Registered::from_objects(&store.recorded(&Objects::new()).unwrap().objects).unwrap();
    let outcome =
        pipeline::exec::publish::publish_source(&instance, &registered, "shop", "test push")
            .unwrap();
    assert!(outcome.ok() && outcome.published);
    let publish = outcome
        .tasks
        .iter()
        .find(|f| f.task.id == "publish:analytics")
        .unwrap();
    assert!(
        publish
            .done
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("shop republished"),
        "{:?}",
        publish.done
    );
    assert!(!outcome
        .tasks
        .iter()
        .any(|f| f.task.id == "transform:people"));
    assert_eq!(int(&inst, "select n from daily"), 4);
    assert_eq!(int(&inst, "select n from people"), 3);
    assert_eq!(
        inst.state_int("select count(*) from runs where trigger = 'push' and published"),
        1
    );
}

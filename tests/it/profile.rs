//! Table profiles end to end (docs/profile.md): a run profiles the tables whose data changed after
//! its publish, `pipeline profile` shows them, an unchanged table is not profiled again, and the
//! daemon serves them only to callers who may read the table.

use crate::common::daemon::{call, ok, token, Daemon};
use crate::common::{Fmt, Instance};
use serde_json::Value;

const REGISTRY: &str = "tables:
  - source: shop
    source_table: orders
    description: One row per order
    columns: { order_id: Order identifier }
    access: [finance]
  - source: shop
    source_table: customers
";

fn profile_json(inst: &Instance, table: &str) -> Value {
    serde_json::from_str(&ok(inst, &["profile", table, "--format", "json"])).unwrap()
}

fn column<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["profile"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no column {name} in {answer}"))
}

/// (table id → (profiled_at, run_id)) from the state.
fn profiled(inst: &Instance) -> std::collections::BTreeMap<String, (String, String)> {
    let conn = inst.state();
    let mut stmt = conn
        .prepare("SELECT table_id, CAST(profiled_at AS VARCHAR), run_id FROM profiles")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

#[test]
fn runs_profile_changed_tables_and_the_cli_and_api_show_them() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec("registry/shop", REGISTRY);
    inst.apply();

    // The apply's run profiled both tables from the published data.
    let a = profile_json(&inst, "orders");
    assert_eq!(a["id"], "shop.orders", "{a}");
    assert_eq!(a["profile"]["rows"], 3, "{a}");
    let id = column(&a, "order_id");
    assert_eq!(
        (&id["nulls"], &id["distinct"]),
        (&0.into(), &3.into()),
        "{a}"
    );
    assert_eq!((&id["min"], &id["max"]), (&1.into(), &3.into()), "{a}");
    let amount = column(&a, "amount");
    assert_eq!(
        (&amount["min"], &amount["max"]),
        (&1.0.into(), &7.25.into())
    );
    let customer = column(&a, "customer_id");
    assert_eq!(
        customer["top"][0],
        serde_json::json!({"value": 10, "count": 2})
    );
    assert_eq!(column(&a, "updated_at")["min"], "2026-01-01T10:00:00");
    assert_eq!(a["profile"]["sample"].as_array().unwrap().len(), 3);
    assert!(a["profiled_at"].as_str().unwrap().ends_with('Z'), "{a}");
    // Both the transform and the metric read orders themselves.
    assert_eq!(
        a["used_by"],
        serde_json::json!([
            {"kind": "transform", "name": "daily", "direct": true},
            {"kind": "metric", "name": "sales/order_count", "direct": true}
        ])
    );
    // By id as well; nothing reads customers.
    let c = profile_json(&inst, "shop.customers");
    assert_eq!(c["profile"]["rows"], 2, "{c}");
    assert_eq!(c["used_by"], serde_json::json!([]));

    // The human table.
    let human = ok(&inst, &["profile", "orders"]);
    for needle in [
        "shop.orders (view orders, source shop, local)",
        "3 rows · profiled",
        "order_id",
        "~3",
        "10 (2)",
        "Sample (3 random rows)",
        "Used by: transform daily, metric sales/order_count",
    ] {
        assert!(human.contains(needle), "{needle:?} missing:\n{human}");
    }
    // An unknown name: an error with a suggestion.
    inst.cmd()
        .args(["profile", "ordrs"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("did you mean `orders`?"));

    // A run with no new data profiles nothing (no event, same records).
    let before = profiled(&inst);
    assert_eq!(before.len(), 2, "{before:?}");
    let out = ok(&inst, &["run", "--format", "ndjson"]);
    assert!(!out.contains("\"event\":\"profiled\""), "{out}");
    assert_eq!(profiled(&inst), before);

    // New orders: only orders is profiled again.
    inst.write(
        "files/orders.csv",
        "order_id,customer_id,amount,updated_at\n1,10,5.5,2026-01-01 10:00:00\n2,11,7.25,2026-01-02 11:00:00\n3,10,1.0,2026-01-03 12:00:00\n4,,99.5,2026-01-04 12:00:00\n",
    );
    let out = ok(&inst, &["run", "--format", "ndjson"]);
    let event: Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "profiled")
        .unwrap_or_else(|| panic!("no profiled event:\n{out}"));
    assert_eq!(
        event["tables"],
        serde_json::json!(["shop.orders"]),
        "{event}"
    );
    let after = profiled(&inst);
    assert_ne!(after["shop.orders"], before["shop.orders"]);
    assert_eq!(after["shop.customers"], before["shop.customers"]);
    let a = profile_json(&inst, "orders");
    assert_eq!(a["profile"]["rows"], 4, "{a}");
    assert_eq!(column(&a, "customer_id")["nulls"], 1, "{a}");
    assert_eq!(column(&a, "amount")["max"], 99.5, "{a}");

    // `--no-profile` leaves a change unprofiled; the next run catches up.
    inst.write(
        "files/customers.csv",
        "customer_id,name\n10,Ann\n11,Bo\n12,Cy\n",
    );
    ok(&inst, &["run", "--no-profile"]);
    assert_eq!(profile_json(&inst, "customers")["profile"]["rows"], 2);
    ok(&inst, &["run"]);
    assert_eq!(profile_json(&inst, "customers")["profile"]["rows"], 3);

    // The daemon serves a profile to callers who may read the table, and only to them.
    let finance = token(&inst, "fay", &["finance"]);
    let other = token(&inst, "oli", &["sales"]);
    let mut d = Daemon::start(&inst, &[], &[]);
    let (code, body) = call(
        "GET",
        &d.url("/api/tables/orders/profile"),
        Some(&finance),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["profile"]["rows"], 4, "{body}");
    assert_eq!(body["used_by"].as_array().unwrap().len(), 2, "{body}");
    let (code, body) = call(
        "GET",
        &d.url("/api/tables/orders/profile"),
        Some(&other),
        None,
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.to_string().contains("finance"), "{body}");
    assert!(!body.to_string().contains("99.5"), "{body}");
    let (code, body) = call(
        "GET",
        &d.url("/api/tables/shop.customers/profile"),
        Some(&other),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["profile"]["rows"], 3, "{body}");
    let (code, _) = call(
        "GET",
        &d.url("/api/tables/nope/profile"),
        Some(&other),
        None,
    );
    assert_eq!(code, 404);
    let (code, _) = call("GET", &d.url("/api/tables/orders/profile"), None, None);
    assert_eq!(code, 401);
    // The manifest carries the short form, for the tables the caller may read only.
    let (code, m) = call("GET", &d.url("/api/manifest"), Some(&other), None);
    assert_eq!(code, 200, "{m}");
    let tables = m["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 1, "{m}");
    assert_eq!(tables[0]["profile"]["rows"], 3, "{m}");
    assert!(tables[0]["profile"]["columns"][0].get("top").is_none());
    d.stop(std::time::Duration::from_secs(10));
}

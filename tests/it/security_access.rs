//! Access checks of the query API and the catalogue against the bypasses of issue 14 (findings 1, 2
//! and 9), through a real daemon on 127.0.0.1: CTE names that used to hide restricted tables and
//! transforms, a transform that shadows its input, catalogue listings and settings, and run details.
//! See docs/security.md, "Query access checks".

use crate::common::daemon::{call, ok, token, wait_for, Daemon};
use crate::common::{Fmt, Instance};
use indoc::indoc;
use serde_json::{json, Value};
use std::time::Duration;

/// The base instance with `orders` readable by `finance` only, and transforms that read it in the
/// ways that matter: plainly (`revenue`, a table in analytics.duckdb, which `allowed_paths` does
/// not guard), through a CTE of the same name (`shadow`), not at all (`open_counts`), and through
/// the catalogue (`peek`, whose inputs cannot be determined). A metric reads a setting.
fn restricted() -> Instance {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec(
        "registry/shop",
        indoc! {"
            tables:
              - source: shop
                source_table: orders
                access: [finance]
              - source: shop
                source_table: customers
        "},
    );
    inst.write_spec(
        "pipelines/shop",
        indoc! {"
            type: csv
            connection:
              path: files
            transforms:
              - name: revenue
                sql: select sum(amount) as total from orders
              - name: shadow
                sql: |
                  with orders as (select * from orders where amount > 1)
                  select count(*) as n from orders
              - name: open_counts
                sql: with c as (select * from customers) select count(*) as n from c
              - name: peek
                sql: select count(*) as n from information_schema.tables
        "},
    );
    inst.write_spec(
        "metrics/ops/threads",
        "description: Threads\nowner: ops@example.com\nsql: select current_setting('threads') as value\n",
    );
    inst.apply();
    inst
}

fn query(d: &Daemon, token: &str, sql: &str) -> (u16, Value) {
    call(
        "POST",
        &d.url("/api/query"),
        Some(token),
        Some(&json!({ "sql": sql }).to_string()),
    )
}

fn transforms(d: &Daemon, token: &str) -> Vec<String> {
    let (code, body) = call("GET", &d.url("/api/tables"), Some(token), None);
    assert_eq!(code, 200, "{body}");
    body["transforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn cte_names_do_not_hide_restricted_tables_or_transforms() {
    let inst = restricted();
    let analyst = token(&inst, "ann", &["analysts"]);
    let finance = token(&inst, "fin", &["finance"]);
    let admin = token(&inst, "root", &["admin"]);
    let d = Daemon::start(&inst, &[], &[]);

    // The bypass: a CTE named like the table in an unrelated subquery, then the table itself.
    for (sql, names) in [
        (
            "select * from (with orders as (select 1) select * from orders) s, orders",
            "orders",
        ),
        // A transform materialised in analytics.duckdb: only the check stands in the way.
        (
            "select * from (with revenue as (select 1) select * from revenue) s, revenue",
            "revenue",
        ),
        (
            "select (select total from revenue) from (with revenue as (select 1) select 1) s",
            "revenue",
        ),
        (
            "(with revenue as (select 1 as total) select * from revenue) union all select * from revenue",
            "revenue",
        ),
    ] {
        let (code, body) = query(&d, &analyst, sql);
        assert_eq!(code, 403, "{sql}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(names),
            "{sql}: {body}"
        );
        assert!(body.get("rows").is_none(), "{sql} leaked: {body}");
    }
    // Those allowed to read the data still can, the same way.
    let (code, body) = query(
        &d,
        &finance,
        "select * from (with revenue as (select 1 as x) select * from revenue) s, revenue",
    );
    assert_eq!(
        (code, body["rows"].clone()),
        (200, json!([[1, 13.75]])),
        "{body}"
    );
    // A CTE in scope is still just a CTE.
    let (code, body) = query(
        &d,
        &analyst,
        "with orders as (select 7 as n) select * from orders, open_counts",
    );
    assert_eq!(
        (code, body["rows"].clone()),
        (200, json!([[7, 2]])),
        "{body}"
    );

    // A transform that shadows its input with a CTE inherits the input's access.
    let (code, body) = query(&d, &analyst, "select * from shadow");
    assert_eq!(code, 403, "{body}");
    let (code, body) = query(&d, &finance, "select * from shadow");
    assert_eq!((code, body["rows"].clone()), (200, json!([[2]])), "{body}");
    assert_eq!(transforms(&d, &analyst), ["open_counts"]);
    assert_eq!(
        transforms(&d, &finance),
        ["open_counts", "revenue", "shadow"]
    );
    let (_, tables) = call("GET", &d.url("/api/tables"), Some(&finance), None);
    let shadow = tables["transforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "shadow")
        .unwrap();
    assert_eq!(shadow["inputs"], json!(["orders"]), "{tables}");

    // A transform whose inputs cannot be determined is for admins only, whoever else asks.
    for tok in [&analyst, &finance] {
        let (code, body) = query(&d, tok, "select * from peek");
        assert_eq!(code, 403, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("only by admins"),
            "{body}"
        );
    }
    let (code, body) = query(&d, &admin, "select n > 0 from peek");
    assert_eq!(
        (code, body["rows"].clone()),
        (200, json!([[true]])),
        "{body}"
    );
    assert!(transforms(&d, &admin).contains(&"peek".to_string()));
    // So is a metric that reads a setting.
    let (_, metrics) = call("GET", &d.url("/api/metrics"), Some(&finance), None);
    assert!(!metrics.to_string().contains("threads"), "{metrics}");
    let (code, body) = call(
        "GET",
        &d.url("/api/metrics/ops/threads"),
        Some(&finance),
        None,
    );
    assert_eq!(code, 403, "{body}");
    let (code, _) = call(
        "GET",
        &d.url("/api/metrics/ops/threads"),
        Some(&admin),
        None,
    );
    assert_eq!(code, 200);
}

#[test]
fn catalogue_settings_and_runs_disclose_only_what_the_caller_may_read() {
    let inst = restricted();
    let analyst = token(&inst, "ann", &["analysts"]);
    let finance = token(&inst, "fin", &["finance"]);
    let admin = token(&inst, "root", &["admin"]);
    let d = Daemon::start(&inst, &[], &[]);
    let root = inst.path().to_string_lossy().to_string();

    // DESCRIBE / SUMMARIZE / SHOW of a relation are queries of it.
    for sql in [
        "DESCRIBE customers",
        "SHOW customers",
        "SUMMARIZE customers",
    ] {
        let (code, body) = query(&d, &analyst, sql);
        assert_eq!(code, 200, "{sql}: {body}");
        assert!(
            body["rows"].to_string().contains("customer_id"),
            "{sql}: {body}"
        );
    }
    for sql in ["DESCRIBE orders", "SUMMARIZE orders", "DESCRIBE revenue"] {
        let (code, body) = query(&d, &analyst, sql);
        assert_eq!(code, 403, "{sql}: {body}");
    }
    // Catalogue-wide listings, catalogue functions and views, and settings are refused.
    for (sql, says) in [
        ("SHOW TABLES", "/api/tables"),
        ("SHOW ALL TABLES", "/api/tables"),
        ("SELECT * FROM (SHOW DATABASES)", "/api/tables"),
        ("SELECT * FROM duckdb_tables()", "/api/tables"),
        ("SELECT * FROM duckdb_databases()", "/api/tables"),
        ("SELECT * FROM information_schema.tables", "/api/tables"),
        ("SELECT * FROM duckdb_views", "/api/tables"),
        ("SELECT current_setting('allowed_paths')", "current_setting"),
        (
            "SELECT pg_get_viewdef(view_oid) FROM (SELECT 1 AS view_oid)",
            "pg_get_viewdef",
        ),
    ] {
        for tok in [&analyst, &finance] {
            let (code, body) = query(&d, tok, sql);
            assert_eq!(code, 403, "{sql}: {body}");
            assert!(
                body["error"]["message"].as_str().unwrap().contains(says),
                "{sql}: {body}"
            );
            assert!(
                !body.to_string().contains(&root),
                "{sql} leaked a path: {body}"
            );
        }
    }
    // Harmless introspection stays.
    let (code, body) = query(&d, &analyst, "SELECT version() LIKE 'v%'");
    assert_eq!(
        (code, body["rows"].clone()),
        (200, json!([[true]])),
        "{body}"
    );
    // Admins may look at the catalogue and the settings.
    let (code, body) = query(&d, &admin, "SHOW TABLES");
    assert_eq!(code, 200, "{body}");
    assert!(body["rows"].to_string().contains("orders"), "{body}");
    let (code, body) = query(&d, &admin, "SELECT current_setting('threads') > 0");
    assert_eq!(code, 200, "{body}");

    // Runs: the apply's run synced both tables and built every transform; an analyst sees the
    // parts about customers and a count of the rest.
    let (_, customers) = call("GET", &d.url("/api/tables/customers"), Some(&analyst), None);
    let apply_run = customers["history"][0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let run_url = d.url(&format!("/api/runs/{apply_run}"));
    let tasks = |body: &Value| -> Vec<String> {
        body["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["task"].as_str().unwrap().to_string())
            .collect()
    };
    let (code, all) = call("GET", &run_url, Some(&admin), None);
    assert_eq!(code, 200, "{all}");
    assert_eq!(all["hidden_tasks"], 0, "{all}");
    let (code, seen) = call("GET", &run_url, Some(&analyst), None);
    assert_eq!(code, 200, "{seen}");
    let seen_tasks = tasks(&seen);
    assert!(
        seen_tasks.contains(&"extract:shop.customers".to_string())
            && seen_tasks.contains(&"transform:open_counts".to_string()),
        "{seen}"
    );
    for hidden in [
        "orders",
        "revenue",
        "shadow",
        "peek",
        "threads",
        "rebuild:shop",
    ] {
        assert!(!seen.to_string().contains(hidden), "{hidden} shown: {seen}");
    }
    assert_eq!(
        seen["hidden_tasks"].as_u64().unwrap() as usize,
        tasks(&all).len() - seen_tasks.len(),
        "{seen}"
    );
    let (_, fin) = call("GET", &run_url, Some(&finance), None);
    assert!(
        tasks(&fin).contains(&"extract:shop.orders".to_string()),
        "{fin}"
    );
    assert!(
        !tasks(&fin).contains(&"transform:peek".to_string()),
        "{fin}"
    );

    // A run of tables the caller may not read at all looks like no run.
    let (code, body) = call(
        "POST",
        &d.url("/api/sync/trigger"),
        Some(&finance),
        Some("[\"orders\"]"),
    );
    assert_eq!(code, 202, "{body}");
    let id = body["run_id"].as_str().unwrap().to_string();
    let url = d.url(&format!("/api/runs/{id}"));
    let done = wait_for(Duration::from_secs(60), "the orders run", || {
        let (_, r) = call("GET", &url, Some(&finance), None);
        (r["status"] != "running").then_some(r)
    });
    assert_eq!(done["tables"], json!(["shop.orders"]), "{done}");
    let (code, hidden) = call("GET", &url, Some(&analyst), None);
    let (unknown_code, unknown) =
        call("GET", &d.url("/api/runs/no-such-run"), Some(&analyst), None);
    assert_eq!((code, unknown_code), (404, 404), "{hidden}");
    assert_eq!(hidden["error"]["code"], unknown["error"]["code"]);
    assert!(!hidden.to_string().contains("orders"), "{hidden}");
    // The same from the state, once the daemon no longer holds the run in memory.
    drop(d);
    let d = Daemon::start(&inst, &[], &[]);
    let url = d.url(&format!("/api/runs/{id}"));
    let (code, _) = call("GET", &url, Some(&analyst), None);
    assert_eq!(code, 404);
    let (code, body) = call("GET", &url, Some(&finance), None);
    assert_eq!(code, 200, "{body}");
    assert!(
        tasks(&body).contains(&"extract:shop.orders".to_string()),
        "{body}"
    );
}

#[test]
fn validate_warns_that_transforms_and_metrics_with_uncertain_inputs_are_admin_only() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec(
        "pipelines/shop",
        indoc! {"
            type: csv
            connection:
              path: files
            transforms:
              - name: daily
                sql: |
                  with orders as (select * from orders)
                  select count(*) as n from orders
              - name: hidden_read
                sql: select * from query_table('orders')
        "},
    );
    inst.write_spec(
        "metrics/sales/settings",
        "description: A setting\nowner: ops@example.com\nsql: select current_setting('threads') as value\n",
    );
    let (status, report) = inst.validate();
    assert_eq!(status, 0, "warnings only: {report:#}");
    let warnings: Vec<&Value> = report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "warning")
        .collect();
    assert_eq!(warnings.len(), 2, "{report:#}");
    let transform = warnings
        .iter()
        .find(|d| d["file"] == "pipelines/shop.yaml")
        .unwrap();
    assert_eq!(transform["code"], "sql");
    assert_eq!(transform["line"], 10, "at the SQL: {transform}");
    let message = transform["message"].as_str().unwrap();
    assert!(
        message.contains("`hidden_read` will be readable only by admins")
            && message.contains("query_table"),
        "{message}"
    );
    let metric = warnings
        .iter()
        .find(|d| d["file"] == "metrics/sales/settings.yaml")
        .unwrap();
    assert!(
        metric["message"]
            .as_str()
            .unwrap()
            .contains("current_setting"),
        "{metric}"
    );

    // The plan records why, so the daemon serves them to admins only; the shadowing transform
    // reads `orders` (it used to read nothing).
    let plan = inst.plan(&[]);
    let text = plan.to_string();
    assert!(text.contains("inputs_uncertain"), "{plan:#}");
    ok(&inst, &["apply", "--auto-approve"]);
    let state = inst.state();
    let inputs: String = state
        .query_row(
            "SELECT inputs::VARCHAR FROM transforms WHERE name = 'daily'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(inputs, "[orders]");
}

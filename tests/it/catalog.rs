//! The data catalogue (docs/catalog.md): `pipeline catalog export` (Markdown and JSON, with lineage
//! table → transform → metric), `pipeline catalog import openmetadata` against a fake OpenMetadata
//! server on 127.0.0.1 speaking its REST API with paging, and transforms as catalogue entries in a
//! real daemon's `/api/tables`.

use crate::common::daemon::{call, ok, token, Daemon};
use crate::common::{Fmt, Instance};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The base instance plus documentation, a transform reading another transform, and a metric
/// reading that: lineage orders → daily → daily_orders (transform) → sales/daily_total (metric).
fn documented_instance() -> Instance {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec(
        "pipelines/shop",
        "type: csv\ndescription: Web shop exports\nconnection:\n  path: files\ntransforms:\n  \
         - name: daily\n    description: Orders per day\n    sql: select count(*) as n from orders\n    \
         columns: { n: Number of orders }\n  \
         - name: customer_names\n    sql: select name from customers\n",
    );
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    description: One row per order\n    \
         sync: { mode: full, primary_key: [order_id] }\n    \
         columns: { order_id: Order identifier, amount: Order total }\n  \
         - source: shop\n    source_table: customers\n    access: [finance]\n",
    );
    inst.write_spec(
        "metrics/sales/daily_total",
        "display_name: Daily total\ndescription: Orders counted by the daily transform\n\
         owner: data@example.com\nsql: select sum(n) as value from daily\n",
    );
    inst
}

#[test]
fn export_describes_tables_transforms_metrics_and_lineage() {
    let inst = documented_instance();
    let json_text = ok(&inst, &["catalog", "export", "--format", "json"]);
    let doc: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(doc["format_version"], 1);
    let lineage = doc["lineage"].as_array().unwrap();
    for (from, to) in [
        ("table:orders", "transform:daily"),
        ("transform:daily", "metric:sales/daily_total"),
        ("table:customers", "transform:customer_names"),
        ("table:orders", "metric:sales/order_count"),
    ] {
        assert!(
            lineage.contains(&json!({"from": from, "to": to})),
            "{from} → {to} missing: {lineage:#?}"
        );
    }
    let orders = doc["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .unwrap();
    assert_eq!(orders["description"], "One row per order");
    assert_eq!(orders["primary_key"], json!(["order_id"]));
    assert_eq!(
        orders["read_by"],
        json!(["metric:sales/order_count", "transform:daily"])
    );
    // Before any run: documented columns only, without types, and no sync.
    assert_eq!(
        orders["columns"],
        json!([{"name": "amount", "type": null, "description": "Order total"},
               {"name": "order_id", "type": null, "description": "Order identifier"}])
    );
    assert_eq!(orders["last_sync"], Value::Null);
    let daily = &doc["transforms"][1];
    assert_eq!(daily["name"], "daily");
    assert_eq!(daily["inputs"], json!(["orders"]));
    let metric = doc["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "sales/daily_total")
        .unwrap();
    assert_eq!(metric["owner"], "data@example.com");
    assert_eq!(metric["tables"], json!(["daily"]));

    let md = ok(&inst, &["catalog", "export"]);
    for needle in [
        "# Data catalogue: Test",
        "## Lineage",
        "└── orders (table)\n    ├── daily (transform)\n    │   └── sales/daily_total (metric)\n    └── sales/order_count (metric)",
        "### orders\n\nOne row per order\n",
        "| `order_id` |  | Order identifier |",
        "- Primary key: `order_id`",
        "- Readable by: group(s) `finance`",
        "### daily\n\nOrders per day\n",
        "- Inputs: `orders`",
        "### sales/daily_total — Daily total",
        "```sql\nselect sum(n) as value from daily\n```",
    ] {
        assert!(md.contains(needle), "`{needle}` not in:\n{md}");
    }
    // Deterministic, and --output writes the same bytes.
    assert_eq!(ok(&inst, &["catalog", "export"]), md);
    let file = inst.path().join("CATALOG.md");
    ok(
        &inst,
        &["catalog", "export", "--output", file.to_str().unwrap()],
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), md);

    // After a run: published columns with DuckDB's types, and each table's last sync.
    inst.apply();
    let doc: Value =
        serde_json::from_str(&ok(&inst, &["catalog", "export", "--format", "json"])).unwrap();
    let orders = doc["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .unwrap();
    assert_eq!(
        orders["columns"][0],
        json!({"name": "order_id", "type": "BIGINT", "description": "Order identifier"})
    );
    assert_eq!(orders["last_sync"]["rows"], 3, "{orders:#}");
    assert_eq!(
        doc["transforms"][1]["columns"],
        json!([{"name": "n", "type": "BIGINT", "description": "Number of orders"}])
    );
}

#[test]
fn transforms_are_catalogue_entries_in_the_api() {
    let inst = documented_instance();
    inst.apply();
    let ann = token(&inst, "ann", &[]);
    let fin = token(&inst, "fin", &["finance"]);
    let d = Daemon::start(&inst, &[], &[]);

    let (code, list) = call("GET", &d.url("/api/tables"), Some(&ann), None);
    assert_eq!(code, 200, "{list}");
    assert!(list["tables"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["kind"] == "table"));
    let names: Vec<&str> = list["transforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // customer_names reads customers, which only finance may read.
    assert_eq!(names, vec!["daily"], "{list:#}");
    assert_eq!(
        list["transforms"][0],
        json!({"kind": "transform", "name": "daily", "source": "shop",
               "description": "Orders per day", "materialized": "table", "inputs": ["orders"],
               "tags": [],
               "columns": [{"name": "n", "type": "BIGINT", "description": "Number of orders"}]})
    );

    let (code, daily) = call("GET", &d.url("/api/tables/daily"), Some(&ann), None);
    assert_eq!(code, 200, "{daily}");
    assert_eq!(daily["kind"], "transform");
    assert_eq!(daily["columns"][0]["type"], "BIGINT");
    assert_eq!(daily["sql"], "select count(*) as n from orders");
    assert_eq!(daily["state"]["status"], "ok", "{daily:#}");
    // Names resolve as DuckDB resolves them.
    let (code, _) = call("GET", &d.url("/api/tables/DAILY"), Some(&ann), None);
    assert_eq!(code, 200);

    let (code, body) = call(
        "GET",
        &d.url("/api/tables/customer_names"),
        Some(&ann),
        None,
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reads tables you (ann) may not read"),
        "{body}"
    );
    let (code, body) = call(
        "GET",
        &d.url("/api/tables/customer_names"),
        Some(&fin),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["columns"],
        json!([{"name": "name", "type": "VARCHAR", "description": null}])
    );
    let (code, _) = call("GET", &d.url("/api/tables/nosuch"), Some(&ann), None);
    assert_eq!(code, 404);
}

// ---------------------------------------------------------------- a fake OpenMetadata

const GOOD_TOKEN: &str = "om-test-token-4f9a2c";

/// At most this many entities per page, whatever `limit` asks: paging is exercised with few.
const FAKE_PAGE: usize = 2;

#[derive(Default)]
struct Fake {
    tables: Vec<Value>,
    metrics: Vec<Value>,
    /// Query strings of the requests, by path.
    seen: Vec<(String, HashMap<String, String>)>,
}

type Shared = Arc<Mutex<Fake>>;

fn page(
    fake: &Shared,
    path: &str,
    headers: &HeaderMap,
    q: HashMap<String, String>,
    pick: fn(&Fake) -> &Vec<Value>,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if bearer != format!("Bearer {GOOD_TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"code": 401, "message": "Not authorized; Token verification failed"})),
        )
            .into_response();
    }
    let mut f = fake.lock().unwrap();
    f.seen.push((path.to_string(), q.clone()));
    let all = pick(&f);
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
    // The cursor is opaque to clients; here it is the offset, base-36 and prefixed.
    let start = q
        .get("after")
        .and_then(|a| a.strip_prefix("c"))
        .and_then(|a| usize::from_str_radix(a, 36).ok())
        .unwrap_or(0);
    let end = (start + limit.min(FAKE_PAGE)).min(all.len());
    let data = all[start.min(end)..end].to_vec();
    let mut paging = json!({"total": all.len()});
    if end < all.len() {
        paging["after"] = json!(format!("c{}", radix36(end)));
    }
    Json(json!({"data": data, "paging": paging})).into_response()
}

fn radix36(mut n: usize) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[n % 36]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

struct FakeServer {
    base: String,
    state: Shared,
    _runtime: tokio::runtime::Runtime,
}

impl FakeServer {
    fn start(tables: Vec<Value>, metrics: Vec<Value>) -> FakeServer {
        let state: Shared = Arc::new(Mutex::new(Fake {
            tables,
            metrics,
            ..Fake::default()
        }));
        let app = Router::new()
            .route(
                "/api/v1/tables",
                get(
                    |State(s): State<Shared>,
                     h: HeaderMap,
                     Query(q): Query<HashMap<String, String>>| async move {
                        page(&s, "/api/v1/tables", &h, q, |f| &f.tables)
                    },
                ),
            )
            .route(
                "/api/v1/metrics",
                get(
                    |State(s): State<Shared>,
                     h: HeaderMap,
                     Query(q): Query<HashMap<String, String>>| async move {
                        page(&s, "/api/v1/metrics", &h, q, |f| &f.metrics)
                    },
                ),
            )
            // A proxy's login page where the API should be.
            .route(
                "/html/api/v1/tables",
                get(|| async { ([("content-type", "text/html")], "<html>Sign in</html>") }),
            )
            .with_state(state.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        FakeServer {
            base,
            state,
            _runtime: runtime,
        }
    }
}

fn om_tables() -> Vec<Value> {
    vec![
        json!({"id": "1", "name": "orders", "fullyQualifiedName": "pg.shop_db.public.orders",
               "description": "<p>One row per <b>order</b> placed</p>",
               "columns": [
                   {"name": "order_id", "dataType": "BIGINT", "description": "Order identifier"},
                   {"name": "customer_id", "dataType": "BIGINT", "description": "Who ordered"},
                   {"name": "updated_at", "dataType": "TIMESTAMP"}],
               "tags": []}),
        json!({"id": "2", "name": "customers", "fullyQualifiedName": "pg.shop_db.public.customers",
               "columns": []}),
        json!({"id": "3", "name": "invoices", "fullyQualifiedName": "pg.shop_db.public.invoices",
               "description": "Invoices", "columns": []}),
    ]
}

fn om_metrics() -> Vec<Value> {
    vec![
        json!({"id": "m1", "name": "Order Total", "fullyQualifiedName": "Order Total",
               "displayName": "Order total", "description": "Sum of order amounts",
               "metricExpression": {"language": "SQL", "code": "select sum(amount) as value from orders"},
               "metricType": "SUM", "unitOfMeasurement": "DOLLARS",
               "owners": [{"id": "u1", "type": "user", "name": "finance-team"}],
               "tags": [{"tagFQN": "MetricCategory.Sales"}]}),
        json!({"id": "m2", "name": "daily_orders", "fullyQualifiedName": "daily_orders",
               "description": "Orders per day, summed",
               "metricExpression": {"language": "SQL", "code": "select sum(n) as value from daily"}}),
        json!({"id": "m3", "name": "Margin", "fullyQualifiedName": "Margin",
               "description": "Revenue minus cost",
               "metricExpression": {"language": "SQL", "code": "SUM(amount) - SUM(cost)"}}),
        // The same id as the instance's hand-written metrics/sales/order_count.yaml.
        json!({"id": "m4", "name": "order_count", "fullyQualifiedName": "order_count",
               "description": "Orders, counted upstream",
               "metricExpression": {"language": "SQL", "code": "select count(*) as value from orders"},
               "tags": [{"tagFQN": "MetricCategory.sales"}]}),
        json!({"id": "m5", "name": "customer_count", "fullyQualifiedName": "customer_count",
               "description": "Customers",
               "metricExpression": {"language": "SQL", "code": "select count(*) as value from customers"},
               "tags": [{"tagFQN": "MetricCategory.Sales"}, {"tagFQN": "Dimension.country"}]}),
    ]
}

fn import(inst: &Instance, url: &str, token: &str, extra: &[&str]) -> std::process::Output {
    inst.cmd()
        .args([
            "catalog",
            "import",
            "openmetadata",
            url,
            "--token-env",
            "OM_TOKEN",
        ])
        .args(extra)
        .env("OM_TOKEN", token)
        .output()
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn openmetadata_import_writes_valid_metric_specs_once_and_leaves_hand_written_ones() {
    let om = FakeServer::start(om_tables(), om_metrics());
    // The base instance has the transform `daily` and a hand-written metric sales/order_count.
    let inst = Instance::new(Fmt::Yaml);
    inst.apply();
    let hand_written = inst.path().join("metrics/sales/order_count.yaml");
    let before = std::fs::read(&hand_written).unwrap();

    // --dry-run: the same report, nothing written.
    let out = import(&inst, &om.base, GOOD_TOKEN, &["--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let dry = text(&out);
    assert!(
        dry.contains("would write metrics/sales/order_total.yaml"),
        "{dry}"
    );
    assert!(!inst.path().join("metrics/sales/order_total.yaml").exists());
    assert!(
        dry.contains("would write registry/openmetadata.yaml"),
        "{dry}"
    );
    assert!(!inst.path().join("registry/openmetadata.yaml").exists());

    let out = import(&inst, &om.base, GOOD_TOKEN, &[]);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(!report.contains(GOOD_TOKEN), "{report}");
    for needle in [
        "OpenMetadata at ",
        ": 3 table(s), 5 metric(s).",
        "shop.orders ← pg.shop_db.public.orders: description, 2 column description(s)",
        "shop.customers ← pg.shop_db.public.customers: nothing the spec lacks",
        "not matched pg.shop_db.public.invoices: no registered table has source table or view name `invoices`",
        "2 matched, 1 not matched.",
        "wrote       metrics/general/daily_orders.yaml",
        "wrote       metrics/sales/customer_count.yaml",
        "wrote       metrics/sales/order_total.yaml",
        "wrote       registry/openmetadata.yaml",
        "skipped     Margin: its expression `SUM(amount) - SUM(cost)` is not a query",
        "skipped     order_count: ",
        "was not written by an import; left as it is",
        "4 written, 0 unchanged, 2 skipped.",
    ] {
        assert!(report.contains(needle), "`{needle}` not in:\n{report}");
    }
    assert_eq!(std::fs::read(&hand_written).unwrap(), before);
    // Table documentation goes to its own generated file; registry/shop.yaml is not touched.
    assert_eq!(
        std::fs::read_to_string(inst.path().join("registry/openmetadata.yaml")).unwrap(),
        "# Imported from OpenMetadata tables by pipeline catalog import; a re-import overwrites \
         this file until you delete this line.\n\
         # What OpenMetadata documents that the tables' own specs do not; their own words win.\n\
         tables: []\n\
         descriptions:\n  \
           - table: shop.orders\n    \
             description: One row per order placed\n    \
             columns:\n      \
               customer_id: Who ordered\n      \
               order_id: Order identifier\n"
    );
    let total =
        std::fs::read_to_string(inst.path().join("metrics/sales/order_total.yaml")).unwrap();
    assert_eq!(
        total,
        "# Imported from OpenMetadata metric Order Total by pipeline catalog import; a re-import \
         overwrites this file until you delete this line.\n\
         display_name: Order total\n\
         description: Sum of order amounts\n\
         owner: finance-team\n\
         type: sum\n\
         unit: USD\n\
         sql: |\n  select sum(amount) as value from orders\n"
    );

    // Every list was read page by page (two per page here), with the fields asked for.
    {
        let f = om.state.lock().unwrap();
        let tables: Vec<&HashMap<String, String>> = f
            .seen
            .iter()
            .filter(|(p, _)| p == "/api/v1/tables")
            .map(|(_, q)| q)
            .collect();
        assert!(tables.len() >= 2, "{:?}", f.seen);
        assert!(tables
            .iter()
            .all(|q| q.get("fields").map(String::as_str) == Some("columns,tags")));
        assert_eq!(tables[0].get("after"), None);
        assert_eq!(tables[1].get("after").map(String::as_str), Some("c2"));
        let metric_pages = f
            .seen
            .iter()
            .filter(|(p, _)| p == "/api/v1/metrics")
            .count();
        assert!(metric_pages >= 3, "{:?}", f.seen);
    }

    let (status, report) = inst.validate();
    assert_eq!(status, 0, "{report:#}");
    assert_eq!(report["objects"]["metrics"], 4, "{report:#}");
    // The descriptions reach the registered table (its own spec had none) without a contract:
    // `columns` stays as registry/shop.yaml wrote it.
    let plan = inst.plan(&[]);
    let orders = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "shop.orders")
        .unwrap_or_else(|| panic!("{plan:#}"));
    let change = orders.to_string();
    assert!(change.contains("One row per order placed"), "{orders:#}");
    assert!(change.contains("column_docs"), "{orders:#}");
    inst.apply();
    let doc: Value =
        serde_json::from_str(&ok(&inst, &["catalog", "export", "--format", "json"])).unwrap();
    let t = doc["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "shop.orders")
        .unwrap();
    assert_eq!(t["description"], "One row per order placed");
    assert!(t["columns"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "customer_id", "type": "BIGINT", "description": "Who ordered"})));

    // A second import with nothing changed upstream writes nothing.
    let written = std::fs::read(inst.path().join("metrics/general/daily_orders.yaml")).unwrap();
    let out = import(&inst, &om.base, GOOD_TOKEN, &[]);
    let again = text(&out);
    assert!(out.status.success(), "{again}");
    assert!(
        again.contains("0 written, 4 unchanged, 2 skipped."),
        "{again}"
    );
    assert!(again.contains("No changes."), "{again}");
    assert_eq!(
        std::fs::read(inst.path().join("metrics/general/daily_orders.yaml")).unwrap(),
        written
    );

    // An upstream change rewrites the generated file (and only it).
    om.state.lock().unwrap().metrics[1]["description"] = json!("Orders per day, summed again");
    let out = import(&inst, &om.base, GOOD_TOKEN, &[]);
    let changed = text(&out);
    assert!(
        changed.contains("1 written, 3 unchanged, 2 skipped."),
        "{changed}"
    );
    assert!(
        std::fs::read_to_string(inst.path().join("metrics/general/daily_orders.yaml"))
            .unwrap()
            .contains("summed again")
    );
}

#[test]
fn openmetadata_errors_name_the_url_never_the_token() {
    let om = FakeServer::start(om_tables(), om_metrics());
    let inst = Instance::new(Fmt::Yaml);

    let wrong = "wrong-token-77d1e0";
    let out = import(&inst, &om.base, wrong, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out);
    assert!(
        err.contains(&format!(
            "{}/api/v1/tables refused the request (401)",
            om.base
        )),
        "{err}"
    );
    assert!(err.contains("$OM_TOKEN"), "{err}");
    assert!(!err.contains(wrong), "{err}");

    let out = import(&inst, &format!("{}/html", om.base), GOOD_TOKEN, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out);
    assert!(
        err.contains("did not answer with OpenMetadata's JSON"),
        "{err}"
    );

    let out = import(&inst, &format!("{}/nothing", om.base), GOOD_TOKEN, &[]);
    assert!(text(&out).contains("answered 404"), "{}", text(&out));

    // A port nobody listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = import(&inst, &format!("http://127.0.0.1:{port}"), GOOD_TOKEN, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out);
    assert!(
        err.contains(&format!(
            "cannot reach http://127.0.0.1:{port}/api/v1/tables"
        )),
        "{err}"
    );

    let out = inst
        .cmd()
        .args([
            "catalog",
            "import",
            "openmetadata",
            &om.base,
            "--token-env",
            "OM_UNSET_VAR",
        ])
        .env_remove("OM_UNSET_VAR")
        .output()
        .unwrap();
    assert!(
        text(&out).contains("$OM_UNSET_VAR is not set"),
        "{}",
        text(&out)
    );
    // Nothing was written by any of these.
    assert!(!inst.path().join("metrics/general").exists());
    assert!(!inst.path().join("registry/openmetadata.yaml").exists());
}

#[test]
fn descriptions_must_name_registered_tables_once() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec(
        "registry/docs",
        "tables: []\ndescriptions:\n  - table: shop.order\n    description: Orders\n",
    );
    let d = inst.expect_error("unknown-reference", "registry/docs", 3, Some(12));
    assert!(
        d["hint"]
            .as_str()
            .unwrap()
            .contains("did you mean `shop.orders`?"),
        "{d:#}"
    );
    inst.write_spec(
        "registry/docs",
        "tables: []\ndescriptions:\n  - table: shop.orders\n    description: Orders\n  \
         - table: shop.orders\n    columns: { amount: Total }\n",
    );
    inst.expect_error("duplicate", "registry/docs", 5, Some(12));
    // Valid, and the table's own words win over an entry.
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    description: Own words\n  \
         - source: shop\n    source_table: customers\n",
    );
    inst.write_spec(
        "registry/docs",
        "tables: []\ndescriptions:\n  - table: shop.orders\n    description: Imported words\n    \
         columns: { amount: Total }\n",
    );
    let (status, report) = inst.validate();
    assert_eq!(status, 0, "{report:#}");
    let doc: Value =
        serde_json::from_str(&ok(&inst, &["catalog", "export", "--format", "json"])).unwrap();
    let orders = &doc["tables"][1];
    assert_eq!(orders["id"], "shop.orders");
    assert_eq!(orders["description"], "Own words");
    assert_eq!(
        orders["columns"],
        json!([{"name": "amount", "type": null, "description": "Total"}])
    );
}

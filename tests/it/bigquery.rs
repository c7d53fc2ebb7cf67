//! The bigquery connector end to end: the real `pipeline` binary against the BigQuery emulator
//! (bqemulator, started per test; tests/it/common/bqemulator.rs), behind a fault-injecting proxy,
//! with service-account auth against a fake Google token endpoint that checks the JWT's signature
//! (tests/support/fake_google.rs).
//!
//! What bqemulator cannot do is played by the proxy: faults (429/5xx, `Retry-After`) and a byte
//! estimate for dry runs (the emulator always says 0).

#[path = "../support/fake_google.rs"]
#[allow(dead_code)]
mod fake_google;

use crate::common::bqemulator::Emulator;
use crate::common::{secrets, Instance};
use fake_google::{token_number, FakeGoogle, FaultProxy, TestKey};
use serde_json::{json, Value};
use std::process::Output;

/// An emulator with dataset `shop`, the token endpoint, the proxy, and an instance whose source
/// `bq` reaches the emulator through the proxy with a key file.
struct Setup {
    emu: Emulator,
    google: FakeGoogle,
    proxy: FaultProxy,
    inst: Instance,
}

const ORDERS: &str = r#"[{"name": "order_id", "type": "INT64"}, {"name": "status", "type": "STRING"},
    {"name": "amount", "type": "NUMERIC"}, {"name": "updated_at", "type": "TIMESTAMP"}]"#;

fn setup(connection_extra: &str, registry: &str) -> Setup {
    setup_named("bq", connection_extra, registry)
}

/// [`setup`] with the source called `source`.
fn setup_named(source: &str, connection_extra: &str, registry: &str) -> Setup {
    let emu = Emulator::start();
    emu.dataset("shop");
    let google = FakeGoogle::start();
    let proxy = FaultProxy::start(&emu.url);
    proxy.require_tokens(&google);
    let key = TestKey::shared().service_account_json(&google.token_uri(), "demo");
    let inst = Instance::from_files(&[
        (
            "config/instance.yaml",
            // One task at a time: bqemulator answers concurrent requests on one shared DuckDB
            // connection, and two table reads at once can receive each other's rows.
            "name: bq\ntimezone: UTC\ndefaults: { concurrency: 1 }\n\
             remote_attach:\n  extensions: [bigquery]\n",
        ),
        ("keys/bq.json", &key),
        (
            &format!("pipelines/{source}.yaml"),
            &format!(
                "type: bigquery\nconnection:\n  project_id: demo\n  credentials_file: keys/bq.json\n  \
                 endpoint: {}\n{connection_extra}",
                proxy.url()
            ),
        ),
        (&format!("registry/{source}.yaml"), registry),
    ]);
    Setup {
        emu,
        google,
        proxy,
        inst,
    }
}

fn orders(emu: &Emulator) {
    emu.table("shop", "orders", serde_json::from_str(ORDERS).unwrap());
    emu.insert(
        "shop",
        "orders",
        &[
            json!({"order_id": 1, "status": "paid", "amount": "10.50", "updated_at": "2026-01-01T10:00:00Z"}),
            json!({"order_id": 2, "status": "paid", "amount": "7", "updated_at": "2026-01-02T10:00:00Z"}),
            json!({"order_id": 3, "status": "open", "amount": "1.25", "updated_at": "2026-01-03T10:00:00Z"}),
        ],
    );
}

impl Setup {
    fn pipeline(&self, args: &[&str]) -> Output {
        self.inst
            .cmd()
            .args(args)
            .env("PIPELINE_BIGQUERY_FAST_RETRY", "1")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.pipeline(args);
        assert!(out.status.success(), "pipeline {args:?}: {}", all(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn query(&self, sql: &str) -> String {
        self.ok(&["query", "--format", "csv", sql])
    }

    /// The registry file replaced by `text` (a table's settings changed).
    fn registry(&self, text: &str) {
        self.inst.write("registry/bq.yaml", text);
    }
}

fn all(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const INCREMENTAL: &str =
    "tables:\n  - source: bq\n    bucket: shop\n    source_table: orders\n    \
    sync: { mode: incremental, cursor: updated_at, primary_key: [order_id], window_days: 1 }\n";

#[test]
fn a_bigquery_table_syncs_in_full_then_incrementally_without_duplicates() {
    let s = setup("", INCREMENTAL);
    orders(&s.emu);
    s.ok(&["apply", "--auto-approve", "-q"]);
    assert_eq!(
        s.query("select order_id, status, amount, updated_at from orders order by 1"),
        // NUMERIC keeps its scale and TIMESTAMP (a timestamptz) its offset, as DuckDB renders them.
        "order_id,status,amount,updated_at\n1,paid,10.500000000,2026-01-01 10:00:00+00\n\
         2,paid,7.000000000,2026-01-02 10:00:00+00\n3,open,1.250000000,2026-01-03 10:00:00+00\n"
    );
    // The first read is a whole stored table: tabledata.list, no query (nothing billed), and
    // every request carried a token the endpoint issued for a correctly signed assertion.
    let seen = s.proxy.seen();
    assert!(seen
        .iter()
        .any(|r| r.method == "GET" && r.path.ends_with("/tables/orders/data")));
    assert!(
        !seen.iter().any(|r| r.path.ends_with("/queries")),
        "{seen:?}"
    );
    assert!(seen.iter().all(|r| r.status == 200), "{seen:?}");
    assert!(!s.google.issued().is_empty() && s.google.refused().is_empty());

    // Row 2 changes and row 4 arrives: the increment is read with the cursor pushed down (a day
    // before the last cursor: row 3 is read again and merged, not duplicated).
    s.emu.query(
        "UPDATE shop.orders SET status = 'shipped', updated_at = TIMESTAMP '2026-01-04 09:00:00+00' \
         WHERE order_id = 2",
    );
    s.emu.insert(
        "shop",
        "orders",
        &[json!({"order_id": 4, "status": "open", "amount": "3", "updated_at": "2026-01-04T10:00:00Z"})],
    );
    s.proxy.clear();
    s.ok(&["run", "-q"]);
    let queries: Vec<String> = s
        .proxy
        .seen()
        .iter()
        .filter(|r| r.is_query())
        .map(|r| r.body["query"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        queries,
        ["SELECT * FROM `demo.shop.orders` WHERE `updated_at` >= \
          TIMESTAMP_SUB(TIMESTAMP '2026-01-03 10:00:00+00', INTERVAL 1 DAY)"]
    );
    assert_eq!(
        s.query(
            "select string_agg(order_id || ':' || status, ' ' order by order_id) as v from orders"
        ),
        "v\n1:paid 2:shipped 3:open 4:open\n"
    );
    // Again, and once more after another row: never a duplicate.
    s.ok(&["run", "-q"]);
    s.emu.insert(
        "shop",
        "orders",
        &[json!({"order_id": 5, "status": "open", "amount": "2", "updated_at": "2026-01-05T10:00:00Z"})],
    );
    s.ok(&["run", "-q"]);
    assert_eq!(
        s.query("select count(*) as n, count(distinct order_id) as k from orders"),
        "n,k\n5,5\n"
    );
}

#[test]
fn every_bigquery_type_family_arrives_with_its_duckdb_type() {
    let s = setup(
        "",
        "tables:\n  - source: bq\n    bucket: shop\n    source_table: all_types\n",
    );
    s.emu.table(
        "shop",
        "all_types",
        json!([
            {"name": "i", "type": "INT64"}, {"name": "f", "type": "FLOAT64"},
            {"name": "n", "type": "NUMERIC"}, {"name": "b", "type": "BOOL"},
            {"name": "s", "type": "STRING"}, {"name": "by", "type": "BYTES"},
            {"name": "d", "type": "DATE"}, {"name": "dt", "type": "DATETIME"},
            {"name": "t", "type": "TIME"}, {"name": "ts", "type": "TIMESTAMP"},
            {"name": "js", "type": "JSON"}, {"name": "g", "type": "GEOGRAPHY"},
            {"name": "arr", "type": "INT64", "mode": "REPEATED"},
            {"name": "rec", "type": "RECORD", "fields": [
                {"name": "x", "type": "STRING"}, {"name": "ys", "type": "FLOAT64", "mode": "REPEATED"},
                {"name": "sub", "type": "RECORD", "fields": [{"name": "z", "type": "DATE"}]}]},
            {"name": "recs", "type": "RECORD", "mode": "REPEATED", "fields": [
                {"name": "k", "type": "STRING"}, {"name": "v", "type": "INT64"}]},
        ]),
    );
    s.emu.insert(
        "shop",
        "all_types",
        &[
            json!({"i": 1, "f": 1.5, "n": "123.456789012", "b": true, "s": "héllo \"q\"",
                   "by": "AAEC/w==", "d": "2024-02-29", "dt": "2024-02-29T10:11:12.123456",
                   "t": "10:11:12.5", "ts": "2024-02-29T10:11:12.123456Z", "js": "{\"a\":[1,2]}",
                   "g": "POINT(1 2)", "arr": [1, 2, 3],
                   "rec": {"x": "a", "ys": [0.5], "sub": {"z": "2020-01-01"}},
                   "recs": [{"k": "a", "v": 1}, {"k": "b", "v": null}]}),
            json!({"i": 2}),
        ],
    );
    s.ok(&["apply", "--auto-approve", "-q"]);
    let conn = s.inst.analytics();
    let types: Vec<(String, String)> = conn
        .prepare("SELECT column_name, column_type FROM (DESCRIBE all_types)")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let types: Vec<String> = types.into_iter().map(|(c, t)| format!("{c} {t}")).collect();
    assert_eq!(
        types,
        [
            "i BIGINT",
            "f DOUBLE",
            "n DECIMAL(38,9)",
            "b BOOLEAN",
            "s VARCHAR",
            "by BLOB",
            "d DATE",
            "dt TIMESTAMP",
            "t TIME",
            "ts TIMESTAMP WITH TIME ZONE",
            "js JSON",
            "g VARCHAR",
            "arr BIGINT[]",
            "rec STRUCT(x VARCHAR, ys DOUBLE[], sub STRUCT(z DATE))",
            "recs STRUCT(k VARCHAR, v BIGINT)[]",
        ]
    );
    conn.execute_batch("SET TimeZone = 'UTC'").unwrap();
    let values: String = conn
        .query_row(
            "SELECT concat_ws(' | ', i, f, n, b, s, hex(\"by\"), d, dt, t, ts, js->>'$.a[1]', g, \
             arr, rec.x, rec.ys[1], rec.sub.z, recs[2].k, coalesce(recs[2].v, -1)) \
             FROM all_types WHERE i = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        values,
        "1 | 1.5 | 123.456789012 | true | héllo \"q\" | 000102FF | 2024-02-29 | \
         2024-02-29 10:11:12.123456 | 10:11:12.5 | 2024-02-29 10:11:12.123456+00 | 2 | POINT (1 2) | \
         [1, 2, 3] | a | 0.5 | 2020-01-01 | b | -1"
    );
    let empty: (i64, i64, Option<String>) = conn
        .query_row(
            "SELECT len(arr), len(recs), CAST(rec AS VARCHAR) FROM all_types WHERE i = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        empty,
        (0, 0, None),
        "REPEATED without values is empty, RECORD NULL"
    );
}

#[test]
fn tables_and_query_results_are_read_page_by_page() {
    // Jobs run (and would be billed) in another project than the data's.
    let s = setup(
        "  page_size: 10\n  billing_project: billing\n",
        "tables:\n  - source: bq\n    bucket: shop\n    source_table: items\n  \
         - id: bq.item_totals\n    source: bq\n    bucket: shop\n    name: item_totals\n    \
         query_mode: materialized\n    \
         query: SELECT id, id * 2 AS doubled FROM `demo.shop.items` WHERE id > 2\n",
    );
    s.emu.table(
        "shop",
        "items",
        json!([{"name": "id", "type": "INT64"}, {"name": "label", "type": "STRING"}]),
    );
    let rows: Vec<Value> = (1..=25)
        .map(|i| json!({"id": i, "label": format!("item {i}")}))
        .collect();
    s.emu.insert("shop", "items", &rows);
    s.ok(&["apply", "--auto-approve", "-q"]);
    assert_eq!(
        s.query("select count(*) as n, count(distinct id) as k, sum(id) as total from items"),
        "n,k,total\n25,25,325\n"
    );
    assert_eq!(
        s.query("select count(*) as n, min(id) as lo, max(doubled) as hi from item_totals"),
        "n,lo,hi\n23,3,50\n"
    );
    let seen = s.proxy.seen();
    // tabledata.list: three pages of at most 10 rows.
    let table_pages: Vec<&str> = seen
        .iter()
        .filter(|r| r.path.ends_with("/tables/items/data"))
        .map(|r| r.query.as_str())
        .collect();
    assert_eq!(table_pages.len(), 3, "{table_pages:?}");
    assert!(seen
        .iter()
        .filter(|r| r.path.contains("/tables/"))
        .all(|r| r.path.starts_with("/bigquery/v2/projects/demo/")));
    assert!(table_pages.iter().all(|q| q.contains("maxResults=10")));
    assert_eq!(
        table_pages
            .iter()
            .filter(|q| q.contains("pageToken="))
            .count(),
        2
    );
    // The query: a dry run first, then jobs.query (first page) and two getQueryResults pages.
    let dry = seen.iter().position(|r| r.is_dry_run()).expect("a dry run");
    let run = seen.iter().position(|r| r.is_query()).expect("a query");
    assert!(dry < run);
    assert_eq!(seen[run].body["maxResults"], 10);
    assert_eq!(seen[run].path, "/bigquery/v2/projects/billing/queries");
    assert_eq!(seen[dry].path, "/bigquery/v2/projects/billing/queries");
    assert_eq!(seen[run].body["defaultDataset"]["projectId"], "demo");
    assert_eq!(seen[run].body["defaultDataset"]["datasetId"], "shop");
    let result_pages = seen
        .iter()
        .filter(|r| {
            r.method == "GET" && r.path.contains("/queries/") && r.query.contains("pageToken=")
        })
        .count();
    assert_eq!(result_pages, 2, "{seen:?}");
}

#[test]
fn a_failed_job_reports_bigquerys_message_and_keeps_the_previous_data() {
    let registry = "tables:\n  - id: bq.paid\n    source: bq\n    bucket: shop\n    name: paid\n    \
         query_mode: materialized\n    query: SELECT order_id FROM shop.orders WHERE status = 'paid'\n";
    let s = setup("", registry);
    orders(&s.emu);
    s.ok(&["apply", "--auto-approve", "-q"]);
    assert_eq!(s.query("select count(*) as n from paid"), "n\n2\n");
    // The table the query reads is gone: BigQuery fails the job.
    s.emu.query("DROP TABLE shop.orders");
    let out = s.pipeline(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let err = all(&out);
    assert!(
        err.contains("BigQuery dry run: HTTP 404: Not found: Table demo.shop.orders was not found"),
        "{err}"
    );
    assert_eq!(s.query("select count(*) as n from paid"), "n\n2\n");
    // A query that passes its dry run and fails while it runs: the job's own error
    // (`status.errorResult`, read with jobs.get) is what the run reports.
    s.proxy.pass_dry_runs();
    let out = s.pipeline(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let err = all(&out);
    assert!(
        err.contains("BigQuery job bqemu_")
            && err.contains("failed: Not found: Table demo.shop.orders was not found")
            && err.contains("(notFound)"),
        "{err}"
    );
    assert_eq!(s.query("select count(*) as n from paid"), "n\n2\n");
    let status: Value = serde_json::from_str(&s.ok(&["status", "--format", "json"])).unwrap();
    let paid = &status["tables"].as_array().unwrap()[0];
    assert_eq!(paid["last_status"], "error", "{status:#}");
    assert!(paid["last_error"].as_str().unwrap().contains("Not found"));
}

#[test]
fn rate_limits_and_server_errors_are_retried() {
    let registry = format!(
        "{INCREMENTAL}  - id: bq.open\n    source: bq\n    name: open_orders\n    \
         query_mode: materialized\n    query: SELECT * FROM shop.orders WHERE status = 'open'\n"
    );
    let s = setup("", &registry);
    orders(&s.emu);
    s.proxy
        .fail_next("GET", "/tables/orders/data", 2, 503, None);
    s.proxy.fail_next_job_query(1, 429, Some(1));
    s.proxy.fail_next("GET", "/tables/orders", 1, 403, None);
    s.ok(&["apply", "--auto-approve", "-q"]);
    assert_eq!(s.query("select count(*) as n from orders"), "n\n3\n");
    assert_eq!(s.query("select count(*) as n from open_orders"), "n\n1\n");
    let statuses = |path: &str, method: &str| -> Vec<u16> {
        s.proxy
            .seen()
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(path))
            .map(|r| r.status)
            .collect()
    };
    assert_eq!(statuses("/tables/orders/data", "GET"), [503, 503, 200]);
    let job_queries: Vec<u16> = s
        .proxy
        .seen()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/queries") && !r.is_dry_run())
        .map(|r| r.status)
        .collect();
    assert_eq!(job_queries, [429, 200]);
    assert_eq!(
        statuses("/tables/orders", "GET")[0],
        403,
        "rateLimitExceeded"
    );
    // Every attempt of one jobs.query carries the same requestId: BigQuery runs it once.
    let ids: Vec<String> = s
        .proxy
        .seen()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/queries") && !r.is_dry_run())
        .map(|r| r.body["requestId"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
    assert!(!ids[0].is_empty());

    // Errors that do not go away end the run with the last one, after the retries.
    s.emu.insert(
        "shop",
        "orders",
        &[json!({"order_id": 9, "status": "x", "amount": "1", "updated_at": "2026-02-01T00:00:00Z"})],
    );
    s.proxy.fail_next("GET", "/tables/orders", 100, 500, None);
    let out = s.pipeline(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        all(&out).contains("HTTP 500: injected 500"),
        "{}",
        all(&out)
    );
    assert_eq!(s.query("select count(*) as n from orders"), "n\n3\n");
}

#[test]
fn a_query_over_its_byte_budget_is_refused_before_it_runs() {
    let registry = |max: u64| {
        format!(
            "tables:\n  - id: bq.paid\n    source: bq\n    bucket: shop\n    name: paid\n    \
             query_mode: materialized\n    maximum_bytes_billed: {max}\n    \
             query: SELECT order_id FROM shop.orders WHERE status = 'paid'\n"
        )
    };
    let s = setup("", &registry(1_000_000));
    orders(&s.emu);
    s.proxy.set_dry_run_bytes(5_000_000);
    let out = s.pipeline(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let err = all(&out);
    assert!(
        err.contains("would process 5000000 bytes")
            && err.contains("maximum_bytes_billed of 1000000 bytes")
            && err.contains("it was not run"),
        "{err}"
    );
    let seen = s.proxy.seen();
    assert!(seen.iter().any(|r| r.is_dry_run()));
    assert!(!seen.iter().any(|r| r.is_query()), "no job ran: {seen:?}");
    // Within budget it runs, and BigQuery is told the budget too.
    s.registry(&registry(10_000_000));
    s.proxy.clear();
    s.ok(&["apply", "--auto-approve", "-q"]);
    let out = s.pipeline(&["run", "-v"]);
    assert!(out.status.success(), "{}", all(&out));
    // The dry run's estimate is reported.
    assert!(
        all(&out).contains("dry run: the query will process 5000000 bytes"),
        "{}",
        all(&out)
    );
    assert_eq!(s.query("select count(*) as n from paid"), "n\n2\n");
    let job = s
        .proxy
        .seen()
        .into_iter()
        .find(|r| r.is_query())
        .expect("the query ran");
    assert_eq!(job.body["maximumBytesBilled"], "10000000");
}

#[test]
fn an_outage_keeps_the_previous_data_and_is_reported() {
    let mut s = setup("", INCREMENTAL);
    orders(&s.emu);
    s.ok(&["apply", "--auto-approve", "-q"]);
    s.emu.kill();
    let out = s.pipeline(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let err = all(&out);
    assert!(err.contains("BigQuery table demo.shop.orders"), "{err}");
    assert_eq!(s.query("select count(*) as n from orders"), "n\n3\n");
    let status: Value = serde_json::from_str(&s.ok(&["status", "--format", "json"])).unwrap();
    let t = &status["tables"][0];
    assert_eq!(t["last_status"], "error", "{t}");
    assert!(
        t["last_error"]
            .as_str()
            .unwrap()
            .contains("demo.shop.orders"),
        "{t}"
    );
    assert_eq!(t["rows"], 3, "the last good numbers stay");
}

#[test]
fn remote_tables_write_the_seed_contract_and_skip_cleanly_without_the_extension() {
    // Not named `bq`: that is the alias the contract attaches BigQuery under.
    let s = setup_named(
        "warehouse",
        "",
        "tables:\n  - source: warehouse\n    bucket: shop\n    source_table: orders\n    query_mode: remote\n  \
         - source: warehouse\n    bucket: shop\n    source_table: recent\n    query_mode: remote\n  \
         - source: warehouse\n    bucket: shop\n    source_table: items\n",
    );
    orders(&s.emu);
    s.emu
        .query("CREATE VIEW shop.recent AS SELECT order_id FROM shop.orders WHERE order_id > 1");
    s.emu
        .table("shop", "items", json!([{"name": "id", "type": "INT64"}]));
    s.emu
        .insert("shop", "items", &[json!({"id": 1}), json!({"id": 2})]);
    s.inst.write("files/notes.csv", "id,note\n1,hello\n");
    s.inst.write(
        "pipelines/files.yaml",
        "type: csv\nconnection:\n  path: files\n",
    );
    s.inst.write(
        "registry/files.yaml",
        "tables:\n  - source: files\n    source_table: notes\n",
    );
    let out = s.pipeline(&["apply", "--auto-approve"]);
    // The remote tables cannot be attached here (no `bigquery` extension): their attach fails...
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let text = all(&out);
    assert!(text.contains("bigquery"), "{text}");
    assert!(
        s.inst
            .path()
            .join("data/extracts/warehouse/extract.duckdb")
            .is_file(),
        "{text}"
    );

    // ...but the extract holds exactly the seed system's rows and views.
    let extract = duckdb::Connection::open_with_flags(
        s.inst.path().join("data/extracts/warehouse/extract.duckdb"),
        duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap(),
    )
    .unwrap();
    let remote: (String, String, String, Option<String>) = extract
        .query_row("SELECT * FROM _remote_attach", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!(
        remote,
        (
            "bq".into(),
            "bigquery".into(),
            "project=demo".into(),
            Some(String::new())
        )
    );
    let meta: Vec<String> = extract
        .prepare("SELECT table_name || ':' || rows || ':' || size_bytes || ':' || query_mode FROM _meta ORDER BY 1")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(meta[1..], ["orders:0:0:remote", "recent:0:0:remote"]);
    assert!(meta[0].starts_with("items:2:") && meta[0].ends_with(":local"));
    let view = |name: &str| -> String {
        extract
            .query_row(
                "SELECT sql FROM duckdb_views() WHERE view_name = ?",
                [name],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(
        view("orders"),
        "CREATE VIEW orders AS SELECT * FROM bq.shop.orders;"
    );
    assert_eq!(
        view("recent"),
        "CREATE VIEW recent AS SELECT * FROM bigquery_query('demo', 'SELECT * FROM `demo.shop.recent`');"
    );
    drop(extract);

    // The rebuild published everything else and said why the remote views are missing.
    assert_eq!(s.query("select count(*) as n from items"), "n\n2\n");
    assert_eq!(s.query("select note from notes"), "note\nhello\n");
    let status: Value = serde_json::from_str(&s.ok(&["status", "--format", "json"])).unwrap();
    let problems = status["analytics_problems"].to_string();
    assert!(
        problems.contains("warehouse.orders") && problems.contains("warehouse.recent"),
        "{problems}"
    );
    assert!(
        problems.contains("the DuckDB extension `bigquery` is not installed"),
        "{problems}"
    );
    for t in status["tables"].as_array().unwrap() {
        if t["query_mode"] == "remote" {
            assert_ne!(t["last_status"], "ok", "{t}");
            assert!(
                t["last_error"].as_str().unwrap_or("").contains("bigquery"),
                "{t}"
            );
        }
    }
    let tables = s.query("select name from _pipeline.tables order by name");
    assert_eq!(tables, "name\nitems\nnotes\n");
}

#[test]
fn discover_lists_datasets_tables_and_columns_and_writes_registry_entries() {
    let s = setup("", "tables: []\n");
    orders(&s.emu);
    s.emu.dataset("crm");
    s.emu.table(
        "crm",
        "orders",
        json!([{"name": "id", "type": "INT64", "description": "Customer order id"},
               {"name": "tags", "type": "STRING", "mode": "REPEATED"}]),
    );
    let listed = s.ok(&["sources", "discover", "bq"]);
    assert!(
        listed.contains("shop.orders") && listed.contains("crm.orders"),
        "{listed}"
    );
    assert!(listed.contains("2 table(s)."), "{listed}");
    let only = s.ok(&["sources", "discover", "bq", "--bucket", "shop"]);
    assert!(
        only.contains("1 table(s).") && !only.contains("crm."),
        "{only}"
    );
    s.ok(&[
        "sources",
        "discover",
        "bq",
        "--write",
        "registry/found.yaml",
    ]);
    let written = std::fs::read_to_string(s.inst.path().join("registry/found.yaml")).unwrap();
    // Sorted by dataset: crm's `orders` keeps its name, shop's gets the dataset in front.
    assert!(
        written.contains("  - source: bq\n    bucket: crm\n    source_table: orders\n    columns:\n      id: Customer order id\n")
            && written.contains("    bucket: shop\n    source_table: orders\n    name: shop_orders\n"),
        "{written}"
    );
    // The entries are valid and sync.
    s.ok(&["apply", "--auto-approve", "-q"]);
    assert_eq!(s.query("select count(*) as n from shop_orders"), "n\n3\n");
    assert_eq!(s.query("select count(*) as n from orders"), "n\n0\n");
}

#[test]
fn the_service_account_key_and_access_tokens_never_reach_logs_or_files() {
    let emu = Emulator::start();
    emu.dataset("shop");
    orders(&emu);
    let google = FakeGoogle::start();
    let proxy = FaultProxy::start(&emu.url);
    proxy.require_tokens(&google);
    let key = TestKey::shared();
    let inst = Instance::from_files(&[
        (
            "config/instance.yaml",
            "name: bq\ntimezone: UTC\ndefaults: { concurrency: 1 }\n",
        ),
        (
            "pipelines/bq.yaml",
            &format!(
                "type: bigquery\nconnection:\n  credentials_env: PIPELINE_TEST_BQ_KEY\n  endpoint: {}\n",
                proxy.url()
            ),
        ),
        ("registry/bq.yaml", INCREMENTAL),
    ]);
    // A 401 makes the connector renew its token: two tokens are in play.
    proxy.fail_next("GET", "/tables/orders/data", 1, 401, None);
    let cmd = {
        let mut c = inst.cmd();
        c.args(["apply", "--auto-approve"])
            .env("PIPELINE_BIGQUERY_FAST_RETRY", "1")
            .env(
                "PIPELINE_TEST_BQ_KEY",
                key.service_account_json(&google.token_uri(), "demo"),
            );
        c
    };
    let key_lines: Vec<&str> = key
        .private_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 32)
        .collect();
    let tokens: Vec<String> = (0..2).map(token_number).collect();
    let mut secrets_list: Vec<&str> = key_lines.clone();
    secrets_list.extend(tokens.iter().map(String::as_str));
    let out = secrets::assert_no_secret_in_logs(&inst, cmd, &secrets_list);
    assert!(out.status.success(), "{}", all(&out));
    assert_eq!(
        google.issued(),
        tokens,
        "a token, and a new one after the 401"
    );
    // The project came from the key.
    assert!(proxy
        .seen()
        .iter()
        .all(|r| r.path.starts_with("/bigquery/v2/projects/demo/")));

    // A refused key is reported with Google's words, and nothing of the key.
    google.refuse(400, "invalid_grant", "Invalid JWT Signature.");
    let out = inst
        .cmd()
        .args(["run", "--full-refresh"])
        .env("PIPELINE_BIGQUERY_FAST_RETRY", "1")
        .env(
            "PIPELINE_TEST_BQ_KEY",
            key.service_account_json(&google.token_uri(), "demo"),
        )
        .output()
        .unwrap();
    let text = all(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("invalid_grant: Invalid JWT Signature."),
        "{text}"
    );
    assert!(!key_lines.iter().any(|l| text.contains(l)));
}

#[test]
fn validate_checks_bigquery_keys_budgets_and_datasets() {
    let inst = Instance::from_files(&[
        ("config/instance.yaml", "name: bq\ntimezone: UTC\n"),
        ("files/a.csv", "id\n1\n"),
        (
            "pipelines/files.yaml",
            "type: csv\nconnection:\n  path: files\n",
        ),
        (
            "pipelines/nokey.yaml",
            "type: bigquery\nconnection:\n  project_id: demo\n",
        ),
        (
            "pipelines/twokeys.yaml",
            "type: bigquery\nconnection:\n  project_id: demo\n  credentials_file: k.json\n  \
             credentials_env: PIPELINE_TEST_BQ_UNSET\n",
        ),
        (
            "pipelines/bq.yaml",
            "type: bigquery\nconnection:\n  credentials_env: PIPELINE_TEST_BQ_UNSET\n",
        ),
        (
            "registry/t.yaml",
            "tables:\n  - source: files\n    source_table: a\n    maximum_bytes_billed: 100\n  \
             - source: nokey\n    source_table: orders\n  \
             - source: bq\n    bucket: shop\n    source_table: x\n    query_mode: remote\n",
        ),
    ]);
    let (status, report) = inst.validate();
    assert_eq!(status, 1);
    let messages: Vec<String> = crate::common::errors(&report)
        .iter()
        .map(|d| {
            format!(
                "{}:{} {}",
                d["file"].as_str().unwrap(),
                d["line"],
                d["message"]
            )
        })
        .collect();
    let has = |needle: &str| messages.iter().any(|m| m.contains(needle));
    assert!(
        has("pipelines/nokey.yaml:3 \"bigquery source `nokey` has no service-account key"),
        "{messages:#?}"
    );
    assert!(has("pipelines/twokeys.yaml:5 \"source `twokeys` sets both credentials_file and credentials_env"), "{messages:#?}");
    assert!(
        has(
            "registry/t.yaml:4 \"table `files.a`: maximum_bytes_billed applies to BigQuery sources"
        ),
        "{messages:#?}"
    );
    assert!(has("table `nokey.orders` has no `bucket`"), "{messages:#?}");
    assert!(
        has("registry/t.yaml:10 \"table `shop.x` is remote, but its source is named `bq`"),
        "{messages:#?}"
    );
    assert_eq!(messages.len(), 5, "{messages:#?}");
}

//! The router, in process: a real instance in a temp dir (specs, state, extracts, analytics), the
//! daemon's [`Shared`] view of it, and requests driven through [`router`] with `oneshot` — no socket,
//! no sleep (a run is waited for through the run manager's change notifications, with a bound).

use super::*;
use crate::daemon::{read_snapshot, Config, Shared, WatcherStatus};
use crate::instance::Instance;
use crate::registry::registered::Registered;
use crate::registry::task::Task;
use crate::state::StateStore;
use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;
use tower::ServiceExt;

const SPECS: &[(&str, &str)] = &[
    (
        "config/instance.yaml",
        "name: Router\ntimezone: Europe/Prague\n",
    ),
    (
        "pipelines/shop.yaml",
        "type: csv\nconnection:\n  path: files\ntransforms:\n  - name: daily\n    sql: select count(*) as n from orders\n",
    ),
    (
        "registry/shop.yaml",
        "tables:\n  - source: shop\n    source_table: orders\n  - source: shop\n    source_table: customers\n    access: [finance]\n  - source: shop\n    source_table: refunds\n",
    ),
    (
        "metrics/sales/order_count.yaml",
        "description: Orders placed\nowner: data@example.com\nsql: select count(*) as value from orders\n",
    ),
    (
        "files/orders.csv",
        "order_id,customer_id,amount\n1,10,5.5\n2,11,7.25\n3,10,1.0\n",
    ),
    ("files/customers.csv", "customer_id,name\n10,Ann\n11,Bo\n"),
    // No files/refunds.csv: that table's extract fails, and its task stays pending.
];

struct Fixture {
    _dir: tempfile::TempDir,
    shared: Arc<Shared>,
    /// Tokens: a plain user, a member of `finance`, an admin.
    user: String,
    finance: String,
    admin: String,
}

impl Fixture {
    /// The instance applied and its pending tasks run once (refunds fails).
    async fn synced() -> Fixture {
        let f = Fixture::applied();
        let req = runs::sync_request(&f.shared, &[], true, "test", "test").unwrap();
        let id = f.shared.runs.start(&f.shared, req).unwrap();
        let mut changes = f.shared.runs.changes();
        tokio::time::timeout(Duration::from_secs(120), async {
            while f.shared.runs.get(&id).is_none_or(|r| r.status == "running") {
                changes.changed().await.unwrap();
            }
        })
        .await
        .expect("the run finished within 2 minutes");
        f
    }

    /// The instance applied (tasks queued, nothing run).
    fn applied() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in SPECS {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let mut instance = Instance::open(dir.path()).unwrap();
        instance.create_data_dir().unwrap();
        let data = instance.data.clone();
        let state = StateStore::of(&data);
        drop(state.write().unwrap());
        let snapshot = read_snapshot(&state).unwrap();
        let config = Config {
            root: dir.path().to_path_buf(),
            listen: None,
            shutdown_timeout: Duration::from_secs(5),
            missed_runs: None,
            debounce: Duration::from_millis(100),
        };
        let shared = Arc::new(Shared {
            root: dir.path().to_path_buf(),
            data,
            state,
            clock: crate::daemon::clock::Clock::from_env(),
            started_at: chrono::Utc::now(),
            config,
            instance: RwLock::new(Arc::new(instance)),
            snapshot: RwLock::new(Arc::new(snapshot)),
            runs: runs::RunManager::new(),
            stats: crate::daemon::stats::Stats::default(),
            reload: tokio::sync::Notify::new(),
            next_runs: Mutex::new(BTreeMap::new()),
            watcher: Mutex::new(WatcherStatus::default()),
            shutdown: tokio::sync::watch::channel(false).0,
            token_use: Mutex::new(Default::default()),
            verdicts: Default::default(),
            manifest_state: Default::default(),
            queries: Arc::new(crate::daemon::limits::QueryGate::default()),
        });
        // Applied as the watcher applies, with the tasks left queued for the tests to run.
        struct QueueOnly;
        impl crate::ops::apply::Hooks for QueueOnly {
            type Ran = ();
            fn run(&mut self, _: &Instance, _: Registered, _: Vec<Task>) {}
        }
        let desired = crate::plan::desired(dir.path()).expect("the test specs are valid");
        let mut opts = crate::ops::apply::ApplyOptions::new("watcher", "test");
        opts.run = crate::ops::apply::RunAfter::Never;
        match crate::ops::apply::apply(&desired, &opts, &mut QueueOnly) {
            Ok(crate::ops::apply::ApplyOutcome::Applied { .. }) => {}
            other => panic!("the specs did not apply: {other:?}"),
        }
        shared.reload_snapshot().unwrap();
        let token = |user: &str, groups: &[&str]| {
            let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            let mut w = shared.state.write().unwrap();
            auth::create_token(&mut w, user, &groups, "test").unwrap().1
        };
        let (user, finance, admin) = (
            token("ann", &[]),
            token("fin", &["finance"]),
            token("root", &["admin"]),
        );
        Fixture {
            _dir: dir,
            shared,
            user,
            finance,
            admin,
        }
    }

    /// (status, headers, JSON body) of one request through the router.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let response = router(self.shared.clone()).oneshot(req).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (parts.status, parts.headers, value)
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.call(Method::GET, path, Some(token), None).await;
        (status, body)
    }
}

/// The error body's shape, whatever the error: `{"error": {"code", "message", "request_id"}}`.
fn assert_error(status: StatusCode, headers: &HeaderMap, body: &Value, code: &str) {
    let e = &body["error"];
    assert_eq!(e["code"], code, "{status}: {body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let id = e["request_id"].as_str().expect("a request id");
    assert_eq!(
        headers[error::REQUEST_ID],
        id,
        "the header names the same request"
    );
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_is_required_and_access_groups_are_enforced() {
    let f = Fixture::applied();
    let (status, headers, body) = f.call(Method::GET, "/api/tables", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(status, &headers, &body, "unauthorized");
    assert_eq!(
        headers[header::WWW_AUTHENTICATE],
        "Bearer realm=\"pipeline\""
    );
    let (status, headers, body) = f
        .call(Method::GET, "/api/status", Some("pl_not-a-token"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(status, &headers, &body, "unauthorized");

    // customers is for finance: hidden from the list, 403 when named.
    let (status, body) = f.get("/api/tables", &f.user).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = body["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders", "refunds"]);
    let (status, headers, body) = f
        .call(Method::GET, "/api/tables/customers", Some(&f.user), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_error(status, &headers, &body, "forbidden");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("finance"));
    let (status, body) = f.get("/api/tables/customers", &f.finance).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], "shop.customers");

    // Transforms are catalogue entries too: listed with their kind, answered by name.
    let (_, list) = f.get("/api/tables", &f.user).await;
    assert_eq!(list["transforms"][0]["kind"], "transform", "{list}");
    assert_eq!(list["tables"][0]["kind"], "table", "{list}");
    let (status, body) = f.get("/api/tables/daily", &f.user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], "transform");
    assert_eq!(body["inputs"], serde_json::json!(["orders"]));
    assert_eq!(body["sql"], "select count(*) as n from orders");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_wrong_methods_and_unknown_things_answer_the_json_error_body() {
    let f = Fixture::applied();
    let (status, headers, body) = f
        .call(Method::GET, "/api/nosuch", Some(&f.user), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(status, &headers, &body, "not_found");

    let (status, headers, body) = f
        .call(Method::DELETE, "/api/status", Some(&f.user), None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(status, &headers, &body, "method_not_allowed");
    assert!(headers[header::ALLOW].to_str().unwrap().contains("GET"));
    let (status, headers, body) = f.call(Method::GET, "/api/query", Some(&f.user), None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(status, &headers, &body, "method_not_allowed");

    for path in [
        "/api/tables/nosuch",
        "/api/metrics/sales/nosuch",
        "/api/runs/nosuch",
        "/api/data/nosuch",
    ] {
        let (status, headers, body) = f.call(Method::GET, path, Some(&f.user), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_error(status, &headers, &body, "not_found");
    }

    let (status, headers, body) = f
        .call(
            Method::POST,
            "/api/sync/trigger",
            Some(&f.user),
            Some("{nope"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(status, &headers, &body, "bad_request");

    // A client's own request id is kept.
    let req = Request::builder()
        .uri("/api/nosuch")
        .header(error::REQUEST_ID, "client-42")
        .body(Body::empty())
        .unwrap();
    let r = router(f.shared.clone()).oneshot(req).await.unwrap();
    assert_eq!(r.headers()[error::REQUEST_ID], "client-42");
}

/// Collects what `tracing` logs while it lives (this thread only).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_database_error_is_a_logged_generic_500_never_a_404() {
    let f = Fixture::synced().await;
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (status, body) = f.get("/api/tables/orders", &f.user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body["columns"].as_array().unwrap().is_empty(), "{body}");

    // The published file is unreadable now (a disk error, say): the table exists, so the answer
    // is a 500 — not a 404, not an empty column list — and says nothing of DuckDB.
    let analytics = f.shared.data.analytics();
    std::fs::write(
        &analytics,
        b"not a duckdb file at all, but long enough to be read",
    )
    .unwrap();
    let (status, headers, body) = f
        .call(Method::GET, "/api/tables/orders", Some(&f.user), None)
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_error(status, &headers, &body, "internal");
    assert_eq!(body["error"]["message"], error::INTERNAL_MESSAGE);
    let text = body.to_string();
    assert!(
        !text.contains("analytics.duckdb") && !text.contains("Error"),
        "{text}"
    );
    // The detail is in the log, under the request id.
    let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let id = body["error"]["request_id"].as_str().unwrap();
    let line = logged
        .lines()
        .find(|l| l.contains("API request failed"))
        .unwrap_or_else(|| panic!("no error logged: {logged}"));
    assert!(line.contains(id), "{line}");
    assert!(line.contains("analytics.duckdb"), "{line}");
    // An unknown table is still a 404: the registry answers that, not the file.
    let (status, _) = f.get("/api/tables/nosuch", &f.user).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_the_whole_truth() {
    let f = Fixture::synced().await;
    let (status, s) = f.get("/api/status", &f.user).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["instance"], "Router");
    assert_eq!(s["timezone"], "Europe/Prague");
    assert_eq!(s["user"], "ann");
    let table = |name: &str| {
        s["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    // Only what the caller may read.
    assert_eq!(table("customers"), Value::Null);
    let orders = table("orders");
    assert_eq!(orders["last_status"], "ok", "{orders}");
    assert_eq!(orders["rows"], 3);
    assert_eq!(orders["freshness"], json!({"state": "fresh"}), "{orders}");
    assert!(orders["schedule"].is_string());
    rfc3339_utc(&orders["last_sync"]);
    rfc3339_utc(&orders["last_success_at"]);
    rfc3339_utc(&orders["next_run"]);
    let refunds = table("refunds");
    assert_eq!(refunds["last_status"], "error", "{refunds}");
    assert!(refunds["last_error"].as_str().is_some(), "{refunds}");
    assert_eq!(refunds["freshness"]["state"], "never_synced", "{refunds}");

    // The failed task stays pending, with the error of its attempt.
    let pending = s["pending_tasks"].as_array().unwrap();
    let task = pending
        .iter()
        .find(|p| p["task"] == "extract:shop.refunds")
        .unwrap_or_else(|| panic!("refunds pending: {s:#}"));
    assert_eq!(task["last_attempt"]["status"], "failed", "{task}");
    assert!(task["last_attempt"]["error"].as_str().is_some(), "{task}");
    rfc3339_utc(&task["last_attempt"]["at"]);
    rfc3339_utc(&task["queued_at"]);
    assert_eq!(s["summary"]["pending_tasks_failed"], 1, "{s:#}");
    assert_eq!(s["summary"]["tables_never_synced"], 1);
    assert_eq!(s["summary"]["tables_failed"], 1);

    let daily = s["transform_states"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "daily")
        .cloned()
        .unwrap();
    assert_eq!(daily["status"], "ok", "{daily}");
    assert_eq!(daily["rows"], 1);
    let check = s["metric_checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["metric"] == "sales/order_count")
        .cloned()
        .unwrap();
    assert_eq!(check["status"], "ok", "{check}");
    rfc3339_utc(&s["started_at"]);
    rfc3339_utc(&s["last_apply"]["applied_at"]);

    // Finance sees customers too; the admin sees everything.
    let (_, s) = f.get("/api/status", &f.finance).await;
    assert!(s["tables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "customers"));
    let (_, s) = f.get("/api/status", &f.admin).await;
    assert_eq!(s["summary"]["tables"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_has_its_documented_shape() {
    let f = Fixture::synced().await;
    let (status, t) = f.get("/api/tables/orders", &f.user).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    for key in [
        "id",
        "name",
        "source",
        "query_mode",
        "sync_mode",
        "columns",
        "meta",
        "last_sync",
        "history",
    ] {
        assert!(t.get(key).is_some(), "{key} in {t}");
    }
    assert_eq!(
        t["columns"][0],
        json!({"name": "order_id", "type": "BIGINT", "description": null})
    );
    assert_eq!(t["meta"]["rows"], 3);
    rfc3339_utc(&t["meta"]["extracted_at"]);
    let run_id = t["history"][0]["run_id"].as_str().unwrap().to_string();
    rfc3339_utc(&t["history"][0]["started_at"]);

    // A run reads the same whether it is live or from the state.
    let (status, run) = f.get(&format!("/api/runs/{run_id}"), &f.user).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    for key in [
        "id",
        "trigger",
        "status",
        "tables",
        "tasks",
        "hidden_tasks",
        "failed",
    ] {
        assert!(run.get(key).is_some(), "{key} in {run}");
    }
    // customers' extract is hidden from a caller outside finance.
    assert!(run["hidden_tasks"].as_u64().unwrap() >= 1, "{run}");
    assert!(run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["target"] != "shop.customers"));

    let (_, m) = f.get("/api/metrics", &f.user).await;
    assert_eq!(m["metrics"][0]["id"], "sales/order_count", "{m}");
    assert_eq!(m["metrics"][0]["description"], "Orders placed");
    let (_, m) = f.get("/api/metrics/sales/order_count", &f.user).await;
    assert_eq!(m["owner"], "data@example.com", "{m}");

    let (_, man) = f.get("/api/manifest", &f.user).await;
    let orders = man["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .cloned()
        .unwrap();
    assert_eq!(orders["files"][0]["url"], "/api/data/orders", "{orders}");

    let (status, _, h) = f.call(Method::GET, "/health", Some(&f.user), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["status"], "ok");

    let (status, _, trig) = f
        .call(
            Method::POST,
            "/api/sync/trigger",
            Some(&f.user),
            Some(r#"["orders"]"#),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{trig}");
    assert_eq!(trig["tables"], json!(["shop.orders"]));
    let id = trig["run_id"].as_str().unwrap();
    assert_eq!(trig["status"], format!("/api/runs/{id}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_revalidates_by_etag_and_a_revoked_token_is_refused_at_once() {
    let f = Fixture::synced().await;
    let manifest = |token: String, tag: Option<String>| {
        let shared = f.shared.clone();
        async move {
            let mut req = Request::builder()
                .uri("/api/manifest")
                .header(header::AUTHORIZATION, format!("Bearer {token}"));
            if let Some(tag) = tag {
                req = req.header(header::IF_NONE_MATCH, tag);
            }
            let resp = router(shared)
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let (parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap();
            let tag = parts
                .headers
                .get(header::ETAG)
                .map(|v| v.to_str().unwrap().to_string());
            (parts.status, tag, bytes.len())
        }
    };
    let (status, tag, len) = manifest(f.user.clone(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(len > 100);
    let tag = tag.expect("the manifest has an ETag");
    // Nothing changed: 304, no body, the same tag.
    let (status, again, len) = manifest(f.user.clone(), Some(tag.clone())).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!((again.as_deref(), len), (Some(tag.as_str()), 0));
    // Another caller sees other tables: another manifest, whatever tag it sends.
    let (status, finance_tag, _) = manifest(f.finance.clone(), Some(tag.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(finance_tag.as_deref(), Some(tag.as_str()));

    // A revoked token is refused on its very next request, though its verdict was remembered.
    let id = {
        let r = f.shared.state.read().unwrap();
        auth::list_tokens(&r)
            .unwrap()
            .into_iter()
            .find(|t| t.user == "ann")
            .unwrap()
            .id
    };
    auth::revoke(&mut f.shared.state.write().unwrap(), &id, "test").unwrap();
    let (status, _, _) = manifest(f.user.clone(), Some(tag)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = manifest(f.finance.clone(), None).await;
    assert_eq!(status, StatusCode::OK, "other tokens still work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_table_freshness_and_downstream_gauges() {
    let f = Fixture::synced().await;
    let (status, _, text) = f.call(Method::GET, "/metrics", Some(&f.admin), None).await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap().to_string();
    for line in [
        "pipeline_table_last_status{table=\"shop.orders\",status=\"ok\"} 1",
        "pipeline_table_last_status{table=\"shop.refunds\",status=\"failed\"} 1",
        "pipeline_table_late{table=\"shop.orders\"} 0",
        "pipeline_table_never_synced{table=\"shop.refunds\"} 1",
        "pipeline_transform_status{transform=\"daily\",status=\"ok\"} 1",
        "pipeline_metric_check_status{metric=\"sales/order_count\",status=\"ok\"} 1",
        "pipeline_pending_tasks 1",
        "pipeline_pending_tasks_failed 1",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
    assert!(text.contains("pipeline_table_freshness_age_seconds{table=\"shop.orders\"} "));
}

/// `v` is RFC 3339 with milliseconds and the UTC zone, the one format of every JSON answer.
fn rfc3339_utc(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("a time, not {v}"));
    assert!(
        chrono::DateTime::parse_from_rfc3339(s).is_ok() && s.ends_with('Z') && s.len() == 24,
        "{s}"
    );
}

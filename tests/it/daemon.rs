//! `pipeline daemon` end to end: a real daemon process on 127.0.0.1 with a free port, driven over
//! HTTP and through its spec files, stopped with SIGTERM.

use crate::common::daemon::{call, ok, status, token, wait_for, Daemon};
use crate::common::{Fmt, Instance};
use serde_json::{json, Value};
use std::time::Duration;

#[test]
fn the_watcher_applies_saved_edits_once_and_never_applies_invalid_specs() {
    let inst = Instance::new(Fmt::Yaml);
    let t = token(&inst, "ann", &[]);
    let d = Daemon::start(&inst, &[], &[]);
    // At start the daemon applies what the specs say (nothing was applied before).
    let s = wait_for(Duration::from_secs(20), "the first apply", || {
        let s = status(&d, &t);
        (s["serial"] == 1).then_some(s)
    });
    assert_eq!(s["last_apply"]["who"], "watcher");

    // An editor-style save: write a temp file, then rename it over the spec.
    let registry = inst.path().join("registry/shop.yaml");
    let edited = std::fs::read_to_string(&registry).unwrap().replace(
        "source_table: orders\n",
        "source_table: orders\n    description: Every order\n",
    );
    let tmp = inst.path().join("registry/.shop.yaml.tmp");
    std::fs::write(&tmp, &edited).unwrap();
    std::fs::rename(&tmp, &registry).unwrap();
    wait_for(Duration::from_secs(10), "the edit to be applied", || {
        (status(&d, &t)["serial"] == 2).then_some(())
    });
    let (_, table) = call("GET", &d.url("/api/tables/orders"), Some(&t), None);
    assert_eq!(table["description"], "Every order");
    // One save, one apply: the watcher handles changes in order, so once a later change that
    // alters nothing has been handled ("unchanged"), a second apply of the save would show.
    std::fs::write(&registry, &edited).unwrap();
    wait_for(
        Duration::from_secs(10),
        "the no-op rewrite to be handled",
        || (status(&d, &t)["watcher"]["last_result"] == "unchanged").then_some(()),
    );
    assert_eq!(status(&d, &t)["serial"], 2, "one save, one apply");

    // An invalid edit is reported with file:line:col and not applied.
    std::fs::write(
        &registry,
        edited.replace(
            "source: shop\n    source_table: orders",
            "source: nowhere\n    source_table: orders",
        ),
    )
    .unwrap();
    let errors = wait_for(
        Duration::from_secs(10),
        "the invalid edit to be reported",
        || {
            let s = status(&d, &t);
            (s["watcher"]["last_result"] == "invalid").then(|| s["watcher"]["errors"].clone())
        },
    );
    let first = errors[0].as_str().unwrap();
    assert!(
        first.starts_with("registry/shop.yaml:2:13: error:"),
        "{errors}"
    );
    assert!(first.contains("nowhere"), "{first}");
    assert_eq!(status(&d, &t)["serial"], 2);
    let (code, _) = call("GET", &d.url("/api/tables/orders"), Some(&t), None);
    assert_eq!(code, 200, "the last good state keeps serving");
    assert!(d.log().contains("registry/shop.yaml:2:13"), "{}", d.log());

    // Fixing it applies.
    std::fs::write(
        &registry,
        edited.replace("Every order", "Every order, fixed"),
    )
    .unwrap();
    wait_for(Duration::from_secs(10), "the fix to be applied", || {
        (status(&d, &t)["serial"] == 3).then_some(())
    });
    let who: Vec<String> = {
        drop(d);
        let conn = inst.state();
        let mut stmt = conn
            .prepare("SELECT who FROM apply_log ORDER BY serial")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(who, ["watcher", "watcher", "watcher"]);
}

#[test]
fn a_fast_schedule_fires_never_overlaps_and_records_history() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    schedule: every 1m\n",
    );
    inst.apply();
    let t = token(&inst, "ann", &[]);
    // 600×: "every 1m" fires every 100 ms of real time, faster than a run takes, so due times
    // land while the table is syncing.
    let mut d = Daemon::start(&inst, &[], &[("PIPELINE_CLOCK_SCALE", "600")]);
    wait_for(Duration::from_secs(10), "the next run time", || {
        status(&d, &t)["tables"][0]["next_run"]
            .as_str()
            .map(str::to_string)
    });
    // Runs accumulate: wait (bounded) until due times have landed during a sync and several
    // runs have finished.
    wait_for(
        Duration::from_secs(30),
        "coalesced due times and three runs",
        || {
            let log = d.log();
            (log.contains("coalesced") && log.matches("\"run finished\"").count() >= 3)
                .then_some(())
        },
    );
    assert!(d.stop(Duration::from_secs(30)).success());
    assert!(d.log().contains("coalesced"), "{}", d.log());
    let conn = inst.state();
    let runs: i64 = conn
        .query_row(
            "SELECT count(*) FROM runs WHERE trigger = 'schedule' AND status = 'ok'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(runs >= 2, "{runs} scheduled runs in 3 s");
    let mut stmt = conn
        .prepare(
            "SELECT epoch_ms(started_at), epoch_ms(finished_at) FROM sync_history
             WHERE table_id = 'shop.orders' ORDER BY started_at",
        )
        .unwrap();
    let spans: Vec<(i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(spans.len() >= 3, "{spans:?}");
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "syncs of one table overlap: {spans:?}");
    }
}

#[test]
fn a_time_missed_while_down_runs_once_at_start_unless_skipped() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    schedule: every 1h\n",
    );
    inst.apply();
    let t = token(&inst, "ann", &[]);
    // As if the daemon had been down for three hours.
    let age = || {
        duckdb::Connection::open(inst.state_path())
            .unwrap()
            .execute_batch("UPDATE sync_history SET started_at = started_at - INTERVAL 3 HOUR")
            .unwrap();
    };
    let scheduled =
        || -> i64 { inst.state_int("SELECT count(*) FROM runs WHERE trigger = 'schedule'") };

    age();
    let mut d = Daemon::start(&inst, &["--missed-runs", "skip"], &[]);
    // The scheduler decides what runs at start before it first publishes next run times: once one
    // shows, a start-time run would have been started (and a stop waits for running syncs).
    wait_for(Duration::from_secs(10), "the scheduler", || {
        status(&d, &t)["tables"][0]["next_run"]
            .as_str()
            .map(str::to_string)
    });
    assert!(d.stop(Duration::from_secs(30)).success());
    assert_eq!(scheduled(), 0, "skip: nothing runs at start");

    let mut d = Daemon::start(&inst, &[], &[]);
    wait_for(Duration::from_secs(20), "the missed run", || {
        d.log().contains("\"run finished\"").then_some(())
    });
    // Start-time runs are decided before next run times show (see above); an hourly schedule
    // is not due again for an hour.
    wait_for(Duration::from_secs(10), "the scheduler", || {
        status(&d, &t)["tables"][0]["next_run"]
            .as_str()
            .map(str::to_string)
    });
    assert!(d.stop(Duration::from_secs(30)).success());
    assert_eq!(scheduled(), 1, "three missed hours run once");
}

#[test]
fn the_query_sandbox_and_access_groups_hold() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    access: [finance]\n  - source: shop\n    source_table: customers\n",
    );
    inst.write_spec(
        "config/instance",
        "name: Test\ntimezone: UTC\nserver:\n  public: [health, metrics]\n  query_max_rows: 2\n",
    );
    // The transform and the metric read orders: drop them so only access is under test.
    inst.write_spec("pipelines/shop", "type: csv\nconnection:\n  path: files\n");
    std::fs::remove_dir_all(inst.path().join("metrics")).unwrap();
    inst.apply();
    let analyst = token(&inst, "ann", &["analysts"]);
    let finance = token(&inst, "fin", &["finance"]);
    let d = Daemon::start(&inst, &[], &[]);
    let query = |tok: &str, sql: &str| {
        call(
            "POST",
            &d.url("/api/query"),
            Some(tok),
            Some(&json!({ "sql": sql }).to_string()),
        )
    };

    let (code, body) = query(&analyst, "SELECT name FROM customers ORDER BY name");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["rows"], json!([["Ann"], ["Bo"]]));
    let (code, body) = query(&finance, "SELECT count(*) AS n FROM orders");
    assert_eq!((code, body["rows"].clone()), (200, json!([[3]])), "{body}");
    let (_, body) = query(&finance, "SELECT * FROM range(10)");
    assert_eq!(
        (body["row_count"].clone(), body["truncated"].clone()),
        (json!(2), json!(true))
    );

    for (sql, want) in [
        ("SELECT * FROM read_csv('/etc/passwd')", 403),
        ("SELECT * FROM '/etc/passwd'", 403),
        ("ATTACH '/tmp/x.duckdb' AS x", 400),
        ("COPY customers TO '/tmp/pipeline-leak.csv'", 400),
        ("INSTALL httpfs", 400),
        ("SET enable_external_access = true", 400),
        ("SELECT 1; SELECT 2", 400),
        ("SELECT * FROM orders", 403),
        (
            "SELECT * FROM customers c JOIN (SELECT 1 FROM orders) o ON true",
            403,
        ),
        ("SELECT * FROM query('SELECT * FROM orders')", 403),
    ] {
        let (code, body) = query(&analyst, sql);
        assert_eq!(code, want, "{sql}: {body}");
        assert!(body["error"]["message"].is_string(), "{sql}: {body}");
        assert!(!body.to_string().contains("root:"), "{sql} leaked: {body}");
    }
    // Even past the relation check (admins), the engine refuses files.
    let admin = token(&inst, "root", &["admin"]);
    let (code, body) = query(&admin, "SELECT * FROM '/etc/passwd'");
    assert!(code == 400 || code == 403, "{body}");
    assert!(!body.to_string().contains("root:"), "{body}");
    assert!(!std::path::Path::new("/tmp/pipeline-leak.csv").exists());

    // Listings follow access; a direct read of a hidden table says why.
    let (_, tables) = call("GET", &d.url("/api/tables"), Some(&analyst), None);
    let names: Vec<&str> = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["customers"]);
    let (code, body) = call("GET", &d.url("/api/tables/orders"), Some(&analyst), None);
    assert_eq!(code, 403);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("finance"),
        "{body}"
    );
    let (code, body) = call("GET", &d.url("/api/tables/customers"), Some(&analyst), None);
    assert_eq!(code, 200);
    assert_eq!(body["columns"][1]["name"], "name", "{body}");
    // The apply's run also synced orders: analysts see it without the orders tasks (details of
    // the filtering in security_access.rs).
    let run = body["history"][0]["run_id"].as_str().unwrap().to_string();
    let (code, body) = call(
        "GET",
        &d.url(&format!("/api/runs/{run}")),
        Some(&analyst),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert!(!body.to_string().contains("orders"), "{body}");
    assert!(body["hidden_tasks"].as_u64().unwrap() >= 1, "{body}");
    // A run recorded in the state reports its times as the API does everywhere: RFC 3339, UTC.
    for at in [
        &body["started_at"],
        &body["finished_at"],
        &body["tasks"][0]["started_at"],
    ] {
        let at = at.as_str().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.ends_with('Z'),
            "{at}: {body}"
        );
    }
    let (code, body) = call(
        "GET",
        &d.url(&format!("/api/runs/{run}")),
        Some(&finance),
        None,
    );
    assert_eq!(
        (code, body["trigger"].clone()),
        (200, json!("apply")),
        "{body}"
    );

    // Triggers: naming a table outside one's groups is refused; with no body, only due tables run
    // (these were just synced, and the default schedule is every 6 hours).
    let trigger =
        |tok: &str, body: Option<&str>| call("POST", &d.url("/api/sync/trigger"), Some(tok), body);
    let (code, body) = trigger(&analyst, Some("[\"orders\"]"));
    assert_eq!(code, 403, "{body}");
    let (code, body) = trigger(&analyst, None);
    assert_eq!(
        (code, body["message"].clone()),
        (200, json!("no table is due")),
        "{body}"
    );
    let (code, body) = trigger(&analyst, Some("{\"tables\": 3}"));
    assert_eq!(code, 400, "{body}");

    // Parquet downloads for local copies: only readable tables, revalidated by ETag.
    let (_, manifest) = call("GET", &d.url("/api/manifest"), Some(&analyst), None);
    let files = &manifest["tables"][0]["files"];
    assert_eq!(
        manifest["tables"].as_array().unwrap().len(),
        1,
        "{manifest}"
    );
    assert_eq!(files[0]["url"], "/api/data/customers", "{manifest}");
    let resp = ureq::get(&d.url("/api/data/customers"))
        .set("Authorization", &format!("Bearer {analyst}"))
        .call()
        .unwrap();
    let tag = resp.header("ETag").unwrap().to_string();
    assert_eq!(tag, files[0]["etag"].as_str().unwrap());
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes).unwrap();
    assert_eq!(&bytes[..4], b"PAR1");
    assert_eq!(bytes.len() as u64, files[0]["size_bytes"].as_u64().unwrap());
    let again = ureq::get(&d.url("/api/data/customers"))
        .set("Authorization", &format!("Bearer {analyst}"))
        .set("If-None-Match", &tag)
        .call()
        .unwrap();
    assert_eq!(again.status(), 304);
    let (code, _) = call("GET", &d.url("/api/data/orders"), Some(&analyst), None);
    assert_eq!(code, 403);

    // Tokens: missing, unknown and revoked ones get 401 with a reason.
    let (code, body) = call("GET", &d.url("/api/tables"), None, None);
    assert_eq!(code, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Bearer"),
        "{body}"
    );
    let (code, _) = call("GET", &d.url("/api/tables"), Some("pl_0000"), None);
    assert_eq!(code, 401);
    let list: Value =
        serde_json::from_str(&ok(&inst, &["admin", "token", "list", "--format", "json"])).unwrap();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["user"] == "ann")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&inst, &["admin", "token", "revoke", &id]);
    let (code, body) = call("GET", &d.url("/api/tables"), Some(&analyst), None);
    assert_eq!(code, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );

    // Public routes, as configured.
    let (code, _) = call("GET", &d.url("/health"), None, None);
    assert_eq!(code, 200);
    let (code, text) = call("GET", &d.url("/metrics"), None, None);
    assert_eq!(code, 200);
    let text = text.as_str().unwrap();
    assert!(
        text.contains("# TYPE pipeline_runs_total counter"),
        "{text}"
    );
    assert!(
        text.contains("pipeline_table_last_success_timestamp_seconds{table=\"shop.orders\"}"),
        "{text}"
    );
}

#[test]
fn trigger_conflicts_cli_access_and_sigterm_during_a_run() {
    // Five tables of 200,000 rows synced one task at a time: a full sync takes a moment.
    let inst = Instance::busy(200_000);
    // No scheduled run may start meanwhile (the default, every 6 hours, fires at midnight too):
    // a schedule that fires only on 29 February.
    inst.write_spec(
        "config/instance",
        "name: Test\ntimezone: UTC\ndefaults:\n  concurrency: 1\n  schedule: 0 0 29 2 *\n",
    );
    ok(&inst, &["apply", "--auto-approve", "--queue-only"]);
    let t = token(&inst, "ops", &[]);
    let mut d = Daemon::start(&inst, &[], &[]);

    // The queued tasks run at start; the same tables cannot be triggered meanwhile.
    let running = wait_for(Duration::from_secs(20), "the start-up run", || {
        let s = status(&d, &t);
        s["runs"].as_array().and_then(|r| r.first().cloned())
    });
    let (code, body) = call(
        "POST",
        &d.url("/api/sync/trigger"),
        Some(&t),
        Some("[\"t0\"]"),
    );
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("big.t0"),
        "{body}"
    );
    let (code, body) = call(
        "GET",
        &d.url(&format!("/api/runs/{}", running["id"].as_str().unwrap())),
        Some(&t),
        None,
    );
    assert_eq!((code, body["status"].clone()), (200, json!("running")));
    wait_for(
        Duration::from_secs(60),
        "the start-up run to finish",
        || {
            status(&d, &t)["runs"]
                .as_array()
                .is_some_and(|r| r.is_empty())
                .then_some(())
        },
    );

    // The command line keeps working while the daemon runs.
    let out = ok(
        &inst,
        &["query", "SELECT count(*) AS n FROM t1", "--format", "csv"],
    );
    assert_eq!(out, "n\n200000\n");
    ok(&inst, &["plan"]);
    let report: Value = serde_json::from_str(&ok(&inst, &["status", "--format", "json"])).unwrap();
    assert_eq!(
        report["daemon"]["url"].as_str(),
        Some(d.base.as_str()),
        "{report}"
    );
    assert!(ok(&inst, &["status"]).contains("Daemon: running"));
    ok(&inst, &["run", "--table", "t3", "--full-refresh"]);
    // Explicit lists ignore schedules: an object body and a plain list both start runs.
    let (code, body) = call(
        "POST",
        &d.url("/api/sync/trigger"),
        Some(&t),
        Some("{\"tables\": [\"t2\"]}"),
    );
    assert_eq!(code, 202, "{body}");
    let id = body["run_id"].as_str().unwrap().to_string();
    let done = wait_for(Duration::from_secs(60), "the triggered run", || {
        let (_, r) = call("GET", &d.url(&format!("/api/runs/{id}")), Some(&t), None);
        (r["status"] != "running").then_some(r)
    });
    assert_eq!(done["status"], "ok", "{done}");
    // A shell apply while the daemon runs (the watcher may apply the same change: either wins).
    inst.write_spec(
        "registry/big",
        &std::fs::read_to_string(inst.path().join("registry/big.yaml"))
            .unwrap()
            .replace(
                "source_table: t4\n",
                "source_table: t4\n    description: Fourth\n",
            ),
    );
    ok(&inst, &["apply", "--auto-approve"]);

    // SIGTERM in the middle of a full sync: the daemon exits 0 and analytics stays whole.
    let (code, body) = call(
        "POST",
        &d.url("/api/sync/trigger"),
        Some(&t),
        Some("{\"source\": \"big\"}"),
    );
    assert_eq!(code, 202, "{body}");
    wait_for(Duration::from_secs(20), "a task to start", || {
        let (_, r) = call(
            "GET",
            &d.url(&format!("/api/runs/{}", body["run_id"].as_str().unwrap())),
            Some(&t),
            None,
        );
        (r["status"] == "running").then_some(())
    });
    let exit = d.stop(Duration::from_secs(120));
    assert!(exit.success(), "{exit:?}; log:\n{}", d.log());
    let log = d.log();
    assert!(log.contains("shutting down"), "{log}");
    let report: Value = serde_json::from_str(&ok(&inst, &["status", "--format", "json"])).unwrap();
    assert!(
        report["daemon"].is_null(),
        "a stopped daemon is not reported: {report}"
    );
    assert!(log.contains("\"daemon stopped\""), "{log}");
    let a = inst.analytics();
    for i in 0..5 {
        let n: i64 = a
            .query_row(&format!("SELECT count(*) FROM t{i}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 200_000);
    }
}

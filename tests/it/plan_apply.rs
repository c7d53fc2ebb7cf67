//! `plan`, `apply`, `status` and `history` on real state files, including concurrent and killed
//! processes.

use crate::common::{pipeline, Fmt, Instance};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn change_ids(plan: &Value) -> Vec<(String, String)> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                format!(
                    "{} {}",
                    c["kind"].as_str().unwrap(),
                    c["id"].as_str().unwrap()
                ),
                c["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn fresh_instance_plans_everything_applies_then_has_no_changes() {
    for fmt in [Fmt::Yaml, Fmt::Toml] {
        let inst = Instance::new(fmt);
        let out = inst
            .cmd()
            .args(["plan", "--detailed-exitcode"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let text = stdout(&out);
        for line in [
            "+ settings instance",
            "+ source shop",
            "+ table shop.customers",
            "+ table shop.orders",
            "+ transform daily",
            "+ metric sales/order_count",
            "extract shop.orders",
            "publish analytics",
            "Plan: 6 to add, 0 to change, 0 to destroy.",
        ] {
            assert!(text.contains(line), "`{line}` missing from:\n{text}");
        }
        assert!(!inst.state_path().exists(), "plan never creates the state");

        let out = inst
            .cmd()
            .args(["apply", "--auto-approve"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out)
            .contains("Apply complete! 6 added, 0 changed, 0 destroyed. State serial 1."));

        let out = inst
            .cmd()
            .args(["plan", "--detailed-exitcode"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(stdout(&out).contains("No changes."), "{}", stdout(&out));

        assert_eq!(inst.state_int("SELECT count(*) FROM table_registry"), 2);
        assert_eq!(inst.state_int("SELECT count(*) FROM apply_log"), 1);
        assert_eq!(
            inst.state_int("SELECT count(*) FROM audit_log WHERE action = 'create table'"),
            2
        );
        // Apply ran the tasks it queued: nothing is left pending, both tables are synced.
        assert_eq!(inst.state_int("SELECT count(*) FROM pending_tasks"), 0);
        assert_eq!(
            inst.state_int("SELECT count(*) FROM sync_state WHERE status = 'ok'"),
            2
        );
        assert!(inst
            .path()
            .join("data/analytics/analytics.duckdb")
            .is_file());
        // The metric was checked against the published schema, and the run recorded.
        assert_eq!(
            inst.state_int(
                "SELECT count(*) FROM metric_definitions WHERE last_check_status = 'ok' AND last_check_at IS NOT NULL"
            ),
            1
        );
        assert_eq!(
            inst.state_int("SELECT count(*) FROM runs WHERE trigger = 'apply' AND status = 'ok'"),
            1
        );
    }
}

/// A no-op plan reads `data/state/registry.digest` (written by apply) instead of the state; any
/// difference sends it to the state, and the digest follows every apply.
#[test]
fn a_no_op_plan_reads_the_registry_digest_and_changes_still_show() {
    let inst = Instance::new(Fmt::Yaml);
    inst.apply();
    let digest = inst.path().join("data/state/registry.digest");
    assert!(digest.is_file(), "apply writes the digest");
    let plan_json = |inst: &Instance| -> Value {
        let out = inst
            .cmd()
            .args(["plan", "--format", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let plan = plan_json(&inst);
    assert_eq!(change_ids(&plan), Vec::<(String, String)>::new());
    assert_eq!(plan["state_serial"], 1);
    // The digest is what the plan read: a state file it cannot open changes nothing for a no-op
    // plan (the documented edge: replacing the state by hand means removing the digest too).
    let state = inst.state_path();
    let saved = std::fs::read(&state).unwrap();
    std::fs::write(&state, b"not a database").unwrap();
    assert_eq!(plan_json(&inst)["state_serial"], 1);
    std::fs::remove_file(&digest).unwrap();
    let out = inst.cmd().arg("plan").output().unwrap();
    assert!(
        !out.status.success(),
        "without the digest the plan reads the state"
    );
    std::fs::write(&state, saved).unwrap();

    // A changed spec is planned against the state, digest or not.
    let metric = inst.path().join("metrics/sales/order_count.yaml");
    let text = std::fs::read_to_string(&metric).unwrap();
    let changed = text.replace("Orders placed", "Orders placed, all of them");
    std::fs::write(&metric, &changed).unwrap();
    let plan = plan_json(&inst);
    assert_eq!(plan["changes"].as_array().unwrap().len(), 1, "{plan}");
    assert!(!digest.exists(), "nothing wrote it meanwhile");
    // A no-op apply writes a missing digest (under the state lock); a real one rewrites it.
    std::fs::write(&metric, &text).unwrap();
    inst.apply();
    assert!(digest.is_file());
    std::fs::write(&metric, &changed).unwrap();
    inst.cmd()
        .args(["apply", "--auto-approve", "--queue-only"])
        .assert()
        .success();
    let plan = plan_json(&inst);
    assert_eq!(change_ids(&plan), Vec::<(String, String)>::new());
    assert_eq!(plan["state_serial"], 2, "the digest follows the apply");
}

#[test]
fn editing_one_field_shows_exactly_that_field() {
    let inst = Instance::new(Fmt::Yaml);
    inst.apply();
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    description: Orders placed\n  - source: shop\n    source_table: customers\n",
    );
    let plan = inst.plan(&[]);
    assert_eq!(
        change_ids(&plan),
        vec![("table shop.orders".to_string(), "update".to_string())]
    );
    let fields = &plan["changes"][0]["fields"];
    assert_eq!(fields.as_array().unwrap().len(), 1, "{fields:#}");
    assert_eq!(fields[0]["field"], "description");
    assert_eq!(fields[0]["old"], Value::Null);
    assert_eq!(fields[0]["new"], "Orders placed");
    assert_eq!(
        plan["summary"],
        serde_json::json!({"add": 0, "change": 1, "destroy": 0, "breaking": 0})
    );
    // Only the views change: no extract.
    let tasks: Vec<&str> = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(tasks[..2], ["rebuild:shop", "publish:analytics"]);
    assert!(!tasks.iter().any(|t| t.starts_with("extract")), "{tasks:?}");

    let human = stdout(&inst.cmd().arg("plan").output().unwrap());
    assert!(
        human.contains("~ description: (unset) → \"Orders placed\""),
        "{human}"
    );
    assert!(human.contains("Plan: 0 to add, 1 to change, 0 to destroy."));

    inst.apply();
    let registered: String = inst
        .state()
        .query_row(
            "SELECT description FROM table_registry WHERE id = 'shop.orders'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(registered, "Orders placed");
}

#[test]
fn instance_settings_and_map_entries_show_in_the_plan() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    columns:\n      order_id: The order\n      \
         amount: Order total\n  - source: shop\n    source_table: customers\n",
    );
    inst.apply();
    // The time zone and a default change; a server limit is set for the first time.
    inst.write_spec(
        "config/instance",
        "name: Test\ntimezone: Europe/Prague\ndefaults:\n  concurrency: 7\nserver:\n  query_max_rows: 500\n",
    );
    // One column's description changes, one is added.
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    columns:\n      order_id: The order\n      \
         amount: Total in EUR\n      customer_id: Who ordered\n  - source: shop\n    source_table: customers\n",
    );
    let plan = inst.plan(&[]);
    assert_eq!(
        change_ids(&plan),
        [
            ("settings instance".to_string(), "update".to_string()),
            ("table shop.orders".to_string(), "update".to_string())
        ]
    );
    let fields = |i: usize| -> Vec<(String, Value, Value)> {
        plan["changes"][i]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let name = match f["key"].as_str() {
                    Some(k) => format!("{}.{k}", f["field"].as_str().unwrap()),
                    None => f["field"].as_str().unwrap().to_string(),
                };
                (name, f["old"].clone(), f["new"].clone())
            })
            .collect()
    };
    assert_eq!(
        fields(0),
        [
            ("timezone".into(), json!("UTC"), json!("Europe/Prague")),
            ("defaults.concurrency".into(), json!(4), json!(7)),
            ("server.query_max_rows".into(), json!(10000), json!(500)),
        ]
    );
    assert_eq!(
        fields(1),
        [
            (
                "columns.amount".into(),
                json!("Order total"),
                json!("Total in EUR")
            ),
            (
                "columns.customer_id".into(),
                Value::Null,
                json!("Who ordered")
            ),
        ]
    );
    // Settings need no task; the column descriptions rebuild the source's views.
    let tasks: Vec<&str> = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(tasks[..2], ["rebuild:shop", "publish:analytics"]);

    let human = stdout(&inst.cmd().arg("plan").output().unwrap());
    for line in [
        "~ settings instance  config/instance.yaml",
        "~ timezone: \"UTC\" → \"Europe/Prague\"",
        "~ defaults.concurrency: 4 → 7",
        "~ columns.amount: \"Order total\" → \"Total in EUR\"",
        "+ columns.customer_id = \"Who ordered\"",
    ] {
        assert!(human.contains(line), "`{line}` missing from:\n{human}");
    }
    inst.apply();
    let after = inst.plan(&[]);
    assert_eq!(change_ids(&after), []);
    assert_eq!(
        inst.state_int("SELECT count(*) FROM audit_log WHERE action = 'update settings'"),
        1
    );
}

#[test]
fn changes_that_need_new_data_are_replacements_and_deletes_keep_data_unless_purged() {
    let inst = Instance::new(Fmt::Yaml);
    inst.apply();
    let parquet = inst
        .path()
        .join("data/extracts/shop/data/customers.parquet");
    std::fs::create_dir_all(parquet.parent().unwrap()).unwrap();
    std::fs::write(&parquet, b"PAR1").unwrap();
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    sync:\n      mode: incremental\n      cursor: updated_at\n      primary_key: [order_id]\n",
    );
    let plan = inst.plan(&[]);
    assert_eq!(
        change_ids(&plan),
        vec![
            ("table shop.customers".to_string(), "delete".to_string()),
            ("table shop.orders".to_string(), "replace".to_string()),
        ]
    );
    let fields = plan["changes"][1]["fields"].as_array().unwrap();
    assert!(
        fields.iter().all(|f| f["forces_replace"] == true),
        "{fields:?}"
    );
    assert_eq!(
        plan["summary"],
        serde_json::json!({"add": 1, "change": 0, "destroy": 2, "breaking": 0})
    );
    let human = stdout(&inst.cmd().arg("plan").output().unwrap());
    assert!(human.contains("-/+ table shop.orders"), "{human}");
    assert!(
        human.contains("~ sync_mode: \"full\" → \"incremental\"  # forces replacement"),
        "{human}"
    );
    assert!(human.contains("- table shop.customers"), "{human}");

    inst.apply();
    assert!(
        parquet.exists(),
        "data of a deleted table is kept by default"
    );
    assert_eq!(inst.state_int("SELECT count(*) FROM table_registry"), 1);

    // Registering it again and deleting it with --purge removes the file.
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    sync:\n      mode: incremental\n      cursor: updated_at\n      primary_key: [order_id]\n  - source: shop\n    source_table: customers\n",
    );
    inst.apply();
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    sync:\n      mode: incremental\n      cursor: updated_at\n      primary_key: [order_id]\n",
    );
    let out = inst
        .cmd()
        .args(["apply", "--auto-approve", "--purge"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !parquet.exists(),
        "--purge removed the deleted table's data"
    );
}

#[test]
fn saved_plans_apply_exactly_and_stale_ones_are_refused() {
    let inst = Instance::new(Fmt::Yaml);
    let saved = inst.path().join("plan.json");
    let out = inst
        .cmd()
        .args(["plan", "--out"])
        .arg(&saved)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    assert_eq!(plan["format_version"], 1);
    assert_eq!(plan["state_serial"], 0);
    assert!(plan["spec_digest"].as_str().unwrap().starts_with("sha256:"));

    // A saved plan is applied without a question, even in CI.
    let out = inst
        .cmd()
        .env("CI", "true")
        .arg("apply")
        .arg(&saved)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(inst.state_int("SELECT count(*) FROM apply_log"), 1);

    // The same file again: the state moved on.
    let out = inst.cmd().arg("apply").arg(&saved).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("stale plan"), "{}", stderr(&out));
    assert!(stderr(&out).contains("serial 0"), "{}", stderr(&out));

    // A plan made, then the specs edited: refused for the specs.
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    description: one\n",
    );
    inst.cmd()
        .args(["plan", "--out"])
        .arg(&saved)
        .assert()
        .success();
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    description: two\n",
    );
    let out = inst.cmd().arg("apply").arg(&saved).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the specs changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        inst.state_int("SELECT count(*) FROM apply_log"),
        1,
        "nothing written"
    );

    // Comments and formatting do not make a plan stale.
    inst.write_spec(
        "registry/shop",
        "# reviewed\ntables:\n  - {source: shop, source_table: orders, description: two}\n",
    );
    inst.cmd()
        .args(["plan", "--out"])
        .arg(&saved)
        .assert()
        .success();
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    description: two   # same value\n",
    );
    inst.cmd().arg("apply").arg(&saved).assert().success();

    // Not a plan at all.
    std::fs::write(&saved, "{\"format_version\": 99}").unwrap();
    let out = inst.cmd().arg("apply").arg(&saved).output().unwrap();
    assert!(
        stderr(&out).contains("format version 99"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn apply_asks_refuses_in_ci_and_accepts_only_yes() {
    let inst = Instance::new(Fmt::Yaml);
    let out = inst.cmd().env("CI", "true").arg("apply").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--auto-approve"), "{}", stderr(&out));
    assert!(!inst.state_path().exists(), "nothing written");

    let out = inst
        .cmd()
        .arg("apply")
        .write_stdin("no\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("Only 'yes' will be accepted"));
    assert!(stderr(&out).contains("apply cancelled"), "{}", stderr(&out));

    let out = inst
        .cmd()
        .arg("apply")
        .write_stdin("yes\n")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Plan: 6 to add"),
        "the plan is shown before the question"
    );
    assert_eq!(inst.state_int("SELECT count(*) FROM table_registry"), 2);
}

#[test]
fn target_narrows_the_plan() {
    let inst = Instance::new(Fmt::Yaml);
    let plan = inst.plan(&["--target", "shop.orders"]);
    assert_eq!(
        change_ids(&plan),
        vec![("table shop.orders".to_string(), "create".to_string())]
    );
    assert_eq!(plan["targets"], serde_json::json!(["shop.orders"]));
    // A source selects itself, its tables and its transforms.
    let plan = inst.plan(&["--target", "shop"]);
    assert_eq!(change_ids(&plan).len(), 4);

    let out = inst
        .cmd()
        .args(["plan", "--target", "shop.ordrs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("did you mean `shop.orders`?"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn invalid_specs_plan_nothing_and_apply_needs_env_vars() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: nowhere\n    source_table: x\n",
    );
    let out = inst
        .cmd()
        .args(["plan", "--detailed-exitcode"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("registry/shop.yaml:2:"),
        "{}",
        stderr(&out)
    );

    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec(
        "pipelines/db",
        "type: keboola\nconnection:\n  url: http://127.0.0.1:9\n  token_env: PIPELINE_TEST_UNSET_PASSWORD\n",
    );
    let out = inst.cmd().args(["plan"]).output().unwrap();
    assert!(
        out.status.success(),
        "an unset variable is a warning for plan"
    );
    let out = inst
        .cmd()
        .env_remove("PIPELINE_TEST_UNSET_PASSWORD")
        .args(["apply", "--auto-approve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("PIPELINE_TEST_UNSET_PASSWORD"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("apply needs every environment variable"));

    // Set, it applies; the value never reaches the output or the state.
    let secret = "s3cr3t-value-never-shown";
    let out = inst
        .cmd()
        .env("PIPELINE_TEST_UNSET_PASSWORD", secret)
        .args(["apply", "--auto-approve"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains(secret) && !stderr(&out).contains(secret));
    let state = std::fs::read(inst.state_path()).unwrap();
    assert!(!String::from_utf8_lossy(&state).contains(secret));
}

#[test]
fn status_and_history_report_the_registry() {
    let inst = Instance::new(Fmt::Yaml);
    let out = inst.cmd().arg("status").output().unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("No state yet"), "{}", stdout(&out));

    inst.apply();
    let out = inst
        .cmd()
        .args(["status", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["serial"], 1);
    assert_eq!(status["specs"]["state"], "in_sync");
    assert_eq!(status["tables"].as_array().unwrap().len(), 2);
    let orders = &status["tables"][1];
    assert_eq!(orders["id"], "shop.orders");
    assert_eq!(orders["schedule"], "0 */6 * * *");
    assert!(orders["next_run"].as_str().unwrap().ends_with('Z'));
    // Apply synced the tables it registered.
    assert!(orders["last_sync"].as_str().unwrap().ends_with('Z'));
    assert_eq!(orders["rows"], 3);
    assert_eq!(status["pending_tasks"], serde_json::json!([]));

    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n",
    );
    let text = stdout(&inst.cmd().arg("status").output().unwrap());
    assert!(
        text.contains("0 to add, 0 to change, 1 to destroy"),
        "{text}"
    );
    inst.apply();

    let out = inst
        .cmd()
        .args(["history", "--format", "json"])
        .output()
        .unwrap();
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    let applies = history["applies"].as_array().unwrap();
    assert_eq!(applies.len(), 2);
    assert_eq!(applies[0]["serial"], 2);
    assert_eq!(applies[0]["destroy"], 1);
    assert_eq!(applies[1]["add"], 6);
    assert!(!applies[0]["who"].as_str().unwrap().is_empty());
    let out = inst
        .cmd()
        .args(["history", "--table", "shop.customers", "--format", "json"])
        .output()
        .unwrap();
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        history["applies"].as_array().unwrap().len(),
        2,
        "created, then deleted"
    );
    let syncs = history["syncs"].as_array().unwrap();
    assert!(
        syncs
            .iter()
            .any(|s| s["task"] == "extract:shop.customers" && s["status"] == "ok"),
        "{syncs:?}"
    );
    let text = stdout(&inst.cmd().arg("history").output().unwrap());
    assert!(text.contains("+6 ~0 -0"), "{text}");
    // A view name works like the id; an unknown name is an error that suggests the closest.
    let by_view = inst
        .cmd()
        .args(["history", "--table", "ORDERS", "--format", "json"])
        .output()
        .unwrap();
    assert!(by_view.status.success());
    let history: Value = serde_json::from_slice(&by_view.stdout).unwrap();
    assert!(history["syncs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["table_id"] == "shop.orders"));
    let unknown = inst
        .cmd()
        .args(["history", "--table", "shop.ordrs"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("did you mean `shop.orders`?"), "{err}");
}

fn binary() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("pipeline")
}

/// An `apply` that stops at its confirmation question, holding the state lock.
fn waiting_apply(inst: &Instance) -> Child {
    let child = Command::new(binary())
        .arg("--dir")
        .arg(inst.path())
        .arg("apply")
        .env_remove("CI")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = inst.path().join("data/state/state.lock");
    let needle = format!("\"pid\":{}", child.id());
    let started = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&needle)) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "apply never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn concurrent_applies_never_both_write() {
    let inst = Instance::new(Fmt::Yaml);
    let mut first = waiting_apply(&inst);

    // A second apply cannot get the lock, and names who has it.
    let out = inst
        .cmd()
        .args(["apply", "--auto-approve", "--lock-timeout", "300ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("held by pid {}", first.id())),
        "{err}"
    );
    assert!(err.contains("since "), "{err}");

    // A third waits, then gets the lock after the first finished: by then there is nothing to do.
    let mut third = Command::new(binary())
        .arg("--dir")
        .arg(inst.path())
        .args(["apply", "--auto-approve", "--lock-timeout", "60s"])
        .env_remove("CI")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Answer the first only once the third is really waiting for the lock.
    let mut third_err = third.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        let mut told = false;
        while let Ok(n) = std::io::Read::read(&mut third_err, &mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if !told && String::from_utf8_lossy(&seen).contains("Waiting up to 60s") {
                let _ = tx.send(());
                told = true;
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the third apply waits for the lock");
    first.stdin.take().unwrap().write_all(b"yes\n").unwrap();
    assert!(first.wait().unwrap().success());
    let out = third.wait_with_output().unwrap();
    let err = reader.join().unwrap();
    assert!(out.status.success(), "{err}");
    assert!(stdout(&out).contains("No changes."), "{}", stdout(&out));
    assert_eq!(inst.state_int("SELECT count(*) FROM apply_log"), 1);
    assert_eq!(inst.state_int("SELECT max(serial) FROM apply_log"), 1);
}

#[test]
fn a_lock_left_by_a_killed_apply_is_taken_over() {
    let inst = Instance::new(Fmt::Yaml);
    let mut holder = waiting_apply(&inst);
    let pid = holder.id();
    holder.kill().unwrap(); // SIGKILL: no cleanup runs
    holder.wait().unwrap();
    let out = inst
        .cmd()
        .args(["apply", "--auto-approve", "--lock-timeout", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("took over the state lock left by pid {pid}")),
        "{}",
        stderr(&out)
    );
}

/// Writes a registry of `n` tables whose descriptions all say `version`.
fn bulk_registry(inst: &Instance, n: usize, version: usize) {
    let mut text = String::from("tables:\n");
    for i in 0..n {
        text.push_str(&format!(
            "  - source: shop\n    source_table: t{i}\n    description: version {version}\n"
        ));
    }
    inst.write_spec("registry/bulk", &text);
}

/// The state after a kill: readable by a new process and consistent (each apply all or nothing).
fn assert_consistent(inst: &Instance, n: usize) {
    let out = inst
        .cmd()
        .args(["status", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "state unreadable after a kill: {}",
        stderr(&out)
    );
    if !inst.state_path().exists() {
        return;
    }
    let conn = inst.state();
    let q = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let serial: i64 = conn
        .query_row(
            "SELECT value FROM state_meta WHERE key = 'serial'",
            [],
            |r| r.get::<_, String>(0),
        )
        .map(|s| s.parse().unwrap())
        .unwrap_or(0);
    assert_eq!(
        serial,
        q("SELECT count(*) FROM apply_log"),
        "serial matches apply_log"
    );
    let bulk = q("SELECT count(*) FROM table_registry WHERE id LIKE 'shop.t%'");
    assert!(
        bulk == 0 || bulk == n as i64,
        "half an apply is visible: {bulk} of {n} tables"
    );
    assert!(
        q("SELECT count(DISTINCT description) FROM table_registry WHERE id LIKE 'shop.t%'") <= 1,
        "two versions of the descriptions are mixed"
    );
}

#[test]
fn killing_apply_at_any_point_leaves_a_consistent_state_that_converges() {
    const N: usize = 300;
    let inst = Instance::new(Fmt::Yaml);
    bulk_registry(&inst, N, 0);
    // The registry write is what is under test: --queue-only leaves the tables' (missing) data alone.
    let register = || {
        inst.cmd()
            .args(["apply", "--auto-approve", "--queue-only"])
            .assert()
            .success();
    };
    // How long an apply of N tables takes here, to spread the kills over it.
    let started = Instant::now();
    register();
    let full = started.elapsed();
    for k in 0..12u32 {
        bulk_registry(&inst, N, k as usize + 1);
        let mut child = Command::new(binary())
            .arg("--dir")
            .arg(inst.path())
            .args(["apply", "--auto-approve", "--queue-only"])
            .env_remove("CI")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full * k / 10);
        let _ = child.kill();
        child.wait().unwrap();
        assert_consistent(&inst, N);
    }
    // A rerun converges: the last specs are applied and nothing is left to do.
    register();
    assert_consistent(&inst, N);
    let out = inst
        .cmd()
        .args(["plan", "--detailed-exitcode"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let description: String = inst
        .state()
        .query_row(
            "SELECT any_value(description) FROM table_registry WHERE id = 'shop.t0'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(description, "version 12");
}

#[test]
fn plan_and_apply_help_teach() {
    for cmd in ["plan", "apply", "status", "history"] {
        let out = pipeline().args([cmd, "--help"]).output().unwrap();
        let text = stdout(&out);
        assert!(text.contains("Examples:"), "{cmd} --help has no examples");
    }
    let text = stdout(&pipeline().args(["plan", "--help"]).output().unwrap());
    assert!(
        text.contains("--detailed-exitcode") && text.contains("forces"),
        "{text}"
    );
}

#[test]
fn apply_target_applies_only_the_named_objects_changes() {
    let inst = Instance::new(Fmt::Yaml);
    inst.cmd()
        .args(["apply", "--auto-approve", "--queue-only", "-q"])
        .assert()
        .success();
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    description: Orders\n  - source: shop\n    source_table: customers\n    description: Customers\n",
    );
    let changed = |plan: &Value| -> Vec<String> {
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(changed(&inst.plan(&[])), ["shop.customers", "shop.orders"]);
    inst.cmd()
        .args([
            "apply",
            "--auto-approve",
            "--queue-only",
            "-q",
            "--target",
            "orders",
        ])
        .assert()
        .success();
    // Only the targeted table was applied; the other change is still to come.
    assert_eq!(changed(&inst.plan(&[])), ["shop.customers"]);
}

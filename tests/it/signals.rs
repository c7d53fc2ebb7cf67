//! Stopping a run: SIGTERM (or Ctrl-C) starts nothing new, lets running tasks finish, and publishes
//! nothing; the next run converges.

use crate::common::Instance;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn built_at(inst: &Instance) -> String {
    let c = duckdb::Connection::open_with_flags(
        inst.path().join("data/analytics/analytics.duckdb"),
        duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap(),
    )
    .unwrap();
    c.query_row(
        "SELECT value FROM _pipeline.info WHERE key = 'built_at'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn sigterm_stops_starting_tasks_and_publishes_nothing() {
    let inst = Instance::busy(100_000);
    inst.apply();
    let before = built_at(&inst);
    std::thread::sleep(std::time::Duration::from_millis(1100)); // built_at has second precision

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
    let mut events = Vec::new();
    // Signal as soon as the first task has finished: the others are still to come.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        let first_done = event["event"] == "task_finished";
        events.push(event);
        if first_done {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            break;
        }
    }
    for line in lines {
        events.push(serde_json::from_str(&line.unwrap()).unwrap());
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "a stopped run is not a success");
    assert!(
        events.iter().any(|e| e["event"] == "cancelling"),
        "{events:?}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["status"], "cancelled");
    assert_eq!(last["published"], false);
    let cancelled = events
        .iter()
        .filter(|e| e["event"] == "task_finished" && e["status"] == "cancelled")
        .count();
    assert!(
        cancelled >= 3,
        "tasks not yet started were cancelled: {events:?}"
    );

    // The live file is the previous one, whole; no staged file is left behind.
    assert_eq!(built_at(&inst), before);
    assert!(!inst
        .path()
        .join("data/analytics/analytics.duckdb.tmp")
        .exists());
    assert_eq!(
        inst.state_int("SELECT count(*) FROM runs WHERE status = 'cancelled'"),
        1
    );
    // The next run converges: everything synced, every table whole.
    inst.cmd().args(["run", "-q"]).assert().success();
    let out = inst
        .cmd()
        .args([
            "query",
            "--format",
            "csv",
            "select count(*) from t0 union all select count(*) from t4",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "count_star()\n100000\n100000\n"
    );
    assert_eq!(
        inst.state_int("SELECT count(*) FROM sync_state WHERE status = 'ok' AND rows = 100000"),
        5
    );
}

#[test]
fn a_second_signal_aborts_at_once_with_status_130_and_publishes_nothing() {
    let inst = Instance::busy(100_000);
    inst.apply();
    let before = built_at(&inst);
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
    for line in lines.by_ref() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let term = || {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        };
        // The first signal stops starting tasks; once the run says so, the second means "now"
        // (waiting for that event keeps the two from being merged into one).
        if event["event"] == "task_started" {
            term();
        }
        if event["event"] == "cancelling" {
            term();
            break;
        }
    }
    // Read to the end, so the run never writes into a closed pipe.
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}\n{rest:?}");
    assert!(
        !rest.iter().any(|l| l.contains("run_finished")),
        "an aborted run reports no end: {rest:?}"
    );
    assert!(stderr.contains("Aborted."), "{stderr}");
    assert_eq!(built_at(&inst), before, "nothing was published");
}

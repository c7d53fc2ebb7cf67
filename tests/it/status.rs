//! `pipeline status` tells the whole truth: each table's freshness against its schedule, and why a
//! pending task is still pending (the error of its last attempt), in JSON and for people.

use crate::common::{Fmt, Instance};
use serde_json::Value;

#[test]
fn status_shows_freshness_and_the_errors_of_failed_pending_tasks() {
    let inst = Instance::new(Fmt::Yaml);
    // refunds has no CSV file: its extract fails and stays pending.
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    schedule: \"@yearly\"\n  - source: shop\n    source_table: refunds\n",
    );
    // The apply runs what it queued; refunds fails, so it exits non-zero.
    let out = inst
        .cmd()
        .args(["apply", "--auto-approve"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    let out = inst
        .cmd()
        .args(["status", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    let table = |name: &str| {
        s["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {s:#}"))
    };
    // Synced this year: the yearly schedule has not fired since.
    assert_eq!(table("orders")["freshness"]["state"], "fresh", "{s:#}");
    let refunds = table("refunds");
    assert_eq!(refunds["freshness"]["state"], "never_synced", "{refunds}");
    assert_eq!(refunds["last_status"], "error", "{refunds}");
    let next = table("orders")["next_run"].as_str().unwrap().to_string();
    assert!(next.ends_with("-01-01T00:00:00.000Z"), "{next}");

    let pending = s["pending_tasks"].as_array().unwrap();
    let task = pending
        .iter()
        .find(|p| p["task"] == "extract:shop.refunds")
        .unwrap_or_else(|| panic!("refunds is pending: {s:#}"));
    assert_eq!(task["last_attempt"]["status"], "failed", "{task}");
    let error = task["last_attempt"]["error"].as_str().unwrap().to_string();
    assert!(error.contains("refunds"), "{error}");

    let out = inst.cmd().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("freshness"), "{text}");
    assert!(text.contains("never synced"), "{text}");
    assert!(text.contains("fresh"), "{text}");
    // The pending task's row says it failed, and its error follows the table.
    assert!(text.contains("extract:shop.refunds (failed): "), "{text}");
}

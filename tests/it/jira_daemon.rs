//! A `type: jira` source end to end through a real daemon and the fake Jira Cloud site
//! (tests/support/fake_jira.rs): signed webhooks in, rows in analytics.duckdb out; refused
//! deliveries; duplicates and disorder; a storm; SIGKILL mid-storm healed by the consistency check;
//! `pipeline jira backfill`.

use crate::common::daemon::{call, token, wait_for, Daemon};
use crate::common::Instance;
use crate::jira::fake_jira::{self, text_adf, FakeJira};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TOKEN_ENV: &str = "PIPELINE_TEST_JIRA_API_TOKEN";
const SECRET_ENV: &str = "PIPELINE_TEST_JIRA_WEBHOOK_SECRET";

/// An instance with jira source `tracker` (signed webhooks; its six tables registered) and `open`
/// (no secret configured, no tables).
fn instance(fake: &FakeJira) -> Instance {
    let source = |secret: bool| {
        format!(
            "type: jira\nconnection:\n  url: {}\n  email: {}\n  token_env: {TOKEN_ENV}\n{}\
             schedule: \"0 0 1 1 *\"\n",
            fake.url(),
            fake.email(),
            if secret {
                format!("  webhook_secret_env: {SECRET_ENV}\n")
            } else {
                String::new()
            }
        )
    };
    let mut registry = String::from("tables:\n");
    for t in [
        "issues",
        "comments",
        "changelog",
        "issuelinks",
        "remote_links",
        "attachments",
    ] {
        registry.push_str(&format!("  - source: tracker\n    source_table: {t}\n"));
    }
    let (tracker, open) = (source(true), source(false));
    let inst = Instance::from_files(&[
        ("config/instance.yaml", "name: Jira\ntimezone: UTC\n"),
        ("pipelines/tracker.yaml", tracker.as_str()),
        ("pipelines/open.yaml", open.as_str()),
        ("registry/jira.yaml", registry.as_str()),
    ]);
    inst.cmd()
        .env(TOKEN_ENV, fake.token())
        .env(SECRET_ENV, fake_jira::FAKE_WEBHOOK_SECRET)
        .args(["apply", "--auto-approve"])
        .assert()
        .success();
    inst
}

fn env(fake: &FakeJira) -> Vec<(&'static str, String)> {
    vec![
        (TOKEN_ENV, fake.token().to_string()),
        (SECRET_ENV, fake_jira::FAKE_WEBHOOK_SECRET.to_string()),
    ]
}

fn start(inst: &Instance, fake: &FakeJira) -> Daemon {
    let env = env(fake);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Daemon::start(inst, &[], &env)
}

/// One column of a query on the published analytics file, as text (empty when it is not there yet).
fn rows(inst: &Instance, sql: &str) -> Vec<String> {
    if !inst.analytics_path().is_file() {
        return Vec::new();
    }
    let Ok(conn) = duckdb::Connection::open_with_flags(
        inst.analytics_path(),
        duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap(),
    ) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(sql) else {
        return Vec::new();
    };
    stmt.query_map([], |r| r.get::<_, Option<String>>(0))
        .map(|rows| rows.map(|r| r.ok().flatten().unwrap_or_default()).collect())
        .unwrap_or_default()
}

/// Waits until `sql` answers `expected` in analytics.duckdb.
fn wait_rows(inst: &Instance, sql: &str, expected: &[&str], within: Duration) {
    let started = Instant::now();
    loop {
        let got = rows(inst, sql);
        if got == expected {
            return;
        }
        if started.elapsed() > within {
            panic!("`{sql}`: expected {expected:?}, still {got:?} after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn post(d: &Daemon, source: &str, body: &[u8], signature: Option<&str>) -> (u16, Value) {
    let mut req = ureq::post(&d.url(&format!("/webhooks/jira/{source}")))
        .timeout(Duration::from_secs(30))
        .set("Content-Type", "application/json");
    if let Some(s) = signature {
        req = req.set("X-Hub-Signature", s);
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn audit_lines(inst: &Instance) -> Vec<Value> {
    std::fs::read_to_string(inst.path().join("data/state/jira/tracker.webhooks.ndjson"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn jira_webhooks_create_update_comment_delete_reach_analytics() {
    let fake = FakeJira::start();
    let inst = instance(&fake);
    let d = start(&inst, &fake);
    fake.send_webhooks_to(Some(&d.url("/webhooks/jira/tracker")));
    let within = Duration::from_secs(20);

    let key = fake.create_issue("OPS", "Disk full on db-1", "2024-03-05T10:00:00.000+0000");
    wait_rows(
        &inst,
        &format!(
            "SELECT summary || '|' || issue_created_month FROM issues WHERE issue_key = '{key}'"
        ),
        &["Disk full on db-1|2024-03"],
        within,
    );
    fake.update_summary(&key, "Disk full on db-1 (again)");
    wait_rows(
        &inst,
        &format!("SELECT summary FROM issues WHERE issue_key = '{key}'"),
        &["Disk full on db-1 (again)"],
        within,
    );
    let comment = fake.add_comment(&key, text_adf("rotated the logs"));
    wait_rows(
        &inst,
        &format!("SELECT body FROM comments WHERE issue_key = '{key}'"),
        &["rotated the logs"],
        within,
    );
    // The changelog has the summary edit; the issue still appears once.
    wait_rows(
        &inst,
        &format!("SELECT to_string FROM changelog WHERE issue_key = '{key}' AND field = 'summary'"),
        &["Disk full on db-1 (again)"],
        within,
    );
    fake.delete_comment(&key, &comment);
    wait_rows(
        &inst,
        &format!("SELECT count(*)::VARCHAR FROM comments WHERE issue_key = '{key}'"),
        &["0"],
        within,
    );
    let other = fake.create_issue("OPS", "Second", "2024-03-06T10:00:00.000+0000");
    fake.delete_issue(&key);
    for table in [
        "issues",
        "comments",
        "changelog",
        "issuelinks",
        "remote_links",
        "attachments",
    ] {
        wait_rows(
            &inst,
            &format!("SELECT count(*)::VARCHAR FROM {table} WHERE issue_key = '{key}'"),
            &["0"],
            within,
        );
    }
    wait_rows(
        &inst,
        "SELECT string_agg(issue_key, ',' ORDER BY issue_key) FROM issues",
        &[other.as_str()],
        within,
    );
    // Every accepted delivery was logged before it was processed, and later published.
    let audit = audit_lines(&inst);
    let received = audit
        .iter()
        .filter(|l| l["received_at"].is_string())
        .count();
    assert_eq!(received, fake.deliveries().len(), "{audit:#?}");
    // The publish after the last batch may still be running (it is a whole push run).
    wait_for(within, "a publish in the audit log", || {
        audit_lines(&inst)
            .iter()
            .any(|l| l["published_at"].is_string())
            .then_some(())
    });
    // Each publish after webhooks is a push run, recorded in the state like any other run.
    // (The daemon writes the state between reads: retry until it lets a reader in.)
    let pushes: i64 = wait_for(within, "a read of the state", || {
        let config = duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .ok()?;
        let conn = duckdb::Connection::open_with_flags(inst.state_path(), config).ok()?;
        conn.query_row(
            "SELECT count(*) FROM runs WHERE trigger = 'push' AND who = 'jira webhook' AND status = 'ok'",
            [],
            |r| r.get(0),
        )
        .ok()
    });
    assert!(pushes >= 1, "{pushes} push runs recorded");
    let mut latencies: Vec<u64> = audit
        .iter()
        .filter_map(|l| l["latency_ms"].as_array().cloned())
        .flatten()
        .filter_map(|v| v.as_u64())
        .collect();
    latencies.sort_unstable();
    println!(
        "one at a time: webhook -> queryable p50 {} ms, p95 {} ms over {} events",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies.len()
    );
    assert!(fake.deliveries().iter().all(|d| d.status == Some(202)));
}

#[test]
fn jira_webhooks_fail_closed() {
    let fake = FakeJira::start();
    let inst = instance(&fake);
    let d = start(&inst, &fake);
    let key = fake.create_issue("OPS", "Secret plans", "2024-03-05T10:00:00.000+0000");
    let delivery = fake.deliveries().pop().expect("a delivery");

    // Missing and wrong signatures: 401, nothing logged or written.
    let (status, body) = post(&d, "tracker", &delivery.body, None);
    assert_eq!(status, 401, "{body}");
    let wrong = fake.sign(b"another body");
    let (status, _) = post(&d, "tracker", &delivery.body, Some(&wrong));
    assert_eq!(status, 401);
    let (status, _) = post(&d, "tracker", &delivery.body, Some("sha256=zz"));
    assert_eq!(status, 401);
    // A source without a secret refuses even a correctly signed delivery.
    let (status, body) = post(&d, "open", &delivery.body, Some(&delivery.signature));
    assert_eq!(status, 401, "{body}");
    assert!(d.log().contains("no webhook secret"), "{}", d.log());
    // An unknown source.
    let (status, _) = post(&d, "nosuch", &delivery.body, Some(&delivery.signature));
    assert_eq!(status, 404);
    // Signed but not a Jira event.
    let junk = br#"{"hello": "world"}"#;
    let (status, _) = post(&d, "tracker", junk, Some(&fake.sign(junk)));
    assert_eq!(status, 400);
    let (status, _) = post(&d, "tracker", b"not json", Some(&fake.sign(b"not json")));
    assert_eq!(status, 400);
    // Over the daemon's body limit: 413, answered from the Content-Length before the body is
    // read, so the server may close the connection while the client still sends (then the
    // client sees a reset instead of the answer).
    let big = vec![b' '; 3 * 1024 * 1024];
    let sent = ureq::post(&d.url("/webhooks/jira/tracker"))
        .set("X-Hub-Signature", &fake.sign(&big))
        .send_bytes(&big);
    match sent {
        Err(ureq::Error::Status(code, _)) => assert_eq!(code, 413),
        Err(ureq::Error::Transport(_)) => {}
        Ok(r) => panic!("a 3 MiB body was accepted: {}", r.status()),
    }
    assert!(audit_lines(&inst).is_empty(), "{:?}", audit_lines(&inst));

    // The same delivery, signed: accepted, and the issue arrives (so the refusals above were not
    // merely slow).
    let (status, body) = post(&d, "tracker", &delivery.body, Some(&delivery.signature));
    assert_eq!(status, 202, "{body}");
    wait_rows(
        &inst,
        &format!("SELECT summary FROM issues WHERE issue_key = '{key}'"),
        &["Secret plans"],
        Duration::from_secs(20),
    );
    assert_eq!(audit_lines(&inst)[0]["issue_key"], key.as_str());
}

#[test]
fn jira_duplicate_and_out_of_order_webhooks_end_in_jiras_state() {
    let fake = FakeJira::start();
    let inst = instance(&fake);
    let d = start(&inst, &fake);
    // Changes happen while webhooks are only recorded; then they are delivered backwards, twice.
    let a = fake.create_issue("OPS", "A", "2024-01-10T10:00:00.000+0000");
    let b = fake.create_issue("WEB", "B", "2024-02-10T10:00:00.000+0000");
    fake.update_summary(&a, "A2");
    fake.add_comment(&b, text_adf("first"));
    fake.update_summary(&b, "B2");
    let c = fake.create_issue("OPS", "C", "2024-02-11T10:00:00.000+0000");
    fake.delete_issue(&c);
    let mut deliveries = fake.deliveries();
    deliveries.reverse();
    for round in 0..2 {
        for del in &deliveries {
            let mut req = ureq::post(&d.url("/webhooks/jira/tracker"))
                .set("X-Hub-Signature", &del.signature)
                .set("X-Atlassian-Webhook-Identifier", &del.identifier);
            req = req.set("Content-Type", "application/json");
            let resp = req.send_bytes(&del.body).expect("accepted");
            assert_eq!(resp.status(), 202);
            let v: Value = resp.into_json().unwrap();
            assert_eq!(v["duplicate"], round == 1, "{v}");
        }
    }
    let within = Duration::from_secs(20);
    wait_rows(
        &inst,
        "SELECT issue_key || '=' || summary FROM issues ORDER BY issue_key",
        &[&format!("{a}=A2"), &format!("{b}=B2")],
        within,
    );
    wait_rows(
        &inst,
        "SELECT issue_key || ':' || body FROM comments ORDER BY issue_key",
        &[&format!("{b}:first")],
        within,
    );
    let dup = audit_lines(&inst)
        .iter()
        .filter(|l| l["duplicate"] == true)
        .count();
    assert_eq!(dup, deliveries.len());
}

/// Per issue: summary and comment count, from the fake.
fn fake_state(fake: &FakeJira) -> BTreeMap<String, String> {
    fake.keys()
        .into_iter()
        .map(|k| {
            let v = fake.issue_json(&k).expect("live issue");
            let summary = v["fields"]["summary"].as_str().unwrap_or("").to_string();
            let comments = v["fields"]["comment"]["total"].as_u64().unwrap_or(0);
            (k, format!("{summary}|{comments}"))
        })
        .collect()
}

fn analytics_state(inst: &Instance) -> BTreeMap<String, String> {
    rows(
        inst,
        "SELECT i.issue_key || '=' || i.summary || '|' || \
         (SELECT count(*) FROM comments c WHERE c.issue_key = i.issue_key) FROM issues i",
    )
    .into_iter()
    .filter_map(|r| {
        r.split_once('=')
            .map(|(k, v)| (k.to_string(), v.to_string()))
    })
    .collect()
}

fn wait_consistent(inst: &Instance, fake: &FakeJira, within: Duration) {
    let expected = fake_state(fake);
    let started = Instant::now();
    loop {
        let got = analytics_state(inst);
        if got == expected {
            return;
        }
        if started.elapsed() > within {
            let wrong: Vec<_> = expected
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .take(5)
                .collect();
            panic!(
                "analytics never matched the fake: {} issues expected, {} found; e.g. {wrong:?}",
                expected.len(),
                got.len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 1,000 changes over 100 issues from 4 threads (each change sends its webhook at once).
fn storm(fake: &FakeJira, keys: &[String], from: usize, to: usize) {
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for n in (from..to).filter(|n| n % 4 == t) {
                    let key = &keys[n % keys.len()];
                    match n % 5 {
                        0..=2 => fake.update_summary(key, &format!("edit {n}")),
                        3 => {
                            fake.add_comment(key, text_adf(&format!("comment {n}")));
                        }
                        _ => fake.transition(key, "In Progress", "indeterminate"),
                    }
                }
            });
        }
    });
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn jira_webhook_storm_ends_consistent_with_jira() {
    let fake = FakeJira::start();
    let inst = instance(&fake);
    let d = start(&inst, &fake);
    let keys: Vec<String> = (0..100)
        .map(|i| {
            fake.create_issue(
                ["OPS", "WEB"][i % 2],
                &format!("issue {i}"),
                &format!("2024-{:02}-05T10:00:00.000+0000", 1 + i % 12),
            )
        })
        .collect();
    fake.send_webhooks_to(Some(&d.url("/webhooks/jira/tracker")));
    let started = Instant::now();
    storm(&fake, &keys, 0, 1000);
    let sent = started.elapsed();
    wait_consistent(&inst, &fake, Duration::from_secs(60));
    let converged = started.elapsed();
    assert!(fake
        .deliveries()
        .iter()
        .filter(|d| d.status.is_some())
        .all(|d| d.status == Some(202)));
    // Every partition file reads whole.
    for entry in walk(&inst.path().join("data/extracts/tracker/data")) {
        if entry.extension().is_some_and(|e| e == "parquet") {
            let c = duckdb::Connection::open_in_memory().unwrap();
            c.query_row(
                &format!("SELECT count(*) FROM read_parquet('{}')", entry.display()),
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
        }
    }
    let mut latencies: Vec<u64> = audit_lines(&inst)
        .iter()
        .filter_map(|l| l["latency_ms"].as_array().cloned())
        .flatten()
        .filter_map(|v| v.as_u64())
        .collect();
    latencies.sort_unstable();
    let publishes = audit_lines(&inst)
        .iter()
        .filter(|l| l["published_at"].is_string())
        .count();
    let publish_ms: Vec<u64> = d
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| l["publish_ms"].as_u64())
        .collect();
    println!(
        "storm: {publishes} publishes, publish ms avg {}",
        publish_ms.iter().sum::<u64>() / publish_ms.len().max(1) as u64
    );
    println!(
        "storm: 1000 webhooks sent in {sent:?}, consistent after {converged:?}; \
         webhook -> queryable p50 {} ms, p95 {} ms, max {} ms over {} events",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies.last().copied().unwrap_or(0),
        latencies.len()
    );
    assert!(latencies.len() >= 1000, "{}", latencies.len());
    drop(d);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn jira_sigkill_mid_storm_then_consistency_check_converges() {
    let fake = FakeJira::start();
    let keys = fake.populate(100, &["OPS", "WEB"], 6);
    let inst = instance(&fake);
    let admin = token(&inst, "admin", &[]);
    // The apply's sync was the first consistency check: every issue is there.
    wait_consistent(&inst, &fake, Duration::from_secs(5));
    let d = start(&inst, &fake);
    fake.send_webhooks_to(Some(&d.url("/webhooks/jira/tracker")));
    std::thread::scope(|s| {
        s.spawn(|| storm(&fake, &keys, 0, 600));
        // Kill it (SIGKILL, by Drop) once some events were accepted.
        wait_for(Duration::from_secs(20), "accepted events", || {
            (audit_lines(&inst).len() > 100).then_some(())
        });
        drop(d);
    });
    // Changes made while it is down are missed entirely; some deletes too.
    storm(&fake, &keys, 600, 700);
    fake.delete_issue(&keys[3]);
    fake.delete_issue(&keys[4]);
    let d = start(&inst, &fake);
    let (status, body) = call(
        "POST",
        &d.url("/api/sync/trigger"),
        Some(&admin),
        Some(&json!({"source": "tracker"}).to_string()),
    );
    assert!(status == 200 || status == 202, "{status} {body}");
    wait_consistent(&inst, &fake, Duration::from_secs(60));
}

#[test]
fn jira_backfill_fills_publishes_and_is_idempotent() {
    let fake = FakeJira::start();
    let inst = instance(&fake);
    fake.populate(40, &["OPS", "WEB"], 4);
    let run = |args: &[&str]| -> String {
        let out = inst
            .cmd()
            .env(TOKEN_ENV, fake.token())
            .env(SECRET_ENV, fake_jira::FAKE_WEBHOOK_SECRET)
            .args(["jira", "backfill", "tracker"])
            .args(args)
            .assert()
            .success();
        String::from_utf8_lossy(&out.get_output().stdout).into_owned()
    };
    let first = run(&[]);
    assert!(first.contains("40 issue(s) listed"), "{first}");
    assert!(first.contains("published"), "{first}");
    wait_consistent(&inst, &fake, Duration::from_secs(1));
    let second = run(&[]);
    assert!(second.contains("0 file(s) written"), "{second}");
    assert!(second.contains("analytics untouched"), "{second}");
    let only = run(&["--jql", "project = OPS", "--since", "2020-01-01"]);
    assert!(only.contains("20 issue(s) listed"), "{only}");
}

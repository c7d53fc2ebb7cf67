//! The Jira connector's building blocks end to end, against a fake Jira Cloud site on 127.0.0.1
//! (tests/support/fake_jira.rs, speaking the documented REST v3 shapes): the client, the rows, the
//! monthly partition store and the backfill. No daemon yet: the webhook route is wired later.

#[path = "../support/fake_jira.rs"]
#[allow(dead_code)]
pub mod fake_jira;

use duckdb::Connection;
use fake_jira::{text_adf, FakeJira, Route};
use pipeline::connectors::jira::backfill::{self, Options};
use pipeline::connectors::jira::client::{Client, Patience};
use pipeline::connectors::jira::partition::PartitionStore;
use pipeline::connectors::jira::rows::{Mapper, Table};
use pipeline::connectors::jira::webhook::{self, Action, IssueRef};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn patience() -> Patience {
    Patience {
        attempts: 4,
        first_pause: Duration::from_millis(10),
        max_pause: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
    }
}

struct Setup {
    client: Client,
    mapper: Mapper,
    store: PartitionStore,
    _dir: tempfile::TempDir,
}

fn setup(fake: &FakeJira, promote: &[&str]) -> Setup {
    let client = Client::new(&fake.url(), fake.email(), fake.token(), patience());
    let fields = client.fields().expect("field metadata");
    let promote: Vec<String> = promote.iter().map(|s| s.to_string()).collect();
    let mapper = Mapper::new(&fields, &promote).expect("mapper");
    let dir = tempfile::tempdir().unwrap();
    let store = PartitionStore::open(dir.path(), "jira", mapper.schema().clone()).unwrap();
    Setup {
        client,
        mapper,
        store,
        _dir: dir,
    }
}

fn options() -> Options {
    Options {
        threads: 4,
        batch_issues: 25,
        page_size: 20,
        ..Options::default()
    }
}

fn query<T: duckdb::types::FromSql>(store: &PartitionStore, table: Table, select: &str) -> Vec<T> {
    let c = Connection::open_in_memory().unwrap();
    let glob = store.table_dir(table).join("*.parquet");
    let sql = select.replace(
        "{t}",
        &format!("read_parquet('{}')", glob.to_string_lossy()),
    );
    let mut stmt = c.prepare(&sql).unwrap();
    stmt.query_map([], |r| r.get::<_, T>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn count(store: &PartitionStore, table: Table, filter: &str) -> i64 {
    query::<i64>(
        store,
        table,
        &format!("SELECT count(*) FROM {{t}} WHERE {filter}"),
    )[0]
}

/// What every table should hold, computed from the fake's own state.
fn expected(fake: &FakeJira) -> BTreeMap<Table, BTreeSet<String>> {
    let mut out: BTreeMap<Table, BTreeSet<String>> = BTreeMap::new();
    for key in fake.keys() {
        let i = fake.issue_json(&key).unwrap();
        let f = &i["fields"];
        let month = f["created"].as_str().unwrap()[..7].to_string();
        let e = |t: Table, id: String| (t, format!("{key}|{month}|{id}"));
        let mut rows = vec![e(Table::Issues, String::new())];
        assert_eq!(
            f["comment"]["total"].as_u64().unwrap() as usize,
            f["comment"]["comments"].as_array().unwrap().len(),
            "the fixture keeps comments within the embedded limit"
        );
        for c in f["comment"]["comments"].as_array().unwrap() {
            rows.push(e(Table::Comments, c["id"].as_str().unwrap().into()));
        }
        for h in i["changelog"]["histories"].as_array().unwrap() {
            for (n, _) in h["items"].as_array().unwrap().iter().enumerate() {
                rows.push(e(
                    Table::Changelog,
                    format!("{}#{n}", h["id"].as_str().unwrap()),
                ));
            }
        }
        for l in f["issuelinks"].as_array().unwrap() {
            rows.push(e(Table::IssueLinks, l["id"].as_str().unwrap().into()));
        }
        for a in f["attachment"].as_array().unwrap() {
            rows.push(e(Table::Attachments, a["id"].as_str().unwrap().into()));
        }
        for r in fake.remote_links(&key) {
            rows.push(e(Table::RemoteLinks, r["id"].to_string()));
        }
        for (t, row) in rows {
            out.entry(t).or_default().insert(row);
        }
    }
    out
}

fn actual(store: &PartitionStore) -> BTreeMap<Table, BTreeSet<String>> {
    let id = |t: Table| match t {
        Table::Issues => "''",
        Table::Comments => "comment_id",
        Table::Changelog => "history_id || '#' || item_index",
        Table::IssueLinks => "link_id",
        Table::RemoteLinks => "remote_link_id",
        Table::Attachments => "attachment_id",
    };
    Table::ALL
        .into_iter()
        .map(|t| {
            let rows: Vec<String> = query(
                store,
                t,
                &format!(
                    "SELECT issue_key || '|' || issue_created_month || '|' || {} FROM {{t}}",
                    id(t)
                ),
            );
            let set: BTreeSet<String> = rows.iter().cloned().collect();
            assert_eq!(set.len(), rows.len(), "{t:?} has duplicate rows");
            (t, set)
        })
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

/// Every Parquet file of the store, with a digest of its bytes.
fn files(store: &PartitionStore) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for t in Table::ALL {
        for entry in std::fs::read_dir(store.table_dir(t)).unwrap().flatten() {
            let bytes = std::fs::read(entry.path()).unwrap();
            use sha2::Digest;
            out.insert(entry.path(), format!("{:x}", sha2::Sha256::digest(&bytes)));
        }
    }
    out
}

fn months_on_disk(store: &PartitionStore, table: Table) -> Vec<String> {
    store.months(table).unwrap().into_keys().collect()
}

#[test]
fn jira_backfill_writes_exactly_the_sites_rows_per_table_and_month_and_a_rerun_changes_nothing() {
    let fake = FakeJira::start();
    fake.populate(90, &["OPS", "WEB"], 6);
    let s = setup(&fake, &["Team"]);
    let mut seen = Vec::new();
    let report = backfill::run(&s.client, &s.mapper, &s.store, &options(), &mut |p| {
        seen.push(p.clone())
    })
    .unwrap();
    assert_eq!((report.listed, report.fetched), (90, 90));
    assert!(
        report.failed.is_empty() && report.gone.is_empty(),
        "{report:?}"
    );
    let last = seen.last().unwrap();
    assert!(last.listing_done && last.written == 90, "{last:?}");
    assert!(
        seen.windows(2).all(|w| w[0].fetched <= w[1].fetched),
        "progress only goes forward"
    );

    assert_eq!(actual(&s.store), expected(&fake));
    assert_eq!(
        months_on_disk(&s.store, Table::Issues),
        ["2023-01", "2023-02", "2023-03", "2023-04", "2023-05", "2023-06"]
    );
    // Each month file holds only that month's issues.
    for month in months_on_disk(&s.store, Table::Comments) {
        let file = s.store.partition_file(Table::Comments, &month);
        let c = Connection::open_in_memory().unwrap();
        let other: i64 = c
            .query_row(
                &format!("SELECT count(*) FROM read_parquet('{}') WHERE issue_created_month <> '{month}'", file.display()),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(other, 0, "{month}");
    }
    // Promoted custom field, and the agile fields, as typed columns.
    assert_eq!(count(&s.store, Table::Issues, "team = 'Platform'"), 18);
    assert_eq!(
        count(
            &s.store,
            Table::Issues,
            "sprint = 'Sprint 7' AND story_points IS NOT NULL"
        ),
        18
    );

    // The same backfill again: every file byte-identical, none rewritten.
    let before = files(&s.store);
    let again = backfill::run(&s.client, &s.mapper, &s.store, &options(), &mut |_| {}).unwrap();
    assert_eq!(
        (again.apply.files_written, again.apply.files_removed),
        (0, 0),
        "{again:?}"
    );
    assert_eq!(files(&s.store), before);

    // The extract contract over the partitions: rows per table as written.
    assert!(s.store.publish().unwrap());
    let c = Connection::open(s.store.extract_dir().db()).unwrap();
    let issues: i64 = c
        .query_row("SELECT count(*) FROM issues", [], |r| r.get(0))
        .unwrap();
    let meta: i64 = c
        .query_row(
            "SELECT rows FROM _meta WHERE table_name = 'changelog'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(issues, 90);
    assert_eq!(meta as usize, expected(&fake)[&Table::Changelog].len());
    drop(c);
    assert!(
        !s.store.publish().unwrap(),
        "an unchanged store leaves extract.duckdb alone"
    );
}

/// One refetch-and-store step, as the daemon will run it for an event; the files it changed.
fn process(s: &Setup, action: &Action) -> usize {
    let mut changed = 0;
    match action {
        Action::Refetch(refs) => {
            for r in refs {
                let report = match s.client.fetch_issue(r.as_str()).unwrap() {
                    Some(issue) => s.store.upsert(s.mapper.map(&issue).unwrap()).unwrap(),
                    None => {
                        let (key, id) = match r {
                            IssueRef::Key(k) => (k.clone(), None),
                            IssueRef::Id(i) => (String::new(), Some(i.as_str())),
                        };
                        s.store.delete(&key, id).unwrap()
                    }
                };
                changed += report.files_written + report.files_removed;
            }
        }
        Action::Delete { issue, id } => {
            let report = s.store.delete(issue.as_str(), id.as_deref()).unwrap();
            changed += report.files_written + report.files_removed;
        }
        Action::Ignore => {}
    }
    changed
}

#[test]
fn jira_updates_comments_links_and_deletes_follow_the_site_through_signed_webhooks() {
    let fake = FakeJira::start();
    let s = setup(&fake, &[]);
    fake.send_webhooks_to(Some(&fake.sink_url()));
    let a = fake.create_issue("OPS", "first", "2024-01-10T12:00:00.000+0000");
    let b = fake.create_issue("OPS", "second", "2024-02-10T12:00:00.000+0000");
    fake.update_summary(&a, "first, renamed");
    let c1 = fake.add_comment(&a, text_adf("hello"));
    let c2 = fake.add_comment(&a, text_adf("bye"));
    fake.delete_comment(&a, &c2);
    let att = fake.add_attachment(&b, "trace.log", 42);
    let link = fake.link(&a, &b, "Blocks");
    fake.transition(&b, "Done", "done");
    fake.delete_attachment(&b, &att);
    fake.unlink(&link);
    let c = fake.create_issue("WEB", "third", "2024-01-20T12:00:00.000+0000");
    fake.delete_issue(&c);

    // Every delivery reached the target, signed over its raw body.
    let received = fake.sink();
    assert_eq!(received.len(), fake.deliveries().len());
    let secret = fake.webhook_secret().as_bytes();
    let mut events = Vec::new();
    for (headers, body) in &received {
        let sig = headers.get("x-hub-signature").and_then(|v| v.to_str().ok());
        webhook::verify_signature(secret, body, sig).expect("signed by the secret");
        assert!(webhook::verify_signature(b"wrong secret", body, sig).is_err());
        let id = headers
            .get("x-atlassian-webhook-identifier")
            .and_then(|v| v.to_str().ok());
        events.push(webhook::parse_event(body, id).unwrap());
    }
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert!(
        names.contains(&"issuelink_created") && names.contains(&"attachment_deleted"),
        "{names:?}"
    );

    // Processing the events in order, each by refetching, ends with the site's state.
    for e in &events {
        process(&s, &e.action());
    }
    assert_eq!(actual(&s.store), expected(&fake));
    assert_eq!(
        count(
            &s.store,
            Table::Issues,
            &format!("issue_key = '{a}' AND summary = 'first, renamed'")
        ),
        1
    );
    assert_eq!(
        count(
            &s.store,
            Table::Comments,
            &format!("comment_id = '{c1}' AND body = 'hello'")
        ),
        1
    );
    assert_eq!(
        count(&s.store, Table::Comments, &format!("comment_id = '{c2}'")),
        0
    );
    assert_eq!(count(&s.store, Table::Attachments, "true"), 0);
    assert_eq!(count(&s.store, Table::IssueLinks, "true"), 0);
    assert_eq!(
        count(
            &s.store,
            Table::Issues,
            &format!("issue_key = '{b}' AND status_category = 'done' AND resolved IS NOT NULL")
        ),
        1
    );
    assert_eq!(
        count(&s.store, Table::Issues, &format!("issue_key = '{c}'")),
        0
    );

    // Duplicate and out-of-order deliveries change nothing: replay everything backwards, twice.
    let before = files(&s.store);
    let mut rewritten = 0;
    for e in events.iter().rev().chain(events.iter()) {
        rewritten += process(&s, &e.action());
    }
    assert_eq!(rewritten, 0, "replays rewrite no file");
    assert_eq!(actual(&s.store), expected(&fake));
    assert_eq!(files(&s.store), before, "no file rewritten by replays");
}

#[test]
fn jira_rate_limits_and_server_errors_are_retried_and_client_errors_are_not() {
    let fake = FakeJira::start();
    fake.populate(12, &["OPS"], 2);
    let s = setup(&fake, &[]);
    fake.rate_limit_next(Route::Issue, 3, 1);
    fake.fail_next(Route::Search, 2, 503);
    fake.fail_next(Route::RemoteLinks, 1, 500);
    fake.delay_next(Route::Changelog, 1, Duration::from_millis(200));
    let started = std::time::Instant::now();
    let report = backfill::run(&s.client, &s.mapper, &s.store, &options(), &mut |_| {}).unwrap();
    assert_eq!(report.fetched, 12);
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured ({:?})",
        started.elapsed()
    );
    assert_eq!(fake.requests(Route::Issue), 12 + 3);
    assert_eq!(actual(&s.store), expected(&fake));

    // A slow answer past the request timeout is retried.
    let quick = Client::new(
        &fake.url(),
        fake.email(),
        fake.token(),
        Patience {
            request_timeout: Duration::from_millis(300),
            ..patience()
        },
    );
    fake.delay_next(Route::Fields, 1, Duration::from_secs(2));
    let before = fake.requests(Route::Fields);
    assert!(!quick.fields().unwrap().is_empty());
    assert_eq!(fake.requests(Route::Fields), before + 2);

    // Retries are bounded: a server failing every time is reported with its status.
    fake.fail_next(Route::Fields, 10, 502);
    let e = s.client.fields().unwrap_err();
    assert_eq!(e.status(), Some(502), "{e}");
    assert_eq!(fake.requests(Route::Fields), before + 2 + 4);

    // Wrong credentials: refused at once, and the token never shows in the error.
    let wrong = Client::new(
        &fake.url(),
        fake.email(),
        "ATATT-wrong-token-value",
        patience(),
    );
    let before = fake.requests(Route::Any);
    let e = wrong.fields().unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert_eq!(fake.requests(Route::Any), before + 1);
    assert!(!e.to_string().contains("ATATT-wrong"), "{e}");
}

#[test]
fn jira_truncated_changelog_and_comments_are_fetched_whole() {
    let fake = FakeJira::start();
    fake.set_embedded_limits(2, 3);
    let s = setup(&fake, &[]);
    let key = fake.create_issue("OPS", "busy", "2024-03-03T03:03:03.000+0000");
    for n in 0..7 {
        fake.update_summary(&key, &format!("v{n}"));
    }
    for n in 0..5 {
        fake.add_comment(&key, text_adf(&format!("c{n}")));
    }
    let embedded = fake.issue_json(&key).unwrap();
    assert_eq!(
        embedded["changelog"]["histories"].as_array().unwrap().len(),
        3
    );
    assert_eq!(
        embedded["fields"]["comment"]["comments"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let issue = s.client.fetch_issue(&key).unwrap().unwrap();
    s.store.upsert(s.mapper.map(&issue).unwrap()).unwrap();
    assert_eq!(count(&s.store, Table::Changelog, "true"), 7);
    assert_eq!(count(&s.store, Table::Comments, "true"), 5);
    assert_eq!(
        query::<String>(
            &s.store,
            Table::Comments,
            "SELECT string_agg(body, ',' ORDER BY comment_id) FROM {t}"
        ),
        ["c0,c1,c2,c3,c4"]
    );
    assert!(fake.requests(Route::Changelog) >= 1 && fake.requests(Route::Comments) >= 1);
}

#[test]
fn jira_adf_links_survive_into_the_tables() {
    let fake = FakeJira::start();
    let s = setup(&fake, &[]);
    let key = fake.create_issue("OPS", "links", "2024-04-04T04:04:04.000+0000");
    fake.add_comment(
        &key,
        json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [
                {"type": "text", "text": "fixed in "},
                {"type": "text", "text": "PR 12", "marks": [{"type": "link", "attrs": {"href": "https://github.com/acme/app/pull/12"}}]}]},
            {"type": "blockCard", "attrs": {"url": "https://acme.atlassian.net/wiki/x"}}]}),
    );
    fake.add_remote_link(&key, "https://ci.example.com/run/9", "CI run 9");
    let issue = s.client.fetch_issue(&key).unwrap().unwrap();
    s.store.upsert(s.mapper.map(&issue).unwrap()).unwrap();
    let description: Vec<String> = query(&s.store, Table::Issues, "SELECT description FROM {t}");
    assert_eq!(
        description,
        [format!(
            "Work on {key}, see the runbook (https://wiki.example.com/runbook) and \
             https://github.com/acme/app/issues/{key}\n- first step"
        )]
    );
    let body: Vec<String> = query(&s.store, Table::Comments, "SELECT body FROM {t}");
    assert_eq!(body, ["fixed in PR 12 (https://github.com/acme/app/pull/12)\nhttps://acme.atlassian.net/wiki/x"]);
    let url: Vec<String> = query(&s.store, Table::RemoteLinks, "SELECT url FROM {t}");
    assert_eq!(url, ["https://ci.example.com/run/9"]);
}

#[test]
fn jira_concurrent_writers_of_one_month_take_turns_and_files_stay_whole() {
    let fake = FakeJira::start();
    let s = setup(&fake, &[]);
    let a = fake.create_issue("OPS", "a", "2024-05-01T00:00:00.000+0000");
    let b = fake.create_issue("OPS", "b", "2024-05-02T00:00:00.000+0000");
    let fetched_a = s.client.fetch_issue(&a).unwrap().unwrap();
    let fetched_b = s.client.fetch_issue(&b).unwrap().unwrap();
    let file = s.store.partition_file(Table::Issues, "2024-05");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Two writers (a webhook processor and a backfill) rewriting the same month, each
        // changing its issue's summary every round.
        let mut writers = Vec::new();
        for (fetched, tag) in [(&fetched_a, "a"), (&fetched_b, "b")] {
            let (store, mapper) = (&s.store, &s.mapper);
            writers.push(scope.spawn(move || {
                for round in 0..15 {
                    let mut issue = fetched.clone();
                    issue.issue["fields"]["summary"] = json!(format!("{tag}{round}"));
                    store.upsert(mapper.map(&issue).unwrap()).unwrap();
                }
            }));
        }
        // A reader that must always find a whole file with both issues once both exist.
        let (file, stop) = (&file, &stop);
        scope.spawn(move || {
            let c = Connection::open_in_memory().unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if file.exists() {
                    let n: Result<i64, _> = c.query_row(
                        &format!("SELECT count(*) FROM read_parquet('{}')", file.display()),
                        [],
                        |r| r.get(0),
                    );
                    // Renamed over whole: a reader sees the old file or the new one, never a torn one.
                    let n = n.expect("a whole Parquet file");
                    assert!(n == 1 || n == 2, "{n} rows");
                }
            }
        });
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let summaries: Vec<String> = query(
        &s.store,
        Table::Issues,
        "SELECT summary FROM {t} ORDER BY issue_key",
    );
    assert_eq!(summaries, ["a14", "b14"]);
    let leftovers: Vec<PathBuf> = std::fs::read_dir(s.store.table_dir(Table::Issues))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let locks = lock_files(s._dir.path());
    assert!(
        locks.iter().any(|l| l.ends_with("jira-jira.2024-05.lock")),
        "{locks:?}"
    );
}

fn lock_files(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("state/locks"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn jira_a_moved_issue_leaves_no_rows_under_its_old_key() {
    let fake = FakeJira::start();
    let s = setup(&fake, &[]);
    let key = fake.create_issue("OPS", "mover", "2024-06-06T06:06:06.000+0000");
    fake.add_comment(&key, text_adf("before the move"));
    let issue = s.client.fetch_issue(&key).unwrap().unwrap();
    s.store.upsert(s.mapper.map(&issue).unwrap()).unwrap();
    let new_key = fake.move_issue(&key, "WEB");
    // The webhook names the new key; a refetch by the old key finds the moved issue too.
    let issue = s.client.fetch_issue(&key).unwrap().unwrap();
    assert_eq!(issue.issue["key"], new_key.as_str());
    s.store.upsert(s.mapper.map(&issue).unwrap()).unwrap();
    assert_eq!(actual(&s.store), expected(&fake));
    assert_eq!(
        count(&s.store, Table::Comments, &format!("issue_key = '{key}'")),
        0
    );
}

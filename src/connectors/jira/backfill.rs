//! Backfill: every issue a JQL search finds, fetched and written to the partitions — the same rows
//! a webhook for each issue would write, so a backfill and webhook processing can run at once
//! (they take turns per month through the store's locks) and agree on the result.
//!
//! One thread pages through `/rest/api/3/search/jql` (token pagination), a bounded pool of threads
//! fetches each issue (changelog, comments and remote links complete) and maps it to rows, and the
//! calling thread gathers the rows per month and applies them in batches, so a month file is
//! rewritten once per batch rather than once per issue. Idempotent: an issue whose rows did not
//! change leaves its files untouched, so a second run over the same issues rewrites nothing.
//! An issue that vanished between the search and its fetch (404) is removed; one that fails to
//! fetch after the client's retries is reported and skipped — the run goes on.
//!
//! Deleted issues are not found by a search, so a backfill does not remove them: the periodic
//! consistency check (comparing the store's keys with a search) does.

use super::client::{Client, JiraError};
use super::partition::{ApplyReport, Change, PartitionStore, StoreError};
use super::rows::{IssueRows, Mapper};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;

/// How a backfill runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// What to read; see [`jql_for`].
    pub jql: String,
    /// Issues fetched at once (bounded parallelism: Jira rate-limits per user).
    pub threads: usize,
    /// Issues gathered before they are written: one write rewrites each month they touch once.
    pub batch_issues: usize,
    /// Search page size (`maxResults`).
    pub page_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jql: jql_for(None, None),
            threads: 6,
            batch_issues: 1000,
            page_size: 100,
        }
    }
}

/// The JQL a backfill runs: the connection's (or every issue), narrowed to issues updated on or
/// after `since` (`pipeline jira backfill --since DATE`). Search needs a bounded query, so "every
/// issue" is `project IS NOT EMPTY`.
pub fn jql_for(jql: Option<&str>, since: Option<chrono::NaiveDate>) -> String {
    let jql = jql
        .map(str::trim)
        .filter(|j| !j.is_empty())
        .unwrap_or("project IS NOT EMPTY");
    // An ORDER BY clause stays at the end.
    let (base, order) = match jql.to_ascii_lowercase().rfind("order by") {
        Some(at) => (jql[..at].trim(), Some(jql[at..].trim())),
        None => (jql, None),
    };
    let base = if base.is_empty() {
        "project IS NOT EMPTY"
    } else {
        base
    };
    let filtered = match since {
        Some(day) => format!("({base}) AND updated >= \"{}\"", day.format("%Y-%m-%d")),
        None => base.to_string(),
    };
    match order {
        Some(order) => format!("{filtered} {order}"),
        None => filtered,
    }
}

/// Where a backfill is, for a progress display.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Issues the search returned so far.
    pub listed: usize,
    /// The search has no more pages.
    pub listing_done: bool,
    /// Issues fetched and mapped.
    pub fetched: usize,
    /// Issues written (their month batch applied).
    pub written: usize,
    pub failed: usize,
}

/// What a backfill did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub listed: usize,
    pub fetched: usize,
    /// Issues found by the search that were gone when fetched (removed from the store).
    pub gone: Vec<String>,
    /// Issues that could not be fetched or mapped, with the reason.
    pub failed: Vec<(String, String)>,
    pub apply: ApplyReport,
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("searching Jira: {0}")]
    Search(JiraError),
    #[error("writing the partitions: {0}")]
    Store(#[from] StoreError),
}

enum Fetched {
    Rows(Box<IssueRows>),
    Gone(String),
    Failed(String, String),
}

/// Runs a backfill; `progress` is called (on this thread) whenever a count changes.
pub fn run(
    client: &Client,
    mapper: &Mapper,
    store: &PartitionStore,
    options: &Options,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, BackfillError> {
    let threads = options.threads.max(1);
    let stop = AtomicBool::new(false);
    let (key_tx, key_rx) = mpsc::sync_channel::<String>(threads * 4);
    let key_rx = Mutex::new(key_rx);
    let (out_tx, out_rx) = mpsc::sync_channel::<Result<Fetched, (usize, bool)>>(threads * 4);
    let mut report = Report::default();
    let mut state = Progress::default();

    let result = std::thread::scope(|scope| -> Result<(), BackfillError> {
        // The search, one page at a time; listed counts travel as `Err((n, done))` messages.
        let lister = {
            let out_tx = out_tx.clone();
            let stop = &stop;
            scope.spawn(move || -> Result<(), JiraError> {
                let mut token: Option<String> = None;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    let page = client.search_page(
                        &options.jql,
                        &["updated"],
                        options.page_size,
                        token.as_deref(),
                    );
                    let page = match page {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = out_tx.send(Err((0, true)));
                            return Err(e);
                        }
                    };
                    let mut n = 0;
                    for issue in &page.issues {
                        let key = issue
                            .get("key")
                            .and_then(|k| k.as_str())
                            .or_else(|| issue.get("id").and_then(|i| i.as_str()));
                        if let Some(key) = key {
                            if key_tx.send(key.to_string()).is_err() {
                                return Ok(());
                            }
                            n += 1;
                        }
                    }
                    let done = page.next_page_token.is_none();
                    let _ = out_tx.send(Err((n, done)));
                    if done {
                        return Ok(());
                    }
                    token = page.next_page_token;
                }
            })
        };
        for _ in 0..threads {
            let out_tx = out_tx.clone();
            let key_rx = &key_rx;
            let stop = &stop;
            scope.spawn(move || loop {
                let next = key_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok(key) = next else { return };
                if stop.load(Ordering::Relaxed) {
                    continue; // drain, so the lister is never blocked
                }
                let fetched = match client.fetch_issue(&key) {
                    Ok(Some(f)) => match mapper.map(&f) {
                        Ok(rows) => Fetched::Rows(Box::new(rows)),
                        Err(e) => Fetched::Failed(key, e.to_string()),
                    },
                    Ok(None) => Fetched::Gone(key),
                    Err(e) => Fetched::Failed(key, e.to_string()),
                };
                if out_tx.send(Ok(fetched)).is_err() {
                    return;
                }
            });
        }
        drop(out_tx);

        // Gather; hand a batch to the writer when it is full (each month it touches rewritten
        // once), the rest at the end. The writer runs on its own thread, so fetching goes on while
        // a batch is written; at most one batch waits for it.
        let (batch_tx, batch_rx) = mpsc::sync_channel::<Vec<Change>>(1);
        let (written_tx, written_rx) = mpsc::channel::<Result<(usize, ApplyReport), StoreError>>();
        let writer = {
            let stop = &stop;
            scope.spawn(move || {
                let mut failed = false;
                for changes in batch_rx {
                    if failed {
                        continue; // drain, so the gatherer is never blocked
                    }
                    let n = changes.len();
                    let result = store.apply(changes).map(|r| (n, r));
                    if result.is_err() {
                        failed = true;
                        stop.store(true, Ordering::Relaxed);
                    }
                    let _ = written_tx.send(result);
                }
            })
        };
        let mut write_error = None;
        let mut take_written = |block: bool, report: &mut Report, state: &mut Progress| loop {
            let next = if block {
                written_rx.recv().ok()
            } else {
                written_rx.try_recv().ok()
            };
            match next {
                Some(Ok((n, applied))) => {
                    report.apply.merge(applied);
                    state.written += n;
                }
                Some(Err(e)) => {
                    write_error.get_or_insert(e);
                }
                None => return,
            }
        };
        let mut pending: Vec<Change> = Vec::new();
        let mut gone: Vec<Change> = Vec::new();
        for message in out_rx {
            match message {
                Err((n, done)) => {
                    state.listed += n;
                    state.listing_done |= done;
                }
                Ok(Fetched::Rows(rows)) => {
                    state.fetched += 1;
                    pending.push(Change::Upsert(rows));
                    if pending.len() >= options.batch_issues.max(1) {
                        let _ = batch_tx.send(std::mem::take(&mut pending));
                    }
                }
                Ok(Fetched::Gone(key)) => {
                    state.fetched += 1;
                    report.gone.push(key.clone());
                    gone.push(Change::Delete { key, id: None });
                }
                Ok(Fetched::Failed(key, error)) => {
                    state.failed += 1;
                    tracing::warn!(issue = %key, %error, "Jira backfill: skipping an issue");
                    report.failed.push((key, error));
                }
            }
            take_written(false, &mut report, &mut state);
            progress(&state);
        }
        pending.extend(gone);
        if !pending.is_empty() {
            let _ = batch_tx.send(pending);
        }
        drop(batch_tx);
        let _ = writer.join();
        take_written(true, &mut report, &mut state);
        progress(&state);
        let listed = lister.join().unwrap_or_else(|_| {
            Err(JiraError::Protocol {
                what: "search".into(),
                message: "the search thread panicked".into(),
            })
        });
        if let Some(e) = write_error {
            return Err(e.into());
        }
        listed.map_err(BackfillError::Search)
    });
    report.listed = state.listed;
    report.fetched = state.fetched;
    result.map(|()| report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jira_backfill_jql_is_bounded_and_narrowed_by_since() {
        assert_eq!(jql_for(None, None), "project IS NOT EMPTY");
        assert_eq!(jql_for(Some("  "), None), "project IS NOT EMPTY");
        let day = chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        assert_eq!(
            jql_for(Some("project = OPS OR project = WEB"), Some(day)),
            "(project = OPS OR project = WEB) AND updated >= \"2024-03-01\""
        );
        assert_eq!(
            jql_for(Some("project = OPS ORDER BY created DESC"), Some(day)),
            "(project = OPS) AND updated >= \"2024-03-01\" ORDER BY created DESC"
        );
    }
}

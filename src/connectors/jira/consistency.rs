//! The consistency check: what the store holds compared with what Jira says, and the drift
//! refetched, so that missed webhooks (the daemon was down, a delivery was lost, the daemon was
//! killed between accepting an event and writing it) heal.
//!
//! A JQL search over the source's issues (`fields=updated`) lists every key with its `updated`
//! time; [`PartitionStore::issue_versions`] lists what the store holds. An issue missing from the
//! store or whose `updated` differs is refetched (and written, or removed when the refetch is a
//! 404). An issue the store holds that the search did not return is refetched too rather than
//! removed blindly: a webhook may have written it after the search ran. It is removed when Jira
//! answers 404, or when it was last updated before the search started (it exists, but the JQL no
//! longer selects it); otherwise it is kept as fetched.

use super::client::{Client, JiraError};
use super::partition::{ApplyReport, Change, PartitionStore, StoreError};
use super::rows::{parse_time, Mapper};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("searching Jira: {0}")]
    Search(JiraError),
    #[error("the partitions: {0}")]
    Store(#[from] StoreError),
}

/// What a check did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Issues the search returned.
    pub listed: usize,
    /// Issues the store held before the check.
    pub stored: usize,
    /// Issues refetched because they were missing, differed or were not in the search.
    pub refetched: usize,
    /// Issues removed from the store (deleted in Jira, or no longer selected by the JQL).
    pub removed: Vec<String>,
    /// Issues that could not be fetched (left as they were; the next check tries again).
    pub failed: Vec<(String, String)>,
    pub apply: ApplyReport,
}

/// An issue refetched: its rows, `None` to remove it, or why it could not be fetched.
type Refetched = Result<Option<super::rows::IssueRows>, String>;

/// Milliseconds since the epoch of a stored `updated` (`YYYY-MM-DD HH:MM:SS.mmm+00`, UTC).
fn stored_ms(text: &str) -> Option<i64> {
    let t = text.trim().trim_end_matches("+00");
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// Runs a check over `jql` (see [`super::backfill::jql_for`]) with `threads` fetching at once.
pub fn check(
    client: &Client,
    mapper: &Mapper,
    store: &PartitionStore,
    jql: &str,
    threads: usize,
) -> Result<CheckReport, CheckError> {
    let started: DateTime<Utc> = Utc::now();
    let mut listed: BTreeMap<String, Option<i64>> = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .search_page(jql, &["updated"], 100, token.as_deref())
            .map_err(CheckError::Search)?;
        for issue in &page.issues {
            let Some(key) = issue.get("key").and_then(Value::as_str) else {
                continue;
            };
            let updated = issue
                .pointer("/fields/updated")
                .and_then(Value::as_str)
                .and_then(parse_time)
                .map(|t| t.timestamp_millis());
            listed.insert(key.to_string(), updated);
        }
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    let stored = store.issue_versions()?;
    let mut report = CheckReport {
        listed: listed.len(),
        stored: stored.len(),
        ..CheckReport::default()
    };
    // Drifted or missing: refetch and write. Stored but not listed: refetch, then decide.
    let mut drift: Vec<(String, bool)> = listed
        .iter()
        .filter(|(key, updated)| match stored.get(*key) {
            None => true,
            Some(s) => s.as_deref().and_then(stored_ms) != **updated || updated.is_none(),
        })
        .map(|(k, _)| (k.clone(), true))
        .collect();
    let unlisted: BTreeSet<&String> = stored.keys().filter(|k| !listed.contains_key(*k)).collect();
    drift.extend(unlisted.iter().map(|k| ((*k).clone(), false)));
    report.refetched = drift.len();
    if drift.is_empty() {
        return Ok(report);
    }

    let queue = Mutex::new(drift.into_iter());
    let results: Mutex<Vec<(String, Refetched)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                let Some((key, was_listed)) = next else {
                    return;
                };
                let result = match client.fetch_issue(&key) {
                    Ok(Some(f)) => {
                        // Not selected by the JQL although it exists, and unchanged since before
                        // the search: out of the source's scope now.
                        let updated = f
                            .issue
                            .pointer("/fields/updated")
                            .and_then(Value::as_str)
                            .and_then(parse_time);
                        if !was_listed && updated.is_some_and(|u| u < started) {
                            Ok(None)
                        } else {
                            mapper.map(&f).map(Some).map_err(|e| e.to_string())
                        }
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(e.to_string()),
                };
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((key, result));
            });
        }
    });
    let mut changes = Vec::new();
    for (key, result) in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
        match result {
            Ok(Some(rows)) => changes.push(Change::Upsert(Box::new(rows))),
            Ok(None) => {
                report.removed.push(key.clone());
                changes.push(Change::Delete { key, id: None });
            }
            Err(e) => {
                tracing::warn!(issue = %key, error = %e, "Jira consistency check: could not refetch");
                report.failed.push((key, e));
            }
        }
    }
    report.removed.sort();
    for chunk in chunks(changes, 1000) {
        report.apply.merge(store.apply(chunk)?);
    }
    Ok(report)
}

fn chunks(mut changes: Vec<Change>, size: usize) -> Vec<Vec<Change>> {
    let mut out = Vec::new();
    while changes.len() > size {
        let rest = changes.split_off(size);
        out.push(std::mem::replace(&mut changes, rest));
    }
    if !changes.is_empty() {
        out.push(changes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jira_stored_updated_reads_as_milliseconds() {
        let a = stored_ms("2024-01-20 04:58:12.797+00").unwrap();
        let b = parse_time("2024-01-20T15:58:12.797+1100")
            .unwrap()
            .timestamp_millis();
        assert_eq!(a, b);
        assert_eq!(stored_ms("nonsense"), None);
    }
}

//! The `profile(table)` step of a run (DESIGN.md §8; docs/profile.md): after the publish, every
//! table whose data changed since its last profile is profiled from the published analytics file
//! ([`crate::profile`]) and the results are recorded in the state in one write.
//!
//! It runs after the DAG because the publish it follows (the swap of the staged file) happens
//! after the DAG too, and after the run is recorded, so the run's own record and its visible data
//! never wait for it. "Changed" is decided by the data's stamp ([`crate::profile::data_stamp`]:
//! the Parquet files' paths, sizes and times) against the one the table's last profile recorded,
//! so it holds whichever way the data changed (a sync, a push, a one-source republish) and a table
//! never profiled is profiled once. A failed profile is recorded with its error and the data it
//! read — the previous profile stays, and the same data is not tried again — and never fails the
//! run. Remote tables are never profiled: their rows stay at the source.

use crate::analytics;
use crate::duck::EngineLimits;
use crate::extract_db::RemotePolicy;
use crate::instance::DataDir;
use crate::profile;
use crate::registry::registered::Registered;
use crate::state::{self, StateStore};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the profile step did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profiled {
    /// Table ids profiled.
    pub profiled: Vec<String>,
    /// Table ids whose profile failed, with the error (their previous profile stays).
    pub failed: Vec<(String, String)>,
    /// Changed tables left for the next runs: the step's time budget was spent.
    pub deferred: usize,
    pub duration: Duration,
}

/// Everything the step needs from the run.
pub struct Step<'a> {
    pub data: &'a DataDir,
    pub registered: &'a Registered,
    pub policy: &'a RemotePolicy,
    pub limits: EngineLimits,
    /// Tables profiled at once.
    pub jobs: usize,
    pub run_id: &'a str,
    /// How long the run took before this step: the step's time budget is a share of it
    /// ([`budget`]).
    pub run_time: Duration,
}

/// The least time the step may take when there is work: a run of a few small tables finishes
/// them all.
pub const MIN_BUDGET: Duration = Duration::from_secs(5);

/// How long the step may keep starting profiles: a quarter of the run before it, at least
/// [`MIN_BUDGET`]. Tables left when it is spent are profiled by the next runs (their data stamp
/// still differs from their last profile's), the longest-waiting first — so a run that changed
/// a thousand tables is never made more than a quarter slower by its profiles.
pub fn budget(run_time: Duration) -> Duration {
    (run_time / 4).max(MIN_BUDGET)
}

/// Profiles the tables whose data changed since their last profile and records the outcome.
/// `Err` only when the step could not run at all (no state, an unreadable analytics file); the
/// caller logs it, the run stands.
pub fn changed(step: &Step) -> Result<Profiled, String> {
    let started = Instant::now();
    let store = StateStore::of(step.data);
    let recorded = {
        let r = store.read().map_err(|e| e.to_string())?;
        state::profile::stamps(&r).map_err(|e| e.to_string())?
    };
    let extracts = step.data.extracts();
    // (id, view, stamp) of every local table whose data is not the one last profiled or tried,
    // the longest-waiting first (never profiled, then by the age of their last profile), so tables
    // a spent budget left out come first next time.
    let mut due: Vec<(Option<String>, String, String, String)> = step
        .registered
        .tables
        .values()
        .filter_map(|t| {
            let stamp = profile::data_stamp(&extracts, t)?;
            let before = recorded.get(&t.id);
            let seen = before.is_some_and(|b| {
                b.profiled.as_deref() == Some(stamp.as_str())
                    || b.failed.as_deref() == Some(stamp.as_str())
            });
            let last = before.and_then(|b| b.profiled_at.clone());
            (!seen).then(|| (last, t.id.clone(), t.name.clone(), stamp))
        })
        .collect();
    due.sort();
    let mut due: Vec<(String, String, String)> =
        due.into_iter().map(|(_, id, v, s)| (id, v, s)).collect();
    if due.is_empty() || !step.data.analytics().is_file() {
        return Ok(Profiled::default());
    }
    let (conn, _problems) =
        analytics::open_live_local(step.data, step.policy).map_err(|e| e.to_string())?;
    step.limits.apply(&conn).map_err(|e| e.to_string())?;
    // Every view's columns in one catalogue query. Only what the live file publishes is
    // profiled: a table whose view is not there (left out of this publish) waits for the publish
    // that brings it, instead of recording a failure.
    let columns = profile::view_columns(&conn).map_err(|e| e.to_string())?;
    due.retain(|(_, view, _)| columns.contains_key(&view.to_lowercase()));

    let deadline = started + budget(step.run_time);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<state::profile::ProfileWrite>> = Mutex::new(Vec::new());
    let workers = step.jobs.clamp(1, due.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let Ok(conn) = conn.try_clone() else { break };
            // The default catalog and the time zone are the session's, not the database's.
            if conn
                .execute_batch("SET TimeZone = 'UTC'; USE analytics;")
                .is_err()
            {
                break;
            }
            let (due, next, results, columns) = (&due, &next, &results, &columns);
            let zone = crate::value_text::Zone::of(&conn);
            scope.spawn(move || loop {
                // A profile started goes on; none starts once the budget is spent.
                if Instant::now() >= deadline {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((id, view, stamp)) = due.get(i) else {
                    return;
                };
                let described = columns
                    .get(&view.to_lowercase())
                    .map_or(&[][..], Vec::as_slice);
                let result = profile::profile_columns(&conn, view, described, zone)
                    .map_err(|e| e.to_string())
                    .and_then(|p| serde_json::to_value(p).map_err(|e| e.to_string()));
                let row = state::profile::ProfileWrite {
                    table_id: id.clone(),
                    stamp: stamp.clone(),
                    result,
                };
                results.lock().unwrap_or_else(|p| p.into_inner()).push(row);
            });
        }
    });
    drop(conn);
    let mut rows = results.into_inner().unwrap_or_else(|p| p.into_inner());
    rows.sort_by(|a, b| a.table_id.cmp(&b.table_id));
    let at = chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string();
    if !rows.is_empty() {
        // Never `StateStore::write`: a state removed meanwhile is not created again for this.
        let mut w = store.write_existing().map_err(|e| e.to_string())?;
        state::profile::record(&mut w, step.run_id, &at, &rows).map_err(|e| e.to_string())?;
    }
    let mut out = Profiled {
        deferred: due.len().saturating_sub(rows.len()),
        ..Profiled::default()
    };
    for r in rows {
        match r.result {
            Ok(_) => out.profiled.push(r.table_id),
            Err(e) => {
                tracing::warn!(table = %r.table_id, "profile failed (the previous one stays): {e}");
                out.failed.push((r.table_id, e));
            }
        }
    }
    out.duration = started.elapsed();
    tracing::info!(
        profiled = out.profiled.len(),
        failed = out.failed.len(),
        deferred = out.deferred,
        ms = out.duration.as_millis() as u64,
        "tables profiled"
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_a_quarter_of_the_run_and_never_below_the_minimum() {
        assert_eq!(budget(Duration::ZERO), MIN_BUDGET);
        assert_eq!(budget(Duration::from_secs(8)), MIN_BUDGET);
        assert_eq!(budget(Duration::from_secs(60)), Duration::from_secs(15));
    }
}

//! The scheduler: each table's schedule (its own, its source's or the instance default, resolved at
//! apply) in the instance time zone. It sleeps until the next due time — no polling — and wakes
//! early only when the registry or the settings change or a run ends.
//!
//! A table due while a run of it is still going is *coalesced*: it runs once more when that run ends,
//! however many times it fell due meanwhile. At start, tables whose scheduled time passed while the
//! daemon was down (or that never synced) run once, unless `scheduler.missed_runs: skip`.

use super::runs::{self, Refused};
use super::Shared;
use crate::spec::model::MissedRuns;
use crate::spec::schedule::Schedule;
use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Runs blocking work (state reads, starting runs) on tokio's blocking pool, so the API's workers
/// are never held by it. A panic there is the scheduler's own.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Longest sleep when nothing is scheduled (the loop also wakes on every change).
const IDLE: Duration = Duration::from_secs(3600);

/// A table's schedule as the scheduler tracks it.
#[derive(Clone, Debug)]
struct Slot {
    text: String,
    next: DateTime<Utc>,
}

pub fn next_after(schedule: &str, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
    // Whole seconds: schedules fire on the second, not at "now" plus its milliseconds.
    let after = after.with_nanosecond(0).unwrap_or(after);
    Schedule::parse_cached(schedule)
        .ok()?
        .next_after(after.with_timezone(&tz))
        .map(|t| t.with_timezone(&Utc))
}

/// When each table was last synced or attempted, from the state.
pub fn last_attempts(shared: &Shared) -> BTreeMap<String, DateTime<Utc>> {
    let read = || crate::state::report::last_attempts(&shared.state.read()?);
    match read() {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|(id, at)| {
                let at = DateTime::parse_from_rfc3339(&at).ok()?;
                Some((id, at.with_timezone(&Utc)))
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the last syncs; scheduling from now");
            BTreeMap::new()
        }
    }
}

/// Recomputes the slots after a (re)load: unchanged schedules keep their next time; new or changed
/// ones get the next time after now. At start (`previous` empty, `at_start`), missed times are due
/// now under `run_once`.
fn plan_slots(
    shared: &Shared,
    previous: &BTreeMap<String, Slot>,
    at_start: bool,
) -> (BTreeMap<String, Slot>, Vec<String>) {
    let instance = shared.instance();
    let snapshot = shared.snapshot();
    let now = shared.clock.now();
    let last = if at_start {
        last_attempts(shared)
    } else {
        BTreeMap::new()
    };
    let mut slots = BTreeMap::new();
    let mut missed = Vec::new();
    for (id, table) in &snapshot.registered.tables {
        let Some(text) = table.schedule.clone() else {
            continue;
        };
        if let Some(prev) = previous.get(id).filter(|p| p.text == text) {
            slots.insert(id.clone(), prev.clone());
            continue;
        }
        if at_start && instance.missed_runs == MissedRuns::RunOnce {
            let was_due = match last.get(id) {
                Some(at) => next_after(&text, *at, instance.tz).is_some_and(|n| n <= now),
                None => true,
            };
            if was_due {
                missed.push(id.clone());
            }
        }
        match next_after(&text, now, instance.tz) {
            Some(next) => {
                slots.insert(id.clone(), Slot { text, next });
            }
            None => tracing::warn!(table = %id, schedule = %text, "schedule never fires"),
        }
    }
    (slots, missed)
}

pub async fn run(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut run_changes = shared.runs.changes();
    let (mut slots, missed) = {
        let shared = shared.clone();
        blocking(move || plan_slots(&shared, &BTreeMap::new(), true)).await
    };
    let mut zone = shared.instance().tz;
    // Due tables not started yet because a run of theirs is going, and those already logged so.
    let mut deferred: BTreeSet<String> = missed.into_iter().collect();
    let mut told: BTreeSet<String> = BTreeSet::new();
    let read = {
        let shared = shared.clone();
        blocking(move || runs::pending(&shared)).await
    };
    let pending = match read {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "could not read pending tasks");
            Vec::new()
        }
    };
    if !deferred.is_empty() || !pending.is_empty() {
        tracing::info!(
            missed = deferred.len(),
            pending = pending.len(),
            "at start: running tables whose schedule passed while the daemon was down, and tasks left pending"
        );
        (deferred, told) = due(&shared, deferred, told, true).await;
    }
    loop {
        publish(&shared, &slots);
        let wake = slots.values().map(|s| s.next).min();
        let sleep = wake.map_or(IDLE, |w| shared.clock.until(w).min(IDLE));
        // What woke the loop; handled after the select, so that nothing it borrowed is held while
        // the blocking work is awaited.
        enum Woke {
            Time,
            Reload,
            RunChanged,
            Stop,
        }
        let woke = tokio::select! {
            _ = tokio::time::sleep(sleep) => Woke::Time,
            _ = shared.reload.notified() => Woke::Reload,
            changed = run_changes.changed() => match changed {
                Ok(()) => Woke::RunChanged,
                Err(_) => Woke::Stop,
            },
            _ = shutdown.wait_for(|s| *s) => Woke::Stop,
        };
        match woke {
            Woke::Time => {}
            Woke::Reload => {
                // A new time zone moves every next time; otherwise unchanged schedules keep theirs.
                let tz = shared.instance().tz;
                let keep = if tz == zone { slots } else { BTreeMap::new() };
                zone = tz;
                let shared = shared.clone();
                slots = blocking(move || plan_slots(&shared, &keep, false).0).await;
                continue;
            }
            Woke::RunChanged => {
                if !deferred.is_empty() {
                    (deferred, told) = due(&shared, deferred, told, false).await;
                }
                continue;
            }
            Woke::Stop => return,
        }
        let now = shared.clock.now();
        let tz = shared.instance().tz;
        for (id, slot) in slots.iter_mut() {
            if slot.next <= now {
                deferred.insert(id.clone());
                // The next time strictly after now: slots missed while this one waited collapse.
                if let Some(n) = next_after(&slot.text, now, tz) {
                    slot.next = n;
                }
            }
        }
        (deferred, told) = due(&shared, deferred, told, false).await;
    }
}

/// [`start_due`] off the runtime, handing the sets back.
async fn due(
    shared: &Arc<Shared>,
    mut deferred: BTreeSet<String>,
    mut told: BTreeSet<String>,
    at_start: bool,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let shared = shared.clone();
    blocking(move || {
        start_due(&shared, &mut deferred, &mut told, at_start);
        (deferred, told)
    })
    .await
}

fn publish(shared: &Shared, slots: &BTreeMap<String, Slot>) {
    let mut next = shared.next_runs.lock().unwrap_or_else(|e| e.into_inner());
    *next = slots.iter().map(|(k, v)| (k.clone(), v.next)).collect();
}

/// Starts one run for the due tables that are free; keeps the busy ones for when their run ends.
fn start_due(
    shared: &Arc<Shared>,
    deferred: &mut BTreeSet<String>,
    told: &mut BTreeSet<String>,
    with_pending: bool,
) {
    if shared.shutting_down() {
        return;
    }
    let known = shared.snapshot();
    deferred.retain(|t| known.registered.tables.contains_key(t));
    let busy = shared.runs.busy();
    let (waiting, free): (Vec<String>, Vec<String>) =
        deferred.iter().cloned().partition(|t| busy.contains_key(t));
    for t in &waiting {
        if told.insert(t.clone()) {
            tracing::info!(
                table = %t, running_in = %busy[t],
                "table is due but still syncing: coalesced, it runs once more when that run ends"
            );
        }
    }
    if free.is_empty() && !with_pending {
        return;
    }
    let req = match runs::sync_request(shared, &free, with_pending, "schedule", "scheduler") {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "could not plan the scheduled run");
            return;
        }
    };
    match shared.runs.start(shared, req) {
        Ok(_) | Err(Refused::Nothing) => {
            for t in &free {
                deferred.remove(t);
                told.remove(t);
            }
        }
        // Raced with another run taking a table: try again when runs change.
        Err(Refused::Busy(_)) | Err(Refused::ShuttingDown) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn next_times_follow_the_instance_zone() {
        let tz: Tz = "Europe/Prague".parse().unwrap();
        // 2026-03-29 is the spring DST change in Prague: 02:00 local does not exist.
        let before = Utc.with_ymd_and_hms(2026, 3, 28, 23, 30, 0).unwrap();
        let next = next_after("daily 05:00", before, tz).unwrap();
        assert_eq!(
            next,
            Utc.with_ymd_and_hms(2026, 3, 29, 3, 0, 0).unwrap(),
            "05:00 CEST"
        );
        let every = next_after("every 1m", before, tz).unwrap();
        assert_eq!(every - before, chrono::Duration::minutes(1));
        assert!(next_after("not a schedule", before, tz).is_none());
    }
}

//! The spec watcher: a change under config/, pipelines/, registry/ or metrics/ is validated, planned
//! and applied (who = "watcher") by [`crate::ops::apply`], then its tasks run, all under the state lock.
//!
//! The notify callback only signals; one reload path ([`reload`]) handles every trigger (start, a
//! spec change, a retry), on a blocking thread. Failures are classified: a transient one (the state
//! or its lock busy) is retried with a doubling backoff; a permanent one (a state written by a newer
//! binary, unreadable specs) is logged once and waits for the next change to the spec files.
//!
//! Events are debounced: an editor saving a file (temp file, rename, chmod…) or `git checkout`
//! touching twenty files gives one apply, after the files have been quiet for a moment. Invalid specs
//! are logged with their file:line:col diagnostics and not applied; what was applied before keeps
//! serving. Only real differences are applied, so a stray event costs one plan and nothing else.

use super::runs::{self, Refused};
use super::Shared;
use crate::diag::{render, Diagnostics, Severity};
use crate::ops::apply::{self as ops_apply, ApplyOptions, ApplyOutcome, Refused as NotApplied};
use crate::plan::{self, PlanError};
use crate::registry::registered::Registered;
use crate::registry::task::Task;
use crate::spec::Specs;
use crate::timestamp::rfc3339;
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The spec directories, relative to the instance root.
pub const WATCHED: [&str; 4] = ["config", "pipelines", "registry", "metrics"];

/// Every error (and warning) as `file:line:col: severity: message (hint)`.
pub fn diagnostic_lines(specs: &Specs, diags: &Diagnostics) -> Vec<String> {
    diags
        .iter()
        .map(|d| {
            let at = d
                .span
                .map(|s| render::location(&specs.files, s))
                .unwrap_or_else(|| "(specs)".into());
            let severity = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let hint = d
                .hint
                .as_deref()
                .map(|h| format!(" (hint: {h})"))
                .unwrap_or_default();
            format!("{at}: {severity}: {}{hint}", d.message)
        })
        .collect()
}

/// Whether a changed path can change the specs: a spec file, or a directory that may hold some.
fn relevant(root: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else {
        return false;
    };
    let mut parts = rel.components();
    let Some(top) = parts.next() else {
        return false;
    };
    if !WATCHED.iter().any(|w| top.as_os_str() == *w) {
        return false;
    }
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name.starts_with('.') || name.ends_with('~') {
        return false; // editor swap and backup files
    }
    match rel.extension().and_then(|e| e.to_str()) {
        Some(ext) => matches!(ext, "yaml" | "yml" | "toml"),
        // A directory (created, removed or renamed) or the top-level folder itself.
        None => true,
    }
}

/// What one reload decided about trying again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// Done (applied, unchanged, or refused for a reason only a spec change can fix).
    Wait,
    /// A transient failure (the state or its lock busy): try again after a backoff.
    Retry,
}

/// The daemon's side of [`crate::ops::apply`]: logs, the watcher status, and runs through the
/// [`runs::RunManager`] (one run per table at a time), waited for under the state lock.
struct DaemonHooks<'a> {
    shared: &'a Arc<Shared>,
    validate_ms: u64,
}

impl ops_apply::Hooks for DaemonHooks<'_> {
    type Ran = ();

    fn waiting_for_lock(&mut self, holder: Option<&crate::fslock::Holder>) {
        let who = holder.map_or("another process".to_string(), |h| h.to_string());
        tracing::info!(%who, "waiting for the state lock to apply a spec change");
    }

    fn took_over_lock(&mut self, from: &crate::fslock::Holder) {
        tracing::warn!(%from, "took over the state lock left by a process that is gone");
    }

    fn applied(&mut self, a: &ops_apply::Applied) {
        let shared = self.shared;
        let s = a.summary;
        tracing::info!(
            serial = a.serial,
            summary = %format!("{} added, {} changed, {} destroyed", s.add, s.change, s.destroy),
            tasks = a.queued_tasks,
            validate_ms = self.validate_ms,
            plan_ms = a.plan_ms,
            write_ms = a.write_ms,
            "spec change applied"
        );
        shared.stats.apply_result("applied");
        set_status(shared, |st| {
            st.last_result = Some("applied".into());
            st.last_applied_serial = Some(a.serial);
            st.errors.clear();
        });
        // Runs read the snapshot: it must show what was just applied before they start.
        if let Err(e) = shared.reload_snapshot() {
            tracing::error!(error = %e, "could not read the registry after applying");
        }
    }

    fn run(&mut self, _: &crate::instance::Instance, _: Registered, tasks: Vec<Task>) {
        // Called on a blocking thread (never a runtime worker): waiting here is fine.
        let shared = self.shared.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.block_on(run_and_wait(&shared, tasks)),
            Err(e) => {
                tracing::error!(error = %e, "cannot run the applied change's tasks; they stay queued")
            }
        }
    }
}

fn set_status(shared: &Shared, f: impl FnOnce(&mut super::WatcherStatus)) {
    if let Ok(mut w) = shared.watcher.lock() {
        f(&mut w);
    }
}

/// The one reload path, for every trigger (start, a spec change, a retry): validate, then
/// [`crate::ops::apply`] (who = watcher, the state lock held through the run). Blocking.
fn reload(shared: &Arc<Shared>, told_permanent: &mut Option<String>) -> Next {
    let started = std::time::Instant::now();
    set_status(shared, |st| {
        st.last_change_at = Some(rfc3339(chrono::Utc::now()))
    });
    let mut desired = match plan::desired(&shared.root) {
        Ok(d) => d,
        Err(PlanError::Invalid { specs, diags }) => {
            let lines = diagnostic_lines(&specs, &diags)
                .into_iter()
                .filter(|l| l.contains(": error: "))
                .collect();
            not_applied(shared, "invalid", "the specs are invalid", lines);
            return Next::Wait;
        }
        Err(e) => {
            // Reading the spec files failed (I/O): a change to them is what can fix it.
            failed(shared, &e.to_string(), false, told_permanent);
            return Next::Wait;
        }
    };
    let mut instance = shared.config.applied_to(desired.instance.clone());
    if instance.data != shared.data {
        tracing::warn!("data_dir changed: the daemon keeps using the old one until it restarts");
    }
    instance.data = shared.data.clone();
    shared.set_instance(instance.clone());
    desired.instance = instance;
    let opts = ApplyOptions {
        lock_timeout: Duration::from_secs(60),
        ..ApplyOptions::new("watcher", "pipeline daemon (watcher)")
    };
    let mut hooks = DaemonHooks {
        shared,
        validate_ms: started.elapsed().as_millis() as u64,
    };
    match ops_apply::apply(&desired, &opts, &mut hooks) {
        Ok(ApplyOutcome::Applied { .. }) => {
            *told_permanent = None;
            Next::Wait
        }
        Ok(ApplyOutcome::NothingToDo { .. }) => {
            // Unchanged because a shell applied the same change first: serve it.
            follow_state(shared);
            let was_bad = shared
                .watcher
                .lock()
                .map(|w| {
                    matches!(
                        w.last_result.as_deref(),
                        Some("invalid" | "failed" | "breaking")
                    )
                })
                .unwrap_or(false);
            if was_bad {
                tracing::info!(
                    "the specs are valid again and match what is applied: nothing to apply"
                );
            } else {
                tracing::debug!("specs changed on disk but not in substance: nothing to apply");
            }
            set_status(shared, |st| {
                st.last_result = Some("unchanged".into());
                st.errors.clear();
            });
            *told_permanent = None;
            shared.reload.notify_one();
            Next::Wait
        }
        Ok(ApplyOutcome::Refused(NotApplied::MissingEnv(messages))) => {
            let mut lines = diagnostic_lines(&desired.specs, &desired.diags);
            lines.retain(|l| messages.iter().any(|m| l.contains(m.as_str())));
            lines.insert(
                0,
                "not applied: the daemon's environment lacks variables the specs name (add them to \
                 the service's environment and restart the daemon)"
                    .into(),
            );
            not_applied(
                shared,
                "invalid",
                "the specs name unset environment variables",
                lines,
            );
            Next::Wait
        }
        Ok(ApplyOutcome::Refused(NotApplied::Breaking { lines, .. })) => {
            // Nobody reviews what the watcher applies, so a change that would break what reads it
            // waits for a person: reported, never applied silently.
            let mut lines = lines;
            lines.push(
                "not applied: the plan has breaking changes. Fix the specs, or apply them from a \
                 shell with `pipeline apply --allow-breaking`"
                    .into(),
            );
            not_applied(shared, "breaking", "it has breaking changes", lines);
            Next::Wait
        }
        // The watcher neither saves plans nor declines: a refusal of that kind is a bug's.
        Ok(ApplyOutcome::Refused(other)) => {
            failed(shared, &other.to_string(), false, told_permanent);
            Next::Wait
        }
        Err(e) => {
            let transient = e.is_transient();
            failed(shared, &e.to_string(), transient, told_permanent);
            if transient {
                Next::Retry
            } else {
                Next::Wait
            }
        }
    }
}

/// Invalid or breaking specs: every line logged, the status says why; the last applied state keeps
/// serving.
fn not_applied(shared: &Shared, result: &str, why: &str, lines: Vec<String>) {
    tracing::error!(
        errors = lines.len(),
        "spec change NOT applied: {why}; the last applied state keeps serving"
    );
    for line in &lines {
        tracing::error!("{line}");
    }
    shared.stats.apply_result(result);
    set_status(shared, |st| {
        st.last_result = Some(result.into());
        st.errors = lines;
    });
}

/// A failed apply. A transient failure is retried (logged each time, with the delay); a permanent
/// one (a state written by a newer binary, unreadable specs) is logged once and waits for the next
/// file change.
fn failed(shared: &Shared, error: &str, transient: bool, told_permanent: &mut Option<String>) {
    if transient {
        tracing::warn!(
            error,
            "spec change NOT applied yet (transient); trying again"
        );
    } else if told_permanent.as_deref() != Some(error) {
        tracing::error!(
            error,
            "spec change NOT applied; waiting for the next change to the spec files"
        );
        *told_permanent = Some(error.to_string());
    }
    shared.stats.apply_result("failed");
    set_status(shared, |st| {
        st.last_result = Some("failed".into());
        st.errors = vec![error.to_string()];
    });
}

/// Runs what an apply queued (with anything left pending), waiting for busy tables to be free,
/// then for the run to end.
async fn run_and_wait(shared: &Arc<Shared>, tasks: Vec<Task>) {
    let mut changes = shared.runs.changes();
    let id = loop {
        let req = runs::Request {
            trigger: "watcher".into(),
            who: "watcher".into(),
            tasks: tasks.clone(),
        };
        match shared.runs.start(shared, req) {
            Ok(id) => break id,
            Err(Refused::Nothing) => return,
            Err(Refused::ShuttingDown) => {
                tracing::info!(
                    "shutting down: the applied change's tasks stay queued for the next run"
                );
                return;
            }
            Err(Refused::Busy(busy)) => {
                tracing::info!(tables = ?busy.iter().map(|b| &b.0).collect::<Vec<_>>(),
                    "applied change waits for running syncs of its tables");
                if changes.changed().await.is_err() {
                    return;
                }
            }
        }
    };
    while shared.runs.get(&id).is_some_and(|r| r.status == "running") {
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// What changed on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    Specs,
    /// system.duckdb was written: perhaps by an apply from a shell.
    State,
}

/// Reloads the registry when the state's serial moved without this daemon (a `pipeline apply` from
/// a shell), so schedules, the catalogue and runs follow it.
fn follow_state(shared: &Shared) {
    let serial = match shared.state.serial() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "could not read the state serial");
            return;
        }
    };
    if serial != shared.snapshot().serial {
        match shared.reload_snapshot() {
            Ok(()) => tracing::info!(
                serial,
                "the registry was changed by another process: reloaded"
            ),
            Err(e) => tracing::error!(error = %e, "could not reload the registry"),
        }
    }
}

/// How long after a transient failure (the state lock held by a long shell apply, say) the reload
/// is tried again: doubling from the first delay up to the last.
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Watches the spec directories (and the state file) until shutdown. The notify callback only
/// signals; this loop debounces and hands every trigger to the one [`reload`] path.
pub async fn run(shared: Arc<Shared>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Change>();
    let root = shared.root.clone();
    let filter_root = root.clone();
    let state_db = shared.state.path().to_path_buf();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| relevant(&filter_root, p)) {
            let _ = tx.send(Change::Specs);
        } else if event.paths.iter().any(|p| {
            // The database or its WAL.
            p.parent() == state_db.parent()
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    state_db
                        .file_name()
                        .and_then(|s| s.to_str())
                        .is_some_and(|s| n.starts_with(s))
                })
        }) {
            let _ = tx.send(Change::State);
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the spec files; changes are applied only by `pipeline apply`");
            return;
        }
    };
    let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
    // The root itself (not recursively): to see spec directories appear.
    if let Err(e) = watcher.watch(&root, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, "cannot watch the instance root");
    }
    add_watches(&mut watcher, &root, &mut watched);
    if let Err(e) = watcher.watch(&shared.data.state_dir(), RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, "cannot watch the state; applies from a shell show after a restart");
    }
    let debounce = shared.config.debounce;
    let mut shutdown = shared.shutdown.subscribe();
    let mut told_permanent: Option<String> = None;
    let mut retry: Option<(tokio::time::Instant, Duration)> = None;

    // Converge first: apply whatever changed while the daemon was down.
    let mut changes: BTreeSet<Change> = [Change::Specs].into();
    loop {
        if shared.shutting_down() {
            return;
        }
        if changes.contains(&Change::Specs) {
            add_watches(&mut watcher, &root, &mut watched);
            let s = shared.clone();
            let mut told = told_permanent.take();
            let (next, told) = tokio::task::spawn_blocking(move || (reload(&s, &mut told), told))
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "the reload panicked (a bug: please report it)");
                    (Next::Wait, None)
                });
            told_permanent = told;
            retry = match (next, retry) {
                (Next::Wait, _) => None,
                (Next::Retry, None) => {
                    Some((tokio::time::Instant::now() + RETRY_FIRST, RETRY_FIRST))
                }
                (Next::Retry, Some((_, last))) => {
                    let delay = (last * 2).min(RETRY_MAX);
                    Some((tokio::time::Instant::now() + delay, delay))
                }
            };
            if let Some((_, delay)) = retry {
                tracing::info!(retry_in = ?delay, "the spec change will be tried again");
            }
        } else if changes.contains(&Change::State) {
            let s = shared.clone();
            let _ = tokio::task::spawn_blocking(move || follow_state(&s)).await;
        }
        changes.clear();
        let retry_at = retry.map(|(at, _)| at);
        tokio::select! {
            got = rx.recv() => match got {
                Some(c) => { changes.insert(c); }
                None => return,
            },
            _ = async { tokio::time::sleep_until(retry_at.expect("guarded")).await }, if retry_at.is_some() => {
                changes.insert(Change::Specs);
                continue;
            }
            _ = shutdown.wait_for(|s| *s) => return,
        };
        // Debounce: wait until the files have been quiet for `debounce`.
        while let Ok(Some(c)) = tokio::time::timeout(debounce, rx.recv()).await {
            changes.insert(c);
        }
    }
}

fn add_watches(watcher: &mut impl Watcher, root: &Path, watched: &mut BTreeSet<PathBuf>) {
    watched.retain(|d| d.is_dir());
    for dir in WATCHED {
        let path = root.join(dir);
        if path.is_dir() && !watched.contains(&path) {
            match watcher.watch(&path, RecursiveMode::Recursive) {
                Ok(()) => {
                    watched.insert(path);
                }
                Err(e) => tracing::warn!(dir = %path.display(), error = %e, "cannot watch"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_spec_files_and_directories_are_relevant() {
        let root = Path::new("/i");
        assert!(relevant(root, Path::new("/i/registry/shop.yaml")));
        assert!(relevant(root, Path::new("/i/metrics/revenue/total.yml")));
        assert!(relevant(root, Path::new("/i/pipelines/x.toml")));
        assert!(relevant(root, Path::new("/i/metrics/revenue")));
        assert!(relevant(root, Path::new("/i/registry")));
        assert!(!relevant(root, Path::new("/i/registry/.shop.yaml.swp")));
        assert!(!relevant(root, Path::new("/i/registry/shop.yaml~")));
        assert!(!relevant(root, Path::new("/i/registry/4913.tmp")));
        assert!(!relevant(root, Path::new("/i/data/state/system.duckdb")));
        assert!(!relevant(root, Path::new("/i/README.md")));
        assert!(!relevant(root, Path::new("/elsewhere/registry/a.yaml")));
    }
}

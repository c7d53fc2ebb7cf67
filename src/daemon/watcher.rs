//! The spec watcher: a change under config/, pipelines/, registry/ or metrics/ is validated, planned
//! and applied (who = "watcher"), then its tasks run.
//!
//! Events are debounced: an editor saving a file (temp file, rename, chmod…) or `git checkout`
//! touching twenty files gives one apply, after the files have been quiet for a moment. Invalid specs
//! are logged with their file:line:col diagnostics and not applied; what was applied before keeps
//! serving. Only real differences are applied, so a stray event costs one plan and nothing else.

use super::runs::{self, Refused};
use super::Shared;
use crate::diag::{render, Diagnostics, Severity};
use crate::fslock::Lock;
use crate::plan::{self, PlanError};
use crate::spec::Specs;
use crate::state;
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

/// The outcome of one validate → plan → apply.
#[derive(Debug)]
pub enum Applied {
    Invalid(Vec<String>),
    /// The plan has breaking changes: never applied unattended (each line names one, with what it
    /// breaks); `pipeline apply --allow-breaking` from a shell applies it.
    Breaking(Vec<String>),
    Unchanged,
    Applied {
        serial: i64,
        summary: String,
        tasks: Vec<crate::registry::task::Task>,
        /// Milliseconds spent validating, planning and writing the state.
        timings: [u64; 3],
    },
    Failed(String),
}

/// Validates, plans and applies the specs under the state lock. Blocking.
pub fn apply_once(shared: &Shared) -> Applied {
    let started = std::time::Instant::now();
    let desired = match plan::desired(&shared.root) {
        Ok(d) => d,
        Err(PlanError::Invalid { specs, diags }) => {
            let lines = diagnostic_lines(&specs, &diags)
                .into_iter()
                .filter(|l| l.contains(": error: "))
                .collect();
            return Applied::Invalid(lines);
        }
        Err(e) => return Applied::Failed(e.to_string()),
    };
    let unset = desired.unset_env_vars();
    if !unset.is_empty() {
        let mut lines = diagnostic_lines(&desired.specs, &desired.diags);
        lines.retain(|l| unset.iter().any(|d| l.contains(&d.message)));
        lines.insert(
            0,
            "not applied: the daemon's environment lacks variables the specs name (add them to the \
             service's environment and restart the daemon)"
                .into(),
        );
        return Applied::Invalid(lines);
    }
    let mut instance = shared.config.applied_to(desired.instance.clone());
    if instance.data != shared.data {
        tracing::warn!("data_dir changed: the daemon keeps using the old one until it restarts");
    }
    instance.data = shared.data.clone();
    shared.set_instance(instance);
    let lock = match Lock::acquire(
        &shared.data.state_lock(),
        "pipeline daemon (watcher)",
        Duration::from_secs(60),
        |holder| {
            let who = holder.map_or("another process".to_string(), |h| h.to_string());
            tracing::info!(%who, "waiting for the state lock to apply a spec change");
        },
    ) {
        Ok(l) => l,
        Err(e) => return Applied::Failed(e.to_string()),
    };
    let validated = started.elapsed();
    let result = (|| -> Result<Applied, String> {
        // Read, then plan without holding the state open (binding changed SQL against analytics
        // takes a while, and this process's readers must not wait for it); the state lock keeps
        // other applies out meanwhile, and the write checks the serial again.
        let recorded = shared
            .state
            .recorded(&desired.objects)
            .map_err(|e| e.to_string())?;
        let mut plan = plan::against(&desired, &recorded, &[]).map_err(|e| e.to_string())?;
        if !plan.has_changes() {
            return Ok(Applied::Unchanged);
        }
        // Nobody reviews what the watcher applies, so a change that would break what reads it
        // waits for a person: reported, never applied silently.
        plan::impact::assess(&desired, &mut plan);
        let planned = started.elapsed();
        if plan.breaking().next().is_some() {
            let mut lines = plan::render::breaking_lines(&plan);
            lines.push(
                "not applied: the plan has breaking changes. Fix the specs, or apply them from a \
                 shell with `pipeline apply --allow-breaking`"
                    .into(),
            );
            return Ok(Applied::Breaking(lines));
        }
        let applied = shared
            .state
            .write()
            .and_then(|mut w| state::registry::apply(&mut w, &plan.write_set("watcher")))
            .map_err(|e| e.to_string())?;
        crate::exec::retire_sources(&shared.data.extracts(), &plan.deleted_sources())
            .map_err(|e| format!("removing the extracts of deleted sources: {e}"))?;
        let s = plan.summary;
        let ms = |d: Duration| d.as_millis() as u64;
        Ok(Applied::Applied {
            serial: applied.serial,
            summary: format!(
                "{} added, {} changed, {} destroyed",
                s.add, s.change, s.destroy
            ),
            tasks: plan.tasks.clone(),
            timings: [
                ms(validated),
                ms(planned - validated),
                ms(started.elapsed() - planned),
            ],
        })
    })();
    drop(lock);
    result.unwrap_or_else(Applied::Failed)
}

/// How long after a failed apply (the state lock held by a long shell apply, say) it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Handles one (debounced) change: apply, report, then run what the apply queued. Returns whether
/// the apply failed (not: was invalid) and should be tried again.
async fn handle_change(shared: &Arc<Shared>) -> bool {
    let s = shared.clone();
    let outcome = tokio::task::spawn_blocking(move || apply_once(&s))
        .await
        .unwrap_or_else(|e| Applied::Failed(format!("the apply panicked: {e}")));
    let mut status = super::WatcherStatus {
        last_change_at: Some(rfc3339(chrono::Utc::now())),
        ..shared.watcher.lock().map(|w| w.clone()).unwrap_or_default()
    };
    let failed = matches!(outcome, Applied::Failed(_));
    let tasks = match outcome {
        Applied::Invalid(lines) => {
            tracing::error!(
                errors = lines.len(),
                "spec change NOT applied: the specs are invalid; the last applied state keeps serving"
            );
            for line in &lines {
                tracing::error!("{line}");
            }
            shared.stats.apply_result("invalid");
            status.last_result = Some("invalid".into());
            status.errors = lines;
            None
        }
        Applied::Breaking(lines) => {
            tracing::error!(
                changes = lines.len() - 1,
                "spec change NOT applied: it has breaking changes; the last applied state keeps serving"
            );
            for line in &lines {
                tracing::error!("{line}");
            }
            shared.stats.apply_result("breaking");
            status.last_result = Some("breaking".into());
            status.errors = lines;
            None
        }
        Applied::Unchanged => {
            // Unchanged because a shell applied the same change first: serve it.
            let s = shared.clone();
            let _ = tokio::task::spawn_blocking(move || follow_state(&s)).await;
            if matches!(status.last_result.as_deref(), Some("invalid" | "failed")) {
                tracing::info!(
                    "the specs are valid again and match what is applied: nothing to apply"
                );
            } else {
                tracing::debug!("specs changed on disk but not in substance: nothing to apply");
            }
            status.last_result = Some("unchanged".into());
            status.errors.clear();
            shared.reload.notify_one();
            None
        }
        Applied::Failed(e) => {
            tracing::error!(error = %e, retry_in = ?RETRY_AFTER, "spec change NOT applied");
            shared.stats.apply_result("failed");
            status.last_result = Some("failed".into());
            status.errors = vec![e];
            None
        }
        Applied::Applied {
            serial,
            summary,
            tasks,
            timings: [validate_ms, plan_ms, write_ms],
        } => {
            tracing::info!(
                serial, %summary, tasks = tasks.len(), validate_ms, plan_ms, write_ms,
                "spec change applied"
            );
            shared.stats.apply_result("applied");
            status.last_result = Some("applied".into());
            status.last_applied_serial = Some(serial);
            status.errors.clear();
            if let Err(e) = shared.reload_snapshot() {
                tracing::error!(error = %e, "could not read the registry after applying");
            }
            Some(tasks)
        }
    };
    if let Ok(mut w) = shared.watcher.lock() {
        *w = status;
    }
    if let Some(tasks) = tasks {
        let shared = shared.clone();
        tokio::spawn(async move { run_applied(&shared, tasks).await });
    }
    failed
}

/// Runs what an apply queued (with anything left pending), waiting for busy tables to be free.
async fn run_applied(shared: &Arc<Shared>, tasks: Vec<crate::registry::task::Task>) {
    let mut changes = shared.runs.changes();
    loop {
        let pending = match tokio::task::block_in_place(|| runs::pending(shared)) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "could not read the queued tasks; `pipeline run` runs them");
                return;
            }
        };
        let req = runs::Request {
            trigger: "watcher".into(),
            who: "watcher".into(),
            tasks: crate::registry::dag::merge(tasks.clone(), &pending),
        };
        match shared.runs.start(shared, req) {
            Ok(_) | Err(Refused::Nothing) => return,
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

/// Watches the spec directories (and the state file) until shutdown.
pub async fn run(shared: Arc<Shared>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Change>();
    let retry = tx.clone();
    let retry_later = move || {
        let tx = retry.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RETRY_AFTER).await;
            let _ = tx.send(Change::Specs);
        });
    };
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

    // Converge first: apply whatever changed while the daemon was down.
    if handle_change(&shared).await {
        retry_later();
    }
    loop {
        let mut changes = std::collections::BTreeSet::new();
        tokio::select! {
            got = rx.recv() => match got {
                Some(c) => changes.insert(c),
                None => return,
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        // Debounce: wait until the files have been quiet for `debounce`.
        while let Ok(Some(c)) = tokio::time::timeout(debounce, rx.recv()).await {
            changes.insert(c);
        }
        if shared.shutting_down() {
            return;
        }
        if changes.contains(&Change::Specs) {
            add_watches(&mut watcher, &root, &mut watched);
            if handle_change(&shared).await {
                retry_later();
            }
        } else {
            let s = shared.clone();
            let _ = tokio::task::spawn_blocking(move || follow_state(&s)).await;
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

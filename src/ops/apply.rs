//! THE apply, for `pipeline apply` and the daemon's watcher alike: take the state lock, plan (or check
//! a saved plan), label the plan's impact, refuse what must not be applied unattended, write the
//! changes and queue their tasks in one state transaction, then clean up after deleted objects and
//! run the tasks.
//!
//! Two rules both callers follow (they used to differ):
//! - **The state lock is held through the run.** One apply at a time per instance, its tasks
//!   included (as Terraform holds its lock through an apply): a second apply planned while the first
//!   one's tasks run would plan against a registry whose data is still being built.
//! - **Data goes only after the state commit.** The Parquet of deleted tables (when purging) and the
//!   extract.duckdb of deleted sources are removed only once the state no longer registers them: if
//!   the write fails, nothing was lost and the last good version keeps serving.
//!
//! Nothing here prints: the caller learns what happens through [`Hooks`] and the returned
//! [`ApplyOutcome`].

use super::sync::{self, Pending, SyncError};
use crate::fslock::{Holder, Lock, LockError};
use crate::instance::{DataDir, Instance};
use crate::plan::{self, Desired, Plan, PlanError};
use crate::registry::document::{Action, Kind, Objects};
use crate::registry::registered::{Malformed, Registered};
use crate::registry::task::Task;
use crate::state::registry::{ObjectWrite, WriteSet};
use crate::state::{StateError, StateStore};
use std::path::PathBuf;
use std::time::Duration;

/// How an apply is asked to go.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Who applies, as apply_log records it (an OS user, `watcher`).
    pub who: String,
    /// The command named in the state lock's holder file (`pipeline apply`).
    pub holder: String,
    /// A plan reviewed earlier: applied exactly, or refused when the specs or the state moved on.
    pub saved: Option<Plan>,
    /// Narrows a fresh plan to these objects (see [`plan::against`]).
    pub targets: Vec<String>,
    /// Apply even changes labelled breaking.
    pub allow_breaking: bool,
    /// Also delete the Parquet of deleted tables (after the state commit).
    pub purge: bool,
    pub run: RunAfter,
    /// How long to wait for another apply's state lock.
    pub lock_timeout: Duration,
}

impl ApplyOptions {
    /// Defaults for `who`: a fresh full plan, nothing breaking, no purge, run what is applied.
    pub fn new(who: &str, holder: &str) -> ApplyOptions {
        ApplyOptions {
            who: who.into(),
            holder: holder.into(),
            saved: None,
            targets: Vec::new(),
            allow_breaking: false,
            purge: false,
            run: RunAfter::Applied,
            lock_timeout: Duration::from_secs(10),
        }
    }
}

/// Which tasks run once the state is written (under the state lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunAfter {
    /// Queue only (`--queue-only`): `pipeline run` or the daemon runs them later.
    Never,
    /// The applied plan's tasks with whatever is pending; nothing when nothing changed.
    Applied,
    /// As `Applied`, and also pending tasks when nothing changed (`pipeline apply` finishes what an
    /// earlier apply left).
    Always,
}

/// What the caller sees of an apply as it goes, and how its tasks run. Only `run` is required.
pub trait Hooks {
    /// The run's own result: the CLI's finished run, the daemon's run id.
    type Ran;

    /// Another process holds the state lock; waiting for it.
    fn waiting_for_lock(&mut self, _holder: Option<&Holder>) {}
    /// The state lock was left by a process that is gone, and taken over.
    fn took_over_lock(&mut self, _from: &Holder) {}
    /// The plan about to be written: rendered, confirmed. `false` declines (nothing is written).
    fn review(&mut self, _plan: &Plan) -> bool {
        true
    }
    /// The state is written (before the tasks run).
    fn applied(&mut self, _applied: &Applied) {}
    /// Runs `tasks` (already merged with what is pending) and returns when they are done; the
    /// state lock is still held.
    fn run(&mut self, instance: &Instance, registered: Registered, tasks: Vec<Task>) -> Self::Ran;
}

/// What the write did.
#[derive(Clone, Debug)]
pub struct Applied {
    pub serial: i64,
    pub summary: plan::Summary,
    pub changes: usize,
    pub queued_tasks: usize,
    /// Paths removed by `purge`.
    pub purged: usize,
    /// How long validation's caller-side work is not counted: planning and writing, in ms.
    pub plan_ms: u64,
    pub write_ms: u64,
}

#[derive(Debug)]
pub enum ApplyOutcome<R> {
    /// The state already matches the specs; `run` is what was pending, when it ran.
    NothingToDo {
        plan: Box<Plan>,
        pending: usize,
        run: Option<R>,
    },
    Applied {
        plan: Box<Plan>,
        applied: Applied,
        run: Option<R>,
    },
    /// Nothing was written; why.
    Refused(Refused),
}

#[derive(Debug)]
pub enum Refused {
    /// The specs name environment variables the environment lacks (the diagnostics' messages):
    /// the tasks an apply queues would fail on them.
    MissingEnv(Vec<String>),
    /// A saved plan no longer fits: the specs or the state changed since it was made.
    StalePlan(String),
    /// The plan has breaking changes and `allow_breaking` is off: one line per change.
    Breaking { plan: Box<Plan>, lines: Vec<String> },
    /// [`Hooks::review`] said no.
    Declined(Box<Plan>),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::MissingEnv(v) => write!(
                f,
                "not applied: {} environment variable(s) the specs name are unset",
                v.len()
            ),
            Refused::StalePlan(why) => write!(f, "stale plan: {why}"),
            Refused::Breaking { plan, .. } => write!(
                f,
                "not applied: the plan has {} breaking change(s)",
                plan.summary.breaking
            ),
            Refused::Declined(_) => write!(f, "not applied: declined"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error("purging {0}: {1}")]
    Purge(PathBuf, std::io::Error),
    #[error("removing the extracts of deleted sources: {0}")]
    Retire(std::io::Error),
    #[error("the data directory: {0}")]
    DataDir(crate::instance::InstanceError),
    #[error(transparent)]
    Sync(#[from] SyncError),
}

impl ApplyError {
    /// Worth trying again as it is (the state or its lock is busy, a file is momentarily
    /// unavailable); otherwise only a change (to the specs, the binary, the disk) can help.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::Lock(LockError::Io(..)) => false,
            ApplyError::Lock(_) => true,
            ApplyError::State(e) | ApplyError::Sync(SyncError::State(e)) => state_transient(e),
            ApplyError::Purge(..) | ApplyError::Retire(_) | ApplyError::DataDir(_) => true,
            ApplyError::Plan(_) | ApplyError::Malformed(_) | ApplyError::Sync(_) => false,
        }
    }
}

fn state_transient(e: &StateError) -> bool {
    match e {
        StateError::Busy(_) | StateError::Io(..) | StateError::Stale(_) => true,
        StateError::TooNew { .. } | StateError::Migration { .. } | StateError::Missing(_) => false,
        // A DuckDB error (a full disk, a lock of another kind): not obviously permanent.
        _ => true,
    }
}

/// Applies `desired` (validated specs). See the module documentation for the rules.
pub fn apply<H: Hooks>(
    desired: &Desired,
    opts: &ApplyOptions,
    hooks: &mut H,
) -> Result<ApplyOutcome<H::Ran>, ApplyError> {
    let unset: Vec<String> = desired
        .unset_env_vars()
        .into_iter()
        .map(|d| d.message.clone())
        .collect();
    if !unset.is_empty() {
        return Ok(ApplyOutcome::Refused(Refused::MissingEnv(unset)));
    }
    let data = &desired.instance.data;
    let lock = Lock::acquire(&data.state_lock(), &opts.holder, opts.lock_timeout, |h| {
        hooks.waiting_for_lock(h)
    })?;
    if let Some(h) = &lock.took_over_from {
        hooks.took_over_lock(h);
    }
    let outcome = locked(desired, opts, hooks);
    // Held until here: through the write and the run (module documentation).
    drop(lock);
    outcome
}

fn locked<H: Hooks>(
    desired: &Desired,
    opts: &ApplyOptions,
    hooks: &mut H,
) -> Result<ApplyOutcome<H::Ran>, ApplyError> {
    let started = std::time::Instant::now();
    let store = StateStore::of(&desired.instance.data);
    let mut plan = match &opts.saved {
        Some(saved) => {
            if let Err(why) = check_saved(saved, desired, &store)? {
                return Ok(ApplyOutcome::Refused(Refused::StalePlan(why)));
            }
            saved.clone()
        }
        // Read, then plan without holding the state open: binding changed SQL against analytics
        // takes a while, and readers of this process must not wait for it. The state lock keeps
        // other applies out, and the write checks the serial again.
        None => plan::against(desired, &store.recorded(&desired.objects)?, &opts.targets)?,
    };
    if !plan.has_changes() {
        // Under the state lock: the digest a no-op plan reads, when a crash or an upgrade left none.
        store.ensure_digest();
        let pending = sync::pending_tasks(&store)?;
        let run = if opts.run == RunAfter::Always && !pending.is_empty() {
            Some(run_tasks(desired, opts, &store, Vec::new(), hooks)?)
        } else {
            None
        };
        return Ok(ApplyOutcome::NothingToDo {
            plan: Box::new(plan),
            pending: pending.len(),
            run,
        });
    }
    // A saved plan keeps the labels that were reviewed; one saved by an older binary has none yet.
    if plan::impact::needs_assessment(&plan) {
        plan::impact::assess(desired, &mut plan);
    }
    if plan.summary.breaking > 0 && !opts.allow_breaking {
        let lines = plan::render::breaking_lines(&plan);
        return Ok(ApplyOutcome::Refused(Refused::Breaking {
            plan: Box::new(plan),
            lines,
        }));
    }
    if !hooks.review(&plan) {
        return Ok(ApplyOutcome::Refused(Refused::Declined(Box::new(plan))));
    }
    let planned = started.elapsed();
    let written = store.apply_registry(&write_set(&plan, &opts.who))?;
    let wrote = started.elapsed();
    // Only now that the state no longer registers them may their data go.
    let purged = if opts.purge {
        purge(&desired.instance.data, &plan)?
    } else {
        0
    };
    crate::exec::retire_sources(&desired.instance.data.extracts(), &plan.deleted_sources())
        .map_err(ApplyError::Retire)?;
    let ms = |d: Duration| d.as_millis() as u64;
    let applied = Applied {
        serial: written.serial,
        summary: plan.summary,
        changes: plan.changes.len(),
        queued_tasks: written.queued_tasks,
        purged,
        plan_ms: ms(planned),
        write_ms: ms(wrote - planned),
    };
    hooks.applied(&applied);
    let run = if opts.run != RunAfter::Never && applied.queued_tasks > 0 {
        Some(run_tasks(desired, opts, &store, plan.tasks.clone(), hooks)?)
    } else {
        None
    };
    Ok(ApplyOutcome::Applied {
        plan: Box::new(plan),
        applied,
        run,
    })
}

/// Runs `planned` with whatever is pending, against what the state now registers.
fn run_tasks<H: Hooks>(
    desired: &Desired,
    opts: &ApplyOptions,
    store: &StateStore,
    planned: Vec<Task>,
    hooks: &mut H,
) -> Result<H::Ran, ApplyError> {
    let mut instance = desired.instance.clone();
    instance.create_data_dir().map_err(ApplyError::DataDir)?;
    // A full plan leaves the state registering exactly the specs; a targeted one does not, so then
    // the state is read back.
    let objects =
        if opts.targets.is_empty() && opts.saved.as_ref().is_none_or(|p| p.targets.is_empty()) {
            desired.objects.clone()
        } else {
            store.recorded(&Objects::new())?.objects
        };
    let registered = Registered::from_objects(&objects)?;
    let assembled = sync::assemble(
        store,
        &registered,
        &sync::Request::Planned(planned),
        Pending::Merge,
    )?;
    Ok(hooks.run(&instance, registered, assembled.tasks))
}

/// A saved plan applies only to the specs it was made from and the state serial it was made at
/// (checked again inside the write transaction). `Ok(Err(why))` when it is stale.
fn check_saved(
    plan: &Plan,
    desired: &Desired,
    store: &StateStore,
) -> Result<Result<(), String>, StateError> {
    let digest = desired.digest();
    if plan.spec_digest != digest {
        return Ok(Err(format!(
            "the specs changed since this plan was made (digest {} then, {} now). Run `pipeline plan \
             --out FILE` again and review the new plan",
            short(&plan.spec_digest),
            short(&digest)
        )));
    }
    let serial = if store.exists() { store.serial()? } else { 0 };
    if serial != plan.state_serial {
        return Ok(Err(format!(
            "it was made at state serial {} but the state is at serial {serial} (another apply ran \
             since). Run `pipeline plan --out FILE` again and review the new plan",
            plan.state_serial
        )));
    }
    Ok(Ok(()))
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// What applying `plan` writes to the state, as `who`.
pub fn write_set(plan: &Plan, who: &str) -> WriteSet {
    WriteSet {
        expected_serial: plan.state_serial,
        spec_digest: plan.spec_digest.clone(),
        writes: plan
            .changes
            .iter()
            .map(|c| ObjectWrite {
                kind: c.kind,
                id: c.id.clone(),
                action: c.action,
                object: c.object.clone(),
                before: c.before.clone(),
                // Field changes are plain strings and values: serializing them cannot fail.
                detail: serde_json::to_value(&c.fields).unwrap_or_default(),
            })
            .collect(),
        tasks: plan.tasks.clone(),
        record: serde_json::to_string(plan).unwrap_or_default(),
        who: who.to_string(),
    }
}

/// Removes the extracted data of the tables `plan` deletes. Returns how many paths were removed.
fn purge(data: &DataDir, plan: &Plan) -> Result<usize, ApplyError> {
    let mut removed = 0;
    for c in &plan.changes {
        if c.kind != Kind::Table || c.action != Action::Delete {
            continue;
        }
        let Some(before) = &c.before else { continue };
        let (Some(source), Some(name)) = (before.str("source"), before.str("name")) else {
            continue;
        };
        // Names were validated when they were applied; never follow anything else.
        if !crate::names::is_source_name(source) || !crate::names::is_identifier(name) {
            continue;
        }
        let base = data.extracts().join(source).join("data");
        for path in [base.join(format!("{name}.parquet")), base.join(name)] {
            let result = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else if path.exists() {
                std::fs::remove_file(&path)
            } else {
                continue;
            };
            result.map_err(|e| ApplyError::Purge(path.clone(), e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

//! Running tasks (DESIGN.md §8): [`crate::registry::dag`] decides which tasks a run has and in
//! which order, [`scheduler`] runs them in parallel on tokio, [`work`] is what each task does, [`progress`] shows
//! it. [`execute`] ties them together: it takes the data locks, runs the DAG, publishes (or drops)
//! the staged analytics file, and records the run in the state.

pub mod downstream;
pub mod error;
pub mod jira;
pub mod profile;
pub mod progress;
pub mod publish;
pub mod scheduler;
pub mod work;

use crate::extract::{Extracted, Previous};
use crate::extract_db::RemotePolicy;
use crate::fslock::{self, Lock};
use crate::instance::Instance;
use crate::registry::registered::Registered;
use crate::registry::task::{Task, TaskKind};
use crate::state::{self, sync, StateStore};
pub use error::TaskError;
use scheduler::{Finished, Observer, Status};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Lock(#[from] fslock::LockError),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Interrupted(#[from] scheduler::Interrupted),
}

pub struct Options {
    /// `run`, `apply`, `schedule`, `api`.
    pub trigger: String,
    pub who: String,
    /// `-j`; default: the instance's `defaults.concurrency`.
    pub jobs: Option<usize>,
    pub full_refresh: bool,
    /// Tables (ids) whose new schema this run publishes whatever it is, once (`--accept-schema`).
    pub accept_schema: std::collections::BTreeSet<String>,
    pub lock_timeout: Duration,
    /// Set from outside to stop the run (nothing new starts; running tasks finish). When `None`,
    /// the run owns SIGINT/SIGTERM itself; when `Some`, the caller does (the daemon).
    pub cancel: Option<Arc<AtomicBool>>,
    /// Id for the run; a new one when `None`.
    pub run_id: Option<String>,
    /// The caller chose which transforms the run builds (`pipeline run --select`): build exactly
    /// those, never narrow them to what a one-source run would rebuild.
    pub chosen_transforms: bool,
    /// The run republishes sources their push connector has just written ([`publish::publish_source`]):
    /// a push source's rebuild takes its extract.duckdb as written instead of syncing it again.
    pub pushed: bool,
    /// Profile the tables whose data changed, after the publish (`run --no-profile`: not).
    pub profile: bool,
}

impl Options {
    /// Options for a run started from the command line.
    pub fn cli(
        trigger: &str,
        jobs: Option<usize>,
        full_refresh: bool,
        lock_timeout: Duration,
    ) -> Options {
        Options {
            trigger: trigger.into(),
            who: fslock::os_user(),
            jobs,
            full_refresh,
            accept_schema: Default::default(),
            lock_timeout,
            cancel: None,
            run_id: None,
            chosen_transforms: false,
            pushed: false,
            profile: true,
        }
    }
}

/// A finished run.
#[derive(Debug)]
pub struct Outcome {
    pub run_id: String,
    pub tasks: Vec<Finished>,
    pub published: bool,
    pub cancelled: bool,
    /// Problems that did not fail a task (skipped extracts, tables without data yet).
    pub warnings: Vec<String>,
    pub analytics: PathBuf,
    /// The run could not be recorded in the state (it was removed during the run): the run failed.
    pub record_error: Option<String>,
    /// What the profile step after the publish did.
    pub profiled: profile::Profiled,
}

impl Outcome {
    pub fn failures(&self) -> impl Iterator<Item = &Finished> {
        self.tasks.iter().filter(|f| f.status == Status::Failed)
    }

    pub fn ok(&self) -> bool {
        !self.cancelled && self.failures().next().is_none() && self.record_error.is_none()
    }

    pub fn count(&self, status: Status) -> usize {
        self.tasks.iter().filter(|f| f.status == status).count()
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// A run id: the start time, the process and a per-process counter, so runs started by one daemon
/// in the same second differ.
pub fn new_run_id() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = format!(
        "{}-{:04x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        std::process::id() & 0xffff
    );
    if n == 0 {
        base
    } else {
        format!("{base}-{n}")
    }
}

/// Runs `tasks` against what is `registered`, publishes, and records the run.
pub fn execute(
    inst: &Instance,
    registered: Registered,
    tasks: Vec<Task>,
    opts: &Options,
    observer: &mut dyn Observer,
) -> Result<Outcome, ExecError> {
    let run_id = opts.run_id.clone().unwrap_or_else(new_run_id);
    let started = chrono::Utc::now();
    let store = StateStore::of(&inst.data);
    let state_path = store.path().to_path_buf();
    let (before, failing_before, transforms_before) = {
        let r = store.read()?;
        let transforms = state::downstream::transforms(&r)?
            .into_iter()
            .filter_map(|t| Some((t.name, (t.status?, t.reason))))
            .collect();
        (
            state::sync::read_before(&r)?,
            state::report::failing_tables(&r)?,
            transforms,
        )
    };
    let pending: std::collections::BTreeSet<String> =
        before.pending.iter().map(|t| t.id.clone()).collect();

    // One run per source at a time: its extracts and its extract.duckdb are written by one process.
    let mut sources: Vec<String> = tasks
        .iter()
        .filter_map(|t| match t.kind {
            TaskKind::Rebuild => Some(t.target.clone()),
            TaskKind::Extract | TaskKind::Attach => {
                registered.tables.get(&t.target).map(|x| x.source.clone())
            }
            _ => None,
        })
        .collect();
    sources.sort();
    sources.dedup();
    let mut held = Vec::new();
    for s in &sources {
        if !crate::names::is_source_name(s) {
            continue;
        }
        held.push(Lock::acquire(
            &inst.data.source_lock(s),
            &format!("pipeline {}", opts.trigger),
            opts.lock_timeout,
            |h| {
                let who = h.map_or("another process".to_string(), |h| h.to_string());
                observer.waiting(&format!("source {s}"), &who);
            },
        )?);
    }

    let (tasks, scope, pruned) = scoped(inst, &registered, tasks, &sources, opts);

    let cancel = opts
        .cancel
        .clone()
        .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
    let ctx = Arc::new(
        work::Context::new(
            work::ContextParts {
                root: inst.root.clone(),
                data: inst.data.clone(),
                registered,
                policy: RemotePolicy::of_instance(inst),
                previous: before
                    .previous
                    .into_iter()
                    .map(|(id, t)| (id, previous(t)))
                    .collect(),
                owners: before.owners,
                full_refresh: opts.full_refresh,
                chosen_transforms: opts.chosen_transforms,
                pushed: opts.pushed,
                accept_schema: opts.accept_schema.clone(),
                lock_timeout: opts.lock_timeout,
                scope,
                limits: inst.run_limits,
            },
            cancel.clone(),
        )
        .map_err(ExecError::Setup)?,
    );
    let jobs = opts.jobs.unwrap_or(inst.concurrency).max(1);
    let body_ctx = ctx.clone();
    let body: scheduler::Body = Arc::new(move |t: &Task| body_ctx.run(t));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ExecError::Setup(e.to_string()))?;
    let ran = runtime.block_on(scheduler::run(
        tasks,
        jobs,
        body,
        observer,
        cancel.clone(),
        opts.cancel.is_none(),
    ));
    let mut finished = match ran {
        Ok(f) => f,
        Err(interrupted) => {
            // Running task bodies are abandoned, not waited for: the caller ends the process.
            runtime.shutdown_background();
            return Err(interrupted.into());
        }
    };
    let cancelled = cancel.load(std::sync::atomic::Ordering::SeqCst);

    // Keep last good downstream: judge every transform and check, keep the previous result of each
    // transform that was not built, and say so in the new file.
    let staged = ctx.staged_report();
    let inputs = downstream::Inputs {
        failing_before,
        transforms_before,
        unpublished: staged
            .as_ref()
            .map(|r| downstream::unpublished(&ctx.registered, r))
            .unwrap_or_default(),
    };
    let mut judged = downstream::judge(&ctx.registered, &finished, &inputs);
    // Transforms left out of a one-source run are in its copy of the live file; if it had to
    // rebuild the whole file after all, they are kept from the live one like unbuilt ones (they
    // come first: nothing they read was built in this run).
    let mut not_built: Vec<String> = match ctx.staged_full() {
        Some(true) => pruned,
        _ => Vec::new(),
    };
    not_built.extend(
        finished
            .iter()
            .filter(|f| f.task.kind == TaskKind::Transform && !f.status.succeeded())
            .map(|f| f.task.target.clone()),
    );
    let kept = if cancelled {
        Vec::new()
    } else {
        ctx.keep_previous(&not_built)
    };
    downstream::settle(&mut judged, &kept, staged.is_some());
    let metas: Vec<crate::analytics::TransformMeta> = ctx
        .registered
        .transforms
        .keys()
        .map(|name| {
            let v = judged.transforms.get(name);
            // A transform this run did not judge (a one-source run leaves out what does not read
            // the source) keeps the state recorded before.
            let before = inputs.transforms_before.get(name);
            let (status, reason) = match v {
                Some(v) if v.not_built && !kept.contains(name) => ("missing", v.reason.clone()),
                Some(v) => (v.state.as_str(), v.reason.clone()),
                None => match before {
                    Some((status, reason)) => (status.as_str(), reason.clone()),
                    None => ("ok", None),
                },
            };
            crate::analytics::TransformMeta {
                name: name.clone(),
                status: status.into(),
                reason,
            }
        })
        .collect();
    let finishing = std::time::Instant::now();
    // A run records into the state it started from. If that is gone (data/state removed while the
    // run worked), nothing may be published that the state would not know about: drop the staged
    // file and fail the publish.
    let state_gone = !state_path.is_file();
    if state_gone {
        if let Some(f) = finished
            .iter_mut()
            .find(|f| f.task.kind == TaskKind::Publish && f.status.succeeded())
        {
            f.status = Status::Failed;
            f.error = Some(format!(
                "not published: the state database {} disappeared during the run",
                state_path.display()
            ));
            observer.finished(f);
        }
    }
    let published = match ctx.finish(cancelled || state_gone, &metas, not_built.is_empty()) {
        Ok(p) => {
            if p {
                observer.published(finishing.elapsed());
            }
            p
        }
        Err(e) => {
            // The swap failed: the live file is the previous one. Say so on the publish task.
            let why = format!("could not publish the new analytics file: {e}");
            if let Some(f) = finished
                .iter_mut()
                .find(|f| f.task.kind == TaskKind::Publish)
            {
                f.status = Status::Failed;
                f.error = Some(why.clone());
                observer.finished(f);
            }
            // Nothing built in this run is published: everything downstream keeps its old result.
            for v in judged
                .transforms
                .values_mut()
                .chain(judged.checks.values_mut())
            {
                if v.state == downstream::State::Ok {
                    v.state = downstream::State::Stale;
                    v.reason = Some(why.clone());
                }
            }
            false
        }
    };
    let publication = if published {
        ctx.published_report()
            .map(|r| downstream::publication(&ctx.registered, &r))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let outcome = |(name, v): (&String, &downstream::Verdict)| state::downstream::Outcome {
        name: name.clone(),
        status: v.state.as_str().into(),
        reason: v.reason.clone(),
        rows: v.rows,
    };
    let downstream_outcomes = state::downstream::Outcomes {
        transforms: judged.transforms.iter().map(outcome).collect(),
        checks: judged.checks.iter().map(outcome).collect(),
        tables: publication,
    };
    drop(held);
    let warnings: Vec<String> = finished
        .iter()
        .flat_map(|f| f.done.warnings.iter().cloned())
        .collect();
    let (claimed, released) = ctx.claims();

    let record = sync::RunRecord {
        run_id: run_id.clone(),
        trigger: opts.trigger.clone(),
        who: opts.who.clone(),
        started_at: timestamp(started),
        finished_at: timestamp(chrono::Utc::now()),
        status: if cancelled {
            "cancelled"
        } else if finished.iter().any(|f| f.status == Status::Failed) {
            "failed"
        } else {
            "ok"
        }
        .into(),
        published,
        tasks: finished
            .iter()
            .map(|f| sync::TaskRecord {
                task: f.task.id.clone(),
                kind: f.task.kind,
                target: f.task.target.clone(),
                started_at: timestamp(f.started_at),
                finished_at: timestamp(
                    f.started_at + chrono::Duration::from_std(f.duration).unwrap_or_default(),
                ),
                duration_ms: f.duration.as_millis() as i64,
                status: f.status.as_str().into(),
                rows: f.done.rows,
                bytes: f.done.bytes,
                error: f.error.clone(),
                detail: f.done.detail.clone(),
                extracted: f.done.extracted.as_ref().map(synced),
            })
            .collect(),
        claimed,
        released,
        completed_pending: finished
            .iter()
            .filter(|f| f.status.succeeded() && pending.contains(&f.task.id))
            .map(|f| f.task.id.clone())
            .collect(),
        downstream: downstream_outcomes,
    };
    // Never `StateStore::write`: it would create a new, empty state where the old one was removed.
    let recorded = store
        .write_existing()
        .and_then(|mut w| sync::record(&mut w, &record));
    let record_error = recorded.err().map(|e| e.to_string());

    // Profiles come last: the data is visible and the run recorded before they start, and nothing
    // they do changes the run's result.
    let mut warnings = warnings;
    let profiled = if opts.profile && !cancelled && record_error.is_none() {
        let step = profile::Step {
            data: &inst.data,
            registered: &ctx.registered,
            policy: &ctx.policy,
            limits: inst.run_limits,
            jobs,
            run_id: &run_id,
            run_time: (chrono::Utc::now() - started).to_std().unwrap_or_default(),
        };
        match profile::changed(&step) {
            Ok(p) => {
                for (id, e) in &p.failed {
                    warnings.push(format!(
                        "{id}: profile failed ({e}); the previous profile stays"
                    ));
                }
                if !p.profiled.is_empty() || !p.failed.is_empty() || p.deferred > 0 {
                    observer.profiled(&p);
                }
                p
            }
            Err(e) => {
                tracing::warn!("table profiles were not updated: {e}");
                warnings.push(format!("table profiles were not updated: {e}"));
                profile::Profiled::default()
            }
        }
    } else {
        profile::Profiled::default()
    };

    Ok(Outcome {
        run_id,
        tasks: finished,
        published,
        cancelled,
        warnings,
        analytics: inst.data.analytics(),
        record_error,
        profiled,
    })
}

/// Whether the run republishes in a copy of the live file ([`crate::analytics::publish::stage_sources`])
/// instead of rebuilding it: when it syncs exactly one source (`run --source X`, a push), that
/// source is republished and the transform tasks that do not read it are left out (their results
/// stay in the copy); when it syncs none but builds transforms (`run --select`, pending transforms),
/// the copy keeps every view and only those transforms are built. Returns the tasks, the scope and
/// the registered transforms the run does not build (kept from the live file should the copy be
/// refused and the whole file rebuilt). A full refresh, several sources, or a live file that does
/// not say what the source published keep every task and rebuild the whole file.
fn scoped(
    inst: &Instance,
    registered: &Registered,
    tasks: Vec<Task>,
    sources: &[String],
    opts: &Options,
) -> (Vec<Task>, Option<BTreeSet<String>>, Vec<String>) {
    let whole = |tasks| (tasks, None, Vec::new());
    if opts.full_refresh || !tasks.iter().any(|t| t.kind == TaskKind::Publish) {
        return whole(tasks);
    }
    let (tasks, scope) = match sources {
        [] => (tasks, BTreeSet::new()),
        [source] => {
            let Some(mut names) = crate::analytics::publish::live_views(&inst.data, source) else {
                return whole(tasks);
            };
            let tasks = if opts.chosen_transforms {
                tasks
            } else {
                names.extend(registered.tables_of(source).map(|t| t.name.to_lowercase()));
                let affected: BTreeSet<String> =
                    crate::registry::dag::transforms_reading(registered, Some(&names))
                        .into_iter()
                        .collect();
                prune_transforms(tasks, |name| affected.contains(name))
            };
            (tasks, BTreeSet::from([source.clone()]))
        }
        _ => return whole(tasks),
    };
    let built: BTreeSet<&str> = tasks
        .iter()
        .filter(|t| t.kind == TaskKind::Transform)
        .map(|t| t.target.as_str())
        .collect();
    let not_built = registered
        .transforms
        .keys()
        .filter(|name| !built.contains(name.as_str()))
        .cloned()
        .collect();
    (tasks, Some(scope), not_built)
}

/// `tasks` without the transform tasks `keep` refuses, and without waits on them.
fn prune_transforms(tasks: Vec<Task>, keep: impl Fn(&str) -> bool) -> Vec<Task> {
    let (kept, pruned): (Vec<Task>, Vec<Task>) = tasks
        .into_iter()
        .partition(|t| t.kind != TaskKind::Transform || keep(&t.target));
    let pruned_ids: BTreeSet<&str> = pruned.iter().map(|t| t.id.as_str()).collect();
    kept.into_iter()
        .map(|mut t| {
            t.after.retain(|a| !pruned_ids.contains(a.as_str()));
            t
        })
        .collect()
}

/// A table's last extract as the state recorded it, as extraction compares with it.
fn previous(t: state::sync::TableSync) -> Previous {
    Previous {
        fingerprint: t.fingerprint,
        last_cursor: t.last_cursor,
        rows: t.rows,
        size_bytes: t.size_bytes,
        hash: t.hash,
        // A schema that does not parse is as good as none: the published file's own schema is
        // used instead.
        schema: t.schema.and_then(|v| serde_json::from_value(v).ok()),
        output_stamp: t.output_stamp,
    }
}

/// What the state records of a successful extract.
fn synced(x: &Extracted) -> state::sync::Synced {
    // Columns and schema changes are plain data: serializing them cannot fail.
    fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).unwrap_or_default()
    }
    state::sync::Synced {
        rows: x.rows,
        bytes: x.bytes,
        hash: x.hash.clone(),
        cursor: x.cursor.clone(),
        fingerprint: x.fingerprint.clone(),
        schema: x.schema.as_ref().map(json),
        schema_changes: x.schema_changes.iter().map(json).collect(),
        schema_accepted_by: x.schema_accepted_by.clone(),
        output_stamp: x.output_stamp.clone(),
    }
}

/// Removes the extract.duckdb of sources that are no longer registered, so their views leave
/// analytics at the next publish. Their Parquet stays (apply --purge removes it).
pub fn retire_sources(extracts: &Path, sources: &[String]) -> std::io::Result<()> {
    for s in sources {
        if let Some(dir) = crate::extract_db::ExtractDir::new(extracts, s) {
            crate::extract_db::remove_db_files(&dir.db()).map_err(|e| match e {
                crate::extract_db::ContractError::Io(_, io) => io,
                other => std::io::Error::other(other.to_string()),
            })?;
        }
    }
    Ok(())
}

//! Republishing one source from outside a sync: push connectors (the Jira webhook processor) call
//! [`publish_source`] after they have written a source's data. It is an ordinary run — `rebuild:<source>`
//! (its extract.duckdb from the registered tables' data), `publish:analytics`, the transforms that
//! read the source, the metric checks — recorded in the state like any other (trigger `push`), so
//! ownership claims, keep-last-good and transform states hold; the run republishes only that
//! source in a copy of the live file ([`crate::analytics::stage_source`]), falling back to the full
//! rebuild when something else changed too.

use super::scheduler::{Finished, Observer};
use super::{execute, ExecError, Options, Outcome};
use crate::instance::Instance;
use crate::registry::dag::{self, Occasion, Work};
use crate::registry::registered::Registered;
use crate::registry::task::Task;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// How long a push waits for a run of the same source or another publish to finish.
pub const PUSH_LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// Republishes `source` (registered in `registered`, the daemon's registry snapshot) and records
/// the run. `who` names the caller in the run's history (`jira webhook`). Task progress goes to
/// the `tracing` log.
pub fn publish_source(
    inst: &Instance,
    registered: &Registered,
    source: &str,
    who: &str,
) -> Result<Outcome, ExecError> {
    publish_source_within(inst, registered, source, who, PUSH_LOCK_TIMEOUT)
}

/// [`publish_source`], waiting up to `lock_timeout` for the locks (`pipeline jira backfill
/// --lock-timeout`).
pub fn publish_source_within(
    inst: &Instance,
    registered: &Registered,
    source: &str,
    who: &str,
    lock_timeout: Duration,
) -> Result<Outcome, ExecError> {
    if !registered.sources.contains_key(source) {
        return Err(ExecError::Setup(format!(
            "no registered source `{source}` to publish"
        )));
    }
    let work = Work {
        occasion: Occasion::Sync,
        rebuild: [source.to_string()].into(),
        ..Work::default()
    };
    let tasks = dag::tasks(registered, &work);
    let opts = Options {
        trigger: "push".into(),
        who: who.into(),
        jobs: None,
        full_refresh: false,
        accept_schema: Default::default(),
        lock_timeout,
        // The caller owns the signals (the daemon); nothing cancels a push but the process ending.
        cancel: Some(Arc::new(AtomicBool::new(false))),
        run_id: None,
        chosen_transforms: false,
        pushed: true,
        profile: true,
    };
    execute(inst, registered.clone(), tasks, &opts, &mut Logged)
}

/// Progress of a push run, to the log.
struct Logged;

impl Observer for Logged {
    fn started(&mut self, task: &Task) {
        tracing::debug!(task = %task.id, "push: started");
    }

    fn finished(&mut self, f: &Finished) {
        match &f.error {
            Some(e) => tracing::warn!(task = %f.task.id, status = f.status.as_str(), "push: {e}"),
            None => tracing::debug!(task = %f.task.id, status = f.status.as_str(), "push: done"),
        }
    }

    fn cancelling(&mut self, _running: usize) {}

    fn published(&mut self, duration: Duration) {
        tracing::debug!(?duration, "push: analytics published");
    }
}

//! THE sync assembly: which tasks a run has (a selection of registered tables, an apply's planned
//! tasks, what earlier applies left pending, merged into one DAG), and running them. `pipeline run`,
//! apply's run and the daemon's scheduled, triggered and watcher runs all build their tasks here.

use crate::exec::{self, scheduler::Observer, ExecError, Options, Outcome};
use crate::instance::Instance;
use crate::registry::dag::{self, Selection, SelectionError};
use crate::registry::registered::Registered;
use crate::registry::task::Task;
use crate::state::{StateError, StateStore};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Selection(#[from] SelectionError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Malformed(#[from] crate::registry::registered::Malformed),
}

/// What the state registers: what runs run (unapplied edits never do). Nothing without a state.
pub fn registered(store: &StateStore) -> Result<Registered, SyncError> {
    if !store.exists() {
        return Ok(Registered::default());
    }
    let recorded = store.recorded(&crate::registry::document::Objects::new())?;
    Ok(Registered::from_objects(&recorded.objects)?)
}

/// Creates (or migrates) the state, so a run with nothing registered is recorded like any other.
pub fn ensure_state(store: &StateStore) -> Result<(), StateError> {
    drop(store.write()?);
    Ok(())
}

/// Whether tasks an earlier apply left pending join the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// Always (an apply's run, the daemon's start and scheduled runs that ask for them).
    Merge,
    /// Never (a triggered run of chosen tables).
    Leave,
    /// When the selection is everything (`pipeline run` without `--source`/`--table`): a partial
    /// run must not drag in unrelated work.
    WhenAll,
}

/// What a run is asked to do.
#[derive(Clone, Debug)]
pub enum Request {
    /// Sync these registered tables (their extracts, rebuilds, publish and what reads them).
    Select(Selection),
    /// Run the tasks an apply planned (none: only what is pending).
    Planned(Vec<Task>),
}

/// The tasks of a run, in order.
#[derive(Clone, Debug, Default)]
pub struct Assembled {
    pub tasks: Vec<Task>,
    /// Pending tasks that exist but were left out (a partial run): callers may say so.
    pub pending_left_out: usize,
}

/// Builds a run's tasks: the selection's sync tasks, the planned ones and (per `pending`) those an
/// earlier apply queued, as one DAG.
pub fn assemble(
    store: &StateStore,
    registered: &Registered,
    request: &Request,
    pending: Pending,
) -> Result<Assembled, SyncError> {
    let (tasks, all) = match request {
        Request::Select(sel) => (dag::sync_tasks(registered, sel)?, sel.is_all()),
        Request::Planned(tasks) => (tasks.clone(), true),
    };
    let merge = match pending {
        Pending::Merge => true,
        Pending::Leave => false,
        Pending::WhenAll => all,
    };
    let queued = if merge || pending == Pending::WhenAll {
        pending_tasks(store)?
    } else {
        Vec::new()
    };
    if merge {
        Ok(Assembled {
            tasks: dag::merge(tasks, &queued),
            pending_left_out: 0,
        })
    } else {
        Ok(Assembled {
            tasks,
            pending_left_out: queued.len(),
        })
    }
}

/// Tasks an apply queued that no run has done yet (none without a state).
pub fn pending_tasks(store: &StateStore) -> Result<Vec<Task>, StateError> {
    match store.read_if_exists()? {
        Some(r) => Ok(crate::state::sync::read_before(&r)?.pending),
        None => Ok(Vec::new()),
    }
}

/// Runs `tasks` against what is `registered`: takes the data locks, runs the DAG, publishes and
/// records the run ([`exec::execute`]).
pub fn run(
    instance: &Instance,
    registered: Registered,
    tasks: Vec<Task>,
    opts: &Options,
    observer: &mut dyn Observer,
) -> Result<Outcome, SyncError> {
    Ok(exec::execute(instance, registered, tasks, opts, observer)?)
}

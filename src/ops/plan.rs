//! Planning against the state: the one place that reads the recorded documents for a plan. The
//! `plan` module itself stays pure values (it never opens the state).

use crate::plan::{self, Desired, Plan, PlanError};
use crate::registry::document::Recorded;
use crate::state::{StateError, StateStore};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PlanStateError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Validated specs and the recorded state, read through the DuckDB instance validation already
/// started (so a no-op plan costs little more than `validate`). For reading only: an apply re-reads
/// the state under its lock.
pub fn desired_and_recorded(root: &Path) -> Result<(Desired, Recorded), PlanStateError> {
    let (specs, analysis, diags, conn) = crate::spec::check_keeping_db(root);
    let desired = plan::finish_desired(specs, &analysis, diags)?;
    let store = StateStore::of(&desired.instance.data);
    let recorded = match conn {
        Some(conn) => store.recorded_through(conn, &desired.objects)?,
        None => store.recorded(&desired.objects)?,
    };
    Ok((desired, recorded))
}

/// The recorded side of `desired`'s state (empty when there is no state yet).
pub fn recorded(store: &StateStore, desired: &Desired) -> Result<Recorded, StateError> {
    store.recorded(&desired.objects)
}

/// Plans `desired` against its recorded state; `targets` narrows it (see [`plan::against`]).
pub fn against_state(desired: &Desired, targets: &[String]) -> Result<Plan, PlanStateError> {
    let recorded = recorded(&StateStore::of(&desired.instance.data), desired)?;
    Ok(plan::against(desired, &recorded, targets)?)
}

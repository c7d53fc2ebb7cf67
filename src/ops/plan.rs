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

/// Validated specs and the recorded state. Cheap when nothing changed, so that a no-op plan costs
/// little more than `validate`: SQL checks come from validate's SQL cache, and the recorded side
/// from the registry digest ([`crate::state::digest`]) when it matches the specs exactly; else the
/// state is read, through the DuckDB instance validation started when it started one. For reading
/// only: an apply re-reads the state under its lock.
pub fn desired_and_recorded(root: &Path) -> Result<(Desired, Recorded), PlanStateError> {
    let cache = crate::spec::sql_cache::SqlCache::dir_from_env();
    let (specs, analysis, diags, conn) = crate::spec::check_keeping_db(root, cache.as_deref());
    let desired = plan::finish_desired(specs, &analysis, diags)?;
    let store = StateStore::of(&desired.instance.data);
    if let Some(recorded) = store.recorded_from_digest(&desired.objects) {
        return Ok((desired, recorded));
    }
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

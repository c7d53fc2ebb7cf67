//! The registry: the shared vocabulary of what is declared and applied, used by planning, the
//! state, the runner and the edges alike.
//!
//! [`document`] turns specs into one canonical document per source, table, transform and metric (what
//! a plan diffs and the state records); [`registered`] is the typed view of those documents that the
//! engine runs; [`task`] is a unit of a run's work; [`dag`] is the ONE builder of a run's tasks, for a
//! sync and for an apply's changes alike; [`select`] resolves `run --select`'s dbt-shaped selectors. Nothing here opens a file: these are values.

pub mod dag;
pub mod document;
pub mod lineage;
pub mod registered;
pub mod select;
pub mod task;

//! The use cases the command line and the daemon share, each written once: [`plan`] (read the
//! recorded documents from the state and plan the specs against them), [`apply`] (take the state
//! lock, plan or check a saved plan, write it, purge, run its tasks) and [`sync`] (which tasks a run
//! has, pending ones merged, and running them).
//!
//! The edges (`cli`, `daemon`) parse their input, call these, and render what comes back; the
//! functions here print nothing and never exit: they report through hooks and typed outcomes.

pub mod apply;
pub mod plan;
pub mod sync;

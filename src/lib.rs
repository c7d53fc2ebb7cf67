//! `pipeline`: a declarative data-pipeline engine. Git-versioned spec files in, an always-fresh,
//! documented analytics DuckDB out.
//!
//! The crate reads like the data flows (see docs/architecture.md): [`spec`] loads and validates the
//! spec files, [`diag`] reports problems, [`cli`] is the thin command-line edge.

pub mod analytics;
pub mod catalog;
pub mod checks;
pub mod cli;
pub mod connectors;
pub mod daemon;
pub mod diag;
pub mod duck;
pub mod exec;
pub mod extensions;
pub mod extract;
pub mod extract_db;
pub mod files;
pub mod fslock;
pub mod instance;
pub mod metrics;
pub mod names;
pub mod ops;
pub mod plan;
pub mod profile;
pub mod quote;
pub mod redact;
pub mod registry;
pub mod spec;
pub mod state;
pub mod timestamp;
pub mod value_json;
pub mod value_text;
pub mod workspace;

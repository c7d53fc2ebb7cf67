//! End-to-end tests: the real `pipeline` binary on real files in temporary directories.
//! One test binary (modules below) so the suite links once.

mod common;

mod cli;
mod daemon;
mod data_safety;
mod demo;
mod engine;
mod jira;
mod keboola;
mod metrics;
mod metrics_import;
mod plan_apply;
mod signals;
mod validate;

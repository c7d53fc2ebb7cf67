//! End-to-end tests: the real `pipeline` binary on real files in temporary directories.
//! One test binary (modules below) so the suite links once.

mod common;

mod analyst;
mod bigquery;
mod catalog;
mod cli;
mod daemon;
mod data_safety;
mod databases;
mod demo;
mod downstream;
mod engine;
mod everyday;
mod fmt;
mod jira;
mod jira_daemon;
mod keboola;
mod metrics;
mod metrics_import;
mod one_source;
mod ops;
mod plan_apply;
mod profile;
mod security_access;
mod security_daemon;
mod security_specs;
mod signals;
mod status;
mod validate;

//! End-to-end tests: the real `pipeline` binary on real files in temporary directories.
//! One test binary (modules below) so the suite links once.

mod common;

mod cli;
mod daemon;
mod demo;
mod downstream;
mod engine;
mod keboola;
mod metrics;
mod metrics_import;
mod plan_apply;
mod signals;
mod validate;

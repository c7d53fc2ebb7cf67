//! `pipeline daemon`: run schedules, apply spec changes as they are saved, and serve the HTTP API,
//! until SIGTERM/SIGINT.

use super::output;
use crate::daemon::{self, Config};
use crate::spec::model::MissedRuns;
use anyhow::Result;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline daemon                              serve the instance in the current directory
  pipeline daemon --listen 0.0.0.0:8585        listen on every interface (put TLS in front)
  pipeline daemon --log-format json            one JSON object per log line (for log shippers)
  pipeline admin token create --user ann --group analysts
                                               a bearer token for the API (shown once)

What runs:
  scheduler  each table's schedule in the instance time zone; a table never syncs twice at once
             (a due time during its run is coalesced into one more run); times missed while the
             daemon was down run once at start (scheduler.missed_runs: skip to not)
  watcher    a saved change under config/, pipelines/, registry/ or metrics/ is validated,
             planned and applied (apply_log: who = watcher), then synced; invalid specs are
             logged with file:line:col and never applied
  API        GET /health, /metrics (Prometheus), /api/status, /api/tables[/NAME],
             /api/metrics[/CATEGORY/NAME], /api/runs/ID; POST /api/sync/trigger, /api/query
             (bearer token; see docs/daemon.md)

`pipeline plan`, `apply`, `run` and `query` keep working from a shell while the daemon runs.
SIGTERM or Ctrl-C: stop accepting, let running syncs finish (--shutdown-timeout), then cancel
what is left; exit 0. Logs go to stderr (RUST_LOG=pipeline=debug for more).";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (default: server.listen of config/instance.yaml, else 127.0.0.1:8585;
    /// port 0 picks a free one, printed at start).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// After SIGTERM, how long running syncs may take to finish before they are cancelled.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = output::parse_duration)]
    shutdown_timeout: Duration,
    /// What to do at start about scheduled times missed while the daemon was down (default:
    /// scheduler.missed_runs of the instance, else run_once).
    #[arg(long, value_name = "POLICY", value_parser = ["run_once", "skip"])]
    missed_runs: Option<String>,
    /// How long the spec files must be quiet before a change is applied.
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = output::parse_duration)]
    debounce: Duration,
    /// Internal: run one API query read from stdin (the daemon starts these, with limits set).
    #[arg(long, hide = true)]
    query_worker: bool,
}

pub fn run(dir: &Path, args: Args) -> Result<ExitCode> {
    if args.query_worker {
        return Ok(daemon::api::query_worker_main());
    }
    let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    daemon::run(Config {
        root,
        listen: args.listen,
        shutdown_timeout: args.shutdown_timeout,
        missed_runs: args.missed_runs.as_deref().and_then(MissedRuns::from_name),
        debounce: args.debounce,
    })?;
    Ok(ExitCode::SUCCESS)
}

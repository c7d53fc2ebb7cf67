//! `pipeline pull`: a local copy of the data the caller may read on a server (docs/analyst.md).

use super::output::Format;
use crate::workspace::client::Client;
use crate::workspace::pull::{self, PullOptions};
use crate::workspace::{credentials, Workspace};
use anyhow::Result;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline pull                                   refresh the workspace you are in (or start one here)
  pipeline pull --workspace ~/data                into ~/data, from the default server
  pipeline pull --dry-run                         what would be downloaded and removed
  pipeline pull --format json                     the report as JSON (for scripts and hooks)
  pipeline pull --server http://127.0.0.1:8080 --workspace ./shop

Downloads only new and changed Parquet files (SHA-256 compared with the last pull), several at once,
each verified and renamed into place; removes tables you may no longer read; rebuilds
analytics.duckdb (views by relative paths: the directory can be moved), AGENTS.md and CLAUDE.md.
When nothing changed it writes nothing and takes a moment. A failure (server down, token revoked)
leaves the workspace as it was; files already verified are kept for the next pull.";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The workspace directory (default: the workspace you are in, else the current directory).
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// The server (default: the workspace's, else the one you last logged in to).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Show what would change; download and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Downloads at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    concurrency: usize,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// The workspace `dir` is in, unless `dir` is an instance root (an instance's own commands win).
pub(super) fn workspace_here(dir: &Path) -> Option<Workspace> {
    if dir.join("config").is_dir() {
        return None;
    }
    Workspace::find(dir)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn run(dir: &Path, args: Args, quiet: bool) -> Result<ExitCode> {
    let ws = match &args.workspace {
        Some(d) => Workspace::at(d),
        None => workspace_here(dir).unwrap_or_else(|| Workspace::at(dir)),
    };
    let server = match args.server {
        Some(s) => Some(credentials::normalize_server(&s)?),
        None => ws.load()?.map(|s| s.server),
    };
    let client = Client::new(credentials::resolve(server.as_deref())?);
    let opts = PullOptions {
        dry_run: args.dry_run,
        concurrency: args.concurrency,
        progress: !quiet && args.format == Format::Human && std::io::stderr().is_terminal(),
    };
    let report = pull::pull(&ws, &client, &opts)?;
    if args.format == Format::Json {
        anstream::println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let remote = if report.remote_tables.is_empty() {
        String::new()
    } else {
        format!(", {} remote", report.remote_tables.len())
    };
    if report.dry_run {
        for t in &report.transfers {
            anstream::println!(
                "would download {} ({}, {})",
                t.path,
                t.reason,
                human_bytes(t.size_bytes)
            );
        }
        for p in &report.removed {
            anstream::println!("would remove {p}");
        }
        anstream::println!(
            "{} file(s) to download ({}), {} to remove, {} unchanged",
            report.transfers.len(),
            human_bytes(report.bytes),
            report.removed.len(),
            report.unchanged_files
        );
    } else if !report.rebuilt {
        if !quiet {
            anstream::println!(
                "up to date: {} table(s){remote} in {} ({} ms)",
                report.tables,
                report.workspace,
                report.duration_ms
            );
        }
    } else {
        anstream::println!(
            "pulled {} file(s) ({}) from {}, removed {}: {} table(s){remote} in {} ({} ms)",
            report.transfers.len(),
            human_bytes(report.bytes),
            report.server,
            report.removed.len(),
            report.tables,
            report.workspace,
            report.duration_ms
        );
        if !quiet {
            for n in &report.notes {
                anstream::eprintln!("note: {n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

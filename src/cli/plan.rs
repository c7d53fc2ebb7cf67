//! `pipeline plan`: what apply would change in the registry, and the tasks it would queue.

use super::output::{self, Format};
use crate::plan::{self, render};
use anyhow::Result;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline plan                              the diff and the tasks apply would queue
  pipeline plan --out plan.json              save it; `pipeline apply plan.json` applies exactly it
  pipeline plan --detailed-exitcode          exit 2 when there are changes (for CI)
  pipeline plan --target shop.orders         only this object (repeatable; a source includes its tables)
  pipeline plan --format json                the saved-plan JSON on stdout

Markers: + create, ~ update (per field: old → new), -/+ replace (the change forces the data to be
rebuilt from scratch, e.g. query_mode, source_table, primary_key or sync mode), - delete.
Labels: [breaking] when a transform or metric that binds against the published analytics today
would not after the change (each is named, with DuckDB's message; `apply` refuses without
--allow-breaking), [non-breaking], [unknown] when it cannot be checked (nothing published yet, or
the data is extracted anew).
Exit status: 0 success (with --detailed-exitcode: no changes), 1 error, 2 changes present.";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Save the plan as JSON to FILE, to apply exactly this plan later with `pipeline apply FILE`.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// Plan only this object: a table id or name, a source (with its tables and transforms), a
    /// transform or a metric id (category/name). Repeatable.
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
}

pub fn run(dir: &Path, args: Args) -> Result<ExitCode> {
    let (desired, recorded) =
        output::specs_or_report(crate::ops::plan::desired_and_recorded(dir), args.format)?;
    output::warnings(&desired.specs, &desired.diags);
    let mut plan = plan::against(&desired, &recorded, &args.targets)?;
    if plan.has_changes() {
        // Labels each change breaking or not; binds against analytics only for SQL changes.
        plan::impact::assess(&desired, &mut plan);
    }
    let mut out = anstream::stdout().lock();
    match args.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&plan)?)?,
        Format::Human => write!(out, "{}", render::human(&plan))?,
    }
    if let Some(path) = &args.out {
        plan::save(&plan, path)?;
        if args.format == Format::Human {
            writeln!(
                out,
                "\nSaved the plan to {}. Apply exactly it with:\n  pipeline apply {}",
                path.display(),
                path.display()
            )?;
        }
    }
    let code = if args.detailed_exitcode && plan.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    };
    // The process ends right after this: freeing thousands of spec nodes and objects one by one
    // would cost ~10 ms of a no-op plan for nothing (nothing here holds a file or a lock).
    std::mem::forget((desired, recorded, plan));
    Ok(code)
}

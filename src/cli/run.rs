//! `pipeline run`: sync registered tables now — extract, rebuild their extracts, publish analytics,
//! build the transforms, check the metrics — and report every failure at the end.

use super::output::{self, Format};
use crate::exec::{self, progress, scheduler::Status, Options, Outcome};
use crate::instance::Instance;
use crate::ops;
use crate::registry::dag;
use crate::registry::registered::Registered;
use crate::registry::task::Task;
use crate::state::StateStore;
use anyhow::{bail, Result};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline run                         sync every registered table, publish, build transforms
  pipeline run --source shop           only the tables of source shop, then republish only shop
  pipeline run --table orders -j 8     one table, up to 8 tasks at once
  pipeline run --select order_facts    build one transform on the published data (nothing extracted)
  pipeline run --select order_facts+   it and every transform and metric check that reads it
  pipeline run --select +daily_revenue it and every transform it reads
  pipeline run --full-refresh          re-extract everything, ignoring fingerprints and cursors
  pipeline run --accept-schema orders  publish orders' new columns/types once, though its contract refuses them
  pipeline run --format json           one JSON document when the run ends: every task and the outcome
  pipeline run --format ndjson         one JSON event per line as it goes (task_started, task_finished, …)
  pipeline run --no-profile            do not profile the tables whose data changed

A run syncs what `pipeline apply` registered, not unapplied edits. Tables whose input has not changed
since their last extract are not read again, and analytics.duckdb is not rewritten when nothing it is
built from changed. A failed task skips the tasks that need it; everything else still runs, and the
previous data of a failed table stays queryable. A table whose new data drops a column or changes a
type its `schema_changes` contract does not allow fails with the column-level difference and keeps its
published data; `--accept-schema TABLE` accepts that new shape once (recorded in the audit log).
After the publish, the tables whose data changed are profiled (`pipeline profile TABLE` shows it);
a failed profile is a warning, never a failure.
With nothing registered, a run publishes the extracts other tools wrote under data/extracts.
A run of one source republishes only that source in a copy of analytics.duckdb, with the transforms
that read it; when anything else changed since the live file was built, it rebuilds the whole file.
--select takes dbt's selector shapes (NAME, NAME+, +NAME, +NAME+) over transforms; the transforms it
does not choose keep their published results. A table NAME syncs that table and builds everything
that reads it.
Exit status: 0 all tasks succeeded, 1 otherwise.
Ctrl-C stops starting tasks and publishes nothing half-done; a second Ctrl-C aborts at once.";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Sync only the tables of this source (repeatable).
    #[arg(long, short = 's', value_name = "SOURCE")]
    source: Vec<String>,
    /// Sync only this table, by id or name (repeatable).
    #[arg(long, short = 't', value_name = "TABLE")]
    table: Vec<String>,
    /// Build only these transforms: NAME, NAME+ (and what reads it), +NAME (and what it reads),
    /// +NAME+ (repeatable). A table NAME syncs it and builds what reads it.
    #[arg(long, value_name = "SELECTOR", conflicts_with_all = ["source", "table", "full_refresh"])]
    select: Vec<crate::registry::select::Selector>,
    /// Tasks to run at once (default: `defaults.concurrency` of the instance).
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Re-extract every selected table from scratch: ignore fingerprints and incremental cursors.
    #[arg(long)]
    full_refresh: bool,
    /// Publish this table's new schema whatever it is, once: dropped columns and changed types
    /// that its `schema_changes` contract refuses are accepted and recorded (repeatable; id or name).
    #[arg(long, value_name = "TABLE")]
    accept_schema: Vec<String>,
    /// How long to wait for another run that holds a source or analytics (e.g. 30s, 10m).
    #[arg(long, value_name = "DURATION", default_value = output::LOCK_TIMEOUT, value_parser = output::parse_duration)]
    lock_timeout: Duration,
    /// Do not profile the tables whose data changed after the publish (their profiles stay as
    /// they were; the next run that profiles catches up).
    #[arg(long)]
    no_profile: bool,
    #[arg(long, value_enum, default_value_t)]
    format: RunFormat,
}

/// `--format` of a run: what is printed as it goes and at the end.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunFormat {
    /// Progress on stderr (a spinner per task on a terminal), a summary on stdout.
    #[default]
    Human,
    /// One JSON document on stdout when the run ends: every task's result and the outcome.
    Json,
    /// One JSON event per line on stdout as the run goes: task_started, task_finished, cancelling,
    /// published, and run_finished last.
    Ndjson,
}

impl From<Format> for RunFormat {
    fn from(f: Format) -> RunFormat {
        match f {
            Format::Human => RunFormat::Human,
            Format::Json => RunFormat::Json,
        }
    }
}

/// The instance and what is registered in its state. Says so when the specs differ from what was
/// applied: a run syncs what was applied.
pub(super) fn registered(dir: &Path, quiet: bool) -> Result<(Instance, Registered)> {
    let (drift, declared) = match crate::ops::plan::desired_and_recorded(dir) {
        Ok((desired, recorded)) => {
            let plan = crate::plan::against(&desired, &recorded, &[])?;
            let drift = if recorded.serial == 0 {
                None
            } else {
                plan.has_changes().then(|| {
                    let s = plan.summary;
                    format!(
                        "the specs have changes that are not applied ({} to add, {} to change, {} to \
                         destroy); this run syncs what was applied. `pipeline plan` shows them",
                        s.add, s.change, s.destroy
                    )
                })
            };
            (drift, Some(desired.instance))
        }
        Err(crate::ops::plan::PlanStateError::Plan(crate::plan::PlanError::Invalid { .. })) => (
            Some(
                "the specs are invalid (`pipeline validate` says why); this run syncs what was \
                 applied"
                    .into(),
            ),
            None,
        ),
        Err(_) => (None, None),
    };
    // Valid specs declare the instance; otherwise its own file may still load.
    let mut inst = match declared {
        Some(i) => i,
        None => output::instance(dir)?,
    };
    inst.create_data_dir()?;
    let state = StateStore::of(&inst.data);
    if !state.exists() {
        return Ok((inst, Registered::default()));
    }
    if let (Some(note), false) = (drift, quiet) {
        eprintln!("note: {note}");
    }
    Ok((inst, ops::sync::registered(&state)?))
}

pub fn run(dir: &Path, args: Args, quiet: bool) -> Result<ExitCode> {
    let (inst, reg) = registered(dir, quiet)?;
    if reg.tables.is_empty() && reg.transforms.is_empty() {
        // Extracts other tools wrote are published all the same (docs/engine.md); with none
        // either, there is nothing to do.
        if !crate::analytics::has_extracts(&inst.data) {
            bail!("nothing is registered yet: run `pipeline apply` first");
        }
        if !quiet && args.format == RunFormat::Human {
            eprintln!(
                "note: nothing is registered (`pipeline apply` registers what the specs declare); \
                 publishing the extracts found under {}",
                pathdiff(&inst.data.extracts(), dir)
            );
        }
        // The run is recorded like any other (view ownership included).
        ops::sync::ensure_state(&StateStore::of(&inst.data))?;
    }
    if !args.select.is_empty() && !inst.data.analytics().is_file() {
        // The transforms not chosen keep their published results: there must be some.
        bail!(
            "--select builds transforms in the published analytics.duckdb, and there is none yet: \
             run `pipeline run` first"
        );
    }
    let selection = dag::Selection {
        sources: args.source.clone(),
        tables: args.table.clone(),
        select: args.select.clone(),
    };
    let assembled = ops::sync::assemble(
        &StateStore::of(&inst.data),
        &reg,
        &ops::sync::Request::Select(selection),
        ops::sync::Pending::WhenAll,
    )?;
    if assembled.pending_left_out > 0 && !quiet {
        eprintln!(
            "note: {} task(s) left pending by an earlier apply are not part of this partial run; \
             `pipeline run` with no selection runs them",
            assembled.pending_left_out
        );
    }
    let tasks = assembled.tasks;
    let mut opts = Options::cli(
        "run",
        args.jobs.map(usize::from),
        args.full_refresh,
        args.lock_timeout,
    );
    opts.accept_schema = accepted_tables(&reg, &tasks, &args.accept_schema)?;
    opts.chosen_transforms = !args.select.is_empty();
    opts.profile = !args.no_profile;
    let outcome = execute(&inst, reg, tasks, &opts, args.format, quiet)?;
    report(&outcome, args.format, quiet, dir)
}

/// The table ids `--accept-schema` names; each must be registered and extracted by this run.
fn accepted_tables(
    reg: &Registered,
    tasks: &[Task],
    names: &[String],
) -> Result<std::collections::BTreeSet<String>> {
    let mut ids = std::collections::BTreeSet::new();
    for name in names {
        let Some(t) = reg.table(name) else {
            let candidates = reg
                .tables
                .values()
                .flat_map(|t| [t.id.as_str(), t.name.as_str()]);
            let hint = crate::diag::suggest(name, candidates)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            bail!("--accept-schema: no registered table `{name}` (by id or name){hint}");
        };
        let extracted = tasks
            .iter()
            .any(|x| x.kind == crate::registry::task::TaskKind::Extract && x.target == t.id);
        if !extracted {
            bail!(
                "--accept-schema {name}: this run does not extract table `{}`; select it too (or run \
                 without --source/--table)",
                t.id
            );
        }
        ids.insert(t.id.clone());
    }
    Ok(ids)
}

/// Runs `tasks` with the progress display of `format`.
pub(super) fn execute(
    inst: &Instance,
    reg: Registered,
    tasks: Vec<Task>,
    opts: &Options,
    format: RunFormat,
    quiet: bool,
) -> Result<Outcome> {
    if format == RunFormat::Human && !quiet {
        eprintln!(
            "Running {} task(s), {} at a time:",
            tasks.len(),
            opts.jobs.unwrap_or(inst.concurrency)
        );
    }
    let ran = match format {
        RunFormat::Json => ops::sync::run(inst, reg, tasks, opts, &mut progress::Silent),
        RunFormat::Ndjson => ops::sync::run(inst, reg, tasks, opts, &mut progress::Json),
        RunFormat::Human => {
            ops::sync::run(inst, reg, tasks, opts, &mut progress::Human::new(quiet))
        }
    };
    match ran {
        Ok(outcome) => Ok(outcome),
        // Not "could not start": the second Ctrl-C ends the command with status 130.
        Err(ops::sync::SyncError::Exec(exec::ExecError::Interrupted(i))) => Err(i.into()),
        Err(e) => Err(anyhow::Error::new(e).context("the run could not start")),
    }
}

/// The exit status of a finished run: 0 when everything succeeded.
pub(super) fn exit_code(o: &Outcome) -> ExitCode {
    if o.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A finished run as JSON: its outcome and, with `tasks`, every task's result (else their count,
/// as the `run_finished` event has it).
pub(super) fn run_json(o: &Outcome, tasks: bool) -> serde_json::Value {
    let failures: Vec<_> = o.failures().collect();
    let status = if o.cancelled {
        "cancelled"
    } else if failures.is_empty() && o.record_error.is_none() {
        "ok"
    } else {
        "failed"
    };
    serde_json::json!({
        "run_id": o.run_id,
        "status": status,
        "record_error": o.record_error,
        "published": o.published,
        "analytics": o.analytics,
        "tasks": if tasks {
            serde_json::Value::Array(o.tasks.iter().map(progress::task_json).collect())
        } else {
            serde_json::Value::from(o.tasks.len())
        },
        "failed": failures.iter().map(|f| serde_json::json!({"task": f.task.id, "error": f.error})).collect::<Vec<_>>(),
        "skipped": o.count(Status::Skipped),
        "warnings": o.warnings,
        "profiled": progress::profiled_json(&o.profiled),
    })
}

/// Prints the end of a run; the exit code says whether everything succeeded.
pub(super) fn report(o: &Outcome, format: RunFormat, quiet: bool, dir: &Path) -> Result<ExitCode> {
    let code = exit_code(o);
    let failures: Vec<_> = o.failures().collect();
    match format {
        RunFormat::Json => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", serde_json::to_string_pretty(&run_json(o, true))?)?;
            return Ok(code);
        }
        RunFormat::Ndjson => {
            progress::emit(progress::event("run_finished", run_json(o, false)));
            return Ok(code);
        }
        RunFormat::Human => {}
    }
    let mut err = anstream::stderr().lock();
    if !o.warnings.is_empty() {
        let style = anstyle::AnsiColor::Yellow.on_default().bold();
        writeln!(
            err,
            "\n{style}warning{style:#}: {} problem(s) did not fail the run:",
            o.warnings.len()
        )?;
        for w in &o.warnings {
            writeln!(err, "  - {w}")?;
        }
    }
    if !failures.is_empty() {
        let style = anstyle::AnsiColor::Red.on_default().bold();
        writeln!(err, "\n{style}{} task(s) failed{style:#}:", failures.len())?;
        for f in &failures {
            writeln!(
                err,
                "  {}: {}",
                f.task.id,
                f.error.as_deref().unwrap_or("?")
            )?;
        }
        let skipped = o.count(Status::Skipped);
        if skipped > 0 {
            writeln!(err, "  ({skipped} task(s) that needed them were skipped)")?;
        }
    }
    if let Some(e) = &o.record_error {
        let style = anstyle::AnsiColor::Red.on_default().bold();
        writeln!(
            err,
            "\n{style}error{style:#}: the run could not be recorded: {e}"
        )?;
    }
    drop(err);
    if quiet && o.ok() {
        return Ok(code);
    }
    let mut out = anstream::stdout().lock();
    let verdict = if o.cancelled {
        "Run stopped"
    } else if o.record_error.is_some() {
        "Run failed (not recorded)"
    } else if failures.is_empty() {
        "Run complete"
    } else {
        "Run finished with failures"
    };
    let publish = if o.published {
        "analytics.duckdb published"
    } else if o.tasks.iter().any(|f| {
        f.task.kind == crate::registry::task::TaskKind::Publish && f.status == Status::Unchanged
    }) {
        "analytics.duckdb already up to date"
    } else {
        "analytics.duckdb not changed"
    };
    writeln!(
        out,
        "\n{verdict} ({}): {} ok, {} unchanged, {} failed, {} skipped; {publish}.",
        o.run_id,
        o.count(Status::Ok),
        o.count(Status::Unchanged),
        failures.len(),
        o.count(Status::Skipped) + o.count(Status::Cancelled),
    )?;
    if o.analytics.is_file() {
        let shown = pathdiff(&o.analytics, dir);
        writeln!(out, "\nThe data is in {shown}. Query it with:")?;
        writeln!(out, "  pipeline query \"show tables\"")?;
        writeln!(
            out,
            "  duckdb -readonly {shown}      (local tables need no setup)"
        )?;
    }
    Ok(code)
}

/// `path` relative to the instance directory when it is inside it.
fn pathdiff(path: &Path, dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    match path.strip_prefix(&dir) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

//! `pipeline apply`: parses, calls [`crate::ops::apply`] (state lock, plan or saved plan, confirm,
//! one state transaction, then the tasks unless `--queue-only`) and renders what it reports.

use super::output::{self, Format};
use crate::fslock::{self, Holder};
use crate::instance::Instance;
use crate::ops::apply::{self as ops_apply, ApplyOptions, ApplyOutcome, Hooks, Refused, RunAfter};
use crate::plan::{self, render, Plan};
use crate::registry::registered::Registered;
use crate::registry::task::Task;
use anyhow::{bail, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline apply                       plan, show it, ask for confirmation, apply
  pipeline apply --auto-approve        no question (scripts; required when CI=true)
  pipeline plan --out plan.json && pipeline apply plan.json
                                       apply exactly the reviewed plan (no question); refused as
                                       stale if the specs or the state changed since
  pipeline apply --lock-timeout 2m     wait up to 2 minutes for another apply to finish
  pipeline apply --purge               also delete the Parquet files of deleted tables
  pipeline apply --queue-only          register only; `pipeline run` runs the queued tasks later
  pipeline apply --allow-breaking      apply even changes `plan` labels [breaking]
  pipeline apply --target shop.orders  apply only this object's changes (as `plan --target`)

Only one apply runs at a time per instance: the state lock (data/state/state.lock) names its holder,
and a lock left by a process that died is taken over automatically.";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A plan saved by `pipeline plan --out FILE`. Without it, apply plans now.
    #[arg(value_name = "FILE")]
    plan_file: Option<PathBuf>,
    /// Apply without asking for confirmation.
    #[arg(long)]
    auto_approve: bool,
    /// How long to wait for the state lock when another apply holds it (e.g. 0, 30s, 5m).
    #[arg(long, value_name = "DURATION", default_value = output::LOCK_TIMEOUT, value_parser = output::parse_duration)]
    lock_timeout: Duration,
    /// Delete the Parquet files of tables the plan deletes (kept by default).
    #[arg(long)]
    purge: bool,
    /// Register the changes and queue their tasks, but do not run them (`pipeline run` will).
    #[arg(long)]
    queue_only: bool,
    /// Apply even when the plan has breaking changes (transforms or metrics that would no longer
    /// bind); what breaks keeps its last good result until it is fixed.
    #[arg(long)]
    allow_breaking: bool,
    /// Tasks to run at once (default: `defaults.concurrency` of the instance).
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Output of the plan and the result.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// Apply only this object's changes: a table id or name, a source (with its tables and
    /// transforms), a transform or a metric id (category/name). Repeatable; as `plan --target`.
    #[arg(long = "target", value_name = "NAME", conflicts_with = "plan_file")]
    targets: Vec<String>,
}

/// True when the environment says no one is there to answer a question.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

pub fn run(dir: &Path, args: Args, quiet: bool) -> Result<ExitCode> {
    let desired = output::specs_or_report(plan::desired(dir), args.format)?;
    output::warnings(&desired.specs, &desired.diags);
    let saved = match &args.plan_file {
        Some(path) => Some(plan::load(path)?),
        None => None,
    };
    if saved.is_none() && !args.auto_approve && in_ci() {
        bail!(
            "refusing to apply without confirmation: CI is set, so nobody can answer. Review `pipeline plan`, \
             then run `pipeline apply --auto-approve`, or save a plan with `pipeline plan --out FILE` and apply it"
        );
    }
    let opts = ApplyOptions {
        saved,
        purge: args.purge,
        allow_breaking: args.allow_breaking,
        run: if args.queue_only {
            RunAfter::Never
        } else {
            RunAfter::Always
        },
        lock_timeout: args.lock_timeout,
        targets: args.targets.clone(),
        ..ApplyOptions::new(&fslock::os_user(), "pipeline apply")
    };
    let mut cli = Cli {
        dir,
        args: &args,
        quiet,
        ask: args.plan_file.is_none() && !args.auto_approve,
        declined: None,
        applied: false,
        document: None,
        run_document: None,
    };
    let outcome = ops_apply::apply(&desired, &opts, &mut cli)?;
    // JSON is one document: what was applied, and the run's result under `run`.
    if args.format == Format::Json {
        let base = match (&outcome, cli.document.take()) {
            (_, Some(doc)) => Some(doc),
            (ApplyOutcome::NothingToDo { plan, .. }, None) => Some(
                serde_json::json!({"applied": false, "serial": plan.state_serial, "changes": 0}),
            ),
            _ => None,
        };
        if let Some(mut doc) = base {
            if let (Some(d), Some(run)) = (doc.as_object_mut(), cli.run_document.take()) {
                d.insert("run".into(), run);
            }
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
    }
    let mut out = anstream::stdout().lock();
    match outcome {
        ApplyOutcome::Refused(Refused::MissingEnv(unset)) => bail!(
            "apply needs every environment variable the specs name; {} unset (see the warnings above)",
            unset.len()
        ),
        ApplyOutcome::Refused(Refused::StalePlan(why)) => bail!("stale plan: {why}"),
        ApplyOutcome::Refused(Refused::Breaking { plan, lines }) => {
            if args.format == Format::Human {
                write!(out, "{}", render::human(&plan))?;
                out.flush()?;
            }
            let lines: Vec<String> = lines.into_iter().map(|l| format!("  {l}")).collect();
            bail!(
                "refusing to apply: the plan has {} breaking change(s):\n{}\nFix the specs, or pass \
                 --allow-breaking to apply anyway (what breaks keeps its last good result until fixed)",
                plan.summary.breaking,
                lines.join("\n")
            )
        }
        ApplyOutcome::Refused(Refused::Declined(_)) => Err(cli
            .declined
            .take()
            .unwrap_or_else(|| anyhow::anyhow!("apply cancelled: nothing was changed"))),
        ApplyOutcome::NothingToDo {
            run: Some(code), ..
        } => code,
        ApplyOutcome::NothingToDo { plan, .. } => {
            if args.format == Format::Human {
                write!(out, "{}", render::human(&plan))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ApplyOutcome::Applied { run: Some(code), .. } => code,
        ApplyOutcome::Applied { .. } => Ok(ExitCode::SUCCESS),
    }
}

/// The command line's side of an apply: questions and messages on stderr, results on stdout.
struct Cli<'a> {
    dir: &'a Path,
    args: &'a Args,
    quiet: bool,
    ask: bool,
    /// Why the review said no (the answer was not `yes`, or stdin failed).
    declined: Option<anyhow::Error>,
    applied: bool,
    /// `--format json`: what was applied, printed with the run's result once everything is done.
    document: Option<serde_json::Value>,
    /// `--format json`: the run's result.
    run_document: Option<serde_json::Value>,
}

impl Hooks for Cli<'_> {
    type Ran = Result<ExitCode>;

    fn waiting_for_lock(&mut self, holder: Option<&Holder>) {
        let who = holder.map_or("another process".to_string(), |h| h.to_string());
        if !self.quiet {
            eprintln!(
                "Waiting up to {:?} for the state lock held by {who}…",
                self.args.lock_timeout
            );
        }
    }

    fn took_over_lock(&mut self, from: &Holder) {
        eprintln!("note: took over the state lock left by {from}, which is no longer running");
    }

    fn review(&mut self, plan: &Plan) -> bool {
        if self.args.format == Format::Human && (self.ask || !self.quiet) {
            let mut out = anstream::stdout().lock();
            let shown = write!(out, "{}", render::human(plan)).and_then(|()| out.flush());
            if let Err(e) = shown {
                self.declined = Some(e.into());
                return false;
            }
        }
        if self.ask {
            if let Err(e) = output::confirm("\nApply these changes?") {
                self.declined = Some(e);
                return false;
            }
        }
        true
    }

    fn applied(&mut self, applied: &ops_apply::Applied) {
        self.applied = true;
        match self.args.format {
            Format::Json => self.document = Some(applied_json(applied)),
            Format::Human => {
                let mut out = anstream::stdout().lock();
                let _ = render_applied(&mut out, applied, self.args);
            }
        }
    }

    fn run(
        &mut self,
        instance: &Instance,
        registered: Registered,
        tasks: Vec<Task>,
    ) -> Result<ExitCode> {
        let human = self.args.format == Format::Human && !self.quiet;
        if !self.applied && human {
            eprintln!(
                "No changes. {} task(s) left pending by an earlier apply; running them.",
                tasks.len()
            );
        }
        let opts = crate::exec::Options::cli(
            "apply",
            self.args.jobs.map(usize::from),
            false,
            self.args.lock_timeout.max(Duration::from_secs(60)),
        );
        if human {
            println!();
        }
        let outcome = super::run::execute(
            instance,
            registered,
            tasks,
            &opts,
            self.args.format.into(),
            self.quiet,
        )?;
        if self.args.format == Format::Json {
            self.run_document = Some(super::run::run_json(&outcome, true));
            return Ok(super::run::exit_code(&outcome));
        }
        super::run::report(&outcome, self.args.format.into(), self.quiet, self.dir)
    }
}

/// What an apply recorded, as the JSON document's top level.
fn applied_json(applied: &ops_apply::Applied) -> serde_json::Value {
    serde_json::json!({
        "applied": true,
        "serial": applied.serial,
        "changes": applied.changes,
        "summary": applied.summary,
        "queued_tasks": applied.queued_tasks,
        "purged_files": applied.purged,
    })
}

/// The human summary of what an apply recorded.
fn render_applied(
    out: &mut impl Write,
    applied: &ops_apply::Applied,
    args: &Args,
) -> std::io::Result<()> {
    let ok = anstyle::AnsiColor::Green.on_default().bold();
    let s = applied.summary;
    writeln!(
        out,
        "\n{ok}Apply complete!{ok:#} {} added, {} changed, {} destroyed. State serial {}.",
        s.add, s.change, s.destroy, applied.serial
    )?;
    if applied.queued_tasks > 0 && args.queue_only {
        writeln!(
            out,
            "{} task(s) queued as pending; `pipeline run` runs them, `pipeline status` lists them.",
            applied.queued_tasks
        )?;
    }
    if applied.purged > 0 {
        writeln!(
            out,
            "Purged the data of deleted tables ({} path(s)).",
            applied.purged
        )?;
    }
    Ok(())
}

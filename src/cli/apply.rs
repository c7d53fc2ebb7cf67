//! `pipeline apply`: take the state lock, plan (or check a saved plan), confirm, write the registry
//! changes and queue their tasks, all in one state transaction; then run the tasks (extract, rebuild,
//! publish, transforms, checks) unless `--queue-only`.

use super::output::{self, Format};
use crate::fslock::{self, Lock};
use crate::instance::DataDir;
use crate::plan::{self, render, Plan};
use crate::registry::document::Action;
use crate::registry::document::Kind;
use crate::state::{self, sync::read_before, StateStore};
use anyhow::{bail, Context, Result};
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
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = output::parse_duration)]
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
}

/// True when the environment says no one is there to answer a question.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

pub fn run(dir: &Path, args: Args, quiet: bool) -> Result<ExitCode> {
    let desired = output::specs_or_report(plan::desired(dir), args.format)?;
    output::warnings(&desired.specs, &desired.diags);
    let unset = desired.unset_env_vars();
    if !unset.is_empty() {
        bail!(
            "apply needs every environment variable the specs name; {} unset (see the warnings above)",
            unset.len()
        );
    }
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

    let lock = Lock::acquire(
        &desired.instance.data.state_lock(),
        "pipeline apply",
        args.lock_timeout,
        |holder| {
            let who = holder.map_or("another process".to_string(), |h| h.to_string());
            if !quiet {
                eprintln!(
                    "Waiting up to {:?} for the state lock held by {who}…",
                    args.lock_timeout
                );
            }
        },
    )?;
    if let Some(h) = &lock.took_over_from {
        eprintln!("note: took over the state lock left by {h}, which is no longer running");
    }

    let mut plan = match saved {
        Some(plan) => {
            check_saved(&plan, &desired)?;
            plan
        }
        None => plan::against_state(&desired, &[])?,
    };
    // A saved plan keeps the labels that were reviewed; one saved by an older binary has none yet.
    if plan::impact::needs_assessment(&plan) {
        plan::impact::assess(&desired, &mut plan);
    }
    let mut out = anstream::stdout().lock();
    if !plan.has_changes() {
        // Nothing applied yet and nothing to apply (an instance of config only): nothing pending.
        let pending = match StateStore::of(&desired.instance.data).read_if_exists()? {
            Some(r) => read_before(&r)?.pending,
            None => Vec::new(),
        };
        if !pending.is_empty() && !args.queue_only {
            drop(out);
            if !quiet && args.format == Format::Human {
                eprintln!(
                    "No changes. {} task(s) left pending by an earlier apply; running them.",
                    pending.len()
                );
            }
            // Still under the state lock: one apply at a time, tasks included (as Terraform does).
            let code = run_tasks(dir, &desired, Vec::new(), &args, quiet);
            drop(lock);
            return code;
        }
        match args.format {
            Format::Json => writeln!(
                out,
                "{}",
                serde_json::json!({"applied": false, "serial": plan.state_serial, "changes": 0})
            )?,
            Format::Human => write!(out, "{}", render::human(&plan))?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    let ask = args.plan_file.is_none() && !args.auto_approve;
    let breaking = plan.summary.breaking > 0 && !args.allow_breaking;
    if args.format == Format::Human && (ask || !quiet || breaking) {
        write!(out, "{}", render::human(&plan))?;
        out.flush()?;
    }
    if breaking {
        let lines: Vec<String> = render::breaking_lines(&plan)
            .into_iter()
            .map(|l| format!("  {l}"))
            .collect();
        bail!(
            "refusing to apply: the plan has {} breaking change(s):\n{}\nFix the specs, or pass \
             --allow-breaking to apply anyway (what breaks keeps its last good result until fixed)",
            plan.summary.breaking,
            lines.join("\n")
        );
    }
    if ask {
        drop(out);
        output::confirm("\nApply these changes?")?;
        out = anstream::stdout().lock();
    }

    let who = fslock::os_user();
    let applied = state::registry::apply(
        &mut StateStore::of(&desired.instance.data).write()?,
        &plan.write_set(&who),
    )?;

    let purged = if args.purge {
        purge(&desired.instance.data, &plan)?
    } else {
        0
    };
    crate::exec::retire_sources(&desired.instance.data.extracts(), &plan.deleted_sources())
        .context("removing the extracts of deleted sources")?;
    match args.format {
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::json!({
                "applied": true,
                "serial": applied.serial,
                "changes": plan.changes.len(),
                "summary": plan.summary,
                "queued_tasks": applied.queued_tasks,
                "purged_files": purged,
            })
        )?,
        Format::Human => {
            let ok = anstyle::AnsiColor::Green.on_default().bold();
            let s = plan.summary;
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
            if purged > 0 {
                writeln!(out, "Purged the data of deleted tables ({purged} path(s)).")?;
            }
        }
    }
    if applied.queued_tasks == 0 || args.queue_only {
        return Ok(ExitCode::SUCCESS);
    }
    drop(out);
    // The state lock is held until the tasks are done: another apply waits for this one as a whole.
    let code = run_tasks(dir, &desired, plan.tasks.clone(), &args, quiet);
    drop(lock);
    code
}

/// Runs the applied plan's tasks together with any left pending by an earlier apply.
fn run_tasks(
    dir: &Path,
    desired: &plan::Desired,
    tasks: Vec<crate::registry::task::Task>,
    args: &Args,
    quiet: bool,
) -> Result<ExitCode> {
    let mut inst = desired.instance.clone();
    inst.create_data_dir()?;
    let reg = crate::registry::registered::Registered::from_objects(&desired.objects)?;
    let pending = read_before(&StateStore::of(&inst.data).read()?)?.pending;
    let tasks = crate::registry::dag::merge(tasks, &pending);
    let opts = crate::exec::Options::cli(
        "apply",
        args.jobs.map(usize::from),
        false,
        args.lock_timeout.max(Duration::from_secs(60)),
    );
    if args.format == Format::Human && !quiet {
        println!();
    }
    let outcome = super::run::execute(&inst, reg, tasks, &opts, args.format, quiet)?;
    super::run::report(&outcome, args.format, quiet, dir)
}

/// A saved plan applies only to the specs it was made from; the serial is checked again inside the
/// write transaction.
fn check_saved(plan: &Plan, desired: &plan::Desired) -> Result<()> {
    let digest = desired.digest();
    if plan.spec_digest != digest {
        bail!(
            "stale plan: the specs changed since this plan was made (digest {} then, {} now). Run \
             `pipeline plan --out FILE` again and review the new plan",
            short(&plan.spec_digest),
            short(&digest)
        );
    }
    let serial = StateStore::of(&desired.instance.data).serial()?;
    if serial != plan.state_serial {
        bail!(
            "stale plan: it was made at state serial {} but the state is at serial {serial} (another apply \
             ran since). Run `pipeline plan --out FILE` again and review the new plan",
            plan.state_serial
        );
    }
    Ok(())
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// Removes the extracted data of deleted tables. Returns how many paths were removed.
fn purge(data: &DataDir, plan: &Plan) -> Result<usize> {
    let mut removed = 0;
    for c in &plan.changes {
        if c.kind != Kind::Table || c.action != Action::Delete {
            continue;
        }
        let Some(before) = &c.before else { continue };
        let (Some(source), Some(name)) = (before.str("source"), before.str("name")) else {
            continue;
        };
        // Names were validated when they were applied; never follow anything else.
        if !crate::names::is_source_name(source) || !crate::names::is_identifier(name) {
            continue;
        }
        let base = data.extracts().join(source).join("data");
        for path in [base.join(format!("{name}.parquet")), base.join(name)] {
            let result = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else if path.exists() {
                std::fs::remove_file(&path)
            } else {
                continue;
            };
            result.with_context(|| format!("purging {}", path.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

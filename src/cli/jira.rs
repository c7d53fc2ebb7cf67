//! `pipeline jira …`: commands of `type: jira` sources (docs/jira.md).
//!
//! `pipeline jira backfill <source>` pages through a JQL search, fetches every issue and writes the
//! monthly partitions (the same rows webhooks write, under the same per-month locks, so it is safe
//! while the daemon receives webhooks), then publishes only this source.

use crate::connectors::jira::backfill::{self, Options, Progress};
use crate::exec::jira::{republish, JiraSource};
use crate::instance::Instance;
use crate::registry::document::Objects;
use crate::registry::registered::Registered;
use crate::spec::model::SourceType;
use crate::state::StateStore;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub const AFTER_HELP: &str = "\
Examples:
  pipeline jira backfill tracker                           every issue the connection's jql selects
  pipeline jira backfill tracker --jql \"project = OPS\"     only project OPS
  pipeline jira backfill tracker --since 2024-01-01        issues updated since that day

A backfill is idempotent (a second run rewrites nothing) and safe while the daemon receives
webhooks. The source must be applied first (`pipeline apply`). Docs: docs/jira.md.";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Fill a jira source's partitions from a JQL search, then publish the source.
    #[command(after_help = AFTER_HELP)]
    Backfill(BackfillArgs),
}

#[derive(clap::Args, Debug)]
struct BackfillArgs {
    /// The jira source (as applied).
    source: String,
    /// JQL selecting the issues; default: the connection's `jql`, else every issue.
    #[arg(long)]
    jql: Option<String>,
    /// Only issues updated on or after this day (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    since: Option<chrono::NaiveDate>,
    /// Issues fetched at once (Jira rate-limits per account).
    #[arg(long, default_value_t = 6)]
    threads: usize,
    /// How long to wait for the analytics lock held by a run.
    #[arg(long, value_name = "DURATION", default_value = super::output::LOCK_TIMEOUT, value_parser = super::output::parse_duration)]
    lock_timeout: Duration,
}

pub fn run(dir: &Path, args: Args, quiet: bool) -> Result<ExitCode> {
    match args.command {
        Sub::Backfill(a) => backfill_cmd(dir, a, quiet),
    }
}

fn backfill_cmd(dir: &Path, args: BackfillArgs, quiet: bool) -> Result<ExitCode> {
    let inst = Instance::open(dir).map_err(|e| anyhow!("{e}"))?;
    let recorded = StateStore::of(&inst.data)
        .recorded(&Objects::new())
        .context("reading the applied registry")?;
    let registered = Registered::from_objects(&recorded.objects).map_err(|e| anyhow!("{e}"))?;
    let Some(def) = registered.sources.get(&args.source) else {
        bail!(
            "no applied source `{}`; apply it first (`pipeline apply`)",
            args.source
        );
    };
    if def.kind() != Some(SourceType::Jira) {
        bail!(
            "source `{}` is a {} source, not jira",
            args.source,
            def.source_type
        );
    }
    let jira = JiraSource::open(inst.data.dir(), def).map_err(|e| anyhow!("{e}"))?;
    let jql = match &args.jql {
        Some(j) => backfill::jql_for(Some(j), args.since),
        None => jira.jql(args.since),
    };
    let options = Options {
        jql: jql.clone(),
        threads: args.threads.max(1),
        ..Options::default()
    };
    let started = Instant::now();
    let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_style(
            indicatif::ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    });
    let mut show = |p: &Progress| {
        if let Some(pb) = &bar {
            let of = if p.listing_done {
                p.listed.to_string()
            } else {
                format!("{}+", p.listed)
            };
            pb.set_message(format!(
                "{}: {} of {of} fetched, {} written, {} failed",
                args.source, p.fetched, p.written, p.failed
            ));
        }
    };
    let report = backfill::run(&jira.client, &jira.mapper, &jira.store, &options, &mut show)
        .map_err(|e| anyhow!("{e}"))?;
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let extract_changed = jira.store.publish().map_err(|e| anyhow!("{e}"))?;
    let published = if extract_changed || !inst.data.analytics().is_file() {
        let outcome = republish(
            &inst,
            &registered,
            &args.source,
            "pipeline jira backfill",
            args.lock_timeout,
        )
        .map_err(|e| anyhow!("{e}"))?;
        for w in &outcome.warnings {
            tracing::warn!("{w}");
        }
        for f in outcome.failures() {
            tracing::warn!(task = %f.task.id, "{}", f.error.as_deref().unwrap_or("?"));
        }
        // The publish task counts the tables of the new analytics file.
        outcome
            .tasks
            .iter()
            .find(|f| f.task.kind == crate::registry::task::TaskKind::Publish)
            .and_then(|f| f.done.rows)
            .unwrap_or(0) as usize
    } else {
        0
    };
    let secs = started.elapsed().as_secs_f64();
    if !quiet {
        let mut out = anstream::stdout().lock();
        writeln!(
            out,
            "{}: {} issue(s) listed, {} fetched, {} gone, {} failed; {} file(s) written, {} removed, {} unchanged issue(s) in {secs:.1}s ({:.0} issues/s)",
            args.source,
            report.listed,
            report.fetched,
            report.gone.len(),
            report.failed.len(),
            report.apply.files_written,
            report.apply.files_removed,
            report.apply.issues_unchanged,
            report.fetched as f64 / secs.max(0.001),
        )?;
        if published > 0 {
            writeln!(out, "published {published} table(s) of {}", args.source)?;
        } else {
            writeln!(out, "nothing changed; analytics untouched")?;
        }
        for (key, e) in report.failed.iter().take(20) {
            writeln!(out, "  failed {key}: {}", crate::redact::redact(e))?;
        }
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

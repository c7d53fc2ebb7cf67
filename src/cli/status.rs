//! `pipeline status`: what is registered, each table's last sync and next scheduled run, pending
//! tasks, and whether the specs have changes not applied yet.

use super::output::{self, Format, TextTable};
use crate::instance::{DataDir, Instance};
use crate::ops::plan::PlanStateError;
use crate::plan::{self, PlanError, Summary};
use crate::spec::schedule::Freshness;
use crate::state::{report, StateStore};
use anyhow::Result;
use chrono_tz::Tz;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline status                  registered tables (last sync, status, rows, freshness against
                                   the schedule, next run), transforms and metric checks (ok /
                                   stale / failed, with the reason), pending tasks and the error
                                   of their last attempt
  pipeline status --format json    the same as JSON (times in UTC, RFC 3339)";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Whether the specs match the recorded state.
#[derive(Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Drift {
    InSync,
    Changes { summary: Summary },
    InvalidSpecs { errors: usize },
}

#[derive(Debug, Serialize)]
struct Report {
    instance: String,
    timezone: String,
    state: String,
    specs: Drift,
    /// The daemon serving this instance, if one runs.
    daemon: Option<crate::daemon::Presence>,
    /// What the live analytics.duckdb left out at its last rebuild, and why (a foreign extract whose
    /// Parquet is gone, a view that does not bind…).
    analytics_problems: Vec<String>,
    #[serde(flatten)]
    status: Option<report::Status>,
}

pub fn run(dir: &Path, args: Args) -> Result<ExitCode> {
    let (desired, drift) = match crate::ops::plan::desired_and_recorded(dir) {
        Ok((d, recorded)) => {
            let plan = plan::against(&d, &recorded, &[])?;
            let drift = if plan.has_changes() {
                Drift::Changes {
                    summary: plan.summary,
                }
            } else {
                Drift::InSync
            };
            (Some(d), drift)
        }
        Err(PlanStateError::Plan(PlanError::Invalid { diags, .. })) => (
            None,
            Drift::InvalidSpecs {
                errors: diags.error_count(),
            },
        ),
        Err(e) => return Err(e.into()),
    };
    // The state location comes from the instance file (it may load when other specs are broken);
    // without a usable one, from the default layout.
    let instance = match desired {
        Some(d) => Ok(d.instance),
        None => Instance::open(dir),
    };
    let (data, tz, instance) = match instance {
        Ok(i) => (i.data, i.tz, i.name),
        Err(_) => (DataDir::new(dir.join("data")), Tz::UTC, String::new()),
    };
    let store = StateStore::of(&data);
    let mut status = match store.read_if_exists()? {
        Some(r) => Some(report::status(&r)?),
        None => None,
    };
    if let Some(s) = status.as_mut() {
        s.with_times(chrono::Utc::now(), tz);
    }
    let report = Report {
        analytics_problems: crate::analytics::live_skipped(&data),
        instance,
        daemon: crate::daemon::Presence::running(&data),
        timezone: tz.name().to_string(),
        state: store.path().display().to_string(),
        specs: drift,
        status,
    };
    let mut out = anstream::stdout().lock();
    match args.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Format::Human => write!(out, "{}", human(&report, tz))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `  name: reason` under a table, for the rows that are not ok.
fn reasons<'a>(
    out: &mut String,
    rows: impl Iterator<Item = (&'a String, &'a Option<String>, &'a Option<String>)>,
) {
    for (name, status, reason) in rows {
        if let (Some(status), Some(reason)) = (status, reason) {
            if status != "ok" {
                out.push_str(&format!(
                    "  {name} ({status}): {}\n",
                    output::truncate(reason, 200)
                ));
            }
        }
    }
}

/// An RFC 3339 UTC time as local wall-clock time in the instance zone.
pub fn local(utc: &str, tz: Tz) -> String {
    chrono::DateTime::parse_from_rfc3339(utc)
        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|_| utc.to_string())
}

fn human(r: &Report, tz: Tz) -> String {
    let bold = anstyle::Style::new().bold();
    let mut out = format!("{bold}{}{bold:#} (times in {})\n", r.instance, tz.name());
    match &r.daemon {
        Some(d) => out.push_str(&format!(
            "Daemon: running (pid {}, {}, since {}).\n",
            d.pid,
            d.url,
            local(&d.started_at, tz)
        )),
        None => out.push_str("Daemon: not running (`pipeline daemon` runs the schedules).\n"),
    }
    let Some(s) = &r.status else {
        out.push_str(&format!(
            "No state yet at {}: nothing has been applied. Run `pipeline plan`, then `pipeline apply`.\n",
            r.state
        ));
        return out;
    };
    match &s.last_apply {
        Some(a) => out.push_str(&format!(
            "State serial {}, last applied {} by {}.\n",
            s.serial,
            local(&a.applied_at, tz),
            a.who
        )),
        None => out.push_str(&format!("State serial {}.\n", s.serial)),
    }
    match &r.specs {
        Drift::InSync => out.push_str("Specs: in sync with the state.\n"),
        Drift::Changes { summary } => out.push_str(&format!(
            "Specs: changed since the last apply ({} to add, {} to change, {} to destroy); run `pipeline plan`.\n",
            summary.add, summary.change, summary.destroy
        )),
        Drift::InvalidSpecs { errors } => out.push_str(&format!(
            "Specs: invalid ({errors} errors); run `pipeline validate`. The state below is the last applied one.\n"
        )),
    }
    out.push_str(&format!(
        "{} sources, {} tables, {} transforms, {} metrics registered.\n\n",
        s.sources,
        s.tables.len(),
        s.transforms,
        s.metrics
    ));
    if !s.tables.is_empty() {
        let mut t = TextTable::new(vec![
            "table",
            "source",
            "mode",
            "sync",
            "last sync",
            "status",
            "rows",
            "freshness",
            "next run",
        ]);
        for row in &s.tables {
            t.row(vec![
                row.name.clone(),
                row.source.clone(),
                row.query_mode.clone(),
                row.sync_mode.clone(),
                row.last_sync
                    .as_deref()
                    .map_or("never".into(), |x| local(x, tz)),
                row.last_status.clone().unwrap_or_else(|| "-".into()),
                row.rows.map_or("-".into(), |n| n.to_string()),
                freshness_text(row.freshness.as_ref()),
                row.next_run.as_deref().map_or("-".into(), |x| local(x, tz)),
            ]);
        }
        out.push_str(&t.render());
        for row in s.tables.iter().filter(|r| r.last_error.is_some()) {
            out.push_str(&format!("  {}: {}\n", row.name, error_lines(row)));
        }
        out.push('\n');
    }
    if !r.analytics_problems.is_empty() {
        out.push_str(&format!(
            "analytics.duckdb left out {} thing(s) at its last rebuild:\n",
            r.analytics_problems.len()
        ));
        for p in &r.analytics_problems {
            out.push_str(&format!("  - {}\n", output::truncate(p, 300)));
        }
        out.push('\n');
    }
    if !s.transform_states.is_empty() {
        let mut t = TextTable::new(vec!["transform", "status", "rows", "last ok"]);
        for row in &s.transform_states {
            t.row(vec![
                row.name.clone(),
                row.status.clone().unwrap_or_else(|| "-".into()),
                row.rows.map_or("-".into(), |n| n.to_string()),
                row.last_ok_at
                    .as_deref()
                    .map_or("never".into(), |x| local(x, tz)),
            ]);
        }
        out.push_str(&t.render());
        reasons(
            &mut out,
            s.transform_states
                .iter()
                .map(|r| (&r.name, &r.status, &r.reason)),
        );
        out.push('\n');
    }
    if !s.metric_checks.is_empty() {
        let mut t = TextTable::new(vec!["metric check", "status", "last ok"]);
        for row in &s.metric_checks {
            t.row(vec![
                row.metric.clone(),
                row.status.clone().unwrap_or_else(|| "-".into()),
                row.last_ok_at
                    .as_deref()
                    .map_or("never".into(), |x| local(x, tz)),
            ]);
        }
        out.push_str(&t.render());
        reasons(
            &mut out,
            s.metric_checks
                .iter()
                .map(|r| (&r.metric, &r.status, &r.reason)),
        );
        out.push('\n');
    }
    if s.pending_tasks.is_empty() {
        out.push_str("No pending tasks.\n");
    } else {
        out.push_str(&format!(
            "{} pending task(s), queued by apply:\n",
            s.pending_tasks.len()
        ));
        let mut t = TextTable::new(vec!["task", "target", "reason", "serial", "last attempt"]);
        for p in &s.pending_tasks {
            t.row(vec![
                p.kind.clone(),
                p.target.clone(),
                p.reason.clone(),
                p.serial.to_string(),
                p.last_attempt.as_ref().map_or("not yet run".into(), |a| {
                    format!("{} {}", a.status, local(&a.at, tz))
                }),
            ]);
        }
        out.push_str(&t.render());
        // Why a task is still pending: the error of its last attempt.
        for p in &s.pending_tasks {
            if let Some(error) = p.last_attempt.as_ref().and_then(|a| a.error.as_deref()) {
                out.push_str(&format!(
                    "  {} ({}): {}\n",
                    p.task,
                    p.last_attempt.as_ref().map_or("", |a| a.status.as_str()),
                    output::truncate(error, 200)
                ));
            }
        }
    }
    out
}

/// `fresh`, `late 2h 5m`, `never synced`, `-` (no schedule).
fn freshness_text(f: Option<&Freshness>) -> String {
    match f {
        Some(Freshness::Fresh) => "fresh".into(),
        Some(Freshness::Late {
            late_by_seconds, ..
        }) => format!("late {}", span(*late_by_seconds)),
        Some(Freshness::NeverSynced) => "never synced".into(),
        Some(Freshness::Unscheduled) | None => "-".into(),
    }
}

/// Seconds for people: `45s`, `12m`, `3h 5m`, `2d 4h`.
fn span(seconds: i64) -> String {
    let (d, h, m) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// A table's last error for people: a refused schema change keeps its column-by-column lines (that
/// is the point of it), anything else is cut to a line.
fn error_lines(row: &report::TableStatus) -> String {
    let error = row.last_error.as_deref().unwrap_or_default();
    if error.starts_with("schema change refused") {
        let lines: Vec<&str> = error.lines().take(40).collect();
        lines.join("\n    ")
    } else {
        output::truncate(error, 200)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_reads_as_people_say_it() {
        let late = |s| Freshness::Late {
            expected_at: String::new(),
            late_by_seconds: s,
        };
        assert_eq!(freshness_text(Some(&late(40))), "late 40s");
        assert_eq!(freshness_text(Some(&late(3 * 3600 + 300))), "late 3h 5m");
        assert_eq!(
            freshness_text(Some(&late(2 * 86_400 + 4 * 3600))),
            "late 2d 4h"
        );
        assert_eq!(freshness_text(Some(&Freshness::Fresh)), "fresh");
        assert_eq!(
            freshness_text(Some(&Freshness::NeverSynced)),
            "never synced"
        );
        assert_eq!(freshness_text(None), "-");
    }
}

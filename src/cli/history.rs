//! `pipeline history`: past applies (apply_log) and syncs (sync_history), newest first.

use super::output::{self, Format, TextTable};
use super::status::local;
use crate::instance::{DataDir, Instance};
use crate::state::{report, StateStore};
use anyhow::{bail, Result};
use chrono_tz::Tz;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline history                        the last 20 applies and syncs
  pipeline history --table shop.orders    applies that changed it, and its syncs
  pipeline history --table orders         the same, by the table's view name
  pipeline history --limit 100 --format json";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many entries of each kind to show, newest first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Only this table (its id, or its view name): the applies that changed it and its syncs.
    #[arg(long, value_name = "TABLE")]
    table: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(dir: &Path, args: Args) -> Result<ExitCode> {
    // History is readable even when the specs are broken: use what the instance file gives, if any.
    let (data, tz) = match Instance::open(dir) {
        Ok(i) => (i.data, i.tz),
        Err(_) => (DataDir::new(dir.join("data")), Tz::UTC),
    };
    let reader = StateStore::of(&data).read_if_exists()?;
    let table = match (&args.table, &reader) {
        (Some(given), Some(r)) => match report::table_name(r, given)? {
            report::TableName::Found(id) => Some(id),
            report::TableName::Unknown { closest } => bail!(
                "no table `{given}` is registered or was ever synced{}",
                closest.map_or(
                    "; `pipeline status` lists the tables".to_string(),
                    |c| format!("; did you mean `{c}`?")
                )
            ),
        },
        (Some(given), None) => bail!("no table `{given}`: nothing was applied here yet"),
        (None, _) => None,
    };
    let (applies, syncs) = match &reader {
        Some(r) => report::history(r, args.limit, table.as_deref())?,
        None => (Vec::new(), Vec::new()),
    };
    drop(reader);
    let mut out = anstream::stdout().lock();
    if args.format == Format::Json {
        let v = serde_json::json!({"applies": applies, "syncs": syncs});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let bold = anstyle::Style::new().bold();
    writeln!(out, "{bold}Applies{bold:#} (times in {})", tz.name())?;
    if applies.is_empty() {
        writeln!(out, "  none recorded")?;
    } else {
        let mut t = TextTable::new(vec!["serial", "applied", "who", "changes", "result"]);
        for a in &applies {
            let mut changes = format!("+{} ~{} -{}", a.add, a.change, a.destroy);
            if !a.targets.is_empty() {
                changes.push_str(&format!(" (target {})", a.targets.join(", ")));
            }
            t.row(vec![
                a.serial.to_string(),
                local(&a.applied_at, tz),
                a.who.clone(),
                changes,
                a.result.clone(),
            ]);
        }
        write!(out, "{}", t.render())?;
    }
    writeln!(out, "\n{bold}Syncs{bold:#}")?;
    if syncs.is_empty() {
        writeln!(out, "  none recorded")?;
    } else {
        let mut t = TextTable::new(vec![
            "started",
            "run",
            "table",
            "task",
            "status",
            "rows",
            "duration",
            "error / detail",
        ]);
        for s in &syncs {
            t.row(vec![
                local(&s.started_at, tz),
                s.run_id.clone(),
                s.table_id.clone(),
                s.task.clone(),
                s.status.clone(),
                s.rows.map_or("-".into(), |n| n.to_string()),
                duration(&s.started_at, s.finished_at.as_deref()),
                output::truncate(
                    &s.error
                        .as_deref()
                        .or(s.detail.as_deref())
                        .unwrap_or("")
                        .replace('\n', " "),
                    80,
                ),
            ]);
        }
        write!(out, "{}", t.render())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn duration(start: &str, end: Option<&str>) -> String {
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
    match (parse(start), end.and_then(parse)) {
        (Some(a), Some(b)) => format!("{:.1}s", (b - a).num_milliseconds() as f64 / 1000.0),
        _ => "-".into(),
    }
}

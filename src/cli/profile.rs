//! `pipeline profile TABLE`: the table's last profile as the state recorded it (docs/profile.md) —
//! rows, per column nulls, distinct values, min / max and top values, a few sample rows — and the
//! transforms and metrics that read it.

use super::output::{self, Format, TextTable};
use super::status::local;
use crate::daemon::api::response::TableProfileAnswer;
use crate::instance::{DataDir, Instance};
use crate::registry::lineage::Lineage;
use crate::state::{report, StateStore};
use anyhow::{bail, Result};
use chrono_tz::Tz;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline profile orders                  the profile of the table whose view is orders
  pipeline profile shop.orders             the same, by the table's id
  pipeline profile orders --format json    as JSON (the answer of GET /api/tables/orders/profile)

A run profiles each table whose data changed, after the publish that made the data visible: its
row count and, per column, nulls, approximately how many distinct values, min and max, the most
frequent values of columns with few distinct values, and a few rows picked at random. Remote tables
are not profiled (their rows stay at the source). A profile that fails keeps the previous one; the
failure is shown below it. `used by` lists the transforms and metrics that read the table, directly
or through transforms (docs/profile.md).";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The table: its id (`shop.orders`) or its view name (`orders`).
    #[arg(value_name = "TABLE")]
    table: String,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(dir: &Path, args: Args) -> Result<ExitCode> {
    // Readable even when the specs are broken: what the instance file gives, if any.
    let (data, tz) = match Instance::open(dir) {
        Ok(i) => (i.data, i.tz),
        Err(_) => (DataDir::new(dir.join("data")), Tz::UTC),
    };
    let store = StateStore::of(&data);
    let Some(reader) = store.read_if_exists()? else {
        bail!("no table `{}`: nothing was applied here yet", args.table);
    };
    let given = &args.table;
    let id = match report::table_name(&reader, given)? {
        report::TableName::Found(id) => id,
        report::TableName::Unknown { closest } => bail!(
            "no table `{given}` is registered{}",
            closest.map_or(
                "; `pipeline status` lists the tables".to_string(),
                |c| format!("; did you mean `{c}`?")
            )
        ),
    };
    let stored = crate::state::profile::get(&reader, &id)?;
    drop(reader);
    let reg = crate::ops::sync::registered(&store)?;
    let Some(t) = reg.tables.get(&id) else {
        bail!("table `{id}` is no longer registered (it was removed by an apply)");
    };
    let used_by = Lineage::of(&reg).used_by(&t.name);
    let answer = TableProfileAnswer::build(t, stored, used_by);
    let mut out = anstream::stdout().lock();
    if args.format == Format::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
    } else {
        write!(out, "{}", human(&answer, tz))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A profile value in a cell: text without JSON quotes, everything else as JSON; one line, cut.
fn cell(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Null => "NULL".into(),
        other => other.to_string(),
    };
    output::truncate(&text.replace(['\n', '\r'], " "), 24)
}

fn percent(part: i64, whole: i64) -> String {
    if whole <= 0 || part == 0 {
        return String::new();
    }
    let p = part as f64 * 100.0 / whole as f64;
    if p < 0.1 {
        " (<0.1%)".into()
    } else {
        format!(" ({p:.1}%)")
    }
}

fn human(a: &TableProfileAnswer, tz: Tz) -> String {
    let bold = anstyle::Style::new().bold();
    let mut o = format!(
        "{bold}{}{bold:#} (view {}, source {}, {})\n",
        a.id, a.name, a.source, a.query_mode
    );
    match &a.profile {
        None => o.push_str(&format!("{}\n", a.note.as_deref().unwrap_or("no profile"))),
        Some(p) => {
            o.push_str(&format!(
                "{} rows · profiled {} ({}) by run {}\n\n",
                crate::exec::work::thousands(p.rows),
                a.profiled_at
                    .as_deref()
                    .map_or("-".into(), |t| local(t, tz)),
                tz.name(),
                a.run_id.as_deref().unwrap_or("-")
            ));
            let mut t = TextTable::new(vec![
                "column",
                "type",
                "nulls",
                "distinct",
                "min",
                "max",
                "top values",
            ]);
            t.align_right(vec![false, false, true, true]);
            for c in &p.columns {
                let top: Vec<String> = c
                    .top
                    .iter()
                    .map(|v| format!("{} ({})", cell(&v.value), v.count))
                    .collect();
                t.row(vec![
                    c.name.clone(),
                    output::truncate(&c.data_type, 24),
                    format!("{}{}", c.nulls, percent(c.nulls, p.rows)),
                    c.distinct.map_or("-".into(), |d| format!("~{d}")),
                    c.min.as_ref().map_or("-".into(), cell),
                    c.max.as_ref().map_or("-".into(), cell),
                    output::truncate(&top.join(", "), 60),
                ]);
            }
            o.push_str(&t.render());
            if !p.sample.is_empty() {
                o.push_str(&format!(
                    "\n{bold}Sample{bold:#} ({} random rows)\n",
                    p.sample.len()
                ));
                let mut s =
                    TextTable::with_headers(p.columns.iter().map(|c| c.name.clone()).collect());
                for row in &p.sample {
                    s.row(row.iter().map(cell).collect());
                }
                o.push_str(&s.render());
            }
        }
    }
    if let Some(f) = &a.last_failure {
        o.push_str(&format!(
            "\nThe last attempt failed{}: {}{}\n",
            f.at.as_deref()
                .map_or(String::new(), |t| format!(" at {}", local(t, tz))),
            f.error,
            if a.profile.is_some() {
                " (the profile above still stands)"
            } else {
                ""
            }
        ));
    }
    o.push_str(&format!("\n{bold}Used by{bold:#}: "));
    if a.used_by.is_empty() {
        o.push_str("nothing registered reads it\n");
    } else {
        let list: Vec<String> = a
            .used_by
            .iter()
            .map(|u| {
                format!(
                    "{} {}{}",
                    u.kind.as_str(),
                    u.name,
                    if u.direct {
                        ""
                    } else {
                        " (through a transform)"
                    }
                )
            })
            .collect();
        o.push_str(&format!("{}\n", list.join(", ")));
    }
    o
}

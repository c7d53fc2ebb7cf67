//! `pipeline query "SQL"`: run SQL on analytics.duckdb, read-only, with the attachments remote views
//! need, and print the result as a table, CSV or JSON.

use crate::contract::RemotePolicy;
use crate::orchestrator;
use crate::value_json::json;
use anyhow::{bail, Context, Result};
use duckdb::types::Value;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline query \"show tables\"
  pipeline query \"select day, revenue from daily_revenue order by day desc limit 7\"
  pipeline query --format csv \"from orders\" > orders.csv
  pipeline query --format json \"select * from _pipeline.tables\"

The database is opened read-only: a query never changes analytics.duckdb. `_pipeline.tables` lists
what was published (source, rows, extraction time). In table format at most --max-rows rows are
shown; csv and json print every row.";

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueryFormat {
    #[default]
    Table,
    Csv,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The SQL to run (DuckDB dialect). `-` reads it from stdin.
    sql: String,
    #[arg(long, value_enum, default_value_t)]
    format: QueryFormat,
    /// Rows shown in table format.
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_rows: usize,
}

pub fn run(dir: &Path, args: Args) -> Result<ExitCode> {
    let inst = super::output::instance(dir)?;
    if !inst.data.analytics().is_file() {
        bail!("there is no analytics.duckdb yet: run `pipeline run` (or `pipeline apply`) first");
    }
    let sql = if args.sql == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        s
    } else {
        args.sql.clone()
    };
    let (conn, problems) = orchestrator::open_live(&inst.data, &RemotePolicy::of_instance(&inst))?;
    for p in problems {
        eprintln!("warning: {p} (views that read through it will fail)");
    }
    print_result(&conn, &sql, args.format, args.max_rows)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `sql` on `conn` and prints its rows on stdout in `format`.
pub(super) fn print_result(
    conn: &duckdb::Connection,
    sql: &str,
    format: QueryFormat,
    max_rows: usize,
) -> Result<()> {
    let mut stmt = conn.prepare(sql).context("query failed")?;
    let mut rows = stmt.query([]).context("query failed")?;
    let columns: Vec<String> = rows.as_ref().map(|s| s.column_names()).unwrap_or_default();
    let mut out = std::io::BufWriter::new(anstream::stdout().lock());
    let mut table = super::output::TextTable::with_headers(columns.clone());
    let mut shown = 0usize;
    let mut total = 0usize;
    if format == QueryFormat::Csv {
        writeln!(
            out,
            "{}",
            columns
                .iter()
                .map(|c| csv_cell(c))
                .collect::<Vec<_>>()
                .join(",")
        )?;
    }
    while let Some(row) = rows.next().context("query failed")? {
        total += 1;
        let values: Vec<Value> = (0..columns.len())
            .map(|i| row.get::<_, Value>(i))
            .collect::<Result<_, _>>()?;
        match format {
            QueryFormat::Table => {
                if shown < max_rows {
                    table.row(
                        values
                            .iter()
                            .map(|v| super::output::truncate(&readable(v), 60))
                            .collect(),
                    );
                    shown += 1;
                }
            }
            QueryFormat::Csv => {
                let cells: Vec<String> = values
                    .iter()
                    .map(|v| match v {
                        Value::Null => String::new(),
                        v => csv_cell(&text(v)),
                    })
                    .collect();
                writeln!(out, "{}", cells.join(","))?;
            }
            QueryFormat::Json => {
                let obj: serde_json::Map<String, serde_json::Value> = columns
                    .iter()
                    .cloned()
                    .zip(values.iter().map(json))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Object(obj))?;
            }
        }
    }
    if format == QueryFormat::Table {
        write!(out, "{}", table.render())?;
        let more = if total > shown {
            format!(" ({shown} shown; --max-rows to see more)")
        } else {
            String::new()
        };
        writeln!(out, "{total} row(s){more}")?;
    }
    out.flush()?;
    Ok(())
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A value for a table on screen: floating-point noise rounded away (CSV and JSON keep every digit).
fn readable(v: &Value) -> String {
    let round = |f: f64| {
        let s = format!("{f:.6}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".to_string()
        } else {
            s.to_string()
        }
    };
    match v {
        Value::Double(f) if f.is_finite() => round(*f),
        Value::Float(f) if f.is_finite() => round(*f as f64),
        other => text(other),
    }
}

/// A value as people read it.
fn text(v: &Value) -> String {
    match json(v) {
        serde_json::Value::Null => "NULL".into(),
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

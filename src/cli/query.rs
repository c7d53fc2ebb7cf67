//! `pipeline query "SQL"`: run SQL on analytics.duckdb, read-only, with the attachments remote views
//! need, and print the result as a table, CSV or JSON.

use crate::analytics;
use crate::extract_db::RemotePolicy;
use crate::value_json;
use crate::value_text::{self, ColumnType, Zone};
use crate::workspace::client::{Client, QueryAnswer};
use crate::workspace::credentials;
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
  pipeline query --format ndjson \"from orders\" | jq .amount
  pipeline query --format json \"select * from _pipeline.tables\"
  pipeline query --server \"select count(*) from big_remote_table\"   on the server (docs/analyst.md)

In a workspace made by `pipeline pull`, the query runs on the workspace's analytics.duckdb (the local
copy); --server sends it to the server's /api/query instead, with your token's permissions.

The database is opened read-only: a query never changes analytics.duckdb. `_pipeline.tables` lists
what was published (source, rows, extraction time). Rows stream: the query stops after --max-rows
rows (default 1000 in table format, where a note says more rows exist; no limit for csv, json and
ndjson unless given). Values print as DuckDB prints them (DECIMAL with its scale, TIMESTAMP WITH
TIME ZONE with its offset, lists and structs in DuckDB's notation); json is one array of row
objects, ndjson one object per line; csv writes NULL as an empty field and an empty string as \"\"
(docs/cli.md).";

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueryFormat {
    /// Aligned columns for people; numbers right-aligned.
    #[default]
    #[value(alias = "human")]
    Table,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON array of row objects.
    Json,
    /// One JSON object per row, one per line.
    Ndjson,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The SQL to run (DuckDB dialect). `-` reads it from stdin.
    sql: String,
    #[arg(long, value_enum, default_value_t)]
    format: QueryFormat,
    /// Most rows to read: the query stops there. Default: 1000 in table format, no limit otherwise.
    #[arg(long, value_name = "N")]
    max_rows: Option<usize>,
    /// Run on the server (`POST /api/query`, with your token's permissions) instead of locally:
    /// for remote tables, or data too big to pull. The server is the workspace's, else
    /// $PIPELINE_SERVER, else the one you last logged in to.
    #[arg(long)]
    server: bool,
}

/// Rows shown in table format when --max-rows is not given.
pub const DEFAULT_TABLE_ROWS: usize = 1000;

pub fn run(dir: &Path, args: Args) -> Result<ExitCode> {
    let sql = if args.sql == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        s
    } else {
        args.sql.clone()
    };
    let workspace = super::pull::workspace_here(dir);
    if args.server {
        let server = match &workspace {
            Some(ws) => ws.load()?.map(|s| s.server),
            None => None,
        };
        let client = Client::new(credentials::resolve(server.as_deref())?);
        let answer = client.query(&sql, args.max_rows)?;
        let out = std::io::BufWriter::new(anstream::stdout().lock());
        write_answer(&answer, args.format, out)?;
        if answer.truncated {
            eprintln!(
                "note: the server stopped after {} rows ({})",
                answer.rows.len(),
                answer.truncated_by.as_deref().unwrap_or("its limits")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let limit = match (args.max_rows, args.format) {
        (Some(n), _) => Some(n),
        (None, QueryFormat::Table) => Some(DEFAULT_TABLE_ROWS),
        (None, _) => None,
    };
    if let Some(ws) = workspace {
        let conn = crate::workspace::database::open(&ws)?;
        print_result(&conn, &sql, args.format, limit)?;
        return Ok(ExitCode::SUCCESS);
    }
    let inst = super::output::instance(dir)?;
    if !inst.data.analytics().is_file() {
        bail!("there is no analytics.duckdb yet: run `pipeline run` (or `pipeline apply`) first");
    }
    let (conn, problems) = analytics::open_live(&inst.data, &RemotePolicy::of_instance(&inst))?;
    super::output::runtime_warnings(&problems);
    print_result(&conn, &sql, args.format, limit)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `sql` on `conn` and prints its rows on stdout in `format`, reading at most `limit` rows
/// (the result streams: rows past the limit are never computed when the plan allows).
pub(super) fn print_result(
    conn: &duckdb::Connection,
    sql: &str,
    format: QueryFormat,
    limit: Option<usize>,
) -> Result<()> {
    let out = std::io::BufWriter::new(anstream::stdout().lock());
    write_result(conn, sql, format, limit, out)
}

/// [`print_result`] into any writer.
pub fn write_result(
    conn: &duckdb::Connection,
    sql: &str,
    format: QueryFormat,
    limit: Option<usize>,
    mut out: impl Write,
) -> Result<()> {
    let zone = Zone::of(conn);
    let mut stmt = conn.prepare(sql).context("query failed")?;
    // Streaming execution: rows are fetched chunk by chunk as they are read, so a limit stops the
    // query instead of materialising its whole result first.
    drop(stmt.stream_arrow([]).context("query failed")?);
    let mut rows = stmt.raw_query();
    let (columns, types): (Vec<String>, Vec<ColumnType>) = match rows.as_ref() {
        Some(s) => (
            s.column_names(),
            (0..s.column_count())
                .map(|i| ColumnType::of(&s.column_logical_type(i)))
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let mut table = super::output::TextTable::with_headers(columns.clone());
    table.align_right(types.iter().map(value_text::right_aligned).collect());
    let mut read = 0usize;
    let mut more = false;
    match format {
        QueryFormat::Csv => writeln!(
            out,
            "{}",
            columns
                .iter()
                .map(|c| csv_field(Some(c)))
                .collect::<Vec<_>>()
                .join(",")
        )?,
        QueryFormat::Json => write!(out, "[")?,
        _ => {}
    }
    loop {
        if limit.is_some_and(|n| read >= n) {
            more = rows.next().context("query failed")?.is_some();
            break;
        }
        let Some(row) = rows.next().context("query failed")? else {
            break;
        };
        let values: Vec<Value> = (0..columns.len())
            .map(|i| row.get::<_, Value>(i))
            .collect::<Result<_, _>>()?;
        read += 1;
        match format {
            QueryFormat::Table => table.row(
                values
                    .iter()
                    .zip(&types)
                    .map(|(v, t)| {
                        let text = value_text::text(v, t, zone).unwrap_or_else(|| "NULL".into());
                        super::output::truncate(&text, 60)
                    })
                    .collect(),
            ),
            QueryFormat::Csv => {
                let cells: Vec<String> = values
                    .iter()
                    .zip(&types)
                    .map(|(v, t)| csv_field(value_text::text(v, t, zone).as_deref()))
                    .collect();
                writeln!(out, "{}", cells.join(","))?;
            }
            QueryFormat::Json | QueryFormat::Ndjson => {
                let obj = value_json::row(&columns, &values, &types, zone);
                if format == QueryFormat::Json {
                    write!(out, "{}\n  {obj}", if read > 1 { "," } else { "" })?;
                } else {
                    writeln!(out, "{obj}")?;
                }
            }
        }
    }
    match format {
        QueryFormat::Table => {
            write!(out, "{}", table.render())?;
            let rows_word = if read == 1 { "row" } else { "rows" };
            if more {
                writeln!(
                    out,
                    "{read} {rows_word} shown (more rows not read; --max-rows N to see more)"
                )?;
            } else {
                writeln!(out, "{read} {rows_word}")?;
            }
        }
        QueryFormat::Json => writeln!(out, "{}]", if read > 0 { "\n" } else { "" })?,
        _ => {}
    }
    if more && format != QueryFormat::Table {
        eprintln!("note: stopped after {read} rows (--max-rows)");
    }
    out.flush()?;
    Ok(())
}

/// A server's answer (`POST /api/query`) in `format`: the values as the server's JSON gives them
/// (strings as they are, NULL as in local output).
pub fn write_answer(answer: &QueryAnswer, format: QueryFormat, mut out: impl Write) -> Result<()> {
    let columns: Vec<String> = answer.columns.iter().map(|c| c.name.clone()).collect();
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    };
    match format {
        QueryFormat::Table => {
            let mut table = super::output::TextTable::with_headers(columns.clone());
            table.align_right(
                (0..columns.len())
                    .map(|i| {
                        !answer.rows.is_empty()
                            && answer
                                .rows
                                .iter()
                                .all(|r| r.get(i).is_none_or(|v| v.is_number() || v.is_null()))
                    })
                    .collect(),
            );
            for r in &answer.rows {
                table.row(
                    r.iter()
                        .map(|v| {
                            super::output::truncate(&text(v).unwrap_or_else(|| "NULL".into()), 60)
                        })
                        .collect(),
                );
            }
            write!(out, "{}", table.render())?;
            let n = answer.rows.len();
            writeln!(out, "{n} {}", if n == 1 { "row" } else { "rows" })?;
        }
        QueryFormat::Csv => {
            let header: Vec<String> = columns.iter().map(|c| csv_field(Some(c))).collect();
            writeln!(out, "{}", header.join(","))?;
            for r in &answer.rows {
                let cells: Vec<String> = r.iter().map(|v| csv_field(text(v).as_deref())).collect();
                writeln!(out, "{}", cells.join(","))?;
            }
        }
        QueryFormat::Json | QueryFormat::Ndjson => {
            let objects: Vec<serde_json::Value> = answer
                .rows
                .iter()
                .map(|r| {
                    serde_json::Value::Object(
                        columns.iter().cloned().zip(r.iter().cloned()).collect(),
                    )
                })
                .collect();
            if format == QueryFormat::Json {
                writeln!(out, "{}", serde_json::to_string_pretty(&objects)?)?;
            } else {
                for o in objects {
                    writeln!(out, "{o}")?;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// A CSV field (RFC 4180): NULL is empty; a value is quoted when it holds a comma, a quote, a line
/// break, or surrounding spaces, or is empty (so that `""` — an empty string — differs from NULL).
pub fn csv_field(v: Option<&str>) -> String {
    match v {
        None => String::new(),
        Some(s)
            if s.is_empty()
                || s.contains([',', '"', '\n', '\r'])
                || s.starts_with(' ')
                || s.ends_with(' ') =>
        {
            format!("\"{}\"", s.replace('"', "\"\""))
        }
        Some(s) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        conn: &duckdb::Connection,
        sql: &str,
        format: QueryFormat,
        limit: Option<usize>,
    ) -> String {
        let mut out = Vec::new();
        write_result(conn, sql, format, limit, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// One row per DuckDB type family, written as CSV by us and read back by DuckDB's CSV reader:
    /// every value comes back as DuckDB's own text of it, NULL as NULL and '' as ''.
    #[test]
    fn csv_round_trips_through_duckdbs_reader() {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let select = "SELECT 1::INTEGER AS i, 1.50::DECIMAL(10,2) AS d, 0.1::DOUBLE AS f, \
             'a, \"quoted\"\nline' AS s, '' AS empty, NULL::VARCHAR AS nothing, ' padded ' AS pad, \
             '\\xFF,'::BLOB AS b, DATE '2024-01-02' AS day, TIME '12:00:00.5' AS t, \
             TIMESTAMP '2024-01-02 03:04:05' AS ts, TIMESTAMPTZ '2024-01-02 03:04:05+00' AS tz, \
             INTERVAL 36 HOUR AS iv, UUID '123e4567-e89b-12d3-a456-426614174000' AS u, \
             [1, NULL] AS l, {'a': 'x, y'} AS st, MAP {'k': 1} AS m";
        let csv = run(&conn, select, QueryFormat::Csv, None);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.csv");
        std::fs::write(&file, &csv).unwrap();
        let expected: Vec<Option<String>> = {
            let mut stmt = conn
                .prepare(&format!("SELECT COLUMNS(*)::VARCHAR FROM ({select})"))
                .unwrap();
            let mut rows = stmt.query([]).unwrap();
            let row = rows.next().unwrap().unwrap();
            (0..17).map(|i| row.get(i).unwrap()).collect()
        };
        let mut stmt = conn
            // allow_quoted_nulls = false: `""` is the empty string, an empty field NULL.
            .prepare(
                "SELECT * FROM read_csv(?, all_varchar = true, header = true, \
                 allow_quoted_nulls = false)",
            )
            .unwrap();
        let mut rows = stmt.query([file.to_str().unwrap()]).unwrap();
        let row = rows.next().unwrap().unwrap();
        let back: Vec<Option<String>> = (0..17).map(|i| row.get(i).unwrap()).collect();
        assert_eq!(back, expected, "{csv}");
        assert!(rows.next().unwrap().is_none());
    }

    #[test]
    fn table_output_right_aligns_numbers_and_json_is_one_document() {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let sql =
            "SELECT * FROM (VALUES ('a', 1.50::DECIMAL(6,2)), ('bbbb', 100.00)) t(name, amount)";
        let table = anstream::adapter::strip_str(&run(&conn, sql, QueryFormat::Table, Some(10)))
            .to_string();
        assert!(table.contains("a       1.50\n"), "{table}");
        assert!(table.contains("bbbb  100.00\n"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&run(&conn, sql, QueryFormat::Json, None)).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"name": "a", "amount": 1.5}, {"name": "bbbb", "amount": 100.0}])
        );
        let raw = run(&conn, sql, QueryFormat::Ndjson, None);
        assert_eq!(
            raw,
            "{\"name\":\"a\",\"amount\":1.50}\n{\"name\":\"bbbb\",\"amount\":100.00}\n"
        );
        let empty = run(&conn, "SELECT 1 AS x WHERE false", QueryFormat::Json, None);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&empty).unwrap(),
            serde_json::json!([])
        );
    }

    /// Rows past the limit are never computed: the rows after the first million fail, which a query
    /// run to completion before printing would reach.
    #[test]
    fn the_result_streams_and_stops_at_the_limit() {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let sql = "SELECT CASE WHEN i < 1000000 THEN i ELSE error('read past the limit') END AS i \
                   FROM range(100000000) t(i)";
        let out = run(&conn, sql, QueryFormat::Table, Some(3));
        let out = anstream::adapter::strip_str(&out).to_string();
        assert!(out.contains("3 rows shown (more rows not read"), "{out}");
        assert_eq!(
            run(&conn, sql, QueryFormat::Ndjson, Some(2)),
            "{\"i\":0}\n{\"i\":1}\n"
        );
        // Without a limit the same query does reach the failing rows.
        let mut sink = Vec::new();
        assert!(write_result(&conn, sql, QueryFormat::Csv, None, &mut sink).is_err());
    }
}

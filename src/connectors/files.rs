//! `csv` and `parquet` sources: files on disk, read by DuckDB's own readers.
//!
//! Which files make a table, given the connection's `path`:
//! - a file: that file is the table;
//! - a glob (`exports/orders_*.csv`): every match is the table;
//! - a directory: `<dir>/<source_table>` as given (a file, or a glob), else `<dir>/<source_table>.<ext>`
//!   for the format's extensions, else every file of the format inside `<dir>/<source_table>/`.

use super::{file_stamp, fingerprint_of, Connector, ConnectorError, Scan, Session};
use crate::quote;
use crate::registry::registered::TableDef;
use duckdb::Connection;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Csv,
    Parquet,
}

impl Format {
    fn extensions(self) -> &'static [&'static str] {
        match self {
            Format::Csv => &["csv", "csv.gz", "csv.zst", "tsv", "tsv.gz", "txt"],
            Format::Parquet => &["parquet", "pq"],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Csv => "CSV",
            Format::Parquet => "Parquet",
        }
    }
}

/// CSV reader options the spec may set (docs/specs.md), with their SQL form.
const CSV_OPTIONS: &[(&str, OptionKind)] = &[
    ("delim", OptionKind::Str),
    ("header", OptionKind::Bool),
    ("quote", OptionKind::Str),
    ("escape", OptionKind::Str),
    ("nullstr", OptionKind::Str),
    ("skip", OptionKind::Int),
    ("dateformat", OptionKind::Str),
    ("timestampformat", OptionKind::Str),
    ("all_varchar", OptionKind::Bool),
    ("sample_size", OptionKind::Int),
    ("ignore_errors", OptionKind::Bool),
];

#[derive(Clone, Copy, Debug)]
enum OptionKind {
    Str,
    Bool,
    Int,
}

pub struct Files {
    format: Format,
    path: PathBuf,
    /// `, key = value` pairs for the reader, already rendered from checked values.
    options: String,
    /// Part of every fingerprint: changing an option changes what is read.
    options_text: String,
}

impl Files {
    pub fn csv(path: PathBuf, connection: &Value) -> Files {
        let mut options = String::new();
        if let Some(map) = connection.get("options").and_then(|o| o.as_object()) {
            for (key, kind) in CSV_OPTIONS {
                let Some(v) = map.get(*key) else { continue };
                let rendered = match (kind, v) {
                    (OptionKind::Str, Value::String(s)) => Some(quote::literal(s)),
                    (OptionKind::Bool, Value::Bool(b)) => Some(b.to_string()),
                    (OptionKind::Int, Value::Number(n)) if n.is_i64() => Some(n.to_string()),
                    _ => None,
                };
                if let Some(r) = rendered {
                    options.push_str(&format!(", {key} = {r}"));
                }
            }
        }
        Files {
            format: Format::Csv,
            path,
            options_text: connection
                .get("options")
                .map(|o| o.to_string())
                .unwrap_or_default(),
            options,
        }
    }

    pub fn parquet(path: PathBuf, connection: &Value) -> Files {
        let hive = connection
            .get("hive_partitioning")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        Files {
            format: Format::Parquet,
            path,
            options: format!(", hive_partitioning = {hive}"),
            options_text: format!("hive={hive}"),
        }
    }

    /// The files of `table`, sorted.
    fn files(&self, conn: &Connection, table: &TableDef) -> Result<Vec<PathBuf>, ConnectorError> {
        let base = &self.path;
        let st = table.source_table();
        if is_glob(&base.to_string_lossy()) {
            return glob(conn, base).and_then(|f| self.nonempty(f, table, base));
        }
        if base.is_file() {
            return Ok(vec![base.clone()]);
        }
        if !base.is_dir() {
            return Err(ConnectorError::NotFound(format!(
                "{} does not exist (the source's connection.path)",
                base.display()
            )));
        }
        if !crate::names::is_relative_inside(st) {
            return Err(ConnectorError::Config(format!(
                "source_table `{st}` must name a file inside {}",
                base.display()
            )));
        }
        let named = base.join(st);
        if is_glob(st) {
            return glob(conn, &named).and_then(|f| self.nonempty(f, table, base));
        }
        if named.is_file() {
            return Ok(vec![named]);
        }
        for ext in self.format.extensions() {
            let f = base.join(format!("{st}.{ext}"));
            if f.is_file() {
                return Ok(vec![f]);
            }
        }
        if named.is_dir() {
            let mut files = Vec::new();
            for ext in self.format.extensions() {
                files.extend(glob(conn, &named.join(format!("**/*.{ext}")))?);
            }
            files.sort();
            files.dedup();
            return self.nonempty(files, table, base);
        }
        Err(ConnectorError::NotFound(format!(
            "no {} file for table `{}` in {}: looked for {st}.{} and a directory {st}/",
            self.format.name(),
            table.name,
            base.display(),
            self.format.extensions()[0],
        )))
    }

    fn nonempty(
        &self,
        files: Vec<PathBuf>,
        table: &TableDef,
        base: &Path,
    ) -> Result<Vec<PathBuf>, ConnectorError> {
        if files.is_empty() {
            return Err(ConnectorError::NotFound(format!(
                "no {} files match {} for table `{}`",
                self.format.name(),
                base.display(),
                table.name
            )));
        }
        Ok(files)
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn glob(conn: &Connection, pattern: &Path) -> Result<Vec<PathBuf>, ConnectorError> {
    let mut stmt = conn
        .prepare("SELECT file FROM glob(?) ORDER BY file")
        .map_err(|e| source_err(pattern, e))?;
    let files = stmt
        .query_map([pattern.to_string_lossy()], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| source_err(pattern, e))?;
    Ok(files.into_iter().map(PathBuf::from).collect())
}

fn source_err(p: &Path, e: duckdb::Error) -> ConnectorError {
    ConnectorError::Source {
        what: p.display().to_string(),
        message: e.to_string(),
    }
}

impl Connector for Files {
    fn fingerprint(
        &self,
        conn: &Connection,
        table: &TableDef,
    ) -> Result<Option<String>, ConnectorError> {
        let mut parts = vec![self.options_text.clone()];
        for f in self.files(conn, table)? {
            parts.push(file_stamp(&f)?);
        }
        Ok(Some(fingerprint_of(&parts)))
    }

    fn scan(
        &self,
        conn: &Connection,
        _session: &Session,
        table: &TableDef,
        _since: Option<&str>,
    ) -> Result<Scan, ConnectorError> {
        let files = self.files(conn, table)?;
        let list = files
            .iter()
            .map(|f| quote::path(f))
            .collect::<Vec<_>>()
            .join(", ");
        let reader = match self.format {
            Format::Csv => "read_csv",
            Format::Parquet => "read_parquet",
        };
        let union = if files.len() > 1 {
            ", union_by_name = true"
        } else {
            ""
        };
        Ok(Scan::of(format!(
            "{reader}([{list}]{}{union})",
            self.options
        )))
    }
}

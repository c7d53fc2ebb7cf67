//! `bigquery` sources: tables and query results of a Google BigQuery project, over the REST API v2
//! ([`client`]) with a service-account key ([`auth`]).
//!
//! A table's `bucket` is its dataset and `source_table` its table, in the connection's `project_id`.
//! - `query_mode: local` reads a stored table with `tabledata.list` (free: no query, no bytes billed),
//!   page by page; a view, an external table, or an incremental read (`WHERE cursor >= last`, pushed
//!   into the query) goes through `jobs.query` + `jobs.getQueryResults`.
//! - `materialized` runs the table's `query` (GoogleSQL) in the billing project, with the table's
//!   `bucket` as the default dataset.
//! - `remote` writes the seed system's contract (DESIGN.md §4): a `_remote_attach` row
//!   `('bq', 'bigquery', 'project=<project_id>', '')` and a view over `bq."<dataset>"."<table>"`, or
//!   for a BigQuery view `bigquery_query('<project>', 'SELECT * FROM `<project>.<dataset>.<table>`')`.
//!
//! Every query is dry-run first: the bytes it would process are logged and checked against the
//! table's `maximum_bytes_billed`, which refuses an over-budget query before it runs and is also set
//! on the job (`maximumBytesBilled`), so BigQuery itself refuses one that grew since. Pages are decoded
//! into newline-delimited JSON under the run's scratch directory ([`rows`]) and read by DuckDB with
//! explicit types; memory holds one page at a time. The input fingerprint of a stored table is its
//! `lastModifiedTime`, row and byte counts and schema: an unchanged table is not read again.

pub mod auth;
pub mod client;
pub mod rows;

use super::{
    fingerprint_of, Connector, ConnectorError, DiscoveredColumn, DiscoveredTable, RemoteTable,
    Scan, Session,
};
use crate::extract_db::{RemoteAttach, ViewTarget};
use crate::registry::registered::{SourceDef, TableDef};
use crate::spec::model::{QueryMode, SyncMode};
use auth::ServiceAccount;
use client::{BigqueryError, Client, Field, Patience, QueryRequest, Schema, TableInfo};
use duckdb::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The REST API's root, unless the connection's `endpoint` says otherwise (an emulator).
pub const GOOGLE_ENDPOINT: &str = "https://bigquery.googleapis.com";

/// The `_remote_attach` alias, extension and table function the seed system uses for BigQuery.
pub const REMOTE_ALIAS: &str = crate::spec::model::BIGQUERY_REMOTE_ALIAS;
pub const REMOTE_EXTENSION: &str = "bigquery";
pub const QUERY_FUNCTION: &str = "bigquery_query";

static DOWNLOADS: AtomicU64 = AtomicU64::new(0);

pub struct Bigquery {
    client: Client,
    /// Where the tables are.
    project: String,
    /// Where jobs run and are billed.
    billing_project: String,
    page_size: Option<u32>,
}

impl From<BigqueryError> for ConnectorError {
    fn from(e: BigqueryError) -> Self {
        ConnectorError::Source {
            what: "bigquery".into(),
            message: crate::redact::redact(&e.to_string()).into_owned(),
        }
    }
}

/// A project id as BigQuery spells it (`my-project`, `example.com:my-project`).
pub fn is_project(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'))
}

/// A dataset id: letters, digits and underscores.
pub fn is_dataset(s: &str) -> bool {
    !s.is_empty() && s.len() <= 1024 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A table id this connector reads: letters, digits, underscores and dashes.
pub fn is_table(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 1024
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Retry settings; `PIPELINE_BIGQUERY_FAST_RETRY=1` shortens the pauses (tests use it).
fn patience() -> Patience {
    if std::env::var("PIPELINE_BIGQUERY_FAST_RETRY").is_ok_and(|v| v == "1") {
        Patience {
            attempts: 4,
            first_pause: std::time::Duration::from_millis(20),
            max_pause: std::time::Duration::from_millis(300),
            request_timeout: std::time::Duration::from_secs(60),
            ..Patience::default()
        }
    } else {
        Patience::default()
    }
}

impl Bigquery {
    /// The connector for `source`; relative `credentials_file` paths resolve against `root`.
    pub fn new(source: &SourceDef, root: &Path) -> Result<Bigquery, ConnectorError> {
        let config = |m: String| ConnectorError::Config(format!("source `{}`: {m}", source.name));
        let text = |key: &str| {
            source
                .connection_str(key)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let (json, origin) =
            match (text("credentials_file"), text("credentials_env")) {
                (Some(_), Some(_)) => {
                    return Err(config(
                        "set one of credentials_file and credentials_env, not both".into(),
                    ))
                }
                (Some(file), None) => {
                    let path = root.join(file);
                    let json = std::fs::read_to_string(&path).map_err(|e| {
                        config(format!(
                            "cannot read the service-account key {} (credentials_file): {e}",
                            path.display()
                        ))
                    })?;
                    (json, format!("credentials_file {file}"))
                }
                (None, Some(env)) => {
                    // Registered as a secret as it is read: no log line may show it from here on.
                    let json = crate::redact::secret_env(env).ok_or_else(|| {
                        config(format!(
                            "the environment variable `{env}` (credentials_env) is not set"
                        ))
                    })?;
                    (json, format!("the environment variable {env}"))
                }
                (None, None) => return Err(config(
                    "no service-account key: set credentials_file (a path) or credentials_env (a \
                     variable holding the key's JSON)"
                        .into(),
                )),
            };
        let account =
            ServiceAccount::from_json(&json, &origin).map_err(|e| config(e.to_string()))?;
        let project = text("project_id")
            .map(String::from)
            .or_else(|| account.project_id.clone())
            .ok_or_else(|| {
                config("no project_id, and the service-account key names none".into())
            })?;
        let billing_project = text("billing_project")
            .map(String::from)
            .unwrap_or_else(|| project.clone());
        for (what, p) in [
            ("project_id", &project),
            ("billing_project", &billing_project),
        ] {
            if !is_project(p) {
                return Err(config(format!(
                    "{what} `{p}` is not a BigQuery project id (letters, digits, `-`, `.`, `:`)"
                )));
            }
        }
        let endpoint = text("endpoint").unwrap_or(GOOGLE_ENDPOINT).to_string();
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(config(format!(
                "endpoint `{endpoint}` is not an http(s) URL"
            )));
        }
        let page_size = source
            .connection
            .get("page_size")
            .and_then(|v| v.as_u64())
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX).max(1));
        let location = text("location").map(String::from);
        Ok(Bigquery {
            client: Client::new(&endpoint, account, patience(), location),
            project,
            billing_project,
            page_size,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    /// The table's dataset and table id, checked.
    fn dataset_and_table(&self, t: &TableDef) -> Result<(String, String), ConnectorError> {
        let dataset = t.bucket.clone().ok_or_else(|| {
            ConnectorError::Config(format!(
                "table `{}` has no bucket: a BigQuery table is <dataset>.<table>, and bucket is \
                 the dataset",
                t.name
            ))
        })?;
        let table = t.source_table().to_string();
        if !is_dataset(&dataset) {
            return Err(ConnectorError::Config(format!(
                "bucket `{dataset}` of table `{}` is not a BigQuery dataset id (letters, digits, _)",
                t.name
            )));
        }
        if !is_table(&table) {
            return Err(ConnectorError::Config(format!(
                "source_table `{table}` of table `{}` is not a table id this connector reads \
                 (letters, digits, _ and -)",
                t.name
            )));
        }
        Ok((dataset, table))
    }

    /// `` `project.dataset.table` `` (checked parts only).
    fn table_sql(&self, dataset: &str, table: &str) -> String {
        format!("`{}.{dataset}.{table}`", self.project)
    }

    /// A fresh scratch directory for one scan's pages.
    fn scratch(&self, session: &Session, table: &TableDef) -> Result<PathBuf, ConnectorError> {
        let dir = session
            .scratch
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(format!(
                "bigquery-{}-{}-{}",
                std::process::id(),
                DOWNLOADS.fetch_add(1, Ordering::Relaxed),
                table.name
            ));
        std::fs::create_dir_all(&dir).map_err(|e| ConnectorError::Io(dir.clone(), e))?;
        Ok(dir)
    }

    /// Dry-runs `q` (logging the bytes it would process), refuses it over the table's budget, then
    /// runs it and writes its rows into `dir`. The rows' schema is the query's, unless `schema` (a
    /// table's own, for `SELECT *` over it) is given.
    fn run_query(
        &self,
        table: &TableDef,
        q: &QueryRequest,
        dir: &Path,
        schema: Option<&Schema>,
    ) -> Result<(Schema, PathBuf), ConnectorError> {
        let dry = self.client.dry_run(&self.billing_project, q)?;
        tracing::info!(
            table = %table.id,
            bytes = dry.bytes_processed,
            "bigquery: dry run: the query will process {} bytes",
            dry.bytes_processed
        );
        if let Some(max) = q.maximum_bytes_billed {
            if dry.bytes_processed > max {
                return Err(ConnectorError::Config(format!(
                    "table `{}`: the query would process {} bytes, more than its \
                     maximum_bytes_billed of {max} bytes; it was not run. Raise \
                     maximum_bytes_billed, or narrow the query",
                    table.id, dry.bytes_processed
                )));
            }
        }
        let path = dir.join("rows.ndjson");
        // Both callbacks fill one state: the schema arrives first, then the pages.
        let state: std::cell::RefCell<Option<(Schema, rows::RowWriter)>> = Default::default();
        self.client.query(
            &self.billing_project,
            q,
            |result| {
                // A table's own schema knows what the query answer may not (an emulator reports
                // GEOGRAPHY as BYTES); it is used when the columns are the same.
                let chosen = match schema {
                    Some(s) if same_columns(s, &result) => s.clone(),
                    _ => result,
                };
                *state.borrow_mut() = Some((chosen, rows::RowWriter::create(&path)?));
                Ok(())
            },
            |page| match &mut *state.borrow_mut() {
                Some((s, w)) => w.write_page(s, &page),
                None => Ok(()),
            },
        )?;
        let (schema, writer) = state.into_inner().ok_or_else(|| ConnectorError::Source {
            what: "bigquery".into(),
            message: "the query answered no schema".into(),
        })?;
        let written = writer.finish()?;
        Ok((schema, written))
    }

    /// Reads a stored table with `tabledata.list` into `dir`.
    fn read_table(
        &self,
        info: &TableInfo,
        dataset: &str,
        table: &str,
        dir: &Path,
    ) -> Result<PathBuf, ConnectorError> {
        let mut writer = rows::RowWriter::create(&dir.join("rows.ndjson"))?;
        self.client
            .table_rows(&self.project, dataset, table, self.page_size, |page| {
                writer.write_page(&info.schema, &page)
            })?;
        tracing::debug!(table, rows = writer.rows, "bigquery: table read");
        Ok(writer.finish()?)
    }

    /// Lists datasets (all, or `only`), their tables and columns.
    fn list_tables(&self, only: Option<&str>) -> Result<Vec<DiscoveredTable>, ConnectorError> {
        if let Some(d) = only.filter(|d| !is_dataset(d)) {
            return Err(ConnectorError::Config(format!(
                "`{d}` is not a BigQuery dataset id (letters, digits and _)"
            )));
        }
        let datasets = match only {
            Some(d) => vec![d.to_string()],
            None => self.client.datasets(&self.project)?,
        };
        let mut out = Vec::new();
        for dataset in datasets {
            for table in self.client.tables(&self.project, &dataset)? {
                let info = self.client.table(&self.project, &dataset, &table)?;
                out.push(DiscoveredTable {
                    bucket: dataset.clone(),
                    name: table,
                    rows: info.num_rows.as_deref().and_then(|n| n.parse().ok()),
                    description: info.description.clone(),
                    columns: info
                        .schema
                        .fields
                        .iter()
                        .map(|f| DiscoveredColumn {
                            name: f.name.clone(),
                            data_type: Some(rows::duck_type(f)),
                            description: f.description.clone(),
                        })
                        .collect(),
                    primary_key: info.primary_key(),
                });
            }
        }
        out.sort_by(|a, b| (&a.bucket, &a.name).cmp(&(&b.bucket, &b.name)));
        Ok(out)
    }
}

/// Whether two schemas have the same column names in the same order.
fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields.len() == b.fields.len()
        && a.fields
            .iter()
            .zip(&b.fields)
            .all(|(x, y)| x.name.eq_ignore_ascii_case(&y.name))
}

/// A GoogleSQL string literal.
fn string_literal(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `cursor >= <last>` in GoogleSQL, typed like the cursor column; `window_days` earlier for a date
/// or time cursor. `last` is the cursor's previous maximum as DuckDB printed it (UTC).
pub fn cursor_condition(
    field: &Field,
    last: &str,
    window_days: Option<u32>,
) -> Result<String, String> {
    if field.repeated() {
        return Err(format!("cursor `{}` is a REPEATED column", field.name));
    }
    let bad = || format!("the last cursor value `{last}` is not a {}", field.kind);
    let kind = field.kind.to_ascii_uppercase();
    let literal = match kind.as_str() {
        "INT64" | "INTEGER" => last.trim().parse::<i64>().map_err(|_| bad())?.to_string(),
        "FLOAT64" | "FLOAT" => {
            last.trim().parse::<f64>().map_err(|_| bad())?;
            format!("CAST({} AS FLOAT64)", string_literal(last.trim()))
        }
        "NUMERIC" | "BIGNUMERIC" | "DECIMAL" | "BIGDECIMAL" => {
            if rows::duck_type(field) == "VARCHAR" {
                // Stored as exact text here, whose maximum is not the numeric maximum.
                return Err(format!(
                    "cursor `{}` is a BIGNUMERIC column, kept as text in DuckDB: its largest value \
                     cannot be tracked; use a NUMERIC, integer, date or time cursor",
                    field.name
                ));
            }
            let kind = if kind.starts_with("BIG") {
                "BIGNUMERIC"
            } else {
                "NUMERIC"
            };
            if !last
                .trim()
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
            {
                return Err(bad());
            }
            format!("{kind} {}", string_literal(last.trim()))
        }
        "STRING" => string_literal(last),
        "DATE" | "DATETIME" | "TIME" | "TIMESTAMP" => {
            let ok = last.bytes().all(|b| {
                b.is_ascii_digit() || matches!(b, b'-' | b':' | b' ' | b'.' | b'+' | b'T')
            });
            if !ok {
                return Err(bad());
            }
            let base = format!("{kind} {}", string_literal(last.trim()));
            match (kind.as_str(), window_days) {
                ("TIME", _) | (_, None) | (_, Some(0)) => base,
                (k, Some(days)) => format!("{k}_SUB({base}, INTERVAL {days} DAY)"),
            }
        }
        other => {
            return Err(format!(
                "cursor `{}` is a {other} column; an incremental cursor must be a number, a \
                 string, a date or a time",
                field.name
            ))
        }
    };
    Ok(format!("`{}` >= {literal}", field.name))
}

impl Connector for Bigquery {
    fn can_discover(&self) -> bool {
        true
    }

    fn discover(
        &self,
        _conn: &Connection,
        _session: &Session,
        bucket: Option<&str>,
    ) -> Result<Vec<DiscoveredTable>, ConnectorError> {
        self.list_tables(bucket)
    }

    fn fingerprint(
        &self,
        _conn: &Connection,
        table: &TableDef,
    ) -> Result<Option<String>, ConnectorError> {
        if table.query_mode() != QueryMode::Local {
            // A query's result can change whenever any table it reads does.
            return Ok(None);
        }
        let (dataset, name) = self.dataset_and_table(table)?;
        let info = self.client.table(&self.project, &dataset, &name)?;
        // Views show no change of what they read; a streaming buffer is not in lastModifiedTime.
        if !info.is_stored() || info.streaming_buffer.is_some() {
            return Ok(None);
        }
        Ok(Some(fingerprint_of(&[
            info.last_modified_time.unwrap_or_default(),
            info.num_rows.unwrap_or_default(),
            info.num_bytes.unwrap_or_default(),
            serde_json::to_string(
                &info
                    .schema
                    .fields
                    .iter()
                    .map(rows::duck_type)
                    .collect::<Vec<_>>(),
            )
            .unwrap_or_default(),
            info.schema
                .fields
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ])))
    }

    fn scan(
        &self,
        _conn: &Connection,
        session: &Session,
        table: &TableDef,
        since: Option<&str>,
    ) -> Result<Scan, ConnectorError> {
        let incremental = table.sync_mode() != SyncMode::Full && since.is_some();
        let dir = self.scratch(session, table)?;
        let result = self.download(table, if incremental { since } else { None }, &dir);
        match result {
            Ok((schema, files, pushed)) => {
                if schema.fields.is_empty() {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(ConnectorError::Source {
                        what: format!("bigquery table {}", table.id),
                        message: "it has no columns".into(),
                    });
                }
                Ok(Scan {
                    // Only the rows at or after the last cursor were read: merged by key.
                    increment: pushed,
                    cleanup: Some(dir),
                    ..Scan::of(rows::relation(&schema, &files))
                })
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn remote(&self, table: &TableDef) -> Result<RemoteTable, ConnectorError> {
        let (dataset, name) = self.dataset_and_table(table)?;
        for (what, v) in [("bucket (the dataset)", &dataset), ("source_table", &name)] {
            if crate::quote::ident(v).is_none() {
                return Err(ConnectorError::Config(format!(
                    "{what} `{v}` of table `{}` is not a plain identifier (letters, digits and _, \
                     at most 64): a remote BigQuery table is a view over bq.\"<dataset>\".\"<table>\"",
                    table.name
                )));
            }
        }
        // BigQuery views are read through the jobs API, as the seed system writes them.
        let info = self.client.table(&self.project, &dataset, &name)?;
        let view = info.is_view().then(|| ViewTarget::TableFunction {
            function: QUERY_FUNCTION.into(),
            args: vec![
                self.project.clone(),
                format!("SELECT * FROM {}", self.table_sql(&dataset, &name)),
            ],
        });
        Ok(RemoteTable {
            attach: RemoteAttach {
                alias: REMOTE_ALIAS.into(),
                extension: REMOTE_EXTENSION.into(),
                url: format!("project={}", self.project),
                // Empty, not NULL: the seed's orchestrator gets a token itself for `bigquery`.
                token_env: Some(String::new()),
            },
            schema: dataset,
            table: name,
            view,
            zero_counts: true,
        })
    }
}

impl Bigquery {
    /// Downloads what `table` needs into `dir`: its schema, the files, and whether only the rows at
    /// or after `since` were read.
    fn download(
        &self,
        table: &TableDef,
        since: Option<&str>,
        dir: &Path,
    ) -> Result<(Schema, Vec<PathBuf>, bool), ConnectorError> {
        let mut request = QueryRequest {
            maximum_bytes_billed: table.maximum_bytes_billed,
            page_size: self.page_size,
            ..QueryRequest::default()
        };
        if table.query_mode() == QueryMode::Materialized {
            let sql = table
                .query
                .as_deref()
                .map(|q| q.trim().trim_end_matches(';').trim())
                .filter(|q| !q.is_empty())
                .ok_or_else(|| {
                    ConnectorError::Config(format!(
                        "table `{}` is materialized but has no query",
                        table.name
                    ))
                })?;
            if let Some(d) = table.bucket.as_deref().filter(|d| is_dataset(d)) {
                request.default_dataset = Some((self.project.clone(), d.to_string()));
            }
            request.sql = sql.to_string();
            let pushed = match (since, &table.cursor) {
                (Some(last), Some(cursor)) => {
                    // The result's schema (from a dry run) types the cursor's literal.
                    let dry = self.client.dry_run(&self.billing_project, &request)?;
                    let field = find_field(&dry.schema, cursor, table)?;
                    let condition =
                        cursor_condition(field, last, table.window_days).map_err(|m| {
                            ConnectorError::Config(format!("table `{}`: {m}", table.id))
                        })?;
                    request.sql = format!("SELECT * FROM ({sql}) WHERE {condition}");
                    true
                }
                _ => false,
            };
            let (schema, file) = self.run_query(table, &request, dir, None)?;
            return Ok((schema, vec![file], pushed));
        }
        let (dataset, name) = self.dataset_and_table(table)?;
        let info = self.client.table(&self.project, &dataset, &name)?;
        let from = self.table_sql(&dataset, &name);
        match (since, &table.cursor) {
            (Some(last), Some(cursor)) => {
                let field = find_field(&info.schema, cursor, table)?;
                let condition = cursor_condition(field, last, table.window_days)
                    .map_err(|m| ConnectorError::Config(format!("table `{}`: {m}", table.id)))?;
                request.sql = format!("SELECT * FROM {from} WHERE {condition}");
                let (schema, file) = self.run_query(table, &request, dir, Some(&info.schema))?;
                Ok((schema, vec![file], true))
            }
            _ if info.is_stored() => {
                let file = self.read_table(&info, &dataset, &name, dir)?;
                Ok((info.schema, vec![file], false))
            }
            _ => {
                request.sql = format!("SELECT * FROM {from}");
                let (schema, file) = self.run_query(table, &request, dir, Some(&info.schema))?;
                Ok((schema, vec![file], false))
            }
        }
    }
}

/// The cursor column in a schema (case-insensitively, as BigQuery compares names).
fn find_field<'s>(
    schema: &'s Schema,
    cursor: &str,
    table: &TableDef,
) -> Result<&'s Field, ConnectorError> {
    schema
        .fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(cursor))
        .ok_or_else(|| {
            ConnectorError::Config(format!(
                "table `{}`: the cursor column `{cursor}` is not in the BigQuery result (it has: {})",
                table.id,
                schema
                    .fields
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, kind: &str) -> Field {
        serde_json::from_value(serde_json::json!({"name": name, "type": kind})).unwrap()
    }

    #[test]
    fn cursor_conditions_are_typed_literals_with_the_window_applied_at_bigquery() {
        let c = |kind, last, window| cursor_condition(&field("c", kind), last, window);
        assert_eq!(
            c("TIMESTAMP", "2024-02-29 10:11:12.123456+00", None).unwrap(),
            "`c` >= TIMESTAMP '2024-02-29 10:11:12.123456+00'"
        );
        assert_eq!(
            c("TIMESTAMP", "2024-02-29 10:11:12+00", Some(2)).unwrap(),
            "`c` >= TIMESTAMP_SUB(TIMESTAMP '2024-02-29 10:11:12+00', INTERVAL 2 DAY)"
        );
        assert_eq!(
            c("DATE", "2024-02-29", Some(1)).unwrap(),
            "`c` >= DATE_SUB(DATE '2024-02-29', INTERVAL 1 DAY)"
        );
        assert_eq!(
            c("DATETIME", "2024-02-29 10:11:12", None).unwrap(),
            "`c` >= DATETIME '2024-02-29 10:11:12'"
        );
        assert_eq!(c("INTEGER", "42", Some(3)).unwrap(), "`c` >= 42");
        assert_eq!(c("NUMERIC", "1.50", None).unwrap(), "`c` >= NUMERIC '1.50'");
        assert_eq!(
            c("STRING", "it's \\ x\n", None).unwrap(),
            "`c` >= 'it\\'s \\\\ x\\n'"
        );
        // Values that are not what the column holds never reach the SQL.
        assert!(c("INTEGER", "1; DROP TABLE x", None).is_err());
        assert!(c("DATE", "2024-01-01' OR '1'='1", None).is_err());
        assert!(c("NUMERIC", "1e5", None).is_err());
        assert!(c("BOOL", "true", None).unwrap_err().contains("BOOL column"));
        assert_eq!(c("DECIMAL", "2.5", None).unwrap(), "`c` >= NUMERIC '2.5'");
        assert!(c("BIGNUMERIC", "10", None)
            .unwrap_err()
            .contains("kept as text"));
    }

    #[test]
    fn bigquery_names_are_checked_before_they_reach_sql_or_urls() {
        assert!(is_project("demo") && is_project("example.com:my-project"));
        assert!(!is_project("") && !is_project("a`b") && !is_project("-x") && !is_project("a/b"));
        assert!(is_dataset("shop_2") && !is_dataset("shop-2") && !is_dataset("a.b"));
        assert!(is_table("orders-2024") && !is_table("a`b") && !is_table("a b") && !is_table(""));
    }
}

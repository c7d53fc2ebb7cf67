//! `keboola` sources: tables of a Keboola Storage project, pulled through the Storage API's
//! asynchronous export (see [`client`]) and read by DuckDB from the downloaded gzip'd CSV slices.
//!
//! A table's Keboola id is `<bucket>.<source_table>` (`in.c-shop.orders`). Column names come from the
//! table detail (exports have no header), column types from Keboola's `KBC.datatype.basetype`
//! metadata when present, else text. Incremental sync sends the start time of the last successful
//! export as `changedSince` and merges what comes back by primary key. The input fingerprint is the
//! table's `lastChangeDate` and row count: an unchanged table is not exported again.
//!
//! Before the first request of a source whose connection sets `project_id`, the token is verified
//! to belong to that project. `where` filters the export can express are sent with it
//! ([`export_filters`]); extract applies the rest after the download.

pub mod client;
pub mod sigv4;

use super::{
    fingerprint_of, Connector, ConnectorError, DiscoveredColumn, DiscoveredTable, Scan, Session,
};
use crate::quote;
use crate::registry::registered::{SourceDef, TableDef};
use crate::spec::model::SyncMode;
use client::{
    Client, KeboolaError, Patience, StorageEndpoints, TableInfo, WhereFilter, WhereOperator,
};
use duckdb::Connection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

pub struct Keboola {
    client: Client,
    /// For messages: the source's name and its `token_env` (the variable's name, never its value).
    source: String,
    token_env: String,
    /// `project_id` from the connection, when set: the token must belong to it.
    project_id: Option<String>,
    /// The outcome of that check, made once, before the first request that reads data.
    project_checked: OnceLock<Result<(), String>>,
}

/// Projects that tokens were verified to belong to in this process, by Storage API URL and a
/// digest of the token: a token's project never changes, so a run (or a daemon) asks once.
static TOKEN_PROJECTS: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());

static DOWNLOADS: AtomicU64 = AtomicU64::new(0);

impl From<KeboolaError> for ConnectorError {
    fn from(e: KeboolaError) -> Self {
        ConnectorError::Source {
            what: "keboola".into(),
            // Errors are built without credentials; this is the net under that, before the
            // message reaches the state, the run's output or a log line.
            message: crate::redact::redact(&e.to_string()).into_owned(),
        }
    }
}

impl Keboola {
    pub fn new(source: &SourceDef) -> Result<Keboola, ConnectorError> {
        let url = source.connection_str("url").ok_or_else(|| {
            ConnectorError::Config(format!("source `{}` has no url", source.name))
        })?;
        let env = source.connection_str("token_env").ok_or_else(|| {
            ConnectorError::Config(format!("source `{}` has no token_env", source.name))
        })?;
        // Registered as a secret as it is read: no log line may show it from here on.
        let token = crate::redact::secret_env(env).ok_or_else(|| {
            ConnectorError::Config(format!(
                "the environment variable `{env}` (source `{}`'s token_env) is not set",
                source.name
            ))
        })?;
        let project_id = match source.connection.get("project_id") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.trim().to_string()),
            Some(other) => Some(other.to_string()),
        };
        Ok(Keboola {
            client: Client::new(url, token, patience()).with_storage_endpoints(storage_endpoints()),
            source: source.name.clone(),
            token_env: env.to_string(),
            project_id,
            project_checked: OnceLock::new(),
        })
    }

    /// The Storage API client, once the token is known to belong to the connection's `project_id`
    /// (when one is set): a token of another project would sync another project's tables under
    /// this source's name.
    pub fn client(&self) -> Result<&Client, ConnectorError> {
        let Some(expected) = &self.project_id else {
            return Ok(&self.client);
        };
        let checked = self.project_checked.get_or_init(|| {
            let actual = self.token_project().map_err(|e| e.to_string())?;
            if &actual == expected {
                return Ok(());
            }
            Err(format!(
                "source `{}`: the token in `{}` belongs to Keboola project {actual}, but the \
                 connection's project_id is {expected}; use a token of project {expected} or \
                 correct project_id",
                self.source, self.token_env
            ))
        });
        match checked {
            Ok(()) => Ok(&self.client),
            Err(message) => Err(ConnectorError::Config(message.clone())),
        }
    }

    /// The project the token belongs to, asked once per process for each URL and token.
    fn token_project(&self) -> Result<String, KeboolaError> {
        use sha2::{Digest, Sha256};
        let digest = format!("{:x}", Sha256::digest(self.client.token().as_bytes()));
        let base = self.client.base().to_string();
        let known = TOKEN_PROJECTS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, project)) = known.iter().find(|(b, d, _)| *b == base && *d == digest) {
            return Ok(project.clone());
        }
        drop(known);
        let project = self.client.token_project()?;
        TOKEN_PROJECTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((base, digest, project.clone()));
        Ok(project)
    }
}

/// Retry settings; `PIPELINE_KEBOOLA_FAST_RETRY=1` shortens the pauses (tests use it).
fn patience() -> Patience {
    if std::env::var("PIPELINE_KEBOOLA_FAST_RETRY").is_ok_and(|v| v == "1") {
        Patience {
            first_pause: std::time::Duration::from_millis(20),
            max_pause: std::time::Duration::from_millis(200),
            ..Patience::default()
        }
    } else {
        Patience::default()
    }
}

/// File storage endpoints: the real clouds, unless a test points them at its fake server with
/// `PIPELINE_KEBOOLA_S3_ENDPOINT` / `PIPELINE_KEBOOLA_GCS_ENDPOINT` (test-only; docs/keboola.md).
fn storage_endpoints() -> StorageEndpoints {
    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    StorageEndpoints {
        s3: var("PIPELINE_KEBOOLA_S3_ENDPOINT"),
        gcs: var("PIPELINE_KEBOOLA_GCS_ENDPOINT"),
    }
}

/// `<bucket>.<source_table>`.
pub fn table_id(t: &TableDef) -> Result<String, ConnectorError> {
    let bucket = t.bucket.as_deref().ok_or_else(|| {
        ConnectorError::Config(format!(
            "table `{}` has no bucket: a Keboola table id is <bucket>.<table>",
            t.name
        ))
    })?;
    Ok(format!("{bucket}.{}", t.source_table()))
}

/// DuckDB type for a Keboola base type.
fn duck_type(base: Option<&str>) -> &'static str {
    match base.map(|b| b.to_ascii_uppercase()).as_deref() {
        Some("INTEGER") => "BIGINT",
        Some("NUMERIC") => "DOUBLE",
        Some("FLOAT") => "DOUBLE",
        Some("BOOLEAN") => "BOOLEAN",
        Some("DATE") => "DATE",
        Some("TIMESTAMP") => "TIMESTAMP",
        _ => "VARCHAR",
    }
}

/// `read_csv` over the slices with the table's columns and types.
fn relation(info: &TableInfo, files: &[std::path::PathBuf]) -> Result<String, ConnectorError> {
    if info.columns.is_empty() {
        return Err(ConnectorError::Source {
            what: format!("keboola table {}", info.id),
            message: "the table detail lists no columns".into(),
        });
    }
    let list = files
        .iter()
        .map(|f| quote::path(f))
        .collect::<Vec<_>>()
        .join(", ");
    let columns = info
        .columns
        .iter()
        .map(|c| format!("{}: '{}'", quote::literal(c), duck_type(info.base_type(c))))
        .collect::<Vec<_>>()
        .join(", ");
    // An empty export is one empty slice: DuckDB reads it as no rows with these columns.
    // `buffer_size`: DuckDB's default CSV buffer (16 × max_line_size = 32 MB, several per gzip'd
    // file being read) dominated peak memory; 4 MB buffers (still twice the 2 MB line limit) took a
    // 1 GB export from 455–644 MB peak RSS to 272 MB, and ran no slower (scripts/bench-keboola).
    Ok(format!(
        "read_csv([{list}], header = false, columns = {{{columns}}}, delim = ',', quote = '\"', \
         escape = '\"', compression = 'gzip', auto_detect = false, buffer_size = 4194304)"
    ))
}

/// The table's `where` filters that the export can apply, and which of them (indexes into
/// `table.filters`) it applies with exactly the filter's meaning.
///
/// The export compares values as text, and DuckDB reads an empty CSV field as NULL where Keboola
/// has an empty string. So only filters on a text column (by its Keboola base type) with text
/// values are sent, as `eq` (`eq`, `in`) or `ne` (`ne`, `not_in`). `eq` with non-empty values
/// means the same at both ends. `ne` keeps rows whose value is empty, which the filter in DuckDB
/// drops (NULL is never unequal): it is sent to download less, and applied again after. Other
/// operators, columns of other types, and non-text values are applied after the download only.
fn export_filters(table: &TableDef, info: &TableInfo) -> (Vec<WhereFilter>, Vec<usize>) {
    let mut sent = Vec::new();
    let mut exact = Vec::new();
    for (i, f) in table.filters.iter().enumerate() {
        let operator = match f.operator.as_str() {
            "eq" | "in" => WhereOperator::Eq,
            "ne" | "not_in" => WhereOperator::Ne,
            _ => continue,
        };
        let text_column = info.columns.iter().any(|c| c == &f.column)
            && duck_type(info.base_type(&f.column)) == "VARCHAR";
        let values: Option<Vec<String>> = f
            .values
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect();
        let (true, Some(values)) = (text_column, values) else {
            continue;
        };
        if values.is_empty() {
            continue;
        }
        if operator == WhereOperator::Eq && values.iter().all(|v| !v.is_empty()) {
            exact.push(i);
        }
        sent.push(WhereFilter {
            column: f.column.clone(),
            operator,
            values,
        });
    }
    (sent, exact)
}

impl Connector for Keboola {
    fn fingerprint(
        &self,
        _conn: &Connection,
        table: &TableDef,
    ) -> Result<Option<String>, ConnectorError> {
        let info = self.client()?.table(&table_id(table)?)?;
        Ok(Some(fingerprint_of(&[
            info.last_change_date.unwrap_or_default(),
            info.rows_count.unwrap_or(-1).to_string(),
            info.columns.join(","),
        ])))
    }

    fn scan(
        &self,
        _conn: &Connection,
        session: &Session,
        table: &TableDef,
        since: Option<&str>,
    ) -> Result<Scan, ConnectorError> {
        let id = table_id(table)?;
        let client = self.client()?;
        let info = client.table(&id)?;
        let incremental = table.sync_mode() == SyncMode::Incremental && since.is_some();
        // An increment is merged into the previous rows by key: a row that changed so that it no
        // longer matches a filter must still arrive, to replace its old version. So filters go
        // to the source only with a whole-table export.
        let (filters, exact) = if incremental {
            (Vec::new(), Vec::new())
        } else {
            export_filters(table, &info)
        };
        let export = client.export(&id, if incremental { since } else { None }, &filters)?;
        let base = session
            .scratch
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(format!(
                "keboola-{}-{}-{}",
                std::process::id(),
                DOWNLOADS.fetch_add(1, Ordering::Relaxed),
                table.name
            ));
        let files = match client.download(&export.file, &base) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&base);
                return Err(e.into());
            }
        };
        Ok(Scan {
            increment: incremental,
            // One second back: rows changed during the second the export started are read again
            // (and merged by key), never missed.
            watermark: Some((export.started_at - 1).to_string()),
            cleanup: Some(base),
            filtered_at_source: exact,
            ..Scan::of(relation(&info, &files)?)
        })
    }

    fn can_discover(&self) -> bool {
        true
    }

    fn discover(
        &self,
        _conn: &Connection,
        _session: &Session,
        bucket: Option<&str>,
    ) -> Result<Vec<DiscoveredTable>, ConnectorError> {
        let tables = self.client()?.tables(bucket)?;
        Ok(tables
            .iter()
            .filter_map(|info| {
                let (bucket, name) = info.id.rsplit_once('.')?;
                Some(DiscoveredTable {
                    bucket: bucket.to_string(),
                    name: name.to_string(),
                    description: info.description().map(String::from),
                    rows: info.rows_count,
                    columns: info
                        .columns
                        .iter()
                        .map(|c| DiscoveredColumn {
                            name: c.clone(),
                            data_type: Some(duck_type(info.base_type(c)).to_string()),
                            description: info.column_description(c).map(String::from),
                        })
                        .collect(),
                    primary_key: info.primary_key.clone(),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keboola_pushes_down_text_equality_filters_and_keeps_the_rest_local() {
        let table: TableDef = serde_json::from_value(json!({
            "source": "kbc", "name": "orders",
            "filters": [
                {"column": "status", "operator": "eq", "values": ["paid"]},          // 0 exact
                {"column": "status", "operator": "not_in", "values": ["test", "x"]}, // 1 sent
                {"column": "amount", "operator": "eq", "values": ["7"]},             // 2 numeric column
                {"column": "country", "operator": "in", "values": ["CZ", "SK"]},     // 3 exact
                {"column": "status", "operator": "gt", "values": ["a"]},             // 4 operator
                {"column": "country", "operator": "eq", "values": [1]},              // 5 not text
                {"column": "Country", "operator": "eq", "values": ["CZ"]},           // 6 no such column
                {"column": "country", "operator": "eq", "values": [""]},             // 7 sent, empty
            ],
        }))
        .expect("a table");
        let info: TableInfo = serde_json::from_value(json!({
            "id": "in.c-shop.orders", "name": "orders",
            "columns": ["order_id", "amount", "status", "country"],
            "columnMetadata": {
                "amount": [{"key": "KBC.datatype.basetype", "value": "NUMERIC"}],
                "status": [{"key": "KBC.datatype.basetype", "value": "STRING"}],
            },
        }))
        .expect("a table detail");
        let (sent, exact) = export_filters(&table, &info);
        let shown: Vec<(&str, WhereOperator, Vec<&str>)> = sent
            .iter()
            .map(|f| {
                let values = f.values.iter().map(String::as_str).collect();
                (f.column.as_str(), f.operator, values)
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("status", WhereOperator::Eq, vec!["paid"]),
                ("status", WhereOperator::Ne, vec!["test", "x"]),
                ("country", WhereOperator::Eq, vec!["CZ", "SK"]),
                ("country", WhereOperator::Eq, vec![""]),
            ]
        );
        assert_eq!(exact, [0, 3]);
        assert_eq!(
            serde_json::to_value(&sent[1]).expect("serialisable"),
            json!({"column": "status", "operator": "ne", "values": ["test", "x"]})
        );
    }
}

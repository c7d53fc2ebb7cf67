//! `keboola` sources: tables of a Keboola Storage project, pulled through the Storage API's
//! asynchronous export (see [`client`]) and read by DuckDB from the downloaded gzip'd CSV slices.
//!
//! A table's Keboola id is `<bucket>.<source_table>` (`in.c-shop.orders`). Column names come from the
//! table detail (exports have no header), column types from Keboola's `KBC.datatype.basetype`
//! metadata when present, else text. Incremental sync sends the start time of the last successful
//! export as `changedSince` and merges what comes back by primary key. The input fingerprint is the
//! table's `lastChangeDate` and row count: an unchanged table is not exported again.

pub mod client;
pub mod sigv4;

use super::{fingerprint_of, Connector, ConnectorError, Scan, Session};
use crate::quote;
use crate::registered::{SourceDef, TableDef};
use crate::spec::model::SyncMode;
use client::{Client, KeboolaError, Patience, StorageEndpoints, TableInfo};
use duckdb::Connection;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Keboola {
    client: Client,
}

static DOWNLOADS: AtomicU64 = AtomicU64::new(0);

impl From<KeboolaError> for ConnectorError {
    fn from(e: KeboolaError) -> Self {
        ConnectorError::Source {
            what: "keboola".into(),
            message: e.to_string(),
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
        let token = std::env::var(env)
            .ok()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ConnectorError::Config(format!(
                    "the environment variable `{env}` (source `{}`'s token_env) is not set",
                    source.name
                ))
            })?;
        Ok(Keboola {
            client: Client::new(url, token, patience()).with_storage_endpoints(storage_endpoints()),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
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

impl Connector for Keboola {
    fn fingerprint(
        &self,
        _conn: &Connection,
        table: &TableDef,
    ) -> Result<Option<String>, ConnectorError> {
        let info = self.client.table(&table_id(table)?)?;
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
        let info = self.client.table(&id)?;
        let incremental = table.sync_mode() == SyncMode::Incremental && since.is_some();
        let export = self
            .client
            .export(&id, if incremental { since } else { None })?;
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
        let files = match self.client.download(&export.file, &base) {
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
            ..Scan::of(relation(&info, &files)?)
        })
    }
}

//! Connectors: one per source type, behind one trait. A connector knows how to reach its source; it
//! does not write Parquet, merge increments or touch the extract contract — [`crate::extract`] does
//! that the same way for every source.
//!
//! A connector makes a table's rows readable on a DuckDB connection ([`Connector::scan`]: attach a
//! database, point at files, download an export…) and returns a relation to `SELECT` from; tells
//! whether the input changed since the last extract ([`Connector::fingerprint`]); and, for
//! `query_mode: remote`, says what analytics must ATTACH to query the table at the source
//! ([`Connector::remote`]). Later connectors (Keboola, BigQuery, Jira, Postgres) implement the same
//! trait.

mod duckdb_file;
mod files;
pub mod jira;
pub mod keboola;

use crate::contract::RemoteAttach;
use crate::registered::{SourceDef, TableDef};
use duckdb::Connection;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Config(String),
    /// What the source answered. Shown through [`crate::redact`]: a source's own message may
    /// echo a credential (a URL with a signature, a header), and it reaches logs and the state.
    #[error("{what}: {}", crate::redact::redact(.message))]
    Source { what: String, message: String },
    #[error("source type `{0}` has no connector yet")]
    Unsupported(String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Rows of a table, readable on the connection that [`Connector::scan`] was given.
#[derive(Clone, Debug)]
pub struct Scan {
    /// A relation to select from: `read_csv([...])`, `"src"."main"."orders"`, `(SELECT …)`.
    pub relation: String,
    /// Catalog to make the default while selecting (materialized queries name tables unqualified).
    pub use_catalog: Option<String>,
    /// The rows are only what changed since the `since` the scan was given (the source filtered
    /// them, e.g. Keboola's `changedSince`): they are merged into the previous data by key.
    pub increment: bool,
    /// What to pass as `since` next time (kept as the table's cursor in sync_state).
    pub watermark: Option<String>,
    /// Files the scan downloaded, removed once the extract is done.
    pub cleanup: Option<PathBuf>,
    /// The table's `where` filters (indexes into [`TableDef::filters`]) that the source already
    /// applied with exactly the filter's meaning: extract applies only the others. A connector may
    /// also ask its source for fewer rows with a filter it does not list here, as long as every row
    /// left out is one the filter drops (extract applies that filter again, so the result is the
    /// same); it never narrows with a filter whose meaning at the source it cannot match.
    pub filtered_at_source: Vec<usize>,
}

impl Scan {
    /// A scan of `relation` with nothing else to it.
    pub fn of(relation: String) -> Scan {
        Scan {
            relation,
            use_catalog: None,
            increment: false,
            watermark: None,
            cleanup: None,
            filtered_at_source: Vec::new(),
        }
    }
}

/// How analytics reaches a remote table.
#[derive(Clone, Debug)]
pub struct RemoteTable {
    pub attach: RemoteAttach,
    pub schema: String,
    pub table: String,
}

/// State shared by the tasks of one run on one DuckDB instance. DuckDB attaches a file once per
/// instance, so databases are attached once and stay attached for the run.
#[derive(Debug, Default)]
pub struct Session {
    attached: Mutex<HashSet<String>>,
    /// Where downloads go (under the data dir); the system temp dir when unset.
    pub scratch: Option<PathBuf>,
}

impl Session {
    /// A session whose downloads go under `scratch`.
    pub fn with_scratch(scratch: PathBuf) -> Session {
        Session {
            scratch: Some(scratch),
            ..Session::default()
        }
    }

    /// Runs `attach` (an ATTACH … AS `alias`) unless `alias` is already attached in this session.
    pub fn attach_once(
        &self,
        conn: &Connection,
        alias: &str,
        attach: &str,
    ) -> Result<(), ConnectorError> {
        let mut done = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        if done.contains(alias) {
            return Ok(());
        }
        // A database file another process writes is locked for a moment; wait a little, not forever.
        crate::state::retry_locked(std::time::Duration::from_secs(10), || conn.execute_batch(attach))
            .map_err(|e| {
                if crate::state::is_lock_conflict(&e) {
                    ConnectorError::Source {
                        what: alias.to_string(),
                        message: "the database file is locked by another process that writes it                                   (retried for 10 s); try again when it is done"
                            .into(),
                    }
                } else {
                    ConnectorError::Source {
                        what: alias.to_string(),
                        message: e.to_string(),
                    }
                }
            })?;
        done.insert(alias.to_string());
        Ok(())
    }
}

pub trait Connector: Send + Sync {
    /// A fingerprint of the table's input: equal to the one recorded at the last successful extract
    /// means the data cannot have changed, and the extract is skipped. `None`: unknown, always extract.
    fn fingerprint(
        &self,
        conn: &Connection,
        table: &TableDef,
    ) -> Result<Option<String>, ConnectorError>;

    /// Makes the table's rows readable on `conn` and returns the relation over them. `since` is the
    /// watermark of the last successful extract, for connectors that read increments themselves.
    fn scan(
        &self,
        conn: &Connection,
        session: &Session,
        table: &TableDef,
        since: Option<&str>,
    ) -> Result<Scan, ConnectorError>;

    /// For `query_mode: remote`: what analytics attaches, and the table inside it.
    fn remote(&self, table: &TableDef) -> Result<RemoteTable, ConnectorError> {
        let _ = table;
        Err(ConnectorError::Config(
            "this source type cannot serve remote tables; use query_mode: local".into(),
        ))
    }
}

/// The connector for `source`, with relative paths resolved against the instance `root`.
///
/// The values of the environment variables the connection names (its `*_env` keys) are
/// credentials: they are registered with [`crate::redact`] here, for every source type, before a
/// connector can use (and a dependency log) them.
pub fn connector(source: &SourceDef, root: &Path) -> Result<Box<dyn Connector>, ConnectorError> {
    for (key, value) in source.connection.as_object().into_iter().flatten() {
        if let (true, Some(env)) = (key.ends_with("_env"), value.as_str()) {
            crate::redact::secret_env(env);
        }
    }
    let path = || {
        source
            .connection_str("path")
            .map(|p| root.join(p))
            .ok_or_else(|| ConnectorError::Config(format!("source `{}` has no path", source.name)))
    };
    match source.source_type.as_str() {
        "csv" => Ok(Box::new(files::Files::csv(path()?, &source.connection))),
        "parquet" => Ok(Box::new(files::Files::parquet(path()?, &source.connection))),
        "duckdb" => Ok(Box::new(duckdb_file::DuckdbFile::new(
            &source.name,
            path()?,
        ))),
        "keboola" => Ok(Box::new(keboola::Keboola::new(source)?)),
        other => Err(ConnectorError::Unsupported(other.to_string())),
    }
}

/// sha256 over the parts, hex.
pub(crate) fn fingerprint_of(parts: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    format!("{:x}", h.finalize())
}

/// `len:mtime_ns` of a file, for fingerprints.
pub(crate) fn file_stamp(path: &Path) -> Result<String, ConnectorError> {
    let m = path
        .metadata()
        .map_err(|e| ConnectorError::Io(path.to_path_buf(), e))?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{}:{}:{mtime}", path.display(), m.len()))
}

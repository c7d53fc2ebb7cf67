//! Connectors: one per source type, behind one trait. A connector knows how to reach its source; it
//! does not write Parquet, merge increments or touch the extract contract — [`crate::extract`] does
//! that the same way for every source.
//!
//! A connector makes a table's rows readable on a DuckDB connection ([`Connector::scan`]: attach a
//! database, point at files, download an export…) and returns a relation to `SELECT` from; tells
//! whether the input changed since the last extract ([`Connector::fingerprint`]); and, for
//! `query_mode: remote`, says what analytics must ATTACH to query the table at the source
//! ([`Connector::remote`]); and lists what the source holds for `pipeline sources discover`
//! ([`Connector::discover`]). There is one connector per [`SourceType`]; which query modes each type
//! runs is stated once, beside the type ([`SourceType::query_modes`]), and checked here and by
//! `validate` alike. Jira sources are not pulled: their tables come from `connectors::jira` (see `exec::jira`).

pub mod bigquery;
mod database;
mod duckdb_file;
mod files;
pub mod jira;
pub mod keboola;

use crate::extensions::ExtensionStore;
use crate::extract_db::{RemoteAttach, ViewTarget};
use crate::registry::registered::{SourceDef, TableDef};
use crate::spec::model::SourceType;
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
    #[error("source type `{0}` has no connector in this version")]
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
    /// What the extract's view reads when it is not `<alias>."<schema>"."<table>"` (a BigQuery view
    /// is read through the extension's `bigquery_query` table function).
    pub view: Option<ViewTarget>,
    /// Write `rows = 0, size_bytes = 0` in `_meta` (as the seed system does for BigQuery) rather
    /// than NULL.
    pub zero_counts: bool,
}

/// A table found at a source by [`Connector::discover`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiscoveredTable {
    /// Keboola bucket, database schema: the registry's `bucket`.
    pub bucket: String,
    /// The registry's `source_table`.
    pub name: String,
    pub description: Option<String>,
    /// As the source reports it (an estimate for databases).
    pub rows: Option<i64>,
    pub columns: Vec<DiscoveredColumn>,
    pub primary_key: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiscoveredColumn {
    pub name: String,
    /// The DuckDB type the column is read as, when known.
    pub data_type: Option<String>,
    pub description: Option<String>,
}

/// State shared by the tasks of one run on one DuckDB instance. DuckDB attaches a file once per
/// instance, so databases are attached once and stay attached for the run.
#[derive(Debug, Default)]
pub struct Session {
    attached: Mutex<HashSet<String>>,
    /// Where downloads go (under the data dir); the system temp dir when unset.
    pub scratch: Option<PathBuf>,
    /// Where the extensions a connector loads come from (the instance's `extensions` settings).
    pub extensions: ExtensionStore,
}

impl Session {
    /// A session whose downloads go under `scratch`.
    pub fn with_scratch(scratch: PathBuf) -> Session {
        Session {
            scratch: Some(scratch),
            ..Session::default()
        }
    }

    /// This session, loading extensions from `store`.
    pub fn with_extensions(self, store: ExtensionStore) -> Session {
        Session {
            extensions: store,
            ..self
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
        crate::duck::retry_locked(crate::duck::LOCK_RETRY, || conn.execute_batch(attach))
            .map_err(|e| {
                if crate::duck::is_lock_conflict(&e) {
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

    /// Whether [`Connector::discover`] is implemented (asked before connecting).
    fn can_discover(&self) -> bool {
        false
    }

    /// The tables the source holds (only those of `bucket` when given), with their columns and
    /// primary keys, for `pipeline sources discover`.
    fn discover(
        &self,
        conn: &Connection,
        session: &Session,
        bucket: Option<&str>,
    ) -> Result<Vec<DiscoveredTable>, ConnectorError> {
        let _ = (conn, session, bucket);
        Err(ConnectorError::Config(
            "discovery is not available for this source type".into(),
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
    let Some(kind) = source.kind() else {
        return Err(ConnectorError::Unsupported(source.source_type.clone()));
    };
    // Exhaustive: a source type without a connector does not compile.
    match kind {
        SourceType::Csv => Ok(Box::new(files::Files::csv(path()?, &source.connection))),
        SourceType::Parquet => Ok(Box::new(files::Files::parquet(path()?, &source.connection))),
        SourceType::Duckdb => Ok(Box::new(duckdb_file::DuckdbFile::new(
            &source.name,
            path()?,
        ))),
        SourceType::Keboola => Ok(Box::new(keboola::Keboola::new(source)?)),
        SourceType::Postgres => Ok(Box::new(database::Database::new(
            source,
            database::Dialect::Postgres,
        )?)),
        SourceType::Mysql => Ok(Box::new(database::Database::new(
            source,
            database::Dialect::Mysql,
        )?)),
        SourceType::Bigquery => Ok(Box::new(bigquery::Bigquery::new(source, root)?)),
        // A Jira source's tables are written by the connector itself (webhooks, backfill,
        // consistency check) into its partition store; the run syncs them through `exec::jira`.
        SourceType::Jira => Err(ConnectorError::Config(format!(
            "source `{}` is a jira source: its tables are produced by webhooks, `pipeline jira \
             backfill` and the consistency check, not pulled",
            source.name
        ))),
    }
}

/// The connector for one of `source`'s tables, refusing a query mode its type cannot run (the same
/// capability table `validate` checks, so this only fires for state applied by another version).
pub fn connector_for(
    source: &SourceDef,
    table: &TableDef,
    root: &Path,
) -> Result<Box<dyn Connector>, ConnectorError> {
    let mode = table.query_mode();
    if let Some(kind) = source.kind() {
        if !kind.supports(mode) {
            return Err(ConnectorError::Config(format!(
                "table `{}`: query_mode `{mode}` is not available for {kind} sources (they run: {})",
                table.name,
                kind.query_modes()
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    connector(source, root)
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

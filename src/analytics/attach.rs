//! The attachments a query on analytics.duckdb needs: extract files whose views the published views
//! read through (remote tables, data kept inside an extract) and the remote databases behind them.
//! Recorded in `_pipeline.attachments` at rebuild; made again, with the same checks, by every reader
//! (`pipeline query`, metric checks, the API).

use super::META_SCHEMA;
use crate::extract_db::{remote, RemoteAttach, RemotePolicy};
use crate::quote;
use duckdb::Connection;
use serde::Serialize;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attachment {
    /// The source whose views need it.
    pub source: String,
    pub alias: String,
    /// `extract` or `remote`.
    pub kind: String,
    pub extension: String,
    pub url: String,
    pub token_env: Option<String>,
}

impl Attachment {
    pub fn extract(source: &str, path: &Path) -> Attachment {
        Attachment {
            source: source.into(),
            alias: source.into(),
            kind: "extract".into(),
            extension: remote::NATIVE.into(),
            url: path.to_string_lossy().into_owned(),
            token_env: None,
        }
    }

    pub fn remote(source: &str, r: &RemoteAttach) -> Attachment {
        Attachment {
            source: source.into(),
            alias: r.alias.clone(),
            kind: "remote".into(),
            extension: r.extension.clone(),
            url: r.url.clone(),
            token_env: r.token_env.clone(),
        }
    }

    fn as_remote(&self) -> RemoteAttach {
        RemoteAttach {
            alias: self.alias.clone(),
            extension: self.extension.clone(),
            url: self.url.clone(),
            token_env: self.token_env.clone(),
        }
    }
}

pub(super) fn create_table(conn: &Connection) -> duckdb::Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE {META_SCHEMA}.attachments (source VARCHAR, alias VARCHAR, kind VARCHAR, \
         extension VARCHAR, url VARCHAR, token_env VARCHAR)"
    ))
}

pub(super) fn insert(conn: &Connection, a: &Attachment) -> duckdb::Result<()> {
    conn.execute(
        &format!("INSERT INTO {META_SCHEMA}.attachments VALUES (?, ?, ?, ?, ?, ?)"),
        duckdb::params![a.source, a.alias, a.kind, a.extension, a.url, a.token_env],
    )
    .map(|_| ())
}

/// The attachments recorded in the analytics database attached as `catalog` (or the default one).
/// An analytics file without the table (none needed, or an older file) has none.
pub fn read(conn: &Connection, catalog: Option<&str>) -> duckdb::Result<Vec<Attachment>> {
    let prefix = match catalog.and_then(quote::ident) {
        Some(c) => format!("{c}."),
        None => String::new(),
    };
    let exists: i64 = conn.query_row(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = 'attachments' \
         AND (? IS NULL OR database_name = ?)",
        duckdb::params![META_SCHEMA, catalog, catalog],
        |r| r.get(0),
    )?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT source, alias, kind, extension, url, token_env FROM {prefix}{META_SCHEMA}.attachments"
    ))?;
    let rows = stmt.query_map([], |r| {
        Ok(Attachment {
            source: r.get(0)?,
            alias: r.get(1)?,
            kind: r.get(2)?,
            extension: r.get(3)?,
            url: r.get(4)?,
            token_env: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// Makes every attachment on `conn`, checked against `policy` like at rebuild. Returns the ones that
/// could not be made, with why (their views fail to bind; everything else works).
pub fn attach_all(conn: &Connection, list: &[Attachment], policy: &RemotePolicy) -> Vec<String> {
    let mut problems = Vec::new();
    for a in list {
        let result = if a.kind == "extract" {
            match quote::ident(&a.alias) {
                Some(alias) => conn
                    .execute_batch(&format!(
                        "ATTACH {} AS {alias} (READ_ONLY)",
                        quote::literal(&a.url)
                    ))
                    .map_err(|e| e.to_string()),
                None => Err("unsafe alias".into()),
            }
        } else {
            remote::attach(conn, &a.as_remote(), policy).map_err(|r| r.to_string())
        };
        if let Err(e) = result {
            problems.push(format!("{} `{}`: {e}", a.kind, a.alias));
        }
    }
    problems
}

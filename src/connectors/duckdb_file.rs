//! `duckdb` sources: tables of another DuckDB database file, attached read-only.
//!
//! `bucket` is the schema (default `main`) and `source_table` the table. `query_mode: local` copies the
//! table to Parquet, `materialized` runs the table's `query` inside that database and stores the result,
//! and `remote` leaves it there: the extract's `_remote_attach` row ATTACHes the file at query time.

use super::{file_stamp, fingerprint_of, Connector, ConnectorError, RemoteTable, Scan, Session};
use crate::extract_db::{remote::NATIVE, RemoteAttach};
use crate::quote;
use crate::registry::registered::TableDef;
use duckdb::Connection;
use std::path::PathBuf;

pub struct DuckdbFile {
    source: String,
    file: PathBuf,
}

impl DuckdbFile {
    pub fn new(source: &str, file: PathBuf) -> DuckdbFile {
        DuckdbFile {
            source: source.to_string(),
            file,
        }
    }

    /// The catalog name this source's file is attached under, in a run and in analytics.
    fn alias(&self) -> Result<String, ConnectorError> {
        let alias = format!("{}__db", self.source);
        match quote::ident(&alias) {
            Some(_) => Ok(alias),
            None => Err(ConnectorError::Config(format!(
                "source name `{}` is too long to attach its database as `{alias}` (at most 60 characters for a duckdb source)",
                self.source
            ))),
        }
    }

    fn schema_and_table(&self, table: &TableDef) -> Result<(String, String), ConnectorError> {
        let schema = table.bucket.clone().unwrap_or_else(|| "main".into());
        let name = table.source_table().to_string();
        for (what, v) in [("bucket (the schema)", &schema), ("source_table", &name)] {
            if quote::ident(v).is_none() {
                return Err(ConnectorError::Config(format!(
                    "{what} `{v}` of table `{}` is not a plain identifier; a duckdb source needs \
                     schema and table names of letters, digits and _",
                    table.name
                )));
            }
        }
        Ok((schema, name))
    }

    fn absolute(&self) -> Result<PathBuf, ConnectorError> {
        if !self.file.is_file() {
            return Err(ConnectorError::NotFound(format!(
                "{} does not exist (the source's connection.path)",
                self.file.display()
            )));
        }
        std::fs::canonicalize(&self.file).map_err(|e| ConnectorError::Io(self.file.clone(), e))
    }
}

impl Connector for DuckdbFile {
    fn fingerprint(
        &self,
        _conn: &Connection,
        table: &TableDef,
    ) -> Result<Option<String>, ConnectorError> {
        let file = self.absolute()?;
        let mut parts = vec![file_stamp(&file)?];
        let wal = crate::extract_db::wal_of(&file);
        if wal.exists() {
            parts.push(file_stamp(&wal)?);
        }
        parts.push(table.query.clone().unwrap_or_default());
        Ok(Some(fingerprint_of(&parts)))
    }

    fn scan(
        &self,
        conn: &Connection,
        session: &Session,
        table: &TableDef,
        _since: Option<&str>,
    ) -> Result<Scan, ConnectorError> {
        let file = self.absolute()?;
        let alias = self.alias()?;
        let catalog = quote::ident(&alias).expect("alias() checked it");
        let attach = format!("ATTACH {} AS {catalog} (READ_ONLY)", quote::path(&file));
        session
            .attach_once(conn, &alias, &attach)
            .map_err(|e| match e {
                ConnectorError::Source { message, .. } => ConnectorError::Source {
                    what: file.display().to_string(),
                    message,
                },
                other => other,
            })?;
        if let Some(query) = table.query.as_deref().filter(|q| !q.trim().is_empty()) {
            let query = query.trim().trim_end_matches(';');
            return Ok(Scan {
                use_catalog: Some(alias),
                ..Scan::of(format!("({query})"))
            });
        }
        let (schema, name) = self.schema_and_table(table)?;
        Ok(Scan::of(format!(
            "{catalog}.{}.{}",
            quote::ident(&schema).expect("checked"),
            quote::ident(&name).expect("checked")
        )))
    }

    fn remote(&self, table: &TableDef) -> Result<RemoteTable, ConnectorError> {
        let (schema, name) = self.schema_and_table(table)?;
        Ok(RemoteTable {
            attach: RemoteAttach {
                alias: self.alias()?,
                extension: NATIVE.into(),
                url: self.absolute()?.to_string_lossy().into_owned(),
                token_env: None,
            },
            schema,
            table: name,
            view: None,
            zero_counts: false,
        })
    }
}

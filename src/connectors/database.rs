//! `postgres` and `mysql` sources: tables of a PostgreSQL or MySQL/MariaDB database, read through
//! DuckDB's own `postgres` and `mysql` extensions (one connector, two [`Dialect`]s).
//!
//! The database is ATTACHed read-only under `<source>__db`, once per run. The password (from the
//! connection's `password_env`) goes into a temporary DuckDB secret built in memory and named in the
//! ATTACH; the connection string carries host, port, database, user (and sslmode) only, so it can
//! be written into `_remote_attach` and shown in messages. `bucket` is the schema (PostgreSQL,
//! default `public`) or the database (MySQL, default the connection's `database`).
//!
//! - `local`: the table is scanned through the extension, which pushes projections and the simple
//!   filters (incremental cursor bound, `where`) down to the server; extract does the rest as for
//!   every source. Columns the extension reads as text but that are JSON at the source become
//!   DuckDB `JSON`, and MySQL `TIMESTAMP` columns (instants, read in UTC) become `TIMESTAMPTZ`
//!   ([`Dialect::fixups`]); everything else keeps the extension's mapping (docs/sources.md).
//! - `materialized`: the table's `query` runs at the source as a whole (`postgres_query` /
//!   `mysql_query`) and its result is stored.
//! - `remote`: nothing is copied; the `_remote_attach` row has analytics attach the database.
//!
//! No cheap change marker exists for a table in either database, so there is no fingerprint: every
//! run reads (an incremental table only the rows at or after its cursor).

use super::{
    Connector, ConnectorError, DiscoveredColumn, DiscoveredTable, RemoteTable, Scan, Session,
};
use crate::extract_db::RemoteAttach;
use crate::quote;
use crate::registry::registered::{SourceDef, TableDef};
use duckdb::Connection;
use std::collections::BTreeMap;

/// Which database, and so which extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
}

impl Dialect {
    /// The DuckDB extension (and ATTACH type).
    pub fn extension(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::Mysql => "mysql",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Dialect::Postgres => "PostgreSQL",
            Dialect::Mysql => "MySQL",
        }
    }

    fn default_port(self) -> i64 {
        match self {
            Dialect::Postgres => 5432,
            Dialect::Mysql => 3306,
        }
    }

    /// The extension's function that runs a query at the source and returns its result.
    fn query_function(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres_query",
            Dialect::Mysql => "mysql_query",
        }
    }

    /// The source's own catalog query for a table's columns: `(column name, source type)`.
    fn columns_sql(self, schema: &str, table: &str) -> String {
        match self {
            Dialect::Postgres => format!(
                "SELECT column_name::text AS name, data_type::text AS type \
                 FROM information_schema.columns WHERE table_schema = '{schema}' \
                 AND table_name = '{table}'"
            ),
            Dialect::Mysql => format!(
                "SELECT COLUMN_NAME AS name, DATA_TYPE AS type FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = '{schema}' AND TABLE_NAME = '{table}'"
            ),
        }
    }

    /// The DuckDB type a column of source type `source_type` is cast to after the extension read
    /// it, when the extension's own mapping loses something.
    fn fixup(self, source_type: &str) -> Option<&'static str> {
        match (self, source_type.to_ascii_lowercase().as_str()) {
            // Both scanners read JSON as text; DuckDB's JSON type keeps it JSON in Parquet.
            (Dialect::Postgres, "json" | "jsonb") | (Dialect::Mysql, "json") => Some("JSON"),
            // A MySQL TIMESTAMP is an instant (read in UTC, see `session_setup`); DATETIME is not.
            (Dialect::Mysql, "timestamp") => Some("TIMESTAMPTZ"),
            _ => None,
        }
    }

    /// Settings that apply to the connections the extension opens afterwards.
    fn session_setup(self) -> &'static str {
        match self {
            Dialect::Postgres => "",
            // TIMESTAMP values in UTC (the run's DuckDB time zone too), and no MAX_EXECUTION_TIME
            // hint: the extension caps each query at 5 minutes by default, and extracting a big
            // table legitimately takes longer. Aggregate push-down is off as for remote tables
            // (extract_db::remote: it mis-binds aliased aggregates over views in 1.5.5).
            Dialect::Mysql => {
                "SET mysql_session_time_zone = '+00:00'; SET mysql_query_timeout_enabled = false; \
                 SET mysql_aggregate_pushdown_enabled = false;"
            }
        }
    }
}

pub struct Database {
    dialect: Dialect,
    source: String,
    host: String,
    port: i64,
    database: String,
    user: String,
    password_env: Option<String>,
    sslmode: Option<String>,
}

/// A connection-string value: kept to characters that need no quoting in either extension's
/// `key=value` syntax, so no value can smuggle in another key.
fn plain_value(v: &str) -> bool {
    !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:/@+%".contains(c))
}

impl Database {
    pub fn new(source: &SourceDef, dialect: Dialect) -> Result<Database, ConnectorError> {
        let text = |key: &str, required: bool| -> Result<Option<String>, ConnectorError> {
            match source.connection_str(key) {
                Some(v) if plain_value(v) => Ok(Some(v.to_string())),
                Some(v) => Err(ConnectorError::Config(format!(
                    "source `{}`: connection.{key} `{v}` must be letters, digits and . _ - : / @ + % \
                     (no spaces or quotes)",
                    source.name
                ))),
                None if required => Err(ConnectorError::Config(format!(
                    "source `{}` has no connection.{key}",
                    source.name
                ))),
                None => Ok(None),
            }
        };
        let port = match source.connection.get("port") {
            None | Some(serde_json::Value::Null) => dialect.default_port(),
            Some(v) => v
                .as_i64()
                .filter(|p| (1..=65_535).contains(p))
                .ok_or_else(|| {
                    ConnectorError::Config(format!(
                        "source `{}`: connection.port must be a number from 1 to 65535",
                        source.name
                    ))
                })?,
        };
        Ok(Database {
            dialect,
            source: source.name.clone(),
            host: text("host", true)?.unwrap_or_default(),
            port,
            database: text("database", true)?.unwrap_or_default(),
            user: text("user", true)?.unwrap_or_default(),
            password_env: source.connection_str("password_env").map(String::from),
            sslmode: text("sslmode", false)?,
        })
    }

    /// The catalog the database is attached under, in a run and in analytics.
    fn alias(&self) -> Result<String, ConnectorError> {
        let alias = format!("{}__db", self.source);
        match quote::ident(&alias) {
            Some(_) => Ok(alias),
            None => Err(ConnectorError::Config(format!(
                "source name `{}` is too long to attach its database as `{alias}` (at most 60 \
                 characters for a {} source)",
                self.source,
                self.dialect.extension()
            ))),
        }
    }

    /// The extension's connection string, without the password: it may be stored and shown.
    pub fn connection_string(&self) -> String {
        match self.dialect {
            Dialect::Postgres => {
                let mut s = format!(
                    "host={} port={} dbname={} user={}",
                    self.host, self.port, self.database, self.user
                );
                if let Some(mode) = &self.sslmode {
                    s.push_str(&format!(" sslmode={mode}"));
                }
                s
            }
            Dialect::Mysql => format!(
                "host={} port={} database={} user={}",
                self.host, self.port, self.database, self.user
            ),
        }
    }

    /// For messages: which database of which source.
    fn what(&self) -> String {
        format!(
            "{} database `{}` at {}:{} (source `{}`)",
            self.dialect.label(),
            self.database,
            self.host,
            self.port,
            self.source
        )
    }

    /// The password, when the connection names a variable for it.
    fn password(&self) -> Result<Option<String>, ConnectorError> {
        let Some(env) = &self.password_env else {
            return Ok(None);
        };
        // Registered as a secret as it is read: no log line or message shows it.
        crate::redact::secret_env(env).map(Some).ok_or_else(|| {
            ConnectorError::Config(format!(
                "the environment variable `{env}` (source `{}`'s password_env) is not set",
                self.source
            ))
        })
    }

    /// Attaches the database on `conn` (once per session), read-only, with the extension loaded.
    fn attach(&self, conn: &Connection, session: &Session) -> Result<String, ConnectorError> {
        let ext = self.dialect.extension();
        session
            .extensions
            .load(conn, ext)
            .map_err(|e| ConnectorError::Config(format!("source `{}`: {e}", self.source)))?;
        let alias = self.alias()?;
        let catalog = quote::ident(&alias).expect("alias() checked it");
        let mut sql = self.dialect.session_setup().to_string();
        let mut options = format!("TYPE {ext}, READ_ONLY");
        if let Some(password) = self.password()? {
            let secret = quote::ident(&format!("{alias}_secret")).unwrap_or("\"db_secret\"".into());
            sql.push_str(&format!(
                "CREATE OR REPLACE TEMPORARY SECRET {secret} (TYPE {ext}, PASSWORD {});",
                quote::literal(&password)
            ));
            options.push_str(&format!(", SECRET {secret}"));
        }
        sql.push_str(&format!(
            "ATTACH {} AS {catalog} ({options})",
            quote::literal(&self.connection_string())
        ));
        session
            .attach_once(conn, &alias, &sql)
            .map_err(|e| match e {
                ConnectorError::Source { message, .. } => ConnectorError::Source {
                    what: format!("cannot reach the {}", self.what()),
                    message: message
                        .trim_start_matches("IO Error: ")
                        .trim_end()
                        .to_string(),
                },
                other => other,
            })?;
        Ok(alias)
    }

    /// `(schema, table)` of a registered table: plain identifiers only.
    fn schema_and_table(&self, table: &TableDef) -> Result<(String, String), ConnectorError> {
        let schema = table.bucket.clone().unwrap_or_else(|| match self.dialect {
            Dialect::Postgres => "public".into(),
            Dialect::Mysql => self.database.clone(),
        });
        let name = table.source_table().to_string();
        for (what, v) in [("bucket (the schema)", &schema), ("source_table", &name)] {
            if quote::ident(v).is_none() {
                return Err(ConnectorError::Config(format!(
                    "{what} `{v}` of table `{}` is not a plain identifier; a {} source needs \
                     schema and table names of letters, digits and _",
                    table.name,
                    self.dialect.extension()
                )));
            }
        }
        Ok((schema, name))
    }

    /// Rows of a query run at the source, on `conn` where the database is attached as `alias`.
    fn source_rows(
        &self,
        conn: &Connection,
        alias: &str,
        sql: &str,
        width: usize,
    ) -> Result<Vec<Vec<Option<String>>>, ConnectorError> {
        let cols: Vec<String> = (0..width)
            .map(|i| format!("CAST(#{} AS VARCHAR)", i + 1))
            .collect();
        let query = format!(
            "SELECT {} FROM {}({}, {})",
            cols.join(", "),
            self.dialect.query_function(),
            quote::literal(alias),
            quote::literal(sql)
        );
        let failed = |e: duckdb::Error| ConnectorError::Source {
            what: self.what(),
            message: e.to_string(),
        };
        let mut stmt = conn.prepare(&query).map_err(failed)?;
        let rows = stmt
            .query_map([], |r| {
                (0..width)
                    .map(|i| r.get::<_, Option<String>>(i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(failed)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(failed)
    }

    /// The table as a relation, with the columns whose mapping is fixed cast ([`Dialect::fixup`]).
    fn table_relation(
        &self,
        conn: &Connection,
        alias: &str,
        schema: &str,
        table: &str,
    ) -> Result<String, ConnectorError> {
        let base = format!(
            "{}.{}.{}",
            quote::ident(alias).expect("checked"),
            quote::ident(schema).expect("checked"),
            quote::ident(table).expect("checked")
        );
        let columns = self.source_rows(conn, alias, &self.dialect.columns_sql(schema, table), 2)?;
        let casts: Vec<String> = columns
            .iter()
            .filter_map(|row| {
                let (name, ty) = (row[0].as_deref()?, row[1].as_deref()?);
                let target = self.dialect.fixup(ty)?;
                let col = quote::ident(name)?;
                Some(format!("CAST({col} AS {target}) AS {col}"))
            })
            .collect();
        Ok(if casts.is_empty() {
            base
        } else {
            format!("(SELECT * REPLACE ({}) FROM {base})", casts.join(", "))
        })
    }
}

impl Connector for Database {
    fn fingerprint(
        &self,
        _conn: &Connection,
        _table: &TableDef,
    ) -> Result<Option<String>, ConnectorError> {
        Ok(None)
    }

    fn scan(
        &self,
        conn: &Connection,
        session: &Session,
        table: &TableDef,
        _since: Option<&str>,
    ) -> Result<Scan, ConnectorError> {
        let alias = self.attach(conn, session)?;
        if let Some(query) = table.query.as_deref().filter(|q| !q.trim().is_empty()) {
            let query = query.trim().trim_end_matches(';');
            return Ok(Scan::of(format!(
                "{}({}, {})",
                self.dialect.query_function(),
                quote::literal(&alias),
                quote::literal(query)
            )));
        }
        let (schema, name) = self.schema_and_table(table)?;
        Ok(Scan::of(self.table_relation(conn, &alias, &schema, &name)?))
    }

    fn remote(&self, table: &TableDef) -> Result<RemoteTable, ConnectorError> {
        let (schema, name) = self.schema_and_table(table)?;
        Ok(RemoteTable {
            attach: RemoteAttach {
                alias: self.alias()?,
                extension: self.dialect.extension().into(),
                url: self.connection_string(),
                token_env: self.password_env.clone(),
            },
            schema,
            table: name,
            view: None,
            zero_counts: false,
        })
    }

    fn can_discover(&self) -> bool {
        true
    }

    fn discover(
        &self,
        conn: &Connection,
        session: &Session,
        bucket: Option<&str>,
    ) -> Result<Vec<DiscoveredTable>, ConnectorError> {
        let alias = self.attach(conn, session)?;
        let lit = |s: &str| s.replace('\'', "''");
        let (tables_sql, comments_sql, keys_sql) = match self.dialect {
            Dialect::Postgres => {
                let only =
                    bucket.map_or(String::new(), |b| format!(" AND n.nspname = '{}'", lit(b)));
                (
                    format!(
                        "SELECT n.nspname::text, c.relname::text, obj_description(c.oid, 'pg_class')::text, \
                         CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END::text \
                         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                         AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                         AND n.nspname NOT LIKE 'pg_toast%' AND NOT c.relispartition{only}"
                    ),
                    format!(
                        "SELECT n.nspname::text, c.relname::text, a.attname::text, \
                         col_description(c.oid, a.attnum)::text \
                         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                         JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE a.attnum > 0 AND NOT a.attisdropped \
                         AND col_description(c.oid, a.attnum) IS NOT NULL{only}"
                    ),
                    format!(
                        "SELECT n.nspname::text, c.relname::text, a.attname::text, k.ord::text \
                         FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
                         JOIN pg_namespace n ON n.oid = c.relnamespace \
                         CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
                         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
                         WHERE i.indisprimary{only}"
                    ),
                )
            }
            Dialect::Mysql => {
                let schema = lit(bucket.unwrap_or(&self.database));
                (
                    format!(
                        "SELECT TABLE_SCHEMA, TABLE_NAME, NULLIF(TABLE_COMMENT, ''), \
                         CAST(TABLE_ROWS AS CHAR) FROM information_schema.TABLES \
                         WHERE TABLE_SCHEMA = '{schema}'"
                    ),
                    format!(
                        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_COMMENT \
                         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{schema}' \
                         AND COLUMN_COMMENT <> ''"
                    ),
                    format!(
                        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, CAST(ORDINAL_POSITION AS CHAR) \
                         FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = '{schema}' \
                         AND CONSTRAINT_NAME = 'PRIMARY'"
                    ),
                )
            }
        };
        type Key = (String, String);
        let key = |r: &[Option<String>]| -> Option<Key> { Some((r[0].clone()?, r[1].clone()?)) };
        let mut found: BTreeMap<Key, DiscoveredTable> = BTreeMap::new();
        for r in self.source_rows(conn, &alias, &tables_sql, 4)? {
            let Some(k) = key(&r) else { continue };
            found.insert(
                k.clone(),
                DiscoveredTable {
                    bucket: k.0,
                    name: k.1,
                    description: r[2].clone(),
                    rows: r[3].as_deref().and_then(|n| n.parse().ok()),
                    columns: Vec::new(),
                    primary_key: Vec::new(),
                },
            );
        }
        // Column names and the types DuckDB reads them as, from the attached catalog.
        let mut stmt = conn
            .prepare(
                "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() \
                 WHERE database_name = ? ORDER BY schema_name, table_name, column_index",
            )
            .map_err(|e| ConnectorError::Source {
                what: self.what(),
                message: e.to_string(),
            })?;
        let rows = stmt
            .query_map([&alias], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ConnectorError::Source {
                what: self.what(),
                message: e.to_string(),
            })?;
        for (schema, table, column, data_type) in rows {
            if let Some(t) = found.get_mut(&(schema, table)) {
                t.columns.push(DiscoveredColumn {
                    name: column,
                    data_type: Some(data_type),
                    description: None,
                });
            }
        }
        for r in self.source_rows(conn, &alias, &comments_sql, 4)? {
            let (Some(k), Some(column)) = (key(&r), r[2].as_deref()) else {
                continue;
            };
            if let Some(c) = found
                .get_mut(&k)
                .and_then(|t| t.columns.iter_mut().find(|c| c.name == column))
            {
                c.description = r[3].clone();
            }
        }
        let mut keys: BTreeMap<Key, Vec<(i64, String)>> = BTreeMap::new();
        for r in self.source_rows(conn, &alias, &keys_sql, 4)? {
            let (Some(k), Some(column)) = (key(&r), r[2].clone()) else {
                continue;
            };
            let ord = r[3].as_deref().and_then(|o| o.parse().ok()).unwrap_or(0);
            keys.entry(k).or_default().push((ord, column));
        }
        for (k, mut cols) in keys {
            cols.sort();
            if let Some(t) = found.get_mut(&k) {
                t.primary_key = cols.into_iter().map(|(_, c)| c).collect();
            }
        }
        Ok(found.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(kind: &str, connection: serde_json::Value) -> SourceDef {
        let mut s: SourceDef =
            serde_json::from_value(json!({"type": kind, "connection": connection})).unwrap();
        s.name = "shop".into();
        s
    }

    #[test]
    fn the_connection_string_has_no_password_and_no_smuggled_keys() {
        let pg = Database::new(
            &source(
                "postgres",
                json!({"host": "db.internal", "database": "shop", "user": "reader",
                       "password_env": "PG_PASSWORD", "sslmode": "require"}),
            ),
            Dialect::Postgres,
        )
        .unwrap();
        assert_eq!(
            pg.connection_string(),
            "host=db.internal port=5432 dbname=shop user=reader sslmode=require"
        );
        let my = Database::new(
            &source(
                "mysql",
                json!({"host": "127.0.0.1", "port": 3307, "database": "shop", "user": "root"}),
            ),
            Dialect::Mysql,
        )
        .unwrap();
        assert_eq!(
            my.connection_string(),
            "host=127.0.0.1 port=3307 database=shop user=root"
        );
        let smuggled = Database::new(
            &source(
                "postgres",
                json!({"host": "h", "database": "shop password=x", "user": "u"}),
            ),
            Dialect::Postgres,
        );
        assert!(matches!(smuggled, Err(ConnectorError::Config(_))));
    }
}

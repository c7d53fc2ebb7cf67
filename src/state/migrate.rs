//! Versioned, forward-only migrations of `system.duckdb`.
//!
//! `schema_version` records every applied migration. Opening a file runs the pending ones, each in its
//! own transaction, after copying the file aside (`system.duckdb.pre-migrate`) so a failure restores the
//! previous state whole. A file written by a newer binary is refused with a clear error instead of being
//! touched.

use super::StateError;
use duckdb::Connection;
use std::path::Path;

#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Append only; never edit a released one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "plan_apply",
        sql: include_str!("migrations/0002_plan_apply.sql"),
    },
    Migration {
        version: 3,
        name: "engine",
        sql: include_str!("migrations/0003_engine.sql"),
    },
    Migration {
        version: 4,
        name: "data_safety",
        sql: include_str!("migrations/0004_data_safety.sql"),
    },
    Migration {
        version: 5,
        name: "downstream",
        sql: include_str!("migrations/0005_downstream.sql"),
    },
    Migration {
        version: 6,
        name: "settings",
        sql: include_str!("migrations/0006_settings.sql"),
    },
    Migration {
        version: 7,
        name: "profiles",
        sql: include_str!("migrations/0007_profiles.sql"),
    },
];

pub fn latest_version(migrations: &[Migration]) -> i64 {
    migrations.last().map_or(0, |m| m.version)
}

/// The version recorded in `conn`, 0 for an empty database.
pub fn current_version(conn: &Connection) -> Result<i64, StateError> {
    // The direct query is the common case; scanning the catalog (slower) only tells an empty
    // database from a real error.
    match conn.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    ) {
        Ok(v) => Ok(v),
        Err(e) => {
            let exists: i64 = conn.query_row(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version'
                 AND schema_name = 'main' AND database_name = current_database()",
                [],
                |r| r.get(0),
            )?;
            if exists == 0 {
                Ok(0)
            } else {
                Err(e.into())
            }
        }
    }
}

/// Brings the database at `path` (opened as `conn`) up to the last of `migrations`.
pub fn migrate(
    conn: &mut Connection,
    path: Option<&Path>,
    migrations: &[Migration],
) -> Result<i64, StateError> {
    let current = current_version(conn)?;
    let latest = latest_version(migrations);
    if current > latest {
        return Err(StateError::TooNew {
            found: current,
            supported: latest,
        });
    }
    let pending: Vec<&Migration> = migrations.iter().filter(|m| m.version > current).collect();
    if pending.is_empty() {
        return Ok(current);
    }
    // A copy to restore if a migration fails half-way (DuckDB DDL is transactional, but a crash or a
    // disk error between migrations must not leave a file no binary can read).
    let backup = match (path, current) {
        (Some(p), v) if v > 0 => {
            conn.execute_batch("CHECKPOINT")?;
            let backup = p.with_extension("duckdb.pre-migrate");
            std::fs::copy(p, &backup).map_err(|e| StateError::Io(backup.clone(), e))?;
            Some(backup)
        }
        _ => None,
    };
    let result = (|| {
        for m in &pending {
            let tx = conn.transaction()?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_version (
                    version BIGINT PRIMARY KEY, name VARCHAR NOT NULL,
                    applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)",
            )?;
            tx.execute_batch(m.sql).map_err(|e| StateError::Migration {
                version: m.version,
                name: m.name,
                error: e,
            })?;
            tx.execute(
                "INSERT INTO schema_version (version, name) VALUES (?, ?)",
                duckdb::params![m.version, m.name],
            )?;
            tx.commit()?;
            tracing::info!(version = m.version, name = m.name, "state migrated");
        }
        conn.execute_batch("CHECKPOINT")?;
        Ok(latest)
    })();
    match (&result, backup) {
        (Ok(_), Some(b)) => {
            let _ = std::fs::remove_file(b);
        }
        (Err(_), Some(b)) => {
            tracing::error!(backup = %b.display(), "migration failed; the previous state is kept in the backup");
        }
        _ => {}
    }
    result
}

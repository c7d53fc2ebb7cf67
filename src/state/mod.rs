//! `data/state/system.duckdb`: the recorded state (registry, sync state and history, metric
//! definitions, users, permissions, audit log), with versioned migrations.
//!
//! DuckDB allows one read-write process per file, so nothing here holds the file open for long: callers
//! [`open`] it for one operation and drop the connection. A lock held by another process is retried
//! briefly (see [`open`]) and then reported as [`StateError::Busy`], never as DuckDB's raw message.

pub mod auth;
pub mod downstream;
pub mod migrate;
pub mod registry;
pub mod report;
pub mod sync;

use crate::duck::{is_lock_conflict, LOCK_RETRY};
use duckdb::{AccessMode, Config, Connection};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "state was written by a newer pipeline (schema version {found}; this binary knows up to {supported}); \
         upgrade pipeline, or restore an older state"
    )]
    TooNew { found: i64, supported: i64 },
    #[error("state migration {version} ({name}) failed: {error}")]
    Migration {
        version: i64,
        name: &'static str,
        error: duckdb::Error,
    },
    #[error(
        "state database {0} is busy (another pipeline process holds it); try again in a moment"
    )]
    Busy(PathBuf),
    #[error(
        "state database {0} does not exist any more (was data/state removed while pipeline ran?); \
         nothing was recorded. Restore it from a backup, or run `pipeline apply` to register the specs \
         again"
    )]
    Missing(PathBuf),
    #[error("stale plan: {0}")]
    Stale(String),
    /// A request the state cannot carry out as asked (an ambiguous id, say); the message says why.
    #[error("{0}")]
    Refused(String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    // Not a `#[source]`: DuckDB's message is already in ours, and its own source repeats it.
    #[error("state database: {0}")]
    Db(duckdb::Error),
}

impl From<duckdb::Error> for StateError {
    fn from(e: duckdb::Error) -> Self {
        StateError::Db(e)
    }
}

pub type StateResult<T> = Result<T, StateError>;

/// DuckDB's file lock is per process: it keeps a second process out, but not a second read-write
/// open from the same process, which would corrupt the file. The daemon writes from several threads
/// (runs, the watcher, the API), so read-write opens in one process take turns here.
static WRITER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A state connection; a read-write one holds this process's writer turn until dropped.
pub struct StateConn {
    // Declared first so it is dropped (closed) before the turn is released.
    conn: Connection,
    _turn: Option<std::sync::MutexGuard<'static, ()>>,
}

impl std::fmt::Debug for StateConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateConn")
            .field("writer", &self._turn.is_some())
            .finish()
    }
}

impl std::ops::Deref for StateConn {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for StateConn {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// Opens (creating and migrating as needed) the state database at `path`, read-write. Drop the
/// connection as soon as the operation is done: other processes and threads wait for it.
pub fn open(path: &Path) -> Result<StateConn, StateError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StateError::Io(dir.to_path_buf(), e))?;
    }
    let turn = WRITER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut conn = open_with_retry(path, false)?;
    migrate::migrate(&mut conn, Some(path), migrate::MIGRATIONS)?;
    Ok(StateConn {
        conn,
        _turn: Some(turn),
    })
}

/// Opens the state at `path` read-write like [`open`], but only if it exists: never creates it.
/// For writes that must land in the state a run started from (recording the run): a state directory
/// removed meanwhile is an error, not a new empty state.
pub fn open_existing(path: &Path) -> Result<StateConn, StateError> {
    let turn = WRITER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Checked under the writer turn; DuckDB would create a missing file.
    if !path.is_file() {
        return Err(StateError::Missing(path.to_path_buf()));
    }
    let mut conn = open_with_retry(path, false)?;
    migrate::migrate(&mut conn, Some(path), migrate::MIGRATIONS)?;
    Ok(StateConn {
        conn,
        _turn: Some(turn),
    })
}

/// Opens an existing state for reading. A state from an older binary is migrated first (which needs a
/// read-write open); one from a newer binary is refused.
pub fn open_for_reading(path: &Path) -> Result<StateConn, StateError> {
    let conn = open_with_retry(path, true)?;
    let version = migrate::current_version(&conn)?;
    if version < migrate::latest_version(migrate::MIGRATIONS) {
        drop(conn);
        return open(path);
    }
    check_version(version)?;
    Ok(StateConn { conn, _turn: None })
}

fn check_version(version: i64) -> Result<(), StateError> {
    let supported = migrate::latest_version(migrate::MIGRATIONS);
    if version > supported {
        return Err(StateError::TooNew {
            found: version,
            supported,
        });
    }
    Ok(())
}

fn open_with_retry(path: &Path, read_only: bool) -> Result<Connection, StateError> {
    let conn = retry_busy(path, || {
        let mode = if read_only {
            AccessMode::ReadOnly
        } else {
            AccessMode::ReadWrite
        };
        Connection::open_with_flags(path, Config::default().access_mode(mode)?)
    })?;
    utc(&conn);
    Ok(conn)
}

/// Timestamps are stored in UTC whatever the machine's zone (needs ICU, which the prebuilt library
/// has; without it DuckDB already works in UTC).
fn utc(conn: &Connection) {
    if let Err(e) = conn.execute_batch("SET TimeZone = 'UTC'") {
        tracing::debug!(error = %e, "could not set the state's time zone to UTC");
    }
}

/// Runs `attempt` until it stops failing on another process's file lock, for up to [`LOCK_RETRY`].
fn retry_busy<T>(
    path: &Path,
    mut attempt: impl FnMut() -> Result<T, duckdb::Error>,
) -> Result<T, StateError> {
    let started = Instant::now();
    let mut pause = crate::duck::FIRST_PAUSE;
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(e) if is_lock_conflict(&e) && started.elapsed() < LOCK_RETRY => {
                tracing::debug!(path = %path.display(), "state busy, retrying");
                std::thread::sleep(pause);
                pause = crate::duck::next_pause(pause);
            }
            Err(e) if is_lock_conflict(&e) => return Err(StateError::Busy(path.to_path_buf())),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Name under which [`attach_for_reading`] attaches the state.
pub const ATTACHED: &str = "pipeline_state";

/// Attaches the state at `path` read-only to an existing connection (an open DuckDB instance, e.g.
/// the SQL parser's, which saves starting a second one) and makes it the default catalog. Returns
/// `false`, attaching nothing, when the state needs a migration first (use [`open_for_reading`]).
pub fn attach_for_reading(conn: &Connection, path: &Path) -> Result<bool, StateError> {
    let quoted = path.display().to_string().replace('\'', "''");
    retry_busy(path, || {
        conn.execute_batch(&format!(
            "ATTACH '{quoted}' AS {ATTACHED} (READ_ONLY); USE {ATTACHED};"
        ))
    })?;
    let version = migrate::current_version(conn)?;
    if version < migrate::latest_version(migrate::MIGRATIONS) {
        conn.execute_batch(&format!("USE memory; DETACH {ATTACHED};"))?;
        return Ok(false);
    }
    check_version(version)?;
    utc(conn);
    Ok(true)
}

/// The apply serial (bumped by every apply).
pub fn serial(conn: &Connection) -> Result<i64, StateError> {
    let s: String = conn.query_row(
        "SELECT value FROM state_meta WHERE key = 'serial'",
        [],
        |r| r.get(0),
    )?;
    Ok(s.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::migrate::{latest_version, migrate, Migration, MIGRATIONS};
    use super::*;

    fn latest() -> i64 {
        latest_version(MIGRATIONS)
    }

    #[test]
    fn fresh_state_is_created_at_latest_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/system.duckdb");
        let conn = open(&path).unwrap();
        assert_eq!(migrate::current_version(&conn).unwrap(), latest());
        assert_eq!(serial(&conn).unwrap(), 0);
        drop(conn);
        // Reopening runs nothing and keeps the version.
        let conn = open(&path).unwrap();
        assert_eq!(migrate::current_version(&conn).unwrap(), latest());
    }

    #[test]
    fn migrating_from_v1_to_latest_preserves_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.duckdb");
        let mut conn = Connection::open(&path).unwrap();
        assert_eq!(
            migrate(&mut conn, Some(&path), &MIGRATIONS[..1]).unwrap(),
            1
        );
        conn.execute_batch(
            "INSERT INTO sources (name, source_type, spec_file, spec_hash) VALUES ('shop', 'csv', 'pipelines/shop.yaml', 'h');
             UPDATE state_meta SET value = '7' WHERE key = 'serial';",
        )
        .unwrap();
        drop(conn);

        // What a newer binary does on open: run the pending migrations.
        let conn = open(&path).unwrap();
        assert_eq!(migrate::current_version(&conn).unwrap(), latest());
        let (name, spec): (String, Option<String>) = conn
            .query_row("SELECT name, spec FROM sources", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((name.as_str(), spec), ("shop", None));
        assert_eq!(serial(&conn).unwrap(), 7);
        let pending: i64 = conn
            .query_row("SELECT count(*) FROM pending_tasks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(pending, 0, "v2 tables exist");
        assert!(
            !path.with_extension("duckdb.pre-migrate").exists(),
            "backup removed after success"
        );
    }

    #[test]
    fn failed_migration_changes_nothing_and_keeps_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.duckdb");
        drop(open(&path).unwrap());
        let broken = Migration {
            version: latest() + 1,
            name: "broken",
            sql: "ALTER TABLE sources ADD COLUMN x INT; SELECT * FROM no_such_table;",
        };
        let mut conn = Connection::open(&path).unwrap();
        let all: Vec<Migration> = MIGRATIONS.iter().copied().chain([broken]).collect();
        let err = migrate(&mut conn, Some(&path), &all).unwrap_err();
        assert!(
            matches!(err, StateError::Migration { version, .. } if version == latest() + 1),
            "{err}"
        );
        assert_eq!(migrate::current_version(&conn).unwrap(), latest());
        let cols: i64 = conn
            .query_row(
                "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'sources' AND column_name = 'x'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(cols, 0, "the half-applied migration was rolled back");
        assert!(path.with_extension("duckdb.pre-migrate").exists());
    }

    #[test]
    fn open_existing_never_creates_a_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/system.duckdb");
        let err = open_existing(&path).unwrap_err();
        assert!(matches!(err, StateError::Missing(_)), "{err}");
        assert!(!path.exists() && !path.parent().unwrap().exists());
        drop(open(&path).unwrap());
        assert_eq!(
            migrate::current_version(&open_existing(&path).unwrap()).unwrap(),
            latest()
        );
    }

    #[test]
    fn newer_state_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.duckdb");
        let conn = open(&path).unwrap();
        conn.execute(
            "INSERT INTO schema_version (version, name) VALUES (99, 'future')",
            [],
        )
        .unwrap();
        drop(conn);
        let err = open(&path).unwrap_err();
        assert!(
            matches!(err, StateError::TooNew { found: 99, supported } if supported == latest()),
            "{err}"
        );
        assert!(err.to_string().contains("newer pipeline"));
        let err = open_for_reading(&path).unwrap_err();
        assert!(matches!(err, StateError::TooNew { .. }));
    }
}

//! `data/state/system.duckdb`: the recorded state (registry, sync state and history, metric
//! definitions, users, permissions, audit log), with versioned migrations. Only this module opens it.
//!
//! A [`StateStore`] owns the file's path and the rules for opening it. DuckDB allows one read-write
//! process per file, so nothing holds the file open for long: a [`Reader`] or [`Writer`] is taken for
//! one operation and dropped. DuckDB's file lock keeps other *processes* out but not a second open from
//! this one, so opens in one process take turns per file: readers share a turn, a writer takes it
//! alone. A lock held by another process is waited for with backoff — without holding the turn, so
//! this process's other readers and writers are not held up meanwhile — and after
//! [`crate::duck::LOCK_RETRY`] reported as [`StateError::Busy`], never as DuckDB's raw message.
//!
//! Every statement over the state's tables lives in the submodules ([`registry`], [`sync`],
//! [`report`], [`downstream`], [`profile`], [`auth`]), which take a [`Reader`] or [`Writer`] and
//! return typed rows; the connection itself never leaves this module. The state knows nothing of
//! plans or extraction: it records what it is handed.

pub mod auth;
pub mod digest;
pub mod downstream;
pub mod migrate;
pub mod profile;
pub mod registry;
pub mod report;
pub mod sync;

use crate::duck::{is_lock_conflict, FIRST_PAUSE, LOCK_RETRY};
use crate::files::FileId;
use crate::instance::DataDir;
use duckdb::{AccessMode, Config, Connection};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
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

/// The state database of one instance: its path and how it is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateStore {
    path: PathBuf,
}

/// This process's turn on one state file: shared by readers, taken alone by a writer. The guards
/// are held, never read: dropping them ends the turn.
#[allow(dead_code)]
enum Turn {
    Shared(RwLockReadGuard<'static, ()>),
    Alone(RwLockWriteGuard<'static, ()>),
}

/// The turn of each state file this process opened, by canonical path. One per file for the life of
/// the process (an instance has one state; tests have a few).
static TURNS: Mutex<BTreeMap<PathBuf, &'static RwLock<()>>> = Mutex::new(BTreeMap::new());

fn turns_of(path: &Path) -> &'static RwLock<()> {
    // The parent exists for every file that is opened; the canonical form makes two spellings of
    // one file share a turn.
    let key = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    };
    let mut turns = TURNS.lock().unwrap_or_else(|p| p.into_inner());
    turns
        .entry(key)
        .or_insert_with(|| Box::leak(Box::new(RwLock::new(()))))
}

impl Turn {
    fn take(path: &Path, alone: bool) -> Turn {
        let lock = turns_of(path);
        if alone {
            Turn::Alone(lock.write().unwrap_or_else(|p| p.into_inner()))
        } else {
            Turn::Shared(lock.read().unwrap_or_else(|p| p.into_inner()))
        }
    }

    fn is_alone(&self) -> bool {
        matches!(self, Turn::Alone(_))
    }
}

/// A connection to read the state, holding a shared turn (or the writer's, when opening it had to
/// migrate the file first). Drop it as soon as the operation is done.
pub struct Reader {
    // Declared first so it is dropped (closed) before the turn is released.
    pub(in crate::state) conn: Connection,
    turn: Turn,
}

/// A connection to write the state, holding this process's turn alone. Reads work on it too
/// (it dereferences to a [`Reader`]).
pub struct Writer {
    reader: Reader,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("alone", &self.turn.is_alone())
            .finish()
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish()
    }
}

impl std::ops::Deref for Writer {
    type Target = Reader;
    fn deref(&self) -> &Reader {
        &self.reader
    }
}

impl Writer {
    pub(in crate::state) fn conn(&mut self) -> &mut Connection {
        &mut self.reader.conn
    }
}

/// The state file and its write-ahead log as they are on disk (size, modification time, inode).
/// Every committed write changes it — a commit appends to the log, a checkpoint rewrites the file
/// and empties the log — so a reader can keep what it derived from the state (a token's verdict,
/// a manifest) while the stamp stays the same, without opening DuckDB to find out. File times are
/// coarse (milliseconds), so holders also bound how long they trust an unchanged stamp.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StateStamp([Option<FileId>; 2]);

/// How a file is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Read,
    /// Read-write, creating the file (and its directory) when missing.
    Create,
    /// Read-write, only when the file exists.
    Existing,
}

impl StateStore {
    /// The state at `path`.
    pub fn new(path: impl Into<PathBuf>) -> StateStore {
        StateStore { path: path.into() }
    }

    /// The state of the instance whose data directory is `data`.
    pub fn of(data: &DataDir) -> StateStore {
        StateStore::new(data.state_db())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How the state file and its write-ahead log look on disk now (see [`StateStamp`]).
    pub fn stamp(&self) -> StateStamp {
        let wal = PathBuf::from(format!("{}.wal", self.path.display()));
        StateStamp([FileId::of(&self.path), FileId::of(&wal)])
    }

    /// Whether the file exists: nothing has been applied (or recorded) when it does not.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Opens the state read-write, creating and migrating it as needed.
    pub fn write(&self) -> StateResult<Writer> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StateError::Io(dir.to_path_buf(), e))?;
        }
        self.writer(Mode::Create)
    }

    /// Opens the state read-write like [`StateStore::write`], but only if it exists: never creates
    /// it. For writes that must land in the state a run started from (recording the run): a state
    /// directory removed meanwhile is an error, not a new empty state.
    pub fn write_existing(&self) -> StateResult<Writer> {
        self.writer(Mode::Existing)
    }

    /// Opens an existing state for reading. A state from an older binary is migrated first (which
    /// needs the writer's turn and a read-write open); one from a newer binary is refused.
    pub fn read(&self) -> StateResult<Reader> {
        let (conn, turn) = self.open(Mode::Read)?;
        let version = migrate::current_version(&conn)?;
        if version < migrate::latest_version(migrate::MIGRATIONS) {
            drop(conn);
            drop(turn);
            return Ok(self.write()?.reader);
        }
        check_version(version)?;
        Ok(Reader { conn, turn })
    }

    /// [`StateStore::read`], or `None` when there is no state yet.
    pub fn read_if_exists(&self) -> StateResult<Option<Reader>> {
        if !self.exists() {
            return Ok(None);
        }
        self.read().map(Some)
    }

    /// Reads the state through `conn`, an open DuckDB instance (the SQL parser's, which saves
    /// starting a second one): attaches the file read-only and makes it the default catalog. Falls
    /// back to [`StateStore::read`] when the state needs a migration first.
    pub fn read_through(&self, conn: Connection) -> StateResult<Reader> {
        let quoted = self.path.display().to_string().replace('\'', "''");
        let turn = self.retry(false, || {
            conn.execute_batch(&format!(
                "ATTACH '{quoted}' AS {ATTACHED} (READ_ONLY); USE {ATTACHED};"
            ))
        })?;
        let version = migrate::current_version(&conn)?;
        if version < migrate::latest_version(migrate::MIGRATIONS) {
            conn.execute_batch(&format!("USE memory; DETACH {ATTACHED};"))?;
            drop(conn);
            drop(turn);
            return self.read();
        }
        check_version(version)?;
        utc(&conn);
        Ok(Reader { conn, turn })
    }

    /// The apply serial (bumped by every apply); 0 when there is no state yet.
    pub fn serial(&self) -> StateResult<i64> {
        match self.read_if_exists()? {
            Some(r) => r.serial(),
            None => Ok(0),
        }
    }

    fn writer(&self, mode: Mode) -> StateResult<Writer> {
        let (mut conn, turn) = self.open(mode)?;
        migrate::migrate(&mut conn, Some(&self.path), migrate::MIGRATIONS)?;
        Ok(Writer {
            reader: Reader { conn, turn },
        })
    }

    fn open(&self, mode: Mode) -> StateResult<(Connection, Turn)> {
        let path = &self.path;
        let mut conn = None;
        let turn = self.retry(mode != Mode::Read, || {
            // Checked under the writer's turn; DuckDB would create a missing file.
            if mode == Mode::Existing && !path.is_file() {
                return Ok(Err(StateError::Missing(path.clone())));
            }
            let access = if mode == Mode::Read {
                AccessMode::ReadOnly
            } else {
                AccessMode::ReadWrite
            };
            conn = Some(Connection::open_with_flags(
                path,
                Config::default().access_mode(access)?,
            )?);
            Ok(Ok(()))
        });
        let turn = turn?;
        let conn = match conn {
            Some(c) => c,
            None => return Err(StateError::Missing(path.clone())),
        };
        utc(&conn);
        Ok((conn, turn))
    }

    /// Takes this process's turn (alone or shared) and runs `attempt` under it until it stops failing
    /// on another process's file lock. Between attempts the turn is released: waiting for another
    /// process must not hold up this one's readers and writers. Returns the turn `attempt` succeeded
    /// under.
    fn retry<T>(
        &self,
        alone: bool,
        mut attempt: impl FnMut() -> Result<T, duckdb::Error>,
    ) -> StateResult<Turn>
    where
        T: Settle,
    {
        let started = Instant::now();
        let mut pause = FIRST_PAUSE;
        loop {
            let turn = Turn::take(&self.path, alone);
            match attempt() {
                Ok(v) => return v.settle().map(|()| turn),
                Err(e) if is_lock_conflict(&e) => {
                    drop(turn);
                    if started.elapsed() >= LOCK_RETRY {
                        return Err(StateError::Busy(self.path.clone()));
                    }
                    tracing::debug!(path = %self.path.display(), "state busy, retrying");
                    std::thread::sleep(pause);
                    pause = crate::duck::next_pause(pause);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// What an attempt under a turn produced besides DuckDB's own errors.
trait Settle {
    fn settle(self) -> StateResult<()>;
}

impl Settle for () {
    fn settle(self) -> StateResult<()> {
        Ok(())
    }
}

impl Settle for StateResult<()> {
    fn settle(self) -> StateResult<()> {
        self
    }
}

impl Reader {
    /// The apply serial (bumped by every apply).
    pub fn serial(&self) -> StateResult<i64> {
        let s: String = self.conn.query_row(
            "SELECT value FROM state_meta WHERE key = 'serial'",
            [],
            |r| r.get(0),
        )?;
        Ok(s.parse().unwrap_or(0))
    }
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

/// Timestamps are stored in UTC whatever the machine's zone (needs ICU, which the prebuilt library
/// has; without it DuckDB already works in UTC).
fn utc(conn: &Connection) {
    if let Err(e) = conn.execute_batch("SET TimeZone = 'UTC'") {
        tracing::debug!(error = %e, "could not set the state's time zone to UTC");
    }
}

/// Name under which [`StateStore::read_through`] attaches the state.
const ATTACHED: &str = "pipeline_state";

/// SQL for a UTC timestamp column as RFC 3339 text, as [`crate::timestamp::rfc3339`] writes times.
pub(in crate::state) fn ts(col: &str) -> String {
    crate::timestamp::sql(col)
}

/// `FROM` clause over a JSON array parameter `$1`, one row `d` per element: rows handed to DuckDB as
/// one parameter, so writing a thousand of them is one statement, not a thousand.
pub(in crate::state) const ROWS: &str = "(SELECT unnest(CAST($1::JSON AS JSON[])) AS d)";

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
        let store = StateStore::new(dir.path().join("state/system.duckdb"));
        assert_eq!(
            store.serial().unwrap(),
            0,
            "no state: serial 0, nothing created"
        );
        assert!(!store.exists());
        let w = store.write().unwrap();
        assert_eq!(migrate::current_version(&w.conn).unwrap(), latest());
        assert_eq!(w.serial().unwrap(), 0);
        drop(w);
        // Reopening runs nothing and keeps the version.
        let r = store.read().unwrap();
        assert_eq!(migrate::current_version(&r.conn).unwrap(), latest());
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

        // What a newer binary does on open, even to read: run the pending migrations.
        let r = StateStore::new(&path).read().unwrap();
        assert_eq!(migrate::current_version(&r.conn).unwrap(), latest());
        let (name, spec): (String, Option<String>) = r
            .conn
            .query_row("SELECT name, spec FROM sources", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((name.as_str(), spec), ("shop", None));
        assert_eq!(r.serial().unwrap(), 7);
        let pending: i64 = r
            .conn
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
        drop(StateStore::new(&path).write().unwrap());
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
        let store = StateStore::new(&path);
        let err = store.write_existing().unwrap_err();
        assert!(matches!(err, StateError::Missing(_)), "{err}");
        assert!(!path.exists() && !path.parent().unwrap().exists());
        drop(store.write().unwrap());
        assert_eq!(
            migrate::current_version(&store.write_existing().unwrap().conn).unwrap(),
            latest()
        );
    }

    #[test]
    fn newer_state_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("system.duckdb"));
        let w = store.write().unwrap();
        w.conn
            .execute(
                "INSERT INTO schema_version (version, name) VALUES (99, 'future')",
                [],
            )
            .unwrap();
        drop(w);
        let err = store.write().unwrap_err();
        assert!(
            matches!(err, StateError::TooNew { found: 99, supported } if supported == latest()),
            "{err}"
        );
        assert!(err.to_string().contains("newer pipeline"));
        let err = store.read().unwrap_err();
        assert!(matches!(err, StateError::TooNew { .. }));
        let parser = Connection::open_in_memory().unwrap();
        let err = store.read_through(parser).unwrap_err();
        assert!(matches!(err, StateError::TooNew { .. }));
    }

    #[test]
    fn readers_share_a_turn_and_a_writer_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("system.duckdb"));
        drop(store.write().unwrap());
        let first = store.read().unwrap();
        // A second reader in the same process does not wait for the first.
        let second = store.read().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                let w = store.write().unwrap();
                tx.send(()).unwrap();
                drop(w);
            })
        };
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "the writer waits while readers hold the turn"
        );
        drop(first);
        drop(second);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the writer gets the turn once the readers are gone");
        writer.join().unwrap();
        // Another spelling of the same file shares its turn.
        let other = StateStore::new(dir.path().join(".").join("system.duckdb"));
        assert!(std::ptr::eq(turns_of(store.path()), turns_of(other.path())));
    }

    #[test]
    fn waiting_for_another_process_does_not_hold_the_turn() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("system.duckdb"));
        let conflict = || {
            Connection::open_in_memory()
                .unwrap()
                .execute_batch("SELECT error('Could not set lock on file')")
                .unwrap_err()
        };
        let lock = turns_of(store.path());
        let reader_got_in = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = reader_got_in.clone();
        // A reader of this process that comes while the writer backs off from "another process".
        let reader = std::thread::spawn(move || loop {
            if let Ok(turn) = lock.try_read() {
                drop(turn);
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        });
        // The writer's file stays locked until the reader has had its turn: were the turn held
        // through the backoff, this would end Busy after ten seconds.
        let turn = store
            .retry(true, || {
                if reader_got_in.load(std::sync::atomic::Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(conflict())
                }
            })
            .unwrap();
        assert!(turn.is_alone());
        reader.join().unwrap();
    }
}

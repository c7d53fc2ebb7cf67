//! DuckDB helpers every layer shares: telling another process's file lock from other errors, and
//! waiting a bounded time for it to go away.
//!
//! DuckDB lets one process at a time open a database file read-write (and refuses readers while it
//! does). The holders here keep files open for moments, so a conflict is worth a short retry with
//! backoff; the caller decides what to say when the wait runs out. Nothing here opens a particular
//! file: the state store, the analytics rebuild, the connectors and the API's query worker all call in.

use std::time::{Duration, Instant};

/// What one run engine (a DuckDB database a run opens: the in-memory engine of extracts, the staged
/// analytics file) may use. `None` leaves DuckDB's own default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineLimits {
    pub memory_mb: Option<u64>,
    pub threads: Option<u64>,
}

impl EngineLimits {
    /// The SQL that applies the limits to a database (all its connections).
    pub fn sql(&self) -> String {
        let mut out = String::new();
        if let Some(mb) = self.memory_mb {
            out.push_str(&format!("SET memory_limit = '{mb}MiB'; "));
        }
        if let Some(t) = self.threads {
            out.push_str(&format!("SET threads = {t}; "));
        }
        out
    }

    /// Applies the limits to the database `conn` belongs to.
    pub fn apply(&self, conn: &duckdb::Connection) -> duckdb::Result<()> {
        let sql = self.sql();
        if sql.is_empty() {
            return Ok(());
        }
        conn.execute_batch(&sql)
    }
}

/// The host's RAM in MiB (`None` when it cannot be read) and CPU cores, for defaults.
pub fn host_memory_and_cores() -> (Option<u64>, u64) {
    // SAFETY: sysconf only reads system configuration values.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let memory =
        (pages > 0 && size > 0).then(|| (pages as u64).saturating_mul(size as u64) / (1024 * 1024));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    (memory, cores)
}

/// How long an open retries when another process holds the file.
pub const LOCK_RETRY: Duration = Duration::from_secs(10);

/// Whether DuckDB refused a file because another process holds it.
pub fn is_lock_conflict(e: &duckdb::Error) -> bool {
    let text = e.to_string();
    text.contains("Could not set lock") || text.contains("Conflicting lock")
}

/// The pause before the next attempt after `pause`: doubling, at most 250 ms.
pub fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(Duration::from_millis(250))
}

/// The first pause of a retry loop.
pub const FIRST_PAUSE: Duration = Duration::from_millis(10);

/// Runs `attempt` until it stops failing on another process's file lock, for up to `wait`. The
/// last error is returned as is (callers say which file was busy).
pub fn retry_locked<T>(
    wait: Duration,
    mut attempt: impl FnMut() -> Result<T, duckdb::Error>,
) -> Result<T, duckdb::Error> {
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        match attempt() {
            Err(e) if is_lock_conflict(&e) && started.elapsed() < wait => {
                std::thread::sleep(pause);
                pause = next_pause(pause);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_limits_reach_duckdb() {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let limits = EngineLimits {
            memory_mb: Some(300),
            threads: Some(1),
        };
        limits.apply(&conn).unwrap();
        let other = conn.try_clone().unwrap();
        let (memory, threads): (String, i64) = other
            .query_row(
                "SELECT current_setting('memory_limit'), current_setting('threads')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(threads, 1);
        // DuckDB shows 300 MiB in its own rounding ("300.0 MiB" or "314.5 MB").
        assert!(memory.contains("MiB") || memory.contains("MB"), "{memory}");
        assert!(EngineLimits::default().sql().is_empty());
    }

    #[test]
    fn a_conflict_is_retried_until_it_clears_and_other_errors_return_at_once() {
        let conflict = || {
            duckdb::Connection::open_in_memory()
                .unwrap()
                .execute_batch("SELECT error('Could not set lock on file \"x\"')")
                .unwrap_err()
        };
        assert!(is_lock_conflict(&conflict()));
        let mut tries = 0;
        let r = retry_locked(Duration::from_secs(5), || {
            tries += 1;
            if tries < 3 {
                Err(conflict())
            } else {
                Ok(tries)
            }
        });
        assert_eq!(r.unwrap(), 3);
        let mut tries = 0;
        let r: Result<(), _> = retry_locked(Duration::from_secs(5), || {
            tries += 1;
            duckdb::Connection::open_in_memory()
                .unwrap()
                .execute_batch("SELECT * FROM no_such_table")
        });
        assert!(r.is_err() && tries == 1);
    }
}

//! DuckDB helpers every layer shares: telling another process's file lock from other errors, and
//! waiting a bounded time for it to go away.
//!
//! DuckDB lets one process at a time open a database file read-write (and refuses readers while it
//! does). The holders here keep files open for moments, so a conflict is worth a short retry with
//! backoff; the caller decides what to say when the wait runs out. Nothing here opens a particular
//! file: the state store, the analytics rebuild, the connectors and the API's query worker all call in.

use std::time::{Duration, Instant};

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

//! Lock files: one holder at a time of the state (one apply per instance), of a source (one run
//! writes its extracts) and of analytics (one publish).
//!
//! A lock is an OS advisory lock (`flock`) on a file such as `data/state/state.lock`, so the kernel
//! releases it when its holder dies, however it dies: a lock left by a killed process is never
//! "stuck". The file also holds who took the lock (pid, host, user, command, start time) so a waiting
//! process can name the holder, and so a lock taken over from a dead holder can be reported as such.
//!
//! The DuckDB file lock is a different thing: it is held only for the few milliseconds a connection is
//! open, while these span a whole plan → confirm → write cycle or a run.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub user: String,
    pub command: String,
    /// RFC 3339, local time of the holder.
    pub started_at: String,
}

impl Holder {
    fn current(command: &str) -> Holder {
        Holder {
            pid: std::process::id(),
            host: hostname(),
            user: os_user(),
            command: command.to_string(),
            started_at: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {} (user {}, `{}`, since {})",
            self.pid, self.host, self.user, self.command, self.started_at
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the {lock} is held by {holder}; waited {waited:?}. Wait for it to finish, or pass a longer \
         --lock-timeout"
    )]
    Held {
        lock: String,
        holder: Box<Holder>,
        waited: Duration,
    },
    #[error(
        "the {lock} is held by another process (it did not say who); waited {waited:?}. Try again, or \
         pass a longer --lock-timeout"
    )]
    HeldUnknown { lock: String, waited: Duration },
    #[error("lock file {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// A held lock; released when dropped (and by the kernel if the process dies).
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
    /// Set when the lock file named a holder that no longer held it (it crashed or was killed).
    pub took_over_from: Option<Holder>,
}

impl Lock {
    /// Takes the lock at `path`, waiting up to `timeout` for a live holder. `on_wait` is called once,
    /// with the holder, when the lock is busy at the first attempt (to tell the user why we wait).
    pub fn acquire(
        path: &Path,
        command: &str,
        timeout: Duration,
        mut on_wait: impl FnMut(Option<&Holder>),
    ) -> Result<Lock, LockError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| LockError::Io(dir.to_path_buf(), e))?;
        }
        let io = |e| LockError::Io(path.to_path_buf(), e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let holder = read_holder(&mut file);
                    if !told {
                        on_wait(holder.as_ref());
                        told = true;
                    }
                    let waited = started.elapsed();
                    if waited >= timeout {
                        return Err(match holder {
                            Some(h) => LockError::Held {
                                lock: lock_name(path),
                                holder: Box::new(h),
                                waited: round(waited),
                            },
                            None => LockError::HeldUnknown {
                                lock: lock_name(path),
                                waited: round(waited),
                            },
                        });
                    }
                    std::thread::sleep(pause.min(timeout - waited));
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        // We hold it. Whatever the file says is a previous holder that ended without cleaning up.
        let took_over_from = read_holder(&mut file);
        if let Some(h) = &took_over_from {
            tracing::warn!(holder = %h, lock = %lock_name(path), "took over a stale lock: its holder is gone");
        }
        let me = Holder::current(command);
        let text = serde_json::to_string(&me).expect("holder serializes");
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(Lock {
            file,
            path: path.to_path_buf(),
            took_over_from,
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Empty the file first so nobody mistakes us for a crashed holder, then unlock.
        if let Err(e) = self.file.set_len(0) {
            tracing::debug!(path = %self.path.display(), error = %e, "clearing the state lock file");
        }
        let _ = self.file.unlock();
    }
}

/// "state lock" for `state.lock`, "lock of source shop" for `source-shop.lock`.
fn lock_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.split_once('-') {
        Some((kind, name)) => format!("lock of {kind} {name}"),
        None => format!("{stem} lock"),
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}

/// The machine's host name, for lock holders and logs.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The OS user running this process, as recorded in apply_log and audit_log: `$USER` (or `$LOGNAME`),
/// else the name of the process's uid in /etc/passwd (containers and CI often set neither).
pub fn os_user() -> String {
    if let Some(name) = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
    {
        return name;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(uid) = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
    else {
        return "unknown".into();
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == uid)
        .map_or_else(|| format!("uid {uid}"), |f| f[0].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_in_process_times_out_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.lock");
        let first = Lock::acquire(&path, "apply", Duration::ZERO, |_| {}).unwrap();
        assert!(first.took_over_from.is_none());
        let mut waited_for = None;
        let err = Lock::acquire(&path, "apply", Duration::from_millis(100), |h| {
            waited_for = h.cloned()
        })
        .unwrap_err();
        let holder = waited_for.expect("on_wait saw the holder");
        assert_eq!(holder.pid, std::process::id());
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("--lock-timeout"), "{text}");
        drop(first);
        let again = Lock::acquire(&path, "apply", Duration::ZERO, |_| {}).unwrap();
        assert!(
            again.took_over_from.is_none(),
            "a clean release leaves no holder behind"
        );
    }

    #[test]
    fn holder_left_in_an_unlocked_file_is_reported_as_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.lock");
        let ghost = Holder {
            pid: 999_999,
            host: "gone".into(),
            user: "x".into(),
            command: "apply".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
        };
        std::fs::write(&path, serde_json::to_string(&ghost).unwrap()).unwrap();
        let lock = Lock::acquire(&path, "apply", Duration::ZERO, |_| {}).unwrap();
        assert_eq!(lock.took_over_from, Some(ghost));
    }
}

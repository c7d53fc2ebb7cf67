//! The analyst side (docs/analyst.md): a *workspace* is a directory holding a local copy of the
//! Parquet an analyst may read on a `pipeline daemon`, an `analytics.duckdb` of views over it by
//! relative paths (the directory can be moved or synced), the metric definitions, and `AGENTS.md`
//! for AI agents. [`credentials`] keeps logins, [`client`] speaks the daemon's API, [`pull`] brings
//! a workspace up to date, [`database`] builds its DuckDB file, [`agents`] writes AGENTS.md, and
//! [`mcp`] serves all of it to MCP clients over stdio.
//!
//! A layer below `cli` and beside `daemon`: it talks to a daemon over HTTP only and imports only
//! the leaf modules (`quote`, `names`, `timestamp`, `value_json`).

pub mod agents;
pub mod client;
pub mod credentials;
pub mod database;
pub mod mcp;
pub mod pull;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The directory that marks a workspace and holds its bookkeeping.
pub const MARKER: &str = ".pipeline";
const STATE_FILE: &str = "workspace.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("{0}")]
    NotLoggedIn(String),
    #[error("cannot reach {server}: {reason}; the workspace was left as it was")]
    Unreachable { server: String, reason: String },
    #[error("{server} answered {status} to {what}: {message}")]
    Server {
        server: String,
        what: String,
        status: u16,
        message: String,
    },
    #[error(
        "{server} refused the token ({status}): {message}. Log in again with `pipeline login --server {server}`; \
         the workspace was left as it was"
    )]
    Refused {
        server: String,
        status: u16,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("DuckDB: {0}")]
    Duck(#[from] duckdb::Error),
}

impl WorkspaceError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        WorkspaceError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A workspace directory.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
}

impl Workspace {
    /// The workspace at `root` (which may not exist yet).
    pub fn at(root: &Path) -> Workspace {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        Workspace { root }
    }

    /// The workspace `start` is in: `start` or the nearest parent with a `.pipeline/workspace.json`.
    pub fn find(start: &Path) -> Option<Workspace> {
        let start = std::path::absolute(start).ok()?;
        start
            .ancestors()
            .find(|d| d.join(MARKER).join(STATE_FILE).is_file())
            .map(|d| Workspace {
                root: d.to_path_buf(),
            })
    }

    pub fn marker(&self) -> PathBuf {
        self.root.join(MARKER)
    }

    pub fn state_file(&self) -> PathBuf {
        self.marker().join(STATE_FILE)
    }

    pub fn analytics(&self) -> PathBuf {
        self.root.join("analytics.duckdb")
    }

    /// Downloads in progress and verified files waiting to be put in place, named by SHA-256 (so
    /// a pull interrupted by an outage resumes with what it already has).
    pub fn staging(&self) -> PathBuf {
        self.marker().join("staging")
    }

    /// The last manifest the server sent, with its ETag: sent back in `If-None-Match`, so a
    /// server with nothing new answers `304` instead of the whole manifest.
    pub fn manifest_cache(&self) -> PathBuf {
        self.marker().join("manifest.json")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.marker().join("pull.lock")
    }

    /// What the last pull left, or `None` before the first.
    pub fn load(&self) -> Result<Option<LocalState>, WorkspaceError> {
        let path = self.state_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(WorkspaceError::io(&path, e)),
        };
        let state: LocalState = serde_json::from_str(&text).map_err(|e| {
            WorkspaceError::Invalid(format!(
                "{} is damaged ({e}); remove it and pull again",
                path.display()
            ))
        })?;
        Ok(Some(state))
    }

    /// Like [`Workspace::load`], but an error when this is not a workspace yet.
    pub fn require(&self) -> Result<LocalState, WorkspaceError> {
        self.load()?.ok_or_else(|| {
            WorkspaceError::Invalid(format!(
                "{} is not a workspace yet: run `pipeline pull --workspace {}`",
                self.root.display(),
                self.root.display()
            ))
        })
    }

    pub fn save(&self, state: &LocalState) -> Result<(), WorkspaceError> {
        let text = serde_json::to_string_pretty(state).expect("serializes");
        write_aside(&self.state_file(), text.as_bytes())
    }
}

/// Writes `bytes` to `path` through a file beside it and a rename: readers see the old or the new
/// file, never a part.
pub fn write_aside(path: &Path, bytes: &[u8]) -> Result<(), WorkspaceError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| WorkspaceError::io(dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let aside = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&aside).map_err(|e| WorkspaceError::io(&aside, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_data())
        .map_err(|e| WorkspaceError::io(&aside, e))?;
    std::fs::rename(&aside, path).map_err(|e| WorkspaceError::io(path, e))
}

/// What a workspace holds, as of its last pull (`.pipeline/workspace.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocalState {
    pub version: u32,
    pub server: String,
    pub pulled_at: String,
    pub tables: Vec<LocalTable>,
    #[serde(default)]
    pub remote_tables: Vec<RemoteTable>,
    #[serde(default)]
    pub transforms: Vec<TransformDoc>,
    /// The metric definitions as `GET /api/metrics` lists them.
    #[serde(default)]
    pub metrics: Vec<Value>,
}

impl LocalState {
    pub fn new(server: &str) -> LocalState {
        LocalState {
            version: FORMAT_VERSION,
            server: server.to_string(),
            pulled_at: String::new(),
            tables: Vec::new(),
            remote_tables: Vec::new(),
            transforms: Vec::new(),
            metrics: Vec::new(),
        }
    }

    /// The same content, whatever the time of the pull: whether anything needs rebuilding.
    pub fn same_content(&self, other: &LocalState) -> bool {
        let strip = |s: &LocalState| LocalState {
            pulled_at: String::new(),
            ..s.clone()
        };
        strip(self) == strip(other)
    }

    pub fn metric(&self, id: &str) -> Option<&Value> {
        self.metrics.iter().find(|m| m["id"] == id)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Freshness {
    /// When the server last synced the table (RFC 3339), if ever.
    #[serde(default)]
    pub last_sync: Option<String>,
    #[serde(default)]
    pub rows: Option<i64>,
}

/// A downloaded table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocalTable {
    pub name: String,
    pub source: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    #[serde(default)]
    pub freshness: Freshness,
    #[serde(default)]
    pub partitioned: bool,
    pub files: Vec<LocalFile>,
    /// The server's profile of the table in short (servers before issue 17 send none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileSummary>,
}

/// A table's profile in short, as `GET /api/manifest` carries it for AGENTS.md (docs/profile.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProfileSummary {
    pub rows: i64,
    /// When the server profiled it (RFC 3339).
    #[serde(default)]
    pub profiled_at: Option<String>,
    #[serde(default)]
    pub columns: Vec<ColumnSummary>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ColumnSummary {
    pub name: String,
    #[serde(default)]
    pub nulls: i64,
    /// Approximate count of distinct values.
    #[serde(default)]
    pub distinct: Option<i64>,
    #[serde(default)]
    pub min: Option<Value>,
    #[serde(default)]
    pub max: Option<Value>,
    /// The most frequent values of a column with few distinct ones, most frequent first.
    #[serde(default)]
    pub values: Vec<Value>,
}

impl LocalTable {
    /// The table's Parquet, relative to the workspace root (a glob for partitions).
    pub fn relative_scan_path(&self) -> String {
        if self.partitioned {
            format!("data/{}/{}/*.parquet", self.source, self.name)
        } else {
            format!("data/{}/{}.parquet", self.source, self.name)
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size_bytes).sum()
    }
}

/// One downloaded file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocalFile {
    /// Relative to the workspace root, `/`-separated.
    pub path: String,
    pub sha256: String,
    pub size_bytes: u64,
    #[serde(default)]
    pub etag: Option<String>,
}

/// A table whose rows stay at its source: listed, queried with `--server`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RemoteTable {
    pub name: String,
    pub source: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
}

/// A transform the caller may read, with its SQL (a view in the local database when its inputs
/// are all local).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransformDoc {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub inputs: Vec<String>,
    pub sql: String,
}

/// A path segment a server may name (source, table, file): no separators, no `..`, no hidden
/// names, so a manifest can never place a file outside the workspace's `data/`.
pub fn safe_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_a_server_cannot_leave_data() {
        for ok in ["orders", "t_1", "month=2024-01.parquet", "a-b.parquet"] {
            assert!(safe_segment(ok), "{ok}");
        }
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "../x", "x y", "é"] {
            assert!(!safe_segment(bad), "{bad}");
        }
    }

    #[test]
    fn a_workspace_is_found_from_below_and_round_trips_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::at(dir.path());
        assert!(ws.load().unwrap().is_none());
        assert!(ws
            .require()
            .unwrap_err()
            .to_string()
            .contains("pipeline pull"));
        let mut st = LocalState::new("http://x");
        st.pulled_at = "2026-01-01T00:00:00.000Z".into();
        ws.save(&st).unwrap();
        let deep = dir.path().join("data/shop");
        std::fs::create_dir_all(&deep).unwrap();
        let found = Workspace::find(&deep).unwrap();
        assert_eq!(found.root, ws.root);
        let back = found.load().unwrap().unwrap();
        assert_eq!(back, st);
        let later = LocalState {
            pulled_at: "2027-01-01T00:00:00.000Z".into(),
            ..st.clone()
        };
        assert!(later.same_content(&st));
    }
}

//! Where `pipeline login` keeps API tokens: `credentials.toml` in the user's config directory
//! (`$PIPELINE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/pipeline`, else `~/.config/pipeline`), one entry per
//! server and the server used by default. The file is created with mode 0600 inside a 0700
//! directory, written aside and renamed, and a token never appears in a message or a log line.

use super::WorkspaceError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

/// The environment variable that overrides the stored token (CI, agents in containers).
pub const TOKEN_ENV: &str = "PIPELINE_TOKEN";
/// The environment variable that names the server when no `--server` is given.
pub const SERVER_ENV: &str = "PIPELINE_SERVER";

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    /// The server of the last login: used when a command names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default: Option<String>,
    #[serde(default)]
    servers: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    logged_in_at: Option<String>,
}

/// A server and the token to use with it.
#[derive(Clone)]
pub struct Login {
    pub server: String,
    pub token: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Login")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The user's config directory for pipeline.
pub fn config_dir() -> Result<PathBuf, WorkspaceError> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("PIPELINE_CONFIG_DIR") {
        return Ok(d);
    }
    if let Some(d) = var("XDG_CONFIG_HOME") {
        return Ok(d.join("pipeline"));
    }
    var("HOME")
        .map(|h| h.join(".config").join("pipeline"))
        .ok_or_else(|| {
            WorkspaceError::Invalid(
                "no config directory: set HOME, XDG_CONFIG_HOME or PIPELINE_CONFIG_DIR".into(),
            )
        })
}

pub fn credentials_path() -> Result<PathBuf, WorkspaceError> {
    Ok(config_dir()?.join("credentials.toml"))
}

/// `http://host:port` without a trailing slash; refuses anything but http(s) URLs.
pub fn normalize_server(url: &str) -> Result<String, WorkspaceError> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['?', '#', ' ', '@']) => {
            Ok(url.to_string())
        }
        _ => Err(WorkspaceError::Invalid(format!(
            "`{url}` is not a server URL: write it as http://HOST:PORT or https://HOST"
        ))),
    }
}

fn read_file() -> Result<File, WorkspaceError> {
    read_at(&credentials_path()?)
}

fn read_at(path: &std::path::Path) -> Result<File, WorkspaceError> {
    let path = path.to_path_buf();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(File::default()),
        Err(e) => return Err(WorkspaceError::io(&path, e)),
    };
    if let Ok(meta) = std::fs::metadata(&path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "the credentials file can be read by other users; `chmod 600` it"
            );
        }
    }
    // The parse error may quote the file's text, which holds tokens: say only where it is.
    toml::from_str(&text).map_err(|_| {
        WorkspaceError::Invalid(format!(
            "{} is not valid TOML; remove it and log in again",
            path.display()
        ))
    })
}

fn write_file(file: &File) -> Result<PathBuf, WorkspaceError> {
    write_at(&credentials_path()?, file)
}

fn write_at(path: &std::path::Path, file: &File) -> Result<PathBuf, WorkspaceError> {
    let path = path.to_path_buf();
    let dir = path.parent().expect("a file in a directory").to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|e| WorkspaceError::io(&dir, e))?;
    // Only when we made it private do we keep it so; an existing directory is the user's choice.
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    let text = toml::to_string(file).map_err(|e| WorkspaceError::Invalid(e.to_string()))?;
    let aside = dir.join(format!(".credentials.toml.{}", std::process::id()));
    let _ = std::fs::remove_file(&aside);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&aside)
        .map_err(|e| WorkspaceError::io(&aside, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| WorkspaceError::io(&aside, e))?;
    std::fs::rename(&aside, &path).map_err(|e| WorkspaceError::io(&path, e))?;
    Ok(path)
}

/// Stores `token` for `server` and makes it the default server; the file's path.
pub fn store(server: &str, token: &str) -> Result<PathBuf, WorkspaceError> {
    let mut file = read_file()?;
    file.servers.insert(
        server.to_string(),
        Entry {
            token: token.to_string(),
            logged_in_at: Some(crate::timestamp::rfc3339(chrono::Utc::now())),
        },
    );
    file.default = Some(server.to_string());
    write_file(&file)
}

/// Forgets the token of `server` (default: the default server). The server forgotten, if any.
pub fn forget(server: Option<&str>) -> Result<Option<String>, WorkspaceError> {
    let mut file = read_file()?;
    let Some(server) = server.map(String::from).or_else(|| file.default.clone()) else {
        return Ok(None);
    };
    let gone = file.servers.remove(&server).is_some();
    if file.default.as_deref() == Some(server.as_str()) {
        file.default = file.servers.keys().next().cloned();
    }
    if gone {
        write_file(&file)?;
    }
    Ok(gone.then_some(server))
}

/// The server to talk to and its token: `server` (or `$PIPELINE_SERVER`, or the default login),
/// with `$PIPELINE_TOKEN` or the stored token.
pub fn resolve(server: Option<&str>) -> Result<Login, WorkspaceError> {
    let env_server = std::env::var(SERVER_ENV).ok().filter(|s| !s.is_empty());
    let file = read_file()?;
    let server = match server.map(String::from).or(env_server) {
        Some(s) => normalize_server(&s)?,
        None => file.default.clone().ok_or_else(|| {
            WorkspaceError::NotLoggedIn(
                "no server: run `pipeline login --server URL` first (or pass --server)".into(),
            )
        })?,
    };
    if let Some(token) = std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return Ok(Login {
            server,
            token: token.trim().to_string(),
        });
    }
    match file.servers.get(&server) {
        Some(e) => Ok(Login {
            server,
            token: e.token.clone(),
        }),
        None => Err(WorkspaceError::NotLoggedIn(format!(
            "not logged in to {server}: run `pipeline login --server {server}` (or set {TOKEN_ENV})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_normalized_and_checked() {
        assert_eq!(
            normalize_server(" http://127.0.0.1:8080/ ").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_server("https://data.example.com").unwrap(),
            "https://data.example.com"
        );
        for bad in [
            "127.0.0.1:8080",
            "ftp://x",
            "http://",
            "http://u:p@host",
            "http://h?x=1",
        ] {
            assert!(normalize_server(bad).is_err(), "{bad}");
        }
    }

    /// The file is private (0600), round-trips, and a damaged one is reported without its text.
    #[test]
    fn the_credentials_file_is_private_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/credentials.toml");
        let mut file = File::default();
        file.servers.insert(
            "http://a".into(),
            Entry {
                token: "secret-token-1".into(),
                logged_in_at: None,
            },
        );
        file.default = Some("http://a".into());
        write_at(&path, &file).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = read_at(&path).unwrap();
        assert_eq!(back.default.as_deref(), Some("http://a"));
        assert_eq!(back.servers["http://a"].token, "secret-token-1");
        std::fs::write(&path, "token = \"secret-token-1\"\n[[[").unwrap();
        let err = read_at(&path).err().unwrap().to_string();
        assert!(!err.contains("secret-token-1"), "{err}");
        assert!(err.contains("not valid TOML"), "{err}");
        let login = Login {
            server: "http://a".into(),
            token: "secret-token-1".into(),
        };
        assert!(!format!("{login:?}").contains("secret"));
    }
}

//! The daemon's API as the analyst side uses it (`/api/manifest`, `/api/data/…`, `/api/metrics`,
//! `/api/query`), over ureq with a shared connection pool. The token goes only in the
//! `Authorization` header; errors name the server and the route, never the token.

use super::credentials::Login;
use super::WorkspaceError;
use serde::Deserialize;
use serde_json::Value;
use sha2::Digest;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

pub struct Client {
    login: Login,
    agent: ureq::Agent,
}

/// `GET /api/manifest`, as far as the analyst side reads it.
#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub tables: Vec<ManifestTable>,
    #[serde(default)]
    pub remote_tables: Vec<ManifestRemote>,
    #[serde(default)]
    pub transforms: Vec<ManifestTransform>,
}

#[derive(Debug, Deserialize)]
pub struct ManifestTable {
    pub name: String,
    pub source: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub partitioned: bool,
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    #[serde(default)]
    pub freshness: super::Freshness,
    pub files: Vec<ManifestFile>,
    #[serde(default)]
    pub profile: Option<super::ProfileSummary>,
}

#[derive(Debug, Deserialize)]
pub struct ManifestFile {
    pub file: String,
    pub size_bytes: u64,
    #[serde(default)]
    pub etag: Option<String>,
    /// Servers before issue 17 did not send it; the pull then refuses (it could not verify).
    #[serde(default)]
    pub sha256: Option<String>,
    pub url: String,
}

#[derive(Debug, Deserialize)]
pub struct ManifestRemote {
    pub name: String,
    pub source: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub struct ManifestTransform {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub inputs: Vec<String>,
    pub sql: String,
}

/// `POST /api/query`'s answer.
#[derive(Debug, Deserialize)]
pub struct QueryAnswer {
    pub columns: Vec<QueryColumn>,
    pub rows: Vec<Vec<Value>>,
    #[serde(default)]
    pub truncated: bool,
    #[serde(default)]
    pub truncated_by: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct QueryColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

impl Client {
    pub fn new(login: Login) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(300))
            .timeout_write(Duration::from_secs(60))
            .max_idle_connections_per_host(32)
            .build();
        Client { login, agent }
    }

    pub fn server(&self) -> &str {
        &self.login.server
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        self.agent
            .request(method, &format!("{}{path}", self.login.server))
            .set("Authorization", &format!("Bearer {}", self.login.token))
            .set(
                "User-Agent",
                concat!("pipeline/", env!("CARGO_PKG_VERSION")),
            )
    }

    fn error(&self, what: &str, e: ureq::Error) -> WorkspaceError {
        let server = self.login.server.clone();
        match e {
            ureq::Error::Status(status, resp) => {
                let text = resp.into_string().unwrap_or_default();
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    // The daemon's error body: {"error": {"code", "message", "request_id"}}.
                    .and_then(|v| v["error"]["message"].as_str().map(String::from))
                    .unwrap_or_else(|| text.chars().take(300).collect());
                if status == 401 {
                    WorkspaceError::Refused {
                        server,
                        status,
                        message,
                    }
                } else {
                    WorkspaceError::Server {
                        server,
                        what: what.to_string(),
                        status,
                        message,
                    }
                }
            }
            ureq::Error::Transport(t) => WorkspaceError::Unreachable {
                server,
                reason: t
                    .message()
                    .map(String::from)
                    .unwrap_or_else(|| t.kind().to_string()),
            },
        }
    }

    fn get_json(&self, path: &str) -> Result<Value, WorkspaceError> {
        let what = format!("GET {path}");
        let resp = self
            .request("GET", path)
            .call()
            .map_err(|e| self.error(&what, e))?;
        resp.into_json().map_err(|e| WorkspaceError::Unreachable {
            server: self.login.server.clone(),
            reason: format!("{what}: the answer is not JSON ({e})"),
        })
    }

    /// Checks the token: an authenticated request that costs the server nothing.
    pub fn verify(&self) -> Result<(), WorkspaceError> {
        self.get_json("/api/metrics").map(|_| ())
    }

    /// `GET /api/manifest`, revalidating the copy kept in `cache` (its first line the ETag, the
    /// rest the body): a server with nothing new answers `304` and the copy is read instead. The
    /// copy is only a cache: one that is missing or unreadable means a full answer, written anew.
    /// `None`: no copy is read or written.
    /// Also says whether the server answered `304` (the kept copy was used).
    pub fn manifest(&self, cache: Option<&Path>) -> Result<(Manifest, bool), WorkspaceError> {
        const PATH: &str = "/api/manifest";
        let what = format!("GET {PATH}");
        let kept = cache
            .and_then(|c| std::fs::read_to_string(c).ok())
            .and_then(|text| {
                let (tag, body) = text.split_once('\n')?;
                Some((tag.to_string(), body.to_string()))
            });
        let mut request = self.request("GET", PATH);
        if let Some((tag, _)) = &kept {
            request = request.set("If-None-Match", tag);
        }
        let resp = request.call().map_err(|e| self.error(&what, e))?;
        let not_modified = resp.status() == 304 && kept.is_some();
        let body = match (resp.status(), kept) {
            (304, Some((_, body))) => body,
            _ => {
                let tag = resp.header("ETag").map(String::from);
                let body = resp
                    .into_string()
                    .map_err(|e| WorkspaceError::Unreachable {
                        server: self.login.server.clone(),
                        reason: format!("{what}: the answer broke off ({e})"),
                    })?;
                if let (Some(cache), Some(tag)) = (cache, tag.filter(|t| !t.contains('\n'))) {
                    // Best effort: without the copy the next pull asks for the whole manifest.
                    let _ = super::write_aside(cache, format!("{tag}\n{body}").as_bytes());
                }
                body
            }
        };
        let manifest = serde_json::from_str(&body).map_err(|e| {
            if let Some(cache) = cache {
                let _ = std::fs::remove_file(cache);
            }
            WorkspaceError::Invalid(format!(
                "{}: {what} answered something this version does not read ({e})",
                self.login.server
            ))
        })?;
        Ok((manifest, not_modified))
    }

    pub fn metrics(&self) -> Result<Vec<Value>, WorkspaceError> {
        let v = self.get_json("/api/metrics")?;
        Ok(v["metrics"].as_array().cloned().unwrap_or_default())
    }

    pub fn query(&self, sql: &str, max_rows: Option<usize>) -> Result<QueryAnswer, WorkspaceError> {
        let mut body = serde_json::json!({ "sql": sql });
        if let Some(n) = max_rows {
            body["max_rows"] = n.into();
        }
        let resp = self
            .request("POST", "/api/query")
            .send_json(body)
            .map_err(|e| self.error("the query", e))?;
        resp.into_json().map_err(|e| WorkspaceError::Unreachable {
            server: self.login.server.clone(),
            reason: format!("the query's answer is not JSON ({e})"),
        })
    }

    /// Downloads `url` into `dest` (created), checking it has `size` bytes and SHA-256 `sha256`;
    /// `dest` is removed when it does not. Returns the bytes written.
    pub fn download(
        &self,
        url: &str,
        dest: &Path,
        size: u64,
        sha256: &str,
        progress: &dyn Fn(u64),
    ) -> Result<u64, WorkspaceError> {
        let what = format!("GET {url}");
        let resp = self
            .request("GET", url)
            .call()
            .map_err(|e| self.error(&what, e))?;
        let result = (|| {
            let mut file = std::fs::File::create(dest).map_err(|e| WorkspaceError::io(dest, e))?;
            let mut reader = resp.into_reader();
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 18];
            let mut written = 0u64;
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(WorkspaceError::Unreachable {
                            server: self.login.server.clone(),
                            reason: format!("{what}: the download broke off ({e})"),
                        })
                    }
                };
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n])
                    .map_err(|e| WorkspaceError::io(dest, e))?;
                written += n as u64;
                progress(n as u64);
            }
            file.sync_data().map_err(|e| WorkspaceError::io(dest, e))?;
            let got: String = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if written != size || got != sha256 {
                return Err(WorkspaceError::Invalid(format!(
                    "{what}: got {written} bytes with SHA-256 {got}, the manifest said {size} bytes \
                     with {sha256} (the file changed on the server meanwhile?); pull again"
                )));
            }
            Ok(written)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        result
    }
}

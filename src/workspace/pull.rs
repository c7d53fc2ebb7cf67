//! `pipeline pull`: bring a workspace up to date with what the caller may read on the server.
//!
//! Order of work, so that a failure at any point leaves the workspace as it was:
//! 1. read the manifest and the metric definitions (nothing local is touched yet; an outage or a
//!    revoked token ends the pull here);
//! 2. compare each file's SHA-256 with the one recorded at the last pull (and that the file is
//!    still there with its size): only new and changed files are fetched;
//! 3. download them in parallel (bounded) into `.pipeline/staging/<sha256>`, each verified
//!    against the manifest's size and hash before it counts; a verified file survives a failed
//!    pull, so the next one resumes;
//! 4. only when every download succeeded: rename the files into `data/`, build
//!    `analytics.duckdb` aside and rename it, write AGENTS.md, remove files no longer readable,
//!    and record the new state.

use super::client::{Client, Manifest};
use super::{
    agents, database, safe_segment, LocalFile, LocalState, LocalTable, RemoteTable, TransformDoc,
    Workspace, WorkspaceError,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub dry_run: bool,
    /// Downloads at once.
    pub concurrency: usize,
    /// Show a progress bar on stderr (a TTY).
    pub progress: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            dry_run: false,
            concurrency: 8,
            progress: false,
        }
    }
}

/// What a pull did (or, with `--dry-run`, would do).
#[derive(Debug, Serialize)]
pub struct PullReport {
    pub server: String,
    pub workspace: String,
    pub dry_run: bool,
    /// Tables downloaded (local copies).
    pub tables: usize,
    pub remote_tables: Vec<String>,
    /// The server answered the manifest with `304 Not Modified`: nothing you may read changed
    /// there since the last pull (the copy kept in `.pipeline/manifest.json` was used).
    pub manifest_unchanged: bool,
    pub transfers: Vec<Transfer>,
    /// Files removed (relative paths): their tables are gone or no longer readable.
    pub removed: Vec<String>,
    pub unchanged_files: usize,
    pub bytes: u64,
    /// Whether analytics.duckdb and AGENTS.md were rewritten.
    pub rebuilt: bool,
    /// Transforms that are not views in the local database, with the reason.
    pub notes: Vec<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Transfer {
    pub table: String,
    pub path: String,
    pub size_bytes: u64,
    /// `new`, `changed` or `missing` (recorded but gone or altered locally).
    pub reason: &'static str,
    #[serde(skip)]
    url: String,
    #[serde(skip)]
    sha256: String,
}

/// The state the manifest describes, and the download URL of each path.
fn desired(
    server: &str,
    manifest: Manifest,
    metrics: Vec<serde_json::Value>,
) -> Result<(LocalState, BTreeMap<String, String>), WorkspaceError> {
    let mut state = LocalState::new(server);
    let mut urls = BTreeMap::new();
    let bad = |what: &str| {
        WorkspaceError::Invalid(format!(
            "the manifest names {what}, which is not a safe file name; refusing to write it"
        ))
    };
    for t in manifest.tables {
        if !safe_segment(&t.source) || !safe_segment(&t.name) {
            return Err(bad(&format!("table `{}.{}`", t.source, t.name)));
        }
        let mut files = Vec::new();
        for f in t.files {
            if !safe_segment(&f.file) || !f.file.ends_with(".parquet") {
                return Err(bad(&format!("file `{}`", f.file)));
            }
            let Some(sha) = f.sha256.filter(|s| s.len() == 64) else {
                return Err(WorkspaceError::Invalid(format!(
                    "{server}'s manifest has no SHA-256 for the files of `{}`: the server is older than \
                     this client; upgrade it to pull (files could not be verified)",
                    t.name
                )));
            };
            let path = if t.partitioned {
                format!("data/{}/{}/{}", t.source, t.name, f.file)
            } else {
                format!("data/{}/{}.parquet", t.source, t.name)
            };
            urls.insert(path.clone(), f.url);
            files.push(LocalFile {
                path,
                sha256: sha,
                size_bytes: f.size_bytes,
                etag: f.etag,
            });
        }
        state.tables.push(LocalTable {
            name: t.name,
            source: t.source,
            description: t.description,
            columns: t.columns,
            freshness: t.freshness,
            partitioned: t.partitioned,
            files,
            profile: t.profile,
        });
    }
    state.tables.sort_by(|a, b| a.name.cmp(&b.name));
    state.remote_tables = manifest
        .remote_tables
        .into_iter()
        .map(|r| RemoteTable {
            name: r.name,
            source: r.source,
            description: r.description,
            columns: r.columns,
        })
        .collect();
    state.remote_tables.sort_by(|a, b| a.name.cmp(&b.name));
    state.transforms = manifest
        .transforms
        .into_iter()
        .map(|t| TransformDoc {
            name: t.name,
            description: t.description,
            inputs: t.inputs,
            sql: t.sql,
        })
        .collect();
    state.transforms.sort_by(|a, b| a.name.cmp(&b.name));
    let mut metrics = metrics;
    metrics.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    state.metrics = metrics;
    Ok((state, urls))
}

pub fn pull(
    ws: &Workspace,
    client: &Client,
    opts: &PullOptions,
) -> Result<PullReport, WorkspaceError> {
    let started = Instant::now();
    // 1. Everything from the server first.
    // A dry run in a directory that is no workspace yet leaves nothing behind, not even the copy.
    let cache = ws.manifest_cache();
    let keep_copy = !opts.dry_run || ws.marker().is_dir();
    let (manifest, manifest_unchanged) = client.manifest(keep_copy.then_some(cache.as_path()))?;
    let metrics = client.metrics()?;
    let (mut want, urls) = desired(client.server(), manifest, metrics)?;

    let _lock = if opts.dry_run {
        None
    } else {
        Some(
            crate::fslock::Lock::acquire(&ws.lock_file(), "pull", Duration::from_secs(600), |_| {
                tracing::warn!("another pull is running in this workspace; waiting for it")
            })
            .map_err(|e| WorkspaceError::Invalid(e.to_string()))?,
        )
    };
    let before = ws.load()?;
    if let Some(b) = &before {
        if b.server != want.server {
            return Err(WorkspaceError::Invalid(format!(
                "{} is a workspace of {}, not {}: pull it from its own server, or use another directory",
                ws.root.display(),
                b.server,
                want.server
            )));
        }
    }

    // 2. What changed.
    let had: BTreeMap<&str, &LocalFile> = before
        .iter()
        .flat_map(|b| b.tables.iter().flat_map(|t| t.files.iter()))
        .map(|f| (f.path.as_str(), f))
        .collect();
    let mut transfers = Vec::new();
    let mut unchanged = 0usize;
    for t in &want.tables {
        for f in &t.files {
            let reason = match had.get(f.path.as_str()) {
                None => Some("new"),
                Some(old) if old.sha256 != f.sha256 => Some("changed"),
                Some(_) => {
                    let len = std::fs::metadata(ws.root.join(&f.path)).map(|m| m.len());
                    (len.ok() != Some(f.size_bytes)).then_some("missing")
                }
            };
            match reason {
                Some(reason) => transfers.push(Transfer {
                    table: t.name.clone(),
                    path: f.path.clone(),
                    size_bytes: f.size_bytes,
                    reason,
                    url: urls[&f.path].clone(),
                    sha256: f.sha256.clone(),
                }),
                None => unchanged += 1,
            }
        }
    }
    let keep: BTreeSet<&str> = want
        .tables
        .iter()
        .flat_map(|t| t.files.iter().map(|f| f.path.as_str()))
        .collect();
    let removed: Vec<String> = had
        .keys()
        .filter(|p| !keep.contains(*p))
        .map(|p| p.to_string())
        .collect();
    let bytes: u64 = transfers.iter().map(|t| t.size_bytes).sum();
    let complete = ws.analytics().is_file() && ws.root.join(agents::AGENTS_FILE).is_file();
    let same = before.as_ref().is_some_and(|b| b.same_content(&want));
    let rebuild = !(transfers.is_empty() && removed.is_empty() && same && complete);
    let mut report = PullReport {
        server: want.server.clone(),
        workspace: ws.root.display().to_string(),
        dry_run: opts.dry_run,
        tables: want.tables.len(),
        remote_tables: want.remote_tables.iter().map(|r| r.name.clone()).collect(),
        manifest_unchanged,
        transfers,
        removed,
        unchanged_files: unchanged,
        bytes,
        rebuilt: rebuild,
        notes: Vec::new(),
        duration_ms: 0,
    };
    if opts.dry_run || !rebuild {
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }

    // 3. Downloads, verified, into staging.
    let staging = ws.staging();
    std::fs::create_dir_all(&staging).map_err(|e| WorkspaceError::io(&staging, e))?;
    download_all(client, &staging, &report.transfers, opts)?;

    // 4. Into place.
    let mut placed: BTreeMap<&str, PathBuf> = BTreeMap::new();
    for t in &report.transfers {
        let dest = ws.root.join(&t.path);
        let dir = dest.parent().expect("under data/");
        std::fs::create_dir_all(dir).map_err(|e| WorkspaceError::io(dir, e))?;
        let staged = staging.join(format!("{}.parquet", t.sha256));
        match placed.get(t.sha256.as_str()) {
            // Two files with the same bytes: the staged copy went to the first.
            Some(first) => {
                let aside = dir.join(format!(".{}.tmp", t.sha256));
                std::fs::copy(first, &aside).map_err(|e| WorkspaceError::io(&aside, e))?;
                std::fs::rename(&aside, &dest).map_err(|e| WorkspaceError::io(&dest, e))?;
            }
            None => {
                std::fs::rename(&staged, &dest).map_err(|e| WorkspaceError::io(&dest, e))?;
                placed.insert(&t.sha256, dest.clone());
            }
        }
    }
    want.pulled_at = crate::timestamp::rfc3339(chrono::Utc::now());
    report.notes = database::build(ws, &want)?;
    agents::write(ws, &want)?;
    for p in &report.removed {
        let path = ws.root.join(p);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(WorkspaceError::io(&path, e)),
        }
        // Empty table and source directories go too (remove_dir refuses non-empty ones).
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(ws.root.join("data")) && *d != ws.root) {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
    ws.save(&want)?;
    let _ = std::fs::remove_dir_all(&staging);
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Downloads every transfer into `staging/<sha256>.parquet` with `opts.concurrency` workers; a
/// file already staged by an earlier, interrupted pull is kept (it was verified before it got
/// its name). The first failure stops the workers and is returned.
fn download_all(
    client: &Client,
    staging: &Path,
    transfers: &[Transfer],
    opts: &PullOptions,
) -> Result<(), WorkspaceError> {
    let total: u64 = transfers.iter().map(|t| t.size_bytes).sum();
    let bar = (opts.progress && !transfers.is_empty()).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} {bytes_per_sec} {wide_bar} {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<WorkspaceError>> = Mutex::new(None);
    let workers = opts.concurrency.clamp(1, 64).min(transfers.len().max(1));
    let tick = |n: u64| {
        if let Some(b) = &bar {
            b.inc(n)
        }
    };
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(t) = transfers.get(i) else { return };
                let staged = staging.join(format!("{}.parquet", t.sha256));
                let ok = std::fs::metadata(&staged).is_ok_and(|m| m.len() == t.size_bytes);
                if ok {
                    tick(t.size_bytes);
                    continue;
                }
                let part = staging.join(format!("{}.{i}.part", t.sha256));
                let result = client
                    .download(&t.url, &part, t.size_bytes, &t.sha256, &tick)
                    .and_then(|_| {
                        std::fs::rename(&part, &staged).map_err(|e| WorkspaceError::io(&staged, e))
                    });
                if let Err(e) = result {
                    stop.store(true, Ordering::Relaxed);
                    let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                    f.get_or_insert(e);
                    return;
                }
            });
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

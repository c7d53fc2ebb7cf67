//! `GET /api/manifest` and `GET /api/data/{table}`: the Parquet behind the tables a caller may read,
//! for analysts who keep a local copy (DESIGN.md §10).
//!
//! Each file has a strong ETag made of its inode, size and modification time: extracts are written
//! aside and renamed into place, so any rewrite changes the inode and a client revalidating with
//! `If-None-Match` gets `304` until then. A download streams from a handle opened before the first
//! byte is sent, so a sync that replaces the file meanwhile never produces a torn copy.

use super::response::{
    Manifest, ManifestFile, ManifestFreshness, ManifestProfile, ManifestRemote, ManifestTable,
    ManifestTransform,
};
use super::{blocking, forbidden_table, ApiError, ApiResult, AppState, Auth};
use crate::registry::registered::TableDef;
use crate::spec::model::QueryMode;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::path::PathBuf;

/// The Parquet files of a local table: one file (`false`), or one per partition (`true`, sorted).
fn files_of(extracts: &std::path::Path, t: &TableDef) -> (bool, Vec<(String, PathBuf)>) {
    let data = extracts.join(&t.source).join("data");
    let single = data.join(format!("{}.parquet", t.name));
    if single.is_file() {
        return (false, vec![(format!("{}.parquet", t.name), single)]);
    }
    let mut parts: Vec<(String, PathBuf)> = std::fs::read_dir(data.join(&t.name))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            (name.ends_with(".parquet") && e.path().is_file()).then(|| (name, e.path()))
        })
        .collect();
    parts.sort();
    (true, parts)
}

fn etag(meta: &std::fs::Metadata) -> String {
    let id = crate::files::FileId::from_metadata(meta);
    format!("\"{:x}-{:x}-{:x}\"", id.ino, id.len, id.mtime_ns)
}

#[derive(serde::Deserialize)]
pub struct FileParam {
    file: Option<String>,
}

/// Size, ETag and SHA-256 of a published file, all of the one version an open handle holds.
///
/// Hashes are remembered per path with the ETag they were computed for: files are replaced by
/// rename, never rewritten in place, so an unchanged ETag means unchanged bytes, and each version
/// is hashed once, not once per manifest request.
fn describe(path: &std::path::Path) -> std::io::Result<(u64, String, String)> {
    use sha2::Digest;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static KNOWN: OnceLock<Mutex<HashMap<PathBuf, (String, String)>>> = OnceLock::new();
    let known = KNOWN.get_or_init(Default::default);
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let tag = etag(&meta);
    let cached = known.lock().ok().and_then(|m| {
        m.get(path)
            .filter(|(t, _)| *t == tag)
            .map(|(_, h)| h.clone())
    });
    if let Some(hex) = cached {
        return Ok((meta.len(), tag, hex));
    }
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if let Ok(mut m) = known.lock() {
        m.insert(path.to_path_buf(), (tag.clone(), hex.clone()));
    }
    Ok((meta.len(), tag, hex))
}

/// What the manifest reads from the state: each table's last sync and profile. Kept between
/// requests until the state changes ([`crate::daemon::state_cache::Stamped`]): a no-change pull
/// then opens no DuckDB on the server.
#[derive(Default)]
pub struct ManifestState {
    syncs: std::collections::BTreeMap<String, crate::state::report::Synced>,
    profiles: std::collections::BTreeMap<String, ManifestProfile>,
}

fn manifest_state(r: &crate::state::Reader) -> ApiResult<ManifestState> {
    // Only what the manifest shows: the whole status would scan the sync history.
    let syncs = crate::state::report::synced(r).map_err(ApiError::internal)?;
    let profiles = crate::state::profile::all(r)
        .map_err(ApiError::internal)?
        .into_iter()
        .filter_map(|s| {
            let p = serde_json::from_value(s.profile?).ok()?;
            Some((s.table_id, ManifestProfile::of(p, s.profiled_at)))
        })
        .collect();
    Ok(ManifestState { syncs, profiles })
}

/// The caller's readable tables with their files (each with size, ETag, SHA-256 and URL), column
/// documentation and freshness; `remote_tables` (readable, nothing to download) and the readable
/// `transforms` with their SQL, so a local copy can offer the same views (docs/analyst.md).
///
/// The answer has an ETag (a digest of its body): a client that sends it back in `If-None-Match`
/// gets `304 Not Modified` and an empty body while nothing it would see changed.
pub async fn manifest(
    State(shared): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let snapshot = shared.snapshot();
    let extracts = shared.data.extracts();
    blocking(move || {
        let known = shared
            .manifest_state
            .get(&shared.state, manifest_state, ApiError::internal)?;
        let (syncs, profiles) = (&known.syncs, &known.profiles);
        let fresh = |t: &TableDef| {
            let s = syncs.get(&t.id);
            ManifestFreshness {
                last_sync: s.and_then(|s| s.0.clone()),
                rows: s.and_then(|s| s.1),
            }
        };
        let readable: Vec<&TableDef> = snapshot
            .registered
            .tables
            .values()
            .filter(|t| caller.may_read(&t.access))
            .collect();
        let mut tables = Vec::new();
        for t in readable
            .iter()
            .filter(|t| t.query_mode() != QueryMode::Remote)
        {
            let (partitioned, files) = files_of(&extracts, t);
            let mut listed = Vec::new();
            for (name, path) in files {
                // A file replaced or removed meanwhile is left out; the next manifest lists it.
                let Ok((size, tag, sha)) = describe(&path) else {
                    continue;
                };
                let url = if partitioned {
                    format!("/api/data/{}?file={name}", t.name)
                } else {
                    format!("/api/data/{}", t.name)
                };
                listed.push(ManifestFile {
                    file: name,
                    size_bytes: size,
                    etag: tag,
                    sha256: sha,
                    url,
                });
            }
            tables.push(ManifestTable {
                id: t.id.clone(),
                name: t.name.clone(),
                source: t.source.clone(),
                description: t.description.clone(),
                query_mode: t.query_mode().as_str(),
                partitioned,
                columns: t.column_descriptions(),
                freshness: fresh(t),
                files: listed,
                profile: profiles.get(&t.id).cloned(),
            });
        }
        let remote_tables: Vec<ManifestRemote> = readable
            .iter()
            .filter(|t| t.query_mode() == QueryMode::Remote)
            .map(|t| ManifestRemote {
                id: t.id.clone(),
                name: t.name.clone(),
                source: t.source.clone(),
                description: t.description.clone(),
                query_mode: "remote",
                columns: t.column_descriptions(),
                freshness: fresh(t),
            })
            .collect();
        let ok = super::catalog::readable(&snapshot.registered, &caller);
        let transforms: Vec<ManifestTransform> = snapshot
            .registered
            .transforms
            .values()
            .filter(|t| ok.contains(&t.name.to_lowercase()))
            .map(|t| ManifestTransform {
                name: t.name.clone(),
                source: t.source.clone(),
                description: t.description.clone(),
                materialized: t.materialized().as_str(),
                inputs: t.inputs.clone(),
                sql: t.sql.clone(),
            })
            .collect();
        let body = serde_json::to_vec(&Manifest {
            tables,
            remote_tables,
            transforms,
        })
        .map_err(ApiError::internal)?;
        Ok(with_etag(&headers, body))
    })
    .await
}

/// Whether the request's `If-None-Match` names `tag` (or `*`).
fn if_none_match(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|x| x.trim() == tag || x.trim() == "*"))
}

/// `body` as a JSON answer with a strong ETag of its bytes, or `304 Not Modified` when the
/// request's `If-None-Match` names that ETag already.
fn with_etag(headers: &HeaderMap, body: Vec<u8>) -> Response {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(&body);
    let tag: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let tag = format!("\"{tag}\"");
    if if_none_match(headers, &tag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::ETAG, tag),
        ],
        body,
    )
        .into_response()
}

pub async fn data(
    State(shared): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Query(param): Query<FileParam>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let snapshot = shared.snapshot();
    let t = snapshot.registered.table(&name).ok_or_else(|| {
        ApiError::not_found(format!(
            "unknown table `{name}`; GET /api/manifest lists the files you can download"
        ))
    })?;
    if !caller.may_read(&t.access) {
        return Err(forbidden_table(t, &caller));
    }
    if t.query_mode() == QueryMode::Remote {
        return Err(ApiError::bad_request(format!(
            "`{}` is a remote table: its rows stay at the source, there is no file to download",
            t.name
        )));
    }
    let (partitioned, files) = files_of(&shared.data.extracts(), t);
    let chosen = match (&param.file, files.as_slice()) {
        (None, [(_, path)]) if !partitioned => path.clone(),
        (None, []) => {
            return Err(ApiError::not_found(format!(
                "`{}` has no data yet: its first sync has not finished",
                t.name
            )))
        }
        (None, _) => {
            return Err(ApiError::bad_request(format!(
                "`{}` is partitioned into {} files: download each with ?file=NAME (GET /api/manifest lists them)",
                t.name,
                files.len()
            )))
        }
        (Some(f), _) => files
            .iter()
            .find(|(n, _)| n == f)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "`{}` has no file `{f}`; GET /api/manifest lists them",
                    t.name
                ))
            })?,
    };
    let file = tokio::fs::File::open(&chosen).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ApiError::not_found(format!(
                "`{}`'s file went away (a sync replaced or removed it); GET /api/manifest again",
                t.name
            ))
        } else {
            ApiError::internal(format!("cannot open {}: {e}", chosen.display()))
        }
    })?;
    let meta = file.metadata().await.map_err(ApiError::internal)?;
    let tag = etag(&meta);
    if if_none_match(&headers, &tag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    let download = chosen
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("data.parquet")
        .to_string();
    let stream = futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 16];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.apache.parquet".to_string(),
            ),
            (header::CONTENT_LENGTH, meta.len().to_string()),
            (header::ETAG, tag),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}__{download}\"", t.source),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

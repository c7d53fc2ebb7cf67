//! `GET /api/manifest` and `GET /api/data/{table}`: the Parquet behind the tables a caller may read,
//! for analysts who keep a local copy (DESIGN.md §10).
//!
//! Each file has a strong ETag made of its inode, size and modification time: extracts are written
//! aside and renamed into place, so any rewrite changes the inode and a client revalidating with
//! `If-None-Match` gets `304` until then. A download streams from a handle opened before the first
//! byte is sent, so a sync that replaces the file meanwhile never produces a torn copy.

use super::response::{Manifest, ManifestFile, ManifestTable};
use super::{forbidden_table, ApiError, ApiResult, AppState, Auth};
use crate::registry::registered::TableDef;
use crate::spec::model::QueryMode;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::os::unix::fs::MetadataExt;
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
    format!(
        "\"{:x}-{:x}-{:x}\"",
        meta.ino(),
        meta.len(),
        meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
    )
}

#[derive(serde::Deserialize)]
pub struct FileParam {
    file: Option<String>,
}

pub async fn manifest(
    State(shared): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<Manifest>> {
    let snapshot = shared.snapshot();
    let extracts = shared.data.extracts();
    let tables: Vec<ManifestTable> = snapshot
        .registered
        .tables
        .values()
        .filter(|t| caller.may_read(&t.access) && t.query_mode() != QueryMode::Remote)
        .map(|t| {
            let (partitioned, files) = files_of(&extracts, t);
            let files: Vec<ManifestFile> = files
                .into_iter()
                .filter_map(|(name, path)| {
                    // A file renamed away since the listing is simply left out.
                    let meta = path.metadata().ok()?;
                    let url = if partitioned {
                        format!("/api/data/{}?file={name}", t.name)
                    } else {
                        format!("/api/data/{}", t.name)
                    };
                    Some(ManifestFile {
                        size_bytes: meta.len(),
                        etag: etag(&meta),
                        file: name,
                        url,
                    })
                })
                .collect();
            ManifestTable {
                id: t.id.clone(),
                name: t.name.clone(),
                source: t.source.clone(),
                description: t.description.clone(),
                files,
            }
        })
        .collect();
    Ok(Json(Manifest { tables }))
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
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|x| x.trim() == tag || x.trim() == "*"));
    if fresh {
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

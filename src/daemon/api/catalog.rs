//! `GET /api/tables[/{name}]` and `GET /api/metrics[/{category}/{name}]`: what is registered and
//! documented, limited to what the caller may read. Transforms are catalogue entries like tables:
//! listed with their published columns, and answered by `/api/tables/{transform}`.

use super::response::{
    Column, ExtractMeta, HistoryEntry, LastSync, Metric, Metrics, TableDetail, TableInfo,
    TableItem, TableProfileAnswer, Tables, TransformDetail, TransformInfo, TransformItem,
};
use super::{blocking, ApiError, ApiResult, AppState, Auth};
use crate::registry::document::Kind;
use crate::registry::registered::Registered;
use crate::state::auth::{Caller, ADMIN_GROUP};
use crate::state::report::TableStatus;
use crate::state::Reader;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::{BTreeMap, BTreeSet};

/// Lower-cased names of the tables and transforms `caller` may read.
///
/// A transform is readable when it certainly reads nothing else than what the caller may read
/// (fail closed): every input must be a readable table or transform, and its inputs must be
/// certain. Inputs are the lower-cased view names validation resolved, so an input that names no
/// registered table or transform (a record from before that table was removed, a name recorded by
/// another version) cannot be shown to be harmless and makes the transform admin-only, as does
/// `inputs_uncertain` (table functions, catalogue views, parts of the SQL the check cannot resolve).
/// Admins read everything.
pub fn readable(reg: &Registered, caller: &Caller) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = reg
        .tables
        .values()
        .filter(|t| caller.may_read(&t.access))
        .map(|t| t.name.to_lowercase())
        .collect();
    if is_admin(caller) {
        names.extend(reg.transforms.keys().map(|t| t.to_lowercase()));
        return names;
    }
    // Transforms may read transforms: repeat until nothing new becomes readable.
    loop {
        let before = names.len();
        for (name, t) in &reg.transforms {
            let ok = t.inputs_uncertain.is_empty()
                && t.inputs.iter().all(|i| names.contains(&i.to_lowercase()));
            if ok {
                names.insert(name.to_lowercase());
            }
        }
        if names.len() == before {
            return names;
        }
    }
}

fn is_admin(caller: &Caller) -> bool {
    caller.groups.iter().any(|g| g == ADMIN_GROUP)
}

/// Last sync per table id from the state.
fn last_syncs(r: &Reader) -> ApiResult<BTreeMap<String, TableStatus>> {
    Ok(crate::state::report::status(r)
        .map_err(ApiError::internal)?
        .tables
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect())
}

pub async fn tables(State(shared): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Tables>> {
    let snapshot = shared.snapshot();
    let state = shared.state.clone();
    let ok = readable(&snapshot.registered, &caller);
    let shown: Vec<String> = snapshot
        .registered
        .transforms
        .keys()
        .filter(|name| ok.contains(&name.to_lowercase()))
        .cloned()
        .collect();
    let analytics = shared.data.analytics();
    let (syncs, mut published) = blocking(move || {
        let syncs = last_syncs(&state.read().map_err(ApiError::internal)?)?;
        // Columns are a courtesy of the listing: an unreadable published file leaves them out
        // rather than failing the whole catalogue.
        let published = schemas(&analytics, &shown).unwrap_or_else(|e| {
            tracing::warn!("transform columns left out of GET /api/tables: {e}");
            BTreeMap::new()
        });
        Ok((syncs, published))
    })
    .await?;
    let tables: Vec<TableItem> = snapshot
        .registered
        .tables
        .values()
        .filter(|t| caller.may_read(&t.access))
        .map(|t| {
            let s = syncs.get(&t.id);
            TableItem {
                kind: "table",
                table: TableInfo::from(t),
                last_sync: s.and_then(|s| s.last_sync.clone()),
                last_status: s.and_then(|s| s.last_status.clone()),
                rows: s.and_then(|s| s.rows),
                size_bytes: s.and_then(|s| s.size_bytes),
            }
        })
        .collect();
    let transforms: Vec<TransformItem> = snapshot
        .registered
        .transforms
        .values()
        .filter(|t| ok.contains(&t.name.to_lowercase()))
        .map(|t| {
            let columns = published.remove(&t.name.to_lowercase()).unwrap_or_default();
            TransformItem::of(t, columns)
        })
        .collect();
    Ok(Json(Tables { tables, transforms }))
}

/// `GET /api/tables/{name}` for a transform (case-insensitive, as DuckDB resolves names): readable
/// when the caller may read everything it reads ([`readable`]); its columns come from the published
/// analytics.duckdb and its last build from the state.
async fn transform(
    shared: AppState,
    caller: &Caller,
    name: &str,
) -> ApiResult<Option<Json<TransformDetail>>> {
    let snapshot = shared.snapshot();
    let Some(t) = snapshot
        .registered
        .transforms
        .values()
        .find(|t| t.name.eq_ignore_ascii_case(name))
    else {
        return Ok(None);
    };
    if !readable(&snapshot.registered, caller).contains(&t.name.to_lowercase()) {
        return Err(ApiError::forbidden(match t.inputs_uncertain.first() {
            Some(why) => format!(
                "transform `{}` is readable only by admins: the tables it reads cannot be \
                 determined with certainty ({why})",
                t.name
            ),
            None => format!(
                "transform `{}` reads tables you ({}) may not read",
                t.name, caller.user
            ),
        }));
    }
    let t = t.clone();
    let state = shared.state.clone();
    let analytics = shared.data.analytics();
    let view = t.name.clone();
    let (columns, last) = blocking(move || {
        let last = crate::state::downstream::transforms(&state.read().map_err(ApiError::internal)?)
            .map_err(ApiError::internal)?
            .into_iter()
            .find(|s| s.name == view)
            .filter(|s| s.status.is_some())
            .map(TransformInfo::from);
        let columns = schema(&analytics, &view).map_err(ApiError::internal)?;
        Ok((columns, last))
    })
    .await?;
    Ok(Some(Json(TransformDetail {
        sql: t.sql.clone(),
        transform: TransformItem::of(&t, columns),
        state: last,
    })))
}

pub async fn table(
    State(shared): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let snapshot = shared.snapshot();
    let reg = &snapshot.registered;
    let Some(t) = reg.table(&name) else {
        if let Some(detail) = transform(shared.clone(), &caller, &name).await? {
            return Ok(detail.into_response());
        }
        return Err(ApiError::not_found(format!(
            "unknown table or transform `{name}`; GET /api/tables lists the ones you can see"
        )));
    };
    if !caller.may_read(&t.access) {
        return Err(super::forbidden_table(t, &caller));
    }
    let info = TableInfo::from(t);
    let (id, view, source) = (t.id.clone(), t.name.clone(), t.source.clone());
    let docs = t.column_descriptions();
    let state = shared.state.clone();
    let analytics = shared.data.analytics();
    let extracts = shared.data.extracts();
    let (sync, history, columns, meta) = blocking(move || {
        let (syncs, history) = {
            let r = state.read().map_err(ApiError::internal)?;
            let history: Vec<HistoryEntry> = crate::state::report::table_tasks(&r, &id, 10)
                .map_err(ApiError::internal)?
                .into_iter()
                .map(HistoryEntry::from)
                .collect();
            (last_syncs(&r)?, history)
        };
        let sync = syncs.get(&id).map(|s| LastSync {
            last_sync: s.last_sync.clone(),
            status: s.last_status.clone(),
            rows: s.rows,
            size_bytes: s.size_bytes,
            error: s.last_error.clone(),
        });
        let columns = schema(&analytics, &view).map_err(ApiError::internal)?;
        let meta = meta_row(&extracts, &source, &view).map_err(ApiError::internal)?;
        Ok((sync, history, columns, meta))
    })
    .await?;
    Ok(Json(TableDetail {
        table: info,
        columns: Column::documented(columns, &docs),
        meta,
        last_sync: sync,
        history,
    })
    .into_response())
}

/// `GET /api/tables/{name}/profile`: the table's profile (docs/profile.md), for callers who may
/// read the table — a profile shows values (min, max, top values, sample rows). `used_by` lists
/// only the transforms and metrics the caller may see.
pub async fn profile(
    State(shared): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<TableProfileAnswer>> {
    use crate::registry::lineage::{Lineage, NodeKind};
    let snapshot = shared.snapshot();
    let reg = &snapshot.registered;
    let Some(t) = reg.table(&name) else {
        return Err(ApiError::not_found(format!(
            "unknown table `{name}`; GET /api/tables lists the tables you can see"
        )));
    };
    if !caller.may_read(&t.access) {
        return Err(super::forbidden_table(t, &caller));
    }
    let ok = readable(reg, &caller);
    let used_by = Lineage::of(reg)
        .used_by(&t.name)
        .into_iter()
        .filter(|u| match u.kind {
            NodeKind::Transform => ok.contains(&u.name.to_lowercase()),
            NodeKind::Metric => metric_visible(reg, &caller, &ok, &u.name),
            NodeKind::Table => false,
        })
        .collect();
    let id = t.id.clone();
    let state = shared.state.clone();
    let stored = blocking(move || {
        let r = state.read().map_err(ApiError::internal)?;
        crate::state::profile::get(&r, &id).map_err(ApiError::internal)
    })
    .await?;
    Ok(Json(TableProfileAnswer::build(t, stored, used_by)))
}

/// Column names and types of a published view, from the catalogue (no data is read); none before
/// the first publish, or when the view is not in it.
fn schema(analytics: &std::path::Path, view: &str) -> duckdb::Result<Vec<(String, String)>> {
    Ok(schemas(analytics, &[view.to_string()])?
        .remove(&view.to_lowercase())
        .unwrap_or_default())
}

fn schemas(
    analytics: &std::path::Path,
    views: &[String],
) -> duckdb::Result<BTreeMap<String, Vec<(String, String)>>> {
    crate::analytics::published_columns(analytics, views)
}

/// The table's `_meta` entry in its source's extract.duckdb; none before its first extract.
fn meta_row(
    extracts: &std::path::Path,
    source: &str,
    view: &str,
) -> Result<Option<ExtractMeta>, crate::extract_db::ContractError> {
    let Some(dir) = crate::extract_db::ExtractDir::new(extracts, source) else {
        return Ok(None);
    };
    let path = dir.db();
    if !path.is_file() {
        return Ok(None);
    }
    let db_err = |e: duckdb::Error| crate::extract_db::ContractError::Db {
        path: path.clone(),
        message: e.to_string(),
    };
    let conn = duckdb::Connection::open_in_memory().map_err(db_err)?;
    conn.execute_batch(&format!(
        "SET TimeZone = 'UTC'; ATTACH {} AS x (READ_ONLY)",
        crate::quote::path(&path)
    ))
    .map_err(db_err)?;
    let contents = crate::extract_db::read(&conn, "x", &path, false)?;
    Ok(contents
        .meta
        .into_iter()
        .find(|m| m.table_name == view)
        .map(|m| ExtractMeta {
            description: m.description,
            rows: m.rows,
            size_bytes: m.size_bytes,
            extracted_at: m.extracted_at.as_deref().map(utc_text_to_rfc3339),
            query_mode: m.query_mode,
        }))
}

/// `YYYY-MM-DD HH:MM:SS[.f]` (UTC, as `_meta` stores it) as RFC 3339; other text unchanged.
fn utc_text_to_rfc3339(text: &str) -> String {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| crate::timestamp::rfc3339(t.and_utc()))
        .unwrap_or_else(|_| text.to_string())
}

/// Whether a metric's tables are all in `readable` (the caller's, from [`readable`]) and certain;
/// a metric whose tables cannot be determined is for admins only.
pub(super) fn metric_visible(
    reg: &Registered,
    caller: &Caller,
    readable: &BTreeSet<String>,
    id: &str,
) -> bool {
    if is_admin(caller) {
        return true;
    }
    reg.metrics.get(id).is_some_and(|m| {
        m.inputs_uncertain.is_empty()
            && m.tables
                .iter()
                .all(|t| readable.contains(&t.to_lowercase()))
    })
}

fn metric_of(o: &crate::registry::document::Object) -> Metric {
    Metric {
        id: o.id.clone(),
        file: o.file.clone(),
        spec: o.fields().clone(),
    }
}

pub async fn metrics(
    State(shared): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<Metrics>> {
    let snapshot = shared.snapshot();
    let ok = readable(&snapshot.registered, &caller);
    let metrics = snapshot
        .objects
        .values()
        .filter(|o| o.kind == Kind::Metric)
        .filter(|o| metric_visible(&snapshot.registered, &caller, &ok, &o.id))
        .map(metric_of)
        .collect();
    Ok(Json(Metrics { metrics }))
}

pub async fn metric(
    State(shared): State<AppState>,
    Auth(caller): Auth,
    Path((category, name)): Path<(String, String)>,
) -> ApiResult<Json<Metric>> {
    let snapshot = shared.snapshot();
    let id = format!("{category}/{name}");
    let Some(o) = snapshot.objects.get(&(Kind::Metric, id.clone())) else {
        return Err(ApiError::not_found(format!(
            "no metric `{id}`; GET /api/metrics lists them"
        )));
    };
    if !metric_visible(
        &snapshot.registered,
        &caller,
        &readable(&snapshot.registered, &caller),
        &id,
    ) {
        let uncertain = snapshot
            .registered
            .metrics
            .get(&id)
            .and_then(|m| m.inputs_uncertain.first());
        return Err(ApiError::forbidden(match uncertain {
            Some(why) => format!(
                "metric `{id}` is readable only by admins: the tables it reads cannot be \
                 determined with certainty ({why})"
            ),
            None => format!(
                "metric `{id}` reads tables you ({}) may not read",
                caller.user
            ),
        }));
    }
    Ok(Json(metric_of(o)))
}

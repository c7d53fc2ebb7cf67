//! `GET /api/tables[/{name}]` and `GET /api/metrics[/{category}/{name}]`: what is registered and
//! documented, limited to what the caller may read.

use super::{blocking, ApiError, ApiResult, AppState, Auth, RecordedTask};
use crate::registry::document::Kind;
use crate::registry::registered::Registered;
use crate::state::auth::{Caller, ADMIN_GROUP};
use crate::state::Reader;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};
use std::collections::BTreeSet;

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

fn table_json(reg: &Registered, id: &str) -> Value {
    let Some(t) = reg.tables.get(id) else {
        return Value::Null;
    };
    json!({
        "id": t.id,
        "name": t.name,
        "source": t.source,
        "description": t.description,
        "query_mode": t.query_mode().as_str(),
        "sync_mode": t.sync_mode().as_str(),
        "schedule": t.schedule,
        "primary_key": t.primary_key,
        "access": t.access,
        "tags": t.tags,
    })
}

/// Last sync per table id from the state: (last_sync, status, rows, size_bytes, error).
fn last_syncs(
    r: &Reader,
) -> ApiResult<std::collections::BTreeMap<String, crate::state::report::TableStatus>> {
    Ok(crate::state::report::status(r)
        .map_err(ApiError::internal)?
        .tables
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect())
}

pub async fn tables(State(shared): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Value>> {
    let snapshot = shared.snapshot();
    let state = shared.state.clone();
    let syncs = blocking(move || last_syncs(&state.read().map_err(ApiError::internal)?)).await?;
    let list: Vec<Value> = snapshot
        .registered
        .tables
        .values()
        .filter(|t| caller.may_read(&t.access))
        .map(|t| {
            let mut v = table_json(&snapshot.registered, &t.id);
            if let (Some(o), Some(s)) = (v.as_object_mut(), syncs.get(&t.id)) {
                o.insert("last_sync".into(), json!(s.last_sync));
                o.insert("last_status".into(), json!(s.last_status));
                o.insert("rows".into(), json!(s.rows));
                o.insert("size_bytes".into(), json!(s.size_bytes));
            }
            v
        })
        .collect();
    let transforms: Vec<Value> = {
        let ok = readable(&snapshot.registered, &caller);
        snapshot
            .registered
            .transforms
            .values()
            .filter(|t| ok.contains(&t.name.to_lowercase()))
            .map(|t| {
                let mut v = json!({"name": t.name, "source": t.source,
                    "description": t.description, "materialized": t.materialized().as_str(),
                    "inputs": t.inputs});
                if !t.inputs_uncertain.is_empty() {
                    // Only admins see such a transform: say why others do not.
                    v["inputs_uncertain"] = json!(t.inputs_uncertain);
                }
                v
            })
            .collect()
    };
    Ok(Json(json!({"tables": list, "transforms": transforms})))
}

pub async fn table(
    State(shared): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
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
    let mut v = table_json(reg, &t.id);
    let (id, view, source) = (t.id.clone(), t.name.clone(), t.source.clone());
    let docs = t.columns.clone();
    let state = shared.state.clone();
    let analytics = shared.data.analytics();
    let extract = shared.data.extracts().join(&source).join("extract.duckdb");
    let (sync, history, columns, meta) = blocking(move || {
        let (syncs, history) = {
            let r = state.read().map_err(ApiError::internal)?;
            let history: Vec<RecordedTask> = crate::state::report::table_tasks(&r, &id, 10)
                .map_err(ApiError::internal)?
                .into_iter()
                .map(RecordedTask::from)
                .collect();
            (last_syncs(&r)?, history)
        };
        let history = serde_json::to_value(history).map_err(ApiError::internal)?;
        Ok((
            syncs.get(&id).map(|s| {
                json!({"last_sync": s.last_sync, "status": s.last_status, "rows": s.rows,
                       "size_bytes": s.size_bytes, "error": s.last_error})
            }),
            history,
            schema(&analytics, &view),
            meta_row(&extract, &view),
        ))
    })
    .await?;
    let columns: Vec<Value> = columns
        .into_iter()
        .map(|(c, ty)| json!({"name": c, "type": ty, "description": docs.get(&c)}))
        .collect();
    if let Some(o) = v.as_object_mut() {
        o.insert("columns".into(), Value::Array(columns));
        o.insert("meta".into(), meta.unwrap_or(Value::Null));
        o.insert("last_sync".into(), sync.unwrap_or(Value::Null));
        o.insert("history".into(), history);
    }
    Ok(Json(v))
}

/// Column names and types of a published view, from the catalogue (no data is read).
fn schema(analytics: &std::path::Path, view: &str) -> Vec<(String, String)> {
    let read = || -> duckdb::Result<Vec<(String, String)>> {
        let conn = duckdb::Connection::open_in_memory()?;
        conn.execute_batch(&format!(
            "ATTACH {} AS analytics (READ_ONLY)",
            crate::quote::path(analytics)
        ))?;
        let mut stmt = conn.prepare(
            "SELECT column_name, data_type FROM information_schema.columns
             WHERE table_catalog = 'analytics' AND table_schema = 'main' AND lower(table_name) = lower(?)
             ORDER BY ordinal_position",
        )?;
        let rows = stmt
            .query_map([view], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect();
        rows
    };
    if !analytics.is_file() {
        return Vec::new();
    }
    read().unwrap_or_else(|e| {
        tracing::debug!(error = %e, view, "could not read the schema");
        Vec::new()
    })
}

/// The table's `_meta` row in its source's extract.duckdb.
fn meta_row(extract: &std::path::Path, view: &str) -> Option<Value> {
    if !extract.is_file() {
        return None;
    }
    let conn = duckdb::Connection::open_in_memory().ok()?;
    conn.execute_batch(&format!(
        "SET TimeZone = 'UTC'; ATTACH {} AS x (READ_ONLY)",
        crate::quote::path(extract)
    ))
    .ok()?;
    let text: String = conn
        .query_row(
            "SELECT to_json(m)::VARCHAR FROM x._meta m WHERE table_name = ?",
            [view],
            |r| r.get(0),
        )
        .ok()?;
    serde_json::from_str(&text).ok()
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

fn metric_json(o: &crate::registry::document::Object) -> Value {
    let mut v = Value::Object(o.fields().clone());
    if let Some(m) = v.as_object_mut() {
        m.insert("id".into(), json!(o.id));
        m.insert("file".into(), json!(o.file));
    }
    v
}

pub async fn metrics(State(shared): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Value>> {
    let snapshot = shared.snapshot();
    let ok = readable(&snapshot.registered, &caller);
    let list: Vec<Value> = snapshot
        .objects
        .values()
        .filter(|o| o.kind == Kind::Metric)
        .filter(|o| metric_visible(&snapshot.registered, &caller, &ok, &o.id))
        .map(metric_json)
        .collect();
    Ok(Json(json!({"metrics": list})))
}

pub async fn metric(
    State(shared): State<AppState>,
    Auth(caller): Auth,
    Path((category, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(metric_json(o)))
}

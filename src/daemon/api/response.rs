//! The API's answers, one type per shape (docs/api.md documents each). They are built from the
//! registry snapshot and the state's typed rows, never serialised from a database row, so the state
//! schema can change without changing the API. Every time is RFC 3339 in UTC with milliseconds
//! (`crate::timestamp`).

use crate::daemon::runs::{RunView, TaskView};
use crate::daemon::WatcherStatus;
use crate::registry::registered::{TableDef, TransformDef};
use crate::spec::schedule::Freshness;
use crate::state::downstream::{CheckState, TransformState};
use crate::state::report::{self, LastApply, PendingTask, TableStatus, TaskRow};
use serde::Serialize;
use std::collections::BTreeMap;

/// `GET /health`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok` or `shutting_down`.
    pub status: &'static str,
    pub version: &'static str,
    pub uptime_seconds: i64,
}

/// `GET /api/status`: what this daemon serves and how everything the caller may read stands.
#[derive(Debug, Serialize)]
pub struct Status {
    pub instance: String,
    pub version: &'static str,
    pub timezone: String,
    pub started_at: String,
    pub shutting_down: bool,
    pub user: String,
    pub groups: Vec<String>,
    /// The state serial this daemon serves (it follows applies from shells within moments).
    pub serial: i64,
    pub last_apply: Option<ApplyInfo>,
    pub watcher: WatcherStatus,
    /// Counts over what follows, for a dashboard's headline.
    pub summary: Summary,
    /// Running runs, as `GET /api/runs/{id}` shows them to this caller.
    pub runs: Vec<Run>,
    pub tables: Vec<TableState>,
    pub transform_states: Vec<TransformInfo>,
    pub metric_checks: Vec<CheckInfo>,
    /// Tasks an apply queued that have not completed, with their last attempt's error.
    pub pending_tasks: Vec<Pending>,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub tables: usize,
    pub tables_failed: usize,
    pub tables_late: usize,
    pub tables_never_synced: usize,
    pub transforms_failed: usize,
    pub transforms_stale: usize,
    pub checks_failed: usize,
    pub checks_stale: usize,
    pub pending_tasks: usize,
    pub pending_tasks_failed: usize,
}

#[derive(Debug, Serialize)]
pub struct ApplyInfo {
    pub serial: i64,
    pub who: String,
    pub applied_at: String,
}

impl From<LastApply> for ApplyInfo {
    fn from(a: LastApply) -> Self {
        ApplyInfo {
            serial: a.serial,
            who: a.who,
            applied_at: a.applied_at,
        }
    }
}

/// A table in `GET /api/status`.
#[derive(Debug, Serialize)]
pub struct TableState {
    pub id: String,
    pub name: String,
    pub source: String,
    pub schedule: Option<String>,
    pub next_run: Option<String>,
    /// The id of the run syncing it now.
    pub running_in: Option<String>,
    /// When new data last arrived.
    pub last_sync: Option<String>,
    /// When a sync last succeeded (with new data or without): freshness counts from here.
    pub last_success_at: Option<String>,
    /// `ok`, `error` (the last extract failed) or `failed` (not in the published analytics file).
    pub last_status: Option<String>,
    pub rows: Option<i64>,
    pub size_bytes: Option<i64>,
    pub last_error: Option<String>,
    pub freshness: Freshness,
}

impl TableState {
    pub fn of(t: TableStatus, next_run: Option<String>, running_in: Option<String>) -> Self {
        TableState {
            id: t.id,
            name: t.name,
            source: t.source,
            schedule: t.schedule,
            next_run: next_run.or(t.next_run),
            running_in,
            last_sync: t.last_sync,
            last_success_at: t.last_success_at,
            last_status: t.last_status,
            rows: t.rows,
            size_bytes: t.size_bytes,
            last_error: t.last_error,
            freshness: t.freshness.unwrap_or(Freshness::Unscheduled),
        }
    }
}

/// A transform's last outcome (`status` null until a run built it).
#[derive(Debug, Serialize)]
pub struct TransformInfo {
    pub name: String,
    pub source: String,
    pub materialized: String,
    /// `ok`, `stale` (kept from before; `reason` says which input and why) or `failed`.
    pub status: Option<String>,
    pub reason: Option<String>,
    pub rows: Option<i64>,
    pub last_ok_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<TransformState> for TransformInfo {
    fn from(t: TransformState) -> Self {
        TransformInfo {
            name: t.name,
            source: t.source,
            materialized: t.materialized,
            status: t.status,
            reason: t.reason,
            rows: t.rows,
            last_ok_at: t.last_ok_at,
            updated_at: t.updated_at,
        }
    }
}

/// A metric's last check (`status` null until one ran).
#[derive(Debug, Serialize)]
pub struct CheckInfo {
    pub metric: String,
    pub status: Option<String>,
    pub reason: Option<String>,
    pub last_ok_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<CheckState> for CheckInfo {
    fn from(c: CheckState) -> Self {
        CheckInfo {
            metric: c.metric,
            status: c.status,
            reason: c.reason,
            last_ok_at: c.last_ok_at,
            updated_at: c.updated_at,
        }
    }
}

/// A pending task and, when a run tried it since it was queued, that attempt.
#[derive(Debug, Serialize)]
pub struct Pending {
    pub task: String,
    pub kind: String,
    pub target: String,
    pub reason: String,
    pub serial: i64,
    pub queued_at: String,
    pub last_attempt: Option<Attempt>,
}

#[derive(Debug, Serialize)]
pub struct Attempt {
    pub run_id: String,
    pub at: String,
    pub status: String,
    pub error: Option<String>,
}

impl From<PendingTask> for Pending {
    fn from(p: PendingTask) -> Self {
        Pending {
            task: p.task,
            kind: p.kind,
            target: p.target,
            reason: p.reason,
            serial: p.serial,
            queued_at: p.queued_at,
            last_attempt: p.last_attempt.map(|a| Attempt {
                run_id: a.run_id,
                at: a.at,
                status: a.status,
                error: a.error,
            }),
        }
    }
}

/// `GET /api/runs/{id}`, and the running runs of `GET /api/status`: the same shape whether the run is
/// live in this daemon or read from the state.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub id: String,
    /// `schedule`, `watcher`, `api`, `start`, `run`, `apply`.
    pub trigger: String,
    pub who: String,
    /// `running`, `ok`, `failed`, `cancelled`, or `error` (the run could not start).
    pub status: String,
    /// Ids of the tables it syncs (those the caller may read).
    pub tables: Vec<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub published: Option<bool>,
    /// Failed and skipped tasks among those shown.
    pub failed: usize,
    pub skipped: usize,
    /// Tasks left out because they concern what the caller may not read.
    pub hidden_tasks: usize,
    pub error: Option<String>,
    pub tasks: Vec<RunTask>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunTask {
    /// `<kind>:<target>`.
    pub task: String,
    pub kind: String,
    pub target: String,
    pub status: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub rows: Option<i64>,
    pub size_bytes: Option<i64>,
    pub error: Option<String>,
    /// What the task did besides rows (a schema change accepted, an output re-extracted…).
    pub detail: Option<String>,
}

impl From<TaskView> for RunTask {
    fn from(t: TaskView) -> Self {
        RunTask {
            task: t.task,
            kind: t.kind,
            target: t.target,
            status: t.status,
            started_at: None,
            finished_at: None,
            duration_ms: Some(t.duration_ms.min(i64::MAX as u64) as i64),
            rows: t.rows,
            size_bytes: None,
            error: t.error,
            detail: None,
        }
    }
}

impl From<TaskRow> for RunTask {
    fn from(t: TaskRow) -> Self {
        let (kind, target) = t
            .task
            .split_once(':')
            .map(|(k, x)| (k.to_string(), x.to_string()))
            .unwrap_or_else(|| (t.task.clone(), t.table_id.clone()));
        RunTask {
            task: t.task,
            kind,
            target,
            status: t.status,
            started_at: Some(t.started_at),
            finished_at: t.finished_at,
            duration_ms: t.duration_ms,
            rows: t.rows,
            size_bytes: t.size_bytes,
            error: t.error,
            detail: t.detail,
        }
    }
}

impl Run {
    fn counted(mut self) -> Self {
        self.failed = self.tasks.iter().filter(|t| t.status == "failed").count();
        self.skipped = self.tasks.iter().filter(|t| t.status == "skipped").count();
        self
    }

    pub fn live(v: RunView) -> Self {
        Run {
            id: v.id,
            trigger: v.trigger,
            who: v.who,
            status: v.status,
            tables: v.tables,
            started_at: v.started_at,
            finished_at: v.finished_at,
            published: v.published,
            failed: 0,
            skipped: 0,
            hidden_tasks: 0,
            error: v.error,
            tasks: v.tasks.into_iter().map(RunTask::from).collect(),
        }
        .counted()
    }

    pub fn recorded(run: report::RunRow, tasks: Vec<TaskRow>) -> Self {
        let tasks: Vec<RunTask> = tasks.into_iter().map(RunTask::from).collect();
        let mut tables: Vec<String> = tasks
            .iter()
            .filter(|t| matches!(t.kind.as_str(), "extract" | "attach"))
            .map(|t| t.target.clone())
            .collect();
        tables.sort();
        tables.dedup();
        Run {
            id: run.run_id,
            trigger: run.trigger,
            who: run.who,
            status: run.status,
            tables,
            started_at: run.started_at,
            finished_at: Some(run.finished_at),
            published: Some(run.published),
            failed: 0,
            skipped: 0,
            hidden_tasks: 0,
            error: None,
            tasks,
        }
        .counted()
    }

    /// After filtering: counts over the shown tasks.
    pub fn recount(self) -> Self {
        self.counted()
    }
}

/// A run's task in a table's `history` (newest first).
#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    pub run_id: String,
    pub task: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub rows: Option<i64>,
    pub size_bytes: Option<i64>,
    pub status: String,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
    pub detail: Option<String>,
}

impl From<TaskRow> for HistoryEntry {
    fn from(t: TaskRow) -> Self {
        HistoryEntry {
            run_id: t.run_id,
            task: t.task,
            started_at: t.started_at,
            finished_at: t.finished_at,
            rows: t.rows,
            size_bytes: t.size_bytes,
            status: t.status,
            error: t.error,
            duration_ms: t.duration_ms,
            detail: t.detail,
        }
    }
}

/// A table as registered (the part of `GET /api/tables` and `/api/tables/{name}` that comes from
/// the specs).
#[derive(Debug, Serialize)]
pub struct TableInfo {
    pub id: String,
    pub name: String,
    pub source: String,
    pub description: Option<String>,
    pub query_mode: &'static str,
    pub sync_mode: &'static str,
    pub schedule: Option<String>,
    pub primary_key: Vec<String>,
    pub access: Vec<String>,
    pub tags: Vec<String>,
}

impl From<&TableDef> for TableInfo {
    fn from(t: &TableDef) -> Self {
        TableInfo {
            id: t.id.clone(),
            name: t.name.clone(),
            source: t.source.clone(),
            description: t.description.clone(),
            query_mode: t.query_mode().as_str(),
            sync_mode: t.sync_mode().as_str(),
            schedule: t.schedule.clone(),
            primary_key: t.primary_key.clone(),
            access: t.access.clone(),
            tags: t.tags.clone(),
        }
    }
}

/// `GET /api/tables`.
#[derive(Debug, Serialize)]
pub struct Tables {
    pub tables: Vec<TableItem>,
    pub transforms: Vec<TransformItem>,
}

#[derive(Debug, Serialize)]
pub struct TableItem {
    /// Always `table`: the catalogue lists tables and transforms alike.
    pub kind: &'static str,
    #[serde(flatten)]
    pub table: TableInfo,
    pub last_sync: Option<String>,
    pub last_status: Option<String>,
    pub rows: Option<i64>,
    pub size_bytes: Option<i64>,
}

/// A transform in `GET /api/tables`: a catalogue entry like a table.
#[derive(Debug, Serialize)]
pub struct TransformItem {
    /// Always `transform`.
    pub kind: &'static str,
    pub name: String,
    pub source: String,
    pub description: Option<String>,
    pub materialized: &'static str,
    pub inputs: Vec<String>,
    /// Why the tables it reads cannot be determined (only admins see such a transform).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs_uncertain: Vec<String>,
    pub tags: Vec<String>,
    /// The published relation's columns (empty before a run built it).
    pub columns: Vec<Column>,
}

impl TransformItem {
    /// `published`: the relation's columns and DuckDB types in analytics.duckdb, if it is there.
    pub fn of(t: &TransformDef, published: Vec<(String, String)>) -> Self {
        TransformItem {
            kind: "transform",
            name: t.name.clone(),
            source: t.source.clone(),
            description: t.description.clone(),
            materialized: t.materialized().as_str(),
            inputs: t.inputs.clone(),
            inputs_uncertain: t.inputs_uncertain.clone(),
            tags: t.tags.clone(),
            columns: Column::documented(published, &t.columns),
        }
    }
}

/// `GET /api/tables/{transform}`: a transform as a catalogue entry.
#[derive(Debug, Serialize)]
pub struct TransformDetail {
    #[serde(flatten)]
    pub transform: TransformItem,
    pub sql: String,
    /// Its last build (null until a run built it): `ok`, `stale` (kept from before) or `failed`.
    pub state: Option<TransformInfo>,
}

/// `GET /api/tables/{name}`.
#[derive(Debug, Serialize)]
pub struct TableDetail {
    #[serde(flatten)]
    pub table: TableInfo,
    /// The published view's columns (empty before the first publish).
    pub columns: Vec<Column>,
    /// What the last extract wrote about the table (its `_meta` entry).
    pub meta: Option<ExtractMeta>,
    pub last_sync: Option<LastSync>,
    /// The newest tasks that worked on it.
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Serialize)]
pub struct Column {
    pub name: String,
    /// DuckDB's type name.
    #[serde(rename = "type")]
    pub ty: String,
    pub description: Option<String>,
}

impl Column {
    /// Published columns (name, DuckDB type) with their documented descriptions.
    pub fn documented(
        published: Vec<(String, String)>,
        docs: &BTreeMap<String, String>,
    ) -> Vec<Column> {
        published
            .into_iter()
            .map(|(name, ty)| Column {
                description: docs.get(&name).cloned(),
                name,
                ty,
            })
            .collect()
    }
}

#[derive(Debug, Serialize)]
pub struct ExtractMeta {
    pub description: Option<String>,
    pub rows: Option<i64>,
    pub size_bytes: Option<i64>,
    pub extracted_at: Option<String>,
    pub query_mode: String,
}

#[derive(Debug, Serialize)]
pub struct LastSync {
    pub last_sync: Option<String>,
    pub status: Option<String>,
    pub rows: Option<i64>,
    pub size_bytes: Option<i64>,
    pub error: Option<String>,
}

/// `GET /api/metrics`.
#[derive(Debug, Serialize)]
pub struct Metrics {
    pub metrics: Vec<Metric>,
}

/// A metric: its id, spec file and its specification's fields as documented in docs/metrics.md.
#[derive(Debug, Serialize)]
pub struct Metric {
    pub id: String,
    pub file: String,
    #[serde(flatten)]
    pub spec: serde_json::Map<String, serde_json::Value>,
}

/// `GET /api/manifest`: what `pipeline pull` reads (docs/analyst.md).
#[derive(Debug, Serialize)]
pub struct Manifest {
    /// Local tables the caller may read, with their Parquet files.
    pub tables: Vec<ManifestTable>,
    /// Remote tables the caller may read: nothing to download, queried on the server.
    pub remote_tables: Vec<ManifestRemote>,
    /// Transforms the caller may read, with their SQL, so a local copy can offer the same views.
    pub transforms: Vec<ManifestTransform>,
}

#[derive(Debug, Serialize)]
pub struct ManifestTable {
    pub id: String,
    pub name: String,
    pub source: String,
    pub description: Option<String>,
    pub query_mode: &'static str,
    pub partitioned: bool,
    /// Column → its documented description.
    pub columns: BTreeMap<String, String>,
    pub freshness: ManifestFreshness,
    pub files: Vec<ManifestFile>,
    /// The table's profile in short, for AGENTS.md; absent before its first profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<ManifestProfile>,
}

/// A profile in short (docs/profile.md): counts, min and max, the frequent values of columns with
/// few distinct ones — no sample rows.
#[derive(Clone, Debug, Serialize)]
pub struct ManifestProfile {
    pub rows: i64,
    pub profiled_at: Option<String>,
    pub columns: Vec<ManifestColumnProfile>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ManifestColumnProfile {
    pub name: String,
    pub nulls: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<serde_json::Value>,
}

impl ManifestProfile {
    pub fn of(p: crate::profile::TableProfile, profiled_at: Option<String>) -> ManifestProfile {
        ManifestProfile {
            rows: p.rows,
            profiled_at,
            columns: p
                .columns
                .into_iter()
                .map(|c| ManifestColumnProfile {
                    name: c.name,
                    nulls: c.nulls,
                    distinct: c.distinct,
                    min: c.min,
                    max: c.max,
                    values: c.top.into_iter().map(|t| t.value).collect(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ManifestRemote {
    pub id: String,
    pub name: String,
    pub source: String,
    pub description: Option<String>,
    pub query_mode: &'static str,
    pub columns: BTreeMap<String, String>,
    pub freshness: ManifestFreshness,
}

#[derive(Debug, Serialize)]
pub struct ManifestTransform {
    pub name: String,
    pub source: String,
    pub description: Option<String>,
    pub materialized: &'static str,
    pub inputs: Vec<String>,
    pub sql: String,
}

/// A table's last successful sync (RFC 3339) and row count, when it has one.
#[derive(Debug, Serialize)]
pub struct ManifestFreshness {
    pub last_sync: Option<String>,
    pub rows: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct ManifestFile {
    pub file: String,
    pub size_bytes: u64,
    pub etag: String,
    /// Hex SHA-256 of the file's bytes: a pull verifies every download against it.
    pub sha256: String,
    pub url: String,
}

/// `POST /api/sync/trigger`.
#[derive(Debug, Serialize)]
pub struct Triggered {
    /// Null when nothing was started (`message` says why).
    pub run_id: Option<String>,
    pub tables: Vec<String>,
    /// Where to follow the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'static str>,
}

/// `GET /api/tables/{name}/profile`, and `pipeline profile --format json` (docs/profile.md): the
/// table's last good profile, its last failed attempt, and what reads it.
#[derive(Debug, Serialize)]
pub struct TableProfileAnswer {
    pub id: String,
    pub name: String,
    pub source: String,
    pub query_mode: &'static str,
    /// When the profile was made (RFC 3339, UTC), by which run; absent without a profile.
    pub profiled_at: Option<String>,
    pub run_id: Option<String>,
    /// Absent until the table was profiled once; `note` then says why.
    pub profile: Option<crate::profile::TableProfile>,
    pub note: Option<String>,
    /// The last attempt, when it failed after the profile above was made (which still stands).
    pub last_failure: Option<ProfileFailure>,
    /// Transforms and metrics that read the table, directly or through transforms.
    pub used_by: Vec<crate::registry::lineage::UsedBy>,
}

#[derive(Debug, Serialize)]
pub struct ProfileFailure {
    pub error: String,
    pub at: Option<String>,
}

impl TableProfileAnswer {
    /// The answer for `t` from its recorded profile; `used_by` as the caller may see it.
    pub fn build(
        t: &TableDef,
        stored: Option<crate::state::profile::StoredProfile>,
        used_by: Vec<crate::registry::lineage::UsedBy>,
    ) -> TableProfileAnswer {
        let remote = t.query_mode() == crate::spec::model::QueryMode::Remote;
        let (profile, profiled_at, run_id, last_failure) = match stored {
            Some(s) => (
                // Written by this binary's profile type; one that does not read back is as good
                // as none (the next change of the data profiles it again).
                s.profile.and_then(|p| serde_json::from_value(p).ok()),
                s.profiled_at,
                s.run_id,
                s.error.map(|error| ProfileFailure {
                    error,
                    at: s.failed_at,
                }),
            ),
            None => (None, None, None, None),
        };
        let note = match (&profile, remote) {
            (Some(_), _) => None,
            (None, true) => Some(
                "remote tables are not profiled: their rows stay at the source, and reading \
                 them all would cost the source a full scan"
                    .to_string(),
            ),
            (None, false) => Some(
                "not profiled yet: a table is profiled after a run publishes new data for it"
                    .to_string(),
            ),
        };
        TableProfileAnswer {
            id: t.id.clone(),
            name: t.name.clone(),
            source: t.source.clone(),
            query_mode: t.query_mode().as_str(),
            profiled_at: profile.as_ref().and(profiled_at),
            run_id: profile.as_ref().and(run_id),
            profile,
            note,
            last_failure,
            used_by,
        }
    }
}

//! The rebuild of `analytics.duckdb` from every extract (DESIGN.md §5).
//!
//! [`stage`] builds a new file beside the live one: it attaches each `extracts/*/extract.duckdb`
//! read-only (ours, or any tool's that writes the contract), re-attaches the remote databases its
//! `_remote_attach` rows name when the instance allows them, and creates one view per `_meta` row —
//! straight over the Parquet for local tables, so a plain `duckdb analytics.duckdb` session can query
//! them. Every name is checked before it reaches SQL; a broken extract, an unsafe name, a view
//! another source owns, or a remote that may not be attached is reported and skipped while the rest
//! publishes. Transforms then build in the staged file ([`Staged::connection`]), and
//! [`Staged::finish`] checkpoints it and renames it over the live file: readers holding the old file
//! keep it, new readers get the new one, nobody sees half a rebuild. [`publish_source`]
//! (`publish.rs`) republishes one source in a copy of the live file: its views, and the transforms
//! that read them.

pub mod attach;
pub mod publish;

pub use publish::{publish_source, stage_source, PublishReport};

use crate::extract_db::{self, remote, ContractError, ExtractDir, MetaRow, RemotePolicy};
use crate::instance::DataDir;
use crate::quote;
use crate::registry::registered::TransformDef;
use crate::spec::model::Materialized;
use duckdb::Connection;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Schema in analytics.duckdb holding what was published (analysts' `SHOW TABLES` stays clean).
pub const META_SCHEMA: &str = "_pipeline";

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("analytics database {path}: {message}")]
    Db { path: PathBuf, message: String },
    #[error(transparent)]
    Contract(#[from] ContractError),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}")]
    Lock(String),
}

/// Inputs of a rebuild besides the files.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub policy: RemotePolicy,
    /// View name → owning source, as recorded in state.
    pub owners: BTreeMap<String, String>,
    /// Names taken by transforms: no source may publish them.
    pub reserved: BTreeSet<String>,
    /// Memory and threads of the staged file's engine (the instance's `run:` limits).
    pub limits: crate::duck::EngineLimits,
}

/// A published table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Published {
    pub name: String,
    pub source: String,
    pub query_mode: String,
    pub description: Option<String>,
    pub rows: Option<i64>,
    pub size_bytes: Option<i64>,
    pub extracted_at: Option<String>,
    /// The view reads through the attached extract (remote tables, or data kept inside the extract
    /// file): queries need the attachments `pipeline query` makes.
    pub needs_attach: bool,
}

/// Something that was not published, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Skipped {
    pub source: String,
    pub table: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.table {
            Some(t) => write!(f, "{}.{t}: {}", self.source, self.reason),
            None => write!(f, "extract {}: {}", self.source, self.reason),
        }
    }
}

/// A transform's row in `_pipeline.transforms`: `ok`; `stale` (its previous result, or one built
/// from stale input); `failed` (its build failed; its previous result is kept); `missing` (not in
/// the file).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransformMeta {
    pub name: String,
    pub status: String,
    pub reason: Option<String>,
}

/// What a rebuild published and skipped, and the ownership changes to record.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub published: Vec<Published>,
    pub skipped: Vec<Skipped>,
    /// New first-come claims (view → source).
    pub claimed: BTreeMap<String, String>,
    /// Claims whose owner no longer publishes the view (its extract is readable without it, or gone).
    pub released: Vec<String>,
    /// Attachments queries need: extract catalogs and remote databases.
    pub attachments: Vec<attach::Attachment>,
}

impl Report {
    pub fn sources(&self) -> BTreeSet<&str> {
        self.published.iter().map(|p| p.source.as_str()).collect()
    }
}

fn db_err(path: &Path) -> impl Fn(duckdb::Error) -> AnalyticsError + '_ {
    move |e| AnalyticsError::Db {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A new analytics file being built; nothing is visible until [`Staged::finish`].
pub struct Staged {
    conn: Connection,
    layout: DataDir,
    pub report: Report,
    /// `Some` for a one-source publish ([`stage_source`]): what it republishes, and the state of the
    /// live file it started from.
    pub scope: Option<publish::Scope>,
}

/// Source directories under `extracts`, sorted; unsafe names are reported in `skipped`.
fn extract_dirs(extracts: &Path, skipped: &mut Vec<Skipped>) -> Vec<ExtractDir> {
    let mut names: Vec<String> = std::fs::read_dir(extracts)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        if remote::is_reserved_catalog(&name) {
            skipped.push(Skipped {
                source: name.clone(),
                table: None,
                reason: format!(
                    "`{name}` is a catalog name DuckDB or pipeline uses itself; rename the directory"
                ),
            });
            continue;
        }
        match ExtractDir::new(extracts, &name) {
            Some(d) => out.push(d),
            None => skipped.push(Skipped {
                source: name.escape_debug().to_string(),
                table: None,
                reason: "the directory name is not a safe identifier ([A-Za-z_][A-Za-z0-9_]*, at most 64); ignored".into(),
            }),
        }
    }
    out
}

/// Builds a new analytics file from every extract (views only; transforms come after).
pub fn stage(layout: &DataDir, rules: &Rules) -> Result<Staged, AnalyticsError> {
    let tmp = layout.staging();
    if let Some(dir) = tmp.parent() {
        std::fs::create_dir_all(dir).map_err(|e| AnalyticsError::Io(dir.into(), e))?;
    }
    extract_db::remove_db_files(&tmp)?;
    let conn = Connection::open(&tmp).map_err(db_err(&tmp))?;
    conn.execute_batch(&format!(
        "SET TimeZone = 'UTC'; {} CREATE SCHEMA {META_SCHEMA};",
        rules.limits.sql()
    ))
    .map_err(db_err(&tmp))?;
    let mut report = Report::default();
    let dirs = extract_dirs(&layout.extracts(), &mut report.skipped);
    let catalogs: BTreeSet<String> = dirs.iter().map(|d| d.source.clone()).collect();
    let mut taken = folded(&rules.owners);
    let clock = std::time::Instant::now();
    for dir in &dirs {
        add_source(&conn, dir, rules, &catalogs, &mut taken, &mut report);
    }
    tracing::debug!(elapsed = ?clock.elapsed(), sources = dirs.len(), "analytics: views created");
    // Claims of sources whose directory is gone are released; an unreadable extract keeps its own.
    for (view, owner) in &rules.owners {
        if !catalogs.contains(owner) {
            report.released.push(view.clone());
        }
    }
    Ok(Staged {
        conn,
        layout: layout.clone(),
        report,
        scope: None,
    })
}

/// Attaches one extract and creates its views; problems go to `report.skipped`.
fn add_source(
    conn: &Connection,
    dir: &ExtractDir,
    rules: &Rules,
    catalogs: &BTreeSet<String>,
    taken: &mut BTreeMap<String, String>,
    report: &mut Report,
) {
    let source = dir.source.clone();
    let skip = |report: &mut Report, table: Option<&str>, reason: String| {
        tracing::warn!(source = %source, table = table.unwrap_or(""), "{reason}");
        report.skipped.push(Skipped {
            source: source.clone(),
            table: table.map(String::from),
            reason,
        });
    };
    let path = dir.db();
    if !path.is_file() {
        skip(report, None, "no extract.duckdb in this directory".into());
        return;
    }
    let cat = quote::ident(&source).expect("ExtractDir names are identifiers");
    if let Err(e) = conn.execute_batch(&format!(
        "ATTACH {} AS {cat} (READ_ONLY)",
        quote::path(&path)
    )) {
        skip(
            report,
            None,
            format!(
                "not a readable DuckDB database ({}); skipped",
                first_line(&e.to_string())
            ),
        );
        return;
    }
    let contents = match extract_db::read(conn, &source, &path, false) {
        Ok(c) => c,
        Err(e) => {
            skip(report, None, format!("{e}; skipped"));
            let _ = conn.execute_batch(&format!("DETACH {cat}"));
            return;
        }
    };
    // The extract is readable: what it no longer lists, it no longer owns.
    let listed: BTreeSet<String> = contents.meta.iter().map(|m| fold(&m.table_name)).collect();
    for (view, owner) in &rules.owners {
        if owner == &source && !listed.contains(&fold(view)) {
            report.released.push(view.clone());
        }
    }

    let mut refused: Vec<String> = Vec::new();
    let mut remote_ok = Vec::new();
    for row in &contents.remote {
        let clash = catalogs.contains(&row.alias)
            || report.attachments.iter().any(|a| a.alias == row.alias);
        let result = if clash {
            Err(format!(
                "alias `{}` is already in use by another source or extract",
                row.alias
            ))
        } else {
            remote::attach(conn, row, &rules.policy).map_err(|r| r.to_string())
        };
        match result {
            Ok(()) => remote_ok.push(row.clone()),
            Err(reason) => {
                let msg = format!("remote attachment `{}` skipped: {reason}", row.alias);
                skip(report, None, msg.clone());
                refused.push(msg);
            }
        }
    }

    let mut uses_catalog = false;
    let mut planned: Vec<(&MetaRow, String, bool)> = Vec::new();
    for meta in &contents.meta {
        let name = &meta.table_name;
        let Some(view) = quote::ident(name) else {
            skip(
                report,
                Some(&name.escape_debug().to_string()),
                "the table name is not a safe identifier; refused".into(),
            );
            continue;
        };
        if rules.reserved.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            skip(
                report,
                Some(name),
                format!("`{name}` is the name of a transform; refused"),
            );
            continue;
        }
        if let Some(owner) = taken.get(&fold(name)) {
            if owner != &source {
                skip(
                    report,
                    Some(name),
                    format!(
                        "view `{name}` belongs to source `{owner}` (first come); refused. Rename the \
                         table in one of the sources"
                    ),
                );
                continue;
            }
        }
        let local = match meta.query_mode.as_str() {
            "local" | "materialized" => dir.local_data(name),
            "remote" => None,
            other => {
                skip(
                    report,
                    Some(name),
                    format!("unknown query_mode `{other}`; skipped"),
                );
                continue;
            }
        };
        let (select, needs_attach) = match &local {
            Some(data) => (format!("SELECT * FROM {}", data.scan()), false),
            None => {
                if !has_relation(conn, &source, name) {
                    let why = if meta.is_remote() {
                        format!("_meta lists remote table `{name}` but the extract has no view of that name")
                    } else {
                        format!(
                            "_meta lists `{name}` but there is no data/{name}.parquet, no data/{name}/ \
                             and no view or table of that name in the extract"
                        )
                    };
                    skip(report, Some(name), format!("{why}; skipped"));
                    continue;
                }
                (format!("SELECT * FROM {cat}.main.{view}"), true)
            }
        };
        taken.insert(fold(name), source.clone());
        planned.push((
            meta,
            format!("CREATE VIEW {view} AS {select}"),
            needs_attach,
        ));
    }
    // One transaction for the source's views (a commit per view costs an fsync each). If one does not
    // bind, the transaction is void: create them one by one to find it, and skip only that one.
    let batch: String = planned
        .iter()
        .map(|(_, sql, _)| format!("{sql};\n"))
        .collect();
    let together = !planned.is_empty()
        && conn
            .execute_batch(&format!("BEGIN;\n{batch}COMMIT;"))
            .is_ok();
    if !together && !planned.is_empty() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for (meta, sql, needs_attach) in planned {
        let name = &meta.table_name;
        if !together {
            if let Err(e) = conn.execute_batch(&sql) {
                let mut reason = format!("its view does not bind: {}", first_line(&e.to_string()));
                if !refused.is_empty() {
                    reason.push_str(&format!(" ({})", refused.join("; ")));
                }
                skip(report, Some(name), format!("{reason}; skipped"));
                // Free the name again, unless it is recorded as ours or another row of this
                // extract published it already (e.g. `orders` and `ORDERS`).
                let ours = rules.owners.keys().any(|k| k.eq_ignore_ascii_case(name))
                    || report
                        .published
                        .iter()
                        .any(|p| p.source == source && p.name.eq_ignore_ascii_case(name));
                if !ours {
                    taken.remove(&fold(name));
                }
                continue;
            }
        }
        uses_catalog |= needs_attach;
        if !rules.owners.keys().any(|k| k.eq_ignore_ascii_case(name)) {
            report.claimed.insert(name.clone(), source.clone());
        }
        report
            .published
            .push(published(meta, &source, needs_attach));
    }
    if uses_catalog {
        report
            .attachments
            .push(attach::Attachment::extract(&source, &path));
        for r in remote_ok {
            report
                .attachments
                .push(attach::Attachment::remote(&source, &r));
        }
    } else {
        let _ = conn.execute_batch(&format!("DETACH {cat}"));
        for r in remote_ok {
            let _ = conn.execute_batch(&format!(
                "DETACH {}",
                quote::ident(&r.alias).expect("checked")
            ));
        }
    }
}

/// DuckDB compares identifiers without regard to case, so view names are owned the same way.
fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn folded(owners: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    owners.iter().map(|(k, v)| (fold(k), v.clone())).collect()
}

fn published(meta: &MetaRow, source: &str, needs_attach: bool) -> Published {
    Published {
        name: meta.table_name.clone(),
        source: source.to_string(),
        query_mode: meta.query_mode.clone(),
        description: meta.description.clone(),
        rows: meta.rows,
        size_bytes: meta.size_bytes,
        extracted_at: meta.extracted_at.clone(),
        needs_attach,
    }
}

fn has_relation(conn: &Connection, catalog: &str, name: &str) -> bool {
    conn.query_row(
        "SELECT count(*) FROM (SELECT table_name AS n FROM duckdb_tables() WHERE database_name = ? \
         AND schema_name = 'main' UNION ALL SELECT view_name FROM duckdb_views() \
         WHERE database_name = ? AND schema_name = 'main') WHERE n = ?",
        duckdb::params![catalog, catalog, name],
        |r| r.get::<_, i64>(0),
    )
    .is_ok_and(|n| n > 0)
}

/// Why a transform was not built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Its SQL failed (or its name is unsafe).
    #[error("{0}")]
    Sql(String),
    /// It built, and one of its checks failed; the result was dropped.
    #[error("{0}")]
    Check(String),
}

/// Builds one transform in the staged file on `conn` and runs its checks; returns its rows. A result
/// that fails its checks is dropped (the caller keeps the previous one, [`Staged::keep_previous`]).
pub fn build_transform(conn: &Connection, name: &str, t: &TransformDef) -> Result<i64, BuildError> {
    let sql_err = |e: duckdb::Error| BuildError::Sql(e.to_string());
    let id = quote::ident(name)
        .ok_or_else(|| BuildError::Sql(format!("`{name}` is not a safe name")))?;
    let sql = t.sql.trim().trim_end_matches(';');
    let kind = match t.materialized() {
        Materialized::Table => "TABLE",
        Materialized::View => "VIEW",
    };
    conn.execute_batch(&format!("CREATE OR REPLACE {kind} {id} AS {sql}"))
        .map_err(sql_err)?;
    if let Err(e) = crate::checks::run(conn, &id, &t.checks) {
        // The failed result must not be published; the previous one is kept instead.
        let _ = conn.execute_batch(&format!("DROP {kind} IF EXISTS {id}"));
        return Err(BuildError::Check(e));
    }
    conn.query_row(&format!("SELECT count(*) FROM {id}"), [], |r| r.get(0))
        .map_err(sql_err)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

impl Staged {
    /// A connection to the staged file, for transforms and checks.
    pub fn connection(&self) -> Result<Connection, AnalyticsError> {
        self.conn
            .try_clone()
            .map_err(db_err(&self.layout.staging()))
    }

    /// Copies the previous results of transforms that were not built in this run (failed, or
    /// skipped because something they read failed) from the live file, where they exist, so they
    /// never vanish from analytics. `names` come in dependency order: a kept view is created again
    /// from its live definition over what was kept before it; when that does not bind, its rows
    /// are copied instead. Returns the names kept.
    pub fn keep_previous(&self, names: &[String]) -> Vec<String> {
        let live = &self.layout.analytics();
        if names.is_empty() || !live.is_file() {
            return Vec::new();
        }
        if self
            .conn
            .execute_batch(&format!(
                "ATTACH {} AS previous (READ_ONLY)",
                quote::path(live)
            ))
            .is_err()
        {
            return Vec::new();
        }
        let mut kept = Vec::new();
        for n in names {
            let Some(id) = quote::ident(n) else { continue };
            let is_table = self
                .conn
                .query_row(
                    "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'previous' AND schema_name = 'main' AND lower(table_name) = lower(?)",
                    [n],
                    |r| r.get::<_, i64>(0),
                )
                .is_ok_and(|c| c > 0);
            let view_sql: Option<String> = self
                .conn
                .query_row(
                    "SELECT sql FROM duckdb_views() WHERE database_name = 'previous' AND schema_name = 'main' AND lower(view_name) = lower(?)",
                    [n],
                    |r| r.get(0),
                )
                .ok();
            let copy = format!("CREATE OR REPLACE TABLE {id} AS FROM previous.main.{id}");
            let done = if is_table {
                self.conn.execute_batch(&copy).is_ok()
            } else if let Some(sql) = view_sql {
                // The stored definition is `CREATE VIEW name AS …`: run it here, over the kept inputs.
                let _ = self
                    .conn
                    .execute_batch(&format!("DROP VIEW IF EXISTS {id}"));
                self.conn.execute_batch(&sql).is_ok() || self.conn.execute_batch(&copy).is_ok()
            } else {
                false
            };
            if done {
                kept.push(n.clone());
            }
        }
        let _ = self.conn.execute_batch("DETACH previous");
        kept
    }

    /// Records what was published inside the file, checkpoints it and swaps it over the live one.
    /// `stamps`: what the file was built from, when it is complete (every transform built);
    /// `None` records no fingerprint, so the next run publishes again.
    pub fn finish(
        self,
        stamps: Option<&Stamps>,
        transforms: &[TransformMeta],
    ) -> Result<Report, AnalyticsError> {
        let tmp = self.layout.staging();
        let err = db_err(&tmp);
        let clock = std::time::Instant::now();
        write_meta(&self.conn, &self.report, stamps, transforms).map_err(&err)?;
        tracing::debug!(elapsed = ?clock.elapsed(), "analytics: metadata written");
        self.conn.execute_batch("CHECKPOINT").map_err(&err)?;
        tracing::debug!(elapsed = ?clock.elapsed(), "analytics: checkpointed");
        let Staged {
            conn,
            layout,
            report,
            ..
        } = self;
        conn.close().map_err(|(_, e)| db_err(&tmp)(e))?;
        tracing::debug!(elapsed = ?clock.elapsed(), "analytics: closed");
        let fingerprint = stamps.map_or_else(|| INCOMPLETE.to_string(), Stamps::fingerprint);
        publish::LiveRecord::write_for(&layout, &tmp, &fingerprint, stamps, &report.skipped);
        extract_db::replace_db_file(&tmp, &layout.analytics())?;
        Ok(report)
    }

    /// Drops the staged file: nothing is published.
    pub fn abandon(self) {
        let tmp = self.layout.staging();
        drop(self.conn);
        let _ = extract_db::remove_db_files(&tmp);
    }
}

fn write_meta(
    conn: &Connection,
    report: &Report,
    stamps: Option<&Stamps>,
    transforms: &[TransformMeta],
) -> duckdb::Result<()> {
    let fingerprint = stamps.map_or_else(|| INCOMPLETE.to_string(), Stamps::fingerprint);
    // The stamps themselves, so a one-source publish can tell that every other source is as
    // this file published it.
    let stamps_json = stamps.map(|s| serde_json::to_string(s).expect("serializes"));
    let s = META_SCHEMA;
    // Small tables go in as one JSON array each: one statement, however many rows.
    let rows = |v: Vec<serde_json::Value>| serde_json::Value::Array(v).to_string();
    let from = "(SELECT unnest(CAST($1::JSON AS JSON[])) AS d)";
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let info = rows(vec![
        serde_json::json!({"key": "built_at", "value": now}),
        serde_json::json!({"key": "fingerprint", "value": fingerprint}),
        serde_json::json!({"key": "pipeline_version", "value": env!("CARGO_PKG_VERSION")}),
        serde_json::json!({"key": "stamps", "value": stamps_json}),
    ]);
    let transforms = rows(
        transforms
            .iter()
            .map(|t| serde_json::to_value(t).expect("serializes"))
            .collect(),
    );
    conn.execute_batch(&format!(
        "BEGIN;
         CREATE TABLE {s}.tables (name VARCHAR PRIMARY KEY, source VARCHAR, query_mode VARCHAR,
             description VARCHAR, rows BIGINT, size_bytes BIGINT, extracted_at TIMESTAMP, needs_attach BOOLEAN);
         CREATE TABLE {s}.transforms (name VARCHAR PRIMARY KEY, status VARCHAR, reason VARCHAR);
         CREATE TABLE {s}.info (key VARCHAR PRIMARY KEY, value VARCHAR);
         CREATE TABLE {s}.skipped (source VARCHAR, table_name VARCHAR, reason VARCHAR);"
    ))?;
    attach::create_table(conn)?;
    // A row per published table (thousands): the appender, not a statement per row or a JSON
    // array to parse.
    {
        let mut app = conn.appender_to_db("tables", s)?;
        for p in &report.published {
            app.append_row(duckdb::params![
                p.name,
                p.source,
                p.query_mode,
                p.description,
                p.rows,
                p.size_bytes,
                p.extracted_at,
                p.needs_attach
            ])?;
        }
        app.flush()?;
    }
    conn.execute(
        &format!(
            "INSERT INTO {s}.transforms SELECT d->>'name', d->>'status', d->>'reason' FROM {from}"
        ),
        [transforms],
    )?;
    conn.execute(
        &format!("INSERT INTO {s}.info SELECT d->>'key', d->>'value' FROM {from}"),
        [info],
    )?;
    let skipped = rows(
        report
            .skipped
            .iter()
            .map(|k| serde_json::json!({"source": k.source, "table": k.table, "reason": k.reason}))
            .collect(),
    );
    conn.execute(
        &format!(
            "INSERT INTO {s}.skipped SELECT d->>'source', d->>'table', d->>'reason' FROM {from}"
        ),
        [skipped],
    )?;
    for a in &report.attachments {
        attach::insert(conn, a)?;
    }
    conn.execute_batch("COMMIT")
}

/// A session on the live analytics file, read-only, with the attachments its views need. Returns
/// the connection and the attachments that could not be made (their views fail; the rest work).
pub fn open_live(
    layout: &DataDir,
    policy: &RemotePolicy,
) -> Result<(Connection, Vec<String>), AnalyticsError> {
    open_live_with(layout, policy, true)
}

/// [`open_live`] with the extract catalogs attached but no remote database: for reading the
/// local tables (profiles) without reaching any source.
pub fn open_live_local(
    layout: &DataDir,
    policy: &RemotePolicy,
) -> Result<(Connection, Vec<String>), AnalyticsError> {
    open_live_with(layout, policy, false)
}

fn open_live_with(
    layout: &DataDir,
    policy: &RemotePolicy,
    remote: bool,
) -> Result<(Connection, Vec<String>), AnalyticsError> {
    let path = &layout.analytics();
    let err = db_err(path);
    let conn = Connection::open_in_memory().map_err(&err)?;
    crate::duck::retry_locked(crate::duck::LOCK_RETRY, || {
        conn.execute_batch(&format!(
            "SET TimeZone = 'UTC'; ATTACH {} AS analytics (READ_ONLY); USE analytics;",
            quote::path(path)
        ))
    })
    .map_err(&err)?;
    let mut list = attach::read(&conn, Some("analytics")).map_err(&err)?;
    if !remote {
        list.retain(|a| a.kind == "extract");
    }
    let problems = attach::attach_all(&conn, &list, policy);
    Ok((conn, problems))
}

/// The fingerprint recorded in the live analytics file, if any (to skip a rebuild that would change
/// nothing).
pub fn live_fingerprint(layout: &DataDir) -> Option<String> {
    live_info(layout, "fingerprint")
}

/// One value of the live file's `_pipeline.info`, read without opening the file for writing.
pub fn live_info(layout: &DataDir, key: &str) -> Option<String> {
    live_infos(layout, &[key]).remove(key)
}

/// Values of the live file's `_pipeline.info` (those it has, of `keys`), in one look.
pub fn live_infos(layout: &DataDir, keys: &[&str]) -> BTreeMap<String, String> {
    let read = || -> Option<BTreeMap<String, String>> {
        if !layout.analytics().is_file() {
            return None;
        }
        let conn = Connection::open_in_memory().ok()?;
        conn.execute_batch(&format!(
            "ATTACH {} AS live (READ_ONLY)",
            quote::path(&layout.analytics())
        ))
        .ok()?;
        // A handful of rows: all of them, filtered here.
        let mut stmt = conn
            .prepare(&format!(
                "SELECT key, value FROM live.{META_SCHEMA}.info WHERE value IS NOT NULL"
            ))
            .ok()?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))
            .ok()?;
        let all: BTreeMap<String, String> = rows.collect::<duckdb::Result<_>>().ok()?;
        Some(
            all.into_iter()
                .filter(|(k, _)| keys.contains(&k.as_str()))
                .collect(),
        )
    };
    read().unwrap_or_default()
}

/// The fingerprint of a file that is not known to be complete (a transform was not built): the
/// next run publishes again instead of calling it up to date.
pub const INCOMPLETE: &str = "incomplete";

/// What a rebuild would read, summarised per source and for the rest. Each source's stamp covers
/// its extract file's size and modification time and the same for every file under the extract's
/// `data/` (the Parquet its views read: a deleted or truncated file, ours or another tool's,
/// changes it, so the next run publishes again and reports the view that no longer binds instead
/// of calling analytics up to date); `transforms` holds one stamp per transform definition (by
/// name) and `rules` covers the rest of what a build depends on. Equal stamps mean a rebuild would
/// produce the same file; a scoped publish compares them with the ones the live file recorded to
/// find what changed since (sources, transforms) and rebuild only that.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Stamps {
    pub sources: BTreeMap<String, String>,
    pub transforms: TransformKeys,
    pub rules: String,
}

/// Each transform's definition stamp, by name ([`publish::transform_keys`]).
pub type TransformKeys = BTreeMap<String, String>;

impl Stamps {
    /// One value for all of it (recorded as `_pipeline.info.fingerprint`).
    pub fn fingerprint(&self) -> String {
        let mut parts: Vec<String> = self
            .sources
            .iter()
            .map(|(s, stamp)| format!("{s}={stamp}"))
            .collect();
        parts.extend(
            self.transforms
                .iter()
                .map(|(t, stamp)| format!("{t}:{stamp}")),
        );
        parts.push(self.rules.clone());
        crate::connectors::fingerprint_of(&parts)
    }
}

/// The [`Stamps`] of what a rebuild would read now.
pub fn stamps(layout: &DataDir, rules: &Rules, transforms: &TransformKeys) -> Stamps {
    let mut out = Stamps::default();
    let mut ignored = Vec::new();
    for dir in extract_dirs(&layout.extracts(), &mut ignored) {
        let mut parts = Vec::new();
        let stamp = crate::connectors::file_stamp(&dir.db()).unwrap_or_else(|_| "missing".into());
        parts.push(stamp);
        data_stamps(&dir.data(), 0, &mut parts);
        out.sources.insert(
            dir.source.clone(),
            crate::connectors::fingerprint_of(&parts),
        );
    }
    // Ownership is not part of it: a claim only changes when an extract (part of it) changes.
    out.rules = crate::connectors::fingerprint_of(&[format!(
        "{:?}/{:?}",
        rules.policy.extensions, rules.policy.token_envs
    )]);
    out.transforms = transforms.clone();
    out
}

/// [`Stamps::fingerprint`] of what a rebuild would read now.
pub fn fingerprint(layout: &DataDir, rules: &Rules, transforms: &TransformKeys) -> String {
    stamps(layout, rules, transforms).fingerprint()
}

/// Stamps (path, size, mtime) of the files under an extract's `data/`, in name order: the table files
/// and, one level down, partition files. Staging copies an extract in progress writes beside them
/// (`.tmp`, `.parts`, `.old`) are left out: they come and go without changing what is published.
fn data_stamps(dir: &Path, depth: usize, parts: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    // The entry's type comes with the listing: one stat per file, not two (a thousand tables are
    // stamped before every publish).
    let mut paths: Vec<(PathBuf, bool)> = entries
        .flatten()
        .map(|e| (e.path(), e.file_type().is_ok_and(|t| t.is_dir())))
        .collect();
    paths.sort();
    for (p, is_dir) in paths {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        if [".tmp", ".parts", ".old"].iter().any(|x| name.ends_with(x)) {
            continue;
        }
        if is_dir {
            if depth == 0 {
                data_stamps(&p, depth + 1, parts);
            }
        } else if let Ok(stamp) = crate::connectors::file_stamp(&p) {
            parts.push(stamp);
        }
    }
}

/// Lower-cased relation name → its columns (name, DuckDB type name) in the published
/// analytics.duckdb at `live`, for the relations in `names` (case-insensitive) that are there.
/// Reads the catalogue only, never data; nothing before the first publish. The API's catalogue and
/// `pipeline catalog export` show these.
pub fn published_columns(
    live: &Path,
    names: &[String],
) -> duckdb::Result<BTreeMap<String, Vec<(String, String)>>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    if names.is_empty() || !live.is_file() {
        return Ok(out);
    }
    let wanted: BTreeSet<String> = names.iter().map(|v| v.to_lowercase()).collect();
    let conn = Connection::open_in_memory()?;
    // A publish renames a new file into place; the old one stays readable to whoever opened it.
    crate::duck::retry_locked(crate::duck::LOCK_RETRY, || {
        conn.execute_batch(&format!(
            "ATTACH {} AS analytics (READ_ONLY)",
            quote::path(live)
        ))
    })?;
    let mut stmt = conn.prepare(
        "SELECT lower(table_name), column_name, data_type FROM information_schema.columns
         WHERE table_catalog = 'analytics' AND table_schema = 'main'
         ORDER BY lower(table_name), ordinal_position",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?;
    for row in rows {
        let (table, column, ty) = row?;
        if wanted.contains(&table) {
            out.entry(table).or_default().push((column, ty));
        }
    }
    Ok(out)
}

pub fn has_extracts(layout: &DataDir) -> bool {
    extract_dirs(&layout.extracts(), &mut Vec::new())
        .iter()
        .any(|d| d.db().is_file())
}

/// What the live analytics file's last build skipped (`_pipeline.skipped`): one line per problem.
/// Empty when there is no live file or it predates the table.
pub fn live_skipped(layout: &DataDir) -> Vec<String> {
    if !layout.analytics().is_file() {
        return Vec::new();
    }
    // The record beside the file, when it describes it; not `LiveRecord::read`, whose fallback
    // would open the file once more only to learn nothing about what was skipped.
    if let Some(skipped) = publish::LiveRecord::from_record_file(layout).and_then(|r| r.skipped) {
        return skipped;
    }
    let read = || -> duckdb::Result<Vec<String>> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(&format!(
            "ATTACH {} AS live (READ_ONLY)",
            quote::path(&layout.analytics())
        ))?;
        let mut stmt = conn.prepare(&format!(
            "SELECT source, table_name, reason FROM live.{META_SCHEMA}.skipped ORDER BY source, table_name"
        ))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Skipped {
                    source: r.get(0)?,
                    table: r.get(1)?,
                    reason: r.get(2)?,
                }
                .to_string())
            })?
            .collect();
        rows
    };
    read().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract_db::{Entry, LocalData, ViewTarget};

    /// An extract with one local table `name` holding `rows` rows (one column, `id`).
    pub(crate) fn extract(extracts: &Path, source: &str, name: &str, rows: i64) {
        let select = format!("SELECT range AS id FROM range({rows})");
        extract_from(extracts, source, name, &select, rows);
    }

    /// An extract with one local table `name` holding what `select` returns.
    pub(crate) fn extract_from(extracts: &Path, source: &str, name: &str, select: &str, rows: i64) {
        let dir = ExtractDir::new(extracts, source).unwrap();
        std::fs::create_dir_all(dir.data()).unwrap();
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(&format!(
            "COPY ({select}) TO {} (FORMAT parquet)",
            quote::path(&dir.parquet(name))
        ))
        .unwrap();
        let meta = MetaRow {
            table_name: name.into(),
            description: None,
            rows: Some(rows),
            size_bytes: Some(1),
            extracted_at: None,
            query_mode: "local".into(),
        };
        let view = ViewTarget::Local(LocalData::File(dir.parquet(name)));
        extract_db::write(
            &dir,
            &[Entry { meta, view }],
            &[],
            &RemotePolicy::default(),
            None,
        )
        .unwrap();
    }

    pub(crate) fn count(analytics: &Path, table: &str) -> i64 {
        let c = Connection::open_with_flags(
            analytics,
            duckdb::Config::default()
                .access_mode(duckdb::AccessMode::ReadOnly)
                .unwrap(),
        )
        .unwrap();
        c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    fn layout(dir: &Path) -> DataDir {
        DataDir::new(dir)
    }

    #[test]
    fn stage_publishes_good_extracts_and_reports_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let l = layout(tmp.path());
        extract(&l.extracts(), "a", "one", 3);
        extract(&l.extracts(), "b", "two", 5);
        std::fs::create_dir_all(l.extracts().join("broken")).unwrap();
        std::fs::write(
            l.extracts().join("broken/extract.duckdb"),
            b"not a database",
        )
        .unwrap();
        // `b` also claims `one`, which `a` owns: refused.
        extract(&l.extracts(), "c", "one", 9);
        let rules = Rules {
            owners: BTreeMap::from([("one".to_string(), "a".to_string())]),
            ..Rules::default()
        };
        let staged = stage(&l, &rules).unwrap();
        let stamps = Stamps {
            rules: "fp".into(),
            ..Stamps::default()
        };
        let report = staged.finish(Some(&stamps), &[]).unwrap();
        assert_eq!(report.published.len(), 2);
        assert_eq!(count(&l.analytics(), "one"), 3);
        assert_eq!(count(&l.analytics(), "two"), 5);
        let reasons: Vec<String> = report.skipped.iter().map(|s| s.to_string()).collect();
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("extract broken: not a readable DuckDB database")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("c.one: view `one` belongs to source `a`")),
            "{reasons:?}"
        );
        assert_eq!(
            report.claimed,
            BTreeMap::from([("two".to_string(), "b".to_string())])
        );
        assert!(!extract_db::wal_of(&l.analytics()).exists());
        assert_eq!(live_fingerprint(&l), Some(stamps.fingerprint()));
    }
}

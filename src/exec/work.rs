//! The bodies of the tasks: what extract, attach, rebuild, publish, transform and check do, with the
//! state they share during one run (the run's DuckDB instance, the staged analytics file, extract
//! results for the rebuilds).

use super::error::TaskError;
use super::scheduler::Done;
use crate::analytics::{self, Rules, Staged};
use crate::connectors::{self, Session};
use crate::extract::{self, Extracted, Previous};
use crate::extract_db::{self, Entry, ExtractDir, MetaRow, RemoteAttach, RemotePolicy, ViewTarget};
use crate::fslock::Lock;
use crate::instance::DataDir;
use crate::quote;
use crate::registry::registered::{Registered, TableDef};
use crate::registry::task::{Task, TaskKind};
use crate::spec::model::QueryMode;
use duckdb::Connection;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a publish went, for the transforms and checks after it.
#[derive(Default)]
enum Publish {
    #[default]
    NotRun,
    /// Nothing changed since the live file was built; it stays.
    UpToDate,
    Staged(Box<Staged>),
    /// Staged, then finished or abandoned.
    Done,
}

pub struct Context {
    pub root: PathBuf,
    /// The instance's data directory (absolute).
    pub data: DataDir,
    pub registered: Registered,
    pub policy: RemotePolicy,
    pub previous: HashMap<String, Previous>,
    pub owners: BTreeMap<String, String>,
    pub full_refresh: bool,
    /// The run builds transforms the caller chose (`run --select`): stage a new file even when the
    /// live one is up to date, since building them is what was asked.
    pub chosen_transforms: bool,
    /// A push connector has just written the sources this run rebuilds ([`super::Options::pushed`]).
    pub pushed: bool,
    /// Tables (ids) whose new schema is published whatever it is (`--accept-schema`).
    pub accept_schema: BTreeSet<String>,
    pub lock_timeout: Duration,
    /// Memory and threads of every DuckDB engine the run opens (the instance's `run:`).
    pub limits: crate::duck::EngineLimits,
    /// The sources this run republishes in a copy of the live file: the one it synced, or none when
    /// it only builds chosen transforms ([`analytics::publish::stage_sources`]). `None`: a full
    /// rebuild.
    pub scope: Option<BTreeSet<String>>,
    pub cancel: Arc<AtomicBool>,
    /// The run's DuckDB instance; tasks work on clones of this connection.
    engine: Mutex<Connection>,
    session: Session,
    extracted: Mutex<HashMap<String, Extracted>>,
    publish: Mutex<Publish>,
    /// When the staged file is a copy with only the changed sources republished although the run
    /// synced more: the transforms that read them. The others keep their result in the copy.
    affected: Mutex<Option<BTreeSet<String>>>,
    analytics_lock: Mutex<Option<Lock>>,
    /// What the published rebuild published and skipped, and its ownership changes.
    published: Mutex<Option<analytics::Report>>,
    /// Jira sources synced in this run (check + extract.duckdb), by name: the source's six tables
    /// share one sync.
    jira_synced: Mutex<HashMap<String, Result<String, String>>>,
}

type Claims = (BTreeMap<String, String>, Vec<String>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct ContextParts {
    pub root: PathBuf,
    pub data: DataDir,
    pub registered: Registered,
    pub policy: RemotePolicy,
    pub previous: HashMap<String, Previous>,
    pub owners: BTreeMap<String, String>,
    pub full_refresh: bool,
    /// The run builds transforms the caller chose (`run --select`): stage a new file even when the
    /// live one is up to date, since building them is what was asked.
    pub chosen_transforms: bool,
    /// A push connector has just written the sources this run rebuilds ([`super::Options::pushed`]).
    pub pushed: bool,
    pub accept_schema: BTreeSet<String>,
    pub lock_timeout: Duration,
    pub scope: Option<BTreeSet<String>>,
    pub limits: crate::duck::EngineLimits,
}

impl Context {
    pub fn new(p: ContextParts, cancel: Arc<AtomicBool>) -> Result<Context, String> {
        let engine = Connection::open_in_memory().map_err(|e| e.to_string())?;
        let temp_dir = p.data.tmp();
        // Spills of big sorts and joins go under the data dir, not the working directory.
        std::fs::create_dir_all(&temp_dir).map_err(|e| format!("{}: {e}", temp_dir.display()))?;
        engine
            .execute_batch(&format!(
                "SET temp_directory = {}; SET TimeZone = 'UTC'; {}",
                quote::path(&temp_dir),
                p.limits.sql()
            ))
            .map_err(|e| e.to_string())?;
        let extensions = p.policy.store.clone();
        Ok(Context {
            root: p.root,
            data: p.data,
            registered: p.registered,
            policy: p.policy,
            previous: p.previous,
            owners: p.owners,
            full_refresh: p.full_refresh,
            chosen_transforms: p.chosen_transforms,
            pushed: p.pushed,
            accept_schema: p.accept_schema,
            lock_timeout: p.lock_timeout,
            scope: p.scope,
            limits: p.limits,
            cancel,
            engine: Mutex::new(engine),
            session: Session::with_scratch(temp_dir).with_extensions(extensions),
            extracted: Mutex::new(HashMap::new()),
            publish: Mutex::new(Publish::NotRun),
            affected: Mutex::new(None),
            analytics_lock: Mutex::new(None),
            published: Mutex::new(None),
            jira_synced: Mutex::new(HashMap::new()),
        })
    }

    pub fn run(&self, task: &Task) -> Result<Done, TaskError> {
        match task.kind {
            TaskKind::Extract => self.extract(&task.target),
            TaskKind::Attach => self.attach(&task.target),
            TaskKind::Rebuild => self.rebuild(&task.target),
            TaskKind::Publish => self.stage(),
            TaskKind::Transform => self.transform(&task.target),
            TaskKind::Check => self.check(&task.target),
        }
    }

    /// A connection to the run's DuckDB instance.
    fn engine_connection(&self) -> Result<Connection, TaskError> {
        lock(&self.engine).try_clone().map_err(TaskError::internal)
    }

    fn table(&self, id: &str) -> Result<&TableDef, TaskError> {
        self.registered.tables.get(id).ok_or_else(|| {
            TaskError::NotRegistered(format!("table `{id}` is no longer registered"))
        })
    }

    fn extract_dir(&self, source: &str) -> Result<ExtractDir, TaskError> {
        ExtractDir::new(&self.data.extracts(), source).ok_or_else(|| {
            TaskError::NotRegistered(format!("`{source}` is not a safe source name"))
        })
    }

    fn extract(&self, id: &str) -> Result<Done, TaskError> {
        let table = self.table(id)?;
        let source = self.registered.sources.get(&table.source).ok_or_else(|| {
            TaskError::NotRegistered(format!("source `{}` is not registered", table.source))
        })?;
        if source.kind() == Some(crate::spec::model::SourceType::Jira) {
            return self.jira_sync(source);
        }
        let connector = connectors::connector_for(source, table, &self.root)?;
        let dir = self.extract_dir(&table.source)?;
        let conn = self.engine_connection()?;
        let req = extract::Request {
            source,
            table,
            connector: connector.as_ref(),
            dir: &dir,
            previous: self.previous.get(id),
            full_refresh: self.full_refresh,
            accept_schema: self.accept_schema.contains(id),
        };
        let x = extract::extract(&conn, &self.session, &req)?;
        let mut notes = Vec::new();
        if x.unchanged {
            notes.push("input unchanged".to_string());
        } else if x.rows_read != x.rows {
            notes.push(format!(
                "{} new or changed rows merged",
                thousands(x.rows_read)
            ));
        }
        let mut warnings = Vec::new();
        if let Some(why) = &x.repaired {
            notes.push(format!("re-extracted: {why}"));
            warnings.push(format!("{id}: {why}; extracted again from the source"));
        }
        if !x.schema_changes.is_empty() {
            let by = x.schema_accepted_by.as_deref().unwrap_or("?");
            let changes = crate::extract_db::schema::summary(&x.schema_changes);
            notes.push(format!("schema changed ({by}): {changes}"));
            // Changes beyond the default contract are worth a word at the end of the run.
            let beyond = x
                .schema_changes
                .iter()
                .any(|c| !c.allowed_by(crate::spec::model::SchemaChanges::Additive));
            if beyond {
                warnings.push(format!(
                    "{id}: the published schema changed ({by}): {changes}"
                ));
            }
        }
        let detail = notes.join("; ");
        let done = Done {
            unchanged: x.unchanged,
            rows: Some(x.rows),
            bytes: Some(x.bytes),
            detail: (!detail.is_empty()).then_some(detail),
            warnings,
            extracted: Some(x.clone()),
        };
        lock(&self.extracted).insert(id.to_string(), x);
        Ok(done)
    }

    /// A jira table's sync: the source's consistency check and extract.duckdb refresh, once per
    /// run for all its tables (the rows come from the connector, see `exec::jira`).
    fn jira_sync(
        &self,
        source: &crate::registry::registered::SourceDef,
    ) -> Result<Done, TaskError> {
        let mut synced = lock(&self.jira_synced);
        let result = synced
            .entry(source.name.clone())
            .or_insert_with(|| {
                super::jira::sync(self.data.dir(), source).map(|(r, published)| {
                    format!(
                        "consistency check: {} issue(s) listed, {} refetched, {} removed, {} failed{}",
                        r.listed,
                        r.refetched,
                        r.removed.len(),
                        r.failed.len(),
                        if published { "; extract refreshed" } else { "" }
                    )
                })
            })
            .clone();
        result
            .map(|detail| Done {
                detail: Some(detail),
                ..Done::default()
            })
            .map_err(TaskError::Push)
    }

    fn attach(&self, id: &str) -> Result<Done, TaskError> {
        let table = self.table(id)?;
        let source = &self.registered.sources[&table.source];
        let connector = connectors::connector_for(source, table, &self.root)?;
        let remote = connector.remote(table)?;
        // Check now that it can be attached and that the table is there, so a broken remote fails
        // here with its own message (and alone: the rebuild leaves it out, its siblings publish).
        RemoteProbe::new()
            .map_err(TaskError::Internal)?
            .check(&remote, &self.policy)
            .map_err(TaskError::Remote)?;
        Ok(Done {
            detail: Some(format!("remote: {}.{}", remote.schema, remote.table)),
            ..Done::default()
        })
    }

    /// Rewrites one source's extract.duckdb from its registered tables: this run's extracts, else what
    /// the previous extract said.
    fn rebuild(&self, source_name: &str) -> Result<Done, TaskError> {
        let source = self.registered.sources.get(source_name).ok_or_else(|| {
            TaskError::NotRegistered(format!("source `{source_name}` is not registered"))
        })?;
        if source.kind() == Some(crate::spec::model::SourceType::Jira) {
            // The partition store writes its own extract.duckdb (all six tables): after a push it
            // has just done so; otherwise the run checks it against Jira and refreshes it.
            if self.pushed {
                return Ok(Done {
                    detail: Some("extract.duckdb as the push connector wrote it".into()),
                    ..Done::default()
                });
            }
            return self.jira_sync(source);
        }
        let dir = self.extract_dir(source_name)?;
        let conn = self.engine_connection()?;
        let existing = extract_db::read_with(&conn, &dir).ok().flatten();
        let before = existing.clone().unwrap_or_default();
        let before: HashMap<&str, &MetaRow> = before
            .meta
            .iter()
            .map(|m| (m.table_name.as_str(), m))
            .collect();
        let extracted = lock(&self.extracted).clone();
        let mut entries = Vec::new();
        let mut remotes: Vec<RemoteAttach> = Vec::new();
        let mut missing = Vec::new();
        let mut refused = Vec::new();
        let mut probe: Option<RemoteProbe> = None;
        let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
        for t in self.registered.tables_of(source_name) {
            let mode = t.query_mode();
            if mode == QueryMode::Remote {
                // One remote table that cannot be read must not keep its siblings from publishing:
                // it is left out (its attach task fails with the reason). A remote that only
                // readers attach (BigQuery: they bring their own token) is written as the contract
                // says whether or not this machine can attach it; the publish skips its views
                // when the extension is missing.
                let remote = connectors::connector_for(source, t, &self.root)
                    .map_err(|e| e.to_string())
                    .and_then(|c| c.remote(t).map_err(|e| e.to_string()))
                    .and_then(|r| {
                        if extract_db::remote::attaches_at_read_time(&r.attach) {
                            return Ok(r);
                        }
                        if probe.is_none() {
                            probe = Some(RemoteProbe::new().map_err(|e| e.to_string())?);
                        }
                        let p = probe.as_mut().expect("just made");
                        p.check(&r, &self.policy)
                            .map(|()| r)
                            .map_err(|e| e.to_string())
                    });
                let remote = match remote {
                    Ok(r) => r,
                    Err(e) => {
                        refused.push(format!("{}: {e}", t.name));
                        continue;
                    }
                };
                if !remotes.iter().any(|r| r.alias == remote.attach.alias) {
                    remotes.push(remote.attach.clone());
                }
                let counts = remote.zero_counts.then_some(0);
                entries.push(Entry {
                    meta: MetaRow {
                        table_name: t.name.clone(),
                        description: t.description.clone(),
                        rows: counts,
                        size_bytes: counts,
                        extracted_at: None,
                        query_mode: mode.as_str().into(),
                    },
                    view: remote.view.unwrap_or(ViewTarget::Remote {
                        alias: remote.attach.alias,
                        schema: remote.schema,
                        table: remote.table,
                    }),
                });
                continue;
            }
            let Some(data) = dir.local_data(&t.name) else {
                missing.push(t.name.clone());
                continue;
            };
            let old = before.get(t.name.as_str());
            let (rows, extracted_at) = match extracted.get(&t.id) {
                Some(x) if !x.unchanged => (Some(x.rows), Some(now.clone())),
                Some(x) => (
                    Some(x.rows),
                    old.and_then(|o| o.extracted_at.clone())
                        .or(Some(now.clone())),
                ),
                None => (
                    old.and_then(|o| o.rows)
                        .or_else(|| self.previous.get(&t.id).and_then(|p| p.rows)),
                    old.and_then(|o| o.extracted_at.clone()),
                ),
            };
            entries.push(Entry {
                meta: MetaRow {
                    table_name: t.name.clone(),
                    description: t.description.clone(),
                    rows,
                    size_bytes: Some(data.size() as i64),
                    extracted_at,
                    query_mode: mode.as_str().into(),
                },
                view: ViewTarget::Local(data),
            });
        }
        let written = extract_db::write(&dir, &entries, &remotes, &self.policy, existing.as_ref())?;
        let mut warnings = Vec::new();
        if !missing.is_empty() {
            warnings.push(format!(
                "{source_name}: no data yet for {} (not extracted successfully so far)",
                missing.join(", ")
            ));
        }
        for r in refused {
            warnings.push(format!("{source_name}.{r}; left out of the extract"));
        }
        Ok(Done {
            unchanged: !written,
            rows: Some(entries.len() as i64),
            detail: Some(format!(
                "{} table(s){}",
                entries.len(),
                if written { "" } else { ", extract unchanged" }
            )),
            warnings,
            ..Done::default()
        })
    }

    fn rules(&self) -> Rules {
        Rules {
            policy: self.policy.clone(),
            owners: self.owners.clone(),
            reserved: self.registered.transforms.keys().cloned().collect(),
            limits: self.limits,
        }
    }

    /// The transforms' definitions, for the analytics stamps.
    fn transform_keys(&self) -> analytics::TransformKeys {
        analytics::publish::transform_keys(&self.registered)
    }

    fn stage(&self) -> Result<Done, TaskError> {
        use analytics::publish::{stage_sources, Changed, LiveRecord};
        let rules = self.rules();
        // What a rebuild would read now, and what the live file was built from: computed once,
        // they decide between "up to date", a scoped publish and a full rebuild.
        let clock = std::time::Instant::now();
        let now = analytics::stamps(&self.data, &rules, &self.transform_keys());
        tracing::debug!(elapsed = ?clock.elapsed(), "publish: stamps");
        let live = LiveRecord::read(&self.data);
        tracing::debug!(elapsed = ?clock.elapsed(), "publish: live record");
        if !self.full_refresh && !self.chosen_transforms && live.up_to_date(&now) {
            *lock(&self.publish) = Publish::UpToDate;
            // What the live file left out still is left out: say so at every run, not only once.
            let skipped = live
                .skipped
                .clone()
                .unwrap_or_else(|| analytics::live_skipped(&self.data));
            let warnings: Vec<String> = skipped
                .into_iter()
                .map(|w| format!("{w} (not published since the last rebuild)"))
                .collect();
            let detail = match warnings.len() {
                0 => "analytics is up to date".to_string(),
                n => format!("analytics is up to date; {n} left out (see the warnings)"),
            };
            return Ok(Done {
                unchanged: true,
                detail: Some(detail),
                warnings,
                ..Done::default()
            });
        }
        let held = Lock::acquire(
            &self.data.analytics_lock(),
            "pipeline run (publish)",
            self.lock_timeout,
            |h| {
                let who = h.map_or("another process".to_string(), |h| h.to_string());
                tracing::warn!("waiting for the analytics lock held by {who}");
            },
        )?;
        *lock(&self.analytics_lock) = Some(held);
        // The live record was read before the lock: when another process published meanwhile,
        // the copy's own record no longer matches and staging refuses (a full rebuild).
        let scoped = match &self.scope {
            // `run --source` / `--select`: only these sources (none) change; anything else that
            // changed (a transform included) refuses the scoped publish.
            Some(sources) => {
                let changed = Changed {
                    sources: sources.clone(),
                    ..Changed::default()
                };
                stage_sources(&self.data, &rules, &now, &changed)?
            }
            // A full run: when only some extracts or transforms changed, republish those sources
            // and build only the changed transforms and what reads them or the sources (decided
            // from the stamps, so the new file is still the one a full rebuild would make).
            None if !self.full_refresh && !self.chosen_transforms => {
                match live.changed(&self.data, &now) {
                    Some(changed) if !changed.is_empty() => {
                        let staged = stage_sources(&self.data, &rules, &now, &changed)?;
                        if let Some(s) = &staged {
                            let mut names: BTreeSet<String> = changed
                                .transforms
                                .iter()
                                .map(|t| t.to_lowercase())
                                .collect();
                            for source in &changed.sources {
                                names.extend(analytics::publish::changed_names(
                                    &self.registered,
                                    s,
                                    source,
                                ));
                            }
                            let mut affected: BTreeSet<String> =
                                crate::registry::dag::transforms_reading(
                                    &self.registered,
                                    Some(&names),
                                )
                                .into_iter()
                                .collect();
                            affected.extend(changed.transforms.iter().cloned());
                            *lock(&self.affected) = Some(affected);
                        }
                        staged
                    }
                    _ => None,
                }
            }
            None => None,
        };
        let staged = match scoped {
            Some(s) => s,
            // Chosen transforms are built on the published file as it is; rebuilding it from the
            // extracts would need the transforms they read, which this run does not build.
            None if self.chosen_transforms => {
                return Err(TaskError::Missing(
                    "--select builds on the published analytics.duckdb, and it is out of date (an \
                     extract, a transform or a rule changed since it was built): run `pipeline run` \
                     first"
                        .into(),
                ))
            }
            None => analytics::stage(&self.data, &rules)?,
        };
        let r = &staged.report;
        let done = Done {
            rows: Some(r.published.len() as i64),
            detail: Some(format!(
                "{} table(s) from {} source(s){}{}",
                r.published.len(),
                r.sources().len(),
                match &staged.scope {
                    Some(s) if s.sources.is_empty() && s.transforms.is_empty() => {
                        ", a copy of the live file".to_string()
                    }
                    Some(s) => {
                        let list = |set: &BTreeSet<String>| {
                            set.iter().cloned().collect::<Vec<_>>().join(", ")
                        };
                        let mut parts = Vec::new();
                        if !s.sources.is_empty() {
                            parts.push(format!("{} republished", list(&s.sources)));
                        }
                        if !s.transforms.is_empty() {
                            parts.push(format!("transforms changed: {}", list(&s.transforms)));
                        }
                        format!(", {}", parts.join("; "))
                    }
                    None => String::new(),
                },
                if r.skipped.is_empty() {
                    String::new()
                } else {
                    format!(", {} skipped", r.skipped.len())
                }
            )),
            warnings: r.skipped.iter().map(|s| s.to_string()).collect(),
            ..Done::default()
        };
        *lock(&self.publish) = Publish::Staged(Box::new(staged));
        Ok(done)
    }

    /// A connection to the staged analytics file, `Ok(None)` when the live one is up to date.
    fn staged_connection(&self) -> Result<Option<Connection>, TaskError> {
        match &*lock(&self.publish) {
            Publish::Staged(s) => Ok(Some(s.connection()?)),
            Publish::UpToDate => Ok(None),
            _ => Err(TaskError::Internal(
                "analytics was not staged in this run".into(),
            )),
        }
    }

    fn transform(&self, name: &str) -> Result<Done, TaskError> {
        let t = self.registered.transforms.get(name).ok_or_else(|| {
            TaskError::NotRegistered(format!("transform `{name}` is not registered"))
        })?;
        let Some(conn) = self.staged_connection()? else {
            return Ok(Done {
                unchanged: true,
                detail: Some("analytics is up to date".into()),
                ..Done::default()
            });
        };
        let kept = lock(&self.affected)
            .as_ref()
            .is_some_and(|affected| !affected.contains(name));
        if kept {
            return Ok(Done {
                unchanged: true,
                detail: Some("kept: reads nothing that changed".into()),
                ..Done::default()
            });
        }
        let rows = analytics::build_transform(&conn, name, t)?;
        Ok(Done {
            rows: Some(rows),
            ..Done::default()
        })
    }

    /// Binds a metric's SQL (each grain, dimension and variant) against the analytics schema without
    /// running it: the same check as `pipeline metrics check` ([`crate::metrics::bind`]).
    fn check(&self, id: &str) -> Result<Done, TaskError> {
        let m =
            self.registered.metrics.get(id).ok_or_else(|| {
                TaskError::NotRegistered(format!("metric `{id}` is not registered"))
            })?;
        let conn = match self.staged_connection() {
            Ok(Some(c)) => c,
            _ => self.live_connection()?,
        };
        let templates = crate::metrics::Templates::of_registered(m);
        // Every SQL that does not bind, as `metrics check` lists them.
        let unbound = crate::metrics::bind(&conn, &templates);
        if unbound.is_empty() {
            Ok(Done::default())
        } else {
            let all: Vec<String> = unbound.iter().map(|u| u.summary()).collect();
            Err(TaskError::CheckFailed(all.join("; ")))
        }
    }

    fn live_connection(&self) -> Result<Connection, TaskError> {
        if !self.data.analytics().is_file() {
            return Err(TaskError::Missing(
                "there is no analytics.duckdb yet; run `pipeline run` first".into(),
            ));
        }
        Ok(analytics::open_live(&self.data, &self.policy).map(|(conn, _)| conn)?)
    }

    /// Whether the staged file is a full rebuild (`Some(true)`), a one-source copy (`Some(false)`),
    /// or there is none.
    pub fn staged_full(&self) -> Option<bool> {
        match &*lock(&self.publish) {
            Publish::Staged(s) => Some(s.scope.is_none()),
            _ => None,
        }
    }

    /// What the staged file publishes and skips (`None` unless a new file was staged).
    pub fn staged_report(&self) -> Option<analytics::Report> {
        match &*lock(&self.publish) {
            Publish::Staged(s) => Some(s.report.clone()),
            _ => None,
        }
    }

    /// Copies the previous results of `names` (transforms not built in this run, dependencies
    /// first) from the live file into the staged one; returns those kept. Nothing without a staged
    /// file: then the live file, and every transform in it, stays as it is.
    pub fn keep_previous(&self, names: &[String]) -> Vec<String> {
        match &*lock(&self.publish) {
            Publish::Staged(s) => s.keep_previous(names),
            _ => Vec::new(),
        }
    }

    /// After the DAG: swap the staged file in, recording each transform's status in it, or drop it
    /// when the run was stopped. `complete` says whether every transform was built; when not, the
    /// file records no fingerprint, so the next run rebuilds instead of calling it up to date.
    /// Returns whether a new file was published.
    pub fn finish(
        &self,
        cancelled: bool,
        transforms: &[analytics::TransformMeta],
        complete: bool,
    ) -> Result<bool, String> {
        let state = std::mem::replace(&mut *lock(&self.publish), Publish::Done);
        let result = match state {
            Publish::Staged(staged) if cancelled => {
                staged.abandon();
                Ok(false)
            }
            Publish::Staged(staged) => {
                // A one-source file is built from the other sources as the live file recorded
                // them; it is complete only if the live file was.
                let stamps = match &staged.scope {
                    Some(s) if complete && s.live_complete => Some(s.stamps.clone()),
                    Some(_) => None,
                    None if complete => Some(analytics::stamps(
                        &self.data,
                        &self.rules(),
                        &self.transform_keys(),
                    )),
                    None => None,
                };
                staged
                    .finish(stamps.as_ref(), transforms)
                    .map(|report| {
                        *lock(&self.published) = Some(report);
                        true
                    })
                    .map_err(|e| e.to_string())
            }
            _ => Ok(false),
        };
        lock(&self.analytics_lock).take();
        result
    }
}

impl Context {
    /// What the new analytics file publishes and skips, once published.
    pub fn published_report(&self) -> Option<analytics::Report> {
        lock(&self.published).clone()
    }

    /// Ownership changes of the published rebuild, to record in state.
    pub fn claims(&self) -> Claims {
        lock(&self.published)
            .as_ref()
            .map(|r| (r.claimed.clone(), r.released.clone()))
            .unwrap_or_default()
    }
}

/// Checks that remote tables can be read: each database attaches under the instance's policy (once
/// per alias) and the table binds there. Errors say which part failed.
struct RemoteProbe {
    conn: Connection,
    attached: HashMap<String, Result<(), String>>,
}

impl RemoteProbe {
    fn new() -> Result<RemoteProbe, String> {
        Ok(RemoteProbe {
            conn: Connection::open_in_memory().map_err(|e| e.to_string())?,
            attached: HashMap::new(),
        })
    }

    fn check(
        &mut self,
        remote: &connectors::RemoteTable,
        policy: &RemotePolicy,
    ) -> Result<(), String> {
        let alias = &remote.attach.alias;
        let conn = &self.conn;
        self.attached
            .entry(alias.clone())
            .or_insert_with(|| {
                extract_db::remote::attach(conn, &remote.attach, policy).map_err(|e| e.to_string())
            })
            .clone()?;
        let (Some(a), Some(s), Some(t)) = (
            quote::ident(alias),
            quote::ident(&remote.schema),
            quote::ident(&remote.table),
        ) else {
            return Err(format!(
                "remote table `{}.{}` has an unsafe name",
                remote.schema, remote.table
            ));
        };
        self.conn
            .prepare(&format!("SELECT * FROM {a}.{s}.{t}"))
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "remote table {}.{} cannot be read: {}",
                    remote.schema,
                    remote.table,
                    e.to_string().lines().next().unwrap_or_default()
                )
            })
    }
}

pub fn thousands(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

//! The one-source publish: republish one source in a copy of the live analytics file instead of
//! rebuilding it from every extract (`pipeline run --source X`, push connectors after each event).
//!
//! [`stage_source`] copies the live file aside (a reflink where the file system has them, else a
//! plain copy), drops that source's views and creates them again from its extract (with its
//! `_remote_attach` attachments), keeping every other object as it is. It refuses — and the caller
//! falls back to the full rebuild ([`super::stage`]) — when there is no live file, when the live file
//! does not record what it was built from, or when anything else changed since it was built: another
//! source's extract, the set of sources, the transforms or the rules. So a one-source publish always
//! yields the file a full rebuild would, only faster. The transforms that read the source (and what
//! reads them, [`crate::registry::dag::transforms_reading`]) are built again in the copy; the others
//! keep their result. [`super::Staged::finish`] then checkpoints the copy and renames it over the
//! live file, as for a full rebuild: readers never see half a state, a crash leaves the previous
//! file whole.
//!
//! [`publish_source`] does all of it for one source, for callers without a run (benchmarks, tools);
//! a run (`exec`) stages with [`stage_source`] and builds the transforms as tasks, and
//! `exec::publish_source` records the result in the state.

use super::{
    add_source, attach, db_err, extract_dirs, fold, folded, AnalyticsError, Published, Report,
    Rules, Skipped, Staged, Stamps, TransformKeys, TransformMeta, META_SCHEMA,
};
use crate::extract_db::{self, remote, ExtractDir};
use crate::files::FileId;
use crate::fslock::Lock;
use crate::instance::DataDir;
use crate::quote;
use crate::registry::registered::Registered;
use duckdb::Connection;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// What a scoped publish republishes (one source, or none for a run that only builds chosen
/// transforms), and the live file it started from.
#[derive(Clone, Debug)]
pub struct Scope {
    pub sources: BTreeSet<String>,
    /// Transforms changed, added or removed since the live file was built (by name): what reads
    /// them is built again with them.
    pub transforms: BTreeSet<String>,
    /// The stamps of what the new file is built from (the other sources as the live file recorded
    /// them, these sources as they are now).
    pub stamps: Stamps,
    /// The live file recorded a fingerprint (every transform was built then): the new one is
    /// complete when every transform it rebuilds builds.
    pub live_complete: bool,
    /// `_pipeline.transforms` of the live file: the status of the transforms not rebuilt.
    pub previous_transforms: Vec<TransformMeta>,
    /// The views these sources published before (lower-case).
    pub views_before: BTreeSet<String>,
}

/// What [`publish_source`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PublishReport {
    pub source: String,
    /// `true`: the whole file was rebuilt (no live file, or something besides this source changed).
    pub full: bool,
    /// Every published table of the new file, what was skipped, and the ownership changes.
    pub report: Report,
    /// The transforms built again, in the order they were built, with their status (`ok`; `failed`
    /// or `stale` keep their previous result).
    pub transforms: Vec<TransformMeta>,
    pub elapsed_ms: u128,
}

/// Copies `from` to `to`: a reflink (`FICLONE`: the copy shares the blocks until either side
/// writes) where the file system supports it, else a plain copy.
pub fn clone_file(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let src = std::fs::File::open(from)?;
        let dst = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)?;
        // FICLONE = _IOW(0x94, 9, int).
        const FICLONE: libc::c_ulong = 0x4004_9409;
        // SAFETY: both descriptors are open for the duration of the call; FICLONE reads only the
        // source descriptor passed as its argument.
        let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
        if rc == 0 {
            return Ok(());
        }
        drop(dst);
        std::fs::remove_file(to)?;
    }
    std::fs::copy(from, to).map(|_| ())
}

/// Key in `_pipeline.info` holding the [`Stamps`] the file was built from.
const STAMPS_KEY: &str = "stamps";

/// What changed since the live file was built: what a scoped publish rebuilds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Sources whose extract changed, appeared or went away.
    pub sources: BTreeSet<String>,
    /// Transforms whose definition changed, and those added or removed (by name).
    pub transforms: BTreeSet<String>,
}

impl Changed {
    pub fn source(source: &str) -> Changed {
        Changed {
            sources: BTreeSet::from([source.to_string()]),
            ..Changed::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty() && self.transforms.is_empty()
    }
}

/// What the live file records about its build, read in one look.
#[derive(Clone, Debug, Default)]
pub struct LiveRecord {
    /// `_pipeline.info.fingerprint`: [`Stamps::fingerprint`] when every transform was built,
    /// [`super::INCOMPLETE`] when not.
    pub fingerprint: Option<String>,
    /// The stamps it was built from (absent in files older than scoped publishes).
    pub stamps: Option<Stamps>,
    /// What it left out, one line each (`_pipeline.skipped`), when the record beside it says
    /// ([`super::live_skipped`] reads the file otherwise).
    pub skipped: Option<Vec<String>>,
}

/// `analytics.record.json` beside the live file: its [`LiveRecord`] with the identity (inode, size,
/// modification time in ns) of the file it describes, so a run learns whether analytics is up to
/// date without starting DuckDB to open the file. Written for the staged file just before it is
/// renamed into place (a rename keeps all three); a record whose identity is not the live file's —
/// a crash between the two, a file replaced by other means — is ignored, and the file is read.
#[derive(Serialize, serde::Deserialize)]
struct RecordFile {
    file: FileId,
    fingerprint: String,
    stamps: Option<Stamps>,
    skipped: Vec<String>,
}

fn record_path(layout: &DataDir) -> std::path::PathBuf {
    layout.analytics().with_file_name("analytics.record.json")
}

impl LiveRecord {
    /// Reads it from the record beside the live file when that describes it, else from the live
    /// file itself (empty when there is none or it does not say).
    pub fn read(layout: &DataDir) -> LiveRecord {
        if let Some(record) = Self::from_record_file(layout) {
            return record;
        }
        let info = super::live_infos(layout, &["fingerprint", STAMPS_KEY]);
        LiveRecord {
            fingerprint: info.get("fingerprint").cloned(),
            stamps: info
                .get(STAMPS_KEY)
                .and_then(|v| serde_json::from_str(v).ok()),
            skipped: None,
        }
    }

    /// From the record beside the live file alone (`None` when it does not describe the file).
    pub(super) fn from_record_file(layout: &DataDir) -> Option<LiveRecord> {
        let text = std::fs::read(record_path(layout)).ok()?;
        let record: RecordFile = serde_json::from_slice(&text).ok()?;
        (FileId::of(&layout.analytics())? == record.file).then_some(LiveRecord {
            fingerprint: Some(record.fingerprint),
            stamps: record.stamps,
            skipped: Some(record.skipped),
        })
    }

    /// Writes the record of the finished file at `staged`, about to become the live one. Best
    /// effort: without it, the next run reads the file.
    pub(super) fn write_for(
        layout: &DataDir,
        staged: &Path,
        fingerprint: &str,
        stamps: Option<&Stamps>,
        skipped: &[Skipped],
    ) {
        let write = || -> Option<()> {
            let record = RecordFile {
                file: FileId::of(staged)?,
                fingerprint: fingerprint.to_string(),
                stamps: stamps.cloned(),
                skipped: {
                    // In the order `_pipeline.skipped` is read (by source, then table; NULLs last).
                    let mut sorted: Vec<&Skipped> = skipped.iter().collect();
                    sorted.sort_by_key(|k| (&k.source, k.table.is_none(), &k.table));
                    sorted.iter().map(|k| k.to_string()).collect()
                },
            };
            crate::files::write_aside(&record_path(layout), &serde_json::to_vec(&record).ok()?).ok()
        };
        if write().is_none() {
            tracing::debug!("analytics record not written; the next run reads the file");
        }
    }

    /// The live file is what a full rebuild from `now` would make.
    pub fn up_to_date(&self, now: &Stamps) -> bool {
        self.fingerprint.as_deref() == Some(now.fingerprint().as_str())
    }

    /// What changed since the live file was built, when republishing only that yields the file a
    /// full rebuild would: the live file records what it was built from, it was complete (every
    /// transform built, so every transform kept from it is good), and the rules are the same.
    /// `None` otherwise: rebuild it whole. A run that synced many sources but changed few
    /// republishes those few ([`stage_sources`]) and rebuilds only the transforms that read them;
    /// a changed transform is rebuilt with what reads it.
    pub fn changed(&self, layout: &DataDir, now: &Stamps) -> Option<Changed> {
        let recorded = self.stamps.as_ref()?;
        if self.fingerprint.as_deref() != Some(recorded.fingerprint().as_str())
            || now.rules != recorded.rules
        {
            return None;
        }
        let sources = differing(&recorded.sources, &now.sources);
        // A source whose directory is gone releases its views' claims: only a full rebuild does that.
        if sources.iter().any(|s| !layout.extracts().join(s).is_dir()) {
            return None;
        }
        Some(Changed {
            sources,
            transforms: differing(&recorded.transforms, &now.transforms),
        })
    }
}

/// The keys whose values differ between `a` and `b` (present in one only included).
fn differing(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> BTreeSet<String> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// Stages a copy of the live file with `source` republished, or `Ok(None)` when the full rebuild
/// is needed instead (see the module documentation). `transforms` are the transform keys of the
/// fingerprint ([`super::stamps`]). The caller holds the analytics lock.
pub fn stage_source(
    layout: &DataDir,
    rules: &Rules,
    transforms: &TransformKeys,
    source: &str,
) -> Result<Option<Staged>, AnalyticsError> {
    let now = super::stamps(layout, rules, transforms);
    stage_sources(layout, rules, &now, &Changed::source(source))
}

/// [`stage_source`] for what `changed` names: its sources are republished; its transforms are
/// dropped from the copy (a removed one stays out, a changed one is built again by the caller).
/// With nothing changed, the copy keeps every view and only the transforms a run chose are built
/// in it (`pipeline run --select`). `now`: the stamps of what a rebuild would read now. Refused
/// (`Ok(None)`) like the others when anything besides `changed` differs from what the live file
/// was built from, or when an added or removed transform's name is one a table publishes or was
/// refused (only a full rebuild settles who owns that name).
pub fn stage_sources(
    layout: &DataDir,
    rules: &Rules,
    now: &Stamps,
    changed: &Changed,
) -> Result<Option<Staged>, AnalyticsError> {
    let sources = &changed.sources;
    let mut dirs = Vec::new();
    for source in sources {
        match ExtractDir::new(&layout.extracts(), source)
            .filter(|_| !remote::is_reserved_catalog(source))
        {
            Some(dir) => dirs.push(dir),
            None => return Ok(None),
        }
    }
    let scope_names = || sources.iter().cloned().collect::<Vec<_>>().join(", ");
    let live = layout.analytics();
    if !live.is_file() {
        return Ok(None);
    }
    let tmp = layout.staging();
    if let Some(parent) = tmp.parent() {
        std::fs::create_dir_all(parent).map_err(|e| AnalyticsError::Io(parent.into(), e))?;
    }
    extract_db::remove_db_files(&tmp)?;
    let clock = Instant::now();
    clone_file(&live, &tmp).map_err(|e| AnalyticsError::Io(tmp.clone(), e))?;
    tracing::debug!(elapsed = ?clock.elapsed(), "scoped publish: copied");
    let err = db_err(&tmp);
    let give_up = |conn: Connection, why: &str| -> Result<Option<Staged>, AnalyticsError> {
        tracing::debug!(
            sources = %scope_names(),
            "scoped publish not possible ({why}); full rebuild"
        );
        drop(conn);
        extract_db::remove_db_files(&tmp)?;
        Ok(None)
    };
    let conn = Connection::open(&tmp).map_err(&err)?;
    tracing::debug!(elapsed = ?clock.elapsed(), "scoped publish: opened");
    conn.execute_batch(&format!("SET TimeZone = 'UTC'; {}", rules.limits.sql()))
        .map_err(&err)?;
    let s = META_SCHEMA;
    let info: BTreeMap<String, Option<String>> = conn
        .prepare(&format!("SELECT key, value FROM {s}.info"))
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|r| r.collect())
        })
        .unwrap_or_default();
    let recorded: Option<Stamps> = info
        .get(STAMPS_KEY)
        .cloned()
        .flatten()
        .and_then(|v| serde_json::from_str(&v).ok());
    let Some(recorded) = recorded else {
        return give_up(conn, "the live file does not record what it was built from");
    };
    if recorded.rules != now.rules {
        return give_up(conn, "the rules changed");
    }
    if !differing(&recorded.transforms, &now.transforms).is_subset(&changed.transforms) {
        return give_up(conn, "a transform changed since the live file was built");
    }
    if !differing(&recorded.sources, &now.sources).is_subset(sources) {
        return give_up(conn, "another source changed since the live file was built");
    }
    let live_complete = info
        .get("fingerprint")
        .cloned()
        .flatten()
        .is_some_and(|f| f == recorded.fingerprint());

    // The live file's description of itself: the other sources' rows stay, this source's go.
    let read_published = || -> duckdb::Result<Vec<Published>> {
        let mut stmt = conn.prepare(&format!(
            "SELECT name, source, query_mode, description, rows, size_bytes, \
             CAST(extracted_at AS VARCHAR), needs_attach FROM {s}.tables"
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok(Published {
                name: r.get(0)?,
                source: r.get(1)?,
                query_mode: r.get(2)?,
                description: r.get(3)?,
                rows: r.get(4)?,
                size_bytes: r.get(5)?,
                extracted_at: r.get(6)?,
                needs_attach: r.get(7)?,
            })
        })?;
        rows.collect()
    };
    let Ok(all_before) = read_published() else {
        return give_up(conn, "the live file has no readable _pipeline.tables");
    };
    let previous_transforms: Vec<TransformMeta> = conn
        .prepare(&format!("SELECT name, status, reason FROM {s}.transforms"))
        .and_then(|mut st| {
            st.query_map([], |r| {
                Ok(TransformMeta {
                    name: r.get(0)?,
                    status: r.get(1)?,
                    reason: r.get(2)?,
                })
            })
            .and_then(|r| r.collect())
        })
        .map_err(&err)?;
    let skipped_before: Vec<Skipped> = conn
        .prepare(&format!(
            "SELECT source, table_name, reason FROM {s}.skipped"
        ))
        .and_then(|mut st| {
            st.query_map([], |r| {
                Ok(Skipped {
                    source: r.get(0)?,
                    table: r.get(1)?,
                    reason: r.get(2)?,
                })
            })
            .and_then(|r| r.collect::<duckdb::Result<Vec<Skipped>>>())
        })
        .map_err(&err)?;
    let attachments_before = attach::read(&conn, None).map_err(&err)?;
    tracing::debug!(elapsed = ?clock.elapsed(), "scoped publish: live file read");
    // A transform that comes or goes may free or take a name a table publishes (or was refused):
    // only a full rebuild decides who owns it then.
    let tables_named: BTreeSet<String> = all_before
        .iter()
        .map(|p| fold(&p.name))
        .chain(
            skipped_before
                .iter()
                .filter_map(|k| k.table.as_deref().map(fold)),
        )
        .collect();
    let comes_or_goes = changed
        .transforms
        .iter()
        .filter(|t| recorded.transforms.contains_key(*t) != now.transforms.contains_key(*t));
    if let Some(t) = comes_or_goes
        .into_iter()
        .find(|t| tables_named.contains(&fold(t)))
    {
        return give_up(
            conn,
            &format!("transform `{t}` comes or goes where a table is named"),
        );
    }

    let mut kept = Report::default();
    let mut views_before = BTreeSet::new();
    // The changed transforms' previous results go (a removed one stays out, a changed one is built
    // again, perhaps as another kind of object; a failed build takes the live one back).
    let mut drops = transform_drops(&conn, &changed.transforms).map_err(&err)?;
    for p in all_before {
        if sources.contains(&p.source) {
            views_before.insert(fold(&p.name));
            if let Some(v) = quote::ident(&p.name) {
                drops.push_str(&format!("DROP VIEW IF EXISTS {v};\n"));
            }
        } else {
            kept.published.push(p);
        }
    }
    kept.attachments = attachments_before
        .into_iter()
        .filter(|a| !sources.contains(&a.source))
        .collect();
    // One transaction: the old views go and the metadata tables are written anew at finish.
    conn.execute_batch(&format!(
        "BEGIN;\n{drops}DROP TABLE {s}.tables; DROP TABLE {s}.transforms; DROP TABLE {s}.info; \
         DROP TABLE IF EXISTS {s}.attachments; DROP TABLE IF EXISTS {s}.skipped;\nCOMMIT;"
    ))
    .map_err(&err)?;
    // What the kept views read through must be attached for the transforms built on them to bind.
    for problem in attach::attach_all(&conn, &kept.attachments, &rules.policy) {
        tracing::warn!(sources = %scope_names(), "scoped publish: {problem}");
    }
    // Catalog names in use: every extract directory and every kept attachment. Directories that
    // are no source at all (an unsafe or reserved name) are reported as they are now, as a full
    // rebuild would.
    let mut dir_skips = Vec::new();
    let dirs_now = extract_dirs(&layout.extracts(), &mut dir_skips);
    let catalogs: BTreeSet<String> = sources
        .iter()
        .cloned()
        .chain(dirs_now.into_iter().map(|d| d.source))
        .chain(kept.attachments.iter().map(|a| a.alias.clone()))
        .collect();
    let mut taken = folded(&rules.owners);
    for p in &kept.published {
        taken.insert(fold(&p.name), p.source.clone());
    }
    let mut fresh = Report::default();
    for dir in &dirs {
        add_source(&conn, dir, rules, &catalogs, &mut taken, &mut fresh);
    }
    tracing::debug!(elapsed = ?clock.elapsed(), "scoped publish: sources added");
    let mut all = kept;
    all.published.extend(fresh.published);
    all.attachments.extend(fresh.attachments);
    all.skipped = dir_skips;
    // The other sources' problems stay (these sources' are found again by `add_source`); a
    // problem of a whole directory only while that directory is still a source.
    all.skipped.extend(skipped_before.into_iter().filter(|k| {
        !sources.contains(&k.source)
            && (k.table.is_some()
                || (ExtractDir::new(&layout.extracts(), &k.source).is_some()
                    && !remote::is_reserved_catalog(&k.source)))
    }));
    all.skipped.extend(fresh.skipped);
    all.claimed = fresh.claimed;
    all.released = fresh.released;
    // The new file is built from the others as recorded, these sources and the transforms as
    // they are now.
    let mut stamps = recorded;
    for source in sources {
        match now.sources.get(source) {
            Some(v) => stamps.sources.insert(source.clone(), v.clone()),
            None => stamps.sources.remove(source),
        };
    }
    stamps.transforms = now.transforms.clone();
    Ok(Some(Staged {
        conn,
        layout: layout.clone(),
        report: all,
        scope: Some(Scope {
            sources: sources.clone(),
            transforms: changed.transforms.clone(),
            stamps,
            live_complete,
            previous_transforms,
            views_before,
        }),
    }))
}

/// `DROP` statements for the objects of the main schema named in `names` (any case).
fn transform_drops(conn: &Connection, names: &BTreeSet<String>) -> duckdb::Result<String> {
    if names.is_empty() {
        return Ok(String::new());
    }
    let wanted: BTreeSet<String> = names.iter().map(|n| fold(n)).collect();
    let mut stmt = conn.prepare(
        "SELECT table_name, 'TABLE' FROM duckdb_tables() \
         WHERE database_name = current_database() AND schema_name = 'main' \
         UNION ALL SELECT view_name, 'VIEW' FROM duckdb_views() \
         WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal",
    )?;
    let objects = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<duckdb::Result<Vec<_>>>()?;
    Ok(objects
        .into_iter()
        .filter(|(name, _)| wanted.contains(&fold(name)))
        .filter_map(|(name, kind)| {
            Some(format!("DROP {kind} IF EXISTS {};\n", quote::ident(&name)?))
        })
        .collect())
}

/// The names a source's republish may change: the views it published before, the ones it
/// publishes now and its registered tables' names (lower-case).
pub fn changed_names(registered: &Registered, staged: &Staged, source: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = registered
        .tables_of(source)
        .map(|t| fold(&t.name))
        .collect();
    if let Some(scope) = &staged.scope {
        names.extend(scope.views_before.iter().cloned());
    }
    names.extend(
        staged
            .report
            .published
            .iter()
            .filter(|p| p.source == source)
            .map(|p| fold(&p.name)),
    );
    names
}

/// Republishes one source: takes the analytics lock (waiting up to `lock_timeout`), stages a copy
/// of the live file with that source's views replaced ([`stage_source`]; the full rebuild when it
/// refuses), builds the transforms that read them again in dependency order (one that fails keeps
/// its previous result, marked `failed`; what reads it keeps its own, marked `stale`), and swaps the
/// copy in. Records nothing in the state: `exec::publish_source` does that.
pub fn publish_source(
    layout: &DataDir,
    rules: &Rules,
    registered: &Registered,
    source: &str,
    lock_timeout: Duration,
) -> Result<PublishReport, AnalyticsError> {
    let clock = Instant::now();
    let _held = Lock::acquire(
        &layout.analytics_lock(),
        "pipeline publish (one source)",
        lock_timeout,
        |h| {
            let who = h.map_or("another process".to_string(), |h| h.to_string());
            tracing::warn!("waiting for the analytics lock held by {who}");
        },
    )
    .map_err(|e| AnalyticsError::Lock(e.to_string()))?;
    let keys = transform_keys(registered);
    let (staged, full) = match stage_source(layout, rules, &keys, source)? {
        Some(s) => (s, false),
        None => (super::stage(layout, rules)?, true),
    };
    // A full rebuild starts from nothing: every transform is built.
    let order: Vec<String> = if full {
        crate::registry::dag::transforms_reading(registered, None)
    } else {
        let names = changed_names(registered, &staged, source);
        crate::registry::dag::transforms_reading(registered, Some(&names))
    };
    let conn = staged.connection()?;
    let mut built: Vec<TransformMeta> = Vec::new();
    let mut not_ok: BTreeMap<String, String> = BTreeMap::new();
    for name in &order {
        let Some(t) = registered.transforms.get(name) else {
            continue;
        };
        let bad_input = t
            .inputs
            .iter()
            .find_map(|i| not_ok.get(&fold(i)).map(|why| (i.clone(), why.clone())));
        let meta = match bad_input {
            Some((input, why)) => TransformMeta {
                name: name.clone(),
                status: "stale".into(),
                reason: Some(format!("`{input}` is {why}")),
            },
            None => match super::build_transform(&conn, name, t) {
                Ok(_) => TransformMeta {
                    name: name.clone(),
                    status: "ok".into(),
                    reason: None,
                },
                Err(e) => TransformMeta {
                    name: name.clone(),
                    status: "failed".into(),
                    reason: Some(e.to_string().lines().next().unwrap_or_default().to_string()),
                },
            },
        };
        if meta.status != "ok" {
            not_ok.insert(fold(name), meta.status.clone());
        }
        built.push(meta);
    }
    drop(conn);
    let not_built: Vec<String> = built
        .iter()
        .filter(|m| m.status != "ok")
        .map(|m| m.name.clone())
        .collect();
    let kept = staged.keep_previous(&not_built);
    // Every transform's status: the rebuilt ones' new one, the others' as the live file said.
    let mut metas: BTreeMap<String, TransformMeta> = staged
        .scope
        .as_ref()
        .map(|s| {
            s.previous_transforms
                .iter()
                .map(|m| (m.name.clone(), m.clone()))
                .collect()
        })
        .unwrap_or_default();
    for m in &built {
        let mut m = m.clone();
        if m.status != "ok" && !kept.contains(&m.name) {
            m.status = "missing".into();
        }
        metas.insert(m.name.clone(), m);
    }
    metas.retain(|name, _| registered.transforms.contains_key(name));
    let metas: Vec<TransformMeta> = metas.into_values().collect();
    let complete = not_built.is_empty();
    let stamps = match &staged.scope {
        Some(s) if complete && s.live_complete => Some(s.stamps.clone()),
        Some(_) => None,
        None if complete => Some(super::stamps(layout, rules, &keys)),
        None => None,
    };
    let report = staged.finish(stamps.as_ref(), &metas)?;
    Ok(PublishReport {
        source: source.to_string(),
        full,
        report,
        transforms: built,
        elapsed_ms: clock.elapsed().as_millis(),
    })
}

/// Each transform's definition stamp, for the analytics stamps ([`super::stamps`]): a changed one
/// is built again with what reads it.
pub fn transform_keys(registered: &Registered) -> TransformKeys {
    registered
        .transforms
        .values()
        .map(|t| {
            let parts = [
                t.materialized().as_str().to_string(),
                t.sql.clone(),
                format!("{:?}", t.checks),
            ];
            (t.name.clone(), crate::connectors::fingerprint_of(&parts))
        })
        .collect()
}

/// The views `source` published in the live file (lower-case); `None` when there is no live file or
/// it does not say (a one-source publish is then not possible).
pub fn live_views(layout: &DataDir, source: &str) -> Option<BTreeSet<String>> {
    let live = layout.analytics();
    if !live.is_file() {
        return None;
    }
    let conn = Connection::open_in_memory().ok()?;
    conn.execute_batch(&format!(
        "ATTACH {} AS live (READ_ONLY)",
        quote::path(&live)
    ))
    .ok()?;
    let mut stmt = conn
        .prepare(&format!(
            "SELECT lower(name) FROM live.{META_SCHEMA}.tables WHERE source = ?"
        ))
        .ok()?;
    let rows = stmt.query_map([source], |r| r.get(0)).ok()?;
    rows.collect::<Result<BTreeSet<String>, _>>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::tests::{count, extract, extract_from};
    use crate::registry::registered::TransformDef;

    fn transform(name: &str, sql: &str, inputs: &[&str]) -> (String, TransformDef) {
        (
            name.to_string(),
            TransformDef {
                name: name.into(),
                checks: Vec::new(),
                source: "x".into(),
                materialized: None,
                sql: sql.into(),
                inputs: inputs.iter().map(|s| s.to_string()).collect(),
                inputs_uncertain: Vec::new(),
                description: None,
                columns: Default::default(),
                tags: Vec::new(),
            },
        )
    }

    /// `a` publishes `one`, `b` publishes `two`; `t1` reads one, `t2` reads t1, `t3` reads two.
    fn setup(dir: &Path) -> (DataDir, Registered) {
        let l = DataDir::new(dir);
        extract(&l.extracts(), "a", "one", 3);
        extract(&l.extracts(), "b", "two", 5);
        let reg = Registered {
            transforms: [
                transform("t1", "select count(id) as n from one", &["one"]),
                transform("t2", "select n * 10 as n from t1", &["t1"]),
                transform("t3", "select count(*) as n from two", &["two"]),
            ]
            .into(),
            ..Registered::default()
        };
        (l, reg)
    }

    fn rules(reg: &Registered) -> Rules {
        Rules {
            reserved: reg.transforms.keys().cloned().collect(),
            ..Rules::default()
        }
    }

    fn status(l: &DataDir) -> Vec<(String, String)> {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(&format!(
            "ATTACH {} AS x (READ_ONLY)",
            quote::path(&l.analytics())
        ))
        .unwrap();
        c.prepare("SELECT name, status FROM x._pipeline.transforms ORDER BY name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn changed_transforms_are_staged_unless_one_takes_a_table_name_or_the_rules_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let (l, mut reg) = setup(tmp.path());
        publish_source(&l, &rules(&reg), &reg, "a", WAIT).unwrap();
        let stage = |reg: &Registered| {
            let now = crate::analytics::stamps(&l, &rules(reg), &transform_keys(reg));
            let changed = LiveRecord::read(&l).changed(&l, &now).expect("comparable");
            let staged = stage_sources(&l, &rules(reg), &now, &changed).unwrap();
            (changed, staged)
        };
        // An edited transform and a new one: staged in a copy, the edited one dropped from it.
        reg.transforms
            .extend([transform("t3", "select 7 as n", &[])]);
        reg.transforms
            .extend([transform("t4", "select 1 as n", &[])]);
        let (changed, staged) = stage(&reg);
        assert_eq!(
            changed,
            Changed {
                transforms: BTreeSet::from(["t3".to_string(), "t4".to_string()]),
                ..Changed::default()
            }
        );
        let staged = staged.expect("a copy");
        let conn = staged.connection().unwrap();
        assert!(
            conn.prepare("SELECT * FROM t3").is_err(),
            "dropped for its rebuild"
        );
        assert!(conn.prepare("SELECT * FROM t1").is_ok(), "kept");
        drop(conn);
        staged.abandon();
        // A new transform named like a published table: only a full rebuild decides.
        reg.transforms
            .extend([transform("two", "select 2 as n", &[])]);
        let (changed, staged) = stage(&reg);
        assert!(changed.transforms.contains("two"));
        assert!(staged.is_none());
        // Other rules: no comparison at all.
        reg.transforms.remove("two");
        let mut other = rules(&reg);
        other.policy.extensions = vec!["postgres".into()];
        let now = crate::analytics::stamps(&l, &other, &transform_keys(&reg));
        assert_eq!(LiveRecord::read(&l).changed(&l, &now), None);
    }

    #[test]
    fn a_republished_source_s_problems_are_found_again_not_repeated() {
        let tmp = tempfile::tempdir().unwrap();
        let (l, _) = setup(tmp.path());
        // No transforms: a file without `a` is still complete, so the next publish is scoped too.
        let reg = Registered::default();
        publish_source(&l, &rules(&reg), &reg, "a", WAIT).unwrap();
        std::fs::write(l.extracts().join("a/extract.duckdb"), b"not a database").unwrap();
        for _ in 0..2 {
            let r = publish_source(&l, &rules(&reg), &reg, "a", WAIT).unwrap();
            assert!(!r.full);
            let of_a: Vec<String> = r
                .report
                .skipped
                .iter()
                .filter(|k| k.source == "a")
                .map(|k| k.to_string())
                .collect();
            assert_eq!(of_a.len(), 1, "{of_a:?}");
        }
    }

    #[test]
    fn the_record_beside_the_live_file_is_trusted_only_for_that_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (l, reg) = setup(tmp.path());
        publish_source(&l, &rules(&reg), &reg, "a", WAIT).unwrap();
        assert!(record_path(&l).is_file());
        let from_record = LiveRecord::read(&l);
        assert!(from_record.skipped.is_some(), "read from the record");
        assert_eq!(
            from_record.fingerprint,
            crate::analytics::live_fingerprint(&l),
            "the record says what the file says"
        );
        let now = crate::analytics::stamps(&l, &rules(&reg), &transform_keys(&reg));
        assert!(from_record.up_to_date(&now));
        // The live file replaced by other means (here: the same bytes in a new file): the record no
        // longer describes it, and the file itself is read.
        let copy = tmp.path().join("other.duckdb");
        std::fs::copy(l.analytics(), &copy).unwrap();
        std::fs::rename(&copy, l.analytics()).unwrap();
        let from_file = LiveRecord::read(&l);
        assert!(from_file.skipped.is_none(), "read from the file");
        assert_eq!(from_file.fingerprint, from_record.fingerprint);
        assert_eq!(from_file.stamps, from_record.stamps);
    }

    #[test]
    fn one_source_is_republished_with_what_reads_it_and_the_rest_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let (l, reg) = setup(tmp.path());
        let first = publish_source(&l, &rules(&reg), &reg, "a", WAIT).unwrap();
        assert!(first.full, "no live file yet: a full rebuild");
        assert_eq!(count(&l.analytics(), "t3"), 1);

        extract(&l.extracts(), "a", "one", 7);
        let r = publish_source(&l, &rules(&reg), &reg, "a", WAIT).unwrap();
        assert!(!r.full);
        let built: Vec<&str> = r.transforms.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(built, ["t1", "t2"], "t3 reads only b");
        assert_eq!(count(&l.analytics(), "one"), 7);
        assert_eq!(count(&l.analytics(), "two"), 5);
        let n = |t: &str| -> i64 {
            let policy = crate::extract_db::RemotePolicy::default();
            let (c, _) = crate::analytics::open_live(&l, &policy).unwrap();
            c.query_row(&format!("SELECT n FROM {t}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(n("t1"), 7);
        assert_eq!(n("t2"), 70);
        assert_eq!(n("t3"), 5);
        assert_eq!(r.report.published.len(), 2, "both sources stay described");
        // The file is the one a full rebuild would make: its fingerprint says so.
        let keys = transform_keys(&reg);
        assert_eq!(
            crate::analytics::live_fingerprint(&l),
            Some(crate::analytics::fingerprint(&l, &rules(&reg), &keys))
        );
    }

    #[test]
    fn a_failing_transform_keeps_its_result_and_what_reads_it_goes_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let (l, reg) = setup(tmp.path());
        publish_source(&l, &rules(&reg), &reg, "a", WAIT).unwrap();
        // `one` loses its column `id`, which t1 reads.
        extract_from(
            &l.extracts(),
            "a",
            "one",
            "SELECT range AS other FROM range(4)",
            4,
        );
        let r = publish_source(&l, &rules(&reg), &reg, "a", WAIT).unwrap();
        assert!(!r.full);
        let by: BTreeMap<&str, &str> = r
            .transforms
            .iter()
            .map(|t| (t.name.as_str(), t.status.as_str()))
            .collect();
        assert_eq!(by, BTreeMap::from([("t1", "failed"), ("t2", "stale")]));
        assert_eq!(
            status(&l),
            [("t1", "failed"), ("t2", "stale"), ("t3", "ok")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        // Last good results stay published.
        assert_eq!(count(&l.analytics(), "t1"), 1);
        assert_eq!(count(&l.analytics(), "t2"), 1);
        // Not complete: the next run publishes again.
        assert_eq!(
            crate::analytics::live_fingerprint(&l).as_deref(),
            Some(crate::analytics::INCOMPLETE)
        );
    }

    #[test]
    fn another_changed_source_means_a_full_rebuild() {
        let tmp = tempfile::tempdir().unwrap();
        let (l, reg) = setup(tmp.path());
        publish_source(&l, &rules(&reg), &reg, "a", WAIT).unwrap();
        extract(&l.extracts(), "b", "two", 6);
        extract(&l.extracts(), "a", "one", 8);
        let r = publish_source(&l, &rules(&reg), &reg, "a", WAIT).unwrap();
        assert!(r.full, "b changed too");
        assert_eq!(count(&l.analytics(), "two"), 6);
        assert_eq!(count(&l.analytics(), "one"), 8);
        // A new source is a change of the set of sources: full again.
        extract(&l.extracts(), "c", "three", 2);
        let r = publish_source(&l, &rules(&reg), &reg, "a", WAIT).unwrap();
        assert!(r.full);
        assert_eq!(count(&l.analytics(), "three"), 2);
        // Then only `a` again: one source.
        extract(&l.extracts(), "a", "one", 9);
        let r = publish_source(&l, &rules(&reg), &reg, "a", WAIT).unwrap();
        assert!(!r.full);
        assert_eq!(count(&l.analytics(), "one"), 9);
        assert_eq!(count(&l.analytics(), "three"), 2);
    }

    #[test]
    fn transforms_reading_follows_dependants_in_order() {
        let reg = Registered {
            transforms: [
                transform("b2", "", &["b1", "x"]),
                transform("b1", "", &["one"]),
                transform("c", "", &["two"]),
                transform("a", "", &["B2"]),
            ]
            .into(),
            ..Registered::default()
        };
        let names = BTreeSet::from(["one".to_string()]);
        assert_eq!(
            crate::registry::dag::transforms_reading(&reg, Some(&names)),
            ["b1", "b2", "a"]
        );
        assert_eq!(
            crate::registry::dag::transforms_reading(&reg, None),
            ["b1", "c", "b2", "a"]
        );
    }
}

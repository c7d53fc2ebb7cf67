//! Extracting one table to Parquet, the same way for every connector: filters, full or incremental
//! or partitioned sync, checks, and the swap into place.
//!
//! New data is written beside the old (`<t>.parquet.tmp`, `<t>.tmp/`), checked, made durable, and
//! only then renamed over it: a failed, interrupted or killed extract leaves the previous Parquet
//! whole and queryable. Incremental sync re-reads rows from the last cursor (minus `window_days`) and
//! merges them by primary key, so re-runs never duplicate rows.

use crate::checks;
use crate::connectors::{Connector, ConnectorError, Scan, Session};
use crate::contract::{sync_dir, ExtractDir, LocalData};
use crate::quote;
use crate::registered::{Filter, SourceDef, TableDef};
use crate::spec::model::{Granularity, SyncMode};
use duckdb::Connection;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error("{0}")]
    Query(String),
    #[error("{0}; the previous data is kept")]
    Check(String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// What the last successful extract of a table recorded (sync_state).
#[derive(Clone, Debug, Default)]
pub struct Previous {
    pub fingerprint: Option<String>,
    pub last_cursor: Option<String>,
    pub rows: Option<i64>,
    pub size_bytes: Option<i64>,
    pub hash: Option<String>,
}

/// The result of a successful extract task.
#[derive(Clone, Debug, PartialEq)]
pub struct Extracted {
    /// Rows in the table now.
    pub rows: i64,
    /// Parquet bytes now.
    pub bytes: i64,
    /// MD5 of the Parquet content (hex).
    pub hash: Option<String>,
    pub cursor: Option<String>,
    pub fingerprint: Option<String>,
    /// Rows read from the source this time (all of them for a full sync).
    pub rows_read: i64,
    /// The input had not changed: nothing was read or written.
    pub unchanged: bool,
}

pub struct Request<'a> {
    pub source: &'a SourceDef,
    pub table: &'a TableDef,
    pub connector: &'a dyn Connector,
    pub dir: &'a ExtractDir,
    pub previous: Option<&'a Previous>,
    /// Re-extract even when the input looks unchanged (and ignore the incremental cursor).
    pub full_refresh: bool,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Extracts `req.table` using `conn` (a connection of the run's DuckDB instance).
pub fn extract(
    conn: &Connection,
    session: &Session,
    req: &Request,
) -> Result<Extracted, ExtractError> {
    let t = req.table;
    // The name becomes a file name under data/: only safe identifiers (they were validated at apply).
    if quote::ident(&t.name).is_none() {
        return Err(ExtractError::Config(format!(
            "`{}` is not a safe table name",
            t.name
        )));
    }
    let partitioned = t.sync_mode() == SyncMode::Partitioned;
    let fingerprint = req
        .connector
        .fingerprint(conn, t)?
        .map(|f| crate::connectors::fingerprint_of(&[f, t.hash.clone(), req.source.hash.clone()]));
    let existing = req.dir.local_data(&t.name);
    let right_shape = matches!(
        (&existing, partitioned),
        (Some(LocalData::File(_)), false) | (Some(LocalData::Partitions(_)), true)
    );
    if let (Some(prev), Some(fp), true, false) =
        (req.previous, &fingerprint, right_shape, req.full_refresh)
    {
        if prev.fingerprint.as_ref() == Some(fp) {
            return Ok(Extracted {
                rows: prev.rows.unwrap_or(0),
                bytes: existing.as_ref().map_or(0, |d| d.size() as i64),
                hash: prev.hash.clone(),
                cursor: prev.last_cursor.clone(),
                fingerprint,
                rows_read: 0,
                unchanged: true,
            });
        }
    }

    // Increments continue from the last successful extract, when its data is there to merge into.
    let continues = right_shape && !req.full_refresh && t.sync_mode() != SyncMode::Full;
    let last = req
        .previous
        .and_then(|p| p.last_cursor.as_deref())
        .filter(|_| continues);
    let scan = req.connector.scan(conn, session, t, last)?;
    // Downloads the scan made are removed however the extract ends.
    let _downloads = Staged(scan.cleanup.clone());
    let q = Query { conn, scan: &scan };
    std::fs::create_dir_all(req.dir.data()).map_err(|e| ExtractError::Io(req.dir.data(), e))?;
    let cursor_bound = match (&t.cursor, last) {
        (Some(c), Some(last)) if !scan.increment => Some(q.cursor_bound(c, last, t.window_days)?),
        _ => None,
    };
    let merge = cursor_bound.is_some() || (scan.increment && continues);
    let filters = where_clause(&filters_left(t, &scan), cursor_bound.as_deref())?;
    let result = if partitioned {
        write_partitioned(&q, req, &filters, existing.as_ref(), merge)
    } else {
        write_file(&q, req, &filters, existing.as_ref(), merge)
    };
    if scan.use_catalog.is_some() {
        let _ = conn.execute_batch("USE memory");
    }
    let (rows_read, data, hash) = result?;
    let rows: i64 = conn
        .query_row(&format!("SELECT count(*) FROM {}", data.scan()), [], |r| {
            r.get(0)
        })
        .map_err(|e| ExtractError::Query(e.to_string()))?;
    let cursor = match (&scan.watermark, &t.cursor) {
        (Some(w), _) => Some(w.clone()),
        (None, Some(c)) => {
            let col = quote::ident(c).ok_or_else(|| bad_column(c))?;
            conn.query_row(
                &format!("SELECT CAST(max({col}) AS VARCHAR) FROM {}", data.scan()),
                [],
                |r| r.get::<_, Option<String>>(0),
            )
            .map_err(|e| ExtractError::Query(e.to_string()))?
        }
        (None, None) => None,
    };
    Ok(Extracted {
        rows,
        bytes: data.size() as i64,
        hash: Some(match hash {
            Some(h) => h,
            None => md5_of(&data)?,
        }),
        cursor,
        fingerprint,
        rows_read,
        unchanged: false,
    })
}

fn bad_column(c: &str) -> ExtractError {
    ExtractError::Config(format!(
        "`{c}` is not a plain column name (letters, digits and _)"
    ))
}

struct Query<'a> {
    conn: &'a Connection,
    scan: &'a Scan,
}

impl Query<'_> {
    fn exec(&self, sql: &str) -> Result<(), ExtractError> {
        self.with_catalog(|| self.conn.execute_batch(sql))
    }

    fn count(&self, sql: &str) -> Result<i64, ExtractError> {
        self.with_catalog(|| self.conn.query_row(sql, [], |r| r.get::<_, i64>(0)))
    }

    fn with_catalog<T>(&self, f: impl FnOnce() -> duckdb::Result<T>) -> Result<T, ExtractError> {
        if let Some(cat) = &self.scan.use_catalog {
            let cat = quote::ident(cat)
                .ok_or_else(|| ExtractError::Config(format!("bad catalog {cat}")))?;
            self.conn
                .execute_batch(&format!("USE {cat}"))
                .map_err(|e| ExtractError::Query(e.to_string()))?;
        }
        f().map_err(|e| ExtractError::Query(clean(&e.to_string())))
    }

    /// `cursor >= <last value> [- window]`, typed like the cursor column.
    fn cursor_bound(
        &self,
        cursor: &str,
        last: &str,
        window_days: Option<u32>,
    ) -> Result<String, ExtractError> {
        let col = quote::ident(cursor).ok_or_else(|| bad_column(cursor))?;
        let ty: String = self
            .with_catalog(|| {
                self.conn.query_row(
                    &format!("SELECT typeof({col}) FROM {} LIMIT 1", self.scan.relation),
                    [],
                    |r| r.get(0),
                )
            })
            .or_else(|_| Ok::<_, ExtractError>("VARCHAR".into()))?;
        // The type comes from DuckDB itself; keep only what a type name can hold.
        if !ty
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _(),".contains(c))
        {
            return Err(ExtractError::Config(format!("unexpected cursor type {ty}")));
        }
        let temporal = ty.starts_with("DATE") || ty.starts_with("TIMESTAMP");
        let mut bound = format!("CAST({} AS {ty})", quote::literal(last));
        if let (true, Some(days)) = (temporal, window_days) {
            bound = format!("({bound} - INTERVAL {days} DAY)");
        }
        Ok(format!("{col} >= {bound}"))
    }
}

/// DuckDB prefixes some messages with the whole statement; keep the first lines.
fn clean(message: &str) -> String {
    message.lines().take(6).collect::<Vec<_>>().join("\n")
}

/// The table's `where` filters that the source did not already apply (filter push-down, see
/// [`Scan::filtered_at_source`]): the ones extract applies.
fn filters_left<'t>(t: &'t TableDef, scan: &Scan) -> Vec<&'t Filter> {
    t.filters
        .iter()
        .enumerate()
        .filter(|(i, _)| !scan.filtered_at_source.contains(i))
        .map(|(_, f)| f)
        .collect()
}

/// `WHERE …` from `filters` and the incremental bound.
fn where_clause(filters: &[&Filter], cursor_bound: Option<&str>) -> Result<String, ExtractError> {
    let mut parts = Vec::new();
    for f in filters {
        let col = quote::ident(&f.column).ok_or_else(|| bad_column(&f.column))?;
        let values = f
            .values
            .iter()
            .map(|v| {
                quote::json_scalar(v).ok_or_else(|| {
                    ExtractError::Config(format!(
                        "filter on `{}`: values must be scalars",
                        f.column
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let first = || {
            values.first().cloned().ok_or_else(|| {
                ExtractError::Config(format!("filter on `{}` has no value", f.column))
            })
        };
        let op = match f.operator.as_str() {
            "eq" => "=",
            "ne" => "<>",
            "gt" => ">",
            "ge" => ">=",
            "lt" => "<",
            "le" => "<=",
            "in" => {
                parts.push(format!("{col} IN ({})", values.join(", ")));
                continue;
            }
            "not_in" => {
                parts.push(format!("{col} NOT IN ({})", values.join(", ")));
                continue;
            }
            other => {
                return Err(ExtractError::Config(format!(
                    "unknown filter operator `{other}`"
                )))
            }
        };
        parts.push(format!("{col} {op} {}", first()?));
    }
    if let Some(b) = cursor_bound {
        parts.push(b.to_string());
    }
    Ok(if parts.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", parts.join(" AND "))
    })
}

/// `QUALIFY` keeping one row per primary key: the one with the highest cursor.
fn latest_per_key(t: &TableDef) -> Result<String, ExtractError> {
    if t.primary_key.is_empty() || t.sync_mode() == SyncMode::Full {
        return Ok(String::new());
    }
    let keys = t
        .primary_key
        .iter()
        .map(|k| quote::ident(k).ok_or_else(|| bad_column(k)))
        .collect::<Result<Vec<_>, _>>()?
        .join(", ");
    let order = match &t.cursor {
        Some(c) => format!(
            " ORDER BY {} DESC",
            quote::ident(c).ok_or_else(|| bad_column(c))?
        ),
        None => String::new(),
    };
    Ok(format!(
        " QUALIFY row_number() OVER (PARTITION BY {keys}{order}) = 1"
    ))
}

/// The registry documents columns; data without them is not the table it describes (a changed export,
/// a CSV the sniffer read as one text column…). Compared without regard to case, as DuckDB does.
fn documented_columns_exist(
    conn: &Connection,
    data: &LocalData,
    t: &TableDef,
) -> Result<(), ExtractError> {
    if t.columns.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare(&format!(
            "SELECT column_name FROM (DESCRIBE SELECT * FROM {})",
            data.scan()
        ))
        .map_err(|e| ExtractError::Query(e.to_string()))?;
    let present: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| ExtractError::Query(e.to_string()))?;
    let missing: Vec<&str> = t
        .columns
        .keys()
        .filter(|c| !present.iter().any(|p| p.eq_ignore_ascii_case(c)))
        .map(|c| c.as_str())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ExtractError::Check(format!(
        "the new data lacks column(s) the registry documents: {} (it has: {})",
        missing.join(", "),
        present.join(", ")
    )))
}

/// Rows read, where the data now is, and its MD5 when already computed.
type Written = (i64, LocalData, Option<String>);

/// Loads the rows read from the source into a temp table, runs `write` with its name, drops it.
/// Returns how many rows were read.
fn with_incoming(
    q: &Query,
    select: &str,
    write: impl FnOnce(&str) -> Result<(), ExtractError>,
) -> Result<i64, ExtractError> {
    let new = format!("__incoming_{}", TEMP_SEQ.fetch_add(1, Ordering::Relaxed));
    q.exec(&format!("CREATE TEMP TABLE {new} AS {select}"))?;
    let result = q
        .count(&format!("SELECT count(*) FROM {new}"))
        .and_then(|n| write(&new).map(|_| n));
    let _ = q
        .conn
        .execute_batch(&format!("DROP TABLE IF EXISTS temp.{new}"));
    result
}

/// The previous rows (`old`, a scan) that the incoming rows in table `new` do not replace: those
/// whose primary key is not among them (all of them without a key), and matching `and_where`.
fn kept_rows(t: &TableDef, old: &str, new: &str, and_where: &str) -> Result<String, ExtractError> {
    let keys: Vec<String> = t
        .primary_key
        .iter()
        .map(|k| quote::ident(k).ok_or_else(|| bad_column(k)))
        .collect::<Result<_, _>>()?;
    let mut conditions = Vec::new();
    if !keys.is_empty() {
        let matches = keys
            .iter()
            .map(|k| format!("n.{k} = o.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        conditions.push(format!(
            "NOT EXISTS (SELECT 1 FROM {new} AS n WHERE {matches})"
        ));
    }
    if !and_where.is_empty() {
        conditions.push(and_where.to_string());
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    Ok(format!("SELECT o.* FROM {old} AS o{filter}"))
}

fn tmp_sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn remove_path(p: &Path) -> Result<(), ExtractError> {
    let r = if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ExtractError::Io(p.to_path_buf(), e)),
    }
}

/// Removes `tmp` when dropped unless disarmed: a failed extract leaves no half-written file.
struct Staged(Option<PathBuf>);

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = remove_path(&p);
        }
    }
}

fn write_file(
    q: &Query,
    req: &Request,
    filters: &str,
    existing: Option<&LocalData>,
    incremental: bool,
) -> Result<Written, ExtractError> {
    let t = req.table;
    let target = req.dir.parquet(&t.name);
    let tmp = tmp_sibling(&target, ".tmp");
    remove_path(&tmp)?;
    let mut staged = Staged(Some(tmp.clone()));
    let dedupe = latest_per_key(t)?;
    let rel = &q.scan.relation;
    // While DuckDB writes the file, a follower hashes what is written and starts its writeback, so
    // that the MD5 and the fsync cost little once the COPY returns.
    let follower = Follower::start(&tmp);
    let rows_read = match (incremental, existing) {
        (true, Some(old)) => {
            with_incoming(q, &format!("SELECT * FROM {rel}{filters}{dedupe}"), |new| {
                let kept = kept_rows(t, &old.scan(), new, "")?;
                q.exec(&format!(
                    "COPY (SELECT * FROM {new} UNION ALL BY NAME {kept}) TO {} (FORMAT parquet)",
                    quote::path(&tmp)
                ))
            })
        }
        _ => q.count(&format!(
            "COPY (SELECT * FROM {rel}{filters}{dedupe}) TO {} (FORMAT parquet)",
            quote::path(&tmp)
        )),
    };
    let followed = follower.finish();
    let rows_read = rows_read?;
    tracing::debug!(table = %t.id, rows = rows_read, "extract: written");
    let data = LocalData::File(tmp.clone());
    documented_columns_exist(q.conn, &data, t)?;
    checks::run(q.conn, &data.scan(), &t.checks).map_err(ExtractError::Check)?;
    // The file must be on disk before it replaces the old one.
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| ExtractError::Io(tmp.clone(), e))?;
    let hash = match followed {
        Some(h) => h,
        None => md5_of(&data)?,
    };
    tracing::debug!(table = %t.id, "extract: synced and hashed");
    std::fs::rename(&tmp, &target).map_err(|e| ExtractError::Io(target.clone(), e))?;
    staged.0 = None;
    sync_dir(&target);
    // A table that changed from partitioned to a single file leaves no stale directory behind.
    remove_path(&req.dir.partitions(&t.name))?;
    Ok((rows_read, LocalData::File(target), Some(hash)))
}

fn partition_format(g: Granularity) -> &'static str {
    match g {
        Granularity::Day => "%Y-%m-%d",
        Granularity::Month => "%Y-%m",
        Granularity::Year => "%Y",
    }
}

fn write_partitioned(
    q: &Query,
    req: &Request,
    filters: &str,
    existing: Option<&LocalData>,
    incremental: bool,
) -> Result<Written, ExtractError> {
    let t = req.table;
    let by = t
        .partition_by
        .as_deref()
        .ok_or_else(|| ExtractError::Config("partitioned sync needs `partition_by`".into()))?;
    let col = quote::ident(by).ok_or_else(|| bad_column(by))?;
    let target = req.dir.partitions(&t.name);
    let stage = tmp_sibling(&target, ".tmp");
    let parts = tmp_sibling(&target, ".parts");
    remove_path(&stage)?;
    remove_path(&parts)?;
    let mut staged = Staged(Some(stage.clone()));
    let _parts_guard = Staged(Some(parts.clone()));
    let fmt = partition_format(t.granularity());
    let dedupe = latest_per_key(t)?;
    let period = |alias: &str| {
        format!("coalesce(strftime(CAST({alias}{col} AS TIMESTAMP), '{fmt}'), 'null')")
    };
    let copy = |rows: &str| {
        format!(
            "COPY (SELECT *, {} AS __partition FROM ({rows})) TO {} (FORMAT parquet, PARTITION_BY (__partition))",
            period(""),
            quote::path(&parts)
        )
    };
    let select = format!("SELECT * FROM {}{filters}{dedupe}", q.scan.relation);
    let rows_read = match (incremental, existing) {
        // The periods the new rows fall in are rewritten whole: their new rows, plus the previous
        // rows of those periods that no new row replaces (by primary key).
        (true, Some(old @ LocalData::Partitions(_))) => with_incoming(q, &select, |new| {
            let touched = format!(
                "{} IN (SELECT DISTINCT {} FROM {new})",
                period("o."),
                period("")
            );
            let kept = kept_rows(t, &old.scan(), new, &touched)?;
            q.exec(&copy(&format!(
                "SELECT * FROM {new} UNION ALL BY NAME {kept}"
            )))
        })?,
        _ => q.count(&copy(&select))?,
    };
    std::fs::create_dir_all(&stage).map_err(|e| ExtractError::Io(stage.clone(), e))?;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| ExtractError::Io(p, e)
    };
    let mut written = std::collections::BTreeSet::new();
    if parts.is_dir() {
        for entry in std::fs::read_dir(&parts).map_err(io(&parts))? {
            let entry = entry.map_err(io(&parts))?;
            let dir_name = entry.file_name().to_string_lossy().into_owned();
            let value: String = dir_name
                .strip_prefix("__partition=")
                .unwrap_or(&dir_name)
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            let mut files: Vec<_> = std::fs::read_dir(entry.path())
                .map_err(io(&entry.path()))?
                .flatten()
                .map(|e| e.path())
                .collect();
            files.sort();
            for (i, f) in files.iter().enumerate() {
                let name = if i == 0 {
                    format!("{value}.parquet")
                } else {
                    format!("{value}_{i}.parquet")
                };
                std::fs::rename(f, stage.join(name)).map_err(io(f))?;
            }
            written.insert(value);
        }
    }
    // An incremental run replaces only the partitions it read; the others are kept (hard links).
    if let (true, Some(LocalData::Partitions(old))) = (incremental, existing) {
        for entry in std::fs::read_dir(old).map_err(io(old))?.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let value = file.trim_end_matches(".parquet");
            let value = value.split_once('_').map_or(value, |(v, _)| v);
            if !written.contains(value) {
                let dest = stage.join(&file);
                std::fs::hard_link(entry.path(), &dest)
                    .or_else(|_| std::fs::copy(entry.path(), &dest).map(|_| ()))
                    .map_err(io(&dest))?;
            }
        }
    }
    let data = LocalData::Partitions(stage.clone());
    if data.size() > 0 {
        documented_columns_exist(q.conn, &data, t)?;
        checks::run(q.conn, &data.scan(), &t.checks).map_err(ExtractError::Check)?;
    }
    swap_dirs(&stage, &target)?;
    staged.0 = Some(stage); // now holds the old data, if any
    remove_path(&req.dir.parquet(&t.name))?;
    Ok((rows_read, LocalData::Partitions(target), None))
}

/// Puts `new` at `target` in one step: an exchange when the target exists (readers see the old or the
/// new directory, never neither), else a rename. The old directory ends up at `new`.
fn swap_dirs(new: &Path, target: &Path) -> Result<(), ExtractError> {
    if target.exists() {
        let a = std::ffi::CString::new(new.as_os_str().as_encoded_bytes())
            .map_err(|_| ExtractError::Config("path holds a NUL byte".into()))?;
        let b = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|_| ExtractError::Config("path holds a NUL byte".into()))?;
        // SAFETY: two valid NUL-terminated paths; renameat2 only reads them.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            sync_dir(target);
            return Ok(());
        }
        // No exchange on this file system: move the old one aside first.
        let aside = tmp_sibling(target, ".old");
        remove_path(&aside)?;
        std::fs::rename(target, &aside).map_err(|e| ExtractError::Io(target.into(), e))?;
        std::fs::rename(new, target).map_err(|e| ExtractError::Io(target.into(), e))?;
        std::fs::rename(&aside, new).map_err(|e| ExtractError::Io(new.into(), e))?;
    } else {
        std::fs::rename(new, target).map_err(|e| ExtractError::Io(target.into(), e))?;
    }
    sync_dir(target);
    Ok(())
}

/// Follows a file while another writer appends to it: hashes the bytes as they arrive and starts
/// their writeback (`sync_file_range`), so neither has to wait until the writer is done. DuckDB writes
/// Parquet strictly front to back (header, row groups, footer); if the file ever ends up shorter than
/// what was hashed, the hash is dropped and computed again from the file.
struct Follower {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<(md5::Md5, u64)>>,
    path: PathBuf,
}

impl Follower {
    fn start(path: &Path) -> Follower {
        use std::sync::atomic::AtomicBool;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (flag, file_path) = (stop.clone(), path.to_path_buf());
        let thread = std::thread::spawn(move || follow(&file_path, &flag));
        Follower {
            stop,
            thread,
            path: path.to_path_buf(),
        }
    }

    /// Stops following (the writer is done) and returns the file's MD5, when it could follow it.
    fn finish(self) -> Option<String> {
        use md5::Digest;
        self.stop.store(true, Ordering::SeqCst);
        let (hasher, hashed) = self.thread.join().ok().flatten()?;
        let len = self.path.metadata().ok()?.len();
        (len == hashed).then(|| {
            hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
    }
}

fn follow(path: &Path, stop: &std::sync::atomic::AtomicBool) -> Option<(md5::Md5, u64)> {
    use md5::Digest;
    use std::os::fd::AsRawFd;
    let mut hasher = md5::Md5::new();
    let mut hashed = 0u64;
    let mut file: Option<std::fs::File> = None;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if file.is_none() {
            file = std::fs::File::open(path).ok();
        }
        if let Some(f) = file.as_mut() {
            loop {
                let n = f.read(&mut buf).ok()?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                hashed += n as u64;
            }
            // SAFETY: a valid open descriptor; the call only starts writeback of that range.
            unsafe {
                libc::sync_file_range(f.as_raw_fd(), 0, hashed as i64, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
        if stopping {
            return file.map(|_| (hasher, hashed));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// MD5 of the Parquet bytes (sync_state.hash): the content, in file-name order for directories.
fn md5_of(data: &LocalData) -> Result<String, ExtractError> {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    let files = match data {
        LocalData::File(f) => vec![f.clone()],
        LocalData::Partitions(d) => {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .map_err(|e| ExtractError::Io(d.clone(), e))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
                .collect();
            v.sort();
            v
        }
    };
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        let mut file = std::fs::File::open(&f).map_err(|e| ExtractError::Io(f.clone(), e))?;
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| ExtractError::Io(f.clone(), e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::object::{index, Kind, Object};
    use crate::registered::Registered;
    use serde_json::json;

    fn registered(dir: &Path, sync: serde_json::Value) -> Registered {
        let obj = |kind, id: &str, fields: serde_json::Value| {
            Object::new(
                kind,
                id.into(),
                "f".into(),
                fields.as_object().unwrap().clone(),
            )
        };
        let mut table = json!({"source": "s", "name": "events", "sync_mode": sync["mode"]});
        for k in ["cursor", "primary_key", "partition_by", "granularity"] {
            if let Some(v) = sync.get(k) {
                table[k] = v.clone();
            }
        }
        Registered::from_objects(&index(vec![
            obj(
                Kind::Source,
                "s",
                json!({"type": "csv", "connection": {"path": dir.to_string_lossy()}}),
            ),
            obj(Kind::Table, "s.events", table),
        ]))
        .unwrap()
    }

    fn run(root: &Path, reg: &Registered, previous: Option<&Previous>) -> Extracted {
        let source = &reg.sources["s"];
        let table = &reg.tables["s.events"];
        let connector = crate::connectors::connector(source, root).unwrap();
        let dir = ExtractDir::new(&root.join("extracts"), "s").unwrap();
        let conn = Connection::open_in_memory().unwrap();
        let req = Request {
            source,
            table,
            connector: connector.as_ref(),
            dir: &dir,
            previous,
            full_refresh: false,
        };
        extract(&conn, &Session::default(), &req).unwrap()
    }

    fn previous(x: &Extracted) -> Previous {
        Previous {
            fingerprint: x.fingerprint.clone(),
            last_cursor: x.cursor.clone(),
            rows: Some(x.rows),
            size_bytes: Some(x.bytes),
            hash: x.hash.clone(),
        }
    }

    #[test]
    fn partitioned_tables_rewrite_only_the_periods_they_read() {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("in");
        std::fs::create_dir_all(&input).unwrap();
        let csv = input.join("events.csv");
        let rows = "id,created,updated\n\
                    1,2026-01-05,2026-01-05\n\
                    2,2026-02-01,2026-02-01\n\
                    3,2026-02-03,2026-02-10\n";
        std::fs::write(&csv, rows).unwrap();
        let reg = registered(
            &input,
            json!({"mode": "partitioned", "cursor": "updated", "primary_key": ["id"], "partition_by": "created", "granularity": "month"}),
        );
        let first = run(tmp.path(), &reg, None);
        assert_eq!(first.rows, 3);
        let parts = tmp.path().join("extracts/s/data/events");
        let mut files: Vec<String> = std::fs::read_dir(&parts)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["2026-01.parquet", "2026-02.parquet"]);
        let january = std::fs::metadata(parts.join("2026-01.parquet"))
            .unwrap()
            .modified()
            .unwrap();

        // A new February row: rows updated since the last cursor are read (3 and 4), February is
        // rewritten with them and keeps row 2, which was not read again; January is not touched.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&csv, format!("{rows}4,2026-02-04,2026-02-11\n")).unwrap();
        let second = run(tmp.path(), &reg, Some(&previous(&first)));
        assert_eq!(second.rows_read, 2, "rows at or after the last cursor");
        assert_eq!(second.rows, 4);
        assert_eq!(
            std::fs::metadata(parts.join("2026-01.parquet"))
                .unwrap()
                .modified()
                .unwrap(),
            january
        );
        let c = Connection::open_in_memory().unwrap();
        let ids: String = c
            .query_row(
                &format!(
                    "SELECT string_agg(id::VARCHAR, ',' ORDER BY id) FROM read_parquet({})",
                    quote::path(&parts.join("2026-02.parquet"))
                ),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(ids, "2,3,4");
        assert!(!tmp.path().join("extracts/s/data/events.tmp").exists());
    }

    #[test]
    fn unchanged_input_is_not_read_again_and_incremental_merges_by_key() {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("in");
        std::fs::create_dir_all(&input).unwrap();
        let csv = input.join("events.csv");
        std::fs::write(&csv, "id,v,at\n1,a,2026-01-01\n2,b,2026-01-02\n").unwrap();
        let reg = registered(
            &input,
            json!({"mode": "incremental", "cursor": "at", "primary_key": ["id"]}),
        );
        let first = run(tmp.path(), &reg, None);
        assert_eq!(
            (first.rows, first.cursor.as_deref()),
            (2, Some("2026-01-02"))
        );
        let again = run(tmp.path(), &reg, Some(&previous(&first)));
        assert!(again.unchanged);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(
            &csv,
            "id,v,at\n1,a,2026-01-01\n2,B,2026-01-03\n3,c,2026-01-03\n",
        )
        .unwrap();
        let second = run(tmp.path(), &reg, Some(&previous(&first)));
        assert_eq!(second.rows, 3);
        assert_eq!(second.cursor.as_deref(), Some("2026-01-03"));
        let c = Connection::open_in_memory().unwrap();
        let v: String = c
            .query_row(
                &format!(
                    "SELECT v FROM read_parquet({}) WHERE id = 2",
                    quote::path(&tmp.path().join("extracts/s/data/events.parquet"))
                ),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(v, "B");
    }
}

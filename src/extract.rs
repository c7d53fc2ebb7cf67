//! Extracting one table to Parquet, the same way for every connector: filters, full or incremental
//! or partitioned sync, checks, the schema contract, and the swap into place.
//!
//! New data is written beside the old (`<t>.parquet.tmp`, `<t>.tmp/`), checked, made durable, and
//! only then renamed over it: a failed, interrupted or killed extract leaves the previous Parquet
//! whole and queryable. Before the rename the staged file's schema is compared with the one last
//! published ([`crate::extract_db::schema`]); a change the table's contract refuses fails the extract.
//! Incremental sync re-reads rows from the last cursor (minus `window_days`), merges them by primary
//! key and applies the table's `where` filters to the merged result, so re-runs never duplicate rows
//! and a row that stops matching the filters leaves the table. An extract whose input is unchanged is
//! skipped only while its published output is still what was recorded (size and modification time,
//! else its MD5): a deleted or damaged Parquet file is extracted again.

use crate::checks;
use crate::connectors::{Connector, ConnectorError, Scan, Session};
use crate::extract_db::schema::{self, Change, Column};
use crate::extract_db::{sync_dir, ExtractDir, LocalData};
use crate::quote;
use crate::registry::registered::{Filter, SourceDef, TableDef};
use crate::spec::model::{Granularity, SchemaChanges, SyncMode};
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
    /// The new data breaks the table's schema contract (the message lists the differences).
    #[error("{0}")]
    Schema(String),
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
    /// The schema last published (`None` when recorded before the state had it).
    pub schema: Option<Vec<Column>>,
    /// [`output_stamp`] of the Parquet when its hash was last computed or checked.
    pub output_stamp: Option<String>,
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
    /// The published schema now (recorded in the state), when known.
    pub schema: Option<Vec<Column>>,
    /// How the schema differs from the one published before (accepted by the contract or by
    /// `--accept-schema`); empty when it is the same or there was none.
    pub schema_changes: Vec<Change>,
    /// What accepted `schema_changes`: `additive`, `evolve` (the table's contract) or
    /// `--accept-schema`.
    pub schema_accepted_by: Option<String>,
    /// [`output_stamp`] of the published Parquet.
    pub output_stamp: Option<String>,
    /// Why the previous output could not be used (deleted, truncated, changed on disk) and the
    /// table was read again from scratch.
    pub repaired: Option<String>,
}

pub struct Request<'a> {
    pub source: &'a SourceDef,
    pub table: &'a TableDef,
    pub connector: &'a dyn Connector,
    pub dir: &'a ExtractDir,
    pub previous: Option<&'a Previous>,
    /// Re-extract even when the input looks unchanged (and ignore the incremental cursor).
    pub full_refresh: bool,
    /// Publish whatever shape the new data has, once (`pipeline run --accept-schema`).
    pub accept_schema: bool,
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
    let input_unchanged = !req.full_refresh
        && matches!((req.previous, &fingerprint), (Some(p), Some(fp)) if p.fingerprint.as_ref() == Some(fp));

    // The previous output is reused when the input is unchanged (skipped) and when increments merge
    // into it: then it must still be what the last extract wrote.
    let reused =
        right_shape && !req.full_refresh && (input_unchanged || t.sync_mode() != SyncMode::Full);
    let (mut stamp, mut repaired) = (None, None);
    if let (true, Some(data), Some(prev)) = (reused, &existing, req.previous) {
        match verify_output(data, prev)? {
            Output::Intact(s) => stamp = Some(s),
            Output::Damaged(why) => repaired = Some(why),
        }
    }
    if existing.is_none() && req.previous.is_some_and(|p| p.hash.is_some()) {
        repaired = Some("its Parquet output is missing".to_string());
    }
    let intact = right_shape && repaired.is_none();
    // The schema the new data is held to: the recorded one, else (state from before it was
    // recorded) the published file's own. A table with no previous extract has none yet.
    let baseline: Option<Vec<Column>> = match req.previous {
        Some(p) => match &p.schema {
            Some(s) => Some(s.clone()),
            None if intact => existing
                .as_ref()
                .and_then(|d| schema::describe(conn, &d.scan()).ok()),
            None => None,
        },
        None => None,
    };

    if let (Some(prev), true, true) = (req.previous, input_unchanged, intact) {
        return Ok(Extracted {
            rows: prev.rows.unwrap_or(0),
            bytes: existing.as_ref().map_or(0, |d| d.size() as i64),
            hash: prev.hash.clone(),
            cursor: prev.last_cursor.clone(),
            fingerprint,
            rows_read: 0,
            unchanged: true,
            schema: baseline,
            schema_changes: Vec::new(),
            schema_accepted_by: None,
            output_stamp: stamp,
            repaired: None,
        });
    }

    // Increments continue from the last successful extract, when its data is there to merge into.
    let continues = intact && !req.full_refresh && t.sync_mode() != SyncMode::Full;
    let last = req
        .previous
        .and_then(|p| p.last_cursor.as_deref())
        .filter(|_| continues);
    // An increment is read without the table's filters (they apply to the merged result, below), so
    // the connector is not given them either: a row that stopped matching must arrive to replace its
    // old version.
    let unfiltered;
    let scanned = if last.is_some() && !t.filters.is_empty() {
        unfiltered = TableDef {
            filters: Vec::new(),
            ..t.clone()
        };
        &unfiltered
    } else {
        t
    };
    let scan = req.connector.scan(conn, session, scanned, last)?;
    // Downloads the scan made are removed however the extract ends.
    let _downloads = Staged(scan.cleanup.clone());
    let q = Query { conn, scan: &scan };
    std::fs::create_dir_all(req.dir.data()).map_err(|e| ExtractError::Io(req.dir.data(), e))?;
    let cursor_bound = match (&t.cursor, last) {
        (Some(c), Some(last)) if !scan.increment => Some(q.cursor_bound(c, last, t.window_days)?),
        _ => None,
    };
    let merge = cursor_bound.is_some() || (scan.increment && continues);
    // Filters the connector applied at the source are not applied again (an increment is scanned
    // without filters, so none were pushed down and all of them decide what the merge keeps).
    let filters = filter_conditions(&filters_left(t, &scan))?;
    let bound: Vec<String> = cursor_bound.into_iter().collect();
    let plan = Plan {
        // A full read filters as it reads; an increment reads every changed row and the filters
        // decide what the merged table keeps.
        read_where: where_sql(if merge { &bound } else { &filters }),
        keep_where: if merge {
            where_sql(&filters)
        } else {
            String::new()
        },
        existing: if intact { existing.as_ref() } else { None },
        merge,
        gate: Gate {
            table: t,
            baseline: baseline.as_deref(),
            accept: req.accept_schema,
        },
    };
    let result = if partitioned {
        write_partitioned(&q, req, &plan)
    } else {
        write_file(&q, req, &plan)
    };
    if scan.use_catalog.is_some() {
        let _ = conn.execute_batch("USE memory");
    }
    let written = result?;
    let data = &written.data;
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
    let hash = match &written.hash {
        Some(h) => h.clone(),
        None => md5_of(data)?,
    };
    let accepted_by = (!written.schema_changes.is_empty()).then(|| {
        if req.accept_schema
            && written
                .schema_changes
                .iter()
                .any(|c| !c.allowed_by(t.schema_changes()))
        {
            "--accept-schema".to_string()
        } else {
            t.schema_changes().as_str().to_string()
        }
    });
    Ok(Extracted {
        rows,
        bytes: data.size() as i64,
        hash: Some(hash),
        cursor,
        fingerprint,
        rows_read: written.rows_read,
        unchanged: false,
        schema: written.schema.clone().or(baseline),
        schema_changes: written.schema_changes.clone(),
        schema_accepted_by: accepted_by,
        output_stamp: Some(output_stamp(data)?),
        repaired,
    })
}

/// Whether a published output is still what the last extract wrote.
enum Output {
    /// Yes; its current [`output_stamp`].
    Intact(String),
    /// No, and why.
    Damaged(String),
}

/// Compares the output with what was recorded: its size and modification time when they match (no
/// read), else its MD5. Hashing is only needed after something touched the file.
fn verify_output(data: &LocalData, prev: &Previous) -> Result<Output, ExtractError> {
    let stamp = output_stamp(data)?;
    if prev.output_stamp.as_deref() == Some(stamp.as_str()) {
        return Ok(Output::Intact(stamp));
    }
    let Some(recorded) = &prev.hash else {
        return Ok(Output::Damaged(
            "no hash of its Parquet output was recorded to check it against".into(),
        ));
    };
    let size = data.size() as i64;
    match md5_of(data) {
        Ok(now) if &now == recorded => Ok(Output::Intact(stamp)),
        Ok(_) => Ok(Output::Damaged(match prev.size_bytes {
            Some(before) if before != size => {
                format!("its Parquet output changed on disk ({before} bytes recorded, {size} now)")
            }
            _ => "its Parquet output changed on disk (the content hash differs)".into(),
        })),
        Err(e) => Ok(Output::Damaged(format!(
            "its Parquet output cannot be read ({e})"
        ))),
    }
}

/// Size and modification time of a table's Parquet: `<bytes>:<mtime ns>` of a file, a digest of
/// every file's name, size and mtime for a partitioned table.
pub fn output_stamp(data: &LocalData) -> Result<String, ExtractError> {
    let stamp = |p: &Path| -> Result<String, ExtractError> {
        let m = p.metadata().map_err(|e| ExtractError::Io(p.into(), e))?;
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok(format!("{}:{mtime}", m.len()))
    };
    match data {
        LocalData::File(f) => stamp(f),
        LocalData::Partitions(d) => {
            let mut parts = Vec::new();
            for f in parquet_files(d)? {
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                parts.push(format!("{}={}", name.unwrap_or_default(), stamp(&f)?));
            }
            Ok(crate::connectors::fingerprint_of(&parts))
        }
    }
}

/// The `*.parquet` files of a partition directory, by name.
fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>, ExtractError> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| ExtractError::Io(dir.to_path_buf(), e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    v.sort();
    Ok(v)
}

/// How this extract writes: what it reads, what it keeps, what it merges into.
struct Plan<'a> {
    /// ` WHERE …` on the rows read from the source.
    read_where: String,
    /// ` WHERE …` on the merged result (the table's filters, when merging an increment).
    keep_where: String,
    /// The previous data, when intact.
    existing: Option<&'a LocalData>,
    /// Merge the rows read into `existing` by primary key.
    merge: bool,
    gate: Gate<'a>,
}

/// The schema contract, checked on staged data before it replaces the published data.
struct Gate<'a> {
    table: &'a TableDef,
    /// The schema published before; `None`: nothing to hold the new data to.
    baseline: Option<&'a [Column]>,
    accept: bool,
}

impl Gate<'_> {
    /// The staged data's schema and how it differs from the baseline, or the refusal. `batch`: the
    /// columns of the rows read from the source, when they were merged into previous data.
    fn check(
        &self,
        conn: &Connection,
        relation: &str,
        batch: Option<&[String]>,
    ) -> Result<(Vec<Column>, Vec<Change>), ExtractError> {
        let new =
            schema::describe(conn, relation).map_err(|e| ExtractError::Query(e.to_string()))?;
        let Some(baseline) = self.baseline else {
            return Ok((new, Vec::new()));
        };
        let policy = self.table.schema_changes();
        let effective = if self.accept {
            SchemaChanges::Evolve
        } else {
            policy
        };
        let review = schema::review(baseline, &new, batch, effective);
        if review.is_refused() {
            return Err(ExtractError::Schema(schema::refusal_message(
                &self.table.id,
                policy,
                &review,
            )));
        }
        Ok((new, review.changes))
    }
}

/// What a writer produced.
struct Written {
    rows_read: i64,
    /// Where the data now is.
    data: LocalData,
    /// Its MD5, when already computed.
    hash: Option<String>,
    /// The schema checked by the gate (`None` when no file was written: no rows).
    schema: Option<Vec<Column>>,
    schema_changes: Vec<Change>,
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

/// `filters` as SQL conditions.
fn filter_conditions(filters: &[&Filter]) -> Result<Vec<String>, ExtractError> {
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
    Ok(parts)
}

/// ` WHERE a AND b`, or nothing.
fn where_sql(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
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

/// The registry declares columns (`columns:`); data without them is not the table it describes (a
/// changed export, a CSV the sniffer read as one text column…). Compared without regard to case, as
/// DuckDB does. `present`: the new data's columns.
fn declared_columns_exist(t: &TableDef, present: &[Column]) -> Result<(), ExtractError> {
    let names: Vec<&str> = present.iter().map(|c| c.name.as_str()).collect();
    let missing: Vec<String> = t
        .columns
        .keys()
        .filter(|c| !names.iter().any(|p| p.eq_ignore_ascii_case(c)))
        .map(|c| match crate::diag::suggest(c, names.iter().copied()) {
            Some(s) => format!("`{c}` (did you mean `{s}`?)"),
            None => format!("`{c}`"),
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let declared_in = if t.file.is_empty() {
        String::new()
    } else {
        format!(" in {}", t.file)
    };
    Err(ExtractError::Check(format!(
        "table `{}`: the new data lacks {} column(s) that `columns:`{declared_in} declares: {}. The data \
         has: {}. Fix the names in `columns:` (or the source)",
        t.id,
        missing.len(),
        missing.join(", "),
        names.join(", ")
    )))
}

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

fn write_file(q: &Query, req: &Request, plan: &Plan) -> Result<Written, ExtractError> {
    let t = req.table;
    let target = req.dir.parquet(&t.name);
    let tmp = tmp_sibling(&target, ".tmp");
    remove_path(&tmp)?;
    let mut staged = Staged(Some(tmp.clone()));
    let dedupe = latest_per_key(t)?;
    let rel = &q.scan.relation;
    let (read_where, keep_where) = (&plan.read_where, &plan.keep_where);
    // While DuckDB writes the file, a follower hashes what is written and starts its writeback, so
    // that the MD5 and the fsync cost little once the COPY returns.
    let follower = Follower::start(&tmp);
    let mut batch = None;
    let rows_read = match (plan.merge, plan.existing) {
        (true, Some(old)) => with_incoming(
            q,
            &format!("SELECT * FROM {rel}{read_where}{dedupe}"),
            |new| {
                batch = Some(column_names(q.conn, new)?);
                let kept = kept_rows(t, &old.scan(), new, "")?;
                q.exec(&format!(
                    "COPY (SELECT * FROM (SELECT * FROM {new} UNION ALL BY NAME {kept}){keep_where}) \
                     TO {} (FORMAT parquet)",
                    quote::path(&tmp)
                ))
            },
        ),
        _ => q.count(&format!(
            "COPY (SELECT * FROM {rel}{read_where}{dedupe}) TO {} (FORMAT parquet)",
            quote::path(&tmp)
        )),
    };
    let followed = follower.finish();
    let rows_read = rows_read?;
    tracing::debug!(table = %t.id, rows = rows_read, "extract: written");
    let data = LocalData::File(tmp.clone());
    let (schema, schema_changes) = plan.gate.check(q.conn, &data.scan(), batch.as_deref())?;
    declared_columns_exist(t, &schema)?;
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
    Ok(Written {
        rows_read,
        data: LocalData::File(target),
        hash: Some(hash),
        schema: Some(schema),
        schema_changes,
    })
}

/// The column names of a relation (the rows read, before a merge).
fn column_names(conn: &Connection, relation: &str) -> Result<Vec<String>, ExtractError> {
    Ok(schema::describe(conn, relation)
        .map_err(|e| ExtractError::Query(e.to_string()))?
        .into_iter()
        .map(|c| c.name)
        .collect())
}

fn partition_format(g: Granularity) -> &'static str {
    match g {
        Granularity::Day => "%Y-%m-%d",
        Granularity::Month => "%Y-%m",
        Granularity::Year => "%Y",
    }
}

fn write_partitioned(q: &Query, req: &Request, plan: &Plan) -> Result<Written, ExtractError> {
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
    let select = format!(
        "SELECT * FROM {}{}{dedupe}",
        q.scan.relation, plan.read_where
    );
    let (merging, existing) = (plan.merge, plan.existing);
    let mut batch = None;
    let rows_read = match (merging, existing) {
        // The periods the new rows fall in are rewritten whole: their new rows, plus the previous
        // rows of those periods that no new row replaces (by primary key), minus what the filters
        // no longer keep.
        (true, Some(old @ LocalData::Partitions(_))) => with_incoming(q, &select, |new| {
            batch = Some(column_names(q.conn, new)?);
            let touched = format!(
                "{} IN (SELECT DISTINCT {} FROM {new})",
                period("o."),
                period("")
            );
            let kept = kept_rows(t, &old.scan(), new, &touched)?;
            q.exec(&copy(&format!(
                "SELECT * FROM (SELECT * FROM {new} UNION ALL BY NAME {kept}){}",
                plan.keep_where
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
    let mut new_files = Vec::new();
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
                std::fs::rename(f, stage.join(&name)).map_err(io(f))?;
                new_files.push(stage.join(name));
            }
            written.insert(value);
        }
    }
    // An incremental run replaces only the partitions it read; the others are kept (hard links).
    if let (true, Some(LocalData::Partitions(old))) = (merging, existing) {
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
    // The contract is checked on the files this run wrote (the periods it kept were checked when
    // they were written).
    let (mut schema, mut schema_changes) = (None, Vec::new());
    if !new_files.is_empty() {
        let list: Vec<String> = new_files.iter().map(|f| quote::path(f)).collect();
        let relation = format!("read_parquet([{}])", list.join(", "));
        let (s, c) = plan.gate.check(q.conn, &relation, batch.as_deref())?;
        declared_columns_exist(t, &s)?;
        (schema, schema_changes) = (Some(s), c);
    }
    let data = LocalData::Partitions(stage.clone());
    if data.size() > 0 {
        checks::run(q.conn, &data.scan(), &t.checks).map_err(ExtractError::Check)?;
    }
    swap_dirs(&stage, &target)?;
    staged.0 = Some(stage); // now holds the old data, if any
    remove_path(&req.dir.parquet(&t.name))?;
    Ok(Written {
        rows_read,
        data: LocalData::Partitions(target),
        hash: None,
        schema,
        schema_changes,
    })
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
        LocalData::Partitions(d) => parquet_files(d)?,
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
    use crate::registry::document::{index, Kind, Object};
    use crate::registry::registered::Registered;
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
        for k in [
            "cursor",
            "primary_key",
            "partition_by",
            "granularity",
            "filters",
        ] {
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
        try_run(root, reg, previous).unwrap()
    }

    fn try_run(
        root: &Path,
        reg: &Registered,
        previous: Option<&Previous>,
    ) -> Result<Extracted, ExtractError> {
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
            accept_schema: false,
        };
        extract(&conn, &Session::default(), &req)
    }

    fn previous(x: &Extracted) -> Previous {
        Previous {
            fingerprint: x.fingerprint.clone(),
            last_cursor: x.cursor.clone(),
            rows: Some(x.rows),
            size_bytes: Some(x.bytes),
            hash: x.hash.clone(),
            schema: x.schema.clone(),
            output_stamp: x.output_stamp.clone(),
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

    /// The values of `v` by id in the published file, as "id=v,…".
    fn published(root: &Path) -> String {
        let c = Connection::open_in_memory().unwrap();
        c.query_row(
            &format!(
                "SELECT string_agg(id::VARCHAR || '=' || v, ',' ORDER BY id) FROM read_parquet({})",
                quote::path(&root.join("extracts/s/data/events.parquet"))
            ),
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn incremental_filters_apply_to_the_merged_table_so_rows_that_stop_matching_leave_it() {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("in");
        std::fs::create_dir_all(&input).unwrap();
        let csv = input.join("events.csv");
        std::fs::write(
            &csv,
            "id,v,at\n0,open,2025-12-01\n1,open,2026-01-01\n2,open,2026-01-02\n3,test,2026-01-02\n",
        )
        .unwrap();
        let reg = registered(
            &input,
            json!({"mode": "incremental", "cursor": "at", "primary_key": ["id"],
                   "filters": [{"column": "v", "operator": "ne", "values": ["test"]}]}),
        );
        let first = run(tmp.path(), &reg, None);
        assert_eq!(published(tmp.path()), "0=open,1=open,2=open");
        // Row 1 is updated so that it no longer matches; row 3 now matches; row 4 is new.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(
            &csv,
            "id,v,at\n0,open,2025-12-01\n1,test,2026-01-03\n2,open,2026-01-02\n3,done,2026-01-03\n4,open,2026-01-03\n",
        )
        .unwrap();
        let second = run(tmp.path(), &reg, Some(&previous(&first)));
        // The increment (rows at or after the last cursor), read without the filter.
        assert_eq!(second.rows_read, 4, "{second:?}");
        assert_eq!(published(tmp.path()), "0=open,2=open,3=done,4=open");
        assert_eq!(second.rows, 4);
    }

    #[test]
    fn a_changed_output_is_verified_by_hash_and_a_damaged_one_extracted_again() {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("in");
        std::fs::create_dir_all(&input).unwrap();
        std::fs::write(input.join("events.csv"), "id,v\n1,a\n2,b\n").unwrap();
        let reg = registered(&input, json!({"mode": "full"}));
        let first = run(tmp.path(), &reg, None);
        let parquet = tmp.path().join("extracts/s/data/events.parquet");
        // Touched but identical: hashed once, found intact, skipped, with a new stamp to record.
        let bytes = std::fs::read(&parquet).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&parquet, &bytes).unwrap();
        let touched = run(tmp.path(), &reg, Some(&previous(&first)));
        assert!(
            touched.unchanged && touched.repaired.is_none(),
            "{touched:?}"
        );
        assert_ne!(touched.output_stamp, first.output_stamp);
        // Truncated: the hash differs, so the table is read again and the file is whole again.
        std::fs::write(&parquet, &bytes[..bytes.len() / 2]).unwrap();
        let prev = Previous {
            output_stamp: touched.output_stamp.clone(),
            ..previous(&first)
        };
        let repaired = run(tmp.path(), &reg, Some(&prev));
        assert!(!repaired.unchanged, "{repaired:?}");
        assert!(
            repaired
                .repaired
                .as_deref()
                .unwrap_or("")
                .contains("changed on disk"),
            "{repaired:?}"
        );
        assert_eq!(published(tmp.path()), "1=a,2=b");
        assert_eq!(repaired.hash, first.hash, "the same data, written again");
    }

    #[test]
    fn a_partitioned_table_checks_the_contract_on_the_partitions_it_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("in");
        std::fs::create_dir_all(&input).unwrap();
        let csv = input.join("events.csv");
        std::fs::write(
            &csv,
            "id,created,amount\n1,2026-01-05,1.5\n2,2026-02-01,2.5\n",
        )
        .unwrap();
        let reg = registered(
            &input,
            json!({"mode": "partitioned", "partition_by": "created", "granularity": "month"}),
        );
        let first = run(tmp.path(), &reg, None);
        let parts = tmp.path().join("extracts/s/data/events");
        let before = md5_of(&LocalData::Partitions(parts.clone())).unwrap();
        // One value no longer parses: the sniffer reads `amount` as text.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(
            &csv,
            "id,created,amount\n1,2026-01-05,1.5\n2,2026-02-01,n/a\n",
        )
        .unwrap();
        let err = try_run(tmp.path(), &reg, Some(&previous(&first))).unwrap_err();
        assert!(
            matches!(&err, ExtractError::Schema(m) if m.contains("`amount`: DOUBLE → VARCHAR")),
            "{err}"
        );
        assert_eq!(
            md5_of(&LocalData::Partitions(parts.clone())).unwrap(),
            before,
            "the published partitions are untouched"
        );
        assert!(!tmp.path().join("extracts/s/data/events.tmp").exists());
    }
}

//! The monthly Parquet partitions of one Jira source, and its `extract.duckdb` over them.
//!
//! Layout, under `data/extracts/<source>/` (the extract.duckdb contract's partitioned tables, whose
//! views read `data/<table>/*.parquet`):
//! ```text
//! data/<table>/_schema.parquet     zero rows: the table's exact columns, so the view always binds
//! data/<table>/<YYYY-MM>.parquet   the rows of issues created in that month (UTC)
//! extract.duckdb                   _meta + one view per table
//! ```
//! Partition files are named like `extract`'s own monthly partitions (`<period>.parquet`).
//!
//! [`PartitionStore::apply`] takes a batch of changes (upsert an issue's rows, delete an issue) and,
//! for each month it affects, rewrites that month's file of each of the six tables: the previous
//! rows minus the batch's issues (matched by key or id, so an issue that moved project leaves no
//! rows under its old key), plus their new rows. A file is written aside (`<month>.parquet.tmp`),
//! fsynced and renamed over the old one, under the month's lock
//! (`data/state/locks/jira-<source>.<month>.lock`, a [`Lock`](crate::fslock::Lock)): concurrent writers (webhook
//! processing and a backfill) take turns per month, readers see the old file or the new one, and a
//! crash leaves whole files. A file whose rows would not change is not rewritten (so a second
//! backfill touches nothing): each issue's row stores a digest of its rows in every table
//! (`content_digest`), compared with the new rows' before anything is read or written. A month left
//! with no rows loses its file. Up to three months of a batch are written at once.
//!
//! An issue's creation month never changes, but a batch still looks for the issues in every month
//! file of `issues` (by key or id) and rewrites every month where one is found: rows written under
//! a wrong month by an earlier version cannot linger as duplicates. (All of an issue's rows are
//! written together with its `issues` row, so that table says which months hold them.)
//!
//! DuckDB (an in-memory database per operation) reads and writes the Parquet, with the explicit
//! column types of [`super::rows::Schema`]; rows arrive as one JSON array per table, parsed once
//! into typed structs.

use super::rows::{parse_content_digest, Column, IssueRows, Schema, Table};
use crate::extract_db::{self, ContractError, Entry, ExtractDir, LocalData, MetaRow, ViewTarget};
use crate::fslock::{Lock, LockError};
use crate::quote;
use duckdb::{params, Connection};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what}: {message}")]
    Db { what: String, message: String },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Contract(#[from] ContractError),
    #[error("{0}")]
    Invalid(String),
}

fn db(what: impl Into<String>) -> impl FnOnce(duckdb::Error) -> StoreError {
    let what = what.into();
    move |e| StoreError::Db {
        what,
        message: e.to_string(),
    }
}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Io(p.to_path_buf(), e)
}

/// One change to apply.
#[derive(Clone, Debug)]
pub enum Change {
    /// Replace the issue's rows with these.
    Upsert(Box<IssueRows>),
    /// Remove the issue's rows everywhere (by key, and by id when known).
    Delete { key: String, id: Option<String> },
}

impl Change {
    fn key(&self) -> &str {
        match self {
            Change::Upsert(r) => &r.key,
            Change::Delete { key, .. } => key,
        }
    }
}

/// What an [`PartitionStore::apply`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Months whose files were looked at, sorted.
    pub months: Vec<String>,
    pub files_written: usize,
    pub files_removed: usize,
    /// Issues whose rows were already exactly the new ones (nothing written for them).
    pub issues_unchanged: usize,
}

impl ApplyReport {
    /// Whether any file changed (the source needs publishing).
    pub fn changed(&self) -> bool {
        self.files_written + self.files_removed > 0
    }

    /// Adds another report's counts to this one.
    pub fn merge(&mut self, other: ApplyReport) {
        self.months.extend(other.months);
        self.months.sort();
        self.months.dedup();
        self.files_written += other.files_written;
        self.files_removed += other.files_removed;
        self.issues_unchanged += other.issues_unchanged;
    }
}

/// The partitions of one Jira source.
#[derive(Clone, Debug)]
pub struct PartitionStore {
    dir: ExtractDir,
    locks: PathBuf,
    schema: Schema,
    /// How long to wait for another writer's turn on a month.
    pub lock_timeout: Duration,
}

/// The name of a month file's partition, `None` for other files (`_schema.parquet`).
fn month_of(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    let month = name.strip_suffix(".parquet")?;
    chrono::NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
        .ok()
        .map(|_| month.to_string())
}

fn is_month(s: &str) -> bool {
    s.len() == 7 && chrono::NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").is_ok()
}

const SCHEMA_FILE: &str = "_schema.parquet";

/// Months written at once by one [`PartitionStore::apply`].
const WRITERS: usize = 3;

fn push<T>(results: &std::sync::Mutex<Vec<T>>, item: T) {
    results.lock().unwrap_or_else(|p| p.into_inner()).push(item);
}

/// A row `o` of one of the batch's issues: its key or its id is in `batch`. Two `IN` tests rather
/// than one join on `key = key OR id = id`, which DuckDB can only run as a nested loop (rows × batch);
/// `coalesce` so that a NULL id never makes `NOT` drop a row.
const BATCH_MATCH: &str = "(coalesce(o.issue_key IN (SELECT issue_key FROM batch), false) \
     OR coalesce(o.issue_id IN (SELECT issue_id FROM batch WHERE issue_id IS NOT NULL), false))";

impl PartitionStore {
    /// The store of `source` under `data_dir` (the instance's data directory), with `schema`.
    /// Creates the directories and each table's `_schema.parquet`, and rewrites every existing file
    /// whose columns differ from `schema` (the promoted custom fields changed, or an upgrade added
    /// a column): its rows are kept, a new column is filled (promoted ones from `custom_fields`).
    pub fn open(
        data_dir: &Path,
        source: &str,
        schema: Schema,
    ) -> Result<PartitionStore, StoreError> {
        if !crate::names::is_source_name(source) {
            return Err(StoreError::Invalid(format!(
                "`{source}` is not a valid source name"
            )));
        }
        let extracts = data_dir.join("extracts");
        std::fs::create_dir_all(&extracts).map_err(io(&extracts))?;
        let extracts = extracts.canonicalize().map_err(io(&extracts))?;
        let dir = ExtractDir::new(&extracts, source)
            .ok_or_else(|| StoreError::Invalid(format!("`{source}` is not a valid source name")))?;
        let locks = data_dir.join("state").join("locks");
        let store = PartitionStore {
            dir,
            locks,
            schema,
            lock_timeout: Duration::from_secs(120),
        };
        store.ensure_schema()?;
        Ok(store)
    }

    pub fn extract_dir(&self) -> &ExtractDir {
        &self.dir
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// `data/<table>/`
    pub fn table_dir(&self, table: Table) -> PathBuf {
        self.dir.partitions(table.name())
    }

    /// `data/<table>/<month>.parquet`
    pub fn partition_file(&self, table: Table, month: &str) -> PathBuf {
        self.table_dir(table).join(format!("{month}.parquet"))
    }

    /// The month files of `table`, by month.
    pub fn months(&self, table: Table) -> Result<BTreeMap<String, PathBuf>, StoreError> {
        let dir = self.table_dir(table);
        let mut out = BTreeMap::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(StoreError::Io(dir, e)),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Some(month) = month_of(&path) {
                out.insert(month, path);
            }
        }
        Ok(out)
    }

    fn lock(&self, what: &str) -> Result<Lock, StoreError> {
        let path = self
            .locks
            .join(format!("jira-{}.{what}.lock", self.dir.source));
        Ok(Lock::acquire(
            &path,
            "jira partition writer",
            self.lock_timeout,
            |_| {},
        )?)
    }

    fn connection(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_in_memory().map_err(db("opening DuckDB"))?;
        // One thread: files are written in one deterministic layout (equal rows, equal bytes),
        // and parallelism comes from writing several months at once.
        conn.execute_batch("SET threads = 1; SET TimeZone = 'UTC';")
            .map_err(db("configuring DuckDB"))?;
        Ok(conn)
    }

    fn column_list(cols: &[Column]) -> String {
        cols.iter()
            .map(|c| quote::ident(&c.name).expect("column names are identifiers"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Makes every file of every table have exactly the schema's columns (see [`Self::open`]).
    pub fn ensure_schema(&self) -> Result<(), StoreError> {
        let conn = self.connection()?;
        for table in Table::ALL {
            let dir = self.table_dir(table);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let cols = self.schema.columns(table);
            let schema_file = dir.join(SCHEMA_FILE);
            if !schema_file.exists() || !self.has_columns(&conn, &schema_file, &cols)? {
                let _turn = self.lock("schema")?;
                let select = cols
                    .iter()
                    .map(|c| {
                        format!(
                            "CAST(NULL AS {}) AS {}",
                            c.ty.ddl(),
                            quote::ident(&c.name).expect("identifier")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                write_file(&conn, &format!("SELECT {select} LIMIT 0"), &schema_file)?;
            }
            for (month, file) in self.months(table)? {
                if self.has_columns(&conn, &file, &cols)? {
                    continue;
                }
                let _turn = self.lock(&month)?;
                if !file.exists() || self.has_columns(&conn, &file, &cols)? {
                    continue;
                }
                tracing::info!(file = %file.display(), "rewriting a Jira partition with the current columns");
                let present: BTreeSet<String> = self
                    .file_columns(&conn, &file)?
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect();
                let select = cols
                    .iter()
                    .map(|c| {
                        let name = quote::ident(&c.name).expect("identifier");
                        let expr =
                            if c.from_custom_field.is_some() && present.contains("custom_fields") {
                                Schema::promoted_sql(c, "custom_fields")
                            } else if present.contains(&c.name) {
                                format!("TRY_CAST({name} AS {})", c.ty.ddl())
                            } else {
                                format!("CAST(NULL AS {})", c.ty.ddl())
                            };
                        format!("{expr} AS {name}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "SELECT {select} FROM read_parquet({}) ORDER BY {}",
                    quote::path(&file),
                    table.sort_key()
                );
                write_file(&conn, &sql, &file)?;
            }
        }
        Ok(())
    }

    /// A Parquet file's columns and their DuckDB types, in file order.
    fn file_columns(
        &self,
        conn: &Connection,
        file: &Path,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let what = format!("reading the columns of {}", file.display());
        let mut stmt = conn
            .prepare(&format!(
                "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet({}))",
                quote::path(file)
            ))
            .map_err(db(what.clone()))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(db(what))?;
        Ok(rows)
    }

    fn has_columns(
        &self,
        conn: &Connection,
        file: &Path,
        cols: &[Column],
    ) -> Result<bool, StoreError> {
        let want: Vec<(String, String)> = cols
            .iter()
            .map(|c| (c.name.clone(), c.ty.ddl().to_string()))
            .collect();
        Ok(self.file_columns(conn, file)? == want)
    }

    /// Replaces one issue's rows (see [`Self::apply`]).
    pub fn upsert(&self, rows: IssueRows) -> Result<ApplyReport, StoreError> {
        self.apply(vec![Change::Upsert(Box::new(rows))])
    }

    /// Removes one issue's rows everywhere.
    pub fn delete(&self, key: &str, id: Option<&str>) -> Result<ApplyReport, StoreError> {
        self.apply(vec![Change::Delete {
            key: key.to_string(),
            id: id.map(str::to_string),
        }])
    }

    /// Applies a batch: for each change the last one per issue key counts. Each affected month is
    /// rewritten once for the whole batch, under its lock, one month at a time; within a month only
    /// the tables whose rows change are rewritten, `issues` last (its `content_digest` records what
    /// the other files hold, so a crash between two files is repaired by the next change).
    pub fn apply(&self, changes: Vec<Change>) -> Result<ApplyReport, StoreError> {
        let started = std::time::Instant::now();
        // The last change per key wins.
        let mut by_key: BTreeMap<String, Change> = BTreeMap::new();
        for c in changes {
            by_key.insert(c.key().to_string(), c);
        }
        if by_key.is_empty() {
            return Ok(ApplyReport::default());
        }
        for c in by_key.values() {
            if let Change::Upsert(r) = c {
                if !is_month(&r.month) {
                    return Err(StoreError::Invalid(format!(
                        "issue {}: `{}` is not a month",
                        r.key, r.month
                    )));
                }
            }
        }
        let conn = self.connection()?;
        load_keys(&conn, by_key.values())?;
        let stored = self.locate(&conn)?;

        // Which tables of which months change.
        let mut work: BTreeMap<String, BTreeSet<Table>> = BTreeMap::new();
        let all = || Table::ALL.into_iter().collect::<BTreeSet<_>>();
        let mut unchanged = 0;
        by_key.retain(|_, change| {
            let (key, id) = match &*change {
                Change::Upsert(r) => (r.key.as_str(), Some(r.id.as_str())),
                Change::Delete { key, id } => (key.as_str(), id.as_deref()),
            };
            let found: Vec<&Stored> = stored
                .iter()
                .filter(|s| s.key == key || (id.is_some() && s.id.as_deref() == id))
                .collect();
            match &*change {
                Change::Upsert(r) => {
                    let same_place = matches!(found.as_slice(), [one] if one.key == r.key && one.month == r.month);
                    let before = found.first().and_then(|s| s.digests.as_ref()).filter(|_| same_place);
                    let tables: BTreeSet<Table> = match before {
                        Some(d) => Table::ALL
                            .into_iter()
                            .filter(|t| d.get(t).map(String::as_str) != Some(r.digest(*t)))
                            .collect(),
                        None => all(),
                    };
                    for s in &found {
                        if s.month != r.month {
                            work.entry(s.month.clone()).or_default().extend(all());
                        }
                    }
                    if tables.is_empty() {
                        unchanged += 1;
                        return false;
                    }
                    // The issues row carries every table's digest: it changes with any of them.
                    work.entry(r.month.clone())
                        .or_default()
                        .extend(tables.into_iter().chain([Table::Issues]));
                    true
                }
                Change::Delete { .. } => {
                    for s in &found {
                        work.entry(s.month.clone()).or_default().extend(all());
                    }
                    !found.is_empty()
                }
            }
        });
        let mut report = ApplyReport {
            issues_unchanged: unchanged,
            ..ApplyReport::default()
        };
        if work.is_empty() {
            return Ok(report);
        }
        conn.execute_batch("DROP TABLE batch")
            .map_err(db("resetting the batch"))?;
        load_keys(&conn, by_key.values())?;
        self.load_rows(&conn, &by_key)?;
        let loaded = started.elapsed();
        // Months are independent (each under its own lock): a few are written at once, each on
        // its own connection to this in-memory database (which holds the batch and the new rows),
        // so one month's fsyncs do not hold up the next.
        let queue = std::sync::Mutex::new(work.into_iter());
        let results = std::sync::Mutex::new(Vec::new());
        let workers = WRITERS.min(queue.lock().map_or(1, |q| q.len())).max(1);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let (queue, results) = (&queue, &results);
                let conn = conn.try_clone();
                scope.spawn(move || {
                    let conn = match conn {
                        Ok(c) => c,
                        Err(e) => {
                            push(results, Err(db("opening a writer connection")(e)));
                            return;
                        }
                    };
                    loop {
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                        let Some((month, tables)) = next else { return };
                        let outcome = self.rewrite_month(&conn, &month, &tables);
                        let failed = outcome.is_err();
                        push(results, outcome.map(|o| (month, o)));
                        if failed {
                            return;
                        }
                    }
                });
            }
        });
        let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        results.sort_by(|a, b| match (a, b) {
            (Ok((x, _)), Ok((y, _))) => x.cmp(y),
            (Err(_), _) => std::cmp::Ordering::Less,
            (_, Err(_)) => std::cmp::Ordering::Greater,
        });
        for r in results {
            let (month, (written, removed)) = r?;
            report.months.push(month);
            report.files_written += written;
            report.files_removed += removed;
        }
        tracing::debug!(
            issues = by_key.len(),
            unchanged,
            ?loaded,
            total = ?started.elapsed(),
            written = report.files_written,
            "applied a batch to the Jira partitions"
        );
        Ok(report)
    }

    /// Rewrites the given tables of one month under its lock, `issues` last; (written, removed).
    fn rewrite_month(
        &self,
        conn: &Connection,
        month: &str,
        tables: &BTreeSet<Table>,
    ) -> Result<(usize, usize), StoreError> {
        let _turn = self.lock(month)?;
        let (mut written, mut removed) = (0, 0);
        // issues last: see `apply`.
        for table in tables
            .iter()
            .filter(|t| **t != Table::Issues)
            .chain(tables.get(&Table::Issues))
        {
            match self.rewrite(conn, *table, month)? {
                Outcome::Written => written += 1,
                Outcome::Removed => removed += 1,
                Outcome::Nothing => {}
            }
        }
        Ok((written, removed))
    }

    /// Loads the new rows into `incoming_<table>` tables, typed: the rows' JSON is parsed once
    /// into structs (json_transform), promoted columns computed from `custom_fields`.
    fn load_rows(
        &self,
        conn: &Connection,
        by_key: &BTreeMap<String, Change>,
    ) -> Result<(), StoreError> {
        for table in Table::ALL {
            let rows: Vec<&serde_json::Value> = by_key
                .values()
                .filter_map(|c| match c {
                    Change::Upsert(r) => Some(r.rows(table)),
                    Change::Delete { .. } => None,
                })
                .flatten()
                .collect();
            let json =
                serde_json::to_string(&rows).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let cols = self.schema.columns(table);
            let structure: serde_json::Map<String, serde_json::Value> = cols
                .iter()
                .filter(|c| c.from_custom_field.is_none())
                .map(|c| (c.name.clone(), serde_json::Value::from(c.ty.ddl())))
                .collect();
            let structure = serde_json::Value::Array(vec![serde_json::Value::Object(structure)]);
            let select = cols
                .iter()
                .map(|c| {
                    let name = quote::ident(&c.name).expect("identifier");
                    if c.from_custom_field.is_some() {
                        format!("{} AS {name}", Schema::promoted_sql(c, "s.custom_fields"))
                    } else {
                        format!("s.{name} AS {name}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            conn.execute(
                &format!(
                    "CREATE OR REPLACE TABLE incoming_{} AS SELECT {select} FROM \
                     (SELECT unnest(from_json(CAST(? AS JSON), {})) AS s)",
                    table.name(),
                    quote::literal(&structure.to_string())
                ),
                params![json],
            )
            .map_err(db(format!("loading new rows of {}", table.name())))?;
        }
        Ok(())
    }

    /// Where the batch's issues are now: every `issues` row matching a batch key or id, with its
    /// month (from the file name) and `content_digest`. An issue's rows in the other tables are
    /// always written with its `issues` row, into the same month, so this table says where they
    /// all are; and it is the smallest table to scan on every change.
    fn locate(&self, conn: &Connection) -> Result<Vec<Stored>, StoreError> {
        let lookup = || -> Result<Vec<Stored>, StoreError> {
            let files = self.months(Table::Issues)?;
            if files.is_empty() {
                return Ok(Vec::new());
            }
            let list = files
                .values()
                .map(|f| quote::path(f))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT __file, issue_key, issue_id, content_digest \
                 FROM read_parquet([{list}], filename = '__file') o WHERE {BATCH_MATCH}"
            );
            let mut stmt = conn.prepare(&sql).map_err(db("looking up issues"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(db("looking up issues"))?;
            Ok(rows
                .into_iter()
                .filter_map(|(file, key, id, digest)| {
                    Some(Stored {
                        month: month_of(Path::new(&file))?,
                        key,
                        id,
                        digests: digest.as_deref().and_then(parse_content_digest),
                    })
                })
                .collect())
        };
        // A concurrent writer may remove an emptied month between the listing and the read.
        lookup().or_else(|_| lookup())
    }

    /// Rewrites one month file of one table for the loaded batch (the month's lock is held): the
    /// file's rows minus the batch's issues, plus their new rows of this month.
    fn rewrite(&self, conn: &Connection, table: Table, month: &str) -> Result<Outcome, StoreError> {
        let t = table.name();
        let file = self.partition_file(table, month);
        let cols = Self::column_list(&self.schema.columns(table));
        let m = quote::literal(month);
        let what = || format!("{} of {t}", file.display());
        let new = format!("SELECT {cols} FROM incoming_{t} WHERE issue_created_month = {m}");
        let rows = if file.exists() {
            format!(
                "SELECT {cols} FROM read_parquet({}) o WHERE NOT {BATCH_MATCH} UNION ALL {new}",
                quote::path(&file)
            )
        } else {
            new
        };
        conn.execute_batch(&format!("CREATE OR REPLACE TEMP TABLE result AS {rows}"))
            .map_err(db(what()))?;
        let remaining: i64 = conn
            .query_row("SELECT count(*) FROM result", [], |r| r.get(0))
            .map_err(db(what()))?;
        if remaining == 0 {
            return Ok(if file.exists() {
                remove_file(&file)?;
                Outcome::Removed
            } else {
                Outcome::Nothing
            });
        }
        let sql = format!("SELECT {cols} FROM result ORDER BY {}", table.sort_key());
        write_file(conn, &sql, &file)?;
        Ok(Outcome::Written)
    }

    /// Writes or refreshes `extract.duckdb` (the contract's `_meta` and one view per table over
    /// `data/<table>/*.parquet`), under the source's publish lock. `_meta.extracted_at` is the
    /// latest modification time of the table's files, so an unchanged store leaves the file as it
    /// is (returns `false`).
    pub fn publish(&self) -> Result<bool, StoreError> {
        let _turn = self.lock("publish")?;
        let conn = self.connection()?;
        let mut entries = Vec::new();
        for table in Table::ALL {
            let dir = self.table_dir(table);
            if !dir.join(SCHEMA_FILE).exists() {
                return Err(StoreError::Invalid(format!(
                    "{} has no {SCHEMA_FILE}; open the store first",
                    dir.display()
                )));
            }
            let data = LocalData::Partitions(dir.clone());
            let files = self.months(table)?;
            let rows: i64 = if files.is_empty() {
                0
            } else {
                let list = files
                    .values()
                    .map(|f| quote::path(f))
                    .collect::<Vec<_>>()
                    .join(", ");
                conn.query_row(
                    &format!("SELECT count(*) FROM read_parquet([{list}])"),
                    [],
                    |r| r.get(0),
                )
                .map_err(db(format!("counting rows of {}", table.name())))?
            };
            let latest = files
                .values()
                .chain(std::iter::once(&dir.join(SCHEMA_FILE)))
                .filter_map(|f| f.metadata().ok()?.modified().ok())
                .max();
            let extracted_at = latest.map(|t| {
                chrono::DateTime::<chrono::Utc>::from(t)
                    .format("%Y-%m-%d %H:%M:%S%.6f")
                    .to_string()
            });
            entries.push(Entry {
                meta: MetaRow {
                    table_name: table.name().to_string(),
                    description: Some(table.description().to_string()),
                    rows: Some(rows),
                    size_bytes: Some(data.size() as i64),
                    extracted_at,
                    query_mode: "local".into(),
                },
                view: ViewTarget::Local(data),
            });
        }
        let existing = extract_db::read_with(&conn, &self.dir)?;
        drop(conn);
        Ok(extract_db::write(
            &self.dir,
            &entries,
            &[],
            &extract_db::RemotePolicy::default(),
            existing.as_ref(),
        )?)
    }

    /// Every issue in the store with its `updated` time (UTC text), by key: what a consistency
    /// check compares with a JQL search.
    pub fn issue_versions(&self) -> Result<BTreeMap<String, Option<String>>, StoreError> {
        let files = self.months(Table::Issues)?;
        if files.is_empty() {
            return Ok(BTreeMap::new());
        }
        let conn = self.connection()?;
        let list = files
            .values()
            .map(|f| quote::path(f))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt = conn
            .prepare(&format!(
                "SELECT issue_key, strftime(updated, '%Y-%m-%d %H:%M:%S.%g+00') FROM read_parquet([{list}])"
            ))
            .map_err(db("reading issue keys"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .and_then(|rows| rows.collect::<Result<BTreeMap<_, _>, _>>())
            .map_err(db("reading issue keys"))?;
        Ok(rows)
    }
}

enum Outcome {
    Written,
    Removed,
    /// No file, and no rows for it.
    Nothing,
}

/// An issue's `issues` row as stored.
struct Stored {
    month: String,
    key: String,
    id: Option<String>,
    /// Per-table digests from `content_digest` (`None` when absent or unreadable: rewrite all).
    digests: Option<BTreeMap<Table, String>>,
}

/// `batch (issue_key, issue_id)`: the keys (and ids) of the changes.
fn load_keys<'a>(
    conn: &Connection,
    changes: impl Iterator<Item = &'a Change>,
) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE batch (issue_key VARCHAR, issue_id VARCHAR)")
        .map_err(db("creating the batch table"))?;
    let mut app = conn.appender("batch").map_err(db("loading the batch"))?;
    for c in changes {
        let (key, id) = match c {
            Change::Upsert(r) => (r.key.as_str(), Some(r.id.as_str())),
            Change::Delete { key, id } => (key.as_str(), id.as_deref()),
        };
        app.append_row(params![key, id])
            .map_err(db("loading the batch"))?;
    }
    Ok(())
}

/// Writes the rows of `select` to `target` as Parquet: to `<target>.tmp`, fsynced, renamed over
/// `target`, the directory fsynced.
fn write_file(conn: &Connection, select: &str, target: &Path) -> Result<(), StoreError> {
    let mut tmp = target.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    remove_file(&tmp)?;
    let result = conn
        .execute_batch(&format!(
            "COPY ({select}) TO {} (FORMAT parquet)",
            quote::path(&tmp)
        ))
        .map_err(db(format!("writing {}", target.display())))
        .and_then(|()| {
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io(&tmp))
        })
        .and_then(|()| std::fs::rename(&tmp, target).map_err(io(target)));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    extract_db::sync_dir(target);
    Ok(())
}

fn remove_file(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            extract_db::sync_dir(path);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io(path.to_path_buf(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::rows::fixtures::{fields, issue};
    use super::super::rows::Mapper;
    use super::*;

    fn store(dir: &Path, promote: &[&str]) -> (PartitionStore, Mapper) {
        let promote: Vec<String> = promote.iter().map(|s| s.to_string()).collect();
        let m = Mapper::new(&fields(), &promote).unwrap();
        (
            PartitionStore::open(dir, "ops", m.schema().clone()).unwrap(),
            m,
        )
    }

    fn count(s: &PartitionStore, table: Table, filter: &str) -> i64 {
        let c = Connection::open_in_memory().unwrap();
        c.query_row(
            &format!(
                "SELECT count(*) FROM read_parquet({}) WHERE {filter}",
                quote::path(&s.table_dir(table).join("*.parquet"))
            ),
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn jira_store_upserts_replace_and_deletes_remove_across_tables() {
        let tmp = tempfile::tempdir().unwrap();
        let (s, m) = store(tmp.path(), &[]);
        let a = m
            .map(&issue("OPS-1", "1", "2024-01-05T10:00:00.000+0000"))
            .unwrap();
        let b = m
            .map(&issue("OPS-2", "2", "2024-02-05T10:00:00.000+0000"))
            .unwrap();
        let r = s
            .apply(vec![
                Change::Upsert(Box::new(a.clone())),
                Change::Upsert(Box::new(b)),
            ])
            .unwrap();
        assert_eq!(r.months, ["2024-01", "2024-02"]);
        assert_eq!(r.files_written, 12);
        for t in Table::ALL {
            assert!(s.partition_file(t, "2024-01").exists(), "{t:?}");
        }
        assert_eq!(count(&s, Table::Changelog, "true"), 4);

        // The same rows again: nothing is rewritten.
        let before = std::fs::metadata(s.partition_file(Table::Issues, "2024-01"))
            .unwrap()
            .modified()
            .unwrap();
        let r = s.upsert(a.clone()).unwrap();
        assert_eq!((r.files_written, r.issues_unchanged), (0, 1));
        let after = std::fs::metadata(s.partition_file(Table::Issues, "2024-01"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);

        // A changed issue replaces its rows: one comment fewer, a new summary.
        let mut changed = issue("OPS-1", "1", "2024-01-05T10:00:00.000+0000");
        changed.issue["fields"]["summary"] = "new".into();
        changed.issue["fields"]["comment"]["comments"] = serde_json::json!([]);
        let r = s.upsert(m.map(&changed).unwrap()).unwrap();
        // Only the files whose rows change are rewritten: issues, and comments (now empty).
        assert_eq!((r.files_written, r.files_removed), (1, 1));
        // A change in one other table rewrites that table and the issues row (its digests)…
        let mut commented = changed.clone();
        commented.issue["fields"]["attachment"] = serde_json::json!([]);
        let r = s.upsert(m.map(&commented).unwrap()).unwrap();
        assert_eq!((r.files_written, r.files_removed), (1, 1));
        // …so the same issue again rewrites nothing.
        let r = s.upsert(m.map(&commented).unwrap()).unwrap();
        assert_eq!((r.files_written, r.issues_unchanged), (0, 1));
        assert!(
            !s.partition_file(Table::Comments, "2024-01").exists(),
            "an emptied month loses its file"
        );
        assert_eq!(
            count(&s, Table::Issues, "issue_key = 'OPS-1' AND summary = 'new'"),
            1
        );
        assert_eq!(count(&s, Table::Issues, "true"), 2);

        // Deleting removes the issue from every table.
        let r = s.delete("OPS-2", None).unwrap();
        assert_eq!(r.files_removed, 6);
        for t in Table::ALL {
            assert_eq!(count(&s, t, "issue_key = 'OPS-2'"), 0);
        }
        // Deleting an issue that is not there touches nothing.
        assert!(!s.delete("OPS-404", None).unwrap().changed());
    }

    #[test]
    fn jira_store_removes_rows_left_in_another_month_or_under_an_old_key() {
        let tmp = tempfile::tempdir().unwrap();
        let (s, m) = store(tmp.path(), &[]);
        // Rows of OPS-1 written under a wrong month (as an older version might have).
        let wrong = m
            .map(&issue("OPS-1", "1", "2023-12-05T10:00:00.000+0000"))
            .unwrap();
        s.upsert(wrong).unwrap();
        let right = m
            .map(&issue("OPS-1", "1", "2024-01-05T10:00:00.000+0000"))
            .unwrap();
        let r = s.upsert(right).unwrap();
        assert_eq!(r.months, ["2023-12", "2024-01"]);
        assert_eq!(count(&s, Table::Issues, "issue_key = 'OPS-1'"), 1);
        assert!(!s.partition_file(Table::Issues, "2023-12").exists());
        // The issue moved to another project: same id, new key. The old key's rows go.
        let moved = m
            .map(&issue("WEB-5", "1", "2024-01-05T10:00:00.000+0000"))
            .unwrap();
        s.upsert(moved).unwrap();
        assert_eq!(count(&s, Table::Issues, "true"), 1);
        assert_eq!(count(&s, Table::Comments, "issue_key = 'OPS-1'"), 0);
        assert_eq!(count(&s, Table::Comments, "issue_key = 'WEB-5'"), 1);
    }

    #[test]
    fn jira_store_columns_have_their_declared_types_and_promotions_migrate() {
        let tmp = tempfile::tempdir().unwrap();
        let (s, m) = store(tmp.path(), &[]);
        s.upsert(
            m.map(&issue("OPS-1", "1", "2024-01-05T10:00:00.000+0000"))
                .unwrap(),
        )
        .unwrap();
        let c = Connection::open_in_memory().unwrap();
        let types = |s: &PartitionStore, t: Table| -> Vec<(String, String)> {
            let mut st = c
                .prepare(&format!(
                    "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet({}))",
                    quote::path(&s.table_dir(t).join("*.parquet"))
                ))
                .unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        for t in Table::ALL {
            let want: Vec<(String, String)> = s
                .schema()
                .columns(t)
                .iter()
                .map(|c| (c.name.clone(), c.ty.ddl().to_string()))
                .collect();
            assert_eq!(types(&s, t), want, "{t:?}");
        }
        // Promote two custom fields: the existing file gets the columns, filled from custom_fields.
        let (s2, _) = store(tmp.path(), &["Team", "Severity"]);
        let cols = types(&s2, Table::Issues);
        assert_eq!(
            &cols[cols.len() - 2..],
            [
                ("team".into(), "VARCHAR".into()),
                ("severity".into(), "DOUBLE".into())
            ]
        );
        let (team, severity): (String, f64) = c
            .query_row(
                &format!(
                    "SELECT team, severity FROM read_parquet({})",
                    quote::path(&s2.partition_file(Table::Issues, "2024-01"))
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((team.as_str(), severity), ("Platform", 2.0));
        let ts: String = c
            .query_row(
                &format!(
                    "SELECT created::VARCHAR || ' ' || labels::VARCHAR FROM read_parquet({})",
                    quote::path(&s2.partition_file(Table::Issues, "2024-01"))
                ),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(ts, "2024-01-05 10:00:00+00 [backend, urgent]");
    }

    #[test]
    fn jira_store_publishes_the_extract_contract_and_skips_unchanged_rewrites() {
        let tmp = tempfile::tempdir().unwrap();
        let (s, m) = store(tmp.path(), &[]);
        // Before any issue: every view exists and is empty.
        assert!(s.publish().unwrap());
        let c = Connection::open(s.extract_dir().db()).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM remote_links", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        drop(c);
        s.upsert(
            m.map(&issue("OPS-1", "1", "2024-01-05T10:00:00.000+0000"))
                .unwrap(),
        )
        .unwrap();
        assert!(s.publish().unwrap());
        assert!(!s.publish().unwrap(), "nothing changed since");
        let contents = extract_db::read_file(s.extract_dir()).unwrap().unwrap();
        let meta: Vec<(String, Option<i64>)> = contents
            .meta
            .iter()
            .map(|m| (m.table_name.clone(), m.rows))
            .collect();
        assert_eq!(
            meta,
            [
                ("attachments".into(), Some(1)),
                ("changelog".into(), Some(2)),
                ("comments".into(), Some(1)),
                ("issuelinks".into(), Some(1)),
                ("issues".into(), Some(1)),
                ("remote_links".into(), Some(1))
            ]
        );
        assert!(
            contents.views["issues"].contains("issues/*.parquet"),
            "{}",
            contents.views["issues"]
        );
        assert!(!extract_db::wal_of(&s.extract_dir().db()).exists());
        let versions = s.issue_versions().unwrap();
        assert_eq!(
            versions["OPS-1"].as_deref(),
            Some("2024-03-02 09:00:00.000+00")
        );
    }
}

//! The extract.duckdb contract (DESIGN.md §4): how every source hands its tables to the analytics rebuild,
//! and how other tools hand theirs to us.
//!
//! `data/extracts/<source>/extract.duckdb` holds a `_meta` table (one row per table), an optional
//! `_remote_attach` table (what to ATTACH for remote tables; env-var *names* only), and one view per
//! table: over `data/<t>.parquet`, over `data/<t>/*.parquet` (partitioned), or over a remote alias.
//! [`write`] builds the file aside and renames it into place, so a failed or killed writer leaves the
//! previous extract whole; [`read`] reads one that is attached to a connection, checking every name.
//! [`remote`] decides which `_remote_attach` rows may be attached, and attaches them; [`schema`] is the
//! schema contract of a published table (which column changes a new extract may make).

pub mod remote;
pub mod schema;

use crate::names;
use crate::quote;
use duckdb::{params, Connection};
use std::path::{Path, PathBuf};

pub use remote::{RemoteAttach, RemotePolicy};

/// The file name every source writes.
pub const EXTRACT_DB: &str = "extract.duckdb";

/// `_meta`, exactly as the contract fixes it (column order included).
pub const META_DDL: &str = "CREATE TABLE _meta (table_name VARCHAR NOT NULL, description VARCHAR, \
     rows BIGINT, size_bytes BIGINT, extracted_at TIMESTAMP, query_mode VARCHAR DEFAULT 'local')";

/// `_remote_attach`, exactly as the contract fixes it.
pub const REMOTE_ATTACH_DDL: &str =
    "CREATE TABLE _remote_attach (alias VARCHAR, extension VARCHAR, url VARCHAR, token_env VARCHAR)";

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("{path}: {message}")]
    Db { path: PathBuf, message: String },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

fn db_err(path: &Path) -> impl Fn(duckdb::Error) -> ContractError + '_ {
    move |e| ContractError::Db {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// One source's extract directory: `extracts/<source>/`.
#[derive(Clone, Debug)]
pub struct ExtractDir {
    pub source: String,
    dir: PathBuf,
}

impl ExtractDir {
    /// `None` when `source` is not a name the contract allows (such directories are ignored).
    /// `extracts` should be absolute: views name their Parquet files by absolute path.
    pub fn new(extracts: &Path, source: &str) -> Option<ExtractDir> {
        names::is_identifier(source).then(|| ExtractDir {
            source: source.to_string(),
            dir: extracts.join(source),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn db(&self) -> PathBuf {
        self.dir.join(EXTRACT_DB)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `data/<t>.parquet`
    pub fn parquet(&self, table: &str) -> PathBuf {
        self.data().join(format!("{table}.parquet"))
    }

    /// `data/<t>/` (partitioned tables: one Parquet file per partition inside).
    pub fn partitions(&self, table: &str) -> PathBuf {
        self.data().join(table)
    }

    /// Where a local table's data is, when it exists: a file, or a directory of Parquet files.
    pub fn local_data(&self, table: &str) -> Option<LocalData> {
        let file = self.parquet(table);
        if file.is_file() {
            return Some(LocalData::File(file));
        }
        let dir = self.partitions(table);
        dir.is_dir().then_some(LocalData::Partitions(dir))
    }
}

/// A local table's Parquet.
#[derive(Clone, Debug, PartialEq)]
pub enum LocalData {
    File(PathBuf),
    Partitions(PathBuf),
}

impl LocalData {
    /// The `read_parquet(...)` call over it.
    pub fn scan(&self) -> String {
        match self {
            LocalData::File(f) => format!("read_parquet({})", quote::path(f)),
            LocalData::Partitions(d) => {
                format!("read_parquet({})", quote::path(&d.join("*.parquet")))
            }
        }
    }

    /// Bytes on disk.
    pub fn size(&self) -> u64 {
        match self {
            LocalData::File(f) => f.metadata().map_or(0, |m| m.len()),
            LocalData::Partitions(d) => std::fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum(),
        }
    }
}

/// One `_meta` row.
#[derive(Clone, Debug, PartialEq)]
pub struct MetaRow {
    pub table_name: String,
    pub description: Option<String>,
    pub rows: Option<i64>,
    pub size_bytes: Option<i64>,
    /// `YYYY-MM-DD HH:MM:SS[.ffffff]`, UTC.
    pub extracted_at: Option<String>,
    /// `local`, `remote` or `materialized`.
    pub query_mode: String,
}

impl MetaRow {
    pub fn is_remote(&self) -> bool {
        self.query_mode == "remote"
    }
}

/// What a table's view in extract.duckdb reads.
#[derive(Clone, Debug, PartialEq)]
pub enum ViewTarget {
    Local(LocalData),
    /// `<alias>."<schema>"."<table>"` of a `_remote_attach` row.
    Remote {
        alias: String,
        schema: String,
        table: String,
    },
    /// `<function>('<arg>', …)`: a table function of a remote's extension, e.g. the seed system's
    /// BigQuery views, `bigquery_query('<project>', 'SELECT * FROM `<project>.<dataset>.<table>`')`.
    TableFunction {
        function: String,
        args: Vec<String>,
    },
}

/// A table as written into extract.duckdb.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub meta: MetaRow,
    pub view: ViewTarget,
}

/// What an extract.duckdb says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Contents {
    pub meta: Vec<MetaRow>,
    pub remote: Vec<RemoteAttach>,
    /// View name → its SQL, as DuckDB stored it (only filled by [`read`]).
    pub views: std::collections::BTreeMap<String, String>,
}

/// Reads `_meta` and `_remote_attach` of the extract attached as `catalog` (and its views' SQL when
/// `with_views`: listing views renders every attached view's SQL, which costs at rebuild scale). Rows
/// are returned as written; callers check names before building anything from them.
pub fn read(
    conn: &Connection,
    catalog: &str,
    path: &Path,
    with_views: bool,
) -> Result<Contents, ContractError> {
    let cat = quote::ident(catalog)
        .ok_or_else(|| ContractError::Invalid(format!("`{catalog}` is not a safe name")))?;
    let err = db_err(path);
    let has = |table: &str| -> Result<bool, ContractError> {
        conn.query_row(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' \
             AND table_name = ?",
            params![catalog, table],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .map_err(&err)
    };
    if !has("_meta")? {
        return Err(ContractError::Invalid(
            "it has no `_meta` table, so it is not an extract".into(),
        ));
    }
    let mut stmt = conn
        .prepare(&format!(
            "SELECT CAST(table_name AS VARCHAR), CAST(description AS VARCHAR), CAST(rows AS BIGINT), \
             CAST(size_bytes AS BIGINT), CAST(extracted_at AS VARCHAR), \
             coalesce(CAST(query_mode AS VARCHAR), 'local') FROM {cat}._meta ORDER BY 1"
        ))
        .map_err(&err)?;
    let meta = stmt
        .query_map([], |r| {
            Ok(MetaRow {
                table_name: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                description: r.get(1)?,
                rows: r.get(2)?,
                size_bytes: r.get(3)?,
                extracted_at: r.get(4)?,
                query_mode: r.get(5)?,
            })
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(&err)?;
    let mut remote = Vec::new();
    if has("_remote_attach")? {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT CAST(alias AS VARCHAR), CAST(extension AS VARCHAR), CAST(url AS VARCHAR), \
                 CAST(token_env AS VARCHAR) FROM {cat}._remote_attach ORDER BY 1"
            ))
            .map_err(&err)?;
        remote = stmt
            .query_map([], |r| {
                Ok(RemoteAttach {
                    alias: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    extension: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    url: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    token_env: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(&err)?;
    }
    let mut views = std::collections::BTreeMap::new();
    if with_views {
        let mut stmt = conn
            .prepare(
                "SELECT view_name, sql FROM duckdb_views() WHERE database_name = ? AND schema_name = 'main'",
            )
            .map_err(&err)?;
        views = stmt
            .query_map([catalog], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .and_then(|rows| rows.collect::<Result<_, _>>())
            .map_err(&err)?;
    }
    Ok(Contents {
        meta,
        remote,
        views,
    })
}

/// Reads the extract at `dir` on its own (for a writer that keeps rows of tables it did not touch).
/// `Ok(None)` when there is no extract yet.
pub fn read_file(dir: &ExtractDir) -> Result<Option<Contents>, ContractError> {
    let conn = Connection::open_in_memory().map_err(db_err(&dir.db()))?;
    read_with(&conn, dir)
}

static READ_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// [`read_file`] through an existing connection (saves starting a DuckDB instance): the extract is
/// attached under a name of its own for the read, then detached.
pub fn read_with(conn: &Connection, dir: &ExtractDir) -> Result<Option<Contents>, ContractError> {
    let path = dir.db();
    if !path.exists() {
        return Ok(None);
    }
    let alias = format!(
        "extract_read_{}",
        READ_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    conn.execute_batch(&format!(
        "ATTACH {} AS {alias} (READ_ONLY)",
        quote::path(&path)
    ))
    .map_err(db_err(&path))?;
    let result = read(conn, &alias, &path, true);
    let _ = conn.execute_batch(&format!("DETACH {alias}"));
    result.map(Some)
}

/// Writes `extract.duckdb` for `entries` aside and renames it into place (DESIGN.md §4). Remote
/// entries need their alias attachable now: DuckDB binds a view when it is created. Returns `false`
/// without writing when `existing` (what the file says now, from [`read_file`]) is exactly this.
pub fn write(
    dir: &ExtractDir,
    entries: &[Entry],
    remotes: &[RemoteAttach],
    policy: &RemotePolicy,
    existing: Option<&Contents>,
) -> Result<bool, ContractError> {
    for e in entries {
        if !names::is_identifier(&e.meta.table_name) {
            return Err(ContractError::Invalid(format!(
                "`{}` is not a safe table name",
                e.meta.table_name
            )));
        }
    }
    let wanted = Contents {
        meta: entries.iter().map(|e| e.meta.clone()).collect(),
        remote: remotes.to_vec(),
        views: Default::default(),
    };
    if let Some(existing) = existing {
        if same_contents(existing, &wanted) && views_point_here(dir, entries, existing) {
            return Ok(false);
        }
    }
    std::fs::create_dir_all(dir.dir()).map_err(|e| ContractError::Io(dir.dir().into(), e))?;
    let final_path = dir.db();
    let tmp = dir.dir().join(format!("{EXTRACT_DB}.tmp"));
    remove_db_files(&tmp)?;
    let result = write_file(&tmp, entries, remotes, policy);
    if let Err(e) = result {
        let _ = remove_db_files(&tmp);
        return Err(e);
    }
    replace_db_file(&tmp, &final_path)?;
    Ok(true)
}

fn write_file(
    tmp: &Path,
    entries: &[Entry],
    remotes: &[RemoteAttach],
    policy: &RemotePolicy,
) -> Result<(), ContractError> {
    let err = db_err(tmp);
    let conn = Connection::open(tmp).map_err(&err)?;
    // Remote views bind against their alias, so it must be attached while they are created. A
    // remote that only the reader attaches (BigQuery: the extension and a Google token belong to
    // the reader) gets a stand-in while the views are written (made before the transaction, which
    // may write one database only): the view's SQL is what is stored, and DuckDB binds it again
    // against the real remote when it is queried.
    for r in remotes.iter().filter(|r| remote::attaches_at_read_time(r)) {
        stand_in(&conn, r, entries).map_err(&err)?;
    }
    conn.execute_batch(&format!(
        "SET TimeZone = 'UTC'; BEGIN; {META_DDL}; {REMOTE_ATTACH_DDL};"
    ))
    .map_err(&err)?;
    {
        let mut insert = conn
            .prepare("INSERT INTO _meta VALUES (?, ?, ?, ?, CAST(? AS TIMESTAMP), ?)")
            .map_err(&err)?;
        for e in entries {
            let m = &e.meta;
            insert
                .execute(params![
                    m.table_name,
                    m.description,
                    m.rows,
                    m.size_bytes,
                    m.extracted_at,
                    m.query_mode
                ])
                .map_err(&err)?;
        }
        let mut insert = conn
            .prepare("INSERT INTO _remote_attach VALUES (?, ?, ?, ?)")
            .map_err(&err)?;
        for r in remotes {
            insert
                .execute(params![r.alias, r.extension, r.url, r.token_env])
                .map_err(&err)?;
        }
    }
    for r in remotes {
        if remote::attaches_at_read_time(r) {
            continue; // a stand-in is attached
        }
        remote::attach(&conn, r, policy).map_err(|refusal| {
            ContractError::Invalid(format!("remote `{}`: {refusal}", r.alias))
        })?;
    }
    for e in entries {
        let name = quote::ident(&e.meta.table_name).expect("checked above");
        let select = match &e.view {
            ViewTarget::Local(data) => format!("SELECT * FROM {}", data.scan()),
            ViewTarget::Remote {
                alias,
                schema,
                table,
            } => {
                let (Some(a), Some(s), Some(t)) = (
                    quote::ident(alias),
                    quote::ident(schema),
                    quote::ident(table),
                ) else {
                    return Err(ContractError::Invalid(format!(
                        "remote table `{alias}.{schema}.{table}` has an unsafe name"
                    )));
                };
                format!("SELECT * FROM {a}.{s}.{t}")
            }
            ViewTarget::TableFunction { function, args } => {
                let f = table_function(function)?;
                let args: Vec<String> = args.iter().map(|a| quote::literal(a)).collect();
                format!("SELECT * FROM {f}({})", args.join(", "))
            }
        };
        conn.execute_batch(&format!("CREATE VIEW {name} AS {select}"))
            .map_err(&err)?;
    }
    conn.execute_batch("COMMIT; CHECKPOINT;").map_err(&err)?;
    for r in remotes {
        let _ = conn.execute_batch(&format!("DETACH {}", quote::ident(&r.alias).unwrap()));
    }
    drop(conn);
    Ok(())
}

/// A table function's name, checked (it is spliced into SQL).
fn table_function(name: &str) -> Result<&str, ContractError> {
    if names::is_identifier(name) {
        Ok(name)
    } else {
        Err(ContractError::Invalid(format!(
            "`{name}` is not a safe table function name"
        )))
    }
}

/// Attaches an empty in-memory database under `r`'s alias with a placeholder table for each view
/// over it, and a placeholder macro for each table function a view calls (when DuckDB has none of
/// that name), so that the views bind while they are written.
fn stand_in(conn: &Connection, r: &RemoteAttach, entries: &[Entry]) -> duckdb::Result<()> {
    let Some(alias) = quote::ident(&r.alias) else {
        return Ok(()); // refused with the views that use it
    };
    conn.execute_batch(&format!("ATTACH ':memory:' AS {alias}"))?;
    for e in entries {
        match &e.view {
            ViewTarget::Remote {
                alias: a,
                schema,
                table,
            } if a == &r.alias => {
                if let (Some(s), Some(t)) = (quote::ident(schema), quote::ident(table)) {
                    conn.execute_batch(&format!(
                        "CREATE SCHEMA IF NOT EXISTS {alias}.{s}; \
                         CREATE TABLE IF NOT EXISTS {alias}.{s}.{t} (stand_in INTEGER);"
                    ))?;
                }
            }
            ViewTarget::TableFunction { function, args } if names::is_identifier(function) => {
                let known: i64 = conn.query_row(
                    "SELECT count(*) FROM duckdb_functions() WHERE function_name = ?",
                    [function],
                    |row| row.get(0),
                )?;
                if known == 0 {
                    let params: Vec<String> = (0..args.len()).map(|i| format!("a{i}")).collect();
                    conn.execute_batch(&format!(
                        "CREATE TEMP MACRO {function}({}) AS TABLE SELECT NULL AS stand_in",
                        params.join(", ")
                    ))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn same_contents(a: &Contents, b: &Contents) -> bool {
    // extracted_at is compared at second precision: a TIMESTAMP round trip may drop trailing zeros.
    let key = |m: &MetaRow| {
        (
            m.table_name.clone(),
            m.description.clone(),
            m.rows,
            m.size_bytes,
            m.extracted_at
                .as_deref()
                .map(|t| t.get(..19).unwrap_or(t).to_string()),
            m.query_mode.clone(),
        )
    };
    let mut x: Vec<_> = a.meta.iter().map(key).collect();
    let mut y: Vec<_> = b.meta.iter().map(key).collect();
    x.sort();
    y.sort();
    let mut ra = a.remote.clone();
    let mut rb = b.remote.clone();
    ra.sort_by(|p, q| p.alias.cmp(&q.alias));
    rb.sort_by(|p, q| p.alias.cmp(&q.alias));
    x == y && ra == rb
}

/// Views name Parquet files by absolute path: an instance that moved needs its views rewritten.
fn views_point_here(dir: &ExtractDir, entries: &[Entry], existing: &Contents) -> bool {
    entries.iter().all(|e| {
        let Some(sql) = existing.views.get(&e.meta.table_name) else {
            return false;
        };
        match &e.view {
            ViewTarget::Local(LocalData::File(p) | LocalData::Partitions(p)) => {
                p.starts_with(dir.dir()) && sql.contains(p.to_string_lossy().as_ref())
            }
            ViewTarget::Remote { .. } => true,
            ViewTarget::TableFunction { function, .. } => sql.contains(function.as_str()),
        }
    })
}

/// Removes a database file and its WAL, if present.
pub fn remove_db_files(path: &Path) -> Result<(), ContractError> {
    for p in [path.to_path_buf(), wal_of(path)] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ContractError::Io(p, e)),
        }
    }
    Ok(())
}

pub fn wal_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".wal");
    PathBuf::from(s)
}

/// Makes a closed, checkpointed database file durable and renames it over `target`. A WAL beside the
/// target belongs to no one we know (we never open the target for writing) and would be replayed
/// onto the new file, so it goes first.
pub fn replace_db_file(tmp: &Path, target: &Path) -> Result<(), ContractError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| ContractError::Io(p, e)
    };
    let tmp_wal = wal_of(tmp);
    if tmp_wal.exists() {
        return Err(ContractError::Invalid(format!(
            "{} was left behind after a checkpoint; not publishing {}",
            tmp_wal.display(),
            tmp.display()
        )));
    }
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(tmp))?;
    let wal = wal_of(target);
    match std::fs::remove_file(&wal) {
        Ok(()) => tracing::warn!(path = %wal.display(), "removed a stale WAL"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ContractError::Io(wal, e)),
    }
    std::fs::rename(tmp, target).map_err(io(target))?;
    sync_dir(target);
    Ok(())
}

/// fsync of a file's directory, so a rename survives a power cut. Best effort.
pub fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, rows: i64) -> MetaRow {
        MetaRow {
            table_name: name.into(),
            description: Some("d".into()),
            rows: Some(rows),
            size_bytes: Some(10),
            extracted_at: Some("2026-01-02 03:04:05".into()),
            query_mode: "local".into(),
        }
    }

    #[test]
    fn writes_the_contract_and_skips_identical_rewrites() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ExtractDir::new(tmp.path(), "shop").unwrap();
        std::fs::create_dir_all(dir.data()).unwrap();
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(&format!(
            "COPY (SELECT range AS id FROM range(3)) TO {} (FORMAT parquet)",
            quote::path(&dir.parquet("orders"))
        ))
        .unwrap();
        let entries = vec![Entry {
            meta: meta("orders", 3),
            view: ViewTarget::Local(dir.local_data("orders").unwrap()),
        }];
        let policy = RemotePolicy::default();
        assert!(write(&dir, &entries, &[], &policy, None).unwrap());
        assert!(!wal_of(&dir.db()).exists());
        let now = read_file(&dir).unwrap();
        assert!(
            !write(&dir, &entries, &[], &policy, now.as_ref()).unwrap(),
            "unchanged"
        );

        let back = read_file(&dir).unwrap().unwrap();
        assert_eq!(back.meta.len(), 1);
        assert_eq!(back.meta[0].rows, Some(3));
        let n: i64 = {
            let c = Connection::open(dir.db()).unwrap();
            c.query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(n, 3);
        // The columns, in the contract's order.
        let c = Connection::open(dir.db()).unwrap();
        let cols: Vec<String> = c
            .prepare("SELECT column_name || ' ' || data_type FROM duckdb_columns() WHERE table_name = '_meta' ORDER BY column_index")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            cols,
            [
                "table_name VARCHAR",
                "description VARCHAR",
                "rows BIGINT",
                "size_bytes BIGINT",
                "extracted_at TIMESTAMP",
                "query_mode VARCHAR"
            ]
        );
    }

    #[test]
    fn unsafe_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(ExtractDir::new(tmp.path(), "../etc").is_none());
        let dir = ExtractDir::new(tmp.path(), "s").unwrap();
        let entries = vec![Entry {
            meta: meta("x\"; drop", 1),
            view: ViewTarget::Local(LocalData::File(dir.parquet("x"))),
        }];
        let e = write(&dir, &entries, &[], &RemotePolicy::default(), None).unwrap_err();
        assert!(e.to_string().contains("not a safe table name"), "{e}");
        assert!(!dir.db().exists());
    }
}

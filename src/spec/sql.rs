//! SQL checks done by DuckDB's own parser, without any data.
//!
//! `json_serialize_sql()` parses a statement and returns its syntax tree as JSON (or the parser's error
//! with a byte offset). That gives two things no hand-written check could get right: the exact syntax
//! DuckDB accepts, and what a query reads ([`Reads`]), from which transform dependencies, cycles and
//! the API's access checks are derived.
//!
//! Names are resolved per scope, as DuckDB 1.5.5's binder does (measured, see the tests): an
//! unqualified name is a CTE when a WITH clause *in scope* defines it, else a table. A WITH belongs to
//! one query node; its CTEs are visible in that node's own query and in everything nested in it
//! (subqueries in FROM, WHERE, the select list, ORDER BY…), and each CTE body sees only the CTEs
//! defined before it in the same WITH — never sibling, lateral or outer queries. So
//! `with customers as (select * from customers) select * from customers` reads the table `customers`.
//! A recursive CTE (a `RECURSIVE_CTE_NODE` body) sees itself in its recursive part only (also as
//! `recurring.<name>`); its anchor, like any non-recursive body, sees the table of that name.
//!
//! The walk fails closed: a node it does not recognise in a place that could hold a relation (an
//! unknown kind of query node or table reference, or a relation where none was expected) is reported
//! in [`Reads::uncertain`] instead of being skipped, and callers treat such a query as reading
//! something they cannot name.

use super::sql_cache::{digest, Digest, SqlCache};
use super::sql_json::{Json, Object};
use duckdb::Connection;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};

/// A table a query reads, as written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableRef {
    pub catalog: String,
    pub schema: String,
    pub name: String,
    /// Byte offset of the reference in the SQL, when DuckDB reports it.
    pub offset: Option<usize>,
}

impl TableRef {
    /// The name as written: `catalog.schema.name` without the empty parts.
    pub fn written(&self) -> String {
        [
            self.catalog.as_str(),
            self.schema.as_str(),
            self.name.as_str(),
        ]
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(".")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlError {
    pub message: String,
    /// Byte offset of the error in the SQL, when known.
    pub offset: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ParserUnavailable {
    #[error("could not start DuckDB to check SQL: {0}")]
    Open(#[from] duckdb::Error),
    #[error("could not start DuckDB to check SQL: its thread panicked")]
    Panicked,
}

pub(super) type Parsed = Result<Reads, SqlError>;

/// Everything a SELECT reads from or reveals, as far as the syntax tree tells.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reads {
    /// Tables and views it names, CTEs resolved away per scope; sorted by name, one entry per name
    /// (the first occurrence's offset).
    pub tables: Vec<TableRef>,
    /// Table functions it calls (lower-cased, e.g. `read_csv`, `range`), sorted.
    pub functions: Vec<String>,
    /// Scalar, aggregate and window functions and macros it calls (lower-cased), sorted.
    pub scalar_functions: Vec<String>,
    /// Catalogue-wide listings (`SHOW TABLES`, `SHOW ALL TABLES`, `SHOW DATABASES`…), sorted.
    pub listings: Vec<String>,
    /// Why what it reads cannot be resolved with certainty (parts of the tree the walk does not
    /// understand); empty when `tables` and `functions` are the whole story.
    pub uncertain: Vec<String>,
}

/// Table functions that read nothing but their arguments (which are checked like the rest of the
/// query). Every other table function may read files, the catalogue or hidden SQL (`query('…')`).
pub const PURE_TABLE_FUNCTIONS: &[&str] = &[
    "range",
    "generate_series",
    "unnest",
    "json_each",
    "json_tree",
];

/// Scalar functions and macros that reveal configuration or the catalogue rather than data, with
/// why. Table functions need no entry: only [`PURE_TABLE_FUNCTIONS`] are accepted anyway.
/// Harmless introspection stays allowed: `version()`, `current_database()` / `current_schema()`
/// (the fixed names `analytics` and `main`), `current_query()` (the caller's own SQL).
pub const INTROSPECTION_FUNCTIONS: &[(&str, &str)] = &[
    (
        "current_setting",
        "reveals settings such as allowed_paths (absolute paths of the data files)",
    ),
    (
        "getenv",
        "reveals environment variables (registered by DuckDB's shell; refused should a build have it)",
    ),
    (
        "pg_get_viewdef",
        "reveals any view's SQL (absolute Parquet paths, remote locations), through duckdb_views()",
    ),
    (
        "pg_get_constraintdef",
        "reveals any table's constraints, through duckdb_constraints()",
    ),
];

/// Why `name` (a scalar function) is refused to non-admins, if it is.
pub fn introspection(name: &str) -> Option<&'static str> {
    INTROSPECTION_FUNCTIONS
        .iter()
        .find(|(f, _)| f.eq_ignore_ascii_case(name))
        .map(|(_, why)| *why)
}

/// A DuckDB in-memory connection used only for parsing.
pub struct SqlParser {
    /// Opened at once by [`SqlParser::new`]; by [`SqlParser::with_cache`] only when a text is not in
    /// the cache (an in-memory DuckDB costs tens of milliseconds and megabytes to start).
    conn: std::cell::OnceCell<Connection>,
    /// Results parsed ahead by [`SqlParser::prefetch`], by the SHA-256 of the SQL text (an instance
    /// of 10,000 statements would otherwise keep a second copy of all its SQL). With a cache, results
    /// live in the cache instead.
    ahead: RefCell<HashMap<Digest, Parsed>>,
    /// Results of earlier runs, when the caller asked for them ([`SqlParser::with_cache`]).
    cache: Option<RefCell<SqlCache>>,
}

/// Below this many statements, parsing on one thread beats starting others.
const PARALLEL_FROM: usize = 16;

/// Statements serialized by one query. Each costs DuckDB a fixed overhead (planning, a result
/// chunk), which a batch shares; a batch's JSON (about 8 KiB per statement) is decoded and dropped
/// before the next, which bounds memory.
const BATCH: usize = 128;

fn open_parser_db() -> Result<Connection, ParserUnavailable> {
    let conn = Connection::open_in_memory()?;
    // Parsing runs no operator that DuckDB's worker threads could share, and the threads that parse
    // are ours ([`SqlParser::prefetch`]): DuckDB's own would only spin beside them.
    conn.execute_batch("SET threads = 1")?;
    Ok(conn)
}

impl SqlParser {
    pub fn new() -> Result<Self, ParserUnavailable> {
        let parser = SqlParser {
            conn: std::cell::OnceCell::new(),
            ahead: RefCell::new(HashMap::new()),
            cache: None,
        };
        parser.conn()?;
        Ok(parser)
    }

    /// A parser that answers from, and adds to, the SQL cache in `dir` (see [`SqlCache`]). A cache
    /// that cannot be read is ignored. DuckDB starts now only when the cache is empty; otherwise when
    /// a text is first missing from it.
    pub fn with_cache(dir: &std::path::Path) -> Result<Self, ParserUnavailable> {
        let cache = SqlCache::open(dir, &super::sql_cache::duckdb_version());
        let empty = cache.is_empty();
        let parser = SqlParser {
            conn: std::cell::OnceCell::new(),
            ahead: RefCell::new(HashMap::new()),
            cache: Some(RefCell::new(cache)),
        };
        if empty {
            parser.conn()?;
        }
        Ok(parser)
    }

    /// The parsing connection, opened on first use.
    fn conn(&self) -> Result<&Connection, ParserUnavailable> {
        if let Some(conn) = self.conn.get() {
            return Ok(conn);
        }
        let conn = open_parser_db()?;
        Ok(self.conn.get_or_init(|| conn))
    }

    /// Writes what this parser learnt to its cache, if it has one. Best effort: a cache that cannot
    /// be written only makes the next run slower.
    pub fn save_cache(&self) {
        if let Some(cache) = &self.cache {
            if let Err(e) = cache.borrow_mut().save() {
                tracing::debug!("SQL cache not saved: {e}");
            }
        }
    }

    /// A result parsed earlier (ahead or in a previous run).
    fn known(&self, key: &Digest) -> Option<Parsed> {
        if let Some(done) = self.ahead.borrow().get(key) {
            return Some(done.clone());
        }
        self.cache.as_ref().and_then(|c| c.borrow_mut().get(key))
    }

    fn remember(&self, key: Digest, result: Parsed, cacheable: bool) {
        match (&self.cache, cacheable) {
            (Some(cache), true) => cache.borrow_mut().put(key, result),
            _ => {
                self.ahead.borrow_mut().insert(key, result);
            }
        }
    }

    /// Parses `sqls` on all cores (one DuckDB connection per thread, many statements per query) so
    /// that the following [`parse_select`](Self::parse_select) calls, which callers make one by one
    /// in their own order, find the results ready. Parsing is most of the time `validate` spends on
    /// SQL-heavy instances. Fails only when DuckDB, needed for texts the cache does not hold, does
    /// not start.
    pub fn prefetch<'s>(
        &self,
        sqls: impl IntoIterator<Item = &'s str>,
    ) -> Result<(), ParserUnavailable> {
        let mut seen: HashSet<Digest> = HashSet::new();
        let mut todo: Vec<(Digest, &str)> = Vec::new();
        {
            let mut cache = self.cache.as_ref().map(RefCell::borrow_mut);
            let ahead = self.ahead.borrow();
            for sql in sqls {
                let key = digest(sql);
                if !seen.insert(key) || ahead.contains_key(&key) {
                    continue;
                }
                if !cache.as_mut().is_some_and(|c| c.touch(&key)) {
                    todo.push((key, sql));
                }
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        let conn = self.conn()?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let parsed: Vec<(Digest, Parsed, bool)> = if todo.len() < PARALLEL_FROM || threads < 2 {
            parse_many(conn, &todo)
        } else {
            let chunk = todo.len().div_ceil(threads);
            let conns: Vec<Connection> =
                (0..threads).map_while(|_| conn.try_clone().ok()).collect();
            std::thread::scope(|scope| {
                let workers: Vec<_> = conns
                    .into_iter()
                    .zip(todo.chunks(chunk))
                    .map(|(conn, part)| scope.spawn(move || parse_many(&conn, part)))
                    .collect();
                workers
                    .into_iter()
                    .filter_map(|w| w.join().ok())
                    .flatten()
                    .collect()
            })
        };
        for (key, result, cacheable) in parsed {
            self.remember(key, result, cacheable);
        }
        Ok(())
    }

    /// The DuckDB connection, for callers that need one after validation (starting another DuckDB
    /// instance costs tens of milliseconds); `None` when it was never needed and does not start now.
    pub fn into_connection(self) -> Option<Connection> {
        let conn = self.conn.into_inner()?;
        if let Err(e) = conn.execute_batch("RESET threads") {
            tracing::debug!("could not reset DuckDB's threads after parsing: {e}");
        }
        Some(conn)
    }

    /// Parses `sql`, which must be exactly one SELECT (or WITH … SELECT, DESCRIBE, SUMMARIZE, SHOW)
    /// statement, and returns what it reads.
    pub fn parse_select(&self, sql: &str) -> Result<Reads, SqlError> {
        let key = digest(sql);
        if let Some(done) = self.known(&key) {
            return done;
        }
        let conn = self.conn().map_err(|e| SqlError {
            message: e.to_string(),
            offset: None,
        })?;
        let (result, cacheable) = reads_with(conn, sql);
        self.remember(key, result.clone(), cacheable);
        result
    }
}

/// Parses `sqls` in batches on `conn`: each with whether the result may be cached (DuckDB answered;
/// a failure to run the query at all is not the statement's fault).
fn parse_many(conn: &Connection, sqls: &[(Digest, &str)]) -> Vec<(Digest, Parsed, bool)> {
    let mut out = Vec::with_capacity(sqls.len());
    for batch in sqls.chunks(BATCH) {
        let texts: Vec<&str> = batch.iter().map(|(_, sql)| *sql).collect();
        match serialize_batch(conn, &texts) {
            Some(trees) => {
                for ((key, _), tree) in batch.iter().zip(trees) {
                    out.push((*key, reads_of_text(&tree), true));
                }
            }
            // One statement at a time, so that a failure is attributed to its statement.
            None => {
                for (key, sql) in batch {
                    let (result, cacheable) = reads_with(conn, sql);
                    out.push((*key, result, cacheable));
                }
            }
        }
    }
    out
}

/// `json_serialize_sql` of every statement of `batch`, in one query; `None` when the query fails
/// (or a statement holds a NUL, which the batch's JSON list could not carry faithfully).
fn serialize_batch(conn: &Connection, batch: &[&str]) -> Option<Vec<String>> {
    if batch.iter().any(|s| s.contains('\0')) {
        return None;
    }
    let list = serde_json::to_string(batch).ok()?;
    // The index keeps the order: DuckDB does not promise to return the list's rows in list order.
    let mut stmt = conn
        .prepare_cached(
            "WITH batch AS (SELECT CAST(?::JSON AS VARCHAR[]) AS l) \
             SELECT i, json_serialize_sql(l[i]) FROM batch, range(1, len(l) + 1) r(i)",
        )
        .ok()?;
    let mut trees: Vec<Option<String>> = vec![None; batch.len()];
    let mut rows = stmt.query([list]).ok()?;
    while let Some(row) = rows.next().ok()? {
        let i: i64 = row.get(0).ok()?;
        let slot = trees.get_mut(usize::try_from(i - 1).ok()?)?;
        *slot = Some(row.get(1).ok()?);
    }
    trees.into_iter().collect()
}

/// Parses one statement on its own: the result, and whether it may be cached.
fn reads_with(conn: &Connection, sql: &str) -> (Parsed, bool) {
    let json: Result<String, _> = conn
        .prepare_cached("SELECT json_serialize_sql(?::VARCHAR)")
        .and_then(|mut stmt| stmt.query_row([sql], |row| row.get(0)));
    match json {
        Ok(json) => (reads_of_text(&json), true),
        Err(e) => (
            Err(SqlError {
                message: format!("DuckDB could not parse the statement: {e}"),
                offset: None,
            }),
            false,
        ),
    }
}

/// What the statement `json_serialize_sql` described as `json` reads, or its syntax error.
fn reads_of_text(json: &str) -> Parsed {
    let tree = Json::parse(json).map_err(|e| SqlError {
        message: format!("unexpected parser output: {e}"),
        offset: None,
    })?;
    if tree["error"].as_bool() == Some(true) {
        let message = tree["error_message"].as_str().unwrap_or("invalid SQL");
        let message = if tree["error_type"] == "not implemented" {
            "only a SELECT (or WITH … SELECT) statement is allowed here".to_string()
        } else {
            message.to_string()
        };
        let offset = tree["position"]
            .as_str()
            .and_then(|p| p.parse().ok())
            .or_else(|| tree["position"].as_u64().map(|p| p as usize));
        return Err(SqlError { message, offset });
    }
    let statements = tree["statements"].as_array().map_or(0, <[Json]>::len);
    if statements != 1 {
        return Err(SqlError {
            message: format!("expected exactly one SELECT statement, found {statements}"),
            offset: None,
        });
    }
    Ok(reads_of(&tree["statements"][0]))
}

/// What one serialized SELECT statement (`{"node": …}`) reads.
fn reads_of(statement: &Json) -> Reads {
    let mut walk = Walk::default();
    let top = Scope::default();
    match statement.get("node") {
        Some(node) => walk.node(node, &top),
        None => walk.unsure("a statement without a query".into()),
    }
    // Belt and braces: every relation in the tree must have been reached by the scoped walk.
    let mut missed = BTreeSet::new();
    relations_not_in(statement, &walk.handled, &mut missed);
    for kind in missed {
        walk.unsure(format!(
            "a {kind} in a position the access check does not understand"
        ));
    }
    let mut r = walk.reads;
    r.tables.sort_by(|a, b| {
        (&a.catalog, &a.schema, &a.name, a.offset).cmp(&(&b.catalog, &b.schema, &b.name, b.offset))
    });
    r.tables
        .dedup_by(|a, b| a.catalog == b.catalog && a.schema == b.schema && a.name == b.name);
    for list in [
        &mut r.functions,
        &mut r.scalar_functions,
        &mut r.listings,
        &mut r.uncertain,
    ] {
        list.sort();
        list.dedup();
        list.shrink_to_fit();
    }
    // Kept for every statement of the instance: no spare capacity.
    r.tables.shrink_to_fit();
    r
}

/// Query node kinds the walk understands (DuckDB's `QueryNodeType`, as serialized).
const QUERY_NODES: &[&str] = &["SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE"];

/// Every kind of query node or table reference DuckDB can serialize, known to the walk or not: one of
/// these anywhere but where the walk expects a relation means the tree has a shape it does not know.
const RELATION_KINDS: &[&str] = &[
    "SELECT_NODE",
    "SET_OPERATION_NODE",
    "RECURSIVE_CTE_NODE",
    "CTE_NODE",
    "BOUND_SUBQUERY_NODE",
    "STATEMENT_NODE",
    "INSERT_QUERY_NODE",
    "UPDATE_QUERY_NODE",
    "DELETE_QUERY_NODE",
    "MERGE_INTO_QUERY_NODE",
    "BASE_TABLE",
    "JOIN",
    "SUBQUERY",
    "TABLE_FUNCTION",
    "EMPTY",
    "EXPRESSION_LIST",
    "PIVOT",
    "SHOW_REF",
    "COLUMN_DATA",
    "DELIM_GET",
    "CTE",
    "BOUND_TABLE_REF",
];

/// The `type` tags that appear inside expressions without being relations: result modifiers
/// (ORDER BY, LIMIT, DISTINCT ON) and sort orders; type details (`…_TYPE_INFO`) are recognised by
/// their suffix. Any other tag there is a shape the walk does not know, and fails closed.
const EXPRESSION_PARTS: &[&str] = &[
    "ORDER_MODIFIER",
    "LIMIT_MODIFIER",
    "LIMIT_PERCENT_MODIFIER",
    "DISTINCT_MODIFIER",
    "ASCENDING",
    "DESCENDING",
    "ORDER_DEFAULT",
];

/// The CTE names visible at one level of nesting, and the levels around it.
#[derive(Default)]
struct Scope<'a> {
    /// Lower-cased (ASCII, as DuckDB compares names) CTE names defined at this level.
    ctes: Vec<String>,
    /// The recursive CTE whose recursive part this is: `recurring.<name>` means it too.
    recurring: Option<String>,
    parent: Option<&'a Scope<'a>>,
}

impl<'a> Scope<'a> {
    fn child(&'a self, ctes: Vec<String>, recurring: Option<String>) -> Scope<'a> {
        Scope {
            ctes,
            recurring,
            parent: Some(self),
        }
    }

    fn is_cte(&self, name: &str) -> bool {
        self.ctes.iter().any(|c| c == name) || self.parent.is_some_and(|p| p.is_cte(name))
    }

    fn is_recurring(&self, name: &str) -> bool {
        self.recurring.as_deref() == Some(name) || self.parent.is_some_and(|p| p.is_recurring(name))
    }
}

#[derive(Default)]
struct Walk {
    reads: Reads,
    /// Relations (query nodes and table references) the scoped walk reached, by address.
    handled: HashSet<usize>,
}

/// A node's identity while one tree is walked: its address.
fn address(v: &Json) -> usize {
    v as *const Json as usize
}

fn kind_of<'o>(o: &'o Object) -> Option<&'o str> {
    // Expressions carry a `class`; query nodes, table references and modifiers only a `type`.
    if o.contains_key("class") {
        return None;
    }
    o.get("type").and_then(Json::as_str)
}

/// Adds the kinds of relations under `v` that the walk did not reach to `missed`.
fn relations_not_in(v: &Json, handled: &HashSet<usize>, missed: &mut BTreeSet<String>) {
    match v {
        Json::Object(o) => {
            if let Some(kind) = kind_of(o) {
                if RELATION_KINDS.contains(&kind) && !handled.contains(&address(v)) {
                    missed.insert(kind.to_string());
                }
            }
            for child in o.values() {
                relations_not_in(child, handled, missed);
            }
        }
        Json::Array(items) => {
            for child in items {
                relations_not_in(child, handled, missed);
            }
        }
        _ => {}
    }
}

impl Walk {
    fn unsure(&mut self, why: String) {
        self.reads.uncertain.push(why);
    }

    /// A query node: its WITH, then its parts in the scope that WITH opens.
    fn node(&mut self, v: &Json, scope: &Scope) {
        let Some(o) = v.as_object() else {
            return self.unsure("a query that is not a syntax tree node".into());
        };
        let kind = o.get("type").and_then(Json::as_str).unwrap_or("");
        if !QUERY_NODES.contains(&kind) {
            return self.unsure(format!(
                "a query node of kind `{kind}`, which the access check does not know"
            ));
        }
        self.handled.insert(address(v));
        let ctes = self.with_clause(o.get("cte_map"), scope);
        let inner = scope.child(ctes, None);
        match kind {
            "SELECT_NODE" => {
                match o.get("from_table") {
                    Some(from) => self.relation(from, &inner),
                    None => self.unsure("a SELECT without a FROM part".into()),
                }
                self.rest(o, &["type", "cte_map", "from_table"], &inner);
            }
            "SET_OPERATION_NODE" => {
                for side in ["left", "right"] {
                    match o.get(side) {
                        Some(n) => self.node(n, &inner),
                        None => self.unsure(format!("a set operation without its {side} side")),
                    }
                }
                self.rest(o, &["type", "cte_map", "left", "right"], &inner);
            }
            _ => {
                // RECURSIVE_CTE_NODE: the anchor (left) sees what the CTE body sees; the recursive
                // part (right) sees the CTE itself too.
                let Some(name) = o.get("cte_name").and_then(Json::as_str) else {
                    return self.unsure("a recursive CTE without a name".into());
                };
                let name = name.to_ascii_lowercase();
                match o.get("left") {
                    Some(n) => self.node(n, &inner),
                    None => self.unsure("a recursive CTE without its anchor".into()),
                }
                let recursive = inner.child(vec![name.clone()], Some(name));
                match o.get("right") {
                    Some(n) => self.node(n, &recursive),
                    None => self.unsure("a recursive CTE without its recursive part".into()),
                }
                self.rest(o, &["type", "cte_map", "left", "right", "cte_name"], &inner);
            }
        }
    }

    /// Walks the bodies of a WITH clause (each sees the CTEs before it) and returns its names.
    fn with_clause(&mut self, cte_map: Option<&Json>, scope: &Scope) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let Some(cte_map) = cte_map.filter(|m| !m.is_null()) else {
            return names;
        };
        let Some(entries) = cte_map.get("map").and_then(Json::as_array) else {
            self.unsure("a WITH clause of unknown shape".into());
            return names;
        };
        for entry in entries {
            let Some(name) = entry.get("key").and_then(Json::as_str) else {
                self.unsure("a CTE without a name".into());
                continue;
            };
            let before = scope.child(names.clone(), None);
            let value = entry.get("value").and_then(Json::as_object);
            match value
                .and_then(|v| v.get("query"))
                .and_then(|q| q.get("node"))
            {
                Some(body) => self.node(body, &before),
                None => self.unsure(format!("CTE `{name}` has a body of unknown shape")),
            }
            if let Some(value) = value {
                self.rest(value, &["query"], &before);
            }
            names.push(name.to_ascii_lowercase());
        }
        names
    }

    /// A table reference (what FROM holds).
    fn relation(&mut self, v: &Json, scope: &Scope) {
        let Some(o) = v.as_object() else {
            return self.unsure("a FROM part that is not a syntax tree node".into());
        };
        let kind = o.get("type").and_then(Json::as_str).unwrap_or("");
        let structural: &[&str] = match kind {
            "BASE_TABLE" => {
                self.table(o, scope);
                &["type"]
            }
            "JOIN" => {
                for side in ["left", "right"] {
                    match o.get(side) {
                        Some(r) => self.relation(r, scope),
                        None => self.unsure(format!("a join without its {side} side")),
                    }
                }
                &["type", "left", "right"]
            }
            "SUBQUERY" => {
                let sub = o.get("subquery").and_then(Json::as_object);
                match sub.and_then(|s| s.get("node")) {
                    Some(n) => self.node(n, scope),
                    None => self.unsure("a subquery of unknown shape".into()),
                }
                if let Some(sub) = sub {
                    self.rest(sub, &["node"], scope);
                }
                &["type", "subquery"]
            }
            "TABLE_FUNCTION" => {
                let f = o.get("function").and_then(Json::as_object);
                match f
                    .and_then(|f| f.get("function_name"))
                    .and_then(Json::as_str)
                {
                    Some(name) => self.reads.functions.push(name.to_ascii_lowercase()),
                    None => self.unsure("a table function without a name".into()),
                }
                if let Some(f) = f {
                    // Its arguments are expressions (and may hold subqueries); the call itself is
                    // not a scalar function.
                    self.rest(f, &["class", "type", "function_name"], scope);
                }
                &["type", "function"]
            }
            "PIVOT" => {
                match o.get("source") {
                    Some(r) => self.relation(r, scope),
                    None => self.unsure("a PIVOT without a source".into()),
                }
                &["type", "source"]
            }
            "SHOW_REF" => {
                match o.get("query").filter(|q| !q.is_null()) {
                    // DESCRIBE / SUMMARIZE / SHOW of a relation or query: reads what that query reads.
                    Some(q) => self.node(q, scope),
                    None => self.listing(o),
                }
                &["type", "query"]
            }
            "EMPTY" | "EXPRESSION_LIST" | "COLUMN_DATA" => &["type"],
            other => {
                return self.unsure(format!(
                    "a relation of kind `{other}`, which the access check does not know"
                ));
            }
        };
        self.handled.insert(address(v));
        self.rest(o, structural, scope);
    }

    /// A named table, unless a CTE in scope has that name.
    fn table(&mut self, o: &Object, scope: &Scope) {
        let s = |k: &str| o.get(k).and_then(Json::as_str).unwrap_or("").to_string();
        let (catalog, schema, name) = (s("catalog_name"), s("schema_name"), s("table_name"));
        if name.is_empty() {
            return self.unsure("a table reference without a name".into());
        }
        let lower = name.to_ascii_lowercase();
        if catalog.is_empty() && schema.is_empty() && scope.is_cte(&lower) {
            return;
        }
        if catalog.is_empty()
            && schema.eq_ignore_ascii_case("recurring")
            && scope.is_recurring(&lower)
        {
            return;
        }
        self.reads.tables.push(TableRef {
            catalog,
            schema,
            name,
            offset: o
                .get("query_location")
                .and_then(Json::as_u64)
                .filter(|&at| at < u32::MAX as u64)
                .map(|at| at as usize),
        });
    }

    /// `SHOW TABLES`, `SHOW ALL TABLES`, `SHOW DATABASES`, `SHOW TABLES FROM s`…: the catalogue.
    fn listing(&mut self, o: &Object) {
        let s = |k: &str| o.get(k).and_then(Json::as_str).unwrap_or("");
        let what = match (s("show_type"), s("table_name")) {
            ("SHOW_FROM", _) => {
                let from = [s("catalog_name"), s("schema_name")]
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
                    .join(".");
                format!("SHOW TABLES FROM {from}")
            }
            ("SHOW_UNQUALIFIED", "__show_tables_expanded") => "SHOW ALL TABLES".to_string(),
            ("SHOW_UNQUALIFIED", name) => {
                format!("SHOW {}", name.trim_matches('"').to_ascii_uppercase())
            }
            (kind, _) => {
                return self.unsure(format!(
                    "a SHOW of kind `{kind}`, which the access check does not know"
                ))
            }
        };
        self.reads.listings.push(what);
    }

    /// The fields of `o` other than `skip`, as expressions.
    fn rest(&mut self, o: &Object, skip: &[&str], scope: &Scope) {
        for (key, v) in o.iter() {
            if !skip.contains(&key) {
                self.expr(v, scope);
            }
        }
    }

    /// An expression (or any part of a node that is not a relation): finds subqueries, which are
    /// walked in `scope`, and function calls.
    fn expr(&mut self, v: &Json, scope: &Scope) {
        match v {
            Json::Object(o) => {
                if let Some(kind) = kind_of(o) {
                    if !EXPRESSION_PARTS.contains(&kind) && !kind.ends_with("_TYPE_INFO") {
                        // A relation (or something new) where an expression was expected: its
                        // names would be resolved in the wrong scope, so it is not walked at all.
                        return self.unsure(format!(
                            "a {kind} inside an expression, which the access check does not understand"
                        ));
                    }
                }
                match o.get("class").and_then(Json::as_str) {
                    Some("SUBQUERY") => {
                        let sub = o.get("subquery").and_then(Json::as_object);
                        match sub.and_then(|s| s.get("node")) {
                            Some(n) => self.node(n, scope),
                            None => self.unsure("a subquery expression of unknown shape".into()),
                        }
                        if let Some(sub) = sub {
                            self.rest(sub, &["node"], scope);
                        }
                        return self.rest(o, &["subquery"], scope);
                    }
                    Some(_) => {
                        if let Some(f) = o.get("function_name").and_then(Json::as_str) {
                            self.reads.scalar_functions.push(f.to_ascii_lowercase());
                        }
                    }
                    None => {}
                }
                for child in o.values() {
                    self.expr(child, scope);
                }
            }
            Json::Array(items) => {
                for child in items {
                    self.expr(child, scope);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trees the tests alter are `serde_json` values; the walk reads them through the borrowed tree.
    type Json = serde_json::Value;

    fn reads_of(statement: &Json) -> Reads {
        let text = statement.to_string();
        super::reads_of(&super::Json::parse(&text).unwrap())
    }

    #[test]
    fn prefetched_results_equal_direct_parsing() {
        let parser = SqlParser::new().unwrap();
        let mut sqls: Vec<String> = (0..40)
            .map(|i| format!("with c as (select 1) select * from t{i} join c on true"))
            .collect();
        sqls.push("select * from".into());
        sqls.push("delete from t".into());
        let direct = SqlParser::new().unwrap();
        parser.prefetch(sqls.iter().map(String::as_str)).unwrap();
        assert!(
            parser.ahead.borrow().len() == sqls.len(),
            "prefetch parsed everything"
        );
        for sql in &sqls {
            assert_eq!(parser.parse_select(sql), direct.parse_select(sql), "{sql}");
            // Asking twice gives the same answer.
            assert_eq!(parser.parse_select(sql), direct.parse_select(sql), "{sql}");
        }
    }

    fn reads(sql: &str) -> Reads {
        SqlParser::new().unwrap().parse_select(sql).unwrap()
    }

    /// The tables `sql` reads, as written; the query must resolve with certainty.
    fn tables(sql: &str) -> Vec<String> {
        let r = reads(sql);
        assert!(r.uncertain.is_empty(), "{sql}: {:?}", r.uncertain);
        r.tables.iter().map(TableRef::written).collect()
    }

    #[test]
    fn finds_tables_but_not_ctes() {
        let r = reads(
            "with recent as (select * from orders where d > now() - interval 7 day) \
             select * from recent join shop.customers c using (customer_id) \
             where id in (select id from refunds)",
        );
        let names: Vec<String> = r.tables.iter().map(TableRef::written).collect();
        assert_eq!(names, ["orders", "refunds", "shop.customers"]);
        assert_eq!(r.tables[0].offset, Some(30));
        assert!(r.uncertain.is_empty());
    }

    #[test]
    fn a_cte_hides_a_table_only_in_its_own_scope() {
        // The bypass of issue 14: a CTE defined in one subquery does not hide the table in another.
        assert_eq!(
            tables("select * from (with x as (select 1) select * from x) s, x"),
            ["x"]
        );
        // Nor in a lateral subquery, a scalar subquery, or the other side of a set operation.
        assert_eq!(
            tables("select * from (with x as (select 1) select * from x) s, lateral (select * from x) l"),
            ["x"]
        );
        assert_eq!(
            tables("select (select count(*) from x) from (with x as (select 1) select * from x) s"),
            ["x"]
        );
        assert_eq!(
            tables("(with x as (select 1) select * from x) union all (select * from x)"),
            ["x"]
        );
        assert_eq!(
            tables("select * from x where 1 in (with x as (select 1) select * from x)"),
            ["x"]
        );
        // A WITH over a whole set operation covers both sides.
        assert!(
            tables("with x as (select 1) select * from x union all select * from x").is_empty()
        );
        // Inside its scope it hides the table everywhere: FROM, WHERE, scalar and ORDER BY subqueries.
        assert!(tables(
            "with x as (select 1 v) select (select v from x) from (select * from x) \
             where v in (select v from x) order by (select max(v) from x)"
        )
        .is_empty());
        // Qualified names never mean a CTE.
        assert_eq!(
            tables("with x as (select 1) select * from main.x, analytics.main.x"),
            ["main.x", "analytics.main.x"],
            "sorted by catalog, then schema, then name"
        );
        // Names compare without regard to ASCII case, as in DuckDB.
        assert!(tables("with X as (select 1) select * from \"x\"").is_empty());
    }

    #[test]
    fn cte_bodies_read_tables_and_see_only_earlier_ctes() {
        // A non-recursive CTE that names itself reads the table (DuckDB answers from the table).
        assert_eq!(
            tables(
                "with customers as (select * from customers where id > 1) select * from customers"
            ),
            ["customers"]
        );
        assert_eq!(
            tables("with recursive customers as (select * from customers) select * from customers"),
            ["customers"]
        );
        // Earlier CTEs are visible to later bodies, not the other way round.
        assert!(tables("with a as (select 1), b as (select * from a) select * from b").is_empty());
        assert_eq!(
            tables("with b as (select * from a), a as (select 1) select * from b"),
            ["a"]
        );
        // CTEs inside CTE bodies, and nested WITHs that see the outer one.
        assert_eq!(
            tables(
                "with o as (with i as (select * from orders) select * from i) \
                 select * from o, (with p as (select * from o) select * from p, refunds)"
            ),
            ["orders", "refunds"]
        );
        // An inner CTE shadows an outer one only inside its own node.
        assert_eq!(
            tables(
                "with x as (select 1) select * from (with y as (select * from x), x as (select 2) \
                 select * from y, x)"
            ),
            Vec::<String>::new()
        );
        // MATERIALIZED changes nothing about names.
        assert_eq!(
            tables("with t as materialized (select * from t) select * from t"),
            ["t"]
        );
    }

    #[test]
    fn recursive_ctes_see_themselves_in_their_recursive_part_only() {
        assert!(tables(
            "with recursive r(n) as (select 1 union all select n + 1 from r where n < 3) select * from r"
        )
        .is_empty());
        // The anchor reads the table of the same name.
        assert_eq!(
            tables(
                "with recursive r(n) as (select n from r union all select n + 1 from r where n < 3) \
                 select * from r"
            ),
            ["r"]
        );
        // USING KEY: `recurring.r` is the CTE's own working table in the recursive part.
        assert!(tables(
            "with recursive r(n) using key (n) as (select 1 union select n + 1 from recurring.r \
             where n < 3) select * from r"
        )
        .is_empty());
        assert_eq!(
            tables("with recursive r(n) as (select 1 union all select n from r) select * from recurring.r"),
            ["recurring.r"]
        );
    }

    #[test]
    fn joins_functions_pivots_and_values_are_walked() {
        let r = reads(
            "select * from a join b on a.x = (select 1 from c) left join d using (y) \
             positional join range((select count(*) from e)) \
             where exists (select 1 from f) and a.x = any (select 1 from g) \
             and a.y in (values (1), ((select 2 from h)))",
        );
        let names: Vec<String> = r.tables.iter().map(TableRef::written).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e", "f", "g", "h"]);
        assert_eq!(r.functions, ["range"]);
        assert_eq!(
            tables("select * from p pivot (sum(v) for k in (1, 2))"),
            ["p"]
        );
        assert_eq!(tables("unpivot p on a, b into name k value v"), ["p"]);
        assert_eq!(
            tables("select list_transform([1], x -> (select x from l)), count(*) filter (where 1 = (select 1 from m)) from n"),
            ["l", "m", "n"]
        );
        let r =
            reads("select current_setting('allowed_paths'), upper(version()) from read_csv('x')");
        assert_eq!(r.functions, ["read_csv"]);
        assert_eq!(r.scalar_functions, ["current_setting", "upper", "version"]);
    }

    #[test]
    fn describe_summarize_and_show_read_their_relation_and_listings_are_named() {
        for sql in [
            "DESCRIBE orders",
            "SHOW orders",
            "SUMMARIZE orders",
            "SUMMARIZE TABLE orders",
            "DESCRIBE SELECT * FROM orders",
            "SELECT * FROM (DESCRIBE orders)",
        ] {
            let r = reads(sql);
            assert_eq!(r.tables.len(), 1, "{sql}: {r:?}");
            assert_eq!(r.tables[0].name, "orders", "{sql}");
            assert!(
                r.listings.is_empty() && r.uncertain.is_empty(),
                "{sql}: {r:?}"
            );
        }
        for (sql, listing) in [
            ("SHOW TABLES", "SHOW TABLES"),
            ("SHOW ALL TABLES", "SHOW ALL TABLES"),
            ("DESCRIBE", "SHOW ALL TABLES"),
            ("SHOW DATABASES", "SHOW DATABASES"),
            (
                "SHOW TABLES FROM analytics.main",
                "SHOW TABLES FROM analytics.main",
            ),
            ("SELECT * FROM (SHOW TABLES)", "SHOW TABLES"),
        ] {
            let r = reads(sql);
            assert_eq!(r.listings, [listing], "{sql}: {r:?}");
            assert!(
                r.tables.is_empty() && r.uncertain.is_empty(),
                "{sql}: {r:?}"
            );
        }
    }

    #[test]
    fn everyday_sql_resolves_with_certainty() {
        // No false alarms: the shapes DuckDB 1.5.5 emits for ordinary queries are all understood.
        for sql in [
            "select * from a asof join b on a.t >= b.t semi join c on true anti join d on true",
            "select * from a natural join b, (from c), (from d select x)",
            "select * from t using sample 10%",
            "select * from t tablesample 10 rows",
            "select sum(x) over (partition by y order by z rows between 1 preceding and current row) from t",
            "select a, b, sum(c) from t group by grouping sets ((a), (b))",
            "select a, sum(c) from t group by rollup (a) having sum(c) > (select 1)",
            "select * from t qualify row_number() over () = 1",
            "select row_number() over w from t window w as (order by x)",
            "select {'type': 'BASE_TABLE', 'table_name': 'secret'} as s",
            "select 100.0 * 2, 1.5::decimal(10, 2), x::struct(a int), x::int[3], x::enum('a', 'b') from t",
            "select x::map(varchar, int), x::union(a int, b varchar), x::timestamptz, x::json from t",
            "select interval 1 day, timestamp '2024-01-01', {'a': 1}, [1, 2], map {'a': 1} from t",
            "select * from t limit 10%",
            "select * replace (x + 1 as x) from t, t2 group by all order by all",
            "select x from t where x > all (select y from u) and not exists (from v)",
            "select lag(x, 1, 0) over (order by y), first_value(x ignore nulls) over () from t",
            "select * exclude (a) from t",
            "select columns((select 'a')) from t",
            "select * from t where x = $1",
            "select * from t at (version => 1)",
            "select distinct on (a) a from t order by a desc nulls last limit 1 offset 1",
            "select * from t1 union by name select * from t2 intersect all select * from t3",
            "select case when (select 1) = 1 then 2 end, cast((select 1) as int), (select 1)::varchar",
            "select [x for x in [1, 2] if x > (select 1)], struct_pack(a := (select 1))",
            "select first(x order by (select 1)) from t",
            "select * from t order by all",
            "select * from unnest([1, 2]) with ordinality",
            "select * from read_csv('x') as r(a, b)",
            "with x as not materialized (select 1) select * from x",
        ] {
            let r = reads(sql);
            assert!(r.uncertain.is_empty(), "{sql}: {:?}", r.uncertain);
        }
    }

    #[test]
    fn shapes_the_walk_does_not_know_are_uncertain() {
        // Real trees, altered the way a future DuckDB might change them: each must fail closed.
        let parser = SqlParser::new().unwrap();
        let tree = |sql: &str| -> Json {
            let text: String = parser
                .conn()
                .unwrap()
                .query_row("SELECT json_serialize_sql(?::VARCHAR)", [sql], |r| r.get(0))
                .unwrap();
            serde_json::from_str::<Json>(&text).unwrap()["statements"][0].clone()
        };
        // An unknown kind of table reference in FROM.
        let mut t = tree("select * from orders");
        t["node"]["from_table"]["type"] = "NEW_KIND_OF_REF".into();
        assert!(!reads_of(&t).uncertain.is_empty());
        // An unknown kind of query node as a CTE body.
        let mut t = tree("with c as (select 1) select * from c");
        t["node"]["cte_map"]["map"][0]["value"]["query"]["node"]["type"] = "NEW_NODE".into();
        assert!(!reads_of(&t).uncertain.is_empty());
        // A relation in a place no relation was before (here: inside a function's arguments).
        let mut t = tree("select upper('x') from t");
        t["node"]["select_list"][0]["children"][0] = tree("select 1 from secret")["node"].clone();
        let r = reads_of(&t);
        assert!(!r.uncertain.is_empty(), "{r:?}");
        // A subquery whose wrapper changed shape.
        let mut t = tree("select (select 1 from secret)");
        let sub = t["node"]["select_list"][0]["subquery"].take();
        t["node"]["select_list"][0]["query"] = sub;
        assert!(!reads_of(&t).uncertain.is_empty());
        // A SHOW of a kind not seen before.
        let mut t = tree("SHOW TABLES");
        t["node"]["from_table"]["show_type"] = "SHOW_SOMETHING".into();
        assert!(!reads_of(&t).uncertain.is_empty());
        // Unaltered trees are certain.
        assert!(reads_of(&tree("select (select 1 from secret)"))
            .uncertain
            .is_empty());
    }

    #[test]
    fn syntax_errors_carry_an_offset() {
        let p = SqlParser::new().unwrap();
        let e = p.parse_select("select a from from orders").unwrap_err();
        assert!(e.message.contains("syntax error"), "{}", e.message);
        assert_eq!(e.offset, Some(14));
    }

    #[test]
    fn only_one_select_is_accepted() {
        let p = SqlParser::new().unwrap();
        assert!(p.parse_select("delete from orders").is_err());
        assert!(p.parse_select("select 1; select 2").is_err());
        assert!(p.parse_select("select 1;").is_ok());
    }
}

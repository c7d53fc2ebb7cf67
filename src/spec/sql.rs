//! SQL checks done by DuckDB's own parser, without any data.
//!
//! `json_serialize_sql()` parses a statement and returns its syntax tree as JSON (or the parser's error
//! with a byte offset). That gives two things no hand-written check could get right: the exact syntax
//! DuckDB accepts, and the tables a query reads (its `BASE_TABLE` references minus its CTE names), from
//! which transform dependencies and cycles are derived.

use duckdb::Connection;
use serde_json::Value as Json;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

/// A table a query reads, as written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableRef {
    pub catalog: String,
    pub schema: String,
    pub name: String,
    /// Byte offset of the reference in the SQL, when DuckDB reports it.
    pub offset: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
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

type Parsed = Result<Vec<TableRef>, SqlError>;

/// Everything a SELECT reads from: tables (as [`SqlParser::parse_select`] returns them) and the table
/// functions it calls (lower-cased, e.g. `read_csv`, `range`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    pub tables: Vec<TableRef>,
    pub functions: Vec<String>,
}

/// A DuckDB in-memory connection used only for parsing.
pub struct SqlParser {
    conn: Connection,
    /// Results parsed ahead by [`SqlParser::prefetch`], by SQL text.
    ahead: RefCell<HashMap<String, Parsed>>,
}

/// Below this many statements, parsing on one thread beats starting others.
const PARALLEL_FROM: usize = 16;

impl SqlParser {
    pub fn new() -> Result<Self, ParserUnavailable> {
        Ok(SqlParser {
            conn: Connection::open_in_memory()?,
            ahead: RefCell::new(HashMap::new()),
        })
    }

    /// Parses `sqls` on all cores (one DuckDB connection per thread) so that the following
    /// [`parse_select`](Self::parse_select) calls, which callers make one by one in their own order,
    /// find the results ready. Parsing is most of the time `validate` spends on SQL-heavy instances.
    pub fn prefetch(&self, sqls: impl IntoIterator<Item = String>) {
        let mut todo: Vec<String> = sqls.into_iter().collect();
        todo.sort_unstable();
        todo.dedup();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        if todo.len() < PARALLEL_FROM || threads < 2 {
            return;
        }
        let chunk = todo.len().div_ceil(threads);
        let conns: Vec<Connection> = (0..threads)
            .map_while(|_| self.conn.try_clone().ok())
            .collect();
        let parsed: Vec<(String, Parsed)> = std::thread::scope(|scope| {
            let workers: Vec<_> = conns
                .into_iter()
                .zip(todo.chunks(chunk))
                .map(|(conn, part)| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|sql| (sql.clone(), parse_with(&conn, sql)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .filter_map(|w| w.join().ok())
                .flatten()
                .collect()
        });
        self.ahead.borrow_mut().extend(parsed);
    }

    /// The DuckDB connection, for callers that need one after validation (starting another DuckDB
    /// instance costs tens of milliseconds).
    pub fn into_connection(self) -> Connection {
        self.conn
    }

    /// Parses `sql`, which must be exactly one SELECT (or WITH … SELECT) statement, and returns the
    /// tables it reads (sorted, without duplicates or CTE names).
    pub fn parse_select(&self, sql: &str) -> Result<Vec<TableRef>, SqlError> {
        if let Some(done) = self.ahead.borrow().get(sql) {
            return done.clone();
        }
        parse_with(&self.conn, sql)
    }

    /// Like [`parse_select`](Self::parse_select), with the table functions the query calls too.
    pub fn parse_reads(&self, sql: &str) -> Result<Reads, SqlError> {
        reads_with(&self.conn, sql)
    }
}

/// Parses one statement on `conn` (see [`SqlParser::parse_select`]).
fn parse_with(conn: &Connection, sql: &str) -> Parsed {
    reads_with(conn, sql).map(|r| r.tables)
}

fn reads_with(conn: &Connection, sql: &str) -> Result<Reads, SqlError> {
    let json: String = conn
        .prepare_cached("SELECT json_serialize_sql(?::VARCHAR)")
        .and_then(|mut stmt| stmt.query_row([sql], |row| row.get(0)))
        .map_err(|e| SqlError {
            message: format!("DuckDB could not parse the statement: {e}"),
            offset: None,
        })?;
    let tree: Json = serde_json::from_str(&json).map_err(|e| SqlError {
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
    let statements = tree["statements"].as_array().map_or(0, Vec::len);
    if statements != 1 {
        return Err(SqlError {
            message: format!("expected exactly one SELECT statement, found {statements}"),
            offset: None,
        });
    }
    let mut refs = Vec::new();
    let mut ctes = BTreeSet::new();
    let mut functions = Vec::new();
    collect(&tree["statements"], &mut refs, &mut ctes, &mut functions);
    refs.retain(|r: &TableRef| {
        !(r.catalog.is_empty() && r.schema.is_empty() && ctes.contains(&r.name.to_lowercase()))
    });
    refs.sort_by(|a, b| (&a.catalog, &a.schema, &a.name).cmp(&(&b.catalog, &b.schema, &b.name)));
    refs.dedup_by(|a, b| a.catalog == b.catalog && a.schema == b.schema && a.name == b.name);
    functions.sort();
    functions.dedup();
    Ok(Reads {
        tables: refs,
        functions,
    })
}

fn collect(
    v: &Json,
    refs: &mut Vec<TableRef>,
    ctes: &mut BTreeSet<String>,
    functions: &mut Vec<String>,
) {
    match v {
        Json::Object(map) => {
            if map.get("type").and_then(Json::as_str) == Some("TABLE_FUNCTION") {
                if let Some(name) = map
                    .get("function")
                    .and_then(|f| f.get("function_name"))
                    .and_then(Json::as_str)
                {
                    functions.push(name.to_lowercase());
                }
            }
            if map.get("type").and_then(Json::as_str) == Some("BASE_TABLE") {
                let s = |k: &str| map.get(k).and_then(Json::as_str).unwrap_or("").to_string();
                refs.push(TableRef {
                    catalog: s("catalog_name"),
                    schema: s("schema_name"),
                    name: s("table_name"),
                    offset: map
                        .get("query_location")
                        .and_then(Json::as_u64)
                        .filter(|&o| o < u32::MAX as u64)
                        .map(|o| o as usize),
                });
            }
            if let Some(entries) = map
                .get("cte_map")
                .and_then(|c| c.get("map"))
                .and_then(Json::as_array)
            {
                for e in entries {
                    if let Some(name) = e.get("key").and_then(Json::as_str) {
                        ctes.insert(name.to_lowercase());
                    }
                }
            }
            for child in map.values() {
                collect(child, refs, ctes, functions);
            }
        }
        Json::Array(items) => {
            for child in items {
                collect(child, refs, ctes, functions);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetched_results_equal_direct_parsing() {
        let parser = SqlParser::new().unwrap();
        let mut sqls: Vec<String> = (0..40)
            .map(|i| format!("with c as (select 1) select * from t{i} join c on true"))
            .collect();
        sqls.push("select * from".into());
        sqls.push("delete from t".into());
        let direct = SqlParser::new().unwrap();
        parser.prefetch(sqls.clone());
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

    fn names(refs: &[TableRef]) -> Vec<String> {
        refs.iter()
            .map(|r| {
                [r.catalog.as_str(), r.schema.as_str(), r.name.as_str()]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(".")
            })
            .collect()
    }

    #[test]
    fn finds_tables_but_not_ctes() {
        let p = SqlParser::new().unwrap();
        let refs = p
            .parse_select(
                "with recent as (select * from orders where d > now() - interval 7 day) \
                 select * from recent join shop.customers c using (customer_id) \
                 where id in (select id from refunds)",
            )
            .unwrap();
        assert_eq!(names(&refs), ["orders", "refunds", "shop.customers"]);
        assert_eq!(refs[0].offset, Some(30));
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

//! Table profiles (DESIGN.md §8, the `profile(table)` step of a run; docs/profile.md): what a
//! table's published data looks like — its row count and, per column, nulls, an approximate count
//! of distinct values, min and max, the most frequent values of low-cardinality columns, and a
//! small random sample of rows.
//!
//! A profile reads the published view in analytics.duckdb (the connection comes from the caller,
//! normally [`crate::analytics::open_live_local`]), in at most three scans whatever the width of
//! the table: one aggregate pass (every column's counts, distincts, min and max in one `SELECT`),
//! one pass of `histogram`s for the top values of every low-cardinality column at once (only when
//! there are such columns), and a reservoir sample. Values are rendered with [`crate::value_json`], the
//! rendering `query` and the API use, and bounded in size so a profile of a table of long texts
//! stays small. [`data_stamp`] says which data a profile was made from, so a run profiles only
//! the tables whose data changed. Nothing here opens the state.

use crate::extract_db::{ExtractDir, LocalData};
use crate::quote;
use crate::registry::registered::TableDef;
use crate::spec::model::QueryMode;
use crate::value_json;
use crate::value_text::{self, ColumnType, Zone};
use duckdb::types::Value;
use duckdb::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::path::Path;

/// How many of the most frequent values a column's profile lists.
pub const TOP_VALUES: usize = 5;
/// Columns with at most this many distinct values (approximately) get their top values.
pub const TOP_MAX_DISTINCT: i64 = 50;
/// Rows in a profile's sample.
pub const SAMPLE_ROWS: usize = 5;
/// Longest text kept in a profile value, in characters; longer ones end with `…`.
const TEXT_CHARS: usize = 80;
/// A nested value (list, struct, map) longer than this as JSON is kept as its shortened text.
const NESTED_BYTES: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("`{0}` is not a safe view name")]
    Name(String),
    #[error("{0}")]
    Db(String),
}

impl From<duckdb::Error> for ProfileError {
    fn from(e: duckdb::Error) -> Self {
        // The first line says it; DuckDB's later lines repeat the query.
        ProfileError::Db(e.to_string().lines().next().unwrap_or_default().to_string())
    }
}

/// A table's profile, as the state stores it and `pipeline profile` and the API show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableProfile {
    pub rows: i64,
    pub columns: Vec<ColumnProfile>,
    /// Up to [`SAMPLE_ROWS`] rows picked at random (a reservoir sample), values in column order.
    #[serde(default)]
    pub sample: Vec<Vec<Json>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    pub name: String,
    /// DuckDB's name of the type (`DECIMAL(10,2)`, `VARCHAR[]`).
    #[serde(rename = "type")]
    pub data_type: String,
    pub nulls: i64,
    /// Distinct non-null values, approximately (HyperLogLog, a few percent off on big columns);
    /// absent for types that cannot be counted so (nested ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct: Option<i64>,
    /// Smallest and largest non-null value, for types with an order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Json>,
    /// The most frequent non-null values with their counts, most frequent first, for columns with
    /// at most [`TOP_MAX_DISTINCT`] distinct values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<TopValue>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopValue {
    pub value: Json,
    pub count: i64,
}

/// What a column's type allows.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Traits {
    /// min / max make sense (the type has a natural order).
    ordered: bool,
    /// approx_count_distinct and GROUP BY are cheap and meaningful.
    countable: bool,
}

/// By DuckDB's type name (`DESCRIBE`): scalar types are counted, those with an order also get
/// min / max. Nested types (lists, structs, maps, unions) get only their null count.
fn traits(ty: &str) -> Traits {
    let t = ty.to_ascii_uppercase();
    let nested = t.ends_with(']')
        || ["STRUCT", "MAP", "UNION"]
            .iter()
            .any(|p| t.starts_with(&format!("{p}(")));
    if nested {
        return Traits {
            ordered: false,
            countable: false,
        };
    }
    let unordered = ["BLOB", "BIT", "JSON", "GEOMETRY", "VARIANT"];
    Traits {
        ordered: !unordered.iter().any(|u| t == *u),
        countable: true,
    }
}

/// Profiles the view `view` on `conn` (whose default catalog holds it).
pub fn profile_view(conn: &Connection, view: &str) -> Result<TableProfile, ProfileError> {
    let rel = quote::ident(view).ok_or_else(|| ProfileError::Name(view.to_string()))?;
    let described: Vec<(String, String)> = {
        let mut stmt = conn.prepare(&format!("DESCRIBE {rel}"))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    profile_columns(conn, view, &described, Zone::of(conn))
}

/// Every view's columns (name, DuckDB type) in the default catalog's `main` schema, by lower-case
/// view name, in one catalogue query: what [`profile_columns`] needs, for many views at once.
pub fn view_columns(
    conn: &Connection,
) -> Result<std::collections::BTreeMap<String, Vec<(String, String)>>, ProfileError> {
    let mut stmt = conn.prepare(
        "SELECT lower(table_name), column_name, data_type FROM information_schema.columns
         WHERE table_catalog = current_database() AND table_schema = 'main'
         ORDER BY table_name, ordinal_position",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    for row in rows {
        let (view, column, ty) = row?;
        out.entry(view).or_default().push((column, ty));
    }
    Ok(out)
}

/// [`profile_view`] with the view's columns (name, DuckDB type, in order) known, values rendered
/// in the session time zone `zone`.
pub fn profile_columns(
    conn: &Connection,
    view: &str,
    described: &[(String, String)],
    zone: Zone,
) -> Result<TableProfile, ProfileError> {
    let rel = quote::ident(view).ok_or_else(|| ProfileError::Name(view.to_string()))?;
    let cols: Vec<(String, String, Traits)> = described
        .iter()
        .map(|(name, ty)| (name.clone(), ty.clone(), traits(ty)))
        .collect();

    // Pass 1: every column's counts and bounds in one aggregate. Columns without a part get
    // NULL, so every column has the same four positions.
    let mut select = vec!["count(*)".to_string()];
    for (name, _, t) in &cols {
        let c = quote::column(name);
        select.push(format!("count({c})"));
        select.push(if t.countable {
            format!("approx_count_distinct({c})")
        } else {
            "NULL".into()
        });
        if t.ordered {
            select.push(format!("min({c})"));
            select.push(format!("max({c})"));
        } else {
            select.push("NULL".into());
            select.push("NULL".into());
        }
    }
    let (types, rows) = query(conn, &format!("SELECT {} FROM {rel}", select.join(", ")))?;
    let first = rows.into_iter().next().unwrap_or_default();
    let int = |i: usize| -> Option<i64> {
        match first.get(i)? {
            Value::BigInt(n) => Some(*n),
            Value::UBigInt(n) => i64::try_from(*n).ok(),
            Value::Int(n) => Some(i64::from(*n)),
            Value::HugeInt(n) => i64::try_from(*n).ok(),
            _ => None,
        }
    };
    let rows_total = int(0).unwrap_or(0);
    let mut columns: Vec<ColumnProfile> = cols
        .iter()
        .enumerate()
        .map(|(i, (name, ty, t))| {
            let at = 1 + 4 * i;
            let non_null = int(at).unwrap_or(0);
            let value = |j: usize| {
                first
                    .get(j)
                    .filter(|v| !matches!(v, Value::Null))
                    .map(|v| render(v, &types[j], zone))
            };
            ColumnProfile {
                name: name.clone(),
                data_type: ty.clone(),
                nulls: rows_total - non_null,
                // HyperLogLog may count a few more than there are rows; never show that.
                distinct: t.countable.then(|| int(at + 1).unwrap_or(0).min(non_null)),
                min: value(at + 2),
                max: value(at + 3),
                top: Vec::new(),
            }
        })
        .collect();

    // Pass 2: the top values of every low-cardinality column, in one scan: a histogram each
    // (nulls left out), small since the columns have few distinct values.
    let low: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.distinct.is_some_and(|d| d > 0 && d <= TOP_MAX_DISTINCT))
        .map(|(i, _)| i)
        .collect();
    if !low.is_empty() {
        let select: Vec<String> = low
            .iter()
            .map(|&i| format!("histogram({})", quote::column(&cols[i].0)))
            .collect();
        let (types, rows) = query(conn, &format!("SELECT {} FROM {rel}", select.join(", ")))?;
        let row = rows.into_iter().next().unwrap_or_default();
        for (j, v) in row.iter().enumerate() {
            let (Value::Map(m), Some(ColumnType::Map(key, _))) = (v, types.get(j)) else {
                continue;
            };
            let mut g: Vec<(Json, String, i64)> = m
                .keys()
                .zip(m.values())
                .filter(|(k, _)| !matches!(k, Value::Null))
                .map(|(k, n)| {
                    let count = match n {
                        Value::UBigInt(n) => i64::try_from(*n).unwrap_or(i64::MAX),
                        Value::BigInt(n) => *n,
                        _ => 0,
                    };
                    let order = value_text::text(k, key, zone).unwrap_or_default();
                    (render(k, key, zone), order, count)
                })
                .collect();
            // Most frequent first; equal counts by the value's text, so the list is stable.
            g.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.1.cmp(&b.1)));
            columns[low[j]].top = g
                .into_iter()
                .take(TOP_VALUES)
                .map(|(value, _, count)| TopValue { value, count })
                .collect();
        }
    }

    // Pass 3: a few rows at random. Reservoir sampling reads every row once and keeps an even
    // chance for each; the fixed seed makes the sample of a small table repeatable. A table with
    // no more rows than that is its own sample. (TABLESAMPLE samples as the rows are read, which
    // measured about half the cost of USING SAMPLE on small tables.)
    let sample = if rows_total > 0 && !cols.is_empty() {
        let sql = if rows_total <= SAMPLE_ROWS as i64 {
            format!("SELECT * FROM {rel}")
        } else {
            format!("SELECT * FROM {rel} TABLESAMPLE reservoir({SAMPLE_ROWS} ROWS) REPEATABLE (7)")
        };
        let (types, rows) = query(conn, &sql)?;
        rows.iter()
            .map(|r| {
                r.iter()
                    .zip(&types)
                    .map(|(v, t)| render(v, t, zone))
                    .collect()
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(TableProfile {
        rows: rows_total,
        columns,
        sample,
    })
}

/// Runs `sql`; the result's column types and its rows. A value duckdb-rs cannot convert is NULL
/// (a profile is a summary; one odd type must not fail it).
fn query(conn: &Connection, sql: &str) -> Result<(Vec<ColumnType>, Vec<Vec<Value>>), ProfileError> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    let types: Vec<ColumnType> = match rows.as_ref() {
        Some(s) => (0..s.column_count())
            .map(|i| ColumnType::of(&s.column_logical_type(i)))
            .collect(),
        None => Vec::new(),
    };
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(
            (0..types.len())
                .map(|i| row.get::<_, Value>(i).unwrap_or(Value::Null))
                .collect(),
        );
    }
    Ok((types, out))
}

/// A value as JSON, bounded: long texts end with `…`; a long nested value becomes its shortened
/// text.
fn render(v: &Value, ty: &ColumnType, zone: Zone) -> Json {
    match value_json::typed(v, ty, zone) {
        Json::String(s) => Json::String(shorten(&s)),
        j @ (Json::Array(_) | Json::Object(_)) => {
            let text = j.to_string();
            if text.len() <= NESTED_BYTES {
                j
            } else {
                Json::String(shorten(&text))
            }
        }
        j => j,
    }
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(TEXT_CHARS) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// Which data a table's view reads now, to tell whether it changed since its last profile: the
/// path, size and modification time of its Parquet file(s), or of its source's extract.duckdb when
/// the rows live inside it. `None` for remote tables (never profiled: their rows stay at the
/// source) and tables with no data yet.
pub fn data_stamp(extracts: &Path, t: &TableDef) -> Option<String> {
    if t.query_mode() == QueryMode::Remote {
        return None;
    }
    let dir = ExtractDir::new(extracts, &t.source)?;
    let mut parts = Vec::new();
    match dir.local_data(&t.name) {
        Some(LocalData::File(f)) => parts.push(crate::connectors::file_stamp(&f).ok()?),
        Some(LocalData::Partitions(d)) => {
            let mut files: Vec<_> = std::fs::read_dir(&d)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
                .collect();
            files.sort();
            for f in files {
                parts.push(crate::connectors::file_stamp(&f).ok()?);
            }
        }
        None => parts.push(crate::connectors::file_stamp(&dir.db()).ok()?),
    }
    Some(crate::connectors::fingerprint_of(&parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every type family, with nulls, a low-cardinality column and long text.
    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "SET TimeZone = 'UTC';
             CREATE TABLE t AS SELECT * FROM (VALUES
               (1, 1.5::DOUBLE, 2.50::DECIMAL(10,2), 'north', DATE '2024-01-02',
                TIMESTAMP '2024-01-02 03:04:05', TIMESTAMPTZ '2024-01-02 03:04:05+00', true,
                '\\xFF'::BLOB, [1, 2], {'a': 1}, INTERVAL 2 DAY, repeat('x', 200), 'p'::VARCHAR),
               (2, NULL, 3.75, 'north', DATE '2024-03-04', NULL, NULL, false, NULL, [], NULL,
                NULL, 'short', 'p'),
               (3, -0.5, NULL, 'south', NULL, TIMESTAMP '2023-12-31 23:59:59',
                TIMESTAMPTZ '2025-06-01 00:00:00+00', true, NULL, NULL, {'a': 2}, INTERVAL 1 HOUR,
                NULL, NULL)
             ) v(id, score, price, region, day, ts, at_tz, flag, raw, list, rec, span, note, p);
             CREATE VIEW orders AS SELECT * FROM t;
             CREATE VIEW empty AS SELECT * FROM t WHERE false;",
        )
        .unwrap();
        conn
    }

    fn col<'a>(p: &'a TableProfile, name: &str) -> &'a ColumnProfile {
        p.columns.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn profiles_every_type_family_in_json_as_query_renders_it() {
        let conn = table();
        let p = profile_view(&conn, "orders").unwrap();
        assert_eq!(p.rows, 3);
        assert_eq!(p.columns.len(), 14);
        let id = col(&p, "id");
        assert_eq!((id.nulls, id.distinct), (0, Some(3)));
        assert_eq!((&id.min, &id.max), (&Some(json!(1)), &Some(json!(3))));
        assert_eq!(id.data_type, "INTEGER");
        let score = col(&p, "score");
        assert_eq!((score.nulls, score.min.clone()), (1, Some(json!(-0.5))));
        // DECIMAL keeps its exact value; TIMESTAMP WITH TIME ZONE its offset; DATE and INTERVAL
        // are DuckDB's text — the rendering of `query --format json` and the API.
        let price = col(&p, "price");
        assert_eq!(price.data_type, "DECIMAL(10,2)");
        assert_eq!(
            (&price.min, &price.max),
            (&Some(json!(2.5)), &Some(json!(3.75)))
        );
        assert_eq!(col(&p, "day").max, Some(json!("2024-03-04")));
        assert_eq!(col(&p, "ts").min, Some(json!("2023-12-31T23:59:59")));
        assert_eq!(
            col(&p, "at_tz").max,
            Some(json!("2025-06-01T00:00:00+00:00"))
        );
        assert_eq!(col(&p, "span").max, Some(json!("2 days")));
        assert_eq!(
            (col(&p, "flag").min.clone(), col(&p, "flag").max.clone()),
            (Some(json!(false)), Some(json!(true)))
        );
        // Types without an order get counts only; nested ones not even distincts.
        let raw = col(&p, "raw");
        assert_eq!(
            (raw.nulls, raw.min.clone(), raw.distinct),
            (2, None, Some(1))
        );
        let list = col(&p, "list");
        assert_eq!(
            (list.nulls, list.distinct, list.min.clone()),
            (1, None, None)
        );
        assert_eq!(col(&p, "rec").data_type, "STRUCT(a INTEGER)");
        // Long text is cut.
        let note = col(&p, "note").max.clone().unwrap();
        let s = note.as_str().unwrap();
        assert_eq!(s.chars().count(), TEXT_CHARS + 1);
        assert!(s.ends_with('…'), "{s}");
        // Top values: most frequent first, counts, nulls left out.
        assert_eq!(
            col(&p, "region").top,
            vec![
                TopValue {
                    value: json!("north"),
                    count: 2
                },
                TopValue {
                    value: json!("south"),
                    count: 1
                }
            ]
        );
        assert_eq!(
            col(&p, "p").top,
            vec![TopValue {
                value: json!("p"),
                count: 2
            }]
        );
        assert!(col(&p, "list").top.is_empty());
        // The sample: every row of a small table, in column order, bounded like the rest.
        assert_eq!(p.sample.len(), 3);
        assert!(p.sample.iter().all(|r| r.len() == 14));
        let ids: std::collections::BTreeSet<i64> =
            p.sample.iter().map(|r| r[0].as_i64().unwrap()).collect();
        assert_eq!(ids, [1, 2, 3].into());
        // It survives the trip through the state's JSON.
        let back: TableProfile = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn an_empty_table_has_columns_and_no_values() {
        let conn = table();
        let p = profile_view(&conn, "empty").unwrap();
        assert_eq!(p.rows, 0);
        assert!(p.sample.is_empty());
        let id = col(&p, "id");
        assert_eq!((id.nulls, id.distinct, id.min.clone()), (0, Some(0), None));
        assert!(id.top.is_empty());
    }

    #[test]
    fn odd_column_names_are_quoted_and_big_tables_sample_a_few_rows() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE VIEW wide AS SELECT i AS \"Order Id\", i % 3 AS \"a\"\"b\" FROM range(1000) r(i)",
        )
        .unwrap();
        let p = profile_view(&conn, "wide").unwrap();
        assert_eq!(p.rows, 1000);
        assert_eq!(col(&p, "Order Id").max, Some(json!(999)));
        assert_eq!(col(&p, "a\"b").top.len(), 3);
        assert!(
            col(&p, "Order Id").top.is_empty(),
            "high cardinality: no top"
        );
        assert_eq!(p.sample.len(), SAMPLE_ROWS);
        // The same (small, one-thread) data gives the same sample, also with the columns read
        // for every view at once, as a run does.
        assert_eq!(profile_view(&conn, "wide").unwrap(), p);
        let columns = view_columns(&conn).unwrap();
        assert_eq!(
            columns["wide"],
            [
                ("Order Id".to_string(), "BIGINT".to_string()),
                ("a\"b".to_string(), "BIGINT".to_string())
            ]
        );
        assert_eq!(
            profile_columns(&conn, "wide", &columns["wide"], Zone::default()).unwrap(),
            p
        );
    }

    #[test]
    fn unknown_or_unsafe_views_are_errors() {
        let conn = table();
        assert!(matches!(
            profile_view(&conn, "x\"; drop table t; --"),
            Err(ProfileError::Name(_))
        ));
        let e = profile_view(&conn, "nope").unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }
}

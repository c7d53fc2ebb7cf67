//! BigQuery rows to something DuckDB reads: the type mapping, the `f`/`v` row encoding decoded into
//! newline-delimited JSON on disk, page by page, and the `read_json` relation over those files.
//!
//! The REST API sends every value as a string (or null) inside `{"f": [{"v": …}, …]}` rows:
//! REPEATED values as a list of `{"v": …}`, RECORD values as a nested `{"f": […]}`. Each page is
//! decoded into one JSON object per row (keys = column names, records as objects, repeated values as
//! arrays) and appended to a file, so memory holds one page at most whatever the table's size. DuckDB
//! then reads the files with the column types stated explicitly ([`duck_type`]), never sniffed.
//!
//! Types, explicitly:
//!
//! | BigQuery | DuckDB | on the wire |
//! |---|---|---|
//! | INT64 (INTEGER) | BIGINT | decimal string |
//! | FLOAT64 (FLOAT) | DOUBLE | decimal string, `NaN`, `Infinity`, `-Infinity` |
//! | NUMERIC | DECIMAL(38,9) (NUMERIC(P,S): DECIMAL(P,S)) | decimal string |
//! | BIGNUMERIC | VARCHAR, exact (BIGNUMERIC(P,S) with P ≤ 38: DECIMAL(P,S)) | decimal string |
//! | BOOL (BOOLEAN) | BOOLEAN | `true` / `false` |
//! | STRING | VARCHAR | |
//! | BYTES | BLOB | base64 (decoded by `from_base64`) |
//! | DATE / TIME | DATE / TIME | ISO |
//! | DATETIME | TIMESTAMP | ISO, `T` separator |
//! | TIMESTAMP | TIMESTAMPTZ | int64 microseconds (`useInt64Timestamp`), or float seconds |
//! | JSON | JSON | the JSON text |
//! | GEOGRAPHY | VARCHAR | WKT |
//! | INTERVAL, RANGE, others | VARCHAR | BigQuery's text |
//! | RECORD (STRUCT) | STRUCT(…) | nested `f` |
//! | mode REPEATED | LIST (`T[]`) | list of `v` |
//!
//! DuckDB's DECIMAL stops at 38 digits and BIGNUMERIC has up to 76: rather than round it through a
//! DOUBLE, an unparameterized BIGNUMERIC stays exact as text (cast it in SQL where the values fit).

use super::client::{BigqueryError, Field, Page, Schema};
use crate::quote;
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The DuckDB type of a column.
pub fn duck_type(f: &Field) -> String {
    let base = element_type(f);
    if f.repeated() {
        format!("{base}[]")
    } else {
        base
    }
}

/// The type of one value of the column (its element type when REPEATED).
fn element_type(f: &Field) -> String {
    if let Some((p, s)) = decimal(f) {
        return format!("DECIMAL({p},{s})");
    }
    match f.kind.to_ascii_uppercase().as_str() {
        "INT64" | "INTEGER" => "BIGINT".into(),
        "FLOAT64" | "FLOAT" => "DOUBLE".into(),
        // A BIGNUMERIC wider than DuckDB's DECIMAL (see the module documentation).
        "BIGNUMERIC" | "BIGDECIMAL" => "VARCHAR".into(),
        "BOOL" | "BOOLEAN" => "BOOLEAN".into(),
        "BYTES" => "BLOB".into(),
        "DATE" => "DATE".into(),
        "DATETIME" => "TIMESTAMP".into(),
        "TIME" => "TIME".into(),
        "TIMESTAMP" => "TIMESTAMPTZ".into(),
        "JSON" => "JSON".into(),
        "RECORD" | "STRUCT" => {
            let members: Vec<String> = f
                .fields
                .iter()
                .map(|m| format!("{} {}", type_ident(&m.name), duck_type(m)))
                .collect();
            format!("STRUCT({})", members.join(", "))
        }
        // STRING, GEOGRAPHY (WKT), INTERVAL, RANGE and anything newer: text, as BigQuery sends it.
        _ => "VARCHAR".into(),
    }
}

/// The DECIMAL(precision, scale) of a NUMERIC or BIGNUMERIC column, when DuckDB can hold it:
/// NUMERIC is (38, 9), a parameterized one its own (P ≤ 38, S ≤ 36).
fn decimal(f: &Field) -> Option<(u32, u32)> {
    let numeric = match f.kind.to_ascii_uppercase().as_str() {
        "NUMERIC" | "DECIMAL" => true,
        "BIGNUMERIC" | "BIGDECIMAL" => false,
        _ => return None,
    };
    let p = f.precision.as_deref().and_then(|p| p.parse::<u32>().ok());
    let s = f
        .scale
        .as_deref()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(0);
    match p {
        Some(p) if (1..=38).contains(&p) && s <= p && s <= 36 => Some((p, s)),
        None if numeric => Some((38, 9)),
        _ => None,
    }
}

/// A DECIMAL wider than 18 digits: read as its unscaled integer (HUGEINT) and scaled in SQL.
/// DuckDB 1.5.5 parses text into a DECIMAL wider than 18 digits about a hundred times slower than
/// into HUGEINT (74 s against 0.7 s for 1.5 million values, measured), so the text never takes
/// that path.
fn wide_decimal(f: &Field) -> Option<(u32, u32)> {
    decimal(f).filter(|(p, _)| *p > 18)
}

/// The type `read_json` reads a column as: the DuckDB type, except that BYTES arrive as base64 text
/// and are decoded in the select, and wide DECIMALs arrive unscaled ([`convert`]).
fn json_type(f: &Field) -> String {
    let base = match f.kind.to_ascii_uppercase().as_str() {
        _ if wide_decimal(f).is_some() => "HUGEINT".into(),
        "BYTES" => "VARCHAR".into(),
        "RECORD" | "STRUCT" => {
            let members: Vec<String> = f
                .fields
                .iter()
                .map(|m| format!("{} {}", type_ident(&m.name), json_type(m)))
                .collect();
            format!("STRUCT({})", members.join(", "))
        }
        _ => element_type(f),
    };
    if f.repeated() {
        format!("{base}[]")
    } else {
        base
    }
}

/// A name inside a type (`STRUCT("a b" INT)`): double-quoted, quotes doubled.
fn type_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether the column, at any depth, is read as another type than it is: BYTES (base64 text) and
/// wide DECIMALs (unscaled HUGEINT).
fn needs_conversion(f: &Field) -> bool {
    f.kind.eq_ignore_ascii_case("BYTES")
        || wide_decimal(f).is_some()
        || f.fields.iter().any(needs_conversion)
}

/// The SQL turning `value` (of the JSON-read type) into the DuckDB type, when they differ.
fn convert(f: &Field, value: &str, depth: usize) -> String {
    if !needs_conversion(f) {
        return value.to_string();
    }
    if f.repeated() {
        let element = Field {
            mode: None,
            ..f.clone()
        };
        let var = format!("x{depth}");
        return format!(
            "list_transform({value}, lambda {var}: {})",
            convert(&element, &var, depth + 1)
        );
    }
    if f.kind.eq_ignore_ascii_case("BYTES") {
        return format!("from_base64({value})");
    }
    if let Some((p, scale)) = wide_decimal(f) {
        if scale == 0 {
            return format!("CAST({value} AS DECIMAL({p},0))");
        }
        // unscaled × 10^-scale, exact: DECIMAL(38,0) × DECIMAL(scale+1,scale) is DECIMAL(38,scale).
        let unit = format!("0.{}1", "0".repeat(scale as usize - 1));
        return format!(
            "CAST(CAST({value} AS DECIMAL(38,0)) * CAST('{unit}' AS DECIMAL({},{scale})) AS DECIMAL({p},{scale}))",
            scale + 1
        );
    }
    let members: Vec<String> = f
        .fields
        .iter()
        .map(|m| {
            let member = format!("{value}[{}]", quote::literal(&m.name));
            format!(
                "{} := {}",
                type_ident(&m.name),
                convert(m, &member, depth + 1)
            )
        })
        .collect();
    format!(
        "CASE WHEN {value} IS NULL THEN NULL ELSE struct_pack({}) END",
        members.join(", ")
    )
}

/// The relation over the decoded files: `read_json` with every column's type, and the BYTES
/// columns decoded.
pub fn relation(schema: &Schema, files: &[PathBuf]) -> String {
    let list = files
        .iter()
        .map(|f| quote::path(f))
        .collect::<Vec<_>>()
        .join(", ");
    let columns = schema
        .fields
        .iter()
        .map(|f| {
            format!(
                "{}: {}",
                quote::literal(&f.name),
                quote::literal(&json_type(f))
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    // DuckDB's default largest row (16 MB of JSON) is kept: raising it to BigQuery's 100 MB row
    // limit took peak memory from 285 MB to 681 MB on a 300 MB file (measured), for rows that are
    // rare; a larger row fails the extract with DuckDB's message.
    let read =
        format!("read_json([{list}], columns = {{{columns}}}, format = 'newline_delimited')");
    if !schema.fields.iter().any(needs_conversion) {
        return read;
    }
    let select = schema
        .fields
        .iter()
        .map(|f| {
            let column = type_ident(&f.name);
            format!("{} AS {column}", convert(f, &column, 0))
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("(SELECT {select} FROM {read})")
}

/// Appends decoded pages to a newline-delimited JSON file.
pub struct RowWriter {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    pub rows: u64,
}

impl RowWriter {
    pub fn create(path: &Path) -> Result<RowWriter, BigqueryError> {
        let file = std::fs::File::create(path).map_err(|e| io_error(path, e))?;
        Ok(RowWriter {
            path: path.to_path_buf(),
            out: std::io::BufWriter::with_capacity(1 << 20, file),
            rows: 0,
        })
    }

    /// Decodes `page` against `schema` and appends its rows.
    pub fn write_page(&mut self, schema: &Schema, page: &Page) -> Result<(), BigqueryError> {
        for row in &page.rows {
            let object =
                decode_row(&schema.fields, row).map_err(|message| BigqueryError::Protocol {
                    what: "a row".into(),
                    message,
                })?;
            serde_json::to_writer(&mut self.out, &object)
                .map_err(|e| io_error(&self.path, e.into()))?;
            self.out
                .write_all(b"\n")
                .map_err(|e| io_error(&self.path, e))?;
            self.rows += 1;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<PathBuf, BigqueryError> {
        self.out.flush().map_err(|e| io_error(&self.path, e))?;
        Ok(self.path)
    }
}

fn io_error(path: &Path, e: std::io::Error) -> BigqueryError {
    BigqueryError::Protocol {
        what: format!("writing {}", path.display()),
        message: e.to_string(),
    }
}

/// One `{"f": [...]}` row as a JSON object keyed by column name.
pub fn decode_row(fields: &[Field], row: &Value) -> Result<Value, String> {
    let cells = row["f"]
        .as_array()
        .ok_or_else(|| "a row without `f`".to_string())?;
    if cells.len() != fields.len() {
        return Err(format!(
            "a row has {} values for {} columns",
            cells.len(),
            fields.len()
        ));
    }
    let mut object = Map::with_capacity(fields.len());
    for (field, cell) in fields.iter().zip(cells) {
        object.insert(field.name.clone(), decode_value(field, &cell["v"])?);
    }
    Ok(Value::Object(object))
}

fn decode_value(f: &Field, v: &Value) -> Result<Value, String> {
    if v.is_null() {
        // BigQuery has no NULL arrays: a REPEATED column without values is empty.
        return Ok(if f.repeated() {
            Value::Array(Vec::new())
        } else {
            Value::Null
        });
    }
    if f.repeated() {
        let element = Field {
            mode: None,
            ..f.clone()
        };
        let items = v
            .as_array()
            .ok_or_else(|| format!("`{}`: a REPEATED value that is not a list", f.name))?;
        return items
            .iter()
            .map(|item| decode_value(&element, &item["v"]))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    match f.kind.to_ascii_uppercase().as_str() {
        "RECORD" | "STRUCT" => decode_row(&f.fields, v).map_err(|e| format!("`{}`: {e}", f.name)),
        "TIMESTAMP" => {
            let text = v
                .as_str()
                .ok_or_else(|| format!("`{}`: a TIMESTAMP that is not a string", f.name))?;
            timestamp(text)
                .map(Value::String)
                .ok_or_else(|| format!("`{}`: `{text}` is not a timestamp", f.name))
        }
        _ if wide_decimal(f).is_some() => {
            let scale = wide_decimal(f).map_or(0, |(_, s)| s);
            let text = v.as_str().unwrap_or_default();
            unscaled(text, scale)
                .map(Value::String)
                .ok_or_else(|| format!("`{}`: `{text}` is not a decimal of scale {scale}", f.name))
        }
        "JSON" => match v.as_str() {
            // The JSON text becomes the JSON value itself; text that does not parse stays a string.
            Some(text) => Ok(serde_json::from_str(text).unwrap_or_else(|_| v.clone())),
            None => Ok(v.clone()),
        },
        _ => Ok(match v {
            Value::String(_) => v.clone(),
            // Values are strings on the wire; anything else is kept as its JSON text.
            other => Value::String(other.to_string()),
        }),
    }
}

/// A decimal's text as its unscaled integer at `scale` (`-1.5` at scale 9: `-1500000000`); `None`
/// when it is not a plain decimal or has more (non-zero) fractional digits than `scale`.
pub fn unscaled(text: &str, scale: u32) -> Option<String> {
    let (negative, digits) = match text.trim().strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.trim().strip_prefix('+').unwrap_or(text.trim())),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac = frac.trim_end_matches('0');
    let plain = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty())
        || !plain(int)
        || !plain(frac)
        || frac.len() > scale as usize
    {
        return None;
    }
    let mut out = format!("{int}{frac:0<width$}", width = scale as usize);
    let trimmed = out.trim_start_matches('0');
    out = if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.to_string()
    };
    if negative && out != "0" {
        out.insert(0, '-');
    }
    Some(out)
}

/// A TIMESTAMP value as DuckDB reads a TIMESTAMPTZ: `YYYY-MM-DD HH:MM:SS.ffffff+00`. BigQuery sends
/// int64 microseconds since the epoch when asked (`useInt64Timestamp`), else seconds as a decimal or
/// in scientific notation (`1.709201472123456E9`); both are converted exactly, without a float.
pub fn timestamp(text: &str) -> Option<String> {
    let micros = if text.contains(['.', 'e', 'E']) {
        seconds_to_micros(text)?
    } else {
        text.parse::<i64>().ok()?
    };
    let t = chrono::DateTime::from_timestamp_micros(micros)?;
    Some(t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
}

/// `[-]digits[.digits][E[-]exp]` seconds → microseconds, truncated below a microsecond.
fn seconds_to_micros(text: &str) -> Option<i64> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = format!("{int}{frac}");
    if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 30 {
        return None;
    }
    let mut value: i128 = digits.parse().ok()?;
    // value × 10^(exponent − frac digits) seconds = value × 10^(exponent − frac digits + 6) µs.
    let shift = exponent - frac.len() as i32 + 6;
    if shift >= 0 {
        value = value.checked_mul(10i128.checked_pow(shift as u32)?)?;
    } else {
        value /= 10i128.checked_pow((-shift) as u32).unwrap_or(i128::MAX);
    }
    let value = if negative { -value } else { value };
    i64::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> Schema {
        serde_json::from_value(json!({ "fields": v })).expect("a schema")
    }

    #[test]
    fn timestamps_convert_exactly_from_micros_and_from_float_seconds() {
        let expected = "2024-02-29 10:11:12.123456+00";
        assert_eq!(timestamp("1709201472123456").as_deref(), Some(expected));
        assert_eq!(timestamp("1.709201472123456E9").as_deref(), Some(expected));
        assert_eq!(timestamp("1709201472.123456").as_deref(), Some(expected));
        assert_eq!(
            timestamp("1.7092014721234569E9").as_deref(),
            Some(expected),
            "below a microsecond is cut"
        );
        assert_eq!(
            timestamp("0").as_deref(),
            Some("1970-01-01 00:00:00.000000+00")
        );
        assert_eq!(
            timestamp("-1.0E0").as_deref(),
            Some("1969-12-31 23:59:59.000000+00")
        );
        assert_eq!(
            timestamp("-62135596800000000").as_deref(),
            Some("0001-01-01 00:00:00.000000+00")
        );
        assert_eq!(timestamp("1.5E"), None);
        assert_eq!(timestamp("soon"), None);
    }

    #[test]
    fn wide_decimals_travel_as_their_unscaled_integers() {
        assert_eq!(
            unscaled("123.456789012", 9).as_deref(),
            Some("123456789012")
        );
        assert_eq!(unscaled("10.5", 9).as_deref(), Some("10500000000"));
        assert_eq!(unscaled("-0.5", 9).as_deref(), Some("-500000000"));
        assert_eq!(unscaled("0", 9).as_deref(), Some("0"));
        assert_eq!(unscaled("-0.000", 2).as_deref(), Some("0"));
        assert_eq!(unscaled("7", 0).as_deref(), Some("7"));
        assert_eq!(unscaled("1.250000000000", 9).as_deref(), Some("1250000000"));
        assert_eq!(
            unscaled("99999999999999999999999999999.999999999", 9).as_deref(),
            Some("99999999999999999999999999999999999999")
        );
        assert_eq!(
            unscaled("1.0000000001", 9),
            None,
            "more decimals than the scale"
        );
        assert_eq!(unscaled("1e5", 9), None);
        assert_eq!(unscaled(".", 9), None);
        assert_eq!(unscaled("", 9), None);
    }

    #[test]
    fn every_bigquery_type_has_an_explicit_duckdb_type() {
        let s = schema(json!([
            {"name": "i", "type": "INTEGER"}, {"name": "i2", "type": "INT64"},
            {"name": "f", "type": "FLOAT"}, {"name": "n", "type": "NUMERIC"},
            {"name": "n2", "type": "NUMERIC", "precision": "10", "scale": "2"},
            {"name": "bn", "type": "BIGNUMERIC"},
            {"name": "bn2", "type": "BIGNUMERIC", "precision": "20", "scale": "4"},
            {"name": "b", "type": "BOOLEAN"}, {"name": "s", "type": "STRING"},
            {"name": "by", "type": "BYTES"}, {"name": "d", "type": "DATE"},
            {"name": "dt", "type": "DATETIME"}, {"name": "t", "type": "TIME"},
            {"name": "ts", "type": "TIMESTAMP"}, {"name": "j", "type": "JSON"},
            {"name": "g", "type": "GEOGRAPHY"}, {"name": "iv", "type": "INTERVAL"},
            {"name": "a", "type": "INT64", "mode": "REPEATED"},
            {"name": "r", "type": "RECORD", "fields": [
                {"name": "x", "type": "STRING"},
                {"name": "odd \"name\"", "type": "FLOAT", "mode": "REPEATED"}]},
        ]));
        let types: Vec<String> = s.fields.iter().map(duck_type).collect();
        assert_eq!(
            types,
            [
                "BIGINT",
                "BIGINT",
                "DOUBLE",
                "DECIMAL(38,9)",
                "DECIMAL(10,2)",
                "VARCHAR",
                "DECIMAL(20,4)",
                "BOOLEAN",
                "VARCHAR",
                "BLOB",
                "DATE",
                "TIMESTAMP",
                "TIME",
                "TIMESTAMPTZ",
                "JSON",
                "VARCHAR",
                "VARCHAR",
                "BIGINT[]",
                "STRUCT(\"x\" VARCHAR, \"odd \"\"name\"\"\" DOUBLE[])",
            ]
        );
    }

    #[test]
    fn rows_decode_nested_records_repeated_values_json_and_timestamps() {
        let s = schema(json!([
            {"name": "id", "type": "INTEGER"},
            {"name": "ts", "type": "TIMESTAMP"},
            {"name": "j", "type": "JSON"},
            {"name": "tags", "type": "STRING", "mode": "REPEATED"},
            {"name": "r", "type": "RECORD", "fields": [
                {"name": "x", "type": "STRING"},
                {"name": "when", "type": "TIMESTAMP", "mode": "REPEATED"}]},
            {"name": "rs", "type": "RECORD", "mode": "REPEATED", "fields": [
                {"name": "k", "type": "STRING"}]},
        ]));
        let row = json!({"f": [
            {"v": "7"}, {"v": "1.709201472123456E9"}, {"v": "{\"a\":[1,2]}"},
            {"v": [{"v": "x"}, {"v": "y"}]},
            {"v": {"f": [{"v": "a"}, {"v": [{"v": "0"}]}]}},
            {"v": [{"v": {"f": [{"v": "k1"}]}}, {"v": {"f": [{"v": null}]}}]},
        ]});
        assert_eq!(
            decode_row(&s.fields, &row).unwrap(),
            json!({"id": "7", "ts": "2024-02-29 10:11:12.123456+00", "j": {"a": [1, 2]},
                   "tags": ["x", "y"],
                   "r": {"x": "a", "when": ["1970-01-01 00:00:00.000000+00"]},
                   "rs": [{"k": "k1"}, {"k": null}]})
        );
        let empty = json!({"f": [{"v": "8"}, {"v": null}, {"v": null}, {"v": null}, {"v": null}, {"v": []}]});
        assert_eq!(
            decode_row(&s.fields, &empty).unwrap(),
            json!({"id": "8", "ts": null, "j": null, "tags": [], "r": null, "rs": []})
        );
        let short = json!({"f": [{"v": "9"}]});
        assert!(decode_row(&s.fields, &short)
            .unwrap_err()
            .contains("1 values for 6 columns"));
    }

    #[test]
    fn decoded_pages_read_back_in_duckdb_with_their_types_and_bytes_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let s = schema(json!([
            {"name": "id", "type": "INTEGER"},
            {"name": "n", "type": "NUMERIC"},
            {"name": "big", "type": "BIGNUMERIC"},
            {"name": "by", "type": "BYTES"},
            {"name": "ts", "type": "TIMESTAMP"},
            {"name": "dt", "type": "DATETIME"},
            {"name": "iv", "type": "INTERVAL"},
            {"name": "r", "type": "RECORD", "mode": "REPEATED", "fields": [
                {"name": "blob", "type": "BYTES"}, {"name": "f", "type": "FLOAT"},
                {"name": "amt", "type": "NUMERIC"}]},
            {"name": "n2", "type": "NUMERIC", "precision": "20", "scale": "4"},
            {"name": "n3", "type": "NUMERIC", "precision": "12", "scale": "2"},
        ]));
        let page: Page = serde_json::from_value(json!({"rows": [
            {"f": [{"v": "1"}, {"v": "123.456789012"},
                   {"v": "12345678901234567890123456789012345678901.5"},
                   {"v": "AAEC/w=="}, {"v": "1709201472123456"}, {"v": "2024-02-29T10:11:12.5"},
                   {"v": "0-0 5 0:0:0"},
                   {"v": [{"v": {"f": [{"v": "YWI="}, {"v": "NaN"}, {"v": "-1.5"}]}}]},
                   {"v": "-1234567890123456.7891"}, {"v": "10.25"}]},
            {"f": [{"v": "2"}, {"v": "-99999999999999999999999999999.999999999"}, {"v": null},
                   {"v": null}, {"v": null}, {"v": null}, {"v": null}, {"v": []}, {"v": null},
                   {"v": null}]},
        ]}))
        .unwrap();
        let mut w = RowWriter::create(&dir.path().join("rows.ndjson")).unwrap();
        w.write_page(&s, &page).unwrap();
        assert_eq!(w.rows, 2);
        let file = w.finish().unwrap();
        let conn = duckdb::Connection::open_in_memory().unwrap();
        conn.execute_batch("SET TimeZone = 'UTC'").unwrap();
        let rel = relation(&s, &[file]);
        let types: Vec<String> = conn
            .prepare(&format!(
                "SELECT column_type FROM (DESCRIBE SELECT * FROM {rel})"
            ))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            types,
            [
                "BIGINT",
                "DECIMAL(38,9)",
                "VARCHAR",
                "BLOB",
                "TIMESTAMP WITH TIME ZONE",
                "TIMESTAMP",
                "VARCHAR",
                "STRUCT(blob BLOB, f DOUBLE, amt DECIMAL(38,9))[]",
                "DECIMAL(20,4)",
                "DECIMAL(12,2)",
            ]
        );
        let shown: String = conn
            .query_row(
                &format!(
                    "SELECT concat_ws('|', n, big, hex(\"by\"), ts, dt, iv, \
                     hex(r[1].blob), isnan(r[1].f), r[1].amt, n2, n3) FROM {rel} WHERE id = 1"
                ),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            shown,
            "123.456789012|12345678901234567890123456789012345678901.5|000102FF|\
             2024-02-29 10:11:12.123456+00|2024-02-29 10:11:12.5|0-0 5 0:0:0|6162|true|\
             -1.500000000|-1234567890123456.7891|10.25"
        );
        let empty: (Option<String>, i64, String) = conn
            .query_row(
                &format!(
                    "SELECT CAST(\"by\" AS VARCHAR), len(r), CAST(n AS VARCHAR) FROM {rel} WHERE id = 2"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            empty,
            (None, 0, "-99999999999999999999999999999.999999999".into())
        );
    }
}

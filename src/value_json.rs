//! DuckDB values as JSON, for `pipeline query --format json|ndjson`, `metrics run` and the HTTP
//! API. Built on [`crate::value_text`]'s rules, so JSON and text never disagree:
//!
//! - integers are JSON numbers (HUGEINT / UHUGEINT beyond 64 bits are strings of their digits);
//!   FLOAT and DOUBLE are numbers, except NaN and infinities, which are the strings `nan`, `inf`,
//!   `-inf`;
//! - DECIMAL is a JSON number written with its exact digits and scale (`1.50`) by [`write`], which
//!   `query` and `metrics run` use; [`typed`] (a `serde_json::Value`, for the API) can only hold the
//!   nearest binary float, so beyond 15 significant digits it rounds;
//! - TIMESTAMP WITH TIME ZONE is RFC 3339 with the offset of the session time zone
//!   (`2024-01-02T04:04:05+01:00`); a plain TIMESTAMP has no zone and is ISO 8601 without one
//!   (`2024-01-02T03:04:05`); DATE, TIME, INTERVAL, UUID, BLOB and ENUM are DuckDB's text;
//! - LIST and ARRAY are arrays, STRUCT an object, MAP an object keyed by the keys' text, UNION its
//!   member's value.

use crate::value_text::{self, ColumnType, Zone};
use duckdb::types::Value;
use serde_json::Value as Json;

/// `v` as JSON when its column type is not known (plain timestamps, no zone).
pub fn json(v: &Value) -> Json {
    typed(v, &ColumnType::Other("OTHER"), Zone::default())
}

/// `v` as JSON, for a value of column type `ty` read in session time zone `zone`.
pub fn typed(v: &Value, ty: &ColumnType, zone: Zone) -> Json {
    let child = |t: &ColumnType| -> ColumnType {
        match t {
            ColumnType::List(e) | ColumnType::Array(e) => (**e).clone(),
            _ => ColumnType::Other("OTHER"),
        }
    };
    let text =
        |v: &Value, t: &ColumnType| value_text::text(v, t, zone).map_or(Json::Null, Json::from);
    match v {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::TinyInt(i) => Json::from(*i),
        Value::SmallInt(i) => Json::from(*i),
        Value::Int(i) => Json::from(*i),
        Value::BigInt(i) => Json::from(*i),
        Value::UTinyInt(i) => Json::from(*i),
        Value::USmallInt(i) => Json::from(*i),
        Value::UInt(i) => Json::from(*i),
        Value::UBigInt(i) => Json::from(*i),
        Value::HugeInt(i) => {
            i64::try_from(*i).map_or_else(|_| Json::from(i.to_string()), Json::from)
        }
        Value::UHugeInt(i) => {
            u64::try_from(*i).map_or_else(|_| Json::from(i.to_string()), Json::from)
        }
        Value::Float(f) if f.is_finite() => {
            // Through the shortest decimal text, so 0.1f32 is 0.1 and not 0.10000000149011612.
            text(v, ty)
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .and_then(serde_json::Number::from_f64)
                .map_or(Json::Null, Json::Number)
        }
        Value::Double(f) if f.is_finite() => {
            serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number)
        }
        Value::Timestamp(unit, t) => Json::from(value_text::timestamp_json(*unit, *t, ty, zone)),
        Value::List(items) | Value::Array(items) => {
            let e = child(ty);
            Json::Array(items.iter().map(|i| typed(i, &e, zone)).collect())
        }
        Value::Struct(fields) => {
            let types: &[(String, ColumnType)] = match ty {
                ColumnType::Struct(f) => f,
                _ => &[],
            };
            Json::Object(
                fields
                    .iter()
                    .map(|(k, v)| {
                        let t = types
                            .iter()
                            .find(|(n, _)| n == k)
                            .map_or(ColumnType::Other("OTHER"), |(_, t)| t.clone());
                        (k.clone(), typed(v, &t, zone))
                    })
                    .collect(),
            )
        }
        Value::Map(entries) => {
            let (kt, vt) = match ty {
                ColumnType::Map(k, v) => ((**k).clone(), (**v).clone()),
                _ => (ColumnType::Other("OTHER"), ColumnType::Other("OTHER")),
            };
            Json::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = value_text::text(k, &kt, zone).unwrap_or_else(|| "NULL".into());
                        (key, typed(v, &vt, zone))
                    })
                    .collect(),
            )
        }
        Value::Union(inner) => typed(inner, &ColumnType::Other("OTHER"), zone),
        Value::Decimal(d) => d
            .to_string()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Json::Null, Json::Number),
        // DECIMAL, text, BLOB, DATE, TIME, INTERVAL, ENUM, non-finite floats: DuckDB's text.
        other => text(other, ty),
    }
}

/// Writes `v` as JSON text to `out`, DECIMALs (also nested ones) as numbers with their exact
/// digits; everything else as [`typed`] renders it.
pub fn write(out: &mut String, v: &Value, ty: &ColumnType, zone: Zone) {
    match v {
        Value::Decimal(d) => out.push_str(&d.to_string()),
        Value::List(items) | Value::Array(items) => {
            let e = match ty {
                ColumnType::List(e) | ColumnType::Array(e) => (**e).clone(),
                _ => ColumnType::Other("OTHER"),
            };
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(out, item, &e, zone);
            }
            out.push(']');
        }
        Value::Struct(fields) => {
            let types: &[(String, ColumnType)] = match ty {
                ColumnType::Struct(f) => f,
                _ => &[],
            };
            out.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::from(k.as_str()).to_string());
                out.push(':');
                let t = types
                    .iter()
                    .find(|(n, _)| n == k)
                    .map_or(ColumnType::Other("OTHER"), |(_, t)| t.clone());
                write(out, v, &t, zone);
            }
            out.push('}');
        }
        other => out.push_str(&typed(other, ty, zone).to_string()),
    }
}

/// One result row as a JSON object (column names in order), written by [`write`].
pub fn row(columns: &[String], values: &[Value], types: &[ColumnType], zone: Zone) -> String {
    let mut out = String::from("{");
    for (i, ((name, v), t)) in columns.iter().zip(values).zip(types).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Json::from(name.as_str()).to_string());
        out.push(':');
        write(&mut out, v, t, zone);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_family_has_a_faithful_json_form() {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        conn.execute_batch("SET TimeZone = 'Europe/Prague'")
            .unwrap();
        let zone = Zone::of(&conn);
        let cases: &[(&str, Json)] = &[
            ("42::INTEGER", serde_json::json!(42)),
            (
                "9223372036854775807::HUGEINT",
                serde_json::json!(9223372036854775807i64),
            ),
            (
                "170141183460469231731687303715884105727::HUGEINT",
                serde_json::json!("170141183460469231731687303715884105727"),
            ),
            ("0.1::FLOAT", serde_json::json!(0.1)),
            ("'nan'::DOUBLE", serde_json::json!("nan")),
            ("1.50::DECIMAL(10,2)", serde_json::json!(1.5)),
            (
                "TIMESTAMPTZ '2024-01-02 03:04:05+00'",
                serde_json::json!("2024-01-02T04:04:05+01:00"),
            ),
            (
                "TIMESTAMP '2024-01-02 03:04:05.5'",
                serde_json::json!("2024-01-02T03:04:05.5"),
            ),
            ("DATE '2024-01-02'", serde_json::json!("2024-01-02")),
            ("INTERVAL 36 HOUR", serde_json::json!("36:00:00")),
            ("'\\xFF'::BLOB", serde_json::json!("\\xFF")),
            ("[1, NULL]", serde_json::json!([1, null])),
            (
                "{'a': 1.5::DECIMAL(3,1), 'b': [TIMESTAMPTZ '2024-01-02 03:04:05+00']}",
                serde_json::json!({"a": 1.5, "b": ["2024-01-02T04:04:05+01:00"]}),
            ),
            ("MAP {1: 'x'}", serde_json::json!({"1": "x"})),
            (
                "union_value(n := 2)::UNION(n INTEGER, s VARCHAR)",
                serde_json::json!(2),
            ),
        ];
        for (e, expected) in cases {
            let mut stmt = conn.prepare(&format!("SELECT {e}")).unwrap();
            let mut rows = stmt.query([]).unwrap();
            let ty = ColumnType::of(&rows.as_ref().unwrap().column_logical_type(0));
            let v: Value = rows.next().unwrap().unwrap().get(0).unwrap();
            assert_eq!(&typed(&v, &ty, zone), expected, "{e}");
            // The text writer agrees, up to DECIMAL's exact digits.
            let mut text = String::new();
            write(&mut text, &v, &ty, zone);
            let reread: Json = serde_json::from_str(&text).unwrap();
            assert_eq!(&reread, expected, "{e}: {text}");
        }
        let conn2 = duckdb::Connection::open_in_memory().unwrap();
        let v: Value = conn2
            .query_row(
                "SELECT [1.50::DECIMAL(10,2), 12345678901234567890.123::DECIMAL(38,3)]",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let ty = ColumnType::List(Box::new(ColumnType::Decimal {
            width: 38,
            scale: 3,
        }));
        let mut text = String::new();
        write(&mut text, &v, &ty, zone);
        assert_eq!(
            text, "[1.500,12345678901234567890.123]",
            "exact digits and scale"
        );
    }
}

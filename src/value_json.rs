//! DuckDB values as JSON, the way `pipeline query --format json` and the HTTP API show them: dates
//! and timestamps as ISO text, huge integers as strings, lists and structs as arrays and objects.

use duckdb::types::Value;

pub fn json(v: &Value) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Boolean(b) => json!(b),
        Value::TinyInt(i) => json!(i),
        Value::SmallInt(i) => json!(i),
        Value::Int(i) => json!(i),
        Value::BigInt(i) => json!(i),
        Value::HugeInt(i) => json!(i.to_string()),
        Value::UTinyInt(i) => json!(i),
        Value::USmallInt(i) => json!(i),
        Value::UInt(i) => json!(i),
        Value::UBigInt(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Double(f) => json!(f),
        Value::Decimal(d) => json!(d.to_string().parse::<f64>().ok()),
        Value::Text(s) => json!(s),
        Value::Blob(b) => json!(format!("<{} bytes>", b.len())),
        Value::Date32(d) => json!(date(*d as i64)),
        Value::Timestamp(unit, t) => json!(timestamp(*unit, *t)),
        Value::List(items) | Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(json).collect())
        }
        Value::Struct(fields) => {
            serde_json::Value::Object(fields.iter().map(|(k, v)| (k.clone(), json(v))).collect())
        }
        Value::Enum(s) => json!(s),
        other => json!(format!("{other:?}")),
    }
}

fn date(days: i64) -> String {
    chrono::DateTime::from_timestamp(days * 86_400, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| days.to_string())
}

fn timestamp(unit: duckdb::types::TimeUnit, t: i64) -> String {
    use duckdb::types::TimeUnit::*;
    let micros = match unit {
        Second => t * 1_000_000,
        Millisecond => t * 1_000,
        Microsecond => t,
        Nanosecond => t / 1_000,
    };
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.f").to_string())
        .unwrap_or_else(|| t.to_string())
}

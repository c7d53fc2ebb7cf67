//! DuckDB values as text, the way DuckDB itself renders them: the result of `CAST(v AS VARCHAR)`,
//! which is also what DuckDB's own shell prints. `pipeline query` (tables and CSV) and `metrics run`
//! show values through this module; [`crate::value_json`] builds JSON on the same rules.
//!
//! A value from duckdb-rs does not say everything about its type (a `TIMESTAMP WITH TIME ZONE`
//! arrives as a plain instant, a `DECIMAL` knows its scale but not its name), so rendering takes the
//! column's [`ColumnType`], read from the result's logical types. Rules, checked against DuckDB
//! 1.5.5 in the tests below: DECIMAL keeps its scale; FLOAT and DOUBLE print their shortest exact
//! digits (`0.1`, `1e+20`); TIMESTAMP WITH TIME ZONE prints in the session's time zone with its
//! offset (`2024-01-02 04:04:05+01`); INTERVAL as `1 year 2 months 3 days 04:05:06.789`; BLOB bytes
//! outside printable ASCII (and `\` and `'`) as `\xHH`; nested values as `[1, 2]`, `{'a': 1}`,
//! `{k=v}`, with strings inside them quoted when they hold a character that means something there.

use chrono::{Offset, TimeZone};
use duckdb::core::{LogicalTypeHandle, LogicalTypeId};
use duckdb::types::{TimeUnit, Value};

/// A result column's DuckDB type, as far as rendering needs it.
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnType {
    Boolean,
    /// An integer type, with its DuckDB name (`INTEGER`, `HUGEINT`…).
    Integer(&'static str),
    Float,
    Double,
    Decimal {
        width: u8,
        scale: u8,
    },
    Varchar,
    Blob,
    Date,
    Time,
    TimeTz,
    Timestamp(&'static str),
    TimestampTz,
    Interval,
    Uuid,
    Enum,
    List(Box<ColumnType>),
    Array(Box<ColumnType>),
    Struct(Vec<(String, ColumnType)>),
    Map(Box<ColumnType>, Box<ColumnType>),
    Union(Vec<(String, ColumnType)>),
    /// Anything else (JSON, BIT, BIGNUM…), by name: rendered from the value as it arrives.
    Other(&'static str),
}

impl ColumnType {
    pub fn of(t: &LogicalTypeHandle) -> ColumnType {
        use LogicalTypeId as L;
        let children = |t: &LogicalTypeHandle| -> Vec<(String, ColumnType)> {
            (0..t.num_children())
                .map(|i| (t.child_name(i), ColumnType::of(&t.child(i))))
                .collect()
        };
        match t.try_id() {
            Ok(L::Boolean) => ColumnType::Boolean,
            Ok(L::Tinyint) => ColumnType::Integer("TINYINT"),
            Ok(L::Smallint) => ColumnType::Integer("SMALLINT"),
            Ok(L::Integer) => ColumnType::Integer("INTEGER"),
            Ok(L::Bigint) => ColumnType::Integer("BIGINT"),
            Ok(L::Hugeint) => ColumnType::Integer("HUGEINT"),
            Ok(L::UTinyint) => ColumnType::Integer("UTINYINT"),
            Ok(L::USmallint) => ColumnType::Integer("USMALLINT"),
            Ok(L::UInteger) => ColumnType::Integer("UINTEGER"),
            Ok(L::UBigint) => ColumnType::Integer("UBIGINT"),
            Ok(L::UHugeint) => ColumnType::Integer("UHUGEINT"),
            Ok(L::Float) => ColumnType::Float,
            Ok(L::Double) => ColumnType::Double,
            Ok(L::Decimal) => ColumnType::Decimal {
                width: t.decimal_width(),
                scale: t.decimal_scale(),
            },
            Ok(L::Varchar) => ColumnType::Varchar,
            Ok(L::Blob) => ColumnType::Blob,
            Ok(L::Date) => ColumnType::Date,
            Ok(L::Time) => ColumnType::Time,
            Ok(L::TimeTZ) => ColumnType::TimeTz,
            Ok(L::Timestamp) => ColumnType::Timestamp("TIMESTAMP"),
            Ok(L::TimestampS) => ColumnType::Timestamp("TIMESTAMP_S"),
            Ok(L::TimestampMs) => ColumnType::Timestamp("TIMESTAMP_MS"),
            Ok(L::TimestampNs) => ColumnType::Timestamp("TIMESTAMP_NS"),
            Ok(L::TimestampTZ) => ColumnType::TimestampTz,
            Ok(L::Interval) => ColumnType::Interval,
            Ok(L::Uuid) => ColumnType::Uuid,
            Ok(L::Enum) => ColumnType::Enum,
            Ok(L::List) => ColumnType::List(Box::new(ColumnType::of(&t.child(0)))),
            Ok(L::Array) => ColumnType::Array(Box::new(ColumnType::of(&t.child(0)))),
            Ok(L::Struct) => ColumnType::Struct(children(t)),
            Ok(L::Map) => ColumnType::Map(
                Box::new(ColumnType::of(&t.child(0))),
                Box::new(ColumnType::of(&t.child(1))),
            ),
            Ok(L::Union) => ColumnType::Union(children(t)),
            Ok(L::Bit) => ColumnType::Other("BIT"),
            Ok(L::Bignum) => ColumnType::Other("BIGNUM"),
            Ok(L::SqlNull) => ColumnType::Other("NULL"),
            _ => ColumnType::Other("OTHER"),
        }
    }

    /// The DuckDB name of the type (`DECIMAL(18,2)`, `VARCHAR[]`, `STRUCT(a INTEGER)`).
    pub fn name(&self) -> String {
        let fields = |f: &[(String, ColumnType)]| {
            f.iter()
                .map(|(n, t)| format!("{} {}", quote_field_name(n), t.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            ColumnType::Boolean => "BOOLEAN".into(),
            ColumnType::Integer(n) | ColumnType::Timestamp(n) | ColumnType::Other(n) => (*n).into(),
            ColumnType::Float => "FLOAT".into(),
            ColumnType::Double => "DOUBLE".into(),
            ColumnType::Decimal { width, scale } => format!("DECIMAL({width},{scale})"),
            ColumnType::Varchar => "VARCHAR".into(),
            ColumnType::Blob => "BLOB".into(),
            ColumnType::Date => "DATE".into(),
            ColumnType::Time => "TIME".into(),
            ColumnType::TimeTz => "TIME WITH TIME ZONE".into(),
            ColumnType::TimestampTz => "TIMESTAMP WITH TIME ZONE".into(),
            ColumnType::Interval => "INTERVAL".into(),
            ColumnType::Uuid => "UUID".into(),
            ColumnType::Enum => "ENUM".into(),
            ColumnType::List(t) | ColumnType::Array(t) => format!("{}[]", t.name()),
            ColumnType::Struct(f) => format!("STRUCT({})", fields(f)),
            ColumnType::Map(k, v) => format!("MAP({}, {})", k.name(), v.name()),
            ColumnType::Union(f) => format!("UNION({})", fields(f)),
        }
    }

    /// Whether values are numbers (right-aligned in tables, JSON numbers where exact).
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            ColumnType::Integer(_)
                | ColumnType::Float
                | ColumnType::Double
                | ColumnType::Decimal { .. }
        )
    }
}

fn quote_field_name(n: &str) -> String {
    if crate::names::is_identifier(n) {
        n.to_string()
    } else {
        format!("\"{}\"", n.replace('"', "\"\""))
    }
}

/// What rendering needs beyond a value and its type.
#[derive(Clone, Copy, Debug)]
pub struct Zone(pub chrono_tz::Tz);

impl Default for Zone {
    fn default() -> Self {
        Zone(chrono_tz::UTC)
    }
}

impl Zone {
    /// The session time zone of `conn` (DuckDB's `TimeZone` setting), which is what DuckDB renders
    /// a `TIMESTAMP WITH TIME ZONE` in; UTC when it cannot be read.
    pub fn of(conn: &duckdb::Connection) -> Zone {
        conn.query_row("SELECT current_setting('TimeZone')", [], |r| {
            r.get::<_, String>(0)
        })
        .ok()
        .and_then(|name| name.parse().ok())
        .map_or_else(Zone::default, Zone)
    }
}

/// `v` as DuckDB's `CAST(v AS VARCHAR)` renders it; `None` for NULL.
pub fn text(v: &Value, ty: &ColumnType, zone: Zone) -> Option<String> {
    if matches!(v, Value::Null) {
        return None;
    }
    let mut out = String::new();
    write_text(&mut out, v, ty, zone, false);
    Some(out)
}

/// Writes `v`; `nested`: inside a list, struct or map, where strings may need quotes and NULL is
/// written `NULL`.
fn write_text(out: &mut String, v: &Value, ty: &ColumnType, zone: Zone, nested: bool) {
    use std::fmt::Write;
    let element = |t: &ColumnType| -> ColumnType {
        match t {
            ColumnType::List(e) | ColumnType::Array(e) => (**e).clone(),
            _ => ColumnType::Other("OTHER"),
        }
    };
    match v {
        Value::Null => out.push_str("NULL"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::TinyInt(i) => write!(out, "{i}").unwrap_or(()),
        Value::SmallInt(i) => write!(out, "{i}").unwrap_or(()),
        Value::Int(i) => write!(out, "{i}").unwrap_or(()),
        Value::BigInt(i) => write!(out, "{i}").unwrap_or(()),
        Value::HugeInt(i) => write!(out, "{i}").unwrap_or(()),
        Value::UHugeInt(i) => write!(out, "{i}").unwrap_or(()),
        Value::UTinyInt(i) => write!(out, "{i}").unwrap_or(()),
        Value::USmallInt(i) => write!(out, "{i}").unwrap_or(()),
        Value::UInt(i) => write!(out, "{i}").unwrap_or(()),
        Value::UBigInt(i) => write!(out, "{i}").unwrap_or(()),
        Value::Float(f) => out.push_str(&shortest(format!("{f:e}"), f.is_finite(), *f as f64)),
        Value::Double(f) => out.push_str(&shortest(format!("{f:e}"), f.is_finite(), *f)),
        Value::Decimal(d) => out.push_str(&d.to_string()),
        Value::Text(s) | Value::Enum(s) => string(out, s, nested),
        Value::Blob(b) | Value::Geometry(b) => blob(out, b),
        Value::Date32(d) => out.push_str(&date(*d)),
        Value::Time64(unit, t) => {
            out.push_str(&time_of_day(micros(*unit, *t), nanos_part(*unit, *t)))
        }
        Value::Timestamp(unit, t) => {
            let s = timestamp(*unit, *t, ty, zone, ' ');
            if nested && matches!(ty, ColumnType::TimestampTz) {
                string(out, &s, true)
            } else {
                out.push_str(&s)
            }
        }
        Value::Interval {
            months,
            days,
            nanos,
        } => out.push_str(&interval(*months, *days, *nanos)),
        Value::List(items) | Value::Array(items) => {
            let e = element(ty);
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_text(out, item, &e, zone, true);
            }
            out.push(']');
        }
        Value::Struct(fields) => {
            let types: &[(String, ColumnType)] = match ty {
                ColumnType::Struct(f) => f,
                _ => &[],
            };
            out.push('{');
            for (i, (name, value)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push('\'');
                out.push_str(&name.replace('\'', "\\'"));
                out.push_str("': ");
                let t = types
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(ColumnType::Other("OTHER"), |(_, t)| t.clone());
                write_text(out, value, &t, zone, true);
            }
            out.push('}');
        }
        Value::Map(entries) => {
            let (kt, vt) = match ty {
                ColumnType::Map(k, v) => ((**k).clone(), (**v).clone()),
                _ => (ColumnType::Other("OTHER"), ColumnType::Other("OTHER")),
            };
            out.push('{');
            for (i, (k, value)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_text(out, k, &kt, zone, true);
                out.push('=');
                write_text(out, value, &vt, zone, true);
            }
            out.push('}');
        }
        Value::Union(inner) => {
            // The member's own type is not carried with the value; its text needs none.
            write_text(out, inner, &ColumnType::Other("OTHER"), zone, nested)
        }
        // A future variant: its debug text is better than nothing, and tests catch it.
        #[allow(unreachable_patterns)]
        other => write!(out, "{other:?}").unwrap_or(()),
    }
}

/// A string, quoted with `'` inside a nested value when it holds a character that structures
/// nested values, starts or ends with a space, is empty or reads as NULL (DuckDB's rule).
fn string(out: &mut String, s: &str, nested: bool) {
    let special = |c: char| {
        matches!(
            c,
            '\'' | '"' | ',' | ':' | '=' | '(' | ')' | '[' | ']' | '{' | '}'
        )
    };
    let quote = nested
        && (s.is_empty()
            || s.contains(special)
            || s.starts_with(char::is_whitespace)
            || s.ends_with(char::is_whitespace)
            || s.eq_ignore_ascii_case("null"));
    if quote {
        out.push('\'');
        out.push_str(&s.replace('\'', "\\'"));
        out.push('\'');
    } else {
        out.push_str(s);
    }
}

fn blob(out: &mut String, bytes: &[u8]) {
    use std::fmt::Write;
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'\\' && b != b'\'' {
            out.push(b as char);
        } else {
            write!(out, "\\x{b:02X}").unwrap_or(());
        }
    }
}

/// The shortest digits that read back as the same number, laid out as DuckDB (and Python) do:
/// positional from 1e-4 to 1e16 with at least one decimal, else `1e+20`, `1e-07`.
fn shortest(sci: String, finite: bool, value: f64) -> String {
    if !finite {
        return if value.is_nan() {
            "nan".into()
        } else if value > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let point = exp + 1;
        let (int, frac) = if point <= 0 {
            (
                "0".to_string(),
                format!("{}{digits}", "0".repeat((-point) as usize)),
            )
        } else if point as usize >= digits.len() {
            (
                format!("{digits}{}", "0".repeat(point as usize - digits.len())),
                String::new(),
            )
        } else {
            (
                digits[..point as usize].to_string(),
                digits[point as usize..].to_string(),
            )
        };
        let frac = if frac.is_empty() { "0".into() } else { frac };
        format!("{sign}{int}.{frac}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let e_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{e_sign}{:02}", exp.abs())
    }
}

fn date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        d if d == -i32::MAX => "-infinity".into(),
        d => match chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163) {
            Some(date) => bc(date.format("%Y-%m-%d").to_string(), date.year_ce().0),
            None => d.to_string(),
        },
    }
}

/// `text` (`%Y-%m-%d…` as chrono writes it) the way DuckDB writes a date: years before 1 CE as
/// `0044-03-15 (BC)` (chrono: `-0043-03-15`), the marker right after the date.
fn bc(text: String, is_ce: bool) -> String {
    if is_ce {
        return text;
    }
    let body = text.trim_start_matches('-');
    let (year, rest) = body.split_at(body.find('-').unwrap_or(body.len()));
    let year: i64 = year.parse().unwrap_or(0);
    let (date_rest, time) = rest.split_at(rest.find([' ', 'T']).unwrap_or(rest.len()));
    format!("{:04}{date_rest} (BC){time}", year + 1)
}

use chrono::Datelike;

fn micros(unit: TimeUnit, t: i64) -> i64 {
    match unit {
        TimeUnit::Second => t.saturating_mul(1_000_000),
        TimeUnit::Millisecond => t.saturating_mul(1_000),
        TimeUnit::Microsecond => t,
        TimeUnit::Nanosecond => t.div_euclid(1_000),
    }
}

/// The nanoseconds below a microsecond, for nanosecond values.
fn nanos_part(unit: TimeUnit, t: i64) -> Option<i64> {
    matches!(unit, TimeUnit::Nanosecond).then(|| t.rem_euclid(1_000_000_000))
}

/// `HH:MM:SS` with the fraction's significant digits.
fn time_of_day(micros: i64, nanos_of_second: Option<i64>) -> String {
    let secs = micros.div_euclid(1_000_000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let frac = match nanos_of_second {
        Some(n) => fraction(n, 9),
        None => fraction(micros.rem_euclid(1_000_000), 6),
    };
    format!("{h:02}:{m:02}:{s:02}{frac}")
}

fn fraction(value: i64, digits: usize) -> String {
    if value == 0 {
        return String::new();
    }
    let text = format!("{value:0digits$}");
    format!(".{}", text.trim_end_matches('0'))
}

/// A timestamp: naive ones as written, `TIMESTAMP WITH TIME ZONE` in `zone` with its offset.
/// `sep` is ' ' for DuckDB's text and 'T' for RFC 3339.
fn timestamp(unit: TimeUnit, t: i64, ty: &ColumnType, zone: Zone, sep: char) -> String {
    if t == i64::MAX {
        return "infinity".into();
    }
    if t == -i64::MAX {
        return "-infinity".into();
    }
    let us = micros(unit, t);
    let Some(utc) = chrono::DateTime::from_timestamp_micros(us) else {
        return t.to_string();
    };
    let frac = match nanos_part(unit, t) {
        Some(n) => fraction(n, 9),
        None => fraction(us.rem_euclid(1_000_000), 6),
    };
    let rfc = sep == 'T';
    if matches!(ty, ColumnType::TimestampTz) {
        let local = zone.0.from_utc_datetime(&utc.naive_utc());
        let offset = local.offset().fix().local_minus_utc();
        let body = bc(
            local.format(&format!("%Y-%m-%d{sep}%H:%M:%S")).to_string(),
            local.year() > 0,
        );
        format!("{body}{frac}{}", offset_text(offset, rfc))
    } else {
        let body = bc(
            utc.format(&format!("%Y-%m-%d{sep}%H:%M:%S")).to_string(),
            utc.year() > 0,
        );
        format!("{body}{frac}")
    }
}

/// `+01` (DuckDB, whole hours), `+05:30`; RFC 3339 always `+01:00`.
fn offset_text(seconds: i32, rfc: bool) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let (h, m) = (seconds.abs() / 3600, seconds.abs() / 60 % 60);
    if m == 0 && !rfc {
        format!("{sign}{h:02}")
    } else {
        format!("{sign}{h:02}:{m:02}")
    }
}

/// `1 year 2 months 3 days 04:05:06.789`, as DuckDB writes an interval.
fn interval(months: i32, days: i32, nanos: i64) -> String {
    let mut parts: Vec<String> = Vec::new();
    let plural = |n: i64, unit: &str| {
        if n.abs() == 1 {
            format!("{n} {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    let (years, months) = (months / 12, months % 12);
    if years != 0 {
        parts.push(plural(years as i64, "year"));
    }
    if months != 0 {
        parts.push(plural(months as i64, "month"));
    }
    if days != 0 {
        parts.push(plural(days as i64, "day"));
    }
    let micros = nanos / 1_000;
    if micros != 0 || parts.is_empty() {
        let sign = if micros < 0 { "-" } else { "" };
        let m = micros.unsigned_abs();
        let secs = m / 1_000_000;
        let frac = fraction((m % 1_000_000) as i64, 6);
        parts.push(format!(
            "{sign}{:02}:{:02}:{:02}{frac}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        ));
    }
    parts.join(" ")
}

/// A timestamp for JSON: RFC 3339 (`2024-01-02T04:04:05+01:00`) for `TIMESTAMP WITH TIME ZONE`,
/// ISO 8601 without a zone for a plain `TIMESTAMP`, which has none.
pub fn timestamp_json(unit: TimeUnit, t: i64, ty: &ColumnType, zone: Zone) -> String {
    timestamp(unit, t, ty, zone, 'T')
}

/// A table cell's alignment.
pub fn right_aligned(ty: &ColumnType) -> bool {
    ty.is_numeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each expression rendered by us equals DuckDB's own `CAST(… AS VARCHAR)`.
    #[test]
    fn text_matches_duckdbs_varchar_cast() {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "SET TimeZone = 'Asia/Kolkata'; CREATE TYPE mood AS ENUM ('calm', 'busy');",
        )
        .unwrap();
        let zone = Zone::of(&conn);
        let exprs = [
            "true",
            "(-7)::TINYINT",
            "300::SMALLINT",
            "(-2147483648)::INTEGER",
            "9223372036854775807::BIGINT",
            "170141183460469231731687303715884105727::HUGEINT",
            "255::UTINYINT",
            "18446744073709551615::UBIGINT",
            "340282366920938463463374607431768211455::UHUGEINT",
            "1.5::DOUBLE",
            "0.1::DOUBLE",
            "1e20::DOUBLE",
            "1e-7::DOUBLE",
            "1e15::DOUBLE",
            "123456789012345678.0::DOUBLE",
            "0.000123::DOUBLE",
            "-0.0::DOUBLE",
            "'inf'::DOUBLE",
            "'-inf'::DOUBLE",
            "'nan'::DOUBLE",
            "0.1::FLOAT",
            "16777216::FLOAT",
            "3.14159::FLOAT",
            "1.50::DECIMAL(10,2)",
            "-0.05::DECIMAL(10,2)",
            "12345678901234567890.123::DECIMAL(38,3)",
            "42::DECIMAL(4,0)",
            "'plain text, with: specials'",
            "'\\x00A\\xFF\\x7F ~\\x5C\\x27'::BLOB",
            "DATE '2024-01-02'",
            "DATE '0001-01-01'",
            "'infinity'::DATE",
            "TIME '12:34:56'",
            "TIME '12:34:56.5'",
            "TIME '00:00:00.000001'",
            "TIMESTAMP '2024-01-02 03:04:05'",
            "TIMESTAMP '2024-01-02 03:04:05.120'",
            "TIMESTAMP '2024-01-02 03:04:05.000001'",
            "TIMESTAMP_S '2024-01-02 03:04:05'",
            "TIMESTAMP_MS '2024-01-02 03:04:05.123'",
            "TIMESTAMP_NS '2024-01-02 03:04:05.123456789'",
            "'infinity'::TIMESTAMP",
            "TIMESTAMP '0044-03-15 10:00:00' - INTERVAL 100 YEAR",
            "TIMESTAMPTZ '2024-01-02 03:04:05+00'",
            "TIMESTAMPTZ '2024-07-02 03:04:05.5+00'",
            "INTERVAL 0 SECOND",
            "INTERVAL '-1 day'",
            "INTERVAL 36 HOUR",
            "INTERVAL '1 microsecond'",
            "INTERVAL '-1 year -2 months'",
            "INTERVAL 25 MONTH",
            "INTERVAL 1 YEAR + INTERVAL 3 DAY + INTERVAL 4 HOUR + INTERVAL 5 MINUTE + INTERVAL 6789 MILLISECOND",
            "INTERVAL '1 day -1 hour'",
            "UUID '123e4567-e89b-12d3-a456-426614174000'",
            "'calm'::mood",
            "[1, 2, NULL]",
            "['a', 'b c', 'd,e', 'x''y', '[z]', '', 'NULL', NULL, ' lead', 'a:b', 'a=b']",
            "[[1], [2, 3]]",
            "[1.5::DECIMAL(4,2)]",
            "[DATE '2024-01-01']",
            "[TIMESTAMPTZ '2024-01-02 03:04:05+00']",
            "[]::INTEGER[]",
            "{'a': 1, 'b': 'hello', 'c': NULL}",
            "{'a': 'x, y', 'b': [1]}",
            "{'t': TIMESTAMPTZ '2024-01-02 03:04:05+00'}",
            "MAP {'a': 1, 'b': 2}",
            "MAP {'k,1': 'v=1', 'k2': NULL}",
            "MAP {1: [1, 2]}",
            "[1, 2, 3]::INTEGER[3]",
            "union_value(num := 2)::UNION(num INTEGER, s VARCHAR)",
            "union_value(s := 'x')::UNION(num INTEGER, s VARCHAR)",
        ];
        let mut wrong = Vec::new();
        for e in exprs {
            let mut stmt = conn
                .prepare(&format!("SELECT {e}, CAST({e} AS VARCHAR)"))
                .unwrap();
            let mut rows = stmt.query([]).unwrap();
            let ty = ColumnType::of(&rows.as_ref().unwrap().column_logical_type(0));
            let row = rows.next().unwrap().unwrap();
            let v: Value = row.get(0).unwrap();
            let expected: Option<String> = row.get(1).unwrap();
            let ours = text(&v, &ty, zone);
            if ours != expected {
                wrong.push(format!("{e}: ours {ours:?}, DuckDB {expected:?} ({v:?})"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn types_are_named_as_duckdb_names_them() {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT 1.5::DECIMAL(18,2), ['a'], {'a': 1, 'b c': 'x'}, MAP {'a': 1}, \
                 TIMESTAMPTZ '2024-01-01 00:00:00+00'",
            )
            .unwrap();
        let rows = stmt.query([]).unwrap();
        let names: Vec<String> = (0..5)
            .map(|i| ColumnType::of(&rows.as_ref().unwrap().column_logical_type(i)).name())
            .collect();
        assert_eq!(
            names,
            [
                "DECIMAL(18,2)",
                "VARCHAR[]",
                "STRUCT(a INTEGER, \"b c\" VARCHAR)",
                "MAP(VARCHAR, INTEGER)",
                "TIMESTAMP WITH TIME ZONE"
            ]
        );
    }
}

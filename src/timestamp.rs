//! The one way times are written for machines: RFC 3339 in UTC with milliseconds and the zone
//! (`2026-05-01T08:30:00.000Z`), whether Rust formats the time ([`rfc3339`]) or DuckDB reads it from
//! a `TIMESTAMP` column of the state ([`sql`]). The API and the CLI's JSON use it; people see times in
//! the instance zone, converted by the renderers.

use chrono::{DateTime, Utc};

/// `t` as RFC 3339 in UTC with milliseconds.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// DuckDB SQL giving the UTC `TIMESTAMP` expression `col` as [`rfc3339`] text (NULL stays NULL).
pub fn sql(col: &str) -> String {
    format!("strftime({col}, '%Y-%m-%dT%H:%M:%S.%gZ')")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_and_duckdb_write_the_same_text() {
        let t = DateTime::parse_from_rfc3339("2026-05-01T08:30:07.250Z")
            .unwrap()
            .with_timezone(&Utc);
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let from_sql: String = conn
            .query_row(
                &format!(
                    "SELECT {} FROM (SELECT TIMESTAMP '2026-05-01 08:30:07.25' AS t)",
                    sql("t")
                ),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rfc3339(t), "2026-05-01T08:30:07.250Z");
        assert_eq!(from_sql, rfc3339(t));
    }
}

//! Data checks (`checks:` on tables and transforms): not_null, unique, accepted_values. They run on
//! new data before it replaces the old, so a failing check keeps the previous data and fails the task.

use crate::quote;
use crate::registry::registered::Check;
use duckdb::Connection;

/// Runs `checks` against `relation` (anything selectable). The error says which check failed, how
/// often, and shows a few offending values.
pub fn run(conn: &Connection, relation: &str, checks: &[Check]) -> Result<(), String> {
    let mut failures = Vec::new();
    for check in checks {
        match one(conn, relation, check) {
            Ok(None) => {}
            Ok(Some(why)) => failures.push(format!("check {} failed: {why}", check.label())),
            Err(e) => failures.push(format!(
                "check {} could not run: {}",
                check.label(),
                e.lines().next().unwrap_or_default()
            )),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn column(c: &str) -> Result<String, String> {
    quote::ident(c).ok_or_else(|| format!("`{c}` is not a plain column name"))
}

fn one(conn: &Connection, relation: &str, check: &Check) -> Result<Option<String>, String> {
    let count = |sql: &str| -> Result<i64, String> {
        conn.query_row(sql, [], |r| r.get(0))
            .map_err(|e| e.to_string())
    };
    let examples = |sql: &str| -> Result<String, String> {
        let mut stmt = conn.prepare(sql).map_err(|e| e.to_string())?;
        let vals = stmt
            .query_map([], |r| r.get::<_, Option<String>>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| e.to_string())?;
        Ok(vals
            .into_iter()
            .map(|v| v.unwrap_or_else(|| "NULL".into()))
            .collect::<Vec<_>>()
            .join(", "))
    };
    match check {
        Check::NotNull(c) => {
            let col = column(c)?;
            let n = count(&format!(
                "SELECT count(*) FROM {relation} WHERE {col} IS NULL"
            ))?;
            Ok((n > 0).then(|| format!("{n} row(s) have no value in `{c}`")))
        }
        Check::Unique(cols) => {
            let list = cols
                .iter()
                .map(|c| column(c))
                .collect::<Result<Vec<_>, _>>()?
                .join(", ");
            let dupes = format!("SELECT {list} FROM {relation} GROUP BY ALL HAVING count(*) > 1");
            let n = count(&format!("SELECT count(*) FROM ({dupes})"))?;
            if n == 0 {
                return Ok(None);
            }
            let key = if cols.len() == 1 {
                list.clone()
            } else {
                format!("concat_ws(', ', {list})")
            };
            let e = examples(&format!(
                "SELECT CAST({key} AS VARCHAR) FROM ({dupes}) ORDER BY 1 LIMIT 3"
            ))?;
            Ok(Some(format!(
                "{n} value(s) of ({}) appear more than once, e.g. {e}",
                cols.join(", ")
            )))
        }
        Check::AcceptedValues { column: c, values } => {
            let col = column(c)?;
            let allowed = values
                .iter()
                .map(|v| quote::literal(v))
                .collect::<Vec<_>>()
                .join(", ");
            let bad = format!(
                "SELECT DISTINCT CAST({col} AS VARCHAR) AS v FROM {relation} WHERE {col} IS NOT NULL \
                 AND CAST({col} AS VARCHAR) NOT IN ({allowed})"
            );
            let n = count(&format!("SELECT count(*) FROM ({bad})"))?;
            if n == 0 {
                return Ok(None);
            }
            let e = examples(&format!("SELECT v FROM ({bad}) ORDER BY 1 LIMIT 5"))?;
            Ok(Some(format!("{n} unexpected value(s) in `{c}`: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_report_what_failed() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE t AS SELECT * FROM (VALUES (1, 'a'), (1, 'b'), (NULL, 'zz')) v(id, s)",
        )
        .unwrap();
        let err = run(
            &c,
            "t",
            &[
                Check::NotNull("id".into()),
                Check::Unique(vec!["id".into()]),
                Check::AcceptedValues {
                    column: "s".into(),
                    values: vec!["a".into(), "b".into()],
                },
            ],
        )
        .unwrap_err();
        assert!(err.contains("not_null(id) failed: 1 row(s)"), "{err}");
        assert!(
            err.contains("unique(id) failed: 1 value(s) of (id) appear more than once, e.g. 1"),
            "{err}"
        );
        assert!(err.contains("unexpected value(s) in `s`: zz"), "{err}");
        assert!(run(&c, "t", &[Check::NotNull("s".into())]).is_ok());
    }
}

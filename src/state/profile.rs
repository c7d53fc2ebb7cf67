//! Table profiles (`profiles`, docs/profile.md): each table's last good profile with the data it
//! describes, and the last failed attempt. A run writes them after its publish, in one statement
//! for all the tables it profiled; `pipeline profile`, `GET /api/tables/{name}/profile` and the
//! manifest read them. The profile itself is JSON the state does not look into.

use super::{ts, Reader, StateResult, Writer, ROWS};
use duckdb::params;
use serde_json::Value;
use std::collections::BTreeMap;

/// One table's profiling outcome, to record.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileWrite {
    pub table_id: String,
    /// The data it read ([`crate::profile::data_stamp`]).
    pub stamp: String,
    /// The profile, or why it failed (the previous profile then stays).
    pub result: Result<Value, String>,
}

/// A table's recorded profile.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredProfile {
    pub table_id: String,
    /// The last good profile (`None` until one succeeded).
    pub profile: Option<Value>,
    pub profiled_at: Option<String>,
    pub run_id: Option<String>,
    /// The last attempt's error, when it failed after the last good profile.
    pub error: Option<String>,
    pub failed_at: Option<String>,
}

/// Which data each table's last profile and last failed attempt read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stamps {
    pub profiled: Option<String>,
    pub failed: Option<String>,
    /// When the last good profile was made (RFC 3339), to profile the longest-waiting first.
    pub profiled_at: Option<String>,
}

/// Records `rows` (run `run_id`, at `at`: UTC `YYYY-MM-DD HH:MM:SS[.f]`).
pub fn record(w: &mut Writer, run_id: &str, at: &str, rows: &[ProfileWrite]) -> StateResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let items: Vec<Value> = rows
        .iter()
        .map(|r| match &r.result {
            Ok(p) => serde_json::json!({"id": r.table_id, "stamp": r.stamp, "profile": p}),
            Err(e) => serde_json::json!({"id": r.table_id, "stamp": r.stamp, "error": e}),
        })
        .collect();
    // A success replaces the profile and clears the failure; a failure touches only the failure
    // columns, so the last good profile stays.
    w.conn().execute(
        &format!(
            "INSERT INTO profiles (table_id, profile, profiled_at, stamp, run_id, error, failed_at,
                                   failed_stamp)
             SELECT d->>'id', d->'profile',
                 CASE WHEN d->>'error' IS NULL THEN CAST($2 AS TIMESTAMP) END,
                 CASE WHEN d->>'error' IS NULL THEN d->>'stamp' END,
                 CASE WHEN d->>'error' IS NULL THEN CAST($3 AS VARCHAR) END,
                 d->>'error',
                 CASE WHEN d->>'error' IS NOT NULL THEN CAST($2 AS TIMESTAMP) END,
                 CASE WHEN d->>'error' IS NOT NULL THEN d->>'stamp' END
             FROM {ROWS}
             ON CONFLICT (table_id) DO UPDATE SET
                 profile = CASE WHEN excluded.error IS NULL THEN excluded.profile ELSE profile END,
                 profiled_at = CASE WHEN excluded.error IS NULL THEN excluded.profiled_at
                                    ELSE profiled_at END,
                 stamp = CASE WHEN excluded.error IS NULL THEN excluded.stamp ELSE stamp END,
                 run_id = CASE WHEN excluded.error IS NULL THEN excluded.run_id ELSE run_id END,
                 error = excluded.error,
                 failed_at = excluded.failed_at,
                 failed_stamp = excluded.failed_stamp"
        ),
        params![Value::Array(items).to_string(), at, run_id],
    )?;
    Ok(())
}

/// What each profiled table's last profile and last failure read, by table id.
pub fn stamps(r: &Reader) -> StateResult<BTreeMap<String, Stamps>> {
    let mut stmt = r.conn.prepare(&format!(
        "SELECT table_id, stamp, failed_stamp, {} FROM profiles",
        ts("profiled_at")
    ))?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            Stamps {
                profiled: row.get(1)?,
                failed: row.get(2)?,
                profiled_at: row.get(3)?,
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn select(filter: &str) -> String {
    format!(
        "SELECT table_id, CAST(profile AS VARCHAR), {}, run_id, error, {} FROM profiles {filter}
         ORDER BY table_id",
        ts("profiled_at"),
        ts("failed_at")
    )
}

fn stored(row: &duckdb::Row) -> duckdb::Result<StoredProfile> {
    let text: Option<String> = row.get(1)?;
    Ok(StoredProfile {
        table_id: row.get(0)?,
        // Written by `record` from a serialized value: it parses; if not, it is as good as none.
        profile: text.and_then(|t| serde_json::from_str(&t).ok()),
        profiled_at: row.get(2)?,
        run_id: row.get(3)?,
        error: row.get(4)?,
        failed_at: row.get(5)?,
    })
}

/// The recorded profile of table `id`, if it was ever profiled (or tried).
pub fn get(r: &Reader, id: &str) -> StateResult<Option<StoredProfile>> {
    let mut stmt = r.conn.prepare(&select("WHERE table_id = ?"))?;
    let mut rows = stmt.query_map(params![id], stored)?;
    Ok(rows.next().transpose()?)
}

/// Every recorded profile, by table id.
pub fn all(r: &Reader) -> StateResult<Vec<StoredProfile>> {
    let mut stmt = r.conn.prepare(&select(""))?;
    let rows = stmt.query_map([], stored)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;
    use serde_json::json;

    #[test]
    fn a_failure_keeps_the_last_good_profile_and_a_success_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("system.duckdb"));
        let write = |rows: &[ProfileWrite], run: &str, at: &str| {
            let mut w = store.write().unwrap();
            record(&mut w, run, at, rows).unwrap();
        };
        let ok = |id: &str, stamp: &str, rows: i64| ProfileWrite {
            table_id: id.into(),
            stamp: stamp.into(),
            result: Ok(json!({"rows": rows, "columns": []})),
        };
        let failed = |id: &str, stamp: &str| ProfileWrite {
            table_id: id.into(),
            stamp: stamp.into(),
            result: Err("boom".into()),
        };
        write(
            &[ok("s.a", "1", 3), failed("s.b", "9")],
            "r1",
            "2026-01-02 03:04:05",
        );
        let r = store.read().unwrap();
        let a = get(&r, "s.a").unwrap().unwrap();
        assert_eq!(a.profile, Some(json!({"rows": 3, "columns": []})));
        assert_eq!(a.profiled_at.as_deref(), Some("2026-01-02T03:04:05.000Z"));
        assert_eq!((a.run_id.as_deref(), a.error), (Some("r1"), None));
        let b = get(&r, "s.b").unwrap().unwrap();
        assert_eq!((b.profile, b.error.as_deref()), (None, Some("boom")));
        assert_eq!(get(&r, "s.c").unwrap(), None);
        drop(r);

        // A later failure of `a` keeps its profile and stamp; a success of `b` clears its error.
        write(
            &[failed("s.a", "2"), ok("s.b", "9", 1)],
            "r2",
            "2026-01-03 00:00:00",
        );
        let r = store.read().unwrap();
        let a = get(&r, "s.a").unwrap().unwrap();
        assert_eq!(a.profile, Some(json!({"rows": 3, "columns": []})));
        assert_eq!(a.error.as_deref(), Some("boom"));
        assert_eq!(a.failed_at.as_deref(), Some("2026-01-03T00:00:00.000Z"));
        let stamps = stamps(&r).unwrap();
        assert_eq!(
            stamps["s.a"],
            Stamps {
                profiled: Some("1".into()),
                failed: Some("2".into()),
                profiled_at: Some("2026-01-02T03:04:05.000Z".into()),
            }
        );
        assert_eq!(
            stamps["s.b"],
            Stamps {
                profiled: Some("9".into()),
                failed: None,
                profiled_at: Some("2026-01-03T00:00:00.000Z".into()),
            }
        );
        let b = get(&r, "s.b").unwrap().unwrap();
        assert_eq!((b.error, b.run_id.as_deref()), (None, Some("r2")));
        assert_eq!(all(&r).unwrap().len(), 2);
    }
}

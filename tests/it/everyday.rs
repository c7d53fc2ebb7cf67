//! Everyday conveniences of issue 20: the SQL cache behind `validate` (same diagnostics, cold or
//! warm), shell completions.

use crate::common::{Fmt, Instance};

/// `pipeline validate --format json` with the SQL cache in `cache` (or `off`): exit code and report.
fn validate_with_cache(inst: &Instance, cache: &str) -> (i32, String) {
    let out = inst
        .cmd()
        .args(["validate", "--format", "json"])
        .env("PIPELINE_SQL_CACHE", cache)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn the_sql_cache_changes_no_diagnostic() {
    let inst = Instance::new(Fmt::Yaml);
    // Every kind of SQL finding: a syntax error, an unknown table, an uncertain read, a metric
    // rendered for two grains.
    inst.write_spec(
        "pipelines/extra",
        "type: csv\nconnection:\n  path: files\ntransforms:\n  - name: broken\n    sql: select from from orders\n  \
         - name: unknown\n    sql: select * from ordrs\n  - name: files\n    sql: select * from read_csv('x.csv')\n",
    );
    inst.write_spec(
        "metrics/sales/by_grain",
        "description: Orders per period\nowner: a@b.c\ngrain: [day, month]\ntime_column: updated_at\n\
         sql: select {{ period() }} as period, count(*) as value from orders group by 1\n",
    );
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("sql");
    let dir = dir.to_str().unwrap();
    let uncached = validate_with_cache(&inst, "off");
    assert_eq!(uncached.0, 1, "{}", uncached.1);
    for err in ["syntax error", "`ordrs`", "read_csv"] {
        assert!(uncached.1.contains(err), "{err}: {}", uncached.1);
    }
    let cold = validate_with_cache(&inst, dir);
    let files: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "one cache file");
    let warm = validate_with_cache(&inst, dir);
    // A warm run parses nothing (the file is not rewritten) and says exactly the same.
    assert_eq!(cold, uncached);
    assert_eq!(warm, uncached);
    // Editing one statement parses that one again; the others still come from the cache.
    inst.write_spec(
        "pipelines/extra",
        "type: csv\nconnection:\n  path: files\ntransforms:\n  - name: broken\n    sql: select 1 as fixed\n",
    );
    let (code, report) = validate_with_cache(&inst, dir);
    assert_eq!((code, report), validate_with_cache(&inst, "off"));
}

#[test]
fn completions_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = crate::common::pipeline()
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for word in [
            "validate",
            "plan",
            "query",
            "ndjson",
            "completions",
            "max-rows",
        ] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    assert!(!crate::common::pipeline()
        .args(["completions", "powershell-ish"])
        .output()
        .unwrap()
        .status
        .success());
}

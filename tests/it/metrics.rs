//! `pipeline metrics`: list, show, run and check on a copy of the demo instance, synced once.

use crate::common::{copy_tree, pipeline, repo_root};
use std::path::Path;
use std::process::Output;

/// The demo instance in a temp dir, applied (so analytics.duckdb exists).
fn synced_demo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["config", "pipelines", "registry", "metrics", "examples"] {
        copy_tree(&repo_root().join(sub), &dir.path().join(sub));
    }
    run(dir.path(), &["apply", "--auto-approve", "-q"]);
    dir
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let out = pipeline()
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("CI")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn metric_results_equal_hand_written_sql_over_the_same_data() {
    let demo = synced_demo();
    let dir = demo.path();
    // Monthly revenue for Q1 2025, by the metric and by hand.
    let metric = stdout(&run(
        dir,
        &[
            "metrics",
            "run",
            "revenue/total_revenue",
            "--grain",
            "month",
            "--from",
            "2025-01-01",
            "--to",
            "2025-03-31",
            "--format",
            "csv",
        ],
    ));
    let by_hand = stdout(&run(
        dir,
        &[
            "query",
            "--format",
            "csv",
            "select date_trunc('month', o.ordered_at) as period, sum(o.amount) as value \
             from orders o where o.status in ('completed', 'shipped') \
             and o.ordered_at >= date '2025-01-01' and o.ordered_at < date '2025-04-01' \
             group by 1 order by 1",
        ],
    ));
    // Same periods, same values (floating-point sums may differ in the last digit with the order
    // DuckDB's threads add in).
    let parse = |csv: &str| -> Vec<(String, f64)> {
        csv.lines()
            .skip(1)
            .map(|l| {
                let (p, v) = l.split_once(',').unwrap();
                (p.to_string(), v.parse::<f64>().unwrap())
            })
            .collect()
    };
    let (m, h) = (parse(&metric), parse(&by_hand));
    assert_eq!(m.len(), 3, "three months: {metric}");
    assert_eq!(m.len(), h.len());
    for ((mp, mv), (hp, hv)) in m.iter().zip(&h) {
        assert_eq!(mp, hp);
        assert!((mv - hv).abs() < 1e-6, "{mp}: {mv} vs {hv}");
    }

    // A dimension uses the metric's by_<dimension> variant.
    let by_country = stdout(&run(
        dir,
        &[
            "metrics",
            "run",
            "revenue/total_revenue",
            "--dim",
            "country",
            "--format",
            "ndjson",
        ],
    ));
    let first: serde_json::Value =
        serde_json::from_str(by_country.lines().next().unwrap()).unwrap();
    assert!(
        first["country"].is_string() && first["value"].is_number(),
        "{first}"
    );

    // Asking for what the metric does not define is a clear error.
    let out = pipeline()
        .arg("--dir")
        .arg(dir)
        .args(["metrics", "run", "revenue/total_revenue", "--grain", "hour"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no grain `hour`"), "{err}");
    let out = pipeline()
        .arg("--dir")
        .arg(dir)
        .args([
            "metrics",
            "run",
            "revenue/total_revenue",
            "--dim",
            "x; drop table orders",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no dimension `x; drop table orders`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = pipeline()
        .arg("--dir")
        .arg(dir)
        .args(["metrics", "run", "revenue/total_revnue"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did you mean `revenue/total_revenue`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every demo metric runs and gives a number.
    let list: serde_json::Value =
        serde_json::from_str(&stdout(&run(dir, &["metrics", "list", "--format", "json"]))).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 10);
    for id in ids {
        let rows = stdout(&run(dir, &["metrics", "run", id, "--format", "ndjson"]));
        let row: serde_json::Value = serde_json::from_str(rows.lines().next().unwrap()).unwrap();
        assert!(row["value"].is_number(), "{id}: {row}");
    }
}

#[test]
fn a_typo_in_a_column_is_reported_by_metrics_check_at_its_line() {
    let demo = synced_demo();
    let dir = demo.path();
    std::fs::write(
        dir.join("metrics/revenue/net_revenue.yaml"),
        "description: Revenue without tax\n\
         owner: finance@acme-outdoor.example\n\
         grain: [month]\n\
         time_column: ordered_at\n\
         sql: |\n  \
           select date_trunc('{{ grain }}', ordered_at) as period,\n         \
                  sum(amount - taxx) as value\n  \
           from orders\n  \
           group by 1\n",
    )
    .unwrap();
    // Valid as far as validate can tell: the SQL parses and reads a known table.
    run(dir, &["validate", "-q"]);
    let out = pipeline()
        .arg("--dir")
        .arg(dir)
        .args(["metrics", "check"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`revenue/net_revenue`"), "{err}");
    assert!(err.contains("\"taxx\""), "{err}");
    // Line 7 of the file, at the column name inside the block scalar.
    assert!(
        err.contains("metrics/revenue/net_revenue.yaml:7:23"),
        "{err}"
    );
    assert!(err.contains("sum(amount - taxx)"), "{err}");
    assert!(
        stdout(&out).contains("1 of 11 metric(s) do not bind"),
        "{}",
        stdout(&out)
    );

    // JSON output names the same place; checking one healthy metric passes.
    let out = pipeline()
        .arg("--dir")
        .arg(dir)
        .args([
            "metrics",
            "check",
            "revenue/net_revenue",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failed"], 1);
    run(dir, &["metrics", "check", "revenue/total_revenue"]);
}

#[test]
fn show_prints_the_definition_and_the_sql_for_each_grain() {
    let demo = synced_demo();
    let dir = demo.path();
    run(dir, &["metrics", "check"]);
    let text = stdout(&run(dir, &["metrics", "show", "revenue/total_revenue"]));
    for expected in [
        "Total revenue",
        "finance@acme-outdoor.example",
        "SQL, grain quarter",
        "date_trunc('quarter', ordered_at)",
        "Variant by_country",
        "last check   ok at",
        "order_facts",
    ] {
        assert!(text.contains(expected), "`{expected}` missing:\n{text}");
    }
}

#[test]
fn a_template_can_handle_dimensions_itself() {
    let demo = synced_demo();
    let dir = demo.path();
    std::fs::write(
        dir.join("metrics/revenue/orders_placed.yaml"),
        "description: Orders placed, any status\n\
         owner: finance@acme-outdoor.example\n\
         grain: [year]\n\
         time_column: ordered_at\n\
         dimensions: [country, sales_channel]\n\
         sql: |\n  \
           select {{ period() }} as period,{% if dimension %} {{ dimension }},{% endif %} count(*) as value\n  \
           from order_facts\n  \
           where {{ date_filter() }}\n  \
           group by all order by all\n",
    )
    .unwrap();
    run(dir, &["validate", "-q"]);
    run(dir, &["metrics", "check", "revenue/orders_placed"]);
    let total = stdout(&run(
        dir,
        &[
            "metrics",
            "run",
            "revenue/orders_placed",
            "--from",
            "2025-01-01",
            "--to",
            "2025-12-31",
            "--format",
            "csv",
        ],
    ));
    let by_channel = stdout(&run(
        dir,
        &[
            "metrics",
            "run",
            "revenue/orders_placed",
            "--dim",
            "sales_channel",
            "--from",
            "2025-01-01",
            "--to",
            "2025-12-31",
            "--format",
            "csv",
        ],
    ));
    assert!(
        by_channel.starts_with("period,sales_channel,value\n"),
        "{by_channel}"
    );
    let sum = |csv: &str| -> i64 {
        csv.lines()
            .skip(1)
            .map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap())
            .sum()
    };
    assert_eq!(
        sum(&total),
        sum(&by_channel),
        "the breakdown adds up to the total"
    );
    assert_eq!(total.lines().count(), 2, "one year: {total}");
}

//! `pipeline validate`: every kind of broken spec is rejected with exit 1 and a precise location, in
//! YAML and in TOML alike. Each case shows the broken file inline and where the error must point.

use crate::common::{errors, pipeline, Fmt, Instance};
use indoc::indoc;

/// Runs `$body` (a fn taking `Fmt`) as two tests, one per format.
macro_rules! both_formats {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn yaml() {
                ($body)(Fmt::Yaml)
            }
            #[test]
            fn toml() {
                ($body)(Fmt::Toml)
            }
        }
    };
}

/// Picks the YAML or TOML text of a case.
fn pick<'a>(fmt: Fmt, yaml: &'a str, toml: &'a str) -> &'a str {
    match fmt {
        Fmt::Yaml => yaml,
        Fmt::Toml => toml,
    }
}

both_formats!(base_instance_is_valid, |fmt| {
    let inst = Instance::new(fmt);
    let (status, report) = inst.validate();
    assert_eq!(status, 0, "{report:#}");
    assert_eq!(report["valid"], true);
    assert_eq!(report["error_count"], 0);
    assert_eq!(report["objects"]["tables"], 2);
    assert_eq!(report["objects"]["transforms"], 1);
    assert_eq!(report["objects"]["metrics"], 1);
});

both_formats!(syntax_error, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "registry/shop",
        pick(
            fmt,
            indoc! {"
                tables:
                  - source: shop
                     source_table: orders
            "},
            indoc! {r#"
                [[tables]]
                source = "shop
                source_table = "orders"
            "#},
        ),
    );
    let d = inst.expect_error(
        "syntax",
        "registry/shop",
        pick(fmt, "3", "2").parse().unwrap(),
        None,
    );
    assert!(d["message"]
        .as_str()
        .unwrap()
        .starts_with(pick(fmt, "invalid YAML", "invalid TOML")));
});

both_formats!(wrong_type, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "registry/shop",
        pick(
            fmt,
            indoc! {"
                tables:
                  - source: shop
                    source_table: orders
                    access: analysts
            "},
            indoc! {r#"
                [[tables]]
                source = "shop"
                source_table = "orders"
                access = "analysts"
            "#},
        ),
    );
    let col = pick(fmt, "13", "10").parse().unwrap();
    let d = inst.expect_error("type", "registry/shop", 4, Some(col));
    assert_eq!(
        d["message"],
        "`access` in table: expected a list of strings, found a string"
    );
    assert_eq!(d["hint"], "write a list, e.g. [analysts]");
});

both_formats!(wrong_integer_type, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "config/instance",
        pick(
            fmt,
            "name: Test\ndefaults:\n  concurrency: four\n",
            "name = \"Test\"\n[defaults]\nconcurrency = \"four\"\n",
        ),
    );
    let col = pick(fmt, "16", "15").parse().unwrap();
    let d = inst.expect_error("type", "config/instance", 3, Some(col));
    assert!(d["message"]
        .as_str()
        .unwrap()
        .contains("expected an integer"));
});

both_formats!(unknown_key_with_suggestion, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "registry/shop",
        pick(
            fmt,
            indoc! {"
                tables:
                  - source: shop
                    source_table: orders
                    descripton: One row per order
            "},
            indoc! {r#"
                [[tables]]
                source = "shop"
                source_table = "orders"
                descripton = "One row per order"
            "#},
        ),
    );
    let col = pick(fmt, "5", "1").parse().unwrap();
    let d = inst.expect_error("unknown-key", "registry/shop", 4, Some(col));
    assert_eq!(d["message"], "unknown key `descripton` in table");
    assert_eq!(d["hint"], "did you mean `description`?");
});

both_formats!(duplicate_table_id_across_files, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "registry/zz_more",
        pick(
            fmt,
            indoc! {"
                tables:
                  - id: shop.orders
                    source: shop
                    source_table: orders_v2
            "},
            indoc! {r#"
                [[tables]]
                id = "shop.orders"
                source = "shop"
                source_table = "orders_v2"
            "#},
        ),
    );
    let col = pick(fmt, "9", "6").parse().unwrap();
    let d = inst.expect_error("duplicate", "registry/zz_more", 2, Some(col));
    assert_eq!(d["message"], "duplicate table id `shop.orders`");
    let first = &d["related"][0];
    assert_eq!(first["file"], format!("registry/shop.{}", fmt.ext()));
    assert_eq!(first["message"], "first defined here");
});

both_formats!(duplicate_table_name_across_files, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "registry/zz_more",
        pick(
            fmt,
            indoc! {"
                tables:
                  - id: archive.orders
                    source: shop
                    source_table: Orders
            "},
            indoc! {r#"
                [[tables]]
                id = "archive.orders"
                source = "shop"
                source_table = "Orders"
            "#},
        ),
    );
    // View names are case-insensitive in DuckDB, so `Orders` clashes with `orders`.
    let col = pick(fmt, "19", "16").parse().unwrap();
    let d = inst.expect_error("duplicate", "registry/zz_more", 4, Some(col));
    assert!(d["message"]
        .as_str()
        .unwrap()
        .contains("`Orders` is already used by a table"));
});

both_formats!(table_with_unknown_source, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "registry/shop",
        pick(
            fmt,
            "tables:\n  - source: shpo\n    source_table: orders\n",
            "[[tables]]\nsource = \"shpo\"\nsource_table = \"orders\"\n",
        ),
    );
    let col = pick(fmt, "13", "10").parse().unwrap();
    let d = inst.expect_error("unknown-reference", "registry/shop", 2, Some(col));
    assert_eq!(
        d["message"],
        "table `shpo.orders` names source `shpo`, which does not exist"
    );
    assert_eq!(d["hint"], "did you mean `shop`?");
});

both_formats!(metric_reading_unknown_table, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "metrics/sales/order_count",
        pick(
            fmt,
            "description: Orders\nowner: a@b.c\nsql: select count(*) as value from ordres\n",
            "description = \"Orders\"\nowner = \"a@b.c\"\nsql = \"select count(*) as value from ordres\"\n",
        ),
    );
    // The caret lands on the table name inside the SQL.
    let col = pick(fmt, "36", "38").parse().unwrap();
    let d = inst.expect_error(
        "unknown-reference",
        "metrics/sales/order_count",
        3,
        Some(col),
    );
    assert_eq!(
        d["message"],
        "metric `sales/order_count` reads `ordres`, which is neither a registered table nor a transform"
    );
    assert_eq!(d["hint"], "did you mean `orders`?");
});

both_formats!(metric_listing_unknown_table, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "metrics/sales/order_count",
        pick(
            fmt,
            "description: Orders\nowner: a@b.c\ntables: [orders, custmers]\nsql: select count(*) as value from orders\n",
            "description = \"Orders\"\nowner = \"a@b.c\"\ntables = [\"orders\", \"custmers\"]\nsql = \"select count(*) as value from orders\"\n",
        ),
    );
    let col = pick(fmt, "18", "21").parse().unwrap();
    let d = inst.expect_error(
        "unknown-reference",
        "metrics/sales/order_count",
        3,
        Some(col),
    );
    assert_eq!(d["hint"], "did you mean `customers`?");
});

both_formats!(bad_cron_expression, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "pipelines/shop",
        pick(
            fmt,
            "type: csv\nconnection:\n  path: files\nschedule: \"61 * * * *\"\n",
            "type = \"csv\"\nschedule = \"61 * * * *\"\n[connection]\npath = \"files\"\n",
        ),
    );
    let line = pick(fmt, "4", "2").parse().unwrap();
    let d = inst.expect_error(
        "schedule",
        "pipelines/shop",
        line,
        Some(pick(fmt, "11", "12").parse().unwrap()),
    );
    assert!(d["message"]
        .as_str()
        .unwrap()
        .starts_with("invalid cron expression `61 * * * *`"));
    assert!(d["hint"].as_str().unwrap().contains("every 15m"));
});

both_formats!(cron_with_wrong_field_count, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "registry/shop",
        pick(
            fmt,
            "tables:\n  - source: shop\n    source_table: orders\n    schedule: \"0 5 * *\"\n",
            "[[tables]]\nsource = \"shop\"\nsource_table = \"orders\"\nschedule = \"0 5 * *\"\n",
        ),
    );
    let d = inst.expect_error("schedule", "registry/shop", 4, None);
    assert!(
        d["message"].as_str().unwrap().contains("has 5 fields"),
        "{d}"
    );
});

both_formats!(unknown_time_zone, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "config/instance",
        pick(
            fmt,
            "name: Test\ntimezone: Europe/Prage\n",
            "name = \"Test\"\ntimezone = \"Europe/Prage\"\n",
        ),
    );
    let col = pick(fmt, "11", "12").parse().unwrap();
    let d = inst.expect_error("timezone", "config/instance", 2, Some(col));
    assert_eq!(d["message"], "unknown time zone `Europe/Prage`");
    assert!(d["hint"]
        .as_str()
        .unwrap()
        .starts_with("did you mean `Europe/Prague`?"));
});

both_formats!(transform_with_invalid_sql, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "pipelines/shop",
        pick(
            fmt,
            indoc! {"
                type: csv
                connection:
                  path: files
                transforms:
                  - name: daily
                    sql: |
                      select count(*) as n
                      fromm orders
            "},
            indoc! {r#"
                type = "csv"
                [connection]
                path = "files"
                [[transforms]]
                name = "daily"
                sql = """
                select count(*) as n
                fromm orders
                """
            "#},
        ),
    );
    // The caret points at the token DuckDB rejected, inside the multi-line SQL.
    let col = pick(fmt, "7", "1").parse().unwrap();
    let d = inst.expect_error("sql", "pipelines/shop", 8, Some(col));
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .starts_with("transform `daily`: syntax error"),
        "{d}"
    );
});

both_formats!(transform_that_is_not_a_select, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "pipelines/shop",
        pick(
            fmt,
            "type: csv\nconnection:\n  path: files\ntransforms:\n  - name: daily\n    sql: delete from orders\n",
            "type = \"csv\"\n[connection]\npath = \"files\"\n[[transforms]]\nname = \"daily\"\nsql = \"delete from orders\"\n",
        ),
    );
    let d = inst.expect_error("sql", "pipelines/shop", 6, None);
    assert!(
        d["message"].as_str().unwrap().contains("only a SELECT"),
        "{d}"
    );
});

both_formats!(transform_cycle_is_reported_as_its_path, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "pipelines/shop",
        pick(
            fmt,
            indoc! {"
                type: csv
                connection:
                  path: files
                transforms:
                  - name: a
                    sql: select * from b
                  - name: b
                    sql: select * from c join orders using (id)
                  - name: c
                    sql: select * from a
                  - name: d
                    sql: select * from d
            "},
            indoc! {r#"
                type = "csv"
                [connection]
                path = "files"
                [[transforms]]
                name = "a"
                sql = "select * from b"
                [[transforms]]
                name = "b"
                sql = "select * from c join orders using (id)"
                [[transforms]]
                name = "c"
                sql = "select * from a"
                [[transforms]]
                name = "d"
                sql = "select * from d"
            "#},
        ),
    );
    let col = pick(fmt, "11", "8").parse().unwrap();
    let d = inst.expect_error("cycle", "pipelines/shop", 5, Some(col));
    assert_eq!(
        d["message"],
        "transforms depend on each other in a cycle: a → b → c → a"
    );
    assert_eq!(
        d["related"].as_array().unwrap().len(),
        2,
        "b and c are pointed at"
    );
    let line = pick(fmt, "11", "14").parse().unwrap();
    let d = inst.expect_error("cycle", "pipelines/shop", line, None);
    assert_eq!(
        d["message"],
        "transforms depend on each other in a cycle: d → d"
    );
});

both_formats!(inline_secret_is_refused, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "pipelines/kbc",
        pick(
            fmt,
            "type: keboola\nconnection:\n  url: https://connection.keboola.com\n  token: 123-abc\n",
            "type = \"keboola\"\n[connection]\nurl = \"https://connection.keboola.com\"\ntoken = \"123-abc\"\n",
        ),
    );
    let (status, report) = inst.validate();
    assert_eq!(status, 1);
    let errs = errors(&report);
    let secret = errs
        .iter()
        .find(|d| d["code"] == "env")
        .expect("an env error");
    assert_eq!(secret["line"], 4);
    assert!(secret["hint"]
        .as_str()
        .unwrap()
        .contains("token_env: VAR_NAME"));
    // The secret's value never appears in the output, JSON or human.
    assert!(!report.to_string().contains("123-abc"));
    let out = inst.cmd().arg("validate").output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("123-abc"));
    // And `token_env` is reported missing, not `token` as an unknown key.
    assert!(errs.iter().any(|d| d["code"] == "missing-key"));
    assert!(!errs.iter().any(|d| d["code"] == "unknown-key"));
});

both_formats!(password_in_a_url_is_refused, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "pipelines/kbc",
        pick(
            fmt,
            "type: keboola\nconnection:\n  url: https://me:pa55word@connection.keboola.com\n  token_env: KBC_TOKEN\n",
            "type = \"keboola\"\n[connection]\nurl = \"https://me:pa55word@connection.keboola.com\"\ntoken_env = \"KBC_TOKEN\"\n",
        ),
    );
    let d = inst.expect_error("env", "pipelines/kbc", 3, None);
    assert!(d["message"]
        .as_str()
        .unwrap()
        .contains("password in the URL"));
    let (_, report) = inst.validate();
    assert!(!report.to_string().contains("pa55word"));
    let out = inst.cmd().arg("validate").output().unwrap();
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains("url") && human.contains("<redacted>"),
        "{human}"
    );
    assert!(
        !human.contains("pa55word"),
        "the human output shows no secret: {human}"
    );
});

both_formats!(incremental_sync_needs_cursor_and_key, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "registry/shop",
        pick(
            fmt,
            "tables:\n  - source: shop\n    source_table: orders\n    sync:\n      mode: incremental\n",
            "[[tables]]\nsource = \"shop\"\nsource_table = \"orders\"\n[tables.sync]\nmode = \"incremental\"\n",
        ),
    );
    let (status, report) = inst.validate();
    assert_eq!(status, 1);
    let msgs: Vec<&str> = errors(&report)
        .iter()
        .filter_map(|d| d["message"].as_str())
        .collect();
    assert!(
        msgs.contains(&"incremental sync needs a `cursor` column"),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("needs a `primary_key`")),
        "{msgs:?}"
    );
});

both_formats!(primary_key_entries_are_plain_column_names, |fmt: Fmt| {
    let inst = Instance::new(fmt);
    inst.write_spec(
        "registry/shop",
        pick(
            fmt,
            indoc! {r#"
                tables:
                  - source: shop
                    source_table: orders
                    sync:
                      mode: incremental
                      cursor: updated_at
                      primary_key: [order_id, "customer_id, 1); drop table x; --"]
            "#},
            indoc! {r#"
                [[tables]]
                source = "shop"
                source_table = "orders"
                [tables.sync]
                mode = "incremental"
                cursor = "updated_at"
                primary_key = ["order_id", "customer_id, 1); drop table x; --"]
            "#},
        ),
    );
    // At the entry's opening quote.
    let (line, col) = match fmt {
        Fmt::Yaml => (7, 31),
        Fmt::Toml => (7, 28),
    };
    let d = inst.expect_error("invalid-name", "registry/shop", line, Some(col));
    assert!(d["message"]
        .as_str()
        .unwrap()
        .contains("in `primary_key` of table `shop.orders` is not a plain column name"));
    assert!(d["hint"]
        .as_str()
        .unwrap()
        .contains("letters, digits and _"));
});

both_formats!(
    source_table_cannot_leave_the_source_directory,
    |fmt: Fmt| {
        let inst = Instance::new(fmt);
        inst.write_spec(
        "registry/shop",
        pick(
            fmt,
            "tables:\n  - source: shop\n    source_table: ../../../etc/passwd\n    name: leak\n",
            "[[tables]]\nsource = \"shop\"\nsource_table = \"../../../etc/passwd\"\nname = \"leak\"\n",
        ),
    );
        let (line, col) = match fmt {
            Fmt::Yaml => (3, 19),
            Fmt::Toml => (3, 16),
        };
        let d = inst.expect_error("invalid-value", "registry/shop", line, Some(col));
        assert!(d["message"]
            .as_str()
            .unwrap()
            .contains("leaves the directory of source `shop`"));
        assert!(d["hint"].as_str().unwrap().contains("`..` are refused"));
    }
);

both_formats!(
    a_jira_source_validates_and_names_only_its_six_tables,
    |fmt: Fmt| {
        let inst = Instance::new(fmt);
        inst.write_spec(
        "pipelines/tracker",
        pick(
            fmt,
            "type: jira\nconnection:\n  url: https://acme.atlassian.net\n  email: bot@acme.example\n  token_env: JIRA_TOKEN\n  webhook_secret_env: JIRA_SECRET\n  promote: [Team]\nschedule: every 1h\n",
            "type = \"jira\"\nschedule = \"every 1h\"\n[connection]\nurl = \"https://acme.atlassian.net\"\nemail = \"bot@acme.example\"\ntoken_env = \"JIRA_TOKEN\"\nwebhook_secret_env = \"JIRA_SECRET\"\npromote = [\"Team\"]\n",
        ),
    );
        inst.write_spec(
        "registry/tracker",
        pick(
            fmt,
            "tables:\n  - source: tracker\n    source_table: issues\n  - source: tracker\n    source_table: worklogs\n",
            "[[tables]]\nsource = \"tracker\"\nsource_table = \"issues\"\n[[tables]]\nsource = \"tracker\"\nsource_table = \"worklogs\"\n",
        ),
    );
        let line = match fmt {
            Fmt::Yaml => 5,
            Fmt::Toml => 6,
        };
        let d = inst.expect_error("invalid-value", "registry/tracker", line, None);
        let message = d["message"].as_str().unwrap();
        assert!(message.contains("`worklogs`"), "{message}");
        assert!(
            d["hint"]
                .as_str()
                .unwrap()
                .contains("issues, comments, changelog"),
            "{d}"
        );
        // Only the unknown table is wrong: the source and `issues` are fine.
        let (_, report) = inst.validate();
        assert_eq!(errors(&report).len(), 1, "{report:#}");
        // The schema editors use offers jira.
        let out = inst.cmd().args(["schema", "source"]).output().unwrap();
        let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            schema["properties"]["type"]["enum"],
            serde_json::json!([
                "csv", "parquet", "duckdb", "keboola", "postgres", "mysql", "bigquery", "jira"
            ])
        );
    }
);

both_formats!(
    a_query_mode_the_source_type_cannot_run_is_an_error,
    |fmt: Fmt| {
        let inst = Instance::new(fmt);
        inst.write_spec(
        "registry/shop",
        pick(
            fmt,
            "tables:\n  - source: shop\n    source_table: orders\n    query_mode: remote\n",
            "[[tables]]\nsource = \"shop\"\nsource_table = \"orders\"\nquery_mode = \"remote\"\n",
        ),
    );
        let col = match fmt {
            Fmt::Yaml => 17,
            Fmt::Toml => 14,
        };
        let d = inst.expect_error("invalid-value", "registry/shop", 4, Some(col));
        assert!(d["message"]
            .as_str()
            .unwrap()
            .contains("query_mode `remote` is not available for csv sources"));
        let hint = d["hint"].as_str().unwrap();
        assert!(
            hint.contains("csv sources run query_mode local") && hint.contains("duckdb"),
            "{hint}"
        );
    }
);

#[test]
fn all_errors_are_reported_at_once() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec("config/instance", "name: Test\ntimezone: Mars/Olympus\n");
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: nope\n    source_table: orders\n    colour: red\n  - source: shop\n    source_table: customers\n    schedule: every 5s\n",
    );
    let (status, report) = inst.validate();
    assert_eq!(status, 1);
    let codes: Vec<&str> = errors(&report)
        .iter()
        .filter_map(|d| d["code"].as_str())
        .collect();
    for code in ["timezone", "unknown-reference", "unknown-key", "schedule"] {
        assert!(codes.contains(&code), "{code} missing from {codes:?}");
    }
}

#[test]
fn unset_env_var_is_a_warning_not_an_error() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec(
        "pipelines/kbc",
        "type: keboola\nconnection:\n  url: https://connection.keboola.com\n  token_env: PIPELINE_TEST_SURELY_UNSET\n",
    );
    let (status, report) = inst.validate();
    assert_eq!(status, 0, "{report:#}");
    assert_eq!(report["warning_count"], 1);
    assert_eq!(
        report["diagnostics"][0]["message"],
        "environment variable `PIPELINE_TEST_SURELY_UNSET` is not set"
    );
}

#[test]
fn human_output_points_at_the_line_with_a_caret() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n    descripton: x\n",
    );
    let out = pipeline()
        .arg("--dir")
        .arg(inst.path())
        .arg("validate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = indoc! {"
        error[unknown-key]: unknown key `descripton` in table
         --> registry/shop.yaml:4:5
          |
        4 |     descripton: x
          |     ^^^^^^^^^^
          = help: did you mean `description`?
    "};
    assert!(text.contains(expected), "{text}");
    assert!(text.contains("invalid: 1 error, 0 warnings"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "NO_COLOR output has no escape codes"
    );
}

#[test]
fn github_format_prints_workflow_annotations() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec("config/instance", "name: Test\ntimezone: Nowhere/City\n");
    let out = pipeline()
        .arg("--dir")
        .arg(inst.path())
        .args(["validate", "--format", "github"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(
            "::error file=config/instance.yaml,line=2,col=11,endLine=2,endColumn=23,\
             title=pipeline validate%3A timezone::unknown time zone `Nowhere/City`"
        ),
        "{text}"
    );
}

#[test]
fn missing_instance_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = pipeline()
        .arg("--dir")
        .arg(dir.path())
        .arg("validate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("no config/instance.yaml in"), "{text}");
    assert!(text.contains("pipeline init"), "{text}");
}

#[test]
fn quiet_valid_run_prints_nothing() {
    let inst = Instance::new(Fmt::Yaml);
    pipeline()
        .arg("--dir")
        .arg(inst.path())
        .args(["-q", "validate"])
        .assert()
        .success()
        .stdout("");
}

/// The codes of every diagnostic of a report.
fn codes(report: &serde_json::Value) -> Vec<String> {
    report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_file_that_does_not_parse_causes_no_follow_on_errors() {
    let inst = Instance::new(Fmt::Yaml);
    // The source `crm` and the table `accounts` live in files that do not parse; what refers to
    // them is not reported again, so the one error to fix is the syntax error.
    inst.write_spec("pipelines/crm", "type: csv\nconnection: [\n");
    inst.write_spec(
        "registry/crm",
        "tables:\n  - source: crm\n    source_table: accounts\n",
    );
    inst.write_spec("registry/broken", "tables: {\n");
    inst.write_spec(
        "pipelines/shop",
        "type: csv\nconnection:\n  path: files\ntransforms:\n  - name: daily\n    sql: select * from orders join leads using (id)\n",
    );
    let (status, report) = inst.validate();
    assert_eq!(status, 1);
    assert_eq!(codes(&report), ["syntax", "syntax"], "{report:#}");
}

#[test]
fn an_object_with_an_invalid_name_causes_no_unknown_reference() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec(
        "pipelines/shop",
        "type: csv\nconnection:\n  path: files\ntransforms:\n  - name: bad name\n    sql: select 1 as x\n  - name: reader\n    sql: select * from \"bad name\"\n",
    );
    let (status, report) = inst.validate();
    assert_eq!(status, 1);
    assert_eq!(codes(&report), ["invalid-name"], "{report:#}");
}

#[test]
fn did_you_mean_never_suggests_the_reader_itself() {
    let inst = Instance::new(Fmt::Yaml);
    // `dayly` is one letter from the transform `daily` that reads it: suggesting `daily` would be
    // a self-reference. The other near name, `orders`, is not close; so no suggestion at all.
    inst.write_spec(
        "pipelines/shop",
        "type: csv\nconnection:\n  path: files\ntransforms:\n  - name: daily\n    sql: select * from dayly\n",
    );
    let d = inst.expect_error("unknown-reference", "pipelines/shop", 6, None);
    let hint = d["hint"].as_str().unwrap();
    assert!(!hint.contains("`daily`"), "{hint}");
}

#[test]
fn an_undefined_template_variable_is_named_with_a_caret_under_it() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec(
        "metrics/sales/order_count",
        "description: Orders placed\nowner: data@example.com\nsql: select count(*) as value from orders where {{ granularity }} = 1\n",
    );
    let d = inst.expect_error("template", "metrics/sales/order_count", 3, Some(52));
    let message = d["message"].as_str().unwrap();
    assert!(
        message.contains("`granularity` is not defined"),
        "{message}"
    );
    let out = pipeline()
        .arg("--dir")
        .arg(inst.path())
        .arg("validate")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // The caret marks the whole name.
    assert!(
        text.contains(&format!("{}^^^^^^^^^^^", " ".repeat(50))),
        "{text}"
    );
}

#[test]
fn a_dimension_no_sql_handles_is_a_warning_shown_by_validate_only() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec(
        "metrics/sales/order_count",
        "description: Orders placed\nowner: data@example.com\nsql: select count(*) as value from orders\ndimensions: [region, channel]\nvariants:\n  by_channel: select channel, count(*) as value from orders group by 1\n",
    );
    let (status, report) = inst.validate();
    assert_eq!(status, 0, "{report:#}");
    let warnings: Vec<&str> = report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "warning")
        .map(|d| d["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        warnings,
        ["metric `sales/order_count` declares dimension `region`, but no SQL handles it"]
    );
    // `metrics list` does not repeat validate's warnings; `-q validate` prints none.
    let list = pipeline()
        .arg("--dir")
        .arg(inst.path())
        .args(["metrics", "list"])
        .output()
        .unwrap();
    assert!(list.status.success());
    assert!(
        !String::from_utf8_lossy(&list.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let quiet = pipeline()
        .arg("--dir")
        .arg(inst.path())
        .args(["-q", "validate"])
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    assert_eq!(String::from_utf8_lossy(&quiet.stdout), "");
}

#[test]
fn a_metric_is_found_by_its_name_alone_when_that_is_unique() {
    let inst = Instance::new(Fmt::Yaml);
    let show = |name: &str| {
        pipeline()
            .arg("--dir")
            .arg(inst.path())
            .args(["metrics", "show", name])
            .output()
            .unwrap()
    };
    let out = show("order_count");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sales/order_count"));
    // A second metric of that name elsewhere: the name alone no longer says which.
    inst.write_spec(
        "metrics/finance/order_count",
        "description: Orders booked\nowner: data@example.com\nsql: select count(*) as value from orders\n",
    );
    let out = show("order_count");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("several metrics (finance/order_count, sales/order_count); give the full id"),
        "{err}"
    );
    assert!(show("finance/order_count").status.success());
}

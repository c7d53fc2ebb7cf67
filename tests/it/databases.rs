//! `postgres` and `mysql` sources end to end, against the real servers on 127.0.0.1 (PostgreSQL 5432,
//! MariaDB 3306), each test in a database of its own (tests/it/common/db.rs), through the official
//! DuckDB extensions installed by scripts/fetch-extensions.

use crate::common::daemon::{call, token, Daemon};
use crate::common::db::{extensions_dir, MyDb, PgDb};
use crate::common::Instance;
use serde_json::json;
use std::process::Output;

const PASSWORD_ENV: &str = "PIPELINE_TEST_DB_PASSWORD";

/// One server under test: how to reach it from a spec, and how to change data there.
trait Server {
    fn kind(&self) -> &'static str;
    /// What DuckDB calls the database in messages.
    fn label(&self) -> &'static str;
    fn connection(&self) -> String;
    /// The value of [`PASSWORD_ENV`]: PostgreSQL runs with trust auth and ignores it; the MariaDB
    /// user needs it.
    fn password(&self) -> String;
    fn sql(&self, sql: &str);
    fn drop_now(&self);
    /// The bucket its tables are in.
    fn bucket(&self) -> String;
    fn name(&self) -> &str;
    /// Column types of the test's `orders` table.
    fn orders_ddl(&self) -> &'static str;
}

impl Server for PgDb {
    fn kind(&self) -> &'static str {
        "postgres"
    }
    fn label(&self) -> &'static str {
        "PostgreSQL"
    }
    fn connection(&self) -> String {
        format!(
            "{{ host: 127.0.0.1, port: 5432, database: {}, user: postgres, password_env: {PASSWORD_ENV}, sslmode: disable }}",
            self.name
        )
    }
    fn password(&self) -> String {
        format!("pg-unused-Secret-{}", self.name)
    }
    fn sql(&self, sql: &str) {
        PgDb::sql(self, sql);
    }
    fn drop_now(&self) {
        PgDb::drop_now(self)
    }
    fn bucket(&self) -> String {
        "public".into()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn orders_ddl(&self) -> &'static str {
        "id int, amount numeric(10,2), status varchar(20), updated_at timestamp, created date"
    }
}

impl Server for MyDb {
    fn kind(&self) -> &'static str {
        "mysql"
    }
    fn label(&self) -> &'static str {
        "MySQL"
    }
    fn connection(&self) -> String {
        format!(
            "{{ host: 127.0.0.1, port: 3306, database: {}, user: {}, password_env: {PASSWORD_ENV} }}",
            self.name, self.user
        )
    }
    fn password(&self) -> String {
        self.password.clone()
    }
    fn sql(&self, sql: &str) {
        MyDb::sql(self, sql);
    }
    fn drop_now(&self) {
        MyDb::drop_now(self)
    }
    fn bucket(&self) -> String {
        self.name.clone()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn orders_ddl(&self) -> &'static str {
        "id int, amount decimal(10,2), status varchar(20), updated_at datetime, created date"
    }
}

/// An instance with one source `db` on `server` and the given registry.
fn instance(server: &dyn Server, registry: &str) -> Instance {
    Instance::from_files(&[
        (
            "config/instance.yaml",
            &format!(
                "name: db\ntimezone: UTC\nextensions: {{ directory: {} }}\n\
                 remote_attach: {{ extensions: [postgres, mysql], token_envs: [{PASSWORD_ENV}] }}\n",
                extensions_dir().display()
            ),
        ),
        (
            "pipelines/db.yaml",
            &format!(
                "type: {}\nconnection: {}\n",
                server.kind(),
                server.connection()
            ),
        ),
        ("registry/db.yaml", registry),
    ])
}

fn pipeline(inst: &Instance, server: &dyn Server, args: &[&str]) -> Output {
    inst.cmd()
        .args(args)
        .env(PASSWORD_ENV, server.password())
        .output()
        .unwrap()
}

fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", all_output(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn query(inst: &Instance, server: &dyn Server, sql: &str) -> String {
    ok(pipeline(inst, server, &["query", "--format", "csv", sql]))
}

/// The password is in no output, in the state, or in the extract file.
fn assert_password_kept(inst: &Instance, server: &dyn Server, outputs: &str) {
    let secret = server.password();
    assert!(!outputs.contains(&secret), "the password in the output");
    for file in [
        inst.state_path(),
        inst.path().join("data/extracts/db/extract.duckdb"),
    ] {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the password in {}",
            file.display()
        );
    }
}

const ORDERS_REGISTRY: &str = "tables:
  - source: db
    source_table: orders
    sync: { mode: incremental, cursor: updated_at, primary_key: [id] }
    where: [{ column: status, operator: ne, values: [test] }]
    checks: [{ unique: id }, { not_null: id }]
    columns: { id: Order id }
  - source: db
    id: by_month
    source_table: orders
    name: orders_by_month
    sync: { mode: partitioned, partition_by: created, granularity: month, cursor: updated_at, primary_key: [id] }
  - source: db
    id: live
    source_table: orders
    name: orders_live
    query_mode: remote
  - source: db
    name: totals
    query_mode: materialized
    query: select status, sum(amount) as total, count(*) as n from orders group by status
";

fn all_modes_and_incremental_reruns(server: &dyn Server) {
    server.sql(&format!(
        "CREATE TABLE orders ({}, PRIMARY KEY (id)); INSERT INTO orders VALUES \
         (1, 10.50, 'paid', '2026-01-01 10:00:00', '2026-01-01'), \
         (2, 7.00, 'test', '2026-01-02 10:00:00', '2026-01-15'), \
         (3, 1.25, 'paid', '2026-01-03 10:00:00', '2026-02-01');",
        server.orders_ddl()
    ));
    let inst = instance(server, ORDERS_REGISTRY);
    let mut outputs = all_output(&pipeline(&inst, server, &["apply", "--auto-approve"]));
    assert!(
        outputs.contains("Apply complete"),
        "the apply failed:\n{outputs}"
    );
    let local = "select id, amount::varchar as amount, status from orders order by id";
    assert_eq!(
        query(&inst, server, local),
        "id,amount,status\n1,10.50,paid\n3,1.25,paid\n"
    );
    let live = "select id, amount::varchar as amount, status from orders_live order by id";
    assert_eq!(
        query(&inst, server, live),
        "id,amount,status\n1,10.50,paid\n2,7.00,test\n3,1.25,paid\n"
    );
    let totals = "select status, total::double as total, n from totals order by status";
    assert_eq!(
        query(&inst, server, totals),
        "status,total,n\npaid,11.75,2\ntest,7.0,1\n"
    );

    // Changes at the source: 1 updated, 3 updated so that the filter drops it, 4 new.
    server.sql(
        "UPDATE orders SET amount = 11.00, updated_at = '2026-01-05 10:00:00' WHERE id = 1; \
         UPDATE orders SET status = 'test', updated_at = '2026-01-05 11:00:00' WHERE id = 3; \
         INSERT INTO orders VALUES (4, 3.00, 'paid', '2026-01-06 10:00:00', '2026-02-03');",
    );
    for _ in 0..2 {
        // The second run reads the rows at the last cursor again and merges them: no duplicates.
        let out = pipeline(&inst, server, &["run"]);
        outputs.push_str(&all_output(&out));
        assert!(out.status.success(), "{}", all_output(&out));
        assert_eq!(
            query(&inst, server, local),
            "id,amount,status\n1,11.00,paid\n4,3.00,paid\n"
        );
        assert_eq!(
            query(
                &inst,
                server,
                "select string_agg(id::varchar || '=' || status, ',' order by id) as rows, \
                 count(*) = count(distinct id) as unique_ids from orders_by_month"
            ),
            "rows,unique_ids\n\"1=paid,2=test,3=test,4=paid\",true\n"
        );
    }
    let months: Vec<String> = {
        let mut v: Vec<String> =
            std::fs::read_dir(inst.path().join("data/extracts/db/data/orders_by_month"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
        v.sort();
        v
    };
    assert_eq!(months, ["2026-01.parquet", "2026-02.parquet"]);
    assert_eq!(
        query(&inst, server, "select count(*) as n from orders_live"),
        "n\n4\n",
        "a remote table reads the source as it is now"
    );
    assert_eq!(
        query(&inst, server, totals),
        "status,total,n\npaid,14.0,2\ntest,8.25,2\n"
    );

    // The extract's contract: the remote row names the password's variable, never the password.
    let extract = duckdb::Connection::open_with_flags(
        inst.path().join("data/extracts/db/extract.duckdb"),
        duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap(),
    )
    .unwrap();
    let (alias, extension, url, token_env): (String, String, String, String) = extract
        .query_row(
            "SELECT alias, extension, url, token_env FROM _remote_attach",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (alias.as_str(), extension.as_str(), token_env.as_str()),
        ("db__db", server.kind(), PASSWORD_ENV)
    );
    assert!(
        url.contains("host=127.0.0.1") && url.contains(server.name()),
        "{url}"
    );
    let view: String = extract
        .query_row(
            "SELECT sql FROM duckdb_views() WHERE view_name = 'orders_live'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        view.replace('"', "")
            .contains(&format!("FROM db__db.{}.orders", server.bucket())),
        "{view}"
    );
    drop(extract);
    assert_password_kept(&inst, server, &outputs);
}

fn outage_keeps_the_previous_data(server: &dyn Server) {
    server.sql(&format!(
        "CREATE TABLE orders ({}, PRIMARY KEY (id)); INSERT INTO orders VALUES \
         (1, 10.50, 'paid', '2026-01-01 10:00:00', '2026-01-01');",
        server.orders_ddl()
    ));
    let inst = instance(
        server,
        "tables:\n  - source: db\n    source_table: orders\n",
    );
    ok(pipeline(&inst, server, &["apply", "--auto-approve", "-q"]));
    server.drop_now();
    let out = pipeline(&inst, server, &["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let text = all_output(&out);
    assert!(
        text.contains(&format!(
            "extract:db.orders: cannot reach the {} database `{}` at 127.0.0.1:",
            server.label(),
            server.name()
        )),
        "{text}"
    );
    assert_eq!(
        query(&inst, server, "select id, status from orders"),
        "id,status\n1,paid\n",
        "the previous data stays published"
    );
}

fn discover_writes_entries_that_apply(server: &dyn Server) {
    let comment = match server.kind() {
        "postgres" => {
            "CREATE TABLE order_lines (order_id int, line int, sku varchar(10), PRIMARY KEY (order_id, line)); \
             COMMENT ON TABLE order_lines IS 'One row per order line'; \
             COMMENT ON COLUMN order_lines.sku IS 'Stock keeping unit'; \
             INSERT INTO order_lines VALUES (1, 1, 'A'), (1, 2, 'B');"
        }
        _ => {
            "CREATE TABLE order_lines (order_id int, line int, sku varchar(10) COMMENT 'Stock keeping unit', \
             PRIMARY KEY (order_id, line)) COMMENT 'One row per order line'; \
             INSERT INTO order_lines VALUES (1, 1, 'A'), (1, 2, 'B');"
        }
    };
    server.sql(comment);
    let inst = instance(server, "tables: []\n");
    std::fs::remove_file(inst.path().join("registry/db.yaml")).unwrap();
    let listed = ok(pipeline(&inst, server, &["sources", "discover", "db"]));
    assert!(
        listed.contains(&format!("{}.order_lines", server.bucket()))
            && listed.contains("order_id, line")
            && listed.contains("One row per order line"),
        "{listed}"
    );
    ok(pipeline(
        &inst,
        server,
        &["sources", "discover", "db", "--write", "registry/db.yaml"],
    ));
    let written = std::fs::read_to_string(inst.path().join("registry/db.yaml")).unwrap();
    assert!(
        written.contains("primary_key: [order_id, line]")
            && written.contains("sku: Stock keeping unit")
            && written.contains(&format!("bucket: {}", server.bucket())),
        "{written}"
    );
    ok(pipeline(&inst, server, &["apply", "--auto-approve", "-q"]));
    assert_eq!(
        query(
            &inst,
            server,
            "select string_agg(sku, ',' order by line) as s from order_lines"
        ),
        "s\n\"A,B\"\n"
    );
}

/// `(column, DuckDB type, value as text)` of table `t` in analytics, local (read from Parquet).
fn published_types(inst: &Instance) -> Vec<(String, String, String)> {
    let conn = inst.analytics();
    let columns: Vec<String> = {
        let mut stmt = conn
            .prepare(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 't' \
                 ORDER BY ordinal_position",
            )
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    columns
        .into_iter()
        .map(|c| {
            let (ty, v): (String, Option<String>) = conn
                .query_row(
                    &format!("SELECT typeof(\"{c}\"), \"{c}\"::VARCHAR FROM t WHERE id = 1"),
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            (c, ty, v.unwrap_or_else(|| "NULL".into()))
        })
        .collect()
}

fn assert_types(inst: &Instance, expected: &[(&str, &str, &str)]) {
    let got = published_types(inst);
    let got: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|(c, t, v)| (c.as_str(), t.as_str(), v.as_str()))
        .collect();
    for (want, have) in expected.iter().zip(&got) {
        assert_eq!(want, have);
    }
    assert_eq!(got.len(), expected.len(), "{got:?}");
}

// ---------------------------------------------------------------- PostgreSQL

#[test]
fn postgres_tables_in_every_query_mode_with_incremental_reruns() {
    all_modes_and_incremental_reruns(&PgDb::create());
}

#[test]
fn postgres_outage_keeps_the_previous_data_and_says_why() {
    outage_keeps_the_previous_data(&PgDb::create());
}

#[test]
fn postgres_discover_lists_tables_keys_and_comments() {
    discover_writes_entries_that_apply(&PgDb::create());
}

#[test]
fn postgres_types_map_faithfully_value_by_value() {
    let db = PgDb::create();
    db.sql(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); \
         CREATE TABLE t (id int PRIMARY KEY, n_ps numeric(12,3), n_plain numeric, n_big numeric(40,5), \
           ts timestamp, tstz timestamptz, d date, tm time, iv interval, j json, jb jsonb, \
           arr int[], tarr text[], m mood, u uuid, b bytea, bo boolean, sm smallint, bi bigint, \
           r real, dp double precision, vc varchar(10), ch char(3), ip inet); \
         INSERT INTO t VALUES (1, 123456789.123, 1.5, 12345.5, '2024-01-02 03:04:05.123456', \
           '2024-01-02 03:04:05.123456+02', '2024-01-02', '03:04:05', '1 day 2 hours', '{\"a\":1}', \
           '{\"b\":[1,2]}', '{1,2,3}', '{\"x\",\"y\"}', 'happy', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
           '\\xdeadbeef', true, 7, 9000000000, 1.5, 2.25, 'abc', 'ab', '10.0.0.1');",
    );
    let inst = instance(&db, "tables:\n  - source: db\n    source_table: t\n");
    ok(pipeline(&inst, &db, &["apply", "--auto-approve", "-q"]));
    assert_types(
        &inst,
        &[
            ("id", "INTEGER", "1"),
            ("n_ps", "DECIMAL(12,3)", "123456789.123"),
            // numeric without a precision (or above 38 digits) is read as DOUBLE (docs/sources.md).
            ("n_plain", "DOUBLE", "1.5"),
            ("n_big", "DOUBLE", "12345.5"),
            ("ts", "TIMESTAMP", "2024-01-02 03:04:05.123456"),
            (
                "tstz",
                "TIMESTAMP WITH TIME ZONE",
                "2024-01-02 01:04:05.123456+00",
            ),
            ("d", "DATE", "2024-01-02"),
            ("tm", "TIME", "03:04:05"),
            ("iv", "INTERVAL", "1 day 02:00:00"),
            ("j", "JSON", "{\"a\":1}"),
            ("jb", "JSON", "{\"b\": [1, 2]}"),
            ("arr", "INTEGER[]", "[1, 2, 3]"),
            ("tarr", "VARCHAR[]", "[x, y]"),
            ("m", "VARCHAR", "happy"),
            ("u", "UUID", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            ("b", "BLOB", "\\xDE\\xAD\\xBE\\xEF"),
            ("bo", "BOOLEAN", "true"),
            ("sm", "SMALLINT", "7"),
            ("bi", "BIGINT", "9000000000"),
            ("r", "FLOAT", "1.5"),
            ("dp", "DOUBLE", "2.25"),
            ("vc", "VARCHAR", "abc"),
            ("ch", "VARCHAR", "ab"),
            ("ip", "VARCHAR", "10.0.0.1/32"),
        ],
    );
}

#[test]
fn postgres_remote_tables_reach_api_callers_allowed_them_only() {
    let db = PgDb::create();
    db.sql("CREATE TABLE accounts (id int PRIMARY KEY, owner text); INSERT INTO accounts VALUES (1, 'Ann'), (2, 'Bo');");
    let inst = instance(
        &db,
        "tables:\n  - source: db\n    source_table: accounts\n    query_mode: remote\n    access: [finance]\n",
    );
    ok(pipeline(&inst, &db, &["apply", "--auto-approve", "-q"]));
    let finance = token(&inst, "fin", &["finance"]);
    let analyst = token(&inst, "ann", &["analysts"]);
    let password = db.password();
    let d = Daemon::start(&inst, &[], &[(PASSWORD_ENV, password.as_str())]);
    let query = |tok: &str, sql: &str| {
        call(
            "POST",
            &d.url("/api/query"),
            Some(tok),
            Some(&json!({ "sql": sql }).to_string()),
        )
    };
    // Read through the attach, after the sandbox locked external access down.
    let (code, body) = query(&finance, "SELECT owner FROM accounts ORDER BY id");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["rows"], json!([["Ann"], ["Bo"]]));
    let (code, body) = query(&analyst, "SELECT owner FROM accounts");
    assert_eq!(code, 403, "{body}");
    // The attached database itself is no table anyone may name.
    let (code, body) = query(&finance, "SELECT * FROM db__db.public.accounts");
    assert_eq!(code, 403, "{body}");
    let (code, body) = query(
        &finance,
        "SELECT * FROM postgres_query('db__db', 'select 1')",
    );
    assert_eq!(code, 403, "{body}");
}

#[test]
fn a_missing_extension_is_one_error_naming_its_package() {
    let db = PgDb::create();
    db.sql("CREATE TABLE t (id int)");
    let inst = instance(&db, "tables:\n  - source: db\n    source_table: t\n");
    inst.write(
        "config/instance.yaml",
        "name: db\nextensions: { directory: no-extensions-here }\n",
    );
    let out = pipeline(&inst, &db, &["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let text = all_output(&out);
    assert!(
        text.contains("the DuckDB extension `postgres` is not installed in")
            && text.contains("no-extensions-here")
            && text.contains("duckdb-extension-postgres==1.5.5")
            && text.contains("scripts/fetch-extensions"),
        "{text}"
    );
}

#[test]
fn database_connections_never_hold_a_password() {
    let inst = Instance::from_files(&[
        ("config/instance.yaml", "name: db\n"),
        (
            "pipelines/pg.yaml",
            "type: postgres\nconnection:\n  host: db.internal\n  database: shop\n  user: reader\n  password: hunter2\n",
        ),
        (
            "pipelines/my.yaml",
            "type: mysql\nconnection:\n  host: mysql://reader:hunter2@db.internal\n  database: shop\n  user: reader\n",
        ),
        (
            "registry/t.yaml",
            "tables:\n  - source: pg\n    source_table: t\n    query_mode: remote\n  - source: my\n    source_table: t\n    query_mode: materialized\n    query: select 1\n",
        ),
    ]);
    let (status, report) = inst.validate();
    assert_eq!(status, 1, "{report:#}");
    let errors = crate::common::errors(&report);
    let at = |file: &str, line: u64| {
        errors
            .iter()
            .any(|d| d["code"] == "env" && d["file"] == file && d["line"] == line)
    };
    assert!(at("pipelines/pg.yaml", 6), "{report:#}");
    assert!(at("pipelines/my.yaml", 3), "{report:#}");
    assert!(!report.to_string().contains("hunter2"), "{report:#}");
    // Both types run remote and materialized tables: no query_mode error.
    assert!(
        !errors
            .iter()
            .any(|d| d["message"].as_str().unwrap_or("").contains("query_mode")),
        "{report:#}"
    );
}

// ---------------------------------------------------------------- MySQL / MariaDB

#[test]
fn mysql_tables_in_every_query_mode_with_incremental_reruns() {
    all_modes_and_incremental_reruns(&MyDb::create());
}

#[test]
fn mysql_outage_keeps_the_previous_data_and_says_why() {
    outage_keeps_the_previous_data(&MyDb::create());
}

#[test]
fn mysql_discover_lists_tables_keys_and_comments() {
    discover_writes_entries_that_apply(&MyDb::create());
}

#[test]
fn mysql_types_map_faithfully_value_by_value() {
    let db = MyDb::create();
    db.sql(
        "CREATE TABLE t (id int PRIMARY KEY, d1 decimal(12,3), d2 decimal(65,10), dt datetime(6), \
           ts timestamp(3) NULL, da date, tm time, yr year, b1 tinyint(1), ti tinyint, \
           tu tinyint unsigned, iu int unsigned, bu bigint unsigned, e enum('a','b'), s set('x','y'), \
           j json, bl blob, bt bit(3), f float, db double, ch char(3), mi mediumint); \
         SET time_zone = '+00:00'; \
         INSERT INTO t VALUES (1, 123456789.123, 12345.5, '2024-01-02 03:04:05.123456', \
           '2024-01-02 03:04:05.123', '2024-01-02', '27:04:05', 2024, 1, -5, 250, 4000000000, \
           18446744073709551615, 'b', 'x,y', '{\"a\": 1}', 'blob', b'101', 1.5, 2.25, 'ab', -8000000);",
    );
    let inst = instance(&db, "tables:\n  - source: db\n    source_table: t\n");
    ok(pipeline(&inst, &db, &["apply", "--auto-approve", "-q"]));
    assert_types(
        &inst,
        &[
            ("id", "INTEGER", "1"),
            ("d1", "DECIMAL(12,3)", "123456789.123"),
            // DECIMAL above 38 digits is read as DOUBLE (docs/sources.md).
            ("d2", "DOUBLE", "12345.5"),
            ("dt", "TIMESTAMP", "2024-01-02 03:04:05.123456"),
            // TIMESTAMP is an instant: read in UTC, published as TIMESTAMPTZ.
            (
                "ts",
                "TIMESTAMP WITH TIME ZONE",
                "2024-01-02 03:04:05.123+00",
            ),
            ("da", "DATE", "2024-01-02"),
            // TIME is a duration up to ±838 hours: kept as text.
            ("tm", "VARCHAR", "27:04:05"),
            ("yr", "INTEGER", "2024"),
            ("b1", "BOOLEAN", "true"),
            ("ti", "TINYINT", "-5"),
            ("tu", "UTINYINT", "250"),
            ("iu", "UINTEGER", "4000000000"),
            ("bu", "UBIGINT", "18446744073709551615"),
            ("e", "VARCHAR", "b"),
            ("s", "VARCHAR", "x,y"),
            // MariaDB's JSON is LONGTEXT with a check: text (MySQL's own JSON becomes JSON).
            ("j", "VARCHAR", "{\"a\": 1}"),
            ("bl", "BLOB", "blob"),
            ("bt", "BLOB", "\\x05"),
            ("f", "FLOAT", "1.5"),
            ("db", "DOUBLE", "2.25"),
            ("ch", "VARCHAR", "ab"),
            ("mi", "INTEGER", "-8000000"),
        ],
    );
}

#[test]
fn a_missing_extension_is_installed_from_the_instance_repository() {
    let db = PgDb::create();
    db.sql("CREATE TABLE t (id int); INSERT INTO t VALUES (7);");
    let inst = instance(&db, "tables:\n  - source: db\n    source_table: t\n");
    // A local repository in DuckDB's layout, holding the official build.
    let built = extensions_dir().join("v1.5.5/linux_amd64/postgres_scanner.duckdb_extension");
    let repo = inst.path().join("repo/v1.5.5/linux_amd64");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::copy(&built, repo.join("postgres_scanner.duckdb_extension")).unwrap();
    inst.write(
        "config/instance.yaml",
        "name: db\nextensions: { directory: data/extensions, repository: repo }\n",
    );
    ok(pipeline(&inst, &db, &["apply", "--auto-approve", "-q"]));
    assert_eq!(query(&inst, &db, "select id from t"), "id\n7\n");
    assert!(inst
        .path()
        .join("data/extensions/v1.5.5/linux_amd64/postgres_scanner.duckdb_extension")
        .is_file());
}

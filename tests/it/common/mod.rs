//! Shared fixtures: a minimal valid instance in YAML or TOML, and helpers to run `pipeline validate`
//! and find diagnostics in its JSON report.

use assert_cmd::Command;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

pub mod bqemulator;
pub mod daemon;
pub mod db;
pub mod secrets;

pub fn pipeline() -> Command {
    let mut cmd = Command::cargo_bin("pipeline").expect("binary built");
    cmd.env_remove("PIPELINE_DIR").env("NO_COLOR", "1");
    cmd
}

/// The repository root, which is also the demo instance.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fmt {
    Yaml,
    Toml,
}

impl Fmt {
    pub fn ext(self) -> &'static str {
        match self {
            Fmt::Yaml => "yaml",
            Fmt::Toml => "toml",
        }
    }
}

pub struct Instance {
    pub dir: TempDir,
    pub fmt: Fmt,
}

const BASE_YAML: &[(&str, &str)] = &[
    ("config/instance", "name: Test\ntimezone: UTC\n"),
    (
        "pipelines/shop",
        "type: csv\nconnection:\n  path: files\ntransforms:\n  - name: daily\n    sql: select count(*) as n from orders\n",
    ),
    (
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n  - source: shop\n    source_table: customers\n",
    ),
    (
        "metrics/sales/order_count",
        "description: Orders placed\nowner: data@example.com\nsql: select count(*) as value from orders\n",
    ),
];

const BASE_TOML: &[(&str, &str)] = &[
    ("config/instance", "name = \"Test\"\ntimezone = \"UTC\"\n"),
    (
        "pipelines/shop",
        "type = \"csv\"\n[connection]\npath = \"files\"\n[[transforms]]\nname = \"daily\"\nsql = \"select count(*) as n from orders\"\n",
    ),
    (
        "registry/shop",
        "[[tables]]\nsource = \"shop\"\nsource_table = \"orders\"\n[[tables]]\nsource = \"shop\"\nsource_table = \"customers\"\n",
    ),
    (
        "metrics/sales/order_count",
        "description = \"Orders placed\"\nowner = \"data@example.com\"\nsql = \"select count(*) as value from orders\"\n",
    ),
];

impl Instance {
    /// A small valid instance: one csv source with a transform, two tables, one metric.
    pub fn new(fmt: Fmt) -> Self {
        let inst = Instance {
            dir: tempfile::tempdir().expect("temp dir"),
            fmt,
        };
        // Real data behind the two tables: apply extracts them.
        inst.write(
            "files/orders.csv",
            "order_id,customer_id,amount,updated_at\n1,10,5.5,2026-01-01 10:00:00\n2,11,7.25,2026-01-02 11:00:00\n3,10,1.0,2026-01-03 12:00:00\n",
        );
        inst.write("files/customers.csv", "customer_id,name\n10,Ann\n11,Bo\n");
        let base = match fmt {
            Fmt::Yaml => BASE_YAML,
            Fmt::Toml => BASE_TOML,
        };
        for (stem, text) in base {
            inst.write_spec(stem, text);
        }
        inst
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `<stem>.<yaml|toml>`.
    pub fn write_spec(&self, stem: &str, text: &str) {
        self.write(&format!("{stem}.{}", self.fmt.ext()), text);
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// `pipeline --dir <this instance>`, ready for more arguments.
    pub fn cmd(&self) -> Command {
        let mut cmd = pipeline();
        cmd.arg("--dir").arg(self.path()).env_remove("CI");
        cmd
    }

    /// `pipeline plan --format json` (plus `args`); the plan, or a panic with the output.
    pub fn plan(&self, args: &[&str]) -> Value {
        let out = self
            .cmd()
            .args(["plan", "--format", "json"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "plan failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("plan JSON")
    }

    /// `pipeline apply --auto-approve`, expected to succeed.
    pub fn apply(&self) {
        self.cmd()
            .args(["apply", "--auto-approve"])
            .assert()
            .success();
    }

    pub fn state_path(&self) -> PathBuf {
        self.path().join("data/state/system.duckdb")
    }

    /// A read-only connection to this instance's state (drop it before running commands).
    pub fn state(&self) -> duckdb::Connection {
        let config = duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap();
        duckdb::Connection::open_with_flags(self.state_path(), config).expect("state opens")
    }

    /// One integer from a query on the state.
    pub fn state_int(&self, sql: &str) -> i64 {
        self.state().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Runs `pipeline validate --format json`; returns the exit code and the report.
    pub fn validate(&self) -> (i32, Value) {
        let out = pipeline()
            .arg("--dir")
            .arg(self.path())
            .args(["validate", "--format", "json"])
            .output()
            .expect("runs");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "validate printed no JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), report)
    }

    /// Validates and expects failure with a diagnostic of `code` in the spec `stem` at `line`
    /// (and `col` when given); returns that diagnostic.
    pub fn expect_error(&self, code: &str, stem: &str, line: u64, col: Option<u64>) -> Value {
        let (status, report) = self.validate();
        assert_eq!(status, 1, "validate should fail: {report:#}");
        let file = format!("{stem}.{}", self.fmt.ext());
        let found = errors(&report).into_iter().find(|d| {
            d["code"] == code
                && d["file"] == file.as_str()
                && d["line"] == line
                && col.is_none_or(|c| d["column"] == c)
        });
        match found {
            Some(d) => d.clone(),
            None => panic!("no `{code}` error at {file}:{line}:{col:?} in {report:#}"),
        }
    }
}

pub fn errors(report: &Value) -> Vec<&Value> {
    report["diagnostics"]
        .as_array()
        .map(|a| a.iter().filter(|d| d["severity"] == "error").collect())
        .unwrap_or_default()
}

impl Instance {
    /// An instance made only of `files` (path relative to the root, text): no base specs.
    pub fn from_files(files: &[(&str, &str)]) -> Self {
        let inst = Instance {
            dir: tempfile::tempdir().expect("temp dir"),
            fmt: Fmt::Yaml,
        };
        for (rel, text) in files {
            inst.write(rel, text);
        }
        inst
    }

    /// The base instance plus a csv source `big` of five tables `t0`…`t4` of `rows` rows each:
    /// enough work that a sync can be caught while it runs.
    pub fn busy(rows: usize) -> Self {
        let inst = Instance::new(Fmt::Yaml);
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let dir = inst.path().join("big");
        std::fs::create_dir_all(&dir).unwrap();
        let mut registry = String::from("tables:\n");
        for i in 0..5 {
            conn.execute_batch(&format!(
                "COPY (SELECT range AS id, range * 3 AS v, 'row ' || range AS label FROM range({rows})) \
                 TO '{}' (HEADER)",
                dir.join(format!("t{i}.csv")).display()
            ))
            .unwrap();
            registry.push_str(&format!("  - source: big\n    source_table: t{i}\n"));
        }
        inst.write_spec("pipelines/big", "type: csv\nconnection:\n  path: big\n");
        inst.write_spec("registry/big", &registry);
        inst
    }

    pub fn analytics_path(&self) -> PathBuf {
        self.path().join("data/analytics/analytics.duckdb")
    }

    /// analytics.duckdb opened read-only with no setup, like `duckdb -readonly` (drop it before
    /// running commands that publish).
    pub fn analytics(&self) -> duckdb::Connection {
        let config = duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap();
        duckdb::Connection::open_with_flags(self.analytics_path(), config).expect("analytics opens")
    }
}

/// Rows of `pipeline query --format ndjson`, one JSON object each (the query must succeed).
pub fn query(inst: &Instance, sql: &str) -> Vec<Value> {
    let out = inst
        .cmd()
        .args(["query", "--format", "ndjson", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "query `{sql}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Rows of `relation` through `pipeline query`.
pub fn count(inst: &Instance, relation: &str) -> i64 {
    query(inst, &format!("SELECT count(*) AS n FROM {relation}"))[0]["n"]
        .as_i64()
        .unwrap()
}

/// Copies the directory tree at `src` to `dst` (created as needed).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}

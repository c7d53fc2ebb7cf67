//! The analyst side end to end (docs/analyst.md): `login`, `pull`, local and `--server` queries,
//! `metrics` in a workspace, AGENTS.md and `pipeline mcp`, against a real daemon on 127.0.0.1.

use crate::common::daemon::{call, ok, stdout_of, wait_for, Daemon};
use crate::common::{pipeline, Fmt, Instance};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// An analyst's machine: its own config directory (credentials) and a workspace path.
struct Analyst {
    home: tempfile::TempDir,
}

impl Analyst {
    fn new() -> Analyst {
        Analyst {
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> PathBuf {
        self.home.path().join("config")
    }

    fn ws(&self) -> PathBuf {
        self.home.path().join("work")
    }

    /// `pipeline` as this analyst, in `cwd`.
    fn cmd(&self, cwd: &Path) -> assert_cmd::Command {
        let mut cmd = pipeline();
        cmd.current_dir(cwd)
            .env("PIPELINE_CONFIG_DIR", self.config())
            .env_remove("PIPELINE_TOKEN")
            .env_remove("PIPELINE_SERVER")
            .env_remove("CI");
        cmd
    }

    fn pull(&self) -> Value {
        let out = stdout_of(self.cmd(self.home.path()).args([
            "pull",
            "--workspace",
            self.ws().to_str().unwrap(),
            "--format",
            "json",
        ]));
        serde_json::from_str(&out).unwrap()
    }

    /// `pipeline query --format json SQL` in `ws`: rows as arrays in column order.
    fn local_rows(&self, ws: &Path, sql: &str) -> Vec<Vec<Value>> {
        let out = stdout_of(self.cmd(ws).args(["query", "--format", "json", sql]));
        let rows: Vec<serde_json::Map<String, Value>> = serde_json::from_str(&out).unwrap();
        rows.into_iter()
            .map(|r| r.into_iter().map(|(_, v)| v).collect())
            .collect()
    }
}

/// Every file under `dir` with its bytes: what "left as it was" compares.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.ends_with("pull.lock") {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn create_token(inst: &Instance, user: &str, groups: &[&str]) -> (String, String) {
    let mut cmd = inst.cmd();
    cmd.args([
        "admin", "token", "create", "--user", user, "--format", "json",
    ]);
    for g in groups {
        cmd.args(["--group", g]);
    }
    let v: Value = serde_json::from_str(&stdout_of(&mut cmd)).unwrap();
    (
        v["token"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    )
}

const REGISTRY: &str = "tables:
  - source: shop
    source_table: orders
    description: One row per order placed in the shop
    columns: { order_id: Order identifier, amount: Order total in USD }
  - source: shop
    source_table: customers
    description: People who ordered
";

/// The server's rows for `sql`, as the analyst's token sees them.
fn server_rows(d: &Daemon, token: &str, sql: &str) -> Vec<Vec<Value>> {
    let (code, body) = call(
        "POST",
        &d.url("/api/query"),
        Some(token),
        Some(&json!({ "sql": sql }).to_string()),
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_value(body["rows"].clone()).unwrap()
}

#[test]
fn login_pull_query_update_move_revoke_and_outage() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec("registry/shop", REGISTRY);
    inst.apply();
    let (tok, tok_id) = create_token(&inst, "ann", &["analysts"]);
    let mut d = Daemon::start(&inst, &[], &[]);
    let a = Analyst::new();

    // login: the token from stdin, checked, stored 0600, never printed.
    let out = a
        .cmd(a.home.path())
        .args(["login", "--server", &d.base])
        .write_stdin(format!("{tok}\n"))
        .assert()
        .success();
    let printed = String::from_utf8_lossy(&out.get_output().stdout).to_string()
        + &String::from_utf8_lossy(&out.get_output().stderr);
    assert!(!printed.contains(&tok), "{printed}");
    let cred = a.config().join("credentials.toml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cred).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&cred).unwrap().contains(&tok));
    // A wrong token is refused at login and not stored.
    a.cmd(a.home.path())
        .args(["login", "--server", &d.base])
        .write_stdin("not-a-token\n")
        .assert()
        .failure()
        .stderr(predicates::str::contains("refused the token"));
    assert!(std::fs::read_to_string(&cred).unwrap().contains(&tok));

    // First pull: both tables, the transform as a local view, AGENTS.md.
    let report = a.pull();
    let ws = a.ws();
    assert_eq!(report["tables"], 2, "{report}");
    assert_eq!(report["transfers"].as_array().unwrap().len(), 2, "{report}");
    assert!(ws.join("data/shop/orders.parquet").is_file());
    let agents = std::fs::read_to_string(ws.join("AGENTS.md")).unwrap();
    for needle in [
        "### `orders`",
        "One row per order placed in the shop",
        "| `amount` | DOUBLE | Order total in USD |",
        "### `sales/order_count`",
        "select count(*) as value from orders",
        "--server",
        "never invent",
    ] {
        assert!(
            agents.contains(needle),
            "AGENTS.md lacks {needle:?}:\n{agents}"
        );
    }
    assert!(std::fs::read_to_string(ws.join("CLAUDE.md"))
        .unwrap()
        .contains("@AGENTS.md"));

    // The local answer equals the server's for every table and the transform.
    for name in ["orders", "customers", "daily"] {
        let sql = format!("SELECT * FROM {name} ORDER BY ALL");
        assert_eq!(
            a.local_rows(&ws, &sql),
            server_rows(&d, &tok, &sql),
            "{name}"
        );
    }
    // --server goes through /api/query.
    let out = stdout_of(a.cmd(&ws).args([
        "query",
        "--server",
        "--format",
        "json",
        "SELECT count(*) AS n FROM orders",
    ]));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!([{"n": 3}])
    );
    // Column documentation is in DuckDB's catalogue; freshness in _pipeline.tables.
    assert_eq!(
        a.local_rows(
            &ws,
            "SELECT comment FROM duckdb_columns() WHERE table_name = 'orders' AND column_name = 'amount'"
        ),
        vec![vec![json!("Order total in USD")]]
    );
    let fresh = a.local_rows(
        &ws,
        "SELECT name, rows, last_sync IS NOT NULL FROM _pipeline.tables ORDER BY name",
    );
    assert_eq!(
        fresh,
        vec![
            vec![json!("customers"), json!(2), json!(true)],
            vec![json!("orders"), json!(3), json!(true)]
        ]
    );
    // Metrics in the workspace.
    let listed = stdout_of(a.cmd(&ws).args(["metrics", "list"]));
    assert!(listed.contains("sales/order_count"), "{listed}");
    let shown = stdout_of(a.cmd(&ws).args(["metrics", "show", "sales/order_count"]));
    assert!(
        shown.contains("select count(*) as value from orders"),
        "{shown}"
    );
    let ran =
        stdout_of(
            a.cmd(&ws)
                .args(["metrics", "run", "sales/order_count", "--format", "json"]),
        );
    assert_eq!(
        serde_json::from_str::<Value>(&ran).unwrap(),
        json!([{"value": 3}])
    );
    // The same metric run by the server, with the caller's permissions.
    let url = d.url("/api/metrics/sales/order_count/run");
    let (code, body) = call("POST", &url, Some(&tok), Some("{}"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["metric"], "sales/order_count");
    assert_eq!(body["rows"], json!([[3]]), "{body}");
    assert!(body["sql"].as_str().unwrap().contains("count(*)"), "{body}");
    let (code, body) = call("POST", &url, Some(&tok), Some(r#"{"grain": "hour"}"#));
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("hour"),
        "{body}"
    );

    // A second pull transfers nothing and rewrites nothing.
    let before = snapshot(&ws);
    let again = a.pull();
    assert_eq!(
        again["manifest_unchanged"], true,
        "the server answered 304: {again}"
    );
    assert_eq!(again["transfers"], json!([]), "{again}");
    assert_eq!(again["rebuilt"], false, "{again}");
    assert_eq!(snapshot(&ws), before);

    // One table changes on the server: only its file moves.
    inst.write(
        "files/orders.csv",
        "order_id,customer_id,amount,updated_at\n1,10,5.5,2026-01-01 10:00:00\n2,11,7.25,2026-01-02 11:00:00\n3,10,1.0,2026-01-03 12:00:00\n4,11,9.0,2026-01-04 13:00:00\n",
    );
    ok(&inst, &["run", "--table", "orders"]);
    let changed = a.pull();
    assert_eq!(changed["manifest_unchanged"], false, "{changed}");
    let moved: Vec<&str> = changed["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["path"].as_str().unwrap())
        .collect();
    assert_eq!(moved, vec!["data/shop/orders.parquet"], "{changed}");
    assert_eq!(changed["transfers"][0]["reason"], "changed");
    let sql = "SELECT * FROM orders ORDER BY ALL";
    assert_eq!(a.local_rows(&ws, sql), server_rows(&d, &tok, sql));
    assert_eq!(
        a.local_rows(&ws, "SELECT n FROM daily"),
        vec![vec![json!(4)]]
    );

    // A table the analyst may no longer read is removed.
    let registry = inst.path().join("registry/shop.yaml");
    std::fs::write(
        &registry,
        REGISTRY.replace(
            "    description: People who ordered\n",
            "    description: People who ordered\n    access: [finance]\n",
        ),
    )
    .unwrap();
    wait_for(
        Duration::from_secs(20),
        "customers to leave the manifest",
        || {
            let (_, m) = call("GET", &d.url("/api/manifest"), Some(&tok), None);
            (m["tables"].as_array().map(|t| t.len()) == Some(1)).then_some(())
        },
    );
    let removed = a.pull();
    assert_eq!(
        removed["removed"],
        json!(["data/shop/customers.parquet"]),
        "{removed}"
    );
    assert!(!ws.join("data/shop/customers.parquet").exists());
    assert!(!std::fs::read_to_string(ws.join("AGENTS.md"))
        .unwrap()
        .contains("### `customers`"));

    // The workspace still works after a move.
    let moved_ws = a.home.path().join("elsewhere/moved");
    std::fs::create_dir_all(moved_ws.parent().unwrap()).unwrap();
    std::fs::rename(&ws, &moved_ws).unwrap();
    assert_eq!(
        a.local_rows(&moved_ws, "SELECT count(*) FROM orders"),
        vec![vec![json!(4)]]
    );
    std::fs::rename(&moved_ws, &ws).unwrap();

    // A revoked token fails cleanly and leaves the workspace as it was.
    let before = snapshot(&ws);
    ok(&inst, &["admin", "token", "revoke", &tok_id]);
    a.cmd(&ws)
        .args(["pull"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("refused the token"));
    assert_eq!(snapshot(&ws), before);

    // So does an outage.
    d.stop(Duration::from_secs(20));
    a.cmd(&ws)
        .args(["pull"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("cannot reach"));
    assert_eq!(snapshot(&ws), before);
    assert_eq!(
        a.local_rows(&ws, "SELECT count(*) FROM orders"),
        vec![vec![json!(4)]]
    );

    // logout forgets the token.
    stdout_of(a.cmd(&ws).args(["logout"]));
    assert!(!std::fs::read_to_string(&cred).unwrap().contains(&tok));
}

/// One JSON-RPC exchange with a running `pipeline mcp`.
struct Mcp {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    next: u64,
}

impl Mcp {
    fn send(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let msg = json!({"jsonrpc": "2.0", "id": self.next, "method": method, "params": params});
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert_eq!(v["id"], self.next, "{v}");
        v
    }

    fn tool(&mut self, name: &str, arguments: Value) -> Value {
        let v = self.send("tools/call", json!({"name": name, "arguments": arguments}));
        assert_eq!(v["result"]["isError"], false, "{v}");
        v["result"]["structuredContent"].clone()
    }
}

#[test]
fn mcp_answers_over_stdio() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write_spec("registry/shop", REGISTRY);
    inst.apply();
    let (tok, _) = create_token(&inst, "ann", &[]);
    let d = Daemon::start(&inst, &[], &[]);
    let a = Analyst::new();
    a.cmd(a.home.path())
        .args(["login", "--server", &d.base])
        .env("PIPELINE_TOKEN", &tok)
        .assert()
        .success();
    let ws = a.ws();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("pipeline"))
        .args(["mcp", "--workspace", ws.to_str().unwrap()])
        .env("PIPELINE_CONFIG_DIR", a.config())
        .env_remove("PIPELINE_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut mcp = Mcp {
        child,
        out,
        next: 0,
    };
    let init = mcp.send(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "test", "version": "1"}}),
    );
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "pipeline");
    // A notification gets no answer: the next line read is the next request's.
    writeln!(
        mcp.child.stdin.as_mut().unwrap(),
        "{}",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    )
    .unwrap();
    let tools = mcp.send("tools/list", json!({}));
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "list_tables",
            "describe_table",
            "list_metrics",
            "show_metric",
            "query",
            "pull"
        ]
    );
    // Before a pull, tools say what to do.
    let early = mcp.send(
        "tools/call",
        json!({"name": "list_tables", "arguments": {}}),
    );
    assert_eq!(early["result"]["isError"], true, "{early}");
    assert!(early["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("pipeline pull"));

    let pulled = mcp.tool("pull", json!({}));
    assert_eq!(pulled["tables"], 2, "{pulled}");
    let tables = mcp.tool("list_tables", json!({}));
    assert_eq!(tables["tables"][1]["name"], "orders", "{tables}");
    let described = mcp.tool("describe_table", json!({"name": "orders"}));
    let amount = described["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "amount")
        .unwrap();
    assert_eq!(amount["description"], "Order total in USD", "{described}");
    let metrics = mcp.tool("list_metrics", json!({}));
    assert_eq!(metrics["metrics"][0]["id"], "sales/order_count");
    let metric = mcp.tool("show_metric", json!({"id": "sales/order_count"}));
    assert!(metric["sql"].as_str().unwrap().contains("count(*)"));
    let local = mcp.tool(
        "query",
        json!({"sql": "SELECT sum(amount) AS s FROM orders"}),
    );
    assert_eq!(local["rows"], json!([[13.75]]), "{local}");
    assert_eq!(local["where"], "local");
    let remote = mcp.tool(
        "query",
        json!({"sql": "SELECT sum(amount) AS s FROM orders", "server": true}),
    );
    assert_eq!(remote["rows"], local["rows"], "{remote}");
    // Unknown methods and bad JSON are JSON-RPC errors, and the server keeps serving.
    let unknown = mcp.send("resources/list", json!({}));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    writeln!(mcp.child.stdin.as_mut().unwrap(), "{{not json").unwrap();
    let mut line = String::new();
    mcp.out.read_line(&mut line).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap()["error"]["code"],
        -32700
    );
    assert_eq!(mcp.send("ping", json!({}))["result"], json!({}));
    drop(mcp.child.stdin.take());
    assert!(mcp.child.wait().unwrap().success());
    drop(d);
}

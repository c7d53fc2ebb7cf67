//! The BigQuery emulator (PyPI `bqemulator`, DESIGN.md §11) as a test peer: started per test on
//! free ports, loaded through its REST API, killed when dropped.
//!
//! The executable is `PIPELINE_BQEMULATOR`, else the venv `scripts/fetch-bqemulator` keeps in
//! `~/.cache/pipeline` (the script is run once per test process: it installs the venv when it is
//! missing and is quiet otherwise). The emulator is asked for port 0 and tells the ports it bound in
//! its JSON log (`"event": "rest.listen"`), so two tests never race for a port.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The project every test uses.
pub const PROJECT: &str = "demo";

fn executable() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("PIPELINE_BQEMULATOR") {
            return PathBuf::from(p);
        }
        let script = super::repo_root().join("scripts/fetch-bqemulator");
        let out = Command::new(&script)
            .arg("--print")
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        assert!(
            out.status.success(),
            "scripts/fetch-bqemulator failed (the BigQuery tests need bqemulator from PyPI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

pub struct Emulator {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`: the REST root (the connector's `endpoint`).
    pub url: String,
    agent: ureq::Agent,
}

impl Emulator {
    /// Starts an emulator and waits (bounded) until its REST API answers.
    pub fn start() -> Emulator {
        let mut child = Command::new(executable())
            .args(["start", "--rest-port", "0", "--grpc-port", "0"])
            .args(["--project", PROJECT, "--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("bqemulator starts");
        // The log goes to stdout or stderr depending on the version: watch both for the port.
        let (tx, rx) = std::sync::mpsc::channel::<u16>();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                // Keeps draining after the port is known, so the emulator never blocks on a
                // full pipe.
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if v["event"] == "rest.listen" {
                            if let Some(port) = v["port"].as_u64() {
                                let _ = tx.send(port as u16);
                            }
                        }
                    }
                }
            });
        }
        let port = match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                panic!("bqemulator did not report its REST port within 90 s");
            }
        };
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(120))
            .build();
        let emulator = Emulator {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            agent,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while emulator.try_call("GET", "/datasets", None).is_err() {
            assert!(Instant::now() < deadline, "bqemulator never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
        emulator
    }

    fn try_call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let url = format!("{}/bigquery/v2/projects/{PROJECT}{path}", self.url);
        let req = self
            .agent
            .request(method, &url)
            .set("Authorization", "Bearer test-setup");
        let result = match body {
            Some(b) => req.send_json(b.clone()),
            None => req.call(),
        };
        match result {
            Ok(r) => r.into_json::<Value>().map_err(|e| e.to_string()),
            Err(ureq::Error::Status(s, r)) => {
                Err(format!("HTTP {s}: {}", r.into_string().unwrap_or_default()))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// A REST call under `/bigquery/v2/projects/demo`; panics on an error.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body.as_ref())
            .unwrap_or_else(|e| panic!("bqemulator {method} {path}: {e}"))
    }

    pub fn dataset(&self, id: &str) {
        self.call(
            "POST",
            "/datasets",
            Some(json!({"datasetReference": {"projectId": PROJECT, "datasetId": id}})),
        );
    }

    /// Creates a table with `fields` (BigQuery `TableFieldSchema`s).
    pub fn table(&self, dataset: &str, table: &str, fields: Value) {
        self.call(
            "POST",
            &format!("/datasets/{dataset}/tables"),
            Some(json!({
                "tableReference": {"projectId": PROJECT, "datasetId": dataset, "tableId": table},
                "schema": {"fields": fields},
            })),
        );
    }

    /// `tabledata.insertAll` of plain JSON rows.
    pub fn insert(&self, dataset: &str, table: &str, rows: &[Value]) {
        let rows: Vec<Value> = rows.iter().map(|r| json!({"json": r})).collect();
        let answer = self.call(
            "POST",
            &format!("/datasets/{dataset}/tables/{table}/insertAll"),
            Some(json!({"rows": rows})),
        );
        let errors = answer["insertErrors"].as_array().map_or(0, |a| a.len());
        assert_eq!(errors, 0, "insertAll refused rows: {answer}");
    }

    /// Runs a statement (DDL, DML, SELECT) and returns the answer; panics when it failed.
    pub fn query(&self, sql: &str) -> Value {
        let answer = self.call(
            "POST",
            "/queries",
            Some(json!({"query": sql, "useLegacySql": false})),
        );
        assert!(
            answer["errors"].as_array().is_none_or(|e| e.is_empty()),
            "{sql}: {answer}"
        );
        answer
    }

    /// Stops the emulator now (an outage).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Its own process group: the interpreter and anything it started.
            // SAFETY: a plain kill(2) of the group this test started.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.kill();
    }
}

//! A real `pipeline daemon` on 127.0.0.1 (a free port), and small HTTP and CLI helpers for tests that
//! drive it. Tests wait on events or poll with a bound ([`wait_for`]); they never assert that something
//! did not happen after a fixed sleep alone.

use super::Instance;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    log: PathBuf,
}

impl Daemon {
    pub fn start(inst: &Instance, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = inst.path().join("daemon.log");
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("pipeline"));
        cmd.arg("--dir")
            .arg(inst.path())
            .args(["daemon", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .env_remove("CI")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "no address line: {line:?}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Daemon {
            child: Some(child),
            base,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (within `within`).
    pub fn stop(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > within {
                let _ = child.kill();
                panic!(
                    "the daemon did not stop within {within:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// (status, JSON body) of a request; `token` goes in the Authorization header.
pub fn call(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut req = ureq::request(method, url).timeout(Duration::from_secs(30));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let result = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Runs `cmd`, asserting success (assert_cmd prints its output otherwise); its stdout.
pub fn stdout_of(cmd: &mut assert_cmd::Command) -> String {
    let out = cmd.assert().success();
    String::from_utf8_lossy(&out.get_output().stdout).into_owned()
}

/// `pipeline <args>` on `inst`, which must succeed; its stdout.
pub fn ok(inst: &Instance, args: &[&str]) -> String {
    stdout_of(inst.cmd().args(args))
}

pub fn token(inst: &Instance, user: &str, groups: &[&str]) -> String {
    let mut cmd = inst.cmd();
    cmd.args([
        "admin", "token", "create", "--user", user, "--format", "json",
    ]);
    for g in groups {
        cmd.args(["--group", g]);
    }
    let v: Value = serde_json::from_str(&stdout_of(&mut cmd)).unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// Polls `f` until it returns Some, for up to `within`.
pub fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if started.elapsed() > within {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn status(d: &Daemon, t: &str) -> Value {
    let (code, body) = call("GET", &d.url("/api/status"), Some(t), None);
    assert_eq!(code, 200, "{body}");
    body
}

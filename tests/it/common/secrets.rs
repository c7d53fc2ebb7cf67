//! Checking that no credential leaves a trace: in what a command prints at the most verbose
//! logging, in the state, the extracts or analytics.
//!
//! Every connector that sends a credential (a token, a password, temporary cloud credentials, a
//! pre-signed URL) gets an end-to-end test built on [`assert_no_secret_in_logs`]: run a sync that
//! uses the credential against the connector's fake server, and list the secret values the test
//! handed out. New connectors do the same (docs/security.md, "Secrets"):
//!
//! ```ignore
//! let cmd = inst.cmd().args(["apply", "--auto-approve"]).env("MY_TOKEN", fake.token());
//! let out = common::secrets::assert_no_secret_in_logs(&inst, cmd, &[fake.token()]);
//! assert!(out.status.success());
//! ```

use super::Instance;
use assert_cmd::Command;
use std::path::Path;
use std::process::Output;

/// Runs `cmd` (a `pipeline` command on `inst`) with `-vv` and `RUST_LOG=trace`, so that every
/// crate logs everything it would (the HTTP client's request lines and headers included), then
/// asserts that none of `secrets` appears, in any usual encoding (see [`encodings`]), in its stdout
/// or stderr, or in any file of the instance afterwards (state, extracts, Parquet, analytics: raw
/// bytes, and the text of every table of the DuckDB and Parquet files, which DuckDB may store
/// compressed). Also asserts that debug or trace lines were printed at all, so the check cannot
/// pass on silence. Returns the output; the caller checks the exit status.
///
/// Add `--log-format json` to `cmd` to check the JSON log lines (escaping differs) too.
pub fn assert_no_secret_in_logs(inst: &Instance, mut cmd: Command, secrets: &[&str]) -> Output {
    let out = cmd
        .arg("-vv")
        .env("RUST_LOG", "trace")
        .output()
        .expect("pipeline runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        ["DEBUG", "TRACE"]
            .iter()
            .any(|level| printed.contains(level)),
        "no debug or trace line was printed: the check would prove nothing\n{printed}"
    );
    let files = instance_files(inst.path());
    for secret in secrets {
        for form in encodings(secret) {
            assert!(
                !printed.contains(&form),
                "secret {secret:?} (as {form:?}) in the output:\n{printed}"
            );
            for (path, bytes, text) in &files {
                assert!(
                    !bytes.contains(&form),
                    "secret {secret:?} (as {form:?}) in the bytes of {}",
                    path.display()
                );
                assert!(
                    !text.contains(&form),
                    "secret {secret:?} (as {form:?}) in a table of {}",
                    path.display()
                );
            }
        }
    }
    out
}

/// The forms a secret can take in a log line or a file: as is, percent-encoded (both hex cases),
/// form-encoded, JSON-escaped, base64 (standard and URL-safe), and the part of its base64 that is
/// the same wherever it starts inside a longer base64 text (`Authorization: Basic …`).
pub fn encodings(secret: &str) -> Vec<String> {
    assert!(
        secret.len() >= 8,
        "test secrets must be at least 8 characters, or the check finds them by chance"
    );
    let mut forms = vec![secret.to_string()];
    let percent = |form: bool, lower: bool| {
        secret
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                b' ' if form => "+".to_string(),
                _ if lower => format!("%{b:02x}"),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    forms.extend([
        percent(false, false),
        percent(false, true),
        percent(true, false),
    ]);
    let json = serde_json::to_string(secret).expect("a string");
    forms.push(json[1..json.len() - 1].to_string());
    for alphabet in [STANDARD, URL_SAFE] {
        forms.push(base64(secret.as_bytes(), alphabet));
        // Inside a longer text, the secret's base64 depends on what precedes it (modulo 3 bytes)
        // only in its first group of 4 characters, and on what follows only in its last: the
        // middle is the same whatever surrounds it.
        for shift in 0..=2 {
            let mut shifted = vec![b'x'; shift];
            shifted.extend_from_slice(secret.as_bytes());
            let encoded = base64(&shifted, alphabet);
            let start = if shift == 0 { 0 } else { 4 };
            if encoded.len() >= start + 12 {
                forms.push(encoded[start..encoded.len() - 4].to_string());
            }
        }
    }
    forms.sort();
    forms.dedup();
    forms
}

/// Every file under `root`: its path, its bytes (as lossy UTF-8: every ASCII byte stays where it
/// was, and `str::contains` is fast), and for DuckDB and Parquet files the text of all their
/// tables' rows.
fn instance_files(root: &Path) -> Vec<(std::path::PathBuf, String, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("a readable directory")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue; // removed meanwhile (a temp file)
            };
            let text = table_text(&path);
            out.push((path, String::from_utf8_lossy(&bytes).into_owned(), text));
        }
    }
    out
}

/// The rows of every base table of a DuckDB file, or of a Parquet file, as text.
fn table_text(path: &Path) -> String {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let lit = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "''"));
    let conn = duckdb::Connection::open_in_memory().expect("DuckDB in memory");
    let mut relations = Vec::new();
    match ext {
        "parquet" => relations.push(format!("read_parquet({})", lit(path))),
        "duckdb" => {
            if conn
                .execute_batch(&format!("ATTACH {} AS f (READ_ONLY)", lit(path)))
                .is_err()
            {
                return String::new();
            }
            let mut stmt = conn
                .prepare(
                    "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'f'",
                )
                .expect("a catalog query");
            let tables: Vec<(String, String)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect())
                .expect("the catalog");
            for (schema, table) in tables {
                let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
                relations.push(format!("f.{}.{}", q(&schema), q(&table)));
            }
        }
        _ => return String::new(),
    }
    let mut text = String::new();
    for relation in relations {
        let sql = format!("SELECT CAST(t AS VARCHAR) FROM {relation} AS t");
        let Ok(mut stmt) = conn.prepare(&sql) else {
            continue;
        };
        if let Ok(rows) = stmt.query_map([], |r| r.get::<_, Option<String>>(0)) {
            for row in rows.flatten().flatten() {
                text.push_str(&row);
                text.push('\n');
            }
        }
    }
    text
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 without padding.
fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

//! Output helpers shared by commands: the human/json switch, diagnostics, aligned text tables,
//! durations and times.

use crate::diag::{render, Diagnostics};
use crate::instance::{Instance, InstanceError};
use crate::ops::plan::PlanStateError;
use crate::plan::PlanError;
use crate::spec::Specs;
use anyhow::{bail, Result};
use std::io::Write;
use std::time::Duration;

/// The default of every `--lock-timeout`: how long a command waits for a lock another process
/// holds (the state lock of an apply, a source or analytics during a run) before giving up. One
/// value everywhere, long enough to outwait a normal run; the wait is announced and Ctrl-C stops it.
pub const LOCK_TIMEOUT: &str = "10m";

/// `--format` of commands whose output is data.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Human,
    Json,
}

/// `result`'s value; when the specs were invalid, their diagnostics are printed first (see
/// [`invalid_specs`]).
pub fn specs_or_report<T, E: Into<PlanStateError>>(
    result: Result<T, E>,
    format: Format,
) -> Result<T> {
    match result.map_err(Into::into) {
        Ok(v) => Ok(v),
        Err(PlanStateError::Plan(PlanError::Invalid { specs, diags })) => {
            Err(invalid_specs(&specs, &diags, format))
        }
        Err(e) => Err(e.into()),
    }
}

/// Prints why the specs are invalid (all diagnostics), as JSON on stdout or human text on stderr.
/// Returns the error that ends the command.
fn invalid_specs(specs: &Specs, diags: &Diagnostics, format: Format) -> anyhow::Error {
    match format {
        Format::Json => {
            let report = render::json(diags, &specs.files);
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("JSON serializes")
            );
        }
        Format::Human => {
            let mut err = anstream::stderr().lock();
            let _ = write!(err, "{}", render::human(diags, &specs.files));
        }
    }
    anyhow::anyhow!(
        "the specs have {} error(s); nothing was planned or changed (`pipeline validate` shows the same)",
        diags.error_count()
    )
}

/// Whether `-q` was given: errors only. Set once at start-up; commands read it through the
/// printing helpers here rather than threading a flag through every call.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// Prints warnings (if any) on stderr, so they never mix with data on stdout; nothing under `-q`.
pub fn warnings(specs: &Specs, diags: &Diagnostics) {
    if diags.warning_count() > 0 && !quiet() {
        let mut err = anstream::stderr().lock();
        let _ = write!(err, "{}", render::human(diags, &specs.files));
    }
}

/// Problems met opening the published analytics (a remote source that did not attach), on stderr
/// unless `-q`.
pub fn runtime_warnings(problems: &[impl std::fmt::Display]) {
    if quiet() {
        return;
    }
    for p in problems {
        eprintln!("warning: {p} (views that read through it will fail)");
    }
}

/// The instance at `dir`, from its instance file alone. When that is missing or invalid, its
/// diagnostics are printed and the error says so.
pub fn instance(dir: &std::path::Path) -> Result<Instance> {
    Instance::open(dir).map_err(|e| {
        if let InstanceError::Missing { specs, diags } = &e {
            warnings(specs, diags);
        }
        e.into()
    })
}

/// Parses `0`, `500ms`, `10s`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; use e.g. 0, 500ms, 30s, 5m, 1h"))?;
    let d = match unit {
        "" if n == 0 => Duration::ZERO,
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            return Err(format!(
                "`{text}`: unknown unit; use ms, s, m or h (e.g. 30s)"
            ))
        }
    };
    Ok(d)
}

/// Columns aligned with two spaces; the header in bold.
pub struct TextTable {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Per column: right-aligned (numbers) rather than left.
    right: Vec<bool>,
}

impl TextTable {
    pub fn new(headers: Vec<&'static str>) -> Self {
        Self::with_headers(headers.into_iter().map(String::from).collect())
    }

    pub fn with_headers(headers: Vec<String>) -> Self {
        TextTable {
            headers,
            rows: Vec::new(),
            right: Vec::new(),
        }
    }

    /// Which columns are right-aligned (numbers); the others stay left-aligned.
    pub fn align_right(&mut self, right: Vec<bool>) {
        self.right = right;
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut s = String::new();
            for (i, (c, w)) in cells.zip(&widths).enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                let pad = " ".repeat(w.saturating_sub(c.chars().count()));
                if self.right.get(i).copied().unwrap_or(false) {
                    s.push_str(&pad);
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    if i + 1 < widths.len() {
                        s.push_str(&pad);
                    }
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let bold = anstyle::Style::new().bold();
        let mut out = format!(
            "{bold}{}{bold:#}",
            line(&mut self.headers.iter().map(String::as_str)).trim_end()
        );
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(&mut r.iter().map(String::as_str)));
        }
        out
    }
}

/// `s` characters at most, with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut + "…"
}

/// Fails unless the answer to `question` on stdin is exactly `yes`.
pub fn confirm(question: &str) -> Result<()> {
    let mut err = anstream::stderr().lock();
    write!(
        err,
        "{question}\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
    )?;
    err.flush()?;
    drop(err);
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        bail!("apply cancelled: nothing was changed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").unwrap_err().contains("unit"));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("not a duration"));
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = TextTable::new(vec!["id", "rows"]);
        t.row(vec!["shop.orders".into(), "3684".into()]);
        t.row(vec!["a".into(), "1".into()]);
        let text = anstream::adapter::strip_str(&t.render()).to_string();
        assert_eq!(
            text,
            "id           rows\nshop.orders  3684\na            1\n"
        );
    }
}

//! Renders [`Diagnostics`] as human text, JSON or GitHub workflow annotations.
//!
//! Human output is styled with ANSI codes unconditionally; the CLI writes it through `anstream`, which
//! strips the styling when stdout is not a terminal or `NO_COLOR` is set.

use super::source::{SourceMap, Span};
use super::{Code, Diagnostic, Diagnostics, Severity};
use anstyle::{AnsiColor, Style};
use serde::Serialize;
use std::fmt::Write;

const ERROR: Style = AnsiColor::Red.on_default().bold();
const WARNING: Style = AnsiColor::Yellow.on_default().bold();
const GUTTER: Style = AnsiColor::Blue.on_default().bold();
const BOLD: Style = Style::new().bold();
const HELP: Style = AnsiColor::Cyan.on_default().bold();

fn severity_style(s: Severity) -> Style {
    match s {
        Severity::Error => ERROR,
        Severity::Warning => WARNING,
    }
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

fn code_str(code: Code) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `file:line:col`, or just the file when there is no position.
pub fn location(sources: &SourceMap, span: Span) -> String {
    let f = sources.get(span.file);
    format!("{}:{}:{}", f.display, span.start.line, span.start.col)
}

/// rustc-style text: header, location, the offending line with a caret, help and notes.
pub fn human(diags: &Diagnostics, sources: &SourceMap) -> String {
    let mut out = String::new();
    for d in diags.iter() {
        human_one(&mut out, d, sources);
        out.push('\n');
    }
    out
}

/// The line up to its key's `:` or `=`, the value replaced: enough to recognise the line.
fn redact(line: &str) -> String {
    match line.find([':', '=']) {
        Some(i) => format!("{} <redacted>", &line[..=i]),
        None => "<redacted>".to_string(),
    }
}

fn human_one(out: &mut String, d: &Diagnostic, sources: &SourceMap) {
    let sev = severity_style(d.severity);
    let _ = writeln!(
        out,
        "{sev}{}[{}]{sev:#}{BOLD}: {}{BOLD:#}",
        severity_word(d.severity),
        code_str(d.code),
        d.message
    );
    let Some(span) = d.span else {
        if let Some(hint) = &d.hint {
            let _ = writeln!(out, "  {HELP}help{HELP:#}: {hint}");
        }
        return;
    };
    let file = sources.get(span.file);
    let line_no = span.start.line.to_string();
    let pad = " ".repeat(line_no.len());
    let _ = writeln!(
        out,
        "{pad}{GUTTER}-->{GUTTER:#} {}",
        location(sources, span)
    );
    if let Some(text) = file.line(span.start.line) {
        let text = if d.secret_line {
            redact(text)
        } else {
            text.replace('\t', " ")
        };
        let start = span.start.col.saturating_sub(1) as usize;
        let width = if span.end.line == span.start.line && span.end.col > span.start.col {
            (span.end.col - span.start.col) as usize
        } else {
            // A span running over several lines: underline to the end of the first one.
            text.chars().count().saturating_sub(start).max(1)
        };
        let _ = writeln!(out, "{pad} {GUTTER}|{GUTTER:#}");
        let _ = writeln!(out, "{GUTTER}{line_no} |{GUTTER:#} {text}");
        let _ = writeln!(
            out,
            "{pad} {GUTTER}|{GUTTER:#} {}{sev}{}{sev:#}",
            " ".repeat(start),
            "^".repeat(width)
        );
    }
    if let Some(hint) = &d.hint {
        let _ = writeln!(out, "{pad} {GUTTER}={GUTTER:#} {HELP}help{HELP:#}: {hint}");
    }
    for r in &d.related {
        let _ = writeln!(
            out,
            "{pad} {GUTTER}={GUTTER:#} {BOLD}note{BOLD:#}: {} ({})",
            r.message,
            location(sources, r.span)
        );
    }
}

/// The JSON document printed by `validate --format json` (documented in docs/validate.md).
#[derive(Serialize)]
pub struct JsonReport<'a> {
    /// Format version of this document; bumped only on incompatible changes.
    pub version: u32,
    pub valid: bool,
    pub error_count: usize,
    pub warning_count: usize,
    pub files_checked: usize,
    pub diagnostics: Vec<JsonDiagnostic<'a>>,
}

#[derive(Serialize)]
pub struct JsonDiagnostic<'a> {
    pub severity: Severity,
    pub code: Code,
    pub message: &'a str,
    pub file: Option<&'a str>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub end_line: Option<u32>,
    pub end_column: Option<u32>,
    pub hint: Option<&'a str>,
    pub related: Vec<JsonRelated<'a>>,
}

#[derive(Serialize)]
pub struct JsonRelated<'a> {
    pub message: &'a str,
    pub file: &'a str,
    pub line: u32,
    pub column: u32,
}

/// The report as a JSON value; callers may add fields (e.g. `objects`) before printing.
pub fn json(diags: &Diagnostics, sources: &SourceMap) -> serde_json::Value {
    let report = JsonReport {
        version: 1,
        valid: !diags.has_errors(),
        error_count: diags.error_count(),
        warning_count: diags.warning_count(),
        files_checked: sources.len(),
        diagnostics: diags
            .iter()
            .map(|d| JsonDiagnostic {
                severity: d.severity,
                code: d.code,
                message: &d.message,
                file: d.span.map(|s| sources.get(s.file).display.as_str()),
                line: d.span.map(|s| s.start.line),
                column: d.span.map(|s| s.start.col),
                end_line: d.span.map(|s| s.end.line),
                end_column: d.span.map(|s| s.end.col),
                hint: d.hint.as_deref(),
                related: d
                    .related
                    .iter()
                    .map(|r| JsonRelated {
                        message: &r.message,
                        file: sources.get(r.span.file).display.as_str(),
                        line: r.span.start.line,
                        column: r.span.start.col,
                    })
                    .collect(),
            })
            .collect(),
    };
    serde_json::to_value(&report).unwrap_or_default()
}

/// GitHub Actions workflow commands (`::error file=…,line=…::message`), one per diagnostic.
pub fn github(diags: &Diagnostics, sources: &SourceMap) -> String {
    let mut out = String::new();
    for d in diags.iter() {
        let mut message = d.message.clone();
        if let Some(hint) = &d.hint {
            message.push_str("\nhelp: ");
            message.push_str(hint);
        }
        for r in &d.related {
            let _ = write!(
                message,
                "\nnote: {} ({})",
                r.message,
                location(sources, r.span)
            );
        }
        let mut props = Vec::new();
        if let Some(s) = d.span {
            props.push(format!(
                "file={}",
                escape_property(&sources.get(s.file).display)
            ));
            props.push(format!("line={}", s.start.line));
            props.push(format!("col={}", s.start.col));
            if s.end.line >= s.start.line {
                props.push(format!("endLine={}", s.end.line));
                if s.end.line == s.start.line {
                    props.push(format!("endColumn={}", s.end.col));
                }
            }
        }
        props.push(format!(
            "title={}",
            escape_property(&format!("pipeline validate: {}", code_str(d.code)))
        ));
        let _ = writeln!(
            out,
            "::{} {}::{}",
            severity_word(d.severity),
            props.join(","),
            escape_data(&message)
        );
    }
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::source::{Pos, SourceFile};

    fn sample() -> (Diagnostics, SourceMap) {
        let mut sources = SourceMap::default();
        let file = sources.add(SourceFile::new(
            "registry/a.yaml".into(),
            "registry/a.yaml".into(),
            "tables:\n  - id: x\n    descripton: y\n".into(),
        ));
        let mut diags = Diagnostics::default();
        diags
            .error(
                Code::UnknownKey,
                Span {
                    file,
                    start: Pos { line: 3, col: 5 },
                    end: Pos { line: 3, col: 15 },
                },
                "unknown key `descripton` in table",
            )
            .hint = Some("did you mean `description`?".into());
        (diags, sources)
    }

    #[test]
    fn human_output_shows_line_and_caret() {
        let (diags, sources) = sample();
        let text = human(&diags, &sources);
        let plain = anstream::adapter::strip_str(&text).to_string();
        assert!(plain.contains("error[unknown-key]: unknown key `descripton` in table"));
        assert!(plain.contains("--> registry/a.yaml:3:5"));
        assert!(plain.contains("3 |     descripton: y"));
        assert!(plain.contains("  |     ^^^^^^^^^^\n"), "{plain}");
        assert!(plain.contains("help: did you mean `description`?"));
    }

    #[test]
    fn github_annotations_escape_properties_and_data() {
        let (diags, sources) = sample();
        let text = github(&diags, &sources);
        assert_eq!(
            text,
            "::error file=registry/a.yaml,line=3,col=5,endLine=3,endColumn=15,\
             title=pipeline validate%3A unknown-key::unknown key `descripton` in table\
             %0Ahelp: did you mean `description`?\n"
        );
    }

    #[test]
    fn json_report_is_stable() {
        let (diags, sources) = sample();
        let v = json(&diags, &sources);
        assert_eq!(v["version"], 1);
        assert_eq!(v["valid"], false);
        assert_eq!(v["diagnostics"][0]["code"], "unknown-key");
        assert_eq!(v["diagnostics"][0]["file"], "registry/a.yaml");
        assert_eq!(v["diagnostics"][0]["line"], 3);
        assert_eq!(v["diagnostics"][0]["column"], 5);
    }
}

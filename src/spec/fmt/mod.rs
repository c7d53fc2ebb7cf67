//! `pipeline fmt`: spec files rewritten in one canonical layout, every comment kept (docs/fmt.md).
//!
//! [`format_file`] is the whole of it for one file: parse with the spec parser (a file that does not
//! parse gets the same diagnostic `validate` gives), rewrite ([`yaml`], [`toml`]), then check the
//! rewrite before anyone writes it: parsed again by the same parser it must hold the same values
//! (mapping keys in any order) and the same comments. A rewrite that fails the check is a bug of
//! this module and is refused ([`FmtError::Changed`]), never written.

pub mod order;
pub mod toml;
pub mod yaml;

use super::load::Kind;
use super::node::{Node, Value};
use crate::diag::source::{FileId, SourceFile};
use crate::diag::Diagnostic;
use order::Schema;
use std::io::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum FmtError {
    /// Not valid YAML or TOML: the spec parser's diagnostic.
    #[error("{}", .0.message)]
    Invalid(Box<Diagnostic>),
    /// Valid, but written with something fmt does not rewrite; the file is left as it is.
    #[error("line {line}, column {col}: {what}")]
    Unsupported { line: u32, col: u32, what: String },
    /// The rewrite would mean something else, or lose a comment: a bug in fmt, so nothing is written.
    #[error("formatting would change {0} (a bug in pipeline fmt; please report it); the file was left as it is")]
    Changed(&'static str),
}

impl From<yaml::Unsupported> for FmtError {
    fn from(u: yaml::Unsupported) -> Self {
        FmtError::Unsupported {
            line: u.line,
            col: u.col,
            what: u.what,
        }
    }
}

/// The schema describing the top of a spec file of `kind` (for key order).
pub fn schema_of(kind: &Kind) -> Schema {
    use crate::spec::fields;
    Schema::Object(match kind {
        Kind::Instance => &fields::INSTANCE,
        Kind::Source { .. } => &fields::SOURCE,
        Kind::Registry => &fields::REGISTRY,
        Kind::Metric { .. } => &fields::METRIC,
    })
}

fn is_toml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "toml")
}

/// The canonical text of one spec file (`file`, known to the caller's source map as `id`), checked
/// to mean what the file means. Equal to the file's text when it is already formatted.
pub fn format_file(file: &SourceFile, id: FileId, schema: Schema) -> Result<String, FmtError> {
    let toml = is_toml(&file.path);
    let parse = |text: &str| -> Result<Node, Box<Diagnostic>> {
        if toml {
            let f = SourceFile::new(file.display.clone(), file.path.clone(), text.to_string());
            super::toml::parse(&f, id).map_err(Box::new)
        } else {
            super::yaml::parse(text, id).map_err(Box::new)
        }
    };
    let before = parse(&file.text).map_err(FmtError::Invalid)?;
    let (formatted, comments_before, comments_after) = if toml {
        let out = toml::format(&file.text, schema)?;
        let (a, b) = (toml::comments(&file.text), toml::comments(&out));
        (out, a, b)
    } else {
        let out = yaml::format(&file.text, schema)?;
        let a = yaml::comments(&file.text)?;
        let b = yaml::comments(&out).map_err(|_| FmtError::Changed("the file's syntax"))?;
        (out, a, b)
    };
    let after = parse(&formatted).map_err(|_| FmtError::Changed("the file's syntax"))?;
    if !same(&before, &after) {
        return Err(FmtError::Changed("what the file means"));
    }
    let mut a = comments_before;
    let mut b = comments_after;
    a.sort();
    b.sort();
    if a != b {
        return Err(FmtError::Changed("the file's comments"));
    }
    Ok(formatted)
}

/// Whether two parsed files hold the same values: mappings compared by key, whatever the order.
pub fn same(a: &Node, b: &Node) -> bool {
    match (&a.value, &b.value) {
        (Value::Float(x), Value::Float(y)) => {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        }
        (Value::Seq(x), Value::Seq(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| {
                    y.iter()
                        .find(|(k2, _)| k2.name == k.name)
                        .is_some_and(|(_, v2)| same(v, v2))
                })
        }
        (x, y) => x == y,
    }
}

/// Replaces the file at `path` with `text`: written beside it, flushed, then renamed over it, so a
/// reader (the daemon's watcher, an editor) sees the old file or the new one, never half of one. A
/// symbolic link is followed (the loader admitted it because it stays inside the instance root), so
/// the link itself stays; the file's permissions are kept.
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let target = std::fs::canonicalize(path)?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.fmt-{}.tmp", std::process::id()));
    let permissions = std::fs::metadata(&target)?.permissions();
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(permissions)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A unified diff (3 lines of context) from `old` to `new`, with `name` in its header; empty when
/// they are equal.
pub fn unified_diff(name: &str, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let mut out = String::new();
    for line in difflib::unified_diff(
        &a,
        &b,
        &format!("a/{name}"),
        &format!("b/{name}"),
        "",
        "",
        3,
    ) {
        // difflib ends the `---`/`+++` lines with a tab before their (empty) dates.
        let line = if line.starts_with("--- ") || line.starts_with("+++ ") {
            line.trim_end().to_string()
        } else {
            line
        };
        out.push_str(&line);
        if !line.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// A line of formatted output, before blank lines are tidied and comments aligned ([`render`]).
#[derive(Debug)]
pub(crate) enum Line {
    /// Content with its end-of-line comment.
    Text(String, Option<String>),
    Blank,
    /// A full-line comment, indented.
    Comment(String),
    /// A line of a multi-line string, written as it is.
    Verbatim(String),
}

/// The text of formatted lines: runs of blank lines collapsed to one, none at the start or the end,
/// one final line break; end-of-line comments aligned within each paragraph (the lines between blank
/// lines and full-line comments), two spaces after the paragraph's longest commented line.
pub(crate) fn render(raw: Vec<Line>) -> String {
    let mut lines: Vec<Line> = Vec::with_capacity(raw.len());
    for l in raw {
        let skip = matches!(l, Line::Blank)
            && (lines.is_empty() || matches!(lines.last(), Some(Line::Blank)));
        if !skip {
            lines.push(l);
        }
    }
    while matches!(lines.last(), Some(Line::Blank)) {
        lines.pop();
    }
    let breaks = |l: &Line| match l {
        Line::Blank | Line::Comment(_) => true,
        Line::Verbatim(s) => s.is_empty(),
        Line::Text(..) => false,
    };
    let mut out = String::new();
    let mut start = 0;
    while start < lines.len() {
        let mut end = start;
        while end < lines.len() && !breaks(&lines[end]) {
            end += 1;
        }
        let width = lines[start..end]
            .iter()
            .filter_map(|l| match l {
                Line::Text(s, Some(_)) => Some(last_line_width(s.trim_end())),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        for l in &lines[start..=end.min(lines.len() - 1)] {
            match l {
                Line::Text(s, Some(c)) => {
                    out.push_str(s.trim_end());
                    out.push_str(&" ".repeat(width + 2 - last_line_width(s.trim_end())));
                    out.push_str(c);
                }
                Line::Text(s, None) => out.push_str(s.trim_end()),
                Line::Comment(s) | Line::Verbatim(s) => out.push_str(s),
                Line::Blank => {}
            }
            out.push('\n');
        }
        start = end + 1;
    }
    out
}

/// Width in characters of the last line of `s` (a line may end a multi-line string).
fn last_line_width(s: &str) -> usize {
    s.rsplit('\n').next().unwrap_or("").chars().count()
}

#[cfg(test)]
mod tests;

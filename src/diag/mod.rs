//! Diagnostics: what is wrong with the specs, where, and how to fix it.
//!
//! Validation never stops at the first problem: every stage pushes [`Diagnostic`]s into a [`Diagnostics`]
//! list, and the CLI renders the whole list at the end in one of three formats (see [`render`]): human
//! (rustc-style, with the offending line and a caret), JSON (a stable, documented structure) and GitHub
//! workflow annotations. All three come from the same data, so they never disagree. [`source`] holds the
//! loaded files and positions every diagnostic points into.

pub mod render;
pub mod source;

use serde::Serialize;
use source::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A stable, machine-readable name for the kind of problem (part of the JSON output contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The file cannot be read, is not valid YAML/TOML, or is bigger than spec files may be.
    Syntax,
    /// A spec file or directory that is not read: a symbolic link leading outside the instance root,
    /// or not a regular file (a FIFO, a device). Reported by path only; its content is never shown.
    UnsafeFile,
    /// A value has the wrong type (a string where a list is expected, …).
    Type,
    /// A key the schema does not know.
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value outside what the key accepts (enum member, range, format).
    InvalidValue,
    /// A name that breaks the naming rules.
    InvalidName,
    /// Two objects with the same id or name.
    Duplicate,
    /// A reference to a source, table or transform that does not exist.
    UnknownReference,
    /// A schedule that cannot be parsed.
    Schedule,
    /// An unknown IANA time zone.
    Timezone,
    /// Environment variables: bad names, unset variables, inline secrets.
    Env,
    /// SQL that DuckDB cannot parse, or that is not a single SELECT.
    Sql,
    /// A metric template that does not render.
    Template,
    /// SQL that parses but does not bind against the published schema (an unknown column or table,
    /// a type error): found by `metrics check`, which needs data.
    Bind,
    /// Transforms that depend on each other in a loop.
    Cycle,
    /// A path in a spec that does not exist.
    Path,
    /// A spec file in a place the loader does not read.
    Layout,
}

/// A secondary location that helps explain a diagnostic ("first defined here").
#[derive(Clone, Debug, PartialEq)]
pub struct Related {
    pub message: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    /// Where the problem is; `None` only for problems that belong to no file (e.g. a missing directory).
    pub span: Option<Span>,
    /// What to do about it.
    pub hint: Option<String>,
    pub related: Vec<Related>,
    /// The line holds a secret: renderers show where, never the line's text (CI logs are logs).
    pub secret_line: bool,
}

impl Diagnostic {
    pub fn error(code: Code, span: impl Into<Option<Span>>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span: span.into(),
            hint: None,
            related: Vec::new(),
            secret_line: false,
        }
    }

    pub fn warning(code: Code, span: impl Into<Option<Span>>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, span, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_hint_opt(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    pub fn with_related(mut self, span: Span, message: impl Into<String>) -> Self {
        self.related.push(Related {
            message: message.into(),
            span,
        });
        self
    }
}

/// The diagnostics collected during one run.
#[derive(Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn error(&mut self, code: Code, span: Span, message: impl Into<String>) -> &mut Diagnostic {
        self.items.push(Diagnostic::error(code, span, message));
        self.items.last_mut().expect("just pushed")
    }

    pub fn warning(
        &mut self,
        code: Code,
        span: Span,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.items.push(Diagnostic::warning(code, span, message));
        self.items.last_mut().expect("just pushed")
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    /// Drops every diagnostic but the errors (what `-q` shows).
    pub fn retain_errors(&mut self) {
        self.items.retain(|d| d.severity == Severity::Error);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn error_count(&self) -> usize {
        self.count(Severity::Error)
    }

    pub fn warning_count(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, severity: Severity) -> usize {
        self.items.iter().filter(|d| d.severity == severity).count()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Keeps, among the diagnostics pushed since index `from`, those for which `keep` holds.
    pub fn retain_from(&mut self, from: usize, mut keep: impl FnMut(&Diagnostic) -> bool) {
        let mut i = 0;
        self.items.retain(|d| {
            i += 1;
            i <= from || keep(d)
        });
    }

    /// Errors first, then warnings; within each, by file and position, so output is stable.
    pub fn sort(&mut self) {
        self.items.sort_by(|a, b| {
            let key = |d: &Diagnostic| {
                (
                    d.severity,
                    d.span.map(|s| (s.file, s.start)),
                    d.message.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        self.items.dedup();
    }
}

impl std::ops::Deref for Diagnostics {
    type Target = [Diagnostic];
    fn deref(&self) -> &[Diagnostic] {
        &self.items
    }
}

/// "did you mean `x`?" for a misspelt word, when a candidate is close enough to be a plausible typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word_lc = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&word_lc, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A hint sentence from [`suggest`], or a list of what is accepted when nothing is close.
pub fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    match suggest(word, candidates.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("expected one of: {}", candidates.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        let keys = ["description", "display_name", "owner"];
        assert_eq!(suggest("descripton", keys), Some("description"));
        assert_eq!(suggest("owmer", keys), Some("owner"));
        assert_eq!(suggest("zzz", keys), None);
        assert_eq!(
            did_you_mean("zzz", &keys),
            "expected one of: description, display_name, owner"
        );
    }
}

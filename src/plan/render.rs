//! The human form of a plan: changes by object, then tasks, then one summary line.
//!
//! Colour is emitted as ANSI styles; the caller writes through `anstream`, which drops them when the
//! output is not a terminal or `NO_COLOR` is set.

use super::diff::{Change, FieldChange};
use super::impact::{Impact, Label};
use super::{Plan, Summary};
use crate::registry::document::Action;
use anstyle::{AnsiColor, Style};
use serde_json::Value;
use std::fmt::Write;

fn style(action: Action) -> Style {
    match action {
        Action::Create => AnsiColor::Green.on_default(),
        Action::Update => AnsiColor::Yellow.on_default(),
        Action::Replace => AnsiColor::Magenta.on_default(),
        Action::Delete => AnsiColor::Red.on_default(),
    }
}

const BOLD: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();

/// The whole plan as text.
pub fn human(plan: &Plan) -> String {
    let mut out = String::new();
    if !plan.has_changes() {
        out.push_str("No changes. The registry matches the specs.\n");
        return out;
    }
    let _ = writeln!(
        out,
        "Changes to the registry ({}create, {}update, {}replace, {}delete):\n",
        sym(Action::Create),
        sym(Action::Update),
        sym(Action::Replace),
        sym(Action::Delete),
    );
    for c in &plan.changes {
        change(&mut out, c);
    }
    if !plan.tasks.is_empty() {
        let _ = writeln!(out, "{BOLD}Tasks apply will queue{BOLD:#} (in order):");
        let width = plan
            .tasks
            .iter()
            .map(|t| t.kind.as_str().len() + 1 + t.target.len())
            .max()
            .unwrap_or(0);
        for (i, t) in plan.tasks.iter().enumerate() {
            let name = format!("{} {}", t.kind.as_str(), t.target);
            let _ = writeln!(
                out,
                "  {:>3}. {name:<width$}  {DIM}{}{DIM:#}",
                i + 1,
                t.reason
            );
        }
        out.push('\n');
    }
    out.push_str(&summary_line(&plan.summary));
    out.push('\n');
    if plan.summary.breaking > 0 {
        let r = AnsiColor::Red.on_default().bold();
        let _ = writeln!(
            out,
            "{r}{} breaking change(s){r:#}: `pipeline apply` refuses them unless given \
             --allow-breaking.",
            plan.summary.breaking
        );
    }
    out
}

/// One line per breaking change and per object it breaks, for error messages and the daemon's
/// status: ``transform `facts` (pipelines/shop.yaml:6) breaks transform `daily`
/// (pipelines/shop.yaml:8:34): Binder Error: …``.
pub fn breaking_lines(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for c in plan.breaking() {
        let Some(i) = &c.impact else { continue };
        for b in &i.breaks {
            out.push(format!(
                "{} `{}` ({}) breaks {} `{}` ({}): {}",
                c.kind, c.id, i.at, b.kind, b.id, b.at, b.message
            ));
        }
    }
    out
}

fn label_tag(i: &Impact) -> String {
    let s = match i.label {
        Label::Breaking => AnsiColor::Red.on_default().bold(),
        Label::NonBreaking => DIM,
        Label::Unknown => AnsiColor::Yellow.on_default(),
    };
    format!("  {s}[{}]{s:#}", i.label)
}

/// What binding found: the objects a change breaks, why it is unknown, warnings.
fn impact_lines(out: &mut String, i: &Impact) {
    if !i.breaks.is_empty() {
        let r = AnsiColor::Red.on_default().bold();
        let _ = writeln!(
            out,
            "      {r}! breaking{r:#} ({}): {} object(s) would not bind:",
            i.at,
            i.breaks.len()
        );
        for b in &i.breaks {
            let _ = writeln!(
                out,
                "          {} {}  {DIM}{}{DIM:#}\n            {}",
                b.kind, b.id, b.at, b.message
            );
        }
    }
    let y = AnsiColor::Yellow.on_default();
    for n in &i.notes {
        let _ = writeln!(out, "      {y}? unknown{y:#}: {n}");
    }
    for w in &i.warnings {
        let _ = writeln!(out, "      {y}! warning{y:#}: {w}");
    }
}

fn sym(a: Action) -> String {
    let s = style(a);
    format!("{s}{}{s:#} ", a.symbol())
}

/// "Plan: 3 to add, 1 to change, 0 to destroy."
pub fn summary_line(s: &Summary) -> String {
    format!(
        "{BOLD}Plan:{BOLD:#} {} to add, {} to change, {} to destroy.",
        s.add, s.change, s.destroy
    )
}

fn change(out: &mut String, c: &Change) {
    let s = style(c.action);
    let note = match c.action {
        Action::Replace => " (must be replaced: its data is rebuilt from scratch)",
        _ => "",
    };
    let tag = c.impact.as_ref().map(label_tag).unwrap_or_default();
    let _ = writeln!(
        out,
        "  {s}{}{s:#} {BOLD}{} {}{BOLD:#}  {DIM}{}{note}{DIM:#}{tag}",
        c.action.symbol(),
        c.kind,
        c.id,
        c.file
    );
    match c.action {
        Action::Create => {
            if let Some(obj) = &c.object {
                let width = obj.fields().keys().map(String::len).max().unwrap_or(0);
                for (k, v) in obj.fields() {
                    value_lines(out, &format!("{k:<width$} = "), v, "      ");
                }
            }
        }
        Action::Update | Action::Replace => {
            for f in &c.fields {
                field(out, f);
            }
        }
        Action::Delete => {}
    }
    if let Some(i) = &c.impact {
        impact_lines(out, i);
    }
    out.push('\n');
}

fn field(out: &mut String, f: &FieldChange) {
    let tag = if f.forces_replace {
        let m = AnsiColor::Magenta.on_default();
        format!("  {m}# forces replacement{m:#}")
    } else {
        String::new()
    };
    let name = match &f.key {
        Some(k) => format!("{}{}", f.field, entry_suffix(k)),
        None => f.field.clone(),
    };
    // A map entry that appears or goes away reads as an addition or a removal, as a resource does.
    let action = match (&f.key, &f.old, &f.new) {
        (Some(_), Value::Null, _) => Action::Create,
        (Some(_), _, Value::Null) => Action::Delete,
        _ => Action::Update,
    };
    let y = style(action);
    let mark = match action {
        Action::Create => "+",
        Action::Delete => "-",
        _ => "~",
    };
    match (&f.old, &f.new) {
        (Value::String(a), Value::String(b)) if a.contains('\n') || b.contains('\n') => {
            let _ = writeln!(out, "      {y}~{y:#} {name}:{tag}");
            line_diff(out, a, b);
        }
        (_, new) if action == Action::Create => {
            let _ = writeln!(out, "      {y}{mark}{y:#} {name} = {}{tag}", inline(new));
        }
        _ if action == Action::Delete => {
            let _ = writeln!(
                out,
                "      {y}{mark}{y:#} {name}  {DIM}(was {}){DIM:#}{tag}",
                inline(&f.old)
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "      {y}{mark}{y:#} {name}: {} → {}{tag}",
                inline(&f.old),
                inline(&f.new)
            );
        }
    }
}

/// `.key` for a plain name, `["key"]` for anything else (a column name with a space or a dot).
fn entry_suffix(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        format!(".{key}")
    } else {
        format!("[{key:?}]")
    }
}

/// A value on one line: strings quoted, lists and maps as compact JSON, unset as `(unset)`.
fn inline(v: &Value) -> String {
    match v {
        Value::Null => "(unset)".into(),
        Value::String(s) if s.contains('\n') => format!("{:?}", s),
        other => other.to_string(),
    }
}

/// `prefix value`, with a multi-line string continued on indented lines.
fn value_lines(out: &mut String, prefix: &str, v: &Value, indent: &str) {
    match v {
        Value::String(s) if s.contains('\n') => {
            let _ = writeln!(out, "{indent}{prefix}<<");
            for line in s.lines() {
                let _ = writeln!(out, "{indent}    {line}");
            }
        }
        _ => {
            let _ = writeln!(out, "{indent}{prefix}{}", inline(v));
        }
    }
}

/// A line-level diff of two texts (SQL), unchanged lines kept for context.
fn line_diff(out: &mut String, old: &str, new: &str) {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Longest common subsequence table; spec SQL is short, so O(n·m) is fine.
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (del, add) = (style(Action::Delete), style(Action::Create));
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "          {}", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "        {del}- {}{del:#}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "        {add}+ {}{add:#}", b[j]);
            j += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(s: &str) -> String {
        anstream::adapter::strip_str(s).to_string()
    }

    #[test]
    fn sql_changes_show_as_a_line_diff() {
        let mut out = String::new();
        line_diff(
            &mut out,
            "select a\nfrom t\nwhere x",
            "select a, b\nfrom t\nwhere x",
        );
        assert_eq!(
            plain(&out),
            "        - select a\n        + select a, b\n          from t\n          where x\n"
        );
    }

    #[test]
    fn summary_counts_words() {
        let s = Summary {
            add: 3,
            change: 1,
            destroy: 0,
            breaking: 0,
        };
        assert_eq!(
            plain(&summary_line(&s)),
            "Plan: 3 to add, 1 to change, 0 to destroy."
        );
    }
}

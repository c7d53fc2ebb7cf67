//! SQL text from checked parts. Every identifier and literal the engine splices into SQL goes through
//! here: identifiers only after [`names::is_identifier`] accepted
//! them, literals with their quotes doubled. Nothing else builds SQL from names or paths.

use crate::names;
use std::path::Path;

/// A double-quoted identifier, or `None` when `name` is not a safe identifier.
pub fn ident(name: &str) -> Option<String> {
    names::is_identifier(name).then(|| format!("\"{name}\""))
}

/// Any column name DuckDB itself reported (`DESCRIBE`), double-quoted with inner quotes doubled.
/// Data brings column names we never validated ("Order Id", `a"b`); quoted this way DuckDB reads
/// them back as exactly that name. Never for names from specs: those go through [`ident`].
pub fn column(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' => out.push_str("\"\""),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A single-quoted string literal. NUL bytes cannot appear in a DuckDB literal; they are dropped
/// (no path or value we accept contains one).
pub fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A path as a string literal.
pub fn path(p: &Path) -> String {
    literal(&p.to_string_lossy())
}

/// A JSON scalar from a spec (a filter value) as a SQL literal: numbers and booleans as such,
/// everything else as a string. `None` for arrays, objects and null.
pub fn json_scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) => Some(literal(s)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_must_be_safe_and_literals_are_escaped() {
        assert_eq!(ident("orders").as_deref(), Some("\"orders\""));
        assert_eq!(ident("x\"; drop table y; --"), None);
        assert_eq!(ident("1abc"), None);
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(column("Order \"Id\""), "\"Order \"\"Id\"\"\"");
        assert_eq!(literal("a\0b"), "'ab'");
        assert_eq!(
            json_scalar(&serde_json::json!("o'k")).as_deref(),
            Some("'o''k'")
        );
        assert_eq!(json_scalar(&serde_json::json!(3.5)).as_deref(), Some("3.5"));
        assert_eq!(json_scalar(&serde_json::json!(null)), None);
    }
}

//! TOML → [`Node`], keeping the position of every key and value.
//!
//! Uses the `toml` crate's span-preserving document parser (`DeTable`), so TOML specs get the same
//! file:line:col diagnostics as YAML ones. Datetimes become strings (no spec key takes a datetime).

use super::node::{Key, Node, Value};
use super::source::{FileId, SourceFile, Span};
use crate::diag::{Code, Diagnostic};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

pub fn parse(file: &SourceFile, id: FileId) -> Result<Node, Diagnostic> {
    let span_of = |r: std::ops::Range<usize>| Span {
        file: id,
        start: file.pos_of_byte(r.start),
        end: file.pos_of_byte(r.end.max(r.start)),
    };
    match DeTable::parse(&file.text) {
        Ok(table) => {
            let span = span_of(table.span());
            Ok(Node {
                value: table_value(table.into_inner(), &span_of),
                span,
            })
        }
        Err(e) => {
            let span = e.span().map(span_of).unwrap_or(Span::file_start(id));
            let message = e.message().trim().to_string();
            Err(Diagnostic::error(
                Code::Syntax,
                span,
                format!("invalid TOML: {message}"),
            ))
        }
    }
}

fn table_value(table: DeTable<'_>, span_of: &dyn Fn(std::ops::Range<usize>) -> Span) -> Value {
    Value::Map(
        table
            .into_iter()
            .map(|(k, v)| {
                let key = Key {
                    span: span_of(k.span()),
                    name: k.into_inner().into_owned(),
                };
                (key, node(v, span_of))
            })
            .collect(),
    )
}

fn node(v: Spanned<DeValue<'_>>, span_of: &dyn Fn(std::ops::Range<usize>) -> Span) -> Node {
    let span = span_of(v.span());
    let value = match v.into_inner() {
        DeValue::String(s) => Value::Str(s.into_owned()),
        DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
            .map(Value::Int)
            .unwrap_or_else(|_| Value::Str(i.to_string())),
        DeValue::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse()
            .map(Value::Float)
            .unwrap_or(Value::Float(f64::NAN)),
        DeValue::Boolean(b) => Value::Bool(b),
        DeValue::Datetime(d) => Value::Str(d.to_string()),
        DeValue::Array(items) => Value::Seq(items.into_iter().map(|i| node(i, span_of)).collect()),
        DeValue::Table(t) => table_value(t, span_of),
    };
    Node { value, span }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::source::Pos;

    #[test]
    fn positions_point_at_keys_and_values() {
        let f = SourceFile::new(
            "a.toml".into(),
            "a.toml".into(),
            "name = \"shop\"\n[[tables]]\nid = \"x\"\nn = 5\n".into(),
        );
        let n = parse(&f, FileId(0)).unwrap();
        let Value::Seq(tables) = &n.get("tables").unwrap().value else {
            panic!()
        };
        let v = tables[0].get("n").unwrap();
        assert_eq!(v.value, Value::Int(5));
        assert_eq!(v.span.start, Pos { line: 4, col: 5 });
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let f = SourceFile::new("a.toml".into(), "a.toml".into(), "a = 1\nb = [1,\n".into());
        let e = parse(&f, FileId(0)).unwrap_err();
        assert_eq!(e.code, Code::Syntax);
        assert!(e.span.unwrap().start.line >= 2);
    }
}

//! TOML → [`Node`], keeping the position of every key and value.
//!
//! Uses the `toml` crate's span-preserving document parser (`DeTable`), so TOML specs get the same
//! file:line:col diagnostics as YAML ones. Datetimes become strings (no spec key takes a datetime).

use super::limits::{self, Cost, Exceeded, Meter, Stop, MAX_DEPTH};
use super::node::{Key, Node, Value};
use crate::diag::source::{FileId, SourceFile, Span};
use crate::diag::{Code, Diagnostic};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Parses a TOML file on its own (within the per-file limits).
pub fn parse(file: &SourceFile, id: FileId) -> Result<Node, Diagnostic> {
    match parse_metered(file, id, &mut Meter::file()) {
        Ok(node) => Ok(node),
        Err(Stop::Invalid(d)) => Err(*d),
        Err(Stop::Interrupted) => unreachable!("a file meter is never interrupted"),
    }
}

/// Parses a TOML file, charging every value it builds to `meter`. TOML has no aliases, so the
/// parsed document is no bigger than the file; the meter keeps TOML and YAML under the same limits.
pub fn parse_metered(file: &SourceFile, id: FileId, meter: &mut Meter) -> Result<Node, Stop> {
    let span_of = |r: std::ops::Range<usize>| Span {
        file: id,
        start: file.pos_of_byte(r.start),
        end: file.pos_of_byte(r.end.max(r.start)),
    };
    match DeTable::parse(&file.text) {
        Ok(table) => {
            let span = span_of(table.span());
            let mut build = Build {
                span_of: &span_of,
                meter,
            };
            build.charge(Cost::COLLECTION, span, 0)?;
            Ok(Node {
                value: build.table(table.into_inner(), 1)?,
                span,
            })
        }
        Err(e) => {
            let span = e.span().map(span_of).unwrap_or(Span::file_start(id));
            let message = e.message().trim().to_string();
            Err(Diagnostic::error(Code::Syntax, span, format!("invalid TOML: {message}")).into())
        }
    }
}

struct Build<'s, 'm, 'a> {
    span_of: &'s dyn Fn(std::ops::Range<usize>) -> Span,
    meter: &'m mut Meter<'a>,
}

impl Build<'_, '_, '_> {
    /// Charges one value at `depth` (the number of tables and arrays around it).
    fn charge(&mut self, cost: Cost, span: Span, depth: usize) -> Result<(), Stop> {
        let result = if depth > MAX_DEPTH {
            Err(Exceeded::Depth)
        } else {
            self.meter.charge(cost)
        };
        result.map_err(|e| limits::diagnostic(e, span, "this value", cost))
    }

    fn table(&mut self, table: DeTable<'_>, depth: usize) -> Result<Value, Stop> {
        let mut entries = Vec::with_capacity(table.len());
        for (k, v) in table {
            let key = Key {
                span: (self.span_of)(k.span()),
                name: k.into_inner().into_owned(),
            };
            self.charge(Cost::scalar(key.name.len()), key.span, depth)?;
            entries.push((key, self.node(v, depth)?));
        }
        Ok(Value::Map(entries))
    }

    fn node(&mut self, v: Spanned<DeValue<'_>>, depth: usize) -> Result<Node, Stop> {
        let span = (self.span_of)(v.span());
        let cost = match v.get_ref() {
            DeValue::String(s) => Cost::scalar(s.len()),
            DeValue::Array(_) | DeValue::Table(_) => Cost::COLLECTION,
            _ => Cost::scalar(0),
        };
        let inner = matches!(v.get_ref(), DeValue::Array(_) | DeValue::Table(_));
        self.charge(cost, span, depth + usize::from(inner))?;
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
            DeValue::Array(items) => Value::Seq(
                items
                    .into_iter()
                    .map(|i| self.node(i, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            DeValue::Table(t) => self.table(t, depth + 1)?,
        };
        Ok(Node { value, span })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::source::Pos;

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

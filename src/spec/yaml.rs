//! YAML → [`Node`], keeping the position of every key and value.
//!
//! Built on `saphyr-parser`'s event stream (the maintained successor of yaml-rust; serde_yaml is
//! deprecated) because it reports a span for every event. Scalars resolve by the YAML 1.2 core schema:
//! `yes`/`no`/`on`/`off` stay strings. Anchors and aliases are expanded; a file must hold one document.

use super::node::{Key, Node, Value};
use super::source::{FileId, Pos, Span};
use crate::diag::{Code, Diagnostic};
use saphyr_parser::{Event, Parser, ScalarStyle, Span as YSpan};
use std::collections::HashMap;

/// Parses a YAML document. An empty file yields a null node.
pub fn parse(text: &str, file: FileId) -> Result<Node, Diagnostic> {
    let mut builder = Builder {
        file,
        anchors: HashMap::new(),
        stack: Vec::new(),
        root: None,
        documents: 0,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(item) = parser.next_event() {
        match item {
            Ok((event, span)) => builder.event(event, span)?,
            Err(e) => {
                let m = e.marker();
                let pos = Pos {
                    line: m.line() as u32,
                    col: m.col() as u32 + 1,
                };
                let span = Span {
                    file,
                    start: pos,
                    end: Pos {
                        line: pos.line,
                        col: pos.col + 1,
                    },
                };
                return Err(Diagnostic::error(
                    Code::Syntax,
                    span,
                    format!("invalid YAML: {}", e.info()),
                )
                .with_hint_opt(syntax_hint(text, pos)));
            }
        }
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Null,
        span: Span::file_start(file),
    }))
}

/// The commonest YAML trap in these specs: cron expressions and `@daily` start with characters that YAML
/// reserves (`*` is an alias, `@` is reserved), so they must be quoted.
fn syntax_hint(text: &str, pos: Pos) -> Option<String> {
    let line = text.lines().nth(pos.line.saturating_sub(1) as usize)?;
    let value = line
        .split_once(':')
        .map(|(_, v)| v.trim_start())
        .unwrap_or("");
    if value.starts_with('*') || value.starts_with('@') || value.starts_with('`') {
        Some(format!(
            "values starting with `{}` must be quoted in YAML, e.g. \"{}\"",
            &value[..1],
            value.trim_end()
        ))
    } else {
        Some("check the indentation and quoting around this line".into())
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        start: Pos,
        anchor: usize,
    },
    Map {
        entries: Vec<(Key, Node)>,
        pending_key: Option<Key>,
        start: Pos,
        anchor: usize,
    },
}

struct Builder {
    file: FileId,
    anchors: HashMap<usize, Node>,
    stack: Vec<Frame>,
    root: Option<Node>,
    documents: usize,
}

impl Builder {
    fn pos(&self, m: saphyr_parser::Marker) -> Pos {
        Pos {
            line: m.line() as u32,
            col: m.col() as u32 + 1,
        }
    }

    fn span(&self, s: YSpan) -> Span {
        Span {
            file: self.file,
            start: self.pos(s.start),
            end: self.pos(s.end),
        }
    }

    fn event(&mut self, event: Event<'_>, span: YSpan) -> Result<(), Diagnostic> {
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Diagnostic::error(
                        Code::Syntax,
                        self.span(span),
                        "a spec file must hold a single YAML document",
                    )
                    .with_hint("remove the `---` separator, or split the documents into files"));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let span = self.span(span);
                let value = resolve_scalar(&text, style, tag.as_deref().map(|t| t.suffix.as_str()));
                let node = Node { value, span };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.add(node)?;
            }
            Event::Alias(id) => {
                let span = self.span(span);
                let mut node = self.anchors.get(&id).cloned().ok_or_else(|| {
                    Diagnostic::error(Code::Syntax, span, "alias to an unknown anchor")
                })?;
                node.span = span;
                self.add(node)?;
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                items: Vec::new(),
                start: self.pos(span.start),
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                entries: Vec::new(),
                pending_key: None,
                start: self.pos(span.start),
                anchor,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let end = self.pos(span.end);
                let frame = self.stack.pop().expect("balanced YAML events");
                let (value, start, anchor) = match frame {
                    Frame::Seq {
                        items,
                        start,
                        anchor,
                    } => (Value::Seq(items), start, anchor),
                    Frame::Map {
                        entries,
                        start,
                        anchor,
                        ..
                    } => (Value::Map(entries), start, anchor),
                };
                let node = Node {
                    value,
                    span: Span {
                        file: self.file,
                        start,
                        end: end.max(start),
                    },
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.add(node)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn add(&mut self, node: Node) -> Result<(), Diagnostic> {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    let name = match &node.value {
                        Value::Str(s) => s.clone(),
                        Value::Int(i) => i.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Null => String::new(),
                        _ => {
                            return Err(Diagnostic::error(
                                Code::Syntax,
                                node.span,
                                "mapping keys must be plain strings",
                            ))
                        }
                    };
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == name) {
                        return Err(Diagnostic::error(
                            Code::Duplicate,
                            node.span,
                            format!("duplicate key `{name}`"),
                        )
                        .with_related(first.span, "first given here")
                        .with_hint("each key may appear once in a mapping; remove one"));
                    }
                    *pending_key = Some(Key {
                        name,
                        span: node.span,
                    });
                }
                Some(key) => entries.push((key, node)),
            },
        }
        Ok(())
    }
}

/// YAML 1.2 core-schema resolution of a scalar.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Value {
    match tag {
        Some("str") => return Value::Str(text.to_owned()),
        Some("int") => {
            if let Ok(i) = text.parse() {
                return Value::Int(i);
            }
        }
        Some("float") => {
            if let Ok(f) = text.parse() {
                return Value::Float(f);
            }
        }
        _ => {}
    }
    if style != ScalarStyle::Plain {
        return Value::Str(text.to_owned());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse() {
            return Value::Int(i);
        }
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Int(i);
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Value::Int(i);
        }
    }
    let looks_float = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().any(|b| b.is_ascii_digit())
        && digits.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if looks_float {
        if let Ok(f) = text.parse() {
            return Value::Float(f);
        }
    }
    Value::Str(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Node {
        parse(text, FileId(0)).expect("valid yaml")
    }

    #[test]
    fn keys_and_values_keep_positions() {
        let n = p("name: shop\ntables:\n  - id: a\n    n: 12\n");
        let Value::Map(entries) = &n.value else {
            panic!()
        };
        assert_eq!(entries[1].0.name, "tables");
        assert_eq!(entries[1].0.span.start, Pos { line: 2, col: 1 });
        let item = &n.get("tables").unwrap();
        let Value::Seq(items) = &item.value else {
            panic!()
        };
        let n_value = items[0].get("n").unwrap();
        assert_eq!(n_value.value, Value::Int(12));
        assert_eq!(n_value.span.start, Pos { line: 4, col: 8 });
    }

    #[test]
    fn core_schema_scalars() {
        let n = p("a: yes\nb: true\nc: '1'\nd: 1.5\ne: ~\nf: 0755\n");
        assert_eq!(n.get("a").unwrap().value, Value::Str("yes".into()));
        assert_eq!(n.get("b").unwrap().value, Value::Bool(true));
        assert_eq!(n.get("c").unwrap().value, Value::Str("1".into()));
        assert_eq!(n.get("d").unwrap().value, Value::Float(1.5));
        assert_eq!(n.get("e").unwrap().value, Value::Null);
        assert_eq!(n.get("f").unwrap().value, Value::Int(755));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = parse("a: 1\nb: 2\na: 3\n", FileId(0)).unwrap_err();
        assert_eq!(e.code, Code::Duplicate);
        assert_eq!(e.span.unwrap().start.line, 3);
        assert_eq!(e.related[0].span.start.line, 1);
    }

    #[test]
    fn unquoted_cron_gets_a_quoting_hint() {
        let e = parse("schedule: */5 * * * *\n", FileId(0)).unwrap_err();
        assert_eq!(e.code, Code::Syntax);
        assert_eq!(e.span.unwrap().start.line, 1);
        assert!(e.hint.unwrap().contains("must be quoted"));
    }

    #[test]
    fn anchors_expand() {
        let n = p("a: &x [1, 2]\nb: *x\n");
        assert_eq!(n.get("b").unwrap().to_json(), serde_json::json!([1, 2]));
    }
}

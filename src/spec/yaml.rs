//! YAML → [`Node`], keeping the position of every key and value.
//!
//! Built on `saphyr-parser`'s event stream (the maintained successor of yaml-rust; serde_yaml is
//! deprecated) because it reports a span for every event. Scalars resolve by the YAML 1.2 core schema:
//! `yes`/`no`/`on`/`off` stay strings. Anchors and aliases are expanded; a file must hold one document.
//! Expansion is metered ([`super::limits`]): an alias is charged the size of what it copies before it
//! is copied, so a few hundred bytes of nested aliases stop with an error instead of gigabytes.

use super::limits::{self, Cost, Exceeded, Meter, Stop, MAX_DEPTH};
use super::node::{Key, Node, Value};
use crate::diag::source::{FileId, Pos, Span};
use crate::diag::{Code, Diagnostic};
use saphyr_parser::{Event, Parser, ScalarStyle, Span as YSpan};
use std::collections::HashMap;

/// Parses a YAML document on its own (within the per-file limits). An empty file yields a null node.
pub fn parse(text: &str, file: FileId) -> Result<Node, Diagnostic> {
    match parse_metered(text, file, &mut Meter::file()) {
        Ok(node) => Ok(node),
        Err(Stop::Invalid(d)) => Err(*d),
        // Only a shared meter interrupts.
        Err(Stop::Interrupted) => unreachable!("a file meter is never interrupted"),
    }
}

/// Parses a YAML document, charging every value it builds to `meter`.
pub fn parse_metered(text: &str, file: FileId, meter: &mut Meter) -> Result<Node, Stop> {
    let mut builder = Builder {
        file,
        anchors: HashMap::new(),
        stack: Vec::new(),
        root: None,
        documents: 0,
        meter,
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
                .with_hint_opt(syntax_hint(text, pos))
                .into());
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

/// A list or mapping being built, with what the meter had counted when it opened (so its subtree's
/// cost is known when it closes, in case an alias copies it) and how deep the deepest collection
/// inside it is so far.
struct Frame {
    kind: FrameKind,
    start: Pos,
    anchor: usize,
    cost_before: Cost,
    height: usize,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(Key, Node)>,
        pending_key: Option<Key>,
        /// Key → index in `entries`, built once the mapping is large enough for a linear duplicate
        /// search to cost more than the index (a file may hold a mapping of 100,000 keys).
        index: Option<HashMap<String, usize>>,
    },
}

/// Mappings with more keys than this look duplicates up in an index.
const INDEX_KEYS_FROM: usize = 32;

/// An anchored node, with what copying it costs.
struct Anchored {
    node: Node,
    cost: Cost,
    /// Collections nested in it, itself included (0 for a scalar).
    height: usize,
}

struct Builder<'m, 'a> {
    file: FileId,
    anchors: HashMap<usize, Anchored>,
    stack: Vec<Frame>,
    root: Option<Node>,
    documents: usize,
    meter: &'m mut Meter<'a>,
}

impl Builder<'_, '_> {
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

    fn charge(&mut self, cost: Cost, span: Span, what: &str) -> Result<(), Stop> {
        self.meter
            .charge(cost)
            .map_err(|e| limits::diagnostic(e, span, what, cost))
    }

    fn event(&mut self, event: Event<'_>, span: YSpan) -> Result<(), Stop> {
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Diagnostic::error(
                        Code::Syntax,
                        self.span(span),
                        "a spec file must hold a single YAML document",
                    )
                    .with_hint("remove the `---` separator, or split the documents into files")
                    .into());
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let span = self.span(span);
                let cost = Cost::scalar(text.len());
                self.charge(cost, span, "this value")?;
                let value = resolve_scalar(&text, style, tag.as_deref().map(|t| t.suffix.as_str()));
                let node = Node { value, span };
                if anchor > 0 {
                    self.anchors.insert(
                        anchor,
                        Anchored {
                            node: node.clone(),
                            cost,
                            height: 0,
                        },
                    );
                }
                self.add(node, 0)?;
            }
            Event::Alias(id) => {
                let span = self.span(span);
                let Some(anchored) = self.anchors.get(&id) else {
                    return Err(Diagnostic::error(
                        Code::Syntax,
                        span,
                        "alias to an unknown anchor",
                    )
                    .into());
                };
                let (cost, height) = (anchored.cost, anchored.height);
                if self.stack.len() + height > MAX_DEPTH {
                    return Err(limits::diagnostic(
                        Exceeded::Depth,
                        span,
                        "this alias",
                        cost,
                    ));
                }
                // Charged before the copy is made: the copy is what would exhaust memory.
                self.charge(cost, span, "this alias")?;
                let mut node = self.anchors[&id].node.clone();
                node.span = span;
                self.add(node, height)?;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                let start_span = self.span(span).point();
                if self.stack.len() >= MAX_DEPTH {
                    return Err(limits::diagnostic(
                        Exceeded::Depth,
                        start_span,
                        "this value",
                        Cost::COLLECTION,
                    ));
                }
                let cost_before = self.meter.used();
                self.charge(Cost::COLLECTION, start_span, "this value")?;
                let kind = if matches!(event, Event::SequenceStart(..)) {
                    FrameKind::Seq(Vec::new())
                } else {
                    FrameKind::Map {
                        entries: Vec::new(),
                        pending_key: None,
                        index: None,
                    }
                };
                self.stack.push(Frame {
                    kind,
                    start: start_span.start,
                    anchor,
                    cost_before,
                    height: 0,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let end = self.pos(span.end);
                let frame = self.stack.pop().expect("balanced YAML events");
                let value = match frame.kind {
                    FrameKind::Seq(items) => Value::Seq(items),
                    FrameKind::Map { entries, .. } => Value::Map(entries),
                };
                let node = Node {
                    value,
                    span: Span {
                        file: self.file,
                        start: frame.start,
                        end: end.max(frame.start),
                    },
                };
                let height = frame.height + 1;
                if frame.anchor > 0 {
                    self.anchors.insert(
                        frame.anchor,
                        Anchored {
                            node: node.clone(),
                            cost: self.meter.used().minus(frame.cost_before),
                            height,
                        },
                    );
                }
                self.add(node, height)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    /// Adds a finished node of `height` to the collection being built (or makes it the root).
    fn add(&mut self, node: Node, height: usize) -> Result<(), Stop> {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        frame.height = frame.height.max(height);
        match &mut frame.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map {
                entries,
                pending_key,
                index,
            } => match pending_key.take() {
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
                            )
                            .into())
                        }
                    };
                    if index.is_none() && entries.len() >= INDEX_KEYS_FROM {
                        let built = entries
                            .iter()
                            .enumerate()
                            .map(|(i, (k, _))| (k.name.clone(), i))
                            .collect();
                        *index = Some(built);
                    }
                    let first = match index {
                        Some(index) => index.get(&name).map(|&i| &entries[i].0),
                        None => entries.iter().map(|(k, _)| k).find(|k| k.name == name),
                    };
                    if let Some(first) = first {
                        return Err(Diagnostic::error(
                            Code::Duplicate,
                            node.span,
                            format!("duplicate key `{name}`"),
                        )
                        .with_related(first.span, "first given here")
                        .with_hint("each key may appear once in a mapping; remove one")
                        .into());
                    }
                    *pending_key = Some(Key {
                        name,
                        span: node.span,
                    });
                }
                Some(key) => {
                    if let Some(index) = index {
                        index.insert(key.name.clone(), entries.len());
                    }
                    entries.push((key, node));
                }
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

//! YAML spec files in the canonical layout, with every comment kept.
//!
//! The spec parser ([`crate::spec::yaml`]) builds values and drops comments, so this module reads the
//! same `saphyr-parser` event stream into a small lossless layer of its own: collections (block or
//! flow), entries, and each scalar as its *source text* (so quoting, escapes and tags are written back
//! exactly as they were). Comments and blank lines are found in the text between the scalars and
//! attached to the entry they precede (end-of-line comments to the entry on their line), then the tree
//! is printed in the canonical layout described in docs/fmt.md.
//!
//! What this layer cannot write back faithfully (anchors and aliases, whose order matters once keys
//! move; tags on collections; comments inside a flow collection; explicit indentation indicators of
//! block scalars) is refused as [`Unsupported`]: the file is left as it is.

use super::order::Schema;
use super::Line;
use saphyr_parser::{Event, Parser, ScalarStyle, Span as YSpan};
use std::collections::HashMap;

/// Longest line (in characters) a flow collection (`[a, b]`, `{ k: v }`) may take; a longer one is
/// written in block style.
pub const MAX_WIDTH: usize = 100;

/// Indentation step.
const STEP: usize = 2;

/// Why a file is left as it is: where (1-based line and column) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub line: u32,
    pub col: u32,
    pub what: String,
}

/// Writes `text` (a YAML spec of the kind `schema` describes) in the canonical layout. The text must
/// already be valid YAML (the caller parses it with the spec parser first, for its diagnostics).
pub fn format(text: &str, schema: Schema) -> Result<String, Unsupported> {
    let mut doc = read(text)?;
    let mut out = Printer::default();
    out.trivia(&doc.take_header(), 0, true);
    match &doc.root {
        None => {}
        Some(root) => out.document(root, &doc, schema),
    }
    out.trivia(
        doc.trailing
            .get(&ROOT_TRAILING)
            .map_or(&[][..], Vec::as_slice),
        0,
        false,
    );
    Ok(out.finish())
}

/// Every comment of a YAML text, in order (each with its `#`, without trailing blanks): what
/// formatting must keep.
pub fn comments(text: &str) -> Result<Vec<String>, Unsupported> {
    Ok(read(text)?.comments)
}

// ------------------------------------------------------------------------------------------ reading

#[derive(Debug)]
enum Node {
    Scalar(Scalar),
    Map(Coll<Entry>),
    Seq(Coll<Entry>),
}

#[derive(Debug)]
struct Coll<T> {
    id: usize,
    flow: bool,
    items: Vec<T>,
}

/// A map entry (with its key) or a sequence item (without).
#[derive(Debug)]
struct Entry {
    id: usize,
    key: Option<Scalar>,
    value: Node,
}

#[derive(Debug)]
struct Scalar {
    /// The scalar as written (quotes, escapes, tag included); for block scalars their header.
    raw: String,
    /// The scalar's value (to find a source's `type`).
    value: String,
    /// Content lines of a block scalar (`|`, `>`), without their indentation.
    block: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Trivia {
    Blank,
    Comment(String),
}

/// Trailing trivia of the document, after every entry.
const ROOT_TRAILING: usize = usize::MAX;

struct Doc {
    root: Option<Node>,
    /// Full-line comments and blank lines before an entry, by entry id.
    before: HashMap<usize, Vec<Trivia>>,
    /// End-of-line comment of an entry's first line, by entry id.
    eol: HashMap<usize, String>,
    /// Trivia after a collection's last entry (comments indented as its entries), by collection id.
    trailing: HashMap<usize, Vec<Trivia>>,
    comments: Vec<String>,
}

impl Doc {
    /// The file's header, which stays at the top whatever key comes first: the comments before the
    /// first key down to the last blank line above it, or else the editor modeline
    /// (`# yaml-language-server: $schema=…`). The comments right above the first key are its own.
    fn take_header(&mut self) -> Vec<Trivia> {
        let Some(Node::Map(m)) = &self.root else {
            return Vec::new();
        };
        let Some(first) = m.items.first() else {
            return Vec::new();
        };
        let Some(before) = self.before.get_mut(&first.id) else {
            return Vec::new();
        };
        let split = match before.iter().rposition(|t| *t == Trivia::Blank) {
            Some(blank) => blank + 1,
            None => before
                .iter()
                .take_while(
                    |t| matches!(t, Trivia::Comment(c) if c.starts_with("# yaml-language-server:")),
                )
                .count(),
        };
        before.drain(..split).collect()
    }
}

/// Char index → byte offset, and line starts, of the text.
struct Text<'a> {
    text: &'a str,
    bytes_of: Vec<usize>,
    line_starts: Vec<usize>,
}

impl<'a> Text<'a> {
    fn new(text: &'a str) -> Self {
        let mut bytes_of: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        bytes_of.push(text.len());
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Text {
            text,
            bytes_of,
            line_starts,
        }
    }

    fn byte(&self, m: saphyr_parser::Marker) -> usize {
        self.bytes_of[m.index().min(self.bytes_of.len() - 1)]
    }

    /// 0-based line of a byte offset.
    fn line_of(&self, byte: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= byte) - 1
    }

    /// The text of a 0-based line, without its line break.
    fn line(&self, line: usize) -> &'a str {
        let start = self.line_starts[line];
        let end = self
            .line_starts
            .get(line + 1)
            .map_or(self.text.len(), |e| e - 1);
        self.text[start..end].trim_end_matches('\r')
    }

    fn lines(&self) -> usize {
        self.line_starts.len()
    }

    /// 0-based column (in characters) of a byte offset.
    fn col_of(&self, byte: usize) -> usize {
        let start = self.line_starts[self.line_of(byte)];
        self.text[start..byte].chars().count()
    }
}

/// Where each block entry starts, for attaching comments.
struct Place {
    id: usize,
    line: usize,
    col: usize,
    /// The block collections around it, innermost first, with the column of their entries.
    chain: Vec<(usize, usize)>,
}

struct Frame {
    id: usize,
    flow: bool,
    map: bool,
    start: usize,
    items: Vec<Entry>,
    pending_key: Option<Scalar>,
    /// Where the pending key started.
    key_start: usize,
    /// Where each entry started (key or dash), in step with `items`.
    starts: Vec<usize>,
}

struct Reader<'t, 'a> {
    t: &'t Text<'a>,
    next_id: usize,
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Byte ranges of scalar text (comments are looked for outside them).
    covered: Vec<(usize, usize)>,
    /// Byte ranges of flow collections (no comment may be inside).
    flows: Vec<(usize, usize)>,
    /// 0-based line ranges (inclusive) inside a scalar or flow collection: no blank line or comment
    /// there is trivia.
    inside: Vec<(usize, usize)>,
    /// Entry id → byte offset where it starts, and the collection it is in.
    places: Vec<(usize, usize, usize)>,
    /// Collection id → (parent collection id, column of its entries, flow).
    colls: HashMap<usize, (Option<usize>, Option<usize>, bool)>,
    last_end: usize,
}

fn unsupported(t: &Text, byte: usize, what: impl Into<String>) -> Unsupported {
    Unsupported {
        line: t.line_of(byte) as u32 + 1,
        col: t.col_of(byte) as u32 + 1,
        what: what.into(),
    }
}

fn read(text: &str) -> Result<Doc, Unsupported> {
    let t = Text::new(text);
    let mut r = Reader {
        t: &t,
        next_id: 0,
        stack: Vec::new(),
        root: None,
        covered: Vec::new(),
        flows: Vec::new(),
        inside: Vec::new(),
        places: Vec::new(),
        colls: HashMap::new(),
        last_end: 0,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(item) = parser.next_event() {
        let (event, span) = item.map_err(|e| Unsupported {
            line: e.marker().line() as u32,
            col: e.marker().col() as u32 + 1,
            what: format!("invalid YAML: {}", e.info()),
        })?;
        r.event(event, span)?;
    }
    let root = r.root.take();
    attach(&t, root, &r)
}

impl Reader<'_, '_> {
    fn id(&mut self) -> usize {
        self.next_id += 1;
        self.next_id
    }

    fn event(&mut self, event: Event<'_>, span: YSpan) -> Result<(), Unsupported> {
        let (start, end) = (self.t.byte(span.start), self.t.byte(span.end));
        let is_map = matches!(event, Event::MappingStart(..));
        match event {
            Event::Alias(_) => {
                return Err(unsupported(
                    self.t,
                    start,
                    "YAML aliases (`*name`) are not rewritten: moving keys could put one before its anchor",
                ))
            }
            Event::Scalar(value, style, anchor, _tag) => {
                if anchor > 0 {
                    return Err(unsupported(
                        self.t,
                        start,
                        "YAML anchors (`&name`) are not rewritten",
                    ));
                }
                let scalar = self.scalar(value.into_owned(), style, start, end)?;
                self.add(Node::Scalar(scalar), start)?;
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                if anchor > 0 || tag.is_some() {
                    return Err(unsupported(
                        self.t,
                        start,
                        "anchors and tags on a list or mapping are not rewritten",
                    ));
                }
                let parent_flow = self.stack.last().is_some_and(|f| f.flow);
                let opener = self.t.text[start..].chars().next();
                let map = is_map;
                let flow = parent_flow || opener == Some(if map { '{' } else { '[' });
                let id = self.id();
                let parent = self.stack.last().map(|f| f.id);
                self.colls.insert(id, (parent, None, flow));
                self.stack.push(Frame {
                    id,
                    flow,
                    map,
                    start,
                    items: Vec::new(),
                    pending_key: None,
                    key_start: start,
                    starts: Vec::new(),
                });
                self.last_end = end;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = self.stack.pop().expect("balanced YAML events");
                // A flow collection ends after its `]` or `}` (the event's span runs on over the
                // spaces and comment after it).
                let end = if frame.flow { start + 1 } else { end };
                if frame.flow && !self.stack.last().is_some_and(|f| f.flow) {
                    self.flows.push((frame.start, end.max(frame.start)));
                    let (a, b) = (self.t.line_of(frame.start), self.t.line_of(end));
                    if b > a {
                        self.inside.push((a + 1, b));
                    }
                }
                for (entry, at) in frame.items.iter().zip(&frame.starts) {
                    self.places.push((entry.id, *at, frame.id));
                }
                if let Some(first) = frame.starts.first() {
                    if let Some(c) = self.colls.get_mut(&frame.id) {
                        c.1 = Some(self.t.col_of(*first));
                    }
                }
                let coll = Coll {
                    id: frame.id,
                    flow: frame.flow,
                    items: frame.items,
                };
                let node = if frame.map {
                    Node::Map(coll)
                } else {
                    Node::Seq(coll)
                };
                self.last_end = end.max(self.last_end);
                self.add(node, frame.start)?;
            }
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::Nothing => {}
        }
        Ok(())
    }

    fn scalar(
        &mut self,
        value: String,
        style: ScalarStyle,
        start: usize,
        end: usize,
    ) -> Result<Scalar, Unsupported> {
        let t = self.t;
        if !matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
            // A quoted scalar's span runs on over the spaces and comment after its closing quote.
            let end = match style {
                ScalarStyle::DoubleQuoted => quoted_end(t.text, start, '"').unwrap_or(end),
                ScalarStyle::SingleQuoted => quoted_end(t.text, start, '\'').unwrap_or(end),
                // A plain scalar ends with its last word; an empty one (`{k}`, `k:`) has no text
                // (its span may cover the bracket after it).
                _ if value.is_empty() => start,
                _ => {
                    let last = value.rsplit(' ').next().unwrap_or("");
                    t.text[start..end]
                        .rfind(last)
                        .map_or(end, |i| start + i + last.len())
                }
            };
            self.covered.push((start, end));
            let (a, b) = (t.line_of(start), t.line_of(end));
            if b > a {
                self.inside.push((a + 1, b));
            }
            self.last_end = end;
            return Ok(Scalar {
                raw: t.text[start..end].to_string(),
                value,
                block: None,
            });
        }
        // The header (`|`, `>-`, …) is between the previous event and the content.
        let gap = &t.text[self.last_end.min(start)..start];
        let Some(at) = gap.find(['|', '>']) else {
            return Err(unsupported(t, start, "a block scalar without its header"));
        };
        let header: String = gap[at..]
            .chars()
            .take_while(|c| matches!(c, '|' | '>' | '-' | '+' | '0'..='9'))
            .collect();
        let header_at = self.last_end.min(start) + at;
        if header.chars().any(|c| c.is_ascii_digit()) {
            return Err(unsupported(
                t,
                header_at,
                "block scalars with an explicit indentation indicator are not rewritten",
            ));
        }
        let first = t.line_of(header_at) + 1;
        let mut last = t.line_of(end);
        let end_line_start = t.line_starts[last];
        if t.text[end_line_start..end].trim().is_empty() && last > 0 {
            last -= 1;
        }
        let mut lines: Vec<&str> = (first..=last).map(|l| t.line(l)).collect();
        if !header.contains('+') {
            while lines.last().is_some_and(|l| l.trim().is_empty()) {
                lines.pop();
            }
        }
        let indent = lines
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start_matches(' ').len())
            .min()
            .unwrap_or(0);
        let content: Vec<String> = lines
            .iter()
            .map(|l| l.get(indent..).unwrap_or("").to_string())
            .collect();
        if !content.is_empty() {
            let from = t.line_starts[first];
            let to =
                t.line_starts[first + content.len() - 1] + t.line(first + content.len() - 1).len();
            self.covered.push((from, to.max(from)));
            self.inside.push((first, first + content.len() - 1));
        }
        self.last_end = end;
        Ok(Scalar {
            raw: header,
            value,
            block: Some(content),
        })
    }

    /// Adds a finished node that started at byte `start` to the collection being read.
    fn add(&mut self, node: Node, start: usize) -> Result<(), Unsupported> {
        let id = self.id();
        let t = self.t;
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        if frame.map {
            match frame.pending_key.take() {
                None => {
                    let Node::Scalar(key) = node else {
                        return Err(unsupported(t, start, "mapping keys must be plain strings"));
                    };
                    if key.block.is_some() {
                        return Err(unsupported(t, start, "mapping keys must be plain strings"));
                    }
                    frame.pending_key = Some(key);
                    frame.key_start = start;
                }
                Some(key) => {
                    frame.starts.push(frame.key_start);
                    frame.items.push(Entry {
                        id,
                        key: Some(key),
                        value: node,
                    });
                }
            }
        } else {
            // A block item starts at its dash.
            let mut at = start;
            if !frame.flow {
                at = dash_before(t.text, start).unwrap_or(start);
            }
            frame.starts.push(at);
            frame.items.push(Entry {
                id,
                key: None,
                value: node,
            });
        }
        Ok(())
    }
}

/// Where the dash of the block list item starting at `start` is: back over blank space and
/// comments (`- # note` with the item on the next line). `None` when something else comes first.
fn dash_before(text: &str, start: usize) -> Option<usize> {
    let mut before = &text[..start];
    for _ in 0..64 {
        before = before.trim_end_matches([' ', '\t', '\n', '\r']);
        if before.ends_with('-') {
            return Some(before.len() - 1);
        }
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = &before[line_start..];
        let hash = line
            .char_indices()
            .find(|&(i, c)| c == '#' && (i == 0 || line[..i].ends_with([' ', '\t'])))?
            .0;
        before = &before[..line_start + hash];
    }
    None
}

/// The byte just after the closing quote of the scalar quoted with `q` that starts at `start` (after
/// its tag, if any).
fn quoted_end(text: &str, start: usize, q: char) -> Option<usize> {
    let open = start + text[start..].find(q)?;
    let mut chars = text[open + 1..].char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if q == '"' && c == '\\' {
            chars.next();
        } else if c == q {
            if q == '\'' && chars.peek().is_some_and(|&(_, n)| n == '\'') {
                chars.next();
            } else {
                return Some(open + 1 + i + c.len_utf8());
            }
        }
    }
    None
}

/// Finds the comments and blank lines and attaches each to its entry or collection.
fn attach(t: &Text, root: Option<Node>, r: &Reader) -> Result<Doc, Unsupported> {
    let mut covered = r.covered.clone();
    covered.sort_unstable();
    // Lines inside a multi-line scalar or flow collection hold no trivia.
    let mut inside = vec![false; t.lines()];
    for &(a, b) in &r.inside {
        for flag in inside.iter_mut().take(b + 1).skip(a) {
            *flag = true;
        }
    }

    // Comments: a `#` outside every scalar.
    let mut comments: Vec<Comment> = Vec::new();
    let bytes = t.text.as_bytes();
    let mut cov = covered.iter().peekable();
    let mut i = 0;
    while i < bytes.len() {
        while cov.peek().is_some_and(|&&(_, b)| b <= i) {
            cov.next();
        }
        if let Some(&&(a, b)) = cov.peek() {
            if a <= i && i < b {
                i = b;
                continue;
            }
        }
        if bytes[i] == b'#' {
            // Flow collections recorded are the outermost ones, so they do not overlap.
            let flow = r.flows.partition_point(|&(a, _)| a < i);
            if flow > 0 && i < r.flows[flow - 1].1 {
                return Err(unsupported(
                    t,
                    i,
                    "comments inside a flow collection (`[…]`, `{…}`) are not rewritten; write it in block style",
                ));
            }
            let line = t.line_of(i);
            let end = t.line_starts.get(line + 1).map_or(t.text.len(), |e| e - 1);
            comments.push(Comment {
                line,
                col: t.col_of(i),
                text: t.text[i..end].trim_end().to_string(),
                eol: !t.text[t.line_starts[line]..i].trim().is_empty(),
            });
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }

    // Where every block entry starts; outer entries before inner ones on the same line (an item
    // before its first key).
    let mut places: Vec<Place> = r
        .places
        .iter()
        .filter(|(_, _, coll)| !r.colls.get(coll).is_some_and(|c| c.2))
        .map(|&(id, at, coll)| {
            let mut chain = Vec::new();
            let mut c = Some(coll);
            while let Some(cid) = c {
                let (parent, col, _) = r.colls.get(&cid).copied().unwrap_or((None, None, false));
                chain.push((cid, col.unwrap_or(0)));
                c = parent;
            }
            Place {
                id,
                line: t.line_of(at),
                col: t.col_of(at),
                chain,
            }
        })
        .collect();
    places.sort_by_key(|p| (p.line, p.col));
    let root_coll = match &root {
        Some(Node::Map(c)) | Some(Node::Seq(c)) => Some(c.id),
        _ => None,
    };

    let mut doc = Doc {
        root,
        before: HashMap::new(),
        eol: HashMap::new(),
        trailing: HashMap::new(),
        comments: comments.iter().map(|c| c.text.clone()).collect(),
    };

    // Full-line trivia, in line order: (line, Some((col, comment))) or (line, None) for a blank.
    let full_comments: HashMap<usize, &Comment> = comments
        .iter()
        .filter(|c| !c.eol)
        .map(|c| (c.line, c))
        .collect();
    let eol_lines: std::collections::HashSet<usize> =
        comments.iter().filter(|c| c.eol).map(|c| c.line).collect();
    let mut full: Vec<(usize, Option<&Comment>)> = Vec::new();
    // The text's final line break leaves an empty last "line": not a blank line.
    let last = if t.text.ends_with('\n') {
        t.lines() - 1
    } else {
        t.lines()
    };
    for (l, &ins) in inside.iter().enumerate().take(last) {
        if ins || eol_lines.contains(&l) {
            continue;
        }
        match full_comments.get(&l) {
            Some(c) => full.push((l, Some(*c))),
            None if t.line(l).trim().is_empty() => full.push((l, None)),
            None => {}
        }
    }

    // Binary searches: a registry file may hold tens of thousands of entries.
    let next_after = |line: usize| places.get(places.partition_point(|p| p.line <= line));
    let last_before = |line: usize| {
        let i = places.partition_point(|p| p.line < line);
        i.checked_sub(1).map(|i| &places[i])
    };
    // A comment goes before the entry that follows it, unless it is indented deeper than that entry
    // and as deep as a collection that ended above it: then it closes that collection.
    let target_of = |line: usize, col: usize| -> Target {
        let next = next_after(line);
        let floor = next.map(|n| n.col);
        if let Some(prev) = last_before(line) {
            let deeper = prev
                .chain
                .iter()
                .find(|(_, c)| *c <= col && floor.is_none_or(|f| *c > f));
            if let Some((cid, _)) = deeper {
                return Target::Trailing(if Some(*cid) == root_coll {
                    ROOT_TRAILING
                } else {
                    *cid
                });
            }
        }
        match next {
            Some(n) => Target::Before(n.id),
            None => Target::Trailing(ROOT_TRAILING),
        }
    };
    for (k, (line, comment)) in full.iter().enumerate() {
        let target = match comment {
            Some(c) => target_of(*line, c.col),
            // A blank line goes with the next comment before the same entry, else before the entry.
            None => {
                let group = next_after(*line).map(|p| p.id);
                let next_comment = full[k + 1..]
                    .iter()
                    .take_while(|(l, _)| next_after(*l).map(|p| p.id) == group)
                    .find_map(|(l, c)| c.map(|c| (*l, c.col)));
                match (next_comment, group) {
                    (Some((l, col)), _) => target_of(l, col),
                    (None, Some(id)) => Target::Before(id),
                    (None, None) => Target::Trailing(ROOT_TRAILING),
                }
            }
        };
        let trivia = match comment {
            Some(c) => Trivia::Comment(c.text.clone()),
            None => Trivia::Blank,
        };
        match target {
            Target::Before(id) => doc.before.entry(id).or_default().push(trivia),
            Target::Trailing(id) => doc.trailing.entry(id).or_default().push(trivia),
        }
    }

    // End-of-line comments: to the innermost entry starting on their line.
    for c in comments.iter().filter(|c| c.eol) {
        let on_line = places.partition_point(|p| p.line <= c.line);
        let Some(p) = on_line
            .checked_sub(1)
            .map(|i| &places[i])
            .filter(|p| p.line == c.line)
        else {
            return Err(unsupported(
                t,
                t.line_starts[c.line],
                "a comment at the end of a line where no key or list item starts (after a multi-line value) is not rewritten",
            ));
        };
        doc.eol.insert(p.id, c.text.clone());
    }
    Ok(doc)
}

struct Comment {
    line: usize,
    col: usize,
    text: String,
    eol: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Before(usize),
    Trailing(usize),
}

// ----------------------------------------------------------------------------------------- printing

#[derive(Default)]
struct Printer {
    lines: Vec<Line>,
}

fn key_of(e: &Entry) -> &str {
    e.key.as_ref().map_or("", |k| k.value.as_str())
}

/// The value of a mapping's `type` key (a source's connection depends on it).
fn type_of(m: &Coll<Entry>) -> Option<&str> {
    m.items.iter().find_map(|e| match &e.value {
        Node::Scalar(v) if key_of(e) == "type" => Some(v.value.as_str()),
        _ => None,
    })
}

/// The entries of a mapping in canonical order: the schema's order, unknown keys after the known
/// ones in their own order.
fn sorted(m: &Coll<Entry>, schema: Schema) -> Vec<&Entry> {
    let mut entries: Vec<&Entry> = m.items.iter().collect();
    entries.sort_by_key(|e| schema.rank(key_of(e)));
    entries
}

impl Printer {
    fn document(&mut self, root: &Node, doc: &Doc, schema: Schema) {
        match root {
            Node::Map(m) if !m.flow => self.map(m, doc, 0, schema, true, false),
            Node::Seq(s) if !s.flow => self.seq(s, doc, 0, schema, false),
            Node::Scalar(s) if s.raw.is_empty() => {}
            other => {
                let mut lines = Vec::new();
                value_inline(other, 0, schema, &mut lines);
                self.push_value(String::new(), lines, None);
            }
        }
    }

    /// Comments and blank lines at `indent`; `first`: at the start of a collection, where blank
    /// lines before the first comment are dropped.
    fn trivia(&mut self, trivia: &[Trivia], indent: usize, first: bool) {
        let mut leading = first;
        for t in trivia {
            match t {
                Trivia::Blank if leading => {}
                Trivia::Blank => self.lines.push(Line::Blank),
                Trivia::Comment(c) => {
                    leading = false;
                    self.lines
                        .push(Line::Comment(format!("{}{c}", " ".repeat(indent))));
                }
            }
        }
    }

    /// A block mapping; `top`: the document's; `skip_first`: the first entry's trivia was written
    /// above the dash of the list item holding the mapping.
    fn map(
        &mut self,
        m: &Coll<Entry>,
        doc: &Doc,
        indent: usize,
        schema: Schema,
        top: bool,
        skip_first: bool,
    ) {
        let kind = type_of(m);
        for (i, e) in sorted(m, schema).into_iter().enumerate() {
            if !(i == 0 && skip_first) {
                let before = doc.before.get(&e.id).map_or(&[][..], Vec::as_slice);
                self.trivia(before, indent, i == 0 && (!top || self.lines.is_empty()));
            }
            let key = e.key.as_ref().map_or("", |k| k.raw.as_str());
            let child = schema.child(key_of(e), kind);
            let prefix = format!("{}{key}:", " ".repeat(indent));
            self.entry_value(
                prefix,
                &e.value,
                doc,
                indent,
                child,
                doc.eol.get(&e.id),
                top,
            );
        }
        if let Some(t) = doc.trailing.get(&m.id) {
            self.trivia(t, indent, false);
        }
    }

    /// Writes `prefix` (`key:` or `-`) and the value after it, nested collections indented below.
    #[allow(clippy::too_many_arguments)]
    fn entry_value(
        &mut self,
        prefix: String,
        value: &Node,
        doc: &Doc,
        indent: usize,
        schema: Schema,
        eol: Option<&String>,
        top: bool,
    ) {
        let eol = eol.cloned();
        match value {
            Node::Map(m) if block(&prefix, value, schema) => {
                self.lines.push(Line::Text(prefix, eol));
                self.map(m, doc, indent + STEP, schema, false, false);
            }
            Node::Seq(s) if block(&prefix, value, schema) => {
                self.lines.push(Line::Text(prefix, eol));
                self.seq(s, doc, indent + STEP, schema, top);
            }
            _ => {
                let mut lines = Vec::new();
                value_inline(value, indent + STEP, schema, &mut lines);
                self.push_value(prefix, lines, eol);
            }
        }
    }

    /// `prefix` followed by an inline value's first line, then its other lines.
    fn push_value(&mut self, prefix: String, lines: Vec<Line>, eol: Option<String>) {
        let mut lines = lines.into_iter();
        let first = match lines.next() {
            Some(Line::Text(s, _)) if s.is_empty() => prefix,
            Some(Line::Text(s, _)) if prefix.is_empty() => s,
            Some(Line::Text(s, _)) => format!("{prefix} {s}"),
            _ => prefix,
        };
        self.lines.push(Line::Text(first, eol));
        self.lines.extend(lines);
    }

    /// A block sequence; `top`: the value of a top-level key, whose mapping items are separated by
    /// one blank line.
    fn seq(&mut self, s: &Coll<Entry>, doc: &Doc, indent: usize, schema: Schema, top: bool) {
        let item_schema = schema.item();
        let spaced = top
            && s.items
                .iter()
                .any(|i| matches!(&i.value, Node::Map(m) if !m.flow));
        let dash = format!("{}-", " ".repeat(indent));
        for (i, item) in s.items.iter().enumerate() {
            let mut before: Vec<Trivia> = doc.before.get(&item.id).cloned().unwrap_or_default();
            let nested = match &item.value {
                Node::Map(_) | Node::Seq(_) => block(&dash, &item.value, item_schema),
                Node::Scalar(_) => false,
            };
            if nested {
                // What would sit between the dash and the first key goes above the dash.
                if let Node::Map(m) = &item.value {
                    if let Some(first) = sorted(m, item_schema).first() {
                        before.extend(doc.before.get(&first.id).into_iter().flatten().cloned());
                    }
                }
                before.extend(doc.eol.get(&item.id).map(|c| Trivia::Comment(c.clone())));
            }
            if spaced && i > 0 && before.first() != Some(&Trivia::Blank) {
                before.insert(0, Trivia::Blank);
            }
            self.trivia(&before, indent, i == 0);
            if !nested {
                let eol = doc.eol.get(&item.id);
                self.entry_value(
                    dash.clone(),
                    &item.value,
                    doc,
                    indent,
                    item_schema,
                    eol,
                    false,
                );
                continue;
            }
            // The nested collection's first line goes on the dash's line.
            let mark = self.lines.len();
            match &item.value {
                Node::Map(m) => self.map(m, doc, indent + STEP, item_schema, false, true),
                Node::Seq(inner) => self.seq(inner, doc, indent + STEP, item_schema, false),
                Node::Scalar(_) => {}
            }
            if let Some(Line::Text(s, _)) = self.lines.get_mut(mark) {
                *s = format!("{dash} {}", s.trim_start());
            }
        }
        if let Some(t) = doc.trailing.get(&s.id) {
            self.trivia(t, indent, false);
        }
    }

    fn finish(self) -> String {
        super::render(self.lines)
    }
}

/// Whether a collection after `prefix` is written in block style: block collections stay block; a
/// flow one becomes block when it does not fit on its line or a scalar in it spans lines. Empty
/// collections are always `[]` / `{}`.
fn block(prefix: &str, value: &Node, schema: Schema) -> bool {
    match value {
        Node::Map(c) | Node::Seq(c) if c.items.is_empty() => false,
        Node::Map(c) | Node::Seq(c) if !c.flow => true,
        Node::Map(_) | Node::Seq(_) => match flow_text(value, schema) {
            Some(text) => prefix.chars().count() + 1 + text.chars().count() > MAX_WIDTH,
            None => true,
        },
        Node::Scalar(_) => false,
    }
}

/// A flow collection (or a scalar) on one line, keys in schema order; `None` when a scalar in it
/// spans lines.
fn flow_text(node: &Node, schema: Schema) -> Option<String> {
    match node {
        Node::Scalar(s) if s.block.is_none() && !s.raw.contains('\n') => Some(s.raw.clone()),
        Node::Scalar(_) => None,
        Node::Seq(c) => {
            let item = schema.item();
            let parts: Option<Vec<String>> =
                c.items.iter().map(|e| flow_text(&e.value, item)).collect();
            Some(format!("[{}]", parts?.join(", ")))
        }
        Node::Map(c) if c.items.is_empty() => Some("{}".into()),
        Node::Map(c) => {
            let kind = type_of(c);
            let parts: Option<Vec<String>> = sorted(c, schema)
                .into_iter()
                .map(|e| {
                    let k = e.key.as_ref().map_or("", |k| k.raw.as_str());
                    let v = flow_text(&e.value, schema.child(key_of(e), kind))?;
                    // `{ k }`: a key without a value (`{ k: }` is not valid YAML).
                    Some(if v.is_empty() {
                        k.to_string()
                    } else {
                        format!("{k}: {v}")
                    })
                })
                .collect();
            Some(format!("{{ {} }}", parts?.join(", ")))
        }
    }
}

/// A value written after `key:` or `-`: a scalar (its block or continuation lines at `indent`), or
/// a flow collection on one line. The first line is a `Text` without the prefix.
fn value_inline(node: &Node, indent: usize, schema: Schema, out: &mut Vec<Line>) {
    let pad = " ".repeat(indent);
    match node {
        Node::Scalar(s) => match &s.block {
            Some(lines) => {
                out.push(Line::Text(s.raw.clone(), None));
                out.extend(lines.iter().map(|l| {
                    Line::Verbatim(if l.is_empty() {
                        String::new()
                    } else {
                        format!("{pad}{l}")
                    })
                }));
            }
            None => {
                // Folded line breaks of a plain or quoted scalar: indentation is not part of the
                // value, so continuation lines are re-indented.
                let mut parts = s.raw.split('\n');
                let first = parts.next().unwrap_or("").trim_end().to_string();
                out.push(Line::Text(first, None));
                out.extend(parts.map(|p| {
                    let p = p.trim();
                    Line::Verbatim(if p.is_empty() {
                        String::new()
                    } else {
                        format!("{pad}{p}")
                    })
                }));
            }
        },
        other => out.push(Line::Text(
            flow_text(other, schema).unwrap_or_default(),
            None,
        )),
    }
}

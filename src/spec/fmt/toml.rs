//! TOML spec files in the canonical layout, with every comment kept.
//!
//! Works on the lossless token stream of `toml_parser` (the lexer under the `toml` crate the spec
//! parser uses): every token is written back as it was; what changes is the space between tokens and
//! the order of the `key = value` lines within each table (the schema's order, as in YAML). Lines only
//! move within their table section — in TOML a key belongs to the table header above it — and take
//! the comments above them along. Tables themselves keep their order.

use super::order::Schema;
use super::{render, FmtError, Line};
use toml_parser::lexer::TokenKind as K;
use toml_parser::Source;

const STEP: usize = 2;

/// Writes a TOML text in the canonical layout (docs/fmt.md), keys of known tables in the order of
/// `schema`. The text must be valid TOML.
pub fn format(text: &str, schema: Schema) -> Result<String, FmtError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let tokens: Vec<(K, &str)> = Source::new(text)
        .lex()
        .map(|t| (t.kind(), &text[t.span().start()..t.span().end()]))
        .take_while(|(k, _)| *k != K::Eof)
        .collect();
    let mut p = Printer::default();
    for (kind, raw) in reorder(split(&tokens), schema) {
        match kind {
            K::Eof => break,
            K::Whitespace => p.space = true,
            K::Newline => p.newline(),
            K::Comment => p.comment(raw.trim_end()),
            kind => p.token(kind, raw),
        }
    }
    p.newline();
    Ok(render(p.lines))
}

/// Every comment of a TOML text, in order, without trailing blanks.
pub fn comments(text: &str) -> Vec<String> {
    Source::new(text)
        .lex()
        .filter(|t| t.kind() == K::Comment)
        .map(|t| {
            text[t.span().start()..t.span().end()]
                .trim_end()
                .to_string()
        })
        .collect()
}

type Tok<'a> = (K, &'a str);

/// A logical line: its tokens (with the line break that ends it) and what it is.
struct Logical<'a> {
    tokens: Vec<Tok<'a>>,
    kind: LineKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LineKind {
    /// Blank, or only a comment.
    Trivia,
    Header,
    KeyValue,
}

/// Splits tokens into logical lines: a line break inside an array or inline table does not end one.
fn split<'a>(tokens: &[Tok<'a>]) -> Vec<Logical<'a>> {
    let mut lines = Vec::new();
    let mut cur: Vec<Tok<'a>> = Vec::new();
    let mut depth = 0usize;
    let mut header = false;
    for &(kind, raw) in tokens {
        let first = cur.iter().all(|(k, _)| *k == K::Whitespace);
        if first && kind == K::LeftSquareBracket && depth == 0 {
            header = true;
        }
        if !header {
            match kind {
                K::LeftSquareBracket | K::LeftCurlyBracket => depth += 1,
                K::RightSquareBracket | K::RightCurlyBracket => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        cur.push((kind, raw));
        if kind == K::Newline && depth == 0 {
            lines.push(logical(std::mem::take(&mut cur), header));
            header = false;
        }
    }
    if !cur.is_empty() {
        lines.push(logical(cur, header));
    }
    lines
}

fn logical(tokens: Vec<Tok<'_>>, header: bool) -> Logical<'_> {
    let content = tokens
        .iter()
        .any(|(k, _)| !matches!(k, K::Whitespace | K::Newline | K::Comment));
    let kind = match (content, header) {
        (false, _) => LineKind::Trivia,
        (true, true) => LineKind::Header,
        (true, false) => LineKind::KeyValue,
    };
    Logical { tokens, kind }
}

/// The first key segment of a `key = value` line (unquoted), or a header's path.
fn segments(tokens: &[Tok<'_>], header: bool) -> Vec<String> {
    let mut out = Vec::new();
    for &(kind, raw) in tokens {
        match kind {
            K::Equals | K::Newline | K::Comment => break,
            K::RightSquareBracket if header => break,
            K::Atom => out.push(raw.to_string()),
            K::BasicString | K::LiteralString => {
                out.push(raw.trim_matches(['"', '\'']).to_string())
            }
            _ => {}
        }
    }
    out
}

/// The value of the root table's `type` key (a source's connection depends on it).
fn root_type(lines: &[Logical<'_>]) -> Option<String> {
    lines
        .iter()
        .take_while(|l| l.kind != LineKind::Header)
        .filter(|l| l.kind == LineKind::KeyValue)
        .find(|l| segments(&l.tokens, false) == ["type"])
        .and_then(|l| {
            let at = l.tokens.iter().position(|(k, _)| *k == K::Equals)?;
            l.tokens[at + 1..]
                .iter()
                .find(|(k, _)| matches!(k, K::BasicString | K::LiteralString))
                .map(|(_, raw)| raw.trim_matches(['"', '\'']).to_string())
        })
}

/// The tokens again, with the `key = value` lines of each table section in schema order; each takes
/// the comment and blank lines right above it along.
fn reorder<'a>(lines: Vec<Logical<'a>>, root: Schema) -> Vec<Tok<'a>> {
    let kind = root_type(&lines);
    let mut out = Vec::new();
    let mut schema = root;
    // The file's header (its comments down to the last blank line above the first key) stays on top.
    let lead = lines
        .iter()
        .take_while(|l| l.kind == LineKind::Trivia)
        .count();
    let mut i = lines[..lead]
        .iter()
        .rposition(|l| !l.tokens.iter().any(|(k, _)| *k == K::Comment))
        .map_or(0, |blank| blank + 1);
    for l in &lines[..i] {
        out.extend(l.tokens.iter().copied());
    }
    while i < lines.len() {
        if lines[i].kind == LineKind::Header {
            schema = segments(&lines[i].tokens, true)
                .iter()
                .fold(root, |s, seg| {
                    let child = s.child(seg, kind.as_deref());
                    match child {
                        Schema::ListOf(_) => child.item(),
                        other => other,
                    }
                });
            out.extend(lines[i].tokens.iter().copied());
            i += 1;
        }
        // This section: statements (leading trivia + one key line) up to the next header; trivia
        // after the last statement stays at the end.
        let mut statements: Vec<(usize, Vec<Tok<'a>>)> = Vec::new();
        let mut pending: Vec<Tok<'a>> = Vec::new();
        while i < lines.len() && lines[i].kind != LineKind::Header {
            pending.extend(lines[i].tokens.iter().copied());
            if lines[i].kind == LineKind::KeyValue {
                let key = segments(&lines[i].tokens, false);
                let rank = schema.rank(key.first().map_or("", String::as_str));
                statements.push((rank, std::mem::take(&mut pending)));
            }
            i += 1;
        }
        statements.sort_by_key(|(rank, _)| *rank);
        for (_, tokens) in statements {
            out.extend(tokens);
        }
        out.extend(pending);
    }
    out
}

#[derive(Default)]
struct Printer {
    lines: Vec<Line>,
    /// The current line's text and end-of-line comment.
    cur: String,
    comment: Option<String>,
    /// A full-line comment was written for this line.
    commented: bool,
    /// Whitespace came since the last token.
    space: bool,
    prev: Option<K>,
    /// Open `[` and `{` of values (table headers' brackets not counted).
    depth: usize,
    header: bool,
}

impl Printer {
    fn newline(&mut self) {
        if self.cur.is_empty() {
            if !self.commented {
                self.lines.push(Line::Blank);
            }
        } else {
            let cur = std::mem::take(&mut self.cur);
            self.lines.push(Line::Text(cur, self.comment.take()));
        }
        self.commented = false;
        self.space = false;
        self.prev = None;
        self.header = false;
    }

    fn comment(&mut self, text: &str) {
        if self.cur.is_empty() {
            let indent = " ".repeat(self.depth * STEP);
            self.lines.push(Line::Comment(format!("{indent}{text}")));
            self.commented = true;
        } else {
            self.comment = Some(text.to_string());
        }
    }

    fn token(&mut self, kind: K, raw: &str) {
        let first = self.cur.is_empty();
        if first && self.depth == 0 && kind == K::LeftSquareBracket {
            self.header = true;
            self.blank_before_header();
        }
        let in_value = !self.header;
        if in_value && matches!(kind, K::RightSquareBracket | K::RightCurlyBracket) {
            self.depth = self.depth.saturating_sub(1);
        }
        let sep = match (self.prev, kind) {
            _ if first => " ".repeat(self.depth * STEP),
            (_, K::Comma) | (Some(K::Comma), K::RightSquareBracket) => String::new(),
            (Some(K::Comma), _) => " ".into(),
            (Some(K::Equals), _) | (_, K::Equals) => " ".into(),
            (Some(K::LeftCurlyBracket), K::RightCurlyBracket) => String::new(),
            (Some(K::LeftCurlyBracket), _) | (_, K::RightCurlyBracket) => " ".into(),
            (Some(K::LeftSquareBracket), _) | (_, K::RightSquareBracket) => String::new(),
            (Some(K::Dot), _) | (_, K::Dot) => String::new(),
            _ if self.space => " ".into(),
            _ => String::new(),
        };
        self.cur.push_str(&sep);
        self.cur.push_str(raw);
        if in_value && matches!(kind, K::LeftSquareBracket | K::LeftCurlyBracket) {
            self.depth += 1;
        }
        self.prev = Some(kind);
        self.space = false;
    }

    /// One blank line before a table header (and the comments right above it), except at the top.
    fn blank_before_header(&mut self) {
        let mut at = self.lines.len();
        while at > 0 && matches!(self.lines[at - 1], Line::Comment(_)) {
            at -= 1;
        }
        if at > 0 && !matches!(self.lines[at - 1], Line::Blank) {
            self.lines.insert(at, Line::Blank);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(text: &str) -> String {
        format(text, Schema::Free).unwrap()
    }

    #[test]
    fn spacing_between_tokens_is_canonical() {
        assert_eq!(
            f("  name=\"shop\"   # the name\ntags = [ \"a\" ,\"b\" ]\nopts={a=1,b = 2}\n"),
            "name = \"shop\"  # the name\ntags = [\"a\", \"b\"]\nopts = { a = 1, b = 2 }\n"
        );
    }

    #[test]
    fn tables_get_one_blank_line_before_them_and_their_comments() {
        assert_eq!(
            f("type = \"csv\"\n# how to reach it\n[connection]\npath = \"x\"\n\n\n[[transforms]]\nname = \"t\"\n"),
            "type = \"csv\"\n\n# how to reach it\n[connection]\npath = \"x\"\n\n[[transforms]]\nname = \"t\"\n"
        );
    }

    #[test]
    fn multi_line_strings_and_arrays() {
        let text = "sql = \"\"\"\nselect 1  \n   from t\n\"\"\"\nkeys = [\n\"a\", # first\n    \"b\",\n]\n";
        assert_eq!(
            f(text),
            "sql = \"\"\"\nselect 1  \n   from t\n\"\"\"\nkeys = [\n  \"a\",  # first\n  \"b\",\n]\n"
        );
    }

    #[test]
    fn keys_move_within_their_table_with_their_comments() {
        let text = "# A source.\n\n# when\nschedule = \"every 2h\"\ntype = \"postgres\"\n\n[connection]\nuser = \"u\"  # who\nhost = \"h\"\n\n[[transforms]]\nsql = \"select 1\"\nname = \"t\"\n";
        let out = format(text, Schema::Object(&crate::spec::fields::SOURCE)).unwrap();
        assert_eq!(
            out,
            "# A source.\n\ntype = \"postgres\"\n# when\nschedule = \"every 2h\"\n\n[connection]\nhost = \"h\"\nuser = \"u\"  # who\n\n[[transforms]]\nname = \"t\"\nsql = \"select 1\"\n"
        );
    }

    #[test]
    fn formatting_twice_changes_nothing() {
        let text = "a = 1 # x\n[t]\n  b = [1,\n 2]\n";
        let once = f(text);
        assert_eq!(f(&once), once);
    }
}

//! TOML spec files in the canonical layout, with every comment kept.
//!
//! Works on the lossless token stream of `toml_parser` (the lexer under the `toml` crate the spec
//! parser uses): every token is written back as it was, only the space between tokens changes.
//! Keys keep their order: in TOML a key's place decides which table it belongs to, so moving keys
//! is not the safe, local edit it is in YAML.

use super::{render, FmtError, Line};
use toml_parser::lexer::TokenKind as K;
use toml_parser::Source;

const STEP: usize = 2;

/// Writes a TOML text in the canonical layout (docs/fmt.md). The text must be valid TOML.
pub fn format(text: &str) -> Result<String, FmtError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Printer::default();
    for token in Source::new(text).lex() {
        let raw = &text[token.span().start()..token.span().end()];
        match token.kind() {
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
        format(text).unwrap()
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
    fn formatting_twice_changes_nothing() {
        let text = "a = 1 # x\n[t]\n  b = [1,\n 2]\n";
        let once = f(text);
        assert_eq!(f(&once), once);
    }
}

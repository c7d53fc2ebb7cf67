//! Spec files as loaded text, and positions inside them.
//!
//! Every value read from a spec keeps a [`Span`] (file, start and end position) so that any later error —
//! a schema mistake, a reference to a missing table, a SQL syntax error — can point at the exact place.
//! [`SourceMap`] owns the text of every file loaded in one run and answers "which line is this?" for the
//! diagnostic renderer.

use std::path::{Path, PathBuf};

/// Index of a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A position in a file: 1-based line, 1-based column counted in characters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// A range in one file; `end` is exclusive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: FileId,
    pub start: Pos,
    pub end: Pos,
}

impl Span {
    /// A span covering just the first character of `self`.
    pub fn point(self) -> Span {
        Span {
            end: Pos {
                line: self.start.line,
                col: self.start.col + 1,
            },
            ..self
        }
    }

    /// A span covering a whole file (used when an error has no better place, e.g. an empty file).
    pub fn file_start(file: FileId) -> Span {
        Span {
            file,
            start: Pos { line: 1, col: 1 },
            end: Pos { line: 1, col: 1 },
        }
    }
}

/// One loaded spec file.
#[derive(Debug)]
pub struct SourceFile {
    /// Path relative to the instance root, with `/` separators: what diagnostics print.
    pub display: String,
    pub path: PathBuf,
    pub text: String,
    /// Byte offset of each line's start. `u32`, counted exactly: an instance of thousands of files
    /// keeps these for every line, and spec files are far below 4 GiB (`limits`).
    line_starts: Vec<u32>,
}

impl SourceFile {
    pub fn new(display: String, path: PathBuf, text: String) -> Self {
        let lines = text.bytes().filter(|&b| b == b'\n').count();
        let mut line_starts = Vec::with_capacity(lines + 1);
        line_starts.push(0);
        line_starts.extend(
            text.match_indices('\n')
                .map(|(i, _)| u32::try_from(i + 1).unwrap_or(u32::MAX)),
        );
        SourceFile {
            display,
            path,
            text,
            line_starts,
        }
    }

    /// A file known by name only: refused or unreadable, so nothing of it may be shown. Diagnostics
    /// point at it (`path:1:1`) with no source line.
    pub fn unread(display: String, path: PathBuf) -> Self {
        SourceFile {
            display,
            path,
            text: String::new(),
            line_starts: Vec::new(),
        }
    }

    /// The text of a 1-based line, without its line terminator.
    pub fn line(&self, line: u32) -> Option<&str> {
        let idx = (line as usize).checked_sub(1)?;
        let start = *self.line_starts.get(idx)? as usize;
        let end = self
            .line_starts
            .get(idx + 1)
            .map_or(self.text.len(), |&e| e as usize);
        Some(self.text[start..end].trim_end_matches(['\n', '\r']))
    }

    pub fn line_count(&self) -> u32 {
        self.line_starts.len() as u32
    }

    /// Converts a byte offset into a position (columns counted in characters).
    pub fn pos_of_byte(&self, offset: usize) -> Pos {
        if self.line_starts.is_empty() {
            return Pos { line: 1, col: 1 };
        }
        let offset = offset.min(self.text.len());
        let key = u32::try_from(offset).unwrap_or(u32::MAX);
        let idx = match self.line_starts.binary_search(&key) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[idx] as usize;
        let col = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start);
        Pos {
            line: idx as u32 + 1,
            col: col as u32 + 1,
        }
    }
}

/// All files loaded in one run.
#[derive(Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn add(&mut self, file: SourceFile) -> FileId {
        self.files.push(file);
        FileId(self.files.len() as u32 - 1)
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// `path` relative to `root`, `/`-separated, for messages.
pub fn display_path(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_offsets_become_line_and_char_column() {
        let f = SourceFile::new("x".into(), "x".into(), "ab\nčd\n".into());
        assert_eq!(f.pos_of_byte(0), Pos { line: 1, col: 1 });
        assert_eq!(f.pos_of_byte(3), Pos { line: 2, col: 1 });
        // 'č' is two bytes but one column.
        assert_eq!(f.pos_of_byte(5), Pos { line: 2, col: 2 });
        assert_eq!(f.line(2), Some("čd"));
        assert_eq!(f.line(9), None);
    }
}

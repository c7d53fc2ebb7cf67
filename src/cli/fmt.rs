//! `pipeline fmt`: rewrite spec files in the canonical layout, comments kept (docs/fmt.md).

use crate::diag::render;
use crate::diag::source::{display_path, FileId, SourceFile, SourceMap, Span};
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::spec::fmt::{self, FmtError};
use crate::spec::load::{self, Kind};
use crate::spec::{limits, walk};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline fmt                         format every spec file of the instance in place
  pipeline fmt registry/ pipelines/shop.yaml    only these (directories: every spec file below)
  pipeline fmt --check                 CI: exit 1 and list the files that are not formatted; writes nothing
  pipeline fmt --diff                  show what would change as a unified diff; writes nothing
  pipeline --dir path/to/instance fmt -q

The layout (docs/fmt.md): 2-space indentation, keys in the order of docs/specs.md, comments kept with
the key or item they precede, block scalars (SQL) kept verbatim, one final newline. Each rewrite is
parsed again and compared with the original before it is written: it must hold the same values and
the same comments. A file that does not parse is reported (file:line:col) and left as it is; the
others are still formatted.

Exit status: 0 when every file is formatted (or was formatted now), 1 when a file could not be read
or parsed, or (with --check or --diff) when a file is not formatted.";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Spec files or directories to format (default: the whole instance), relative to the current
    /// directory or else to --dir. A directory holding config/ is an instance root of its own;
    /// other paths must be spec files of the --dir instance or directories holding some.
    paths: Vec<PathBuf>,

    /// Write nothing; list the files that are not formatted and exit 1 if there are any (for CI).
    #[arg(long)]
    check: bool,

    /// Write nothing; print a unified diff of what formatting would change (exit 1 if anything).
    #[arg(long)]
    diff: bool,
}

/// What happened to one file.
enum Outcome {
    Unchanged,
    Changed,
    Failed,
}

pub fn run(dir: &Path, args: Args, quiet: bool) -> Result<ExitCode> {
    let write = !args.check && !args.diff;
    let mut files = SourceMap::default();
    let mut diags = Diagnostics::default();
    let mut jobs: Vec<(PathBuf, PathBuf, Kind)> = Vec::new(); // root, file, kind
    for (root, only) in selection(dir, &args.paths)? {
        let (found, layout) = load::spec_files(&root, &mut files);
        // fmt formats what is there; a missing config/instance.yaml is validate's business, unless
        // nothing at all was found.
        for d in layout.iter() {
            if d.code == Code::UnsafeFile || found.is_empty() {
                diags.push(d.clone());
            }
        }
        let before = jobs.len();
        for (path, kind) in found {
            if only.as_ref().is_none_or(|only| selected(&path, only)) {
                jobs.push((root.clone(), path, kind));
            }
        }
        if let Some(only) = &only {
            for p in only.iter().filter(|p| p.is_file()) {
                let listed = jobs[before..].iter().any(|(_, f, _)| same_file(f, p));
                if !listed {
                    bail!(
                        "{} is not a spec file of the instance at {} (config/instance.*, pipelines/*, \
                         registry/**, metrics/**)",
                        p.display(),
                        root.display()
                    );
                }
            }
        }
    }

    let (mut changed, mut unchanged, mut failed) = (0, 0, 0);
    let mut out = anstream::stdout().lock();
    for (root, path, kind) in &jobs {
        let display = display_path(root, path);
        let outcome = match walk::read(path, limits::MAX_FILE_BYTES) {
            Err(e) => {
                let id = files.add(SourceFile::unread(display.clone(), path.clone()));
                diags.push(Diagnostic::error(
                    Code::Syntax,
                    Span::file_start(id),
                    format!("cannot read {display}: {}", read_error(&e)),
                ));
                Outcome::Failed
            }
            Ok(text) => {
                let id = files.add(SourceFile::new(display.clone(), path.clone(), text));
                let file = files.get(id);
                match fmt::format_file(file, id, fmt::schema_of(kind)) {
                    Err(e) => {
                        diags.push(diagnostic(e, id, &display));
                        Outcome::Failed
                    }
                    Ok(formatted) if formatted == file.text => Outcome::Unchanged,
                    Ok(formatted) => {
                        if args.diff {
                            write!(
                                out,
                                "{}",
                                fmt::unified_diff(&display, &file.text, &formatted)
                            )?;
                        }
                        if args.check && !quiet {
                            writeln!(out, "would reformat {display}")?;
                        }
                        if write {
                            fmt::write_file(path, &formatted)
                                .with_context(|| format!("writing {display}"))?;
                            if !quiet {
                                writeln!(out, "formatted {display}")?;
                            }
                        }
                        Outcome::Changed
                    }
                }
            }
        };
        match outcome {
            Outcome::Unchanged => unchanged += 1,
            Outcome::Changed => changed += 1,
            Outcome::Failed => failed += 1,
        }
    }
    if !diags.is_empty() {
        diags.sort();
        write!(anstream::stderr(), "{}", render::human(&diags, &files))?;
    }
    if !quiet {
        let plural = |n: usize| if n == 1 { "file" } else { "files" };
        let verb = if write { "formatted" } else { "to reformat" };
        let mut summary = format!(
            "{changed} {} {verb}, {unchanged} already formatted",
            plural(changed)
        );
        if failed > 0 {
            summary.push_str(&format!(", {failed} left as they are (errors above)"));
        }
        writeln!(anstream::stderr(), "{summary}")?;
    }
    let failing = diags.has_errors() || failed > 0 || (!write && changed > 0);
    Ok(if failing {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The instance roots to format, each with the paths selected in it (`None`: all of it).
fn selection(dir: &Path, paths: &[PathBuf]) -> Result<Vec<(PathBuf, Option<Vec<PathBuf>>)>> {
    if paths.is_empty() {
        return Ok(vec![(dir.to_path_buf(), None)]);
    }
    let mut roots = Vec::new();
    let mut in_dir = Vec::new();
    for p in paths {
        // Relative to the current directory, or else to the instance root.
        let p = if !p.exists() && p.is_relative() && dir.join(p).exists() {
            dir.join(p)
        } else {
            p.clone()
        };
        if !p.exists() {
            bail!("{} does not exist", p.display());
        }
        if p.is_dir() && p.join("config").is_dir() {
            roots.push((p, None));
        } else {
            in_dir.push(p);
        }
    }
    if !in_dir.is_empty() {
        roots.push((dir.to_path_buf(), Some(in_dir)));
    }
    Ok(roots)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Whether the spec file `path` is one of `only`, or below one of them.
fn selected(path: &Path, only: &[PathBuf]) -> bool {
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    // Compared by the listed path too: a link inside the root is selected by its own name.
    only.iter().any(|o| match std::fs::canonicalize(o) {
        Ok(o) => real.starts_with(&o) || path_starts_with(path, &o),
        Err(_) => false,
    })
}

fn path_starts_with(path: &Path, dir: &Path) -> bool {
    std::path::absolute(path).is_ok_and(|p| p.starts_with(dir))
}

fn read_error(e: &walk::ReadError) -> String {
    match e {
        walk::ReadError::TooLarge(size) => format!(
            "it is {size} bytes, more than a spec file may be ({})",
            limits::mib(limits::MAX_FILE_BYTES)
        ),
        walk::ReadError::NotRegular(kind) => format!("it is {kind}, not a regular file"),
        walk::ReadError::NotUtf8 => "it is not UTF-8 text".into(),
        walk::ReadError::Io(e) => e.to_string(),
    }
}

fn diagnostic(e: FmtError, id: FileId, display: &str) -> Diagnostic {
    match e {
        FmtError::Invalid(d) => *d,
        FmtError::Unsupported { line, col, what } => {
            let at = crate::diag::source::Pos { line, col };
            let span = Span {
                file: id,
                start: at,
                end: crate::diag::source::Pos { line, col: col + 1 },
            };
            Diagnostic::error(Code::Syntax, span, format!("cannot format: {what}"))
                .with_hint(format!("{display} was left as it is"))
        }
        FmtError::Changed(_) => {
            Diagnostic::error(Code::Syntax, Span::file_start(id), e.to_string())
        }
    }
}

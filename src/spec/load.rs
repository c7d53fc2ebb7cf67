//! Finds and parses an instance's spec files (DESIGN.md §2) into the typed model.
//!
//! Layout: `config/instance.{yaml,yml,toml}`, `pipelines/*.{yaml,yml,toml}` (one source each),
//! `registry/**/*.{yaml,yml,toml}` (lists of tables), `metrics/<category>/*.{yaml,yml,toml}`.
//! Files are read in sorted order so diagnostics and plans are deterministic. Which files may be read
//! at all is [`walk`](super::walk)'s decision; how much they may cost, [`limits`](super::limits)'.

use super::decode::Decoder;
use super::limits::{self, Cost, Meter, Shared, Stop, INSTANCE_LIMIT};
use super::model::{self, InstanceSpec, MetricSpec, SourceSpec, TableSpec};
use super::node::{Node, Value};
use super::walk::{self, Found, ReadError};
use super::{toml as toml_fmt, yaml};
use crate::diag::source::{display_path, FileId, SourceFile, SourceMap, Span};
use crate::diag::{Code, Diagnostic, Diagnostics};
use std::path::{Path, PathBuf};

pub const SPEC_EXTENSIONS: &[&str] = &["yaml", "yml", "toml"];

/// Everything loaded from one instance directory.
#[derive(Debug, Default)]
pub struct Specs {
    pub root: PathBuf,
    pub files: SourceMap,
    pub instance: Option<InstanceSpec>,
    pub sources: Vec<SourceSpec>,
    pub tables: Vec<TableSpec>,
    /// `descriptions:` of registry files, in reading order.
    pub table_docs: Vec<super::model::TableDocsSpec>,
    pub metrics: Vec<MetricSpec>,
    /// What the files meant to define but did not, because a file could not be read or parsed or
    /// an object in it was invalid. Validation says nothing about references to these: the error
    /// that dropped them is the one to fix, and it is already reported.
    pub unresolved: Unresolved,
}

/// Names the specs failed to define (see [`Specs::unresolved`]).
#[derive(Debug, Default)]
pub struct Unresolved {
    /// A pipelines file was not read or not parsed: any source name may be one it defines.
    pub any_source: bool,
    /// A pipelines or registry file was not read or not parsed: any view may be one it defines.
    pub any_view: bool,
    /// Source names declared in files that had errors.
    pub sources: std::collections::BTreeSet<String>,
    /// View names (lowercase) of tables and transforms declared in files that had errors.
    pub views: std::collections::BTreeSet<String>,
}

impl Unresolved {
    /// Whether a missing source called `name` may be one an erroneous file meant to define.
    pub fn source(&self, name: &str) -> bool {
        self.any_source || self.sources.contains(name)
    }

    /// Whether a missing view called `name` (any case) may be one an erroneous file meant to define.
    pub fn view(&self, name: &str) -> bool {
        self.any_view || self.views.contains(&name.to_lowercase())
    }

    fn merge(&mut self, other: Unresolved) {
        self.any_source |= other.any_source;
        self.any_view |= other.any_view;
        self.sources.extend(other.sources);
        self.views.extend(other.views);
    }

    /// A file of `kind` defined nothing at all (not read, not parsed).
    fn whole_file(&mut self, kind: &Kind) {
        match kind {
            Kind::Source { .. } => {
                self.any_source = true;
                self.any_view = true;
            }
            Kind::Registry => self.any_view = true,
            Kind::Instance | Kind::Metric { .. } => {}
        }
    }

    /// A file of `kind` parsed as `node` but had errors: what it declares may be missing, so its
    /// declared names (read straight from the tree, valid or not) are remembered.
    fn declared_in(&mut self, kind: &Kind, node: &Node) {
        let text = |n: Option<&Node>| match n.map(|n| &n.value) {
            Some(Value::Str(s)) => Some(s.clone()),
            _ => None,
        };
        let items = |n: Option<&Node>| match n.map(|n| &n.value) {
            Some(Value::Seq(items)) => items.clone(),
            _ => Vec::new(),
        };
        match kind {
            Kind::Source { stem } => {
                self.sources
                    .insert(text(node.get("name")).unwrap_or_else(|| stem.clone()));
                for t in items(node.get("transforms")) {
                    self.views
                        .extend(text(t.get("name")).map(|n| n.to_lowercase()));
                }
            }
            Kind::Registry => {
                for t in items(node.get("tables")) {
                    let name = text(t.get("name")).or_else(|| text(t.get("source_table")));
                    self.views.extend(name.map(|n| n.to_lowercase()));
                }
            }
            Kind::Instance | Kind::Metric { .. } => {}
        }
    }
}

impl Specs {
    pub fn transforms(&self) -> impl Iterator<Item = &model::TransformSpec> {
        self.sources.iter().flat_map(|s| s.transforms.iter())
    }

    pub fn source(&self, name: &str) -> Option<&SourceSpec> {
        self.sources.iter().find(|s| s.name.value == name)
    }
}

fn has_spec_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| SPEC_EXTENSIONS.contains(&e))
}

/// Which kind of spec a file holds, with what its decoding needs from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Instance,
    Source { stem: String },
    Registry,
    Metric { stem: String, folder: String },
}

enum Decoded {
    Instance(Option<InstanceSpec>),
    Source(Option<SourceSpec>),
    Registry((Vec<TableSpec>, Vec<super::model::TableDocsSpec>)),
    Metric(Option<Box<MetricSpec>>),
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One file parsed and decoded: its specs (none when it did not parse), its diagnostics, and what
/// parsing it cost.
struct FileResult {
    decoded: Option<Decoded>,
    diags: Diagnostics,
    cost: Cost,
    /// What it failed to define, when it had errors.
    unresolved: Unresolved,
}

/// Parses and decodes one file, charging `meter`; `None` when the shared instance budget ran out
/// before it was done (see [`limits::Exceeded::Interrupted`]).
fn decode_file(
    file: &SourceFile,
    id: FileId,
    kind: &Kind,
    meter: &mut Meter,
) -> Option<FileResult> {
    let mut diags = Diagnostics::default();
    let is_toml = file.path.extension().is_some_and(|e| e == "toml");
    let parsed = if is_toml {
        toml_fmt::parse_metered(file, id, meter)
    } else {
        yaml::parse_metered(&file.text, id, meter)
    };
    let cost = meter.used();
    let node: Node = match parsed {
        Ok(node) => node,
        Err(Stop::Interrupted) => return None,
        Err(Stop::Invalid(d)) => {
            diags.push(*d);
            let mut unresolved = Unresolved::default();
            unresolved.whole_file(kind);
            return Some(FileResult {
                decoded: None,
                diags,
                cost,
                unresolved,
            });
        }
    };
    let mut dec = Decoder::new(&mut diags);
    let decoded = match kind {
        Kind::Instance => Decoded::Instance(model::decode_instance(&mut dec, &node, id)),
        Kind::Source { stem } => Decoded::Source(model::decode_source(&mut dec, &node, id, stem)),
        Kind::Registry => Decoded::Registry(model::decode_registry(&mut dec, &node, id)),
        Kind::Metric { stem, folder } => {
            Decoded::Metric(model::decode_metric(&mut dec, &node, id, stem, folder).map(Box::new))
        }
    };
    let mut unresolved = Unresolved::default();
    if diags.error_count() > 0 {
        unresolved.declared_in(kind, &node);
    }
    Some(FileResult {
        decoded: Some(decoded),
        diags,
        cost,
        unresolved,
    })
}

/// A diagnostic about a whole file, at its first position.
fn at_file(files: &mut SourceMap, root: &Path, path: &Path) -> Span {
    let id = files.add(SourceFile::unread(
        display_path(root, path),
        path.to_path_buf(),
    ));
    Span::file_start(id)
}

/// Loads every spec file under `root`. Never fails: problems are diagnostics.
///
/// Files are listed and read in sorted order, then parsed and decoded on all cores (each file is
/// independent); results are merged back in file order so output stays deterministic — including
/// which file is reported when the instance's files together exceed the limits.
pub fn load(root: &Path) -> (Specs, Diagnostics) {
    load_files(root, false)
}

/// Loads only `config/instance.*` under `root` (what [`crate::instance::Instance::open`] needs):
/// the other files are neither listed nor read.
pub fn load_instance(root: &Path) -> (Specs, Diagnostics) {
    load_files(root, true)
}

fn load_files(root: &Path, only_instance: bool) -> (Specs, Diagnostics) {
    let mut specs = Specs {
        root: root.to_path_buf(),
        ..Specs::default()
    };
    let mut diags = Diagnostics::default();
    let tree = match walk::Root::new(root) {
        Ok(tree) if root.is_dir() => tree,
        _ => {
            diags.push(
                Diagnostic::error(
                    Code::Layout,
                    None,
                    format!("instance directory {} does not exist", root.display()),
                )
                .with_hint(
                    "pass the instance root with --dir, or create one with `pipeline init DIR`",
                ),
            );
            return (specs, diags);
        }
    };
    let jobs = list(root, tree, only_instance, &mut specs.files, &mut diags);
    let work = read_all(
        root,
        jobs,
        &mut specs.files,
        &mut diags,
        &mut specs.unresolved,
    );
    let results = parse_all(&specs.files, &work);
    // Files after one that crossed the instance's limits were not decoded.
    for (_, kind) in work.iter().skip(results.len()) {
        specs.unresolved.whole_file(kind);
    }
    for (decoded, d, unresolved) in results {
        diags.extend(d);
        specs.unresolved.merge(unresolved);
        match decoded {
            Some(Decoded::Instance(i)) => specs.instance = i,
            Some(Decoded::Source(s)) => specs.sources.extend(s),
            Some(Decoded::Registry((t, d))) => {
                specs.tables.extend(t);
                specs.table_docs.extend(d);
            }
            Some(Decoded::Metric(m)) => specs.metrics.extend(m.map(|m| *m)),
            None => {}
        }
    }
    (specs, diags)
}

/// Every spec file of the instance at `root` that [`load`] reads, in reading order, with the kind
/// each holds (for `pipeline fmt`). Refused paths and layout problems are diagnostics, with their
/// files added to `files`.
pub fn spec_files(root: &Path, files: &mut SourceMap) -> (Vec<(PathBuf, Kind)>, Diagnostics) {
    let mut diags = Diagnostics::default();
    match walk::Root::new(root) {
        Ok(tree) if root.is_dir() => {
            let jobs = list(root, tree, false, files, &mut diags);
            (jobs, diags)
        }
        _ => {
            diags.push(Diagnostic::error(
                Code::Layout,
                None,
                format!("instance directory {} does not exist", root.display()),
            ));
            (Vec::new(), diags)
        }
    }
}

/// The spec files of the layout (only the instance file when `only_instance`), in reading order,
/// with what kind each holds. Refused paths become diagnostics here.
fn list(
    root: &Path,
    mut tree: walk::Root,
    only_instance: bool,
    files: &mut SourceMap,
    diags: &mut Diagnostics,
) -> Vec<(PathBuf, Kind)> {
    let mut refused = |files: &mut SourceMap, found: Found| -> Option<PathBuf> {
        match found {
            Found::File(p) => Some(p),
            Found::Refused(p, why) => {
                let span = at_file(files, root, &p);
                diags.push(
                    Diagnostic::error(
                        Code::UnsafeFile,
                        span,
                        format!("{} {}", display_path(root, &p), why.describe()),
                    )
                    .with_hint(why.hint()),
                );
                None
            }
        }
    };
    let mut jobs: Vec<(PathBuf, Kind)> = Vec::new();
    let is_instance_file =
        |p: &Path| p.file_stem().is_some_and(|s| s == "instance") && has_spec_extension(p);
    let mut config = Vec::new();
    tree.spec_files(&root.join("config"), false, &is_instance_file, &mut config);
    let mut instance_files: Vec<PathBuf> = config
        .into_iter()
        .filter_map(|f| refused(files, f))
        .collect();
    // With several, the first by SPEC_EXTENSIONS' order is read (and the others reported).
    instance_files.sort_by_key(|p| {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
        SPEC_EXTENSIONS.iter().position(|e| *e == ext)
    });
    let mut layout_errors = Vec::new();
    match instance_files.as_slice() {
        [] => layout_errors.push(
            Diagnostic::error(
                Code::Layout,
                None,
                format!("no config/instance.yaml in {}", root.display()),
            )
            .with_hint("is this an instance root? pass it with --dir, or create one with `pipeline init DIR`"),
        ),
        [one, rest @ ..] => {
            for extra in rest {
                layout_errors.push(
                    Diagnostic::error(
                        Code::Layout,
                        None,
                        format!(
                            "both {} and {} exist; an instance has one config file",
                            display_path(root, one),
                            display_path(root, extra)
                        ),
                    )
                    .with_hint("delete one of them"),
                );
            }
            jobs.push((one.clone(), Kind::Instance));
        }
    }
    if only_instance {
        for d in layout_errors {
            diags.push(d);
        }
        return jobs;
    }
    let mut found = Vec::new();
    tree.spec_files(
        &root.join("pipelines"),
        false,
        &has_spec_extension,
        &mut found,
    );
    jobs.extend(
        found
            .into_iter()
            .filter_map(|f| refused(files, f))
            .map(|p| {
                let stem = stem(&p);
                (p, Kind::Source { stem })
            }),
    );
    let mut found = Vec::new();
    tree.spec_files(
        &root.join("registry"),
        true,
        &has_spec_extension,
        &mut found,
    );
    jobs.extend(
        found
            .into_iter()
            .filter_map(|f| refused(files, f))
            .map(|p| (p, Kind::Registry)),
    );
    let metrics_dir = root.join("metrics");
    let mut found = Vec::new();
    tree.spec_files(&metrics_dir, true, &has_spec_extension, &mut found);
    jobs.extend(
        found
            .into_iter()
            .filter_map(|f| refused(files, f))
            .map(|p| {
                let folder = p
                    .parent()
                    .filter(|d| *d != metrics_dir)
                    .map(stem)
                    .unwrap_or_default();
                let stem = stem(&p);
                (p, Kind::Metric { stem, folder })
            }),
    );
    for d in layout_errors {
        diags.push(d);
    }
    jobs
}

/// Reads the listed files in order (cheap, and file ids then follow the sorted order), each within
/// the per-file size limit and all within the instance's.
fn read_all(
    root: &Path,
    jobs: Vec<(PathBuf, Kind)>,
    files: &mut SourceMap,
    diags: &mut Diagnostics,
    unresolved: &mut Unresolved,
) -> Vec<(FileId, Kind)> {
    let mut work: Vec<(FileId, Kind)> = Vec::with_capacity(jobs.len());
    let mut read_bytes: u64 = 0;
    let mut jobs = jobs.into_iter();
    while let Some((path, kind)) = jobs.next() {
        let display = display_path(root, &path);
        let left = limits::MAX_INSTANCE_BYTES.saturating_sub(read_bytes);
        let limit = limits::MAX_FILE_BYTES.min(left);
        let problem = match walk::read(&path, limit) {
            Ok(text) => {
                read_bytes += text.len() as u64;
                let id = files.add(SourceFile::new(display, path, text));
                work.push((id, kind));
                continue;
            }
            Err(ReadError::TooLarge(size))
                if limit < limits::MAX_FILE_BYTES && size <= limits::MAX_FILE_BYTES =>
            {
                let span = at_file(files, root, &path);
                diags.push(
                    Diagnostic::error(
                        Code::Syntax,
                        span,
                        format!(
                            "reading {display} ({size} bytes) would take the instance's spec files \
                             past {} together; it and the files after it were not read",
                            limits::mib(limits::MAX_INSTANCE_BYTES)
                        ),
                    )
                    .with_hint(
                        "no realistic instance has this much in its specs; look for generated or \
                         copied files that do not belong there (limits: docs/security.md)",
                    ),
                );
                unresolved.whole_file(&kind);
                for (_, rest) in jobs.by_ref() {
                    unresolved.whole_file(&rest);
                }
                break;
            }
            Err(ReadError::TooLarge(size)) => (
                Code::Syntax,
                format!(
                    "{display} is {size} bytes; a spec file may be at most {} and it was not read",
                    limits::mib(limits::MAX_FILE_BYTES)
                ),
                "split it into several files (registry/ reads every file below it); limits: \
                 docs/security.md",
            ),
            Err(ReadError::NotRegular(kind)) => (
                Code::UnsafeFile,
                format!("{display} is {kind}, not a regular file; it was not read"),
                "spec files must be regular files; remove this one",
            ),
            Err(ReadError::NotUtf8) => (
                Code::Syntax,
                format!("{display} is not UTF-8 text"),
                "save the file as UTF-8",
            ),
            Err(ReadError::Io(e)) => (
                Code::Syntax,
                format!("cannot read {display}: {e}"),
                "check the file's permissions",
            ),
        };
        let (code, message, hint) = problem;
        unresolved.whole_file(&kind);
        let span = at_file(files, root, &path);
        diags.push(Diagnostic::error(code, span, message).with_hint(hint));
    }
    work
}

/// Parses and decodes every file, on all cores; results in file order.
///
/// Each file is held to the per-file limits on its own. The instance limit is a sum over files in
/// file order, but files parse in parallel: while they do, a [`Shared`] count stops every parse once
/// the instance's budget is spent (memory stays bounded whichever thread gets there first). Then,
/// walking the results in file order, a file that was stopped, or whose cost takes the running total
/// past the limit, is parsed again on its own against exactly what the files before it left — so the
/// file and the value reported, and everything else in the output, never depend on timing. Files
/// after the one that crosses the limit are not reported on.
fn parse_all(
    files: &SourceMap,
    work: &[(FileId, Kind)],
) -> Vec<(Option<Decoded>, Diagnostics, Unresolved)> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(work.len().div_ceil(8).max(1));
    let shared = Shared::default();
    let mut results: Vec<(usize, Option<FileResult>)> = std::thread::scope(|scope| {
        let shared = &shared;
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    work.iter()
                        .enumerate()
                        .skip(w)
                        .step_by(workers)
                        .map(|(i, (id, kind))| {
                            let mut meter = Meter::shared(shared);
                            (i, decode_file(files.get(*id), *id, kind, &mut meter))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("spec decoding does not panic"))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);

    let mut out = Vec::with_capacity(results.len());
    let mut total = Cost::default();
    for ((_, result), (id, kind)) in results.into_iter().zip(work) {
        let result = match result {
            Some(r) if total.plus(r.cost).within(INSTANCE_LIMIT) => r,
            _ => {
                let mut meter = Meter::with_remaining(INSTANCE_LIMIT.minus(total));
                let again = decode_file(files.get(*id), *id, kind, &mut meter)
                    .expect("a meter of its own is never interrupted");
                if meter.crossed_instance() {
                    // Whatever it decoded before the limit stopped it is not the whole file.
                    let mut unresolved = again.unresolved;
                    unresolved.whole_file(kind);
                    out.push((again.decoded, again.diags, unresolved));
                    break;
                }
                again
            }
        };
        total = total.plus(result.cost);
        out.push((result.decoded, result.diags, result.unresolved));
    }
    out
}

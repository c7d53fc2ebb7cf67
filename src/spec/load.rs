//! Finds and parses an instance's spec files (DESIGN.md §2) into the typed model.
//!
//! Layout: `config/instance.{yaml,yml,toml}`, `pipelines/*.{yaml,yml,toml}` (one source each),
//! `registry/**/*.{yaml,yml,toml}` (lists of tables), `metrics/<category>/*.{yaml,yml,toml}`.
//! Files are read in sorted order so diagnostics and plans are deterministic.

use super::decode::Decoder;
use super::model::{self, InstanceSpec, MetricSpec, SourceSpec, TableSpec};
use super::node::Node;
use super::source::{display_path, FileId, SourceFile, SourceMap};
use super::{toml as toml_fmt, yaml};
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
    pub metrics: Vec<MetricSpec>,
}

impl Specs {
    pub fn transforms(&self) -> impl Iterator<Item = &model::TransformSpec> {
        self.sources.iter().flat_map(|s| s.transforms.iter())
    }

    pub fn source(&self, name: &str) -> Option<&SourceSpec> {
        self.sources.iter().find(|s| s.name.value == name)
    }
}

fn is_spec_file(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| SPEC_EXTENSIONS.contains(&e))
}

/// Spec files directly in `dir` (or, with `recursive`, below it), sorted.
fn spec_files(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() && recursive {
            spec_files(&p, true, out);
        } else if is_spec_file(&p) {
            out.push(p);
        }
    }
}

/// Which kind of spec a file holds, with what its decoding needs from its path.
enum Kind {
    Instance,
    Source { stem: String },
    Registry,
    Metric { stem: String, folder: String },
}

enum Decoded {
    Instance(Option<InstanceSpec>),
    Source(Option<SourceSpec>),
    Registry(Vec<TableSpec>),
    Metric(Option<Box<MetricSpec>>),
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Parses and decodes one file into its specs and diagnostics.
fn decode_file(file: &SourceFile, id: FileId, kind: &Kind) -> (Option<Decoded>, Diagnostics) {
    let mut diags = Diagnostics::default();
    let is_toml = file.path.extension().is_some_and(|e| e == "toml");
    let parsed = if is_toml {
        toml_fmt::parse(file, id)
    } else {
        yaml::parse(&file.text, id)
    };
    let node: Node = match parsed {
        Ok(node) => node,
        Err(d) => {
            diags.push(d);
            return (None, diags);
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
    (Some(decoded), diags)
}

/// Loads every spec file under `root`. Never fails: problems are diagnostics.
///
/// Files are read in sorted order, then parsed and decoded on all cores (each file is independent);
/// results are merged back in file order so output stays deterministic.
pub fn load(root: &Path) -> (Specs, Diagnostics) {
    let mut specs = Specs {
        root: root.to_path_buf(),
        ..Specs::default()
    };
    let mut diags = Diagnostics::default();
    if !root.is_dir() {
        diags.push(
            Diagnostic::error(
                Code::Layout,
                None,
                format!("instance directory {} does not exist", root.display()),
            )
            .with_hint("pass the instance root with --dir, or create one with `pipeline init DIR`"),
        );
        return (specs, diags);
    }

    let mut jobs: Vec<(PathBuf, Kind)> = Vec::new();
    let instance_files: Vec<PathBuf> = SPEC_EXTENSIONS
        .iter()
        .map(|ext| root.join("config").join(format!("instance.{ext}")))
        .filter(|p| p.is_file())
        .collect();
    match instance_files.as_slice() {
        [] => diags.push(
            Diagnostic::error(
                Code::Layout,
                None,
                format!("no config/instance.yaml in {}", root.display()),
            )
            .with_hint("is this an instance root? pass it with --dir, or create one with `pipeline init DIR`"),
        ),
        [one, rest @ ..] => {
            for extra in rest {
                diags.push(
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
    let mut files = Vec::new();
    spec_files(&root.join("pipelines"), false, &mut files);
    jobs.extend(files.into_iter().map(|p| {
        let stem = stem(&p);
        (p, Kind::Source { stem })
    }));
    let mut files = Vec::new();
    spec_files(&root.join("registry"), true, &mut files);
    jobs.extend(files.into_iter().map(|p| (p, Kind::Registry)));
    let metrics_dir = root.join("metrics");
    let mut files = Vec::new();
    spec_files(&metrics_dir, true, &mut files);
    jobs.extend(files.into_iter().map(|p| {
        let folder = p
            .parent()
            .filter(|d| *d != metrics_dir)
            .map(stem)
            .unwrap_or_default();
        let stem = stem(&p);
        (p, Kind::Metric { stem, folder })
    }));

    // Read sequentially (cheap), so file ids follow the sorted order.
    let mut work: Vec<(FileId, Kind)> = Vec::with_capacity(jobs.len());
    for (path, kind) in jobs {
        let display = display_path(root, &path);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let id = specs.files.add(SourceFile::new(display, path, text));
                work.push((id, kind));
            }
            Err(e) => diags.push(
                Diagnostic::error(Code::Syntax, None, format!("cannot read {display}: {e}"))
                    .with_hint("check the file's permissions and that it is UTF-8 text"),
            ),
        }
    }

    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(work.len().div_ceil(8).max(1));
    let files = &specs.files;
    let mut results: Vec<(usize, Option<Decoded>, Diagnostics)> = std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    work.iter()
                        .enumerate()
                        .skip(w)
                        .step_by(workers)
                        .map(|(i, (id, kind))| {
                            let (decoded, d) = decode_file(files.get(*id), *id, kind);
                            (i, decoded, d)
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
    results.sort_by_key(|(i, _, _)| *i);
    for (_, decoded, d) in results {
        diags.extend(d);
        match decoded {
            Some(Decoded::Instance(i)) => specs.instance = i,
            Some(Decoded::Source(s)) => specs.sources.extend(s),
            Some(Decoded::Registry(t)) => specs.tables.extend(t),
            Some(Decoded::Metric(m)) => specs.metrics.extend(m.map(|m| *m)),
            None => {}
        }
    }
    (specs, diags)
}

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

struct Loader {
    specs: Specs,
    diags: Diagnostics,
}

impl Loader {
    /// Reads and parses one file; `None` (with a diagnostic) if it cannot be read or parsed.
    fn parse(&mut self, path: &Path) -> Option<(FileId, Node)> {
        let display = display_path(&self.specs.root, path);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                self.diags.push(
                    Diagnostic::error(Code::Syntax, None, format!("cannot read {display}: {e}"))
                        .with_hint("check the file's permissions and that it is UTF-8 text"),
                );
                return None;
            }
        };
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        let id = self
            .specs
            .files
            .add(SourceFile::new(display, path.to_path_buf(), text));
        let file = self.specs.files.get(id);
        let parsed = if is_toml {
            toml_fmt::parse(file, id)
        } else {
            yaml::parse(&file.text, id)
        };
        match parsed {
            Ok(node) => Some((id, node)),
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Loads every spec file under `root`. Never fails: problems are diagnostics.
pub fn load(root: &Path) -> (Specs, Diagnostics) {
    let mut l = Loader {
        specs: Specs {
            root: root.to_path_buf(),
            ..Specs::default()
        },
        diags: Diagnostics::default(),
    };
    if !root.is_dir() {
        l.diags.push(
            Diagnostic::error(
                Code::Layout,
                None,
                format!("instance directory {} does not exist", root.display()),
            )
            .with_hint("pass the instance root with --dir, or create one with `pipeline init DIR`"),
        );
        return (l.specs, l.diags);
    }

    let instance_files: Vec<PathBuf> = SPEC_EXTENSIONS
        .iter()
        .map(|ext| root.join("config").join(format!("instance.{ext}")))
        .filter(|p| p.is_file())
        .collect();
    match instance_files.as_slice() {
        [] => l.diags.push(
            Diagnostic::error(
                Code::Layout,
                None,
                format!("no config/instance.yaml in {}", root.display()),
            )
            .with_hint("is this an instance root? pass it with --dir, or create one with `pipeline init DIR`"),
        ),
        [one, rest @ ..] => {
            for extra in rest {
                l.diags.push(
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
            if let Some((id, node)) = l.parse(one) {
                let mut dec = Decoder::new(&mut l.diags);
                l.specs.instance = model::decode_instance(&mut dec, &node, id);
            }
        }
    }

    let mut files = Vec::new();
    spec_files(&root.join("pipelines"), false, &mut files);
    for path in files {
        if let Some((id, node)) = l.parse(&path) {
            let mut dec = Decoder::new(&mut l.diags);
            if let Some(s) = model::decode_source(&mut dec, &node, id, &stem(&path)) {
                l.specs.sources.push(s);
            }
        }
    }

    let mut files = Vec::new();
    spec_files(&root.join("registry"), true, &mut files);
    for path in files {
        if let Some((id, node)) = l.parse(&path) {
            let mut dec = Decoder::new(&mut l.diags);
            let tables = model::decode_registry(&mut dec, &node, id);
            l.specs.tables.extend(tables);
        }
    }

    let metrics_dir = root.join("metrics");
    let mut files = Vec::new();
    spec_files(&metrics_dir, true, &mut files);
    for path in files {
        let folder = path
            .parent()
            .filter(|p| *p != metrics_dir)
            .map(stem)
            .unwrap_or_default();
        if let Some((id, node)) = l.parse(&path) {
            let mut dec = Decoder::new(&mut l.diags);
            if let Some(m) = model::decode_metric(&mut dec, &node, id, &stem(&path), &folder) {
                l.specs.metrics.push(m);
            }
        }
    }
    (l.specs, l.diags)
}

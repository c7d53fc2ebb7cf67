//! `pipeline metrics import DIR`: converting metric definitions written in the older layout into
//! metric spec files (`metrics/<category>/<name>.yaml`, see docs/specs.md).
//!
//! The older layout is `<DIR>/<category>/<metric>.yml` (or `.yaml`); a file holds one mapping or a
//! list of them. Each definition becomes one spec file whose SQL is either the definition's own `sql`
//! or a query built from its `table`, `expression` and `filters`. What has no place in the spec
//! (validation rules, unknown keys) is reported as a warning, and validation rules are kept as a note
//! so nothing is silently lost. A definition that cannot become a valid spec is skipped, with why.
//!
//! This module plans and writes files and returns an [`ImportReport`]; it prints nothing. The CLI
//! (`pipeline metrics import DIR [--dry-run]`) renders the report. It does not validate the result
//! against the instance (tables, SQL parsing): `pipeline validate` does that afterwards.
//!
//! Output is deterministic (sorted input, fixed key order, hand-written YAML), so importing the same
//! directory again changes no file. Every generated file starts with a marker comment; an existing
//! target is only replaced when it carries that marker, so hand-written specs are never overwritten.

use crate::diag::source::{display_path, FileId};
use crate::names::is_metric_name;
use crate::spec::fields::{GRAINS, METRIC_TYPES};
use crate::spec::node::{Node, Value};
use crate::spec::validate::render_metric;
use crate::spec::yaml;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// How to import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The instance's `metrics/` directory; files go to `<out_dir>/<category>/<name>.yaml`.
    pub out_dir: PathBuf,
    /// Compute the report but write nothing.
    pub dry_run: bool,
}

/// What an import did (or, with `dry_run`, would do). Lists follow the sorted input order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Spec files created or changed.
    pub written: Vec<PathBuf>,
    /// Spec files whose content was already identical.
    pub unchanged: Vec<PathBuf>,
    /// Definitions (or whole files) that could not be converted, with why.
    pub skipped: Vec<Problem>,
    /// Parts of converted definitions that were not carried over (or not as written), with why.
    pub warnings: Vec<Problem>,
}

/// One thing the report says about a definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file of the older layout the definition is in.
    pub file: PathBuf,
    /// The metric's name as written in that file (or its file stem); `None` when the problem concerns
    /// the whole file or a definition without a usable name.
    pub metric: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.metric {
            Some(m) => write!(f, "{} ({m}): {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Failures that stop the whole import. Problems with single files or definitions are not errors:
/// they are collected in the report.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot list {}: {source}", path.display())]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The comment opening every generated file: `# Imported from <what> by pipeline <command>; a
/// re-import overwrites …`. A target whose first line has this shape (written by this import or by
/// `pipeline catalog import`) may be replaced by a later import; any other existing file is left
/// alone.
const MARKER_HEAD: &str = "# Imported from ";
const MARKER_BY: &str = " by pipeline ";
const MARKER_TAIL: &str = "; a re-import overwrites this file until you delete this line.";
/// The command named in this import's marker.
const COMMAND: &str = "metrics import";

/// Extensions of the older layout's files.
const LEGACY_EXTENSIONS: &[&str] = &["yml", "yaml"];

/// Extensions the instance loader reads metrics from: a target under another one would be a second
/// spec with the same id.
const SPEC_EXTENSIONS: &[&str] = &["yaml", "yml", "toml"];

/// Imports every definition under `dir` into `opts.out_dir`.
pub fn import(dir: &Path, opts: &ImportOptions) -> Result<ImportReport, ImportError> {
    if !dir.is_dir() {
        return Err(ImportError::NotADirectory(dir.to_path_buf()));
    }
    // When the output lies inside the input (importing from an instance root), its files must not be
    // read back as definitions of the older layout.
    let exclude = opts.out_dir.canonicalize().ok();
    let mut files = Vec::new();
    legacy_files(dir, exclude.as_deref(), &mut files)?;

    let mut report = ImportReport::default();
    // Target (relative `<category>/<name>`) → the definition that claimed it first.
    let mut claimed: HashMap<(String, String), String> = HashMap::new();
    for path in files {
        import_file(dir, &path, opts, &mut claimed, &mut report)?;
    }
    Ok(report)
}

/// Files of the older layout under `dir`, sorted, skipping hidden entries and `exclude`.
fn legacy_files(
    dir: &Path,
    exclude: Option<&Path>,
    out: &mut Vec<PathBuf>,
) -> Result<(), ImportError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ImportError::List {
        path: dir.to_path_buf(),
        source,
    })?;
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
        if p.is_dir() {
            if exclude.is_some_and(|x| p.canonicalize().is_ok_and(|c| c == x)) {
                continue;
            }
            legacy_files(&p, exclude, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| LEGACY_EXTENSIONS.contains(&e))
        {
            out.push(p);
        }
    }
    Ok(())
}

/// Where a definition was found: what its defaults and messages need.
struct Place<'a> {
    /// Path relative to the import directory, `/`-separated (the marker and messages show it).
    rel: &'a str,
    stem: &'a str,
    /// The folder the file is in, if it is not the import directory itself: the default category.
    folder: Option<&'a str>,
    /// 1-based position in the file's list, when the file holds a list.
    item: Option<usize>,
}

fn import_file(
    dir: &Path,
    path: &Path,
    opts: &ImportOptions,
    claimed: &mut HashMap<(String, String), String>,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    let skip_file = |report: &mut ImportReport, message: String| {
        report.skipped.push(Problem {
            file: path.to_path_buf(),
            metric: None,
            message,
        });
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            skip_file(report, format!("cannot read the file: {e}"));
            return Ok(());
        }
    };
    let node = match yaml::parse(&text, FileId(0)) {
        Ok(n) => n,
        Err(d) => {
            let at = d
                .span
                .map(|s| format!(" at line {}, column {}", s.start.line, s.start.col))
                .unwrap_or_default();
            skip_file(report, format!("not valid YAML{at}: {}", d.message));
            return Ok(());
        }
    };
    let rel = display_path(dir, path);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let folder = path
        .parent()
        .filter(|p| *p != dir)
        .and_then(|p| p.file_name())
        .map(|f| f.to_string_lossy().into_owned());
    let definitions: Vec<(&Node, Option<usize>)> = match &node.value {
        Value::Map(_) => vec![(&node, None)],
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, n)| (n, Some(i + 1)))
            .collect(),
        Value::Null => {
            skip_file(report, "the file is empty".into());
            return Ok(());
        }
        other => {
            skip_file(
                report,
                format!(
                    "expected a metric definition (a mapping) or a list of them, found {}",
                    other.kind()
                ),
            );
            return Ok(());
        }
    };

    for (def, item) in definitions {
        let place = Place {
            rel: &rel,
            stem: &stem,
            folder: folder.as_deref(),
            item,
        };
        let converted = match convert(def, &place) {
            Ok(c) => c,
            Err(skip) => {
                report.skipped.push(Problem {
                    file: path.to_path_buf(),
                    metric: skip.metric,
                    message: skip.message,
                });
                continue;
            }
        };
        let problem = |message: String| Problem {
            file: path.to_path_buf(),
            metric: Some(converted.label.clone()),
            message,
        };
        let here = match item {
            Some(i) => format!("{rel} (item {i})"),
            None => rel.clone(),
        };
        let key = (converted.category.clone(), converted.name.clone());
        if let Some(first) = claimed.get(&key) {
            report.skipped.push(problem(format!(
                "{first} already imports metric `{}/{}`; metric ids must be unique",
                key.0, key.1
            )));
            continue;
        }
        claimed.insert(key, here);

        let target_dir = opts.out_dir.join(&converted.category);
        let target = target_dir.join(format!("{}.yaml", converted.name));
        let content = render(&converted.spec, place.rel);
        match plan_write(&target_dir, &converted.name, &target, &content) {
            Outcome::Unchanged => report.unchanged.push(target),
            Outcome::Write => {
                if !opts.dry_run {
                    write(&target, &content)?;
                }
                report.written.push(target);
            }
            Outcome::Refuse(why) => {
                report.skipped.push(problem(why));
                continue;
            }
        }
        report
            .warnings
            .extend(converted.warnings.into_iter().map(problem));
    }
    Ok(())
}

/// What to do with a generated spec file.
pub(crate) enum Outcome {
    Write,
    Unchanged,
    /// An existing file this import may not replace (hand-written, or the same id under another
    /// extension), with why.
    Refuse(String),
}

/// Decides what to do with `target` (`<target_dir>/<name>.yaml`), whose new content is `content`:
/// identical content is left alone, a generated file (the marker on its first line) or a missing
/// one is written, anything else refused.
pub(crate) fn plan_write(target_dir: &Path, name: &str, target: &Path, content: &str) -> Outcome {
    // The same metric under another extension would be a second spec with the same id.
    for ext in SPEC_EXTENSIONS.iter().filter(|e| **e != "yaml") {
        let other = target_dir.join(format!("{name}.{ext}"));
        if other.exists() {
            return Outcome::Refuse(format!(
                "{} already defines this metric; remove it to import",
                other.display()
            ));
        }
    }
    match std::fs::read_to_string(target) {
        Ok(existing) if existing == content => Outcome::Unchanged,
        Ok(existing) if is_marker(existing.lines().next().unwrap_or("")) => Outcome::Write,
        Ok(_) => Outcome::Refuse(format!(
            "{} exists and was not written by an import; left as it is",
            target.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::Write,
        Err(e) => Outcome::Refuse(format!("cannot read {}: {e}", target.display())),
    }
}

/// Writes `content` to `target`, creating its folder.
pub(crate) fn write(target: &Path, content: &str) -> Result<(), ImportError> {
    let err = |source| ImportError::Write {
        path: target.to_path_buf(),
        source,
    };
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    std::fs::write(target, content).map_err(err)
}

/// The marker line of a file generated from `what` by `pipeline <command>`.
pub(crate) fn marker(what: &str, command: &str) -> String {
    // A control character in a file name would end the comment line early.
    let what: String = what
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!("{MARKER_HEAD}{what}{MARKER_BY}{command}{MARKER_TAIL}")
}

/// Whether `line` (a file's first) marks the file as generated by an import.
pub(crate) fn is_marker(line: &str) -> bool {
    line.starts_with(MARKER_HEAD) && line.contains(MARKER_BY) && line.ends_with(MARKER_TAIL)
}

// ---------------------------------------------------------------- conversion

/// A metric spec, field by field, in the order the file is written.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct MetricDoc {
    pub display_name: Option<String>,
    pub description: String,
    pub owner: Option<String>,
    pub metric_type: Option<&'static str>,
    pub unit: Option<String>,
    pub grain: Vec<&'static str>,
    pub time_column: Option<String>,
    pub tables: Vec<String>,
    pub dimensions: Vec<String>,
    pub synonyms: Vec<String>,
    pub notes: Vec<String>,
    pub sql: String,
    pub variants: Vec<(String, String)>,
}

struct Converted {
    category: String,
    name: String,
    /// The name as written in the older file, for messages.
    label: String,
    spec: MetricDoc,
    warnings: Vec<String>,
}

struct Skip {
    metric: Option<String>,
    message: String,
}

/// The keys of one definition, after aliases are told apart.
#[derive(Default)]
struct Keys<'a> {
    name: Option<&'a Node>,
    category: Option<&'a Node>,
    display_name: Option<&'a Node>,
    label: Option<&'a Node>,
    description: Option<&'a Node>,
    owner: Option<&'a Node>,
    unit: Option<&'a Node>,
    type_: Option<&'a Node>,
    aggregation: Option<&'a Node>,
    synonyms: Option<&'a Node>,
    grain: Option<&'a Node>,
    grains: Option<&'a Node>,
    time_column: Option<&'a Node>,
    date_column: Option<&'a Node>,
    dimensions: Option<&'a Node>,
    table: Option<&'a Node>,
    table_name: Option<&'a Node>,
    expression: Option<&'a Node>,
    filters: Option<&'a Node>,
    validation: Option<&'a Node>,
    notes: Option<&'a Node>,
    sql: Option<&'a Node>,
    /// `sql_by_<x>` keys: (`by_<x>`, SQL).
    variants: Vec<(String, &'a Node)>,
}

fn convert(def: &Node, place: &Place) -> Result<Converted, Skip> {
    let Value::Map(entries) = &def.value else {
        return Err(Skip {
            metric: None,
            message: format!(
                "item {} is {}, not a metric definition (a mapping)",
                place.item.unwrap_or(1),
                def.value.kind()
            ),
        });
    };
    let mut warnings = Vec::new();
    let mut keys = Keys::default();
    for (key, node) in entries {
        // `key:` with nothing after it means "not set", as in the spec files.
        if node.value == Value::Null {
            continue;
        }
        let slot = match key.name.as_str() {
            "name" => &mut keys.name,
            "category" => &mut keys.category,
            "display_name" => &mut keys.display_name,
            "label" => &mut keys.label,
            "description" => &mut keys.description,
            "owner" => &mut keys.owner,
            "unit" => &mut keys.unit,
            "type" => &mut keys.type_,
            "aggregation" => &mut keys.aggregation,
            "synonyms" => &mut keys.synonyms,
            "grain" => &mut keys.grain,
            "grains" => &mut keys.grains,
            "time_column" => &mut keys.time_column,
            "date_column" => &mut keys.date_column,
            "dimensions" => &mut keys.dimensions,
            "table" => &mut keys.table,
            "table_name" => &mut keys.table_name,
            "expression" => &mut keys.expression,
            "filters" => &mut keys.filters,
            "validation" => &mut keys.validation,
            "notes" => &mut keys.notes,
            "sql" => &mut keys.sql,
            other => {
                match other.strip_prefix("sql_by_").filter(|x| !x.is_empty()) {
                    Some(x) => keys.variants.push((format!("by_{x}"), node)),
                    None => warnings.push(format!(
                        "`{other}` not carried over: the metric spec has no such key"
                    )),
                }
                continue;
            }
        };
        *slot = Some(node);
    }

    // The name: it names the output file, so it must be usable before anything else.
    let raw_name = match (keys.name, place.item) {
        (Some(n), _) => text(n).ok_or_else(|| Skip {
            metric: None,
            message: format!("`name` must be text, found {}", n.value.kind()),
        })?,
        (None, Some(i)) => {
            return Err(Skip {
                metric: None,
                message: format!(
                    "item {i} has no `name`; in a file holding a list, every metric needs one"
                ),
            })
        }
        (None, None) => place.stem.to_owned(),
    };
    let skip = |message: String| Skip {
        metric: Some(raw_name.clone()),
        message,
    };
    let name = normalise_name(&raw_name).ok_or_else(|| {
        skip(format!(
            "`{raw_name}` cannot be made a metric name (lowercase letters, digits, `_` and `-`)"
        ))
    })?;
    if name != raw_name {
        warnings.push(format!(
            "name `{raw_name}` written as `{name}`: metric names are lowercase letters, digits, `_` and `-`"
        ));
    }
    let category = category_of(&keys, place, &mut warnings).map_err(skip)?;

    let display_name = pick(
        &mut warnings,
        ("display_name", keys.display_name),
        ("label", keys.label),
    );
    let display_name = optional_text(&mut warnings, "display_name", display_name);
    let owner = optional_text(&mut warnings, "owner", keys.owner.map(|n| ("owner", n)));
    let unit = optional_text(&mut warnings, "unit", keys.unit.map(|n| ("unit", n)));
    let metric_type = pick(
        &mut warnings,
        ("type", keys.type_),
        ("aggregation", keys.aggregation),
    )
    .and_then(|(key, n)| spec_type(&mut warnings, key, n));
    let mut grain = pick(
        &mut warnings,
        ("grain", keys.grain),
        ("grains", keys.grains),
    )
    .map(|(key, n)| grains(&mut warnings, key, n))
    .unwrap_or_default();
    let time_column = pick(
        &mut warnings,
        ("time_column", keys.time_column),
        ("date_column", keys.date_column),
    )
    .map(|(key, n)| required_text(key, n))
    .transpose()
    .map_err(skip)?;
    let dimensions = list(&mut warnings, "dimensions", keys.dimensions);
    let synonyms = list(&mut warnings, "synonyms", keys.synonyms);
    let mut notes = list(&mut warnings, "notes", keys.notes);
    if let Some(v) = keys.validation {
        notes.push(format!(
            "validation (from the older definition): {}",
            describe(v)
        ));
        warnings.push(
            "`validation` not carried over as a check: the metric spec has none; kept as a note"
                .into(),
        );
    }

    // The query: the definition's own SQL as is, else one built from table, expression and filters.
    let table = pick(
        &mut warnings,
        ("table", keys.table),
        ("table_name", keys.table_name),
    )
    .map(|(key, n)| required_text(key, n))
    .transpose()
    .map_err(skip)?;
    let mut tables = Vec::new();
    let sql = match keys.sql {
        Some(n) => {
            let sql = required_text("sql", n).map_err(skip)?;
            for (key, node) in [("expression", keys.expression), ("filters", keys.filters)] {
                if node.is_some() {
                    warnings.push(format!(
                        "`{key}` not carried over: `sql` is given and used as is"
                    ));
                }
            }
            // The spec's `tables` documents (and checks) what the SQL reads: the older `table` says so.
            tables.extend(table);
            sql
        }
        None => {
            let (table, expression) = match (table, keys.expression) {
                (Some(t), Some(e)) => (t, required_text("expression", e).map_err(skip)?),
                (Some(_), None) => {
                    return Err(skip(
                        "has `table` but neither `expression` nor `sql`: nothing says what to compute"
                            .into(),
                    ))
                }
                (None, Some(_)) => {
                    return Err(skip(
                        "has `expression` but neither `table` nor `sql`: nothing says what to read"
                            .into(),
                    ))
                }
                (None, None) => {
                    return Err(skip(
                        "has neither `sql` nor `table` and `expression`: nothing to build the query from"
                            .into(),
                    ))
                }
            };
            let conditions = match keys.filters {
                Some(f) => filters(f).map_err(skip)?,
                None => Vec::new(),
            };
            if time_column.is_some() && grain.is_empty() {
                grain.push("month");
            }
            if time_column.is_none() && !grain.is_empty() {
                warnings.push(
                    "no `time_column`: the query has no `period` column, so the grains do not change it"
                        .into(),
                );
            }
            build_sql(&table, &expression, &conditions, time_column.as_deref())
        }
    };
    let mut variants = Vec::new();
    for (name, node) in &keys.variants {
        match text(node) {
            Some(sql) => variants.push((name.clone(), sql)),
            None => warnings.push(format!(
                "`sql_{name}` not carried over: expected SQL text, found {}",
                node.value.kind()
            )),
        }
    }

    let description = match keys
        .description
        .and_then(text)
        .filter(|d| !d.trim().is_empty())
    {
        Some(d) => d,
        None => {
            if let Some(n) = keys.description.filter(|n| text(n).is_none()) {
                warnings.push(format!(
                    "`description` not carried over: expected text, found {}",
                    n.value.kind()
                ));
            }
            match &display_name {
                Some(d) => {
                    warnings.push(
                        "no `description` (the metric spec requires one): used the display name; say precisely what the number means"
                            .into(),
                    );
                    d.clone()
                }
                None => {
                    warnings.push(
                        "no `description` (the metric spec requires one): wrote a placeholder; say precisely what the number means"
                            .into(),
                    );
                    format!("Imported from {}", place.rel)
                }
            }
        }
    };

    let spec = MetricDoc {
        display_name,
        description,
        owner,
        metric_type,
        unit,
        grain,
        time_column,
        tables,
        dimensions,
        synonyms,
        notes,
        sql,
        variants,
    };
    template_warnings(&spec, &mut warnings);
    Ok(Converted {
        category,
        name,
        label: raw_name,
        spec,
        warnings,
    })
}

/// The category: the folder the file is in; a `category` key only where there is no folder.
fn category_of(keys: &Keys, place: &Place, warnings: &mut Vec<String>) -> Result<String, String> {
    let given = keys.category.map(|n| {
        text(n).ok_or_else(|| format!("`category` must be text, found {}", n.value.kind()))
    });
    let raw = match (place.folder, given) {
        (Some(folder), given) => {
            match &given {
                Some(Ok(c)) if normalise_name(c) != normalise_name(folder) => {
                    warnings.push(format!(
                        "`category: {c}` not carried over: the folder `{folder}` gives the category"
                    ))
                }
                Some(Err(e)) => warnings.push(format!("{e}; the folder `{folder}` gives it")),
                _ => {}
            }
            folder.to_owned()
        }
        (None, Some(given)) => given?,
        (None, None) => {
            return Err(
                "not in a category folder and has no `category`: the older layout is <dir>/<category>/<metric>.yml"
                    .into(),
            )
        }
    };
    let category = normalise_name(&raw).ok_or_else(|| {
        format!("category `{raw}` cannot be made a metric name (lowercase letters, digits, `_` and `-`)")
    })?;
    if category != raw {
        warnings.push(format!(
            "category `{raw}` written as `{category}`: categories are lowercase letters, digits, `_` and `-`"
        ));
    }
    Ok(category)
}

/// A valid metric name made from `raw`: lowercased, every other character (space, dot…) turned into
/// `_`, runs of those collapsed, and `_`/`-` trimmed from the ends. `None` when nothing is left.
pub(crate) fn normalise_name(raw: &str) -> Option<String> {
    if is_metric_name(raw) {
        return Some(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    for c in raw.trim().chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_matches(['_', '-']).to_owned();
    is_metric_name(&out).then_some(out)
}

/// The first of two alias keys that is set; a warning when both are and disagree.
fn pick<'a>(
    warnings: &mut Vec<String>,
    first: (&'static str, Option<&'a Node>),
    second: (&'static str, Option<&'a Node>),
) -> Option<(&'static str, &'a Node)> {
    match (first.1, second.1) {
        (Some(a), Some(b)) => {
            if a.to_json() != b.to_json() {
                warnings.push(format!(
                    "`{}` not carried over: `{}` is given too and wins",
                    second.0, first.0
                ));
            }
            Some((first.0, a))
        }
        (Some(a), None) => Some((first.0, a)),
        (None, Some(b)) => Some((second.0, b)),
        (None, None) => None,
    }
}

/// A scalar as text (numbers and booleans as written); `None` for lists and mappings.
fn text(node: &Node) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Seq(_) | Value::Map(_) => None,
    }
}

/// Text the query depends on: without it the metric would compute something else, so a wrong type
/// skips the definition.
fn required_text(key: &str, node: &Node) -> Result<String, String> {
    text(node)
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| format!("`{key}` must be text, found {}", node.value.kind()))
}

/// Descriptive text: a wrong type only loses the field.
fn optional_text(
    warnings: &mut Vec<String>,
    field: &str,
    node: Option<(&str, &Node)>,
) -> Option<String> {
    let (key, node) = node?;
    let t = text(node);
    if t.is_none() {
        warnings.push(format!(
            "`{key}` not carried over: expected text for `{field}`, found {}",
            node.value.kind()
        ));
    }
    t.filter(|t| !t.trim().is_empty())
}

/// A list of texts, also written as one comma-separated string.
fn list(warnings: &mut Vec<String>, key: &str, node: Option<&Node>) -> Vec<String> {
    let Some(node) = node else {
        return Vec::new();
    };
    let items: Vec<String> = match &node.value {
        Value::Seq(items) => {
            let mut out = Vec::new();
            for item in items {
                match text(item) {
                    Some(t) => out.push(t),
                    None => warnings.push(format!(
                        "an item of `{key}` not carried over: expected text, found {}",
                        item.value.kind()
                    )),
                }
            }
            out
        }
        Value::Map(_) => {
            warnings.push(format!(
                "`{key}` not carried over: expected a list, found a mapping"
            ));
            return Vec::new();
        }
        _ => text(node)
            .map(|t| t.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
    };
    items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Maps the older aggregation names onto the spec's metric types.
fn spec_type(warnings: &mut Vec<String>, key: &str, node: &Node) -> Option<&'static str> {
    let Some(raw) = text(node) else {
        warnings.push(format!(
            "`{key}` not carried over: expected text, found {}",
            node.value.kind()
        ));
        return None;
    };
    let word = raw.trim().to_lowercase().replace([' ', '-'], "_");
    let known = match word.as_str() {
        "sum" | "total" => "sum",
        "count" => "count",
        "count_distinct" | "countdistinct" | "distinct_count" | "unique_count" | "distinct" => {
            "count_distinct"
        }
        "average" | "avg" | "mean" => "average",
        "ratio" | "rate" | "percentage" | "percent" | "share" => "ratio",
        "custom" => "custom",
        _ => {
            warnings.push(format!(
                "`{key}: {raw}` is not a metric type the spec knows ({}); written as `custom`",
                METRIC_TYPES.join(", ")
            ));
            "custom"
        }
    };
    Some(known)
}

/// Grains in the spec's order, without repeats; unknown ones are dropped with a warning.
fn grains(warnings: &mut Vec<String>, key: &str, node: &Node) -> Vec<&'static str> {
    let mut found = Vec::new();
    for raw in list(warnings, key, Some(node)) {
        let word = match raw.to_lowercase().as_str() {
            "daily" => "day".to_owned(),
            "weekly" => "week".to_owned(),
            "monthly" => "month".to_owned(),
            "quarterly" => "quarter".to_owned(),
            "yearly" | "annual" | "annually" => "year".to_owned(),
            other => other.to_owned(),
        };
        match GRAINS.iter().find(|g| **g == word) {
            Some(g) => found.push(*g),
            None => warnings.push(format!(
                "grain `{raw}` not carried over: grains are {}",
                GRAINS.join(", ")
            )),
        }
    }
    GRAINS
        .iter()
        .copied()
        .filter(|g| found.contains(g))
        .collect()
}

/// The filters as SQL conditions. Any filter that cannot be expressed skips the definition: dropping
/// it would change the number.
fn filters(node: &Node) -> Result<Vec<String>, String> {
    match &node.value {
        Value::Str(s) => Ok(vec![s.trim().to_owned()]),
        Value::Seq(items) => items
            .iter()
            .map(|item| match &item.value {
                Value::Str(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
                other => Err(format!(
                    "`filters` items must be SQL conditions (text), found {}",
                    other.kind()
                )),
            })
            .collect(),
        Value::Map(entries) => entries
            .iter()
            .map(|(column, value)| {
                let col = column_sql(&column.name);
                match &value.value {
                    Value::Null => Ok(format!("{col} is null")),
                    Value::Seq(items) if items.is_empty() => {
                        Err(format!("filter on `{}` lists no values", column.name))
                    }
                    Value::Seq(items) => {
                        let values = items
                            .iter()
                            .map(|v| literal_sql(v, &column.name))
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok(format!("{col} in ({})", values.join(", ")))
                    }
                    _ => Ok(format!("{col} = {}", literal_sql(value, &column.name)?)),
                }
            })
            .collect(),
        other => Err(format!(
            "`filters` must be a list of SQL conditions or a mapping of column to value, found {}",
            other.kind()
        )),
    }
}

/// A column from a filter mapping: as written when it is a plain (possibly qualified) identifier,
/// double-quoted otherwise so a name with spaces still means that column.
fn column_sql(name: &str) -> String {
    let plain = !name.is_empty() && name.split('.').all(crate::names::is_identifier);
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn literal_sql(value: &Node, column: &str) -> Result<String, String> {
    match &value.value {
        Value::Str(s) => Ok(crate::quote::literal(s)),
        Value::Int(i) => Ok(i.to_string()),
        Value::Float(f) if f.is_finite() => Ok(f.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!(
            "filter on `{column}`: a value must be text, a number or a boolean, found {}",
            other.kind()
        )),
    }
}

fn build_sql(
    table: &str,
    expression: &str,
    conditions: &[String],
    time_column: Option<&str>,
) -> String {
    let mut sql = match time_column {
        Some(tc) => format!(
            "select date_trunc('{{{{ grain }}}}', {tc}) as period, {expression} as value\nfrom {table}\n"
        ),
        None => format!("select {expression} as value\nfrom {table}\n"),
    };
    if !conditions.is_empty() {
        let joined: Vec<String> = conditions
            .iter()
            .map(|c| {
                // `a or b and c` would bind wrongly once joined with `and`.
                if conditions.len() > 1 && has_word(c, "or") {
                    format!("({c})")
                } else {
                    c.clone()
                }
            })
            .collect();
        sql.push_str(&format!("where {}\n", joined.join(" and ")));
    }
    if time_column.is_some() {
        sql.push_str("group by 1\norder by 1\n");
    }
    sql
}

fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric() && c != '_')
        .any(|w| w.eq_ignore_ascii_case(word))
}

/// A validation rule (or anything else) as one line of text for a note.
fn describe(node: &Node) -> String {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| match &v.value {
                Value::Map(_) | Value::Seq(_) => format!("{} ({})", k.name, describe(v)),
                _ => format!("{} {}", k.name, describe(v)),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Value::Seq(items) => items.iter().map(describe).collect::<Vec<_>>().join("; "),
        Value::Null => "null".into(),
        _ => text(node).unwrap_or_default(),
    }
}

/// Warns when the SQL will not render as a template (`{{ start }}` in the older SQL, say): `validate`
/// would reject the spec, and the older file is where to find what was meant.
pub(crate) fn template_warnings(spec: &MetricDoc, warnings: &mut Vec<String>) {
    let grain = spec.grain.first().copied().unwrap_or("month");
    let sqls = std::iter::once(("sql".to_owned(), &spec.sql))
        .chain(spec.variants.iter().map(|(n, s)| (format!("sql_{n}"), s)));
    for (key, sql) in sqls {
        if let Err(e) = render_metric(sql, grain, spec.time_column.as_deref()) {
            warnings.push(format!(
                "`{key}` does not render as a template ({e}); templates may use grain, time_column, dimension, date_from and date_to"
            ));
        }
    }
}

// ---------------------------------------------------------------- writing YAML

/// The spec file: the marker, then the keys in the order of the schema (and of the demo's metrics).
/// Name and category are not written: the path gives them.
fn render(spec: &MetricDoc, rel: &str) -> String {
    render_spec(spec, &marker(rel, COMMAND))
}

/// The spec file of `spec`, opening with `marker` (a line from [`marker`]).
pub(crate) fn render_spec(spec: &MetricDoc, marker: &str) -> String {
    let mut out = marker.to_owned();
    out.push('\n');
    if let Some(v) = &spec.display_name {
        entry(&mut out, 0, "display_name", v);
    }
    entry(&mut out, 0, "description", &spec.description);
    if let Some(v) = &spec.owner {
        entry(&mut out, 0, "owner", v);
    }
    if let Some(v) = spec.metric_type {
        entry(&mut out, 0, "type", v);
    }
    if let Some(v) = &spec.unit {
        entry(&mut out, 0, "unit", v);
    }
    let grain: Vec<String> = spec.grain.iter().map(|g| g.to_string()).collect();
    flow_list(&mut out, "grain", &grain);
    if let Some(v) = &spec.time_column {
        entry(&mut out, 0, "time_column", v);
    }
    flow_list(&mut out, "tables", &spec.tables);
    flow_list(&mut out, "dimensions", &spec.dimensions);
    flow_list(&mut out, "synonyms", &spec.synonyms);
    if !spec.notes.is_empty() {
        out.push_str("notes:\n");
        for note in &spec.notes {
            out.push_str("  - ");
            out.push_str(&scalar(note, 4, false));
            out.push('\n');
        }
    }
    entry(&mut out, 0, "sql", &spec.sql);
    if !spec.variants.is_empty() {
        out.push_str("variants:\n");
        for (name, sql) in &spec.variants {
            entry(&mut out, 2, name, sql);
        }
    }
    out
}

/// `key: value` at `indent` spaces.
fn entry(out: &mut String, indent: usize, key: &str, value: &str) {
    out.push_str(&" ".repeat(indent));
    out.push_str(&scalar(key, 0, false));
    out.push_str(": ");
    out.push_str(&scalar(value, indent + 2, false));
    out.push('\n');
}

fn flow_list(out: &mut String, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let items: Vec<String> = items.iter().map(|i| scalar(i, 0, true)).collect();
    out.push_str(&format!("{key}: [{}]\n", items.join(", ")));
}

/// `text` as a YAML scalar that reads back as exactly this string: plain when nothing in it means
/// something to YAML, a `|` block for multi-line text (content at `indent` spaces), else
/// double-quoted. `flow` is for items inside `[...]`, where `,` and brackets are syntax too.
/// The returned text has no trailing newline.
pub(crate) fn scalar(text: &str, indent: usize, flow: bool) -> String {
    if !flow && text.contains('\n') && block_ok(text) {
        return block(text, indent);
    }
    if plain_ok(text, flow) {
        text.to_owned()
    } else {
        double_quoted(text)
    }
}

/// Characters YAML allows unescaped in plain and block scalars.
fn printable(c: char) -> bool {
    c == '\t'
        || (c >= ' '
            && c != '\u{7f}'
            && !('\u{80}'..='\u{9f}').contains(&c)
            && !matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
            ))
}

fn plain_ok(text: &str, flow: bool) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    let trimmed = text.trim_matches([' ', '\t']) == text;
    // Deliberately stricter than YAML: a string with `:` or `#` anywhere, or one that starts with a
    // digit or sign (numbers, dates, `0755`), is quoted rather than reasoned about.
    let starts_badly = "-?:,[]{}#&*!|>'\"%@`+.=~<".contains(first) || first.is_ascii_digit();
    // YAML 1.1 readers (still common in editors and other tools) take these as booleans or null.
    const RESERVED: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    let reserved = RESERVED.contains(&text.to_ascii_lowercase().as_str());
    let flow_syntax = flow && text.contains([',', '[', ']', '{', '}']);
    let quote = !trimmed
        || starts_badly
        || reserved
        || flow_syntax
        || text.contains([':', '#'])
        || !text.chars().all(printable);
    !quote
}

/// Whether multi-line `text` survives as a literal block: every character printable, no line of
/// only spaces (a block would read it back as empty), and no leading space on the first line (which
/// would need an indentation indicator).
fn block_ok(text: &str) -> bool {
    let body = text.trim_end_matches('\n');
    !body.is_empty()
        && !body.starts_with([' ', '\t'])
        && body
            .split('\n')
            .all(|line| line.chars().all(printable) && (line.is_empty() || !line.trim().is_empty()))
}

fn block(text: &str, indent: usize) -> String {
    let body = text.trim_end_matches('\n');
    // Chomping keeps the exact number of final newlines: none (`-`), one (clip) or more (`+`).
    let chomp = match text.len() - body.len() {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let pad = " ".repeat(indent);
    let mut out = format!("|{chomp}");
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    for _ in 1..(text.len() - body.len()) {
        out.push('\n');
    }
    out
}

fn double_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if !printable(c) => {
                let n = c as u32;
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else {
                    out.push_str(&format!("\\u{n:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use indoc::indoc;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics-legacy")
    }

    fn opts(out: &Path, dry_run: bool) -> ImportOptions {
        ImportOptions {
            out_dir: out.to_path_buf(),
            dry_run,
        }
    }

    /// Imports `files` (relative path, text) from a fresh directory; returns the report and the output
    /// directory (kept alive by the returned temp dir). The output lies inside the input on purpose:
    /// a re-import must not read its own output back as definitions of the older layout.
    fn import_files(files: &[(&str, &str)]) -> (ImportReport, tempfile::TempDir, PathBuf) {
        let src = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = src.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let out = src.path().join("out");
        let report = import(src.path(), &opts(&out, false)).unwrap();
        (report, src, out)
    }

    fn messages(problems: &[Problem]) -> Vec<String> {
        problems.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn simple_definition_becomes_this_exact_spec() {
        let (report, _src, out) = import_files(&[(
            "revenue/order_revenue.yml",
            indoc! {"
                label: Order revenue
                description: Sum of amounts of completed orders
                owner: finance@acme.example
                aggregation: sum
                unit: USD
                grains: [month, day]
                date_column: ordered_at
                table_name: orders
                expression: sum(amount)
                filters:
                  - status = 'completed'
                synonyms: sales, turnover
            "},
        )]);
        assert_eq!(report.skipped, vec![]);
        assert_eq!(report.warnings, vec![]);
        let target = out.join("revenue/order_revenue.yaml");
        assert_eq!(report.written, vec![target.clone()]);
        assert_eq!(
            std::fs::read_to_string(target).unwrap(),
            indoc! {"
                # Imported from revenue/order_revenue.yml by pipeline metrics import; a re-import overwrites this file until you delete this line.
                display_name: Order revenue
                description: Sum of amounts of completed orders
                owner: finance@acme.example
                type: sum
                unit: USD
                grain: [day, month]
                time_column: ordered_at
                synonyms: [sales, turnover]
                sql: |
                  select date_trunc('{{ grain }}', ordered_at) as period, sum(amount) as value
                  from orders
                  where status = 'completed'
                  group by 1
                  order by 1
            "}
        );
    }

    #[test]
    fn fixtures_convert_with_the_expected_skips_and_warnings() {
        let out = tempfile::tempdir().unwrap();
        let report = import(&fixtures(), &opts(out.path(), false)).unwrap();
        let written: Vec<String> = report
            .written
            .iter()
            .map(|p| display_path(out.path(), p))
            .collect();
        assert_eq!(
            written,
            [
                "customers/customer_count.yaml",
                "customers/active_customers.yaml",
                "customers/repeat_customers.yaml",
                "marketing/marketing_spend.yaml",
                "marketing/paid_sessions.yaml",
                "revenue/average_order_value.yaml",
                "revenue/order_count.yaml",
                "revenue/revenue_by_country.yaml",
                "support/csat.yaml",
            ]
        );
        assert!(report.unchanged.is_empty());

        // The un-convertible definition is skipped, saying why.
        assert_eq!(report.skipped.len(), 1, "{:#?}", report.skipped);
        let skipped = &report.skipped[0];
        assert!(skipped.file.ends_with("support/broken.yml"));
        assert_eq!(skipped.metric.as_deref(), Some("first_response_time"));
        assert!(
            skipped
                .message
                .contains("neither `sql` nor `table` and `expression`"),
            "{skipped}"
        );

        // Warnings name what was not carried over.
        let warnings = messages(&report.warnings);
        let has = |needle: &str| warnings.iter().any(|w| w.contains(needle));
        assert!(has("`refresh_schedule` not carried over"), "{warnings:#?}");
        assert!(has("`validation` not carried over"), "{warnings:#?}");
        assert!(has("`type: weighted`"), "{warnings:#?}");

        // The validation rule survives as a note.
        let csat = std::fs::read_to_string(out.path().join("support/csat.yaml")).unwrap();
        assert!(
            csat.contains(
                "notes:\n  - \"validation (from the older definition): min 0, max 100\"\n"
            ),
            "{csat}"
        );
    }

    #[test]
    fn reimport_changes_nothing_and_dry_run_writes_nothing() {
        let out = tempfile::tempdir().unwrap();
        let dry = import(&fixtures(), &opts(out.path(), true)).unwrap();
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
        let first = import(&fixtures(), &opts(out.path(), false)).unwrap();
        assert_eq!(dry, first);

        let mtimes = |paths: &[PathBuf]| -> Vec<std::time::SystemTime> {
            paths
                .iter()
                .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
                .collect()
        };
        let before = mtimes(&first.written);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = import(&fixtures(), &opts(out.path(), false)).unwrap();
        assert!(second.written.is_empty(), "{:#?}", second.written);
        assert_eq!(second.unchanged, first.written);
        assert_eq!(second.skipped, first.skipped);
        assert_eq!(second.warnings, first.warnings);
        assert_eq!(mtimes(&second.unchanged), before);
    }

    #[test]
    fn hand_written_specs_are_never_overwritten_but_earlier_imports_are() {
        let def = (
            "sales/orders.yml",
            "description: Orders\ntable: orders\nexpression: count(*)\n",
        );
        let (_, src, out) = import_files(&[def]);
        let target = out.join("sales/orders.yaml");

        // An earlier import (marker on the first line) is replaced by the new content.
        let stale = std::fs::read_to_string(&target)
            .unwrap()
            .replace("Orders", "Old");
        std::fs::write(&target, &stale).unwrap();
        let report = import(src.path(), &opts(&out, false)).unwrap();
        assert_eq!(report.written, vec![target.clone()]);
        assert!(std::fs::read_to_string(&target)
            .unwrap()
            .contains("description: Orders"));

        // Once the marker line is gone, the file is the user's.
        std::fs::write(&target, "description: Mine\nsql: select 1 as value\n").unwrap();
        let report = import(src.path(), &opts(&out, false)).unwrap();
        assert!(report.written.is_empty());
        assert_eq!(report.skipped.len(), 1);
        assert!(report.skipped[0]
            .message
            .contains("was not written by an import"));
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "description: Mine\nsql: select 1 as value\n"
        );

        // A spec of the same id in another extension blocks the import too.
        std::fs::remove_file(&target).unwrap();
        std::fs::write(out.join("sales/orders.toml"), "").unwrap();
        let report = import(src.path(), &opts(&out, false)).unwrap();
        assert!(report.written.is_empty());
        assert!(report.skipped[0]
            .message
            .contains("already defines this metric"));
    }

    #[test]
    fn missing_description_uses_the_display_name_or_a_placeholder() {
        let (report, _src, out) = import_files(&[
            ("a/named.yml", "label: Named\nsql: select 1 as value\n"),
            ("a/bare.yml", "sql: select 1 as value\n"),
        ]);
        let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
        assert!(read("a/named.yaml").contains("\ndescription: Named\n"));
        assert!(read("a/bare.yaml").contains("\ndescription: Imported from a/bare.yml\n"));
        let warnings = messages(&report.warnings);
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(warnings.iter().all(|w| w.contains("no `description`")));
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let out = tempfile::tempdir().unwrap();
        let err = import(&out.path().join("nope"), &opts(out.path(), false)).unwrap_err();
        assert!(matches!(err, ImportError::NotADirectory(_)), "{err}");
    }

    #[test]
    fn filters_mapping_becomes_equality_and_in() {
        let (report, _src, out) = import_files(&[(
            "sales/big.yml",
            indoc! {r#"
                description: x
                table: orders
                expression: count(*)
                filters:
                  status: [completed, "it's"]
                  country: DE
                  amount: 10
                  is_test: false
                  deleted_at: ~
                  "sales channel": web
            "#},
        )]);
        assert_eq!(report.skipped, vec![]);
        let text = std::fs::read_to_string(out.join("sales/big.yaml")).unwrap();
        assert!(
            text.contains(
                "  where status in ('completed', 'it''s') and country = 'DE' and amount = 10 and is_test = false and deleted_at is null and \"sales channel\" = 'web'\n"
            ),
            "{text}"
        );
        // No time column: one value, no grouping.
        assert!(
            text.contains("sql: |\n  select count(*) as value\n  from orders\n"),
            "{text}"
        );
    }

    #[test]
    fn or_conditions_are_parenthesised_when_combined() {
        let sql = build_sql(
            "t",
            "count(*)",
            &["a = 1 OR b = 2".into(), "c = 3".into()],
            None,
        );
        assert!(sql.contains("where (a = 1 OR b = 2) and c = 3\n"), "{sql}");
        let sql = build_sql("t", "count(*)", &["a = 1 or b = 2".into()], None);
        assert!(sql.contains("where a = 1 or b = 2\n"), "{sql}");
    }

    #[test]
    fn names_are_normalised_or_refused() {
        assert_eq!(
            normalise_name("Total Revenue").as_deref(),
            Some("total_revenue")
        );
        assert_eq!(
            normalise_name("revenue.net (USD)").as_deref(),
            Some("revenue_net_usd")
        );
        assert_eq!(normalise_name("a-b_c").as_deref(), Some("a-b_c"));
        assert_eq!(normalise_name("???"), None);
        let (report, _src, out) = import_files(&[(
            "Sales/x.yml",
            "- name: Net Sales\n  description: x\n  sql: select 1 as value\n- name: '!!'\n  description: y\n  sql: select 2 as value\n- description: no name\n  sql: select 3 as value\n",
        )]);
        assert!(out.join("sales/net_sales.yaml").is_file());
        let warnings = messages(&report.warnings);
        assert!(warnings
            .iter()
            .any(|w| w.contains("name `Net Sales` written as `net_sales`")));
        assert!(warnings
            .iter()
            .any(|w| w.contains("category `Sales` written as `sales`")));
        let skipped = messages(&report.skipped);
        assert_eq!(skipped.len(), 2, "{skipped:#?}");
        assert!(skipped[0].contains("cannot be made a metric name"));
        assert!(skipped[1].contains("item 3 has no `name`"));
    }

    #[test]
    fn duplicate_ids_and_bad_files_are_skipped() {
        let (report, _src, _out) = import_files(&[
            ("a/m.yml", "description: x\nsql: select 1 as value\n"),
            ("a/m.yaml", "description: y\nsql: select 2 as value\n"),
            ("a/empty.yml", ""),
            ("a/bad.yml", "description: [\n"),
            ("a/scalar.yml", "just text\n"),
            ("top.yml", "description: x\nsql: select 1 as value\n"),
            (
                "a/filters.yml",
                "description: x\ntable: t\nexpression: count(*)\nfilters: [{column: a}]\n",
            ),
        ]);
        let skipped = messages(&report.skipped);
        let has = |needle: &str| skipped.iter().any(|w| w.contains(needle));
        // `m.yaml` sorts before `m.yml`, so it is the one imported.
        assert!(
            has("a/m.yml (m): a/m.yaml already imports metric `a/m`"),
            "{skipped:#?}"
        );
        assert!(has("the file is empty"), "{skipped:#?}");
        assert!(has("not valid YAML at line"), "{skipped:#?}");
        assert!(has("found a string"), "{skipped:#?}");
        assert!(has("not in a category folder"), "{skipped:#?}");
        assert!(
            has("`filters` items must be SQL conditions"),
            "{skipped:#?}"
        );
        assert_eq!(report.written.len(), 1);
    }

    #[test]
    fn sql_is_kept_as_is_with_its_variants_and_template_problems_are_reported() {
        let (report, _src, out) = import_files(&[(
            "ops/x.yml",
            indoc! {"
                description: d
                table: orders
                expression: ignored
                sql: select {{ start_date }} as value
                sql_by_region: |
                  select region, 1 as value
                  from orders
                  group by 1
            "},
        )]);
        let text = std::fs::read_to_string(out.join("ops/x.yaml")).unwrap();
        assert!(
            text.ends_with(indoc! {"
            tables: [orders]
            sql: select {{ start_date }} as value
            variants:
              by_region: |
                select region, 1 as value
                from orders
                group by 1
        "}),
            "{text}"
        );
        let warnings = messages(&report.warnings);
        assert!(warnings
            .iter()
            .any(|w| w.contains("`expression` not carried over")));
        assert!(warnings
            .iter()
            .any(|w| w.contains("`sql` does not render as a template")));
    }

    /// Whatever the text, the written YAML reads back (with the spec loader's parser) as that text.
    #[test]
    fn scalars_round_trip() {
        let tricky = [
            "plain text",
            "",
            " leading space",
            "trailing space ",
            "a: b",
            "a #b",
            "#x",
            "- item",
            "yes",
            "No",
            "on",
            "null",
            "~",
            "true",
            "1",
            "0755",
            "1.5",
            "2024-01-01",
            ".5",
            "+1",
            "-1",
            "@daily",
            "*/5 * * * *",
            "%",
            "it's",
            "\"quoted\"",
            "back\\slash",
            "tab\there",
            "a, b",
            "[x]",
            "{x}",
            "÷ − č",
            "bell\u{7}",
            "line\r\nbreak",
            "two\nlines",
            "two\nlines\n",
            "two\nlines\n\n",
            "  indented\nsecond",
            "blank\n  \nline",
            "select 1\n\n  from x\n",
            "ctrl\u{1b}\nline",
        ];
        for s in tricky {
            for (indent, flow) in [(2, false), (4, false), (0, true)] {
                let doc = if flow {
                    format!("k: [{}]\n", scalar(s, indent, flow))
                } else {
                    format!("k:\n  - {}\n", scalar(s, 4, flow))
                };
                let node = yaml::parse(&doc, FileId(0))
                    .unwrap_or_else(|e| panic!("{s:?} → {doc:?}: {}", e.message));
                assert_eq!(
                    node.to_json(),
                    serde_json::json!({ "k": [s] }),
                    "{s:?} written as {doc:?}"
                );
            }
            let doc = format!("top: {}\n", scalar(s, 2, false));
            let node = yaml::parse(&doc, FileId(0)).unwrap();
            assert_eq!(node.to_json(), serde_json::json!({ "top": s }), "{doc:?}");
        }
    }

    /// The whole rendered spec reads back as the same values, whatever they hold.
    #[test]
    fn rendered_spec_reads_back() {
        let spec = MetricDoc {
            display_name: Some("Rate: 100%".into()),
            description: "Multi\nline # description".into(),
            owner: Some("@team".into()),
            metric_type: Some("ratio"),
            unit: Some("%".into()),
            grain: vec!["day", "year"],
            time_column: Some("yes".into()),
            tables: vec!["shop.orders".into()],
            dimensions: vec!["a,b".into(), "c".into()],
            synonyms: vec!["on".into()],
            notes: vec!["note: one".into(), "two\nlines".into()],
            sql: "select 1 as value".into(),
            variants: vec![("by_x: y".into(), "select 2\nfrom t\n".into())],
        };
        let text = render(&spec, "a/b.yml");
        let node = yaml::parse(&text, FileId(0)).unwrap();
        assert_eq!(
            node.to_json(),
            serde_json::json!({
                "display_name": "Rate: 100%",
                "description": "Multi\nline # description",
                "owner": "@team",
                "type": "ratio",
                "unit": "%",
                "grain": ["day", "year"],
                "time_column": "yes",
                "tables": ["shop.orders"],
                "dimensions": ["a,b", "c"],
                "synonyms": ["on"],
                "notes": ["note: one", "two\nlines"],
                "sql": "select 1 as value",
                "variants": { "by_x: y": "select 2\nfrom t\n" },
            })
        );
    }
}

//! Breaking-change detection: which changes of a plan would break what reads them.
//!
//! A [`Plan`] is a pure value, made without opening any data file. This is a separate step that
//! labels each change `breaking`, `non-breaking` or `unknown` ([`Label`]), called by `pipeline plan`,
//! `pipeline apply` and the daemon's watcher. When a change carries SQL (a transform's or a metric's,
//! new or edited), or renames a table's view, it opens the live `analytics.duckdb` read-only in an
//! in-memory DuckDB, shadows the published schema with a scratch schema where the plan's transforms
//! are created as views in dependency order, and binds every transform and metric downstream of a
//! change against it — binding resolves names and types, it runs nothing and writes nothing. A change
//! is breaking when something that binds against the published schema today would not after it (the
//! changed object itself included); unknown when there is nothing to check against (no published
//! analytics, or it reads a table whose data this plan re-extracts); non-breaking otherwise. Metrics
//! are bound by [`crate::metrics::check`], the same check as `metrics check` and a run's `check:`
//! tasks. Plans without such changes open nothing, so a no-op plan costs nothing more.
//!
//! Declared `columns:` of a changed table are compared with its published schema (the view in
//! analytics.duckdb, else the extract's Parquet): missing ones are reported as warnings, because the
//! next extract would fail on them.

use super::diff::Change;
use super::{Desired, Plan, Summary};
use crate::analytics;
use crate::diag::source::Span;
use crate::extract_db::{ExtractDir, RemotePolicy};
use crate::instance::DataDir;
use crate::metrics;
use crate::quote;
use crate::registry::document::{Action, Kind, Object, Objects};
use crate::spec::Specs;
use duckdb::Connection;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What a change does to the objects that read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Label {
    /// Something that binds today would not (listed in [`Impact::breaks`]); apply refuses it unless
    /// `--allow-breaking`.
    Breaking,
    /// Everything downstream still binds, or nothing reads what changed.
    NonBreaking,
    /// Could not be checked ([`Impact::notes`] says why).
    Unknown,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Breaking => "breaking",
            Label::NonBreaking => "non-breaking",
            Label::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The label of one change, with what it breaks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    pub label: Label,
    /// Where the changed object is defined, `file:line` (the file alone for a delete).
    pub at: String,
    /// What would no longer bind: the changed object itself, and downstream transforms and metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breaks: Vec<Break>,
    /// Why the label is `unknown`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Problems that do not make the change breaking (declared columns the published data lacks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One object that would not bind after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Break {
    pub kind: Kind,
    pub id: String,
    /// `file:line:col` of the SQL (at the unknown column when DuckDB names one).
    pub at: String,
    /// DuckDB's binder message (its first line); for a metric, which of its SQL.
    pub message: String,
}

/// Fields whose change may change what a transform's or metric's SQL binds to.
const TRANSFORM_SQL_FIELDS: &[&str] = &["sql", "inputs"];
const METRIC_SQL_FIELDS: &[&str] = &["sql", "variants", "grain", "time_column", "dimensions"];
/// Fields of a replaced table that may change its columns (the others keep the data's shape).
const TABLE_SHAPE_FIELDS: &[&str] = &[
    "source",
    "source_type",
    "bucket",
    "source_table",
    "query",
    "query_mode",
];

/// Schema (in the in-memory catalog) where the plan's transforms shadow the published ones.
const SCRATCH: &str = "memory.pipeline_plan";

fn changed(c: &Change, fields: &[&str]) -> bool {
    c.fields.iter().any(|f| fields.contains(&f.field.as_str()))
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str())
        .map(lower)
        .collect()
}

fn file_line(specs: &Specs, span: Span) -> String {
    format!("{}:{}", specs.files.get(span.file).display, span.start.line)
}

fn file_line_col(specs: &Specs, span: Span) -> String {
    crate::diag::render::location(&specs.files, span)
}

/// Where each spec object is defined, by kind and id: its entry, and its SQL when it has one.
struct Places(BTreeMap<(Kind, String), (Span, Option<Span>)>);

impl Places {
    fn of(specs: &Specs) -> Places {
        let mut m = BTreeMap::new();
        for s in &specs.sources {
            m.insert((Kind::Source, s.name.value.clone()), (s.name.span, None));
        }
        for t in &specs.tables {
            m.insert((Kind::Table, t.id.value.clone()), (t.span, None));
        }
        for t in specs.transforms() {
            m.insert(
                (Kind::Transform, t.name.value.clone()),
                (t.name.span, Some(t.sql.span)),
            );
        }
        for x in &specs.metrics {
            m.insert((Kind::Metric, x.id.clone()), (x.span, Some(x.sql.span)));
        }
        Places(m)
    }

    /// Where the changed object is defined (`file:line`): its SQL when that is new or changed,
    /// else its entry; the file alone for a delete.
    fn of_change(&self, specs: &Specs, c: &Change) -> String {
        if c.action == Action::Delete {
            return c.file.clone();
        }
        let sql_changed = c.action == Action::Create || changed(c, &["sql"]);
        match self.0.get(&(c.kind, c.id.clone())) {
            Some((_, Some(sql))) if sql_changed => file_line(specs, *sql),
            Some((entry, _)) => file_line(specs, *entry),
            None => c.file.clone(),
        }
    }
}

/// Whether a plan saved by an older binary (or made without [`assess`]) still needs labels.
pub fn needs_assessment(plan: &Plan) -> bool {
    plan.changes.iter().any(|c| c.impact.is_none())
}

/// Labels every change of `plan` (and counts the breaking ones in its summary).
pub fn assess(desired: &Desired, plan: &mut Plan) {
    let impacts = Assessment::new(&desired.specs, &desired.objects, &plan.changes).run(
        &desired.instance.data,
        &RemotePolicy::of_instance(&desired.instance),
    );
    for (c, i) in plan.changes.iter_mut().zip(impacts) {
        c.impact = Some(i);
    }
    plan.summary = Summary::of(&plan.changes);
}

/// What went wrong when binding one object.
struct Failure {
    kind: Kind,
    id: String,
    at: String,
    message: String,
}

struct Assessment<'a> {
    specs: &'a Specs,
    changes: &'a [Change],
    impacts: Vec<Impact>,
    unknown: Vec<bool>,
    /// Lowercase transform name → the names it reads (lowercase).
    transform_reads: BTreeMap<String, Vec<String>>,
    /// Metric id → the names it reads (lowercase): `tables:`, else what its SQL reads.
    metric_reads: BTreeMap<String, Vec<String>>,
    /// Transforms whose SQL is new or changed → change index.
    changed_transforms: BTreeMap<String, usize>,
    /// Metrics whose SQL is new or changed → change index.
    changed_metrics: BTreeMap<String, usize>,
    /// Table view names (lowercase) given by the plan: renamed ones → change index.
    renamed: BTreeMap<String, (String, usize)>,
    /// Tables (lowercase view names) whose data this plan extracts anew, so their columns are not
    /// known yet → change index.
    reshaped: BTreeMap<String, usize>,
    /// Table changes whose declared columns are compared with the published data.
    columns: Vec<usize>,
}

impl<'a> Assessment<'a> {
    fn new(specs: &'a Specs, desired: &'a Objects, changes: &'a [Change]) -> Self {
        let transform_reads = desired
            .values()
            .filter(|o| o.kind == Kind::Transform)
            .map(|o| (lower(&o.id), strings(o.get("inputs"))))
            .collect();
        let metric_reads = desired
            .values()
            .filter(|o| o.kind == Kind::Metric)
            .map(|o| (o.id.clone(), strings(o.get("tables"))))
            .collect();
        let places = Places::of(specs);
        let mut a = Assessment {
            specs,
            changes,
            impacts: changes
                .iter()
                .map(|c| Impact {
                    label: Label::NonBreaking,
                    at: places.of_change(specs, c),
                    breaks: Vec::new(),
                    notes: Vec::new(),
                    warnings: Vec::new(),
                })
                .collect(),
            unknown: vec![false; changes.len()],
            transform_reads,
            metric_reads,
            changed_transforms: BTreeMap::new(),
            changed_metrics: BTreeMap::new(),
            renamed: BTreeMap::new(),
            reshaped: BTreeMap::new(),
            columns: Vec::new(),
        };
        for (i, c) in changes.iter().enumerate() {
            let new_name = c.object.as_ref().and_then(|o| o.str("name")).map(lower);
            let declares_columns = c
                .object
                .as_ref()
                .is_some_and(|o| o.get("columns").as_object().is_some_and(|m| !m.is_empty()));
            match (c.kind, c.action) {
                (Kind::Transform, Action::Create) => {
                    a.changed_transforms.insert(lower(&c.id), i);
                }
                (Kind::Transform, Action::Update | Action::Replace)
                    if changed(c, TRANSFORM_SQL_FIELDS) =>
                {
                    a.changed_transforms.insert(lower(&c.id), i);
                }
                (Kind::Metric, Action::Create) => {
                    a.changed_metrics.insert(c.id.clone(), i);
                }
                (Kind::Metric, Action::Update | Action::Replace)
                    if changed(c, METRIC_SQL_FIELDS) =>
                {
                    a.changed_metrics.insert(c.id.clone(), i);
                }
                (Kind::Table, Action::Create) => {
                    if let Some(n) = new_name {
                        a.reshaped.insert(n, i);
                    }
                    if declares_columns {
                        a.columns.push(i);
                    }
                }
                (Kind::Table, Action::Replace) if changed(c, TABLE_SHAPE_FIELDS) => {
                    if let Some(n) = new_name {
                        a.reshaped.insert(n, i);
                    }
                    a.unknown[i] = true;
                    a.impacts[i].notes.push(
                        "its data is extracted again and may have other columns; what reads it is \
                         checked against them once they are published"
                            .into(),
                    );
                }
                (Kind::Table, Action::Update) => {
                    let old_name = c.before.as_ref().and_then(|o| o.str("name")).map(lower);
                    if let (Some(old), Some(new)) = (old_name, new_name) {
                        if old != new {
                            a.renamed.insert(new, (old, i));
                        }
                    }
                    if declares_columns && changed(c, &["columns", "name"]) {
                        a.columns.push(i);
                    }
                }
                (Kind::Source, Action::Replace) => {
                    let tables = desired
                        .values()
                        .filter(|o| o.kind == Kind::Table && o.str("source") == Some(&c.id));
                    for t in tables {
                        if let Some(n) = t.str("name") {
                            a.reshaped.entry(lower(n)).or_insert(i);
                        }
                    }
                    a.unknown[i] = true;
                    a.impacts[i].notes.push(
                        "every table of this source is extracted again and may have other \
                         columns; what reads them is checked against them once they are published"
                            .into(),
                    );
                }
                _ => {}
            }
        }
        a
    }

    /// `policy`: what the instance allows analytics to attach (for views over remote tables).
    fn run(mut self, layout: &DataDir, policy: &RemotePolicy) -> Vec<Impact> {
        let binds = !self.changed_transforms.is_empty()
            || !self.changed_metrics.is_empty()
            || !self.renamed.is_empty();
        if binds || !self.columns.is_empty() {
            self.check(layout, policy, binds);
        }
        for (i, impact) in self.impacts.iter_mut().enumerate() {
            impact.label = if !impact.breaks.is_empty() {
                Label::Breaking
            } else if self.unknown[i] {
                Label::Unknown
            } else {
                Label::NonBreaking
            };
        }
        self.impacts
    }

    fn mark_unknown(&mut self, i: usize, note: String) {
        self.unknown[i] = true;
        if !self.impacts[i].notes.contains(&note) {
            self.impacts[i].notes.push(note);
        }
    }

    fn check(&mut self, layout: &DataDir, policy: &RemotePolicy, binds: bool) {
        let live = layout.analytics().is_file();
        if binds && !live {
            let note = "nothing is published yet (no analytics.duckdb): there is no schema to \
                        check its SQL against";
            let sql_changes: Vec<usize> = self
                .changed_transforms
                .values()
                .chain(self.changed_metrics.values())
                .copied()
                .collect();
            for i in sql_changes {
                self.mark_unknown(i, note.into());
            }
        }
        let clock = std::time::Instant::now();
        let opened = if live {
            analytics::open_live(layout, policy)
                .map(|(conn, _)| conn)
                .map_err(|e| e.to_string())
        } else {
            Connection::open_in_memory().map_err(|e| e.to_string())
        };
        let conn = match opened {
            Ok(c) => c,
            Err(e) => {
                let note = format!("could not open the published analytics to check it: {e}");
                let all: Vec<usize> = self
                    .changed_transforms
                    .values()
                    .chain(self.changed_metrics.values())
                    .copied()
                    .collect();
                for i in all {
                    self.mark_unknown(i, note.clone());
                }
                return;
            }
        };
        tracing::debug!(elapsed = ?clock.elapsed(), "plan impact: analytics opened");
        for i in std::mem::take(&mut self.columns) {
            self.check_columns(&conn, layout, live, i);
        }
        if binds && live {
            self.bind(&conn);
        }
        tracing::debug!(elapsed = ?clock.elapsed(), "plan impact: bound");
    }

    /// Declared columns of a table the published data does not have: the next extract would fail.
    fn check_columns(&mut self, conn: &Connection, layout: &DataDir, live: bool, i: usize) {
        let c = &self.changes[i];
        let Some(obj) = &c.object else { return };
        let (Some(source), Some(name)) = (obj.str("source"), obj.str("name")) else {
            return;
        };
        let declared: Vec<&String> = obj
            .get("columns")
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        // A renamed view is still published under its old name.
        let published_name = c
            .before
            .as_ref()
            .and_then(|b| b.str("name"))
            .unwrap_or(name);
        let Some(present) = published_columns(conn, layout, live, source, published_name) else {
            return;
        };
        let missing: Vec<&str> = declared
            .iter()
            .filter(|d| !present.iter().any(|p| p.eq_ignore_ascii_case(d)))
            .map(|d| d.as_str())
            .collect();
        if missing.is_empty() {
            return;
        }
        self.impacts[i].warnings.push(format!(
            "declares column(s) {} that the published data of `{published_name}` does not have (it has: \
             {}); its next extract fails unless the source now has them. Fix `columns:` or the source",
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", "),
            present.join(", ")
        ));
    }

    /// Lowercase names `name` reads, transitively through transforms (not itself).
    fn upstream(&self, direct: &[String]) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<String> = direct.to_vec();
        while let Some(n) = stack.pop() {
            if seen.insert(n.clone()) {
                if let Some(reads) = self.transform_reads.get(&n) {
                    stack.extend(reads.iter().cloned());
                }
            }
        }
        seen
    }

    /// Whether something in `up` is changed by the plan in a way that needs binding.
    fn touched(&self, up: &BTreeSet<String>) -> bool {
        up.iter()
            .any(|n| self.changed_transforms.contains_key(n) || self.renamed.contains_key(n))
    }

    fn bind(&mut self, conn: &Connection) {
        let specs = self.specs;
        let order = topological(&self.transform_reads);
        let transforms: BTreeMap<String, &crate::spec::model::TransformSpec> = specs
            .transforms()
            .map(|t| (lower(&t.name.value), t))
            .collect();

        // Which objects to bind: the changed ones and everything downstream of a change.
        let affected_transforms: Vec<String> = order
            .iter()
            .filter(|t| {
                self.changed_transforms.contains_key(*t) || {
                    let reads = self.transform_reads.get(*t).cloned().unwrap_or_default();
                    self.touched(&self.upstream(&reads))
                }
            })
            .cloned()
            .collect();
        let affected_metrics: Vec<&crate::spec::model::MetricSpec> = specs
            .metrics
            .iter()
            .filter(|m| {
                self.changed_metrics.contains_key(&m.id) || {
                    let reads = self.metric_reads(m);
                    self.touched(&self.upstream(&reads))
                }
            })
            .collect();

        // What does not bind after the change is compared with the published schema as it is (only
        // then, to keep plans cheap): an unchanged object that does not bind today either is not
        // broken by this plan, and a changed one whose previous version did not bind either is
        // unknown rather than breaking (an attachment missing here, say).
        let mut old_fails: BTreeSet<usize> = BTreeSet::new();
        let published = |check: &dyn Fn() -> bool| -> bool {
            let _ = conn.execute_batch("SET search_path = 'analytics.main'");
            let ok = check();
            let _ = conn.execute_batch(&format!("SET search_path = '{SCRATCH},analytics.main'"));
            ok
        };

        if let Err(e) = conn.execute_batch(&format!(
            "CREATE SCHEMA {SCRATCH}; SET search_path = '{SCRATCH},analytics.main';"
        )) {
            tracing::warn!(error = %e, "plan: could not create the scratch schema");
            return;
        }
        for (new, (old, _)) in &self.renamed {
            if let (Some(n), Some(o)) = (quote::ident(new), quote::ident(old)) {
                let _ = conn.execute_batch(&format!(
                    "CREATE VIEW {SCRATCH}.{n} AS SELECT * FROM analytics.main.{o}"
                ));
            }
        }

        // Transforms in dependency order, each as a view over what came before it.
        let mut failures: BTreeMap<String, Failure> = BTreeMap::new();
        for t in &affected_transforms {
            let Some(spec) = transforms.get(t) else {
                continue;
            };
            let reads = self.transform_reads.get(t).cloned().unwrap_or_default();
            if let Some(input) = reads.iter().find(|r| failures.contains_key(*r)) {
                failures.insert(
                    t.clone(),
                    Failure {
                        kind: Kind::Transform,
                        id: spec.name.value.clone(),
                        at: file_line_col(specs, spec.sql.span),
                        message: format!(
                            "would not be rebuilt: it reads `{input}`, which would not bind"
                        ),
                    },
                );
                continue;
            }
            let Some(id) = quote::ident(&spec.name.value) else {
                continue;
            };
            let sql = spec.sql.value.trim().trim_end_matches(';');
            if let Err(e) = conn.execute_batch(&format!("CREATE VIEW {SCRATCH}.{id} AS {sql}")) {
                match self.changed_transforms.get(t) {
                    None if !published(&|| binds_sql(conn, sql).is_ok()) => continue,
                    Some(&i) => {
                        let old = self.changes[i].before.as_ref().and_then(|b| b.str("sql"));
                        if old.is_some_and(|o| !published(&|| binds_sql(conn, o).is_ok())) {
                            old_fails.insert(i);
                        }
                    }
                    None => {}
                }
                let message = e.to_string();
                let span = metrics::error_span(&specs.files, &spec.sql, &message);
                failures.insert(
                    t.clone(),
                    Failure {
                        kind: Kind::Transform,
                        id: spec.name.value.clone(),
                        at: file_line_col(specs, span),
                        message: first_line(&message),
                    },
                );
            }
        }
        let mut metric_failures: Vec<(Vec<String>, Failure)> = Vec::new();
        for m in &affected_metrics {
            let reads = self.metric_reads(m);
            if let Some(input) = reads.iter().find(|r| failures.contains_key(*r)) {
                metric_failures.push((
                    reads.clone(),
                    Failure {
                        kind: Kind::Metric,
                        id: m.id.clone(),
                        at: file_line_col(specs, m.sql.span),
                        message: format!(
                            "would not be checked: it reads `{input}`, which would not bind"
                        ),
                    },
                ));
                continue;
            }
            if let Some(d) = metrics::check(conn, &specs.files, m).into_iter().next() {
                match self.changed_metrics.get(&m.id) {
                    None if !published(&|| metrics::check(conn, &specs.files, m).is_empty()) => {
                        continue
                    }
                    Some(&i) => {
                        if let Some(before) = &self.changes[i].before {
                            if !published(&|| metrics::bind(conn, &templates_of(before)).is_empty())
                            {
                                old_fails.insert(i);
                            }
                        }
                    }
                    None => {}
                }
                let prefix = format!("metric `{}`: ", m.id);
                metric_failures.push((
                    reads,
                    Failure {
                        kind: Kind::Metric,
                        id: m.id.clone(),
                        at: d.span.map_or_else(
                            || file_line_col(specs, m.sql.span),
                            |s| file_line_col(specs, s),
                        ),
                        message: d.message.strip_prefix(&prefix).unwrap_or(&d.message).into(),
                    },
                ));
            }
        }
        let _ = conn.execute_batch("SET search_path = 'analytics.main'");

        let transform_failures: Vec<(Vec<String>, Failure)> = failures
            .into_iter()
            .map(|(name, f)| (vec![name.clone()], f))
            .collect();
        for (reads, f) in transform_failures.into_iter().chain(metric_failures) {
            self.attribute(&reads, f, &old_fails);
        }
    }

    /// Lowercase names a metric reads.
    fn metric_reads(&self, m: &crate::spec::model::MetricSpec) -> Vec<String> {
        self.metric_reads.get(&m.id).cloned().unwrap_or_default()
    }

    /// Charges `f` to the changes it follows from: the failing object's own change and the changes
    /// upstream of it. `start` is the object itself (a transform) or what it reads (a metric).
    fn attribute(&mut self, start: &[String], f: Failure, old_fails: &BTreeSet<usize>) {
        // Includes `start` itself: a transform's own name, or the names a metric reads.
        let up = self.upstream(start);
        let own = match f.kind {
            Kind::Transform => self.changed_transforms.get(&lower(&f.id)).copied(),
            Kind::Metric => self.changed_metrics.get(&f.id).copied(),
            _ => None,
        };
        let mut responsible: BTreeSet<usize> = up
            .iter()
            .filter_map(|n| {
                self.changed_transforms
                    .get(n)
                    .copied()
                    .or_else(|| self.renamed.get(n).map(|(_, i)| *i))
            })
            .collect();
        responsible.extend(own);
        let reshaped: Vec<(String, usize)> = up
            .iter()
            .filter_map(|n| self.reshaped.get(n).map(|i| (n.clone(), *i)))
            .collect();
        let what = format!("{} `{}`", f.kind, f.id);
        for i in responsible {
            if let Some((table, _)) = reshaped.first() {
                self.mark_unknown(
                    i,
                    format!(
                        "{what} does not bind ({}), but it reads `{table}`, whose data this plan \
                         extracts anew: checked once it is published",
                        f.message
                    ),
                );
            } else if Some(i) == own && old_fails.contains(&i) {
                self.mark_unknown(
                    i,
                    format!(
                        "its new SQL does not bind ({}), nor does its previous version: the published \
                         schema cannot be checked from here",
                        f.message
                    ),
                );
            } else {
                self.impacts[i].breaks.push(Break {
                    kind: f.kind,
                    id: f.id.clone(),
                    at: f.at.clone(),
                    message: f.message.clone(),
                });
            }
        }
    }
}

/// The column names of `source`'s table `name` as published: its view in analytics.duckdb when
/// that source publishes it, else its Parquet. `None` when neither exists (nothing to compare).
fn published_columns(
    conn: &Connection,
    layout: &DataDir,
    live: bool,
    source: &str,
    name: &str,
) -> Option<Vec<String>> {
    let columns = |sql: String| -> Option<Vec<String>> {
        let mut stmt = conn.prepare(&sql).ok()?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).ok()?;
        rows.collect::<Result<Vec<_>, _>>().ok()
    };
    if live {
        let owner: Option<String> = conn
            .query_row(
                &format!(
                    "SELECT source FROM analytics.{}.tables WHERE lower(name) = lower(?)",
                    analytics::META_SCHEMA
                ),
                [name],
                |r| r.get(0),
            )
            .ok();
        if owner.as_deref() == Some(source) {
            if let Some(view) = quote::ident(name) {
                if let Some(cols) = columns(format!(
                    "SELECT column_name FROM (DESCRIBE analytics.main.{view})"
                )) {
                    return Some(cols);
                }
            }
        }
    }
    let data = ExtractDir::new(&layout.extracts(), source)?.local_data(name)?;
    columns(format!(
        "SELECT column_name FROM (DESCRIBE SELECT * FROM {})",
        data.scan()
    ))
}

/// Binds `sql` on `conn` without running it.
fn binds_sql(conn: &Connection, sql: &str) -> Result<(), String> {
    conn.prepare(sql.trim().trim_end_matches(';'))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

/// A recorded metric's templates, to bind its previous version.
fn templates_of(o: &Object) -> metrics::Templates<'_> {
    let grains: Vec<String> = o
        .get("grain")
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(String::from))
        .collect();
    metrics::Templates {
        id: &o.id,
        sql: o.str("sql").unwrap_or_default(),
        variants: o
            .get("variants")
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
            .collect(),
        grains: if grains.is_empty() {
            vec!["month".into()]
        } else {
            grains
        },
        time_column: o.str("time_column"),
        dimensions: o
            .get("dimensions")
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str())
            .collect(),
    }
}

/// Transform names in dependency order (what they read first), stable by name.
fn topological(reads: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut out = Vec::with_capacity(reads.len());
    let mut done: BTreeSet<&str> = BTreeSet::new();
    // Depth-first; validate has refused cycles, and `visiting` keeps a bad state from looping.
    fn visit<'a>(
        n: &'a str,
        reads: &'a BTreeMap<String, Vec<String>>,
        done: &mut BTreeSet<&'a str>,
        visiting: &mut BTreeSet<&'a str>,
        out: &mut Vec<String>,
    ) {
        if done.contains(n) || !visiting.insert(n) {
            return;
        }
        for r in reads.get(n).into_iter().flatten() {
            if reads.contains_key(r) {
                visit(r, reads, done, visiting, out);
            }
        }
        visiting.remove(n);
        done.insert(n);
        out.push(n.to_string());
    }
    let mut visiting = BTreeSet::new();
    for n in reads.keys() {
        visit(n, reads, &mut done, &mut visiting, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_come_after_what_they_read() {
        let reads: BTreeMap<String, Vec<String>> = [
            ("a".to_string(), vec!["b".to_string(), "orders".to_string()]),
            ("b".to_string(), vec!["c".to_string()]),
            ("c".to_string(), vec![]),
        ]
        .into_iter()
        .collect();
        assert_eq!(topological(&reads), ["c", "b", "a"]);
    }

    #[test]
    fn labels_serialize_as_plan_json_spells_them() {
        assert_eq!(
            serde_json::to_value(Label::NonBreaking).unwrap(),
            serde_json::json!("non-breaking")
        );
        assert_eq!(Label::Breaking.to_string(), "breaking");
    }
}

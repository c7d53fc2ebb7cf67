//! `pipeline catalog export`: the instance's data description with lineage, as one [`Catalog`]
//! value and its two renderings, Markdown ([`Catalog::markdown`], a data dictionary to read or
//! commit) and JSON (`serde_json` of the value; its fields are documented in docs/catalog.md and
//! kept stable).
//!
//! Built from the registered documents (the spec files, for the CLI) plus, when the caller has
//! them, what the state and the published analytics.duckdb say ([`Observed`]: the last sync of each
//! table and the published columns with their DuckDB types). Output depends on nothing else — no
//! clock, no host — and every list is sorted, so the same inputs give the same bytes.

use crate::registry::document::{Kind, Objects};
use crate::registry::lineage::{Lineage, NodeKind};
use crate::registry::registered::Registered;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The version of the JSON document's shape; raised when a field changes meaning or goes away.
pub const FORMAT_VERSION: u32 = 1;

/// What the state and the published file say, when they exist. Keys: table ids for `syncs`,
/// lower-cased relation names for `columns` (DuckDB resolves names without regard to case).
#[derive(Debug, Default)]
pub struct Observed {
    pub syncs: BTreeMap<String, Sync>,
    /// Relation → its published columns (name, DuckDB type), in their order.
    pub columns: BTreeMap<String, Vec<(String, String)>>,
}

/// A table's last sync as the state recorded it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Sync {
    /// When new data last arrived (RFC 3339, UTC).
    pub last_sync: Option<String>,
    /// `ok`, `error` or `failed` (see docs/api.md).
    pub last_status: Option<String>,
    pub rows: Option<i64>,
}

/// The whole description.
#[derive(Debug, Serialize)]
pub struct Catalog {
    pub format_version: u32,
    pub instance: String,
    pub sources: Vec<SourceEntry>,
    pub tables: Vec<TableEntry>,
    pub transforms: Vec<TransformEntry>,
    pub metrics: Vec<MetricEntry>,
    /// "Is read by" edges: a table or transform to the transforms and metrics whose SQL reads it.
    pub lineage: Vec<Edge>,
}

#[derive(Debug, Serialize)]
pub struct SourceEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub source_type: String,
    pub description: Option<String>,
    /// Table ids.
    pub tables: Vec<String>,
    /// Transform names.
    pub transforms: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TableEntry {
    pub id: String,
    /// The view in analytics.
    pub name: String,
    pub source: String,
    pub bucket: Option<String>,
    pub source_table: String,
    pub description: Option<String>,
    pub query_mode: &'static str,
    pub sync_mode: &'static str,
    pub primary_key: Vec<String>,
    pub cursor: Option<String>,
    pub schedule: Option<String>,
    pub access: Vec<String>,
    pub tags: Vec<String>,
    pub columns: Vec<ColumnEntry>,
    /// The spec file that registers it, relative to the instance root.
    pub file: String,
    /// Null when the state has no record of it (never synced, or no state).
    pub last_sync: Option<Sync>,
    /// What reads it: `transform:NAME` and `metric:CATEGORY/NAME`.
    pub read_by: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TransformEntry {
    pub name: String,
    pub source: String,
    pub description: Option<String>,
    pub materialized: &'static str,
    /// The tables and transforms its SQL reads (view names).
    pub inputs: Vec<String>,
    pub sql: String,
    pub tags: Vec<String>,
    pub columns: Vec<ColumnEntry>,
    pub file: String,
    pub read_by: Vec<String>,
}

/// A column: published (with its DuckDB type), documented (with a description), or both.
#[derive(Debug, PartialEq, Serialize)]
pub struct ColumnEntry {
    pub name: String,
    /// DuckDB's type name; null when the column is documented but not (yet) published.
    #[serde(rename = "type")]
    pub ty: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MetricEntry {
    /// `<category>/<name>`.
    pub id: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub owner: Option<String>,
    #[serde(rename = "type")]
    pub metric_type: Option<String>,
    pub unit: Option<String>,
    pub grain: Vec<String>,
    pub time_column: Option<String>,
    pub dimensions: Vec<String>,
    pub synonyms: Vec<String>,
    /// The tables and transforms it reads.
    pub tables: Vec<String>,
    pub sql: String,
    /// Variant name → SQL.
    pub variants: BTreeMap<String, String>,
    pub file: String,
}

/// `from` is read by `to`; both as `KIND:NAME` (`table:orders`, `transform:daily`,
/// `metric:sales/revenue`).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
}

fn node_id(kind: NodeKind, name: &str) -> String {
    let kind = match kind {
        NodeKind::Table => "table",
        NodeKind::Transform => "transform",
        NodeKind::Metric => "metric",
    };
    format!("{kind}:{name}")
}

/// Published columns in their order with their descriptions, then documented columns that are
/// not published, by name.
fn columns(
    published: Option<&Vec<(String, String)>>,
    docs: &BTreeMap<String, String>,
) -> Vec<ColumnEntry> {
    let mut out: Vec<ColumnEntry> = published
        .into_iter()
        .flatten()
        .map(|(name, ty)| ColumnEntry {
            name: name.clone(),
            ty: Some(ty.clone()),
            description: docs.get(name).cloned(),
        })
        .collect();
    for (name, description) in docs {
        if !out.iter().any(|c| c.name.eq_ignore_ascii_case(name)) {
            out.push(ColumnEntry {
                name: name.clone(),
                ty: None,
                description: Some(description.clone()),
            });
        }
    }
    out
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn texts(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

impl Catalog {
    /// The catalogue of `reg` (typed) and `objects` (the same documents, for the fields the engine
    /// does not type: files, metric prose).
    pub fn of(instance: &str, reg: &Registered, objects: &Objects, observed: &Observed) -> Catalog {
        let lineage = Lineage::of(reg);
        let mut edges: Vec<Edge> = lineage
            .edges
            .iter()
            .map(|&(a, b)| {
                let (a, b) = (&lineage.nodes[a], &lineage.nodes[b]);
                Edge {
                    from: node_id(a.kind, &a.name),
                    to: node_id(b.kind, &b.name),
                }
            })
            .collect();
        edges.sort();
        let read_by = |kind: NodeKind, name: &str| -> Vec<String> {
            let me = node_id(kind, name);
            edges
                .iter()
                .filter(|e| e.from == me)
                .map(|e| e.to.clone())
                .collect()
        };
        let file = |kind: Kind, id: &str| {
            objects
                .get(&(kind, id.to_string()))
                .map(|o| o.file.clone())
                .unwrap_or_default()
        };

        let sources = reg
            .sources
            .values()
            .map(|s| SourceEntry {
                name: s.name.clone(),
                source_type: s.source_type.clone(),
                description: s.description.clone(),
                tables: reg.tables_of(&s.name).map(|t| t.id.clone()).collect(),
                transforms: reg
                    .transforms
                    .values()
                    .filter(|t| t.source == s.name)
                    .map(|t| t.name.clone())
                    .collect(),
            })
            .collect();
        let tables = reg
            .tables
            .values()
            .map(|t| TableEntry {
                id: t.id.clone(),
                name: t.name.clone(),
                source: t.source.clone(),
                bucket: t.bucket.clone(),
                source_table: t.source_table().to_string(),
                description: t.description.clone(),
                query_mode: t.query_mode().as_str(),
                sync_mode: t.sync_mode().as_str(),
                primary_key: t.primary_key.clone(),
                cursor: t.cursor.clone(),
                schedule: t.schedule.clone(),
                access: t.access.clone(),
                tags: t.tags.clone(),
                columns: columns(
                    observed.columns.get(&t.name.to_lowercase()),
                    &t.column_descriptions(),
                ),
                file: t.file.clone(),
                last_sync: observed.syncs.get(&t.id).cloned(),
                read_by: read_by(NodeKind::Table, &t.name),
            })
            .collect();
        let transforms = reg
            .transforms
            .values()
            .map(|t| TransformEntry {
                name: t.name.clone(),
                source: t.source.clone(),
                description: t.description.clone(),
                materialized: t.materialized().as_str(),
                inputs: t.inputs.clone(),
                sql: t.sql.clone(),
                tags: t.tags.clone(),
                columns: columns(observed.columns.get(&t.name.to_lowercase()), &t.columns),
                file: file(Kind::Transform, &t.name),
                read_by: read_by(NodeKind::Transform, &t.name),
            })
            .collect();
        let metrics = reg
            .metrics
            .values()
            .map(|m| {
                let o = objects.get(&(Kind::Metric, m.id.clone()));
                let field = |k: &str| o.map(|o| o.get(k).clone()).unwrap_or(Value::Null);
                MetricEntry {
                    id: m.id.clone(),
                    display_name: text(&field("display_name")),
                    description: text(&field("description")),
                    owner: text(&field("owner")),
                    metric_type: text(&field("type")),
                    unit: text(&field("unit")),
                    grain: m.grain.clone(),
                    time_column: m.time_column.clone(),
                    dimensions: m.dimensions.clone(),
                    synonyms: texts(&field("synonyms")),
                    tables: m.tables.clone(),
                    sql: m.sql.clone(),
                    variants: m.variants.clone(),
                    file: o.map(|o| o.file.clone()).unwrap_or_default(),
                }
            })
            .collect();
        Catalog {
            format_version: FORMAT_VERSION,
            instance: instance.to_string(),
            sources,
            tables,
            transforms,
            metrics,
            lineage: edges,
        }
    }

    /// The JSON document (pretty, with a final newline).
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the catalogue serializes") + "\n"
    }

    /// A data dictionary in Markdown: lineage, sources, tables, transforms, metrics.
    pub fn markdown(&self, reg: &Registered) -> String {
        let mut out = String::new();
        let title = if self.instance.is_empty() {
            "Data catalogue".to_string()
        } else {
            format!("Data catalogue: {}", self.instance)
        };
        let _ = writeln!(out, "# {}\n", inline(&title));
        let _ = writeln!(
            out,
            "{} source(s), {} table(s), {} transform(s), {} metric(s). Generated by \
             `pipeline catalog export` from the spec files{}.\n",
            self.sources.len(),
            self.tables.len(),
            self.transforms.len(),
            self.metrics.len(),
            if self.tables.iter().any(|t| t.last_sync.is_some())
                || self
                    .tables
                    .iter()
                    .any(|t| t.columns.iter().any(|c| c.ty.is_some()))
            {
                ", the state and the published analytics.duckdb"
            } else {
                ""
            }
        );

        out.push_str(
            "## Lineage\n\nWhat reads each table: table → transform → metric.\n\n```text\n",
        );
        out.push_str(&Lineage::of(reg).tree());
        out.push_str("```\n\n");

        out.push_str("## Sources\n\n");
        if self.sources.is_empty() {
            out.push_str("None.\n\n");
        }
        for s in &self.sources {
            let _ = writeln!(
                out,
                "### {} ({})\n",
                inline(&s.name),
                inline(&s.source_type)
            );
            if let Some(d) = &s.description {
                let _ = writeln!(out, "{}\n", paragraph(d));
            }
            let _ = writeln!(out, "- Tables: {}", names(&s.tables));
            let _ = writeln!(out, "- Transforms: {}\n", names(&s.transforms));
        }

        out.push_str("## Tables\n\n");
        if self.tables.is_empty() {
            out.push_str("None.\n\n");
        }
        for t in &self.tables {
            let _ = writeln!(out, "### {}\n", inline(&t.name));
            if let Some(d) = &t.description {
                let _ = writeln!(out, "{}\n", paragraph(d));
            }
            let _ = writeln!(out, "- Id: `{}` (in `{}`)", code(&t.id), code(&t.file));
            let at = match &t.bucket {
                Some(b) => format!("{b}.{}", t.source_table),
                None => t.source_table.clone(),
            };
            let _ = writeln!(out, "- Source: {} — `{}`", inline(&t.source), code(&at));
            let mut mode = format!("{}, sync {}", t.query_mode, t.sync_mode);
            if let Some(c) = &t.cursor {
                mode.push_str(&format!(" on `{}`", code(c)));
            }
            let _ = writeln!(out, "- Mode: {mode}");
            if !t.primary_key.is_empty() {
                let _ = writeln!(out, "- Primary key: {}", names(&t.primary_key));
            }
            if let Some(s) = &t.schedule {
                let _ = writeln!(out, "- Schedule: `{}`", code(s));
            }
            let access = if t.access.is_empty() {
                "every authenticated user".to_string()
            } else {
                format!("group(s) {}", names(&t.access))
            };
            let _ = writeln!(out, "- Readable by: {access}");
            if !t.tags.is_empty() {
                let _ = writeln!(out, "- Tags: {}", names(&t.tags));
            }
            if let Some(s) = &t.last_sync {
                let _ = writeln!(
                    out,
                    "- Last sync: {} ({}, {} rows)",
                    s.last_sync.as_deref().unwrap_or("none yet"),
                    s.last_status.as_deref().unwrap_or("no status"),
                    s.rows.map_or("unknown".to_string(), |r| r.to_string())
                );
            }
            let _ = writeln!(out, "- Read by: {}\n", names(&t.read_by));
            column_table(&mut out, &t.columns);
        }

        out.push_str("## Transforms\n\n");
        if self.transforms.is_empty() {
            out.push_str("None.\n\n");
        }
        for t in &self.transforms {
            let _ = writeln!(out, "### {}\n", inline(&t.name));
            if let Some(d) = &t.description {
                let _ = writeln!(out, "{}\n", paragraph(d));
            }
            let _ = writeln!(
                out,
                "- Source: {} (in `{}`), materialized as {}",
                inline(&t.source),
                code(&t.file),
                t.materialized
            );
            let _ = writeln!(out, "- Inputs: {}", names(&t.inputs));
            if !t.tags.is_empty() {
                let _ = writeln!(out, "- Tags: {}", names(&t.tags));
            }
            let _ = writeln!(out, "- Read by: {}\n", names(&t.read_by));
            column_table(&mut out, &t.columns);
            sql_block(&mut out, &t.sql);
        }

        out.push_str("## Metrics\n\n");
        if self.metrics.is_empty() {
            out.push_str("None.\n\n");
        }
        for m in &self.metrics {
            match &m.display_name {
                Some(d) => {
                    let _ = writeln!(out, "### {} — {}\n", inline(&m.id), inline(d));
                }
                None => {
                    let _ = writeln!(out, "### {}\n", inline(&m.id));
                }
            }
            if let Some(d) = &m.description {
                let _ = writeln!(out, "{}\n", paragraph(d));
            }
            let _ = writeln!(out, "- File: `{}`", code(&m.file));
            if let Some(o) = &m.owner {
                let _ = writeln!(out, "- Owner: {}", inline(o));
            }
            let kind: Vec<&str> = [m.metric_type.as_deref(), m.unit.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            if !kind.is_empty() {
                let _ = writeln!(out, "- Type: {}", inline(&kind.join(", ")));
            }
            if !m.grain.is_empty() {
                let _ = writeln!(out, "- Grain: {}", names(&m.grain));
            }
            if let Some(c) = &m.time_column {
                let _ = writeln!(out, "- Time column: `{}`", code(c));
            }
            if !m.dimensions.is_empty() {
                let _ = writeln!(out, "- Dimensions: {}", names(&m.dimensions));
            }
            if !m.synonyms.is_empty() {
                let _ = writeln!(out, "- Also called: {}", inline(&m.synonyms.join(", ")));
            }
            let _ = writeln!(out, "- Reads: {}\n", names(&m.tables));
            sql_block(&mut out, &m.sql);
            for (name, sql) in &m.variants {
                let _ = writeln!(out, "Variant `{}`:\n", code(name));
                sql_block(&mut out, sql);
            }
        }
        while out.ends_with("\n\n") {
            out.pop();
        }
        out
    }
}

fn column_table(out: &mut String, columns: &[ColumnEntry]) {
    if columns.is_empty() {
        out.push_str("No columns known yet (documented or published).\n\n");
        return;
    }
    out.push_str("| column | type | description |\n|---|---|---|\n");
    for c in columns {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            code(&c.name),
            c.ty.as_deref().map(cell).unwrap_or_default(),
            c.description.as_deref().map(cell).unwrap_or_default()
        );
    }
    out.push('\n');
}

/// A fenced SQL block whose fence is longer than any backtick run in the SQL.
fn sql_block(out: &mut String, sql: &str) {
    let longest = sql.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let _ = writeln!(out, "{fence}sql\n{}\n{fence}\n", sql.trim_end());
}

/// `a`, `b` as inline code, or "none".
fn names(items: &[String]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items
        .iter()
        .map(|i| format!("`{}`", code(i)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Text inside inline code: a backtick would end it, a line break would end the list item.
fn code(text: &str) -> String {
    text.replace('`', "'").replace(['\n', '\r'], " ")
}

/// One line of prose: line breaks become spaces, and characters Markdown would read as markup at
/// the start of a line or inline (`<`, `|`) are escaped.
fn inline(text: &str) -> String {
    escape(&text.replace(['\n', '\r'], " "))
}

/// A paragraph: its own line breaks kept, each line escaped.
fn paragraph(text: &str) -> String {
    text.trim()
        .lines()
        .map(|l| escape(l.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A table cell: one line, with `|` escaped.
fn cell(text: &str) -> String {
    inline(text)
}

/// Markdown's markup characters escaped; `_` is left alone (GitHub's Markdown ignores it inside
/// words, and column names are full of it), `#`, `-`, `+` only where they would start a heading or
/// a list.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        let at_start = i == 0 && matches!(c, '#' | '-' | '+');
        if at_start || matches!(c, '\\' | '|' | '<' | '>' | '*' | '[' | ']' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_keep_published_order_then_documented_only_ones() {
        let published = vec![
            ("b".to_string(), "BIGINT".to_string()),
            ("a".to_string(), "VARCHAR".to_string()),
        ];
        let docs: BTreeMap<String, String> = [
            ("a".to_string(), "The a".to_string()),
            ("z".to_string(), "Not published yet".to_string()),
        ]
        .into();
        let cols = columns(Some(&published), &docs);
        let names: Vec<(&str, Option<&str>, Option<&str>)> = cols
            .iter()
            .map(|c| (c.name.as_str(), c.ty.as_deref(), c.description.as_deref()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("b", Some("BIGINT"), None),
                ("a", Some("VARCHAR"), Some("The a")),
                ("z", None, Some("Not published yet")),
            ]
        );
    }

    #[test]
    fn markdown_text_cannot_break_the_layout() {
        assert_eq!(cell("a | b\nc"), "a \\| b c");
        assert_eq!(code("x`y\nz"), "x'y z");
        let mut out = String::new();
        sql_block(&mut out, "select '```' as x");
        assert!(out.starts_with("````sql\n"), "{out}");
        assert!(out.ends_with("\n````\n\n"), "{out}");
    }
}

//! `pipeline catalog import openmetadata URL`: what an OpenMetadata server knows, brought into the
//! instance.
//!
//! - **Metrics** become metric spec files (`metrics/<category>/<name>.yaml`), written by the writer
//!   of `pipeline metrics import` ([`crate::metrics::import`]): the same YAML, the same marker line
//!   on top, the same rule that a file without the marker (hand-written) is never replaced, and
//!   identical content is not rewritten, so a second import with no upstream change writes nothing.
//! - **Tables** are matched to registered tables ([`match_table`]: the FQN's last two segments
//!   against bucket and source table, else its last segment against source table or view name; no
//!   match or several are reported, never guessed). Registry files declaring tables are written by
//!   hand and never touched: what OpenMetadata documents that a table's own spec does not (its
//!   description, column descriptions) goes to one generated registry file of `descriptions:`
//!   (`registry/openmetadata.yaml`, docs/specs.md), under the same marker and rules as the
//!   metrics. The table's own spec always wins, so an entry only fills gaps.
//!
//! Values in, report out; the HTTP reading is [`super::openmetadata`], rendering is the CLI's.

use super::openmetadata::{Metric, Table};
use crate::metrics::import::scalar;
use crate::metrics::import::{
    marker, normalise_name, plan_write, render_spec, template_warnings, write, ImportError,
    MetricDoc, Outcome,
};
use crate::spec::fields::GRAINS;
use crate::spec::model::TableSpec;
use crate::spec::Specs;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The command named in generated files' marker line.
const COMMAND: &str = "catalog import";

#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The instance's `metrics/` directory.
    pub metrics_dir: PathBuf,
    /// The generated registry file of table descriptions (`registry/openmetadata.yaml`).
    pub descriptions_file: PathBuf,
    /// The category of metrics without a `MetricCategory.*` (or `Category.*`) tag.
    pub default_category: String,
    /// Compute the report but write nothing.
    pub dry_run: bool,
}

/// What an import did (or, with `dry_run`, would do).
#[derive(Debug, Default, PartialEq)]
pub struct ImportReport {
    /// Spec files created or changed: metrics, then the descriptions file.
    pub written: Vec<PathBuf>,
    /// Spec files already identical.
    pub unchanged: Vec<PathBuf>,
    /// Metrics not imported (hand-written target, no SQL query, unusable name…), and the
    /// descriptions file when a hand-written file is in its place, with why.
    pub skipped: Vec<Note>,
    /// Parts of imported metrics not carried over as written.
    pub warnings: Vec<Note>,
    /// OpenMetadata tables matched to registered tables, with what they document beyond the spec.
    pub tables: Vec<TableMatch>,
    /// OpenMetadata tables matched to no registered table (or to several), with why.
    pub unmatched: Vec<Note>,
}

/// Something the report says about one OpenMetadata entity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The entity's fully qualified name (or its name).
    pub entity: String,
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.entity, self.message)
    }
}

/// An OpenMetadata table, the registered table it describes, and what it documents that the
/// table's own spec does not (what its `descriptions:` entry holds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableMatch {
    pub entity: String,
    pub table_id: String,
    /// OpenMetadata's description, when the table's spec has none.
    pub description: Option<String>,
    /// OpenMetadata's description when the table's spec has another one (which is kept).
    pub other_description: Option<String>,
    /// Column → OpenMetadata's description, for columns the table's spec does not document.
    pub columns: BTreeMap<String, String>,
}

impl TableMatch {
    /// Whether OpenMetadata documents anything the spec does not.
    pub fn has_news(&self) -> bool {
        self.description.is_some() || !self.columns.is_empty()
    }
}

/// Imports `metrics` into spec files under `opts.metrics_dir`, and what `tables` document beyond
/// the registry (`specs.tables`, as the spec files declare them) into `opts.descriptions_file`.
pub fn import(
    specs: &Specs,
    tables: &[Table],
    metrics: &[Metric],
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    compare_tables(&specs.tables, tables, &mut report);

    let mut metrics: Vec<&Metric> = metrics.iter().collect();
    metrics.sort_by_key(|m| entity(m));
    let mut claimed: BTreeMap<(String, String), String> = BTreeMap::new();
    for m in metrics {
        let label = entity(m);
        let converted = match convert(m, &opts.default_category) {
            Ok(c) => c,
            Err(message) => {
                report.skipped.push(Note {
                    entity: label,
                    message,
                });
                continue;
            }
        };
        let key = (converted.category.clone(), converted.name.clone());
        if let Some(first) = claimed.get(&key) {
            report.skipped.push(Note {
                entity: label,
                message: format!(
                    "{first} already becomes metric `{}/{}`; metric ids must be unique",
                    key.0, key.1
                ),
            });
            continue;
        }
        claimed.insert(key, label.clone());
        let dir = opts.metrics_dir.join(&converted.category);
        let target = dir.join(format!("{}.yaml", converted.name));
        let content = render_spec(
            &converted.spec,
            &marker(&format!("OpenMetadata metric {label}"), COMMAND),
        );
        match plan_write(&dir, &converted.name, &target, &content) {
            Outcome::Unchanged => report.unchanged.push(target),
            Outcome::Write => {
                if !opts.dry_run {
                    write(&target, &content)?;
                }
                report.written.push(target);
            }
            Outcome::Refuse(why) => {
                report.skipped.push(Note {
                    entity: label,
                    message: why,
                });
                continue;
            }
        }
        report
            .warnings
            .extend(converted.warnings.into_iter().map(|message| Note {
                entity: label.clone(),
                message,
            }));
    }
    write_descriptions(opts, &mut report)?;
    Ok(report)
}

/// The descriptions file: written when a matched table has something to add, or to bring an
/// earlier import's file up to date; a hand-written file in its place is left alone.
fn write_descriptions(opts: &ImportOptions, report: &mut ImportReport) -> Result<(), ImportError> {
    let target = &opts.descriptions_file;
    let news: Vec<&TableMatch> = report.tables.iter().filter(|m| m.has_news()).collect();
    if news.is_empty() && !target.exists() {
        return Ok(());
    }
    let content = render_descriptions(&news);
    let (Some(dir), Some(name)) = (target.parent(), target.file_stem()) else {
        return Ok(());
    };
    match plan_write(dir, &name.to_string_lossy(), target, &content) {
        Outcome::Unchanged => report.unchanged.push(target.clone()),
        Outcome::Write => {
            if !opts.dry_run {
                write(target, &content)?;
            }
            report.written.push(target.clone());
        }
        Outcome::Refuse(why) => report.skipped.push(Note {
            entity: "table descriptions".into(),
            message: why,
        }),
    }
    Ok(())
}

/// A registry file of `descriptions:` only (docs/specs.md), tables by id.
fn render_descriptions(news: &[&TableMatch]) -> String {
    let mut out = marker("OpenMetadata tables", COMMAND);
    out.push_str(
        "\n# What OpenMetadata documents that the tables' own specs do not; their own words win.\n\
         tables: []\n",
    );
    if news.is_empty() {
        out.push_str("descriptions: []\n");
        return out;
    }
    out.push_str("descriptions:\n");
    for m in news {
        out.push_str(&format!("  - table: {}\n", scalar(&m.table_id, 6, false)));
        if let Some(d) = &m.description {
            out.push_str(&format!("    description: {}\n", scalar(d, 6, false)));
        }
        if !m.columns.is_empty() {
            out.push_str("    columns:\n");
            for (c, d) in &m.columns {
                out.push_str(&format!(
                    "      {}: {}\n",
                    scalar(c, 0, false),
                    scalar(d, 8, false)
                ));
            }
        }
    }
    out
}

fn entity(m: &Metric) -> String {
    m.fully_qualified_name
        .clone()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| m.name.clone())
}

fn table_entity(t: &Table) -> String {
    t.fully_qualified_name
        .clone()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| t.name.clone())
}

/// The registered table `t` describes: the one whose bucket and source table are the FQN's last two
/// segments, else the only one whose source table or view name is its last segment (names compare
/// without regard to ASCII case). `Err` says why there is none.
pub fn match_table<'a>(registered: &'a [TableSpec], t: &Table) -> Result<&'a TableSpec, String> {
    let fqn = table_entity(t);
    let segments: Vec<&str> = fqn.split('.').map(|s| s.trim_matches('"')).collect();
    let last = segments.last().copied().unwrap_or(t.name.as_str());
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    if segments.len() >= 2 {
        let schema = segments[segments.len() - 2];
        let exact: Vec<&TableSpec> = registered
            .iter()
            .filter(|d| {
                d.bucket.as_ref().is_some_and(|b| eq(b, schema)) && eq(source_table(d), last)
            })
            .collect();
        if let [one] = exact.as_slice() {
            return Ok(one);
        }
    }
    let by_name: Vec<&TableSpec> = registered
        .iter()
        .filter(|d| eq(source_table(d), last) || eq(&d.name, last))
        .collect();
    match by_name.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "no registered table has source table or view name `{last}`"
        )),
        several => Err(format!(
            "several registered tables could be `{last}` ({}); none was chosen",
            several
                .iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The name at the source: `source_table`, else the view name.
fn source_table(t: &TableSpec) -> &str {
    t.source_table
        .as_ref()
        .map_or(t.name.as_str(), |s| s.as_str())
}

fn compare_tables(registered: &[TableSpec], tables: &[Table], report: &mut ImportReport) {
    let mut tables: Vec<&Table> = tables.iter().collect();
    tables.sort_by_key(|t| table_entity(t));
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for t in tables {
        let label = table_entity(t);
        let def = match match_table(registered, t) {
            Ok(d) => d,
            Err(message) => {
                report.unmatched.push(Note {
                    entity: label,
                    message,
                });
                continue;
            }
        };
        let id = def.id.value.clone();
        if let Some(first) = seen.get(&id) {
            report.unmatched.push(Note {
                entity: label,
                message: format!("{first} already describes table `{id}`"),
            });
            continue;
        }
        seen.insert(id.clone(), label.clone());
        let upstream = t
            .description
            .as_deref()
            .map(plain_text)
            .filter(|d| !d.is_empty());
        let (description, other_description) = match (&def.description, upstream) {
            (None, d) => (d, None),
            (Some(own), Some(d)) if own.value != d => (None, Some(d)),
            _ => (None, None),
        };
        // Columns the spec documents itself (names compare as DuckDB compares them).
        let documented: BTreeSet<String> = def
            .columns
            .iter()
            .map(|(c, _)| c.value.to_lowercase())
            .collect();
        let columns: BTreeMap<String, String> = t
            .columns
            .iter()
            .filter(|c| !documented.contains(&c.name.to_lowercase()))
            .filter_map(|c| {
                let d = plain_text(c.description.as_deref()?);
                (!d.is_empty()).then(|| (c.name.clone(), d))
            })
            .collect();
        report.tables.push(TableMatch {
            entity: label,
            table_id: id,
            description,
            other_description,
            columns,
        });
    }
}

struct Converted {
    category: String,
    name: String,
    spec: MetricDoc,
    warnings: Vec<String>,
}

/// The tag value after `prefix.` of the first such tag.
fn tagged<'a>(m: &'a Metric, prefixes: &[&str]) -> Option<&'a str> {
    m.tags.iter().find_map(|t| {
        let fqn = t.tag_fqn.as_deref()?;
        prefixes
            .iter()
            .find_map(|p| fqn.strip_prefix(p).and_then(|x| x.strip_prefix('.')))
    })
}

fn convert(m: &Metric, default_category: &str) -> Result<Converted, String> {
    let mut warnings = Vec::new();
    let name = normalise_name(&m.name).ok_or_else(|| {
        format!(
            "name `{}` cannot be made a metric name (lowercase letters, digits, `_` and `-`)",
            m.name
        )
    })?;
    let raw_category = tagged(m, &["MetricCategory", "Category"]).unwrap_or(default_category);
    let category = normalise_name(raw_category)
        .ok_or_else(|| format!("category `{raw_category}` cannot be made a metric name"))?;

    let Some(expr) = &m.metric_expression else {
        return Err("it has no metricExpression: a metric spec needs its SQL".into());
    };
    let language = expr.language.as_deref().unwrap_or("SQL");
    if !language.eq_ignore_ascii_case("sql") {
        return Err(format!(
            "its expression is {language}, not SQL; write the spec by hand"
        ));
    }
    let code = expr.code.as_deref().unwrap_or("").trim();
    let first_word = code
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if !matches!(first_word.as_str(), "select" | "with" | "from") {
        let shown: String = code.chars().take(60).collect();
        return Err(format!(
            "its expression `{shown}` is not a query; a metric spec's sql is a SELECT returning \
             `value` (and `period` per grain) from registered tables — write the spec by hand"
        ));
    }

    let display_name = m
        .display_name
        .clone()
        .filter(|d| !d.trim().is_empty() && *d != m.name);
    let description = match m
        .description
        .as_deref()
        .map(plain_text)
        .filter(|d| !d.is_empty())
    {
        Some(d) => d,
        None => {
            warnings.push(
                "no description in OpenMetadata (the metric spec requires one): used its name; \
                 say precisely what the number means"
                    .into(),
            );
            display_name.clone().unwrap_or_else(|| m.name.clone())
        }
    };
    let owner = m
        .owners
        .iter()
        .find_map(|o| o.name.clone().or_else(|| o.display_name.clone()))
        .filter(|o| !o.trim().is_empty());
    let metric_type = m
        .metric_type
        .as_deref()
        .map(|t| match t.to_ascii_uppercase().as_str() {
            "SUM" => "sum",
            "COUNT" => "count",
            "COUNT_DISTINCT" => "count_distinct",
            "AVERAGE" | "AVG" | "MEAN" => "average",
            "RATIO" | "PERCENTAGE" => "ratio",
            _ => "custom",
        });
    let unit = m
        .unit_of_measurement
        .as_deref()
        .filter(|u| !u.eq_ignore_ascii_case("other"))
        .map(|u| match u.to_ascii_uppercase().as_str() {
            "DOLLARS" => "USD".to_string(),
            "PERCENTAGE" => "%".to_string(),
            _ => u.to_ascii_lowercase(),
        });
    let mut grain = Vec::new();
    if let Some(g) = &m.granularity {
        match GRAINS.iter().find(|x| x.eq_ignore_ascii_case(g)) {
            Some(x) => grain.push(*x),
            None => warnings.push(format!(
                "granularity `{g}` not carried over: grains are {}",
                GRAINS.join(", ")
            )),
        }
    }
    let dimensions: Vec<String> = m
        .tags
        .iter()
        .filter_map(|t| t.tag_fqn.as_deref()?.strip_prefix("Dimension."))
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let spec = MetricDoc {
        display_name,
        description,
        owner,
        metric_type,
        unit,
        grain,
        dimensions,
        sql: format!("{code}\n"),
        ..MetricDoc::default()
    };
    template_warnings(&spec, &mut warnings);
    Ok(Converted {
        category,
        name,
        spec,
        warnings,
    })
}

/// OpenMetadata's descriptions are rich text (Markdown, or HTML from older editors): tags dropped
/// (block ends and `<br>` become line breaks), the common entities decoded, blank runs collapsed.
pub fn plain_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('>') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let tag = rest[start + 1..start + len].trim().to_ascii_lowercase();
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if matches!(
            name.as_str(),
            "br" | "p" | "div" | "li" | "ul" | "ol" | "tr"
        ) || (name.len() == 2 && name.starts_with('h'))
        {
            out.push('\n');
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    decoded
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::openmetadata::{EntityRef, Expression, Tag};

    /// The tables a registry file declares.
    fn registry(yaml: &str) -> Vec<TableSpec> {
        let node = crate::spec::yaml::parse(yaml, crate::diag::source::FileId(0)).unwrap();
        let mut diags = crate::diag::Diagnostics::default();
        let mut dec = crate::spec::decode::Decoder::new(&mut diags);
        let (tables, _) =
            crate::spec::model::decode_registry(&mut dec, &node, crate::diag::source::FileId(0));
        assert_eq!(diags.error_count(), 0, "{diags:?}");
        tables
    }

    fn om_table(fqn: &str) -> Table {
        Table {
            name: fqn.rsplit('.').next().unwrap().into(),
            fully_qualified_name: Some(fqn.into()),
            ..Table::default()
        }
    }

    #[test]
    fn tables_match_by_schema_and_name_else_by_a_unique_name() {
        let r = registry(
            "tables:\n\
             - { id: a.orders, source: shop, bucket: a, source_table: orders }\n\
             - { id: b.orders, source: shop, bucket: b, source_table: orders, name: b_orders }\n\
             - { id: shop.customers, source: shop, source_table: customers }\n",
        );
        let id = |fqn: &str| match_table(&r, &om_table(fqn)).map(|t| t.id.value.clone());
        assert_eq!(id("pg.db.b.orders").unwrap(), "b.orders");
        assert_eq!(id("pg.db.public.CUSTOMERS").unwrap(), "shop.customers");
        assert_eq!(id("pg.db.public.b_orders").unwrap(), "b.orders");
        let ambiguous = id("pg.db.public.orders").unwrap_err();
        assert!(ambiguous.contains("a.orders, b.orders"), "{ambiguous}");
        assert!(id("pg.db.public.nothing")
            .unwrap_err()
            .contains("no registered table"));
    }

    #[test]
    fn only_what_the_spec_lacks_is_taken_for_a_table() {
        let r = registry(
            "tables:\n\
             - id: shop.orders\n  source: shop\n  source_table: orders\n  \
               description: One row per order\n  columns: { order_id: Order identifier }\n\
             - { id: shop.customers, source: shop, source_table: customers }\n",
        );
        let mut orders = om_table("svc.db.shop.orders");
        orders.description = Some("<p>One row per <i>placed</i> order</p>".into());
        orders.columns = vec![
            crate::catalog::openmetadata::Column {
                name: "ORDER_ID".into(),
                description: Some("Order id upstream".into()),
                data_type: None,
            },
            crate::catalog::openmetadata::Column {
                name: "amount".into(),
                description: Some("Total &amp; tax".into()),
                data_type: None,
            },
        ];
        let mut customers = om_table("svc.db.shop.customers");
        customers.description = Some("One row per customer".into());
        let mut report = ImportReport::default();
        compare_tables(&r, &[orders, customers], &mut report);
        assert_eq!(
            report.tables,
            vec![
                TableMatch {
                    entity: "svc.db.shop.customers".into(),
                    table_id: "shop.customers".into(),
                    description: Some("One row per customer".into()),
                    other_description: None,
                    columns: BTreeMap::new(),
                },
                TableMatch {
                    entity: "svc.db.shop.orders".into(),
                    table_id: "shop.orders".into(),
                    description: None,
                    other_description: Some("One row per placed order".into()),
                    columns: [("amount".to_string(), "Total & tax".to_string())].into(),
                },
            ]
        );
        let news: Vec<&TableMatch> = report.tables.iter().collect();
        assert_eq!(
            render_descriptions(&news),
            "# Imported from OpenMetadata tables by pipeline catalog import; a re-import overwrites this file until you delete this line.\n\
             # What OpenMetadata documents that the tables' own specs do not; their own words win.\n\
             tables: []\n\
             descriptions:\n\
             \x20 - table: shop.customers\n\
             \x20   description: One row per customer\n\
             \x20 - table: shop.orders\n\
             \x20   columns:\n\
             \x20     amount: Total & tax\n"
        );
    }

    fn metric(name: &str, code: &str) -> Metric {
        Metric {
            name: name.into(),
            fully_qualified_name: Some(name.into()),
            description: Some("<p>Sum of <b>completed</b> orders</p>".into()),
            metric_expression: Some(Expression {
                language: Some("SQL".into()),
                code: Some(code.into()),
            }),
            metric_type: Some("SUM".into()),
            unit_of_measurement: Some("DOLLARS".into()),
            granularity: Some("MONTH".into()),
            owners: vec![EntityRef {
                name: Some("finance".into()),
                display_name: None,
            }],
            tags: vec![
                Tag {
                    tag_fqn: Some("MetricCategory.Revenue".into()),
                },
                Tag {
                    tag_fqn: Some("Dimension.country".into()),
                },
            ],
            ..Metric::default()
        }
    }

    #[test]
    fn a_metric_becomes_this_spec() {
        let c = convert(
            &metric("Total Revenue", "select 1 as value from orders"),
            "general",
        )
        .unwrap();
        assert_eq!(
            (c.category.as_str(), c.name.as_str()),
            ("revenue", "total_revenue")
        );
        let text = render_spec(&c.spec, &marker("OpenMetadata metric x", COMMAND));
        assert_eq!(
            text,
            "# Imported from OpenMetadata metric x by pipeline catalog import; a re-import overwrites this file until you delete this line.\n\
             description: Sum of completed orders\n\
             owner: finance\n\
             type: sum\n\
             unit: USD\n\
             grain: [month]\n\
             dimensions: [country]\n\
             sql: |\n  select 1 as value from orders\n"
        );
    }

    #[test]
    fn expressions_that_are_not_queries_are_skipped_with_why() {
        let why = convert(&metric("m", "SUM(amount)"), "general")
            .err()
            .unwrap();
        assert!(why.contains("not a query"), "{why}");
        let mut java = metric("m", "select 1");
        java.metric_expression.as_mut().unwrap().language = Some("Java".into());
        assert!(convert(&java, "general").err().unwrap().contains("Java"));
    }

    #[test]
    fn rich_text_becomes_plain_lines() {
        assert_eq!(
            plain_text("<p>First &lt;line&gt;</p><ul><li>a</li><li>b&nbsp; c</li></ul>"),
            "First <line>\na\nb c"
        );
        assert_eq!(plain_text("no markup"), "no markup");
    }
}

//! `pipeline catalog import openmetadata URL`: what an OpenMetadata server knows, brought into the
//! instance.
//!
//! - **Metrics** become metric spec files (`metrics/<category>/<name>.yaml`), written by the writer
//!   of `pipeline metrics import` ([`crate::metrics::import`]): the same YAML, the same marker line
//!   on top, the same rule that a file without the marker (hand-written) is never replaced, and
//!   identical content is not rewritten, so a second import with no upstream change writes nothing.
//! - **Tables** are matched to registered tables ([`match_table`]: the FQN's last two segments
//!   against bucket and source table, else its last segment against source table or view name; no
//!   match or several are reported, never guessed). Registry files declare much more than
//!   descriptions and are written by hand, so they are not rewritten: the report lists, per
//!   matched table, the description and column descriptions OpenMetadata has that its spec lacks,
//!   for the author to take.
//!
//! Values in, report out; the HTTP reading is [`super::openmetadata`], rendering is the CLI's.

use super::openmetadata::{Metric, Table};
use crate::metrics::import::{
    marker, normalise_name, plan_write, render_spec, template_warnings, write, ImportError,
    MetricDoc, Outcome,
};
use crate::registry::registered::{Registered, TableDef};
use crate::spec::fields::GRAINS;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The command named in generated files' marker line.
const COMMAND: &str = "catalog import";

#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The instance's `metrics/` directory.
    pub metrics_dir: PathBuf,
    /// The category of metrics without a `MetricCategory.*` (or `Category.*`) tag.
    pub default_category: String,
    /// Compute the report but write nothing.
    pub dry_run: bool,
}

/// What an import did (or, with `dry_run`, would do).
#[derive(Debug, Default, PartialEq)]
pub struct ImportReport {
    /// Metric spec files created or changed.
    pub written: Vec<PathBuf>,
    /// Metric spec files already identical.
    pub unchanged: Vec<PathBuf>,
    /// Metrics not imported (hand-written target, no SQL query, unusable name…), with why.
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

/// An OpenMetadata table and the registered table it describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableMatch {
    pub entity: String,
    pub table_id: String,
    /// The registry file declaring the table (relative to the instance root).
    pub file: String,
    /// OpenMetadata's description, when the spec has none or a different one.
    pub description: Option<String>,
    /// Column → OpenMetadata's description, for columns the spec does not document (or documents
    /// differently), by column name.
    pub columns: BTreeMap<String, String>,
}

impl TableMatch {
    /// Whether OpenMetadata documents anything the spec does not.
    pub fn has_news(&self) -> bool {
        self.description.is_some() || !self.columns.is_empty()
    }
}

/// Imports `metrics` into spec files under `opts.metrics_dir` and compares `tables` with `reg`.
pub fn import(
    reg: &Registered,
    tables: &[Table],
    metrics: &[Metric],
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    compare_tables(reg, tables, &mut report);

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
    Ok(report)
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
pub fn match_table<'a>(reg: &'a Registered, t: &Table) -> Result<&'a TableDef, String> {
    let fqn = table_entity(t);
    let segments: Vec<&str> = fqn.split('.').map(|s| s.trim_matches('"')).collect();
    let last = segments.last().copied().unwrap_or(t.name.as_str());
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    if segments.len() >= 2 {
        let schema = segments[segments.len() - 2];
        let exact: Vec<&TableDef> = reg
            .tables
            .values()
            .filter(|d| {
                d.bucket.as_deref().is_some_and(|b| eq(b, schema)) && eq(d.source_table(), last)
            })
            .collect();
        if let [one] = exact.as_slice() {
            return Ok(one);
        }
    }
    let by_name: Vec<&TableDef> = reg
        .tables
        .values()
        .filter(|d| eq(d.source_table(), last) || eq(&d.name, last))
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

fn compare_tables(reg: &Registered, tables: &[Table], report: &mut ImportReport) {
    let mut tables: Vec<&Table> = tables.iter().collect();
    tables.sort_by_key(|t| table_entity(t));
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for t in tables {
        let label = table_entity(t);
        let def = match match_table(reg, t) {
            Ok(d) => d,
            Err(message) => {
                report.unmatched.push(Note {
                    entity: label,
                    message,
                });
                continue;
            }
        };
        if let Some(first) = seen.get(&def.id) {
            report.unmatched.push(Note {
                entity: label,
                message: format!("{first} already describes table `{}`", def.id),
            });
            continue;
        }
        seen.insert(def.id.clone(), label.clone());
        let description = t
            .description
            .as_deref()
            .map(plain_text)
            .filter(|d| !d.is_empty())
            .filter(|d| def.description.as_deref() != Some(d.as_str()));
        let documented: BTreeMap<String, &String> = def
            .columns
            .iter()
            .map(|(c, d)| (c.to_lowercase(), d))
            .collect();
        let columns: BTreeMap<String, String> = t
            .columns
            .iter()
            .filter_map(|c| {
                let d = plain_text(c.description.as_deref()?);
                let same = documented
                    .get(&c.name.to_lowercase())
                    .is_some_and(|x| **x == d);
                (!d.is_empty() && !same).then(|| (c.name.clone(), d))
            })
            .collect();
        report.tables.push(TableMatch {
            entity: label,
            table_id: def.id.clone(),
            file: def.file.clone(),
            description,
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

    fn table_def(id: &str, bucket: Option<&str>, source_table: &str, name: &str) -> TableDef {
        let v = serde_json::json!({
            "source": "shop", "name": name, "source_table": source_table, "bucket": bucket,
        });
        let mut t: TableDef = serde_json::from_value(v).unwrap();
        t.id = id.into();
        t.file = "registry/shop.yaml".into();
        t
    }

    fn reg(tables: Vec<TableDef>) -> Registered {
        Registered {
            tables: tables.into_iter().map(|t| (t.id.clone(), t)).collect(),
            ..Registered::default()
        }
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
        let r = reg(vec![
            table_def("a.orders", Some("a"), "orders", "orders"),
            table_def("b.orders", Some("b"), "orders", "b_orders"),
            table_def("shop.customers", None, "customers", "customers"),
        ]);
        let id = |fqn: &str| match_table(&r, &om_table(fqn)).map(|t| t.id.clone());
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
    fn only_what_the_spec_lacks_is_reported_for_a_table() {
        let mut def = table_def("shop.orders", None, "orders", "orders");
        def.description = Some("One row per order".into());
        def.columns = [("order_id".to_string(), "Order identifier".to_string())].into();
        let r = reg(vec![def]);
        let mut t = om_table("svc.db.shop.orders");
        t.description = Some("<p>One row per order</p>".into());
        t.columns = vec![
            crate::catalog::openmetadata::Column {
                name: "ORDER_ID".into(),
                description: Some("Order identifier".into()),
                data_type: None,
            },
            crate::catalog::openmetadata::Column {
                name: "amount".into(),
                description: Some("Total &amp; tax".into()),
                data_type: None,
            },
        ];
        let mut report = ImportReport::default();
        compare_tables(&r, &[t], &mut report);
        assert_eq!(
            report.tables,
            vec![TableMatch {
                entity: "svc.db.shop.orders".into(),
                table_id: "shop.orders".into(),
                file: "registry/shop.yaml".into(),
                description: None,
                columns: [("amount".to_string(), "Total & tax".to_string())].into(),
            }]
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

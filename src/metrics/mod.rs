//! Business metrics beyond validation: choosing and rendering a metric's SQL for a grain, a dimension
//! and a date range ([`select`]); binding it against the published schema ([`check`], `metrics
//! check`); and importing definitions written in the older layout ([`import`]).

pub mod import;

use crate::diag::source::{Pos, SourceMap, Span};
use crate::diag::{Code, Diagnostic};
use crate::registry::registered::MetricDef;
use crate::spec::decode::Located;
use crate::spec::model::MetricSpec;
use crate::spec::template::{self, Params};
use crate::spec::validate::locate_in_value;
use duckdb::Connection;

#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    #[error("metric `{id}` has no grain `{grain}`; it is defined for: {declared}")]
    Grain {
        id: String,
        grain: String,
        declared: String,
    },
    #[error(
        "metric `{id}` has no SQL for dimension `{dimension}`: use {{{{ dimension }}}} in its sql, or \
         add a variant `by_{dimension}`{listed}"
    )]
    Dimension {
        id: String,
        dimension: String,
        listed: String,
    },
    #[error(
        "metric `{id}` has no dimension `{dimension}`; it declares: {declared} (add it to \
         `dimensions:` in its spec)"
    )]
    UndeclaredDimension {
        id: String,
        dimension: String,
        declared: String,
    },
    #[error("metric `{id}`: template error: {error}")]
    Template { id: String, error: String },
    #[error("`{0}` is not a date (use YYYY-MM-DD)")]
    Date(String),
}

/// How to compute a metric.
/// Why [`lookup`] found no single metric.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LookupError {
    #[error("no metric `{given}`{hint}")]
    Unknown { given: String, hint: String },
    #[error("`{given}` is the name of several metrics ({ids}); give the full id")]
    Ambiguous { given: String, ids: String },
}

/// The metric `given` names: its full id (`<category>/<name>`), or its name alone when exactly one
/// metric has it. An unknown name suggests the closest id.
pub fn lookup<'m>(metrics: &'m [MetricSpec], given: &str) -> Result<&'m MetricSpec, LookupError> {
    if let Some(m) = metrics.iter().find(|m| m.id == given) {
        return Ok(m);
    }
    let named: Vec<&MetricSpec> = metrics
        .iter()
        .filter(|m| !given.contains('/') && m.name.value == given)
        .collect();
    match named.as_slice() {
        [one] => Ok(one),
        [] => {
            let ids = metrics.iter().map(|m| m.id.as_str());
            let names = metrics.iter().map(|m| m.name.value.as_str());
            let hint = match crate::diag::suggest(given, ids.chain(names)) {
                Some(s) => format!("; did you mean `{s}`?"),
                None => "; `pipeline metrics list` shows them".into(),
            };
            Err(LookupError::Unknown {
                given: given.to_string(),
                hint,
            })
        }
        several => Err(LookupError::Ambiguous {
            given: given.to_string(),
            ids: several
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[derive(Clone, Debug, Default)]
pub struct Request {
    pub grain: Option<String>,
    pub dimension: Option<String>,
    pub date_from: Option<String>,
    pub date_to: Option<String>,
}

/// The grain of a metric that declares none.
pub const DEFAULT_GRAIN: &str = "month";

/// The grains a metric is computed at: its declared ones, else [`DEFAULT_GRAIN`].
pub fn grains(m: &MetricSpec) -> Vec<String> {
    declared_or_default(m.grain.iter().map(|g| g.value.as_str()))
}

fn declared_or_default<'a>(declared: impl Iterator<Item = &'a str>) -> Vec<String> {
    let out: Vec<String> = declared.map(String::from).collect();
    if out.is_empty() {
        vec![DEFAULT_GRAIN.into()]
    } else {
        out
    }
}

fn date(text: &Option<String>) -> Result<Option<String>, MetricError> {
    match text {
        None => Ok(None),
        Some(t) => chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
            .map(|d| Some(d.format("%Y-%m-%d").to_string()))
            .map_err(|_| MetricError::Date(t.clone())),
    }
}

/// What [`select`] needs of a metric, as plain values: from its spec ([`MetricParts::of_spec`]),
/// from what apply recorded ([`MetricParts::of_registered`], the API), or from the definition a
/// workspace pulled (`GET /api/metrics`'s JSON, [`MetricParts::of_json`]).
#[derive(Clone, Debug, Default)]
pub struct MetricParts {
    pub id: String,
    /// Declared grains (empty: `month`).
    pub grains: Vec<String>,
    pub sql: String,
    pub time_column: Option<String>,
    pub dimensions: Vec<String>,
    /// Variant name → SQL template.
    pub variants: Vec<(String, String)>,
}

impl MetricParts {
    pub fn of_spec(m: &MetricSpec) -> MetricParts {
        MetricParts {
            id: m.id.clone(),
            grains: m
                .grain
                .iter()
                .map(|g| g.value.as_str().to_string())
                .collect(),
            sql: m.sql.value.clone(),
            time_column: m.time_column.as_ref().map(|t| t.value.clone()),
            dimensions: m.dimensions.iter().map(|d| d.value.clone()).collect(),
            variants: m
                .variants
                .iter()
                .map(|(k, v)| (k.value.clone(), v.value.clone()))
                .collect(),
        }
    }

    pub fn of_registered(m: &crate::registry::registered::MetricDef) -> MetricParts {
        MetricParts {
            id: m.id.clone(),
            grains: m.grain.clone(),
            sql: m.sql.clone(),
            time_column: m.time_column.clone(),
            dimensions: m.dimensions.clone(),
            variants: m
                .variants
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// From a metric document as the API lists it (`id`, `sql`, `grain`, `time_column`,
    /// `dimensions`, `variants`); `None` without `id` and `sql`.
    pub fn of_json(v: &serde_json::Value) -> Option<MetricParts> {
        let strings = |k: &str| -> Vec<String> {
            match &v[k] {
                serde_json::Value::String(s) => vec![s.clone()],
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect(),
                _ => Vec::new(),
            }
        };
        Some(MetricParts {
            id: v["id"].as_str()?.to_string(),
            sql: v["sql"].as_str()?.to_string(),
            grains: strings("grain"),
            time_column: v["time_column"].as_str().map(String::from),
            dimensions: strings("dimensions"),
            variants: v["variants"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, x)| {
                            x.as_str()
                                .or_else(|| x["sql"].as_str())
                                .map(|s| (k.clone(), s.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// The SQL `m` runs for `req`: the main template, or the `by_<dimension>` variant for a dimension
/// the main template does not handle. A date range the template does not use itself filters the
/// result's `period` column.
pub fn select(m: &MetricSpec, req: &Request) -> Result<String, MetricError> {
    select_parts(&MetricParts::of_spec(m), req)
}

/// [`select`] over a metric's plain parts.
pub fn select_parts(m: &MetricParts, req: &Request) -> Result<String, MetricError> {
    let declared = if m.grains.is_empty() {
        vec!["month".to_string()]
    } else {
        m.grains.clone()
    };
    let grain = match &req.grain {
        Some(g) if declared.iter().any(|d| d == g) => g.clone(),
        Some(g) => {
            return Err(MetricError::Grain {
                id: m.id.clone(),
                grain: g.clone(),
                declared: declared.join(", "),
            })
        }
        None => declared[0].clone(),
    };
    let (from, to) = (date(&req.date_from)?, date(&req.date_to)?);
    let mut template = m.sql.as_str();
    if let Some(d) = &req.dimension {
        // The dimension becomes SQL: only the declared ones, which are column names.
        let declared_dims: Vec<&str> = m.dimensions.iter().map(|x| x.as_str()).collect();
        if !declared_dims.contains(&d.as_str()) || !crate::names::is_identifier(d) {
            return Err(MetricError::UndeclaredDimension {
                id: m.id.clone(),
                dimension: d.clone(),
                declared: if declared_dims.is_empty() {
                    "none".into()
                } else {
                    declared_dims.join(", ")
                },
            });
        }
        if !template::uses_dimension(template) {
            let variant = format!("by_{d}");
            template = m
                .variants
                .iter()
                .find(|(k, _)| *k == variant)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| MetricError::Dimension {
                    id: m.id.clone(),
                    dimension: d.clone(),
                    listed: if m.dimensions.is_empty() {
                        String::new()
                    } else {
                        format!(" (its dimensions: {})", m.dimensions.join(", "))
                    },
                })?;
        }
    }
    let params = Params {
        grain,
        time_column: m.time_column.clone(),
        dimension: req.dimension.clone(),
        date_from: from.clone(),
        date_to: to.clone(),
    };
    let sql = template::render(template, &params).map_err(|e| MetricError::Template {
        id: m.id.clone(),
        error: e.to_string(),
    })?;
    let sql = sql.trim().trim_end_matches(';').to_string();
    let uses_dates = template.contains("date_from")
        || template.contains("date_to")
        || template.contains("date_filter");
    if uses_dates || (from.is_none() && to.is_none()) {
        return Ok(sql);
    }
    let mut conds = Vec::new();
    if let Some(f) = from {
        conds.push(format!("period >= DATE '{f}'"));
    }
    if let Some(t) = to {
        conds.push(format!("period < DATE '{t}' + INTERVAL 1 DAY"));
    }
    Ok(format!(
        "SELECT * FROM ({sql}) AS metric WHERE {}",
        conds.join(" AND ")
    ))
}

/// A metric's SQL templates and what they are rendered with. Built from the specs
/// ([`Templates::of_spec`]: `metrics check`, plan's breaking-change check) or from what apply recorded
/// (a run's `check:` task), so every caller binds exactly the same SQL.
#[derive(Clone, Debug)]
pub struct Templates<'a> {
    pub id: &'a str,
    pub sql: &'a str,
    /// `(name, template)` of each variant.
    pub variants: Vec<(&'a str, &'a str)>,
    /// The grains it is rendered at: the declared ones, else `month` (see [`grains`]).
    pub grains: Vec<String>,
    pub time_column: Option<&'a str>,
    pub dimensions: Vec<&'a str>,
}

impl<'a> Templates<'a> {
    pub fn of_spec(m: &'a MetricSpec) -> Templates<'a> {
        Templates {
            id: &m.id,
            sql: &m.sql.value,
            variants: m
                .variants
                .iter()
                .map(|(k, v)| (k.value.as_str(), v.value.as_str()))
                .collect(),
            grains: grains(m),
            time_column: m.time_column.as_ref().map(|t| t.value.as_str()),
            dimensions: m.dimensions.iter().map(|d| d.value.as_str()).collect(),
        }
    }

    /// The same templates from what apply recorded (a run's `check:` task).
    pub fn of_registered(m: &'a MetricDef) -> Templates<'a> {
        Templates {
            id: &m.id,
            sql: &m.sql,
            variants: m
                .variants
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            grains: declared_or_default(m.grain.iter().map(String::as_str)),
            time_column: m.time_column.as_deref(),
            dimensions: m.dimensions.iter().map(String::as_str).collect(),
        }
    }
}

/// One SQL of a metric that does not bind (or does not render).
#[derive(Clone, Debug, PartialEq)]
pub struct Unbound {
    /// `None`: the main `sql`; else the variant's name.
    pub variant: Option<String>,
    pub grain: String,
    /// DuckDB's whole message, or the template error.
    pub error: String,
}

impl Unbound {
    /// `sql` or `` variant `by_country` ``.
    pub fn what(&self) -> String {
        match &self.variant {
            None => "sql".into(),
            Some(v) => format!("variant `{v}`"),
        }
    }

    /// One line: which SQL, at which grain, and DuckDB's first line.
    pub fn summary(&self) -> String {
        format!(
            "{} (grain {}) does not bind: {}",
            self.what(),
            self.grain,
            self.error.lines().next().unwrap_or_default()
        )
    }
}

/// Binds every SQL of a metric — the main template at each grain (and each declared dimension when
/// it uses `dimension`), and each variant — against the schema on `conn`, without running it. The
/// one binding check: `metrics check`, a run's `check:` tasks and plan's breaking-change check all
/// use it. At most one failure per SQL (the other grains fail the same way).
pub fn bind(conn: &Connection, t: &Templates) -> Vec<Unbound> {
    let mut out = Vec::new();
    let sqls = std::iter::once((None, t.sql)).chain(
        t.variants
            .iter()
            .map(|(name, sql)| (Some(name.to_string()), *sql)),
    );
    for (variant, sql) in sqls {
        let mut dimensions = vec![None];
        if template::uses_dimension(sql) {
            dimensions.extend(t.dimensions.iter().map(|d| Some(d.to_string())));
        }
        let cases = t
            .grains
            .iter()
            .flat_map(|g| dimensions.iter().map(move |d| (g.clone(), d.clone())));
        for (grain, dimension) in cases {
            let params = Params {
                grain: grain.clone(),
                time_column: t.time_column.map(String::from),
                dimension,
                ..Params::default()
            };
            let error = match template::render(sql, &params) {
                Ok(rendered) => match conn.prepare(rendered.trim().trim_end_matches(';')) {
                    Ok(_) => continue,
                    Err(e) => e.to_string(),
                },
                Err(e) => format!("template error: {e}"),
            };
            out.push(Unbound {
                variant: variant.clone(),
                grain,
                error,
            });
            break;
        }
    }
    out
}

/// [`bind`] for a metric of the specs, as diagnostics that point at the spec: at the unknown column
/// or table when DuckDB names one that appears in the template, else at the SQL.
pub fn check(conn: &Connection, files: &SourceMap, m: &MetricSpec) -> Vec<Diagnostic> {
    bind(conn, &Templates::of_spec(m))
        .into_iter()
        .map(|u| {
            let sql = match &u.variant {
                None => &m.sql,
                Some(name) => m
                    .variants
                    .iter()
                    .find(|(k, _)| &k.value == name)
                    .map_or(&m.sql, |(_, v)| v),
            };
            Diagnostic::error(
                Code::Bind,
                error_span(files, sql, &u.error),
                format!("metric `{}`: {}", m.id, u.summary()),
            )
            .with_hint(
                "check the column and table names against the published schema \
                 (`pipeline query \"describe <table>\"`)",
            )
        })
        .collect()
}

/// Where in the spec a binder error about `sql` points: the column or table DuckDB names, when it
/// appears in the SQL, else the start of the SQL.
pub fn error_span(files: &SourceMap, sql: &Located<String>, message: &str) -> Span {
    named_in_error(message)
        .and_then(|name| find_word(&sql.value, &name))
        .map(|(offset, len)| {
            let start = locate_in_value(files, sql, offset);
            Span {
                file: sql.span.file,
                start,
                end: Pos {
                    line: start.line,
                    col: start.col + len as u32,
                },
            }
        })
        .unwrap_or(sql.span)
}

/// The column or table DuckDB's message names: `Referenced column "x" not found`, `Table with name x
/// does not exist`.
fn named_in_error(message: &str) -> Option<String> {
    if let Some(rest) = message.split("Referenced column \"").nth(1) {
        return rest.split('"').next().map(String::from);
    }
    if let Some(rest) = message.split("Table with name ").nth(1) {
        return rest.split([' ', '!']).next().map(String::from);
    }
    if let Some(rest) = message.split("column named \"").nth(1) {
        return rest.split('"').next().map(String::from);
    }
    None
}

/// Byte offset and length of `word` in `text` as a whole identifier, ignoring case.
fn find_word(text: &str, word: &str) -> Option<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    let w = word.to_ascii_lowercase();
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(i) = lower[from..].find(&w) {
        let at = from + i;
        let before = lower[..at].chars().next_back();
        let after = lower[at + w.len()..].chars().next();
        if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
            return Some((at, w.len()));
        }
        from = at + w.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_checks_every_grain_dimension_and_variant_once_each() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE orders (ordered_at DATE, amount DOUBLE, country VARCHAR)")
            .unwrap();
        let t = Templates {
            id: "sales/revenue",
            sql: "select {{ period() }} as period, {% if dimension %}{{ dimension }},{% endif %} \
                  sum(amount) as value from orders group by all",
            variants: vec![
                (
                    "by_country",
                    "select country, sum(amount) as value from orders group by 1",
                ),
                (
                    "by_channel",
                    "select channel, sum(amount) as value from orders group by 1",
                ),
            ],
            grains: vec!["day".into(), "month".into()],
            time_column: Some("ordered_at"),
            dimensions: vec!["country", "region"],
        };
        let unbound = bind(&conn, &t);
        // The main SQL fails only for the dimension `region`; `by_channel` reads a missing column.
        assert_eq!(unbound.len(), 2, "{unbound:?}");
        assert_eq!(unbound[0].variant, None);
        assert_eq!(unbound[0].grain, "day");
        assert!(unbound[0].error.contains("region"), "{}", unbound[0].error);
        assert_eq!(unbound[1].variant.as_deref(), Some("by_channel"));
        assert!(
            unbound[1]
                .summary()
                .starts_with("variant `by_channel` (grain day) does not bind: "),
            "{}",
            unbound[1].summary()
        );
    }

    #[test]
    fn names_in_errors_are_found_as_whole_words() {
        assert_eq!(
            named_in_error("Binder Error: Referenced column \"amout\" not found in FROM clause!")
                .as_deref(),
            Some("amout")
        );
        assert_eq!(
            named_in_error("Catalog Error: Table with name ordrs does not exist!").as_deref(),
            Some("ordrs")
        );
        assert_eq!(
            find_word("select amount, amout from t", "amout"),
            Some((15, 5))
        );
        assert_eq!(find_word("select amounts from t", "amount"), None);
    }
}

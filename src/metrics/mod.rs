//! Business metrics beyond validation: choosing and rendering a metric's SQL for a grain, a dimension
//! and a date range ([`select`]); binding it against the published schema ([`check`], `metrics
//! check`); and importing definitions written in the older layout ([`import`]).

pub mod import;

use crate::diag::{Code, Diagnostic};
use crate::spec::model::MetricSpec;
use crate::spec::source::{Pos, SourceMap, Span};
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
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub grain: Option<String>,
    pub dimension: Option<String>,
    pub date_from: Option<String>,
    pub date_to: Option<String>,
}

/// The grains a metric is computed at: its declared ones, else `month`.
pub fn grains(m: &MetricSpec) -> Vec<String> {
    if m.grain.is_empty() {
        vec!["month".into()]
    } else {
        m.grain
            .iter()
            .map(|g| g.value.as_str().to_string())
            .collect()
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

/// The SQL `m` runs for `req`: the main template, or the `by_<dimension>` variant for a dimension
/// the main template does not handle. A date range the template does not use itself filters the
/// result's `period` column.
pub fn select(m: &MetricSpec, req: &Request) -> Result<String, MetricError> {
    let declared = grains(m);
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
    let mut template = m.sql.value.as_str();
    if let Some(d) = &req.dimension {
        // The dimension becomes SQL: only the declared ones, which are column names.
        let declared_dims: Vec<&str> = m.dimensions.iter().map(|x| x.value.as_str()).collect();
        if !declared_dims.contains(&d.as_str()) || !crate::spec::names::is_identifier(d) {
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
        if !template.contains("dimension") {
            let variant = format!("by_{d}");
            template = m
                .variants
                .iter()
                .find(|(k, _)| k.value == variant)
                .map(|(_, v)| v.value.as_str())
                .ok_or_else(|| MetricError::Dimension {
                    id: m.id.clone(),
                    dimension: d.clone(),
                    listed: if m.dimensions.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (its dimensions: {})",
                            m.dimensions
                                .iter()
                                .map(|x| x.value.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                })?;
        }
    }
    let params = Params {
        grain,
        time_column: m.time_column.as_ref().map(|t| t.value.clone()),
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

/// Binds every SQL of `m` (the main template at each grain, each variant) against the schema on
/// `conn` without running it. Problems point at the spec: at the unknown column or table when DuckDB
/// names one that appears in the template, else at the SQL.
pub fn check(conn: &Connection, files: &SourceMap, m: &MetricSpec) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let sqls = std::iter::once(("sql".to_string(), &m.sql)).chain(
        m.variants
            .iter()
            .map(|(k, v)| (format!("variant `{}`", k.value), v)),
    );
    for (what, sql) in sqls {
        // Every grain, and each declared dimension when the template uses `dimension`.
        let mut dimensions = vec![None];
        if sql.value.contains("dimension") {
            dimensions.extend(m.dimensions.iter().map(|d| Some(d.value.clone())));
        }
        let cases = grains(m)
            .into_iter()
            .flat_map(|g| dimensions.iter().map(move |d| (g.clone(), d.clone())));
        for (grain, dimension) in cases {
            let params = Params {
                grain: grain.clone(),
                time_column: m.time_column.as_ref().map(|t| t.value.clone()),
                dimension,
                ..Params::default()
            };
            let Ok(rendered) = template::render(&sql.value, &params) else {
                continue; // `validate` reports template errors
            };
            let Err(e) = conn.prepare(rendered.trim().trim_end_matches(';')) else {
                continue;
            };
            let message = e.to_string();
            let first = message.lines().next().unwrap_or_default().to_string();
            let span = named_in_error(&message)
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
                .unwrap_or(sql.span);
            out.push(
                Diagnostic::error(
                    Code::Bind,
                    span,
                    format!(
                        "metric `{}`: {what} (grain {grain}) does not bind: {first}",
                        m.id
                    ),
                )
                .with_hint(
                    "check the column and table names against the published schema \
                     (`pipeline query \"describe <table>\"`)",
                ),
            );
            break; // one report per SQL: the other grains fail the same way
        }
    }
    out
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

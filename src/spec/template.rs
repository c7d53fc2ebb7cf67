//! Metric SQL templates (minijinja): the variables and helpers a metric's `sql` and `variants` may
//! use, rendered the same way by `validate` (every declared grain), `metrics check` and `metrics run`.
//!
//! Variables: `grain` (day, week, month, quarter, year), `time_column`, `dimension` (the column asked
//! for with `--dim`, else none), `date_from` and `date_to` (ISO dates, else none). Helpers:
//! `period()` → `date_trunc('<grain>', <time_column>)` (or `period('col')`), and `date_filter()` →
//! `<time_column> >= DATE '<from>' AND <time_column> < DATE '<to>' + 1 day`, or `true` without a
//! range (also `date_filter('col')`). An undefined variable is an error, never empty text.

use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};

/// The names a template may use, for hints.
pub const NAMES: &[&str] = &[
    "grain",
    "time_column",
    "dimension",
    "date_from",
    "date_to",
    "period()",
    "date_filter()",
];

/// What a template is rendered for.
#[derive(Clone, Debug, Default)]
pub struct Params {
    pub grain: String,
    pub time_column: Option<String>,
    pub dimension: Option<String>,
    /// `YYYY-MM-DD`, checked by the caller.
    pub date_from: Option<String>,
    /// `YYYY-MM-DD`, inclusive.
    pub date_to: Option<String>,
}

fn column_arg(arg: Option<String>, time_column: &Option<String>) -> Result<String, Error> {
    let col = arg.or_else(|| time_column.clone()).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            "no column: give one, e.g. period('ordered_at'), or set the metric's time_column",
        )
    })?;
    // The column goes into SQL: only plain or dotted identifiers.
    let ok = !col.is_empty() && col.split('.').all(crate::spec::names::is_identifier);
    if !ok {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("`{col}` is not a plain column name"),
        ));
    }
    Ok(col)
}

pub fn render(template: &str, p: &Params) -> Result<String, Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let (grain, tc) = (p.grain.clone(), p.time_column.clone());
    env.add_function(
        "period",
        move |col: Option<String>| -> Result<String, Error> {
            Ok(format!("date_trunc('{grain}', {})", column_arg(col, &tc)?))
        },
    );
    let (from, to, tc) = (
        p.date_from.clone(),
        p.date_to.clone(),
        p.time_column.clone(),
    );
    env.add_function(
        "date_filter",
        move |col: Option<String>| -> Result<String, Error> {
            let col = column_arg(col, &tc)?;
            let mut parts = Vec::new();
            if let Some(f) = &from {
                parts.push(format!("{col} >= DATE '{f}'"));
            }
            if let Some(t) = &to {
                parts.push(format!("{col} < DATE '{t}' + INTERVAL 1 DAY"));
            }
            Ok(if parts.is_empty() {
                "true".into()
            } else {
                format!("({})", parts.join(" AND "))
            })
        },
    );
    let opt = |v: &Option<String>| v.clone().map_or(Value::from(()), Value::from);
    env.render_str(
        template,
        minijinja::context! {
            grain => p.grain,
            time_column => opt(&p.time_column),
            dimension => opt(&p.dimension),
            date_from => opt(&p.date_from),
            date_to => opt(&p.date_to),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_and_helpers() {
        let p = Params {
            grain: "month".into(),
            time_column: Some("ordered_at".into()),
            date_from: Some("2025-01-01".into()),
            date_to: Some("2025-03-31".into()),
            ..Params::default()
        };
        let sql = render(
            "select {{ period() }}, 1 from t where {{ date_filter() }}",
            &p,
        )
        .unwrap();
        assert_eq!(
            sql,
            "select date_trunc('month', ordered_at), 1 from t where (ordered_at >= DATE '2025-01-01' \
             AND ordered_at < DATE '2025-03-31' + INTERVAL 1 DAY)"
        );
        let none = Params {
            grain: "day".into(),
            ..Params::default()
        };
        assert_eq!(render("{{ date_filter('d') }}", &none).unwrap(), "true");
        assert!(render("{{ period() }}", &none).is_err(), "no time column");
        assert!(
            render("{{ nope }}", &none).is_err(),
            "undefined is an error"
        );
        assert!(render("{{ period('x; drop') }}", &p).is_err());
    }
}

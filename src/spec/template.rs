//! Metric SQL templates (minijinja): the variables and helpers a metric's `sql` and `variants` may
//! use, rendered by [`render`] — the one renderer behind `validate` (every declared grain), `metrics
//! check`, `metrics run`, the API and a run's check task.
//!
//! Variables: `grain` (day, week, month, quarter, year), `time_column`, `dimension` (the column asked
//! for with `--dim`, else none), `date_from` and `date_to` (ISO dates, else none). Helpers:
//! `period()` → `date_trunc('<grain>', <time_column>)` (or `period('col')`), and `date_filter()` →
//! `<time_column> >= DATE '<from>' AND <time_column> < DATE '<to>' + 1 day`, or `true` without a
//! range (also `date_filter('col')`). An undefined variable is an error, never empty text.
//!
//! Templates come from spec authors through git and are rendered unattended (by the daemon, too), so
//! a render is bounded. A template may use the language that fills SQL in: output, `{{ expressions }}`
//! and `{% if %}`/`{% elif %}`/`{% else %}`, with comparisons, `and`/`or`/`not`, `~`, `+`, `-`, tests
//! and a few string filters. Loops, `set`, `with`, macros, imports and the `*`/`**` operators are
//! refused before rendering: with them a few bytes of template build values that double at every
//! step (`{% set x = x ~ x %}`, nested loops binding the previous loop's value, `"x" * 10**8`) — no
//! instruction count stops that before memory runs out. What remains renders in time and space
//! linear in the template; the engine's fuel ([`FUEL`]) and an output cap ([`MAX_OUTPUT`]) hold
//! regardless. The AST check uses minijinja's `unstable_machinery` parser (the very parser the render
//! uses, so they cannot disagree); a minijinja upgrade that changes it fails to compile, not silently.

use minijinja::machinery::{ast, WhitespaceConfig};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};
use std::fmt;

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

/// Filters a template may apply: none of them makes text longer than its input.
pub const FILTERS: &[&str] = &["lower", "upper", "trim", "default", "d"];

/// Tests a template may use (`{% if date_from is none %}`).
pub const TESTS: &[&str] = &["defined", "undefined", "none", "string", "number"];

/// Instructions one render may execute. The allowed language runs about one instruction per few
/// bytes of template, so a 1 MiB metric file stays well within it.
pub const FUEL: u64 = 1_000_000;

/// Largest SQL a render may produce (1 MiB): far beyond any real query, small enough to hold.
pub const MAX_OUTPUT: usize = 1 << 20;

/// Most tokens one `{{ … }}` or `{% … %}` may hold. Expressions nest at most this deep, so the
/// recursive stages after the parser (code generation, dropping the tree) stay shallow; a long chain
/// (`a ~ a ~ … ~ a` thousands of times) would otherwise overflow the stack. Real tags hold a few
/// dozen.
const MAX_TAG_TOKENS: usize = 256;

/// Longest value a variable may carry (column names, dates): a column name is at most 64 bytes.
const MAX_PARAM: usize = 256;

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

/// A template that does not render: what is wrong, and where in the template when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
    /// Byte offset in the template text.
    pub offset: Option<usize>,
    /// Bytes from `offset` that are at fault (the undefined name, say); 0 when only a point is known.
    pub len: usize,
    /// 1-based line in the template text.
    pub line: Option<usize>,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match self.line {
            Some(line) => write!(f, " (line {line} of the template)"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for TemplateError {}

impl TemplateError {
    fn at(message: String, template: &str, offset: Option<usize>) -> TemplateError {
        let line = offset.map(|o| {
            template
                .get(..o.min(template.len()))
                .map_or(1, |s| s.matches('\n').count() + 1)
        });
        TemplateError {
            message,
            offset,
            len: 0,
            line,
        }
    }

    fn from_engine(e: &Error, template: &str) -> TemplateError {
        // An undefined name: say which, and mark all of it (minijinja's own text is only
        // "undefined value").
        let undefined = (e.kind() == ErrorKind::UndefinedError)
            .then(|| e.range())
            .flatten()
            .and_then(|r| Some((r.start, template.get(r)?.trim())))
            .filter(|(_, name)| {
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            });
        if let Some((start, name)) = undefined {
            let mut err =
                TemplateError::at(format!("`{name}` is not defined"), template, Some(start));
            err.len = name.len();
            return err;
        }
        let message = match e.detail() {
            Some(detail) => format!("{}: {detail}", e.kind()),
            None => e.kind().to_string(),
        };
        let offset = e.range().map(|r| r.start).or_else(|| {
            // Only a line: its first byte.
            let line = e.line()?;
            let mut offset = 0;
            for _ in 1..line {
                offset += template.get(offset..)?.find('\n')? + 1;
            }
            Some(offset)
        });
        TemplateError::at(message, template, offset)
    }
}

fn column_arg(arg: Option<String>, time_column: &Option<String>) -> Result<String, Error> {
    let col = arg.or_else(|| time_column.clone()).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            "no column: give one, e.g. period('ordered_at'), or set the metric's time_column",
        )
    })?;
    // The column goes into SQL: only plain or dotted identifiers.
    let ok = !col.is_empty() && col.split('.').all(crate::names::is_identifier);
    if !ok {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("`{col}` is not a plain column name"),
        ));
    }
    Ok(col)
}

/// Whether a metric template handles a dimension itself (by using the `dimension` variable); if
/// not, a dimension needs a `by_<dimension>` variant. The one rule for validate, check and run.
pub fn uses_dimension(template: &str) -> bool {
    template.contains("dimension")
}

/// Renders a metric template within the bounds described above.
pub fn render(template: &str, p: &Params) -> Result<String, TemplateError> {
    render_within(template, p, FUEL, MAX_OUTPUT)
}

fn render_within(
    template: &str,
    p: &Params,
    fuel: u64,
    max_output: usize,
) -> Result<String, TemplateError> {
    let params = [
        ("time_column", &p.time_column),
        ("dimension", &p.dimension),
        ("date_from", &p.date_from),
        ("date_to", &p.date_to),
    ];
    for (name, value) in params {
        if value.as_ref().is_some_and(|v| v.len() > MAX_PARAM) {
            return Err(TemplateError::at(
                format!(
                    "`{name}` is longer than {MAX_PARAM} bytes; it must be a column name or a date"
                ),
                template,
                None,
            ));
        }
    }
    check_language(template)?;
    let mut env = Environment::empty();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(fuel));
    env.add_filter("lower", minijinja::filters::lower);
    env.add_filter("upper", minijinja::filters::upper);
    env.add_filter("trim", minijinja::filters::trim);
    env.add_filter("default", minijinja::filters::default);
    env.add_filter("d", minijinja::filters::default);
    env.add_test("defined", minijinja::tests::is_defined);
    env.add_test("undefined", minijinja::tests::is_undefined);
    env.add_test("none", minijinja::tests::is_none);
    env.add_test("string", minijinja::tests::is_string);
    env.add_test("number", minijinja::tests::is_number);
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
    let engine_error = |e: Error| TemplateError::from_engine(&e, template);
    let compiled = env.template_from_str(template).map_err(engine_error)?;
    let mut out = CappedOutput {
        text: Vec::new(),
        cap: max_output,
        overflowed: false,
    };
    let rendered = compiled.render_captured_to(
        minijinja::context! {
            grain => p.grain,
            time_column => opt(&p.time_column),
            dimension => opt(&p.dimension),
            date_from => opt(&p.date_from),
            date_to => opt(&p.date_to),
        },
        &mut out,
    );
    match rendered {
        Ok(_) => String::from_utf8(out.text).map_err(|_| {
            TemplateError::at("the template rendered invalid UTF-8".into(), template, None)
        }),
        Err(_) if out.overflowed => Err(TemplateError::at(
            format!(
                "the template renders more than {} MiB of SQL; it is too large to run",
                max_output >> 20
            ),
            template,
            None,
        )),
        Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(TemplateError::at(
            format!(
                "the template is too expensive to render: it took more than {fuel} steps; \
                 a metric template only fills values into SQL"
            ),
            template,
            None,
        )),
        Err(e) => Err(engine_error(e)),
    }
}

/// A sink that refuses to grow past `cap` bytes, remembering that it did.
struct CappedOutput {
    text: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > self.cap {
            self.overflowed = true;
            return Err(std::io::Error::other("template output too large"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Refuses what a metric template may not use (see the module documentation), at its place.
fn check_language(template: &str) -> Result<(), TemplateError> {
    check_tag_sizes(template)?;
    let parsed = minijinja::machinery::parse(
        template,
        "<metric>",
        Default::default(),
        WhitespaceConfig::default(),
    )
    .map_err(|e| TemplateError::from_engine(&e, template))?;
    let refuse = |what: String, span: minijinja::machinery::Span| {
        Err(TemplateError::at(
            format!(
                "{what} cannot be used in a metric template: templates fill values into SQL \
                 (output, {{{{ … }}}}, {{% if %}}); loops and assignments could make a render \
                 run or grow without bound"
            ),
            template,
            Some(span.start_offset as usize),
        ))
    };
    check_stmt(&parsed, &refuse)
}

/// Counts the tokens of every tag with minijinja's own lexer (flat, never recursive) before anything
/// builds a tree from them.
fn check_tag_sizes(template: &str) -> Result<(), TemplateError> {
    use minijinja::machinery::{tokenize, Token};
    let mut in_tag = 0usize;
    for token in tokenize(
        template,
        false,
        Default::default(),
        WhitespaceConfig::default(),
    ) {
        let (token, span) = token.map_err(|e| TemplateError::from_engine(&e, template))?;
        match token {
            Token::VariableStart | Token::BlockStart => in_tag = 1,
            Token::VariableEnd | Token::BlockEnd | Token::TemplateData(_) => in_tag = 0,
            _ if in_tag > 0 => {
                in_tag += 1;
                if in_tag > MAX_TAG_TOKENS {
                    return Err(TemplateError::at(
                        format!(
                            "this tag holds more than {MAX_TAG_TOKENS} tokens; a metric template's \
                             {{{{ … }}}} and {{% … %}} fill in a value, split longer logic"
                        ),
                        template,
                        Some(span.start_offset as usize),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

type Refuse<'r> = dyn Fn(String, minijinja::machinery::Span) -> Result<(), TemplateError> + 'r;

fn check_stmts(stmts: &[ast::Stmt<'_>], refuse: &Refuse) -> Result<(), TemplateError> {
    stmts.iter().try_for_each(|s| check_stmt(s, refuse))
}

fn check_stmt(stmt: &ast::Stmt<'_>, refuse: &Refuse) -> Result<(), TemplateError> {
    use ast::Stmt;
    match stmt {
        Stmt::Template(t) => check_stmts(&t.children, refuse),
        Stmt::EmitRaw(_) => Ok(()),
        Stmt::EmitExpr(e) => check_expr(&e.expr, refuse),
        Stmt::IfCond(c) => {
            check_expr(&c.expr, refuse)?;
            check_stmts(&c.true_body, refuse)?;
            check_stmts(&c.false_body, refuse)
        }
        Stmt::ForLoop(s) => refuse("`{% for %}`".into(), s.span()),
        Stmt::WithBlock(s) => refuse("`{% with %}`".into(), s.span()),
        Stmt::Set(s) => refuse("`{% set %}`".into(), s.span()),
        Stmt::SetBlock(s) => refuse("`{% set %}`".into(), s.span()),
        Stmt::AutoEscape(s) => refuse("`{% autoescape %}`".into(), s.span()),
        Stmt::FilterBlock(s) => refuse("`{% filter %}`".into(), s.span()),
        Stmt::Block(s) => refuse("`{% block %}`".into(), s.span()),
        Stmt::Import(s) => refuse("`{% import %}`".into(), s.span()),
        Stmt::FromImport(s) => refuse("`{% from … import %}`".into(), s.span()),
        Stmt::Extends(s) => refuse("`{% extends %}`".into(), s.span()),
        Stmt::Include(s) => refuse("`{% include %}`".into(), s.span()),
        Stmt::Macro(s) => refuse("`{% macro %}`".into(), s.span()),
        Stmt::CallBlock(s) => refuse("`{% call %}`".into(), s.span()),
        Stmt::Do(s) => refuse("`{% do %}`".into(), s.span()),
    }
}

fn check_args(args: &[ast::CallArg<'_>], refuse: &Refuse) -> Result<(), TemplateError> {
    for a in args {
        match a {
            ast::CallArg::Pos(e) | ast::CallArg::Kwarg(_, e) => check_expr(e, refuse)?,
            ast::CallArg::PosSplat(e) | ast::CallArg::KwargSplat(e) => {
                return refuse("argument splatting (`*args`)".into(), e.span())
            }
        }
    }
    Ok(())
}

fn check_expr(expr: &ast::Expr<'_>, refuse: &Refuse) -> Result<(), TemplateError> {
    use ast::Expr;
    match expr {
        Expr::Var(_) | Expr::Const(_) => Ok(()),
        Expr::Slice(s) => {
            check_expr(&s.expr, refuse)?;
            for part in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                check_expr(part, refuse)?;
            }
            Ok(())
        }
        Expr::UnaryOp(u) => check_expr(&u.expr, refuse),
        Expr::BinOp(b) => match b.op {
            ast::BinOpKind::Mul => refuse("the `*` operator".into(), b.span()),
            ast::BinOpKind::Pow => refuse("the `**` operator".into(), b.span()),
            _ => {
                check_expr(&b.left, refuse)?;
                check_expr(&b.right, refuse)
            }
        },
        Expr::Compare(c) => {
            check_expr(&c.expr, refuse)?;
            c.ops.iter().try_for_each(|op| check_expr(&op.expr, refuse))
        }
        Expr::IfExpr(i) => {
            check_expr(&i.test_expr, refuse)?;
            check_expr(&i.true_expr, refuse)?;
            i.false_expr
                .as_ref()
                .map_or(Ok(()), |e| check_expr(e, refuse))
        }
        Expr::Filter(f) => {
            if !FILTERS.contains(&f.name) {
                return refuse(format!("the filter `{}`", f.name), f.span());
            }
            if let Some(e) = &f.expr {
                check_expr(e, refuse)?;
            }
            check_args(&f.args, refuse)
        }
        Expr::Test(t) => {
            if !TESTS.contains(&t.name) {
                return refuse(format!("the test `{}`", t.name), t.span());
            }
            check_expr(&t.expr, refuse)?;
            check_args(&t.args, refuse)
        }
        Expr::GetAttr(g) => check_expr(&g.expr, refuse),
        Expr::GetItem(g) => {
            check_expr(&g.expr, refuse)?;
            check_expr(&g.subscript_expr, refuse)
        }
        Expr::Call(c) => match &c.expr {
            Expr::Var(v) if v.id == "period" || v.id == "date_filter" => {
                check_args(&c.args, refuse)
            }
            other => refuse(
                format!(
                    "calling `{}`",
                    match other {
                        Expr::Var(v) => v.id.to_string(),
                        _ => "a computed value".into(),
                    }
                ),
                c.span(),
            ),
        },
        Expr::List(l) => l.items.iter().try_for_each(|e| check_expr(e, refuse)),
        Expr::Map(m) => m
            .keys
            .iter()
            .chain(m.values.iter())
            .try_for_each(|e| check_expr(e, refuse)),
    }
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

    fn month() -> Params {
        Params {
            grain: "month".into(),
            time_column: Some("ordered_at".into()),
            ..Params::default()
        }
    }

    #[test]
    fn the_documented_language_renders() {
        let t = "select {{ period() }} as period,{% if dimension %} {{ dimension }},{% endif %} \
                 count(*) as value from t where {{ date_filter() }}\
                 {% if date_from is none and grain in ['month', 'year'] %} and 1 = 1{% endif %}\
                 {{ ' -- ' ~ grain | upper }}";
        assert_eq!(
            render(t, &month()).unwrap(),
            "select date_trunc('month', ordered_at) as period, count(*) as value from t where true \
             and 1 = 1 -- MONTH"
        );
    }

    #[test]
    fn loops_assignments_and_repetition_are_refused_where_they_are() {
        let nested = "select 1 as value\n{% for a in range(100000) %}{% for b in range(100000) %}\
                      {% endfor %}{% endfor %}";
        let e = render(nested, &month()).unwrap_err();
        assert!(e.message.starts_with("`{% for %}` cannot be used"), "{e}");
        // At the `for` keyword, on the second line.
        assert_eq!((e.line, e.offset), (Some(2), Some(21)));
        for (template, what) in [
            (
                "{% set x = 'ab' %}{% set x = x ~ x %}{{ x }}",
                "`{% set %}`",
            ),
            ("{{ 'x' * 100000000 }}", "the `*` operator"),
            ("{{ 10 ** 9 }}", "the `**` operator"),
            ("{{ range(10) }}", "calling `range`"),
            ("{{ 'a' | replace('a', 'bb') }}", "the filter `replace`"),
            (
                "{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}",
                "`{% macro %}`",
            ),
            ("{% with x = 1 %}{% endwith %}", "`{% with %}`"),
        ] {
            let e = render(template, &month()).unwrap_err();
            assert!(e.message.starts_with(what), "{template}: {e}");
        }
    }

    #[test]
    fn long_expressions_are_refused_before_they_are_parsed() {
        // Parsed, this would be a tree 100,000 levels deep: the stack would not survive it.
        let chain = format!("{{{{ {} }}}}", vec!["grain"; 100_000].join(" ~ "));
        let e = render(&chain, &month()).unwrap_err();
        assert!(e.message.contains("more than 256 tokens"), "{e}");
        let negations = format!("{{% if {}true %}}x{{% endif %}}", "not ".repeat(100_000));
        assert!(render(&negations, &month()).is_err());
    }

    #[test]
    fn output_and_work_are_capped() {
        let wide = "{{ grain ~ grain ~ grain ~ grain }}".repeat(100);
        let e = render_within(&wide, &month(), FUEL, 1000).unwrap_err();
        assert!(e.message.contains("too large"), "{e}");
        assert!(render_within(&wide, &month(), FUEL, 100_000).is_ok());
        let e = render_within(&wide, &month(), 50, MAX_OUTPUT).unwrap_err();
        assert!(e.message.contains("too expensive"), "{e}");
        let long_column = Params {
            time_column: Some("c".repeat(MAX_PARAM + 1)),
            ..month()
        };
        assert!(render("{{ time_column }}", &long_column).is_err());
    }
}

//! Checks across spec files: uniqueness, references, query-mode rules, SQL, templates and cycles.
//!
//! Runs after [`load`](super::load) on the whole instance and needs no data: SQL is parsed by DuckDB
//! (see [`sql`](super::sql)) but never run. Produces diagnostics and the dependency facts later stages
//! reuse (which tables each transform and metric reads).

use super::decode::Located;
use super::load::Specs;
use super::model::{MetricSpec, QueryMode, SourceSpec, SourceType, SyncMode, TableSpec};
use super::sql::{introspection, ParserUnavailable, Reads, SqlParser, PURE_TABLE_FUNCTIONS};
use crate::diag::source::{Pos, SourceMap, Span};
use crate::diag::{suggest, Code, Diagnostic, Diagnostics};
use crate::names;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What validation learnt beyond diagnostics.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Transform name → the tables and transforms its SQL reads (view names, lowercase).
    pub transform_inputs: BTreeMap<String, BTreeSet<String>>,
    /// Metric id → the tables and transforms it reads.
    pub metric_inputs: BTreeMap<String, BTreeSet<String>>,
    /// Transform name → why its inputs cannot be determined with certainty (only transforms with
    /// such reasons). Such a transform is served to admins only.
    pub transform_uncertain: BTreeMap<String, Vec<String>>,
    /// Metric id → the same, for metrics.
    pub metric_uncertain: BTreeMap<String, Vec<String>>,
}

/// Where a qualified table name points.
enum Qualifier {
    /// The analytics database: no qualifier, `main`, `analytics` or `analytics.main`.
    Analytics,
    /// Another catalog (lower-cased): a source's extract when a source has that name.
    Source(String),
}

/// Classifies `catalog.schema` as DuckDB resolves it where transforms run (analytics, with each
/// source's extract attached under the source's name): a two-part `x.t` is schema `x` of the default
/// catalog, else catalog `x`.
fn analytics_or_source(catalog: &str, schema: &str) -> Qualifier {
    let (c, s) = (catalog.to_lowercase(), schema.to_lowercase());
    match (c.as_str(), s.as_str()) {
        ("", "" | "main" | "analytics") | ("analytics", "" | "main") => Qualifier::Analytics,
        ("", other) | (other, "main" | "") => Qualifier::Source(other.to_string()),
        // `catalog.schema.table` in some other schema: nothing pipeline publishes.
        _ => Qualifier::Source(format!("{c}.{s}")),
    }
}

/// Variables every metric template can use (documented in docs/specs.md).
pub const METRIC_TEMPLATE_VARS: &[&str] = super::template::NAMES;

/// `parser`: DuckDB for SQL checks, opened by the caller (possibly while the specs were loading).
pub fn validate(
    specs: &Specs,
    parser: &Result<SqlParser, ParserUnavailable>,
    diags: &mut Diagnostics,
) -> Analysis {
    let mut v = Validator {
        specs,
        diags,
        view_names: HashMap::new(),
        analysis: Analysis::default(),
        rendered: HashMap::new(),
    };
    v.sources();
    v.tables();
    v.table_docs();
    v.transform_names();
    match parser {
        Ok(parser) => {
            v.render_templates();
            match parser.prefetch(v.sql_texts()) {
                Ok(()) => {
                    v.transform_sql(parser);
                    v.metrics(parser);
                }
                Err(e) => v
                    .diags
                    .push(Diagnostic::error(Code::Sql, None, e.to_string())),
            }
        }
        Err(e) => v
            .diags
            .push(Diagnostic::error(Code::Sql, None, e.to_string())),
    }
    v.cycles();
    v.analysis
}

/// The grains a metric's template is rendered for: its declared ones, else `month`.
fn metric_grains(m: &MetricSpec) -> Vec<&'static str> {
    if m.grain.is_empty() {
        vec!["month"]
    } else {
        m.grain.iter().map(|g| g.value.as_str()).collect()
    }
}

struct Validator<'a> {
    specs: &'a Specs,
    diags: &'a mut Diagnostics,
    /// Lowercase view name → (kind, where defined). DuckDB identifiers are case-insensitive.
    view_names: HashMap<String, (&'static str, Span)>,
    analysis: Analysis,
    /// Metric templates rendered ahead by [`Validator::sql_texts`], by (template, grain,
    /// dimension), so that the checks do not render each case a second time.
    rendered: HashMap<RenderCase, Result<String, super::template::TemplateError>>,
}

/// One render of a metric template: the template's address (each is its own spec value), the grain
/// and the dimension.
type RenderCase = (usize, &'static str, Option<String>);

fn render_case(
    template: &Located<String>,
    grain: &'static str,
    dimension: Option<&str>,
) -> RenderCase {
    (
        template as *const Located<String> as usize,
        grain,
        dimension.map(String::from),
    )
}

/// Reports the second and later occurrences of each key.
fn duplicates<'x>(
    diags: &mut Diagnostics,
    items: impl IntoIterator<Item = (String, &'x Located<String>)>,
    what: &str,
) {
    let mut seen: HashMap<String, Span> = HashMap::new();
    for (key, loc) in items {
        if let Some(first) = seen.get(&key) {
            diags.push(
                Diagnostic::error(
                    Code::Duplicate,
                    loc.span,
                    format!("duplicate {what} `{}`", loc.value),
                )
                .with_related(*first, "first defined here")
                .with_hint(format!(
                    "{what}s must be unique across all spec files; rename or remove one"
                )),
            );
        } else {
            seen.insert(key, loc.span);
        }
    }
}

impl Validator<'_> {
    fn files(&self) -> &SourceMap {
        &self.specs.files
    }

    /// `descriptions:` entries name registered tables, at most one entry per table.
    fn table_docs(&mut self) {
        let specs = self.specs;
        duplicates(
            self.diags,
            specs
                .table_docs
                .iter()
                .map(|d| (d.table.value.clone(), &d.table)),
            "description of table",
        );
        let ids: Vec<&str> = specs.tables.iter().map(|t| t.id.as_str()).collect();
        for d in &specs.table_docs {
            // A registry file that did not load may declare it; its own error is the one to fix.
            if ids.contains(&d.table.as_str()) || specs.unresolved.any_view {
                continue;
            }
            self.diags.push(
                Diagnostic::error(
                    Code::UnknownReference,
                    d.table.span,
                    format!("`descriptions` names table `{}`, which is not registered", d.table.value),
                )
                .with_hint(match suggest(&d.table.value, ids.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`? (descriptions name tables by id)"),
                    None => "descriptions name tables by id, as registered under `tables:`; remove the entry or register the table".to_string(),
                }),
            );
        }
    }

    fn sources(&mut self) {
        let specs = self.specs;
        duplicates(
            self.diags,
            specs
                .sources
                .iter()
                .map(|s| (s.name.value.clone(), &s.name)),
            "source name",
        );
        for s in &specs.sources {
            for (key, node) in env_keys(&s.connection) {
                self.env_set(key, node);
            }
            if matches!(
                s.source_type.value,
                SourceType::Csv | SourceType::Parquet | SourceType::Duckdb
            ) {
                if let Some(path) = s.connection_str("path") {
                    self.local_path(&path);
                }
            }
            if s.source_type.value == SourceType::Bigquery {
                self.bigquery_credentials(s);
            }
        }
        if let Some(inst) = &specs.instance {
            // An allowlist, not a requirement: an extract naming an unset one is skipped at rebuild.
            for env in &inst.remote_token_envs {
                if names::is_env_var(&env.value) && std::env::var_os(&env.value).is_none() {
                    self.diags.push(
                        Diagnostic::warning(
                            Code::Env,
                            env.span,
                            format!("environment variable `{}` is not set", env.value),
                        )
                        .with_hint(
                            "remote tables of extracts that use it are skipped at rebuild until it is set",
                        ),
                    );
                }
            }
        }
    }

    /// A BigQuery source names its service-account key one way: a file or an environment variable.
    fn bigquery_credentials(&mut self, s: &SourceSpec) {
        let file = s.connection_str("credentials_file");
        let env = s.connection.get("credentials_env");
        match (&file, env) {
            (Some(_), Some(env)) => self.diags.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    env.span,
                    format!(
                        "source `{}` sets both credentials_file and credentials_env",
                        s.name.value
                    ),
                )
                .with_hint("keep one: the key file's path, or the variable holding its JSON"),
            ),
            (None, None) => self.diags.push(
                Diagnostic::error(
                    Code::MissingKey,
                    s.connection.span,
                    format!(
                        "bigquery source `{}` has no service-account key",
                        s.name.value
                    ),
                )
                .with_hint(
                    "add `credentials_file: <path to the key's JSON>` or `credentials_env: \
                     <VARIABLE holding the JSON>` under connection",
                ),
            ),
            (Some(path), None) => self.local_path(path),
            (None, Some(_)) => {}
        }
    }

    fn env_set(&mut self, var: &str, span: Span) {
        if names::is_env_var(var) && std::env::var_os(var).is_none() {
            self.diags.push(
                Diagnostic::warning(
                    Code::Env,
                    span,
                    format!("environment variable `{var}` is not set"),
                )
                .with_hint(format!(
                    "export {var} before `pipeline apply` or `run`; they fail without it"
                )),
            );
        }
    }

    fn local_path(&mut self, path: &Located<String>) {
        let glob_at = path.value.find(['*', '?', '[']);
        let fixed = match glob_at {
            Some(i) => &path.value[..path.value[..i].rfind('/').map_or(0, |j| j + 1)],
            None => path.value.as_str(),
        };
        let full = self
            .specs
            .root
            .join(if fixed.is_empty() { "." } else { fixed });
        if !full.exists() {
            self.diags.push(
                Diagnostic::warning(
                    Code::Path,
                    path.span,
                    format!(
                        "`{}` does not exist (relative to the instance root)",
                        path.value
                    ),
                )
                .with_hint(
                    "extraction will fail until it exists; paths resolve against the instance root",
                ),
            );
        }
    }

    fn tables(&mut self) {
        let specs = self.specs;
        duplicates(
            self.diags,
            specs.tables.iter().map(|t| (t.id.value.clone(), &t.id)),
            "table id",
        );
        let source_names: Vec<&str> = specs.sources.iter().map(|s| s.name.as_str()).collect();
        let default_mode = specs
            .instance
            .as_ref()
            .map_or(QueryMode::Local, |i| i.defaults.query_mode.value);
        for t in &specs.tables {
            self.claim_view(&t.name, "table");
            let source = specs.source(&t.source.value);
            if source.is_none() && !specs.unresolved.source(&t.source.value) {
                self.diags.push(
                    Diagnostic::error(
                        Code::UnknownReference,
                        t.source.span,
                        format!(
                            "table `{}` names source `{}`, which does not exist",
                            t.id.value, t.source.value
                        ),
                    )
                    .with_hint(
                        match suggest(&t.source.value, source_names.iter().copied()) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None if source_names.is_empty() => {
                                "define the source in pipelines/<name>.yaml".to_string()
                            }
                            None => format!(
                                "define it in pipelines/{}.yaml, or use one of: {}",
                                t.source.value,
                                source_names.join(", ")
                            ),
                        },
                    ),
                );
            }
            let mode = t.query_mode.as_ref().map_or(default_mode, |m| m.value);
            let mode_span = t.query_mode.as_ref().map_or(t.span.point(), |m| m.span);
            if let Some(source) = source {
                self.runnable_mode(t, source, mode, mode_span);
                self.source_table_inside(t, source);
                self.jira_table(t, source);
            }
            match mode {
                QueryMode::Materialized if t.query.is_none() => self.diags.push(
                    Diagnostic::error(
                        Code::MissingKey,
                        mode_span,
                        format!("table `{}` is materialized but has no `query`", t.id.value),
                    )
                    .with_hint("add `query:` with the SQL to run at the source"),
                ),
                QueryMode::Local | QueryMode::Remote if t.source_table.is_none() => {
                    self.diags.push(
                        Diagnostic::error(
                            Code::MissingKey,
                            t.span.point(),
                            format!("table `{}` has no `source_table`", t.id.value),
                        )
                        .with_hint(
                            "add `source_table:` naming the table (or file stem) at the source",
                        ),
                    )
                }
                _ => {}
            }
            if let (Some(q), false) = (&t.query, mode == QueryMode::Materialized) {
                self.diags.push(
                    Diagnostic::warning(
                        Code::InvalidValue,
                        q.span,
                        "`query` is ignored unless query_mode is materialized",
                    )
                    .with_hint("set query_mode: materialized, or remove `query`"),
                );
            }
            self.sync_rules(t, mode);
            self.plain_columns(t);
            self.bigquery_table(t, source, mode);
        }
    }

    /// BigQuery settings of a table: `maximum_bytes_billed` only on BigQuery tables, and a dataset
    /// (`bucket`) for tables read by name.
    fn bigquery_table(&mut self, t: &TableSpec, source: Option<&SourceSpec>, mode: QueryMode) {
        let Some(source) = source else { return };
        let bigquery = source.source_type.value == SourceType::Bigquery;
        if let (Some(max), false) = (&t.maximum_bytes_billed, bigquery) {
            self.diags.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    max.span,
                    format!(
                        "table `{}`: maximum_bytes_billed applies to BigQuery sources; `{}` is a {} source",
                        t.id.value, source.name.value, source.source_type.value
                    ),
                )
                .with_hint("remove maximum_bytes_billed"),
            );
        }
        // The extract is attached under the source's name and the contract attaches BigQuery as
        // `bq`: the two would clash at rebuild, and the remote views would never publish.
        let alias = super::model::BIGQUERY_REMOTE_ALIAS;
        if bigquery && mode == QueryMode::Remote && source.name.value == alias {
            self.diags.push(
                Diagnostic::error(
                    Code::InvalidName,
                    t.query_mode.as_ref().map_or(t.span.point(), |m| m.span),
                    format!(
                        "table `{}` is remote, but its source is named `{alias}`: remote BigQuery \
                         tables are attached as `{alias}` (the extract contract), and a source's \
                         extract is attached under the source's name",
                        t.id.value
                    ),
                )
                .with_hint(format!(
                    "rename the source (pipelines/{alias}.yaml) to anything but `{alias}`"
                )),
            );
        }
        if bigquery && mode != QueryMode::Materialized && t.bucket.is_none() {
            self.diags.push(
                Diagnostic::error(
                    Code::MissingKey,
                    t.span.point(),
                    format!("table `{}` has no `bucket`", t.id.value),
                )
                .with_hint("a BigQuery table is <dataset>.<table>: set `bucket:` to its dataset"),
            );
        }
    }

    /// A table's query mode must be one its source type can run (the capability table beside
    /// [`SourceType`], which the run consults too).
    fn runnable_mode(&mut self, t: &TableSpec, source: &SourceSpec, mode: QueryMode, span: Span) {
        let source_type = source.source_type.value;
        if source_type.supports(mode) {
            return;
        }
        let runs: Vec<&str> = source_type
            .query_modes()
            .iter()
            .map(|m| m.as_str())
            .collect();
        let needs = SourceType::supporting(mode);
        let from_default = if t.query_mode.is_none() {
            " (the instance's defaults.query_mode)"
        } else {
            ""
        };
        self.diags.push(
            Diagnostic::error(
                Code::InvalidValue,
                span,
                format!(
                    "table `{}`: query_mode `{mode}`{from_default} is not available for {source_type} \
                     sources; `{}` is a {source_type} source",
                    t.id.value, source.name.value
                ),
            )
            .with_hint(format!(
                "{source_type} sources run query_mode {}; `{mode}` needs a source of type {}",
                runs.join(", "),
                if needs.is_empty() {
                    "(none in this version)".to_string()
                } else {
                    needs.join(" or ")
                }
            )),
        );
    }

    /// A Jira source's tables are the six the connector produces: a registry entry names one of
    /// them (its description, access and schedule apply; the rows come from webhooks, a backfill
    /// and the consistency check, never from a pull).
    fn jira_table(&mut self, t: &TableSpec, source: &SourceSpec) {
        if source.source_type.value != SourceType::Jira {
            return;
        }
        let Some(st) = &t.source_table else { return };
        if super::fields::JIRA_TABLES.contains(&st.value.as_str()) {
            return;
        }
        self.diags.push(
            Diagnostic::error(
                Code::InvalidValue,
                st.span,
                format!(
                    "table `{}`: `{}` is not a table of jira source `{}`",
                    t.id.value, st.value, source.name.value
                ),
            )
            .with_hint(format!(
                "a jira source produces {} (docs/jira.md)",
                super::fields::JIRA_TABLES.join(", ")
            )),
        );
    }

    /// A file source's `source_table` names a file or glob inside its directory; the connector
    /// refuses anything else with the same rule ([`names::is_relative_inside`]).
    fn source_table_inside(&mut self, t: &TableSpec, source: &SourceSpec) {
        let files = matches!(
            source.source_type.value,
            SourceType::Csv | SourceType::Parquet
        );
        let Some(st) = t.source_table.as_ref().filter(|_| files) else {
            return;
        };
        if !names::is_relative_inside(&st.value) {
            self.diags.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    st.span,
                    format!(
                        "source_table `{}` leaves the directory of source `{}`",
                        st.value, source.name.value
                    ),
                )
                .with_hint(
                    "name a file, a glob or a subdirectory inside the source's connection.path \
                     (e.g. `orders` or `2025/*.csv`); absolute paths and `..` are refused",
                ),
            );
        }
    }

    /// Column names the extract splices into SQL (cursor, primary key, partition column, filter
    /// columns) must be plain identifiers — the rule `quote::ident` enforces when the table runs.
    fn plain_columns(&mut self, t: &TableSpec) {
        let sync = &t.sync;
        let columns = sync
            .cursor
            .iter()
            .map(|c| ("cursor", c))
            .chain(sync.primary_key.iter().map(|c| ("primary_key", c)))
            .chain(sync.partition_by.iter().map(|c| ("partition_by", c)))
            .chain(t.filters.iter().map(|f| ("where", &f.column)));
        for (key, column) in columns {
            if !names::is_identifier(&column.value) {
                self.diags.push(
                    Diagnostic::error(
                        Code::InvalidName,
                        column.span,
                        format!(
                            "`{}` in `{key}` of table `{}` is not a plain column name",
                            column.value, t.id.value
                        ),
                    )
                    .with_hint(
                        "name one column: letters, digits and _, not starting with a digit, at \
                         most 64 characters (no expressions, quotes or lists in one string)",
                    ),
                );
            }
        }
    }

    fn sync_rules(&mut self, t: &super::model::TableSpec, mode: QueryMode) {
        let sync = &t.sync;
        let span = sync
            .mode
            .as_ref()
            .map(|m| m.span)
            .or(sync.span)
            .unwrap_or(t.span.point());
        // Keboola increments by its own change time (`changedSince`), not by a column.
        let keboola = self
            .specs
            .source(t.source.as_str())
            .is_some_and(|s| s.source_type.value == super::model::SourceType::Keboola);
        match sync.mode() {
            SyncMode::Incremental => {
                if sync.cursor.is_none() && !keboola {
                    self.diags.push(
                        Diagnostic::error(
                            Code::MissingKey,
                            span,
                            "incremental sync needs a `cursor` column",
                        )
                        .with_hint("add `cursor:` (e.g. updated_at) under `sync:`"),
                    );
                }
                if sync.primary_key.is_empty() {
                    self.diags.push(
                        Diagnostic::error(
                            Code::MissingKey,
                            span,
                            "incremental sync needs a `primary_key` to merge rows without duplicates",
                        )
                        .with_hint("add `primary_key: [id]` under `sync:`"),
                    );
                }
            }
            SyncMode::Partitioned if sync.partition_by.is_none() => self.diags.push(
                Diagnostic::error(
                    Code::MissingKey,
                    span,
                    "partitioned sync needs `partition_by`",
                )
                .with_hint("add `partition_by:` naming a date column under `sync:`"),
            ),
            _ => {}
        }
        if mode == QueryMode::Remote && sync.mode() != SyncMode::Full {
            self.diags.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    span,
                    "a remote table is queried at the source and has nothing to sync incrementally",
                )
                .with_hint("remove `sync:` or use query_mode: local"),
            );
        }
    }

    /// "did you mean" among the known view names other than `me` (the object that reads `name`: a
    /// suggestion to read itself would be a cycle), or `fallback` when none is close.
    fn view_hint(&self, name: &str, me: Option<&str>, fallback: &str) -> String {
        let me = me.map(str::to_lowercase);
        let candidates = self
            .view_names
            .keys()
            .filter(|k| Some(k.as_str()) != me.as_deref())
            .map(String::as_str);
        match suggest(name, candidates) {
            Some(s) => format!("did you mean `{s}`?"),
            None => fallback.to_owned(),
        }
    }

    /// Records a view name; a second claim (case-insensitively) is an error.
    fn claim_view(&mut self, name: &Located<String>, kind: &'static str) {
        let key = name.value.to_lowercase();
        if let Some((first_kind, first)) = self.view_names.get(&key) {
            self.diags.push(
                Diagnostic::error(
                    Code::Duplicate,
                    name.span,
                    format!(
                        "the name `{}` is already used by a {first_kind}; view names are unique (case-insensitively)",
                        name.value
                    ),
                )
                .with_related(*first, "first defined here")
                .with_hint("tables and transforms share one namespace in analytics.duckdb; rename one"),
            );
        } else {
            self.view_names.insert(key, (kind, name.span));
        }
    }

    fn transform_names(&mut self) {
        let specs = self.specs;
        for t in specs.transforms() {
            self.claim_view(&t.name, "transform");
        }
    }

    /// Resolves what a query reads against tables and transforms; returns the view names read and
    /// why its inputs cannot be determined with certainty (empty when they can). Unknown names are
    /// errors; reads no registered object accounts for (table functions, catalogue views, settings,
    /// catalogs the instance does not define) make the inputs uncertain, since access cannot be
    /// inherited from them.
    /// `exact_offsets`: whether the refs' offsets index `sql` itself (false for rendered templates).
    fn resolve(
        &mut self,
        reads: &Reads,
        sql: &Located<String>,
        exact_offsets: bool,
        owner: &str,
        me: Option<&str>,
    ) -> (BTreeSet<String>, Vec<String>) {
        let specs = self.specs;
        let mut inputs = BTreeSet::new();
        let mut uncertain: Vec<String> = reads.uncertain.clone();
        for f in &reads.functions {
            if !PURE_TABLE_FUNCTIONS.contains(&f.as_str()) {
                uncertain.push(format!("it calls the table function `{f}`"));
            }
        }
        for l in &reads.listings {
            uncertain.push(format!("it lists the catalogue (`{l}`)"));
        }
        for f in &reads.scalar_functions {
            if let Some(why) = introspection(f) {
                uncertain.push(format!("it calls `{f}`, which {why}"));
            }
        }
        for r in &reads.tables {
            let name_lc = r.name.to_lowercase();
            let known = match analytics_or_source(&r.catalog, &r.schema) {
                Qualifier::Analytics => {
                    let known = self.view_names.contains_key(&name_lc);
                    if known {
                        inputs.insert(name_lc);
                    }
                    known
                }
                Qualifier::Source(source) => match specs.source(&source) {
                    // `source.table`: the extract attached under the source's name.
                    Some(source) => {
                        let found = specs.tables.iter().find(|t| {
                            t.source.value == source.name.value
                                && t.name.value.to_lowercase() == name_lc
                        });
                        if let Some(t) = found {
                            inputs.insert(t.name.value.to_lowercase());
                        }
                        found.is_some()
                    }
                    None if specs.unresolved.source(&source) => continue,
                    None => {
                        // information_schema, pg_catalog, a database attached by hand: it exists or
                        // not at run time, but no registered table's access covers it.
                        uncertain.push(format!(
                            "it reads `{}`, which is not a registered table or transform",
                            r.written()
                        ));
                        continue;
                    }
                },
            };
            // A name an erroneous file meant to define: that file's error is the one to fix.
            if known || specs.unresolved.view(&r.name) {
                continue;
            }
            let span = r
                .offset
                .filter(|_| exact_offsets)
                .map_or(sql.span, |o| self.sql_span(sql, o, r.name.len()));
            self.diags.push(
                Diagnostic::error(
                    Code::UnknownReference,
                    span,
                    format!(
                        "{owner} reads `{}`, which is neither a registered table nor a transform",
                        r.name
                    ),
                )
                .with_hint(self.view_hint(
                    &r.name,
                    me,
                    "register the table in registry/, or define a transform with that name",
                )),
            );
        }
        uncertain.sort();
        uncertain.dedup();
        (inputs, uncertain)
    }

    /// The warning for a transform or metric whose inputs cannot be determined: it is served to
    /// admins only (see docs/security.md).
    fn admin_only(&mut self, sql: &Located<String>, owner: &str, why: &[String]) {
        self.diags.push(
            Diagnostic::warning(
                Code::Sql,
                sql.span,
                format!(
                    "{owner} will be readable only by admins: the tables it reads cannot be \
                     determined with certainty ({})",
                    why.join("; ")
                ),
            )
            .with_hint(
                "read registered tables and transforms by name (`orders`, `shop.orders`) so it \
                 inherits their access; table functions, catalogue views and settings cannot be \
                 attributed to a table",
            ),
        );
    }

    /// Renders every metric template for each case the checks below parse (every grain, every
    /// declared dimension), once, keeping the results for them.
    fn render_templates(&mut self) {
        let specs = self.specs;
        for m in &specs.metrics {
            let time_column = m.time_column.as_ref().map(|c| c.as_str());
            let sqls = std::iter::once(&m.sql).chain(m.variants.iter().map(|(_, sql)| sql));
            for sql in sqls {
                for grain in metric_grains(m) {
                    for dimension in metric_dimensions(m, &sql.value) {
                        let r = render_metric_for(&sql.value, grain, time_column, dimension);
                        self.rendered.insert(render_case(sql, grain, dimension), r);
                    }
                }
            }
        }
    }

    /// Every SQL text the checks below will parse (metric templates as rendered by
    /// [`Validator::render_templates`]), so the parser can work through them on all cores first.
    fn sql_texts(&self) -> impl Iterator<Item = &str> {
        let transforms = self.specs.transforms().map(|t| t.sql.value.as_str());
        let rendered = self.rendered.values().filter_map(|r| r.as_deref().ok());
        transforms.chain(rendered)
    }

    fn transform_sql(&mut self, parser: &SqlParser) {
        let specs = self.specs;
        for t in specs.transforms() {
            let owner = format!("transform `{}`", t.name.value);
            match parser.parse_select(&t.sql.value) {
                Ok(reads) => {
                    let (inputs, uncertain) =
                        self.resolve(&reads, &t.sql, true, &owner, Some(&t.name.value));
                    let name = t.name.value.to_lowercase();
                    self.analysis.transform_inputs.insert(name.clone(), inputs);
                    if !uncertain.is_empty() {
                        self.admin_only(&t.sql, &owner, &uncertain);
                        self.analysis.transform_uncertain.insert(name, uncertain);
                    }
                }
                Err(e) => self.sql_error(&t.sql, &owner, e.message, e.offset),
            }
        }
    }

    fn sql_error(
        &mut self,
        sql: &Located<String>,
        owner: &str,
        message: String,
        offset: Option<usize>,
    ) {
        let span = offset.map_or(sql.span, |o| self.sql_span(sql, o, 1));
        self.diags.push(
            Diagnostic::error(Code::Sql, span, format!("{owner}: {message}"))
                .with_hint("the SQL must be one SELECT statement that DuckDB can parse"),
        );
    }

    /// The file position of byte `offset` inside a SQL string value.
    fn sql_span(&self, sql: &Located<String>, offset: usize, len: usize) -> Span {
        let start = locate_in_value(self.files(), sql, offset);
        Span {
            file: sql.span.file,
            start,
            end: Pos {
                line: start.line,
                col: start.col + len.max(1) as u32,
            },
        }
    }

    /// A declared dimension that neither the main template (through `dimension`) nor a
    /// `by_<dimension>` variant handles: `metrics run --dim` would refuse it, the same rule
    /// `metrics::select` applies at run time. A warning, since the metric itself still runs.
    fn unhandled_dimensions(&mut self, m: &MetricSpec) {
        if super::template::uses_dimension(&m.sql.value) {
            return;
        }
        for d in &m.dimensions {
            let variant = format!("by_{}", d.value);
            if m.variants.iter().any(|(k, _)| k.value == variant) {
                continue;
            }
            self.diags.push(
                Diagnostic::warning(
                    Code::InvalidValue,
                    d.span,
                    format!(
                        "metric `{}` declares dimension `{}`, but no SQL handles it",
                        m.id, d.value
                    ),
                )
                .with_hint(format!(
                    "use {{{{ dimension }}}} in `sql`, or add `variants: {{ {variant}: ... }}`; \
                     until then `metrics run --dim {}` fails",
                    d.value
                )),
            );
        }
    }

    fn metrics(&mut self, parser: &SqlParser) {
        let specs = self.specs;
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for m in &specs.metrics {
            if let Some(first) = seen.insert(&m.id, m.name.span) {
                self.diags.push(
                    Diagnostic::error(
                        Code::Duplicate,
                        m.name.span,
                        format!("duplicate metric id `{}`", m.id),
                    )
                    .with_related(first, "first defined here")
                    .with_hint("metric ids (<category>/<name>) must be unique"),
                );
            }
            if m.owner.is_none() {
                self.diags.push(
                    Diagnostic::warning(
                        Code::MissingKey,
                        m.span.point(),
                        format!("metric `{}` has no owner", m.id),
                    )
                    .with_hint("add `owner:` so people know whom to ask about it"),
                );
            }
            self.unhandled_dimensions(m);
            for t in &m.tables {
                if !self.view_names.contains_key(&t.value.to_lowercase())
                    && !specs.unresolved.view(&t.value)
                {
                    self.diags.push(
                        Diagnostic::error(
                            Code::UnknownReference,
                            t.span,
                            format!(
                                "metric `{}` lists table `{}`, which is not registered",
                                m.id, t.value
                            ),
                        )
                        .with_hint(self.view_hint(
                            &t.value,
                            None,
                            "register the table in registry/ or fix the name",
                        )),
                    );
                }
            }
            let grains = metric_grains(m);
            let owner = format!("metric `{}`", m.id);
            let mut inputs = BTreeSet::new();
            let mut uncertain: Vec<String> = Vec::new();
            let mut uncertain_at: Option<&Located<String>> = None;
            let sqls = std::iter::once((&m.sql, owner.clone())).chain(
                m.variants
                    .iter()
                    .map(|(name, sql)| (sql, format!("{owner} variant `{}`", name.value))),
            );
            // Every grain, and every declared dimension when the template uses `dimension`.
            let cases = |sql: &str| -> Vec<(&'static str, Option<&str>)> {
                grains
                    .iter()
                    .flat_map(|g| metric_dimensions(m, sql).into_iter().map(move |d| (*g, d)))
                    .collect()
            };
            for (sql, what) in sqls {
                for (grain, dimension) in cases(&sql.value) {
                    let ahead = self.rendered.remove(&render_case(sql, grain, dimension));
                    let grain = &grain;
                    let rendered = match ahead.unwrap_or_else(|| {
                        render_metric_for(
                            &sql.value,
                            grain,
                            m.time_column.as_ref().map(|c| c.as_str()),
                            dimension,
                        )
                    }) {
                        Ok(r) => r,
                        Err(e) => {
                            let span = e.offset.map_or(sql.span, |o| self.sql_span(sql, o, e.len));
                            self.diags.push(
                                Diagnostic::error(
                                    Code::Template,
                                    span,
                                    format!("{what}: template error: {}", e.message),
                                )
                                .with_hint(format!(
                                    "templates may use: {}; filters {}; tests {} \
                                     (docs/metrics.md)",
                                    METRIC_TEMPLATE_VARS.join(", "),
                                    super::template::FILTERS.join(", "),
                                    super::template::TESTS.join(", ")
                                )),
                            );
                            break;
                        }
                    };
                    match parser.parse_select(&rendered) {
                        Ok(reads) => {
                            let before = self.diags.len();
                            let (read, why) =
                                self.resolve(&reads, sql, rendered == sql.value, &what, None);
                            inputs.extend(read);
                            if !why.is_empty() {
                                uncertain_at.get_or_insert(sql);
                                uncertain.extend(why);
                            }
                            if self.diags.len() > before {
                                break;
                            }
                        }
                        Err(e) => {
                            // Offsets refer to the rendered text; only map them when nothing was templated.
                            let offset = e.offset.filter(|_| rendered == sql.value);
                            self.sql_error(
                                sql,
                                &what,
                                match dimension {
                                    Some(d) => {
                                        format!("{} (grain {grain}, dimension {d})", e.message)
                                    }
                                    None => format!("{} (grain {grain})", e.message),
                                },
                                offset,
                            );
                            break;
                        }
                    }
                }
            }
            self.analysis.metric_inputs.insert(m.id.clone(), inputs);
            if let Some(sql) = uncertain_at {
                uncertain.sort();
                uncertain.dedup();
                self.admin_only(sql, &owner, &uncertain);
                self.analysis
                    .metric_uncertain
                    .insert(m.id.clone(), uncertain);
            }
        }
    }

    fn cycles(&mut self) {
        let specs = self.specs;
        let inputs = &self.analysis.transform_inputs;
        let mut graph: DiGraph<&str, ()> = DiGraph::new();
        let mut index: BTreeMap<&str, NodeIndex> = BTreeMap::new();
        for name in inputs.keys() {
            index.insert(name, graph.add_node(name));
        }
        for (name, reads) in inputs {
            for dep in reads {
                if let Some(&to) = index.get(dep.as_str()) {
                    graph.add_edge(index[name.as_str()], to, ());
                }
            }
        }
        for scc in petgraph::algo::tarjan_scc(&graph) {
            let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
            let start = *members
                .iter()
                .min_by_key(|n| graph[**n])
                .expect("non-empty component");
            let path = cycle_path(&graph, start, &members);
            let names: Vec<&str> = path.iter().map(|n| graph[*n]).collect();
            let find = |n: &str| {
                specs
                    .transforms()
                    .find(|t| t.name.value.to_lowercase() == n)
            };
            let Some(first) = find(names[0]) else {
                continue;
            };
            let mut d = Diagnostic::error(
                Code::Cycle,
                first.name.span,
                format!(
                    "transforms depend on each other in a cycle: {}",
                    names.join(" → ")
                ),
            )
            .with_hint(
                "a transform cannot read itself, directly or through others; break the loop",
            );
            for n in &names[1..names.len() - 1] {
                if let Some(t) = find(n) {
                    d = d.with_related(t.name.span, format!("`{}` is defined here", t.name.value));
                }
            }
            self.diags.push(d);
        }
    }
}

/// A shortest cycle through `start` inside one strongly connected component, as `start, …, start`.
fn cycle_path(
    graph: &DiGraph<&str, ()>,
    start: NodeIndex,
    members: &BTreeSet<NodeIndex>,
) -> Vec<NodeIndex> {
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        let mut next: Vec<NodeIndex> = graph.neighbors(n).filter(|m| members.contains(m)).collect();
        next.sort_by_key(|m| graph[*m]);
        for m in next {
            if m == start {
                let mut path = vec![n];
                let mut cur = n;
                while cur != start {
                    cur = prev[&cur];
                    path.push(cur);
                }
                path.reverse();
                path.push(start);
                return path;
            }
            if m != start && !prev.contains_key(&m) {
                prev.insert(m, n);
                queue.push_back(m);
            }
        }
    }
    vec![start, start]
}

/// Renders a metric's SQL template as `validate` does (see [`super::template`]): strict about
/// undefined variables, no dimension and no date range.
pub fn render_metric(
    template: &str,
    grain: &str,
    time_column: Option<&str>,
) -> Result<String, super::template::TemplateError> {
    render_metric_for(template, grain, time_column, None)
}

/// [`render_metric`] for one dimension.
pub fn render_metric_for(
    template: &str,
    grain: &str,
    time_column: Option<&str>,
    dimension: Option<&str>,
) -> Result<String, super::template::TemplateError> {
    super::template::render(
        template,
        &super::template::Params {
            grain: grain.to_string(),
            time_column: time_column.map(String::from),
            dimension: dimension.map(String::from),
            ..Default::default()
        },
    )
}

/// The dimensions a template is rendered for: none, plus each declared one when it uses `dimension`.
fn metric_dimensions<'m>(m: &'m MetricSpec, template: &str) -> Vec<Option<&'m str>> {
    let mut out = vec![None];
    if super::template::uses_dimension(template) {
        out.extend(m.dimensions.iter().map(|d| Some(d.value.as_str())));
    }
    out
}

/// Maps a byte offset inside a string value back to its file position. Exact for plain and quoted
/// one-line values and for YAML block scalars (`|`); otherwise the value's start.
pub fn locate_in_value(files: &SourceMap, value: &Located<String>, offset: usize) -> Pos {
    let text = &value.value;
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line_in_value = before.matches('\n').count();
    let col_in_line = before.rsplit('\n').next().map_or(0, |s| s.chars().count());
    let file = files.get(value.span.file);
    let start = value.span.start;
    let first_line = file.line(start.line).unwrap_or("");
    let value_lines: Vec<&str> = text.split('\n').collect();
    if !text.contains('\n') {
        // One-line value: skip an opening quote if there is one.
        let at = first_line.chars().nth(start.col as usize - 1);
        let quote = u32::from(matches!(at, Some('"' | '\'')));
        return Pos {
            line: start.line,
            col: start.col + quote + col_in_line as u32,
        };
    }
    // Multi-line value: find the file line holding the value's first line, then count down.
    let first = value_lines.first().map_or("", |l| l.trim());
    let mut line = start.line;
    while line <= file.line_count() && !file.line(line).unwrap_or("").contains(first) {
        line += 1;
    }
    if line > file.line_count() || first.is_empty() {
        return start;
    }
    let target = line + line_in_value as u32;
    let target_text = file.line(target).unwrap_or("");
    let indent = value_lines
        .get(line_in_value)
        .and_then(|l| {
            target_text
                .find(l.trim_start())
                .map(|i| i - (l.len() - l.trim_start().len()))
        })
        .unwrap_or(0);
    Pos {
        line: target,
        col: target_text[..indent.min(target_text.len())].chars().count() as u32
            + col_in_line as u32
            + 1,
    }
}

/// The largest char boundary of `s` at or before `i`.
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Keys of a connection ending in `_env`, with the variable they name.
fn env_keys(connection: &super::node::Node) -> Vec<(&str, Span)> {
    let mut out = Vec::new();
    if let super::node::Value::Map(entries) = &connection.value {
        for (k, v) in entries {
            if let (true, super::node::Value::Str(s)) = (k.name.ends_with("_env"), &v.value) {
                out.push((s.as_str(), v.span));
            }
        }
    }
    out
}

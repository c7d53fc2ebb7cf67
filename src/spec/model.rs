//! The typed spec model, and its decoding from [`Node`] trees.
//!
//! Decoding checks everything a single file can tell: types, unknown and missing keys, enum values,
//! names, schedules, time zones and env-var names. Checks across files (uniqueness, references, SQL,
//! cycles) live in [`validate`](super::validate).

use super::decode::{Decoder, Located, Obj};
use super::fields::{self, Object};
use super::node::{Node, Value};
use super::schedule::Schedule;
use crate::diag::source::{FileId, Span};
use crate::diag::{did_you_mean, suggest, Code};
use crate::names;
use chrono_tz::Tz;

macro_rules! spec_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn from_name(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

spec_enum!(
    /// Where a table's rows live when analysts query them.
    QueryMode { Local = "local", Remote = "remote", Materialized = "materialized" }
);
spec_enum!(
    /// The source types this version can run: each has a connector (`connectors::connector` matches
    /// on this enum, so a type without one does not compile).
    SourceType {
        Csv = "csv",
        Parquet = "parquet",
        Duckdb = "duckdb",
        Keboola = "keboola",
        Postgres = "postgres",
        Mysql = "mysql",
        Bigquery = "bigquery",
        Jira = "jira",
    }
);
spec_enum!(SyncMode { Full = "full", Incremental = "incremental", Partitioned = "partitioned" });
spec_enum!(Granularity { Day = "day", Month = "month", Year = "year" });
spec_enum!(Operator {
    Eq = "eq",
    Ne = "ne",
    Gt = "gt",
    Ge = "ge",
    Lt = "lt",
    Le = "le",
    In = "in",
    NotIn = "not_in",
});
spec_enum!(Materialized { Table = "table", View = "view" });
spec_enum!(
    /// Which changes to a table's published schema a new extract may make (the schema contract):
    /// `additive` new columns and widened types, `freeze` none, `evolve` any.
    SchemaChanges { Additive = "additive", Freeze = "freeze", Evolve = "evolve" }
);
spec_enum!(MetricType {
    Sum = "sum",
    Count = "count",
    CountDistinct = "count_distinct",
    Average = "average",
    Ratio = "ratio",
    Custom = "custom",
});
spec_enum!(Grain { Day = "day", Week = "week", Month = "month", Quarter = "quarter", Year = "year" });

/// The alias under which the seed system's BigQuery contract attaches a project (`_remote_attach`
/// row `('bq', 'bigquery', 'project=…', '')`, DESIGN.md §4): part of the contract, so fixed.
pub const BIGQUERY_REMOTE_ALIAS: &str = "bq";

/// Source types on the roadmap that this version has no connector for. Named so that `validate` can
/// say "not in this version" instead of "unknown"; they are not in the schema.
pub const PLANNED_SOURCE_TYPES: &[&str] = &[];

impl SourceType {
    /// What this version can run: the query modes a table of this source type may use. The one
    /// statement of it — `validate` reports a table outside it at its `query_mode`, and the run
    /// (`connectors::connector_for`) refuses the same tables, so what validates is what runs.
    ///
    /// `remote` needs a source DuckDB can ATTACH at query time and `materialized` one that can run a
    /// query: a DuckDB file, the databases DuckDB's extensions attach (PostgreSQL, MySQL), and
    /// BigQuery (queries run as BigQuery jobs; `remote` goes through DuckDB's `bigquery` extension).
    /// Keboola tables are exported, files are read.
    pub fn query_modes(self) -> &'static [QueryMode] {
        match self {
            // Jira tables are produced by the connector (webhooks, backfill) into monthly Parquet.
            SourceType::Csv | SourceType::Parquet | SourceType::Keboola | SourceType::Jira => {
                &[QueryMode::Local]
            }
            SourceType::Duckdb
            | SourceType::Postgres
            | SourceType::Mysql
            | SourceType::Bigquery => {
                &[QueryMode::Local, QueryMode::Remote, QueryMode::Materialized]
            }
        }
    }

    pub fn supports(self, mode: QueryMode) -> bool {
        self.query_modes().contains(&mode)
    }

    /// Every source type, in schema order.
    pub fn all() -> impl Iterator<Item = SourceType> {
        Self::NAMES.iter().filter_map(|n| Self::from_name(n))
    }

    /// The source types that support `mode`, for hints ("remote needs a duckdb source").
    pub fn supporting(mode: QueryMode) -> Vec<&'static str> {
        Self::all()
            .filter(|t| t.supports(mode))
            .map(Self::as_str)
            .collect()
    }
}

// Keep the schema tables and the enums in step.
#[cfg(test)]
#[test]
fn enums_match_schema_tables() {
    assert_eq!(QueryMode::NAMES, fields::QUERY_MODES);
    assert_eq!(SourceType::NAMES, fields::SOURCE_TYPES);
    assert_eq!(SyncMode::NAMES, fields::SYNC_MODES);
    assert_eq!(Granularity::NAMES, fields::GRANULARITIES);
    assert_eq!(Operator::NAMES, fields::OPERATORS);
    assert_eq!(Materialized::NAMES, fields::MATERIALIZATIONS);
    assert_eq!(SchemaChanges::NAMES, fields::SCHEMA_CHANGES);
    assert_eq!(MetricType::NAMES, fields::METRIC_TYPES);
    assert_eq!(Grain::NAMES, fields::GRAINS);
}

// The schema's words for query_mode name the source types that can run each mode.
#[cfg(test)]
#[test]
fn query_mode_docs_follow_the_capability_table() {
    let doc = fields::TABLE.field("query_mode").expect("documented").doc;
    for mode in [QueryMode::Remote, QueryMode::Materialized] {
        for t in SourceType::supporting(mode) {
            assert!(doc.contains(&format!("{t} source")), "{mode}: {doc}");
        }
    }
    assert!(SourceType::all().all(|t| t.supports(QueryMode::Local)));
}

pub type Text = Option<Located<String>>;
pub type Docs = Vec<(Located<String>, Located<String>)>;

#[derive(Debug)]
pub struct InstanceSpec {
    pub file: FileId,
    pub name: Located<String>,
    pub description: Text,
    pub timezone: Located<Tz>,
    pub data_dir: Located<String>,
    pub defaults: Defaults,
    pub listen: Located<String>,
    /// Boxed: most of an instance's size, and `InstanceSpec` travels in enums beside smaller specs.
    pub server: Box<ServerSettings>,
    pub missed_runs: MissedRuns,
    /// `scheduler.max_concurrent_runs`.
    pub max_concurrent_runs: Option<u64>,
    /// `run:`: the run engines' limits; `None` where the host decides.
    pub run: RunSettings,
    pub remote_extensions: Vec<Located<String>>,
    pub remote_token_envs: Vec<Located<String>>,
    /// `extensions:`, when given (boxed: most instances have none).
    pub extensions: Option<Box<ExtensionSettings>>,
}

/// `run:` of the instance: each run engine's DuckDB `memory_limit` and `threads`, when set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunSettings {
    pub memory_limit_mb: Option<u64>,
    pub threads: Option<u64>,
}

/// `extensions:` of the instance: where DuckDB extensions are installed and come from.
#[derive(Debug)]
pub struct ExtensionSettings {
    /// As written (relative to the instance root).
    pub directory: Text,
    pub repository: Text,
}

/// `server:` beyond `listen`. Limits whose default depends on the host (RAM, cores) are `None` when
/// not set; the daemon resolves them (`daemon::limits`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    pub public_health: bool,
    pub public_metrics: bool,
    pub query_max_rows: u64,
    pub query_timeout_seconds: u64,
    pub query_memory_limit_mb: Option<u64>,
    pub query_threads: Option<u64>,
    pub query_max_bytes: u64,
    pub max_concurrent_queries: Option<u64>,
    pub max_concurrent_queries_per_token: Option<u64>,
    pub header_read_timeout_seconds: u64,
    pub idle_timeout_seconds: u64,
    pub max_connections: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            public_health: true,
            public_metrics: false,
            query_max_rows: 10_000,
            query_timeout_seconds: 30,
            query_memory_limit_mb: None,
            query_threads: None,
            query_max_bytes: 16 * 1024 * 1024,
            max_concurrent_queries: None,
            max_concurrent_queries_per_token: None,
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            max_connections: 512,
        }
    }
}

spec_enum!(
    /// What the daemon does at start about schedule times that passed while it was down.
    MissedRuns { RunOnce = "run_once", Skip = "skip" }
);

#[derive(Debug)]
pub struct Defaults {
    pub schedule: Located<Schedule>,
    pub query_mode: Located<QueryMode>,
    pub concurrency: u32,
    /// The schema contract of tables that set none.
    pub schema_changes: SchemaChanges,
}

#[derive(Debug)]
pub struct SourceSpec {
    pub file: FileId,
    pub name: Located<String>,
    pub source_type: Located<SourceType>,
    pub description: Text,
    /// The connection mapping, already checked against the type's schema object.
    pub connection: Node,
    pub schedule: Option<Located<Schedule>>,
    pub transforms: Vec<TransformSpec>,
}

impl SourceSpec {
    /// A string value of the connection (e.g. `path`).
    pub fn connection_str(&self, key: &str) -> Option<Located<String>> {
        let node = self.connection.get(key)?;
        match &node.value {
            Value::Str(s) => Some(Located::new(s.clone(), node.span)),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct TransformSpec {
    pub file: FileId,
    pub span: Span,
    pub source: String,
    pub name: Located<String>,
    pub description: Text,
    pub materialized: Materialized,
    pub sql: Located<String>,
    pub columns: Docs,
    pub checks: Vec<CheckSpec>,
    pub tags: Vec<Located<String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CheckKind {
    NotNull(String),
    Unique(Vec<String>),
    AcceptedValues { column: String, values: Vec<String> },
}

#[derive(Clone, Debug, PartialEq)]
pub struct CheckSpec {
    pub kind: CheckKind,
    pub span: Span,
}

#[derive(Debug)]
pub struct TableSpec {
    pub file: FileId,
    pub span: Span,
    pub id: Located<String>,
    pub source: Located<String>,
    pub bucket: Text,
    pub source_table: Text,
    pub name: Located<String>,
    /// `None` when not given: the instance default applies.
    pub query_mode: Option<Located<QueryMode>>,
    pub query: Text,
    pub schedule: Option<Located<Schedule>>,
    pub sync: SyncSpec,
    pub filters: Vec<FilterSpec>,
    pub description: Text,
    pub columns: Docs,
    /// `None` when not given: the instance default applies.
    pub schema_changes: Option<SchemaChanges>,
    pub access: Vec<Located<String>>,
    pub tags: Vec<Located<String>>,
    pub checks: Vec<CheckSpec>,
    /// BigQuery: the most bytes one query of this table may bill.
    pub maximum_bytes_billed: Option<Located<i64>>,
}

#[derive(Debug, Default)]
pub struct SyncSpec {
    pub span: Option<Span>,
    pub mode: Option<Located<SyncMode>>,
    pub cursor: Text,
    pub primary_key: Vec<Located<String>>,
    pub window_days: Option<u32>,
    pub partition_by: Text,
    pub granularity: Option<Granularity>,
}

impl SyncSpec {
    pub fn mode(&self) -> SyncMode {
        self.mode.as_ref().map_or(SyncMode::Full, |m| m.value)
    }
}

#[derive(Debug)]
pub struct FilterSpec {
    pub span: Span,
    pub column: Located<String>,
    pub operator: Operator,
    pub values: Vec<Node>,
}

#[derive(Debug)]
pub struct MetricSpec {
    pub file: FileId,
    pub span: Span,
    /// `<category>/<name>`.
    pub id: String,
    pub name: Located<String>,
    pub category: Located<String>,
    pub display_name: Text,
    pub description: Text,
    pub owner: Text,
    pub metric_type: Option<MetricType>,
    pub unit: Text,
    pub grain: Vec<Located<Grain>>,
    pub time_column: Text,
    pub tables: Vec<Located<String>>,
    pub dimensions: Vec<Located<String>>,
    pub synonyms: Vec<Located<String>>,
    pub notes: Vec<Located<String>>,
    pub sql: Located<String>,
    pub variants: Docs,
}

// ---------------------------------------------------------------- decoding

impl Decoder<'_> {
    fn enum_value<E>(
        &mut self,
        obj: &Obj,
        key: &str,
        names: &[&str],
        from: fn(&str) -> Option<E>,
    ) -> Option<Located<E>> {
        let w = self.word(obj, key, names)?;
        from(&w.value).map(|v| Located::new(v, w.span))
    }

    fn schedule(&mut self, obj: &Obj, key: &str) -> Option<Located<Schedule>> {
        let text = self.str(obj, key)?;
        match Schedule::parse_cached(&text.value) {
            Ok(s) => Some(Located::new(s, text.span)),
            Err(e) => {
                self.diags.error(Code::Schedule, text.span, e.message).hint = Some(e.hint.into());
                None
            }
        }
    }

    fn named(
        &mut self,
        value: Option<Located<String>>,
        valid: fn(&str) -> bool,
        what: &str,
        rule: &str,
    ) -> Option<Located<String>> {
        let v = value?;
        if valid(&v.value) {
            Some(v)
        } else {
            self.diags
                .error(
                    Code::InvalidName,
                    v.span,
                    format!("`{}` is not a valid {what}", v.value),
                )
                .hint = Some(rule.to_owned());
            None
        }
    }

    fn env_vars(&mut self, list: &[Located<String>]) {
        for v in list {
            self.env_var_name(v);
        }
    }

    fn env_var_name(&mut self, v: &Located<String>) -> bool {
        if names::is_env_var(&v.value) {
            return true;
        }
        self.diags
            .error(
                Code::Env,
                v.span,
                format!("`{}` is not a valid environment variable name", v.value),
            )
            .hint = Some(
            "give the NAME of the variable holding the secret (letters, digits, _), never the secret itself"
                .into(),
        );
        false
    }

    fn checks(&mut self, obj: &Obj, key: &str) -> Vec<CheckSpec> {
        let Some(node) = obj.get(key) else {
            return Vec::new();
        };
        let Value::Seq(items) = &node.value else {
            self.diags.error(
                Code::Type,
                node.span,
                format!(
                    "`{key}`: expected a list of checks, found {}",
                    node.value.kind()
                ),
            );
            return Vec::new();
        };
        items.iter().filter_map(|item| self.check(item)).collect()
    }

    fn check(&mut self, item: &Node) -> Option<CheckSpec> {
        let shape = "a check is one of {not_null: column}, {unique: column or [columns]}, \
                     {accepted_values: {column: c, values: [..]}}";
        let Value::Map(entries) = &item.value else {
            self.diags
                .error(
                    Code::Type,
                    item.span,
                    format!("expected a check, found {}", item.value.kind()),
                )
                .hint = Some(shape.into());
            return None;
        };
        let [(k, v)] = entries.as_slice() else {
            self.diags
                .error(Code::Type, item.span, "a check must have exactly one key")
                .hint = Some(shape.into());
            return None;
        };
        let string = |n: &Node| match &n.value {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        };
        let kind = match k.name.as_str() {
            "not_null" => string(v).map(CheckKind::NotNull),
            "unique" => match &v.value {
                Value::Str(s) => Some(CheckKind::Unique(vec![s.clone()])),
                Value::Seq(cols) => cols
                    .iter()
                    .map(string)
                    .collect::<Option<Vec<_>>>()
                    .filter(|c| !c.is_empty())
                    .map(CheckKind::Unique),
                _ => None,
            },
            "accepted_values" => {
                let column = v.get("column").and_then(string);
                let values = match v.get("values").map(|n| &n.value) {
                    Some(Value::Seq(vals)) => vals
                        .iter()
                        .map(|n| match &n.value {
                            Value::Str(s) => Some(s.clone()),
                            Value::Int(i) => Some(i.to_string()),
                            Value::Float(f) => Some(f.to_string()),
                            Value::Bool(b) => Some(b.to_string()),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>(),
                    _ => None,
                };
                let extra = match &v.value {
                    Value::Map(e) => e
                        .iter()
                        .any(|(k, _)| k.name != "column" && k.name != "values"),
                    _ => true,
                };
                match (column, values, extra) {
                    (Some(column), Some(values), false) => {
                        Some(CheckKind::AcceptedValues { column, values })
                    }
                    _ => None,
                }
            }
            other => {
                self.diags
                    .error(Code::UnknownKey, k.span, format!("unknown check `{other}`"))
                    .hint = Some(did_you_mean(other, fields::CHECK_KINDS));
                return None;
            }
        };
        match kind {
            Some(kind) => Some(CheckSpec {
                kind,
                span: item.span,
            }),
            None => {
                self.diags
                    .error(Code::Type, v.span, format!("malformed `{}` check", k.name))
                    .hint = Some(shape.into());
                None
            }
        }
    }
}

const NAME_RULE: &str = "use letters, digits and _, starting with a letter or _ (at most 64)";
const SOURCE_RULE: &str =
    "use lowercase letters, digits and _, starting with a letter or _ (at most 64), other than the \
     catalog names main, memory, system, temp, analytics, previous, information_schema, pg_catalog";

pub fn decode_instance(dec: &mut Decoder, node: &Node, file: FileId) -> Option<InstanceSpec> {
    let obj = dec.object(node, &fields::INSTANCE)?;
    let name = dec.str(&obj, "name");
    let description = dec.str(&obj, "description");
    let timezone = match dec.str(&obj, "timezone") {
        Some(tz) => match tz.value.parse::<Tz>() {
            Ok(z) => Located::new(z, tz.span),
            Err(_) => {
                let names = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name());
                dec.diags
                    .error(
                        Code::Timezone,
                        tz.span,
                        format!("unknown time zone `{}`", tz.value),
                    )
                    .hint = Some(match suggest(&tz.value, names) {
                    Some(s) => {
                        format!("did you mean `{s}`? (IANA names such as Europe/Prague, UTC)")
                    }
                    None => "use an IANA time zone name such as Europe/Prague or UTC".into(),
                });
                Located::new(Tz::UTC, tz.span)
            }
        },
        None => Located::new(Tz::UTC, obj.span.point()),
    };
    let data_dir = dec
        .str(&obj, "data_dir")
        .unwrap_or_else(|| Located::new("data".into(), obj.span.point()));
    let default_schedule = || {
        Located::new(
            Schedule::parse("0 */6 * * *").expect("valid default schedule"),
            obj.span.point(),
        )
    };
    let defaults = match obj
        .get("defaults")
        .and_then(|n| dec.object(n, &fields::DEFAULTS))
    {
        Some(d) => Defaults {
            schedule: dec
                .schedule(&d, "schedule")
                .unwrap_or_else(default_schedule),
            query_mode: dec
                .enum_value(&d, "query_mode", QueryMode::NAMES, QueryMode::from_name)
                .unwrap_or_else(|| Located::new(QueryMode::Local, d.span.point())),
            concurrency: dec.int(&d, "concurrency").map_or(4, |c| c.value as u32),
            schema_changes: dec
                .enum_value(
                    &d,
                    "schema_changes",
                    SchemaChanges::NAMES,
                    SchemaChanges::from_name,
                )
                .map_or(SchemaChanges::Additive, |s| s.value),
        },
        None => Defaults {
            schedule: default_schedule(),
            query_mode: Located::new(QueryMode::Local, obj.span.point()),
            concurrency: 4,
            schema_changes: SchemaChanges::Additive,
        },
    };
    let mut listen = Located::new("127.0.0.1:8585".to_string(), obj.span.point());
    let mut settings = ServerSettings::default();
    if let Some(server) = obj
        .get("server")
        .and_then(|n| dec.object(n, &fields::SERVER))
    {
        if server.get("public").is_some() {
            let public = dec.word_list(&server, "public", fields::PUBLIC_ROUTES);
            settings.public_health = public.iter().any(|p| p.value == "health");
            settings.public_metrics = public.iter().any(|p| p.value == "metrics");
        }
        if let Some(n) = dec.int(&server, "query_max_rows") {
            settings.query_max_rows = n.value as u64;
        }
        if let Some(n) = dec.int(&server, "query_timeout_seconds") {
            settings.query_timeout_seconds = n.value as u64;
        }
        // The schema's ranges are positive, so the casts below never wrap.
        let mut int = |key: &str| dec.int(&server, key).map(|n| n.value as u64);
        settings.query_memory_limit_mb = int("query_memory_limit_mb");
        settings.query_threads = int("query_threads");
        settings.max_concurrent_queries = int("max_concurrent_queries");
        settings.max_concurrent_queries_per_token = int("max_concurrent_queries_per_token");
        if let Some(n) = int("query_max_bytes") {
            settings.query_max_bytes = n;
        }
        if let Some(n) = int("header_read_timeout_seconds") {
            settings.header_read_timeout_seconds = n;
        }
        if let Some(n) = int("idle_timeout_seconds") {
            settings.idle_timeout_seconds = n;
        }
        if let Some(n) = int("max_connections") {
            settings.max_connections = n;
        }
        if let Some(l) = dec.str(&server, "listen") {
            if l.value.parse::<std::net::SocketAddr>().is_err() {
                dec.diags
                    .error(
                        Code::InvalidValue,
                        l.span,
                        format!("`{}` is not an address:port", l.value),
                    )
                    .hint = Some("e.g. 127.0.0.1:8585 or 0.0.0.0:8585".into());
            }
            listen = l;
        }
    }
    let scheduler = obj
        .get("scheduler")
        .and_then(|n| dec.object(n, &fields::SCHEDULER));
    let missed_runs = scheduler
        .as_ref()
        .and_then(|sch| {
            dec.enum_value(sch, "missed_runs", MissedRuns::NAMES, MissedRuns::from_name)
        })
        .map_or(MissedRuns::RunOnce, |m| m.value);
    // The schema's ranges are positive, so the casts never wrap.
    let max_concurrent_runs = scheduler
        .as_ref()
        .and_then(|sch| dec.int(sch, "max_concurrent_runs"))
        .map(|n| n.value as u64);
    let run = match obj.get("run").and_then(|n| dec.object(n, &fields::RUN)) {
        Some(r) => RunSettings {
            memory_limit_mb: dec.int(&r, "memory_limit_mb").map(|n| n.value as u64),
            threads: dec.int(&r, "threads").map(|n| n.value as u64),
        },
        None => RunSettings::default(),
    };
    let (mut remote_extensions, mut remote_token_envs) = (Vec::new(), Vec::new());
    if let Some(ra) = obj
        .get("remote_attach")
        .and_then(|n| dec.object(n, &fields::REMOTE_ATTACH))
    {
        remote_extensions = dec.str_list(&ra, "extensions");
        for e in &remote_extensions {
            dec.named(
                Some(e.clone()),
                names::is_identifier,
                "extension name",
                NAME_RULE,
            );
        }
        remote_token_envs = dec.str_list(&ra, "token_envs");
        dec.env_vars(&remote_token_envs);
    }
    let mut extensions = None;
    if let Some(ext) = obj
        .get("extensions")
        .and_then(|n| dec.object(n, &fields::EXTENSIONS))
    {
        let directory = dec.str(&ext, "directory");
        let repository = dec.str(&ext, "repository");
        if let Some(repo) = &repository {
            if url_has_password(&repo.value) {
                let d = dec.diags.error(
                    Code::Env,
                    repo.span,
                    "`repository` has a password in the URL; secrets are never written in specs",
                );
                d.hint = Some("use a repository that needs no credentials in its URL".into());
                d.secret_line = true;
            }
        }
        extensions = Some(Box::new(ExtensionSettings {
            directory,
            repository,
        }));
    }
    Some(InstanceSpec {
        file,
        name: name?,
        description,
        timezone,
        data_dir,
        defaults,
        listen,
        server: Box::new(settings),
        missed_runs,
        max_concurrent_runs,
        run,
        remote_extensions,
        remote_token_envs,
        extensions,
    })
}

pub fn decode_source(
    dec: &mut Decoder,
    node: &Node,
    file: FileId,
    file_stem: &str,
) -> Option<SourceSpec> {
    let obj = dec.object(node, &fields::SOURCE)?;
    let name = match dec.str(&obj, "name") {
        Some(n) => dec.named(Some(n), names::is_source_name, "source name", SOURCE_RULE),
        None if names::is_source_name(file_stem) => {
            Some(Located::new(file_stem.to_owned(), obj.span.point()))
        }
        None => {
            dec.diags
                .error(
                    Code::InvalidName,
                    obj.span.point(),
                    format!("the file name `{file_stem}` is not a valid source name"),
                )
                .hint = Some(format!("rename the file or set `name:`; {SOURCE_RULE}"));
            None
        }
    };
    let planned = obj.get("type").and_then(|n| match &n.value {
        Value::Str(t) if PLANNED_SOURCE_TYPES.contains(&t.as_str()) => Some((t, n.span)),
        _ => None,
    });
    let source_type = match planned {
        Some((t, span)) => {
            dec.diags
                .error(
                    Code::InvalidValue,
                    span,
                    format!("source type `{t}` is not available in this version: it has no connector yet"),
                )
                .hint = Some(format!(
                "this version runs {} sources (docs/specs.md)",
                SourceType::NAMES.join(", ")
            ));
            None
        }
        None => dec.enum_value(&obj, "type", SourceType::NAMES, SourceType::from_name),
    };
    let description = dec.str(&obj, "description");
    let connection = obj.get("connection").cloned();
    if let (Some(conn), Some(t)) = (&connection, &source_type) {
        if let Some(schema) = fields::connection_object(t.value.as_str()) {
            decode_connection(dec, conn, schema);
        }
    }
    let schedule = dec.schedule(&obj, "schedule");
    let source_name = name.as_ref().map(|n| n.value.clone()).unwrap_or_default();
    let mut transforms: Vec<TransformSpec> = dec
        .list(&obj, "transforms")
        .iter()
        .filter_map(|t| decode_transform(dec, t, file, &source_name))
        .collect();
    // Kept for the whole run; a source may hold hundreds.
    transforms.shrink_to_fit();
    Some(SourceSpec {
        file,
        name: name?,
        source_type: source_type?,
        description,
        connection: connection?,
        schedule,
        transforms,
    })
}

/// Checks a connection mapping: keys of the type's object, `*_env` names, and no inline secrets.
fn decode_connection(dec: &mut Decoder, node: &Node, schema: &'static Object) {
    let mut secret_keys = Vec::new();
    if let Value::Map(entries) = &node.value {
        for (k, _) in entries {
            let env_key = format!("{}_env", k.name);
            if schema.field(&k.name).is_none() && schema.field(&env_key).is_some() {
                secret_keys.push(k.span);
                let d = dec.diags.error(
                    Code::Env,
                    k.span,
                    format!(
                        "secrets are never written in specs: `{}` is not accepted",
                        k.name
                    ),
                );
                d.hint = Some(format!(
                    "write `{env_key}: VAR_NAME` and export the secret in the environment variable VAR_NAME"
                ));
                d.secret_line = true;
            }
        }
    }
    let before = dec.diags.len();
    let Some(obj) = dec.object(node, schema) else {
        return;
    };
    // An inline secret was already reported above with a better message than "unknown key".
    dec.diags.retain_from(before, |d| {
        !(d.code == Code::UnknownKey && d.span.is_some_and(|s| secret_keys.contains(&s)))
    });
    for field in schema.fields {
        match field.ty {
            fields::Ty::Str => {
                if let Some(v) = dec.str(&obj, field.key) {
                    if url_has_password(&v.value) {
                        // The value is left out of the message: it holds the secret.
                        let d = dec.diags.error(
                            Code::Env,
                            v.span,
                            format!(
                                "`{}` has a password in the URL; secrets are never written in specs",
                                field.key
                            ),
                        );
                        d.hint = Some(
                            "remove `user:password@` from the URL and give the secret through the \
                             connection's `*_env` key"
                                .into(),
                        );
                        d.secret_line = true;
                    }
                }
            }
            fields::Ty::Int { .. } => {
                dec.int(&obj, field.key);
            }
            fields::Ty::Bool => {
                dec.bool(&obj, field.key);
            }
            fields::Ty::StrList => {
                dec.str_list(&obj, field.key);
            }
            fields::Ty::Enum(allowed) => {
                dec.word(&obj, field.key, allowed);
            }
            fields::Ty::EnvVar => {
                if let Some(v) = dec.str(&obj, field.key) {
                    dec.env_var_name(&v);
                }
            }
            fields::Ty::Object(inner) => {
                if let Some(n) = obj.get(field.key) {
                    decode_connection(dec, n, inner);
                }
            }
            _ => {}
        }
    }
}

/// `scheme://user:password@host…`: credentials inline in a URL.
fn url_has_password(text: &str) -> bool {
    let Some((_, rest)) = text.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

#[cfg(test)]
#[test]
fn passwords_in_urls_are_found() {
    assert!(url_has_password("https://me:hunter2@acme.atlassian.net"));
    assert!(!url_has_password("https://acme.atlassian.net/path?a=b@c:d"));
    assert!(!url_has_password("https://me@acme.atlassian.net"));
    assert!(!url_has_password("not a url: x@y"));
}

fn decode_transform(
    dec: &mut Decoder,
    node: &Node,
    file: FileId,
    source: &str,
) -> Option<TransformSpec> {
    let obj = dec.object(node, &fields::TRANSFORM)?;
    let name = dec.str(&obj, "name");
    let name = dec.named(name, names::is_identifier, "transform name", NAME_RULE);
    let description = dec.str(&obj, "description");
    let materialized = dec
        .enum_value(
            &obj,
            "materialized",
            Materialized::NAMES,
            Materialized::from_name,
        )
        .map_or(Materialized::Table, |m| m.value);
    let sql = dec.str(&obj, "sql");
    let columns = dec.str_map(&obj, "columns");
    let checks = dec.checks(&obj, "checks");
    let tags = dec.str_list(&obj, "tags");
    Some(TransformSpec {
        file,
        span: obj.span,
        source: source.to_owned(),
        name: name?,
        description,
        materialized,
        sql: sql?,
        columns,
        checks,
        tags,
    })
}

/// `descriptions:` in a registry file: documentation of a table registered in any registry file,
/// filling what the table's own spec leaves out (docs/specs.md).
#[derive(Debug)]
pub struct TableDocsSpec {
    pub file: FileId,
    /// The id of the table described.
    pub table: Located<String>,
    pub description: Text,
    /// Descriptions only: unlike a table's `columns`, not a contract on the data.
    pub columns: Docs,
}

pub fn decode_registry(
    dec: &mut Decoder,
    node: &Node,
    file: FileId,
) -> (Vec<TableSpec>, Vec<TableDocsSpec>) {
    let Some(obj) = dec.object(node, &fields::REGISTRY) else {
        return (Vec::new(), Vec::new());
    };
    let tables = dec
        .list(&obj, "tables")
        .iter()
        .filter_map(|t| decode_table(dec, t, file))
        .collect();
    let docs = dec
        .list(&obj, "descriptions")
        .iter()
        .filter_map(|d| {
            let obj = dec.object(d, &fields::TABLE_DOCS)?;
            Some(TableDocsSpec {
                file,
                table: dec.str(&obj, "table")?,
                description: dec.str(&obj, "description"),
                columns: dec.str_map(&obj, "columns"),
            })
        })
        .collect();
    (tables, docs)
}

fn decode_table(dec: &mut Decoder, node: &Node, file: FileId) -> Option<TableSpec> {
    let obj = dec.object(node, &fields::TABLE)?;
    let source = dec.str(&obj, "source");
    let bucket = dec.str(&obj, "bucket");
    let source_table = dec.str(&obj, "source_table");
    let query_mode = dec.enum_value(&obj, "query_mode", QueryMode::NAMES, QueryMode::from_name);
    let query = dec.str(&obj, "query");
    let name = match dec.str(&obj, "name") {
        Some(n) => dec.named(Some(n), names::is_identifier, "table name", NAME_RULE),
        None => match &source_table {
            Some(st) if names::is_identifier(&st.value) => Some(st.clone()),
            Some(st) => {
                dec.diags
                    .error(
                        Code::InvalidName,
                        st.span,
                        format!(
                            "`{}` cannot be a view name, and the table has no `name`",
                            st.value
                        ),
                    )
                    .hint = Some(format!(
                    "add `name:` for the view in analytics; {NAME_RULE}"
                ));
                None
            }
            None => {
                dec.diags
                    .error(
                        Code::MissingKey,
                        obj.span.point(),
                        "table has neither `name` nor `source_table`",
                    )
                    .hint = Some("add `source_table:` (the table at the source) or `name:`".into());
                None
            }
        },
    };
    let id = match dec.str(&obj, "id") {
        Some(id) => dec.named(
            Some(id),
            names::is_table_id,
            "table id",
            "use letters, digits, `_`, `.` and `-`",
        ),
        None => {
            let prefix = bucket.as_ref().or(source.as_ref()).map(|b| b.value.clone());
            let base = source_table
                .as_ref()
                .or(name.as_ref())
                .map(|s| s.value.clone());
            match (prefix, base) {
                (Some(p), Some(b)) => Some(Located::new(format!("{p}.{b}"), obj.span.point())),
                _ => None,
            }
        }
    };
    let schedule = dec.schedule(&obj, "schedule");
    let sync = match obj.get("sync").and_then(|n| dec.object(n, &fields::SYNC)) {
        Some(s) => SyncSpec {
            span: Some(s.span),
            mode: dec.enum_value(&s, "mode", SyncMode::NAMES, SyncMode::from_name),
            cursor: dec.str(&s, "cursor"),
            primary_key: dec.str_list(&s, "primary_key"),
            window_days: dec.int(&s, "window_days").map(|w| w.value as u32),
            partition_by: dec.str(&s, "partition_by"),
            granularity: dec
                .enum_value(
                    &s,
                    "granularity",
                    Granularity::NAMES,
                    Granularity::from_name,
                )
                .map(|g| g.value),
        },
        None => SyncSpec::default(),
    };
    let filters = dec
        .list(&obj, "where")
        .iter()
        .filter_map(|f| {
            let o = dec.object(f, &fields::WHERE)?;
            let column = dec.str(&o, "column");
            let operator = dec.enum_value(&o, "operator", Operator::NAMES, Operator::from_name);
            let values = dec.scalar_list(&o, "values");
            Some(FilterSpec {
                span: o.span,
                column: column?,
                operator: operator?.value,
                values,
            })
        })
        .collect();
    let description = dec.str(&obj, "description");
    let columns = dec.str_map(&obj, "columns");
    let schema_changes = dec
        .enum_value(
            &obj,
            "schema_changes",
            SchemaChanges::NAMES,
            SchemaChanges::from_name,
        )
        .map(|s| s.value);
    let access = dec.str_list(&obj, "access");
    for g in &access {
        dec.named(
            Some(g.clone()),
            names::is_group,
            "group name",
            "use letters, digits, `_`, `.` and `-`",
        );
    }
    let tags = dec.str_list(&obj, "tags");
    let checks = dec.checks(&obj, "checks");
    let maximum_bytes_billed = dec.int(&obj, "maximum_bytes_billed");
    Some(TableSpec {
        file,
        span: obj.span,
        id: id?,
        source: source?,
        bucket,
        source_table,
        name: name?,
        query_mode,
        query,
        schedule,
        sync,
        filters,
        description,
        columns,
        schema_changes,
        access,
        tags,
        checks,
        maximum_bytes_billed,
    })
}

pub fn decode_metric(
    dec: &mut Decoder,
    node: &Node,
    file: FileId,
    file_stem: &str,
    folder: &str,
) -> Option<MetricSpec> {
    let obj = dec.object(node, &fields::METRIC)?;
    let metric_rule = "use lowercase letters, digits, `_` and `-`";
    let default_here = |s: &str| Located::new(s.to_owned(), obj.span.point());
    let name = dec
        .str(&obj, "name")
        .unwrap_or_else(|| default_here(file_stem));
    let name = dec.named(
        Some(name),
        names::is_metric_name,
        "metric name",
        metric_rule,
    );
    let category = match dec.str(&obj, "category") {
        Some(c) => Some(c),
        None if folder.is_empty() => {
            dec.diags
                .error(
                    Code::Layout,
                    obj.span.point(),
                    "metric file outside a category folder and without `category`",
                )
                .hint = Some("move it to metrics/<category>/, or add `category:`".into());
            None
        }
        None => Some(default_here(folder)),
    };
    let category = dec.named(
        category,
        names::is_metric_name,
        "metric category",
        metric_rule,
    );
    let metric = MetricSpec {
        file,
        span: obj.span,
        id: String::new(),
        display_name: dec.str(&obj, "display_name"),
        description: dec.str(&obj, "description"),
        owner: dec.str(&obj, "owner"),
        metric_type: dec
            .enum_value(&obj, "type", MetricType::NAMES, MetricType::from_name)
            .map(|t| t.value),
        unit: dec.str(&obj, "unit"),
        grain: dec
            .word_list(&obj, "grain", Grain::NAMES)
            .into_iter()
            .filter_map(|g| Grain::from_name(&g.value).map(|v| Located::new(v, g.span)))
            .collect(),
        time_column: dec.str(&obj, "time_column"),
        tables: dec.str_list(&obj, "tables"),
        dimensions: dec.str_list(&obj, "dimensions"),
        synonyms: dec.str_list(&obj, "synonyms"),
        notes: dec.str_list(&obj, "notes"),
        sql: dec.str(&obj, "sql")?,
        variants: dec.str_map(&obj, "variants"),
        name: name?,
        category: category?,
    };
    Some(MetricSpec {
        id: format!("{}/{}", metric.category.value, metric.name.value),
        ..metric
    })
}

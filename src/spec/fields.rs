//! The schema of every spec file, declared once as data.
//!
//! These tables drive three things that must never disagree: the decoder's unknown-key and missing-key
//! checks (with "did you mean"), `pipeline schema` (JSON Schema for editors), and the test that checks
//! `docs/specs.md` documents every key. Adding a key means adding it here first.

/// The type a key accepts.
#[derive(Debug)]
pub enum Ty {
    Str,
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    /// A list of strings.
    StrList,
    /// A list of strings or numbers (filter values).
    ScalarList,
    /// A mapping of names to strings (column docs, SQL variants).
    StrMap,
    Enum(&'static [&'static str]),
    EnumList(&'static [&'static str]),
    Object(&'static Object),
    List(&'static Object),
    /// 5-field cron, `@hourly`-style macros, `every 15m`, `daily 05:00,17:00`.
    Schedule,
    /// An IANA time zone name.
    Timezone,
    /// The *name* of an environment variable (secrets are never written in specs).
    EnvVar,
    /// SQL text (a single SELECT; for metrics a minijinja template).
    Sql,
    /// Data checks: a list of `{not_null: col}`, `{unique: col}`, `{accepted_values: {column, values}}`.
    Checks,
    /// A source's connection: the object depends on the source `type` (see [`connection_object`]).
    Connection,
}

#[derive(Debug)]
pub struct Field {
    pub key: &'static str,
    pub ty: Ty,
    pub required: bool,
    pub doc: &'static str,
}

#[derive(Debug)]
pub struct Object {
    /// What the object is called in messages ("table", "source connection (csv)").
    pub name: &'static str,
    pub doc: &'static str,
    pub fields: &'static [Field],
}

impl Object {
    pub fn field(&self, key: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.key == key)
    }

    pub fn keys(&self) -> Vec<&'static str> {
        self.fields.iter().map(|f| f.key).collect()
    }
}

const fn f(key: &'static str, ty: Ty, doc: &'static str) -> Field {
    Field {
        key,
        ty,
        required: false,
        doc,
    }
}

const fn req(key: &'static str, ty: Ty, doc: &'static str) -> Field {
    Field {
        key,
        ty,
        required: true,
        doc,
    }
}

pub const QUERY_MODES: &[&str] = &["local", "remote", "materialized"];
/// Only types with a connector (see `model::SourceType`); planned ones are not in the schema.
pub const SOURCE_TYPES: &[&str] = &[
    "csv", "parquet", "duckdb", "keboola", "postgres", "mysql", "bigquery", "jira",
];
pub const SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];
pub const SYNC_MODES: &[&str] = &["full", "incremental", "partitioned"];
pub const GRANULARITIES: &[&str] = &["day", "month", "year"];
pub const GRAINS: &[&str] = &["day", "week", "month", "quarter", "year"];
pub const OPERATORS: &[&str] = &["eq", "ne", "gt", "ge", "lt", "le", "in", "not_in"];
pub const MATERIALIZATIONS: &[&str] = &["table", "view"];
pub const SCHEMA_CHANGES: &[&str] = &["additive", "freeze", "evolve"];
pub const METRIC_TYPES: &[&str] = &[
    "sum",
    "count",
    "count_distinct",
    "average",
    "ratio",
    "custom",
];
pub const CHECK_KINDS: &[&str] = &["not_null", "unique", "accepted_values"];

// ---------------------------------------------------------------- config/instance.yaml

pub static DEFAULTS: Object = Object {
    name: "defaults",
    doc: "Defaults for every source and table that does not set its own.",
    fields: &[
        f("schedule", Ty::Schedule, "Sync schedule of tables without one of their own or of their source. Default: \"0 */6 * * *\"."),
        f("query_mode", Ty::Enum(QUERY_MODES), "Query mode of tables that do not set one. Default: local."),
        f("concurrency", Ty::Int { min: 1, max: 256 }, "How many tasks run at once. Default: 4."),
        f("schema_changes", Ty::Enum(SCHEMA_CHANGES), "Schema contract of tables that set none: additive (new columns and widened types only), freeze (no change), evolve (any change). Default: additive."),
    ],
};

pub const PUBLIC_ROUTES: &[&str] = &["health", "metrics"];
pub const MISSED_RUNS: &[&str] = &["run_once", "skip"];

pub static SERVER: Object = Object {
    name: "server",
    doc: "The daemon's HTTP server.",
    fields: &[
        f(
            "listen",
            Ty::Str,
            "Address and port to listen on. Default: 127.0.0.1:8585.",
        ),
        f(
            "public",
            Ty::EnumList(PUBLIC_ROUTES),
            "Routes served without a bearer token: health (GET /health), metrics (GET /metrics). \
             Default: [health]. Every /api route always needs a token.",
        ),
        f(
            "query_max_rows",
            Ty::Int {
                min: 1,
                max: 10_000_000,
            },
            "Most rows POST /api/query returns; the answer says when it was cut. Default: 10000.",
        ),
        f(
            "query_timeout_seconds",
            Ty::Int {
                min: 1,
                max: 86_400,
            },
            "POST /api/query is stopped after this long (its process is killed, its memory freed). \
             Default: 30.",
        ),
        f(
            "query_memory_limit_mb",
            Ty::Int {
                min: 64,
                max: 1_048_576,
            },
            "Memory one POST /api/query may use, in MiB: a hard limit on its process (DuckDB's own \
             memory_limit is 3/4 of it). Default: 1024, less on a host with under 8 GiB of RAM.",
        ),
        f(
            "query_threads",
            Ty::Int { min: 1, max: 256 },
            "DuckDB threads per POST /api/query. Default: half the CPU cores, 1 to 4.",
        ),
        f(
            "query_max_bytes",
            Ty::Int {
                min: 1_024,
                max: 1_073_741_824,
            },
            "Most bytes of rows one POST /api/query answer carries; the answer says when it was cut. \
             Default: 16777216 (16 MiB).",
        ),
        f(
            "max_concurrent_queries",
            Ty::Int { min: 1, max: 256 },
            "POST /api/query requests answered at once; more get 429 with Retry-After. Default: 4, \
             fewer when that many queries at query_memory_limit_mb would not fit in half the RAM.",
        ),
        f(
            "max_concurrent_queries_per_token",
            Ty::Int { min: 1, max: 256 },
            "POST /api/query requests answered at once for one token; more get 429. Default: 2 (at \
             most max_concurrent_queries).",
        ),
        f(
            "header_read_timeout_seconds",
            Ty::Int { min: 1, max: 3_600 },
            "A connection that has not sent a whole request header this long after it opened, or \
             after its previous answer, is closed. Default: 10.",
        ),
        f(
            "idle_timeout_seconds",
            Ty::Int { min: 1, max: 86_400 },
            "A connection on which no byte moves this long while no request is being worked on \
             (a stalled upload, a client that stops reading) is closed. Default: 60.",
        ),
        f(
            "max_connections",
            Ty::Int {
                min: 1,
                max: 1_000_000,
            },
            "Open HTTP connections at most; more are answered 503 and closed at once. Never more \
             than the open-file limit allows. Default: 512.",
        ),
    ],
};

pub static SCHEDULER: Object = Object {
    name: "scheduler",
    doc: "How `pipeline daemon` runs the schedules.",
    fields: &[
        f(
            "missed_runs",
            Ty::Enum(MISSED_RUNS),
            "Tables whose scheduled time passed while the daemon was down: run_once (at start, once \
             however many were missed) or skip (wait for the next time). Default: run_once.",
        ),
        f(
            "max_concurrent_runs",
            Ty::Int { min: 1, max: 64 },
            "Runs the daemon works on at once (scheduled, API, watcher, push); more wait in line, \
             in the order they came, and none is dropped. Default: 2.",
        ),
    ],
};

pub static RUN: Object = Object {
    name: "run",
    doc: "Resources of each run's DuckDB engines (extract, rebuild, publish, transforms).",
    fields: &[
        f(
            "memory_limit_mb",
            Ty::Int {
                min: 64,
                max: 16_777_216,
            },
            "DuckDB memory_limit of each engine a run opens, in MiB; beyond it DuckDB spills to \
             data/tmp or fails the task. Default: a quarter of the RAM (two runs at once take half), \
             at least 256.",
        ),
        f(
            "threads",
            Ty::Int { min: 1, max: 256 },
            "DuckDB threads of each engine a run opens. Default: half the CPU cores, at least 1.",
        ),
    ],
};

pub static REMOTE_ATTACH: Object = Object {
    name: "remote_attach",
    doc: "What extract.duckdb files may ATTACH at rebuild and query time (allowlists).",
    fields: &[
        f(
            "extensions",
            Ty::StrList,
            "DuckDB extensions an extract's `_remote_attach` rows may use.",
        ),
        f(
            "token_envs",
            Ty::StrList,
            "Environment variables an extract's `_remote_attach` rows may read a token from.",
        ),
    ],
};

pub static EXTENSIONS: Object = Object {
    name: "extensions",
    doc: "Where the DuckDB extensions that sources need (postgres, mysql) are installed.",
    fields: &[
        f(
            "directory",
            Ty::Str,
            "DuckDB extension directory, relative to the instance root; `scripts/fetch-extensions \
             --dir DIR` installs the official builds there. Default: DuckDB's own (~/.duckdb/extensions).",
        ),
        f(
            "repository",
            Ty::Str,
            "Repository to install a missing extension from (`INSTALL … FROM`): a URL or a local \
             directory in DuckDB's repository layout. Default: none (a missing extension is an error).",
        ),
    ],
};

pub static INSTANCE: Object = Object {
    name: "instance config",
    doc: "config/instance.yaml: the instance's settings.",
    fields: &[
        req("name", Ty::Str, "Human name of the instance, shown in status and the API."),
        f("description", Ty::Str, "What this instance is for."),
        f("timezone", Ty::Timezone, "IANA time zone the schedules run in. Default: UTC."),
        f("data_dir", Ty::Str, "Where extracts, analytics and state live, relative to the instance root. Default: data."),
        f("defaults", Ty::Object(&DEFAULTS), "Defaults for sources and tables."),
        f("server", Ty::Object(&SERVER), "HTTP server settings for `pipeline daemon`."),
        f("scheduler", Ty::Object(&SCHEDULER), "Scheduling settings for `pipeline daemon`."),
        f("run", Ty::Object(&RUN), "Memory and threads of each run's DuckDB engines."),
        f("remote_attach", Ty::Object(&REMOTE_ATTACH), "Allowlists for remote attachments."),
        f("extensions", Ty::Object(&EXTENSIONS), "Where DuckDB extensions are installed and come from."),
    ],
};

// ---------------------------------------------------------------- pipelines/<source>.yaml

pub static CSV_OPTIONS: Object = Object {
    name: "csv options",
    doc: "Options passed to DuckDB's CSV reader; anything not set is sniffed.",
    fields: &[
        f("delim", Ty::Str, "Column delimiter, e.g. \";\"."),
        f(
            "header",
            Ty::Bool,
            "Whether the first line holds column names.",
        ),
        f("quote", Ty::Str, "Quote character."),
        f("escape", Ty::Str, "Escape character."),
        f("nullstr", Ty::Str, "String that means NULL."),
        f(
            "skip",
            Ty::Int {
                min: 0,
                max: 1_000_000,
            },
            "Lines to skip at the start of each file.",
        ),
        f("dateformat", Ty::Str, "strptime format of DATE columns."),
        f(
            "timestampformat",
            Ty::Str,
            "strptime format of TIMESTAMP columns.",
        ),
        f("all_varchar", Ty::Bool, "Read every column as text."),
        f(
            "sample_size",
            Ty::Int {
                min: -1,
                max: i64::MAX,
            },
            "Rows sampled to detect types (-1: all).",
        ),
        f(
            "ignore_errors",
            Ty::Bool,
            "Skip rows that do not parse instead of failing.",
        ),
    ],
};

pub static CONN_CSV: Object = Object {
    name: "csv connection",
    doc: "CSV files: one table per file (the file stem is the source_table).",
    fields: &[
        req(
            "path",
            Ty::Str,
            "A CSV file, a directory of CSV files, or a glob, relative to the instance root.",
        ),
        f("options", Ty::Object(&CSV_OPTIONS), "CSV reader options."),
    ],
};

pub static CONN_PARQUET: Object = Object {
    name: "parquet connection",
    doc: "Parquet files: one table per file or per directory of files.",
    fields: &[
        req(
            "path",
            Ty::Str,
            "A Parquet file, a directory or a glob, relative to the instance root.",
        ),
        f(
            "hive_partitioning",
            Ty::Bool,
            "Read key=value directory names as columns.",
        ),
    ],
};

pub static CONN_DUCKDB: Object = Object {
    name: "duckdb connection",
    doc: "Tables of another DuckDB database file.",
    fields: &[req(
        "path",
        Ty::Str,
        "The .duckdb file, relative to the instance root.",
    )],
};

pub static CONN_KEBOOLA: Object = Object {
    name: "keboola connection",
    doc: "A Keboola Storage project.",
    fields: &[
        req(
            "url",
            Ty::Str,
            "Stack URL, e.g. https://connection.keboola.com.",
        ),
        req(
            "token_env",
            Ty::EnvVar,
            "Environment variable holding the Storage API token.",
        ),
        f(
            "project_id",
            Ty::Int {
                min: 1,
                max: i64::MAX,
            },
            "Project id (checked against the token).",
        ),
    ],
};

pub static CONN_POSTGRES: Object = Object {
    name: "postgres connection",
    doc: "A PostgreSQL database, read through DuckDB's postgres extension.",
    fields: &[
        req("host", Ty::Str, "Host name or address of the server."),
        f(
            "port",
            Ty::Int {
                min: 1,
                max: 65_535,
            },
            "TCP port. Default: 5432.",
        ),
        req("database", Ty::Str, "Database name."),
        req("user", Ty::Str, "User to connect as."),
        f(
            "password_env",
            Ty::EnvVar,
            "Environment variable holding the password; none: connect without one.",
        ),
        f(
            "sslmode",
            Ty::Enum(SSL_MODES),
            "libpq sslmode: disable, allow, prefer (default), require, verify-ca, verify-full.",
        ),
    ],
};

pub static CONN_MYSQL: Object = Object {
    name: "mysql connection",
    doc: "A MySQL or MariaDB database, read through DuckDB's mysql extension.",
    fields: &[
        req("host", Ty::Str, "Host name or address of the server."),
        f(
            "port",
            Ty::Int {
                min: 1,
                max: 65_535,
            },
            "TCP port. Default: 3306.",
        ),
        req("database", Ty::Str, "Database (schema) name."),
        req("user", Ty::Str, "User to connect as."),
        f(
            "password_env",
            Ty::EnvVar,
            "Environment variable holding the password; none: connect without one.",
        ),
    ],
};

pub static CONN_BIGQUERY: Object = Object {
    name: "bigquery connection",
    doc: "A Google BigQuery project, over the REST API v2 with a service-account key.",
    fields: &[
        f(
            "project_id",
            Ty::Str,
            "The project holding the datasets; default: the key's project_id.",
        ),
        f(
            "billing_project",
            Ty::Str,
            "The project that runs and pays for query jobs; default: project_id.",
        ),
        f(
            "location",
            Ty::Str,
            "Where jobs run (US, EU, europe-west1…); default: where the data is.",
        ),
        f(
            "credentials_file",
            Ty::Str,
            "A service-account key file (JSON), relative to the instance root. Keep it out of git.",
        ),
        f(
            "credentials_env",
            Ty::EnvVar,
            "Environment variable holding the service-account key's JSON (instead of credentials_file).",
        ),
        f(
            "endpoint",
            Ty::Str,
            "REST API root; default https://bigquery.googleapis.com (an emulator: http://127.0.0.1:PORT).",
        ),
        f(
            "page_size",
            Ty::Int {
                min: 1,
                max: 100_000,
            },
            "Rows per page read; default: BigQuery's (about 10 MB per page).",
        ),
    ],
};

pub static CONN_JIRA: Object = Object {
    name: "jira connection",
    doc: "A Jira Cloud site: tables produced by the connector from webhooks, a backfill and a consistency check.",
    fields: &[
        req(
            "url",
            Ty::Str,
            "The site, e.g. https://acme.atlassian.net.",
        ),
        f(
            "email",
            Ty::Str,
            "The Atlassian account e-mail for basic auth (or email_env).",
        ),
        f(
            "email_env",
            Ty::EnvVar,
            "Environment variable holding the account e-mail (instead of email).",
        ),
        req(
            "token_env",
            Ty::EnvVar,
            "Environment variable holding the Atlassian API token.",
        ),
        f(
            "webhook_secret_env",
            Ty::EnvVar,
            "Environment variable holding the webhook secret; without it every webhook is refused (401).",
        ),
        f(
            "jql",
            Ty::Str,
            "Which issues a backfill and the consistency check read. Default: project IS NOT EMPTY (every issue visible).",
        ),
        f(
            "promote",
            Ty::StrList,
            "Custom fields (readable names or ids) that also get a column of their own in `issues`.",
        ),
    ],
};

/// The six tables a `type: jira` source produces: a registry entry's `source_table` names one.
pub const JIRA_TABLES: &[&str] = &[
    "issues",
    "comments",
    "changelog",
    "issuelinks",
    "remote_links",
    "attachments",
];

/// The connection object for a source type.
pub fn connection_object(source_type: &str) -> Option<&'static Object> {
    Some(match source_type {
        "csv" => &CONN_CSV,
        "parquet" => &CONN_PARQUET,
        "duckdb" => &CONN_DUCKDB,
        "keboola" => &CONN_KEBOOLA,
        "postgres" => &CONN_POSTGRES,
        "mysql" => &CONN_MYSQL,
        "bigquery" => &CONN_BIGQUERY,
        "jira" => &CONN_JIRA,
        _ => return None,
    })
}

pub static TRANSFORM: Object = Object {
    name: "transform",
    doc: "A SQL model built in analytics.duckdb after the rebuild.",
    fields: &[
        req(
            "name",
            Ty::Str,
            "Name of the table or view created in analytics; unique across tables and transforms.",
        ),
        f("description", Ty::Str, "What one row means."),
        f(
            "materialized",
            Ty::Enum(MATERIALIZATIONS),
            "table (default) or view.",
        ),
        req(
            "sql",
            Ty::Sql,
            "One SELECT statement; may read registered tables and other transforms.",
        ),
        f("columns", Ty::StrMap, "Column descriptions."),
        f(
            "checks",
            Ty::Checks,
            "Data checks run after the build; a failure fails the run.",
        ),
        f("tags", Ty::StrList, "Free-form labels."),
    ],
};

pub static SOURCE: Object = Object {
    name: "source",
    doc: "pipelines/<source>.yaml: one data source, how to reach it and its SQL transforms.",
    fields: &[
        f(
            "name",
            Ty::Str,
            "Source name; default: the file stem. Unique; [a-z0-9_]+.",
        ),
        req("type", Ty::Enum(SOURCE_TYPES), "Source type."),
        f("description", Ty::Str, "What the source is."),
        req(
            "connection",
            Ty::Connection,
            "How to reach the source; keys depend on `type`. Secrets only as `*_env: VAR_NAME`.",
        ),
        f(
            "schedule",
            Ty::Schedule,
            "Sync schedule of this source's tables (tables may override).",
        ),
        f(
            "transforms",
            Ty::List(&TRANSFORM),
            "SQL models built after the rebuild.",
        ),
    ],
};

// ---------------------------------------------------------------- registry/*.yaml

pub static SYNC: Object = Object {
    name: "sync",
    doc: "How a table is synced.",
    fields: &[
        f(
            "mode",
            Ty::Enum(SYNC_MODES),
            "full (default) | incremental | partitioned.",
        ),
        f(
            "cursor",
            Ty::Str,
            "Column whose growth marks new or changed rows (incremental).",
        ),
        f(
            "primary_key",
            Ty::StrList,
            "Columns identifying a row; incremental rows are merged on it.",
        ),
        f(
            "window_days",
            Ty::Int {
                min: 0,
                max: 36_500,
            },
            "Re-read this many days before the cursor (late-arriving rows).",
        ),
        f(
            "partition_by",
            Ty::Str,
            "Date column the Parquet output is partitioned by (partitioned).",
        ),
        f(
            "granularity",
            Ty::Enum(GRANULARITIES),
            "Partition size: day | month (default) | year.",
        ),
    ],
};

pub static WHERE: Object = Object {
    name: "filter",
    doc: "A source-side row filter.",
    fields: &[
        req("column", Ty::Str, "Column to filter on."),
        req("operator", Ty::Enum(OPERATORS), "Comparison."),
        req(
            "values",
            Ty::ScalarList,
            "Values to compare with (one for eq/ne/gt/ge/lt/le).",
        ),
    ],
};

pub static TABLE: Object = Object {
    name: "table",
    doc: "A table to sync.",
    fields: &[
        f("id", Ty::Str, "Unique, stable id; default \"<bucket>.<source_table>\" (or \"<source>.<source_table>\")."),
        req("source", Ty::Str, "Name of the source (pipelines/) the table comes from."),
        f("bucket", Ty::Str, "Keboola bucket, BigQuery dataset, database schema or folder."),
        f("source_table", Ty::Str, "Table name at the source; required unless query_mode is materialized."),
        f("name", Ty::Str, "View name in analytics; default: source_table. Unique."),
        f("query_mode", Ty::Enum(QUERY_MODES), "local: extract to Parquet (every source type) | remote: attach, queries go to the source | materialized: run `query` at the source, store the result. remote and materialized need a duckdb source, a postgres source, a mysql source or a bigquery source."),
        f("query", Ty::Sql, "SQL run at the source (query_mode: materialized)."),
        f("schedule", Ty::Schedule, "Sync schedule; overrides the source's."),
        f("sync", Ty::Object(&SYNC), "Full or incremental sync settings."),
        f("where", Ty::List(&WHERE), "Source-side filters, all of which must hold."),
        f("description", Ty::Str, "What one row means."),
        f("columns", Ty::StrMap, "Column descriptions; every extract checks that these columns exist."),
        f("schema_changes", Ty::Enum(SCHEMA_CHANGES), "Which changes of the published schema a new extract may make: additive (new columns and widened types), freeze (none), evolve (any). A refused change fails the extract and keeps the previous data. Default: defaults.schema_changes."),
        f("access", Ty::StrList, "Groups allowed to read the table; default: all authenticated users."),
        f("tags", Ty::StrList, "Free-form labels."),
        f("checks", Ty::Checks, "Data checks run after each sync."),
        f("maximum_bytes_billed", Ty::Int { min: 1, max: i64::MAX }, "BigQuery sources: the most bytes one query of this table may bill. A dry run refuses a larger query before it runs, and BigQuery enforces it on the job."),
    ],
};

pub static TABLE_DOCS: Object = Object {
    name: "table description",
    doc: "Documentation of a table registered elsewhere; the table's own spec wins.",
    fields: &[
        req("table", Ty::Str, "Id of the registered table described."),
        f("description", Ty::Str, "What one row means; used when the table's own spec has none."),
        f("columns", Ty::StrMap, "Column descriptions, for columns the table's own spec does not document; documentation only, not checked against the data."),
    ],
};

pub static REGISTRY: Object = Object {
    name: "registry file",
    doc: "registry/<anything>.yaml: a list of tables, and descriptions of tables.",
    fields: &[
        req(
            "tables",
            Ty::List(&TABLE),
            "The tables registered by this file (may be empty).",
        ),
        f(
            "descriptions",
            Ty::List(&TABLE_DOCS),
            "Descriptions of tables registered in any registry file (`pipeline catalog import` writes them).",
        ),
    ],
};

// ---------------------------------------------------------------- metrics/<category>/<metric>.yaml

pub static METRIC: Object = Object {
    name: "metric",
    doc: "metrics/<category>/<metric>.yaml: a canonical business metric.",
    fields: &[
        f(
            "name",
            Ty::Str,
            "Metric name; default: the file stem. The id is \"<category>/<name>\".",
        ),
        f(
            "category",
            Ty::Str,
            "Category; default: the folder under metrics/.",
        ),
        f("display_name", Ty::Str, "Human name."),
        req("description", Ty::Str, "What the number means, precisely."),
        f(
            "owner",
            Ty::Str,
            "Who answers questions about it (e-mail or team).",
        ),
        f("type", Ty::Enum(METRIC_TYPES), "Aggregation kind."),
        f("unit", Ty::Str, "Unit of the value (USD, %, hours…)."),
        f(
            "grain",
            Ty::EnumList(GRAINS),
            "Time grains the metric can be computed at.",
        ),
        f("time_column", Ty::Str, "Column the grain truncates."),
        f(
            "tables",
            Ty::StrList,
            "Tables the metric reads; default: the tables its SQL reads.",
        ),
        f(
            "dimensions",
            Ty::StrList,
            "Columns it can be broken down by.",
        ),
        f("synonyms", Ty::StrList, "Other names people use for it."),
        f("notes", Ty::StrList, "Caveats worth knowing."),
        req(
            "sql",
            Ty::Sql,
            "A minijinja template rendering to one SELECT returning `period` and `value`.",
        ),
        f(
            "variants",
            Ty::StrMap,
            "Named alternative SQL, e.g. by a dimension.",
        ),
    ],
};

/// Every top-level object, with the name used by `pipeline schema KIND`.
pub fn spec_kinds() -> [(&'static str, &'static Object); 4] {
    [
        ("instance", &INSTANCE),
        ("source", &SOURCE),
        ("registry", &REGISTRY),
        ("metric", &METRIC),
    ]
}

/// Every object reachable from the top-level kinds, for documentation checks.
pub fn all_objects() -> Vec<&'static Object> {
    vec![
        &INSTANCE,
        &DEFAULTS,
        &SERVER,
        &SCHEDULER,
        &RUN,
        &REMOTE_ATTACH,
        &EXTENSIONS,
        &SOURCE,
        &CONN_CSV,
        &CSV_OPTIONS,
        &CONN_PARQUET,
        &CONN_DUCKDB,
        &CONN_KEBOOLA,
        &CONN_POSTGRES,
        &CONN_MYSQL,
        &CONN_BIGQUERY,
        &CONN_JIRA,
        &TRANSFORM,
        &REGISTRY,
        &TABLE,
        &SYNC,
        &WHERE,
        &TABLE_DOCS,
        &METRIC,
    ]
}

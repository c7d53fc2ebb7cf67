//! Registered objects as documents: one canonical JSON document per source, table, transform and
//! metric, with every default resolved.
//!
//! The desired side is built from the specs; the recorded side is the same document as stored in
//! `system.duckdb` by the last apply. Diffing two documents field by field is the whole of "what
//! changed", so the document must contain everything that matters (resolved query mode and schedule,
//! the tables a transform reads…) and nothing that does not (comments, key order, file layout).

use crate::spec::model::{
    CheckKind, CheckSpec, Docs, InstanceSpec, SchemaChanges, SourceSpec, TableSpec, Text,
};
use crate::spec::validate::Analysis;
use crate::spec::Specs;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The instance's settings (`config/instance.yaml`): one object, id `instance`.
    Settings,
    Source,
    Table,
    Transform,
    Metric,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Settings,
        Kind::Source,
        Kind::Table,
        Kind::Transform,
        Kind::Metric,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Settings => "settings",
            Kind::Source => "source",
            Kind::Table => "table",
            Kind::Transform => "transform",
            Kind::Metric => "metric",
        }
    }

    /// Fields whose change forces the object to be replaced: its data re-extracted from scratch.
    pub fn replace_fields(self) -> &'static [&'static str] {
        match self {
            // A different connection or type may point at different data.
            Kind::Source => &["type", "connection"],
            Kind::Table => &[
                "source",
                "source_type",
                "bucket",
                "source_table",
                "query_mode",
                "query",
                "sync_mode",
                "cursor",
                "primary_key",
                "partition_by",
                "granularity",
                "filters",
                // Accepting another schema contract starts it again from the data as it is now.
                "schema_changes",
            ],
            Kind::Settings | Kind::Transform | Kind::Metric => &[],
        }
    }

    /// Fields of a table whose change needs its source's views rebuilt (but no new data).
    pub fn rebuild_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Table => &["name", "description", "columns", "column_docs"],
            _ => &[],
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to an object: plans propose it, the state records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    /// Delete and create again: the change forces its data to be rebuilt from scratch.
    Replace,
    Delete,
}

impl Action {
    /// Terraform's markers, which many readers already know.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
}

/// One registered object.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Object {
    pub kind: Kind,
    pub id: String,
    /// The spec file it comes from, relative to the instance root.
    pub file: String,
    /// Canonical fields in display order; absent means unset (null, empty list, empty map).
    /// Shared: a plan's recorded side is often the desired side again (a no-op plan clones a
    /// thousand objects), and nothing changes fields after they are built but tests.
    fields: std::sync::Arc<Map<String, Value>>,
    /// [`Object::hash`], computed once: plans compare and digest thousands of objects.
    #[serde(skip)]
    hash: std::sync::OnceLock<String>,
}

impl PartialEq for Object {
    fn eq(&self, other: &Self) -> bool {
        (self.kind, &self.id, &self.file, &self.fields)
            == (other.kind, &other.id, &other.file, &other.fields)
    }
}

impl Object {
    pub fn new(kind: Kind, id: String, file: String, fields: Map<String, Value>) -> Object {
        Object {
            kind,
            id,
            file,
            fields: std::sync::Arc::new(fields),
            hash: std::sync::OnceLock::new(),
        }
    }

    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// Mutable fields; forgets the cached hash.
    pub fn fields_mut(&mut self) -> &mut Map<String, Value> {
        self.hash = std::sync::OnceLock::new();
        std::sync::Arc::make_mut(&mut self.fields)
    }

    /// True when `other` has the same content (fields and file), compared by hash.
    pub fn same_as(&self, other: &Object) -> bool {
        self.file == other.file && self.hash() == other.hash()
    }

    pub fn get(&self, field: &str) -> &Value {
        self.fields.get(field).unwrap_or(&Value::Null)
    }

    pub fn str(&self, field: &str) -> Option<&str> {
        self.get(field).as_str()
    }

    /// SHA-256 of the canonical fields: the `spec_hash` column.
    pub fn hash(&self) -> &str {
        self.hash.get_or_init(|| {
            let text = serde_json::to_string(&self.fields).expect("JSON values serialize");
            format!("{:x}", Sha256::digest(text.as_bytes()))
        })
    }
}

/// All objects of one side, ordered by kind then id (the order plans are printed in).
pub type Objects = BTreeMap<(Kind, String), Object>;

/// Computes every object's [`Object::hash`] now, on the available cores (a no-op plan of a
/// thousand objects compares them all; each is a serialization and a SHA-256).
pub fn hash_all(objects: &Objects) {
    let all: Vec<&Object> = objects.values().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if threads < 2 || all.len() < 256 {
        all.iter().for_each(|o| {
            o.hash();
        });
        return;
    }
    std::thread::scope(|scope| {
        for chunk in all.chunks(all.len().div_ceil(threads)) {
            scope.spawn(move || {
                for o in chunk {
                    o.hash();
                }
            });
        }
    });
}

/// The recorded side of a plan: what the state says, as far as planning needs it.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// The apply serial (0 for no state).
    pub serial: i64,
    /// The registered objects.
    pub objects: Objects,
    /// Tables whose last extract failed: a change to one queues its extract again, so fixing the
    /// spec that made it fail is tried at once.
    pub failed_extracts: std::collections::BTreeSet<String>,
}

/// `list` keyed as [`Objects`].
pub fn index(list: impl IntoIterator<Item = Object>) -> Objects {
    list.into_iter()
        .map(|o| ((o.kind, o.id.clone()), o))
        .collect()
}

/// The id of the one [`Kind::Settings`] object.
pub const SETTINGS_ID: &str = "instance";

/// The desired state: every object the specs declare. Call only on specs that validated.
pub fn desired(specs: &Specs, analysis: &Analysis) -> Objects {
    let mut out = Vec::new();
    let mut add = |o: Object| out.push(o);
    if let Some(i) = &specs.instance {
        add(settings(specs, i));
    }
    for s in &specs.sources {
        add(source(specs, s));
        for t in &s.transforms {
            let mut f = Fields::default();
            f.str("source", Some(&t.source));
            f.text("description", &t.description);
            f.str("materialized", Some(t.materialized.as_str()));
            f.str("sql", Some(t.sql.trim()));
            // The analysis keys transforms by lower-cased name (DuckDB names ignore case).
            let key = t.name.value.to_lowercase();
            let inputs = analysis.transform_inputs.get(&key);
            f.list("inputs", inputs.into_iter().flatten().cloned());
            // Why the inputs may be incomplete; absent when they are certain (admin-only otherwise).
            let uncertain = analysis.transform_uncertain.get(&key);
            f.list("inputs_uncertain", uncertain.into_iter().flatten().cloned());
            f.docs("columns", &t.columns);
            f.checks(&t.checks);
            f.list("tags", t.tags.iter().map(|x| x.value.clone()));
            add(f.object(specs, Kind::Transform, t.name.value.clone(), t.file));
        }
    }
    for t in &specs.tables {
        add(table(specs, t));
    }
    for m in &specs.metrics {
        let mut f = Fields::default();
        f.str("category", Some(m.category.as_str()));
        f.str("name", Some(m.name.as_str()));
        f.text("display_name", &m.display_name);
        f.text("description", &m.description);
        f.text("owner", &m.owner);
        f.str("type", m.metric_type.map(|t| t.as_str()));
        f.text("unit", &m.unit);
        f.list(
            "grain",
            m.grain.iter().map(|g| g.value.as_str().to_string()),
        );
        f.text("time_column", &m.time_column);
        let tables = analysis.metric_inputs.get(&m.id);
        f.list("tables", tables.into_iter().flatten().cloned());
        let uncertain = analysis.metric_uncertain.get(&m.id);
        f.list("inputs_uncertain", uncertain.into_iter().flatten().cloned());
        f.list("dimensions", m.dimensions.iter().map(|x| x.value.clone()));
        f.list("synonyms", m.synonyms.iter().map(|x| x.value.clone()));
        f.list("notes", m.notes.iter().map(|x| x.value.clone()));
        f.str("sql", Some(m.sql.trim()));
        f.docs("variants", &m.variants);
        add(f.object(specs, Kind::Metric, m.id.clone(), m.file));
    }
    index(out)
}

/// The instance's settings as one document, grouped as `config/instance.yaml` groups them so a plan
/// can diff each group key by key. Everything here is a name or a number: secrets are only ever
/// referenced by environment-variable name.
fn settings(specs: &Specs, i: &InstanceSpec) -> Object {
    use serde_json::json;
    let mut f = Fields::default();
    f.str("name", Some(i.name.value.as_str()));
    f.text("description", &i.description);
    f.str("timezone", Some(i.timezone.value.name()));
    f.str("data_dir", Some(i.data_dir.value.as_str()));
    let d = &i.defaults;
    f.value(
        "defaults",
        json!({
            "schedule": d.schedule.value.to_string(),
            "query_mode": d.query_mode.value.as_str(),
            "concurrency": d.concurrency,
            "schema_changes": d.schema_changes.as_str(),
        }),
    );
    let s = &i.server;
    f.value(
        "server",
        compact(json!({
            "listen": i.listen.value,
            "public_health": s.public_health,
            "public_metrics": s.public_metrics,
            "query_max_rows": s.query_max_rows,
            "query_timeout_seconds": s.query_timeout_seconds,
            "query_memory_limit_mb": s.query_memory_limit_mb,
            "query_threads": s.query_threads,
            "query_max_bytes": s.query_max_bytes,
            "max_concurrent_queries": s.max_concurrent_queries,
            "max_concurrent_queries_per_token": s.max_concurrent_queries_per_token,
            "header_read_timeout_seconds": s.header_read_timeout_seconds,
            "idle_timeout_seconds": s.idle_timeout_seconds,
            "max_connections": s.max_connections,
        })),
    );
    f.value(
        "scheduler",
        compact(json!({
            "missed_runs": i.missed_runs.as_str(),
            "max_concurrent_runs": i.max_concurrent_runs,
        })),
    );
    f.value(
        "run",
        compact(json!({
            "memory_limit_mb": i.run.memory_limit_mb,
            "threads": i.run.threads,
        })),
    );
    let names = |v: &[crate::spec::decode::Located<String>]| -> Vec<String> {
        v.iter().map(|x| x.value.clone()).collect()
    };
    f.value(
        "remote",
        compact(json!({
            "extensions": names(&i.remote_extensions),
            "token_envs": names(&i.remote_token_envs),
        })),
    );
    if let Some(e) = &i.extensions {
        f.value(
            "extensions",
            compact(json!({
                "directory": e.directory.as_ref().map(|t| t.as_str()),
                "repository": e.repository.as_ref().map(|t| t.as_str()),
            })),
        );
    }
    f.object(specs, Kind::Settings, SETTINGS_ID.to_string(), i.file)
}

/// `v` (an object) without its unset entries (null, empty list), so a setting left to its default
/// reads as absent rather than as `null`.
fn compact(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !(v.is_null() || v.as_array().is_some_and(|a| a.is_empty())))
                .collect(),
        ),
        other => other,
    }
}

fn source(specs: &Specs, s: &SourceSpec) -> Object {
    let mut f = Fields::default();
    f.str("type", Some(s.source_type.as_str()));
    f.text("description", &s.description);
    // Connections hold env-var *names* only: validation refuses inline secrets.
    f.value("connection", s.connection.to_json());
    f.str(
        "schedule",
        s.schedule.as_ref().map(|x| x.to_string()).as_deref(),
    );
    f.object(specs, Kind::Source, s.name.value.clone(), s.file)
}

fn table(specs: &Specs, t: &TableSpec) -> Object {
    let source = specs.source(t.source.as_str());
    let defaults = specs.instance.as_ref().map(|i| &i.defaults);
    let mut f = Fields::default();
    f.str("source", Some(t.source.as_str()));
    f.str("source_type", source.map(|s| s.source_type.as_str()));
    f.text("bucket", &t.bucket);
    f.text("source_table", &t.source_table);
    f.str("name", Some(t.name.as_str()));
    let mode = t
        .query_mode
        .as_ref()
        .map(|m| m.value)
        .or(defaults.map(|d| d.query_mode.value));
    f.str("query_mode", mode.map(|m| m.as_str()));
    f.text("query", &t.query);
    // The schedule that applies: the table's, else its source's, else the instance default.
    let schedule = t
        .schedule
        .as_ref()
        .or(source.and_then(|s| s.schedule.as_ref()))
        .or(defaults.map(|d| &d.schedule))
        .map(|s| s.to_string());
    f.str("schedule", schedule.as_deref());
    f.str("sync_mode", Some(t.sync.mode().as_str()));
    f.text("cursor", &t.sync.cursor);
    f.list(
        "primary_key",
        t.sync.primary_key.iter().map(|k| k.value.clone()),
    );
    f.value(
        "window_days",
        t.sync.window_days.map_or(Value::Null, Value::from),
    );
    f.text("partition_by", &t.sync.partition_by);
    f.str("granularity", t.sync.granularity.map(|g| g.as_str()));
    let filters: Vec<Value> = t
        .filters
        .iter()
        .map(|w| {
            let values: Vec<Value> = w.values.iter().map(|v| v.to_json()).collect();
            serde_json::json!({"column": w.column.value, "operator": w.operator.as_str(), "values": values})
        })
        .collect();
    f.value("filters", Value::Array(filters));
    // `descriptions:` entries fill what the table's own spec leaves out; its own words win.
    let docs = specs
        .table_docs
        .iter()
        .find(|d| d.table.value == t.id.value);
    f.text(
        "description",
        if t.description.is_some() {
            &t.description
        } else {
            docs.map_or(&t.description, |d| &d.description)
        },
    );
    f.docs("columns", &t.columns);
    // Documentation only, kept apart from `columns`, which every extract checks against the data.
    if let Some(d) = docs {
        let extra: Docs = d
            .columns
            .iter()
            .filter(|(c, _)| !t.columns.iter().any(|(own, _)| own.value == c.value))
            .cloned()
            .collect();
        f.docs("column_docs", &extra);
    }
    // The contract that applies (the table's, else the instance default), left out when it is the
    // default `additive` so that documents recorded before the key existed compare equal.
    let contract = t
        .schema_changes
        .or(defaults.map(|d| d.schema_changes))
        .unwrap_or(SchemaChanges::Additive);
    if contract != SchemaChanges::Additive {
        f.str("schema_changes", Some(contract.as_str()));
    }
    f.list("access", t.access.iter().map(|x| x.value.clone()));
    f.list("tags", t.tags.iter().map(|x| x.value.clone()));
    f.checks(&t.checks);
    f.value(
        "maximum_bytes_billed",
        t.maximum_bytes_billed
            .as_ref()
            .map_or(Value::Null, |m| Value::from(m.value)),
    );
    f.object(specs, Kind::Table, t.id.value.clone(), t.file)
}

/// Builds a canonical field map, dropping unset values so "absent" and "empty" compare equal.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Fields {
    fn value(&mut self, key: &str, v: Value) {
        let unset = match &v {
            Value::Null => true,
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !unset {
            self.0.insert(key.to_string(), v);
        }
    }

    fn str(&mut self, key: &str, v: Option<&str>) {
        self.value(key, v.map_or(Value::Null, |s| Value::String(s.to_string())));
    }

    fn text(&mut self, key: &str, v: &Text) {
        self.str(key, v.as_ref().map(|t| t.as_str()));
    }

    fn list(&mut self, key: &str, items: impl Iterator<Item = String>) {
        self.value(key, Value::Array(items.map(Value::String).collect()));
    }

    fn docs(&mut self, key: &str, docs: &Docs) {
        let map: Map<String, Value> = docs
            .iter()
            .map(|(k, v)| (k.value.clone(), Value::String(v.value.clone())))
            .collect();
        self.value(key, Value::Object(map));
    }

    fn checks(&mut self, checks: &[CheckSpec]) {
        let list = checks
            .iter()
            .map(|c| match &c.kind {
                CheckKind::NotNull(col) => serde_json::json!({ "not_null": col }),
                CheckKind::Unique(cols) => serde_json::json!({ "unique": cols }),
                CheckKind::AcceptedValues { column, values } => {
                    serde_json::json!({ "accepted_values": { "column": column, "values": values } })
                }
            })
            .collect();
        self.value("checks", Value::Array(list));
    }

    fn object(
        self,
        specs: &Specs,
        kind: Kind,
        id: String,
        file: crate::diag::source::FileId,
    ) -> Object {
        Object::new(kind, id, specs.files.get(file).display.clone(), self.0)
    }
}

/// The spec digest a saved plan records: a hash of the whole desired state (not of the file bytes, so
/// reformatting or commenting a file does not make a saved plan stale).
pub fn digest(objects: &Objects) -> String {
    digest_of(
        objects
            .values()
            .map(|o| (o.kind, o.id.as_str(), o.file.as_str(), o.hash())),
    )
}

/// [`digest`] of `(kind, id, spec file, document hash)` rows, in [`Objects`]' key order: what the
/// state's registry digest records, from its rows rather than from documents.
pub fn digest_of<'a>(objects: impl Iterator<Item = (Kind, &'a str, &'a str, &'a str)>) -> String {
    let mut h = Sha256::new();
    for (kind, id, file, hash) in objects {
        for part in [kind.as_str(), id, file, hash] {
            h.update(part.as_bytes());
            h.update([0]);
        }
    }
    format!("sha256:{:x}", h.finalize())
}

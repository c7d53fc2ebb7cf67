//! What is registered, as the engine uses it: typed views of the canonical documents that apply
//! recorded (or that the specs declare, for `graph`). The engine runs what was applied, never
//! unapplied edits, so a half-edited spec cannot change what a scheduled run does.

use super::document::{Kind, Object, Objects};
use crate::spec::model::{
    Granularity, Materialized, QueryMode, SchemaChanges, SourceType, SyncMode,
};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Deserialize)]
pub struct SourceDef {
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub hash: String,
    #[serde(rename = "type")]
    pub source_type: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub connection: Value,
}

impl SourceDef {
    pub fn kind(&self) -> Option<SourceType> {
        SourceType::from_name(&self.source_type)
    }

    /// A string value of the connection (`path`, `url`…).
    pub fn connection_str(&self, key: &str) -> Option<&str> {
        self.connection.get(key).and_then(|v| v.as_str())
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Filter {
    pub column: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<Value>,
}

/// A data-quality check on a table or transform; a failure fails its task.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    NotNull(String),
    Unique(Vec<String>),
    AcceptedValues { column: String, values: Vec<String> },
}

impl Check {
    fn from_json(v: &Value) -> Option<Check> {
        let (k, v) = v.as_object()?.iter().next()?;
        let strings = |v: &Value| -> Option<Vec<String>> {
            match v {
                Value::String(s) => Some(vec![s.clone()]),
                Value::Array(a) => a.iter().map(|x| x.as_str().map(String::from)).collect(),
                _ => None,
            }
        };
        match k.as_str() {
            "not_null" => Some(Check::NotNull(v.as_str()?.to_string())),
            "unique" => Some(Check::Unique(strings(v)?)),
            "accepted_values" => Some(Check::AcceptedValues {
                column: v.get("column")?.as_str()?.to_string(),
                values: strings(v.get("values")?)?,
            }),
            _ => None,
        }
    }

    pub fn label(&self) -> String {
        match self {
            Check::NotNull(c) => format!("not_null({c})"),
            Check::Unique(c) => format!("unique({})", c.join(", ")),
            Check::AcceptedValues { column, .. } => format!("accepted_values({column})"),
        }
    }
}

fn checks(v: Option<&Value>) -> Vec<Check> {
    v.and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(Check::from_json)
        .collect()
}

#[derive(Clone, Debug, Deserialize)]
pub struct TableDef {
    #[serde(skip)]
    pub id: String,
    /// The spec file that declares it, relative to the instance root (for messages).
    #[serde(skip)]
    pub file: String,
    #[serde(skip)]
    pub hash: String,
    #[serde(skip)]
    pub checks: Vec<Check>,
    pub source: String,
    pub name: String,
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub source_table: Option<String>,
    #[serde(default)]
    pub query_mode: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub sync_mode: Option<String>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub primary_key: Vec<String>,
    #[serde(default)]
    pub window_days: Option<u32>,
    #[serde(default)]
    pub partition_by: Option<String>,
    #[serde(default)]
    pub granularity: Option<String>,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub description: Option<String>,
    /// Documented columns (name → description): each must exist in the extracted data.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Column descriptions from a registry file's `descriptions:` for columns `columns` does not
    /// document: documentation only, never checked against the data.
    #[serde(default)]
    pub column_docs: BTreeMap<String, String>,
    /// The schema contract; absent means `additive`.
    #[serde(default)]
    pub schema_changes: Option<String>,
    /// The schedule that applies (the table's, its source's or the instance default), as written.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Groups that may read the table; empty: every authenticated user.
    #[serde(default)]
    pub access: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// BigQuery: the most bytes one query of the table may bill.
    #[serde(default)]
    pub maximum_bytes_billed: Option<u64>,
}

impl TableDef {
    pub fn query_mode(&self) -> QueryMode {
        self.query_mode
            .as_deref()
            .and_then(QueryMode::from_name)
            .unwrap_or(QueryMode::Local)
    }

    pub fn sync_mode(&self) -> SyncMode {
        self.sync_mode
            .as_deref()
            .and_then(SyncMode::from_name)
            .unwrap_or(SyncMode::Full)
    }

    /// Which changes of its published schema a new extract may make.
    pub fn schema_changes(&self) -> SchemaChanges {
        self.schema_changes
            .as_deref()
            .and_then(SchemaChanges::from_name)
            .unwrap_or(SchemaChanges::Additive)
    }

    pub fn granularity(&self) -> Granularity {
        self.granularity
            .as_deref()
            .and_then(Granularity::from_name)
            .unwrap_or(Granularity::Month)
    }

    /// Every column description: the documented `columns`, then `column_docs` for the others.
    pub fn column_descriptions(&self) -> BTreeMap<String, String> {
        let mut all = self.column_docs.clone();
        all.extend(self.columns.clone());
        all
    }

    /// The name at the source: `source_table`, else the view name.
    pub fn source_table(&self) -> &str {
        self.source_table.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct TransformDef {
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub checks: Vec<Check>,
    pub source: String,
    #[serde(default)]
    pub materialized: Option<String>,
    pub sql: String,
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Why `inputs` may be incomplete (empty when they are certain): then only admins may read it.
    #[serde(default)]
    pub inputs_uncertain: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Documented columns (name → description).
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl TransformDef {
    pub fn materialized(&self) -> Materialized {
        self.materialized
            .as_deref()
            .and_then(Materialized::from_name)
            .unwrap_or(Materialized::Table)
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct MetricDef {
    #[serde(skip)]
    pub id: String,
    pub sql: String,
    #[serde(default)]
    pub grain: Vec<String>,
    #[serde(default)]
    pub time_column: Option<String>,
    #[serde(default)]
    pub tables: Vec<String>,
    /// Why `tables` may be incomplete (empty when they are certain): then only admins see it.
    #[serde(default)]
    pub inputs_uncertain: Vec<String>,
    /// Variant name → SQL template.
    #[serde(default)]
    pub variants: BTreeMap<String, String>,
    #[serde(default)]
    pub dimensions: Vec<String>,
}

/// Everything registered, by name.
#[derive(Clone, Debug, Default)]
pub struct Registered {
    pub sources: BTreeMap<String, SourceDef>,
    /// By table id.
    pub tables: BTreeMap<String, TableDef>,
    pub transforms: BTreeMap<String, TransformDef>,
    pub metrics: BTreeMap<String, MetricDef>,
}

#[derive(Debug, thiserror::Error)]
#[error("recorded {kind} `{id}` is malformed ({error}); run `pipeline apply` to record it again")]
pub struct Malformed {
    kind: &'static str,
    id: String,
    error: serde_json::Error,
}

fn decode<T: serde::de::DeserializeOwned>(o: &Object) -> Result<T, Malformed> {
    serde_json::from_value(Value::Object(o.fields().clone())).map_err(|error| Malformed {
        kind: o.kind.as_str(),
        id: o.id.clone(),
        error,
    })
}

impl Registered {
    pub fn from_objects(objects: &Objects) -> Result<Registered, Malformed> {
        let mut r = Registered::default();
        for o in objects.values() {
            match o.kind {
                // Settings configure the engine; nothing registered is derived from them.
                Kind::Settings => {}
                Kind::Source => {
                    let mut s: SourceDef = decode(o)?;
                    s.name = o.id.clone();
                    s.hash = o.hash().to_string();
                    r.sources.insert(o.id.clone(), s);
                }
                Kind::Table => {
                    let mut t: TableDef = decode(o)?;
                    t.id = o.id.clone();
                    t.file = o.file.clone();
                    t.hash = o.hash().to_string();
                    t.checks = checks(o.fields().get("checks"));
                    r.tables.insert(o.id.clone(), t);
                }
                Kind::Transform => {
                    let mut t: TransformDef = decode(o)?;
                    t.name = o.id.clone();
                    t.checks = checks(o.fields().get("checks"));
                    r.transforms.insert(o.id.clone(), t);
                }
                Kind::Metric => {
                    let mut m: MetricDef = decode(o)?;
                    m.id = o.id.clone();
                    r.metrics.insert(o.id.clone(), m);
                }
            }
        }
        Ok(r)
    }

    /// A table by id or by view name.
    pub fn table(&self, key: &str) -> Option<&TableDef> {
        self.tables
            .get(key)
            .or_else(|| self.tables.values().find(|t| t.name == key))
    }

    pub fn tables_of<'a>(&'a self, source: &'a str) -> impl Iterator<Item = &'a TableDef> + 'a {
        self.tables.values().filter(move |t| t.source == source)
    }
}

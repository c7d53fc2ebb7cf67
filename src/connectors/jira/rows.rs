//! A fetched issue → the rows of the six Jira tables, and the tables' schema with explicit DuckDB
//! types (docs/jira.md lists every column).
//!
//! Every row carries the issue's key, id and creation month (`issue_created_month`, `YYYY-MM` in
//! UTC: the partition it lives in). Rows are JSON objects keyed by column name, with values already
//! normalised for the column's type (timestamps as UTC text DuckDB casts to `TIMESTAMPTZ`, lists as
//! arrays), so [`super::partition`] loads them with one typed `SELECT` per table.
//!
//! Custom fields go into one `custom_fields` JSON column of `issues`, keyed by their readable names
//! from `/rest/api/3/field` (the id is appended when two fields share a name), values simplified
//! (an option → its value, a user → the display name, rich text → plain text, a sprint → its name).
//! The column set therefore does not change when someone adds a custom field. Fields named in the
//! connection's `promote` list also get a column of their own, typed from the field's schema; those
//! columns are computed in SQL from `custom_fields` (see [`Schema::promoted_sql`]), so they can be
//! recomputed for files written before the list changed.
//!
//! No I/O here: [`Mapper`] is built from the field metadata once and maps issues on any thread.

use super::adf;
use super::client::{FetchedIssue, FieldMeta, FieldSchema};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

/// A column's DuckDB type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlType {
    Varchar,
    Boolean,
    Integer,
    Bigint,
    Double,
    Date,
    TimestampTz,
    VarcharList,
    Json,
}

impl SqlType {
    pub fn ddl(self) -> &'static str {
        match self {
            SqlType::Varchar => "VARCHAR",
            SqlType::Boolean => "BOOLEAN",
            SqlType::Integer => "INTEGER",
            SqlType::Bigint => "BIGINT",
            SqlType::Double => "DOUBLE",
            SqlType::Date => "DATE",
            SqlType::TimestampTz => "TIMESTAMP WITH TIME ZONE",
            SqlType::VarcharList => "VARCHAR[]",
            SqlType::Json => "JSON",
        }
    }
}

/// The six tables of a Jira source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Issues,
    Comments,
    Changelog,
    IssueLinks,
    RemoteLinks,
    Attachments,
}

use SqlType::*;

const KEY_COLUMNS: [(&str, SqlType); 3] = [
    ("issue_key", Varchar),
    ("issue_id", Varchar),
    ("issue_created_month", Varchar),
];

const ISSUES: &[(&str, SqlType)] = &[
    ("project_key", Varchar),
    ("project_name", Varchar),
    ("issue_type", Varchar),
    ("is_subtask", Boolean),
    ("status", Varchar),
    ("status_category", Varchar),
    ("priority", Varchar),
    ("resolution", Varchar),
    ("summary", Varchar),
    ("description", Varchar),
    ("assignee", Varchar),
    ("assignee_account_id", Varchar),
    ("reporter", Varchar),
    ("reporter_account_id", Varchar),
    ("creator", Varchar),
    ("created", TimestampTz),
    ("updated", TimestampTz),
    ("resolved", TimestampTz),
    ("due_date", Date),
    ("labels", VarcharList),
    ("components", VarcharList),
    ("fix_versions", VarcharList),
    ("affects_versions", VarcharList),
    ("parent_key", Varchar),
    ("sprint", Varchar),
    ("sprints", VarcharList),
    ("story_points", Double),
    ("custom_fields", Json),
    ("content_digest", Varchar),
];

const COMMENTS: &[(&str, SqlType)] = &[
    ("comment_id", Varchar),
    ("author", Varchar),
    ("author_account_id", Varchar),
    ("update_author", Varchar),
    ("created", TimestampTz),
    ("updated", TimestampTz),
    ("body", Varchar),
    ("visibility", Varchar),
];

const CHANGELOG: &[(&str, SqlType)] = &[
    ("history_id", Varchar),
    ("item_index", Integer),
    ("author", Varchar),
    ("author_account_id", Varchar),
    ("created", TimestampTz),
    ("field", Varchar),
    ("field_id", Varchar),
    ("field_type", Varchar),
    ("from_value", Varchar),
    ("from_string", Varchar),
    ("to_value", Varchar),
    ("to_string", Varchar),
];

const ISSUE_LINKS: &[(&str, SqlType)] = &[
    ("link_id", Varchar),
    ("link_type", Varchar),
    ("direction", Varchar),
    ("relation", Varchar),
    ("linked_issue_key", Varchar),
    ("linked_issue_id", Varchar),
    ("linked_issue_summary", Varchar),
    ("linked_issue_status", Varchar),
];

const REMOTE_LINKS: &[(&str, SqlType)] = &[
    ("remote_link_id", Varchar),
    ("global_id", Varchar),
    ("application_type", Varchar),
    ("application_name", Varchar),
    ("relationship", Varchar),
    ("url", Varchar),
    ("title", Varchar),
    ("summary", Varchar),
    ("resolved", Boolean),
];

const ATTACHMENTS: &[(&str, SqlType)] = &[
    ("attachment_id", Varchar),
    ("filename", Varchar),
    ("author", Varchar),
    ("author_account_id", Varchar),
    ("created", TimestampTz),
    ("size_bytes", Bigint),
    ("mime_type", Varchar),
    ("content_url", Varchar),
];

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Issues,
        Table::Comments,
        Table::Changelog,
        Table::IssueLinks,
        Table::RemoteLinks,
        Table::Attachments,
    ];

    /// The table's name (its view in analytics, its directory of partitions).
    pub fn name(self) -> &'static str {
        match self {
            Table::Issues => "issues",
            Table::Comments => "comments",
            Table::Changelog => "changelog",
            Table::IssueLinks => "issuelinks",
            Table::RemoteLinks => "remote_links",
            Table::Attachments => "attachments",
        }
    }

    /// One line for `_meta.description`.
    pub fn description(self) -> &'static str {
        match self {
            Table::Issues => "Jira issues: one row per issue",
            Table::Comments => "Jira issue comments: one row per comment",
            Table::Changelog => "Jira issue history: one row per changed field of a change",
            Table::IssueLinks => "Links between Jira issues: one row per link, from each side",
            Table::RemoteLinks => "Links from Jira issues to other systems: one row per link",
            Table::Attachments => "Jira issue attachments (metadata): one row per file",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn own_columns(self) -> &'static [(&'static str, SqlType)] {
        match self {
            Table::Issues => ISSUES,
            Table::Comments => COMMENTS,
            Table::Changelog => CHANGELOG,
            Table::IssueLinks => ISSUE_LINKS,
            Table::RemoteLinks => REMOTE_LINKS,
            Table::Attachments => ATTACHMENTS,
        }
    }

    /// The order rows are written in: deterministic, so equal content gives equal files.
    pub fn sort_key(self) -> &'static str {
        match self {
            Table::Issues => "issue_key",
            Table::Comments => "issue_key, comment_id",
            Table::Changelog => "issue_key, history_id, item_index",
            Table::IssueLinks => "issue_key, link_id, direction",
            Table::RemoteLinks => "issue_key, remote_link_id",
            Table::Attachments => "issue_key, attachment_id",
        }
    }
}

/// A column of a table.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
    /// For promoted columns: the readable custom field name (the key in `custom_fields`).
    pub from_custom_field: Option<String>,
}

/// A custom field with a column of its own in `issues`.
#[derive(Clone, Debug, PartialEq)]
pub struct Promoted {
    /// The column name (snake_case of the field name).
    pub column: String,
    /// The key in `custom_fields`.
    pub field: String,
    pub ty: SqlType,
}

/// The columns of every table: fixed, plus the promoted custom fields of `issues`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Schema {
    pub promoted: Vec<Promoted>,
}

impl Schema {
    /// The columns of `table`, in file order.
    pub fn columns(&self, table: Table) -> Vec<Column> {
        let mut cols: Vec<Column> = KEY_COLUMNS
            .iter()
            .chain(table.own_columns())
            .map(|(name, ty)| Column {
                name: name.to_string(),
                ty: *ty,
                from_custom_field: None,
            })
            .collect();
        if table == Table::Issues {
            cols.extend(self.promoted.iter().map(|p| Column {
                name: p.column.clone(),
                ty: p.ty,
                from_custom_field: Some(p.field.clone()),
            }));
        }
        cols
    }

    /// SQL computing a promoted column from the JSON expression `custom_fields` (a column, or
    /// `j->'custom_fields'` while loading rows). A value that does not convert is NULL, never an
    /// error that would stop a partition from being written.
    pub fn promoted_sql(column: &Column, custom_fields: &str) -> String {
        let field = column.from_custom_field.as_deref().unwrap_or_default();
        let path = crate::quote::literal(&format!("$.\"{field}\""));
        match column.ty {
            Varchar => format!("json_extract_string({custom_fields}, {path})"),
            VarcharList => format!("TRY_CAST(json_extract({custom_fields}, {path}) AS VARCHAR[])"),
            ty => format!(
                "TRY_CAST(json_extract_string({custom_fields}, {path}) AS {})",
                ty.ddl()
            ),
        }
    }
}

/// The rows of one issue, per table.
#[derive(Clone, Debug, PartialEq)]
pub struct IssueRows {
    pub key: String,
    pub id: String,
    /// `YYYY-MM` of `fields.created`, UTC.
    pub month: String,
    /// `fields.updated`, as written to `issues.updated` (for consistency checks).
    pub updated: Option<String>,
    rows: [Vec<Value>; 6],
    /// A digest of the issue's rows in each table (see [`IssueRows::digest`]).
    digests: [String; 6],
}

impl IssueRows {
    /// The rows of `table` (JSON objects keyed by column name).
    pub fn rows(&self, table: Table) -> &[Value] {
        &self.rows[table.index()]
    }

    /// A digest of the issue's rows in `table` (SHA-256 of their JSON, 128 bits in hex). Equal
    /// digests mean equal rows: the partition store skips rewriting files whose rows for an issue
    /// did not change.
    pub fn digest(&self, table: Table) -> &str {
        &self.digests[table.index()]
    }

    /// The `content_digest` of the issue's row: `<table>:<digest>` for each table, `,`-joined.
    pub fn content_digest(&self) -> String {
        content_digest(&self.digests)
    }

    fn seal(mut self) -> IssueRows {
        use sha2::{Digest, Sha256};
        for t in Table::ALL {
            let text = serde_json::to_string(&self.rows[t.index()]).unwrap_or_default();
            let hash = Sha256::digest(text.as_bytes());
            self.digests[t.index()] = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
        }
        let digest = self.content_digest();
        if let Some(Value::Object(row)) = self.rows[Table::Issues.index()].first_mut() {
            row.insert("content_digest".into(), Value::String(digest));
        }
        self
    }
}

fn content_digest(digests: &[String; 6]) -> String {
    Table::ALL
        .iter()
        .map(|t| format!("{}:{}", t.name(), digests[t.index()]))
        .collect::<Vec<_>>()
        .join(",")
}

/// The per-table digests in a stored `content_digest`, by table; `None` for anything else.
pub fn parse_content_digest(text: &str) -> Option<BTreeMap<Table, String>> {
    let mut out = BTreeMap::new();
    for part in text.split(',') {
        let (name, digest) = part.split_once(':')?;
        let table = Table::ALL.into_iter().find(|t| t.name() == name)?;
        out.insert(table, digest.to_string());
    }
    (out.len() == Table::ALL.len()).then_some(out)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("the issue has no {0}")]
    Missing(&'static str),
    #[error("issue {key}: `created` is not a timestamp: {value}")]
    BadCreated { key: String, value: String },
    #[error("cannot promote `{name}`: {reason}")]
    Promote { name: String, reason: String },
}

/// Maps fetched issues to rows, knowing the site's fields.
#[derive(Clone, Debug)]
pub struct Mapper {
    /// Field id → key in `custom_fields`.
    names: HashMap<String, String>,
    schemas: HashMap<String, FieldSchema>,
    sprint_fields: Vec<String>,
    story_point_fields: Vec<String>,
    epic_link_fields: Vec<String>,
    schema: Schema,
}

const SPRINT: &str = "com.pyxis.greenhopper.jira:gh-sprint";
const EPIC_LINK: &str = "com.pyxis.greenhopper.jira:gh-epic-link";
const STORY_POINT_ESTIMATE: &str = "com.pyxis.greenhopper.jira:jsw-story-points";

impl Mapper {
    /// A mapper for a site with `fields` (from `/rest/api/3/field`), promoting the custom fields
    /// named in `promote` (readable names, or field ids) to columns.
    pub fn new(fields: &[FieldMeta], promote: &[String]) -> Result<Mapper, MapError> {
        let custom: Vec<&FieldMeta> = fields
            .iter()
            .filter(|f| f.custom || f.id.starts_with("customfield_"))
            .collect();
        let mut count: HashMap<&str, usize> = HashMap::new();
        for f in &custom {
            *count.entry(f.name.as_str()).or_default() += 1;
        }
        let mut names = HashMap::new();
        let mut schemas = HashMap::new();
        let mut sprint_fields = Vec::new();
        let mut story_point_fields = Vec::new();
        let mut epic_link_fields = Vec::new();
        for f in &custom {
            let readable = if f.name.trim().is_empty() {
                f.id.clone()
            } else if count[f.name.as_str()] > 1 {
                format!("{} ({})", f.name, f.id)
            } else {
                f.name.clone()
            };
            names.insert(f.id.clone(), readable);
            let schema = f.schema.clone().unwrap_or_default();
            match schema.custom.as_deref() {
                Some(SPRINT) => sprint_fields.push(f.id.clone()),
                Some(EPIC_LINK) => epic_link_fields.push(f.id.clone()),
                Some(STORY_POINT_ESTIMATE) => story_point_fields.insert(0, f.id.clone()),
                _ => {
                    let n = f.name.to_ascii_lowercase();
                    if (n == "story points" || n == "story point estimate")
                        && schema.kind == "number"
                    {
                        story_point_fields.push(f.id.clone());
                    }
                }
            }
            schemas.insert(f.id.clone(), schema);
        }
        sprint_fields.sort();
        epic_link_fields.sort();
        let mut promoted: Vec<Promoted> = Vec::new();
        for name in promote {
            let found: Vec<&&FieldMeta> = custom
                .iter()
                .filter(|f| f.id == *name || f.name == *name)
                .collect();
            let found: Vec<&&FieldMeta> = if found.is_empty() {
                custom
                    .iter()
                    .filter(|f| f.name.eq_ignore_ascii_case(name))
                    .collect()
            } else {
                found
            };
            let field = match found.as_slice() {
                [one] => *one,
                [] => {
                    return Err(MapError::Promote {
                        name: name.clone(),
                        reason: "the site has no custom field of that name".into(),
                    })
                }
                many => {
                    let ids: Vec<&str> = many.iter().map(|f| f.id.as_str()).collect();
                    return Err(MapError::Promote {
                        name: name.clone(),
                        reason: format!(
                            "several custom fields have that name ({}); promote one by id",
                            ids.join(", ")
                        ),
                    });
                }
            };
            let key = names[&field.id].clone();
            if key.contains(['"', '\\']) || key.chars().any(char::is_control) {
                return Err(MapError::Promote {
                    name: name.clone(),
                    reason: "its name holds a quote, backslash or control character".into(),
                });
            }
            let column = snake_case(&field.name);
            let taken = KEY_COLUMNS.iter().chain(ISSUES).any(|(c, _)| *c == column)
                || promoted.iter().any(|p| p.column == column);
            if !crate::names::is_identifier(&column) || taken {
                return Err(MapError::Promote {
                    name: name.clone(),
                    reason: format!(
                        "its column name `{column}` is not free (another column has it, or it \
                         is not a valid name)"
                    ),
                });
            }
            let schema = field.schema.clone().unwrap_or_default();
            let ty = match schema.kind.as_str() {
                "number" => Double,
                "date" => Date,
                "datetime" => TimestampTz,
                "array" => VarcharList,
                _ => Varchar,
            };
            promoted.push(Promoted {
                column,
                field: key,
                ty,
            });
        }
        Ok(Mapper {
            names,
            schemas,
            sprint_fields,
            story_point_fields,
            epic_link_fields,
            schema: Schema { promoted },
        })
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The rows of one fetched issue.
    pub fn map(&self, fetched: &FetchedIssue) -> Result<IssueRows, MapError> {
        let issue = &fetched.issue;
        let key = text(issue.get("key")).ok_or(MapError::Missing("key"))?;
        let id = text(issue.get("id")).ok_or(MapError::Missing("id"))?;
        let f = issue.get("fields").ok_or(MapError::Missing("fields"))?;
        let created_raw = text(f.get("created")).ok_or(MapError::Missing("created"))?;
        let created_at = parse_time(&created_raw).ok_or_else(|| MapError::BadCreated {
            key: key.clone(),
            value: created_raw.clone(),
        })?;
        let month = created_at.format("%Y-%m").to_string();
        let base = |extra: Vec<(&str, Value)>| -> Value {
            let mut m = Map::new();
            m.insert("issue_key".into(), json!(key));
            m.insert("issue_id".into(), json!(id));
            m.insert("issue_created_month".into(), json!(month));
            for (k, v) in extra {
                m.insert(k.to_string(), v);
            }
            Value::Object(m)
        };

        // issues
        let custom = self.custom_fields(f);
        let sprints = self.sprints(f);
        let sprint = sprints
            .iter()
            .find(|(_, state)| state.as_deref() == Some("active"))
            .or(sprints.last())
            .map(|(name, _)| name.clone());
        let parent = f
            .get("parent")
            .and_then(|p| text(p.get("key")))
            .or_else(|| self.epic_link_fields.iter().find_map(|id| text(f.get(id))));
        let story_points = self
            .story_point_fields
            .iter()
            .find_map(|id| f.get(id).and_then(Value::as_f64));
        let updated = ts(f.get("updated"));
        let issue_row = base(vec![
            ("project_key", json!(text(f.pointer("/project/key")))),
            ("project_name", json!(text(f.pointer("/project/name")))),
            ("issue_type", json!(text(f.pointer("/issuetype/name")))),
            (
                "is_subtask",
                json!(f.pointer("/issuetype/subtask").and_then(Value::as_bool)),
            ),
            ("status", json!(text(f.pointer("/status/name")))),
            (
                "status_category",
                json!(text(f.pointer("/status/statusCategory/key"))),
            ),
            ("priority", json!(text(f.pointer("/priority/name")))),
            ("resolution", json!(text(f.pointer("/resolution/name")))),
            ("summary", json!(text(f.get("summary")))),
            (
                "description",
                json!(f.get("description").and_then(adf::field_text)),
            ),
            ("assignee", json!(user_name(f.get("assignee")))),
            (
                "assignee_account_id",
                json!(text(f.pointer("/assignee/accountId"))),
            ),
            ("reporter", json!(user_name(f.get("reporter")))),
            (
                "reporter_account_id",
                json!(text(f.pointer("/reporter/accountId"))),
            ),
            ("creator", json!(user_name(f.get("creator")))),
            ("created", json!(format_time(&created_at))),
            ("updated", json!(updated)),
            ("resolved", json!(ts(f.get("resolutiondate")))),
            (
                "due_date",
                json!(text(f.get("duedate")).filter(|d| is_date(d))),
            ),
            ("labels", json!(strings(f.get("labels"), |v| text(Some(v))))),
            (
                "components",
                json!(strings(f.get("components"), |v| text(v.get("name")))),
            ),
            (
                "fix_versions",
                json!(strings(f.get("fixVersions"), |v| text(v.get("name")))),
            ),
            (
                "affects_versions",
                json!(strings(f.get("versions"), |v| text(v.get("name")))),
            ),
            ("parent_key", json!(parent)),
            ("sprint", json!(sprint)),
            (
                "sprints",
                json!(sprints.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()),
            ),
            ("story_points", json!(story_points)),
            ("custom_fields", Value::Object(custom.into_iter().collect())),
        ]);

        // comments
        let comments = array(f.pointer("/comment/comments"))
            .iter()
            .map(|c| {
                let visibility = c.get("visibility").and_then(|v| {
                    let value = text(v.get("value"))?;
                    Some(match text(v.get("type")) {
                        Some(t) => format!("{t}:{value}"),
                        None => value,
                    })
                });
                base(vec![
                    ("comment_id", json!(text(c.get("id")))),
                    ("author", json!(user_name(c.get("author")))),
                    (
                        "author_account_id",
                        json!(text(c.pointer("/author/accountId"))),
                    ),
                    ("update_author", json!(user_name(c.get("updateAuthor")))),
                    ("created", json!(ts(c.get("created")))),
                    ("updated", json!(ts(c.get("updated")))),
                    ("body", json!(c.get("body").and_then(adf::field_text))),
                    ("visibility", json!(visibility)),
                ])
            })
            .collect();

        // changelog: one row per item of each history
        let mut changelog = Vec::new();
        for h in array(issue.pointer("/changelog/histories")) {
            for (i, item) in array(h.get("items")).iter().enumerate() {
                changelog.push(base(vec![
                    ("history_id", json!(text(h.get("id")))),
                    ("item_index", json!(i)),
                    ("author", json!(user_name(h.get("author")))),
                    (
                        "author_account_id",
                        json!(text(h.pointer("/author/accountId"))),
                    ),
                    ("created", json!(ts(h.get("created")))),
                    ("field", json!(text(item.get("field")))),
                    ("field_id", json!(text(item.get("fieldId")))),
                    ("field_type", json!(text(item.get("fieldtype")))),
                    ("from_value", json!(text(item.get("from")))),
                    ("from_string", json!(text(item.get("fromString")))),
                    ("to_value", json!(text(item.get("to")))),
                    ("to_string", json!(text(item.get("toString")))),
                ]));
            }
        }

        // issuelinks: the side this issue sees
        let links = array(f.get("issuelinks"))
            .iter()
            .filter_map(|l| {
                let (direction, other, relation) = if let Some(o) = l.get("outwardIssue") {
                    ("outward", o, l.pointer("/type/outward"))
                } else {
                    ("inward", l.get("inwardIssue")?, l.pointer("/type/inward"))
                };
                Some(base(vec![
                    ("link_id", json!(text(l.get("id")))),
                    ("link_type", json!(text(l.pointer("/type/name")))),
                    ("direction", json!(direction)),
                    ("relation", json!(text(relation))),
                    ("linked_issue_key", json!(text(other.get("key")))),
                    ("linked_issue_id", json!(text(other.get("id")))),
                    (
                        "linked_issue_summary",
                        json!(text(other.pointer("/fields/summary"))),
                    ),
                    (
                        "linked_issue_status",
                        json!(text(other.pointer("/fields/status/name"))),
                    ),
                ]))
            })
            .collect();

        let remote = fetched
            .remote_links
            .iter()
            .map(|r| {
                base(vec![
                    ("remote_link_id", json!(text(r.get("id")))),
                    ("global_id", json!(text(r.get("globalId")))),
                    (
                        "application_type",
                        json!(text(r.pointer("/application/type"))),
                    ),
                    (
                        "application_name",
                        json!(text(r.pointer("/application/name"))),
                    ),
                    ("relationship", json!(text(r.get("relationship")))),
                    ("url", json!(text(r.pointer("/object/url")))),
                    ("title", json!(text(r.pointer("/object/title")))),
                    ("summary", json!(text(r.pointer("/object/summary")))),
                    (
                        "resolved",
                        json!(r
                            .pointer("/object/status/resolved")
                            .and_then(Value::as_bool)),
                    ),
                ])
            })
            .collect();

        let attachments = array(f.get("attachment"))
            .iter()
            .map(|a| {
                base(vec![
                    ("attachment_id", json!(text(a.get("id")))),
                    ("filename", json!(text(a.get("filename")))),
                    ("author", json!(user_name(a.get("author")))),
                    (
                        "author_account_id",
                        json!(text(a.pointer("/author/accountId"))),
                    ),
                    ("created", json!(ts(a.get("created")))),
                    ("size_bytes", json!(a.get("size").and_then(Value::as_i64))),
                    ("mime_type", json!(text(a.get("mimeType")))),
                    ("content_url", json!(text(a.get("content")))),
                ])
            })
            .collect();

        Ok(IssueRows {
            key: key.clone(),
            id: id.clone(),
            month: month.clone(),
            updated,
            rows: [
                vec![issue_row],
                comments,
                changelog,
                links,
                remote,
                attachments,
            ],
            digests: Default::default(),
        }
        .seal())
    }

    /// Custom fields with a value, by readable name, values simplified; sorted by name.
    fn custom_fields(&self, fields: &Value) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for (id, value) in fields.as_object().into_iter().flatten() {
            if !id.starts_with("customfield_") || value.is_null() {
                continue;
            }
            let schema = self.schemas.get(id);
            let simple = if self.sprint_fields.contains(id) {
                json!(sprint_names(value)
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect::<Vec<_>>())
            } else {
                simplify(value, schema.map(|s| s.kind.as_str()).unwrap_or(""))
            };
            if simple.is_null() {
                continue;
            }
            let name = self.names.get(id).cloned().unwrap_or_else(|| id.clone());
            out.insert(name, simple);
        }
        out
    }

    /// (name, state) of the issue's sprints, in the field's order (the sprint fields by id).
    fn sprints(&self, fields: &Value) -> Vec<(String, Option<String>)> {
        self.sprint_fields
            .iter()
            .filter_map(|id| fields.get(id))
            .flat_map(sprint_names)
            .collect()
    }
}

/// Sprint objects (`{name, state…}`), or the older `…Sprint@1a2b[id=1,state=ACTIVE,name=S 1,…]`
/// strings.
fn sprint_names(value: &Value) -> Vec<(String, Option<String>)> {
    array(Some(value))
        .iter()
        .filter_map(|s| match s {
            Value::Object(_) => Some((
                text(s.get("name"))?,
                text(s.get("state")).map(|st| st.to_ascii_lowercase()),
            )),
            Value::String(old) => {
                let attrs = old.split_once('[')?.1.trim_end_matches(']');
                let get = |k: &str| {
                    attrs
                        .split(',')
                        .find_map(|kv| kv.split_once('=').filter(|(a, _)| *a == k))
                        .map(|(_, v)| v.to_string())
                };
                Some((get("name")?, get("state").map(|st| st.to_ascii_lowercase())))
            }
            _ => None,
        })
        .collect()
}

/// A custom field value as analysts want it: options by value, users by display name, rich text
/// as plain text, timestamps normalised; other objects kept as they are.
fn simplify(value: &Value, kind: &str) -> Value {
    match value {
        Value::Null => Value::Null,
        Value::Array(items) => {
            let item_kind = if kind == "array" { "" } else { kind };
            Value::Array(
                items
                    .iter()
                    .map(|i| simplify(i, item_kind))
                    .filter(|v| !v.is_null())
                    .collect(),
            )
        }
        Value::String(s) if kind == "datetime" => parse_time(s)
            .map(|t| json!(format_time(&t)))
            .unwrap_or_else(|| json!(s)),
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) == Some("doc") {
                return adf::field_text(value).map_or(Value::Null, Value::String);
            }
            if let Some(v) = o.get("value").filter(|v| !v.is_object()) {
                // An option; a cascading select adds its child's value.
                return match o.get("child").and_then(|c| text(c.get("value"))) {
                    Some(child) => {
                        json!(format!("{} / {child}", text(Some(v)).unwrap_or_default()))
                    }
                    None => v.clone(),
                };
            }
            if o.contains_key("accountId") || o.contains_key("emailAddress") {
                if let Some(name) = user_name(Some(value)) {
                    return json!(name);
                }
            }
            for k in ["name", "key"] {
                if let Some(v) = o.get(k).and_then(Value::as_str) {
                    return json!(v);
                }
            }
            value.clone()
        }
        other => other.clone(),
    }
}

fn array(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// A string, or a number as text (ids come as either); empty strings are absent.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(v: Option<&Value>, each: impl Fn(&Value) -> Option<String>) -> Vec<String> {
    array(v).iter().filter_map(each).collect()
}

fn user_name(v: Option<&Value>) -> Option<String> {
    let u = v?;
    text(u.get("displayName"))
        .or_else(|| text(u.get("name")))
        .or_else(|| text(u.get("accountId")))
}

/// Jira's `2024-01-20T15:58:12.797+1100` (also with `+11:00` or `Z`).
pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let s = s.trim();
    chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// UTC, millisecond precision, in a form DuckDB casts to `TIMESTAMPTZ`.
fn format_time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f+00").to_string()
}

fn ts(v: Option<&Value>) -> Option<String> {
    text(v)
        .and_then(|s| parse_time(&s))
        .map(|t| format_time(&t))
}

fn is_date(s: &str) -> bool {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

/// `Story Points (team)` → `story_points_team`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    let out = out.trim_end_matches('_').to_string();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        format!("f_{out}")
    } else {
        out
    }
}

/// Fixtures shared by the unit tests of this module and [`super::partition`].
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn fields() -> Vec<FieldMeta> {
        serde_json::from_value(json!([
            {"id": "summary", "name": "Summary", "custom": false, "schema": {"type": "string", "system": "summary"}},
            {"id": "customfield_10020", "name": "Sprint", "custom": true,
             "schema": {"type": "array", "items": "json", "custom": SPRINT, "customId": 10020}},
            {"id": "customfield_10016", "name": "Story point estimate", "custom": true,
             "schema": {"type": "number", "custom": STORY_POINT_ESTIMATE, "customId": 10016}},
            {"id": "customfield_10050", "name": "Team", "custom": true,
             "schema": {"type": "option", "custom": "com.atlassian.jira.plugin.system.customfieldtypes:select"}},
            {"id": "customfield_10051", "name": "Severity", "custom": true,
             "schema": {"type": "number", "custom": "com.atlassian.jira.plugin.system.customfieldtypes:float"}},
            {"id": "customfield_10060", "name": "Notes", "custom": true,
             "schema": {"type": "string", "custom": "com.atlassian.jira.plugin.system.customfieldtypes:textarea"}},
            {"id": "customfield_10061", "name": "Dup", "custom": true, "schema": {"type": "string"}},
            {"id": "customfield_10062", "name": "Dup", "custom": true, "schema": {"type": "string"}},
            {"id": "customfield_10070", "name": "Go-live", "custom": true, "schema": {"type": "datetime"}}
        ]))
        .unwrap()
    }

    pub fn issue(key: &str, id: &str, created: &str) -> FetchedIssue {
        let mut fields = json!({
            "summary": format!("Summary of {key}"),
            "project": {"key": "OPS", "name": "Operations"},
            "issuetype": {"name": "Bug", "subtask": false},
            "status": {"name": "In Progress", "statusCategory": {"key": "indeterminate", "name": "In Progress"}},
            "priority": {"name": "High"},
            "resolution": null,
            "assignee": {"accountId": "a1", "displayName": "Ann"},
            "reporter": {"accountId": "r1", "displayName": "Rob"},
            "creator": {"accountId": "r1", "displayName": "Rob"},
            "created": created,
            "updated": "2024-03-02T09:00:00.000+0000",
            "resolutiondate": null,
            "duedate": "2024-04-01",
            "labels": ["backend", "urgent"],
            "components": [{"name": "API"}],
            "fixVersions": [{"name": "1.2"}],
            "versions": [],
            "parent": {"key": "OPS-1"}
        });
        let f = fields.as_object_mut().unwrap();
        f.insert("description".into(), json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [
                {"type": "text", "text": "see "},
                {"type": "text", "text": "docs", "marks": [{"type": "link", "attrs": {"href": "https://d.example.com"}}]}]}]}));
        f.insert(
            "customfield_10020".into(),
            json!([
            {"id": 1, "name": "Sprint 1", "state": "closed"},
            {"id": 2, "name": "Sprint 2", "state": "active"}]),
        );
        f.insert("customfield_10016".into(), json!(5.0));
        f.insert(
            "customfield_10050".into(),
            json!({"self": "x", "value": "Platform", "id": "10100"}),
        );
        f.insert("customfield_10051".into(), json!(2));
        f.insert(
            "customfield_10060".into(),
            json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "note"}]}]}),
        );
        f.insert("customfield_10061".into(), json!("a"));
        f.insert("customfield_10062".into(), json!("b"));
        f.insert(
            "customfield_10070".into(),
            json!("2024-05-01T10:00:00.000+0200"),
        );
        f.insert("customfield_99999".into(), Value::Null);
        let comment = json!({"id": "100", "author": {"accountId": "a1", "displayName": "Ann"},
            "updateAuthor": {"accountId": "a1", "displayName": "Ann"},
            "created": "2024-03-01T10:00:00.000+0100", "updated": "2024-03-01T10:00:00.000+0100",
            "visibility": {"type": "role", "value": "Developers"}});
        let mut comment = comment;
        comment["body"] = json!({"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [
            {"type": "inlineCard", "attrs": {"url": "https://github.com/acme/pr/1"}}]}]});
        f.insert(
            "comment".into(),
            json!({"total": 1, "maxResults": 1, "startAt": 0, "comments": [comment]}),
        );
        f.insert("issuelinks".into(), json!([
            {"id": "500", "type": {"name": "Blocks", "inward": "is blocked by", "outward": "blocks"},
             "outwardIssue": {"id": "9", "key": "OPS-9", "fields": {"summary": "Other", "status": {"name": "Done"}}}}]));
        f.insert(
            "attachment".into(),
            json!([
            {"id": 700, "filename": "log.txt", "author": {"accountId": "a1", "displayName": "Ann"},
             "created": "2024-03-01T11:00:00.000+0000", "size": 1234, "mimeType": "text/plain",
             "content": "https://acme.atlassian.net/rest/api/3/attachment/content/700"}]),
        );
        let items = json!([
            {"field": "status", "fieldtype": "jira", "fieldId": "status", "from": "1", "fromString": "To Do", "to": "3", "toString": "In Progress"},
            {"field": "assignee", "fieldtype": "jira", "fieldId": "assignee", "from": null, "fromString": null, "to": "a1", "toString": "Ann"}]);
        let history = json!({"id": "300", "author": {"accountId": "a1", "displayName": "Ann"},
            "created": "2024-03-02T09:00:00.000+0000", "items": items});
        FetchedIssue {
            issue: json!({
                "id": id, "key": key, "fields": fields,
                "changelog": {"startAt": 0, "maxResults": 1, "total": 1, "histories": [history]}
            }),
            remote_links: vec![json!({"id": 10000, "globalId": "system=http://gh/pr/1",
                "application": {"type": "com.github", "name": "GitHub"}, "relationship": "mentioned in",
                "object": {"url": "https://github.com/acme/pr/1", "title": "PR 1", "summary": "fix", "status": {"resolved": true}}})],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn jira_rows_map_every_table() {
        let m = Mapper::new(&fields(), &[]).unwrap();
        let r = m
            .map(&issue("OPS-7", "10007", "2024-02-29T23:30:00.000-0100"))
            .unwrap();
        // 23:30 at -01:00 is 00:30 UTC on March 1st: the UTC month partitions.
        assert_eq!(r.month, "2024-03");
        let i = &r.rows(Table::Issues)[0];
        assert_eq!(i["issue_key"], "OPS-7");
        assert_eq!(i["issue_created_month"], "2024-03");
        assert_eq!(i["created"], "2024-03-01 00:30:00.000+00");
        assert_eq!(i["status_category"], "indeterminate");
        assert_eq!(i["description"], "see docs (https://d.example.com)");
        assert_eq!(i["labels"], json!(["backend", "urgent"]));
        assert_eq!(i["sprint"], "Sprint 2");
        assert_eq!(i["sprints"], json!(["Sprint 1", "Sprint 2"]));
        assert_eq!(i["story_points"], 5.0);
        assert_eq!(i["parent_key"], "OPS-1");
        assert_eq!(i["resolved"], Value::Null);
        assert_eq!(
            i["custom_fields"],
            json!({"Dup (customfield_10061)": "a", "Dup (customfield_10062)": "b",
                   "Go-live": "2024-05-01 08:00:00.000+00", "Notes": "note", "Severity": 2,
                   "Sprint": ["Sprint 1", "Sprint 2"], "Story point estimate": 5.0, "Team": "Platform"})
        );
        let c = &r.rows(Table::Comments)[0];
        assert_eq!(c["body"], "https://github.com/acme/pr/1");
        assert_eq!(c["visibility"], "role:Developers");
        assert_eq!(c["created"], "2024-03-01 09:00:00.000+00");
        assert_eq!(r.rows(Table::Changelog).len(), 2);
        assert_eq!(r.rows(Table::Changelog)[1]["item_index"], 1);
        assert_eq!(r.rows(Table::Changelog)[1]["to_string"], "Ann");
        let l = &r.rows(Table::IssueLinks)[0];
        assert_eq!(
            (l["direction"].as_str(), l["relation"].as_str()),
            (Some("outward"), Some("blocks"))
        );
        assert_eq!(r.rows(Table::RemoteLinks)[0]["remote_link_id"], "10000");
        assert_eq!(r.rows(Table::RemoteLinks)[0]["resolved"], true);
        assert_eq!(r.rows(Table::Attachments)[0]["attachment_id"], "700");
        assert_eq!(r.rows(Table::Attachments)[0]["size_bytes"], 1234);
        // Every row of every table carries the key columns, and exactly the table's columns.
        let schema = m.schema();
        for t in Table::ALL {
            let names: Vec<String> = schema.columns(t).into_iter().map(|c| c.name).collect();
            for row in r.rows(t) {
                let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
                assert_eq!(keys.len(), names.len(), "{t:?}");
                for n in &names {
                    assert!(row.get(n).is_some(), "{t:?} row lacks {n}");
                }
            }
        }
    }

    #[test]
    fn jira_promoted_fields_resolve_by_name_and_type() {
        let m = Mapper::new(
            &fields(),
            &["Team".into(), "severity".into(), "Go-live".into()],
        )
        .unwrap();
        let p = &m.schema().promoted;
        assert_eq!(
            p.iter()
                .map(|p| (p.column.as_str(), p.field.as_str(), p.ty))
                .collect::<Vec<_>>(),
            [
                ("team", "Team", Varchar),
                ("severity", "Severity", Double),
                ("go_live", "Go-live", TimestampTz)
            ]
        );
        let e = Mapper::new(&fields(), &["Dup".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("customfield_10061") && e.contains("by id"),
            "{e}"
        );
        let by_id = Mapper::new(&fields(), &["customfield_10061".into()]).unwrap();
        assert_eq!(by_id.schema().promoted[0].field, "Dup (customfield_10061)");
        let e = Mapper::new(&fields(), &["Nope".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no custom field"), "{e}");
        let e = Mapper::new(&fields(), &["Sprint".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`sprint` is not free"), "{e}");
    }

    #[test]
    fn jira_issues_without_a_created_time_cannot_be_placed() {
        let m = Mapper::new(&[], &[]).unwrap();
        let mut f = issue("A-1", "1", "yesterday");
        assert!(matches!(m.map(&f), Err(MapError::BadCreated { .. })));
        f.issue["fields"].as_object_mut().unwrap().remove("created");
        assert_eq!(m.map(&f), Err(MapError::Missing("created")));
    }

    #[test]
    fn jira_times_parse_in_every_offset_form() {
        for s in [
            "2024-01-20T15:58:12.797+1100",
            "2024-01-20T15:58:12.797+11:00",
            "2024-01-20T04:58:12.797Z",
        ] {
            assert_eq!(
                format_time(&parse_time(s).unwrap()),
                "2024-01-20 04:58:12.797+00",
                "{s}"
            );
        }
        assert_eq!(
            sprint_names(&json!(["com.atlassian.greenhopper.service.sprint.Sprint@1f[id=3,rapidViewId=1,state=ACTIVE,name=S 3,goal=]"])),
            [("S 3".to_string(), Some("active".to_string()))]
        );
        assert_eq!(snake_case("Story Points (team)"), "story_points_team");
        assert_eq!(snake_case("3rd party"), "f_3rd_party");
    }
}

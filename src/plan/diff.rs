//! Desired vs recorded objects → the changes apply would make.

use super::impact::{Impact, Label};
use crate::registry::document::{Action, Kind, Object, Objects};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One field that differs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    /// `null` when the field was unset.
    pub old: Value,
    /// `null` when the field becomes unset.
    pub new: Value,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forces_replace: bool,
}

/// A change to one object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub kind: Kind,
    pub id: String,
    pub action: Action,
    /// The spec file (the recorded one for a delete).
    pub file: String,
    /// For an update or replace: the fields that differ. For a create or delete: empty (the whole
    /// object is in `object` / was recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// The desired object (absent for a delete): what apply records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Object>,
    /// The recorded object (absent for a create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Object>,
    /// Breaking, non-breaking or unknown, and what it would break ([`super::impact`]). Absent until
    /// assessed, and in plans saved by older binaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact: Option<Impact>,
}

impl Change {
    /// Whether [`super::impact::assess`] found that this change breaks something.
    pub fn is_breaking(&self) -> bool {
        self.impact
            .as_ref()
            .is_some_and(|i| i.label == Label::Breaking)
    }

    /// True when a field change needs the source's views rebuilt.
    pub fn needs_rebuild(&self) -> bool {
        let rebuild = self.kind.rebuild_fields();
        self.fields
            .iter()
            .any(|f| rebuild.contains(&f.field.as_str()))
    }
}

/// The pseudo-field for an object moved to another spec file.
pub const FILE_FIELD: &str = "(file)";

/// Every change from `recorded` to `desired`, in display order (kind, then id).
pub fn diff(desired: &Objects, recorded: &Objects) -> Vec<Change> {
    let mut changes = Vec::new();
    for (key, want) in desired {
        match recorded.get(key) {
            None => changes.push(Change {
                kind: want.kind,
                id: want.id.clone(),
                action: Action::Create,
                file: want.file.clone(),
                fields: Vec::new(),
                object: Some(want.clone()),
                before: None,
                impact: None,
            }),
            Some(have) if have.same_as(want) => {}
            Some(have) => {
                let fields = field_changes(have, want);
                if fields.is_empty() {
                    continue;
                }
                let action = if fields.iter().any(|f| f.forces_replace) {
                    Action::Replace
                } else {
                    Action::Update
                };
                changes.push(Change {
                    kind: want.kind,
                    id: want.id.clone(),
                    action,
                    file: want.file.clone(),
                    fields,
                    object: Some(want.clone()),
                    before: Some(have.clone()),
                    impact: None,
                });
            }
        }
    }
    for (key, have) in recorded {
        if !desired.contains_key(key) {
            changes.push(Change {
                kind: have.kind,
                id: have.id.clone(),
                action: Action::Delete,
                file: have.file.clone(),
                fields: Vec::new(),
                object: None,
                before: Some(have.clone()),
                impact: None,
            });
        }
    }
    changes.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
    changes
}

fn field_changes(have: &Object, want: &Object) -> Vec<FieldChange> {
    let replace = want.kind.replace_fields();
    // Desired field order first, then fields only the recorded side has.
    let mut names: Vec<&String> = want.fields().keys().collect();
    names.extend(
        have.fields()
            .keys()
            .filter(|k| !want.fields().contains_key(*k)),
    );
    let mut out: Vec<FieldChange> = names
        .into_iter()
        .filter(|k| have.get(k) != want.get(k))
        .map(|k| FieldChange {
            field: k.clone(),
            old: have.get(k).clone(),
            new: want.get(k).clone(),
            forces_replace: replace.contains(&k.as_str()),
        })
        .collect();
    if have.file != want.file {
        out.push(FieldChange {
            field: FILE_FIELD.into(),
            old: Value::String(have.file.clone()),
            new: Value::String(want.file.clone()),
            forces_replace: false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::document::index;
    use serde_json::json;

    fn table(id: &str, fields: Value) -> Object {
        Object::new(
            Kind::Table,
            id.into(),
            "registry/shop.yaml".into(),
            fields.as_object().unwrap().clone(),
        )
    }

    #[test]
    fn classifies_create_update_replace_delete() {
        let recorded = index(vec![
            table("a", json!({"name": "a", "description": "old"})),
            table("b", json!({"name": "b", "query_mode": "local"})),
            table("c", json!({"name": "c"})),
            table("same", json!({"name": "same"})),
        ]);
        let desired = index(vec![
            table("a", json!({"name": "a", "description": "new"})),
            table("b", json!({"name": "b", "query_mode": "remote"})),
            table("d", json!({"name": "d"})),
            table("same", json!({"name": "same"})),
        ]);
        let changes = diff(&desired, &recorded);
        let summary: Vec<(&str, Action)> =
            changes.iter().map(|c| (c.id.as_str(), c.action)).collect();
        assert_eq!(
            summary,
            vec![
                ("a", Action::Update),
                ("b", Action::Replace),
                ("c", Action::Delete),
                ("d", Action::Create)
            ]
        );
        assert_eq!(
            changes[0].fields,
            vec![FieldChange {
                field: "description".into(),
                old: json!("old"),
                new: json!("new"),
                forces_replace: false
            }]
        );
        assert!(changes[0].needs_rebuild());
        assert!(changes[1].fields[0].forces_replace);
    }

    #[test]
    fn a_field_removed_from_the_spec_shows_as_set_to_null() {
        let recorded = index(vec![table("a", json!({"name": "a", "cursor": "ts"}))]);
        let desired = index(vec![table("a", json!({"name": "a"}))]);
        let changes = diff(&desired, &recorded);
        assert_eq!(changes[0].action, Action::Replace);
        assert_eq!(changes[0].fields[0].field, "cursor");
        assert_eq!(changes[0].fields[0].new, Value::Null);
    }

    #[test]
    fn moving_an_object_to_another_file_is_an_update() {
        let recorded = index(vec![table("a", json!({"name": "a"}))]);
        let mut moved = table("a", json!({"name": "a"}));
        moved.file = "registry/other.yaml".into();
        let changes = diff(&index(vec![moved]), &recorded);
        assert_eq!(changes[0].action, Action::Update);
        assert_eq!(changes[0].fields[0].field, FILE_FIELD);
        assert!(!changes[0].needs_rebuild());
    }
}

//! Desired vs recorded objects → the changes apply would make.

use super::impact::{Impact, Label};
use crate::registry::document::{Action, Kind, Object, Objects};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One field that differs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    /// For a map field (`columns`, `variants`, a connection, a settings group): the one entry that
    /// differs. Maps are diffed entry by entry, as SQL is diffed line by line, so changing one
    /// column's description shows that column, not the whole map twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
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
    let mut out = Vec::new();
    for k in names {
        let (old, new) = (have.get(k), want.get(k));
        if old == new {
            continue;
        }
        let forces_replace = replace.contains(&k.as_str());
        match map_entries(old, new) {
            Some(entries) => out.extend(entries.into_iter().map(|(key, old, new)| FieldChange {
                field: k.clone(),
                key: Some(key),
                old,
                new,
                forces_replace,
            })),
            None => out.push(FieldChange {
                field: k.clone(),
                key: None,
                old: old.clone(),
                new: new.clone(),
                forces_replace,
            }),
        }
    }
    if have.file != want.file {
        out.push(FieldChange {
            key: None,
            field: FILE_FIELD.into(),
            old: Value::String(have.file.clone()),
            new: Value::String(want.file.clone()),
            forces_replace: false,
        });
    }
    out
}

/// The entries that differ between two maps (`(key, old, new)`, unset as null), in the new map's order
/// then the removed ones; `None` unless both sides are maps (an unset map counts as an empty one).
fn map_entries(old: &Value, new: &Value) -> Option<Vec<(String, Value, Value)>> {
    let empty = serde_json::Map::new();
    let (a, b) = match (old, new) {
        (Value::Object(a), Value::Object(b)) => (a, b),
        (Value::Null, Value::Object(b)) => (&empty, b),
        (Value::Object(a), Value::Null) => (a, &empty),
        _ => return None,
    };
    let removed = a.keys().filter(|k| !b.contains_key(*k));
    let entries = b
        .keys()
        .chain(removed)
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let get = |m: &serde_json::Map<String, Value>| m.get(k).cloned().unwrap_or(Value::Null);
            (k.clone(), get(a), get(b))
        })
        .collect();
    Some(entries)
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
                key: None,
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
    fn maps_are_diffed_entry_by_entry() {
        let recorded = index(vec![table(
            "a",
            json!({"name": "a", "columns": {"id": "key", "amount": "old", "gone": "x"}}),
        )]);
        let desired = index(vec![table(
            "a",
            json!({"name": "a", "columns": {"id": "key", "amount": "new", "added": "y"}}),
        )]);
        let changes = diff(&desired, &recorded);
        let got: Vec<(Option<&str>, Value, Value)> = changes[0]
            .fields
            .iter()
            .map(|f| (f.key.as_deref(), f.old.clone(), f.new.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("amount"), json!("old"), json!("new")),
                (Some("added"), Value::Null, json!("y")),
                (Some("gone"), json!("x"), Value::Null),
            ]
        );
        assert!(changes[0].fields.iter().all(|f| f.field == "columns"));
        assert!(changes[0].needs_rebuild());
        // A map that appears where there was none lists its entries as added.
        let bare = index(vec![table("a", json!({"name": "a"}))]);
        let changes = diff(&desired, &bare);
        assert_eq!(changes[0].fields.len(), 3);
        assert!(changes[0].fields.iter().all(|f| f.old.is_null()));
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

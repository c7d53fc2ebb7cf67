//! The work a plan's changes need, for [`crate::registry::dag`] to lay out as tasks: which tables to
//! extract again, which sources' views to rebuild, why analytics is published, which metrics to
//! check.

use super::diff::Change;
use crate::registry::dag::{Occasion, Work};
use crate::registry::document::{Action, Kind};
use crate::registry::registered::Registered;
use std::collections::BTreeSet;

/// The work `changes` need, given what they lead to (`desired`, typed). `failed_extracts` are the
/// tables whose last extract failed: any change to one of them queues its extract again (the
/// change may be the fix).
pub fn work(changes: &[Change], desired: &Registered, failed_extracts: &BTreeSet<String>) -> Work {
    let mut w = Work {
        occasion: Occasion::Changes,
        ..Work::default()
    };
    let extract = |w: &mut Work, table_id: &str, reason: String| {
        w.tables.entry(table_id.to_string()).or_insert(reason);
    };
    for c in changes {
        match (c.kind, c.action) {
            (Kind::Table, Action::Create) => extract(&mut w, &c.id, "new table".into()),
            (Kind::Table, Action::Replace) => {
                let why: Vec<&str> = c
                    .fields
                    .iter()
                    .filter(|f| f.forces_replace)
                    .map(|f| f.field.as_str())
                    .collect();
                extract(&mut w, &c.id, format!("{} changed", why.join(", ")))
            }
            (Kind::Source, Action::Create | Action::Replace) => {
                let reason = if c.action == Action::Create {
                    format!("new source {}", c.id)
                } else {
                    format!("source {} changed", c.id)
                };
                for t in desired.tables_of(&c.id) {
                    extract(&mut w, &t.id, reason.clone());
                }
            }
            (Kind::Table, Action::Update) if failed_extracts.contains(&c.id) => extract(
                &mut w,
                &c.id,
                "its last extract failed and its spec changed".into(),
            ),
            (Kind::Table, Action::Update) if c.needs_rebuild() => {
                if let Some(s) = c.object.as_ref().and_then(|o| o.str("source")) {
                    w.rebuild.insert(s.to_string());
                }
            }
            (Kind::Table, Action::Delete) => {
                // Its source's views lose it; a deleted source's views go with the next publish.
                let source = c.before.as_ref().and_then(|o| o.str("source"));
                match source {
                    Some(s) if desired.sources.contains_key(s) => {
                        w.rebuild.insert(s.to_string());
                    }
                    _ => {
                        w.publish.insert("a table was removed".into());
                    }
                }
            }
            (Kind::Source, Action::Delete) => {
                w.publish.insert("a source was removed".into());
            }
            (Kind::Transform, _) => {
                w.publish.insert("transforms changed".into());
            }
            (Kind::Metric, action) => {
                let reason = if action == Action::Create {
                    "new metric"
                } else {
                    "definition changed"
                };
                w.checks.insert(c.id.clone(), reason.into());
            }
            _ => {}
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::super::diff::diff;
    use super::*;
    use crate::registry::dag;
    use crate::registry::document::{index, Object, Objects};
    use crate::registry::task::Task;
    use serde_json::json;

    /// The tasks of `changes`, as a plan lays them out.
    fn tasks(changes: &[Change], desired: &Objects, failed: &BTreeSet<String>) -> Vec<Task> {
        let reg = Registered::from_objects(desired).unwrap();
        dag::tasks(&reg, &work(changes, &reg, failed))
    }

    fn obj(kind: Kind, id: &str, fields: serde_json::Value) -> Object {
        Object::new(
            kind,
            id.into(),
            "f".into(),
            fields.as_object().unwrap().clone(),
        )
    }

    fn ids(tasks: &[Task]) -> Vec<&str> {
        tasks.iter().map(|t| t.id.as_str()).collect()
    }

    fn instance() -> Objects {
        index(vec![
            obj(Kind::Source, "shop", json!({"type": "csv"})),
            obj(
                Kind::Table,
                "shop.orders",
                json!({"source": "shop", "name": "orders"}),
            ),
            obj(
                Kind::Table,
                "shop.remote",
                json!({"source": "shop", "name": "remote", "query_mode": "remote"}),
            ),
            obj(
                Kind::Transform,
                "daily",
                json!({"source": "shop", "sql": "select 1", "inputs": ["facts"]}),
            ),
            obj(
                Kind::Transform,
                "facts",
                json!({"source": "shop", "sql": "select 1", "inputs": ["orders"]}),
            ),
            obj(
                Kind::Metric,
                "sales/revenue",
                json!({"sql": "select 1", "tables": ["daily"]}),
            ),
        ])
    }

    #[test]
    fn everything_new_runs_in_dependency_order() {
        let desired = instance();
        let tasks = tasks(&diff(&desired, &Objects::new()), &desired, &BTreeSet::new());
        assert_eq!(
            ids(&tasks),
            vec![
                "extract:shop.orders",
                "attach:shop.remote",
                "rebuild:shop",
                "publish:analytics",
                "transform:facts",
                "transform:daily",
                "check:sales/revenue",
            ]
        );
        let check = tasks.last().unwrap();
        assert!(check.after.contains(&"transform:daily".to_string()));
    }

    #[test]
    fn no_changes_no_tasks_and_a_metric_edit_only_checks_it() {
        let desired = instance();
        assert!(tasks(&diff(&desired, &desired), &desired, &BTreeSet::new()).is_empty());
        let mut edited = desired.clone();
        edited
            .get_mut(&(Kind::Metric, "sales/revenue".into()))
            .unwrap()
            .fields_mut()
            .insert("sql".into(), json!("select 2"));
        let t = tasks(&diff(&edited, &desired), &edited, &BTreeSet::new());
        assert_eq!(ids(&t), vec!["check:sales/revenue"]);
        assert!(t[0].after.is_empty());
    }

    #[test]
    fn description_change_rebuilds_without_extracting() {
        let recorded = instance();
        let mut desired = recorded.clone();
        desired
            .get_mut(&(Kind::Table, "shop.orders".into()))
            .unwrap()
            .fields_mut()
            .insert("description".into(), json!("Orders"));
        let t = tasks(&diff(&desired, &recorded), &desired, &BTreeSet::new());
        assert_eq!(ids(&t)[..2], ["rebuild:shop", "publish:analytics"]);
        assert!(!ids(&t).iter().any(|i| i.starts_with("extract")));
        // The same change to a table whose last extract failed tries the extract again.
        let failed = BTreeSet::from(["shop.orders".to_string()]);
        let t = tasks(&diff(&desired, &recorded), &desired, &failed);
        assert_eq!(ids(&t)[..2], ["extract:shop.orders", "rebuild:shop"]);
        assert_eq!(t[0].reason, "its last extract failed and its spec changed");
    }

    #[test]
    fn a_changed_transform_written_in_mixed_case_rebuilds_after_what_it_reads() {
        let recorded = instance();
        let mut desired = recorded.clone();
        // `Facts` as written, read as `facts` by `daily` (inputs are lower-cased).
        let facts = desired.remove(&(Kind::Transform, "facts".into())).unwrap();
        let mut renamed = Object::new(
            Kind::Transform,
            "Facts".into(),
            facts.file.clone(),
            facts.fields().clone(),
        );
        renamed.fields_mut().insert("sql".into(), json!("select 2"));
        desired.insert((Kind::Transform, "Facts".into()), renamed);
        let t = tasks(&diff(&desired, &recorded), &desired, &BTreeSet::new());
        let daily = t.iter().find(|x| x.id == "transform:daily").unwrap();
        assert!(
            daily.after.contains(&"transform:Facts".to_string()),
            "{:?}",
            daily.after
        );
        let at = |id: &str| t.iter().position(|x| x.id == id).unwrap();
        assert!(at("transform:Facts") < at("transform:daily"));
    }
}

//! The tasks an apply runs for a set of changes, in an order that respects their dependencies:
//! extract/attach (table) → rebuild (source) → publish (analytics) → transform → check (metric).

use super::diff::{Action, Change};
use super::object::{Kind, Objects};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Copy a table's rows from its source to Parquet.
    Extract,
    /// Register a remote table (queries go to the source).
    Attach,
    /// Rewrite one source's extract.duckdb views.
    Rebuild,
    /// Build a new analytics.duckdb from every extract and swap it in.
    Publish,
    /// Build one transform in analytics.duckdb.
    Transform,
    /// Bind a metric's SQL against the published schema.
    Check,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Extract => "extract",
            TaskKind::Attach => "attach",
            TaskKind::Rebuild => "rebuild",
            TaskKind::Publish => "publish",
            TaskKind::Transform => "transform",
            TaskKind::Check => "check",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// `<kind>:<target>`, unique in a plan.
    pub id: String,
    pub kind: TaskKind,
    pub target: String,
    /// Ids of the tasks that must finish first.
    pub after: Vec<String>,
    /// Why it runs, for the reader of the plan.
    pub reason: String,
}

pub const ANALYTICS: &str = "analytics";

#[derive(Default)]
struct Builder {
    tasks: BTreeMap<String, Task>,
    /// Sources to rebuild → the data tasks each waits for.
    rebuild: BTreeMap<String, Vec<String>>,
}

impl Builder {
    fn add(&mut self, kind: TaskKind, target: &str, reason: impl Into<String>) -> String {
        let id = format!("{}:{target}", kind.as_str());
        self.tasks.entry(id.clone()).or_insert_with(|| Task {
            id: id.clone(),
            kind,
            target: target.to_string(),
            after: Vec::new(),
            reason: reason.into(),
        });
        id
    }

    fn after(&mut self, id: &str, dep: String) {
        if let Some(t) = self.tasks.get_mut(id) {
            if !t.after.contains(&dep) {
                t.after.push(dep);
            }
        }
    }
}

/// The tasks for `changes`, given the desired state they lead to. `failed_extracts` are the tables
/// whose last extract failed: any change to one of them queues its extract again (the change may be
/// the fix).
pub fn tasks(
    changes: &[Change],
    desired: &Objects,
    failed_extracts: &BTreeSet<String>,
) -> Vec<Task> {
    let mut b = Builder::default();
    let mut publish_reasons: BTreeSet<&str> = BTreeSet::new();

    let data_task = |b: &mut Builder, table_id: &str, reason: String| {
        let Some(t) = desired.get(&(Kind::Table, table_id.to_string())) else {
            return;
        };
        let kind = if t.str("query_mode") == Some("remote") {
            TaskKind::Attach
        } else {
            TaskKind::Extract
        };
        let id = b.add(kind, table_id, reason);
        let source = t.str("source").unwrap_or_default().to_string();
        b.rebuild.entry(source).or_default().push(id);
    };

    for c in changes {
        match (c.kind, c.action) {
            (Kind::Table, Action::Create) => data_task(&mut b, &c.id, "new table".into()),
            (Kind::Table, Action::Replace) => {
                let why: Vec<&str> = c
                    .fields
                    .iter()
                    .filter(|f| f.forces_replace)
                    .map(|f| f.field.as_str())
                    .collect();
                data_task(&mut b, &c.id, format!("{} changed", why.join(", ")))
            }
            (Kind::Source, Action::Create | Action::Replace) => {
                let reason = if c.action == Action::Create {
                    format!("new source {}", c.id)
                } else {
                    format!("source {} changed", c.id)
                };
                for t in desired.values().filter(|o| o.kind == Kind::Table) {
                    if t.str("source") == Some(c.id.as_str()) {
                        data_task(&mut b, &t.id, reason.clone());
                    }
                }
            }
            (Kind::Table, Action::Update) if failed_extracts.contains(&c.id) => data_task(
                &mut b,
                &c.id,
                "its last extract failed and its spec changed".into(),
            ),
            (Kind::Table, Action::Update) if c.needs_rebuild() => {
                if let Some(s) = c.object.as_ref().and_then(|o| o.str("source")) {
                    b.rebuild.entry(s.to_string()).or_default();
                }
            }
            (Kind::Table, Action::Delete) => {
                // Its source's views lose it; a deleted source's views go with the next publish.
                let source = c.before.as_ref().and_then(|o| o.str("source"));
                match source {
                    Some(s) if desired.contains_key(&(Kind::Source, s.to_string())) => {
                        b.rebuild.entry(s.to_string()).or_default();
                    }
                    _ => {
                        publish_reasons.insert("a table was removed");
                    }
                }
            }
            (Kind::Source, Action::Delete) => {
                publish_reasons.insert("a source was removed");
            }
            (Kind::Transform, _) => {
                publish_reasons.insert("transforms changed");
            }
            _ => {}
        }
    }

    let mut rebuild_ids = Vec::new();
    for (source, deps) in std::mem::take(&mut b.rebuild) {
        let id = b.add(TaskKind::Rebuild, &source, "its tables changed");
        for d in deps {
            b.after(&id, d);
        }
        rebuild_ids.push(id);
    }
    let mut published = None;
    if !rebuild_ids.is_empty() || !publish_reasons.is_empty() {
        let reason = if rebuild_ids.is_empty() {
            publish_reasons.into_iter().collect::<Vec<_>>().join("; ")
        } else {
            "sources were rebuilt".into()
        };
        let id = b.add(TaskKind::Publish, ANALYTICS, reason);
        for r in rebuild_ids {
            b.after(&id, r);
        }
        published = Some(id);
    }

    // A publish builds a new analytics file, so every transform is rebuilt and every metric
    // re-checked against it. Without one, only changed metrics are checked.
    let transforms: BTreeSet<&str> = desired
        .values()
        .filter(|o| o.kind == Kind::Transform)
        .map(|o| o.id.as_str())
        .collect();
    if let Some(p) = &published {
        for t in desired.values().filter(|o| o.kind == Kind::Transform) {
            let id = b.add(TaskKind::Transform, &t.id, "analytics is republished");
            b.after(&id, p.clone());
            for input in string_list(t.get("inputs")) {
                if transforms.contains(input) && input != t.id {
                    b.after(&id, format!("transform:{input}"));
                }
            }
        }
    }
    let changed_metrics: BTreeMap<&str, Action> = changes
        .iter()
        .filter(|c| c.kind == Kind::Metric)
        .map(|c| (c.id.as_str(), c.action))
        .collect();
    for m in desired.values().filter(|o| o.kind == Kind::Metric) {
        let reason = if changed_metrics.get(m.id.as_str()) == Some(&Action::Create) {
            "new metric"
        } else if changed_metrics.contains_key(m.id.as_str()) {
            "definition changed"
        } else if published.is_some() {
            "analytics is republished"
        } else {
            continue;
        };
        let id = b.add(TaskKind::Check, &m.id, reason);
        if let Some(p) = &published {
            b.after(&id, p.clone());
        }
        for input in string_list(m.get("tables")) {
            if transforms.contains(input) && published.is_some() {
                b.after(&id, format!("transform:{input}"));
            }
        }
    }
    order(b.tasks)
}

fn string_list(v: &serde_json::Value) -> impl Iterator<Item = &str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str())
}

/// Dependencies first; among ready tasks, by phase (kind) then target, so plans print stably.
pub(crate) fn order(tasks: BTreeMap<String, Task>) -> Vec<Task> {
    let mut graph = petgraph::graph::DiGraph::<&Task, ()>::new();
    let index: BTreeMap<&str, _> = tasks
        .values()
        .map(|t| (t.id.as_str(), graph.add_node(t)))
        .collect();
    for t in tasks.values() {
        for dep in &t.after {
            if let Some(&d) = index.get(dep.as_str()) {
                graph.add_edge(d, index[t.id.as_str()], ());
            }
        }
    }
    // Kahn's algorithm with a sorted ready set (petgraph's toposort order is not stable).
    let mut indegree: Vec<usize> = graph
        .node_indices()
        .map(|n| {
            graph
                .neighbors_directed(n, petgraph::Direction::Incoming)
                .count()
        })
        .collect();
    let key = |n: petgraph::graph::NodeIndex| (graph[n].kind, graph[n].target.clone());
    let mut ready: BTreeSet<_> = graph
        .node_indices()
        .filter(|n| indegree[n.index()] == 0)
        .map(|n| (key(n), n))
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    while let Some(entry) = ready.pop_first() {
        let n = entry.1;
        out.push(graph[n].clone());
        for m in graph.neighbors_directed(n, petgraph::Direction::Outgoing) {
            indegree[m.index()] -= 1;
            if indegree[m.index()] == 0 {
                ready.insert((key(m), m));
            }
        }
    }
    // Transforms were checked acyclic by validate; anything left over would be a bug, not input.
    debug_assert_eq!(out.len(), graph.node_count(), "task graph has a cycle");
    out
}

#[cfg(test)]
mod tests {
    use super::super::diff::diff;
    use super::super::object::{index, Object};
    use super::*;
    use serde_json::json;

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
            obj(Kind::Transform, "daily", json!({"inputs": ["facts"]})),
            obj(Kind::Transform, "facts", json!({"inputs": ["orders"]})),
            obj(Kind::Metric, "sales/revenue", json!({"tables": ["daily"]})),
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
}

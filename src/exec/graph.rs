//! The task DAG of a run: which tasks, and what each waits for. Built from what is registered (a
//! sync of some or all tables) or taken from a plan (apply), merged with tasks an earlier apply left
//! pending; rendered by `pipeline graph` as DOT, Mermaid or JSON.

use crate::plan::tasks::{order, Task, TaskKind, ANALYTICS};
use crate::registered::Registered;
use crate::spec::model::QueryMode;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeMap, BTreeSet};

/// Which tables a run syncs.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Source names; empty with `tables` empty means everything.
    pub sources: Vec<String>,
    /// Table ids or view names.
    pub tables: Vec<String>,
}

impl Selection {
    pub fn is_all(&self) -> bool {
        self.sources.is_empty() && self.tables.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    #[error("no registered source `{name}`{hint}")]
    UnknownSource { name: String, hint: String },
    #[error("no registered table `{name}` (by id or name){hint}")]
    UnknownTable { name: String, hint: String },
}

fn hint(name: &str, candidates: impl Iterator<Item = String>) -> String {
    let c: Vec<String> = candidates.collect();
    match crate::diag::suggest(name, c.iter().map(|s| s.as_str())) {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

/// The tasks of a sync: extract (or attach) each selected table, rebuild their sources' extracts,
/// publish analytics, build every transform and check every metric.
pub fn sync_tasks(reg: &Registered, sel: &Selection) -> Result<Vec<Task>, SelectionError> {
    let mut chosen: BTreeSet<&str> = BTreeSet::new();
    for s in &sel.sources {
        if !reg.sources.contains_key(s) {
            return Err(SelectionError::UnknownSource {
                name: s.clone(),
                hint: hint(s, reg.sources.keys().cloned()),
            });
        }
        chosen.extend(reg.tables_of(s).map(|t| t.id.as_str()));
    }
    for name in &sel.tables {
        let t = reg
            .table(name)
            .ok_or_else(|| SelectionError::UnknownTable {
                name: name.clone(),
                hint: hint(
                    name,
                    reg.tables
                        .values()
                        .flat_map(|t| [t.id.clone(), t.name.clone()]),
                ),
            })?;
        chosen.insert(t.id.as_str());
    }
    if sel.is_all() {
        chosen.extend(reg.tables.keys().map(|k| k.as_str()));
    }
    let mut tasks: BTreeMap<String, Task> = BTreeMap::new();
    let mut add = |kind: TaskKind, target: &str, reason: &str, after: Vec<String>| -> String {
        let id = format!("{}:{target}", kind.as_str());
        tasks.insert(
            id.clone(),
            Task {
                id: id.clone(),
                kind,
                target: target.into(),
                after,
                reason: reason.into(),
            },
        );
        id
    };
    let mut by_source: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for id in &chosen {
        let t = &reg.tables[*id];
        let kind = if t.query_mode() == QueryMode::Remote {
            TaskKind::Attach
        } else {
            TaskKind::Extract
        };
        let task = add(kind, id, "sync", Vec::new());
        by_source.entry(t.source.as_str()).or_default().push(task);
    }
    let rebuilds: Vec<String> = by_source
        .into_iter()
        .map(|(s, deps)| add(TaskKind::Rebuild, s, "its tables were synced", deps))
        .collect();
    let publish = add(TaskKind::Publish, ANALYTICS, "sync", rebuilds);
    for (name, t) in &reg.transforms {
        let mut after = vec![publish.clone()];
        after.extend(
            t.inputs
                .iter()
                .filter(|i| reg.transforms.contains_key(*i) && *i != name)
                .map(|i| format!("transform:{i}")),
        );
        add(TaskKind::Transform, name, "analytics is republished", after);
    }
    for (id, m) in &reg.metrics {
        let mut after = vec![publish.clone()];
        after.extend(
            m.tables
                .iter()
                .filter(|t| reg.transforms.contains_key(*t))
                .map(|t| format!("transform:{t}")),
        );
        add(TaskKind::Check, id, "analytics is republished", after);
    }
    Ok(order(tasks))
}

/// `tasks` plus `pending` (left by an earlier apply that did not finish them), ordered.
pub fn merge(tasks: Vec<Task>, pending: &[Task]) -> Vec<Task> {
    let mut all: BTreeMap<String, Task> = tasks.into_iter().map(|t| (t.id.clone(), t)).collect();
    for p in pending {
        let entry = all.entry(p.id.clone()).or_insert_with(|| {
            let mut t = p.clone();
            t.reason = format!("{} (pending)", p.reason);
            t
        });
        for dep in &p.after {
            if !entry.after.contains(dep) {
                entry.after.push(dep.clone());
            }
        }
    }
    order(all)
}

/// The tasks as a petgraph graph (edges point from a task to the tasks that wait for it).
pub fn graph(tasks: &[Task]) -> (DiGraph<Task, ()>, BTreeMap<String, NodeIndex>) {
    let mut g = DiGraph::new();
    let index: BTreeMap<String, NodeIndex> = tasks
        .iter()
        .map(|t| (t.id.clone(), g.add_node(t.clone())))
        .collect();
    for t in tasks {
        for dep in &t.after {
            if let Some(&d) = index.get(dep) {
                g.add_edge(d, index[&t.id], ());
            }
        }
    }
    (g, index)
}

/// Graphviz DOT.
pub fn dot(tasks: &[Task]) -> String {
    let mut out = String::from(
        "digraph pipeline {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n",
    );
    for t in tasks {
        out.push_str(&format!(
            "  \"{}\" [label=\"{}\\n{}\"];\n",
            esc(&t.id),
            t.kind.as_str(),
            esc(&t.target)
        ));
    }
    for t in tasks {
        for d in &t.after {
            out.push_str(&format!("  \"{}\" -> \"{}\";\n", esc(d), esc(&t.id)));
        }
    }
    out.push_str("}\n");
    out
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Mermaid flowchart (renders in GitHub markdown).
pub fn mermaid(tasks: &[Task]) -> String {
    let ids: BTreeMap<&str, String> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), format!("t{i}")))
        .collect();
    let mut out = String::from("flowchart LR\n");
    for t in tasks {
        out.push_str(&format!(
            "  {}[\"{}: {}\"]\n",
            ids[t.id.as_str()],
            t.kind.as_str(),
            t.target.replace('"', "#quot;")
        ));
    }
    for t in tasks {
        for d in &t.after {
            if let Some(from) = ids.get(d.as_str()) {
                out.push_str(&format!("  {from} --> {}\n", ids[t.id.as_str()]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::object::{index, Kind, Object};
    use serde_json::json;

    fn obj(kind: Kind, id: &str, fields: serde_json::Value) -> Object {
        Object::new(
            kind,
            id.into(),
            "f".into(),
            fields.as_object().unwrap().clone(),
        )
    }

    fn registered() -> Registered {
        Registered::from_objects(&index(vec![
            obj(Kind::Source, "shop", json!({"type": "csv"})),
            obj(Kind::Source, "crm", json!({"type": "csv"})),
            obj(
                Kind::Table,
                "shop.orders",
                json!({"source": "shop", "name": "orders"}),
            ),
            obj(
                Kind::Table,
                "crm.spend",
                json!({"source": "crm", "name": "spend"}),
            ),
            obj(
                Kind::Transform,
                "facts",
                json!({"source": "shop", "sql": "select 1", "inputs": ["orders"]}),
            ),
            obj(
                Kind::Transform,
                "daily",
                json!({"source": "shop", "sql": "select 1", "inputs": ["facts"]}),
            ),
            obj(
                Kind::Metric,
                "r/rev",
                json!({"sql": "select 1", "tables": ["daily"]}),
            ),
        ]))
        .unwrap()
    }

    #[test]
    fn a_full_sync_runs_everything_in_dependency_order() {
        let tasks = sync_tasks(&registered(), &Selection::default()).unwrap();
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "extract:crm.spend",
                "extract:shop.orders",
                "rebuild:crm",
                "rebuild:shop",
                "publish:analytics",
                "transform:facts",
                "transform:daily",
                "check:r/rev"
            ]
        );
        let daily = tasks.iter().find(|t| t.id == "transform:daily").unwrap();
        assert!(daily.after.contains(&"transform:facts".to_string()));
        assert!(dot(&tasks).contains("\"transform:facts\" -> \"transform:daily\""));
        assert!(mermaid(&tasks).contains("-->"));
    }

    #[test]
    fn a_selection_syncs_only_its_tables_and_names_unknown_ones() {
        let sel = Selection {
            sources: vec![],
            tables: vec!["orders".into()],
        };
        let tasks = sync_tasks(&registered(), &sel).unwrap();
        assert!(tasks.iter().any(|t| t.id == "extract:shop.orders"));
        assert!(!tasks.iter().any(|t| t.id.starts_with("extract:crm")));
        let err = sync_tasks(
            &registered(),
            &Selection {
                sources: vec!["shpo".into()],
                tables: vec![],
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("did you mean `shop`"), "{err}");
    }
}

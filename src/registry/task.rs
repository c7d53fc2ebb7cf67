//! A task: one unit of work of a run (extract a table, rebuild a source's views, publish analytics,
//! build a transform, check a metric), and the order tasks run in.
//!
//! Tasks are plain values: a plan lists the ones apply will queue, the state keeps the queued ones
//! until a run completes them, the runner executes them. [`crate::registry::dag`] decides which tasks
//! a piece of work needs.

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

    /// The kind named `name` (as [`TaskKind::as_str`] spells it).
    pub fn from_name(name: &str) -> Option<TaskKind> {
        [
            TaskKind::Extract,
            TaskKind::Attach,
            TaskKind::Rebuild,
            TaskKind::Publish,
            TaskKind::Transform,
            TaskKind::Check,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
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

impl Task {
    /// The id of the task of `kind` on `target`.
    pub fn id_of(kind: TaskKind, target: &str) -> String {
        format!("{}:{target}", kind.as_str())
    }
}

/// The target of the publish task.
pub const ANALYTICS: &str = "analytics";

/// Dependencies first; among ready tasks, by phase (kind) then target, so plans print stably.
pub fn order(tasks: BTreeMap<String, Task>) -> Vec<Task> {
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
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in [TaskKind::Extract, TaskKind::Check, TaskKind::Publish] {
            assert_eq!(TaskKind::from_name(k.as_str()), Some(k));
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json, serde_json::json!(k.as_str()));
        }
        assert_eq!(TaskKind::from_name("bogus"), None);
    }
}

//! Data lineage: which transforms and metrics read each table, as `pipeline graph --lineage` shows
//! it. Values only, from the typed registry: tables → transforms (in the order their SQL reads each
//! other) → metrics.

use super::registered::Registered;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// What a lineage node is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Table,
    Transform,
    Metric,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Table => "table",
            NodeKind::Transform => "transform",
            NodeKind::Metric => "metric",
        }
    }
}

/// A table (by view name), a transform (by name) or a metric (by id).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Node {
    pub kind: NodeKind,
    pub name: String,
    /// The source a table or transform belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A transform or metric that reads a table, directly or through transforms.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsedBy {
    pub kind: NodeKind,
    pub name: String,
    /// It reads the table itself (not only a transform built from it).
    pub direct: bool,
}

/// Nodes and "is read by" edges.
#[derive(Debug, Default, serde::Serialize)]
pub struct Lineage {
    pub nodes: Vec<Node>,
    /// (index of what is read, index of what reads it).
    pub edges: Vec<(usize, usize)>,
}

impl Lineage {
    pub fn of(reg: &Registered) -> Lineage {
        let mut nodes: Vec<Node> = Vec::new();
        // Lower-case view name → node: DuckDB resolves names without regard to case.
        let mut by_view: BTreeMap<String, usize> = BTreeMap::new();
        for t in reg.tables.values() {
            by_view.insert(t.name.to_lowercase(), nodes.len());
            nodes.push(Node {
                kind: NodeKind::Table,
                name: t.name.clone(),
                source: Some(t.source.clone()),
            });
        }
        for (name, t) in &reg.transforms {
            by_view.insert(name.to_lowercase(), nodes.len());
            nodes.push(Node {
                kind: NodeKind::Transform,
                name: name.clone(),
                source: Some(t.source.clone()),
            });
        }
        let mut edges = BTreeSet::new();
        for (name, t) in &reg.transforms {
            let to = by_view[&name.to_lowercase()];
            for input in &t.inputs {
                if let Some(&from) = by_view.get(&input.to_lowercase()) {
                    edges.insert((from, to));
                }
            }
        }
        for (id, m) in &reg.metrics {
            let to = nodes.len();
            nodes.push(Node {
                kind: NodeKind::Metric,
                name: id.clone(),
                source: None,
            });
            for input in &m.tables {
                if let Some(&from) = by_view.get(&input.to_lowercase()) {
                    edges.insert((from, to));
                }
            }
        }
        Lineage {
            nodes,
            edges: edges.into_iter().collect(),
        }
    }

    /// Everything that reads the table whose view is `view` (compared without regard to case),
    /// directly or through transforms: transforms first, then metrics, each by name, with whether
    /// it reads the table itself (`pipeline profile`'s `used_by`).
    pub fn used_by(&self, view: &str) -> Vec<UsedBy> {
        let Some(start) = self
            .nodes
            .iter()
            .position(|n| n.kind == NodeKind::Table && n.name.eq_ignore_ascii_case(view))
        else {
            return Vec::new();
        };
        let readers = self.readers();
        let direct: BTreeSet<usize> = readers.get(&start).into_iter().flatten().copied().collect();
        let mut found: BTreeSet<usize> = BTreeSet::new();
        let mut queue = vec![start];
        while let Some(n) = queue.pop() {
            for &m in readers.get(&n).into_iter().flatten() {
                if found.insert(m) {
                    queue.push(m);
                }
            }
        }
        let mut out: Vec<UsedBy> = found
            .into_iter()
            .map(|i| UsedBy {
                kind: self.nodes[i].kind,
                name: self.nodes[i].name.clone(),
                direct: direct.contains(&i),
            })
            .collect();
        out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        out
    }

    fn readers(&self) -> BTreeMap<usize, Vec<usize>> {
        let mut out: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &(from, to) in &self.edges {
            out.entry(from).or_default().push(to);
        }
        for list in out.values_mut() {
            list.sort_by(|a, b| self.nodes[*a].cmp(&self.nodes[*b]));
        }
        out
    }

    /// A terminal tree per source: each table with what reads it, recursively (like `cargo tree
    /// -i`). A node already expanded above is marked `(*)` instead of repeated.
    pub fn tree(&self) -> String {
        let readers = self.readers();
        let mut out = String::new();
        let mut by_source: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.kind == NodeKind::Table {
                by_source
                    .entry(n.source.as_deref().unwrap_or(""))
                    .or_default()
                    .push(i);
            }
        }
        let mut shown = BTreeSet::new();
        for (source, mut tables) in by_source {
            tables.sort_by(|a, b| self.nodes[*a].name.cmp(&self.nodes[*b].name));
            let _ = writeln!(out, "{source}");
            let last = tables.len().saturating_sub(1);
            for (k, &t) in tables.iter().enumerate() {
                self.branch(&mut out, &readers, &mut shown, t, "", k == last);
            }
        }
        // Transforms that read no table (constants, table functions) still belong in the picture.
        let orphans: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].kind != NodeKind::Table && !shown.contains(i))
            .filter(|i| !self.edges.iter().any(|(_, to)| to == i))
            .collect();
        if !orphans.is_empty() {
            let _ = writeln!(out, "(reading no registered table)");
            let last = orphans.len() - 1;
            for (k, &i) in orphans.iter().enumerate() {
                self.branch(&mut out, &readers, &mut shown, i, "", k == last);
            }
        }
        out
    }

    fn branch(
        &self,
        out: &mut String,
        readers: &BTreeMap<usize, Vec<usize>>,
        shown: &mut BTreeSet<usize>,
        node: usize,
        prefix: &str,
        last: bool,
    ) {
        let n = &self.nodes[node];
        let again = !shown.insert(node);
        let children = readers.get(&node).map(Vec::as_slice).unwrap_or(&[]);
        let mark = if again && !children.is_empty() {
            " (*)"
        } else {
            ""
        };
        let elbow = if last { "└── " } else { "├── " };
        let _ = writeln!(out, "{prefix}{elbow}{} ({}){mark}", n.name, n.kind.as_str());
        if again {
            return;
        }
        let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
        let end = children.len().saturating_sub(1);
        for (k, &c) in children.iter().enumerate() {
            self.branch(out, readers, shown, c, &deeper, k == end);
        }
    }

    fn id(&self, i: usize) -> String {
        let n = &self.nodes[i];
        format!("{}:{}", n.kind.as_str(), n.name)
    }

    /// Graphviz DOT: tables as boxes, transforms as ellipses, metrics as diamonds.
    pub fn dot(&self) -> String {
        let mut out = String::from("digraph lineage {\n  rankdir=LR;\n");
        for (i, n) in self.nodes.iter().enumerate() {
            let shape = match n.kind {
                NodeKind::Table => "box",
                NodeKind::Transform => "ellipse",
                NodeKind::Metric => "diamond",
            };
            let _ = writeln!(
                out,
                "  \"{}\" [label=\"{}\", shape={shape}];",
                self.id(i),
                n.name
            );
        }
        for &(a, b) in &self.edges {
            let _ = writeln!(out, "  \"{}\" -> \"{}\";", self.id(a), self.id(b));
        }
        out.push_str("}\n");
        out
    }

    /// A Mermaid flowchart, left to right.
    pub fn mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for (i, n) in self.nodes.iter().enumerate() {
            let (open, close) = match n.kind {
                NodeKind::Table => ("[", "]"),
                NodeKind::Transform => ("(", ")"),
                NodeKind::Metric => ("{{", "}}"),
            };
            let _ = writeln!(out, "  n{i}{open}\"{}\"{close}", n.name);
        }
        for &(a, b) in &self.edges {
            let _ = writeln!(out, "  n{a} --> n{b}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::document::{index, Kind, Object};
    use serde_json::json;

    fn obj(kind: Kind, id: &str, fields: serde_json::Value) -> Object {
        Object::new(
            kind,
            id.into(),
            "f".into(),
            fields.as_object().unwrap().clone(),
        )
    }

    #[test]
    fn used_by_follows_transforms_to_metrics_and_marks_direct_readers() {
        let reg = Registered::from_objects(&index(vec![
            obj(Kind::Source, "shop", json!({"type": "csv"})),
            obj(
                Kind::Table,
                "shop.orders",
                json!({"source": "shop", "name": "orders"}),
            ),
            obj(
                Kind::Table,
                "shop.customers",
                json!({"source": "shop", "name": "customers"}),
            ),
            obj(
                Kind::Transform,
                "facts",
                json!({"source": "shop", "sql": "select 1", "inputs": ["ORDERS"]}),
            ),
            obj(
                Kind::Transform,
                "daily",
                json!({"source": "shop", "sql": "select 1", "inputs": ["facts", "orders"]}),
            ),
            obj(
                Kind::Metric,
                "r/rev",
                json!({"sql": "select 1", "tables": ["daily"]}),
            ),
            obj(
                Kind::Metric,
                "r/n",
                json!({"sql": "select 1", "tables": ["orders"]}),
            ),
        ]))
        .unwrap();
        let l = Lineage::of(&reg);
        let found = l.used_by("Orders");
        let used: Vec<(NodeKind, &str, bool)> = found
            .iter()
            .map(|u| (u.kind, u.name.as_str(), u.direct))
            .collect();
        assert_eq!(
            used,
            [
                (NodeKind::Transform, "daily", true),
                (NodeKind::Transform, "facts", true),
                (NodeKind::Metric, "r/n", true),
                (NodeKind::Metric, "r/rev", false),
            ]
        );
        assert!(l.used_by("customers").is_empty());
        assert!(l.used_by("nope").is_empty());
    }
}

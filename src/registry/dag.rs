//! The task DAG: which tasks a piece of work needs and what each waits for. The ONE builder of
//! tasks, for a sync of some or all tables ([`Work::sync`]) and for the changes an apply makes
//! (`plan` describes them as a [`Work`] too), merged with tasks an earlier apply left pending
//! ([`merge`]); rendered by `pipeline graph` as DOT, Mermaid or JSON.
//!
//! The shape is always the same: extract (or attach) each table → rebuild its source's views →
//! publish analytics → every transform (in the order their SQL reads each other) → metric checks.

use super::registered::Registered;
use super::select::{Selector, SelectorError};
use super::task::{order, Task, TaskKind, ANALYTICS};
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
    /// `run --select`: transforms (and tables) in dbt's selector shapes ([`super::select`]). With
    /// any, only the transforms they choose are built.
    pub select: Vec<Selector>,
}

impl Selection {
    pub fn is_all(&self) -> bool {
        self.sources.is_empty() && self.tables.is_empty() && self.select.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    #[error("no registered source `{name}`{hint}")]
    UnknownSource { name: String, hint: String },
    #[error("no registered table `{name}` (by id or name){hint}")]
    UnknownTable { name: String, hint: String },
    #[error(transparent)]
    Selector(#[from] SelectorError),
}

pub(super) fn hint(name: &str, candidates: impl Iterator<Item = String>) -> String {
    let c: Vec<String> = candidates.collect();
    match crate::diag::suggest(name, c.iter().map(|s| s.as_str())) {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

/// Why a run has work; it decides what the fixed tasks (rebuild, publish) say they run for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Occasion {
    /// A sync of selected tables: analytics is always published.
    #[default]
    Sync,
    /// The changes an apply records: analytics is published when a source is rebuilt or
    /// [`Work::publish`] gives a reason.
    Changes,
}

/// What a run has to do, before it is laid out as tasks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Work {
    pub occasion: Occasion,
    /// Tables to extract (attach, when remote), by id, each with why.
    pub tables: BTreeMap<String, String>,
    /// Sources whose views are rebuilt although none of their tables is extracted (a table
    /// renamed, described or removed).
    pub rebuild: BTreeSet<String>,
    /// Reasons to publish analytics though no source is rebuilt (a source removed, transforms
    /// changed). A sync always publishes.
    pub publish: BTreeSet<String>,
    /// Metrics to check whether or not analytics is published, each with why. When analytics is
    /// published every metric is checked (with [`Work::only_transforms`], every metric that reads
    /// what the run builds or syncs).
    pub checks: BTreeMap<String, String>,
    /// Build only these transforms (`run --select`); `None`: every transform when publishing.
    pub only_transforms: Option<BTreeSet<String>>,
}

impl Work {
    /// A sync of the tables `sel` selects from `reg` (every table when it selects nothing).
    pub fn sync(reg: &Registered, sel: &Selection) -> Result<Work, SelectionError> {
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
        let mut work = Work {
            occasion: Occasion::Sync,
            tables: chosen
                .into_iter()
                .map(|id| (id.to_string(), "sync".to_string()))
                .collect(),
            ..Work::default()
        };
        if !sel.select.is_empty() {
            let selected = super::select::resolve(reg, &sel.select)?;
            let reason = |id: &String| {
                if work.tables.contains_key(id) {
                    "sync".to_string()
                } else {
                    "selected".to_string()
                }
            };
            let extra: Vec<(String, String)> = selected
                .tables
                .iter()
                .map(|id| (id.clone(), reason(id)))
                .collect();
            work.tables.extend(extra);
            if work.tables.is_empty() {
                // Only transforms: nothing is synced, analytics is staged for them to build in.
                work.occasion = Occasion::Changes;
                let names: Vec<String> = sel.select.iter().map(|s| s.to_string()).collect();
                work.publish.insert(format!("--select {}", names.join(" ")));
            }
            work.only_transforms = Some(selected.transforms);
        }
        Ok(work)
    }
}

/// The tasks `work` needs, against what is registered, dependencies first. A table, metric or
/// source the work names but `reg` does not have is left out.
pub fn tasks(reg: &Registered, work: &Work) -> Vec<Task> {
    let mut tasks: BTreeMap<String, Task> = BTreeMap::new();
    let mut add = |kind: TaskKind, target: &str, reason: &str, after: Vec<String>| -> String {
        let id = Task::id_of(kind, target);
        tasks.entry(id.clone()).or_insert_with(|| Task {
            id: id.clone(),
            kind,
            target: target.into(),
            after,
            reason: reason.into(),
        });
        id
    };
    let mut by_source: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (id, reason) in &work.tables {
        let Some(t) = reg.tables.get(id) else {
            continue;
        };
        let kind = if t.query_mode() == QueryMode::Remote {
            TaskKind::Attach
        } else {
            TaskKind::Extract
        };
        let task = add(kind, id, reason, Vec::new());
        by_source.entry(t.source.as_str()).or_default().push(task);
    }
    for s in &work.rebuild {
        by_source.entry(s.as_str()).or_default();
    }
    let rebuild_reason = match work.occasion {
        Occasion::Sync => "its tables were synced",
        Occasion::Changes => "its tables changed",
    };
    let rebuilds: Vec<String> = by_source
        .into_iter()
        .map(|(s, deps)| add(TaskKind::Rebuild, s, rebuild_reason, deps))
        .collect();
    let publish_reason = match work.occasion {
        Occasion::Sync => Some("sync".to_string()),
        Occasion::Changes if !rebuilds.is_empty() => Some("sources were rebuilt".to_string()),
        Occasion::Changes if !work.publish.is_empty() => Some(
            work.publish
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Occasion::Changes => None,
    };
    let publish = publish_reason.map(|reason| add(TaskKind::Publish, ANALYTICS, &reason, rebuilds));

    // A publish builds a new analytics file, so every transform is rebuilt and every metric
    // re-checked against it. Without one, only the metrics the work names are checked.
    let transforms = TransformNames::of(reg);
    let built = |name: &str| {
        work.only_transforms
            .as_ref()
            .is_none_or(|only| only.contains(name))
    };
    // Every transform is a task of a publish, but only those whose definition changed, or that read
    // something that changed, are built again; the others keep their result (docs/engine.md).
    let (transform_reason, check_reason) = match work.only_transforms {
        Some(_) => ("selected", "reads what this run builds"),
        None => (
            "built if it or what it reads changed",
            "analytics is republished",
        ),
    };
    if let Some(p) = &publish {
        for (name, t) in reg.transforms.iter().filter(|(n, _)| built(n)) {
            let mut after = vec![p.clone()];
            after.extend(
                t.inputs
                    .iter()
                    .filter_map(|i| transforms.get(i))
                    .filter(|i| *i != name && built(i))
                    .map(|i| Task::id_of(TaskKind::Transform, i)),
            );
            add(TaskKind::Transform, name, transform_reason, after);
        }
    }
    // With chosen transforms, a metric is checked when it reads one of them or a synced table.
    let fresh: Option<BTreeSet<String>> = work.only_transforms.as_ref().map(|only| {
        only.iter()
            .map(|n| n.to_lowercase())
            .chain(
                work.tables
                    .keys()
                    .filter_map(|id| reg.tables.get(id))
                    .map(|t| t.name.to_lowercase()),
            )
            .collect()
    });
    for (id, m) in &reg.metrics {
        let reads_fresh = fresh
            .as_ref()
            .is_none_or(|f| m.tables.iter().any(|t| f.contains(&t.to_lowercase())));
        let reason = match (work.checks.get(id), &publish) {
            (Some(r), _) => r.as_str(),
            (None, Some(_)) if reads_fresh => check_reason,
            (None, _) => continue,
        };
        let mut after = Vec::new();
        if let Some(p) = &publish {
            after.push(p.clone());
            after.extend(
                m.tables
                    .iter()
                    .filter_map(|t| transforms.get(t))
                    .filter(|t| built(t))
                    .map(|t| Task::id_of(TaskKind::Transform, t)),
            );
        }
        add(TaskKind::Check, id, reason, after);
    }
    order(tasks)
}

/// The tasks of a sync of what `sel` selects: [`Work::sync`] laid out by [`tasks`].
pub fn sync_tasks(reg: &Registered, sel: &Selection) -> Result<Vec<Task>, SelectionError> {
    Ok(tasks(reg, &Work::sync(reg, sel)?))
}

/// The transforms that read any of `names` (lower-case table or view names), directly or through
/// other transforms, in dependency order (what a transform reads comes first); every transform
/// when `names` is `None`. A transform whose inputs are uncertain counts as reading everything.
/// What a one-source publish builds again.
pub fn transforms_reading(reg: &Registered, names: Option<&BTreeSet<String>>) -> Vec<String> {
    let lookup = TransformNames::of(reg);
    let mut chosen: BTreeSet<&String> = BTreeSet::new();
    // Grow the set until nothing new reads what is in it.
    loop {
        let before = chosen.len();
        for (name, t) in &reg.transforms {
            if chosen.contains(name) {
                continue;
            }
            let reads = match names {
                None => true,
                Some(names) => {
                    !t.inputs_uncertain.is_empty()
                        || t.inputs.iter().any(|i| {
                            names.contains(&i.to_lowercase())
                                || lookup.get(i).is_some_and(|n| chosen.contains(n))
                        })
                }
            };
            if reads {
                chosen.insert(name);
            }
        }
        if chosen.len() == before {
            break;
        }
    }
    // Dependency order: repeatedly take those whose chosen inputs are all placed.
    let mut placed: Vec<String> = Vec::new();
    let mut left: Vec<&String> = chosen.into_iter().collect();
    while !left.is_empty() {
        let (ready, wait): (Vec<&String>, Vec<&String>) = left.iter().partition(|&&name| {
            reg.transforms[name.as_str()]
                .inputs
                .iter()
                .all(|i| match lookup.get(i) {
                    // What it reads is placed, is itself, or is not among those to build.
                    Some(n) => n == name || placed.contains(n) || !left.contains(&n),
                    None => true,
                })
        });
        if ready.is_empty() {
            // A cycle (validate refuses them): keep the rest in name order.
            placed.extend(wait.into_iter().cloned());
            break;
        }
        placed.extend(ready.into_iter().cloned());
        left = wait;
    }
    placed
}

/// Transform names by their lower-cased form. What a transform or metric reads (`inputs`,
/// `tables`) is recorded lower-cased, as DuckDB resolves names without regard to case, while a
/// transform keeps its name as written: `Daily` reading `facts` must wait for `Facts`.
pub(super) struct TransformNames<'a>(BTreeMap<String, &'a String>);

impl<'a> TransformNames<'a> {
    pub(super) fn of(reg: &'a Registered) -> Self {
        TransformNames(
            reg.transforms
                .keys()
                .map(|name| (name.to_lowercase(), name))
                .collect(),
        )
    }

    /// The transform `input` names, as its name is written.
    pub(super) fn get(&self, input: &str) -> Option<&'a String> {
        self.0.get(&input.to_lowercase()).copied()
    }
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
    // A transform builds in the analytics file its run stages: a pending transform whose publish
    // already ran (in the run that left it pending) needs one again in this run.
    let publish = Task::id_of(TaskKind::Publish, ANALYTICS);
    let builds = all.values().any(|t| t.kind == TaskKind::Transform);
    if builds && !all.contains_key(&publish) {
        all.insert(
            publish.clone(),
            Task {
                id: publish.clone(),
                kind: TaskKind::Publish,
                target: ANALYTICS.to_string(),
                after: Vec::new(),
                reason: "stage analytics for the pending transforms".into(),
            },
        );
        for t in all.values_mut() {
            if t.kind == TaskKind::Transform && !t.after.contains(&publish) {
                t.after.push(publish.clone());
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
    use crate::registry::document::{index, Kind, Object};
    use serde_json::json;

    #[test]
    fn a_pending_transform_alone_gets_a_publish_to_build_in() {
        let pending = Task {
            id: "transform:daily".into(),
            kind: TaskKind::Transform,
            target: "daily".into(),
            after: vec!["publish:analytics".into()],
            reason: "its input changed".into(),
        };
        let merged = merge(Vec::new(), &[pending]);
        let ids: Vec<&str> = merged.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["publish:analytics", "transform:daily"]);
        assert_eq!(merged[1].after, ["publish:analytics"]);
        // Nothing to build: no publish is added.
        assert!(merge(Vec::new(), &[]).is_empty());
    }

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

    fn ids(tasks: &[Task]) -> Vec<&str> {
        tasks.iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn a_full_sync_runs_everything_in_dependency_order() {
        let tasks = sync_tasks(&registered(), &Selection::default()).unwrap();
        assert_eq!(
            ids(&tasks),
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
            tables: vec!["orders".into()],
            ..Selection::default()
        };
        let tasks = sync_tasks(&registered(), &sel).unwrap();
        assert!(tasks.iter().any(|t| t.id == "extract:shop.orders"));
        assert!(!tasks.iter().any(|t| t.id.starts_with("extract:crm")));
        let err = sync_tasks(
            &registered(),
            &Selection {
                sources: vec!["shpo".into()],
                ..Selection::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("did you mean `shop`"), "{err}");
    }

    #[test]
    fn select_builds_only_the_chosen_subgraph() {
        let reg = registered();
        let run = |sel: &[&str]| {
            let sel = Selection {
                select: sel.iter().map(|s| s.parse().unwrap()).collect(),
                ..Selection::default()
            };
            ids(&sync_tasks(&reg, &sel).unwrap())
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        // One transform: staged analytics and it; the metric reads `daily`, not `facts`.
        assert_eq!(run(&["facts"]), ["publish:analytics", "transform:facts"]);
        assert_eq!(
            run(&["facts+"]),
            [
                "publish:analytics",
                "transform:facts",
                "transform:daily",
                "check:r/rev"
            ]
        );
        assert_eq!(
            run(&["+daily"]),
            [
                "publish:analytics",
                "transform:facts",
                "transform:daily",
                "check:r/rev"
            ]
        );
        assert_eq!(
            run(&["daily"]),
            ["publish:analytics", "transform:daily", "check:r/rev"]
        );
        let t = sync_tasks(
            &reg,
            &Selection {
                select: vec!["daily".parse().unwrap()],
                ..Selection::default()
            },
        )
        .unwrap();
        // `facts` is not built: `daily` reads its published result and does not wait for it.
        assert_eq!(t[1].after, ["publish:analytics"]);
        assert_eq!(t[0].reason, "--select daily");
        // A table syncs it and builds what reads it.
        assert_eq!(
            run(&["orders"]),
            [
                "extract:shop.orders",
                "rebuild:shop",
                "publish:analytics",
                "transform:facts",
                "transform:daily",
                "check:r/rev"
            ]
        );
        let err = sync_tasks(
            &reg,
            &Selection {
                select: vec!["fatcs+".parse().unwrap()],
                ..Selection::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("did you mean `facts`"), "{err}");
    }

    #[test]
    fn changes_publish_only_when_a_source_is_rebuilt_or_a_reason_is_given() {
        let reg = registered();
        let only_check = Work {
            occasion: Occasion::Changes,
            checks: BTreeMap::from([("r/rev".to_string(), "definition changed".to_string())]),
            ..Work::default()
        };
        let t = tasks(&reg, &only_check);
        assert_eq!(ids(&t), ["check:r/rev"]);
        assert!(t[0].after.is_empty());
        assert_eq!(t[0].reason, "definition changed");

        let removed = Work {
            occasion: Occasion::Changes,
            publish: BTreeSet::from(["a source was removed".to_string()]),
            ..Work::default()
        };
        let t = tasks(&reg, &removed);
        assert_eq!(ids(&t)[0], "publish:analytics");
        assert_eq!(t[0].reason, "a source was removed");
        assert!(ids(&t).contains(&"transform:daily") && ids(&t).contains(&"check:r/rev"));

        let described = Work {
            occasion: Occasion::Changes,
            rebuild: BTreeSet::from(["shop".to_string()]),
            ..Work::default()
        };
        let t = tasks(&reg, &described);
        assert_eq!(ids(&t)[..2], ["rebuild:shop", "publish:analytics"]);
        assert_eq!(t[0].reason, "its tables changed");
        assert_eq!(t[1].reason, "sources were rebuilt");
        assert!(tasks(
            &reg,
            &Work {
                occasion: Occasion::Changes,
                ..Work::default()
            }
        )
        .is_empty());
    }

    #[test]
    fn a_transform_named_in_mixed_case_is_waited_for() {
        // Inputs are recorded lower-cased (as DuckDB resolves them); names as written.
        let reg = Registered::from_objects(&index(vec![
            obj(Kind::Source, "shop", json!({"type": "csv"})),
            obj(
                Kind::Table,
                "shop.orders",
                json!({"source": "shop", "name": "orders"}),
            ),
            obj(
                Kind::Transform,
                "OrderFacts",
                json!({"source": "shop", "sql": "select 1", "inputs": ["orders"]}),
            ),
            obj(
                Kind::Transform,
                "Daily",
                json!({"source": "shop", "sql": "select 1", "inputs": ["orderfacts"]}),
            ),
            obj(
                Kind::Metric,
                "r/rev",
                json!({"sql": "select 1", "tables": ["daily"]}),
            ),
        ]))
        .unwrap();
        let t = sync_tasks(&reg, &Selection::default()).unwrap();
        let daily = t.iter().find(|x| x.id == "transform:Daily").unwrap();
        assert!(
            daily.after.contains(&"transform:OrderFacts".to_string()),
            "{:?}",
            daily.after
        );
        let check = t.iter().find(|x| x.id == "check:r/rev").unwrap();
        assert!(check.after.contains(&"transform:Daily".to_string()));
        let at = |id: &str| t.iter().position(|x| x.id == id).unwrap();
        assert!(at("transform:OrderFacts") < at("transform:Daily"));
        assert!(at("transform:Daily") < at("check:r/rev"));
    }

    #[test]
    fn pending_tasks_merge_in_with_their_dependencies() {
        let reg = registered();
        let only_check = Work {
            occasion: Occasion::Changes,
            checks: BTreeMap::from([("r/rev".to_string(), "new metric".to_string())]),
            ..Work::default()
        };
        let pending = sync_tasks(
            &reg,
            &Selection {
                sources: vec!["crm".into()],
                ..Selection::default()
            },
        )
        .unwrap();
        let merged = merge(tasks(&reg, &only_check), &pending);
        let extract = merged.iter().find(|t| t.id == "extract:crm.spend").unwrap();
        assert_eq!(extract.reason, "sync (pending)");
        let check = merged.iter().find(|t| t.id == "check:r/rev").unwrap();
        assert_eq!(check.reason, "new metric");
        assert!(check.after.contains(&"publish:analytics".to_string()));
        assert_eq!(merged.last().unwrap().id, "check:r/rev");
    }
}

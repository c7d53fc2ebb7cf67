//! Keep last good downstream: after a run, the state of every transform and metric check it had —
//! `ok`, `stale` (with the reason) or `failed` (with the error).
//!
//! A transform is stale when what it reads is not fresh: an input table whose extract failed (in this
//! run, or its last one) and that kept its previous data, an input transform that is itself stale or
//! failed, or a publish that did not happen. A stale or failed transform never vanishes: when it was not
//! rebuilt, its previous result is copied from the live analytics file into the new one
//! ([`crate::analytics::Staged::keep_previous`]). A metric check is judged the same way from the
//! tables and transforms its SQL reads. [`judge`] only decides; `exec::execute` keeps the previous
//! results, writes `_pipeline.transforms` and records the verdicts in the state.

use super::scheduler::{Finished, Status};
use crate::analytics::Report;
use crate::registry::registered::Registered;
use crate::registry::task::TaskKind;
use crate::state::downstream::TablePublish;
use std::collections::BTreeMap;

/// ok | stale | failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Ok,
    Stale,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Stale => "stale",
            State::Failed => "failed",
        }
    }
}

/// The state of one transform or check after a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub state: State,
    pub reason: Option<String>,
    /// The transform was not built in this run: its published result is the previous one, if any.
    pub not_built: bool,
    /// Rows of the new result (transforms built in this run).
    pub rows: Option<i64>,
}

/// What the verdicts of one run say, by transform name and metric id.
#[derive(Clone, Debug, Default)]
pub struct Judged {
    pub transforms: BTreeMap<String, Verdict>,
    pub checks: BTreeMap<String, Verdict>,
}

/// What else than the run's own tasks decides freshness.
#[derive(Default)]
pub struct Inputs {
    /// Table id → error, for tables whose last extract (before this run) failed.
    pub failing_before: BTreeMap<String, String>,
    /// Lowercase view name → why the new analytics file does not have it (publish skipped it).
    pub unpublished: BTreeMap<String, String>,
    /// Transform → (state, reason) as recorded before this run, for transforms it does not build
    /// (a run that only checks a metric).
    pub transforms_before: BTreeMap<String, (String, Option<String>)>,
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Why a name a transform or metric reads is not fresh, if it is not.
enum Freshness {
    Fresh,
    /// Readable, but holding old data (or an old result).
    Stale(String),
    /// Not readable in the new file.
    Missing(String),
}

/// Judges every transform and check task of `finished` (a cancelled run judges nothing).
pub fn judge(reg: &Registered, finished: &[Finished], inputs: &Inputs) -> Judged {
    let mut out = Judged::default();
    if finished.iter().any(|f| f.status == Status::Cancelled) {
        return out;
    }
    let data_tasks: BTreeMap<&str, &Finished> = finished
        .iter()
        .filter(|f| matches!(f.task.kind, TaskKind::Extract | TaskKind::Attach))
        .map(|f| (f.task.target.as_str(), f))
        .collect();
    let publish = finished.iter().find(|f| f.task.kind == TaskKind::Publish);
    let transforms_lc: BTreeMap<String, &str> = reg
        .transforms
        .keys()
        .map(|k| (k.to_ascii_lowercase(), k.as_str()))
        .collect();

    // Tasks come dependencies first, so an input transform is judged before what reads it.
    for f in finished {
        let (is_transform, reads): (bool, Vec<&String>) = match f.task.kind {
            TaskKind::Transform => match reg.transforms.get(&f.task.target) {
                Some(t) => (true, t.inputs.iter().collect()),
                None => continue,
            },
            TaskKind::Check => match reg.metrics.get(&f.task.target) {
                Some(m) => (false, m.tables.iter().collect()),
                None => continue,
            },
            _ => continue,
        };
        let freshness: Vec<(String, Freshness)> = reads
            .iter()
            .map(|name| {
                let lc = name.to_ascii_lowercase();
                let fresh = match transforms_lc.get(&lc) {
                    Some(t) => match out.transforms.get(*t) {
                        Some(v) if v.state != State::Ok => Freshness::Stale(format!(
                            "{} ({})",
                            v.state.as_str(),
                            v.reason.as_deref().unwrap_or("-")
                        )),
                        Some(_) => Freshness::Fresh,
                        None => match inputs.transforms_before.get(*t) {
                            Some((state, reason)) if state != "ok" => Freshness::Stale(format!(
                                "{state} ({})",
                                reason.as_deref().unwrap_or("-")
                            )),
                            _ => Freshness::Fresh,
                        },
                    },
                    None => table_freshness(reg, &lc, &data_tasks, inputs),
                };
                (name.to_string(), fresh)
            })
            .collect();
        let stale_inputs: Vec<String> = freshness
            .iter()
            .filter_map(|(n, fr)| match fr {
                Freshness::Stale(why) => Some(format!("`{n}` is {why}")),
                Freshness::Missing(why) => Some(format!("`{n}` is not published: {why}")),
                Freshness::Fresh => None,
            })
            .collect();
        let missing_input = freshness.iter().find_map(|(n, fr)| match fr {
            Freshness::Missing(why) => Some(format!("`{n}` is not published: {why}")),
            _ => None,
        });
        let verdict = match f.status {
            Status::Ok | Status::Unchanged => {
                if stale_inputs.is_empty() {
                    Verdict {
                        state: State::Ok,
                        reason: None,
                        not_built: false,
                        rows: f.done.rows,
                    }
                } else {
                    let what = if is_transform { "built" } else { "checked" };
                    Verdict {
                        state: State::Stale,
                        reason: Some(format!(
                            "{what} from stale input: {}",
                            stale_inputs.join("; ")
                        )),
                        not_built: false,
                        rows: f.done.rows,
                    }
                }
            }
            Status::Failed => match missing_input {
                // It failed because what it reads is not there: its own SQL is not to blame.
                Some(why) => Verdict {
                    state: State::Stale,
                    reason: Some(format!("not rebuilt: input {why}")),
                    not_built: true,
                    rows: None,
                },
                None => Verdict {
                    state: State::Failed,
                    reason: Some(first_line(f.error.as_deref().unwrap_or("failed")).to_string()),
                    not_built: true,
                    rows: None,
                },
            },
            Status::Skipped => {
                let why = if publish.is_some_and(|p| p.status == Status::Failed) {
                    format!(
                        "analytics was not published: {}",
                        publish
                            .and_then(|p| p.error.as_deref())
                            .map(first_line)
                            .unwrap_or("publish failed")
                    )
                } else if stale_inputs.is_empty() {
                    f.error.clone().unwrap_or_else(|| "not run".into())
                } else {
                    stale_inputs.join("; ")
                };
                let what = if is_transform { "rebuilt" } else { "checked" };
                Verdict {
                    state: State::Stale,
                    reason: Some(format!("not {what}: {why}")),
                    not_built: true,
                    rows: None,
                }
            }
            Status::Cancelled => continue,
        };
        if is_transform {
            out.transforms.insert(f.task.target.clone(), verdict);
        } else {
            out.checks.insert(f.task.target.clone(), verdict);
        }
    }
    out
}

/// Whether the table published as `name` (lowercase) holds fresh data after this run.
fn table_freshness(
    reg: &Registered,
    name: &str,
    data_tasks: &BTreeMap<&str, &Finished>,
    inputs: &Inputs,
) -> Freshness {
    if let Some(why) = inputs.unpublished.get(name) {
        return Freshness::Missing(why.clone());
    }
    let Some(table) = reg
        .tables
        .values()
        .find(|t| t.name.eq_ignore_ascii_case(name))
    else {
        return Freshness::Fresh;
    };
    match data_tasks.get(table.id.as_str()) {
        Some(f) if f.status.succeeded() => Freshness::Fresh,
        Some(f) => Freshness::Stale(format!(
            "stale: its extract {}: {}",
            if f.status == Status::Failed {
                "failed"
            } else {
                "did not run"
            },
            first_line(f.error.as_deref().unwrap_or("-"))
        )),
        None => match inputs.failing_before.get(&table.id) {
            Some(e) => {
                Freshness::Stale(format!("stale: its last extract failed: {}", first_line(e)))
            }
            None => Freshness::Fresh,
        },
    }
}

/// After the kept results are known: a transform that was not built and has nothing to keep is
/// not in analytics at all, which makes it failed whatever the cause.
pub fn settle(judged: &mut Judged, kept: &[String], published: bool) {
    if !published {
        return;
    }
    for (name, v) in judged.transforms.iter_mut() {
        if v.not_built && !kept.contains(name) {
            v.state = State::Failed;
            let why = v.reason.take().unwrap_or_default();
            v.reason = Some(format!(
                "{why}; there is no previous result to keep, so it is not in analytics.duckdb"
            ));
        } else if v.not_built && v.state == State::Failed {
            let why = v.reason.take().unwrap_or_default();
            v.reason = Some(format!("{why} (its previous result is kept)"));
        }
    }
}

/// Each registered table's place in a newly published analytics file: `ok` when its view is there,
/// else `failed` with the reason (a view that does not bind, a name refused, a source whose extract
/// is unreadable, a table its extract leaves out).
pub fn publication(reg: &Registered, report: &Report) -> Vec<TablePublish> {
    reg.tables
        .values()
        .map(|t| {
            let published = report
                .published
                .iter()
                .any(|p| p.source == t.source && p.name.eq_ignore_ascii_case(&t.name));
            let reason = (!published).then(|| {
                let own = report.skipped.iter().find(|s| {
                    s.source == t.source
                        && s.table
                            .as_deref()
                            .is_some_and(|n| n.eq_ignore_ascii_case(&t.name))
                });
                let whole = report
                    .skipped
                    .iter()
                    .find(|s| s.source == t.source && s.table.is_none());
                match (own, whole) {
                    (Some(s), _) => s.reason.clone(),
                    (None, Some(s)) => format!("extract {}: {}", s.source, s.reason),
                    (None, None) => format!(
                        "the extract of source `{}` does not list it (it has not been extracted \
                         successfully yet, or was left out: see the run's warnings)",
                        t.source
                    ),
                }
            });
            TablePublish {
                table_id: t.id.clone(),
                status: if published { "ok" } else { "failed" }.into(),
                reason,
            }
        })
        .collect()
}

/// Lowercase view names of registered tables the new file does not have, with the reason.
pub fn unpublished(reg: &Registered, report: &Report) -> BTreeMap<String, String> {
    let names: BTreeMap<&str, &str> = reg
        .tables
        .values()
        .map(|t| (t.id.as_str(), t.name.as_str()))
        .collect();
    publication(reg, report)
        .into_iter()
        .filter_map(|p| {
            let name = names.get(p.table_id.as_str())?.to_ascii_lowercase();
            Some((name, p.reason?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::scheduler::Done;
    use crate::registry::document::{index, Kind, Object};
    use crate::registry::task::Task;
    use serde_json::json;
    use std::time::Duration;

    fn obj(kind: Kind, id: &str, fields: serde_json::Value) -> Object {
        Object::new(
            kind,
            id.into(),
            "f".into(),
            fields.as_object().unwrap().clone(),
        )
    }

    fn done(id: &str, kind: TaskKind, status: Status, error: Option<&str>) -> Finished {
        Finished {
            task: Task {
                id: format!("{}:{id}", kind.as_str()),
                kind,
                target: id.into(),
                after: Vec::new(),
                reason: String::new(),
            },
            status,
            started_at: chrono::Utc::now(),
            duration: Duration::ZERO,
            done: Done::default(),
            error: error.map(String::from),
            cause: None,
        }
    }

    fn registered() -> Registered {
        Registered::from_objects(&index(vec![
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
                json!({"source": "shop", "sql": "x", "inputs": ["orders"]}),
            ),
            obj(
                Kind::Transform,
                "daily",
                json!({"source": "shop", "sql": "x", "inputs": ["facts"]}),
            ),
            obj(
                Kind::Transform,
                "people",
                json!({"source": "shop", "sql": "x", "inputs": ["customers"]}),
            ),
            obj(
                Kind::Metric,
                "s/m",
                json!({"sql": "x", "tables": ["daily"]}),
            ),
        ]))
        .unwrap()
    }

    #[test]
    fn a_failed_extract_makes_everything_downstream_stale_and_nothing_else() {
        let reg = registered();
        let finished = vec![
            done(
                "shop.orders",
                TaskKind::Extract,
                Status::Failed,
                Some("boom"),
            ),
            done("shop.customers", TaskKind::Extract, Status::Ok, None),
            done("analytics", TaskKind::Publish, Status::Ok, None),
            done("facts", TaskKind::Transform, Status::Ok, None),
            done("people", TaskKind::Transform, Status::Ok, None),
            done("daily", TaskKind::Transform, Status::Ok, None),
            done("s/m", TaskKind::Check, Status::Ok, None),
        ];
        let j = judge(&reg, &finished, &Inputs::default());
        assert_eq!(j.transforms["facts"].state, State::Stale);
        assert!(j.transforms["facts"]
            .reason
            .as_deref()
            .unwrap()
            .contains("boom"));
        assert_eq!(j.transforms["daily"].state, State::Stale);
        assert_eq!(j.transforms["people"].state, State::Ok);
        assert_eq!(j.checks["s/m"].state, State::Stale);
    }

    #[test]
    fn skipped_after_an_upstream_failure_is_stale_and_failed_without_a_previous_result() {
        let reg = registered();
        let finished = vec![
            done("analytics", TaskKind::Publish, Status::Ok, None),
            done(
                "facts",
                TaskKind::Transform,
                Status::Failed,
                Some("Binder Error: x"),
            ),
            done(
                "daily",
                TaskKind::Transform,
                Status::Skipped,
                Some("not run: transform:facts did not succeed"),
            ),
            done("s/m", TaskKind::Check, Status::Skipped, Some("not run")),
        ];
        let mut j = judge(&reg, &finished, &Inputs::default());
        assert_eq!(j.transforms["facts"].state, State::Failed);
        assert_eq!(j.transforms["daily"].state, State::Stale);
        assert!(j.transforms["daily"]
            .reason
            .as_deref()
            .unwrap()
            .contains("`facts` is failed"));
        assert_eq!(j.checks["s/m"].state, State::Stale);
        settle(&mut j, &["facts".to_string()], true);
        assert_eq!(j.transforms["facts"].state, State::Failed);
        assert!(j.transforms["facts"]
            .reason
            .as_deref()
            .unwrap()
            .contains("previous result is kept"));
        assert_eq!(
            j.transforms["daily"].state,
            State::Failed,
            "nothing to keep"
        );
    }

    #[test]
    fn a_check_alone_sees_a_transform_left_stale_by_an_earlier_run() {
        let reg = registered();
        let finished = vec![done("s/m", TaskKind::Check, Status::Ok, None)];
        let inputs = Inputs {
            transforms_before: BTreeMap::from([(
                "daily".to_string(),
                ("stale".to_string(), Some("its input failed".to_string())),
            )]),
            ..Inputs::default()
        };
        let j = judge(&reg, &finished, &inputs);
        assert_eq!(j.checks["s/m"].state, State::Stale);
        assert!(j.checks["s/m"]
            .reason
            .as_deref()
            .unwrap()
            .contains("its input failed"));
    }

    #[test]
    fn a_table_failing_since_an_earlier_run_keeps_its_readers_stale() {
        let reg = registered();
        let finished = vec![
            done("analytics", TaskKind::Publish, Status::Unchanged, None),
            done("facts", TaskKind::Transform, Status::Unchanged, None),
        ];
        let inputs = Inputs {
            failing_before: BTreeMap::from([("shop.orders".to_string(), "gone".to_string())]),
            ..Inputs::default()
        };
        let j = judge(&reg, &finished, &inputs);
        assert_eq!(j.transforms["facts"].state, State::Stale);
        assert!(j.transforms["facts"]
            .reason
            .as_deref()
            .unwrap()
            .contains("gone"));
    }
}

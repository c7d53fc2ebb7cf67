//! Plan: the difference between the specs (desired state) and `system.duckdb` (recorded state), and
//! the tasks that applying it would run (DESIGN.md §7).
//!
//! [`crate::registry::document`] turns specs into canonical documents, [`diff`] compares them with the
//! recorded ones, [`work`] says what the changes need done ([`crate::registry::dag`] lays it out as
//! tasks), [`render`] prints it. A [`Plan`] can be saved as JSON and applied later;
//! it records the state serial and the spec digest it was made from, so applying it after anything
//! changed is refused instead of doing something nobody reviewed. [`impact`] is a separate step that
//! labels each change breaking or not by binding against the published analytics (the plan itself
//! never opens a data file).
//!
//! Plans are values: this module never opens the state. [`crate::ops::plan`] reads the recorded
//! documents and hands them here; [`crate::ops::apply`] turns a plan into the state's write set.

pub mod diff;
pub mod impact;
pub mod render;
pub mod work;

use crate::diag::Diagnostics;
use crate::instance::Instance;
use crate::registry::dag;
use crate::registry::document::Recorded;
use crate::registry::document::{self, Action, Kind, Objects};
use crate::registry::registered::{Malformed, Registered};
use crate::registry::task::Task;
use crate::spec::{self, Specs};
use diff::Change;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of the saved-plan JSON; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub pipeline_version: String,
    pub created_at: String,
    /// The apply serial of the state this plan was made against.
    pub state_serial: i64,
    /// [`document::digest`] of the specs this plan was made from.
    pub spec_digest: String,
    /// `--target` names; empty for a full plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    pub changes: Vec<Change>,
    pub tasks: Vec<Task>,
    pub summary: Summary,
}

/// Counted as Terraform does: a replace is one add and one destroy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    /// Changes labelled breaking ([`impact`]); apply refuses them unless `--allow-breaking`.
    #[serde(default)]
    pub breaking: usize,
}

impl Summary {
    pub fn of(changes: &[Change]) -> Summary {
        let mut s = Summary::default();
        for c in changes {
            if c.is_breaking() {
                s.breaking += 1;
            }
            match c.action {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Replace => {
                    s.add += 1;
                    s.destroy += 1;
                }
                Action::Delete => s.destroy += 1,
            }
        }
        s
    }
}

impl Plan {
    /// Sources this plan deletes: their extracts leave analytics once applied
    /// ([`crate::exec::retire_sources`]).
    pub fn deleted_sources(&self) -> Vec<String> {
        self.changes
            .iter()
            .filter(|c| c.kind == Kind::Source && c.action == Action::Delete)
            .map(|c| c.id.clone())
            .collect()
    }

    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// The changes labelled breaking.
    pub fn breaking(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.is_breaking())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The specs have errors; the diagnostics say which.
    #[error("the specs are invalid ({} errors); fix them and plan again", .diags.error_count())]
    Invalid {
        specs: Box<Specs>,
        diags: Diagnostics,
    },
    #[error("{0}")]
    UnknownTarget(String),
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{path} is not a saved plan: {reason}")]
    BadPlanFile { path: PathBuf, reason: String },
}

/// The validated specs and the desired state they declare.
pub struct Desired {
    pub specs: Specs,
    /// Warnings only (errors make [`desired`] fail).
    pub diags: Diagnostics,
    pub objects: Objects,
    /// The instance the specs declare (its paths and settings).
    pub instance: Instance,
}

impl Desired {
    pub fn digest(&self) -> String {
        document::digest(&self.objects)
    }

    /// Warnings about environment variables the specs name but the environment lacks. Validate
    /// only warns (CI may not have the secrets), but the tasks an apply queues need them. The
    /// instance's `remote_attach.token_envs` is an allowlist, not a need: not counted.
    pub fn unset_env_vars(&self) -> Vec<&crate::diag::Diagnostic> {
        let instance_file = self.specs.instance.as_ref().map(|i| i.file);
        self.diags
            .iter()
            .filter(|d| d.code == crate::diag::Code::Env)
            .filter(|d| d.severity == crate::diag::Severity::Warning)
            .filter(|d| d.span.map(|s| s.file) != instance_file)
            .collect()
    }
}

/// Loads and validates the specs at `root`.
pub fn desired(root: &Path) -> Result<Desired, PlanError> {
    let (specs, analysis, diags) = spec::check(root);
    finish_desired(specs, &analysis, diags)
}

/// [`desired`] from specs already loaded and checked (by a caller that kept the validator's
/// DuckDB instance, say).
pub fn finish_desired(
    specs: Specs,
    analysis: &spec::validate::Analysis,
    diags: Diagnostics,
) -> Result<Desired, PlanError> {
    if diags.has_errors() {
        return Err(PlanError::Invalid {
            specs: Box::new(specs),
            diags,
        });
    }
    // Validated specs always have an instance; without one they would have had an error.
    let Some(instance) = Instance::from_specs(&specs) else {
        return Err(PlanError::Invalid {
            specs: Box::new(specs),
            diags,
        });
    };
    let objects = document::desired(&specs, analysis);
    Ok(Desired {
        instance,
        specs,
        diags,
        objects,
    })
}

/// Plans `desired` against `recorded`.
pub fn against(
    desired: &Desired,
    recorded: &Recorded,
    targets: &[String],
) -> Result<Plan, PlanError> {
    build(&desired.objects, recorded, targets)
}

/// The plan from `recorded` to `desired`.
pub fn build(
    desired: &Objects,
    recorded: &Recorded,
    targets: &[String],
) -> Result<Plan, PlanError> {
    let serial = recorded.serial;
    let recorded_objects = &recorded.objects;
    let mut changes = diff::diff(desired, recorded_objects);
    if !targets.is_empty() {
        changes = narrow(changes, desired, recorded_objects, targets)?;
    }
    // A plan without changes has no tasks; typing the documents is for plans that have some.
    let tasks = if changes.is_empty() {
        Vec::new()
    } else {
        let typed = Registered::from_objects(desired)?;
        dag::tasks(
            &typed,
            &work::work(&changes, &typed, &recorded.failed_extracts),
        )
    };
    Ok(Plan {
        format_version: FORMAT_VERSION,
        pipeline_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        state_serial: serial,
        spec_digest: document::digest(desired),
        targets: targets.to_vec(),
        summary: Summary::of(&changes),
        changes,
        tasks,
    })
}

/// Keeps the changes to the targeted objects. A target names an object by id (table id, source,
/// transform, `category/metric`) or a table by its view name; a source also selects its tables and
/// transforms.
fn narrow(
    changes: Vec<Change>,
    desired: &Objects,
    recorded: &Objects,
    targets: &[String],
) -> Result<Vec<Change>, PlanError> {
    let all = || desired.values().chain(recorded.values());
    let mut selected: Vec<(Kind, String)> = Vec::new();
    for t in targets {
        let before = selected.len();
        for o in all() {
            let by_id = &o.id == t;
            let by_view = o.kind == Kind::Table && o.str("name") == Some(t.as_str());
            let by_source =
                matches!(o.kind, Kind::Table | Kind::Transform) && o.str("source") == Some(t);
            if by_id || by_view || by_source {
                selected.push((o.kind, o.id.clone()));
            }
        }
        if selected.len() == before {
            let names: Vec<&str> = all().map(|o| o.id.as_str()).collect();
            let hint = match crate::diag::suggest(t, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "a target is a source name, a table id or name, a transform name or a \
                         category/metric id"
                    .into(),
            };
            return Err(PlanError::UnknownTarget(format!(
                "--target `{t}` matches nothing in the specs or the state; {hint}"
            )));
        }
    }
    Ok(changes
        .into_iter()
        .filter(|c| selected.contains(&(c.kind, c.id.clone())))
        .collect())
}

/// Writes `plan` as pretty JSON, atomically (a half-written plan file must not be applicable).
pub fn save(plan: &Plan, path: &Path) -> Result<(), PlanError> {
    let io = |e| PlanError::Io(path.to_path_buf(), e);
    let text = serde_json::to_string_pretty(plan).expect("plans serialize");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text + "\n").map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

pub fn load(path: &Path) -> Result<Plan, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|e| PlanError::Io(path.to_path_buf(), e))?;
    let bad = |reason: String| PlanError::BadPlanFile {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON ({e})")))?;
    match value.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(bad(format!(
                "format version {v}, this binary reads version {FORMAT_VERSION}; plan again with this binary"
            )))
        }
        None => return Err(bad("no format_version field".into())),
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

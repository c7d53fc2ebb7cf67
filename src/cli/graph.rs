//! `pipeline graph`: the task DAG of a sync (or of a saved plan) as DOT, Mermaid or JSON; with
//! `--lineage`, what reads each table (tables → transforms → metrics) as a terminal tree.

use super::output::{self, Format};
use crate::plan;
use crate::registry::dag::{self, Selection};
use crate::registry::lineage::Lineage;
use crate::registry::registered::Registered;
use anyhow::{bail, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline graph                         a full sync of the specs, as Graphviz DOT
  pipeline graph | dot -Tsvg > dag.svg   render it
  pipeline graph --format mermaid        paste into a GitHub comment or markdown file
  pipeline graph --source shop           only what syncing source shop runs
  pipeline graph --select order_facts+   what `pipeline run --select order_facts+` runs
  pipeline graph --plan plan.json        the tasks of a saved plan
  pipeline graph --lineage               tables → transforms → metrics, as a tree per source
  pipeline graph --lineage --format dot  the same for Graphviz (or mermaid, json)

Built from the spec files (not the state), so it works in CI before anything is applied. Edges point
from a task to the tasks that wait for it: extract → rebuild(source) → publish(analytics) →
transforms (in the order their SQL reads each other) → metric checks.";

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    /// An indented tree for the terminal (`--lineage` only; its default).
    Tree,
    /// Graphviz DOT (the task DAG's default).
    Dot,
    Mermaid,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// tree (`--lineage` only, its default), dot (the default for tasks), mermaid or json.
    #[arg(long, value_enum)]
    format: Option<GraphFormat>,
    /// The data lineage instead of the tasks: which transforms and metrics read each table.
    #[arg(long, conflicts_with_all = ["source", "table", "plan", "select"])]
    lineage: bool,
    /// Only the tasks of syncing this source (repeatable).
    #[arg(long, short = 's', value_name = "SOURCE")]
    source: Vec<String>,
    /// Only the tasks of syncing this table, by id or name (repeatable).
    #[arg(long, short = 't', value_name = "TABLE")]
    table: Vec<String>,
    /// Only what `pipeline run --select SELECTOR` runs: NAME, NAME+, +NAME or +NAME+ (repeatable).
    #[arg(long, value_name = "SELECTOR", conflicts_with_all = ["source", "table"])]
    select: Vec<crate::registry::select::Selector>,
    /// Show the tasks of a plan saved with `pipeline plan --out FILE` instead.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["source", "table", "select"])]
    plan: Option<PathBuf>,
}

pub fn run(dir: &Path, args: Args) -> Result<ExitCode> {
    if args.lineage {
        return lineage(dir, args.format.unwrap_or(GraphFormat::Tree));
    }
    let tasks = match &args.plan {
        Some(file) => plan::load(file)?.tasks,
        None => {
            let desired = output::specs_or_report(plan::desired(dir), Format::Human)?;
            let reg = Registered::from_objects(&desired.objects)?;
            let sel = Selection {
                sources: args.source,
                tables: args.table,
                select: args.select,
            };
            dag::sync_tasks(&reg, &sel)?
        }
    };
    let text = match args.format.unwrap_or(GraphFormat::Dot) {
        GraphFormat::Tree => bail!("--format tree draws the lineage: add --lineage"),
        GraphFormat::Dot => dag::dot(&tasks),
        GraphFormat::Mermaid => dag::mermaid(&tasks),
        GraphFormat::Json => {
            let (g, _) = dag::graph(&tasks);
            let edges: Vec<_> = g
                .edge_indices()
                .filter_map(|e| g.edge_endpoints(e))
                .map(|(a, b)| serde_json::json!({"from": g[a].id, "to": g[b].id}))
                .collect();
            serde_json::to_string_pretty(&serde_json::json!({"tasks": tasks, "edges": edges}))?
                + "\n"
        }
    };
    anstream::stdout().lock().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `--lineage`: from the spec files, like the task graph.
fn lineage(dir: &Path, format: GraphFormat) -> Result<ExitCode> {
    let desired = output::specs_or_report(plan::desired(dir), Format::Human)?;
    let reg = Registered::from_objects(&desired.objects)?;
    let l = Lineage::of(&reg);
    let text = match format {
        GraphFormat::Tree => l.tree(),
        GraphFormat::Dot => l.dot(),
        GraphFormat::Mermaid => l.mermaid(),
        GraphFormat::Json => serde_json::to_string_pretty(&l)? + "\n",
    };
    anstream::stdout().lock().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

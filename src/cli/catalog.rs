//! `pipeline catalog`: `export` the data description with lineage (Markdown or JSON), `import
//! openmetadata URL` metric specs and table descriptions (a generated registry file of
//! `descriptions:`) from an OpenMetadata server (docs/catalog.md). The library does the work (`crate::catalog`); this file loads the specs,
//! reads what the state and the published file say, and renders.

use super::output::{self, Format};
use crate::catalog::export::{Catalog, Observed, Sync};
use crate::catalog::import::{import, ImportOptions, ImportReport};
use crate::catalog::openmetadata::{Client, OpenMetadataError};
use crate::plan;
use crate::registry::registered::Registered;
use crate::state::StateStore;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The generated registry file of table descriptions, under registry/.
const DESCRIPTIONS_FILE: &str = "openmetadata.yaml";

pub const AFTER_HELP: &str = "\
Examples:
  pipeline catalog export                              a Markdown data dictionary on stdout
  pipeline catalog export --output CATALOG.md          written aside, then renamed into place
  pipeline catalog export --format json > catalog.json one JSON document (docs/catalog.md)
  OPENMETADATA_TOKEN=… pipeline catalog import openmetadata https://catalog.example.com --dry-run
                                                       what importing would write
  pipeline catalog import openmetadata https://catalog.example.com --token-env OM_JWT
                                                       write metric specs under metrics/

export works offline from the spec files; the last syncs and the published columns (with DuckDB
types) are added when the state and analytics.duckdb exist. import writes metrics/<category>/<name>.yaml
for OpenMetadata metrics whose expression is a SQL query, and registry/openmetadata.yaml with the
table and column descriptions the registered tables' own specs lack (`descriptions:`, docs/specs.md);
it never replaces a hand-written file, and a second import with no change upstream writes nothing.
Then `pipeline plan` / `pipeline apply`. Docs: docs/catalog.md.";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Describe sources, tables, transforms and metrics with their lineage (table → transform →
    /// metric), from the spec files.
    #[command(after_help = AFTER_HELP)]
    Export {
        /// markdown (a readable data dictionary) or json (one document, docs/catalog.md).
        #[arg(long, value_enum, default_value_t = ExportFormat::Markdown)]
        format: ExportFormat,
        /// Write to FILE (aside, then renamed into place) instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Bring descriptions and metrics in from another catalogue.
    #[command(after_help = AFTER_HELP)]
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
}

#[derive(clap::Subcommand, Debug)]
enum ImportFrom {
    /// From an OpenMetadata server's REST API (/api/v1/tables, /api/v1/metrics).
    #[command(after_help = AFTER_HELP)]
    Openmetadata {
        /// The server, e.g. https://catalog.example.com (the API is under /api/v1).
        url: String,
        /// The environment variable holding the token (a bot's JWT); its value is never shown.
        #[arg(long, value_name = "NAME", default_value = "OPENMETADATA_TOKEN")]
        token_env: String,
        /// Category of metrics without a `MetricCategory.*` tag.
        #[arg(long, default_value = "general")]
        category: String,
        /// Show what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ExportFormat {
    Markdown,
    Json,
}

pub fn run(dir: &Path, args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Export { format, output } => export(dir, format, output),
        Command::Import {
            from:
                ImportFrom::Openmetadata {
                    url,
                    token_env,
                    category,
                    dry_run,
                },
        } => import_openmetadata(dir, &url, &token_env, &category, dry_run),
    }
}

fn export(dir: &Path, format: ExportFormat, output: Option<PathBuf>) -> Result<ExitCode> {
    let desired = output::specs_or_report(plan::desired(dir), Format::Human)?;
    output::warnings(&desired.specs, &desired.diags);
    let reg = Registered::from_objects(&desired.objects)?;
    let observed = observe(&desired.instance, &reg);
    let catalog = Catalog::of(&desired.instance.name, &reg, &desired.objects, &observed);
    let text = match format {
        ExportFormat::Markdown => catalog.markdown(&reg) + "\n",
        ExportFormat::Json => catalog.json(),
    };
    match output {
        None => anstream::stdout().lock().write_all(text.as_bytes())?,
        Some(file) => {
            let path = if file.is_absolute() {
                file
            } else {
                std::env::current_dir()?.join(file)
            };
            write_aside(&path, &text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to a temporary file beside `path` and renames it into place, so a reader never
/// sees half a catalogue.
fn write_aside(path: &Path, text: &str) -> Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "catalog".into());
    let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("renaming {} to {}", tmp.display(), path.display())
    })
}

/// What the state and the published analytics.duckdb say; nothing when they do not exist (or
/// cannot be read now: the export is still useful from the specs alone, so that is a warning).
fn observe(inst: &crate::instance::Instance, reg: &Registered) -> Observed {
    let mut observed = Observed::default();
    match StateStore::of(&inst.data).read_if_exists() {
        Ok(Some(r)) => match crate::state::report::status(&r) {
            Ok(status) => {
                observed.syncs = status
                    .tables
                    .into_iter()
                    .map(|t| {
                        let sync = Sync {
                            last_sync: t.last_sync,
                            last_status: t.last_status,
                            rows: t.rows,
                        };
                        (t.id, sync)
                    })
                    .collect();
            }
            Err(e) => tracing::warn!("last syncs left out: reading the state failed: {e}"),
        },
        Ok(None) => {}
        Err(e) => tracing::warn!("last syncs left out: the state cannot be read now: {e}"),
    }
    let names: Vec<String> = reg
        .tables
        .values()
        .map(|t| t.name.clone())
        .chain(reg.transforms.keys().cloned())
        .collect();
    match crate::analytics::published_columns(&inst.data.analytics(), &names) {
        Ok(columns) => observed.columns = columns,
        Err(e) => tracing::warn!("published column types left out: {e}"),
    }
    observed
}

fn import_openmetadata(
    dir: &Path,
    url: &str,
    token_env: &str,
    category: &str,
    dry_run: bool,
) -> Result<ExitCode> {
    if !crate::names::is_env_var(token_env) {
        bail!("--token-env `{token_env}` is not an environment variable name");
    }
    // Registered as a secret as it is read: it must not reach a log line or an error, whatever
    // the server echoes back.
    let Some(token) = crate::redact::secret_env(token_env) else {
        bail!(
            "${token_env} is not set: put the OpenMetadata token in it (or name another variable \
             with --token-env)"
        );
    };
    let desired = output::specs_or_report(plan::desired(dir), Format::Human)?;
    let client = Client::new(url, Some(token), token_env);
    let tables = client.tables()?;
    let metrics = match client.metrics() {
        Ok(m) => m,
        // Servers before OpenMetadata 1.6 have no metrics entity; their tables are still worth
        // comparing.
        Err(e @ OpenMetadataError::NotFound { .. }) => {
            tracing::warn!("no metrics imported: {e}");
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    let opts = ImportOptions {
        metrics_dir: dir.join("metrics"),
        descriptions_file: dir.join("registry").join(DESCRIPTIONS_FILE),
        default_category: category.to_string(),
        dry_run,
    };
    let report = import(&desired.specs, &tables, &metrics, &opts)?;
    render(dir, url, tables.len(), metrics.len(), &report, dry_run)?;
    if dry_run || report.written.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    // Every written spec must validate with the rest of the instance; say so at once if not.
    match plan::desired(dir) {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            let _ = output::specs_or_report(Err::<(), _>(e), Format::Human);
            bail!(
                "the imported specs do not validate with the instance (above); fix or delete them, \
                 then run `pipeline validate`"
            )
        }
    }
}

fn render(
    dir: &Path,
    url: &str,
    tables: usize,
    metrics: usize,
    report: &ImportReport,
    dry_run: bool,
) -> Result<()> {
    let mut out = anstream::stdout().lock();
    let shown = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    writeln!(
        out,
        "OpenMetadata at {url}: {tables} table(s), {metrics} metric(s)."
    )?;
    writeln!(out, "\nTables:")?;
    for m in &report.tables {
        let mut news = Vec::new();
        if m.description.is_some() {
            news.push("description".to_string());
        }
        if !m.columns.is_empty() {
            news.push(format!("{} column description(s)", m.columns.len()));
        }
        let news = if news.is_empty() {
            "nothing the spec lacks".to_string()
        } else {
            news.join(", ")
        };
        writeln!(out, "  {} ← {}: {news}", m.table_id, m.entity)?;
        if let Some(d) = &m.other_description {
            writeln!(
                out,
                "      its spec's description is kept; OpenMetadata says: {}",
                output::truncate(&d.replace('\n', " "), 100)
            )?;
        }
    }
    for n in &report.unmatched {
        writeln!(out, "  not matched {n}")?;
    }
    writeln!(
        out,
        "  {} matched, {} not matched.",
        report.tables.len(),
        report.unmatched.len()
    )?;
    writeln!(out, "\nFiles:")?;
    let verb = if dry_run { "would write" } else { "wrote" };
    for p in &report.written {
        writeln!(out, "  {verb:<11} {}", shown(p))?;
    }
    for p in &report.unchanged {
        writeln!(out, "  {:<11} {}", "unchanged", shown(p))?;
    }
    for n in &report.skipped {
        writeln!(out, "  {:<11} {n}", "skipped")?;
    }
    for n in &report.warnings {
        writeln!(out, "  {:<11} {n}", "warning")?;
    }
    writeln!(
        out,
        "  {} {}, {} unchanged, {} skipped.",
        report.written.len(),
        if dry_run { "to write" } else { "written" },
        report.unchanged.len(),
        report.skipped.len()
    )?;
    if report.written.is_empty() {
        writeln!(out, "\nNo changes.")?;
    }
    Ok(())
}

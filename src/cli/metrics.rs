//! `pipeline metrics`: find, read, check, run and import the canonical business metrics.

use super::output::{self, Format};
use super::query::{print_result, QueryFormat};
use crate::diag::{render, Diagnostics};
use crate::extract_db::RemotePolicy;
use crate::metrics::{self, Request};
use crate::plan;
use crate::registry::document::Kind;
use crate::spec::model::MetricSpec;
use crate::state::{self, StateStore};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline metrics list                              every metric: id, name, unit, grains, owner
  pipeline metrics list --category revenue --format json
  pipeline metrics show revenue/total_revenue        definition, tables, SQL for each grain, last check
  pipeline metrics run revenue/total_revenue --grain month --from 2025-01-01 --to 2025-06-30
  pipeline metrics run revenue/total_revenue --dim country --format csv
  pipeline metrics check                             bind every metric's SQL against analytics.duckdb
  pipeline metrics import old-metrics/ --dry-run     convert the older layout into metrics/ specs

How to write a metric: docs/metrics.md.";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// List the metrics defined in metrics/.
    #[command(
        after_help = "Examples:\n  pipeline metrics list\n  pipeline metrics list --category revenue --format json"
    )]
    List {
        /// Only this category (the folder under metrics/).
        #[arg(long)]
        category: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Everything about one metric, with its SQL as rendered for each grain.
    #[command(
        after_help = "Examples:\n  pipeline metrics show revenue/total_revenue\n  \
        pipeline metrics show total_revenue            a unique short name is enough\n  \
        pipeline metrics show revenue/total_revenue --format json"
    )]
    Show {
        /// The metric id, `<category>/<name>`.
        id: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Compute a metric on analytics.duckdb and print the result.
    #[command(
        after_help = "Examples:\n  pipeline metrics run revenue/total_revenue\n  \
        pipeline metrics run total_revenue --grain month --from 2025-01-01 --to 2025-06-30\n  \
        pipeline metrics run total_revenue --dim country --format csv\n  \
        pipeline metrics run total_revenue --grain week --sql   print the SQL it would run"
    )]
    Run {
        /// The metric id, `<category>/<name>`.
        id: String,
        /// Time grain (one the metric declares; default: its first).
        #[arg(long)]
        grain: Option<String>,
        /// Break it down by this dimension (the `by_<dim>` variant, or `{{ dimension }}` in its SQL).
        #[arg(long = "dim", value_name = "DIMENSION")]
        dimension: Option<String>,
        /// First day, YYYY-MM-DD (inclusive).
        #[arg(long, value_name = "DATE")]
        from: Option<String>,
        /// Last day, YYYY-MM-DD (inclusive).
        #[arg(long, value_name = "DATE")]
        to: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: QueryFormat,
        /// Print the SQL instead of running it.
        #[arg(long)]
        sql: bool,
    },
    /// Bind each metric's SQL (every grain and variant) against analytics.duckdb, without running it;
    /// report unknown columns and tables at their file:line. Exit 1 if any fails.
    #[command(after_help = "Examples:\n  pipeline metrics check\n  \
        pipeline metrics check revenue/total_revenue orders/order_count\n  \
        pipeline metrics check --format json")]
    Check {
        /// Only these metrics (default: all).
        ids: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Convert metric definitions in the older layout (<dir>/<category>/<metric>.yml) into spec files
    /// under metrics/. Re-importing the same directory changes nothing.
    #[command(
        after_help = "Examples:\n  pipeline metrics import old-metrics/ --dry-run   show what would be written\n  \
        pipeline metrics import old-metrics/             write metrics/<category>/<name>.yaml"
    )]
    Import {
        /// The directory holding the older definitions.
        #[arg(value_name = "DIR")]
        legacy_dir: PathBuf,
        /// Show what would be written, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(dir: &Path, args: Args) -> Result<ExitCode> {
    if let Some(ws) = super::pull::workspace_here(dir) {
        return in_workspace(&ws, args.command);
    }
    match args.command {
        Command::List { category, format } => list(dir, category.as_deref(), format),
        Command::Show { id, format } => show(dir, &id, format),
        Command::Run {
            id,
            grain,
            dimension,
            from,
            to,
            format,
            sql,
        } => {
            let req = Request {
                grain,
                dimension,
                date_from: from,
                date_to: to,
            };
            compute(dir, &id, &req, format, sql)
        }
        Command::Check { ids, format } => check(dir, &ids, format),
        Command::Import {
            legacy_dir,
            dry_run,
        } => import(dir, &legacy_dir, dry_run),
    }
}

/// `metrics list` and `show` in a workspace: the definitions the last pull brought.
fn in_workspace(ws: &crate::workspace::Workspace, command: Command) -> Result<ExitCode> {
    let st = ws.require()?;
    let field = |m: &serde_json::Value, k: &str| match &m[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    };
    let mut out = anstream::stdout().lock();
    match command {
        Command::List { category, format } => {
            let chosen: Vec<&serde_json::Value> = st
                .metrics
                .iter()
                .filter(|m| {
                    category.as_deref().is_none_or(|c| {
                        m["id"].as_str().is_some_and(|id| id.split('/').next() == Some(c))
                    })
                })
                .collect();
            if format == Format::Json {
                writeln!(out, "{}", serde_json::to_string_pretty(&chosen)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = output::TextTable::new(vec!["id", "name", "unit", "grains", "owner"]);
            for m in &chosen {
                t.row(vec![
                    field(m, "id"),
                    output::truncate(&field(m, "display_name"), 30),
                    field(m, "unit"),
                    field(m, "grain"),
                    field(m, "owner"),
                ]);
            }
            write!(out, "{}", t.render())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id, format } => {
            let Some(m) = st.metric(&id) else {
                bail!("no metric `{id}` in this workspace; `pipeline metrics list` shows them");
            };
            if format == Format::Json {
                writeln!(out, "{}", serde_json::to_string_pretty(m)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            writeln!(out, "{id}: {}", field(m, "display_name"))?;
            for (k, label) in [
                ("description", "description"),
                ("unit", "unit"),
                ("grain", "grains"),
                ("dimensions", "dimensions"),
                ("synonyms", "synonyms"),
                ("owner", "owner"),
            ] {
                let v = field(m, k);
                if !v.is_empty() {
                    writeln!(out, "  {label}: {v}")?;
                }
            }
            writeln!(
                out,
                "\nSQL (canonical; {{{{ grain }}}} is one of the grains):\n{}",
                field(m, "sql").trim_end()
            )?;
            if let Some(variants) = m["variants"].as_object() {
                for (name, v) in variants {
                    if let Some(sql) = v.as_str() {
                        writeln!(out, "\nvariant {name}:\n{}", sql.trim_end())?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            id,
            grain,
            dimension,
            from,
            to,
            format,
            sql,
        } => {
            let Some(m) = st.metric(&id) else {
                bail!("no metric `{id}` in this workspace; `pipeline metrics list` shows them");
            };
            let parts = metrics::MetricParts::of_json(m)
                .with_context(|| format!("metric `{id}` has no SQL in this workspace"))?;
            let req = Request {
                grain,
                dimension,
                date_from: from,
                date_to: to,
            };
            let text = metrics::select_parts(&parts, &req)?;
            if sql {
                writeln!(out, "{text}")?;
                return Ok(ExitCode::SUCCESS);
            }
            drop(out);
            let conn = crate::workspace::database::open(ws)?;
            print_result(&conn, &text, format, None)?;
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!(
            "in a workspace, `metrics` lists, shows and runs the pulled definitions; check and import \
             need the instance"
        ),
    }
}

/// The specs, or their errors. Warnings are `validate`'s and `plan`'s to show: repeating them on
/// every `metrics` command would bury its output.
fn desired(dir: &Path, format: Format) -> Result<plan::Desired> {
    output::specs_or_report(plan::desired(dir), format)
}

fn find<'a>(d: &'a plan::Desired, id: &str) -> Result<&'a MetricSpec> {
    Ok(crate::metrics::lookup(&d.specs.metrics, id)?)
}

/// The last check of each registered metric, when there is a state.
fn last_checks(d: &plan::Desired) -> HashMap<String, state::sync::LastCheck> {
    let read = || match StateStore::of(&d.instance.data).read_if_exists()? {
        Some(r) => state::sync::last_checks(&r),
        None => Ok(HashMap::new()),
    };
    read().unwrap_or_default()
}

fn text(t: &Option<crate::spec::decode::Located<String>>) -> String {
    t.as_ref().map(|x| x.value.clone()).unwrap_or_default()
}

fn strings<T: AsRef<str>>(v: &[crate::spec::decode::Located<T>]) -> Vec<String> {
    v.iter().map(|x| x.value.as_ref().to_string()).collect()
}

fn tables(d: &plan::Desired, m: &MetricSpec) -> Vec<String> {
    d.objects
        .get(&(Kind::Metric, m.id.clone()))
        .and_then(|o| o.get("tables").as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

fn list(dir: &Path, category: Option<&str>, format: Format) -> Result<ExitCode> {
    let d = desired(dir, format)?;
    let checks = last_checks(&d);
    let chosen: Vec<&MetricSpec> = d
        .specs
        .metrics
        .iter()
        .filter(|m| category.is_none_or(|c| m.category.value == c))
        .collect();
    let mut out = anstream::stdout().lock();
    if format == Format::Json {
        let items: Vec<_> = chosen
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id, "display_name": text(&m.display_name), "description": text(&m.description),
                    "owner": text(&m.owner), "unit": text(&m.unit), "grains": metrics::grains(m),
                    "dimensions": strings(&m.dimensions), "tables": tables(&d, m),
                    "file": d.specs.files.get(m.file).display,
                    "last_check": checks.get(&m.id).map(|c| serde_json::json!({"status": c.status, "at": c.at, "error": c.error})),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = output::TextTable::new(vec!["id", "name", "unit", "grains", "owner", "check"]);
    for m in &chosen {
        t.row(vec![
            m.id.clone(),
            output::truncate(&text(&m.display_name), 30),
            text(&m.unit),
            metrics::grains(m).join(","),
            text(&m.owner),
            checks.get(&m.id).map_or("-".into(), |c| c.status.clone()),
        ]);
    }
    write!(out, "{}", t.render())?;
    writeln!(
        out,
        "{} metric(s). `pipeline metrics show ID` for one.",
        chosen.len()
    )?;
    Ok(ExitCode::SUCCESS)
}

fn show(dir: &Path, id: &str, format: Format) -> Result<ExitCode> {
    let d = desired(dir, format)?;
    let m = find(&d, id)?;
    let checks = last_checks(&d);
    let rendered: Vec<(String, String)> = metrics::grains(m)
        .into_iter()
        .map(|g| {
            let sql = metrics::select(
                m,
                &Request {
                    grain: Some(g.clone()),
                    ..Request::default()
                },
            )
            .unwrap_or_else(|e| format!("-- {e}"));
            (g, sql)
        })
        .collect();
    let mut out = anstream::stdout().lock();
    let file = d.specs.files.get(m.file).display.clone();
    let check = checks.get(&m.id);
    if format == Format::Json {
        let v = serde_json::json!({
            "id": m.id, "display_name": text(&m.display_name), "description": text(&m.description),
            "owner": text(&m.owner), "type": m.metric_type.map(|t| t.as_str()), "unit": text(&m.unit),
            "grains": metrics::grains(m), "time_column": text(&m.time_column),
            "dimensions": strings(&m.dimensions), "synonyms": strings(&m.synonyms), "notes": strings(&m.notes),
            "tables": tables(&d, m), "file": file,
            "sql": rendered.iter().map(|(g, s)| (g.clone(), serde_json::Value::String(s.clone()))).collect::<serde_json::Map<_, _>>(),
            "variants": m.variants.iter().map(|(k, v)| (k.value.clone(), serde_json::Value::String(v.value.clone()))).collect::<serde_json::Map<_, _>>(),
            "last_check": check.map(|c| serde_json::json!({"status": c.status, "at": c.at, "error": c.error})),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let bold = anstyle::Style::new().bold();
    let title = m
        .display_name
        .as_ref()
        .map_or(m.id.as_str(), |t| t.as_str());
    writeln!(out, "{bold}{title}{bold:#}  ({})  {file}", m.id)?;
    writeln!(out, "{}", text(&m.description))?;
    writeln!(out)?;
    let mut field = |k: &str, v: String| -> std::io::Result<()> {
        if v.is_empty() {
            Ok(())
        } else {
            writeln!(out, "  {k:<12} {v}")
        }
    };
    field("owner", text(&m.owner))?;
    field(
        "type",
        m.metric_type
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
    )?;
    field("unit", text(&m.unit))?;
    field("grains", metrics::grains(m).join(", "))?;
    field("time column", text(&m.time_column))?;
    field("dimensions", strings(&m.dimensions).join(", "))?;
    field("synonyms", strings(&m.synonyms).join(", "))?;
    field("tables", tables(&d, m).join(", "))?;
    field(
        "last check",
        check.map_or("never (`pipeline metrics check`)".into(), |c| {
            format!(
                "{} at {}{}",
                c.status,
                c.at,
                c.error.as_ref().map_or(String::new(), |e| format!(": {e}"))
            )
        }),
    )?;
    for n in strings(&m.notes) {
        writeln!(out, "  note         {n}")?;
    }
    for (grain, sql) in &rendered {
        writeln!(out, "\n{bold}SQL, grain {grain}{bold:#}\n{}", indent(sql))?;
    }
    for (k, v) in &m.variants {
        writeln!(
            out,
            "\n{bold}Variant {}{bold:#}  (pipeline metrics run {} --dim {})\n{}",
            k.value,
            m.id,
            k.value.trim_start_matches("by_"),
            indent(v.value.trim())
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn live(d: &plan::Desired) -> Result<duckdb::Connection> {
    let inst = &d.instance;
    if !inst.data.analytics().is_file() {
        bail!("there is no analytics.duckdb yet: run `pipeline apply` (or `pipeline run`) first");
    }
    let (conn, problems) =
        crate::analytics::open_live(&inst.data, &RemotePolicy::of_instance(inst))?;
    output::runtime_warnings(&problems);
    Ok(conn)
}

fn compute(
    dir: &Path,
    id: &str,
    req: &Request,
    format: QueryFormat,
    only_sql: bool,
) -> Result<ExitCode> {
    let d = desired(dir, Format::Human)?;
    let m = find(&d, id)?;
    let sql = metrics::select(m, req)?;
    if only_sql {
        println!("{sql}");
        return Ok(ExitCode::SUCCESS);
    }
    let conn = live(&d)?;
    print_result(&conn, &sql, format, None).with_context(|| {
        format!("metric `{id}` failed; `pipeline metrics check {id}` says where")
    })?;
    Ok(ExitCode::SUCCESS)
}

fn check(dir: &Path, ids: &[String], format: Format) -> Result<ExitCode> {
    let d = desired(dir, format)?;
    for id in ids {
        find(&d, id)?;
    }
    let conn = live(&d)?;
    let mut diags = Diagnostics::default();
    let mut results = Vec::new();
    let chosen: Vec<&MetricSpec> = d
        .specs
        .metrics
        .iter()
        .filter(|m| ids.is_empty() || ids.contains(&m.id))
        .collect();
    for m in &chosen {
        let problems = metrics::check(&conn, &d.specs.files, m);
        results.push((m.id.clone(), problems.first().map(|p| p.message.clone())));
        for p in problems {
            diags.push(p);
        }
    }
    drop(conn);
    // Recorded for registered metrics (status and history show it); a busy state is not an error here.
    let store = StateStore::of(&d.instance.data);
    if store.exists() {
        if let Err(e) = store
            .write()
            .and_then(|w| state::sync::record_checks(&w, &results))
        {
            eprintln!("note: the results were not recorded in the state: {e}");
        }
    }
    let failed = results.iter().filter(|r| r.1.is_some()).count();
    match format {
        Format::Json => {
            let report = render::json(&diags, &d.specs.files);
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "checked": chosen.len(), "failed": failed, "diagnostics": report,
                }))?
            );
        }
        Format::Human => {
            let mut err = anstream::stderr().lock();
            write!(err, "{}", render::human(&diags, &d.specs.files))?;
            drop(err);
            if failed == 0 {
                println!(
                    "checked: {} metric(s) bind against analytics.duckdb",
                    chosen.len()
                );
            } else {
                println!("{failed} of {} metric(s) do not bind", chosen.len());
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn import(dir: &Path, from: &Path, dry_run: bool) -> Result<ExitCode> {
    use crate::metrics::import::{import, ImportOptions};
    let opts = ImportOptions {
        out_dir: dir.join("metrics"),
        dry_run,
    };
    let report = import(from, &opts)?;
    let mut out = anstream::stdout().lock();
    let shown = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    let verb = if dry_run { "would write" } else { "wrote" };
    for p in &report.written {
        writeln!(out, "  {verb}     {}", shown(p))?;
    }
    for p in &report.unchanged {
        writeln!(out, "  unchanged   {}", shown(p))?;
    }
    drop(out);
    let mut err = anstream::stderr().lock();
    let warn = anstyle::AnsiColor::Yellow.on_default().bold();
    for p in &report.warnings {
        writeln!(err, "{warn}warning{warn:#}: {p}")?;
    }
    let bad = anstyle::AnsiColor::Red.on_default().bold();
    for p in &report.skipped {
        writeln!(err, "{bad}not converted{bad:#}: {p}")?;
    }
    drop(err);
    println!(
        "\n{} {}, {} unchanged, {} not converted, {} warning(s).{}",
        report.written.len(),
        if dry_run { "to write" } else { "written" },
        report.unchanged.len(),
        report.skipped.len(),
        report.warnings.len(),
        if report.written.is_empty() || dry_run {
            ""
        } else {
            " Run `pipeline validate`: the import does not check tables or SQL."
        }
    );
    // Definitions left behind are a failure a script should notice; warnings are not.
    Ok(if report.skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

//! `pipeline sources discover`: list what a source holds and write registry entries for it, so a new
//! instance is registered in one command.

use super::output;
use crate::connectors::bigquery::{self, Bigquery};
use crate::connectors::keboola::{client::TableInfo, Keboola};
use crate::metrics::import::scalar;
use crate::plan;
use crate::registered::Registered;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline sources discover kbc                          the tables the token can see
  pipeline sources discover kbc --bucket in.c-shop       one bucket
  pipeline sources discover kbc --write registry/kbc.yaml
                                                         registry entries with descriptions, columns
                                                         and primary keys from Keboola's metadata

  pipeline sources discover bq --bucket shop --write registry/bq.yaml
                                                         a BigQuery dataset's tables, with column
                                                         descriptions and primary keys

Then `pipeline plan` shows what registering them does, and `pipeline apply` syncs them. Discovery is
available for keboola and bigquery sources.";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// List the tables of a source; with --write, write registry entries for them.
    Discover {
        /// The source (its name in pipelines/).
        source: String,
        /// Only this bucket (a BigQuery dataset).
        #[arg(long)]
        bucket: Option<String>,
        /// Write registry entries to FILE (refuses to overwrite a file it did not write).
        #[arg(long, value_name = "FILE")]
        write: Option<PathBuf>,
    },
}

const MARKER: &str = "# Discovered by `pipeline sources discover`";

pub fn run(dir: &Path, args: Args) -> Result<ExitCode> {
    let Command::Discover {
        source,
        bucket,
        write,
    } = args.command;
    let desired = output::specs_or_report(plan::desired(dir), output::Format::Human)?;
    let reg = Registered::from_objects(&desired.objects)?;
    let Some(def) = reg.sources.get(&source) else {
        let hint = crate::diag::suggest(&source, reg.sources.keys().map(|s| s.as_str()))
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        bail!("no source `{source}` in pipelines/{hint}");
    };
    if def.source_type == "bigquery" {
        return discover_bigquery(dir, &source, def, bucket.as_deref(), write, &reg);
    }
    if def.source_type != "keboola" {
        bail!(
            "discovery is available for keboola and bigquery sources; `{source}` is a {} source",
            def.source_type
        );
    }
    let kbc = Keboola::new(def)?;
    let mut tables = kbc
        .client()?
        .tables(bucket.as_deref())
        .context("listing the tables")?;
    tables.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = anstream::stdout().lock();
    let mut t = output::TextTable::new(vec![
        "table",
        "rows",
        "columns",
        "primary key",
        "description",
    ]);
    for info in &tables {
        t.row(vec![
            info.id.clone(),
            info.rows_count.map_or("-".into(), |r| r.to_string()),
            info.columns.len().to_string(),
            info.primary_key.join(", "),
            output::truncate(info.description().unwrap_or(""), 50),
        ]);
    }
    write!(out, "{}", t.render())?;
    writeln!(out, "{} table(s).", tables.len())?;
    let Some(file) = write else {
        return Ok(ExitCode::SUCCESS);
    };
    let path = if file.is_absolute() {
        file
    } else {
        dir.join(file)
    };
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if !existing.starts_with(MARKER) {
            bail!(
                "{} exists and was not written by discovery; choose another file",
                path.display()
            );
        }
    }
    let taken: Vec<String> = reg
        .tables
        .values()
        .filter(|t| !t.source.eq(&source))
        .map(|t| t.name.to_ascii_lowercase())
        .collect();
    let text = registry(&source, &tables, &taken);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    writeln!(
        out,
        "Wrote {} entries to {}. Next: `pipeline plan`, then `pipeline apply`.",
        tables.len(),
        path.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `pipeline sources discover` for a BigQuery source: datasets, tables and columns from the REST
/// API (the connector's [`Bigquery::discover`]), written as registry entries.
fn discover_bigquery(
    dir: &Path,
    source: &str,
    def: &crate::registered::SourceDef,
    dataset: Option<&str>,
    write: Option<PathBuf>,
    reg: &Registered,
) -> Result<ExitCode> {
    if let Some(d) = dataset.filter(|d| !bigquery::is_dataset(d)) {
        bail!("`{d}` is not a BigQuery dataset id (letters, digits and _)");
    }
    let bq = Bigquery::new(def, dir)?;
    let tables = bq.discover(dataset).context("listing the tables")?;
    let mut out = anstream::stdout().lock();
    let mut t = output::TextTable::new(vec![
        "table",
        "kind",
        "rows",
        "columns",
        "primary key",
        "description",
    ]);
    for info in &tables {
        t.row(vec![
            format!("{}.{}", info.bucket, info.name),
            info.kind.to_ascii_lowercase(),
            info.rows.map_or("-".into(), |r| r.to_string()),
            info.columns.len().to_string(),
            info.primary_key.join(", "),
            output::truncate(info.description.as_deref().unwrap_or(""), 50),
        ]);
    }
    write!(out, "{}", t.render())?;
    writeln!(out, "{} table(s).", tables.len())?;
    let Some(file) = write else {
        return Ok(ExitCode::SUCCESS);
    };
    let path = if file.is_absolute() {
        file
    } else {
        dir.join(file)
    };
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if !existing.starts_with(MARKER) {
            bail!(
                "{} exists and was not written by discovery; choose another file",
                path.display()
            );
        }
    }
    let mut taken: Vec<String> = reg
        .tables
        .values()
        .filter(|t| !t.source.eq(source))
        .map(|t| t.name.to_ascii_lowercase())
        .collect();
    let mut text = format!(
        "{MARKER} from source `{source}` on {}; edit freely.\ntables:\n",
        chrono::Utc::now().format("%Y-%m-%d")
    );
    for info in &tables {
        // `bucket.table` names must be safe view names; a taken one gets its dataset in front.
        let clean = |s: &str| -> String {
            let mut out: String = s
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                out.insert(0, '_');
            }
            out.truncate(64);
            out
        };
        let mut view = clean(&info.name);
        if taken.contains(&view) {
            view = clean(&format!("{}_{}", info.bucket, info.name));
        }
        taken.push(view.clone());
        text.push_str(&format!("  - source: {}\n", scalar(source, 4, false)));
        text.push_str(&format!("    bucket: {}\n", scalar(&info.bucket, 4, false)));
        text.push_str(&format!(
            "    source_table: {}\n",
            scalar(&info.name, 4, false)
        ));
        if view != info.name {
            text.push_str(&format!("    name: {view}\n"));
        }
        if let Some(d) = &info.description {
            text.push_str(&format!("    description: {}\n", scalar(d, 6, false)));
        }
        if !info.primary_key.is_empty() {
            let keys: Vec<String> = info
                .primary_key
                .iter()
                .map(|k| scalar(k, 0, true))
                .collect();
            text.push_str(&format!(
                "    sync: {{ mode: full, primary_key: [{}] }}\n",
                keys.join(", ")
            ));
        }
        let documented: Vec<_> = info
            .columns
            .iter()
            .filter_map(|(c, _, d)| d.as_deref().map(|d| (c, d)))
            .collect();
        if !documented.is_empty() {
            text.push_str("    columns:\n");
            for (c, d) in documented {
                text.push_str(&format!(
                    "      {}: {}\n",
                    scalar(c, 0, false),
                    scalar(d, 8, false)
                ));
            }
        }
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    writeln!(
        out,
        "Wrote {} entries to {}. Next: `pipeline plan`, then `pipeline apply`.",
        tables.len(),
        path.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// View names must be unique across the instance: a table name that is taken (by another source,
/// or by another bucket here) gets its bucket's name in front.
fn view_name(info: &TableInfo, seen: &mut BTreeMap<String, usize>, taken: &[String]) -> String {
    let clean = |s: &str| -> String {
        let mut out: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            out.insert(0, '_');
        }
        out.truncate(64);
        out
    };
    let plain = clean(&info.name);
    let name = if taken.contains(&plain) || seen.contains_key(&plain) {
        let bucket = info
            .bucket
            .as_ref()
            .map(|b| {
                b.id.rsplit('.')
                    .next()
                    .unwrap_or(&b.id)
                    .trim_start_matches("c-")
                    .to_string()
            })
            .unwrap_or_default();
        clean(&format!("{bucket}_{}", info.name))
    } else {
        plain
    };
    *seen.entry(name.clone()).or_default() += 1;
    name
}

fn registry(source: &str, tables: &[TableInfo], taken: &[String]) -> String {
    let mut out = format!(
        "{MARKER} from source `{source}` on {}; edit freely.\ntables:\n",
        chrono::Utc::now().format("%Y-%m-%d")
    );
    let mut seen = BTreeMap::new();
    for info in tables {
        let (bucket, name) = match info.id.rsplit_once('.') {
            Some((b, n)) => (b.to_string(), n.to_string()),
            None => continue,
        };
        let view = view_name(info, &mut seen, taken);
        out.push_str(&format!("  - source: {}\n", scalar(source, 4, false)));
        out.push_str(&format!("    bucket: {}\n", scalar(&bucket, 4, false)));
        out.push_str(&format!("    source_table: {}\n", scalar(&name, 4, false)));
        if view != name {
            out.push_str(&format!("    name: {view}\n"));
        }
        if let Some(d) = info.description() {
            out.push_str(&format!("    description: {}\n", scalar(d, 6, false)));
        }
        if !info.primary_key.is_empty() {
            let keys: Vec<String> = info
                .primary_key
                .iter()
                .map(|k| scalar(k, 0, true))
                .collect();
            out.push_str(&format!(
                "    sync: {{ mode: full, primary_key: [{}] }}\n",
                keys.join(", ")
            ));
        }
        let documented: Vec<(&String, &str)> = info
            .columns
            .iter()
            .filter_map(|c| info.column_description(c).map(|d| (c, d)))
            .collect();
        if !documented.is_empty() {
            out.push_str("    columns:\n");
            for (c, d) in documented {
                out.push_str(&format!(
                    "      {}: {}\n",
                    scalar(c, 0, false),
                    scalar(d, 8, false)
                ));
            }
        }
    }
    out
}

//! `pipeline sources discover`: list what a source holds and write registry entries for it, so a new
//! instance is registered in one command. Every source type answers through the same connector
//! method ([`crate::connectors::Connector::discover`]); this file only renders and writes.

use super::output;
use crate::connectors::{self, DiscoveredTable, Session};
use crate::metrics::import::scalar;
use crate::plan;
use crate::registry::registered::Registered;
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
  pipeline sources discover shop_db --bucket public      one PostgreSQL schema (MySQL: database)
  pipeline sources discover bq --bucket shop --write registry/bq.yaml
                                                         one BigQuery dataset's tables, with column
                                                         descriptions

Then `pipeline plan` shows what registering them does, and `pipeline apply` syncs them. Discovery is
available for keboola, postgres, mysql and bigquery sources.";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// List the tables of a source; with --write, write registry entries for them.
    #[command(after_help = AFTER_HELP)]
    Discover {
        /// The source (its name in pipelines/).
        source: String,
        /// Only this bucket (Keboola bucket, PostgreSQL schema, MySQL database, BigQuery dataset).
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
    let inst = &desired.instance;
    let connector = connectors::connector(def, &inst.root)?;
    // The connector says whether it can list its tables: no list of types to keep in step here.
    if !connector.can_discover() {
        bail!(
            "discovery is not available for {} sources like `{source}` (it is for database and \
             warehouse sources)",
            def.source_type
        );
    }
    let conn = duckdb::Connection::open_in_memory()?;
    let session = Session::default().with_extensions(inst.extensions.clone());
    let mut tables = connector
        .discover(&conn, &session, bucket.as_deref())
        .context("listing the tables")?;
    tables.sort_by(|a, b| (&a.bucket, &a.name).cmp(&(&b.bucket, &b.name)));
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
            format!("{}.{}", info.bucket, info.name),
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

/// View names must be unique across the instance: a table name that is taken (by another source,
/// or by another bucket here) gets its bucket's name in front.
fn view_name(
    info: &DiscoveredTable,
    seen: &mut BTreeMap<String, usize>,
    taken: &[String],
) -> String {
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
            .rsplit('.')
            .next()
            .unwrap_or(&info.bucket)
            .trim_start_matches("c-")
            .to_string();
        clean(&format!("{bucket}_{}", info.name))
    } else {
        plain
    };
    *seen.entry(name.clone()).or_default() += 1;
    name
}

fn registry(source: &str, tables: &[DiscoveredTable], taken: &[String]) -> String {
    let mut out = format!(
        "{MARKER} from source `{source}` on {}; edit freely.\ntables:\n",
        chrono::Utc::now().format("%Y-%m-%d")
    );
    let mut seen = BTreeMap::new();
    // Written in `pipeline fmt`'s layout (docs/fmt.md): items one blank line apart, keys in the
    // schema's order.
    for (i, info) in tables.iter().enumerate() {
        let (bucket, name) = (&info.bucket, &info.name);
        let view = view_name(info, &mut seen, taken);
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("  - source: {}\n", scalar(source, 4, false)));
        out.push_str(&format!("    bucket: {}\n", scalar(bucket, 4, false)));
        out.push_str(&format!("    source_table: {}\n", scalar(name, 4, false)));
        if &view != name {
            out.push_str(&format!("    name: {view}\n"));
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
        if let Some(d) = info.description.as_deref() {
            out.push_str(&format!("    description: {}\n", scalar(d, 6, false)));
        }
        let documented: Vec<(&String, &str)> = info
            .columns
            .iter()
            .filter_map(|c| c.description.as_deref().map(|d| (&c.name, d)))
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

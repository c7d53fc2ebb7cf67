//! `pipeline validate`: load and check every spec, print all diagnostics, exit 0 or 1.

use crate::diag::render;
use crate::spec;
use anyhow::Result;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline validate                        human output: file:line:col, the line, a caret and a hint
  pipeline validate --dir path/to/instance
  pipeline validate --format github        annotations on the pull request's changed lines
  pipeline validate --format json          a stable structure for tools (docs/validate.md)

Exit status: 0 when valid (warnings allowed), 1 when any error was found.

What DuckDB's parser said about each SQL text is cached across runs (~/.cache/pipeline, or
$PIPELINE_SQL_CACHE; PIPELINE_SQL_CACHE=off disables it): the diagnostics are the same either way.";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Human,
    Json,
    Github,
}

/// `quiet`: print errors only, without the summary line (the JSON report stays whole: a program
/// asked for it).
pub fn run(dir: &Path, args: Args, quiet: bool) -> Result<ExitCode> {
    let started = Instant::now();
    let cache = spec::sql_cache::SqlCache::dir_from_env();
    let (specs, _analysis, mut diags) = spec::check_cached(dir, cache.as_deref());
    if quiet && args.format != Format::Json {
        diags.retain_errors();
    }
    let elapsed = started.elapsed();
    let transforms = specs.transforms().count();
    let mut out = anstream::stdout().lock();
    match args.format {
        Format::Json => {
            let mut report = render::json(&diags, &specs.files);
            report["objects"] = serde_json::json!({
                "sources": specs.sources.len(),
                "tables": specs.tables.len(),
                "transforms": transforms,
                "metrics": specs.metrics.len(),
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        }
        Format::Github => write!(out, "{}", render::github(&diags, &specs.files))?,
        Format::Human => {
            write!(out, "{}", render::human(&diags, &specs.files))?;
            let (errors, warnings) = (diags.error_count(), diags.warning_count());
            let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
            if quiet {
                // Diagnostics only; the exit status says the rest.
            } else if errors == 0 {
                let ok = anstyle::AnsiColor::Green.on_default().bold();
                writeln!(
                    out,
                    "{ok}valid{ok:#}: {}, {}, {}, {} in {} ({} ms){}",
                    plural(specs.sources.len(), "source"),
                    plural(specs.tables.len(), "table"),
                    plural(transforms, "transform"),
                    plural(specs.metrics.len(), "metric"),
                    plural(specs.files.len(), "file"),
                    elapsed.as_millis(),
                    if warnings > 0 {
                        format!(", {}", plural(warnings, "warning"))
                    } else {
                        String::new()
                    }
                )?;
            } else {
                let bad = anstyle::AnsiColor::Red.on_default().bold();
                writeln!(
                    out,
                    "{bad}invalid{bad:#}: {}, {} in {}",
                    plural(errors, "error"),
                    plural(warnings, "warning"),
                    plural(specs.files.len(), "file"),
                )?;
            }
        }
    }
    Ok(if diags.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

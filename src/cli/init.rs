//! `pipeline init [DIR]`: scaffold a new instance whose commented example files validate.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline init                 scaffold into the current directory
  pipeline init acme-data --name \"Acme Data\"

Existing files are never overwritten: init stops if any file it would write exists.";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to create the instance in (created if missing).
    #[arg(default_value = ".")]
    dir: PathBuf,

    /// Instance name written to config/instance.yaml (default: the directory's name).
    #[arg(long)]
    name: Option<String>,
}

/// (path inside the instance, contents)
fn files(name: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "config/instance.yaml",
            include_str!("init_templates/instance.yaml").replace("{{NAME}}", name),
        ),
        (
            "pipelines/files.yaml",
            include_str!("init_templates/files.yaml").into(),
        ),
        (
            "registry/files.yaml",
            include_str!("init_templates/registry.yaml").into(),
        ),
        (
            "metrics/customers/customer_count.yaml",
            include_str!("init_templates/metric.yaml").into(),
        ),
        (
            "examples/data/files/customers.csv",
            include_str!("init_templates/customers.csv").into(),
        ),
        (
            ".gitignore",
            include_str!("init_templates/gitignore").into(),
        ),
    ]
}

fn default_name(dir: &Path) -> String {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    abs.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "My data".into())
}

/// YAML-quotes a name unless it is plainly safe.
fn yaml_string(s: &str) -> String {
    let plain = s
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_alphabetic());
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let name = args.name.unwrap_or_else(|| default_name(&args.dir));
    let files = files(&yaml_string(&name));
    let existing: Vec<&str> = files
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| args.dir.join(p).exists())
        .collect();
    if !existing.is_empty() {
        bail!(
            "{} already has {}; init never overwrites files (choose an empty directory)",
            args.dir.display(),
            existing.join(", ")
        );
    }
    for (rel, contents) in &files {
        let path = args.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("Created instance `{name}` in {}:", args.dir.display());
    for (rel, _) in &files {
        println!("  {rel}");
    }
    println!("\nNext: cd {} && pipeline validate", args.dir.display());
    Ok(ExitCode::SUCCESS)
}

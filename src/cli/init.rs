//! `pipeline init [DIR]`: scaffold a new instance whose commented example files validate.

use crate::spec::{fields, json_schema};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline init                 scaffold into the current directory
  pipeline init acme-data --name \"Acme Data\"

Besides the example specs, init writes the JSON Schemas of the spec files to .schemas/ and starts
each example with a `# yaml-language-server: $schema=` line, so editors validate specs out of the box.
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

/// Where init writes the JSON Schemas, relative to the instance root.
const SCHEMA_DIR: &str = ".schemas";

/// A spec file's text with the modeline that lets YAML editors (the yaml-language-server in VS
/// Code, Neovim, Helix, Zed…) validate and complete it against `kind`'s schema, found relative to
/// the file at `rel`.
fn with_modeline(rel: &str, kind: &str, text: &str) -> String {
    let up = "../".repeat(rel.matches('/').count());
    format!("# yaml-language-server: $schema={up}{SCHEMA_DIR}/{kind}.json\n{text}")
}

/// (path inside the instance, contents)
fn files(name: &str) -> Result<Vec<(String, String)>> {
    let specs = [
        (
            "config/instance.yaml",
            "instance",
            include_str!("init_templates/instance.yaml").replace("{{NAME}}", name),
        ),
        (
            "pipelines/files.yaml",
            "source",
            include_str!("init_templates/files.yaml").into(),
        ),
        (
            "registry/files.yaml",
            "registry",
            include_str!("init_templates/registry.yaml").into(),
        ),
        (
            "metrics/customers/customer_count.yaml",
            "metric",
            include_str!("init_templates/metric.yaml").into(),
        ),
    ];
    let mut out: Vec<(String, String)> = specs
        .iter()
        .map(|(rel, kind, text)| (rel.to_string(), with_modeline(rel, kind, text)))
        .collect();
    for (kind, _) in fields::spec_kinds() {
        let schema = json_schema::for_kind(kind).context("a kind from the fixed list")?;
        out.push((
            format!("{SCHEMA_DIR}/{kind}.json"),
            serde_json::to_string_pretty(&schema)? + "\n",
        ));
    }
    out.extend(
        [
            (
                "examples/data/files/customers.csv",
                include_str!("init_templates/customers.csv").into(),
            ),
            (
                ".gitignore",
                include_str!("init_templates/gitignore").into(),
            ),
        ]
        .map(|(rel, text): (&str, String)| (rel.to_string(), text)),
    );
    Ok(out)
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
    let files = files(&yaml_string(&name))?;
    let existing: Vec<&str> = files
        .iter()
        .map(|(p, _)| p.as_str())
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
    println!(
        "\nEditors with the YAML language server check the specs against {SCHEMA_DIR}/ as you type \
         (refresh after an upgrade: pipeline schema --out-dir {SCHEMA_DIR})."
    );
    println!("\nNext: cd {} && pipeline validate", args.dir.display());
    Ok(ExitCode::SUCCESS)
}

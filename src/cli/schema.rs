//! `pipeline schema`: JSON Schemas of the spec files, for editors.

use crate::spec::{fields, json_schema};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline schema                      all four schemas as one JSON object keyed by kind
  pipeline schema registry             just the registry schema
  pipeline schema --out-dir .schemas   write instance.json, source.json, registry.json, metric.json

Then point your editor at them, e.g. as the first line of a registry file:
  # yaml-language-server: $schema=../.schemas/registry.json";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which spec kind: instance, source, registry or metric (default: all).
    #[arg(value_parser = ["instance", "source", "registry", "metric"])]
    kind: Option<String>,

    /// Write one `<kind>.json` file per kind into this directory instead of printing.
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let kinds: Vec<&str> = match &args.kind {
        Some(k) => vec![k.as_str()],
        None => fields::spec_kinds().iter().map(|(k, _)| *k).collect(),
    };
    let schema_of = |k: &str| json_schema::for_kind(k).expect("kind from the fixed list");
    if let Some(dir) = args.out_dir {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for k in kinds {
            let path = dir.join(format!("{k}.json"));
            std::fs::write(&path, serde_json::to_string_pretty(&schema_of(k))? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    } else if let [one] = kinds.as_slice() {
        println!("{}", serde_json::to_string_pretty(&schema_of(one))?);
    } else {
        let all: serde_json::Map<String, serde_json::Value> = kinds
            .iter()
            .map(|k| (k.to_string(), schema_of(k)))
            .collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(ExitCode::SUCCESS)
}

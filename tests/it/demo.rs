//! The demo instance (the repository root) validates, in YAML as committed and converted to TOML.

use crate::common::{pipeline, repo_root};
use std::path::Path;

fn validate(dir: &Path) -> serde_json::Value {
    let out = pipeline()
        .arg("--dir")
        .arg(dir)
        .args(["validate", "--format", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    report
}

#[test]
fn demo_instance_validates_without_warnings() {
    let report = validate(&repo_root());
    assert_eq!(report["warning_count"], 0, "{report:#}");
    assert_eq!(report["objects"]["sources"], 2);
    assert_eq!(report["objects"]["tables"], 6);
    assert_eq!(report["objects"]["transforms"], 2);
    assert_eq!(report["objects"]["metrics"], 10);
}

/// Converts every YAML spec of `src` into TOML under `dst` (same names, `.toml`).
fn convert_tree(src: &Path, dst: &Path, rel: &Path) {
    for entry in std::fs::read_dir(src.join(rel)).unwrap() {
        let entry = entry.unwrap();
        let rel = rel.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            convert_tree(src, dst, &rel);
            continue;
        }
        let text = std::fs::read_to_string(src.join(&rel)).unwrap();
        let node = pipeline::spec::yaml::parse(&text, Default::default()).unwrap();
        let toml = toml::to_string_pretty(&node.to_json()).unwrap();
        let out = dst.join(rel.with_extension("toml"));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        std::fs::write(out, toml).unwrap();
    }
}

#[test]
fn demo_instance_converted_to_toml_validates() {
    let root = repo_root();
    let dir = tempfile::tempdir().unwrap();
    for sub in ["config", "pipelines", "registry", "metrics"] {
        convert_tree(&root, dir.path(), Path::new(sub));
    }
    std::os::unix::fs::symlink(root.join("examples"), dir.path().join("examples")).unwrap();
    assert!(dir
        .path()
        .join("metrics/revenue/total_revenue.toml")
        .is_file());
    let report = validate(dir.path());
    assert_eq!(report["files_checked"], 15);
    assert_eq!(report["objects"]["tables"], 6);
    assert_eq!(report["objects"]["metrics"], 10);
}

//! The demo instance (the repository root) validates, in YAML as committed and converted to TOML.

use crate::common::{copy_tree, pipeline, repo_root};
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

fn plan_json(dir: &Path) -> serde_json::Value {
    let out = pipeline()
        .arg("--dir")
        .arg(dir)
        .args(["plan", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The demo registers in one apply, and the same specs written in TOML are the same objects: only
/// their file names differ.
#[test]
fn demo_applies_and_its_toml_twin_differs_only_in_file_names() {
    let root = repo_root();
    let dir = tempfile::tempdir().unwrap();
    for sub in ["config", "pipelines", "registry", "metrics"] {
        copy_tree(&root.join(sub), &dir.path().join(sub));
    }
    std::os::unix::fs::symlink(root.join("examples"), dir.path().join("examples")).unwrap();
    let plan = plan_json(dir.path());
    assert_eq!(
        plan["summary"],
        serde_json::json!({"add": 21, "change": 0, "destroy": 0, "breaking": 0})
    );
    pipeline()
        .arg("--dir")
        .arg(dir.path())
        .args(["apply", "--auto-approve"])
        .env_remove("CI")
        .assert()
        .success();

    for sub in ["config", "pipelines", "registry", "metrics"] {
        convert_tree(&root, dir.path(), Path::new(sub));
        // Drop the YAML originals: only the TOML twins remain.
        let walk = walk_files(&dir.path().join(sub));
        for f in walk
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
        {
            std::fs::remove_file(f).unwrap();
        }
    }
    let plan = plan_json(dir.path());
    let changes = plan["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 21, "{plan:#}");
    for c in changes {
        assert_eq!(c["action"], "update", "{c:#}");
        let fields = c["fields"].as_array().unwrap();
        assert_eq!(fields.len(), 1, "{c:#}");
        assert_eq!(fields[0]["field"], "(file)", "{c:#}");
        assert!(fields[0]["new"].as_str().unwrap().ends_with(".toml"));
    }
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

//! `pipeline init`, `pipeline schema` and `--help`.

use crate::common::{pipeline, repo_root};
use pipeline::spec::fields;

#[test]
fn init_scaffolds_an_instance_that_validates_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("acme");
    pipeline()
        .arg("init")
        .arg(&target)
        .args(["--name", "Acme: data"])
        .assert()
        .success();
    let out = pipeline()
        .arg("--dir")
        .arg(&target)
        .args(["validate", "--format", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["error_count"], 0);
    assert_eq!(report["warning_count"], 0, "{report:#}");
    assert_eq!(report["objects"]["tables"], 1);
    assert_eq!(report["objects"]["metrics"], 1);
    let config = std::fs::read_to_string(target.join("config/instance.yaml")).unwrap();
    assert!(config.contains("name: \"Acme: data\""), "{config}");
    // Editors validate out of the box: every example starts with a modeline whose relative path
    // reaches the schema init wrote for its kind, and that schema is `pipeline schema`'s.
    for (rel, kind) in [
        ("config/instance.yaml", "instance"),
        ("pipelines/files.yaml", "source"),
        ("registry/files.yaml", "registry"),
        ("metrics/customers/customer_count.yaml", "metric"),
    ] {
        let text = std::fs::read_to_string(target.join(rel)).unwrap();
        let first = text.lines().next().unwrap();
        let schema_rel = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| panic!("{rel} starts with {first}"));
        let schema_path = target.join(rel).parent().unwrap().join(schema_rel);
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&schema_path).unwrap()).unwrap();
        let printed = pipeline().args(["schema", kind]).output().unwrap();
        let printed: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
        assert_eq!(written, printed, "{rel}");
    }
}

#[test]
fn init_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/instance.yaml"), "name: Mine\n").unwrap();
    let out = pipeline().arg("init").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never overwrites"));
    let kept = std::fs::read_to_string(dir.path().join("config/instance.yaml")).unwrap();
    assert_eq!(kept, "name: Mine\n");
}

#[test]
fn schema_prints_every_kind_and_writes_files() {
    let out = pipeline().arg("schema").output().unwrap();
    assert!(out.status.success());
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for kind in ["instance", "source", "registry", "metric"] {
        assert_eq!(all[kind]["type"], "object", "{kind}");
        assert!(all[kind]["$schema"].is_string());
    }
    let dir = tempfile::tempdir().unwrap();
    pipeline()
        .args(["schema", "registry", "--out-dir"])
        .arg(dir.path())
        .assert()
        .success();
    let registry: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("registry.json")).unwrap())
            .unwrap();
    assert_eq!(registry["required"], serde_json::json!(["tables"]));
}

#[test]
fn help_teaches_with_examples() {
    for args in [
        &["--help"][..],
        &["validate", "--help"],
        &["init", "--help"],
        &["schema", "--help"],
        &["catalog", "export", "--help"],
        &["catalog", "import", "openmetadata", "--help"],
        &["fmt", "--help"],
    ] {
        let out = pipeline().args(args).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Examples:"), "{args:?}: {text}");
    }
}

/// docs/specs.md must document every key the schema accepts.
#[test]
fn specs_doc_covers_every_key() {
    let doc = std::fs::read_to_string(repo_root().join("docs/specs.md")).unwrap();
    let mut missing = Vec::new();
    for object in fields::all_objects() {
        for field in object.fields {
            if !doc.contains(&format!("`{}`", field.key)) {
                missing.push(format!("{}.{}", object.name, field.key));
            }
        }
    }
    assert!(missing.is_empty(), "undocumented keys: {missing:?}");
}

#[test]
fn graph_lineage_draws_what_reads_each_table() {
    use crate::common::{Fmt, Instance};
    let inst = Instance::new(Fmt::Yaml);
    let lineage = |format: Option<&str>| {
        let mut cmd = inst.cmd();
        cmd.args(["graph", "--lineage"]);
        if let Some(f) = format {
            cmd.args(["--format", f]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        lineage(None),
        "shop\n\
         ├── customers (table)\n\
         └── orders (table)\n    \
             ├── daily (transform)\n    \
             └── sales/order_count (metric)\n"
    );
    let json: serde_json::Value = serde_json::from_str(&lineage(Some("json"))).unwrap();
    let name = |i: &serde_json::Value| json["nodes"][i.as_u64().unwrap() as usize]["name"].clone();
    let edges: Vec<(serde_json::Value, serde_json::Value)> = json["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (name(&e[0]), name(&e[1])))
        .collect();
    assert_eq!(edges.len(), 2, "{json:#}");
    assert!(edges.contains(&("orders".into(), "daily".into())));
    assert!(edges.contains(&("orders".into(), "sales/order_count".into())));
    assert!(lineage(Some("dot")).contains("\"table:orders\" -> \"transform:daily\";"));
    // The tree is the lineage's: without --lineage it is refused with a hint.
    let out = inst
        .cmd()
        .args(["graph", "--format", "tree"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --lineage"));
}

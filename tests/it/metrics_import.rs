//! Importing metric definitions of the older layout (`tests/fixtures/metrics-legacy`) into a copy of
//! the demo instance: the generated specs pass `pipeline validate` and run on the demo's data, and a
//! second import changes nothing.

use crate::common::{copy_tree, pipeline, repo_root};
use pipeline::metrics::import::{import, ImportOptions};

#[test]
fn imported_legacy_metrics_validate_in_the_demo_instance() {
    let root = repo_root();
    let dir = tempfile::tempdir().unwrap();
    // The demo without its own metrics: only the imported ones are checked.
    for sub in ["config", "pipelines", "registry", "examples"] {
        copy_tree(&root.join(sub), &dir.path().join(sub));
    }
    let legacy = root.join("tests/fixtures/metrics-legacy");
    let opts = ImportOptions {
        out_dir: dir.path().join("metrics"),
        dry_run: false,
    };
    let report = import(&legacy, &opts).unwrap();
    assert_eq!(report.written.len(), 9, "{report:#?}");
    assert_eq!(report.skipped.len(), 1, "{report:#?}");
    assert!(report.skipped[0].file.ends_with("support/broken.yml"));

    let out = pipeline()
        .arg("--dir")
        .arg(dir.path())
        .args(["validate", "--format", "json"])
        .output()
        .unwrap();
    let validated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "validate printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{validated:#}");
    assert_eq!(validated["objects"]["metrics"], 9, "{validated:#}");
    // The legacy format lists dimensions as documentation; the only warnings are validate's note
    // that no SQL handles them yet (a `by_<dimension>` variant or `{{ dimension }}` would).
    let warnings: Vec<&str> = validated["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "warning")
        .map(|d| d["message"].as_str().unwrap())
        .collect();
    assert!(
        warnings.iter().all(|w| w.contains("but no SQL handles it")),
        "{validated:#}"
    );

    let again = import(&legacy, &opts).unwrap();
    assert!(again.written.is_empty(), "{again:#?}");
    assert_eq!(again.unchanged, report.written);

    // The command prints the same report, exits 1 for the definition it could not convert, and
    // changes nothing on a re-import.
    let out = pipeline()
        .arg("--dir")
        .arg(dir.path())
        .args(["metrics", "import"])
        .arg(&legacy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("0 written, 9 unchanged, 1 not converted"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.yml"));

    // Imported metrics run on the data like any other.
    pipeline()
        .arg("--dir")
        .arg(dir.path())
        .args(["apply", "--auto-approve", "-q"])
        .env_remove("CI")
        .assert()
        .success();
    for written in &report.written {
        let rel = written.strip_prefix(dir.path().join("metrics")).unwrap();
        let id = rel.with_extension("").to_string_lossy().into_owned();
        let out = pipeline()
            .arg("--dir")
            .arg(dir.path())
            .args(["metrics", "run", &id, "--format", "ndjson"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let first = String::from_utf8_lossy(&out.stdout);
        let row: serde_json::Value =
            serde_json::from_str(first.lines().next().unwrap_or("{}")).unwrap();
        assert!(
            row.as_object().is_some_and(|r| !r.is_empty()),
            "{id}: {first}"
        );
    }
}

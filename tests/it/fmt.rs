//! `pipeline fmt`: check mode for CI, rewriting in place with comments kept, broken files reported
//! and left alone, idempotence, and the demo and `init` output already formatted.

use crate::common::{pipeline, repo_root, Fmt, Instance};

fn read(inst: &Instance, rel: &str) -> String {
    std::fs::read_to_string(inst.path().join(rel)).unwrap()
}

const MESSY_REGISTRY: &str = "\
# yaml-language-server: $schema=../.schemas/registry.json
tables:
- description: Orders   # one row per order
  source_table: orders
  # where the rows come from
  source: shop
  sync: {primary_key: [order_id],mode: incremental, cursor: updated_at}
- source: shop
  source_table: customers   \n";

const FORMATTED_REGISTRY: &str = "\
# yaml-language-server: $schema=../.schemas/registry.json
tables:
  # where the rows come from
  - source: shop
    source_table: orders
    sync: { mode: incremental, cursor: updated_at, primary_key: [order_id] }
    description: Orders  # one row per order

  - source: shop
    source_table: customers
";

#[test]
fn check_lists_unformatted_files_writes_nothing_and_fmt_fixes_them() {
    let inst = Instance::new(Fmt::Yaml);
    // The fixture's registry lists its tables without a blank line between them.
    inst.cmd().args(["fmt", "--check"]).assert().code(1);
    inst.cmd().args(["fmt", "-q"]).assert().success().stdout("");
    inst.cmd().args(["fmt", "--check"]).assert().success();

    inst.write_spec("registry/shop", MESSY_REGISTRY);
    let out = inst.cmd().args(["fmt", "--check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("would reformat registry/shop.yaml"),
        "{stdout}"
    );
    assert!(!stdout.contains("pipelines/shop.yaml"), "{stdout}");
    assert_eq!(
        read(&inst, "registry/shop.yaml"),
        MESSY_REGISTRY,
        "--check wrote"
    );

    // --diff shows the change as a unified diff, and writes nothing either.
    let out = inst.cmd().args(["fmt", "--diff"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(diff.contains("--- a/registry/shop.yaml"), "{diff}");
    assert!(diff.contains("+    source_table: customers"), "{diff}");
    assert_eq!(
        read(&inst, "registry/shop.yaml"),
        MESSY_REGISTRY,
        "--diff wrote"
    );

    // Comments kept, keys in the documented order, items one blank line apart.
    let out = inst.cmd().arg("fmt").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("formatted registry/shop.yaml"));
    assert_eq!(read(&inst, "registry/shop.yaml"), FORMATTED_REGISTRY);
    // Idempotent: nothing left to do, and the instance still validates.
    inst.cmd().args(["fmt", "--check"]).assert().success();
    let (code, report) = inst.validate();
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn a_broken_file_is_reported_with_its_position_and_left_alone() {
    let inst = Instance::new(Fmt::Yaml);
    let broken = "tables:\n  - source: shop\n    source_table: [orders\n";
    inst.write_spec("registry/broken", broken);
    inst.write_spec(
        "pipelines/shop",
        "connection:\n    path: files\ntype: csv\n",
    );
    let out = inst.cmd().arg("fmt").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("registry/broken.yaml:"), "{stderr}");
    assert!(stderr.contains("invalid YAML"), "{stderr}");
    assert_eq!(read(&inst, "registry/broken.yaml"), broken);
    // The other files were still formatted.
    assert_eq!(
        read(&inst, "pipelines/shop.yaml"),
        "type: csv\nconnection:\n  path: files\n"
    );
}

#[test]
fn paths_select_files_and_toml_is_formatted_too() {
    let inst = Instance::new(Fmt::Toml);
    inst.write_spec(
        "registry/shop",
        "# tables\n[[tables]]\nsource=\"shop\"\nsource_table = \"orders\"   # the orders\n",
    );
    inst.write_spec("metrics/sales/order_count", "description=\"Orders placed\"\nowner = \"data@example.com\"\nsql = \"select count(*) as value from orders\"\n");
    // Only the file named (relative to --dir: the current directory has no such file).
    inst.cmd()
        .args(["fmt", "-q", "registry/shop.toml"])
        .assert()
        .success();
    assert_eq!(
        read(&inst, "registry/shop.toml"),
        "# tables\n[[tables]]\nsource = \"shop\"\nsource_table = \"orders\"  # the orders\n"
    );
    assert!(read(&inst, "metrics/sales/order_count.toml").starts_with("description=\"Orders"));
    // A file outside the layout is refused.
    inst.write("notes.yaml", "a: 1\n");
    let out = inst
        .cmd()
        .arg("fmt")
        .arg(inst.path().join("notes.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a spec file"));
    // A directory: everything below it.
    inst.cmd()
        .arg("fmt")
        .arg(inst.path().join("metrics"))
        .assert()
        .success();
    assert!(read(&inst, "metrics/sales/order_count.toml").starts_with("description = \"Orders"));
}

#[test]
fn init_output_and_the_demo_are_already_formatted() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("acme");
    pipeline()
        .arg("init")
        .arg(&target)
        .args(["--name", "Acme: data"])
        .assert()
        .success();
    pipeline()
        .arg("--dir")
        .arg(&target)
        .args(["fmt", "--check"])
        .assert()
        .success();
    let out = pipeline()
        .arg("--dir")
        .arg(repo_root())
        .args(["fmt", "--check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Hostile spec files, as a pull request could bring them (docs/security.md, "Spec files"): `validate`
//! and `plan` stop with a located error, quickly and in bounded memory, and never print what a link
//! points to. Memory and time are measured by hand (numbers in docs/security.md), not asserted: the
//! tests assert the errors, and a command timeout catches a hang.

use crate::common::{errors, Fmt, Instance};
use indoc::indoc;
use serde_json::Value;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// Long enough for a debug build on a busy machine; a hang or a runaway expansion takes far longer.
const PATIENCE: Duration = Duration::from_secs(120);

/// `pipeline validate --format json` with a timeout: the exit code and the report.
fn validate(inst: &Instance) -> (i32, Value) {
    let out = run(inst, &["validate", "--format", "json"]);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn run(inst: &Instance, args: &[&str]) -> Output {
    inst.cmd()
        .args(args)
        .timeout(PATIENCE)
        .output()
        .expect("runs")
}

/// The one error at `file:line:col` with `code`, from a report of a failed validation.
fn error_at<'r>(report: &'r Value, code: &str, file: &str, line: u64, col: u64) -> &'r Value {
    assert_eq!(report["valid"], false, "{report:#}");
    errors(report)
        .into_iter()
        .find(|d| d["code"] == code && d["file"] == file && d["line"] == line && d["column"] == col)
        .unwrap_or_else(|| panic!("no `{code}` at {file}:{line}:{col} in {report:#}"))
}

/// Ten levels of ten aliases: 10⁹ values in 345 bytes.
fn billion_laughs() -> String {
    let mut lines = vec!["a: &a [x, x, x, x, x, x, x, x, x, x]".to_string()];
    for (prev, name) in ('a'..'i').zip('b'..='i') {
        let refs = vec![format!("*{prev}"); 10].join(", ");
        lines.push(format!("{name}: &{name} [{refs}]"));
    }
    lines.push("tables: [*i]".into());
    lines.join("\n") + "\n"
}

#[test]
fn billion_laughs_stop_at_the_alias_that_crosses_the_file_limit() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write("registry/laughs.yaml", &billion_laughs());
    let (status, report) = validate(&inst);
    assert_eq!(status, 1);
    // Lines a–e build 133,460 values; the first `*e` on line f copies 111,111 more: that alias is
    // reported, and nothing is copied.
    let d = error_at(&report, "syntax", "registry/laughs.yaml", 6, 8);
    let message = d["message"].as_str().unwrap();
    assert!(message.contains("200000 values"), "{message}");
    assert!(d["hint"].as_str().unwrap().contains("docs/security.md"));
    // The rest of the instance is still checked.
    assert_eq!(report["objects"]["sources"], 1);
}

/// One registry file building about 190,000 values through aliases: under the file limit.
fn nearly_full_file() -> String {
    let row = |name: &str, refs: &str, n: usize| format!("{name}[{}]", vec![refs; n].join(","));
    [
        "a: &a [x,x,x,x,x,x,x,x,x,x]".to_string(),
        row("b: &b ", "*a", 10),
        row("c: &c ", "*b", 10),
        row("d: &d ", "*c", 10),
        row("e: ", "*d", 16),
    ]
    .join("\n")
        + "\n"
}

#[test]
fn the_instance_limit_is_summed_over_files_in_order() {
    let inst = Instance::new(Fmt::Yaml);
    for i in 0..12 {
        inst.write(&format!("registry/m{i:02}.yaml"), &nearly_full_file());
    }
    let (status, first) = validate(&inst);
    assert_eq!(status, 1);
    // Ten files stay under 2,000,000 values; the eleventh crosses, whichever thread parsed what.
    let d = error_at(&first, "syntax", "registry/m10.yaml", 5, 26);
    assert!(d["message"]
        .as_str()
        .unwrap()
        .contains("2000000 values together"));
    assert!(errors(&first)
        .iter()
        .all(|d| d["file"] != "registry/m11.yaml"));
    let (_, again) = validate(&inst);
    assert_eq!(first["diagnostics"], again["diagnostics"]);
}

#[test]
fn an_oversized_file_is_refused_before_it_is_read() {
    let inst = Instance::new(Fmt::Yaml);
    let mut big = String::from("tables:\n");
    while big.len() <= 1 << 20 {
        big.push_str("  - source: shop\n    source_table: orders\n    description: padding\n");
    }
    inst.write("registry/big.yaml", &big);
    let (status, report) = validate(&inst);
    assert_eq!(status, 1);
    let d = error_at(&report, "syntax", "registry/big.yaml", 1, 1);
    assert!(d["message"].as_str().unwrap().contains("at most 1 MiB"));
}

#[test]
fn deep_nesting_is_a_located_error_not_a_crash() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write(
        "registry/deep.yaml",
        &format!("tables:\n{}x\n", "- ".repeat(200_000)),
    );
    let (status, report) = validate(&inst);
    assert_eq!(status, 1);
    let d = error_at(&report, "syntax", "registry/deep.yaml", 2, 127);
    assert!(d["message"]
        .as_str()
        .unwrap()
        .contains("more than 64 levels"));

    // The same depth through aliases, each wrapping the previous one.
    let mut chain = vec!["a0: &a0 [x]".to_string()];
    chain.extend((1..3000).map(|i| format!("a{i}: &a{i} [*a{}]", i - 1)));
    chain.push("tables: [*a2999]".into());
    inst.write("registry/deep.yaml", &(chain.join("\n") + "\n"));
    let (status, report) = validate(&inst);
    assert_eq!(status, 1);
    error_at(&report, "syntax", "registry/deep.yaml", 64, 12);
}

/// A secret outside the instance, written so that a YAML error would quote its line.
const SECRET: &str = "hunter2-do-not-print-me";

fn outside_secret(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("secrets.yaml");
    std::fs::write(&p, format!("tables:\n  - [ {SECRET}\n")).unwrap();
    p
}

/// `validate` in every format and `plan`: exit 1, the secret nowhere in the output.
fn assert_never_printed(inst: &Instance, secret: &str) {
    let commands: [&[&str]; 4] = [
        &["validate"],
        &["validate", "--format", "json"],
        &["validate", "--format", "github"],
        &["plan"],
    ];
    for args in commands {
        let out = inst
            .cmd()
            .args(args)
            .env("PIPELINE_TEST_CI_SECRET", secret)
            .timeout(PATIENCE)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(secret), "{args:?} printed the secret:\n{all}");
        assert!(all.contains("outside the instance root"), "{args:?}: {all}");
    }
}

#[test]
fn spec_files_linking_outside_the_root_are_refused_unread() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside_secret(outside.path());
    let inst = Instance::new(Fmt::Yaml);
    symlink(&target, inst.path().join("registry/leak.yaml")).unwrap();
    symlink("/proc/self/environ", inst.path().join("registry/env.yaml")).unwrap();

    let (status, report) = validate(&inst);
    assert_eq!(status, 1);
    let d = error_at(&report, "unsafe-file", "registry/leak.yaml", 1, 1);
    let message = d["message"].as_str().unwrap();
    let real = std::fs::canonicalize(&target).unwrap();
    assert!(message.contains(&real.display().to_string()), "{message}");
    error_at(&report, "unsafe-file", "registry/env.yaml", 1, 1);
    // Nothing from the link's target is shown: no source line under the location.
    let human = run(&inst, &["validate"]);
    let text = String::from_utf8_lossy(&human.stdout);
    let at = text.find("--> registry/leak.yaml:1:1").expect("located");
    assert!(
        !text[at..].lines().nth(1).unwrap_or("").contains('|'),
        "{text}"
    );

    assert_never_printed(&inst, SECRET);
    assert_never_printed(&inst, "ci-token-from-the-environment");
}

#[test]
fn directories_linking_outside_the_root_are_refused_and_links_inside_are_followed() {
    let outside = tempfile::tempdir().unwrap();
    outside_secret(outside.path());
    let inst = Instance::new(Fmt::Yaml);
    symlink(outside.path(), inst.path().join("registry/vendor")).unwrap();
    let (status, report) = validate(&inst);
    assert_eq!(status, 1);
    error_at(&report, "unsafe-file", "registry/vendor", 1, 1);
    assert_never_printed(&inst, SECRET);

    // Links that stay inside the root are fine: the file is read once, through the link.
    std::fs::remove_file(inst.path().join("registry/vendor")).unwrap();
    inst.write(
        "shared/more.yaml",
        "tables:\n  - source: shop\n    source_table: extra\n",
    );
    symlink(
        inst.path().join("shared/more.yaml"),
        inst.path().join("registry/more.yaml"),
    )
    .unwrap();
    let (status, report) = validate(&inst);
    assert_eq!(status, 0, "{report:#}");
    assert_eq!(report["objects"]["tables"], 3);
}

#[test]
fn a_fifo_in_the_registry_is_refused_without_hanging() {
    let inst = Instance::new(Fmt::Yaml);
    let fifo = inst.path().join("registry/pipe.yaml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let (status, report) = validate(&inst);
    assert_eq!(status, 1);
    let d = error_at(&report, "unsafe-file", "registry/pipe.yaml", 1, 1);
    assert!(d["message"].as_str().unwrap().contains("FIFO"));
}

fn metric(sql: &str) -> String {
    format!(
        "description: Hostile\nowner: a@example.com\ntime_column: ordered_at\nsql: |\n{}",
        sql.lines().map(|l| format!("  {l}\n")).collect::<String>()
    )
}

#[test]
fn a_template_with_nested_loops_is_refused_at_the_loop() {
    let inst = Instance::new(Fmt::Yaml);
    inst.write(
        "metrics/sales/loops.yaml",
        &metric(indoc! {"
            select count(*) as value from orders
            {% for a in range(100000) %}{% for b in range(100000) %} {% endfor %}{% endfor %}
        "}),
    );
    let (status, report) = validate(&inst);
    assert_eq!(status, 1);
    let d = error_at(&report, "template", "metrics/sales/loops.yaml", 6, 6);
    assert!(d["message"]
        .as_str()
        .unwrap()
        .contains("`{% for %}` cannot be used"));
}

#[test]
fn a_template_rendering_megabytes_of_sql_is_too_large() {
    let inst = Instance::new(Fmt::Yaml);
    // A 250-character column name, 100 times per tag, 50 tags: a 70 KB file rendering 1.25 MB of SQL.
    let column = format!("c{}", "x".repeat(249));
    let tag = format!("{{{{ {} }}}}", vec!["time_column"; 100].join(" ~ "));
    inst.write(
        "metrics/sales/wide.yaml",
        &format!(
            "description: Hostile\nowner: a@example.com\ntime_column: {column}\n\
             sql: \"select {} as value\"\n",
            tag.repeat(50)
        ),
    );
    let (status, report) = validate(&inst);
    assert_eq!(status, 1);
    let d = error_at(&report, "template", "metrics/sales/wide.yaml", 4, 6);
    assert!(d["message"]
        .as_str()
        .unwrap()
        .contains("more than 1 MiB of SQL"));
}

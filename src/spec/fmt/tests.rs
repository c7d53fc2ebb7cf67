use super::*;
use crate::spec::fields;
use std::path::PathBuf;

fn file(name: &str, text: &str) -> SourceFile {
    SourceFile::new(name.into(), PathBuf::from(name), text.into())
}

/// Formats a YAML text of `schema`, through the whole checked path.
fn fmt_as(text: &str, schema: Schema) -> String {
    format_file(&file("x.yaml", text), FileId(0), schema).expect("formats")
}

fn table(text: &str) -> String {
    fmt_as(text, Schema::Object(&fields::REGISTRY))
}

fn source(text: &str) -> String {
    fmt_as(text, Schema::Object(&fields::SOURCE))
}

/// Formatting `text` gives `expected`, and formatting that again changes nothing.
fn check(schema: Schema, text: &str, expected: &str) {
    let once = fmt_as(text, schema);
    assert_eq!(once, expected, "formatted:\n{once}");
    assert_eq!(fmt_as(&once, schema), once, "not idempotent");
}

#[test]
fn keys_follow_the_schema_order_and_comments_move_with_them() {
    check(
        Schema::Object(&fields::SOURCE),
        "# The shop.\n\n# how often\nschedule: every 2h   # often\nconnection:\n    path: x\n# what it is\ntype: csv\n",
        "# The shop.\n\n# what it is\ntype: csv\nconnection:\n  path: x\n# how often\nschedule: every 2h  # often\n",
    );
}

#[test]
fn the_modeline_comment_stays_on_top() {
    let text = "# yaml-language-server: $schema=../.schemas/registry.json\n\ntables:\n  - source: a\n    source_table: b\n";
    assert_eq!(table(text), text);
    check(
        Schema::Object(&fields::SOURCE),
        "# yaml-language-server: $schema=../.schemas/source.json\n# when\nschedule: x\ntype: csv\n",
        "# yaml-language-server: $schema=../.schemas/source.json\ntype: csv\n# when\nschedule: x\n",
    );
}

#[test]
fn connection_keys_follow_the_source_type() {
    check(
        Schema::Object(&fields::SOURCE),
        "type: postgres\nconnection:\n  user: u\n  host: h\n  database: d\n",
        "type: postgres\nconnection:\n  host: h\n  database: d\n  user: u\n",
    );
}

#[test]
fn unknown_keys_and_free_mappings_keep_their_order() {
    check(
        Schema::Object(&fields::REGISTRY),
        "tables:\n- zeta: 1\n  source: s\n  alpha: 2\n  columns:\n    b: B\n    a: A\n",
        "tables:\n  - source: s\n    columns:\n      b: B\n      a: A\n    zeta: 1\n    alpha: 2\n",
    );
}

#[test]
fn top_level_lists_of_mappings_get_one_blank_line_between_items() {
    check(
        Schema::Object(&fields::REGISTRY),
        "tables:\n  - source: a\n    source_table: x\n\n\n\n  - source: a\n    source_table: y\n  # the third\n  - source: a\n    source_table: z\n",
        "tables:\n  - source: a\n    source_table: x\n\n  - source: a\n    source_table: y\n\n  # the third\n  - source: a\n    source_table: z\n",
    );
}

#[test]
fn block_scalars_are_kept_verbatim_and_reindented() {
    let text = "transforms:\n    - name: t\n      sql: |\n          select a,   b\n            from x  \n\n          where c = '#1'\n    - name: u\n      sql: >-\n        folded\n        text\n";
    let out = source(text);
    assert_eq!(
        out,
        "transforms:\n  - name: t\n    sql: |\n      select a,   b\n        from x  \n\n      where c = '#1'\n\n  - name: u\n    sql: >-\n      folded\n      text\n"
    );
}

#[test]
fn quoting_is_the_authors_single_quotes_stay() {
    let text = "schedule: \"*/5 * * * *\"\ndescription: 'it''s'\nname: plain\ntype: csv\n";
    let out = source(text);
    assert!(out.contains("schedule: \"*/5 * * * *\""), "{out}");
    assert!(out.contains("description: 'it''s'"), "{out}");
}

#[test]
fn flow_collections_are_normalised_and_long_ones_become_block() {
    check(
        Schema::Object(&fields::REGISTRY),
        "tables:\n  - source: s\n    sync: {primary_key: [a,b],   mode: incremental}\n    checks: [{accepted_values: {column: status, values: [completed, shipped, pending, cancelled, refunded, returned]}}]\n",
        "tables:\n  - source: s\n    sync: { mode: incremental, primary_key: [a, b] }\n    checks:\n      - accepted_values:\n          column: status\n          values: [completed, shipped, pending, cancelled, refunded, returned]\n",
    );
}

#[test]
fn a_comment_after_a_lone_dash_goes_above_the_item() {
    check(
        Schema::Object(&fields::REGISTRY),
        "tables:\n  - # the orders\n    source_table: o\n    source: s\n",
        "tables:\n  # the orders\n  - source: s\n    source_table: o\n",
    );
}

#[test]
fn flow_keys_without_values() {
    check(
        Schema::Free,
        "a: {x}\nb: {y: , z: 1}\nc: [p: q]\n",
        "a: { x }\nb: { y, z: 1 }\nc: [{ p: q }]\n",
    );
}

#[test]
fn end_of_line_comments_align_within_a_paragraph() {
    check(
        Schema::Object(&fields::INSTANCE),
        "name: x # the name\ntimezone: Europe/Prague    # zone\n\ndata_dir: data # here\n",
        "name: x                  # the name\ntimezone: Europe/Prague  # zone\n\ndata_dir: data  # here\n",
    );
}

#[test]
fn comments_deeper_than_the_next_key_stay_in_their_block() {
    check(
        Schema::Object(&fields::INSTANCE),
        "name: x\nremote_attach:\n  extensions: []\n  # token_envs: [A]\n\n# extensions:\n#   directory: d\n",
        "name: x\nremote_attach:\n  extensions: []\n  # token_envs: [A]\n\n# extensions:\n#   directory: d\n",
    );
}

#[test]
fn comment_before_a_list_item_and_inside_it() {
    check(
        Schema::Object(&fields::SOURCE),
        "type: csv\ntransforms:\n  # first\n  - sql: select 1   # the query\n    # its name\n    name: a\n",
        "type: csv\ntransforms:\n  # first\n  # its name\n  - name: a\n    sql: select 1  # the query\n",
    );
}

#[test]
fn multi_line_plain_and_quoted_scalars_are_reindented() {
    check(
        Schema::Object(&fields::INSTANCE),
        "name: x\ndescription: a long\n      description   \n         over lines\n",
        "name: x\ndescription: a long\n  description\n  over lines\n",
    );
}

#[test]
fn trailing_whitespace_and_missing_final_newline() {
    check(
        Schema::Object(&fields::INSTANCE),
        "\n\nname: x   \ntimezone: UTC",
        "name: x\ntimezone: UTC\n",
    );
}

#[test]
fn an_empty_file_and_a_comment_only_file() {
    assert_eq!(fmt_as("", Schema::Free), "");
    assert_eq!(
        fmt_as("# nothing yet  \n\n", Schema::Free),
        "# nothing yet\n"
    );
}

#[test]
fn anchors_and_comments_in_flow_collections_are_left_alone() {
    let r = format_file(&file("x.yaml", "a: &x 1\nb: *x\n"), FileId(0), Schema::Free);
    assert!(
        matches!(r, Err(FmtError::Unsupported { line: 1, .. })),
        "{r:?}"
    );
    let r = format_file(
        &file("x.yaml", "a: [1, # one\n  2]\n"),
        FileId(0),
        Schema::Free,
    );
    assert!(
        matches!(r, Err(FmtError::Unsupported { line: 1, .. })),
        "{r:?}"
    );
}

#[test]
fn invalid_yaml_gets_the_spec_parsers_diagnostic() {
    let r = format_file(&file("x.yaml", "a: [1\nb: 2\n"), FileId(0), Schema::Free);
    let Err(FmtError::Invalid(d)) = r else {
        panic!("{r:?}")
    };
    assert!(d.message.contains("invalid YAML"), "{}", d.message);
}

#[test]
fn same_ignores_key_order_but_not_values_or_list_order() {
    let p = |t: &str| crate::spec::yaml::parse(t, FileId(0)).unwrap();
    assert!(same(&p("a: 1\nb: [x, y]\n"), &p("b: [x, y]\na: 1\n")));
    assert!(!same(&p("a: 1\nb: [x, y]\n"), &p("a: 1\nb: [y, x]\n")));
    assert!(!same(&p("a: 1\n"), &p("a: '1'\n")));
}

#[test]
fn toml_files_are_formatted_and_checked() {
    let f = file("x.toml", "name=\"a\"  # n\n[defaults]\nconcurrency=4\n");
    let out = format_file(&f, FileId(0), Schema::Free).unwrap();
    assert_eq!(out, "name = \"a\"  # n\n\n[defaults]\nconcurrency = 4\n");
}

#[test]
fn a_unified_diff_names_the_file() {
    let d = unified_diff("registry/x.yaml", "a: 1\nb: 2\n", "a: 1\nb: 3\n");
    assert!(
        d.starts_with("--- a/registry/x.yaml\n+++ b/registry/x.yaml\n"),
        "{d}"
    );
    assert!(d.contains("-b: 2\n+b: 3\n"), "{d}");
    assert_eq!(unified_diff("x", "same\n", "same\n"), "");
}

/// Every spec file of the demo instance and of `pipeline init`'s templates is already formatted.
#[test]
fn demo_and_init_templates_are_fmt_clean() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = crate::diag::source::SourceMap::default();
    let (specs, diags) = crate::spec::load::spec_files(&root, &mut files);
    assert_eq!(diags.error_count(), 0);
    assert!(specs.len() >= 10);
    let templates = [
        ("instance.yaml", Kind::Instance),
        (
            "files.yaml",
            Kind::Source {
                stem: "files".into(),
            },
        ),
        ("registry.yaml", Kind::Registry),
        (
            "metric.yaml",
            Kind::Metric {
                stem: "m".into(),
                folder: "c".into(),
            },
        ),
    ];
    let templates = templates
        .into_iter()
        .map(|(n, k)| (root.join("src/cli/init_templates").join(n), k));
    for (path, kind) in specs.into_iter().chain(templates) {
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("{{NAME}}", "demo");
        let f = SourceFile::new(path.display().to_string(), path.clone(), text.clone());
        let out = format_file(&f, FileId(0), schema_of(&kind))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            out,
            text,
            "{} is not formatted:\n{}",
            path.display(),
            unified_diff("file", &text, &out)
        );
    }
}

/// Every kind's keys written in reverse order, each under its own comment, come back in the
/// schema's order with their comments; nested objects too.
#[test]
fn every_object_written_backwards_comes_back_in_schema_order() {
    for object in fields::all_objects() {
        let line = |f: &fields::Field| format!("# about {}\n{}: x\n", f.key, f.key);
        let backwards: String = object.fields.iter().rev().map(line).collect();
        let forwards: String = object.fields.iter().map(line).collect();
        let schema = Schema::Object(object);
        assert_eq!(fmt_as(&backwards, schema), forwards, "{}", object.name);
        // The same one level down, under each key whose value is this object.
        for parent in fields::all_objects() {
            for f in parent.fields {
                let fields::Ty::Object(inner) = &f.ty else {
                    continue;
                };
                if !std::ptr::eq(*inner, object) {
                    continue;
                }
                let indent =
                    |s: &str| -> String { s.lines().map(|l| format!("  {l}\n")).collect() };
                let text = format!("{}:\n{}", f.key, indent(&backwards));
                let expected = format!("{}:\n{}", f.key, indent(&forwards));
                assert_eq!(
                    fmt_as(&text, Schema::Object(parent)),
                    expected,
                    "{}",
                    object.name
                );
            }
        }
    }
}

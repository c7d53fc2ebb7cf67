//! Spec files: loading (YAML/TOML with positions) → typed model → validation.
//!
//! Reading order follows the data: [`walk`] (which files may be read) → [`crate::diag::source`] (files
//! and positions) → [`yaml`]/[`toml`] (text → [`node`] trees, within [`limits`]) → [`decode`] + [`fields`]
//! (schema) → [`model`] (typed specs) → [`load`] (the instance layout) → [`validate`] (cross-file
//! checks, SQL via DuckDB, templates via [`template`], cycles). [`fmt`] rewrites the files in their
//! canonical layout (`pipeline fmt`).

pub mod decode;
pub mod fields;
pub mod fmt;
pub mod json_schema;
pub mod limits;
pub mod load;
pub mod model;
pub mod node;
pub mod schedule;
pub mod sql;
pub mod sql_cache;
pub mod sql_json;
pub mod template;
pub mod toml;
pub mod validate;
pub mod walk;
pub mod yaml;

pub use load::Specs;

use crate::diag::Diagnostics;
use std::path::Path;

/// Loads and validates the instance at `root`: the whole of `pipeline validate`.
pub fn check(root: &Path) -> (Specs, validate::Analysis, Diagnostics) {
    let (specs, analysis, diags, _) = check_keeping_db(root, None);
    (specs, analysis, diags)
}

/// [`check`], also handing back the DuckDB instance the SQL checks used (if it started), for callers
/// that need DuckDB next; with the SQL cache in `sql_cache` when given ([`check_cached`]).
pub fn check_keeping_db(
    root: &Path,
    sql_cache: Option<&Path>,
) -> (
    Specs,
    validate::Analysis,
    Diagnostics,
    Option<duckdb::Connection>,
) {
    check_with(root, sql_cache)
}

/// [`check`] that answers SQL checks from, and adds to, the SQL cache in `sql_cache` (see
/// [`sql_cache`]): what `pipeline validate` runs. The diagnostics are the same with or without it.
pub fn check_cached(
    root: &Path,
    sql_cache: Option<&Path>,
) -> (Specs, validate::Analysis, Diagnostics) {
    let (specs, analysis, diags, _) = check_with(root, sql_cache);
    (specs, analysis, diags)
}

fn check_with(
    root: &Path,
    sql_cache: Option<&Path>,
) -> (
    Specs,
    validate::Analysis,
    Diagnostics,
    Option<duckdb::Connection>,
) {
    // Starting DuckDB takes tens of milliseconds: do it while the files load.
    let cache = sql_cache.map(Path::to_path_buf);
    let parser = std::thread::spawn(move || match cache {
        Some(dir) => sql::SqlParser::with_cache(&dir),
        None => sql::SqlParser::new(),
    });
    let (specs, mut diags) = load::load(root);
    let parser = parser
        .join()
        .unwrap_or_else(|_| Err(sql::ParserUnavailable::Panicked));
    let analysis = validate::validate(&specs, &parser, &mut diags);
    diags.sort();
    if let Ok(parser) = &parser {
        parser.save_cache();
    }
    let conn = parser.ok().and_then(sql::SqlParser::into_connection);
    (specs, analysis, diags, conn)
}

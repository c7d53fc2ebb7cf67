//! Spec files: loading (YAML/TOML with positions) → typed model → validation.
//!
//! Reading order follows the data: [`walk`] (which files may be read) → [`crate::diag::source`] (files
//! and positions) → [`yaml`]/[`toml`] (text → [`node`] trees, within [`limits`]) → [`decode`] + [`fields`]
//! (schema) → [`model`] (typed specs) → [`load`] (the instance layout) → [`validate`] (cross-file
//! checks, SQL via DuckDB, templates via [`template`], cycles).

pub mod decode;
pub mod fields;
pub mod json_schema;
pub mod limits;
pub mod load;
pub mod model;
pub mod node;
pub mod schedule;
pub mod sql;
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
    let (specs, analysis, diags, _) = check_keeping_db(root);
    (specs, analysis, diags)
}

/// [`check`], also handing back the DuckDB instance the SQL checks used (if it started), for callers
/// that need DuckDB next.
pub fn check_keeping_db(
    root: &Path,
) -> (
    Specs,
    validate::Analysis,
    Diagnostics,
    Option<duckdb::Connection>,
) {
    // Starting DuckDB takes tens of milliseconds: do it while the files load.
    let parser = std::thread::spawn(sql::SqlParser::new);
    let (specs, mut diags) = load::load(root);
    let parser = parser
        .join()
        .unwrap_or_else(|_| Err(sql::ParserUnavailable::Panicked));
    let analysis = validate::validate(&specs, &parser, &mut diags);
    diags.sort();
    let conn = parser.ok().map(sql::SqlParser::into_connection);
    (specs, analysis, diags, conn)
}

//! Naming rules. Names end up in SQL identifiers and file paths, so they are checked here, once, and no
//! later stage builds SQL from a name that did not pass.

/// Source names: also the extract directory and the catalog alias in analytics.duckdb.
pub fn is_source_name(s: &str) -> bool {
    is_identifier(s)
        && s.bytes().all(|b| !b.is_ascii_uppercase())
        && s.len() <= 64
        && !is_reserved_catalog(s)
}

/// Catalog names no source, extract directory or remote alias may take: DuckDB's own, and the ones
/// pipeline attaches its own files under. Compared without regard to case, as DuckDB compares names.
pub const RESERVED_CATALOGS: &[&str] = &[
    "memory",
    "system",
    "temp",
    "main",
    "analytics",
    "previous",
    "information_schema",
    "pg_catalog",
];

pub fn is_reserved_catalog(name: &str) -> bool {
    RESERVED_CATALOGS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}

/// View, table and transform names in analytics.duckdb (the extract contract's rule).
pub fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && s.len() <= 64
}

/// A relative path that stays inside the directory it is joined to: not empty, not absolute, no `..`
/// part, no NUL. Globs are fine (`2025/*.csv`). File sources' `source_table` must be one — checked
/// by `validate` and again by the files connector before it reads, with this same function.
pub fn is_relative_inside(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && path.split('/').all(|part| part != "..")
}

/// Table ids such as `in.c-shop.orders`.
pub fn is_table_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Metric names and categories (`revenue/total_revenue`).
pub fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Environment variable names as POSIX shells accept them.
pub fn is_env_var(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Access group names.
pub fn is_group(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(is_source_name("shop_2"));
        assert!(!is_source_name("Shop"));
        assert!(!is_source_name("2shop"));
        assert!(!is_source_name("x\"; drop table y; --"));
        assert!(is_identifier("Orders"));
        assert!(!is_identifier("order items"));
        assert!(!is_identifier(&"a".repeat(65)));
        assert!(is_relative_inside("orders"));
        assert!(is_relative_inside("2025/*.csv"));
        assert!(is_relative_inside("orders..old.csv"));
        assert!(is_relative_inside("./2025//orders.csv"));
        for escaping in ["../secrets", "/etc/passwd", "a/../../b", "..", "", "a\0"] {
            assert!(!is_relative_inside(escaping), "{escaping}");
        }
        assert!(is_table_id("in.c-shop.orders"));
        assert!(!is_table_id("in c"));
        assert!(is_env_var("KBC_TOKEN"));
        assert!(!is_env_var("KBC-TOKEN"));
        assert!(is_metric_name("total_revenue"));
        assert!(!is_metric_name("Total"));
    }
}

//! The schema contract of a published table: the columns (names and DuckDB types) analysts and
//! downstream SQL rely on, and which changes a new extract may make to them.
//!
//! The extract records each table's published schema in the state. Before a new Parquet file replaces
//! the old one, [`review`] compares the recorded schema with the staged file's and sorts every
//! difference (an added column, a dropped one, a type change) into accepted or refused under the
//! table's policy ([`SchemaChanges`]): `additive` (the default) accepts new columns and widenings,
//! `freeze` accepts nothing, `evolve` accepts everything. A refused change fails the extract and the
//! previous Parquet stays published. This module only compares and explains; the extract decides
//! when to look and what to keep.

use crate::spec::model::SchemaChanges;
use duckdb::Connection;
use serde::{Deserialize, Serialize};

/// One column of a published table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// DuckDB's name for the type, as `DESCRIBE` prints it (`BIGINT`, `DECIMAL(18,3)`, `VARCHAR[]`).
    #[serde(rename = "type")]
    pub ty: String,
}

impl Column {
    pub fn new(name: &str, ty: &str) -> Column {
        Column {
            name: name.into(),
            ty: ty.into(),
        }
    }
}

/// The columns of `relation` (anything a `SELECT * FROM` accepts), in order, without reading rows.
pub fn describe(conn: &Connection, relation: &str) -> duckdb::Result<Vec<Column>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {relation})"
    ))?;
    let columns = stmt
        .query_map([], |r| {
            Ok(Column {
                name: r.get(0)?,
                ty: r.get(1)?,
            })
        })?
        .collect();
    columns
}

/// One difference between the recorded schema and a new one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    Added {
        column: String,
        #[serde(rename = "type")]
        ty: String,
    },
    Dropped {
        column: String,
        #[serde(rename = "type")]
        ty: String,
    },
    Retyped {
        column: String,
        from: String,
        to: String,
        /// Every old value is representable in the new type ([`widens`]).
        widening: bool,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added { column, ty } => write!(f, "added `{column}` ({ty})"),
            Change::Dropped { column, ty } => write!(f, "dropped `{column}` ({ty})"),
            Change::Retyped {
                column,
                from,
                to,
                widening,
            } => {
                write!(f, "`{column}`: {from} → {to}")?;
                if *widening {
                    f.write_str(" (widening)")
                } else {
                    f.write_str(" (not a widening: values may not convert)")
                }
            }
        }
    }
}

impl Change {
    /// Whether `policy` lets this change through.
    pub fn allowed_by(&self, policy: SchemaChanges) -> bool {
        match policy {
            SchemaChanges::Evolve => true,
            SchemaChanges::Freeze => false,
            SchemaChanges::Additive => match self {
                Change::Added { .. } => true,
                Change::Retyped { widening, .. } => *widening,
                Change::Dropped { .. } => false,
            },
        }
    }
}

/// The differences between a recorded schema and a new one, under a policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Review {
    /// Every difference, recorded columns first (in their order), then added ones.
    pub changes: Vec<Change>,
    /// The ones the policy refuses (a subset of `changes`).
    pub refused: Vec<Change>,
}

impl Review {
    pub fn is_refused(&self) -> bool {
        !self.refused.is_empty()
    }
}

/// Compares `recorded` with `new` under `policy`. Names compare without regard to case, as DuckDB
/// identifiers do; column order is not part of the contract (queries name columns).
///
/// `batch` is the columns of the rows read from the source when they were merged into previous data
/// (incremental sync): the merged file still has a column the source stopped sending, holding NULL
/// for new rows, so a column missing from the batch counts as dropped.
pub fn review(
    recorded: &[Column],
    new: &[Column],
    batch: Option<&[String]>,
    policy: SchemaChanges,
) -> Review {
    let find = |cols: &[Column], name: &str| -> Option<Column> {
        cols.iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .cloned()
    };
    let mut changes = Vec::new();
    for old in recorded {
        let in_batch = batch.is_none_or(|b| b.iter().any(|c| c.eq_ignore_ascii_case(&old.name)));
        match find(new, &old.name) {
            Some(now) if in_batch => {
                if !same_type(&old.ty, &now.ty) {
                    changes.push(Change::Retyped {
                        column: old.name.clone(),
                        from: old.ty.clone(),
                        to: now.ty.clone(),
                        widening: widens(&old.ty, &now.ty),
                    });
                }
            }
            _ => changes.push(Change::Dropped {
                column: old.name.clone(),
                ty: old.ty.clone(),
            }),
        }
    }
    for now in new {
        if find(recorded, &now.name).is_none() {
            changes.push(Change::Added {
                column: now.name.clone(),
                ty: now.ty.clone(),
            });
        }
    }
    let refused = changes
        .iter()
        .filter(|c| !c.allowed_by(policy))
        .cloned()
        .collect();
    Review { changes, refused }
}

/// The refusal people read: the table, each difference, and what to do.
pub fn refusal_message(table_id: &str, policy: SchemaChanges, review: &Review) -> String {
    let mut out = format!(
        "schema change refused for table `{table_id}` (schema_changes: {policy}); the new data differs \
         from the published schema:"
    );
    for c in &review.changes {
        let mark = if c.allowed_by(policy) {
            " (allowed)"
        } else {
            ""
        };
        out.push_str(&format!("\n  - {c}{mark}"));
    }
    let dropped = review
        .changes
        .iter()
        .any(|c| matches!(c, Change::Dropped { .. }));
    let added = review
        .changes
        .iter()
        .any(|c| matches!(c, Change::Added { .. }));
    if dropped && added {
        out.push_str("\n  (a renamed column shows as one dropped and one added)");
    }
    out.push_str(&format!(
        "\nThe previous data stays published. If the source changed on purpose, accept the new shape \
         once with `pipeline run --accept-schema {table_id}` (or set `schema_changes: evolve` on the \
         table); otherwise fix the source (a changed CSV header, or values that turned a column into \
         text)."
    ));
    out
}

/// One line for run output and history: the accepted differences.
pub fn summary(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn normalized(ty: &str) -> String {
    ty.trim().to_ascii_uppercase().replace(", ", ",")
}

fn same_type(a: &str, b: &str) -> bool {
    normalized(a) == normalized(b)
}

/// Integer types: (signed, bits).
fn integer(ty: &str) -> Option<(bool, u32)> {
    Some(match ty {
        "TINYINT" => (true, 8),
        "SMALLINT" => (true, 16),
        "INTEGER" => (true, 32),
        "BIGINT" => (true, 64),
        "HUGEINT" => (true, 128),
        "UTINYINT" => (false, 8),
        "USMALLINT" => (false, 16),
        "UINTEGER" => (false, 32),
        "UBIGINT" => (false, 64),
        "UHUGEINT" => (false, 128),
        _ => return None,
    })
}

/// Decimal digits an integer type needs.
fn digits(bits: u32, signed: bool) -> u32 {
    match (bits, signed) {
        (8, _) => 3,
        (16, _) => 5,
        (32, _) => 10,
        (64, true) => 19,
        (64, false) => 20,
        _ => 39,
    }
}

/// `DECIMAL(p,s)` → (p, s).
fn decimal(ty: &str) -> Option<(u32, u32)> {
    let inner = ty.strip_prefix("DECIMAL(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

/// Whether every value of type `from` converts to `to` without loss, so queries over the column keep
/// working: a wider integer (INTEGER → BIGINT, UINTEGER → BIGINT), FLOAT → DOUBLE, integers of up to
/// 32 bits → DOUBLE, a DECIMAL with at least as many integer and fraction digits (integers count as
/// DECIMAL(n,0)), DATE → TIMESTAMP. Everything else is not: notably any type → VARCHAR (what CSV
/// sniffing falls back to when one value does not parse), BIGINT → DOUBLE (precision above 2^53) and
/// narrowings.
pub fn widens(from: &str, to: &str) -> bool {
    let (from, to) = (normalized(from), normalized(to));
    if from == to {
        return true;
    }
    match (integer(&from), integer(&to)) {
        (Some((sf, bf)), Some((st, bt))) => {
            return match (sf, st) {
                (true, true) | (false, false) => bt >= bf,
                (false, true) => bt > bf,
                (true, false) => false,
            }
        }
        (Some((signed, bits)), None) => {
            if to == "DOUBLE" {
                return bits <= 32;
            }
            if to == "FLOAT" {
                return bits <= 16;
            }
            if let Some((p, s)) = decimal(&to) {
                return p - s.min(p) >= digits(bits, signed);
            }
            return false;
        }
        _ => {}
    }
    if let (Some((p1, s1)), Some((p2, s2))) = (decimal(&from), decimal(&to)) {
        return s2 >= s1 && p2.saturating_sub(s2) >= p1.saturating_sub(s1);
    }
    matches!(
        (from.as_str(), to.as_str()),
        ("FLOAT", "DOUBLE") | ("DATE", "TIMESTAMP")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(spec: &[(&str, &str)]) -> Vec<Column> {
        spec.iter().map(|(n, t)| Column::new(n, t)).collect()
    }

    #[test]
    fn widenings_are_lossless_conversions_only() {
        for (from, to) in [
            ("INTEGER", "BIGINT"),
            ("TINYINT", "HUGEINT"),
            ("UINTEGER", "BIGINT"),
            ("USMALLINT", "UINTEGER"),
            ("FLOAT", "DOUBLE"),
            ("INTEGER", "DOUBLE"),
            ("DECIMAL(10,2)", "DECIMAL(18,3)"),
            ("INTEGER", "DECIMAL(12,2)"),
            ("DATE", "TIMESTAMP"),
            ("VARCHAR", "VARCHAR"),
            ("decimal(18, 3)", "DECIMAL(18,3)"),
        ] {
            assert!(widens(from, to), "{from} → {to} widens");
        }
        for (from, to) in [
            ("BIGINT", "INTEGER"),
            ("BIGINT", "VARCHAR"),
            ("DATE", "VARCHAR"),
            ("BIGINT", "DOUBLE"),
            ("INTEGER", "UBIGINT"),
            ("UINTEGER", "INTEGER"),
            ("DOUBLE", "FLOAT"),
            ("DOUBLE", "DECIMAL(18,3)"),
            ("DECIMAL(18,3)", "DECIMAL(18,2)"),
            ("DECIMAL(18,3)", "DECIMAL(10,3)"),
            ("BIGINT", "DECIMAL(18,0)"),
            ("TIMESTAMP", "DATE"),
            ("VARCHAR", "BIGINT"),
        ] {
            assert!(!widens(from, to), "{from} → {to} does not widen");
        }
    }

    #[test]
    fn additive_accepts_new_columns_and_widenings_and_refuses_the_rest() {
        let recorded = cols(&[("id", "INTEGER"), ("amount", "DOUBLE"), ("day", "DATE")]);
        let new = cols(&[("ID", "BIGINT"), ("day", "VARCHAR"), ("note", "VARCHAR")]);
        let r = review(&recorded, &new, None, SchemaChanges::Additive);
        assert_eq!(
            r.changes,
            [
                Change::Retyped {
                    column: "id".into(),
                    from: "INTEGER".into(),
                    to: "BIGINT".into(),
                    widening: true
                },
                Change::Dropped {
                    column: "amount".into(),
                    ty: "DOUBLE".into()
                },
                Change::Retyped {
                    column: "day".into(),
                    from: "DATE".into(),
                    to: "VARCHAR".into(),
                    widening: false
                },
                Change::Added {
                    column: "note".into(),
                    ty: "VARCHAR".into()
                },
            ]
        );
        assert_eq!(r.refused, [r.changes[1].clone(), r.changes[2].clone()]);
        let msg = refusal_message("shop.orders", SchemaChanges::Additive, &r);
        assert!(msg.contains("table `shop.orders`"), "{msg}");
        assert!(msg.contains("dropped `amount` (DOUBLE)"), "{msg}");
        assert!(msg.contains("`day`: DATE → VARCHAR"), "{msg}");
        assert!(msg.contains("added `note` (VARCHAR) (allowed)"), "{msg}");
        assert!(msg.contains("--accept-schema shop.orders"), "{msg}");
        assert!(msg.contains("renamed column"), "{msg}");

        // Only additions: accepted under additive, refused under freeze, anything goes under evolve.
        let grown = cols(&[
            ("id", "INTEGER"),
            ("amount", "DOUBLE"),
            ("day", "DATE"),
            ("x", "BIGINT"),
        ]);
        assert!(!review(&recorded, &grown, None, SchemaChanges::Additive).is_refused());
        assert!(review(&recorded, &grown, None, SchemaChanges::Freeze).is_refused());
        assert!(!review(&recorded, &new, None, SchemaChanges::Evolve).is_refused());
        // Same columns in another order: no change at all.
        let reordered = cols(&[("day", "DATE"), ("id", "INTEGER"), ("amount", "DOUBLE")]);
        assert!(review(&recorded, &reordered, None, SchemaChanges::Freeze)
            .changes
            .is_empty());
    }

    #[test]
    fn a_column_missing_from_a_merged_batch_is_dropped() {
        let recorded = cols(&[("id", "BIGINT"), ("v", "VARCHAR")]);
        // The merged file still has `v` (old rows), but the source no longer sends it.
        let r = review(
            &recorded,
            &recorded,
            Some(&["id".to_string()]),
            SchemaChanges::Additive,
        );
        assert_eq!(
            r.refused,
            [Change::Dropped {
                column: "v".into(),
                ty: "VARCHAR".into()
            }]
        );
    }
}

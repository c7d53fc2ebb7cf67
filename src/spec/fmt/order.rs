//! Where a mapping is in a spec file, as far as key order goes: which [`fields`] object describes
//! it, so its keys can be written in the order the schema (and docs/specs.md) lists them.

use crate::spec::fields::{self, Object, Ty};

/// What describes a value: an object's fields, a list whose items are that object, or nothing (free
/// mappings such as `columns`, where the author's order is kept).
#[derive(Clone, Copy, Debug)]
pub enum Schema {
    Object(&'static Object),
    ListOf(&'static Object),
    /// A source's `connection`: the object depends on the source's `type`.
    Connection,
    Free,
}

impl Schema {
    /// Where `key` goes among its siblings: its position in the schema, unknown keys last (a stable
    /// sort keeps their order).
    pub fn rank(self, key: &str) -> usize {
        match self {
            Schema::Object(o) => o
                .fields
                .iter()
                .position(|f| f.key == key)
                .unwrap_or(usize::MAX),
            _ => 0,
        }
    }

    /// The schema of the value of `key` in this mapping; `source_type`: the mapping's `type` value.
    pub fn child(self, key: &str, source_type: Option<&str>) -> Schema {
        let Schema::Object(o) = self else {
            return Schema::Free;
        };
        match o.field(key).map(|f| &f.ty) {
            Some(Ty::Object(inner)) => Schema::Object(inner),
            Some(Ty::List(inner)) => Schema::ListOf(inner),
            Some(Ty::Connection) => source_type
                .and_then(fields::connection_object)
                .map_or(Schema::Connection, Schema::Object),
            _ => Schema::Free,
        }
    }

    /// The schema of this list's items.
    pub fn item(self) -> Schema {
        match self {
            Schema::ListOf(o) => Schema::Object(o),
            _ => Schema::Free,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_rank_in_schema_order_and_unknown_keys_last() {
        let table = Schema::Object(&fields::TABLE);
        assert!(table.rank("id") < table.rank("source"));
        assert!(table.rank("sync") < table.rank("description"));
        assert_eq!(table.rank("no_such_key"), usize::MAX);
        assert_eq!(Schema::Free.rank("b"), Schema::Free.rank("a"));
    }

    #[test]
    fn a_connection_follows_the_source_type() {
        let source = Schema::Object(&fields::SOURCE);
        let Schema::Object(o) = source.child("connection", Some("postgres")) else {
            panic!("postgres has a connection object")
        };
        assert_eq!(o.name, "postgres connection");
        assert!(matches!(
            source.child("connection", Some("nope")),
            Schema::Connection
        ));
        assert!(matches!(
            source.child("transforms", None).item(),
            Schema::Object(o) if o.name == "transform"
        ));
    }
}

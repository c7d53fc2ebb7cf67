//! JSON Schema (draft 2020-12) for each spec kind, generated from [`fields`](super::fields).
//!
//! Printed by `pipeline schema` for YAML language servers and editors; because it comes from the same
//! tables as the decoder, what the editor accepts is what `validate` accepts (minus cross-file checks).

use super::fields::{self, Field, Object, Ty};
use serde_json::{json, Map, Value};

fn ty_schema(ty: &Ty) -> Value {
    match ty {
        Ty::Str => json!({"type": "string"}),
        Ty::Int { min, max } => {
            let mut s = json!({"type": "integer", "minimum": min});
            if *max < i64::MAX {
                s["maximum"] = json!(max);
            }
            s
        }
        Ty::Bool => json!({"type": "boolean"}),
        Ty::StrList => json!({"type": "array", "items": {"type": "string"}}),
        Ty::ScalarList => {
            json!({"type": "array", "items": {"type": ["string", "number", "boolean"]}})
        }
        Ty::StrMap => json!({"type": "object", "additionalProperties": {"type": "string"}}),
        Ty::Enum(names) => json!({"type": "string", "enum": names}),
        Ty::EnumList(names) => json!({"type": "array", "items": {"type": "string", "enum": names}}),
        Ty::Object(o) => object_schema(o),
        Ty::List(o) => json!({"type": "array", "items": object_schema(o)}),
        Ty::Schedule => json!({
            "type": "string",
            "examples": ["*/15 * * * *", "@daily", "every 15m", "every 2h", "daily 05:00,17:00"],
        }),
        Ty::Timezone => json!({"type": "string", "examples": ["Europe/Prague", "UTC"]}),
        Ty::EnvVar => json!({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}),
        Ty::Sql => json!({"type": "string"}),
        Ty::Checks => json!({
            "type": "array",
            "items": {"oneOf": [
                {"type": "object", "properties": {"not_null": {"type": "string"}},
                 "required": ["not_null"], "additionalProperties": false},
                {"type": "object", "properties": {"unique": {"oneOf": [
                    {"type": "string"}, {"type": "array", "items": {"type": "string"}}]}},
                 "required": ["unique"], "additionalProperties": false},
                {"type": "object", "properties": {"accepted_values": {
                    "type": "object",
                    "properties": {"column": {"type": "string"}, "values": {"type": "array"}},
                    "required": ["column", "values"], "additionalProperties": false}},
                 "required": ["accepted_values"], "additionalProperties": false},
            ]},
        }),
        Ty::Connection => json!({"type": "object"}),
    }
}

fn field_schema(f: &Field) -> Value {
    let mut s = ty_schema(&f.ty);
    if let Value::Object(m) = &mut s {
        m.insert("description".into(), json!(f.doc));
    }
    s
}

pub fn object_schema(o: &Object) -> Value {
    let mut props = Map::new();
    for f in o.fields {
        props.insert(f.key.into(), field_schema(f));
    }
    let required: Vec<&str> = o
        .fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.key)
        .collect();
    let mut s = json!({
        "type": "object",
        "description": o.doc,
        "properties": props,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        s["required"] = json!(required);
    }
    s
}

/// The schema of one spec kind (`instance`, `source`, `registry`, `metric`).
pub fn for_kind(kind: &str) -> Option<Value> {
    let (_, object) = fields::spec_kinds().into_iter().find(|(k, _)| *k == kind)?;
    let mut s = object_schema(object);
    if kind == "source" {
        // The connection's keys depend on `type`.
        let branches: Vec<Value> = fields::SOURCE_TYPES
            .iter()
            .filter_map(|t| {
                let conn = fields::connection_object(t)?;
                Some(json!({
                    "if": {"properties": {"type": {"const": t}}, "required": ["type"]},
                    "then": {"properties": {"connection": object_schema(conn)}},
                }))
            })
            .collect();
        s["allOf"] = json!(branches);
    }
    s["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    s["title"] = json!(format!("pipeline {kind} spec"));
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_schema_with_its_required_keys() {
        for (kind, _) in fields::spec_kinds() {
            let s = for_kind(kind).unwrap();
            assert_eq!(s["type"], "object", "{kind}");
            assert_eq!(s["additionalProperties"], false);
        }
        let table = &for_kind("registry").unwrap()["properties"]["tables"]["items"];
        assert_eq!(table["required"], json!(["source"]));
        assert!(table["properties"]["query_mode"]["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("remote")));
        let source = for_kind("source").unwrap();
        assert_eq!(
            source["allOf"].as_array().unwrap().len(),
            fields::SOURCE_TYPES.len()
        );
    }
}

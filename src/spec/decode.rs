//! Typed reading of [`Node`] trees against the schema in [`fields`](super::fields), collecting every
//! problem instead of stopping at the first.
//!
//! Each reader returns `Option`/`Vec` and records a diagnostic when the value is absent where required
//! or has the wrong type, so one pass over a file reports all of its mistakes.

use super::fields::{Object, Ty};
use super::node::{Key, Node, Value};
use crate::diag::source::Span;
use crate::diag::{did_you_mean, Code, Diagnostics};

/// A value with the place it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Located<T> {
    pub fn new(value: T, span: Span) -> Self {
        Located { value, span }
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl Located<String> {
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

/// A mapping that passed the unknown-key and missing-key checks of its schema object.
pub struct Obj<'n> {
    pub span: Span,
    pub schema: &'static Object,
    entries: &'n [(Key, Node)],
}

impl<'n> Obj<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        debug_assert!(
            self.schema.field(key).is_some(),
            "`{key}` is not declared in the schema of {}",
            self.schema.name
        );
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
            // `key:` with no value means "not set" (required keys were reported by `object`).
            .filter(|v| v.value != Value::Null)
    }
}

pub struct Decoder<'d> {
    pub diags: &'d mut Diagnostics,
}

fn type_error(diags: &mut Diagnostics, node: &Node, expected: &str, what: &str) {
    diags
        .error(
            Code::Type,
            node.span,
            format!("{what}: expected {expected}, found {}", node.value.kind()),
        )
        .hint = type_hint(node, expected);
}

fn type_hint(node: &Node, expected: &str) -> Option<String> {
    match (&node.value, expected) {
        (Value::Str(s), e) if e.starts_with("a list") => Some(format!("write a list, e.g. [{s}]")),
        (Value::Str(_), e) if e.starts_with("an integer") => {
            Some("write the number without quotes".into())
        }
        (Value::Null, _) => Some("give the key a value or remove it".into()),
        _ => None,
    }
}

impl<'d> Decoder<'d> {
    pub fn new(diags: &'d mut Diagnostics) -> Self {
        Decoder { diags }
    }

    /// Opens a mapping: reports unknown keys (with a suggestion) and missing required keys.
    pub fn object<'n>(&mut self, node: &'n Node, schema: &'static Object) -> Option<Obj<'n>> {
        let Value::Map(entries) = &node.value else {
            type_error(self.diags, node, "a mapping", schema.name);
            return None;
        };
        let keys = schema.keys();
        for (k, _) in entries {
            if schema.field(&k.name).is_none() {
                self.diags
                    .error(
                        Code::UnknownKey,
                        k.span,
                        format!("unknown key `{}` in {}", k.name, schema.name),
                    )
                    .hint = Some(did_you_mean(&k.name, &keys));
            }
        }
        for field in schema.fields.iter().filter(|f| f.required) {
            let entry = entries.iter().find(|(k, _)| k.name == field.key);
            if let Some((k, _)) = entry.filter(|(_, v)| v.value == Value::Null) {
                self.diags
                    .error(
                        Code::MissingKey,
                        k.span,
                        format!("`{}` in {} has no value", field.key, schema.name),
                    )
                    .hint = Some(format!("give `{}` a value ({})", field.key, field.doc));
            } else if entry.is_none() {
                self.diags
                    .error(
                        Code::MissingKey,
                        node.span.point(),
                        format!("{} is missing required key `{}`", schema.name, field.key),
                    )
                    .hint = Some(format!("add `{}:` ({})", field.key, field.doc));
            }
        }
        Some(Obj {
            span: node.span,
            schema,
            entries,
        })
    }

    fn what(obj: &Obj, key: &str) -> String {
        format!("`{key}` in {}", obj.schema.name)
    }

    /// A string. Numbers and booleans are accepted as their text (`name: 2024` is a name).
    pub fn str(&mut self, obj: &Obj, key: &str) -> Option<Located<String>> {
        let node = obj.get(key)?;
        self.scalar_string(node, &Self::what(obj, key))
    }

    fn scalar_string(&mut self, node: &Node, what: &str) -> Option<Located<String>> {
        let s = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                type_error(self.diags, node, "a string", what);
                return None;
            }
        };
        Some(Located::new(s, node.span))
    }

    pub fn int(&mut self, obj: &Obj, key: &str) -> Option<Located<i64>> {
        let node = obj.get(key)?;
        let Value::Int(i) = node.value else {
            type_error(self.diags, node, "an integer", &Self::what(obj, key));
            return None;
        };
        if let Some(Ty::Int { min, max }) = obj.schema.field(key).map(|f| &f.ty) {
            if i < *min || i > *max {
                self.diags.error(
                    Code::InvalidValue,
                    node.span,
                    format!(
                        "{} must be between {min} and {max}, not {i}",
                        Self::what(obj, key)
                    ),
                );
                return None;
            }
        }
        Some(Located::new(i, node.span))
    }

    pub fn bool(&mut self, obj: &Obj, key: &str) -> Option<Located<bool>> {
        let node = obj.get(key)?;
        let Value::Bool(b) = node.value else {
            type_error(self.diags, node, "true or false", &Self::what(obj, key));
            return None;
        };
        Some(Located::new(b, node.span))
    }

    /// One of a fixed set of words.
    pub fn word(&mut self, obj: &Obj, key: &str, allowed: &[&str]) -> Option<Located<String>> {
        let node = obj.get(key)?;
        let s = self.scalar_string(node, &Self::what(obj, key))?;
        self.check_word(s, allowed, &Self::what(obj, key))
    }

    fn check_word(
        &mut self,
        s: Located<String>,
        allowed: &[&str],
        what: &str,
    ) -> Option<Located<String>> {
        if allowed.contains(&s.as_str()) {
            return Some(s);
        }
        self.diags
            .error(
                Code::InvalidValue,
                s.span,
                format!("{what}: `{}` is not an accepted value", s.value),
            )
            .hint = Some(did_you_mean(&s.value, allowed));
        None
    }

    pub fn str_list(&mut self, obj: &Obj, key: &str) -> Vec<Located<String>> {
        let Some(node) = obj.get(key) else {
            return Vec::new();
        };
        let what = Self::what(obj, key);
        let Value::Seq(items) = &node.value else {
            type_error(self.diags, node, "a list of strings", &what);
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| self.scalar_string(item, &what))
            .collect()
    }

    pub fn word_list(&mut self, obj: &Obj, key: &str, allowed: &[&str]) -> Vec<Located<String>> {
        let what = Self::what(obj, key);
        self.str_list(obj, key)
            .into_iter()
            .filter_map(|s| self.check_word(s, allowed, &what))
            .collect()
    }

    /// A list of scalars kept as nodes (filter values keep their type).
    pub fn scalar_list(&mut self, obj: &Obj, key: &str) -> Vec<Node> {
        let Some(node) = obj.get(key) else {
            return Vec::new();
        };
        let what = Self::what(obj, key);
        let Value::Seq(items) = &node.value else {
            type_error(self.diags, node, "a list", &what);
            return Vec::new();
        };
        items
            .iter()
            .filter(|item| match item.value {
                Value::Seq(_) | Value::Map(_) => {
                    type_error(self.diags, item, "a string or number", &what);
                    false
                }
                _ => true,
            })
            .cloned()
            .collect()
    }

    /// A mapping of names to strings, in file order.
    pub fn str_map(&mut self, obj: &Obj, key: &str) -> Vec<(Located<String>, Located<String>)> {
        let Some(node) = obj.get(key) else {
            return Vec::new();
        };
        let what = Self::what(obj, key);
        let Value::Map(entries) = &node.value else {
            type_error(self.diags, node, "a mapping of names to text", &what);
            return Vec::new();
        };
        entries
            .iter()
            .filter_map(|(k, v)| {
                let v = self.scalar_string(v, &format!("`{}` in {what}", k.name))?;
                Some((Located::new(k.name.clone(), k.span), v))
            })
            .collect()
    }

    /// The items of a list of mappings (each still to be opened with [`object`](Self::object)).
    pub fn list<'n>(&mut self, obj: &Obj<'n>, key: &str) -> &'n [Node] {
        let Some(node) = obj.get(key) else {
            return &[];
        };
        match &node.value {
            Value::Seq(items) => items,
            _ => {
                type_error(self.diags, node, "a list", &Self::what(obj, key));
                &[]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::source::FileId;
    use crate::spec::fields::TABLE;

    fn decode(yaml: &str) -> Diagnostics {
        let node = crate::spec::yaml::parse(yaml, FileId(0)).unwrap();
        let mut diags = Diagnostics::default();
        let mut dec = Decoder::new(&mut diags);
        if let Some(obj) = dec.object(&node, &TABLE) {
            dec.str(&obj, "source");
            dec.str_list(&obj, "tags");
        }
        diags
    }

    #[test]
    fn empty_required_key_is_reported_once_at_the_key() {
        let diags = decode(
            "source:
source_table: x
",
        );
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].code, Code::MissingKey);
        assert_eq!(diags[0].message, "`source` in table has no value");
        assert_eq!(diags[0].span.unwrap().start.line, 1);
    }

    #[test]
    fn empty_optional_key_counts_as_unset() {
        assert!(decode(
            "source: shop
tags:
"
        )
        .is_empty());
    }

    #[test]
    fn every_problem_of_a_file_is_collected() {
        let diags = decode(
            "source: [a]
tags: x
extra: 1
",
        );
        let codes: Vec<Code> = diags.iter().map(|d| d.code).collect();
        assert_eq!(codes, [Code::UnknownKey, Code::Type, Code::Type]);
    }
}

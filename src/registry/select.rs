//! Selectors for `pipeline run --select`, in dbt's shapes: `NAME` (one transform), `NAME+` (it and
//! everything that reads it), `+NAME` (it and everything it reads), `+NAME+` (both).
//!
//! A NAME may also be a table (id or view name): its data is synced and, because the transforms that
//! read it would otherwise keep results built from the old data, everything that reads it is built
//! too (so `orders` and `orders+` select the same). Upstream of a table is nothing.

use super::dag::{hint, transforms_reading, TransformNames};
use super::registered::Registered;
use std::collections::BTreeSet;

/// One `--select` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    pub name: String,
    /// `+NAME`: what it reads, transitively.
    pub upstream: bool,
    /// `NAME+`: what reads it, transitively.
    pub downstream: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("`{0}` selects nothing: write NAME, NAME+, +NAME or +NAME+")]
    Empty(String),
    #[error("no registered transform or table `{name}`{hint}")]
    Unknown { name: String, hint: String },
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Selector, SelectorError> {
        let trimmed = s.trim();
        let (upstream, rest) = match trimmed.strip_prefix('+') {
            Some(r) => (true, r),
            None => (false, trimmed),
        };
        let (downstream, name) = match rest.strip_suffix('+') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if name.is_empty() || name.contains('+') {
            return Err(SelectorError::Empty(s.to_string()));
        }
        Ok(Selector {
            name: name.to_string(),
            upstream,
            downstream,
        })
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plus = |b: bool| if b { "+" } else { "" };
        write!(
            f,
            "{}{}{}",
            plus(self.upstream),
            self.name,
            plus(self.downstream)
        )
    }
}

/// What selectors choose: tables to sync (ids) and transforms to build (registered names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selected {
    pub tables: BTreeSet<String>,
    pub transforms: BTreeSet<String>,
}

/// Resolves `selectors` against what is registered. A transform is matched by name regardless of
/// case (as DuckDB resolves it), a table by id or view name; an unknown name is an error with the
/// closest registered one.
pub fn resolve(reg: &Registered, selectors: &[Selector]) -> Result<Selected, SelectorError> {
    let names = TransformNames::of(reg);
    let mut out = Selected::default();
    for sel in selectors {
        if let Some(name) = names.get(&sel.name) {
            out.transforms.insert(name.clone());
            if sel.downstream {
                let reads = BTreeSet::from([sel.name.to_lowercase()]);
                out.transforms.extend(transforms_reading(reg, Some(&reads)));
            }
            if sel.upstream {
                out.transforms.extend(upstream(reg, &names, name));
            }
        } else if let Some(t) = reg.table(&sel.name) {
            out.tables.insert(t.id.clone());
            let reads = BTreeSet::from([t.name.to_lowercase()]);
            out.transforms.extend(transforms_reading(reg, Some(&reads)));
        } else {
            let candidates = reg.transforms.keys().cloned().chain(
                reg.tables
                    .values()
                    .flat_map(|t| [t.id.clone(), t.name.clone()]),
            );
            return Err(SelectorError::Unknown {
                name: sel.name.clone(),
                hint: hint(&sel.name, candidates),
            });
        }
    }
    Ok(out)
}

/// The transforms `name` reads, directly or through other transforms (tables are not included:
/// they are synced by `--table`/`--source`, or read as they are).
fn upstream(reg: &Registered, names: &TransformNames, name: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![name.to_string()];
    while let Some(n) = todo.pop() {
        let Some(t) = reg.transforms.get(&n) else {
            continue;
        };
        for k in t.inputs.iter().filter_map(|i| names.get(i)) {
            if k != name && out.insert(k.clone()) {
                todo.push(k.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_four_shapes_and_refuses_empty_ones() {
        let p = |s: &str| s.parse::<Selector>();
        let sel = |name: &str, upstream, downstream| Selector {
            name: name.into(),
            upstream,
            downstream,
        };
        assert_eq!(p("facts"), Ok(sel("facts", false, false)));
        assert_eq!(p("facts+"), Ok(sel("facts", false, true)));
        assert_eq!(p("+facts"), Ok(sel("facts", true, false)));
        assert_eq!(p("+facts+"), Ok(sel("facts", true, true)));
        assert_eq!(p("+facts+").unwrap().to_string(), "+facts+");
        for bad in ["", "+", "++", "a+b"] {
            assert!(matches!(p(bad), Err(SelectorError::Empty(_))), "{bad}");
        }
    }
}

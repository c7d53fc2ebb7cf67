//! Bounds on what loading spec files may cost, and the meter that enforces them while files parse.
//!
//! Spec files arrive through git from anyone who can open a pull request, and the daemon loads them
//! unattended, so a small hostile file must not make loading allocate gigabytes (YAML aliases copy
//! whole subtrees: ten nested aliases of ten items each are 10⁹ values), overflow the stack (values
//! nested thousands deep) or read a huge file into memory. Every limit here is a constant, documented
//! in docs/security.md ("Spec files"), chosen from the largest realistic instance — about 10,000
//! tables, each with a few dozen documented columns — with room to spare.
//!
//! A [`Meter`] counts the values a file builds, *including* the copies alias expansion makes (an alias
//! is charged the size of the subtree it copies before anything is copied), and the bytes of text in
//! them. Files are parsed in parallel, so the instance-wide count is shared through [`Shared`] as a
//! memory guard only; which file is reported as crossing the instance limit is decided afterwards in
//! file order by `load`, so the answer does not depend on thread timing.

use crate::diag::source::Span;
use crate::diag::{Code, Diagnostic};
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest spec file read, in bytes. A registry file with about 700 tables, each documenting thirty
/// columns, takes 1 MiB; bigger registries split into several files under `registry/`.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Bytes of spec files read for one instance: 10,000 documented tables take about 15 MiB.
pub const MAX_INSTANCE_BYTES: u64 = 64 << 20;
/// Values (scalars, keys, lists and mappings, counting alias copies) one file may build. Dense YAML
/// holds about one value per 8 bytes, so a file within [`MAX_FILE_BYTES`] stays under this unless
/// aliases multiply it.
pub const MAX_FILE_VALUES: u64 = 200_000;
/// Values all spec files of an instance may build together: 10,000 tables of about 100 values each
/// (thirty documented columns, sync, access, tags) is 1,000,000; twice that is allowed.
pub const MAX_INSTANCE_VALUES: u64 = 2_000_000;
/// Bytes of text (keys and scalars, counting alias copies) one file may build: eight times what a file
/// may hold, enough for anchors that share column documentation.
pub const MAX_FILE_TEXT: u64 = 8 << 20;
/// Bytes of text all spec files of an instance may build together.
pub const MAX_INSTANCE_TEXT: u64 = 64 << 20;
/// Deepest nesting of lists and mappings. Spec files nest about five levels (tables → table → sync →
/// primary_key → column); the later stages walk trees recursively, so depth is bounded well below
/// what a thread's stack holds.
pub const MAX_DEPTH: usize = 64;

/// What building some values costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub values: u64,
    /// Bytes of key and scalar text.
    pub text: u64,
}

impl Cost {
    /// One scalar (or key) of `text_len` bytes.
    pub fn scalar(text_len: usize) -> Cost {
        Cost {
            values: 1,
            text: text_len as u64,
        }
    }

    /// One list or mapping, not counting what it holds.
    pub const COLLECTION: Cost = Cost { values: 1, text: 0 };

    pub fn plus(self, other: Cost) -> Cost {
        Cost {
            values: self.values.saturating_add(other.values),
            text: self.text.saturating_add(other.text),
        }
    }

    pub fn minus(self, other: Cost) -> Cost {
        Cost {
            values: self.values.saturating_sub(other.values),
            text: self.text.saturating_sub(other.text),
        }
    }

    /// Whether neither measure is beyond `limit`.
    pub fn within(self, limit: Cost) -> bool {
        self.exceeds(limit).is_none()
    }

    fn exceeds(self, limit: Cost) -> Option<Measure> {
        if self.values > limit.values {
            Some(Measure::Values)
        } else if self.text > limit.text {
            Some(Measure::Text)
        } else {
            None
        }
    }
}

pub const FILE_LIMIT: Cost = Cost {
    values: MAX_FILE_VALUES,
    text: MAX_FILE_TEXT,
};

pub const INSTANCE_LIMIT: Cost = Cost {
    values: MAX_INSTANCE_VALUES,
    text: MAX_INSTANCE_TEXT,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    Values,
    Text,
}

/// Which bound a charge crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    File(Measure),
    Instance(Measure),
    /// Nesting deeper than [`MAX_DEPTH`].
    Depth,
    /// Another file's parse used up the shared instance budget first: this file's result is unknown
    /// and it must be parsed again on its own (see `load`). Never shown to users.
    Interrupted,
}

/// Why parsing a file stopped without a tree.
#[derive(Debug)]
pub enum Stop {
    /// The file is invalid (syntax, or a limit crossed at a known place).
    Invalid(Box<Diagnostic>),
    /// See [`Exceeded::Interrupted`].
    Interrupted,
}

impl From<Diagnostic> for Stop {
    fn from(d: Diagnostic) -> Stop {
        Stop::Invalid(Box::new(d))
    }
}

/// The instance-wide count shared by the threads that parse files at the same time: a guard that
/// stops every parse once the instance's budget is spent, whichever file spent it.
#[derive(Debug, Default)]
pub struct Shared {
    values: AtomicU64,
    text: AtomicU64,
}

impl Shared {
    /// Adds `cost`; whether the total is now beyond the instance limit.
    fn add(&self, cost: Cost) -> bool {
        let values = self.values.fetch_add(cost.values, Ordering::Relaxed) + cost.values;
        let text = self.text.fetch_add(cost.text, Ordering::Relaxed) + cost.text;
        values > INSTANCE_LIMIT.values || text > INSTANCE_LIMIT.text
    }

    /// Whether the instance's budget is already spent.
    fn spent(&self) -> bool {
        self.values.load(Ordering::Relaxed) > INSTANCE_LIMIT.values
            || self.text.load(Ordering::Relaxed) > INSTANCE_LIMIT.text
    }
}

/// Charges are flushed to [`Shared`] in batches this large, so threads rarely touch the atomics.
const FLUSH_EVERY: u64 = 4096;

/// Counts what one file builds against the per-file limit, and against the instance: either what is
/// left of the instance's budget (exact, for a file parsed on its own) or the [`Shared`] guard.
#[derive(Debug)]
pub struct Meter<'a> {
    used: Cost,
    remaining: Cost,
    shared: Option<&'a Shared>,
    unflushed: Cost,
    crossed_instance: bool,
}

impl<'a> Meter<'a> {
    /// A meter for a file parsed alone, with only the per-file limits.
    pub fn file() -> Meter<'static> {
        Meter {
            used: Cost::default(),
            remaining: INSTANCE_LIMIT,
            shared: None,
            unflushed: Cost::default(),
            crossed_instance: false,
        }
    }

    /// A meter for a file parsed beside others, all charging `shared`.
    pub fn shared(shared: &'a Shared) -> Meter<'a> {
        Meter {
            shared: Some(shared),
            ..Meter::file()
        }
    }

    /// A meter for a file parsed on its own after earlier files used all but `remaining`.
    pub fn with_remaining(remaining: Cost) -> Meter<'static> {
        Meter {
            remaining,
            ..Meter::file()
        }
    }

    /// What the file has built so far.
    pub fn used(&self) -> Cost {
        self.used
    }

    /// Whether a charge was refused for crossing the instance's limit (later files are not read).
    pub fn crossed_instance(&self) -> bool {
        self.crossed_instance
    }

    /// Charges `cost` before it is built.
    pub fn charge(&mut self, cost: Cost) -> Result<(), Exceeded> {
        // A file that starts after the budget is spent stops at once, however small it is.
        if self.used == Cost::default() && self.shared.is_some_and(Shared::spent) {
            return Err(Exceeded::Interrupted);
        }
        let used = self.used.plus(cost);
        if let Some(m) = used.exceeds(FILE_LIMIT) {
            return Err(Exceeded::File(m));
        }
        if let Some(m) = used.exceeds(self.remaining) {
            self.crossed_instance = true;
            return Err(Exceeded::Instance(m));
        }
        self.used = used;
        if let Some(shared) = self.shared {
            self.unflushed = self.unflushed.plus(cost);
            if self.unflushed.values >= FLUSH_EVERY || self.unflushed.text >= FLUSH_EVERY * 64 {
                let batch = std::mem::take(&mut self.unflushed);
                if shared.add(batch) {
                    return Err(Exceeded::Interrupted);
                }
            }
        }
        Ok(())
    }
}

impl Drop for Meter<'_> {
    /// The last, partial batch still counts: without it, many small files would slip past the guard.
    fn drop(&mut self) {
        if let Some(shared) = self.shared {
            shared.add(self.unflushed);
        }
    }
}

/// The diagnostic for a charge that crossed a bound at `span`. `what` names the thing charged
/// ("this alias", "this value").
pub fn diagnostic(exceeded: Exceeded, span: Span, what: &str, cost: Cost) -> Stop {
    let (scope, measure) = match exceeded {
        Exceeded::Interrupted => return Stop::Interrupted,
        Exceeded::Depth => {
            return Diagnostic::error(
                Code::Syntax,
                span,
                format!("lists and mappings nest more than {MAX_DEPTH} levels deep here"),
            )
            .with_hint(
                "spec files nest a few levels; flatten this value (nested aliases count too)",
            )
            .into()
        }
        Exceeded::File(m) => ("file", m),
        Exceeded::Instance(m) => ("instance", m),
    };
    let (limit, amount) = match (scope, measure) {
        ("file", Measure::Values) => (format!("{MAX_FILE_VALUES} values"), cost.values),
        ("file", Measure::Text) => (format!("{} of text", mib(MAX_FILE_TEXT)), cost.text),
        (_, Measure::Values) => (format!("{MAX_INSTANCE_VALUES} values"), cost.values),
        (_, Measure::Text) => (format!("{} of text", mib(MAX_INSTANCE_TEXT)), cost.text),
    };
    let amount = match measure {
        Measure::Values if amount == 1 => "one value".to_string(),
        Measure::Values => format!("{amount} values"),
        Measure::Text => format!("{amount} bytes of text"),
    };
    let (message, hint) = if scope == "file" {
        (
            format!(
                "{what} ({amount}) takes the file past {limit}, the most one spec file may build \
                 (alias copies count in full)"
            ),
            "expand fewer aliases, or split the specs into several files; \
             the limits are described in docs/security.md",
        )
    } else {
        (
            format!(
                "{what} ({amount}) takes the instance's spec files past {limit} together, the \
                 most an instance may build (alias copies count in full); later files were not \
                 checked"
            ),
            "the instance's specs are far larger than any realistic one; look for aliases that \
             multiply values; the limits are described in docs/security.md",
        )
    };
    Diagnostic::error(Code::Syntax, span, message)
        .with_hint(hint)
        .into()
}

/// `n` bytes as whole MiB for messages.
pub fn mib(n: u64) -> String {
    format!("{} MiB", n >> 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_instance_bounds_are_separate() {
        let mut m = Meter::file();
        m.charge(Cost::scalar(10)).unwrap();
        assert_eq!(
            m.charge(Cost {
                values: MAX_FILE_VALUES,
                text: 0
            }),
            Err(Exceeded::File(Measure::Values))
        );
        // A refused charge is not counted.
        assert_eq!(m.used(), Cost::scalar(10));
        let mut m = Meter::with_remaining(Cost {
            values: 5,
            text: 100,
        });
        m.charge(Cost::scalar(50)).unwrap();
        assert_eq!(
            m.charge(Cost::scalar(51)),
            Err(Exceeded::Instance(Measure::Text))
        );
    }

    #[test]
    fn the_shared_guard_interrupts_every_parse_once_spent() {
        let shared = Shared::default();
        let whole_file = Cost {
            values: MAX_FILE_VALUES,
            text: 0,
        };
        // Each meter stays within its own file's limit; together they fill the instance's.
        for _ in 0..(MAX_INSTANCE_VALUES / MAX_FILE_VALUES) {
            assert_eq!(Meter::shared(&shared).charge(whole_file), Ok(()));
        }
        assert_eq!(
            Meter::shared(&shared).charge(whole_file),
            Err(Exceeded::Interrupted)
        );
        let mut late = Meter::shared(&shared);
        let batch = Cost {
            values: FLUSH_EVERY,
            text: 0,
        };
        assert_eq!(late.charge(batch), Err(Exceeded::Interrupted));
    }
}

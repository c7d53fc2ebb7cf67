//! `data/state/registry.digest`: what the registry records, in short (the spec digest of each
//! object's kind, id, spec file and document hash, their count, and the apply serial), beside the
//! state file, so that a plan with nothing to change reads a small file instead of starting DuckDB
//! to open the state.
//!
//! Only an apply writes it, under the state lock: the old digest is removed before the registry
//! is written and the new one written after the commit, so a crash in between leaves none (the
//! next plan reads the state itself; the next apply writes it again). A digest is trusted only
//! when written by this very version of the binary over this schema version in this layout, and
//! only to say "the
//! state registers exactly these objects": any difference and the plan reads the state. A digest
//! that went stale some other way (the state file replaced by hand) can only make a plan preview
//! wrong, never an apply: an apply always reads the state under its lock, and a saved plan whose
//! serial is not the state's is refused. Removing the file is always safe.

use super::{migrate, Reader, StateError, StateResult, StateStore};
use crate::registry::document::{self, Kind, Objects, Recorded};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

const FILE: &str = "registry.digest";

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Digest {
    /// [`writer`]: the binary and schema version that wrote it.
    written_by: String,
    serial: i64,
    /// How many objects, and the digest of their `(kind, id, spec file, hash)` in key order — the
    /// spec digest a plan of exactly these objects records ([`document::digest_of`]): a plan
    /// compares one value, whatever the size of the registry.
    count: usize,
    objects: String,
}

/// The digest file's layout; bumped when it changes.
const FORMAT: u32 = 2;

/// Who may trust a digest: this binary's version over this schema version, in this layout.
fn writer() -> String {
    format!(
        "pipeline {} schema {} digest {FORMAT}",
        env!("CARGO_PKG_VERSION"),
        migrate::latest_version(migrate::MIGRATIONS)
    )
}

impl StateStore {
    fn digest_path(&self) -> PathBuf {
        self.path.with_file_name(FILE)
    }

    /// The recorded side of a plan, from the digest alone, when it says the state registers
    /// exactly `known` (each object with the same spec file and document): a plan with nothing to
    /// change. `None` in every other case (no digest, another version's, any difference): read the
    /// state.
    pub fn recorded_from_digest(&self, known: &Objects) -> Option<Recorded> {
        let text = std::fs::read(self.digest_path()).ok()?;
        let digest: Digest = serde_json::from_slice(&text).ok()?;
        if digest.written_by != writer() || digest.count != known.len() {
            return None;
        }
        document::hash_all(known);
        let mine = document::digest(known);
        (mine == digest.objects).then(|| Recorded {
            serial: digest.serial,
            objects: known.clone(),
            // Only a table's update reads it, and there is none.
            failed_extracts: Default::default(),
        })
    }

    /// Removes the digest before the registry is written. A digest that cannot be removed would
    /// outlive the write: that is an error.
    pub(super) fn forget_digest(&self) -> StateResult<()> {
        let path = self.digest_path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StateError::Io(path, e)),
        }
    }

    /// Writes the digest of what `r` (this state, read under the state lock) registers. Best
    /// effort: without it, the next plan reads the state.
    pub(super) fn write_digest(&self, r: &Reader) {
        if let Err(e) = self.try_write_digest(r) {
            tracing::debug!("registry digest not written: {e}");
        }
    }

    /// Writes the digest when there is none this binary trusts (an apply that changed nothing,
    /// under the state lock, after a crash left none or an upgrade left another version's).
    pub fn ensure_digest(&self) {
        let trusted = std::fs::read(self.digest_path())
            .ok()
            .and_then(|text| serde_json::from_slice::<Digest>(&text).ok())
            .is_some_and(|d| d.written_by == writer());
        if self.exists() && !trusted {
            match self.read() {
                Ok(r) => self.write_digest(&r),
                Err(e) => tracing::debug!("registry digest not written: {e}"),
            }
        }
    }

    fn try_write_digest(&self, r: &Reader) -> Result<(), Box<dyn std::error::Error>> {
        // In `Objects`' key order, as a plan reads them.
        let rows: std::collections::BTreeMap<(Kind, String), (String, String)> =
            super::registry::stamps(r)?
                .into_iter()
                .map(|(kind, id, file, hash)| ((kind, id), (file, hash)))
                .collect();
        let digest = Digest {
            written_by: writer(),
            serial: r.serial()?,
            count: rows.len(),
            objects: document::digest_of(
                rows.iter()
                    .map(|((k, id), (file, hash))| (*k, id.as_str(), file.as_str(), hash.as_str())),
            ),
        };
        crate::files::write_aside(&self.digest_path(), &serde_json::to_vec(&digest)?)?;
        Ok(())
    }
}

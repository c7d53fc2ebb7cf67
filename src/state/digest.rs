//! `data/state/registry.digest`: what the registry records, in short (each object's kind, id, spec
//! file and document hash, and the apply serial), beside the state file, so that a plan with
//! nothing to change reads a small file instead of starting DuckDB to open the state.
//!
//! Only an apply writes it, under the state lock: the old digest is removed before the registry
//! is written and the new one written after the commit, so a crash in between leaves none (the
//! next plan reads the state itself; the next apply writes it again). A digest is trusted only
//! when written by this very version of the binary over this schema version, and only to say "the
//! state registers exactly these objects": any difference and the plan reads the state. A digest
//! that went stale some other way (the state file replaced by hand) can only make a plan preview
//! wrong, never an apply: an apply always reads the state under its lock, and a saved plan whose
//! serial is not the state's is refused. Removing the file is always safe.

use super::{migrate, Reader, StateError, StateResult, StateStore};
use crate::registry::document::{Kind, Objects, Recorded};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

const FILE: &str = "registry.digest";

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Digest {
    /// [`writer`]: the binary and schema version that wrote it.
    written_by: String,
    serial: i64,
    /// `[kind, id, spec file, hash]`, sorted.
    objects: Vec<[String; 4]>,
}

/// Who may trust a digest: this binary's version over this schema version.
fn writer() -> String {
    format!(
        "pipeline {} schema {}",
        env!("CARGO_PKG_VERSION"),
        migrate::latest_version(migrate::MIGRATIONS)
    )
}

fn entries<'a>(
    objects: impl Iterator<Item = (Kind, &'a str, &'a str, &'a str)>,
) -> Vec<[String; 4]> {
    let mut list: Vec<[String; 4]> = objects
        .map(|(kind, id, file, hash)| {
            [
                kind.to_string(),
                id.to_string(),
                file.to_string(),
                hash.to_string(),
            ]
        })
        .collect();
    list.sort();
    list
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
        if digest.written_by != writer() || digest.objects.len() != known.len() {
            return None;
        }
        let mine = entries(
            known
                .values()
                .map(|o| (o.kind, o.id.as_str(), o.file.as_str(), o.hash())),
        );
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

    /// Writes the digest when there is none (an apply that changed nothing, under the state lock,
    /// after a crash or an upgrade left none).
    pub fn ensure_digest(&self) {
        if self.exists() && !self.digest_path().is_file() {
            match self.read() {
                Ok(r) => self.write_digest(&r),
                Err(e) => tracing::debug!("registry digest not written: {e}"),
            }
        }
    }

    fn try_write_digest(&self, r: &Reader) -> Result<(), Box<dyn std::error::Error>> {
        let rows = super::registry::stamps(r)?;
        let digest = Digest {
            written_by: writer(),
            serial: r.serial()?,
            objects: entries(
                rows.iter()
                    .map(|(k, id, file, hash)| (*k, id.as_str(), file.as_str(), hash.as_str())),
            ),
        };
        let path = self.digest_path();
        let aside = path.with_file_name(format!(".{FILE}.{}.tmp", std::process::id()));
        std::fs::write(&aside, serde_json::to_vec(&digest)?)?;
        std::fs::rename(&aside, &path)?;
        Ok(())
    }
}

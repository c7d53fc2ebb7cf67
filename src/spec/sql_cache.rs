//! What DuckDB's parser said about each SQL text, kept across `pipeline validate` runs.
//!
//! Parsing is most of what validating a large instance costs, and between two runs almost every SQL
//! text is unchanged. The cache maps the SHA-256 of a text to the [`Parsed`] result the walk in
//! [`sql`](super::sql) made of it — the tables, functions and listings it reads, or its syntax error —
//! so an unchanged text costs a hash and a lookup.
//!
//! A result is only valid for the parser and the walk that made it, so the cache file is keyed by a
//! fingerprint of both: the DuckDB library version the process runs with, this crate's version, and
//! the source text of the walk itself (`sql.rs`, `sql_json.rs`), so that any change to how a tree is
//! read starts a new cache instead of reusing results it would not produce. A file that does not
//! parse, or whose fingerprint differs, is ignored and replaced; only answers DuckDB gave are stored
//! (a query that failed to run is not the statement's fault).
//!
//! Where: `$PIPELINE_SQL_CACHE` (a directory; `off` disables the cache), else
//! `$XDG_CACHE_HOME/pipeline`, else `~/.cache/pipeline`. The directory is created private (0700)
//! and the file written aside and renamed, so a reader never sees half a file. Only `pipeline
//! validate` and `pipeline plan` use the cache; the daemon's checks and the API's access checks
//! always parse.

use super::sql::Parsed;
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// The SHA-256 of a SQL text: how results are found.
pub type Digest = [u8; 32];

pub fn digest(sql: &str) -> Digest {
    Sha256::digest(sql.as_bytes()).into()
}

/// Bumped when the file layout changes. The layout: a header line `pipeline-sql-cache <FORMAT>
/// <fingerprint>`, then one line per text, `<hex SHA-256> <Parsed as JSON>`, read line by line so
/// that loading holds no second copy of the file.
const FORMAT: u32 = 1;

/// Past this many entries, a save keeps only those the run used.
const MAX_ENTRIES: usize = 200_000;

/// Cache files of other fingerprints untouched this long are removed when a cache is saved.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(14 * 86_400);

/// The cache of one fingerprint, loaded in memory.
pub struct SqlCache {
    dir: PathBuf,
    fingerprint: String,
    entries: HashMap<Digest, Parsed>,
    used: HashSet<Digest>,
    changed: bool,
}

impl SqlCache {
    /// The cache directory the environment asks for: `None` when disabled or when there is no home.
    pub fn dir_from_env() -> Option<PathBuf> {
        match std::env::var_os("PIPELINE_SQL_CACHE") {
            Some(v) if v == "off" || v.is_empty() => None,
            Some(v) => Some(PathBuf::from(v)),
            None => std::env::var_os("XDG_CACHE_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
                .map(|d| d.join("pipeline")),
        }
    }

    /// Loads the cache in `dir` for the running DuckDB `duckdb_version` (empty when there is none yet
    /// or it cannot be read).
    pub fn open(dir: &Path, duckdb_version: &str) -> SqlCache {
        let mut cache = SqlCache {
            dir: dir.to_path_buf(),
            fingerprint: fingerprint(duckdb_version),
            entries: HashMap::new(),
            used: HashSet::new(),
            changed: false,
        };
        if let Ok(file) = std::fs::File::open(cache.file()) {
            match read_entries(std::io::BufReader::new(file), &cache.fingerprint) {
                Some(entries) => cache.entries = entries,
                None => tracing::debug!("ignoring the SQL cache {}", cache.file().display()),
            }
        }
        cache
    }

    fn file(&self) -> PathBuf {
        self.dir
            .join(format!("sql-{}.cache", &self.fingerprint[..16]))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&mut self, key: &Digest) -> Option<Parsed> {
        let found = self.entries.get(key).cloned();
        if found.is_some() {
            self.used.insert(*key);
        }
        found
    }

    /// Whether `key` is cached, marking it used.
    pub fn touch(&mut self, key: &Digest) -> bool {
        let found = self.entries.contains_key(key);
        if found {
            self.used.insert(*key);
        }
        found
    }

    pub fn put(&mut self, key: Digest, parsed: Parsed) {
        self.used.insert(key);
        if self.entries.get(&key) != Some(&parsed) {
            self.entries.insert(key, parsed);
            self.changed = true;
        }
    }

    /// Writes the cache if this run added to it.
    pub fn save(&mut self) -> std::io::Result<()> {
        if !self.changed {
            return Ok(());
        }
        if self.entries.len() > MAX_ENTRIES {
            let used = &self.used;
            self.entries.retain(|k, _| used.contains(k));
        }
        create_private_dir(&self.dir)?;
        write_aside(&self.file(), |out| {
            writeln!(out, "pipeline-sql-cache {FORMAT} {}", self.fingerprint)?;
            for (key, parsed) in &self.entries {
                out.write_all(hex(key).as_bytes())?;
                out.write_all(b" ")?;
                serde_json::to_writer(&mut *out, parsed)?;
                out.write_all(b"\n")?;
            }
            Ok(())
        })?;
        self.changed = false;
        self.remove_stale();
        Ok(())
    }

    /// Removes cache files of other fingerprints that no run has written for a while.
    fn remove_stale(&self) {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let own = self.file();
        for entry in listing.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = name.starts_with("sql-") && name.ends_with(".cache");
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_AFTER);
            if ours && old && path != own {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The entries of a cache file, or `None` when it is not one of `fingerprint` or is damaged.
fn read_entries(mut file: impl BufRead, fingerprint: &str) -> Option<HashMap<Digest, Parsed>> {
    let mut line = String::new();
    file.read_line(&mut line).ok()?;
    if line.trim_end() != format!("pipeline-sql-cache {FORMAT} {fingerprint}") {
        return None;
    }
    let mut entries = HashMap::new();
    loop {
        line.clear();
        if file.read_line(&mut line).ok()? == 0 {
            return Some(entries);
        }
        let (key, parsed) = line.trim_end().split_once(' ')?;
        entries.insert(unhex(key)?, serde_json::from_str(parsed).ok()?);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Digest> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The version of the DuckDB library this process runs with (it is linked dynamically unless built
/// with `bundled`), without starting a database.
pub fn duckdb_version() -> String {
    // SAFETY: duckdb_library_version returns a pointer to a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(duckdb::ffi::duckdb_library_version()) };
    version.to_string_lossy().into_owned()
}

/// What a cached result depends on: the parser, the walk, the file layout.
fn fingerprint(duckdb_version: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        &FORMAT.to_string(),
        env!("CARGO_PKG_VERSION"),
        duckdb_version,
        include_str!("sql.rs"),
        include_str!("sql_json.rs"),
    ] {
        h.update(part.len().to_le_bytes());
        h.update(part.as_bytes());
    }
    hex(&h.finalize())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes a private temporary file beside `path` with `write`, then renames it over `path`.
fn write_aside(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("cache.{}.tmp", std::process::id()));
    let result = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut out = std::io::BufWriter::new(file);
        write(&mut out)?;
        out.flush()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::sql::{Reads, SqlError};

    #[test]
    fn a_saved_result_is_found_again_only_with_the_same_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let ok: Parsed = Ok(Reads {
            functions: vec!["range".into()],
            ..Reads::default()
        });
        let bad: Parsed = Err(SqlError {
            message: "syntax error".into(),
            offset: Some(3),
        });
        let dir = dir.path().join("pipeline");
        let mut c = SqlCache::open(&dir, "v1.5.5");
        let (one, from, two) = (
            digest("select 1"),
            digest("select from"),
            digest("select 2"),
        );
        assert_eq!(c.get(&one), None);
        c.put(one, ok.clone());
        c.put(from, bad.clone());
        c.save().unwrap();
        let mut again = SqlCache::open(&dir, "v1.5.5");
        assert_eq!(again.get(&one), Some(ok));
        assert_eq!(again.get(&from), Some(bad));
        assert_eq!(again.get(&two), None);
        // Another DuckDB: nothing carries over.
        let mut other = SqlCache::open(&dir, "v1.6.0");
        assert_eq!(other.get(&one), None);
        // A damaged file is ignored, not an error.
        let file = again.file();
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, text.replace("syntax error", "syntax\" error")).unwrap();
        assert_eq!(SqlCache::open(&dir, "v1.5.5").get(&one), None);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "the directory is private");
    }
}

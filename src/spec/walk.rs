//! Which files under the instance root are spec files, and reading them without trusting the tree.
//!
//! Spec files come from git, and git stores symbolic links: a pull request can add
//! `registry/x.yaml → /proc/self/environ`, and an error that quotes the file would print the CI
//! runner's secrets. So a spec file or directory (`config/`, `pipelines/`, `registry/`, `metrics/` and
//! everything below them) is only read when its real path stays inside the instance root — links
//! between places inside the root are fine — and when it is a regular file: a FIFO would block the
//! read forever, a device could be endless. Refused entries are reported by path only; nothing of what
//! they point to is read. Reads are bounded by [`limits::MAX_FILE_BYTES`](super::limits).
//!
//! Used by [`load`](super::load); knows nothing about what spec files contain.

use std::collections::BTreeSet;
use std::fs::{self, FileType};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A file of interest under the root: readable, or refused (and why).
#[derive(Debug)]
pub enum Found {
    /// A spec file to read, by the path it was listed under.
    File(PathBuf),
    /// A spec file or directory that is not read.
    Refused(PathBuf, Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A symbolic link whose real path leaves the instance root.
    Outside { resolved: PathBuf },
    /// A symbolic link to nothing.
    Dangling { target: PathBuf },
    /// Not a regular file or directory: a FIFO, a socket, a device.
    NotRegular { kind: &'static str },
    /// A directory reached a second time through a link (a loop, or two names for one directory).
    Repeated { resolved: PathBuf },
}

impl Refusal {
    /// The sentence after "`<path>` …" in a diagnostic.
    pub fn describe(&self) -> String {
        match self {
            Refusal::Outside { resolved } => format!(
                "is a symbolic link to {}, outside the instance root; it was not read",
                resolved.display()
            ),
            Refusal::Dangling { target } => format!(
                "is a symbolic link to {}, which does not exist",
                target.display()
            ),
            Refusal::NotRegular { kind } => {
                format!("is {kind}, not a regular file; it was not read")
            }
            Refusal::Repeated { resolved } => format!(
                "leads to {}, a directory already read under another name; it was not read again",
                resolved.display()
            ),
        }
    }

    pub fn hint(&self) -> &'static str {
        match self {
            Refusal::Outside { .. } => {
                "spec files and their directories must be inside the instance root (links may point \
                 elsewhere inside it); copy the file into the repository instead"
            }
            Refusal::Dangling { .. } => "remove the link, or restore what it points to",
            Refusal::NotRegular { .. } => "spec files must be regular files; remove this one",
            Refusal::Repeated { .. } => "remove the link; every spec file is read once",
        }
    }
}

/// Why a listed spec file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Bigger than the limit; the size seen.
    TooLarge(u64),
    NotRegular(&'static str),
    NotUtf8,
    Io(std::io::Error),
}

/// The instance root, resolved once, against which every spec path is checked.
#[derive(Debug)]
pub struct Root {
    canonical: PathBuf,
    /// Directories already walked, by real path: a link back up the tree must not loop.
    seen: BTreeSet<PathBuf>,
}

impl Root {
    pub fn new(root: &Path) -> std::io::Result<Root> {
        Ok(Root {
            canonical: fs::canonicalize(root)?,
            seen: BTreeSet::new(),
        })
    }

    /// Checks a path whose file type (not following links) is `ty`: `Ok(real path)` when it may be
    /// read, `Err` when refused.
    fn admit(&self, path: &Path, ty: FileType) -> Result<PathBuf, Refusal> {
        if !ty.is_symlink() {
            return Ok(path.to_path_buf());
        }
        match fs::canonicalize(path) {
            Ok(resolved) if resolved.starts_with(&self.canonical) => Ok(resolved),
            Ok(resolved) => Err(Refusal::Outside { resolved }),
            Err(_) => Err(Refusal::Dangling {
                target: fs::read_link(path).unwrap_or_default(),
            }),
        }
    }

    /// Spec files (by `is_spec`) in `dir`, and with `recursive` below it, in sorted order; refused
    /// entries in their place. `dir` itself is checked too (a missing one holds nothing).
    pub fn spec_files(
        &mut self,
        dir: &Path,
        recursive: bool,
        is_spec: &dyn Fn(&Path) -> bool,
        out: &mut Vec<Found>,
    ) {
        let Ok(meta) = fs::symlink_metadata(dir) else {
            return;
        };
        match self.admit(dir, meta.file_type()) {
            Ok(real) => {
                if real.is_dir() {
                    self.walk(dir, &real, recursive, is_spec, out);
                }
            }
            Err(refusal) => out.push(Found::Refused(dir.to_path_buf(), refusal)),
        }
    }

    fn walk(
        &mut self,
        dir: &Path,
        real: &Path,
        recursive: bool,
        is_spec: &dyn Fn(&Path) -> bool,
        out: &mut Vec<Found>,
    ) {
        let real = fs::canonicalize(real).unwrap_or_else(|_| real.to_path_buf());
        if !self.seen.insert(real.clone()) {
            out.push(Found::Refused(
                dir.to_path_buf(),
                Refusal::Repeated { resolved: real },
            ));
            return;
        }
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<(PathBuf, Option<FileType>)> = entries
            .filter_map(|e| e.ok().map(|e| (e.path(), e.file_type().ok())))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, ty) in entries {
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            let Some(ty) = ty else { continue };
            if hidden {
                continue;
            }
            match self.admit(&path, ty) {
                Ok(target) => {
                    // File type of what the entry is (or points to), without opening it.
                    let Ok(meta) = fs::metadata(&target) else {
                        continue;
                    };
                    let kind = meta.file_type();
                    if kind.is_dir() {
                        if recursive {
                            self.walk(&path, &target, true, is_spec, out);
                        }
                    } else if is_spec(&path) {
                        match not_regular(kind) {
                            None => out.push(Found::File(path)),
                            Some(kind) => {
                                out.push(Found::Refused(path, Refusal::NotRegular { kind }))
                            }
                        }
                    }
                }
                // A refused link that does not look like spec input is not ours to judge.
                Err(refusal) => {
                    let points_to_dir = fs::metadata(&path).is_ok_and(|m| m.is_dir());
                    if (points_to_dir && recursive) || is_spec(&path) {
                        out.push(Found::Refused(path, refusal));
                    }
                }
            }
        }
    }

    /// One named file (e.g. `config/instance.yaml`): `None` when nothing is there.
    pub fn file(&self, path: &Path) -> Option<Found> {
        let meta = fs::symlink_metadata(path).ok()?;
        Some(match self.admit(path, meta.file_type()) {
            Ok(target) => match fs::metadata(&target).map(|m| m.file_type()) {
                Ok(kind) if kind.is_dir() => return None,
                Ok(kind) => match not_regular(kind) {
                    None => Found::File(path.to_path_buf()),
                    Some(kind) => Found::Refused(path.to_path_buf(), Refusal::NotRegular { kind }),
                },
                Err(_) => return None,
            },
            Err(refusal) => Found::Refused(path.to_path_buf(), refusal),
        })
    }
}

/// What a non-regular file is, in words; `None` for a regular file.
fn not_regular(ty: FileType) -> Option<&'static str> {
    if ty.is_file() {
        None
    } else if ty.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if ty.is_socket() {
        Some("a socket")
    } else if ty.is_block_device() || ty.is_char_device() {
        Some("a device")
    } else {
        Some("not a file")
    }
}

/// Reads a listed spec file, at most `limit` bytes. Opened without blocking (a FIFO swapped in
/// after the listing cannot hang the read) and checked again on the open handle before reading.
pub fn read(path: &Path, limit: u64) -> Result<String, ReadError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if let Some(kind) = not_regular(meta.file_type()) {
        return Err(ReadError::NotRegular(kind));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after the check: never read past the limit.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn yaml(p: &Path) -> bool {
        p.extension().is_some_and(|e| e == "yaml")
    }

    #[test]
    fn links_inside_the_root_are_followed_and_links_outside_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.yaml"), "token: hunter2\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        let reg = root.path().join("registry");
        std::fs::create_dir_all(reg.join("real")).unwrap();
        std::fs::write(reg.join("real/a.yaml"), "tables: []\n").unwrap();
        symlink(reg.join("real/a.yaml"), reg.join("b.yaml")).unwrap();
        symlink(outside.path().join("secret.yaml"), reg.join("c.yaml")).unwrap();
        symlink(outside.path(), reg.join("d")).unwrap();
        symlink(&reg, reg.join("loop")).unwrap();
        symlink(reg.join("gone.yaml"), reg.join("e.yaml")).unwrap();
        let mut found = Vec::new();
        Root::new(root.path())
            .unwrap()
            .spec_files(&reg, true, &yaml, &mut found);
        let names: Vec<String> = found
            .iter()
            .map(|f| match f {
                Found::File(p) => format!("ok {}", p.strip_prefix(&reg).unwrap().display()),
                Found::Refused(p, r) => format!(
                    "refused {} {}",
                    p.strip_prefix(&reg).unwrap().display(),
                    match r {
                        Refusal::Outside { .. } => "outside",
                        Refusal::Dangling { .. } => "dangling",
                        Refusal::NotRegular { .. } => "not-regular",
                        Refusal::Repeated { .. } => "repeated",
                    }
                ),
            })
            .collect();
        assert_eq!(
            names,
            [
                "ok b.yaml",
                "refused c.yaml outside",
                "refused d outside",
                "refused e.yaml dangling",
                "refused loop repeated",
                "ok real/a.yaml",
            ]
        );
    }

    #[test]
    fn fifos_are_refused_without_being_opened() {
        let root = tempfile::tempdir().unwrap();
        let fifo = root.path().join("p.yaml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let mut found = Vec::new();
        Root::new(root.path())
            .unwrap()
            .spec_files(root.path(), false, &yaml, &mut found);
        assert!(matches!(
            &found[..],
            [Found::Refused(_, Refusal::NotRegular { .. })]
        ));
        // Even when asked to read it directly, nothing blocks.
        assert!(matches!(read(&fifo, 10), Err(ReadError::NotRegular(_))));
    }

    #[test]
    fn reads_stop_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.yaml");
        std::fs::write(&p, "x".repeat(11)).unwrap();
        assert!(matches!(read(&p, 10), Err(ReadError::TooLarge(11))));
        assert_eq!(read(&p, 11).unwrap().len(), 11);
    }
}

//! File-system facts and writes that layers which must not import each other share: which version
//! of a file is on disk, and replacing a small file without a reader ever seeing half of it.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// One version of a file, as the file system tells versions apart: inode, size, modification time
/// (ns). Our files are written aside and renamed into place (a new inode each time, kept by the
/// rename along with size and time), so an unchanged `FileId` means unchanged bytes. File times are
/// coarse (milliseconds), which callers that compare them for staleness bound otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub ino: u64,
    pub len: u64,
    pub mtime_ns: i128,
}

impl FileId {
    /// The file at `path` now (`None` when it cannot be read).
    pub fn of(path: &Path) -> Option<FileId> {
        std::fs::metadata(path)
            .ok()
            .map(|m| FileId::from_metadata(&m))
    }

    pub fn from_metadata(m: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
}

/// Replaces `path` with `bytes` through a file beside it (`.<name>.<pid>.tmp`) and a rename: a
/// reader sees the old content or the new, never a part. Not synced to disk: for files that can be
/// made again (records, digests, caches).
pub fn write_aside(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let aside = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&aside, bytes)?;
    std::fs::rename(&aside, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&aside);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_is_a_new_version_and_a_rename_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        write_aside(&path, b"one").unwrap();
        let first = FileId::of(&path).unwrap();
        assert_eq!(first.len, 3);
        write_aside(&path, b"two").unwrap();
        let second = FileId::of(&path).unwrap();
        assert_ne!(first, second, "another inode");
        let moved = dir.path().join("moved.json");
        std::fs::rename(&path, &moved).unwrap();
        assert_eq!(FileId::of(&moved), Some(second));
        assert_eq!(FileId::of(&path), None);
        assert_eq!(std::fs::read(&moved).unwrap(), b"two");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "nothing left aside");
    }
}

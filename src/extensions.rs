//! DuckDB extensions: where an instance keeps them, and loading one onto a connection.
//!
//! Sources that read through a DuckDB extension (`postgres`, `mysql`, and the `_remote_attach` rows
//! of any extract) need it loaded on the connection that scans or attaches. The instance says where
//! extensions live (`extensions.directory`, else DuckDB's own default, `~/.duckdb/extensions`) and,
//! optionally, a repository to install a missing one from (`extensions.repository`). This module
//! points a connection at that directory and LOADs an extension by name; a missing one is one error
//! naming the PyPI package that ships it and the command that installs it. It does not decide which
//! extensions an extract may attach: that is `remote_attach.extensions` ([`crate::extract_db::remote`]).
//!
//! DuckDB finds `LOAD postgres` at `<directory>/<version>/<platform>/postgres_scanner.duckdb_extension`
//! (the extension's canonical name); `scripts/fetch-extensions` places the official builds there
//! from their PyPI wheels. Signatures are checked as DuckDB always does: unsigned files are refused.

use crate::quote;
use duckdb::Connection;
use std::path::{Path, PathBuf};

/// An extension this version knows how to get, by the name `LOAD` takes.
#[derive(Clone, Copy, Debug)]
pub struct Known {
    pub name: &'static str,
    /// The file's stem DuckDB looks for (`LOAD postgres` reads `postgres_scanner.duckdb_extension`).
    pub canonical: &'static str,
    /// The PyPI wheel that ships the official build of this DuckDB version, when there is one.
    pub package: Option<&'static str>,
}

/// Extensions with an official build of DuckDB 1.5.5 on PyPI (`duckdb-extension-<name>`), and the
/// community ones sources may name. `name` is what specs and `_remote_attach` rows use.
pub const KNOWN: &[Known] = &[
    Known {
        name: "postgres",
        canonical: "postgres_scanner",
        package: Some("duckdb-extension-postgres"),
    },
    Known {
        name: "mysql",
        canonical: "mysql_scanner",
        package: Some("duckdb-extension-mysql"),
    },
    Known {
        name: "sqlite",
        canonical: "sqlite_scanner",
        package: Some("duckdb-extension-sqlite"),
    },
    Known {
        name: "httpfs",
        canonical: "httpfs",
        package: Some("duckdb-extension-httpfs"),
    },
    Known {
        name: "ducklake",
        canonical: "ducklake",
        package: Some("duckdb-extension-ducklake"),
    },
    Known {
        name: "motherduck",
        canonical: "motherduck",
        package: Some("duckdb-extension-motherduck"),
    },
    Known {
        name: "iceberg",
        canonical: "iceberg",
        package: Some("duckdb-extension-iceberg"),
    },
    Known {
        name: "delta",
        canonical: "delta",
        package: Some("duckdb-extension-delta"),
    },
    Known {
        name: "bigquery",
        canonical: "bigquery",
        package: None,
    },
];

/// The version the wheels are pinned to: the DuckDB this binary links (DESIGN.md §11).
pub const DUCKDB_VERSION: &str = "1.5.5";

pub fn known(name: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.name == name)
}

/// Where an instance's extensions are installed, and where a missing one may be installed from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtensionStore {
    /// Absolute; `None`: DuckDB's default (`~/.duckdb/extensions`).
    pub directory: Option<PathBuf>,
    /// A repository DuckDB can `INSTALL … FROM` (a URL or a local directory in DuckDB's repository
    /// layout); `None`: nothing is installed, a missing extension is an error.
    pub repository: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtensionError {
    #[error("`{0}` is not an extension name (letters, digits and _)")]
    Name(String),
    #[error("cannot use {} as the extension directory: {message}", .directory.display())]
    Directory { directory: PathBuf, message: String },
    /// Not in the directory (and no repository, or the repository did not have it).
    #[error("the DuckDB extension `{name}` is not installed in {}: {help}", .directory.display())]
    Missing {
        name: String,
        directory: PathBuf,
        help: String,
    },
    #[error("the DuckDB extension `{name}` could not be loaded from {}: {message}", .directory.display())]
    Load {
        name: String,
        directory: PathBuf,
        message: String,
    },
}

impl ExtensionStore {
    /// Points `conn`'s DuckDB instance at this store's directory (when one is set). Called before
    /// anything on the connection loads an extension; repeating it is harmless.
    pub fn configure(&self, conn: &Connection) -> Result<(), ExtensionError> {
        if let Some(dir) = &self.directory {
            conn.execute_batch(&format!("SET extension_directory = {}", quote::path(dir)))
                .map_err(|e| ExtensionError::Directory {
                    directory: dir.clone(),
                    message: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// Loads extension `name` on `conn`: from the store's directory, installed from the repository
    /// first when it is missing there and a repository is set.
    pub fn load(&self, conn: &Connection, name: &str) -> Result<(), ExtensionError> {
        if quote::ident(name).is_none() {
            return Err(ExtensionError::Name(name.to_string()));
        }
        self.configure(conn)?;
        let directory = self.directory_of(conn);
        let canonical = known(name).map_or(name, |k| k.canonical);
        let file = self.file_in(conn, &directory, canonical);
        let present = file.as_deref().is_some_and(Path::is_file);
        if !present {
            match &self.repository {
                Some(repo) => {
                    conn.execute_batch(&format!("INSTALL {name} FROM {}", quote::literal(repo)))
                        .map_err(|e| ExtensionError::Missing {
                            name: name.to_string(),
                            directory: directory.clone(),
                            help: format!(
                                "installing it from the repository {repo} failed ({e}); {}",
                                install_help(name, &directory)
                            ),
                        })?;
                }
                None => {
                    return Err(ExtensionError::Missing {
                        name: name.to_string(),
                        help: install_help(name, &directory),
                        directory,
                    })
                }
            }
        }
        conn.execute_batch(&format!("LOAD {name}"))
            .map_err(|e| ExtensionError::Load {
                name: name.to_string(),
                directory,
                message: e.to_string(),
            })
    }

    /// The directory DuckDB reads extensions from on `conn`.
    fn directory_of(&self, conn: &Connection) -> PathBuf {
        if let Some(d) = &self.directory {
            return d.clone();
        }
        let set: Option<String> = conn
            .query_row("SELECT current_setting('extension_directory')", [], |r| {
                r.get(0)
            })
            .ok();
        match set.filter(|s| !s.is_empty()) {
            Some(s) => PathBuf::from(s),
            None => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".duckdb/extensions"),
        }
    }

    /// `<directory>/v<version>/<platform>/<canonical>.duckdb_extension`, as this DuckDB names it.
    fn file_in(&self, conn: &Connection, directory: &Path, canonical: &str) -> Option<PathBuf> {
        let version: String = conn
            .query_row("SELECT library_version FROM pragma_version()", [], |r| {
                r.get(0)
            })
            .ok()?;
        let platform: String = conn
            .query_row("SELECT platform FROM pragma_platform()", [], |r| r.get(0))
            .ok()?;
        Some(
            directory
                .join(version)
                .join(platform)
                .join(format!("{canonical}.duckdb_extension")),
        )
    }
}

/// `extensions.repository` as DuckDB's INSTALL takes it: a URL as written, a local directory
/// resolved against the instance root.
pub fn repository_at(root: &Path, repository: &str) -> String {
    if repository.contains("://") {
        repository.to_string()
    } else {
        root.join(repository).to_string_lossy().into_owned()
    }
}

/// How to install `name` into `directory`, offline: the PyPI wheel and the script that unpacks it.
pub fn install_help(name: &str, directory: &Path) -> String {
    match known(name).and_then(|k| k.package) {
        Some(package) => format!(
            "the official build is the PyPI package {package}=={DUCKDB_VERSION}; install it with \
             `scripts/fetch-extensions --dir {} {name}` (or set extensions.repository in \
             config/instance.yaml to a repository that has it)",
            directory.display()
        ),
        None => format!(
            "no PyPI wheel ships it; install it with DuckDB (`INSTALL {name} FROM community`) on a \
             machine that can reach the extension repository and copy it into {}, or set \
             extensions.repository in config/instance.yaml",
            directory.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_extension_names_its_package_and_the_install_command() {
        let dir = tempfile::tempdir().unwrap();
        let store = ExtensionStore {
            directory: Some(dir.path().to_path_buf()),
            repository: None,
        };
        let conn = Connection::open_in_memory().unwrap();
        let err = store.load(&conn, "postgres").unwrap_err().to_string();
        assert!(
            err.contains("duckdb-extension-postgres==1.5.5")
                && err.contains("scripts/fetch-extensions")
                && err.contains(&dir.path().display().to_string()),
            "{err}"
        );
        assert!(matches!(
            store.load(&conn, "x; drop"),
            Err(ExtensionError::Name(_))
        ));
    }

    #[test]
    fn a_file_that_is_not_a_signed_extension_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ExtensionStore {
            directory: Some(dir.path().to_path_buf()),
            repository: None,
        };
        let conn = Connection::open_in_memory().unwrap();
        let file = store
            .file_in(&conn, dir.path(), "postgres_scanner")
            .unwrap();
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"not an extension").unwrap();
        let err = store.load(&conn, "postgres").unwrap_err();
        assert!(matches!(err, ExtensionError::Load { .. }), "{err}");
    }
}

//! Real database servers for tests: PostgreSQL on 127.0.0.1:5432 (trust, user postgres) and MariaDB
//! on 127.0.0.1:3306 (root, empty password). Each test creates its own uniquely named database
//! (`pipeline_test_<pid>_<n>`) through the servers' own CLIs and drops it when the guard goes out of
//! scope, failed test or not; nothing else on the servers is touched. `.ci/run` checks the servers
//! are reachable and installs the extensions (scripts/fetch-extensions) before the tests run.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique() -> String {
    format!(
        "pipeline_test_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where scripts/fetch-extensions puts the postgres and mysql extensions (its default directory).
pub fn extensions_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    let dir = cache.join("pipeline/extensions");
    for name in ["postgres_scanner", "mysql_scanner"] {
        let file = dir.join(format!("v1.5.5/linux_amd64/{name}.duckdb_extension"));
        assert!(
            file.is_file(),
            "{} is missing: run scripts/fetch-extensions (scripts/test and .ci/run do)",
            file.display()
        );
    }
    dir
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PostgreSQL database of this test's own, dropped with the guard.
pub struct PgDb {
    pub name: String,
}

impl PgDb {
    pub fn create() -> PgDb {
        let name = unique();
        psql("postgres", &format!("CREATE DATABASE {name}"));
        PgDb { name }
    }

    /// Runs `sql` in this database (psql, stopping at the first error); its output.
    pub fn sql(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }

    /// Drops the database now (a source outage); harmless to repeat.
    pub fn drop_now(&self) {
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

fn psql(db: &str, sql: &str) -> String {
    run(
        Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-X", "-q", "-A", "-t"])
            .args(["-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql]),
        "psql",
    )
}

/// A MariaDB database and a user with a password that may read only it, dropped with the guard.
pub struct MyDb {
    pub name: String,
    pub user: String,
    pub password: String,
}

impl MyDb {
    pub fn create() -> MyDb {
        let name = unique();
        let db = MyDb {
            user: format!("{name}_u"),
            password: format!("pw-{name}-Secret"),
            name,
        };
        mariadb(
            "",
            &format!(
                "CREATE DATABASE {n}; CREATE USER '{u}'@'%' IDENTIFIED BY '{p}'; \
                 GRANT SELECT, SHOW VIEW ON {n}.* TO '{u}'@'%';",
                n = db.name,
                u = db.user,
                p = db.password
            ),
        );
        db
    }

    pub fn sql(&self, sql: &str) -> String {
        mariadb(&self.name, sql)
    }

    pub fn drop_now(&self) {
        mariadb("", &format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-P", "3306", "-u", "root", "-e"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {}; DROP USER IF EXISTS '{}'@'%';",
                self.name, self.user
            ))
            .output();
    }
}

fn mariadb(db: &str, sql: &str) -> String {
    let mut cmd = Command::new("mariadb");
    cmd.args(["-h", "127.0.0.1", "-P", "3306", "-u", "root", "-N", "-B"]);
    if !db.is_empty() {
        cmd.arg(db);
    }
    run(cmd.args(["-e", sql]), "mariadb")
}

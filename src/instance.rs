//! The instance: where it lives, where its data is, and the settings every command shares — the ONE
//! description of "the instance" that the commands, the runner and the daemon start from.
//!
//! [`Instance::open`] reads `config/instance.*` only (cheap: commands that need no other spec, such as
//! `query` or `admin`, never load them); [`Instance::from_specs`] takes the instance out of specs
//! already loaded. [`DataDir`] names every file and directory under the data directory, so no other
//! module spells a path such as `data/state/system.duckdb`. Nothing here creates a file except
//! [`Instance::create_data_dir`], which a command that writes calls once.

use crate::diag::Diagnostics;
use crate::extensions::ExtensionStore;
use crate::spec::model::{InstanceSpec, MissedRuns, ServerSettings};
use crate::spec::Specs;
use chrono_tz::Tz;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The instance file is missing or did not decode; the diagnostics say why.
    #[error(
        "no instance at {}: config/instance.yaml is missing or invalid (`pipeline validate` says why)",
        .specs.root.display()
    )]
    Missing {
        specs: Box<Specs>,
        diags: Diagnostics,
    },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Where an instance keeps its data (DESIGN.md §2): every path under the data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir(PathBuf);

impl DataDir {
    pub fn new(dir: impl Into<PathBuf>) -> DataDir {
        DataDir(dir.into())
    }

    /// The data directory itself.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// `state/`: the state database, the locks, the daemon's presence file.
    pub fn state_dir(&self) -> PathBuf {
        self.0.join("state")
    }

    /// `state/system.duckdb`: the recorded state (only `state` opens it).
    pub fn state_db(&self) -> PathBuf {
        self.0.join("state/system.duckdb")
    }

    /// `state/state.lock`: one apply at a time.
    pub fn state_lock(&self) -> PathBuf {
        self.0.join("state/state.lock")
    }

    /// `state/locks/`: the source and analytics locks of runs.
    pub fn locks(&self) -> PathBuf {
        self.0.join("state/locks")
    }

    /// The lock a run holds while it writes `source`'s extracts.
    pub fn source_lock(&self, source: &str) -> PathBuf {
        self.locks().join(format!("source-{source}.lock"))
    }

    /// The lock a run holds while it builds and publishes analytics.
    pub fn analytics_lock(&self) -> PathBuf {
        self.locks().join("analytics.lock")
    }

    /// `state/jira/<source>.webhooks.ndjson`: the audit log of a jira source's webhook deliveries
    /// (one JSON line per accepted event, written before it is processed; docs/jira.md).
    pub fn jira_webhook_log(&self, source: &str) -> PathBuf {
        self.0.join(format!("state/jira/{source}.webhooks.ndjson"))
    }

    /// `state/daemon.json`: which daemon serves the instance.
    pub fn daemon_presence(&self) -> PathBuf {
        self.0.join("state/daemon.json")
    }

    /// `extracts/`: one directory per source (extract.duckdb and its Parquet).
    pub fn extracts(&self) -> PathBuf {
        self.0.join("extracts")
    }

    /// `analytics/analytics.duckdb`: the published file analysts query.
    pub fn analytics(&self) -> PathBuf {
        self.0.join("analytics/analytics.duckdb")
    }

    /// Where a new analytics file is built before it is renamed over the live one.
    pub fn staging(&self) -> PathBuf {
        self.analytics().with_extension("duckdb.tmp")
    }

    /// `tmp/`: DuckDB's spill directory for runs.
    pub fn tmp(&self) -> PathBuf {
        self.0.join("tmp")
    }
}

/// Runs the daemon works on at once unless `scheduler.max_concurrent_runs` says otherwise.
pub const DEFAULT_CONCURRENT_RUNS: usize = 2;

/// The run engines' limits: what `run:` sets, else from the host — a quarter of the RAM (two runs
/// at once take half of it), at least 256 MiB; half the cores, at least 1.
pub fn run_limits(
    set: crate::spec::model::RunSettings,
    (memory_mb, cores): (Option<u64>, u64),
) -> crate::duck::EngineLimits {
    crate::duck::EngineLimits {
        memory_mb: set
            .memory_limit_mb
            .or_else(|| memory_mb.map(|m| (m / 4).max(256))),
        threads: Some(set.threads.unwrap_or((cores / 2).max(1))),
    }
}

/// The instance and its settings (`config/instance.*`), with paths resolved against its root.
#[derive(Clone, Debug)]
pub struct Instance {
    /// The instance root, canonical when it exists.
    pub root: PathBuf,
    /// The data directory; absolute (canonical once it exists).
    pub data: DataDir,
    pub name: String,
    /// The zone schedules and people's times are in.
    pub tz: Tz,
    /// Tasks a run runs at once (`defaults.concurrency`, at least 1).
    pub concurrency: usize,
    /// `server.listen` as written.
    pub listen: String,
    pub server: ServerSettings,
    pub missed_runs: MissedRuns,
    /// `scheduler.max_concurrent_runs`: runs the daemon works on at once (default 2).
    pub max_concurrent_runs: usize,
    /// `run:`: each run engine's memory and threads, defaults resolved against the host.
    pub run_limits: crate::duck::EngineLimits,
    /// `remote_attach.extensions`: the DuckDB extensions analytics may attach remote databases with.
    pub remote_extensions: Vec<String>,
    /// `remote_attach.token_envs`: the environment variables a remote attachment may read a token from.
    pub remote_token_envs: Vec<String>,
    /// Where DuckDB extensions are installed and come from (`extensions:`).
    pub extensions: ExtensionStore,
}

impl Instance {
    /// The instance at `root`, reading its instance file only.
    pub fn open(root: &Path) -> Result<Instance, InstanceError> {
        let (specs, diags) = crate::spec::load::load_instance(root);
        match Instance::from_specs(&specs) {
            Some(inst) => Ok(inst),
            None => Err(InstanceError::Missing {
                specs: Box::new(specs),
                diags,
            }),
        }
    }

    /// The instance `specs` declare; `None` when their instance file is missing or invalid.
    pub fn from_specs(specs: &Specs) -> Option<Instance> {
        let spec = specs.instance.as_ref()?;
        Some(Instance::of(spec, &specs.root))
    }

    fn of(spec: &InstanceSpec, root: &Path) -> Instance {
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let data = root.join(&spec.data_dir.value);
        let data = std::fs::canonicalize(&data).unwrap_or(data);
        let values = |v: &[crate::spec::decode::Located<String>]| -> Vec<String> {
            v.iter().map(|e| e.value.clone()).collect()
        };
        let settings = spec.extensions.as_ref();
        Instance {
            data: DataDir(data),
            name: spec.name.value.clone(),
            tz: spec.timezone.value,
            concurrency: spec.defaults.concurrency.max(1) as usize,
            listen: spec.listen.value.clone(),
            server: ServerSettings::clone(&spec.server),
            missed_runs: spec.missed_runs,
            max_concurrent_runs: spec
                .max_concurrent_runs
                .map_or(DEFAULT_CONCURRENT_RUNS, |n| n as usize),
            run_limits: run_limits(spec.run, crate::duck::host_memory_and_cores()),
            remote_extensions: values(&spec.remote_extensions),
            remote_token_envs: values(&spec.remote_token_envs),
            extensions: ExtensionStore {
                directory: settings
                    .and_then(|e| e.directory.as_ref())
                    .map(|d| root.join(&d.value)),
                repository: settings
                    .and_then(|e| e.repository.as_ref())
                    .map(|r| crate::extensions::repository_at(&root, &r.value)),
            },
            root,
        }
    }

    /// Creates the data directory if it is missing, and makes [`Instance::data`] its canonical path
    /// (views in analytics.duckdb name their Parquet by absolute path). For commands that write.
    pub fn create_data_dir(&mut self) -> Result<(), InstanceError> {
        let dir = self.data.dir().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| InstanceError::Io(dir.clone(), e))?;
        let abs = std::fs::canonicalize(&dir).map_err(|e| InstanceError::Io(dir, e))?;
        self.data = DataDir(abs);
        Ok(())
    }

    /// Where the daemon listens: `server.listen`, or 127.0.0.1:8585 when it does not parse.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8585)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_limits_come_from_the_spec_else_from_the_host() {
        use crate::spec::model::RunSettings;
        let host = (Some(16 * 1024), 8);
        let limits = run_limits(RunSettings::default(), host);
        assert_eq!((limits.memory_mb, limits.threads), (Some(4096), Some(4)));
        let small = run_limits(RunSettings::default(), (Some(512), 1));
        assert_eq!((small.memory_mb, small.threads), (Some(256), Some(1)));
        let set = RunSettings {
            memory_limit_mb: Some(1000),
            threads: Some(3),
        };
        let limits = run_limits(set, host);
        assert_eq!((limits.memory_mb, limits.threads), (Some(1000), Some(3)));
        // Unknown RAM: DuckDB's own default memory limit stays.
        assert_eq!(
            run_limits(RunSettings::default(), (None, 2)).memory_mb,
            None
        );
    }

    fn instance(dir: &Path, yaml: &str) {
        std::fs::create_dir_all(dir.join("config")).unwrap();
        std::fs::write(dir.join("config/instance.yaml"), yaml).unwrap();
    }

    #[test]
    fn open_reads_the_instance_file_alone_and_resolves_paths() {
        let tmp = tempfile::tempdir().unwrap();
        instance(
            tmp.path(),
            "name: shop\ntimezone: Europe/Prague\ndata_dir: store\ndefaults:\n  concurrency: 3\n",
        );
        // A broken source file does not matter to the instance.
        std::fs::create_dir_all(tmp.path().join("pipelines")).unwrap();
        std::fs::write(tmp.path().join("pipelines/bad.yaml"), "type: [").unwrap();
        let inst = Instance::open(tmp.path()).unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        assert_eq!(inst.root, root);
        assert_eq!(inst.name, "shop");
        assert_eq!(inst.tz.name(), "Europe/Prague");
        assert_eq!(inst.concurrency, 3);
        assert_eq!(inst.data.state_db(), root.join("store/state/system.duckdb"));
        assert_eq!(
            inst.data.source_lock("crm"),
            root.join("store/state/locks/source-crm.lock")
        );
        assert_eq!(
            inst.data.staging(),
            root.join("store/analytics/analytics.duckdb.tmp")
        );
        assert!(!root.join("store").exists(), "opening creates nothing");
        let mut inst = inst;
        inst.create_data_dir().unwrap();
        assert!(root.join("store").is_dir());
    }

    #[test]
    fn a_missing_instance_file_is_an_error_that_names_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Instance::open(tmp.path()).unwrap_err();
        assert!(
            err.to_string().contains("config/instance.yaml is missing"),
            "{err}"
        );
        let InstanceError::Missing { diags, .. } = err else {
            panic!("not Missing")
        };
        assert!(diags.has_errors());
    }
}

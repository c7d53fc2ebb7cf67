//! `pipeline daemon` (DESIGN.md §10): one process running the [`scheduler`], the spec [`watcher`]
//! and the HTTP [`api`] on tokio, around one [`Shared`] view of the instance.
//!
//! The daemon never holds a DuckDB file open between operations: the state is opened per read or
//! write (readers and writers in this process take turns, see [`crate::state::StateStore`]), analytics.duckdb is only
//! ever opened read-only, and runs write their files aside and rename them. So `pipeline plan`,
//! `apply`, `run` and `query` from a shell keep working while it runs.

pub mod api;
pub mod clock;
pub mod http;
pub mod jira;
pub mod limits;
pub mod runs;
pub mod scheduler;
pub mod state_cache;
pub mod stats;
pub mod watcher;

use crate::exec;
use crate::instance::{DataDir, Instance, InstanceError};
use crate::registry::document::Objects;
use crate::registry::registered::Registered;
use crate::spec::model::MissedRuns;
use crate::state::StateStore;
use chrono::{DateTime, Utc};
use clock::Clock;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{watch, Notify};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Exec(#[from] exec::ExecError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// How the daemon was started (command-line options over the instance's settings).
#[derive(Clone, Debug)]
pub struct Config {
    pub root: PathBuf,
    /// Overrides `server.listen`.
    pub listen: Option<SocketAddr>,
    /// How long running syncs may take to finish after SIGTERM before they are cancelled.
    pub shutdown_timeout: Duration,
    /// Overrides `scheduler.missed_runs`.
    pub missed_runs: Option<MissedRuns>,
    /// Quiet time after a spec change before it is applied (editors write in several steps).
    pub debounce: Duration,
}

impl Config {
    /// `inst` with this start's overrides (`--missed-runs`).
    pub fn applied_to(&self, mut inst: Instance) -> Instance {
        inst.missed_runs = self.missed_runs.unwrap_or(inst.missed_runs);
        inst
    }
}

/// What is registered, as the daemon last read it from the state.
#[derive(Default)]
pub struct Snapshot {
    pub serial: i64,
    pub objects: Objects,
    pub registered: Registered,
}

/// What the watcher last did, for `GET /api/status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WatcherStatus {
    pub last_change_at: Option<String>,
    /// `applied`, `unchanged`, `invalid` or `failed`.
    pub last_result: Option<String>,
    pub last_applied_serial: Option<i64>,
    /// The diagnostics of specs that were not applied (file:line:col: message).
    pub errors: Vec<String>,
}

pub struct Shared {
    pub root: PathBuf,
    pub data: DataDir,
    /// The instance's state (only ever opened per operation).
    pub state: StateStore,
    pub clock: Clock,
    pub started_at: DateTime<Utc>,
    pub config: Config,
    /// The instance's settings as the specs last validated them (the data directory stays the one
    /// the daemon started with).
    instance: RwLock<Arc<Instance>>,
    snapshot: RwLock<Arc<Snapshot>>,
    pub runs: runs::RunManager,
    pub stats: stats::Stats,
    /// Tells the scheduler that registrations or settings changed.
    pub reload: Notify,
    /// Next scheduled time per table id, kept by the scheduler for status.
    pub next_runs: Mutex<BTreeMap<String, DateTime<Utc>>>,
    pub watcher: Mutex<WatcherStatus>,
    /// Flips to true once on SIGTERM/SIGINT.
    pub shutdown: watch::Sender<bool>,
    /// When this process last recorded each token's use (`last_used_at` is written at most once a
    /// minute per token, not on every request).
    pub token_use: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Valid tokens seen recently, trusted while the state is unchanged (see [`state_cache`]).
    pub verdicts: state_cache::Verdicts,
    /// What `GET /api/manifest` reads from the state, until the state changes.
    pub manifest_state: state_cache::Stamped<api::ManifestState>,
    /// Running API queries, capped in total and per token.
    pub queries: Arc<limits::QueryGate>,
}

impl Shared {
    pub fn instance(&self) -> Arc<Instance> {
        self.instance
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_instance(&self, i: Instance) {
        *self.instance.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(i);
    }

    fn set_snapshot(&self, s: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Reads the registry from the state again.
    pub fn reload_snapshot(&self) -> Result<(), DaemonError> {
        let snapshot = read_snapshot(&self.state)?;
        self.set_snapshot(snapshot);
        self.reload.notify_one();
        Ok(())
    }
}

fn read_snapshot(state: &StateStore) -> Result<Snapshot, DaemonError> {
    let recorded = state.recorded(&Objects::new())?;
    let (serial, objects) = (recorded.serial, recorded.objects);
    let registered =
        Registered::from_objects(&objects).map_err(|e| DaemonError::Setup(e.to_string()))?;
    Ok(Snapshot {
        serial,
        objects,
        registered,
    })
}

/// Runs the daemon until SIGTERM/SIGINT; returns once it has shut down cleanly.
pub fn run(cfg: Config) -> Result<(), DaemonError> {
    let mut instance = match Instance::open(&cfg.root) {
        Ok(i) => cfg.applied_to(i),
        Err(e) => {
            if let InstanceError::Missing { specs, diags } = &e {
                for line in watcher::diagnostic_lines(specs, diags) {
                    tracing::error!("{line}");
                }
            }
            return Err(DaemonError::Setup(e.to_string()));
        }
    };
    instance
        .create_data_dir()
        .map_err(|e| DaemonError::Setup(e.to_string()))?;
    let listen = cfg.listen.unwrap_or_else(|| instance.listen_addr());
    let data = instance.data.clone();
    // Create (or migrate) the state before anything reads it.
    let state = StateStore::of(&data);
    drop(state.write()?);
    let snapshot = read_snapshot(&state)?;
    let clock = Clock::from_env();
    if clock.scale() != 1.0 {
        tracing::warn!(
            scale = clock.scale(),
            "PIPELINE_CLOCK_SCALE is set: schedules run faster than real time (for tests only)"
        );
    }
    let (shutdown, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        root: instance.root.clone(),
        data,
        state,
        clock,
        started_at: Utc::now(),
        config: cfg.clone(),
        instance: RwLock::new(Arc::new(instance)),
        snapshot: RwLock::new(Arc::new(snapshot)),
        runs: runs::RunManager::new(),
        stats: stats::Stats::default(),
        reload: Notify::new(),
        next_runs: Mutex::new(BTreeMap::new()),
        watcher: Mutex::new(WatcherStatus::default()),
        shutdown,
        token_use: Mutex::new(Default::default()),
        verdicts: Default::default(),
        manifest_state: Default::default(),
        queries: Arc::new(limits::QueryGate::default()),
    });
    shared.stats.load_last_success(&shared.state);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("pipeline-daemon")
        .build()
        .map_err(|e| DaemonError::Setup(e.to_string()))?;
    let result = runtime.block_on(serve(shared, listen));
    // Dropping a runtime waits for every blocking task, and one can outlast any signal: a
    // validation stuck in a template, an apply waiting for the state lock. Runs were drained or
    // cancelled and nothing is being published by now, so what is left is abandoned: the
    // process exits, and the kernel releases its locks.
    runtime.shutdown_timeout(BLOCKING_GRACE);
    result
}

/// How long blocking work still running at the end of a shutdown is waited for.
const BLOCKING_GRACE: Duration = Duration::from_secs(1);
/// How long open connections may take to finish their answers after SIGTERM once runs are done.
const CONNECTIONS_GRACE: Duration = Duration::from_secs(10);

async fn serve(shared: Arc<Shared>, listen: SocketAddr) -> Result<(), DaemonError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| DaemonError::Listen {
            addr: listen,
            error,
        })?;
    let local = listener.local_addr().unwrap_or(listen);
    let instance = shared.instance();
    tracing::info!(
        instance = %instance.name,
        listen = %local,
        root = %shared.root.display(),
        version = env!("CARGO_PKG_VERSION"),
        "daemon started"
    );
    let limits = limits::Limits::new(&instance.server, &limits::Host::get());
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout = ?limits.header_read_timeout,
        idle_timeout = ?limits.idle_timeout,
        max_concurrent_queries = limits.max_queries,
        max_concurrent_queries_per_token = limits.max_queries_per_token,
        query_memory_limit_mb = limits.query_memory_mb,
        query_threads = limits.query_threads,
        query_timeout = ?limits.query_timeout,
        query_max_bytes = limits.query_max_bytes,
        "limits"
    );
    for w in limits.warnings(&instance.server, &limits::Host::get()) {
        tracing::warn!("{w}");
    }
    let presence = shared.data.daemon_presence();
    let written = serde_json::to_string_pretty(&Presence {
        pid: std::process::id(),
        url: format!("http://{local}"),
        started_at: crate::timestamp::rfc3339(shared.started_at),
        version: env!("CARGO_PKG_VERSION").into(),
    })
    .map_err(std::io::Error::other)
    .and_then(|text| std::fs::write(&presence, text));
    if let Err(e) = written {
        tracing::warn!(error = %e, "could not write {}", presence.display());
    }
    // Tests and scripts read this line to learn the port when listening on :0 (daemon.json is
    // written by then).
    println!("listening on http://{local}");

    let watcher = tokio::spawn(watcher::run(shared.clone()));
    let scheduler = tokio::spawn(scheduler::run(shared.clone()));
    let server = tokio::spawn(http::serve(
        listener,
        api::router(shared.clone()),
        shared.clone(),
    ));

    wait_for_signal().await;
    tracing::info!(
        running = shared.runs.running_count(),
        timeout = ?shared.config.shutdown_timeout,
        "shutting down: no new runs; waiting for running syncs to finish"
    );
    let _ = shared.shutdown.send(true);
    let drained = tokio::select! {
        d = shared.runs.wait_all(shared.config.shutdown_timeout) => d,
        _ = wait_for_signal() => {
            tracing::warn!("second signal: cancelling running syncs now");
            false
        }
    };
    if !drained {
        tracing::warn!("cancelling running syncs: running tasks finish, nothing new starts, nothing half-done is published");
        shared.runs.cancel_all();
        // Each task is atomic; give them a last moment, then leave (staged files are cleaned up by
        // the next run).
        shared.runs.wait_all(Duration::from_secs(30)).await;
    }
    // Answers in progress finish (queries are stopped by the shutdown; other handlers are short).
    if tokio::time::timeout(CONNECTIONS_GRACE, server)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {CONNECTIONS_GRACE:?}: closing them");
    }
    watcher.abort();
    scheduler.abort();
    let _ = std::fs::remove_file(&presence);
    tracing::info!("daemon stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `data/state/daemon.json`: which daemon serves this instance, for `pipeline status`. Written at
/// start, removed at a clean stop; a file left by a crash names a dead pid, which readers check.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Presence {
    pub pid: u32,
    pub url: String,
    pub started_at: String,
    pub version: String,
}

impl Presence {
    /// The daemon serving the instance at `data`, if one is running.
    pub fn running(data: &DataDir) -> Option<Presence> {
        let text = std::fs::read_to_string(data.daemon_presence()).ok()?;
        let p: Presence = serde_json::from_str(&text).ok()?;
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(p.pid as libc::pid_t, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        alive.then_some(p)
    }
}

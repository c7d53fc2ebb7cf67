//! Runs started by the daemon (schedule, watcher, API): at most one run per table at a time, each on
//! its own thread (a run is blocking DuckDB work), visible while it runs and for a while after.

use super::Shared;
use crate::exec;
use crate::exec::scheduler::{Finished, Observer, Status};
use crate::ops::sync;
use crate::registry::dag;
use crate::registry::task::{Task, TaskKind};
use crate::timestamp::rfc3339;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Finished runs kept in memory for `GET /api/runs/{id}` (older ones are read from the state).
const KEEP_FINISHED: usize = 200;

#[derive(Clone, Debug, Serialize)]
pub struct TaskView {
    pub task: String,
    pub kind: String,
    pub target: String,
    pub status: String,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunView {
    pub id: String,
    pub trigger: String,
    pub who: String,
    /// `running`, `ok`, `failed`, `cancelled`, or `error` (the run could not start).
    pub status: String,
    /// Ids of the tables it syncs.
    pub tables: Vec<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub published: Option<bool>,
    pub tasks: Vec<TaskView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What to run.
pub struct Request {
    /// `schedule`, `watcher`, `api`, `start`.
    pub trigger: String,
    pub who: String,
    pub tasks: Vec<Task>,
}

impl Request {
    /// The tables a request extracts: these are what may not run twice at once.
    pub fn tables(&self) -> BTreeSet<String> {
        self.tasks
            .iter()
            .filter(|t| matches!(t.kind, TaskKind::Extract | TaskKind::Attach))
            .map(|t| t.target.clone())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// These tables are being synced by these runs.
    Busy(Vec<(String, String)>),
    ShuttingDown,
    Nothing,
}

#[derive(Default)]
struct Inner {
    /// Table id → the run syncing it.
    busy: BTreeMap<String, String>,
    runs: BTreeMap<String, RunView>,
    finished: VecDeque<String>,
    running: usize,
}

pub struct RunManager {
    inner: Mutex<Inner>,
    /// Bumped whenever a run starts or ends; waiters watch it.
    generation: watch::Sender<u64>,
    cancel: Arc<AtomicBool>,
    /// `scheduler.max_concurrent_runs`: runs over it wait for a place on their thread.
    gate: Arc<super::limits::RunGate>,
}

impl RunManager {
    pub fn new() -> RunManager {
        RunManager {
            inner: Mutex::new(Inner::default()),
            generation: watch::channel(0).0,
            cancel: Arc::new(AtomicBool::new(false)),
            gate: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// A receiver that changes whenever a run starts or ends.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn running_count(&self) -> usize {
        self.lock().running
    }

    /// Table id → run id of every table being synced.
    pub fn busy(&self) -> BTreeMap<String, String> {
        self.lock().busy.clone()
    }

    pub fn get(&self, id: &str) -> Option<RunView> {
        self.lock().runs.get(id).cloned()
    }

    pub fn running(&self) -> Vec<RunView> {
        self.lock()
            .runs
            .values()
            .filter(|r| r.status == "running")
            .cloned()
            .collect()
    }

    /// Stops every running run: nothing new starts in them; running tasks finish.
    pub fn cancel_all(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Waits until no run is running, up to `timeout`. True when all ended.
    pub async fn wait_all(&self, timeout: Duration) -> bool {
        let mut changes = self.changes();
        let all_done = async {
            loop {
                if self.running_count() == 0 {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, all_done).await.is_ok()
    }

    /// Starts a run unless one of its tables is already being synced (then nothing starts).
    pub fn start(&self, shared: &Arc<Shared>, req: Request) -> Result<String, Refused> {
        if shared.shutting_down() {
            return Err(Refused::ShuttingDown);
        }
        if req.tasks.is_empty() {
            return Err(Refused::Nothing);
        }
        let tables = req.tables();
        let id = exec::new_run_id();
        {
            let mut inner = self.lock();
            let busy: Vec<(String, String)> = tables
                .iter()
                .filter_map(|t| inner.busy.get(t).map(|r| (t.clone(), r.clone())))
                .collect();
            if !busy.is_empty() {
                return Err(Refused::Busy(busy));
            }
            for t in &tables {
                inner.busy.insert(t.clone(), id.clone());
            }
            inner.running += 1;
            inner.runs.insert(
                id.clone(),
                RunView {
                    id: id.clone(),
                    trigger: req.trigger.clone(),
                    who: req.who.clone(),
                    status: "running".into(),
                    tables: tables.iter().cloned().collect(),
                    started_at: rfc3339(chrono::Utc::now()),
                    finished_at: None,
                    published: None,
                    tasks: Vec::new(),
                    error: None,
                },
            );
        }
        self.bump();
        tracing::info!(run = %id, trigger = %req.trigger, tables = tables.len(), tasks = req.tasks.len(), "run started");
        let for_thread = shared.clone();
        let run_id = id.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("run-{id}"))
            .spawn(move || {
                // A panic must not leave the tables marked busy for the rest of the daemon's life.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let gate = for_thread.runs.gate.clone();
                    let Some(_slot) = gate.acquire(
                        || for_thread.instance().max_concurrent_runs,
                        || for_thread.shutting_down(),
                    ) else {
                        return Err("the daemon stopped before the run could start".into());
                    };
                    execute(&for_thread, &run_id, req)
                }))
                .unwrap_or_else(|_| Err("the run panicked (a bug: please report it)".into()));
                for_thread.runs.finish(&for_thread, &run_id, result);
            });
        if let Err(e) = spawned {
            self.finish(shared, &id, Err(format!("could not start a thread: {e}")));
        }
        Ok(id)
    }

    fn finish(&self, shared: &Shared, id: &str, result: Result<exec::Outcome, String>) {
        let mut inner = self.lock();
        inner.busy.retain(|_, r| r != id);
        inner.running = inner.running.saturating_sub(1);
        if let Some(view) = inner.runs.get_mut(id) {
            view.finished_at = Some(rfc3339(chrono::Utc::now()));
            match &result {
                Ok(outcome) => {
                    view.status = if outcome.cancelled {
                        "cancelled"
                    } else if outcome.ok() {
                        "ok"
                    } else {
                        "failed"
                    }
                    .into();
                    view.published = Some(outcome.published);
                    view.tasks = outcome.tasks.iter().map(task_view).collect();
                    view.error = outcome.record_error.clone();
                }
                Err(e) => {
                    view.status = "error".into();
                    view.error = Some(e.clone());
                }
            }
            match view.status.as_str() {
                "ok" => tracing::info!(run = %id, published = ?view.published, "run finished"),
                status => tracing::warn!(run = %id, status, error = ?view.error, "run finished"),
            }
            shared.stats.run_finished(view);
        }
        inner.finished.push_back(id.to_string());
        while inner.finished.len() > KEEP_FINISHED {
            if let Some(old) = inner.finished.pop_front() {
                inner.runs.remove(&old);
            }
        }
        drop(inner);
        self.bump();
    }

    fn update_task(&self, id: &str, f: &Finished) {
        if let Some(view) = self.lock().runs.get_mut(id) {
            view.tasks.push(task_view(f));
        }
    }
}

impl Default for RunManager {
    fn default() -> Self {
        RunManager::new()
    }
}

fn task_view(f: &Finished) -> TaskView {
    TaskView {
        task: f.task.id.clone(),
        kind: f.task.kind.as_str().into(),
        target: f.task.target.clone(),
        status: f.status.as_str().into(),
        duration_ms: f.duration.as_millis() as u64,
        rows: f.done.rows,
        error: f.error.clone(),
    }
}

fn execute(shared: &Arc<Shared>, run_id: &str, req: Request) -> Result<exec::Outcome, String> {
    let instance = shared.instance();
    let registered = shared.snapshot().registered.clone();
    let opts = exec::Options {
        trigger: req.trigger.clone(),
        who: req.who.clone(),
        jobs: None,
        full_refresh: false,
        accept_schema: Default::default(),
        lock_timeout: Duration::from_secs(600),
        cancel: Some(shared.runs.cancel.clone()),
        run_id: Some(run_id.to_string()),
        chosen_transforms: false,
        pushed: false,
        profile: true,
    };
    let mut observer = Logger {
        run: run_id.to_string(),
        shared: shared.clone(),
    };
    sync::run(&instance, registered, req.tasks, &opts, &mut observer).map_err(|e| e.to_string())
}

/// Tasks for a sync of `tables` (ids), with what earlier applies left pending when `with_pending`
/// ([`ops::sync::assemble`]).
pub fn sync_request(
    shared: &Shared,
    tables: &[String],
    with_pending: bool,
    trigger: &str,
    who: &str,
) -> Result<Request, String> {
    let snapshot = shared.snapshot();
    let request = if tables.is_empty() {
        sync::Request::Planned(Vec::new())
    } else {
        sync::Request::Select(dag::Selection {
            tables: tables.to_vec(),
            ..dag::Selection::default()
        })
    };
    let pending = if with_pending {
        sync::Pending::Merge
    } else {
        sync::Pending::Leave
    };
    let assembled = sync::assemble(&shared.state, &snapshot.registered, &request, pending)
        .map_err(|e| e.to_string())?;
    Ok(Request {
        trigger: trigger.into(),
        who: who.into(),
        tasks: assembled.tasks,
    })
}

/// Tasks an apply queued that no run has done yet.
pub fn pending(shared: &Shared) -> Result<Vec<Task>, String> {
    sync::pending_tasks(&shared.state).map_err(|e| e.to_string())
}

/// Logs a daemon run's tasks and feeds the metrics.
struct Logger {
    run: String,
    shared: Arc<Shared>,
}

impl Observer for Logger {
    fn started(&mut self, task: &Task) {
        tracing::debug!(run = %self.run, task = %task.id, "task started");
    }

    fn finished(&mut self, f: &Finished) {
        let ms = f.duration.as_millis() as u64;
        match f.status {
            Status::Failed => tracing::warn!(
                run = %self.run, task = %f.task.id, duration_ms = ms,
                error = f.error.as_deref().unwrap_or(""), "task failed"
            ),
            status => tracing::info!(
                run = %self.run, task = %f.task.id, status = status.as_str(), duration_ms = ms,
                rows = ?f.done.rows, "task finished"
            ),
        }
        self.shared.stats.task_finished(f);
        self.shared.runs.update_task(&self.run, f);
    }

    fn cancelling(&mut self, running: usize) {
        tracing::info!(run = %self.run, running, "run cancelling: waiting for running tasks");
    }

    fn published(&mut self, duration: Duration) {
        tracing::info!(run = %self.run, duration_ms = duration.as_millis() as u64, "analytics published");
    }
}

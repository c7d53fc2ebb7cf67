//! Runs a task DAG on tokio with bounded parallelism. Task bodies are blocking (DuckDB, file I/O) and
//! run on tokio's blocking pool; this loop only decides what may start.
//!
//! A task starts when everything it waits for has finished. If a predecessor failed (or was skipped),
//! the task is skipped — except rebuild and publish, which gather whatever their predecessors
//! produced: one table's failed extract must not keep the rest of its source, or the other sources,
//! from publishing. Once cancelled (Ctrl-C, SIGTERM), nothing new starts; running tasks finish (each
//! is atomic on its own) and the rest are reported as cancelled.

use super::error::TaskError;
use crate::registry::task::{Task, TaskKind};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// Succeeded without doing anything: the input had not changed.
    Unchanged,
    Failed,
    /// Not run because something it needs failed.
    Skipped,
    /// Not run because the run was stopped.
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Unchanged => "unchanged",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn succeeded(self) -> bool {
        matches!(self, Status::Ok | Status::Unchanged)
    }
}

/// What a task body returns.
#[derive(Clone, Debug, Default)]
pub struct Done {
    pub unchanged: bool,
    pub rows: Option<i64>,
    pub bytes: Option<i64>,
    /// One line for people ("3,684 rows, 120 kB").
    pub detail: Option<String>,
    /// Things that went wrong without failing the task (a skipped extract at publish).
    pub warnings: Vec<String>,
    pub extracted: Option<crate::extract::Extracted>,
}

/// A finished (or never started) task.
#[derive(Clone, Debug)]
pub struct Finished {
    pub task: Task,
    pub status: Status,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub duration: Duration,
    pub done: Done,
    pub error: Option<String>,
    /// Why the task body failed, typed (`None` when it did not run or the failure came from
    /// outside it): transient or not, see [`TaskError::is_transient`].
    pub cause: Option<Arc<TaskError>>,
}

/// Progress reporting; called from the scheduler loop only.
pub trait Observer: Send {
    fn started(&mut self, task: &Task);
    fn finished(&mut self, f: &Finished);
    fn cancelling(&mut self, running: usize);
    /// The staged analytics file was checkpointed and swapped in (after every task).
    fn published(&mut self, duration: Duration);
    /// The profile step after the publish finished (only when it profiled or tried something).
    fn profiled(&mut self, p: &super::profile::Profiled) {
        let _ = p;
    }
    /// The run waits for a lock another run holds (`what`: `source shop`), held by `holder`.
    fn waiting(&mut self, what: &str, holder: &str) {
        tracing::info!(what, holder, "waiting for a lock another run holds");
    }
}

/// A second Ctrl-C (or SIGTERM) asked to stop at once: the run was abandoned with tasks still
/// running; nothing was published or recorded (the next run cleans up staged files). The command
/// line turns this into exit status 130.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("interrupted: the run was aborted at once (second signal); nothing was published")]
pub struct Interrupted;

pub type Body = Arc<dyn Fn(&Task) -> Result<Done, TaskError> + Send + Sync>;

/// Whether a task runs even when some predecessor did not succeed.
fn gathers(kind: TaskKind) -> bool {
    matches!(kind, TaskKind::Rebuild | TaskKind::Publish)
}

/// Runs `tasks` (ordered, dependencies first) with at most `jobs` at once. Returns every task's
/// outcome in the given order, or [`Interrupted`] when a second signal asked to stop at once (the
/// caller then abandons the running tasks).
pub async fn run(
    tasks: Vec<Task>,
    jobs: usize,
    body: Body,
    observer: &mut dyn Observer,
    cancel: Arc<AtomicBool>,
    signals: bool,
) -> Result<Vec<Finished>, Interrupted> {
    let n = tasks.len();
    let index: BTreeMap<String, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.clone(), i))
        .collect();
    let deps: Vec<Vec<usize>> = tasks
        .iter()
        .map(|t| {
            t.after
                .iter()
                .filter_map(|d| index.get(d).copied())
                .collect()
        })
        .collect();
    let mut waiting: Vec<usize> = deps.iter().map(|d| d.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut results: Vec<Option<Finished>> = vec![None; n];
    let mut ready: std::collections::VecDeque<usize> =
        (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut running = tokio::task::JoinSet::new();
    let mut told_cancel = false;

    // One stream for the whole run: a second signal arriving while the first is handled is
    // buffered, not lost.
    let mut signals = Signals::new(signals);
    loop {
        // Decide what to do with every ready task: skip it, cancel it, or start it.
        while let Some(&i) = ready.front() {
            let failed_dep = deps[i]
                .iter()
                .any(|&d| results[d].as_ref().is_some_and(|f| !f.status.succeeded()));
            let verdict = if cancel.load(Ordering::SeqCst) {
                Some(Status::Cancelled)
            } else if failed_dep && !gathers(tasks[i].kind) {
                Some(Status::Skipped)
            } else {
                None
            };
            if let Some(status) = verdict {
                ready.pop_front();
                let why = deps[i]
                    .iter()
                    .filter_map(|&d| results[d].as_ref())
                    .filter(|f| !f.status.succeeded())
                    .map(|f| f.task.id.clone())
                    .collect::<Vec<_>>();
                let f = Finished {
                    task: tasks[i].clone(),
                    status,
                    started_at: chrono::Utc::now(),
                    duration: Duration::ZERO,
                    done: Done::default(),
                    error: (status == Status::Skipped)
                        .then(|| format!("not run: {} did not succeed", why.join(", "))),
                    cause: None,
                };
                observer.finished(&f);
                results[i] = Some(f);
                release(i, &dependents, &mut waiting, &mut ready);
                continue;
            }
            if running.len() >= jobs.max(1) {
                break;
            }
            ready.pop_front();
            observer.started(&tasks[i]);
            let task = tasks[i].clone();
            let body = body.clone();
            running.spawn_blocking(move || {
                let started_at = chrono::Utc::now();
                let clock = Instant::now();
                // A panic in a task body is a bug; report it as that task's failure, not a crash.
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&task)))
                        .unwrap_or_else(|p| {
                            let what = p
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            Err(TaskError::Internal(format!(
                                "internal error (a bug; please report it): {what}"
                            )))
                        });
                (i, task, started_at, clock.elapsed(), outcome)
            });
        }
        if running.is_empty() {
            break;
        }
        // Signals first: a pending second signal must win over tasks finishing meanwhile.
        tokio::select! {
            biased;
            _ = signals.next() => {
                // A second signal means "now": leave; staged files are cleaned up by the next run.
                if told_cancel {
                    return Err(Interrupted);
                }
                cancel.store(true, Ordering::SeqCst);
                told_cancel = true;
                observer.cancelling(running.len());
            }
            joined = running.join_next() => {
                let Some(Ok((i, task, started_at, duration, outcome))) = joined else { continue };
                let f = match outcome {
                    Ok(done) => Finished {
                        task,
                        status: if done.unchanged { Status::Unchanged } else { Status::Ok },
                        started_at,
                        duration,
                        done,
                        error: None,
                        cause: None,
                    },
                    Err(e) => Finished {
                        task,
                        status: Status::Failed,
                        started_at,
                        duration,
                        done: Done::default(),
                        error: Some(e.to_string()),
                        cause: Some(Arc::new(e)),
                    },
                };
                observer.finished(&f);
                results[i] = Some(f);
                release(i, &dependents, &mut waiting, &mut ready);
            }
        }
    }
    Ok(results
        .into_iter()
        .zip(tasks)
        .map(|(r, task)| {
            r.unwrap_or(Finished {
                task,
                status: Status::Cancelled,
                started_at: chrono::Utc::now(),
                duration: Duration::ZERO,
                done: Done::default(),
                error: None,
                cause: None,
            })
        })
        .collect())
}

fn release(
    i: usize,
    dependents: &[Vec<usize>],
    waiting: &mut [usize],
    ready: &mut std::collections::VecDeque<usize>,
) {
    for &d in &dependents[i] {
        waiting[d] -= 1;
        if waiting[d] == 0 {
            ready.push_back(d);
        }
    }
}

/// SIGINT and SIGTERM as one stream; or never, when someone else (the daemon) owns the signals and
/// cancels through the flag.
struct Signals {
    listen: bool,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new(listen: bool) -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            listen,
            term: if listen {
                signal(SignalKind::terminate()).ok()
            } else {
                None
            },
        }
    }

    async fn next(&mut self) {
        if !self.listen {
            return std::future::pending().await;
        }
        match &mut self.term {
            Some(term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn task(id: &str, kind: TaskKind, after: &[&str]) -> Task {
        Task {
            id: id.into(),
            kind,
            target: id.into(),
            after: after.iter().map(|s| s.to_string()).collect(),
            reason: String::new(),
        }
    }

    struct Quiet;
    impl Observer for Quiet {
        fn started(&mut self, _: &Task) {}
        fn finished(&mut self, _: &Finished) {}
        fn cancelling(&mut self, _: usize) {}
        fn published(&mut self, _: Duration) {}
    }

    fn run_sync(tasks: Vec<Task>, jobs: usize, body: Body) -> Vec<Finished> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(
            tasks,
            jobs,
            body,
            &mut Quiet,
            Arc::new(AtomicBool::new(false)),
            false,
        ))
        .unwrap()
    }

    #[test]
    fn a_failure_skips_dependents_but_not_gatherers_or_other_branches() {
        let tasks = vec![
            task("a", TaskKind::Extract, &[]),
            task("b", TaskKind::Extract, &[]),
            task("rebuild", TaskKind::Rebuild, &["a", "b"]),
            task("t1", TaskKind::Transform, &["a"]),
            task("t2", TaskKind::Transform, &["t1"]),
            task("t3", TaskKind::Transform, &["b"]),
        ];
        let body: Body = Arc::new(|t: &Task| {
            if t.id == "a" {
                Err(TaskError::Internal("corrupt".into()))
            } else {
                Ok(Done::default())
            }
        });
        let out = run_sync(tasks, 2, body);
        let status: BTreeMap<&str, Status> =
            out.iter().map(|f| (f.task.id.as_str(), f.status)).collect();
        assert_eq!(status["a"], Status::Failed);
        assert_eq!(status["b"], Status::Ok);
        assert_eq!(status["rebuild"], Status::Ok);
        assert_eq!(status["t1"], Status::Skipped);
        assert_eq!(status["t2"], Status::Skipped);
        assert_eq!(status["t3"], Status::Ok);
        let t1 = out.iter().find(|f| f.task.id == "t1").unwrap();
        assert!(t1.error.as_deref().unwrap().contains("a did not succeed"));
    }

    #[test]
    fn parallelism_is_bounded_and_panics_are_failures() {
        let live = Arc::new(Mutex::new((0usize, 0usize)));
        let l = live.clone();
        let body: Body = Arc::new(move |t: &Task| {
            {
                let mut g = l.lock().unwrap();
                g.0 += 1;
                g.1 = g.1.max(g.0);
            }
            std::thread::sleep(Duration::from_millis(30));
            l.lock().unwrap().0 -= 1;
            if t.id == "p" {
                panic!("boom");
            }
            Ok(Done::default())
        });
        let mut tasks: Vec<Task> = (0..6)
            .map(|i| task(&format!("x{i}"), TaskKind::Extract, &[]))
            .collect();
        tasks.push(task("p", TaskKind::Extract, &[]));
        let out = run_sync(tasks, 2, body);
        assert_eq!(live.lock().unwrap().1, 2, "at most 2 at once");
        let p = out.iter().find(|f| f.task.id == "p").unwrap();
        assert_eq!(p.status, Status::Failed);
        assert!(p.error.as_deref().unwrap().contains("boom"));
    }
}

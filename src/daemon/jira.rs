//! `POST /webhooks/jira/{source}`: Jira Cloud's webhooks, checked, logged, queued and applied.
//!
//! The route fails closed: an unknown source (or one that is not `type: jira`) is a 404; a source
//! whose `webhook_secret_env` is not configured or not set refuses every delivery (401, logged); a
//! missing or wrong `X-Hub-Signature` is a 401; a body over the daemon's limit is a 413 (the
//! router's limit) and one that is not a Jira event a 400. Nothing is written for a refused
//! delivery.
//!
//! An accepted event is appended to the source's audit log (`data/state/jira/<source>.webhooks.ndjson`:
//! event id, event, issue key and id, received at) *before* it is queued, and answered 202 at once.
//! The work happens on threads of its own: events are sharded by issue, so the events of one issue
//! are processed in the order they arrived, by one thread, while other issues go on in parallel.
//! A shard takes every event waiting for it at once and refetches each issue once (a delete is a
//! delete; a refetch answering 404 is one too); one writer thread gathers what the shards fetched
//! meanwhile and writes it with one
//! [`PartitionStore::apply`](crate::connectors::jira::partition::PartitionStore::apply) under the
//! store's per-month locks (each month file rewritten once per batch). analytics.duckdb's views of
//! the source read `data/<table>/*.parquet`, so a written month file is queryable at once; the
//! writer appends a `written` line (event ids, each one's latency from arrival) to the audit log.
//! A publisher thread per source then refreshes `extract.duckdb` and only this source's rows of
//! analytics.duckdb ([`republish`]: `_meta` row counts and times, new views), at most once a second,
//! coalescing what was written meanwhile, and appends a `published` line.
//!
//! Duplicates (Jira retries a delivery with the same `X-Atlassian-Webhook-Identifier`) are
//! answered 202 and logged, but not processed again. Because every event is handled by refetching
//! the issue, out-of-order deliveries end in Jira's current state. Events accepted but not yet
//! written when the daemon stops or dies are healed by the consistency check (the source's
//! scheduled sync).
//!
//! The queues live in a process-wide [`Hub`] rather than in [`Shared`], created on the first
//! delivery of each source (the field list is read from Jira then), and replaced when the source's
//! applied definition changes.

use super::api::{ApiError, ApiResult, AppState};
use super::Shared;
use crate::connectors::jira::partition::Change;
use crate::connectors::jira::webhook::{self, Action, Event, IssueRef};
use crate::connectors::jira::JiraConfig;
use crate::exec::jira::{republish, JiraSource};
use crate::registry::registered::SourceDef;
use crate::spec::model::SourceType;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Threads applying one source's events; an issue always goes to the same one.
const SHARDS: usize = 4;
/// Most events one shard takes at once.
const BATCH: usize = 500;
/// Most often the publisher refreshes extract.duckdb and analytics.duckdb's metadata.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// Event ids remembered per source to recognise a redelivery.
const RECENT: usize = 10_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The handler of `POST /webhooks/jira/{source}`.
pub async fn webhook(
    State(shared): State<AppState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let snapshot = shared.snapshot();
    let def = snapshot
        .registered
        .sources
        .get(&source)
        .filter(|d| d.kind() == Some(SourceType::Jira))
        .ok_or_else(|| ApiError::not_found(format!("no jira source `{source}`")))?
        .clone();
    let config = JiraConfig::from_connection(&def.connection).map_err(ApiError::internal)?;
    let Some(secret) = config.webhook_secret() else {
        tracing::warn!(
            source = %source,
            "refused a Jira webhook: the source has no webhook secret (set `webhook_secret_env` \
             and the variable it names)"
        );
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this source has no webhook secret configured; every delivery is refused",
        ));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(e) =
        webhook::verify_signature(secret.as_bytes(), &body, header(webhook::SIGNATURE_HEADER))
    {
        tracing::warn!(source = %source, error = %e, "refused a Jira webhook");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            e.to_string(),
        ));
    }
    let event = webhook::parse_event(&body, header(webhook::IDENTIFIER_HEADER))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if shared.shutting_down() {
        // Not accepted, so Jira delivers it again later.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the daemon is shutting down; Jira will retry the delivery",
        ));
    }
    let shared2 = shared.clone();
    let accepted = super::api::blocking(move || {
        hub()
            .accept(&shared2, &def, event)
            .map_err(ApiError::internal)
    })
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": true, "event_id": accepted.0, "duplicate": accepted.1})),
    )
        .into_response())
}

/// Every source's queues.
#[derive(Default)]
pub struct Hub {
    sources: Mutex<HashMap<String, Arc<SourceQueue>>>,
}

static HUB: OnceLock<Hub> = OnceLock::new();

fn hub() -> &'static Hub {
    HUB.get_or_init(Hub::default)
}

struct Job {
    event: Event,
    received: Instant,
}

/// What a shard fetched: the changes to write and the events they answer.
struct Fetched {
    changes: Vec<Change>,
    events: Vec<(String, Instant)>,
}

/// One source's queues, audit log and publisher.
struct SourceQueue {
    name: String,
    /// The applied definition's hash: a changed source gets new queues.
    hash: String,
    shards: Vec<mpsc::Sender<Job>>,
    audit: Mutex<std::fs::File>,
    recent: Mutex<(HashSet<String>, VecDeque<String>)>,
    /// Opened on first use by whichever thread needs it first.
    jira: Mutex<Option<Arc<JiraSource>>>,
    def: SourceDef,
    data_dir: std::path::PathBuf,
    /// Events written and waiting to be published.
    written: Mutex<Vec<(String, Instant)>>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Hub {
    /// Logs `event` and queues it; `(event id, duplicate)`.
    fn accept(
        &self,
        shared: &Arc<Shared>,
        def: &SourceDef,
        event: Event,
    ) -> Result<(String, bool), String> {
        let queue = self.queue(shared, def)?;
        let duplicate = {
            let mut recent = lock(&queue.recent);
            let (set, order) = &mut *recent;
            if set.contains(&event.event_id) {
                true
            } else {
                set.insert(event.event_id.clone());
                order.push_back(event.event_id.clone());
                if order.len() > RECENT {
                    if let Some(old) = order.pop_front() {
                        set.remove(&old);
                    }
                }
                false
            }
        };
        let line = json!({
            "event_id": event.event_id,
            "event": event.name,
            "issue_key": event.issue_key,
            "issue_id": event.issue_id,
            "received_at": crate::timestamp::rfc3339(chrono::Utc::now()),
            "duplicate": duplicate,
        });
        queue.log(&line)?;
        let id = event.event_id.clone();
        if !duplicate {
            let shard = match event.action() {
                Action::Refetch(refs) => refs.first().map(shard_of),
                Action::Delete { issue, .. } => Some(shard_of(&issue)),
                Action::Ignore => None,
            };
            if let Some(shard) = shard {
                let job = Job {
                    event,
                    received: Instant::now(),
                };
                queue.shards[shard]
                    .send(job)
                    .map_err(|_| "the Jira worker stopped".to_string())?;
            }
        }
        Ok((id, duplicate))
    }

    fn queue(&self, shared: &Arc<Shared>, def: &SourceDef) -> Result<Arc<SourceQueue>, String> {
        let mut sources = lock(&self.sources);
        if let Some(q) = sources.get(&def.name) {
            if q.hash == def.hash {
                return Ok(q.clone());
            }
            // The source changed: the old threads finish what they hold and stop.
            q.stop.store(true, Ordering::SeqCst);
            q.wake.notify_all();
        }
        let path = shared.data.jira_webhook_log(&def.name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let audit = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..SHARDS {
            let (tx, rx) = mpsc::channel::<Job>();
            senders.push(tx);
            receivers.push(rx);
        }
        let queue = Arc::new(SourceQueue {
            name: def.name.clone(),
            hash: def.hash.clone(),
            shards: senders,
            audit: Mutex::new(audit),
            recent: Mutex::new((HashSet::new(), VecDeque::new())),
            jira: Mutex::new(None),
            def: def.clone(),
            data_dir: shared.data.dir().to_path_buf(),
            written: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let (writer, written) = mpsc::channel::<Fetched>();
        for (i, rx) in receivers.into_iter().enumerate() {
            let q = queue.clone();
            let writer = writer.clone();
            std::thread::Builder::new()
                .name(format!("jira-{}-{i}", def.name))
                .spawn(move || q.work(rx, writer))
                .map_err(|e| e.to_string())?;
        }
        let q = queue.clone();
        std::thread::Builder::new()
            .name(format!("jira-{}-write", def.name))
            .spawn(move || q.write_loop(written))
            .map_err(|e| e.to_string())?;
        let q = queue.clone();
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("jira-{}-publish", def.name))
            .spawn(move || q.publish_loop(&shared))
            .map_err(|e| e.to_string())?;
        sources.insert(def.name.clone(), queue.clone());
        Ok(queue)
    }
}

fn shard_of(issue: &IssueRef) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    issue.as_str().hash(&mut h);
    (h.finish() % SHARDS as u64) as usize
}

impl SourceQueue {
    /// Appends one line to the audit log. A write reaches the kernel before the event is queued,
    /// so it survives the daemon being killed (not the machine losing power: no fsync per event).
    fn log(&self, line: &serde_json::Value) -> Result<(), String> {
        let mut text = line.to_string();
        text.push('\n');
        lock(&self.audit)
            .write_all(text.as_bytes())
            .map_err(|e| format!("writing the Jira audit log: {e}"))
    }

    fn jira(&self) -> Result<Arc<JiraSource>, String> {
        let mut cell = lock(&self.jira);
        if let Some(j) = &*cell {
            return Ok(j.clone());
        }
        let j = Arc::new(JiraSource::open(&self.data_dir, &self.def)?);
        *cell = Some(j.clone());
        Ok(j)
    }

    /// A shard: takes what is waiting for it, refetches, hands the changes to the writer.
    fn work(&self, rx: mpsc::Receiver<Job>, writer: mpsc::Sender<Fetched>) {
        loop {
            // The queue holds its own senders, so a replaced source's threads end on `stop` (after
            // what was queued), and the writer with them.
            let first = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(j) => j,
                Err(mpsc::RecvTimeoutError::Timeout) if !self.stop.load(Ordering::SeqCst) => {
                    continue
                }
                Err(_) => return,
            };
            let mut jobs = vec![first];
            while jobs.len() < BATCH {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let events: Vec<(String, Instant)> = jobs
                .iter()
                .map(|j| (j.event.event_id.clone(), j.received))
                .collect();
            let changes = match self.jira() {
                Ok(jira) => changes(&jira, &jobs),
                Err(e) => {
                    tracing::warn!(source = %self.name, error = %e, events = jobs.len(),
                        "Jira webhooks not written; the consistency check will heal them");
                    Vec::new()
                }
            };
            if writer.send(Fetched { changes, events }).is_err() {
                return;
            }
        }
    }

    /// The writer: everything the shards fetched meanwhile, in one apply (each month file it
    /// touches rewritten once), then the publisher is told. One writer, so shards never queue on
    /// each other's month locks; an issue's changes arrive in its shard's order.
    fn write_loop(&self, rx: mpsc::Receiver<Fetched>) {
        while let Ok(first) = rx.recv() {
            let mut all = vec![first];
            while let Ok(more) = rx.try_recv() {
                all.push(more);
            }
            let mut changes = Vec::new();
            let mut events = Vec::new();
            for f in all {
                changes.extend(f.changes);
                events.extend(f.events);
            }
            let mut written_ok = true;
            if !changes.is_empty() {
                let started = Instant::now();
                let n = changes.len();
                let result = self
                    .jira()
                    .and_then(|j| j.store.apply(changes).map_err(|e| e.to_string()));
                match result {
                    Ok(r) => tracing::debug!(source = %self.name, issues = n,
                        files_written = r.files_written, ms = started.elapsed().as_millis() as u64,
                        "Jira webhooks written"),
                    Err(e) => {
                        written_ok = false;
                        tracing::warn!(source = %self.name, error = %e, issues = n,
                            "Jira webhooks not written; the consistency check will heal them");
                    }
                }
            }
            // analytics.duckdb's views read `data/<table>/*.parquet`: a month file renamed into
            // place is queryable there now. The publisher refreshes the metadata (rows, times).
            if written_ok && !events.is_empty() {
                let now = Instant::now();
                let mut latencies: Vec<u128> = events
                    .iter()
                    .map(|(_, t)| now.duration_since(*t).as_millis())
                    .collect();
                latencies.sort_unstable();
                let line = json!({
                    "written_at": crate::timestamp::rfc3339(chrono::Utc::now()),
                    "event_ids": events.iter().map(|(id, _)| id).collect::<Vec<_>>(),
                    "latency_ms": latencies,
                });
                if let Err(e) = self.log(&line) {
                    tracing::warn!(source = %self.name, error = %e, "Jira audit log");
                }
            }
            lock(&self.written).extend(events);
            self.wake.notify_all();
        }
    }

    /// Publishes whatever was written since the last time, until the source is replaced.
    fn publish_loop(&self, shared: &Arc<Shared>) {
        loop {
            let batch = {
                let mut written = lock(&self.written);
                while written.is_empty() {
                    if self.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    written = self
                        .wake
                        .wait_timeout(written, Duration::from_millis(500))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                std::mem::take(&mut *written)
            };
            let publishing = Instant::now();
            if let Err(e) = self.publish(shared) {
                tracing::warn!(source = %self.name, error = %e, "Jira publish failed; the next event or sync retries");
                continue;
            }
            let line = json!({
                "published_at": crate::timestamp::rfc3339(chrono::Utc::now()),
                "event_ids": batch.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            });
            if let Err(e) = self.log(&line) {
                tracing::warn!(source = %self.name, error = %e, "Jira audit log");
            }
            tracing::info!(
                source = %self.name,
                events = batch.len(),
                publish_ms = publishing.elapsed().as_millis() as u64,
                "Jira webhooks published"
            );
            // The data is queryable once written; this refresh of extract.duckdb and of the
            // source's rows in analytics is metadata, so a storm need not pay for it per batch.
            let pause = PUBLISH_EVERY.saturating_sub(publishing.elapsed());
            if !pause.is_zero() && !self.stop.load(Ordering::SeqCst) {
                std::thread::sleep(pause);
            }
        }
    }

    fn publish(&self, shared: &Arc<Shared>) -> Result<(), String> {
        let jira = self.jira()?;
        let started = Instant::now();
        jira.store.publish().map_err(|e| e.to_string())?;
        let extract_ms = started.elapsed().as_millis() as u64;
        let inst = shared.instance();
        let snapshot = shared.snapshot();
        let outcome = republish(
            &inst,
            &snapshot.registered,
            &self.name,
            "jira webhook",
            crate::exec::publish::PUSH_LOCK_TIMEOUT,
        )?;
        for f in outcome.failures() {
            tracing::warn!(source = %self.name, task = %f.task.id, "after Jira webhooks: {}", f.error.as_deref().unwrap_or("?"));
        }
        tracing::debug!(
            source = %self.name,
            extract_ms,
            analytics_ms = started.elapsed().as_millis() as u64 - extract_ms,
            "Jira source published"
        );
        Ok(())
    }
}

/// What one shard's batch means for the store: per issue, the last thing asked (a delete, or a
/// refetch of its current state), fetched once.
fn changes(jira: &JiraSource, jobs: &[Job]) -> Vec<Change> {
    let mut order: Vec<IssueRef> = Vec::new();
    let mut last: HashMap<IssueRef, Option<Option<String>>> = HashMap::new();
    for job in jobs {
        let ops: Vec<(IssueRef, Option<Option<String>>)> = match job.event.action() {
            Action::Refetch(refs) => refs.into_iter().map(|r| (r, None)).collect(),
            Action::Delete { issue, id } => vec![(issue, Some(id))],
            Action::Ignore => Vec::new(),
        };
        for (r, op) in ops {
            if !last.contains_key(&r) {
                order.push(r.clone());
            }
            last.insert(r, op);
        }
    }
    let mut changes = Vec::new();
    for r in order {
        let delete = |id: Option<String>| match &r {
            IssueRef::Key(k) => Change::Delete { key: k.clone(), id },
            IssueRef::Id(i) => Change::Delete {
                key: i.clone(),
                id: Some(i.clone()),
            },
        };
        match last.remove(&r).flatten() {
            Some(id) => changes.push(delete(id)),
            None => match jira.client.fetch_issue(r.as_str()) {
                Ok(Some(f)) => match jira.mapper.map(&f) {
                    Ok(rows) => changes.push(Change::Upsert(Box::new(rows))),
                    Err(e) => {
                        tracing::warn!(issue = %r.as_str(), error = %e, "Jira issue not mapped")
                    }
                },
                Ok(None) => changes.push(delete(None)),
                Err(e) => {
                    tracing::warn!(issue = %r.as_str(), error = %e, "Jira issue not refetched; the consistency check will heal it");
                }
            },
        }
    }
    changes
}

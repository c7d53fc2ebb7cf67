//! Counters behind `GET /metrics`, rendered in the Prometheus text exposition format (0.0.4).
//!
//! Counters start at zero when the daemon starts (Prometheus handles resets); the last successful
//! sync time per table is read from the state at start, so it survives restarts.

use super::runs::RunView;
use crate::exec::scheduler::{Finished, Status};
use crate::registry::task::TaskKind;
use crate::spec::schedule::Freshness;
use crate::state::{report, StateStore};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds (seconds) of the task duration histogram.
const BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

#[derive(Default)]
struct Inner {
    /// (trigger, status) → runs.
    runs: BTreeMap<(String, String), u64>,
    /// (kind, status) → tasks.
    tasks: BTreeMap<(String, String), u64>,
    durations: BTreeMap<String, Histogram>,
    /// Table id → rows extracted since start.
    rows: BTreeMap<String, u64>,
    /// Table id → unix seconds of the last successful sync.
    last_success: BTreeMap<String, f64>,
    /// Table id → rows in the last successful sync.
    last_rows: BTreeMap<String, i64>,
    /// result → applies by the watcher.
    applies: BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct Stats {
    inner: Mutex<Inner>,
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seeds the last-success gauges from the state.
    pub fn load_last_success(&self, state: &StateStore) {
        let read = || crate::state::report::last_successes(&state.read()?);
        match read() {
            Ok(rows) => {
                let mut inner = self.lock();
                for row in rows {
                    inner.last_success.insert(row.table_id.clone(), row.at);
                    if let Some(r) = row.rows {
                        inner.last_rows.insert(row.table_id, r);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the last syncs for /metrics"),
        }
    }

    pub fn task_finished(&self, f: &Finished) {
        let mut inner = self.lock();
        let kind = f.task.kind.as_str().to_string();
        *inner
            .tasks
            .entry((kind.clone(), f.status.as_str().to_string()))
            .or_default() += 1;
        if matches!(f.status, Status::Ok | Status::Unchanged | Status::Failed) {
            inner
                .durations
                .entry(kind)
                .or_default()
                .observe(f.duration.as_secs_f64());
        }
        if matches!(f.task.kind, TaskKind::Extract | TaskKind::Attach) && f.status.succeeded() {
            let table = f.task.target.clone();
            let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
            inner.last_success.insert(table.clone(), now);
            if let Some(rows) = f.done.rows {
                *inner.rows.entry(table.clone()).or_default() += rows.max(0) as u64;
                inner.last_rows.insert(table, rows);
            }
        }
    }

    pub fn run_finished(&self, run: &RunView) {
        *self
            .lock()
            .runs
            .entry((run.trigger.clone(), run.status.clone()))
            .or_default() += 1;
    }

    pub fn apply_result(&self, result: &str) {
        *self.lock().applies.entry(result.to_string()).or_default() += 1;
    }

    /// The exposition text. `running` is the number of runs in progress.
    pub fn render(&self, running: usize, uptime_seconds: f64) -> String {
        let inner = self.lock();
        let mut out = String::with_capacity(4096);
        metric_header(
            &mut out,
            "pipeline_build_info",
            "gauge",
            "Version of the running daemon.",
        );
        let _ = writeln!(
            out,
            "pipeline_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        metric_header(
            &mut out,
            "pipeline_uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
        );
        let _ = writeln!(out, "pipeline_uptime_seconds {uptime_seconds:.3}");
        metric_header(
            &mut out,
            "pipeline_runs_running",
            "gauge",
            "Runs in progress.",
        );
        let _ = writeln!(out, "pipeline_runs_running {running}");
        metric_header(
            &mut out,
            "pipeline_runs_total",
            "counter",
            "Finished runs by trigger and status.",
        );
        for ((trigger, status), n) in &inner.runs {
            let _ = writeln!(
                out,
                "pipeline_runs_total{{trigger=\"{}\",status=\"{}\"}} {n}",
                label(trigger),
                label(status)
            );
        }
        metric_header(
            &mut out,
            "pipeline_tasks_total",
            "counter",
            "Finished tasks by kind and status (failed tasks are failures).",
        );
        for ((kind, status), n) in &inner.tasks {
            let _ = writeln!(
                out,
                "pipeline_tasks_total{{kind=\"{}\",status=\"{}\"}} {n}",
                label(kind),
                label(status)
            );
        }
        metric_header(
            &mut out,
            "pipeline_task_duration_seconds",
            "histogram",
            "Task durations by kind.",
        );
        for (kind, h) in &inner.durations {
            let k = label(kind);
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "pipeline_task_duration_seconds_bucket{{kind=\"{k}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "pipeline_task_duration_seconds_bucket{{kind=\"{k}\",le=\"+Inf\"}} {}\n\
                 pipeline_task_duration_seconds_sum{{kind=\"{k}\"}} {:.6}\n\
                 pipeline_task_duration_seconds_count{{kind=\"{k}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        family(
            &mut out,
            ("pipeline_rows_extracted_total", "counter"),
            "Rows extracted per table since the daemon started.",
            "table",
            inner.rows.iter().map(|(t, n)| (t, n.to_string())),
        );
        family(
            &mut out,
            ("pipeline_table_rows", "gauge"),
            "Rows of each table at its last successful sync.",
            "table",
            inner.last_rows.iter().map(|(t, n)| (t, n.to_string())),
        );
        family(
            &mut out,
            ("pipeline_table_last_success_timestamp_seconds", "gauge"),
            "Unix time of each table's last successful sync.",
            "table",
            inner
                .last_success
                .iter()
                .map(|(t, at)| (t, format!("{at:.3}"))),
        );
        family(
            &mut out,
            ("pipeline_spec_applies_total", "counter"),
            "Spec changes seen by the watcher, by result.",
            "result",
            inner.applies.iter().map(|(r, n)| (r, n.to_string())),
        );
        if let Some(rss) = resident_bytes() {
            metric_header(
                &mut out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of the daemon.",
            );
            let _ = writeln!(out, "process_resident_memory_bytes {rss}");
        }
        out
    }
}

/// The families read from the state at each scrape: each table's last status and freshness against
/// its schedule, each transform's and metric check's state, pending tasks. `status` has its times
/// filled in ([`report::Status::with_times`]) at `now`.
pub fn render_state(out: &mut String, status: &report::Status, now: DateTime<Utc>) {
    let one = |b: bool| if b { "1" } else { "0" };
    metric_header(
        out,
        "pipeline_table_last_status",
        "gauge",
        "Each table's last sync: 1 on its status (ok, or failed: the extract failed or the table is not in the published file).",
    );
    for t in &status.tables {
        let failed = matches!(t.last_status.as_deref(), Some("error" | "failed"));
        let ok = t.last_status.as_deref() == Some("ok");
        for (name, on) in [("ok", ok), ("failed", failed)] {
            let _ = writeln!(
                out,
                "pipeline_table_last_status{{table=\"{}\",status=\"{name}\"}} {}",
                label(&t.id),
                one(on)
            );
        }
    }
    let age = |t: &report::TableStatus| {
        t.last_success_at
            .as_deref()
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
            .map(|at| (now - at.with_timezone(&Utc)).num_milliseconds() as f64 / 1000.0)
    };
    family(
        out,
        ("pipeline_table_freshness_age_seconds", "gauge"),
        "Seconds since each table's last successful sync (with new data or without).",
        "table",
        status
            .tables
            .iter()
            .filter_map(|t| age(t).map(|a| (&t.id, format!("{:.3}", a.max(0.0))))),
    );
    let late = |t: &report::TableStatus| match &t.freshness {
        Some(Freshness::Late {
            late_by_seconds, ..
        }) => Some(*late_by_seconds),
        _ => None,
    };
    family(
        out,
        ("pipeline_table_late", "gauge"),
        "1 when a table's schedule fired and no sync has succeeded since.",
        "table",
        status
            .tables
            .iter()
            .map(|t| (&t.id, one(late(t).is_some()).to_string())),
    );
    family(
        out,
        ("pipeline_table_late_seconds", "gauge"),
        "How long ago the missed scheduled sync was due (0 when fresh).",
        "table",
        status
            .tables
            .iter()
            .map(|t| (&t.id, late(t).unwrap_or(0).to_string())),
    );
    family(
        out,
        ("pipeline_table_never_synced", "gauge"),
        "1 for a scheduled table that has never synced successfully.",
        "table",
        status.tables.iter().map(|t| {
            (
                &t.id,
                one(t.freshness == Some(Freshness::NeverSynced)).to_string(),
            )
        }),
    );
    let states = ["ok", "stale", "failed"];
    metric_header(
        out,
        "pipeline_transform_status",
        "gauge",
        "Each transform's last outcome: 1 on its status (ok, stale: the last good result kept, failed).",
    );
    for t in &status.transform_states {
        for s in states {
            let _ = writeln!(
                out,
                "pipeline_transform_status{{transform=\"{}\",status=\"{s}\"}} {}",
                label(&t.name),
                one(t.status.as_deref() == Some(s))
            );
        }
    }
    metric_header(
        out,
        "pipeline_metric_check_status",
        "gauge",
        "Each metric's last check: 1 on its status (ok, stale, failed).",
    );
    for c in &status.metric_checks {
        for s in states {
            let _ = writeln!(
                out,
                "pipeline_metric_check_status{{metric=\"{}\",status=\"{s}\"}} {}",
                label(&c.metric),
                one(c.status.as_deref() == Some(s))
            );
        }
    }
    metric_header(
        out,
        "pipeline_pending_tasks",
        "gauge",
        "Tasks an apply queued that have not completed.",
    );
    let _ = writeln!(out, "pipeline_pending_tasks {}", status.pending_tasks.len());
    metric_header(
        out,
        "pipeline_pending_tasks_failed",
        "gauge",
        "Pending tasks whose last attempt failed.",
    );
    let failed = status
        .pending_tasks
        .iter()
        .filter(|p| {
            p.last_attempt
                .as_ref()
                .is_some_and(|a| a.status != "ok" && a.status != "unchanged")
        })
        .count();
    let _ = writeln!(out, "pipeline_pending_tasks_failed {failed}");
}

fn metric_header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A metric family with one label: its header, then one sample per (label value, sample value).
fn family<'a>(
    out: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    label_name: &str,
    samples: impl Iterator<Item = (&'a String, String)>,
) {
    metric_header(out, name, kind, help);
    for (value, sample) in samples {
        let _ = writeln!(out, "{name}{{{label_name}=\"{}\"}} {sample}", label(value));
    }
}

/// A label value escaped as the text format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Resident set size from /proc (Linux).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_histograms_are_cumulative() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut h = Histogram::default();
        h.observe(0.2);
        h.observe(3.0);
        assert_eq!(h.counts[0], 0);
        assert_eq!(h.counts[2], 1, "0.2 <= 0.25");
        assert_eq!(h.counts[BUCKETS.len() - 1], 2);
        assert_eq!(h.count, 2);
    }

    #[test]
    fn render_has_every_family_once() {
        let s = Stats::default();
        s.apply_result("applied");
        let text = s.render(1, 2.5);
        for family in [
            "pipeline_runs_total",
            "pipeline_tasks_total",
            "pipeline_task_duration_seconds",
            "pipeline_table_last_success_timestamp_seconds",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family} ")).count(),
                1,
                "{family}"
            );
        }
        assert!(text.contains("pipeline_runs_running 1"));
        assert!(text.contains("pipeline_spec_applies_total{result=\"applied\"} 1"));
    }
}

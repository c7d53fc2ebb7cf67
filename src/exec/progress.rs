//! Showing a run as it goes: a spinner per running task on a terminal, one line per finished task
//! otherwise, JSON events (one object per line) for programs that follow a run, or nothing (a
//! program that reads one document at the end).

use super::scheduler::{Finished, Observer, Status};
use super::work::thousands;
use crate::registry::task::Task;
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

/// Human output: bars when stderr is a terminal, plain lines otherwise. Lines go to stderr so that
/// stdout stays for results.
pub struct Human {
    bars: Option<(
        indicatif::MultiProgress,
        HashMap<String, indicatif::ProgressBar>,
    )>,
    quiet: bool,
}

impl Human {
    pub fn new(quiet: bool) -> Human {
        use std::io::IsTerminal;
        let tty = std::io::stderr().is_terminal() && !quiet;
        Human {
            bars: tty.then(|| (indicatif::MultiProgress::new(), HashMap::new())),
            quiet,
        }
    }

    fn print(&self, line: &str) {
        match &self.bars {
            Some((mp, _)) => {
                let _ = mp.println(line);
            }
            None => {
                let _ = writeln!(anstream::stderr(), "{line}");
            }
        }
    }
}

fn size(bytes: i64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.0} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

pub fn seconds(d: Duration) -> String {
    if d.as_secs_f64() >= 60.0 {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// One line for a finished task.
pub fn line(f: &Finished) -> String {
    use anstyle::AnsiColor::*;
    let (mark, style) = match f.status {
        Status::Ok => ("✓", Green.on_default()),
        Status::Unchanged => ("=", Cyan.on_default()),
        Status::Failed => ("✗", Red.on_default().bold()),
        Status::Skipped => ("-", Yellow.on_default()),
        Status::Cancelled => ("-", Yellow.on_default()),
    };
    let mut parts = Vec::new();
    if let Some(r) = f.done.rows {
        if matches!(
            f.task.kind,
            crate::registry::task::TaskKind::Extract | crate::registry::task::TaskKind::Transform
        ) {
            parts.push(format!("{} rows", thousands(r)));
        }
    }
    if let Some(b) = f.done.bytes {
        parts.push(size(b));
    }
    if let Some(d) = &f.done.detail {
        parts.push(d.clone());
    }
    match f.status {
        Status::Failed => parts.push(format!("failed: {}", f.error.as_deref().unwrap_or("?"))),
        Status::Skipped => parts.push(f.error.clone().unwrap_or_else(|| "skipped".into())),
        Status::Cancelled => parts.push("cancelled".into()),
        _ => {}
    }
    let time = if f.duration.is_zero() {
        String::new()
    } else {
        format!("  ({})", seconds(f.duration))
    };
    format!(
        "  {style}{mark}{style:#} {:<34} {}{time}",
        f.task.id,
        parts.join(", ")
    )
}

impl Observer for Human {
    fn started(&mut self, task: &Task) {
        if let Some((mp, bars)) = &mut self.bars {
            let pb = mp.add(indicatif::ProgressBar::new_spinner());
            pb.set_style(
                indicatif::ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            pb.set_message(task.id.clone());
            pb.enable_steady_tick(Duration::from_millis(120));
            bars.insert(task.id.clone(), pb);
        }
    }

    fn finished(&mut self, f: &Finished) {
        if let Some((mp, bars)) = &mut self.bars {
            if let Some(pb) = bars.remove(&f.task.id) {
                pb.finish_and_clear();
                mp.remove(&pb);
            }
        }
        if !self.quiet || f.status == Status::Failed {
            self.print(&line(f));
        }
    }

    fn published(&mut self, duration: Duration) {
        if !self.quiet {
            use anstyle::AnsiColor::Green;
            let style = Green.on_default();
            self.print(&format!(
                "  {style}✓{style:#} {:<34} checkpointed and swapped in  ({})",
                "analytics.duckdb",
                seconds(duration)
            ));
        }
    }

    fn profiled(&mut self, p: &super::profile::Profiled) {
        if !self.quiet {
            use anstyle::AnsiColor::{Green, Yellow};
            let (style, mark) = if p.failed.is_empty() {
                (Green.on_default(), "✓")
            } else {
                (Yellow.on_default(), "!")
            };
            let mut failed = match p.failed.len() {
                0 => String::new(),
                n => format!(", {n} failed (see the warnings)"),
            };
            if p.deferred > 0 {
                failed.push_str(&format!(", {} left for the next run", p.deferred));
            }
            self.print(&format!(
                "  {style}{mark}{style:#} {:<34} {} table(s) profiled{failed}  ({})",
                "profiles",
                p.profiled.len(),
                seconds(p.duration)
            ));
        }
    }

    fn waiting(&mut self, what: &str, holder: &str) {
        self.print(&format!("Waiting for {what}, which {holder} is syncing…"));
    }

    fn cancelling(&mut self, running: usize) {
        self.print(&format!(
            "\nStopping: no new tasks start; waiting for {running} running task(s) to finish. \
             Nothing half-done is published. Press Ctrl-C again to abort now."
        ));
    }
}

/// `{"event": name}` followed by the fields of `fields` (an object): an event whose body is also
/// part of a run's document.
pub fn event(name: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut event = serde_json::Map::new();
    event.insert("event".into(), name.into());
    if let serde_json::Value::Object(fields) = fields {
        event.extend(fields);
    }
    serde_json::Value::Object(event)
}

/// One finished task as JSON: the `task_finished` event's fields, and an entry of a run's document.
pub fn task_json(f: &Finished) -> serde_json::Value {
    serde_json::json!({
        "task": f.task.id,
        "kind": f.task.kind,
        "target": f.task.target,
        "status": f.status,
        "rows": f.done.rows,
        "bytes": f.done.bytes,
        "duration_ms": f.duration.as_millis() as u64,
        "detail": f.done.detail,
        "warnings": f.done.warnings,
        "error": f.error,
    })
}

/// What the profile step did, as JSON: the `profiled` event's fields, and `profiled` of a run's
/// document.
pub fn profiled_json(p: &super::profile::Profiled) -> serde_json::Value {
    serde_json::json!({
        "tables": p.profiled,
        "failed": p.failed.iter().map(|(t, e)| serde_json::json!({"table": t, "error": e}))
            .collect::<Vec<_>>(),
        "deferred": p.deferred,
        "duration_ms": p.duration.as_millis() as u64,
    })
}

/// Nothing while the run goes (the caller prints one document at the end); waiting for another
/// process's lock is still said on stderr.
pub struct Silent;

impl Observer for Silent {
    fn started(&mut self, _: &Task) {}

    fn finished(&mut self, _: &Finished) {}

    fn waiting(&mut self, what: &str, holder: &str) {
        let _ = writeln!(
            anstream::stderr(),
            "Waiting for {what}, which {holder} is syncing…"
        );
    }

    fn cancelling(&mut self, _: usize) {}

    fn published(&mut self, _: Duration) {}
}

/// JSON events on stdout, one per line.
pub struct Json;

pub fn emit(event: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{event}");
    let _ = out.flush();
}

impl Observer for Json {
    fn started(&mut self, task: &Task) {
        emit(serde_json::json!({
            "event": "task_started",
            "task": task.id,
            "kind": task.kind,
            "target": task.target,
            "at": chrono::Utc::now().to_rfc3339(),
        }));
    }

    fn finished(&mut self, f: &Finished) {
        emit(event("task_finished", task_json(f)));
    }

    fn waiting(&mut self, what: &str, holder: &str) {
        // stderr: stdout carries only the documented events.
        let _ = writeln!(
            anstream::stderr(),
            "Waiting for {what}, which {holder} is syncing…"
        );
    }

    fn cancelling(&mut self, running: usize) {
        emit(serde_json::json!({"event": "cancelling", "running": running}));
    }

    fn published(&mut self, duration: Duration) {
        emit(serde_json::json!({"event": "published", "duration_ms": duration.as_millis() as u64}));
    }

    fn profiled(&mut self, p: &super::profile::Profiled) {
        emit(event("profiled", profiled_json(p)));
    }
}

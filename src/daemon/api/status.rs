//! `GET /api/status`: the whole truth about what the caller may read — each table's last sync,
//! status, rows and freshness against its schedule; each transform (ok / stale with the reason /
//! failed) and metric check; pending tasks with the error of their last attempt; running runs; the
//! watcher. The same state report as `pipeline status` ([`crate::state::report::status`]).

use super::response::{self, Pending, Status, Summary, TableState};
use super::{blocking, catalog, ApiError, ApiResult, AppState, Auth, RunFilter};
use crate::spec::schedule::Freshness;
use crate::state::report;
use crate::timestamp::rfc3339;
use axum::extract::State;
use axum::Json;

pub async fn status(State(shared): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Status>> {
    let instance = shared.instance();
    let snapshot = shared.snapshot();
    let next = shared
        .next_runs
        .lock()
        .map(|n| n.clone())
        .unwrap_or_default();
    let busy = shared.runs.busy();
    let state = shared.state.clone();
    let (now, tz) = (shared.clock.now(), instance.tz);
    let recorded = blocking(move || {
        let r = state.read().map_err(ApiError::internal)?;
        let mut status = report::status(&r).map_err(ApiError::internal)?;
        status.with_times(now, tz);
        Ok(status)
    })
    .await?;
    let reg = &snapshot.registered;
    let tables: Vec<TableState> = recorded
        .tables
        .into_iter()
        .filter(|t| {
            reg.tables
                .get(&t.id)
                .is_some_and(|d| caller.may_read(&d.access))
        })
        .map(|t| {
            // The scheduler's next time (it knows coalescing and missed runs) over the plain one.
            let next_run = next.get(&t.id).map(|n| rfc3339(*n));
            let running_in = busy.get(&t.id).cloned();
            TableState::of(t, next_run, running_in)
        })
        .collect();
    let readable = catalog::readable(reg, &caller);
    let transform_states: Vec<response::TransformInfo> = recorded
        .transform_states
        .into_iter()
        .filter(|t| readable.contains(&t.name.to_lowercase()))
        .map(Into::into)
        .collect();
    let metric_checks: Vec<response::CheckInfo> = recorded
        .metric_checks
        .into_iter()
        .filter(|c| catalog::metric_visible(reg, &caller, &readable, &c.metric))
        .map(Into::into)
        .collect();
    let filter = RunFilter::new(reg, &caller);
    let pending_tasks: Vec<Pending> = recorded
        .pending_tasks
        .into_iter()
        .filter(|p| filter.task_visible(&p.task))
        .map(Into::into)
        .collect();
    let runs = shared
        .runs
        .running()
        .into_iter()
        .filter_map(|r| filter.apply(response::Run::live(r)))
        .collect();
    let watcher = shared.watcher.lock().map(|w| w.clone()).unwrap_or_default();
    let summary = summarise(&tables, &transform_states, &metric_checks, &pending_tasks);
    Ok(Json(Status {
        instance: instance.name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        timezone: instance.tz.name().to_string(),
        started_at: rfc3339(shared.started_at),
        shutting_down: shared.shutting_down(),
        user: caller.user.clone(),
        groups: caller.groups.clone(),
        serial: snapshot.serial,
        last_apply: recorded.last_apply.map(Into::into),
        watcher,
        summary,
        runs,
        tables,
        transform_states,
        metric_checks,
        pending_tasks,
    }))
}

fn summarise(
    tables: &[TableState],
    transforms: &[response::TransformInfo],
    checks: &[response::CheckInfo],
    pending: &[Pending],
) -> Summary {
    let is = |s: &Option<String>, v: &str| s.as_deref() == Some(v);
    Summary {
        tables: tables.len(),
        tables_failed: tables
            .iter()
            .filter(|t| is(&t.last_status, "error") || is(&t.last_status, "failed"))
            .count(),
        tables_late: tables
            .iter()
            .filter(|t| matches!(t.freshness, Freshness::Late { .. }))
            .count(),
        tables_never_synced: tables
            .iter()
            .filter(|t| t.freshness == Freshness::NeverSynced)
            .count(),
        transforms_failed: transforms
            .iter()
            .filter(|t| is(&t.status, "failed"))
            .count(),
        transforms_stale: transforms.iter().filter(|t| is(&t.status, "stale")).count(),
        checks_failed: checks.iter().filter(|c| is(&c.status, "failed")).count(),
        checks_stale: checks.iter().filter(|c| is(&c.status, "stale")).count(),
        pending_tasks: pending.len(),
        pending_tasks_failed: pending
            .iter()
            .filter(|p| {
                p.last_attempt
                    .as_ref()
                    .is_some_and(|a| a.status != "ok" && a.status != "unchanged")
            })
            .count(),
    }
}

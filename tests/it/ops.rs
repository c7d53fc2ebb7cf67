//! `ops::apply` in process: the one apply the CLI and the daemon share, on a real instance (real
//! DuckDB state, real Parquet), observed through its hooks.

use crate::common::{Fmt, Instance};
use pipeline::exec::{self, scheduler::Finished, scheduler::Observer};
use pipeline::fslock::Lock;
use pipeline::instance;
use pipeline::ops::apply::{self, ApplyOptions, ApplyOutcome, Hooks, Refused, RunAfter};
use pipeline::ops::sync::SyncError;
use pipeline::plan::{self, Plan};
use pipeline::registry::registered::Registered;
use pipeline::registry::task::Task;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Silent;
impl Observer for Silent {
    fn started(&mut self, _: &Task) {}
    fn finished(&mut self, _: &Finished) {}
    fn cancelling(&mut self, _: usize) {}
    fn published(&mut self, _: Duration) {}
}

/// Records what the apply showed, and runs its tasks for real.
#[derive(Default)]
struct Recorder {
    reviewed: usize,
    applied: Vec<apply::Applied>,
    /// Whether another process-level taker could get the state lock while the tasks ran.
    lock_free_during_run: Option<bool>,
    /// Called at review, before anything is written.
    at_review: Option<Box<dyn FnMut()>>,
}

impl Hooks for Recorder {
    type Ran = Result<exec::Outcome, SyncError>;

    fn review(&mut self, _: &Plan) -> bool {
        self.reviewed += 1;
        if let Some(f) = &mut self.at_review {
            f();
        }
        true
    }

    fn applied(&mut self, a: &apply::Applied) {
        self.applied.push(a.clone());
    }

    fn run(
        &mut self,
        inst: &instance::Instance,
        registered: Registered,
        tasks: Vec<Task>,
    ) -> Self::Ran {
        let lock = Lock::acquire(&inst.data.state_lock(), "test", Duration::ZERO, |_| {});
        self.lock_free_during_run = Some(lock.is_ok());
        drop(lock);
        let opts = exec::Options::cli("apply", Some(2), false, Duration::from_secs(60));
        pipeline::ops::sync::run(inst, registered, tasks, &opts, &mut Silent)
    }
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        lock_timeout: Duration::from_secs(5),
        ..ApplyOptions::new("tester", "ops test")
    }
}

fn desired(root: &Path) -> plan::Desired {
    match plan::desired(root) {
        Ok(d) => d,
        Err(e) => panic!("the test instance is valid: {e}"),
    }
}

fn orders_parquet(inst: &Instance) -> PathBuf {
    inst.path().join("data/extracts/shop/data/orders.parquet")
}

#[test]
fn apply_runs_under_the_lock_and_a_second_apply_has_nothing_to_do() {
    let inst = Instance::new(Fmt::Yaml);
    let d = desired(inst.path());
    let mut hooks = Recorder::default();
    let out = apply::apply(&d, &opts(), &mut hooks).unwrap();
    let ApplyOutcome::Applied { applied, run, .. } = out else {
        panic!("expected an apply, got {out:?}")
    };
    assert_eq!(applied.serial, 1);
    assert!(applied.queued_tasks > 0);
    assert_eq!(hooks.reviewed, 1);
    assert_eq!(hooks.applied.len(), 1);
    let ran = run.expect("the tasks ran").expect("the run started");
    assert!(
        ran.ok(),
        "{:?}",
        ran.failures().map(|f| &f.error).collect::<Vec<_>>()
    );
    assert!(ran.published);
    assert_eq!(
        hooks.lock_free_during_run,
        Some(false),
        "the state lock is held through the run"
    );
    assert!(orders_parquet(&inst).is_file());
    assert_eq!(inst.state_int("SELECT count(*) FROM pending_tasks"), 0);

    // Nothing changed: no review, no write, no run.
    let mut again = Recorder::default();
    let out = apply::apply(&desired(inst.path()), &opts(), &mut again).unwrap();
    assert!(
        matches!(
            out,
            ApplyOutcome::NothingToDo {
                pending: 0,
                run: None,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(again.reviewed, 0);
    assert_eq!(inst.state_int("SELECT count(*) FROM apply_log"), 1);
}

#[test]
fn a_saved_plan_is_refused_once_the_state_moved_on() {
    let inst = Instance::new(Fmt::Yaml);
    let d = desired(inst.path());
    let saved = pipeline::ops::plan::against_state(&d, &[]).unwrap();
    assert_eq!(saved.state_serial, 0);
    let queue_only = ApplyOptions {
        run: RunAfter::Never,
        ..opts()
    };
    apply::apply(&d, &queue_only, &mut Recorder::default()).unwrap();
    let mut hooks = Recorder::default();
    let out = apply::apply(
        &d,
        &ApplyOptions {
            saved: Some(saved),
            ..queue_only
        },
        &mut hooks,
    )
    .unwrap();
    let ApplyOutcome::Refused(Refused::StalePlan(why)) = out else {
        panic!("expected a stale plan, got {out:?}")
    };
    assert!(
        why.contains("serial 0") && why.contains("serial 1"),
        "{why}"
    );
    assert_eq!(
        hooks.reviewed, 0,
        "a stale plan is never offered for review"
    );
    assert_eq!(inst.state_int("SELECT count(*) FROM apply_log"), 1);
}

/// The table `customers` removed from the specs, `orders` kept.
fn drop_customers(inst: &Instance) {
    inst.write_spec(
        "registry/shop",
        "tables:\n  - source: shop\n    source_table: orders\n",
    );
}

#[test]
fn a_removed_tables_parquet_is_purged_only_after_the_state_commit() {
    let inst = Instance::new(Fmt::Yaml);
    apply::apply(&desired(inst.path()), &opts(), &mut Recorder::default()).unwrap();
    let customers = inst
        .path()
        .join("data/extracts/shop/data/customers.parquet");
    assert!(customers.is_file());
    drop_customers(&inst);
    let purge = ApplyOptions {
        purge: true,
        ..opts()
    };

    // The commit fails (another writer moved the serial between plan and write): nothing is purged.
    let state = inst.state_path();
    let mut hooks = Recorder {
        at_review: Some(Box::new(move || {
            duckdb::Connection::open(&state)
                .unwrap()
                .execute_batch(
                    "UPDATE state_meta SET value = CAST(CAST(value AS INTEGER) + 1 AS VARCHAR) \
                     WHERE key = 'serial'",
                )
                .unwrap();
        })),
        ..Recorder::default()
    };
    let err = apply::apply(&desired(inst.path()), &purge, &mut hooks).unwrap_err();
    assert!(err.to_string().contains("stale"), "{err}");
    assert!(hooks.applied.is_empty());
    assert!(customers.is_file(), "a failed commit keeps the data");

    // The commit succeeds: then, and only then, the data goes.
    let mut hooks = Recorder {
        at_review: Some(Box::new({
            let customers = customers.clone();
            move || assert!(customers.is_file(), "nothing is purged before the commit")
        })),
        ..Recorder::default()
    };
    let out = apply::apply(&desired(inst.path()), &purge, &mut hooks).unwrap();
    let ApplyOutcome::Applied { applied, .. } = out else {
        panic!("expected an apply, got {out:?}")
    };
    assert!(applied.purged >= 1);
    assert!(!customers.exists());
    assert!(
        orders_parquet(&inst).is_file(),
        "only the removed table's data"
    );
    assert_eq!(
        inst.state_int("SELECT count(*) FROM table_registry WHERE id = 'shop.customers'"),
        0
    );
}

#[test]
fn without_purge_a_removed_tables_parquet_stays() {
    let inst = Instance::new(Fmt::Yaml);
    apply::apply(&desired(inst.path()), &opts(), &mut Recorder::default()).unwrap();
    drop_customers(&inst);
    let out = apply::apply(&desired(inst.path()), &opts(), &mut Recorder::default()).unwrap();
    assert!(matches!(out, ApplyOutcome::Applied { .. }), "{out:?}");
    assert!(inst
        .path()
        .join("data/extracts/shop/data/customers.parquet")
        .is_file());
}

#[test]
fn another_apply_waits_for_the_state_lock_and_gives_up_in_time() {
    let inst = Instance::new(Fmt::Yaml);
    let d = desired(inst.path());
    let held = Lock::acquire(
        &d.instance.data.state_lock(),
        "someone else",
        Duration::ZERO,
        |_| {},
    )
    .unwrap();
    let quick = ApplyOptions {
        lock_timeout: Duration::from_millis(200),
        ..opts()
    };
    let err = apply::apply(&d, &quick, &mut Recorder::default()).unwrap_err();
    assert!(err.is_transient(), "a held lock is worth retrying: {err}");
    assert!(!inst.state_path().exists(), "nothing was written");
    drop(held);
    let out = apply::apply(&d, &quick, &mut Recorder::default()).unwrap();
    assert!(matches!(out, ApplyOutcome::Applied { .. }), "{out:?}");
}

//! Benchmark of the Jira backfill (scripts/bench-jira): a fake Jira Cloud site
//! (tests/support/fake_jira.rs) with ISSUES generated issues over MONTHS months, backfilled into
//! monthly Parquet partitions in a temporary directory, then backfilled again (nothing may change).
//!
//!   bench_jira [ISSUES] [MONTHS] [THREADS]        defaults: 10000 24 6
//!
//! Baseline, in the same process against the same server: fetching every issue (with its remote
//! links) on the same number of threads, without mapping or writing anything. Prints figures;
//! asserts only that the second run rewrote no file.
#[path = "../tests/support/fake_jira.rs"]
#[allow(dead_code)] // a benchmark needs only part of the tests' API
mod fake_jira;

use pipeline::connectors::jira::backfill::{self, Options};
use pipeline::connectors::jira::client::{Client, Patience};
use pipeline::connectors::jira::partition::PartitionStore;
use pipeline::connectors::jira::rows::Mapper;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: ISSUES MONTHS THREADS"))
        .collect();
    let issues = args.first().copied().unwrap_or(10_000);
    let months = args.get(1).copied().unwrap_or(24);
    let threads = args.get(2).copied().unwrap_or(6);

    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let fake = fake_jira::FakeJira::start();
    let t = Instant::now();
    let keys = fake.populate(issues, &["OPS", "WEB", "DATA"], months);
    eprintln!("generated {} issues in {:.1?}", keys.len(), t.elapsed());

    let client = Client::new(&fake.url(), fake.email(), fake.token(), Patience::default());
    let mapper =
        Mapper::new(&client.fields().expect("fields"), &["Team".to_string()]).expect("mapper");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = PartitionStore::open(dir.path(), "jira", mapper.schema().clone()).expect("store");
    let options = Options {
        threads,
        ..Options::default()
    };

    // Baseline: the same fetches, nothing else.
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(key) = keys.get(i) else { return };
                client.fetch_issue(key).expect("fetch").expect("exists");
            });
        }
    });
    let fetch_only = t.elapsed();

    let t = Instant::now();
    let first = backfill::run(&client, &mapper, &store, &options, &mut |_| {}).expect("backfill");
    let first_time = t.elapsed();
    let t = Instant::now();
    let second =
        backfill::run(&client, &mapper, &store, &options, &mut |_| {}).expect("second backfill");
    let second_time = t.elapsed();
    assert_eq!(
        second.apply.files_written + second.apply.files_removed,
        0,
        "the second backfill changed files"
    );
    let t = Instant::now();
    store.publish().expect("publish");
    let publish = t.elapsed();

    if std::env::var_os("BENCH_JIRA_KEEP").is_some() {
        eprintln!("keeping {}", dir.path().display());
        std::mem::forget(dir);
    }
    let rate = |d: std::time::Duration| issues as f64 / d.as_secs_f64();
    println!(
        "Jira backfill, {issues} issues over {months} months, {threads} threads (release build):"
    );
    println!(
        "  baseline: fetch only            {:>8.2} s  {:>7.0} issues/s",
        fetch_only.as_secs_f64(),
        rate(fetch_only)
    );
    println!(
        "  backfill (fetch+map+write)      {:>8.2} s  {:>7.0} issues/s  ({} files written)",
        first_time.as_secs_f64(),
        rate(first_time),
        first.apply.files_written
    );
    println!(
        "  second backfill (no change)     {:>8.2} s  {:>7.0} issues/s  ({} files rewritten)",
        second_time.as_secs_f64(),
        rate(second_time),
        second.apply.files_written
    );
    println!(
        "  publish extract.duckdb          {:>8.2} s",
        publish.as_secs_f64()
    );
    println!(
        "  ratio backfill / fetch-only: {:.2}x",
        first_time.as_secs_f64() / fetch_only.as_secs_f64()
    );
}

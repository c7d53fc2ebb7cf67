//! Runs SQL statements on a DuckDB database with the same libduckdb `pipeline` links, printing how
//! long each took: the baselines of the benchmark scripts (scripts/bench-extract, bench-rebuild).
//!
//!   duckdb_sql DB|:memory: SQL [SQL...]      one line per statement: elapsed milliseconds
//!
//! Each argument runs with `execute_batch`, so one argument may hold several `;`-separated statements.
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((db, statements)) = args.split_first() else {
        eprintln!("usage: duckdb_sql DB|:memory: SQL [SQL...]");
        std::process::exit(2);
    };
    let conn = if db == ":memory:" {
        duckdb::Connection::open_in_memory()
    } else {
        duckdb::Connection::open(db)
    };
    let conn = conn.unwrap_or_else(|e| {
        eprintln!("duckdb_sql: cannot open {db}: {e}");
        std::process::exit(1);
    });
    for sql in statements {
        let start = Instant::now();
        if let Err(e) = conn.execute_batch(sql) {
            eprintln!("duckdb_sql: {e}\n  in: {sql}");
            std::process::exit(1);
        }
        println!("{:.1}", start.elapsed().as_secs_f64() * 1000.0);
    }
}

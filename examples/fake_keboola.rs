//! Runs the fake Keboola Storage API (tests/support/fake_keboola.rs) as a standalone server, for
//! benchmarks of the Keboola connector against a large table without a real Keboola project.
//!
//!   fake_keboola [--port N] [--table-rows N] [--slices N] [--columns N]
//!
//! Serves one generated table, `in.c-bench.events`, whose rows are computed while they are
//! downloaded (so a 1 GB export costs no memory), prints `url=…` and `token=…` lines, and serves
//! until killed.
#[path = "../tests/support/fake_keboola.rs"]
#[allow(dead_code)] // a server needs only part of the tests' API
mod fake_keboola;

use clap::Parser;
use std::io::Write as _;

#[derive(Parser)]
#[command(about = "Fake Keboola Storage API v2 serving one generated table, in.c-bench.events")]
struct Args {
    /// Port on 127.0.0.1; 0 picks a free one (printed on start).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Rows of in.c-bench.events.
    #[arg(long, default_value_t = 1_000_000)]
    table_rows: u64,
    /// Slices each export is split into.
    #[arg(long, default_value_t = 3)]
    slices: usize,
    /// Columns of in.c-bench.events, `id` included.
    #[arg(long, default_value_t = 8)]
    columns: usize,
}

fn main() {
    let args = Args::parse();
    if args.slices == 0 || args.columns == 0 {
        eprintln!("fake_keboola: --slices and --columns must be at least 1");
        std::process::exit(2);
    }
    let fake = fake_keboola::FakeKeboola::start_on_port(args.port).unwrap_or_else(|e| {
        eprintln!(
            "fake_keboola: cannot listen on 127.0.0.1:{}: {e}",
            args.port
        );
        std::process::exit(1);
    });
    fake.add_bucket("in.c-bench", "Benchmark data");
    fake.add_generated_table("in.c-bench.events", args.columns, args.table_rows);
    fake.set_slices(args.slices);
    println!("url={}", fake.url());
    println!("token={}", fake.token());
    println!(
        "table=in.c-bench.events rows={} columns={} slices={}",
        args.table_rows, args.columns, args.slices
    );
    // Scripts read the lines above from a pipe: make sure they leave before we block.
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

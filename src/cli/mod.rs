//! The command-line edge: argument parsing, logging setup, dispatch to one module per command.
//!
//! Commands stay thin: parse arguments, call the library, render. Exit codes (DESIGN.md §9): 0 ok,
//! 1 error (including invalid specs), 2 changes present (`plan --detailed-exitcode`).

mod init;
mod schema;
mod validate;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

const ABOUT: &str =
    "Declarative data pipelines: spec files in git → an always-fresh analytics DuckDB.";

const AFTER_HELP: &str = "\
Examples:
  pipeline init my-instance          scaffold a new instance
  pipeline validate                  check the specs in the current directory (use in CI)
  pipeline --dir my-instance validate --format github
  pipeline schema --out-dir .schemas write JSON Schemas for your editor

Docs: docs/specs.md (every spec key), docs/validate.md (checks and output formats).";

#[derive(Parser, Debug)]
#[command(name = "pipeline", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// Instance root: the directory holding config/, pipelines/, registry/ and metrics/.
    #[arg(
        long,
        short = 'C',
        global = true,
        env = "PIPELINE_DIR",
        default_value = "."
    )]
    dir: PathBuf,

    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Only errors on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check every spec file without touching data: syntax, schema, names, references, schedules,
    /// time zones, env vars, SQL and cycles. Exit 0 valid, 1 invalid.
    #[command(after_help = validate::AFTER_HELP)]
    Validate(validate::Args),
    /// Print JSON Schemas of the spec files, for YAML language servers and editors.
    #[command(after_help = schema::AFTER_HELP)]
    Schema(schema::Args),
    /// Create a new instance with commented example specs that validate.
    #[command(after_help = init::AFTER_HELP)]
    Init(init::Args),
}

fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "pipeline=debug,warn",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Validate(args) => validate::run(&cli.dir, args, cli.quiet),
        Command::Schema(args) => schema::run(args),
        Command::Init(args) => init::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let style = anstyle::AnsiColor::Red.on_default().bold();
            anstream::eprintln!("{style}error{style:#}: {e:#}");
            ExitCode::from(1)
        }
    }
}

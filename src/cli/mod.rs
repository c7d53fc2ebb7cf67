//! The command-line edge: argument parsing, logging setup, dispatch to one module per command.
//!
//! Commands stay thin: parse arguments, call the library, render. Exit codes (DESIGN.md §9): 0 ok,
//! 1 error (including invalid specs), 2 changes present (`plan --detailed-exitcode`).

mod admin;
mod apply;
mod catalog;
mod completions;
mod daemon;
mod fmt;
mod graph;
mod history;
mod init;
mod jira;
mod login;
mod mcp;
mod metrics;
mod output;
mod plan;
mod profile;
mod pull;
mod query;
mod run;
mod schema;
mod sources;
mod status;
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
  pipeline fmt --check               are the spec files in the canonical layout? (pipeline fmt rewrites them)
  pipeline plan                      what apply would change, Terraform-style
  pipeline apply                     register the changes and sync them (asks first; --auto-approve in scripts)
  pipeline run                       sync every registered table now; publish analytics.duckdb
  pipeline query \"show tables\"     query analytics.duckdb (read-only)
  pipeline graph --format mermaid    the task DAG
  pipeline catalog export            a data dictionary with lineage (Markdown or JSON)
  pipeline status                    registered tables, last and next sync, pending tasks
  pipeline profile orders            a table's profile: nulls, distinct values, min/max, top values
  pipeline daemon                    run schedules, apply saved spec changes, serve the HTTP API
  pipeline jira backfill tracker     fill a jira source from a JQL search
  pipeline --dir my-instance validate --format github
  pipeline schema --out-dir .schemas write JSON Schemas for your editor
  pipeline login --server URL && pipeline pull --workspace ~/data   analysts: a local copy (docs/analyst.md)

Docs: docs/specs.md (every spec key), docs/validate.md (checks and output formats),
docs/plan-apply.md (plans, the state lock, saved plans, status and history), docs/engine.md (runs),
docs/daemon.md (the daemon and its API), docs/catalog.md (catalogue export and import).";

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

    /// More log output (-v: debug, -vv: trace, for pipeline's own lines). RUST_LOG overrides.
    /// Credentials are masked at every level.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Only errors on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,

    /// Log line format on stderr: text, or json (one object per line, for log shippers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check every spec file without touching data: syntax, schema, names, references, schedules,
    /// time zones, env vars, SQL and cycles. Exit 0 valid, 1 invalid.
    #[command(after_help = validate::AFTER_HELP)]
    Validate(validate::Args),
    /// Rewrite spec files in the canonical layout, comments kept; --check for CI. Exit 1 when a
    /// file does not parse (or, with --check/--diff, is not formatted).
    #[command(after_help = fmt::AFTER_HELP)]
    Fmt(fmt::Args),
    /// Show what apply would change in the registry (+ create, ~ update, -/+ replace, - delete) and
    /// the tasks it would queue. Exit 2 with --detailed-exitcode when there are changes.
    #[command(after_help = plan::AFTER_HELP)]
    Plan(plan::Args),
    /// Apply the specs (or a saved plan) to the registry under the state lock, after confirmation.
    #[command(after_help = apply::AFTER_HELP)]
    Apply(apply::Args),
    /// Sync registered tables now: extract, rebuild, publish analytics, build transforms, check
    /// metrics. Exit 1 if any task failed.
    #[command(after_help = run::AFTER_HELP)]
    Run(run::Args),
    /// Run SQL on analytics.duckdb (read-only) and print the result as a table, CSV or JSON.
    #[command(after_help = query::AFTER_HELP)]
    Query(query::Args),
    /// Business metrics: list, show, run, check against the data, import the older layout.
    #[command(after_help = metrics::AFTER_HELP)]
    Metrics(metrics::Args),
    /// The data catalogue: export a data dictionary with lineage, import from OpenMetadata.
    #[command(after_help = catalog::AFTER_HELP)]
    Catalog(catalog::Args),
    /// Sources: discover the tables a source holds and write registry entries for them.
    #[command(after_help = sources::AFTER_HELP)]
    Sources(sources::Args),
    /// Print the task DAG of a sync or a saved plan (DOT, Mermaid or JSON).
    #[command(after_help = graph::AFTER_HELP)]
    Graph(graph::Args),
    /// What is registered: tables with their last sync and next run, pending tasks, spec drift.
    #[command(after_help = status::AFTER_HELP)]
    Status(status::Args),
    /// Past applies and syncs, newest first.
    #[command(after_help = history::AFTER_HELP)]
    History(history::Args),
    /// A table's profile: rows, per column nulls, distinct values, min/max, top values, a sample.
    #[command(after_help = profile::AFTER_HELP)]
    Profile(profile::Args),
    /// Run schedules, apply spec changes as they are saved, and serve the HTTP API.
    #[command(after_help = daemon::AFTER_HELP)]
    Daemon(daemon::Args),
    /// Jira sources: `jira backfill <source>` fills the partitions from a JQL search.
    #[command(after_help = jira::AFTER_HELP)]
    Jira(jira::Args),
    /// Administration: API tokens for users and groups.
    #[command(after_help = admin::AFTER_HELP)]
    Admin(admin::Args),
    /// Print the shell completion script for bash, zsh or fish.
    #[command(after_help = completions::AFTER_HELP)]
    Completions(completions::Args),
    /// Print JSON Schemas of the spec files, for YAML language servers and editors.
    #[command(after_help = schema::AFTER_HELP)]
    Schema(schema::Args),
    /// Create a new instance with commented example specs that validate.
    #[command(after_help = init::AFTER_HELP)]
    Init(init::Args),
    /// Analysts: store a token for a server (checked first; never echoed).
    #[command(after_help = login::AFTER_HELP)]
    Login(login::Args),
    /// Analysts: forget a server's stored token.
    #[command(after_help = login::LOGOUT_AFTER_HELP)]
    Logout(login::LogoutArgs),
    /// Analysts: download what you may read into a workspace, with analytics.duckdb and AGENTS.md.
    #[command(after_help = pull::AFTER_HELP)]
    Pull(pull::Args),
    /// Analysts: serve the workspace to AI agents as an MCP server on stdio.
    #[command(after_help = mcp::AFTER_HELP)]
    Mcp(mcp::Args),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// Logs on stderr. A service (the daemon) logs what it does at info; commands only warnings.
///
/// `-v`/`-vv` raise only our own targets (`pipeline=…`): dependencies stay at `warn`, as their
/// debug lines are not ours to vouch for (an HTTP client prints request headers and URLs there).
/// Whatever the level, and whatever `RUST_LOG` enables, every line goes through
/// [`crate::redact::RedactingWriter`], which masks registered secrets and credential-shaped values
/// (docs/security.md, "Secrets"). `log`-crate records (ureq's) reach the same subscriber through
/// tracing-subscriber's `tracing-log` bridge, so they are filtered and masked the same way.
fn init_tracing(verbose: u8, quiet: bool, service: bool, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) if service => "pipeline=info,warn",
        (false, 0) => "warn",
        (false, 1) => "pipeline=debug,warn",
        _ => "pipeline=trace,warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::redact::RedactingWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let service = matches!(cli.command, Command::Daemon(_));
    init_tracing(cli.verbose, cli.quiet, service, cli.log_format);
    output::set_quiet(cli.quiet);
    let result = match cli.command {
        Command::Validate(args) => validate::run(&cli.dir, args, cli.quiet),
        Command::Fmt(args) => fmt::run(&cli.dir, args, cli.quiet),
        Command::Plan(args) => plan::run(&cli.dir, args),
        Command::Apply(args) => apply::run(&cli.dir, args, cli.quiet),
        Command::Run(args) => run::run(&cli.dir, args, cli.quiet),
        Command::Query(args) => query::run(&cli.dir, args),
        Command::Graph(args) => graph::run(&cli.dir, args),
        Command::Metrics(args) => metrics::run(&cli.dir, args),
        Command::Catalog(args) => catalog::run(&cli.dir, args),
        Command::Sources(args) => sources::run(&cli.dir, args),
        Command::Status(args) => status::run(&cli.dir, args),
        Command::History(args) => history::run(&cli.dir, args),
        Command::Profile(args) => profile::run(&cli.dir, args),
        Command::Daemon(args) => daemon::run(&cli.dir, args),
        Command::Admin(args) => admin::run(&cli.dir, args),
        Command::Jira(args) => jira::run(&cli.dir, args, cli.quiet),
        Command::Schema(args) => schema::run(args),
        Command::Completions(args) => completions::run(args),
        Command::Init(args) => init::run(args),
        Command::Login(args) => login::run(args),
        Command::Logout(args) => login::logout(args),
        Command::Pull(args) => pull::run(&cli.dir, args, cli.quiet),
        Command::Mcp(args) => mcp::run(&cli.dir, args),
    };
    match result {
        Ok(code) => code,
        // `pipeline plan | head`: the reader left; that is not an error worth a message.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        // A second Ctrl-C during a run: leave at once, as a shell expects of SIGINT.
        Err(e) if is_interrupted(&e) => {
            eprintln!("\nAborted.");
            ExitCode::from(130)
        }
        Err(e) => {
            let style = anstyle::AnsiColor::Red.on_default().bold();
            // The net under every error message: a credential that slipped into one is masked.
            let message = format!("{e:#}");
            anstream::eprintln!("{style}error{style:#}: {}", crate::redact::redact(&message));
            ExitCode::from(1)
        }
    }
}

fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<crate::exec::scheduler::Interrupted>()
            .is_some()
    })
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod help_tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every command and subcommand has a summary and teaches by example (issue 20: "examples in
    /// every --help").
    #[test]
    fn every_command_has_examples_in_its_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                let after = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                if !after.contains("Example") {
                    missing.push(format!("{name}: no examples"));
                }
                if sub.get_about().is_none() {
                    missing.push(format!("{name}: no summary"));
                }
                walk(sub, &name, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "pipeline", &mut missing);
        // clap's generated `help` subcommand has neither.
        missing.retain(|m| !m.contains(" help"));
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}

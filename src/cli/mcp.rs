//! `pipeline mcp`: the workspace as a Model Context Protocol server on stdio (docs/analyst.md).

use crate::workspace::credentials;
use crate::workspace::mcp::McpServer;
use crate::workspace::Workspace;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline mcp                                    serve the workspace you are in
  pipeline mcp --workspace ~/data

An MCP client starts it; in its config (e.g. .mcp.json for Claude Code):
  {\"mcpServers\": {\"pipeline\": {\"command\": \"pipeline\", \"args\": [\"mcp\", \"--workspace\", \"/home/me/data\"]}}}

Tools: list_tables, describe_table, list_metrics, show_metric, query (local, or server=true), pull.
Messages are JSON-RPC 2.0, one per line on stdin and stdout; logs go to stderr.";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The workspace (default: the workspace you are in, else the current directory).
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// The server for `query` with server=true and `pull` (default: the workspace's).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

pub fn run(dir: &Path, args: Args) -> Result<ExitCode> {
    let ws = match &args.workspace {
        Some(d) => Workspace::at(d),
        None => super::pull::workspace_here(dir).unwrap_or_else(|| Workspace::at(dir)),
    };
    let server = args
        .server
        .as_deref()
        .map(credentials::normalize_server)
        .transpose()?;
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    McpServer::new(ws, server).serve(stdin, stdout)?;
    Ok(ExitCode::SUCCESS)
}

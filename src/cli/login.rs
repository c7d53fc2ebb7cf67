//! `pipeline login` and `pipeline logout`: keep an API token for a server in the user's config
//! directory (docs/analyst.md).

use crate::workspace::client::Client;
use crate::workspace::credentials::{self, Login, TOKEN_ENV};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline login --server https://data.example.com          asks for the token (not echoed)
  echo \"$TOKEN\" | pipeline login --server http://127.0.0.1:8080
  PIPELINE_TOKEN=… pipeline login --server http://127.0.0.1:8080

The token is checked against the server, then stored in $XDG_CONFIG_HOME/pipeline/credentials.toml
(~/.config/pipeline/ by default; PIPELINE_CONFIG_DIR overrides) with mode 0600. The server becomes
the default for `pull`, `query --server` and `mcp`. An admin creates tokens with
`pipeline admin token create --user NAME`.";

pub const LOGOUT_AFTER_HELP: &str = "\
Examples:
  pipeline logout                                 forget the default server's token
  pipeline logout --server http://127.0.0.1:8080";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The daemon's URL, e.g. https://data.example.com or http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    server: String,
}

#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    /// The server to forget (default: the default server).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

/// Reads one line from the terminal with echo off, so the token never shows on screen.
fn read_hidden(prompt: &str) -> Result<String> {
    use std::os::fd::AsRawFd;
    let stdin = std::io::stdin();
    let fd = stdin.as_raw_fd();
    eprint!("{prompt}");
    // SAFETY: termios is plain data; tcgetattr fills it or fails.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let have_tty = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have_tty {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if have_tty {
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    read.context("reading the token")?;
    Ok(line.trim().to_string())
}

pub fn run(args: Args) -> Result<ExitCode> {
    let server = credentials::normalize_server(&args.server)?;
    let token = match std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        Some(t) => t.trim().to_string(),
        None if std::io::stdin().is_terminal() => read_hidden(&format!("Token for {server}: "))?,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the token from stdin")?;
            line.trim().to_string()
        }
    };
    if token.is_empty() {
        bail!("no token given: pipe it on stdin or set {TOKEN_ENV}");
    }
    let client = Client::new(Login {
        server: server.clone(),
        token: token.clone(),
    });
    client.verify()?;
    let path = credentials::store(&server, &token)?;
    anstream::println!("logged in to {server} (token stored in {})", path.display());
    Ok(ExitCode::SUCCESS)
}

pub fn logout(args: LogoutArgs) -> Result<ExitCode> {
    let server = args
        .server
        .as_deref()
        .map(credentials::normalize_server)
        .transpose()?;
    match credentials::forget(server.as_deref())? {
        Some(s) => anstream::println!("logged out of {s}"),
        None => anstream::println!(
            "not logged in{}",
            server.map(|s| format!(" to {s}")).unwrap_or_default()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

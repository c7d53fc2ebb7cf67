//! `pipeline admin`: API tokens (and the users and groups they belong to).

use super::output::{Format, TextTable};
use crate::state::{auth, StateStore};
use anyhow::{bail, Result};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline admin token create --user ann --group analysts
                                       print a new token for ann (shown once: store it now)
  pipeline admin token create --user ops --group admin
                                       admins read every table whatever its `access`
  pipeline admin token list            every token: id, user, groups, last use, revoked
  pipeline admin token revoke 3f9a2c1d the token with this id (or prefix) stops working at once

Tokens are stored as SHA-256 hashes in data/state/system.duckdb; groups belong to the user, and a
table's `access: [groups]` decides who may see and query it through the API.";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// API bearer tokens: create, list, revoke.
    #[command(
        subcommand,
        after_help = "Examples:\n  pipeline admin token create --user ann@example.com --group analysts\n  \
        pipeline admin token list\n  pipeline admin token revoke 3f2a"
    )]
    Token(TokenCommand),
}

#[derive(clap::Subcommand, Debug)]
enum TokenCommand {
    /// Create a token for a user (created if new), optionally adding the user to groups.
    #[command(
        after_help = "Examples:\n  pipeline admin token create --user ann@example.com --group analysts\n  \
        pipeline admin token create --user ci-bot --format json   token, id, user and groups as JSON"
    )]
    Create {
        /// The user the token acts as (e.g. an e-mail or a service name).
        #[arg(long)]
        user: String,
        /// Add the user to this group (repeatable).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// human: the token alone on stdout (notes on stderr); json: `{"token", "id", "user", "groups"}`.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List tokens (never the tokens themselves).
    #[command(
        after_help = "Examples:\n  pipeline admin token list\n  pipeline admin token list --format json"
    )]
    List {
        /// human: a table; json: a list of tokens (never the secrets).
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Revoke a token by id (or by the prefix shown in `list`).
    #[command(
        after_help = "Examples:\n  pipeline admin token revoke 3f2a   the id prefix `pipeline admin token list` shows"
    )]
    Revoke {
        #[arg(value_name = "ID")]
        id: String,
    },
}

fn valid_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@+-".contains(c));
    if !ok {
        bail!("invalid {kind} `{name}`: use letters, digits and . _ @ + - (at most 128)");
    }
    Ok(())
}

pub fn run(dir: &Path, args: Args) -> Result<ExitCode> {
    let Command::Token(cmd) = args.command;
    let store = StateStore::of(&super::output::instance(dir)?.data);
    let who = crate::fslock::os_user();
    let mut out = anstream::stdout().lock();
    match cmd {
        TokenCommand::Create {
            user,
            groups,
            format,
        } => {
            valid_name("user", &user)?;
            for g in &groups {
                valid_name("group", g)?;
            }
            let (info, secret) = auth::create_token(&mut store.write()?, &user, &groups, &who)?;
            match format {
                Format::Json => writeln!(
                    out,
                    "{}",
                    serde_json::json!({"token": secret, "id": info.id, "user": info.user, "groups": info.groups})
                )?,
                Format::Human => {
                    writeln!(out, "{secret}")?;
                    drop(out);
                    eprintln!(
                        "Token {} for {} (groups: {}). It is shown only now: store it in your secret manager.\n\
                         Use it as `Authorization: Bearer <token>`; revoke with `pipeline admin token revoke {}`.",
                        info.id,
                        info.user,
                        if info.groups.is_empty() { "none".into() } else { info.groups.join(", ") },
                        info.id
                    );
                }
            }
        }
        TokenCommand::List { format } => {
            let Some(r) = store.read_if_exists()? else {
                bail!("there is no state yet: run `pipeline apply` first");
            };
            let tokens = auth::list_tokens(&r)?;
            drop(r);
            match format {
                Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&tokens)?)?,
                Format::Human => {
                    let mut t = TextTable::with_headers(
                        [
                            "id",
                            "user",
                            "groups",
                            "prefix",
                            "created",
                            "last used",
                            "revoked",
                        ]
                        .map(String::from)
                        .to_vec(),
                    );
                    for k in &tokens {
                        t.row(vec![
                            k.id.clone(),
                            k.user.clone(),
                            k.groups.join(","),
                            format!("{}…", k.prefix),
                            k.created_at.clone(),
                            k.last_used_at.clone().unwrap_or_else(|| "-".into()),
                            k.revoked_at.clone().unwrap_or_else(|| "-".into()),
                        ]);
                    }
                    write!(out, "{}", t.render())?;
                    writeln!(out, "{} token(s)", tokens.len())?;
                }
            }
        }
        TokenCommand::Revoke { id } => match auth::revoke(&mut store.write()?, &id, &who)? {
            Some(t) => writeln!(out, "Revoked token {} of {}.", t.id, t.user)?,
            None => bail!("no token `{id}`; `pipeline admin token list` shows the ids"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

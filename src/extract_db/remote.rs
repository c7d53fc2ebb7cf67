//! `_remote_attach` rows: which may be attached, and attaching them.
//!
//! An extract written by any tool can ask us to ATTACH something, so each row is checked before it
//! becomes SQL: the alias must be a safe identifier and not a name we use, the extension must be on
//! the instance's allowlist (`remote_attach.extensions`; DuckDB's own file format, `duckdb`, needs no
//! extension and is always allowed), and the token env var must be on `remote_attach.token_envs` and
//! set. The token is read from the environment at attach time and never written anywhere; error
//! messages are scrubbed of it.
//!
//! An extension is loaded from the instance's extension store ([`crate::extensions`]) before the
//! ATTACH; the token becomes a temporary DuckDB secret of the extension's type, under the parameter
//! that extension takes ([`credential_parameter`]: `PASSWORD` for the database extensions, `TOKEN`
//! otherwise), and an ATTACH of `postgres` or `mysql` names that secret.

use crate::extensions::ExtensionStore;
use crate::names;
use crate::quote;
use duckdb::Connection;

/// One `_remote_attach` row.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RemoteAttach {
    pub alias: String,
    pub extension: String,
    pub url: String,
    /// The NAME of the env var holding the token, never the token.
    pub token_env: Option<String>,
}

/// What the instance allows extracts to attach.
#[derive(Clone, Debug, Default)]
pub struct RemotePolicy {
    pub extensions: Vec<String>,
    pub token_envs: Vec<String>,
    /// Where the extensions are loaded from (the instance's `extensions` settings).
    pub store: ExtensionStore,
}

impl RemotePolicy {
    /// The policy `instance` sets (`remote_attach`, `extensions`).
    pub fn of_instance(instance: &crate::instance::Instance) -> Self {
        RemotePolicy {
            extensions: instance.remote_extensions.clone(),
            token_envs: instance.remote_token_envs.clone(),
            store: instance.extensions.clone(),
        }
    }
}

/// The attach type of DuckDB's own database files.
pub const NATIVE: &str = "duckdb";

/// Extensions whose rows only a reader attaches: the writer of an extract neither loads them nor
/// connects. BigQuery's needs a Google token the reader obtains (the seed system writes an empty
/// `token_env` for it) and network access at every write otherwise.
pub const ATTACHED_AT_READ_TIME: &[&str] = &["bigquery"];

/// Whether `row` is attached only by readers (see [`ATTACHED_AT_READ_TIME`]).
pub fn attaches_at_read_time(row: &RemoteAttach) -> bool {
    ATTACHED_AT_READ_TIME
        .iter()
        .any(|e| e.eq_ignore_ascii_case(&row.extension))
}

pub use crate::names::is_reserved_catalog;

/// Why a row was not attached. The message never contains a token.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("alias `{0}` is not a safe identifier")]
    Alias(String),
    #[error("alias `{0}` is reserved")]
    Reserved(String),
    #[error("extension `{0}` is not allowed: add it to remote_attach.extensions in config/instance.yaml if you trust it")]
    Extension(String),
    #[error("token env var `{0}` is not allowed: add it to remote_attach.token_envs in config/instance.yaml")]
    TokenEnvNotAllowed(String),
    #[error("token env var `{0}` is not set")]
    TokenEnvUnset(String),
    #[error("the url is empty")]
    Url,
    #[error("ATTACH failed: {0}")]
    Attach(String),
    /// The extension could not be loaded (not installed, or not a valid build).
    #[error("{0}")]
    Load(String),
}

/// The `CREATE SECRET` parameter an extension takes a `_remote_attach` row's credential under, and
/// whether its ATTACH must name the secret (the database extensions only use a secret named in the
/// ATTACH, or their default one; the secret's other parameters merge with the URL's).
pub fn credential_parameter(extension: &str) -> (&'static str, bool) {
    match extension {
        "postgres" | "mysql" => ("PASSWORD", true),
        _ => ("TOKEN", false),
    }
}

impl RemotePolicy {
    /// Checks a row against the policy; returns the token to use, if any.
    pub fn check(&self, row: &RemoteAttach) -> Result<Option<String>, Refusal> {
        if !names::is_identifier(&row.alias) {
            return Err(Refusal::Alias(row.alias.clone()));
        }
        if is_reserved_catalog(&row.alias) {
            return Err(Refusal::Reserved(row.alias.clone()));
        }
        let ext = row.extension.as_str();
        let native = ext.is_empty() || ext.eq_ignore_ascii_case(NATIVE);
        let allowed = names::is_identifier(ext) && self.extensions.iter().any(|e| e == ext);
        if !native && !allowed {
            return Err(Refusal::Extension(ext.to_string()));
        }
        if row.url.trim().is_empty() {
            return Err(Refusal::Url);
        }
        match &row.token_env {
            None => Ok(None),
            Some(env) if env.is_empty() => Ok(None),
            Some(env) => {
                if !names::is_env_var(env) || !self.token_envs.iter().any(|e| e == env) {
                    return Err(Refusal::TokenEnvNotAllowed(env.clone()));
                }
                // Registered as a secret as it is read (crate::redact): no log line shows it.
                crate::redact::secret_env(env)
                    .map(Some)
                    .ok_or_else(|| Refusal::TokenEnvUnset(env.clone()))
            }
        }
    }
}

/// Attaches `row` read-only to `conn` under its alias, if the policy allows it.
pub fn attach(conn: &Connection, row: &RemoteAttach, policy: &RemotePolicy) -> Result<(), Refusal> {
    let token = policy.check(row)?;
    let alias = quote::ident(&row.alias).ok_or_else(|| Refusal::Alias(row.alias.clone()))?;
    let ext = row.extension.as_str();
    let native = ext.is_empty() || ext.eq_ignore_ascii_case(NATIVE);
    let scrub = |e: duckdb::Error| {
        let mut text = e.to_string();
        if let Some(t) = &token {
            text = text.replace(t.as_str(), "<redacted>");
        }
        Refusal::Attach(text)
    };
    let sql = if native {
        format!("ATTACH {} AS {alias} (READ_ONLY)", quote::literal(&row.url))
    } else {
        // Installed beforehand in the instance's extension directory (offline: from its PyPI
        // wheel, scripts/fetch-extensions), or from its repository.
        policy
            .store
            .load(conn, ext)
            .map_err(|e| Refusal::Load(e.to_string()))?;
        if ext == "mysql" {
            // MySQL TIMESTAMP values are read in UTC, as the mysql connector reads them; and the
            // extension's aggregate push-down is off: in 1.5.5 it fails to bind an aliased
            // aggregate over a view of an attached table (`SELECT count(*) AS n FROM v` is an
            // INTERNAL error), which is exactly how analytics reads remote tables.
            conn.execute_batch(
                "SET mysql_session_time_zone = '+00:00'; SET mysql_aggregate_pushdown_enabled = false;",
            )
            .map_err(scrub)?;
        }
        let (parameter, named) = credential_parameter(ext);
        let secret = quote::ident(&format!("{}_token", row.alias))
            .unwrap_or_else(|| "\"remote_token\"".into());
        let mut options = format!("TYPE {ext}, READ_ONLY");
        if let Some(t) = &token {
            conn.execute_batch(&format!(
                "CREATE OR REPLACE TEMPORARY SECRET {secret} (TYPE {ext}, {parameter} {})",
                quote::literal(t)
            ))
            .map_err(scrub)?;
            if named {
                options.push_str(&format!(", SECRET {secret}"));
            }
        }
        format!("ATTACH {} AS {alias} ({options})", quote::literal(&row.url))
    };
    conn.execute_batch(&sql).map_err(scrub)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(alias: &str, ext: &str, token: Option<&str>) -> RemoteAttach {
        RemoteAttach {
            alias: alias.into(),
            extension: ext.into(),
            url: "x".into(),
            token_env: token.map(String::from),
        }
    }

    #[test]
    fn the_policy_refuses_what_is_not_allowed() {
        let p = RemotePolicy {
            extensions: vec!["postgres".into()],
            token_envs: vec!["PIPELINE_TEST_TOKEN_UNSET".into()],
            ..RemotePolicy::default()
        };
        assert_eq!(p.check(&row("a", "duckdb", None)), Ok(None));
        assert_eq!(p.check(&row("a", "", None)), Ok(None));
        assert!(matches!(
            p.check(&row("a", "httpfs", None)),
            Err(Refusal::Extension(_))
        ));
        assert!(matches!(
            p.check(&row("a;drop", "duckdb", None)),
            Err(Refusal::Alias(_))
        ));
        assert!(matches!(
            p.check(&row("memory", "duckdb", None)),
            Err(Refusal::Reserved(_))
        ));
        assert!(matches!(
            p.check(&row("a", "postgres", Some("OTHER"))),
            Err(Refusal::TokenEnvNotAllowed(_))
        ));
        assert!(matches!(
            p.check(&row("a", "postgres", Some("PIPELINE_TEST_TOKEN_UNSET"))),
            Err(Refusal::TokenEnvUnset(_))
        ));
    }
}

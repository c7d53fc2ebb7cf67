//! `_remote_attach` rows: which may be attached, and attaching them.
//!
//! An extract written by any tool can ask us to ATTACH something, so each row is checked before it
//! becomes SQL: the alias must be a safe identifier and not a name we use, the extension must be on
//! the instance's allowlist (`remote_attach.extensions`; DuckDB's own file format, `duckdb`, needs no
//! extension and is always allowed), and the token env var must be on `remote_attach.token_envs` and
//! set. The token is read from the environment at attach time and never written anywhere; error
//! messages are scrubbed of it.

use crate::quote;
use crate::spec::names;
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

pub use crate::spec::names::is_reserved_catalog;

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
        // The extension must be installed beforehand (offline: from its PyPI wheel, DESIGN.md §11).
        conn.execute_batch(&format!("LOAD {ext}")).map_err(|e| {
            // Said as what it is: the extension is missing here, not the remote refusing us.
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            Refusal::Attach(format!(
                "the DuckDB extension `{ext}` cannot be loaded ({first}); install it where \
                 analytics is read"
            ))
        })?;
        if let Some(t) = &token {
            conn.execute_batch(&format!(
                "CREATE OR REPLACE TEMPORARY SECRET {} (TYPE {ext}, TOKEN {})",
                quote::ident(&format!("{}_token", row.alias))
                    .unwrap_or_else(|| "\"remote_token\"".into()),
                quote::literal(t)
            ))
            .map_err(scrub)?;
        }
        format!(
            "ATTACH {} AS {alias} (TYPE {ext}, READ_ONLY)",
            quote::literal(&row.url)
        )
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

//! The Jira Cloud connector's building blocks: a source whose tables are produced by the connector
//! (pushed by webhooks, filled by a backfill), not pulled on a schedule by [`crate::extract`].
//!
//! In the order data flows through them:
//! - [`webhook`]: a delivery's `X-Hub-Signature` checked, its body read into an [`webhook::Event`]
//!   that says which issues to refetch (or delete).
//! - [`client`]: REST v3 over blocking HTTP: an issue with its complete changelog and comments,
//!   its remote links, the field metadata, JQL search pages; retries on 429/5xx.
//! - [`adf`]: rich text (Atlassian Document Format) → plain text, links kept.
//! - [`rows`]: a fetched issue → the rows of the six tables, with explicit DuckDB types.
//! - [`partition`]: the monthly Parquet partitions of one source, rewritten aside under a
//!   per-partition lock, and the source's `extract.duckdb` over them.
//! - [`backfill`]: JQL search → fetch (bounded parallelism) → rows → partitions, idempotently.
//!
//! Not here yet: the daemon route, the `pipeline jira backfill` command and the periodic
//! consistency check (docs/jira.md, "What remains to wire").

pub mod adf;
pub mod backfill;
pub mod client;
pub mod consistency;
pub mod partition;
pub mod rows;
pub mod webhook;

use serde_json::Value;

/// A `type: jira` source's connection, as the connector reads it.
///
/// ```yaml
/// connection:
///   url: https://acme.atlassian.net
///   email_env: JIRA_EMAIL          # or `email: bot@acme.com`
///   token_env: JIRA_API_TOKEN
///   webhook_secret_env: JIRA_WEBHOOK_SECRET
///   jql: project in (OPS, WEB)     # what a backfill reads (default: every issue visible)
///   promote: [Team, Severity]      # custom fields that also get a column of their own
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct JiraConfig {
    /// The site, without a trailing slash.
    pub url: String,
    pub email: EmailSource,
    /// Name of the environment variable holding the API token.
    pub token_env: String,
    pub webhook_secret_env: Option<String>,
    /// JQL a backfill reads by default.
    pub jql: Option<String>,
    /// Readable names of custom fields promoted to columns of `issues`.
    pub promote: Vec<String>,
}

/// Where the account e-mail for basic auth comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum EmailSource {
    Literal(String),
    Env(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("jira connection: {0}")]
    Invalid(String),
    #[error("jira connection: environment variable `{0}` is not set")]
    EnvUnset(String),
}

impl JiraConfig {
    /// Reads a connection object. Secrets are named by environment variable only.
    pub fn from_connection(connection: &Value) -> Result<JiraConfig, ConfigError> {
        let s = |key: &str| -> Result<Option<String>, ConfigError> {
            match connection.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(v)) if !v.trim().is_empty() => Ok(Some(v.trim().to_string())),
                Some(_) => Err(ConfigError::Invalid(format!(
                    "`{key}` must be a non-empty string"
                ))),
            }
        };
        let url = s("url")?.ok_or_else(|| ConfigError::Invalid("`url` is required".into()))?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ConfigError::Invalid(format!(
                "`url` must start with https:// (got `{url}`)"
            )));
        }
        let email = match (s("email")?, s("email_env")?) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "give `email` or `email_env`, not both".into(),
                ))
            }
            (Some(e), None) => EmailSource::Literal(e),
            (None, Some(env)) => EmailSource::Env(env),
            (None, None) => {
                return Err(ConfigError::Invalid(
                    "`email_env` (or `email`) is required for basic auth".into(),
                ))
            }
        };
        let token_env = s("token_env")?
            .ok_or_else(|| ConfigError::Invalid("`token_env` is required".into()))?;
        let promote = match connection.get("promote") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| s.trim().to_string())
                        .ok_or_else(|| {
                            ConfigError::Invalid("`promote` must be a list of field names".into())
                        })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ConfigError::Invalid(
                    "`promote` must be a list of field names".into(),
                ))
            }
        };
        Ok(JiraConfig {
            url: url.trim_end_matches('/').to_string(),
            email,
            token_env,
            webhook_secret_env: s("webhook_secret_env")?,
            jql: s("jql")?,
            promote,
        })
    }

    /// The e-mail and API token, read from the environment now. Both are registered with
    /// [`crate::redact`] (the token always; the e-mail too when it comes from the environment),
    /// so no log line or error shows them.
    pub fn credentials(&self) -> Result<(String, String), ConfigError> {
        let email = match &self.email {
            EmailSource::Literal(e) => e.clone(),
            EmailSource::Env(env) => {
                crate::redact::secret_env(env).ok_or_else(|| ConfigError::EnvUnset(env.clone()))?
            }
        };
        let token = crate::redact::secret_env(&self.token_env)
            .ok_or_else(|| ConfigError::EnvUnset(self.token_env.clone()))?;
        Ok((email, token))
    }

    /// The webhook secret, read from the environment (registered with [`crate::redact`]).
    /// `None` when no variable is named or it is unset: the webhook route then refuses every
    /// delivery (fail closed).
    pub fn webhook_secret(&self) -> Option<String> {
        self.webhook_secret_env
            .as_deref()
            .and_then(crate::redact::secret_env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jira_config_reads_the_connection() {
        let c = JiraConfig::from_connection(&json!({
            "url": "https://acme.atlassian.net/", "email_env": "E", "token_env": "T",
            "webhook_secret_env": "W", "jql": "project = OPS", "promote": ["Team"]
        }))
        .unwrap();
        assert_eq!(c.url, "https://acme.atlassian.net");
        assert_eq!(c.email, EmailSource::Env("E".into()));
        assert_eq!(c.promote, ["Team"]);
        let c = JiraConfig::from_connection(
            &json!({"url": "https://x", "email": "a@b.c", "token_env": "T"}),
        )
        .unwrap();
        assert_eq!(c.email, EmailSource::Literal("a@b.c".into()));
        assert_eq!(c.webhook_secret_env, None);
    }

    #[test]
    fn jira_config_errors_name_the_key() {
        for (conn, needle) in [
            (json!({}), "`url` is required"),
            (
                json!({"url": "ftp://x", "email": "a", "token_env": "T"}),
                "https://",
            ),
            (json!({"url": "https://x", "token_env": "T"}), "email_env"),
            (
                json!({"url": "https://x", "email": "a", "email_env": "E", "token_env": "T"}),
                "not both",
            ),
            (json!({"url": "https://x", "email": "a"}), "token_env"),
            (
                json!({"url": "https://x", "email": "a", "token_env": "T", "promote": "Team"}),
                "promote",
            ),
        ] {
            let e = JiraConfig::from_connection(&conn).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn jira_credentials_come_from_the_environment_and_are_redacted() {
        let c = JiraConfig::from_connection(&json!({
            "url": "https://x", "email_env": "PIPELINE_TEST_JIRA_EMAIL_1",
            "token_env": "PIPELINE_TEST_JIRA_TOKEN_1"}))
        .unwrap();
        assert!(
            matches!(c.credentials(), Err(ConfigError::EnvUnset(v)) if v == "PIPELINE_TEST_JIRA_EMAIL_1")
        );
        std::env::set_var("PIPELINE_TEST_JIRA_EMAIL_1", "bot@acme.example");
        std::env::set_var(
            "PIPELINE_TEST_JIRA_TOKEN_1",
            "ATATT3xFfGF0-test-token-value",
        );
        let (email, token) = c.credentials().unwrap();
        assert_eq!(email, "bot@acme.example");
        assert_eq!(
            crate::redact::redact(&format!("sent {token}")),
            format!("sent {}", crate::redact::MASK)
        );
    }
}

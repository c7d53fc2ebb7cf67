//! Why a task failed, typed: callers (the daemon's retries, the run summary) tell a failure worth
//! retrying (a source that did not answer, a lock held by someone else) from one that will fail
//! the same way until someone changes something (a refused schema, a failing check, bad SQL).
//! The messages are the ones users always saw; the type only adds what kind of failure it is.

use crate::analytics::{AnalyticsError, BuildError};
use crate::connectors::ConnectorError;
use crate::extract::ExtractError;
use crate::extract_db::ContractError;
use crate::fslock::LockError;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The source could not be reached or answered with an error.
    #[error(transparent)]
    Source(ConnectorError),
    /// A remote database could not be attached, or its table not read.
    #[error("{0}")]
    Remote(String),
    /// A push source's consistency check (a Jira search and refetch) failed.
    #[error("{0}")]
    Push(String),
    /// The source is not set up right (unknown type, bad connection settings, missing file).
    #[error(transparent)]
    Config(ConnectorError),
    /// The new data breaks the table's schema contract; the previous data stays published.
    #[error("{0}")]
    SchemaRefused(String),
    /// A data check on the new data, a transform's check or a metric's binding failed.
    #[error("{0}")]
    CheckFailed(String),
    /// Extraction failed otherwise (the query, the files it writes).
    #[error(transparent)]
    Extract(ExtractError),
    /// A transform's SQL did not build.
    #[error("{0}")]
    Transform(String),
    /// Another process holds a lock this task needs.
    #[error(transparent)]
    Busy(LockError),
    /// The analytics file could not be staged or published.
    #[error(transparent)]
    Analytics(AnalyticsError),
    /// An extract.duckdb could not be read or written.
    #[error(transparent)]
    Contract(ContractError),
    /// What the task names is not (or no longer) registered, or not a safe name.
    #[error("{0}")]
    NotRegistered(String),
    /// Nothing to work on yet (no analytics file for a metric check).
    #[error("{0}")]
    Missing(String),
    #[error("cancelled")]
    Cancelled,
    /// A bug: a panic in a task body, a DuckDB failure on an in-memory database.
    #[error("{0}")]
    Internal(String),
}

impl TaskError {
    /// Whether the same task may succeed if tried again unchanged.
    pub fn is_transient(&self) -> bool {
        // Sources that did not answer, locks and files: another try may go through. Everything
        // else fails the same way until someone changes the spec, the source or the data.
        matches!(
            self,
            TaskError::Source(_)
                | TaskError::Remote(_)
                | TaskError::Push(_)
                | TaskError::Busy(_)
                | TaskError::Cancelled
                | TaskError::Extract(ExtractError::Connector(ConnectorError::Source { .. }))
                | TaskError::Extract(ExtractError::Io(..))
                | TaskError::Contract(ContractError::Io(..))
                | TaskError::Analytics(AnalyticsError::Io(..) | AnalyticsError::Lock(_))
        )
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> TaskError {
        TaskError::Internal(e.to_string())
    }
}

impl From<ConnectorError> for TaskError {
    fn from(e: ConnectorError) -> TaskError {
        match e {
            ConnectorError::Source { .. } | ConnectorError::Io(..) => TaskError::Source(e),
            _ => TaskError::Config(e),
        }
    }
}

impl From<ExtractError> for TaskError {
    fn from(e: ExtractError) -> TaskError {
        match e {
            ExtractError::Connector(c) => c.into(),
            ExtractError::Schema(m) => TaskError::SchemaRefused(m),
            // The message says the previous data is kept: keep it in the text users see.
            e @ ExtractError::Check(_) => TaskError::CheckFailed(e.to_string()),
            e => TaskError::Extract(e),
        }
    }
}

impl From<LockError> for TaskError {
    fn from(e: LockError) -> TaskError {
        TaskError::Busy(e)
    }
}

impl From<AnalyticsError> for TaskError {
    fn from(e: AnalyticsError) -> TaskError {
        TaskError::Analytics(e)
    }
}

impl From<ContractError> for TaskError {
    fn from(e: ContractError) -> TaskError {
        TaskError::Contract(e)
    }
}

impl From<BuildError> for TaskError {
    fn from(e: BuildError) -> TaskError {
        match e {
            BuildError::Sql(m) => TaskError::Transform(m),
            BuildError::Check(m) => TaskError::CheckFailed(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_keep_the_message_and_say_whether_to_retry() {
        let down: TaskError = ExtractError::Connector(ConnectorError::Source {
            what: "GET /tables".into(),
            message: "connection refused".into(),
        })
        .into();
        assert!(down.is_transient());
        assert_eq!(down.to_string(), "GET /tables: connection refused");

        let refused: TaskError = ExtractError::Schema("column `a` was dropped".into()).into();
        assert!(matches!(refused, TaskError::SchemaRefused(_)));
        assert!(!refused.is_transient());
        assert_eq!(refused.to_string(), "column `a` was dropped");

        let check: TaskError = ExtractError::Check("check not_null(id) failed".into()).into();
        assert!(matches!(check, TaskError::CheckFailed(_)));
        assert_eq!(
            check.to_string(),
            "check not_null(id) failed; the previous data is kept"
        );

        let config: TaskError = ConnectorError::Config("no `url`".into()).into();
        assert!(!config.is_transient());
        assert!(!TaskError::Transform("Binder Error".into()).is_transient());
    }
}

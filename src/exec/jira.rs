//! Running a `type: jira` source: its tables are produced by the connector
//! ([`crate::connectors::jira`]), never pulled by [`crate::extract`].
//!
//! - [`JiraSource::open`]: the connection read, credentials from the environment, the field
//!   metadata fetched once (for readable custom-field names and promoted columns), the partition
//!   store opened.
//! - [`sync`]: what a run (scheduled, triggered, or the first after `apply`) does for a jira
//!   source: the consistency check against a JQL search, then `extract.duckdb` refreshed over the
//!   partitions. The run's own publish step then puts the source into analytics.
//! - [`republish`]: after webhooks or a backfill, a recorded push run republishes only this source
//!   in analytics.duckdb, under the locks runs take too.

use crate::connectors::jira::backfill;
use crate::connectors::jira::client::{Client, Patience};
use crate::connectors::jira::consistency::{self, CheckReport};
use crate::connectors::jira::partition::PartitionStore;
use crate::connectors::jira::rows::Mapper;
use crate::connectors::jira::JiraConfig;
use crate::instance::Instance;
use crate::registry::registered::{Registered, SourceDef};
use crate::spec::model::SourceType;

/// One jira source, ready to fetch and write.
pub struct JiraSource {
    pub name: String,
    pub config: JiraConfig,
    pub client: Client,
    pub mapper: Mapper,
    pub store: PartitionStore,
}

impl std::fmt::Debug for JiraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JiraSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl JiraSource {
    /// Opens `source` of the instance whose data directory is `data_dir`. Contacts Jira once (the
    /// field list).
    pub fn open(data_dir: &std::path::Path, source: &SourceDef) -> Result<JiraSource, String> {
        if source.kind() != Some(SourceType::Jira) {
            return Err(format!("source `{}` is not a jira source", source.name));
        }
        let config = JiraConfig::from_connection(&source.connection).map_err(|e| e.to_string())?;
        let (email, token) = config.credentials().map_err(|e| e.to_string())?;
        let client = Client::new(&config.url, &email, &token, Patience::default());
        let fields = client
            .fields()
            .map_err(|e| format!("reading the field list of {}: {e}", config.url))?;
        let mapper = Mapper::new(&fields, &config.promote).map_err(|e| e.to_string())?;
        let store = PartitionStore::open(data_dir, &source.name, mapper.schema().clone())
            .map_err(|e| e.to_string())?;
        Ok(JiraSource {
            name: source.name.clone(),
            config,
            client,
            mapper,
            store,
        })
    }

    /// The JQL a backfill or a check reads: `jql` of the connection (or every issue), narrowed by
    /// `since`.
    pub fn jql(&self, since: Option<chrono::NaiveDate>) -> String {
        backfill::jql_for(self.config.jql.as_deref(), since)
    }

    /// The consistency check over the connection's JQL.
    pub fn check(&self) -> Result<CheckReport, String> {
        consistency::check(
            &self.client,
            &self.mapper,
            &self.store,
            &self.jql(None),
            backfill::Options::default().threads,
        )
        .map_err(|e| e.to_string())
    }
}

/// What a run does for a jira source: the consistency check, then `extract.duckdb` refreshed.
pub fn sync(data_dir: &std::path::Path, source: &SourceDef) -> Result<(CheckReport, bool), String> {
    let jira = JiraSource::open(data_dir, source)?;
    let report = jira.check()?;
    let published = jira.store.publish().map_err(|e| e.to_string())?;
    tracing::info!(
        source = %source.name,
        listed = report.listed,
        refetched = report.refetched,
        removed = report.removed.len(),
        failed = report.failed.len(),
        "Jira consistency check"
    );
    Ok((report, published))
}

/// Republishes `source` after webhooks or a backfill wrote its data (and its extract.duckdb): a
/// push run ([`super::publish::publish_source`], recorded in the state with trigger `push`) that
/// republishes only this source in a copy of the live analytics file and rebuilds the transforms
/// that read it, under the locks runs take (waiting up to `lock_timeout`). `who` names the caller
/// in the run history. An error
/// when the run could not start or its publish failed (the previous analytics file stays); a
/// transform or check that fails keeps its last good result and is reported in the outcome.
pub fn republish(
    inst: &Instance,
    registered: &Registered,
    source: &str,
    who: &str,
    lock_timeout: std::time::Duration,
) -> Result<super::Outcome, String> {
    let outcome =
        super::publish::publish_source_within(inst, registered, source, who, lock_timeout)
            .map_err(|e| e.to_string())?;
    let publish_failed = outcome
        .failures()
        .find(|f| f.task.kind == crate::registry::task::TaskKind::Publish);
    if let Some(f) = publish_failed {
        return Err(format!(
            "publishing {source} failed: {}",
            f.error.as_deref().unwrap_or("?")
        ));
    }
    if let Some(e) = &outcome.record_error {
        return Err(format!("the push run could not be recorded: {e}"));
    }
    Ok(outcome)
}

//! Running a `type: jira` source: its tables are produced by the connector
//! ([`crate::connectors::jira`]), never pulled by [`crate::extract`].
//!
//! - [`JiraSource::open`]: the connection read, credentials from the environment, the field
//!   metadata fetched once (for readable custom-field names and promoted columns), the partition
//!   store opened.
//! - [`sync`]: what a run (scheduled, triggered, or the first after `apply`) does for a jira
//!   source: the consistency check against a JQL search, then `extract.duckdb` refreshed over the
//!   partitions. The run's own publish step then puts the source into analytics.
//! - [`republish`]: after webhooks or a backfill, only this source's views in analytics.duckdb are
//!   refreshed (`analytics::rebuild_source`), under the analytics lock runs take too.

use crate::analytics;
use crate::connectors::jira::backfill;
use crate::connectors::jira::client::{Client, Patience};
use crate::connectors::jira::consistency::{self, CheckReport};
use crate::connectors::jira::partition::PartitionStore;
use crate::connectors::jira::rows::Mapper;
use crate::connectors::jira::JiraConfig;
use crate::extract_db::RemotePolicy;
use crate::instance::Instance;
use crate::registry::registered::{Registered, SourceDef};
use crate::spec::model::SourceType;
use crate::state::{self, StateStore};
use std::time::Duration;

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

/// Refreshes only `source`'s views in analytics.duckdb (after webhooks or a backfill): the
/// one-source publish ([`analytics::publish_source`]: a copy of the live file with this source's
/// views replaced and the transforms that read them rebuilt), under the analytics lock.
pub fn republish(
    inst: &Instance,
    registered: &Registered,
    source: &str,
    lock_timeout: Duration,
) -> Result<analytics::Report, String> {
    let owners = {
        let store = StateStore::of(&inst.data);
        let r = store.read().map_err(|e| e.to_string())?;
        state::sync::read_before(&r)
            .map_err(|e| e.to_string())?
            .owners
    };
    let rules = analytics::Rules {
        policy: RemotePolicy::of_instance(inst),
        owners,
        reserved: registered.transforms.keys().cloned().collect(),
        limits: inst.run_limits,
    };
    analytics::publish_source(&inst.data, &rules, registered, source, lock_timeout)
        .map(|published| published.report)
        .map_err(|e| e.to_string())
}

//! The data catalogue as data: what the instance holds and how it flows, for people and for other
//! catalogues.
//!
//! [`export`] describes the registered sources, tables, transforms and metrics with their lineage
//! (tables → transforms → metrics, from [`crate::registry::lineage`]) as one [`export::Catalog`]
//! value, rendered as a Markdown data dictionary or as JSON (docs/catalog.md). [`openmetadata`]
//! reads an OpenMetadata server's REST API; [`import`] turns what it holds into metric spec files
//! and a registry file of table `descriptions:`, through the writer of `pipeline metrics import`.
//!
//! Nothing here prints: `pipeline catalog` (src/cli/catalog.rs) loads the specs, opens the state
//! and renders. Nothing here opens the state either: the CLI hands in what it observed.

pub mod export;
pub mod import;
pub mod openmetadata;

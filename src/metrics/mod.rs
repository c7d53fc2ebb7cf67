//! Business metrics beyond validation: rendering a metric's SQL template for a grain, a dimension and
//! a date range; binding it against the published schema (`metrics check`); running it
//! (`metrics run`); and importing definitions written in the older layout (`metrics import`).

pub mod import;

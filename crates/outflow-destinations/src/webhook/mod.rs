//! The webhook destination: signed HTTP requests with auth, retries and an SSRF guard.

use std::sync::Arc;

use outflow_core::config::{ConfigError, DestinationSpec};

use crate::{BuildDefaults, Destination};

/// Parses and validates a `type: webhook` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let _ = (spec, defaults);
    Err(vec![ConfigError::new(path, "webhook destination: not implemented yet")])
}

//! The filesystem destination: atomic writes of formatted, optionally compressed outputs.

use std::sync::Arc;

use outflow_core::config::{ConfigError, DestinationSpec};

use crate::{BuildDefaults, Destination};

/// Parses and validates a `type: filesystem` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let _ = (spec, defaults);
    Err(vec![ConfigError::new(path, "filesystem destination: not implemented yet")])
}

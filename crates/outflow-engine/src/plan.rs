//! Which deliveries an output gets, and building destinations from stored specs.
//!
//! A job names global destinations (`destinations: [name]`) and/or carries inline ones
//! (`output_destinations: [{type: ...}]`). Each becomes one delivery per output version.
//! A global destination is stored by *reference* (`{"global": "name"}`), so its secrets stay
//! in the config file, not the database, and a config fix applies to pending retries; an
//! inline destination is stored as submitted.

use std::sync::Arc;

use outflow_core::config::{ConfigError, DestinationSpec, GlobalDestination};
use outflow_core::job::Job;
use outflow_destinations::runner::new_delivery_id;
use outflow_destinations::{Destination, Registry, SpecOrigin};
use outflow_store::NewDelivery;
use serde_json::{Value, json};
use thiserror::Error;

/// Destinations that cannot be used, each problem with its path.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("invalid destinations: {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct PlanError {
    /// Every problem found.
    pub errors: Vec<ConfigError>,
}

impl PlanError {
    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        PlanError { errors: vec![ConfigError::new(path, message)] }
    }
}

/// Validates and plans deliveries against the registry and the configured globals.
#[derive(Debug, Clone)]
pub struct DeliveryPlanner {
    registry: Registry,
    globals: Vec<GlobalDestination>,
    /// Each global built once, in `globals` order: they are fixed by the config, and every
    /// submit and output would otherwise parse them again.
    built_globals: Vec<Result<Arc<dyn Destination>, PlanError>>,
}

impl DeliveryPlanner {
    /// A planner over `registry` and the config's global destinations.
    pub fn new(registry: Registry, globals: Vec<GlobalDestination>) -> Self {
        let built_globals = globals
            .iter()
            .map(|g| {
                let path = format!("output.global_destinations[{}].destination", g.index);
                registry.build(&g.destination, &path).map_err(|errors| PlanError { errors })
            })
            .collect();
        DeliveryPlanner { registry, globals, built_globals }
    }

    /// The registry destinations are built with.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The configured global destinations.
    pub fn globals(&self) -> &[GlobalDestination] {
        &self.globals
    }

    /// Checks a job's destinations at submit time: every name exists, every inline spec is
    /// valid and sets no operator-only key (inline specs come from API clients). Paths are
    /// `destinations[i]` and `output_destinations[i].<key>`.
    pub fn validate(&self, names: &[String], inline: &[Value]) -> Result<(), PlanError> {
        let mut errors = Vec::new();
        for (i, name) in names.iter().enumerate() {
            if self.global(name).is_none() {
                errors.push(ConfigError::new(
                    format!("destinations[{i}]"),
                    self.unknown_global(name),
                ));
            }
        }
        for (i, spec) in inline.iter().enumerate() {
            let path = format!("output_destinations[{i}]");
            match DestinationSpec::from_value(spec, &path) {
                Ok(spec) => {
                    if let Err(e) = self.registry.build_from(&spec, &path, SpecOrigin::ApiClient) {
                        errors.extend(e);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(PlanError { errors }) }
    }

    /// One new delivery per destination of `job` (globals first, then inline ones).
    pub fn plan(&self, job: &Job) -> Result<Vec<NewDelivery>, PlanError> {
        let mut out = Vec::new();
        for name in &job.destinations {
            let spec = json!({ "global": name });
            let dest = self.build(&spec, name)?;
            out.push(NewDelivery {
                id: new_delivery_id(),
                destination_name: name.clone(),
                destination_type: dest.kind().to_string(),
                destination: spec,
                destination_key: dest.isolation_key(),
                deliver_at: None,
            });
        }
        for (i, spec) in job.output_destinations.iter().enumerate() {
            let label = format!("output_destinations[{i}]");
            let dest = self.build(spec, &label)?;
            out.push(NewDelivery {
                id: new_delivery_id(),
                destination_name: label,
                destination_type: dest.kind().to_string(),
                destination: spec.clone(),
                destination_key: dest.isolation_key(),
                deliver_at: None,
            });
        }
        Ok(out)
    }

    /// Builds the destination a stored delivery refers to: `{"global": name}` or an inline
    /// spec. `label` names it in errors.
    pub fn build(&self, spec: &Value, label: &str) -> Result<Arc<dyn Destination>, PlanError> {
        if let Some(name) = spec.get("global").and_then(Value::as_str) {
            let Some(i) = self.globals.iter().position(|g| g.name == name) else {
                return Err(PlanError::one(label, self.unknown_global(name)));
            };
            return self.built_globals[i].clone();
        }
        let spec =
            DestinationSpec::from_value(spec, label).map_err(|e| PlanError { errors: vec![e] })?;
        self.registry.build(&spec, label).map_err(|errors| PlanError { errors })
    }

    fn global(&self, name: &str) -> Option<&GlobalDestination> {
        self.globals.iter().find(|g| g.name == name)
    }

    fn unknown_global(&self, name: &str) -> String {
        let known: Vec<&str> = self.globals.iter().map(|g| g.name.as_str()).collect();
        if known.is_empty() {
            format!("unknown global destination '{name}': output.global_destinations is empty")
        } else {
            format!("unknown global destination '{name}'; configured: {}", known.join(", "))
        }
    }
}

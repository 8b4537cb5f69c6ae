//! What every handler shares: the store, the engine, the configured tasks and limits.

use std::sync::Arc;

use outflow_core::config::{Config, GlobalDestination, TaskConfig};
use outflow_engine::{DeliveryPlanner, Engine};
use outflow_store::{SqliteStore, Store, TaskRecord};
use serde_json::{Value, json};

use crate::problem::Problem;

/// A task from the config with the id the store gave it.
#[derive(Debug, Clone)]
pub struct KnownTask {
    /// Stable id and stored definition.
    pub record: TaskRecord,
    /// The task as configured.
    pub config: TaskConfig,
}

/// Handler state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// The durable store.
    pub store: Arc<dyn Store>,
    /// The delivery engine and executor (woken after commits).
    pub engine: Arc<Engine>,
    /// The configuration the server runs with.
    pub config: Arc<Config>,
    /// The configured tasks, in config order.
    pub tasks: Arc<Vec<KnownTask>>,
    /// The largest request body, in bytes.
    pub body_limit: u64,
    /// The same store as `store` when it is the embedded one, for the migration check of
    /// `/readyz`.
    pub sqlite: Option<SqliteStore>,
}

impl AppState {
    /// The planner (validation of submitted destinations, deliveries of an output).
    pub fn planner(&self) -> &DeliveryPlanner {
        &self.engine.planner
    }

    /// A task by id, or a 400 naming it and the configured ones.
    pub fn task_by_id(&self, id: i64) -> Result<&KnownTask, Problem> {
        self.tasks.iter().find(|t| t.record.id == id).ok_or_else(|| {
            Problem::bad_request(format!("unknown task_id {id}; {}", self.configured_tasks()))
        })
    }

    /// A task by name, or a 400 naming it and the configured ones.
    pub fn task_by_name(&self, name: &str) -> Result<&KnownTask, Problem> {
        self.tasks.iter().find(|t| t.record.name == name).ok_or_else(|| {
            Problem::bad_request(format!("unknown task_name '{name}'; {}", self.configured_tasks()))
        })
    }

    fn configured_tasks(&self) -> String {
        if self.tasks.is_empty() {
            return "no tasks are configured (tasks: in the config file)".to_string();
        }
        let list: Vec<String> =
            self.tasks.iter().map(|t| format!("{} ({})", t.record.id, t.record.name)).collect();
        format!("configured tasks: {}", list.join(", "))
    }

    /// A configured global destination.
    pub fn global(&self, name: &str) -> Option<&GlobalDestination> {
        self.config.output.global_destinations.iter().find(|g| g.name == name)
    }

    /// The spec to show for a stored delivery destination: a global reference
    /// (`{"global": name}`) resolves to the configured body (the API masks it); an inline
    /// spec is itself.
    pub fn resolve_target(&self, stored: &Value) -> Value {
        match stored.get("global").and_then(Value::as_str) {
            Some(name) => match self.global(name) {
                Some(g) => g.destination.to_value(),
                None => json!({ "global": name, "missing": true }),
            },
            None => stored.clone(),
        }
    }
}

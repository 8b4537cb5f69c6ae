//! The built-in executor: runs command tasks.

use std::sync::Arc;

use crate::{Engine, EngineSettings};

/// Executor state shared through the [`Engine`].
#[derive(Debug, Default)]
pub struct ExecutorState {}

impl ExecutorState {
    /// Fresh state.
    pub fn new(settings: &EngineSettings) -> Self {
        let _ = settings;
        ExecutorState {}
    }

    /// Kills a running job's process group; whether one was found.
    pub fn kill(&self, job_id: i64) -> bool {
        let _ = job_id;
        false
    }
}

/// The executor loop; returns after shutdown.
pub async fn run(engine: Arc<Engine>) {
    let _ = engine;
}

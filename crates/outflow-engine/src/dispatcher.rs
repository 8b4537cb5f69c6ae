//! The delivery dispatcher: claim due deliveries, attempt, record, retry or dead-letter.

use std::sync::Arc;

use serde::Serialize;

use crate::{Engine, EngineSettings};

/// A destination key's circuit, as shown by the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitView {
    /// The destination key.
    pub key: String,
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// Consecutive failures.
    pub consecutive_failures: u32,
}

/// Dispatcher state shared through the [`Engine`].
#[derive(Debug, Default)]
pub struct DispatcherState {}

impl DispatcherState {
    /// Fresh state.
    pub fn new(settings: &EngineSettings) -> Self {
        let _ = settings;
        DispatcherState {}
    }

    /// Every key's circuit.
    pub fn circuits(&self) -> Vec<CircuitView> {
        Vec::new()
    }
}

/// The dispatcher loop; returns after shutdown.
pub async fn run(engine: Arc<Engine>) {
    let _ = engine;
}

//! The HTTP handlers, one module per resource.

pub mod admin;
pub mod deliveries;
pub mod health;
pub mod jobs;
pub mod outputs;

//! # outflow-core
//!
//! The pure domain layer of Outflow: everything that can be decided without touching the
//! network, the disk or a clock you cannot pass in.
//!
//! - [`config`]: the `outflow.yaml` model, `${VAR}` expansion, `OUTFLOW_*` overrides and a
//!   validator that reports *every* error with its path.
//! - [`template`]: the `{{var}}` language used in paths, URLs, headers, keys and topics.
//! - [`context`]: the job context a delivery is rendered from (the template variables).
//! - [`output`]: what a job produced (JSON, text or bytes).
//! - [`format`] and [`compression`]: how an output is turned into bytes for a destination.
//! - [`retry`]: the retry policy shared by every destination and, later, the engine.
//! - [`signature`]: Standard Webhooks signing and verification.
//! - [`netpolicy`]: which network addresses outbound HTTP may reach (SSRF guard).
//! - [`attempt`]: the record of one delivery attempt.
//! - [`job`] and [`delivery`]: the stored domain records (jobs, outputs, deliveries).
//!
//! This crate is *not* where destinations live (see `outflow-destinations`) and performs no
//! I/O: it can be fuzzed and property-tested in isolation.

pub mod attempt;
pub mod compression;
pub mod config;
pub mod context;
pub mod delivery;
pub mod format;
pub mod job;
pub mod netpolicy;
pub mod output;
pub mod retry;
pub mod secret;
pub mod signature;
pub mod template;

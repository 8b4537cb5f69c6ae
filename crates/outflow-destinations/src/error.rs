//! [`DeliveryError`]: why one attempt failed, and whether retrying can help.

use std::time::Duration;

use outflow_core::attempt::FailureClass;
use thiserror::Error;

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{message}")]
pub struct DeliveryError {
    /// Retryable or permanent.
    pub class: FailureClass,
    /// What happened, naming the target and the cause; never a secret.
    pub message: String,
    /// HTTP status or protocol code, when there was one.
    pub status_code: Option<u16>,
    /// A server's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// The first bytes of the response body, when there was one.
    pub response_excerpt: Option<String>,
}

impl DeliveryError {
    /// A failure worth retrying (network, timeout, 5xx...).
    pub fn retryable(message: impl Into<String>) -> Self {
        DeliveryError {
            class: FailureClass::Retryable,
            message: message.into(),
            status_code: None,
            retry_after: None,
            response_excerpt: None,
        }
    }

    /// A failure that retrying cannot fix (4xx, bad config, refused address...).
    pub fn permanent(message: impl Into<String>) -> Self {
        DeliveryError { class: FailureClass::Permanent, ..DeliveryError::retryable(message) }
    }

    /// Sets the status code.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status_code = Some(status);
        self
    }

    /// Sets the server's `Retry-After`.
    pub fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    /// Sets the response excerpt.
    pub fn with_excerpt(mut self, excerpt: Option<String>) -> Self {
        self.response_excerpt = excerpt;
        self
    }

    /// Whether retrying may help.
    pub fn is_retryable(&self) -> bool {
        self.class == FailureClass::Retryable
    }
}

//! Classifying S3 failures: retryable (5xx, `SlowDown`, timeouts, connections) or permanent
//! (missing bucket, bad credentials, refused requests), with messages that name the bucket
//! and S3's error code but never a credential.

use object_store::client::{HttpError, HttpErrorKind};

use crate::DeliveryError;

/// S3 error codes that retrying fixes (besides every 5xx status).
const RETRYABLE_CODES: &[&str] = &[
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "OperationAborted",
    "ExpiredToken",
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
];

/// Codes that mean the credentials or their permissions are wrong.
const AUTH_CODES: &[&str] = &[
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "AccountProblem",
    "AllAccessDisabled",
    "InvalidSecurity",
    "NotSignedUp",
    "RequestTimeTooSkewed",
];

/// What an S3 error response said.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct S3Failure {
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// `<Code>` of the XML error body.
    pub code: Option<String>,
    /// `<Message>` of the XML error body.
    pub message: Option<String>,
}

impl S3Failure {
    /// Reads the status and the error body's code and message out of `text`: an
    /// `object_store` error's description, which quotes both, or a raw XML body.
    pub fn from_text(status: Option<u16>, text: &str) -> S3Failure {
        let status = status.or_else(|| status_in(text));
        S3Failure { status, code: xml_element(text, "Code"), message: xml_element(text, "Message") }
    }

    /// Classifies the failure of `op` (`PUT s3://bucket/key`) against `bucket`.
    pub fn classify(&self, op: &str, bucket: &str) -> DeliveryError {
        let code = self.code.as_deref().unwrap_or("");
        let detail = match (&self.code, &self.message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            (None, _) => match self.status {
                Some(s) => format!("HTTP {s}"),
                None => "no response".to_string(),
            },
        };
        let status = self.status.unwrap_or(0);
        let err = if code == "NoSuchBucket" || (status == 404 && code.is_empty()) {
            DeliveryError::permanent(format!(
                "{op} failed: bucket '{bucket}' does not exist ({detail})"
            ))
        } else if AUTH_CODES.contains(&code) || (code.is_empty() && matches!(status, 401 | 403)) {
            DeliveryError::permanent(format!(
                "{op} failed: access to bucket '{bucket}' was refused, check the credentials \
                 and the bucket policy ({detail})"
            ))
        } else if status == 501 || code == "NotImplemented" {
            DeliveryError::permanent(format!(
                "{op} failed: the S3 server does not implement this request ({detail})"
            ))
        } else if RETRYABLE_CODES.contains(&code) || status >= 500 || matches!(status, 408 | 429) {
            DeliveryError::retryable(format!("{op} failed: S3 is unavailable ({detail})"))
        } else {
            DeliveryError::permanent(format!("{op} failed: S3 refused the request ({detail})"))
        };
        match self.status {
            Some(s) => err.with_status(s),
            None => err,
        }
    }
}

/// Classifies an `object_store` error from `op` on `bucket`.
pub fn classify(err: &object_store::Error, op: &str, bucket: &str) -> DeliveryError {
    use object_store::Error as E;
    let described = chain(err);
    if let Some(at) = described.find(super::network::REFUSAL) {
        // The endpoint resolved only to addresses the network policy refuses.
        return DeliveryError::permanent(format!("{op} failed: {}", &described[at..]));
    }
    if let Some(http) = http_error(err) {
        let retryable = matches!(
            http.kind(),
            HttpErrorKind::Connect
                | HttpErrorKind::Request
                | HttpErrorKind::Timeout
                | HttpErrorKind::Interrupted
                | HttpErrorKind::Decode
        );
        let msg = format!("{op} failed: cannot reach S3 ({})", chain(http));
        return if retryable {
            DeliveryError::retryable(msg)
        } else {
            DeliveryError::permanent(msg)
        };
    }
    let text = err.to_string();
    match err {
        E::NotFound { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::Generic { .. } => {
            let failure = S3Failure::from_text(None, &text);
            if failure.status.is_none() && failure.code.is_none() {
                // No response at all: a credential provider or the runtime failed.
                return DeliveryError::retryable(format!("{op} failed: {}", first_line(&text)));
            }
            failure.classify(op, bucket)
        }
        E::JoinError { .. } => DeliveryError::retryable(format!("{op} was interrupted: {text}")),
        _ => DeliveryError::permanent(format!("{op} failed: {}", first_line(&text))),
    }
}

/// The transport error in `err`'s source chain, if the failure happened below HTTP.
fn http_error<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e HttpError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return Some(http);
        }
        current = e.source();
    }
    None
}

/// `err: cause: cause`, for transport errors whose top message says little.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        current = e.source();
    }
    out
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// The status in `object_store`'s "status code: 404 Not Found" wording.
fn status_in(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// The text of the first `<name>...</name>` element.
fn xml_element(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{name}>"))? + start;
    let value = text[start..end].trim();
    (!value.is_empty()).then(|| value.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_text(status: Option<u16>, body: &str) -> DeliveryError {
        S3Failure::from_text(status, body).classify("PUT s3://b/k", "b")
    }

    #[test]
    fn codes_decide_the_class() {
        let err = classify_text(
            None,
            "Server returned non-2xx status code: 404 Not Found: <Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>",
        );
        assert!(!err.is_retryable());
        assert_eq!(err.status_code, Some(404));
        assert_eq!(
            err.message,
            "PUT s3://b/k failed: bucket 'b' does not exist (NoSuchBucket: The specified bucket does not exist)"
        );
        for code in ["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"] {
            let err = classify_text(Some(403), &format!("<Code>{code}</Code>"));
            assert!(!err.is_retryable(), "{code}");
            assert!(err.message.contains("access to bucket 'b' was refused"), "{}", err.message);
            assert!(err.message.contains(code));
        }
        for (status, code) in [(503, "SlowDown"), (500, "InternalError"), (400, "RequestTimeout")] {
            let err = classify_text(Some(status), &format!("<Code>{code}</Code>"));
            assert!(err.is_retryable(), "{code}");
        }
        assert!(classify_text(Some(502), "").is_retryable());
        assert!(classify_text(Some(429), "").is_retryable());
        assert!(!classify_text(Some(403), "").is_retryable());
        assert!(!classify_text(Some(400), "<Code>InvalidArgument</Code>").is_retryable());
        assert!(!classify_text(Some(501), "<Code>NotImplemented</Code>").is_retryable());
    }

    #[test]
    fn reads_object_store_wording() {
        let f = S3Failure::from_text(
            None,
            "Error performing PUT http://x/b/k in 2ms - Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code></Error>",
        );
        assert_eq!(f.status, Some(403));
        assert_eq!(f.code.as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(f.message, None);
    }
}

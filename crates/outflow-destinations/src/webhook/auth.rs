//! The webhook `auth` block: bearer, basic, API key headers and Standard Webhooks
//! signatures.
//!
//! Secret values live in [`Secret`]s from parsing to the moment a header is built, so no
//! error, log line or `Debug` output can contain them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use outflow_core::config::{ConfigError, FieldReader};
use outflow_core::secret::Secret;
use outflow_core::signature;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

/// The `type` names of the `auth` block.
pub const AUTH_TYPES: &[&str] = &["bearer", "basic", "api_key", "signature"];

/// The signature algorithms accepted by `type: signature` (Standard Webhooks defines only
/// HMAC-SHA256 as `v1`).
pub const SIGNATURE_ALGORITHMS: &[&str] = &["sha256"];

/// A configured authentication method.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: Secret,
    },
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        /// The user name (not secret).
        username: String,
        /// The password.
        password: Secret,
    },
    /// A custom header carrying a key.
    ApiKey {
        /// The header name, validated.
        header: HeaderName,
        /// The key.
        value: Secret,
    },
    /// Standard Webhooks signing (`webhook-signature`) with HMAC-SHA256.
    Signature {
        /// The secret: `whsec_` + base64 of the key, or raw key text.
        secret: Secret,
    },
}

/// The Standard Webhooks header names.
pub mod headers {
    /// The delivery's stable id, identical on every retry: the receiver's idempotency key.
    pub const WEBHOOK_ID: &str = "webhook-id";
    /// Unix seconds when the attempt was signed.
    pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
    /// `v1,<base64 HMAC-SHA256>` over `{id}.{timestamp}.{body}`.
    pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
}

impl Auth {
    /// The `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::Bearer { .. } => "bearer",
            Auth::Basic { .. } => "basic",
            Auth::ApiKey { .. } => "api_key",
            Auth::Signature { .. } => "signature",
        }
    }

    /// The header this method sets from static config, if any (so `headers` cannot also
    /// set it and silently fight over the value).
    pub fn header_name(&self) -> Option<HeaderName> {
        match self {
            Auth::Bearer { .. } | Auth::Basic { .. } => Some(AUTHORIZATION),
            Auth::ApiKey { header, .. } => Some(header.clone()),
            Auth::Signature { .. } => None,
        }
    }

    /// Parses an `auth` block. Every problem is collected with its path; returns `None` when
    /// there was any.
    pub fn parse(mut r: FieldReader<'_>) -> (Option<Auth>, Vec<ConfigError>) {
        let kind = match r.raw("type") {
            None => {
                r.error("type", format!("is required (one of {})", AUTH_TYPES.join(", ")));
                None
            }
            Some(_) => r.one_of("type", AUTH_TYPES),
        };
        let auth = match kind {
            Some("bearer") => {
                let token = r.secret("token", true);
                token
                    .filter(|t| header_ok(&mut r, "token", &format!("Bearer {}", t.expose())))
                    .map(|token| Auth::Bearer { token })
            }
            Some("basic") => {
                let username = r.required_string("username", "a user name");
                let password = r.secret("password", true);
                if username.as_deref().is_some_and(|u| u.contains(':')) {
                    r.error(
                        "username",
                        "must not contain ':' (HTTP Basic separates user and password with it)",
                    );
                }
                match (username, password) {
                    (Some(username), Some(password)) if !r.has_errors() => {
                        Some(Auth::Basic { username, password })
                    }
                    _ => None,
                }
            }
            Some("api_key") => {
                let header = r.required_string("header", "an HTTP header name, e.g. X-API-Key");
                let value = r.secret("value", true);
                let header = header.and_then(|h| match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(name) => Some(name),
                    Err(_) => {
                        r.error(
                            "header",
                            format!("'{h}' is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)"),
                        );
                        None
                    }
                });
                let value = value.filter(|v| header_ok(&mut r, "value", v.expose()));
                match (header, value) {
                    (Some(header), Some(value)) => Some(Auth::ApiKey { header, value }),
                    _ => None,
                }
            }
            Some("signature") => {
                let secret = r.secret("secret", true);
                if r.raw("algorithm").is_some() {
                    r.one_of("algorithm", SIGNATURE_ALGORITHMS);
                }
                let secret = secret.filter(|s| match signature::signing_key(s.expose()) {
                    Ok(_) => true,
                    Err(e) => {
                        r.error("secret", e.to_string());
                        false
                    }
                });
                secret.filter(|_| !r.has_errors()).map(|secret| Auth::Signature { secret })
            }
            _ => {
                // The type is unknown: the other keys cannot be judged, so do not report them.
                r.allow(&[
                    "token",
                    "username",
                    "password",
                    "header",
                    "value",
                    "secret",
                    "algorithm",
                ]);
                None
            }
        };
        let errors = r.finish();
        (if errors.is_empty() { auth } else { None }, errors)
    }

    /// Adds this method's headers to `headers` for one attempt. `id` is the delivery id,
    /// `timestamp` the attempt's unix time and `body` the exact bytes that will be sent.
    pub fn apply(&self, headers: &mut HeaderMap, id: &str, timestamp: i64, body: &[u8]) {
        match self {
            Auth::Bearer { token } => {
                headers.insert(AUTHORIZATION, sensitive(&format!("Bearer {}", token.expose())));
            }
            Auth::Basic { username, password } => {
                let creds = STANDARD.encode(format!("{username}:{}", password.expose()));
                headers.insert(AUTHORIZATION, sensitive(&format!("Basic {creds}")));
            }
            Auth::ApiKey { header, value } => {
                headers.insert(header.clone(), sensitive(value.expose()));
            }
            Auth::Signature { secret } => {
                // The secret was validated at parse time, so signing cannot fail here.
                let sig = signature::sign(secret.expose(), id, timestamp, body)
                    .expect("signature secret validated when the config was parsed");
                headers.insert(
                    HeaderName::from_static(headers::WEBHOOK_TIMESTAMP),
                    HeaderValue::from(timestamp),
                );
                headers.insert(
                    HeaderName::from_static(headers::WEBHOOK_SIGNATURE),
                    HeaderValue::from_str(&sig).expect("base64 is a valid header value"),
                );
            }
        }
    }
}

/// Whether `value` can be sent as a header value; reports it (without echoing it) if not.
fn header_ok(r: &mut FieldReader<'_>, key: &'static str, value: &str) -> bool {
    if HeaderValue::from_str(value).is_ok() {
        return true;
    }
    r.error(
        key,
        "contains characters not allowed in an HTTP header value (control characters or non-ASCII)",
    );
    false
}

/// A header value marked sensitive, so HTTP stacks that log headers mask it.
fn sensitive(value: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(value).expect("validated when the config was parsed");
    v.set_sensitive(true);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value, json};

    fn parse(v: Value) -> (Option<Auth>, Vec<ConfigError>) {
        let m: Map<String, Value> = v.as_object().unwrap().clone();
        Auth::parse(FieldReader::new(&m, "d.auth"))
    }

    #[test]
    fn unknown_type_lists_valid_ones_and_nothing_else() {
        let (auth, errs) = parse(json!({"type": "oauth", "token": "t"}));
        assert!(auth.is_none());
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "d.auth.type: must be one of bearer, basic, api_key, signature, got 'oauth'"
        );
    }

    #[test]
    fn only_sha256_and_valid_whsec() {
        let (_, errs) =
            parse(json!({"type": "signature", "secret": "whsec_!!", "algorithm": "md5"}));
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "d.auth.algorithm: must be one of sha256, got 'md5'",
                "d.auth.secret: secret starts with 'whsec_' but the rest is not valid base64",
            ]
        );
    }

    #[test]
    fn basic_header_is_base64_of_user_colon_password() {
        let (auth, errs) = parse(json!({"type": "basic", "username": "u", "password": "p w"}));
        assert!(errs.is_empty(), "{errs:?}");
        let mut h = HeaderMap::new();
        auth.unwrap().apply(&mut h, "id", 1, b"");
        assert_eq!(h[AUTHORIZATION], "Basic dTpwIHc=");
    }

    #[test]
    fn bad_header_value_not_echoed() {
        let (_, errs) = parse(json!({"type": "bearer", "token": "abc\ndef"}));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "d.auth.token");
        assert!(!errs[0].message.contains("abc"), "{}", errs[0].message);
    }
}

//! A string that must never be printed: tokens, passwords, signing secrets, API key values.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// The text shown wherever a secret would otherwise appear.
pub const MASK: &str = "********";

/// A secret value. `Debug`, `Display` and `Serialize` all print [`MASK`]; the only way to
/// the real value is [`Secret::expose`], which makes every use of it easy to audit.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

/// Whether a config key holds a secret by its name (`token`, `password`, `secret`, and the
/// `value` of an `api_key` auth block is handled by its owner). Used to mask values when a
/// raw config tree is printed.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["token", "password", "secret", "api_key", "apikey", "access_key", "secret_key"]
        .iter()
        .any(|s| k == *s || k.ends_with(&format!("_{s}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), format!("{MASK} {MASK}"));
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{MASK}\""));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secret_keys_recognised() {
        assert!(is_secret_key("token"));
        assert!(is_secret_key("password"));
        assert!(is_secret_key("webhook_secret"));
        assert!(!is_secret_key("url"));
    }
}

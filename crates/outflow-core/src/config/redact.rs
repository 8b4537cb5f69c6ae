//! Printable configuration with every secret masked, for `--dry-run` and debugging.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::Config;
use crate::netpolicy::HostRule;
use crate::secret::{MASK, is_secret_key};

/// A copy of a raw config tree with secrets replaced by [`MASK`]:
/// - the value of any secret-named key ([`is_secret_key`]: `token`, `password`, `secret`, ...),
///   whatever its type;
/// - `value` in a mapping whose `type` is `api_key` (the api-key auth block);
/// - header values whose name carries credentials (`Authorization`, `Cookie`, `X-Api-Key`,
///   ...), since headers are a common place to paste a token by hand;
/// - the password in a URL's `user:password@` and query parameters with secret names.
pub fn redact(tree: &Value) -> Value {
    let mut copy = tree.clone();
    redact_in_place(&mut copy);
    copy
}

fn redact_in_place(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let api_key_block = map.get("type").and_then(Value::as_str) == Some("api_key");
            for (key, value) in map.iter_mut() {
                if value.is_null() {
                    continue;
                }
                if is_secret_key(key) || (api_key_block && key == "value") {
                    *value = Value::String(MASK.into());
                } else if key.eq_ignore_ascii_case("headers")
                    && let Value::Object(headers) = value
                {
                    redact_headers(headers);
                } else {
                    redact_in_place(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_in_place),
        Value::String(s) => {
            if let Some(masked) = mask_url(s) {
                *s = masked;
            }
        }
        _ => {}
    }
}

fn redact_headers(headers: &mut Map<String, Value>) {
    for (name, value) in headers.iter_mut() {
        let normalised = name.to_ascii_lowercase().replace('-', "_");
        let sensitive = is_secret_key(&normalised)
            || ["authorization", "proxy_authorization", "cookie", "set_cookie"]
                .contains(&normalised.as_str());
        if sensitive && !value.is_null() {
            *value = Value::String(MASK.into());
        } else {
            redact_in_place(value);
        }
    }
}

/// A URL (or URL template) safe to show: the userinfo password and the values of
/// secret-named query parameters (`token`, `api_key`, `password`...) are masked.
/// `https://u:pw@h/p?token=x&a=1` → `https://u:********@h/p?token=********&a=1`.
pub fn mask_url_secrets(url: &str) -> String {
    mask_url(url).unwrap_or_else(|| url.to_string())
}

/// `scheme://user:pw@host/p?token=x` → `scheme://user:MASK@host/p?token=MASK`; `None` when
/// there is nothing to mask.
fn mask_url(s: &str) -> Option<String> {
    let authority_start = s.find("://")? + 3;
    let authority_len =
        s[authority_start..].find(['/', '?', '#']).unwrap_or(s.len() - authority_start);
    let authority_end = authority_start + authority_len;
    let mut out = String::with_capacity(s.len());
    let mut changed = false;
    match s[authority_start..authority_end].rfind('@') {
        Some(at) if s[authority_start..authority_start + at].contains(':') => {
            let colon = s[authority_start..].find(':').unwrap_or(0) + authority_start;
            out.push_str(&s[..=colon]);
            out.push_str(MASK);
            out.push_str(&s[authority_start + at..authority_end]);
            changed = true;
        }
        _ => out.push_str(&s[..authority_end]),
    }
    let rest = &s[authority_end..];
    let (before_fragment, fragment) =
        rest.split_once('#').map_or((rest, None), |(a, b)| (a, Some(b)));
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((k, _)) if is_secret_key(&k.to_ascii_lowercase().replace('-', "_")) => {
                        changed = true;
                        format!("{k}={MASK}")
                    }
                    _ => param.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    changed.then_some(out)
}

impl Config {
    /// The configuration in force as a tree in `outflow.yaml`'s shape, defaults filled in and
    /// secrets masked (see [`redact`]). Parsing it back gives the same config except for the
    /// masked values.
    pub fn redacted_value(&self) -> Value {
        let o = &self.output;
        let destinations: Vec<Value> = o
            .global_destinations
            .iter()
            .map(|g| {
                let mut entry = Map::new();
                entry.insert("name".into(), Value::String(g.name.clone()));
                if let Some(d) = &g.description {
                    entry.insert("description".into(), Value::String(d.clone()));
                }
                entry.insert("destination".into(), g.destination.to_value());
                Value::Object(entry)
            })
            .collect();
        let hosts: Vec<Value> = o
            .allowed_hosts
            .iter()
            .map(|h| match h {
                HostRule::Host(name) => Value::String(name.clone()),
                HostRule::Net(net) => Value::String(net.to_string()),
            })
            .collect();
        let mut logging = Map::new();
        if let Some(level) = &self.logging.level {
            logging.insert("level".into(), Value::String(level.clone()));
        }
        if let Some(format) = &self.logging.format {
            logging.insert("format".into(), Value::String(format.clone()));
        }
        let tree = json!({
            "output": {
                "max_concurrent_deliveries": o.max_concurrent_deliveries,
                "default_timeout": duration_value(o.default_timeout),
                "validate_on_startup": o.validate_on_startup,
                "default_retry_policy": serde_json::to_value(&o.default_retry_policy)
                    .unwrap_or(Value::Null),
                "global_destinations": destinations,
                "allow_private_networks": o.allow_private_networks,
                "allowed_hosts": hosts,
            },
            "logging": logging,
        });
        redact(&tree)
    }

    /// [`Config::redacted_value`] as YAML, for `--dry-run`.
    pub fn redacted_yaml(&self) -> String {
        serde_yaml_ng::to_string(&self.redacted_value())
            .unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }
}

/// Whole seconds as a plain number (the seed's form), anything finer as milliseconds.
fn duration_value(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        Value::from(d.as_secs())
    } else {
        Value::String(format!("{}ms", d.as_millis()))
    }
}

//! The config loader: arbitrary bytes as `outflow.yaml` → parse (YAML, `${VAR}` expansion,
//! typed model, every error collected) → destination validation with the real registry.
//! Validation builds destinations but does no I/O (the webhook client is created lazily).

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use outflow_core::config::Config;
use outflow_destinations::registry::Registry;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env: HashMap<String, String> = HashMap::new();
    let (config, errors) = Config::parse(text, &env);
    // Every error must be printable (paths and messages are built lazily in places).
    for e in &errors {
        let _ = e.to_string();
    }
    let _ = config.validate_destinations(&Registry::default());
});

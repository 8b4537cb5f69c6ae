//! Turning `--config`, `--to` and `--dest` into built destinations.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use outflow_core::config::{
    Config, ConfigError, ConfigErrors, DestinationSpec, ProcessEnv, resolve_config_path,
};
use outflow_destinations::runner::NamedDestination;
use outflow_destinations::{BuildDefaults, Destination, Registry};

use crate::cli::ConfigArg;

/// The config in force and where it came from (`None` when running on defaults).
pub struct Loaded {
    /// The parsed config.
    pub config: Config,
    /// The file it came from.
    pub path: Option<PathBuf>,
}

impl Loaded {
    /// A registry whose destinations inherit this config's `output:` defaults.
    pub fn registry(&self) -> Registry {
        Registry::new(BuildDefaults::from_output(&self.config.output))
    }
}

/// Loads the config named by `--config`, `OUTFLOW_CONFIG` or `./outflow.yaml`; with none of
/// them, the defaults (plus any `OUTFLOW_*` overrides). Every structural problem (and, with
/// `validate_destinations`, every destination problem) is reported at once.
pub fn load(arg: &ConfigArg, validate_destinations: bool) -> anyhow::Result<Loaded> {
    let path = resolve_config_path(arg.config.as_deref(), &ProcessEnv);
    if validate_destinations {
        // Validation does not depend on the inherited defaults, so the default registry
        // is the catalog; `Config::load` keeps the errors in document order.
        let config = Config::load(path.as_deref(), &ProcessEnv, &Registry::default())?;
        crate::logging::apply_config_level(config.logging.level.as_deref());
        return Ok(Loaded { config, path });
    }
    let (config, errors) = match &path {
        Some(p) => Config::load_file(p, &ProcessEnv)?,
        None => Config::parse("", &ProcessEnv),
    };
    if !errors.is_empty() {
        let source = path.as_ref().map_or("<defaults>".into(), |p| p.display().to_string());
        return Err(ConfigErrors { source, errors }.into());
    }
    crate::logging::apply_config_level(config.logging.level.as_deref());
    Ok(Loaded { config, path })
}

/// One destination the user asked for: its label and either the built destination or every
/// problem that prevented building it.
pub struct Requested {
    /// `production_logs`, or `--dest #1` for inline ones.
    pub name: String,
    /// The `type`, as written (for reports even when invalid).
    pub kind: String,
    /// The destination, or its problems.
    pub built: Result<Arc<dyn Destination>, Vec<ConfigError>>,
}

/// Resolves `--to` names and `--dest` JSON against `loaded`. With neither, every global
/// destination is requested. Unknown names fail at once, listing the known ones.
pub fn requested(
    loaded: &Loaded,
    to: &[String],
    dest: &[String],
) -> anyhow::Result<Vec<Requested>> {
    let registry = loaded.registry();
    let globals = &loaded.config.output.global_destinations;
    let mut out = Vec::new();
    let names: Vec<&str> = if to.is_empty() && dest.is_empty() {
        globals.iter().map(|g| g.name.as_str()).collect()
    } else {
        to.iter().map(String::as_str).collect()
    };
    for name in names {
        let Some(global) = globals.iter().find(|g| g.name == name) else {
            let known: Vec<&str> = globals.iter().map(|g| g.name.as_str()).collect();
            let source = match &loaded.path {
                Some(p) => format!("in {}", p.display()),
                None => "(no config file found: pass --config FILE or set OUTFLOW_CONFIG)".into(),
            };
            if known.is_empty() {
                bail!("unknown destination '{name}': there are no global_destinations {source}");
            }
            bail!("unknown destination '{name}' {source}; known: {}", known.join(", "));
        };
        let path = format!("output.global_destinations[{}].destination", global.index);
        out.push(Requested {
            name: global.name.clone(),
            kind: global.destination.kind.clone(),
            built: registry.build(&global.destination, &path),
        });
    }
    for (i, json) in dest.iter().enumerate() {
        let label = format!("--dest #{}", i + 1);
        let value: serde_json::Value = match serde_json::from_str(json) {
            Ok(v) => v,
            Err(e) => {
                out.push(Requested {
                    name: label.clone(),
                    kind: "unknown".into(),
                    built: Err(vec![ConfigError::new(label, format!("is not valid JSON: {e}"))]),
                });
                continue;
            }
        };
        let (kind, built) = match DestinationSpec::from_value(&value, &label) {
            Ok(spec) => (spec.kind.clone(), registry.build(&spec, &label)),
            Err(e) => ("unknown".into(), Err(vec![e])),
        };
        out.push(Requested { name: label, kind, built });
    }
    if out.is_empty() {
        bail!(
            "no destinations: pass --dest JSON or --to NAME, or add output.global_destinations to the config"
        );
    }
    Ok(out)
}

/// All requested destinations built, or every problem of every one of them.
pub fn build_all(requested: Vec<Requested>) -> anyhow::Result<Vec<NamedDestination>> {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for r in requested {
        match r.built {
            Ok(destination) => ok.push(NamedDestination { name: r.name, destination }),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors { source: "destinations".into(), errors }.into());
    }
    Ok(ok)
}

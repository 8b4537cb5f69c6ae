//! The filesystem destination: atomic writes of formatted, optionally compressed outputs.
//!
//! ```yaml
//! destination:
//!   type: filesystem
//!   # Required, absolute; {{variables}} are rendered per delivery.
//!   path: "/data/outputs/{{year}}/{{month}}/{{day}}/{{task_name}}_{{job_uuid}}.json"
//!   format: json            # json (default), json_compact, yaml, csv, xml, raw, ndjson, template
//!   # template: "{{task_name}}: {{json output}}"   # with format: template (Handlebars)
//!   permissions: "644"      # or "0644" or 420; default: the process umask decides
//!   create_dirs: true       # default true: create missing parent directories
//!   overwrite: false        # default false: an existing file is an error...
//!   backup_existing: false  # ...unless this keeps it as <path>.backup.<YYYYmmddTHHMMSSZ>
//!   compression: gzip       # gzip or zstd; ".gz"/".zst" is appended unless already there
//!   base_dir: /data/outputs # optional: rendered paths must stay under this directory
//!   retry_policy:           # default: output.default_retry_policy
//!     max_attempts: 3
//! ```
//!
//! A delivery renders the path, refuses it if it contains `..`, leaves `base_dir` or is
//! longer than [`MAX_PATH_BYTES`], formats and compresses the output, then writes it
//! atomically: a temp file in the target's directory, permissions, fsync, rename (a
//! no-clobber rename unless replacing is allowed), fsync of the directory. Readers see the
//! old file or the whole new one, never part of it.
//!
//! Failures that cannot fix themselves (permission denied, a missing directory with
//! `create_dirs: false`, an existing file, a read-only filesystem, a refused path) are
//! permanent; others (a full disk, an interrupted call) are retryable.

mod config;
mod write;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use outflow_core::compression::Compression;
use outflow_core::config::{ConfigError, DestinationSpec};
use outflow_core::retry::RetryPolicy;

use crate::{Attempt, BuildDefaults, CheckReport, DeliveryError, DeliveryReceipt, Destination};
use config::FilesystemConfig;
use write::WriteOptions;

/// The longest rendered path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Parses and validates a `type: filesystem` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let config = config::parse(spec, defaults, path)?;
    Ok(Arc::new(FilesystemDestination { config }))
}

/// A configured filesystem destination.
#[derive(Debug)]
pub struct FilesystemDestination {
    config: FilesystemConfig,
}

impl FilesystemDestination {
    /// Renders the target path for one delivery and checks that it may be written.
    fn target(&self, attempt: &Attempt<'_>) -> Result<PathBuf, DeliveryError> {
        let cfg = &self.config;
        let mut rendered = cfg.path.render(&attempt.render).map_err(|e| {
            DeliveryError::permanent(format!(
                "cannot render path template '{}': {e}",
                cfg.path.source()
            ))
        })?;
        if let Some(ext) = cfg.compression.extension() {
            let dotted = format!(".{ext}");
            // A path ending in "/" names a directory and is refused below, not "fixed" into
            // a hidden ".gz" file.
            if !rendered.ends_with(&dotted) && !rendered.ends_with('/') {
                rendered.push_str(&dotted);
            }
        }
        check_rendered(&rendered, cfg.base_dir.as_deref())
    }
}

/// Refuses rendered paths that could write somewhere the config did not mean: too long,
/// with NUL bytes, with `..` components, naming a directory, or outside `base_dir`.
///
/// Judged on the path's components as written, without resolving symlinks: the refusal of
/// every `..` is what keeps a variable's value from climbing out.
fn check_rendered(rendered: &str, base_dir: Option<&Path>) -> Result<PathBuf, DeliveryError> {
    if rendered.len() > MAX_PATH_BYTES {
        let head: String = rendered.chars().take(64).collect();
        return Err(DeliveryError::permanent(format!(
            "rendered path '{head}...' is {} bytes long; the limit is {MAX_PATH_BYTES}",
            rendered.len()
        )));
    }
    if rendered.contains('\0') {
        return Err(DeliveryError::permanent(format!(
            "rendered path '{}' contains a NUL byte",
            rendered.escape_default()
        )));
    }
    let path = Path::new(rendered);
    if path.components().any(|c| c == Component::ParentDir) {
        let mut msg = format!("rendered path '{rendered}' contains a '..' component");
        if let Some(base) = base_dir {
            msg.push_str(&format!("; it must stay under base_dir '{}'", base.display()));
        }
        return Err(DeliveryError::permanent(msg));
    }
    if !path.is_absolute() {
        return Err(DeliveryError::permanent(format!(
            "rendered path '{rendered}' is not absolute"
        )));
    }
    if rendered.ends_with('/') || path.file_name().is_none() {
        return Err(DeliveryError::permanent(format!(
            "rendered path '{rendered}' names a directory, not a file"
        )));
    }
    let normalized = config::normalize(path);
    if let Some(base) = base_dir
        && (!normalized.starts_with(base) || normalized == base)
    {
        return Err(DeliveryError::permanent(format!(
            "rendered path '{rendered}' is outside base_dir '{}'",
            base.display()
        )));
    }
    Ok(normalized)
}

#[async_trait]
impl Destination for FilesystemDestination {
    fn kind(&self) -> &'static str {
        "filesystem"
    }

    fn describe(&self) -> String {
        self.config.path.source().to_string()
    }

    fn isolation_key(&self) -> String {
        let root = match &self.config.base_dir {
            Some(base) => base.clone(),
            None => config::static_dir(&self.config.path),
        };
        format!("filesystem:{}", root.display())
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.config.retry_policy
    }

    async fn deliver(&self, attempt: Attempt<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        let cfg = &self.config;
        let target = self.target(&attempt)?;
        let formatted = cfg
            .format
            .render(&attempt.render)
            .map_err(|e| DeliveryError::permanent(e.to_string()))?;
        let bytes = match cfg.compression {
            Compression::None => formatted,
            c => c.compress(&formatted).map_err(|e| {
                DeliveryError::permanent(format!(
                    "cannot compress output for '{}': {e}",
                    target.display()
                ))
            })?,
        };
        let opts = WriteOptions {
            permissions: cfg.permissions,
            create_dirs: cfg.create_dirs,
            overwrite: cfg.overwrite,
            backup_existing: cfg.backup_existing,
        };
        let path = target.clone();
        let written = tokio::task::spawn_blocking(move || write::write_atomic(&path, &bytes, opts))
            .await
            .map_err(|e| {
                DeliveryError::retryable(format!(
                    "writing '{}' was interrupted: {e}",
                    target.display()
                ))
            })??;
        Ok(DeliveryReceipt {
            target: target.display().to_string(),
            bytes: written,
            ..DeliveryReceipt::default()
        })
    }

    async fn check(&self) -> Result<CheckReport, DeliveryError> {
        let started = Instant::now();
        let dir = config::static_dir(&self.config.path);
        let create_dirs = self.config.create_dirs;
        let probe_dir = dir.clone();
        tokio::task::spawn_blocking(move || check_dir(&probe_dir, create_dirs)).await.map_err(
            |e| {
                DeliveryError::retryable(format!(
                    "checking '{}' was interrupted: {e}",
                    dir.display()
                ))
            },
        )??;
        Ok(CheckReport { target: dir.display().to_string(), elapsed: started.elapsed() })
    }
}

/// Whether files could be written under `dir`: it exists, or its nearest existing ancestor
/// does and `create_dirs` allows creating the rest; either way that directory must accept a
/// new file. Nothing is left behind.
fn check_dir(dir: &Path, create_dirs: bool) -> Result<(), DeliveryError> {
    let existing =
        dir.ancestors().find(|a| std::fs::symlink_metadata(a).is_ok()).unwrap_or(Path::new("/"));
    if existing != dir && !create_dirs {
        return Err(DeliveryError::permanent(format!(
            "directory '{}' does not exist (set create_dirs: true to create it)",
            dir.display()
        )));
    }
    match std::fs::metadata(existing) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(DeliveryError::permanent(format!(
                "'{}' exists but is not a directory, so '{}' cannot be created",
                existing.display(),
                dir.display()
            )));
        }
        Err(e) => return Err(write::io_error("access directory", existing, &e)),
    }
    write::probe_writable(existing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_paths_are_confined() {
        let base = Some(Path::new("/srv/out"));
        assert_eq!(
            check_rendered("/srv/out/a/./b.json", base).unwrap(),
            Path::new("/srv/out/a/b.json")
        );
        assert_eq!(
            check_rendered("/srv/out/../etc/passwd", base).unwrap_err().message,
            "rendered path '/srv/out/../etc/passwd' contains a '..' component; it must stay under base_dir '/srv/out'"
        );
        assert_eq!(
            check_rendered("/srv/other/x", base).unwrap_err().message,
            "rendered path '/srv/other/x' is outside base_dir '/srv/out'"
        );
        assert!(check_rendered("/srv/outer/x", base).is_err());
        assert!(check_rendered("/srv/out/", base).is_err());
        assert!(check_rendered("/tmp/x/", None).is_err());
        assert!(check_rendered("/tmp/a\0b", None).is_err());
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        let err = check_rendered(&long, None).unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.message.ends_with("is 4097 bytes long; the limit is 4096"), "{}", err.message);
        assert!(check_rendered(&long[..MAX_PATH_BYTES], None).is_ok());
    }
}

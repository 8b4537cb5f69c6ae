//! The atomic write: temp file in the target's directory, fsync, rename, fsync the directory.
//!
//! Every function here blocks; callers run them in `tokio::task::spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::DeliveryError;

/// How [`write_atomic`] treats the target and its directory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteOptions {
    /// Mode bits to set on the file; `None` keeps the umask-derived default.
    pub permissions: Option<u32>,
    /// Create missing parent directories.
    pub create_dirs: bool,
    /// Replace an existing target.
    pub overwrite: bool,
    /// Keep an existing target as `<path>.backup.<timestamp>` before replacing it.
    pub backup_existing: bool,
}

/// Turns an I/O error into a delivery error naming `path` and the OS error, classified by
/// whether waiting can fix it: permissions, missing or read-only places and existing files
/// will not change by themselves; a full disk or an interrupted call may.
pub(crate) fn io_error(action: &str, path: &Path, e: &io::Error) -> DeliveryError {
    let message = format!("cannot {action} '{}': {}", path.display(), os_error_text(e));
    match e.kind() {
        ErrorKind::PermissionDenied
        | ErrorKind::NotFound
        | ErrorKind::AlreadyExists
        | ErrorKind::ReadOnlyFilesystem
        | ErrorKind::NotADirectory
        | ErrorKind::IsADirectory
        | ErrorKind::InvalidFilename
        | ErrorKind::InvalidInput => DeliveryError::permanent(message),
        _ => DeliveryError::retryable(message),
    }
}

/// The OS error's own text ("Permission denied (os error 13)"). `tempfile` wraps its errors
/// to append "at path <temp file>", a random name that would only confuse a reader of the
/// message, which already names the directory.
fn os_error_text(e: &io::Error) -> String {
    let mut text = e.to_string();
    // tempfile's wrapper keeps only the kind, not the OS code, so its suffix is cut from the
    // text; OS errors themselves never contain it.
    if e.raw_os_error().is_none()
        && e.get_ref().is_some()
        && let Some(at) = text.rfind(" at path \"")
    {
        text.truncate(at);
    }
    text
}

/// Writes `bytes` to `target` atomically; returns the number of bytes written.
///
/// Readers see either the old file or the complete new one, never a partial write, and a
/// failure leaves no temp file behind (it is deleted when dropped).
pub(crate) fn write_atomic(
    target: &Path,
    bytes: &[u8],
    opts: WriteOptions,
) -> Result<u64, DeliveryError> {
    let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("/"));
    let file_name = target.file_name().ok_or_else(|| {
        DeliveryError::permanent(format!("'{}' does not name a file", target.display()))
    })?;

    ensure_dir(dir, opts.create_dirs)?;

    match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => {
            return Err(DeliveryError::permanent(format!(
                "'{}' is a directory; the path must name a file",
                target.display()
            )));
        }
        // Refuse early so no temp file is written for nothing; the no-clobber persist
        // below still catches a file that appears in between.
        Ok(_) if !opts.overwrite && !opts.backup_existing => return Err(already_exists(target)),
        _ => {}
    }

    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| io_error("create a temporary file in", dir, &e))?;
    let tmp_path = tmp.path().to_path_buf();

    tmp.write_all(bytes).map_err(|e| io_error("write", &tmp_path, &e))?;
    if let Some(mode) = opts.permissions {
        set_mode(tmp.as_file(), mode).map_err(|e| io_error("set permissions on", &tmp_path, &e))?;
    }
    tmp.as_file().sync_all().map_err(|e| io_error("fsync", &tmp_path, &e))?;

    let replace = if opts.backup_existing {
        match backup(target)? {
            Some(_) => true,
            None => opts.overwrite,
        }
    } else {
        opts.overwrite
    };

    if replace {
        tmp.persist(target).map_err(|e| io_error("rename into", target, &e.error))?;
    } else {
        tmp.persist_noclobber(target).map_err(|e| {
            if e.error.kind() == ErrorKind::AlreadyExists {
                already_exists(target)
            } else {
                io_error("rename into", target, &e.error)
            }
        })?;
    }

    // The rename is durable only once the directory entry is; some filesystems cannot fsync
    // a directory, and the file is in place by now, so this is a warning, not a failure that
    // a retry would turn into "already exists".
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(directory = %dir.display(), error = %e, "cannot fsync directory after rename");
    }
    Ok(bytes.len() as u64)
}

fn already_exists(target: &Path) -> DeliveryError {
    DeliveryError::permanent(format!(
        "'{}' already exists (set overwrite: true or backup_existing: true)",
        target.display()
    ))
}

/// Makes sure `dir` exists, creating it when allowed.
pub(crate) fn ensure_dir(dir: &Path, create_dirs: bool) -> Result<(), DeliveryError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(DeliveryError::permanent(format!(
            "'{}' exists but is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if !create_dirs {
                return Err(DeliveryError::permanent(format!(
                    "directory '{}' does not exist (set create_dirs: true to create it)",
                    dir.display()
                )));
            }
            fs::create_dir_all(dir).map_err(|e| io_error("create directory", dir, &e))
        }
        Err(e) => Err(io_error("access directory", dir, &e)),
    }
}

/// Keeps the current `target` (if any) under a free `<target>.backup.<timestamp>[.n]` name.
///
/// A hard link keeps the old content while `target` stays in place, so the following rename
/// replaces it atomically and readers never see it missing; where hard links are not
/// supported the file is renamed instead. Returns the backup's path, `None` when there was
/// nothing to back up.
fn backup(target: &Path) -> Result<Option<PathBuf>, DeliveryError> {
    match fs::symlink_metadata(target) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("access", target, &e)),
    }
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let mut base = target.as_os_str().to_owned();
    base.push(format!(".backup.{stamp}"));
    for n in 0u32..10_000 {
        let mut name = base.clone();
        if n > 0 {
            name.push(format!(".{n}"));
        }
        let candidate = PathBuf::from(name);
        match fs::hard_link(target, &candidate) {
            Ok(()) => return Ok(Some(candidate)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(_) => {
                // No hard links here (e.g. FAT, some network filesystems): rename, checking
                // first that the name is free since rename would replace it silently.
                if fs::symlink_metadata(&candidate).is_ok() {
                    continue;
                }
                return fs::rename(target, &candidate)
                    .map(|()| Some(candidate.clone()))
                    .map_err(|e| io_error("back up", target, &e));
            }
        }
    }
    Err(DeliveryError::permanent(format!(
        "cannot back up '{}': too many backups named '{}'",
        target.display(),
        PathBuf::from(base).display()
    )))
}

#[cfg(unix)]
fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_file: &File, _mode: u32) -> io::Result<()> {
    // Unix mode bits have no equivalent to apply here.
    Ok(())
}

/// Checks that files can be created in `dir` by creating and deleting a probe file.
pub(crate) fn probe_writable(dir: &Path) -> Result<(), DeliveryError> {
    let probe = tempfile::Builder::new()
        .prefix(".outflow-check.")
        .tempfile_in(dir)
        .map_err(|e| io_error("create a file in", dir, &e))?;
    probe.close().map_err(|e| io_error("remove the probe file from", dir, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let p = Path::new("/x");
        let denied = io::Error::from_raw_os_error(13);
        let e = io_error("write", p, &denied);
        assert!(!e.is_retryable());
        assert_eq!(e.message, "cannot write '/x': Permission denied (os error 13)");
        let full = io::Error::from_raw_os_error(28); // ENOSPC
        assert!(io_error("write", p, &full).is_retryable());
        let interrupted = io::Error::from(ErrorKind::Interrupted);
        assert!(io_error("write", p, &interrupted).is_retryable());
        let wrapped = io::Error::new(
            ErrorKind::PermissionDenied,
            "Permission denied (os error 13) at path \"/x/.tmpAb12\"",
        );
        assert_eq!(
            io_error("create a file in", p, &wrapped).message,
            "cannot create a file in '/x': Permission denied (os error 13)"
        );
        let rofs = io::Error::from_raw_os_error(30); // EROFS
        assert!(!io_error("write", p, &rofs).is_retryable());
    }
}

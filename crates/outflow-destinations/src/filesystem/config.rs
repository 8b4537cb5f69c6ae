//! Parsing and validation of a `type: filesystem` body.

use std::path::{Component, Path, PathBuf};

use outflow_core::compression::{COMPRESSION_NAMES, Compression};
use outflow_core::config::units;
use outflow_core::config::{ConfigError, DestinationSpec, FieldReader};
use outflow_core::format::{FORMAT_NAMES, OutputFormat};
use outflow_core::retry::RetryPolicy;
use outflow_core::template::Template;

use crate::{BuildDefaults, common};

/// A validated filesystem destination configuration.
#[derive(Debug, Clone)]
pub(crate) struct FilesystemConfig {
    /// The target file, as a template; its source starts with `/`.
    pub path: Template,
    /// How the output is turned into bytes.
    pub format: OutputFormat,
    /// Mode bits for the written file; `None` leaves the OS default (umask).
    pub permissions: Option<u32>,
    /// Create missing parent directories.
    pub create_dirs: bool,
    /// Replace an existing file.
    pub overwrite: bool,
    /// Keep an existing file as `<path>.backup.<timestamp>` before replacing it.
    pub backup_existing: bool,
    /// Applied after formatting; its extension is appended to the path once.
    pub compression: Compression,
    /// When set, every rendered path must stay under this directory.
    pub base_dir: Option<PathBuf>,
    /// Retries for this destination.
    pub retry_policy: RetryPolicy,
}

const PATH_EXPECTED: &str = "an absolute file path, optionally with {{variables}}, e.g. \"/data/outputs/{{job_uuid}}.json\"";

/// Reads every key of `spec`, collecting every problem under `path`.
pub(crate) fn parse(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<FilesystemConfig, Vec<ConfigError>> {
    let mut r = FieldReader::new(&spec.fields, path);

    let target = r.template("path", true, PATH_EXPECTED);
    if let Some(t) = &target {
        // A relative path would depend on whatever directory the process happens to run in;
        // the static prefix decides it, since variables are appended to it.
        if !t.source().starts_with('/') {
            r.error("path", format!("must be absolute (start with '/'), got '{}'", t.source()));
        }
    }

    let format = read_format(&mut r);

    let permissions = match r.raw("permissions") {
        Some(v) => match units::permissions_from_value(v) {
            Ok(mode) => Some(mode),
            Err(msg) => {
                r.error("permissions", msg);
                None
            }
        },
        None => None,
    };

    let create_dirs = r.bool("create_dirs").unwrap_or(true);
    let overwrite = r.bool("overwrite").unwrap_or(false);
    let backup_existing = r.bool("backup_existing").unwrap_or(false);

    let compression =
        r.one_of("compression", COMPRESSION_NAMES).and_then(Compression::parse).unwrap_or_default();

    let base_dir = r.string("base_dir").and_then(|dir| match validate_base_dir(&dir) {
        Ok(p) => Some(p),
        Err(msg) => {
            r.error("base_dir", msg);
            None
        }
    });
    if let (Some(t), Some(base)) = (&target, &base_dir)
        && t.source().starts_with('/')
        && let Some(msg) = static_prefix_conflict(t, base)
    {
        r.error("path", msg);
    }

    let retry_policy = common::read_retry_policy(&mut r, defaults);

    let errors = r.finish();
    match (target, format) {
        (Some(path), Some(format)) if errors.is_empty() => Ok(FilesystemConfig {
            path,
            format,
            permissions,
            create_dirs,
            overwrite,
            backup_existing,
            compression,
            base_dir,
            retry_policy,
        }),
        _ => Err(errors),
    }
}

/// `format` (default `json`) and, for `format: template`, the `template` text.
fn read_format(r: &mut FieldReader<'_>) -> Option<OutputFormat> {
    let name_given = r.raw("format").is_some();
    let name = r.one_of("format", FORMAT_NAMES);
    let template = r.string("template");
    if name_given && name.is_none() {
        return None; // already reported by one_of
    }
    let name = name.unwrap_or("json");
    match (name, &template) {
        ("template", None) => {
            r.error(
                "template",
                "is required when format is 'template' (a Handlebars template such as \
                 \"{{task_name}}: {{json output}}\")",
            );
            None
        }
        (other, Some(_)) if other != "template" => {
            r.error(
                "template",
                format!("is only used with format: template (format is '{other}')"),
            );
            None
        }
        _ => match OutputFormat::parse(name, template.as_deref()) {
            Ok(f) => Some(f),
            Err(msg) => {
                let key = if name == "template" { "template" } else { "format" };
                r.error(key, msg);
                None
            }
        },
    }
}

fn validate_base_dir(dir: &str) -> Result<PathBuf, String> {
    if !dir.starts_with('/') {
        return Err(format!("must be an absolute directory (start with '/'), got '{dir}'"));
    }
    let p = Path::new(dir);
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(format!("must not contain '..' components, got '{dir}'"));
    }
    Ok(normalize(p))
}

/// `path` without `.` components or repeated separators (no filesystem access, so symlinks
/// are not resolved: confinement is judged on the path as written).
pub(crate) fn normalize(path: &Path) -> PathBuf {
    path.components().filter(|c| *c != Component::CurDir).collect()
}

/// The literal text before the template's first variable, with `\{{` unescaped.
pub(crate) fn static_prefix(template: &Template) -> String {
    let src = template.source();
    let mut out = String::new();
    let mut i = 0;
    while i < src.len() {
        if src[i..].starts_with("\\{{") {
            out.push_str("{{");
            i += 3;
        } else if src[i..].starts_with("{{") {
            break;
        } else {
            let ch = src[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The directory a template's path surely lies in: the static prefix up to its last `/`
/// (the whole parent directory when the path has no variables).
pub(crate) fn static_dir(template: &Template) -> PathBuf {
    let prefix = static_prefix(template);
    let cut = prefix.rfind('/').map_or(0, |i| i + 1);
    let dir = normalize(Path::new(&prefix[..cut]));
    if dir.as_os_str().is_empty() { PathBuf::from("/") } else { dir }
}

/// When the directories the path template starts with already leave `base`, no rendering
/// can bring it back (renderings with `..` are refused), so it is a config error.
fn static_prefix_conflict(template: &Template, base: &Path) -> Option<String> {
    let dir = static_dir(template);
    let inside = dir.starts_with(base) || (!template.is_static() && base.starts_with(&dir));
    let file_inside = !template.is_static() || normalize(Path::new(template.source())) != *base;
    if inside && file_inside {
        return None;
    }
    Some(format!(
        "'{}' is outside base_dir '{}': the path must stay under base_dir",
        template.source(),
        base.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    #[test]
    fn static_prefix_and_dir() {
        assert_eq!(static_prefix(&t("/data/{{year}}/x.json")), "/data/");
        assert_eq!(static_prefix(&t("/a/\\{{b/{{c}}")), "/a/{{b/");
        assert_eq!(static_dir(&t("/data/out_{{x}}.json")), PathBuf::from("/data"));
        assert_eq!(static_dir(&t("/data/outputs/{{x}}/f")), PathBuf::from("/data/outputs"));
        assert_eq!(static_dir(&t("/data/./f.json")), PathBuf::from("/data"));
        assert_eq!(static_dir(&t("/{{x}}")), PathBuf::from("/"));
    }

    #[test]
    fn prefix_conflicts_with_base_dir() {
        let base = Path::new("/srv/out");
        assert!(static_prefix_conflict(&t("/srv/out/{{x}}.json"), base).is_none());
        assert!(static_prefix_conflict(&t("/srv/{{x}}.json"), base).is_none());
        assert!(static_prefix_conflict(&t("/srv/out/a/b.json"), base).is_none());
        assert_eq!(
            static_prefix_conflict(&t("/etc/{{x}}"), base).unwrap(),
            "'/etc/{{x}}' is outside base_dir '/srv/out': the path must stay under base_dir"
        );
        assert!(static_prefix_conflict(&t("/srv/outer/{{x}}"), base).is_some());
        assert!(static_prefix_conflict(&t("/srv/x.json"), base).is_some());
        assert!(static_prefix_conflict(&t("/srv/out"), base).is_some());
    }
}

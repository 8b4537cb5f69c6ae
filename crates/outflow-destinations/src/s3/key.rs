//! Object keys: `[prefix/][partition/]key[.gz|.zst]`, rendered per delivery and checked.

use outflow_core::compression::Compression;
use outflow_core::context::RenderContext;
use outflow_core::template::{Template, VarSource};

use crate::DeliveryError;

/// The longest key S3 accepts, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// Which date parts a partition holds (seed 004's `partitionFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionFormat {
    /// `year/month/day`.
    Day,
    /// `year/month/day/hour`.
    Hour,
    /// `year-month-day`: one `date` segment.
    Date,
}

/// Date partitions inserted between the prefix and the key, from the job's completion time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    /// No partition segments.
    None,
    /// Hive style, for Athena/Spark/Trino: `year=2025/month=01/day=15/`.
    Hive(PartitionFormat),
    /// Bare values: `2025/01/15/`.
    Plain(PartitionFormat),
}

impl Partitioning {
    /// The partition segments for `ctx` (without a trailing `/`), or `None`.
    fn render(&self, ctx: &RenderContext<'_>) -> Option<String> {
        let (hive, format) = match *self {
            Partitioning::None => return None,
            Partitioning::Hive(f) => (true, f),
            Partitioning::Plain(f) => (false, f),
        };
        let var = |name: &str| ctx.var(name).map(|v| v.into_owned()).unwrap_or_default();
        let seg = |name: &str| if hive { format!("{name}={}", var(name)) } else { var(name) };
        Some(match format {
            PartitionFormat::Day => format!("{}/{}/{}", seg("year"), seg("month"), seg("day")),
            PartitionFormat::Hour => {
                format!("{}/{}/{}/{}", seg("year"), seg("month"), seg("day"), seg("hour"))
            }
            PartitionFormat::Date => seg("date"),
        })
    }
}

/// How keys are built for one destination.
#[derive(Debug, Clone)]
pub struct KeyBuilder<'a> {
    /// `prefix`, joined to the rest with one `/`.
    pub prefix: Option<&'a Template>,
    /// Date partitions.
    pub partitioning: Partitioning,
    /// The `key` template.
    pub key: &'a Template,
    /// Its extension is appended unless the key already ends with it.
    pub compression: Compression,
}

impl KeyBuilder<'_> {
    /// The key of one delivery, checked.
    pub fn render(&self, ctx: &RenderContext<'_>) -> Result<String, DeliveryError> {
        let base = self.render_base(ctx)?;
        check_key(&self.with_compression_extension(base))
    }

    /// The key of a batch whose first record is `ctx`: the first record's key without its
    /// format extension, then `.batch-<records>-<hash of every delivery id>.ndjson` (and the
    /// compression extension). The same batch always gets the same key; a different batch
    /// starting with the same record gets another one, so it never overwrites records.
    pub fn render_batch(
        &self,
        first: &RenderContext<'_>,
        delivery_ids: &[&str],
    ) -> Result<String, DeliveryError> {
        let base = self.render_base(first)?;
        let base = match self.compression.extension() {
            Some(ext) => base.strip_suffix(&format!(".{ext}")).map(str::to_string).unwrap_or(base),
            None => base,
        };
        let stem = strip_format_extension(&base);
        let key =
            format!("{stem}.batch-{}-{:016x}.ndjson", delivery_ids.len(), fnv1a(delivery_ids));
        check_key(&self.with_compression_extension(key))
    }

    fn render_base(&self, ctx: &RenderContext<'_>) -> Result<String, DeliveryError> {
        let render = |t: &Template, what: &str| {
            t.render(ctx).map_err(|e| {
                DeliveryError::permanent(format!(
                    "cannot render {what} template '{}': {e}",
                    t.source()
                ))
            })
        };
        let mut out = String::new();
        if let Some(prefix) = self.prefix {
            let p = render(prefix, "prefix")?;
            let p = p.trim_end_matches('/');
            if !p.is_empty() {
                out.push_str(p);
                out.push('/');
            }
        }
        if let Some(part) = self.partitioning.render(ctx) {
            out.push_str(&part);
            out.push('/');
        }
        out.push_str(&render(self.key, "key")?);
        Ok(out)
    }

    fn with_compression_extension(&self, mut key: String) -> String {
        if let Some(ext) = self.compression.extension() {
            let dotted = format!(".{ext}");
            if !key.ends_with(&dotted) {
                key.push_str(&dotted);
            }
        }
        key
    }
}

/// Drops a format extension (`.json`, `.ndjson`, `.jsonl`, `.txt`...) from the last segment.
fn strip_format_extension(key: &str) -> &str {
    const FORMAT_EXTENSIONS: &[&str] =
        &["json", "ndjson", "jsonl", "yaml", "yml", "csv", "xml", "txt", "bin"];
    let last = key.rsplit('/').next().unwrap_or(key);
    match last.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && FORMAT_EXTENSIONS.contains(&ext) => {
            &key[..key.len() - ext.len() - 1]
        }
        _ => key,
    }
}

/// FNV-1a over the ids, each followed by a newline: stable across Rust versions and
/// platforms, unlike `std`'s hasher, so a retried batch renders the same key.
fn fnv1a(ids: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in ids.iter().flat_map(|id| id.bytes().chain(std::iter::once(b'\n'))) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Refuses keys S3 would reject or that would surprise: too long, empty segments, `.`/`..`
/// segments, a leading or trailing `/`, control characters.
pub fn check_key(key: &str) -> Result<String, DeliveryError> {
    let refuse = |why: &str| {
        let shown: String = key.chars().take(120).collect::<String>().escape_default().to_string();
        Err(DeliveryError::permanent(format!("rendered key '{shown}' {why}")))
    };
    if key.is_empty() {
        return refuse("is empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return refuse(&format!("is {} bytes long; S3's limit is {MAX_KEY_BYTES}", key.len()));
    }
    if key.chars().any(char::is_control) {
        return refuse("contains control characters");
    }
    if key.starts_with('/') || key.ends_with('/') {
        return refuse("starts or ends with '/'");
    }
    if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return refuse("has an empty, '.' or '..' segment");
    }
    Ok(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use outflow_core::context::JobContext;
    use outflow_core::output::Output;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    fn job() -> JobContext {
        let mut job = JobContext::new_now();
        job.task_name = Some("report".into());
        job.completed_at = chrono::Utc.with_ymd_and_hms(2025, 1, 15, 7, 8, 9).unwrap();
        job
    }

    fn render(prefix: Option<&str>, part: Partitioning, key: &str, c: Compression) -> String {
        let (job, out) = (job(), Output::Text("x".into()));
        let ctx = RenderContext::new(&job, &out, "d1");
        let prefix = prefix.map(t);
        let key = t(key);
        KeyBuilder { prefix: prefix.as_ref(), partitioning: part, key: &key, compression: c }
            .render(&ctx)
            .unwrap()
    }

    #[test]
    fn prefix_partitions_and_key_join_with_one_slash() {
        let hive = Partitioning::Hive(PartitionFormat::Day);
        assert_eq!(
            render(Some("archive/"), hive, "{{delivery_id}}.json", Compression::None),
            "archive/year=2025/month=01/day=15/d1.json"
        );
        assert_eq!(
            render(
                Some("archive"),
                Partitioning::Hive(PartitionFormat::Hour),
                "k",
                Compression::None
            ),
            "archive/year=2025/month=01/day=15/hour=07/k"
        );
        assert_eq!(
            render(None, Partitioning::Hive(PartitionFormat::Date), "k", Compression::None),
            "date=2025-01-15/k"
        );
        assert_eq!(
            render(
                None,
                Partitioning::Plain(PartitionFormat::Day),
                "{{task_name}}",
                Compression::None
            ),
            "2025/01/15/report"
        );
        assert_eq!(render(Some(""), Partitioning::None, "k", Compression::None), "k");
    }

    #[test]
    fn compression_extension_is_appended_once() {
        let none = Partitioning::None;
        assert_eq!(render(None, none, "a.json.gz", Compression::Gzip), "a.json.gz");
        assert_eq!(render(None, none, "a.json", Compression::Gzip), "a.json.gz");
        assert_eq!(render(None, none, "a.json", Compression::Zstd), "a.json.zst");
        assert_eq!(render(None, none, "a.json.zst", Compression::Zstd), "a.json.zst");
    }

    #[test]
    fn batch_keys_are_stable_per_batch() {
        let (job, out) = (job(), Output::Text("x".into()));
        let ctx = RenderContext::new(&job, &out, "d1");
        let key = t("logs/{{delivery_id}}.json.gz");
        let b = KeyBuilder {
            prefix: None,
            partitioning: Partitioning::None,
            key: &key,
            compression: Compression::Gzip,
        };
        let one = b.render_batch(&ctx, &["d1", "d2"]).unwrap();
        assert!(one.starts_with("logs/d1.batch-2-"), "{one}");
        assert!(one.ends_with(".ndjson.gz"), "{one}");
        assert_eq!(one, b.render_batch(&ctx, &["d1", "d2"]).unwrap());
        assert_ne!(one, b.render_batch(&ctx, &["d1", "d3"]).unwrap());
        assert_eq!(strip_format_extension("a.b/c"), "a.b/c");
        assert_eq!(strip_format_extension("a/.json"), "a/.json");
        assert_eq!(strip_format_extension("a/v1.2"), "a/v1.2");
    }

    #[test]
    fn bad_keys_are_refused() {
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a\u{1}b"] {
            let err = check_key(bad).unwrap_err();
            assert!(!err.is_retryable());
            assert!(err.message.starts_with("rendered key '"), "{}", err.message);
        }
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(check_key("a b/ü{x}%.json").is_ok());
    }
}

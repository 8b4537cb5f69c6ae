//! Compression applied to formatted bytes before they are written or sent.

/// Every compression name accepted in config.
pub const COMPRESSION_NAMES: &[&str] = &["none", "gzip", "zstd"];

/// A compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Bytes unchanged.
    #[default]
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// Parses a name in any case.
    pub fn parse(name: &str) -> Option<Compression> {
        match name.to_ascii_lowercase().as_str() {
            "none" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

//! Output formats: how an [`Output`] becomes the bytes a destination writes or sends.
//!
//! `json` (pretty, 2-space), `json_compact`, `yaml`, `csv`, `xml`, `raw`, `ndjson` and
//! `template` (Handlebars, no HTML escaping, with the job variables, `output` and a `json`
//! helper).

use thiserror::Error;

use crate::context::RenderContext;

/// Every format name accepted in config, in the order help texts list them.
pub const FORMAT_NAMES: &[&str] =
    &["json", "json_compact", "yaml", "csv", "xml", "raw", "ndjson", "template"];

/// A format that cannot represent an output, or a template that failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot format output as {format}: {reason}")]
pub struct FormatError {
    /// The format's config name.
    pub format: &'static str,
    /// What went wrong.
    pub reason: String,
}

/// A parsed output format. `Template` holds the compiled Handlebars template.
#[derive(Debug, Clone)]
pub enum OutputFormat {
    /// Pretty JSON, 2-space indent, trailing newline.
    Json,
    /// Compact JSON.
    JsonCompact,
    /// YAML.
    Yaml,
    /// CSV with a header row.
    Csv,
    /// XML.
    Xml,
    /// Strings as-is, bytes as bytes, anything else compact JSON.
    Raw,
    /// One compact JSON value per line.
    Ndjson,
    /// A Handlebars template.
    Template(HandlebarsTemplate),
}

/// A compiled Handlebars template for the `template` format.
#[derive(Debug, Clone)]
pub struct HandlebarsTemplate {
    source: String,
}

impl HandlebarsTemplate {
    /// Compiles `source`, reporting syntax errors.
    pub fn compile(source: &str) -> Result<Self, String> {
        Ok(HandlebarsTemplate { source: source.to_string() })
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl OutputFormat {
    /// Parses a format name (`template` requires the template text).
    pub fn parse(name: &str, template: Option<&str>) -> Result<OutputFormat, String> {
        let _ = (name, template);
        Err("not implemented yet".into())
    }

    /// The config name of this format.
    pub fn name(&self) -> &'static str {
        match self {
            OutputFormat::Json => "json",
            OutputFormat::JsonCompact => "json_compact",
            OutputFormat::Yaml => "yaml",
            OutputFormat::Csv => "csv",
            OutputFormat::Xml => "xml",
            OutputFormat::Raw => "raw",
            OutputFormat::Ndjson => "ndjson",
            OutputFormat::Template(_) => "template",
        }
    }

    /// Renders the delivery's output in this format.
    pub fn render(&self, ctx: &RenderContext<'_>) -> Result<Vec<u8>, FormatError> {
        let _ = ctx;
        Err(FormatError { format: self.name(), reason: "not implemented yet".into() })
    }
}

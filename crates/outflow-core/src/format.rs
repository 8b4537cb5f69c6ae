//! Output formats: how an [`Output`] becomes the bytes a destination writes or sends.
//!
//! | name           | JSON value                     | text output        | binary output |
//! |----------------|--------------------------------|--------------------|---------------|
//! | `json`         | pretty, 2-space indent, `\n`   | a JSON string      | error         |
//! | `json_compact` | compact, no trailing newline   | a JSON string      | error         |
//! | `yaml`         | YAML document                  | a YAML string      | error         |
//! | `csv`          | see below                      | error              | error         |
//! | `xml`          | see below                      | `<output>` text    | error         |
//! | `raw`          | strings unquoted, else compact | as-is              | as-is         |
//! | `ndjson`       | array: one value per line      | one JSON string    | error         |
//! | `template`     | Handlebars, see below          | `output` is string | base64 string |
//!
//! Binary outputs are refused by every structured format rather than silently base64-encoded,
//! because a file named `.json` that holds base64 is rarely what the user meant; `raw` is the
//! way to write bytes.
//!
//! **CSV.** An array of objects becomes a header row plus one row per object; the columns are
//! the union of the objects' keys in first-seen order and a missing key is an empty cell. A
//! single object is one row. Strings are written as-is, numbers and booleans as their JSON
//! text, `null` as an empty cell, nested arrays and objects as compact JSON. Quoting follows
//! RFC 4180 (only where needed); lines end in `\n`. An empty array (or objects without keys)
//! produces no bytes at all: there is no column to put in a header.
//!
//! **XML.** The document is `<?xml version="1.0" encoding="UTF-8"?>` followed by a single
//! `<output>` element, indented by two spaces per level and ending in a newline:
//! - an object's entries become child elements named after their keys, in order; a key that
//!   is not a valid XML 1.0 name (or contains `:`, or starts with `xml` in any case, which
//!   XML reserves) becomes `<item key="the original key">` instead;
//! - an array's elements become repeated `<item>` children;
//! - `null`, `{}` and `[]` are empty elements (`<key/>`);
//! - strings, numbers and booleans are escaped text (`<n>1</n>`, `<ok>true</ok>`);
//! - a text output is the text of `<output>`.
//!
//! A string holding a character XML 1.0 cannot carry (e.g. U+0000) is an error, not a
//! silently broken document.
//!
//! **Template.** Handlebars 6 in strict mode (a missing variable is an error naming it) with
//! HTML escaping off. The data is [`RenderContext::to_json`]: every template variable,
//! `output` (the parsed output value), `output_data` and `meta`. A `json` helper writes a
//! value as compact JSON (`{{json output}}`) or pretty JSON (`{{json output pretty=true}}`).

use std::sync::Arc;

use handlebars::{Context, Handlebars, Helper, HelperResult, RenderErrorReason, no_escape};
use serde_json::Value;
use thiserror::Error;

use crate::context::RenderContext;
use crate::output::Output;

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

/// The registry name of the single template each [`HandlebarsTemplate`] holds.
const TEMPLATE_NAME: &str = "output";

/// A compiled Handlebars template for the `template` format.
///
/// Compiled once (at config validation) and shared: cloning is cheap and rendering never
/// re-parses the source.
#[derive(Clone)]
pub struct HandlebarsTemplate {
    source: Arc<str>,
    registry: Arc<Handlebars<'static>>,
}

impl std::fmt::Debug for HandlebarsTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The registry's Debug dumps the whole parsed tree; the source says everything.
        f.debug_struct("HandlebarsTemplate").field("source", &self.source).finish()
    }
}

impl HandlebarsTemplate {
    /// Compiles `source`, reporting syntax errors with their line and column.
    pub fn compile(source: &str) -> Result<Self, String> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(no_escape);
        registry.register_helper("json", Box::new(json_helper));
        registry.register_template_string(TEMPLATE_NAME, source).map_err(|e| match e.pos() {
            Some((line, column)) if is_end(source, line, column) => format!(
                "invalid Handlebars template at line {line}, column {column}: the template \
                 ends inside an expression or an open block (is a {{{{/...}}}} missing?)"
            ),
            Some((line, column)) => format!(
                "invalid Handlebars template at line {line}, column {column}: {}",
                e.reason()
            ),
            None => format!("invalid Handlebars template: {}", e.reason()),
        })?;
        Ok(HandlebarsTemplate { source: Arc::from(source), registry: Arc::new(registry) })
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the template with `data` as its context.
    pub fn render_value(&self, data: &Value) -> Result<String, String> {
        self.registry.render(TEMPLATE_NAME, data).map_err(|e| match e.reason() {
            RenderErrorReason::MissingVariable(Some(name)) => {
                format!("Template variable '{name}' not found")
            }
            RenderErrorReason::MissingVariable(None) => "Template variable not found".to_string(),
            other => match (e.line_no, e.column_no) {
                (Some(line), Some(column)) => format!("{other} (line {line}, column {column})"),
                _ => other.to_string(),
            },
        })
    }
}

/// Whether a parse error's 1-based position is the end of `source`, where the parser's list
/// of expected tokens says less than "something was left open".
fn is_end(source: &str, line: usize, column: usize) -> bool {
    let last = source.trim_end();
    let last_line = last.lines().count().max(1);
    let last_len = last.lines().last().map_or(0, |l| l.chars().count());
    line > last_line || (line == last_line && column > last_len)
}

/// `{{json value}}` / `{{json value pretty=true}}`: the value as JSON text.
fn json_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut handlebars::RenderContext<'_, '_>,
    out: &mut dyn handlebars::Output,
) -> HelperResult {
    let value = h.param(0).ok_or(RenderErrorReason::ParamNotFoundForIndex("json", 0))?;
    // Strict mode covers `{{x}}` but not helper parameters; a typo in `{{json outptu}}`
    // must not quietly render `null`.
    if value.is_value_missing() {
        return Err(RenderErrorReason::MissingVariable(value.relative_path().cloned()).into());
    }
    let pretty = match h.hash_get("pretty").map(|p| p.value()) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(RenderErrorReason::Other(format!(
                "json helper: pretty must be true or false, got {other}"
            ))
            .into());
        }
    };
    let text = if pretty {
        serde_json::to_string_pretty(value.value())
    } else {
        serde_json::to_string(value.value())
    }
    .map_err(|e| RenderErrorReason::Other(format!("json helper: {e}")))?;
    out.write(&text)?;
    Ok(())
}

impl OutputFormat {
    /// Parses a format name in any case (`json`, `JSON`); `template` requires the template
    /// text, which is compiled here so syntax errors surface at config validation.
    pub fn parse(name: &str, template: Option<&str>) -> Result<OutputFormat, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "json" => OutputFormat::Json,
            "json_compact" => OutputFormat::JsonCompact,
            "yaml" => OutputFormat::Yaml,
            "csv" => OutputFormat::Csv,
            "xml" => OutputFormat::Xml,
            "raw" => OutputFormat::Raw,
            "ndjson" => OutputFormat::Ndjson,
            "template" => match template {
                Some(source) => OutputFormat::Template(HandlebarsTemplate::compile(source)?),
                None => {
                    return Err("format 'template' needs a 'template' with the Handlebars \
                                template text"
                        .to_string());
                }
            },
            _ => {
                return Err(format!(
                    "unknown format '{name}'; valid formats: {}",
                    FORMAT_NAMES.join(", ")
                ));
            }
        })
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

    /// The media type of this format's bytes when the output is not known. `raw` says
    /// `application/octet-stream`; prefer [`OutputFormat::content_type_for`] when it is.
    pub fn content_type(&self) -> &'static str {
        match self {
            OutputFormat::Json | OutputFormat::JsonCompact => "application/json",
            OutputFormat::Yaml => "application/yaml",
            OutputFormat::Csv => "text/csv; charset=utf-8",
            OutputFormat::Xml => "application/xml",
            OutputFormat::Raw => "application/octet-stream",
            OutputFormat::Ndjson => "application/x-ndjson",
            OutputFormat::Template(_) => "text/plain; charset=utf-8",
        }
    }

    /// The media type of this format's bytes for `output`: `raw` text is `text/plain`, raw
    /// JSON (other than a bare string) is `application/json`, raw binary is
    /// `application/octet-stream`.
    pub fn content_type_for(&self, output: &Output) -> &'static str {
        match (self, output) {
            (OutputFormat::Raw, Output::Text(_) | Output::Json(Value::String(_))) => {
                "text/plain; charset=utf-8"
            }
            (OutputFormat::Raw, Output::Json(_)) => "application/json",
            _ => self.content_type(),
        }
    }

    /// The usual file extension (without the dot) when the output is not known: `raw` is
    /// `bin`; prefer [`OutputFormat::extension_for`] when it is.
    pub fn extension(&self) -> &'static str {
        match self {
            OutputFormat::Json | OutputFormat::JsonCompact => "json",
            OutputFormat::Yaml => "yaml",
            OutputFormat::Csv => "csv",
            OutputFormat::Xml => "xml",
            OutputFormat::Raw => "bin",
            OutputFormat::Ndjson => "ndjson",
            OutputFormat::Template(_) => "txt",
        }
    }

    /// The usual file extension for `output`: `raw` text is `txt`, raw JSON `json`, raw
    /// binary `bin`.
    pub fn extension_for(&self, output: &Output) -> &'static str {
        match (self, output) {
            (OutputFormat::Raw, Output::Text(_) | Output::Json(Value::String(_))) => "txt",
            (OutputFormat::Raw, Output::Json(_)) => "json",
            _ => self.extension(),
        }
    }

    /// Renders the delivery's output in this format.
    pub fn render(&self, ctx: &RenderContext<'_>) -> Result<Vec<u8>, FormatError> {
        let err = |reason: String| FormatError { format: self.name(), reason };
        if let OutputFormat::Template(t) = self {
            return t.render_value(&ctx.to_json()).map(String::into_bytes).map_err(err);
        }
        self.render_output(ctx.output).map_err(err)
    }

    /// Every format but `template` depends only on the output.
    fn render_output(&self, output: &Output) -> Result<Vec<u8>, String> {
        if let OutputFormat::Raw = self {
            return Ok(match output {
                Output::Text(t) => t.as_bytes().to_vec(),
                Output::Binary(b) => b.to_vec(),
                Output::Json(Value::String(s)) => s.as_bytes().to_vec(),
                Output::Json(v) => v.to_string().into_bytes(),
            });
        }
        let value = match output {
            Output::Json(v) => std::borrow::Cow::Borrowed(v),
            Output::Text(t) => std::borrow::Cow::Owned(Value::String(t.clone())),
            Output::Binary(_) => {
                return Err(format!(
                    "binary output cannot be written as {}; use format: raw",
                    self.name()
                ));
            }
        };
        match self {
            OutputFormat::Json => {
                let mut bytes = serde_json::to_vec_pretty(&*value).map_err(|e| e.to_string())?;
                bytes.push(b'\n');
                Ok(bytes)
            }
            OutputFormat::JsonCompact => serde_json::to_vec(&*value).map_err(|e| e.to_string()),
            OutputFormat::Yaml => {
                serde_yaml_ng::to_string(&*value).map(String::into_bytes).map_err(|e| e.to_string())
            }
            OutputFormat::Csv => match output {
                Output::Json(v) => render_csv(v),
                _ => Err(CSV_SHAPE.to_string()),
            },
            OutputFormat::Xml => render_xml(&value),
            OutputFormat::Ndjson => {
                let items: &[Value] = match &*value {
                    Value::Array(items) => items,
                    single => std::slice::from_ref(single),
                };
                let mut bytes = Vec::new();
                for item in items {
                    serde_json::to_writer(&mut bytes, item).map_err(|e| e.to_string())?;
                    bytes.push(b'\n');
                }
                Ok(bytes)
            }
            OutputFormat::Raw | OutputFormat::Template(_) => unreachable!("handled above"),
        }
    }
}

const CSV_SHAPE: &str = "csv needs an array of objects or an object";

fn render_csv(value: &Value) -> Result<Vec<u8>, String> {
    let rows: Vec<&serde_json::Map<String, Value>> = match value {
        Value::Object(obj) => vec![obj],
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(obj) => Ok(obj),
                other => Err(format!(
                    "{CSV_SHAPE}; element {i} is {}",
                    crate::config::reader::type_name(other)
                )),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(format!("{CSV_SHAPE}, got {}", crate::config::reader::type_name(other)));
        }
    };
    let mut columns: Vec<&str> = Vec::new();
    for row in &rows {
        for key in row.keys() {
            if !columns.contains(&key.as_str()) {
                columns.push(key);
            }
        }
    }
    if columns.is_empty() {
        return Ok(Vec::new());
    }
    let mut writer =
        csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    let csv_err = |e: csv::Error| e.to_string();
    writer.write_record(&columns).map_err(csv_err)?;
    for row in rows {
        let cells = columns.iter().map(|c| match row.get(*c) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        });
        writer.write_record(cells).map_err(csv_err)?;
    }
    writer.into_inner().map_err(|e| e.to_string())
}

fn render_xml(value: &Value) -> Result<Vec<u8>, String> {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml_element(&mut out, "output", None, value, 0)?;
    Ok(out.into_bytes())
}

/// Writes `<name key="...">value</name>` at `depth`, followed by a newline.
fn xml_element(
    out: &mut String,
    name: &str,
    key_attr: Option<&str>,
    value: &Value,
    depth: usize,
) -> Result<(), String> {
    let indent = "  ".repeat(depth);
    out.push_str(&indent);
    out.push('<');
    out.push_str(name);
    if let Some(key) = key_attr {
        out.push_str(" key=\"");
        out.push_str(&xml_escape(key)?);
        out.push('"');
    }
    let empty = match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    if empty {
        out.push_str("/>\n");
        return Ok(());
    }
    out.push('>');
    match value {
        Value::Array(items) => {
            out.push('\n');
            for item in items {
                xml_element(out, "item", None, item, depth + 1)?;
            }
            out.push_str(&indent);
        }
        Value::Object(entries) => {
            out.push('\n');
            for (key, item) in entries {
                if is_xml_name(key) {
                    xml_element(out, key, None, item, depth + 1)?;
                } else {
                    xml_element(out, "item", Some(key), item, depth + 1)?;
                }
            }
            out.push_str(&indent);
        }
        Value::String(s) => out.push_str(&xml_escape(s)?),
        scalar => out.push_str(&scalar.to_string()),
    }
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
    Ok(())
}

/// Escapes text or an attribute value, refusing characters XML 1.0 cannot carry at all.
fn xml_escape(s: &str) -> Result<String, String> {
    if let Some(c) = s.chars().find(|&c| !is_xml_char(c)) {
        return Err(format!(
            "the string {s:?} contains U+{:04X}, which XML 1.0 cannot represent",
            c as u32
        ));
    }
    Ok(quick_xml::escape::escape(s).into_owned())
}

/// XML 1.0 `Char`; Rust `char`s are never surrogates, so only the gaps below remain.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// XML 1.0 (5th edition) `Name`, minus `:` (namespaces) and the reserved `xml` prefix.
fn is_xml_name(s: &str) -> bool {
    fn start(c: char) -> bool {
        matches!(c,
            'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}'
            | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}'
            | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}'
            | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
            | '\u{10000}'..='\u{EFFFF}')
    }
    fn rest(c: char) -> bool {
        start(c)
            || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}'
                | '\u{203F}'..='\u{2040}')
    }
    let mut chars = s.chars();
    let Some(first) = chars.next() else { return false };
    start(first) && chars.all(rest) && !s.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("xml"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::JobContext;
    use bytes::Bytes;
    use serde_json::json;

    fn render(format: &OutputFormat, output: Output) -> Result<Vec<u8>, FormatError> {
        let mut job = JobContext::new_now();
        job.task_name = Some("report".into());
        job.metadata = json!({"owner": "ops"}).as_object().unwrap().clone();
        format.render(&RenderContext::new(&job, &output, "dlv_1"))
    }

    fn text(format: &str, output: Output) -> String {
        let f = OutputFormat::parse(format, None).unwrap();
        String::from_utf8(render(&f, output).unwrap()).unwrap()
    }

    fn err(format: &str, output: Output) -> String {
        let f = OutputFormat::parse(format, None).unwrap();
        render(&f, output).unwrap_err().to_string()
    }

    fn j(v: Value) -> Output {
        Output::Json(v)
    }

    fn rows() -> Output {
        j(json!([
            {"id": 1, "name": "Item 1"},
            {"name": "Item, \"2\"", "extra": {"a": [1, 2]}, "ok": true},
            {"id": null, "name": "línea\nnueva"}
        ]))
    }

    #[test]
    fn json_is_pretty_with_trailing_newline() {
        assert_eq!(
            text("json", j(json!({"b": 1, "a": [true, null], "s": "é"}))),
            "{\n  \"b\": 1,\n  \"a\": [\n    true,\n    null\n  ],\n  \"s\": \"é\"\n}\n"
        );
        assert_eq!(text("json", Output::Text("hi \"x\"".into())), "\"hi \\\"x\\\"\"\n");
        assert_eq!(text("JSON", j(json!([]))), "[]\n");
    }

    #[test]
    fn json_compact_has_no_whitespace() {
        assert_eq!(
            text("json_compact", j(json!({"b": 1, "a": [1, {"c": "ü"}]}))),
            r#"{"b":1,"a":[1,{"c":"ü"}]}"#
        );
        assert_eq!(text("json_compact", Output::Text("t".into())), r#""t""#);
    }

    #[test]
    fn yaml() {
        assert_eq!(
            text("yaml", j(json!({"result": "success", "data": {"key": "value", "n": [1, 2]}}))),
            "result: success\ndata:\n  key: value\n  n:\n  - 1\n  - 2\n"
        );
        assert_eq!(text("yaml", Output::Text("plain".into())), "plain\n");
    }

    #[test]
    fn csv_unions_columns_and_quotes() {
        assert_eq!(
            text("csv", rows()),
            "id,name,extra,ok\n\
             1,Item 1,,\n\
             ,\"Item, \"\"2\"\"\",\"{\"\"a\"\":[1,2]}\",true\n\
             ,\"línea\nnueva\",,\n"
        );
    }

    #[test]
    fn csv_single_object_is_one_row() {
        assert_eq!(text("csv", j(json!({"a": 1.5, "b": "x"}))), "a,b\n1.5,x\n");
        assert_eq!(text("csv", j(json!([]))), "");
    }

    #[test]
    fn csv_refuses_other_shapes() {
        assert_eq!(
            err("csv", j(json!([1, 2]))),
            "cannot format output as csv: csv needs an array of objects or an object; \
             element 0 is an integer"
        );
        assert_eq!(
            err("csv", j(json!("s"))),
            "cannot format output as csv: csv needs an array of objects or an object, got a string"
        );
        assert_eq!(
            err("csv", Output::Text("a,b".into())),
            "cannot format output as csv: csv needs an array of objects or an object"
        );
        assert_eq!(
            err("csv", Output::Binary(Bytes::from_static(b"\xff"))),
            "cannot format output as csv: binary output cannot be written as csv; use format: raw"
        );
    }

    #[test]
    fn xml_maps_objects_arrays_and_scalars() {
        assert_eq!(
            text(
                "xml",
                j(json!({"id": 1, "tags": ["a<b", "ç"], "none": null, "empty": {},
                         "2bad key": true, "xmlns": "x", "nested": {"deep": [[1]]}}))
            ),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <output>\n\
             \x20 <id>1</id>\n\
             \x20 <tags>\n\
             \x20   <item>a&lt;b</item>\n\
             \x20   <item>ç</item>\n\
             \x20 </tags>\n\
             \x20 <none/>\n\
             \x20 <empty/>\n\
             \x20 <item key=\"2bad key\">true</item>\n\
             \x20 <item key=\"xmlns\">x</item>\n\
             \x20 <nested>\n\
             \x20   <deep>\n\
             \x20     <item>\n\
             \x20       <item>1</item>\n\
             \x20     </item>\n\
             \x20   </deep>\n\
             \x20 </nested>\n\
             </output>\n"
        );
        assert_eq!(
            text("xml", Output::Text("a & \"b\"".into())),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<output>a &amp; &quot;b&quot;</output>\n"
        );
        assert_eq!(
            text("xml", j(json!({"a\"<": 1}))),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<output>\n  \
             <item key=\"a&quot;&lt;\">1</item>\n</output>\n"
        );
    }

    #[test]
    fn xml_refuses_unrepresentable_characters() {
        assert_eq!(
            err("xml", j(json!({"a": "x\u{1}"}))),
            "cannot format output as xml: the string \"x\\u{1}\" contains U+0001, which XML 1.0 \
             cannot represent"
        );
    }

    #[test]
    fn raw_writes_strings_unquoted_and_bytes_as_is() {
        assert_eq!(text("raw", j(json!("hello"))), "hello");
        assert_eq!(text("raw", Output::Text("{not json".into())), "{not json");
        assert_eq!(text("raw", j(json!({"a": [1, 2]}))), r#"{"a":[1,2]}"#);
        let f = OutputFormat::parse("raw", None).unwrap();
        assert_eq!(
            render(&f, Output::Binary(Bytes::from_static(&[0, 0xff, 1]))).unwrap(),
            vec![0, 0xff, 1]
        );
    }

    #[test]
    fn ndjson_writes_one_value_per_line() {
        assert_eq!(text("ndjson", j(json!([{"a": 1}, "b", [2]]))), "{\"a\":1}\n\"b\"\n[2]\n");
        assert_eq!(text("ndjson", j(json!({"a": 1}))), "{\"a\":1}\n");
        assert_eq!(text("ndjson", j(json!([]))), "");
        assert_eq!(text("ndjson", Output::Text("t".into())), "\"t\"\n");
    }

    #[test]
    fn binary_is_refused_by_structured_formats() {
        for name in ["json", "json_compact", "yaml", "xml", "ndjson"] {
            assert_eq!(
                err(name, Output::Binary(Bytes::from_static(b"\x00"))),
                format!(
                    "cannot format output as {name}: binary output cannot be written as {name}; \
                     use format: raw"
                )
            );
        }
    }

    fn template(src: &str, output: Output) -> Result<String, FormatError> {
        let f = OutputFormat::parse("template", Some(src)).unwrap();
        render(&f, output).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn template_renders_variables_output_and_json_helper() {
        let out = j(json!({"n": 1, "html": "<b>&"}));
        assert_eq!(
            template(
                "Task: {{task_name}} by {{meta.owner}} [{{delivery_id}}]\n{{output.html}} \
                 {{output.n}}\n{{json output}}\n{{json output.n pretty=true}}\n{{output_data}}",
                out.clone()
            )
            .unwrap(),
            "Task: report by ops [dlv_1]\n<b>& 1\n{\"n\":1,\"html\":\"<b>&\"}\n1\n\
             {\"n\":1,\"html\":\"<b>&\"}"
        );
        assert_eq!(
            template("{{json output pretty=true}}", out).unwrap(),
            "{\n  \"n\": 1,\n  \"html\": \"<b>&\"\n}"
        );
        assert_eq!(
            template("{{#each output}}{{this}};{{/each}}", j(json!(["a", "b"]))).unwrap(),
            "a;b;"
        );
    }

    #[test]
    fn template_missing_variable_is_an_error_naming_it() {
        assert_eq!(
            template("x {{nope}}", j(json!(1))).unwrap_err().to_string(),
            "cannot format output as template: Template variable 'nope' not found"
        );
        assert_eq!(
            template("{{meta.missing}}", j(json!(1))).unwrap_err().to_string(),
            "cannot format output as template: Template variable 'meta.missing' not found"
        );
        assert_eq!(
            template("{{json outptu}}", j(json!(1))).unwrap_err().to_string(),
            "cannot format output as template: Template variable 'outptu' not found"
        );
        assert_eq!(
            template("{{#if nope}}y{{else}}n{{/if}}", j(json!(1))).unwrap(),
            "n",
            "strict mode still lets #if test for absence"
        );
    }

    #[test]
    fn template_syntax_errors_are_reported_at_parse() {
        let e = OutputFormat::parse("template", Some("hello {{#if x}} no end")).unwrap_err();
        assert_eq!(
            e,
            "invalid Handlebars template at line 1, column 23: the template ends inside an \
             expression or an open block (is a {{/...}} missing?)"
        );
        let e = OutputFormat::parse("template", Some("ok\n{{ a b c }} {{/if}}")).unwrap_err();
        assert!(
            e.starts_with(
                "invalid Handlebars template at line 2, column 15: invalid handlebars syntax: \
                 expected"
            ),
            "{e}"
        );
    }

    #[test]
    fn parse_errors_list_valid_formats() {
        assert_eq!(
            OutputFormat::parse("jsn", None).unwrap_err(),
            "unknown format 'jsn'; valid formats: json, json_compact, yaml, csv, xml, raw, \
             ndjson, template"
        );
        assert_eq!(
            OutputFormat::parse("template", None).unwrap_err(),
            "format 'template' needs a 'template' with the Handlebars template text"
        );
        for name in FORMAT_NAMES {
            let f = OutputFormat::parse(name, Some("x")).unwrap();
            assert_eq!(f.name(), *name);
        }
    }

    #[test]
    fn content_types_and_extensions() {
        let expected = [
            ("json", "application/json", "json"),
            ("json_compact", "application/json", "json"),
            ("yaml", "application/yaml", "yaml"),
            ("csv", "text/csv; charset=utf-8", "csv"),
            ("xml", "application/xml", "xml"),
            ("raw", "application/octet-stream", "bin"),
            ("ndjson", "application/x-ndjson", "ndjson"),
            ("template", "text/plain; charset=utf-8", "txt"),
        ];
        for (name, ct, ext) in expected {
            let f = OutputFormat::parse(name, Some("x")).unwrap();
            assert_eq!((f.content_type(), f.extension()), (ct, ext), "{name}");
        }
        let raw = OutputFormat::Raw;
        assert_eq!(raw.content_type_for(&Output::Text("t".into())), "text/plain; charset=utf-8");
        assert_eq!(raw.extension_for(&j(json!("s"))), "txt");
        assert_eq!(raw.content_type_for(&j(json!({}))), "application/json");
        assert_eq!(raw.extension_for(&j(json!([1]))), "json");
        assert_eq!(raw.content_type_for(&Output::Binary(Bytes::new())), "application/octet-stream");
        assert_eq!(OutputFormat::Json.content_type_for(&j(json!("s"))), "application/json");
    }
}

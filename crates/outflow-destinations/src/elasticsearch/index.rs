//! Index names: the `index` template, `index_rotation` and seed 001's `%{+YYYY.MM.dd}`
//! date patterns, all dated by the job's `completed_at` (UTC), so a retry days later still
//! writes to the index of the day the job finished.

use chrono::{DateTime, Utc};
use outflow_core::template::{Template, VarSource};

/// `index_rotation`: a date suffix appended to the rendered index as `-<date>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// No suffix.
    None,
    /// `-2025.01.15`.
    Daily,
    /// `-2025.03` (ISO week-year and week).
    Weekly,
    /// `-2025.01`.
    Monthly,
    /// `-2025`.
    Yearly,
}

impl Rotation {
    /// The config names.
    pub const NAMES: &'static [&'static str] = &["none", "daily", "weekly", "monthly", "yearly"];

    /// Parses a config name (already checked against [`Self::NAMES`]).
    pub fn parse(name: &str) -> Option<Rotation> {
        Some(match name {
            "none" => Rotation::None,
            "daily" => Rotation::Daily,
            "weekly" => Rotation::Weekly,
            "monthly" => Rotation::Monthly,
            "yearly" => Rotation::Yearly,
            _ => return None,
        })
    }

    /// The chrono format of the suffix.
    fn format(self) -> Option<&'static str> {
        match self {
            Rotation::None => None,
            Rotation::Daily => Some("%Y.%m.%d"),
            Rotation::Weekly => Some("%G.%V"),
            Rotation::Monthly => Some("%Y.%m"),
            Rotation::Yearly => Some("%Y"),
        }
    }
}

/// One piece of an index name.
#[derive(Debug, Clone)]
enum Piece {
    /// Text with `{{variables}}`.
    Text(Template),
    /// A `%{+...}` date, as a chrono format.
    Date(String),
}

/// A parsed `index` with its rotation.
#[derive(Debug, Clone)]
pub struct IndexName {
    source: String,
    pieces: Vec<Piece>,
    rotation: Rotation,
}

/// Translates a Joda-style pattern (`YYYY.MM.dd`, as Logstash and Beats write it) into a
/// chrono format. Letters: `yyyy`/`YYYY` year, `yy`/`YY` two-digit year, `xxxx` ISO
/// week-year, `MM` month, `dd` day, `HH` hour, `mm` minute, `ss` second, `ww` ISO week,
/// `DDD` day of year; single `M`, `d`, `H`, `w` are unpadded. Other characters are literal.
pub fn joda_to_chrono(pattern: &str) -> Result<String, String> {
    let mut out = String::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut n = 1;
        while i + n < chars.len() && chars[i + n] == c {
            n += 1;
        }
        if c.is_ascii_alphabetic() {
            let spec = match (c, n) {
                ('y' | 'Y', 4) => "%Y",
                ('y' | 'Y', 2) => "%y",
                ('x', 4) => "%G",
                ('x', 2) => "%g",
                ('M', 2) => "%m",
                ('M', 1) => "%-m",
                ('d', 2) => "%d",
                ('d', 1) => "%-d",
                ('H', 2) => "%H",
                ('H', 1) => "%-H",
                ('m', 2) => "%M",
                ('s', 2) => "%S",
                ('w', 2) => "%V",
                ('w', 1) => "%-V",
                ('D', 3) => "%j",
                _ => {
                    return Err(format!(
                        "'{}' is not a supported date field in %{{+{pattern}}} (use YYYY, YY, \
                         xxxx, MM, dd, HH, mm, ss, ww or DDD)",
                        c.to_string().repeat(n)
                    ));
                }
            };
            out.push_str(spec);
        } else if c == '%' {
            out.push_str(&"%%".repeat(n));
        } else {
            out.extend(std::iter::repeat_n(c, n));
        }
        i += n;
    }
    Ok(out)
}

impl IndexName {
    /// Splits `template`'s source into text and `%{+pattern}` dates. A date pattern and an
    /// `index_rotation` other than `none` are refused together: both would date the name.
    pub fn new(template: Template, rotation: Rotation) -> Result<IndexName, String> {
        let source = template.source().to_string();
        let mut pieces = Vec::new();
        let mut rest = source.as_str();
        while let Some(start) = rest.find("%{+") {
            let Some(len) = rest[start..].find('}') else {
                return Err(format!("'{source}': %{{+ is not closed by }}"));
            };
            if start > 0 {
                pieces.push(Piece::Text(parse_text(&rest[..start])?));
            }
            let pattern = &rest[start + 3..start + len];
            if pattern.is_empty() {
                return Err(format!("'{source}': %{{+}} has no date pattern"));
            }
            pieces.push(Piece::Date(joda_to_chrono(pattern)?));
            rest = &rest[start + len + 1..];
        }
        let dated = pieces.iter().any(|p| matches!(p, Piece::Date(_)));
        if !rest.is_empty() {
            pieces.push(Piece::Text(parse_text(rest)?));
        }
        if dated && rotation != Rotation::None {
            return Err(format!(
                "'{source}' has a %{{+...}} date pattern and index_rotation is {rotation:?}; use \
                 either the pattern or index_rotation, not both"
            ));
        }
        Ok(IndexName { source, pieces, rotation })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the name for a job that completed `at`, then validates it.
    pub fn render(&self, vars: &dyn VarSource, at: DateTime<Utc>) -> Result<String, String> {
        let mut name = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => {
                    name.push_str(&t.render(vars).map_err(|e| {
                        format!("cannot render index template '{}': {e}", self.source)
                    })?)
                }
                Piece::Date(f) => name.push_str(&at.format(f).to_string()),
            }
        }
        if let Some(f) = self.rotation.format() {
            name.push('-');
            name.push_str(&at.format(f).to_string());
        }
        validate_index(&name).map_err(|why| format!("invalid index name '{name}': {why}"))?;
        Ok(name)
    }
}

fn parse_text(src: &str) -> Result<Template, String> {
    Template::parse(src)
        .map_err(|e| format!("invalid template: {} (at byte {})", e.reason, e.offset))
}

/// Elasticsearch's index name rules: lowercase, 1 to 255 bytes, not `.` or `..`, not
/// starting with `-`, `_` or `+`, none of `\ / * ? " < > | , # :` or spaces.
pub fn validate_index(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > 255 {
        return Err("it is longer than 255 bytes".into());
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not index names".into());
    }
    if name.starts_with(['-', '_', '+']) {
        return Err("it may not start with '-', '_' or '+'".into());
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return Err("it must be lowercase".into());
    }
    if let Some(c) =
        name.chars().find(|c| c.is_whitespace() || c.is_control() || "\\/*?\"<>|,#:".contains(*c))
    {
        return Err(format!("it may not contain {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::borrow::Cow;

    struct Vars;
    impl VarSource for Vars {
        fn var(&self, name: &str) -> Result<Cow<'_, str>, outflow_core::template::TemplateError> {
            match name {
                "task_name" => Ok(Cow::Borrowed("report")),
                "bad" => Ok(Cow::Borrowed("A/B")),
                _ => Err(outflow_core::template::TemplateError::NotFound(name.into())),
            }
        }
    }

    fn render(src: &str, rotation: Rotation) -> Result<String, String> {
        let at = Utc.with_ymd_and_hms(2025, 1, 15, 7, 8, 9).unwrap();
        IndexName::new(Template::parse(src).unwrap(), rotation)?.render(&Vars, at)
    }

    #[test]
    fn rotations_follow_seed_001() {
        assert_eq!(render("logs", Rotation::None).unwrap(), "logs");
        assert_eq!(render("logs", Rotation::Daily).unwrap(), "logs-2025.01.15");
        assert_eq!(render("logs", Rotation::Weekly).unwrap(), "logs-2025.03");
        assert_eq!(render("logs", Rotation::Monthly).unwrap(), "logs-2025.01");
        assert_eq!(render("logs", Rotation::Yearly).unwrap(), "logs-2025");
        // ISO weeks: 2024-12-30 belongs to week 1 of 2025.
        let at = Utc.with_ymd_and_hms(2024, 12, 30, 0, 0, 0).unwrap();
        let idx = IndexName::new(Template::parse("w").unwrap(), Rotation::Weekly).unwrap();
        assert_eq!(idx.render(&Vars, at).unwrap(), "w-2025.01");
    }

    #[test]
    fn custom_patterns_and_variables() {
        assert_eq!(render("logs-%{+YYYY.MM.dd}", Rotation::None).unwrap(), "logs-2025.01.15");
        assert_eq!(
            render("{{task_name}}-%{+yyyy.MM}-x-%{+HH.mm.ss}", Rotation::None).unwrap(),
            "report-2025.01-x-07.08.09"
        );
        assert_eq!(render("a-%{+xxxx.ww}", Rotation::None).unwrap(), "a-2025.03");
        assert!(render("a-%{+YYYY.QQ}", Rotation::None).unwrap_err().contains("'QQ'"));
        assert!(render("a-%{+YYYY", Rotation::None).unwrap_err().contains("not closed"));
        assert!(render("a-%{+YYYY}", Rotation::Daily).unwrap_err().contains("not both"));
    }

    #[test]
    fn rendered_names_are_validated() {
        assert!(render("Logs", Rotation::None).unwrap_err().contains("lowercase"));
        assert!(render("x-{{bad}}", Rotation::None).unwrap_err().contains("lowercase"));
        assert!(render("_x", Rotation::None).unwrap_err().contains("may not start"));
        assert!(render("a b", Rotation::None).unwrap_err().contains("' '"));
        assert!(render("a{{nope}}", Rotation::None).unwrap_err().contains("nope"));
        assert!(validate_index("..").is_err());
        assert!(validate_index(&"a".repeat(256)).is_err());
        assert!(validate_index("logs-2025.01.15").is_ok());
    }
}

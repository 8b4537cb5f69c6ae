//! The `{{var}}` template language of paths, URLs, header values, keys and topics.
//!
//! Deliberately tiny: literal text and `{{ name }}` substitutions, where a name is
//! letters, digits, `_`, `-` and dots (`meta.owner`, `event.level`). `\{{` writes a literal
//! `{{`. There is no logic here on purpose — a path should not contain a program; the
//! `template` *output format* uses Handlebars for that (see [`crate::format`]).
//!
//! Templates are parsed once, when the config is validated, so syntax errors surface before
//! anything runs; rendering only looks variables up.

use std::borrow::Cow;
use std::fmt;

use thiserror::Error;

/// Where rendered variables come from.
pub trait VarSource {
    /// The value of `name`, or `Err` explaining why there is none.
    fn var(&self, name: &str) -> Result<Cow<'_, str>, TemplateError>;
}

/// A parse error, with the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid template at byte {offset}: {reason}")]
pub struct TemplateSyntaxError {
    /// Byte offset in the template source.
    pub offset: usize,
    /// What is wrong and what would be valid.
    pub reason: String,
}

/// A rendering error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    /// The variable is not known at all (a typo, or a `--var` that was not passed).
    #[error("Template variable '{0}' not found")]
    NotFound(String),
    /// The variable is known but this job has no value for it (e.g. `schedule_id` of a job
    /// that was not scheduled).
    #[error("Template variable '{name}' has no value for this job{hint}")]
    NoValue {
        /// The variable.
        name: String,
        /// Extra guidance, starting with `: ` when present.
        hint: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `source`, failing on unbalanced braces, empty or malformed variable names.
    pub fn parse(source: &str) -> Result<Template, TemplateSyntaxError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let bytes = source.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if source[i..].starts_with("\\{{") {
                // `\{{name}}` is the literal text `{{name}}`, as in Handlebars.
                let rest = &source[i + 1..];
                let end = rest[2..].find("}}").map_or(2, |close| 2 + close + 2);
                literal.push_str(&rest[..end]);
                i += 1 + end;
                continue;
            }
            if source[i..].starts_with("{{") {
                let start = i;
                let Some(close) = source[i + 2..].find("}}") else {
                    return Err(TemplateSyntaxError {
                        offset: start,
                        reason:
                            "'{{' is never closed: write '{{name}}', or '\\{{' for a literal '{{'"
                                .into(),
                    });
                };
                let inner = &source[i + 2..i + 2 + close];
                if let Some(nested) = inner.find("{{") {
                    return Err(TemplateSyntaxError {
                        offset: i + 2 + nested,
                        reason: "'{{' inside '{{ }}': variables cannot be nested".into(),
                    });
                }
                let name = inner.trim();
                validate_name(name)
                    .map_err(|reason| TemplateSyntaxError { offset: start, reason })?;
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Var(name.to_string()));
                i += 2 + close + 2;
                continue;
            }
            if source[i..].starts_with("}}") {
                return Err(TemplateSyntaxError {
                    offset: i,
                    reason: "'}}' without a matching '{{'".into(),
                });
            }
            let ch = source[i..].chars().next().expect("in bounds");
            literal.push(ch);
            i += ch.len_utf8();
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { source: source.to_string(), parts })
    }

    /// The text the template was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variable names used, in order of appearance (with repeats).
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// True when the template has no variables, so its rendering never changes.
    pub fn is_static(&self) -> bool {
        self.variables().next().is_none()
    }

    /// Renders with variables from `vars`.
    pub fn render(&self, vars: &dyn VarSource) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Var(name) => out.push_str(&vars.var(name)?),
            }
        }
        Ok(out)
    }

    /// Renders, passing every variable's value through `escape` first (e.g. URL-encoding
    /// values substituted into a URL path, or refusing `/` in a file name component).
    pub fn render_with(
        &self,
        vars: &dyn VarSource,
        escape: &dyn Fn(&str) -> String,
    ) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Var(name) => out.push_str(&escape(&vars.var(name)?)),
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty variable name in '{{}}'".into());
    }
    if let Some(bad) =
        name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "invalid character {bad:?} in variable name '{name}': names use letters, digits, '_', '-' and '.' (for example '{{{{job_uuid}}}}' or '{{{{meta.owner}}}}')"
        ));
    }
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return Err(format!("malformed variable name '{name}': dots separate non-empty parts"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<&'static str, &'static str>);
    impl VarSource for Map {
        fn var(&self, name: &str) -> Result<Cow<'_, str>, TemplateError> {
            self.0
                .get(name)
                .map(|v| Cow::Borrowed(*v))
                .ok_or_else(|| TemplateError::NotFound(name.to_string()))
        }
    }

    fn vars() -> Map {
        Map(HashMap::from([("a", "1"), ("meta.owner", "ops"), ("b", "two")]))
    }

    #[test]
    fn renders_literals_and_variables() {
        let t = Template::parse("/data/{{a}}/{{ meta.owner }}-{{b}}.json").unwrap();
        assert_eq!(t.render(&vars()).unwrap(), "/data/1/ops-two.json");
        assert_eq!(t.variables().collect::<Vec<_>>(), ["a", "meta.owner", "b"]);
        assert!(!t.is_static());
        assert!(Template::parse("/static").unwrap().is_static());
    }

    #[test]
    fn escaped_braces_are_literal() {
        let t = Template::parse(r"x \{{a}} {{a}}").unwrap();
        assert_eq!(t.render(&vars()).unwrap(), "x {{a}} 1");
    }

    #[test]
    fn unknown_variable_is_named() {
        let t = Template::parse("{{unknown_var}}").unwrap();
        let err = t.render(&vars()).unwrap_err();
        assert_eq!(err.to_string(), "Template variable 'unknown_var' not found");
    }

    #[test]
    fn syntax_errors() {
        for (src, needle) in [
            ("{{a", "never closed"),
            ("a}}", "without a matching"),
            ("{{}}", "empty variable"),
            ("{{a b}}", "invalid character ' '"),
            ("{{ {{a}} }}", "nested"),
            ("{{.a}}", "malformed"),
            ("{{a..b}}", "malformed"),
        ] {
            let err = Template::parse(src).unwrap_err();
            assert!(err.reason.contains(needle), "{src}: {err}");
        }
    }

    #[test]
    fn render_with_escapes_values_only() {
        let t = Template::parse("/x/{{b}}").unwrap();
        let out = t.render_with(&vars(), &|v| v.to_uppercase()).unwrap();
        assert_eq!(out, "/x/TWO");
    }

    proptest::proptest! {
        #[test]
        fn literal_text_without_braces_round_trips(s in "[^{}\\\\]*") {
            let t = Template::parse(&s).unwrap();
            proptest::prop_assert_eq!(t.render(&vars()).unwrap(), s);
        }

        #[test]
        fn parser_never_panics(s in ".*") {
            let _ = Template::parse(&s);
        }
    }
}

//! SQL identifiers: validation and quoting, so no rendered name can inject SQL.
//!
//! Every identifier the destinations put into SQL text (table, schema, column, index) passes
//! [`check_ident`] first: ASCII letters, digits and `_`, not starting with a digit, at most
//! [`MAX_IDENT_LEN`] characters. Quoting is then a formality that keeps reserved words
//! (`user`, `order`) usable; it cannot be escaped from because no quote character survives
//! validation.

use std::fmt;

/// The longest identifier accepted: PostgreSQL's limit (longer names are silently
/// truncated there, which could make two tables collide); MySQL allows 64.
pub const MAX_IDENT_LEN: usize = 63;

/// What a valid identifier looks like, for messages.
pub const IDENT_EXPECTED: &str = "letters, digits and '_', not starting with a digit, at most 63 \
                                  characters (optionally schema.table)";

/// Checks one identifier.
pub fn check_ident(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid_start = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !valid_start || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "'{}' is not a valid SQL identifier: {IDENT_EXPECTED}",
            printable(name)
        ));
    }
    if name.len() > MAX_IDENT_LEN {
        return Err(format!(
            "'{name}' is {} characters long; SQL identifiers here are at most {MAX_IDENT_LEN}",
            name.len()
        ));
    }
    Ok(())
}

/// A name for messages: control characters escaped, long names cut.
fn printable(name: &str) -> String {
    let cut: String = name.chars().take(80).collect();
    let mut out = cut.escape_debug().to_string();
    if name.chars().count() > 80 {
        out.push_str("...");
    }
    out
}

/// How a dialect quotes identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quote {
    /// `"name"` (PostgreSQL, SQLite).
    Double,
    /// `` `name` `` (MySQL, MariaDB).
    Backtick,
}

impl Quote {
    /// Quotes a validated identifier.
    pub fn ident(self, name: &str) -> String {
        match self {
            Quote::Double => format!("\"{name}\""),
            Quote::Backtick => format!("`{name}`"),
        }
    }
}

/// A validated table name, optionally qualified by a schema (PostgreSQL) or database (MySQL).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    /// The schema or database, when given.
    pub schema: Option<String>,
    /// The table.
    pub name: String,
}

impl TableName {
    /// Parses and validates a rendered `table` (`events` or `schema.events`); `default_schema`
    /// applies when the name has none.
    pub fn parse(rendered: &str, default_schema: Option<&str>) -> Result<TableName, String> {
        let (schema, name) = match rendered.split_once('.') {
            Some((schema, name)) => (Some(schema.to_string()), name.to_string()),
            None => (default_schema.map(str::to_string), rendered.to_string()),
        };
        if let Some(schema) = &schema {
            check_ident(schema).map_err(|e| format!("table '{}': {e}", printable(rendered)))?;
        }
        check_ident(&name).map_err(|e| format!("table '{}': {e}", printable(rendered)))?;
        Ok(TableName { schema, name })
    }

    /// The quoted, qualified name for SQL text.
    pub fn quoted(&self, quote: Quote) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote.ident(schema), quote.ident(&self.name)),
            None => quote.ident(&self.name),
        }
    }

    /// An index name derived from the table's: `<table>_<suffix>` when it fits, otherwise a
    /// short hash of the table name, so two long tables never share an index name.
    pub fn index_name(&self, suffix: &str) -> String {
        let plain = format!("{}_{suffix}", self.name);
        if plain.len() <= MAX_IDENT_LEN {
            return plain;
        }
        // FNV-1a: stable across releases (std's hasher is not), which matters because the
        // name must be found again by IF NOT EXISTS after an upgrade.
        let hash = self.name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let head: String = self.name.chars().take(MAX_IDENT_LEN - suffix.len() - 18).collect();
        format!("{head}_{hash:016x}_{suffix}")
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_pass_and_quote() {
        let t = TableName::parse("events_2025", None).unwrap();
        assert_eq!(t.quoted(Quote::Double), "\"events_2025\"");
        assert_eq!(t.quoted(Quote::Backtick), "`events_2025`");
        let t = TableName::parse("audit.events", Some("public")).unwrap();
        assert_eq!(t.quoted(Quote::Double), "\"audit\".\"events\"");
        let t = TableName::parse("events", Some("public")).unwrap();
        assert_eq!(t.to_string(), "public.events");
    }

    #[test]
    fn injection_attempts_are_refused() {
        for bad in [
            "events; DROP TABLE users",
            "events\"; --",
            "ev`ents",
            "1events",
            "",
            "a.b.c",
            "événements",
            "x y",
            "t\0",
        ] {
            let err = TableName::parse(bad, None).unwrap_err();
            assert!(err.contains("not a valid SQL identifier"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn long_names_are_refused_and_index_names_stay_short() {
        let long = "a".repeat(64);
        assert!(TableName::parse(&long, None).unwrap_err().contains("at most 63"));
        let t = TableName::parse(&"b".repeat(63), None).unwrap();
        let idx = t.index_name("completed_at_idx");
        assert!(idx.len() <= MAX_IDENT_LEN, "{idx}");
        check_ident(&idx).unwrap();
        assert_ne!(
            idx,
            TableName::parse(&"c".repeat(63), None).unwrap().index_name("completed_at_idx")
        );
        assert_eq!(TableName::parse("ev", None).unwrap().index_name("x_idx"), "ev_x_idx");
    }
}

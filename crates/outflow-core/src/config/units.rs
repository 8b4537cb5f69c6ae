//! Durations, sizes and file permissions as written in config.
//!
//! Numbers with a fraction (`1.5s`, `1.5MiB`) are computed in exact decimal arithmetic, so
//! `0.1s` is 100 ms and not 99.999... ms.

use std::time::Duration;

use serde_json::Value;

use super::reader::type_name;

/// What a bare number means for a duration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `default_timeout: 45` is 45 seconds (seed 000).
    Seconds,
    /// `initial_delay_ms: 1000` is 1000 milliseconds.
    Millis,
}

/// Parses `500ms`, `5s`, `5m`, `1h`, `1d` (fractions such as `1.5s` too, units in any case,
/// spaces allowed around and between) or a bare number in `bare` units.
pub fn parse_duration(s: &str, bare: Unit) -> Result<Duration, String> {
    let bare_name = match bare {
        Unit::Seconds => "seconds",
        Unit::Millis => "milliseconds",
    };
    let invalid = || {
        format!(
            "must be a duration such as 30, \"500ms\", \"5s\", \"1.5m\", \"1h\" or \"1d\" \
             (units ms, s, m, h, d; a bare number is {bare_name}), got \"{s}\""
        )
    };
    let (number, unit) = split_number(s).ok_or_else(invalid)?;
    let unit_nanos: u128 = match unit.to_ascii_lowercase().as_str() {
        "" => match bare {
            Unit::Seconds => 1_000_000_000,
            Unit::Millis => 1_000_000,
        },
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "d" => 86_400 * 1_000_000_000,
        _ => return Err(invalid()),
    };
    let nanos = number.times(unit_nanos).ok_or_else(|| format!("is too large, got \"{s}\""))?;
    let secs =
        u64::try_from(nanos / 1_000_000_000).map_err(|_| format!("is too large, got \"{s}\""))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// A non-negative decimal number as written: digits before and after the point.
struct Decimal<'a> {
    int: &'a str,
    frac: &'a str,
}

impl Decimal<'_> {
    /// `self × unit`, rounded down to a whole number; `None` on overflow.
    fn times(&self, unit: u128) -> Option<u128> {
        let int: u128 = if self.int.is_empty() { 0 } else { self.int.parse().ok()? };
        // Digits past the 20th cannot change the result for any unit used here (all < 10^15)
        // and would overflow the scale.
        let frac = &self.frac[..self.frac.len().min(20)];
        let frac_value: u128 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
        let scale = 10u128.pow(frac.len() as u32);
        int.checked_mul(unit)?.checked_add(frac_value.checked_mul(unit)? / scale)
    }
}

/// Splits `" 1.5 MiB "` into the number and the trimmed unit; `None` when there is no number,
/// a sign, or a malformed one (`1.2.3`, `.`).
fn split_number(s: &str) -> Option<(Decimal<'_>, &str)> {
    let t = s.trim();
    let end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (&t[..end], t[end..].trim());
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    Some((Decimal { int, frac }, unit))
}

/// A duration from a config value (number or string).
pub fn duration_from_value(v: &Value, bare: Unit) -> Result<Duration, String> {
    match v {
        Value::String(s) => parse_duration(s, bare),
        Value::Number(_) => parse_duration(&v.to_string(), bare),
        other => Err(format!(
            "must be a duration such as 30, \"500ms\", \"5s\", \"5m\" or \"1h\", got {}",
            type_name(other)
        )),
    }
}

/// Parses `8MiB`, `10MB`, `512KiB`, `1GiB`, `1KB` or a bare number of bytes, units in any
/// case. `KB`/`MB`/`GB`/`TB` are powers of 1000; `KiB`/`MiB`/`GiB`/`TiB` and the shorthands
/// `k`/`m`/`g`/`t` are powers of 1024 (as in Docker, nginx and the JVM). Fractions
/// (`1.5MiB`) are rounded down to whole bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "must be a size such as 1048576, \"512KiB\", \"8MiB\", \"10MB\" or \"1GiB\" \
             (KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB and k/m/g/t powers of 1024, a bare \
             number is bytes), got \"{s}\""
        )
    };
    let (number, unit) = split_number(s).ok_or_else(invalid)?;
    const KI: u128 = 1024;
    let multiplier: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "k" | "kib" => KI,
        "m" | "mib" => KI.pow(2),
        "g" | "gib" => KI.pow(3),
        "t" | "tib" => KI.pow(4),
        _ => return Err(invalid()),
    };
    number
        .times(multiplier)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| format!("is too large, got \"{s}\""))
}

/// A size from a config value (number or string).
pub fn size_from_value(v: &Value) -> Result<u64, String> {
    match v {
        Value::String(s) => parse_size(s),
        Value::Number(_) => parse_size(&v.to_string()),
        other => Err(format!(
            "must be a size such as 1048576, \"512KiB\", \"8MiB\" or \"10MB\", got {}",
            type_name(other)
        )),
    }
}

/// Unix permissions: the octal strings `"644"`/`"0644"`/`"0o644"` (up to `"7777"`) or the
/// integer 420 (the decimal value of 0o644).
///
/// Integers are limited to 511 (0o777): an unquoted `permissions: 644` in YAML is the decimal
/// number 644, i.e. 0o1204, which is never what was meant. Refusing it points at the quotes;
/// the setuid, setgid and sticky bits remain reachable through the string form.
pub fn permissions_from_value(v: &Value) -> Result<u32, String> {
    const VALID: &str = "must be octal permissions such as \"644\", \"0644\" or \"0o644\" \
                         (digits 0-7, at most \"7777\") or an integer such as 420 (= 0o644)";
    match v {
        Value::String(s) => {
            let t = s.trim();
            let digits = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")).unwrap_or(t);
            if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                return Err(format!("{VALID}, got \"{s}\""));
            }
            match u32::from_str_radix(digits, 8) {
                Ok(mode) if mode <= 0o7777 => Ok(mode),
                _ => Err(format!("{VALID}, got \"{s}\", which is more than 0o7777")),
            }
        }
        Value::Number(n) => match n.as_i64() {
            Some(i) if i < 0 => Err(format!("{VALID}, got the negative number {i}")),
            Some(i) if i <= 0o777 => Ok(i as u32),
            Some(i) => Err(format!(
                "{VALID}, got the integer {i}, which is 0o{i:o}; an integer is read as decimal, \
                 so write octal digits as a quoted string (\"{i}\")"
            )),
            None => Err(format!("{VALID}, got the number {n}")),
        },
        other => Err(format!("{VALID}, got {}", type_name(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SEC: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn durations_with_units() {
        let table = [
            ("500ms", 500 * MS),
            ("5s", 5 * SEC),
            ("5m", 300 * SEC),
            ("1h", 3_600 * SEC),
            ("1d", 86_400 * SEC),
            ("1.5s", 1_500 * MS),
            ("0.1s", 100 * MS),
            (".5m", 30 * SEC),
            ("2.", 2 * SEC),
            (" 5 s ", 5 * SEC),
            ("10MS", 10 * MS),
            ("1H", 3_600 * SEC),
            ("0", Duration::ZERO),
            ("0.0000000015s", Duration::from_nanos(1)),
        ];
        for (input, expected) in table {
            assert_eq!(parse_duration(input, Unit::Seconds), Ok(expected), "{input}");
        }
    }

    #[test]
    fn bare_durations_use_the_given_unit() {
        assert_eq!(parse_duration("30", Unit::Seconds), Ok(30 * SEC));
        assert_eq!(parse_duration("1.5", Unit::Seconds), Ok(1_500 * MS));
        assert_eq!(parse_duration("1000", Unit::Millis), Ok(SEC));
        assert_eq!(parse_duration("2s", Unit::Millis), Ok(2 * SEC));
        assert_eq!(duration_from_value(&json!(45), Unit::Seconds), Ok(45 * SEC));
        assert_eq!(
            duration_from_value(&json!(2.5), Unit::Millis),
            Ok(Duration::from_micros(2_500))
        );
        assert_eq!(duration_from_value(&json!("1m"), Unit::Millis), Ok(60 * SEC));
    }

    #[test]
    fn bad_durations_say_what_is_valid() {
        for input in ["", "s", "5x", "5 sec", "-5s", "1.2.3s", ".", "5s5", "+5s", "1e3"] {
            assert_eq!(
                parse_duration(input, Unit::Seconds).unwrap_err(),
                format!(
                    "must be a duration such as 30, \"500ms\", \"5s\", \"1.5m\", \"1h\" or \
                     \"1d\" (units ms, s, m, h, d; a bare number is seconds), got \"{input}\""
                ),
            );
        }
        assert!(
            parse_duration("x", Unit::Millis)
                .unwrap_err()
                .contains("a bare number is milliseconds")
        );
        assert_eq!(
            parse_duration("99999999999999999999999d", Unit::Seconds).unwrap_err(),
            "is too large, got \"99999999999999999999999d\""
        );
        assert_eq!(
            duration_from_value(&json!(-1), Unit::Seconds).unwrap_err(),
            "must be a duration such as 30, \"500ms\", \"5s\", \"1.5m\", \"1h\" or \"1d\" \
             (units ms, s, m, h, d; a bare number is seconds), got \"-1\""
        );
        assert_eq!(
            duration_from_value(&json!(true), Unit::Seconds).unwrap_err(),
            "must be a duration such as 30, \"500ms\", \"5s\", \"5m\" or \"1h\", got a boolean"
        );
    }

    #[test]
    fn sizes() {
        let table = [
            ("0", 0),
            ("1048576", 1_048_576),
            ("12B", 12),
            ("1KB", 1_000),
            ("10MB", 10_000_000),
            ("2GB", 2_000_000_000),
            ("1TB", 1_000_000_000_000),
            ("512KiB", 524_288),
            ("8MiB", 8_388_608),
            ("1GiB", 1_073_741_824),
            ("1TiB", 1_099_511_627_776),
            ("64k", 65_536),
            ("64K", 65_536),
            ("8m", 8_388_608),
            ("2G", 2_147_483_648),
            ("1.5MiB", 1_572_864),
            ("1.5KB", 1_500),
            (" 8 mib ", 8_388_608),
        ];
        for (input, expected) in table {
            assert_eq!(parse_size(input), Ok(expected), "{input}");
        }
        assert_eq!(size_from_value(&json!(4096)), Ok(4096));
        assert_eq!(size_from_value(&json!("4KiB")), Ok(4096));
    }

    #[test]
    fn bad_sizes_say_what_is_valid() {
        for input in ["", "MiB", "8 MiBs", "-1", "1.2.3", "16EiB", "1e6"] {
            assert_eq!(
                parse_size(input).unwrap_err(),
                format!(
                    "must be a size such as 1048576, \"512KiB\", \"8MiB\", \"10MB\" or \"1GiB\" \
                     (KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB and k/m/g/t powers of \
                     1024, a bare number is bytes), got \"{input}\""
                ),
            );
        }
        assert_eq!(parse_size("20000000TiB").unwrap_err(), "is too large, got \"20000000TiB\"");
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_size("18446744073709551616").unwrap_err(),
            "is too large, got \"18446744073709551616\""
        );
        assert_eq!(
            size_from_value(&json!([1])).unwrap_err(),
            "must be a size such as 1048576, \"512KiB\", \"8MiB\" or \"10MB\", got a list"
        );
    }

    #[test]
    fn permissions_from_strings_and_integers() {
        let table = [
            (json!("644"), 0o644),
            (json!("0644"), 0o644),
            (json!("0o644"), 0o644),
            (json!("0O755"), 0o755),
            (json!("600"), 0o600),
            (json!("0"), 0),
            (json!("4755"), 0o4755),
            (json!("7777"), 0o7777),
            (json!("00644"), 0o644),
            (json!(420), 0o644),
            (json!(493), 0o755),
            (json!(511), 0o777),
            (json!(0), 0),
        ];
        for (input, expected) in table {
            assert_eq!(permissions_from_value(&input), Ok(expected), "{input}");
        }
    }

    #[test]
    fn bad_permissions_say_what_is_valid() {
        let valid = "must be octal permissions such as \"644\", \"0644\" or \"0o644\" \
                     (digits 0-7, at most \"7777\") or an integer such as 420 (= 0o644)";
        let table = [
            (json!("648"), format!("{valid}, got \"648\"")),
            (json!("9"), format!("{valid}, got \"9\"")),
            (json!("rw-r--r--"), format!("{valid}, got \"rw-r--r--\"")),
            (json!(""), format!("{valid}, got \"\"")),
            (json!("0o"), format!("{valid}, got \"0o\"")),
            (json!("-644"), format!("{valid}, got \"-644\"")),
            (json!("17777"), format!("{valid}, got \"17777\", which is more than 0o7777")),
            (
                json!("77777777777777"),
                format!("{valid}, got \"77777777777777\", which is more than 0o7777"),
            ),
            (json!(-1), format!("{valid}, got the negative number -1")),
            (json!(4.2), format!("{valid}, got the number 4.2")),
            (
                json!(644),
                format!(
                    "{valid}, got the integer 644, which is 0o1204; an integer is read as \
                     decimal, so write octal digits as a quoted string (\"644\")"
                ),
            ),
            (json!(true), format!("{valid}, got a boolean")),
            (json!(null), format!("{valid}, got null")),
        ];
        for (input, expected) in table {
            assert_eq!(permissions_from_value(&input).unwrap_err(), expected, "{input}");
        }
    }
}

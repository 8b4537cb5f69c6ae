//! Text helpers shared by the notification destinations (smtp, slack, discord): readable
//! durations, status markers and truncation that never cuts inside a character.

/// `link_template` (a templated URL) and `template` (a Handlebars message template), both
/// optional, of the chat destinations.
#[cfg(any(feature = "slack", feature = "discord"))]
pub(crate) fn read_link_and_template(
    r: &mut outflow_core::config::FieldReader<'_>,
) -> (Option<outflow_core::template::Template>, Option<outflow_core::format::HandlebarsTemplate>) {
    let link = r.template(
        "link_template",
        false,
        "a URL template, e.g. \"https://outflow.example.com/jobs/{{job_uuid}}\"",
    );
    let template =
        r.string("template").and_then(
            |src| match outflow_core::format::HandlebarsTemplate::compile(&src) {
                Ok(t) => Some(t),
                Err(msg) => {
                    r.error("template", msg);
                    None
                }
            },
        );
    (link, template)
}

/// `850 ms`, `1.2 s`, `2 min 5 s`, `1 h 3 min`.
pub(crate) fn human_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => {
            let tenths = ms / 100;
            format!("{}.{} s", tenths / 10, tenths % 10)
        }
        60_000..=3_599_999 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
#[cfg(feature = "smtp")]
pub(crate) fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The first `max` characters of `s` (Unicode scalar values, what chat services count).
#[cfg(any(feature = "slack", feature = "discord"))]
pub(crate) fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// A marker for a job status: ✅ completed, ❌ failed, ⏱️ timed out, ⚪ anything else.
#[cfg(any(feature = "slack", feature = "discord"))]
pub(crate) fn status_emoji(status: &str) -> &'static str {
    match status.to_ascii_lowercase().as_str() {
        "completed" | "succeeded" | "success" => "✅",
        "failed" | "error" => "❌",
        "timeout" | "timed_out" => "⏱️",
        "cancelled" | "canceled" => "🚫",
        _ => "⚪",
    }
}

/// Whether a status counts as a failure (for mentions and colours).
#[cfg(any(feature = "slack", feature = "discord"))]
pub(crate) fn is_failure(status: &str) -> bool {
    matches!(status.to_ascii_lowercase().as_str(), "failed" | "error" | "timeout" | "timed_out")
}

/// The output as text for a chat message: text as-is, JSON pretty-printed, binary described.
#[cfg(any(feature = "slack", feature = "discord"))]
pub(crate) fn display_output(output: &outflow_core::output::Output) -> std::borrow::Cow<'_, str> {
    use outflow_core::output::Output;
    use std::borrow::Cow;
    match output {
        Output::Text(t) => Cow::Borrowed(t.as_str()),
        Output::Json(serde_json::Value::String(s)) => Cow::Borrowed(s.as_str()),
        Output::Json(v) => {
            Cow::Owned(serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()))
        }
        Output::Binary(b) => Cow::Owned(format!("({} bytes of binary output)", b.len())),
    }
}

/// A code block's inside, fitted to `budget` characters: `escape` maps each character to
/// what is written for it (Slack escapes `&`, `<`, `>`), and a third backtick in a row gets
/// a zero-width space before it so the text cannot close the fence. Stops before a
/// character whose escape would not fit, so nothing is ever cut in half. Returns the text
/// and how many source characters it holds.
#[cfg(any(feature = "slack", feature = "discord"))]
pub(crate) fn fit_code(
    text: &str,
    budget: usize,
    escape: fn(char) -> Option<&'static str>,
) -> (String, usize) {
    let mut out = String::new();
    let mut used = 0;
    let mut shown = 0;
    let mut ticks = 0;
    for c in text.chars() {
        let mut piece = String::new();
        if c == '`' {
            ticks += 1;
            if ticks == 3 {
                piece.push('\u{200b}');
                ticks = 1;
            }
        } else {
            ticks = 0;
        }
        match escape(c) {
            Some(esc) => piece.push_str(esc),
            None => piece.push(c),
        }
        let len = piece.chars().count();
        if used + len > budget {
            break;
        }
        used += len;
        shown += 1;
        out.push_str(&piece);
    }
    (out, shown)
}

/// Renders `link_template`, which must give an http(s) URL Slack can hold in a block.
#[cfg(any(feature = "slack", feature = "discord"))]
pub(crate) fn render_link(
    t: &outflow_core::template::Template,
    ctx: &outflow_core::context::RenderContext<'_>,
) -> Result<String, crate::DeliveryError> {
    let url = t.render(ctx).map_err(|e| {
        crate::DeliveryError::permanent(format!(
            "cannot render link_template '{}': {e}",
            t.source()
        ))
    })?;
    match url::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && url.len() <= 2_000 => Ok(u.to_string()),
        _ => Err(crate::DeliveryError::permanent(format!(
            "link_template '{}' rendered to '{}', which is not an http(s) URL of at most 2000 \
             characters",
            t.source(),
            truncate_chars(&url, 200)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_ms(850), "850 ms");
        assert_eq!(human_ms(1234), "1.2 s");
        assert_eq!(human_ms(125_000), "2 min 5 s");
        assert_eq!(human_ms(3_780_000), "1 h 3 min");
    }

    #[test]
    fn truncation_never_cuts_a_character() {
        #[cfg(feature = "smtp")]
        {
            assert_eq!(truncate_bytes("héllo", 2), "h");
            assert_eq!(truncate_bytes("héllo", 3), "hé");
            assert_eq!(truncate_bytes("abc", 10), "abc");
        }
        #[cfg(any(feature = "slack", feature = "discord"))]
        {
            assert_eq!(truncate_chars("日本語テキスト", 3), "日本語");
            assert_eq!(truncate_chars("ab", 3), "ab");
            let amp = |c| if c == '&' { Some("&amp;") } else { None };
            assert_eq!(fit_code("a&b", 4, amp), ("a".to_string(), 1));
            assert_eq!(fit_code("a&b", 7, amp), ("a&amp;b".to_string(), 3));
            assert_eq!(fit_code("````", 10, |_| None), ("``\u{200b}``".to_string(), 4));
            assert_eq!(fit_code("日本語", 2, |_| None), ("日本".to_string(), 2));
        }
    }
}

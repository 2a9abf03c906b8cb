//! Escaping for the two places stagebot writes values from strangers outside markdown: HTML
//! pages (the dashboard, `/setup`, the fake GitHub's pages) and URLs (path segments and query
//! values). Markdown is `crate::markdown`'s.

use std::fmt::Write as _;

/// Text for HTML, in element content and in attribute values (single or double quoted).
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encode everything but RFC 3986's unreserved characters: one path segment or query
/// value.
pub fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_covers_text_and_attributes() {
        assert_eq!(
            html(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn percent_keeps_only_unreserved_characters() {
        assert_eq!(percent("/logs/a b?c=d&e"), "%2Flogs%2Fa%20b%3Fc%3Dd%26e");
        assert_eq!(percent("Az09-._~"), "Az09-._~");
        assert_eq!(percent("é"), "%C3%A9");
    }
}

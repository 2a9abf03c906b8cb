//! Text from outside (config files, git, logs, user input) shown in the bot's comments, made
//! inert: inside a code span or a fenced block nothing is read as markdown, a mention or HTML,
//! and a fence or span longer than any backtick run inside cannot be closed early.

/// The longest run of backticks in `s`.
fn longest_backtick_run(s: &str) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

/// `s` as a code span that nothing in `s` can break out of. Line breaks become spaces (a
/// blank line would end the span's paragraph).
pub fn code(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    let fence = "`".repeat(longest_backtick_run(&s) + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// `s` as a fenced code block (with its own line breaks) whose fence is longer than any run of
/// backticks in `s`; starts and ends with a line break.
pub fn fenced(s: &str) -> String {
    let fence = "`".repeat((longest_backtick_run(s) + 1).max(3));
    format!("\n{fence}text\n{}\n{fence}\n", s.trim_end())
}

/// A code span for one line, a fenced block for several.
pub fn inert(s: &str) -> String {
    let s = s.trim_end();
    if s.contains('\n') { fenced(s) } else { code(s) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_fences_cannot_be_closed_from_inside() {
        assert_eq!(code("x"), "`x`");
        assert_eq!(code("`"), "`` ` ``");
        assert_eq!(code("a``b"), "```a``b```");
        assert_eq!(code("line\nbreak"), "`line break`");
        assert_eq!(fenced("a\n```\nb"), "\n````text\na\n```\nb\n````\n");
        assert_eq!(fenced("plain"), "\n```text\nplain\n```\n");
        assert_eq!(inert("one line"), "`one line`");
        assert_eq!(inert("two\nlines\n"), "\n```text\ntwo\nlines\n```\n");
    }

    /// What a CommonMark renderer (GitHub's is one) makes of it: code, and nothing else — no
    /// link, image, HTML, heading or emphasis, no text outside code.
    #[test]
    fn rendered_text_is_only_code() {
        use pulldown_cmark::{Event, Parser, Tag, TagEnd};
        for hostile in [
            "`build` failed <img src=x onerror=alert(1)> @everyone **bold** [x](http://e)",
            "a\n```\n<script>x</script>\n@team\n````\n# heading",
        ] {
            for text in [code(hostile), fenced(hostile), inert(hostile)] {
                let mut in_block = false;
                for event in Parser::new(&text) {
                    match event {
                        Event::Start(Tag::CodeBlock(_)) => in_block = true,
                        Event::End(TagEnd::CodeBlock) => in_block = false,
                        Event::Start(Tag::Paragraph) | Event::End(TagEnd::Paragraph) => {}
                        Event::Code(_) => {}
                        Event::Text(_) if in_block => {}
                        other => panic!("{text:?}: {other:?}"),
                    }
                }
            }
        }
    }
}

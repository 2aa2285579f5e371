//! Text that came from outside (a Chat API answer, a Pushgateway's reply, a row another tool
//! wrote) on its way to a log line, an error message, the ledger or the terminal.
//!
//! Such text may hold anything: a newline that forges a log line, ANSI escapes that rewrite
//! the terminal, bidi overrides that reorder what a reader sees, our own UserSig echoed back,
//! or megabytes. [`escape`] makes control and bidi characters visible as `\n`, `\u{1b}`, ...;
//! [`server_text`] scrubs secrets, escapes and cuts, in that order. It must not decide what
//! the text means: callers classify first and keep only the cleaned text.

use crate::secret::{self, Secret};
use std::borrow::Cow;
use std::fmt;

/// How much of a server's text is looked at, at most: the kept part is far shorter, and
/// scrubbing megabytes of a hostile answer would only cost time.
const SCAN_CHARS: usize = 16 * 1024;

/// Characters that change how the text around them is shown without being visible
/// themselves: C0 and C1 controls (newline, ESC, ...), the bidi embeddings, overrides,
/// isolates and marks, and the Unicode line and paragraph separators.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'
                ..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every control and bidi character written out as an escape (`\n`, `\t`, `\r`,
/// `\\u{1b}`, `\\u{202e}`), so what is shown is what is there, on one line. Text without any is
/// borrowed as is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Formats a borrowed string escaped (see [`escape`]): `tracing::warn!(group = %Shown(id), ..)`.
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

/// At most `max_chars` characters of `text`, with `…` when some were cut.
pub fn cut(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some((at, _)) => Cow::Owned(format!("{}…", &text[..at])),
    }
}

/// A server's text made fit to keep: the secrets scrubbed from the whole of it (a UserSig
/// that crosses the cut is recognised before it is cut), then escaped, then cut to
/// `max_chars`.
pub fn server_text(raw: &str, secrets: &[&Secret], max_chars: usize) -> String {
    let scanned = match raw.char_indices().nth(SCAN_CHARS) {
        None => raw,
        // The token cut here is dropped whole: the scrub judges whole tokens, and a piece of
        // a secret must not survive because the bound split it.
        Some((at, _)) => raw[..at].trim_end_matches(secret::token_char),
    };
    let scrubbed = secret::scrub(scanned, secrets);
    let escaped = escape(&scrubbed);
    let mut kept = cut(&escaped, max_chars).into_owned();
    if scanned.len() < raw.len() && !kept.ends_with('…') {
        kept.push('…');
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_shown_escaped_on_one_line() {
        assert_eq!(escape("plain: ü ✓"), Cow::Borrowed("plain: ü ✓"));
        assert_eq!(
            escape("x\nFAKE LOG LINE: run 1 succeeded\r\t"),
            "x\\nFAKE LOG LINE: run 1 succeeded\\r\\t"
        );
        assert_eq!(escape("\x1b[31mred\x1b[0m"), "\\u{1b}[31mred\\u{1b}[0m");
        assert_eq!(
            escape("a\u{202e}b\u{2066}c\u{2069}"),
            "a\\u{202e}b\\u{2066}c\\u{2069}"
        );
        assert_eq!(escape("\u{9b}\u{7f}\u{2028}"), "\\u{9b}\\u{7f}\\u{2028}");
        assert_eq!(Shown("a\nb").to_string(), "a\\nb");
        for c in [
            '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{2067}', '\u{2068}', '\u{200f}',
        ] {
            assert!(!escape(&format!("x{c}y")).contains(c), "{c:?}");
        }
    }

    #[test]
    fn cut_counts_characters() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("äöüß", 2), "äö…");
        assert_eq!(cut("", 0), "");
    }

    #[test]
    fn server_text_scrubs_before_it_cuts() {
        let sig = Secret::new(format!("eJx{}", "Ab1*-_".repeat(50)));
        let info = format!("0123456789{}", sig.expose());
        assert_eq!(server_text(&info, &[&sig], 200), "0123456789[redacted]");
        let info = format!("{}{}", "x ".repeat(95), sig.expose());
        let kept = server_text(&info, &[&sig], 200);
        assert!(kept.ends_with("[redacted]"), "{kept}");
        let info = format!("bad\n\u{1b}[2Jline {}", &sig.expose()[..30]);
        assert_eq!(
            server_text(&info, &[&sig], 200),
            "bad\\n\\u{1b}[2Jline [redacted]"
        );
        let long = format!("{}{}", "y ".repeat(SCAN_CHARS / 2 - 5), sig.expose());
        let kept = server_text(&long, &[&sig], 100_000);
        assert!(
            !kept.contains(&sig.expose()[..20]) && kept.ends_with('…'),
            "{}",
            &kept[kept.len() - 40..]
        );
        assert_eq!(server_text("ok", &[], 200), "ok");
    }
}

//! A string that must never reach a log line, an error message or a panic.
//!
//! The secret key and every UserSig live in [`Secret`]; its `Debug` and `Display` print
//! `[redacted]`, so formatting a struct that holds one is always safe. The only way to the
//! value is [`Secret::expose`], which call sites use at the last moment (signing, a query
//! parameter on the wire). Text that may echo a secret back (a server's error message) goes
//! through [`scrub`] before it is kept anywhere.

use std::collections::HashSet;
use std::fmt;

/// The shortest run of a secret's characters that counts as a piece of it: [`scrub`] removes
/// any token that shares this many consecutive characters with a secret.
pub const FRAGMENT_CHARS: usize = 20;

/// A secret value (key, UserSig, password) that formats as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: pass it straight to where it is needed, never to a formatter.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The secrets every log line is scrubbed of ([`scrub_log`]): the object store's credentials
/// and the Chat app's key, registered where they are read. A library under the exporter may log
/// a credential at debug level (iceberg-rust's storage printed the S3 secret key and session
/// token in a `Debug` of its credential provider); the log writer removes them whatever the
/// level, the format or the library.
static LOG_SECRETS: std::sync::RwLock<Vec<Secret>> = std::sync::RwLock::new(Vec::new());

/// Registers `value` as a secret no log line may carry. Values shorter than 8 characters are
/// not registered (they would redact ordinary words; a real key is longer).
pub fn hide_in_logs(value: &str) {
    if value.chars().count() < 8 {
        return;
    }
    let mut secrets = LOG_SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s.expose() == value) {
        secrets.push(Secret::new(value));
    }
}

/// A log line with every registered secret scrubbed ([`scrub`]), or `None` when it holds none.
pub fn scrub_log(line: &[u8]) -> Option<Vec<u8>> {
    let secrets = LOG_SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if secrets.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(line);
    let refs: Vec<&Secret> = secrets.iter().collect();
    let clean = scrub(&text, &refs);
    (clean != text).then(|| clean.into_bytes())
}

/// A character of a token that may carry a secret: the UserSig alphabet (base64 with `*`, `-`
/// and `_` for `+`, `/` and `=`), which holds hex keys too. Anything else ends a token.
pub fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '*' | '-' | '_')
}

/// `text` with every secret replaced by `[redacted]`: each whole occurrence, and each token
/// that holds [`FRAGMENT_CHARS`] or more consecutive characters of one (a UserSig cut short by
/// the server, or crossing a later cut of ours). Run it on the whole text before any cut.
pub fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().map(|s| s.expose()) {
        if !secret.is_empty() && out.contains(secret) {
            out = out.replace(secret, "[redacted]");
        }
    }
    let windows: HashSet<&[u8]> = secrets
        .iter()
        .flat_map(|s| s.expose().as_bytes().windows(FRAGMENT_CHARS))
        .collect();
    if windows.is_empty() {
        return out;
    }
    let bytes = out.as_bytes();
    let mut kept = String::with_capacity(out.len());
    let (mut i, mut copied) = (0, 0);
    while i < bytes.len() {
        if !token_char(bytes[i] as char) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && token_char(bytes[i] as char) {
            i += 1;
        }
        // Token characters are ASCII: both ends are char boundaries.
        let token = &bytes[start..i];
        if token.windows(FRAGMENT_CHARS).any(|w| windows.contains(w)) {
            kept.push_str(&out[copied..start]);
            kept.push_str("[redacted]");
            copied = i;
        }
    }
    kept.push_str(&out[copied..]);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str =
        "eJyrVgrxCdYrSy1SslIyUqoFAF1rB5M*abcdefghijklmnopqrstuvwxyz0123456789-_ABCDEFGHIJKLMNOP";

    #[test]
    fn a_registered_secret_never_reaches_a_log_line() {
        let key = "AKIAtestSECRETkey0123456789abcdefXYZ/+=";
        hide_in_logs(key);
        hide_in_logs("short");
        let line = format!("DEBUG StaticCredentialProvider {{ secret_access_key: \"{key}\" }}\n");
        let clean = String::from_utf8(scrub_log(line.as_bytes()).unwrap()).unwrap();
        assert!(!clean.contains(key), "{clean}");
        assert!(clean.contains("[redacted]"), "{clean}");
        assert_eq!(scrub_log(b"a short line\n"), None);
    }

    #[test]
    fn scrub_removes_whole_secrets_and_long_pieces_of_them() {
        let sig = Secret::new(SIG);
        let key = Secret::new("5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e");
        let scrub = |t: &str| scrub(t, &[&sig, &key]);
        assert_eq!(scrub(&format!("bad sig {SIG}!")), "bad sig [redacted]!");
        assert_eq!(scrub(&format!("0123456789{SIG}")), "0123456789[redacted]");
        // The server's own cut: a prefix, a middle and an end, each glued to other text.
        assert_eq!(
            scrub(&format!("sig={} (cut)", &SIG[..40])),
            "sig=[redacted] (cut)"
        );
        assert_eq!(scrub(&format!("x {}y", &SIG[30..55])), "x [redacted]");
        assert_eq!(
            scrub(&format!("{}.", &SIG[SIG.len() - 20..])),
            "[redacted]."
        );
        assert_eq!(
            scrub(&format!("key {}", &key.expose()[10..40])),
            "key [redacted]"
        );
        // Shorter pieces, and text that only looks alike, stay.
        let short = &SIG[..FRAGMENT_CHARS - 1];
        assert_eq!(scrub(&format!("{short} ok")), format!("{short} ok"));
        assert_eq!(
            scrub("ActionStatus FAIL, ErrorInfo: über ✓"),
            "ActionStatus FAIL, ErrorInfo: über ✓"
        );
        assert_eq!(scrub(""), "");
        assert_eq!(super::scrub("x", &[]), "x");
    }

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(
            format!("{s} {s:?} {:?}", Some(&s)),
            "[redacted] [redacted] Some([redacted])"
        );
        assert_eq!(s.expose(), "hunter2");
    }
}

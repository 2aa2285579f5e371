//! The terminal's progress bar and the log lines that share stderr with it.
//!
//! A log line written straight to stderr while a bar is drawn lands on the bar's line and is
//! overwritten by its next redraw. The logger writes through [`LogWriter`] instead: while a
//! bar is shown ([`show`]), each line is written with the bar hidden, then the bar is redrawn
//! below it.

use indicatif::ProgressBar;
use std::io::Write;
use std::sync::Mutex;

/// The bar on screen, if any.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Makes `bar` the one log lines go around, until [`hide`].
pub fn show(bar: &ProgressBar) {
    *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
}

/// Log lines go straight to stderr again.
pub fn hide() {
    ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).take();
}

/// The tracing writer: stderr, around the bar when one is shown.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over one whole event per call: scrubbed of every registered
        // secret first, whoever logged it.
        let len = buf.len();
        let scrubbed = crate::secret::scrub_log(buf);
        let buf = scrubbed.as_deref().unwrap_or(buf);
        let bar = ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(len)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `n` things over `elapsed` (at least a millisecond, so the first instant is no spike).
pub fn per_second(n: u64, elapsed: std::time::Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-3)
}

/// A rate as a bar shows it.
pub fn rate(per_sec: f64) -> String {
    if per_sec.is_finite() && per_sec >= 0.0 {
        format!("{per_sec:.0} seqs/s")
    } else {
        "- seqs/s".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_counts_this_attempt_only_and_never_spikes() {
        let secs = std::time::Duration::from_secs;
        assert_eq!(per_second(300, secs(3)), 100.0);
        assert_eq!(per_second(0, std::time::Duration::ZERO), 0.0);
        assert!(per_second(5, std::time::Duration::ZERO) <= 5000.0);
    }

    #[test]
    fn rates_are_whole_numbers() {
        assert_eq!(rate(2886.6108), "2887 seqs/s");
        assert_eq!(rate(0.0), "0 seqs/s");
        assert_eq!(rate(f64::NAN), "- seqs/s");
    }

    #[test]
    fn log_lines_are_written_with_and_without_a_bar() {
        let bar = ProgressBar::hidden();
        show(&bar);
        assert_eq!(LogWriter.write(b"").unwrap(), 0);
        hide();
        assert_eq!(LogWriter.write(b"").unwrap(), 0);
        assert!(ACTIVE.lock().unwrap().is_none());
    }
}

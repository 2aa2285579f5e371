//! How log lines look: tracing's own formats (human or JSON), but a slow statement is one line.
//!
//! sqlx reports a statement slower than `db::SLOW_STATEMENT` as an event with its whole SQL
//! text (forty lines for some of ours). [`OneLineSql`] writes such an event as one line
//! instead: the statement's name (its verb and the first table of ours it names, e.g.
//! `SELECT receipts.receipt_latest`) and how long it took, at the level sqlx gave it (INFO).

use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target sqlx logs statements under.
const SQLX_TARGET: &str = "sqlx::query";

/// Wraps a formatter: sqlx's statement events become one line, every other event is the
/// inner formatter's.
pub struct OneLineSql<F> {
    inner: F,
    json: bool,
}

impl<F> OneLineSql<F> {
    pub fn new(inner: F, json: bool) -> Self {
        OneLineSql { inner, json }
    }
}

impl<S, N, F> FormatEvent<S, N> for OneLineSql<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() != SQLX_TARGET {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut sql = SqlFields::default();
        event.record(&mut sql);
        let name = statement_name(sql.text());
        let level = event.metadata().level();
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
        if self.json {
            let line = serde_json::json!({
                "timestamp": now.to_string(),
                "level": level.as_str(),
                "fields": {
                    "message": format!("slow statement: {name} took {:.2} s", sql.elapsed_secs),
                    "statement": name,
                    "elapsed_secs": sql.elapsed_secs,
                },
                "target": SQLX_TARGET,
            });
            writeln!(writer, "{line}")
        } else {
            writeln!(
                writer,
                "{now} {level:>5} slow statement: {name} took {:.2} s",
                sql.elapsed_secs
            )
        }
    }
}

/// The fields of sqlx's statement event that the line needs.
#[derive(Default)]
struct SqlFields {
    summary: String,
    statement: String,
    elapsed_secs: f64,
}

impl SqlFields {
    /// The whole SQL when sqlx gave it, else its summary (the first words).
    fn text(&self) -> &str {
        if self.statement.trim().is_empty() {
            &self.summary
        } else {
            &self.statement
        }
    }
}

impl Visit for SqlFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = value;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_string(),
            "db.statement" => self.statement = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if matches!(field.name(), "summary" | "db.statement") {
            self.record_str(field, format!("{value:?}").trim_matches('"'));
        }
    }
}

/// A statement's name: its verb and the first `receipts.` object it names (the function it
/// calls, the table it reads or writes), e.g. `SELECT receipts.receipt_latest`.
pub fn statement_name(sql: &str) -> String {
    let mut words = sql.split_whitespace();
    let verb = words.next().unwrap_or("?").to_ascii_uppercase();
    let object = sql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .find(|w| w.starts_with("receipts.") && w.len() > "receipts.".len());
    match object {
        Some(object) => format!("{verb} {object}"),
        None => verb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_named_by_its_verb_and_first_object() {
        let sql = "\n\nWITH w AS (SELECT group_id FROM receipts.seq_windows)\n  SELECT * FROM receipts.receipt_latest l\n  JOIN w USING (group_id)\n";
        assert_eq!(statement_name(sql), "WITH receipts.seq_windows");
        assert_eq!(
            statement_name("SELECT receipts.ensure_snapshot_partitions($1)"),
            "SELECT receipts.ensure_snapshot_partitions"
        );
        assert_eq!(statement_name("select now()"), "SELECT");
        assert_eq!(statement_name(""), "?");
    }

    #[test]
    fn a_slow_statement_is_one_line_in_both_formats() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sql = "\n\nSELECT a,\n b\nFROM receipts.export_runs\nWHERE x\n";
        for json in [false, true] {
            let buf = Buf::default();
            let out = buf.clone();
            let builder = tracing_subscriber::fmt().with_writer(move || out.clone());
            let dispatch = if json {
                let format = tracing_subscriber::fmt::format().json();
                tracing::Dispatch::new(
                    builder
                        .json()
                        .event_format(OneLineSql::new(format, true))
                        .finish(),
                )
            } else {
                let format = tracing_subscriber::fmt::format();
                tracing::Dispatch::new(
                    builder
                        .event_format(OneLineSql::new(format, false))
                        .finish(),
                )
            };
            tracing::dispatcher::with_default(&dispatch, || {
                tracing::info!(target: "sqlx::query", summary = "SELECT a, b FROM", db.statement = sql, elapsed_secs = 1.5f64, "slow statement: execution time exceeded alert threshold");
                tracing::info!("another line");
            });
            let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 2, "{text}");
            assert!(
                lines[0].contains("slow statement: SELECT receipts.export_runs took 1.50 s"),
                "{text}"
            );
            assert!(
                lines[0].contains("INFO") && !lines[0].contains("WHERE"),
                "{text}"
            );
        }
    }
}

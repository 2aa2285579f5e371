//! Cron expressions as operators write them, turned into fire times.
//!
//! Two forms are accepted:
//! - crontab(5)'s 5 fields `minute hour day-of-month month day-of-week` (and `@hourly`,
//!   `@daily`, ...), with crontab's meaning: 0 and 7 are Sunday, names (`mon`, `jan`), ranges,
//!   steps, lists, and when BOTH day fields are restricted (neither starts with `*`) a day
//!   matching EITHER fires;
//! - the `cron` crate's seconds form, 6 or 7 fields `sec min hour dom month dow [year]`, with
//!   the crate's meaning (1 = Sunday, both day fields must match).
//!
//! The `cron` crate computes the times; a crontab expression is translated into one or two
//! crate expressions (two when the day fields combine by OR: their union is the schedule).
//! Every expression is first checked field by field here, so an error names the field and the
//! character where it is. Nothing here reads a clock.

use chrono::{DateTime, TimeZone};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// An invalid expression: where (1-based character, and the field when one is to blame) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CronError {
    /// 1-based character position in the expression.
    pub column: usize,
    /// The 1-based field number and its name, when the problem is inside one field.
    pub field: Option<(usize, &'static str)>,
    pub reason: String,
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some((n, name)) => write!(
                f,
                "field {n} ({name}), character {}: {}",
                self.column, self.reason
            ),
            None => write!(f, "character {}: {}", self.column, self.reason),
        }
    }
}

/// Which of the two accepted forms an expression is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// crontab(5): 5 fields, minute resolution.
    Crontab,
    /// The `cron` crate's 6 or 7 fields, seconds first.
    Seconds,
}

/// A parsed, valid cron expression.
#[derive(Debug, Clone)]
pub struct CronExpr {
    source: String,
    form: Form,
    /// The crate schedules whose union is this expression (two when crontab's day-field OR
    /// rule applies, else one).
    schedules: Vec<cron::Schedule>,
}

/// One field's bounds and names.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MONTH_NAMES: &[(&str, u32)] = &[
    ("jan", 1),
    ("feb", 2),
    ("mar", 3),
    ("apr", 4),
    ("may", 5),
    ("jun", 6),
    ("jul", 7),
    ("aug", 8),
    ("sep", 9),
    ("oct", 10),
    ("nov", 11),
    ("dec", 12),
];
/// crontab numbers Sunday 0 (and 7).
const CRONTAB_DAYS: &[(&str, u32)] = &[
    ("sun", 0),
    ("mon", 1),
    ("tue", 2),
    ("wed", 3),
    ("thu", 4),
    ("fri", 5),
    ("sat", 6),
];
/// The `cron` crate numbers Sunday 1.
const CRATE_DAYS: &[(&str, u32)] = &[
    ("sun", 1),
    ("mon", 2),
    ("tue", 3),
    ("wed", 4),
    ("thu", 5),
    ("fri", 6),
    ("sat", 7),
];

const fn spec(name: &'static str, min: u32, max: u32) -> FieldSpec {
    FieldSpec {
        name,
        min,
        max,
        names: &[],
    }
}

const CRONTAB_FIELDS: [FieldSpec; 5] = [
    spec("minute", 0, 59),
    spec("hour", 0, 23),
    spec("day of month", 1, 31),
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
        names: MONTH_NAMES,
    },
    FieldSpec {
        name: "day of week",
        min: 0,
        max: 7,
        names: CRONTAB_DAYS,
    },
];

const SECONDS_FIELDS: [FieldSpec; 7] = [
    spec("second", 0, 59),
    spec("minute", 0, 59),
    spec("hour", 0, 23),
    spec("day of month", 1, 31),
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
        names: MONTH_NAMES,
    },
    FieldSpec {
        name: "day of week",
        min: 1,
        max: 7,
        names: CRATE_DAYS,
    },
    spec("year", 1970, 2100),
];

/// crontab's shorthands and what they stand for.
const SHORTHANDS: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

impl FromStr for CronExpr {
    type Err = CronError;

    fn from_str(source: &str) -> Result<CronExpr, CronError> {
        CronExpr::parse(source)
    }
}

impl CronExpr {
    /// Parses either form; the number of fields says which.
    pub fn parse(source: &str) -> Result<CronExpr, CronError> {
        let trimmed = source.trim();
        if trimmed.starts_with('@') {
            let lower = trimmed.to_ascii_lowercase();
            let Some((_, expanded)) = SHORTHANDS.iter().find(|(s, _)| *s == lower) else {
                return Err(CronError {
                    column: source.find('@').unwrap_or(0) + 1,
                    field: None,
                    reason: format!(
                        "unknown shorthand '{trimmed}': expected one of {}",
                        SHORTHANDS
                            .iter()
                            .map(|(s, _)| *s)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            };
            let mut expr = Self::parse_crontab(expanded, &split_fields(expanded))?;
            expr.source = source.to_string();
            return Ok(expr);
        }
        let fields = split_fields(source);
        match fields.len() {
            5 => Self::parse_crontab(source, &fields),
            6 | 7 => Self::parse_seconds(source, &fields),
            n => Err(CronError {
                column: 1,
                field: None,
                reason: format!(
                    "found {n} fields: expected 5 (crontab: minute hour day-of-month month day-of-week) \
                     or 6-7 (seconds first: second minute hour day-of-month month day-of-week [year])"
                ),
            }),
        }
    }

    fn parse_crontab(source: &str, fields: &[(usize, &str)]) -> Result<CronExpr, CronError> {
        let mut sets = Vec::with_capacity(5);
        for (i, (spec, (offset, text))) in CRONTAB_FIELDS.iter().zip(fields).enumerate() {
            let set = parse_field(text, spec).map_err(|(at, reason)| CronError {
                column: offset + at + 1,
                field: Some((i + 1, spec.name)),
                reason,
            })?;
            sets.push(set);
        }
        // crontab(5): "If both fields are restricted (i.e., don't start with *), the command
        // will be run when either field matches the current time."
        let dom_star = fields[2].1.starts_with('*');
        let dow_star = fields[4].1.starts_with('*');
        let list = |i: usize| render(&sets[i], fields[i].1 == "*");
        let dow = render_crontab_days(&sets[4], fields[4].1 == "*");
        let (min, hour, dom, mon) = (list(0), list(1), list(2), list(3));
        let expressions = if dom_star || dow_star {
            vec![format!("0 {min} {hour} {dom} {mon} {dow}")]
        } else {
            vec![
                format!("0 {min} {hour} {dom} {mon} *"),
                format!("0 {min} {hour} * {mon} {dow}"),
            ]
        };
        Ok(CronExpr {
            source: source.to_string(),
            form: Form::Crontab,
            schedules: expressions
                .iter()
                .map(|e| crate_schedule(e))
                .collect::<Result<_, _>>()?,
        })
    }

    fn parse_seconds(source: &str, fields: &[(usize, &str)]) -> Result<CronExpr, CronError> {
        for (i, (spec, (offset, text))) in SECONDS_FIELDS.iter().zip(fields).enumerate() {
            parse_field(text, spec).map_err(|(at, reason)| CronError {
                column: offset + at + 1,
                field: Some((i + 1, spec.name)),
                reason,
            })?;
        }
        Ok(CronExpr {
            source: source.to_string(),
            form: Form::Seconds,
            schedules: vec![crate_schedule(source.trim())?],
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn form(&self) -> Form {
        self.form
    }

    /// The `cron` crate expressions this one was translated into (their union is the schedule).
    pub fn crate_expressions(&self) -> Vec<&str> {
        self.schedules.iter().map(|s| s.source()).collect()
    }

    /// The first fire time strictly after `t`, in `t`'s zone.
    pub fn next_after<Z: TimeZone>(&self, t: &DateTime<Z>) -> Option<DateTime<Z>> {
        self.schedules
            .iter()
            .filter_map(|s| s.after(t).next())
            .min()
    }

    /// The last fire time strictly before `t`, in `t`'s zone.
    pub fn prev_before<Z: TimeZone>(&self, t: &DateTime<Z>) -> Option<DateTime<Z>> {
        self.schedules
            .iter()
            .filter_map(|s| s.after(t).next_back())
            .max()
    }
}

/// Whitespace-separated fields with their byte offsets.
fn split_fields(source: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in source.char_indices() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                out.push((s, &source[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &source[s..]));
    }
    out
}

fn crate_schedule(expression: &str) -> Result<cron::Schedule, CronError> {
    cron::Schedule::from_str(expression).map_err(|e| CronError {
        column: 1,
        field: None,
        reason: format!(
            "the cron library refused '{expression}': {}",
            e.to_string().replace('\n', " ")
        ),
    })
}

/// The values one field allows. Errors carry the byte offset inside the field.
fn parse_field(text: &str, spec: &FieldSpec) -> Result<BTreeSet<u32>, (usize, String)> {
    let mut set = BTreeSet::new();
    let mut offset = 0;
    for item in text.split(',') {
        if item.is_empty() {
            return Err((offset, "an empty list item".into()));
        }
        parse_item(item, spec, &mut set).map_err(|(at, why)| (offset + at, why))?;
        offset += item.len() + 1;
    }
    Ok(set)
}

/// One list item: `*`, `?`, `V`, `A-B`, each optionally `/STEP`.
fn parse_item(
    item: &str,
    spec: &FieldSpec,
    set: &mut BTreeSet<u32>,
) -> Result<(), (usize, String)> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => {
            let at = range.len() + 1;
            let step: u32 = step
                .parse()
                .map_err(|_| (at, format!("step '{step}' is not a number")))?;
            if step == 0 {
                return Err((at, "a step of 0".into()));
            }
            (range, Some(step))
        }
        None => (item, None),
    };
    let (lo, hi) = if range == "*" || range == "?" {
        (spec.min, spec.max)
    } else if let Some((a, b)) = range.split_once('-') {
        let lo = value(a, spec).map_err(|why| (0, why))?;
        let hi = value(b, spec).map_err(|why| (a.len() + 1, why))?;
        if lo > hi {
            return Err((0, format!("the range {range} runs backwards")));
        }
        (lo, hi)
    } else {
        let v = value(range, spec).map_err(|why| (0, why))?;
        // `V/STEP` means V to the field's end, every STEP (as cronie and the cron crate read it).
        (v, if step.is_some() { spec.max } else { v })
    };
    set.extend((lo..=hi).step_by(step.unwrap_or(1) as usize));
    Ok(())
}

/// A number or a name within the field's bounds.
fn value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    let bounds = || format!("{} is {}-{}", spec.name, spec.min, spec.max);
    if let Ok(n) = text.parse::<u32>() {
        return if (spec.min..=spec.max).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{n} is out of range: {}", bounds()))
        };
    }
    let lower = text.to_ascii_lowercase();
    let named = spec.names.iter().find(|(name, _)| {
        lower.len() >= 3 && full_name(name).starts_with(&lower) && lower.starts_with(name)
    });
    match named {
        Some((_, n)) => Ok(*n),
        None if spec.names.is_empty() => Err(format!("'{text}' is not a number: {}", bounds())),
        None => Err(format!(
            "'{text}' is neither a number nor a name: {}, or {}",
            bounds(),
            spec.names
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The full English name of a three-letter day or month name (so `monday` and `tues` work).
fn full_name(short: &str) -> &'static str {
    const FULL: &[&str] = &[
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    FULL.iter()
        .find(|f| f.starts_with(short))
        .copied()
        .unwrap_or("")
}

/// A set as the crate's list syntax (`*` when the field was a bare `*`).
fn render(set: &BTreeSet<u32>, star: bool) -> String {
    if star {
        return "*".into();
    }
    set.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// crontab's weekdays (0 or 7 = Sunday) as the crate's (1 = Sunday ... 7 = Saturday).
fn render_crontab_days(set: &BTreeSet<u32>, star: bool) -> String {
    let translated: BTreeSet<u32> = set.iter().map(|d| d % 7 + 1).collect();
    render(&translated, star)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// The next `n` fire times after `from`, as RFC 3339 strings (UTC).
    fn fires(expr: &str, from: &str, n: usize) -> Vec<String> {
        let e = CronExpr::parse(expr).unwrap_or_else(|err| panic!("{expr}: {err}"));
        let mut t = at(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = e.next_after(&t).unwrap();
            out.push(t.format("%Y-%m-%d %a %H:%M:%S").to_string());
        }
        out
    }

    fn translated(expr: &str) -> Vec<String> {
        CronExpr::parse(expr)
            .unwrap()
            .crate_expressions()
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn err(expr: &str) -> CronError {
        CronExpr::parse(expr).unwrap_err()
    }

    // 2026-01-01 is a Thursday.
    const NEW_YEAR: &str = "2026-01-01T00:10:00Z";

    #[test]
    fn weekdays_are_translated_to_the_crates_numbering() {
        assert_eq!(translated("0 9 * * 1"), ["0 0 9 * * 2"]);
        assert_eq!(translated("0 9 * * 0"), ["0 0 9 * * 1"]);
        assert_eq!(translated("0 9 * * 7"), ["0 0 9 * * 1"]);
        assert_eq!(translated("0 9 * * 6"), ["0 0 9 * * 7"]);
        assert_eq!(translated("0 9 * * 1-5"), ["0 0 9 * * 2,3,4,5,6"]);
        assert_eq!(translated("0 9 * * MON-fri"), ["0 0 9 * * 2,3,4,5,6"]);
        assert_eq!(translated("0 9 * * 5-7"), ["0 0 9 * * 1,6,7"]);
        assert_eq!(translated("0 9 * * sun,sat"), ["0 0 9 * * 1,7"]);
        assert_eq!(translated("0 9 * * */2"), ["0 0 9 * * 1,3,5,7"]);
        assert_eq!(translated("5 * * * *"), ["0 5 * * * *"]);
    }

    #[test]
    fn both_day_fields_restricted_become_two_schedules_or_one_when_either_is_starred() {
        assert_eq!(translated("0 0 13 * 5"), ["0 0 0 13 * *", "0 0 0 * * 6"]);
        // `*/2` starts with `*`: crontab ANDs the two fields then.
        assert_eq!(translated("0 0 */10 * 1"), ["0 0 0 1,11,21,31 * 2"]);
        assert_eq!(translated("0 0 1 * *"), ["0 0 0 1 * *"]);
    }

    #[test]
    fn minute_hour_and_month_forms() {
        assert_eq!(translated("0-10/5 */6 * * *"), ["0 0,5,10 0,6,12,18 * * *"]);
        assert_eq!(translated("1,2,30 3 * jan,JUL *"), ["0 1,2,30 3 * 1,7 *"]);
        assert_eq!(translated("0 0 1 jan-mar *"), ["0 0 0 1 1,2,3 *"]);
        assert_eq!(translated("50/5 * * * *"), ["0 50,55 * * * *"]);
        assert_eq!(translated("@hourly"), ["0 0 * * * *"]);
        assert_eq!(translated("@weekly"), ["0 0 0 * * 1"]);
    }

    #[test]
    fn next_fires_of_simple_expressions() {
        assert_eq!(
            fires("5 * * * *", NEW_YEAR, 3),
            [
                "2026-01-01 Thu 01:05:00",
                "2026-01-01 Thu 02:05:00",
                "2026-01-01 Thu 03:05:00"
            ]
        );
        assert_eq!(
            fires("*/15 * * * *", NEW_YEAR, 2),
            ["2026-01-01 Thu 00:15:00", "2026-01-01 Thu 00:30:00"]
        );
        assert_eq!(
            fires("0 0 1 * *", NEW_YEAR, 2),
            ["2026-02-01 Sun 00:00:00", "2026-03-01 Sun 00:00:00"]
        );
    }

    #[test]
    fn sunday_is_0_7_and_sun_and_monday_is_1() {
        for sunday in ["0 9 * * 0", "0 9 * * 7", "0 9 * * sun", "0 9 * * Sunday"] {
            assert_eq!(
                fires(sunday, NEW_YEAR, 1),
                ["2026-01-04 Sun 09:00:00"],
                "{sunday}"
            );
        }
        assert_eq!(
            fires("0 9 * * 1", NEW_YEAR, 2),
            ["2026-01-05 Mon 09:00:00", "2026-01-12 Mon 09:00:00"]
        );
        assert_eq!(
            fires("30 17 * * mon-fri", "2026-01-02T18:00:00Z", 2),
            ["2026-01-05 Mon 17:30:00", "2026-01-06 Tue 17:30:00"]
        );
    }

    #[test]
    fn restricted_day_fields_fire_on_either() {
        // Every Friday and every 13th.
        assert_eq!(
            fires("0 0 13 * 5", NEW_YEAR, 4),
            [
                "2026-01-02 Fri 00:00:00",
                "2026-01-09 Fri 00:00:00",
                "2026-01-13 Tue 00:00:00",
                "2026-01-16 Fri 00:00:00"
            ]
        );
        // A starred day of month (`*/2`) ANDs: odd days that are Mondays.
        assert_eq!(
            fires("0 0 */2 * 1", NEW_YEAR, 3),
            [
                "2026-01-05 Mon 00:00:00",
                "2026-01-19 Mon 00:00:00",
                "2026-02-09 Mon 00:00:00"
            ]
        );
    }

    #[test]
    fn seconds_form_keeps_the_crates_meaning() {
        let e = CronExpr::parse("*/2 * * * * *").unwrap();
        assert_eq!(e.form(), Form::Seconds);
        assert_eq!(
            fires("*/2 * * * * *", "2026-01-01T00:00:01Z", 3),
            [
                "2026-01-01 Thu 00:00:02",
                "2026-01-01 Thu 00:00:04",
                "2026-01-01 Thu 00:00:06"
            ]
        );
        // The crate's 1 is Sunday.
        assert_eq!(
            fires("0 0 9 * * 1", NEW_YEAR, 1),
            ["2026-01-04 Sun 09:00:00"]
        );
        assert_eq!(
            fires("0 0 9 * * Mon 2027", NEW_YEAR, 1),
            ["2027-01-04 Mon 09:00:00"]
        );
    }

    #[test]
    fn previous_fire_time() {
        let e = CronExpr::parse("5 * * * *").unwrap();
        let prev = e.prev_before(&at("2026-01-01T03:00:00Z")).unwrap();
        assert_eq!(prev, at("2026-01-01T02:05:00Z"));
        let e = CronExpr::parse("0 0 13 * 5").unwrap();
        let prev = e.prev_before(&at("2026-01-14T00:00:00Z")).unwrap();
        assert_eq!(prev, at("2026-01-13T00:00:00Z"));
    }

    #[test]
    fn time_zones_shift_the_fires() {
        let e = CronExpr::parse("0 9 * * *").unwrap();
        let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
        let next = e.next_after(&at(NEW_YEAR).with_timezone(&tz)).unwrap();
        assert_eq!(next.with_timezone(&Utc), at("2026-01-01T01:00:00Z"));
    }

    #[test]
    fn errors_name_the_field_and_the_character() {
        let e = err("61 * * * *");
        assert_eq!((e.column, e.field), (1, Some((1, "minute"))));
        assert!(
            e.reason.contains("61 is out of range: minute is 0-59"),
            "{e}"
        );
        let e = err("0 9 * * 8");
        assert_eq!((e.column, e.field), (9, Some((5, "day of week"))));
        let e = err("0 9 * * 1-9");
        assert_eq!((e.column, e.field), (11, Some((5, "day of week"))));
        let e = err("*/0 * * * *");
        assert_eq!(e.column, 3);
        assert!(e.reason.contains("step of 0"), "{e}");
        let e = err("5-1 * * * *");
        assert!(e.reason.contains("runs backwards"), "{e}");
        let e = err("0 0 * foo *");
        assert_eq!((e.column, e.field), (7, Some((4, "month"))));
        assert!(e.reason.contains("jan"), "{e}");
        let e = err("0 0 1,,2 * *");
        assert_eq!(e.column, 7);
        let e = err("* * *");
        assert!(e.reason.contains("found 3 fields"), "{e}");
        let e = err("@reboot");
        assert!(e.reason.contains("unknown shorthand"), "{e}");
        let e = err("* * * * * 0");
        assert_eq!((e.column, e.field), (11, Some((6, "day of week"))));
        assert_eq!(
            e.to_string(),
            "field 6 (day of week), character 11: 0 is out of range: day of week is 1-7"
        );
    }
}

//! Cron expressions as operators write them, turned into fire times by the `cron` crate.
//!
//! Two forms, told apart by the number of fields, number weekdays alike, as crontab(5) does:
//! 0 or 7 is Sunday, 1 Monday ... 6 Saturday, or the names `sun` ... `sat`.
//! - crontab(5)'s 5 fields `minute hour day-of-month month day-of-week` (and `@hourly`,
//!   `@daily`, ...): when BOTH day fields are restricted (neither starts with `*`), a day
//!   matching EITHER fires;
//! - the `cron` crate's seconds form, 6 or 7 fields `sec min hour dom month dow [year]`: both
//!   day fields must match, as the crate has it. The crate itself numbers Sunday 1, so a
//!   numeric weekday here is warned about (names mean the same everywhere).
//!
//! The translation into the crate's dialect is as small as that allows: a crontab expression
//! gains a seconds field `0`, the day-of-week field is rewritten as day names (`MON-FRI`), and
//! crontab's day-field OR becomes two crate schedules (their union is the schedule). Every
//! other field goes to the crate as written, after a check here that names the field and the
//! character of an error. Nothing here reads a clock.

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
    /// Set when a seconds-form expression numbers its weekdays (see [`CronExpr::warning`]).
    warning: Option<String>,
}

/// One field's name, bounds and names (the first name stands for `min`).
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const fn field(name: &'static str, min: u32, max: u32) -> Field {
    Field {
        name,
        min,
        max,
        names: &[],
    }
}

const MONTHS: &[&str] = &[
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
/// crontab's order: Sunday is 0 (and 7).
const DAYS: &[&str] = &[
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// The seconds form's fields; crontab's five are `FIELDS[1..6]`.
const FIELDS: [Field; 7] = [
    field("second", 0, 59),
    field("minute", 0, 59),
    field("hour", 0, 23),
    field("day of month", 1, 31),
    Field {
        names: MONTHS,
        ..field("month", 1, 12)
    },
    Field {
        names: DAYS,
        ..field("day of week", 0, 7)
    },
    field("year", 1970, 2100),
];
/// The day fields' indexes in the seconds form.
const DOM: usize = 3;
const DOW: usize = 5;

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
        if source.trim().starts_with('@') {
            let mut expr = Self::parse(expand_shorthand(source)?)?;
            expr.source = source.to_string();
            return Ok(expr);
        }
        let mut fields = split_fields(source);
        let form = form_of(fields.len())?;
        if form == Form::Crontab {
            fields.insert(0, (0, "0"));
        }
        let days = check_fields(form, &fields)?;
        let mut texts: Vec<String> = fields.iter().map(|(_, t)| t.to_string()).collect();
        let dow_text = fields[DOW].1;
        texts[DOW] = day_names(&days, dow_text);
        let warning = (form == Form::Seconds && dow_text.contains(|c: char| c.is_ascii_digit()))
            .then(|| numeric_weekday_warning(dow_text, &texts[DOW]));
        // crontab(5): "If both fields are restricted (i.e., don't start with *), the command
        // will be run when either field matches the current time."
        let either =
            form == Form::Crontab && !fields[DOM].1.starts_with('*') && !dow_text.starts_with('*');
        let expressions = if either {
            let mut by_date = texts.clone();
            by_date[DOW] = "*".into();
            texts[DOM] = "*".into();
            vec![by_date.join(" "), texts.join(" ")]
        } else {
            vec![texts.join(" ")]
        };
        Ok(CronExpr {
            source: source.to_string(),
            form,
            schedules: expressions
                .iter()
                .map(|e| crate_schedule(e))
                .collect::<Result<_, _>>()?,
            warning,
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

    /// How the expression was read: the crate expressions, seconds first and weekdays named,
    /// joined by "or" when a day of either day field fires.
    pub fn reading(&self) -> String {
        self.crate_expressions().join(" or ")
    }

    /// A warning about the expression (numeric weekdays in the seconds form), if any.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
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

/// The form a number of fields means.
fn form_of(fields: usize) -> Result<Form, CronError> {
    match fields {
        5 => Ok(Form::Crontab),
        6 | 7 => Ok(Form::Seconds),
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

/// Checks every field (a crontab expression with its seconds `0` in front) and returns the
/// days of the week it allows, 0 = Sunday ... 6.
fn check_fields(form: Form, fields: &[(usize, &str)]) -> Result<BTreeSet<u32>, CronError> {
    let mut days = BTreeSet::new();
    for (i, (spec, (offset, text))) in FIELDS.iter().zip(fields).enumerate() {
        let set = parse_field(text, spec).map_err(|(at, reason)| CronError {
            column: offset + at + 1,
            // crontab numbers its fields from the minute.
            field: Some((i + usize::from(form == Form::Seconds), spec.name)),
            reason,
        })?;
        if i == DOW {
            days = set.iter().map(|d| d % 7).collect();
        }
    }
    Ok(days)
}

/// The crontab expression a shorthand stands for.
fn expand_shorthand(source: &str) -> Result<&'static str, CronError> {
    let lower = source.trim().to_ascii_lowercase();
    match SHORTHANDS.iter().find(|(s, _)| *s == lower) {
        Some((_, expanded)) => Ok(expanded),
        None => Err(CronError {
            column: source.find('@').unwrap_or(0) + 1,
            field: None,
            reason: format!(
                "unknown shorthand '{}': expected one of {}",
                source.trim(),
                SHORTHANDS
                    .iter()
                    .map(|(s, _)| *s)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

fn numeric_weekday_warning(written: &str, named: &str) -> String {
    format!(
        "day of week '{written}' reads as {named} (crontab's numbers: 0 or 7 = Sunday, 1 = Monday), \
         not as the cron crate's own numbers (1 = Sunday): write day names ({named})"
    )
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
fn parse_field(text: &str, spec: &Field) -> Result<BTreeSet<u32>, (usize, String)> {
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
fn parse_item(item: &str, spec: &Field, set: &mut BTreeSet<u32>) -> Result<(), (usize, String)> {
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

/// A number or a name (its first three letters, or all of it) within the field's bounds.
fn value(text: &str, spec: &Field) -> Result<u32, String> {
    let bounds = || format!("{} is {}-{}", spec.name, spec.min, spec.max);
    if let Ok(n) = text.parse::<u32>() {
        return if (spec.min..=spec.max).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{n} is out of range: {}", bounds()))
        };
    }
    let lower = text.to_ascii_lowercase();
    let named = spec
        .names
        .iter()
        .position(|full| *full == lower || (lower.len() == 3 && full.starts_with(&lower)));
    match named {
        Some(i) => Ok(spec.min + i as u32),
        None if spec.names.is_empty() => Err(format!("'{text}' is not a number: {}", bounds())),
        None => Err(format!(
            "'{text}' is neither a number nor a name: {}, or {}",
            bounds(),
            spec.names
                .iter()
                .map(|n| &n[..3])
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// crontab's weekdays (0 = Sunday ... 6) as the crate reads them whatever its numbering: day
/// names, consecutive days as a range (`MON-FRI`); `*` when the field was `*`.
fn day_names(days: &BTreeSet<u32>, written: &str) -> String {
    if written == "*" || written == "?" {
        return written.into();
    }
    let name = |d: u32| DAYS[d as usize][..3].to_ascii_uppercase();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &d in days {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == d => *end = d,
            _ => runs.push((d, d)),
        }
    }
    runs.iter()
        .map(|&(a, b)| match b - a {
            0 => name(a),
            1 => format!("{},{}", name(a), name(b)),
            _ => format!("{}-{}", name(a), name(b)),
        })
        .collect::<Vec<_>>()
        .join(",")
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
    fn weekdays_are_handed_to_the_crate_as_names() {
        assert_eq!(translated("0 9 * * 1"), ["0 0 9 * * MON"]);
        assert_eq!(translated("0 9 * * 0"), ["0 0 9 * * SUN"]);
        assert_eq!(translated("0 9 * * 7"), ["0 0 9 * * SUN"]);
        assert_eq!(translated("0 9 * * 6"), ["0 0 9 * * SAT"]);
        assert_eq!(translated("0 9 * * 1-5"), ["0 0 9 * * MON-FRI"]);
        assert_eq!(translated("0 9 * * MON-fri"), ["0 0 9 * * MON-FRI"]);
        assert_eq!(translated("0 9 * * 5-7"), ["0 0 9 * * SUN,FRI,SAT"]);
        assert_eq!(translated("0 9 * * sun,sat"), ["0 0 9 * * SUN,SAT"]);
        assert_eq!(translated("0 9 * * */2"), ["0 0 9 * * SUN,TUE,THU,SAT"]);
        assert_eq!(translated("0 9 * * 0-7"), ["0 0 9 * * SUN-SAT"]);
        assert_eq!(translated("5 * * * *"), ["0 5 * * * *"]);
        // The seconds form: the same numbers, the same days.
        assert_eq!(translated("0 0 9 * * 1"), ["0 0 9 * * MON"]);
        assert_eq!(translated("0 0 9 * * 0,7"), ["0 0 9 * * SUN"]);
        assert_eq!(
            translated("0 0 9 * * 1/2 2027"),
            ["0 0 9 * * SUN,MON,WED,FRI 2027"]
        );
    }

    #[test]
    fn both_day_fields_restricted_become_two_schedules_or_one_when_either_is_starred() {
        assert_eq!(translated("0 0 13 * 5"), ["0 0 0 13 * *", "0 0 0 * * FRI"]);
        // `*/2` starts with `*`: crontab ANDs the two fields then.
        assert_eq!(translated("0 0 */10 * 1"), ["0 0 0 */10 * MON"]);
        assert_eq!(translated("0 0 1 * *"), ["0 0 0 1 * *"]);
        // The seconds form always ANDs them, as the crate does.
        assert_eq!(translated("0 0 0 13 * fri"), ["0 0 0 13 * FRI"]);
    }

    #[test]
    fn other_fields_go_to_the_crate_as_written_and_fire_as_crontab_reads_them() {
        assert_eq!(translated("0-10/5 */6 * * *"), ["0 0-10/5 */6 * * *"]);
        assert_eq!(
            fires("0-10/5 */6 * * *", NEW_YEAR, 4),
            [
                "2026-01-01 Thu 06:00:00",
                "2026-01-01 Thu 06:05:00",
                "2026-01-01 Thu 06:10:00",
                "2026-01-01 Thu 12:00:00"
            ]
        );
        assert_eq!(
            fires("1,2,30 3 * jan,JUL *", NEW_YEAR, 4),
            [
                "2026-01-01 Thu 03:01:00",
                "2026-01-01 Thu 03:02:00",
                "2026-01-01 Thu 03:30:00",
                "2026-01-02 Fri 03:01:00"
            ]
        );
        assert_eq!(
            fires("0 0 1 jan-mar *", NEW_YEAR, 3),
            [
                "2026-02-01 Sun 00:00:00",
                "2026-03-01 Sun 00:00:00",
                "2027-01-01 Fri 00:00:00"
            ]
        );
        assert_eq!(
            fires("0 0 1 july *", NEW_YEAR, 1),
            ["2026-07-01 Wed 00:00:00"]
        );
        // `V/STEP` is V to the field's end.
        assert_eq!(
            fires("50/5 * * * *", NEW_YEAR, 3),
            [
                "2026-01-01 Thu 00:50:00",
                "2026-01-01 Thu 00:55:00",
                "2026-01-01 Thu 01:50:00"
            ]
        );
        assert_eq!(translated("@hourly"), ["0 0 * * * *"]);
        assert_eq!(translated("@weekly"), ["0 0 0 * * SUN"]);
        assert_eq!(CronExpr::parse("@weekly").unwrap().source(), "@weekly");
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
    fn seconds_form_numbers_weekdays_as_crontab_does_and_warns_about_numbers() {
        let e = CronExpr::parse("*/2 * * * * *").unwrap();
        assert_eq!(e.form(), Form::Seconds);
        assert_eq!(e.warning(), None);
        assert_eq!(
            fires("*/2 * * * * *", "2026-01-01T00:00:01Z", 3),
            [
                "2026-01-01 Thu 00:00:02",
                "2026-01-01 Thu 00:00:04",
                "2026-01-01 Thu 00:00:06"
            ]
        );
        // 1 is Monday in both forms, 0 and 7 Sunday, 6 Saturday.
        for (seconds, crontab, day) in [
            ("0 0 0 * * 1", "0 0 * * 1", "2026-01-05 Mon 00:00:00"),
            ("0 0 0 * * 0", "0 0 * * 0", "2026-01-04 Sun 00:00:00"),
            ("0 0 0 * * 7", "0 0 * * 7", "2026-01-04 Sun 00:00:00"),
            ("0 0 0 * * 6", "0 0 * * 6", "2026-01-03 Sat 00:00:00"),
            ("0 0 0 * * 1-5", "0 0 * * 1-5", "2026-01-02 Fri 00:00:00"),
        ] {
            assert_eq!(fires(seconds, NEW_YEAR, 1), [day], "{seconds}");
            assert_eq!(fires(crontab, NEW_YEAR, 1), [day], "{crontab}");
            let warning = CronExpr::parse(seconds)
                .unwrap()
                .warning()
                .unwrap()
                .to_string();
            assert!(
                warning.contains("crontab's numbers") && warning.contains("write day names"),
                "{warning}"
            );
            assert_eq!(
                CronExpr::parse(crontab).unwrap().warning(),
                None,
                "{crontab}"
            );
        }
        let e = CronExpr::parse("0 0 0 * * 1").unwrap();
        assert!(
            e.warning().unwrap().contains("'1' reads as MON"),
            "{:?}",
            e.warning()
        );
        assert_eq!(e.reading(), "0 0 0 * * MON");
        assert_eq!(
            fires("0 0 9 * * Mon 2027", NEW_YEAR, 1),
            ["2027-01-04 Mon 09:00:00"]
        );
        assert_eq!(
            CronExpr::parse("0 0 9 * * Mon 2027").unwrap().warning(),
            None
        );
    }

    #[test]
    fn the_reading_joins_the_two_schedules_of_either_day() {
        assert_eq!(
            CronExpr::parse("0 0 13 * 5").unwrap().reading(),
            "0 0 0 13 * * or 0 0 0 * * FRI"
        );
        assert_eq!(
            CronExpr::parse("30 17 * * mon-fri").unwrap().reading(),
            "0 30 17 * * MON-FRI"
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
        let e = err("* * * * * 8");
        assert_eq!((e.column, e.field), (11, Some((6, "day of week"))));
        assert_eq!(
            e.to_string(),
            "field 6 (day of week), character 11: 8 is out of range: day of week is 0-7"
        );
        let e = err("0 0 * * * * 1969");
        assert_eq!((e.column, e.field), (13, Some((7, "year"))));
        let e = err("0 0 * * tues");
        assert_eq!((e.column, e.field), (9, Some((5, "day of week"))));
        assert!(e.reason.contains("sun, mon, tue"), "{e}");
    }
}

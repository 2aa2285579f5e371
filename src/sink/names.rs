//! The lake's file names, made and read in one place. Every file a run puts in the lake carries
//! its run in its name, so a repair can sweep a dead run's leftovers and `lake verify` can leave
//! a running run's files alone, without trusting any directory listing beyond the name:
//!
//! | kind | name | where |
//! |---|---|---|
//! | [`Kind::Snapshot`] | `run-<run>-<part>.parquet` | `receipt_snapshots/capture_date=D/` (Hive-style) |
//! | [`Kind::Temp`] | `.run-<run>-<part>.<random>.parquet.tmp` | beside it, while written |
//! | [`Kind::Pending`] | `run-<run>-<part>.<random>.parquet` | `_pending/receipt_snapshots/...` (object store) |
//! | [`Kind::Data`] | `run-<run>-<part>-<random>.parquet` | the Iceberg table's `data/captured_at_day=D/` |
//! | [`Kind::Events`] | `run-<run>.parquet` | `read_events/capture_date=D/` |
//! | [`Kind::Events`] | `run-<run>.parquet` | `message_read_progress/capture_date=D/` (read progress) |
//!
//! `<part>` has at least 4 digits; `<random>` is [`crate::files::RANDOM_CHARS`] letters and
//! digits (16 hex digits for Iceberg's). A name that does not parse is nobody's: never swept.

/// The directory of the read-events table under the lake's root.
pub const EVENTS_DIR: &str = "read_events";

/// The directory of the read-progress table's change rows under the lake's root.
pub const PROGRESS_DIR: &str = "message_read_progress";

/// What a file of the lake is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Hive-style snapshot file at its final name.
    Snapshot { part: i32 },
    /// A Hive-style snapshot file being written (hidden; from versions before the random part,
    /// also `.run-<run>-<part>.parquet.tmp`).
    Temp { part: i32 },
    /// An upload under `_pending/`, waiting for its copy to the final key.
    Pending { part: i32 },
    /// An Iceberg data file.
    Data { part: i32 },
    /// A read-events file.
    Events,
}

/// A parsed file name: whose run, and what kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name {
    pub run_id: i64,
    pub kind: Kind,
}

/// `run-<run_id>-<part>.parquet`, the part zero-padded to 4 digits.
pub fn snapshot(run_id: i64, part: i32) -> String {
    format!("run-{run_id}-{part:04}.parquet")
}

/// How the name of a snapshot file being written starts and ends: `.run-<run_id>-<part>.` + a
/// random part + `.parquet.tmp`. Hidden, and not ending in `.parquet`.
pub fn temp_affixes(run_id: i64, part: i32) -> (String, &'static str) {
    (format!(".run-{run_id}-{part:04}."), ".parquet.tmp")
}

/// `run-<run_id>-<part>.<random>.parquet`: an upload's name under `_pending/`, beside the
/// final name `final_name` (a [`snapshot`] name).
pub fn pending(final_name: &str) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    let stem = final_name.strip_suffix(".parquet").unwrap_or(final_name);
    let random = Alphanumeric.sample_string(&mut rand::rng(), crate::files::RANDOM_CHARS);
    format!("{stem}.{random}.parquet")
}

/// `run-<run_id>-<part>-<random>.parquet`: an Iceberg data file. The random part keeps a fenced
/// writer still finishing a file from ever overwriting one its run's new owner committed.
pub fn data(run_id: i64, part: i32) -> String {
    let random: u64 = rand::random();
    format!("run-{run_id}-{part:04}-{random:016x}.parquet")
}

/// `DIR/capture_date=YYYY-MM-DD/run-<run_id>.parquet`: a per-run file of the read events'
/// or the read progress's table `dir`, relative to the lake's root.
pub fn per_run(dir: &str, capture_date: chrono::NaiveDate, run_id: i64) -> String {
    format!(
        "{dir}/capture_date={}/{}",
        capture_date.format("%Y-%m-%d"),
        events(run_id)
    )
}

/// `run-<run_id>.parquet`: a read-events file (and a read-progress file).
pub fn events(run_id: i64) -> String {
    format!("run-{run_id}.parquet")
}

/// Reads a file name (the last segment of a path or key; a whole path is accepted too).
pub fn parse(path: &str) -> Option<Name> {
    let name = path.rsplit('/').next()?;
    if let Some(hidden) = name.strip_prefix('.') {
        let rest = hidden.strip_suffix(".parquet.tmp")?;
        let (run_id, rest) = run_prefix(rest)?;
        let part = match rest.split_once('.') {
            Some((part, random)) if crate::files::is_random_part(random) => part,
            Some(_) => return None,
            None => rest,
        };
        let part = part_number(part)?;
        return Some(Name {
            run_id,
            kind: Kind::Temp { part },
        });
    }
    let rest = name.strip_suffix(".parquet")?;
    let (run_id, rest) = match run_prefix(rest) {
        Some(found) => found,
        None => {
            let run_id = digits(rest.strip_prefix("run-")?)?;
            return Some(Name {
                run_id,
                kind: Kind::Events,
            });
        }
    };
    let kind = if let Some((part, random)) = rest.split_once('.') {
        let part = part_number(part)?;
        crate::files::is_random_part(random).then_some(Kind::Pending { part })?
    } else if let Some((part, random)) = rest.split_once('-') {
        let part = part_number(part)?;
        let ok = !random.is_empty() && random.bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then_some(Kind::Data { part })?
    } else {
        Kind::Snapshot {
            part: part_number(rest)?,
        }
    };
    Some(Name { run_id, kind })
}

/// `run-<digits>-` then the rest.
fn run_prefix(text: &str) -> Option<(i64, &str)> {
    let (run, rest) = text.strip_prefix("run-")?.split_once('-')?;
    Some((digits(run)?, rest))
}

fn digits(text: &str) -> Option<i64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// A part: at least 4 digits, as every version wrote it.
fn part_number(text: &str) -> Option<i32> {
    (text.len() >= 4 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str, run_id: i64) -> Option<Kind> {
        parse(name).filter(|n| n.run_id == run_id).map(|n| n.kind)
    }

    #[test]
    fn every_kind_is_read_back_with_its_run() {
        assert_eq!(kind(&snapshot(12, 1), 12), Some(Kind::Snapshot { part: 1 }));
        assert_eq!(
            kind("run-12-12345.parquet", 12),
            Some(Kind::Snapshot { part: 12345 })
        );
        assert_eq!(
            kind(".run-12-0001.parquet.tmp", 12),
            Some(Kind::Temp { part: 1 })
        );
        assert_eq!(
            kind(".run-12-0001.Ab3dE6gH9k.parquet.tmp", 12),
            Some(Kind::Temp { part: 1 })
        );
        assert_eq!(
            kind(&pending(&snapshot(12, 3)), 12),
            Some(Kind::Pending { part: 3 })
        );
        assert_eq!(kind(&data(12, 3), 12), Some(Kind::Data { part: 3 }));
        assert_eq!(kind(&events(7), 7), Some(Kind::Events));
        assert_eq!(
            parse("receipt_snapshots/capture_date=2026-11-29/run-12-0003.parquet"),
            Some(Name {
                run_id: 12,
                kind: Kind::Snapshot { part: 3 }
            })
        );
    }

    #[test]
    fn names_that_are_not_ours_are_nobodys() {
        for name in [
            ".run-12-0001.short.parquet.tmp",
            "run-12-01.parquet",
            "run-12-0001.parquet.tmp",
            ".run-12-0001.parquet",
            "run-12-0001.short.parquet",
            "run-12-0001-.parquet",
            "run-x-0001.parquet",
            "run-.parquet",
            "00001-abc.metadata.json",
            "notes.txt",
            "x.parquet",
        ] {
            assert_eq!(parse(name), None, "{name}");
        }
        // Another run's files are not this run's.
        assert_eq!(kind(".run-123-0001.Ab3dE6gH9k.parquet.tmp", 12), None);
        assert_eq!(kind("run-123-0001.parquet", 12), None);
        assert_eq!(kind("run-1-0001.parquet", 12), None);
    }
}

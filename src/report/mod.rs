//! `receipt-exporter report`: one self-contained HTML page on how a range of messages was read.
//!
//! Every figure is aggregated in Postgres ([`gather`]): the page gets a few hundred numbers
//! whatever the size of the data set, from `receipts.message_read_progress` (one row per
//! message) and, for the curves of the read ratio by message age, the snapshots of the range's
//! messages. The range is of messages first seen in `[since, until)`; a message's snapshots
//! count up to `until`. [`html::render`] draws the page: inline SVG charts, each an
//! `<svg data-chart="NAME">` with one element carrying `data-series` per series, and its table
//! beside it for copy-paste; no script from elsewhere, no font, no request.

pub mod html;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;

/// The message ages the read-ratio curves are sampled at, in hours since the first snapshot:
/// each point is the newest snapshot of each message at or past that age (and before the next).
pub const AGE_EDGES_HOURS: &[f64] = &[
    0.0, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0, 48.0, 72.0, 168.0, 336.0, 720.0,
];

/// The bins of the time-to-50% and time-to-90% distribution, in hours (the last bin is open).
pub const TIME_EDGES_HOURS: &[f64] = &[0.0, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0, 48.0, 72.0, 168.0];

/// At most this many groups get a curve of their own (the most messages first); the median and
/// quartiles are over every group.
pub const CURVE_GROUPS: usize = 8;

/// How many of the least-reading groups are shown.
pub const LEAST_GROUPS: usize = 10;

/// How many accounts of silent members are listed per group (the count is always whole).
pub const SILENT_ACCOUNTS: usize = 20;

/// What the page covers.
#[derive(Debug, Clone)]
pub struct Range {
    /// Inclusive.
    pub since: DateTime<Utc>,
    /// Exclusive.
    pub until: DateTime<Utc>,
    /// Only these groups (empty: every group).
    pub groups: Vec<String>,
    /// Only this app's messages (`sdkappid`).
    pub app: Option<i64>,
}

/// Parses `--since` / `--until`: an RFC 3339 timestamp (`2026-12-01T08:00:00Z`) or a date
/// (`2026-12-01`, midnight UTC).
pub fn parse_instant(value: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    Err(format!(
        "'{value}' is neither an RFC 3339 timestamp (2026-12-01T08:00:00Z) nor a date (2026-12-01)"
    ))
}

/// One point of a curve: an x position (a bucket's index) and a value.
pub type Points = Vec<(usize, f64)>;

/// Everything the page shows.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub messages: i64,
    pub groups: i64,
    pub snapshots: i64,
    /// Per group (the [`CURVE_GROUPS`] with most messages): the median read ratio per age bucket.
    pub ratio_by_group: Vec<(String, Points)>,
    /// Over every message: the 25th, 50th and 75th percentile per age bucket.
    pub ratio_quartiles: [Points; 3],
    /// Messages per bin of [`TIME_EDGES_HOURS`] (last bin open), to 50% and to 90%; and how
    /// many did not reach it.
    pub time_to_half: Vec<i64>,
    pub time_to_ninety: Vec<i64>,
    pub never_half: i64,
    pub never_ninety: i64,
    /// The groups that read least: (group, messages, mean read ratio).
    pub least: Vec<(String, i64, f64)>,
    /// Per UTC day of first sighting: (day, messages, mean read ratio, median hours to 50%).
    pub daily: Vec<(NaiveDate, i64, f64, Option<f64>)>,
    /// Members seen reading before the range who read nothing in it: (group, count, accounts
    /// as stored, at most [`SILENT_ACCOUNTS`]). Empty when no read events are stored.
    pub silent: Vec<(String, i64, Vec<String>)>,
    /// Whether any read event is stored for the range's groups (read-event detail on).
    pub has_read_events: bool,
}

/// One row of the ratio-by-age query: the group (none: every group), the bucket, the points
/// in it, then the 25th percentile (every group only), the median, the 75th.
type BucketRow = (Option<String>, i32, i64, Option<f64>, f64, Option<f64>);

/// The filter every query starts from: the range's messages.
const MESSAGES: &str = "
    SELECT p.group_id, p.msg_seq, p.first_seen_at, p.read_ratio, p.half_read_at, p.ninety_read_at
    FROM receipts.message_read_progress p
    WHERE p.first_seen_at >= $1 AND p.first_seen_at < $2
      AND (cardinality($3::text[]) = 0 OR p.group_id = ANY($3))
      AND ($4::bigint IS NULL OR p.sdkappid = $4)";

/// Reads every figure of the page for `range` (aggregated in Postgres).
pub async fn gather(pool: &PgPool, range: &Range) -> sqlx::Result<Report> {
    let mut report = Report::default();
    let sql = format!("WITH m AS ({MESSAGES}) SELECT count(*), count(DISTINCT group_id) FROM m");
    let (messages, groups): (i64, i64) = sqlx::query_as(&sql)
        .bind(range.since)
        .bind(range.until)
        .bind(&range.groups)
        .bind(range.app)
        .fetch_one(pool)
        .await?;
    report.messages = messages;
    report.groups = groups;
    if messages == 0 {
        return Ok(report);
    }
    ratio_by_age(pool, range, &mut report).await?;
    time_to_read(pool, range, &mut report).await?;
    least_read(pool, range, &mut report).await?;
    daily(pool, range, &mut report).await?;
    silent(pool, range, &mut report).await?;
    Ok(report)
}

/// The read ratio by message age (see [`Report::ratio_by_group`]).
/// (Over 60 lines: one query, most of it SQL: each message's snapshots reduced to one ratio per
/// age bucket once, then the quartiles over every group and the medians of the busiest groups.)
async fn ratio_by_age(pool: &PgPool, range: &Range, report: &mut Report) -> sqlx::Result<()> {
    // The read ratio by age: per message and age bucket the newest snapshot's ratio, then the
    // median per group (the busiest groups) and the quartiles over all.
    let per_bucket = format!(
        "WITH m AS ({MESSAGES}),
         s AS MATERIALIZED (
            SELECT m.group_id, m.msg_seq,
                   width_bucket(extract(epoch FROM r.captured_at - m.first_seen_at) / 3600.0,
                                $5::float8[]) - 1 AS bucket,
                   (array_agg(r.read_num::float8 / (r.read_num + r.unread_num)
                              ORDER BY r.captured_at DESC))[1] AS ratio
            FROM m
            JOIN receipts.snapshot_groups g ON g.group_id = m.group_id
            JOIN receipts.receipt_snapshot_rows r
              ON r.group_key = g.group_key AND r.msg_seq = m.msg_seq
            WHERE r.read_num + r.unread_num > 0 AND r.captured_at < $2
            GROUP BY 1, 2, 3
         )"
    );
    // One pass over the snapshots: the quartiles per bucket over every group (group_id null),
    // and the median per bucket of each of the busiest groups.
    let sql = format!(
        "{per_bucket},
         busiest AS (
            SELECT group_id FROM m GROUP BY group_id ORDER BY count(*) DESC, group_id LIMIT $6
         )
         SELECT NULL::text, bucket, count(*),
                percentile_cont(0.25) WITHIN GROUP (ORDER BY ratio),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY ratio),
                percentile_cont(0.75) WITHIN GROUP (ORDER BY ratio)
         FROM s WHERE bucket >= 0 GROUP BY bucket
         UNION ALL
         SELECT s.group_id, s.bucket, count(*), NULL,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY s.ratio), NULL
         FROM s JOIN busiest USING (group_id)
         WHERE s.bucket >= 0
         GROUP BY s.group_id, s.bucket
         ORDER BY 1 NULLS FIRST, 2"
    );
    let rows: Vec<BucketRow> = sqlx::query_as(&sql)
        .bind(range.since)
        .bind(range.until)
        .bind(&range.groups)
        .bind(range.app)
        .bind(AGE_EDGES_HOURS)
        .bind(CURVE_GROUPS as i64)
        .fetch_all(pool)
        .await?;
    for (group, bucket, n, q1, median, q3) in rows {
        let b = bucket as usize;
        let Some(group) = group else {
            report.snapshots += n;
            report.ratio_quartiles[0].push((b, q1.unwrap_or(median)));
            report.ratio_quartiles[1].push((b, median));
            report.ratio_quartiles[2].push((b, q3.unwrap_or(median)));
            continue;
        };
        match report.ratio_by_group.last_mut() {
            Some((g, points)) if *g == group => points.push((b, median)),
            _ => report.ratio_by_group.push((group, vec![(b, median)])),
        }
    }
    Ok(())
}

/// The distribution of the times to 50% and to 90%.
async fn time_to_read(pool: &PgPool, range: &Range, report: &mut Report) -> sqlx::Result<()> {
    // Time to 50% and to 90%.
    let sql = format!(
        "WITH m AS ({MESSAGES})
         SELECT width_bucket(extract(epoch FROM half_read_at - first_seen_at) / 3600.0, $5::float8[]) - 1,
                width_bucket(extract(epoch FROM ninety_read_at - first_seen_at) / 3600.0, $5::float8[]) - 1
         FROM m"
    );
    let rows: Vec<(Option<i32>, Option<i32>)> = sqlx::query_as(&sql)
        .bind(range.since)
        .bind(range.until)
        .bind(&range.groups)
        .bind(range.app)
        .bind(TIME_EDGES_HOURS)
        .fetch_all(pool)
        .await?;
    report.time_to_half = vec![0; TIME_EDGES_HOURS.len()];
    report.time_to_ninety = vec![0; TIME_EDGES_HOURS.len()];
    let last = TIME_EDGES_HOURS.len() - 1;
    for (half, ninety) in rows {
        match half {
            Some(b) => report.time_to_half[(b.max(0) as usize).min(last)] += 1,
            None => report.never_half += 1,
        }
        match ninety {
            Some(b) => report.time_to_ninety[(b.max(0) as usize).min(last)] += 1,
            None => report.never_ninety += 1,
        }
    }
    Ok(())
}

/// The groups that read least.
async fn least_read(pool: &PgPool, range: &Range, report: &mut Report) -> sqlx::Result<()> {
    // The groups that read least.
    let sql = format!(
        "WITH m AS ({MESSAGES})
         SELECT group_id, count(*), avg(read_ratio)
         FROM m WHERE read_ratio IS NOT NULL
         GROUP BY group_id ORDER BY avg(read_ratio), group_id LIMIT $5"
    );
    report.least = sqlx::query_as(&sql)
        .bind(range.since)
        .bind(range.until)
        .bind(&range.groups)
        .bind(range.app)
        .bind(LEAST_GROUPS as i64)
        .fetch_all(pool)
        .await?;
    Ok(())
}

/// The daily trend.
async fn daily(pool: &PgPool, range: &Range, report: &mut Report) -> sqlx::Result<()> {
    // The daily trend.
    let sql = format!(
        "WITH m AS ({MESSAGES})
         SELECT (first_seen_at AT TIME ZONE 'UTC')::date, count(*),
                coalesce(avg(read_ratio), 0),
                percentile_cont(0.5) WITHIN GROUP (
                    ORDER BY extract(epoch FROM half_read_at - first_seen_at) / 3600.0)
         FROM m GROUP BY 1 ORDER BY 1"
    );
    report.daily = sqlx::query_as(&sql)
        .bind(range.since)
        .bind(range.until)
        .bind(&range.groups)
        .bind(range.app)
        .fetch_all(pool)
        .await?;
    Ok(())
}

/// Members seen reading before the range who read nothing in it.
async fn silent(pool: &PgPool, range: &Range, report: &mut Report) -> sqlx::Result<()> {
    // Members seen reading before the range who read nothing in it.
    report.has_read_events = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM receipts.read_events
                        WHERE cardinality($1::text[]) = 0 OR group_id = ANY($1))",
    )
    .bind(&range.groups)
    .fetch_one(pool)
    .await?;
    if report.has_read_events {
        let rows: Vec<(String, i64, Vec<String>)> = sqlx::query_as(
            "WITH before AS (
                SELECT DISTINCT group_id, member_account FROM receipts.read_events
                WHERE first_seen_read_at < $1
                  AND (cardinality($3::text[]) = 0 OR group_id = ANY($3))
             ), during AS (
                SELECT DISTINCT group_id, member_account FROM receipts.read_events
                WHERE first_seen_read_at >= $1 AND first_seen_read_at < $2
             ), silent AS (
                SELECT group_id, member_account FROM before
                EXCEPT SELECT group_id, member_account FROM during
             )
             SELECT group_id, count(*),
                    (array_agg(member_account ORDER BY member_account))[1:$4]
             FROM silent GROUP BY group_id ORDER BY count(*) DESC, group_id",
        )
        .bind(range.since)
        .bind(range.until)
        .bind(&range.groups)
        .bind(SILENT_ACCOUNTS as i32)
        .fetch_all(pool)
        .await?;
        report.silent = rows;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_is_midnight_utc_and_a_timestamp_is_itself() {
        assert_eq!(
            parse_instant("2026-12-01").unwrap().to_rfc3339(),
            "2026-12-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_instant("2026-12-01T08:30:00+08:00")
                .unwrap()
                .to_rfc3339(),
            "2026-12-01T00:30:00+00:00"
        );
        assert!(parse_instant("yesterday").unwrap_err().contains("RFC 3339"));
    }
}

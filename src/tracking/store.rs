//! The SQL of tracked groups and windows: one small function per statement.

use super::SeqWindow;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};

/// A tracked group and its windows, as `track list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct TrackedGroup {
    /// The app (`None`: tracked without one; the default app's next run adopts it).
    pub sdkappid: Option<i64>,
    pub group_id: String,
    pub enabled: bool,
    pub tags: Vec<String>,
    pub note: Option<String>,
    /// Whether runs record who read each message (`track add --details`).
    pub details: bool,
    #[sqlx(skip)]
    pub windows: Vec<SeqWindow>,
    /// The rolling window's size (`track add --latest N`), if the group has one.
    #[sqlx(skip)]
    pub latest: Option<i64>,
}

/// Creates the group if it is new (enabled), adds tags, replaces the note if one is given.
/// Returns whether the group was created.
pub async fn upsert_group(
    tx: &mut Transaction<'_, Postgres>,
    app: Option<i64>,
    group_id: &str,
    tags: &[String],
    note: Option<&str>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "INSERT INTO receipts.tracked_groups (sdkappid, group_id, tags, note) VALUES ($4, $1, $2, $3)
         ON CONFLICT (sdkappid, group_id) DO UPDATE
            SET tags = ARRAY(SELECT DISTINCT unnest(tracked_groups.tags || EXCLUDED.tags) ORDER BY 1),
                note = COALESCE(EXCLUDED.note, tracked_groups.note),
                updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(group_id)
    .bind(tags)
    .bind(note)
    .bind(app)
    .fetch_one(&mut **tx)
    .await
}

/// Adds fixed windows (identical ones already there are kept once). Returns how many were new.
pub async fn add_windows(
    tx: &mut Transaction<'_, Postgres>,
    app: Option<i64>,
    group_ids: &[String],
    windows: &[SeqWindow],
) -> sqlx::Result<u64> {
    let from: Vec<i64> = windows.iter().map(|w| w.from).collect();
    let to: Vec<i64> = windows.iter().map(|w| w.to).collect();
    let done = sqlx::query(
        "INSERT INTO receipts.seq_windows (sdkappid, group_id, kind, from_seq, to_seq)
         SELECT $4, g, 'fixed', f, t FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(g, f, t)
         ON CONFLICT (sdkappid, group_id, from_seq, to_seq) WHERE kind = 'fixed' DO NOTHING",
    )
    .bind(group_ids)
    .bind(&from)
    .bind(&to)
    .bind(app)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Creates the groups that are not tracked yet (enabled, no tags); returns how many were new.
pub async fn insert_missing_groups(
    tx: &mut Transaction<'_, Postgres>,
    app: Option<i64>,
    group_ids: &[String],
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "INSERT INTO receipts.tracked_groups (sdkappid, group_id)
         SELECT DISTINCT $2::bigint, g FROM unnest($1::text[]) AS u(g)
         ON CONFLICT (sdkappid, group_id) DO NOTHING",
    )
    .bind(group_ids)
    .bind(app)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Adds tags to groups, `(group, tag)` pairs (tags a group has already are kept once).
pub async fn add_tags(
    tx: &mut Transaction<'_, Postgres>,
    app: Option<i64>,
    tagged: &[(String, String)],
) -> sqlx::Result<()> {
    if tagged.is_empty() {
        return Ok(());
    }
    let (groups, tags): (Vec<&str>, Vec<&str>) =
        tagged.iter().map(|(g, t)| (g.as_str(), t.as_str())).unzip();
    sqlx::query(
        "UPDATE receipts.tracked_groups g
         SET tags = ARRAY(SELECT DISTINCT x FROM unnest(g.tags || n.tags) AS x ORDER BY 1),
             updated_at = now()
         FROM (SELECT u.gid, array_agg(u.tag) AS tags
               FROM unnest($1::text[], $2::text[]) AS u(gid, tag) GROUP BY u.gid) n
         WHERE g.group_id = n.gid AND g.sdkappid IS NOT DISTINCT FROM $3",
    )
    .bind(&groups)
    .bind(&tags)
    .bind(app)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Every tracked group (optionally only those with a tag, only those of an app), with its
/// fixed windows.
pub async fn list(
    pool: &PgPool,
    tag: Option<&str>,
    app: AppFilter,
) -> sqlx::Result<Vec<TrackedGroup>> {
    let (all, app, unadopted) = app.binds();
    let mut groups: Vec<TrackedGroup> = sqlx::query_as(
        "SELECT sdkappid, group_id, enabled, tags, note, details FROM receipts.tracked_groups
         WHERE ($1::text IS NULL OR $1 = ANY(tags))
           AND ($2 OR sdkappid IS NOT DISTINCT FROM $3 OR ($4 AND sdkappid IS NULL))
         ORDER BY sdkappid NULLS FIRST, group_id",
    )
    .bind(tag)
    .bind(all)
    .bind(app)
    .bind(unadopted)
    .fetch_all(pool)
    .await?;
    let windows: Vec<(Option<i64>, String, i64, i64)> = sqlx::query_as(
        "SELECT sdkappid, group_id, from_seq, to_seq FROM receipts.seq_windows
         WHERE kind = 'fixed'
           AND ($1 OR sdkappid IS NOT DISTINCT FROM $2 OR ($3 AND sdkappid IS NULL))
         ORDER BY sdkappid, group_id, from_seq, to_seq",
    )
    .bind(all)
    .bind(app)
    .bind(unadopted)
    .fetch_all(pool)
    .await?;
    type Key = (Option<i64>, String);
    let mut by_group: std::collections::HashMap<Key, Vec<SeqWindow>> = Default::default();
    for (sdkappid, group_id, from, to) in windows {
        by_group
            .entry((sdkappid, group_id))
            .or_default()
            .push(SeqWindow { from, to });
    }
    let mut latest = super::follow::all_latest(pool).await?;
    for g in &mut groups {
        let key = (g.sdkappid, g.group_id.clone());
        g.windows = by_group.remove(&key).unwrap_or_default();
        g.latest = latest.remove(&key);
    }
    Ok(groups)
}

/// Which apps' rows a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppFilter {
    /// Every app's (and those of no app yet).
    All,
    /// One app's (`None`: the rows of no app, which the default app's next run adopts).
    One(Option<i64>),
    /// The default app's: its own and those of no app, which its next run adopts.
    Default(Option<i64>),
}

impl AppFilter {
    /// The filter of `settings`' app: the default app's rows include those of no app.
    pub fn of(settings: &crate::settings::Settings) -> AppFilter {
        match settings.is_default_app() {
            true => AppFilter::Default(settings.app_sdkappid()),
            false => AppFilter::One(settings.app_sdkappid()),
        }
    }

    /// `($all, $app, $unadopted)` for
    /// `($all OR sdkappid IS NOT DISTINCT FROM $app OR ($unadopted AND sdkappid IS NULL))`.
    pub fn binds(self) -> (bool, Option<i64>, bool) {
        match self {
            AppFilter::All => (true, None, false),
            AppFilter::One(app) => (false, app, false),
            AppFilter::Default(app) => (false, app, true),
        }
    }
}

/// Removes a group and its windows (a group of no app has no cascade: its windows are
/// removed by the same statement). Returns whether it was tracked.
pub async fn remove_group(
    executor: impl PgExecutor<'_>,
    app: Option<i64>,
    group_id: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "WITH w AS (DELETE FROM receipts.seq_windows
                    WHERE group_id = $1 AND sdkappid IS NOT DISTINCT FROM $2)
         DELETE FROM receipts.tracked_groups WHERE group_id = $1 AND sdkappid IS NOT DISTINCT FROM $2",
    )
    .bind(group_id)
    .bind(app)
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes one exact window of a group. Returns whether it existed.
pub async fn remove_window(
    tx: &mut Transaction<'_, Postgres>,
    app: Option<i64>,
    group_id: &str,
    window: SeqWindow,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "DELETE FROM receipts.seq_windows
         WHERE group_id = $1 AND kind = 'fixed' AND from_seq = $2 AND to_seq = $3
           AND sdkappid IS NOT DISTINCT FROM $4",
    )
    .bind(group_id)
    .bind(window.from)
    .bind(window.to)
    .bind(app)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Enables or disables a group. Returns whether it was tracked.
pub async fn set_enabled(
    pool: &PgPool,
    app: Option<i64>,
    group_id: &str,
    enabled: bool,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE receipts.tracked_groups SET enabled = $2, updated_at = now()
         WHERE group_id = $1 AND sdkappid IS NOT DISTINCT FROM $3",
    )
    .bind(group_id)
    .bind(enabled)
    .bind(app)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether a group is tracked.
pub async fn exists(
    executor: impl PgExecutor<'_>,
    app: Option<i64>,
    group_id: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM receipts.tracked_groups
                        WHERE group_id = $1 AND sdkappid IS NOT DISTINCT FROM $2)",
    )
    .bind(group_id)
    .bind(app)
    .fetch_one(executor)
    .await
}

/// The fixed windows of every enabled group with any of `tags` (every enabled group when
/// `tags` is empty), as stored: the caller validates them.
pub async fn enabled_windows(
    pool: &PgPool,
    app: i64,
    tags: &[String],
) -> sqlx::Result<Vec<(String, i64, i64)>> {
    sqlx::query_as(
        "SELECT g.group_id, w.from_seq, w.to_seq
         FROM receipts.tracked_groups g JOIN receipts.seq_windows w USING (sdkappid, group_id)
         WHERE g.sdkappid = $2 AND g.enabled AND w.kind = 'fixed'
           AND (cardinality($1::text[]) = 0 OR g.tags && $1)",
    )
    .bind(tags)
    .bind(app)
    .fetch_all(pool)
    .await
}

/// Whether the current role may change the tracked groups and their windows (insert, update
/// and delete on both tables): the operator's right (the schema's owner), not a run's.
pub async fn may_change(pool: &PgPool) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT bool_and(has_table_privilege(t, p))
         FROM unnest(ARRAY['receipts.tracked_groups', 'receipts.seq_windows']) t,
              unnest(ARRAY['INSERT', 'UPDATE', 'DELETE']) p",
    )
    .fetch_one(pool)
    .await
}

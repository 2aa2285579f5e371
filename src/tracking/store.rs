//! The SQL of tracked groups and windows: one small function per statement.

use super::SeqWindow;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};

/// A tracked group and its windows, as `track list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct TrackedGroup {
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
    group_id: &str,
    tags: &[String],
    note: Option<&str>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "INSERT INTO receipts.tracked_groups (group_id, tags, note) VALUES ($1, $2, $3)
         ON CONFLICT (group_id) DO UPDATE
            SET tags = ARRAY(SELECT DISTINCT unnest(tracked_groups.tags || EXCLUDED.tags) ORDER BY 1),
                note = COALESCE(EXCLUDED.note, tracked_groups.note),
                updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(group_id)
    .bind(tags)
    .bind(note)
    .fetch_one(&mut **tx)
    .await
}

/// Adds fixed windows (identical ones already there are kept once). Returns how many were new.
pub async fn add_windows(
    tx: &mut Transaction<'_, Postgres>,
    group_ids: &[String],
    windows: &[SeqWindow],
) -> sqlx::Result<u64> {
    let from: Vec<i64> = windows.iter().map(|w| w.from).collect();
    let to: Vec<i64> = windows.iter().map(|w| w.to).collect();
    let done = sqlx::query(
        "INSERT INTO receipts.seq_windows (group_id, kind, from_seq, to_seq)
         SELECT g, 'fixed', f, t FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(g, f, t)
         ON CONFLICT (group_id, from_seq, to_seq) WHERE kind = 'fixed' DO NOTHING",
    )
    .bind(group_ids)
    .bind(&from)
    .bind(&to)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Creates the groups that are not tracked yet (enabled, no tags); returns how many were new.
pub async fn insert_missing_groups(
    tx: &mut Transaction<'_, Postgres>,
    group_ids: &[String],
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "INSERT INTO receipts.tracked_groups (group_id)
         SELECT DISTINCT g FROM unnest($1::text[]) AS u(g)
         ON CONFLICT (group_id) DO NOTHING",
    )
    .bind(group_ids)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Adds tags to groups, `(group, tag)` pairs (tags a group has already are kept once).
pub async fn add_tags(
    tx: &mut Transaction<'_, Postgres>,
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
         WHERE g.group_id = n.gid",
    )
    .bind(&groups)
    .bind(&tags)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Every tracked group (optionally only those with a tag), with its fixed windows.
pub async fn list(pool: &PgPool, tag: Option<&str>) -> sqlx::Result<Vec<TrackedGroup>> {
    let mut groups: Vec<TrackedGroup> = sqlx::query_as(
        "SELECT group_id, enabled, tags, note, details FROM receipts.tracked_groups
         WHERE $1::text IS NULL OR $1 = ANY(tags) ORDER BY group_id",
    )
    .bind(tag)
    .fetch_all(pool)
    .await?;
    let windows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT group_id, from_seq, to_seq FROM receipts.seq_windows
         WHERE kind = 'fixed' ORDER BY group_id, from_seq, to_seq",
    )
    .fetch_all(pool)
    .await?;
    let mut by_group: std::collections::HashMap<String, Vec<SeqWindow>> = Default::default();
    for (group_id, from, to) in windows {
        by_group
            .entry(group_id)
            .or_default()
            .push(SeqWindow { from, to });
    }
    let mut latest = super::follow::all_latest(pool).await?;
    for g in &mut groups {
        g.windows = by_group.remove(&g.group_id).unwrap_or_default();
        g.latest = latest.remove(&g.group_id);
    }
    Ok(groups)
}

/// Removes a group and its windows. Returns whether it was tracked.
pub async fn remove_group(executor: impl PgExecutor<'_>, group_id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM receipts.tracked_groups WHERE group_id = $1")
        .bind(group_id)
        .execute(executor)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes one exact window of a group. Returns whether it existed.
pub async fn remove_window(
    tx: &mut Transaction<'_, Postgres>,
    group_id: &str,
    window: SeqWindow,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "DELETE FROM receipts.seq_windows
         WHERE group_id = $1 AND kind = 'fixed' AND from_seq = $2 AND to_seq = $3",
    )
    .bind(group_id)
    .bind(window.from)
    .bind(window.to)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Enables or disables a group. Returns whether it was tracked.
pub async fn set_enabled(pool: &PgPool, group_id: &str, enabled: bool) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE receipts.tracked_groups SET enabled = $2, updated_at = now() WHERE group_id = $1",
    )
    .bind(group_id)
    .bind(enabled)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether a group is tracked.
pub async fn exists(executor: impl PgExecutor<'_>, group_id: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM receipts.tracked_groups WHERE group_id = $1)")
        .bind(group_id)
        .fetch_one(executor)
        .await
}

/// The fixed windows of every enabled group with any of `tags` (every enabled group when
/// `tags` is empty), as stored: the caller validates them.
pub async fn enabled_windows(
    pool: &PgPool,
    tags: &[String],
) -> sqlx::Result<Vec<(String, i64, i64)>> {
    sqlx::query_as(
        "SELECT g.group_id, w.from_seq, w.to_seq
         FROM receipts.tracked_groups g JOIN receipts.seq_windows w USING (group_id)
         WHERE g.enabled AND w.kind = 'fixed' AND (cardinality($1::text[]) = 0 OR g.tags && $1)",
    )
    .bind(tags)
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

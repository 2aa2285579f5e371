-- Issue 28: the read-progress table. One row per message, kept by every run and backfill in the
-- same transaction as the write batch whose snapshots it derives from (src/sink/progress.rs):
-- the batch's number is claimed in `write_batches` in that transaction, so a retried batch
-- changes nothing; and the merge itself only ever moves a row the way the snapshots do (the
-- earliest first snapshot, the earliest capture past each threshold, the newest ratio), so
-- applying the same snapshots twice, or in any order (a backfill of older captures), gives the
-- same row.
--
-- Analysts' questions (how fast are messages read, which groups read least) become a lookup
-- here instead of window functions over the whole time series.
--
--   sdkappid               the app the message's run exported for (settings TIM_SDKAPPID, as
--                          recorded on the run, export_runs.sdkappid); null for messages first
--                          seen by runs older than this migration. Until issue 26 ("many apps")
--                          a message is keyed by group and seq alone, like receipt_latest.
--   first_seen_at          captured_at of the message's first snapshot
--   members_at_first_seen  read_num + unread_num in that snapshot
--   read_ratio             read_num / (read_num + unread_num) in its newest snapshot (null when
--                          that is 0)
--   half_read_at           captured_at of the first snapshot with 2 * read_num >= read_num +
--                          unread_num (and read_num + unread_num > 0); null until reached
--   ninety_read_at         the same for 10 * read_num >= 9 * (read_num + unread_num)
--   run_id                 the run whose write batch last changed the row (a row a rebuild
--                          changed: the run of its newest snapshot)
--
-- half_read_at and ninety_read_at are the capture that first SAW the threshold passed: the
-- message reached it somewhere between the capture before and that one, so their precision is
-- the spacing of the runs (an hourly job: within an hour, late, never early).

-- The app a run exported for: recorded when the run opens (run::begin), read by the progress
-- merge and by its rebuild.
ALTER TABLE receipts.export_runs ADD COLUMN sdkappid bigint;

CREATE TABLE receipts.message_read_progress (
    group_id               text        NOT NULL,
    msg_seq                bigint      NOT NULL,
    sdkappid               bigint,
    first_seen_at          timestamptz NOT NULL,
    members_at_first_seen  integer     NOT NULL,
    read_ratio             double precision,
    half_read_at           timestamptz,
    ninety_read_at         timestamptz,
    run_id                 bigint      NOT NULL,
    PRIMARY KEY (group_id, msg_seq)
);
-- The report's and the daily view's ranges are by first sighting.
CREATE INDEX message_read_progress_first_seen_idx
    ON receipts.message_read_progress (first_seen_at);

-- Per group and UTC day of first sighting: how many messages, how far they got, how fast.
-- Times are from the first snapshot, not from the message's sending (the API does not say when
-- a message was sent): a message first captured an hour after it was sent shows an hour less.
CREATE VIEW receipts.message_read_progress_daily AS
SELECT sdkappid,
       group_id,
       (first_seen_at AT TIME ZONE 'UTC')::date                         AS day,
       count(*)                                                         AS messages,
       avg(members_at_first_seen)::double precision                     AS avg_members,
       avg(read_ratio)                                                  AS avg_read_ratio,
       count(half_read_at)                                              AS half_read,
       count(ninety_read_at)                                            AS ninety_read,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY half_read_at - first_seen_at)
                                                                        AS median_time_to_half,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ninety_read_at - first_seen_at)
                                                                        AS median_time_to_ninety
FROM receipts.message_read_progress
GROUP BY sdkappid, group_id, (first_seen_at AT TIME ZONE 'UTC')::date;

-- Recomputes every message's row from the snapshots Postgres holds (`progress rebuild`, and
-- below, once, for the snapshots taken before this migration). A message whose stored first
-- sighting is older than its oldest snapshot left (retention dropped that month) keeps its row
-- as it is: it is never recomputed from a series missing its start. Nor is a row deleted: a
-- message with no snapshot left keeps its row. Runs with the invoker's rights (INSERT and
-- UPDATE on the table); the lock makes runs' batches wait for it, so none of their merges is
-- lost under the recomputed rows. Returns the rows it inserted or changed, and those it kept.
CREATE FUNCTION receipts.rebuild_message_read_progress(OUT changed bigint, OUT kept bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, receipts
AS $$
BEGIN
    LOCK TABLE receipts.message_read_progress IN SHARE ROW EXCLUSIVE MODE;
    WITH per_message AS (
        SELECT s.group_key,
               s.msg_seq,
               min(s.captured_at) AS first_seen_at,
               (array_agg(s.read_num + s.unread_num ORDER BY s.captured_at, s.run_id, s.batch_no))[1]
                   AS members_at_first_seen,
               min(s.captured_at) FILTER (
                   WHERE s.read_num + s.unread_num > 0
                     AND 2 * s.read_num::bigint >= s.read_num::bigint + s.unread_num)
                   AS half_read_at,
               min(s.captured_at) FILTER (
                   WHERE s.read_num + s.unread_num > 0
                     AND 10 * s.read_num::bigint >= 9 * (s.read_num::bigint + s.unread_num))
                   AS ninety_read_at,
               (array_agg(CASE WHEN s.read_num + s.unread_num > 0
                               THEN s.read_num::double precision / (s.read_num + s.unread_num) END
                          ORDER BY s.captured_at DESC, s.run_id DESC, s.batch_no DESC))[1]
                   AS read_ratio,
               (array_agg(s.run_id ORDER BY s.captured_at DESC, s.run_id DESC))[1]::bigint
                   AS run_id,
               (array_agg(r.sdkappid ORDER BY s.captured_at, s.run_id)
                   FILTER (WHERE r.sdkappid IS NOT NULL))[1] AS sdkappid
        FROM receipts.receipt_snapshot_rows s
        LEFT JOIN receipts.export_runs r ON r.run_id = s.run_id
        GROUP BY s.group_key, s.msg_seq
    ), computed AS (
        SELECT g.group_id, m.msg_seq, m.sdkappid, m.first_seen_at, m.members_at_first_seen,
               m.read_ratio, m.half_read_at, m.ninety_read_at, m.run_id
        FROM per_message m
        JOIN receipts.snapshot_groups g USING (group_key)
    ), written AS (
        INSERT INTO receipts.message_read_progress AS p
            (group_id, msg_seq, sdkappid, first_seen_at, members_at_first_seen, read_ratio,
             half_read_at, ninety_read_at, run_id)
        SELECT * FROM computed
        ORDER BY group_id COLLATE "C", msg_seq
        ON CONFLICT (group_id, msg_seq) DO UPDATE
        SET sdkappid = coalesce(excluded.sdkappid, p.sdkappid),
            first_seen_at = excluded.first_seen_at,
            members_at_first_seen = excluded.members_at_first_seen,
            read_ratio = excluded.read_ratio,
            half_read_at = excluded.half_read_at,
            ninety_read_at = excluded.ninety_read_at,
            run_id = excluded.run_id
        WHERE excluded.first_seen_at <= p.first_seen_at
          AND (coalesce(excluded.sdkappid, p.sdkappid), excluded.first_seen_at,
               excluded.members_at_first_seen, excluded.read_ratio, excluded.half_read_at,
               excluded.ninety_read_at)
              IS DISTINCT FROM
              (p.sdkappid, p.first_seen_at, p.members_at_first_seen, p.read_ratio,
               p.half_read_at, p.ninety_read_at)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM written),
           (SELECT count(*) FROM receipts.message_read_progress p
            WHERE NOT EXISTS (SELECT 1 FROM computed c
                              WHERE c.group_id = p.group_id AND c.msg_seq = p.msg_seq
                                AND c.first_seen_at <= p.first_seen_at))
      INTO changed, kept;
END
$$;
REVOKE EXECUTE ON FUNCTION receipts.rebuild_message_read_progress() FROM PUBLIC;

SELECT receipts.rebuild_message_read_progress();

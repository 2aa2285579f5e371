-- Issue 28: the rows the Iceberg commits of the read progress's table added, per run and date,
-- summed over its commits: what `lake verify` expects the table's live files to hold of a run.
-- The change log alone cannot say it: a run resumed after its file was committed replaces its
-- change row of a message it changes again, while the table keeps both rows (it only appends).
-- NULL in Hive-style lakes (each file is written whole there; its row_count is the check).
ALTER TABLE receipts.message_read_progress_files ADD COLUMN committed_rows bigint;

-- Files committed before this migration: their recorded rows (for a run resumed after its
-- first commit that is its last commit's rows only: `lake verify` names such a run as
-- holding more rows than counted; nothing is lost).
UPDATE receipts.message_read_progress_files
SET committed_rows = row_count
WHERE path IS NOT NULL AND starts_with(path, 'receipts/message_read_progress/');
-- Issue 28: `progress rebuild` logs what it changes, as every run's write batch does, so the
-- lake's change rows (message_read_progress/, or the Iceberg table of that name) follow the
-- recomputed table: each changed row is logged under the run of its message's newest snapshot
-- (the run whose snapshot made it what it is now), replacing that run's change row of the
-- message if it had one (a new change_no, its capture date kept, so no other file changes),
-- else dated by that snapshot; the run's file of that date becomes due and the rebuild command
-- (or the next run's end) writes it. Hive-style the file is written whole again; in Iceberg
-- mode the new change rows are appended, and the newest row per message is the table's.
CREATE OR REPLACE FUNCTION receipts.rebuild_message_read_progress(OUT changed bigint, OUT kept bigint)
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
               max(s.captured_at) AS last_captured_at
        FROM receipts.receipt_snapshot_rows s
        GROUP BY s.group_key, s.msg_seq
    ), computed AS (
        SELECT g.group_id, m.msg_seq, g.sdkappid, m.first_seen_at, m.members_at_first_seen,
               m.read_ratio, m.half_read_at, m.ninety_read_at, m.run_id, m.last_captured_at
        FROM per_message m
        JOIN receipts.snapshot_groups g USING (group_key)
    ), written AS (
        INSERT INTO receipts.message_read_progress AS p
            (group_id, msg_seq, sdkappid, first_seen_at, members_at_first_seen, read_ratio,
             half_read_at, ninety_read_at, run_id)
        SELECT group_id, msg_seq, sdkappid, first_seen_at, members_at_first_seen, read_ratio,
               half_read_at, ninety_read_at, run_id
        FROM computed
        ORDER BY sdkappid, group_id COLLATE "C", msg_seq
        ON CONFLICT (sdkappid, group_id, msg_seq) DO UPDATE
        SET first_seen_at = excluded.first_seen_at,
            members_at_first_seen = excluded.members_at_first_seen,
            read_ratio = excluded.read_ratio,
            half_read_at = excluded.half_read_at,
            ninety_read_at = excluded.ninety_read_at,
            run_id = excluded.run_id
        WHERE excluded.first_seen_at <= p.first_seen_at
          AND (excluded.first_seen_at, excluded.members_at_first_seen, excluded.read_ratio,
               excluded.half_read_at, excluded.ninety_read_at)
              IS DISTINCT FROM
              (p.first_seen_at, p.members_at_first_seen, p.read_ratio,
               p.half_read_at, p.ninety_read_at)
        RETURNING p.*
    ), logged AS (
        INSERT INTO receipts.message_read_progress_changes AS c
            (run_id, capture_date, sdkappid, group_id, msg_seq, first_seen_at,
             members_at_first_seen, read_ratio, half_read_at, ninety_read_at)
        SELECT w.run_id, (m.last_captured_at AT TIME ZONE 'UTC')::date, w.sdkappid, w.group_id,
               w.msg_seq, w.first_seen_at, w.members_at_first_seen, w.read_ratio,
               w.half_read_at, w.ninety_read_at
        FROM written w
        JOIN computed m
          ON m.sdkappid IS NOT DISTINCT FROM w.sdkappid AND m.group_id = w.group_id
         AND m.msg_seq = w.msg_seq
        ORDER BY w.group_id COLLATE "C", w.msg_seq
        ON CONFLICT (run_id, sdkappid, group_id, msg_seq) DO UPDATE
        SET change_no = excluded.change_no,
            first_seen_at = excluded.first_seen_at,
            members_at_first_seen = excluded.members_at_first_seen,
            read_ratio = excluded.read_ratio,
            half_read_at = excluded.half_read_at,
            ninety_read_at = excluded.ninety_read_at
        RETURNING c.run_id, c.capture_date
    ), filed AS (
        INSERT INTO receipts.message_read_progress_files AS f (run_id, capture_date)
        SELECT DISTINCT run_id, capture_date FROM logged
        ON CONFLICT (run_id, capture_date) DO UPDATE
        SET path = NULL, row_count = NULL, byte_size = NULL
        WHERE f.path IS NOT NULL
    )
    SELECT (SELECT count(*) FROM written),
           (SELECT count(*) FROM receipts.message_read_progress p
            WHERE NOT EXISTS (SELECT 1 FROM computed c
                              WHERE c.sdkappid IS NOT DISTINCT FROM p.sdkappid
                                AND c.group_id = p.group_id AND c.msg_seq = p.msg_seq
                                AND c.first_seen_at <= p.first_seen_at))
      INTO changed, kept;
END
$$;
REVOKE EXECUTE ON FUNCTION receipts.rebuild_message_read_progress() FROM PUBLIC;

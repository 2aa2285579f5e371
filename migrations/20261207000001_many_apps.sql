-- Issue 26: many apps, one warehouse. Group IDs are unique only within a Chat app (custom group
-- IDs are chosen by the app), so every row that names a group, and every key that assumed one
-- app, gains the app's SDKAppID: `sdkappid bigint`.
--
-- Existing rows belong to the app the deployment exported for until now (its TIM_* settings:
-- the app named `default`), whose SDKAppID this migration cannot know: they stay NULL until
-- the first run of the default app after the upgrade, which adopts them
-- (receipts.adopt_default_app, called by the run before it plans). A tracked group added
-- without an app (`track add` with neither --app nor TIM_SDKAPPID) is NULL too and adopted the
-- same way. The keys treat NULL as one value (NULLS NOT DISTINCT), so (NULL, 'team-42') is one
-- group until adopted, and apps never mix: (1400000001, 'team-42') and (1400000002,
-- 'team-42') are two.

-- Tracked groups and their windows.
ALTER TABLE receipts.tracked_groups ADD COLUMN sdkappid bigint;
ALTER TABLE receipts.seq_windows ADD COLUMN sdkappid bigint;
ALTER TABLE receipts.seq_windows DROP CONSTRAINT seq_windows_group_id_fkey;
ALTER TABLE receipts.tracked_groups DROP CONSTRAINT tracked_groups_pkey;
ALTER TABLE receipts.tracked_groups
    ADD CONSTRAINT tracked_groups_app_group UNIQUE NULLS NOT DISTINCT (sdkappid, group_id);
-- A window's group must be tracked (for an adopted app; NULL rows are kept together by the
-- commands and by the adoption, which move both).
ALTER TABLE receipts.seq_windows
    ADD CONSTRAINT seq_windows_group_fkey FOREIGN KEY (sdkappid, group_id)
    REFERENCES receipts.tracked_groups (sdkappid, group_id) ON DELETE CASCADE ON UPDATE CASCADE;
DROP INDEX receipts.seq_windows_fixed_uniq;
DROP INDEX receipts.seq_windows_latest_uniq;
CREATE UNIQUE INDEX seq_windows_fixed_uniq
    ON receipts.seq_windows (sdkappid, group_id, from_seq, to_seq) NULLS NOT DISTINCT
    WHERE kind = 'fixed';
CREATE UNIQUE INDEX seq_windows_latest_uniq
    ON receipts.seq_windows (sdkappid, group_id) NULLS NOT DISTINCT
    WHERE kind = 'latest';

-- The snapshots: each row names its group by group_key, so the app goes on the group.
ALTER TABLE receipts.snapshot_groups ADD COLUMN sdkappid bigint;
ALTER TABLE receipts.snapshot_groups DROP CONSTRAINT snapshot_groups_group_id_key;
ALTER TABLE receipts.snapshot_groups
    ADD CONSTRAINT snapshot_groups_app_group UNIQUE NULLS NOT DISTINCT (sdkappid, group_id);

-- The newest snapshot per message.
ALTER TABLE receipts.receipt_latest ADD COLUMN sdkappid bigint;
ALTER TABLE receipts.receipt_latest DROP CONSTRAINT receipt_latest_pkey;
ALTER TABLE receipts.receipt_latest
    ADD CONSTRAINT receipt_latest_app_message UNIQUE NULLS NOT DISTINCT (sdkappid, group_id, msg_seq);

-- Read events, read-list pulls and their tombstones.
ALTER TABLE receipts.read_events ADD COLUMN sdkappid bigint;
ALTER TABLE receipts.read_events DROP CONSTRAINT read_events_pkey;
ALTER TABLE receipts.read_events
    ADD CONSTRAINT read_events_app_message_member
    UNIQUE NULLS NOT DISTINCT (sdkappid, group_id, msg_seq, member_account);
ALTER TABLE receipts.read_list_pulls ADD COLUMN sdkappid bigint;
ALTER TABLE receipts.read_list_pulls DROP CONSTRAINT read_list_pulls_pkey;
ALTER TABLE receipts.read_list_pulls
    ADD CONSTRAINT read_list_pulls_app_message UNIQUE NULLS NOT DISTINCT (sdkappid, group_id, msg_seq);
ALTER TABLE receipts.read_events_pruned ADD COLUMN sdkappid bigint;
ALTER TABLE receipts.read_events_pruned DROP CONSTRAINT read_events_pruned_pkey;
ALTER TABLE receipts.read_events_pruned
    ADD CONSTRAINT read_events_pruned_app_message UNIQUE NULLS NOT DISTINCT (sdkappid, group_id, msg_seq);

-- The read-progress table (its sdkappid came with it, from the run's).
ALTER TABLE receipts.message_read_progress DROP CONSTRAINT message_read_progress_pkey;
ALTER TABLE receipts.message_read_progress
    ADD CONSTRAINT message_read_progress_app_message UNIQUE NULLS NOT DISTINCT (sdkappid, group_id, msg_seq);

-- Budgets per app: each app's 200 calls/s is its own, so leases are split per app.
ALTER TABLE receipts.rate_leases ADD COLUMN sdkappid bigint;

-- The ledger already records each run's SDKAppID (export_runs.sdkappid, issue 28); it gains
-- the app's name (`default` for the TIM_* settings, else the apps/NAME.toml it came from), which
-- `runs --app`, `status --app` and the metrics' `app` label show.
ALTER TABLE receipts.export_runs ADD COLUMN app text;

-- Which app the NULL rows were adopted by (one row): the big tables are adopted once; the small
-- tracking tables at every run of the default app (a group tracked without an app since).
CREATE TABLE receipts.default_app (
    one         boolean     PRIMARY KEY DEFAULT true CHECK (one),
    sdkappid    bigint      NOT NULL,
    adopted_at  timestamptz NOT NULL DEFAULT now()
);

-- Adopts the rows of no app for the default app `app`. Tracked groups and windows are moved
-- (a group tracked both with and without the app keeps one row: tags merged, windows kept
-- once); the other tables, once, with the row above. Returns the rows adopted.
-- SECURITY DEFINER: the writer's role may not update what earlier runs recorded.
CREATE FUNCTION receipts.adopt_default_app(default_app bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, receipts
AS $$
DECLARE
    n bigint := 0;
    k bigint;
BEGIN
    IF default_app IS NULL OR default_app <= 0 THEN
        RAISE EXCEPTION 'adopt_default_app: % is not an SDKAppID', coalesce(default_app::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('receipt-exporter:adopt-default-app'));
    IF EXISTS (SELECT 1 FROM receipts.tracked_groups WHERE sdkappid IS NULL) THEN
        INSERT INTO receipts.tracked_groups AS t
            (sdkappid, group_id, enabled, tags, note, created_at, updated_at, details, details_since)
        SELECT default_app, group_id, enabled, tags, note, created_at, updated_at, details, details_since
        FROM receipts.tracked_groups WHERE sdkappid IS NULL
        ON CONFLICT (sdkappid, group_id) DO UPDATE
            SET tags = ARRAY(SELECT DISTINCT unnest(t.tags || EXCLUDED.tags) ORDER BY 1),
                note = coalesce(t.note, EXCLUDED.note),
                updated_at = now();
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
        INSERT INTO receipts.seq_windows (sdkappid, group_id, kind, from_seq, to_seq, latest_n, created_at)
        SELECT default_app, group_id, kind, from_seq, to_seq, latest_n, created_at
        FROM receipts.seq_windows WHERE sdkappid IS NULL
        ON CONFLICT DO NOTHING;
        DELETE FROM receipts.seq_windows WHERE sdkappid IS NULL;
        DELETE FROM receipts.tracked_groups WHERE sdkappid IS NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM receipts.default_app) THEN
        UPDATE receipts.snapshot_groups SET sdkappid = default_app WHERE sdkappid IS NULL;
        GET DIAGNOSTICS k = ROW_COUNT; n := n + k;
        UPDATE receipts.receipt_latest SET sdkappid = default_app WHERE sdkappid IS NULL;
        GET DIAGNOSTICS k = ROW_COUNT; n := n + k;
        UPDATE receipts.read_events SET sdkappid = default_app WHERE sdkappid IS NULL;
        GET DIAGNOSTICS k = ROW_COUNT; n := n + k;
        UPDATE receipts.read_list_pulls SET sdkappid = default_app WHERE sdkappid IS NULL;
        GET DIAGNOSTICS k = ROW_COUNT; n := n + k;
        UPDATE receipts.read_events_pruned SET sdkappid = default_app WHERE sdkappid IS NULL;
        GET DIAGNOSTICS k = ROW_COUNT; n := n + k;
        UPDATE receipts.message_read_progress SET sdkappid = default_app WHERE sdkappid IS NULL;
        GET DIAGNOSTICS k = ROW_COUNT; n := n + k;
        UPDATE receipts.export_runs SET sdkappid = default_app, app = coalesce(export_runs.app, 'default')
        WHERE sdkappid IS NULL;
        GET DIAGNOSTICS k = ROW_COUNT; n := n + k;
        INSERT INTO receipts.default_app (sdkappid) VALUES (default_app);
    END IF;
    RETURN n;
END
$$;
REVOKE EXECUTE ON FUNCTION receipts.adopt_default_app(bigint) FROM PUBLIC;

-- The views gain the app (appended: CREATE OR REPLACE keeps the columns before it).
CREATE OR REPLACE VIEW receipts.receipt_snapshots AS
SELECT s.run_id::bigint AS run_id, s.run_date, s.batch_no, s.captured_at, g.group_id,
       s.msg_seq, s.read_num, s.unread_num, g.sdkappid
FROM receipts.receipt_snapshot_rows s
JOIN receipts.snapshot_groups g USING (group_key);

CREATE OR REPLACE VIEW receipts.receipt_growth AS
SELECT group_id, msg_seq, run_id, captured_at, read_num, unread_num,
       read_num - lag(read_num) OVER w        AS read_delta,
       captured_at - lag(captured_at) OVER w  AS since_previous,
       sdkappid
FROM receipts.receipt_snapshots
WINDOW w AS (PARTITION BY sdkappid, group_id, msg_seq ORDER BY captured_at);

CREATE OR REPLACE VIEW receipts.message_readers AS
SELECT e.group_id, e.msg_seq, e.member_account, e.account_hashed, e.first_seen_read_at,
       e.read_before_details, e.run_id, f.first_snapshot_at,
       CASE WHEN NOT e.read_before_details THEN e.first_seen_read_at - f.first_snapshot_at END
           AS first_snapshot_to_first_seen_read,
       e.sdkappid
FROM receipts.read_events e
LEFT JOIN LATERAL (
    SELECT min(s.captured_at) AS first_snapshot_at
    FROM receipts.receipt_snapshots s
    WHERE s.group_id = e.group_id AND s.msg_seq = e.msg_seq
      AND s.sdkappid IS NOT DISTINCT FROM e.sdkappid
) f ON true;

-- Read-event retention keys messages by app too.
DROP FUNCTION receipts.read_event_runs_before(date);
DROP FUNCTION receipts.read_event_messages_before(date);
CREATE FUNCTION receipts.read_event_messages_before(cutoff date)
RETURNS TABLE (sdkappid bigint, group_id text, msg_seq bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, receipts
AS $$
    SELECT o.sdkappid, o.group_id, o.msg_seq
    FROM (SELECT DISTINCT e.sdkappid, e.group_id, e.msg_seq
          FROM receipts.read_events e
          WHERE e.run_id IN (SELECT r.run_id FROM receipts.export_runs r
                             WHERE r.run_date < cutoff)) o
    WHERE NOT EXISTS (SELECT 1 FROM receipts.read_events n
                      JOIN receipts.export_runs r ON r.run_id = n.run_id
                      WHERE n.sdkappid IS NOT DISTINCT FROM o.sdkappid
                        AND n.group_id = o.group_id AND n.msg_seq = o.msg_seq
                        AND (r.run_date >= cutoff OR r.status = 'running'))
$$;

CREATE FUNCTION receipts.read_event_runs_before(cutoff date)
RETURNS TABLE (run_id bigint, status text, events bigint, pg_events bigint, lake_events bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, receipts
AS $$
    SELECT e.run_id, r.status, count(*)::bigint,
           (SELECT count(*) FROM receipts.read_events a WHERE a.run_id = e.run_id)
             + COALESCE((SELECT p.events FROM receipts.read_event_runs_pruned p
                         WHERE p.run_id = e.run_id), 0),
           COALESCE((SELECT sum(f.row_count) FROM receipts.read_event_files f
                     WHERE f.run_id = e.run_id), 0)::bigint
    FROM receipts.read_event_messages_before(cutoff) m
    JOIN receipts.read_events e ON e.sdkappid IS NOT DISTINCT FROM m.sdkappid
                               AND e.group_id = m.group_id AND e.msg_seq = m.msg_seq
    JOIN receipts.export_runs r ON r.run_id = e.run_id
    GROUP BY e.run_id, r.status
    ORDER BY e.run_id
$$;

CREATE OR REPLACE FUNCTION receipts.prune_read_events(cutoff date, OUT pruned_messages bigint, OUT pruned_events bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, receipts
AS $$
DECLARE
    missing text;
BEGIN
    IF cutoff IS NULL
       OR cutoff > (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month')::date THEN
        RAISE EXCEPTION 'prune_read_events: the cutoff % is not at least a month back',
            coalesce(cutoff::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('receipt-exporter:read-events'));
    SELECT string_agg(format('run %s (%s, %s read events in Postgres, %s in the lake)',
                             b.run_id, b.status, b.pg_events, b.lake_events), ', ')
      INTO missing
      FROM receipts.read_event_runs_before(cutoff) b
     WHERE b.pg_events <> b.lake_events OR b.status = 'running';
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'prune_read_events: not every read event before % is in the lake: %',
            cutoff, missing
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    WITH m AS (SELECT * FROM receipts.read_event_messages_before(cutoff)),
         gone AS (DELETE FROM receipts.read_events e USING m
                  WHERE e.sdkappid IS NOT DISTINCT FROM m.sdkappid
                    AND e.group_id = m.group_id AND e.msg_seq = m.msg_seq
                  RETURNING e.sdkappid, e.group_id, e.msg_seq, e.run_id),
         per_message AS (
             INSERT INTO receipts.read_events_pruned AS t (sdkappid, group_id, msg_seq, events, last_run_id)
             SELECT g.sdkappid, g.group_id, g.msg_seq, count(*), max(g.run_id) FROM gone g GROUP BY 1, 2, 3
             ON CONFLICT (sdkappid, group_id, msg_seq) DO UPDATE
                SET events = t.events + EXCLUDED.events,
                    last_run_id = greatest(t.last_run_id, EXCLUDED.last_run_id),
                    pruned_at = now()
             RETURNING 1),
         per_run AS (
             INSERT INTO receipts.read_event_runs_pruned AS p (run_id, events)
             SELECT g.run_id, count(*) FROM gone g GROUP BY 1
             ON CONFLICT (run_id) DO UPDATE
                SET events = p.events + EXCLUDED.events, pruned_at = now()),
         pulls AS (DELETE FROM receipts.read_list_pulls l USING m
                   WHERE l.sdkappid IS NOT DISTINCT FROM m.sdkappid
                     AND l.group_id = m.group_id AND l.msg_seq = m.msg_seq)
    SELECT (SELECT count(*) FROM per_message), (SELECT count(*) FROM gone)
      INTO pruned_messages, pruned_events;
END
$$;
REVOKE EXECUTE ON FUNCTION receipts.prune_read_events(date) FROM PUBLIC;

-- The read-progress rebuild takes each message's app from its group (snapshot_groups), no
-- longer from its runs.
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
                   AS run_id
        FROM receipts.receipt_snapshot_rows s
        GROUP BY s.group_key, s.msg_seq
    ), computed AS (
        SELECT g.group_id, m.msg_seq, g.sdkappid, m.first_seen_at, m.members_at_first_seen,
               m.read_ratio, m.half_read_at, m.ninety_read_at, m.run_id
        FROM per_message m
        JOIN receipts.snapshot_groups g USING (group_key)
    ), written AS (
        INSERT INTO receipts.message_read_progress AS p
            (group_id, msg_seq, sdkappid, first_seen_at, members_at_first_seen, read_ratio,
             half_read_at, ninety_read_at, run_id)
        SELECT * FROM computed
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
        RETURNING 1
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

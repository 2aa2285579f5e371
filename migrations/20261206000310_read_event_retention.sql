-- Issue 23: retention prunes read events too. A message's read events leave Postgres with the
-- months of snapshots retention drops, once every one of them was first seen by a run of those
-- months (a message still gaining readers in a kept month keeps all its rows), and only when
-- the lake's read-events files hold every event of those runs. The lake's files stay. A pruned
-- message is remembered: its read list is never pulled or recorded again, so a member already
-- recorded (and pruned) is never recorded a second time with a later first_seen_read_at.

-- The pruned messages (tombstones). Keyed by the message as `read_events` and
-- `read_list_pulls` are: issue "many apps" adds `sdkappid` to the three keys alike.
CREATE TABLE receipts.read_events_pruned (
    group_id     text        NOT NULL,
    msg_seq      bigint      NOT NULL,
    -- How many read events of the message retention removed, and the newest run among them.
    events       bigint      NOT NULL,
    last_run_id  bigint      NOT NULL,
    pruned_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, msg_seq)
);

-- Per run, how many of its read events retention removed: its files in the lake hold them,
-- Postgres no longer does, so such a run's read-events files are never written again from
-- Postgres (see forget_read_event_files).
CREATE TABLE receipts.read_event_runs_pruned (
    run_id     bigint      PRIMARY KEY REFERENCES receipts.export_runs (run_id),
    events     bigint      NOT NULL,
    pruned_at  timestamptz NOT NULL DEFAULT now()
);

-- The messages whose every read event was first seen by a finished run started before
-- `cutoff`. Read-only (the invoker's rights). Visits only the messages with an event of such a
-- run (read_events_run_idx), then looks for a newer event by the primary key.
CREATE FUNCTION receipts.read_event_messages_before(cutoff date)
RETURNS TABLE (group_id text, msg_seq bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, receipts
AS $$
    SELECT o.group_id, o.msg_seq
    FROM (SELECT DISTINCT e.group_id, e.msg_seq
          FROM receipts.read_events e
          WHERE e.run_id IN (SELECT r.run_id FROM receipts.export_runs r
                             WHERE r.run_date < cutoff)) o
    WHERE NOT EXISTS (SELECT 1 FROM receipts.read_events n
                      JOIN receipts.export_runs r ON r.run_id = n.run_id
                      WHERE n.group_id = o.group_id AND n.msg_seq = o.msg_seq
                        AND (r.run_date >= cutoff OR r.status = 'running'))
$$;

-- The runs with read events in those messages: how many of their events would go, and their
-- events in Postgres (those pruned before included) against the rows their recorded lake
-- files hold. Read-only (the invoker's rights).
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
    JOIN receipts.read_events e ON e.group_id = m.group_id AND e.msg_seq = m.msg_seq
    JOIN receipts.export_runs r ON r.run_id = e.run_id
    GROUP BY e.run_id, r.status
    ORDER BY e.run_id
$$;

-- Removes the read events of the messages above and remembers each message, under the lock
-- that recording read events shares (so no run records a reader of a message in between),
-- only when cutoff is at least a month back (the current and previous month stay, as with
-- snapshots) and every run concerned is finished and wholly in the lake; otherwise it raises,
-- naming the runs, and removes nothing. Returns the messages and events removed.
-- SECURITY DEFINER: the writer's role has no DELETE on read_events.
CREATE FUNCTION receipts.prune_read_events(cutoff date, OUT pruned_messages bigint, OUT pruned_events bigint)
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
                  WHERE e.group_id = m.group_id AND e.msg_seq = m.msg_seq
                  RETURNING e.group_id, e.msg_seq, e.run_id),
         per_message AS (
             INSERT INTO receipts.read_events_pruned AS t (group_id, msg_seq, events, last_run_id)
             SELECT g.group_id, g.msg_seq, count(*), max(g.run_id) FROM gone g GROUP BY 1, 2
             ON CONFLICT (group_id, msg_seq) DO UPDATE
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
                   WHERE l.group_id = m.group_id AND l.msg_seq = m.msg_seq)
    SELECT (SELECT count(*) FROM per_message), (SELECT count(*) FROM gone)
      INTO pruned_messages, pruned_events;
END
$$;
REVOKE EXECUTE ON FUNCTION receipts.prune_read_events(date) FROM PUBLIC;

-- `lake verify --repair` forgets a run's read-events files before writing them again from
-- Postgres. Never those of a run whose events retention removed: Postgres could not write
-- them whole again. Returns the rows forgotten. SECURITY DEFINER: the writer's role has no
-- DELETE on read_event_files.
CREATE FUNCTION receipts.forget_read_event_files(run bigint, dates date[])
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, receipts
AS $$
DECLARE
    forgotten bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM receipts.read_event_runs_pruned p WHERE p.run_id = run) THEN
        RAISE EXCEPTION 'forget_read_event_files: retention removed read events of run % from Postgres: its files in the lake are all that is left of them',
            run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    DELETE FROM receipts.read_event_files f WHERE f.run_id = run AND f.capture_date = ANY(dates);
    GET DIAGNOSTICS forgotten = ROW_COUNT;
    RETURN forgotten;
END
$$;
REVOKE EXECUTE ON FUNCTION receipts.forget_read_event_files(bigint, date[]) FROM PUBLIC;

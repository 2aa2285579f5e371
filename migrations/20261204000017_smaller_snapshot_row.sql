-- Issue 17: a smaller snapshot row. The time series used to repeat each group id's text in
-- every row and in two unique-per-row index entries: about 228 bytes per row, table and
-- indexes. It now stores a 4-byte group key (`snapshot_groups`), an int4 run id, its 8-byte
-- columns first (no alignment padding), and only the indexes the exporter's statements and the
-- README's queries use:
--   (group_key, msg_seq)  one message's snapshots (growth, readers, the settled/no-receipt
--                         rules); every run repeats the same keys, so B-tree deduplication
--                         stores each key once with a list of row pointers;
--   BRIN (run_id)         a run's rows (repair, rebuild, resume): runs arrive in id order;
--   BRIN (captured_at)    time ranges (a day's rebuild, analysts' scans).
-- The primary key (run_date, run_id, group_id, msg_seq) is gone: it cost ~40 bytes a row and
-- no statement looked rows up by it. A row is still written once: each write batch claims its
-- number in `write_batches` in the same transaction as its rows, and a run asks each seq once.
-- `receipts.receipt_snapshots` stays, as a view with the same columns and types.

CREATE TABLE receipts.snapshot_groups (
    group_key  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id   text    NOT NULL UNIQUE
);

CREATE TABLE receipts.receipt_snapshot_rows (
    captured_at  timestamptz NOT NULL,
    msg_seq      bigint      NOT NULL,
    run_id       integer     NOT NULL,
    run_date     date        NOT NULL,
    group_key    integer     NOT NULL,
    batch_no     integer     NOT NULL,
    read_num     integer     NOT NULL CHECK (read_num >= 0),
    unread_num   integer     NOT NULL CHECK (unread_num >= 0)
) PARTITION BY RANGE (run_date);
CREATE INDEX receipt_snapshot_rows_msg_idx
    ON receipts.receipt_snapshot_rows (group_key, msg_seq);
-- On the bigint the view shows, so `run_id = <bigint>` through the view uses it.
CREATE INDEX receipt_snapshot_rows_run_brin
    ON receipts.receipt_snapshot_rows USING brin ((run_id::bigint));
CREATE INDEX receipt_snapshot_rows_captured_brin
    ON receipts.receipt_snapshot_rows USING brin (captured_at);
CREATE TABLE receipts.receipt_snapshot_rows_default
    PARTITION OF receipts.receipt_snapshot_rows DEFAULT;

-- The partitions of the rows table, by month of run_date; same contract as before.
CREATE OR REPLACE FUNCTION receipts.ensure_snapshot_partitions(ahead_months integer DEFAULT 3)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, receipts
AS $$
DECLARE
    month_start date;
    part_name   text;
    created     integer := 0;
BEGIN
    IF ahead_months IS NULL OR ahead_months NOT BETWEEN 0 AND 24 THEN
        RAISE EXCEPTION 'ensure_snapshot_partitions: ahead_months must be from 0 to 24, not %',
            coalesce(ahead_months::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('receipt-exporter:partitions'));
    FOR i IN 0..ahead_months LOOP
        month_start := (date_trunc('month', now() AT TIME ZONE 'UTC')
                        + make_interval(months => i))::date;
        part_name := format('receipt_snapshot_rows_y%sm%s',
                            to_char(month_start, 'YYYY'), to_char(month_start, 'MM'));
        CONTINUE WHEN to_regclass('receipts.' || part_name) IS NOT NULL;
        BEGIN
            EXECUTE format('CREATE TABLE receipts.%I PARTITION OF receipts.receipt_snapshot_rows '
                           'FOR VALUES FROM (%L) TO (%L)',
                           part_name, month_start, (month_start + interval '1 month')::date);
            created := created + 1;
        EXCEPTION WHEN check_violation THEN
            -- Rows for that month already sit in the DEFAULT partition: leave them there.
            RAISE WARNING 'partition % not created: the default partition holds rows for it', part_name;
        END;
    END LOOP;
    RETURN created;
END
$$;

-- Existing rows move over: a partition for every month they hold, then the rows in run order
-- (which keeps the BRIN indexes tight).
DO $$
DECLARE
    month_start date;
    part_name   text;
BEGIN
    FOR month_start IN
        SELECT DISTINCT date_trunc('month', run_date)::date FROM receipts.receipt_snapshots
    LOOP
        part_name := format('receipt_snapshot_rows_y%sm%s',
                            to_char(month_start, 'YYYY'), to_char(month_start, 'MM'));
        CONTINUE WHEN to_regclass('receipts.' || part_name) IS NOT NULL;
        EXECUTE format('CREATE TABLE receipts.%I PARTITION OF receipts.receipt_snapshot_rows '
                       'FOR VALUES FROM (%L) TO (%L)',
                       part_name, month_start, (month_start + interval '1 month')::date);
    END LOOP;
END
$$;
SELECT receipts.ensure_snapshot_partitions(12);

INSERT INTO receipts.snapshot_groups (group_id)
SELECT DISTINCT group_id FROM receipts.receipt_snapshots ORDER BY 1;
INSERT INTO receipts.receipt_snapshot_rows
    (captured_at, msg_seq, run_id, run_date, group_key, batch_no, read_num, unread_num)
SELECT s.captured_at, s.msg_seq, s.run_id, s.run_date, g.group_key, s.batch_no, s.read_num,
       s.unread_num
FROM receipts.receipt_snapshots s
JOIN receipts.snapshot_groups g USING (group_id)
ORDER BY s.run_date, s.run_id, s.batch_no, g.group_key, s.msg_seq;

DROP VIEW receipts.receipt_growth;
DROP VIEW receipts.message_readers;
DROP TABLE receipts.receipt_snapshots;

-- What analysts and the exporter's readers query: the old table's columns, names and types.
CREATE VIEW receipts.receipt_snapshots AS
SELECT s.run_id::bigint AS run_id, s.run_date, s.batch_no, s.captured_at, g.group_id,
       s.msg_seq, s.read_num, s.unread_num
FROM receipts.receipt_snapshot_rows s
JOIN receipts.snapshot_groups g USING (group_key);

CREATE VIEW receipts.receipt_growth AS
SELECT group_id, msg_seq, run_id, captured_at, read_num, unread_num,
       read_num - lag(read_num) OVER w        AS read_delta,
       captured_at - lag(captured_at) OVER w  AS since_previous
FROM receipts.receipt_snapshots
WINDOW w AS (PARTITION BY group_id, msg_seq ORDER BY captured_at);

CREATE VIEW receipts.message_readers AS
SELECT e.group_id, e.msg_seq, e.member_account, e.account_hashed, e.first_seen_read_at,
       e.read_before_details, e.run_id, f.first_snapshot_at,
       CASE WHEN NOT e.read_before_details THEN e.first_seen_read_at - f.first_snapshot_at END
           AS first_snapshot_to_first_seen_read
FROM receipts.read_events e
LEFT JOIN LATERAL (
    SELECT min(s.captured_at) AS first_snapshot_at
    FROM receipts.receipt_snapshots s
    WHERE s.group_id = e.group_id AND s.msg_seq = e.msg_seq
) f ON true;

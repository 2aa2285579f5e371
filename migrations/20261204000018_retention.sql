-- Issue 17: retention. Month partitions of the snapshot rows whose every run is wholly in the
-- lake (the manifest's row counts) may be dropped; what retention removed is remembered, so a
-- rebuild never replaces lake files of those runs with nothing.

-- The runs whose snapshot rows retention dropped from Postgres: their rows live on only in the
-- lake (`parquet_files` still lists their files). The ledger and the manifest keep their rows.
CREATE TABLE receipts.retired_runs (
    run_id      bigint      PRIMARY KEY REFERENCES receipts.export_runs (run_id),
    run_date    date        NOT NULL,
    row_count   bigint      NOT NULL,
    retired_at  timestamptz NOT NULL DEFAULT now()
);

-- The runs with snapshot rows in the month starting `month`: their rows in Postgres, their rows
-- in the lake according to the manifest, and their status. Read-only (the invoker's rights).
CREATE FUNCTION receipts.snapshot_month_runs(month date)
RETURNS TABLE (run_id bigint, status text, pg_rows bigint, lake_rows bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, receipts
AS $$
    SELECT s.run_id, r.status, s.n, COALESCE(f.n, 0)
    FROM (SELECT x.run_id::bigint AS run_id, count(*) AS n
          FROM receipts.receipt_snapshot_rows x
          WHERE x.run_date >= month AND x.run_date < (month + interval '1 month')::date
          GROUP BY x.run_id) s
    JOIN receipts.export_runs r ON r.run_id = s.run_id
    LEFT JOIN LATERAL (SELECT sum(p.row_count)::bigint AS n FROM receipts.parquet_files p
                       WHERE p.run_id = s.run_id) f ON true
    ORDER BY s.run_id
$$;

-- Drops the month partition starting `month` (at least two months back: the current and the
-- previous month always stay), after recording its runs in `retired_runs`, and only when every
-- run in it is finished and has all its rows in the lake; otherwise it raises, naming the runs,
-- and drops nothing. Returns the rows dropped, NULL when the month has no partition.
-- SECURITY DEFINER, so the exporter's role drops without DDL rights of its own; EXECUTE is
-- revoked from PUBLIC and granted to that role only (the README's role SQL).
CREATE FUNCTION receipts.drop_snapshot_month(month date)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, receipts
AS $$
DECLARE
    part_name text;
    missing   text;
    dropped   bigint;
BEGIN
    IF month IS NULL OR month <> date_trunc('month', month)::date
       OR month >= (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month')::date THEN
        RAISE EXCEPTION 'drop_snapshot_month: % is not the first day of a month before last month',
            coalesce(month::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    part_name := format('receipt_snapshot_rows_y%sm%s', to_char(month, 'YYYY'), to_char(month, 'MM'));
    IF to_regclass('receipts.' || part_name) IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('receipt-exporter:partitions'));
    -- No write may land in the month between the check and the drop.
    EXECUTE format('LOCK TABLE receipts.%I IN ACCESS EXCLUSIVE MODE', part_name);
    SELECT string_agg(format('run %s (%s, %s rows in Postgres, %s in the lake)',
                             m.run_id, m.status, m.pg_rows, m.lake_rows), ', ')
      INTO missing
      FROM receipts.snapshot_month_runs(month) m
     WHERE m.lake_rows <> m.pg_rows OR m.status = 'running';
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'drop_snapshot_month: not every run of % is in the lake: %', month, missing
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    INSERT INTO receipts.retired_runs (run_id, run_date, row_count)
    SELECT m.run_id, r.run_date, m.pg_rows
    FROM receipts.snapshot_month_runs(month) m JOIN receipts.export_runs r USING (run_id)
    ON CONFLICT (run_id) DO NOTHING;
    SELECT COALESCE(sum(m.pg_rows), 0) INTO dropped FROM receipts.snapshot_month_runs(month) m;
    EXECUTE format('DROP TABLE receipts.%I', part_name);
    RETURN dropped;
END
$$;
REVOKE EXECUTE ON FUNCTION receipts.drop_snapshot_month(date) FROM PUBLIC;

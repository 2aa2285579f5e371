-- Issue 17: the lake in an object store. An object store has no rename: a run's file is
-- uploaded under `_pending/...` (a prefix no reader of the tables lists), recorded here with
-- that key, and only then copied to its final key. `pending_key` is set while the copy may not
-- have happened yet (NULL: the file is at `path`); the repair at the next run's start finishes
-- the copy (or, if the pending object is gone, writes the rows again from Postgres).
ALTER TABLE receipts.parquet_files ADD COLUMN pending_key text;
CREATE INDEX parquet_files_pending ON receipts.parquet_files (run_id) WHERE pending_key IS NOT NULL;

-- A file whose copy to its final key is not done does not count as in the lake for retention:
-- if its pending object were lost, its rows could only come back from Postgres.
CREATE OR REPLACE FUNCTION receipts.snapshot_month_runs(month date)
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
                       WHERE p.run_id = s.run_id AND p.pending_key IS NULL) f ON true
    ORDER BY s.run_id
$$;

-- Issue 23: the writer's role (receipt_writer) no longer deletes what it recorded. The three
-- deletions a writer still has to make go through these SECURITY DEFINER functions, each of
-- which can do only its one narrow thing: the role itself has no DELETE on the item codes, the
-- manifest or the read-events manifest (see migrations/grants/grants.sql). EXECUTE is revoked
-- from PUBLIC here and granted to receipt_writer by the grants script.

-- The item codes retention prunes: those of runs started before `cutoff` with at least `keep`
-- newer codes of the same seq (the no-receipt rule reads only the newest few). Read-only (the
-- invoker's rights): retention's plan counts them, prune_item_codes() deletes them.
CREATE FUNCTION receipts.prunable_item_codes(cutoff date, keep integer)
RETURNS TABLE (run_id bigint, group_id text, msg_seq bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, receipts
AS $$
    SELECT c.run_id, c.group_id, c.msg_seq
    FROM receipts.receipt_item_codes c
    JOIN receipts.export_runs r ON r.run_id = c.run_id AND r.run_date < cutoff
    WHERE (SELECT count(*) FROM receipts.receipt_item_codes n
           WHERE n.group_id = c.group_id AND n.msg_seq = c.msg_seq AND n.run_id > c.run_id) >= keep
$$;

-- Retention: deletes up to `max_rows` of those codes. `cutoff` must be at least a month back
-- and `keep` at least 1, as the command allows. Returns how many it deleted.
CREATE FUNCTION receipts.prune_item_codes(cutoff date, keep integer, max_rows bigint)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, receipts
AS $$
DECLARE
    deleted bigint;
BEGIN
    IF cutoff IS NULL
       OR cutoff > (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month')::date THEN
        RAISE EXCEPTION 'prune_item_codes: the cutoff % is not at least a month back',
            coalesce(cutoff::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF keep IS NULL OR keep < 1 OR max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'prune_item_codes: keep (%) and max_rows (%) must be at least 1',
            coalesce(keep::text, 'NULL'), coalesce(max_rows::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM receipts.receipt_item_codes c
    USING (SELECT * FROM receipts.prunable_item_codes(cutoff, keep) LIMIT max_rows) d
    WHERE c.run_id = d.run_id AND c.group_id = d.group_id AND c.msg_seq = d.msg_seq;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;
REVOKE EXECUTE ON FUNCTION receipts.prune_item_codes(date, integer, bigint) FROM PUBLIC;

-- A rebuild (export parquet, lake verify --repair) or a repair of an object-store lake forgets
-- manifest rows: their batches are pointed at no file again, the rows go. Never a file of a
-- run retention removed from Postgres: those files are the only copy of its rows, and a
-- rebuild could not write them again. Runs inside the caller's transaction (which holds the
-- fence of the files' runs).
CREATE FUNCTION receipts.forget_parquet_files(file_ids bigint[])
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, receipts
AS $$
DECLARE
    retired text;
    forgotten bigint;
BEGIN
    SELECT string_agg(DISTINCT format('%s (run %s)', f.path, f.run_id), ', ')
      INTO retired
      FROM receipts.parquet_files f JOIN receipts.retired_runs r USING (run_id)
     WHERE f.file_id = ANY(file_ids);
    IF retired IS NOT NULL THEN
        RAISE EXCEPTION 'forget_parquet_files: % hold rows retention removed from Postgres: the lake''s files are all that is left of them',
            retired
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE receipts.write_batches SET parquet_file_id = NULL WHERE parquet_file_id = ANY(file_ids);
    DELETE FROM receipts.parquet_files WHERE file_id = ANY(file_ids);
    GET DIAGNOSTICS forgotten = ROW_COUNT;
    RETURN forgotten;
END
$$;
REVOKE EXECUTE ON FUNCTION receipts.forget_parquet_files(bigint[]) FROM PUBLIC;

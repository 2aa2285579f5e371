-- receipts.ensure_snapshot_partitions() is SECURITY DEFINER: it creates tables with the rights
-- of the schema's owner. PostgreSQL grants EXECUTE on every new function to PUBLIC, so any role
-- that could connect (the read-only analyst too) could create partitions, as many months ahead
-- as it liked. Only the exporter's runs need it: the README's role SQL grants it to that role,
-- and the owner (who runs `migrate`) keeps it as the owner. The argument is bounded as well.
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
        part_name := format('receipt_snapshots_y%sm%s',
                            to_char(month_start, 'YYYY'), to_char(month_start, 'MM'));
        CONTINUE WHEN to_regclass('receipts.' || part_name) IS NOT NULL;
        BEGIN
            EXECUTE format('CREATE TABLE receipts.%I PARTITION OF receipts.receipt_snapshots '
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
REVOKE EXECUTE ON FUNCTION receipts.ensure_snapshot_partitions(integer) FROM PUBLIC;

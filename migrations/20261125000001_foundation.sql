-- receipt-exporter: every object lives in the schema `receipts`, so access is granted per schema.
CREATE SCHEMA IF NOT EXISTS receipts;

-- Which groups are tracked. Jobs select groups by tag.
CREATE TABLE receipts.tracked_groups (
    group_id    text PRIMARY KEY
                CHECK (group_id <> '' AND octet_length(group_id) <= 48
                       AND group_id !~ '[[:space:][:cntrl:]]'),
    enabled     boolean     NOT NULL DEFAULT true,
    tags        text[]      NOT NULL DEFAULT '{}',
    note        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tracked_groups_tags_idx ON receipts.tracked_groups USING gin (tags);

-- Which message seqs of a group to snapshot. `fixed` windows are FROM..TO; `latest` windows
-- (rolling: the newest N messages) are resolved at run time from the group's NextMsgSeq.
CREATE TABLE receipts.seq_windows (
    window_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id    text   NOT NULL REFERENCES receipts.tracked_groups (group_id) ON DELETE CASCADE,
    kind        text   NOT NULL DEFAULT 'fixed' CHECK (kind IN ('fixed', 'latest')),
    from_seq    bigint CHECK (from_seq >= 1),
    to_seq      bigint CHECK (to_seq >= from_seq),
    latest_n    bigint CHECK (latest_n >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (kind <> 'fixed'  OR (from_seq IS NOT NULL AND to_seq IS NOT NULL AND latest_n IS NULL)),
    CHECK (kind <> 'latest' OR (latest_n IS NOT NULL AND from_seq IS NULL AND to_seq IS NULL))
);
CREATE UNIQUE INDEX seq_windows_fixed_uniq ON receipts.seq_windows (group_id, from_seq, to_seq)
    WHERE kind = 'fixed';
CREATE UNIQUE INDEX seq_windows_latest_uniq ON receipts.seq_windows (group_id)
    WHERE kind = 'latest';

-- The run ledger: one row per run (a resumed backfill keeps its row across attempts).
CREATE TABLE receipts.export_runs (
    run_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job               text        NOT NULL,
    kind              text        NOT NULL CHECK (kind IN ('scheduled', 'manual', 'backfill')),
    status            text        NOT NULL CHECK (status IN ('running', 'succeeded', 'partial',
                                              'failed', 'interrupted', 'abandoned')),
    started_at        timestamptz NOT NULL DEFAULT now(),
    -- The partition key of this run's snapshots: the UTC date the run started, fixed for the run.
    run_date          date        NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')::date,
    finished_at       timestamptz,
    host              text        NOT NULL,
    pid               integer     NOT NULL,
    groups_ok         integer     NOT NULL DEFAULT 0,
    groups_failed     integer     NOT NULL DEFAULT 0,
    seqs_asked        bigint      NOT NULL DEFAULT 0,
    receipts_written  bigint      NOT NULL DEFAULT 0,
    api_calls         bigint      NOT NULL DEFAULT 0,
    retries           bigint      NOT NULL DEFAULT 0,
    retries_by_class  jsonb       NOT NULL DEFAULT '{}',
    rate_limited      bigint      NOT NULL DEFAULT 0,
    item_codes        jsonb       NOT NULL DEFAULT '{}',
    parquet_files     integer     NOT NULL DEFAULT 0,
    error             text,
    -- Everything else worth keeping about the run: latency percentiles, failed groups, plan.
    details           jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX export_runs_job_started_idx ON receipts.export_runs (job, started_at DESC);
CREATE INDEX export_runs_running_idx ON receipts.export_runs (job) WHERE status = 'running';

-- The time series. Partitioned by month of the run's start date (fixed per run), so the
-- unique key (which must contain the partition key) is still one row per run, group and seq.
CREATE TABLE receipts.receipt_snapshots (
    run_id       bigint      NOT NULL,
    run_date     date        NOT NULL,
    batch_no     integer     NOT NULL,
    captured_at  timestamptz NOT NULL,
    group_id     text        NOT NULL,
    msg_seq      bigint      NOT NULL,
    read_num     integer     NOT NULL CHECK (read_num >= 0),
    unread_num   integer     NOT NULL CHECK (unread_num >= 0),
    PRIMARY KEY (run_date, run_id, group_id, msg_seq)
) PARTITION BY RANGE (run_date);
-- "How did this message's count grow": per message, in time order.
CREATE INDEX receipt_snapshots_msg_idx ON receipts.receipt_snapshots (group_id, msg_seq, captured_at);
-- Time-range scans over years of data: tiny, and snapshots arrive in time order.
CREATE INDEX receipt_snapshots_captured_brin ON receipts.receipt_snapshots USING brin (captured_at);
CREATE TABLE receipts.receipt_snapshots_default PARTITION OF receipts.receipt_snapshots DEFAULT;

-- Creates the monthly partitions from this month to `ahead_months` ahead. SECURITY DEFINER, so
-- the exporter's role calls it at run start without any DDL right of its own.
CREATE FUNCTION receipts.ensure_snapshot_partitions(ahead_months integer DEFAULT 3)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, receipts
AS $$
DECLARE
    month_start date;
    part_name   text;
    created     integer := 0;
BEGIN
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
SELECT receipts.ensure_snapshot_partitions(12);

-- Item-level codes: which seq answered which non-zero Code in which run (10062: no receipt).
CREATE TABLE receipts.receipt_item_codes (
    run_id       bigint      NOT NULL REFERENCES receipts.export_runs (run_id),
    batch_no     integer     NOT NULL,
    captured_at  timestamptz NOT NULL,
    group_id     text        NOT NULL,
    msg_seq      bigint      NOT NULL,
    code         integer     NOT NULL,
    PRIMARY KEY (run_id, group_id, msg_seq)
);
CREATE INDEX receipt_item_codes_msg_idx ON receipts.receipt_item_codes (group_id, msg_seq, run_id);

-- Committed Parquet files: a file is part of the warehouse exactly when its row is here.
CREATE TABLE receipts.parquet_files (
    file_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id        bigint      NOT NULL REFERENCES receipts.export_runs (run_id),
    capture_date  date        NOT NULL,
    part          integer     NOT NULL,
    path          text        NOT NULL UNIQUE,   -- relative to the Parquet directory
    row_count     bigint      NOT NULL,
    byte_size     bigint      NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, part)
);
CREATE INDEX parquet_files_date_idx ON receipts.parquet_files (capture_date);

-- One row per committed write batch: makes a retried write idempotent (COPY has no
-- ON CONFLICT) and says which Parquet file holds the batch's rows (NULL: not yet in Parquet).
CREATE TABLE receipts.write_batches (
    run_id           bigint      NOT NULL REFERENCES receipts.export_runs (run_id),
    batch_no         integer     NOT NULL,
    capture_date     date        NOT NULL,
    row_count        integer     NOT NULL,
    code_count       integer     NOT NULL,
    committed_at     timestamptz NOT NULL DEFAULT now(),
    parquet_file_id  bigint      REFERENCES receipts.parquet_files (file_id),
    PRIMARY KEY (run_id, batch_no)
);
CREATE INDEX write_batches_unexported_idx ON receipts.write_batches (run_id)
    WHERE parquet_file_id IS NULL;

-- The newest snapshot of every tracked message, kept current by each write batch.
CREATE TABLE receipts.receipt_latest (
    group_id     text        NOT NULL,
    msg_seq      bigint      NOT NULL,
    run_id       bigint      NOT NULL,
    captured_at  timestamptz NOT NULL,
    read_num     integer     NOT NULL,
    unread_num   integer     NOT NULL,
    PRIMARY KEY (group_id, msg_seq)
);

-- How each message's read count grew from one snapshot to the next.
CREATE VIEW receipts.receipt_growth AS
SELECT group_id, msg_seq, run_id, captured_at, read_num, unread_num,
       read_num - lag(read_num) OVER w        AS read_delta,
       captured_at - lag(captured_at) OVER w  AS since_previous
FROM receipts.receipt_snapshots
WINDOW w AS (PARTITION BY group_id, msg_seq ORDER BY captured_at);

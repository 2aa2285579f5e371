-- Fencing: who may still change a run. A run's writer holds its `epoch`; whoever takes the run
-- over (a repair that declares it dead, a repair rebuilding its Parquet files, a new attempt of
-- a backfill) bumps it in one statement. Every write batch, every Parquet file published and
-- the run's own finish check the epoch in their transaction and fail once it moved, so a
-- process that lost the run can change nothing its new owner changes.
--
-- Liveness: a live run renews `heartbeat_at` every second and `lease_until` to now + its
-- lock reconnect bound + a margin. A run is declared dead only when its job lock is free AND
-- its lease has run out, so a run riding out a Postgres restart is never repaired under it.
-- Constant defaults and NULLs: adding these columns rewrites nothing.
ALTER TABLE receipts.export_runs
    ADD COLUMN epoch         bigint      NOT NULL DEFAULT 1,
    -- Who bumped the epoch last ("run 7 (job b) on host h, pid 42"): what a fenced run reports.
    ADD COLUMN fenced_by     text,
    ADD COLUMN heartbeat_at  timestamptz,
    -- NULL for rows written before this migration: such a run is dead when its lock is free.
    ADD COLUMN lease_until   timestamptz;

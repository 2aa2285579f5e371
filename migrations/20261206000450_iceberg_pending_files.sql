-- Issue 23: a live run's Iceberg data files are never orphans. A run's writer records each data
-- file here (fenced, in its own transaction) before the file's first byte reaches the lake; the
-- commit that adds the file to the table removes its row in the same transaction; a discarded
-- file's row goes with the file; a dead run's rows go when the next run's repair sweeps that
-- run's files. `iceberg maintain` never removes a file listed here, however old it is: a
-- rate-capped backfill may keep a file open for hours.
CREATE TABLE receipts.iceberg_pending_files (
    location   text PRIMARY KEY,
    run_id     bigint NOT NULL REFERENCES receipts.export_runs (run_id),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX iceberg_pending_files_run ON receipts.iceberg_pending_files (run_id);

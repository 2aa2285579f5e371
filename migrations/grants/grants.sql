-- What the two group roles may do in the schema receipts. NOT a versioned migration (sqlx
-- ignores this directory): `receipt-exporter migrate` applies it after the migrations, every
-- time, in one transaction, as the schema's owner. So an upgrade needs no hand-written GRANT.
--
--   receipt_writer  runs, backfills, retention, maintenance (iceberg maintain, export parquet,
--                   lake verify --repair): records what it observed and what the lake holds;
--                   changes nothing it recorded but its own run's ledger row, fences and
--                   leases, the latest snapshot per message and the catalog pointer
--   receipt_reader  analysts: reads every table and view, runs no function
--
-- The login roles are members (README, "Least-privilege Postgres roles"). A migration that
-- adds a table, view or function names it here too: a test fails for an object of the schema
-- this file does not name. Start from nothing, so the rights are exactly what this file says,
-- whatever an earlier version granted.
REVOKE ALL ON ALL TABLES IN SCHEMA receipts FROM receipt_writer, receipt_reader;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA receipts FROM receipt_writer, receipt_reader;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA receipts FROM PUBLIC, receipt_writer, receipt_reader;
GRANT USAGE ON SCHEMA receipts TO receipt_writer, receipt_reader;

-- Both read everything.
GRANT SELECT ON
    receipts._sqlx_migrations,
    receipts.tracked_groups, receipts.seq_windows,
    receipts.export_runs, receipts.backfills, receipts.rate_leases,
    receipts.receipt_snapshot_rows, receipts.snapshot_groups, receipts.receipt_snapshots,
    receipts.receipt_item_codes, receipts.receipt_latest, receipts.receipt_growth,
    receipts.write_batches, receipts.parquet_files, receipts.retired_runs,
    receipts.read_events, receipts.read_list_pulls, receipts.read_event_files,
    receipts.message_readers, receipts.read_events_pruned, receipts.read_event_runs_pruned,
    receipts.iceberg_tables, receipts.iceberg_namespace_properties,
    receipts.lake_identity, receipts.check_outcomes, receipts.iceberg_pending_files,
    receipts.message_read_progress, receipts.message_read_progress_daily,
    receipts.message_read_progress_changes, receipts.message_read_progress_files,
    receipts.default_app, receipts.webhook_inbox
TO receipt_writer, receipt_reader;
-- The DEFAULT partition itself (the month partitions are read through their parent): retention
-- counts the old rows left there.
GRANT SELECT ON receipts.receipt_snapshot_rows_default TO receipt_writer, receipt_reader;

-- What a run observed: appended, never changed (no UPDATE, no DELETE).
GRANT INSERT ON
    receipts.receipt_snapshot_rows, receipts.snapshot_groups, receipts.receipt_item_codes,
    receipts.read_events
TO receipt_writer;
-- The newest snapshot per message (an upsert), and what each message's last read list covered.
GRANT INSERT, UPDATE ON receipts.receipt_latest, receipts.read_list_pulls TO receipt_writer;
-- Each message's read progress, merged by every write batch (an upsert), recomputed by
-- `progress rebuild` (never deleted: a message whose snapshots retention dropped keeps its row).
GRANT INSERT, UPDATE ON receipts.message_read_progress TO receipt_writer;
-- What each run changed of it (logged by the same batch; a second change of a message in the
-- same run replaces the run's first), and the lake's files of that log: a file's row is added
-- by a batch, its path, rows and size set once the file is written.
GRANT INSERT, UPDATE ON receipts.message_read_progress_changes TO receipt_writer;
GRANT INSERT, UPDATE (path, row_count, byte_size, committed_through, committed_rows)
    ON receipts.message_read_progress_files TO receipt_writer;

-- The webhook's inbox (`listen`): deliveries appended, never changed; the flush records only
-- which write batch of its run took a row, or why it dropped it.
GRANT INSERT, UPDATE (run_id, batch_no, dropped) ON receipts.webhook_inbox TO receipt_writer;

-- The ledger: its own run's row, its fence and its lease; a backfill's attempts; the API
-- budget's leases (dropped when their process is gone).
GRANT INSERT, UPDATE ON receipts.export_runs TO receipt_writer;
GRANT INSERT, UPDATE (attempts, resumed_at) ON receipts.backfills TO receipt_writer;
GRANT INSERT, UPDATE, DELETE ON receipts.rate_leases TO receipt_writer;

-- What the lake holds. A batch is pointed at its file; a file's row count is never changed
-- (retention trusts it), only its size after a rewrite and its pending upload. Manifest rows
-- are forgotten only through receipts.forget_parquet_files() and
-- receipts.forget_read_event_files(), which refuse the files of runs retention removed.
GRANT INSERT, UPDATE (parquet_file_id) ON receipts.write_batches TO receipt_writer;
GRANT INSERT, UPDATE (pending_key, byte_size) ON receipts.parquet_files TO receipt_writer;
GRANT INSERT ON receipts.read_event_files TO receipt_writer;

-- The lake this database writes: recorded once, on first use; changed only by the schema's
-- owner (`receipt-exporter lake move`), so no writer can point the database at another lake.
GRANT INSERT ON receipts.lake_identity TO receipt_writer;

-- The Iceberg catalog: the table's row once, then the compare-and-set of its pointer. No
-- DELETE: a table dropped from the catalog is never the writer's doing.
GRANT INSERT, UPDATE (metadata_location, previous_metadata_location)
    ON receipts.iceberg_tables TO receipt_writer;

-- The Iceberg data files a live run may still commit: recorded before their first byte, removed
-- by their commit, their discard or the repair of their dead run (`iceberg maintain` never
-- takes a file listed there).
GRANT INSERT, DELETE ON receipts.iceberg_pending_files TO receipt_writer;

-- How the newest `lake verify` and `doctor` came out (one row per check, replaced by the next),
-- for the metrics and the alert rules.
GRANT INSERT, UPDATE ON receipts.check_outcomes TO receipt_writer;

-- The only other changes, each through a SECURITY DEFINER function that does one narrow thing.
GRANT EXECUTE ON FUNCTION
    receipts.ensure_snapshot_partitions(integer),
    receipts.drop_snapshot_month(date),
    receipts.prune_item_codes(date, integer, bigint),
    receipts.prune_read_events(date),
    receipts.forget_parquet_files(bigint[]),
    receipts.forget_read_event_files(bigint, date[]),
    receipts.rebuild_message_read_progress(),
    receipts.adopt_default_app(bigint)
TO receipt_writer;
-- Read-only functions (the invoker's rights): retention's plan, for both.
GRANT EXECUTE ON FUNCTION
    receipts.snapshot_month_runs(date),
    receipts.prunable_item_codes(date, integer),
    receipts.read_event_messages_before(date),
    receipts.read_event_runs_before(date)
TO receipt_writer, receipt_reader;

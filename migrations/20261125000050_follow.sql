-- Following new messages, settled messages and budgets: what each run left out, and why.
-- Constant defaults: adding these columns rewrites nothing.
ALTER TABLE receipts.export_runs
    -- Seqs planned but skipped: the last snapshot had unread_num = 0 (the count cannot change).
    ADD COLUMN seqs_skipped_settled    bigint NOT NULL DEFAULT 0,
    -- Seqs planned but skipped: they answered 10062 (no receipt) in K consecutive runs.
    ADD COLUMN seqs_skipped_no_receipt bigint NOT NULL DEFAULT 0,
    -- What a run stopped by its budget (max_calls, max_duration) did not get to.
    ADD COLUMN seqs_left               bigint NOT NULL DEFAULT 0,
    ADD COLUMN calls_left              bigint NOT NULL DEFAULT 0;

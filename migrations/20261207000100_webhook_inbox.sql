-- Issue 27: the read-receipt webhook (`receipt-exporter listen`).
--
-- The inbox: one row per message of each acknowledged delivery, written in the delivery's one
-- transaction before the receiver answers. A repeated delivery stores nothing twice: the key is
-- the app, the group, the seq, the delivery's counts and its EventTime. A delivery's content is
-- never changed; the flush (the listener's own live run in export_runs) only records which of
-- its write batches carried the row into the data set, or why it was dropped.
CREATE TABLE receipts.webhook_inbox (
    inbox_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The app that delivered it (the URL's SdkAppid, checked against the receiver's own).
    sdkappid     bigint      NOT NULL,
    group_id     text        NOT NULL,
    msg_seq      bigint      NOT NULL,
    read_num     integer     NOT NULL,
    unread_num   integer     NOT NULL,
    -- The delivery's EventTime (milliseconds): the snapshot's captured_at.
    event_time   timestamptz NOT NULL,
    -- ReadReceiptMembers, as delivered: read events when the group has read-event detail on.
    members      text[]      NOT NULL DEFAULT '{}',
    received_at  timestamptz NOT NULL DEFAULT now(),
    -- Set by the flush: the live run and its write batch (receipts.write_batches) that wrote
    -- the row; a claim whose batch never committed is released by the next flush run.
    run_id       bigint      REFERENCES receipts.export_runs (run_id),
    batch_no     integer,
    -- Set by the flush instead of a batch: why the row was not kept ('untracked': its group
    -- is not tracked and the listener was not told to keep such groups).
    dropped      text        CHECK (dropped IN ('untracked')),
    UNIQUE (sdkappid, group_id, msg_seq, read_num, unread_num, event_time)
);
-- What the flush has still to take, oldest first.
CREATE INDEX webhook_inbox_unflushed_idx ON receipts.webhook_inbox (inbox_id)
    WHERE run_id IS NULL;

-- A listener's flush is a run of its own kind in the ledger.
ALTER TABLE receipts.export_runs DROP CONSTRAINT export_runs_kind_check;
ALTER TABLE receipts.export_runs ADD CONSTRAINT export_runs_kind_check
    CHECK (kind IN ('scheduled', 'manual', 'backfill', 'listen'));

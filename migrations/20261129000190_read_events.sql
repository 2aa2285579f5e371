-- Issue 19: who read each message (get_group_msg_receipt_detail), for groups that opt in.

-- Opt-in per group: only groups with `details` on cost detail calls. `details_since` is when
-- they were last switched on: readers already read by then are flagged (their time is unknown).
ALTER TABLE receipts.tracked_groups
    ADD COLUMN details       boolean     NOT NULL DEFAULT false,
    ADD COLUMN details_since timestamptz,
    ADD CONSTRAINT tracked_groups_details_since CHECK (NOT details OR details_since IS NOT NULL);

-- One row per (group, message, member) ever: when the member was first seen to have read it,
-- i.e. when the detail answer that first listed the member arrived.
CREATE TABLE receipts.read_events (
    group_id            text        NOT NULL,
    msg_seq             bigint      NOT NULL CHECK (msg_seq >= 1),
    -- The Chat account, or its keyed hash (`account_hashed`): see the README's "Who read it".
    member_account      text        NOT NULL CHECK (member_account <> ''),
    first_seen_read_at  timestamptz NOT NULL,
    run_id              bigint      NOT NULL REFERENCES receipts.export_runs (run_id),
    -- Listed by the first read list pulled after details were switched on while the message
    -- was already being snapshotted: the member may have read it long before.
    read_before_details boolean     NOT NULL DEFAULT false,
    account_hashed      boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (group_id, msg_seq, member_account)
);
CREATE INDEX read_events_seen_brin ON receipts.read_events USING brin (first_seen_read_at);
CREATE INDEX read_events_run_idx ON receipts.read_events (run_id);

-- Per message, the read count the last whole read list covered: a message is pulled again
-- only when its latest snapshot's read count is above it.
CREATE TABLE receipts.read_list_pulls (
    group_id   text        NOT NULL,
    msg_seq    bigint      NOT NULL,
    read_num   integer     NOT NULL CHECK (read_num >= 0),
    listed     integer     NOT NULL CHECK (listed >= 0),
    pulled_at  timestamptz NOT NULL,
    run_id     bigint      NOT NULL REFERENCES receipts.export_runs (run_id),
    PRIMARY KEY (group_id, msg_seq)
);

-- Each message's readers with the time from the message's first snapshot to the member's
-- first seen read. It is NOT read latency: the message's send time is unknown, and a member
-- is seen only when a run looks. NULL for members read before details were switched on.
CREATE VIEW receipts.message_readers AS
SELECT e.group_id, e.msg_seq, e.member_account, e.account_hashed, e.first_seen_read_at,
       e.read_before_details, e.run_id, f.first_snapshot_at,
       CASE WHEN NOT e.read_before_details THEN e.first_seen_read_at - f.first_snapshot_at END
           AS first_snapshot_to_first_seen_read
FROM receipts.read_events e
LEFT JOIN LATERAL (
    SELECT min(s.captured_at) AS first_snapshot_at
    FROM receipts.receipt_snapshots s
    WHERE s.group_id = e.group_id AND s.msg_seq = e.msg_seq
) f ON true;

-- The lake copy of read events: one Parquet file per run and capture date
-- (`read_events/capture_date=YYYY-MM-DD/run-<run_id>.parquet`), part of the lake exactly when
-- its row is here. A file renamed into place but not recorded (a crash between the two) is
-- written again, to the same name, by the next run.
CREATE TABLE receipts.read_event_files (
    run_id        bigint      NOT NULL REFERENCES receipts.export_runs (run_id),
    capture_date  date        NOT NULL,
    path          text        NOT NULL UNIQUE,
    row_count     bigint      NOT NULL,
    byte_size     bigint      NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, capture_date)
);

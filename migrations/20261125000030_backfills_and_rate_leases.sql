-- Resumable backfills: a backfill's definition (groups x windows, `--all` expanded at its first
-- start), keyed by a hash of the command as given, pointing at its one run. Running the same
-- command again finds the row and continues that run.
CREATE TABLE receipts.backfills (
    request_hash  text        PRIMARY KEY,
    run_id        bigint      NOT NULL UNIQUE REFERENCES receipts.export_runs (run_id),
    -- The command as given: {"all": bool, "groups": [...], "windows": ["F..T", ...]}.
    request       jsonb       NOT NULL,
    -- What it covers: {"groups": [...], "windows": ["F..T", ...]} (every window for every group).
    definition    jsonb       NOT NULL,
    attempts      integer     NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    resumed_at    timestamptz
);

-- The app's API budget, shared by every exporter process on any host: each process holds a
-- lease while it calls the API, heartbeats it, and paces itself at its share of the budget.
-- Leases without a heartbeat for a few seconds belong to dead processes and are dropped.
CREATE UNLOGGED TABLE receipts.rate_leases (
    holder_id     bigint           PRIMARY KEY,
    host          text             NOT NULL,
    pid           integer          NOT NULL,
    label         text             NOT NULL,
    -- The app's limit as this process is configured (calls/s); the smallest live one wins.
    global_rate   double precision NOT NULL CHECK (global_rate > 0),
    -- This process's own cap (calls/s), also its weight in the split.
    weight        double precision NOT NULL CHECK (weight > 0),
    joined_at     timestamptz      NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz      NOT NULL DEFAULT now()
);

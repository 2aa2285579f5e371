-- Issue 24: `lake verify` and `doctor` record how they came out, so the metrics (and an alert
-- on a lake that no longer matches its manifest) carry it. One row per check: the newest
-- outcome replaces the one before.
CREATE TABLE receipts.check_outcomes (
    check_name text PRIMARY KEY CHECK (check_name ~ '^[a-z_]{1,40}$'),
    checked_at timestamptz NOT NULL DEFAULT now(),
    ok         boolean NOT NULL,
    problems   integer NOT NULL DEFAULT 0 CHECK (problems >= 0),
    detail     text,
    host       text NOT NULL
);

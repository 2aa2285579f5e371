-- Issue 23: the lake's identity. One row: where this database's lake is (its location,
-- normalised: `file:///abs/path` or `s3://bucket/prefix`) and the form of its snapshot table
-- (`parquet`: Hive-style directories; `iceberg`: the Iceberg table). Written by the first
-- command that writes the lake (an existing database: at its first such command after this
-- migration, from its history); a process started with another location or format is
-- refused before it writes anything. `receipt-exporter lake move` changes it on purpose, and
-- keeps the previous values.
CREATE TABLE receipts.lake_identity (
    one                   boolean PRIMARY KEY DEFAULT true CHECK (one),
    location              text NOT NULL,
    table_format          text NOT NULL CHECK (table_format IN ('parquet', 'iceberg')),
    recorded_at           timestamptz NOT NULL DEFAULT now(),
    recorded_by           text NOT NULL DEFAULT current_user,
    previous_location     text,
    previous_table_format text CHECK (previous_table_format IN ('parquet', 'iceberg'))
);

-- Its rights are the grants script's (migrations/grants/grants.sql): the writers' group role
-- reads it and records it once; only the schema's owner changes it (`lake move`).

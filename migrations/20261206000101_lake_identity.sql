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

-- The writers' group role records the identity on first use and reads it; analysts read it.
-- (Where the README's group roles exist: a database set up with other roles grants by hand, or
-- through its default privileges.)
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'receipt_writer') THEN
        GRANT SELECT, INSERT ON receipts.lake_identity TO receipt_writer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'receipt_reader') THEN
        GRANT SELECT ON receipts.lake_identity TO receipt_reader;
    END IF;
END
$$;

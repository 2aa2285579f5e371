-- Issue 18: the Iceberg table's catalog lives in the project's Postgres. These are the tables of
-- Iceberg's SQL catalog exactly as Iceberg's JdbcCatalog (V1 schema, with `iceberg_type`),
-- pyiceberg's SqlCatalog and iceberg-rust's SqlCatalog define them, in schema `receipts`; an
-- engine's catalog connection sets `search_path=receipts` (the README's Iceberg section). The
-- exporter's commits swap `metadata_location` here in the same transaction that marks the
-- batches exported (`receipts.parquet_files`), so a commit and its manifest row are one.
CREATE TABLE receipts.iceberg_tables (
    catalog_name               varchar(255) NOT NULL,
    table_namespace            varchar(255) NOT NULL,
    table_name                 varchar(255) NOT NULL,
    metadata_location          varchar(1000),
    previous_metadata_location varchar(1000),
    iceberg_type               varchar(5),
    PRIMARY KEY (catalog_name, table_namespace, table_name)
);

CREATE TABLE receipts.iceberg_namespace_properties (
    catalog_name   varchar(255) NOT NULL,
    namespace      varchar(255) NOT NULL,
    property_key   varchar(255) NOT NULL,
    property_value varchar(1000),
    PRIMARY KEY (catalog_name, namespace, property_key)
);

-- The namespace `receipts` of catalog `receipt_exporter` exists from the start (the row
-- JdbcCatalog and pyiceberg write for a namespace without properties). The table itself is
-- created by the first run in Iceberg mode, which knows where the lake is.
INSERT INTO receipts.iceberg_namespace_properties VALUES
    ('receipt_exporter', 'receipts', 'exists', 'true');

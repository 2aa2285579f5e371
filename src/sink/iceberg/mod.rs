//! The Iceberg sink (`--table-format iceberg`): the snapshots as the Iceberg table
//! `receipts.receipt_snapshots` (format v2, partitioned by `day(captured_at)`) in the lake,
//! its catalog the SQL catalog tables in Postgres (`receipts.iceberg_tables`, catalog
//! `receipt_exporter`).
//!
//! A data file is written by iceberg-rust's writer straight to its final name under the
//! table's `data/` ([`writer`]); it becomes part of the table only by a commit ([`commit`]):
//! iceberg-rust writes the manifest, manifest list and new metadata file, and the catalog
//! pointer (`iceberg_tables.metadata_location`) moves in the same Postgres transaction that
//! checks the run's fence and records the file in `receipts.parquet_files` (which marks its
//! batches exported). So a commit and its manifest row are one: a crash leaves either both or
//! neither, and a data or metadata file no commit names is an orphan that repair (a run's
//! own data files) or `iceberg maintain` removes. This module never opens iceberg-rust's
//! `SqlCatalog`: that creates its tables on connect, which the exporter's role may not.

pub mod commit;
pub mod files;
pub mod repair;
pub mod writer;

use super::SinkError;
use iceberg::io::{FileIO, FileIOBuilder};
use iceberg::spec::{
    NestedField, PrimitiveType, Schema, TableMetadata, TableMetadataBuilder, Transform, Type,
    UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::{MetadataLocation, TableCreation, TableIdent};
use sqlx::{PgConnection, PgPool};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

/// The catalog's name in `iceberg_tables.catalog_name` (what engines call the catalog).
pub const CATALOG: &str = "receipt_exporter";
/// The table's namespace.
pub const NAMESPACE: &str = "receipts";
/// The table's name.
pub const TABLE: &str = "receipt_snapshots";
/// The partition field: `day(captured_at)`, the UTC capture date.
pub const PARTITION_FIELD: &str = "captured_at_day";
/// Snapshot summary keys: which run and part of it a commit holds, and the file.
pub const SUMMARY_RUN_ID: &str = "receipt-exporter.run-id";
pub const SUMMARY_PART: &str = "receipt-exporter.part";
pub const SUMMARY_FILE: &str = "receipt-exporter.data-file";

/// The table's schema: the columns and types of the Parquet files, with Iceberg field ids.
pub fn table_schema() -> Schema {
    let field = |id, name, t| Arc::new(NestedField::required(id, name, Type::Primitive(t)));
    Schema::builder()
        .with_schema_id(0)
        .with_fields(vec![
            field(1, "run_id", PrimitiveType::Long),
            field(2, "captured_at", PrimitiveType::Timestamptz),
            field(3, "group_id", PrimitiveType::String),
            field(4, "msg_seq", PrimitiveType::Long),
            field(5, "read_num", PrimitiveType::Int),
            field(6, "unread_num", PrimitiveType::Int),
        ])
        .build()
        .expect("a valid schema")
}

fn partition_spec() -> UnboundPartitionSpec {
    UnboundPartitionSpec::builder()
        .with_spec_id(0)
        .add_partition_field(2, PARTITION_FIELD, Transform::Day)
        .expect("a valid partition field")
        .build()
}

/// The lake seen as an Iceberg warehouse: where the table lives and how to reach its files.
#[derive(Debug, Clone)]
pub struct IcebergLake {
    file_io: FileIO,
    /// The lake as a URI without a trailing slash: `file:///abs/dir` or `s3://bucket/prefix`.
    warehouse: String,
}

impl IcebergLake {
    /// The lake at `dir` (a local directory, made absolute, or `s3://bucket/prefix`, reached
    /// with the standard AWS variables: see [`s3_properties`]).
    pub fn new(dir: &Path) -> Result<IcebergLake, SinkError> {
        let text = dir.to_string_lossy();
        let mut props = Vec::new();
        let warehouse = if text.starts_with("s3://") || text.starts_with("s3a://") {
            props = s3_properties(|k| std::env::var(k).ok())?;
            text.trim_end_matches('/').to_string()
        } else {
            // Made absolute, not resolved: the same setting names the same table on every run.
            let abs = std::path::absolute(dir).map_err(SinkError::io("resolving", dir))?;
            format!("file://{}", abs.to_string_lossy().trim_end_matches('/'))
        };
        let factory = Arc::new(iceberg_storage_opendal::OpenDalResolvingStorageFactory::new());
        let file_io = FileIOBuilder::new(factory).with_props(props).build();
        Ok(IcebergLake { file_io, warehouse })
    }

    /// The table's location: `<lake>/receipts/receipt_snapshots`.
    pub fn table_location(&self) -> String {
        format!("{}/{NAMESPACE}/{TABLE}", self.warehouse)
    }

    /// The lake as a URI.
    pub fn warehouse(&self) -> &str {
        &self.warehouse
    }

    pub fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    /// A location inside the lake, relative to it (as `parquet_files.path` stores it).
    pub fn relative(&self, location: &str) -> String {
        location
            .strip_prefix(&self.warehouse)
            .map(|p| p.trim_start_matches('/').to_string())
            .unwrap_or_else(|| location.to_string())
    }

    /// The table, created (empty) if the catalog does not list it yet. Fails when the catalog's
    /// table lives somewhere other than this lake.
    pub async fn ensure_table(&self, pool: &PgPool) -> Result<Table, SinkError> {
        let mut conn = pool
            .acquire()
            .await
            .map_err(SinkError::pg("opening the Iceberg catalog"))?;
        if let Some(table) = self.load(&mut conn, false).await? {
            return self.check_location(table);
        }
        let (location, metadata) = self.first_metadata()?;
        metadata
            .write_to(&self.file_io, &location)
            .await
            .map_err(SinkError::iceberg("writing the table's first metadata"))?;
        let inserted = insert_table(&mut conn, &location.to_string()).await?;
        if !inserted {
            // Another process created it meanwhile: ours is never referenced.
            let _ = self.file_io.delete(location.to_string()).await;
        }
        let table = self.load(&mut conn, false).await?.expect("just created");
        self.check_location(table)
    }

    /// The metadata of the empty table at this lake's table location, and its metadata file's
    /// location (nothing written).
    pub fn first_metadata(&self) -> Result<(MetadataLocation, TableMetadata), SinkError> {
        let creation = TableCreation::builder()
            .name(TABLE.to_string())
            .location(self.table_location())
            .schema(table_schema())
            .partition_spec(partition_spec())
            .properties(table_properties())
            .build();
        let metadata = TableMetadataBuilder::from_table_creation(creation)
            .and_then(|b| b.build())
            .map_err(SinkError::iceberg("building the table's first metadata"))?
            .metadata;
        let location = MetadataLocation::new_with_metadata(self.table_location(), &metadata);
        Ok((location, metadata))
    }

    fn check_location(&self, table: Table) -> Result<Table, SinkError> {
        let found = table.metadata().location().trim_end_matches('/');
        if found != self.table_location() {
            return Err(SinkError::IcebergElsewhere {
                found: found.to_string(),
                configured: self.table_location(),
            });
        }
        Ok(table)
    }

    /// The table as the catalog points to it now (`None`: not created yet). With `for_update`,
    /// the catalog row stays locked until the end of the transaction on `conn`, so no other
    /// commit of ours moves the pointer meanwhile.
    pub async fn load(
        &self,
        conn: &mut PgConnection,
        for_update: bool,
    ) -> Result<Option<Table>, SinkError> {
        let Some(location) = metadata_location(conn, for_update).await? else {
            return Ok(None);
        };
        let metadata = TableMetadata::read_from(&self.file_io, &location)
            .await
            .map_err(SinkError::iceberg("reading the table's metadata"))?;
        self.table(location, metadata).map(Some)
    }

    /// A table handle for metadata already read.
    pub fn table(&self, location: String, metadata: TableMetadata) -> Result<Table, SinkError> {
        MetadataLocation::from_str(&location).map_err(SinkError::iceberg(
            "parsing the catalog's metadata location",
        ))?;
        Table::builder()
            .file_io(self.file_io.clone())
            .identifier(ident())
            .metadata_location(location)
            .metadata(metadata)
            .runtime(iceberg::Runtime::current())
            .build()
            .map_err(SinkError::iceberg("opening the table"))
    }
}

/// The lake and the table in it, opened (created if missing) for a run.
#[derive(Debug, Clone)]
pub struct IcebergTarget {
    pub lake: IcebergLake,
    /// The table as it was when opened: its schema, partition spec and location, which a
    /// run's writers use; every commit reads the table afresh.
    pub table: Table,
}

impl IcebergTarget {
    /// Opens the table in the lake at `dir`, creating it when the catalog lacks it.
    pub async fn open(dir: &Path, pool: &PgPool) -> Result<IcebergTarget, SinkError> {
        let lake = IcebergLake::new(dir)?;
        let table = lake.ensure_table(pool).await?;
        Ok(IcebergTarget { lake, table })
    }

    /// A writer for one run's data files.
    pub fn run_writer(&self, run_id: i64, next_part: i32) -> Result<writer::RunIceberg, SinkError> {
        writer::RunIceberg::new(self.lake.clone(), self.table.clone(), run_id, next_part)
    }
}

/// `receipts.receipt_snapshots`.
pub fn ident() -> TableIdent {
    TableIdent::from_strs([NAMESPACE, TABLE]).expect("a valid identifier")
}

fn table_properties() -> Vec<(String, String)> {
    [
        ("write.format.default", "parquet"),
        ("write.parquet.compression-codec", "zstd"),
        // Bounds the metadata log; older metadata files become orphans for `maintain`.
        ("write.metadata.previous-versions-max", "100"),
        (
            crate::sink::parquet::SCHEMA_VERSION_KEY,
            crate::sink::parquet::SCHEMA_VERSION,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The FileIO properties (`s3.*`) from the standard AWS variables, looked up by `var`:
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (else
/// `AWS_DEFAULT_REGION`), `AWS_ENDPOINT_URL` (else `AWS_ENDPOINT`: an S3-compatible server,
/// addressed path-style). An `http://` endpoint is refused unless `AWS_ALLOW_HTTP=true`.
pub fn s3_properties(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, SinkError> {
    let var = |k: &str| var(k).filter(|v| !v.is_empty());
    let mut props = Vec::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            props.push((key.to_string(), v));
        }
    };
    put("s3.access-key-id", var("AWS_ACCESS_KEY_ID"));
    put("s3.secret-access-key", var("AWS_SECRET_ACCESS_KEY"));
    put("s3.session-token", var("AWS_SESSION_TOKEN"));
    put(
        "s3.region",
        var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
    );
    let (name, endpoint) = match var("AWS_ENDPOINT_URL") {
        Some(e) => ("AWS_ENDPOINT_URL", Some(e)),
        None => ("AWS_ENDPOINT", var("AWS_ENDPOINT")),
    };
    if let Some(endpoint) = endpoint {
        let allow_http = var("AWS_ALLOW_HTTP").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if endpoint.starts_with("http://") && !allow_http {
            return Err(SinkError::IcebergConfig(format!(
                "{name} is a plain http:// endpoint ({endpoint}): set AWS_ALLOW_HTTP=true to allow it, or use https://"
            )));
        }
        put("s3.endpoint", Some(endpoint));
        put("s3.path-style-access", Some("true".to_string()));
    }
    Ok(props)
}

async fn metadata_location(
    conn: &mut PgConnection,
    for_update: bool,
) -> Result<Option<String>, SinkError> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let location: Option<Option<String>> = sqlx::query_scalar(&format!(
        "SELECT metadata_location FROM receipts.iceberg_tables
         WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3{lock}"
    ))
    .bind(CATALOG)
    .bind(NAMESPACE)
    .bind(TABLE)
    .fetch_optional(conn)
    .await
    .map_err(SinkError::pg("reading the Iceberg catalog"))?;
    Ok(location.flatten())
}

/// Lists the new table in the catalog; false when it is listed already.
async fn insert_table(conn: &mut PgConnection, location: &str) -> Result<bool, SinkError> {
    let done = sqlx::query(
        "INSERT INTO receipts.iceberg_tables
           (catalog_name, table_namespace, table_name, metadata_location, iceberg_type)
         VALUES ($1, $2, $3, $4, 'TABLE') ON CONFLICT DO NOTHING",
    )
    .bind(CATALOG)
    .bind(NAMESPACE)
    .bind(TABLE)
    .bind(location)
    .execute(conn)
    .await
    .map_err(SinkError::pg("listing the Iceberg table in the catalog"))?;
    Ok(done.rows_affected() == 1)
}

/// Moves the catalog pointer from `old` to `new` (compare-and-set, as Iceberg's JDBC catalog
/// does); false when the pointer is no longer at `old`.
pub(crate) async fn swap_pointer(
    conn: &mut PgConnection,
    old: &str,
    new: &str,
) -> Result<bool, SinkError> {
    let done = sqlx::query(
        "UPDATE receipts.iceberg_tables
         SET metadata_location = $4, previous_metadata_location = $5
         WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3
           AND metadata_location = $5",
    )
    .bind(CATALOG)
    .bind(NAMESPACE)
    .bind(TABLE)
    .bind(new)
    .bind(old)
    .execute(conn)
    .await
    .map_err(SinkError::pg("moving the Iceberg catalog pointer"))?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn aws_variables_become_s3_properties() {
        let props = s3_properties(vars(&[
            ("AWS_ACCESS_KEY_ID", "ak"),
            ("AWS_SECRET_ACCESS_KEY", "sk"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ENDPOINT", "http://127.0.0.1:9000"),
            ("AWS_ALLOW_HTTP", "true"),
        ]))
        .unwrap();
        let get = |k: &str| props.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
        assert_eq!(get("s3.access-key-id"), Some("ak"));
        assert_eq!(get("s3.secret-access-key"), Some("sk"));
        assert_eq!(get("s3.region"), Some("eu-west-1"));
        assert_eq!(get("s3.endpoint"), Some("http://127.0.0.1:9000"));
        assert_eq!(get("s3.path-style-access"), Some("true"));
    }

    #[test]
    fn a_plain_http_endpoint_needs_aws_allow_http() {
        let refused = s3_properties(vars(&[("AWS_ENDPOINT_URL", "http://10.0.0.1:9000")]));
        let message = refused.unwrap_err().to_string();
        assert!(message.contains("AWS_ALLOW_HTTP=true"), "{message}");
        let props = s3_properties(vars(&[("AWS_ENDPOINT_URL", "https://s3.example")])).unwrap();
        assert!(props.iter().any(|(k, _)| k == "s3.endpoint"), "{props:?}");
    }

    fn is_text(t: &arrow::datatypes::DataType) -> bool {
        use arrow::datatypes::DataType::*;
        matches!(t, Utf8 | LargeUtf8 | Utf8View)
    }

    #[test]
    fn the_schema_has_the_parquet_files_columns_and_field_ids() {
        let arrow = iceberg::arrow::schema_to_arrow_schema(&table_schema()).unwrap();
        let ours = crate::sink::parquet::arrow_schema();
        let names = |s: &arrow::datatypes::Schema| -> Vec<String> {
            s.fields().iter().map(|f| f.name().clone()).collect()
        };
        assert_eq!(names(&arrow), names(&ours));
        for (a, b) in arrow.fields().iter().zip(ours.fields()) {
            assert_eq!(a.is_nullable(), b.is_nullable(), "{}", a.name());
            let same = match (a.data_type(), b.data_type()) {
                (
                    arrow::datatypes::DataType::Timestamp(u1, Some(_)),
                    arrow::datatypes::DataType::Timestamp(u2, Some(_)),
                ) => u1 == u2,
                (x, y) => x == y || (is_text(x) && is_text(y)),
            };
            assert!(
                same,
                "{}: {:?} vs {:?}",
                a.name(),
                a.data_type(),
                b.data_type()
            );
        }
    }
}

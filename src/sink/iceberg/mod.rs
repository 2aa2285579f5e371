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
//! own data files, `LakeTarget::rebuild_run`) or `iceberg maintain` removes. The protocol of
//! every lake form is told in one place, [`super::target`]. This module never opens iceberg-rust's
//! `SqlCatalog`: that creates its tables on connect, which the exporter's role may not.

pub mod commit;
pub mod files;
pub mod overwrite;
pub mod pending;
pub mod progress;
pub mod shape;
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
/// Field 7, `sdkappid` (issue 26), is optional: data files written before it read null.
pub fn table_schema() -> Schema {
    let mut fields = first_fields();
    fields.push(Arc::new(NestedField::optional(
        SDKAPPID_FIELD,
        "sdkappid",
        Type::Primitive(PrimitiveType::Long),
    )));
    Schema::builder()
        .with_schema_id(1)
        .with_fields(fields)
        .build()
        .expect("a valid schema")
}

/// The field id of `sdkappid`, added by the exporter's own schema evolution.
pub const SDKAPPID_FIELD: i32 = 7;

/// The table's first schema (before apps): a table created by an older release has it until
/// its first run by this one evolves it ([`IcebergLake::ensure_table`]).
pub fn first_schema() -> Schema {
    Schema::builder()
        .with_schema_id(0)
        .with_fields(first_fields())
        .build()
        .expect("a valid schema")
}

fn first_fields() -> Vec<iceberg::spec::NestedFieldRef> {
    let field = |id, name, t| Arc::new(NestedField::required(id, name, Type::Primitive(t)));
    vec![
        field(1, "run_id", PrimitiveType::Long),
        field(2, "captured_at", PrimitiveType::Timestamptz),
        field(3, "group_id", PrimitiveType::String),
        field(4, "msg_seq", PrimitiveType::Long),
        field(5, "read_num", PrimitiveType::Int),
        field(6, "unread_num", PrimitiveType::Int),
    ]
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
    /// The lake as the rest of the house opened it (its object store lists the table's files).
    lake: crate::lake::Lake,
    /// Which table of the catalog's namespace this handle reaches: [`TABLE`], or the read
    /// progress's ([`progress::TABLE`]).
    table: &'static str,
}

impl IcebergLake {
    /// The lake (a local directory, made absolute, or `s3://bucket/prefix`, reached with the
    /// same standard AWS variables as the rest of the lake: see [`s3_properties`]). GCS and
    /// Azure lakes are refused: the build's Iceberg storage has S3 and the local disk only.
    pub fn new(lake: &crate::lake::Lake) -> Result<IcebergLake, SinkError> {
        use crate::lake::{Lake, Location, Scheme};
        // The lake's one spelling (made absolute, not resolved): the same setting names the same
        // table on every run, and the lake's identity records the same string.
        let warehouse = lake.normalized();
        let props = match lake {
            Lake::Local(_) => Vec::new(),
            Lake::Remote(remote) => match remote.location() {
                Location::Remote {
                    scheme: Scheme::S3, ..
                } => s3_properties(&crate::lake::S3Env::from_env()),
                other => {
                    return Err(SinkError::Config(format!(
                        "the Iceberg table needs a lake on the local disk or in S3 (s3://BUCKET/PREFIX), not {other}: set EXPORT_PARQUET_DIR to one, or EXPORT_TABLE_FORMAT=parquet"
                    )))
                }
            },
        };
        let factory = Arc::new(iceberg_storage_opendal::OpenDalResolvingStorageFactory::new());
        let file_io = FileIOBuilder::new(factory).with_props(props).build();
        Ok(IcebergLake {
            file_io,
            warehouse,
            lake: lake.clone(),
            table: TABLE,
        })
    }

    /// The same lake, reaching the table `name` of the namespace instead.
    pub fn with_table(&self, name: &'static str) -> IcebergLake {
        IcebergLake {
            table: name,
            ..self.clone()
        }
    }

    /// The table's name in the namespace `receipts`.
    pub fn table_name(&self) -> &'static str {
        self.table
    }

    /// The lake as the rest of the house opened it.
    pub fn lake(&self) -> &crate::lake::Lake {
        &self.lake
    }

    /// The table's location: `<lake>/receipts/receipt_snapshots` (or the other table's name).
    pub fn table_location(&self) -> String {
        format!("{}/{NAMESPACE}/{}", self.warehouse, self.table)
    }

    /// Whether `location` (as an engine spelled it) is this lake's table location.
    pub fn is_table_location(&self, location: &str) -> bool {
        crate::lake::normalize_location(location)
            == crate::lake::normalize_location(&self.table_location())
    }

    /// The lake as a URI.
    pub fn warehouse(&self) -> &str {
        &self.warehouse
    }

    pub fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    /// Runs one storage operation of the table (`op` says which, for the error) for at most
    /// the lake timeout ([`crate::lake::request_bound`], `EXPORT_LAKE_TIMEOUT`), the same bound
    /// the object store's requests have: iceberg-rust's storage retries for ~50 s on its own,
    /// whatever the setting says.
    pub async fn within<T>(
        &self,
        op: &'static str,
        work: impl std::future::Future<Output = iceberg::Result<T>>,
    ) -> Result<T, SinkError> {
        bounded(op, &self.warehouse, work).await
    }

    /// A location inside the lake, relative to it (as `parquet_files.path` stores it), however
    /// its writer spelled it (`file:/...` or `file:///...`: [`crate::lake::normalize_location`]).
    pub fn relative(&self, location: &str) -> String {
        let (location, warehouse) = (
            crate::lake::normalize_location(location),
            crate::lake::normalize_location(&self.warehouse),
        );
        location
            .strip_prefix(&warehouse)
            .filter(|p| p.starts_with('/'))
            .map(|p| p.trim_start_matches('/').to_string())
            .unwrap_or(location)
    }

    /// The table, created (empty) if the catalog does not list it yet. Fails when the catalog's
    /// table lives somewhere other than this lake.
    pub async fn ensure_table(&self, pool: &PgPool) -> Result<Table, SinkError> {
        let mut conn = pool
            .acquire()
            .await
            .map_err(SinkError::pg("opening the Iceberg catalog"))?;
        if let Some(table) = self.load(&mut conn, false).await? {
            let table = self.check_location(table)?;
            if table
                .metadata()
                .current_schema()
                .field_by_id(SDKAPPID_FIELD)
                .is_none()
            {
                drop(conn);
                return self.add_sdkappid(pool).await;
            }
            return Ok(table);
        }
        drop(conn);
        self.create(pool).await?;
        // Created with its first schema, then evolved like a table of an older release: one
        // path for both.
        self.add_sdkappid(pool).await
    }

    /// Creates the table, empty, with its first schema (no `sdkappid`: an older release's
    /// table), unless another process created it meanwhile; refused over a table the lake
    /// holds ([`IcebergLake::check_creatable`]). [`IcebergLake::ensure_table`] evolves it.
    pub async fn create(&self, pool: &PgPool) -> Result<Table, SinkError> {
        self.check_creatable(pool).await?;
        let mut conn = pool
            .acquire()
            .await
            .map_err(SinkError::pg("opening the Iceberg catalog"))?;
        let (location, metadata) = self.first_metadata_of(first_schema())?;
        self.within(
            "writing the table's first metadata",
            metadata.write_to(&self.file_io, &location),
        )
        .await?;
        let inserted = insert_table(&mut conn, self.table, &location.to_string()).await?;
        if !inserted {
            // Another process created it meanwhile: ours is never referenced.
            let _ = self.file_io.delete(location.to_string()).await;
        }
        let table = self.load(&mut conn, false).await?.expect("just created");
        self.check_location(table)
    }

    /// The exporter's own schema evolution of a table created before apps: the optional field
    /// `sdkappid` (id 7) is added by one commit under the catalog row's lock, like a run's
    /// commit; files written before read null. An engine reading the table meanwhile sees the
    /// old schema or the new, never half of one.
    async fn add_sdkappid(&self, pool: &PgPool) -> Result<Table, SinkError> {
        use iceberg::transaction::{ApplyTransactionAction, Transaction};
        let mut tx = pool
            .begin()
            .await
            .map_err(SinkError::pg("opening the Iceberg catalog"))?;
        let table = commit::lock_table(self, &mut tx).await?;
        if table
            .metadata()
            .current_schema()
            .field_by_id(SDKAPPID_FIELD)
            .is_some()
        {
            return Ok(table);
        }
        let action = Transaction::new(&table).update_schema().add_column(
            iceberg::transaction::AddColumn::optional(
                "sdkappid",
                Type::Primitive(PrimitiveType::Long),
            ),
        );
        let itx = action
            .apply(Transaction::new(&table))
            .map_err(SinkError::iceberg("adding the column sdkappid"))?;
        let staged = commit::Staging::stage(&table, itx).await?;
        let added = staged.metadata().current_schema().field_by_name("sdkappid");
        if added.map(|f| f.id) != Some(SDKAPPID_FIELD) {
            return Err(SinkError::IcebergState(format!(
                "adding the column sdkappid gave it the field id {:?}, not {SDKAPPID_FIELD}: the table's columns were changed by another engine",
                added.map(|f| f.id)
            )));
        }
        commit::move_pointer(&mut tx, &table, &staged).await?;
        tx.commit()
            .await
            .map_err(SinkError::pg("committing the schema change"))?;
        tracing::info!(
            "the Iceberg table receipts.{TABLE} gained the column sdkappid (field {SDKAPPID_FIELD}): rows written before read null"
        );
        Ok(staged)
    }

    /// The metadata of the empty table at this lake's table location, and its metadata file's
    /// location (nothing written).
    pub fn first_metadata(&self) -> Result<(MetadataLocation, TableMetadata), SinkError> {
        self.first_metadata_of(table_schema())
    }

    fn first_metadata_of(
        &self,
        schema: Schema,
    ) -> Result<(MetadataLocation, TableMetadata), SinkError> {
        self.first_metadata_with(schema, partition_spec())
    }

    /// The metadata of a new, empty table of this handle's name with `schema` and `spec`, and
    /// its metadata file's location (nothing written).
    pub fn first_metadata_with(
        &self,
        schema: Schema,
        spec: UnboundPartitionSpec,
    ) -> Result<(MetadataLocation, TableMetadata), SinkError> {
        let creation = TableCreation::builder()
            .name(self.table.to_string())
            .location(self.table_location())
            .schema(schema)
            .partition_spec(spec)
            .properties(table_properties())
            .build();
        let metadata = TableMetadataBuilder::from_table_creation(creation)
            .and_then(|b| b.build())
            .map_err(SinkError::iceberg("building the table's first metadata"))?
            .metadata;
        let location = MetadataLocation::new_with_metadata(self.table_location(), &metadata);
        Ok((location, metadata))
    }

    /// Checks, changing nothing, that the table the catalog lists (if any) is in this lake: a run
    /// refuses a wrong lake before it starts (exit 2), not half-way. (Whether a missing table
    /// may be created is asked once the lake is known to be this database's:
    /// [`IcebergLake::check_creatable`], when the table is opened.)
    pub async fn check_catalog(&self, pool: &PgPool) -> Result<(), SinkError> {
        let mut conn = pool
            .acquire()
            .await
            .map_err(SinkError::pg("opening the Iceberg catalog"))?;
        match self.load(&mut conn, false).await? {
            Some(table) => self.check_location(table).map(drop),
            None => Ok(()),
        }
    }

    /// Refuses to create the table, which the catalog lacks, over one the lake holds: when the
    /// manifest lists data files committed to it, or its `metadata/` holds a metadata file past
    /// a new table's first (another engine dropped the table from the catalog and kept its
    /// files: pyiceberg's `drop_table`, Spark's `DROP TABLE` without `PURGE`). Creating it again
    /// would hide every row committed before, and `iceberg maintain` would then delete their
    /// files as orphans. The error says how to register the table again. (A first metadata
    /// file alone is what a creation interrupted before its catalog row leaves: no row is lost.)
    pub async fn check_creatable(&self, pool: &PgPool) -> Result<(), SinkError> {
        let table = self.relative(&self.table_location());
        let committed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM receipts.parquet_files WHERE starts_with(path, $1)",
        )
        .bind(format!("{table}/"))
        .fetch_one(pool)
        .await
        .map_err(SinkError::pg("reading the manifest"))?;
        let mut versions: Vec<(u64, String)> =
            crate::sink::objects::list(&self.lake, &format!("{table}/metadata"))
                .await?
                .into_iter()
                .filter_map(|e| Some((metadata_version(&e.relative)?, e.relative)))
                .collect();
        versions.sort();
        let newest = versions.last();
        if committed == 0 && newest.is_none_or(|(version, _)| *version == 0) {
            return Ok(());
        }
        Err(SinkError::TableDropped {
            table: self.table_location(),
            committed,
            newest: newest.map(|(_, rel)| format!("{}/{rel}", self.warehouse)),
        })
    }

    /// The table, unless it lives elsewhere than this lake; the snapshots' also in the
    /// exporter's shape ([`shape::check`]).
    pub(crate) fn check_location(&self, table: Table) -> Result<Table, SinkError> {
        let found = table.metadata().location().trim_end_matches('/');
        if !self.is_table_location(found) {
            return Err(SinkError::IcebergElsewhere {
                found: found.to_string(),
                configured: self.table_location(),
            });
        }
        if self.table == TABLE {
            shape::check(&table)?;
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
        let Some(location) = metadata_location(conn, self.table, for_update).await? else {
            return Ok(None);
        };
        let metadata = self
            .within(
                "reading the table's metadata",
                TableMetadata::read_from(&self.file_io, &location),
            )
            .await?;
        self.table(location, metadata).map(Some)
    }

    /// A table handle for metadata already read.
    pub fn table(&self, location: String, metadata: TableMetadata) -> Result<Table, SinkError> {
        MetadataLocation::from_str(&location).map_err(SinkError::iceberg(
            "parsing the catalog's metadata location",
        ))?;
        Table::builder()
            .file_io(self.file_io.clone())
            .identifier(TableIdent::from_strs([NAMESPACE, self.table]).expect("a valid name"))
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
    /// Whether the catalog lists the table (false: `table` is the empty table a run would
    /// create, nothing of it written).
    pub listed: bool,
}

impl IcebergTarget {
    /// Opens the table in the lake, creating it when the catalog lacks it.
    pub async fn open(lake: &crate::lake::Lake, pool: &PgPool) -> Result<IcebergTarget, SinkError> {
        let lake = IcebergLake::new(lake)?;
        let table = lake.ensure_table(pool).await?;
        Ok(IcebergTarget {
            lake,
            table,
            listed: true,
        })
    }

    /// The table in the lake as the catalog lists it, changing nothing: when the catalog lacks
    /// it, the empty table the first run would create there (nothing written). Fails when the
    /// catalog's table lives somewhere other than this lake.
    pub async fn peek(lake: &crate::lake::Lake, pool: &PgPool) -> Result<IcebergTarget, SinkError> {
        let lake = IcebergLake::new(lake)?;
        let mut conn = pool
            .acquire()
            .await
            .map_err(SinkError::pg("opening the Iceberg catalog"))?;
        let (table, listed) = match lake.load(&mut conn, false).await? {
            Some(table) => (lake.check_location(table)?, true),
            None => {
                lake.check_creatable(pool).await?;
                let (location, metadata) = lake.first_metadata()?;
                (lake.table(location.to_string(), metadata)?, false)
            }
        };
        Ok(IcebergTarget {
            lake,
            table,
            listed,
        })
    }

    /// A writer for one run's data files, each recorded as pending under `fence` before it is
    /// written ([`pending`]).
    pub fn run_writer(
        &self,
        pool: &PgPool,
        fence: crate::sink::Fence,
        next_part: i32,
    ) -> Result<writer::RunIceberg, SinkError> {
        writer::RunIceberg::new(
            self.lake.clone(),
            self.table.clone(),
            pool.clone(),
            fence,
            next_part,
        )
    }

    /// The data directory of a capture date, relative to the lake:
    /// `receipts/receipt_snapshots/data/captured_at_day=YYYY-MM-DD`.
    pub fn data_dir(&self, date: chrono::NaiveDate) -> String {
        format!(
            "{}/data/{PARTITION_FIELD}={}",
            self.lake.relative(&self.lake.table_location()),
            date.format("%Y-%m-%d")
        )
    }
}

/// Runs one storage operation on `lake` (for the error) for at most the lake timeout
/// ([`crate::lake::request_bound`]): [`IcebergLake::within`], and the commits' staging, which
/// has the table but not the lake.
pub async fn bounded<T>(
    op: &'static str,
    lake: &str,
    work: impl std::future::Future<Output = iceberg::Result<T>>,
) -> Result<T, SinkError> {
    let bound = crate::lake::request_bound();
    match tokio::time::timeout(bound, work).await {
        Ok(done) => done.map_err(SinkError::iceberg(op)),
        Err(_) => Err(SinkError::LakeTimeout {
            op,
            lake: lake.to_string(),
            bound,
        }),
    }
}

/// The version of a metadata file (`.../metadata/00003-<uuid>.metadata.json`: 3), or `None` for
/// any other file.
fn metadata_version(path: &str) -> Option<u64> {
    let name = path.rsplit('/').next()?.strip_suffix(".metadata.json")?;
    let (version, _) = name.split_once('-')?;
    version.parse().ok()
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

/// The FileIO properties (`s3.*`) from the standard AWS variables, as the lake's object store
/// reads them ([`crate::lake::S3Env`]; the endpoint was checked when the lake was opened): an
/// endpoint of an S3-compatible server is addressed path-style.
pub fn s3_properties(env: &crate::lake::S3Env) -> Vec<(String, String)> {
    let mut props = Vec::new();
    let mut put = |key: &str, value: Option<&str>| {
        if let Some(v) = value {
            props.push((key.to_string(), v.to_string()));
        }
    };
    put("s3.access-key-id", env.access_key_id.as_deref());
    put(
        "s3.secret-access-key",
        env.secret_access_key.as_ref().map(|s| s.expose()),
    );
    put(
        "s3.session-token",
        env.session_token.as_ref().map(|s| s.expose()),
    );
    put("s3.region", env.region.as_deref());
    if let Some(endpoint) = env.endpoint.as_deref() {
        put("s3.endpoint", Some(endpoint));
        put("s3.path-style-access", Some("true"));
    }
    props
}

async fn metadata_location(
    conn: &mut PgConnection,
    table: &str,
    for_update: bool,
) -> Result<Option<String>, SinkError> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let location: Option<Option<String>> = sqlx::query_scalar(&format!(
        "SELECT metadata_location FROM receipts.iceberg_tables
         WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3{lock}"
    ))
    .bind(CATALOG)
    .bind(NAMESPACE)
    .bind(table)
    .fetch_optional(conn)
    .await
    .map_err(SinkError::pg("reading the Iceberg catalog"))?;
    Ok(location.flatten())
}

/// Lists the new table `table` in the catalog; false when it is listed already.
pub(crate) async fn insert_table(
    conn: &mut PgConnection,
    table: &str,
    location: &str,
) -> Result<bool, SinkError> {
    let done = sqlx::query(
        "INSERT INTO receipts.iceberg_tables
           (catalog_name, table_namespace, table_name, metadata_location, iceberg_type)
         VALUES ($1, $2, $3, $4, 'TABLE') ON CONFLICT DO NOTHING",
    )
    .bind(CATALOG)
    .bind(NAMESPACE)
    .bind(table)
    .bind(location)
    .execute(conn)
    .await
    .map_err(SinkError::pg("listing the Iceberg table in the catalog"))?;
    Ok(done.rows_affected() == 1)
}

/// Moves the catalog pointer of `table` from `old` to `new` (compare-and-set, as Iceberg's JDBC
/// catalog does); false when the pointer is no longer at `old`.
pub(crate) async fn swap_pointer(
    conn: &mut PgConnection,
    table: &str,
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
    .bind(table)
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

    #[test]
    fn metadata_files_are_known_by_their_version() {
        assert_eq!(
            metadata_version("t/metadata/00003-ab-cd.metadata.json"),
            Some(3)
        );
        assert_eq!(metadata_version("00000-x.metadata.json"), Some(0));
        assert_eq!(metadata_version("t/metadata/snap-1-1-x.avro"), None);
        assert_eq!(metadata_version("t/metadata/x.metadata.json"), None);
    }

    #[test]
    fn aws_variables_become_s3_properties() {
        let env = crate::lake::S3Env {
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: Some("eu-west-1".into()),
            allow_http: true,
            access_key_id: Some("ak".into()),
            secret_access_key: Some(crate::secret::Secret::new("sk")),
            session_token: None,
        };
        let props = s3_properties(&env);
        let get = |k: &str| props.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
        assert_eq!(get("s3.access-key-id"), Some("ak"));
        assert_eq!(get("s3.secret-access-key"), Some("sk"));
        assert_eq!(get("s3.region"), Some("eu-west-1"));
        assert_eq!(get("s3.endpoint"), Some("http://127.0.0.1:9000"));
        assert_eq!(get("s3.path-style-access"), Some("true"));
        assert_eq!(get("s3.session-token"), None);
        let plain = s3_properties(&crate::lake::S3Env::default());
        assert!(plain.is_empty(), "{plain:?}");
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

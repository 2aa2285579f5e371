//! The commit: a finished data file enters the table and the manifest in one Postgres
//! transaction.
//!
//! In that transaction: the run's fence is checked (locking the run's row), the catalog row is
//! locked (`FOR UPDATE`: our commits queue, an engine's compare-and-set waits), the table is
//! read where the pointer says, iceberg-rust's fast append writes the manifest, manifest list
//! and next metadata file (through [`Staging`], a catalog that only stages), the pointer moves
//! by compare-and-set, and the file is recorded in `receipts.parquet_files` with its batches
//! marked. A commit whose outcome was lost (the connection died at COMMIT) is recognised on
//! retry by the manifest row of its file and not repeated; each snapshot's summary also names
//! its run, part and file, for engines and for `iceberg maintain`.

use super::writer::FinishedFile;
use super::{IcebergLake, SUMMARY_FILE, SUMMARY_PART, SUMMARY_RUN_ID};
use crate::sink::parquet::CommittedFile;
use crate::sink::{fence, Fence, SinkError};
use async_trait::async_trait;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{
    Catalog, Error, ErrorKind, Namespace, NamespaceIdent, Result as IcebergResult, TableCommit,
    TableCreation, TableIdent,
};
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// A catalog that serves one table as loaded and stages commits: `update_table` applies the
/// commit and writes the new metadata file (unless it only previews), but moves no pointer (the
/// caller does, inside its own transaction). Everything else is refused.
#[derive(Debug)]
pub struct Staging {
    base: Table,
    staged: Mutex<Option<Table>>,
    /// Whether `update_table` writes the new metadata file (false: in memory only).
    write: bool,
}

impl Staging {
    pub fn new(base: Table) -> Staging {
        Staging {
            base,
            staged: Mutex::new(None),
            write: true,
        }
    }

    /// Runs the transaction against the table as loaded; returns the staged table (its
    /// metadata file written, not yet pointed to).
    pub async fn stage(base: &Table, tx: Transaction) -> Result<Table, SinkError> {
        Staging::run(Staging::new(base.clone()), tx).await
    }

    /// The table the transaction would make of the table as loaded, in memory only: nothing is
    /// written (its metadata location names no file yet).
    pub async fn preview(base: &Table, tx: Transaction) -> Result<Table, SinkError> {
        let staging = Staging {
            write: false,
            ..Staging::new(base.clone())
        };
        Staging::run(staging, tx).await
    }

    async fn run(staging: Staging, tx: Transaction) -> Result<Table, SinkError> {
        // Manifests, manifest list and metadata file are written here: bounded like every
        // request to the lake.
        let location = staging.base.metadata().location().to_string();
        super::bounded("preparing a commit", &location, tx.commit(&staging)).await?;
        let staged = staging.staged.lock().unwrap().take();
        Ok(staged.unwrap_or_else(|| staging.base.clone()))
    }
}

fn unsupported<T>() -> IcebergResult<T> {
    Err(Error::new(
        ErrorKind::FeatureUnsupported,
        "the staging catalog serves one table's commits only",
    ))
}

#[async_trait]
impl Catalog for Staging {
    async fn list_namespaces(
        &self,
        _: Option<&NamespaceIdent>,
    ) -> IcebergResult<Vec<NamespaceIdent>> {
        unsupported()
    }
    async fn create_namespace(
        &self,
        _: &NamespaceIdent,
        _: HashMap<String, String>,
    ) -> IcebergResult<Namespace> {
        unsupported()
    }
    async fn get_namespace(&self, _: &NamespaceIdent) -> IcebergResult<Namespace> {
        unsupported()
    }
    async fn namespace_exists(&self, _: &NamespaceIdent) -> IcebergResult<bool> {
        unsupported()
    }
    async fn update_namespace(
        &self,
        _: &NamespaceIdent,
        _: HashMap<String, String>,
    ) -> IcebergResult<()> {
        unsupported()
    }
    async fn drop_namespace(&self, _: &NamespaceIdent) -> IcebergResult<()> {
        unsupported()
    }
    async fn list_tables(&self, _: &NamespaceIdent) -> IcebergResult<Vec<TableIdent>> {
        unsupported()
    }
    async fn create_table(&self, _: &NamespaceIdent, _: TableCreation) -> IcebergResult<Table> {
        unsupported()
    }
    async fn load_table(&self, _: &TableIdent) -> IcebergResult<Table> {
        Ok(self.base.clone())
    }
    async fn drop_table(&self, _: &TableIdent) -> IcebergResult<()> {
        unsupported()
    }
    async fn purge_table(&self, _: &TableIdent) -> IcebergResult<()> {
        unsupported()
    }
    async fn table_exists(&self, table: &TableIdent) -> IcebergResult<bool> {
        Ok(table == self.base.identifier())
    }
    async fn rename_table(&self, _: &TableIdent, _: &TableIdent) -> IcebergResult<()> {
        unsupported()
    }
    async fn register_table(&self, _: &TableIdent, _: String) -> IcebergResult<Table> {
        unsupported()
    }
    async fn update_table(&self, commit: TableCommit) -> IcebergResult<Table> {
        let staged = commit.apply(self.base.clone())?;
        if self.write {
            let location: iceberg::MetadataLocation = staged.metadata_location_result()?.parse()?;
            staged
                .metadata()
                .write_to(staged.file_io(), &location)
                .await?;
        }
        *self.staged.lock().unwrap() = Some(staged.clone());
        Ok(staged)
    }
}

/// Commits a finished data file to the table and records it in the manifest, in one
/// transaction under the run's fence. Connection failures are retried for up to `bound`; a
/// retry after a commit whose outcome was lost finds the file recorded and does nothing.
pub async fn publish(
    pool: &PgPool,
    lake: &IcebergLake,
    fence: Fence,
    file: &FinishedFile,
    bound: Duration,
) -> Result<CommittedFile, SinkError> {
    crate::crashpoint::hit("iceberg_before_commit").await;
    crate::sink::postgres::retry_for(bound, SinkError::is_retryable, || {
        publish_once(pool, lake, fence, file)
    })
    .await?;
    crate::crashpoint::hit("iceberg_after_commit").await;
    Ok(file.info.clone())
}

async fn publish_once(
    pool: &PgPool,
    lake: &IcebergLake,
    fence: Fence,
    file: &FinishedFile,
) -> Result<(), SinkError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting an Iceberg commit"))?;
    fence::check(&mut tx, fence).await?;
    if recorded(&mut tx, &file.info.relative_path).await? {
        tx.commit()
            .await
            .map_err(SinkError::pg("ending an Iceberg commit"))?;
        return Ok(()); // an earlier attempt committed: never twice
    }
    let base = lock_table(lake, &mut tx).await?;
    check_file(lake, fence.run_id, file).await?;
    let summary = HashMap::from([
        (SUMMARY_RUN_ID.to_string(), fence.run_id.to_string()),
        (SUMMARY_PART.to_string(), file.info.part.to_string()),
        (SUMMARY_FILE.to_string(), file.info.relative_path.clone()),
    ]);
    let itx = Transaction::new(&base);
    let itx = itx
        .fast_append()
        .add_data_files([file.data_file.clone()])
        .set_snapshot_properties(summary)
        .apply(itx)
        .map_err(SinkError::iceberg("preparing a commit"))?;
    let staged = Staging::stage(&base, itx).await?;
    crate::crashpoint::hit("iceberg_metadata_written").await;
    move_pointer(&mut tx, &base, &staged).await?;
    crate::sink::manifest::record_file_in(&mut tx, fence.run_id, &file.info).await?;
    super::pending::forget_in(&mut tx, file.data_file.file_path()).await?;
    tx.commit()
        .await
        .map_err(SinkError::pg("committing to the Iceberg table"))?;
    Ok(())
}

/// Refuses to commit a data file that is not in the lake as it was written (deleted or cut
/// short by another hand since: a lifecycle rule, an operator, an orphan sweep that did not
/// know the file): a commit naming it would make the table unreadable to every engine. The
/// run fails; its batches stay unexported in the manifest, and the next run's repair writes
/// them again.
async fn check_file(lake: &IcebergLake, run_id: i64, file: &FinishedFile) -> Result<(), SinkError> {
    let path = file.data_file.file_path();
    let expected = file.data_file.file_size_in_bytes();
    const OP: &str = "checking a data file before its commit";
    let input = lake
        .file_io()
        .new_input(path)
        .map_err(SinkError::iceberg(OP))?;
    let found = match lake.within(OP, input.exists()).await? {
        false => None,
        true => Some(lake.within(OP, input.metadata()).await?.size),
    };
    if found == Some(expected) {
        return Ok(());
    }
    let what = match found {
        None => "is gone".to_string(),
        Some(size) => format!("holds {size} bytes, not the {expected} written"),
    };
    Err(SinkError::IcebergState(format!(
        "data file {path} of run {run_id} {what}: something outside the exporter changed it before its commit (a lifecycle rule, an operator, another engine's orphan sweep). Nothing was committed; the next run's repair writes its rows again from Postgres"
    )))
}

/// The table as the catalog points to it now, its row locked (`FOR UPDATE`) until the end of the
/// caller's transaction: what a commit builds on. Our commits queue on that lock; another
/// engine's compare-and-set waits for it.
pub async fn lock_table(lake: &IcebergLake, tx: &mut PgConnection) -> Result<Table, SinkError> {
    let table = lake.load(tx, true).await?.ok_or_else(|| {
        let again = match lake.table_name() {
            super::TABLE => "The next run says how to register it again",
            _ => "`receipt-exporter lake verify --repair` creates it again from Postgres",
        };
        SinkError::IcebergState(format!(
            "the Iceberg table receipts.{} is not in the catalog (receipts.iceberg_tables): was it \
             dropped? {again} (a table is never created over one the lake holds)",
            lake.table_name()
        ))
    })?;
    // The snapshots' table is checked to be the exporter's shape; the read progress's is its
    // alone (no schema of it evolves).
    if lake.table_name() == super::TABLE {
        super::shape::check(&table)?;
    }
    Ok(table)
}

/// Moves the catalog pointer from `base`'s metadata file to `staged`'s (compare-and-set, as
/// Iceberg's JDBC catalog does), inside the caller's transaction, which holds the row's lock
/// ([`lock_table`]): every commit of ours, a run's or `iceberg maintain`'s, ends here.
pub async fn move_pointer(
    tx: &mut PgConnection,
    base: &Table,
    staged: &Table,
) -> Result<(), SinkError> {
    let pointer = |t: &Table| {
        t.metadata_location_result()
            .map(str::to_string)
            .map_err(SinkError::iceberg("reading the pointer"))
    };
    let (old, new) = (pointer(base)?, pointer(staged)?);
    let name = base.identifier().name();
    if !super::swap_pointer(tx, name, &old, &new).await? {
        return Err(SinkError::IcebergState(format!(
            "the Iceberg catalog pointer moved away from {old} while its row was locked"
        )));
    }
    Ok(())
}

/// Whether the manifest already lists the file (recorded by an earlier attempt).
async fn recorded(conn: &mut PgConnection, path: &str) -> Result<bool, SinkError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM receipts.parquet_files WHERE path = $1)")
        .bind(path)
        .fetch_one(conn)
        .await
        .map_err(SinkError::pg("looking up a data file in the manifest"))
}

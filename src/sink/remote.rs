//! The lake in an object store: how a run's file becomes visible without a rename, exactly
//! once for readers that list the tables' prefixes.
//!
//! 1. The sealed file (written to a local spool directory) is uploaded under
//!    `_pending/<table>/capture_date=D/run-<id>-<part>.<random>.parquet`: outside every table's
//!    prefix, so no reader of `receipt_snapshots/` sees it (and engines skip `_`-prefixed paths
//!    anyway). A PUT is atomic: a killed upload leaves nothing, or the whole pending object.
//! 2. One fenced transaction records the file, points its batches at it and sets its
//!    `pending_key` ([`manifest::record_pending`]). From here Postgres counts the rows as in the
//!    lake; no reader sees them yet.
//! 3. The pending object is copied server-side to the final key
//!    `<table>/capture_date=D/run-<id>-<part>.parquet` (one atomic object creation), then
//!    `pending_key` is cleared, then the pending object is deleted.
//!
//! So a final key appears only after its rows committed, holds exactly the batches its
//! manifest row names, and no two final keys hold the same batch (a batch points at one file).
//! A crash before 2 leaves an unrecorded pending object: the repair deletes it and writes the
//! batches anew. A crash after 2 leaves a recorded pending key: the repair ([`finish_uploads`])
//! copies it (the same bytes to the same key, however often), or, if the pending object is gone
//! and the final one missing, forgets the file so its batches are written again. A fenced
//! (taken-over) writer cannot record; its pending uploads are random-named strays the repair
//! deletes. The same protocol for every lake form is told in [`super::target`].

use super::manifest;
use super::parquet::{CommittedFile, PartitionWriter, SealedFile};
use super::{Fence, SinkError};
use crate::lake::Remote;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use sqlx::PgPool;

/// The prefix (under the lake's root) of uploads not yet committed.
pub const PENDING_DIR: &str = "_pending";

/// `_pending/<partition>/run-<id>-<part>.<random>.parquet` for a file of the manifest.
fn pending_relative(file: &CommittedFile) -> String {
    let (dir, name) = file
        .relative_path
        .rsplit_once('/')
        .expect("a file has a partition");
    format!("{PENDING_DIR}/{dir}/{}", super::names::pending(name))
}

/// The error of a request about `key`, as a [`SinkError::Store`] (its message one line).
pub fn store_err(
    op: &'static str,
    key: &ObjectPath,
) -> impl FnOnce(object_store::Error) -> SinkError {
    let key = key.to_string();
    move |error| SinkError::Store { op, key, error }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// Puts a run's sealed file into a lake in an object store (steps 1 to 3 above). Connection
/// failures of the record are retried for up to `bound`; the store client retries its own.
pub async fn publish(
    pool: &PgPool,
    remote: &Remote,
    fence: Fence,
    file: SealedFile,
    bound: std::time::Duration,
) -> Result<CommittedFile, SinkError> {
    let info = file.info().clone();
    let pending = pending_relative(&info);
    upload(remote, &file, &pending).await?;
    drop(file); // the spool copy: the pending object is the durable one now
    crate::crashpoint::hit("during_upload").await;
    let recorded = super::postgres::retry_for(bound, SinkError::is_retryable, || {
        manifest::record_pending(pool, fence, &info, &pending)
    })
    .await;
    let file_id = match recorded {
        Ok(id) => id,
        Err(e) => {
            // Not recorded (fenced, refused): the pending object is nobody's. Best effort; a
            // leftover is a stray the repair deletes.
            let _ = remote.store().delete(&remote.key(&pending)).await;
            return Err(e);
        }
    };
    crate::crashpoint::hit("after_manifest_commit").await;
    make_visible(pool, remote, file_id, &info.relative_path, &pending).await?;
    Ok(info)
}

/// Uploads the sealed file from the spool directory with one PUT.
async fn upload(remote: &Remote, file: &SealedFile, pending: &str) -> Result<(), SinkError> {
    let path = file
        .temp_path()
        .expect("a sealed file for an object store is in the spool");
    put_file(remote, path, pending).await
}

/// PUTs a local file at `relative` under the lake's root: one atomic object creation (an
/// object there is replaced whole). The file is read into memory: a part holds at most
/// `DEFAULT_MAX_ROWS_PER_FILE` rows, tens of MB.
pub async fn put_file(
    remote: &Remote,
    local: &std::path::Path,
    relative: &str,
) -> Result<(), SinkError> {
    let bytes = super::parquet::blocking({
        let path = local.to_path_buf();
        move || std::fs::read(&path)
    })
    .await
    .map_err(SinkError::io("reading the spooled file", local))?;
    let key = remote.key(relative);
    remote
        .store()
        .put(&key, PutPayload::from(bytes))
        .await
        .map_err(store_err("uploading", &key))?;
    Ok(())
}

/// Copies a recorded file's pending object to its final key, marks it in place, deletes the
/// pending object. Safe to repeat: the copy writes the same bytes to the same key.
async fn make_visible(
    pool: &PgPool,
    remote: &Remote,
    file_id: i64,
    relative_path: &str,
    pending: &str,
) -> Result<(), SinkError> {
    let (from, to) = (remote.key(pending), remote.key(relative_path));
    match remote.store().copy(&from, &to).await {
        Ok(()) => {}
        // Copied and deleted by another attempt (a repair racing a slow writer): in place.
        Err(e) if is_not_found(&e) && remote.store().head(&to).await.is_ok() => {}
        Err(e) => return Err(store_err("copying into place", &to)(e)),
    }
    crate::crashpoint::hit("after_copy").await;
    manifest::clear_pending(pool, file_id).await?;
    match remote.store().delete(&from).await {
        Err(e) if !is_not_found(&e) => Err(store_err("deleting", &from)(e)),
        _ => Ok(()),
    }
}

/// Finishes the run's recorded uploads, as the run's owner (`fence`): copies each recorded
/// pending object to its final key, or forgets a file whose pending object is lost and whose
/// final object is missing (its batches are then written anew). Its stray objects (unrecorded
/// uploads, final keys the manifest does not list) are the caller's sweep
/// (`LakeTarget::rebuild_run`).
pub async fn finish_uploads(pool: &PgPool, remote: &Remote, fence: Fence) -> Result<(), SinkError> {
    for file in manifest::pending_files(pool, fence.run_id).await? {
        let pending = remote.key(&file.pending_key);
        match remote.store().head(&pending).await {
            Ok(_) => {
                crate::crashpoint::hit("during_repair").await;
                make_visible(pool, remote, file.file_id, &file.path, &file.pending_key).await?;
                tracing::info!(path = %file.path, "finished copying a committed Parquet file into place");
            }
            Err(e) if is_not_found(&e) => {
                if remote.store().head(&remote.key(&file.path)).await.is_ok() {
                    manifest::clear_pending(pool, file.file_id).await?;
                } else {
                    manifest::drop_file(pool, fence, file.file_id).await?;
                    tracing::warn!(path = %file.path, "a committed Parquet file's upload is lost: its rows are written again from Postgres");
                }
            }
            Err(e) => return Err(store_err("looking up", &pending)(e)),
        }
    }
    Ok(())
}

/// One listing of the lake's root (one request): whether the store answers.
pub async fn answers(remote: &Remote) -> Result<(), SinkError> {
    let root = remote.key("");
    remote
        .store()
        .list_with_delimiter(Some(&root))
        .await
        .map_err(store_err("listing", &root))?;
    Ok(())
}

/// Writes a listed snapshot file again from Postgres under its own key: the rows of exactly the
/// batches the manifest points at it, in one PUT (readers see the old object or the new one,
/// never both; no other object holds those batches). Returns its rows. The caller holds the
/// warehouse lock.
pub async fn rewrite_file(
    pool: &PgPool,
    remote: &Remote,
    relative_path: &str,
) -> Result<u64, SinkError> {
    let file = manifest::recorded_file(pool, relative_path)
        .await?
        .ok_or_else(|| SinkError::NotListed {
            path: relative_path.to_string(),
        })?;
    let spool = crate::files::spool_dir().map_err(SinkError::io(
        "creating a spool directory in",
        std::env::temp_dir(),
    ))?;
    let mut writer =
        PartitionWriter::open_in(spool.path(), file.run_id, file.capture_date, file.part)?;
    let mut cursor = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting the file's read"))?;
    manifest::declare_file_rows(&mut cursor, &file).await?;
    let mut batches = manifest::CursorBatches::default();
    while let Some(batch) = batches.next(&mut cursor).await? {
        writer.append(&batch)?;
    }
    let _ = cursor.rollback().await;
    if writer.row_count() != file.row_count as u64 {
        return Err(SinkError::InvalidBatch {
            run_id: file.run_id,
            batch_no: 0,
            reason: format!(
                "{relative_path} is listed with {} rows but its batches hold {} in Postgres",
                file.row_count,
                writer.row_count()
            ),
        });
    }
    let sealed = super::parquet::blocking(move || writer.seal()).await?;
    let size = sealed.info().byte_size;
    let local = sealed.temp_path().expect("sealed in the spool");
    put_file(remote, local, relative_path).await?;
    manifest::rewritten(pool, file.file_id, size).await?;
    if let Some(pending) = &file.pending_key {
        // Its copy is no longer needed: the final object was just written.
        let key = remote.key(pending);
        match remote.store().delete(&key).await {
            Err(e) if !is_not_found(&e) => return Err(store_err("deleting", &key)(e)),
            _ => {}
        }
    }
    Ok(file.row_count as u64)
}

/// `export parquet` in an object store, where a day cannot be swapped atomically: every file the
/// manifest lists for the capture dates from `since` to `until` is written again from Postgres
/// under its own key ([`rewrite_file`]). Returns, per day, its files and rows.
pub async fn rewrite_days(
    pool: &PgPool,
    remote: &Remote,
    since: chrono::NaiveDate,
    until: chrono::NaiveDate,
) -> Result<Vec<(chrono::NaiveDate, usize, u64)>, SinkError> {
    let mut days = Vec::new();
    for (day, paths) in manifest::listed_between(pool, since, until).await? {
        let mut rows = 0;
        for path in &paths {
            rows += rewrite_file(pool, remote, path).await?;
        }
        days.push((day, paths.len(), rows));
    }
    Ok(days)
}

//! Listing and removing the files under the table's location, which iceberg-rust's FileIO
//! cannot list: through object_store, on the local file system or S3 (configured from the same
//! AWS variables as the FileIO). For orphan removal ([`crate::ops::iceberg`]) and a run's
//! repair ([`remove_run_strays`]).

use super::IcebergLake;
use crate::sink::SinkError;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use std::collections::HashSet;
use std::sync::Arc;

/// A file under the table: its full location (as Iceberg metadata names it) and its age.
#[derive(Debug, Clone)]
pub struct Listed {
    pub location: String,
    pub last_modified: DateTime<Utc>,
}

fn listing_error(location: &str) -> impl FnOnce(object_store::Error) -> SinkError + '_ {
    move |e| SinkError::IcebergState(format!("could not list the files under {location}: {e}"))
}

/// Every file under `location`, a directory of the lake (`file:///...` or `s3://...`): on the
/// local disk through object_store's local store, in S3 through the lake's own store.
pub async fn list(lake: &IcebergLake, location: &str) -> Result<Vec<Listed>, SinkError> {
    let (store, prefix, base): (Arc<dyn ObjectStore>, Option<ObjectPath>, String) =
        if let Some(path) = location.strip_prefix("file://") {
            if !std::path::Path::new(path).exists() {
                return Ok(Vec::new());
            }
            let store = object_store::local::LocalFileSystem::new_with_prefix(path)
                .map_err(listing_error(location))?;
            (Arc::new(store), None, location.to_string())
        } else {
            let remote = lake.lake().remote().ok_or_else(|| {
                SinkError::IcebergState(format!("cannot list {location}: not in the lake"))
            })?;
            let (scheme, rest) = location.split_once("://").unwrap_or(("s3", location));
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            let prefix = (!key.is_empty()).then(|| ObjectPath::from(key));
            (
                remote.store().clone(),
                prefix,
                format!("{scheme}://{bucket}"),
            )
        };
    let objects: Vec<object_store::ObjectMeta> = store
        .list(prefix.as_ref())
        .try_collect()
        .await
        .map_err(listing_error(location))?;
    Ok(objects
        .into_iter()
        .map(|o| Listed {
            location: format!("{}/{}", base.trim_end_matches('/'), o.location),
            last_modified: o.last_modified,
        })
        .collect())
}

/// Removes the run's data files that no commit names (left by a crash between writing a file
/// and its commit): the caller holds the run's fence, so no writer of the run can commit them
/// any more. Looks in the partitions of the run's capture `dates`; `known` holds the run's
/// files the manifest lists (relative to the lake).
pub async fn remove_run_strays(
    lake: &IcebergLake,
    run_id: i64,
    dates: &[chrono::NaiveDate],
    known: &HashSet<String>,
) -> Result<Vec<String>, SinkError> {
    let mut listed = Vec::new();
    for date in dates {
        let dir = format!(
            "{}/data/{}={}",
            lake.table_location(),
            super::PARTITION_FIELD,
            date.format("%Y-%m-%d")
        );
        listed.extend(list(lake, &dir).await?);
    }
    let mut removed = Vec::new();
    for file in listed {
        let name = file.location.rsplit('/').next().unwrap_or_default();
        if super::writer::is_run_file(name, run_id)
            && !known.contains(&lake.relative(&file.location))
        {
            lake.file_io()
                .delete(&file.location)
                .await
                .map_err(SinkError::iceberg("removing a data file no commit names"))?;
            removed.push(file.location);
        }
    }
    Ok(removed)
}

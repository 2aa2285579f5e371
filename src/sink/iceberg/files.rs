//! Listing the files under the table's location, which iceberg-rust's FileIO cannot list:
//! through the lake's own listing ([`crate::sink::objects`]), on the local disk or in S3, each
//! file named as Iceberg metadata names it. For orphan removal ([`crate::ops::iceberg`]).

use super::IcebergLake;
use crate::sink::SinkError;
use chrono::{DateTime, Utc};

/// A file under the table: its full location (as Iceberg metadata names it) and its age.
#[derive(Debug, Clone)]
pub struct Listed {
    pub location: String,
    pub last_modified: DateTime<Utc>,
}

/// Every file under the table's location.
pub async fn list_table(lake: &IcebergLake) -> Result<Vec<Listed>, SinkError> {
    let table = lake.relative(&lake.table_location());
    let entries = crate::sink::objects::list(lake.lake(), &table).await?;
    Ok(entries
        .into_iter()
        .map(|e| Listed {
            location: format!("{}/{}", lake.warehouse(), e.relative),
            last_modified: e.modified,
        })
        .collect())
}

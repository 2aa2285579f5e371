//! One owner per lake. Two databases writing one lake overwrite each other's files (run 3 of
//! one and run 3 of the other share a final name), and one database's `iceberg maintain` or
//! repair deletes the other's files as strays. So the lake names its database in a marker,
//! [`MARKER`] at the lake's root (`$EXPORT_PARQUET_DIR/_receipt_exporter.json`: outside the
//! Iceberg table's location, so no orphan sweep, ours or another engine's, ever takes it), in
//! every form: Hive-style or Iceberg, on the local disk or in an object store.
//!
//! The first command that writes the lake claims it: the marker is created only if absent
//! (`O_EXCL` on the local disk, a conditional PUT in an object store), so of two databases
//! claiming at once one wins and the other reads the winner's marker. Every command that
//! writes, deletes or judges the lake reads the marker first (one read per process) and
//! refuses another database's, or a marker this exporter did not write, before it changes
//! anything: exit 2, naming both.

use super::remote::store_err;
use super::SinkError;
use crate::lake::{Lake, Remote};
use object_store::ObjectStoreExt;
use sqlx::PgPool;

/// The marker at the lake's root naming the database whose manifest the lake is.
pub const MARKER: &str = "_receipt_exporter.json";

/// The lake is not this database's: its marker names another, or nothing this exporter wrote.
#[derive(Debug, thiserror::Error)]
pub enum NotOurLake {
    #[error(
        "{location} is the lake of another database: its {MARKER} names {theirs}, this database \
         is {ours}; two databases in one lake overwrite each other's files: give this one a \
         location of its own (EXPORT_PARQUET_DIR), or, if that lake was moved here on purpose, \
         replace the marker"
    )]
    Another {
        location: String,
        theirs: String,
        ours: String,
    },
    #[error(
        "{location} has a {MARKER} that names no database ({found}), this database is {ours}: \
         it is not a marker this exporter wrote, so whose lake this is cannot be told; if the \
         lake is this database's, delete {marker} and run again (the next command that writes \
         the lake writes its own); otherwise give this database a location of its own \
         (EXPORT_PARQUET_DIR)"
    )]
    Unreadable {
        location: String,
        found: String,
        ours: String,
        marker: String,
    },
}

/// Checks that the lake is this database's: its marker names this database, or it has none
/// yet and `claim` writes one. In an object store this is the first request of a command, so
/// a store that does not answer, a missing bucket or refused credentials stop it here, before
/// a run spends any of the API's budget.
pub async fn check(pool: &PgPool, lake: &Lake, claim: bool) -> anyhow::Result<()> {
    let ours = warehouse_id(pool).await?;
    let found = loop {
        match read(lake).await? {
            Some(bytes) => break bytes,
            None if claim => {
                let body = serde_json::json!({
                    "warehouse": ours,
                    "written_by": "receipt-exporter",
                    "claimed_at": chrono::Utc::now().to_rfc3339(),
                });
                if create(lake, body.to_string().into_bytes()).await? {
                    return Ok(());
                }
                // Another database claimed it meanwhile: read its marker.
            }
            None => {
                if let Lake::Remote(remote) = lake {
                    super::remote::answers(remote).await?;
                }
                return Ok(());
            }
        }
    };
    let named = serde_json::from_slice::<serde_json::Value>(&found)
        .ok()
        .and_then(|v| v.get("warehouse")?.as_str().map(str::to_string));
    match named {
        Some(theirs) if theirs == ours => Ok(()),
        Some(theirs) => Err(NotOurLake::Another {
            location: lake.to_string(),
            theirs,
            ours,
        }
        .into()),
        None => Err(NotOurLake::Unreadable {
            location: lake.to_string(),
            found: shown(&found),
            ours,
            marker: lake.describe(MARKER),
        }
        .into()),
    }
}

/// At most 80 characters of a marker that is not ours, escaped onto one line.
fn shown(found: &[u8]) -> String {
    let text = String::from_utf8_lossy(found);
    let text = crate::untrusted::escape(text.trim());
    format!("'{}'", crate::untrusted::cut(&text, 80))
}

/// This database's name for itself: its name and when its first migration was applied (a
/// restored backup keeps it; another database, even of the same name, has another).
pub async fn warehouse_id(pool: &PgPool) -> Result<String, SinkError> {
    sqlx::query_scalar(
        r#"SELECT current_database() || '@' || to_char(installed_on AT TIME ZONE 'UTC',
                  'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
           FROM receipts._sqlx_migrations ORDER BY version LIMIT 1"#,
    )
    .fetch_one(pool)
    .await
    .map_err(SinkError::pg("reading the database's identity"))
}

/// The marker's bytes (`None`: no marker). On the local disk a link at its name is not
/// followed: it fails the read.
async fn read(lake: &Lake) -> Result<Option<Vec<u8>>, SinkError> {
    match lake {
        Lake::Local(root) => {
            use std::io::Read;
            let path = root.join(MARKER);
            let mut options = std::fs::OpenOptions::new();
            options.read(true);
            no_follow(&mut options);
            let mut bytes = Vec::new();
            match options.open(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(SinkError::io("reading", path)(e)),
                // A marker is a few hundred bytes: a huge file is not one, and is not read whole.
                Ok(file) => match file.take(64 * 1024).read_to_end(&mut bytes) {
                    Ok(_) => Ok(Some(bytes)),
                    Err(e) => Err(SinkError::io("reading", path)(e)),
                },
            }
        }
        Lake::Remote(remote) => read_remote(remote).await,
    }
}

async fn read_remote(remote: &Remote) -> Result<Option<Vec<u8>>, SinkError> {
    let key = remote.key(MARKER);
    match remote.store().get(&key).await {
        Ok(got) => {
            let bytes = got.bytes().await.map_err(store_err("reading", &key))?;
            Ok(Some(bytes.to_vec()))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_err("reading", &key)(e)),
    }
}

/// Creates the marker only if there is none (false: one appeared meanwhile).
async fn create(lake: &Lake, body: Vec<u8>) -> Result<bool, SinkError> {
    match lake {
        Lake::Local(root) => {
            use std::io::Write;
            std::fs::create_dir_all(root).map_err(SinkError::io("creating", root))?;
            let path = root.join(MARKER);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            no_follow(&mut options);
            let mut file = match options.open(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
                other => other.map_err(SinkError::io("creating", &path))?,
            };
            file.write_all(&body)
                .and_then(|()| file.sync_all())
                .map_err(SinkError::io("writing", &path))?;
            super::parquet::sync_dir(root)?;
            Ok(true)
        }
        Lake::Remote(remote) => {
            let key = remote.key(MARKER);
            let create = object_store::PutOptions::from(object_store::PutMode::Create);
            match remote.store().put_opts(&key, body.into(), create).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                Err(e) => Err(store_err("writing", &key)(e)),
            }
        }
    }
}

/// Opens without following a link at the name (`O_NOFOLLOW`).
fn no_follow(options: &mut std::fs::OpenOptions) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
}

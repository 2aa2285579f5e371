//! The lake's files as objects, wherever the lake is: list them (with size and age) and delete
//! them, by paths relative to the lake's root, on the local disk or in an object store. The
//! stray sweeps of every lake form, `lake verify`'s listings and `iceberg maintain`'s orphan
//! search all go through here, so they see the lake the same way. Listing never follows a
//! symbolic link (a link is not one of our files); a file deleted meanwhile is no error.

use super::remote::store_err;
use super::SinkError;
use crate::lake::Lake;
use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;
use std::path::Path;

/// A file under the lake's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the lake's root, with `/` separators.
    pub relative: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
}

impl Entry {
    /// True when no segment of its path starts with `.` or `_` (what engines read).
    pub fn is_visible(&self) -> bool {
        !self
            .relative
            .split('/')
            .any(|s| s.starts_with('.') || s.starts_with('_'))
    }
}

/// Every file under `relative_dir` (recursively, hidden ones too), sorted by path. A directory
/// that does not exist holds nothing.
pub async fn list(lake: &Lake, relative_dir: &str) -> Result<Vec<Entry>, SinkError> {
    let mut entries = match lake {
        Lake::Local(root) => {
            let (root, rel) = (root.clone(), relative_dir.trim_matches('/').to_string());
            super::parquet::blocking(move || list_local(&root, &rel)).await?
        }
        Lake::Remote(remote) => {
            use futures::TryStreamExt;
            let prefix = remote.key(relative_dir);
            let metas: Vec<object_store::ObjectMeta> = remote
                .store()
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(store_err("listing", &prefix))?;
            metas
                .into_iter()
                .filter_map(|m| {
                    Some(Entry {
                        relative: remote.relative(&m.location)?.to_string(),
                        size: m.size,
                        modified: m.last_modified,
                    })
                })
                .collect()
        }
    };
    entries.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(entries)
}

fn list_local(root: &Path, relative_dir: &str) -> Result<Vec<Entry>, SinkError> {
    let mut out = Vec::new();
    let mut dirs = vec![relative_dir.to_string()];
    while let Some(rel) = dirs.pop() {
        let dir = root.join(&rel);
        let read = match std::fs::read_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            other => other.map_err(SinkError::io("listing", &dir))?,
        };
        for entry in read {
            let entry = entry.map_err(SinkError::io("listing", &dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let child = match rel.is_empty() {
                true => name,
                false => format!("{rel}/{name}"),
            };
            let Ok(meta) = entry.metadata() else { continue }; // gone meanwhile
            if meta.is_dir() {
                dirs.push(child);
            } else if meta.is_file() {
                let modified = meta.modified().map(DateTime::<Utc>::from);
                out.push(Entry {
                    relative: child,
                    size: meta.len(),
                    modified: modified.unwrap_or(DateTime::<Utc>::MIN_UTC),
                });
            }
        }
    }
    Ok(out)
}

/// Deletes the files at `relatives`; a file already gone is fine. On the local disk the
/// directories that lost a file are fsynced, so the removals survive a crash.
pub async fn delete(lake: &Lake, relatives: &[String]) -> Result<(), SinkError> {
    match lake {
        Lake::Local(root) => {
            let (root, relatives) = (root.clone(), relatives.to_vec());
            super::parquet::blocking(move || {
                let mut dirs = std::collections::BTreeSet::new();
                for rel in &relatives {
                    let path = root.join(rel);
                    super::parquet::remove_if_present(&path)?;
                    dirs.insert(path.parent().expect("a file has a directory").to_path_buf());
                }
                dirs.iter().try_for_each(|d| super::parquet::sync_dir(d))
            })
            .await
        }
        Lake::Remote(remote) => {
            for rel in relatives {
                let key = remote.key(rel);
                match remote.store().delete(&key).await {
                    Err(e) if !matches!(e, object_store::Error::NotFound { .. }) => {
                        return Err(store_err("deleting", &key)(e))
                    }
                    _ => {}
                }
            }
            Ok(())
        }
    }
}

/// Puts a whole file at `relative`: readers see nothing of it, or all of it. On the local disk
/// it is written hidden beside its final name (created new under a random name, never through a
/// link), fsynced, renamed into place (replacing whatever is there: a planted link is replaced,
/// never followed) and its directory fsynced; in an object store it is written to a spool file
/// and PUT at its key, one atomic object creation. `fill` writes the bytes into the file it is
/// given and hands it back. Returns the file's size.
pub async fn put_whole(
    lake: &Lake,
    relative: &str,
    fill: impl FnOnce(std::fs::File) -> Result<std::fs::File, SinkError>,
) -> Result<u64, SinkError> {
    match lake {
        Lake::Local(root) => write_whole(&root.join(relative), fill),
        Lake::Remote(remote) => {
            let spool = crate::files::spool_dir().map_err(SinkError::io(
                "creating a spool directory in",
                std::env::temp_dir(),
            ))?;
            let local = spool.path().join("whole.parquet");
            let size = write_whole(&local, fill)?;
            super::remote::put_file(remote, &local, relative).await?;
            Ok(size)
        }
    }
}

/// Puts one record batch as a whole Parquet file (zstd) at `relative` ([`put_whole`]): the
/// per-run files of the read events and of the read progress. Returns its size.
pub async fn put_record_batch(
    lake: &Lake,
    relative: &str,
    batch: &arrow::array::RecordBatch,
) -> Result<u64, SinkError> {
    use parquet::basic::{Compression, ZstdLevel};
    put_whole(lake, relative, |file| {
        let parquet_err = |source| SinkError::Parquet {
            op: "writing",
            path: relative.into(),
            source,
        };
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props))
            .map_err(parquet_err)?;
        writer.write(batch).map_err(parquet_err)?;
        writer.into_inner().map_err(parquet_err)
    })
    .await
}

/// Writes `path` whole: hidden beside it, fsynced, renamed, the directory fsynced.
fn write_whole(
    path: &Path,
    fill: impl FnOnce(std::fs::File) -> Result<std::fs::File, SinkError>,
) -> Result<u64, SinkError> {
    let dir = path.parent().expect("a file has a directory");
    std::fs::create_dir_all(dir).map_err(SinkError::io("creating the directory", dir))?;
    let name = path.file_name().expect("a file name").to_string_lossy();
    let temp = crate::files::create_beside(dir, &format!(".{name}."), ".tmp")
        .map_err(SinkError::io("creating a temporary file beside", path))?;
    let file = temp
        .reopen()
        .map_err(SinkError::io("opening", temp.path()))?;
    let file = fill(file)?;
    file.sync_all()
        .map_err(SinkError::io("fsyncing", temp.path()))?;
    let size = file
        .metadata()
        .map_err(SinkError::io("reading the size of", temp.path()))?
        .len();
    drop(file);
    temp.persist(path)
        .map_err(|e| SinkError::io("renaming into place", path)(e.error))?;
    super::parquet::sync_dir(dir)?;
    Ok(size)
}

/// The files of `relatives` that are there now.
pub async fn still_there(lake: &Lake, relatives: Vec<String>) -> Result<Vec<String>, SinkError> {
    let mut there = Vec::new();
    for rel in relatives {
        let found = match lake {
            Lake::Local(root) => root.join(&rel).is_file(),
            Lake::Remote(remote) => {
                let key = remote.key(&rel);
                match remote.store().head(&key).await {
                    Ok(_) => true,
                    Err(object_store::Error::NotFound { .. }) => false,
                    Err(e) => return Err(store_err("looking up", &key)(e)),
                }
            }
        };
        if found {
            there.push(rel);
        }
    }
    Ok(there)
}

/// The row count a Parquet file's footer records (in an object store: two ranged reads, the
/// footer's length and the footer). The error is the reason, as text.
pub async fn parquet_rows(lake: &Lake, relative: &str, size: u64) -> Result<i64, String> {
    match lake {
        Lake::Local(root) => {
            let path = root.join(relative);
            let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
            let builder =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| e.to_string())?;
            Ok(builder.metadata().file_metadata().num_rows())
        }
        Lake::Remote(remote) => {
            let reader = parquet::arrow::async_reader::ParquetObjectReader::new(
                remote.store().clone(),
                remote.key(relative),
            )
            .with_file_size(size);
            let builder = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(|e| e.to_string())?;
            Ok(builder.metadata().file_metadata().num_rows())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_listing_is_recursive_sorted_and_skips_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("t/d=1")).unwrap();
        std::fs::write(root.join("t/d=1/b.parquet"), b"123").unwrap();
        std::fs::write(root.join("t/d=1/.a.tmp"), b"1").unwrap();
        std::fs::write(root.join("t/x"), b"").unwrap();
        std::os::unix::fs::symlink(root.join("t/x"), root.join("t/link")).unwrap();
        let lake = Lake::Local(root.to_path_buf());
        let found: Vec<(String, u64)> = list(&lake, "t")
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.relative, e.size))
            .collect();
        assert_eq!(
            found,
            [
                ("t/d=1/.a.tmp".to_string(), 1),
                ("t/d=1/b.parquet".to_string(), 3),
                ("t/x".to_string(), 0)
            ]
        );
        assert!(list(&lake, "missing").await.unwrap().is_empty());
        delete(&lake, &["t/d=1/b.parquet".into(), "t/gone".into()])
            .await
            .unwrap();
        assert!(!root.join("t/d=1/b.parquet").exists());
    }
}

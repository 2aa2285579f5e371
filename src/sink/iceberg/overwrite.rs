//! The table's live data files, and the one commit that replaces lost ones: an overwrite
//! snapshot written by hand, as iceberg-rust 0.10 has no overwrite (replace) action.
//!
//! [`live_files`] walks the current snapshot's data manifests (what every reader reads); the
//! checks of `lake verify` and retention ([`crate::sink::verify`]) judge those files and count
//! the rows each run has in them. [`commit`] replaces a set of lost data files (deleted or
//! truncated in the store) by files written again from Postgres, in one snapshot of operation
//! `overwrite`: each manifest that names a lost file is written again with that entry
//! `Deleted` and its other live entries `Existing` (snapshot id and sequence numbers kept), the
//! other manifests are carried as they are, the new files go into one manifest as `Added`, a new
//! manifest list and the next metadata file follow. The commit is a run's commit
//! ([`super::commit`]): in one Postgres transaction the fences of the runs whose files are
//! replaced are checked, the catalog row is locked, the pointer moves by compare-and-set and
//! the manifest rows (`parquet_files`) of the lost files are replaced by the new ones, whose
//! pending rows ([`super::pending`], recorded by the writer before their first byte) are
//! forgotten. The table's schema and spec are checked as for a run's commit
//! ([`super::shape`], in `lock_table`). A crash before that COMMIT leaves only files no
//! metadata names (the new data files still pending, the metadata files orphans for `iceberg
//! maintain`); a reader sees the table before or after, never a lost file and its rows twice.

use super::writer::FinishedFile;
use super::{commit as table_commit, IcebergLake};
use crate::sink::parquet::CommittedFile;
use crate::sink::{fence, manifest, Fence, SinkError};
use iceberg::spec::{
    DataFile, FormatVersion, ManifestContentType, ManifestEntry, ManifestFile, ManifestListWriter,
    ManifestWriterBuilder, Operation, PrimitiveLiteral, Snapshot, SnapshotReference,
    SnapshotRetention, SnapshotSummaryCollector, Summary, TableMetadata, MAIN_BRANCH,
};
use iceberg::table::Table;
use iceberg::MetadataLocation;
use sqlx::PgPool;
use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;

/// The field id of `run_id` (ids never change, whatever another engine does to the schema).
pub const RUN_ID_FIELD: i32 = 1;

/// A live data file of the current snapshot.
#[derive(Debug, Clone)]
pub struct LiveFile {
    /// Relative to the lake, as `parquet_files.path` names our own files.
    pub relative: String,
    pub entry: Arc<ManifestEntry>,
}

impl LiveFile {
    pub fn data_file(&self) -> &DataFile {
        &self.entry.data_file
    }

    /// The one run whose rows the file holds, when its column statistics say so (lower bound
    /// equal to upper bound of `run_id`): its row count is then that run's without reading it.
    pub fn single_run(&self) -> Option<i64> {
        self.single_run_in(RUN_ID_FIELD)
    }

    /// [`LiveFile::single_run`] for a table whose `run_id` has the field id `field`.
    pub fn single_run_in(&self, field: i32) -> Option<i64> {
        self.long_bounds(field)
            .and_then(|(a, b)| (a == b).then_some(a))
    }

    /// The lower and upper bounds of the `long` field `field` its statistics record.
    pub fn long_bounds(&self, field: i32) -> Option<(i64, i64)> {
        let file = self.data_file();
        let lower = file.lower_bounds().get(&field)?;
        let upper = file.upper_bounds().get(&field)?;
        match (lower.literal(), upper.literal()) {
            (PrimitiveLiteral::Long(a), PrimitiveLiteral::Long(b)) => Some((*a, *b)),
            _ => None,
        }
    }

    /// The capture date its partition value names (`None`: not partitioned by day).
    pub fn capture_date(&self) -> Option<chrono::NaiveDate> {
        let value = self.data_file().partition().fields().first()?.as_ref()?;
        match value.as_primitive_literal()? {
            PrimitiveLiteral::Int(days) => chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?
                .checked_add_signed(chrono::Duration::days(i64::from(days))),
            _ => None,
        }
    }
}

/// The live data files of `table`'s current snapshot (none before the first commit).
pub async fn live_files(lake: &IcebergLake, table: &Table) -> Result<Vec<LiveFile>, SinkError> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(Vec::new());
    };
    let list = lake
        .within(
            "reading the current manifest list",
            table.manifest_list_reader(snapshot).load(),
        )
        .await?;
    let mut live = Vec::new();
    for manifest_file in list.entries() {
        if manifest_file.content != ManifestContentType::Data {
            continue;
        }
        let manifest = lake
            .within(
                "reading a manifest",
                manifest_file.load_manifest(table.file_io()),
            )
            .await?;
        for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
            live.push(LiveFile {
                relative: lake.relative(entry.file_path()),
                entry: entry.clone(),
            });
        }
    }
    Ok(live)
}

/// One run's lost files and the files written again from Postgres in their place.
pub struct Replacement {
    /// The run's fence, taken over for the repair.
    pub fence: Fence,
    /// The manifest rows of the lost files (`parquet_files.file_id`).
    pub old_ids: Vec<i64>,
    /// The lost files, relative to the lake.
    pub lost: Vec<String>,
    pub added: Vec<FinishedFile>,
}

/// Replaces the lost files by the new ones in one overwrite snapshot and one Postgres
/// transaction (see the module header). Fails, changing nothing, when a run was taken over
/// meanwhile or a lost file is no longer live in the table (another writer changed it).
pub async fn commit(
    pool: &PgPool,
    lake: &IcebergLake,
    replaced: &[Replacement],
) -> Result<(), SinkError> {
    crate::crashpoint::hit("overwrite_before_commit").await;
    let mut tx = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting an Iceberg overwrite"))?;
    for r in replaced {
        fence::check(&mut tx, r.fence).await?;
    }
    let base = table_commit::lock_table(lake, &mut tx).await?;
    let lost: BTreeSet<String> = replaced.iter().flat_map(|r| r.lost.clone()).collect();
    let added: Vec<DataFile> = replaced
        .iter()
        .flat_map(|r| r.added.iter().map(|f| f.data_file.clone()))
        .collect();
    let staged = stage(lake, &base, &lost, added).await?;
    table_commit::move_pointer(&mut tx, &base, &staged).await?;
    let old_ids: Vec<i64> = replaced.iter().flat_map(|r| r.old_ids.clone()).collect();
    let files: Vec<(i64, CommittedFile)> = replaced
        .iter()
        .flat_map(|r| r.added.iter().map(|f| (r.fence.run_id, f.info.clone())))
        .collect();
    manifest::replace_manifest(&mut tx, &old_ids, &files).await?;
    for file in replaced.iter().flat_map(|r| &r.added) {
        super::pending::forget_in(&mut tx, file.data_file.file_path()).await?;
    }
    tx.commit()
        .await
        .map_err(SinkError::pg("committing the Iceberg overwrite"))?;
    Ok(())
}

/// Writes the overwrite snapshot's manifests, manifest list and metadata file on `base`
/// (nothing points to them yet); returns the table as it would be. `lost` are paths relative
/// to the lake; the read progress's table replaces its lost files with it too
/// ([`super::progress::replace`]).
pub(super) async fn stage(
    lake: &IcebergLake,
    base: &Table,
    lost: &BTreeSet<String>,
    added: Vec<DataFile>,
) -> Result<Table, SinkError> {
    let metadata = base.metadata();
    if metadata.format_version() != FormatVersion::V2 {
        return Err(SinkError::IcebergState(format!(
            "the table is Iceberg format {}, and the repair writes format 2 manifests only: \
             restore the lost files from a backup of the lake instead",
            metadata.format_version()
        )));
    }
    let current = metadata.current_snapshot().ok_or_else(|| {
        SinkError::IcebergState("the table has no snapshot: no file to replace".into())
    })?;
    let mut producer = Producer {
        lake,
        base,
        snapshot_id: new_snapshot_id(metadata),
        commit_id: format!("{:032x}", rand::random::<u128>()),
        manifests: 0,
        summary: SnapshotSummaryCollector::default(),
    };
    let list = lake
        .within(
            "reading the current manifest list",
            base.manifest_list_reader(current).load(),
        )
        .await?;
    let mut manifests: Vec<ManifestFile> = Vec::new();
    let mut removed = BTreeSet::new();
    for manifest_file in list.entries() {
        let kept = producer.without(manifest_file, lost, &mut removed).await?;
        manifests.push(kept);
    }
    if let Some(gone) = lost.iter().find(|l| !removed.contains(*l)) {
        return Err(SinkError::IcebergState(format!(
            "{gone} is no longer a live file of the table (another writer changed it meanwhile): \
             nothing was committed; run `lake verify --repair` again"
        )));
    }
    if !added.is_empty() {
        manifests.push(producer.added(added).await?);
    }
    let list_path = producer.manifest_list(manifests).await?;
    producer.metadata(list_path, lost).await
}

/// What one overwrite snapshot is being made of.
struct Producer<'a> {
    lake: &'a IcebergLake,
    base: &'a Table,
    snapshot_id: i64,
    /// Names this commit's files apart from every other's.
    commit_id: String,
    /// Manifests written so far (their names count up).
    manifests: usize,
    summary: SnapshotSummaryCollector,
}

impl Producer<'_> {
    fn metadata_dir(&self) -> String {
        let location = self.base.metadata().location().trim_end_matches('/');
        format!("{location}/metadata")
    }

    /// A new manifest, for the snapshot being made.
    fn manifest_writer(
        &mut self,
        schema: iceberg::spec::SchemaRef,
        spec: &iceberg::spec::PartitionSpec,
    ) -> Result<iceberg::spec::ManifestWriter, SinkError> {
        let path = format!(
            "{}/{}-m{}.avro",
            self.metadata_dir(),
            self.commit_id,
            self.manifests
        );
        self.manifests += 1;
        let output = self
            .base
            .file_io()
            .new_output(path)
            .map_err(SinkError::iceberg("creating a manifest"))?;
        Ok(
            ManifestWriterBuilder::new(output, Some(self.snapshot_id), schema, spec.clone())
                .build_v2_data(),
        )
    }

    /// The manifest as the new snapshot lists it: as it is when it names no lost file, else
    /// written again with the lost files' entries `Deleted` (added to `removed`) and its other
    /// live entries `Existing`, snapshot ids and sequence numbers kept.
    async fn without(
        &mut self,
        manifest_file: &ManifestFile,
        lost: &BTreeSet<String>,
        removed: &mut BTreeSet<String>,
    ) -> Result<ManifestFile, SinkError> {
        let (lake, metadata) = (self.lake, self.base.metadata());
        if manifest_file.content != ManifestContentType::Data {
            return Ok(manifest_file.clone());
        }
        let manifest = lake
            .within(
                "reading a manifest",
                manifest_file.load_manifest(self.base.file_io()),
            )
            .await?;
        let names_lost =
            |e: &ManifestEntry| e.is_alive() && lost.contains(&lake.relative(e.file_path()));
        if !manifest.entries().iter().any(|e| names_lost(e)) {
            return Ok(manifest_file.clone());
        }
        let spec = metadata
            .partition_spec_by_id(manifest_file.partition_spec_id)
            .ok_or_else(|| {
                SinkError::IcebergState(format!(
                    "a manifest names partition spec {}, which the table's metadata lacks",
                    manifest_file.partition_spec_id
                ))
            })?
            .clone();
        let schema = manifest.metadata().schema().clone();
        let mut writer = self.manifest_writer(schema.clone(), &spec)?;
        for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
            let numbers = entry.sequence_number.zip(entry.file_sequence_number);
            let Some((data_seq, file_seq)) = numbers else {
                return Err(SinkError::IcebergState(format!(
                    "the manifest entry of {} has no sequence numbers: cannot carry it into a new manifest",
                    entry.file_path()
                )));
            };
            let data_file = entry.data_file.clone();
            let written = if names_lost(entry) {
                self.summary
                    .remove_file(&data_file, schema.clone(), spec.clone());
                removed.insert(lake.relative(entry.file_path()));
                writer.add_delete_file(data_file, data_seq, Some(file_seq))
            } else {
                let added_by = entry.snapshot_id.unwrap_or(manifest_file.added_snapshot_id);
                writer.add_existing_file(data_file, added_by, data_seq, Some(file_seq))
            };
            written.map_err(SinkError::iceberg("writing a manifest entry"))?;
        }
        self.lake
            .within("writing a manifest", writer.write_manifest_file())
            .await
    }

    /// The manifest of the new files, `Added` (their sequence number the snapshot's, inherited).
    async fn added(&mut self, added: Vec<DataFile>) -> Result<ManifestFile, SinkError> {
        let metadata = self.base.metadata();
        let schema = metadata.current_schema().clone();
        let spec = metadata.default_partition_spec().clone();
        let mut writer = self.manifest_writer(schema.clone(), &spec)?;
        for data_file in added {
            self.summary
                .add_file(&data_file, schema.clone(), spec.clone());
            writer
                .add_file(data_file, -1)
                .map_err(SinkError::iceberg("writing a manifest entry"))?;
        }
        self.lake
            .within("writing a manifest", writer.write_manifest_file())
            .await
    }

    /// Writes the snapshot's manifest list; returns its location.
    async fn manifest_list(&self, manifests: Vec<ManifestFile>) -> Result<String, SinkError> {
        const OP: &str = "writing the manifest list";
        let metadata = self.base.metadata();
        let parent = metadata.current_snapshot_id();
        let path = format!(
            "{}/snap-{}-0-{}.avro",
            self.metadata_dir(),
            self.snapshot_id,
            self.commit_id
        );
        let output = self.base.file_io().new_output(&path);
        let output = output.map_err(SinkError::iceberg(OP))?;
        let writer = self.lake.within(OP, output.writer()).await;
        let sequence = metadata.next_sequence_number();
        let writer = writer?;
        let mut list = ManifestListWriter::v2(writer, self.snapshot_id, parent, sequence);
        list.add_manifests(manifests.into_iter())
            .map_err(SinkError::iceberg(OP))?;
        self.lake.within(OP, list.close()).await?;
        Ok(path)
    }

    /// Writes the next metadata file, with the snapshot as the main branch's; returns the table
    /// it describes.
    async fn metadata(
        self,
        list_path: String,
        lost: &BTreeSet<String>,
    ) -> Result<Table, SinkError> {
        let metadata = self.base.metadata();
        let parent = metadata.current_snapshot().expect("checked by stage");
        let mut properties = self.summary.build();
        with_totals(&mut properties, &parent.summary().additional_properties);
        let replaced: Vec<&str> = lost.iter().map(String::as_str).collect();
        properties.insert("receipt-exporter.repair".into(), replaced.join(","));
        let snapshot = Snapshot::builder()
            .with_snapshot_id(self.snapshot_id)
            .with_parent_snapshot_id(Some(parent.snapshot_id()))
            .with_sequence_number(metadata.next_sequence_number())
            .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
            .with_manifest_list(list_path)
            .with_summary(Summary {
                operation: Operation::Overwrite,
                additional_properties: properties,
            })
            .with_schema_id(metadata.current_schema_id())
            .build();
        let location = self
            .base
            .metadata_location_result()
            .map_err(SinkError::iceberg("reading the pointer"))?
            .to_string();
        let branch = SnapshotReference::new(
            self.snapshot_id,
            SnapshotRetention::branch(None, None, None),
        );
        let next = metadata
            .clone()
            .into_builder(Some(location.clone()))
            .add_snapshot(snapshot)
            .and_then(|b| b.set_ref(MAIN_BRANCH, branch))
            .and_then(|b| b.build())
            .map_err(SinkError::iceberg("building the overwrite's metadata"))?
            .metadata;
        let next_location = MetadataLocation::from_str(&location)
            .map_err(SinkError::iceberg("parsing the pointer"))?
            .with_next_version()
            .with_new_metadata(&next);
        self.lake
            .within(
                "writing the overwrite's metadata",
                next.write_to(self.base.file_io(), &next_location),
            )
            .await?;
        self.lake.table(next_location.to_string(), next)
    }
}

/// The `total-*` figures of the new snapshot: the parent's, plus what it adds, minus what it
/// removes (a parent without a total leaves it unset, as Iceberg's own producers do).
fn with_totals(properties: &mut HashMap<String, String>, parent: &HashMap<String, String>) {
    const TOTALS: [(&str, &str, &str); 4] = [
        ("total-data-files", "added-data-files", "deleted-data-files"),
        ("total-records", "added-records", "deleted-records"),
        ("total-files-size", "added-files-size", "removed-files-size"),
        (
            "total-delete-files",
            "added-delete-files",
            "removed-delete-files",
        ),
    ];
    let get = |map: &HashMap<String, String>, key: &str| -> Option<i64> {
        map.get(key).and_then(|v| v.parse().ok())
    };
    for (total, plus, minus) in TOTALS {
        let Some(before) = get(parent, total) else {
            continue;
        };
        let after =
            before + get(properties, plus).unwrap_or(0) - get(properties, minus).unwrap_or(0);
        properties.insert(total.to_string(), after.max(0).to_string());
    }
}

/// A snapshot id the table has not used (positive, random, as Iceberg's producers pick them).
fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let id = (rand::random::<u64>() >> 1) as i64;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_move_by_what_the_snapshot_adds_and_removes() {
        let parent: HashMap<String, String> = [
            ("total-data-files", "4"),
            ("total-records", "100"),
            ("total-files-size", "4000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut props: HashMap<String, String> = [
            ("added-data-files", "1"),
            ("deleted-data-files", "2"),
            ("added-records", "30"),
            ("deleted-records", "30"),
            ("added-files-size", "900"),
            ("removed-files-size", "1800"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        with_totals(&mut props, &parent);
        assert_eq!(props["total-data-files"], "3");
        assert_eq!(props["total-records"], "100");
        assert_eq!(props["total-files-size"], "3100");
        assert!(
            !props.contains_key("total-delete-files"),
            "the parent had none"
        );
    }
}

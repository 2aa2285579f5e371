//! A live run: a run of its own in the ledger whose rows come from a source other than the
//! pull (the webhook's inbox, see `listen`). It is taken, fenced, watched, repaired and closed
//! like any run: the job's lock, a ledger row of kind `listen`, the watchdog's heartbeats, the
//! repair of dead runs' lake files, then its batches committed to Postgres and to the lake
//! through the pipeline's writer, exactly once. It knows nothing of HTTP nor of where its
//! rows come from: the source numbers, fills and commits batches through [`Live`].

use super::ledger::{RunFigures, RunKind};
use super::pipeline::{Halt, Outcome, Writer};
use super::watch::Lost;
use super::{begin, close, repair, verdict, Begun, RunReport, RunRequest, Selection};
use crate::settings::Settings;
use crate::sink::{Access, Fence, LakeTarget, SinkError, WriteBatch};
use chrono::NaiveDate;
use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// What a live run's source works with: its run's fence and a writer under it.
pub struct Live {
    pub pool: PgPool,
    pub fence: Fence,
    /// The app the run is for (its SDKAppID): its rows carry it.
    pub sdkappid: i64,
    /// Cancelled when the run lost its lock or was fenced: the source must stop at once (what
    /// it committed stays; what it claimed and did not commit is released by the next run).
    pub lost: CancellationToken,
    writer: Writer,
    member_hash_key: Option<crate::secret::Secret>,
}

impl Live {
    /// The number the next batch will get.
    pub fn next_batch_no(&self) -> i32 {
        self.writer.next_batch_no()
    }

    /// A new, empty batch of this run for `capture_date` (it takes the next number).
    pub fn new_batch(&mut self, capture_date: NaiveDate) -> WriteBatch {
        self.writer.new_batch(capture_date)
    }

    /// Commits a batch: Postgres (idempotent on its number), then the run's lake files; a
    /// file enters the lake once complete.
    pub async fn commit(&mut self, batch: WriteBatch) -> anyhow::Result<()> {
        self.writer.commit(batch).await
    }

    /// Closes the run's open lake files (they enter the lake), e.g. at each flush's end, so
    /// readers see the rows without waiting for the run to end.
    pub async fn publish(&mut self) -> anyhow::Result<()> {
        self.writer.finish_files().await
    }

    /// Receipts written so far.
    pub fn receipts_written(&self) -> u64 {
        self.writer.written().0
    }

    /// Records who read a message, first seen at `seen` (a member already recorded for the
    /// message keeps its first time): read events of this run, in clear or hashed under
    /// `EXPORT_MEMBER_HASH_KEY_FILE` as the pull stores them. Idempotent.
    pub async fn record_readers(
        &mut self,
        group_id: &str,
        msg_seq: i64,
        members: &[String],
        seen: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<u64> {
        let key = self.member_hash_key.as_ref();
        let rows = crate::tracking::details::ReadListRows {
            group_id: group_id.to_string(),
            msg_seq,
            members: members
                .iter()
                .map(|m| (super::details::stored_account(key, m), seen))
                .collect(),
            read_before_details: false,
            account_hashed: key.is_some(),
            covers: None,
        };
        let (run_id, app) = (self.fence.run_id, self.sdkappid);
        Ok(crate::tracking::details::record(&self.pool, run_id, app, &rows).await?)
    }
}

/// The source of a live run's rows: runs until it is done (its own stop), hands back the
/// run and what it did (for the ledger's `details`), or the error that ended it.
pub type Source =
    Box<dyn FnOnce(Live) -> BoxFuture<'static, (Live, anyhow::Result<serde_json::Value>)> + Send>;

/// Runs a live run of `job` to its end: begin (locks, ledger row), repair under the
/// warehouse lock, the source's work under the watchdog, then the files closed and the
/// ledger row closed. `stop` only interrupts the wait for the locks: the source has its own.
pub async fn execute(
    settings: &Settings,
    pool: &PgPool,
    job: &str,
    stop: &CancellationToken,
    source: Source,
) -> anyhow::Result<RunReport> {
    LakeTarget::precheck(pool, &settings.lake, settings.table_format).await?;
    let req = RunRequest {
        job: job.to_string(),
        kind: RunKind::Listen,
        selection: Selection::AllEnabled,
        follow: Default::default(),
    };
    let begun = begin(settings, pool, &req, stop).await?;
    let (fence, started) = (begun.opened.fence, begun.started);
    tracing::info!(run_id = fence.run_id, job, "live run started");
    let (outcome, details, job_lock, lost) = watched(settings, pool, job, begun, source).await;
    let figures = RunFigures {
        receipts_written: outcome.receipts_written as i64,
        parquet_files: outcome.files.len() as i32,
        details,
        ..Default::default()
    };
    let reconnect = settings.lock_reconnect_timeout;
    let ended = verdict(&outcome, lost.as_ref());
    let ended = close(pool, fence, reconnect, ended, &figures, &None).await?;
    if let Some(l) = job_lock {
        l.release().await;
    }
    Ok(RunReport {
        run_id: fence.run_id,
        job: job.to_string(),
        status: ended.status,
        config_refused: ended.config_refused,
        figures,
        error: ended.error,
        elapsed: started.elapsed(),
        failed_groups: Vec::new(),
        follow: None,
        attempt: None,
        read_lists: None,
    })
}

/// What [`watched`] gives: the outcome, the source's details, the job's lock if still held,
/// and how the run was lost if it was.
type Watched = (
    Outcome,
    serde_json::Value,
    Option<super::lock::JobLock>,
    Option<Lost>,
);

/// The repair and the source's work under the watchdog; what they gave, the lock if still
/// held, and how it was lost if it was.
async fn watched(
    settings: &Settings,
    pool: &PgPool,
    job: &str,
    begun: Begun,
    source: Source,
) -> Watched {
    let lost = CancellationToken::new();
    let (watchdog, warehouse, opened, label) = begun.watched(settings, pool, &lost);
    let me = repair::Repairer {
        job,
        fence: opened.fence,
        label: &label,
    };
    let mut outcome = Outcome::default();
    let mut details = serde_json::json!({});
    match prepare(settings, pool, warehouse, &me).await {
        Err(e) => outcome.halt = Some(Halt::Sink(e)),
        Ok(target) => {
            let live = Live {
                pool: pool.clone(),
                fence: opened.fence,
                sdkappid: opened.sdkappid,
                lost: lost.clone(),
                writer: Writer::new(
                    pool.clone(),
                    opened.fence,
                    (opened.run_date, opened.sdkappid),
                    target,
                    opened.first_batch_no,
                    settings.lock_reconnect_timeout,
                ),
                member_hash_key: settings.member_hash_key.clone(),
            };
            let (live, worked) = source(live).await;
            details = ended(live, worked, &mut outcome).await;
            read_events_to_lake(settings, pool, opened.fence.run_id, &mut details).await;
            // The run's read-progress change rows (and ended runs' due ones); a failure is
            // logged and in the details, and the next run's end writes them.
            details["progress_lake"] =
                match super::progress_lake(settings, pool, opened.fence.run_id).await {
                    Ok(files) => serde_json::json!({ "files": files }),
                    Err(error) => serde_json::json!({ "error": error }),
                };
        }
    }
    lost.cancel(); // ends the watchdog
    let (job_lock, lost) = watchdog.await.unwrap_or((None, None));
    (outcome, details, job_lock, lost)
}

/// The lake opened for the run, after the repair of dead runs (under the warehouse lock
/// `begin` took, which the repair releases) and the coming months' partitions.
async fn prepare(
    settings: &Settings,
    pool: &PgPool,
    warehouse: crate::sink::warehouse::WarehouseLock,
    me: &repair::Repairer<'_>,
) -> anyhow::Result<LakeTarget> {
    let target = LakeTarget::open(pool, &settings.lake, settings.table_format, Access::Run).await?;
    repair::repair(warehouse, pool, &target, me).await?;
    if let Err(e) = crate::db::ensure_snapshot_partitions(pool, 3).await {
        tracing::warn!("could not create the coming months' snapshot partitions (rows go to the default partition): {e}");
    }
    Ok(target)
}

/// The lake copy of the read events the run recorded (one file per date, written once the
/// run's events are complete); a failure is logged and left to a later run, as the pull does.
async fn read_events_to_lake(
    settings: &Settings,
    pool: &PgPool,
    run_id: i64,
    details: &mut serde_json::Value,
) {
    match super::details::lake::export(pool, &settings.lake, run_id).await {
        Ok(n) => details["read_event_files"] = serde_json::json!(n),
        Err(e) => tracing::warn!(
            "the lake copy of read events was not written (a later run writes it): {e:#}"
        ),
    }
}

/// Closes the run's files after its source ended and records what was written in `outcome`;
/// returns the source's details.
async fn ended(
    mut live: Live,
    worked: anyhow::Result<serde_json::Value>,
    outcome: &mut Outcome,
) -> serde_json::Value {
    let worked = match worked {
        Ok(details) => live.writer.finish_files().await.map(|()| details),
        Err(e) => {
            live.writer.abort().await;
            Err(e)
        }
    };
    let (receipts, codes, files) = live.writer.written();
    outcome.receipts_written = receipts;
    outcome.codes_written = codes;
    outcome.files = files.to_vec();
    match worked {
        Ok(details) => details,
        Err(err) => {
            outcome.halt = Some(match err.downcast_ref::<SinkError>() {
                Some(SinkError::Fenced { by, .. }) => Halt::Fenced(by.clone()),
                _ if live.lost.is_cancelled() => Halt::Stopped,
                _ => Halt::Sink(err),
            });
            serde_json::json!({})
        }
    }
}

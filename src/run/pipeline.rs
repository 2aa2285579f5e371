//! The run's pipeline: plan batches → concurrent, rate-limited pulls → a writer that commits
//! write batches to Postgres, then appends them to the run's files in the lake (in the lake's
//! form, through [`LakeTarget`]), as they come.
//!
//! Memory stays bounded whatever the plan's size: batches are cut lazily from the plan, at
//! most `concurrency` calls are in flight, the channel to the writer is bounded, and the
//! writer holds one write batch and the Parquet writer's open row group.

use crate::chat::{ChatClient, ChatError, Pulled, ReceiptAnswer};
use crate::plan::GroupPlan;
use crate::sink::manifest;
use crate::sink::parquet::CommittedFile;
use crate::sink::target::{Finished, RunFiles};
use crate::sink::{postgres, Fence, ItemCodeRow, LakeTarget, SinkError, SnapshotRow, WriteBatch};
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Rows (receipts + item codes) after which a write batch is committed.
const WRITE_BATCH_ROWS: usize = 20_000;
/// The longest a received answer waits before its batch is committed.
const WRITE_BATCH_AGE: Duration = Duration::from_millis(500);

/// What the pipeline needs besides the plan.
pub struct Pipeline {
    pub pool: PgPool,
    pub client: ChatClient,
    /// The run, and the epoch that lets this process write for it: every commit and every
    /// Parquet file published checks it, and the pipeline halts once it moved.
    pub fence: Fence,
    pub run_date: NaiveDate,
    /// The app the run exports for: every row it writes carries its SDKAppID.
    pub sdkappid: i64,
    /// Where the rows go after Postgres: the lake, in its form, opened for this run.
    pub target: LakeTarget,
    pub batch_size: usize,
    pub concurrency: usize,
    /// Cancelled by a signal or a lost lock: no new calls, in-flight ones are dropped, what
    /// was received is written.
    pub stop: CancellationToken,
    /// The first write batch number: 1, or after the batches a resumed run committed before.
    pub first_batch_no: i32,
    /// How long a write rides out a lost connection (a Postgres restart) before it fails.
    pub reconnect: Duration,
}

/// Why the pipeline stopped before the end of the plan.
#[derive(Debug)]
pub enum Halt {
    /// The API refused the configuration (key, account, region): exit 2; or it could never
    /// be reached (nothing ever connected): exit 1.
    Config(ChatError),
    /// `stop` was cancelled (signal, lost lock): the caller knows which.
    Stopped,
    /// Another process took the run over (named here): nothing more was written.
    Fenced(String),
    /// A sink failed: the rows committed to Postgres stay, Parquet is repaired later.
    Sink(anyhow::Error),
}

/// A group that failed for this run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedGroup {
    pub group_id: String,
    /// What kind of failure: an API error class ([`crate::chat::ErrorClass::name`]), `Plan`
    /// (refused by the planner) or `GroupInfo` (its rolling window could not be resolved).
    pub class: String,
    pub message: String,
}

impl FailedGroup {
    pub fn new(group_id: impl Into<String>, class: &str, message: impl Into<String>) -> Self {
        FailedGroup {
            group_id: group_id.into(),
            class: class.to_string(),
            message: message.into(),
        }
    }
}

/// What the pipeline did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub groups_planned: usize,
    /// Groups whose every batch was answered (a halted run did not finish the others).
    pub groups_done: usize,
    /// Failed groups by id; a group's last failure is kept.
    pub failed_groups: BTreeMap<String, FailedGroup>,
    pub seqs_asked: u64,
    pub receipts_written: u64,
    pub codes_written: u64,
    pub files: Vec<CommittedFile>,
    pub halt: Option<Halt>,
}

impl Outcome {
    /// Records a failed group (replacing an earlier failure of the same group).
    pub fn fail(&mut self, failed: FailedGroup) {
        self.failed_groups.insert(failed.group_id.clone(), failed);
    }
}

impl Pipeline {
    /// Runs the plan to its end, or until a halt.
    pub async fn run(self, plan: Vec<GroupPlan>) -> Outcome {
        let (batch_size, groups) = (self.batch_size, plan.len());
        let batches = plan
            .iter()
            .map(|g| (g.group_id.clone(), g.calls(batch_size) as usize))
            .collect();
        // Owned all the way (no closure over a borrow), so the run's future is `Send`.
        let work = plan.into_iter().flat_map(move |g| {
            let group_id = g.group_id.clone();
            g.into_batches(batch_size)
                .map(move |seqs| (group_id.clone(), seqs))
        });
        // Each group's probe well before the rest of its batches, which wait for it.
        let work = super::ahead::probes_ahead(work, super::ahead::HELD, |(g, _)| g.clone());
        self.run_work(groups, batches, work).await
    }

    /// Runs a work list of `(group, batch of seqs)` to its end (the list may end early: a
    /// budget), or until a halt. `groups` is how many groups the list covers, `batches` how
    /// many batches each has in it (to tell which groups a halted run finished).
    pub async fn run_work(
        self,
        groups: usize,
        batches: HashMap<String, usize>,
        work: impl Iterator<Item = (String, Vec<u64>)>,
    ) -> Outcome {
        let (tx, rx) = mpsc::channel::<Vec<ReceiptAnswer>>(self.concurrency.max(4) * 2);
        let writer = Writer::new(
            self.pool.clone(),
            self.fence,
            (self.run_date, self.sdkappid),
            self.target.clone(),
            self.first_batch_no,
            self.reconnect,
        );
        let writer = tokio::spawn(writer.run(rx));
        let mut outcome = Outcome {
            groups_planned: groups,
            ..Default::default()
        };
        let mut answered = HashMap::new();
        let pull_halt = self.pull(work, tx, &mut outcome, &mut answered).await;
        outcome.groups_done = batches
            .iter()
            .filter(|(g, n)| answered.get(*g).copied().unwrap_or(0) >= **n)
            .filter(|(g, _)| !outcome.failed_groups.contains_key(*g))
            .count();
        match writer.await {
            Ok(Ok(w)) => {
                outcome.receipts_written = w.receipts;
                outcome.codes_written = w.codes;
                outcome.files = w.files;
                outcome.halt = pull_halt;
            }
            Ok(Err((w, err))) => {
                outcome.receipts_written = w.receipts;
                outcome.codes_written = w.codes;
                outcome.files = w.files;
                outcome.halt = Some(match err.downcast_ref::<SinkError>() {
                    Some(SinkError::Fenced { by, .. }) => Halt::Fenced(by.clone()),
                    _ => Halt::Sink(err),
                });
            }
            Err(join) => {
                outcome.halt = Some(Halt::Sink(anyhow::anyhow!("the writer task died: {join}")))
            }
        }
        outcome
    }

    /// Pulls every batch of the plan, `concurrency` at a time, handing answers to the writer.
    ///
    /// A group's first batch goes alone: its other batches wait for its answer, so a group the
    /// API says does not exist (or may not be read) costs one call, not one per batch.
    async fn pull(
        &self,
        work: impl Iterator<Item = (String, Vec<u64>)>,
        tx: mpsc::Sender<Vec<ReceiptAnswer>>,
        out: &mut Outcome,
        answered: &mut HashMap<String, usize>,
    ) -> Option<Halt> {
        let failed: Arc<Mutex<HashSet<String>>> = Default::default();
        let gates = &Gates::default();
        let mut calls = futures::stream::iter(work)
            .map(|(group_id, seqs)| {
                let client = self.client.clone();
                let failed = failed.clone();
                let gate = Gate::for_batch(gates, &group_id);
                async move {
                    let go = gate.wait().await && !failed.lock().unwrap().contains(&group_id);
                    if !go {
                        return (group_id, 0, Pulled::default());
                    }
                    let asked = seqs.len() as u64;
                    let result = client.pull_receipts(&group_id, &seqs).await;
                    gate.open(gates, &group_id, result.error.is_none());
                    (group_id, asked, result)
                }
            })
            .buffer_unordered(self.concurrency);
        loop {
            let next = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Some(Halt::Stopped),
                _ = tx.closed() => return None, // the writer failed: it reports why
                next = calls.next() => next,
            };
            let (group_id, asked, Pulled { answers, error }) = next?;
            out.seqs_asked += asked;
            // What arrived before an error is stored all the same.
            if !answers.is_empty() && tx.send(answers).await.is_err() {
                return None;
            }
            let Some(err) = error else {
                if asked > 0 {
                    *answered.entry(group_id).or_default() += 1;
                }
                crate::crashpoint::hit("pull").await;
                continue;
            };
            if err.stops_run() {
                return Some(Halt::Config(err));
            }
            // Batches of one group in flight together fail together: one line.
            if failed.lock().unwrap().insert(group_id.to_string()) {
                tracing::warn!(group_id = %group_id, class = err.class().name(), "group failed for this run: {err}");
            }
            out.fail(FailedGroup::new(
                group_id,
                err.class().name(),
                err.to_string(),
            ));
        }
    }
}

/// Each group's probe as its later batches see it: `Some` while its first batch is in flight
/// (or failed), `None` once it succeeded (no channel kept per group for the rest of the run).
type Gates = Mutex<HashMap<String, Option<watch::Receiver<Option<bool>>>>>;

/// A group's first batch probes the group; its other batches wait for the probe's answer.
enum Gate {
    /// This is the group's first batch: it says how it went.
    Probe(watch::Sender<Option<bool>>),
    /// A later batch: it waits for the first one's answer.
    Wait(watch::Receiver<Option<bool>>),
    /// A later batch of a group whose probe succeeded.
    Open,
}

impl Gate {
    /// The gate of the next batch of `group_id` (batches are taken from the work list in order).
    fn for_batch(gates: &Gates, group_id: &str) -> Gate {
        let mut gates = gates.lock().unwrap();
        match gates.get(group_id) {
            Some(Some(answered)) => Gate::Wait(answered.clone()),
            Some(None) => Gate::Open,
            None => {
                let (probe, answered) = watch::channel(None);
                gates.insert(group_id.to_string(), Some(answered));
                Gate::Probe(probe)
            }
        }
    }

    /// Whether the batch may go: a probe goes at once, a later batch once the probe succeeded.
    async fn wait(&self) -> bool {
        match self {
            Gate::Probe(_) | Gate::Open => true,
            Gate::Wait(answered) => {
                let mut answered = answered.clone();
                let probed = answered.wait_for(Option::is_some).await;
                probed.is_ok_and(|ok| *ok == Some(true))
            }
        }
    }

    /// A probe's outcome, for the batches waiting on it; a success opens the group's gate for
    /// good.
    fn open(&self, gates: &Gates, group_id: &str, ok: bool) {
        if let Gate::Probe(probe) = self {
            let _ = probe.send(Some(ok));
            if ok {
                if let Some(gate) = gates.lock().unwrap().get_mut(group_id) {
                    *gate = None;
                }
            }
        }
    }
}

/// Turns answers into write batches and commits them to both sinks. A live run (the
/// webhook's flush, [`super::live`]) commits its own batches through it too.
pub(crate) struct Writer {
    pool: PgPool,
    fence: Fence,
    reconnect: Duration,
    run_date: NaiveDate,
    sdkappid: i64,
    next_batch_no: i32,
    target: LakeTarget,
    /// Opened on the first batch, so a run with nothing to write creates no file.
    open: Option<RunFiles>,
    files: Vec<CommittedFile>,
    receipts: u64,
    codes: u64,
}

/// The batch being filled.
struct Pending {
    batch: WriteBatch,
    since: tokio::time::Instant,
}

impl Writer {
    /// A writer for `fence`'s run, its batches numbered from `first_batch_no`; `(run_date,
    /// sdkappid)`: the run's partition date and its app (the SDKAppID every row carries).
    pub(crate) fn new(
        pool: PgPool,
        fence: Fence,
        (run_date, sdkappid): (NaiveDate, i64),
        target: LakeTarget,
        first_batch_no: i32,
        reconnect: Duration,
    ) -> Writer {
        Writer {
            pool,
            fence,
            reconnect,
            run_date,
            sdkappid,
            next_batch_no: first_batch_no,
            target,
            open: None,
            files: Vec::new(),
            receipts: 0,
            codes: 0,
        }
    }

    /// The number the next batch will have.
    pub(crate) fn next_batch_no(&self) -> i32 {
        self.next_batch_no
    }

    /// What was written so far: receipts, item codes, and the files committed to the lake.
    pub(crate) fn written(&self) -> (u64, u64, &[CommittedFile]) {
        (self.receipts, self.codes, &self.files)
    }

    /// Gives up the open lake files (their temporary files removed), after an error: what
    /// Postgres holds and the lake does not is the next repair's to write.
    pub(crate) async fn abort(&mut self) {
        if let Some(open) = self.open.take() {
            if let Err(abort) = open.abort().await {
                tracing::warn!("could not remove a temporary Parquet file: {abort}");
            }
        }
    }

    /// Writes everything received until the channel closes. On an error the open Parquet
    /// files are given up (their temporary files removed): what was committed to Postgres
    /// and not yet recorded in Parquet is the next repair's to write.
    async fn run(
        mut self,
        rx: mpsc::Receiver<Vec<ReceiptAnswer>>,
    ) -> Result<Writer, (Writer, anyhow::Error)> {
        match self.drain(rx).await {
            Ok(()) => Ok(self),
            Err(e) => {
                self.abort().await;
                Err((self, e))
            }
        }
    }

    async fn drain(&mut self, mut rx: mpsc::Receiver<Vec<ReceiptAnswer>>) -> anyhow::Result<()> {
        let mut pending: Option<Pending> = None;
        loop {
            let deadline = pending.as_ref().map(|p| p.since + WRITE_BATCH_AGE);
            let received = tokio::select! {
                r = rx.recv() => r,
                _ = sleep_until(deadline) => {
                    if let Some(p) = pending.take() {
                        self.commit(p.batch).await?;
                    }
                    continue;
                }
            };
            let Some(answers) = received else { break };
            for answer in answers {
                let date = answer.captured_at.date_naive();
                if pending
                    .as_ref()
                    .is_some_and(|p| p.batch.capture_date != date)
                {
                    self.commit(pending.take().unwrap().batch).await?;
                }
                let p = pending.get_or_insert_with(|| Pending {
                    batch: self.new_batch(date),
                    since: tokio::time::Instant::now(),
                });
                add_answer(&mut p.batch, answer);
            }
            if pending
                .as_ref()
                .is_some_and(|p| p.batch.rows.len() + p.batch.codes.len() >= WRITE_BATCH_ROWS)
            {
                self.commit(pending.take().unwrap().batch).await?;
            }
        }
        if let Some(p) = pending.take() {
            self.commit(p.batch).await?;
        }
        self.finish_files().await
    }

    pub(crate) fn new_batch(&mut self, capture_date: NaiveDate) -> WriteBatch {
        let batch_no = self.next_batch_no;
        self.next_batch_no += 1;
        WriteBatch {
            run_id: self.fence.run_id,
            run_date: self.run_date,
            batch_no,
            sdkappid: Some(self.sdkappid),
            capture_date,
            rows: Vec::new(),
            codes: Vec::new(),
        }
    }

    /// Postgres first (the source of truth), then the lake; a file enters the manifest once it
    /// is complete. Every step that changes something checks the run's fence.
    pub(crate) async fn commit(&mut self, batch: WriteBatch) -> anyhow::Result<()> {
        postgres::write_batch_retrying(&self.pool, self.fence, &batch, self.reconnect).await?;
        self.receipts += batch.rows.len() as u64;
        self.codes += batch.codes.len() as u64;
        crate::crashpoint::hit("between_sinks").await;
        if self.open.is_none() {
            let (pool, run_id) = (&self.pool, self.fence.run_id);
            let next_part = postgres::retry_for(self.reconnect, SinkError::is_retryable, || {
                manifest::next_part(pool, run_id)
            })
            .await?;
            self.open = Some(self.target.run_files(pool, self.fence, next_part)?);
        }
        let rolled = self.open.as_mut().unwrap().append(&batch).await?;
        crate::crashpoint::hit("parquet_write").await;
        self.publish(rolled).await
    }

    pub(crate) async fn finish_files(&mut self) -> anyhow::Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let files = open.finish().await?;
        self.publish(files).await
    }

    /// Makes each finished file part of the lake and records it, under the run's fence.
    async fn publish(&mut self, files: Vec<Finished>) -> anyhow::Result<()> {
        for file in files {
            let file = self
                .target
                .publish(&self.pool, self.fence, file, self.reconnect)
                .await?;
            tracing::debug!(path = %file.relative_path, rows = file.row_count, "file committed to the lake");
            self.files.push(file);
        }
        Ok(())
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Adds one API answer to a batch: `Code` 0 items become snapshot rows, the others item codes.
fn add_answer(batch: &mut WriteBatch, answer: ReceiptAnswer) {
    let group_id: Arc<str> = Arc::from(answer.group_id.as_str());
    let captured_at = to_micros(answer.captured_at);
    for item in answer.items {
        let (Ok(msg_seq), Ok(read_num), Ok(unread_num)) = (
            i64::try_from(item.msg_seq),
            i32::try_from(item.read_num),
            i32::try_from(item.unread_num),
        ) else {
            tracing::warn!(group_id = %group_id, seq = item.msg_seq, "receipt out of range: not stored");
            continue;
        };
        if item.code == 0 {
            batch.rows.push(SnapshotRow {
                captured_at,
                group_id: group_id.clone(),
                msg_seq,
                read_num,
                unread_num,
            });
        } else {
            batch.codes.push(ItemCodeRow {
                captured_at,
                group_id: group_id.clone(),
                msg_seq,
                code: item.code,
            });
        }
    }
}

/// Postgres and Parquet both keep microseconds: truncate once, so both sinks hold the same value.
fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

//! Backfills: the current receipts of older seqs (a newly tracked group, a window never
//! exported, the seqs runs missed in an outage) pulled once, as one resumable run.
//!
//! A backfill is a [`Request`] (groups or `--all`, and windows); its hash names it. The first
//! start expands it into a [`Definition`] (every window for every group), stores that with
//! its run in `receipts.backfills`, and runs it through the ordinary pipeline. Each write
//! batch commits its rows with its `write_batches` row, so the seqs a run committed ARE its
//! checkpoint: the same command again re-opens that run and pulls only the rest. This module
//! decides what is left to pull; it does not pull or write.

pub mod store;

use crate::plan::{self, GroupPlan};
use crate::run::ledger::RunFigures;
use crate::run::liveness::Identity;
use crate::run::OpenedRun;
use crate::sink::Fence;
use crate::tracking::{validate_group_id, SeqWindow};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a running backfill writes its call count to the ledger, so an attempt that is
/// killed still counts its calls.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A backfill as the command line gives it, in a canonical form (groups sorted and unique,
/// windows merged), so the same backfill always hashes the same.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Request {
    /// Every enabled tracked group, as found at the backfill's first start.
    pub all: bool,
    pub groups: Vec<String>,
    pub windows: Vec<SeqWindow>,
    /// The app whose groups it pulls ([`Request::for_app`]); 0 until set.
    pub sdkappid: i64,
    /// Whether the app was named (`--app NAME`): then it is part of the backfill's key. The
    /// default app's backfills keep the key they had before apps, so one started before an
    /// upgrade resumes after it.
    pub named_app: bool,
}

impl Request {
    /// The request for app `sdkappid` (`named`: not the default app).
    pub fn for_app(mut self, sdkappid: i64, named: bool) -> Request {
        self.sdkappid = sdkappid;
        self.named_app = named;
        self
    }

    /// Validates the command line's values; the error is one line naming the flag.
    pub fn new(all: bool, groups: &[String], windows: &[String]) -> Result<Request, String> {
        if all && !groups.is_empty() {
            return Err("backfill: give either --group ID (repeatable) or --all, not both".into());
        }
        if !all && groups.is_empty() {
            return Err("backfill: which groups? give --group ID (repeatable) or --all".into());
        }
        if windows.is_empty() {
            return Err("backfill: which seqs? give --seqs FROM..TO (repeatable)".into());
        }
        let mut ids = Vec::with_capacity(groups.len());
        for g in groups {
            validate_group_id(g).map_err(|e| format!("backfill: --group: {e}"))?;
            ids.push(g.clone());
        }
        ids.sort();
        ids.dedup();
        let parsed = windows
            .iter()
            .map(|w| SeqWindow::parse(w).map_err(|e| format!("backfill: --seqs: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Request {
            all,
            groups: ids,
            windows: plan::merge_windows(parsed),
            sdkappid: 0,
            named_app: false,
        })
    }

    /// The hex SHA-256 of the canonical request: the backfill's key in `receipts.backfills`.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(&self.as_json()).expect("a request serialises");
        Sha256::digest(json)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The ledger's job name: one per backfill, so the same backfill never runs twice at
    /// once (exit 75) while different ones may.
    pub fn job(&self) -> String {
        format!("backfill-{}", &self.hash()[..12])
    }

    pub fn as_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "all": self.all,
            "groups": self.groups,
            "windows": self.windows.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        if self.named_app {
            json["sdkappid"] = self.sdkappid.into();
        }
        json
    }
}

/// What a backfill covers: every window for every group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub groups: Vec<String>,
    pub windows: Vec<SeqWindow>,
}

impl Definition {
    /// The plan of the whole backfill.
    pub fn plan(&self) -> Vec<GroupPlan> {
        plan::build(
            self.groups
                .iter()
                .flat_map(|g| self.windows.iter().map(move |w| (g.clone(), *w))),
        )
    }

    pub fn as_json(&self) -> serde_json::Value {
        serde_json::json!({
            "groups": self.groups,
            "windows": self.windows.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    }

    /// Reads a stored definition back; `None` if another tool wrote something else there.
    pub fn from_json(value: &serde_json::Value) -> Option<Definition> {
        let groups = value["groups"]
            .as_array()?
            .iter()
            .map(|g| g.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()?;
        let windows = value["windows"]
            .as_array()?
            .iter()
            .map(|w| SeqWindow::parse(w.as_str()?).ok())
            .collect::<Option<Vec<_>>>()?;
        Some(Definition { groups, windows })
    }
}

/// A backfill handed to the run (the run's `Selection`), with where it reports its start.
#[derive(Debug, Clone)]
pub struct Backfill {
    pub request: Request,
    /// `--rate N`: this process's cap on the shared API budget (calls/s).
    pub rate: Option<u32>,
    /// Set once the run is opened: which run, how big, how much was already done.
    pub started: Arc<OnceLock<Started>>,
}

impl Backfill {
    pub fn new(request: Request, rate: Option<u32>) -> Backfill {
        Backfill {
            request,
            rate,
            started: Default::default(),
        }
    }
}

/// The opened backfill run, for progress display.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    pub run_id: i64,
    pub total_seqs: u64,
    /// Seqs committed by earlier attempts.
    pub done_seqs: u64,
    /// Which attempt this is (1 for the first start).
    pub attempt: i32,
}

/// Opens the backfill's run under its job lock: creates it (expanding `--all` now, once) or
/// re-opens the stored one and plans only the seqs it has not committed.
pub async fn open(
    pool: &PgPool,
    backfill: &Backfill,
    job: &str,
    me: &Identity,
    lease: std::time::Duration,
) -> anyhow::Result<OpenedRun> {
    let request = &backfill.request;
    let mut o = match store::find(pool, &request.hash()).await? {
        None => create(pool, request, job, me, lease).await?,
        Some(stored) => resume(pool, &request.hash(), stored, me, lease).await?,
    };
    o.prior.groups_ok = o.full.len() as i32;
    let _ = backfill.started.set(Started {
        run_id: o.fence.run_id,
        total_seqs: seqs(&o.full),
        done_seqs: seqs(&o.full) - seqs(&o.remaining),
        attempt: o.attempt,
    });
    Ok(OpenedRun {
        fence: o.fence,
        run_date: o.run_date,
        sdkappid: backfill.request.sdkappid,
        plan: o.remaining,
        first_batch_no: o.first_batch_no,
        prior: Some(o.prior),
    })
}

/// A backfill's run, created or re-opened: its whole plan and what is left of it.
struct Opening {
    fence: Fence,
    run_date: chrono::NaiveDate,
    full: Vec<GroupPlan>,
    remaining: Vec<GroupPlan>,
    first_batch_no: i32,
    /// The figures of earlier attempts (zero for the first).
    prior: RunFigures,
    attempt: i32,
}

/// Starts a new backfill's run and stores its definition.
async fn create(
    pool: &PgPool,
    request: &Request,
    job: &str,
    me: &Identity,
    lease: std::time::Duration,
) -> anyhow::Result<Opening> {
    let definition = expand(pool, request).await?;
    let kind = crate::run::ledger::RunKind::Backfill;
    let (run_id, run_date, epoch) = crate::run::ledger::start(pool, job, kind, me, lease).await?;
    store::insert(pool, &request.hash(), run_id, request, &definition).await?;
    let plan = definition.plan();
    Ok(Opening {
        fence: Fence { run_id, epoch },
        run_date,
        full: plan.clone(),
        remaining: plan,
        first_batch_no: 1,
        prior: RunFigures::default(),
        attempt: 1,
    })
}

/// Re-opens a stored backfill's run for another attempt: only the seqs it has not committed
/// are planned.
async fn resume(
    pool: &PgPool,
    hash: &str,
    stored: store::Stored,
    me: &Identity,
    lease: std::time::Duration,
) -> anyhow::Result<Opening> {
    let definition = Definition::from_json(&stored.definition)
        .ok_or_else(|| anyhow::anyhow!("backfill {hash}: its stored definition is unreadable"))?;
    let by = format!(
        "attempt {} of this backfill on host {}, pid {}",
        stored.attempts, me.host, me.pid
    );
    let (run_date, epoch, prior) = store::reopen(pool, stored.run_id, me, &by, lease).await?;
    let done = store::done_ranges(pool, stored.run_id, run_date).await?;
    let full = definition.plan();
    let remaining = subtract(&full, &done);
    let first_batch_no = store::next_batch_no(pool, stored.run_id).await?;
    tracing::info!(
        run_id = stored.run_id,
        attempt = stored.attempts,
        "resuming backfill run {}: {} of {} seqs left",
        stored.run_id,
        seqs(&remaining),
        seqs(&full)
    );
    Ok(Opening {
        fence: Fence {
            run_id: stored.run_id,
            epoch,
        },
        run_date,
        full,
        remaining,
        first_batch_no,
        prior,
        attempt: stored.attempts,
    })
}

/// The whole plan of a backfill: its stored definition if it was started before, else what
/// it would cover if it started now.
pub async fn whole_plan(pool: &PgPool, request: &Request) -> anyhow::Result<Vec<GroupPlan>> {
    let definition = match store::existing(pool, &request.hash()).await? {
        Some((_, _, stored)) => Definition::from_json(&stored)
            .ok_or_else(|| anyhow::anyhow!("backfill: its stored definition is unreadable"))?,
        None => expand(pool, request).await?,
    };
    Ok(definition.plan())
}

/// A backfill the user asked for that cannot be done as asked (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("backfill --all: no enabled tracked group (see `track list`)")]
    NoEnabledGroup,
}

/// The definition of a new backfill: its groups, or every enabled tracked group for `--all`.
async fn expand(pool: &PgPool, request: &Request) -> anyhow::Result<Definition> {
    let groups = if request.all {
        let groups = store::enabled_groups(pool, request.sdkappid).await?;
        if groups.is_empty() {
            return Err(BackfillError::NoEnabledGroup.into());
        }
        groups
    } else {
        request.groups.clone()
    };
    Ok(Definition {
        groups,
        windows: request.windows.clone(),
    })
}

fn seqs(plan: &[GroupPlan]) -> u64 {
    plan.iter().map(GroupPlan::seq_count).sum()
}

/// The plan without the seqs in `done` (per group: sorted, disjoint ranges). Groups with
/// nothing left drop out.
pub fn subtract(plan: &[GroupPlan], done: &[(String, SeqWindow)]) -> Vec<GroupPlan> {
    let mut out = Vec::with_capacity(plan.len());
    for group in plan {
        let mut done_here: Vec<SeqWindow> = done
            .iter()
            .filter(|(g, _)| *g == group.group_id)
            .map(|(_, w)| *w)
            .collect();
        done_here.sort();
        let mut left = Vec::new();
        for range in &group.ranges {
            let mut from = range.from;
            for d in done_here
                .iter()
                .filter(|d| d.to >= range.from && d.from <= range.to)
            {
                if d.from > from {
                    left.push(SeqWindow {
                        from,
                        to: d.from - 1,
                    });
                }
                from = from.max(d.to + 1);
            }
            if from <= range.to {
                left.push(SeqWindow { from, to: range.to });
            }
        }
        if !left.is_empty() {
            out.push(GroupPlan {
                group_id: group.group_id.clone(),
                ranges: left,
            });
        }
    }
    out
}

/// This attempt's figures on top of the earlier attempts' (`prior`): the ledger row of a
/// backfill counts the whole backfill.
pub fn cumulative(prior: &RunFigures, attempt: RunFigures, attempts: i32) -> RunFigures {
    let add = |a: &std::collections::BTreeMap<String, u64>,
               b: &std::collections::BTreeMap<String, u64>| {
        let mut sum = a.clone();
        for (k, v) in b {
            *sum.entry(k.clone()).or_default() += v;
        }
        sum
    };
    let mut details = attempt.details;
    if let Some(map) = details.as_object_mut() {
        map.insert("attempts".into(), attempts.into());
    }
    RunFigures {
        groups_ok: (prior.groups_ok - attempt.groups_failed).max(0),
        groups_failed: attempt.groups_failed,
        seqs_asked: prior.seqs_asked + attempt.seqs_asked,
        receipts_written: prior.receipts_written + attempt.receipts_written,
        api_calls: prior.api_calls + attempt.api_calls,
        retries: prior.retries + attempt.retries,
        retries_by_class: add(&prior.retries_by_class, &attempt.retries_by_class),
        rate_limited: prior.rate_limited + attempt.rate_limited,
        item_codes: add(&prior.item_codes, &attempt.item_codes),
        parquet_files: prior.parquet_files + attempt.parquet_files,
        details,
    }
}

/// Writes the run's cumulative call count to its ledger row every second until `stop`, so a
/// killed attempt still leaves its calls counted for the next one.
pub fn checkpoint_calls(
    pool: PgPool,
    fence: Fence,
    prior: (i64, i64),
    client: crate::chat::ChatClient,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
            }
            let stats = client.stats().snapshot();
            let calls = prior.0 + stats.calls as i64;
            let asked = prior.1 + stats.seqs_asked as i64;
            if let Err(e) = store::checkpoint(&pool, fence, calls, asked).await {
                tracing::debug!("could not checkpoint the backfill's call count: {e}");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(from: i64, to: i64) -> SeqWindow {
        SeqWindow { from, to }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn requests_are_validated_with_one_line_naming_the_flag() {
        let seqs = strings(&["1..10"]);
        let e = Request::new(true, &strings(&["g"]), &seqs).unwrap_err();
        assert!(e.contains("--group") && e.contains("--all"), "{e}");
        let e = Request::new(false, &[], &seqs).unwrap_err();
        assert!(e.contains("--group ID"), "{e}");
        let e = Request::new(true, &[], &[]).unwrap_err();
        assert!(e.contains("--seqs FROM..TO"), "{e}");
        let e = Request::new(true, &[], &strings(&["10..1"])).unwrap_err();
        assert!(e.contains("--seqs") && e.contains("10..1"), "{e}");
        let e = Request::new(false, &strings(&["a b"]), &seqs).unwrap_err();
        assert!(e.contains("--group"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn the_same_backfill_hashes_the_same_however_it_is_written() {
        let a = Request::new(false, &strings(&["b", "a"]), &strings(&["1..10", "5..20"])).unwrap();
        let b = Request::new(false, &strings(&["a", "b", "a"]), &strings(&["1..20"])).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.hash(), b.hash());
        let c = Request::new(false, &strings(&["a"]), &strings(&["1..20"])).unwrap();
        assert_ne!(a.hash(), c.hash());
        let all = Request::new(true, &[], &strings(&["1..20"])).unwrap();
        assert_ne!(all.hash(), a.hash());
        assert!(a.job().starts_with("backfill-") && a.job().len() == 21);
    }

    #[test]
    fn definitions_round_trip_through_json() {
        let d = Definition {
            groups: strings(&["g1", "g2"]),
            windows: vec![w(1, 100), w(300, 400)],
        };
        assert_eq!(Definition::from_json(&d.as_json()), Some(d.clone()));
        let plan = d.plan();
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[1].ranges, vec![w(1, 100), w(300, 400)]);
    }

    #[test]
    fn subtract_leaves_exactly_what_was_not_done() {
        let plan = vec![
            GroupPlan {
                group_id: "a".into(),
                ranges: vec![w(1, 100), w(201, 300)],
            },
            GroupPlan {
                group_id: "b".into(),
                ranges: vec![w(1, 50)],
            },
        ];
        let done = vec![
            ("a".to_string(), w(1, 10)),
            ("a".to_string(), w(21, 30)),
            ("a".to_string(), w(95, 210)),
            ("b".to_string(), w(1, 50)),
            ("c".to_string(), w(1, 5)),
        ];
        let left = subtract(&plan, &done);
        assert_eq!(left.len(), 1, "b is done");
        assert_eq!(left[0].ranges, vec![w(11, 20), w(31, 94), w(211, 300)]);
        assert_eq!(subtract(&plan, &[]), plan);
    }

    #[test]
    fn figures_add_up_across_attempts() {
        let prior = RunFigures {
            groups_ok: 4,
            api_calls: 700,
            receipts_written: 69_000,
            seqs_asked: 70_000,
            ..Default::default()
        };
        let attempt = RunFigures {
            groups_failed: 1,
            api_calls: 1300,
            receipts_written: 129_000,
            seqs_asked: 130_000,
            details: serde_json::json!({}),
            ..Default::default()
        };
        let sum = cumulative(&prior, attempt, 2);
        assert_eq!(
            (sum.api_calls, sum.receipts_written, sum.seqs_asked),
            (2000, 198_000, 200_000)
        );
        assert_eq!((sum.groups_ok, sum.groups_failed), (3, 1));
        assert_eq!(sum.details["attempts"], 2);
    }
}

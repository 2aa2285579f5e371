//! Following: a run's work list from its tracked windows, rolling windows resolved with
//! `get_group_info`, settled and no-receipt seqs skipped, batches ordered by staleness, and
//! the per-run budget that stops starting calls at a cap.
//!
//! Memory: the work list holds one compact item per batch (its seqs as runs of consecutive
//! seqs, [`plan::SeqRuns`]), cut while each group's history streams in from Postgres, so a run
//! holds the history of one group at a time, never the whole plan's (one group's is capped by
//! `EXPORT_MAX_SEQS_PER_GROUP`). Groups whose info call fails are failed groups.
//! Only groups with a rolling window cost a `get_group_info` call (one per 50 groups): fixed
//! windows are clamped when the run learnt the group's newest seq anyway, and otherwise the
//! no-receipt rule counts only seqs below the highest seq with a snapshot.

use super::pipeline::{FailedGroup, Halt, Outcome, Pipeline};
use crate::chat::ChatClient;
use crate::plan::{self, FollowPolicy, GroupPlan, WorkItem};
use crate::tracking::follow as store;
use crate::tracking::SeqWindow;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// The work of a run, and what planning left out.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The run's batches at the settings' batch size, in no order yet: see
    /// [`Prepared::take_work`].
    pub work: Vec<WorkItem>,
    /// Groups in the plan (each ends ok or failed), those failed before pulling excluded.
    pub groups: usize,
    /// Groups failed while planning.
    pub failed: Vec<FailedGroup>,
    pub skipped_settled: u64,
    pub skipped_no_receipt: u64,
    /// Each rolling window as resolved, `FROM..TO` (empty: no message yet).
    pub rolling: BTreeMap<String, String>,
    /// Groups with a rolling window left unresolved (a dry run without API settings).
    pub unresolved: Vec<String>,
    /// The merged, clamped plan before the skips, for the dry run's report.
    pub plan: Vec<GroupPlan>,
    /// Seqs skipped per group: (settled, no receipt).
    pub skipped: HashMap<String, (u64, u64)>,
}

impl Prepared {
    /// Seqs to pull and calls to make, per group (the plan's order), without building the
    /// work list: the dry run sizes plans of any size this way.
    pub fn sizes(&self, batch_size: usize) -> Vec<(&str, u64, u64)> {
        self.plan
            .iter()
            .map(|g| {
                let (settled, none) = self.skipped.get(&g.group_id).copied().unwrap_or_default();
                let seqs = g.seq_count() - settled - none;
                (g.group_id.as_str(), seqs, seqs.div_ceil(batch_size as u64))
            })
            .collect()
    }

    /// The work list, ordered: never-observed batches first, then the stalest.
    pub fn take_work(&mut self) -> Vec<WorkItem> {
        let mut work = std::mem::take(&mut self.work);
        plan::order_work(&mut work);
        work
    }
}

/// One group's batches: its planned seqs without those its history lets the run skip, each
/// batch keyed by when its stalest seq was last observed (`state`: `None` when nothing of the
/// group was observed before).
fn group_work(
    g: &GroupPlan,
    state: Option<&store::GroupState>,
    batch_size: usize,
) -> Vec<WorkItem> {
    let (skipped, seen) = match state {
        Some(s) => {
            let mut skipped: Vec<u64> = s.settled.iter().chain(&s.no_receipt).copied().collect();
            skipped.sort_unstable();
            (skipped, s.seen.as_slice())
        }
        None => (Vec::new(), &[][..]),
    };
    let (seqs, at) = plan::unskipped(&g.ranges, &skipped, seen);
    plan::cut_batches(&g.group_id, &seqs, &at, batch_size)
}

/// Builds the run's work from its fixed-window plan plus the selection's rolling windows.
/// `client`: `None` leaves rolling windows unresolved (listed in `unresolved`).
///
/// (Over 60 lines: the plan's steps in order (rolling windows resolved, merged with the fixed ones, capped, classified), each feeding the next.)
pub async fn prepare(
    pool: &PgPool,
    client: Option<&ChatClient>,
    tags: &[String],
    fixed: Vec<GroupPlan>,
    refused: &[(String, String)],
    policy: &FollowPolicy,
    settings: &crate::settings::Settings,
) -> anyhow::Result<Prepared> {
    let max_seqs_per_group = settings.max_seqs_per_group;
    let app = settings.require_app_id()?;
    let mut out = Prepared::default();
    let refused: HashSet<&str> = refused.iter().map(|(g, _)| g.as_str()).collect();
    let latest: Vec<(String, i64)> = store::selected_latest(pool, app, tags)
        .await?
        .into_iter()
        .filter(|(g, _)| !refused.contains(g.as_str()))
        .collect();
    let newest = match client {
        Some(client) => resolve_newest(client, &latest, &mut out.failed).await,
        None => {
            out.unresolved = latest.iter().map(|(g, _)| g.clone()).collect();
            HashMap::new()
        }
    };
    let failed: HashSet<String> = out.failed.iter().map(|f| f.group_id.clone()).collect();
    let mut pairs: Vec<(String, SeqWindow)> = Vec::new();
    for g in fixed.into_iter().filter(|g| !failed.contains(&g.group_id)) {
        pairs.extend(g.ranges.into_iter().map(|w| (g.group_id.clone(), w)));
    }
    for (group_id, n) in &latest {
        let Some(&top) = newest.get(group_id) else {
            continue;
        };
        let range = plan::rolling_range(top, *n as u64);
        let shown = range.map(|w| w.to_string()).unwrap_or_default();
        out.rolling.insert(group_id.clone(), shown);
        pairs.extend(range.map(|w| (group_id.clone(), w)));
    }
    let mut merged = plan::build(pairs);
    for g in &mut merged {
        if let Some(&top) = newest.get(&g.group_id) {
            g.ranges = plan::clamp(&g.ranges, top);
        }
    }
    // A group whose rolling window resolved to nothing (no message yet) is still planned: ok.
    for group_id in newest.keys() {
        if !merged.iter().any(|g| &g.group_id == group_id) {
            merged.push(GroupPlan {
                group_id: group_id.clone(),
                ranges: Vec::new(),
            });
        }
    }
    let (merged, too_big) = plan::refuse_oversized(merged, max_seqs_per_group);
    out.failed.extend(
        too_big
            .into_iter()
            .map(|(g, why)| FailedGroup::new(g, "Plan", why)),
    );
    out.groups = merged.len();
    let batch_size = settings.batch_size;
    let by_id: HashMap<&str, &GroupPlan> =
        merged.iter().map(|g| (g.group_id.as_str(), g)).collect();
    store::classify_each(pool, app, &merged, &newest, policy, |state| {
        out.skipped_settled += state.settled.len() as u64;
        out.skipped_no_receipt += state.no_receipt.len() as u64;
        if let Some(g) = by_id.get(state.group_id.as_str()) {
            out.work.extend(group_work(g, Some(&state), batch_size));
        }
        out.skipped.insert(
            state.group_id,
            (state.settled.len() as u64, state.no_receipt.len() as u64),
        );
    })
    .await?;
    // Groups nothing was observed of before: every planned seq, never observed.
    for g in merged
        .iter()
        .filter(|g| !out.skipped.contains_key(&g.group_id))
    {
        out.work.extend(group_work(g, None, batch_size));
    }
    out.plan = merged;
    Ok(out)
}

/// Each rolling group's newest seq (`NextMsgSeq - 1`), one call per 50 groups through the
/// run's own client (so under its rate limit). A group the API answers with an error code,
/// or leaves out, is failed for this run.
async fn resolve_newest(
    client: &ChatClient,
    latest: &[(String, i64)],
    failed: &mut Vec<FailedGroup>,
) -> HashMap<String, u64> {
    let mut newest = HashMap::new();
    if latest.is_empty() {
        return newest;
    }
    let ids: Vec<String> = latest.iter().map(|(g, _)| g.clone()).collect();
    let infos = match client.get_group_info(&ids).await {
        Ok(infos) => infos,
        Err(e) => {
            for id in ids {
                let why = format!("could not resolve its rolling window: {e}");
                failed.push(FailedGroup::new(id, e.class().name(), why));
            }
            return newest;
        }
    };
    for info in infos {
        match info.next_msg_seq {
            Some(next) if info.error_code == 0 => {
                newest.insert(info.group_id, next.saturating_sub(1));
            }
            _ => {
                let why = format!(
                    "get_group_info answered error {}: {} (its rolling window cannot be resolved)",
                    info.error_code, info.error_info
                );
                failed.push(FailedGroup::new(info.group_id, "GroupInfo", why));
            }
        }
    }
    for id in ids.iter().filter(|id| !newest.contains_key(*id)) {
        if !failed.iter().any(|f| &f.group_id == id) {
            let why = "get_group_info gave no valid answer about it: see the log".to_string();
            failed.push(FailedGroup::new(id.clone(), "GroupInfo", why));
        }
    }
    newest
}

/// The work list as the pipeline consumes it, ending early when the budget is spent. The
/// check runs as each batch is about to start: every batch started counts as one call, and
/// every retry the client made so far counts too, so a run makes at most `max_calls` calls
/// plus the retries of the batches still in flight at the cap.
pub struct Budgeted {
    items: std::vec::IntoIter<WorkItem>,
    client: ChatClient,
    policy: FollowPolicy,
    started_at: Instant,
    calls_before: u64,
    started: u64,
    /// Why it stopped early, if it did.
    pub stopped_by: Option<&'static str>,
}

impl Budgeted {
    pub fn new(
        work: Vec<WorkItem>,
        client: ChatClient,
        policy: FollowPolicy,
        started_at: Instant,
    ) -> Self {
        let calls_before = client.stats().snapshot().calls;
        Budgeted {
            items: work.into_iter(),
            client,
            policy,
            started_at,
            calls_before,
            started: 0,
            stopped_by: None,
        }
    }

    /// What the budget left undone: (seqs, calls).
    pub fn left(&self) -> (u64, u64) {
        let rest = self.items.as_slice();
        let seqs = rest.iter().map(|w| w.seqs.len() as u64).sum();
        (seqs, rest.len() as u64)
    }

    fn committed(&self) -> u64 {
        let stats = self.client.stats().snapshot();
        let r = &stats.retries;
        let retries = r.rate_limited + r.cooldown + r.transient + r.usersig;
        (self.calls_before + self.started + retries).max(stats.calls)
    }
}

impl Iterator for Budgeted {
    type Item = (String, Vec<u64>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.stopped_by.is_some() || self.items.as_slice().is_empty() {
            return None;
        }
        if !plan::within_budget(&self.policy, self.committed(), Duration::ZERO) {
            self.stopped_by = Some("max_calls");
            return None;
        }
        if !plan::within_budget(&self.policy, 0, self.started_at.elapsed()) {
            self.stopped_by = Some("max_duration");
            return None;
        }
        let item = self.items.next()?;
        self.started += 1;
        Some((item.group_id.to_string(), item.seqs.to_vec()))
    }
}

/// The work list with each group's probe well before the rest of its batches, which wait for
/// it ([`super::ahead`]): reordered before the budget draws from it, so what a budget leaves is
/// exactly what was not sent. A run with a cap (`max_calls`, `max_duration`) keeps the plan's
/// order, which is its priority (what was never observed, then the stalest).
fn in_probe_order(items: Vec<WorkItem>, policy: &FollowPolicy) -> Vec<WorkItem> {
    if policy.max_calls.is_some() || policy.max_duration.is_some() {
        return items;
    }
    super::ahead::probes_ahead(items.into_iter(), super::ahead::HELD, |w| {
        w.group_id.clone()
    })
    .collect()
}

/// What following adds to a run's ledger row.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FollowFigures {
    pub seqs_skipped_settled: i64,
    pub seqs_skipped_no_receipt: i64,
    pub seqs_left: i64,
    pub calls_left: i64,
    /// `details.follow`: the policy, rolling windows as resolved, why the run stopped early.
    pub details: serde_json::Value,
}

impl FollowFigures {
    /// The summary line's tail: what was skipped and what the budget left, when anything was.
    pub fn summary(&self) -> String {
        let mut tail = String::new();
        if self.seqs_skipped_settled + self.seqs_skipped_no_receipt > 0 {
            tail.push_str(&format!(
                ", skipped {} settled and {} no-receipt seqs",
                self.seqs_skipped_settled, self.seqs_skipped_no_receipt
            ));
        }
        let stopped_by = self.details.get("stopped_by").and_then(|v| v.as_str());
        match stopped_by {
            Some(cap) if self.calls_left > 0 => tail.push_str(&format!(
                ", {cap} reached: left {} ({}) for the next run",
                crate::text::count(self.seqs_left, "seq", "seqs"),
                crate::text::count(self.calls_left, "call", "calls"),
            )),
            // Not a budget: the run stopped (the error says why) before these were pulled.
            None if self.calls_left > 0 => tail.push_str(&format!(
                ", {} not pulled",
                crate::text::count(self.seqs_left, "seq", "seqs"),
            )),
            _ => {}
        }
        tail
    }
}

/// What [`run`] needs from the run around it.
pub struct RunContext<'a> {
    pub pool: &'a PgPool,
    pub client: &'a ChatClient,
    pub tags: &'a [String],
    /// Groups the planner already refused (their rolling windows are left out too).
    pub refused: &'a [(String, String)],
    pub policy: &'a FollowPolicy,
    pub settings: &'a crate::settings::Settings,
    /// When the run started: `max_duration` counts from here.
    pub started: Instant,
}

/// How many batches of the work list each planned group has (0 for a group with none).
fn batches_per_group(plan: &[GroupPlan], items: &[WorkItem]) -> HashMap<String, usize> {
    let mut batches: HashMap<String, usize> =
        plan.iter().map(|g| (g.group_id.clone(), 0)).collect();
    for item in items {
        *batches.entry(item.group_id.to_string()).or_default() += 1;
    }
    batches
}

/// Plans the run's work and pulls it through the pipeline under the budget.
pub async fn run(
    pipeline: Pipeline,
    ctx: RunContext<'_>,
    fixed: Vec<GroupPlan>,
) -> (Outcome, FollowFigures) {
    let prepared = prepare(
        ctx.pool,
        Some(ctx.client),
        ctx.tags,
        fixed,
        ctx.refused,
        ctx.policy,
        ctx.settings,
    )
    .await;
    let mut prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            let outcome = Outcome {
                halt: Some(Halt::Sink(e.context("while planning the run"))),
                ..Default::default()
            };
            return (outcome, FollowFigures::default());
        }
    };
    for f in &prepared.failed {
        tracing::warn!(group_id = %f.group_id, class = %f.class, "group failed for this run: {}", f.message);
    }
    let items = in_probe_order(prepared.take_work(), ctx.policy);
    let batches = batches_per_group(&prepared.plan, &items);
    let mut work = Budgeted::new(items, ctx.client.clone(), ctx.policy.clone(), ctx.started);
    let mut outcome = pipeline.run_work(prepared.groups, batches, &mut work).await;
    outcome.groups_planned += prepared.failed.len();
    for f in prepared.failed {
        outcome.fail(f);
    }
    let (seqs_left, calls_left) = work.left();
    if let Some(cap) = work.stopped_by {
        tracing::info!(
            seqs_left,
            calls_left,
            "the run's budget ({cap}) is spent: the rest goes first next run"
        );
    }
    let figures = FollowFigures {
        seqs_skipped_settled: prepared.skipped_settled as i64,
        seqs_skipped_no_receipt: prepared.skipped_no_receipt as i64,
        seqs_left: seqs_left as i64,
        calls_left: calls_left as i64,
        details: serde_json::json!({
            "policy": ctx.policy,
            "rolling": prepared.rolling,
            "stopped_by": work.stopped_by,
        }),
    };
    (outcome, figures)
}

//! Who read it (issue 19): after the receipts are written, the read lists of the messages of
//! details-on groups whose read count grew, stored as read events
//! ([`crate::tracking::details`]).
//!
//! Cost: one `get_group_msg_receipt_detail` page per due message covers any group that can
//! have receipts (at most 200 members, pages of 200 as documented). Without
//! `max_detail_calls` the run makes at most one page call per due message; the dry run's bound
//! (the unsettled planned seqs of details-on groups plus the settled messages whose last
//! readers are not recorded) is never below the number of due messages, so a run never
//! exceeds it. With `max_detail_calls` the run makes at most that many, and still at most one
//! per due message from a server that pages as documented. A message whose list was cut by the
//! budget keeps what was seen and is pulled again next run.

pub mod lake;

use crate::chat::ChatClient;
use crate::settings::{DetailBudget, Settings};
use crate::tracking::details::{self as store, DueMessage, ReadListRows};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

/// What the detail pass did, for the ledger (`details.read_lists`) and the run's status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DetailFigures {
    /// Messages whose read list was due.
    pub due: u64,
    /// The most page calls this run allowed itself: `max_detail_calls`, else one per due
    /// message (what documented pages of 200 need).
    pub budget: u64,
    /// Page calls made (retries are in the run's retry counts).
    pub calls: u64,
    /// Messages whose whole read list was pulled.
    pub listed: u64,
    /// Messages left for the next run (the budget ran out, or the run was stopped).
    pub left: u64,
    /// Read events inserted (members first seen).
    pub events: u64,
    /// Parquet files of read events written to the lake (`read_events/`).
    pub lake_files: u64,
    /// Groups whose read lists failed, with the error: they keep their counts. The key
    /// `(lake)` holds a failure to write the lake copy (written by a later run).
    pub failed_groups: BTreeMap<String, String>,
}

impl DetailFigures {
    /// The figures of a detail pass that could not even start (its SQL failed).
    pub fn failed(e: anyhow::Error) -> DetailFigures {
        tracing::warn!("the read lists were not pulled: {e:#}");
        let mut figures = DetailFigures::default();
        figures.failed_groups.insert("*".into(), format!("{e:#}"));
        figures
    }

    /// The summary line's part: `, read lists: ...`.
    pub fn summary(&self) -> String {
        use crate::text::count;
        format!(
            ", read lists: {} of {} due ({}, {} left for the next run), {}",
            self.listed,
            count(self.due, "message", "messages"),
            count(self.calls, "detail call", "detail calls"),
            self.left,
            count(self.events, "reader first seen", "readers first seen"),
        )
    }
}

/// The dry run's upper bound of a run's detail calls: the planned (unsettled) seqs of the
/// details-on groups, plus the settled messages whose last readers are not recorded yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetailBound {
    pub groups: u64,
    pub planned: u64,
    pub settled_unrecorded: u64,
}

impl DetailBound {
    pub fn calls(&self) -> u64 {
        self.planned + self.settled_unrecorded
    }

    /// The dry run's line about it.
    pub fn line(&self, cap: Option<u64>) -> String {
        let mut line = format!(
            "read lists: at most {} get_group_msg_receipt_detail calls ({} unsettled planned seqs of {} details-on group(s) + {} settled messages whose last readers are not recorded)",
            self.calls(),
            self.planned,
            self.groups,
            self.settled_unrecorded
        );
        if let Some(cap) = cap.filter(|cap| *cap < self.calls()) {
            line.push_str(&format!(
                "; max_detail_calls {cap}: the rest waits for the next run"
            ));
        }
        line.push('\n');
        line
    }
}

/// Computes [`DetailBound`] for a prepared plan (`tags` select the groups like the run's).
pub async fn bound(
    pool: &PgPool,
    app: i64,
    tags: &[String],
    prepared: &super::follow::Prepared,
) -> anyhow::Result<DetailBound> {
    let ids: Vec<String> = prepared.plan.iter().map(|g| g.group_id.clone()).collect();
    let on: HashSet<String> = store::details_groups(pool, app, &ids)
        .await?
        .into_iter()
        .collect();
    let planned = prepared
        .sizes(1)
        .iter()
        .filter(|(g, _, _)| on.contains(*g))
        .map(|(_, seqs, _)| seqs)
        .sum();
    let settled = store::settled_unrecorded(pool, app, tags).await?;
    Ok(DetailBound {
        groups: on.len() as u64,
        planned,
        settled_unrecorded: settled.len() as u64,
    })
}

/// A run's budget of detail page calls, shared by every group.
struct Budget(AtomicU64);

impl Budget {
    fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Member accounts as stored: in clear, or hex HMAC-SHA256 under the configured key.
pub fn stored_account(key: Option<&crate::secret::Secret>, account: &str) -> String {
    let Some(key) = key else {
        return account.to_string();
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(account.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The client the detail calls go through: the run's (one limiter for both APIs) or, with
/// `detail_budget = own`, one of their own at the same rate.
fn detail_client(settings: &Settings, client: &ChatClient) -> anyhow::Result<ChatClient> {
    match settings.detail_budget {
        DetailBudget::Shared => Ok(client.clone()),
        DetailBudget::Own => {
            let api = settings.require_api()?;
            Ok(ChatClient::new(super::client_config(settings, &api))?)
        }
    }
}

/// Pulls the due read lists of run `run_id` (groups selected by `tags`), records them, and
/// writes the lake copy of this run's read events (and of ended runs whose copy is missing).
/// A group's failure is in [`DetailFigures::failed_groups`]; an error is the SQL's.
pub async fn pull(
    pool: &PgPool,
    client: &ChatClient,
    settings: &Settings,
    run_id: i64,
    tags: &[String],
    stop: &CancellationToken,
) -> anyhow::Result<DetailFigures> {
    let mut figures = pull_lists(pool, client, settings, run_id, tags, stop).await?;
    match lake::export(pool, &settings.lake, run_id).await {
        Ok(n) => figures.lake_files = n,
        Err(e) => {
            tracing::warn!(
                "the lake copy of read events was not written (a later run writes it): {e:#}"
            );
            figures
                .failed_groups
                .insert("(lake)".into(), format!("{e:#}"));
        }
    }
    Ok(figures)
}

async fn pull_lists(
    pool: &PgPool,
    client: &ChatClient,
    settings: &Settings,
    run_id: i64,
    tags: &[String],
    stop: &CancellationToken,
) -> anyhow::Result<DetailFigures> {
    let app = settings.require_app_id()?;
    let due = store::due_messages(pool, app, tags, run_id).await?;
    let mut figures = DetailFigures {
        due: due.len() as u64,
        ..Default::default()
    };
    if due.is_empty() {
        return Ok(figures);
    }
    let client = detail_client(settings, client)?;
    figures.budget = settings.max_detail_calls.unwrap_or(figures.due);
    let budget = Budget(AtomicU64::new(figures.budget));
    let mut by_group: BTreeMap<String, Vec<DueMessage>> = BTreeMap::new();
    for m in due {
        by_group.entry(m.group_id.clone()).or_default().push(m);
    }
    let ctx = GroupCtx {
        pool,
        client: &client,
        key: settings.member_hash_key.as_ref(),
        run_id,
        app,
        budget: &budget,
        stop,
    };
    use futures::StreamExt;
    let results: Vec<(String, GroupOutcome)> =
        futures::stream::iter(by_group.into_iter().map(|(group_id, messages)| {
            let ctx = &ctx;
            async move {
                let outcome = ctx.group(&group_id, &messages).await;
                (group_id, outcome)
            }
        }))
        .buffer_unordered(settings.concurrency.clamp(1, 16))
        .collect()
        .await;
    for (group_id, g) in results {
        figures.calls += g.calls;
        figures.listed += g.listed;
        figures.left += g.left;
        figures.events += g.events;
        if let Some(error) = g.error {
            tracing::warn!(group_id = %group_id, "read lists failed (the group's counts are kept): {error}");
            figures.failed_groups.insert(group_id, error);
        }
    }
    Ok(figures)
}

struct GroupCtx<'a> {
    pool: &'a PgPool,
    client: &'a ChatClient,
    key: Option<&'a crate::secret::Secret>,
    run_id: i64,
    app: i64,
    budget: &'a Budget,
    stop: &'a CancellationToken,
}

#[derive(Default)]
struct GroupOutcome {
    calls: u64,
    listed: u64,
    left: u64,
    events: u64,
    error: Option<String>,
}

impl GroupCtx<'_> {
    /// One group's due messages in seq order; the first failure ends the group.
    async fn group(&self, group_id: &str, messages: &[DueMessage]) -> GroupOutcome {
        let mut out = GroupOutcome::default();
        for (i, m) in messages.iter().enumerate() {
            if self.stop.is_cancelled() {
                out.left += (messages.len() - i) as u64;
                break;
            }
            let mut calls = 0u64;
            let pulled = self
                .client
                .pull_read_list(group_id, m.msg_seq as u64, || {
                    let ok = self.budget.take();
                    calls += u64::from(ok);
                    ok
                })
                .await;
            out.calls += calls;
            let list = match pulled {
                Ok(list) => list,
                Err(e) => {
                    out.error = Some(e.to_string());
                    out.left += (messages.len() - i) as u64;
                    break;
                }
            };
            if list.short_pages && !list.finished {
                tracing::warn!(group_id, seq = m.msg_seq,
                    "the Chat API pages read lists below the Count asked (200): this list needs more calls than the dry run's bound; set max_detail_calls to let runs page further");
            }
            if list.no_receipt {
                tracing::warn!(group_id, seq = m.msg_seq,
                    "the read list says no receipt (10062) for a message counted {} readers: not asked again until the count grows", m.read_num);
            }
            let members = first_pages(&list.pages, self.key);
            let rows = ReadListRows {
                group_id: group_id.to_string(),
                msg_seq: m.msg_seq,
                covers: list.finished.then(|| m.read_num.max(members.len() as i32)),
                members,
                read_before_details: m.read_before_details,
                account_hashed: self.key.is_some(),
            };
            match store::record(self.pool, self.run_id, self.app, &rows).await {
                Ok(n) => out.events += n,
                Err(e) => {
                    out.error = Some(format!("while recording read events: {e}"));
                    out.left += (messages.len() - i) as u64;
                    break;
                }
            }
            if list.finished {
                out.listed += 1;
            } else {
                out.left += 1;
            }
        }
        out
    }
}

/// Each member once, with the arrival time of the first page that listed it.
fn first_pages(
    pages: &[(DateTime<Utc>, Vec<String>)],
    key: Option<&crate::secret::Secret>,
) -> Vec<(String, DateTime<Utc>)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (at, accounts) in pages {
        for a in accounts {
            let stored = stored_account(key, a);
            if seen.insert(stored.clone()) {
                out.push((stored, *at));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn accounts_are_hashed_with_the_key_or_kept() {
        assert_eq!(stored_account(None, "alice"), "alice");
        let key = Secret::new("k");
        let h = stored_account(Some(&key), "alice");
        assert_eq!(h.len(), 64);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(h, stored_account(Some(&Secret::new("other")), "alice"));
        assert_eq!(h, stored_account(Some(&key), "alice"));
    }

    #[test]
    fn a_member_listed_twice_keeps_its_first_time() {
        let t1 = DateTime::from_timestamp(1, 0).unwrap();
        let t2 = DateTime::from_timestamp(2, 0).unwrap();
        let pages = vec![
            (t1, vec!["a".to_string(), "b".to_string()]),
            (t2, vec!["b".to_string(), "c".to_string()]),
        ];
        let got = first_pages(&pages, None);
        let want: Vec<(String, DateTime<Utc>)> =
            vec![("a".into(), t1), ("b".into(), t1), ("c".into(), t2)];
        assert_eq!(got, want);
    }

    #[test]
    fn the_budget_never_goes_below_zero() {
        let b = Budget(AtomicU64::new(2));
        assert!(b.take() && b.take());
        assert!(!b.take() && !b.take());
    }
}

//! The simulator as the Chat service's webhook sender: `Group.CallbackAfterReadReceipt`
//! deliveries of its own groups' receipts (the counts and read lists it answers on the API at
//! the current step), POSTed to a receiver with the documented URL parameters and `Sign`,
//! with loss, repeats, delay, reorder and forged deliveries on request. What was sent, lost
//! and answered is reported, so a test can compare it with what the receiver kept.

use super::Simulator;
use crate::secret::Secret;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// What to deliver, and how badly.
#[derive(Debug, Clone)]
pub struct Callbacks {
    /// The receiver's callback URL, without query (`http://127.0.0.1:PORT/callback`).
    pub url: String,
    pub sdkappid: u64,
    /// The webhook authentication token deliveries are signed with (none: unsigned).
    pub token: Option<Secret>,
    /// Valid deliveries to make (before loss and repeats).
    pub deliveries: usize,
    /// The most messages one delivery carries (each carries 1 to this many).
    pub max_messages: usize,
    /// Probabilities per valid delivery: never sent; sent twice.
    pub lose: f64,
    pub repeat: f64,
    /// Forged deliveries, as a share of `deliveries`, cycling through the [`Forgery`] kinds.
    pub forge: f64,
    /// Sent in a shuffled order (otherwise in EventTime order).
    pub reorder: bool,
    /// Each send waits a random time up to this first.
    pub max_delay: Duration,
    /// Sends in flight.
    pub concurrency: usize,
    pub seed: u64,
    /// The EventTime (ms) of the first delivery; each next one is a millisecond later.
    pub first_event_ms: i64,
}

/// A way a delivery is forged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Forgery {
    /// Another app's `SdkAppid` (correctly signed).
    WrongApp,
    /// Signed with another token.
    WrongToken,
    /// A body that is not JSON.
    BadJson,
    /// A 10 MB body.
    Huge,
}

impl Forgery {
    pub const ALL: [Forgery; 4] = [
        Forgery::WrongApp,
        Forgery::WrongToken,
        Forgery::BadJson,
        Forgery::Huge,
    ];
}

/// One message of a delivery, as a receiver should keep it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Row {
    pub group_id: String,
    pub msg_seq: i64,
    pub read_num: i32,
    pub unread_num: i32,
    pub event_ms: i64,
}

/// What was sent and answered.
#[derive(Debug, Default)]
pub struct CallbackReport {
    /// The valid deliveries answered 200, each once (a repeat is not listed twice).
    pub acknowledged: Vec<Vec<Row>>,
    /// The valid deliveries never sent.
    pub lost: Vec<Vec<Row>>,
    /// Valid deliveries sent but not answered 200 (the receiver's status, or none).
    pub unanswered: Vec<(Vec<Row>, Option<u16>)>,
    /// Each forged delivery's kind, the rows it carried, and the status it got.
    pub forged: Vec<(Forgery, Vec<Row>, Option<u16>)>,
    /// Valid deliveries sent a second time.
    pub repeated: usize,
}

impl CallbackReport {
    /// One line: what was sent, lost, repeated, forged (with the statuses they got), and
    /// what was not answered 200.
    pub fn summary(&self) -> String {
        let mut statuses: std::collections::BTreeMap<String, usize> = Default::default();
        for (kind, _, status) in &self.forged {
            let got = status.map_or("no answer".to_string(), |s| s.to_string());
            *statuses.entry(format!("{kind:?} {got}")).or_default() += 1;
        }
        let forged: Vec<String> = statuses.iter().map(|(k, n)| format!("{n} {k}")).collect();
        format!(
            "callbacks: {} acknowledged, {} lost (not sent), {} repeated, {} not answered 200, {} forged ({})",
            self.acknowledged.len(),
            self.lost.len(),
            self.repeated,
            self.unanswered.len(),
            self.forged.len(),
            forged.join(", ")
        )
    }
}

/// One send: a delivery, genuine or forged.
struct Send {
    rows: Vec<Row>,
    /// The genuine body (with each message's readers), which a forgery may spoil.
    body: String,
    forgery: Option<Forgery>,
    /// Its first send (a repeat is not).
    first: bool,
}

impl Simulator {
    /// Delivers callbacks of this simulator's groups to a receiver, as `plan` says.
    pub async fn deliver_callbacks(&self, plan: &Callbacks) -> CallbackReport {
        let mut rng = StdRng::seed_from_u64(plan.seed);
        let mut report = CallbackReport::default();
        let mut sends = self.genuine(&mut rng, plan, &mut report);
        sends.extend(self.forged(&mut rng, plan));
        self.send_and_report(&mut rng, plan, sends, report).await
    }

    /// Delivers what moved since step `since`: one callback per message of this simulator's
    /// groups whose counts now differ from those at `since` (with `since` = `None`, per
    /// message read at all), at its current counts, as the service would after the reads of a
    /// step. `plan.lose` and `plan.repeat` apply per callback; `plan.deliveries`,
    /// `max_messages` and `forge` are not used.
    pub async fn deliver_changes(&self, plan: &Callbacks, since: Option<u64>) -> CallbackReport {
        let mut rng = StdRng::seed_from_u64(plan.seed);
        let mut report = CallbackReport::default();
        let mut sends = Vec::new();
        for (i, row) in self
            .changed(since, plan.first_event_ms)
            .into_iter()
            .enumerate()
        {
            let rows = vec![Row {
                event_ms: plan.first_event_ms + i as i64,
                ..row
            }];
            if rng.random_bool(plan.lose) {
                report.lost.push(rows);
                continue;
            }
            let body = body(self, &rows);
            let repeats = if rng.random_bool(plan.repeat) { 2 } else { 1 };
            report.repeated += repeats - 1;
            for first in (0..repeats).rev().map(|n| n == 0) {
                sends.push(Send {
                    body: body.clone(),
                    rows: rows.clone(),
                    forgery: None,
                    first,
                });
            }
        }
        self.send_and_report(&mut rng, plan, sends, report).await
    }

    /// The messages whose counts moved since step `since` (any read at all without it).
    fn changed(&self, since: Option<u64>, event_ms: i64) -> Vec<Row> {
        let mut rows = Vec::new();
        let groups = self
            .groups()
            .into_iter()
            .filter(|g| g.group_type.has_receipts() && g.member_num <= super::MAX_RECEIPT_MEMBERS);
        for group in groups {
            for seq in 1..group.next_msg_seq {
                let now = self.expected(&group.group_id, seq);
                let before = since.map_or((0, 0, now.1 + now.2), |step| {
                    super::receipt_at(self.shared.seed, &group, seq, step)
                });
                if now.0 != 0 || now == before {
                    continue;
                }
                rows.push(Row {
                    group_id: group.group_id.clone(),
                    msg_seq: seq as i64,
                    read_num: now.1 as i32,
                    unread_num: now.2 as i32,
                    event_ms,
                });
            }
        }
        rows
    }

    /// Shuffles `sends` if asked, sends them, and records each answer in `report`.
    async fn send_and_report(
        &self,
        rng: &mut StdRng,
        plan: &Callbacks,
        mut sends: Vec<Send>,
        mut report: CallbackReport,
    ) -> CallbackReport {
        if plan.reorder {
            sends.shuffle(rng);
        }
        for (send, status) in send_all(rng, plan, sends).await {
            match (send.forgery, status) {
                (Some(kind), _) => report.forged.push((kind, send.rows, status)),
                (None, Some(200)) if send.first => report.acknowledged.push(send.rows),
                (None, Some(200)) => {}
                (None, _) => report.unanswered.push((send.rows, status)),
            }
        }
        report
    }

    /// The genuine deliveries to send (a repeated one twice); the lost ones go to `report`.
    fn genuine(
        &self,
        rng: &mut StdRng,
        plan: &Callbacks,
        report: &mut CallbackReport,
    ) -> Vec<Send> {
        let mut sends = Vec::new();
        for i in 0..plan.deliveries {
            let rows = self.delivery(rng, plan, plan.first_event_ms + i as i64);
            if rng.random_bool(plan.lose) {
                report.lost.push(rows);
                continue;
            }
            let body = body(self, &rows);
            if rng.random_bool(plan.repeat) {
                report.repeated += 1;
                sends.push(Send {
                    body: body.clone(),
                    rows: rows.clone(),
                    forgery: None,
                    first: false,
                });
            }
            sends.push(Send {
                body,
                rows,
                forgery: None,
                first: true,
            });
        }
        sends
    }

    /// The forged deliveries, cycling through the kinds.
    fn forged(&self, rng: &mut StdRng, plan: &Callbacks) -> Vec<Send> {
        let forged = (plan.deliveries as f64 * plan.forge).round() as usize;
        (0..forged)
            .map(|i| {
                // Far from the genuine ones' EventTimes: a forged row kept would stand out.
                let at = plan.first_event_ms + 1_000_000_000 + i as i64;
                let rows = self.delivery(rng, plan, at);
                Send {
                    body: body(self, &rows),
                    rows,
                    forgery: Some(Forgery::ALL[i % Forgery::ALL.len()]),
                    first: true,
                }
            })
            .collect()
    }

    /// One delivery's messages: a group with receipts, 1 to `max_messages` of its messages
    /// that have one, at their current counts.
    fn delivery(&self, rng: &mut StdRng, plan: &Callbacks, event_ms: i64) -> Vec<Row> {
        let groups: Vec<_> = self
            .groups()
            .into_iter()
            .filter(|g| g.group_type.has_receipts() && g.next_msg_seq > 1)
            .filter(|g| g.member_num <= super::MAX_RECEIPT_MEMBERS)
            .collect();
        assert!(
            !groups.is_empty(),
            "no simulated group can have read receipts"
        );
        let wanted = rng.random_range(1..=plan.max_messages.max(1));
        let mut rows: Vec<Row> = Vec::new();
        // A group may have few messages with a receipt: another group, until one has.
        while rows.is_empty() {
            let group = &groups[rng.random_range(0..groups.len())];
            for _ in 0..wanted * 8 {
                let seq = rng.random_range(1..group.next_msg_seq);
                let (code, read, unread) = self.expected(&group.group_id, seq);
                if code != 0 || rows.iter().any(|r| r.msg_seq == seq as i64) {
                    continue;
                }
                rows.push(Row {
                    group_id: group.group_id.clone(),
                    msg_seq: seq as i64,
                    read_num: read as i32,
                    unread_num: unread as i32,
                    event_ms,
                });
                if rows.len() == wanted {
                    break;
                }
            }
        }
        rows
    }
}

/// Sends everything, `concurrency` at a time, each after its random delay.
async fn send_all(
    rng: &mut StdRng,
    plan: &Callbacks,
    sends: Vec<Send>,
) -> Vec<(Send, Option<u16>)> {
    let client = reqwest::Client::new();
    let delays: Vec<Duration> = sends
        .iter()
        .map(|_| plan.max_delay.mul_f64(rng.random::<f64>()))
        .collect();
    futures::stream::iter(sends.into_iter().zip(delays))
        .map(|(send, delay)| {
            let client = &client;
            async move {
                tokio::time::sleep(delay).await;
                let status = post(client, plan, &send).await;
                (send, status)
            }
        })
        .buffer_unordered(plan.concurrency.max(1))
        .collect()
        .await
}

/// The body of a delivery, as the vendor's page shows it (`EventTime` a string).
fn body(sim: &Simulator, rows: &[Row]) -> String {
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let members: Vec<serde_json::Value> = sim
                .read_list(&r.group_id, r.msg_seq as u64)
                .unwrap_or_default()
                .into_iter()
                .take(r.read_num as usize)
                .map(|m| serde_json::json!({ "Member_Account": m }))
                .collect();
            serde_json::json!({
                "MsgSeq": r.msg_seq, "ReadNum": r.read_num, "UnreadNum": r.unread_num,
                "ReadReceiptMembers": members,
            })
        })
        .collect();
    serde_json::json!({
        "CallbackCommand": "Group.CallbackAfterReadReceipt",
        "GroupId": rows.first().map_or("", |r| r.group_id.as_str()),
        "Type": "Public",
        "GroupMsgReceiptList": list,
        "EventTime": rows.first().map_or(0, |r| r.event_ms).to_string(),
    })
    .to_string()
}

/// POSTs one send; the status, or `None` when no answer came.
async fn post(client: &reqwest::Client, plan: &Callbacks, send: &Send) -> Option<u16> {
    let app = match send.forgery {
        Some(Forgery::WrongApp) => plan.sdkappid + 1,
        _ => plan.sdkappid,
    };
    let mut url = format!(
        "{}?SdkAppid={app}&CallbackCommand=Group.CallbackAfterReadReceipt&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI",
        plan.url
    );
    if let Some(token) = &plan.token {
        let now = chrono::Utc::now().timestamp().to_string();
        let token = match send.forgery {
            Some(Forgery::WrongToken) => Secret::new(format!("{}-forged", token.expose())),
            _ => token.clone(),
        };
        let sign = crate::listen::auth::sign(&token, &now);
        url.push_str(&format!("&RequestTime={now}&Sign={sign}"));
    }
    let body = match send.forgery {
        Some(Forgery::BadJson) => send
            .body
            .get(..send.body.len() / 2)
            .unwrap_or("{")
            .to_string(),
        Some(Forgery::Huge) => {
            let padding = " ".repeat(10 << 20);
            format!("{{\"Padding\":\"{padding}\"}}")
        }
        _ => send.body.clone(),
    };
    let answer = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    answer.ok().map(|a| a.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{generate_groups, SimConfig, MAX_SETTLE_STEPS};

    /// What moved in a step is exactly the messages whose answer changed, at their new
    /// counts; once every message settled, nothing moves.
    #[tokio::test]
    async fn changed_is_what_moved_in_the_step() {
        let mut config = SimConfig::new(1, Secret::new("k"), "admin");
        config.groups = generate_groups(1, 3, 300);
        let sim = Simulator::start(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let answers = |sim: &Simulator| -> Vec<(String, u64, (i32, u32, u32))> {
            let mut all = Vec::new();
            for g in sim.groups() {
                for seq in 1..g.next_msg_seq {
                    all.push((g.group_id.clone(), seq, sim.expected(&g.group_id, seq)));
                }
            }
            all
        };
        let read_at_all = sim.changed(None, 7);
        assert!(!read_at_all.is_empty());
        assert!(read_at_all
            .iter()
            .all(|r| r.read_num > 0 && r.event_ms == 7));
        let before = answers(&sim);
        sim.advance(1);
        let after = answers(&sim);
        let moved: Vec<(String, i64, i32, i32)> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a && a.2 .0 == 0)
            .map(|(_, a)| (a.0.clone(), a.1 as i64, a.2 .1 as i32, a.2 .2 as i32))
            .collect();
        let changed: Vec<(String, i64, i32, i32)> = sim
            .changed(Some(0), 0)
            .into_iter()
            .map(|r| (r.group_id, r.msg_seq, r.read_num, r.unread_num))
            .collect();
        assert!(!moved.is_empty());
        assert_eq!(changed, moved);
        sim.advance(MAX_SETTLE_STEPS);
        assert!(sim.changed(Some(sim.step() - 1), 0).is_empty());
        sim.shutdown().await;
    }
}

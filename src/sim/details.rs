//! `get_group_msg_receipt_detail`: who read a message, consistent with the read counts.
//!
//! A group's members are `member-0` .. `member-{MemberNum - 1}`; one of them sent the message.
//! The other members are ranked in an order fixed by (seed, group, seq), and the read list at
//! any step is the first `ReadNum` of that ranking: it always holds exactly `ReadNum` members
//! and only grows as `ReadNum` grows. Pages are cut from the list at the offset the cursor
//! carries, so a list that grows between two pages is still paged without gaps or repeats.

use crate::sim::api::{parse_body, receipt_group, ApiError, Fields};
use crate::sim::groups::{valid_group_id, SimGroup};
use crate::sim::receipts::{mix, receipt_at, NO_RECEIPT};
use crate::sim::Shared;
use serde::Deserialize;
use serde_json::{json, Value};

/// The most members one page may hold (the documented maximum of `Count`).
pub const MAX_READ_PAGE: usize = 200;

/// The account of member `i` of a simulated group.
pub fn member_account(i: u32) -> String {
    format!("member-{i}")
}

/// The read list of message `seq` at `step`, in the simulator's fixed order: exactly `ReadNum`
/// accounts. `None` when the message has no read receipt (10062).
pub fn read_list_at(seed: u64, group: &SimGroup, seq: u64, step: u64) -> Option<Vec<String>> {
    let (code, read_num, _) = receipt_at(seed, group, seq, step);
    if code == NO_RECEIPT {
        return None;
    }
    Some(ranking(seed, group, seq).take(read_num as usize).collect())
}

/// The unread list: the members of the ranking past `ReadNum`.
fn unread_list_at(seed: u64, group: &SimGroup, seq: u64, step: u64) -> Vec<String> {
    let (_, read_num, _) = receipt_at(seed, group, seq, step);
    ranking(seed, group, seq).skip(read_num as usize).collect()
}

/// Every member but the sender, in the order they read message `seq`.
fn ranking(seed: u64, group: &SimGroup, seq: u64) -> impl Iterator<Item = String> {
    let h = mix(mix(seed, seq), group.group_id.len() as u64 ^ 0x5eed);
    let h = group
        .group_id
        .bytes()
        .fold(h, |acc, b| mix(acc, u64::from(b)));
    let sender = (h % u64::from(group.member_num.max(1))) as u32;
    let mut members: Vec<(u64, u32)> = (0..group.member_num)
        .filter(|&i| i != sender)
        .map(|i| (mix(h, u64::from(i)), i))
        .collect();
    members.sort_unstable();
    members.into_iter().map(|(_, i)| member_account(i))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DetailRequest {
    group_id: String,
    msg_seq: i64,
    filter: u8,
    #[serde(default)]
    cursor: String,
    count: i64,
}

/// The offset a cursor carries: `""` is the start; anything but a cursor we sent is 10004.
fn offset(cursor: &str) -> Result<usize, ApiError> {
    if cursor.is_empty() {
        return Ok(0);
    }
    cursor
        .strip_prefix("sim-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ApiError::new(10004, "invalid Cursor"))
}

/// `get_group_msg_receipt_detail`. `page_max` caps a page below the request's `Count`.
pub(crate) fn group_msg_receipt_detail(
    shared: &Shared,
    body: &[u8],
    subject: &mut String,
    page_max: usize,
) -> Result<Fields, ApiError> {
    let req: DetailRequest = parse_body(body)?;
    subject.clone_from(&req.group_id);
    if !valid_group_id(&req.group_id) {
        return Err(ApiError::new(10015, "invalid group id"));
    }
    if !(1..=MAX_READ_PAGE as i64).contains(&req.count) || req.filter > 1 || req.msg_seq < 1 {
        return Err(ApiError::new(
            10004,
            format!("Count must be 1 to {MAX_READ_PAGE}, Filter 0 or 1, MsgSeq positive"),
        ));
    }
    let from = offset(&req.cursor)?;
    let group = receipt_group(shared, &req.group_id)?;
    let seq = req.msg_seq as u64;
    let step = shared.step();
    let list = match read_list_at(shared.seed, &group, seq, step) {
        None => return Err(ApiError::new(10062, "the read receipt does not exist")),
        Some(read) if req.filter == 0 => read,
        Some(_) => unread_list_at(shared.seed, &group, seq, step),
    };
    let size = (req.count as usize).min(page_max.max(1));
    let page: Vec<&String> = list.iter().skip(from).take(size).collect();
    let next = from + page.len();
    let finished = next >= list.len();
    let (list_key, account_key) = if req.filter == 0 {
        ("ReadList", "Read_Account")
    } else {
        ("UnreadList", "Unread_Account")
    };
    let entries: Vec<Value> = page.iter().map(|a| json!({ account_key: a })).collect();
    let mut fields = Fields::new();
    fields.insert("MsgSeq".into(), seq.into());
    fields.insert("IsFinished".into(), u8::from(finished).into());
    let cursor = if finished {
        String::new()
    } else {
        format!("sim-{next}")
    };
    fields.insert("Cursor".into(), cursor.into());
    fields.insert(list_key.into(), Value::Array(entries));
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::groups::GroupType;
    use crate::sim::receipts::MAX_SETTLE_STEPS;

    fn group(members: u32) -> SimGroup {
        SimGroup {
            group_id: "@TGS#detail".into(),
            group_type: GroupType::Public,
            member_num: members,
            next_msg_seq: 301,
        }
    }

    #[test]
    fn read_lists_hold_read_num_members_and_only_grow() {
        let g = group(120);
        for seq in 1..=300 {
            let mut before: Vec<String> = Vec::new();
            for step in 0..=MAX_SETTLE_STEPS + 1 {
                let (code, read, unread) = receipt_at(7, &g, seq, step);
                let Some(list) = read_list_at(7, &g, seq, step) else {
                    assert_eq!(code, NO_RECEIPT);
                    continue;
                };
                assert_eq!(list.len(), read as usize, "seq {seq} step {step}");
                assert_eq!(unread_list_at(7, &g, seq, step).len(), unread as usize);
                assert!(list.starts_with(&before), "seq {seq} step {step}");
                let distinct: std::collections::HashSet<_> = list.iter().collect();
                assert_eq!(distinct.len(), list.len());
                before = list;
            }
        }
    }

    #[test]
    fn cursors_are_checked() {
        assert_eq!(offset("").unwrap(), 0);
        assert_eq!(offset("sim-17").unwrap(), 17);
        assert_eq!(offset("17").unwrap_err().code, 10004);
        assert_eq!(offset("sim-x").unwrap_err().code, 10004);
    }
}

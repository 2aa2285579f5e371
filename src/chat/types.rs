//! The answers the client hands out, and the validation that turns raw JSON into them.
//!
//! Validation is pure: it never trusts the server (items for seqs not asked, duplicates,
//! missing seqs, negative counts) and reports every dropped item as an [`Issue`]; the client
//! counts and logs them. Nothing malformed ever reaches the caller as a valid receipt.

use super::error::ChatError;
use super::stats::InvalidReason;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// One successful `get_group_msg_receipt` call: the items of one batch of one group.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReceiptAnswer {
    pub group_id: String,
    /// When the answer arrived (microsecond precision): the time of this snapshot.
    pub captured_at: DateTime<Utc>,
    /// Valid items only, in the server's order.
    pub items: Vec<ReceiptItem>,
}

/// The receipt of one message, or its per-item error `code` (10062: no receipt for this seq;
/// 10004: the server rejected this seq alone as an invalid parameter). Counts are 0 when `code != 0`,
/// and never above [`MAX_COUNT`] (what the sinks store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReceiptItem {
    pub msg_seq: u64,
    pub code: i32,
    pub read_num: u32,
    pub unread_num: u32,
}

/// One group of a `get_group_info` answer. `error_code` is per group (10010: no such group).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupInfo {
    pub group_id: String,
    pub error_code: i64,
    pub error_info: String,
    pub group_type: Option<String>,
    /// The seq the next message will get: the newest message is `next_msg_seq - 1`.
    pub next_msg_seq: Option<u64>,
    pub member_num: Option<u32>,
}

/// A dropped item (or a seq missing from the answer), for counting and logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub reason: InvalidReason,
    /// The seq concerned, when the item had a readable one.
    pub seq: Option<u64>,
}

/// The top level of an answer is not the documented shape: the whole answer is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongShape;

/// The largest count kept: the sinks store counts as int4 (Postgres `integer`, Parquet int32),
/// so a count the API gives as u32 is checked here, once, against what storage can hold.
pub const MAX_COUNT: u32 = i32::MAX as u32;

/// A count field: absent is allowed only for an item with an error code.
fn count(item: &Value, field: &str, required: bool) -> Result<u32, InvalidReason> {
    match item.get(field) {
        None | Some(Value::Null) if !required => Ok(0),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(v), _) if v <= u64::from(MAX_COUNT) => Ok(v as u32),
            (Some(_), _) => Err(InvalidReason::CountOutOfRange),
            (None, Some(_)) => Err(InvalidReason::NegativeCount),
            _ => Err(InvalidReason::WrongShape),
        },
        _ => Err(InvalidReason::WrongShape),
    }
}

fn receipt_item(item: &Value) -> Result<ReceiptItem, InvalidReason> {
    let code = item
        .get("Code")
        .and_then(Value::as_i64)
        .ok_or(InvalidReason::WrongShape)?;
    let code = i32::try_from(code).map_err(|_| InvalidReason::WrongShape)?;
    let msg_seq = item
        .get("MsgSeq")
        .and_then(Value::as_u64)
        .ok_or(InvalidReason::WrongShape)?;
    let read_num = count(item, "ReadNum", code == 0)?;
    let unread_num = count(item, "UnreadNum", code == 0)?;
    Ok(ReceiptItem {
        msg_seq,
        code,
        read_num,
        unread_num,
    })
}

/// Splits `parsed` into the values whose key occurs once and the keys of every other copy.
fn drop_duplicates<K: std::hash::Hash + Eq + Clone, T>(parsed: Vec<(K, T)>) -> (Vec<T>, Vec<K>) {
    let mut seen: HashMap<K, usize> = HashMap::new();
    for (k, _) in &parsed {
        *seen.entry(k.clone()).or_default() += 1;
    }
    let (mut kept, mut dropped) = (Vec::with_capacity(parsed.len()), Vec::new());
    for (k, v) in parsed {
        if seen[&k] > 1 {
            dropped.push(k);
        } else {
            kept.push(v);
        }
    }
    (kept, dropped)
}

/// Validates a successful `get_group_msg_receipt` body against the seqs asked.
pub fn validate_receipts(
    asked: &[u64],
    body: &Value,
) -> Result<(Vec<ReceiptItem>, Vec<Issue>), WrongShape> {
    let list = body
        .get("GroupMsgReceiptList")
        .and_then(Value::as_array)
        .ok_or(WrongShape)?;
    // Sorted slices and binary searches, not hash sets: this runs for every answer, and the
    // planner asks in ascending order (the sort is then a pass over sorted data).
    let mut asked_sorted = asked.to_vec();
    asked_sorted.sort_unstable();
    let mut issues = Vec::new();
    let mut parsed = Vec::with_capacity(list.len());
    let mut answered = Vec::with_capacity(list.len());
    for raw in list {
        let seq = raw.get("MsgSeq").and_then(Value::as_u64);
        answered.extend(seq);
        match receipt_item(raw) {
            Ok(item) if asked_sorted.binary_search(&item.msg_seq).is_err() => {
                issues.push(Issue {
                    reason: InvalidReason::NotAsked,
                    seq,
                });
            }
            Ok(item) => parsed.push((item.msg_seq, item)),
            Err(reason) => issues.push(Issue { reason, seq }),
        }
    }
    let (kept, dropped) = if parsed.windows(2).all(|w| w[0].0 < w[1].0) {
        (
            parsed.into_iter().map(|(_, item)| item).collect(),
            Vec::new(),
        )
    } else {
        drop_duplicates(parsed)
    };
    issues.extend(dropped.into_iter().map(|seq| Issue {
        reason: InvalidReason::Duplicate,
        seq: Some(seq),
    }));
    answered.sort_unstable();
    for &seq in asked.iter().filter(|s| answered.binary_search(s).is_err()) {
        issues.push(Issue {
            reason: InvalidReason::Missing,
            seq: Some(seq),
        });
    }
    Ok((kept, issues))
}

fn group_info(raw: &Value) -> Result<GroupInfo, InvalidReason> {
    let group_id = raw
        .get("GroupId")
        .and_then(Value::as_str)
        .ok_or(InvalidReason::WrongShape)?;
    let error_code = raw
        .get("ErrorCode")
        .and_then(Value::as_i64)
        .ok_or(InvalidReason::WrongShape)?;
    let error_info = raw
        .get("ErrorInfo")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let group_type = match raw.get("Type") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_str().ok_or(InvalidReason::WrongShape)?.to_string()),
    };
    let next_msg_seq = match raw.get("NextMsgSeq") {
        None | Some(Value::Null) => None,
        Some(v) if v.as_i64().is_some_and(|n| n < 0) => return Err(InvalidReason::NegativeCount),
        Some(v) => Some(v.as_u64().ok_or(InvalidReason::WrongShape)?),
    };
    let member_num = match raw.get("MemberNum") {
        None | Some(Value::Null) => None,
        Some(_) => Some(count(raw, "MemberNum", true)?),
    };
    Ok(GroupInfo {
        group_id: group_id.to_string(),
        error_code,
        error_info: error_info.to_string(),
        group_type,
        next_msg_seq,
        member_num,
    })
}

/// Valid group infos, and the dropped ones with the group id each concerns.
pub type ValidatedGroupInfos = (Vec<GroupInfo>, Vec<(Issue, String)>);

/// Validates a successful `get_group_info` body against the group ids asked.
/// Issues carry no seq; the client logs them with the group ids.
pub fn validate_group_infos(
    asked: &[String],
    body: &Value,
) -> Result<ValidatedGroupInfos, WrongShape> {
    let list = body
        .get("GroupInfo")
        .and_then(Value::as_array)
        .ok_or(WrongShape)?;
    let asked_set: HashSet<&str> = asked.iter().map(String::as_str).collect();
    let mut issues = Vec::new();
    let mut parsed = Vec::new();
    let mut answered = HashSet::new();
    for raw in list {
        let id = raw
            .get("GroupId")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        answered.insert(id.clone());
        match group_info(raw) {
            Ok(info) if !asked_set.contains(info.group_id.as_str()) => {
                issues.push((
                    Issue {
                        reason: InvalidReason::NotAsked,
                        seq: None,
                    },
                    id,
                ));
            }
            Ok(info) => parsed.push((info.group_id.clone(), info)),
            Err(reason) => issues.push((Issue { reason, seq: None }, id)),
        }
    }
    let (kept, dropped) = drop_duplicates(parsed);
    issues.extend(dropped.into_iter().map(|id| {
        (
            Issue {
                reason: InvalidReason::Duplicate,
                seq: None,
            },
            id,
        )
    }));
    for id in asked.iter().filter(|id| !answered.contains(*id)) {
        issues.push((
            Issue {
                reason: InvalidReason::Missing,
                seq: None,
            },
            id.clone(),
        ));
    }
    Ok((kept, issues))
}

/// One page of a `get_group_msg_receipt_detail` answer (`Filter` 0: who read the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPage {
    pub msg_seq: u64,
    /// `IsFinished` (or the documentation's spelling `IsFinish`) was 1: no page follows.
    pub finished: bool,
    /// The cursor to send for the next page (empty when finished).
    pub cursor: String,
    /// Valid, distinct member accounts of this page, in the server's order.
    pub readers: Vec<String>,
}

/// The longest member account kept: Chat UserIDs are at most 32 bytes; anything far longer is
/// not an account (and would bloat every row it reaches).
pub const MAX_ACCOUNT_BYTES: usize = 128;

/// The `IsFinished` flag, under either spelling, as 0/1 or a boolean.
fn finished_flag(body: &Value) -> Result<bool, WrongShape> {
    let raw = body.get("IsFinished").or_else(|| body.get("IsFinish"));
    match raw {
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            _ => Err(WrongShape),
        },
        _ => Err(WrongShape),
    }
}

/// One `ReadList` entry: a non-empty account without control or bidi characters, not too long.
fn read_account(raw: &Value) -> Result<String, InvalidReason> {
    let account = raw
        .get("Read_Account")
        .and_then(Value::as_str)
        .ok_or(InvalidReason::WrongShape)?;
    let shown_as_is = crate::untrusted::escape(account) == account;
    if account.is_empty() || account.len() > MAX_ACCOUNT_BYTES || !shown_as_is {
        return Err(InvalidReason::WrongShape);
    }
    Ok(account.to_string())
}

/// Validates a successful `get_group_msg_receipt_detail` body (read list) for `asked_seq`,
/// asked for at most `count` members. An answer about another seq, without the finish flag,
/// without a cursor to go on with, or with more members than asked is unusable as a whole;
/// bad entries are dropped, repeated accounts kept once, each reported as an [`Issue`].
pub fn validate_read_page(
    asked_seq: u64,
    count: usize,
    body: &Value,
) -> Result<(ReadPage, Vec<Issue>), WrongShape> {
    let msg_seq = body.get("MsgSeq").and_then(Value::as_u64);
    if msg_seq.is_some_and(|s| s != asked_seq) {
        return Err(WrongShape);
    }
    let finished = finished_flag(body)?;
    let cursor = match body.get("Cursor") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(c)) if c.len() <= 1024 => c.clone(),
        Some(_) => return Err(WrongShape),
    };
    if !finished && cursor.is_empty() {
        return Err(WrongShape);
    }
    let list = match body.get("ReadList") {
        // The last page of a message nobody (more) read may leave the list out.
        None | Some(Value::Null) if finished => &Vec::new(),
        Some(Value::Array(list)) if list.len() <= count => list,
        _ => return Err(WrongShape),
    };
    let mut issues = Vec::new();
    let mut seen = HashSet::new();
    let mut readers = Vec::with_capacity(list.len());
    for raw in list {
        match read_account(raw) {
            Ok(a) if seen.insert(a.clone()) => readers.push(a),
            Ok(_) => issues.push(Issue {
                reason: InvalidReason::Duplicate,
                seq: Some(asked_seq),
            }),
            Err(reason) => issues.push(Issue {
                reason,
                seq: Some(asked_seq),
            }),
        }
    }
    let page = ReadPage {
        msg_seq: asked_seq,
        finished,
        cursor: if finished { String::new() } else { cursor },
        readers,
    };
    Ok((page, issues))
}

/// What a pull of one group's seqs gave: the answers received, and the error that stopped it
/// part-way, if one did (the answers before it are still to be stored).
#[derive(Debug, Default)]
pub struct Pulled {
    pub answers: Vec<ReceiptAnswer>,
    pub error: Option<ChatError>,
}

impl Pulled {
    /// The answers, or the error (dropping the answers received before it).
    pub fn into_result(self) -> Result<Vec<ReceiptAnswer>, ChatError> {
        match self.error {
            None => Ok(self.answers),
            Some(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use InvalidReason::{CountOutOfRange, Duplicate, Missing, NegativeCount, NotAsked};

    fn reasons(issues: &[Issue]) -> Vec<(InvalidReason, Option<u64>)> {
        let mut v: Vec<_> = issues.iter().map(|i| (i.reason, i.seq)).collect();
        v.sort_by_key(|(r, s)| (r.as_str(), *s));
        v
    }

    #[test]
    fn good_items_pass_and_error_items_keep_their_code() {
        let body = json!({"GroupMsgReceiptList": [
            {"Code": 0, "MsgSeq": 1, "ReadNum": 1, "UnreadNum": 6},
            {"Code": 10062, "MsgSeq": 2}
        ]});
        let (items, issues) = validate_receipts(&[1, 2], &body).unwrap();
        assert!(issues.is_empty());
        assert_eq!(
            items[0],
            ReceiptItem {
                msg_seq: 1,
                code: 0,
                read_num: 1,
                unread_num: 6
            }
        );
        assert_eq!(
            items[1],
            ReceiptItem {
                msg_seq: 2,
                code: 10062,
                read_num: 0,
                unread_num: 0
            }
        );
    }

    #[test]
    fn bad_items_are_dropped_with_a_reason() {
        let body = json!({"GroupMsgReceiptList": [
            {"Code": 0, "MsgSeq": 1, "ReadNum": -1, "UnreadNum": 6},
            {"Code": 0, "MsgSeq": 2, "ReadNum": 1, "UnreadNum": 1},
            {"Code": 0, "MsgSeq": 2, "ReadNum": 2, "UnreadNum": 0},
            {"Code": 0, "MsgSeq": 99, "ReadNum": 1, "UnreadNum": 1},
            {"Code": 0, "MsgSeq": 4, "ReadNum": "1", "UnreadNum": 1},
            {"Code": 0, "MsgSeq": 5},
            {"Code": 0, "MsgSeq": 6, "ReadNum": 5000000000u64, "UnreadNum": 1},
            {"Code": 0, "MsgSeq": 9, "ReadNum": 1, "UnreadNum": 2147483648u64},
            {"Code": 0, "MsgSeq": 10, "ReadNum": 2147483647, "UnreadNum": 0},
            {"MsgSeq": 7, "ReadNum": 1, "UnreadNum": 1},
            {"Code": 0, "MsgSeq": 8, "ReadNum": 3, "UnreadNum": 4},
            "junk"
        ]});
        let (items, issues) = validate_receipts(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], &body).unwrap();
        assert_eq!(
            items,
            vec![
                ReceiptItem {
                    msg_seq: 10,
                    code: 0,
                    read_num: 2147483647,
                    unread_num: 0
                },
                ReceiptItem {
                    msg_seq: 8,
                    code: 0,
                    read_num: 3,
                    unread_num: 4
                }
            ]
        );
        assert_eq!(
            reasons(&issues),
            vec![
                (CountOutOfRange, Some(6)),
                (CountOutOfRange, Some(9)),
                (Duplicate, Some(2)),
                (Duplicate, Some(2)),
                (Missing, Some(3)),
                (NegativeCount, Some(1)),
                (NotAsked, Some(99)),
                (InvalidReason::WrongShape, None),
                (InvalidReason::WrongShape, Some(4)),
                (InvalidReason::WrongShape, Some(5)),
                (InvalidReason::WrongShape, Some(7)),
            ]
        );
    }

    #[test]
    fn wrong_top_level_shape_is_refused() {
        assert_eq!(
            validate_receipts(&[1], &json!({"GroupMsgReceiptList": {}})),
            Err(WrongShape)
        );
        assert_eq!(validate_receipts(&[1], &json!([1, 2])), Err(WrongShape));
        assert_eq!(
            validate_group_infos(&["a".into()], &json!({})),
            Err(WrongShape)
        );
    }

    #[test]
    fn group_infos_are_validated() {
        let body = json!({"GroupInfo": [
            {"GroupId": "a", "ErrorCode": 0, "ErrorInfo": "", "Type": "Public", "NextMsgSeq": 120, "MemberNum": 7},
            {"GroupId": "b", "ErrorCode": 10010, "ErrorInfo": "no group"},
            {"GroupId": "c", "ErrorCode": 0, "MemberNum": -3},
            {"GroupId": "d", "ErrorCode": 0}, {"GroupId": "d", "ErrorCode": 0},
            {"GroupId": "zz", "ErrorCode": 0}
        ]});
        let asked: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let (infos, issues) = validate_group_infos(&asked, &body).unwrap();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].next_msg_seq, Some(120));
        assert_eq!(infos[0].group_type.as_deref(), Some("Public"));
        assert_eq!(infos[1].error_code, 10010);
        let mut got: Vec<(&str, &str)> = issues
            .iter()
            .map(|(i, id)| (i.reason.as_str(), id.as_str()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("duplicate", "d"),
                ("duplicate", "d"),
                ("missing", "e"),
                ("negative_count", "c"),
                ("not_asked", "zz")
            ]
        );
    }
    #[test]
    fn read_pages_accept_both_spellings_and_drop_bad_accounts() {
        let body = json!({"MsgSeq": 7, "IsFinish": 1, "Cursor": "",
            "ReadList": [{"Read_Account": "alice"}, {"Read_Account": "bob"},
                {"Read_Account": "alice"}, {"Read_Account": ""}, {"Read_Account": 5},
                {"Read_Account": "x\ny"}, {"Read_Account": "a".repeat(200)}, "junk"]});
        let (page, issues) = validate_read_page(7, 200, &body).unwrap();
        assert!(page.finished);
        assert_eq!(page.readers, vec!["alice".to_string(), "bob".to_string()]);
        assert_eq!(issues.len(), 6);
        assert_eq!(issues.iter().filter(|i| i.reason == Duplicate).count(), 1);
        let body = json!({"MsgSeq": 7, "IsFinished": 0, "Cursor": "c2",
            "ReadList": [{"Read_Account": "carol"}]});
        let (page, issues) = validate_read_page(7, 200, &body).unwrap();
        assert!(!page.finished && issues.is_empty());
        assert_eq!(page.cursor, "c2");
        let (page, _) = validate_read_page(7, 200, &json!({"IsFinished": true})).unwrap();
        assert!(page.finished && page.readers.is_empty());
    }

    #[test]
    fn unusable_read_pages_are_refused_whole() {
        let list = json!([{"Read_Account": "a"}, {"Read_Account": "b"}]);
        for body in [
            json!({"MsgSeq": 8, "IsFinished": 1, "ReadList": list}),
            json!({"MsgSeq": 7, "ReadList": list}),
            json!({"MsgSeq": 7, "IsFinished": 2, "ReadList": list}),
            json!({"MsgSeq": 7, "IsFinished": 0, "Cursor": "", "ReadList": list}),
            json!({"MsgSeq": 7, "IsFinished": 0, "ReadList": list}),
            json!({"MsgSeq": 7, "IsFinished": 1, "ReadList": {}}),
            json!({"MsgSeq": 7, "IsFinished": 0, "Cursor": "c"}),
            json!({"MsgSeq": 7, "IsFinished": 1, "Cursor": 3, "ReadList": list}),
        ] {
            assert_eq!(validate_read_page(7, 200, &body), Err(WrongShape), "{body}");
        }
        // More members than asked for.
        let body = json!({"MsgSeq": 7, "IsFinished": 1, "ReadList": list});
        assert_eq!(validate_read_page(7, 1, &body), Err(WrongShape));
    }
}

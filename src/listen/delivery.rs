//! One callback's body, `Group.CallbackAfterReadReceipt`, read and validated: what the
//! receiver stores, or why it is malformed (answered 400). No I/O.
//!
//! The body, as the issue and the vendor's page give it:
//! `{"CallbackCommand": "Group.CallbackAfterReadReceipt", "GroupId": "@TGS#2TTV7VSII",
//!   "Type": "Public", "GroupMsgReceiptList": [{"MsgSeq": 1, "ReadNum": 1, "UnreadNum": 6,
//!   "ReadReceiptMembers": [{"Member_Account": "user0"}]}], "EventTime": "1670574414123"}`
//! (`EventTime` in milliseconds, a string in the sample: a number is accepted too, as are
//! numeric fields written as strings).

use chrono::{DateTime, Utc};
use serde_json::Value;

/// The command this receiver stores. Other commands to the same URL (an app has one callback
/// URL for every webhook) are answered OK and counted, never stored.
pub const READ_RECEIPT_COMMAND: &str = "Group.CallbackAfterReadReceipt";

/// The most messages one delivery may carry, and members per message: far above what the
/// service sends, a bound on what one transaction writes.
pub const MAX_MESSAGES: usize = 10_000;
pub const MAX_MEMBERS: usize = 100_000;

/// One message's counts in a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub msg_seq: i64,
    pub read_num: i32,
    pub unread_num: i32,
    /// Who read it, as the delivery says (`ReadReceiptMembers`), in its order.
    pub members: Vec<String>,
}

/// A valid read-receipt delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub group_id: String,
    /// `EventTime`, to the millisecond: the snapshots' capture time.
    pub event_time: DateTime<Utc>,
    pub receipts: Vec<Receipt>,
}

/// What a body turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    ReadReceipt(Delivery),
    /// Another callback command (named, cut to 64 characters): answered OK, not stored.
    Other(String),
}

/// Why a body is refused (400). The message names the field, never echoes the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed callback body: {0}")]
pub struct Malformed(pub String);

fn bad(why: impl Into<String>) -> Malformed {
    Malformed(why.into())
}

/// Reads a body. `command_in_url` is the URL's `CallbackCommand`, which the body's must equal
/// when both are given.
pub fn parse(body: &[u8], command_in_url: Option<&str>) -> Result<Parsed, Malformed> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "not JSON ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(obj) = value else {
        return Err(bad("not a JSON object"));
    };
    let command = match obj.get("CallbackCommand") {
        Some(Value::String(c)) => c.as_str(),
        None => command_in_url.unwrap_or(""),
        Some(_) => return Err(bad("CallbackCommand is not a string")),
    };
    if let Some(url) = command_in_url.filter(|u| *u != command) {
        return Err(bad(format!(
            "CallbackCommand '{}' in the body, '{}' in the URL",
            cut(command),
            cut(url)
        )));
    }
    if command != READ_RECEIPT_COMMAND {
        return Ok(Parsed::Other(cut(command)));
    }
    let group_id = match obj.get("GroupId") {
        Some(Value::String(g)) => g.clone(),
        _ => return Err(bad("GroupId is missing or not a string")),
    };
    crate::tracking::validate_group_id(&group_id).map_err(|e| bad(format!("GroupId: {e}")))?;
    let event_time = event_time(obj.get("EventTime"))?;
    let list = match obj.get("GroupMsgReceiptList") {
        Some(Value::Array(list)) => list,
        _ => return Err(bad("GroupMsgReceiptList is missing or not a list")),
    };
    if list.len() > MAX_MESSAGES {
        return Err(bad(format!(
            "GroupMsgReceiptList has {} messages (at most {MAX_MESSAGES})",
            list.len()
        )));
    }
    let receipts = list
        .iter()
        .enumerate()
        .map(|(i, item)| receipt(i, item))
        .collect::<Result<_, _>>()?;
    Ok(Parsed::ReadReceipt(Delivery {
        group_id,
        event_time,
        receipts,
    }))
}

fn cut(text: &str) -> String {
    crate::untrusted::escape(&crate::untrusted::cut(text, 64)).into_owned()
}

/// `EventTime`: milliseconds since the epoch, a string or a number, from 2000 to 2100.
fn event_time(value: Option<&Value>) -> Result<DateTime<Utc>, Malformed> {
    let ms = integer(value).ok_or_else(|| bad("EventTime is missing or not milliseconds"))?;
    const Y2000: i64 = 946_684_800_000;
    const Y2100: i64 = 4_102_444_800_000;
    if !(Y2000..Y2100).contains(&ms) {
        return Err(bad(format!(
            "EventTime {ms} is not a time in milliseconds between 2000 and 2100"
        )));
    }
    Ok(DateTime::from_timestamp_millis(ms).expect("in range"))
}

/// An integer given as a JSON number or as a string of digits.
fn integer(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn receipt(i: usize, item: &Value) -> Result<Receipt, Malformed> {
    let field = |name: &str| integer(item.get(name));
    let (Some(seq), Some(read), Some(unread)) =
        (field("MsgSeq"), field("ReadNum"), field("UnreadNum"))
    else {
        return Err(bad(format!(
            "GroupMsgReceiptList[{i}]: MsgSeq, ReadNum and UnreadNum must be integers"
        )));
    };
    let (Ok(read_num), Ok(unread_num)) = (i32::try_from(read), i32::try_from(unread)) else {
        return Err(bad(format!(
            "GroupMsgReceiptList[{i}]: a count out of range"
        )));
    };
    if seq < 0 || read_num < 0 || unread_num < 0 {
        return Err(bad(format!("GroupMsgReceiptList[{i}]: a negative number")));
    }
    let members = match item.get("ReadReceiptMembers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) if list.len() <= MAX_MEMBERS => list
            .iter()
            .map(|m| match m.get("Member_Account") {
                Some(Value::String(a)) if !a.is_empty() => Ok(a.clone()),
                _ => Err(bad(format!(
                    "GroupMsgReceiptList[{i}].ReadReceiptMembers: Member_Account missing or not a string"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(bad(format!(
                "GroupMsgReceiptList[{i}].ReadReceiptMembers is not a list of at most {MAX_MEMBERS}"
            )))
        }
    };
    Ok(Receipt {
        msg_seq: seq,
        read_num,
        unread_num,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"CallbackCommand": "Group.CallbackAfterReadReceipt", "GroupId": "@TGS#2TTV7VSII", "Type": "Public",
 "GroupMsgReceiptList": [{"MsgSeq": 1, "ReadNum": 1, "UnreadNum": 6, "ReadReceiptMembers": [{"Member_Account": "user0"}]},
                         {"MsgSeq": 2, "ReadNum": 1, "UnreadNum": 6, "ReadReceiptMembers": [{"Member_Account": "user0"}]}],
 "EventTime": "1670574414123"}"#;

    #[test]
    fn the_issues_sample_is_read() {
        let Parsed::ReadReceipt(d) = parse(SAMPLE.as_bytes(), Some(READ_RECEIPT_COMMAND)).unwrap()
        else {
            panic!("a read receipt")
        };
        assert_eq!(d.group_id, "@TGS#2TTV7VSII");
        assert_eq!(d.event_time.timestamp_millis(), 1_670_574_414_123);
        assert_eq!(d.receipts.len(), 2);
        assert_eq!(
            d.receipts[1],
            Receipt {
                msg_seq: 2,
                read_num: 1,
                unread_num: 6,
                members: vec!["user0".into()]
            }
        );
        // EventTime as a number, counts as strings, no members: the same reading.
        let body = r#"{"CallbackCommand":"Group.CallbackAfterReadReceipt","GroupId":"g1","EventTime":1670574414123,
            "GroupMsgReceiptList":[{"MsgSeq":"7","ReadNum":"2","UnreadNum":"0"}]}"#;
        let Parsed::ReadReceipt(d) = parse(body.as_bytes(), None).unwrap() else {
            panic!()
        };
        assert_eq!((d.receipts[0].msg_seq, d.receipts[0].members.len()), (7, 0));
    }

    #[test]
    fn other_commands_are_named_not_stored() {
        let body = br#"{"CallbackCommand":"Group.CallbackAfterSendMsg","GroupId":"g"}"#;
        assert_eq!(
            parse(body, None).unwrap(),
            Parsed::Other("Group.CallbackAfterSendMsg".into())
        );
    }

    #[test]
    fn malformed_bodies_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("{", "not JSON"),
            ("[1]", "not a JSON object"),
            (
                r#"{"CallbackCommand":"Group.CallbackAfterReadReceipt","EventTime":"1670574414123","GroupMsgReceiptList":[]}"#,
                "GroupId",
            ),
            (
                r#"{"CallbackCommand":"Group.CallbackAfterReadReceipt","GroupId":"g","GroupMsgReceiptList":[]}"#,
                "EventTime",
            ),
            (
                r#"{"CallbackCommand":"Group.CallbackAfterReadReceipt","GroupId":"g","EventTime":"12","GroupMsgReceiptList":[]}"#,
                "between 2000 and 2100",
            ),
            (
                r#"{"CallbackCommand":"Group.CallbackAfterReadReceipt","GroupId":"g","EventTime":"1670574414123"}"#,
                "GroupMsgReceiptList",
            ),
            (
                r#"{"CallbackCommand":"Group.CallbackAfterReadReceipt","GroupId":"g","EventTime":"1670574414123","GroupMsgReceiptList":[{"MsgSeq":1,"ReadNum":"x","UnreadNum":0}]}"#,
                "[0]: MsgSeq, ReadNum",
            ),
            (
                r#"{"CallbackCommand":"Group.CallbackAfterReadReceipt","GroupId":"g","EventTime":"1670574414123","GroupMsgReceiptList":[{"MsgSeq":1,"ReadNum":-1,"UnreadNum":0}]}"#,
                "negative",
            ),
            (
                r#"{"CallbackCommand":"Group.CallbackAfterReadReceipt","GroupId":"g","EventTime":"1670574414123","GroupMsgReceiptList":[{"MsgSeq":1,"ReadNum":1,"UnreadNum":0,"ReadReceiptMembers":[{}]}]}"#,
                "Member_Account",
            ),
            (
                r#"{"CallbackCommand":"Group.CallbackAfterReadReceipt","GroupId":"a b","EventTime":"1670574414123","GroupMsgReceiptList":[]}"#,
                "whitespace",
            ),
        ];
        for (body, names) in cases {
            let err = parse(body.as_bytes(), None).unwrap_err();
            assert!(err.to_string().contains(names), "{body}: {err}");
        }
        let err = parse(SAMPLE.as_bytes(), Some("Group.CallbackAfterSendMsg")).unwrap_err();
        assert!(err.to_string().contains("in the URL"), "{err}");
    }
}

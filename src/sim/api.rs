//! The two documented APIs, as functions from a request body to the answer's fields.
//!
//! No HTTP, no clock, no faults here: the server wraps these in the common envelope
//! (`ActionStatus`, `ErrorCode`, `ErrorInfo`, `RequestId`).

use crate::sim::groups::{valid_group_id, SimGroup};
use crate::sim::receipts::receipt_at;
use crate::sim::Shared;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `get_group_info` takes at most this many group ids.
pub const MAX_GROUP_INFO_IDS: usize = 50;

/// A whole-call failure: its `ErrorCode` and `ErrorInfo`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub code: i64,
    pub info: String,
}

impl ApiError {
    pub fn new(code: i64, info: impl Into<String>) -> ApiError {
        ApiError {
            code,
            info: info.into(),
        }
    }
}

/// The answer's fields besides the envelope.
pub(crate) type Fields = Map<String, Value>;

/// Parses a body: not JSON at all is 60003, JSON of the wrong shape is 10004.
pub(crate) fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::new(60003, "the request body is not valid JSON"))?;
    serde_json::from_value(value)
        .map_err(|e| ApiError::new(10004, format!("invalid parameter: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiptRequest {
    group_id: String,
    msg_seq_list: Vec<SeqItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SeqItem {
    msg_seq: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiptItem {
    code: i32,
    msg_seq: i64,
    read_num: u32,
    unread_num: u32,
}

/// The group of a receipt call: 10010 when it does not exist, 10007 when its type has no
/// read receipts.
pub(crate) fn receipt_group(shared: &Shared, group_id: &str) -> Result<SimGroup, ApiError> {
    let group = shared
        .group(group_id)
        .ok_or_else(|| ApiError::new(10010, "the group does not exist or has been dissolved"))?;
    if !group.group_type.has_receipts() {
        return Err(ApiError::new(
            10007,
            format!("{} groups have no read receipts", group.group_type),
        ));
    }
    Ok(group)
}

/// `get_group_msg_receipt`. `subject` receives the group id for the request log.
pub(crate) fn group_msg_receipt(
    shared: &Shared,
    body: &[u8],
    subject: &mut String,
) -> Result<Fields, ApiError> {
    let req: ReceiptRequest = parse_body(body)?;
    subject.clone_from(&req.group_id);
    if !valid_group_id(&req.group_id) {
        return Err(ApiError::new(10015, "invalid group id"));
    }
    if req.msg_seq_list.is_empty() || req.msg_seq_list.len() > shared.max_batch {
        return Err(ApiError::new(
            10004,
            format!("MsgSeqList must hold 1 to {} entries", shared.max_batch),
        ));
    }
    let group = receipt_group(shared, &req.group_id)?;
    let step = shared.step();
    let list: Vec<ReceiptItem> = req
        .msg_seq_list
        .iter()
        .map(|item| {
            let seq = u64::try_from(item.msg_seq).unwrap_or(0);
            let (code, read_num, unread_num) = receipt_at(shared.seed, &group, seq, step);
            ReceiptItem {
                code,
                msg_seq: item.msg_seq,
                read_num,
                unread_num,
            }
        })
        .collect();
    let mut fields = Fields::new();
    fields.insert(
        "GroupMsgReceiptList".into(),
        serde_json::to_value(list).expect("plain data serializes"),
    );
    Ok(fields)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InfoRequest {
    group_id_list: Vec<String>,
    #[serde(default)]
    response_filter: Option<ResponseFilter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResponseFilter {
    #[serde(default)]
    group_base_info_filter: Option<Vec<String>>,
}

/// `get_group_info`: base info of each group asked for, in order, with a per-group
/// `ErrorCode`. Without a `GroupBaseInfoFilter` every base field comes back.
pub(crate) fn group_info(
    shared: &Shared,
    body: &[u8],
    subject: &mut String,
) -> Result<Fields, ApiError> {
    let req: InfoRequest = parse_body(body)?;
    *subject = format!("{} groups", req.group_id_list.len());
    if req.group_id_list.is_empty() || req.group_id_list.len() > MAX_GROUP_INFO_IDS {
        return Err(ApiError::new(
            10004,
            format!("GroupIdList must hold 1 to {MAX_GROUP_INFO_IDS} group ids"),
        ));
    }
    let filter = req.response_filter.and_then(|f| f.group_base_info_filter);
    let wanted = |field: &str| filter.as_ref().is_none_or(|f| f.iter().any(|w| w == field));
    let infos: Vec<Value> = req
        .group_id_list
        .iter()
        .map(|id| {
            let mut info = Fields::new();
            info.insert("GroupId".into(), id.as_str().into());
            let found = valid_group_id(id).then(|| shared.group(id));
            let (code, text) = match found {
                None => (10015, "invalid group id"),
                Some(None) => (10010, "the group does not exist or has been dissolved"),
                Some(Some(g)) => {
                    let base = [
                        ("Type", Value::from(g.group_type.to_string())),
                        ("NextMsgSeq", g.next_msg_seq.into()),
                        ("MemberNum", g.member_num.into()),
                        (
                            "MaxMemberNum",
                            g.group_type.max_member_num().max(g.member_num).into(),
                        ),
                    ];
                    for (name, value) in base.into_iter().filter(|(name, _)| wanted(name)) {
                        info.insert(name.into(), value);
                    }
                    (0, "")
                }
            };
            info.insert("ErrorCode".into(), code.into());
            info.insert("ErrorInfo".into(), text.into());
            Value::Object(info)
        })
        .collect();
    let mut fields = Fields::new();
    fields.insert("GroupInfo".into(), Value::Array(infos));
    Ok(fields)
}

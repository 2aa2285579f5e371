//! Whether a group can have read receipts at all, judged from its `get_group_info` answer.
//! Shared by `doctor` (every tracked group) and `track add --check` (one group).

use crate::chat::{ChatClient, ClientConfig, GroupInfo, Tuning};
use crate::settings::{ApiSettings, Settings};
use std::time::Duration;

/// Read receipts exist only in groups of at most this many members.
pub const MAX_RECEIPT_MEMBERS: u32 = 200;

/// Why a group cannot give read receipts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupProblem {
    #[error("the API does not know it (error {code}: {info}): it does not exist or was dissolved")]
    Missing { code: i64, info: String },
    #[error("its type {0} has no read receipts (only Private/Work, Public and ChatRoom/Meeting have them)")]
    UnsupportedType(String),
    #[error("it has {0} members: read receipts exist only in groups of at most 200 members")]
    TooLarge(u32),
}

/// The verdict on one group: `Ok` when it can have read receipts.
pub fn judge(info: &GroupInfo) -> Result<(), GroupProblem> {
    if info.error_code != 0 {
        return Err(GroupProblem::Missing {
            code: info.error_code,
            info: info.error_info.clone(),
        });
    }
    if let Some(kind) = &info.group_type {
        let supported = matches!(
            kind.as_str(),
            "Private" | "Work" | "Public" | "ChatRoom" | "Meeting"
        );
        if !supported {
            return Err(GroupProblem::UnsupportedType(kind.clone()));
        }
    }
    match info.member_num {
        Some(n) if n > MAX_RECEIPT_MEMBERS => Err(GroupProblem::TooLarge(n)),
        _ => Ok(()),
    }
}

/// A client for a few checking calls: the configured pace, few attempts, a short timeout,
/// and an API that cannot be connected to is called unreachable after 2 s, not 10.
pub fn checking_client(
    settings: &Settings,
    api: &ApiSettings,
) -> Result<ChatClient, crate::chat::ChatError> {
    let config = ClientConfig {
        max_attempts: 2,
        usersig_ttl: Duration::from_secs(3_600),
        ..crate::run::client_config(settings, api)
    };
    let tuning = Tuning {
        unreachable_after: Duration::from_secs(2),
        ..Tuning::default()
    };
    ChatClient::with_tuning(config, tuning)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(code: i64, kind: &str, members: u32) -> GroupInfo {
        GroupInfo {
            group_id: "g".into(),
            error_code: code,
            error_info: if code == 0 {
                String::new()
            } else {
                "no such group".into()
            },
            group_type: Some(kind.into()),
            next_msg_seq: Some(5),
            member_num: Some(members),
        }
    }

    #[test]
    fn only_small_groups_of_receipt_types_pass() {
        for kind in ["Private", "Work", "Public", "ChatRoom", "Meeting"] {
            assert_eq!(judge(&info(0, kind, 200)), Ok(()), "{kind}");
        }
        for kind in ["AVChatRoom", "Community"] {
            assert_eq!(
                judge(&info(0, kind, 10)),
                Err(GroupProblem::UnsupportedType(kind.into()))
            );
        }
        assert_eq!(
            judge(&info(0, "Public", 201)),
            Err(GroupProblem::TooLarge(201))
        );
        let missing = judge(&info(10010, "", 0)).unwrap_err();
        assert!(missing.to_string().contains("10010"), "{missing}");
    }
}

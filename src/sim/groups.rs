//! The simulator's groups: what a group is, where groups come from (a JSON file or a seed),
//! and which group ids the API accepts. No HTTP here.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// The built-in group types, spelled as the API spells them. The newer names `Work` and
/// `Meeting` are accepted as aliases of `Private` and `ChatRoom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GroupType {
    #[serde(alias = "Work")]
    Private,
    Public,
    #[serde(alias = "Meeting")]
    ChatRoom,
    AVChatRoom,
    Community,
}

impl GroupType {
    /// Whether `get_group_msg_receipt` works for this type (the others answer 10007).
    pub fn has_receipts(self) -> bool {
        matches!(
            self,
            GroupType::Private | GroupType::Public | GroupType::ChatRoom
        )
    }

    /// The `MaxMemberNum` that `get_group_info` reports: the type's default capacity.
    pub fn max_member_num(self) -> u32 {
        match self {
            GroupType::Private => 200,
            GroupType::Public => 2000,
            GroupType::ChatRoom => 6000,
            GroupType::AVChatRoom => 1_000_000,
            GroupType::Community => 100_000,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            GroupType::Private => "Private",
            GroupType::Public => "Public",
            GroupType::ChatRoom => "ChatRoom",
            GroupType::AVChatRoom => "AVChatRoom",
            GroupType::Community => "Community",
        }
    }
}

impl std::fmt::Display for GroupType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One group as the simulator knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimGroup {
    pub group_id: String,
    pub group_type: GroupType,
    /// Members, the sender of each message included (so a message has `member_num - 1`
    /// possible readers).
    pub member_num: u32,
    /// The seq the next message will get: messages `1..next_msg_seq` exist.
    pub next_msg_seq: u64,
}

/// The longest group id the API accepts, in bytes.
pub const MAX_GROUP_ID_BYTES: usize = 48;

/// Whether the API would accept `id` as a group id at all (else 10015).
pub fn valid_group_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_GROUP_ID_BYTES
        && !id.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `count` groups of supported types with 5..=200 members and `messages_per_group` messages
/// each, ids `@TGS#sim<seed>-<n>` (n from 1). The same seed always gives the same groups.
pub fn generate_groups(seed: u64, count: usize, messages_per_group: u64) -> Vec<SimGroup> {
    const TYPES: [GroupType; 3] = [GroupType::Private, GroupType::Public, GroupType::ChatRoom];
    (1..=count)
        .map(|n| {
            let h = crate::sim::receipts::mix(seed ^ 0x5EED_0F6A, n as u64);
            SimGroup {
                group_id: format!("@TGS#sim{seed}-{n}"),
                group_type: TYPES[(h % 3) as usize],
                member_num: 5 + ((h >> 8) % 196) as u32,
                next_msg_seq: messages_per_group + 1,
            }
        })
        .collect()
}

/// Why a groups file was refused.
#[derive(Debug, thiserror::Error)]
pub enum GroupsFileError {
    #[error("while reading the groups file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the groups file {path} is not a JSON array of groups ({{\"group_id\", \"group_type\", \"member_num\", \"next_msg_seq\"}}): {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("the groups file {path} is invalid: {reason}")]
    Invalid { path: String, reason: String },
}

/// Loads groups from a JSON array of [`SimGroup`]s. Ids must be unique and `next_msg_seq`
/// at least 1. Invalid ids are allowed on purpose: they exist to be refused (10015).
pub fn load_groups(path: &Path) -> Result<Vec<SimGroup>, GroupsFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read(path).map_err(|source| GroupsFileError::Read {
        path: shown.clone(),
        source,
    })?;
    let groups: Vec<SimGroup> =
        serde_json::from_slice(&text).map_err(|source| GroupsFileError::Parse {
            path: shown.clone(),
            source,
        })?;
    check_groups(&groups).map_err(|reason| GroupsFileError::Invalid {
        path: shown,
        reason,
    })?;
    Ok(groups)
}

/// The rules every group list must meet, whatever its source.
pub fn check_groups(groups: &[SimGroup]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for g in groups {
        if !seen.insert(g.group_id.as_str()) {
            return Err(format!("group id {:?} appears twice", g.group_id));
        }
        if g.next_msg_seq == 0 {
            return Err(format!(
                "group {:?}: next_msg_seq must be at least 1",
                g.group_id
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_groups_are_stable_and_supported() {
        let a = generate_groups(7, 50, 300);
        assert_eq!(a, generate_groups(7, 50, 300));
        assert_ne!(a, generate_groups(8, 50, 300));
        assert_eq!(a[0].group_id, "@TGS#sim7-1");
        assert_eq!(a[49].group_id, "@TGS#sim7-50");
        for g in &a {
            assert!(g.group_type.has_receipts());
            assert!((5..=200).contains(&g.member_num));
            assert_eq!(g.next_msg_seq, 301);
            assert!(valid_group_id(&g.group_id));
        }
        check_groups(&a).unwrap();
        let types: HashSet<_> = a.iter().map(|g| g.group_type).collect();
        assert_eq!(types.len(), 3, "all supported types appear");
        let long = generate_groups(u64::MAX, 1, 1);
        assert!(valid_group_id(&long[0].group_id));
    }

    #[test]
    fn group_ids() {
        assert!(valid_group_id("@TGS#2TTV7VSII"));
        assert!(valid_group_id(&"x".repeat(48)));
        for bad in ["", " ", "a b", "tab\t", &"x".repeat(49)] {
            assert!(!valid_group_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn types_as_the_api_spells_them_with_aliases() {
        let parsed: Vec<GroupType> = serde_json::from_str(
            r#"["Work","Private","Public","Meeting","ChatRoom","AVChatRoom","Community"]"#,
        )
        .unwrap();
        let back = serde_json::to_string(&parsed).unwrap();
        assert_eq!(
            back,
            r#"["Private","Private","Public","ChatRoom","ChatRoom","AVChatRoom","Community"]"#
        );
        assert!(serde_json::from_str::<GroupType>(r#""private""#).is_err());
    }

    #[test]
    fn groups_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("groups.json");
        std::fs::write(
            &path,
            r#"[{"group_id":"@TGS#a","group_type":"Work","member_num":7,"next_msg_seq":3}]"#,
        )
        .unwrap();
        let groups = load_groups(&path).unwrap();
        assert_eq!(groups[0].group_type, GroupType::Private);
        assert_eq!(groups[0].next_msg_seq, 3);

        std::fs::write(
            &path,
            r#"[{"group_id":"a","group_type":"Public","member_num":7,"next_msg_seq":3},
                {"group_id":"a","group_type":"Public","member_num":7,"next_msg_seq":3}]"#,
        )
        .unwrap();
        let err = load_groups(&path).unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");

        std::fs::write(&path, r#"{"groups": []}"#).unwrap();
        assert!(matches!(
            load_groups(&path),
            Err(GroupsFileError::Parse { .. })
        ));
        assert!(matches!(
            load_groups(&dir.path().join("missing.json")),
            Err(GroupsFileError::Read { .. })
        ));
    }
}

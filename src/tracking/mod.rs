//! What is tracked: groups and the message-seq windows of each, validated here and stored
//! in `receipts.tracked_groups` / `receipts.seq_windows` by [`store`].

pub mod details;
pub mod follow;
pub mod store;

/// The window type lives with the plan, which is built from it (the arrow points one way:
/// tracking → plan).
pub use crate::plan::SeqWindow;

/// The longest group id the Chat API accepts, in bytes.
pub const MAX_GROUP_ID_BYTES: usize = 48;

/// Checks a group id: non-empty, at most 48 bytes, no whitespace or control characters.
pub fn validate_group_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the group id is empty".into());
    }
    if id.len() > MAX_GROUP_ID_BYTES {
        return Err(format!(
            "group id '{id}' is {} bytes long: at most {MAX_GROUP_ID_BYTES} are allowed",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "group id {id:?} contains {c:?}: whitespace and control characters are not allowed"
        ));
    }
    Ok(())
}

/// Checks a tag: non-empty, at most 64 bytes, no whitespace or commas.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && !tag
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?}: expected 1 to 64 bytes without spaces or commas"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_are_checked() {
        assert!(validate_group_id("@TGS#2TTV7VSII").is_ok());
        assert!(validate_group_id("").unwrap_err().contains("empty"));
        assert!(validate_group_id("a b").unwrap_err().contains("whitespace"));
        assert!(validate_group_id("a\u{7}").is_err());
        assert!(validate_group_id(&"x".repeat(48)).is_ok());
        assert!(validate_group_id(&"x".repeat(49))
            .unwrap_err()
            .contains("49 bytes"));
        assert!(validate_group_id(&"é".repeat(25))
            .unwrap_err()
            .contains("50 bytes"));
    }

    #[test]
    fn windows_parse_and_are_checked() {
        assert_eq!(
            SeqWindow::parse("1..500").unwrap(),
            SeqWindow { from: 1, to: 500 }
        );
        assert_eq!(
            SeqWindow::parse("7..=9").unwrap(),
            SeqWindow { from: 7, to: 9 }
        );
        assert_eq!(
            SeqWindow::parse("42").unwrap(),
            SeqWindow { from: 42, to: 42 }
        );
        assert!(SeqWindow::parse("0..5").unwrap_err().contains("start at 1"));
        assert!(SeqWindow::parse("9..5")
            .unwrap_err()
            .contains("TO must not be below FROM"));
        assert!(SeqWindow::parse("a..5")
            .unwrap_err()
            .contains("not a seq window"));
        assert!(SeqWindow::parse("1-5").is_err());
        assert_eq!(SeqWindow::parse("3..3").unwrap().len(), 1);
    }
}

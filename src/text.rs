//! Wording shared by the lines people read: summaries, dry runs, warnings.

/// `1 call`, `2 calls`, `0 calls`: a count with its noun in the right number.
pub fn count(n: impl Into<i128>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_every_other_count_plural() {
        assert_eq!(count(1u64, "call", "calls"), "1 call");
        assert_eq!(count(0i64, "group", "groups"), "0 groups");
        assert_eq!(count(2i32, "retry", "retries"), "2 retries");
    }
}

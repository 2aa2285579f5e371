//! The common query parameters every REST call carries, checked as the documentation says:
//! all five required, names and values case sensitive, the UserSig verified, the caller an
//! app admin. Error texts name the parameter, never its value (the UserSig is one of them).

use crate::chat::usersig;
use crate::secret::Secret;
use crate::sim::api::ApiError;
use percent_encoding::percent_decode_str;

/// What a call must match: the simulated app and its admin.
pub(crate) struct Expected<'a> {
    pub sdkappid: u64,
    pub key: &'a Secret,
    pub admin: &'a str,
}

/// The first value of each parameter we care about, decoded.
#[derive(Default)]
struct Params {
    sdkappid: Option<String>,
    identifier: Option<String>,
    usersig: Option<String>,
    random: Option<String>,
    contenttype: Option<String>,
}

fn parse(query: &str) -> Params {
    let mut p = Params::default();
    for pair in query.split('&').filter(|s| !s.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "sdkappid" => &mut p.sdkappid,
            "identifier" => &mut p.identifier,
            "usersig" => &mut p.usersig,
            "random" => &mut p.random,
            "contenttype" => &mut p.contenttype,
            _ => continue,
        };
        if slot.is_none() {
            // Form encoding: '+' is a space; the UserSig alphabet has no '+', so no harm.
            let value = value.replace('+', " ");
            *slot = Some(percent_decode_str(&value).decode_utf8_lossy().into_owned());
        }
    }
    p
}

/// Checks the query string of a call at `now_unix`; `Err` is the answer to give.
pub(crate) fn check(
    query: Option<&str>,
    expected: &Expected,
    now_unix: i64,
) -> Result<(), ApiError> {
    let p = parse(query.unwrap_or(""));
    let sdkappid = p
        .sdkappid
        .ok_or(ApiError::new(60012, "sdkappid is missing"))?;
    if sdkappid.parse::<u64>().ok() != Some(expected.sdkappid) {
        return Err(ApiError::new(
            60006,
            "sdkappid is not a valid SDKAppID of this server",
        ));
    }
    let identifier = p
        .identifier
        .filter(|s| !s.is_empty())
        .ok_or(ApiError::new(60004, "identifier is missing"))?;
    let sig = p
        .usersig
        .filter(|s| !s.is_empty())
        .ok_or(ApiError::new(60005, "usersig is missing"))?;
    let random = p.random.ok_or(ApiError::new(60002, "random is missing"))?;
    if random.parse::<u32>().is_err() {
        return Err(ApiError::new(
            60002,
            "random must be an integer in 0..=4294967295",
        ));
    }
    if p.contenttype.as_deref() != Some("json") {
        return Err(ApiError::new(60002, "contenttype must be json"));
    }
    usersig::verify(&sig, expected.key, expected.sdkappid, &identifier, now_unix)
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    if identifier != expected.admin {
        return Err(ApiError::new(60010, "identifier is not an app admin"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn key() -> Secret {
        Secret::new("sim key")
    }

    fn expected(key: &Secret) -> Expected<'_> {
        Expected {
            sdkappid: 1400000001,
            key,
            admin: "admin",
        }
    }

    fn query_with(identifier: &str, sig: &str) -> String {
        format!(
            "sdkappid=1400000001&identifier={identifier}&usersig={sig}&random=42&contenttype=json"
        )
    }

    fn code(query: &str) -> i64 {
        let key = key();
        match check(Some(query), &expected(&key), NOW) {
            Ok(()) => 0,
            Err(e) => e.code,
        }
    }

    #[test]
    fn valid_query_passes_with_any_order_and_percent_encoding() {
        let sig = usersig::generate(&key(), 1400000001, "admin", 3600, NOW);
        assert_eq!(code(&query_with("admin", sig.expose())), 0);
        let encoded = sig.expose().replace('*', "%2A");
        let q = format!("contenttype=json&random=4294967295&usersig={encoded}&identifier=admin&sdkappid=1400000001");
        assert_eq!(code(&q), 0);
    }

    #[test]
    fn each_parameter_is_required_and_case_sensitive() {
        let sig = usersig::generate(&key(), 1400000001, "admin", 3600, NOW);
        let good = query_with("admin", sig.expose());
        let drop = |name: &str| -> String {
            good.split('&')
                .filter(|kv| !kv.starts_with(&format!("{name}=")))
                .collect::<Vec<_>>()
                .join("&")
        };
        assert_eq!(code(&drop("sdkappid")), 60012);
        assert_eq!(code(&drop("identifier")), 60004);
        assert_eq!(code(&drop("usersig")), 60005);
        assert_eq!(code(&drop("random")), 60002);
        assert_eq!(code(&drop("contenttype")), 60002);
        assert_eq!(code(&good.replace("sdkappid=", "SdkAppId=")), 60012);
        assert_eq!(
            code(&good.replace("contenttype=json", "contenttype=JSON")),
            60002
        );
        assert_eq!(code(&good.replace("random=42", "random=4294967296")), 60002);
        assert_eq!(code(&good.replace("random=42", "random=-1")), 60002);
        assert_eq!(code(&good.replace("1400000001", "1400000002")), 60006);
        assert_eq!(code(&good.replace("1400000001", "abc")), 60006);
        assert_eq!(code(""), 60012);
    }

    #[test]
    fn usersig_and_admin_checks() {
        let expired = usersig::generate(&key(), 1400000001, "admin", 10, NOW - 100);
        assert_eq!(code(&query_with("admin", expired.expose())), 70001);
        assert_eq!(code(&query_with("admin", "garbage")), 70003);
        let wrong_key = usersig::generate(&Secret::new("other"), 1400000001, "admin", 3600, NOW);
        assert_eq!(code(&query_with("admin", wrong_key.expose())), 70009);
        let for_admin = usersig::generate(&key(), 1400000001, "admin", 3600, NOW);
        assert_eq!(code(&query_with("alice", for_admin.expose())), 70013);
        let other_app = usersig::generate(&key(), 1400000009, "admin", 3600, NOW);
        assert_eq!(code(&query_with("admin", other_app.expose())), 70014);
        let alice = usersig::generate(&key(), 1400000001, "alice", 3600, NOW);
        assert_eq!(code(&query_with("alice", alice.expose())), 60010);
    }

    #[test]
    fn error_texts_never_carry_the_usersig() {
        let key = key();
        let sig = usersig::generate(&Secret::new("other"), 1400000001, "admin", 3600, NOW);
        let err = check(
            Some(&query_with("admin", sig.expose())),
            &expected(&key),
            NOW,
        )
        .unwrap_err();
        assert!(
            !err.info.contains(sig.expose()) && !err.info.contains("sim key"),
            "{}",
            err.info
        );
    }
}

//! Who may deliver: the checks a callback passes before its body is even parsed. Pure
//! functions of the request's query string, the receiver's settings and the clock; no I/O.
//!
//! Two checks, both from the vendor's pages:
//! - **The app.** Every webhook page (e.g. "Callback After Read Receipt") says: "After
//!   receiving the webhook request, the app backend must check whether the SDKAppID contained
//!   in the request URL is the SDKAppID of the app." The URL's `SdkAppid` parameter must be
//!   exactly ours: anything else is refused 403.
//! - **The authentication token.** The Webhook Overview's "Security Considerations"
//!   (<https://www.tencentcloud.com/document/product/1047/34354>) describes it; the token is
//!   set in the console or with `set_callback_token` ("Webhook authentication token value, The
//!   maximum length of the token is 128, and the minimum length is 1, See Security
//!   Considerations for usage"). The stored English copy of that page showed only its opening
//!   sections; the same rule, in the same product's Chinese "第三方回调简介" (安全问题,
//!   <https://cloud.tencent.com/document/product/269/117703>), reads, translated: once
//!   authentication is on and a token configured, "the callback request's URL parameters gain
//!   the signature `Sign` and the signature timestamp `RequestTime`; signature algorithm:
//!   `Sign=sha256(TokenRequestTime)`" (the token followed by the time, lowercase hex). "The app
//!   backend computes sha256 from its local token and the `RequestTime` of the callback URL and
//!   compares the signatures; and checks `RequestTime` for timeliness: a `RequestTime` more than
//!   1 minute from the current time can be considered an invalid request, to prevent replay
//!   attacks." Its example (`Token=xxxxyyyy`, `RequestTime=1669872112`, `Sign=17773bc3...4061`)
//!   is a test below. A request without them, with a `Sign` that does not match, or expired is
//!   refused 401. The window is [`MAX_CLOCK_SKEW`]; the digest is [`sign`].
//!
//! Nothing here logs, and no message carries the token or a `Sign`.

use crate::secret::Secret;
use sha2::{Digest, Sha256};

/// How far `RequestTime` may be from the receiver's clock, either way (seconds).
pub const MAX_CLOCK_SKEW: i64 = 60;

/// Why a delivery was refused before its body was read. Each kind is one label of the
/// deliveries metric and one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `SdkAppid` missing or not this receiver's app: 403.
    #[error("the URL's SdkAppid is {got}, not this receiver's app {want}")]
    WrongApp { got: String, want: u64 },
    /// A token is configured and `Sign`/`RequestTime` are missing or malformed: 401.
    #[error("no valid RequestTime and Sign in the URL (a callback token is configured)")]
    Unsigned,
    /// `Sign` is not the digest of our token and `RequestTime`: 401.
    #[error("Sign does not match the configured callback token")]
    BadSign,
    /// `RequestTime` is more than [`MAX_CLOCK_SKEW`] seconds from our clock: 401.
    #[error("RequestTime is {skew} s from this host's clock (at most {MAX_CLOCK_SKEW} s)")]
    Expired { skew: i64 },
}

impl Refusal {
    /// The HTTP status the refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::WrongApp { .. } => 403,
            Refusal::Unsigned | Refusal::BadSign | Refusal::Expired { .. } => 401,
        }
    }

    /// The outcome label of the deliveries metric (and of the log line said once per kind).
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::WrongApp { .. } => "wrong_app",
            Refusal::Unsigned | Refusal::BadSign | Refusal::Expired { .. } => "bad_token",
        }
    }
}

/// The documented signature: lowercase hex SHA-256 of the token followed by `request_time`
/// (the decimal text exactly as it is in the URL). The simulator signs with it too.
pub fn sign(token: &Secret, request_time: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(token.expose().as_bytes());
    hasher.update(request_time.as_bytes());
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// The parameters of a callback URL's query string that the checks read (percent-decoded).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallbackQuery {
    pub sdkappid: Option<String>,
    pub command: Option<String>,
    pub request_time: Option<String>,
    pub sign: Option<String>,
}

impl CallbackQuery {
    /// Reads the query string (`None`: no query). Names are matched as the vendor writes
    /// them (`SdkAppid`, `CallbackCommand`, `RequestTime`, `Sign`), case-insensitively.
    pub fn parse(query: Option<&str>) -> CallbackQuery {
        let mut out = CallbackQuery::default();
        let Some(query) = query else { return out };
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.to_ascii_lowercase().as_str() {
                "sdkappid" => &mut out.sdkappid,
                "callbackcommand" => &mut out.command,
                "requesttime" => &mut out.request_time,
                "sign" => &mut out.sign,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.into_owned());
        }
        out
    }
}

/// Checks the app, then (when a token is configured) the signature and its time, against
/// `now` (Unix seconds).
pub fn check(
    query: &CallbackQuery,
    sdkappid: u64,
    token: Option<&Secret>,
    now: i64,
) -> Result<(), Refusal> {
    let app = query.sdkappid.as_deref().unwrap_or("");
    if app.trim().parse::<u64>().ok() != Some(sdkappid) {
        return Err(Refusal::WrongApp {
            got: shown(app),
            want: sdkappid,
        });
    }
    let Some(token) = token else { return Ok(()) };
    let (Some(time), Some(given)) = (query.request_time.as_deref(), query.sign.as_deref()) else {
        return Err(Refusal::Unsigned);
    };
    let Ok(at) = time.parse::<i64>() else {
        return Err(Refusal::Unsigned);
    };
    if !constant_time_eq(
        sign(token, time).as_bytes(),
        given.to_ascii_lowercase().as_bytes(),
    ) {
        return Err(Refusal::BadSign);
    }
    let skew = (now - at).abs();
    if skew > MAX_CLOCK_SKEW {
        return Err(Refusal::Expired { skew });
    }
    Ok(())
}

/// A value from the URL as a message may show it: short, printable (it is the sender's text).
fn shown(value: &str) -> String {
    if value.is_empty() {
        return "missing".into();
    }
    let clean: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(24)
        .collect();
    format!("'{clean}'")
}

/// Compares without stopping at the first difference (a timing side channel on `Sign`).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: u64 = 1_400_000_000;

    fn query(app: &str, time: Option<&str>, sign: Option<&str>) -> CallbackQuery {
        CallbackQuery {
            sdkappid: Some(app.into()),
            command: Some("Group.CallbackAfterReadReceipt".into()),
            request_time: time.map(str::to_string),
            sign: sign.map(str::to_string),
        }
    }

    #[test]
    fn the_vendors_example_signs_as_documented() {
        // 269/117703, "安全问题": Token=xxxxyyyy, RequestTime=1669872112.
        assert_eq!(
            sign(&Secret::new("xxxxyyyy"), "1669872112"),
            "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
        );
    }

    #[test]
    fn the_signature_is_sha256_of_token_then_time_in_lowercase_hex() {
        // sha256("abc") is the FIPS 180-2 test vector: token "a", RequestTime "bc".
        assert_eq!(
            sign(&Secret::new("a"), "bc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_app_must_be_ours() {
        let q = query("1400000001", None, None);
        let refused = check(&q, APP, None, 0).unwrap_err();
        assert_eq!((refused.status(), refused.kind()), (403, "wrong_app"));
        assert!(refused.to_string().contains("'1400000001'"), "{refused}");
        let missing = check(&CallbackQuery::default(), APP, None, 0).unwrap_err();
        assert!(missing.to_string().contains("missing"), "{missing}");
        assert_eq!(
            check(&query("1400000000", None, None), APP, None, 0),
            Ok(())
        );
    }

    #[test]
    fn with_a_token_the_sign_and_its_time_are_checked() {
        let token = Secret::new("kdjsgjdskgjwejsdkkjgkj");
        let now = 1_670_574_414;
        let t = now.to_string();
        let good = sign(&token, &t);
        let ok = query("1400000000", Some(&t), Some(&good));
        assert_eq!(check(&ok, APP, Some(&token), now), Ok(()));
        // Upper-case hex is the same digest.
        let upper = query("1400000000", Some(&t), Some(&good.to_uppercase()));
        assert_eq!(check(&upper, APP, Some(&token), now), Ok(()));
        // Within the window either way; one second past it is expired.
        assert_eq!(check(&ok, APP, Some(&token), now + 60), Ok(()));
        assert_eq!(check(&ok, APP, Some(&token), now - 60), Ok(()));
        assert_eq!(
            check(&ok, APP, Some(&token), now + 61),
            Err(Refusal::Expired { skew: 61 })
        );
        let other = sign(&Secret::new("another token"), &t);
        let forged = query("1400000000", Some(&t), Some(&other));
        assert_eq!(
            check(&forged, APP, Some(&token), now),
            Err(Refusal::BadSign)
        );
        // A sign for another time does not carry over.
        let replayed = query("1400000000", Some(&(now + 1).to_string()), Some(&good));
        assert_eq!(
            check(&replayed, APP, Some(&token), now),
            Err(Refusal::BadSign)
        );
        for unsigned in [
            query("1400000000", None, Some(&good)),
            query("1400000000", Some(&t), None),
            query("1400000000", Some("soon"), Some(&good)),
        ] {
            let refused = check(&unsigned, APP, Some(&token), now).unwrap_err();
            assert_eq!((refused.status(), refused.kind()), (401, "bad_token"));
        }
        // Without a token configured, an unsigned delivery of our app passes.
        assert_eq!(
            check(&query("1400000000", None, None), APP, None, now),
            Ok(())
        );
    }

    #[test]
    fn the_query_is_read_as_the_vendor_writes_it() {
        let q = CallbackQuery::parse(Some(
            "SdkAppid=1400000000&CallbackCommand=Group.CallbackAfterReadReceipt&contenttype=json\
             &ClientIP=127.0.0.1&OptPlatform=RESTAPI&RequestTime=1670574414&Sign=ab%63",
        ));
        assert_eq!(q.sdkappid.as_deref(), Some("1400000000"));
        assert_eq!(q.command.as_deref(), Some("Group.CallbackAfterReadReceipt"));
        assert_eq!(q.request_time.as_deref(), Some("1670574414"));
        assert_eq!(q.sign.as_deref(), Some("abc"));
        assert_eq!(CallbackQuery::parse(None), CallbackQuery::default());
    }

    #[test]
    fn no_message_shows_the_token_or_the_sign() {
        let token = Secret::new("a-callback-token-of-some-length");
        let t = "1670574414";
        let bad = query("1400000000", Some(t), Some("00"));
        for refused in [
            check(&bad, APP, Some(&token), 1_670_574_414).unwrap_err(),
            check(&query("x", Some(t), Some("00")), APP, Some(&token), 0).unwrap_err(),
        ] {
            let text = format!("{refused} {refused:?}");
            assert!(!text.contains(token.expose()) && !text.contains(&sign(&token, t)));
        }
    }
}

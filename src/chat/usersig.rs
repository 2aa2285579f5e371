//! UserSig: the TLS signature (version 2) that authenticates every REST call.
//!
//! The exporter generates one for its admin account; the simulator verifies what it receives.
//! Both sides share this module so that they cannot drift apart. Nothing here may put the key,
//! a signature or a UserSig into an error message or a `Debug` string.

use crate::secret::Secret;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;
use std::io::{Read, Write};

type HmacSha256 = Hmac<Sha256>;

/// The version this module writes and accepts.
const VERSION: &str = "2.0";

/// A UserSig is a few hundred bytes; anything inflating past this is not one (and a zip bomb
/// must not take the simulator down).
const MAX_DOC_BYTES: u64 = 64 * 1024;

/// The text that `TLS.sig` signs, every line ending in `\n`.
pub fn content_string(identifier: &str, sdkappid: u64, time: i64, expire: i64) -> String {
    format!("TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n")
}

/// Standard base64 of HMAC-SHA256 over `content`, keyed with the key's UTF-8 bytes.
pub fn hmac_sig(key: &Secret, content: &str) -> String {
    STANDARD.encode(mac(key, content).finalize().into_bytes())
}

fn mac(key: &Secret, content: &str) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(key.expose().as_bytes()).expect("HMAC takes keys of any length");
    mac.update(content.as_bytes());
    mac
}

/// A UserSig for `identifier`, valid `expire_secs` seconds from `now_unix`.
pub fn generate(
    key: &Secret,
    sdkappid: u64,
    identifier: &str,
    expire_secs: i64,
    now_unix: i64,
) -> Secret {
    let doc = UserSigDoc {
        ver: VERSION.to_string(),
        identifier: identifier.to_string(),
        sdkappid,
        expire: expire_secs,
        time: now_unix,
        sig: hmac_sig(
            key,
            &content_string(identifier, sdkappid, now_unix, expire_secs),
        ),
    };
    let json = serde_json::to_vec(&doc).expect("a UserSig document always serializes");
    let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
    zlib.write_all(&json)
        .expect("writing to memory cannot fail");
    let compressed = zlib.finish().expect("writing to memory cannot fail");
    let url_safe: String = STANDARD
        .encode(compressed)
        .chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect();
    Secret::new(url_safe)
}

/// The JSON document inside a UserSig.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
pub struct UserSigDoc {
    #[serde(rename = "TLS.ver")]
    pub ver: String,
    #[serde(rename = "TLS.identifier")]
    pub identifier: String,
    #[serde(rename = "TLS.sdkappid")]
    pub sdkappid: u64,
    #[serde(rename = "TLS.expire")]
    pub expire: i64,
    #[serde(rename = "TLS.time")]
    pub time: i64,
    #[serde(rename = "TLS.sig")]
    pub sig: String,
}

/// Hand-written so that `sig` never reaches a log: with the other fields it rebuilds a UserSig.
impl fmt::Debug for UserSigDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSigDoc")
            .field("ver", &self.ver)
            .field("identifier", &self.identifier)
            .field("sdkappid", &self.sdkappid)
            .field("expire", &self.expire)
            .field("time", &self.time)
            .field("sig", &"[redacted]")
            .finish()
    }
}

/// Why a UserSig was refused; each variant is one public error code of the Chat API.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserSigError {
    #[error("the UserSig could not be parsed")]
    Unparseable,
    #[error("the UserSig has expired")]
    Expired,
    #[error("the UserSig was not signed with this app's secret key")]
    WrongKey,
    #[error("the UserSig was issued for another identifier")]
    IdentifierMismatch,
    #[error("the UserSig was issued for another SDKAppID")]
    SdkAppIdMismatch,
}

impl UserSigError {
    /// The Chat API's `ErrorCode` for this refusal.
    pub fn code(&self) -> i64 {
        match self {
            UserSigError::Unparseable => 70003,
            UserSigError::Expired => 70001,
            UserSigError::WrongKey => 70009,
            UserSigError::IdentifierMismatch => 70013,
            UserSigError::SdkAppIdMismatch => 70014,
        }
    }
}

/// Undoes the URL-safe base64 (`*` `-` `_`), inflates, and parses the document. No check of
/// the signature: see [`verify`].
pub fn decode(usersig: &str) -> Result<UserSigDoc, UserSigError> {
    let standard: String = usersig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let compressed = STANDARD
        .decode(standard)
        .map_err(|_| UserSigError::Unparseable)?;
    let mut json = Vec::new();
    ZlibDecoder::new(compressed.as_slice())
        .take(MAX_DOC_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(|_| UserSigError::Unparseable)?;
    if json.len() as u64 > MAX_DOC_BYTES {
        return Err(UserSigError::Unparseable);
    }
    let doc: UserSigDoc = serde_json::from_slice(&json).map_err(|_| UserSigError::Unparseable)?;
    if doc.ver != VERSION {
        return Err(UserSigError::Unparseable);
    }
    Ok(doc)
}

/// Checks a UserSig the way the server does: the app and the account it names, then the
/// signature, then the expiry. The signature goes before the expiry so that a wrong key is
/// reported as such (regenerating will not help) even when the UserSig is also old.
pub fn verify(
    usersig: &str,
    key: &Secret,
    sdkappid: u64,
    identifier: &str,
    now_unix: i64,
) -> Result<UserSigDoc, UserSigError> {
    let doc = decode(usersig)?;
    if doc.sdkappid != sdkappid {
        return Err(UserSigError::SdkAppIdMismatch);
    }
    if doc.identifier != identifier {
        return Err(UserSigError::IdentifierMismatch);
    }
    let sig = STANDARD
        .decode(&doc.sig)
        .map_err(|_| UserSigError::WrongKey)?;
    let content = content_string(&doc.identifier, doc.sdkappid, doc.time, doc.expire);
    // verify_slice compares in constant time.
    mac(key, &content)
        .verify_slice(&sig)
        .map_err(|_| UserSigError::WrongKey)?;
    if doc.expire < 0 || now_unix > doc.time.saturating_add(doc.expire) {
        return Err(UserSigError::Expired);
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
    const APP: u64 = 1400000000;
    const TIME: i64 = 1700000000;
    const EXPIRE: i64 = 15552000;
    const KNOWN_SIG: &str = "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4=";
    const KNOWN_USERSIG: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5YFFzNPXFmekgG3zKHM1T9D3LzdODi-OKs8vCqpxcAvydnV2SSv2cy03cPcpDnA2SMgu0nUxslWoBHdYzUg__";

    fn key() -> Secret {
        Secret::new(KEY)
    }

    fn known_doc() -> UserSigDoc {
        UserSigDoc {
            ver: "2.0".into(),
            identifier: "xiaojun".into(),
            sdkappid: APP,
            expire: EXPIRE,
            time: TIME,
            sig: KNOWN_SIG.into(),
        }
    }

    #[test]
    fn known_answer_content_and_sig() {
        let content = content_string("xiaojun", APP, TIME, EXPIRE);
        assert_eq!(
            content,
            "TLS.identifier:xiaojun\nTLS.sdkappid:1400000000\nTLS.time:1700000000\nTLS.expire:15552000\n"
        );
        assert_eq!(hmac_sig(&key(), &content), KNOWN_SIG);
    }

    #[test]
    fn known_usersig_decodes_to_the_reference_document() {
        assert_eq!(decode(KNOWN_USERSIG).unwrap(), known_doc());
        assert_eq!(
            verify(KNOWN_USERSIG, &key(), APP, "xiaojun", TIME + 60).unwrap(),
            known_doc()
        );
    }

    #[test]
    fn generated_usersig_decodes_to_the_known_document_and_verifies() {
        let usersig = generate(&key(), APP, "xiaojun", EXPIRE, TIME);
        let text = usersig.expose();
        assert!(!text.contains(['+', '/', '=']), "URL-safe alphabet only");
        assert_eq!(decode(text).unwrap(), known_doc());
        assert_eq!(
            verify(text, &key(), APP, "xiaojun", TIME + EXPIRE).unwrap(),
            known_doc()
        );
    }

    #[test]
    fn expired() {
        let usersig = generate(&key(), APP, "admin", 100, TIME);
        assert_eq!(
            verify(usersig.expose(), &key(), APP, "admin", TIME + 101),
            Err(UserSigError::Expired)
        );
        let negative = generate(&key(), APP, "admin", -1, TIME);
        assert_eq!(
            verify(negative.expose(), &key(), APP, "admin", TIME),
            Err(UserSigError::Expired)
        );
    }

    #[test]
    fn wrong_key_wins_over_expiry() {
        let usersig = generate(&Secret::new("another key"), APP, "admin", 100, TIME);
        assert_eq!(
            verify(usersig.expose(), &key(), APP, "admin", TIME),
            Err(UserSigError::WrongKey)
        );
        assert_eq!(
            verify(usersig.expose(), &key(), APP, "admin", TIME + 1000),
            Err(UserSigError::WrongKey)
        );
    }

    #[test]
    fn tampered_document_fails_the_signature() {
        let mut doc = decode(KNOWN_USERSIG).unwrap();
        doc.expire += 1;
        let json = serde_json::to_vec(&doc).unwrap();
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
        zlib.write_all(&json).unwrap();
        let text = STANDARD
            .encode(zlib.finish().unwrap())
            .replace('+', "*")
            .replace('/', "-")
            .replace('=', "_");
        assert_eq!(
            verify(&text, &key(), APP, "xiaojun", TIME),
            Err(UserSigError::WrongKey)
        );
    }

    #[test]
    fn wrong_identifier_and_wrong_sdkappid() {
        let usersig = generate(&key(), APP, "admin", 100, TIME);
        let err = verify(usersig.expose(), &key(), APP, "someone", TIME).unwrap_err();
        assert_eq!(
            (err.code(), &err),
            (70013, &UserSigError::IdentifierMismatch)
        );
        let err = verify(usersig.expose(), &key(), APP + 1, "admin", TIME).unwrap_err();
        assert_eq!((err.code(), &err), (70014, &UserSigError::SdkAppIdMismatch));
    }

    #[test]
    fn garbage_is_unparseable() {
        for garbage in [
            "",
            "not base64 at all!",
            "eJyrVgrx",
            "aGVsbG8_",
            &KNOWN_USERSIG[..40],
        ] {
            let err = verify(garbage, &key(), APP, "xiaojun", TIME).unwrap_err();
            assert_eq!(
                (err.code(), &err),
                (70003, &UserSigError::Unparseable),
                "{garbage:?}"
            );
        }
        // Valid zlib and JSON, but not version 2.
        let mut doc = known_doc();
        doc.ver = "1.0".into();
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
        zlib.write_all(&serde_json::to_vec(&doc).unwrap()).unwrap();
        let text = STANDARD
            .encode(zlib.finish().unwrap())
            .replace('+', "*")
            .replace('/', "-")
            .replace('=', "_");
        assert_eq!(decode(&text), Err(UserSigError::Unparseable));
    }

    #[test]
    fn codes() {
        let codes: Vec<i64> = [
            UserSigError::Unparseable,
            UserSigError::Expired,
            UserSigError::WrongKey,
            UserSigError::IdentifierMismatch,
            UserSigError::SdkAppIdMismatch,
        ]
        .iter()
        .map(UserSigError::code)
        .collect();
        assert_eq!(codes, [70003, 70001, 70009, 70013, 70014]);
    }

    #[test]
    fn messages_and_debug_never_show_the_key_or_the_sig() {
        let usersig = generate(&key(), APP, "admin", 100, TIME);
        let doc = decode(usersig.expose()).unwrap();
        let errors = [
            verify(usersig.expose(), &key(), APP, "x", TIME).unwrap_err(),
            verify(usersig.expose(), &Secret::new("k"), APP, "admin", TIME).unwrap_err(),
            verify(usersig.expose(), &key(), APP, "admin", TIME + 1000).unwrap_err(),
        ];
        let mut text = format!("{doc:?} {usersig} {usersig:?}");
        for e in &errors {
            text.push_str(&format!(" {e} {e:?}"));
        }
        for secret in [KEY, doc.sig.as_str(), usersig.expose()] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}

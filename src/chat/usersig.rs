//! UserSig (TLS signature version 2) for the admin account.
//!
//! Placeholder with only the API the client needs: the `sim` branch owns the full module and
//! replaces this file at merge. It signs, it never logs: the result is a [`Secret`].

use crate::secret::Secret;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Write;

/// A UserSig for `identifier`, valid `expire_secs` from `now_unix`, URL-safe as it travels.
pub fn generate(
    key: &Secret,
    sdkappid: u64,
    identifier: &str,
    expire_secs: i64,
    now_unix: i64,
) -> Secret {
    let content = format!(
        "TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{now_unix}\nTLS.expire:{expire_secs}\n"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(content.as_bytes());
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    let doc = serde_json::json!({
        "TLS.ver": "2.0",
        "TLS.identifier": identifier,
        "TLS.sdkappid": sdkappid,
        "TLS.expire": expire_secs,
        "TLS.time": now_unix,
        "TLS.sig": sig,
    });
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(doc.to_string().as_bytes())
        .expect("writing to a Vec cannot fail");
    let packed = z.finish().expect("writing to a Vec cannot fail");
    let url_safe: String = STANDARD
        .encode(packed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    #[test]
    fn matches_the_reference_signature() {
        let key = Secret::new("5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e");
        let sig = generate(&key, 1_400_000_000, "xiaojun", 15_552_000, 1_700_000_000);
        let std_b64: String = sig
            .expose()
            .chars()
            .map(|c| match c {
                '*' => '+',
                '-' => '/',
                '_' => '=',
                c => c,
            })
            .collect();
        let mut json = String::new();
        ZlibDecoder::new(&STANDARD.decode(std_b64).unwrap()[..])
            .read_to_string(&mut json)
            .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            doc["TLS.sig"],
            "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4="
        );
        assert_eq!(doc["TLS.sdkappid"], 1_400_000_000u64);
        assert_eq!(doc["TLS.identifier"], "xiaojun");
        assert!(!sig.expose().contains(['+', '/', '=']));
    }
}

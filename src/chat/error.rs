//! What an answer of the Chat API means for the caller: [`classify`] decides, [`ChatError`] reports.
//!
//! Every retry decision of the client goes through [`classify`], so the table of error codes
//! lives in one tested place. Error messages name the group and the seqs, never the request URL
//! (it carries the UserSig) and never the key.

/// How a failed (or successful) attempt is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// HTTP 200 and `ErrorCode` 0.
    Success,
    /// Too many calls: back off, lower the pace, retry (bounded but generous).
    RateLimited,
    /// 70050, signature checks failing too often: every caller waits about a minute, then retries.
    Cooldown,
    /// A passing failure (internal error, 5xx, non-JSON body, timeout, closed connection): retry with backoff.
    Transient,
    /// The UserSig was refused: regenerate it once and retry, then fail as [`ErrorClass::Config`].
    UserSig,
    /// This group cannot be read in this run (bad parameter, no permission, no such group); others go on.
    Group,
    /// The configuration is wrong (key, admin account, region, sdkappid) or we sent a malformed request: stop the run.
    Config,
}

/// A failure below HTTP, or a body that is not the JSON the API always answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// No answer within the client timeout.
    Timeout,
    /// The connection could not be opened (refused, DNS, TLS handshake).
    Connect,
    /// The connection was reset or closed before a full answer.
    Closed,
    /// The answer's body could not be read.
    Body,
    /// HTTP 200 but the body is not JSON, or JSON without `ErrorCode` (a proxy's page, a truncated answer).
    NonJson,
    /// The body is longer than any real answer ([`super::client::MAX_ANSWER_BYTES`]): not read further.
    TooLarge,
    /// The request could not even be built (a bad base URL).
    Invalid,
}

/// The one place that decides how an attempt is handled.
///
/// Precedence: a transport failure, then a non-200 status, then the body's `ErrorCode`.
/// Codes not in the documented table fail the group (not the run): an unknown code must
/// neither be retried forever nor stop every other group.
pub fn classify(
    status: Option<u16>,
    error_code: Option<i64>,
    transport: Option<TransportKind>,
) -> ErrorClass {
    use ErrorClass::*;
    if let Some(kind) = transport {
        return match kind {
            TransportKind::Invalid => Config,
            _ => Transient,
        };
    }
    match status {
        Some(200) | None => {}
        Some(429) => return RateLimited,
        Some(s) if s >= 500 => return Transient,
        // The Chat API never redirects: a 3xx is not followed and, like a 404 / 403 / 400 from
        // a gateway, says the base URL points somewhere that is not the Chat API.
        Some(_) => return Config,
    }
    match error_code {
        None => Transient,
        Some(0) => Success,
        Some(60007 | 60011 | 60018 | 60019 | 10006) => RateLimited,
        Some(70050) => Cooldown,
        Some(10002 | 60008) => Transient,
        Some(70001 | 60004 | 60005 | 70003) => UserSig,
        Some(10004 | 10007 | 10010 | 10015) => Group,
        Some(
            60006 | 60010 | 60016 | 60020 | 60021 | 70009 | 70013 | 70014 | 70016 | 70020 | 60002
            | 60003 | 60009 | 60012 | 10003,
        ) => Config,
        Some(_) => Group,
    }
}

/// What to check for a configuration error code: the message a person acts on.
pub fn config_hint(code: Option<i64>) -> &'static str {
    match code {
        Some(60006 | 60016 | 70014) => "the sdkappid (TIM_SDKAPPID)",
        Some(60010 | 70013) => "the admin account (TIM_IDENTIFIER): it must be an app admin of this sdkappid",
        Some(70009 | 70001 | 60004 | 60005 | 70003) => {
            "the secret key and the admin account (TIM_IDENTIFIER) of this sdkappid, and the system clock"
        }
        Some(70016 | 70020) => "the region (TIM_REGION / TIM_API_BASE) and the sdkappid (TIM_SDKAPPID): key or app not found there",
        Some(60020) => "the Chat edition of the app: the paid edition expired",
        Some(60021) => "the IP allow-list of the app in the Chat console",
        Some(60002 | 60003 | 60009 | 60012 | 10003) => {
            "the region (TIM_REGION / TIM_API_BASE); otherwise this is a bug in the exporter's request"
        }
        _ => "the region (TIM_REGION / TIM_API_BASE): the base URL does not answer like the Chat API",
    }
}

/// `seqs 1..=50 (50)`, `seqs 1..=3, 7, 9..=12 (8)`: short even for long lists.
pub fn describe_seqs(seqs: &[u64]) -> String {
    const MAX_RUNS: usize = 4;
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &s in seqs {
        match runs.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(s) => *end = s,
            _ => runs.push((s, s)),
        }
    }
    let shown: Vec<String> = runs
        .iter()
        .take(MAX_RUNS)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..={b}")
            }
        })
        .collect();
    let more = if runs.len() > MAX_RUNS { ", …" } else { "" };
    format!("seqs {}{more} ({})", shown.join(", "), seqs.len())
}

/// `groups a, b, c (3)`, shortened after a few ids.
pub fn describe_groups(ids: &[String]) -> String {
    const MAX: usize = 3;
    let shown: Vec<&str> = ids.iter().take(MAX).map(String::as_str).collect();
    let more = if ids.len() > MAX { ", …" } else { "" };
    format!("groups {}{more} ({})", shown.join(", "), ids.len())
}

/// A failure of the Chat API client. `context` names the group and the seqs (or the group ids).
/// The answers received before a failure part-way travel beside it, in
/// [`super::Pulled`], not in the error.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("rate limited by the Chat API (code {code}) after {attempts} attempts, {context}")]
    RateLimited {
        context: String,
        code: i64,
        attempts: u32,
    },
    #[error("Chat API unavailable after {attempts} attempts, {context}: {detail}")]
    Transient {
        context: String,
        detail: String,
        attempts: u32,
    },
    #[error("{context} failed for this run: Chat API error {code} ({info})")]
    Group {
        group_id: String,
        context: String,
        code: i64,
        info: String,
    },
    #[error("configuration error, stopping the run: {detail}, {context}; check {hint}")]
    Config {
        context: String,
        code: Option<i64>,
        detail: String,
        hint: &'static str,
    },
    /// Nothing ever answered and every attempt for a while failed to connect: the run stops.
    #[error("the Chat API at {host} cannot be reached: every attempt for {secs} s failed to connect ({cause}); check TIM_REGION / TIM_API_BASE and the network")]
    Unreachable {
        host: String,
        secs: u64,
        cause: &'static str,
    },
    /// The API answered before, then every attempt failed (refused, DNS, timed out, 5xx) for
    /// the outage bound: the run stops rather than grinding on group after group.
    #[error("the Chat API at {host} stopped answering: every attempt for {secs} s failed ({cause}); the run stops here, what it received is kept (EXPORT_OUTAGE_TIMEOUT sets the bound)")]
    Outage {
        host: String,
        secs: u64,
        cause: String,
    },
}

impl ErrorClass {
    /// The class's name, as the ledger records a failed group's class.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Success => "Success",
            ErrorClass::RateLimited => "RateLimited",
            ErrorClass::Cooldown => "Cooldown",
            ErrorClass::Transient => "Transient",
            ErrorClass::UserSig => "UserSig",
            ErrorClass::Group => "Group",
            ErrorClass::Config => "Config",
        }
    }
}

impl ChatError {
    /// The class of the failure, for the caller's branch (group fails vs. run stops).
    pub fn class(&self) -> ErrorClass {
        match self {
            ChatError::RateLimited { .. } => ErrorClass::RateLimited,
            ChatError::Transient { .. } => ErrorClass::Transient,
            ChatError::Group { .. } => ErrorClass::Group,
            ChatError::Config { .. } => ErrorClass::Config,
            ChatError::Unreachable { .. } | ChatError::Outage { .. } => ErrorClass::Transient,
        }
    }

    /// True when the whole run must stop: a configuration error, an API never reached, or
    /// one that stopped answering.
    pub fn stops_run(&self) -> bool {
        matches!(
            self,
            ChatError::Config { .. } | ChatError::Unreachable { .. } | ChatError::Outage { .. }
        )
    }

    /// True when the whole run must stop (wrong key, account, region, sdkappid).
    pub fn is_config(&self) -> bool {
        self.class() == ErrorClass::Config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::*;

    fn code(c: i64) -> ErrorClass {
        classify(Some(200), Some(c), None)
    }

    #[test]
    fn every_documented_code_has_its_class() {
        let table: &[(&[i64], ErrorClass)] = &[
            (&[0], Success),
            (&[60007, 60011, 60018, 60019, 10006], RateLimited),
            (&[70050], Cooldown),
            (&[10002, 60008], Transient),
            (&[70001, 60004, 60005, 70003], UserSig),
            (&[10004, 10007, 10010, 10015], Group),
            (
                &[
                    60006, 60010, 60016, 60020, 60021, 70009, 70013, 70014, 70016, 70020, 60002,
                    60003, 60009, 60012, 10003,
                ],
                Config,
            ),
        ];
        for (codes, class) in table {
            for &c in *codes {
                assert_eq!(code(c), *class, "code {c}");
            }
        }
        assert_eq!(
            code(12345),
            Group,
            "unknown codes fail the group, not the run"
        );
    }

    #[test]
    fn http_and_transport_failures() {
        assert_eq!(classify(Some(502), None, None), Transient);
        assert_eq!(
            classify(Some(503), Some(0), None),
            Transient,
            "status wins over a body code"
        );
        assert_eq!(classify(Some(429), None, None), RateLimited);
        assert_eq!(classify(Some(404), None, None), Config);
        for redirect in [301, 302, 303, 307, 308] {
            assert_eq!(classify(Some(redirect), None, None), Config, "{redirect}");
        }
        assert_eq!(
            classify(Some(200), None, None),
            Transient,
            "no ErrorCode: wrong shape, retry"
        );
        for kind in [
            TransportKind::Timeout,
            TransportKind::Connect,
            TransportKind::Closed,
            TransportKind::Body,
            TransportKind::NonJson,
            TransportKind::TooLarge,
        ] {
            assert_eq!(classify(None, None, Some(kind)), Transient, "{kind:?}");
            assert_eq!(
                classify(Some(200), Some(0), Some(kind)),
                Transient,
                "transport wins: {kind:?}"
            );
        }
        assert_eq!(classify(None, None, Some(TransportKind::Invalid)), Config);
    }

    #[test]
    fn config_hints_name_what_to_check() {
        assert!(config_hint(Some(60010)).contains("TIM_IDENTIFIER"));
        assert!(config_hint(Some(70020)).contains("TIM_REGION"));
        assert!(config_hint(Some(60006)).contains("sdkappid"));
        assert!(config_hint(Some(70009)).contains("secret key"));
        assert!(config_hint(None).contains("TIM_API_BASE"));
    }

    #[test]
    fn seqs_are_described_compactly() {
        let seqs: Vec<u64> = (1..=50).collect();
        assert_eq!(describe_seqs(&seqs), "seqs 1..=50 (50)");
        assert_eq!(
            describe_seqs(&[1, 2, 3, 7, 9, 10]),
            "seqs 1..=3, 7, 9..=10 (6)"
        );
        assert_eq!(
            describe_seqs(&[1, 3, 5, 7, 9, 11]),
            "seqs 1, 3, 5, 7, … (6)"
        );
        assert_eq!(describe_seqs(&[u64::MAX]), format!("seqs {} (1)", u64::MAX));
        let ids: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(describe_groups(&ids), "groups a, b, c, … (4)");
    }

    #[test]
    fn config_and_group_errors_have_their_class() {
        let err = ChatError::Config {
            context: "x".into(),
            code: Some(60006),
            detail: "d".into(),
            hint: "h",
        };
        assert!(err.is_config());
        let err = ChatError::Group {
            group_id: "g".into(),
            context: "c".into(),
            code: 10010,
            info: "i".into(),
        };
        assert_eq!(err.class(), Group);
        assert!(!err.is_config());
    }
}

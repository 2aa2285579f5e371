//! The HTTP client of the Chat REST API: one request per attempt, retried by class.
//!
//! Every attempt waits for the process-wide [`RateLimiter`], sends
//! `POST {base}/v4/{service}/{command}?sdkappid&identifier&usersig&random&contenttype=json`
//! and is judged by [`classify`]. The request URL carries the UserSig: it is built, sent and
//! dropped, never formatted; reqwest errors lose their URL before they become text. No
//! redirect is followed and no `Referer` is sent (a redirect would carry the URL elsewhere),
//! answers are read only up to [`MAX_ANSWER_BYTES`], and server text is scrubbed, escaped and
//! cut ([`crate::untrusted::server_text`]) before it is kept.
//! No knowledge of Postgres, of plans or of runs: callers drive concurrency by cloning.

use super::error::{
    classify, config_hint, describe_groups, describe_seqs, ChatError, ErrorClass, TransportKind,
};
use super::limiter::RateLimiter;
use super::reach::{likely_cause, Reach, Repeats, Verdict, UNREACHABLE_AFTER};
use super::sigcache::SigCache;
use super::stats::{InvalidReason, Stats};
use super::types::{
    validate_group_infos, validate_read_page, validate_receipts, GroupInfo, Issue, Pulled,
    ReadPage, ReceiptAnswer, ReceiptItem, WrongShape,
};
use crate::backoff::full_jitter as backoff_delay;
use crate::secret::Secret;
use crate::untrusted::{server_text, Shown};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SERVICE: &str = "group_open_http_svc";
/// `get_group_info` takes at most 50 group ids.
const GROUP_INFO_CHUNK: usize = 50;
/// Longest server `ErrorInfo` kept in an error message (after the secrets are scrubbed).
const MAX_INFO: usize = 200;
/// Members per `get_group_msg_receipt_detail` page: the documented maximum, which covers every
/// group that can have receipts (at most 200 members) in one page.
pub const READ_PAGE_COUNT: usize = 200;
/// The most of an answer's body that is read. A real answer of 1,000 items (the largest batch
/// allowed) is under 100 KB, and a `get_group_info` of 50 groups far less: 8 MiB leaves every
/// real answer 80 times its size, while a hostile or broken server can make one call in flight
/// hold no more than this (instead of its whole answer, read before it was judged). A longer
/// answer is malformed: not read further, counted, retried as a transient failure.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

/// Everything the client needs; validated settings fill it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://{region domain}` or an explicit override (the simulator in tests); no trailing path.
    pub base_url: String,
    pub sdkappid: u64,
    /// The app admin account the UserSig is signed for.
    pub identifier: String,
    /// The app's secret key.
    pub key: Secret,
    /// Calls per second for the whole process, retries included.
    pub rate_limit: f64,
    /// Seqs per `get_group_msg_receipt` call at the start; lowered when the server refuses long lists.
    pub batch_size: usize,
    /// Per-request timeout; must stay above the server's own 3 s.
    pub timeout: Duration,
    /// Attempts per call for transient failures (rate limiting gets four times as many).
    pub max_attempts: u32,
    /// Lifetime of each generated UserSig; it is replaced at 80% of it.
    pub usersig_ttl: Duration,
    /// How long every attempt may fail as an outage makes it fail (refused, DNS, timed out,
    /// HTTP 5xx), with no answer in between, before every call stops ([`ChatError::Outage`]).
    pub outage_timeout: Duration,
}

impl ClientConfig {
    /// A config with the defaults: 200 calls/s, batches of 100, 10 s timeout, 8 attempts, 1-day UserSig.
    pub fn new(
        base_url: impl Into<String>,
        sdkappid: u64,
        identifier: impl Into<String>,
        key: Secret,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            sdkappid,
            identifier: identifier.into(),
            key,
            rate_limit: 200.0,
            batch_size: 100,
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            usersig_ttl: Duration::from_secs(86_400),
            outage_timeout: Duration::from_secs(30),
        }
    }
}

/// Retry timing; the defaults suit the real API, tests shorten them.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub transient_base: Duration,
    pub transient_cap: Duration,
    pub rate_limited_base: Duration,
    pub rate_limited_cap: Duration,
    /// The app-wide pause after 70050.
    pub cooldown: Duration,
    /// How many 70050 pauses one call may sit through before it fails.
    pub max_cooldowns: u32,
    /// With no answer ever, how long every attempt may fail to connect before calls stop.
    pub unreachable_after: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            transient_base: Duration::from_millis(200),
            transient_cap: Duration::from_secs(10),
            rate_limited_base: Duration::from_millis(500),
            rate_limited_cap: Duration::from_secs(10),
            cooldown: Duration::from_secs(60),
            max_cooldowns: 3,
            unreachable_after: UNREACHABLE_AFTER,
        }
    }
}

/// The Chat API client. Cheap to clone (an `Arc`), `Send + Sync`; all clones share one rate
/// limiter, one UserSig, one batch size and one set of counters.
#[derive(Clone, Debug)]
pub struct ChatClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// Base URL with the path `/v4/` appended once, so each call only joins `{service}/{command}`.
    api_root: reqwest::Url,
    sdkappid: u64,
    identifier: String,
    /// Kept to scrub it out of any text that leaves the client.
    key: Secret,
    sig: SigCache,
    limiter: RateLimiter,
    stats: Stats,
    batch_size: AtomicUsize,
    max_attempts: u32,
    tuning: Tuning,
    /// Whether the API ever answered: a run that never connects stops instead of retrying.
    reach: Reach,
    /// See [`ClientConfig::outage_timeout`].
    outage_timeout: Duration,
    /// Identical retry warnings, folded into one line with a count.
    repeats: Repeats,
}

/// What one attempt produced, before classification.
struct Attempt {
    status: Option<u16>,
    code: Option<i64>,
    transport: Option<TransportKind>,
    /// ErrorInfo, HTTP status or transport error text, secrets scrubbed.
    detail: String,
    json: Option<Value>,
    at: DateTime<Utc>,
}

impl Attempt {
    /// Whether it failed as an outage makes attempts fail: no connection, no answer in time, a
    /// connection closed mid-answer, or a gateway's 5xx. Any other answer, an error code
    /// included, comes from a live API.
    fn outage_like(&self) -> bool {
        matches!(
            self.transport,
            Some(
                TransportKind::Connect
                    | TransportKind::Timeout
                    | TransportKind::Closed
                    | TransportKind::Body
            )
        ) || self.status.is_some_and(|s| s >= 500)
    }
}

/// What a failure is about, for messages: the group and the seqs (or the group ids).
struct Ctx<'a> {
    group_id: &'a str,
    what: String,
}

fn config_error(context: &str, code: Option<i64>, detail: String) -> ChatError {
    ChatError::Config {
        context: context.to_string(),
        code,
        detail,
        hint: config_hint(code),
    }
}

fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// An answer's body as far as it was read.
enum Body {
    Complete(bytes::Bytes),
    /// Longer than [`MAX_ANSWER_BYTES`]: `seen` bytes declared or received when reading stopped.
    TooLarge {
        seen: u64,
    },
}

/// Reads the body chunk by chunk and stops past [`MAX_ANSWER_BYTES`], so a huge answer is
/// never held whole; a `Content-Length` above the cap is refused before reading anything.
async fn read_capped(mut resp: reqwest::Response) -> Result<Body, reqwest::Error> {
    let declared = resp.content_length();
    if let Some(n) = declared.filter(|&n| n > MAX_ANSWER_BYTES as u64) {
        return Ok(Body::TooLarge { seen: n });
    }
    let mut body = Vec::with_capacity(declared.map_or(16 << 10, |n| n as usize));
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            let seen = (body.len() + chunk.len()) as u64;
            return Ok(Body::TooLarge { seen });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Body::Complete(body.into()))
}

/// `host[:port]` of a URL, for messages: never its path or query.
fn host_of(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => "(no host)".to_string(),
    }
}

/// The kind of a reqwest failure, for [`classify`].
fn transport_kind(e: &reqwest::Error) -> TransportKind {
    // A connect timeout is a failure to connect (is_timeout holds too): checked first.
    if e.is_builder() {
        TransportKind::Invalid
    } else if e.is_connect() {
        TransportKind::Connect
    } else if e.is_timeout() {
        TransportKind::Timeout
    } else if e.is_body() || e.is_decode() {
        TransportKind::Body
    } else {
        TransportKind::Closed
    }
}

/// The error and its causes as text, without the request URL (it holds the UserSig).
fn reqwest_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn validate_config(cfg: &ClientConfig) -> Result<reqwest::Url, ChatError> {
    let ctx = "while setting up the Chat API client";
    let bad = |detail: String, code| Err(config_error(ctx, code, detail));
    let url = match reqwest::Url::parse(cfg.base_url.trim_end_matches('/')) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        _ => {
            return bad(
                format!("API base URL {:?} is not an http(s) URL", cfg.base_url),
                None,
            )
        }
    };
    if cfg.sdkappid == 0 {
        return bad("sdkappid is 0".into(), Some(60006));
    }
    if cfg.identifier.trim().is_empty() {
        return bad("the admin identifier is empty".into(), Some(60010));
    }
    if cfg.key.expose().is_empty() {
        return bad("the secret key is empty".into(), Some(70009));
    }
    if !(cfg.rate_limit.is_finite() && cfg.rate_limit > 0.0)
        || cfg.batch_size == 0
        || cfg.max_attempts == 0
    {
        return bad(
            "rate limit, batch size and attempts must be positive".into(),
            Some(-1),
        );
    }
    let root = format!("{}/v4/", url.as_str().trim_end_matches('/'));
    reqwest::Url::parse(&root).or_else(|_| bad("API base URL cannot take a path".into(), None))
}

impl ChatClient {
    /// A client with the default retry timing.
    pub fn new(cfg: ClientConfig) -> Result<Self, ChatError> {
        Self::with_tuning(cfg, Tuning::default())
    }

    /// A client with explicit retry timing (tests use short delays).
    pub fn with_tuning(cfg: ClientConfig, tuning: Tuning) -> Result<Self, ChatError> {
        let api_root = validate_config(&cfg)?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            // The Chat API never redirects: a 3xx is a wrong base URL (classified as such), and
            // following it would send the UserSig in the query (and a Referer) to another host.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(|e| config_error("while setting up the HTTP client", None, reqwest_text(e)))?;
        let sig = SigCache::new(
            cfg.key.clone(),
            cfg.sdkappid,
            cfg.identifier.clone(),
            cfg.usersig_ttl,
        );
        let inner = Inner {
            http,
            api_root,
            sdkappid: cfg.sdkappid,
            identifier: cfg.identifier,
            key: cfg.key,
            sig,
            limiter: RateLimiter::new(cfg.rate_limit),
            stats: Stats::default(),
            batch_size: AtomicUsize::new(cfg.batch_size),
            max_attempts: cfg.max_attempts,
            tuning,
            reach: Reach::default(),
            outage_timeout: cfg.outage_timeout,
            repeats: Repeats::default(),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The client's counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The process-wide rate limiter (e.g. to `set_rate` from a shared budget).
    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    /// The current seqs per receipt call (only ever lowered, see [`ChatClient::pull_receipts`]).
    pub fn batch_size(&self) -> usize {
        self.inner.batch_size.load(Ordering::Relaxed)
    }
}

impl ChatClient {
    /// A text from the server (or about its answer) made fit to keep: the key and `sig`, whole
    /// or in pieces, scrubbed first; then control characters escaped; then cut to `max_chars`.
    fn outside(&self, text: &str, sig: &Secret, max_chars: usize) -> String {
        server_text(text, &[sig, &self.inner.key], max_chars)
    }

    /// A 3xx answer, told by the hosts alone: the `Location` (which may echo the request's
    /// query, UserSig included) never appears whole.
    fn redirect_detail(&self, status: u16, location: Option<&str>, sig: &Secret) -> String {
        let base = host_of(&self.inner.api_root);
        let target = location
            .and_then(|l| self.inner.api_root.join(l).ok())
            .map_or_else(|| "(no valid Location)".to_string(), |u| host_of(&u));
        let text = format!(
            "the API base URL's host {base} answered HTTP {status}, redirecting to host {target}: \
             not followed (the Chat API never redirects, so the base URL points at something else)"
        );
        self.outside(&text, sig, 1000)
    }

    fn url(&self, command: &str, sig: &Secret) -> reqwest::Url {
        let mut url = self
            .inner
            .api_root
            .join(&format!("{SERVICE}/{command}"))
            .expect("service path is valid");
        url.query_pairs_mut()
            .append_pair("sdkappid", &self.inner.sdkappid.to_string())
            .append_pair("identifier", &self.inner.identifier)
            .append_pair("usersig", sig.expose())
            .append_pair("random", &rand::random::<u32>().to_string())
            .append_pair("contenttype", "json");
        url
    }

    /// One HTTP attempt; never fails, every outcome is described for [`classify`].
    ///
    /// (Over 60 lines: one request and each outcome below the body (redirect, too large, transport, status) returned where it is found; the body is judged apart.)
    async fn attempt(&self, command: &str, body: &[u8], sig: &Secret) -> Attempt {
        let started = tokio::time::Instant::now();
        let sent = self
            .inner
            .http
            .post(self.url(command, sig))
            .header("content-type", "application/json");
        let result = match sent.body(body.to_vec()).send().await {
            Ok(resp) if resp.status().is_redirection() => {
                let status = resp.status().as_u16();
                let location = resp.headers().get(reqwest::header::LOCATION);
                let location = location.and_then(|l| l.to_str().ok());
                return Attempt {
                    status: Some(status),
                    code: None,
                    transport: None,
                    detail: self.redirect_detail(status, location, sig),
                    json: None,
                    at: now_micros(),
                };
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                read_capped(resp).await.map(|b| (status, b))
            }
            Err(e) => Err(e),
        };
        let at = now_micros();
        let fail = |transport, detail| Attempt {
            status: None,
            code: None,
            transport,
            detail,
            json: None,
            at,
        };
        let (status, bytes) = match result {
            Ok((status, Body::Complete(bytes))) => (status, bytes),
            Ok((status, Body::TooLarge { seen })) => {
                self.inner.stats.invalid(InvalidReason::TooLarge, 1);
                let detail = format!(
                    "HTTP {status} with an answer of more than {seen} bytes: not read past {} MiB",
                    MAX_ANSWER_BYTES >> 20
                );
                return fail(Some(TransportKind::TooLarge), detail);
            }
            Err(e) => {
                let kind = transport_kind(&e);
                return fail(Some(kind), self.outside(&reqwest_text(e), sig, 1000));
            }
        };
        self.inner.stats.latency(started.elapsed());
        if status != 200 {
            return Attempt {
                status: Some(status),
                detail: format!("HTTP status {status} from the API base URL"),
                ..fail(None, String::new())
            };
        }
        self.judge(status, &bytes, sig, at)
    }

    /// Judges an HTTP 200 answer's body: JSON, with an `ErrorCode` that `ActionStatus` does
    /// not contradict.
    fn judge(&self, status: u16, bytes: &[u8], sig: &Secret, at: DateTime<Utc>) -> Attempt {
        let Ok(json) = serde_json::from_slice::<Value>(bytes) else {
            self.inner.stats.invalid(InvalidReason::NonJson, 1);
            return Attempt {
                status: None,
                code: None,
                transport: Some(TransportKind::NonJson),
                detail: format!(
                    "HTTP 200 with a body that is not JSON ({} bytes)",
                    bytes.len()
                ),
                json: None,
                at,
            };
        };
        let mut code = json.get("ErrorCode").and_then(Value::as_i64);
        let info = json.get("ErrorInfo").and_then(Value::as_str);
        let mut detail = self.outside(info.unwrap_or("without ErrorCode"), sig, MAX_INFO);
        // Either field saying failure is a failure: `ActionStatus: "FAIL"` beside `ErrorCode: 0`
        // is an answer that contradicts itself, malformed like one without `ErrorCode`.
        let status_ok = json
            .get("ActionStatus")
            .is_none_or(|s| s.as_str() == Some("OK"));
        if code == Some(0) && !status_ok {
            code = None;
            detail = format!("ActionStatus other than OK with ErrorCode 0 ({detail})");
        }
        if code.is_none() {
            self.inner.stats.invalid(InvalidReason::WrongShape, 1);
        }
        Attempt {
            status: Some(status),
            code,
            transport: None,
            detail,
            json: Some(json),
            at,
        }
    }
}

/// The error that ends a call whose failure of `class` has no retry left.
fn give_up(class: ErrorClass, a: &Attempt, ctx: &Ctx<'_>, attempts: u32) -> ChatError {
    let (context, code, info) = (
        ctx.what.clone(),
        a.code.unwrap_or_default(),
        a.detail.clone(),
    );
    match class {
        ErrorClass::RateLimited | ErrorClass::Cooldown => ChatError::RateLimited {
            context,
            code,
            attempts,
        },
        ErrorClass::Transient => ChatError::Transient {
            context,
            detail: info,
            attempts,
        },
        ErrorClass::Group => ChatError::Group {
            group_id: ctx.group_id.to_string(),
            context,
            code,
            info,
        },
        ErrorClass::UserSig => {
            let detail =
                format!("the Chat API refused a freshly generated UserSig: error {code} ({info})");
            config_error(&context, a.code, detail)
        }
        ErrorClass::Config | ErrorClass::Success => {
            let detail = match a.code {
                Some(c) => format!("Chat API error {c} ({info})"),
                None => info,
            };
            config_error(&context, a.code, detail)
        }
    }
}

/// " (and N more like it)" when a warning stands for repeats held back.
fn repeated(held: u64) -> String {
    match held {
        0 => String::new(),
        n => format!(" (and {n} more like it)"),
    }
}

/// Per-call retry counters, one per class that retries.
#[derive(Default)]
struct Tries {
    total: u32,
    transient: u32,
    rate_limited: u32,
    cooldowns: u32,
    sig_regenerated: bool,
    /// When the call's first attempt that failed as in an outage was sent.
    first_outage_failure: Option<tokio::time::Instant>,
}

impl ChatClient {
    /// Sends `body` to `command` until it succeeds and `parse` accepts the answer, or the
    /// failure's class says to give up.
    async fn call<T>(
        &self,
        command: &str,
        body: &impl serde::Serialize,
        ctx: &Ctx<'_>,
        parse: impl Fn(&Value, DateTime<Utc>) -> Result<T, WrongShape>,
    ) -> Result<T, ChatError> {
        let body = serde_json::to_vec(body).expect("a request body serializes to JSON");
        let mut tries = Tries::default();
        loop {
            self.inner.limiter.acquire().await;
            self.inner.stats.call();
            tries.total += 1;
            let sig = self.inner.sig.get(Utc::now().timestamp());
            let sent = tokio::time::Instant::now();
            let mut a = self.attempt(command, &body, &sig).await;
            if a.transport != Some(TransportKind::Connect) {
                self.inner.reach.connected();
            }
            if !a.outage_like() {
                self.inner.reach.answered();
            } else if let Some(since) = self.outage_since(sent, &mut tries) {
                return Err(self.outage(&a, since));
            }
            let mut class = classify(a.status, a.code, a.transport);
            if class == ErrorClass::Success {
                match parse(a.json.as_ref().expect("success has a body"), a.at) {
                    Ok(answer) => return Ok(answer),
                    Err(WrongShape) => {
                        self.inner.stats.invalid(InvalidReason::WrongShape, 1);
                        a.detail = "an answer of the wrong shape".into();
                        class = ErrorClass::Transient;
                    }
                }
            }
            self.handle_failure(class, &a, &sig, ctx, &mut tries)
                .await?;
        }
    }

    /// Waits before the retry of a failed attempt, or returns the error that ends the call.
    async fn handle_failure(
        &self,
        class: ErrorClass,
        a: &Attempt,
        sig: &Secret,
        ctx: &Ctx<'_>,
        tries: &mut Tries,
    ) -> Result<(), ChatError> {
        let mut verdict = Verdict::Transient;
        if a.transport == Some(TransportKind::Connect) {
            let window = self.inner.tuning.unreachable_after;
            verdict = self.inner.reach.connect_failed(window);
            if verdict == Verdict::Unreachable {
                return Err(self.unreachable(a, window));
            }
        }
        let t = &self.inner.tuning;
        // Every attempt since this call began failing has failed too: an outage, not this
        // call's bad luck. It waits for the verdict on the whole API with the others.
        let in_outage = tries
            .first_outage_failure
            .is_some_and(|first| self.inner.reach.failing_since_before(first));
        let delay = match self.retry_delay(class, sig, tries) {
            Some(delay) => delay,
            // Nothing ever answered, or nothing answers any more: wait for the verdict on the
            // whole API (one line for the run) rather than failing group after group on the
            // same cause.
            None if verdict == Verdict::NotYet || in_outage => backoff_delay(
                tries.transient,
                t.transient_base,
                t.transient_cap,
                &mut rand::rng(),
            ),
            None => return Err(give_up(class, a, ctx, tries.total)),
        };
        self.inner.stats.retry(class);
        let delay_ms = delay.as_millis() as u64;
        if class == ErrorClass::RateLimited {
            // Expected under load and counted in the stats: not worth a warning each.
            tracing::debug!(target: "receipt_exporter::chat", call = %ctx.what, code = a.code, attempt = tries.total,
                delay_ms, "rate limited by the Chat API, retrying");
        } else {
            // One line per distinct failure, not per attempt: an outage would flood the log.
            let text = format!(
                "Chat API attempts failed ({class:?}: {}), retrying",
                a.detail
            );
            if let Some(held) = self.inner.repeats.note(&text) {
                tracing::warn!(target: "receipt_exporter::chat", call = %ctx.what, class = ?class, code = a.code,
                    attempt = tries.total, delay_ms, repeats = held,
                    "{text}{}", repeated(held));
            }
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// The error that stops every call: nothing ever answered, and connecting kept failing.
    fn unreachable(&self, a: &Attempt, window: Duration) -> ChatError {
        ChatError::Unreachable {
            host: host_of(&self.inner.api_root),
            secs: window.as_secs(),
            cause: likely_cause(&a.detail),
        }
    }

    /// Records an attempt sent at `sent` that failed as in an outage; `Some(since)` when every
    /// attempt has failed for the outage bound, since `since`.
    fn outage_since(
        &self,
        sent: tokio::time::Instant,
        tries: &mut Tries,
    ) -> Option<tokio::time::Instant> {
        tries.first_outage_failure.get_or_insert(sent);
        let since = self.inner.reach.failed(sent);
        (since.elapsed() >= self.inner.outage_timeout).then_some(since)
    }

    /// The error that stops every call: the API stopped answering for the outage bound.
    fn outage(&self, a: &Attempt, since: tokio::time::Instant) -> ChatError {
        let cause = match a.status {
            Some(status) if status >= 500 => format!("it answered HTTP {status}"),
            _ => likely_cause(&a.detail).to_string(),
        };
        ChatError::Outage {
            host: host_of(&self.inner.api_root),
            secs: since.elapsed().as_secs(),
            cause,
        }
    }

    /// How long to wait before the next attempt, or `None` when this class has no retry left.
    /// Also does what the class asks besides waiting: slow the pace, pause all calls, re-sign.
    fn retry_delay(&self, class: ErrorClass, sig: &Secret, tries: &mut Tries) -> Option<Duration> {
        let t = &self.inner.tuning;
        match class {
            ErrorClass::RateLimited => {
                self.inner.stats.rate_limited_answer();
                self.inner.limiter.penalize();
                tries.rate_limited += 1;
                (tries.rate_limited < self.inner.max_attempts.saturating_mul(4)).then(|| {
                    backoff_delay(
                        tries.rate_limited - 1,
                        t.rate_limited_base,
                        t.rate_limited_cap,
                        &mut rand::rng(),
                    )
                })
            }
            ErrorClass::Cooldown => {
                tries.cooldowns += 1;
                (tries.cooldowns <= t.max_cooldowns).then(|| {
                    self.inner.limiter.pause_for(t.cooldown);
                    Duration::ZERO
                })
            }
            ErrorClass::Transient => {
                tries.transient += 1;
                (tries.transient < self.inner.max_attempts).then(|| {
                    backoff_delay(
                        tries.transient - 1,
                        t.transient_base,
                        t.transient_cap,
                        &mut rand::rng(),
                    )
                })
            }
            ErrorClass::UserSig => (!tries.sig_regenerated).then(|| {
                tries.sig_regenerated = true;
                self.inner.sig.regenerate(sig, Utc::now().timestamp());
                Duration::ZERO
            }),
            ErrorClass::Group | ErrorClass::Config | ErrorClass::Success => None,
        }
    }
}

impl ChatClient {
    /// Pulls the receipts of `seqs` (any length; duplicates asked once) of one group.
    ///
    /// Splits them into batches of the current batch size and calls sequentially (callers run
    /// several groups concurrently). Returns one answer per successful API call; per-item
    /// `Code`s (10062, 10004 for a single seq the server rejects) are in the items, not errors.
    /// On failure part-way, the answers already received come with the error
    /// ([`Pulled`]); [`ChatClient::pull_receipts_each`] streams them instead.
    pub async fn pull_receipts(&self, group_id: &str, seqs: &[u64]) -> Pulled {
        let mut answers = Vec::new();
        let error = self
            .pull_receipts_each(group_id, seqs, |a| answers.push(a))
            .await
            .err();
        Pulled { answers, error }
    }

    /// Like [`ChatClient::pull_receipts`], handing each answer to `each` as soon as it arrives.
    pub async fn pull_receipts_each(
        &self,
        group_id: &str,
        seqs: &[u64],
        mut each: impl FnMut(ReceiptAnswer) + Send,
    ) -> Result<(), ChatError> {
        // The planner's batches are ascending, hence without repeats: no set needed.
        let unique: std::borrow::Cow<[u64]> = if seqs.windows(2).all(|w| w[0] < w[1]) {
            seqs.into()
        } else {
            let mut seen = HashSet::with_capacity(seqs.len());
            seqs.iter().copied().filter(|s| seen.insert(*s)).collect()
        };
        let mut rest = &unique[..];
        while !rest.is_empty() {
            let (batch, tail) = rest.split_at(self.batch_size().min(rest.len()));
            self.pull_batch(group_id, batch, &mut each).await?;
            rest = tail;
        }
        Ok(())
    }

    /// One batch; on 10004 for several seqs, its halves. Returns true when this very call
    /// succeeded (not split), which tells the parent that halving helped.
    fn pull_batch<'a>(
        &'a self,
        group_id: &'a str,
        seqs: &'a [u64],
        each: &'a mut (dyn FnMut(ReceiptAnswer) + Send),
    ) -> BoxFuture<'a, Result<bool, ChatError>> {
        Box::pin(async move {
            self.inner.stats.seqs_asked(seqs.len());
            match self.receipt_call(group_id, seqs).await {
                Ok(answer) => {
                    each(answer);
                    Ok(true)
                }
                Err(ChatError::Group { code: 10004, .. }) if seqs.len() > 1 => {
                    let (left, right) = seqs.split_at(seqs.len() / 2);
                    let left_ok = self.pull_batch(group_id, left, each).await?;
                    let right_ok = self.pull_batch(group_id, right, each).await?;
                    if left_ok && right_ok {
                        self.lower_batch_size(right.len().max(left.len()), seqs.len());
                    }
                    Ok(false)
                }
                Err(ChatError::Group {
                    code: 10004, info, ..
                }) => {
                    tracing::warn!(target: "receipt_exporter::chat", group = group_id, seq = seqs[0], info = %info,
                        "the Chat API rejects this seq as an invalid parameter: recorded as item code 10004");
                    self.inner.stats.item_codes([10004]);
                    let item = ReceiptItem {
                        msg_seq: seqs[0],
                        code: 10004,
                        read_num: 0,
                        unread_num: 0,
                    };
                    each(ReceiptAnswer {
                        group_id: group_id.to_string(),
                        captured_at: now_micros(),
                        items: vec![item],
                    });
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        })
    }

    fn lower_batch_size(&self, to: usize, refused: usize) {
        let before = self.inner.batch_size.fetch_min(to, Ordering::Relaxed);
        if to < before {
            tracing::warn!(target: "receipt_exporter::chat", refused, batch_size = to,
                "the Chat API refused {refused} seqs in one call but took the halves: batch size lowered to {to}");
        }
    }

    /// One `get_group_msg_receipt` call, retried; the answer validated and counted.
    async fn receipt_call(&self, group_id: &str, seqs: &[u64]) -> Result<ReceiptAnswer, ChatError> {
        let body = ReceiptRequest { group_id, seqs };
        let ctx = Ctx {
            group_id,
            what: format!("group {group_id} {}", describe_seqs(seqs)),
        };
        let (items, issues, at) = self
            .call("get_group_msg_receipt", &body, &ctx, |json, at| {
                validate_receipts(seqs, json).map(|(items, issues)| (items, issues, at))
            })
            .await?;
        self.report_issues(group_id, &issues);
        self.inner.stats.item_codes(items.iter().map(|i| i.code));
        Ok(ReceiptAnswer {
            group_id: group_id.to_string(),
            captured_at: at,
            items,
        })
    }

    /// Counts dropped items and logs them, one line per reason, with the group and the seqs.
    fn report_issues(&self, group_id: &str, issues: &[Issue]) {
        let mut by_reason: BTreeMap<&str, (InvalidReason, Vec<u64>, u64)> = BTreeMap::new();
        for issue in issues {
            let entry =
                by_reason
                    .entry(issue.reason.as_str())
                    .or_insert((issue.reason, Vec::new(), 0));
            entry.1.extend(issue.seq);
            entry.2 += 1;
        }
        for (name, (reason, mut seqs, n)) in by_reason {
            self.inner.stats.invalid(reason, n);
            seqs.sort_unstable();
            tracing::warn!(target: "receipt_exporter::chat", group = group_id, reason = name, count = n,
                "dropped invalid receipt items: {}", describe_seqs(&seqs));
        }
    }

    /// Type, next seq and member count of groups, 50 ids per call. Per-group errors (10010)
    /// are in [`GroupInfo::error_code`]; an error of the whole call fails the whole list.
    pub async fn get_group_info(&self, group_ids: &[String]) -> Result<Vec<GroupInfo>, ChatError> {
        let mut out = Vec::with_capacity(group_ids.len());
        for chunk in group_ids.chunks(GROUP_INFO_CHUNK) {
            let body = json!({
                "GroupIdList": chunk,
                "ResponseFilter": { "GroupBaseInfoFilter": ["Type", "NextMsgSeq", "MemberNum"] },
            });
            let what = describe_groups(chunk);
            let ctx = Ctx {
                group_id: &what,
                what: what.clone(),
            };
            let (infos, issues) = self
                .call("get_group_info", &body, &ctx, |json, _| {
                    validate_group_infos(chunk, json)
                })
                .await?;
            for (issue, id) in issues {
                self.inner.stats.invalid(issue.reason, 1);
                tracing::warn!(target: "receipt_exporter::chat", group = %Shown(&id), reason = issue.reason.as_str(),
                    "dropped an invalid group info item");
            }
            // Each group's ErrorInfo and Type reach messages: scrubbed and escaped like the rest.
            let sig = self.inner.sig.get(Utc::now().timestamp());
            out.extend(infos.into_iter().map(|mut info| {
                info.error_info = self.outside(&info.error_info, &sig, MAX_INFO);
                info.group_type = info.group_type.map(|t| self.outside(&t, &sig, MAX_INFO));
                info
            }));
        }
        Ok(out)
    }
}

/// The body of a `get_group_msg_receipt` call, `{"GroupId": .., "MsgSeqList": [{"MsgSeq": ..}]}`,
/// serialized straight from the seqs: a `json!` tree of it cost ~600 bytes a seq (a map per
/// seq, and a second copy when nested), tens of MB with 64 calls of 500 seqs in flight.
struct ReceiptRequest<'a> {
    group_id: &'a str,
    seqs: &'a [u64],
}

impl serde::Serialize for ReceiptRequest<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        #[derive(serde::Serialize)]
        struct Item {
            #[serde(rename = "MsgSeq")]
            msg_seq: u64,
        }
        struct List<'a>(&'a [u64]);
        impl serde::Serialize for List<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|&msg_seq| Item { msg_seq }))
            }
        }
        let mut body = s.serialize_struct("ReceiptRequest", 2)?;
        body.serialize_field("GroupId", self.group_id)?;
        body.serialize_field("MsgSeqList", &List(self.seqs))?;
        body.end()
    }
}

/// Who read one message, as far as the pages pulled tell (`get_group_msg_receipt_detail`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadList {
    /// Each page's readers with the time its answer arrived.
    pub pages: Vec<(DateTime<Utc>, Vec<String>)>,
    /// The last page said it was the last: the list is whole.
    pub finished: bool,
    /// The server answered 10062: no read receipt exists for this message.
    pub no_receipt: bool,
    /// Pages asked for (calls that succeeded; retries are in the stats).
    pub calls: u32,
    /// A page before the last held fewer members than asked: the server pages below `Count`,
    /// so a list takes more calls than the documentation's paging promises.
    pub short_pages: bool,
}

impl ChatClient {
    /// Pages through the read list (`Filter` 0) of message `seq` of one group, asking
    /// `may_call` before each page (a run's budget of detail calls). A list cut by `may_call`
    /// or by a cursor the server sent before is not `finished`. 10062 (no receipt for this message) is an answer, not an error; other
    /// failures are classified like the receipt API's ([`ChatError::Group`] for 10004, 10007,
    /// 10010, 10015).
    pub async fn pull_read_list(
        &self,
        group_id: &str,
        seq: u64,
        mut may_call: impl FnMut() -> bool + Send,
    ) -> Result<ReadList, ChatError> {
        let mut list = ReadList::default();
        let mut cursor = String::new();
        let mut sent = HashSet::new();
        while may_call() {
            sent.insert(cursor.clone());
            let (page, at) = match self.read_page(group_id, seq, &cursor).await {
                Ok(got) => got,
                Err(ChatError::Group { code: 10062, .. }) => {
                    list.no_receipt = true;
                    list.finished = true;
                    return Ok(list);
                }
                Err(e) => return Err(e),
            };
            list.calls += 1;
            list.short_pages |= !page.finished && page.readers.len() < READ_PAGE_COUNT;
            list.pages.push((at, page.readers));
            if page.finished {
                list.finished = true;
                break;
            }
            if sent.contains(&page.cursor) {
                self.inner.stats.invalid(InvalidReason::WrongShape, 1);
                tracing::warn!(target: "receipt_exporter::chat", group = group_id, seq,
                    "the Chat API sent a read-list cursor it sent before: stopped paging this message");
                break;
            }
            cursor = page.cursor;
        }
        Ok(list)
    }

    /// One `get_group_msg_receipt_detail` page, retried; validated and counted.
    async fn read_page(
        &self,
        group_id: &str,
        seq: u64,
        cursor: &str,
    ) -> Result<(ReadPage, DateTime<Utc>), ChatError> {
        let body = json!({
            "GroupId": group_id, "MsgSeq": seq, "Filter": 0, "Cursor": cursor,
            "Count": READ_PAGE_COUNT,
        });
        let ctx = Ctx {
            group_id,
            what: format!("group {group_id} read list of seq {seq}"),
        };
        let (page, issues, at) = self
            .call("get_group_msg_receipt_detail", &body, &ctx, |json, at| {
                validate_read_page(seq, READ_PAGE_COUNT, json)
                    .map(|(page, issues)| (page, issues, at))
            })
            .await?;
        self.report_issues(group_id, &issues);
        Ok((page, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_and_its_futures_can_cross_tasks() {
        fn send_sync_clone<T: Send + Sync + Clone>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        let client = ChatClient::new(ClientConfig::new(
            "http://127.0.0.1:9",
            1,
            "a",
            Secret::new("k"),
        ))
        .unwrap();
        send_sync_clone(&client);
        send(&client.pull_receipts("g", &[1]));
        send(&client.pull_receipts_each("g", &[1], |_| {}));
        send(&client.get_group_info(&[]));
        send(&client.pull_read_list("g", 1, || true));
    }

    #[test]
    fn a_receipt_request_is_the_documented_body() {
        let body = serde_json::to_vec(&ReceiptRequest {
            group_id: "@TGS#1",
            seqs: &[7, 8],
        })
        .unwrap();
        let documented =
            json!({ "GroupId": "@TGS#1", "MsgSeqList": [{ "MsgSeq": 7 }, { "MsgSeq": 8 }] });
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), documented);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"GroupId":"@TGS#1","MsgSeqList":[{"MsgSeq":7},{"MsgSeq":8}]}"#
        );
    }

    #[test]
    fn bad_configs_are_refused_without_the_key() {
        let good = ClientConfig::new(
            "https://example.invalid",
            1,
            "admin",
            Secret::new("topsecret"),
        );
        assert!(ChatClient::new(good.clone()).is_ok());
        let cases = [
            ClientConfig {
                base_url: "ftp://x".into(),
                ..good.clone()
            },
            ClientConfig {
                base_url: "not a url".into(),
                ..good.clone()
            },
            ClientConfig {
                sdkappid: 0,
                ..good.clone()
            },
            ClientConfig {
                identifier: " ".into(),
                ..good.clone()
            },
            ClientConfig {
                key: Secret::new(""),
                ..good.clone()
            },
            ClientConfig {
                batch_size: 0,
                ..good.clone()
            },
            ClientConfig {
                rate_limit: f64::NAN,
                ..good.clone()
            },
        ];
        for cfg in cases {
            let err = ChatClient::new(cfg).unwrap_err();
            assert!(err.is_config());
            assert!(!format!("{err} {err:?}").contains("topsecret"));
        }
    }

    #[test]
    fn urls_carry_the_five_parameters_and_a_fresh_random() {
        let cfg = ClientConfig::new(
            "http://127.0.0.1:9/",
            1400000000,
            "admin one",
            Secret::new("k"),
        );
        let client = ChatClient::new(cfg).unwrap();
        let sig = Secret::new("ab*c-d_");
        let a = client.url("get_group_msg_receipt", &sig);
        assert_eq!(a.path(), "/v4/group_open_http_svc/get_group_msg_receipt");
        let q: BTreeMap<String, String> = a.query_pairs().into_owned().collect();
        assert_eq!(q["sdkappid"], "1400000000");
        assert_eq!(q["identifier"], "admin one");
        assert_eq!(q["usersig"], "ab*c-d_");
        assert_eq!(q["contenttype"], "json");
        assert!(
            a.query().unwrap().contains("usersig=ab*c-d_&"),
            "URL-safe UserSig sent as is"
        );
        let randoms: HashSet<String> = (0..20)
            .map(|_| {
                client
                    .url("x", &sig)
                    .query_pairs()
                    .find(|(k, _)| k == "random")
                    .unwrap()
                    .1
                    .into_owned()
            })
            .collect();
        assert!(randoms.len() > 15, "a new random per request");
    }
}

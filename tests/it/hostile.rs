//! Hostile servers and hostile input (issue 13). A small Chat API server of this module's own
//! serves one kind of hostile answer per test; the real binary runs against it at trace level,
//! and each test checks: no crash, no hang past the request timeout, the body cap, nothing
//! invalid stored, the item or call counted, the exit code the README gives, and no UserSig or
//! key fragment of 20+ characters in stdout, stderr, the ledger or the Parquet files.

use crate::helpers::*;
use crate::secrets::assert_clean;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use receipt_exporter::chat::client::MAX_ANSWER_BYTES;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GROUPS: [&str; 2] = ["@TGS#hostile-a", "@TGS#hostile-b"];
/// Each group is tracked 1..=SEQS and pulled in batches of 10: three calls per group.
const SEQS: u64 = 30;
/// What a hostile answer that tries to be stored says: no honest answer has it.
const FORGED_READ_NUM: u64 = 999;
/// A hostile body's length when it is not cut short.
const HUGE: u64 = 100 << 20;

/// What the server does with a `get_group_msg_receipt` call ("first" = the first attempt of each
/// batch; the retries get the honest answer).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Every call: this 3xx to the trap server, the `Location` echoing the query (UserSig too).
    Redirect(u16),
    /// Group a, always: 80001 with the UserSig in ErrorInfo after ten digits, and a piece of the
    /// key; group b, first: 10002 with the first two thirds of the UserSig.
    EchoSig,
    /// First: 10002 whose ErrorInfo forges a log line with a newline, ANSI escapes and a bidi override.
    Injection,
    /// First: a 100 MiB answer, streamed (`declared`: with that Content-Length).
    Oversized { declared: bool },
    /// First: `ActionStatus: "FAIL"` with `ErrorCode: 0` and items of forged counts.
    FailWithCodeZero,
    /// Always: three seqs of every ten with a count in 2^31..2^32 (u32, not int4).
    HugeCounts,
    /// First: the headers, then one byte of the body every 300 ms, forever.
    Drip,
}

/// What the server saw and sent.
#[derive(Default)]
struct Seen {
    /// Attempts so far per request body (a batch of a group).
    attempts: Mutex<HashMap<Vec<u8>, usize>>,
    /// Every UserSig received.
    sigs: Mutex<HashSet<String>>,
    calls: AtomicUsize,
    /// The most bytes of one hostile body handed to the connection.
    max_body_sent: AtomicU64,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

impl Server {
    /// A server in `mode`; `trap` is where redirects point.
    async fn start(mode: Mode, trap: Option<SocketAddr>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let state = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(mode, trap, state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Server { addr, seen }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn sigs(&self) -> Vec<String> {
        self.seen.sigs.lock().unwrap().iter().cloned().collect()
    }
}

fn full(status: u16, body: Value) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed_unsync())
        .unwrap()
}

fn streamed(
    chunks: impl futures::Stream<Item = Bytes> + Send + 'static,
    length: Option<u64>,
) -> hyper::Response<Body> {
    let body = StreamBody::new(chunks.map(|b| Ok::<_, Infallible>(Frame::data(b))));
    let mut resp = hyper::Response::builder().status(200);
    if let Some(n) = length {
        resp = resp.header("content-length", n);
    }
    resp.body(body.boxed_unsync()).unwrap()
}

fn fail(code: i64, info: &str) -> Value {
    json!({"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": info})
}

fn items(seqs: &[u64], read: impl Fn(u64) -> Value, unread: impl Fn(u64) -> Value) -> Value {
    let list: Vec<Value> = seqs
        .iter()
        .map(|&s| json!({"Code": 0, "MsgSeq": s, "ReadNum": read(s), "UnreadNum": unread(s)}))
        .collect();
    Value::Array(list)
}

/// The honest answer: ReadNum = seq % 7, UnreadNum = 3.
fn honest(seqs: &[u64]) -> Value {
    let list = items(seqs, |s| json!(s % 7), |_| json!(3));
    json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "GroupMsgReceiptList": list})
}

/// The seqs whose counts [`Mode::HugeCounts`] forges, and how.
fn huge_count(seq: u64) -> Option<(u64, u64)> {
    match seq % 10 {
        1 => Some((1 << 31, 3)),
        2 => Some((1, u64::from(u32::MAX))),
        3 => Some((3_000_000_000, 3)),
        _ => None,
    }
}

async fn answer(
    mode: Mode,
    trap: Option<SocketAddr>,
    seen: Arc<Seen>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Body> {
    seen.calls.fetch_add(1, Ordering::SeqCst);
    let query = req.uri().query().unwrap_or_default().to_string();
    let sig = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("usersig="))
        .unwrap_or_default()
        .to_string();
    seen.sigs.lock().unwrap().insert(sig.clone());
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Mode::Redirect(status) = mode {
        let trap = trap.expect("a trap for redirects");
        let location = format!("http://localhost:{}/steal{path}?{query}", trap.port());
        return hyper::Response::builder()
            .status(status)
            .header("location", location)
            .body(Full::new(Bytes::new()).boxed_unsync())
            .unwrap();
    }
    if path.ends_with("/get_group_info") {
        let infos: Vec<Value> = request["GroupIdList"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|id| json!({"GroupId": id, "ErrorCode": 0, "ErrorInfo": "", "Type": "Public", "MemberNum": 10, "NextMsgSeq": SEQS + 1}))
            .collect();
        return full(
            200,
            json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "GroupInfo": infos}),
        );
    }
    let group = request["GroupId"].as_str().unwrap_or_default().to_string();
    let seqs: Vec<u64> = request["MsgSeqList"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["MsgSeq"].as_u64())
        .collect();
    let first = {
        let mut attempts = seen.attempts.lock().unwrap();
        let n = attempts.entry(body.to_vec()).or_default();
        *n += 1;
        *n == 1
    };
    match mode {
        Mode::EchoSig if group == GROUPS[0] => {
            let info = format!("0123456789{sig} and a key piece {}", &KEY[7..40]);
            full(200, fail(80001, &info))
        }
        Mode::EchoSig if first => {
            let piece = &sig[..sig.len() * 2 / 3];
            full(200, fail(10002, &format!("{piece}... (cut by the server)")))
        }
        Mode::Injection if first => full(
            200,
            fail(
                10002,
                "busy\nFAKE LOG LINE: run 1 succeeded\x1b[2K\x1b[1A\u{202e}txt.exe\u{2066}",
            ),
        ),
        Mode::Oversized { declared } if first => {
            let head = Bytes::from_static(
                br#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","GroupMsgReceiptList":["#,
            );
            let item = format!(
                r#"{{"Code":0,"MsgSeq":{},"ReadNum":{FORGED_READ_NUM},"UnreadNum":1}},"#,
                seqs[0]
            );
            let chunk = Bytes::from(item.repeat((64 << 10) / item.len()));
            let count = (HUGE - head.len() as u64) / chunk.len() as u64;
            let length = head.len() as u64 + count * chunk.len() as u64;
            let mut sent = 0u64;
            let chunks = futures::stream::iter(
                std::iter::once(head).chain(std::iter::repeat_n(chunk, count as usize)),
            )
            .map(move |c| {
                sent += c.len() as u64;
                seen.max_body_sent.fetch_max(sent, Ordering::SeqCst);
                c
            });
            streamed(chunks, declared.then_some(length))
        }
        Mode::FailWithCodeZero if first => {
            let list = items(&seqs, |_| json!(FORGED_READ_NUM), |_| json!(1));
            full(
                200,
                json!({"ActionStatus": "FAIL", "ErrorCode": 0, "ErrorInfo": "", "GroupMsgReceiptList": list}),
            )
        }
        Mode::HugeCounts => {
            let read = |s: u64| json!(huge_count(s).map_or(s % 7, |c| c.0));
            let unread = |s: u64| json!(huge_count(s).map_or(3, |c| c.1));
            let list = items(&seqs, read, unread);
            full(
                200,
                json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "GroupMsgReceiptList": list}),
            )
        }
        Mode::Drip if first => {
            let drip = futures::stream::unfold(0u32, |n| async move {
                if n > 0 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let byte = if n == 0 { "{" } else { " " };
                Some((Bytes::from_static(byte.as_bytes()), n + 1))
            });
            streamed(drip, None)
        }
        _ => full(200, honest(&seqs)),
    }
}

/// A server that only counts what reaches it: where redirects point.
async fn trap() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, hits)
}

/// The binary against `server`, at trace level, with short batches and the shortest timeout.
fn exporter_at(db: &TestDb, base_url: &str, dir: &std::path::Path) -> std::process::Command {
    let mut cmd = exporter_for(db, base_url, dir);
    cmd.env("RUST_LOG", "trace")
        .env("EXPORT_BATCH_SIZE", "10")
        .env("EXPORT_REQUEST_TIMEOUT", "4");
    cmd
}

/// One run against a server in `mode`: (the output, the server, how long the run took).
async fn hostile_run(
    mode: Mode,
    db: &TestDb,
    dir: &std::path::Path,
    trap: Option<SocketAddr>,
) -> (Output, Server, Duration) {
    let server = Server::start(mode, trap).await;
    let mut cmd = exporter_at(db, &server.base_url(), dir);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || run(cmd.arg("run")))
        .await
        .unwrap();
    (out, server, started.elapsed())
}

async fn tracked_db() -> TestDb {
    let db = TestDb::new().await;
    let groups: Vec<String> = GROUPS.map(String::from).to_vec();
    track_all(&db, &groups, SEQS as i64).await;
    db
}

/// The newest ledger row, as JSON.
async fn last_run(db: &TestDb) -> Value {
    let text: String = sqlx::query_scalar(
        "SELECT to_jsonb(r)::text FROM receipts.export_runs r ORDER BY run_id DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every honest row of `groups` (seq % 7, 3), minus `except`.
fn honest_rows(
    groups: &[&str],
    except: impl Fn(u64) -> bool,
) -> std::collections::BTreeSet<(String, i64, i32, i32)> {
    groups
        .iter()
        .flat_map(|g| {
            (1..=SEQS)
                .filter(|s| !except(*s))
                .map(move |s| (g.to_string(), s as i64, (s % 7) as i32, 3))
        })
        .collect()
}

/// What both sinks hold: the same rows, exactly the expected ones.
async fn assert_stored(
    db: &TestDb,
    dir: &std::path::Path,
    expected: &std::collections::BTreeSet<(String, i64, i32, i32)>,
) {
    let pg = pg_snapshots(db).await;
    assert_eq!(
        parquet_snapshots(dir),
        pg,
        "Parquet holds what Postgres holds"
    );
    let run_id = pg.first().map_or(0, |s| s.run_id);
    assert_eq!(&rows_of(&pg, run_id), expected);
    assert!(pg.iter().all(|s| s.read_num != FORGED_READ_NUM as i32));
}

/// No secret, whole or a piece of 20+ characters, in the run's output, the ledger or the
/// Parquet files: the secrets scan of `secrets.rs`, plus every 20-character window of every
/// UserSig the server received and of the key.
async fn assert_no_secret(out: &Output, db: &TestDb, dir: &std::path::Path, server: &Server) {
    let mut texts = vec![
        ("stdout".to_string(), stdout(out)),
        ("stderr".to_string(), stderr(out)),
    ];
    let ledger: Vec<String> =
        sqlx::query_scalar("SELECT to_jsonb(r)::text FROM receipts.export_runs r")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    texts.extend(ledger.into_iter().map(|r| ("a ledger row".to_string(), r)));
    for file in all_files(dir) {
        let bytes = std::fs::read(&file).unwrap();
        texts.push((
            file.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    let sigs = server.sigs();
    assert!(!sigs.is_empty(), "the server saw the UserSig");
    let mut windows: HashMap<&[u8], &str> = HashMap::new();
    for secret in sigs.iter().map(String::as_str).chain([KEY]) {
        for w in secret.as_bytes().windows(20) {
            windows.insert(w, secret);
        }
    }
    for (what, text) in &texts {
        assert_clean(what, text);
        if let Some(w) = text
            .as_bytes()
            .windows(20)
            .find(|w| windows.contains_key(w))
        {
            panic!(
                "{what} holds a 20-character piece of a secret: {:?}",
                String::from_utf8_lossy(w)
            );
        }
    }
}

fn invalid(run: &Value, reason: &str) -> u64 {
    run["details"]["invalid_items"][reason]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_configuration_error_that_is_never_followed() {
    let db = tracked_db().await;
    let dir = tempfile::tempdir().unwrap();
    let (trap, hits) = trap().await;
    for status in [301, 302, 303, 307, 308] {
        let (out, server, took) =
            hostile_run(Mode::Redirect(status), &db, dir.path(), Some(trap)).await;
        assert_eq!(out.status.code(), Some(2), "HTTP {status}: exit 2");
        assert!(took < Duration::from_secs(20), "{took:?}");
        // The summary line names both hosts, and neither the Location's path nor its query.
        let summary = stdout(&out);
        assert!(
            summary.contains("failed: ") && summary.contains(": configuration error"),
            "{summary}"
        );
        for needle in [
            format!("host {} answered HTTP {status}", server.addr),
            format!("redirecting to host localhost:{}", trap.port()),
            "TIM_API_BASE".to_string(),
        ] {
            assert!(summary.contains(&needle), "`{needle}` in {summary}");
        }
        let all = summary + &stderr(&out);
        assert!(!all.contains("/steal") && !all.contains("usersig"), "{all}");
        let ledger = last_run(&db).await;
        assert_eq!(ledger["status"], "failed");
        assert!(ledger["error"]
            .as_str()
            .unwrap()
            .contains("redirecting to host localhost"));
        let calls = ledger["api_calls"].as_i64().unwrap();
        assert!((1..=2).contains(&calls), "not retried: {calls} calls");
        assert!(server.seen.calls.load(Ordering::SeqCst) as i64 <= calls);
        assert_no_secret(&out, &db, dir.path(), &server).await;
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no redirect was followed");
    assert!(pg_snapshots(&db).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usersig_echoed_in_error_info_is_scrubbed_before_it_is_cut() {
    let db = tracked_db().await;
    let dir = tempfile::tempdir().unwrap();
    let (out, server, _) = hostile_run(Mode::EchoSig, &db, dir.path(), None).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "group a fails, group b is exported"
    );
    let ledger = last_run(&db).await;
    assert_eq!(ledger["status"], "partial");
    let failed = ledger["details"]["failed_groups"][GROUPS[0]].to_string();
    assert!(
        failed.contains("80001") && failed.contains("0123456789[redacted]"),
        "{failed}"
    );
    assert!(
        ledger["retries"].as_i64().unwrap() >= 3,
        "group b's first attempts retried"
    );
    assert!(stderr(&out).contains("[redacted]"));
    assert_stored(&db, dir.path(), &honest_rows(&GROUPS[1..], |_| false)).await;
    assert_no_secret(&out, &db, dir.path(), &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_info_cannot_forge_log_lines_or_move_the_cursor() {
    let db = tracked_db().await;
    let dir = tempfile::tempdir().unwrap();
    for format in ["human", "json"] {
        let server = Server::start(Mode::Injection, None).await;
        let mut cmd = exporter_at(&db, &server.base_url(), dir.path());
        cmd.env("EXPORT_LOG_FORMAT", format);
        let out = tokio::task::spawn_blocking(move || run(cmd.arg("run")))
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{format}");
        let err = stderr(&out);
        assert!(
            !err.lines().any(|l| l.starts_with("FAKE LOG LINE")),
            "{format}: a forged line"
        );
        for c in ['\x1b', '\u{202e}', '\u{2066}'] {
            assert!(!err.contains(c), "{format}: {c:?} reached stderr");
        }
        assert!(
            err.contains("FAKE LOG LINE"),
            "{format}: the attempt is logged, escaped"
        );
        assert_no_secret(&out, &db, dir.path(), &server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_answer_is_not_read_past_the_cap_and_is_retried() {
    for declared in [false, true] {
        let db = tracked_db().await;
        let dir = tempfile::tempdir().unwrap();
        let (out, server, took) =
            hostile_run(Mode::Oversized { declared }, &db, dir.path(), None).await;
        assert_eq!(out.status.code(), Some(0), "declared: {declared}");
        assert!(took < Duration::from_secs(60), "{took:?}");
        // What one answer could make the client hold: the cap, plus what the two sockets'
        // buffers take in before the client stops reading; never the 100 MiB.
        let sent = server.seen.max_body_sent.load(Ordering::SeqCst);
        let bound = MAX_ANSWER_BYTES as u64 + (16 << 20);
        assert!(
            sent < bound,
            "declared {declared}: {sent} bytes of one answer sent"
        );
        let ledger = last_run(&db).await;
        assert_eq!(invalid(&ledger, "too_large"), 6, "{ledger}");
        assert!(ledger["retries"].as_i64().unwrap() >= 6);
        assert!(
            stderr(&out).contains("not read past 8 MiB"),
            "declared {declared}"
        );
        assert_stored(&db, dir.path(), &honest_rows(&GROUPS, |_| false)).await;
        assert_no_secret(&out, &db, dir.path(), &server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_status_fail_with_error_code_0_is_not_stored() {
    let db = tracked_db().await;
    let dir = tempfile::tempdir().unwrap();
    let (out, server, _) = hostile_run(Mode::FailWithCodeZero, &db, dir.path(), None).await;
    assert_eq!(out.status.code(), Some(0));
    let ledger = last_run(&db).await;
    assert_eq!(invalid(&ledger, "wrong_shape"), 6, "{ledger}");
    assert!(ledger["retries"].as_i64().unwrap() >= 6);
    assert_eq!(ledger["receipts_written"], 2 * SEQS);
    assert_stored(&db, dir.path(), &honest_rows(&GROUPS, |_| false)).await;
    assert_no_secret(&out, &db, dir.path(), &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_above_int4_are_dropped_and_counted_in_invalid_items() {
    let db = tracked_db().await;
    let dir = tempfile::tempdir().unwrap();
    let (out, server, _) = hostile_run(Mode::HugeCounts, &db, dir.path(), None).await;
    assert_eq!(out.status.code(), Some(0));
    let forged = (1..=SEQS).filter(|s| huge_count(*s).is_some()).count() as u64 * 2;
    let ledger = last_run(&db).await;
    assert_eq!(invalid(&ledger, "count_out_of_range"), forged, "{ledger}");
    assert_eq!(ledger["receipts_written"], 2 * SEQS - forged);
    assert_stored(
        &db,
        dir.path(),
        &honest_rows(&GROUPS, |s| huge_count(s).is_some()),
    )
    .await;
    assert_no_secret(&out, &db, dir.path(), &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_ends_times_out_and_is_retried() {
    let db = tracked_db().await;
    let dir = tempfile::tempdir().unwrap();
    let (out, server, took) = hostile_run(Mode::Drip, &db, dir.path(), None).await;
    assert_eq!(out.status.code(), Some(0));
    // Every first attempt waits out the 4 s request timeout at the same time, then retries.
    assert!(took < Duration::from_secs(20), "{took:?}");
    let ledger = last_run(&db).await;
    assert!(ledger["retries"].as_i64().unwrap() >= 6, "{ledger}");
    assert_stored(&db, dir.path(), &honest_rows(&GROUPS, |_| false)).await;
    assert_no_secret(&out, &db, dir.path(), &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_pushgateway_is_not_followed() {
    let db = tracked_db().await;
    let dir = tempfile::tempdir().unwrap();
    let (trap, hits) = trap().await;
    let api = Server::start(Mode::HugeCounts, None).await;
    let gateway = Server::start(Mode::Redirect(307), Some(trap)).await;
    let mut cmd = exporter_at(&db, &api.base_url(), dir.path());
    cmd.env("EXPORT_PUSHGATEWAY_URL", gateway.base_url());
    let out = tokio::task::spawn_blocking(move || run(cmd.arg("run")))
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "metrics never change the exit code"
    );
    let err = stderr(&out);
    assert!(
        err.contains("the Pushgateway's host 127.0.0.1 answered HTTP 307 Temporary Redirect, redirecting to host localhost: not followed"),
        "{err}"
    );
    assert_eq!(gateway.seen.calls.load(Ordering::SeqCst), 1);
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn track_list_shows_a_hostile_note_escaped_on_one_line() {
    let db = TestDb::new().await;
    let note = "ok\nFAKE LOG LINE\x1b[31m red \u{202e}txt.exe";
    let out = run(exporter().env("DATABASE_URL", &db.url).args([
        "track",
        "add",
        "@TGS#noted",
        "--seqs",
        "1..5",
        "--note",
        note,
    ]));
    assert_eq!(out.status.code(), Some(0));
    // A group id written by another tool, with a bidi override.
    sqlx::query("INSERT INTO receipts.tracked_groups (group_id) VALUES ('@TGS#evil\u{202e}gpj')")
        .execute(&db.pool)
        .await
        .unwrap();
    let out = run(exporter()
        .env("DATABASE_URL", &db.url)
        .args(["track", "list"]));
    let text = stdout(&out);
    assert_eq!(
        text.lines().count(),
        3,
        "a header and one line per group:\n{text}"
    );
    for c in ['\x1b', '\u{202e}'] {
        assert!(!text.contains(c), "{c:?} in {text:?}");
    }
    assert!(
        text.contains("ok\\nFAKE LOG LINE\\u{1b}[31m red \\u{202e}txt.exe"),
        "{text}"
    );
    assert!(text.contains("@TGS#evil\\u{202e}gpj"), "{text}");
    // JSON keeps the value as it is (escaped as JSON requires): it is data for programs.
    let out = run(exporter()
        .env("DATABASE_URL", &db.url)
        .args(["track", "list", "--json"]));
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let noted = json
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group_id"] == "@TGS#noted");
    assert_eq!(noted.unwrap()["note"], note);
}

#[test]
fn a_database_password_on_the_command_line_warns_and_is_never_shown() {
    let out = run(exporter().args([
        "--database-url",
        "postgres://exporter:hunter2-not-shown@127.0.0.1:1/x",
        "status",
    ]));
    assert_eq!(out.status.code(), Some(1), "Postgres is not on port 1");
    let err = stderr(&out);
    assert!(err.contains("--database-url holds a password"), "{err}");
    assert!(err.contains("PGPASSFILE"), "{err}");
    assert!(!err.contains("hunter2") && !stdout(&out).contains("hunter2"));
    let out = run(exporter()
        .env(
            "DATABASE_URL",
            "postgres://exporter:hunter2-not-shown@127.0.0.1:1/x",
        )
        .arg("status"));
    assert!(
        !stderr(&out).contains("holds a password"),
        "the environment is the advice"
    );
}

#[test]
fn an_endless_key_file_or_config_file_is_refused_at_once() {
    let started = Instant::now();
    let out = run(exporter()
        .env("TIM_SDKAPPID", SDKAPPID.to_string())
        .env("TIM_SECRET_KEY_FILE", "/dev/zero")
        .args(["usersig", "--expire", "60"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("the key file /dev/zero: it is larger than 4096 bytes"));
    let out = run(exporter().args(["--config", "/dev/zero", "status"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--config /dev/zero: cannot read the config file: it is larger than")
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

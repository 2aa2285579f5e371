//! The Chat API client over real HTTP on 127.0.0.1, against a tiny scripted server.
//!
//! The scripted server answers each request with whatever the test's script says for that
//! call number and body (error codes, 502 HTML, wrong shapes, delays), so each retry and
//! split path is driven for real through reqwest and hyper. Simulator-based tests come later.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use receipt_exporter::chat::{
    ChatClient, ChatError, ClientConfig, ErrorClass, Pulled, ReceiptAnswer, Tuning,
};
use receipt_exporter::secret::Secret;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const GROUP: &str = "@TGS#2TTV7VSII";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: HashMap<String, String>,
    raw_query: String,
    body: Value,
}

impl Seen {
    fn seqs(&self) -> Vec<u64> {
        let list = self.body["MsgSeqList"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        list.iter()
            .map(|e| e["MsgSeq"].as_u64().expect("each entry is {\"MsgSeq\": n}"))
            .collect()
    }
}

/// What the script answers.
enum Reply {
    Json(Value),
    Status(u16, &'static str),
    Text(&'static str),
    Slow(Duration, Value),
}

type Script = dyn Fn(usize, &Seen) -> Reply + Send + Sync;

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start(script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let calls = Arc::new(AtomicUsize::new(0));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (script, calls, log) = (script.clone(), calls.clone(), log.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (script, calls, log) = (script.clone(), calls.clone(), log.clone());
                        async move { Ok::<_, hyper::Error>(answer(req, &*script, &calls, &log).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Server { addr, seen }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    script: &Script,
    calls: &AtomicUsize,
    log: &Mutex<Vec<Seen>>,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or_default().to_string();
    let query = raw_query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let seen = Seen {
        path,
        query,
        raw_query,
        body,
    };
    let n = calls.fetch_add(1, Ordering::SeqCst);
    log.lock().unwrap().push(seen.clone());
    let (status, ctype, text) = match script(n, &seen) {
        Reply::Json(v) => (200, "application/json", v.to_string()),
        Reply::Status(s, text) => (s, "text/html", text.to_string()),
        Reply::Text(text) => (200, "text/html", text.to_string()),
        Reply::Slow(d, v) => {
            tokio::time::sleep(d).await;
            (200, "application/json", v.to_string())
        }
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(text)))
        .unwrap()
}

/// A good receipt answer for every seq asked: ReadNum = seq % 7, UnreadNum = 3.
fn receipts(seen: &Seen) -> Value {
    let items: Vec<Value> = seen
        .seqs()
        .iter()
        .map(|s| json!({"Code": 0, "MsgSeq": s, "ReadNum": s % 7, "UnreadNum": 3}))
        .collect();
    json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "GroupMsgReceiptList": items})
}

fn fail(code: i64, info: &str) -> Value {
    json!({"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": info})
}

fn client(server: &Server, batch_size: usize, max_attempts: u32) -> ChatClient {
    client_at(
        &server.base_url(),
        batch_size,
        max_attempts,
        Duration::from_secs(10),
    )
}

fn client_at(
    base_url: &str,
    batch_size: usize,
    max_attempts: u32,
    timeout: Duration,
) -> ChatClient {
    let cfg = ClientConfig {
        rate_limit: 1000.0,
        batch_size,
        max_attempts,
        timeout,
        ..ClientConfig::new(base_url, 1_400_000_000, "administrator", Secret::new(KEY))
    };
    ChatClient::with_tuning(cfg, quick_tuning()).unwrap()
}

/// Retry timing in milliseconds, so the tests run quickly.
fn quick_tuning() -> Tuning {
    Tuning {
        transient_base: Duration::from_millis(2),
        transient_cap: Duration::from_millis(20),
        rate_limited_base: Duration::from_millis(2),
        rate_limited_cap: Duration::from_millis(20),
        cooldown: Duration::from_millis(50),
        max_cooldowns: 2,
        unreachable_after: Duration::from_millis(300),
    }
}

/// Every item of every answer, by seq; panics on a seq answered twice.
fn by_seq(answers: &[ReceiptAnswer]) -> BTreeMap<u64, (i32, u32, u32)> {
    let mut out = BTreeMap::new();
    for a in answers {
        assert_eq!(a.group_id, GROUP);
        for i in &a.items {
            assert!(
                out.insert(i.msg_seq, (i.code, i.read_num, i.unread_num))
                    .is_none(),
                "seq {} twice",
                i.msg_seq
            );
        }
    }
    out
}

#[tokio::test]
async fn pulls_in_batches_with_the_documented_request() {
    let server = Server::start(|_, seen| Reply::Json(receipts(seen))).await;
    let client = client(&server, 100, 8);
    let seqs: Vec<u64> = (1..=250).collect();
    let answers = client
        .pull_receipts(GROUP, &seqs)
        .await
        .into_result()
        .unwrap();

    assert_eq!(answers.len(), 3);
    let got = by_seq(&answers);
    assert_eq!(got.len(), 250);
    assert_eq!(got[&10], (0, 3, 3));
    let seen = server.seen();
    assert_eq!(
        seen.iter().map(|s| s.seqs().len()).collect::<Vec<_>>(),
        vec![100, 100, 50]
    );
    let mut randoms = HashSet::new();
    for s in &seen {
        assert_eq!(s.path, "/v4/group_open_http_svc/get_group_msg_receipt");
        assert_eq!(s.query["sdkappid"], "1400000000");
        assert_eq!(s.query["identifier"], "administrator");
        assert_eq!(s.query["contenttype"], "json");
        assert!(s.raw_query.contains("&random="));
        randoms.insert(s.query["random"].parse::<u32>().expect("random is a u32"));
        let sig = &s.query["usersig"];
        assert!(
            sig.len() > 50 && !sig.contains(['%', '+', '/', '=']),
            "URL-safe UserSig sent as is"
        );
        assert_eq!(s.body["GroupId"], GROUP);
    }
    assert_eq!(randoms.len(), 3, "a fresh random per request");
    let stats = client.stats().snapshot();
    assert_eq!(
        (
            stats.calls,
            stats.seqs_asked,
            stats.receipts,
            stats.invalid_items
        ),
        (3, 250, 250, 0)
    );
    assert_eq!(stats.latency_ms.count, 3);
}

#[tokio::test]
async fn long_lists_are_split_and_the_batch_size_lowered() {
    let server = Server::start(|_, seen| {
        if seen.seqs().len() > 30 {
            Reply::Json(fail(10004, "MsgSeqList too long"))
        } else {
            Reply::Json(receipts(seen))
        }
    })
    .await;
    let client = client(&server, 100, 8);
    let seqs: Vec<u64> = (1..=200).collect();
    let answers = client
        .pull_receipts(GROUP, &seqs)
        .await
        .into_result()
        .unwrap();

    let got = by_seq(&answers);
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), seqs);
    assert!(got.values().all(|(code, _, _)| *code == 0));
    assert_eq!(
        client.batch_size(),
        25,
        "halves of 50 worked where 50 failed"
    );
    let sizes: Vec<usize> = server.seen().iter().map(|s| s.seqs().len()).collect();
    assert_eq!(sizes, vec![100, 50, 25, 25, 50, 25, 25, 25, 25, 25, 25]);
    assert_eq!(client.stats().snapshot().item_codes.get(&10004), None);
}

#[tokio::test]
async fn a_single_rejected_seq_becomes_item_code_10004() {
    let server = Server::start(|_, seen| {
        if seen.seqs().contains(&7) {
            Reply::Json(fail(10004, "invalid MsgSeq"))
        } else {
            Reply::Json(receipts(seen))
        }
    })
    .await;
    let client = client(&server, 100, 8);
    let seqs: Vec<u64> = (1..=10).collect();
    let answers = client
        .pull_receipts(GROUP, &seqs)
        .await
        .into_result()
        .unwrap();

    let got = by_seq(&answers);
    assert_eq!(got.len(), 10);
    assert_eq!(got[&7], (10004, 0, 0));
    assert!(got
        .iter()
        .filter(|(s, _)| **s != 7)
        .all(|(_, (code, _, _))| *code == 0));
    assert_eq!(
        client.batch_size(),
        100,
        "a bad seq is not a reason to shorten batches"
    );
    let stats = client.stats().snapshot();
    assert_eq!(stats.item_codes.get(&10004), Some(&1));
    assert_eq!(stats.receipts, 9);
}

#[tokio::test]
async fn an_expired_usersig_is_regenerated_and_retried() {
    let server = Server::start(|n, seen| match n {
        0 => Reply::Json(fail(70001, "UserSig expired")),
        _ => Reply::Json(receipts(seen)),
    })
    .await;
    let client = client(&server, 100, 8);
    let answers = client
        .pull_receipts(GROUP, &[1, 2, 3])
        .await
        .into_result()
        .unwrap();
    assert_eq!(by_seq(&answers).len(), 3);
    let stats = client.stats().snapshot();
    assert_eq!((stats.calls, stats.retries.usersig), (2, 1));
}

#[tokio::test]
async fn a_refused_usersig_fails_as_config_after_one_regeneration() {
    let server =
        Server::start(|_, _| Reply::Json(fail(60004, "identifier or UserSig wrong"))).await;
    let client = client(&server, 100, 8);
    let err = client
        .pull_receipts(GROUP, &[1, 2, 3])
        .await
        .into_result()
        .unwrap_err();
    assert!(err.is_config(), "{err}");
    assert_eq!(server.seen().len(), 2, "regenerated once, then stopped");
    let msg = err.to_string();
    assert!(
        msg.contains("secret key") && msg.contains("TIM_IDENTIFIER"),
        "{msg}"
    );
    assert!(
        msg.contains(GROUP) && msg.contains("seqs 1..=3 (3)"),
        "{msg}"
    );
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff() {
    let server = Server::start(|n, seen| match n {
        0 => Reply::Status(502, "<html><body>502 Bad Gateway</body></html>"),
        1 => Reply::Json(fail(10002, "internal error")),
        2 => Reply::Text("<html>maintenance</html>"),
        3 => Reply::Json(json!({"ActionStatus": "OK"})),
        4 => Reply::Json(
            json!({"ActionStatus": "OK", "ErrorCode": 0, "GroupMsgReceiptList": "nope"}),
        ),
        _ => Reply::Json(receipts(seen)),
    })
    .await;
    let client = client(&server, 100, 8);
    let answers = client
        .pull_receipts(GROUP, &[5, 6])
        .await
        .into_result()
        .unwrap();
    assert_eq!(by_seq(&answers).len(), 2);
    let stats = client.stats().snapshot();
    assert_eq!((stats.calls, stats.retries.transient), (6, 5));
    assert_eq!(stats.invalid_by_reason.get("non_json"), Some(&1));
    assert_eq!(stats.invalid_by_reason.get("wrong_shape"), Some(&2));
}

/// Under a live API (it answers, here with 10002 internal errors), a call gives up after its
/// attempts, as it always did: the group fails, the run goes on.
#[tokio::test]
async fn transient_failures_give_up_after_max_attempts() {
    let server = Server::start(|_, _| Reply::Json(fail(10002, "internal error"))).await;
    let client = client(&server, 100, 3);
    let seqs: Vec<u64> = (1..=5).collect();
    let err = client
        .pull_receipts(GROUP, &seqs)
        .await
        .into_result()
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(!err.stops_run(), "{err}");
    assert_eq!(server.seen().len(), 3);
    let msg = err.to_string();
    assert!(
        msg.contains(GROUP) && msg.contains("seqs 1..=5 (5)") && msg.contains("internal error"),
        "{msg}"
    );
}

/// Issue 24: when every attempt fails as in an outage (here a gateway's 503, nothing else
/// answered), a call does not give up on its own after its attempts: it retries until the
/// outage bound, then stops with one error for the whole API, naming the host and the cause.
#[tokio::test]
async fn an_api_that_answers_only_5xx_stops_every_call_after_the_outage_bound() {
    let server = Server::start(|_, _| Reply::Status(503, "<html>busy</html>")).await;
    let cfg = ClientConfig {
        rate_limit: 1000.0,
        max_attempts: 3,
        outage_timeout: Duration::from_millis(400),
        ..ClientConfig::new(
            server.base_url(),
            1_400_000_000,
            "administrator",
            Secret::new(KEY),
        )
    };
    let client = ChatClient::with_tuning(cfg, quick_tuning()).unwrap();
    let started = std::time::Instant::now();
    let err = client
        .pull_receipts(GROUP, &[1, 2])
        .await
        .into_result()
        .unwrap_err();
    assert!(matches!(err, ChatError::Outage { .. }), "{err:?}");
    assert!(err.stops_run());
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(server.seen().len() > 3, "retried past its 3 attempts");
    let msg = err.to_string();
    assert!(
        msg.contains(&server.addr.to_string()) && msg.contains("HTTP 503"),
        "{msg}"
    );
}

#[tokio::test]
async fn rate_limit_answers_slow_the_pace_and_are_retried() {
    let server = Server::start(|n, seen| match n {
        0 => Reply::Json(fail(60007, "REST API call frequency exceeded")),
        1 => Reply::Json(fail(10006, "operation frequency limit")),
        2 => Reply::Status(429, "slow down"),
        _ => Reply::Json(receipts(seen)),
    })
    .await;
    let client = client(&server, 100, 8);
    let before = client.limiter().pace();
    let answers = client
        .pull_receipts(GROUP, &[1])
        .await
        .into_result()
        .unwrap();
    assert_eq!(by_seq(&answers).len(), 1);
    let stats = client.stats().snapshot();
    assert_eq!(
        (
            stats.rate_limited_answers,
            stats.retries.rate_limited,
            stats.calls
        ),
        (3, 3, 4)
    );
    // Each answer cuts at least one step of 0.3% (`chat::limiter`; more when they come in
    // bursts more than 50 ms apart).
    assert!(
        client.limiter().pace() < before * 0.995,
        "pace lowered: {} -> {}",
        before,
        client.limiter().pace()
    );
}

#[tokio::test]
async fn signature_throttling_pauses_then_retries() {
    let server = Server::start(|n, seen| match n {
        0 => Reply::Json(fail(70050, "too many signature failures")),
        _ => Reply::Json(receipts(seen)),
    })
    .await;
    let client = client(&server, 100, 8);
    let started = std::time::Instant::now();
    client
        .pull_receipts(GROUP, &[1])
        .await
        .into_result()
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "waited for the cooldown"
    );
    assert_eq!(client.stats().snapshot().retries.cooldown, 1);
}

#[tokio::test]
async fn bad_answers_are_counted_and_dropped() {
    let server = Server::start(|_, _| {
        Reply::Json(
            json!({"ActionStatus": "OK", "ErrorCode": 0, "GroupMsgReceiptList": [
                {"Code": 0, "MsgSeq": 1, "ReadNum": 2, "UnreadNum": 3},
                {"Code": 0, "MsgSeq": 2, "ReadNum": 2, "UnreadNum": 3},
                {"Code": 0, "MsgSeq": 2, "ReadNum": 9, "UnreadNum": 0},
                {"Code": 0, "MsgSeq": 4, "ReadNum": -2, "UnreadNum": 3},
                {"Code": 10062, "MsgSeq": 5},
                {"Code": 0, "MsgSeq": 99, "ReadNum": 2, "UnreadNum": 3}
            ]}),
        )
    })
    .await;
    let client = client(&server, 100, 8);
    let answers = client
        .pull_receipts(GROUP, &[1, 2, 3, 4, 5])
        .await
        .into_result()
        .unwrap();
    let got = by_seq(&answers);
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![1, 5]);
    assert_eq!(got[&5], (10062, 0, 0));
    let stats = client.stats().snapshot();
    let reasons: Vec<(&str, u64)> = stats
        .invalid_by_reason
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("duplicate", 2),
            ("missing", 1),
            ("negative_count", 1),
            ("not_asked", 1)
        ]
    );
    assert_eq!(stats.invalid_items, 5);
    assert_eq!(stats.item_codes, BTreeMap::from([(0, 1), (10062, 1)]));
}

#[tokio::test]
async fn a_config_code_stops_at_once_with_what_to_check() {
    let server = Server::start(|_, _| Reply::Json(fail(60006, "SDKAppID invalid"))).await;
    let client = client(&server, 100, 8);
    let seqs: Vec<u64> = (1..=50).collect();
    let err = client
        .pull_receipts(GROUP, &seqs)
        .await
        .into_result()
        .unwrap_err();
    assert!(err.is_config());
    assert_eq!(server.seen().len(), 1, "no retry of a configuration error");
    let msg = err.to_string();
    assert!(
        msg.contains("stopping the run") && msg.contains("60006") && msg.contains("TIM_SDKAPPID"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("group {GROUP} seqs 1..=50 (50)")),
        "{msg}"
    );
}

#[tokio::test]
async fn a_group_error_keeps_the_answers_already_received() {
    let server = Server::start(|n, seen| match n {
        0 => Reply::Json(receipts(seen)),
        _ => Reply::Json(fail(10010, "group dissolved")),
    })
    .await;
    let client = client(&server, 10, 8);
    let seqs: Vec<u64> = (1..=30).collect();
    let Pulled {
        answers: kept,
        error,
    } = client.pull_receipts(GROUP, &seqs).await;
    let err = error.expect("the second call fails");
    assert_eq!(err.class(), ErrorClass::Group);
    assert!(!err.is_config());
    assert!(matches!(&err, ChatError::Group { code: 10010, group_id, .. } if group_id == GROUP));
    assert!(err.to_string().contains("seqs 11..=20 (10)"), "{err}");
    assert_eq!(
        by_seq(&kept).keys().copied().collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn group_info_in_chunks_of_fifty() {
    let server = Server::start(|_, seen| {
        let infos: Vec<Value> = seen.body["GroupIdList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| match id.as_str().unwrap() {
                "g7" => json!({"GroupId": "g7", "ErrorCode": 10010, "ErrorInfo": "no such group"}),
                id => json!({"GroupId": id, "ErrorCode": 0, "ErrorInfo": "", "Type": "Public", "NextMsgSeq": 101, "MemberNum": 12}),
            })
            .collect();
        Reply::Json(json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "GroupInfo": infos}))
    })
    .await;
    let client = client(&server, 100, 8);
    let ids: Vec<String> = (0..120).map(|i| format!("g{i}")).collect();
    let infos = client.get_group_info(&ids).await.unwrap();
    assert_eq!(infos.len(), 120);
    let seen = server.seen();
    assert_eq!(
        seen.iter()
            .map(|s| s.body["GroupIdList"].as_array().unwrap().len())
            .collect::<Vec<_>>(),
        vec![50, 50, 20]
    );
    assert_eq!(seen[0].path, "/v4/group_open_http_svc/get_group_info");
    assert!(seen[0].body["ResponseFilter"]["GroupBaseInfoFilter"]
        .as_array()
        .unwrap()
        .contains(&json!("NextMsgSeq")));
    let g7 = infos.iter().find(|g| g.group_id == "g7").unwrap();
    assert_eq!((g7.error_code, g7.next_msg_seq), (10010, None));
    let g8 = infos.iter().find(|g| g.group_id == "g8").unwrap();
    assert_eq!(
        (g8.next_msg_seq, g8.member_num, g8.group_type.as_deref()),
        (Some(101), Some(12), Some("Public"))
    );
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

/// Runs every failure path with all logs captured (TRACE, reqwest and hyper included) and
/// checks that neither a log line nor an error text holds the key or a UserSig.
#[tokio::test]
async fn no_key_or_usersig_in_logs_or_errors() {
    let logs = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = Server::start(|n, seen| match n {
        0 => Reply::Json(fail(70001, "UserSig expired")),
        1 => Reply::Status(502, "<html>bad gateway</html>"),
        2 => Reply::Slow(Duration::from_millis(1500), receipts(seen)),
        3 => Reply::Json(fail(60007, "too frequent")),
        4 => Reply::Json(json!({"ErrorCode": 0, "GroupMsgReceiptList": [{"Code": 0, "MsgSeq": 77, "ReadNum": -1}]})),
        _ => Reply::Json(fail(70009, "UserSig signed with the wrong key")),
    })
    .await;
    let client = client_at(&server.base_url(), 100, 8, Duration::from_millis(500));
    let mut texts = Vec::new();
    client
        .pull_receipts(GROUP, &[1, 2])
        .await
        .into_result()
        .unwrap();
    let err = client
        .pull_receipts(GROUP, &[3])
        .await
        .into_result()
        .unwrap_err();
    assert!(err.is_config());
    texts.push(format!("{err} {err:?}"));

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let err = client_at(&dead, 100, 2, Duration::from_millis(500))
        .pull_receipts(GROUP, &[4])
        .await
        .into_result()
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    texts.push(format!("{err} {err:?}"));

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("retrying"),
        "the failures were logged: {logs}"
    );
    assert!(
        logs.contains("timed out") || logs.contains("timeout"),
        "the timeout was hit: {logs}"
    );
    let sigs: HashSet<String> = server
        .seen()
        .iter()
        .map(|s| s.query["usersig"].clone())
        .collect();
    assert!(!sigs.is_empty());
    for text in texts.iter().chain([&logs]) {
        assert!(!text.contains(KEY), "key leaked: {text}");
        assert!(!text.contains("usersig="), "URL leaked: {text}");
        for sig in &sigs {
            assert!(!text.contains(sig.as_str()), "UserSig leaked: {text}");
        }
    }
}

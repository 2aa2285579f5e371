//! The simulator over real HTTP on 127.0.0.1: the documented contract, the read-count
//! model, the sliding-window limit and each injected fault, as a client sees them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use receipt_exporter::chat::usersig;
use receipt_exporter::secret::Secret;
use receipt_exporter::sim::{
    receipt_at, Endpoint, Faults, GroupType, SimArgs, SimConfig, SimGroup, SimStats, Simulator,
};
use serde_json::{json, Value};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const APP: u64 = 1400000001;
const KEY: &str = "sim-integration-test-key";
const ADMIN: &str = "administrator";
const SEED: u64 = 77;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn group(id: &str, group_type: GroupType, member_num: u32, messages: u64) -> SimGroup {
    SimGroup {
        group_id: id.into(),
        group_type,
        member_num,
        next_msg_seq: messages + 1,
    }
}

fn config() -> SimConfig {
    SimConfig {
        seed: SEED,
        groups: vec![
            group("@TGS#small", GroupType::Public, 30, 100),
            group("@TGS#big", GroupType::Private, 250, 10),
            group("@TGS#av", GroupType::AVChatRoom, 500, 10),
            group("@TGS#community", GroupType::Community, 50, 10),
            group("@TGS#chat", GroupType::ChatRoom, 12, 40),
        ],
        ..SimConfig::new(APP, Secret::new(KEY), ADMIN)
    }
}

fn start(config: SimConfig) -> Simulator {
    Simulator::start(config, "127.0.0.1:0".parse().unwrap()).expect("simulator binds")
}

/// A client of the simulator: the query parameters it sends are up to each test.
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(sim: &Simulator) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: sim.base_url(),
        }
    }

    fn admin_sig() -> Secret {
        usersig::generate(&Secret::new(KEY), APP, ADMIN, 3600, now())
    }

    fn query(identifier: &str, sig: &str) -> String {
        format!(
            "sdkappid={APP}&identifier={identifier}&usersig={sig}&random={}&contenttype=json",
            rand::random::<u32>()
        )
    }

    /// POSTs `body` to `path` with the given query; the parsed answer.
    async fn post_raw(&self, path: &str, query: &str, body: impl Into<reqwest::Body>) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}?{query}", self.base))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "every answered API call is HTTP 200");
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
    }

    /// A correctly authenticated call of a `group_open_http_svc` command.
    async fn call(&self, command: &str, body: Value) -> Value {
        let query = Self::query(ADMIN, Self::admin_sig().expose());
        self.post_raw(
            &format!("/v4/group_open_http_svc/{command}"),
            &query,
            body.to_string(),
        )
        .await
    }

    async fn receipts(&self, group_id: &str, seqs: &[i64]) -> Value {
        let list: Vec<Value> = seqs.iter().map(|s| json!({ "MsgSeq": s })).collect();
        self.call(
            "get_group_msg_receipt",
            json!({ "GroupId": group_id, "MsgSeqList": list }),
        )
        .await
    }

    async fn control(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/sim/{path}", self.base))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (
            status,
            serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap(),
        )
    }

    async fn stats(&self) -> SimStats {
        let resp = self
            .http
            .get(format!("{}/sim/stats", self.base))
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
    }
}

fn code(answer: &Value) -> i64 {
    answer["ErrorCode"].as_i64().expect("ErrorCode is a number")
}

/// `(Code, MsgSeq, ReadNum, UnreadNum)` of each item.
fn items(answer: &Value) -> Vec<(i64, i64, u64, u64)> {
    answer["GroupMsgReceiptList"]
        .as_array()
        .expect("GroupMsgReceiptList")
        .iter()
        .map(|i| {
            let n = |f: &str| i[f].as_i64().unwrap_or_else(|| panic!("{f} in {i}"));
            (
                n("Code"),
                n("MsgSeq"),
                n("ReadNum") as u64,
                n("UnreadNum") as u64,
            )
        })
        .collect()
}

fn expected_items(
    sim: &Simulator,
    group_id: &str,
    seqs: &[i64],
    step: u64,
) -> Vec<(i64, i64, u64, u64)> {
    let g = sim.group(group_id).unwrap();
    seqs.iter()
        .map(|&s| {
            let (c, r, u) = receipt_at(SEED, &g, u64::try_from(s).unwrap_or(0), step);
            (i64::from(c), s, u64::from(r), u64::from(u))
        })
        .collect()
}

#[tokio::test]
async fn receipts_follow_the_pure_model_and_only_advance_moves_them() {
    let sim = start(config());
    let client = Client::new(&sim);
    let seqs: Vec<i64> = [100, 0, -3, 101, 5].into_iter().chain(1..=60).collect();

    let first = client.receipts("@TGS#small", &seqs).await;
    assert_eq!(
        (
            first["ActionStatus"].as_str(),
            code(&first),
            first["ErrorInfo"].as_str()
        ),
        (Some("OK"), 0, Some(""))
    );
    assert!(first["RequestId"].as_str().is_some_and(|s| !s.is_empty()));
    let at0 = items(&first);
    assert_eq!(at0, expected_items(&sim, "@TGS#small", &seqs, 0));
    assert_eq!(
        &at0[..4].iter().map(|i| i.0).collect::<Vec<_>>(),
        &[0, 10062, 10062, 10062],
        "order kept, out of range refused"
    );
    for (c, seq, read, unread) in &at0 {
        if *c == 0 {
            assert_eq!(read + unread, 29, "seq {seq}: the sender is not a reader");
            assert_eq!(
                sim.expected("@TGS#small", *seq as u64),
                (0, *read as u32, *unread as u32)
            );
        }
    }
    assert!(
        at0.iter().filter(|i| i.0 == 10062).count() > 3,
        "some messages were sent without a receipt"
    );
    // Asking again changes nothing.
    assert_eq!(items(&client.receipts("@TGS#small", &seqs).await), at0);

    let (status, advanced) = client.control("advance", json!({ "steps": 2 })).await;
    assert_eq!((status, advanced["step"].as_u64()), (200, Some(2)));
    assert_eq!(sim.advance(3), 5);
    let at5 = items(&client.receipts("@TGS#small", &seqs).await);
    assert_eq!(at5, expected_items(&sim, "@TGS#small", &seqs, 5));
    assert!(
        at0.iter().zip(&at5).all(|(a, b)| b.2 >= a.2 && a.0 == b.0),
        "read counts never fall"
    );
    assert!(
        at0.iter().zip(&at5).any(|(a, b)| b.2 > a.2),
        "advancing moves counts"
    );
    assert!(
        at5.iter().any(|i| i.0 == 0 && i.3 == 0),
        "some messages are fully read by now"
    );

    // More than 200 members: no receipts at all, per item.
    let big = items(&client.receipts("@TGS#big", &[1, 2, 3]).await);
    assert!(
        big.iter().all(|&(c, _, r, u)| (c, r, u) == (10062, 0, 0)),
        "{big:?}"
    );
    sim.shutdown().await;
}

/// A UserSig whose document was edited after signing.
fn tampered_sig() -> String {
    let mut doc = usersig::decode(Client::admin_sig().expose()).unwrap();
    doc.expire += 3600;
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&serde_json::to_vec(&doc).unwrap()).unwrap();
    STANDARD
        .encode(zlib.finish().unwrap())
        .replace('+', "*")
        .replace('/', "-")
        .replace('=', "_")
}

#[tokio::test]
async fn authentication_and_common_parameters() {
    let sim = start(config());
    let client = Client::new(&sim);
    let key = Secret::new(KEY);
    let path = "/v4/group_open_http_svc/get_group_info";
    let body = json!({ "GroupIdList": ["@TGS#small"] }).to_string();
    let ask = async |query: String| client.post_raw(path, &query, body.clone()).await;

    let cases: Vec<(&str, String, i64)> = vec![
        (
            "valid",
            Client::query(ADMIN, Client::admin_sig().expose()),
            0,
        ),
        (
            "expired",
            Client::query(
                ADMIN,
                usersig::generate(&key, APP, ADMIN, 60, now() - 3600).expose(),
            ),
            70001,
        ),
        ("garbage", Client::query(ADMIN, "eJyrVkrOz*garbage"), 70003),
        (
            "wrong key",
            Client::query(
                ADMIN,
                usersig::generate(&Secret::new("nope"), APP, ADMIN, 3600, now()).expose(),
            ),
            70009,
        ),
        ("tampered", Client::query(ADMIN, &tampered_sig()), 70009),
        (
            "sig of another account",
            Client::query("alice", Client::admin_sig().expose()),
            70013,
        ),
        (
            "sig of another app",
            Client::query(
                ADMIN,
                usersig::generate(&key, APP + 1, ADMIN, 3600, now()).expose(),
            ),
            70014,
        ),
        (
            "not an admin",
            Client::query(
                "alice",
                usersig::generate(&key, APP, "alice", 3600, now()).expose(),
            ),
            60010,
        ),
    ];
    for (name, query, want) in cases {
        let answer = ask(query).await;
        assert_eq!(code(&answer), want, "{name}: {answer}");
        let status = if want == 0 { "OK" } else { "FAIL" };
        assert_eq!(answer["ActionStatus"], status, "{name}");
    }

    let good = Client::query(ADMIN, Client::admin_sig().expose());
    let without = |name: &str| {
        good.split('&')
            .filter(|kv| !kv.starts_with(&format!("{name}=")))
            .collect::<Vec<_>>()
            .join("&")
    };
    for (name, want) in [
        ("sdkappid", 60012),
        ("identifier", 60004),
        ("usersig", 60005),
        ("random", 60002),
        ("contenttype", 60002),
    ] {
        assert_eq!(code(&ask(without(name)).await), want, "without {name}");
    }
    assert_eq!(
        code(&ask(good.replace(&format!("sdkappid={APP}"), "sdkappid=1400000002")).await),
        60006
    );
    assert_eq!(
        code(&ask(good.replace("contenttype=json", "ContentType=json")).await),
        60002
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn group_and_batch_errors() {
    let sim = start(SimConfig {
        max_batch: 10,
        ..config()
    });
    let client = Client::new(&sim);
    let long_id = "x".repeat(49);
    for (group_id, want) in [
        ("", 10015),
        ("  ", 10015),
        ("@TGS# x", 10015),
        (long_id.as_str(), 10015),
        ("@TGS#none", 10010),
        ("@TGS#av", 10007),
        ("@TGS#community", 10007),
    ] {
        let answer = client.receipts(group_id, &[1]).await;
        assert_eq!(
            (code(&answer), answer["ActionStatus"].as_str()),
            (want, Some("FAIL")),
            "{group_id:?}"
        );
    }
    let ten: Vec<i64> = (1..=10).collect();
    let eleven: Vec<i64> = (1..=11).collect();
    assert_eq!(code(&client.receipts("@TGS#small", &ten).await), 0);
    assert_eq!(code(&client.receipts("@TGS#small", &eleven).await), 10004);
    assert_eq!(code(&client.receipts("@TGS#small", &[]).await), 10004);
    assert_eq!(
        code(
            &client
                .call(
                    "get_group_msg_receipt",
                    json!({ "GroupId": "@TGS#small", "MsgSeqList": [1, 2] })
                )
                .await
        ),
        10004,
        "bare numbers are not items"
    );
    assert_eq!(
        code(&client.call("get_group_msg_receipt", json!({})).await),
        10004
    );

    let query = Client::query(ADMIN, Client::admin_sig().expose());
    let receipt_path = "/v4/group_open_http_svc/get_group_msg_receipt";
    assert_eq!(
        code(&client.post_raw(receipt_path, &query, "{not json").await),
        60003
    );
    assert_eq!(
        code(&client.post_raw(receipt_path, &query, "").await),
        60003
    );
    assert_eq!(
        code(
            &client
                .post_raw(
                    "/v4/group_open_http_svc/get_group_msg_receipt_typo",
                    &query,
                    "{}"
                )
                .await
        ),
        10003
    );
    assert_eq!(
        code(&client.post_raw("/v4/openim/sendmsg", &query, "{}").await),
        60009
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn group_info_with_filter_unknown_groups_and_the_50_id_limit() {
    let sim = start(config());
    let client = Client::new(&sim);
    let answer = client
        .call(
            "get_group_info",
            json!({
                "GroupIdList": ["@TGS#chat", "@TGS#missing", "@TGS#big", " "],
                "ResponseFilter": { "GroupBaseInfoFilter": ["Type", "NextMsgSeq", "MemberNum"] }
            }),
        )
        .await;
    assert_eq!(code(&answer), 0);
    let infos = answer["GroupInfo"].as_array().unwrap();
    assert_eq!(infos.len(), 4);
    assert_eq!(infos[0]["GroupId"], "@TGS#chat");
    assert_eq!(
        (infos[0]["ErrorCode"].as_i64(), infos[0]["Type"].as_str()),
        (Some(0), Some("ChatRoom"))
    );
    assert_eq!(
        (
            infos[0]["NextMsgSeq"].as_u64(),
            infos[0]["MemberNum"].as_u64()
        ),
        (Some(41), Some(12))
    );
    assert!(infos[0].get("MaxMemberNum").is_none(), "filtered out");
    assert_eq!(
        (infos[1]["GroupId"].as_str(), infos[1]["ErrorCode"].as_i64()),
        (Some("@TGS#missing"), Some(10010))
    );
    assert!(infos[1].get("NextMsgSeq").is_none());
    assert_eq!(infos[2]["MemberNum"], 250);
    assert_eq!(infos[3]["ErrorCode"], 10015, "invalid ids fail per group");

    let unfiltered = client
        .call("get_group_info", json!({ "GroupIdList": ["@TGS#small"] }))
        .await;
    assert!(unfiltered["GroupInfo"][0]["MaxMemberNum"]
        .as_u64()
        .is_some());

    let fifty: Vec<String> = (0..50).map(|i| format!("@TGS#g{i}")).collect();
    let answer = client
        .call("get_group_info", json!({ "GroupIdList": fifty }))
        .await;
    assert_eq!(
        (code(&answer), answer["GroupInfo"].as_array().map(Vec::len)),
        (0, Some(50))
    );
    let fifty_one: Vec<String> = (0..51).map(|i| format!("@TGS#g{i}")).collect();
    assert_eq!(
        code(
            &client
                .call("get_group_info", json!({ "GroupIdList": fifty_one }))
                .await
        ),
        10004
    );
    assert_eq!(
        code(
            &client
                .call("get_group_info", json!({ "GroupIdList": [] }))
                .await
        ),
        10004
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn adding_messages_moves_next_msg_seq() {
    let sim = start(config());
    let client = Client::new(&sim);
    assert_eq!(
        items(&client.receipts("@TGS#chat", &[41]).await)[0].0,
        10062
    );
    let (status, answer) = client
        .control("groups/%40TGS%23chat/messages", json!({ "count": 5 }))
        .await;
    assert_eq!((status, answer["next_msg_seq"].as_u64()), (200, Some(46)));
    assert_eq!(sim.add_messages("@TGS#chat", 4), Some(50));
    assert_eq!(sim.group("@TGS#chat").unwrap().next_msg_seq, 50);
    assert_eq!(sim.add_messages("@TGS#nope", 4), None);
    let (status, _) = client
        .control("groups/%40TGS%23nope/messages", json!({ "count": 1 }))
        .await;
    assert_eq!(status, 404);

    let info = client
        .call("get_group_info", json!({ "GroupIdList": ["@TGS#chat"] }))
        .await;
    assert_eq!(info["GroupInfo"][0]["NextMsgSeq"], 50);
    let seqs: Vec<i64> = (41..=50).collect();
    let got = items(&client.receipts("@TGS#chat", &seqs).await);
    assert_eq!(got, expected_items(&sim, "@TGS#chat", &seqs, 0));
    assert!(
        got[..9].iter().any(|i| i.0 == 0),
        "new messages have receipts"
    );
    assert_eq!(got[9].0, 10062, "seq 50 is NextMsgSeq: not sent yet");
    sim.shutdown().await;
}

#[tokio::test]
async fn sliding_window_limits_each_api_separately() {
    let sim = start(SimConfig {
        rate_limit: 200,
        ..config()
    });
    let client = Client::new(&sim);
    let started = std::time::Instant::now();
    let answers =
        futures::future::join_all((0..300).map(|_| client.receipts("@TGS#small", &[1]))).await;
    let burst_took = started.elapsed();
    let ok = answers.iter().filter(|a| code(a) == 0).count() as u64;
    let limited = answers.iter().filter(|a| code(a) == 60007).count() as u64;
    assert!(answers
        .iter()
        .filter(|a| code(a) == 60007)
        .all(|a| a["ActionStatus"] == "FAIL"));
    assert_eq!(ok + limited, 300, "every call answered OK or 60007");

    // The other API has a window of its own.
    assert_eq!(
        code(
            &client
                .call("get_group_info", json!({ "GroupIdList": ["@TGS#small"] }))
                .await
        ),
        0
    );

    let stats = client.stats().await;
    assert_eq!(stats, sim.stats());
    let s = stats.endpoint(Endpoint::GroupMsgReceipt);
    assert_eq!((s.calls, s.rate_limited), (300, limited));
    assert_eq!(s.error_codes.get(&0).copied().unwrap_or(0), ok);
    assert_eq!(s.error_codes.get(&60007).copied().unwrap_or(0), limited);
    assert!(s.max_accepted_in_any_second <= 200, "{s:?}");
    assert!(s.max_calls_in_any_second >= s.max_accepted_in_any_second);
    if limited > 0 {
        assert!(
            s.max_calls_in_any_second > 200,
            "a refusal needs 201 arrivals in a second: {s:?}"
        );
    }
    // On any machine able to run the suite the burst fits in a second; then it is exact.
    if burst_took < Duration::from_secs(1) {
        assert_eq!((ok, limited), (200, 100));
        assert_eq!(
            (s.max_calls_in_any_second, s.max_accepted_in_any_second),
            (300, 200)
        );
    }
    let info = stats.endpoint(Endpoint::GroupInfo);
    assert_eq!(
        (info.calls, info.rate_limited, info.max_calls_in_any_second),
        (1, 0, 1)
    );
    sim.shutdown().await;
}

fn with_faults(faults: Faults) -> Simulator {
    start(SimConfig { faults, ..config() })
}

#[tokio::test]
async fn each_fault_is_observable_by_a_client() {
    let sim = with_faults(Faults {
        http_502: 1.0,
        ..Faults::default()
    });
    let client = Client::new(&sim);
    let query = Client::query(ADMIN, Client::admin_sig().expose());
    let resp = client
        .http
        .post(format!(
            "{}/v4/group_open_http_svc/get_group_info?{query}",
            client.base
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(resp.text().await.unwrap().contains("502 Bad Gateway"));
    assert_eq!(sim.stats().endpoint(Endpoint::GroupInfo).faults.http_502, 1);
    sim.shutdown().await;

    let sim = with_faults(Faults {
        internal_10002: 1.0,
        ..Faults::default()
    });
    let answer = Client::new(&sim).receipts("@TGS#small", &[1]).await;
    assert_eq!(
        (code(&answer), answer["ActionStatus"].as_str()),
        (10002, Some("FAIL"))
    );
    assert_eq!(
        sim.stats()
            .endpoint(Endpoint::GroupMsgReceipt)
            .faults
            .internal_10002,
        1
    );
    sim.shutdown().await;

    let sim = with_faults(Faults {
        drop_connection: 1.0,
        ..Faults::default()
    });
    let client = Client::new(&sim);
    let err = client
        .http
        .post(format!(
            "{}/v4/group_open_http_svc/get_group_info?{query}",
            client.base
        ))
        .body("{}")
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout() && err.status().is_none(), "{err}");
    assert_eq!(sim.stats().endpoint(Endpoint::GroupInfo).faults.dropped, 1);
    sim.shutdown().await;

    let slow = Faults {
        slow: 1.0,
        slow_delay: Duration::from_millis(600),
        ..Faults::default()
    };
    let sim = with_faults(slow);
    let client = Client::new(&sim);
    let err = client
        .http
        .post(format!(
            "{}/v4/group_open_http_svc/get_group_info?{query}",
            client.base
        ))
        .timeout(Duration::from_millis(150))
        .body("{}")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(sim.stats().endpoint(Endpoint::GroupInfo).faults.slow, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let sim = start(SimConfig {
        latency: Duration::from_millis(120),
        latency_jitter: Duration::from_millis(20),
        ..config()
    });
    let client = Client::new(&sim);
    let started = std::time::Instant::now();
    assert_eq!(code(&client.receipts("@TGS#small", &[1]).await), 0);
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn step_every_advances_on_the_clock() {
    let sim = start(SimConfig {
        step_every: Some(Duration::from_secs(10)),
        ..config()
    });
    assert_eq!(sim.step(), 0);
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(sim.step(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn serve_runs_until_shutdown_and_then_stops_listening() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let args = Cli::parse_from([
        "sim",
        "--port",
        &port.to_string(),
        "--groups",
        "3",
        "--seed",
        "4",
    ])
    .sim;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(receipt_exporter::sim::serve(
        args,
        APP,
        Secret::new(KEY),
        ADMIN.into(),
        None,
        async {
            let _ = stopped.await;
        },
    ));
    let url = format!("http://127.0.0.1:{port}/sim/groups");
    let http = reqwest::Client::new();
    let mut groups = None;
    for _ in 0..100 {
        if let Ok(resp) = http.get(&url).send().await {
            groups = Some(
                serde_json::from_slice::<Vec<SimGroup>>(&resp.bytes().await.unwrap()).unwrap(),
            );
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let groups = groups.expect("serve answers once bound");
    assert_eq!(
        groups
            .iter()
            .map(|g| g.group_id.as_str())
            .collect::<Vec<_>>(),
        ["@TGS#sim4-1", "@TGS#sim4-2", "@TGS#sim4-3"]
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(
        reqwest::Client::new().get(&url).send().await.is_err(),
        "nothing listens after shutdown"
    );
}

/// `simulate` logs the ids of its groups, the ones a user trying it must `track add`.
#[test]
fn the_simulate_command_names_its_group_ids() {
    use std::io::{BufRead, BufReader};
    let mut child = crate::helpers::exporter()
        .env("TIM_SDKAPPID", APP.to_string())
        .env("TIM_SECRET_KEY", KEY)
        .args(["simulate", "--port", "0", "--groups", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut ready = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if line.contains("simulator ready") {
            ready = line;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready.contains("@TGS#sim1-1 .. @TGS#sim1-3"), "{ready}");
}

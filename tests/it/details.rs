//! Issue 19: who read each message (`get_group_msg_receipt_detail`), from the client's paging
//! against the simulator to `receipts.read_events` after runs of the real binary.

use crate::helpers::*;
use bytes::Bytes;
use hmac::Mac;
use http_body_util::{BodyExt, Full};
use receipt_exporter::chat::{ChatClient, ChatError, ClientConfig};
use receipt_exporter::secret::Secret;
use receipt_exporter::sim::{SimGroup, Simulator};

fn client(sim: &Simulator) -> ChatClient {
    ChatClient::new(ClientConfig::new(
        sim.base_url(),
        SDKAPPID,
        "administrator",
        Secret::new(KEY),
    ))
    .unwrap()
}

/// The first message of `group` with a receipt and at least `min_read` readers now.
fn message_with_readers(sim: &Simulator, group: &SimGroup, min_read: usize) -> u64 {
    (1..group.next_msg_seq)
        .find(|&seq| {
            sim.read_list(&group.group_id, seq)
                .is_some_and(|l| l.len() >= min_read)
        })
        .expect("a message with readers")
}

#[tokio::test]
async fn the_client_pages_through_the_simulators_read_lists() {
    let sim = simulator(2, 40, |c| c.read_page_max = 7);
    let client = client(&sim);
    let group = &sim.groups()[0];
    let seq = message_with_readers(&sim, group, 15);
    let want = sim.read_list(&group.group_id, seq).unwrap();
    let got = client
        .pull_read_list(&group.group_id, seq, || true)
        .await
        .unwrap();
    assert!(got.finished && !got.no_receipt && got.short_pages);
    assert_eq!(got.calls as usize, want.len().div_ceil(7));
    let readers: Vec<String> = got.pages.iter().flat_map(|(_, p)| p.clone()).collect();
    assert_eq!(readers, want);
    let calls = sim
        .stats()
        .endpoint(receipt_exporter::sim::Endpoint::GroupMsgReceiptDetail)
        .calls;
    assert_eq!(calls, u64::from(got.calls));

    // Cut short by the page budget: not finished, no more calls than allowed.
    let mut budget = 1;
    let take = move || std::mem::replace(&mut budget, 0) == 1;
    let cut = client
        .pull_read_list(&group.group_id, seq, take)
        .await
        .unwrap();
    assert!(!cut.finished);
    assert_eq!((cut.calls, cut.pages[0].1.len()), (1, 7));

    // A message without a receipt is an answer; a missing group is the group's error.
    let none = (1..group.next_msg_seq)
        .find(|&s| sim.read_list(&group.group_id, s).is_none())
        .expect("about one in ten messages has no receipt");
    let got = client
        .pull_read_list(&group.group_id, none, || true)
        .await
        .unwrap();
    assert!(got.no_receipt && got.pages.is_empty());
    let err = client
        .pull_read_list("@TGS#nosuch", 1, || true)
        .await
        .unwrap_err();
    assert!(matches!(err, ChatError::Group { code: 10010, .. }), "{err}");
    sim.shutdown().await;
}

fn sim_group(id: &str, members: u32, messages: u64) -> SimGroup {
    SimGroup {
        group_id: id.into(),
        group_type: receipt_exporter::sim::GroupType::Public,
        member_num: members,
        next_msg_seq: messages + 1,
    }
}

fn detail_calls(sim: &Simulator) -> u64 {
    sim.stats()
        .endpoint(receipt_exporter::sim::Endpoint::GroupMsgReceiptDetail)
        .calls
}

/// The bound `run --dry-run` prints: "read lists: at most N get_group_msg_receipt_detail calls".
fn dry_run_bound(out: &std::process::Output) -> u64 {
    let text = stdout(out);
    let line = text
        .lines()
        .find(|l| l.starts_with("read lists: at most "))
        .unwrap_or_else(|| panic!("no bound in the dry run: {text}"));
    line["read lists: at most ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

type Event = (String, i64, String, i64);

/// Acceptance of issue 19: runs of the binary while the simulator's read counts grow; after
/// them `read_events` holds exactly the members the simulator's read lists held, each once,
/// with the run that first saw them and a time within that run; no run makes more detail calls
/// than its dry run's bound, and once everything settled and was recorded, none at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_events_hold_exactly_the_simulators_readers_each_once() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let groups = [
        sim_group("@TGS#who-50", 50, 20),
        sim_group("@TGS#who-200", 200, 12),
        sim_group("@TGS#counts-only", 30, 10),
    ];
    let sim = simulator(0, 0, |c| c.groups = groups.to_vec());
    for (g, details) in [(&groups[0], true), (&groups[1], true), (&groups[2], false)] {
        let to = format!("1..{}", g.next_msg_seq - 1);
        let mut args = vec!["track", "add", &g.group_id, "--seqs", &to];
        if details {
            args.push("--details");
        }
        let out = run(exporter_for(&db, &sim.base_url(), dir.path()).args(&args));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let mut expected: std::collections::BTreeMap<(String, i64, String), i64> = Default::default();
    let steps = receipt_exporter::sim::MAX_SETTLE_STEPS + 2;
    let mut last_calls = None;
    for step in 0..=steps {
        assert_eq!(sim.step(), step);
        let dry = run(exporter_for(&db, &sim.base_url(), dir.path()).args(["run", "--dry-run"]));
        assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
        let bound = dry_run_bound(&dry);
        let before = detail_calls(&sim);
        let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let calls = detail_calls(&sim) - before;
        assert!(
            calls <= bound,
            "step {step}: {calls} detail calls, bound {bound}"
        );
        let run_id: i64 = sqlx::query_scalar("SELECT max(run_id) FROM receipts.export_runs")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        let ledger: i64 = sqlx::query_scalar(
            "SELECT (details->'read_lists'->>'calls')::bigint FROM receipts.export_runs WHERE run_id = $1",
        )
        .bind(run_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(ledger as u64, calls, "the ledger counts the detail calls");
        for g in &groups[..2] {
            for seq in 1..g.next_msg_seq {
                for member in sim.read_list(&g.group_id, seq).unwrap_or_default() {
                    expected
                        .entry((g.group_id.clone(), seq as i64, member))
                        .or_insert(run_id);
                }
            }
        }
        last_calls = Some(calls);
        sim.advance(1);
    }
    assert_eq!(
        last_calls,
        Some(0),
        "settled and recorded: no more detail calls"
    );

    let rows: Vec<Event> = sqlx::query_as(
        "SELECT group_id, msg_seq, member_account, run_id FROM receipts.read_events ORDER BY 1, 2, 3",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let got: Vec<Event> = rows;
    let want: Vec<Event> = expected
        .into_iter()
        .map(|((g, s, m), r)| (g, s, m, r))
        .collect();
    let first_runs: std::collections::BTreeSet<i64> = want.iter().map(|e| e.3).collect();
    assert!(
        first_runs.len() > 3,
        "readers first seen in several runs: {first_runs:?}"
    );
    assert_eq!(got, want);
    // Each first seen time lies within the run that saw the member first.
    let outside: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM receipts.read_events e JOIN receipts.export_runs r USING (run_id)
         WHERE e.first_seen_read_at < r.started_at OR e.first_seen_read_at > r.finished_at
            OR e.read_before_details OR e.account_hashed",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(outside, 0);
    // The analysts' view: every reader, with the time since the message's first snapshot.
    let (n, negative): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE first_snapshot_to_first_seen_read < interval '0')
         FROM receipts.message_readers",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((n as usize, negative), (want.len(), 0));

    // The lake holds the same rows, once each; the copy of a run that crashed between rename and
    // record (run 2: record gone, file kept) or before the rename (run 3: record and file gone,
    // a stale temporary file left) is written again by the next run, never twice.
    assert_eq!(lake_events(dir.path()), pg_events(&db).await);
    let run3: String =
        sqlx::query_scalar("SELECT path FROM receipts.read_event_files WHERE run_id = 3 LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let run3 = dir.path().join(run3);
    std::fs::remove_file(&run3).unwrap();
    std::fs::write(run3.with_file_name(".run-3.parquet.1.tmp"), b"partial").unwrap();
    sqlx::query("DELETE FROM receipts.read_event_files WHERE run_id IN (2, 3)")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE receipts.export_runs SET status = 'abandoned' WHERE run_id IN (2, 3)")
        .execute(&db.pool)
        .await
        .unwrap();
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lake_events(dir.path()), pg_events(&db).await);
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM receipts.read_event_files WHERE run_id IN (2, 3)")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(recorded >= 2);
    sim.shutdown().await;
}

/// (group, seq, member, run, first seen in µs), sorted.
pub type LakeRow = (String, i64, String, i64, i64);

pub async fn pg_events(db: &TestDb) -> Vec<LakeRow> {
    sqlx::query_as(
        "SELECT group_id, msg_seq, member_account, run_id,
                (extract(epoch FROM first_seen_read_at) * 1000000)::bigint
         FROM receipts.read_events ORDER BY 1, 2, 3",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

pub fn lake_events(dir: &std::path::Path) -> Vec<LakeRow> {
    use arrow::array::{AsArray, Int64Array, TimestampMicrosecondArray};
    let mut out = Vec::new();
    for b in parquet_batches(&dir.join("read_events")) {
        let col = |name: &str| b.column_by_name(name).unwrap().clone();
        let (group, seq, member, run, at) = (
            col("group_id"),
            col("msg_seq"),
            col("member_account"),
            col("run_id"),
            col("first_seen_read_at"),
        );
        let seq = seq.as_any().downcast_ref::<Int64Array>().unwrap();
        let run = run.as_any().downcast_ref::<Int64Array>().unwrap();
        let at = at
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        for i in 0..b.num_rows() {
            out.push((
                group.as_string::<i32>().value(i).to_string(),
                seq.value(i),
                member.as_string::<i32>().value(i).to_string(),
                run.value(i),
                at.value(i),
            ));
        }
    }
    out.sort();
    out
}

/// What a proxy answers a `get_group_msg_receipt_detail` request body with; `None`: forwarded.
type DetailAnswer = fn(&serde_json::Value) -> Option<serde_json::Value>;

/// A proxy in front of the simulator that answers `get_group_msg_receipt_detail` calls as
/// `answer` says and forwards everything else. Returns its base URL.
async fn detail_proxy(sim_base: String, answer: DetailAnswer) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = reqwest::Client::new();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (http, sim_base) = (http.clone(), sim_base.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (http, sim_base) = (http.clone(), sim_base.clone());
                        async move {
                            let uri = req.uri().clone();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let request = serde_json::from_slice(&body).unwrap_or_default();
                            let own = uri
                                .path()
                                .ends_with("get_group_msg_receipt_detail")
                                .then(|| answer(&request))
                                .flatten();
                            let text = if let Some(own) = own {
                                own.to_string()
                            } else {
                                let url = format!("{sim_base}{}", uri.path_and_query().unwrap());
                                let resp = http.post(url).body(body).send().await.unwrap();
                                resp.text().await.unwrap()
                            };
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(
                                text,
                            ))))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

async fn events_of(db: &TestDb, group: &str) -> Vec<(i64, String)> {
    sqlx::query_as(
        "SELECT msg_seq, member_account FROM receipts.read_events WHERE group_id = $1 ORDER BY 1, 2",
    )
    .bind(group)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// The simulator's read lists of `group` now, as `events_of` orders them.
fn sim_events(sim: &Simulator, g: &SimGroup, hash: impl Fn(&str) -> String) -> Vec<(i64, String)> {
    let mut want: Vec<(i64, String)> = (1..g.next_msg_seq)
        .flat_map(|seq| {
            let list = sim.read_list(&g.group_id, seq).unwrap_or_default();
            list.into_iter().map(move |m| (seq as i64, m))
        })
        .map(|(seq, m)| (seq, hash(&m)))
        .collect();
    want.sort();
    want
}

/// A group whose read lists fail keeps its counts; the failure is in the ledger and the run
/// ends partial (exit 3); the other details-on group gets its read events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_read_lists_make_the_run_partial_and_keep_the_counts() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let groups = [
        sim_group("@TGS#ok", 40, 15),
        sim_group("@TGS#refused", 40, 15),
    ];
    let sim = simulator(0, 0, |c| c.groups = groups.to_vec());
    let proxy = detail_proxy(sim.base_url(), |req| {
        (req["GroupId"] == "@TGS#refused").then(|| {
            serde_json::json!({"ActionStatus": "FAIL", "ErrorCode": 10007, "ErrorInfo": "no permission"})
        })
    })
    .await;
    for g in &groups {
        let out = run(exporter_for(&db, &proxy, dir.path()).args([
            "track",
            "add",
            &g.group_id,
            "--seqs",
            "1..15",
            "--details",
        ]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let out = run(exporter_for(&db, &proxy, dir.path()).arg("run"));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let (status, written, _, error) = run_row(&db, 1).await;
    assert_eq!(status, "partial");
    let snapshots: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT group_id) FROM receipts.receipt_snapshots WHERE run_id = 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        snapshots, 2,
        "both groups' counts are written ({written} receipts)"
    );
    assert!(error.unwrap().contains("read lists of 1 group"));
    let failed: serde_json::Value = sqlx::query_scalar(
        "SELECT details->'read_lists'->'failed_groups' FROM receipts.export_runs WHERE run_id = 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        failed["@TGS#refused"].as_str().unwrap().contains("10007"),
        "{failed}"
    );
    assert!(failed.get("@TGS#ok").is_none());
    assert!(events_of(&db, "@TGS#refused").await.is_empty());
    assert_eq!(
        events_of(&db, "@TGS#ok").await,
        sim_events(&sim, &groups[0], str::to_string)
    );
    sim.shutdown().await;
}

/// A server that pages below `Count` and a per-run cap: no run exceeds the cap, lists cut
/// short are taken up again, and in the end the events equal the simulator's lists, stored as
/// keyed hashes whose key never shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capped_runs_finish_the_lists_later_and_hash_the_accounts() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let g = sim_group("@TGS#paged", 45, 12);
    let sim = simulator(0, 0, |c| {
        c.groups = vec![g.clone()];
        c.read_page_max = 10;
    });
    let key_file = dir.path().join("member.key");
    let key = "member-hash-key-that-must-not-show";
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let exporter = || {
        let mut cmd = exporter_for(&db, &sim.base_url(), dir.path());
        cmd.env("EXPORT_MAX_DETAIL_CALLS", "7")
            .env("EXPORT_MEMBER_HASH_KEY_FILE", &key_file);
        cmd
    };
    let out = run(exporter().args(["track", "add", &g.group_id, "--seqs", "1..12", "--details"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut runs = 0;
    loop {
        let before = detail_calls(&sim);
        let out = run(exporter().arg("run"));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        for text in [stdout(&out), stderr(&out)] {
            assert!(!text.contains(key), "the hashing key shows: {text}");
        }
        let calls = detail_calls(&sim) - before;
        assert!(calls <= 7, "run {runs}: {calls} detail calls above the cap");
        runs += 1;
        if calls == 0 {
            break;
        }
        assert!(runs < 20, "the lists never finish");
    }
    assert!(
        runs > 2,
        "the cap spread the lists over several runs: {runs}"
    );
    let hash = |m: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(m.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(
        events_of(&db, &g.group_id).await,
        sim_events(&sim, &g, hash)
    );
    let clear: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM receipts.read_events WHERE NOT account_hashed OR member_account LIKE 'member-%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(clear, 0);
    sim.shutdown().await;
}

/// Members of messages that had readers before details were switched on are flagged (their time
/// is unknown) and have no time in the analysts' view; later readers are not flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_from_before_details_are_flagged() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let g = sim_group("@TGS#late", 30, 20);
    let sim = simulator(0, 0, |c| c.groups = vec![g.clone()]);
    let exporter = || exporter_for(&db, &sim.base_url(), dir.path());
    run(exporter().args(["track", "add", &g.group_id, "--seqs", "1..20"]));
    assert_eq!(run(exporter().arg("run")).status.code(), Some(0));
    assert!(
        events_of(&db, &g.group_id).await.is_empty(),
        "details off: no calls"
    );
    assert_eq!(detail_calls(&sim), 0);
    let before: Vec<(i64, String)> = sim_events(&sim, &g, str::to_string);
    assert!(!before.is_empty());
    run(exporter().args(["track", "add", &g.group_id, "--details"]));
    sim.advance(receipt_exporter::sim::MAX_SETTLE_STEPS);
    assert_eq!(run(exporter().arg("run")).status.code(), Some(0));
    let flagged: Vec<(i64, String)> = sqlx::query_as(
        "SELECT msg_seq, member_account FROM receipts.message_readers
         WHERE group_id = $1 AND read_before_details AND first_snapshot_to_first_seen_read IS NULL
         ORDER BY 1, 2",
    )
    .bind(&g.group_id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    // Every member already read at the first snapshot is flagged; so are the later readers of
    // those messages seen in the same first list (their time is unknown too).
    let flagged_set: std::collections::BTreeSet<_> = flagged.iter().cloned().collect();
    assert!(before.iter().all(|e| flagged_set.contains(e)));
    let seqs_before: std::collections::BTreeSet<i64> = before.iter().map(|e| e.0).collect();
    let unflagged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM receipts.read_events WHERE NOT read_before_details AND msg_seq = ANY($1)",
    )
    .bind(seqs_before.iter().copied().collect::<Vec<_>>())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(unflagged, 0);
    let all = events_of(&db, &g.group_id).await;
    assert!(
        all.len() > flagged.len(),
        "messages without readers before are not flagged"
    );
    assert_eq!(all, sim_events(&sim, &g, str::to_string));
    sim.shutdown().await;
}

/// Hostile read lists through the binary: bad accounts (forged log lines, bidi overrides,
/// empty, not strings, far too long) are dropped and counted, repeats kept once, the flag
/// spelled `IsFinish` accepted; nothing invalid is stored and the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_read_lists_store_only_valid_accounts() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let g = sim_group("@TGS#hostile", 20, 6);
    let sim = simulator(0, 0, |c| c.groups = vec![g.clone()]);
    let proxy = detail_proxy(sim.base_url(), |req| {
        Some(serde_json::json!({
            "ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "",
            "MsgSeq": req["MsgSeq"], "IsFinish": 1, "Cursor": "",
            "ReadList": [
                {"Read_Account": "alice"}, {"Read_Account": "alice"},
                {"Read_Account": "x\nINFO run 1 succeeded"}, {"Read_Account": "b\u{202e}gnp"},
                {"Read_Account": ""}, {"Read_Account": 7}, {"Read_Account": "z".repeat(300)},
                {"Read_Account": "bob"}
            ]
        }))
    })
    .await;
    let exporter = || exporter_for(&db, &proxy, dir.path());
    run(exporter().args(["track", "add", &g.group_id, "--seqs", "1..6", "--details"]));
    let out = run(exporter().arg("run"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("\nINFO run 1 succeeded"));
    let accounts: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT member_account FROM receipts.read_events ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(accounts, ["alice", "bob"]);
    let (lists, invalid): (i64, serde_json::Value) = sqlx::query_as(
        "SELECT (details->'read_lists'->>'listed')::bigint, details->'invalid_items'
         FROM receipts.export_runs WHERE run_id = 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(lists > 0);
    assert_eq!(invalid["wrong_shape"], 5 * lists, "{invalid}");
    assert_eq!(invalid["duplicate"], lists, "{invalid}");
    sim.shutdown().await;
}

//! `listen`, the read-receipt webhook's receiver, through the binary: the app and token
//! checks, the refusals with their statuses, a delivery kept once however often it comes, the
//! flush into Postgres and the lake at EventTime, SIGTERM and SIGKILL, and the simulator's
//! stream of 10,000 callbacks with loss, repeats, reorder and forgeries.

use crate::helpers::*;
use receipt_exporter::listen::auth::sign;
use receipt_exporter::secret::Secret;
use receipt_exporter::sim::{CallbackRow, Callbacks, Forgery};
use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::Duration;

const TOKEN: &str = "kdjsgjdskgjwejsdkkjgkjfklgjdfkjhnkdfhjgk";

/// A receiver on 127.0.0.1:0 for `db`, flushing every second; its address (`IP:PORT`) and
/// the thread collecting the rest of its stderr.
fn receiver(
    db: &TestDb,
    dir: &std::path::Path,
    token_file: &std::path::Path,
    extra: &[&str],
) -> (Child, String, std::thread::JoinHandle<String>) {
    receiver_in("parquet", db, dir, token_file, extra)
}

/// [`receiver`] with the lake in `format` (`parquet` or `iceberg`).
fn receiver_in(
    format: &str,
    db: &TestDb,
    dir: &std::path::Path,
    token_file: &std::path::Path,
    extra: &[&str],
) -> (Child, String, std::thread::JoinHandle<String>) {
    let mut child = exporter_for(db, "http://127.0.0.1:9", dir)
        .env("EXPORT_TABLE_FORMAT", format)
        .env("EXPORT_LISTEN", "127.0.0.1:0")
        .env("EXPORT_CALLBACK_TOKEN_FILE", token_file)
        .args(["listen", "--flush-every", "1"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (rest, log) = announced(&mut child, "receiving callbacks at http://");
    let addr = rest.split('/').next().unwrap().to_string();
    (child, addr, log)
}

fn token_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("callback-token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

/// The callback URL's query as the service writes it, signed with `token` at `time`.
fn query(app: u64, token: &str, time: i64) -> String {
    let t = time.to_string();
    let s = sign(&Secret::new(token), &t);
    format!(
        "SdkAppid={app}&CallbackCommand=Group.CallbackAfterReadReceipt&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI&RequestTime={t}&Sign={s}"
    )
}

async fn post(addr: &str, query: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/callback?{query}"))
        .body(body)
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

/// A GET's body.
async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// The snapshots the listener's runs wrote, as (group, seq, read, unread, EventTime in ms).
fn listen_rows(snaps: &[Snap], runs: &[i64]) -> Vec<(String, i64, i32, i32, i64)> {
    let mut rows: Vec<_> = snaps
        .iter()
        .filter(|s| runs.contains(&s.run_id))
        .map(|s| {
            (
                s.group_id.clone(),
                s.msg_seq,
                s.read_num,
                s.unread_num,
                s.captured_at_us / 1000,
            )
        })
        .collect();
    rows.sort();
    rows
}

async fn listen_runs(db: &TestDb) -> Vec<(i64, String)> {
    sqlx::query_as(
        "SELECT run_id, status FROM receipts.export_runs WHERE kind = 'listen' ORDER BY run_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Postgres and the lake hold the same snapshots, each as often as the other; no temporary
/// file is left, every file is in the manifest.
async fn assert_lake_equals_postgres(db: &TestDb, dir: &std::path::Path) {
    let pg = pg_snapshots(db).await;
    let pq = parquet_snapshots(dir);
    assert_eq!(
        pg.len(),
        pq.len(),
        "Postgres and the lake hold different counts"
    );
    let mut pg_sorted = pg.clone();
    pg_sorted.sort();
    assert_eq!(pg_sorted, pq, "Postgres and the lake differ");
    let listed = manifest_paths(db).await;
    assert_eq!(listed.len(), snapshot_files(dir).len());
    // The live runs' read-progress change rows reached the lake at their ends.
    let (due, written): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE path IS NULL), count(path)
         FROM receipts.message_read_progress_files",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(due, 0, "every read-progress file written");
    assert_eq!(
        written > 0,
        !pg.is_empty(),
        "{written} read-progress file(s)"
    );
    assert_nothing_left(db).await;
}

/// The issue's sample, refused in every documented way and then kept once, flushed at its
/// EventTime into Postgres and the lake by SIGTERM; the token never in a log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_checked_kept_once_and_flushed_at_its_event_time() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let tracked = "@TGS#2TTV7VSII".to_string();
    track_all(&db, std::slice::from_ref(&tracked), 10).await;
    let (mut child, addr, log) = receiver(&db, dir.path(), &token_file(secrets.path()), &[]);
    let now = chrono::Utc::now().timestamp();
    let sample = r#"{"CallbackCommand": "Group.CallbackAfterReadReceipt", "GroupId": "@TGS#2TTV7VSII", "Type": "Public",
 "GroupMsgReceiptList": [{"MsgSeq": 1, "ReadNum": 1, "UnreadNum": 6, "ReadReceiptMembers": [{"Member_Account": "user0"}]},
                         {"MsgSeq": 2, "ReadNum": 1, "UnreadNum": 6, "ReadReceiptMembers": [{"Member_Account": "user0"}]}],
 "EventTime": "1670574414123"}"#;
    let ok = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;
    let good = query(SDKAPPID, TOKEN, now);
    assert_eq!(post(&addr, &good, sample).await, (200, ok.to_string()));
    assert_eq!(
        post(&addr, &good, sample).await.0,
        200,
        "a repeat is answered OK"
    );
    let refused = [
        (query(SDKAPPID + 1, TOKEN, now), sample.to_string(), 403),
        (
            query(SDKAPPID, "another token", now),
            sample.to_string(),
            401,
        ),
        (
            query(SDKAPPID, "another token", now),
            sample.to_string(),
            401,
        ),
        (query(SDKAPPID, TOKEN, now - 3600), sample.to_string(), 401),
        (format!("SdkAppid={SDKAPPID}"), sample.to_string(), 401),
        (good.clone(), sample[..40].to_string(), 400),
        (
            good.clone(),
            format!("{{\"x\":\"{}\"}}", "y".repeat(2 << 20)),
            413,
        ),
    ];
    for (q, body, status) in refused {
        let (got, text) = post(&addr, &q, body).await;
        assert_eq!(got, status, "{text}");
        assert!(text.contains("\"ActionStatus\":\"FAIL\""), "{text}");
    }
    let get = reqwest::get(format!("http://{addr}/callback"))
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);
    let other = reqwest::get(format!("http://{addr}/elsewhere"))
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 404);
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.webhook_inbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(inbox, 2, "two messages, kept once although delivered twice");
    let metrics = get_text(&format!("http://{addr}/metrics")).await;
    for (outcome, n) in [
        ("stored", 1),
        ("repeated", 1),
        ("wrong_app", 1),
        ("bad_token", 4),
        ("malformed", 1),
        ("too_large", 1),
    ] {
        let line =
            format!("receipt_exporter_webhook_deliveries_total{{outcome=\"{outcome}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    assert!(
        metrics.contains("receipt_exporter_webhook_inbox_lag_seconds"),
        "{metrics}"
    );

    let status = terminate_within(&mut child, Duration::from_secs(60)).await;
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let log = log.join().unwrap();
    eprintln!("--- stdout:\n{out}\n--- stderr:\n{log}");
    assert_eq!(status.code(), Some(0));
    assert!(out.contains("2 receipts written from the webhook"), "{out}");
    assert!(
        !log.contains(TOKEN) && !out.contains(TOKEN),
        "the token in a log line"
    );
    assert_eq!(
        log.matches("refused a callback").count(),
        4,
        "once per kind (wrong app, token, malformed, too large): {log}"
    );
    let runs = listen_runs(&db).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].1, "succeeded");
    // The ledger's job metrics leave the listener out: its run lasts as long as it does, and
    // the staleness alert would page about it.
    let ledger = receipt_exporter::ops::metrics::scrape(&db.pool, &[])
        .await
        .unwrap();
    assert!(!ledger.contains("export_job=\"listen\""), "{ledger}");
    let snaps = pg_snapshots(&db).await;
    assert_eq!(
        listen_rows(&snaps, &[runs[0].0]),
        vec![
            (tracked.clone(), 1, 1, 6, 1_670_574_414_123),
            (tracked.clone(), 2, 1, 6, 1_670_574_414_123),
        ]
    );
    assert_lake_equals_postgres(&db, dir.path()).await;
}

/// A receiver started, one delivery answered OK, the receiver stopped by SIGTERM (exit 0).
async fn one_delivery(
    db: &TestDb,
    dir: &std::path::Path,
    token: &std::path::Path,
    extra: &[&str],
    body: String,
) {
    let (mut child, addr, log) = receiver(db, dir, token, extra);
    let now = chrono::Utc::now().timestamp();
    let answered = post(&addr, &query(SDKAPPID, TOKEN, now), body).await;
    let stopped = terminate_within(&mut child, Duration::from_secs(60)).await;
    eprintln!("{}", log.join().unwrap());
    assert_eq!((answered.0, stopped.code()), (200, Some(0)), "{answered:?}");
}

/// Deliveries of groups that are not tracked are counted and dropped, unless the listener is
/// told to keep them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untracked_groups_are_dropped_unless_kept() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let token = token_file(secrets.path());
    let body = |event: i64| {
        format!(
            r#"{{"CallbackCommand":"Group.CallbackAfterReadReceipt","GroupId":"untracked","EventTime":{event},
                "GroupMsgReceiptList":[{{"MsgSeq":3,"ReadNum":2,"UnreadNum":1}}]}}"#
        )
    };
    one_delivery(&db, dir.path(), &token, &[], body(1_700_000_000_000)).await;
    assert!(
        pg_snapshots(&db).await.is_empty(),
        "an untracked group's delivery was kept"
    );
    let dropped: i64 = sqlx::query_scalar(
        "SELECT (details->'webhook'->>'rows_dropped_untracked')::bigint FROM receipts.export_runs WHERE kind = 'listen'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(dropped, 1);

    let keep = ["--keep-untracked"];
    one_delivery(&db, dir.path(), &token, &keep, body(1_700_000_000_001)).await;
    let snaps = pg_snapshots(&db).await;
    assert_eq!(snaps.len(), 1, "kept when told to: {snaps:?}");
    assert_eq!(snaps[0].captured_at_us, 1_700_000_000_001_000);
    assert_lake_equals_postgres(&db, dir.path()).await;
}

/// The simulator's callbacks to the receiver at `addr`, signed with the token: none lost,
/// repeated or forged unless the test says so, reordered, 2 ms of delay at most.
fn callbacks(addr: &str, deliveries: usize, seed: u64, first_event_ms: i64) -> Callbacks {
    Callbacks {
        url: format!("http://{addr}/callback"),
        sdkappid: SDKAPPID,
        token: Some(Secret::new(TOKEN)),
        deliveries,
        max_messages: 3,
        lose: 0.0,
        repeat: 0.0,
        forge: 0.0,
        reorder: true,
        max_delay: Duration::from_millis(2),
        concurrency: 8,
        seed,
        first_event_ms,
    }
}

/// Each acknowledged genuine delivery's rows, once per key (a repeat is the same delivery).
fn acknowledged_rows(acked: &[Vec<CallbackRow>]) -> Vec<(String, i64, i32, i32, i64)> {
    let mut rows: Vec<_> = acked
        .iter()
        .flatten()
        .map(|r| {
            (
                r.group_id.clone(),
                r.msg_seq,
                r.read_num,
                r.unread_num,
                r.event_ms,
            )
        })
        .collect();
    rows.sort();
    rows.dedup();
    rows
}

/// The acceptance: 10,000 callbacks, 5% repeated, 5% lost, reordered, 1% forged (wrong app,
/// wrong token, bad JSON, 10 MB). Postgres and the lake hold each acknowledged delivery's rows
/// exactly once and nothing forged; a run afterwards brings the lost ones in, and its ledger
/// row and `status` say how many messages the webhook kept fresh and how many it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_callbacks_with_loss_repeats_reorder_and_forgeries() {
    let db = TestDb::new().await;
    let sim = simulator(20, 60, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 60).await;
    let (mut child, addr, log) = receiver(&db, dir.path(), &token_file(secrets.path()), &[]);
    let plan = Callbacks {
        lose: 0.05,
        repeat: 0.05,
        forge: 0.01,
        max_delay: Duration::from_millis(5),
        concurrency: 16,
        ..callbacks(&addr, 10_000, 27, 1_765_000_000_000)
    };
    // Two steps on: some messages are read by everyone (settled), others still move.
    sim.advance(2);
    let sent = sim.deliver_callbacks(&plan).await;
    assert!(
        sent.unanswered.is_empty(),
        "{:?}",
        &sent.unanswered[..sent.unanswered.len().min(3)]
    );
    assert!((400..600).contains(&sent.lost.len()), "{}", sent.lost.len());
    assert!((400..600).contains(&sent.repeated), "{}", sent.repeated);
    assert_eq!(sent.forged.len(), 100);
    let mut statuses: BTreeMap<Forgery, Vec<Option<u16>>> = BTreeMap::new();
    for (kind, _, status) in &sent.forged {
        statuses.entry(*kind).or_default().push(*status);
    }
    for (kind, want) in [
        (Forgery::WrongApp, 403),
        (Forgery::WrongToken, 401),
        (Forgery::BadJson, 400),
        (Forgery::Huge, 413),
    ] {
        let got = &statuses[&kind];
        assert!(got.iter().all(|s| *s == Some(want)), "{kind:?}: {got:?}");
    }
    let status = terminate_within(&mut child, Duration::from_secs(120)).await;
    eprintln!("{}", log.join().unwrap());
    assert_eq!(status.code(), Some(0));

    let runs: Vec<i64> = listen_runs(&db)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let snaps = pg_snapshots(&db).await;
    let kept = listen_rows(&snaps, &runs);
    assert_eq!(
        kept,
        acknowledged_rows(&sent.acknowledged),
        "each acknowledged row exactly once"
    );
    assert!(
        kept.iter()
            .all(|r| r.4 < plan.first_event_ms + 1_000_000_000),
        "a forged row was kept"
    );
    assert_lake_equals_postgres(&db, dir.path()).await;

    // The pull afterwards, one step later (some counts moved): every message of a lost
    // delivery is in its run, unless the webhook settled it (read by everyone): the settled
    // rule skips those, as it skips the ones a pull settled.
    let settled: Vec<(String, i64)> = sqlx::query_as(
        "SELECT l.group_id, l.msg_seq FROM receipts.receipt_latest l
         JOIN receipts.export_runs r USING (run_id) WHERE r.kind = 'listen' AND l.unread_num = 0",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(!settled.is_empty());
    sim.advance(1);
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
    assert_eq!(out.status.code(), Some(0));
    let pulled_run: i64 =
        sqlx::query_scalar("SELECT max(run_id) FROM receipts.export_runs WHERE kind = 'manual'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let pulled = rows_of(&pg_snapshots(&db).await, pulled_run);
    let asked = |g: &str, seq: i64| pulled.iter().any(|p| p.0 == g && p.1 == seq);
    for (g, seq) in &settled {
        assert!(
            !asked(g, *seq),
            "{g} {seq}: settled by the webhook, pulled all the same"
        );
    }
    for row in sent.lost.iter().flatten() {
        let skipped = settled.contains(&(row.group_id.clone(), row.msg_seq));
        assert!(
            skipped || asked(&row.group_id, row.msg_seq),
            "{row:?} lost by the webhook, not found by the pull"
        );
    }
    assert_pull_reconciled(&db, &sim, dir.path(), &sent, &pulled, pulled_run).await;
}

/// Every pulled message whose counts the webhook delivered was kept fresh by it, the others of
/// those groups the pull found changed (the webhook missed them: never delivered, or moved
/// since); the run's ledger row and `status` say so.
async fn assert_pull_reconciled(
    db: &TestDb,
    sim: &receipt_exporter::sim::Simulator,
    dir: &std::path::Path,
    sent: &receipt_exporter::sim::CallbackReport,
    pulled: &std::collections::BTreeSet<(String, i64, i32, i32)>,
    pulled_run: i64,
) {
    let delivered: std::collections::BTreeMap<(String, i64), (i32, i32)> = sent
        .acknowledged
        .iter()
        .flatten()
        .map(|r| ((r.group_id.clone(), r.msg_seq), (r.read_num, r.unread_num)))
        .collect();
    let of_groups: Vec<_> = pulled
        .iter()
        .filter(|p| delivered.keys().any(|(g, _)| *g == p.0))
        .collect();
    let fresh = of_groups
        .iter()
        .filter(|p| delivered.get(&(p.0.clone(), p.1)) == Some(&(p.2, p.3)))
        .count() as i64;
    let found = of_groups.len() as i64 - fresh;
    assert!(fresh > 0 && found > 0, "{fresh} {found}");
    let recorded: (i64, i64) = sqlx::query_as(
        "SELECT (details->'webhook'->>'webhook_fresh')::bigint, (details->'webhook'->>'pull_found')::bigint
         FROM receipts.export_runs WHERE run_id = $1",
    )
    .bind(pulled_run)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(recorded, (fresh, found));
    let status = stdout(&run(exporter_for(db, &sim.base_url(), dir).arg("status")));
    let line = format!(
        "webhook (run {pulled_run}): {fresh} of the pulled messages kept fresh by the webhook, {found} changes the pull found that it missed"
    );
    assert!(status.contains(&line), "{status}");
}

/// SIGKILL of the receiver mid-stream: every delivery it acknowledged is in Postgres and the
/// lake once the next receiver has run, exactly once; the killed run is abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_receiver_loses_no_acknowledged_delivery() {
    killed_mid_stream("parquet").await;
}

/// The same with the lake an Iceberg table: pyiceberg reads exactly Postgres's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_receiver_loses_no_acknowledged_delivery_in_iceberg() {
    killed_mid_stream("iceberg").await;
}

async fn killed_mid_stream(format: &str) {
    let db = TestDb::new().await;
    let sim = simulator(10, 40, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let token = token_file(secrets.path());
    track_all(&db, &group_ids(&sim), 40).await;
    let (mut child, addr, log) = receiver_in(format, &db, dir.path(), &token, &[]);
    let plan = callbacks(&addr, 3_000, 2727, 1_765_100_000_000);
    let kill = async {
        // Mid-stream: once the inbox holds some rows and a flush has written some.
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let flushed: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM receipts.webhook_inbox WHERE batch_no IS NOT NULL",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            if flushed > 100 {
                break;
            }
        }
        signal(&child, "KILL");
    };
    let (sent, ()) = tokio::join!(sim.deliver_callbacks(&plan), kill);
    let _ = child.wait();
    eprintln!("{}", log.join().unwrap());
    assert!(
        !sent.acknowledged.is_empty() && !sent.unanswered.is_empty(),
        "killed mid-stream"
    );

    let (mut again, _, log) = receiver_in(format, &db, dir.path(), &token, &[]);
    let status = terminate_within(&mut again, Duration::from_secs(120)).await;
    eprintln!("{}", log.join().unwrap());
    assert_eq!(status.code(), Some(0));
    let runs = listen_runs(&db).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].1, "abandoned");
    assert_eq!(runs[1].1, "succeeded");
    let ids: Vec<i64> = runs.iter().map(|r| r.0).collect();
    let snaps = pg_snapshots(&db).await;
    let kept = listen_rows(&snaps, &ids);
    let acked = acknowledged_rows(&sent.acknowledged);
    let mut deduped = kept.clone();
    deduped.dedup();
    assert_eq!(deduped.len(), kept.len(), "a row written twice");
    for row in &acked {
        assert!(
            kept.binary_search(row).is_ok(),
            "{row:?} acknowledged, then lost"
        );
    }
    if format == "iceberg" {
        let mut pg = pg_snapshots(&db).await;
        pg.sort();
        assert_eq!(
            crate::iceberg::iceberg_rows(&db),
            pg,
            "pyiceberg's rows equal Postgres's"
        );
    } else {
        assert_lake_equals_postgres(&db, dir.path()).await;
    }
}

/// `doctor` checks the listener when EXPORT_LISTEN is set: its app and address, a missing
/// token (a warning), and an inbox nobody flushes (a failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_listener() {
    let db = TestDb::new().await;
    let sim = simulator(1, 5, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let doctor = |token: Option<&std::path::Path>| {
        let mut cmd = exporter_for(&db, &sim.base_url(), dir.path());
        cmd.env("EXPORT_LISTEN", "127.0.0.1:8270").arg("doctor");
        if let Some(token) = token {
            cmd.env("EXPORT_CALLBACK_TOKEN_FILE", token);
        }
        stdout(&run(&mut cmd))
    };
    let line = |out: &str| {
        out.lines()
            .find(|l| l.contains(" listen: "))
            .unwrap_or_else(|| panic!("no listen line in {out}"))
            .to_string()
    };
    let unsigned = doctor(None);
    let unsigned = line(&unsigned);
    assert!(unsigned.starts_with("WARN"), "{unsigned}");
    assert!(unsigned.contains(&format!(
        "http://127.0.0.1:8270/callback for app {SDKAPPID}"
    )));
    assert!(
        unsigned.contains("without a webhook authentication token"),
        "{unsigned}"
    );
    let token = token_file(secrets.path());
    let signed = line(&doctor(Some(&token)));
    assert!(signed.starts_with("OK"), "{signed}");
    sqlx::query(
        "INSERT INTO receipts.webhook_inbox (sdkappid, group_id, msg_seq, read_num, unread_num, event_time, received_at)
         VALUES ($1, 'g', 1, 1, 1, now(), now() - interval '1 hour')",
    )
    .bind(SDKAPPID as i64)
    .execute(&db.pool)
    .await
    .unwrap();
    let stuck = line(&doctor(Some(&token)));
    assert!(
        stuck.starts_with("FAIL") && stuck.contains("1 inbox rows wait"),
        "{stuck}"
    );
}

/// `simulate --deliver-to`: the simulator binary delivers its groups' callbacks to the
/// receiver binary, with loss, repeats, reorder and forgeries, and says what it sent; the
/// receiver's counts agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_delivers_callbacks_to_the_receiver() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let token = token_file(secrets.path());
    let (mut receiver, addr, log) = receiver(&db, dir.path(), &token, &["--keep-untracked"]);
    let mut sim = exporter()
        .env("TIM_SDKAPPID", SDKAPPID.to_string())
        .env("TIM_SECRET_KEY", KEY)
        .env("EXPORT_CALLBACK_TOKEN_FILE", &token)
        .args([
            "simulate",
            "--port",
            "0",
            "--groups",
            "4",
            "--messages",
            "30",
        ])
        .arg(format!("--deliver-to=http://{addr}/callback"))
        .args([
            "--callbacks",
            "300",
            "--callback-lose",
            "0.1",
            "--callback-repeat",
            "0.1",
        ])
        .args([
            "--callback-forge",
            "0.04",
            "--callback-reorder",
            "--callback-delay",
            "2ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(sim.stdout.take().unwrap()));
    let summary = lines
        .map(Result::unwrap)
        .find(|l| l.starts_with("callbacks: "))
        .expect("the simulator says what it sent");
    eprintln!("{summary}");
    let number = |after: &str| -> u64 {
        let at = summary
            .find(after)
            .unwrap_or_else(|| panic!("{after} in {summary}"));
        let head = summary[..at].trim_end();
        head.rsplit([' ', '(']).next().unwrap().parse().unwrap()
    };
    let (acked, repeated, forged) = (
        number(" acknowledged"),
        number(" repeated"),
        number(" forged"),
    );
    assert_eq!(number(" not answered 200"), 0, "{summary}");
    assert!(acked > 200 && repeated > 0 && forged == 12, "{summary}");
    assert!(
        summary.contains("3 WrongApp 403") && summary.contains("3 Huge 413"),
        "{summary}"
    );
    let metrics = get_text(&format!("http://{addr}/metrics")).await;
    let count = |outcome: &str| -> u64 {
        let key = format!("receipt_exporter_webhook_deliveries_total{{outcome=\"{outcome}\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&key)).unwrap();
        line[key.len()..].parse().unwrap()
    };
    assert_eq!(count("stored"), acked);
    assert_eq!(count("repeated"), repeated);
    let refused: u64 = ["wrong_app", "bad_token", "malformed", "too_large"]
        .iter()
        .map(|o| count(o))
        .sum();
    assert_eq!(refused, forged);
    signal(&sim, "TERM");
    let _ = sim.wait();
    let status = terminate_within(&mut receiver, Duration::from_secs(60)).await;
    eprintln!("{}", log.join().unwrap());
    assert_eq!(status.code(), Some(0));
    assert_lake_equals_postgres(&db, dir.path()).await;
}

/// A delivery's members become read events, first seen at its EventTime, for a group with
/// read-event detail on (not for one without), with their lake copy when the run ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_become_read_events_when_details_are_on() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let token = token_file(secrets.path());
    let groups = ["with-details".to_string(), "without".to_string()];
    track_all(&db, &groups, 10).await;
    sqlx::query("UPDATE receipts.tracked_groups SET details = true, details_since = now() WHERE group_id = 'with-details'")
        .execute(&db.pool)
        .await
        .unwrap();
    let (mut child, addr, log) = receiver(&db, dir.path(), &token, &[]);
    let now = chrono::Utc::now().timestamp();
    for group in &groups {
        let body = format!(
            r#"{{"CallbackCommand":"Group.CallbackAfterReadReceipt","GroupId":"{group}","EventTime":"1700000000123",
                "GroupMsgReceiptList":[{{"MsgSeq":4,"ReadNum":2,"UnreadNum":3,
                "ReadReceiptMembers":[{{"Member_Account":"ann"}},{{"Member_Account":"bob"}}]}}]}}"#
        );
        assert_eq!(post(&addr, &query(SDKAPPID, TOKEN, now), body).await.0, 200);
    }
    let status = terminate_within(&mut child, Duration::from_secs(60)).await;
    eprintln!("{}", log.join().unwrap());
    assert_eq!(status.code(), Some(0));
    let events: Vec<(String, i64, String, chrono::DateTime<chrono::Utc>, String)> = sqlx::query_as(
        "SELECT e.group_id, e.msg_seq, e.member_account, e.first_seen_read_at, r.kind
         FROM receipts.read_events e JOIN receipts.export_runs r USING (run_id) ORDER BY 3",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let at = chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
    let want: Vec<_> = ["ann", "bob"]
        .iter()
        .map(|m| {
            (
                "with-details".to_string(),
                4,
                m.to_string(),
                at,
                "listen".to_string(),
            )
        })
        .collect();
    assert_eq!(events, want);
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.read_event_files")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(files, 1, "the read events' lake copy");
    assert_eq!(
        pg_snapshots(&db).await.len(),
        2,
        "both groups' counts are kept"
    );
}

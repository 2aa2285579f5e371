//! Issue 17: the lake in an object store. Runs write into `s3://` on moto's S3 server; rows read
//! back from the bucket equal Postgres; SIGKILLs during the upload, between the manifest commit
//! and the copy into place, and during the repair leave the bucket, after one more run, with
//! exactly the committed rows, no pending object and no unfinished multipart upload, and no
//! listing in between shows a row Postgres has not committed or a row twice.

use crate::helpers::*;
use crate::s3::{S3Server, SECRET_ACCESS_KEY};
use receipt_exporter::sim::Simulator;
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const PREFIX: &str = "lake/v1";

/// The exporter set up for `db`, `sim`, and the lake `s3://lake-test/lake/v1`.
fn exporter_s3(db: &TestDb, sim: &Simulator, s3: &S3Server) -> Command {
    let mut cmd = exporter_for(db, &sim.base_url(), std::path::Path::new("unused"));
    s3.env(&mut cmd).env("EXPORT_PARQUET_DIR", s3.url(PREFIX));
    cmd
}

/// What a reader listing the bucket sees now: only committed rows, none twice.
async fn assert_listing_committed(db: &TestDb, s3: &S3Server) -> Vec<Snap> {
    let visible = s3.snapshots(PREFIX).await;
    let pg = pg_snapshots(db).await;
    let distinct: BTreeSet<&Snap> = visible.iter().collect();
    assert_eq!(distinct.len(), visible.len(), "a row twice in the bucket");
    assert!(
        visible.iter().all(|s| pg.contains(s)),
        "a visible row Postgres has not committed"
    );
    visible
}

/// The bucket holds exactly Postgres' rows, in the files the manifest lists, and nothing else:
/// no pending object, no unfinished multipart upload, no file still waiting for its copy.
async fn assert_bucket_equals_postgres(db: &TestDb, s3: &S3Server) {
    let pg = pg_snapshots(db).await;
    assert!(!pg.is_empty());
    assert_eq!(s3.snapshots(PREFIX).await, pg, "bucket and Postgres differ");
    let listed: BTreeSet<String> = sqlx::query_scalar("SELECT path FROM receipts.parquet_files")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|p: String| format!("{PREFIX}/{p}"))
        .collect();
    let visible: BTreeSet<String> = s3
        .visible(PREFIX)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        visible, listed,
        "the visible objects are the manifest's files"
    );
    let pending = s3.keys(&format!("{PREFIX}/_pending")).await;
    assert!(pending.is_empty(), "pending objects left: {pending:?}");
    assert!(
        s3.unfinished_uploads().is_empty(),
        "unfinished multipart uploads"
    );
    let (waiting, unexported): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM receipts.parquet_files WHERE pending_key IS NOT NULL),
                (SELECT count(*) FROM receipts.write_batches WHERE parquet_file_id IS NULL AND row_count > 0)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (waiting, unexported),
        (0, 0),
        "files waiting or batches left out"
    );
}

/// An S3 test server, a database and a simulator of 3 groups of 120 seqs, all tracked.
async fn tracked_lake() -> (S3Server, TestDb, Simulator) {
    let s3 = S3Server::start();
    let db = TestDb::new().await;
    let sim = simulator(3, 120, |_| {});
    track_all(&db, &group_ids(&sim), 120).await;
    (s3, db, sim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_into_s3_lands_exactly_the_postgres_rows_and_verify_agrees() {
    let (s3, db, sim) = tracked_lake().await;
    for _ in 0..2 {
        let out = run(exporter_s3(&db, &sim, &s3).arg("run"));
        assert_eq!(out.status.code(), Some(0));
        assert!(stdout(&out).contains(&s3.url(PREFIX)), "{}", stdout(&out));
        for text in [stdout(&out), stderr(&out)] {
            assert!(
                !text.contains(SECRET_ACCESS_KEY),
                "the secret key was printed"
            );
        }
    }
    assert_bucket_equals_postgres(&db, &s3).await;
    let out = run(exporter_s3(&db, &sim, &s3).args(["lake", "verify"]));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("0 problem(s)"), "{}", stdout(&out));
    let out = run(exporter_s3(&db, &sim, &s3).arg("doctor"));
    assert!(
        stdout(&out).contains(&format!("OK    parquet dir: {} answers", s3.url(PREFIX)))
            && stdout(&out).contains("this database's lake (no other database's marker)"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains(SECRET_ACCESS_KEY));
}

// A run killed during the upload, between the manifest commit and the copy, and after the
// copy: the crash matrix of `lakes.rs`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_the_repair_is_finished_by_the_run_after() {
    let (s3, db, sim) = tracked_lake().await;
    let crash = |point: &str| {
        let out = run(exporter_s3(&db, &sim, &s3)
            .env(receipt_exporter::crashpoint::ENV, point)
            .arg("run"));
        assert_eq!(out.status.signal(), Some(9), "killed at {point}");
    };
    crash("after_manifest_commit:1");
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM receipts.parquet_files WHERE pending_key IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(waiting, 1, "the committed file waits for its copy");
    assert!(assert_listing_committed(&db, &s3).await.is_empty());
    crash("during_repair:1");
    assert_listing_committed(&db, &s3).await;
    let out = run(exporter_s3(&db, &sim, &s3).arg("run"));
    assert_eq!(out.status.code(), Some(0));
    assert_bucket_equals_postgres(&db, &s3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_verify_names_a_deleted_and_a_truncated_object_and_repair_restores_them() {
    use object_store::ObjectStoreExt;
    let (s3, db, sim) = tracked_lake().await;
    for _ in 0..2 {
        assert_eq!(
            run(exporter_s3(&db, &sim, &s3).arg("run")).status.code(),
            Some(0)
        );
    }
    let files = s3.visible(PREFIX).await;
    assert!(files.len() >= 2, "{files:?}");
    let store = s3.store();
    let deleted = object_store::path::Path::from(files[0].0.as_str());
    let truncated = object_store::path::Path::from(files[1].0.as_str());
    store.delete(&deleted).await.unwrap();
    let bytes = store.get(&truncated).await.unwrap().bytes().await.unwrap();
    store
        .put(&truncated, bytes.slice(..bytes.len() / 2).into())
        .await
        .unwrap();
    // A writer killed before recording its file would leave such an upload behind.
    let stray = format!(
        "{PREFIX}/_pending/receipt_snapshots/capture_date=2026-01-01/run-1-0009.AbCdEfGhIj.parquet"
    );
    store
        .put(
            &object_store::path::Path::from(stray.as_str()),
            "partial".into(),
        )
        .await
        .unwrap();
    let out = run(exporter_s3(&db, &sim, &s3).args(["lake", "verify"]));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(stray.strip_prefix(&format!("{PREFIX}/")).unwrap()),
        "{text}"
    );
    for key in [&deleted, &truncated] {
        let rel = key.as_ref().strip_prefix(&format!("{PREFIX}/")).unwrap();
        assert!(text.contains(rel), "{rel} not named: {text}");
    }
    let out = run(exporter_s3(&db, &sim, &s3).args(["lake", "verify", "--repair"]));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_bucket_equals_postgres(&db, &s3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_parquet_on_s3_rewrites_each_listed_file_under_its_own_key() {
    let (s3, db, sim) = tracked_lake().await;
    for _ in 0..2 {
        assert_eq!(
            run(exporter_s3(&db, &sim, &s3).arg("run")).status.code(),
            Some(0)
        );
    }
    let before = s3.visible(PREFIX).await;
    // A damaged object (another writer's bytes) is replaced by the rows of its batches.
    let store = s3.store();
    let damaged = object_store::path::Path::from(before[0].0.as_str());
    object_store::ObjectStoreExt::put(store.as_ref(), &damaged, "not parquet".into())
        .await
        .unwrap();
    let today = chrono::Utc::now().date_naive().to_string();
    let out = run(exporter_s3(&db, &sim, &s3)
        .args(["export", "parquet", "--since", &today, "--until", &today]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("rewritten in place"),
        "{}",
        stdout(&out)
    );
    let after: Vec<String> = s3
        .visible(PREFIX)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let keys: Vec<String> = before.into_iter().map(|(k, _)| k).collect();
    assert_eq!(after, keys, "the same keys, no new object");
    assert_bucket_equals_postgres(&db, &s3).await;
    let out = run(exporter_s3(&db, &sim, &s3).args(["lake", "verify"]));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = run(exporter_s3(&db, &sim, &s3).args([
        "export",
        "parquet",
        "--since",
        &today,
        "--until",
        &today,
        "--relocate",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("drop --relocate"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_writing_leaves_a_spool_directory_that_the_next_run_removes() {
    let (s3, db, sim) = tracked_lake().await;
    let tmp = tempfile::tempdir().unwrap();
    let spools = || {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("receipt-exporter-spool."))
            .count()
    };
    let out = run(exporter_s3(&db, &sim, &s3)
        .env("TMPDIR", tmp.path())
        .env(receipt_exporter::crashpoint::ENV, "parquet_write:1")
        .arg("run"));
    assert_eq!(out.status.signal(), Some(9));
    assert_eq!(spools(), 1, "the killed run's spool directory is left");
    assert_listing_committed(&db, &s3).await;
    let out = run(exporter_s3(&db, &sim, &s3)
        .env("TMPDIR", tmp.path())
        .arg("run"));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(spools(), 0, "a dead process's spool directory is removed");
    assert_bucket_equals_postgres(&db, &s3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_events_files_land_in_the_bucket_and_verify_checks_them() {
    let s3 = S3Server::start();
    let db = TestDb::new().await;
    let group = receipt_exporter::sim::SimGroup {
        group_id: "@TGS#who-40".into(),
        group_type: receipt_exporter::sim::GroupType::Public,
        member_num: 40,
        next_msg_seq: 16,
    };
    let sim = simulator(0, 0, |c| c.groups = vec![group.clone()]);
    let out = run(exporter_s3(&db, &sim, &s3).args([
        "track",
        "add",
        &group.group_id,
        "--seqs",
        "1..15",
        "--details",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for _ in 0..2 {
        assert_eq!(
            run(exporter_s3(&db, &sim, &s3).arg("run")).status.code(),
            Some(0)
        );
        sim.advance(1);
    }
    let listed: Vec<(String, i64)> =
        sqlx::query_as("SELECT path, byte_size FROM receipts.read_event_files ORDER BY path")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(!listed.is_empty(), "read events were exported");
    let objects: Vec<(String, i64)> = s3
        .keys(&format!("{PREFIX}/read_events"))
        .await
        .into_iter()
        .map(|(k, size)| {
            (
                k.strip_prefix(&format!("{PREFIX}/")).unwrap().to_string(),
                size as i64,
            )
        })
        .collect();
    assert_eq!(
        objects, listed,
        "each listed read-events file, with its size"
    );
    let out = run(exporter_s3(&db, &sim, &s3).args(["lake", "verify"]));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

/// A run held (alive) at each moment of the upload protocol: the listing then shows only
/// committed rows, none twice (the run's own file only once it was copied into place); let go,
/// the run finishes and the bucket equals Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_at_each_moment_of_the_upload_shows_only_committed_rows() {
    use receipt_exporter::crashpoint::{PAUSE_ENV, PAUSE_FILE_ENV};
    for (point, visible) in [
        ("during_upload:1", false),
        ("after_manifest_commit:1", false),
        ("after_copy:1", true),
    ] {
        let (s3, db, sim) = tracked_lake().await;
        let pauses = tempfile::tempdir().unwrap();
        let pause = pauses.path().join("held");
        let child = exporter_s3(&db, &sim, &s3)
            .env(PAUSE_ENV, point)
            .env(PAUSE_FILE_ENV, &pause)
            .arg("run")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_file(&pause, std::time::Duration::from_secs(60)).await;
        let seen = assert_listing_committed(&db, &s3).await;
        assert_eq!(
            !seen.is_empty(),
            visible,
            "{point}: the run's file visible?"
        );
        if visible {
            assert_eq!(seen, pg_snapshots(&db).await, "{point}");
        }
        // A run mid-upload is no problem of the lake: `lake verify` (which read the manifest
        // first) and `export parquet` of the day leave its file to it.
        let verify = || run(exporter_s3(&db, &sim, &s3).args(["lake", "verify"]));
        let out = verify();
        assert_eq!(out.status.code(), Some(0), "{point}: {}", stdout(&out));
        let day = chrono::Utc::now().date_naive().to_string();
        let out = run(exporter_s3(&db, &sim, &s3)
            .args(["export", "parquet", "--since", &day, "--until", &day]));
        assert_eq!(out.status.code(), Some(0), "{point}: {}", stderr(&out));
        assert_listing_committed(&db, &s3).await;
        std::fs::remove_file(&pause).unwrap();
        let out = finish(child);
        assert_eq!(out.status.code(), Some(0), "{point}: {}", stderr(&out));
        assert_bucket_equals_postgres(&db, &s3).await;
        let out = verify();
        assert_eq!(out.status.code(), Some(0), "{point}: {}", stdout(&out));
    }
}

/// A prefix with characters object_store percent-encodes in `Path::from` (space, `%`, `~`) is
/// the key prefix S3 holds, as the user wrote it: an independent client (boto3) finds the files
/// under exactly `PREFIX/receipt_snapshots/`, and `lake verify` finds them there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_with_odd_characters_is_the_key_prefix_as_written() {
    const ODD: &str = "odd dir/50%~x";
    let s3 = S3Server::start();
    let db = TestDb::new().await;
    let sim = simulator(2, 50, |_| {});
    track_all(&db, &group_ids(&sim), 50).await;
    let lake = |cmd: &mut Command| {
        s3.env(cmd).env("EXPORT_PARQUET_DIR", s3.url(ODD));
    };
    let mut cmd = exporter_for(&db, &sim.base_url(), std::path::Path::new("unused"));
    lake(&mut cmd);
    assert_eq!(run(cmd.arg("run")).status.code(), Some(0));
    let keys = s3.raw_keys();
    let paths: Vec<String> = sqlx::query_scalar(
        "SELECT path FROM receipts.parquet_files
         UNION ALL SELECT path FROM receipts.message_read_progress_files",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(paths
        .iter()
        .any(|p| p.starts_with("message_read_progress/")));
    let mut expected: Vec<String> = paths.iter().map(|p| format!("{ODD}/{p}")).collect();
    expected.push(format!("{ODD}/_receipt_exporter.json"));
    expected.sort();
    assert_eq!(
        keys, expected,
        "the bucket's keys are the prefix as written + the manifest's paths"
    );
    let mut cmd = exporter_for(&db, &sim.base_url(), std::path::Path::new("unused"));
    lake(&mut cmd);
    let out = run(cmd.args(["lake", "verify"]));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("0 problem(s)"), "{}", stdout(&out));
}

/// A lake that cannot be used stops a run before its first API call, at once or within
/// `EXPORT_LAKE_TIMEOUT`, with one line naming what is wrong and what to check; the ledger says
/// `failed`, exit 1, no credential printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_refused_keys_or_a_silent_store_stop_a_run_before_any_api_call() {
    let db = TestDb::new().await;
    let sim = simulator(2, 50, |_| {});
    track_all(&db, &group_ids(&sim), 50).await;
    let s3 = S3Server::start();
    let checking = S3Server::start_checking_keys();
    // Accepts connections (the kernel does) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    type Case<'a> = (&'a str, &'a S3Server, Vec<(&'a str, String)>, &'a [&'a str]);
    let cases: [Case; 3] = [
        (
            "missing bucket",
            &s3,
            vec![("EXPORT_PARQUET_DIR", "s3://no-such-bucket/lake".into())],
            &["NoSuchBucket", "does not exist: create it"],
        ),
        (
            "refused keys",
            &checking,
            vec![],
            &[
                "403 Forbidden, InvalidAccessKeyId",
                "check AWS_ACCESS_KEY_ID",
            ],
        ),
        (
            "silent store",
            &s3,
            vec![
                ("AWS_ENDPOINT_URL", silent_url.clone()),
                ("EXPORT_LAKE_TIMEOUT", "5".into()),
            ],
            &["no answer from the store", "--lake-timeout"],
        ),
    ];
    for (case, server, vars, expected) in cases {
        let started = std::time::Instant::now();
        let out = run(exporter_s3(&db, &sim, server).envs(vars).arg("run"));
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(1), "{case}");
        let text = format!("{}{}", stdout(&out), stderr(&out));
        for e in expected {
            assert!(text.contains(e), "{case}: {e:?} not in {text}");
        }
        assert!(
            !text.contains(SECRET_ACCESS_KEY),
            "{case}: the secret was printed"
        );
        assert!(
            !text.contains("<?xml"),
            "{case}: the store's XML body was printed"
        );
        assert!(
            took < std::time::Duration::from_secs(20),
            "{case}: took {took:?}"
        );
        let (status, calls): (String, i64) = sqlx::query_as(
            "SELECT status, api_calls FROM receipts.export_runs ORDER BY run_id DESC LIMIT 1",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!((status.as_str(), calls), ("failed", 0), "{case}");
    }
    drop(silent);
    // A plain-http endpoint off loopback is refused naming the variable it came from.
    let out = run(exporter_s3(&db, &sim, &s3)
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_ENDPOINT", "http://10.1.2.3:9000")
        .args(["lake", "verify"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("AWS_ENDPOINT (http://10.1.2.3:9000): plain http"),
        "{}",
        stderr(&out)
    );
    // The same lake, reachable: the next run exports everything.
    let out = run(exporter_s3(&db, &sim, &s3).arg("run"));
    assert_eq!(out.status.code(), Some(0));
    assert_bucket_equals_postgres(&db, &s3).await;
}

// Two databases pointed at one prefix: the attack matrix of `lakes.rs`.

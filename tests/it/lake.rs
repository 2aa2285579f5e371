//! `lake verify [--repair]` (issue 17): the lake's files against the manifest, on the local disk.

use crate::helpers::*;

/// Asserts the exit code; returns stdout.
fn expect_code(out: &std::process::Output, code: i32) -> String {
    let text = stdout(out);
    assert_eq!(out.status.code(), Some(code), "{text}{}", stderr(out));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_verify_names_a_deleted_and_a_truncated_file_and_repair_restores_them() {
    let db = TestDb::new().await;
    let sim = simulator(3, 150, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let groups: Vec<String> = sim.groups().into_iter().map(|g| g.group_id).collect();
    track_all(&db, &groups, 150).await;
    // One group records who read each message: the lake gets read-events files too.
    sqlx::query(
        "UPDATE receipts.tracked_groups SET details = true, details_since = now() WHERE group_id = $1",
    )
    .bind(&groups[0])
    .execute(&db.pool)
    .await
    .unwrap();
    for _ in 0..2 {
        let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
        expect_code(&out, 0);
        sim.advance(1);
    }
    let exporter = || exporter_for(&db, &sim.base_url(), dir.path());
    let verify = |repair: bool| {
        let mut cmd = exporter();
        cmd.args(["lake", "verify"]);
        if repair {
            cmd.arg("--repair");
        }
        run(&mut cmd)
    };
    let listed: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM receipts.parquet_files)
              + (SELECT count(*) FROM receipts.read_event_files)
              + (SELECT count(*) FROM receipts.message_read_progress_files
                 WHERE path IS NOT NULL)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let text = expect_code(&verify(false), 0);
    assert!(
        text.contains(&format!(
            "lake: {listed} listed file(s) checked, 0 problem(s), 0 file(s) the manifest does not know"
        )),
        "{text}"
    );

    let files: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT run_id, path, byte_size FROM receipts.parquet_files ORDER BY run_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    let (deleted, truncated) = (&files[0].1, &files[1].1);
    let event_file: String =
        sqlx::query_scalar("SELECT path FROM receipts.read_event_files ORDER BY path LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let event_bytes = std::fs::read(dir.path().join(&event_file)).unwrap();
    let progress_file: String = sqlx::query_scalar(
        "SELECT path FROM receipts.message_read_progress_files ORDER BY path DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let progress_bytes = std::fs::read(dir.path().join(&progress_file)).unwrap();
    assert_eq!(
        listed, 6,
        "two snapshot files, a read-events and a read-progress file per run"
    );

    std::fs::remove_file(dir.path().join(deleted)).unwrap();
    let half = files[1].2 as u64 / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(truncated))
        .unwrap()
        .set_len(half)
        .unwrap();
    std::fs::remove_file(dir.path().join(&event_file)).unwrap();
    std::fs::remove_file(dir.path().join(&progress_file)).unwrap();
    // A file the manifest does not know, whose rows readers would count too.
    let stray = std::path::Path::new(truncated)
        .with_file_name("run-999-1.parquet")
        .to_string_lossy()
        .into_owned();
    std::fs::write(dir.path().join(&stray), b"not a parquet file").unwrap();

    // doctor: the cheap check (existence and size) names all three listed files.
    let out = run(exporter().arg("doctor"));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("lake:"))
        .unwrap_or_else(|| panic!("a lake line in:\n{text}"));
    assert!(line.starts_with("FAIL  lake: 4 of 6 file(s)"), "{line}");
    assert!(
        line.contains(&format!("{progress_file} (missing)")),
        "{line}"
    );
    assert!(line.contains(&format!("{deleted} (missing)")), "{line}");
    assert!(
        line.contains(&format!("{truncated} ({half} bytes on disk)")),
        "{line}"
    );
    assert!(line.contains(&format!("{event_file} (missing)")), "{line}");
    assert_eq!(out.status.code(), Some(1));

    let text = expect_code(&verify(false), 1);
    for want in [
        format!("{deleted}: missing (snapshots of run {}", files[0].0),
        format!(
            "{truncated}: {half} bytes on disk (snapshots of run {}",
            files[1].0
        ),
        format!("{event_file}: missing (read events of run"),
        format!("{progress_file}: missing (read progress of run"),
        format!("not in the manifest: {stray}"),
        "4 problem(s), 1 file(s) the manifest does not know".to_string(),
    ] {
        assert!(text.contains(&want), "{want} in:\n{text}");
    }

    // Repaired from Postgres: the lake equals Postgres again, and nothing unknown is left.
    let text = expect_code(&verify(true), 0);
    assert!(text.contains("repaired: capture date"), "{text}");
    assert!(
        text.contains("repaired: the read-events files of run"),
        "{text}"
    );
    // (The read-events table beside it holds other columns: the snapshots' table alone.)
    assert_eq!(
        parquet_snapshots(&dir.path().join("receipt_snapshots")),
        pg_snapshots(&db).await,
        "the snapshot files hold Postgres's rows, once each"
    );
    assert_eq!(
        std::fs::read(dir.path().join(&event_file)).unwrap(),
        event_bytes,
        "the read-events file written again from Postgres, byte for byte"
    );
    assert!(
        text.contains(&format!(
            "repaired: {progress_file} rewritten from Postgres"
        )),
        "{text}"
    );
    assert_eq!(
        std::fs::read(dir.path().join(&progress_file)).unwrap(),
        progress_bytes,
        "the read-progress file written again from its change log, byte for byte"
    );
    expect_code(&verify(false), 0);

    // Past retention a file cannot be rewritten: the repair says which runs are gone for good.
    let (run_id, path): (i64, String) =
        sqlx::query_as("SELECT run_id, path FROM receipts.parquet_files ORDER BY run_id LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    sqlx::query(
        "INSERT INTO receipts.retired_runs (run_id, run_date, row_count)
         SELECT run_id, run_date, receipts_written FROM receipts.export_runs WHERE run_id = $1",
    )
    .bind(run_id)
    .execute(&db.pool)
    .await
    .unwrap();
    std::fs::remove_file(dir.path().join(&path)).unwrap();
    let text = expect_code(&verify(true), 1);
    assert!(text.contains("gone for good: capture date"), "{text}");
    assert!(
        text.contains(&format!("retention removed runs {run_id} ")),
        "{text}"
    );
    assert!(!dir.path().join(&path).exists());
    sim.shutdown().await;
}

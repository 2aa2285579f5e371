//! `export parquet`: rebuilding Parquet days from Postgres with the real binary.

use crate::helpers::*;
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_parquet_rebuilds_a_lost_day_from_postgres() {
    let db = TestDb::new().await;
    let sim = simulator(3, 150, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let groups: Vec<String> = sim.groups().into_iter().map(|g| g.group_id).collect();
    track_all(&db, &groups, 150).await;
    for _ in 0..2 {
        let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
        assert_eq!(out.status.code(), Some(0));
        sim.advance(1);
    }
    let days: Vec<chrono::NaiveDate> =
        sqlx::query_scalar("SELECT DISTINCT capture_date FROM receipts.parquet_files ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let (first, last) = (days[0], *days.last().unwrap());
    let pg = pg_snapshots(&db).await;
    assert_eq!(pg.len(), 2 * 3 * 150 - codes(&db).await as usize);

    // The disk is lost.
    std::fs::remove_dir_all(dir.path().join("receipt_snapshots")).unwrap();
    assert!(parquet_snapshots(dir.path()).is_empty());

    // A directory without any of the manifest's files: refused unless said on purpose.
    let export = |relocate: bool| {
        let mut cmd = exporter_for(&db, &sim.base_url(), dir.path());
        cmd.args(["export", "parquet", "--since", &first.to_string()])
            .args(["--until", &last.to_string()]);
        if relocate {
            cmd.arg("--relocate");
        }
        run(&mut cmd)
    };
    let before = all_files(dir.path());
    let out = export(false);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("holds none of the") && stderr(&out).contains("--relocate"),
        "{}",
        stderr(&out)
    );
    assert_eq!(all_files(dir.path()), before, "nothing was written");

    let out = export(true);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for day in &days {
        let rows: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM receipts.receipt_snapshots
             WHERE (captured_at AT TIME ZONE 'UTC')::date = $1",
        )
        .bind(day)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(text.contains(&format!("{day}: {rows} rows in ")), "{text}");
    }
    assert!(
        text.contains(&format!("rebuilt {} day(s)", days.len())),
        "{text}"
    );
    assert_eq!(
        parquet_snapshots(dir.path()),
        pg,
        "Parquet holds what Postgres holds"
    );

    // The manifest names exactly the files on disk, and every batch points at one of them.
    let manifest: BTreeSet<String> =
        sqlx::query_scalar::<_, String>("SELECT path FROM receipts.parquet_files")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let on_disk: BTreeSet<String> = snapshot_files(dir.path())
        .iter()
        .map(|p| {
            p.strip_prefix(dir.path())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(manifest, on_disk);
    let unpointed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM receipts.write_batches WHERE row_count > 0 AND parquet_file_id IS NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(unpointed, 0);
    let hidden: Vec<_> = all_files(dir.path())
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");

    // Rebuilding again changes nothing but the files' names.
    let again = run(exporter_for(&db, &sim.base_url(), dir.path()).args([
        "export",
        "parquet",
        "--since",
        &first.to_string(),
        "--until",
        &last.to_string(),
    ]));
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(parquet_snapshots(dir.path()), pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_parquet_over_all_of_time_visits_only_the_days_with_data() {
    let db = TestDb::new().await;
    let sim = simulator(2, 40, |_| {});
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 40).await;
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
    assert_eq!(out.status.code(), Some(0));
    let pg = pg_snapshots(&db).await;
    let days: BTreeSet<chrono::NaiveDate> = sqlx::query_scalar(
        "SELECT DISTINCT (captured_at AT TIME ZONE 'UTC')::date FROM receipts.receipt_snapshots",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    // A partition directory with neither rows nor manifest entries is a day to rebuild too.
    let stray = dir.path().join("receipt_snapshots/capture_date=1999-01-01");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("run-1-0001.parquet"), b"not listed").unwrap();

    let started = std::time::Instant::now();
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).args([
        "export",
        "parquet",
        "--since",
        "0001-01-01",
        "--until",
        "9999-12-31",
    ]));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}: every day of the range was visited",
        started.elapsed()
    );
    let text = stdout(&out);
    assert!(
        text.contains(&format!("rebuilt {} day(s)", days.len() + 1)),
        "{text}"
    );
    assert!(text.contains("1999-01-01: 0 rows in 0 file(s)"), "{text}");
    assert!(!stray.join("run-1-0001.parquet").exists());
    assert_eq!(parquet_snapshots(dir.path()), pg);
    sim.shutdown().await;
}

async fn codes(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM receipts.receipt_item_codes")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[test]
fn export_parquet_refuses_bad_dates_with_one_line() {
    for (args, says) in [
        (
            vec!["--since", "2026-13-01", "--until", "2026-12-01"],
            "--since '2026-13-01'",
        ),
        (
            vec!["--since", "2026-12-02", "--until", "2026-12-01"],
            "before --since",
        ),
        (vec!["--until", "2026-12-01"], "--since DATE is required"),
    ] {
        let out = run(exporter().args(["export", "parquet"]).args(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(says), "{err}");
    }
}

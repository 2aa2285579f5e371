//! Issue 23: the warehouse lock waits with a bound. Any role that may connect can take the
//! advisory lock and keep it (advisory locks have no privileges): a run, retention or a
//! rebuild waits at most `EXPORT_LOCK_RECONNECT_TIMEOUT`, then exits 75 naming the session that
//! holds it, having changed nothing; SIGTERM ends the wait within a second. A job's lock held
//! by such a session is named as well.

use crate::helpers::*;
use sqlx::{Connection, PgConnection};
use std::process::Stdio;
use std::time::{Duration, Instant};

const LOCK: &str = "hashtext('receipt-exporter:warehouse')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_holding_the_warehouse_lock_bounds_the_wait_is_named_and_sigterm_ends_it() {
    let db = TestDb::new().await;
    let sim = simulator(2, 20, |_| {});
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 20).await;
    let analyst = format!("{}_r", db.name);
    sqlx::query(&format!(
        "CREATE ROLE \"{analyst}\" LOGIN IN ROLE receipt_reader"
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    // A read-only role's session takes the lock, as anyone who may connect can.
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_username(&analyst).unwrap();
    let options = receipt_exporter::db::connect_options(url.as_str())
        .unwrap()
        .application_name("analyst-notebook");
    let mut holder = PgConnection::connect_with(&options).await.unwrap();
    sqlx::query(&format!("SELECT pg_advisory_lock({LOCK})"))
        .execute(&mut holder)
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    let named = format!("pid {pid} (role {analyst}, application analyst-notebook)");

    // A run waits its bound (the smallest, 5 s), then exits 75 naming the session; it leaves
    // no ledger row.
    let bounded = |args: &[&str]| {
        let mut cmd = exporter_for(&db, &sim.base_url(), dir.path());
        cmd.env("EXPORT_LOCK_RECONNECT_TIMEOUT", "5").args(args);
        cmd
    };
    let started = Instant::now();
    let out = run(&mut bounded(&["run"]));
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(30),
        "waited {took:?}"
    );
    let err = stderr(&out);
    assert!(err.contains("waiting up to 5 s"), "{err}");
    assert!(err.contains(&named), "{err}");
    assert!(err.contains("EXPORT_LOCK_RECONNECT_TIMEOUT"), "{err}");
    assert!(
        err.contains(&format!("SELECT pg_terminate_backend({pid});")),
        "{err}"
    );
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.export_runs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(runs, 0, "no ledger row for a run that never began");
    // The commands that take the lock do the same.
    for args in [
        &["retention", "--keep-months", "1"][..],
        &["lake", "verify"][..],
    ] {
        let out = run(&mut bounded(args));
        assert_eq!(out.status.code(), Some(75), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(&named), "{}", stderr(&out));
    }

    // doctor names it too.
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("doctor"));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "WARN  locks: the warehouse lock is held by the session of {named}"
        )),
        "{text}"
    );

    // SIGTERM while waiting (a bound of 600 s): the run ends within a second, exit 130.
    let mut child = exporter_for(&db, &sim.base_url(), dir.path())
        .env("EXPORT_LOCK_RECONNECT_TIMEOUT", "600")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lock_session(&db, "default").await.is_none() {
        assert!(Instant::now() < deadline, "the run never took its job lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // now in the warehouse wait
    let status = terminate_within(&mut child, Duration::from_secs(1)).await;
    assert_eq!(status.code(), Some(130));

    // Once the session lets go, a run goes through.
    sqlx::query(&format!("SELECT pg_advisory_unlock({LOCK})"))
        .execute(&mut holder)
        .await
        .unwrap();
    // The same session on a job's lock: that job's runs exit 75 at once, naming it.
    let job_lock = "hashtextextended('receipt-exporter:job:default', 0)";
    sqlx::query(&format!("SELECT pg_advisory_lock({job_lock})"))
        .execute(&mut holder)
        .await
        .unwrap();
    let out = run(&mut bounded(&["run"]));
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(stderr(&out).contains(&named), "{}", stderr(&out));
    sqlx::query(&format!("SELECT pg_advisory_unlock({job_lock})"))
        .execute(&mut holder)
        .await
        .unwrap();
    holder.close().await.unwrap();
    let out = run(&mut bounded(&["run"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    sqlx::query(&format!("DROP ROLE \"{analyst}\""))
        .execute(&db.pool)
        .await
        .unwrap();
    sim.shutdown().await;
}

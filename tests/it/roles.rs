//! The README's least-privilege roles, pasted as written: the exporter can run, the analyst can
//! read, and neither can do more.

use crate::helpers::*;
use sqlx::{Connection, PgConnection};

/// The SQL block of the README's "Least-privilege Postgres roles" section.
fn readme_roles_sql() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme
        .find("### Least-privilege Postgres roles")
        .expect("the section")..];
    let start = section.find("```sql\n").expect("an sql block") + "```sql\n".len();
    let end = start + section[start..].find("```").unwrap();
    section[start..end].to_string()
}

async fn connect_as(db: &TestDb, role: &str) -> PgConnection {
    PgConnection::connect(&db.url.replacen(
        "postgres://postgres@",
        &format!("postgres://{role}@"),
        1,
    ))
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_roles_let_the_exporter_write_its_tables_and_analysts_only_read() {
    let db = TestDb::new().await;
    assert!(
        db.url.starts_with("postgres://postgres@"),
        "this test connects as other roles of the same server"
    );
    // Roles belong to the whole server: give them names of this test's own.
    let exporter_role = format!("{}_w", db.name);
    let analyst_role = format!("{}_r", db.name);
    let sql = readme_roles_sql()
        .replace("receipt_exporter", &exporter_role)
        .replace("receipt_analyst", &analyst_role);
    sqlx::raw_sql(&sql)
        .execute(&db.pool)
        .await
        .expect("the README's SQL runs as written");

    let sim = simulator(2, 60, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let groups: Vec<String> = sim.groups().into_iter().map(|g| g.group_id).collect();
    track_all(&db, &groups, 60).await;
    let exporter_url = db.url.replacen(
        "postgres://postgres@",
        &format!("postgres://{exporter_role}@"),
        1,
    );
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("DATABASE_URL", &exporter_url)
        .arg("run"));
    assert_eq!(out.status.code(), Some(0), "a run as the exporter's role");
    assert!(!pg_snapshots(&db).await.is_empty());

    let mut w = connect_as(&db, &exporter_role).await;
    for forbidden in [
        "CREATE TABLE receipts.mine (i int)",
        "INSERT INTO receipts.tracked_groups (group_id) VALUES ('x')",
        "DELETE FROM receipts.seq_windows",
        "DROP TABLE receipts.receipt_snapshots",
        "TRUNCATE receipts.export_runs",
    ] {
        let err = sqlx::query(forbidden)
            .execute(&mut w)
            .await
            .expect_err(forbidden);
        assert!(
            err.to_string().contains("permission denied")
                || err.to_string().contains("must be owner"),
            "{forbidden}: {err}"
        );
    }
    let mut r = connect_as(&db, &analyst_role).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.receipt_snapshots")
        .fetch_one(&mut r)
        .await
        .unwrap();
    assert!(n > 0, "analysts read the time series");
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.receipt_latest")
        .fetch_one(&mut r)
        .await
        .unwrap();
    for forbidden in [
        "INSERT INTO receipts.receipt_snapshots SELECT * FROM receipts.receipt_snapshots LIMIT 1",
        "DELETE FROM receipts.receipt_latest",
        "UPDATE receipts.export_runs SET error = 'x'",
        "CREATE TABLE receipts.mine (i int)",
    ] {
        let err = sqlx::query(forbidden)
            .execute(&mut r)
            .await
            .expect_err(forbidden);
        assert!(
            err.to_string().contains("permission denied"),
            "{forbidden}: {err}"
        );
    }
    w.close().await.unwrap();
    r.close().await.unwrap();
    for role in [&exporter_role, &analyst_role] {
        sqlx::raw_sql(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\";"))
            .execute(&db.pool)
            .await
            .unwrap();
    }
}

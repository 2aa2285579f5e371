//! The README's least-privilege roles, pasted as written: the exporter can run, the analyst can
//! read (and run no function that writes), neither can do more, and `doctor` says which rights
//! the exporter's role really has.

use crate::helpers::*;
use sqlx::{Connection, PgConnection};

/// The SQL block of the README's "Least-privilege Postgres roles" section.
pub fn readme_roles_sql() -> String {
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
    assert!(
        !stderr(&out).contains("partition"),
        "the exporter creates its partitions: {}",
        stderr(&out)
    );

    // doctor reports the grants the role has, not the ones it might have.
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("DATABASE_URL", &exporter_url)
        .arg("doctor"));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("privileges:"))
        .unwrap_or_else(|| panic!("a privileges line in:\n{text}"));
    assert!(
        line.starts_with(&format!(
            "OK    privileges: role {exporter_role} has what a run needs: "
        )),
        "{line}"
    );
    let select_only = line
        .split("; ")
        .find(|part| part.starts_with("SELECT on "))
        .unwrap_or_else(|| panic!("tables it may only read, in: {line}"));
    for table in ["tracked_groups", "seq_windows", "_sqlx_migrations"] {
        assert!(select_only.contains(table), "{table} in {line}");
    }
    assert!(
        line.ends_with("; EXECUTE on ensure_snapshot_partitions"),
        "{line}"
    );
    assert!(!line.contains("every receipts table"), "{line}");

    let mut w = connect_as(&db, &exporter_role).await;
    for forbidden in [
        "CREATE TABLE receipts.mine (i int)",
        "INSERT INTO receipts.tracked_groups (group_id) VALUES ('x')",
        "DELETE FROM receipts.seq_windows",
        "DROP VIEW receipts.receipt_snapshots",
        "DROP TABLE receipts.receipt_snapshot_rows",
        "DELETE FROM receipts.snapshot_groups",
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
    // Retention's SECURITY DEFINER drop is the exporter's to call (a month with no partition:
    // nothing to drop); never the analyst's (checked below with every writing function).
    let dropped: Option<i64> = sqlx::query_scalar(
        "SELECT receipts.drop_snapshot_month(date_trunc('month', now() - interval '40 months')::date)",
    )
    .fetch_one(&mut w)
    .await
    .expect("the exporter may call drop_snapshot_month");
    assert_eq!(dropped, None);
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
        "INSERT INTO receipts.receipt_snapshot_rows SELECT * FROM receipts.receipt_snapshot_rows LIMIT 1",
        "INSERT INTO receipts.snapshot_groups (group_id) VALUES ('x')",
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
    // No function that writes is the analyst's to run: not the SECURITY DEFINER partition
    // maker (PUBLIC's default EXECUTE is revoked), nor any other volatile function of ours.
    let writing_functions: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'receipts' AND (p.prosecdef OR p.provolatile = 'v')
           AND has_function_privilege($1, p.oid, 'EXECUTE')",
    )
    .bind(&analyst_role)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(writing_functions.is_empty(), "{writing_functions:?}");
    let partitions = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'receipts.receipt_snapshot_rows'::regclass",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let before = partitions().await;
    for call in [
        "SELECT receipts.ensure_snapshot_partitions(36)",
        "SELECT receipts.ensure_snapshot_partitions(3)",
        "SELECT receipts.ensure_snapshot_partitions()",
    ] {
        let err = sqlx::query(call).execute(&mut r).await.expect_err(call);
        assert!(
            err.to_string().contains("permission denied"),
            "{call}: {err}"
        );
    }
    assert_eq!(
        partitions().await,
        before,
        "the analyst created no partition"
    );
    // The exporter may, within bounds.
    sqlx::query("SELECT receipts.ensure_snapshot_partitions(3)")
        .execute(&mut w)
        .await
        .unwrap();
    for call in [
        "SELECT receipts.ensure_snapshot_partitions(36)",
        "SELECT receipts.ensure_snapshot_partitions(-1)",
        "SELECT receipts.ensure_snapshot_partitions(NULL)",
    ] {
        let err = sqlx::query(call).execute(&mut w).await.expect_err(call);
        assert!(err.to_string().contains("from 0 to 24"), "{call}: {err}");
    }
    assert_eq!(partitions().await, before);

    w.close().await.unwrap();
    r.close().await.unwrap();
    for role in [&exporter_role, &analyst_role] {
        sqlx::raw_sql(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\";"))
            .execute(&db.pool)
            .await
            .unwrap();
    }
}

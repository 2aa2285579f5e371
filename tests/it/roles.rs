//! The README's least-privilege roles, pasted as written on a cluster of the test's own; then
//! every kind of session as its login role: the owner migrates and tracks, the exporter runs,
//! backfills, keeps retention and maintains the Iceberg table, the analyst reads; none may do
//! more. The grants script names every object of the schema, and an upgrade (`migrate`) gives
//! the writer what the new version needs, which `doctor` checks as the role it runs as.

use crate::cluster::Cluster;
use crate::helpers::*;
use chrono::{Datelike, Months, Utc};
use receipt_exporter::db::roles;
use sqlx::{Connection, PgConnection};
use std::io::Write;
use std::process::{Command, Output, Stdio};

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

/// `sql` fed to psql on `database` as the superuser, as an operator pastes it.
fn paste(cluster: &Cluster, database: &str, sql: &str) -> Output {
    let mut child = cluster
        .psql(database)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    finish(child)
}

/// The URL of `database` on `cluster` for the login role `role` (the cluster trusts local
/// connections: no password).
fn as_role(cluster: &Cluster, role: &str, database: &str) -> String {
    cluster
        .url(database)
        .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1)
}

/// The binary against `url`, the simulator and a lake directory.
fn exporter_at(
    url: &str,
    sim: &receipt_exporter::sim::Simulator,
    dir: &std::path::Path,
) -> Command {
    let mut cmd = exporter();
    cmd.env("DATABASE_URL", url)
        .env("TIM_SDKAPPID", SDKAPPID.to_string())
        .env("TIM_SECRET_KEY", KEY)
        .env("TIM_API_BASE", sim.base_url())
        .env("EXPORT_PARQUET_DIR", dir);
    cmd
}

/// Asserts exit code 2 and a single line on stderr holding every one of `needles`.
fn refused_in_one_line(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, not {}: {err}", lines.len());
    for needle in needles {
        assert!(err.contains(needle), "`{needle}` in: {err}");
    }
}

/// Every statement fails with "permission denied" (or "must be owner") for the session.
async fn all_denied(conn: &mut PgConnection, who: &str, statements: &[&str]) {
    for statement in statements {
        let err = sqlx::query(statement)
            .execute(&mut *conn)
            .await
            .expect_err(&format!("{who} may not: {statement}"));
        let text = err.to_string();
        assert!(
            text.contains("permission denied") || text.contains("must be owner"),
            "{who}: {statement}: {text}"
        );
    }
}

/// What the exporter's role may not do, whatever it holds through its group.
const NOT_THE_WRITERS: &[&str] = &[
    "UPDATE receipts.receipt_snapshot_rows SET read_num = 0",
    "DELETE FROM receipts.receipt_snapshot_rows",
    "DELETE FROM receipts.receipt_item_codes",
    "UPDATE receipts.read_events SET first_seen_read_at = now()",
    "DELETE FROM receipts.read_events",
    "DELETE FROM receipts.retired_runs",
    "INSERT INTO receipts.retired_runs SELECT run_id, run_date, 0 FROM receipts.export_runs",
    "DELETE FROM receipts.read_events_pruned",
    "DELETE FROM receipts.read_event_runs_pruned",
    "UPDATE receipts.parquet_files SET row_count = row_count + 1",
    "DELETE FROM receipts.parquet_files",
    "UPDATE receipts.write_batches SET row_count = 0",
    "DELETE FROM receipts.write_batches",
    "DELETE FROM receipts.read_event_files",
    "DELETE FROM receipts.iceberg_tables",
    "DELETE FROM receipts.message_read_progress",
    "INSERT INTO receipts.tracked_groups (group_id) VALUES ('x')",
    "DELETE FROM receipts.seq_windows",
    "CREATE TABLE receipts.mine (i int)",
    "TRUNCATE receipts.export_runs",
    "DROP VIEW receipts.receipt_snapshots",
];

/// What an analyst may not do.
const NOT_THE_READERS: &[&str] = &[
    "INSERT INTO receipts.receipt_snapshot_rows SELECT * FROM receipts.receipt_snapshot_rows LIMIT 1",
    "INSERT INTO receipts.snapshot_groups (group_id) VALUES ('x')",
    "DELETE FROM receipts.receipt_latest",
    "UPDATE receipts.export_runs SET error = 'x'",
    "UPDATE receipts.iceberg_tables SET metadata_location = 'x'",
    "CREATE TABLE receipts.mine (i int)",
    "SELECT receipts.ensure_snapshot_partitions(3)",
    "SELECT receipts.prune_read_events('2000-01-01')",
    "SELECT receipts.rebuild_message_read_progress()",
    "UPDATE receipts.message_read_progress SET read_ratio = 0",
];

/// Acceptance of issue 23's roles and issue 24's item 4, on a fresh cluster: `migrate` without
/// the group roles names the SQL that creates them; the README's block runs as pasted; the
/// owner migrates and tracks, and the runs' role cannot (one line each, naming the owner);
/// the runs' role runs, backfills, keeps retention (read events included) and maintains the
/// Iceberg table, the analyst reads it with pyiceberg; neither can do more. (Long: one story on
/// one cluster, which takes seconds to start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_roles_run_as_pasted_and_each_login_role_does_its_job_and_no_more() {
    let cluster = Cluster::start();
    for database in ["analytics", "lakehouse"] {
        let out = paste(
            &cluster,
            "postgres",
            &format!("CREATE DATABASE {database};"),
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // An owner that may not create roles, on a cluster without ours: refused, with the SQL.
    let out = paste(
        &cluster,
        "lakehouse",
        "CREATE ROLE plain_owner LOGIN; GRANT CREATE ON DATABASE lakehouse TO plain_owner;",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(exporter()
        .env(
            "DATABASE_URL",
            as_role(&cluster, "plain_owner", "lakehouse"),
        )
        .arg("migrate"));
    refused_in_one_line(
        &out,
        &[
            "the group roles receipt_writer and receipt_reader do not exist",
            "DO $$ BEGIN CREATE ROLE receipt_writer NOLOGIN;",
            "DO $$ BEGIN CREATE ROLE receipt_reader NOLOGIN;",
        ],
    );
    let lakehouse = sqlx::PgPool::connect(&cluster.url("lakehouse"))
        .await
        .unwrap();
    let schema: Option<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = 'receipts'")
            .fetch_optional(&lakehouse)
            .await
            .unwrap();
    assert_eq!(schema, None, "refused before anything was created");

    // The demo, as a developer's role that may create databases but not roles: it migrates
    // its own database without the group roles (nobody else logs in there).
    let out = paste(&cluster, "postgres", "CREATE ROLE demo_dev LOGIN CREATEDB;");
    assert!(out.status.success(), "{}", stderr(&out));
    let demo_dir = tempfile::tempdir().unwrap();
    let out = run(exporter().args([
        "demo",
        "--admin-url",
        &as_role(&cluster, "demo_dev", "postgres"),
        "--dir",
        &demo_dir.path().display().to_string(),
        "--groups",
        "2",
        "--messages",
        "20",
    ]));
    assert_eq!(out.status.code(), Some(0), "the demo: {}", stderr(&out));

    // The README's block, as pasted; its group-role lines again change nothing.
    let sql = readme_roles_sql();
    assert!(sql.contains(roles::CREATE_GROUP_ROLES), "{sql}");
    let out = paste(&cluster, "analytics", &sql);
    assert!(
        out.status.success(),
        "the README's SQL as pasted: {}",
        stderr(&out)
    );
    let out = paste(&cluster, "analytics", roles::CREATE_GROUP_ROLES);
    assert!(out.status.success(), "{}", stderr(&out));

    let sim = simulator(2, 30, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let owner = as_role(&cluster, "receipt_owner", "analytics");
    let writer = as_role(&cluster, "receipt_exporter", "analytics");
    let out = run(exporter_at(&owner, &sim, dir.path()).arg("migrate"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .contains("granted receipt_writer and receipt_reader the rights of this version"),
        "{}",
        stdout(&out)
    );
    // The runs' role may neither migrate nor track, and says who may, in one line.
    let out = run(exporter_at(&writer, &sim, dir.path()).arg("migrate"));
    refused_in_one_line(
        &out,
        &[
            "role receipt_exporter may not migrate",
            "run `receipt-exporter migrate` as receipt_owner",
        ],
    );
    let groups = group_ids(&sim);
    let out = run(exporter_at(&writer, &sim, dir.path())
        .args(["track", "add", &groups[0], "--seqs", "1..30"]));
    refused_in_one_line(
        &out,
        &[
            "role receipt_exporter may only read the tracked groups",
            "run `track` as receipt_owner",
            "GRANT INSERT, UPDATE, DELETE ON receipts.tracked_groups, receipts.seq_windows TO receipt_exporter;",
        ],
    );
    for (i, g) in groups.iter().enumerate() {
        let mut args = vec!["track", "add", g, "--seqs", "1..30"];
        if i == 0 {
            args.push("--details");
        }
        let out = run(exporter_at(&owner, &sim, dir.path()).args(&args));
        assert_eq!(
            out.status.code(),
            Some(0),
            "the owner tracks: {}",
            stderr(&out)
        );
    }

    the_writer_runs_backfills_and_keeps_retention(&cluster, &sim, dir.path()).await;
    the_analyst_reads_and_neither_does_more(&cluster).await;
    the_writer_maintains_the_iceberg_table_the_analyst_reads(&cluster, &sim).await;
    migrate_creates_the_group_roles_when_it_may(&cluster).await;
    sim.shutdown().await;
}

/// The exporter's role: doctor finds every right, a run and a backfill succeed, retention drops
/// an old month and its read events (each deletion through its function), and nothing else
/// of what it recorded can be changed.
async fn the_writer_runs_backfills_and_keeps_retention(
    cluster: &Cluster,
    sim: &receipt_exporter::sim::Simulator,
    dir: &std::path::Path,
) {
    let writer = as_role(cluster, "receipt_exporter", "analytics");
    let out = run(exporter_at(&writer, sim, dir).arg("doctor"));
    let text = stdout(&out);
    assert!(
        text.contains("OK    privileges: role receipt_exporter has every right runs, backfills, retention and maintenance need (")
            && text.contains(", as a member of receipt_writer"),
        "{text}"
    );
    let out = run(exporter_at(&writer, sim, dir).arg("run"));
    assert_eq!(out.status.code(), Some(0), "a run: {}", stderr(&out));
    assert!(!stderr(&out).contains("partition"), "{}", stderr(&out));
    let out = run(exporter_at(&writer, sim, dir).args(["backfill", "--all", "--seqs", "1..10"]));
    assert_eq!(out.status.code(), Some(0), "a backfill: {}", stderr(&out));

    // Run 1 took place three months ago: moved there (files and all) by the owner, whose
    // partitions they are.
    let admin = sqlx::PgPool::connect(&as_role(cluster, "receipt_owner", "analytics"))
        .await
        .unwrap();
    let old = (Utc::now().date_naive().with_day(1).unwrap()) - Months::new(3);
    sqlx::raw_sql(&format!(
        "CREATE TABLE receipts.receipt_snapshot_rows_y{}m{:02} PARTITION OF receipts.receipt_snapshot_rows
             FOR VALUES FROM ('{old}') TO ('{}');
         UPDATE receipts.receipt_snapshot_rows SET run_date = '{old}' WHERE run_id = 1;
         UPDATE receipts.export_runs SET run_date = '{old}' WHERE run_id = 1;",
        old.year(),
        old.month(),
        old + Months::new(1)
    ))
    .execute(&admin)
    .await
    .unwrap();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.read_events")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(events > 0, "the details-on group's readers are recorded");
    let out = run(exporter_at(&writer, sim, dir).args(["retention", "--keep-months", "1"]));
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "retention: {text}{}",
        stderr(&out)
    );
    assert!(text.contains("dropped 1 month(s)"), "{text}");
    assert!(
        text.contains(&format!("removed {events} read event(s)")),
        "{text}"
    );

    // The writer recomputes the read progress; the rows of messages retention cut stay.
    let progress: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.message_read_progress")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(progress > 0, "every run keeps the read progress");
    let out = run(exporter_at(&writer, sim, dir).args(["progress", "rebuild"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "0 rows changed; kept {progress} rows as they were"
        )),
        "run 1 first saw every message, and retention dropped its snapshots: {}",
        stdout(&out)
    );

    let mut w = PgConnection::connect(&writer).await.unwrap();
    all_denied(&mut w, "the writer", NOT_THE_WRITERS).await;
    // Its functions do their one thing and no more: no manifest row of a retired run is
    // forgotten, no recent month dropped.
    for (call, why) in [
        (
            "SELECT receipts.forget_parquet_files(array_agg(file_id)) FROM receipts.parquet_files WHERE run_id = 1",
            "hold rows retention removed from Postgres",
        ),
        (
            "SELECT receipts.drop_snapshot_month(date_trunc('month', now())::date)",
            "is not the first day of a month before last month",
        ),
        (
            "SELECT receipts.forget_read_event_files(1, ARRAY[current_date])",
            "retention removed read events of run 1",
        ),
    ] {
        let err = sqlx::query(call).execute(&mut w).await.expect_err(call);
        assert!(err.to_string().contains(why), "{call}: {err}");
    }
    w.close().await.unwrap();
}

/// The analyst's role reads the time series and the read events, writes nothing, and may run
/// no function that writes.
async fn the_analyst_reads_and_neither_does_more(cluster: &Cluster) {
    let mut r = PgConnection::connect(&as_role(cluster, "receipt_analyst", "analytics"))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.receipt_snapshots")
        .fetch_one(&mut r)
        .await
        .unwrap();
    assert!(n > 0, "analysts read the time series");
    for view in [
        "receipt_latest",
        "message_readers",
        "read_events_pruned",
        "export_runs",
    ] {
        sqlx::query(&format!("SELECT count(*) FROM receipts.{view}"))
            .execute(&mut r)
            .await
            .unwrap_or_else(|e| panic!("the analyst reads {view}: {e}"));
    }
    all_denied(&mut r, "the analyst", NOT_THE_READERS).await;
    r.close().await.unwrap();
    let admin = sqlx::PgPool::connect(&cluster.url("analytics"))
        .await
        .unwrap();
    let writing: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'receipts' AND (p.prosecdef OR p.provolatile = 'v')
           AND has_function_privilege('receipt_analyst', p.oid, 'EXECUTE')",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(writing.is_empty(), "{writing:?}");
}

/// In a second database, in Iceberg mode: the owner migrates it, the exporter's role creates
/// the table, commits to it and maintains it; the analyst reads every row with pyiceberg.
async fn the_writer_maintains_the_iceberg_table_the_analyst_reads(
    cluster: &Cluster,
    sim: &receipt_exporter::sim::Simulator,
) {
    let grant = readme_roles_sql()
        .lines()
        .find(|l| l.starts_with("GRANT CREATE ON DATABASE analytics"))
        .unwrap()
        .replace("analytics", "lakehouse");
    let out = paste(cluster, "lakehouse", &grant);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let owner = as_role(cluster, "receipt_owner", "lakehouse");
    let writer = as_role(cluster, "receipt_exporter", "lakehouse");
    let out = run(exporter_at(&owner, sim, dir.path()).arg("migrate"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for g in group_ids(sim) {
        let out =
            run(exporter_at(&owner, sim, dir.path()).args(["track", "add", &g, "--seqs", "1..30"]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let iceberg = |url: &str| {
        let mut cmd = exporter_at(url, sim, dir.path());
        cmd.env("EXPORT_TABLE_FORMAT", "iceberg");
        cmd
    };
    let out = run(iceberg(&writer).arg("run"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "an Iceberg run: {}",
        stderr(&out)
    );
    let out = run(iceberg(&writer).args(["iceberg", "maintain", "--expire-older-than", "0s"]));
    assert_eq!(out.status.code(), Some(0), "maintain: {}", stderr(&out));
    let out = run(iceberg(&writer).arg("doctor"));
    let text = stdout(&out);
    assert!(
        text.contains("OK    privileges: role receipt_exporter"),
        "{text}"
    );
    assert!(
        text.contains("OK    iceberg: receipts.receipt_snapshots at file://"),
        "{text}"
    );

    let analyst = as_role(cluster, "receipt_analyst", "lakehouse");
    let analyst = format!(
        "postgresql+psycopg2://{}?options=-csearch_path%3Dreceipts",
        analyst.split_once("://").unwrap().1
    );
    let rows = crate::iceberg::pyiceberg_at(&analyst, "rows")
        .lines()
        .count();
    let pool = sqlx::PgPool::connect(&cluster.url("lakehouse"))
        .await
        .unwrap();
    assert_eq!(
        rows,
        pg_snapshots_in(&pool).await.len(),
        "the analyst reads every row"
    );
}

/// Without the group roles, `migrate` as a role that may create roles creates them (and
/// grants them this version's rights): here the superuser, after the roles were dropped.
async fn migrate_creates_the_group_roles_when_it_may(cluster: &Cluster) {
    for database in ["analytics", "lakehouse"] {
        let out = paste(
            cluster,
            database,
            "DROP OWNED BY receipt_writer, receipt_reader;",
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = paste(
        cluster,
        "postgres",
        "DROP ROLE receipt_writer, receipt_reader;",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(exporter()
        .env("DATABASE_URL", cluster.url("analytics"))
        .arg("migrate"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let pool = sqlx::PgPool::connect(&cluster.url("analytics"))
        .await
        .unwrap();
    let may: bool = sqlx::query_scalar(
        "SELECT has_function_privilege('receipt_writer', 'receipts.drop_snapshot_month(date)', 'EXECUTE')
            AND has_table_privilege('receipt_reader', 'receipts.receipt_snapshots', 'SELECT')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(may, "the roles were created and granted their rights");
}

/// Every table, view and function of the schema is named in the grants script (a migration
/// that adds one must say who may use it), and both group roles read every table and view.
#[tokio::test]
async fn the_grants_script_names_every_object_of_the_schema() {
    let db = TestDb::new().await;
    let objects: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, c.relkind IN ('r', 'p', 'v', 'm') FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'receipts' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND NOT c.relispartition
         UNION ALL
         SELECT p.proname::text, false FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'receipts'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(objects.len() > 20, "{objects:?}");
    let missing: Vec<&str> = objects
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| !roles::GRANTS.contains(&format!("receipts.{name}")))
        .collect();
    assert!(
        missing.is_empty(),
        "not named in {}: {missing:?}: grant them there (who may read them, who may write)",
        roles::GRANTS_PATH
    );
    for (name, _) in objects.iter().filter(|(_, readable)| *readable) {
        let (writer, reader): (bool, bool) = sqlx::query_as(
            "SELECT has_table_privilege($1, $3, 'SELECT'), has_table_privilege($2, $3, 'SELECT')",
        )
        .bind(roles::WRITER)
        .bind(roles::READER)
        .bind(format!("receipts.{name}"))
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(writer && reader, "{name}: SELECT for both group roles");
    }
    let public: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'receipts'
           AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(public.is_empty(), "functions PUBLIC may run: {public:?}");
}

/// An upgrade: the writer's group lacks a right the new version needs (as after a migration
/// whose grants it never got): `doctor`, as the writer, names it and says to run `migrate`,
/// which grants it. A role of the old README (rights of its own, no group) is told to join
/// the group, and then warned of what it holds beyond a writer's rights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_gives_the_writer_what_an_upgrade_needs_and_doctor_checks_it() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (member, old) = (format!("{}_w", db.name), format!("{}_old", db.name));
    sqlx::raw_sql(&format!(
        "CREATE ROLE \"{member}\" LOGIN IN ROLE receipt_writer;
         CREATE ROLE \"{old}\" LOGIN;
         GRANT USAGE ON SCHEMA receipts TO \"{old}\";
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA receipts TO \"{old}\";
         GRANT EXECUTE ON FUNCTION receipts.ensure_snapshot_partitions(integer) TO \"{old}\";
         REVOKE EXECUTE ON FUNCTION receipts.drop_snapshot_month(date) FROM receipt_writer;"
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let privileges = |role: &str| {
        let mut url = url::Url::parse(&db.url).unwrap();
        url.set_username(role).unwrap();
        let out = run(exporter()
            .env("DATABASE_URL", url.as_str())
            .env("EXPORT_PARQUET_DIR", dir.path())
            .arg("doctor"));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.get(6..).is_some_and(|r| r.starts_with("privileges: ")))
            .unwrap_or_else(|| panic!("no privileges line in:\n{text}"));
        let fix = lines.get(at + 1).filter(|l| l.starts_with("      fix: "));
        let line = format!("{}\n{}", lines[at], fix.unwrap_or(&""));
        (out.status.code(), line)
    };
    let (code, text) = privileges(&member);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.starts_with(&format!(
            "FAIL  privileges: role {member} lacks for retention: EXECUTE on receipts.drop_snapshot_month(date)"
        )),
        "{text}"
    );
    assert!(
        text.contains("run `receipt-exporter migrate` as the schema's owner"),
        "{text}"
    );
    let out = run(exporter().env("DATABASE_URL", &db.url).arg("migrate"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (_, text) = privileges(&member);
    assert!(
        text.starts_with(&format!("OK    privileges: role {member} has every right")),
        "{text}"
    );

    let (_, text) = privileges(&old);
    assert!(
        text.starts_with(&format!(
            "FAIL  privileges: role {old} lacks for runs and backfills: "
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("GRANT receipt_writer TO {old};")),
        "{text}"
    );
    sqlx::query(&format!("GRANT receipt_writer TO \"{old}\""))
        .execute(&db.pool)
        .await
        .unwrap();
    let (_, text) = privileges(&old);
    assert!(
        text.starts_with(&format!("WARN  privileges: role {old} has every right")),
        "{text}"
    );
    for excess in [
        "UPDATE on receipts.receipt_snapshot_rows",
        "DELETE on receipts.retired_runs",
        "UPDATE on receipts.parquet_files (row_count)",
        "DELETE on receipts.iceberg_tables",
    ] {
        assert!(text.contains(excess), "{excess} in {text}");
    }
    sqlx::raw_sql(&format!(
        "DROP OWNED BY \"{old}\"; DROP ROLE \"{old}\"; DROP ROLE \"{member}\";"
    ))
    .execute(&db.pool)
    .await
    .unwrap();
}

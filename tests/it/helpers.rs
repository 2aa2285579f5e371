//! Shared test helpers: a fresh database per test, and running the real binary.
#![allow(dead_code)]

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use std::process::{Command, Output};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

/// The server the tests create their databases on. `DATABASE_URL` overrides the default
/// (the local Postgres with trust auth that every machine of this project has).
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test, migrated, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    /// A fresh, migrated database.
    pub async fn new() -> TestDb {
        let db = Self::empty().await;
        receipt_exporter::db::migrate(&db.pool)
            .await
            .expect("migrations apply");
        db
    }

    /// A fresh database with nothing in it.
    pub async fn empty() -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "rexp_t_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("the local Postgres is up");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = with_database(&admin, &name);
        let options = receipt_exporter::db::connect_options(&url).unwrap();
        let pool = receipt_exporter::db::connect(&options)
            .await
            .expect("connect to test database");
        TestDb { name, url, pool }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::query(&sql).execute(&mut conn).await;
                }
            });
        })
        .join()
        .ok();
    }
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, database: &str) -> String {
    PgConnectOptions::from_str(url).expect("DATABASE_URL is a valid Postgres URL");
    let without_query = url.split('?').next().unwrap();
    let (base, _) = without_query
        .rsplit_once('/')
        .expect("a URL with a database path");
    format!("{base}/{database}")
}

/// The real binary, with an environment cleared of our settings so a developer's shell
/// cannot leak into a test.
pub fn exporter() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_receipt-exporter"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TIM_") || key.starts_with("EXPORT_") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Runs the command and returns its output, printing both streams so a failing test shows them.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the binary runs");
    eprintln!("--- {:?}\n--- exit: {:?}", cmd, out.status.code());
    eprintln!("--- stdout:\n{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("--- stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

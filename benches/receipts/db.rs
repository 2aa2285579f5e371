//! Bench databases: created fresh and migrated, dropped when the handle is dropped.

use anyhow::Context;
use sqlx::{Connection, PgConnection, PgPool};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh, migrated database of its own.
pub struct BenchDb {
    admin_url: String,
    pub name: String,
    /// The database's URL (for psql and the exporter binary).
    pub url: String,
    /// A pool as the exporter opens it (`search_path` = `receipts`).
    pub pool: PgPool,
}

static NEXT: AtomicU32 = AtomicU32::new(1);

impl BenchDb {
    pub async fn create(admin_url: &str) -> anyhow::Result<BenchDb> {
        let name = format!(
            "receipt_bench_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url} (set DATABASE_URL)"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let mut url = url::Url::parse(admin_url)?;
        url.set_path(&name);
        let url = url.to_string();
        let options = receipt_exporter::db::connect_options(&url)?;
        let pool = receipt_exporter::db::connect(&options).await?;
        receipt_exporter::db::migrate(&pool).await?;
        Ok(BenchDb {
            admin_url: admin_url.to_string(),
            name,
            url,
            pool,
        })
    }

    /// Closes the pool and drops the database.
    pub async fn drop_db(self) -> anyhow::Result<()> {
        self.pool.close().await;
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        Ok(())
    }

    /// A ledger row for sink writes to point at (the sinks' tables reference it).
    pub async fn open_run(&self) -> anyhow::Result<(i64, chrono::NaiveDate)> {
        Ok(sqlx::query_as(
            "INSERT INTO receipts.export_runs (job, kind, status, host, pid)
             VALUES ('bench', 'manual', 'running', 'bench', 0) RETURNING run_id, run_date",
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

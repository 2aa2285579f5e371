//! `receipt-exporter demo`: the main job end to end on local defaults. Starts the built-in
//! simulator with sample groups, uses a database of its own on the local Postgres (never the
//! one DATABASE_URL names, so sample groups never reach a real warehouse), migrates, tracks the
//! sample groups, runs an export and says where to look. Safe to run again: each run adds a
//! snapshot of every sample message whose count can still change.

use crate::cli::DemoArgs;
use crate::exit::Exit;
use crate::run::ledger::RunKind;
use crate::run::{self, RunRequest};
use crate::secret::Secret;
use crate::settings::{ApiEndpoint, Settings};
use crate::sim::{SimConfig, Simulator};
use crate::tracking::{store, SeqWindow};
use anyhow::Context;
use sqlx::{Connection, PgConnection};
use std::time::Duration;

const DEMO_DATABASE: &str = "receipt_exporter_demo";
const DEMO_SDKAPPID: u64 = 1_400_000_000;

/// (Over 60 lines: the demo's steps in the order it prints them: database, simulator, tracking, run, next steps.)
pub async fn run(settings: &Settings, args: DemoArgs) -> anyhow::Result<Exit> {
    let database_url = ensure_database(&args.admin_url).await?;
    let options = crate::db::connect_options(&database_url)?;
    let pool = crate::db::connect(&options).await?;
    let grants = crate::db::Grants::IfRolesExist;
    for (version, description) in crate::db::migrate_with(&pool, grants).await? {
        println!("applied migration {version} {description}");
    }

    // A key of this demo's own: the simulator and the exporter share it, nothing else sees it.
    let key = Secret::new(format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    ));
    let mut sim_config = SimConfig::new(DEMO_SDKAPPID, key.clone(), settings.identifier.clone());
    sim_config.seed = 7;
    sim_config.groups = crate::sim::generate_groups(7, args.groups, args.messages);
    sim_config.latency = Duration::from_millis(20);
    sim_config.latency_jitter = Duration::from_millis(10);
    // Read counts move on between demo runs: each run sees the next step.
    let previous_runs = crate::run::ledger::count_runs(&pool, "demo").await?;
    let sim = Simulator::start(sim_config, "127.0.0.1:0".parse()?)?;
    sim.advance(previous_runs as u64);
    println!(
        "simulator listening on {} with {} sample groups",
        sim.addr(),
        args.groups
    );

    let mut tx = pool.begin().await?;
    for group in sim.groups() {
        let newest = group.next_msg_seq.saturating_sub(1) as i64;
        store::upsert_group(
            &mut tx,
            Some(DEMO_SDKAPPID as i64),
            &group.group_id,
            &["demo".to_string()],
            Some("demo sample group"),
        )
        .await?;
        if newest >= 1 {
            store::add_windows(
                &mut tx,
                Some(DEMO_SDKAPPID as i64),
                std::slice::from_ref(&group.group_id),
                &[SeqWindow::new(1, newest).map_err(anyhow::Error::msg)?],
            )
            .await?;
        }
    }
    tx.commit().await?;
    println!("tracking the sample groups (`receipt-exporter --database-url {database_url} track list` lists them)");

    let run_settings = Settings {
        database: Some(options),
        sdkappid: Some(DEMO_SDKAPPID),
        secret_key: Some(key),
        api: Some(ApiEndpoint::Base(sim.base_url())),
        lake: crate::lake::Lake::Local(args.dir.join("warehouse")),
        ..settings.clone()
    };
    follow_demo_dir(&pool, &run_settings).await?;
    let request = RunRequest {
        job: "demo".into(),
        kind: RunKind::Manual,
        selection: run::Selection::Tracked {
            tags: vec!["demo".into()],
        },
        follow: Default::default(),
    };
    let report = run::execute(&run_settings, &pool, &request, super::run::stop_on_signal()).await?;
    sim.shutdown().await;
    super::emit_summary(&report.summary(&run_settings));
    match run_settings.table_format {
        crate::settings::TableFormat::Parquet => {
            print_next_steps(&database_url, &args.dir.join("warehouse"))
        }
        crate::settings::TableFormat::Iceberg => print_iceberg_steps(&database_url),
    }
    write_report(&pool, &args.dir.join("report.html")).await?;
    Ok(crate::exit::for_run(&report))
}

/// The demo's report (`receipt-exporter report`): the last 7 days of the demo's messages.
async fn write_report(pool: &sqlx::PgPool, path: &std::path::Path) -> anyhow::Result<()> {
    let until = chrono::Utc::now() + chrono::Duration::minutes(1);
    let range = crate::report::Range {
        since: until - chrono::Duration::days(7),
        until,
        groups: Vec::new(),
        app: None,
    };
    let figures = crate::report::gather(pool, &range).await?;
    let page = crate::report::html::render(&figures, &range, chrono::Utc::now());
    super::report::write_atomically(path, page.as_bytes())?;
    let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    println!(
        "\nThe report of the last 7 days, one HTML file to open in a browser: {}\n(`receipt-exporter report --out FILE.html --since DATE` writes one for any range)",
        shown.display()
    );
    Ok(())
}

/// The demo's database is its own: the lake it records follows the demo's directory and table
/// format (a real database's moves only with `lake move`).
async fn follow_demo_dir(pool: &sqlx::PgPool, settings: &Settings) -> anyhow::Result<()> {
    use crate::sink::identity::{self, Identity};
    let wanted = Identity::of(&settings.lake, settings.table_format);
    if let Some(recorded) = identity::recorded(pool).await?.filter(|r| *r != wanted) {
        let (lake, format) = (&settings.lake, settings.table_format);
        crate::sink::LakeTarget::relocate(pool, &recorded.location, lake, format).await?;
        println!("the demo database's lake is now {wanted} (was {recorded})");
    }
    Ok(())
}

/// Creates the demo database on the local server if it is not there yet; returns its URL.
async fn ensure_database(admin_url: &str) -> anyhow::Result<String> {
    let mut conn = PgConnection::connect(admin_url).await.with_context(|| {
        format!(
            "while connecting to the local Postgres at {}",
            crate::settings::redact_url_password(admin_url)
        )
    })?;
    if crate::db::create_database_if_missing(&mut conn, DEMO_DATABASE).await? {
        println!("created database {DEMO_DATABASE}");
    }
    let base = admin_url.split('?').next().unwrap_or(admin_url);
    let (server, _) = base
        .rsplit_once('/')
        .context("the admin URL names no database")?;
    Ok(format!("{server}/{DEMO_DATABASE}"))
}

fn print_next_steps(database_url: &str, parquet_dir: &std::path::Path) {
    let glob = parquet_dir.join("receipt_snapshots/*/*.parquet");
    println!(
        "\nParquet files: {dir}/receipt_snapshots/capture_date=YYYY-MM-DD/run-<run_id>-<part>.parquet
Try, in DuckDB:
  SELECT group_id, count(*) AS snapshots, round(sum(read_num) / sum(read_num + unread_num), 3) AS read_ratio
  FROM read_parquet('{glob}', hive_partitioning = true) GROUP BY group_id ORDER BY group_id;
or in Postgres (psql {database_url}):
  SELECT group_id, count(*) AS messages, round(avg(read_num::numeric / nullif(read_num + unread_num, 0)), 3) AS read_ratio
  FROM receipts.receipt_latest GROUP BY group_id ORDER BY group_id;
and how fast each group reads (the read-progress table every run keeps):
  SELECT group_id, count(*) AS messages, count(half_read_at) AS half_read, count(ninety_read_at) AS ninety_read,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY half_read_at - first_seen_at) AS median_time_to_half
  FROM receipts.message_read_progress GROUP BY group_id ORDER BY group_id;
Run the demo again: the read counts move on, and messages read by everyone (settled) or\nwithout a receipt are skipped, as in real runs.",
        dir = parquet_dir.display(),
        glob = glob.display(),
    );
}

/// In Iceberg mode: the README's pyiceberg + DuckDB query, on the demo's database.
fn print_iceberg_steps(database_url: &str) {
    let rest = database_url
        .split_once("://")
        .map_or(database_url, |(_, r)| r);
    println!(
        "\nThe Iceberg table receipts.receipt_snapshots, its catalog in {database_url} (schema receipts).
Try, with pyiceberg and DuckDB (python3 -m pip install \"pyiceberg[sql-postgres,pyarrow]==0.12.0\" duckdb==1.5.5):
python3 - <<'PY'
from pyiceberg.catalog.sql import SqlCatalog
import duckdb
catalog = SqlCatalog(\"receipt_exporter\", init_catalog_tables=\"false\",
    uri=\"postgresql+psycopg2://{rest}?options=-csearch_path%3Dreceipts\")
snapshots = catalog.load_table(\"receipts.receipt_snapshots\").scan().to_arrow()
print(duckdb.sql(\"\"\"SELECT group_id, count(*) AS snapshots,
                           round(sum(read_num) / sum(read_num + unread_num), 3) AS read_ratio
                    FROM snapshots GROUP BY group_id ORDER BY group_id\"\"\"))
PY"
    );
}

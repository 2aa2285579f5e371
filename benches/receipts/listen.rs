//! Section 9, the webhook's receiver (`listen`, issue 27): deliveries per second it sustains
//! and the latency from request to answer (p50, p99), each delivery a distinct
//! `Group.CallbackAfterReadReceipt` of two messages of a tracked group, signed with the token,
//! stored in the inbox before it is answered, while the flush writes them to Postgres and the
//! lake in the background. The load comes from this process (reqwest, 32 requests in flight)
//! on the same 2 cores as the receiver and Postgres.

use crate::report::{thousands, Report, Samples};
use crate::Opts;
use futures::StreamExt;
use receipt_exporter::listen::{self, flush, Receiver};
use receipt_exporter::secret::Secret;
use receipt_exporter::settings::{self, RawSettings};
use std::time::{Duration, Instant};

const APP: u64 = 1_400_000_001;
const TOKEN: &str = "bench-callback-token-0123456789";
const GROUPS: usize = 50;
const IN_FLIGHT: usize = 32;

pub async fn bench(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let (rounds, per_round) = if opts.quick { (3, 3_000) } else { (5, 10_000) };
    println!(
        "\n== 9. listen: {} deliveries per round, {IN_FLIGHT} in flight, {rounds} rounds ==",
        thousands(per_round as f64)
    );
    let db = crate::db::BenchDb::create(&opts.admin_url).await?;
    for g in 0..GROUPS {
        sqlx::query("INSERT INTO receipts.tracked_groups (group_id) VALUES ($1)")
            .bind(format!("bench-{g}"))
            .execute(&db.pool)
            .await?;
    }
    let dir = tempfile::tempdir()?;
    let settings = bench_settings(&db.url, dir.path())?;
    let listener = listen::bind("127.0.0.1:0".parse()?).await?;
    let url = format!("http://{}/callback", listener.local_addr()?);
    let stop = tokio_util::sync::CancellationToken::new();
    let receiver = Receiver {
        path: "/callback".into(),
        sdkappid: APP,
        token: Some(Secret::new(TOKEN)),
    };
    let policy = flush::Policy {
        every: Duration::from_secs(5),
        rows: 5_000,
        keep_untracked: false,
    };
    let (pool, serving_stop) = (db.pool.clone(), stop.clone());
    let serving = tokio::spawn(async move {
        listen::serve(&settings, &pool, listener, receiver, policy, serving_stop).await
    });
    let client = reqwest::Client::new();
    let (mut rate, mut p50, mut p99) = (Samples::default(), Samples::default(), Samples::default());
    for round in 0..rounds {
        let first = round * per_round;
        let (per_second, mut latencies) = load(&client, &url, first, per_round).await?;
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        let (m, n) = (at(0.50).as_secs_f64() * 1e3, at(0.99).as_secs_f64() * 1e3);
        println!(
            "  round {}: {per_second:.0} deliveries/s, p50 {m:.2} ms, p99 {n:.2} ms",
            round + 1
        );
        rate.push(per_second);
        p50.push(m);
        p99.push(n);
    }
    stop.cancel();
    let ran = serving.await??;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.receipt_snapshots")
        .fetch_one(&db.pool)
        .await?;
    anyhow::ensure!(
        rows == (rounds * per_round * 2) as i64,
        "every delivery's two rows flushed ({rows}, run {} {})",
        ran.run_id,
        ran.status.as_str()
    );
    report.target(
        "listen: deliveries/s (2 messages each)",
        rate.show(0),
        rate.median() >= 2_000.0,
        ">= 2,000/s",
    );
    report.figure("listen: p50 request to answer (ms)", p50.show(2));
    report.target(
        "listen: p99 request to answer (ms)",
        p99.show(2),
        p99.median() <= 50.0,
        "<= 50 ms",
    );
    db.drop_db().await
}

/// The receiver's settings: the bench database, a lake in `dir`.
fn bench_settings(url: &str, dir: &std::path::Path) -> anyhow::Result<settings::Settings> {
    let mut raw = RawSettings::default();
    raw.give(settings::DATABASE_URL, Some(url.to_string()), false);
    raw.give(settings::SDKAPPID, Some(APP.to_string()), false);
    let lake = dir.display().to_string();
    raw.give(settings::PARQUET_DIR, Some(lake), false);
    Ok(settings::resolve(raw)?)
}

/// Sends `n` distinct deliveries, `IN_FLIGHT` at a time; the rate and each one's latency.
async fn load(
    client: &reqwest::Client,
    url: &str,
    first: usize,
    n: usize,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let time = chrono::Utc::now().timestamp().to_string();
    let sign = listen::auth::sign(&Secret::new(TOKEN), &time);
    let query = format!(
        "{url}?SdkAppid={APP}&CallbackCommand=Group.CallbackAfterReadReceipt&contenttype=json&RequestTime={time}&Sign={sign}"
    );
    let started = Instant::now();
    let answers: Vec<anyhow::Result<Duration>> = futures::stream::iter(first..first + n)
        .map(|i| {
            let (client, query) = (client, &query);
            async move {
                let body = delivery(i);
                let t = Instant::now();
                let answer = client.post(query).body(body).send().await?;
                anyhow::ensure!(answer.status() == 200, "answered {}", answer.status());
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let latencies = answers.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((n as f64 / elapsed, latencies))
}

/// Delivery `i`: two messages of one of the tracked groups, its own EventTime.
fn delivery(i: usize) -> String {
    let group = format!("bench-{}", i % GROUPS);
    let seq = (i / GROUPS) as i64 * 2 + 1;
    let event = 1_765_000_000_000_i64 + i as i64;
    format!(
        r#"{{"CallbackCommand":"Group.CallbackAfterReadReceipt","GroupId":"{group}","Type":"Public","EventTime":"{event}","GroupMsgReceiptList":[{{"MsgSeq":{seq},"ReadNum":3,"UnreadNum":7,"ReadReceiptMembers":[{{"Member_Account":"m1"}}]}},{{"MsgSeq":{},"ReadNum":1,"UnreadNum":9,"ReadReceiptMembers":[]}}]}}"#,
        seq + 1
    )
}

//! Issue 28: `receipt-exporter report`, tested as a person sees it. A seeded database with a
//! hand-made series of known answers: the page's SVG contract (`<svg data-chart>` with one
//! `data-series` element per series, its points) carries those answers; headless Chromium
//! renders it to a PNG (it loads, the page is no wider than the window, no error shown). An
//! empty database and 10,000 groups give valid pages too.

use crate::helpers::*;
use std::path::Path;
use std::process::Output;

/// The report of `db` over the days of the seeded series, into `out`.
fn report(db: &TestDb, out: &Path, extra: &[&str]) -> Output {
    let mut cmd = exporter();
    cmd.env("DATABASE_URL", &db.url).args([
        "report",
        "--out",
        out.to_str().unwrap(),
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-08T00:00:00Z",
    ]);
    cmd.args(extra);
    run(&mut cmd)
}

/// Seeds snapshots over `groups` groups and rebuilds the progress table from them. The first
/// two groups hold the hand-made series (10 members each, captures on 2026-11-02):
///   alpha/1  1/9 at 00:00, 5/5 at 01:00 (50%), 9/1 at 02:00 (90%)
///   alpha/2  2/8 at 00:00, 2/8 at 01:00, 4/6 at 03:00 (never 50%)
///   beta/1   0/10 at 00:00, 3/7 at 05:00
/// Every other group, `g-N`, has three messages read 5/5 at its first capture.
async fn seed(db: &TestDb, groups: i64) {
    sqlx::raw_sql(&format!(
        "INSERT INTO receipts.export_runs (job, kind, status, host, pid, run_date)
         VALUES ('seed', 'manual', 'succeeded', 'h', 0, '2026-11-02');
         INSERT INTO receipts.snapshot_groups (group_id) VALUES ('alpha'), ('beta');
         INSERT INTO receipts.snapshot_groups (group_id)
         SELECT 'g-' || k FROM generate_series(3, {groups}) k;
         INSERT INTO receipts.receipt_snapshot_rows
             (captured_at, msg_seq, run_id, run_date, group_key, batch_no, read_num, unread_num)
         SELECT '2026-11-02T00:00:00Z'::timestamptz + make_interval(hours => h), seq, 1,
                '2026-11-02', (SELECT group_key FROM receipts.snapshot_groups WHERE group_id = g),
                1, r, 10 - r
         FROM (VALUES ('alpha', 1, 0, 1), ('alpha', 1, 1, 5), ('alpha', 1, 2, 9),
                      ('alpha', 2, 0, 2), ('alpha', 2, 1, 2), ('alpha', 2, 3, 4),
                      ('beta', 1, 0, 0), ('beta', 1, 5, 3)) AS v(g, seq, h, r);
         INSERT INTO receipts.receipt_snapshot_rows
             (captured_at, msg_seq, run_id, run_date, group_key, batch_no, read_num, unread_num)
         SELECT '2026-11-03T00:00:00Z'::timestamptz + make_interval(secs => g.group_key), seq, 1,
                '2026-11-02', g.group_key, 2, 5, 5
         FROM receipts.snapshot_groups g, generate_series(1, 3) seq
         WHERE g.group_id LIKE 'g-%';
         SELECT * FROM receipts.rebuild_message_read_progress();"
    ))
    .execute(&db.pool)
    .await
    .unwrap();
}

/// The `<g data-series=...>` element of `series` in chart `chart`, as text.
fn series<'p>(page: &'p str, chart: &str, series: &str) -> &'p str {
    let start = page
        .find(&format!(r#"<svg data-chart="{chart}""#))
        .unwrap_or_else(|| panic!("no chart {chart}"));
    let svg = &page[start..start + page[start..].find("</svg>").unwrap()];
    let at = svg
        .find(&format!(r#"data-series="{series}""#))
        .unwrap_or_else(|| panic!("no series {series} in {chart}"));
    let end = svg[at..].find("</g>").unwrap();
    &svg[at..at + end]
}

fn points(element: &str) -> usize {
    let at = element.find("data-points=\"").unwrap() + "data-points=\"".len();
    element[at..at + element[at..].find('"').unwrap()]
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_of_a_hand_made_series_carries_its_answers_and_renders() {
    let db = TestDb::new().await;
    seed(&db, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.html");
    let done = report(&db, &out, &[]);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    assert!(
        stdout(&done).contains("report: ") && stdout(&done).contains("9 messages in 4 groups"),
        "{}",
        stdout(&done)
    );
    let page = std::fs::read_to_string(&out).unwrap();

    // alpha: message 1 at 10%, 50%, 90% at ages 0h, 1h, 2h; message 2 at 20%, 20%, -, 40%:
    // medians 15% (0h), 35% (1h), 90% (2h, only message 1), 40% (2h–4h bucket holds 3h).
    let alpha = series(&page, "ratio_by_age", "alpha");
    assert_eq!(points(alpha), 3, "{alpha}");
    for expected in ["alpha: 0h 15.0%", "alpha: 1h 35.0%", "alpha: 2h 65.0%"] {
        assert!(alpha.contains(expected), "{expected} in {alpha}");
    }
    let beta = series(&page, "ratio_by_age", "beta");
    assert!(
        beta.contains("beta: 0h 0.0%") && beta.contains("beta: 4h 30.0%"),
        "{beta}"
    );
    for name in ["all groups p25", "all groups median", "all groups p75"] {
        assert!(points(series(&page, "ratio_by_age", name)) >= 1);
    }
    // Time to 50%: alpha/1 after 1h, every g-N message at once (6 of them); never: alpha/2, beta/1.
    let half = series(&page, "time_to_read", "to 50%");
    assert!(
        half.contains("to 50%: 0h–1h 6") && half.contains("to 50%: 1h–2h 1"),
        "{half}"
    );
    assert!(
        page.contains("<td>not reached</td><td>2</td>"),
        "never half: 2"
    );
    let ninety = series(&page, "time_to_read", "to 90%");
    assert!(ninety.contains("to 90%: 2h–4h 1"), "{ninety}");
    // The least-reading group first: beta (30%).
    let least = series(&page, "least_read_groups", "mean read ratio");
    assert!(
        least.find("beta").unwrap() < least.find("alpha").unwrap(),
        "{least}"
    );
    assert!(least.contains("mean read ratio: beta 30%"), "{least}");
    // The daily trend: two days of first sighting.
    assert_eq!(points(series(&page, "daily_trend", "mean read ratio")), 2);
    // No read events stored: said, no chart.
    assert!(!page.contains(r#"data-chart="silent_members""#));
    assert!(page.contains("No read events are stored"));

    // One group only.
    let only = dir.path().join("beta.html");
    let done = report(&db, &only, &["--group", "beta"]);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    let page = std::fs::read_to_string(&only).unwrap();
    assert!(page.contains("1 messages in 1 groups"), "one group");
    assert!(!page.contains(r#"data-series="alpha""#));

    // As a person sees it: Chromium renders the page, no wider than the window.
    let png = dir.path().join("report.png");
    let shot = crate::tools::chromium()
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg("--window-size=1280,2600")
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", out.display()))
        .output()
        .unwrap();
    assert!(shot.status.success(), "{}", stderr(&shot));
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "a picture"
    );
    for width in ["1280", "800"] {
        let dom = crate::tools::chromium()
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=2000",
            ])
            .arg(format!("--window-size={width},1000"))
            .arg("--dump-dom")
            .arg(format!("file://{}", out.display()))
            .output()
            .unwrap();
        let dom = stdout(&dom);
        assert!(
            dom.contains(r#"data-fits="true""#),
            "nothing cut off at {width}px"
        );
        assert!(!dom.to_lowercase().contains("error"), "no error shown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_database_and_ten_thousand_groups_give_valid_pages() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.html");
    let done = report(&db, &empty, &[]);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    let page = std::fs::read_to_string(&empty).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
    assert!(!page.contains("<svg"), "no chart without data");
    assert_eq!(page.matches(r#"<p class="empty">"#).count(), 5);

    seed(&db, 10_000).await;
    let big = dir.path().join("big.html");
    let started = std::time::Instant::now();
    let done = report(&db, &big, &[]);
    eprintln!("report over 10,000 groups: {:?}", started.elapsed());
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    let page = std::fs::read_to_string(&big).unwrap();
    assert!(
        stdout(&done).contains("in 10000 groups"),
        "{}",
        stdout(&done)
    );
    assert_eq!(
        page.matches("<svg data-chart=").count(),
        4,
        "every chart with data"
    );
    assert!(
        page.len() < 200_000,
        "aggregated in Postgres: {} bytes",
        page.len()
    );

    // Bad input: an unreadable date, a range the wrong way round.
    let mut cmd = exporter();
    cmd.env("DATABASE_URL", &db.url)
        .args(["report", "--out", "x.html", "--since", "last week"]);
    let bad = run(&mut cmd);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("RFC 3339"), "{}", stderr(&bad));
    let mut cmd = exporter();
    cmd.env("DATABASE_URL", &db.url).args([
        "report",
        "--out",
        "x.html",
        "--since",
        "2026-11-08",
        "--until",
        "2026-11-01",
    ]);
    let bad = run(&mut cmd);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("is not before --until"),
        "{}",
        stderr(&bad)
    );
}

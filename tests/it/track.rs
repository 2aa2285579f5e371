//! The `track` commands and bad input, through the real binary against a fresh database.

use crate::helpers::{exporter, run, stderr, stdout, TestDb};
use std::process::Command;

fn track(db: &TestDb, args: &[&str]) -> Command {
    let mut cmd = exporter();
    cmd.env("DATABASE_URL", &db.url).arg("track").args(args);
    cmd
}

async fn windows(db: &TestDb, group: &str) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "SELECT from_seq, to_seq FROM receipts.seq_windows WHERE group_id = $1 ORDER BY 1, 2",
    )
    .bind(group)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn add_list_disable_enable_remove() {
    let db = TestDb::new().await;
    let out = run(&mut track(
        &db,
        &[
            "add", "@TGS#a", "--seqs", "1..100", "--seqs", "50..200", "--tag", "vip",
        ],
    ));
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("now tracking @TGS#a: 2 new window(s)"));
    // The same window again is kept once; a new tag is added to the old one.
    let out = run(&mut track(
        &db,
        &["add", "@TGS#a", "--seqs", "1..100", "--tag", "eu"],
    ));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(windows(&db, "@TGS#a").await, vec![(1, 100), (50, 200)]);

    let out = run(&mut track(&db, &["list", "--json"]));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json[0]["group_id"], "@TGS#a");
    assert_eq!(json[0]["tags"], serde_json::json!(["eu", "vip"]));
    assert_eq!(
        json[0]["windows"],
        serde_json::json!([{"from": 1, "to": 100}, {"from": 50, "to": 200}])
    );
    assert_eq!(json[0]["enabled"], true);

    assert_eq!(
        run(&mut track(&db, &["disable", "@TGS#a"])).status.code(),
        Some(0)
    );
    let table = stdout(&run(&mut track(&db, &["list"])));
    assert!(
        table.lines().nth(1).unwrap().starts_with("@TGS#a  no"),
        "{table}"
    );
    assert_eq!(
        run(&mut track(&db, &["enable", "@TGS#a"])).status.code(),
        Some(0)
    );

    assert_eq!(
        run(&mut track(&db, &["remove", "@TGS#a", "--seqs", "50..200"]))
            .status
            .code(),
        Some(0)
    );
    assert_eq!(windows(&db, "@TGS#a").await, vec![(1, 100)]);
    assert_eq!(
        run(&mut track(&db, &["remove", "@TGS#a"])).status.code(),
        Some(0)
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.tracked_groups")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn list_filters_by_tag() {
    let db = TestDb::new().await;
    run(&mut track(
        &db,
        &["add", "g1", "--seqs", "1..5", "--tag", "x"],
    ));
    run(&mut track(&db, &["add", "g2", "--seqs", "1..5"]));
    let json: serde_json::Value = serde_json::from_str(&stdout(&run(&mut track(
        &db,
        &["list", "--json", "--tag", "x"],
    ))))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["group_id"], "g1");
}

/// Every bad input: exit code 2, one clear line naming what was wrong, nothing written.
#[tokio::test]
async fn bad_input_exits_2_with_one_clear_line_and_writes_nothing() {
    let db = TestDb::new().await;
    let cases: &[(&[&str], &str)] = &[
        (&["add", "bad group", "--seqs", "1..5"], "whitespace"),
        (&["add", "", "--seqs", "1..5"], "empty"),
        (&["add", &"x".repeat(49), "--seqs", "1..5"], "at most 48"),
        (&["add", "g", "--seqs", "0..5"], "seqs start at 1"),
        (&["add", "g", "--seqs", "9..5"], "TO must not be below FROM"),
        (&["add", "g", "--seqs", "five"], "not a seq window"),
        (&["add", "g"], "give at least one --seqs"),
        (&["add", "g", "--seqs", "1..2", "--tag", "a b"], "tag"),
        (&["remove", "nope"], "not tracked"),
        (&["disable", "nope"], "not tracked"),
    ];
    for (args, needle) in cases {
        let out = run(&mut track(&db, args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    let groups: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.tracked_groups")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(groups, 0);
}

#[tokio::test]
async fn import_is_all_or_nothing_and_reports_every_bad_line() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "group_id,from_seq,to_seq\ng1,1,10\ng 2,1,10\ng3,5,1\ng4,1,10\ng5,x,3\n",
    )
    .unwrap();
    let out = run(&mut track(&db, &["import", bad.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("3 bad line(s), nothing imported"), "{err}");
    assert!(
        err.contains("line 3: ") && err.contains("line 4: ") && err.contains("line 6: "),
        "{err}"
    );
    let groups: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.tracked_groups")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(groups, 0, "one bad line imports nothing");

    let good = dir.path().join("good.csv");
    let mut text = String::from("group_id,from_seq,to_seq\n");
    for i in 0..3000 {
        text.push_str(&format!("grp{},{},{}\n", i % 1000, i + 1, i + 10));
    }
    std::fs::write(&good, text).unwrap();
    let out = run(&mut track(&db, &["import", good.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("3000 row(s), 1000 new group(s), 3000 new window(s)"));
    let out = run(&mut track(&db, &["import", good.to_str().unwrap()]));
    assert!(
        stdout(&out).contains("0 new group(s), 0 new window(s)"),
        "importing twice adds nothing"
    );

    // An optional `tags` column, tags separated by `;`; a bad tag is a bad line.
    let tagged = dir.path().join("tagged.csv");
    std::fs::write(
        &tagged,
        "group_id,from_seq,to_seq,tags\ngrp1,1,5,vip;eu\ngrp1,7,9,vip\ntagged_new,1,2,\n",
    )
    .unwrap();
    let out = run(&mut track(&db, &["import", tagged.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let tags: Vec<String> =
        sqlx::query_scalar("SELECT tags FROM receipts.tracked_groups WHERE group_id = 'grp1'")
            .fetch_one(&db.pool)
            .await
            .map(|t: Vec<String>| t)
            .unwrap();
    assert_eq!(tags, ["eu", "vip"]);
    let bad_tag = dir.path().join("bad_tag.csv");
    std::fs::write(&bad_tag, "group_id,from_seq,to_seq,tags\ng,1,2,a b\n").unwrap();
    let out = run(&mut track(&db, &["import", bad_tag.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 2: "), "{}", stderr(&out));

    let header = dir.path().join("header.csv");
    std::fs::write(&header, "group,from,to\ng,1,2\n").unwrap();
    let out = run(&mut track(&db, &["import", header.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 1: the header must be exactly"));
}

#[tokio::test]
async fn track_on_an_unmigrated_database_says_to_migrate() {
    let db = TestDb::empty().await;
    let out = run(&mut track(&db, &["list"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("run `receipt-exporter migrate` first"));
}

#[tokio::test]
async fn details_are_switched_on_and_off_and_listed() {
    let db = TestDb::new().await;
    let out = run(&mut track(
        &db,
        &["add", "@TGS#d", "--seqs", "1..10", "--details"],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("read lists on"), "{}", stdout(&out));
    let state = || async {
        sqlx::query_as::<_, (bool, Option<chrono::DateTime<chrono::Utc>>)>(
            "SELECT details, details_since FROM receipts.tracked_groups WHERE group_id = '@TGS#d'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let (on, since) = state().await;
    assert!(on && since.is_some());
    // Switching on again keeps the time it was first switched on.
    run(&mut track(&db, &["add", "@TGS#d", "--details"]));
    assert_eq!(state().await, (true, since));
    let table = stdout(&run(&mut track(&db, &["list"])));
    assert!(table.lines().next().unwrap().contains("DETAILS"), "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..3], ["@TGS#d", "yes", "on"], "{table}");

    let out = run(&mut track(&db, &["add", "@TGS#d", "--no-details"]));
    assert!(stdout(&out).contains("read lists off"));
    assert!(!state().await.0);
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&run(&mut track(&db, &["list", "--json"])))).unwrap();
    assert_eq!(json[0]["details"], false);
    // Both at once is a usage error.
    let out = run(&mut track(
        &db,
        &["add", "@TGS#d", "--details", "--no-details"],
    ));
    assert_eq!(out.status.code(), Some(2));
}

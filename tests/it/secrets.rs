//! No secret key and no UserSig in any output: every scenario below runs with RUST_LOG=trace in
//! both log formats, and everything it printed, the ledger and the Parquet files are scanned.

use crate::helpers::*;
use receipt_exporter::sim::Faults;
use std::process::Output;

const OTHER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000c0ffee";

/// Whether `text` holds something shaped like a UserSig: zlib-compressed JSON, base64 with the
/// URL-safe substitutions, starts with "eJ" and runs on for dozens of characters.
fn find_usersig(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let sig_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'_');
    let mut i = 0;
    while let Some(pos) = text[i..].find("eJ") {
        let start = i + pos;
        let len = bytes[start..].iter().take_while(|b| sig_char(**b)).count();
        if len >= 40 {
            return Some(&text[start..start + len]);
        }
        i = start + 2;
    }
    None
}

pub fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(KEY), "{what} holds the secret key");
    assert!(!text.contains(OTHER_KEY), "{what} holds a secret key");
    assert!(
        !text.contains("usersig="),
        "{what} holds a request URL with its UserSig"
    );
    assert!(
        find_usersig(text).is_none(),
        "{what} holds a UserSig: {:?}",
        find_usersig(text)
    );
}

fn scan(out: &Output, what: &str) {
    assert_clean(&format!("{what} (stdout)"), &stdout(out));
    assert_clean(&format!("{what} (stderr)"), &stderr(out));
}

#[test]
fn the_scanner_finds_a_real_usersig() {
    let sig = receipt_exporter::chat::usersig::generate(
        &receipt_exporter::secret::Secret::new(KEY),
        SDKAPPID,
        "administrator",
        3600,
        1_700_000_000,
    );
    let line = format!("GET /v4/x?usersig={} HTTP/1.1", sig.expose());
    assert_eq!(find_usersig(&line), Some(sig.expose()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_output_at_trace_level() {
    let db = TestDb::new().await;
    let sim = simulator(3, 120, |c| {
        c.rate_limit = 0;
        c.faults = Faults {
            http_502: 0.05,
            internal_10002: 0.05,
            drop_connection: 0.05,
            ..Faults::default()
        };
    });
    let dir = tempfile::tempdir().unwrap();
    let mut groups: Vec<String> = sim.groups().into_iter().map(|g| g.group_id).collect();
    groups.push("@TGS#gone".into());
    track_all(&db, &groups, 120).await;
    for format in ["human", "json"] {
        let base = || {
            let mut cmd = exporter_for(&db, &sim.base_url(), dir.path());
            cmd.env("RUST_LOG", "trace")
                .env("EXPORT_LOG_FORMAT", format)
                .env("EXPORT_BATCH_SIZE", "10");
            cmd
        };
        // Faults, retries and a failed group.
        let out = run(base().arg("run"));
        assert_eq!(out.status.code(), Some(3));
        scan(&out, "a run with faults");
        // The API refuses the key (70009): a configuration error.
        let out = run(base().env("TIM_SECRET_KEY", OTHER_KEY).arg("run"));
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("70009") || stdout(&out).contains("70009"));
        scan(&out, "a run with the wrong key");
        // Not an admin account (60010).
        let out = run(base().env("TIM_IDENTIFIER", "someone").arg("run"));
        assert_eq!(out.status.code(), Some(2));
        scan(&out, "a run as a non-admin");
        // A bad setting next to the key, and --help.
        let out = run(base().env("EXPORT_RATE_LIMIT", "0").arg("run"));
        assert_eq!(out.status.code(), Some(2));
        scan(&out, "a settings error");
        let out = run(base().arg("--help"));
        scan(&out, "--help");
    }
    let ledger: Vec<String> =
        sqlx::query_scalar("SELECT to_jsonb(r)::text FROM receipts.export_runs r")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(ledger.len() >= 6);
    for row in ledger {
        assert_clean("a ledger row", &row);
    }
    for file in all_files(dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert_clean("a Parquet file", &String::from_utf8_lossy(&bytes));
    }
    sim.shutdown().await;
}

#[test]
fn a_key_file_readable_by_others_warns() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, KEY).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(exporter()
        .env("TIM_SDKAPPID", SDKAPPID.to_string())
        .env("TIM_SECRET_KEY_FILE", &key)
        .args(["usersig", "--expire", "60"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("is readable by others (mode 0644): chmod 600 it"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(KEY));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(exporter()
        .env("TIM_SDKAPPID", SDKAPPID.to_string())
        .env("TIM_SECRET_KEY_FILE", &key)
        .args(["usersig", "--expire", "60"]));
    assert!(!stderr(&out).contains("readable by others"));
}

/// A key file readable by others warns once, and only where the key is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_key_file_warns_once_and_only_where_the_key_is_read() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new().await;
    let sim = simulator(1, 10, |_| {});
    track_all(&db, &group_ids(&sim), 10).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let with_key_file = |args: &[&str]| {
        let mut cmd = exporter_for(&db, &sim.base_url(), &dir.path().join("warehouse"));
        cmd.env_remove("TIM_SECRET_KEY")
            .env("TIM_SECRET_KEY_FILE", &key_file)
            .args(args);
        run(&mut cmd)
    };
    for args in [&["runs", "list"][..], &["track", "list"]] {
        let out = with_key_file(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!stderr(&out).contains("readable by others"), "{args:?}");
    }
    let out = with_key_file(&["run"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out).matches("readable by others").count(), 1);
    sim.shutdown().await;
}

/// The object store's secret key is never printed: a run into s3:// at trace level in both log
/// formats, `doctor`, `lake verify`, and a run whose store cannot be reached (its errors name
/// the bucket and key, never the credentials).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_object_store_secret_in_any_output() {
    use crate::s3::{S3Server, SECRET_ACCESS_KEY};
    let s3 = S3Server::start();
    let db = TestDb::new().await;
    let sim = simulator(2, 30, |_| {});
    track_all(&db, &group_ids(&sim), 30).await;
    let dir = tempfile::tempdir().unwrap();
    let exporter_s3 = |endpoint: &str| {
        let mut cmd = exporter_for(&db, &sim.base_url(), dir.path());
        s3.env(&mut cmd)
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("EXPORT_PARQUET_DIR", s3.url("secret-scan"))
            .env("RUST_LOG", "trace");
        cmd
    };
    let mut outputs = Vec::new();
    for format in ["human", "json"] {
        outputs.push(run(exporter_s3(&s3.endpoint)
            .env("EXPORT_LOG_FORMAT", format)
            .arg("run")));
    }
    assert_eq!(outputs[0].status.code(), Some(0));
    outputs.push(run(exporter_s3(&s3.endpoint).arg("doctor")));
    outputs.push(run(exporter_s3(&s3.endpoint).args(["lake", "verify"])));
    // Nothing listens on port 9: the run fails on the store, before its first API call, and
    // says so.
    let unreachable = run(exporter_s3("http://127.0.0.1:9").arg("run"));
    assert_ne!(unreachable.status.code(), Some(0));
    assert!(
        stdout(&unreachable).contains(
            "while reading secret-scan/_receipt_exporter.json in the object store: no answer"
        ),
        "{}",
        stdout(&unreachable)
    );
    outputs.push(unreachable);
    for out in &outputs {
        for text in [stdout(out), stderr(out)] {
            assert!(
                !text.contains(SECRET_ACCESS_KEY),
                "the store's secret key was printed"
            );
        }
    }
}

/// Iceberg on S3 at debug and trace level, both log formats: iceberg-rust's storage layer logs
/// its credential provider (`StaticCredentialProvider { secret_access_key: ... }`) at debug;
/// neither the secret key nor the session token reaches any output, and the runs succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_object_store_secret_in_an_iceberg_run_at_debug_level() {
    use crate::s3::{S3Server, SECRET_ACCESS_KEY};
    const SESSION_TOKEN: &str = "FwoGZXIvYXdzEXAMPLEsessionTOKEN0123456789abcdefghij";
    let s3 = S3Server::start();
    let db = TestDb::new().await;
    let sim = simulator(2, 30, |_| {});
    track_all(&db, &group_ids(&sim), 30).await;
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for (level, format) in [("debug", "human"), ("trace", "json")] {
        let mut cmd = exporter_for(&db, &sim.base_url(), dir.path());
        s3.env(&mut cmd)
            .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
            .env("EXPORT_PARQUET_DIR", s3.url("secret-scan-iceberg"))
            .env("EXPORT_TABLE_FORMAT", "iceberg")
            .env("EXPORT_LOG_FORMAT", format)
            .env("RUST_LOG", level)
            .arg("run");
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        outputs.push(out);
    }
    assert!(
        stderr(&outputs[0]).contains("DEBUG"),
        "debug lines were logged"
    );
    for out in &outputs {
        for text in [stdout(out), stderr(out)] {
            assert!(
                !text.contains(SECRET_ACCESS_KEY),
                "the secret key was printed"
            );
            assert!(
                !text.contains(SESSION_TOKEN),
                "the session token was printed"
            );
        }
    }
}

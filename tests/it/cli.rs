//! Settings and the command line, through the real binary.

use crate::helpers::{exporter, run, stderr, stdout, TestDb};

#[test]
fn invalid_settings_exit_2_naming_the_variable_before_any_io() {
    // DATABASE_URL points nowhere: the settings error must come first, without a connection.
    let cases: &[(&str, &str, &str)] = &[
        ("TIM_SDKAPPID", "abc", "TIM_SDKAPPID: invalid value 'abc'"),
        (
            "EXPORT_RATE_LIMIT",
            "0",
            "EXPORT_RATE_LIMIT: invalid value '0'",
        ),
        (
            "EXPORT_BATCH_SIZE",
            "0",
            "EXPORT_BATCH_SIZE: invalid value '0'",
        ),
        (
            "EXPORT_CONCURRENCY",
            "lots",
            "EXPORT_CONCURRENCY: invalid value 'lots'",
        ),
        ("TIM_REGION", "mars", "TIM_REGION: invalid value 'mars'"),
        (
            "TIM_API_BASE",
            "http://example.com",
            "TIM_API_BASE: invalid value",
        ),
        (
            "TIM_SECRET_KEY_FILE",
            "/nonexistent/key",
            "cannot read the key file",
        ),
        (
            "DATABASE_URL",
            "mysql://u:pw@h/d",
            "DATABASE_URL: invalid value 'mysql://u:[redacted]@h/d'",
        ),
    ];
    for (var, value, needle) in cases {
        let mut cmd = exporter();
        cmd.env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env(var, value)
            .arg("migrate");
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = stderr(&out);
        assert!(err.contains(needle), "{var}={value}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // A bad region fails even when a base URL overrides it.
    let out = run(exporter()
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("TIM_API_BASE", "http://127.0.0.1:1")
        .env("TIM_REGION", "mars")
        .arg("migrate"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("TIM_REGION: invalid value 'mars'"));
}

#[test]
fn a_flag_wins_over_its_variable_and_is_named_as_a_flag() {
    let mut cmd = exporter();
    cmd.env("EXPORT_RATE_LIMIT", "100")
        .args(["--rate-limit", "0", "migrate"]);
    let err = stderr(&run(&mut cmd));
    assert!(err.contains("--rate-limit: invalid value '0'"), "{err}");
}

#[test]
fn secret_key_and_key_file_together_are_refused_without_showing_the_key() {
    let mut cmd = exporter();
    cmd.env("TIM_SECRET_KEY", "topsecretvalue")
        .env("TIM_SECRET_KEY_FILE", "/etc/hostname")
        .arg("migrate");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("both are set"));
    assert!(!stderr(&out).contains("topsecretvalue"));
}

#[test]
fn missing_database_url_says_how_to_set_it() {
    let out = run(exporter().arg("migrate"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("DATABASE_URL: not set"));
}

#[test]
fn help_lists_every_setting_and_the_exit_codes() {
    let out = run(exporter().arg("--help"));
    let help = stdout(&out);
    for name in [
        "DATABASE_URL",
        "TIM_SDKAPPID",
        "TIM_SECRET_KEY",
        "TIM_SECRET_KEY_FILE",
        "TIM_IDENTIFIER",
        "TIM_REGION",
        "TIM_API_BASE",
        "EXPORT_PARQUET_DIR",
        "EXPORT_RATE_LIMIT",
        "EXPORT_BATCH_SIZE",
        "EXPORT_CONCURRENCY",
        "75   another run",
        "130  interrupted",
    ] {
        assert!(help.contains(name), "--help lacks {name}");
    }
}

#[tokio::test]
async fn migrate_twice_applies_then_applies_nothing() {
    let db = TestDb::empty().await;
    let first = run(exporter().env("DATABASE_URL", &db.url).arg("migrate"));
    assert_eq!(first.status.code(), Some(0));
    assert!(stdout(&first).contains("applied 20261125000001 foundation"));
    let second = run(exporter().env("DATABASE_URL", &db.url).arg("migrate"));
    assert_eq!(second.status.code(), Some(0));
    assert!(
        stdout(&second).contains("up to date: nothing to apply"),
        "{}",
        stdout(&second)
    );
}

#[test]
fn an_unreachable_database_fails_with_exit_1_the_target_and_the_cause_once() {
    let out = run(exporter()
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .args(["runs", "list"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("while connecting to Postgres (127.0.0.1:1/none): connection refused"),
        "{err}"
    );
    assert_eq!(err.matches("refused").count(), 1, "said once: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_missing_database_or_role_is_named_at_once() {
    let admin = crate::helpers::admin_url();
    let no_db = crate::helpers::with_database(&admin, "rexp_no_such_database");
    let out = run(exporter()
        .env("DATABASE_URL", &no_db)
        .args(["runs", "list"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("the database \"rexp_no_such_database\" does not exist"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let mut options = receipt_exporter::db::connect_options(&admin).unwrap();
    options = options.username("rexp_no_such_role");
    let no_role = format!(
        "postgres://rexp_no_such_role@{}:{}/postgres",
        options.get_host(),
        options.get_port()
    );
    let out = run(exporter()
        .env("DATABASE_URL", &no_role)
        .args(["runs", "list"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("authentication failed for user \"rexp_no_such_role\""),
        "{err}"
    );
}

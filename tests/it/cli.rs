//! Settings and the command line, through the real binary.

use crate::helpers::{exporter, run, stderr, stdout, TestDb};
use receipt_exporter::settings::{self, Setting, ALERT_WEBHOOK, CONFIG, SECRET_KEY};

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

/// A valid and an invalid value of every global setting, for the walk below.
fn samples(setting: &Setting, dir: &std::path::Path) -> (String, String) {
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (good, bad) = match setting.key {
        "config" => (file("empty.toml", ""), "/nonexistent/config.toml".into()),
        "database_url" => ("postgres://u@127.0.0.1:1/x".into(), "mysql://u@h/x".into()),
        "sdkappid" => ("1400000001".into(), "abc".into()),
        "secret_key" => ("k3y".into(), "two words".into()),
        "secret_key_file" => (file("key", "k3y\n"), "/nonexistent/key".into()),
        "identifier" => ("admin2".into(), "two words".into()),
        "region" => ("tokyo".into(), "mars".into()),
        "api_base" => ("http://127.0.0.1:9".into(), "http://example.com".into()),
        "parquet_dir" | "jobs_dir" | "apps_dir" => (dir.display().to_string(), String::new()),
        "app" => ("default".into(), "Prod-1".into()),
        "table_format" => ("iceberg".into(), "delta".into()),
        "rate_limit" => ("50".into(), "0".into()),
        "batch_size" => ("20".into(), "1001".into()),
        "concurrency" => ("8".into(), "lots".into()),
        "request_timeout" => ("20".into(), "3".into()),
        "max_seqs_per_group" => ("5000".into(), "0".into()),
        "lock_reconnect_timeout" => ("30".into(), "4".into()),
        "lake_timeout" => ("120".into(), "4".into()),
        "log_format" => ("json".into(), "xml".into()),
        "metrics_file" => ("/tmp/x.prom".into(), "/tmp/dir/".into()),
        "metrics_listen" => ("127.0.0.1:0".into(), "localhost".into()),
        "outage_timeout" => ("45".into(), "4".into()),
        "alert_webhook" => (
            "https://hooks.example.com/services/T0/B0/hooktoken".into(),
            "ftp://hooks.example.com/hooktoken".into(),
        ),
        "alert_webhook_file" => (
            file(
                "hook",
                "https://hooks.example.com/services/T0/B0/hooktoken\n",
            ),
            "/nonexistent/hook".into(),
        ),
        "pushgateway_url" => ("http://pg:9091".into(), "ftp://pg".into()),
        "max_detail_calls" => ("0".into(), "-1".into()),
        "detail_budget" => ("own".into(), "half".into()),
        "member_hash_key_file" => (file("hashkey", "h4sh\n"), "/nonexistent/hashkey".into()),
        "listen" => ("127.0.0.1:0".into(), "localhost:80".into()),
        "listen_path" => ("/hooks/tim".into(), "callback".into()),
        "callback_token_file" => (file("token", "t0ken\n"), "/nonexistent/token".into()),
        other => panic!("no sample values for the setting `{other}`: add them here"),
    };
    (good, bad)
}

/// `jobs check` on one valid job file with the setting given by any of flag, variable and
/// config file: it validates every setting first, then touches nothing but the job file.
fn jobs_check_with(
    setting: &Setting,
    dir: &std::path::Path,
    flag: Option<&str>,
    env: Option<&str>,
    in_file: Option<&str>,
) -> std::process::Output {
    let job = dir.join("a.toml");
    std::fs::write(&job, "schedule = \"0 * * * *\"\n").unwrap();
    let mut cmd = exporter();
    if let Some(value) = env {
        cmd.env(setting.env, value);
    }
    if let Some(value) = flag {
        cmd.arg(format!("{}={value}", setting.flag.unwrap()));
    }
    if let Some(value) = in_file {
        let config = dir.join("c.toml");
        std::fs::write(&config, format!("{} = {value:?}\n", setting.key)).unwrap();
        cmd.arg("--config").arg(&config);
    }
    cmd.args(["jobs", "check", "--jobs"]).arg(&job);
    run(&mut cmd)
}

#[test]
fn every_setting_works_from_flag_variable_and_config_file_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let ok = |out: std::process::Output, what: &str| {
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
        assert!(stdout(&out).contains("1 job file(s) ok"), "{what}");
    };
    ok(
        jobs_check_with(&CONFIG, path, None, None, None),
        "the defaults",
    );
    for s in settings::ALL {
        let (good, bad) = samples(s, path);
        let refused = |out: std::process::Output, named: &str, what: &str| {
            assert_eq!(out.status.code(), Some(2), "{what}");
            let err = stderr(&out);
            assert!(err.starts_with(&format!("error: {named}")), "{what}: {err}");
            if *s != SECRET_KEY && *s != ALERT_WEBHOOK {
                assert!(err.contains(bad.as_str()), "{what} shows the value: {err}");
            } else {
                assert!(!err.contains(&bad), "{what} hides the secret: {err}");
            }
            assert!(
                err.contains("expected") || err.contains("cannot read") || *s == SECRET_KEY,
                "{what} says what is accepted: {err}"
            );
        };
        let key = s.key;
        let (good, bad) = (good.as_str(), bad.as_str());
        let file = |v| s.in_file.then_some(v);
        let config = path.join("c.toml");
        if s.in_file {
            ok(jobs_check_with(s, path, None, None, Some(good)), key);
            let named = format!("key `{key}` in {}", config.display());
            let out = jobs_check_with(s, path, None, None, Some(bad));
            refused(out, &named, &format!("{key} bad in the file"));
        }
        ok(jobs_check_with(s, path, None, Some(good), file(bad)), key);
        let out = jobs_check_with(s, path, None, Some(bad), file(good));
        refused(out, s.env, &format!("{} bad, above the file", s.env));
        if let Some(flag) = s.flag {
            ok(
                jobs_check_with(s, path, Some(good), Some(bad), file(bad)),
                flag,
            );
            let out = jobs_check_with(s, path, Some(bad), Some(good), file(good));
            refused(out, flag, &format!("{flag} bad, above the variable"));
        }
    }
}

/// The README's settings table: one row per setting, with its flag, variable, config key and
/// default exactly as `settings::ALL` declares them.
#[test]
fn the_readme_lists_every_setting_as_declared() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let header = "| flag | variable | config key | default | meaning |";
    let rows: Vec<Vec<String>> = readme
        .lines()
        .skip_while(|l| *l != header)
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.split(" | ")
                .map(|c| c.trim_matches(['|', ' ']).to_string())
                .collect()
        })
        .collect();
    assert_eq!(
        rows.len(),
        settings::ALL.len(),
        "one README row per setting"
    );
    let code = |text: &str| format!("`{text}`");
    for s in settings::ALL {
        let row = rows
            .iter()
            .find(|r| r[1] == code(s.env))
            .unwrap_or_else(|| panic!("the README's settings table lacks {}", s.env));
        let flag = s.flag.map_or("(no flag)".to_string(), code);
        assert_eq!(row[0], flag, "{}'s flag", s.env);
        if s.in_file {
            assert_eq!(row[2], code(s.key), "{}'s config key", s.env);
        } else {
            assert!(
                !row[2].contains('`'),
                "{} has no config key: {}",
                s.env,
                row[2]
            );
        }
        let default = s.default.map_or("(none)".to_string(), code);
        assert_eq!(row[3], default, "{}'s default", s.env);
    }
}

#[test]
fn a_lake_location_with_another_scheme_or_clear_http_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let refused: &[Case] = &[
        (
            "ftp://host/lake",
            &[],
            "the scheme 'ftp://' is not supported",
        ),
        ("s3:///lake", &[], "bucket (container) name is missing"),
        (
            "s3://lake-test/p",
            &[
                ("AWS_ENDPOINT_URL", "http://10.1.2.3:9000"),
                ("AWS_ALLOW_HTTP", "true"),
            ],
            "loopback",
        ),
        (
            "s3://lake-test/p",
            &[("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")],
            "set AWS_ALLOW_HTTP=true",
        ),
        (
            "s3://lake-test/p",
            &[("AWS_ALLOW_HTTP", "true")],
            "loopback",
        ),
    ];
    for (location, vars, needle) in refused {
        let out = run(exporter()
            .current_dir(dir.path())
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env("EXPORT_PARQUET_DIR", location)
            .envs(vars.iter().copied())
            .arg("migrate"));
        assert_eq!(out.status.code(), Some(2), "{location} {vars:?}");
        let err = stderr(&out);
        assert!(err.contains("EXPORT_PARQUET_DIR"), "{err}");
        assert!(err.contains(needle), "{location} {vars:?}: {err}");
    }
    // Nothing named after the scheme was created (it used to be a directory `ftp:`).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // A bare path and file:// stay local; s3:// with a loopback endpoint is accepted: the
    // command gets past its settings to the (unreachable) database.
    for location in ["./lake", "file:///tmp/lake", "s3://lake-test/p"] {
        let out = run(exporter()
            .current_dir(dir.path())
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env("EXPORT_PARQUET_DIR", location)
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
            .env("AWS_ALLOW_HTTP", "true")
            .arg("migrate"));
        assert_ne!(out.status.code(), Some(2), "{location}");
        assert!(!stderr(&out).contains("EXPORT_PARQUET_DIR"), "{location}");
    }
}

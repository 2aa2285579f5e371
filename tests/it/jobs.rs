//! Job files, `jobs check`, `run --job`, and the shipped systemd and cron units.

use crate::helpers::*;
use clap::Parser;
use receipt_exporter::cli::Cli;
use receipt_exporter::schedule::Job;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn shipped_jobs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs")
}

/// Where the units install the job files, and where they are in this repository.
const INSTALLED_JOBS: &str = "/etc/receipt-exporter/jobs";

#[test]
fn jobs_check_passes_on_the_shipped_jobs_and_prints_three_fire_times() {
    let out = run(exporter()
        .args(["jobs", "check", "--jobs"])
        .arg(shipped_jobs()));
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("ok  hourly  "), "{text}");
    let next = text
        .lines()
        .find(|l| l.trim_start().starts_with("next:"))
        .unwrap();
    assert_eq!(next.matches(":05:00 UTC").count(), 3, "{next}");
}

#[test]
fn jobs_check_fails_on_a_broken_file_with_its_name_and_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.toml"), "schedule = \"@daily\"\n").unwrap();
    std::fs::write(
        dir.path().join("typo.toml"),
        "schedule = \"5 * * * *\"\nrate_limt = 5\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("cron.toml"),
        "name = \"c\"\nschedule = \"0 9 * * 8\"\n",
    )
    .unwrap();
    let out = run(exporter().args(["jobs", "check", "--jobs"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("2 of 3 job file(s) broken"), "{err}");
    assert!(
        err.contains("typo.toml:2:1: unknown field `rate_limt`"),
        "{err}"
    );
    assert!(
        err.contains("cron.toml:2:21: schedule: field 5 (day of week), character 9"),
        "{err}"
    );
    assert!(stdout(&out).contains("ok  good  "), "{}", stdout(&out));
    // EXPORT_JOBS_DIR is the default directory.
    let out = run(exporter()
        .env("EXPORT_JOBS_DIR", dir.path())
        .args(["jobs", "check"]));
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_job_takes_the_jobs_name_tags_rate_and_kind() {
    let db = TestDb::new().await;
    let sim = simulator(4, 30, |_| {});
    let groups: Vec<String> = sim.groups().into_iter().map(|g| g.group_id).collect();
    track_all(&db, &groups, 20).await;
    sqlx::query("UPDATE receipts.tracked_groups SET tags = '{vip}' WHERE group_id = ANY($1)")
        .bind(&groups[..2])
        .execute(&db.pool)
        .await
        .unwrap();
    let jobs = tempfile::tempdir().unwrap();
    let parquet = tempfile::tempdir().unwrap();
    let file = jobs.path().join("vip.toml");
    std::fs::write(
        &file,
        "name = \"vip-hourly\"\nschedule = \"5 * * * *\"\ntags = [\"vip\"]\nrate_limit = 100\n",
    )
    .unwrap();

    let out = run(exporter_for(&db, &sim.base_url(), parquet.path())
        .args(["run", "--job"])
        .arg(&file));
    assert_eq!(out.status.code(), Some(0));
    let out = run(exporter_for(&db, &sim.base_url(), parquet.path())
        .env("EXPORT_JOBS_DIR", jobs.path())
        .args(["run", "--scheduled", "--job", "vip"]));
    assert_eq!(out.status.code(), Some(0));
    let runs: Vec<(String, String, String)> =
        sqlx::query_as("SELECT job, kind, status FROM receipts.export_runs ORDER BY run_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let want = |kind: &str| {
        (
            "vip-hourly".to_string(),
            kind.to_string(),
            "succeeded".to_string(),
        )
    };
    assert_eq!(runs, [want("manual"), want("scheduled")]);
    let covered: BTreeSet<String> = pg_snapshots(&db)
        .await
        .into_iter()
        .map(|s| s.group_id)
        .collect();
    assert_eq!(covered, groups[..2].iter().cloned().collect());

    // A share above the global limit is refused before any run starts.
    let out = run(exporter_for(&db, &sim.base_url(), parquet.path())
        .env("EXPORT_RATE_LIMIT", "50")
        .args(["run", "--job"])
        .arg(&file));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("above the global limit of 50"),
        "{}",
        stderr(&out)
    );
    let out = run(exporter_for(&db, &sim.base_url(), parquet.path()).args([
        "run",
        "--job",
        "/nonexistent/job.toml",
    ]));
    assert_eq!(out.status.code(), Some(2));
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.export_runs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 2);
}

/// A unit file as sections of (key, value) lines, keys in order (a key may repeat).
fn parse_ini(path: &Path) -> BTreeMap<String, Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_string());
            sections.entry(name.to_string()).or_default();
            continue;
        }
        let section = current
            .clone()
            .unwrap_or_else(|| panic!("{}:{}: a key before any section", path.display(), n + 1));
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}:{}: not KEY=VALUE: {line}", path.display(), n + 1));
        sections
            .get_mut(&section)
            .unwrap()
            .push((key.trim().to_string(), value.trim().to_string()));
    }
    sections
}

const UNIT_KEYS: &[&str] = &[
    "Description",
    "Documentation",
    "Wants",
    "After",
    "OnFailure",
];
const TIMER_KEYS: &[&str] = &["OnCalendar", "Persistent", "AccuracySec", "Unit"];
const INSTALL_KEYS: &[&str] = &["WantedBy"];
const SERVICE_KEYS: &[&str] = &[
    "Type",
    "ExecStart",
    "ExecReload",
    "Restart",
    "RestartSec",
    "RestartPreventExitStatus",
    "SuccessExitStatus",
    "EnvironmentFile",
    "LoadCredential",
    "Environment",
    "StateDirectory",
    "StateDirectoryMode",
    "ReadWritePaths",
    "SupplementaryGroups",
    "TimeoutStopSec",
    "DynamicUser",
    "UMask",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "NoNewPrivileges",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "CapabilityBoundingSet",
];

fn get<'a>(
    unit: &'a BTreeMap<String, Vec<(String, String)>>,
    section: &str,
    key: &str,
) -> Vec<&'a str> {
    unit.get(section)
        .map(|kv| {
            kv.iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks a receipt-exporter command line with the real parser, and that its job file (or
/// jobs directory) is one this repository ships; returns the job it runs, if any.
fn check_invocation(argv: &[&str], origin: &str) -> Option<Job> {
    assert!(argv[0].ends_with("/receipt-exporter"), "{origin}: {argv:?}");
    if let Err(e) = Cli::try_parse_from(argv) {
        panic!("{origin}: {argv:?} is not a valid invocation: {e}");
    }
    let value_of = |flag: &str| argv.iter().position(|a| *a == flag).map(|i| argv[i + 1]);
    if let Some(dir) = value_of("--jobs") {
        assert_eq!(dir, INSTALLED_JOBS, "{origin}");
    }
    let job = value_of("--job")?;
    let shipped = match job.strip_prefix(&format!("{INSTALLED_JOBS}/")) {
        Some(file) => shipped_jobs().join(file),
        None => shipped_jobs().join(format!("{job}.toml")),
    };
    assert!(
        shipped.is_file(),
        "{origin}: --job {job}: no shipped job file {}",
        shipped.display()
    );
    Some(Job::load(&shipped).unwrap())
}

#[test]
fn systemd_units_parse_hold_their_hardening_and_run_valid_commands() {
    let dir = shipped_jobs().join("systemd");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let unit = parse_ini(&path);
        for (section, keys) in &unit {
            let known = match section.as_str() {
                "Unit" => UNIT_KEYS,
                "Service" => SERVICE_KEYS,
                "Timer" => TIMER_KEYS,
                "Install" => INSTALL_KEYS,
                other => panic!("{name}: unknown section [{other}]"),
            };
            for (key, _) in keys {
                assert!(
                    known.contains(&key.as_str()),
                    "{name}: unknown key {key} in [{section}]"
                );
            }
        }
        assert_eq!(get(&unit, "Unit", "Description").len(), 1, "{name}");
        seen += 1;
        if name.ends_with(".timer") {
            assert_eq!(get(&unit, "Timer", "Persistent"), ["true"], "{name}");
            let service = get(&unit, "Timer", "Unit")[0];
            assert!(dir.join(service).is_file(), "{name}: {service}");
            continue;
        }
        let exec = get(&unit, "Service", "ExecStart")[0];
        let argv: Vec<&str> = exec.split_whitespace().collect();
        if name.starts_with("receipt-exporter-alert@") {
            assert_eq!(get(&unit, "Service", "Type"), ["oneshot"]);
            continue;
        }
        let job = check_invocation(&argv, &name);
        // The listener needs no secret key, only the webhook's token; the others the key.
        let (credential, from_credential) = match name.as_str() {
            "receipt-exporter-listen.service" => (
                "callback-token:/etc/receipt-exporter/callback-token",
                "EXPORT_CALLBACK_TOKEN_FILE=%d/callback-token",
            ),
            _ => (
                "tim-secret-key:/etc/receipt-exporter/tim-secret-key",
                "TIM_SECRET_KEY_FILE=%d/tim-secret-key",
            ),
        };
        for (key, value) in [
            ("DynamicUser", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("StateDirectory", "receipt-exporter"),
            ("LoadCredential", credential),
        ] {
            assert_eq!(get(&unit, "Service", key), [value], "{name}: {key}");
        }
        let env = get(&unit, "Service", "Environment");
        assert!(env.contains(&from_credential), "{name}: {env:?}");
        assert!(
            env.contains(&"EXPORT_PARQUET_DIR=%S/receipt-exporter/warehouse"),
            "{name}"
        );
        assert_eq!(
            get(&unit, "Unit", "OnFailure"),
            ["receipt-exporter-alert@%n.service"]
        );
        assert!(dir.join("receipt-exporter-alert@.service").is_file());
        if name == "receipt-exporter-listen.service" {
            assert_eq!(argv[1], "listen");
            assert_eq!(get(&unit, "Service", "Type"), ["simple"]);
            assert_eq!(get(&unit, "Service", "Restart"), ["on-failure"]);
        } else if name == "receipt-exporter-scheduler.service" {
            assert_eq!(argv[1], "schedule");
            assert_eq!(get(&unit, "Service", "Type"), ["simple"]);
            assert_eq!(get(&unit, "Service", "Restart"), ["on-failure"]);
        } else {
            assert_eq!(argv[1..3], ["run", "--scheduled"], "{name}");
            assert!(job.is_some(), "{name}: a oneshot unit runs one job");
            assert_eq!(get(&unit, "Service", "Type"), ["oneshot"]);
            let ok: Vec<&str> = get(&unit, "Service", "SuccessExitStatus")[0]
                .split(' ')
                .collect();
            assert!(
                ok.contains(&"75"),
                "{name}: an overlap (75) must not page anyone"
            );
            let timer = dir.join(name.replace(".service", ".timer"));
            assert!(timer.is_file(), "{name}: its timer");
        }
    }
    assert_eq!(seen, 5);
}

#[test]
fn systemd_analyze_verifies_the_units() {
    // verify wants the binary to exist: point the units at the one under test.
    let tmp = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(shipped_jobs().join("systemd")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "/usr/local/bin/receipt-exporter",
            env!("CARGO_BIN_EXE_receipt-exporter"),
        );
        let copy = tmp.path().join(path.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        if !copy.to_string_lossy().contains('@') {
            units.push(copy);
        }
    }
    let out = crate::tools::systemd_analyze()
        .arg("verify")
        .args(&units)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.trim().is_empty(), "systemd-analyze warned: {err}");
}

#[test]
fn crontab_lines_are_valid_invocations_of_shipped_jobs_at_their_times() {
    let path = shipped_jobs().join("cron/receipt-exporter.crontab");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut commands = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap();
        if first.contains('=') {
            continue; // NAME=value: the environment of the lines below
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let when = fields[..5].join(" ");
        let argv: Vec<&str> = fields[5..]
            .iter()
            .copied()
            .take_while(|t| !matches!(*t, ">>" | ">" | "|" | "2>&1"))
            .collect();
        let job = check_invocation(&argv, line).expect("each cron line runs a job");
        assert_eq!(
            when,
            job.schedule.source(),
            "{line}: keep it in step with the job"
        );
        assert!(
            line.contains(">> /var/log/") || line.contains("| logger"),
            "{line}"
        );
        assert!(!line.contains("flock"), "{line}");
        commands += 1;
    }
    assert!(commands >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_capped_at_60_and_100_send_160_together_each_within_its_cap() {
    use receipt_exporter::sim::Endpoint;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let db = TestDb::new().await;
    let sim = simulator(4, 2_400, |c| c.latency = Duration::from_millis(10));
    let groups = group_ids(&sim);
    // Job "slow" (cap 60): 2 groups x 2,400 seqs at 10 per call = 480 calls, 8 s alone.
    // Job "fast" (cap 100): 2 groups x 1,500 seqs = 300 calls, 3 s, all within the other's run.
    track_all(&db, &groups[..2], 2_400).await;
    track_all(&db, &groups[2..], 1_500).await;
    for (tag, ids) in [("slow", &groups[..2]), ("fast", &groups[2..])] {
        sqlx::query("UPDATE receipts.tracked_groups SET tags = ARRAY[$1] WHERE group_id = ANY($2)")
            .bind(tag)
            .bind(ids)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let jobs = tempfile::tempdir().unwrap();
    for (name, cap) in [("slow", 60), ("fast", 100)] {
        std::fs::write(
            jobs.path().join(format!("{name}.toml")),
            format!("schedule = \"5 * * * *\"\ntags = [\"{name}\"]\nrate_limit = {cap}\n"),
        )
        .unwrap();
    }
    // 160 calls/s of caps fit in the 90% that jobs running together split: no note.
    let check = || {
        run(exporter()
            .args(["jobs", "check", "--jobs"])
            .arg(jobs.path()))
    };
    assert!(!stdout(&check()).contains("note:"));
    let parquet = tempfile::tempdir().unwrap();
    let job = |name: &str| {
        let mut cmd = exporter_for(&db, &sim.base_url(), parquet.path());
        cmd.env("EXPORT_BATCH_SIZE", "10")
            .env("EXPORT_JOBS_DIR", jobs.path())
            .args(["run", "--job", name])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let slow = job("slow").spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.stats().endpoint(Endpoint::GroupMsgReceipt).calls == 0 {
        assert!(Instant::now() < deadline, "the first job made no call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fast = run(&mut job("fast"));
    let slow = finish(slow);
    assert_eq!(slow.status.code(), Some(0));
    assert_eq!(fast.status.code(), Some(0));
    // The newcomer paces at its own cap: the other's cap did not lower the app's budget.
    assert!(
        stderr(&fast).contains("sharing the API budget") && stderr(&fast).contains("pace=100"),
        "{}",
        stderr(&fast)
    );
    // A third job capped at 50 makes 210: running together they would get less than their caps.
    std::fs::write(
        jobs.path().join("third.toml"),
        "schedule = \"5 * * * *\"\nrate_limit = 50\n",
    )
    .unwrap();
    let note = stdout(&check());
    assert!(
        note.contains("caps add up to 210 calls/s, above 180 calls/s"),
        "{note}"
    );
    // The first kept its own cap when the second joined (it used to drop to a third of it).
    assert!(!stderr(&slow).contains("pacing at"), "{}", stderr(&slow));
    let leases: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.rate_leases")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(leases, 0, "both leases were given back");
    let stats = sim.stats().endpoint(Endpoint::GroupMsgReceipt);
    eprintln!("simulator: {stats:?}");
    assert_eq!(stats.calls, 480 + 300, "every call once, none rate-limited");
    assert_eq!(stats.rate_limited, 0);
    assert!(
        (144..=200).contains(&stats.max_calls_in_any_second),
        "the two together sent {} calls in their busiest second: at least 0.9 x 160, within 200",
        stats.max_calls_in_any_second
    );
}

#[test]
fn jobs_check_says_how_each_schedule_was_read_and_warns_about_numbered_weekdays() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, schedule: &str| {
        std::fs::write(
            dir.path().join(name),
            format!("schedule = \"{schedule}\"\n"),
        )
        .unwrap();
    };
    write("crontab.toml", "0 0 * * 1");
    write("seconds.toml", "0 0 0 * * 1");
    write("named.toml", "0 0 0 * * mon");
    write("either.toml", "0 0 13 * 5");
    let out = run(exporter().args(["jobs", "check", "--jobs"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    // Each job's lines: the header, then what the schedule was read as, a warning, the fires.
    let lines_of = |job: &str| -> Vec<&str> {
        text.lines()
            .skip_while(|l| !l.starts_with(&format!("ok  {job}  ")))
            .skip(1)
            .take_while(|l| l.starts_with("    "))
            .collect()
    };
    for job in ["crontab", "seconds", "named"] {
        let lines = lines_of(job);
        assert_eq!(
            lines[0], "    read as (seconds first): 0 0 0 * * MON",
            "{text}"
        );
        // Mondays at midnight, whichever form and spelling.
        let next = lines.iter().find(|l| l.contains("next:")).unwrap();
        assert_eq!(next.matches("Mon 00:00:00 UTC").count(), 3, "{job}: {next}");
        let warned = lines
            .iter()
            .any(|l| l.starts_with("    warning: schedule: "));
        assert_eq!(warned, job == "seconds", "{job}: {text}");
    }
    assert!(
        lines_of("seconds")[1].contains("day of week '1' reads as MON"),
        "{text}"
    );
    assert_eq!(
        lines_of("either")[0],
        "    read as (seconds first): 0 0 0 13 * * or 0 0 0 * * FRI"
    );
}

/// Issue 24: `jobs check` shows every key it read, as read (a key that did not take shows its
/// default), not only the schedule: retention_keep_months was missing.
#[test]
fn jobs_check_shows_every_key_it_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("full.toml"),
        "name = \"full\"\ndescription = \"every key\"\nschedule = \"5 * * * *\"\n\
         timezone = \"Europe/Berlin\"\ntags = [\"vip\"]\nrate_limit = 50\ncatch_up = \"skip\"\n\
         enabled = false\nskip_settled = false\nno_receipt_after = 5\nmax_calls = 1000\n\
         max_duration = \"10m\"\nmax_detail_calls = 20\nretention_keep_months = 6\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("bare.toml"), "schedule = \"@daily\"\n").unwrap();
    let out = run(exporter().args(["jobs", "check", "--jobs"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for needle in [
        "ok (disabled)  full  ",
        "\"5 * * * *\" in Europe/Berlin, enabled groups tagged vip, 50 calls/s, catch_up skip",
        "    description: every key",
        "    skip_settled false, no_receipt_after 5, max_calls 1000, max_duration 10m, max_detail_calls 20, retention_keep_months 6",
        "    skip_settled true, no_receipt_after 3, max_calls none, max_duration none, max_detail_calls none, retention_keep_months none",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

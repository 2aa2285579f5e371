//! Section 6, the lake in an object store (issue 17), against moto's S3 server on loopback
//! (`moto_server`, from the project's Python environment: `tests/it/tools.rs`): not AWS. Moto is a Python process
//! that keeps objects in memory, so its figures say what our side costs and how the upload
//! protocol compares with a local rename, not what S3 over a network would give.
//!
//! 6a. Upload throughput: 1,000,000 rows through `RunParquet` (the same writer both sides),
//!     then either the local commit (rename, directory fsync) or the object-store steps of
//!     `sink::remote::publish` without Postgres (PUT under `_pending/`, server-side copy to the
//!     final key, delete the pending object). Alternating rounds; rows/s of write + commit,
//!     the commit step alone in ms, and the PUT alone in MB/s.
//! 6b. Whole runs of the release binary (section 4's set-up) into a local directory and into
//!     `s3://`, alternating, each in a fresh database: wall time, start-up included.

use crate::pg::make_batches;
use crate::report::{thousands, Report, Samples};
use crate::whole::{whole_run_into, SEQS_PER_GROUP};
use crate::Opts;
use anyhow::Context;
use object_store::ObjectStoreExt;
use receipt_exporter::lake::{parse_location, Lake};
use receipt_exporter::sink::parquet::RunParquet;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const BUCKET: &str = "lake-bench";

pub async fn bench(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let moto = Moto::start()?;
    for (k, v) in moto.vars() {
        // The lake is opened in this process too (6a): the same variables as the binary gets.
        std::env::set_var(k, v);
    }
    upload(opts, report).await?;
    whole_runs(opts, report, &moto).await
}

async fn upload(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let rounds = if opts.quick { 3 } else { 5 };
    let total = 1_000_000;
    println!(
        "\n== 6a. Commit of a {}-row file: local rename against PUT + copy + delete on moto (loopback, not AWS), {rounds} rounds ==",
        thousands(total as f64)
    );
    let batches = make_batches(7, chrono::Utc::now().date_naive(), total);
    let Lake::Remote(remote) = parse_location(&format!("s3://{BUCKET}/bench"))
        .map_err(anyhow::Error::msg)?
        .open(std::time::Duration::from_secs(60))
        .map_err(anyhow::Error::msg)?
    else {
        anyhow::bail!("an s3:// location opened as a local lake");
    };
    let dir = tempfile::tempdir()?;
    let (mut local, mut s3, mut ratio) =
        (Samples::default(), Samples::default(), Samples::default());
    let (mut local_commit, mut s3_commit, mut put_mbs) =
        (Samples::default(), Samples::default(), Samples::default());
    let mut bytes = 0;
    for round in 1..=rounds {
        // Local: write, seal, rename into place (the run's publish minus its manifest row).
        let root = dir.path().join(format!("round-{round}"));
        let t = Instant::now();
        let mut run = RunParquet::new(&root, 7, round);
        for b in &batches {
            run.append(b).await?;
        }
        let sealed = run.finish().await?;
        let c = Instant::now();
        for mut f in sealed {
            f.rename_into_place()?;
            bytes = f.info().byte_size;
        }
        local_commit.push(c.elapsed().as_secs_f64() * 1e3);
        let l = total as f64 / t.elapsed().as_secs_f64();
        // Object store: write and seal in the spool, PUT pending, copy, delete.
        let t = Instant::now();
        let mut run = RunParquet::for_lake(&Lake::Remote(remote.clone()), 7, round)?;
        for b in &batches {
            run.append(b).await?;
        }
        let sealed = run.finish().await?;
        let c = Instant::now();
        for f in sealed {
            let rel = f.info().relative_path.clone();
            let pending = format!("_pending/{rel}.bench");
            let local = f.temp_path().context("sealed in the spool")?;
            let p = Instant::now();
            receipt_exporter::sink::remote::put_file(&remote, local, &pending).await?;
            put_mbs.push(f.info().byte_size as f64 / 1e6 / p.elapsed().as_secs_f64());
            let store = remote.store();
            store.copy(&remote.key(&pending), &remote.key(&rel)).await?;
            store.delete(&remote.key(&pending)).await?;
            let size = store.head(&remote.key(&rel)).await?.size;
            anyhow::ensure!(size == f.info().byte_size, "the object has another size");
        }
        s3_commit.push(c.elapsed().as_secs_f64() * 1e3);
        let o = total as f64 / t.elapsed().as_secs_f64();
        println!(
            "  round {round}: write + commit: local {} rows/s, moto {} rows/s ({:.1} MB file), ratio {:.2}; \
             commit alone: rename {:.1} ms, PUT + copy + delete {:.1} ms",
            thousands(l),
            thousands(o),
            bytes as f64 / 1e6,
            o / l,
            local_commit.0.last().unwrap(),
            s3_commit.0.last().unwrap(),
        );
        local.push(l);
        s3.push(o);
        ratio.push(o / l);
        std::fs::remove_dir_all(&root)?;
    }
    report.figure("s3: write + rename, rows/s", local.show(0));
    report.figure(
        "s3: write + PUT + copy + delete on moto, rows/s",
        s3.show(0),
    );
    report.figure("s3: moto / local (write + commit)", ratio.show(2));
    report.figure("s3: commit alone: rename ms", local_commit.show(1));
    report.figure(
        "s3: commit alone: PUT + copy + delete on moto ms",
        s3_commit.show(1),
    );
    report.figure("s3: PUT alone on moto MB/s", put_mbs.show(1));
    Ok(())
}

async fn whole_runs(opts: &Opts, report: &mut Report, moto: &Moto) -> anyhow::Result<()> {
    let (receipts, rounds): (u64, usize) = if opts.quick {
        (200_000, 1)
    } else {
        (1_000_000, 3)
    };
    let groups = receipts / SEQS_PER_GROUP;
    println!(
        "\n== 6b. Whole runs of the release binary, {} receipts, into a local directory and into s3:// on moto, alternating ==",
        thousands(receipts as f64)
    );
    let (mut local, mut s3, mut ratio) =
        (Samples::default(), Samples::default(), Samples::default());
    for round in 1..=rounds {
        let l = whole_run_into(opts, groups, &[]).await?;
        let mut env = moto.vars();
        env.push((
            "EXPORT_PARQUET_DIR".into(),
            format!("s3://{BUCKET}/run-{round}"),
        ));
        let o = whole_run_into(opts, groups, &env).await?;
        println!(
            "  round {round}: local wall {:.2}s (RSS {:.1} MB), s3 wall {:.2}s (RSS {:.1} MB), ratio {:.2}",
            l.wall_s,
            l.rss_mb,
            o.wall_s,
            o.rss_mb,
            o.wall_s / l.wall_s
        );
        local.push(l.wall_s);
        s3.push(o.wall_s);
        ratio.push(o.wall_s / l.wall_s);
    }
    let label = format!("s3: run {}", thousands(receipts as f64));
    report.figure(format!("{label}: local wall s"), local.show(2));
    report.figure(format!("{label}: s3 (moto) wall s"), s3.show(2));
    report.figure(format!("{label}: s3 / local wall"), ratio.show(2));
    Ok(())
}

/// `moto_server` on a free loopback port with the bench bucket; killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> anyhow::Result<Moto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = crate::tools::moto_server()
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting moto_server")?;
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !moto.create_bucket(port) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "moto_server did not answer in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }

    fn create_bucket(&self, port: u16) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let req = format!(
            "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let mut answer = String::new();
        s.write_all(req.as_bytes()).is_ok()
            && s.read_to_string(&mut answer).is_ok()
            && answer.lines().next().is_some_and(|l| l.contains(" 200"))
    }

    fn vars(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "bench"),
            ("AWS_SECRET_ACCESS_KEY", "bench-secret"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

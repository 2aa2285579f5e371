//! A real S3-protocol server for the tests: moto's server mode (`moto_server`), one per test,
//! on a free loopback port, with one bucket. No mock of our own: the exporter talks S3 to it
//! through `object_store` exactly as it would to AWS. `moto_server` and boto3 come from the
//! project's Python environment ([`crate::tools`]), installed on first use.
//!
//! `S3Server::start()` gives the server; `.env(cmd)` adds the standard AWS variables to a
//! command; `.url(prefix)` is the lake location; `.store()` reads the bucket from a test;
//! `.unfinished_uploads()` asks the server (boto3) for multipart uploads left open.

use object_store::{ObjectStore, ObjectStoreExt};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The test credentials. The secret is distinctive so output scans can look for it.
pub const ACCESS_KEY_ID: &str = "AKIATESTLAKE0000";
pub const SECRET_ACCESS_KEY: &str = "s3cr3t-lake-key-Zq8vW2nP4xR7tY1uM5kL9hJ3";
pub const REGION: &str = "us-east-1";
pub const BUCKET: &str = "lake-test";

/// A running `moto_server`; killed when dropped.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl S3Server {
    /// Starts `moto_server -H 127.0.0.1 -p PORT` on a free port, waits until it answers and
    /// creates [`BUCKET`].
    pub fn start() -> S3Server {
        S3Server::start_with(&[])
    }

    /// [`S3Server::start`] checking credentials as S3 does: only the bucket's creation goes
    /// without (moto's `INITIAL_NO_AUTH_ACTION_COUNT`); every later request with keys IAM does
    /// not know is refused (403 InvalidAccessKeyId).
    pub fn start_checking_keys() -> S3Server {
        S3Server::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")])
    }

    fn start_with(env: &[(&str, &str)]) -> S3Server {
        let port = free_port();
        let child = crate::tools::moto_server()
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto_server ({e})"));
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http(port, &format!("PUT /{BUCKET} HTTP/1.1")).is_some_and(|s| s.contains(" 200")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server on port {port} did not answer within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// The standard variables object_store (and every AWS SDK) reads.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Adds [`S3Server::vars`] to a command.
    pub fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.envs(self.vars())
    }

    /// `s3://lake-test/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// A client of the bucket, for tests to read, list, damage objects.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(BUCKET)
                .with_region(REGION)
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_access_key_id(ACCESS_KEY_ID)
                .with_secret_access_key(SECRET_ACCESS_KEY)
                .build()
                .unwrap(),
        )
    }

    /// Every key under `prefix` with its size, sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<(String, u64)> {
        use futures::TryStreamExt;
        let prefix = object_store::path::Path::from(prefix);
        let mut keys: Vec<(String, u64)> = self
            .store()
            .list(Some(&prefix))
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        keys
    }

    /// Every snapshot in the objects a reader of `<prefix>/receipt_snapshots/` sees (keys
    /// with no segment starting with `.` or `_`, ending in `.parquet`), sorted.
    pub async fn snapshots(&self, prefix: &str) -> Vec<super::helpers::Snap> {
        let mut out = Vec::new();
        for (key, _) in self.visible(prefix).await {
            let bytes = self
                .store()
                .get(&object_store::path::Path::from(key.as_str()))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            super::helpers::push_snaps(bytes, &mut out);
        }
        out.sort();
        out
    }

    /// The snapshot objects readers see under `<prefix>/receipt_snapshots/`.
    pub async fn visible(&self, prefix: &str) -> Vec<(String, u64)> {
        let table = format!("{prefix}/receipt_snapshots");
        self.keys(&table)
            .await
            .into_iter()
            .filter(|(k, _)| {
                let rel = k.strip_prefix(&table).unwrap();
                !rel.split('/')
                    .any(|s| s.starts_with('.') || s.starts_with('_'))
                    && k.ends_with(".parquet")
            })
            .collect()
    }

    /// Multipart uploads the server holds open (boto3's `list_multipart_uploads`).
    pub fn unfinished_uploads(&self) -> Vec<String> {
        self.boto3(
            "for u in s3.list_multipart_uploads(Bucket=B).get('Uploads', []): print(u['Key'])",
        )
    }

    /// Every key of the bucket as S3 itself spells it (boto3, not object_store, so no path
    /// encoding of ours or object_store's is assumed), sorted.
    pub fn raw_keys(&self) -> Vec<String> {
        let mut keys = self.boto3(
            "for p in s3.get_paginator('list_objects_v2').paginate(Bucket=B):\n    \
             [print(o['Key']) for o in p.get('Contents', [])]",
        );
        keys.sort();
        keys
    }

    /// The lines a boto3 script prints, with `s3` a client of the server and `B` the bucket.
    fn boto3(&self, body: &str) -> Vec<String> {
        let script = format!(
            "import boto3\n\
             s3 = boto3.client('s3', endpoint_url='{}', region_name='{REGION}', \
             aws_access_key_id='{ACCESS_KEY_ID}', aws_secret_access_key='{SECRET_ACCESS_KEY}')\n\
             B = '{BUCKET}'\n{body}\n",
            self.endpoint
        );
        let out = crate::tools::run_python(&script, &[]);
        assert!(
            out.status.success(),
            "boto3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One bodiless HTTP/1.1 request; the status line, or `None` when the server does not answer.
fn http(port: u16, request_line: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!(
        "{request_line}\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.lines().next().map(str::to_string)
}

#[tokio::test]
async fn the_server_refuses_a_repeated_conditional_put() {
    let s3 = S3Server::start();
    let store = s3.store();
    let key = object_store::path::Path::from("probe/once.bin");
    let create = object_store::PutOptions::from(object_store::PutMode::Create);
    store
        .put_opts(&key, "first".into(), create.clone())
        .await
        .expect("the first conditional PUT creates the object");
    let again = store.put_opts(&key, "second".into(), create).await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "a repeated If-None-Match: * PUT must get 412: {again:?}"
    );
    let kept = store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(&kept[..], b"first");
    assert!(s3.unfinished_uploads().is_empty());
}

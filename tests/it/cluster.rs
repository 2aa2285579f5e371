//! A Postgres cluster of a test's own: for a test that restarts the server, or that needs a
//! cluster nobody else touches (roles are cluster-wide: a fresh cluster has none of ours).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A Postgres of the test's own (`initdb` in a temporary directory, a free port), so the test
/// can restart it without disturbing the other tests. The server binaries come from
/// `PG_BINDIR`, else `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`. As root
/// (Postgres refuses to run as root), they run as the `postgres` user.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Cluster {
    pub fn start() -> Cluster {
        let bin = postgres_bindir();
        let dir = tempfile::tempdir().unwrap();
        if rustix::process::geteuid().is_root() {
            let id = |flag: &str| -> u32 {
                let out = Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "running as root needs a `postgres` user for initdb"
                );
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
            };
            std::os::unix::fs::chown(dir.path(), Some(id("-u")), Some(id("-g"))).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster { dir, bin, port };
        let data = cluster.data();
        cluster.tool(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        cluster.start_server(&cluster.log());
        cluster
    }

    pub fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server (fast: every session is terminated), keeps it down for `down` (it
    /// refuses connections), and starts it again.
    pub fn restart(&self, down: Duration) {
        let (data, log) = (self.data(), self.log());
        self.tool(
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "-t", "60", "stop"],
        );
        std::thread::sleep(down);
        self.start_server(&log);
    }

    fn start_server(&self, log: &str) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let data = self.data();
        let args = [
            "-D", &data, "-l", log, "-o", &opts, "-w", "-t", "60", "start",
        ];
        self.tool("pg_ctl", &args);
    }

    /// The server's log. The server must never write to the pipes `tool` reads: they would
    /// then not close when `pg_ctl` exits.
    fn log(&self) -> String {
        self.dir.path().join("log").display().to_string()
    }

    /// `psql` of the same installation, connected to `database` as the superuser `postgres`,
    /// stopping at the first error.
    pub fn psql(&self, database: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &self.url(database),
        ]);
        cmd
    }

    fn tool(&self, name: &str, args: &[&str]) {
        let program = self.bin.join(name);
        let mut cmd = if rustix::process::geteuid().is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let mut cmd = if rustix::process::geteuid().is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = cmd.args(["-D", &data, "-m", "immediate", "stop"]).output();
    }
}

fn postgres_bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return dir.into();
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        let version = p
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        version.parse::<u32>().unwrap_or(0)
    });
    found.pop().expect(
        "the restart test needs the Postgres server binaries (initdb, pg_ctl): set PG_BINDIR",
    )
}

//! A private PostgreSQL cluster for fault tests that stop the database:
//! its own data directory under the temp dir, its own port and socket
//! directory, trust authentication. The machine's shared cluster is never
//! touched. The cluster is stopped (immediately) and its files removed when
//! the value drops, so a failing test leaves no server behind.
//!
//! PostgreSQL refuses to run as root; when the tests run as root the
//! cluster runs as the `postgres` system user through `runuser`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const POSTGRES_BIN: &str = "/usr/lib/postgresql/15/bin";
const SYSTEM_USER: &str = "postgres";

pub struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    as_root: bool,
}

impl PrivatePostgres {
    /// Creates and starts a cluster; blocking (call from `spawn_blocking`).
    pub fn start() -> Self {
        assert!(
            Path::new(POSTGRES_BIN).join("initdb").exists(),
            "PostgreSQL 15 server binaries are not installed in {POSTGRES_BIN}"
        );
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("cpm-postgres-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let as_root = is_root();
        if as_root {
            let status = Command::new("chown")
                .arg(SYSTEM_USER)
                .arg(&dir)
                .status()
                .expect("chown runs");
            assert!(status.success(), "chown {SYSTEM_USER} {}", dir.display());
        }
        let cluster = Self {
            port: crate::processes::free_port(),
            dir,
            as_root,
        };
        cluster.run(
            "initdb",
            &[
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "-D",
                &cluster.data().display().to_string(),
            ],
        );
        cluster.start_again();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The URL of the cluster's `postgres` database, for `TestEnv::with_servers`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once, with
    /// no checkpoint and no goodbye to clients; the next start replays WAL.
    pub fn stop_immediately(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// Starts the server on the same port and data directory, waiting until
    /// it accepts connections (after crash recovery, if it was stopped
    /// immediately).
    pub fn start_again(&self) {
        // fsync off: the fault is a process stop, never a machine crash,
        // so the operating system keeps every write; it keeps the test fast.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-o",
                &options,
                "-l",
                &self.dir.join("log").display().to_string(),
                "-t",
                "60",
                "-w",
                "start",
            ],
        );
    }

    fn command(&self, program: &str) -> Command {
        let program = format!("{POSTGRES_BIN}/{program}");
        if self.as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", SYSTEM_USER, "--", &program]);
            command
        } else {
            Command::new(program)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("{program} cannot run: {error}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }
}

impl Drop for PrivatePostgres {
    /// Stops the server whatever state the test left it in, then removes its
    /// files; the postmaster is killed outright if `pg_ctl` cannot stop it.
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data().display().to_string()])
            .args(["-m", "immediate", "-w", "-t", "10", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Ok(pid_file) = std::fs::read_to_string(self.data().join("postmaster.pid"))
            && let Some(pid) = pid_file.lines().next()
        {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

//! `serve` and `worker` under a supervisor: systemd's notify protocol over a Unix datagram
//! socket the test binds (READY=1 once listening and migrated, WATCHDOG=1 while healthy,
//! STOPPING=1 at shutdown), and on PostgreSQL a database that disappears: the watchdog
//! pings stop and `serve` exits non-zero so that its supervisor restarts it.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::Cli;
use j1msky_db::testing::requested_backend;
use j1msky_db::Backend;

/// Exit code of an unhealthy process (`supervisor::EXIT_UNHEALTHY`).
const EXIT_UNHEALTHY: i32 = 3;

/// The socket a service manager listens on.
struct NotifySocket {
    sock: UnixDatagram,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        NotifySocket { sock, _dir: dir, path }
    }

    /// The next message, or `None` when none came within the read timeout.
    fn next(&self) -> Option<String> {
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => None,
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// Messages until one contains `line` (a bounded wait); returns all of them.
    fn until(&self, line: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(m) = self.next() {
                let done = m.lines().any(|l| l == line);
                seen.push(m);
                if done {
                    return seen;
                }
            }
        }
        panic!("no {line} within {within:?}; received {seen:?}");
    }
}

fn start(cli: &Cli, notify: &Path, args: &[&str]) -> (Child, String) {
    let mut child = cli
        .command(args)
        .env("NOTIFY_SOCKET", notify)
        // systemd's WatchdogSec=1: a ping at least every second (the process pings twice as often).
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn j1msky");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("the process printed a line").unwrap();
    std::thread::spawn(move || for _ in lines {});
    (child, first)
}

fn sigterm(child: &Child) {
    let ok = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("the process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut s).unwrap();
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_and_worker_say_ready_ping_the_watchdog_and_say_stopping() {
    let cli = Cli::new().await;
    let notify = NotifySocket::bind();
    let (mut serve, first) =
        start(&cli, &notify.path, &["serve", "--listen", "127.0.0.1:0", "--simulated-providers", "--workers", "1"]);
    let base = first.strip_prefix("j1msky listening on ").expect("address line").trim().to_string();

    let before_ready = notify.until("READY=1", Duration::from_secs(60));
    assert!(
        before_ready.iter().all(|m| !m.contains("WATCHDOG=1")),
        "a watchdog ping before readiness: {before_ready:?}"
    );
    // Ready means migrated and listening: the server answers and its database is there.
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let pings = notify.until("WATCHDOG=1", Duration::from_secs(10));
    assert!(pings.iter().all(|m| !m.contains("STOPPING=1")), "{pings:?}");

    sigterm(&serve);
    notify.until("STOPPING=1", Duration::from_secs(30));
    let status = wait_exit(&mut serve, Duration::from_secs(60));
    assert!(status.success(), "a graceful stop exits 0: {status:?}; {}", stderr_of(&mut serve));

    let (mut worker, first) = start(&cli, &notify.path, &["worker", "--simulated-providers", "--workers", "1"]);
    assert!(first.starts_with("j1msky worker"), "{first}");
    notify.until("READY=1", Duration::from_secs(60));
    notify.until("WATCHDOG=1", Duration::from_secs(10));
    sigterm(&worker);
    notify.until("STOPPING=1", Duration::from_secs(30));
    assert!(wait_exit(&mut worker, Duration::from_secs(60)).success());
}

/// A PostgreSQL database dropped under the server: the pings stop at the first failed
/// check and the server exits with `EXIT_UNHEALTHY` after the grace period. (A SQLite
/// file cannot be taken away from a process that has it open, so that engine has no
/// such failure to provoke.)
#[tokio::test(flavor = "multi_thread")]
async fn serve_stops_pinging_and_exits_non_zero_when_its_database_is_gone() {
    if requested_backend() != Backend::Postgres {
        eprintln!("notice: the lost-database case runs on PostgreSQL (J1MSKY_TEST_BACKEND=postgres)");
        return;
    }
    let cli = Cli::new().await;
    let notify = NotifySocket::bind();
    let (mut serve, _) = start(
        &cli,
        &notify.path,
        &["serve", "--listen", "127.0.0.1:0", "--workers", "0", "--health-every-ms", "50", "--db-grace-secs", "1"],
    );
    notify.until("READY=1", Duration::from_secs(60));
    notify.until("WATCHDOG=1", Duration::from_secs(10));

    let server = std::env::var("J1MSKY_TEST_POSTGRES_URL").unwrap();
    let name = cli.url.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
    let admin = j1msky_db::Db::connect(&server).await.unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(admin.pool()).await.unwrap();
    admin.close().await;

    // From the first failed check on, no ping until the process says it is stopping.
    let seen = notify.until("STOPPING=1", Duration::from_secs(60));
    let first_failure = seen
        .iter()
        .position(|m| m.contains("STATUS=database unreachable"))
        .unwrap_or_else(|| panic!("no failed check was announced: {seen:?}"));
    assert!(
        seen[first_failure..].iter().all(|m| !m.contains("WATCHDOG=1")),
        "a ping while the database was gone: {seen:?}"
    );
    let status = wait_exit(&mut serve, Duration::from_secs(60));
    assert_eq!(status.code(), Some(EXIT_UNHEALTHY), "{}", stderr_of(&mut serve));
    assert!(stderr_of(&mut serve).contains("the database has been unreachable"));
}

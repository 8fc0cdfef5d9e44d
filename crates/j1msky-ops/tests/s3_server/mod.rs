//! A real S3-compatible server on loopback for the backup tests: moto's server
//! (`scripts/s3-env` installs it into target/s3-venv; tests find its python through
//! `J1MSKY_S3_PYTHON`). Missing under `scripts/test` or CI, the tests fail rather than
//! pass without it; elsewhere they say loudly that they skipped.
#![allow(dead_code)] // each test binary uses its own part of it

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use j1msky_ops::backup::S3Settings;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The python with moto's server; `None` (loudly) when missing outside CI.
pub fn s3_python() -> Option<PathBuf> {
    let p = std::env::var_os("J1MSKY_S3_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/s3-venv/bin/python"));
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() || std::env::var_os("J1MSKY_S3_PYTHON").is_some() {
        panic!("no python with moto's server at {}: run scripts/s3-env", p.display());
    }
    eprintln!("!!!! SKIPPED: no python with moto's server at {} (run scripts/s3-env) !!!!", p.display());
    None
}

/// A port nothing listens on (asked of the kernel, then let go).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running moto server; stopped when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts the server and waits (at most 60 s) until it accepts connections.
    pub fn start(python: &Path) -> Moto {
        let port = free_port();
        let child = Command::new(python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto's server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Settings reaching this server (moto takes any credentials).
    pub fn settings(&self) -> S3Settings {
        settings(&self.endpoint())
    }

    /// Creates `bucket`.
    pub async fn bucket(&self, bucket: &str) {
        let r = reqwest::Client::new().put(format!("{}/{bucket}", self.endpoint())).send().await.unwrap();
        assert!(r.status().is_success(), "creating {bucket}: {}", r.status());
    }
}

/// Settings for the store at `endpoint`, one retry (a dead one fails fast).
pub fn settings(endpoint: &str) -> S3Settings {
    S3Settings {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test-key".into()),
        secret_access_key: Some("test-secret".into()),
        max_retries: Some(1),
        part_size: None,
    }
}

//! The loopback SMTP sink (`scripts/smtp-sink.py`, aiosmtpd writing a Maildir) and
//! reading what it received, shared by the mail tests.
#![allow(dead_code)] // each test binary uses its own part of it

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The python with aiosmtpd; `None` (loudly) when missing outside CI.
pub fn smtp_python() -> Option<PathBuf> {
    let p = std::env::var_os("J1MSKY_SMTP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/smtp-venv/bin/python"));
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() || std::env::var_os("J1MSKY_SMTP_PYTHON").is_some() {
        panic!("no python with aiosmtpd at {}: run scripts/smtp-env", p.display());
    }
    eprintln!("!!!! SKIPPED: no python with aiosmtpd at {} (run scripts/smtp-env) !!!!", p.display());
    None
}

pub struct Sink {
    pub child: Child,
    pub port: u16,
    pub maildir: tempfile::TempDir,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the sink; it acknowledges each message `delay_ms` after storing it.
pub fn start_sink(python: &Path, delay_ms: u64) -> Sink {
    let maildir = tempfile::tempdir().unwrap();
    let mut child = Command::new(python)
        .arg(repo().join("scripts/smtp-sink.py"))
        .arg(maildir.path())
        .env("SMTP_SINK_DELAY_MS", delay_ms.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().strip_prefix("ready ").unwrap().parse().unwrap();
    Sink { child, port, maildir }
}

/// Every message in the Maildir (file contents).
pub fn delivered(maildir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(entries) = std::fs::read_dir(maildir.join(sub)) {
            for e in entries {
                all.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
            }
        }
    }
    all
}

pub fn delivered_count(maildir: &Path) -> usize {
    std::fs::read_dir(maildir.join("new")).map(|d| d.count()).unwrap_or(0)
}

/// A header's value, unfolded (long headers continue on indented lines).
pub fn header(mail: &str, name: &str) -> Option<String> {
    let head = mail.split("\n\n").next().unwrap_or_default();
    let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
    let first = lines.find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))?;
    let mut value = first.to_string();
    for l in lines.by_ref() {
        if l.starts_with([' ', '\t']) {
            value.push(' ');
            value.push_str(l.trim());
        } else {
            break;
        }
    }
    Some(value)
}

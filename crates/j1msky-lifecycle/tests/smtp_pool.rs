// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! The SMTP transport's own connection pool, against the loopback `aiosmtpd` sink
//! (`scripts/smtp-env`) behind a small TCP proxy that counts the connections the sink
//! sees and can cut them all:
//! - many messages go over at most `pool` connections, each with TCP_NODELAY;
//! - a pooled connection the server dropped is replaced, the message still arrives once
//!   and the send succeeds (nothing had been handed over on the dead one);
//! - a 550 at RCPT keeps the connection (RSET) and is a hard bounce;
//! - a connection lost after the message went out is `Unknown`, never retried blindly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common;
use common::*;

use j1msky_lifecycle::transport::{Outgoing, SendError, Smtp, Transport};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy in front of the sink: counts connections, cuts them all on demand.
struct Proxy {
    port: u16,
    accepted: Arc<AtomicUsize>,
    live: Arc<AtomicUsize>,
    cut: tokio::sync::watch::Sender<u64>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let live = Arc::new(AtomicUsize::new(0));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let (a, l) = (accepted.clone(), live.clone());
        // Aborted when the proxy is dropped; each connection task ends with its sockets.
        let accept_loop = tokio::spawn(async move {
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                l.fetch_add(1, Ordering::SeqCst);
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                let l = l.clone();
                tokio::spawn(async move {
                    let mut server = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                    drop((client, server));
                    l.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Proxy { port, accepted, live, cut, accept_loop }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection through the proxy and waits until they are gone.
    async fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
        until(|| self.live.load(Ordering::SeqCst) == 0).await;
    }
}

/// Waits for a condition (no timing asserted: a hang fails the test by its timeout).
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 30 s");
}

fn mail(i: usize, to: &str) -> Outgoing {
    let message_id = format!("pool-{i}@test.j1msky");
    let raw = format!(
        "From: j1msky <hello@example.com>\r\nTo: <{to}>\r\nSubject: pool test {i}\r\nMessage-ID: <{message_id}>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nMessage number {i}.\r\n.leading dot kept\r\n"
    );
    Outgoing { from: "hello@example.com".into(), to: to.into(), message_id, raw: raw.into_bytes() }
}

#[tokio::test]
async fn many_messages_go_over_a_few_reused_nodelay_connections_and_a_dropped_one_is_replaced() {
    let Some(python) = smtp_python() else { return };
    let sink = start_sink(&python, 0);
    let proxy = Proxy::start(sink.port).await;
    let smtp = Arc::new(Smtp::from_url(&format!("smtp://127.0.0.1:{}", proxy.port), 4).unwrap());
    assert_eq!(smtp.parallelism(), 4);

    // 40 messages, all at once: the pool never opens more than 4 connections.
    let sends = (0..40).map(|i| {
        let smtp = smtp.clone();
        async move { smtp.send(&mail(i, &format!("ann{i}@example.com"))).await }
    });
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    assert_eq!(delivered_count(sink.maildir.path()), 40);
    let first = smtp.stats();
    assert!((1..=4).contains(&proxy.accepted()), "the sink saw {} connections", proxy.accepted());
    assert_eq!(first.opened, proxy.accepted(), "{first:?}");
    assert_eq!(first.nodelay, first.opened, "every connection has TCP_NODELAY: {first:?}");
    assert_eq!(first.idle, first.opened, "all back in the pool: {first:?}");

    // One after another: the same connections again, no new one.
    for i in 40..50 {
        smtp.send(&mail(i, "bob@example.com")).await.unwrap();
    }
    assert_eq!(proxy.accepted(), first.opened, "sequential sends reuse a pooled connection");
    assert_eq!(delivered_count(sink.maildir.path()), 50);

    // The server drops every connection while they sit idle: the next send notices on
    // the dead one before handing anything over and goes over a new connection.
    let before = proxy.accepted();
    proxy.cut_all().await;
    smtp.send(&mail(50, "cat@example.com")).await.unwrap();
    assert_eq!(proxy.accepted(), before + 1, "one replacement connection");
    let after = smtp.stats();
    assert_eq!((after.opened, after.nodelay), (before + 1, before + 1), "{after:?}");
    for i in 51..55 {
        smtp.send(&mail(i, "cat@example.com")).await.unwrap();
    }
    assert!(proxy.accepted() <= before + 4, "dead connections are replaced, not multiplied");

    // Every message arrived exactly once.
    let mails = delivered(sink.maildir.path());
    let ids: std::collections::BTreeSet<_> = mails.iter().map(|m| header(m, "Message-ID").unwrap()).collect();
    assert_eq!((mails.len(), ids.len()), (55, 55));
    let m = mails.iter().find(|m| header(m, "Message-ID").as_deref() == Some("<pool-7@test.j1msky>")).unwrap();
    assert!(m.contains("Message number 7.") && m.contains("\n.leading dot kept"), "{m}");
}

#[tokio::test]
async fn a_bounce_keeps_the_connection_and_a_connection_lost_after_hand_over_is_unknown() {
    let Some(python) = smtp_python() else { return };
    // A slow sink: it stores each message, then answers 5 s later.
    let sink = start_sink(&python, 5_000);
    let proxy = Proxy::start(sink.port).await;
    let smtp = Arc::new(Smtp::from_url(&format!("smtp://127.0.0.1:{}", proxy.port), 2).unwrap());

    // 550 at RCPT: a hard bounce; the connection is RSET and kept for the next message.
    let bounced = smtp.send(&mail(0, "bounce-me@example.com")).await.unwrap_err();
    match &bounced {
        SendError::Rejected { hard_bounce: true, message } => assert!(message.contains("550"), "{message}"),
        other => panic!("expected a hard bounce, got {other:?}"),
    }
    assert_eq!((proxy.accepted(), smtp.stats().idle), (1, 1));

    // The connection breaks once the sink has the message but before it answers: the
    // outcome is unknown (the message did arrive), so it must not count as refused.
    let sending = tokio::spawn({
        let smtp = smtp.clone();
        async move { smtp.send(&mail(1, "dan@example.com")).await }
    });
    until(|| delivered_count(sink.maildir.path()) == 1).await;
    proxy.cut_all().await;
    match sending.await.unwrap() {
        Err(SendError::Unknown(_)) => {}
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
    assert_eq!(proxy.accepted(), 1, "the bounce did not cost a connection");
    assert_eq!(smtp.stats().idle, 0, "the broken connection is not pooled");
}

#[tokio::test]
async fn nothing_listening_is_refused_and_bad_urls_are_named() {
    // A port nobody listens on: refused (retry later), nothing handed over.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let smtp = Smtp::from_url(&format!("smtp://127.0.0.1:{free}"), 1).unwrap();
    match smtp.send(&mail(0, "ann@example.com")).await {
        Err(SendError::Refused(e)) => assert!(e.contains(&free.to_string()), "{e}"),
        other => panic!("expected refused, got {other:?}"),
    }
    assert_eq!(smtp.stats().opened, 0);

    for (url, named) in [
        ("http://mail.example.com", "scheme `http`"),
        ("smtp://mail.example.com?tls=sometimes", "tls `sometimes`"),
        ("smtp://", "no host"),
        ("not a url", "not a url"),
        ("smtp://u:%zz@mail.example.com", "password"),
    ] {
        let e = Smtp::from_url(url, 4).unwrap_err().to_string();
        assert!(e.contains(named), "{url}: {e}");
    }
    for ok in [
        "smtp://127.0.0.1:2525",
        "smtp://mail.example.com?tls=required",
        "smtp://mail.example.com:2587?tls=opportunistic",
        "smtps://user%40example.com:p%40ss@mail.example.com/relay.example.com",
        "smtp://[::1]:2525",
    ] {
        Smtp::from_url(ok, 4).unwrap();
    }
}

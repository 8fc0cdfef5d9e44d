//! Webhook delivery: each event is POSTed, signed, to the configured URL by a background
//! task that retries a refused delivery with backoff, as Stripe does (faster here).
//! On demand, deliveries are duplicated, or held and later released in reverse order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::Shared;

/// A `Stripe-Signature` header for `body` at `t`: written independently of j1msky's
/// verifier, so the two check each other (and the official SDK checks both).
pub fn sign(secret: &str, t: i64, body: &str) -> String {
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return format!("t={t}"),
    };
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// What the next deliveries do.
pub(crate) struct Settings {
    pub url: Option<String>,
    /// Deliver every event twice.
    pub duplicate: bool,
    /// Keep events until released (`/_sim/webhooks/release`).
    pub hold: bool,
    /// Release held events newest first.
    pub reverse: bool,
    /// Events waiting to be sent after the current request.
    pending: Vec<Value>,
    held: Vec<Value>,
}

impl Settings {
    pub fn new(url: Option<String>) -> Settings {
        Settings { url, duplicate: false, hold: false, reverse: true, pending: Vec::new(), held: Vec::new() }
    }

    pub fn queue(&mut self, ev: Value) {
        if self.hold {
            self.held.push(ev);
        } else {
            self.pending.push(ev);
        }
    }

    /// Moves held events to the outgoing queue, in reverse order unless told otherwise.
    pub fn release(&mut self) -> usize {
        let mut held = std::mem::take(&mut self.held);
        if self.reverse {
            held.reverse();
        }
        let n = held.len();
        self.pending.extend(held);
        self.hold = false;
        n
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// The sending side: a channel to the delivery task and its counters.
pub(crate) struct Deliverer {
    tx: tokio::sync::mpsc::UnboundedSender<(String, Value, i64)>,
    pub delivered: Arc<AtomicU64>,
    pub refused: Arc<AtomicU64>,
}

impl Deliverer {
    pub fn start(secret: String) -> Deliverer {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Value, i64)>();
        let delivered = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let (d, r) = (delivered.clone(), refused.clone());
        // Lives as long as the fake: it ends when the fake (the last sender) is dropped.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            // `t` is the fake's clock when the event was sent (tests may set that clock).
            while let Some((url, ev, t)) = rx.recv().await {
                let body = ev.to_string();
                for attempt in 0..6u32 {
                    let sent = http
                        .post(&url)
                        .header("Content-Type", "application/json; charset=utf-8")
                        .header("Stripe-Signature", sign(&secret, t, &body))
                        .header("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
                        .body(body.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(resp) if resp.status().is_success() => {
                            d.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        _ => {
                            r.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                        }
                    }
                }
            }
        });
        Deliverer { tx, delivered, refused }
    }

    /// Sends what the last request queued.
    pub fn flush(&self, shared: &Shared) {
        let (url, events, duplicate, t) = {
            let mut s = shared.lock();
            let events = std::mem::take(&mut s.hooks.pending);
            (s.hooks.url.clone(), events, s.hooks.duplicate, s.now())
        };
        let Some(url) = url else { return };
        for ev in events {
            let _ = self.tx.send((url.clone(), ev.clone(), t));
            if duplicate {
                let _ = self.tx.send((url.clone(), ev, t));
            }
        }
    }

    pub fn stats(&self) -> Value {
        json!({"delivered": self.delivered.load(Ordering::Relaxed), "refused": self.refused.load(Ordering::Relaxed)})
    }
}

//! Mail transports: SMTP over a small connection pool, and a file transport for the
//! demo (messages written as `.eml` files).

use std::future::Future;
use std::pin::Pin;

/// One message ready to go: envelope and the full RFC 5322 text.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub from: String,
    pub to: String,
    pub message_id: String,
    pub raw: Vec<u8>,
}

/// The future `Transport::send` returns.
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), crate::LifecycleError>> + Send + 'a>>;

/// Sends one message.
pub trait Transport: Send + Sync {
    fn send<'a>(&'a self, mail: &'a Outgoing) -> Sending<'a>;
}

/// Keeps every message in memory (tests, previews): never fails.
#[derive(Debug, Default)]
pub struct Recording {
    sent: std::sync::Mutex<Vec<Outgoing>>,
}

impl Recording {
    /// The messages sent so far, oldest first.
    pub fn sent(&self) -> Vec<Outgoing> {
        self.sent.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Transport for Recording {
    fn send<'a>(&'a self, mail: &'a Outgoing) -> Sending<'a> {
        Box::pin(async move {
            if let Ok(mut v) = self.sent.lock() {
                v.push(mail.clone());
            }
            Ok(())
        })
    }
}

//! Mail transports: SMTP over a small connection pool (`lettre`), a file transport for
//! the demo (messages written as `<dir>/<message-id>.eml`), and an in-memory one for
//! tests.
//!
//! A transport says how a failed send ended, because the sender acts on it:
//! [`SendError::Refused`] means the server said no before taking the message (a 4xx, or
//! no connection at all): nothing was delivered and a retry is safe.
//! [`SendError::Rejected`] is a permanent 5xx (a hard bounce when the mailbox does not
//! exist). [`SendError::Unknown`] is everything else (the connection broke mid-way, a
//! timeout): the server may have the message, so it is not resent blindly.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// One message ready to go: envelope and the full RFC 5322 text.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub from: String,
    pub to: String,
    pub message_id: String,
    pub raw: Vec<u8>,
}

/// How a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Refused before the message was taken (4xx, no connection): retry later.
    #[error("refused: {0}")]
    Refused(String),
    /// Permanently rejected (5xx); `hard_bounce` when the mailbox does not exist.
    #[error("rejected: {message}")]
    Rejected { hard_bounce: bool, message: String },
    /// The outcome is not known: the server may have accepted the message.
    #[error("unknown outcome: {0}")]
    Unknown(String),
}

/// The future `Transport::send` returns.
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), SendError>> + Send + 'a>>;

/// Sends one message.
pub trait Transport: Send + Sync {
    fn send<'a>(&'a self, mail: &'a Outgoing) -> Sending<'a>;

    /// How many sends may usefully run at once (the pool size).
    fn parallelism(&self) -> usize {
        1
    }

    /// Where the messages are written, for a file transport (the admin pages read them).
    fn mail_dir(&self) -> Option<PathBuf> {
        None
    }
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

/// SMTP through `lettre`, over a pool of up to `pool` connections.
pub struct Smtp {
    inner: AsyncSmtpTransport<Tokio1Executor>,
    pool: usize,
}

impl Smtp {
    /// From a URL: `smtp://host:port` (plain, for loopback), `smtp://host:port?tls=required`
    /// (STARTTLS) or `smtps://host:port` (TLS), with optional `user:password@`.
    pub fn from_url(url: &str, pool: usize) -> Result<Smtp, crate::LifecycleError> {
        let pool = pool.clamp(1, 64);
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| crate::LifecycleError::invalid("smtp url", format!("`{url}`: {e}")))?;
        let inner = builder
            .timeout(Some(Duration::from_secs(30)))
            .pool_config(PoolConfig::new().max_size(pool as u32).idle_timeout(Duration::from_secs(60)))
            .build();
        Ok(Smtp { inner, pool })
    }
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp").field("pool", &self.pool).finish()
    }
}

fn connection_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(io.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable);
        }
        source = err.source();
    }
    false
}

/// Sorts an SMTP error into what the sender does next.
pub fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let text = e.to_string();
    if e.is_transient() {
        return SendError::Refused(text);
    }
    if e.is_permanent() {
        let code = e.status().map(|c| c.to_string()).unwrap_or_default();
        // 550 / 551 / 553: the mailbox does not exist or is not accepted here.
        let hard_bounce = matches!(code.as_str(), "550" | "551" | "553");
        return SendError::Rejected { hard_bounce, message: text };
    }
    if connection_refused(e) {
        return SendError::Refused(text);
    }
    SendError::Unknown(text)
}

impl Transport for Smtp {
    fn send<'a>(&'a self, mail: &'a Outgoing) -> Sending<'a> {
        Box::pin(async move {
            let from = mail.from.parse().map_err(|e| SendError::Rejected {
                hard_bounce: false,
                message: format!("sender `{}`: {e}", mail.from),
            })?;
            let to = mail.to.parse().map_err(|e| SendError::Rejected {
                hard_bounce: true,
                message: format!("recipient `{}`: {e}", mail.to),
            })?;
            let envelope = Envelope::new(Some(from), vec![to])
                .map_err(|e| SendError::Rejected { hard_bounce: false, message: e.to_string() })?;
            self.inner.send_raw(&envelope, &mail.raw).await.map(|_| ()).map_err(|e| classify(&e))
        })
    }

    fn parallelism(&self) -> usize {
        self.pool
    }
}

/// Writes each message to `<dir>/<message-id>.eml` (the demo's outbox). Writing the same
/// message again replaces the file: a resend never makes a second copy.
#[derive(Debug, Clone)]
pub struct Files {
    dir: PathBuf,
}

impl Files {
    pub fn new(dir: impl Into<PathBuf>) -> Files {
        Files { dir: dir.into() }
    }

    /// The file name of a message id (only `[A-Za-z0-9._@-]` kept).
    pub fn file_name(message_id: &str) -> String {
        let safe: String = message_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '@' | '-' | '_') { c } else { '_' })
            .collect();
        format!("{}.eml", safe.trim_start_matches('.'))
    }
}

impl Transport for Files {
    fn send<'a>(&'a self, mail: &'a Outgoing) -> Sending<'a> {
        Box::pin(async move {
            let refused = |e: std::io::Error| SendError::Refused(format!("{}: {e}", self.dir.display()));
            tokio::fs::create_dir_all(&self.dir).await.map_err(refused)?;
            let name = Files::file_name(&mail.message_id);
            let tmp = self.dir.join(format!(".{name}.tmp"));
            tokio::fs::write(&tmp, &mail.raw).await.map_err(refused)?;
            tokio::fs::rename(&tmp, self.dir.join(&name)).await.map_err(refused)?;
            Ok(())
        })
    }

    fn parallelism(&self) -> usize {
        4
    }

    fn mail_dir(&self) -> Option<PathBuf> {
        Some(self.dir.clone())
    }
}

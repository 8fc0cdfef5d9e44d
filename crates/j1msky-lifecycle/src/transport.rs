//! Mail transports: SMTP over a small pool of TCP_NODELAY connections (the protocol
//! spoken by `lettre`), a file transport for the demo (messages written as
//! `<dir>/<message-id>.eml`), and an in-memory one for tests.
//!
//! A transport says how a failed send ended, because the sender acts on it:
//! [`SendError::Refused`] means the server said no before taking the message (a 4xx, no
//! connection at all, or a connection lost before the message itself went out): nothing
//! was delivered and a retry is safe.
//! [`SendError::Rejected`] is a permanent 5xx (a hard bounce when the mailbox does not
//! exist). [`SendError::Unknown`] is everything else (the connection broke once the
//! message was going out, a timeout waiting for the final reply): the server may have
//! the message, so it is not resent blindly.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
#[allow(deprecated)] // lettre's TLS stream, needed to start a connection encrypted
use lettre::transport::smtp::client::AsyncNetworkStream;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::{SMTP_PORT, SUBMISSIONS_PORT, SUBMISSION_PORT};
use lettre::Address;
use tokio::net::TcpStream;

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

/// SMTP over a pool of up to `pool` connections of its own, each with TCP_NODELAY, the
/// SMTP conversation spoken through `lettre`'s `AsyncSmtpConnection`.
///
/// Why not `lettre`'s own pool: it opens its sockets with Nagle on and writes a message
/// and its closing `<CRLF>.<CRLF>` in two writes, so every message waits out the
/// server's delayed ACK (~40 ms on Linux), and it sends a NOOP before every reuse. Here a
/// connection is reused as is; one the server closed while it sat idle fails before the
/// message is handed over and the message goes over a new connection. After an error
/// reply (4xx/5xx) the connection is RSET and kept.
pub struct Smtp {
    server: Server,
    pool: usize,
    slots: tokio::sync::Semaphore,
    idle: std::sync::Mutex<Vec<Idle>>,
    opened: AtomicUsize,
    nodelay: AtomicUsize,
}

/// Where and how to connect, from the URL.
struct Server {
    host: String,
    port: u16,
    security: Security,
    hello: ClientId,
    credentials: Option<Credentials>,
}

enum Security {
    Plain,
    /// STARTTLS after the greeting; `required` fails when the server does not offer it.
    StartTls {
        params: TlsParameters,
        required: bool,
    },
    /// TLS from the first byte (`smtps://`).
    Implicit(TlsParameters),
}

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

/// Connections idle longer than this are closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting: TCP, greeting, EHLO, TLS and AUTH.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// One message, MAIL FROM to the reply after the final dot (RFC 5321 §4.5.3.2 allows
/// the server 10 minutes for that reply).
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(600);

/// What a pool has done so far (tests and diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmtpStats {
    /// Connections opened (EHLO done), including replacements of broken ones.
    pub opened: usize,
    /// Of those, how many had TCP_NODELAY set when read back from the socket.
    pub nodelay: usize,
    /// Connections open and idle right now.
    pub idle: usize,
}

impl Smtp {
    /// From a URL: `smtp://host:port` (plain, for loopback), `smtp://host:port?tls=required`
    /// (STARTTLS; `tls=opportunistic` when offered) or `smtps://host:port` (TLS), with
    /// optional `user:password@` (percent-encoded) and `/name` (the EHLO name).
    pub fn from_url(url: &str, pool: usize) -> Result<Smtp, crate::LifecycleError> {
        // The URL as shown in messages: its password (if any) hidden.
        let shown = url::Url::parse(url)
            .map(|mut u| {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                u.to_string()
            })
            .unwrap_or_else(
                |_| if url.contains('@') { "(a URL with credentials)".to_string() } else { url.to_string() },
            );
        let invalid = |why: String| crate::LifecycleError::invalid("smtp url", format!("`{shown}`: {why}"));
        let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() {
            return Err(invalid("no host".into()));
        }
        let tls_param = parsed.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned());
        let tls = || TlsParameters::new(host.clone()).map_err(|e| invalid(e.to_string()));
        let (port, security) = match (parsed.scheme(), tls_param.as_deref()) {
            ("smtp", None) => (SMTP_PORT, Security::Plain),
            ("smtp", Some("required")) => (SUBMISSION_PORT, Security::StartTls { params: tls()?, required: true }),
            ("smtp", Some("opportunistic")) => {
                (SUBMISSION_PORT, Security::StartTls { params: tls()?, required: false })
            }
            ("smtps", _) => (SUBMISSIONS_PORT, Security::Implicit(tls()?)),
            (scheme, tls) => {
                return Err(invalid(format!(
                    "scheme `{scheme}` with tls `{}`: use smtp://, smtp://…?tls=required|opportunistic or smtps://",
                    tls.unwrap_or("")
                )))
            }
        };
        let name = parsed.path().trim_matches('/');
        let hello = if name.is_empty() { ClientId::default() } else { ClientId::Domain(name.to_string()) };
        let credentials = match parsed.password() {
            Some(password) => Some(Credentials::new(
                percent_decode(parsed.username()).map_err(|e| invalid(format!("user name: {e}")))?,
                percent_decode(password).map_err(|e| invalid(format!("password: {e}")))?,
            )),
            None => None,
        };
        let pool = pool.clamp(1, 64);
        Ok(Smtp {
            server: Server { host, port: parsed.port().unwrap_or(port), security, hello, credentials },
            pool,
            slots: tokio::sync::Semaphore::new(pool),
            idle: std::sync::Mutex::new(Vec::new()),
            opened: AtomicUsize::new(0),
            nodelay: AtomicUsize::new(0),
        })
    }

    /// Connections opened so far and how many sit idle.
    pub fn stats(&self) -> SmtpStats {
        SmtpStats {
            opened: self.opened.load(Ordering::Relaxed),
            nodelay: self.nodelay.load(Ordering::Relaxed),
            idle: self.idle.lock().map(|v| v.len()).unwrap_or_default(),
        }
    }

    /// The most recently used idle connection, closing those idle too long.
    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().ok()?;
        idle.retain(|c| c.since.elapsed() <= IDLE_TIMEOUT);
        idle.pop().map(|c| c.conn)
    }

    fn recycle(&self, conn: AsyncSmtpConnection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.pool {
                idle.push(Idle { conn, since: Instant::now() });
            }
        }
    }

    /// A new connection: TCP with TCP_NODELAY, TLS as configured, EHLO, AUTH. Nothing
    /// has been handed over yet, so a failure that is not an SMTP reply is `Refused`.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let s = &self.server;
        let at = format!("{}:{}", s.host, s.port);
        let opening = async {
            let broken = |what: &str, e: &dyn std::fmt::Display| SendError::Refused(format!("{what} {at}: {e}"));
            let tcp = TcpStream::connect((s.host.as_str(), s.port)).await.map_err(|e| broken("connecting to", &e))?;
            tcp.set_nodelay(true).map_err(|e| broken("TCP_NODELAY on", &e))?;
            let nodelay = tcp.nodelay().unwrap_or(false);
            let stream: Box<dyn AsyncTokioStream> = match &s.security {
                Security::Implicit(params) => {
                    #[allow(deprecated)] // lettre's own TLS stream, the one STARTTLS uses
                    let mut tls = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
                    tls.upgrade_tls(params.clone()).await.map_err(|e| settle(&e, false))?;
                    Box::new(TlsOverTcp(tls))
                }
                _ => Box::new(tcp),
            };
            let mut conn =
                AsyncSmtpConnection::connect_with_transport(stream, &s.hello).await.map_err(|e| settle(&e, false))?;
            if let Security::StartTls { params, required } = &s.security {
                if *required || conn.can_starttls() {
                    conn.starttls(params.clone(), &s.hello).await.map_err(|e| settle(&e, false))?;
                }
            }
            if let Some(credentials) = &s.credentials {
                conn.auth(DEFAULT_MECHANISMS, credentials).await.map_err(|e| settle(&e, false))?;
            }
            Ok((conn, nodelay))
        };
        let (conn, nodelay) = tokio::time::timeout(CONNECT_TIMEOUT, opening)
            .await
            .map_err(|_| SendError::Refused(format!("connecting to {at}: no answer within {CONNECT_TIMEOUT:?}")))??;
        self.opened.fetch_add(1, Ordering::Relaxed);
        if nodelay {
            self.nodelay.fetch_add(1, Ordering::Relaxed);
        }
        Ok(conn)
    }

    async fn deliver(&self, from: Address, to: Address, raw: &[u8]) -> Result<(), SendError> {
        let _slot = self.slots.acquire().await.map_err(|e| SendError::Refused(e.to_string()))?;
        let mut mail_options = Vec::new();
        let mut fresh_only = false;
        loop {
            let (mut conn, reused) = match if fresh_only { None } else { self.take_idle() } {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            // What the message needs of the server (RFC 6531 addresses, RFC 6152 body).
            mail_options.clear();
            let needs = [
                (
                    !(AsRef::<str>::as_ref(&from).is_ascii() && AsRef::<str>::as_ref(&to).is_ascii()),
                    Extension::SmtpUtfEight,
                ),
                (!raw.is_ascii(), Extension::EightBitMime),
            ];
            for (needed, extension) in needs {
                if needed && !conn.server_info().supports_feature(extension) {
                    self.recycle(conn);
                    return Err(SendError::Rejected {
                        hard_bounce: false,
                        message: format!("the server does not offer {extension}, which this message needs"),
                    });
                }
                if needed {
                    mail_options.push(match extension {
                        Extension::SmtpUtfEight => MailParameter::SmtpUtfEight,
                        _ => MailParameter::Body(MailBodyParameter::EightBitMime),
                    });
                }
            }
            let mut handed = false;
            let error = match tokio::time::timeout(
                MESSAGE_TIMEOUT,
                transaction(&mut conn, &from, &to, mail_options.clone(), raw, &mut handed),
            )
            .await
            {
                Ok(Ok(())) => {
                    self.recycle(conn);
                    return Ok(());
                }
                Ok(Err(e)) => e,
                Err(_) => {
                    let why = format!("no answer within {MESSAGE_TIMEOUT:?}");
                    return Err(if handed { SendError::Unknown(why) } else { SendError::Refused(why) });
                }
            };
            let replied = error.is_transient() || error.is_permanent();
            let closing = error.status().map(|c| c.to_string()).as_deref() == Some("421");
            if reused && !handed && (!replied || closing) {
                // A pooled connection the server closed while it sat idle: nothing was
                // handed over, so the message goes over a new connection.
                fresh_only = true;
                continue;
            }
            if replied && !closing {
                let reset = tokio::time::timeout(CONNECT_TIMEOUT, conn.command(Rset)).await;
                if matches!(reset, Ok(Ok(_))) {
                    self.recycle(conn);
                }
            }
            return Err(settle(&error, handed));
        }
    }
}

/// MAIL FROM, RCPT TO, DATA and the message; `handed` turns true as the message itself
/// starts to go out (from then on the server may have it).
async fn transaction(
    conn: &mut AsyncSmtpConnection,
    from: &Address,
    to: &Address,
    options: Vec<MailParameter>,
    raw: &[u8],
    handed: &mut bool,
) -> Result<(), lettre::transport::smtp::Error> {
    conn.command(Mail::new(Some(from.clone()), options)).await?;
    conn.command(Rcpt::new(to.clone(), Vec::new())).await?;
    conn.command(Data).await?;
    *handed = true;
    conn.message(raw).await?;
    Ok(())
}

/// Sorts an error of a connection: an SMTP reply as [`classify`] says; anything else
/// (the connection broke, TLS failed) is `Refused` while nothing was handed over and
/// `Unknown` once the message started to go out.
fn settle(e: &lettre::transport::smtp::Error, handed: bool) -> SendError {
    if e.is_transient() || e.is_permanent() || connection_refused(e) {
        return classify(e);
    }
    if handed {
        SendError::Unknown(e.to_string())
    } else {
        SendError::Refused(e.to_string())
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit));
            let byte = hex
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape at byte {i}"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 once decoded".to_string())
}

/// `lettre`'s TLS stream (implicit TLS) seen as a tokio stream, so that a connection
/// whose TCP socket was configured here can start encrypted.
#[allow(deprecated)]
#[derive(Debug)]
struct TlsOverTcp(AsyncNetworkStream);

impl tokio::io::AsyncRead for TlsOverTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let dst = buf.initialize_unfilled();
        match futures::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, dst) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncWrite for TlsOverTcp {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        futures::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        futures::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        futures::io::AsyncWrite::poll_close(Pin::new(&mut self.0), cx)
    }
}

impl AsyncTokioStream for TlsOverTcp {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.peer_addr()
    }
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.server.host)
            .field("port", &self.server.port)
            .field("pool", &self.pool)
            .finish()
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
            let from: Address = mail.from.parse().map_err(|e| SendError::Rejected {
                hard_bounce: false,
                message: format!("sender `{}`: {e}", mail.from),
            })?;
            let to: Address = mail.to.parse().map_err(|e| SendError::Rejected {
                hard_bounce: true,
                message: format!("recipient `{}`: {e}", mail.to),
            })?;
            self.deliver(from, to, &mail.raw).await
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

#[cfg(test)]
mod url_tests {
    use super::Smtp;

    #[test]
    fn a_refused_smtp_url_is_named_without_its_password() {
        let Err(e) = Smtp::from_url("smtp://mailer:pa55w0rd@mail.example.test:25?tls=sometimes", 1) else {
            panic!("tls=sometimes is not a choice")
        };
        let message = e.to_string();
        assert!(message.contains("mail.example.test") && message.contains("sometimes"), "{message}");
        assert!(!message.contains("pa55w0rd"), "{message}");
    }
}
